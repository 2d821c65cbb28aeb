//! End-to-end tests of what scale changed (root; run by scripts/test.sh with
//! --include-ignored): looks that start no process, rules drift repaired at
//! the next drift check, status.json following a by-hand change within one
//! check, and networks applied side by side where one of them fails.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// `count` networks with one peer each (with an endpoint) and an HTTPS name
/// (`{host}{i}.scale.test`).
fn networks(n: &Names, count: u16, host: &str) -> Value {
    let mut cfg = serde_json::Map::new();
    let endpoint = format!("{}:51999", local_endpoint_ip(n));
    for i in 0..count {
        let peer = json!({ test_key(n.k, i, 1): { "allowed_ips": ["10.80.0.2/32"], "endpoint": endpoint } });
        cfg.insert(
            n.port(i).to_string(),
            json!({ "private_key": test_key(n.k, i, 0), "address": ["10.80.0.1/16"], "peers": peer,
                    "proxy": { format!("https://{host}{i}.scale.test"): ["10.80.0.2:443"] } }),
        );
    }
    Value::Object(cfg)
}

fn saves(records: &[gateway::system::Record]) -> Vec<&str> {
    records.iter().filter(|r| r.line.contains("iptables-save")).map(|r| r.line.as_str()).collect()
}

/// Rules flushed by hand are back after the next drift check, found by
/// their nf_tables generation: a quiet drift check runs no process at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn rules_changed_by_hand_are_repaired_at_the_next_drift_check() {
    require_root();
    let n = names(12);
    let _guard = Guard(n.clone());
    write_nginx_conf(&n);
    let d = TestDaemon::start(&args(&n, &[])).await;
    let (code, body) = d.post(&networks(&n, 2, "s")).await;
    assert_eq!(code, 200, "{body}");
    // The first checks verify the rules the apply wrote (and take their
    // turn of the safety rounds); then nothing needs reading.
    for _ in 0..2 {
        assert!(d.drift_check().await.unwrap().record.ok);
    }
    d.runner.take_records();
    let quiet = d.drift_check().await.unwrap();
    assert!(quiet.record.ok && quiet.actions == 0, "{:?}", quiet.record.errors);
    assert_eq!(quiet.dumps.len(), 2, "every interface was read (the traffic poll)");
    let records = d.runner.take_records();
    assert!(records.is_empty(), "a quiet drift check starts no process: {records:?}");

    let (ns, other) = (n.netns(n.port(0)), n.netns(n.port(1)));
    sh(&format!("ip netns exec {ns} iptables -t nat -F GATEWAY-DNAT"));
    assert!(!sh(&format!("ip netns exec {ns} iptables -t nat -S GATEWAY-DNAT")).contains("DNAT --to"));
    let outcome = d.drift_check().await.unwrap();
    assert!(outcome.record.ok, "{:?}", outcome.record.errors);
    assert_eq!(outcome.record.changed, [n.port(0)]);
    assert!(sh(&format!("ip netns exec {ns} iptables -t nat -S GATEWAY-DNAT")).contains("DNAT --to-destination 10.80.0.2:443"));
    let records = d.runner.take_records();
    let read = saves(&records);
    assert!(read.len() == 1 && read[0].contains(&format!("netns exec {ns} ")), "only the changed namespace's rules were read: {read:?}");
    assert!(!records.iter().any(|r| r.line.contains(&other)), "{records:?}");
    d.stop().await;
}

