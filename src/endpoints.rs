//! Each peer's last endpoint, as the daemon saw it (every drift check and
//! status read looks anyway). WireGuard forgets where its peers are when
//! its interface goes (wireguard-go killed, the namespace deleted, a
//! reboot); a peer without a configured endpoint would then be reached only
//! after its own handshake timer fired (about 15 s with a 5 s keepalive,
//! minutes without). The plan gives a rebuilt interface these endpoints back
//! and sends each peer one keepalive. Kept in memory and in the store (so a
//! restart or a crash rebuild has them too); written only when one changes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use crate::observed::ObservedNetwork;
use crate::types::PublicKey;

/// Endpoints by network (listen port) and peer.
pub type Endpoints = BTreeMap<u16, BTreeMap<PublicKey, SocketAddr>>;

#[derive(Default)]
struct Inner {
    known: Endpoints,
    /// Changed since the last [`EndpointMemory::take_changes`]: the new
    /// endpoint, or `None` for one forgotten.
    changed: BTreeMap<(u16, PublicKey), Option<SocketAddr>>,
}

#[derive(Default)]
pub struct EndpointMemory(Mutex<Inner>);

impl EndpointMemory {
    /// Starts from what the store kept.
    pub fn new(known: Endpoints) -> Self {
        EndpointMemory(Mutex::new(Inner { known, changed: BTreeMap::new() }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes in a look at network `port`: every endpoint WireGuard knows.
    /// A peer without one (an interface just rebuilt, a network gone)
    /// changes nothing: its last endpoint is what is needed then.
    pub fn observe(&self, port: u16, network: Option<&ObservedNetwork>) {
        let Some(dump) = network.and_then(|n| n.wg.as_ref()) else { return };
        let mut inner = self.lock();
        let Inner { known, changed } = &mut *inner;
        for (key, peer) in &dump.peers {
            let Some(endpoint) = peer.endpoint else { continue };
            if known.entry(port).or_default().insert(*key, endpoint) != Some(endpoint) {
                changed.insert((port, *key), Some(endpoint));
            }
        }
    }

    /// The last endpoints of the peers of the given networks.
    pub fn of(&self, ports: impl IntoIterator<Item = u16>) -> Endpoints {
        let inner = self.lock();
        ports.into_iter().filter_map(|p| inner.known.get(&p).map(|e| (p, e.clone()))).collect()
    }

    /// Forgets the peers `keep` says no longer exist (not desired).
    pub fn retain(&self, keep: impl Fn(u16, &PublicKey) -> bool) {
        let mut inner = self.lock();
        let Inner { known, changed } = &mut *inner;
        for (port, peers) in known.iter_mut() {
            peers.retain(|key, _| {
                let kept = keep(*port, key);
                if !kept {
                    changed.insert((*port, *key), None);
                }
                kept
            });
        }
        known.retain(|_, peers| !peers.is_empty());
    }

    /// What changed since the last call, to be stored.
    pub fn take_changes(&self) -> BTreeMap<(u16, PublicKey), Option<SocketAddr>> {
        std::mem::take(&mut self.lock().changed)
    }

    /// Gives back changes that could not be stored, so the next try has
    /// them (newer changes win).
    pub fn restore_changes(&self, mut changes: BTreeMap<(u16, PublicKey), Option<SocketAddr>>) {
        let mut inner = self.lock();
        changes.append(&mut inner.changed);
        inner.changed = changes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observed::{WgDump, WgPeer};

    fn key(b: u8) -> PublicKey {
        PublicKey::from_bytes([b; 32])
    }

    fn look(peers: &[(u8, Option<&str>)]) -> ObservedNetwork {
        let peers =
            peers.iter().map(|(k, e)| (key(*k), WgPeer { endpoint: e.map(|e| e.parse().unwrap()), ..Default::default() })).collect();
        ObservedNetwork { wg: Some(WgDump { peers, ..Default::default() }), ..Default::default() }
    }

    #[test]
    fn an_endpoint_is_kept_until_its_peer_goes_and_only_changes_are_written() {
        let m = EndpointMemory::default();
        m.observe(51820, Some(&look(&[(1, Some("192.0.2.1:5000")), (2, None)])));
        let a: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        assert_eq!(m.take_changes(), BTreeMap::from([((51820, key(1)), Some(a))]));
        m.observe(51820, Some(&look(&[(1, Some("192.0.2.1:5000"))])));
        assert!(m.take_changes().is_empty(), "the same endpoint again: nothing to write");
        // The interface is rebuilt (no endpoint) or the network gone: kept.
        m.observe(51820, Some(&look(&[(1, None)])));
        m.observe(51820, None);
        assert_eq!(m.of([51820, 51821]), BTreeMap::from([(51820, BTreeMap::from([(key(1), a)]))]));
        assert!(m.take_changes().is_empty());
        // Roaming: the new endpoint.
        m.observe(51820, Some(&look(&[(1, Some("[2001:db8::1]:7"))])));
        let b: SocketAddr = "[2001:db8::1]:7".parse().unwrap();
        assert_eq!(m.of([51820])[&51820][&key(1)], b);
        let changes = m.take_changes();
        // A failed write gives them back; a newer change wins over them.
        m.observe(51820, Some(&look(&[(1, Some("192.0.2.9:1"))])));
        m.restore_changes(changes);
        let c: SocketAddr = "192.0.2.9:1".parse().unwrap();
        assert_eq!(m.take_changes(), BTreeMap::from([((51820, key(1)), Some(c))]));
        // The peer is no longer desired: forgotten, and deleted from the store.
        m.retain(|_, k| *k != key(1));
        assert!(m.of([51820]).is_empty());
        assert_eq!(m.take_changes(), BTreeMap::from([((51820, key(1)), None)]));
    }
}
