//! End-to-end tests of what an orchestrator relies on (root; run by
//! scripts/test.sh with --include-ignored): `/ready` while a network fails
//! and after, and `apply_failed` details that name the failing network.

mod common;

use common::*;
use serde_json::{Value, json};

/// `count` networks with one peer each and an HTTPS name.
fn networks(n: &Names, count: u16) -> Value {
    let mut cfg = serde_json::Map::new();
    for i in 0..count {
        let (private, _) = genkey();
        let (_, peer) = genkey();
        cfg.insert(
            n.port(i).to_string(),
            json!({ "private_key": private, "address": ["10.80.0.1/16"],
                    "peers": { peer: { "allowed_ips": ["10.80.0.2/32"] } },
                    "proxy": { format!("https://r{i}.ready.test"): ["10.80.0.2:443"] } }),
        );
    }
    Value::Object(cfg)
}

async fn ready(d: &TestDaemon) -> (u16, Value) {
    let r = d.client.get("/ready").dispatch().await;
    let status = r.status().code;
    (status, serde_json::from_str(&r.into_string().await.unwrap_or_default()).unwrap_or(Value::Null))
}

/// The value of `gateway_generation{kind="KIND"}` in /metrics.
async fn generation_metric(d: &TestDaemon, kind: &str) -> Option<i64> {
    let (_, text) = d.get_text("/metrics").await;
    let prefix = format!("gateway_generation{{kind=\"{kind}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

/// Takes UDP port `port` on the host once nothing holds it any more.
fn take_udp_port(port: u16) -> std::net::UdpSocket {
    let start = std::time::Instant::now();
    loop {
        match std::net::UdpSocket::bind(("0.0.0.0", port)) {
            Ok(s) => return s,
            Err(e) if start.elapsed() > std::time::Duration::from_secs(10) => panic!("UDP port {port} stays taken: {e}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}

/// A network whose namespace was removed by hand while another program
/// took its UDP port cannot be made again: the drift check fails on it and
/// `/ready` answers 503 naming it; a change to the other network is then
/// answered `apply_failed` with a detail whose path and code name the
/// failing network; once the port is free the next pass converges it and
/// `/ready` answers 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn ready_is_503_while_a_network_fails_and_200_after() {
    require_root();
    let n = names(5);
    let _guard = Guard(n.clone());
    write_nginx_conf(&n);
    let d = TestDaemon::start(&args(&n, &[])).await;
    let (code, body) = ready(&d).await;
    assert_eq!((code, &body["desired_generation"]), (503, &json!(0)), "nginx is not running before the first apply: {body}");
    assert!(body["reasons"].as_array().unwrap().iter().any(|r| r["code"] == "nginx_not_running"), "{body}");

    let mut cfg = networks(&n, 2);
    let (code, body) = d.post(&cfg).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = ready(&d).await;
    assert_eq!((code, &body["ready"]), (200, &json!(true)), "{body}");

    let failing = n.port(1);
    sh(&format!("ip netns del {}", n.netns(failing)));
    let taken = take_udp_port(failing);
    let outcome = d.drift_check().await.expect("a pass");
    assert!(!outcome.record.ok, "the network cannot be made again while its port is taken");
    let (code, body) = ready(&d).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!((&body["ready"], &body["nginx_running"], &body["applied_generation"]), (&json!(false), &json!(true), &json!(1)), "{body}");
    assert_eq!(body["failing_networks"], json!([failing]), "only the failing network: {body}");
    assert!(body["reasons"].as_array().unwrap().iter().all(|r| r["path"] == format!("$[\"{failing}\"]")), "{body}");

    // A change to the other network: its apply fails on this one.
    cfg[n.port(0).to_string()]["mtu"] = json!(1380);
    let (code, body) = d.post(&cfg).await;
    assert_eq!((code, &body["error"]), (500, &json!("apply_failed")), "{body}");
    let details = body["details"].as_array().unwrap();
    assert_eq!(details.len(), 1, "{body}");
    assert_eq!(details[0]["path"], format!("$[\"{failing}\"]"), "{body}");
    assert_eq!(details[0]["code"], "network_failed", "{body}");
    let (code, body) = ready(&d).await;
    assert_eq!(code, 503, "{body}");
    let codes: Vec<&str> = body["reasons"].as_array().unwrap().iter().map(|r| r["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["not_applied", "network_failed"], "{body}");
    assert_eq!((generation_metric(&d, "desired").await, generation_metric(&d, "applied").await), (Some(2), Some(1)));

    drop(taken);
    let outcome = d.drift_check().await.expect("a pass");
    assert!(outcome.record.ok, "the retry converges once the port is free: {:?}", outcome.record.errors);
    let (code, body) = ready(&d).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        json!({"ready": true, "desired_generation": 2, "applied_generation": 2, "nginx_running": true, "failing_networks": [], "reasons": []})
    );
    assert_eq!(generation_metric(&d, "applied").await, Some(2));
    d.stop().await;
}
