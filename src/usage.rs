//! Per-route usage: nginx sends one line per stream session and per HTTP
//! request, at its end, to a unix datagram socket the daemon owns (nginx's
//! `access_log syslog:server=unix:...`), with the route's name, the status
//! and the bytes each way. One datagram per connection costs no process and
//! no read of the system at all, whatever the number of routes; per-rule
//! counters (iptables, tc) would need a process or a netlink dump per read.
//!
//! Everything that arrives on the socket is untrusted: a datagram is parsed
//! to its exact form (bounded, no panic) and counted only for a route of
//! the desired state; anything else is counted as unknown and dropped.
//! Counters live in memory: they count since the daemon started.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::Metrics;
use crate::observed::ObservedNetwork;
use crate::render::REFUSED_UPSTREAM;
use crate::target::Targets;
use crate::types::{Hostname, ProxyKey, ProxyUrl, Scheme, Transport};

/// The syslog tag nginx puts before each line (`tag=` of `access_log syslog:`).
pub use crate::render::USAGE_TAG as TAG;
/// The largest datagram read; longer ones are cut and fail to parse.
pub const MAX_DATAGRAM: usize = 2048;

/// One session or request as nginx reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageLine {
    pub route: RouteRef,
    pub outcome: Outcome,
    /// Bytes from the client (toward the nodes).
    pub rx: u64,
    /// Bytes to the client.
    pub tx: u64,
}

/// What the gateway did with a session or request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Passed on (whatever the node or the upstream made of it).
    Passed,
    /// Refused by the route's `allow`/`deny`.
    Denied,
    /// Refused by the route's connection limits.
    Limited,
}

impl Outcome {
    /// A stream session's: nginx's stream statuses are its own (403: the
    /// access rules, 503: `limit_conn`); an HTTPS client a route refuses
    /// is sent to [`REFUSED_UPSTREAM`] (status 502).
    fn of_stream(status: u16, upstream: &str) -> Outcome {
        match status {
            403 => Outcome::Denied,
            503 => Outcome::Limited,
            _ if upstream == REFUSED_UPSTREAM => Outcome::Denied,
            _ => Outcome::Passed,
        }
    }

    /// An HTTP request's: a 403 or 503 is nginx's refusal only when no
    /// upstream was asked (`-`); otherwise it is the node's answer.
    fn of_http(status: u16, upstream: &str) -> Outcome {
        match (status, upstream) {
            (403, "-") => Outcome::Denied,
            (503, "-") => Outcome::Limited,
            _ => Outcome::Passed,
        }
    }
}

/// How a line names its route; the network comes from the desired state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteRef {
    /// By SNI name on the HTTPS listener.
    Https(Hostname),
    /// By the name of the server block that answered.
    Http(Hostname),
    /// By the raw port.
    Raw(Transport, u16),
}

/// Parses one datagram: `<PRI>TIMESTAMP gateway_usage: MESSAGE`, where the
/// message is one of the forms [`crate::render`] writes for nginx:
/// `s PROTOCOL PORT STATUS RX TX SNI UPSTREAM...` (a stream session; `-`
/// for what nginx leaves empty; an HTTPS route's hop writes `-` for the
/// port and its route's name for the SNI; the upstreams tried,
/// comma-separated, last) or `h HOST STATUS RX TX UPSTREAM...` (an HTTP
/// request). A session the HTTPS listener passed to a hop (its upstream
/// is a unix socket) is reported by the hop too and is skipped here:
/// `None`, as for everything not of that form.
pub fn parse_line(datagram: &[u8]) -> Option<UsageLine> {
    if datagram.len() > MAX_DATAGRAM || datagram.first() != Some(&b'<') {
        return None;
    }
    let text = std::str::from_utf8(datagram).ok()?;
    let (_, message) = text.split_once(&format!(" {TAG}: "))?;
    let words: Vec<&str> = message.trim_end_matches('\n').split(' ').collect();
    match words[..] {
        ["s", protocol, port, status, rx, tx, sni, ref upstream @ ..] if !upstream.is_empty() => {
            if upstream[0].starts_with("unix:") {
                return None;
            }
            let route = match (protocol, sni) {
                ("TCP", sni) if sni != "-" => RouteRef::Https(sni.parse().ok()?),
                ("TCP", _) => RouteRef::Raw(Transport::Tcp, number(port)?),
                ("UDP", _) => RouteRef::Raw(Transport::Udp, number(port)?),
                _ => return None,
            };
            let outcome = Outcome::of_stream(number(status)?, upstream[0]);
            Some(UsageLine { route, outcome, rx: number(rx)?, tx: number(tx)? })
        }
        ["h", host, status, rx, tx, ref upstream @ ..] if !upstream.is_empty() => {
            let outcome = Outcome::of_http(number(status)?, upstream[0]);
            Some(UsageLine { route: RouteRef::Http(host.parse().ok()?), outcome, rx: number(rx)?, tx: number(tx)? })
        }
        _ => None,
    }
}

