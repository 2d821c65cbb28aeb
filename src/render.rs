//! Typed renderers: checked values in, config text out. Inputs come from
//! `validate`, so nothing here needs escaping; golden tests pin the output.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddrV4;

use crate::layout::{CHAIN_DNAT, CHAIN_FORWARD, CHAIN_SNAT, Layout, VETH_NS_NAME};
use crate::validate::{CustomForwarding, Desired, Hostname, NetworkSpec, Scheme, ZERO_KEY};

/// WireGuard configuration in `wg setconf`/`wg syncconf` format. Holds the
/// private key: it is passed on stdin, never written to disk or logged.
pub fn wg_conf(spec: &NetworkSpec) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "[Interface]\nPrivateKey = {}\nListenPort = {}", spec.private_key.as_str(), spec.port);
    for (key, peer) in &spec.peers {
        let _ = writeln!(s, "\n[Peer]\nPublicKey = {}", key.as_str());
        // `wg syncconf` leaves unwritten fields as they were: "none" must be
        // written (all zeros, `off`) or removing a key or keepalive never
        // takes effect.
        let psk = peer.preshared_key.as_ref().map_or(ZERO_KEY, |k| k.as_str());
        let _ = writeln!(s, "PresharedKey = {psk}");
        if !peer.allowed_ips.is_empty() {
            let ips: Vec<String> = peer.allowed_ips.iter().map(ToString::to_string).collect();
            let _ = writeln!(s, "AllowedIPs = {}", ips.join(", "));
        }
        if let Some(ep) = &peer.endpoint {
            let _ = writeln!(s, "Endpoint = {ep}");
        }
        match peer.persistent_keepalive {
            Some(k) => writeln!(s, "PersistentKeepalive = {k}"),
            None => writeln!(s, "PersistentKeepalive = off"),
        }
        .ok();
    }
    s
}

/// The gateway's own iptables rules inside one namespace, in the exact form
/// `iptables-save` prints them, so observed and desired compare as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    pub nat: Vec<String>,
    pub filter: Vec<String>,
}

/// Jumps from the built-in chains into ours; added once, never duplicated.
pub const JUMPS: [(&str, &str); 3] =
    [("nat", "-A PREROUTING -j GATEWAY-DNAT"), ("nat", "-A POSTROUTING -j GATEWAY-SNAT"), ("filter", "-A FORWARD -j GATEWAY-FORWARD")];

pub fn rules(layout: &Layout, spec: &NetworkSpec) -> RuleSet {
    let wg = layout.wg(spec.port);
    let veth_ip = layout.veth_ns_ip(spec.port);
    let mut nat = Vec::new();
    for (up, port) in layout.dnat_ports(&spec.upstreams()) {
        nat.push(format!("-A {CHAIN_DNAT} -d {veth_ip}/32 -i {VETH_NS_NAME} -p tcp -m tcp --dport {port} -j DNAT --to-destination {up}"));
    }
    nat.push(format!("-A {CHAIN_SNAT} -o {wg} -j MASQUERADE"));
    // Nodes reach each other and the DNATed ingress; nothing else crosses the
    // namespace (in particular not the bridge, the host or other networks).
    let filter = vec![
        format!("-A {CHAIN_FORWARD} -i {wg} -o {wg} -j ACCEPT"),
        format!("-A {CHAIN_FORWARD} -i {VETH_NS_NAME} -o {wg} -j ACCEPT"),
        format!("-A {CHAIN_FORWARD} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
        format!("-A {CHAIN_FORWARD} -j DROP"),
    ];
    RuleSet { nat, filter }
}

/// Input for `iptables-restore --noflush`: flushes and refills only the
/// gateway's chains, adds the jumps that are missing, touches nothing else.
pub fn iptables_restore(rules: &RuleSet, missing_jumps: &[&str]) -> String {
    let mut s = String::new();
    for (table, chains, lines) in [("nat", &[CHAIN_DNAT, CHAIN_SNAT][..], &rules.nat), ("filter", &[CHAIN_FORWARD][..], &rules.filter)] {
        let _ = writeln!(s, "*{table}");
        for c in chains {
            let _ = writeln!(s, ":{c} - [0:0]");
        }
        for c in chains {
            let _ = writeln!(s, "-F {c}");
        }
        for (t, jump) in JUMPS {
            if t == table && missing_jumps.contains(&jump) {
                let _ = writeln!(s, "{jump}");
            }
        }
        for l in lines {
            let _ = writeln!(s, "{l}");
        }
        let _ = writeln!(s, "COMMIT");
    }
    s
}

/// Where nginx should send one hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub host: Hostname,
    /// A stable nginx upstream name.
    pub upstream_name: String,
    pub servers: Vec<SocketAddrV4>,
}

