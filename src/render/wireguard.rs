use std::fmt::Write;

use crate::spec::NetworkSpec;

/// How `wg` spells "no preshared key".
const NO_PRESHARED_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

/// WireGuard configuration in `wg setconf`/`wg syncconf` format. Holds the
/// private key: it is passed on stdin, never written to disk or logged.
pub fn wg_conf(spec: &NetworkSpec) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "[Interface]\nPrivateKey = {}\nListenPort = {}", spec.private_key.expose(), spec.port);
    for (key, peer) in &spec.peers {
        let _ = writeln!(s, "\n[Peer]\nPublicKey = {key}");
        // `wg syncconf` leaves unwritten fields as they were: "none" must be
        // written (all zeros, `off`) or removing a key or keepalive never
        // takes effect.
        let psk = peer.preshared_key.as_ref().map_or(NO_PRESHARED_KEY.to_string(), |k| k.expose());
        let _ = writeln!(s, "PresharedKey = {psk}");
        if !peer.allowed_ips.is_empty() {
            let ips: Vec<String> = peer.allowed_ips.iter().map(ToString::to_string).collect();
            let _ = writeln!(s, "AllowedIPs = {}", ips.join(", "));
        }
        if let Some(ep) = &peer.endpoint {
            let _ = writeln!(s, "Endpoint = {ep}");
        }
        let _ = match peer.persistent_keepalive {
            Some(k) => writeln!(s, "PersistentKeepalive = {k}"),
            None => writeln!(s, "PersistentKeepalive = off"),
        };
    }
    s
}

/// For `wg addconf`: each peer's endpoint set and one keepalive sent now,
/// its keepalive then back to the configured one. WireGuard (the kernel
/// module and wireguard-go alike) sends a keepalive at once when a peer's
/// persistent keepalive goes from off to on on an interface that is up, so
/// each peer gets three sections, applied in order: the endpoint with
/// keepalive off, keepalive 1 (sends), the configured keepalive. Every
/// section repeats the allowed IPs: a configuration file's peer section
/// replaces them. No private or preshared key: those stay as set.
pub fn wg_kick(spec: &NetworkSpec, peers: &[(crate::types::PublicKey, std::net::SocketAddr)]) -> String {
    let mut s = String::new();
    for (key, endpoint) in peers {
        let Some(peer) = spec.peers.get(key) else { continue };
        let ips: Vec<String> = peer.allowed_ips.iter().map(ToString::to_string).collect();
        let allowed = if ips.is_empty() { String::new() } else { format!("AllowedIPs = {}\n", ips.join(", ")) };
        let configured = peer.persistent_keepalive.map_or("off".to_string(), |k| k.to_string());
        let _ = writeln!(s, "[Peer]\nPublicKey = {key}\n{allowed}Endpoint = {endpoint}\nPersistentKeepalive = off\n");
        let _ = writeln!(s, "[Peer]\nPublicKey = {key}\n{allowed}PersistentKeepalive = 1\n");
        let _ = writeln!(s, "[Peer]\nPublicKey = {key}\n{allowed}PersistentKeepalive = {configured}\n");
    }
    s
}

/// A WireGuard configuration text as an action carries it to `wg`: it may
/// hold the private key, so its `Debug` shows none of it and the text
/// leaves only through [`WgConf::text`], on the way to a command's stdin.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WgConf(String);

impl WgConf {
    /// The whole configuration of a network ([`wg_conf`]).
    pub fn of(spec: &NetworkSpec) -> Self {
        WgConf(wg_conf(spec))
    }

    /// The sections that reach out to `peers` ([`wg_kick`]).
    pub fn kick(spec: &NetworkSpec, peers: &[(crate::types::PublicKey, std::net::SocketAddr)]) -> Self {
        WgConf(wg_kick(spec, peers))
    }

    pub fn text(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for WgConf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WgConf({} bytes)", self.0.len())
    }
}
