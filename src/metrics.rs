//! Prometheus metrics, encoded by `prometheus-client` (OpenMetrics text).
//! Names follow the Prometheus conventions: `_total` counters, `_seconds`
//! durations as histograms, `_timestamp_seconds` for points in time, and a
//! series appears only when it has a meaning (no handshake: no series).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::system::exec::runner::{CommandObserver, CommandOutcome};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// The network's listen port.
    pub network: String,
    /// The peer's public key.
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NetworkLabels {
    pub network: String,
}

/// `apply` (a new generation or a retry) or `drift` (the watchdog's check).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    pub mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    /// The tool run (for `ip netns exec NS TOOL`, the tool).
    pub program: String,
    /// `ok`, `failed`, `timeout` or `not_started`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProgramLabels {
    pub program: String,
}

/// Why an API request failed authentication.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// `desired` (the generation last accepted) or `applied` (the last one converged).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GenerationLabels {
    pub kind: String,
}

/// What the daemon was writing to its database (see [`STORE_OPERATIONS`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: String,
}

/// The writes to the database, as `gateway_store_errors_total` labels them:
/// a POST/PATCH's new desired state, a pass's result, a traffic tick, the
/// peers' last endpoints, the kept events.
pub const STORE_OPERATIONS: [&str; 5] = ["config", "apply_result", "traffic", "endpoints", "events"];

/// One upstream of one route of a network.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub network: String,
    /// The route, as a key of the network's `proxy` (`https://HOST`, ...).
    pub route: String,
    /// `IP:PORT`.
    pub upstream: String,
}

/// One route's counters since the daemon started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteCounters {
    /// Connections (HTTP: requests) that ended, refused and limited ones included.
    pub connections_total: u64,
    /// Refused by `allow`/`deny` (status 403).
    pub denied_total: u64,
    /// Refused by `max_connections`/`max_connections_per_client` (status 503).
    pub limited_total: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// One route of a network.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub network: String,
    /// The route, as a key of the network's `proxy` (`https://HOST`, ...).
    pub route: String,
}

/// One direction of a route's bytes: `rx` from the clients, `tx` to them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteBytesLabels {
    pub network: String,
    pub route: String,
    pub direction: String,
}

/// nginx workers: `active` (taking connections) or `draining` (old, after a reload).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn pass_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

fn command_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

pub struct Metrics {
    registry: Registry,
    /// Per-peer series on (off for very large hosts: per-network series stay).
    per_peer: bool,
    peer_rx: Family<PeerLabels, Counter>,
    peer_tx: Family<PeerLabels, Counter>,
    peer_handshake: Family<PeerLabels, Gauge>,
    network_rx: Family<NetworkLabels, Counter>,
    network_tx: Family<NetworkLabels, Counter>,
    pub networks: Gauge,
    pub peers: Gauge,
    generation: Family<GenerationLabels, Gauge>,
    apply_duration: Histograms<ModeLabels>,
    apply_failures: Family<ModeLabels, Counter>,
    drift_repairs: Counter,
    routes_failed: Family<NetworkLabels, Gauge>,
    pub last_success: Gauge,
    pub poll_errors: Counter,
    pub poll_duration: Histogram,
    store_errors: Family<OperationLabels, Counter>,
    /// Every command the runner ran (also those that could not start).
    commands_started: Counter,
    commands: Family<CommandLabels, Counter>,
    command_duration: Histograms<ProgramLabels>,
    api_auth_failures: Family<ReasonLabels, Counter>,
    nginx_workers: Family<StateLabels, Gauge>,
    upstream_up: Family<UpstreamLabels, Gauge>,
    route_connections: Family<RouteLabels, Counter>,
    route_active: Family<RouteLabels, Gauge>,
    route_denied: Family<RouteLabels, Counter>,
    route_limited: Family<RouteLabels, Counter>,
    route_bytes: Family<RouteBytesLabels, Counter>,
    /// Health check rounds: how long each took (every upstream of every route).
    pub health_round_duration: Histogram,
    /// `--ha-address`: 1 while this host holds the shared address.
    ha_active: Gauge,
    /// Peers with series, by network, so those of removed peers and
    /// networks can be dropped.
    exported: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(true)
    }
}

