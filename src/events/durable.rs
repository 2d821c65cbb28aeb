//! The kept events in the database: loaded at start, written by one
//! task in batches before they are sent.
//!
//! Intent before effect: a client only ever sees an event that is stored,
//! so after a restart (or a crash) every id it holds is either kept or
//! known to be gone, and ids are never given twice. The reconciler never
//! waits: it only appends to the pending list. A write that fails (a full
//! disk) does not hold events back: they are sent at once, kept in memory,
//! and written again at most every [`RETRY`] until the database takes them.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::{QueryBuilder, Row};

use super::{Event, Events, Log};
use crate::store::{Store, StoreError};

/// How long after a failed write the next one is tried.
pub const RETRY: Duration = Duration::from_secs(5);

/// Rows per multi-row INSERT (4 values each).
const CHUNK: usize = 200;

/// What the database holds of the events.
#[derive(Debug, Default)]
pub struct Stored {
    /// The last kept events, oldest first.
    pub events: Vec<Event>,
    /// `None`: events were never written to this database.
    pub gone_through: Option<u64>,
    /// The highest id ever written (also of events dropped since).
    pub max_id: u64,
}

/// The last `capacity` events kept in the database, and which are gone:
/// those beyond `capacity` (a smaller `--events-kept` than before) too.
pub async fn load(store: &Store, capacity: usize) -> Result<Stored, StoreError> {
    let rows = sqlx::query("SELECT id, at, name, data FROM (SELECT * FROM events ORDER BY id DESC LIMIT ?) ORDER BY id")
        .bind(capacity as i64)
        .fetch_all(&store.pool)
        .await?;
    let mut events = Vec::with_capacity(rows.len());
    for r in rows {
        let id: i64 = r.try_get(0)?;
        events.push(Event { id: id as u64, at: r.try_get(1)?, name: Cow::Owned(r.try_get(2)?), data: r.try_get(3)? });
    }
    let log = sqlx::query("SELECT gone_through, max_id FROM event_log WHERE id = 1").fetch_optional(&store.pool).await?;
    let (mut gone_through, max_id) = match log {
        Some(r) => (Some(r.try_get::<i64, _>(0)? as u64), r.try_get::<i64, _>(1)? as u64),
        None => (None, 0),
    };
    let first = events.first().map(|e| e.id);
    if let (Some(gone), Some(first)) = (gone_through.as_mut(), first) {
        let older: Option<i64> =
            sqlx::query_scalar("SELECT MAX(id) FROM events WHERE id < ?").bind(first as i64).fetch_one(&store.pool).await?;
        *gone = (*gone).max(older.map_or(0, |o| o as u64));
    }
    let max_id = max_id.max(events.last().map_or(0, |e| e.id));
    Ok(Stored { events, gone_through, max_id })
}

/// Writes `events` and forgets every event up to `gone_through`, in one
/// transaction (written again after a failure: the same rows replace themselves).
pub async fn save(store: &Store, events: &[Arc<Event>], gone_through: u64) -> Result<(), StoreError> {
    let mut tx = store.pool.begin_with("BEGIN IMMEDIATE").await?;
    for chunk in events.chunks(CHUNK) {
        let mut q = QueryBuilder::new("INSERT OR REPLACE INTO events (id, at, name, data) ");
        q.push_values(chunk, |mut b, e| {
            b.push_bind(e.id as i64).push_bind(e.at).push_bind(e.name.as_ref()).push_bind(e.data.as_str());
        });
        q.build().execute(&mut *tx).await?;
    }
    sqlx::query("DELETE FROM events WHERE id <= ?").bind(gone_through as i64).execute(&mut *tx).await?;
    let max_id = events.iter().map(|e| e.id).max().unwrap_or(0);
    sqlx::query(
        "INSERT INTO event_log (id, gone_through, max_id) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET gone_through = max(gone_through, ?1), max_id = max(max_id, ?2)",
    )
    .bind(gone_through as i64)
    .bind(max_id as i64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

impl Events {
    /// The events kept in the database, continued: ids go on after the
    /// highest ever given (and never below `now_micros`, the start time in
    /// microseconds: an event sent while the database could not be written
    /// and lost with the process is not numbered again either). On a
    /// database that never held events, everything before is gone: a
    /// client resuming from an earlier run is told so. Each published event
    /// waits for [`Events::write`] to store it.
    pub fn resume(capacity: usize, stored: Stored, now_micros: u64) -> Self {
        let next_id = (stored.max_id + 1).max(now_micros).max(stored.gone_through.map_or(0, |g| g + 1)).max(1);
        let gone_through = stored.gone_through.unwrap_or(next_id - 1);
        let kept: VecDeque<Arc<Event>> = stored.events.into_iter().filter(|e| e.id > gone_through).map(Arc::new).collect();
        let events = Self::with(capacity, Log { next_id, pending: Vec::new(), kept, gone_through });
        events.durable.store(true, Ordering::Release);
        events
    }

    /// The task that writes published events, then sends them, until
    /// [`Events::close`]. `outcome` reports each write (`store_errors`);
    /// after a failed one the next is tried `retry` later ([`RETRY`]).
    pub async fn write(&self, store: &Store, retry: Duration, outcome: impl Fn(&Result<(), StoreError>)) {
        let mut unwritten: Vec<Arc<Event>> = Vec::new();
        let mut next_try = tokio::time::Instant::now();
        loop {
            let closing = self.closed.load(Ordering::Acquire);
            if !closing {
                let retry = async {
                    match unwritten.is_empty() {
                        true => std::future::pending().await,
                        false => tokio::time::sleep_until(next_try).await,
                    }
                };
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = retry => {}
                }
            }
            let closing = self.closed.load(Ordering::Acquire);
            let (batch, gone_through) = self.take_pending();
            unwritten.extend(batch.iter().cloned());
            unwritten.retain(|e| e.id > gone_through);
            if !unwritten.is_empty() && (closing || tokio::time::Instant::now() >= next_try) {
                let written = save(store, &unwritten, gone_through).await;
                outcome(&written);
                match written {
                    Ok(()) => unwritten.clear(),
                    Err(_) => next_try = tokio::time::Instant::now() + retry,
                }
            }
            self.sent(batch);
            if closing {
                return;
            }
        }
    }

    /// Keeps the writer's task, for [`Events::close`] to wait for.
    pub fn set_writer(&self, writer: tokio::task::JoinHandle<()>) {
        *self.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(writer);
    }
}
