//! The reconciler: the only task that changes the system. It runs a pass
//! when the API stores a new generation (an "apply") and on every watchdog
//! tick (a "drift check").
//!
//! An apply trusts what the last successful pass left behind for networks
//! whose desired state did not change, so re-applying the same state reads
//! no network and runs no command. The drift check looks into every
//! network, repairs what was changed by hand, and hands the WireGuard
//! counters it read to the traffic poller.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Notify, watch};

use crate::execute::{Backend, Executor};
use crate::observe::Observer;
use crate::plan::{NginxText, converged_view, plan};
use crate::render::{NginxOptions, NginxSite, nginx_http, nginx_stream};
use crate::store::{ApplyRecord, Store};
use crate::traffic::InterfaceReading;
use crate::validate::{Cidr, Context, CustomForwarding, Desired, NetworkSpec, validate};

/// Settings of the reconciler that do not change while it runs.
#[derive(Debug, Clone)]
pub struct ReconcileSettings {
    pub nginx: NginxOptions,
    pub custom: Vec<CustomForwarding>,
    /// Subnets no request may use (the bridge subnet).
    pub reserved: Vec<Cidr>,
    pub watchdog: Duration,
}

impl ReconcileSettings {
    pub fn validation(&self) -> Context<'_> {
        Context { custom: &self.custom, reserved: &self.reserved }
    }
}

/// State shared by the API and the reconciler.
pub struct Shared {
    pub store: Store,
    pub observer: Observer,
    pub backend: Backend,
    pub settings: ReconcileSettings,
    /// Wakes the reconciler for an apply; permits coalesce.
    pub wake: Notify,
    /// The outcome of the latest finished pass.
    pub finished: watch::Sender<Option<ApplyRecord>>,
    /// Serializes POST/PATCH so each builds on the previous generation.
    pub write_lock: Mutex<()>,
    pub metrics: crate::metrics::Metrics,
    pub accounting: crate::traffic::Accounting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Apply,
    Drift,
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

pub fn nginx_text(shared: &Shared, desired: &Desired) -> NginxText {
    let s = &shared.settings;
    let site = NginxSite::build(&shared.observer.layout, desired, &s.custom, &s.nginx);
    NginxText { stream: nginx_stream(&site), http: nginx_http(&site) }
}

pub struct Reconciler {
    shared: Arc<Shared>,
    /// The spec each network was last given, and whether that pass fully
    /// converged it (only then is it trusted without a look). The spec is
    /// kept after a failure: it is what tells a changed endpoint apart from
    /// one WireGuard learned by roaming.
    converged: BTreeMap<u16, (NetworkSpec, bool)>,
    bridge_verified: bool,
    applied_generation: i64,
}

/// Result of one pass, before it is recorded.
pub struct PassOutcome {
    pub record: ApplyRecord,
    pub changed: Vec<u16>,
    pub actions: usize,
    /// The WireGuard interfaces read in this pass (all of them in a drift check).
    pub dumps: BTreeMap<u16, InterfaceReading>,
}

impl Reconciler {
    pub async fn new(shared: Arc<Shared>) -> Self {
        let applied_generation = match shared.store.last_apply().await {
            Ok(Some(r)) => r.applied_generation,
            _ => 0,
        };
        Reconciler { shared, converged: BTreeMap::new(), bridge_verified: false, applied_generation }
    }

