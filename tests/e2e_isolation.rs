//! End-to-end tests of what keeps tenants apart at the ingress (root, real
//! nginx and WireGuard): the gateway's own answer to Host names no route
//! serves, ports held by other processes, a route nginx cannot open, and
//! floods on a raw port. A test binary of its own: its process takes a slot
//! of its own, so its indexes do not meet the other binaries' tests.

mod common;

use common::*;
use serde_json::{Value, json};

fn network(t: &NodeTopology, proxy: Value) -> Value {
    let peer = json!({ "allowed_ips": ["10.80.0.2/32"], "endpoint": format!("{}:{}", t.n.node_ip(), t.node.listen_port) });
    json!({ t.port.to_string(): { "private_key": t.gw_private, "address": ["10.80.0.1/16"], "peers": { &t.node.public: peer }, "proxy": proxy } })
}

/// An HTTP request from the client with this Host header (none if empty).
fn http_get(n: &Names, host: &str) -> (bool, String) {
    let header = if host.is_empty() { "-0 -H 'Host:'".to_string() } else { format!("-H 'Host: {host}'") };
    client_curl(n, &format!("{header} http://{}:{}/", n.client_gw_ip(), n.http_port()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn an_unknown_host_or_sni_reaches_no_node() {
    let t = node_topology(1);
    let n = &t.n;
    let d = TestDaemon::start(&args(n, &[])).await;
    let cfg = network(&t, json!({ "http://app.test": ["10.80.0.2:80"], "https://app.test": ["10.80.0.2:443"] }));
    let (code, body) = d.post(&cfg).await;
    assert_eq!((code, &body["result"]), (200, &json!("applied")), "{body}");
    let (ok, out) = http_get(n, "app.test");
    assert!(ok && out.contains("node-http host=app.test"), "the route works: {out}");

    // Nothing else is the default for this listen address (the test's nginx
    // has no server of its own): a name no route serves, and a request
    // without a Host, are closed by the gateway's own server.
    for host in ["other.test", "acme-check.other-tenant.test", ""] {
        let (ok, out) = http_get(n, host);
        assert!(!ok && !out.contains("node-"), "Host {host:?} reached a node: {out}");
        assert!(out.contains("Empty reply from server"), "closed without an answer (444): {out}");
    }
    // An unknown SNI name stays closed too.
    let hp = n.https_port();
    let (ok, out) = client_curl(n, &format!("-k --resolve other.test:{hp}:{} https://other.test:{hp}/", n.client_gw_ip()));
    assert!(!ok && !out.contains("node-"), "{out}");
    d.stop().await;
}

/// A process of the test's own holding ports of the host; killed (by its
/// pid) when dropped.
struct Holder(std::process::Child);

impl Holder {
    /// Holds TCP `tcp` (listening) and UDP `udp` on 0.0.0.0.
    fn start(tcp: u16, udp: u16) -> Holder {
        let script = format!(
            "import socket, sys, time\n\
             t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(('0.0.0.0', {tcp})); t.listen()\n\
             u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('0.0.0.0', {udp}))\n\
             print('ready', flush=True)\ntime.sleep(600)\n"
        );
        let mut child =
            std::process::Command::new("python3").args(["-c", &script]).stdout(std::process::Stdio::piped()).spawn().expect("python3");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the holder could not bind its ports");
        Holder(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn problems(body: &Value) -> Vec<(String, String)> {
    let details = body["details"].as_array().cloned().unwrap_or_default();
    details.iter().map(|d| (d["path"].as_str().unwrap_or("").to_string(), d["message"].as_str().unwrap_or("").to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_port_another_process_holds_is_a_422_and_the_next_change_applies() {
    let t = node_topology(2);
    let n = &t.n;
    let (raw, second) = (n.https_port() + 3, n.port(1));
    let holder = Holder::start(raw, second);
    let d = TestDaemon::start(&args(n, &[])).await;
    let mut cfg = network(&t, json!({ "http://app.test": ["10.80.0.2:80"], format!("tcp://{raw}"): ["10.80.0.2:7000"] }));
    let (other_key, _) = genkey();
    cfg[second.to_string()] = json!({ "private_key": other_key, "address": ["10.81.0.1/24"] });
    let (code, body) = d.post(&cfg).await;
    assert_eq!(code, 422, "{body}");
    let by = format!("python3 (pid {}) on 0.0.0.0", holder.pid());
    assert_eq!(
        problems(&body),
        [
            (
                format!(r#"$["{}"].proxy["tcp://{raw}"]"#, t.port),
                format!("TCP port {raw} is in use by {by}: nginx could not open it; choose another port or free it")
            ),
            (
                format!(r#"$["{second}"]"#),
                format!(
                    "UDP port {second} is in use by {by}: the network's WireGuard interface could not open it; choose another port or free it"
                )
            ),
        ]
    );
    // Nothing was stored: the next change, to any network, applies and serves.
    let (code, body) = d.post(&network(&t, json!({ "http://app.test": ["10.80.0.2:80"] }))).await;
    assert_eq!((code, &body["result"]), (200, &json!("applied")), "{body}");
    let (ok, out) = http_get(n, "app.test");
    assert!(ok && out.contains("node-http host=app.test"), "{out}");
    // Freed, the port is accepted and opened.
    drop(holder);
    let cfg = network(&t, json!({ "http://app.test": ["10.80.0.2:80"], format!("tcp://{raw}"): ["10.80.0.2:7000"] }));
    let (code, body) = d.post(&cfg).await;
    assert_eq!((code, &body["result"]), (200, &json!("applied")), "{body}");
    d.stop().await;
}

/// Sends one datagram from each of `sessions` source ports of the client to
/// the gateway's UDP `port`: each is a session nginx holds for a minute.
fn udp_flood(n: &Names, port: u16, sessions: usize) {
    let script = format!(
        "import socket\nsocks = []\nfor i in range({sessions}):\n\
         \x20   s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         \x20   s.sendto(b'flood', ('{}', {port}))\n\
         \x20   socks.append(s)\n\
         \x20   if len(socks) >= 500:\n\
         \x20       for s in socks: s.close()\n\
         \x20       socks = []\n",
        n.client_gw_ip()
    );
    sh(&format!("ip netns exec {} python3 -c \"{script}\"", n.client_ns()));
}

/// The daemon's log lines (of every test of this binary: the subscriber is
/// global), from the first call on.
fn captured_log() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    static LOG: std::sync::OnceLock<std::sync::Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = log.clone();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || Sink(sink.clone())).finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        log
    })
    .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_udp_flood_on_one_tenants_port_leaves_another_tenants_https_answering() {
    let log = captured_log();
    let t = node_topology(3);
    let n = &t.n;
    let udp = n.https_port() + 3;
    let d = TestDaemon::start(&args(n, &[])).await;
    // Tenant A: a UDP port to a node that never answers (its sessions stay
    // for their minute); tenant B: HTTPS to its node. The test's nginx has
    // 256 worker connections, as a busy host has its few thousand.
    let mut cfg = network(&t, json!({ "https://app.test": ["10.80.0.2:443"] }));
    let (a_key, _) = genkey();
    cfg[n.port(1).to_string()] = json!({ "private_key": a_key, "address": ["10.81.0.1/24"], "proxy": { format!("udp://{udp}"): ["10.81.0.9:7001"], format!("tcp://{udp}"): ["10.81.0.9:7001"] } });
    let (code, body) = d.post(&cfg).await;
    assert_eq!((code, &body["result"]), (200, &json!("applied")), "{body}");
    let hp = n.https_port();
    let https = || {
        client_curl(n, &format!("--cacert {} --resolve app.test:{hp}:{} https://app.test:{hp}/", t.node.cert.display(), n.client_gw_ip()))
    };
    let (ok, out) = https();
    assert!(ok && out.starts_with("node-https host=app.test"), "{out}");

    udp_flood(n, udp, 4000);
    for i in 1..=3 {
        let (ok, out) = https();
        assert!(ok && out.starts_with("node-https host=app.test"), "request {i} after the flood: {out}");
    }
    // nginx holds one upstream socket per session: the per-client bound (32)
    // cut the flood.
    let veth = d.shared.system().layout.veth_ns_ip(n.port(1));
    let sessions = sh(&format!("ss -Hun dst {veth}")).lines().count();
    assert!((1..=32).contains(&sessions), "{sessions} sessions toward tenant A");
    // The test's nginx (1 worker, 256 connections) cannot hold the bounded
    // 512 sessions of each of tenant A's two ports: one warning line with
    // the figures (this test is the only one of the binary with two).
    let log = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("but the 2 raw port(s) may hold 2048 (sessions x 2)")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    let figures = "nginx has 256 connections (1 worker(s) x min(worker_connections 256, open files ";
    assert!(
        lines[0].contains("WARN") && lines[0].contains(figures) && lines[0].contains("raise worker_connections to 2560 or more"),
        "{}",
        lines[0]
    );
    d.stop().await;
}

fn listens(proto: &str, port: u16) -> bool {
    sh(&format!("ss -Hln --{proto} sport = :{port}")).lines().any(|l| !l.trim().is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_route_unbindable_after_validation_fails_alone_and_the_rest_is_served() {
    let t = node_topology(4);
    let n = &t.n;
    let (raw, a) = (n.https_port() + 3, n.port(1));
    let d = TestDaemon::start(&args(n, &[])).await;
    // Tenant A has a raw TCP port; tenant B (the node's network) a hostname.
    let (a_key, _) = genkey();
    let tenant_a = json!({ "private_key": a_key, "address": ["10.81.0.1/24"], "proxy": { format!("tcp://{raw}"): ["10.81.0.9:22"] } });
    let mut cfg = network(&t, json!({ "http://app.test": ["10.80.0.2:80"] }));
    cfg[a.to_string()] = tenant_a.clone();
    let (code, body) = d.post(&cfg).await;
    assert_eq!((code, &body["result"]), (200, &json!("applied")), "{body}");
    assert!(listens("tcp", raw));

    // nginx goes down (a container restart) and another process takes the
    // port meanwhile: validated, stored, and no longer bindable.
    let pid = std::fs::read_to_string(n.nginx_pid()).unwrap().trim().to_string();
    sh(&format!("kill {pid}"));
    wait_until("nginx gone", std::time::Duration::from_secs(10), || !std::path::Path::new(&format!("/proc/{pid}")).exists()).await;
    let holder = Holder::start(raw, n.https_port() + 4);
    let mut events = Sse::open(&d).await;

    // Tenant B's change: a new hostname. nginx is started with what is valid.
    let mut cfg = network(&t, json!({ "http://app.test": ["10.80.0.2:80"], "http://new.app.test": ["10.80.0.2:80"] }));
    cfg[a.to_string()] = tenant_a.clone();
    let (code, body) = d.post(&cfg).await;
    let error = format!(
        "network {a}: tcp://{raw}: TCP port {raw} is in use by python3 (pid {}) on 0.0.0.0: left out of nginx until it is free",
        holder.pid()
    );
    assert_eq!((code, &body["error"]), (500, &json!("apply_failed")), "{body}");
    let messages: Vec<String> = problems(&body).into_iter().map(|(_, m)| m).collect();
    assert_eq!(messages, std::slice::from_ref(&error), "only tenant A's route fails");
    for host in ["new.app.test", "app.test"] {
        let (ok, out) = http_get(n, host);
        assert!(ok && out.contains(&format!("node-http host={host}")), "{host}: {out}");
    }
    // Reported as tenant A's: status.json, an event, a metric.
    let (_, st) = d.get("/api/v1/status.json").await;
    assert!(st["last_apply"]["errors"].as_array().unwrap().contains(&json!(error)), "{st}");
    let (event, _) = events.wait(&d, "route_failed", std::time::Duration::from_secs(5), |_| true).await;
    assert_eq!(
        event,
        json!({ "network": a, "route": format!("tcp://{raw}"), "error": error.split_once(&format!("tcp://{raw}: ")).unwrap().1 })
    );
    let (_, metrics) = d.get_text("/metrics").await;
    assert!(metrics.contains(&format!("gateway_routes_failed{{network=\"{a}\"}} 1")), "{metrics}");

    // Freed: the next pass opens it, and nothing is failing any more.
    drop(holder);
    let outcome = d.drift_check().await.expect("a pass");
    assert!(outcome.record.ok, "{:?}", outcome.record.errors);
    assert!(listens("tcp", raw), "opened once free");
    let (_, metrics) = d.get_text("/metrics").await;
    assert!(!metrics.contains("gateway_routes_failed{"), "{metrics}");
    drop(events);
    d.stop().await;
}
