//! Names and addresses of everything the gateway creates, derived from a
//! network's listen port alone, so no allocation state has to be kept and two
//! instances with different prefixes can share a machine.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::types::{Cidr, parse_listen_port};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Namespace of network P is `{netns_prefix}{P}`.
    pub netns_prefix: String,
    /// WireGuard interface of network P is `{wg_prefix}{P}` (unique machine-wide).
    pub wg_prefix: String,
    /// Root-namespace end of network P's veth is `{veth_prefix}{P}`.
    pub veth_prefix: String,
    /// Bridge in the root namespace joining every network's veth.
    pub bridge: String,
    /// First address of the bridge subnet (a /16 or larger): the bridge takes
    /// .0.1, network P takes base + P.
    pub bridge_base: Ipv4Addr,
    pub bridge_prefix: u8,
    /// DNAT ports inside a namespace start here, one per distinct upstream.
    pub dnat_port_base: u16,
}

/// Name of the namespace end of every veth (namespaces are separate, so it can be fixed).
pub const VETH_NS_NAME: &str = "gw-uplink";
pub const CHAIN_DNAT: &str = "GATEWAY-DNAT";
pub const CHAIN_SNAT: &str = "GATEWAY-SNAT";
pub const CHAIN_FORWARD: &str = "GATEWAY-FORWARD";

/// The alias (`ip link set ... alias`) the gateway gives the links it creates
/// in the root namespace, so it never deletes somebody else's `wg2`.
pub const OWNED_ALIAS: &str = "gateway";

/// Settings inside a network's namespace: forwarding for both families (a
/// kernel without IPv6 just skips that key), and secondary addresses
/// promoted when a primary is removed (or removing one address drops the others).
pub const NAMESPACE_SYSCTLS: [(&str, &str); 3] =
    [("net.ipv4.ip_forward", "1"), ("net.ipv6.conf.all.forwarding", "1"), ("net.ipv4.conf.all.promote_secondaries", "1")];

impl Layout {
    pub fn new(
        netns_prefix: &str,
        wg_prefix: &str,
        veth_prefix: &str,
        bridge: &str,
        bridge_subnet: &str,
        dnat_port_base: u16,
    ) -> Result<Self, String> {
        for (what, p, max) in
            [("namespace prefix", netns_prefix, 200), ("interface prefix", wg_prefix, 10), ("veth prefix", veth_prefix, 10)]
        {
            if p.is_empty() || p.len() > max || !p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') {
                return Err(format!("{what} '{p}' must be 1..={max} characters of a-z, 0-9, '-' or '_'"));
            }
        }
        if bridge.is_empty() || bridge.len() > 15 || !bridge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(format!("bridge name '{bridge}' must be 1..=15 characters of a-z, 0-9, '-' or '_'"));
        }
        let subnet: Cidr = bridge_subnet.parse().map_err(|e| format!("bridge subnet: {e}"))?;
        let base = match subnet.network().addr {
            std::net::IpAddr::V4(a) if subnet.prefix <= 16 => a,
            _ => return Err("bridge subnet must be an IPv4 network of /16 or larger, e.g. 10.199.0.0/16".into()),
        };
        if u32::from(dnat_port_base) + 10_000 > 65_535 || dnat_port_base < 1024 {
            return Err("DNAT port base must be 1024..=55535".into());
        }
        Ok(Layout {
            netns_prefix: netns_prefix.into(),
            wg_prefix: wg_prefix.into(),
            veth_prefix: veth_prefix.into(),
            bridge: bridge.into(),
            bridge_base: base,
            bridge_prefix: subnet.prefix,
            dnat_port_base,
        })
    }

    pub fn netns(&self, port: u16) -> String {
        format!("{}{port}", self.netns_prefix)
    }
    pub fn wg(&self, port: u16) -> String {
        format!("{}{port}", self.wg_prefix)
    }
    pub fn veth_host(&self, port: u16) -> String {
        format!("{}{port}", self.veth_prefix)
    }
    /// The port of a namespace name with our prefix, if it is one of ours.
    pub fn port_of_netns(&self, name: &str) -> Option<u16> {
        parse_listen_port(name.strip_prefix(&self.netns_prefix)?).ok()
    }
    pub fn port_of_wg(&self, name: &str) -> Option<u16> {
        parse_listen_port(name.strip_prefix(&self.wg_prefix)?).ok()
    }
    pub fn port_of_veth_host(&self, name: &str) -> Option<u16> {
        parse_listen_port(name.strip_prefix(&self.veth_prefix)?).ok()
    }
    pub fn bridge_subnet(&self) -> Cidr {
        Cidr { addr: self.bridge_base.into(), prefix: self.bridge_prefix }
    }
    pub fn bridge_addr(&self) -> Cidr {
        Cidr { addr: Ipv4Addr::from(u32::from(self.bridge_base) + 1).into(), prefix: self.bridge_prefix }
    }
    pub fn veth_ns_ip(&self, port: u16) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.bridge_base) + u32::from(port))
    }
    pub fn veth_ns_addr(&self, port: u16) -> Cidr {
        Cidr { addr: self.veth_ns_ip(port).into(), prefix: self.bridge_prefix }
    }
    /// The MAC address of network P's veth end in its namespace, derived from
    /// P (locally administered): a veth made again (the network re-added,
    /// repaired, or rebuilt after a crash) answers at the same MAC, so the
    /// host's neighbour entry for its address stays right. A new MAC would
    /// leave nginx's connections to the network unanswered until that entry
    /// expired (tens of seconds).
    pub fn uplink_mac(&self, port: u16) -> String {
        format!("02:67:77:00:{:02x}:{:02x}", port >> 8, port & 0xff)
    }
    /// Ports on the veth address that DNAT to each upstream. A port is
    /// derived from the upstream itself (a hash into 10,000 ports, the next
    /// free one on a collision), so adding or removing one upstream leaves
    /// the others' ports alone: nginx, still on its old config for a moment,
    /// never reaches the wrong upstream while the rules change.
    pub fn dnat_ports(&self, upstreams: &[SocketAddrV4]) -> BTreeMap<SocketAddrV4, u16> {
        const RANGE: u32 = 10_000;
        let mut taken = BTreeSet::new();
        let mut out = BTreeMap::new();
        let mut sorted = upstreams.to_vec();
        sorted.sort();
        sorted.dedup();
        for u in sorted.into_iter().take(RANGE as usize) {
            // FNV-1a: stable across builds and platforms.
            let mut h: u32 = 0x811c_9dc5;
            for b in u.ip().octets().into_iter().chain(u.port().to_be_bytes()) {
                h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
            }
            let mut slot = h % RANGE;
            while !taken.insert(slot) {
                slot = (slot + 1) % RANGE;
            }
            out.insert(u, self.dnat_port_base + slot as u16);
        }
        out
    }
}

