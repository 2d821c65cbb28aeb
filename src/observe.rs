//! Reads what is on the system. Cheap reads (the namespace directory, sysfs,
//! nginx's files) cost no process; a deep look into one network costs four
//! read-only commands and is done only where needed (see `reconcile`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::layout::{Layout, VETH_NS_NAME};
use crate::render::JUMPS;
use crate::runner::{Cmd, CmdError, Runner};
use crate::validate::Cidr;

/// Paths of the tools the gateway drives.
#[derive(Debug, Clone)]
pub struct Tools {
    pub ip: String,
    pub wg: String,
    pub wireguard_go: String,
    pub iptables_save: String,
    pub iptables_restore: String,
    pub sysctl: String,
    pub nginx: String,
}

impl Default for Tools {
    fn default() -> Self {
        Tools {
            ip: "ip".into(),
            wg: "wg".into(),
            wireguard_go: "wireguard-go".into(),
            iptables_save: "iptables-save".into(),
            iptables_restore: "iptables-restore".into(),
            sysctl: "sysctl".into(),
            nginx: "nginx".into(),
        }
    }
}

/// Files and directories the observer reads directly.
#[derive(Debug, Clone)]
pub struct SystemPaths {
    pub netns_dir: PathBuf,
    pub sys_class_net: PathBuf,
    pub wireguard_sock_dir: PathBuf,
    pub nginx_stream: PathBuf,
    pub nginx_http: PathBuf,
    pub nginx_conf: PathBuf,
    pub nginx_pid: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgPeer {
    pub public_key: String,
    pub preshared_key: Option<String>,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    /// Unix seconds; 0 = never.
    pub latest_handshake: i64,
    pub rx: u64,
    pub tx: u64,
    pub keepalive: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgDump {
    pub private_key: String,
    pub public_key: String,
    pub listen_port: u16,
    pub peers: Vec<WgPeer>,
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
    let listen_port = f[2].parse().map_err(|_| "bad listen port in interface line".to_string())?;
    let mut dump = WgDump { private_key: f[0].into(), public_key: f[1].into(), listen_port, peers: Vec::new() };
    let mut problems = Vec::new();
    for (n, line) in lines.enumerate() {
        match parse_peer_line(line) {
            Ok(p) => dump.peers.push(p),
            Err(e) => problems.push(format!("peer line {}: {e}", n + 1)),
        }
    }
    Ok((dump, problems))
}

fn parse_peer_line(line: &str) -> Result<WgPeer, String> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() != 8 {
        return Err(format!("{} fields, expected 8", f.len()));
    }
    let none = |s: &str| (s != "(none)").then(|| s.to_string());
    let num = |s: &str, what: &str| s.parse::<u64>().map_err(|_| format!("bad {what} '{s}'"));
    Ok(WgPeer {
        public_key: f[0].into(),
        preshared_key: none(f[1]),
        endpoint: none(f[2]),
        allowed_ips: if f[3] == "(none)" { Vec::new() } else { f[3].split(',').map(|s| s.trim().to_string()).collect() },
        latest_handshake: num(f[4], "handshake")? as i64,
        rx: num(f[5], "rx bytes")?,
        tx: num(f[6], "tx bytes")?,
        keepalive: if f[7] == "off" { None } else { Some(f[7].parse().map_err(|_| format!("bad keepalive '{}'", f[7]))?) },
    })
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    /// Changes when the interface is recreated (indexes are not reused soon).
    pub ifindex: u32,
    pub mtu: u32,
    pub up: bool,
    /// Global-scope addresses only (link-local ones come and go on their own).
    pub addresses: Vec<Cidr>,
}

/// Parses `ip -json addr show` into links by name.
pub fn parse_ip_addr(json: &str) -> Result<BTreeMap<String, Link>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("ip -json output: {e}"))?;
    let mut out = BTreeMap::new();
    for l in v.as_array().ok_or("ip -json output is not a list")? {
        let Some(name) = l.get("ifname").and_then(|n| n.as_str()) else {
            continue;
        };
        let up = l.get("flags").and_then(|f| f.as_array()).is_some_and(|f| f.iter().any(|x| x == "UP"));
        let mtu = l.get("mtu").and_then(|m| m.as_u64()).unwrap_or(0) as u32;
        let mut addresses = Vec::new();
        for a in l.get("addr_info").and_then(|a| a.as_array()).into_iter().flatten() {
            if a.get("scope").and_then(|s| s.as_str()) != Some("global") {
                continue;
            }
            if let (Some(local), Some(prefix)) = (a.get("local").and_then(|x| x.as_str()), a.get("prefixlen").and_then(|x| x.as_u64())) {
                if let Ok(c) = Cidr::parse(&format!("{local}/{prefix}")) {
                    addresses.push(c);
                }
            }
        }
        addresses.sort();
        let ifindex = l.get("ifindex").and_then(|m| m.as_u64()).unwrap_or(0) as u32;
        out.insert(name.to_string(), Link { ifindex, mtu, up, addresses });
    }
    Ok(out)
}

