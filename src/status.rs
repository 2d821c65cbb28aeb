//! `status.json`: what is on the system, from what is already known. The
//! reconciler's passes record what they saw of each network
//! ([`crate::service::Seen`]); a request older than a second's data starts
//! one processless re-read of every namespace (shared by every request
//! meanwhile) and waits for it a bounded time, so no request ever reads
//! the system itself and concurrent requests cost one re-read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::now_unix;
use crate::model::{ErrorDetail, LastApply, NetworkStatus, PeerStatus, Readiness, StatusInfo};
use crate::observed::{ObservedNetwork, WgPeer};
use crate::service::{SeenNetwork, Shared};
use crate::store::{ApplyRecord, StoreError};

/// How long a request waits for a re-read before answering with what is known.
pub const REFRESH_WAIT: Duration = Duration::from_millis(50);

pub async fn collect(shared: &Arc<Shared>) -> Result<StatusInfo, StoreError> {
    let (generation, ports) = shared.store().desired_ports().await?;
    // The latest pass, also when its record could not be stored (a full
    // disk): the stored one until the first pass of this run.
    let last = shared.last_pass();
    if shared.seen().due() {
        let refreshed = shared.seen().refreshed();
        start_refresh(shared);
        let _ = tokio::time::timeout(REFRESH_WAIT, refreshed).await;
    }
    let config_digest = config_digest(shared, generation).await?;
    let desired: BTreeSet<u16> = ports.into_iter().collect();
    // Which namespaces are there is one directory listing: always fresh.
    let present = shared.system().namespaces();
    let seen = shared.seen().networks();
    let networks = desired
        .iter()
        .chain(&present)
        .chain(seen.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|port| {
            let place = Place { desired: desired.contains(port), present: present.contains(port) };
            (port.to_string(), network_status(shared, *port, place, seen.get(port)))
        })
        .collect();
    Ok(StatusInfo {
        role: shared.has_role().then(|| shared.role().name().to_string()),
        config_digest,
        backend: shared.system().backend.name().into(),
        desired_generation: generation,
        applied_generation: last.as_ref().map(|r| r.applied_generation).unwrap_or(0),
        last_apply: last.map(last_apply),
        nginx_running: shared.system().nginx_master().is_some(),
        store_errors: shared.store_failures(),
        networks,
    })
}

/// The digest of the desired state of `generation` (see `ha::config_digest`):
/// the validated state the API or a pass kept, else the stored one
/// validated now (once per generation); a stored state that no longer
/// validates (the options changed) is hashed as it is stored.
async fn config_digest(shared: &Shared, generation: i64) -> Result<String, StoreError> {
    let stored = shared.stored_state_at(generation).await?;
    match &stored.desired {
        Ok(desired) => Ok(shared.config_digest(stored.generation, desired)),
        Err(_) => {
            use sha2::{Digest, Sha256};
            let text = serde_json::to_string(&*stored.config).unwrap_or_default();
            Ok(Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect())
        }
    }
}

/// Whether the host serves what it was asked to: the applied generation is
/// the desired one, nginx runs, and the last pass failed on no network.
/// A database that cannot be read makes it not ready too.
pub async fn readiness(shared: &Shared) -> Readiness {
    let nginx_running = shared.system().nginx_master().is_some();
    let read = async { Ok::<_, StoreError>((shared.store().desired_generation().await?, shared.store().last_apply().await?)) };
    let (desired, last) = match read.await {
        Ok(found) => found,
        Err(e) => {
            let reason = ErrorDetail { code: Some("internal".into()), ..ErrorDetail::new("$", format!("reading the state: {e}")) };
            return Readiness {
                ready: false,
                desired_generation: 0,
                applied_generation: 0,
                nginx_running,
                failing_networks: vec![],
                reasons: vec![reason],
            };
        }
    };
    let applied = last.as_ref().map_or(0, |r| r.applied_generation);
    let mut reasons = Vec::new();
    let reason = |code: &str, message: String| ErrorDetail { code: Some(code.into()), ..ErrorDetail::new("$", message) };
    if applied != desired {
        reasons.push(reason("not_applied", format!("generation {desired} is desired, {applied} is the last applied")));
    }
    if !nginx_running {
        reasons.push(reason("nginx_not_running", "nginx is not running".into()));
    }
    let errors = last.filter(|r| !r.ok).map(|r| r.errors).unwrap_or_default();
    let failing_networks: BTreeSet<u16> = errors.iter().filter_map(|e| crate::model::pass_error_network(e)).map(|(p, _)| p).collect();
    reasons.extend(errors.iter().map(|e| ErrorDetail::of_pass_error(e)));
    Readiness {
        ready: reasons.is_empty(),
        desired_generation: desired,
        applied_generation: applied,
        nginx_running,
        failing_networks: failing_networks.into_iter().collect(),
        reasons,
    }
}

