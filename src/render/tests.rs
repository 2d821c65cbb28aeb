use super::nginx::HEADER;
use super::*;
use std::collections::BTreeMap;

use crate::layout::Layout;
use crate::model::{GatewayConfig, NetworkConfig, PeerConfig};
use crate::spec::{Desired, parse_custom_forwardings};
use crate::validate::{Context, validate};

#[path = "../../tests/support/golden.rs"]
mod golden_rule;

pub const PRIV: &str = "0EtpYOfpZyKaIcpkq+KO/+joyV431f1X99CcB2OMo3c=";
pub const PEER1: &str = "OxvFhrgLnI9e4xzMMA2qQ7wm/xCUzxaWW5cb1JGkWSA=";
pub const PEER2: &str = "LRj4SHqfSjzR+dz1Zmcq7dfiZk4tFWIm+wKv1QqGXx0=";

/// Two networks: 51820 with two peers (one with a preshared key, keepalive
/// and endpoint; one with a LAN behind it) and three routes, 51821 bare.
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
            ("https://app.example.com".to_string(), vec!["10.80.0.2:443".to_string(), "10.80.0.3:443".to_string()].into()),
            ("http://app.example.com".to_string(), vec!["10.80.0.2:80".to_string()].into()),
            ("https://db.example.com".to_string(), vec!["10.80.0.3:443".to_string()].into()),
        ]
        .into(),
        bandwidth: None,
    };
    let mut other = net.clone();
    other.private_key = "0HPlRxcp5W4u92WrM/Esf7dN1T6XPk/a96sfThph7Vo=".into();
    other.listen_port = None;
    other.mtu = None;
    other.peers.clear();
    other.address = vec!["10.81.0.1/24".into()];
    other.proxy = [("https://other.test".to_string(), vec!["10.81.0.9:8443".to_string()].into())].into();
    [("51820".to_string(), net), ("51821".to_string(), other)].into()
}

pub fn sample_desired() -> Desired {
    validate(&sample_config(), &Context::default()).expect("the sample is valid")
}

/// Compares with a golden file. Only `UPDATE_GOLDEN=1` rewrites it, and
/// never in CI (`CI` set), where a rewrite would hide the difference.
pub fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if golden_rule::rewrite_requested() {
        std::fs::write(&path, actual).expect("write golden file");
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(
        actual, expected,
        "golden file {name} differs (if the change is intended: UPDATE_GOLDEN=1 cargo test, then review the diff)"
    );
}

use crate::testing::nginx_options as options;

fn site() -> (Desired, NginxSite) {
    let d = sample_desired();
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
    let mut own = site;
    own.options.server_names_hash_bucket_size = 0;
    let http = nginx_http(&own);
    assert!(!http.contains("server_names_hash_bucket_size") && http.contains("server_name app.example.com;"), "0: left to nginx.conf");
}

/// `worker_shutdown_timeout` is a main-context directive: it goes before
/// `stream {` in the stream file (included at nginx's main level), never
/// inside a block, and not at all when left to nginx.conf.
#[test]
fn the_worker_shutdown_timeout_is_written_at_main_level() {
    let (_, mut site) = site();
    let stream = nginx_stream(&site);
    let main_level = stream.split("stream {").next().unwrap();
    assert!(main_level.contains("\nworker_shutdown_timeout 3600s;\n"), "{stream}");
    assert_eq!(stream.matches("worker_shutdown_timeout").count(), 1, "{stream}");
    site.options.worker_shutdown_timeout = Some(std::time::Duration::from_millis(2500));
    assert!(nginx_stream(&site).contains("\nworker_shutdown_timeout 2500ms;\n"));
    site.options.worker_shutdown_timeout = None;
    assert!(!nginx_stream(&site).contains("worker_shutdown_timeout"), "left to nginx.conf");
    assert!(!nginx_http(&site).contains("worker_shutdown_timeout"), "never in the http file (inside http {{}})");
    assert!(config_sets("user www-data;\nworker_shutdown_timeout 30s;\nevents {}\n", "worker_shutdown_timeout"));
    assert!(!config_sets("# worker_shutdown_timeout 30s;\nevents { worker_connections 512; }\n", "worker_shutdown_timeout"));
}

#[test]
fn golden_iptables() {
    let (d, _) = site();
    let rs = rules_of(&Layout::default(), &d.networks[&51820]);
    golden("iptables-51820.rules", &iptables_restore(&rs, Family::Ipv4, &JUMPS));
    golden("ip6tables-51820.rules", &iptables_restore(&rs, Family::Ipv6, &JUMPS));
    for family in [Family::Ipv4, Family::Ipv6] {
        let text = iptables_restore(&rs, family, &[]);
        assert!(!text.contains("-A PREROUTING") && !text.contains("-A FORWARD"), "present jumps are not added again: {text}");
        assert!(text.contains("*filter\n:FORWARD DROP [0:0]\n"), "{family:?}: {text}");
    }
    let v4 = iptables_restore(&rs, Family::Ipv4, &JUMPS[3..]);
    assert!(!v4.contains("-A FORWARD"), "an IPv6 jump is not added to IPv4: {v4}");
}

