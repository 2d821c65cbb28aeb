//! The state behind the [`Gateway`](super::Gateway) service and the
//! reconciler: private fields, and a method for each thing the loops, the
//! status page and the API need of it. `daemon` builds it; nothing outside
//! this module reaches into it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Notify, watch};

use super::dry_run::{DryRunRequest, DryRuns};
use super::tokens::{TokenSet, TokenSources};
use crate::endpoints::EndpointMemory;
use crate::events::{Events, PeerWatch};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::model::events::StoreErrorEvent;
use crate::model::{GatewayConfig, StoreFailure};
use crate::observed::ObservedNetwork;
use crate::render::NginxOptions;
use crate::spec::{CustomForwarding, Desired};
use crate::store::{ApplyRecord, Store, StoreError};
use crate::system::System;
use crate::traffic::Accounting;
use crate::types::Cidr;
use crate::usage::Usage;
use crate::validate::Context;

/// Settings that do not change while the daemon runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub nginx: NginxOptions,
    pub custom: Vec<CustomForwarding>,
    /// Subnets no request may use (the bridge subnet).
    pub reserved: Vec<Cidr>,
    /// Host ports the gateway uses itself (see `validate::Context::ports`).
    pub ports: Vec<(u16, String)>,
    /// Which raw ports a config may open.
    pub raw_ports: crate::types::PortRange,
    /// How much one config may ask for.
    pub limits: crate::validate::Limits,
    pub watchdog: Duration,
    /// Where the API's tokens come from (read again on SIGHUP); none: the
    /// API is open (the daemon then listens on loopback only).
    pub tokens: TokenSources,
    /// The address the API listens on: without a token, a request's Host
    /// must name it or loopback (DNS rebinding).
    pub api_address: IpAddr,
    /// How long POST/PATCH wait for the reconciler before answering `pending`.
    pub apply_wait: Duration,
    /// Networks worked on at once by a pass.
    pub apply_concurrency: usize,
    /// How long a stop waits for the running pass.
    pub shutdown_timeout: Duration,
    /// A peer whose latest handshake is older is disconnected (events).
    pub peer_timeout: Duration,
    /// How often upstreams are checked (zero: never).
    pub health_interval: Duration,
    /// `--ha-address`: the address whose presence makes this host active.
    pub ha_address: Option<IpAddr>,
}

/// The stored desired state, and whether it validates (see
/// [`Shared::stored_state`]).
pub struct StoredState {
    pub generation: i64,
    pub config: Arc<GatewayConfig>,
    pub desired: Result<Arc<Desired>, crate::validate::Problems>,
}

impl Settings {
    pub fn validation(&self) -> Context<'_> {
        Context {
            custom: &self.custom,
            reserved: &self.reserved,
            ports: &self.ports,
            raw_ports: self.raw_ports,
            previous: None,
            previous_config: None,
            limits: self.limits,
        }
    }
}

/// What was last seen of one network: status.json answers from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenNetwork {
    /// Unix seconds of the look.
    pub observed_at: i64,
    /// `None`: its namespace was not there.
    pub network: Option<ObservedNetwork>,
}

/// The last look at every network, kept up to date by the reconciler's
/// passes and by status.json's own processless re-reads (at most one at a
/// time, and not more often than [`Seen::due`] says).
#[derive(Default)]
pub struct Seen {
    networks: std::sync::RwLock<BTreeMap<u16, SeenNetwork>>,
    /// A re-read is running; its end is announced on `refreshed`.
    refreshing: std::sync::atomic::AtomicBool,
    refreshed: Notify,
    /// When the last re-read ended, and how long it took.
    last: std::sync::Mutex<Option<(Instant, Duration)>>,
}

impl Seen {
    /// Counters older than this are re-read for a status request.
    pub const FRESH: Duration = Duration::from_secs(1);