/// Parses the output of the `ip -json -batch` in [`Observer::observe_network`]:
/// links with addresses, then the IPv4 routes, then the IPv6 routes; keeps
/// the static routes through `wg`.
pub fn parse_batch(out: &str, wg: &str) -> (BTreeMap<String, Link>, Vec<Cidr>) {
    let mut docs = serde_json::Deserializer::from_str(out).into_iter::<serde_json::Value>();
    let links = docs.next().and_then(Result::ok).map(|v| parse_ip_addr(&v.to_string()).unwrap_or_default()).unwrap_or_default();
    let mut routes = docs.next().and_then(Result::ok).map(|v| parse_routes(&v, wg, false)).unwrap_or_default();
    routes.extend(docs.next().and_then(Result::ok).map(|v| parse_routes(&v, wg, true)).unwrap_or_default());
    routes.sort();
    (links, routes)
}

/// Static routes of the main table through `dev`, from `ip -json route show
/// table all` of one family (`ipv6`; its output does not say which):
/// the kernel's own (`proto kernel`) and other tables are left out.
pub fn parse_routes(v: &serde_json::Value, dev: &str, ipv6: bool) -> Vec<Cidr> {
    let mut out = Vec::new();
    for r in v.as_array().into_iter().flatten() {
        let s = |k: &str| r.get(k).and_then(|x| x.as_str());
        if s("dev") != Some(dev) || r.get("table").is_some() || s("protocol") == Some("kernel") || s("type").is_some_and(|t| t != "unicast")
        {
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
        if let Ok(c) = Cidr::parse(&text) {
            out.push(c);
        }
    }
    out.sort();
    out
}

/// The gateway's own rules as `iptables-save` prints them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedRules {
    pub nat: Vec<String>,
    pub filter: Vec<String>,
    /// Jumps (from `render::JUMPS`) present in the built-in chains.
    pub jumps: BTreeSet<&'static str>,
}

pub fn parse_iptables_save(text: &str) -> ObservedRules {
    let mut r = ObservedRules::default();
    let mut table = "";
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = if t == "nat" {
                "nat"
            } else if t == "filter" {
                "filter"
            } else {
                ""
            };
            continue;
        }
        if let Some((_, jump)) = JUMPS.iter().find(|(t, j)| *t == table && line == *j) {
            r.jumps.insert(jump);
            continue;
        }
        if line.starts_with("-A GATEWAY-") {
            match table {
                "nat" => r.nat.push(line.to_string()),
                "filter" => r.filter.push(line.to_string()),
                _ => {}
            }
        }
    }
    r
}

/// What one network looks like inside its namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedNetwork {
    pub wg: Option<WgDump>,
    pub wg_link: Option<Link>,
    pub uplink: Option<Link>,
    /// Forwarding and the other [`crate::execute::NAMESPACE_SYSCTLS`] are set.
    pub forwarding: bool,
    pub rules: ObservedRules,
    /// Static routes through the WireGuard interface (not the kernel's own).
    pub routes: Vec<Cidr>,
    /// A peer's desired endpoint differs from the one it was last given:
    /// WireGuard's own (possibly roamed) endpoint must not hide that change.
    pub endpoints_changed: bool,
    /// Problems met while reading (e.g. a peer line that did not parse).
    pub problems: Vec<String>,
}

