//! Two hosts, one address (`--ha-address`): keepalived moves the shared
//! address between two gateway hosts that hold the same desired state. The
//! host holding it is *active*, the other *standby*. Pure parts here: the
//! role, the address's check, the state a standby applies (everything but
//! what would make WireGuard send: no endpoint, no keepalive), and the
//! digest that lets an orchestrator compare two hosts' states. Watching
//! the address is `system::kernel::role`'s job; acting on a change the reconciler's.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::spec::{Desired, NetworkSpec};
use crate::types::Cidr;

/// What a host with `--ha-address` does with its networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Holds the shared address: serves, and talks to the peers.
    Active,
    /// Does not hold it: everything is built, nothing is sent to a peer.
    Standby,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
        }
    }

    /// The role of a host whose addresses are `local`.
    pub fn of(address: IpAddr, local: impl IntoIterator<Item = IpAddr>) -> Role {
        if local.into_iter().any(|a| a == address) { Role::Active } else { Role::Standby }
    }
}

/// Why a host reaches out to its peers (see `plan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The shared address just came to this host: always.
    Taken,
    /// The daemon started active: where WireGuard knows no endpoint.
    Started,
}

/// `--ha-address`: an address keepalived can move and peers can reach: a
/// global unicast address (not loopback, link-local, multicast, broadcast,
/// unspecified nor an IPv4-in-IPv6 form), written canonically.
pub fn parse_address(s: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = s.parse().map_err(|_| format!("'{s}' is not an IP address (e.g. 192.0.2.10 or 2001:db8::10)"))?;
    if ip.to_string() != s {
        return Err(format!("'{s}' is not written canonically: give {ip}"));
    }
    let zero_net = matches!(ip, IpAddr::V4(a) if a.octets()[0] == 0);
    let host = Cidr::new(ip, if ip.is_ipv4() { 32 } else { 128 }).ok_or_else(|| format!("'{s}' is not an address"))?;
    if zero_net || crate::validate::check_interface_address(&host).is_err() {
        return Err(format!(
            "{ip} cannot be a shared address: give the unicast address keepalived moves between the two hosts (not loopback, link-local, multicast, broadcast or unspecified)"
        ));
    }
    Ok(ip)
}

/// What a host in `role` applies of the desired state: all of it when
/// active; when standby the same networks, routes and rules, but no peer
/// endpoint and no keepalive, so WireGuard has nowhere to send a handshake,
/// keepalive or data packet (traffic nginx sends into a network finds no
/// endpoint and goes nowhere), and each network is marked so any endpoint
/// WireGuard still knows (learned while active) is forgotten.
pub fn view(desired: &Desired, role: Role) -> Desired {
    match role {
        Role::Active => desired.clone(),
        Role::Standby => Desired { networks: desired.networks.iter().map(|(p, s)| (*p, std::sync::Arc::new(standby_spec(s)))).collect() },
    }
}

fn standby_spec(spec: &NetworkSpec) -> NetworkSpec {
    let mut s = spec.clone();
    s.standby = true;
    for peer in s.peers.values_mut() {
        peer.endpoint = None;
        peer.persistent_keepalive = None;
    }
    s
}

