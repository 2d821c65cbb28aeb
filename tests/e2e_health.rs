//! End-to-end tests of upstream health checks and nginx's workers on the
//! real system (root, real nginx and wireguard-go): a node's service that
//! stops and starts again, a silent upstream that holds up nothing,
//! long-lived connections across reloads, reload coalescing, and old
//! workers that end at a known time. A test binary of its own: its process
//! takes a slot of its own.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn network(t: &NodeTopology, proxy: Value) -> Value {
    let peer = json!({ "allowed_ips": ["10.80.0.2/32"], "endpoint": format!("{}:{}", t.n.node_ip(), t.node.listen_port) });
    json!({ t.port.to_string(): { "private_key": t.gw_private, "address": ["10.80.0.1/16"], "peers": { &t.node.public: peer }, "proxy": proxy } })
}

/// A second network of the test, without a node: its changes reload nginx.
fn other_network(n: &Names, private: &str, proxy: Value) -> Value {
    json!({ n.port(1).to_string(): { "private_key": private, "address": ["10.81.0.1/24"], "proxy": proxy } })
}

/// The pids of the node's test servers (`tests/support/node_server.py`).
fn node_server_pids(n: &Names) -> Vec<u32> {
    let pids = sh(&format!("ip netns pids {}", n.node_ns()));
    pids.lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .filter(|p| std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains("node_server.py")))
        .collect()
}