    /// Whether a re-read is due: the last one is older than [`Self::FRESH`],
    /// or than five times its own duration (re-reads never take more than a
    /// fifth of the reader's time, however many networks there are).
    pub fn due(&self) -> bool {
        match *self.last.lock().unwrap_or_else(|e| e.into_inner()) {
            None => true,
            Some((at, took)) => at.elapsed() > Self::FRESH.max(took * 5),
        }
    }

    /// Records what a look saw (the newer look wins per network).
    pub fn update(&self, seen: impl IntoIterator<Item = (u16, SeenNetwork)>) {
        let mut networks = self.networks.write().unwrap_or_else(|e| e.into_inner());
        for (port, s) in seen {
            if networks.get(&port).is_none_or(|before| before.observed_at <= s.observed_at) {
                networks.insert(port, s);
            }
        }
    }

    /// What was last seen of each network.
    pub fn networks(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u16, SeenNetwork>> {
        self.networks.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a re-read: false if one is running already (its end is
    /// announced by [`Self::refreshed`]).
    pub fn begin_refresh(&self) -> bool {
        !self.refreshing.swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    /// A re-read that began at `started` ended: waiters are woken.
    pub fn end_refresh(&self, started: Instant) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), started.elapsed()));
        self.refreshing.store(false, std::sync::atomic::Ordering::Release);
        self.refreshed.notify_waiters();
    }

    /// The end of the running (or next) re-read.
    pub fn refreshed(&self) -> tokio::sync::futures::Notified<'_> {
        self.refreshed.notified()
    }

    /// Forgets networks that are neither desired nor present.
    pub fn retain(&self, keep: impl Fn(u16) -> bool) {
        self.networks.write().unwrap_or_else(|e| e.into_inner()).retain(|p, _| keep(*p));
    }
}

/// Where the daemon is in its life: a stop lets the running pass finish
/// (`Stopping`, writes refused) before anything ends (`Stopped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Running,
    /// A stop was asked: the API takes no writes, the reconciler ends after
    /// the pass it is running.
    Stopping,
    /// The reconciler has ended: nothing more will be applied.
    Stopped,
}

/// State shared by the API and the reconciler. Private: the loops, the
/// status page and the API use its methods; the apply protocol's own parts
/// (write lock, wake-up, the accepted generation, the dry-run queue) are
/// used by [`Gateway`](super::Gateway) and the reconciler alone.
pub struct Shared {
    store: Store,
    system: System,
    settings: Settings,
    /// Wakes the reconciler for an apply; permits coalesce.
    wake: Notify,
    /// The outcome of the latest finished pass.
    finished: watch::Sender<Option<ApplyRecord>>,
    /// Serializes POST/PATCH so each builds on the previous generation.
    pub(super) write_lock: Mutex<()>,
    metrics: Arc<Metrics>,
    accounting: Accounting,
    /// The last look at each network.
    seen: Seen,
    lifecycle: watch::Sender<Lifecycle>,
    /// Dry runs waiting for the reconciler.
    pub(super) dry_runs: DryRuns,
    /// The desired state last accepted or loaded, as stored and validated,
    /// with its generation: passes use it instead of parsing and validating
    /// the stored JSON again (about 100 ms at 1,000 networks), and the next
    /// request builds on it, validating only the networks it changes.
    accepted: std::sync::Mutex<Option<Accepted>>,
    /// The event stream's events.
    events: Events,
    /// Which peers are connected, from every look at the networks.
    peers: PeerWatch,
    /// The API tokens in force (replaced whole on SIGHUP).
    tokens: std::sync::RwLock<Arc<TokenSet>>,
    /// Each peer's last endpoint.
    endpoints: EndpointMemory,
    /// Writes to the database failing now, by operation.
    store_failures: std::sync::Mutex<BTreeMap<&'static str, StoreFailure>>,
    /// What the health checks found of every route's upstreams.
    health: Health,
    /// Each route's usage, from nginx's lines on the usage socket.
    usage: Usage,
    /// With `--ha-address`: this host's role, as the address watcher sees it.
    role: Option<watch::Receiver<crate::ha::Role>>,
    /// The digest of the desired state, with its generation (see `ha::config_digest`).
    digest: std::sync::Mutex<Option<(i64, String)>>,
}

