//! The reconciler: the only task that changes the system. It runs a pass
//! when the API stores a new generation (an "apply"), on every watchdog tick
//! (a "drift check"), and after a failed pass when its [`RetryPolicy`] says so.
//!
//! A pass computes each network's target once, where its spec changed
//! (`target`). An apply trusts what the last successful pass left behind
//! for networks whose target's digest did not change, so re-applying the
//! same state reads no network, plans nothing inside one and runs no
//! command. The drift check looks into every
//! network, repairs what was changed by hand, and hands the WireGuard
//! counters it read to the traffic poller.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::clock::now_unix;
use crate::observed::Observed;
use crate::service::{Lifecycle, Shared};
use crate::spec::Desired;
use crate::store::{ApplyRecord, StoreError};
use crate::system::ExecReport;
use crate::target::{NetworkTarget, Targets};
use crate::traffic::InterfaceReading;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A new generation (or a retry): look only where something may differ.
    Apply,
    /// The watchdog: look everywhere, repair drift, poll traffic.
    Drift,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Apply => "apply",
            Mode::Drift => "drift check",
        }
    }

    /// The `mode` label of the pass metrics.
    fn label(self) -> &'static str {
        match self {
            Mode::Apply => "apply",
            Mode::Drift => "drift",
        }
    }
}

/// When to try again after a failed pass (kube-rs' `error_policy`): soon at
/// first, then backing off, never later than the next watchdog tick anyway.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    first: Duration,
    max: Duration,
    next: Option<Duration>,
}

impl RetryPolicy {
    pub fn new(first: Duration, max: Duration) -> Self {
        RetryPolicy { first, max, next: None }
    }

    /// After a pass: how long until the retry, if one is due.
    pub fn after_pass(&mut self, ok: bool) -> Option<Duration> {
        if ok {
            self.next = None;
            return None;
        }
        let delay = self.next.unwrap_or(self.first).min(self.max);
        self.next = Some((delay * 2).min(self.max));
        Some(delay)
    }
}

