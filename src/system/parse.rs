//! Parsers of the tools' output into the observed types, tested on output
//! captured from real systems (`tests/fixtures`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::observed::{Link, ObservedRules, WgDump, WgPeer};
use crate::render::JUMPS;
use crate::types::{Cidr, PublicKey, SecretKey};

fn none_or<T>(field: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<Option<T>, String> {
    if field == "(none)" { Ok(None) } else { parse(field).map(Some) }
}

/// An allowed IP or address as a tool prints it (any spelling `std` reads).
fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let (a, p) = s.split_once('/').ok_or_else(|| format!("bad prefix '{s}'"))?;
    let addr: IpAddr = a.parse().map_err(|_| format!("bad address '{s}'"))?;
    p.parse().ok().and_then(|p| Cidr::new(addr, p)).ok_or_else(|| format!("bad prefix '{s}'"))
}

/// Parses `wg show IFACE dump`. A peer line that does not parse is returned
/// as a problem and skipped; a bad interface line fails the whole dump.
pub fn parse_wg_dump(text: &str) -> Result<(WgDump, Vec<String>), String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let head = lines.next().ok_or("empty wg dump")?;
    let f: Vec<&str> = head.split('\t').collect();
    if f.len() != 4 {
        return Err(format!("interface line has {} fields, expected 4", f.len()));
    }
    let mut dump = WgDump {
        private_key: none_or(f[0], |s| s.parse::<SecretKey>()).map_err(|e| format!("private key {e}"))?,
        public_key: none_or(f[1], |s| s.parse::<PublicKey>()).map_err(|e| format!("public key {e}"))?,
        listen_port: f[2].parse().map_err(|_| "bad listen port in interface line".to_string())?,
        peers: BTreeMap::new(),
    };
    let mut problems = Vec::new();
    for (n, line) in lines.enumerate() {
        match parse_peer_line(line) {
            Ok((key, p)) => {
                dump.peers.insert(key, p);
            }
            Err(e) => problems.push(format!("peer line {}: {e}", n + 1)),
        }
    }
    Ok((dump, problems))
}

fn parse_peer_line(line: &str) -> Result<(PublicKey, WgPeer), String> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() != 8 {
        return Err(format!("{} fields, expected 8", f.len()));
    }
    let num = |s: &str, what: &str| s.parse::<u64>().map_err(|_| format!("bad {what} '{s}'"));
    let key = f[0].parse::<PublicKey>().map_err(|e| format!("public key {e}"))?;
    let peer = WgPeer {
        preshared_key: none_or(f[1], |s| s.parse::<SecretKey>()).map_err(|e| format!("preshared key {e}"))?,
        endpoint: none_or(f[2], |s| s.parse::<SocketAddr>().map_err(|_| format!("bad endpoint '{s}'")))?,
        allowed_ips: none_or(f[3], |s| s.split(',').map(|c| parse_cidr(c.trim())).collect())?.unwrap_or_default(),
        latest_handshake: num(f[4], "handshake")? as i64,
        rx: num(f[5], "rx bytes")?,
        tx: num(f[6], "tx bytes")?,
        keepalive: if f[7] == "off" { None } else { Some(f[7].parse().map_err(|_| format!("bad keepalive '{}'", f[7]))?) },
    };
    Ok((key, peer))
}

/// Parses `ip -json addr show` into links by name.
pub fn parse_ip_addr(v: &serde_json::Value) -> Result<BTreeMap<String, Link>, String> {
    let mut out = BTreeMap::new();
    for l in v.as_array().ok_or("ip -json output is not a list")? {
        let Some(name) = l.get("ifname").and_then(|n| n.as_str()) else {
            continue;
        };
        let up = l.get("flags").and_then(|f| f.as_array()).is_some_and(|f| f.iter().any(|x| x == "UP"));
        let number = |key: &str| l.get(key).and_then(|m| m.as_u64()).unwrap_or(0) as u32;
        let mut addresses: Vec<Cidr> = l
            .get("addr_info")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
            .filter(|a| a.get("scope").and_then(|s| s.as_str()) == Some("global"))
            .filter_map(|a| {
                let local = a.get("local")?.as_str()?.parse().ok()?;
                Cidr::new(local, a.get("prefixlen")?.as_u64()?.try_into().ok()?)
            })
            .collect();
        addresses.sort();
        out.insert(name.to_string(), Link { ifindex: number("ifindex"), mtu: number("mtu"), up, addresses });
    }
    Ok(out)
}