impl Shared {
    /// `last`: the last recorded pass, so waiters see it; `retention`: how
    /// long traffic samples are kept.
    pub fn new(
        store: Store,
        system: System,
        settings: Settings,
        metrics: Arc<Metrics>,
        last: Option<ApplyRecord>,
        retention: Duration,
    ) -> Self {
        let settings_peer_timeout = settings.peer_timeout;
        let health_interval = settings.health_interval;
        Shared {
            store,
            system,
            settings,
            wake: Notify::new(),
            finished: watch::channel(last).0,
            write_lock: Mutex::new(()),
            metrics,
            accounting: Accounting::new(retention),
            seen: Seen::default(),
            lifecycle: watch::channel(Lifecycle::Running).0,
            dry_runs: DryRuns::default(),
            accepted: std::sync::Mutex::new(None),
            events: Events::new(crate::events::BACKLOG, first_event_id()),
            peers: PeerWatch::new(settings_peer_timeout),
            endpoints: Default::default(),
            store_failures: std::sync::Mutex::default(),
            tokens: Default::default(),
            health: Health::new(health_interval, Arc::new(crate::system::kernel::probe::KernelProbe::default())),
            usage: Default::default(),
            role: None,
            digest: std::sync::Mutex::default(),
        }
    }

    /// Each peer's last endpoint, as stored (at start).
    pub fn with_endpoints(mut self, endpoints: EndpointMemory) -> Self {
        self.endpoints = endpoints;
        self
    }

