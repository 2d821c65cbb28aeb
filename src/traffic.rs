//! Traffic accounting: per-peer byte deltas from WireGuard's raw counters.
//! The last raw counters are persisted, so a restart continues from them. A
//! new baseline starts when a counter goes backwards, when the interface was
//! recreated (its ifindex changed, even if the new counter already passed the
//! old value), or when the peer was missing from the previous reading. rx and
//! tx are independent.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use sqlx::{QueryBuilder, Row};

use crate::clock::now_unix;
use crate::metrics::Metrics;
use crate::model::TrafficInfo;
use crate::observed::{ObservedNetwork, WgDump};
use crate::store::{Store, StoreError};

mod query;
pub use query::{MAX_SAMPLES, QueryError, Step, TrafficQuery, traffic as query};

/// Bytes counted since the previous reading of one counter. `None` before
/// means the peer is new to us: everything it has is new.
pub fn counter_delta(previous: Option<u64>, now: u64) -> u64 {
    match previous {
        Some(p) if now >= p => now - p,
        // Went backwards: the counter restarted from zero since we last looked.
        _ => now,
    }
}

/// Identifies an interface instance: its ifindex, and the boot (indexes
/// start again after a reboot, where the interfaces come back in the same
/// order with the same indexes and fresh counters).
pub fn epoch(ifindex: u32) -> i64 {
    static BOOT: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let boot = *BOOT.get_or_init(|| {
        let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        id.trim().bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193)) & 0x7fff_ffff
    });
    (i64::from(boot) << 32) | i64::from(ifindex)
}

/// One interface as read by a drift check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceReading {
    pub dump: WgDump,
    pub ifindex: u32,
    /// Some peer lines did not parse: a peer missing from `dump` may still
    /// be there, so none of this interface's counters are dropped.
    pub partial: bool,
}

impl InterfaceReading {
    /// The counters read with a network, if its interface and dump were there.
    pub fn of(n: &ObservedNetwork) -> Option<Self> {
        let (dump, link) = (n.wg.as_ref()?, n.wg_link.as_ref()?);
        Some(InterfaceReading { dump: dump.clone(), ifindex: link.ifindex, partial: !n.problems.is_empty() })
    }
}

/// One peer's reading in a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// The network's listen port: counters are kept per port, so a key
    /// rotation does not count a peer's lifetime bytes again.
    pub network: String,
    /// The network's public key, under which samples are reported.
    pub network_key: String,
    pub peer_key: String,
    /// The interface instance the counters come from.
    pub epoch: i64,
    pub rx: u64,
    pub tx: u64,
}

/// Last stored raw counters of one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Previous {
    pub epoch: i64,
    pub rx: u64,
    pub tx: u64,
}

/// What a tick stores: new raw counters for every peer and a sample for each
/// peer that had traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickWrites {
    pub counters: Vec<Reading>,
    pub samples: Vec<Reading>,
    /// Peers gone from an interface that was read: their counters are
    /// dropped, so a peer added again later starts from zero.
    pub stale: Vec<(String, String)>,
}

/// Decides what a tick writes. `networks_read` are the interfaces read this
/// tick (by listen port), also those without peers; `complete`: every managed
/// interface was read, so counters of any other network are dropped too.
pub fn plan_tick(
    previous: &HashMap<(String, String), Previous>,
    networks_read: &[String],
    complete: bool,
    readings: Vec<Reading>,
) -> TickWrites {
    let mut w = TickWrites::default();
    let mut seen = std::collections::HashSet::new();
    for r in readings {
        let key = (r.network.clone(), r.peer_key.clone());
        let prev = previous.get(&key).filter(|p| p.epoch == r.epoch);
        let rx = counter_delta(prev.map(|p| p.rx), r.rx);
        let tx = counter_delta(prev.map(|p| p.tx), r.tx);
        if rx > 0 || tx > 0 {
            w.samples.push(Reading { rx, tx, ..r.clone() });
        }
        if prev != Some(&Previous { epoch: r.epoch, rx: r.rx, tx: r.tx }) {
            w.counters.push(r);
        }
        seen.insert(key);
    }
    let mut stale: Vec<(String, String)> =
        previous.keys().filter(|k| if networks_read.contains(&k.0) { !seen.contains(*k) } else { complete }).cloned().collect();
    stale.sort();
    w.stale = stale;
    w
}