/// Only what comes from the bridge (nginx's ingress) is masqueraded:
/// traffic between two nodes keeps its source address.
#[test]
fn only_ingress_from_the_bridge_is_masqueraded() {
    let (d, _) = site();
    let rs = rules_of(&Layout::default(), &d.networks[&51820]);
    let snat: Vec<&String> = rs.nat.iter().filter(|l| l.starts_with("-A GATEWAY-SNAT")).collect();
    assert_eq!(snat, ["-A GATEWAY-SNAT -s 10.199.0.0/16 -o wg51820 -j MASQUERADE"]);
    let other = Layout::new("n-", "wg", "v", "br", "172.20.0.0/14", 20000).unwrap();
    assert!(rules_of(&other, &d.networks[&51820]).nat.contains(&"-A GATEWAY-SNAT -s 172.20.0.0/14 -o wg51820 -j MASQUERADE".to_string()));
}

#[test]
fn golden_wireguard() {
    let (d, _) = site();
    golden("wg-51820.conf", &wg_conf(&d.networks[&51820]));
}

#[test]
fn nginx_and_nat_agree_on_ports() {
    let (d, site) = site();
    let layout = Layout::default();
    let rs = rules_of(&layout, &d.networks[&51820]);
    let veth = layout.veth_ns_ip(51820);
    let served: Vec<_> = site.https.iter().chain(&site.http).flat_map(|r| r.servers.iter()).filter(|s| *s.ip() == veth).collect();
    assert_eq!(served.len(), 4, "three routes of 51820 with four servers: {site:?}");
    for srv in served {
        let rule = format!("-d {}/32 -i gw-uplink -p tcp -m tcp --dport {} -j DNAT", srv.ip(), srv.port());
        assert!(rs.nat.iter().any(|l| l.contains(&rule)), "{srv} has no DNAT rule in {:?}", rs.nat);
    }
    let routes = site.routes();
    assert_eq!(routes["https://api.example.com"], ["127.0.0.1:8443".parse().unwrap()], "custom forwardings go straight to their upstream");
}

/// The sample with the new forms: PROXY protocol on one HTTPS route, raw
/// TCP (one with PROXY protocol) and UDP ports; listeners on both families.
fn ingress_site() -> (Desired, NginxSite) {
    let mut config = sample_config();
    let extra: BTreeMap<String, crate::model::ProxyTarget> = serde_json::from_value(serde_json::json!({
        "https://db.example.com": {"upstreams": ["10.80.0.3:443"], "proxy_protocol": true},
        "tcp://2222": {"upstreams": ["10.80.0.2:22"], "proxy_protocol": true},
        "tcp://5432": ["10.80.0.3:5432"],
        "udp://27015": ["10.80.0.2:27015", "10.80.0.3:27015"],
    }))
    .unwrap();
    config.get_mut("51820").unwrap().proxy.extend(extra);
    let d = validate(&config, &Context::default()).expect("valid");
    let mut opts = options();
    opts.https_listen = Listen::parse_list("443,[::]:443").unwrap();
    opts.http_listen = Listen::parse_list("80,[::]:80").unwrap();
    opts.raw_listen = parse_addresses("0.0.0.0,::").unwrap();
    let site = NginxSite::build(&Layout::default(), &d, &[], &opts);
    (d, site)
}

/// The gateway's servers log to their own file, or not at all: every HTTP
/// server says so itself (nothing reaches nginx.conf's `http {}` log),
/// every stream server too when there is a file.
#[test]
fn golden_access_log() {
    let (_, mut site) = ingress_site();
    site.options.access_log = Some("/var/log/nginx/gateway-access.log".into());
    let (stream, http) = (nginx_stream(&site), nginx_http(&site));
    golden("nginx-stream-access-log.conf", &stream);
    golden("nginx-http-access-log.conf", &http);
    let servers = |text: &str| text.matches("server {").count();
    let logs = |text: &str, format: &str| text.matches(&format!("access_log /var/log/nginx/gateway-access.log {format};")).count();
    assert_eq!(logs(&http, "gateway_http"), servers(&http), "every HTTP server, the catch-all included: {http}");
    assert_eq!(logs(&stream, "gateway_stream"), servers(&stream), "every stream server: {stream}");
    let (_, off) = ingress_site();
    let (stream, http) = (nginx_stream(&off), nginx_http(&off));
    assert_eq!(http.matches("access_log off;").count(), servers(&http), "off: each HTTP server logs nothing: {http}");
    assert!(!stream.contains("access_log") && !stream.contains("log_format"), "stream servers log nothing unless told: {stream}");
    assert!(!http.contains("log_format"), "{http}");
}