/// The root-namespace end of a network's veth.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostVeth {
    pub on_bridge: bool,
    pub up: bool,
    pub isolated: bool,
    /// Created by the gateway (tagged with [`OWNED_ALIAS`]): only such
    /// links are ever deleted, whatever their name.
    pub owned: bool,
}

/// The alias (`ip link set ... alias`) the gateway gives the links it
/// creates in the root namespace, so it never deletes somebody else's `wg2`.
pub const OWNED_ALIAS: &str = "gateway";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedBridge {
    pub up: bool,
    /// Created by the gateway ([`OWNED_ALIAS`]); only then deleted, or
    /// stripped of other addresses.
    pub owned: bool,
    /// None when not read this time (assumed right, see `reconcile`).
    pub addresses: Option<Vec<Cidr>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub bridge: Option<ObservedBridge>,
    /// Ports of the namespaces with our prefix.
    pub namespaces: BTreeSet<u16>,
    /// WireGuard interfaces with our prefix still in the root namespace.
    /// (the value: created by the gateway, see [`OWNED_ALIAS`]).
    pub wg_in_root: BTreeMap<u16, bool>,
    /// Root ends of veths with our prefix, by port.
    pub host_veths: BTreeMap<u16, HostVeth>,
    /// Networks looked into (deeply, or as last converged: see `reconcile`).
    pub networks: BTreeMap<u16, ObservedNetwork>,
    pub nginx_stream: Option<String>,
    pub nginx_http: Option<String>,
    pub nginx_running: bool,
}

#[derive(Clone)]
pub struct Observer {
    pub runner: Runner,
    pub layout: Layout,
    pub tools: Tools,
    pub paths: SystemPaths,
}

fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

impl Observer {
    /// Everything that costs no process: namespaces, root links, nginx files.
    pub fn observe_cheap(&self) -> Observed {
        let mut o = Observed::default();
        if let Ok(dir) = std::fs::read_dir(&self.paths.netns_dir) {
            for e in dir.flatten() {
                if let Some(port) = e.file_name().to_str().and_then(|n| self.layout.port_of_netns(n)) {
                    o.namespaces.insert(port);
                }
            }
        }
        let net = &self.paths.sys_class_net;
        if let Ok(dir) = std::fs::read_dir(net) {
            for e in dir.flatten() {
                let Some(name) = e.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let owned = read_trimmed(&net.join(&name).join("ifalias")).as_deref() == Some(OWNED_ALIAS);
                if let Some(port) = self.layout.port_of_wg(&name) {
                    o.wg_in_root.insert(port, owned);
                }
                if let Some(port) = name.strip_prefix(&self.layout.veth_prefix).and_then(|d| crate::validate::parse_port_key(d).ok()) {
                    let master = std::fs::read_link(net.join(&name).join("master")).ok();
                    o.host_veths.insert(
                        port,
                        HostVeth {
                            on_bridge: master.as_ref().and_then(|m| m.file_name()).is_some_and(|m| m == self.layout.bridge.as_str()),
                            up: link_up(&net.join(&name)),
                            isolated: read_trimmed(&net.join(&name).join("brport/isolated")).as_deref() == Some("1"),
                            owned,
                        },
                    );
                }
            }
        }
        let br = net.join(&self.layout.bridge);
        if br.exists() {
            let owned = read_trimmed(&br.join("ifalias")).as_deref() == Some(OWNED_ALIAS);
            o.bridge = Some(ObservedBridge { up: link_up(&br), addresses: None, owned });
        }
        o.nginx_stream = std::fs::read_to_string(&self.paths.nginx_stream).ok();
        o.nginx_http = std::fs::read_to_string(&self.paths.nginx_http).ok();
        o.nginx_running = self.nginx_running();
        o
    }

    pub fn nginx_running(&self) -> bool {
        self.nginx_master().is_some()
    }

