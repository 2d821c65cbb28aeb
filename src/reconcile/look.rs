//! How a pass reads the system, and what it costs. Everything but the rules
//! is read for all networks at once without a process (`system::observe`).
//! Rules need an `iptables-save` inside the namespace, so they are read only
//! where they may differ from what was last verified:
//!
//! - a network not verified by an earlier pass, whose rules the last pass
//!   changed (any action on it), or whose spec renders different rules;
//! - a network whose nf_tables ruleset generation moved since its rules
//!   were verified (any change to its rules, by anyone, moves it);
//! - a network where anything else is off (a by-hand change rarely comes
//!   alone);
//! - where nf_tables cannot report a generation (iptables-legacy), half of
//!   those networks each drift check, by turns;
//! - and, belt and braces, one network in [`SAFETY_ROUNDS`] each drift
//!   check, by turns.
//!
//! So by-hand drift of the rules survives at most one watchdog interval with
//! nf_tables (Debian's default), two without, whatever the number of networks.

use std::collections::BTreeSet;

use tracing::Instrument;

use super::{Look, Mode, Reconciler};
use crate::clock::now_unix;
use crate::daemon::SeenNetwork;
use crate::plan::{converged_view, plan};
use crate::render::{self, NginxFiles};
use crate::spec::{Desired, NetworkSpec};
use crate::system::ExecReport;
use crate::traffic::InterfaceReading;
use crate::types::PublicKey;

/// Every network's rules are read at least once in this many drift checks.
pub const SAFETY_ROUNDS: u64 = 60;

impl Reconciler {
    /// Reads the system: the cheap part always, the bridge's addresses and
    /// each untrusted network where needed, then the rules that may differ.
    pub(super) async fn look(&self, mode: Mode, desired: &Desired, nginx: &NginxFiles) -> Look {
        let system = &self.shared.system;
        let mut look = Look { observed: system.observe_cheap(), ..Default::default() };
        if mode == Mode::Drift || !self.bridge_verified {
            if let Err(e) = system.observe_bridge_addresses(&mut look.observed).await {
                look.errors.push(format!("reading the bridge: {e}"));
            }
        }
        let present: Vec<&NetworkSpec> = desired.networks.values().filter(|s| look.observed.namespaces.contains(&s.port)).collect();
        let (trusted, to_read): (Vec<&NetworkSpec>, Vec<&NetworkSpec>) = present.into_iter().partition(|s| self.trusted(mode, s));
        for spec in trusted {
            look.observed.networks.insert(spec.port, converged_view(&system.layout, spec));
        }
        let ports: Vec<u16> = to_read.iter().map(|s| s.port).collect();
        look.read.extend(ports.iter().copied());
        for (port, result) in system.observe_networks(&ports).await {
            self.take_reading(&mut look, desired, port, result);
        }
        let rules = self.rules_to_read(mode, desired, &look, nginx);
        self.read_rules(&mut look, desired, &rules).await;
        look.observed.endpoints = self.shared.endpoints.of(desired.networks.keys().copied());
        look
    }

    fn take_reading(
        &self,
        look: &mut Look,
        desired: &Desired,
        port: u16,
        result: Result<crate::observed::ObservedNetwork, crate::system::SysError>,
    ) {
        let Some(spec) = desired.networks.get(&port) else { return };
        match result {
            Ok(mut n) => {
                n.endpoints_changed = self.endpoints_changed(spec);
                for p in &n.problems {
                    tracing::warn!(network = port, problem = %p, "unexpected WireGuard state");
                }
                self.shared.metrics.poll_errors.inc_by(n.problems.len() as u64);
                match InterfaceReading::of(&n) {
                    Some(reading) => {
                        look.dumps.insert(port, reading);
                    }
                    None => look.partial_read |= n.wg_link.is_some(),
                }
                look.observed.networks.insert(port, n);
            }
            Err(e) => self.unreadable(look, spec, e.to_string()),
        }
    }

    /// Plan nothing for a network that could not be read: take it as
    /// converged, report the error, and look again next time.
    fn unreadable(&self, look: &mut Look, spec: &NetworkSpec, error: String) {
        look.errors.push(crate::model::pass_error(spec.port, format_args!("{}{error}", crate::model::UNREADABLE)));
        look.observed.networks.insert(spec.port, converged_view(&self.shared.system.layout, spec));
        look.unreadable.insert(spec.port);
    }