#[test]
fn golden_ingress() {
    let (d, site) = ingress_site();
    golden("nginx-stream-ingress.conf", &nginx_stream(&site));
    golden("nginx-http-dual-stack.conf", &nginx_http(&site));
    golden("iptables-51820-raw.rules", &iptables_restore(&rules_of(&Layout::default(), &d.networks[&51820]), Family::Ipv4, &[]));
    let http = nginx_http(&site);
    assert_eq!(http.matches("ipv6only=on").count(), 1, "nginx takes listen options once per address: {http}");
    assert_eq!(http.matches("listen [::]:80").count(), site.http.len() + 1, "the routes and the gateway's catch-all");
}

#[test]
fn every_raw_port_bounds_its_sessions_in_all_and_per_client() {
    let (_, mut site) = ingress_site();
    let stream = nginx_stream(&site);
    assert_eq!(stream.matches("limit_conn_zone ").count(), 2, "the zones once: {stream}");
    assert!(stream.contains("limit_conn_zone $protocol$server_port zone=gateway_raw_port:1m;"));
    assert!(stream.contains("limit_conn_zone $binary_remote_addr$protocol$server_port zone=gateway_raw_client:16m;"));
    // Each raw server (TCP and UDP alike) carries both limits, the documented defaults.
    let servers: Vec<&str> = stream.split("    server {\n").skip(1).filter(|b| !b.contains("ssl_preread")).collect();
    assert_eq!(servers.len(), 3, "tcp://2222, tcp://5432, udp://27015");
    for body in &servers {
        assert!(body.contains("limit_conn gateway_raw_port 512;\n        limit_conn gateway_raw_client 32;\n"), "{body}");
    }
    // A route's own limits (per-route access control) replace the defaults there only.
    site.raw[0].limits = SessionLimits { per_port: 10, per_client: 2 };
    let stream = nginx_stream(&site);
    assert_eq!(stream.matches("limit_conn gateway_raw_port 10;").count() + stream.matches("limit_conn gateway_raw_client 2;").count(), 2);
    assert_eq!(stream.matches("limit_conn gateway_raw_port 512;").count(), 2);
    // No raw port, no zones: nothing in the way of the SNI server.
    let (_, plain) = self::site();
    assert!(!nginx_stream(&plain).contains("limit_conn"));
}

#[test]
fn the_raw_ports_a_stream_file_opens_read_back() {
    use crate::types::Transport::{Tcp, Udp};
    let (_, site) = ingress_site();
    let stream = nginx_stream(&site);
    let mut want: std::collections::BTreeSet<_> = [(Tcp, 2222), (Tcp, 5432), (Udp, 27015)].into();
    want.insert((Tcp, 443)); // the SNI server's [::]:443, never a raw port (validation keeps them apart)
    assert_eq!(raw_listens(&stream), want);
    assert!(raw_listens(HEADER).is_empty());
}

#[test]
fn worker_limits_are_read_from_nginx_conf_with_nginx_defaults() {
    let debian = "user www-data;\nworker_processes auto;\npid /run/nginx.pid;\n# worker_connections 9;\nevents {\n\tworker_connections 768;\n\t# multi_accept on;\n}\n";
    assert_eq!(WorkerLimits::parse(debian), WorkerLimits { processes: None, connections: 768, rlimit_nofile: None });
    let tuned = "worker_processes 4; worker_rlimit_nofile 65536;\nevents { worker_connections 16384; }";
    assert_eq!(WorkerLimits::parse(tuned), WorkerLimits { processes: Some(4), connections: 16384, rlimit_nofile: Some(65536) });
    assert_eq!(WorkerLimits::parse(""), WorkerLimits { processes: Some(1), connections: 512, rlimit_nofile: None }, "nginx's own defaults");
}

#[test]
fn a_warning_when_the_raw_ports_could_take_every_worker_connection() {
    let (_, site) = ingress_site(); // three raw ports: 3 x 512 sessions x 2 connections = 3072
    let debian = WorkerLimits { processes: None, connections: 768, rlimit_nofile: None };
    let line = capacity_warning(&site.raw, &debian, 2, 1024).expect("2 x 768 = 1536 < 3072");
    assert_eq!(
        line,
        "nginx has 1536 connections (2 worker(s) x min(worker_connections 768, open files 1024)) but the 3 raw port(s) may hold 3072 (sessions x 2): a flood on them could stop every other route; raise worker_connections to 2048 or more, and worker_rlimit_nofile with it, in nginx.conf"
    );
    let roomy = WorkerLimits { processes: Some(2), connections: 4096, rlimit_nofile: None };
    assert_eq!(capacity_warning(&site.raw, &roomy, 2, 65536), None, "8192 > 3072");
    let files = capacity_warning(&site.raw, &roomy, 2, 1024).expect("the open-file limit caps each worker at 1024");
    assert!(files.contains("nginx has 2048 connections"), "{files}");
    assert_eq!(
        capacity_warning(&site.raw, &WorkerLimits { rlimit_nofile: Some(65536), ..roomy }, 2, 1024),
        None,
        "worker_rlimit_nofile wins"
    );
    let (_, plain) = self::site();
    assert_eq!(capacity_warning(&plain.raw, &WorkerLimits::parse(""), 1, 1024), None, "no raw port, nothing to bound");
}

