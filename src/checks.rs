//! The health check loop: every `--health-interval`, one round checks every
//! upstream of every route ([`crate::health::Health::targets`]) with a TCP
//! connect from inside its network's namespace (no process:
//! [`crate::system::kernel::probe`]), then records the outcomes for status.json and
//! `gateway_upstream_up`, and publishes `upstream_down` / `upstream_up`.
//!
//! It runs beside the reconciler, never inside it: a slow or silent
//! upstream costs its round time (bounded by the connect timeout), never a
//! pass's or a request's. Rounds do not overlap: one that outlasts the
//! interval delays the next.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::clock::now_unix;
use crate::service::{Lifecycle, Shared};
use crate::system::kernel::probe::NsChecks;

/// Runs until the daemon stops; returns at once with checks off.
pub async fn run(shared: Arc<Shared>) {
    let interval = shared.health().interval;
    if interval.is_zero() {
        return;
    }
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lifecycle = shared.lifecycle_changes();
    loop {
        tokio::select! {
            biased;
            _ = async { lifecycle.wait_for(|l| *l != Lifecycle::Running).await.map(drop) } => return,
            _ = ticker.tick() => round(&shared).await,
        }
    }
}

/// One round over every upstream of the routes the last pass listed.
pub async fn round(shared: &Shared) {
    let targets = shared.health().targets();
    if targets.is_empty() {
        return;
    }
    let start = std::time::Instant::now();
    let (layout, netns_dir) = (&shared.system().layout, &shared.system().paths.netns_dir);
    let jobs = targets.iter().map(|(port, ups)| NsChecks { netns: Some(netns_dir.join(layout.netns(*port))), upstreams: ups.clone() });
    let results = shared.health().probe.check(jobs.collect(), shared.health().timeout()).await;
    let now = now_unix();
    for ((port, upstreams), outcomes) in targets.into_iter().zip(results) {
        let outcomes: BTreeMap<_, _> = upstreams.into_iter().zip(outcomes).collect();
        for (name, event) in shared.health().record(port, &outcomes, now, shared.metrics()) {
            match &event.error {
                Some(error) => tracing::warn!(network = port, route = %event.route, upstream = %event.upstream, %error, "upstream down"),
                None => tracing::info!(network = port, route = %event.route, upstream = %event.upstream, "upstream up"),
            }
            shared.events().publish(name, &event);
        }
    }
    shared.metrics().health_round_duration.observe(start.elapsed().as_secs_f64());
}
