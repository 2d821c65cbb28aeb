//! The event stream behind `GET /api/v1/events`: what happened, as it
//! happens, for clients that would rather be told than poll.
//!
//! [`Events`] numbers each event and keeps the last `capacity` of them
//! (`--events-kept`), so a client that lost its connection resumes with
//! `Last-Event-ID` without a gap. With the daemon's database (see
//! [`durable`]) each event is written before it is sent, so the kept events
//! and the numbering survive a restart, and an id a client has seen is
//! never given again. Publishing never waits: a writer task stores events in
//! batches, live subscribers get them through a broadcast channel, and one
//! that falls more than the kept count behind is dropped (its stream ends;
//! it may resume) instead of holding up the reconciler. [`PeerWatch`] turns
//! the looks the daemon takes anyway (drift checks, status reads) into peer
//! connect/disconnect events.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, broadcast};

use crate::model::events::{EventsLostEvent, PeerEvent};
use crate::observed::ObservedNetwork;
use crate::types::PublicKey;

pub mod durable;

/// How many events are kept by default (`--events-kept`), and how far a
/// live subscriber may fall behind before it is dropped.
pub const BACKLOG: usize = 10_000;

/// One event as sent: its id, its name (the SSE `event:`), its data as
/// JSON, and when it was published (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: u64,
    pub name: Cow<'static, str>,
    pub data: String,
    pub at: i64,
}

struct Log {
    next_id: u64,
    /// Published, waiting for the writer (written first, then sent).
    pending: Vec<Arc<Event>>,
    /// Sent: the last `capacity`, oldest first.
    kept: VecDeque<Arc<Event>>,
    /// Every event with an id up to this one that is not kept is gone.
    gone_through: u64,
}

/// The numbered events: the kept ones, those waiting to be written, and
/// the live subscribers.
pub struct Events {
    log: Mutex<Log>,
    live: broadcast::Sender<Arc<Event>>,
    capacity: usize,
    /// A writer stores each event before it is sent (see [`durable`]).
    durable: AtomicBool,
    /// Wakes the writer: events are pending, or the daemon stops.
    wake: Notify,
    closed: AtomicBool,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What a new subscriber gets: whether events it has not seen are gone,
/// the missed events it asked for, then the live ones (none lost or
/// repeated between the two).
pub struct Subscription {
    pub lost: Option<EventsLostEvent>,
    pub missed: Vec<Arc<Event>>,
    pub live: broadcast::Receiver<Arc<Event>>,
}

impl Events {
    /// Events in memory alone, numbered from `first_id`.
    pub fn new(capacity: usize, first_id: u64) -> Self {
        let first_id = first_id.max(1);
        Self::with(capacity, Log { next_id: first_id, pending: Vec::new(), kept: VecDeque::new(), gone_through: first_id - 1 })
    }