/// The server blocks of an http file: (listen lines, server_name, body lines).
fn http_servers(http: &str) -> Vec<(Vec<String>, String, Vec<String>)> {
    let mut out = Vec::new();
    for block in http.split("\nserver {\n").skip(1) {
        let lines: Vec<String> = block.lines().map(|l| l.trim().to_string()).take_while(|l| !l.starts_with("upstream ")).collect();
        let listen = lines.iter().filter(|l| l.starts_with("listen ")).cloned().collect();
        let name = lines.iter().find_map(|l| l.strip_prefix("server_name ")).unwrap_or_default().to_string();
        out.push((listen, name, lines));
    }
    out
}

#[test]
fn unknown_host_names_are_the_gateways_on_every_http_listen_address() {
    let (_, site) = ingress_site();
    let servers = http_servers(&nginx_http(&site));
    // nginx makes the first server of an address its default: the gateway's own.
    let (listen, name, body) = &servers[0];
    assert_eq!(listen, &["listen 80;", "listen [::]:80 ipv6only=on;"]);
    assert_eq!(name, "_;", "a name no request carries");
    assert!(body.contains(&"return 444;".to_string()), "closed without an answer: {body:?}");
    assert!(!body.iter().any(|l| l.contains("proxy_pass")), "no upstream: {body:?}");
    assert!(!body.iter().any(|l| l.contains("default_server")), "an operator's own default server stays allowed");
    for (listen, name, _) in &servers[1..] {
        assert_eq!(listen, &["listen 80;", "listen [::]:80;"], "{name}");
    }
    assert_eq!(servers.len(), 1 + site.http.len());
    let (_, site) = self::site();
    let servers = http_servers(&nginx_http(&site));
    assert_eq!((&servers[0].0, servers[0].1.as_str()), (&vec!["listen 80;".to_string()], "_;"));
}

#[test]
fn raw_ports_and_their_dnat_rules_agree() {
    let (d, site) = ingress_site();
    let layout = Layout::default();
    let rs = rules_of(&layout, &d.networks[&51820]);
    assert_eq!(site.raw.iter().map(|r| (r.transport.name(), r.port)).collect::<Vec<_>>(), [("tcp", 2222), ("tcp", 5432), ("udp", 27015)]);
    for r in &site.raw {
        assert!(!r.servers.is_empty());
        for srv in &r.servers {
            let proto = r.transport.name();
            let rule = format!("-d {}/32 -i gw-uplink -p {proto} -m {proto} --dport {} -j DNAT", srv.ip(), srv.port());
            assert!(rs.nat.iter().any(|l| l.contains(&rule)), "{srv} ({proto}) has no DNAT rule in {:?}", rs.nat);
        }
    }
    let without_pp = site.https.iter().filter(|r| !r.proxy_protocol).count();
    assert_eq!(without_pp, 2, "app and other go through the hop");
    let stream = nginx_stream(&site);
    assert!(stream.contains("listen unix:/run/gateway-sni.sock proxy_protocol;"), "{stream}");
    let mut plain = site.clone();
    plain.https.iter_mut().for_each(|r| r.proxy_protocol = false);
    let stream = nginx_stream(&plain);
    assert!(
        !stream.contains("proxy_protocol on;\n        proxy_pass $gateway_entry") && !stream.contains("gateway_sni_hop"),
        "no hop without PROXY protocol routes"
    );
}

// Round trips: what the renderers write, read back by a parser (our own, or
// the real tool's output captured from a converged gateway), equals the spec.

use std::net::{SocketAddr, SocketAddrV4};

use crate::system::firewall::save_parse::parse_rules;
use crate::system::wireguard::observe::parse_uapi;
use crate::testing::{converged_desired, fixture};
use crate::types::{Cidr, PublicKey, SecretKey};

/// One `[Peer]` of a WireGuard config, as `wg setconf` reads it.
#[derive(Debug, Default, PartialEq)]
struct ConfPeer {
    preshared_key: Option<SecretKey>,
    allowed_ips: Vec<Cidr>,
    endpoint: Option<SocketAddr>,
    keepalive: Option<u16>,
}

/// A small reader of the `wg setconf` format: (private key, listen port, peers).
fn read_wg_conf(text: &str) -> (SecretKey, u16, BTreeMap<PublicKey, ConfPeer>) {
    let (mut private, mut port, mut peers) = (None, None, BTreeMap::new());
    let mut current: Option<(PublicKey, ConfPeer)> = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line == "[Interface]" || line == "[Peer]" {
            peers.extend(current.take());
            continue;
        }
        let (k, v) = line.split_once(" = ").unwrap_or_else(|| panic!("not KEY = VALUE: {line:?}"));
        match (k, current.as_mut()) {
            ("PrivateKey", None) => private = Some(v.parse::<SecretKey>().unwrap()),
            ("ListenPort", None) => port = Some(v.parse::<u16>().unwrap()),
            ("PublicKey", None) => current = Some((v.parse().unwrap(), ConfPeer::default())),
            ("PresharedKey", Some((_, p))) => p.preshared_key = Some(v.parse::<SecretKey>().unwrap()).filter(|k| !k.is_zero()),
            ("AllowedIPs", Some((_, p))) => p.allowed_ips = v.split(", ").map(|c| c.parse().unwrap()).collect(),
            ("Endpoint", Some((_, p))) => p.endpoint = Some(v.parse().unwrap()),
            ("PersistentKeepalive", Some((_, p))) => p.keepalive = (v != "off").then(|| v.parse().unwrap()),
            _ => panic!("unexpected {line:?}"),
        }
    }
    peers.extend(current);
    (private.expect("PrivateKey"), port.expect("ListenPort"), peers)
}