/// What is changed by hand shows in status.json after one drift check: a
/// peer's endpoint (WireGuard's own roaming, not fought), a namespace with
/// our prefix that nobody wants (shown at once, gone after the check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn status_shows_a_change_by_hand_within_one_drift_check() {
    require_root();
    let n = names(13);
    let _guard = Guard(n.clone());
    write_nginx_conf(&n);
    let d = TestDaemon::start(&args(&n, &[])).await;
    let (code, body) = d.post(&networks(&n, 1, "s")).await;
    assert_eq!(code, 200, "{body}");
    let (port, peer) = (n.port(0).to_string(), test_key(n.k, 0, 1));
    let (_, st) = d.get("/api/v1/status.json").await;
    assert_eq!(st["networks"][&port]["peers"][&peer]["endpoint"], format!("{}:51999", local_endpoint_ip(&n)), "{st}");
    let before = st["networks"][&port]["observed_at"].as_i64().expect("observed");

    std::thread::sleep(Duration::from_millis(1100));
    sh(&format!("ip netns exec {} wg set {} peer {peer} endpoint 127.0.0.2:40404", n.netns(n.port(0)), n.wg(n.port(0))));
    let stray = n.port(9);
    sh(&format!("ip netns add {}", n.netns(stray)));
    let (_, st) = d.get("/api/v1/status.json").await;
    let s = &st["networks"][stray.to_string()];
    assert_eq!((&s["namespace_present"], &s["desired"]), (&json!(true), &json!(false)), "which namespaces exist is always fresh: {st}");

    let outcome = d.drift_check().await.unwrap();
    assert!(outcome.record.ok, "{:?}", outcome.record.errors);
    let (_, st) = d.get("/api/v1/status.json").await;
    let net = &st["networks"][&port];
    assert_eq!(net["peers"][&peer]["endpoint"], "127.0.0.2:40404", "{st}");
    assert!(net["observed_at"].as_i64().unwrap() > before, "a newer look: {st}");
    assert!(st["networks"].get(stray.to_string()).is_none(), "the stray namespace was removed and is gone from status: {st}");
    d.stop().await;
}

/// Twenty networks applied side by side (8 at once); then one of them loses
/// its namespace and another process takes its listen port before the next
/// change (a port held at POST time is a 422 of validation: this is the
/// port taken after it): the other nineteen converge, the error names the
/// failing network, and it is the only one left unconverged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn twenty_networks_side_by_side_one_fails_nineteen_converge() {
    require_root();
    let n = names(14);
    let _guard = Guard(n.clone());
    write_nginx_conf(&n);
    let d = TestDaemon::start(&args(&n, &["--apply-concurrency=8"])).await;
    let (code, body) = d.post(&networks(&n, 20, "s")).await;
    assert_eq!(code, 200, "{body}");
    let failing = n.port(7);
    // The failing network's interface goes with its namespace (wireguard-go
    // exits and frees the port), and someone else takes its UDP port.
    sh(&format!("ip netns del {}", n.netns(failing)));
    let mut taken = None;
    wait_until("the deleted network's port to be free", Duration::from_secs(10), || {
        taken = std::net::UdpSocket::bind(("0.0.0.0", failing)).ok();
        taken.is_some()
    })
    .await;
    assert!(taken.is_some(), "the port is held until the end of the test");
    let (code, body) = d.post(&networks(&n, 20, "t")).await;
    assert_eq!(code, 500, "{body}");
    assert_eq!(body["error"], "apply_failed");
    let details: Vec<String> = body["details"].as_array().unwrap().iter().map(|d| d["message"].as_str().unwrap().to_string()).collect();
    assert_eq!(details.len(), 1, "{details:#?}");
    assert!(details[0].starts_with(&format!("network {failing}:")), "{details:#?}");
    let (_, st) = d.get("/api/v1/status.json").await;
    for i in 0..20 {
        let port = n.port(i);
        let net = &st["networks"][port.to_string()];
        if port == failing {
            assert_ne!(net["listen_port"], json!(port), "{net}");
            continue;
        }
        assert_eq!((&net["interface_up"], &net["listen_port"]), (&json!(true), &json!(port)), "network {port}: {net}");
        assert!(sh(&format!("ip netns exec {} iptables -t nat -S GATEWAY-DNAT", n.netns(port))).contains("10.80.0.2:443"));
    }
    assert!(std::fs::read_to_string(n.stream_file()).unwrap().contains("t19.scale.test"), "nginx written once, with every network");
    d.stop().await;
}