/// Starts a re-read unless one is running.
fn start_refresh(shared: &Arc<Shared>) {
    if !shared.seen().begin_refresh() {
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move { refresh(&shared).await });
}

/// Re-reads every namespace with our prefix, without a process.
pub async fn refresh(shared: &Shared) {
    let start = Instant::now();
    let now = now_unix();
    let present: Vec<u16> = shared.system().namespaces().into_iter().collect();
    // Connections are counted where routes lead (all, if the state is unknown).
    let desired = shared.stored_state().await.ok().and_then(|s| s.desired.ok());
    let routed = |p: u16| desired.as_ref().is_none_or(|d| d.networks.get(&p).is_some_and(|s| s.has_routes()));
    let read = shared.system().observe_networks(&present, routed).await;
    let known: Vec<u16> = shared.seen().networks().keys().copied().collect();
    let gone: Vec<(u16, SeenNetwork)> =
        known.into_iter().filter(|p| !read.contains_key(p)).map(|p| (p, SeenNetwork { observed_at: now, network: None })).collect();
    let fresh = read.into_iter().map(|(p, n)| {
        // Unreadable: shown as a namespace without an interface.
        let n = n.unwrap_or_else(|e| {
            tracing::warn!(network = p, error = %e, "status: cannot read the network");
            // A problem, so nobody takes its missing interface for a fact.
            ObservedNetwork { problems: vec![format!("cannot read the network: {e}")], ..Default::default() }
        });
        (p, SeenNetwork { observed_at: now, network: Some(n) })
    });
    shared.record_seen(fresh.chain(gone).collect::<Vec<_>>());
    shared.seen().end_refresh(start);
}

fn last_apply(r: ApplyRecord) -> LastApply {
    LastApply {
        generation: r.generation,
        result: if r.ok { "applied".into() } else { "failed".into() },
        finished_at: r.finished_at,
        duration_ms: r.duration_ms,
        errors: r.errors,
    }
}

fn peer_status(p: &WgPeer) -> PeerStatus {
    PeerStatus {
        endpoint: p.endpoint.map(|e| e.to_string()),
        allowed_ips: p.allowed_ips.iter().map(ToString::to_string).collect(),
        latest_handshake: (p.latest_handshake > 0).then_some(p.latest_handshake),
        rx_bytes: p.rx as i64,
        tx_bytes: p.tx as i64,
    }
}

/// Whether a network is desired, and whether its namespace is there now.
struct Place {
    desired: bool,
    present: bool,
}

fn network_status(shared: &Shared, port: u16, place: Place, seen: Option<&SeenNetwork>) -> NetworkStatus {
    let layout = &shared.system().layout;
    // What was seen inside a namespace that is gone since says nothing now.
    let n = seen.and_then(|s| s.network.as_ref()).filter(|_| place.present);
    let link = n.and_then(|n| n.wg_link.as_ref());
    let wg = n.and_then(|n| n.wg.as_ref());
    NetworkStatus {
        namespace: layout.netns(port),
        namespace_present: place.present,
        interface: layout.wg(port),
        interface_present: link.is_some(),
        interface_up: link.is_some_and(|l| l.up),
        public_key: wg.and_then(|d| d.public_key).map(|k| k.to_string()),
        listen_port: wg.map(|d| d.listen_port),
        mtu: link.map(|l| l.mtu),
        addresses: link.map(|l| l.addresses.iter().map(ToString::to_string).collect()).unwrap_or_default(),
        desired: place.desired,
        observed_at: seen.map(|s| s.observed_at),
        peers: wg.map(|d| d.peers.iter().map(|(k, p)| (k.to_string(), peer_status(p))).collect::<BTreeMap<_, _>>()).unwrap_or_default(),
        routes: routes(shared, port),
    }
}

/// A network's routes: their upstreams' health and their usage.
fn routes(shared: &Shared, port: u16) -> BTreeMap<String, crate::model::RouteStatus> {
    let mut routes = shared.health().routes(port);
    let usage = shared.usage().of_network(port);
    for (key, r) in routes.iter_mut() {
        let c = usage.get(key).copied().unwrap_or_default();
        r.connections_total = c.connections_total;
        r.denied_total = c.denied_total;
        r.limited_total = c.limited_total;
        r.rx_bytes = c.rx_bytes;
        r.tx_bytes = c.tx_bytes;
        r.active_connections = shared.usage().active(port, key);
    }
    routes
}

#[cfg(test)]
mod tests;
