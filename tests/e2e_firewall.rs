//! End-to-end tests of what each network's namespace lets through (root,
//! real WireGuard and iptables): node-to-node traffic keeps its source
//! address, a node reaches no service of the gateway host, and FORWARD's
//! policy is DROP in both families before forwarding is on. A test binary of
//! its own: its process takes a slot of its own, so its indexes do not meet
//! the other binaries' tests.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// A second node in the test's network: its own namespace, link to the
/// root namespace (10.x.k.13/30 on the host, .14 in the node), wireguard-go
/// with the tunnel address 10.80.0.3, and a TCP server on 7100 that answers
/// each connection with the address it came from.
struct NodeB {
    public: String,
    listen_port: u16,
}

fn node_b_ns(n: &Names) -> String {
    format!("{}-nodeb", n.prefix())
}

fn link_ip(n: &Names, last: u8) -> String {
    let ip = n.node_gw_ip();
    format!("{}.{last}", ip.rsplit_once('.').unwrap().0)
}

fn start_node_b(n: &Names, gateway_public: &str, gateway_port: u16) -> NodeB {
    let (ns, k, d) = (node_b_ns(n), n.prefix(), n.dir.display().to_string());
    let (private, public) = genkey();
    let listen_port = 51901;
    sh(&format!("ip netns add {ns} && ip -n {ns} link set lo up"));
    sh(&format!("ip link add {k}nb type veth peer name eth0 netns {ns}"));
    sh(&format!("ip addr add {}/30 dev {k}nb && ip link set {k}nb up", link_ip(n, 13)));
    sh(&format!("ip -n {ns} addr add {}/30 dev eth0 && ip -n {ns} link set eth0 up", link_ip(n, 14)));
    sh(&format!("ip netns exec {ns} wireguard-go {k}nwgb >/dev/null 2>&1"));
    std::fs::write(n.dir.join("nodeb.wgkey"), &private).unwrap();
    sh(&format!(
        "ip netns exec {ns} wg set {k}nwgb private-key {d}/nodeb.wgkey listen-port {listen_port} \
         peer {gateway_public} endpoint {}:{gateway_port} allowed-ips 10.80.0.0/16 persistent-keepalive 5",
        link_ip(n, 13)
    ));
    sh(&format!("ip -n {ns} addr add 10.80.0.3/16 dev {k}nwgb && ip -n {ns} link set {k}nwgb up"));
    let server = "import socket\n\
                  s = socket.create_server(('10.80.0.3', 7100))\n\
                  print('ready', flush=True)\n\
                  while True:\n\
                  \x20   c, a = s.accept()\n\
                  \x20   print(a[0], flush=True)\n\
                  \x20   c.sendall(a[0].encode() + b'\\n'); c.close()\n";
    std::fs::write(n.dir.join("source_echo.py"), server).unwrap();
    sh(&format!("ip netns exec {ns} python3 {d}/source_echo.py > {d}/nodeb-server.log 2>&1 &"));
    let log = n.dir.join("nodeb-server.log");
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("ready") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "node B's server did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    NodeB { public, listen_port }
}

/// Node A (`node_topology`'s node, 10.80.0.2) and node B (10.80.0.3) in
/// one network, with `proxy` routes.
fn two_nodes(t: &NodeTopology, b: &NodeB, proxy: Value) -> Value {
    let peers = json!({
        &t.node.public: { "allowed_ips": ["10.80.0.2/32"], "endpoint": format!("{}:{}", t.n.node_ip(), t.node.listen_port) },
        &b.public: { "allowed_ips": ["10.80.0.3/32"], "endpoint": format!("{}:{}", link_ip(&t.n, 14), b.listen_port) },
    });
    json!({ t.port.to_string(): { "private_key": t.gw_private, "address": ["10.80.0.1/16"], "peers": peers, "proxy": proxy } })
}

/// A TCP connection from inside namespace `ns` to `ip:port` (3 s to
/// connect); returns (connected, the first line the server sent or the error).
fn connect_from(ns: &str, ip: &str, port: u16) -> (bool, String) {
    let script = format!(
        "import socket, sys\n\
         try:\n\
         \x20   c = socket.create_connection(('{ip}', {port}), timeout=3)\n\
         except OSError as e:\n\
         \x20   print('failed:', e); sys.exit(1)\n\
         c.settimeout(3)\n\
         try:\n\
         \x20   print('connected', c.recv(100).decode().strip())\n\
         except OSError:\n\
         \x20   print('connected')\n"
    );
    let out = std::process::Command::new("ip").args(["netns", "exec", ns, "python3", "-c", &script]).output().expect("python3");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout).trim(), String::from_utf8_lossy(&out.stderr).trim()))
}