pub struct Accounting {
    pub retention: Duration,
}

impl Accounting {
    pub fn new(retention: Duration) -> Self {
        Accounting { retention }
    }

    /// Stores one tick's deltas in one transaction; errors are logged and
    /// counted, and returned for the caller to report; the next tick simply
    /// tries again.
    pub async fn record_tick(
        &self,
        store: &Store,
        metrics: &Metrics,
        interfaces: &BTreeMap<u16, InterfaceReading>,
        complete: bool,
    ) -> Result<(), StoreError> {
        let start = Instant::now();
        // Counters are kept per listen port (an interface's identity across
        // a key rotation); samples are reported per public key.
        let networks_read: Vec<String> = interfaces.iter().filter(|(_, i)| !i.partial).map(|(p, _)| p.to_string()).collect();
        let complete = complete && interfaces.values().all(|i| !i.partial);
        let readings = readings_of(interfaces, metrics);
        let stored = store_tick(store, &networks_read, complete, readings, now_unix(), self.retention).await;
        match &stored {
            Ok(writes) => {
                for s in &writes.samples {
                    metrics.count_traffic(&s.network, &s.peer_key, s.rx, s.tx);
                }
                tracing::debug!(samples = writes.samples.len(), elapsed_ms = start.elapsed().as_millis() as u64, "traffic tick stored");
            }
            Err(e) => {
                metrics.poll_errors.inc();
                tracing::warn!(error = %e, "traffic tick not stored (the next tick retries)");
            }
        }
        let seen = interfaces.iter().map(|(port, i)| (port.to_string(), i.dump.peers.keys().map(ToString::to_string).collect())).collect();
        metrics.forget_peers(&seen, complete);
        stored.map(drop)
    }
}

/// The counters of every peer read (each peer's series made known to the
/// metrics on the way).
fn readings_of(interfaces: &BTreeMap<u16, InterfaceReading>, metrics: &Metrics) -> Vec<Reading> {
    let mut readings = Vec::new();
    for (port, i) in interfaces {
        let Some(network_key) = i.dump.public_key.map(|k| k.to_string()) else { continue };
        for (key, p) in &i.dump.peers {
            let peer_key = key.to_string();
            metrics.peer_seen(&port.to_string(), &peer_key, p.latest_handshake);
            readings.push(Reading {
                network: port.to_string(),
                network_key: network_key.clone(),
                peer_key,
                epoch: epoch(i.ifindex),
                rx: p.rx,
                tx: p.tx,
            });
        }
    }
    readings
}

/// Rows per multi-row INSERT (4 values each, far below SQLite's limit).
const BATCH: usize = 250;

/// Reads the previous counters, writes new counters, samples and hourly
/// sums, and drops the counters of peers that are gone, all in one
/// transaction; then prunes samples older than `retention` in small batches
/// (see [`prune`]). The transaction takes the write lock when it begins
/// (`BEGIN IMMEDIATE`): one that read first could not upgrade to a write
/// once another connection had written meanwhile (SQLITE_BUSY, which the
/// busy timeout does not cover), and the tick would be lost.
pub async fn store_tick(
    store: &Store,
    networks_read: &[String],
    complete: bool,
    readings: Vec<Reading>,
    now: i64,
    retention: Duration,
) -> Result<TickWrites, StoreError> {
    let mut tx = store.pool.begin_with("BEGIN IMMEDIATE").await?;
    let previous = previous_counters(&mut tx).await?;
    let writes = plan_tick(&previous, networks_read, complete, readings);
    for (network, peer_key) in &writes.stale {
        sqlx::query("DELETE FROM peer_counters WHERE network = ? AND peer_key = ?").bind(network).bind(peer_key).execute(&mut *tx).await?;
    }
    for chunk in writes.counters.chunks(BATCH) {
        let mut q = QueryBuilder::new("INSERT OR REPLACE INTO peer_counters (network, peer_key, epoch, rx, tx) ");
        q.push_values(chunk, |mut b, c| {
            b.push_bind(&c.network).push_bind(&c.peer_key).push_bind(c.epoch).push_bind(c.rx as i64).push_bind(c.tx as i64);
        });
        q.build().execute(&mut *tx).await?;
    }
    insert_samples(&mut tx, &writes.samples, now).await?;
    tx.commit().await?;
    prune(store, now - retention.as_secs() as i64).await?;
    Ok(writes)
}

