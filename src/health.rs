//! Upstream health: what the checks last found of every upstream of every
//! route, kept in memory (status.json answers from it, no check runs for a
//! request). The reconciler lists the routes after each pass ([`Health::sync`]);
//! the check loop (`checks`) asks for the upstreams to check
//! ([`Health::targets`]) and hands back each round's outcomes
//! ([`Health::record`]), which say which events to send.
//!
//! Events: an upstream's first check sends `upstream_down` if it fails and
//! nothing if it passes (a start or a new network with healthy upstreams is
//! silent); after that, one event per change. So every `upstream_up`
//! follows an `upstream_down` of the same upstream.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::metrics::Metrics;
use crate::model::events::UpstreamEvent;
use crate::model::{RouteStatus, UpstreamHealth};
use crate::spec::{Desired, NetworkSpec};
use crate::system::kernel::probe::{Outcome, Probe};
use crate::types::Scheme;

/// One route's upstreams, and whether they are checked (not `udp://`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RouteBook {
    checked: bool,
    upstreams: BTreeMap<SocketAddrV4, UpstreamHealth>,
}

/// The routes of a network: `(key, checked, upstreams)`, keys as in its
/// `proxy` (`https://HOST`, `http://HOST`, `tcp://PORT`, `udp://PORT`).
pub fn routes_of(spec: &NetworkSpec) -> Vec<(String, bool, &[SocketAddrV4])> {
    let mut out = Vec::new();
    for (scheme, map) in [(Scheme::Https, &spec.https), (Scheme::Http, &spec.http)] {
        out.extend(map.iter().map(|(host, ups)| (format!("{}://{host}", scheme.name()), true, &ups[..])));
    }
    out.extend(spec.tcp.iter().map(|(port, r)| (format!("tcp://{port}"), true, &r.upstreams[..])));
    out.extend(spec.udp.iter().map(|(port, r)| (format!("udp://{port}"), false, &r.upstreams[..])));
    out
}

/// An upstream's state after a check, and the event it calls for
/// (`Some(true)`: `upstream_up`, `Some(false)`: `upstream_down`).
pub fn next_state(before: &UpstreamHealth, outcome: &Outcome, now: i64) -> (UpstreamHealth, Option<bool>) {
    let healthy = outcome.is_ok();
    let last_error = outcome.as_ref().err().cloned();
    match before.healthy {
        Some(was) if was == healthy => (UpstreamHealth { healthy: Some(healthy), since: before.since, last_error }, None),
        // The first check: only a failure is news.
        None => (UpstreamHealth { healthy: Some(healthy), since: now, last_error }, (!healthy).then_some(false)),
        Some(_) => (UpstreamHealth { healthy: Some(healthy), since: now, last_error }, Some(healthy)),
    }
}

/// The health of every route's upstreams, by network.
pub struct Health {
    /// How often the checks run; zero: never.
    pub interval: Duration,
    pub probe: Arc<dyn Probe>,
    book: RwLock<BTreeMap<u16, BTreeMap<String, RouteBook>>>,
    /// The desired state last listed (a pass that changed nothing lists nothing).
    synced: Mutex<Option<Arc<Desired>>>,
}

impl Health {
    pub fn new(interval: Duration, probe: Arc<dyn Probe>) -> Self {
        Health { interval, probe, book: RwLock::default(), synced: Mutex::default() }
    }

    /// How long a connect may take: half the interval, within 0.5-5 s (a
    /// first connect may wait for a WireGuard handshake).
    pub fn timeout(&self) -> Duration {
        (self.interval / 2).clamp(Duration::from_millis(500), Duration::from_secs(5))
    }

