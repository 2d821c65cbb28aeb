//! `status.json`: a fresh, read-only look at what is on the system.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{LastApply, NetworkStatus, PeerStatus, StatusInfo};
use crate::reconcile::Shared;
use crate::store::StoreError;
use crate::validate::parse_port_key;

pub async fn collect(shared: &Shared) -> Result<StatusInfo, StoreError> {
    let (generation, config) = shared.store.desired().await?;
    let last = shared.store.last_apply().await?;
    let observer = &shared.observer;
    let layout = &observer.layout;
    let observed = observer.observe_cheap();
    let desired: BTreeSet<u16> = config.keys().filter_map(|k| parse_port_key(k).ok()).collect();
    let mut networks = BTreeMap::new();
    for port in desired.union(&observed.namespaces) {
        let present = observed.namespaces.contains(port);
        let seen = if present {
            match observer.observe_network(*port).await {
                Ok(n) => Some(n),
                Err(e) => {
                    tracing::warn!("status: network {port}: {e}");
                    None
                }
            }
        } else {
            None
        };
        let link = seen.as_ref().and_then(|n| n.wg_link.clone());
        let wg = seen.as_ref().and_then(|n| n.wg.clone());
        let peers = wg
            .as_ref()
            .map(|d| {
                d.peers
                    .iter()
                    .map(|p| {
                        (
                            p.public_key.clone(),
                            PeerStatus {
                                endpoint: p.endpoint.clone(),
                                allowed_ips: p.allowed_ips.clone(),
                                latest_handshake: (p.latest_handshake > 0).then_some(p.latest_handshake),
                                rx_bytes: p.rx as i64,
                                tx_bytes: p.tx as i64,
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        networks.insert(
            port.to_string(),
            NetworkStatus {
                namespace: layout.netns(*port),
                namespace_present: present,
                interface: layout.wg(*port),
                interface_present: link.is_some(),
                interface_up: link.as_ref().is_some_and(|l| l.up),
                public_key: wg.as_ref().map(|d| d.public_key.clone()),
                listen_port: wg.as_ref().map(|d| d.listen_port),
                mtu: link.as_ref().map(|l| l.mtu),
                addresses: link.map(|l| l.addresses.iter().map(ToString::to_string).collect()).unwrap_or_default(),
                desired: desired.contains(port),
                peers,
            },
        );
    }
    Ok(StatusInfo {
        backend: shared.backend.name().into(),
        desired_generation: generation,
        applied_generation: last.as_ref().map(|r| r.applied_generation).unwrap_or(0),
        last_apply: last.map(|r| LastApply {
            generation: r.generation,
            result: if r.ok { "applied".into() } else { "failed".into() },
            finished_at: r.finished_at,
            duration_ms: r.duration_ms,
            errors: r.errors,
        }),
        nginx_running: observed.nginx_running,
        networks,
    })
}
