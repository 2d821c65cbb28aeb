//! End-to-end tests of aggregate bandwidth (issue 19, part 2) on the real
//! system (root): tc HTB classes on the veth's two ends, real nginx, a node
//! behind wireguard-go, a client in its own namespace. A test binary of its
//! own: its process takes a slot of its own.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

fn network(t: &NodeTopology, proxy: Value, bandwidth: Option<Value>) -> Value {
    let mut net = topology_network(t, proxy);
    if let Some(b) = bandwidth {
        net["bandwidth"] = b;
    }
    json!({ t.port.to_string(): net })
}

/// GETs `size` bytes from the node over HTTP (`http`) or HTTPS; returns
/// the bytes received and the seconds it took, as curl measured them.
fn curl_cmd(t: &NodeTopology, http: bool, size: u64) -> String {
    let n = &t.n;
    if http {
        format!(
            "curl -sS --max-time 30 -o /dev/null -w '%{{size_download}} %{{time_total}}\\n' -H 'Host: app.test' http://{}:{}/bytes/{size}",
            n.client_gw_ip(),
            n.http_port()
        )
    } else {
        format!(
            "curl -sS --max-time 30 -o /dev/null -w '%{{size_download}} %{{time_total}}\\n' --cacert {} --resolve app.test:{hp}:{} https://app.test:{hp}/bytes/{size}",
            t.node.cert.display(),
            n.client_gw_ip(),
            hp = n.https_port()
        )
    }
}

fn parse_curl(out: &str) -> Vec<(u64, f64)> {
    out.lines()
        .filter_map(|l| {
            let (b, s) = l.split_once(' ')?;
            Some((b.parse().ok()?, s.trim().parse().ok()?))
        })
        .collect()
}

fn download(t: &NodeTopology, http: bool, size: u64) -> (u64, f64) {
    let out = sh(&format!("ip netns exec {} {}", t.n.client_ns(), curl_cmd(t, http, size)));
    *parse_curl(&out).first().unwrap_or_else(|| panic!("curl said: {out}"))
}

/// Both downloads at once; the wall time of the pair.
fn download_both(t: &NodeTopology, size: u64) -> (Vec<(u64, f64)>, f64) {
    let start = Instant::now();
    let out = sh(&format!(
        "ip netns exec {} sh -c \"{} & {} & wait\"",
        t.n.client_ns(),
        curl_cmd(t, true, size).replace('"', "\\\""),
        curl_cmd(t, false, size).replace('"', "\\\"")
    ));
    (parse_curl(&out), start.elapsed().as_secs_f64())
}

/// Sends `size` bytes through the node's TCP echo on raw port `port` and
/// reads them back: (bytes back, seconds).
fn echo_upload(t: &NodeTopology, port: u16, size: u64) -> (u64, f64) {
    let script = r#"
import socket, sys, threading, time
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, port), timeout=30)
start = time.monotonic()
def send():
    chunk = b"u" * 65536
    left = size
    while left > 0:
        n = s.send(chunk[:min(left, len(chunk))])
        left -= n
threading.Thread(target=send, daemon=True).start()
got = 0
while got < size:
    b = s.recv(1 << 16)
    if not b:
        break
    got += len(b)
print(got, time.monotonic() - start)
"#;
    let path = t.n.dir.join("upload.py");
    std::fs::write(&path, script).unwrap();
    let out = sh(&format!("ip netns exec {} python3 {} {} {port} {size}", t.n.client_ns(), path.display(), t.n.client_gw_ip()));
    *parse_curl(&out).first().unwrap_or_else(|| panic!("upload said: {out}"))
}

/// The host end of the network's veth (`--veth-prefix` of `common::args`).
fn host_veth(t: &NodeTopology) -> String {
    format!("{}v{}", t.n.prefix(), t.port)
}

fn tc_on(t: &NodeTopology, inside: bool, what: &str) -> String {
    if inside { sh(&format!("tc -n {} {what} dev gw-uplink", t.n.netns(t.port))) } else { sh(&format!("tc {what} dev {}", host_veth(t))) }
}

fn within_10_percent(have: u64, want: u64) -> bool {
    have >= want && have <= want + want / 10
}