    /// Lists the routes of `desired` (after a pass applied it): new
    /// upstreams are unchecked (`healthy: null`) since `now`; those no
    /// longer desired, and their series, go.
    pub fn sync(&self, desired: &Arc<Desired>, metrics: &Metrics, now: i64) {
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        if synced.as_ref().is_some_and(|s| Arc::ptr_eq(s, desired)) {
            return;
        }
        *synced = Some(desired.clone());
        let mut book = self.book.write().unwrap_or_else(|e| e.into_inner());
        let mut fresh: BTreeMap<u16, BTreeMap<String, RouteBook>> = BTreeMap::new();
        for (port, spec) in &desired.networks {
            let mut before = book.remove(port).unwrap_or_default();
            let routes = fresh.entry(*port).or_default();
            for (key, checked, upstreams) in routes_of(spec) {
                let mut old = before.remove(&key).filter(|r| r.checked == checked).map(|r| r.upstreams).unwrap_or_default();
                let unchecked = || UpstreamHealth { healthy: None, since: now, last_error: None };
                let upstreams = upstreams.iter().map(|u| (*u, old.remove(u).unwrap_or_else(unchecked))).collect();
                forget_series(metrics, *port, &key, old.keys());
                routes.insert(key, RouteBook { checked, upstreams });
            }
            for (key, r) in before {
                forget_series(metrics, *port, &key, r.upstreams.keys());
            }
        }
        for (port, routes) in std::mem::take(&mut *book) {
            for (key, r) in routes {
                forget_series(metrics, port, &key, r.upstreams.keys());
            }
        }
        *book = fresh;
    }

    /// The upstreams to check, by network, each once (several routes may
    /// share one).
    pub fn targets(&self) -> Vec<(u16, Vec<SocketAddrV4>)> {
        let book = self.book.read().unwrap_or_else(|e| e.into_inner());
        let distinct = |routes: &BTreeMap<String, RouteBook>| {
            let set: std::collections::BTreeSet<SocketAddrV4> =
                routes.values().filter(|r| r.checked).flat_map(|r| r.upstreams.keys().copied()).collect();
            set.into_iter().collect::<Vec<_>>()
        };
        book.iter().map(|(port, routes)| (*port, distinct(routes))).filter(|(_, ups)| !ups.is_empty()).collect()
    }

    /// Records a round's outcomes for network `port` (ignored if it was
    /// removed meanwhile) and returns the events they call for, by name.
    pub fn record(
        &self,
        port: u16,
        outcomes: &BTreeMap<SocketAddrV4, Outcome>,
        now: i64,
        metrics: &Metrics,
    ) -> Vec<(&'static str, UpstreamEvent)> {
        let mut book = self.book.write().unwrap_or_else(|e| e.into_inner());
        let Some(routes) = book.get_mut(&port) else { return Vec::new() };
        let mut events = Vec::new();
        for (key, route) in routes.iter_mut().filter(|(_, r)| r.checked) {
            for (addr, state) in route.upstreams.iter_mut() {
                let Some(outcome) = outcomes.get(addr) else { continue };
                let (next, change) = next_state(state, outcome, now);
                metrics.set_upstream_up(port, key, &addr.to_string(), next.healthy == Some(true));
                if let Some(up) = change {
                    let event =
                        UpstreamEvent { network: port, route: key.clone(), upstream: addr.to_string(), error: next.last_error.clone() };
                    events.push((if up { "upstream_up" } else { "upstream_down" }, event));
                }
                *state = next;
            }
        }
        events
    }

    /// status.json's `routes` of network `port` (empty if not desired).
    pub fn routes(&self, port: u16) -> BTreeMap<String, RouteStatus> {
        let book = self.book.read().unwrap_or_else(|e| e.into_inner());
        let Some(routes) = book.get(&port) else { return BTreeMap::new() };
        let status = |r: &RouteBook| RouteStatus {
            upstreams: r.upstreams.iter().map(|(a, h)| (a.to_string(), h.clone())).collect(),
            ..Default::default()
        };
        routes.iter().map(|(key, r)| (key.clone(), status(r))).collect()
    }
}

fn forget_series<'a>(metrics: &Metrics, port: u16, route: &str, upstreams: impl Iterator<Item = &'a SocketAddrV4>) {
    for u in upstreams {
        metrics.forget_upstream(port, route, &u.to_string());
    }
}

#[cfg(test)]
mod tests;
