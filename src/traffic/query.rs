//! traffic.json: the samples of the range summed per peer, never past the
//! cap; the bucketed form (`step`) reads the hourly sums when the step is
//! whole hours, so a day of 10,000 peers is a small read. SQLite packs the
//! whole answer into one text (`group_concat`, each peer with its keys and
//! entries), unpacked here: one row read, not one per sample or peer.

use std::collections::{BTreeMap, HashMap};

use crate::model::{DeviceTraffic, Traffic, TrafficInfo};
use crate::store::{Store, StoreError};

/// Most samples one answer without `step` may hold: beyond this the answer
/// would be hundreds of megabytes; sums per bucket say the same in little.
pub const MAX_SAMPLES: usize = 1_000_000;

/// A bucket width in whole seconds, checked: at least a minute (samples are
/// taken once per watchdog interval), at most a year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step(u32);

impl Step {
    pub const MIN: u32 = 60;
    pub const MAX: u32 = 366 * 86400;
    /// The hourly sums' buckets.
    pub const HOUR: Step = Step(3600);

    pub fn parse(s: &str) -> Result<Step, String> {
        s.parse::<u32>().ok().filter(|n| (Self::MIN..=Self::MAX).contains(n) && !s.starts_with('+')).map(Step).ok_or_else(|| {
            format!(
                "`step` must be whole seconds from {} to {} (e.g. step=3600 for hourly sums), not {:?}",
                Self::MIN,
                Self::MAX,
                s.chars().take(40).collect::<String>()
            )
        })
    }

    pub fn secs(self) -> i64 {
        i64::from(self.0)
    }

    /// The end of the bucket `time` falls in: buckets are `(K - step, K]`
    /// with K a multiple of the step, as a sample's time is the end of the
    /// interval it measured.
    pub fn bucket_of(self, time: i64) -> i64 {
        // Saturating: a time near i64::MAX (a hostile `end=`) must not overflow.
        time.saturating_add(self.secs() - 1).div_euclid(self.secs()) * self.secs()
    }
}

/// What traffic.json was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficQuery {
    /// Exclusive; with a step, rounded down to a multiple of it.
    pub start: i64,
    /// Inclusive: the asked `end` (with a step, rounded up to a multiple of
    /// it, so the last bucket is whole), or `now` if that is earlier.
    pub stop: i64,
    pub step: Option<Step>,
}

impl TrafficQuery {
    /// The samples of `(start, end]` (`end` absent: up to `now`); `end`
    /// before `start` is refused (an empty range, `end` = `start`, is not).
    pub fn new(start: i64, end: Option<i64>, step: Option<Step>, now: i64) -> Result<TrafficQuery, String> {
        let stop = match end {
            Some(end) if end < start => {
                return Err(format!("`end` ({end}) is before `start` ({start}): ask for end >= start (unix seconds)"));
            }
            // Past `now` means `now`: clamped first, so no arithmetic sees a
            // far-future `end` (`end=9223372036854775806` overflowed here).
            Some(end) => {
                let end = end.min(now);
                step.map_or(end, |s| s.bucket_of(end)).min(now)
            }
            None => now,
        };
        Ok(TrafficQuery { start, stop, step })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("more than {limit} samples after start: ask for a later start, or for sums per bucket with step=SECONDS (e.g. step=3600)")]
    TooMany { limit: usize },
    #[error(
        "more than {limit} samples after start to sum per {step} s: ask for a later start, or for a step of whole hours (e.g. step=3600), summed from the hourly sums"
    )]
    TooManyForStep { limit: usize, step: u32 },
}

impl From<sqlx::Error> for QueryError {
    fn from(e: sqlx::Error) -> Self {
        QueryError::Store(e.into())
    }
}

/// The answer to `q`, in the contract's shape.
pub async fn traffic(store: &Store, q: &TrafficQuery) -> Result<TrafficInfo, QueryError> {
    match q.step {
        None => per_sample(store, q.start, q.stop).await,
        Some(step) => per_bucket(store, q.start, q.stop, step, MAX_SAMPLES).await,
    }
}