/// Everything nginx needs, in typed form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxSite {
    pub options: NginxOptions,
    pub https: Vec<Route>,
    pub http: Vec<Route>,
}

/// Operator settings of the generated nginx config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxOptions {
    /// `PORT`, `IP:PORT` or `[IPv6]:PORT` (checked at start-up).
    pub https_listen: String,
    pub http_listen: String,
    /// Written in the http file so long hostnames fit; 0 leaves it to the
    /// main config (nginx refuses the directive twice).
    pub server_names_hash_bucket_size: u32,
}

impl NginxSite {
    pub fn build(layout: &Layout, desired: &Desired, custom: &[CustomForwarding], options: &NginxOptions) -> Self {
        let mut https = Vec::new();
        let mut http = Vec::new();
        for spec in desired.networks.values() {
            let ports = layout.dnat_ports(&spec.upstreams());
            let veth_ip = layout.veth_ns_ip(spec.port);
            let to_veth = |servers: &Vec<SocketAddrV4>| -> Vec<SocketAddrV4> {
                servers.iter().filter_map(|u| ports.get(u)).map(|p| SocketAddrV4::new(veth_ip, *p)).collect()
            };
            for (scheme, map, out) in [("https", &spec.https, &mut https), ("http", &spec.http, &mut http)] {
                for (i, (host, servers)) in map.iter().enumerate() {
                    out.push(Route {
                        host: host.clone(),
                        upstream_name: format!("gateway_{scheme}_{}_{i}", spec.port),
                        servers: to_veth(servers),
                    });
                }
            }
        }
        for (i, f) in custom.iter().enumerate() {
            let (scheme, out) = match f.scheme {
                Scheme::Https => ("https", &mut https),
                Scheme::Http => ("http", &mut http),
            };
            out.push(Route { host: f.host.clone(), upstream_name: format!("gateway_{scheme}_custom_{i}"), servers: vec![f.upstream] });
        }
        https.sort_by(|a, b| a.host.cmp(&b.host));
        http.sort_by(|a, b| a.host.cmp(&b.host));
        NginxSite { options: options.clone(), https, http }
    }

    /// Which hostnames go where; used to tell whether nginx must be reloaded.
    pub fn routes(&self) -> BTreeMap<String, Vec<SocketAddrV4>> {
        let mut m = BTreeMap::new();
        for (scheme, list) in [("https", &self.https), ("http", &self.http)] {
            for r in list {
                m.insert(format!("{scheme}://{}", r.host), r.servers.clone());
            }
        }
        m
    }
}

const HEADER: &str = "# Written by gateway. Do not edit: it is rewritten whenever the desired state changes.\n";

fn upstream_block(s: &mut String, indent: &str, r: &Route) {
    let _ = writeln!(s, "{indent}upstream {} {{", r.upstream_name);
    for srv in &r.servers {
        let _ = writeln!(s, "{indent}    server {srv};");
    }
    let _ = writeln!(s, "{indent}}}");
}

