//! The traffic poller's bookkeeping without root: metrics follow the peers
//! that exist, and a database error in one tick is counted and does not stop
//! the next.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use gateway::daemon::build;
use gateway::observed::{WgDump, WgPeer};
use gateway::system::Runner;
use gateway::traffic::{InterfaceReading, traffic_since};
use gateway::types::PublicKey;

const NET: &str = "4dcKbDNyb6pkkRuP22OPzkHgpOb9k67iaP5R9A0xv0c=";
const A: &str = "OxvFhrgLnI9e4xzMMA2qQ7wm/xCUzxaWW5cb1JGkWSA=";
const B: &str = "LRj4SHqfSjzR+dz1Zmcq7dfiZk4tFWIm+wKv1QqGXx0=";

fn peer(key: &str, rx: u64, tx: u64) -> (PublicKey, WgPeer) {
    let p = WgPeer { preshared_key: None, endpoint: None, allowed_ips: vec![], latest_handshake: 1_700_000_000, rx, tx, keepalive: None };
    (key.parse().unwrap(), p)
}

fn reading(peers: Vec<(PublicKey, WgPeer)>) -> BTreeMap<u16, InterfaceReading> {
    let dump = WgDump { private_key: None, public_key: Some(NET.parse().unwrap()), listen_port: 51820, peers: peers.into_iter().collect() };
    BTreeMap::from([(51820, InterfaceReading { dump, ifindex: 7, partial: false })])
}

async fn daemon() -> gateway::daemon::Daemon {
    let args = common::isolated_args(&[]);
    build(&args, Runner::new(Duration::from_secs(1))).await.unwrap()
}

fn has(text: &str, metric: &str, peer: &str, value: &str) -> bool {
    text.contains(&format!(r#"{metric}{{network="51820",peer="{peer}"}} {value}"#))
}

#[tokio::test]
async fn metrics_follow_the_peers_and_traffic_is_stored() {
    let d = daemon().await;
    let s = &d.shared;
    s.accounting().record_tick(s.store(), s.metrics(), &reading(vec![peer(A, 100, 200), peer(B, 5, 0)]), true).await.expect("stored");
    let text = s.metrics().encode().unwrap();
    assert!(has(&text, "gateway_peer_receive_bytes_total", A, "100"), "{text}");
    assert!(has(&text, "gateway_peer_transmit_bytes_total", A, "200"), "{text}");
    assert!(has(&text, "gateway_peer_latest_handshake_timestamp_seconds", B, "1700000000"), "{text}");
    let info = traffic_since(s.store(), 0, i64::MAX).await.unwrap();
    assert_eq!((info.traffic.rx, info.traffic.tx), (105, 200));
    assert_eq!(info.networks[NET].devices[A].traffic.rx, 100);

    // B is gone: its series go; A's counter grows by the delta only.
    s.accounting().record_tick(s.store(), s.metrics(), &reading(vec![peer(A, 150, 200)]), true).await.expect("stored");
    let text = s.metrics().encode().unwrap();
    assert!(!text.contains(&format!(r#"peer="{B}""#)), "{text}");
    assert!(has(&text, "gateway_peer_receive_bytes_total", A, "150"), "{text}");
    // A pass that read nothing and is not complete forgets nothing.
    s.accounting().record_tick(s.store(), s.metrics(), &BTreeMap::new(), false).await.expect("stored");
    assert!(s.metrics().encode().unwrap().contains(&format!(r#"peer="{A}""#)));
    // A complete pass without the network (it was removed) drops it.
    s.accounting().record_tick(s.store(), s.metrics(), &BTreeMap::new(), true).await.expect("stored");
    assert!(!s.metrics().encode().unwrap().contains(&format!(r#"peer="{A}""#)));
}

#[tokio::test]
async fn a_database_error_is_counted_and_the_next_tick_still_runs() {
    let d = daemon().await;
    let s = &d.shared;
    s.store().pool.close().await;
    for expected in 1..=2 {
        let stored = s.accounting().record_tick(s.store(), s.metrics(), &reading(vec![peer(A, 1, 1)]), true).await;
        assert!(stored.is_err(), "the error is returned for the caller to report");
        let text = s.metrics().encode().unwrap();
        assert!(text.contains(&format!("gateway_poll_errors_total {expected}")), "{text}");
    }
}