/// Every sample in `(start, stop]`.
async fn per_sample(store: &Store, start: i64, stop: i64) -> Result<TrafficInfo, QueryError> {
    per_sample_limited(store, start, stop, MAX_SAMPLES).await
}

/// The samples of `(?1, ?2]` as one text: per peer `ID NETWORK_KEY
/// PEER_KEY PORT time:rx:tx,time:rx:tx,...` (PORT `-` if none), peers
/// separated by `;`, packed by SQLite (the table is clustered by time: a
/// range read touches only its own pages). A row costs the driver a
/// channel message, a thread switch and an allocation whatever its size:
/// one row a sample made traffic.json of the last 5 minutes of 10,000 peers
/// (60,000 samples) 110-150 ms, mostly thread switches and malloc; one row
/// a peer (and the keys looked up in as many again) about 100 ms.
const SAMPLES: &str = "SELECT group_concat(line, ';') FROM (SELECT s.peer || ' ' || p.network_key || ' ' || p.peer_key || ' ' \
     || ifnull(p.network, '-') || ' ' || group_concat(s.time || ':' || s.rx || ':' || s.tx) AS line \
     FROM traffic_samples s JOIN traffic_peers p ON p.id = s.peer WHERE s.time > ?1 AND s.time <= ?2 GROUP BY s.peer)";

/// The hourly sums of `(?1, ?2]` (whole hours) packed as [`SAMPLES`].
const HOURLY: &str = "SELECT group_concat(line, ';') FROM (SELECT h.peer || ' ' || p.network_key || ' ' || p.peer_key || ' ' \
     || ifnull(p.network, '-') || ' ' || group_concat(h.entry) AS line FROM traffic_hourly h \
     JOIN traffic_peers p ON p.id = h.peer WHERE h.hour > ?1 AND h.hour <= (?2 + 3599) / 3600 * 3600 GROUP BY h.peer)";

/// Whether more than `limit` samples are in `(start, stop]`. Counting stops
/// past the limit and reads no row out: too big a read is refused quickly.
async fn over_limit(store: &Store, start: i64, stop: i64, limit: usize) -> Result<bool, QueryError> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM (SELECT 1 FROM traffic_samples WHERE time > ?1 AND time <= ?2 LIMIT ?3)")
        .bind(start)
        .bind(stop)
        .bind(limit as i64 + 1)
        .fetch_one(&store.pool)
        .await?;
    Ok(count as usize > limit)
}

async fn per_sample_limited(store: &Store, start: i64, stop: i64, limit: usize) -> Result<TrafficInfo, QueryError> {
    if over_limit(store, start, stop, limit).await? {
        return Err(QueryError::TooMany { limit });
    }
    let mut info = TrafficInfo { start_time: start, stop_time: stop, ..Default::default() };
    let devices = read_rows(store, start, stop, limit, |t| t).await?.ok_or(QueryError::TooMany { limit })?;
    add_devices(&mut info, devices);
    Ok(info)
}

/// Sums per bucket: from the hourly sums when the step is whole hours,
/// else from the samples (every one of them read, so at most `limit`, as
/// without a step); each peer's rows are put in their buckets here.
async fn per_bucket(store: &Store, start: i64, stop: i64, step: Step, limit: usize) -> Result<TrafficInfo, QueryError> {
    let from = start.div_euclid(step.secs()) * step.secs();
    let devices = if step.secs() % 3600 == 0 {
        read_hourly(store, from, stop, |t| step.bucket_of(t)).await?
    } else if over_limit(store, from, stop, limit).await? {
        return Err(QueryError::TooManyForStep { limit, step: step.0 });
    } else {
        read_rows(store, from, stop, limit, |t| step.bucket_of(t)).await?.ok_or(QueryError::TooManyForStep { limit, step: step.0 })?
    };
    let mut info = TrafficInfo { start_time: from, stop_time: stop, step: Some(step.0), ..Default::default() };
    add_devices(&mut info, devices);
    Ok(info)
}