/// A digest of the canonical desired state (lowercase hex SHA-256): equal
/// on two hosts that hold the same state, however it was sent (POST or
/// PATCHes, key order, default values written or not). Private and
/// preshared keys go in as their SHA-256 only.
pub fn config_digest(desired: &Desired) -> String {
    use sha2::{Digest, Sha256};
    let mut text = String::new();
    for spec in desired.networks.values() {
        canonical(&mut text, spec);
    }
    hex(&Sha256::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// One network as lines of text, every field in a fixed order.
fn canonical(out: &mut String, spec: &NetworkSpec) {
    use sha2::{Digest, Sha256};
    let secret = |k: &crate::types::SecretKey| hex(&Sha256::digest(k.expose().as_bytes()));
    let list = |v: &[Cidr]| v.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    let _ = writeln!(out, "network {} key {} mtu {} address {}", spec.port, secret(&spec.private_key), spec.mtu, list(&spec.addresses));
    for (key, p) in &spec.peers {
        let psk = p.preshared_key.as_ref().map_or_else(|| "-".to_string(), secret);
        let endpoint = p.endpoint.map_or_else(|| "-".to_string(), |e| e.to_string());
        let keepalive = p.persistent_keepalive.map_or_else(|| "-".to_string(), |k| k.to_string());
        let _ = writeln!(out, " peer {key} psk {psk} allowed {} endpoint {endpoint} keepalive {keepalive}", list(&p.allowed_ips));
    }
    let upstreams = |u: &[std::net::SocketAddrV4]| u.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    for (host, u) in &spec.https {
        let _ = writeln!(out, " https {host} {} proxy_protocol {}", upstreams(u), spec.proxy_protocol.contains(host));
    }
    for (host, u) in &spec.http {
        let _ = writeln!(out, " http {host} {}", upstreams(u));
    }
    for (scheme, routes) in [("tcp", &spec.tcp), ("udp", &spec.udp)] {
        for (port, r) in routes {
            let _ = writeln!(out, " {scheme} {port} {} proxy_protocol {}", upstreams(&r.upstreams), r.proxy_protocol);
        }
    }
    // Only where given: a state without them keeps its digest.
    let opt = |v: Option<u32>| v.map_or_else(|| "-".to_string(), |n| n.to_string());
    let bw = |b: Option<crate::spec::Bandwidth>| {
        b.map_or_else(|| "-".to_string(), |b| format!("{}/{}", opt(b.ingress_mbit), opt(b.egress_mbit)))
    };
    for (key, l) in &spec.route_limits {
        let allow = l.allow.as_deref().map_or_else(|| "-".to_string(), list);
        let (max, per_client) = (opt(l.max_connections), opt(l.max_connections_per_client));
        let _ = writeln!(
            out,
            " limits {key} allow {allow} deny {} max {max} per_client {per_client} bandwidth {}",
            list(&l.deny),
            bw(l.bandwidth)
        );
    }
    if spec.bandwidth.is_some() {
        let _ = writeln!(out, " bandwidth {}", bw(spec.bandwidth));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_address_is_a_canonical_unicast_address() {
        assert_eq!(parse_address("192.0.2.10"), Ok("192.0.2.10".parse().unwrap()));
        assert_eq!(parse_address("2001:db8::10"), Ok("2001:db8::10".parse().unwrap()));
        for bad in [
            "",
            "host.example",
            "192.0.2.10/32",
            "192.0.2.010",
            "2001:DB8::10",
            "2001:db8:0::10",
            "127.0.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "169.254.1.1",
            "224.0.0.18",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "ff02::12",
            "::ffff:192.0.2.10",
        ] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_role_follows_the_address() {
        let a: IpAddr = "192.0.2.10".parse().unwrap();
        let others: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap(), "2001:db8::10".parse().unwrap()];
        assert_eq!(Role::of(a, others.clone()), Role::Standby);
        assert_eq!(Role::of(a, others.into_iter().chain([a])), Role::Active);
    }

    #[test]
    fn a_standby_gets_every_network_without_endpoints_or_keepalives() {
        let desired = crate::testing::converged_desired();
        assert_eq!(view(&desired, Role::Active), desired, "active: the state as given");
        let standby = view(&desired, Role::Standby);
        assert_eq!(standby.networks.keys().collect::<Vec<_>>(), desired.networks.keys().collect::<Vec<_>>());
        for (port, s) in &standby.networks {
            let given = &desired.networks[port];
            assert!(s.standby && !given.standby);
            assert!(s.peers.values().all(|p| p.endpoint.is_none() && p.persistent_keepalive.is_none()), "{port}");
            assert_eq!(s.peers.keys().collect::<Vec<_>>(), given.peers.keys().collect::<Vec<_>>());
            assert_eq!((&s.addresses, &s.https, &s.tcp, s.routes()), (&given.addresses, &given.https, &given.tcp, given.routes()));
        }
        assert!(desired.networks.values().any(|s| s.peers.values().any(|p| p.endpoint.is_some() && p.persistent_keepalive.is_some())));
    }

    #[test]
    fn the_digest_is_that_of_the_state_not_of_how_it_was_sent() {
        let desired = crate::testing::converged_desired();
        let d = config_digest(&desired);
        assert_eq!(d.len(), 64);
        assert!(d.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(config_digest(&desired.clone()), d);
        assert_ne!(config_digest(&Desired::default()), d);
        let mut other = desired.clone();
        let spec = std::sync::Arc::make_mut(other.networks.values_mut().next().unwrap());
        spec.mtu += 1;
        assert_ne!(config_digest(&other), d, "any field counts");
        let mut other = desired.clone();
        let peer = std::sync::Arc::make_mut(other.networks.values_mut().next().unwrap()).peers.values_mut().next().unwrap();
        peer.persistent_keepalive = Some(peer.persistent_keepalive.unwrap_or(1) + 1);
        assert_ne!(config_digest(&other), d);
        assert!(!d.contains(&desired.networks.values().next().unwrap().private_key.expose()));
    }
}