/// The `stream {}` block: HTTPS passed through untouched, chosen by SNI.
pub fn nginx_stream(site: &NginxSite) -> String {
    let mut s = String::from(HEADER);
    s.push_str("stream {\n");
    // Room for 253-character names and many of them.
    s.push_str("    map_hash_bucket_size 512;\n    map_hash_max_size 65536;\n");
    s.push_str("    map $ssl_preread_server_name $gateway_backend {\n        default gateway_unknown_host;\n");
    for r in &site.https {
        // The leading backslash makes names like `default`, `include` or
        // `hostnames` plain keys instead of map parameters.
        let _ = writeln!(s, "        \\{} {};", r.host, r.upstream_name);
    }
    s.push_str("    }\n\n");
    s.push_str("    # A name nobody serves: the connection is closed.\n");
    s.push_str("    upstream gateway_unknown_host {\n        server 127.0.0.1:9 down;\n    }\n");
    for r in &site.https {
        upstream_block(&mut s, "    ", r);
    }
    s.push_str("\n    server {\n");
    let _ = writeln!(s, "        listen {};", site.options.https_listen);
    s.push_str("        ssl_preread on;\n        proxy_pass $gateway_backend;\n");
    s.push_str("        # The first connection may wait for a WireGuard handshake.\n");
    s.push_str("        proxy_connect_timeout 10s;\n");
    s.push_str("        # Long-lived TLS connections (websockets, streaming) stay open while idle.\n");
    s.push_str("        proxy_timeout 1h;\n");
    s.push_str("    }\n}\n");
    s
}

