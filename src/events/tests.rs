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
    for exact in [101, 102, 104] {
        assert_eq!(events.subscribe(Some(exact)).lost, None, "after {exact}: nothing unseen is gone");
    }
    let lost = |after| events.subscribe(Some(after)).lost.map(|l| (l.last_event_id, l.first_kept_id));
    assert_eq!(lost(100), Some((100, Some(102))), "101 is gone and was not seen");
    assert_eq!(lost(9_999), Some((9_999, Some(102))), "not one of ours: told so");
    assert_eq!(lost(0), Some((0, Some(102))));
}

mod durable {
    use super::*;
    use crate::events::durable::{load, save};
    use crate::store::{Store, StoreError};

    type Outcomes = Arc<Mutex<Vec<bool>>>;

    /// Events continued from `store`, with their writer running; the
    /// writer's outcomes (ok or not) are collected.
    async fn running(store: &Store, capacity: usize, now_micros: u64) -> (Arc<Events>, Outcomes) {
        running_with(store, capacity, now_micros, Duration::from_secs(5)).await
    }

    async fn running_with(store: &Store, capacity: usize, now_micros: u64, retry: Duration) -> (Arc<Events>, Outcomes) {
        let events = Arc::new(Events::resume(capacity, load(store, capacity).await.unwrap(), now_micros));
        let outcomes: Outcomes = Arc::default();
        let (e, s, o) = (events.clone(), store.clone(), outcomes.clone());
        events.set_writer(tokio::spawn(async move {
            e.write(&s, retry, |r: &Result<(), StoreError>| o.lock().unwrap().push(r.is_ok())).await;
        }));
        (events, outcomes)
    }

    async fn next(sub: &mut Subscription) -> Arc<Event> {
        tokio::time::timeout(Duration::from_secs(10), sub.live.recv()).await.expect("an event within 10 s").unwrap()
    }

    async fn stored_ids(store: &Store) -> Vec<u64> {
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM events ORDER BY id").fetch_all(&store.pool).await.unwrap();
        ids.into_iter().map(|i| i as u64).collect()
    }

    #[tokio::test]
    async fn events_are_stored_before_they_are_sent_and_resumed_after_a_restart() {
        let store = Store::open(None).await.unwrap();
        let (events, outcomes) = running(&store, 3, 1000).await;
        let mut sub = events.subscribe(None);
        for n in 0..4 {
            events.publish("apply", &n);
            let e = next(&mut sub).await;
            assert_eq!(e.id, 1000 + n, "numbered from the start time");
            assert!(stored_ids(&store).await.contains(&e.id), "stored before it was sent");
        }
        events.close().await;
        assert!(outcomes.lock().unwrap().iter().all(|ok| *ok));
        assert_eq!(stored_ids(&store).await, [1001, 1002, 1003], "the oldest beyond 3 deleted (at the next write)");

        // The next run, started "earlier" by the clock: ids still go on.
        let (events, _) = running(&store, 3, 5).await;
        let resumed = events.subscribe(Some(1001));
        assert_eq!((resumed.lost, ids(&resumed.missed)), (None, vec![1002, 1003]), "exactly the missed ones");
        let mut sub = events.subscribe(Some(1003));
        assert!(sub.missed.is_empty());
        events.publish("apply", &"after the restart");
        let e = next(&mut sub).await;
        assert_eq!((e.id, e.data.as_str(), e.name.as_ref()), (1004, r#""after the restart""#, "apply"));
        let gone = events.subscribe(Some(1000));
        assert_eq!(gone.lost.map(|l| l.first_kept_id), Some(Some(1002)), "1001 was dropped (1004 came): told so");
        assert_eq!(ids(&gone.missed), [1002, 1003, 1004], "and everything kept");
        assert_eq!(events.subscribe(Some(1001)).lost, None, "the last one gone was seen: nothing unseen is gone");
        events.close().await;
        // A smaller count at the next start keeps the newest.
        let (events, _) = running(&store, 2, 5).await;
        assert_eq!(ids(&events.subscribe(Some(1002)).missed), [1003, 1004]);
        assert!(events.subscribe(Some(1001)).lost.is_some(), "1002 is no longer kept");
        events.close().await;
    }

    /// A database that never held events (a new one, or one from before
    /// they were kept): a client resuming from an earlier run is told that
    /// events are gone.
    #[tokio::test]
    async fn a_new_database_says_earlier_events_are_gone() {
        let store = Store::open(None).await.unwrap();
        let (events, _) = running(&store, 10, 7000).await;
        let sub = events.subscribe(Some(6500));
        assert_eq!(sub.lost.map(|l| (l.last_event_id, l.first_kept_id)), Some((6500, None)));
        assert_eq!(events.subscribe(Some(6999)).lost, None, "the id just before the run's first: nothing gone");
        events.close().await;
    }

    /// A full disk holds no event back: each is sent at once and kept in
    /// memory, written once there is room again; one failure is reported
    /// per retry, not per event.
    #[tokio::test]
    async fn a_full_database_delays_no_event_and_they_are_written_later() {
        let store = Store::open(None).await.unwrap();
        save(&store, &[], 0).await.unwrap();
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&store.pool).await.unwrap();
        sqlx::query(&format!("PRAGMA max_page_count = {pages}")).execute(&store.pool).await.unwrap();
        let (events, outcomes) = running_with(&store, 100, 1, Duration::from_millis(200)).await;
        let mut sub = events.subscribe(None);
        let big = "x".repeat(10_000);
        for n in 0..3 {
            events.publish("apply", &big);
            assert_eq!(next(&mut sub).await.id, 1 + n, "sent although it could not be written");
        }
        let failed = outcomes.lock().unwrap().clone();
        assert!(!failed.is_empty() && failed.iter().all(|ok| !ok), "{failed:?}");
        assert!(stored_ids(&store).await.is_empty());
        sqlx::query("PRAGMA max_page_count = 1000000").execute(&store.pool).await.unwrap();
        let start = Instant::now();
        while stored_ids(&store).await != [1, 2, 3] {
            assert!(start.elapsed() < Duration::from_secs(20), "never written: {:?}", outcomes.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(outcomes.lock().unwrap().last(), Some(&true), "written at a retry, with nothing new published");
        events.close().await;
    }
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