fn spec_peers(spec: &crate::spec::NetworkSpec) -> BTreeMap<PublicKey, ConfPeer> {
    spec.peers
        .iter()
        .map(|(k, p)| {
            let c = ConfPeer {
                preshared_key: p.preshared_key.clone(),
                allowed_ips: p.allowed_ips.clone(),
                endpoint: p.endpoint,
                keepalive: p.persistent_keepalive,
            };
            (*k, c)
        })
        .collect()
}

#[test]
fn wireguard_conf_reads_back_as_the_spec() {
    for d in [sample_desired(), converged_desired()] {
        for spec in d.networks.values() {
            let (private, port, peers) = read_wg_conf(&wg_conf(spec));
            assert_eq!((private, port), (spec.private_key.clone(), spec.port));
            assert_eq!(peers, spec_peers(spec), "network {}", spec.port);
        }
    }
}

/// `wg show dump` of the rendered config applied to a real interface
/// (captured by scripts/capture-fixtures.sh) reports exactly the spec.
#[test]
fn wireguard_as_the_real_tool_reports_it_is_the_spec() {
    let d = converged_desired();
    for (port, spec) in &d.networks {
        let (dump, problems) = parse_uapi(&fixture(&format!("netlink-{port}-uapi.txt"))).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            (dump.private_key.as_ref(), dump.public_key, dump.listen_port),
            (Some(&spec.private_key), Some(spec.public_key), *port),
            "network {port}"
        );
        let reported: BTreeMap<PublicKey, ConfPeer> = dump
            .peers
            .iter()
            .map(|(k, p)| {
                let c = ConfPeer {
                    preshared_key: p.preshared_key.clone(),
                    allowed_ips: p.allowed_ips.clone(),
                    endpoint: p.endpoint,
                    keepalive: p.keepalive,
                };
                (*k, c)
            })
            .collect();
        assert_eq!(reported, spec_peers(spec), "network {port}");
    }
}

/// The rules as rendered are, line for line and in order, what the real
/// `iptables-save` and `ip6tables-save` printed after `iptables-restore`
/// and `ip6tables-restore` of the rendered text (scripts/capture-fixtures.sh).
#[test]
fn iptables_rules_as_the_real_tool_saves_them_are_the_rendered_ones() {
    let d = converged_desired();
    let layout = Layout::default();
    for (port, spec) in &d.networks {
        let want = rules_of(&layout, spec);
        let (saved, saved6) = (fixture(&format!("iptables-save-{port}.txt")), fixture(&format!("ip6tables-save-{port}.txt")));
        let observed = parse_rules(&saved, Some(&saved6));
        assert_eq!((&observed.nat, &observed.filter), (&want.nat, &want.filter), "network {port}");
        assert_eq!(observed.filter6.as_ref(), Some(&want.filter), "network {port}: IPv6 has the same filter");
        assert_eq!(observed.jumps, JUMPS.into_iter().collect(), "network {port}");
        assert_eq!(observed.forward_drop, [Family::Ipv4, Family::Ipv6].into(), "network {port}");
        for (text, family) in [(&saved, Family::Ipv4), (&saved6, Family::Ipv6)] {
            assert!(text.lines().any(|l| l == ":FORWARD DROP [0:0]"), "{family:?}: {text}");
            let mut ours: Vec<&str> = text.lines().filter(|l| l.contains("GATEWAY-")).filter(|l| l.starts_with("-A")).collect();
            let nat = if family == Family::Ipv4 { &want.nat[..] } else { &[] };
            let jumps = JUMPS.iter().filter(|j| j.family == family).map(|j| j.rule);
            let mut rendered: Vec<&str> = jumps.chain(nat.iter().chain(&want.filter).map(String::as_str)).collect();
            ours.sort();
            rendered.sort();
            assert_eq!(ours, rendered, "network {port} {family:?}: nothing else of ours in the saved rules");
        }
    }
}

#[test]
fn iptables_restore_text_reads_back_as_the_rules() {
    let (d, _) = site();
    let rs = rules_of(&Layout::default(), &d.networks[&51820]);
    let (v4, v6) = (iptables_restore(&rs, Family::Ipv4, &JUMPS), iptables_restore(&rs, Family::Ipv6, &JUMPS));
    let back = parse_rules(&v4, Some(&v6));
    assert_eq!((&back.nat, &back.filter, back.filter6.as_ref()), (&rs.nat, &rs.filter, Some(&rs.filter)));
    assert_eq!(back.jumps, JUMPS.into_iter().collect());
    assert_eq!(back.forward_drop, [Family::Ipv4, Family::Ipv6].into());
    let none = parse_rules(&iptables_restore(&rs, Family::Ipv4, &[]), Some(&iptables_restore(&rs, Family::Ipv6, &[])));
    assert!(none.jumps.is_empty());
}