impl Metrics {
    /// `per_peer`: export per-peer series.
    pub fn new(per_peer: bool) -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("gateway"),
            per_peer,
            peer_rx: Family::default(),
            peer_tx: Family::default(),
            peer_handshake: Family::default(),
            network_rx: Family::default(),
            network_tx: Family::default(),
            networks: Gauge::default(),
            peers: Gauge::default(),
            generation: Family::default(),
            apply_duration: Family::new_with_constructor(pass_buckets),
            apply_failures: Family::default(),
            drift_repairs: Counter::default(),
            routes_failed: Family::default(),
            last_success: Gauge::default(),
            poll_errors: Counter::default(),
            poll_duration: pass_buckets(),
            store_errors: Family::default(),
            commands_started: Counter::default(),
            commands: Family::default(),
            command_duration: Family::new_with_constructor(command_buckets),
            api_auth_failures: Family::default(),
            nginx_workers: Family::default(),
            upstream_up: Family::default(),
            route_connections: Family::default(),
            route_active: Family::default(),
            route_denied: Family::default(),
            route_limited: Family::default(),
            route_bytes: Family::default(),
            health_round_duration: pass_buckets(),
            ha_active: Gauge::default(),
            exported: Mutex::default(),
        };
        m.register();
        for mode in ["apply", "drift"] {
            let _ = m.apply_failures.get_or_create(&ModeLabels { mode: mode.into() });
        }
        for reason in Self::AUTH_FAILURE_REASONS {
            let _ = m.api_auth_failures.get_or_create(&ReasonLabels { reason: reason.into() });
        }
        for kind in ["desired", "applied"] {
            m.set_generation(kind, 0);
        }
        for operation in STORE_OPERATIONS {
            let _ = m.store_errors.get_or_create(&OperationLabels { operation: operation.into() });
        }
        m.set_nginx_workers(0, 0);
        m
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION").into() }).set(1);
        r.register("build_info", "The gateway's version (always 1)", build_info);
        r.register("peer_receive_bytes", "Bytes received from a peer, counted by the gateway's poll", self.peer_rx.clone());
        r.register("peer_transmit_bytes", "Bytes sent to a peer, counted by the gateway's poll", self.peer_tx.clone());
        r.register(
            "peer_latest_handshake_timestamp_seconds",
            "Unix time of the latest WireGuard handshake with a peer (no series before the first)",
            self.peer_handshake.clone(),
        );
        r.register("network_receive_bytes", "Bytes received from all peers of a network", self.network_rx.clone());
        r.register("network_transmit_bytes", "Bytes sent to all peers of a network", self.network_tx.clone());
        r.register("networks", "Networks in the desired state", self.networks.clone());
        r.register("peers", "Peers in the desired state", self.peers.clone());
        r.register(
            "generation",
            "The desired generation (last accepted) and the applied one (last converged): equal when the host serves what it was asked to",
            self.generation.clone(),
        );
        r.register("apply_duration_seconds", "Duration of reconcile passes, by mode (apply, drift)", self.apply_duration.clone());
        r.register("apply_failures", "Reconcile passes that ended with an error, by mode", self.apply_failures.clone());
        r.register("drift_repairs", "Changes made by drift checks to undo what was changed by hand", self.drift_repairs.clone());
        r.register(
            "routes_failed",
            "Raw routes of a network left out of nginx because another process holds their port",
            self.routes_failed.clone(),
        );
        r.register(
            "last_successful_reconcile_timestamp_seconds",
            "Unix time of the last reconcile pass without error",
            self.last_success.clone(),
        );
        r.register(
            "poll_errors",
            "Traffic poll problems: ticks whose counters could not be stored, and `wg show` peer lines that could not be read",
            self.poll_errors.clone(),
        );
        r.register(
            "poll_duration_seconds",
            "Duration of a traffic poll: reading every interface and storing the tick",
            self.poll_duration.clone(),
        );
        r.register(
            "store_errors",
            "Writes to the database that failed (e.g. its disk is full), by operation: config, apply_result, traffic, endpoints",
            self.store_errors.clone(),
        );
        r.register("commands_started", "Processes the daemon started (every tool it runs; reads run none)", self.commands_started.clone());
        r.register("commands", "Commands the gateway ran, by program and result (ok, failed, timeout, not_started)", self.commands.clone());
        r.register("command_duration_seconds", "Duration of the commands the gateway ran, by program", self.command_duration.clone());
        r.register(
            "api_auth_failures",
            "API requests refused for their token, by reason: missing (none sent), invalid (no such token), forbidden (a read token on an admin route)",
            self.api_auth_failures.clone(),
        );
        r.register(
            "upstream_up",
            "Whether an upstream of a route passed its last health check (a TCP connect from inside its network's namespace): 1 or 0; no series before its first check nor for udp:// routes",
            self.upstream_up.clone(),
        );
        r.register(
            "route_connections",
            "Connections (HTTP: requests) of a route that ended, refused and limited ones included, since the daemon started (from nginx's lines on the usage socket)",
            self.route_connections.clone(),
        );
        r.register(
            "route_active_connections",
            "Connections of a route open now (conntrack entries of its DNAT ports in its network, read at each drift check)",
            self.route_active.clone(),
        );
        r.register(
            "route_denied",
            "Connections of a route refused by allow/deny (status 403), since the daemon started",
            self.route_denied.clone(),
        );
        r.register(
            "route_limited",
            "Connections of a route refused by max_connections(_per_client) (status 503), since the daemon started",
            self.route_limited.clone(),
        );
        r.register(
            "route_bytes",
            "Bytes of a route's connections, by direction: rx from the clients (toward the nodes), tx to the clients; since the daemon started",
            self.route_bytes.clone(),
        );
        r.register(
            "health_round_duration_seconds",
            "Duration of a health check round: every upstream of every route connected to (or timed out) once",
            self.health_round_duration.clone(),
        );
        r.register(
            "nginx_workers",
            "nginx worker processes, by state: active (taking connections) or draining (old workers finishing their connections after a reload, until --nginx-worker-shutdown-timeout)",
            self.nginx_workers.clone(),
        );
    }

    /// nginx's workers as a scrape finds them (read from /proc just before).
    pub fn set_nginx_workers(&self, active: u64, draining: u64) {
        for (state, n) in [("active", active), ("draining", draining)] {
            self.nginx_workers.get_or_create(&StateLabels { state: state.into() }).set(n as i64);
        }
    }

    /// An upstream's last health check: 1 passed, 0 failed.
    pub fn set_upstream_up(&self, network: u16, route: &str, upstream: &str, up: bool) {
        let labels = UpstreamLabels { network: network.to_string(), route: route.into(), upstream: upstream.into() };
        self.upstream_up.get_or_create(&labels).set(i64::from(up));
    }

    /// One connection (HTTP: request) of a route ended.
    pub fn route_connection(&self, network: u16, route: &str, counted: &RouteCounters) {
        let labels = RouteLabels { network: network.to_string(), route: route.into() };
        self.route_connections.get_or_create(&labels).inc_by(counted.connections_total);
        if counted.denied_total > 0 {
            self.route_denied.get_or_create(&labels).inc_by(counted.denied_total);
        }
        if counted.limited_total > 0 {
            self.route_limited.get_or_create(&labels).inc_by(counted.limited_total);
        }
        for (direction, bytes) in [("rx", counted.rx_bytes), ("tx", counted.tx_bytes)] {
            let labels = RouteBytesLabels { network: network.to_string(), route: route.into(), direction: direction.into() };
            self.route_bytes.get_or_create(&labels).inc_by(bytes);
        }
    }

    /// A route's connections open now.
    pub fn set_route_active(&self, network: u16, route: &str, active: u64) {
        let labels = RouteLabels { network: network.to_string(), route: route.into() };
        self.route_active.get_or_create(&labels).set(i64::try_from(active).unwrap_or(i64::MAX));
    }

    /// Drops a route's series (the route is gone).
    pub fn forget_route(&self, network: u16, route: &str) {
        let labels = RouteLabels { network: network.to_string(), route: route.into() };
        for family in [&self.route_connections, &self.route_denied, &self.route_limited] {
            family.remove(&labels);
        }
        self.route_active.remove(&labels);
        for direction in ["rx", "tx"] {
            self.route_bytes.remove(&RouteBytesLabels { network: network.to_string(), route: route.into(), direction: direction.into() });
        }
    }

    /// An upstream no longer desired: its series goes.
    pub fn forget_upstream(&self, network: u16, route: &str, upstream: &str) {
        self.upstream_up.remove(&UpstreamLabels { network: network.to_string(), route: route.into(), upstream: upstream.into() });
    }

    /// With `--ha-address`: exports `gateway_ha_active` (absent without).
    pub fn with_ha(mut self) -> Self {
        self.registry.register(
            "ha_active",
            "1 while this host holds the shared address (--ha-address): active; 0: standby",
            self.ha_active.clone(),
        );
        self
    }

    pub fn set_ha_active(&self, active: bool) {
        self.ha_active.set(i64::from(active));
    }

    /// The `reason` values of `gateway_api_auth_failures_total`.
    pub const AUTH_FAILURE_REASONS: [&'static str; 3] = ["missing", "invalid", "forbidden"];

    /// An API request refused for its token.
    pub fn auth_failure(&self, reason: &str) {
        self.api_auth_failures.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry)?;
        Ok(s)
    }

    /// The generation of `kind`: `desired` or `applied`.
    pub fn set_generation(&self, kind: &str, generation: i64) {
        self.generation.get_or_create(&GenerationLabels { kind: kind.into() }).set(generation);
    }

    /// The networks of the routes left out of nginx, one entry per route:
    /// their series only (a network with none has none).
    pub fn set_routes_failed(&self, networks: impl Iterator<Item = u16>) {
        self.routes_failed.clear();
        for n in networks {
            self.routes_failed.get_or_create(&NetworkLabels { network: n.to_string() }).inc();
        }
    }

    /// One reconcile pass done.
    pub fn record_pass(&self, mode: &str, ok: bool, duration: Duration, repairs: usize) {
        let labels = ModeLabels { mode: mode.into() };
        self.apply_duration.get_or_create(&labels).observe(duration.as_secs_f64());
        if ok {
            self.last_success.set(crate::clock::now_unix());
        } else {
            self.pass_failed(mode);
        }
        if mode == "drift" {
            self.drift_repairs.inc_by(repairs as u64);
        }
    }

    /// A pass that failed (also one that could not even start).
    pub fn pass_failed(&self, mode: &str) {
        self.apply_failures.get_or_create(&ModeLabels { mode: mode.into() }).inc();
    }

    /// A write to the database that failed.
    pub fn store_failed(&self, operation: &str) {
        self.store_errors.get_or_create(&OperationLabels { operation: operation.into() }).inc();
    }

    /// A peer read by the poll: its counters exist from now on (at 0, so the
    /// first delta is an increase), its handshake time only once it had one.
    pub fn peer_seen(&self, network: &str, peer: &str, latest_handshake: i64) {
        let _ = self.network_rx.get_or_create(&NetworkLabels { network: network.into() });
        let _ = self.network_tx.get_or_create(&NetworkLabels { network: network.into() });
        if !self.per_peer {
            return;
        }
        let l = PeerLabels { network: network.into(), peer: peer.into() };
        let _ = self.peer_rx.get_or_create(&l);
        let _ = self.peer_tx.get_or_create(&l);
        if latest_handshake > 0 {
            self.peer_handshake.get_or_create(&l).set(latest_handshake);
        } else {
            self.peer_handshake.remove(&l);
        }
    }

    /// Bytes counted for a peer by a stored tick.
    pub fn count_traffic(&self, network: &str, peer: &str, rx: u64, tx: u64) {
        let n = NetworkLabels { network: network.into() };
        self.network_rx.get_or_create(&n).inc_by(rx);
        self.network_tx.get_or_create(&n).inc_by(tx);
        if self.per_peer {
            let l = PeerLabels { network: network.into(), peer: peer.into() };
            self.peer_rx.get_or_create(&l).inc_by(rx);
            self.peer_tx.get_or_create(&l).inc_by(tx);
        }
    }

    /// Drops the series of peers no longer there. `seen`: the peers read
    /// this tick by network; `complete`: every managed interface was read,
    /// so networks not read are gone too.
    pub fn forget_peers(&self, seen: &BTreeMap<String, BTreeSet<String>>, complete: bool) {
        let mut exported = self.exported.lock().unwrap_or_else(|e| e.into_inner());
        for (network, peers) in exported.iter_mut() {
            let now = seen.get(network);
            if now.is_none() && !complete {
                continue;
            }
            peers.retain(|peer| {
                let keep = now.is_some_and(|n| n.contains(peer));
                if !keep {
                    let l = PeerLabels { network: network.clone(), peer: peer.clone() };
                    self.peer_rx.remove(&l);
                    self.peer_tx.remove(&l);
                    self.peer_handshake.remove(&l);
                }
                keep
            });
            if now.is_none() {
                self.network_rx.remove(&NetworkLabels { network: network.clone() });
                self.network_tx.remove(&NetworkLabels { network: network.clone() });
            }
        }
        exported.retain(|_, peers| !peers.is_empty());
        for (network, peers) in seen {
            exported.entry(network.clone()).or_default().extend(peers.iter().cloned());
        }
    }
}