/// Waits until node A reaches node B's server through the gateway (both
/// tunnels up); returns what B answered.
async fn a_reaches_b(t: &NodeTopology) -> String {
    let start = std::time::Instant::now();
    loop {
        let (ok, out) = connect_from(&t.n.node_ns(), "10.80.0.3", 7100);
        if ok {
            return out;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "node A never reached node B: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Node B sees node A's own address (not the gateway's, which nodes trust
/// for PROXY protocol and X-Real-IP); ingress from nginx is still
/// masqueraded to the gateway's address, so B's answer goes back through
/// the tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn node_to_node_traffic_keeps_its_source_address() {
    let t = node_topology(1);
    let n = &t.n;
    let b = start_node_b(n, &t.gw_public, t.port);
    let raw = n.https_port() + 3;
    let d = TestDaemon::start(&args(n, &[])).await;
    let cfg = two_nodes(&t, &b, json!({ format!("tcp://{raw}"): ["10.80.0.3:7100"], "http://app.test": ["10.80.0.2:80"] }));
    let (code, body) = d.post(&cfg).await;
    assert_eq!((code, &body["result"]), (200, &json!("applied")), "{body}");

    let answer = a_reaches_b(&t).await;
    assert_eq!(answer, "connected 10.80.0.2", "node B must see node A's own address");
    let log = std::fs::read_to_string(n.dir.join("nodeb-server.log")).unwrap();
    assert!(log.lines().any(|l| l == "10.80.0.2") && !log.contains("10.80.0.1"), "B's log: {log}");

    // Ingress to B (a raw TCP port through nginx) still works: it comes
    // from the gateway's address, so B answers through the tunnel.
    let (ok, out) = client_curl(n, &format!("telnet://{}:{raw} --max-time 3", n.client_gw_ip()));
    assert!(out.contains("10.80.0.1"), "ingress reaches B from the gateway's address ({ok}): {out}");
    let (ok, out) = client_curl(n, &format!("-H 'Host: app.test' http://{}:{}/", n.client_gw_ip(), n.http_port()));
    assert!(ok && out.contains("node-http host=app.test real="), "HTTP ingress to A: {out}");
    d.stop().await;
}

/// A UDP service of the gateway host on every address (a socket of the
/// test's own): whether a datagram reaches it within a second.
struct HostService(std::net::UdpSocket);

impl HostService {
    fn bind(port: u16) -> HostService {
        let s = std::net::UdpSocket::bind(("0.0.0.0", port)).expect("the host service's port");
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        HostService(s)
    }

    /// Sends three datagrams from namespace `ns` to `ip:port`; returns
    /// where those that arrived came from.
    fn reached_from(&self, ns: &str, ip: &str, port: u16) -> Vec<String> {
        let script = format!(
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor _ in range(3): s.sendto(b'hello', ('{ip}', {port}))\n"
        );
        sh(&format!("ip netns exec {ns} python3 -c \"{script}\""));
        let mut from = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok((_, addr)) = self.0.recv_from(&mut buf) {
            from.push(addr.ip().to_string());
        }
        from
    }
}

/// A service of the gateway host listening on every address cannot be
/// reached from a node through the tunnel at the bridge's address, even by
/// a node that routes that address into its tunnel: not while the rules are
/// in place, and not while the gateway's chain is missing (flushed by hand,
/// between two drift checks), because FORWARD's policy is DROP. UDP, since
/// it needs no answer: the host has no route back to a node's address, so
/// a TCP handshake could not complete anyway, but a datagram is delivered.
/// The drift check puts the chain back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_node_cannot_reach_a_host_service_on_the_bridge_address() {
    let t = node_topology(2);
    let n = &t.n;
    let b = start_node_b(n, &t.gw_public, t.port);
    let service_port = n.https_port() + 4;
    let service = HostService::bind(service_port);
    let d = TestDaemon::start(&args(n, &[])).await;
    let (code, body) = d.post(&two_nodes(&t, &b, json!({ "http://app.test": ["10.80.0.2:80"] }))).await;
    assert_eq!((code, &body["result"]), (200, &json!("applied")), "{body}");
    a_reaches_b(&t).await;
    let bridge_ip = n.bridge_subnet().replace(".0.0/16", ".0.1");
    // Node A sends to the bridge's address through its tunnel, as a node
    // that wants to reach the host would.
    let (node, wg, ns) = (n.node_ns(), format!("{}nwg", n.prefix()), n.netns(t.port));
    sh(&format!("ip netns exec {node} wg set {wg} peer {} allowed-ips 10.80.0.0/16,{bridge_ip}/32", t.gw_public));
    sh(&format!("ip -n {node} route add {bridge_ip}/32 dev {wg}"));
    assert_eq!(service.reached_from(&n.client_ns(), &n.client_gw_ip(), service_port), vec![n.client_ip(); 3], "the service receives");

    assert_eq!(service.reached_from(&node, &bridge_ip, service_port), Vec::<String>::new(), "rules in place");
    sh(&format!("ip netns exec {ns} iptables -F GATEWAY-FORWARD && ip netns exec {ns} ip6tables -F GATEWAY-FORWARD"));
    assert_eq!(service.reached_from(&node, &bridge_ip, service_port), Vec::<String>::new(), "the gateway's chain flushed by hand");
    let (ok, out) = connect_from(&node, "10.80.0.3", 7100);
    assert!(!ok, "without the chain nothing is forwarded, not even node to node: {out}");

    let outcome = d.drift_ok().await;
    assert_eq!(outcome.record.changed, [t.port], "the drift check put the chain back");
    assert_eq!(a_reaches_b(&t).await, "connected 10.80.0.2");
    assert_eq!(service.reached_from(&node, &bridge_ip, service_port), Vec::<String>::new(), "after the repair");
    d.stop().await;
}

/// The iptables-save lines of namespace `ns` for `tool` (`iptables` or `ip6tables`).
fn saved(ns: &str, tool: &str) -> String {
    sh(&format!("ip netns exec {ns} {tool}-save -t filter"))
}

fn sysctl(ns: &str, key: &str) -> String {
    sh(&format!("ip netns exec {ns} sysctl -n {key}")).trim().to_string()
}

/// Right after a network is made, FORWARD's policy is DROP in both
/// families and IPv6 has the same filter as IPv4; both were set before
/// forwarding was turned on (the order of the commands the daemon ran),
/// and when the filter cannot be set forwarding stays off. A policy or an
/// IPv6 chain changed by hand is repaired at the next drift check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn forward_policies_are_drop_in_both_families_before_forwarding_is_on() {
    require_root();
    let n = names(3);
    let _guard = Guard(n.clone());
    write_nginx_conf(&n);
    let (private, _) = genkey();
    let port = n.port(0);
    let ns = n.netns(port);
    let cfg = json!({ port.to_string(): { "private_key": private, "address": ["10.80.0.1/16", "fd80::1/64"] } });

    // The IPv6 filter cannot be set: the network fails, and forwarding was
    // never turned on in its namespace.
    let d = TestDaemon::start(&args(&n, &["--ip6tables-restore-bin=/bin/false"])).await;
    let (code, body) = d.post(&cfg).await;
    assert_eq!(code, 500, "{body}");
    assert!(body["details"][0]["message"].as_str().unwrap().contains("SetRules"), "{body}");
    assert_eq!((sysctl(&ns, "net.ipv4.ip_forward"), sysctl(&ns, "net.ipv6.conf.all.forwarding")), ("0".into(), "0".into()));
    d.stop().await;
    n.cleanup();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", n.db().display()));
    }
    write_nginx_conf(&n);

    let d = TestDaemon::start(&args(&n, &[])).await;
    let (code, body) = d.post(&cfg).await;
    assert_eq!((code, &body["result"]), (200, &json!("applied")), "{body}");
    let (v4, v6) = (saved(&ns, "iptables"), saved(&ns, "ip6tables"));
    for (family, text) in [("IPv4", &v4), ("IPv6", &v6)] {
        assert!(text.lines().any(|l| l == ":FORWARD DROP [0:0]"), "{family}: {text}");
        assert!(text.lines().any(|l| l == "-A FORWARD -j GATEWAY-FORWARD"), "{family}: {text}");
    }
    let chain = |t: &str| t.lines().filter(|l| l.starts_with("-A GATEWAY-FORWARD")).map(String::from).collect::<Vec<_>>();
    assert_eq!(chain(&v6), chain(&v4), "IPv6 gets the same filter as IPv4");
    assert_eq!(chain(&v4).last().map(String::as_str), Some("-A GATEWAY-FORWARD -j DROP"));
    assert_eq!((sysctl(&ns, "net.ipv4.ip_forward"), sysctl(&ns, "net.ipv6.conf.all.forwarding")), ("1".into(), "1".into()));

    // Forwarding was turned on after both filters were set.
    let records = d.runner.take_records();
    let lines: Vec<String> =
        records.iter().flat_map(|r| r.commands()).map(String::from).filter(|l| l.contains(&format!(" {ns} "))).collect();
    let at = |what: &str| lines.iter().position(|l| l.contains(what)).unwrap_or_else(|| panic!("no {what}: {lines:#?}"));
    let forwarding = at(" sysctl -e -w ");
    assert!(at("ip6tables-restore") < forwarding && at("iptables-restore") < forwarding, "{lines:#?}");
    let first_link = lines.iter().position(|l| l.contains(" link ") && !l.contains(" lo ")).expect("links made");
    assert!(at("ip6tables-restore") < first_link && at("iptables-restore") < first_link, "the filter before any link: {lines:#?}");

    // Drift: both policies set to ACCEPT and IPv6's chain flushed by hand.
    sh(&format!("ip netns exec {ns} iptables -P FORWARD ACCEPT"));
    sh(&format!("ip netns exec {ns} ip6tables -P FORWARD ACCEPT && ip netns exec {ns} ip6tables -F GATEWAY-FORWARD"));
    let outcome = d.drift_ok().await;
    assert_eq!(outcome.record.changed, [port], "repaired");
    for (tool, before) in [("iptables", &v4), ("ip6tables", &v6)] {
        let now = saved(&ns, tool);
        let ours =
            |t: &str| t.lines().filter(|l| !l.starts_with('#')).map(|l| l.split(" [").next().unwrap_or(l).to_string()).collect::<Vec<_>>();
        assert_eq!(ours(&now), ours(before), "{tool} as it was");
    }
    assert_eq!(d.drift_ok().await.actions, 0, "nothing left to do");
    d.stop().await;
}
