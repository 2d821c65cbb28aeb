use std::time::{Duration, Instant};

use super::*;
use crate::observed::{Link, WgDump, WgPeer};

fn ids(events: &[Arc<Event>]) -> Vec<u64> {
    events.iter().map(|e| e.id).collect()
}

#[test]
fn events_are_numbered_kept_within_the_backlog_and_resumed_after_an_id() {
    let events = Events::new(3, 100);
    for n in 0..5 {
        events.publish("apply", &serde_json::json!({ "n": n }));
    }
    let all = events.subscribe(Some(0)).missed;
    assert_eq!(ids(&all), [102, 103, 104], "the oldest went");
    assert_eq!(all[2].data, r#"{"n":4}"#);
    assert_eq!(all[2].name, "apply");
    assert_eq!(ids(&events.subscribe(Some(102)).missed), [103, 104], "resumed after 102");
    assert_eq!(ids(&events.subscribe(Some(104)).missed), Vec::<u64>::new(), "nothing missed");
    assert!(events.subscribe(None).missed.is_empty(), "no id: live only");
    assert_eq!(ids(&events.subscribe(Some(9_999)).missed), [102, 103, 104], "an id from another run: everything kept");
}

#[tokio::test]
async fn a_subscriber_gets_missed_then_live_events_once_each() {
    let events = Events::new(16, 1);
    events.publish("a", &1);
    let mut sub = events.subscribe(Some(0));
    events.publish("b", &2);
    assert_eq!(ids(&sub.missed), [1]);
    assert_eq!(sub.live.recv().await.unwrap().id, 2);
    assert!(sub.live.try_recv().is_err(), "nothing twice");
}

/// A subscriber that never reads holds nothing up: publishing thousands of
/// events takes no time, and that subscriber is then told it fell behind
/// (its stream ends; it may resume from the backlog).
#[test]
fn a_subscriber_that_never_reads_blocks_nothing_and_is_dropped() {
    let events = Events::new(BACKLOG, 1);
    let mut absent = events.subscribe(None);
    let start = Instant::now();
    for n in 0..(10 * BACKLOG) {
        events.publish("apply", &n);
    }
    assert!(start.elapsed() < Duration::from_secs(5), "publishing waited: {:?}", start.elapsed());
    assert!(matches!(absent.live.try_recv(), Err(broadcast::error::TryRecvError::Lagged(_))), "the slow subscriber is told it lagged");
    assert_eq!(events.subscribe(Some(0)).missed.len(), BACKLOG, "the backlog stays bounded");
}

const PEER: &str = "OxvFhrgLnI9e4xzMMA2qQ7wm/xCUzxaWW5cb1JGkWSA=";
const NET: &str = "LRj4SHqfSjzR+dz1Zmcq7dfiZk4tFWIm+wKv1QqGXx0=";

fn network(handshake: i64) -> ObservedNetwork {
    let peer = WgPeer {
        preshared_key: None,
        endpoint: Some("192.0.2.7:51900".parse().unwrap()),
        allowed_ips: vec![],
        latest_handshake: handshake,
        rx: 0,
        tx: 0,
        keepalive: None,
    };
    ObservedNetwork {
        wg: Some(WgDump {
            private_key: None,
            public_key: Some(NET.parse().unwrap()),
            listen_port: 51820,
            peers: [(PEER.parse().unwrap(), peer)].into_iter().collect(),
        }),
        wg_link: Some(Link::default()),
        ..Default::default()
    }
}

fn kinds(events: &[(bool, PeerEvent)]) -> Vec<bool> {
    events.iter().map(|(connected, _)| *connected).collect()
}

#[test]
fn peers_connect_with_a_fresh_handshake_and_disconnect_when_it_ages() {
    let watch = PeerWatch::new(Duration::from_secs(180));
    assert!(watch.observe(51820, 1000, Some(&network(0))).is_empty(), "never shook hands: not connected, no event");
    let events = watch.observe(51820, 1010, Some(&network(1005)));
    assert_eq!(kinds(&events), [true]);
    let e = &events[0].1;
    assert_eq!((e.network, e.network_public_key.as_deref(), e.peer_public_key.as_str()), (51820, Some(NET), PEER));
    assert_eq!((e.endpoint.as_deref(), e.latest_handshake), (Some("192.0.2.7:51900"), Some(1005)));
    assert!(watch.observe(51820, 1100, Some(&network(1005))).is_empty(), "still connected: no new event");
    assert!(watch.observe(51820, 1184, Some(&network(1005))).is_empty(), "179 s old: still connected");
    assert!(watch.observe(51820, 1050, Some(&network(0))).is_empty(), "an older look changes nothing");
    assert_eq!(kinds(&watch.observe(51820, 1185, Some(&network(1005)))), [false], "180 s old: disconnected");
    assert!(watch.observe(51820, 1186, Some(&network(1005))).is_empty());
    assert_eq!(kinds(&watch.observe(51820, 1300, Some(&network(1290)))), [true], "a new handshake");
    let unreadable = ObservedNetwork { wg: None, ..network(0) };
    assert!(watch.observe(51820, 1301, Some(&unreadable)).is_empty(), "WireGuard unreadable: nothing known");
    let gone = watch.observe(51820, 1302, None);
    assert_eq!(kinds(&gone), [false], "the network went");
    assert_eq!(gone[0].1.network_public_key.as_deref(), Some(NET), "remembered from the last look");
    assert_eq!(kinds(&watch.observe(51820, 1303, Some(&network(1290)))), [true], "back");
}

#[test]
fn the_threshold_is_a_setting() {
    let watch = PeerWatch::new(Duration::from_secs(5));
    assert_eq!(kinds(&watch.observe(1, 100, Some(&network(96)))), [true]);
    assert_eq!(kinds(&watch.observe(1, 101, Some(&network(96)))), [false]);
}