/// One peer's rows summed by key (a sample's time or its bucket).
#[derive(Default)]
struct PeerRows {
    traffic: Traffic,
    times: BTreeMap<i64, Traffic>,
    /// Its network's key, its own key and its network's port.
    keys: (String, String, Option<i64>),
}

/// Streams the samples of `(from, stop]` into sums per peer id, each
/// sample's time mapped by `key`. `None` when more than `limit` came.
async fn read_rows(
    store: &Store,
    from: i64,
    stop: i64,
    limit: usize,
    key: impl Fn(i64) -> i64,
) -> Result<Option<HashMap<i64, PeerRows>>, QueryError> {
    let packed: Option<String> = sqlx::query_scalar(SAMPLES).bind(from).bind(stop).fetch_one(&store.pool).await?;
    let (peers, count) = unpack(packed.as_deref().unwrap_or_default(), &key)?;
    Ok((count <= limit).then_some(peers))
}

/// The hourly sums of `(from, stop]` (whole hours) by peer, each hour
/// mapped by `key`.
async fn read_hourly(store: &Store, from: i64, stop: i64, key: impl Fn(i64) -> i64) -> Result<HashMap<i64, PeerRows>, QueryError> {
    let packed: Option<String> = sqlx::query_scalar(HOURLY).bind(from).bind(stop).fetch_one(&store.pool).await?;
    Ok(unpack(packed.as_deref().unwrap_or_default(), &key)?.0)
}

/// The peers of a packed text (see [`SAMPLES`]) with their sums, each time
/// mapped by `key`, and how many entries there were.
fn unpack(packed: &str, key: &impl Fn(i64) -> i64) -> Result<(HashMap<i64, PeerRows>, usize), QueryError> {
    let corrupt =
        |what: &str| QueryError::Store(StoreError::Corrupt(format!("traffic entry {:?}", what.chars().take(200).collect::<String>())));
    let mut peers: HashMap<i64, PeerRows> = HashMap::new();
    let mut count = 0;
    for line in packed.split(';').filter(|l| !l.is_empty()) {
        let mut f = line.split(' ');
        let (Some(id), Some(network), Some(peer), Some(port), Some(entries), None) =
            (f.next(), f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            return Err(corrupt(line));
        };
        let id: i64 = id.parse().map_err(|_| corrupt(line))?;
        let port = if port == "-" { None } else { Some(port.parse::<i64>().map_err(|_| corrupt(line))?) };
        let p = peers.entry(id).or_default();
        p.keys = (network.to_string(), peer.to_string(), port);
        for entry in entries.split(',') {
            let mut f = entry.split(':').map(|x| x.parse::<i64>());
            let (Some(Ok(time)), Some(Ok(rx)), Some(Ok(tx))) = (f.next(), f.next(), f.next()) else {
                return Err(corrupt(entry));
            };
            let t = Traffic { rx, tx };
            add(&mut p.traffic, &t);
            add(p.times.entry(key(time)).or_default(), &t);
            count += 1;
        }
    }
    Ok((peers, count))
}

/// Puts each peer's sums under its network and public key, in id order (a
/// network's `port` is that of its first peer that has one).
fn add_devices(info: &mut TrafficInfo, devices: HashMap<i64, PeerRows>) {
    let mut devices: Vec<(i64, PeerRows)> = devices.into_iter().collect();
    devices.sort_unstable_by_key(|(id, _)| *id);
    for (_, rows) in devices {
        let (network, peer, port) = rows.keys;
        let device = DeviceTraffic { traffic: rows.traffic, times: rows.times.into_iter().map(|(k, t)| (k.to_string(), t)).collect() };
        add(&mut info.traffic, &device.traffic);
        let n = info.networks.entry(network).or_default();
        n.port = n.port.or(port.and_then(|p| u16::try_from(p).ok()));
        add(&mut n.traffic, &device.traffic);
        n.devices.insert(peer, device);
    }
}

