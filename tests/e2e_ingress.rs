//! End-to-end tests of the ingress forms on the real system (root): the
//! client's address through PROXY protocol with TLS still end to end, raw
//! TCP and UDP ports, and IPv6 clients. A test binary of its own: its
//! process takes a slot of its own, so its indexes do not meet the other
//! binaries' tests.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn network(t: &NodeTopology, proxy: Value) -> Value {
    let peer = json!({ "allowed_ips": ["10.80.0.2/32"], "endpoint": format!("{}:{}", t.n.node_ip(), t.node.listen_port) });
    json!({ t.port.to_string(): { "private_key": t.gw_private, "address": ["10.80.0.1/16"], "peers": { &t.node.public: peer }, "proxy": proxy } })
}

/// Unique-local addresses on the client's link: (gateway side, client side).
fn ula(n: &Names) -> (String, String) {
    (format!("fdaa:{}:{}::5", n.s, n.k), format!("fdaa:{}:{}::6", n.s, n.k))
}

/// Gives the client's link IPv6 addresses (no duplicate address detection:
/// usable at once).
fn add_ipv6_to_client(n: &Names) {
    let (gw, client) = ula(n);
    sh(&format!("ip addr add {gw}/126 dev {}ch nodad", n.prefix()));
    sh(&format!("ip -n {} addr add {client}/126 dev eth0 nodad", n.client_ns()));
}

