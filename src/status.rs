//! `status.json`: a fresh, read-only look at what is on the system.

use std::collections::{BTreeMap, BTreeSet};

use crate::daemon::Shared;
use crate::model::{LastApply, NetworkStatus, PeerStatus, StatusInfo};
use crate::observed::{ObservedNetwork, WgPeer};
use crate::store::{ApplyRecord, StoreError};
use crate::types::parse_listen_port;

pub async fn collect(shared: &Shared) -> Result<StatusInfo, StoreError> {
    let (generation, config) = shared.store.desired().await?;
    let last = shared.store.last_apply().await?;
    let system = &shared.system;
    let observed = system.observe_cheap();
    let desired: BTreeSet<u16> = config.keys().filter_map(|k| parse_listen_port(k).ok()).collect();
    let mut networks = BTreeMap::new();
    for port in desired.union(&observed.namespaces) {
        let present = observed.namespaces.contains(port);
        let seen = if present {
            system
                .observe_network(*port)
                .await
                .map_err(|e| tracing::warn!(network = port, error = %e, "status: cannot read the network"))
                .ok()
        } else {
            None
        };
        networks.insert(port.to_string(), network_status(shared, *port, present, desired.contains(port), seen.as_ref()));
    }
    Ok(StatusInfo {
        backend: system.backend.name().into(),
        desired_generation: generation,
        applied_generation: last.as_ref().map(|r| r.applied_generation).unwrap_or(0),
        last_apply: last.map(last_apply),
        nginx_running: observed.nginx_running,
        networks,
    })
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

fn network_status(shared: &Shared, port: u16, present: bool, desired: bool, seen: Option<&ObservedNetwork>) -> NetworkStatus {
    let layout = &shared.system.layout;
    let link = seen.and_then(|n| n.wg_link.as_ref());
    let wg = seen.and_then(|n| n.wg.as_ref());
    NetworkStatus {
        namespace: layout.netns(port),
        namespace_present: present,
        interface: layout.wg(port),
        interface_present: link.is_some(),
        interface_up: link.is_some_and(|l| l.up),
        public_key: wg.and_then(|d| d.public_key).map(|k| k.to_string()),
        listen_port: wg.map(|d| d.listen_port),
        mtu: link.map(|l| l.mtu),
        addresses: link.map(|l| l.addresses.iter().map(ToString::to_string).collect()).unwrap_or_default(),
        desired,
        peers: wg.map(|d| d.peers.iter().map(|(k, p)| (k.to_string(), peer_status(p))).collect()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests;