/// Stops the node's services (HTTPS, HTTP, TCP and UDP echo): its process ends.
fn stop_node_server(n: &Names) {
    let pids = node_server_pids(n);
    assert!(!pids.is_empty(), "the node's server runs");
    for p in &pids {
        sh(&format!("kill {p}"));
    }
    let start = Instant::now();
    while !node_server_pids(n).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "the node's server did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts the node's services again, as `start_node` did.
fn start_node_server(n: &Names) {
    let d = n.dir.display();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/node_server.py");
    let log = n.dir.join("node-server-2.log");
    sh(&format!("ip netns exec {} python3 {script} {d}/node.crt {d}/node.key > {} 2>&1 &", n.node_ns(), log.display()));
    let start = Instant::now();
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("ready") {
        assert!(start.elapsed() < Duration::from_secs(10), "node server did not start again");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A sample's value in the /metrics text (`series` with its labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn metric(d: &TestDaemon, series: &str) -> Option<f64> {
    let (code, text) = d.get_text("/metrics").await;
    assert_eq!(code, 200, "{text}");
    sample(&text, series)
}

fn upstream<'a>(st: &'a Value, port: u16, route: &str, addr: &str) -> &'a Value {
    &st["networks"][port.to_string()]["routes"][route]["upstreams"][addr]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_stopped_service_is_seen_within_two_intervals_and_so_is_its_return() {
    let t = node_topology(1);
    let n = &t.n;
    let (tcp, udp) = (n.https_port() + 3, n.https_port() + 4);
    let interval = Duration::from_secs(2);
    let d = TestDaemon::start(&args(n, &["--health-interval=2s"])).await;
    let mut events = Sse::open(&d).await;
    let cfg = network(
        &t,
        json!({
            "https://app.test": ["10.80.0.2:443"],
            "http://app.test": ["10.80.0.2:80"],
            format!("tcp://{tcp}"): ["10.80.0.2:7000"],
            format!("udp://{udp}"): ["10.80.0.2:7001"],
        }),
    );
    let (code, body) = d.post(&cfg).await;
    assert_eq!((code, &body["result"]), (200, &json!("applied")), "{body}");
    let p = t.port;
    let checked =
        [("https://app.test", "10.80.0.2:443"), ("http://app.test", "10.80.0.2:80"), (&format!("tcp://{tcp}")[..], "10.80.0.2:7000")];

    // Healthy: every checked upstream true, UDP listed and not checked.
    let all_up = |st: &Value| checked.iter().all(|(r, a)| upstream(st, p, r, a)["healthy"] == json!(true));
    let st = wait_for_status(&d, "every upstream healthy", Duration::from_secs(20), all_up).await;
    assert_eq!(upstream(&st, p, &format!("udp://{udp}"), "10.80.0.2:7001")["healthy"], json!(null), "{st}");
    assert_eq!(upstream(&st, p, "https://app.test", "10.80.0.2:443")["last_error"], json!(null), "{st}");
    let https_up = format!(r#"gateway_upstream_up{{network="{p}",route="https://app.test",upstream="10.80.0.2:443"}}"#);
    assert_eq!(metric(&d, &https_up).await, Some(1.0));
    let (_, text) = d.get_text("/metrics").await;
    let udp_up = format!(r#"gateway_upstream_up{{network="{p}",route="udp://{udp}""#);
    assert!(!text.contains(&udp_up), "no health series for UDP: {text}");
    // A healthy first check is silent (no storm at start).
    while let Some((_, name, data)) = events.next(Duration::from_millis(300)).await {
        assert!(!name.starts_with("upstream_"), "a healthy upstream's first check sent {name} {data}");
    }

    // The node's service stops: seen within two intervals, with the error.
    stop_node_server(n);
    let stopped = Instant::now();
    let stopped_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let all_down = |st: &Value| checked.iter().all(|(r, a)| upstream(st, p, r, a)["healthy"] == json!(false));
    let st = wait_for_status(&d, "every upstream unhealthy", 2 * interval, all_down).await;
    let seen = stopped.elapsed();
    let h = upstream(&st, p, "https://app.test", "10.80.0.2:443");
    assert_eq!(h["last_error"], json!("TCP connect to 10.80.0.2:443: connection refused"), "{st}");
    assert!(h["since"].as_i64().unwrap() >= stopped_unix, "since the change: {h}");
    let mut downs = Vec::new();
    while downs.len() < checked.len() {
        let (data, _) = events.wait(&d, "upstream_down", 2 * interval, |_| true).await;
        downs.push(data);
    }
    let https_down = downs.iter().find(|e| e["route"] == "https://app.test").expect("https route's event");
    assert_eq!(
        https_down,
        &json!({"network": p, "route": "https://app.test", "upstream": "10.80.0.2:443", "error": "TCP connect to 10.80.0.2:443: connection refused"})
    );
    assert_eq!(metric(&d, &https_up).await, Some(0.0));
    println!("service stopped: status.json unhealthy after {seen:?} (interval {interval:?})");

    // It starts again: all three turn back.
    start_node_server(n);
    let started = Instant::now();
    let st = wait_for_status(&d, "every upstream healthy again", 2 * interval, all_up).await;
    assert_eq!(upstream(&st, p, "https://app.test", "10.80.0.2:443")["last_error"], json!(null), "{st}");
    println!("service started: healthy after {:?}", started.elapsed());
    let (up, skipped) = events.wait(&d, "upstream_up", 2 * interval, |e| e["route"] == "https://app.test").await;
    assert_eq!(up, json!({"network": p, "route": "https://app.test", "upstream": "10.80.0.2:443", "error": null}));
    assert!(skipped.iter().all(|(_, name, _)| name == "upstream_up"), "{skipped:?}");
    assert_eq!(metric(&d, &https_up).await, Some(1.0));
    drop(events);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn silent_upstreams_hold_up_neither_the_api_nor_a_pass_and_a_removed_network_goes_at_once() {
    let t = node_topology(2);
    let n = &t.n;
    // A 10 s interval: each connect may wait 5 s.
    let d = TestDaemon::start(&args(n, &["--health-interval=10s"])).await;
    // 40 upstreams inside the network that no peer serves: WireGuard drops
    // their SYNs, so their connects get no answer at all.
    let mut proxy = serde_json::Map::new();
    proxy.insert("https://app.test".into(), json!(["10.80.0.2:443"]));
    for i in 0..40 {
        proxy.insert(format!("http://silent{i}.test"), json!([format!("10.80.1.{}:80", i + 1)]));
    }
    let (code, body) = d.post(&network(&t, Value::Object(proxy.clone()))).await;
    assert_eq!((code, &body["result"]), (200, &json!("applied")), "{body}");
    let ns = n.netns(t.port);
    // The first round starts at the next tick (within 10 s): wait for its connects.
    let syn_sent = || sh(&format!("ip netns exec {ns} ss -Htn state syn-sent")).lines().count();
    wait_until("the round's connects", Duration::from_secs(15), || syn_sent() >= 40).await;

    // While they wait, the API and a pass answer as usual.
    let start = Instant::now();
    let (code, _) = d.get("/api/v1/status.json").await;
    let status_took = start.elapsed();
    proxy.insert("http://new.test".into(), json!(["10.80.0.2:80"]));
    let start = Instant::now();
    let (code2, body) = d.post(&network(&t, Value::Object(proxy.clone()))).await;
    let apply_took = start.elapsed();
    assert_eq!((code, code2, &body["result"]), (200, 200, &json!("applied")), "{body}");
    assert!(syn_sent() > 0, "the connects were still waiting");
    println!("during a round of 40 silent connects: status.json {status_took:?}, an apply reloading nginx {apply_took:?}");
    assert!(status_took < Duration::from_secs(1) && apply_took < Duration::from_secs(4), "{status_took:?} {apply_took:?}");

    let p = t.port;
    let silent = |st: &Value| upstream(st, p, "http://silent7.test", "10.80.1.8:80")["healthy"] == json!(false);
    let st = wait_for_status(&d, "the silent upstream unhealthy", Duration::from_secs(10), silent).await;
    assert_eq!(
        upstream(&st, p, "http://silent7.test", "10.80.1.8:80")["last_error"],
        json!("TCP connect to 10.80.1.8:80: no answer within 5 s")
    );
    assert_eq!(upstream(&st, p, "https://app.test", "10.80.0.2:443")["healthy"], json!(true), "{st}");
    assert_eq!(syn_sent(), 0, "each socket closed after its timeout");

    // Removed while its connects wait: the namespace goes at once (its
    // veth with it), not when the connects would time out.
    wait_until("the next round's connects", Duration::from_secs(15), || syn_sent() >= 40).await;
    let veth = format!("/sys/class/net/{}v{p}", n.prefix());
    assert!(std::path::Path::new(&veth).exists());
    let (code, body) = d.patch(&json!({ p.to_string(): null })).await;
    assert_eq!(code, 200, "{body}");
    let removed = Instant::now();
    wait_until("the namespace's veth gone", Duration::from_secs(3), || !std::path::Path::new(&veth).exists()).await;
    println!("network removed during a round: its veth gone {:?} after the apply", removed.elapsed());
    let (_, st) = d.get("/api/v1/status.json").await;
    assert!(st["networks"].get(p.to_string()).is_none(), "{st}");
    let (_, text) = d.get_text("/metrics").await;
    assert!(!text.contains("gateway_upstream_up{"), "its series went: {text}");
    assert_eq!(leftovers(n, p), Vec::<String>::new());
    d.stop().await;
}

/// A WebSocket through nginx's HTTP proxy to the node's echo server.
struct WebSocket(TcpStream);

impl WebSocket {
    fn open(port: u16, host: &str) -> WebSocket {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let request = format!(
            "GET /chat HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        s.write_all(request.as_bytes()).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).unwrap(), 1, "closed during the upgrade: {}", String::from_utf8_lossy(&head));
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "the node's own answer: {head}");
        WebSocket(s)
    }

    /// Sends a masked text frame; returns the echoed text (None: closed or silent).
    fn echo(&mut self, text: &str) -> Option<String> {
        let mask = [7u8, 42, 99, 3];
        let mut frame = vec![0x81, 0x80 | text.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.0.write_all(&frame).ok()?;
        let mut head = [0u8; 2];
        self.0.read_exact(&mut head).ok()?;
        let mut payload = vec![0u8; usize::from(head[1] & 0x7f)];
        self.0.read_exact(&mut payload).ok()?;
        String::from_utf8(payload).ok()
    }
}

/// A TCP connection through a raw port to the node's echo server.
fn tcp_echo(s: &mut TcpStream, text: &str) -> Option<String> {
    s.write_all(text.as_bytes()).ok()?;
    let mut got = vec![0u8; text.len()];
    s.read_exact(&mut got).ok()?;
    String::from_utf8(got).ok()
}

fn reloads(d: &TestDaemon) -> usize {
    d.runner.take_records().iter().filter(|r| r.line.ends_with(" -s reload")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn long_lived_connections_survive_twenty_reloads_and_fifty_concurrent_changes_reload_a_few_times() {
    let t = node_topology(3);
    let n = &t.n;
    let ws = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/ws_echo.py");
    let log = n.dir.join("ws.log");
    sh(&format!("ip netns exec {} python3 {ws} 8080 > {} 2>&1 &", n.node_ns(), log.display()));
    wait_until("the WebSocket server", Duration::from_secs(10), || std::fs::read_to_string(&log).unwrap_or_default().contains("ready"))
        .await;
    let raw = n.https_port() + 3;
    let d = TestDaemon::start(&args(n, &[])).await;
    let (other_private, _) = genkey();
    let mut cfg = network(&t, json!({ format!("tcp://{raw}"): ["10.80.0.2:7000"], "http://app.test": ["10.80.0.2:8080"] }));
    cfg.as_object_mut()
        .unwrap()
        .extend(other_network(n, &other_private, json!({"http://other0.test": ["10.81.0.9:80"]})).as_object().unwrap().clone());
    let (code, body) = d.post(&cfg).await;
    assert_eq!((code, &body["result"]), (200, &json!("applied")), "{body}");

    let mut tcp = TcpStream::connect(("127.0.0.1", raw)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(tcp_echo(&mut tcp, "before").as_deref(), Some("before"));
    let mut socket = WebSocket::open(n.http_port(), "app.test");
    assert_eq!(socket.echo("before").as_deref(), Some("before"));

    // 20 changes of the other network, each a reload of nginx.
    d.runner.take_records();
    for i in 1..=20 {
        let change = other_network(n, &other_private, json!({ format!("http://other{i}.test"): ["10.81.0.9:80"] }));
        let (code, body) = d.patch(&change).await;
        assert_eq!((code, &body["result"]), (200, &json!("applied")), "{i}: {body}");
        let text = format!("after reload {i}");
        assert_eq!(tcp_echo(&mut tcp, &text).as_deref(), Some(&text[..]), "the tcp:// connection after reload {i}");
        assert_eq!(socket.echo(&text).as_deref(), Some(&text[..]), "the WebSocket after reload {i}");
    }
    assert_eq!(reloads(&d), 20, "each change reloaded nginx");

    // 50 changes at once: coalesced into a few reloads.
    let changes: Vec<Value> =
        (0..50).map(|i| other_network(n, &other_private, json!({ format!("http://burst{i}.test"): ["10.81.0.9:80"] }))).collect();
    let answers = futures::future::join_all(changes.iter().map(|c| d.patch(c))).await;
    assert!(answers.iter().all(|(code, _)| *code == 200), "{answers:?}");
    let burst = reloads(&d);
    println!("50 concurrent changes: {burst} nginx reloads");
    assert!((1..=8).contains(&burst), "50 concurrent changes reloaded nginx {burst} times");
    assert_eq!(tcp_echo(&mut tcp, "after the burst").as_deref(), Some("after the burst"));
    assert_eq!(socket.echo("after the burst").as_deref(), Some("after the burst"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn draining_workers_are_counted_and_gone_after_the_shutdown_timeout() {
    let t = node_topology(4);
    let n = &t.n;
    let raw = n.https_port() + 3;
    let timeout = Duration::from_secs(3);
    let d = TestDaemon::start(&args(n, &["--nginx-worker-shutdown-timeout=3s"])).await;
    let (code, body) = d.post(&network(&t, json!({ format!("tcp://{raw}"): ["10.80.0.2:7000"] }))).await;
    assert_eq!((code, &body["result"]), (200, &json!("applied")), "{body}");
    let stream = std::fs::read_to_string(n.stream_file()).unwrap();
    assert!(
        stream.starts_with(&format!("{}\n# After a reload", stream.lines().next().unwrap()))
            && stream.contains("\nworker_shutdown_timeout 3s;\nstream {\n"),
        "{stream}"
    );
    let (active, draining) = (r#"gateway_nginx_workers{state="active"}"#, r#"gateway_nginx_workers{state="draining"}"#);
    // nginx was just started: its worker may take a moment to appear.
    let start = Instant::now();
    while metric(&d, active).await != Some(1.0) {
        assert!(start.elapsed() < Duration::from_secs(5), "no active worker (worker_processes 1)");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&d, draining).await, Some(0.0));

    // A long-lived connection keeps the old worker after a reload.
    let mut tcp = TcpStream::connect(("127.0.0.1", raw)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(tcp_echo(&mut tcp, "hello").as_deref(), Some("hello"));
    let (code, body) =
        d.post(&network(&t, json!({ format!("tcp://{raw}"): ["10.80.0.2:7000"], "http://app.test": ["10.80.0.2:80"] }))).await;
    assert_eq!((code, &body["result"]), (200, &json!("applied")), "{body}");
    let reloaded = Instant::now();
    assert_eq!((metric(&d, active).await, metric(&d, draining).await), (Some(1.0), Some(1.0)), "the old worker drains");
    assert_eq!(tcp_echo(&mut tcp, "draining").as_deref(), Some("draining"), "served while it drains");

    // Gone after the timeout, with the connection it held.
    let start = Instant::now();
    loop {
        if metric(&d, draining).await == Some(0.0) {
            break;
        }
        assert!(start.elapsed() < timeout + Duration::from_secs(5), "the draining worker outlived the shutdown timeout by 5 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ended = reloaded.elapsed();
    println!("the draining worker ended {ended:?} after the reload (worker_shutdown_timeout {timeout:?})");
    assert!(ended >= timeout - Duration::from_millis(500), "it ended before the timeout ({ended:?}): the connection did not hold it");
    assert_eq!(metric(&d, active).await, Some(1.0));
    let mut buf = [0u8; 16];
    let closed = matches!(tcp.write_all(b"x").and_then(|_| tcp.read(&mut buf)), Ok(0) | Err(_));
    assert!(closed, "the old worker closed the connection it held");
    d.stop().await;
}