/// Parses the output of [`batch_script`]: links with addresses, then the
/// IPv4 routes, then the IPv6 routes; keeps the static routes through `wg`.
pub fn parse_batch(out: &str, wg: &str) -> Result<(BTreeMap<String, Link>, Vec<Cidr>), String> {
    let mut docs = serde_json::Deserializer::from_str(out).into_iter::<serde_json::Value>();
    let mut next = |what: &str| docs.next().unwrap_or(Ok(serde_json::Value::Null)).map_err(|e| format!("ip -json {what}: {e}"));
    let links = parse_ip_addr(&next("addr")?)?;
    let mut routes = parse_routes(&next("route (IPv4)")?, wg, false);
    routes.extend(parse_routes(&next("route (IPv6)")?, wg, true));
    routes.sort();
    Ok((links, routes))
}

/// What `ip -json -batch -` reads to print a namespace's links with their
/// addresses and the routes of both families (`root` with the family's whole
/// space selects one family each).
pub const BATCH_SCRIPT: &str = "addr show\nroute show table all root 0.0.0.0/0\nroute show table all root ::/0\n";

/// Static routes of the main table through `dev`, from `ip -json route show
/// table all` of one family (`ipv6`; its output does not say which):
/// the kernel's own (`proto kernel`) and other tables are left out.
pub fn parse_routes(v: &serde_json::Value, dev: &str, ipv6: bool) -> Vec<Cidr> {
    let mut out = Vec::new();
    for r in v.as_array().into_iter().flatten() {
        let s = |k: &str| r.get(k).and_then(|x| x.as_str());
        let ours = s("dev") == Some(dev) && r.get("table").is_none() && s("protocol") != Some("kernel");
        if !ours || s("type").is_some_and(|t| t != "unicast") {
            continue;
        }
        let Some(dst) = s("dst") else { continue };
        let text = match dst {
            "default" if ipv6 => "::/0".to_string(),
            "default" => "0.0.0.0/0".to_string(),
            d if d.contains('/') => d.to_string(),
            d if d.contains(':') => format!("{d}/128"),
            d => format!("{d}/32"),
        };
        if let Ok(c) = parse_cidr(&text) {
            out.push(c);
        }
    }
    out.sort();
    out
}

/// The gateway's chains and jumps from `iptables-save`; everything else
/// (other tools' rules) is left out.
pub fn parse_iptables_save(text: &str) -> ObservedRules {
    let mut r = ObservedRules::default();
    let mut table = "";
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = match t {
                "nat" => "nat",
                "filter" => "filter",
                _ => "",
            };
            continue;
        }
        if let Some((_, jump)) = JUMPS.iter().find(|(t, j)| *t == table && line == *j) {
            r.jumps.insert(jump);
        } else if line.starts_with("-A GATEWAY-") {
            match table {
                "nat" => r.nat.push(line.to_string()),
                "filter" => r.filter.push(line.to_string()),
                _ => {}
            }
        }
    }
    r
}

