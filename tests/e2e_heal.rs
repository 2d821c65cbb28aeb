//! End-to-end tests (root) of healing at once and losing nothing: the
//! database's disk fills up while the daemon runs, and WireGuard interfaces
//! rebuilt after wireguard-go is killed or their namespace deleted. Each test
//! has its own index, names, ports and temp dir, and removes everything it
//! made, also when it fails.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// A small tmpfs mounted on a directory of the test's own, unmounted when
/// it drops (also when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        sh(&format!("mount -t tmpfs -o size={size},mode=0700 gateway-test {}", dir.display()));
        Tmpfs(dir.to_path_buf())
    }

    /// Fills what is left of it with one file.
    fn fill(&self) -> PathBuf {
        let file = self.0.join("filler");
        // dd stops at ENOSPC (and says so): then the disk is full.
        sh_ok(&format!("dd if=/dev/zero of={} bs=64k", file.display()));
        sh_ok(&format!("dd if=/dev/zero of={} bs=512 oflag=append conv=notrunc", file.display()));
        let free = sh(&format!("stat -f -c %a {}", self.0.display())).trim().parse::<u64>().unwrap();
        assert_eq!(free, 0, "the tmpfs is full");
        file
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        sh_ok(&format!("umount -l {}", self.0.display()));
    }
}

fn node_network(n: &Names, gw_private: &str, node: &Node, endpoint: bool) -> Value {
    let mut peer = json!({ "allowed_ips": ["10.80.0.2/32"] });
    if endpoint {
        peer["endpoint"] = json!(format!("{}:{}", n.node_ip(), node.listen_port));
    }
    json!({
        "private_key": gw_private,
        "address": ["10.80.0.1/16"],
        "peers": { &node.public: peer },
        "proxy": { "https://app.test": ["10.80.0.2:443"] },
    })
}

/// One HTTPS request to the node through the gateway, within `limit`.
fn https_get(n: &Names, node: &Node, path: &str, limit: Duration) -> (bool, String) {
    client_curl(
        n,
        &format!(
            "--max-time {} --cacert {} --resolve app.test:{hp}:{ip} https://app.test:{hp}{path}",
            limit.as_secs_f64(),
            node.cert.display(),
            hp = n.https_port(),
            ip = n.client_gw_ip()
        ),
    )
}

/// Bytes received from the node (rx) recorded in traffic.json after `start`.
async fn rx_after(d: &TestDaemon, start: i64, gw_public: &str, node: &Node) -> i64 {
    let (code, t) = d.get(&format!("/api/v1/traffic.json?start={start}")).await;
    assert_eq!(code, 200, "{t}");
    t["networks"][gw_public]["devices"][&node.public]["traffic"]["rx"].as_i64().unwrap_or(0)
}