    /// A peer's desired endpoint differs from the one it was last given:
    /// WireGuard's own (possibly roamed) endpoint must not hide that change.
    fn endpoints_changed(&self, spec: &NetworkSpec) -> bool {
        self.memory.get(&spec.port).is_some_and(|before| {
            let changed = |(k, p): (&PublicKey, &crate::spec::PeerSpec)| {
                p.endpoint.is_some() && before.spec.peers.get(k).is_some_and(|b| b.endpoint != p.endpoint)
            };
            spec.peers.iter().any(changed)
        })
    }

    /// The networks read this pass whose rules must be read too (see the
    /// module's documentation).
    fn rules_to_read(&self, mode: Mode, desired: &Desired, look: &Look, nginx: &NginxFiles) -> BTreeSet<u16> {
        let layout = &self.shared.system.layout;
        // In a drift check anything off means a by-hand change (the desired
        // state did not move); in an apply, the changed networks' actions
        // are expected and say nothing about their rules.
        let elsewhere_off: BTreeSet<u16> = match mode {
            Mode::Drift => plan(desired, &look.observed, layout, nginx).iter().filter_map(crate::plan::Action::network).collect(),
            Mode::Apply => BTreeSet::new(),
        };
        let turn = if mode == Mode::Drift { Some(self.drift_checks) } else { None };
        let read = look.observed.networks.iter().filter(|(p, n)| n.rules.is_none() && !look.unreadable.contains(p));
        let mut out = BTreeSet::new();
        for (index, (port, n)) in read.enumerate() {
            let Some(spec) = desired.networks.get(port) else { continue };
            let index = index as u64;
            let by_turn = |rounds: u64| turn.is_some_and(|t| index % rounds == t % rounds);
            let stale = match self.memory.get(port).and_then(|m| m.rules.as_ref().map(|r| (m, r))) {
                None => true,
                Some((m, r)) => {
                    render::rules(layout, &m.spec) != render::rules(layout, spec)
                        || match n.rules_generation {
                            Some(g) => r.generation != Some(g),
                            None => by_turn(2),
                        }
                }
            };
            if stale || elsewhere_off.contains(port) || by_turn(SAFETY_ROUNDS) {
                out.insert(*port);
            }
        }
        out
    }

    /// Reads the rules of `ports` (one process each).
    async fn read_rules(&self, look: &mut Look, desired: &Desired, ports: &BTreeSet<u16>) {
        for port in ports {
            let Some(spec) = desired.networks.get(port) else { continue };
            let result = self.shared.system.observe_rules(*port).instrument(tracing::debug_span!("network", network = port)).await;
            match result {
                Ok(rules) => {
                    if let Some(n) = look.observed.networks.get_mut(port) {
                        look.rules_read.insert(*port, n.rules_generation);
                        n.rules = Some(rules);
                    }
                }
                Err(e) => self.unreadable(look, spec, e.to_string()),
            }
        }
    }

    /// Records what this pass saw for status.json: the networks it read
    /// and left alone as read, the ones it changed as they are now (read
    /// again, without a process), the ones not there as gone.
    pub(super) async fn publish(&self, look: &Look, report: &ExecReport, desired: &Desired) {
        let now = now_unix();
        let seen = |n: Option<crate::observed::ObservedNetwork>| SeenNetwork { observed_at: now, network: n };
        let mut out: Vec<(u16, SeenNetwork)> = look
            .read
            .iter()
            .filter(|p| !report.changed.contains(p) && !look.unreadable.contains(p))
            .filter_map(|p| look.observed.networks.get(p).map(|n| (*p, seen(Some(n.clone())))))
            .collect();
        let changed: Vec<u16> = report.changed.iter().copied().collect();
        let now_there = self.shared.system.namespaces();
        for (port, n) in self.shared.system.observe_networks(&changed).await {
            out.push((port, seen(n.ok().filter(|_| now_there.contains(&port)))));
        }
        out.extend(desired.networks.keys().filter(|p| !now_there.contains(p)).map(|p| (*p, seen(None))));
        self.shared.record_seen(out);
        self.shared.seen.retain(|p| desired.networks.contains_key(&p) || now_there.contains(&p));
    }
}