/// The next role change, if this host has one (`--ha-address`; else never).
async fn role_change(role: &mut Option<tokio::sync::watch::Receiver<crate::ha::Role>>) -> Option<crate::ha::Role> {
    match role {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(*rx.borrow_and_update()),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

fn shared_role_is_active(shared: &Shared) -> bool {
    shared.has_role() && shared.role() == crate::ha::Role::Active
}

/// The next dry run, if this reconciler answers them (else never).
pub async fn next_dry_run(
    inbox: &mut Option<tokio::sync::mpsc::Receiver<crate::service::DryRunRequest>>,
) -> Option<crate::service::DryRunRequest> {
    match inbox {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// What the reconciler remembers of one network between passes.
struct Remembered {
    /// The target it was last given: kept after a failure too, since its
    /// spec tells a changed endpoint apart from one WireGuard learned by
    /// roaming.
    target: Arc<NetworkTarget>,
    /// That pass fully converged it: only then is it trusted without a
    /// look, while its target's digest stays the same.
    verified: bool,
    /// Its rules were read and matched the target's, and nothing was
    /// changed in the network since (see `look`).
    rules: Option<RulesVerified>,
}

/// When a network's rules were last seen to be right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RulesVerified {
    /// nf_tables' ruleset generation read just before the rules were.
    generation: Option<u32>,
}

/// The system as one pass saw it.
#[derive(Default)]
struct Look {
    observed: Observed,
    /// The WireGuard interfaces read (all of them in a drift check).
    dumps: BTreeMap<u16, InterfaceReading>,
    /// Networks whose state could not be read: nothing planned for them.
    unreadable: BTreeSet<u16>,
    /// Networks read this pass (the others were trusted or not there).
    read: BTreeSet<u16>,
    /// Networks whose rules were read, with the generation read before them.
    rules_read: BTreeMap<u16, Option<u32>>,
    /// An interface was there but `wg show` said nothing usable: this pass
    /// cannot vouch for its peers.
    partial_read: bool,
    errors: Vec<String>,
}

/// What a pass was, for its record.
struct PassInfo {
    mode: Mode,
    generation: i64,
    start: Instant,
    actions: usize,
}

/// Result of one pass, as recorded and published.
pub struct PassOutcome {
    pub record: ApplyRecord,
    pub actions: usize,
    /// The WireGuard interfaces read in this pass.
    pub dumps: BTreeMap<u16, InterfaceReading>,
}

pub struct Reconciler {
    shared: Arc<Shared>,
    memory: BTreeMap<u16, Remembered>,
    /// The targets of the last pass: a network whose spec is unchanged
    /// keeps its target, the others are computed again.
    targets: Targets,
    /// The networks whose target the last pass computed (the work done).
    computed: Vec<u16>,
    /// nginx's part of each network, rendered where its spec changed.
    nginx_parts: crate::render::NginxParts,
    /// The networks whose nginx part the last pass rendered (the work done).
    nginx_rendered: Vec<u16>,
    /// The desired state whose routes the usage counters follow (the same
    /// one again: nothing to do, as for the health checks).
    usage_routes: Option<Arc<Desired>>,
    /// With a role: the accepted state, the role, and that role's view of
    /// it, kept while both stay (so the health checks and usage counters,
    /// which compare states by pointer, are not set anew each pass).
    role_view: Option<(Arc<Desired>, crate::ha::Role, Arc<Desired>)>,
    bridge_verified: bool,
    applied_generation: i64,
    retry: RetryPolicy,
    /// Drift checks so far: whose turn it is to have its rules read anyway.
    drift_checks: u64,
    /// A pass since the start left nginx running the files on disk (a
    /// reload confirmed, or nothing to do): until then each pass checks
    /// that nginx really loaded them.
    nginx_confirmed: bool,
    /// Raw routes the last pass left out of nginx (their port held by another process).
    left_out: Vec<ingress::LeftOut>,
    /// How many raw ports nginx's worker connections were last checked
    /// against (None: not yet).
    capacity_checked: Option<usize>,
    /// `--ha-address`: networks whose peers are still to be reached since
    /// this host became active (cleared for each once a pass converged it).
    reach_out: BTreeMap<u16, crate::ha::Reach>,
    /// Every network is to be reached by the next pass, and why (the role
    /// just became active, or the daemon started active).
    reach_out_all: Option<crate::ha::Reach>,
    /// `--ha-address`: the host rules last set (ports and role), so they
    /// are set again only when either changes (or after a failure).
    ha_rules_set: Option<(Vec<u16>, crate::ha::Role)>,
}

impl Reconciler {
    pub async fn new(shared: Arc<Shared>) -> Self {
        let applied_generation = match shared.store().last_apply().await {
            Ok(Some(r)) => r.applied_generation,
            _ => 0,
        };
        let retry = RetryPolicy::new(Duration::from_secs(1), shared.settings().watchdog);
        let shared_for_role = shared.clone();
        Reconciler {
            shared,
            memory: BTreeMap::new(),
            targets: Targets::default(),
            computed: Vec::new(),
            nginx_parts: Default::default(),
            nginx_rendered: Vec::new(),
            usage_routes: None,
            role_view: None,
            bridge_verified: false,
            applied_generation,
            retry,
            drift_checks: 0,
            nginx_confirmed: false,
            capacity_checked: None,
            left_out: Vec::new(),
            // Started active: the peers may not know this host yet either.
            reach_out_all: shared_role_is_active(&shared_for_role).then_some(crate::ha::Reach::Started),
            reach_out: BTreeMap::new(),
            ha_rules_set: None,
        }
    }

    /// Runs until a stop: a drift check at start and every watchdog
    /// interval, an apply whenever woken, a retry when the policy says so.
    /// A stop is seen only between passes, so the running pass finishes and
    /// is recorded.
    pub async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.shared.settings().watchdog);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut lifecycle = self.shared.lifecycle_changes();
        let mut dry_runs = self.shared.take_dry_runs();
        let mut role = self.shared.role_changes();
        loop {
            // A deadline, not a delay: a dry run answered meanwhile must not put the retry off.
            let retry = async move {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let mode = tokio::select! {
                biased;
                // Mapped to (): the borrow it returns must not live on into the dry-run branch's await.
                _ = async { lifecycle.wait_for(|l| *l != Lifecycle::Running).await.map(drop) } => return,
                Some(now) = role_change(&mut role) => {
                    self.role_changed(now);
                    Mode::Apply
                }
                _ = self.shared.woken() => Mode::Apply,
                _ = ticker.tick() => Mode::Drift,
                _ = retry => {
                    retry_at = None;
                    Mode::Apply
                }
                Some(request) = next_dry_run(&mut dry_runs) => {
                    self.answer_dry_run(request).await;
                    continue;
                }
            };
            if let Some(outcome) = self.tick(mode).await {
                retry_at = self.retry.after_pass(outcome.record.ok).map(|d| tokio::time::Instant::now() + d);
            }
        }
    }

    /// The shared address came or went: said at once (event, metric, log),
    /// then applied by the pass that follows. Becoming active, the host
    /// reaches out to every peer whose endpoint it knows.
    pub fn role_changed(&mut self, now: crate::ha::Role) {
        let shared = &self.shared;
        let previous = if now == crate::ha::Role::Active { crate::ha::Role::Standby } else { crate::ha::Role::Active };
        let address = shared.settings().ha_address.map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(role = now.name(), address = %address, "high availability: the role changed");
        shared.metrics().set_ha_active(now == crate::ha::Role::Active);
        let event = crate::model::events::RoleChangedEvent { role: now.name().into(), previous: previous.name().into(), address };
        shared.events().publish("role_changed", &event);
        self.reach_out_all = (now == crate::ha::Role::Active).then_some(crate::ha::Reach::Taken);
        self.reach_out.clear();
    }

    /// One pass in the given mode, recorded and published.
    pub async fn tick(&mut self, mode: Mode) -> Option<PassOutcome> {
        let (generation, desired) = match self.desired().await {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the desired state");
                self.shared.metrics().pass_failed(mode.label());
                return None;
            }
        };
        if generation == 0 {
            // Nothing accepted yet: touch nothing.
            return None;
        }
        let span = tracing::info_span!("pass", mode = mode.name(), generation);
        let outcome = self.pass(mode, generation, desired).instrument(span).await;
        // Published whether or not it could be recorded: a POST waiting for
        // it gets its answer, and status.json shows it, either way.
        let recorded = self.shared.store().save_apply(&outcome.record).await;
        self.shared.store_outcome("apply_result", &recorded);
        self.shared.finish_pass(outcome.record.clone());
        self.announce_pass(mode, &outcome.record);
        Some(outcome)
    }

    /// The desired generation and its validated state: the one the API
    /// accepted when it is still the stored one, else the stored JSON parsed
    /// and validated (at start, or if the options changed since it was
    /// accepted: then its problems).
    async fn desired(&self) -> Result<(i64, Result<Arc<Desired>, Vec<String>>), StoreError> {
        let stored = self.shared.stored_state().await?;
        let problems = |p: crate::validate::Problems| {
            p.into_details().into_iter().map(|p| format!("{}{}: {}", crate::model::STORED_INVALID, p.path, p.message)).collect()
        };
        Ok((stored.generation, stored.desired.map_err(problems)))
    }

    async fn pass(&mut self, mode: Mode, generation: i64, desired: Result<Arc<Desired>, Vec<String>>) -> PassOutcome {
        let start = Instant::now();
        let shared = self.shared.clone();
        // Read once: the whole pass applies one role (a change meanwhile wakes another pass).
        let role = shared.role();
        let desired = match desired {
            Ok(d) if shared.has_role() => {
                if let Some(why) = self.reach_out_all.take() {
                    self.reach_out = d.networks.keys().map(|p| (*p, why)).collect();
                }
                match &self.role_view {
                    Some((a, r, view)) if Arc::ptr_eq(a, &d) && *r == role => view.clone(),
                    _ => {
                        let view = Arc::new(crate::ha::view(&d, role));
                        self.role_view = Some((d, role, view.clone()));
                        view
                    }
                }
            }
            Ok(d) => d,
            Err(errors) => {
                // Possible only if --custom-forwarding changed since it was accepted.
                let look = Look { errors, ..Default::default() };
                let pass = PassInfo { mode, generation, start, actions: 0 };
                return self.finish(pass, look, ExecReport::default(), &Desired::default());
            }
        };
        let mut laps = Laps::new();
        let targets = self.update_targets(&desired);
        let (parts, rendered) = self.nginx_parts_of(&targets);
        (self.nginx_parts, self.nginx_rendered) = (parts, rendered);
        let (nginx, left_out) = self.nginx_for(&self.nginx_parts);
        self.check_nginx_capacity(&desired);
        laps.lap("targets and nginx");
        // What a crash left half made goes first, so the look does not see it.
        let undone = shared.system().undo_unfinished_links().await;
        laps.lap("undo unfinished links");
        let poll_start = Instant::now();
        let (mut look, actions) = self.look_and_plan(mode, &targets, &nginx, &mut laps).await;
        look.errors.extend(undone);
        self.account_before_changes(mode, &desired, &mut look, &actions).await;
        laps.lap("accounting");
        if mode == Mode::Drift {
            shared.metrics().poll_duration.observe(poll_start.elapsed().as_secs_f64());
        }
        let mut report = ExecReport::default();
        self.set_ha_rules(&desired, role, &mut report).await;
        report.merge(shared.system().execute_concurrently(&actions, shared.settings().apply_concurrency).await);
        self.isolate_nginx_faults(&mut report, left_out).await;
        laps.lap("execute");
        self.reach_out.retain(|p, _| report.failed.contains(p) || look.unreadable.contains(p));
        self.remember(&targets, &report, &look, &actions);
        self.publish(&look, &report, &desired).await;
        laps.lap("publish");
        // The routes as applied: what the health checks look at from now on.
        shared.health().sync(&desired, shared.metrics(), now_unix());
        laps.lap("health sync");
        if !self.usage_routes.as_ref().is_some_and(|d| Arc::ptr_eq(d, &desired)) {
            shared.usage().set_routes(&targets, shared.metrics());
            self.usage_routes = Some(desired.clone());
        }
        laps.lap("usage routes");
        self.keep_endpoints(&desired).await;
        laps.lap("endpoints");
        tracing::debug!(steps = %laps, targets_computed = ?self.computed, nginx_rendered = ?self.nginx_rendered, "pass steps");
        if mode == Mode::Drift {
            self.drift_checks += 1;
            self.announce_repairs(&actions, &report);
        }
        self.finish(PassInfo { mode, generation, start, actions: actions.len() }, look, report, &desired)
    }

    /// With `--ha-address`, the host's own rules (SNAT to the shared
    /// address; a standby's drop), before the networks' actions: a host
    /// becoming active stops dropping before it reaches out, one becoming
    /// standby drops before anything else. Set when the networks' ports or
    /// the role change, and at the first pass.
    async fn set_ha_rules(&mut self, desired: &Desired, role: crate::ha::Role, report: &mut ExecReport) {
        let Some(address) = self.shared.settings().ha_address else { return };
        let want = (desired.networks.keys().copied().collect::<Vec<u16>>(), role);
        if self.ha_rules_set.as_ref() == Some(&want) {
            return;
        }
        match self.shared.system().set_ha_rules(address, &want.0, role).await {
            Ok(()) => self.ha_rules_set = Some(want),
            Err(e) => {
                tracing::warn!(error = %e, "cannot set the host's rules for --ha-address");
                report.errors.push(format!("setting the host's rules for --ha-address: {e}"));
                self.ha_rules_set = None;
            }
        }
    }

    /// Stores the endpoints seen since the last pass (none: nothing is
    /// written), forgetting those of peers no longer desired. A failed
    /// write is reported and tried again after the next pass.
    async fn keep_endpoints(&self, desired: &Desired) {
        let shared = &self.shared;
        shared.endpoints().retain(|port, key| desired.networks.get(&port).is_some_and(|s| s.peers.contains_key(key)));
        let changes = shared.endpoints().take_changes();
        if changes.is_empty() {
            return;
        }
        let stored = shared.store().save_endpoints(&changes, now_unix()).await;
        shared.store_outcome("endpoints", &stored);
        if stored.is_err() {
            shared.endpoints().restore_changes(changes);
        }
    }

    /// The targets of `desired`, computed only where a spec changed.
    fn update_targets(&mut self, desired: &Desired) -> Targets {
        let (targets, computed) = Targets::build(&self.shared.system().layout, desired, &self.targets);
        self.targets = targets.clone();
        self.computed = computed;
        targets
    }

    /// Looks at the system and plans, reading only: what a pass does before
    /// it changes anything, and all a dry run does. Planned once: the rules
    /// read after the plan (where it says a network is off, among others)
    /// add their action in front of that network's.
    async fn look_and_plan(
        &self,
        mode: Mode,
        targets: &Targets,
        nginx: &Arc<crate::render::NginxFiles>,
        laps: &mut Laps,
    ) -> (Look, Vec<crate::plan::Action>) {
        let mut look = self.look(mode, targets, laps).await;
        look.observed.reach_out = self.reach_out.iter().filter(|(p, _)| targets.networks.contains_key(p)).map(|(p, r)| (*p, *r)).collect();
        if !self.nginx_confirmed {
            look.observed.nginx_stale = self.shared.system().nginx_runs_older_files();
        }
        let mut plan = crate::plan::plan_parts(targets, &look.observed, &self.shared.system().layout, nginx);
        laps.lap("plan");
        let rules = self.rules_to_read(mode, targets, &look, &plan.networks_off());
        self.read_rules(&mut look, targets, &rules, &mut plan).await;
        laps.lap("rules read");
        (look, plan.into_actions())
    }

    /// At start, and whenever the number of raw ports changes: one warning
    /// line when their bounded sessions could take every connection nginx's
    /// workers have. The raw routes are the pass's nginx parts' (rendered
    /// already, only where a network changed).
    fn check_nginx_capacity(&mut self, desired: &Desired) {
        let raw_ports = desired.networks.values().map(|s| s.tcp.len() + s.udp.len()).sum();
        if self.capacity_checked == Some(raw_ports) {
            return;
        }
        self.capacity_checked = Some(raw_ports);
        let shared = &self.shared;
        let Some((limits, cpus, open_files)) = shared.system().nginx_worker_limits() else { return };
        if let Some(line) = crate::render::capacity_warning(self.nginx_parts.raw_routes(), &limits, cpus, open_files) {
            tracing::warn!("{line}");
        }
    }

    /// Whether a network can be taken as converged without a look: an
    /// apply, and a pass converged this very target (same digest).
    fn trusted(&self, mode: Mode, target: &NetworkTarget) -> bool {
        mode == Mode::Apply && self.memory.get(&target.port()).is_some_and(|m| m.verified && m.target.digest == target.digest)
    }

    /// Accounts for traffic before anything changes: the counters of a
    /// network about to be removed, or of a peer about to go, are read now or
    /// never. A drift check reads every network, so it is the poll; an
    /// apply stores only the counters its actions end (a peer added waits
    /// for the next drift check: nothing of it is lost meanwhile).
    async fn account_before_changes(&self, mode: Mode, desired: &Desired, look: &mut Look, actions: &[crate::plan::Action]) {
        let shared = &self.shared;
        let leaving: Vec<u16> = look.observed.namespaces.iter().filter(|p| !desired.networks.contains_key(p)).copied().collect();
        for (port, n) in shared.system().observe_networks(&leaving, |_| false).await {
            if let Some(reading) = n.ok().as_ref().and_then(InterfaceReading::of) {
                look.dumps.insert(port, reading);
            }
        }
        let ending: BTreeSet<u16> = leaving.iter().copied().chain(actions.iter().filter_map(|a| a.ends_counters())).collect();
        let readings: BTreeMap<u16, InterfaceReading>;
        let readings = match mode {
            Mode::Drift => &look.dumps,
            Mode::Apply => {
                readings = look.dumps.iter().filter(|(p, _)| ending.contains(p)).map(|(p, r)| (*p, r.clone())).collect();
                &readings
            }
        };
        if !readings.is_empty() || mode == Mode::Drift {
            let complete = mode == Mode::Drift && look.unreadable.is_empty() && !look.partial_read;
            let stored = shared.accounting().record_tick(shared.store(), shared.metrics(), readings, complete).await;
            shared.store_outcome("traffic", &stored);
        }
    }

    fn remember(&mut self, targets: &Targets, report: &ExecReport, look: &Look, actions: &[crate::plan::Action]) {
        self.memory.retain(|p, _| targets.networks.contains_key(p));
        let rules_touched: BTreeSet<u16> = actions.iter().filter(|a| a.may_change_rules()).filter_map(|a| a.network()).collect();
        for (port, target) in &targets.networks {
            let verified = !(report.failed.contains(port) || look.unreadable.contains(port));
            let before = self.memory.get(port);
            // Anything done to a network's rules (or a failure) calls for a
            // fresh look at them; rules read and left alone are verified;
            // rules not read stay as they were if the target's are the same
            // (a peer added leaves them as they were verified).
            let rules = if !verified || (report.changed.contains(port) && rules_touched.contains(port)) {
                None
            } else if let Some(generation) = look.rules_read.get(port) {
                Some(RulesVerified { generation: *generation })
            } else {
                before.filter(|b| b.target.digest == target.digest || b.target.rules == target.rules).and_then(|b| b.rules)
            };
            self.memory.insert(*port, Remembered { target: target.clone(), verified, rules });
        }
        self.bridge_verified = !report.global_failed;
        self.nginx_confirmed = !report.global_failed;
    }

    fn finish(&mut self, pass: PassInfo, look: Look, report: ExecReport, desired: &Desired) -> PassOutcome {
        let PassInfo { mode, generation, start, actions } = pass;
        let mut errors = look.errors;
        errors.extend(report.errors);
        let ok = errors.is_empty();
        if ok {
            self.applied_generation = generation;
        }
        self.shared.metrics().set_generation("applied", self.applied_generation);
        let duration = start.elapsed();
        self.update_metrics(mode, actions, ok, duration, desired);
        let changed: Vec<u16> = report.changed.into_iter().collect();
        let duration_ms = duration.as_millis() as u64;
        if !ok {
            tracing::warn!(mode = mode.name(), errors = %errors.join("; "), duration_ms, "pass failed");
        } else if mode == Mode::Apply || actions > 0 {
            tracing::info!(mode = mode.name(), actions, changed = ?changed, duration_ms, "pass converged");
        } else {
            tracing::debug!(duration_ms, "drift check: nothing to do");
        }
        let record = ApplyRecord {
            generation,
            applied_generation: self.applied_generation,
            ok,
            errors,
            finished_at: now_unix(),
            duration_ms,
            changed,
        };
        PassOutcome { record, actions, dumps: look.dumps }
    }

    fn update_metrics(&self, mode: Mode, actions: usize, ok: bool, duration: Duration, desired: &Desired) {
        let m = &self.shared.metrics();
        m.record_pass(mode.label(), ok, duration, actions);
        m.networks.set(desired.networks.len() as i64);
        m.peers.set(desired.networks.values().map(|s| s.peers.len() as i64).sum());
    }
}

/// Where a pass's time went, step by step (a debug line per pass).
struct Laps {
    last: Instant,
    steps: Vec<(&'static str, Duration)>,
}

impl Laps {
    fn new() -> Self {
        Laps { last: Instant::now(), steps: Vec::new() }
    }

    fn lap(&mut self, step: &'static str) {
        let now = Instant::now();
        self.steps.push((step, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for Laps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (step, took)) in self.steps.iter().enumerate() {
            write!(f, "{}{step} {:.1} ms", if i > 0 { ", " } else { "" }, took.as_secs_f64() * 1000.0)?;
        }
        Ok(())
    }
}

mod announce;
mod ingress;
mod look;
mod preview;
#[cfg(test)]
mod tests;
