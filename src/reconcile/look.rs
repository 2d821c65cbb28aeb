//! How a pass reads the system, and what it costs. Everything but the rules
//! is read for all networks at once without a process (`system::observe`).
//! Rules need an `iptables-save` inside the namespace, so they are read only
//! where they may differ from what was last verified:
//!
//! - a network not verified by an earlier pass, whose rules (or namespace)
//!   the last pass may have changed (`Action::may_change_rules`: not a
//!   peer added, nor a link, address, route, sysctl or tc change), or whose
//!   target has different rules;
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
//!
//! Networks an apply trusts (their target's digest is the one a pass
//! converged) are not looked into at all: they are `Observed::unchanged`,
//! and the planner plans nothing inside them.

use std::collections::BTreeSet;
use std::sync::Arc;

use tracing::Instrument;

use super::{Look, Mode, Reconciler};
use crate::clock::now_unix;
use crate::plan::{Plan, plan_rules, plan_unchanged};
use crate::service::SeenNetwork;
use crate::spec::{Desired, NetworkSpec};
use crate::system::ExecReport;
use crate::target::{NetworkTarget, Targets};
use crate::traffic::InterfaceReading;
use crate::types::PublicKey;

/// Every network's rules are read at least once in this many drift checks.
pub const SAFETY_ROUNDS: u64 = 60;

impl Reconciler {
    /// Reads the system: the cheap part always, the bridge's addresses and
    /// each untrusted network where needed, then the rules that may differ.
    /// Rules are read later, where the plan and the module's rules say.
    pub(super) async fn look(&self, mode: Mode, targets: &Targets, laps: &mut super::Laps) -> Look {
        let system = &self.shared.system();
        let trusted_ports: BTreeSet<u16> = targets.networks.values().filter(|t| self.trusted(mode, t)).map(|t| t.port()).collect();
        let mut look = Look { observed: system.observe_cheap_trusting(&trusted_ports), ..Default::default() };
        if mode == Mode::Drift || !self.bridge_verified {
            if let Err(e) = system.observe_bridge_addresses(&mut look.observed).await {
                look.errors.push(format!("reading the bridge: {e}"));
            }
        }
        laps.lap("look: host");
        let present = targets.networks.values().filter(|t| look.observed.namespaces.contains(&t.port()));
        let (trusted, to_read): (Vec<&Arc<NetworkTarget>>, Vec<&Arc<NetworkTarget>>) = present.partition(|t| self.trusted(mode, t));
        look.observed.unchanged.extend(trusted.iter().map(|t| t.port()));
        let ports: Vec<u16> = to_read.iter().map(|t| t.port()).collect();
        look.read.extend(ports.iter().copied());
        for (port, result) in system.observe_networks(&ports, |p| targets.networks.get(&p).is_some_and(|t| t.spec.has_routes())).await {
            self.take_reading(&mut look, targets, port, result);
        }
        laps.lap("look: networks");
        self.read_shaping(&mut look, targets, &ports).await;
        laps.lap("look: shaping");
        // Peers' endpoints matter where the plan looks inside (a network read
        // or made) and where a trusted one still reaches out: not per network.
        let needs_endpoints = |p: &u16| !look.observed.unchanged.contains(p) || self.reach_out.contains_key(p);
        look.observed.endpoints = self.shared.endpoints().of(targets.networks.keys().copied().filter(needs_endpoints));
        look
    }

    fn take_reading(
        &self,
        look: &mut Look,
        targets: &Targets,
        port: u16,
        result: Result<crate::observed::ObservedNetwork, crate::system::SysError>,
    ) {
        let Some(spec) = targets.get(port).map(|t| &*t.spec) else { return };
        match result {
            Ok(mut n) => {
                n.endpoints_changed = self.endpoints_changed(spec);
                for p in &n.problems {
                    tracing::warn!(network = port, problem = %p, "unexpected WireGuard state");
                }
                self.shared.metrics().poll_errors.inc_by(n.problems.len() as u64);
                match InterfaceReading::of(&n) {
                    Some(reading) => {
                        look.dumps.insert(port, reading);
                    }
                    None => look.partial_read |= n.wg_link.is_some(),
                }
                look.observed.networks.insert(port, n);
            }
            Err(e) => unreadable(look, port, e.to_string()),
        }
    }

    /// A peer's desired endpoint differs from the one it was last given:
    /// WireGuard's own (possibly roamed) endpoint must not hide that change.
    fn endpoints_changed(&self, spec: &NetworkSpec) -> bool {
        self.memory.get(&spec.port).is_some_and(|before| {
            let changed = |(k, p): (&PublicKey, &crate::spec::PeerSpec)| {
                p.endpoint.is_some() && before.target.spec.peers.get(k).is_some_and(|b| b.endpoint != p.endpoint)
            };
            spec.peers.iter().any(changed)
        })
    }

