//! The traffic poller's bookkeeping without root: metrics follow the peers
//! that exist, and a database error in one tick is counted and does not stop
//! the next.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use gateway::cli::build;
use gateway::observe::{WgDump, WgPeer};
use gateway::runner::Runner;
use gateway::traffic::{InterfaceReading, traffic_since};

fn peer(key: &str, rx: u64, tx: u64) -> WgPeer {
    WgPeer {
        public_key: key.into(),
        preshared_key: None,
        endpoint: None,
        allowed_ips: vec![],
        latest_handshake: 1_700_000_000,
        rx,
        tx,
        keepalive: None,
    }
}

fn reading(peers: Vec<WgPeer>) -> BTreeMap<u16, InterfaceReading> {
    let dump = WgDump { private_key: "p".into(), public_key: "NET".into(), listen_port: 51820, peers };
    BTreeMap::from([(51820, InterfaceReading { dump, ifindex: 7, partial: false })])
}

async fn daemon() -> gateway::cli::Daemon {
    let args = common::isolated_args(&[]);
    build(&args, Runner::new(Duration::from_secs(1))).await.unwrap()
}

#[tokio::test]
async fn metrics_follow_the_peers_and_traffic_is_stored() {
    let d = daemon().await;
    let s = &d.shared;
    s.accounting.record_tick(s, &reading(vec![peer("A", 100, 200), peer("B", 5, 0)]), true).await;
    let text = s.metrics.encode().unwrap();
    assert!(text.contains(r#"gateway_peer_receive_bytes_total{network="51820",peer="A"} 100"#), "{text}");
    assert!(text.contains(r#"gateway_peer_transmit_bytes_total{network="51820",peer="A"} 200"#), "{text}");
    assert!(text.contains(r#"gateway_peer_latest_handshake_seconds{network="51820",peer="B"} 1700000000"#), "{text}");
    let info = traffic_since(&s.store, 0, i64::MAX).await.unwrap();
    assert_eq!((info.traffic.rx, info.traffic.tx), (105, 200));

    // B is gone: its series go; A's counter grows by the delta only.
    s.accounting.record_tick(s, &reading(vec![peer("A", 150, 200)]), true).await;
    let text = s.metrics.encode().unwrap();
    assert!(!text.contains(r#"peer="B""#), "{text}");
    assert!(text.contains(r#"gateway_peer_receive_bytes_total{network="51820",peer="A"} 150"#), "{text}");
    // A pass that read nothing and is not complete forgets nothing.
    s.accounting.record_tick(s, &BTreeMap::new(), false).await;
    assert!(s.metrics.encode().unwrap().contains(r#"peer="A""#));
    // A complete pass without the network (it was removed) drops it.
    s.accounting.record_tick(s, &BTreeMap::new(), true).await;
    assert!(!s.metrics.encode().unwrap().contains(r#"peer="A""#));
}

#[tokio::test]
async fn a_database_error_is_counted_and_the_next_tick_still_runs() {
    let d = daemon().await;
    let s = &d.shared;
    s.store.pool.close().await;
    for expected in 1..=2 {
        s.accounting.record_tick(s, &reading(vec![peer("A", 1, 1)]), true).await;
        let text = s.metrics.encode().unwrap();
        assert!(text.contains(&format!("gateway_poll_errors_total {expected}")), "{text}");
    }
}