async fn previous_counters(tx: &mut sqlx::SqliteConnection) -> Result<HashMap<(String, String), Previous>, StoreError> {
    let mut previous = HashMap::new();
    for row in sqlx::query("SELECT network, peer_key, epoch, rx, tx FROM peer_counters").fetch_all(&mut *tx).await? {
        let key = (row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?);
        let prev = Previous { epoch: row.try_get(2)?, rx: row.try_get::<i64, _>(3)? as u64, tx: row.try_get::<i64, _>(4)? as u64 };
        previous.insert(key, prev);
    }
    Ok(previous)
}

/// The ids of the samples' peers, created where new.
async fn peer_ids(tx: &mut sqlx::SqliteConnection, samples: &[Reading]) -> Result<HashMap<(String, String), i64>, StoreError> {
    let mut ids = HashMap::new();
    for chunk in samples.chunks(BATCH) {
        // The listen port too, updated only where it changed (the key moved
        // to another port): an unchanged row is not written again.
        let mut q = QueryBuilder::new("INSERT INTO traffic_peers (network_key, peer_key, network) ");
        q.push_values(chunk, |mut b, s| {
            b.push_bind(&s.network_key).push_bind(&s.peer_key).push_bind(s.network.parse::<i64>().ok());
        });
        q.push(" ON CONFLICT (network_key, peer_key) DO UPDATE SET network = excluded.network WHERE network IS NOT excluded.network");
        q.build().execute(&mut *tx).await?;
        let mut q = QueryBuilder::new("SELECT id, network_key, peer_key FROM traffic_peers WHERE (network_key, peer_key) IN (");
        let mut list = q.separated(", ");
        for s in chunk {
            list.push("(")
                .push_bind_unseparated(&s.network_key)
                .push_unseparated(", ")
                .push_bind_unseparated(&s.peer_key)
                .push_unseparated(")");
        }
        q.push(")");
        for row in q.build().fetch_all(&mut *tx).await? {
            ids.insert((row.try_get(1)?, row.try_get(2)?), row.try_get(0)?);
        }
    }
    Ok(ids)
}

/// Samples at `now` and their hourly sums; a second poll in the same
/// second (an apply's reading, then a drift check) adds to the first.
async fn insert_samples(tx: &mut sqlx::SqliteConnection, samples: &[Reading], now: i64) -> Result<(), StoreError> {
    let ids = peer_ids(tx, samples).await?;
    let rows: Vec<(i64, i64, i64)> = samples
        .iter()
        .filter_map(|s| ids.get(&(s.network_key.clone(), s.peer_key.clone())).map(|id| (*id, s.rx as i64, s.tx as i64)))
        .collect();
    let hour = Step::HOUR.bucket_of(now);
    for chunk in rows.chunks(BATCH) {
        let mut q = QueryBuilder::new("INSERT INTO traffic_samples (time, peer, rx, tx) ");
        q.push_values(chunk, |mut b, (id, rx, tx)| {
            b.push_bind(now).push_bind(*id).push_bind(*rx).push_bind(*tx);
        });
        q.push(" ON CONFLICT DO UPDATE SET rx = rx + excluded.rx, tx = tx + excluded.tx");
        q.build().execute(&mut *tx).await?;
        let mut q = QueryBuilder::new("INSERT INTO traffic_hourly (hour, peer, rx, tx, entry) ");
        q.push_values(chunk, |mut b, (id, rx, tx)| {
            b.push_bind(hour).push_bind(*id).push_bind(*rx).push_bind(*tx).push_bind(format!("{hour}:{rx}:{tx}"));
        });
        q.push(
            " ON CONFLICT DO UPDATE SET rx = rx + excluded.rx, tx = tx + excluded.tx,
              entry = hour || ':' || (rx + excluded.rx) || ':' || (tx + excluded.tx)",
        );
        q.build().execute(&mut *tx).await?;
    }
    Ok(())
}