/// A decimal number in its canonical form (no sign, no leading zero).
fn number<T: std::str::FromStr + ToString>(s: &str) -> Option<T> {
    let n: T = s.parse().ok()?;
    (n.to_string() == s).then_some(n)
}

pub use crate::metrics::RouteCounters;

/// Which network serves each route name, from the desired state, and the
/// DNAT ports each route's connections go to.
#[derive(Debug, Default)]
struct Index {
    routes: HashMap<RouteRef, (u16, String)>,
    ports: BTreeMap<(u16, String), Vec<(Transport, u16)>>,
}

/// The counters of every route, fed by the socket's reader.
#[derive(Debug, Default)]
pub struct Usage {
    index: Mutex<Index>,
    counters: Mutex<BTreeMap<(u16, String), RouteCounters>>,
    active: Mutex<BTreeMap<(u16, String), u64>>,
    /// Datagrams that did not parse or named no route of the desired state.
    pub unknown: AtomicU64,
}

impl Usage {
    /// Takes the routes of a newly validated desired state (its targets,
    /// whose DNAT ports tell each route's open connections apart): counters
    /// (and series) of routes that are gone are dropped, the others kept.
    pub fn set_routes(&self, targets: &Targets, metrics: &Metrics) {
        let mut routes = HashMap::new();
        let mut ports = BTreeMap::new();
        for target in targets.networks.values() {
            let spec = &target.spec;
            for (key, route_ports) in crate::render::tc::route_ports(spec, &target.dnat) {
                ports.insert((spec.port, key), route_ports);
            }
            let key = |k: ProxyKey| (spec.port, k.to_string());
            let url = |scheme, host: &Hostname| key(ProxyKey::Url(ProxyUrl { scheme, host: host.clone() }));
            for h in spec.https.keys() {
                routes.insert(RouteRef::Https(h.clone()), url(Scheme::Https, h));
            }
            for h in spec.http.keys() {
                routes.insert(RouteRef::Http(h.clone()), url(Scheme::Http, h));
            }
            for (t, p) in spec.raw_ports() {
                routes.insert(RouteRef::Raw(t, p), key(ProxyKey::Raw(t, p)));
            }
        }
        let keep: std::collections::BTreeSet<(u16, String)> = routes.values().cloned().collect();
        let mut index = lock(&self.index);
        for (port, route) in index.routes.values().filter(|k| !keep.contains(k)) {
            metrics.forget_route(*port, route);
        }
        lock(&self.counters).retain(|k, _| keep.contains(k));
        lock(&self.active).retain(|k, _| keep.contains(k));
        index.routes = routes;
        index.ports = ports;
    }

    /// Counts one datagram, in the counters and their series.
    pub fn record(&self, datagram: &[u8], metrics: &Metrics) {
        let found = parse_line(datagram).and_then(|line| lock(&self.index).routes.get(&line.route).cloned().map(|k| (k, line)));
        let Some((key, line)) = found else {
            self.unknown.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let one = RouteCounters {
            connections_total: 1,
            denied_total: u64::from(line.outcome == Outcome::Denied),
            limited_total: u64::from(line.outcome == Outcome::Limited),
            rx_bytes: line.rx,
            tx_bytes: line.tx,
        };
        metrics.route_connection(key.0, &key.1, &one);
        let mut counters = lock(&self.counters);
        let c = counters.entry(key).or_default();
        c.connections_total += 1;
        c.denied_total += one.denied_total;
        c.limited_total += one.limited_total;
        c.rx_bytes = c.rx_bytes.saturating_add(line.rx);
        c.tx_bytes = c.tx_bytes.saturating_add(line.tx);
    }

    /// Takes the connections open on network `port` from a look at it:
    /// each route's are those on its DNAT ports.
    pub fn observe_open(&self, port: u16, network: Option<&ObservedNetwork>, metrics: &Metrics) {
        let index = lock(&self.index);
        let mut all = lock(&self.active);
        let routes = index.ports.range((port, String::new())..).take_while(|((p, _), _)| *p == port);
        for ((_, route), ports) in routes {
            let open = network.map_or(0, |n| ports.iter().filter_map(|p| n.open_connections.get(p)).sum());
            metrics.set_route_active(port, route, open);
            all.insert((port, route.clone()), open);
        }
    }

    /// The connections open now on a route (0 when not read).
    pub fn active(&self, port: u16, route: &str) -> u64 {
        lock(&self.active).get(&(port, route.to_string())).copied().unwrap_or(0)
    }

    /// The counters of network `port`'s routes that saw any connection.
    pub fn of_network(&self, port: u16) -> BTreeMap<String, RouteCounters> {
        lock(&self.counters)
            .range((port, String::new())..)
            .take_while(|((p, _), _)| *p == port)
            .map(|((_, k), c)| (k.clone(), *c))
            .collect()
    }

    /// Every route's counters, by network and route key.
    pub fn all(&self) -> BTreeMap<(u16, String), RouteCounters> {
        lock(&self.counters).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub mod socket;
#[cfg(test)]
mod tests;