impl Default for Layout {
    fn default() -> Self {
        Layout::new("network-", "wg", "gwv", "gwbr0", "10.199.0.0/16", 20000).expect("valid defaults")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses() {
        let l = Layout::default();
        assert_eq!(l.netns(51820), "network-51820");
        assert_eq!(l.wg(51820), "wg51820");
        assert_eq!(l.veth_host(65534), "gwv65534");
        assert_eq!(l.bridge_addr().to_string(), "10.199.0.1/16");
        assert_eq!(l.veth_ns_addr(2).to_string(), "10.199.0.2/16");
        assert_eq!(l.veth_ns_addr(51820).to_string(), "10.199.202.108/16");
        assert_eq!((l.uplink_mac(51820), l.uplink_mac(2)), ("02:67:77:00:ca:6c".to_string(), "02:67:77:00:00:02".to_string()));
        assert_eq!(l.port_of_netns("network-51820"), Some(51820));
        assert_eq!(l.port_of_netns("network-0518"), None);
        assert_eq!(l.port_of_netns("other-1"), None);
        assert_eq!((l.port_of_wg("wg51820"), l.port_of_wg("wgx"), l.port_of_wg("gwv51820")), (Some(51820), None, None));
        assert_eq!((l.port_of_veth_host("gwv2"), l.port_of_veth_host("gwbr0"), l.port_of_veth_host("wg2")), (Some(2), None, None));
        assert_eq!(l.bridge_subnet().to_string(), "10.199.0.0/16");
        assert!(Layout::new("x", "wg", "v", "br", "10.0.0.0/24", 20000).is_err());
        let ups: Vec<SocketAddrV4> = (2..200).map(|i| SocketAddrV4::new(Ipv4Addr::new(10, 80, 0, i), 443)).collect();
        let ports = l.dnat_ports(&ups);
        assert_eq!(ports.len(), ups.len());
        assert_eq!(ports.values().collect::<BTreeSet<_>>().len(), ups.len(), "distinct ports");
        assert!(ports.values().all(|p| (20000..30000).contains(p)));
        let fewer = l.dnat_ports(&ups[1..]);
        assert!(fewer.iter().all(|(u, p)| ports[u] == *p), "removing an upstream moves no other");
        assert!(Layout::new("x;rm", "wg", "v", "br", "10.0.0.0/16", 20000).is_err());
    }

    #[test]
    fn dnat_port_collisions_take_the_next_free_port() {
        // These two hash to the same slot (5837): the first in order takes
        // it, the other the next one; alone, either takes the slot itself.
        let a = SocketAddrV4::new(Ipv4Addr::new(10, 80, 0, 42), 443);
        let b = SocketAddrV4::new(Ipv4Addr::new(10, 80, 0, 82), 80);
        let l = Layout::default();
        assert_eq!(l.dnat_ports(&[b, a]), BTreeMap::from([(a, 25837), (b, 25838)]));
        assert_eq!(l.dnat_ports(&[b]), BTreeMap::from([(b, 25837)]));
        assert_eq!(l.dnat_ports(&[a, a]), BTreeMap::from([(a, 25837)]), "an upstream twice takes one port");
    }
}