    /// The networks read this pass whose rules must be read too (see the
    /// module's documentation); `off`: the networks the plan changes.
    pub(super) fn rules_to_read(&self, mode: Mode, targets: &Targets, look: &Look, off: &BTreeSet<u16>) -> BTreeSet<u16> {
        // In a drift check anything off means a by-hand change (the desired
        // state did not move); in an apply, the changed networks' actions
        // are expected and say nothing about their rules.
        let elsewhere_off = |port: &u16| mode == Mode::Drift && off.contains(port);
        let turn = if mode == Mode::Drift { Some(self.drift_checks) } else { None };
        let read = look.observed.networks.iter().filter(|(p, n)| n.rules.is_none() && !look.unreadable.contains(p));
        let mut out = BTreeSet::new();
        for (index, (port, n)) in read.enumerate() {
            let Some(target) = targets.get(*port) else { continue };
            let index = index as u64;
            let by_turn = |rounds: u64| turn.is_some_and(|t| index % rounds == t % rounds);
            let stale = match self.memory.get(port).and_then(|m| m.rules.as_ref().map(|r| (m, r))) {
                None => true,
                Some((m, r)) => {
                    m.target.rules != target.rules
                        || match n.rules_generation {
                            Some(g) => r.generation != Some(g),
                            None => by_turn(2),
                        }
                }
            };
            if stale || elsewhere_off(port) || by_turn(SAFETY_ROUNDS) {
                out.insert(*port);
            }
        }
        out
    }

    /// Reads tc on both veth ends (two processes) of the networks read this
    /// pass that have a bandwidth field or were seen holding HTB; the
    /// others cost nothing (see `render::tc::steps`).
    async fn read_shaping(&self, look: &mut Look, targets: &Targets, ports: &[u16]) {
        for port in ports {
            let (Some(target), Some(n)) = (targets.get(*port), look.observed.networks.get(port)) else { continue };
            let host_htb = look.observed.host_veths.get(port).and_then(|v| v.qdisc.as_deref()) == Some("htb");
            if !(target.shaping.is_some() || host_htb || n.uplink_qdisc.as_deref() == Some("htb")) || look.unreadable.contains(port) {
                continue;
            }
            let result = self.shared.system().observe_shaping(*port).instrument(tracing::debug_span!("network", network = port)).await;
            match result {
                Ok(seen) => {
                    if let Some(n) = look.observed.networks.get_mut(port) {
                        n.shaping = Some(seen);
                    }
                }
                Err(e) => unreadable(look, *port, e.to_string()),
            }
        }
    }

    /// Reads the rules of `ports` (one process each) and plans them: their
    /// action goes first among the network's. A network whose rules cannot
    /// be read is planned as unchanged.
    pub(super) async fn read_rules(&self, look: &mut Look, targets: &Targets, ports: &BTreeSet<u16>, plan: &mut Plan) {
        for port in ports {
            let Some(target) = targets.get(*port) else { continue };
            let result = self.shared.system().observe_rules(*port).instrument(tracing::debug_span!("network", network = port)).await;
            match result {
                Ok(rules) => {
                    plan.prepend_some(*port, plan_rules(target, &rules));
                    if let Some(n) = look.observed.networks.get_mut(port) {
                        look.rules_read.insert(*port, n.rules_generation);
                        n.rules = Some(rules);
                    }
                }
                Err(e) => {
                    unreadable(look, *port, e.to_string());
                    plan.networks.insert(*port, plan_unchanged(target, &look.observed));
                }
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
        let now_there = self.shared.system().namespaces();
        for (port, n) in self.shared.system().observe_networks(&changed, |p| desired.networks.get(&p).is_some_and(|s| s.has_routes())).await
        {
            out.push((port, seen(n.ok().filter(|_| now_there.contains(&port)))));
        }
        out.extend(desired.networks.keys().filter(|p| !now_there.contains(p)).map(|p| (*p, seen(None))));
        self.shared.record_seen(out);
        self.shared.seen().retain(|p| desired.networks.contains_key(&p) || now_there.contains(&p));
    }
}

/// Plan nothing inside a network that could not be read: take it as
/// unchanged, report the error, and look again next time.
fn unreadable(look: &mut Look, port: u16, error: String) {
    look.errors.push(crate::model::pass_error(port, format_args!("{}{error}", crate::model::UNREADABLE)));
    look.observed.networks.remove(&port);
    look.observed.unchanged.insert(port);
    look.unreadable.insert(port);
}