/// Upstream blocks of an nginx config: name -> servers (`down` ones left out).
fn read_upstreams(text: &str) -> BTreeMap<String, Vec<SocketAddrV4>> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("upstream ").and_then(|l| l.strip_suffix(" {")) {
            current = Some(name.to_string());
            out.insert(name.to_string(), Vec::new());
        } else if line == "}" {
            current = None;
        } else if let (Some(name), Some(server)) = (&current, line.strip_prefix("server ").and_then(|l| l.strip_suffix(';'))) {
            if !server.ends_with(" down") {
                out.get_mut(name).unwrap().push(server.parse().unwrap());
            }
        }
    }
    out
}

/// Which hostname goes where, read back from nginx's two files: the SNI map
/// of the stream file, the server_name/proxy_pass pairs of the http file.
fn read_nginx_routes(stream: &str, http: &str) -> BTreeMap<String, Vec<SocketAddrV4>> {
    let mut routes = BTreeMap::new();
    let upstreams: BTreeMap<String, Vec<SocketAddrV4>> = read_upstreams(stream).into_iter().chain(read_upstreams(http)).collect();
    let map = &stream[stream.find("map $ssl_preread_server_name").unwrap()..];
    for line in map.lines().skip(1).map(str::trim).take_while(|l| *l != "}") {
        let (host, upstream) = line.trim_end_matches(';').split_once(' ').unwrap();
        if host != "default" {
            let host = host.strip_prefix('\\').expect("map keys are escaped");
            routes.insert(format!("https://{host}"), upstreams[upstream].clone());
        }
    }
    let mut host = None;
    for line in http.lines().map(str::trim) {
        if let Some(h) = line.strip_prefix("server_name ").and_then(|l| l.strip_suffix(';')) {
            host = Some(h.to_string());
        } else if let Some(u) = line.strip_prefix("proxy_pass http://").and_then(|l| l.strip_suffix(';')) {
            routes.insert(format!("http://{}", host.take().expect("server_name before proxy_pass")), upstreams[u].clone());
        }
    }
    routes
}

#[test]
fn nginx_files_read_back_as_the_routes() {
    let (d, site) = site();
    let routes = read_nginx_routes(&nginx_stream(&site), &nginx_http(&site));
    assert_eq!(routes, site.routes());
    // And the routes are the spec's: every URL of every network, plus the custom ones.
    let mut urls: Vec<String> = d.networks.values().flat_map(|s| s.urls().map(|(sc, h)| format!("{}://{h}", sc.name()))).collect();
    urls.extend(["https://api.example.com".into(), "http://api.example.com".into()]);
    urls.sort();
    assert_eq!(routes.keys().cloned().collect::<Vec<_>>(), urls);
    for spec in d.networks.values() {
        let ports = Layout::default().network_dnat(spec, None).tcp;
        for (scheme, map) in [("https", &spec.https), ("http", &spec.http)] {
            for (host, ups) in map {
                let key = format!("{scheme}://{host}");
                let via: Vec<u16> = routes[&key].iter().map(|s| s.port()).collect();
                assert_eq!(
                    via,
                    ups.iter().map(|u| ports.port(&key, u).unwrap()).collect::<Vec<_>>(),
                    "{key} goes to its upstreams' DNAT ports"
                );
            }
        }
    }
}

/// Each kicked peer: endpoint with keepalive off, keepalive 1 (WireGuard
/// sends one at once when it goes from off to on), then the configured
/// keepalive; the allowed IPs in every section (a file's peer section
/// replaces them), no keys but the public one.
#[test]
fn a_kick_sets_the_endpoint_sends_one_keepalive_and_restores_the_configured_one() {
    let spec = &crate::testing::converged_desired().networks[&51820];
    let a: crate::types::PublicKey = "OxvFhrgLnI9e4xzMMA2qQ7wm/xCUzxaWW5cb1JGkWSA=".parse().unwrap();
    let b: crate::types::PublicKey = "LRj4SHqfSjzR+dz1Zmcq7dfiZk4tFWIm+wKv1QqGXx0=".parse().unwrap();
    let text = super::wg_kick(spec, &[(b, "192.0.2.2:2000".parse().unwrap()), (a, "[2001:db8::1]:7".parse().unwrap())]);
    let want = format!(
        "[Peer]\nPublicKey = {b}\nAllowedIPs = 10.80.0.3/32, 192.168.7.0/24\nEndpoint = 192.0.2.2:2000\nPersistentKeepalive = off\n\n\
         [Peer]\nPublicKey = {b}\nAllowedIPs = 10.80.0.3/32, 192.168.7.0/24\nPersistentKeepalive = 1\n\n\
         [Peer]\nPublicKey = {b}\nAllowedIPs = 10.80.0.3/32, 192.168.7.0/24\nPersistentKeepalive = off\n\n\
         [Peer]\nPublicKey = {a}\nAllowedIPs = 10.80.0.2/32, fd80::2/128\nEndpoint = [2001:db8::1]:7\nPersistentKeepalive = off\n\n\
         [Peer]\nPublicKey = {a}\nAllowedIPs = 10.80.0.2/32, fd80::2/128\nPersistentKeepalive = 1\n\n\
         [Peer]\nPublicKey = {a}\nAllowedIPs = 10.80.0.2/32, fd80::2/128\nPersistentKeepalive = 25\n\n"
    );
    assert_eq!(text, want);
    assert!(!text.contains("PrivateKey") && !text.contains("PresharedKey"));
}

