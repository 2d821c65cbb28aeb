//! The event stream behind `GET /api/v1/events`: what happened, as it
//! happens, for clients that would rather be told than poll.
//!
//! [`Events`] numbers each event and keeps the last [`BACKLOG`] of them, so a
//! client that lost its connection resumes with `Last-Event-ID` without a
//! gap. Publishing never waits: live subscribers get events through a
//! broadcast channel, and one that falls more than the backlog behind is
//! dropped (its stream ends; it may resume from the backlog) instead of
//! holding up the reconciler. [`PeerWatch`] turns the looks the daemon takes
//! anyway (drift checks, status reads) into peer connect/disconnect events.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::model::events::PeerEvent;
use crate::observed::ObservedNetwork;
use crate::types::PublicKey;

/// How many events are kept for resuming, and how far a live subscriber
/// may fall behind before it is dropped.
pub const BACKLOG: usize = 1024;

/// One event as sent: its id, its name (the SSE `event:`), its data as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: u64,
    pub name: &'static str,
    pub data: String,
}

struct Backlog {
    next_id: u64,
    events: VecDeque<Arc<Event>>,
}

/// The numbered events: a bounded backlog and the live subscribers.
pub struct Events {
    backlog: Mutex<Backlog>,
    live: broadcast::Sender<Arc<Event>>,
    capacity: usize,
}

/// What a new subscriber gets: the missed events it asked for, then the
/// live ones (none lost or repeated between the two).
pub struct Subscription {
    pub missed: Vec<Arc<Event>>,
    pub live: broadcast::Receiver<Arc<Event>>,
}

impl Events {
    /// Ids start at the daemon's start time in microseconds, so they keep
    /// growing across restarts and a client's `Last-Event-ID` from before a
    /// restart does not hide the new run's events.
    pub fn new(capacity: usize, first_id: u64) -> Self {
        let capacity = capacity.max(1);
        let backlog = Backlog { next_id: first_id.max(1), events: VecDeque::with_capacity(capacity) };
        Events { backlog: Mutex::new(backlog), live: broadcast::channel(capacity).0, capacity }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers and sends one event; never waits for a subscriber.
    pub fn publish(&self, name: &'static str, data: &impl Serialize) {
        let data = match serde_json::to_string(data) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(event = name, error = %e, "cannot encode an event");
                return;
            }
        };
        let mut backlog = self.lock();
        let event = Arc::new(Event { id: backlog.next_id, name, data });
        backlog.next_id += 1;
        if backlog.events.len() == self.capacity {
            backlog.events.pop_front();
        }
        backlog.events.push_back(event.clone());
        // No subscriber is not an error. Sent under the lock, so a
        // subscription taken meanwhile sees each event exactly once.
        let _ = self.live.send(event);
    }

    /// A subscription; with `after`, first the kept events newer than it
    /// (all kept events if `after` is from the future, e.g. another run).
    pub fn subscribe(&self, after: Option<u64>) -> Subscription {
        let backlog = self.lock();
        let missed = match after {
            Some(id) if id < backlog.next_id => backlog.events.iter().filter(|e| e.id > id).cloned().collect(),
            Some(_) => backlog.events.iter().cloned().collect(),
            None => Vec::new(),
        };
        Subscription { missed, live: self.live.subscribe() }
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