    /// The pid of nginx's master process, if it runs: the pid file may be
    /// stale (its pid reused by another program) or name a zombie.
    pub fn nginx_master(&self) -> Option<u32> {
        let pid = read_trimmed(&self.paths.nginx_pid)?.parse::<u32>().ok()?;
        let stat = ProcStat::read(Path::new(&format!("/proc/{pid}")))?;
        (stat.comm == "nginx" && stat.state != "Z" && stat.state != "X").then_some(pid)
    }

    /// Reads the bridge's addresses (one process).
    pub async fn observe_bridge_addresses(&self, o: &mut Observed) -> Result<(), CmdError> {
        if let Some(b) = &mut o.bridge {
            let out = self.runner.run(&Cmd::new(&self.tools.ip, ["-json", "addr", "show", "dev", &self.layout.bridge]).read_only()).await?;
            let links = parse_ip_addr(&out).unwrap_or_default();
            b.addresses = Some(links.get(&self.layout.bridge).map(|l| l.addresses.clone()).unwrap_or_default());
        }
        Ok(())
    }

    /// `wg show IFACE dump` inside the network's namespace (works for both backends).
    pub async fn wg_dump(&self, port: u16) -> Result<Option<(WgDump, Vec<String>)>, CmdError> {
        let ns = self.layout.netns(port);
        let wg = self.layout.wg(port);
        match self.runner.run(&Cmd::new(&self.tools.ip, ["netns", "exec", &ns, &self.tools.wg, "show", &wg, "dump"]).read_only()).await {
            Ok(text) => Ok(parse_wg_dump(&text).ok()),
            Err(e) if e.stderr().contains("No such device") || e.stderr().contains("Unable to access interface") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A full look into one network's namespace (four read-only commands).
    pub async fn observe_network(&self, port: u16) -> Result<ObservedNetwork, CmdError> {
        let ns = self.layout.netns(port);
        let ip = &self.tools.ip;
        // Links, addresses and routes of both families in one command.
        // (`root` with the family's whole space selects one family each.)
        let batch = Cmd::new(ip, ["-n", &ns, "-json", "-batch", "-"])
            .stdin("addr show\nroute show table all root 0.0.0.0/0\nroute show table all root ::/0\n")
            .read_only();
        let out = self.runner.run(&batch).await?;
        let wg = self.layout.wg(port);
        let (links, routes) = parse_batch(&out, &wg);
        let mut n =
            ObservedNetwork { wg_link: links.get(&wg).cloned(), uplink: links.get(VETH_NS_NAME).cloned(), routes, ..Default::default() };
        if n.wg_link.is_some() {
            if let Some((dump, problems)) = self.wg_dump(port).await? {
                n.wg = Some(dump);
                n.problems = problems;
            }
        }
        let save = self.runner.run(&Cmd::new(ip, ["netns", "exec", &ns, &self.tools.iptables_save]).read_only()).await?;
        n.rules = parse_iptables_save(&save);
        let mut args = vec!["netns".to_string(), "exec".into(), ns.clone(), self.tools.sysctl.clone(), "-n".into(), "-e".into()];
        args.extend(crate::execute::NAMESPACE_SYSCTLS.iter().map(|(k, _)| k.to_string()));
        let values = self.runner.run(&Cmd::new(ip, args).read_only()).await?;
        // `-e` skips keys this kernel lacks (no IPv6); every value printed must be set.
        let want = crate::execute::NAMESPACE_SYSCTLS.iter().map(|(_, v)| *v);
        n.forwarding = values.lines().next().is_some() && values.lines().zip(want).all(|(l, v)| l.trim() == v);
        Ok(n)
    }
}

/// The fields of `/proc/PID/stat` the gateway needs.
struct ProcStat {
    comm: String,
    state: String,
    ppid: Option<u32>,
}

impl ProcStat {
    /// `pid (comm) state ppid ...`; comm may hold spaces and parentheses, so
    /// the fields after it are split from the last ')'.
    fn read(proc_dir: &Path) -> Option<Self> {
        let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
        let (head, rest) = stat.rsplit_once(')')?;
        let mut fields = rest.split_whitespace();
        Some(ProcStat {
            comm: head.split_once('(')?.1.to_string(),
            state: fields.next()?.to_string(),
            ppid: fields.next().and_then(|p| p.parse().ok()),
        })
    }
}

/// Children of a process, from /proc (no process spawned).
pub fn children_of(parent: u32) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if ProcStat::read(&e.path()).and_then(|s| s.ppid) == Some(parent) {
            out.insert(pid);
        }
    }
    out
}