/// A TCP connection to the raw route held open until the returned child
/// is killed.
fn hold_connection(t: &NodeTopology, port: u16) -> std::process::Child {
    let script = format!(
        "import socket, time\ns = socket.create_connection(('{}', {port}))\ns.send(b'hold')\ns.recv(4)\nprint('open', flush=True)\ntime.sleep(60)\n",
        t.n.client_gw_ip()
    );
    std::process::Command::new("ip")
        .args(["netns", "exec", &t.n.client_ns(), "python3", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3")
}

fn tc_commands(d: &TestDaemon) -> Vec<String> {
    d.runner.take_records().into_iter().map(|r| r.line).filter(|l| l.split_whitespace().next().is_some_and(|p| p.ends_with("tc"))).collect()
}

/// The tests of this file time transfers against a rate: run side by side on
/// two cores they slow each other's clients and nginx (one of them failed so
/// on a loaded machine), so they take turns.
static ONE_TIMED_TEST_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn route_and_network_limits_hold_converge_and_go() {
    let _turn = ONE_TIMED_TEST_AT_A_TIME.lock().await;
    let t = node_topology(1);
    let n = &t.n;
    open_dir_to_nginx(n);
    let raw = n.https_port() + 3;
    let d = TestDaemon::start(&args(n, &[])).await;
    let limited = json!({
        "http://app.test": {"upstreams": ["10.80.0.2:80"], "bandwidth": {"egress_mbit": 16}},
        "https://app.test": ["10.80.0.2:443"],
        format!("tcp://{raw}"): {"upstreams": ["10.80.0.2:7000"], "bandwidth": {"ingress_mbit": 16}},
    });
    let (code, body) = d.post(&network(&t, limited.clone(), None)).await;
    assert_eq!((code, &body["result"]), (200, &json!("applied")), "{body}");
    // The first connection waits for the tunnel's handshake.
    let warm = download(&t, false, 1000);
    assert_eq!(warm.0, 1000);

    // 8 MiB from the node through the route of 16 Mbit/s toward the clients
    // (ideal 4.19 s), while the unlimited route of the same network is fast.
    let (bytes, secs) = download(&t, true, 8 * MIB);
    assert_eq!(bytes, 8 * MIB);
    eprintln!("8 MiB through the route of 16 Mbit/s toward the clients: {secs:.2} s");
    assert!((3.0..=6.0).contains(&secs), "8 MiB at 16 Mbit/s took {secs} s");
    let (bytes, secs) = download(&t, false, 8 * MIB);
    assert_eq!(bytes, 8 * MIB);
    eprintln!("8 MiB through the unlimited route: {secs:.2} s");
    assert!(secs < 1.5, "8 MiB on the unlimited route took {secs} s");
    // Toward the nodes: 8 MiB up through the raw route of 16 Mbit/s (the echo back is not limited).
    let (bytes, secs) = echo_upload(&t, raw, 8 * MIB);
    assert_eq!(bytes, 8 * MIB);
    eprintln!("8 MiB up through the raw route of 16 Mbit/s toward the nodes (and back): {secs:.2} s");
    assert!((3.0..=6.0).contains(&secs), "8 MiB up at 16 Mbit/s took {secs} s");
    assert!(tc_on(&t, false, "class show").contains("ceil 16Mbit"), "root end: {}", tc_on(&t, false, "class show"));

    // Usage: each route's connections and bytes as nginx reported them at
    // their end (HTTP: with the headers), in status.json and /metrics.
    let key = t.port.to_string();
    let st = wait_for_status(&d, "the usage of the three transfers", Duration::from_secs(10), |st| {
        let r = &st["networks"][&key]["routes"];
        r["http://app.test"]["connections_total"] == 1
            && r["https://app.test"]["connections_total"] == 2
            && r[&format!("tcp://{raw}")]["connections_total"] == 1
    })
    .await;
    let routes = &st["networks"][&key]["routes"];
    let bytes = |route: &str, field: &str| routes[route][field].as_u64().unwrap_or(0);
    assert!(within_10_percent(bytes("http://app.test", "tx_bytes"), 8 * MIB), "{routes}");
    assert!(within_10_percent(bytes("https://app.test", "tx_bytes"), 8 * MIB + 1000), "{routes}");
    let raw_key = format!("tcp://{raw}");
    assert_eq!((bytes(&raw_key, "rx_bytes"), bytes(&raw_key, "tx_bytes")), (8 * MIB, 8 * MIB), "{routes}");
    assert!(bytes("http://app.test", "rx_bytes") < 1000, "a GET's request: {routes}");
    for route in ["http://app.test", "https://app.test", raw_key.as_str()] {
        assert_eq!(
            (bytes(route, "denied_total"), bytes(route, "limited_total"), bytes(route, "active_connections")),
            (0, 0, 0),
            "{route}: {routes}"
        );
    }
    let labels = |route: &str| format!("network=\"{}\",route=\"{route}\"", t.port);
    let tx =
        metric(&d, &format!("gateway_route_bytes_total{{{},direction=\"tx\"}}", labels("http://app.test"))).await.unwrap_or(0.0) as u64;
    assert!(within_10_percent(tx, 8 * MIB), "metric tx {tx}");
    assert_eq!(metric(&d, &format!("gateway_route_connections_total{{{}}}", labels("https://app.test"))).await, Some(2.0));
    // An open connection is active until it closes (nginx reports it only then).
    let mut held = hold_connection(&t, raw);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(held.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "open");
    let raw_active = |st: &Value| st["networks"][&key]["routes"][&raw_key]["active_connections"].clone();
    wait_for_status(&d, "one active connection", Duration::from_secs(10), |st| raw_active(st) == 1).await;
    assert_eq!(metric(&d, &format!("gateway_route_active_connections{{{}}}", labels(&raw_key))).await, Some(1.0));
    held.kill().unwrap();
    held.wait().unwrap();
    let st = wait_for_status(&d, "the connection closed", Duration::from_secs(10), |st| {
        raw_active(st) == 0 && st["networks"][&key]["routes"][&raw_key]["connections_total"] == 2
    })
    .await;
    assert_eq!(st["networks"][&key]["routes"][&raw_key]["rx_bytes"], 8 * MIB + 4);
    assert!(tc_on(&t, true, "class show").contains("ceil 16Mbit"), "namespace end: {}", tc_on(&t, true, "class show"));

    // Re-applying runs nothing, tc included.
    d.runner.take_records();
    let (code, body) = d.post(&network(&t, limited.clone(), None)).await;
    assert_eq!((code, &body["changed_networks"]), (200, &json!([])), "{body}");
    assert!(d.runner.take_records().is_empty(), "a no-op apply ran commands");

    // Drift by hand on both ends is repaired by the next drift check: a
    // class's ceiling raised inside the namespace, the root end's qdisc
    // deleted (what a kill between two steps could leave, too).
    sh(&format!("tc -n {} class change dev gw-uplink parent 1: classid 1:10 htb rate 100mbit ceil 100mbit", n.netns(t.port)));
    sh(&format!("tc qdisc del dev {} root", host_veth(&t)));
    d.drift_ok().await;
    let inside = tc_on(&t, true, "class show");
    assert!(inside.contains("ceil 16Mbit") && !inside.contains("100Mbit"), "{inside}");
    assert!(tc_on(&t, false, "class show").contains("ceil 16Mbit"), "root end rebuilt");
    // Converged drift checks read tc (two processes) and change nothing.
    d.runner.take_records();
    d.drift_ok().await;
    assert!(tc_commands(&d).iter().all(|l| l.contains("-batch")), "only reads");

    // A network limit of 16 Mbit/s toward the clients caps the sum of two
    // unlimited routes: 4 MiB on each at once take the time of 8 MiB.
    let open = json!({ "http://app.test": ["10.80.0.2:80"], "https://app.test": ["10.80.0.2:443"] });
    let (code, body) = d.post(&network(&t, open.clone(), Some(json!({"egress_mbit": 16})))).await;
    assert_eq!(code, 200, "{body}");
    let (each, wall) = download_both(&t, 4 * MIB);
    assert_eq!(each.iter().map(|e| e.0).collect::<Vec<_>>(), [4 * MIB, 4 * MIB], "{each:?}");
    eprintln!("2 x 4 MiB at once under a network limit of 16 Mbit/s: {wall:.2} s ({each:?})");
    assert!((3.0..=6.5).contains(&wall), "2 x 4 MiB under a network limit of 16 Mbit/s took {wall} s ({each:?})");

    // The fields go: so do the qdiscs, on both ends, and the routes are fast.
    d.runner.take_records();
    let (code, body) = d.post(&network(&t, open.clone(), None)).await;
    assert_eq!(code, 200, "{body}");
    assert!(!tc_on(&t, true, "qdisc show").contains("htb"), "{}", tc_on(&t, true, "qdisc show"));
    assert!(!tc_on(&t, false, "qdisc show").contains("htb"), "{}", tc_on(&t, false, "qdisc show"));
    assert!(!tc_commands(&d).is_empty());
    let (each, wall) = download_both(&t, 4 * MIB);
    assert!(wall < 2.0, "unlimited again: {wall} s ({each:?})");

    // Without any bandwidth field, no tc command at all: a change (a new
    // upstream: new DNAT rules), a drift check.
    let more =
        json!({ "http://app.test": ["10.80.0.2:80"], "https://app.test": ["10.80.0.2:443"], "http://other.test": ["10.80.0.2:8080"] });
    let (code, body) = d.post(&network(&t, more, None)).await;
    assert_eq!((code, &body["changed_networks"]), (200, &json!([t.port])), "{body}");
    d.drift_ok().await;
    assert_eq!(tc_commands(&d), Vec::<String>::new());
    d.stop().await;
}

/// Two routes to the same upstream are limited and counted apart: each
/// has a DNAT port of its own (layout::dnat_ports), so the limited one's
/// class holds only its connections and each route's open connections are
/// its own. The first route (in key order) keeps the upstream's port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn routes_sharing_an_upstream_are_limited_and_counted_apart() {
    let _turn = ONE_TIMED_TEST_AT_A_TIME.lock().await;
    let t = node_topology(2);
    let n = &t.n;
    open_dir_to_nginx(n);
    let (limited, open) = (n.https_port() + 3, n.https_port() + 4);
    let d = TestDaemon::start(&args(n, &[])).await;
    let proxy = json!({
        format!("tcp://{limited}"): {"upstreams": ["10.80.0.2:7000"], "bandwidth": {"ingress_mbit": 16}},
        format!("tcp://{open}"): ["10.80.0.2:7000"],
    });
    let (code, body) = d.post(&network(&t, proxy, None)).await;
    assert_eq!((code, &body["result"]), (200, &json!("applied")), "{body}");
    // The first connection waits for the tunnel's handshake.
    assert_eq!(echo_upload(&t, open, 1000).0, 1000);

    let (bytes, secs) = echo_upload(&t, limited, 8 * MIB);
    assert_eq!(bytes, 8 * MIB);
    eprintln!("8 MiB up through the route of 16 Mbit/s: {secs:.2} s");
    assert!((3.0..=6.0).contains(&secs), "8 MiB up at 16 Mbit/s took {secs} s");
    let (bytes, secs) = echo_upload(&t, open, 8 * MIB);
    assert_eq!(bytes, 8 * MIB);
    eprintln!("8 MiB up through the unlimited route to the same upstream: {secs:.2} s");
    // Up and back through the tunnel (the echo): twice the bytes of a download.
    assert!(secs < 2.5, "the unlimited route sharing the upstream took {secs} s");

    let rules = sh(&format!("ip netns exec {} iptables -t nat -S GATEWAY-DNAT", n.netns(t.port)));
    assert_eq!(rules.matches("--to-destination 10.80.0.2:7000").count(), 2, "a port per route: {rules}");

    // A connection held open on one route is that route's alone.
    let mut held = hold_connection(&t, open);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(held.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "open");
    let key = t.port.to_string();
    let (open_key, limited_key) = (format!("tcp://{open}"), format!("tcp://{limited}"));
    let active = |st: &Value, route: &str| st["networks"][&key]["routes"][route]["active_connections"].clone();
    let st = wait_for_status(&d, "one active connection", Duration::from_secs(10), |st| active(st, &open_key) == 1).await;
    assert_eq!(active(&st, &limited_key), 0, "{}", st["networks"][&key]["routes"]);
    let labels = |route: &str| format!("{{network=\"{}\",route=\"{route}\"}}", t.port);
    assert_eq!(metric(&d, &format!("gateway_route_active_connections{}", labels(&limited_key))).await, Some(0.0));
    held.kill().unwrap();
    held.wait().unwrap();
    d.stop().await;
}