/// `server {}` blocks included inside `http {}`: reverse proxy by Host.
pub fn nginx_http(site: &NginxSite) -> String {
    let mut s = String::from(HEADER);
    if site.http.is_empty() {
        return s;
    }
    if site.options.server_names_hash_bucket_size > 0 {
        let _ = writeln!(s, "server_names_hash_bucket_size {};", site.options.server_names_hash_bucket_size);
    }
    s.push_str("map $http_upgrade $gateway_connection_upgrade {\n    default upgrade;\n    '' close;\n}\n");
    for r in &site.http {
        s.push('\n');
        upstream_block(&mut s, "", r);
        s.push_str("server {\n");
        let _ = writeln!(s, "    listen {};", site.options.http_listen);
        let _ = writeln!(s, "    server_name {};", r.host);
        s.push_str("    location / {\n");
        let _ = writeln!(s, "        proxy_pass http://{};", r.upstream_name);
        s.push_str(concat!(
            "        proxy_http_version 1.1;\n",
            "        proxy_set_header Host $host;\n",
            "        proxy_set_header X-Real-IP $remote_addr;\n",
            "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n",
            "        proxy_set_header X-Forwarded-Proto $scheme;\n",
            "        proxy_set_header Upgrade $http_upgrade;\n",
            "        proxy_set_header Connection $gateway_connection_upgrade;\n",
            "        proxy_connect_timeout 10s;\n",
            "        proxy_read_timeout 1h;\n",
            "        proxy_send_timeout 1h;\n",
            "    }\n}\n",
        ));
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{GatewayConfig, NetworkConfig, PeerConfig};
    use crate::validate::{Context, parse_custom_forwardings, validate};

    pub const PRIV: &str = "0EtpYOfpZyKaIcpkq+KO/+joyV431f1X99CcB2OMo3c=";
    pub const PEER1: &str = "OxvFhrgLnI9e4xzMMA2qQ7wm/xCUzxaWW5cb1JGkWSA=";
    pub const PEER2: &str = "LRj4SHqfSjzR+dz1Zmcq7dfiZk4tFWIm+wKv1QqGXx0=";

    pub fn sample_config() -> GatewayConfig {
        let net = NetworkConfig {
            private_key: PRIV.into(),
            listen_port: Some(51820),
            mtu: Some(1380),
            address: vec!["10.80.0.1/16".into()],
            peers: [
                (
                    PEER1.to_string(),
                    PeerConfig {
                        preshared_key: Some(PEER2.into()),
                        allowed_ips: vec!["10.80.0.2/32".into()],
                        endpoint: Some("203.0.113.7:41213".into()),
                        persistent_keepalive: Some(25),
                    },
                ),
                (
                    PEER2.to_string(),
                    PeerConfig {
                        preshared_key: None,
                        allowed_ips: vec!["10.80.0.3/32".into(), "192.168.7.0/24".into()],
                        endpoint: None,
                        persistent_keepalive: None,
                    },
                ),
            ]
            .into(),
            proxy: [
                ("https://app.example.com".to_string(), vec!["10.80.0.2:443".to_string(), "10.80.0.3:443".to_string()]),
                ("http://app.example.com".to_string(), vec!["10.80.0.2:80".to_string()]),
                ("https://db.example.com".to_string(), vec!["10.80.0.3:443".to_string()]),
            ]
            .into(),
        };
        let mut other = net.clone();
        other.private_key = "0HPlRxcp5W4u92WrM/Esf7dN1T6XPk/a96sfThph7Vo=".into();
        other.listen_port = None;
        other.mtu = None;
        other.peers.clear();
        other.address = vec!["10.81.0.1/24".into()];
        other.proxy = [("https://other.test".to_string(), vec!["10.81.0.9:8443".to_string()])].into();
        [("51820".to_string(), net), ("51821".to_string(), other)].into()
    }

    /// Compares with a golden file; `UPDATE_GOLDEN=1` rewrites it.
    pub fn golden(name: &str, actual: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
        assert_eq!(actual, expected, "golden file {name} differs");
    }

    fn options() -> NginxOptions {
        NginxOptions { https_listen: "443".into(), http_listen: "80".into(), server_names_hash_bucket_size: 512 }
    }

    fn site() -> (Desired, NginxSite) {
        let d = validate(&sample_config(), &Context::default()).unwrap();
        let custom = parse_custom_forwardings("https://api.example.com=127.0.0.1:8443,http://api.example.com=127.0.0.1:8080").unwrap();
        let site = NginxSite::build(&Layout::default(), &d, &custom, &options());
        (d, site)
    }

    #[test]
    fn golden_nginx() {
        let (_, site) = site();
        golden("nginx-stream.conf", &nginx_stream(&site));
        golden("nginx-http.conf", &nginx_http(&site));
        let empty = NginxSite::build(&Layout::default(), &Desired::default(), &[], &options());
        golden("nginx-stream-empty.conf", &nginx_stream(&empty));
        assert_eq!(nginx_http(&empty), HEADER);
    }

    #[test]
    fn golden_iptables() {
        let (d, _) = site();
        let rs = rules(&Layout::default(), &d.networks[&51820]);
        golden("iptables-51820.rules", &iptables_restore(&rs, &JUMPS.map(|j| j.1)));
        assert!(!iptables_restore(&rs, &[]).contains("-A PREROUTING"), "present jumps are not added again");
    }

    #[test]
    fn golden_wireguard() {
        let (d, _) = site();
        golden("wg-51820.conf", &wg_conf(&d.networks[&51820]));
    }

    #[test]
    fn nginx_and_nat_agree_on_ports() {
        let (d, site) = site();
        let rs = rules(&Layout::default(), &d.networks[&51820]);
        for r in site.https.iter().chain(&site.http).filter(|r| !r.upstream_name.contains("custom")) {
            for srv in &r.servers {
                if srv.ip() != &Layout::default().veth_ns_ip(51820) {
                    continue;
                }
                assert!(
                    rs.nat.iter().any(|l| l.contains(&format!("-d {}/32", srv.ip())) && l.contains(&format!("--dport {} ", srv.port()))),
                    "{srv} has no DNAT rule"
                );
            }
        }
    }
}