fn link_up(dir: &Path) -> bool {
    read_trimmed(&dir.join("flags")).and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok()).is_some_and(|f| f & 1 == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = include_str!("../tests/fixtures/wg-dump.txt");
    const IP_ADDR: &str = include_str!("../tests/fixtures/ip-addr.json");
    const SAVE: &str = include_str!("../tests/fixtures/iptables-save.txt");

    #[test]
    fn wg_dump_fixture() {
        let (d, problems) = parse_wg_dump(DUMP).unwrap();
        assert_eq!(d.listen_port, 51999);
        assert_eq!(d.public_key, "4dcKbDNyb6pkkRuP22OPzkHgpOb9k67iaP5R9A0xv0c=");
        assert_eq!(d.peers.len(), 2);
        let p = &d.peers[1];
        assert_eq!(p.endpoint.as_deref(), Some("10.198.1.2:40000"));
        assert_eq!(p.preshared_key.as_deref(), Some("OxvFhrgLnI9e4xzMMA2qQ7wm/xCUzxaWW5cb1JGkWSA="));
        assert_eq!(p.allowed_ips, vec!["10.80.0.3/32", "192.168.7.0/24"]);
        assert_eq!((p.latest_handshake, p.rx, p.tx, p.keepalive), (1764077400, 9132, 18020, Some(25)));
        assert_eq!(d.peers[0].endpoint, None);
        assert_eq!(d.peers[0].keepalive, None);
        assert_eq!(problems.len(), 1, "the broken line is reported and skipped: {problems:?}");
    }

    #[test]
    fn wg_dump_bad_head() {
        assert!(parse_wg_dump("").is_err());
        assert!(parse_wg_dump("a\tb\n").is_err());
    }

    #[test]
    fn ip_addr_fixture() {
        let links = parse_ip_addr(IP_ADDR).unwrap();
        let wg = &links["wgfx1"];
        assert!(wg.up);
        assert_eq!((wg.mtu, wg.ifindex), (1420, 6));
        assert_eq!(wg.addresses, vec![Cidr::parse("10.80.0.1/16").unwrap()], "link-local v6 ignored");
        assert!(!links["lo"].up);
        assert_eq!(links["gw-uplink"].addresses[0].to_string(), "10.198.0.5/16");
        assert!(parse_ip_addr("not json").is_err());
    }

    #[test]
    fn batch_fixture_both_families() {
        let (links, routes) = parse_batch(include_str!("../tests/fixtures/ip-batch.json"), "wg1");
        assert_eq!(links["wg1"].addresses.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.80.0.1/16", "fd00::1/64"]);
        assert_eq!(links["gw-uplink"].addresses[0].to_string(), "10.199.202.108/16");
        let routes: Vec<String> = routes.iter().map(ToString::to_string).collect();
        assert_eq!(routes, ["0.0.0.0/0", "192.168.7.0/24", "::/0"], "each default route in its own family");
    }

    #[test]
    fn routes_fixture() {
        let v: serde_json::Value = serde_json::from_str(include_str!("../tests/fixtures/ip-route.json")).unwrap();
        let r: Vec<String> = parse_routes(&v, "wg1", false).iter().map(ToString::to_string).collect();
        assert_eq!(r, ["192.168.7.0/24", "192.168.9.5/32", "fd01::/64"], "kernel, local-table and other devices' routes left out");
        let default = serde_json::json!([{"dst": "default", "dev": "wg1", "metric": 1024, "flags": [], "pref": "medium"}]);
        assert_eq!(parse_routes(&default, "wg1", true), [Cidr::parse("::/0").unwrap()], "an IPv6 default route is IPv6");
        assert_eq!(parse_routes(&default, "wg1", false), [Cidr::parse("0.0.0.0/0").unwrap()]);
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
}