/// `sysctl -n -e KEYS...` printed one value per key it knows (`-e` skips
/// keys this kernel lacks, e.g. without IPv6): all must have the wanted value.
pub fn sysctls_match(values: &str, want: &[(&str, &str)]) -> bool {
    values.lines().next().is_some() && values.lines().zip(want).all(|(l, (_, v))| l.trim() == *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = include_str!("../../tests/fixtures/wg-dump.txt");
    const IP_ADDR: &str = include_str!("../../tests/fixtures/ip-addr.json");
    const SAVE: &str = include_str!("../../tests/fixtures/iptables-save.txt");

    fn key(s: &str) -> PublicKey {
        s.parse().unwrap()
    }

    #[test]
    fn wg_dump_fixture() {
        let (d, problems) = parse_wg_dump(DUMP).unwrap();
        assert_eq!(d.listen_port, 51999);
        assert_eq!(d.public_key, Some(key("4dcKbDNyb6pkkRuP22OPzkHgpOb9k67iaP5R9A0xv0c=")));
        assert_eq!(d.peers.len(), 2);
        let p = &d.peers[&key("4dcKbDNyb6pkkRuP22OPzkHgpOb9k67iaP5R9A0xv0c=")];
        assert_eq!(p.endpoint, Some("10.198.1.2:40000".parse().unwrap()));
        assert_eq!(p.preshared_key, Some("OxvFhrgLnI9e4xzMMA2qQ7wm/xCUzxaWW5cb1JGkWSA=".parse().unwrap()));
        assert_eq!(p.allowed_ips, vec!["10.80.0.3/32".parse().unwrap(), "192.168.7.0/24".parse().unwrap()]);
        assert_eq!((p.latest_handshake, p.rx, p.tx, p.keepalive), (1764077400, 9132, 18020, Some(25)));
        let first = &d.peers[&key("OxvFhrgLnI9e4xzMMA2qQ7wm/xCUzxaWW5cb1JGkWSA=")];
        assert_eq!((first.endpoint, first.keepalive, first.preshared_key.as_ref()), (None, None, None));
        assert_eq!(problems.len(), 1, "the broken line is reported and skipped: {problems:?}");
    }

    #[test]
    fn wg_dump_bad_head() {
        assert!(parse_wg_dump("").is_err());
        assert!(parse_wg_dump("a\tb\n").is_err());
        let (d, _) = parse_wg_dump("(none)\t(none)\t0\toff\n").unwrap();
        assert_eq!((d.private_key, d.public_key, d.listen_port), (None, None, 0), "an unconfigured interface");
    }

    #[test]
    fn ip_addr_fixture() {
        let links = parse_ip_addr(&serde_json::from_str(IP_ADDR).unwrap()).unwrap();
        let wg = &links["wgfx1"];
        assert!(wg.up);
        assert_eq!((wg.mtu, wg.ifindex), (1420, 6));
        assert_eq!(wg.addresses, vec!["10.80.0.1/16".parse().unwrap()], "link-local v6 ignored");
        assert!(!links["lo"].up);
        assert_eq!(links["gw-uplink"].addresses[0].to_string(), "10.198.0.5/16");
        assert!(parse_ip_addr(&serde_json::json!({"not": "a list"})).is_err());
    }

    #[test]
    fn batch_fixture_both_families() {
        let (links, routes) = parse_batch(include_str!("../../tests/fixtures/ip-batch.json"), "wg1").unwrap();
        assert_eq!(links["wg1"].addresses.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.80.0.1/16", "fd00::1/64"]);
        assert_eq!(links["gw-uplink"].addresses[0].to_string(), "10.199.202.108/16");
        let routes: Vec<String> = routes.iter().map(ToString::to_string).collect();
        assert_eq!(routes, ["0.0.0.0/0", "192.168.7.0/24", "::/0"], "each default route in its own family");
        assert!(parse_batch("[{]", "wg1").is_err(), "garbage is an error, not an empty namespace");
    }

    #[test]
    fn routes_fixture() {
        let v: serde_json::Value = serde_json::from_str(include_str!("../../tests/fixtures/ip-route.json")).unwrap();
        let r: Vec<String> = parse_routes(&v, "wg1", false).iter().map(ToString::to_string).collect();
        assert_eq!(r, ["192.168.7.0/24", "192.168.9.5/32", "fd01::/64"], "kernel, local-table and other devices' routes left out");
        let default = serde_json::json!([{"dst": "default", "dev": "wg1", "metric": 1024, "flags": [], "pref": "medium"}]);
        assert_eq!(parse_routes(&default, "wg1", true), ["::/0".parse::<Cidr>().unwrap()], "an IPv6 default route is IPv6");
        assert_eq!(parse_routes(&default, "wg1", false), ["0.0.0.0/0".parse::<Cidr>().unwrap()]);
        let typed = serde_json::json!([
            {"type": "unicast", "dst": "fd01::5", "dev": "wg1"},
            {"type": "multicast", "dst": "ff00::/8", "dev": "wg1"},
            {"dst": "10.9.0.0/16", "dev": "wg1", "protocol": "static"},
        ]);
        let r: Vec<String> = parse_routes(&typed, "wg1", true).iter().map(ToString::to_string).collect();
        assert_eq!(r, ["10.9.0.0/16", "fd01::5/128"], "unicast only; a host route is /128 in IPv6");
    }

    #[test]
    fn iptables_save_fixture() {
        let r = parse_iptables_save(SAVE);
        assert_eq!(r.jumps.len(), 3);
        assert_eq!(r.nat.len(), 2);
        assert_eq!(r.filter.len(), 4);
        assert!(r.nat.iter().all(|l| l.starts_with("-A GATEWAY-")));
        // A foreign rule in PREROUTING is not ours and not reported.
        assert!(!r.nat.iter().any(|l| l.contains("8.8.8.8")));
    }

    #[test]
    fn sysctl_values() {
        let want = crate::layout::NAMESPACE_SYSCTLS;
        assert!(sysctls_match("1\n1\n1\n", &want));
        assert!(sysctls_match("1\n1\n", &want), "a kernel without IPv6 skips that key");
        assert!(!sysctls_match("1\n0\n1\n", &want));
        assert!(!sysctls_match("", &want), "nothing read is not set");
    }
}