impl CommandObserver for Metrics {
    fn command_done(&self, program: &str, outcome: CommandOutcome, duration: Duration) {
        let result = match outcome {
            CommandOutcome::Ok => "ok",
            CommandOutcome::Failed => "failed",
            CommandOutcome::Timeout => "timeout",
            CommandOutcome::NotStarted => "not_started",
        };
        self.commands_started.inc();
        self.commands.get_or_create(&CommandLabels { program: program.into(), result: result.into() }).inc();
        self.command_duration.get_or_create(&ProgramLabels { program: program.into() }).observe(duration.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str, start: &str) -> Option<String> {
        text.lines().find(|l| l.starts_with(start)).map(str::to_string)
    }

    #[test]
    fn exposition_follows_the_conventions() {
        let m = Metrics::default();
        let text = m.encode().unwrap();
        assert!(text.contains(&format!("gateway_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))), "{text}");
        assert!(text.contains(r#"gateway_apply_failures_total{mode="apply"} 0"#), "failures exist from the start: {text}");
        assert!(text.contains(r#"gateway_store_errors_total{operation="traffic"} 0"#), "so do store errors: {text}");
        assert!(text.contains("# TYPE gateway_poll_duration_seconds histogram"), "{text}");
        assert!(text.contains("# TYPE gateway_drift_repairs counter"), "{text}");
        assert!(text.contains("gateway_nginx_workers{state=\"draining\"} 0"), "both states exist from the start: {text}");
        m.set_nginx_workers(2, 3);
        let text = m.encode().unwrap();
        assert!(text.contains("gateway_nginx_workers{state=\"active\"} 2\n"), "{text}");
        assert!(text.contains("gateway_nginx_workers{state=\"draining\"} 3\n"), "{text}");
        assert!(text.ends_with("# EOF\n"));
        m.record_pass("drift", false, Duration::from_millis(30), 3);
        m.record_pass("apply", true, Duration::from_millis(10), 0);
        let text = m.encode().unwrap();
        assert!(text.contains(r#"gateway_apply_duration_seconds_count{mode="drift"} 1"#), "{text}");
        assert!(text.contains(r#"gateway_apply_duration_seconds_count{mode="apply"} 1"#), "{text}");
        assert!(text.contains(r#"gateway_apply_failures_total{mode="drift"} 1"#), "{text}");
        assert!(text.contains("gateway_drift_repairs_total 3"), "{text}");
        m.store_failed("config");
        let text = m.encode().unwrap();
        assert!(text.contains(r#"gateway_store_errors_total{operation="config"} 1"#), "{text}");
        assert!(!text.contains("gateway_last_successful_reconcile_timestamp_seconds 0\n"), "set by the good pass: {text}");
    }

    #[test]
    fn peer_series_start_at_zero_and_handshakes_only_once_there() {
        let m = Metrics::default();
        m.peer_seen("51820", "k", 0);
        let text = m.encode().unwrap();
        assert!(text.contains(r#"gateway_peer_receive_bytes_total{network="51820",peer="k"} 0"#), "{text}");
        assert!(text.contains(r#"gateway_network_transmit_bytes_total{network="51820"} 0"#), "{text}");
        assert!(line(&text, "gateway_peer_latest_handshake_timestamp_seconds{").is_none(), "no handshake yet, no series: {text}");
        m.peer_seen("51820", "k", 1_700_000_000);
        m.count_traffic("51820", "k", 5, 7);
        let text = m.encode().unwrap();
        assert!(text.contains(r#"gateway_peer_latest_handshake_timestamp_seconds{network="51820",peer="k"} 1700000000"#), "{text}");
        assert!(text.contains(r#"gateway_peer_receive_bytes_total{network="51820",peer="k"} 5"#), "{text}");
        assert!(text.contains(r#"gateway_network_transmit_bytes_total{network="51820"} 7"#), "{text}");
    }

    #[test]
    fn per_peer_series_can_be_turned_off() {
        let m = Metrics::new(false);
        m.peer_seen("51820", "k", 1_700_000_000);
        m.count_traffic("51820", "k", 5, 7);
        let text = m.encode().unwrap();
        assert!(!text.contains("peer=\"k\""), "{text}");
        assert!(text.contains(r#"gateway_network_receive_bytes_total{network="51820"} 5"#), "{text}");
    }

    #[test]
    fn commands_are_counted_by_program_and_result() {
        let m = Metrics::default();
        m.command_done("ip", CommandOutcome::Ok, Duration::from_millis(4));
        m.command_done("ip", CommandOutcome::Ok, Duration::from_millis(4));
        m.command_done("wg", CommandOutcome::Timeout, Duration::from_secs(30));
        let text = m.encode().unwrap();
        assert!(text.contains(r#"gateway_commands_total{program="ip",result="ok"} 2"#), "{text}");
        assert!(text.contains(r#"gateway_commands_total{program="wg",result="timeout"} 1"#), "{text}");
        assert!(text.contains("gateway_commands_started_total 3"), "every command counted once: {text}");
        assert!(text.contains(r#"gateway_command_duration_seconds_count{program="ip"} 2"#), "{text}");
    }
}
