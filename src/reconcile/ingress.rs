//! Failure isolation at the nginx step: a raw route whose port another
//! process holds (taken after validation, or while nginx was down) would
//! make nginx refuse the whole configuration, so every route of every
//! network would stop converging, and an nginx that is not running would
//! not start at all. Such routes are left out of nginx's files and reported
//! as errors of their own network (the apply's errors, status.json, a
//! `route_failed` event, `gateway_routes_failed{network}`); the next pass
//! that finds the port free opens it.

use std::collections::BTreeSet;

use super::Reconciler;
use crate::model::events::RouteFailedEvent;
use crate::render::{NginxFiles, NginxParts, raw_listens};
use crate::system::ExecReport;
use crate::target::Targets;

/// A raw route left out of nginx, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LeftOut {
    pub network: u16,
    /// `tcp://PORT` or `udp://PORT`.
    pub route: String,
    pub error: String,
}

impl Reconciler {
    /// nginx's part of each network of `targets`: kept from the last pass
    /// where the spec is the same, rendered for the others (their ports)
    /// with the DNAT ports their target computed.
    pub(super) fn nginx_parts_of(&self, targets: &Targets) -> (NginxParts, Vec<u16>) {
        let (system, settings) = (self.shared.system(), self.shared.settings());
        let networks = targets.networks.values().map(|t| (&t.spec, &t.dnat));
        NginxParts::build(&system.layout, &settings.nginx, networks, &self.nginx_parts)
    }

    /// nginx's files from the networks' `parts`, without the raw routes
    /// whose port another process holds. Ports the running nginx opened
    /// already (its stream file on disk) are its own and not probed, so a
    /// converged gateway binds nothing; with nginx down, every raw port is.
    pub(super) fn nginx_for(&self, parts: &NginxParts) -> (std::sync::Arc<NginxFiles>, Vec<LeftOut>) {
        let (system, settings) = (self.shared.system(), self.shared.settings());
        // Read only when there is a raw route to check.
        let loaded = match parts.raw_routes().next().and(system.nginx_master()) {
            Some(_) => raw_listens(&std::fs::read_to_string(&system.paths.nginx_stream).unwrap_or_default()),
            None => BTreeSet::new(),
        };
        let mut left_out = Vec::new();
        let files = parts.files(&settings.custom, &settings.nginx, |r| {
            if loaded.contains(&(r.transport, r.port)) {
                return true;
            }
            let Some(holder) = system.port_held_by_another(r.transport, &settings.nginx.raw_listen, r.port) else { return true };
            let route = format!("{}://{}", r.transport.name(), r.port);
            let error = format!("{} {} is in use by {holder}: left out of nginx until it is free", r.transport.label(), r.port);
            left_out.push(LeftOut { network: r.network, route, error });
            false
        });
        (std::sync::Arc::new(files), left_out)
    }

    /// After the plan ran: if nginx refused its files and a look at the ports
    /// now finds more routes at fault (a port taken between the look and the
    /// reload), nginx is written again without them, so the others converge
    /// in this pass. Then the routes left out become their networks' errors.
    pub(super) async fn isolate_nginx_faults(&mut self, report: &mut ExecReport, mut left_out: Vec<LeftOut>) {
        let nginx_failed = |e: &String| e.starts_with("WriteNginx:") || e.starts_with("StartNginx:");
        if report.errors.iter().any(nginx_failed) {
            let (files, again) = self.nginx_for(&self.nginx_parts);
            if again.len() > left_out.len() {
                let system = &self.shared.system();
                let second = system.execute_concurrently(&[crate::plan::Action::WriteNginx(files)], 1).await;
                if !second.global_failed {
                    report.errors.retain(|e| !nginx_failed(e));
                    report.global_failed = report.errors.iter().any(|e| !e.starts_with("network "));
                    report.nginx_reloaded |= second.nginx_reloaded;
                    left_out = again;
                }
            }
        }
        for l in &left_out {
            report.failed.insert(l.network);
            report.errors.push(format!("network {}: {}: {}", l.network, l.route, l.error));
        }
        self.announce_left_out(left_out);
    }

    /// An event for each route newly left out; the metric for all of them.
    fn announce_left_out(&mut self, left_out: Vec<LeftOut>) {
        let shared = &self.shared;
        let before: BTreeSet<(u16, String)> = self.left_out.iter().map(|l| (l.network, l.route.clone())).collect();
        for l in left_out.iter().filter(|l| !before.contains(&(l.network, l.route.clone()))) {
            tracing::warn!(network = l.network, route = %l.route, error = %l.error, "a route is left out of nginx");
            let event = RouteFailedEvent { network: l.network, route: l.route.clone(), error: l.error.clone() };
            shared.events().publish("route_failed", &event);
        }
        shared.metrics().set_routes_failed(left_out.iter().map(|l| l.network));
        self.left_out = left_out;
    }
}