    fn with(capacity: usize, log: Log) -> Self {
        let capacity = capacity.max(1);
        Events {
            log: Mutex::new(log),
            live: broadcast::channel(capacity).0,
            capacity,
            durable: AtomicBool::new(false),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            writer: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers one event and hands it to the writer (or sends it, in
    /// memory alone); never waits.
    pub fn publish(&self, name: &'static str, data: &impl Serialize) {
        let data = match serde_json::to_string(data) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(event = name, error = %e, "cannot encode an event");
                return;
            }
        };
        let mut log = self.lock();
        let event = Arc::new(Event { id: log.next_id, name: Cow::Borrowed(name), data, at: crate::clock::now_unix() });
        log.next_id += 1;
        if self.durable.load(Ordering::Acquire) {
            log.pending.push(event);
            drop(log);
            self.wake.notify_one();
        } else {
            self.send(&mut log, vec![event]);
        }
    }

    /// Keeps and sends `events` (in id order), dropping the oldest kept
    /// beyond the capacity. Sent under the lock, so a subscription taken
    /// meanwhile sees each event exactly once.
    fn send(&self, log: &mut Log, events: Vec<Arc<Event>>) {
        for event in events {
            log.kept.push_back(event.clone());
            // No subscriber is not an error.
            let _ = self.live.send(event);
        }
        while log.kept.len() > self.capacity {
            if let Some(old) = log.kept.pop_front() {
                log.gone_through = log.gone_through.max(old.id);
            }
        }
    }

    /// The writer's side: the pending events, and what `gone_through` will
    /// be once they are kept (the oldest beyond the capacity dropped).
    fn take_pending(&self) -> (Vec<Arc<Event>>, u64) {
        let mut log = self.lock();
        let batch = std::mem::take(&mut log.pending);
        let excess = (log.kept.len() + batch.len()).saturating_sub(self.capacity);
        let gone = match excess {
            0 => log.gone_through,
            n => log.kept.iter().chain(batch.iter()).nth(n - 1).map_or(log.gone_through, |e| e.id.max(log.gone_through)),
        };
        (batch, gone)
    }

    /// The writer's side: `batch` was written (or could not be): send it.
    fn sent(&self, batch: Vec<Arc<Event>>) {
        if !batch.is_empty() {
            let mut log = self.lock();
            self.send(&mut log, batch);
        }
    }

    /// A subscription; with `after` (a client's `Last-Event-ID`), first the
    /// kept events newer than it. Resuming is exact when `after` is a kept
    /// event (or the last one gone); otherwise events the client has not
    /// seen are gone, or the id is not one of ours: it is told so
    /// (`lost`) and gets every kept event.
    pub fn subscribe(&self, after: Option<u64>) -> Subscription {
        let log = self.lock();
        let (lost, missed) = match after {
            None => (None, Vec::new()),
            Some(id) if id == log.gone_through || log.kept.binary_search_by_key(&id, |e| e.id).is_ok() => {
                (None, log.kept.iter().filter(|e| e.id > id).cloned().collect())
            }
            Some(id) => {
                let lost = EventsLostEvent { last_event_id: id, first_kept_id: log.kept.front().map(|e| e.id) };
                (Some(lost), log.kept.iter().cloned().collect())
            }
        };
        Subscription { lost, missed, live: self.live.subscribe() }
    }

    /// Stops the writer once it has written what is pending (the daemon
    /// stops); nothing is published after this.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }
}

/// What is known of one network's peers.
#[derive(Default)]
struct NetworkPeers {
    observed_at: i64,
    public_key: Option<String>,
    /// The connected peers, with their endpoints.
    connected: BTreeMap<PublicKey, Option<SocketAddr>>,
}

/// Which peers are connected: a handshake newer than the threshold
/// (WireGuard's reject-after time, 180 s, by default).
pub struct PeerWatch {
    threshold: i64,
    networks: Mutex<BTreeMap<u16, NetworkPeers>>,
}

impl PeerWatch {
    pub fn new(threshold: Duration) -> Self {
        PeerWatch { threshold: threshold.as_secs().max(1) as i64, networks: Mutex::new(BTreeMap::new()) }
    }

    /// Takes a look at network `port` (`None`: it is not there) and says
    /// which peers connected or disconnected since the last one. An older
    /// look than one already taken, or one that could not read WireGuard,
    /// changes nothing.
    pub fn observe(&self, port: u16, observed_at: i64, network: Option<&ObservedNetwork>) -> Vec<(bool, PeerEvent)> {
        let mut networks = self.networks.lock().unwrap_or_else(|e| e.into_inner());
        let known = networks.entry(port).or_default();
        if observed_at < known.observed_at {
            return Vec::new();
        }
        let dump = match network {
            Some(n) => match &n.wg {
                Some(dump) => Some(dump),
                // An interface whose state could not be read, or a network
                // that could not be read at all: nothing is known.
                None if n.wg_link.is_some() || !n.problems.is_empty() => return Vec::new(),
                None => None,
            },
            None => None,
        };
        known.observed_at = observed_at;
        if let Some(key) = dump.and_then(|d| d.public_key) {
            known.public_key = Some(key.to_string());
        }
        let now: BTreeMap<PublicKey, Option<SocketAddr>> = dump
            .map(|d| {
                let fresh = |handshake: i64| handshake > 0 && observed_at - handshake < self.threshold;
                d.peers.iter().filter(|(_, p)| fresh(p.latest_handshake)).map(|(k, p)| (*k, p.endpoint)).collect()
            })
            .unwrap_or_default();
        let handshake = |k: &PublicKey| dump.and_then(|d| d.peers.get(k)).map(|p| p.latest_handshake).filter(|h| *h > 0);
        let event = |k: &PublicKey, endpoint: &Option<SocketAddr>| PeerEvent {
            network: port,
            network_public_key: known.public_key.clone(),
            peer_public_key: k.to_string(),
            endpoint: endpoint.map(|e| e.to_string()),
            latest_handshake: handshake(k),
        };
        let mut out: Vec<(bool, PeerEvent)> =
            known.connected.iter().filter(|(k, _)| !now.contains_key(k)).map(|(k, e)| (false, event(k, e))).collect();
        out.extend(now.iter().filter(|(k, _)| !known.connected.contains_key(k)).map(|(k, e)| (true, event(k, e))));
        known.connected = now;
        if network.is_none() {
            networks.remove(&port);
        }
        out
    }
}

#[cfg(test)]
mod tests;