fn add(sum: &mut Traffic, t: &Traffic) {
    sum.rx += t.rx;
    sum.tx += t.tx;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::traffic::{Reading, prune, store_tick};

    /// The packed text as SQLite gives it: peers with their keys, port (or
    /// `-`) and entries; times mapped by the key function; anything else is
    /// a corrupt store, named.
    #[test]
    fn a_packed_text_unpacks_into_peers_and_entries() {
        let (peers, count) = unpack("7 NK PA 51820 60:10:1,120:5:0;9 NK PB - 60:1:2", &|t| t / 60).unwrap();
        assert_eq!(count, 3);
        let a = &peers[&7];
        assert_eq!(a.keys, ("NK".to_string(), "PA".to_string(), Some(51820)));
        assert_eq!((a.traffic.rx, a.traffic.tx), (15, 1));
        assert_eq!(a.times.keys().copied().collect::<Vec<_>>(), [1, 2], "times mapped by the key");
        assert_eq!(peers[&9].keys.2, None, "no port");
        assert!(unpack("", &|t| t).unwrap().0.is_empty());
        for bad in ["7 NK PA 51820", "7 NK PA x 60:1:1", "x NK PA - 60:1:1", "7 NK PA - 60:1", "7 NK PA - 60:1:1 extra"] {
            assert!(matches!(unpack(bad, &|t| t), Err(QueryError::Store(StoreError::Corrupt(_)))), "{bad}");
        }
    }

    fn reading(peer: &str, rx: u64, tx: u64) -> Reading {
        Reading { network: "51820".into(), network_key: "N".into(), peer_key: peer.into(), epoch: 1, rx, tx }
    }

    /// Two peers polled every minute for `minutes` from `t0`, each tick
    /// adding 10 (a) and 1 (b) bytes received.
    async fn minutes(store: &Store, t0: i64, minutes: i64) {
        let read = ["51820".to_string()];
        for m in 0..=minutes {
            let r = vec![reading("a", 10 * m as u64, 0), reading("b", m as u64, 7)];
            store_tick(store, &read, true, r, t0 + 60 * m, Duration::from_secs(10 * 86400)).await.unwrap();
        }
    }

    async fn query(store: &Store, start: i64, stop: i64, step: Option<u32>) -> TrafficInfo {
        traffic(store, &TrafficQuery { start, stop, step: step.map(Step) }).await.unwrap()
    }

    #[tokio::test]
    async fn buckets_sum_the_same_bytes_as_the_samples() {
        let store = Store::open(None).await.unwrap();
        let t0 = 1_700_000_000 - 1_700_000_000 % 86400;
        minutes(&store, t0, 180).await;
        let all = query(&store, t0, t0 + 4 * 3600, None).await;
        assert_eq!(all.traffic, Traffic { rx: 1800 + 180, tx: 0 }, "b's 7 tx bytes were its first reading, at t0 (not after start)");
        assert_eq!(all.networks["N"].devices["a"].times.len(), 180);
        for step in [3600, 1800, 600] {
            let b = query(&store, t0, t0 + 4 * 3600, Some(step)).await;
            assert_eq!((b.traffic.clone(), b.step, b.start_time), (all.traffic.clone(), Some(step), t0), "step {step}");
            let a = &b.networks["N"].devices["a"];
            assert_eq!(a.times.len() as u32, 3 * 3600 / step, "step {step}: {:?}", a.times.keys());
            let first = format!("{}", t0 + i64::from(step));
            assert_eq!(a.times[&first].rx, 10 * i64::from(step) / 60, "step {step}: the bucket ending at {first}");
        }
        // A start inside an hour is rounded down to the bucket it is in.
        let b = query(&store, t0 + 3600 + 120, t0 + 4 * 3600, Some(3600)).await;
        assert_eq!(b.start_time, t0 + 3600);
        assert_eq!(b.networks["N"].devices["a"].traffic.rx, 1200);
        let raw = query(&store, t0 + 3600 + 120, t0 + 4 * 3600, None).await;
        assert_eq!(raw.networks["N"].devices["a"].traffic.rx, 1180, "without a step the start is exact");
    }

    #[tokio::test]
    async fn too_many_samples_without_a_step_is_an_error_not_a_huge_answer() {
        let store = Store::open(None).await.unwrap();
        minutes(&store, 1_000_000, 3).await;
        let err = per_sample_limited(&store, 0, i64::MAX, 6).await.unwrap_err();
        assert!(err.to_string().contains("more than 6 samples") && err.to_string().contains("step="), "{err}");
        assert!(per_sample_limited(&store, 0, i64::MAX, 7).await.is_ok(), "b's first tick, then 3 ticks x 2 peers");
    }

    /// Buckets summed from the samples (a step that is not whole hours) read
    /// every sample: the same cap; whole hours come from the hourly sums.
    #[tokio::test]
    async fn too_many_samples_for_a_step_of_minutes_is_an_error_too() {
        let store = Store::open(None).await.unwrap();
        minutes(&store, 1_000_000, 3).await;
        let err = per_bucket(&store, 0, i64::MAX, Step(60), 6).await.unwrap_err();
        assert!(err.to_string().contains("more than 6 samples") && err.to_string().contains("step=3600"), "{err}");
        assert!(per_bucket(&store, 0, i64::MAX, Step(60), 7).await.is_ok());
        assert!(per_bucket(&store, 0, i64::MAX, Step(3600), 6).await.is_ok(), "hourly sums are not samples");
    }

    #[tokio::test]
    async fn pruning_goes_in_batches_and_forgets_idle_peers() {
        let store = Store::open(None).await.unwrap();
        let read = ["51820".to_string()];
        let many = |m: u64| (0..3000).map(|p| reading(&format!("p{p}"), m, 0)).collect::<Vec<_>>();
        let keep = Duration::from_secs(10 * 86400);
        for m in 1..=4 {
            store_tick(&store, &read, true, many(m), 3600 * m as i64, keep).await.unwrap();
        }
        let count = |sql: &'static str| {
            let pool = store.pool.clone();
            async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap() }
        };
        assert_eq!(count("SELECT COUNT(*) FROM traffic_samples").await, 12000);
        assert_eq!(prune(&store, 3600 * 3).await.unwrap(), 2 * 6000, "two hours of samples and their hourly sums");
        assert_eq!(count("SELECT MIN(time) FROM traffic_samples").await, 3600 * 3);
        assert_eq!(count("SELECT COUNT(*) FROM traffic_peers").await, 3000, "peers with samples left stay");
        assert_eq!(prune(&store, 3600 * 10).await.unwrap(), 2 * 6000);
        assert_eq!(count("SELECT COUNT(*) FROM traffic_peers").await, 0);
    }

    #[test]
    fn steps_are_checked() {
        assert_eq!(Step::parse("3600"), Ok(Step(3600)));
        assert_eq!(Step::parse("60"), Ok(Step(60)));
        for bad in ["", "0", "59", "-60", "+60", "1.5", "abc", "31622401", "99999999999999999999"] {
            let e = Step::parse(bad).unwrap_err();
            assert!(e.contains("whole seconds from 60 to 31622400"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_far_future_end_is_now_and_overflows_nothing() {
        let minute = Step::parse("60").unwrap();
        let q = TrafficQuery::new(0, Some(i64::MAX - 1), Some(minute), 1_000_000).unwrap();
        assert_eq!(q.stop, 1_000_000);
        let q = TrafficQuery::new(0, Some(i64::MAX), None, 1_000_000).unwrap();
        assert_eq!(q.stop, 1_000_000);
        assert_eq!(minute.bucket_of(i64::MAX), i64::MAX / 60 * 60, "saturates instead of overflowing");
    }

    #[test]
    fn buckets_end_at_multiples_of_the_step() {
        let s = Step(3600);
        assert_eq!(s.bucket_of(3600), 3600, "a sample at the end of an hour belongs to that hour");
        assert_eq!(s.bucket_of(3601), 7200);
        assert_eq!(s.bucket_of(1), 3600);
    }
}