/// Rows deleted per pruning statement: each is its own short transaction,
/// so a backlog (after a long downtime, or a shorter `--retention`) never
/// holds the write lock long enough to stall an API write.
const PRUNE_BATCH: i64 = 5000;

/// Deletes samples older than `cutoff`, hourly sums of hours ending before
/// it, and peers left without any, in batches.
pub async fn prune(store: &Store, cutoff: i64) -> Result<u64, StoreError> {
    let mut deleted = 0;
    for sql in [
        "DELETE FROM traffic_samples WHERE (time, peer) IN (SELECT time, peer FROM traffic_samples WHERE time < ?1 ORDER BY time LIMIT ?2)",
        "DELETE FROM traffic_hourly WHERE (peer, hour) IN (SELECT peer, hour FROM traffic_hourly WHERE hour < ?1 LIMIT ?2)",
    ] {
        loop {
            let n = sqlx::query(sql).bind(cutoff).bind(PRUNE_BATCH).execute(&store.pool).await?.rows_affected();
            deleted += n;
            if n < PRUNE_BATCH as u64 {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    if deleted > 0 {
        sqlx::query("DELETE FROM traffic_peers WHERE id NOT IN (SELECT peer FROM traffic_hourly)").execute(&store.pool).await?;
    }
    Ok(deleted)
}

/// Traffic recorded after `start` (exclusive) up to `now`, per sample.
pub async fn traffic_since(store: &Store, start: i64, now: i64) -> Result<TrafficInfo, QueryError> {
    query::traffic(store, &TrafficQuery { start, stop: now, step: None }).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Traffic;

    fn r(peer: &str, rx: u64, tx: u64) -> Reading {
        re(peer, 1, rx, tx)
    }

    fn re(peer: &str, epoch: i64, rx: u64, tx: u64) -> Reading {
        Reading { network: "51820".into(), network_key: "N".into(), peer_key: peer.into(), epoch, rx, tx }
    }

    fn prev(peer: &str, epoch: i64, rx: u64, tx: u64) -> HashMap<(String, String), Previous> {
        HashMap::from([(("51820".to_string(), peer.to_string()), Previous { epoch, rx, tx })])
    }

    const N: &[String] = &[];

    #[test]
    fn a_reading_needs_the_interface_and_its_dump_and_knows_when_it_is_partial() {
        use crate::observed::{Link, ObservedNetwork};
        let dump = WgDump { private_key: None, public_key: None, listen_port: 51820, peers: Default::default() };
        let mut n =
            ObservedNetwork { wg: Some(dump.clone()), wg_link: Some(Link { ifindex: 7, ..Default::default() }), ..Default::default() };
        assert_eq!(InterfaceReading::of(&n), Some(InterfaceReading { dump: dump.clone(), ifindex: 7, partial: false }));
        n.problems.push("peer line 1: 3 fields, expected 8".into());
        assert_eq!(InterfaceReading::of(&n).map(|r| r.partial), Some(true));
        n.wg_link = None;
        assert_eq!(InterfaceReading::of(&n), None, "no interface");
        n.wg_link = Some(Link::default());
        n.wg = None;
        assert_eq!(InterfaceReading::of(&n), None, "no dump");
    }

    #[test]
    fn deltas() {
        assert_eq!(counter_delta(None, 100), 100, "a new peer's bytes are new");
        assert_eq!(counter_delta(Some(100), 150), 50);
        assert_eq!(counter_delta(Some(100), 100), 0);
        assert_eq!(counter_delta(Some(100), 30), 30, "reset: new baseline, the new bytes count");
        assert_eq!(counter_delta(Some(0), 0), 0);
    }

    #[test]
    fn rx_and_tx_are_independent() {
        let p = prev("a", 1, 100, 100);
        let w = plan_tick(&p, N, false, vec![r("a", 100, 180)]);
        assert_eq!(w.samples, vec![r("a", 0, 80)]);
        let w = plan_tick(&p, N, false, vec![r("a", 10, 150)]);
        assert_eq!(w.samples, vec![r("a", 10, 50)], "rx reset while tx grew");
    }

    #[test]
    fn recreated_interface_counts_everything_even_past_the_old_value() {
        let p = prev("a", 1, 1000, 1000);
        let w = plan_tick(&p, N, false, vec![re("a", 2, 5000, 20)]);
        assert_eq!(w.samples, vec![re("a", 2, 5000, 20)]);
        assert_eq!(w.counters, vec![re("a", 2, 5000, 20)]);
    }

    #[test]
    fn a_peer_gone_from_a_read_interface_is_forgotten() {
        let p = prev("a", 1, 1000, 1000);
        let w = plan_tick(&p, &["51820".to_string()], false, vec![r("b", 1, 1)]);
        assert_eq!(w.stale, vec![("51820".to_string(), "a".to_string())]);
        let w = plan_tick(&p, &["other".to_string()], false, vec![]);
        assert!(w.stale.is_empty(), "an interface not read says nothing about its peers");
        let w = plan_tick(&p, &["other".to_string()], true, vec![]);
        assert_eq!(w.stale, vec![("51820".to_string(), "a".to_string())], "a complete tick drops networks that are gone");
    }

    #[test]
    fn idle_peers_store_no_sample_and_no_counter() {
        let p = prev("a", 1, 5, 5);
        let w = plan_tick(&p, N, false, vec![r("a", 5, 5), r("b", 0, 0)]);
        assert!(w.samples.is_empty());
        assert_eq!(w.counters, vec![r("b", 0, 0)], "only a changed counter is written");
    }

    #[tokio::test]
    async fn ticks_restart_and_query() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = Store::open(Some(path.to_str().unwrap())).await.unwrap();
        let day = Duration::from_secs(86400);
        let read = ["51820".to_string()];
        store_tick(&store, &read, true, vec![r("a", 1000, 2000)], 100, day).await.unwrap();
        store_tick(&store, &read, true, vec![r("a", 1500, 2000)], 160, day).await.unwrap();
        store.pool.close().await;
        // A restart continues from the persisted counters: nothing twice.
        let store = Store::open(Some(path.to_str().unwrap())).await.unwrap();
        store_tick(&store, &read, true, vec![r("a", 1500, 2000)], 220, day).await.unwrap();
        store_tick(&store, &read, true, vec![r("a", 40, 10)], 280, day).await.unwrap();
        let info = traffic_since(&store, 0, 300).await.unwrap();
        assert_eq!(info.traffic, Traffic { rx: 1000 + 500 + 40, tx: 2000 + 10 });
        let dev = &info.networks["N"].devices["a"];
        assert_eq!(dev.times.len(), 3, "no sample for the idle tick at 220");
        assert_eq!(dev.times["160"], Traffic { rx: 500, tx: 0 });
        let later = traffic_since(&store, 160, 300).await.unwrap();
        assert_eq!(later.traffic, Traffic { rx: 40, tx: 10 });
        assert_eq!((later.start_time, later.stop_time), (160, 300), "the window asked for");
        // Retention removes old samples.
        store_tick(&store, &read, true, vec![r("a", 40, 10)], 100 + 86400 + 100, day).await.unwrap();
        let kept = traffic_since(&store, 0, i64::MAX).await.unwrap();
        assert_eq!(kept.networks["N"].devices["a"].times.len(), 1);
    }

    /// A sample exactly `retention` old is kept: the window is inclusive, so
    /// `--retention 24h` always answers a query for the last 24 hours whole.
    /// One second older, it is pruned.
    #[tokio::test]
    async fn retention_keeps_a_sample_exactly_at_its_edge() {
        let store = Store::open(None).await.unwrap();
        let (read, retention) = (["51820".to_string()], Duration::from_secs(3600));
        store_tick(&store, &read, true, vec![r("a", 10, 0)], 1000, retention).await.unwrap();
        store_tick(&store, &read, true, vec![r("a", 10, 0)], 1000 + 3600, retention).await.unwrap();
        let info = traffic_since(&store, 0, i64::MAX).await.unwrap();
        assert_eq!(info.traffic.rx, 10, "the sample at now - retention is kept");
        store_tick(&store, &read, true, vec![r("a", 10, 0)], 1000 + 3601, retention).await.unwrap();
        let info = traffic_since(&store, 0, i64::MAX).await.unwrap();
        assert_eq!(info.traffic.rx, 0, "one second older it is pruned");
    }

    /// A tick after a transaction SQLite rolled back by itself (what it does
    /// when the disk is full: `SQLITE_FULL` at commit) is stored: sqlx's
    /// rollback of that transaction fails and it went on counting it as open,
    /// so every later tick failed with "non-zero transaction depth" until a
    /// restart. One connection, so the tick surely gets the spoiled one. The
    /// end-to-end test fills a real filesystem.
    #[tokio::test]
    async fn a_transaction_sqlite_ended_by_itself_does_not_spoil_the_next_tick() {
        use sqlx::sqlite::SqliteConnectOptions;
        let dir = tempfile::tempdir().unwrap();
        let opts = SqliteConnectOptions::new().filename(dir.path().join("t.db")).create_if_missing(true);
        let pool = crate::store::pool_options().max_connections(1).connect_with(opts).await.unwrap();
        sqlx::migrate!("./migrations").run(&pool).await.unwrap();
        let store = Store { pool };
        let (day, read) = (Duration::from_secs(86400), ["51820".to_string()]);
        store_tick(&store, &read, true, vec![r("a", 10, 20)], 100, day).await.unwrap();
        let mut tx = store.pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        sqlx::query("UPDATE peer_counters SET rx = 0").execute(&mut *tx).await.unwrap();
        sqlx::query("ROLLBACK").execute(&mut *tx).await.unwrap();
        drop(tx);
        store_tick(&store, &read, true, vec![r("a", 15, 20)], 160, day).await.expect("the next tick is stored");
        store.save_apply(&crate::store::ApplyRecord { generation: 1, ..Default::default() }).await.expect("and so is an apply record");
        let info = traffic_since(&store, 100, 300).await.unwrap();
        assert_eq!(info.traffic, Traffic { rx: 5, tx: 0 }, "counted from the counters the rolled back transaction did not change");
    }

    /// Measures what a day of traffic costs on disk (docs/design.md: "the size per
    /// peer per day"): 100 peers busy at every tick of a 60 s watchdog for a
    /// day, then the file's size. By hand:
    /// `cargo test --lib store_size_per_peer_per_day -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore = "a measurement (about a minute), run by hand"]
    async fn store_size_per_peer_per_day() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("size.db");
        let store = Store::open(Some(path.to_str().unwrap())).await.unwrap();
        let (peers, day, read) = (100u64, Duration::from_secs(86400), ["51820".to_string()]);
        let empty = std::fs::metadata(&path).unwrap().len();
        for tick in 1..=1440u64 {
            let readings = (0..peers).map(|p| r(&format!("{p:044}"), tick * 1000 + p, tick * 2000)).collect();
            store_tick(&store, &read, true, readings, 1_700_000_000 + 60 * tick as i64, day).await.unwrap();
        }
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&store.pool).await.unwrap();
        let size = std::fs::metadata(&path).unwrap().len() - empty;
        println!("{peers} peers x 1440 ticks: {size} bytes, {} bytes per peer per day", size / peers);
    }

    /// Another connection writes while a tick is about to run: the tick
    /// waits for it (busy timeout) instead of failing on a stale read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tick_waits_for_another_writer_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(Some(dir.path().join("t.db").to_str().unwrap())).await.unwrap();
        let day = Duration::from_secs(86400);
        let read = ["51820".to_string()];
        store_tick(&store, &read, true, vec![r("a", 1000, 2000)], 100, day).await.unwrap();
        let mut other = store.pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        sqlx::query("UPDATE peer_counters SET rx = 1100").execute(&mut *other).await.unwrap();
        let tick = tokio::spawn({
            let store = store.clone();
            async move { store_tick(&store, &["51820".to_string()], true, vec![r("a", 1200, 2000)], 160, day).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        other.commit().await.unwrap();
        tick.await.unwrap().expect("the tick waited for the other writer");
        let info = traffic_since(&store, 100, 200).await.unwrap();
        assert_eq!(info.traffic.rx, 100, "counted from the other writer's committed counter");
    }
}