/// One HTTPS request to `host` at `address` (IPv4, or IPv6 in brackets),
/// verified against the node's own certificate.
fn https_get(n: &Names, node: &Node, host: &str, address: &str) -> (bool, String) {
    client_curl(n, &format!("--cacert {} --resolve {host}:{hp}:{address} https://{host}:{hp}/", node.cert.display(), hp = n.https_port()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn proxy_protocol_carries_the_client_address_over_both_families() {
    let t = node_topology(1);
    let n = &t.n;
    add_ipv6_to_client(n);
    let (hp, cp) = (n.https_port(), n.http_port());
    let listens = [format!("--https-listen={hp},[::]:{hp}"), format!("--http-listen={cp},[::]:{cp}")];
    let d = TestDaemon::start(&args(n, &listens.iter().map(String::as_str).collect::<Vec<_>>())).await;

    let cfg = network(
        &t,
        json!({
            "https://app.test": ["10.80.0.2:443"],
            "https://pp.app.test": {"upstreams": ["10.80.0.2:8443"], "proxy_protocol": true},
            "http://app.test": {"upstreams": ["10.80.0.2:80"]},
        }),
    );
    let (code, body) = d.post(&cfg).await;
    assert_eq!((code, &body["result"]), (200, &json!("applied")), "{body}");

    // The PROXY header names the client's address and port, and the gateway
    // address and port it reached; TLS then runs end to end (curl checks the
    // node's own certificate), the header outside it.
    let (gw4, client4) = (n.client_gw_ip(), n.client_ip());
    let (ok, out) = https_get(n, &t.node, "pp.app.test", &gw4);
    assert!(
        ok && out.starts_with(&format!("node-pp header=PROXY TCP4 {client4} {gw4} ")) && out.trim_end().ends_with(&format!(" {hp}")),
        "{out}"
    );
    // A route without it goes through the SNI hop, which drops the header:
    // the node's plain TLS server would fail the handshake on one.
    let (ok, out) = https_get(n, &t.node, "app.test", &gw4);
    assert!(ok && out.starts_with("node-https host=app.test"), "{out}");

    // The same from an IPv6 client: SNI, Host and the PROXY header.
    let (gw6, client6) = ula(n);
    let (ok, out) = https_get(n, &t.node, "pp.app.test", &format!("[{gw6}]"));
    assert!(ok && out.starts_with(&format!("node-pp header=PROXY TCP6 {client6} {gw6} ")), "{out}");
    let (ok, out) = https_get(n, &t.node, "app.test", &format!("[{gw6}]"));
    assert!(ok && out.starts_with("node-https host=app.test"), "{out}");
    let (ok, out) = client_curl(n, &format!("-H 'Host: app.test' http://[{gw6}]:{cp}/"));
    assert!(ok && out.contains(&format!("node-http host=app.test real={client6} xff={client6}")), "{out}");
    let listening = sh("ss -Hltn");
    assert!(listening.contains(&format!("[::]:{hp} ")) && listening.contains(&format!("0.0.0.0:{hp} ")), "both families: {listening}");

    // Nothing changed: nothing runs.
    d.runner.take_records();
    let (code, body) = d.post(&cfg).await;
    assert_eq!((code, &body["changed_networks"]), (200, &json!([])), "{body}");
    assert!(d.runner.take_records().is_empty(), "a no-op apply ran commands");

    // PROXY protocol off again: the route is plain TLS, the hop is gone
    // with the last route that needed it.
    let cfg = network(&t, json!({ "https://pp.app.test": ["10.80.0.2:443"] }));
    let (code, body) = d.post(&cfg).await;
    assert_eq!(code, 200, "{body}");
    let (ok, out) = https_get(n, &t.node, "pp.app.test", &gw4);
    assert!(ok && out.starts_with("node-https host=pp.app.test"), "{out}");
    assert!(!std::fs::read_to_string(n.stream_file()).unwrap().contains("sni.sock"), "no hop left in the stream file");
    d.stop().await;
}

/// Sends `payload` over TCP or UDP from the client namespace to the gateway
/// and returns what came back (empty on no answer or a refused connection).
fn echo(n: &Names, proto: &str, port: u16, payload: &str) -> String {
    echo_to(n, &n.client_gw_ip(), proto, port, payload)
}

/// `echo` to the gateway at `address` (IPv4 or IPv6).
fn echo_to(n: &Names, address: &str, proto: &str, port: u16, payload: &str) -> String {
    let script = r#"
import socket, sys
proto, host, port, payload = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind)
s.settimeout(3)
got = b""
try:
    s.connect((host, port))
    s.send(payload)
    while not got.endswith(payload):
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
except OSError:
    pass
sys.stdout.write(got.decode(errors="replace"))
"#;
    let path = n.dir.join("echo.py");
    std::fs::write(&path, script).unwrap();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &n.client_ns(), "python3"])
        .arg(&path)
        .args([proto, address, &port.to_string(), payload])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn listens(proto: &str, port: u16) -> bool {
    sh(&format!("ss -Hln --{proto} sport = :{port}")).lines().any(|l| !l.trim().is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn raw_tcp_and_udp_ports_reach_the_node_and_close_when_removed() {
    let t = node_topology(5);
    let n = &t.n;
    let (tcp, tcp_pp, udp) = (n.https_port() + 3, n.https_port() + 4, n.https_port() + 5);
    let d = TestDaemon::start(&args(n, &[])).await;
    let cfg = network(
        &t,
        json!({
            "https://app.test": ["10.80.0.2:443"],
            format!("tcp://{tcp}"): ["10.80.0.2:7000"],
            format!("tcp://{tcp_pp}"): {"upstreams": ["10.80.0.2:7000"], "proxy_protocol": true},
            format!("udp://{udp}"): ["10.80.0.2:7001"],
        }),
    );
    let (code, body) = d.post(&cfg).await;
    assert_eq!((code, &body["result"]), (200, &json!("applied")), "{body}");

    // The first datagram may wait for the handshake: TCP first.
    assert_eq!(echo(n, "tcp", tcp, "ping over tcp"), "ping over tcp");
    assert_eq!(echo(n, "udp", udp, "ping over udp"), "ping over udp");
    // The echo sends the PROXY header back too: it came before the data.
    let out = echo(n, "tcp", tcp_pp, "ping");
    let header = format!("PROXY TCP4 {} {} ", n.client_ip(), n.client_gw_ip());
    assert!(out.starts_with(&header) && out.ends_with(&format!(" {tcp_pp}\r\nping")), "{out:?}");
    let rules = sh(&format!("ip netns exec {} iptables-save -t nat", n.netns(t.port)));
    assert!(rules.contains("-p udp -m udp") && rules.contains("--to-destination 10.80.0.2:7001"), "{rules}");
    // Both families by default (--raw-listen): the same from an IPv6 client.
    add_ipv6_to_client(n);
    let (gw6, client6) = ula(n);
    assert_eq!(echo_to(n, &gw6, "tcp", tcp, "ping over tcp6"), "ping over tcp6");
    assert_eq!(echo_to(n, &gw6, "udp", udp, "ping over udp6"), "ping over udp6");
    let out = echo_to(n, &gw6, "tcp", tcp_pp, "ping");
    assert!(out.starts_with(&format!("PROXY TCP6 {client6} {gw6} ")), "{out:?}");

    d.runner.take_records();
    let (code, body) = d.post(&cfg).await;
    assert_eq!((code, &body["changed_networks"]), (200, &json!([])), "{body}");
    assert!(d.runner.take_records().is_empty(), "a no-op apply ran commands");

    // Removing the entries frees the ports at this apply.
    let (code, body) = d.post(&network(&t, json!({ "https://app.test": ["10.80.0.2:443"] }))).await;
    assert_eq!(code, 200, "{body}");
    for (proto, port) in [("tcp", tcp), ("tcp", tcp_pp), ("udp", udp)] {
        wait_until(&format!("{proto} {port} closed"), Duration::from_secs(5), || !listens(proto, port)).await;
    }
    assert_eq!(echo(n, "tcp", tcp, "ping"), "", "TCP refused");
    assert_eq!(echo(n, "udp", udp, "ping"), "", "no UDP answer");
    let rules = sh(&format!("ip netns exec {} iptables-save -t nat", n.netns(t.port)));
    assert!(!rules.contains("10.80.0.2:7001") && !rules.contains("10.80.0.2:7000"), "DNAT rules gone: {rules}");
    d.stop().await;
}