    /// Runs forever: a drift check at start and every watchdog interval, an
    /// apply whenever woken.
    pub async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.shared.settings.watchdog);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mode = tokio::select! {
                _ = self.shared.wake.notified() => Mode::Apply,
                _ = ticker.tick() => Mode::Drift,
            };
            self.tick(mode).await;
        }
    }

    /// One pass in the given mode, recorded and published.
    pub async fn tick(&mut self, mode: Mode) -> Option<PassOutcome> {
        let (generation, config) = match self.shared.store.desired().await {
            Ok(x) => x,
            Err(e) => {
                tracing::error!("cannot read the desired state: {e}");
                self.shared.metrics.apply_failures.inc();
                return None;
            }
        };
        if generation == 0 {
            // Nothing accepted yet: touch nothing.
            return None;
        }
        let outcome = self.pass(mode, generation, &config).await;
        if let Err(e) = self.shared.store.save_apply(&outcome.record).await {
            tracing::error!("cannot record the apply result: {e}");
        }
        self.shared.finished.send_replace(Some(outcome.record.clone()));
        Some(outcome)
    }

    async fn pass(&mut self, mode: Mode, generation: i64, config: &crate::model::GatewayConfig) -> PassOutcome {
        let start = Instant::now();
        let shared = self.shared.clone();
        let observer = &shared.observer;
        let mut errors = Vec::new();
        let desired = match validate(config, &shared.settings.validation()) {
            Ok(d) => d,
            Err(problems) => {
                // Possible only if --custom-forwarding changed since it was accepted.
                errors.extend(problems.into_iter().map(|p| format!("stored desired state is invalid: {}: {}", p.path, p.message)));
                return self.finish(mode, generation, start, errors, Vec::new(), 0, BTreeMap::new(), (0, 0));
            }
        };
        let nginx = nginx_text(&shared, &desired);

        let mut observed = observer.observe_cheap();
        if mode == Mode::Drift || !self.bridge_verified {
            if let Err(e) = observer.observe_bridge_addresses(&mut observed).await {
                errors.push(format!("reading the bridge: {e}"));
            }
        }
        let mut dumps = BTreeMap::new();
        let mut unreadable = Vec::new();
        let mut partial_read = false;
        for (port, spec) in &desired.networks {
            if !observed.namespaces.contains(port) {
                continue;
            }
            if mode == Mode::Apply && self.converged.get(port).is_some_and(|(s, verified)| *verified && s == spec) {
                observed.networks.insert(*port, converged_view(&observer.layout, spec));
                continue;
            }
            match observer.observe_network(*port).await {
                Ok(mut n) => {
                    n.endpoints_changed = self.converged.get(port).is_some_and(|(before, _)| {
                        spec.peers
                            .iter()
                            .any(|(k, p)| p.endpoint.is_some() && before.peers.get(k).is_some_and(|b| b.endpoint != p.endpoint))
                    });
                    for p in &n.problems {
                        tracing::warn!("network {port}: {p}");
                    }
                    match InterfaceReading::of(&n) {
                        Some(reading) => {
                            dumps.insert(*port, reading);
                        }
                        // The interface is there but `wg show` said nothing
                        // usable: this tick cannot vouch for its peers.
                        None if n.wg_link.is_some() => partial_read = true,
                        None => {}
                    }
                    observed.networks.insert(*port, n);
                }
                Err(e) => {
                    // Plan nothing for a network we could not read: pretend
                    // it converged, report the error, and look again next time.
                    errors.push(format!("network {port}: reading its state: {e}"));
                    observed.networks.insert(*port, converged_view(&observer.layout, spec));
                    unreadable.push(*port);
                }
            }
        }

        let actions = plan(&desired, &observed, &observer.layout, &nginx);

        // Account for traffic before anything changes: the counters of a
        // network about to be removed, or of a peer about to go, are read now
        // or never. A drift check reads every network, so it is the poll.
        for port in observed.namespaces.iter().filter(|p| !desired.networks.contains_key(p)) {
            if let Some(reading) = observer.observe_network(*port).await.ok().as_ref().and_then(InterfaceReading::of) {
                dumps.insert(*port, reading);
            }
        }
        if !dumps.is_empty() || mode == Mode::Drift {
            let complete = mode == Mode::Drift && unreadable.is_empty() && !partial_read;
            shared.accounting.record_tick(&shared, &dumps, complete).await;
        }

        let executor = Executor { observer, backend: shared.backend };
        let report = executor.execute(&actions, &desired, &nginx).await;
        errors.extend(report.errors.iter().cloned());

        self.converged.retain(|p, _| desired.networks.contains_key(p));
        for (port, spec) in &desired.networks {
            let verified = !(report.failed.contains(port) || unreadable.contains(port));
            self.converged.insert(*port, (spec.clone(), verified));
        }
        self.bridge_verified = !report.global_failed;
        let changed: Vec<u16> = report.changed.iter().copied().collect();
        let counts = (desired.networks.len(), desired.networks.values().map(|s| s.peers.len()).sum());
        self.finish(mode, generation, start, errors, changed, actions.len(), dumps, counts)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        mode: Mode,
        generation: i64,
        start: Instant,
        errors: Vec<String>,
        changed: Vec<u16>,
        actions: usize,
        dumps: BTreeMap<u16, InterfaceReading>,
        (networks, peers): (usize, usize),
    ) -> PassOutcome {
        let ok = errors.is_empty();
        if ok {
            self.applied_generation = generation;
        }
        let duration = start.elapsed();
        let m = &self.shared.metrics;
        m.apply_duration.observe(duration.as_secs_f64());
        m.networks.set(networks as i64);
        m.peers.set(peers as i64);
        if ok {
            m.last_success.set(now_unix());
        } else {
            m.apply_failures.inc();
        }
        let kind = if mode == Mode::Apply { "apply" } else { "drift check" };
        if !ok {
            tracing::warn!(generation, errors = errors.len(), "{kind} failed after {} ms: {}", duration.as_millis(), errors.join("; "));
        } else if mode == Mode::Apply || actions > 0 {
            tracing::info!(generation, actions, ?changed, "{kind} converged in {} ms", duration.as_millis());
        } else {
            tracing::debug!(generation, "drift check: nothing to do ({} ms)", duration.as_millis());
        }
        PassOutcome {
            record: ApplyRecord {
                generation,
                applied_generation: self.applied_generation,
                ok,
                errors,
                finished_at: now_unix(),
                duration_ms: duration.as_millis() as u64,
                changed: changed.clone(),
            },
            changed,
            actions,
            dumps,
        }
    }
}