    /// The event stream resumed from the kept events (at start).
    pub fn with_events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// `--ha-address`: the role follows the address watcher (at start).
    pub fn with_role(mut self, role: watch::Receiver<crate::ha::Role>) -> Self {
        self.metrics.set_ha_active(*role.borrow() == crate::ha::Role::Active);
        self.role = Some(role);
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn system(&self) -> &System {
        &self.system
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn accounting(&self) -> &Accounting {
        &self.accounting
    }

    pub fn seen(&self) -> &Seen {
        &self.seen
    }

    pub fn events(&self) -> &Events {
        &self.events
    }

    pub fn endpoints(&self) -> &EndpointMemory {
        &self.endpoints
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    pub fn usage(&self) -> &Usage {
        &self.usage
    }

    /// Wakes the reconciler for a new generation (wake-ups coalesce).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The next wake-up (for the reconciler).
    pub fn woken(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    /// The reconciler finished a pass: waiting requests see its record.
    pub fn finish_pass(&self, record: ApplyRecord) {
        self.finished.send_replace(Some(record));
    }

    /// The latest finished pass (the stored one until the first of this run).
    pub fn last_pass(&self) -> Option<ApplyRecord> {
        self.finished.borrow().clone()
    }

    /// Every pass from now on, as it finishes.
    pub fn passes(&self) -> watch::Receiver<Option<ApplyRecord>> {
        self.finished.subscribe()
    }

    /// Where the daemon is in its life.
    pub fn lifecycle(&self) -> Lifecycle {
        *self.lifecycle.borrow()
    }

    /// Every lifecycle change from now on.
    pub fn lifecycle_changes(&self) -> watch::Receiver<Lifecycle> {
        self.lifecycle.subscribe()
    }

    /// A stop moves the daemon on to `to` (`Stopping`, then `Stopped`).
    pub fn move_to(&self, to: Lifecycle) {
        self.lifecycle.send_replace(to);
    }

    /// The dry runs to answer, for the one reconciler that answers them.
    pub fn take_dry_runs(&self) -> Option<tokio::sync::mpsc::Receiver<DryRunRequest>> {
        self.dry_runs.take_inbox()
    }

    /// The role's changes (`--ha-address`; else none).
    pub fn role_changes(&self) -> Option<watch::Receiver<crate::ha::Role>> {
        self.role.clone()
    }

    /// Whether this host has a role (`--ha-address`).
    pub fn has_role(&self) -> bool {
        self.role.is_some()
    }

    /// The last events written and the database closed (at exit).
    pub async fn close(&self) {
        self.events.close().await;
        self.store.pool.close().await;
        // Nothing reads it any more (nginx's lines to it fail until the next
        // start binds it again, as they would to a socket left behind).
        if let Some(path) = &self.settings.nginx.usage_socket {
            let _ = std::fs::remove_file(path);
        }
    }

    /// This host's role now (always active without `--ha-address`).
    pub fn role(&self) -> crate::ha::Role {
        self.role.as_ref().map_or(crate::ha::Role::Active, |r| *r.borrow())
    }

    /// The digest of the desired state of `generation` (computed once per generation).
    pub fn config_digest(&self, generation: i64, desired: &Desired) -> String {
        let mut kept = self.digest.lock().unwrap_or_else(|e| e.into_inner());
        match &*kept {
            Some((g, d)) if *g == generation => d.clone(),
            _ => {
                let d = crate::ha::config_digest(desired);
                *kept = Some((generation, d.clone()));
                d
            }
        }
    }

    /// The API tokens in force.
    pub fn tokens(&self) -> Arc<TokenSet> {
        self.tokens.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_tokens(&self, tokens: TokenSet) {
        *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tokens);
    }

    /// SIGHUP: reads the token files again. A file that cannot be used
    /// (gone, open to others, empty) keeps the tokens in force: a reload
    /// never opens the API nor locks everyone out.
    pub fn reload_tokens(&self) {
        match self.settings.tokens.load() {
            Ok(tokens) => {
                let (admin, read) = tokens.counts();
                self.set_tokens(tokens);
                tracing::info!(admin, read, "API tokens read again");
            }
            Err(e) => tracing::error!(error = %format!("{e:#}"), "API tokens not read again; the previous ones stay in force"),
        }
    }

    /// Records how a write to the database went. A failure is logged,
    /// counted (`gateway_store_errors_total`), published (`store_error`) and
    /// shown in status.json until the same operation next succeeds.
    pub fn store_outcome<T>(&self, operation: &'static str, result: &Result<T, StoreError>) {
        let mut failures = self.store_failures.lock().unwrap_or_else(|e| e.into_inner());
        let Err(e) = result else {
            if failures.remove(operation).is_some() {
                tracing::info!(operation, "the database takes writes again");
            }
            return;
        };
        let (message, disk_full) = (e.to_string(), e.disk_full());
        tracing::error!(operation, error = %message, disk_full, "a write to the database failed");
        self.metrics.store_failed(operation);
        let before = failures.get(operation).map(|f| f.since);
        failures
            .insert(operation, StoreFailure { message: message.clone(), disk_full, since: before.unwrap_or_else(crate::clock::now_unix) });
        drop(failures);
        // The events' own writes retry by themselves: one event when they
        // start failing, not one per retry (each would be another to write).
        if operation != "events" || before.is_none() {
            self.events.publish("store_error", &StoreErrorEvent { operation: operation.into(), message, disk_full });
        }
    }

    /// The writes to the database failing now, by operation.
    pub fn store_failures(&self) -> BTreeMap<String, StoreFailure> {
        let failures = self.store_failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.iter().map(|(op, f)| (op.to_string(), f.clone())).collect()
    }

    /// Keeps generation `generation` as stored (`config`) and validated.
    pub fn remember_accepted(&self, generation: i64, config: Arc<GatewayConfig>, desired: Arc<Desired>) {
        let mut accepted = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
        if accepted.as_ref().is_none_or(|(g, _, _)| *g <= generation) {
            *accepted = Some((generation, config, desired));
        }
    }

    /// The stored desired state: as accepted when it is still the one kept
    /// (no parse of the stored JSON), else read and validated now, and kept
    /// if valid (at start; or its problems, if the options changed since
    /// it was accepted).
    pub async fn stored_state(&self) -> Result<StoredState, StoreError> {
        self.stored_state_at(self.store.desired_generation().await?).await
    }

    /// [`Self::stored_state`] for a caller that read the stored generation
    /// already (status.json, with its ports): no second query when that
    /// generation is the one kept.
    pub async fn stored_state_at(&self, generation: i64) -> Result<StoredState, StoreError> {
        if let Some((config, desired)) = self.accepted_state(generation) {
            return Ok(StoredState { generation, config, desired: Ok(desired) });
        }
        let (generation, config) = self.store.desired().await?;
        let config = Arc::new(config);
        let desired = crate::validate::validate(&config, &self.settings.validation()).map(Arc::new);
        if let Ok(desired) = &desired {
            self.remember_accepted(generation, config.clone(), desired.clone());
        }
        Ok(StoredState { generation, config, desired })
    }

    /// The validated desired state of `generation`, if it is the one kept.
    #[cfg(test)]
    pub fn accepted(&self, generation: i64) -> Option<Arc<Desired>> {
        self.accepted_state(generation).map(|(_, d)| d)
    }

    /// Generation `generation` as stored and validated, if it is the one kept.
    fn accepted_state(&self, generation: i64) -> Option<(Arc<GatewayConfig>, Arc<Desired>)> {
        let accepted = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
        accepted.as_ref().filter(|(g, _, _)| *g == generation).map(|(_, c, d)| (c.clone(), d.clone()))
    }

    /// Records a look at networks for status.json, and tells the event
    /// stream which peers connected or disconnected since the last one.
    pub fn record_seen(&self, seen: Vec<(u16, SeenNetwork)>) {
        for (port, s) in &seen {
            self.endpoints.observe(*port, s.network.as_ref());
            self.usage.observe_open(*port, s.network.as_ref(), &self.metrics);
            for (connected, event) in self.peers.observe(*port, s.observed_at, s.network.as_ref()) {
                self.events.publish(if connected { "peer_connected" } else { "peer_disconnected" }, &event);
            }
        }
        self.seen.update(seen);
    }

    /// The host ports of `ports` another program holds, each a problem at
    /// its path (nginx, or WireGuard, could not open it): raw ports on the
    /// raw listen addresses, WireGuard ports on every address.
    pub fn ports_held_by_others(&self, ports: &[crate::validate::HostPort]) -> Vec<crate::model::ErrorDetail> {
        let all = [IpAddr::from(Ipv4Addr::UNSPECIFIED), IpAddr::from(Ipv6Addr::UNSPECIFIED)];
        let wireguard_ips = if crate::system::host_has_ipv6() { &all[..] } else { &all[..1] };
        let mut problems = Vec::new();
        for p in ports {
            let ips = if p.wireguard { wireguard_ips } else { &self.settings.nginx.raw_listen[..] };
            let Some(holder) = self.system.port_held_by_another(p.transport, ips, p.port) else { continue };
            let (what, opener) =
                if p.wireguard { ("UDP port", "the network's WireGuard interface") } else { (p.transport.label(), "nginx") };
            let message = format!("{what} {} is in use by {holder}: {opener} could not open it; choose another port or free it", p.port);
            problems.push(crate::model::ErrorDetail::new(p.path.clone(), message));
        }
        problems
    }
}

/// A generation as stored and validated (`Shared::accepted_state`).
type Accepted = (i64, Arc<GatewayConfig>, Arc<Desired>);

/// The lowest event id of this run: the start time in microseconds (see
/// `Events::resume`).
pub fn first_event_id() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(1)
}