/// The sample with access control and limits on routes of every scheme.
/// `per_client_https`: one HTTPS route also counts per client (the SNI
/// listener then sends a PROXY header to the hops).
fn access_site(per_client_https: bool) -> NginxSite {
    NginxSite::build(&Layout::default(), &access_desired(per_client_https), &[], &options())
}

fn access_desired(per_client_https: bool) -> Desired {
    let mut config = sample_config();
    let mut extra = serde_json::json!({
        "https://app.example.com": {"upstreams": ["10.80.0.2:443"], "allow": ["203.0.113.0/24", "2001:db8::/32"], "deny": ["203.0.113.7/32", "2001:db8::/48"]},
        "https://db.example.com": {"upstreams": ["10.80.0.3:443"], "max_connections": 2},
        "https://both.example.com": {"upstreams": ["10.80.0.3:443"], "deny": ["198.51.100.0/24"], "max_connections": 5, "bandwidth": {"egress_mbit": 10}},
        "http://app.example.com": {"upstreams": ["10.80.0.2:80"], "deny": ["198.51.100.0/24"], "max_connections": 100, "max_connections_per_client": 10},
        "tcp://2222": {"upstreams": ["10.80.0.2:22"], "proxy_protocol": true, "allow": ["192.0.2.0/24"], "max_connections": 2},
        "udp://27015": {"upstreams": ["10.80.0.2:27015"], "deny": ["192.0.2.0/24"], "max_connections_per_client": 4},
        "tcp://5432": ["10.80.0.3:5432"],
    });
    if per_client_https {
        extra["https://db.example.com"]["max_connections_per_client"] = serde_json::json!(1);
    }
    config.get_mut("51820").unwrap().proxy.extend(serde_json::from_value::<BTreeMap<String, crate::model::ProxyTarget>>(extra).unwrap());
    validate(&config, &Context::default()).expect("valid")
}

/// Access control and limits: goldens, and what each route's path is.
#[test]
fn golden_access() {
    let site = access_site(false);
    let (stream, http) = (nginx_stream(&site), nginx_http(&site));
    golden("nginx-stream-access.conf", &stream);
    golden("nginx-http-access.conf", &http);
    let pp = nginx_stream(&access_site(true));
    golden("nginx-stream-access-pp.conf", &pp);
    // Without a per-client count nothing needs the client's address in a hop:
    // no PROXY header on the listener, every other route on its plain path.
    assert!(!stream.contains("proxy_protocol on;\n        proxy_pass $gateway_entry"), "{stream}");
    assert!(pp.contains("proxy_protocol on;\n        proxy_pass $gateway_entry") && pp.contains("set_real_ip_from unix:;"), "{pp}");
    // A denied network inside an allowed one is refused; an allowed one inside a denied one is left out.
    assert!(
        stream.contains("        203.0.113.7/32 gateway_refused;\n") && stream.contains("        203.0.113.0/24 gateway_https_51820_0;\n"),
        "{stream}"
    );
    assert!(!stream.contains("2001:db8::/48 gateway_https") && stream.contains("2001:db8::/48 gateway_refused;"), "{stream}");
    // Raw ports: the route's limits take the defaults' place; allow/deny as nginx rules, deny first.
    assert!(stream.contains("        allow 192.0.2.0/24;\n        deny all;\n"), "{stream}");
    assert!(stream.contains("limit_conn gateway_raw_port 2;") && stream.contains("limit_conn gateway_raw_client 4;"), "{stream}");
    assert!(http.contains("    deny 198.51.100.0/24;\n") && http.contains("limit_conn gateway_http_route 100;"), "{http}");
    // Routes without the fields render as before: the sample's goldens are unchanged (golden_nginx).
    let (_, plain) = site_plain();
    assert!(!nginx_stream(&plain).contains("geo ") && !nginx_http(&plain).contains("limit_conn"));
}