fn store_errors(status: &Value) -> Vec<String> {
    status["store_errors"].as_object().expect("store_errors").keys().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_full_disk_is_answered_with_507_and_everything_is_stored_again_once_there_is_room() {
    let NodeTopology { n, gw_private, gw_public, port, node, _guard } = node_topology(1);
    let fs = Tmpfs::mount(&n.dir.join("dbfs"), "8m");
    let db = fs.0.join("gateway.db");
    let d = TestDaemon::start(&args(&n, &["--database", db.to_str().unwrap()])).await;
    let mut cfg = json!({ port.to_string(): node_network(&n, &gw_private, &node, true) });
    let (code, body) = d.post(&cfg).await;
    assert_eq!(code, 200, "{body}");
    let (ok, out) = https_get(&n, &node, "/bytes/100000", Duration::from_secs(20));
    assert!(ok && out.len() == 100_000, "{out:.200}");
    d.drift_ok().await;
    let mut events = Sse::open(&d).await;

    // The disk fills up.
    let filler = fs.fill();
    let full_since = gateway::clock::now_unix();
    cfg[port.to_string()]["mtu"] = json!(1400);
    let start = Instant::now();
    let (code, body) = d.post(&cfg).await;
    let took = start.elapsed();
    println!("POST on a full disk: {code} in {} ms", took.as_millis());
    assert_eq!((code, body["error"].as_str()), (507, Some("insufficient_storage")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("full"), "{body}");
    assert!(took < Duration::from_secs(1), "answered within a second, not after {took:?}");
    let (_, stored) = d.get("/api/v1/config.json").await;
    assert_eq!(stored["generation"], 1, "nothing stored: {}", stored["generation"]);
    let (event, _) = events.wait(&d, "store_error", Duration::from_secs(5), |e| e["operation"] == "config").await;
    assert_eq!(event["disk_full"], true, "{event}");

    // The data plane keeps serving, status.json answers and says why.
    let (ok, out) = https_get(&n, &node, "/bytes/100000", Duration::from_secs(5));
    assert!(ok && out.len() == 100_000, "served on a full disk: {out:.200}");
    let outcome = d.drift_check().await.expect("a drift check");
    assert!(outcome.record.ok, "the system is fine, only the disk is full: {:?}", outcome.record.errors);
    let (code, st) = d.get("/api/v1/status.json").await;
    assert_eq!(code, 200, "{st}");
    // `events`: the store_error events themselves could not be written (they were sent all the same).
    assert_eq!(store_errors(&st), ["apply_result", "config", "events", "traffic"], "{st}");
    assert_eq!(st["store_errors"]["traffic"]["disk_full"], true, "{st}");
    let (_, metrics) = d.get_text("/metrics").await;
    assert!(metrics.contains(r#"gateway_store_errors_total{operation="traffic"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"gateway_store_errors_total{operation="config"} 1"#), "{metrics}");

    // Room again: the next POST and the next traffic samples are stored.
    std::fs::remove_file(&filler).unwrap();
    let (code, body) = d.post(&cfg).await;
    assert_eq!((code, &body["generation"]), (200, &json!(2)), "{body}");
    let (ok, out) = https_get(&n, &node, "/bytes/300000", Duration::from_secs(20));
    assert!(ok && out.len() == 300_000, "{out:.200}");
    d.drift_ok().await;
    let rx = rx_after(&d, full_since - 1, &gw_public, &node).await;
    assert!(rx >= 300_000, "the download after the disk had room again is recorded: {rx} bytes");
    // Every pooled connection takes its turn: none was left spoiled by the
    // failed writes (sqlx counted a transaction SQLite had ended as open).
    for _ in 0..8 {
        d.drift_ok().await;
        let (code, body) = d.post(&cfg).await;
        assert_eq!(code, 200, "{body}");
    }
    // The events' writes are retried every 5 s (or at the next event after that).
    let empty = |st: &Value| store_errors(st).is_empty();
    wait_for_status(&d, "every write succeeds again", Duration::from_secs(15), empty).await;
    let (_, metrics) = d.get_text("/metrics").await;
    assert!(metrics.contains(r#"gateway_store_errors_total{operation="traffic"} 1"#), "no failure since: {metrics}");
    drop(events);
    d.stop().await;
}

/// Polls WireGuard itself (status.json may be a second old) until the
/// peer's latest handshake is at `since` or later; returns how long that took.
async fn handshake_after(n: &Names, port: u16, peer: &str, since: i64, limit: Duration) -> Duration {
    let start = Instant::now();
    let cmd = format!("ip netns exec {} wg show {} latest-handshakes", n.netns(port), n.wg(port));
    loop {
        let out = std::process::Command::new("sh").arg("-c").arg(&cmd).output().expect("wg");
        let text = String::from_utf8_lossy(&out.stdout);
        let latest = text.lines().find(|l| l.starts_with(peer)).and_then(|l| l.split_whitespace().nth(1)?.parse::<i64>().ok());
        if latest.is_some_and(|h| h >= since) {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "no handshake with the node within {limit:?}: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long until an HTTPS request through the gateway is served again.
fn served_again(n: &Names, node: &Node, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (ok, out) = https_get(n, node, "/hello", Duration::from_millis(500));
        if ok && out.starts_with("node-https") {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "not served within {limit:?}: {out}");
    }
}

/// The daemon remembers each peer's last endpoint (the node has none in
/// the configuration: it calls in, as behind a NAT), and gives it back to a
/// WireGuard interface it builds anew, with one keepalive, so the node
/// answers at once instead of at its own re-handshake (about 15 s with the
/// node's 5 s keepalive). After wireguard-go is killed, after the namespace
/// is deleted, and after a restart on the same database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_rebuilt_interface_reaches_its_peers_at_once() {
    let NodeTopology { n, gw_private, gw_public: _, port, node, _guard } = node_topology(2);
    let a = args(&n, &[]);
    let d = TestDaemon::start(&a).await;
    let cfg = json!({ port.to_string(): node_network(&n, &gw_private, &node, false) });
    let (code, body) = d.post(&cfg).await;
    assert_eq!(code, 200, "{body}");
    handshake_after(&n, port, &node.public, 1, Duration::from_secs(20)).await;
    served_again(&n, &node, Duration::from_secs(10));
    d.drift_ok().await;

    for what in ["wireguard-go killed", "namespace deleted"] {
        if what == "wireguard-go killed" {
            // The wireguard-go this test's daemon started, by its pid.
            let pids = wireguard_go_pids(&n.wg(port));
            assert_eq!(pids.len(), 1, "{pids:?}");
            sh(&format!("kill -9 {}", pids[0]));
        } else {
            sh(&format!("ip netns del {}", n.netns(port)));
        }
        let iface = format!("ip -n {} link show {}", n.netns(port), n.wg(port));
        wait_until("the interface to go", Duration::from_secs(10), || !sh_ok(&iface)).await;
        // Handshake times are whole seconds: one from the repair's own second counts.
        let repairing = gateway::clock::now_unix();
        let outcome = d.drift_ok().await;
        assert!(outcome.record.changed.contains(&port), "{what}: rebuilt by the drift check");
        let handshake = handshake_after(&n, port, &node.public, repairing, Duration::from_secs(20)).await;
        let served = served_again(&n, &node, Duration::from_secs(20));
        println!("{what}: handshake {} ms after the repair, then served in {} ms", handshake.as_millis(), served.as_millis());
        assert!(handshake + served < Duration::from_secs(2), "{what}: served again {:?} after the repair", handshake + served);
    }

    // A restart on the same database, the namespace gone meanwhile (a
    // reboot): the endpoint comes from the store.
    d.stop().await;
    sh(&format!("ip netns del {}", n.netns(port)));
    let d = TestDaemon::start(&a).await;
    let repairing = gateway::clock::now_unix();
    d.drift_ok().await;
    let handshake = handshake_after(&n, port, &node.public, repairing, Duration::from_secs(20)).await;
    let served = served_again(&n, &node, Duration::from_secs(20));
    println!(
        "restart after the namespace went: handshake {} ms after the rebuild, then served in {} ms",
        handshake.as_millis(),
        served.as_millis()
    );
    assert!(handshake + served < Duration::from_secs(2), "after a restart: served again {:?} after the rebuild", handshake + served);
    d.stop().await;
}