/// Every server of a route sends its usage lines; a hop's name its route
/// (its limits act before any SNI is read), and HTTP's carry the upstream
/// (a 403/503 without one is nginx's refusal).
#[test]
fn golden_access_usage() {
    let mut site = access_site(true);
    site.options.usage_socket = Some("/run/gateway-usage.sock".into());
    let (stream, http) = (nginx_stream(&site), nginx_http(&site));
    golden("nginx-stream-access-usage.conf", &stream);
    let to_socket = "access_log syslog:server=unix:/run/gateway-usage.sock,tag=gateway_usage,nohostname ";
    let servers = |text: &str| text.matches("server {").count();
    assert_eq!(stream.matches(to_socket).count(), servers(&stream), "every stream server, each hop included: {stream}");
    assert_eq!(http.matches(to_socket).count(), site.http.len(), "every route's HTTP server: {http}");
    for (host, name) in [("both.example.com", "gateway_https_51820_1"), ("db.example.com", "gateway_https_51820_2")] {
        let format = format!("{name}_usage");
        assert!(
            stream.contains(&format!("log_format {format} 's TCP - $status $bytes_received $bytes_sent {host} $upstream_addr';")),
            "{stream}"
        );
        let hop = stream.split("\n    server {\n").find(|b| b.contains(&format!("proxy_pass {name};"))).expect("the hop");
        assert!(hop.contains("listen unix:") && hop.contains(&format!("nohostname {format};")), "{hop}");
    }
    assert!(stream.contains(&format!("upstream {REFUSED_UPSTREAM} {{")), "the mark of a refused HTTPS client: {stream}");
    assert!(http.contains("log_format gateway_usage 'h $server_name $status $request_length $bytes_sent $upstream_addr';"), "{http}");
}

fn site_plain() -> (Desired, NginxSite) {
    site()
}

/// nginx's files put together from the networks' parts are byte for byte
/// the files rendered whole (the goldens' fixtures: custom forwardings,
/// PROXY protocol, raw ports, access control and limits), and a part is
/// rendered again only for a network whose spec changed.
#[test]
fn nginx_parts_render_each_changed_network_alone_and_put_together_the_same_files() {
    let l = Layout::default();
    let custom = parse_custom_forwardings("https://api.example.com=127.0.0.1:8443,http://api.example.com=127.0.0.1:8080").unwrap();
    let (sample, _) = site();
    let (ingress, ingress_site) = ingress_site();
    for (what, d, custom, opts) in [
        ("sample", sample.clone(), &custom[..], options()),
        ("ingress", ingress, &[][..], ingress_site.options.clone()),
        ("access", access_desired(false), &[][..], options()),
        ("access, per client", access_desired(true), &[][..], options()),
        ("empty", Desired::default(), &[][..], options()),
    ] {
        let whole = NginxFiles::render(&l, &d, custom, &opts);
        let (parts, rendered) = nginx_parts(&l, &opts, &d, &NginxParts::default());
        assert_eq!(rendered, d.networks.keys().copied().collect::<Vec<_>>(), "{what}: the first time, every network");
        assert!(parts.files(custom, &opts, |_| true) == whole, "{what}: the parts put together differ from the whole");
        let (again, rendered) = nginx_parts(&l, &opts, &d, &parts);
        assert_eq!(rendered, Vec::<u16>::new(), "{what}: nothing changed, nothing rendered");
        assert!(again.files(custom, &opts, |_| true) == whole, "{what}: kept parts, the same files");
    }
    // One network changes (a route added, one moved): that one is rendered, the files are the whole's.
    let (parts, _) = nginx_parts(&l, &options(), &sample, &NginxParts::default());
    let mut config = sample_config();
    let extra = serde_json::json!({"http://new.example.com": ["10.81.0.2:80"], "tcp://2222": ["10.81.0.2:22"]});
    config.get_mut("51821").unwrap().proxy.extend(serde_json::from_value::<BTreeMap<String, crate::model::ProxyTarget>>(extra).unwrap());
    let ctx = Context { previous: Some(&sample), previous_config: Some(&sample_config()), ..Context::default() };
    let changed = validate(&config, &ctx).expect("valid");
    let (next, rendered) = nginx_parts(&l, &options(), &changed, &parts);
    assert_eq!(rendered, [51821], "only the changed network");
    assert!(next.files(&custom, &options(), |_| true) == NginxFiles::render(&l, &changed, &custom, &options()));
    // A raw route left out (its port held by another process) is left out of the files alone.
    let mut without = NginxSite::build(&l, &changed, &custom, &options());
    without.raw.retain(|r| r.port != 2222);
    let files = next.files(&custom, &options(), |r| r.port != 2222);
    assert!(files == NginxFiles::of(&without) && !files.stream.contains(":2222"), "{}", files.stream);
}

/// What a pass gives `NginxParts::build`: each spec with its DNAT ports
/// (a pass takes them from the network's target).
fn nginx_parts(l: &Layout, opts: &NginxOptions, d: &Desired, before: &NginxParts) -> (NginxParts, Vec<u16>) {
    let dnat: Vec<_> = d.networks.values().map(|s| (s, l.network_dnat(s, None))).collect();
    NginxParts::build(l, opts, dnat.iter().map(|(s, p)| (*s, p)), before)
}

/// A network's rule set with the DNAT ports its target would compute.
fn rules_of(l: &Layout, spec: &crate::spec::NetworkSpec) -> RuleSet {
    rules(l, spec, &l.network_dnat(spec, None))
}
