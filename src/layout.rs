//! Names and addresses of everything the gateway creates, derived from a
//! network's listen port alone, so no allocation state has to be kept and two
//! instances with different prefixes can share a machine.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::spec::NetworkSpec;
use crate::types::{Cidr, Transport, parse_listen_port};

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
    /// DNAT ports inside a namespace start here, one per upstream of each route.
    pub dnat_port_base: u16,
}

/// Name of the namespace end of every veth (namespaces are separate, so it can be fixed).
pub const VETH_NS_NAME: &str = "gw-uplink";

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
    /// Ports on the veth address that DNAT to the routes' upstreams, in one
    /// transport's space (TCP and UDP ports are separate): `routes` are
    /// each route's key (as in `proxy`) with its upstreams.
    ///
    /// Each upstream has a port derived from the upstream itself (a hash
    /// into 10,000 ports, the next free one on a collision), so adding or
    /// removing one upstream leaves the others' ports alone: nginx, still on
    /// its old config for a moment, never reaches the wrong upstream while
    /// the rules change. That port is the first route's (in key order) to
    /// use the upstream. Every other route that uses it too gets a port of
    /// its own, derived from the upstream and its key and placed after all
    /// the upstreams' ports: each route's connections are then its alone,
    /// in tc (its bandwidth) and in conntrack (its open connections), and
    /// a network whose routes share no upstream has the ports it always
    /// had. When the range is full (10,000 ports), further routes share
    /// their upstream's port.
    ///
    /// With the ports computed `before` (the network's last target), each
    /// upstream and route keeps the port it had, and a port given up by this
    /// change goes to no other while a free one is left: a new upstream
    /// whose hash lands on a taken slot never moves the one there, so nginx,
    /// still on its old config for a moment, never sends a route's
    /// connections to another's upstream. (After a restart nothing is
    /// known `before`: the ports are computed afresh, and a collision's
    /// order may differ from the one history made.)
    pub fn dnat_ports<'a>(&self, routes: impl IntoIterator<Item = (&'a str, &'a [SocketAddrV4])>, before: Option<&DnatPorts>) -> DnatPorts {
        const RANGE: u32 = 10_000;
        let mut users: BTreeMap<SocketAddrV4, BTreeSet<&str>> = BTreeMap::new();
        for (key, upstreams) in routes {
            for u in upstreams {
                users.entry(*u).or_default().insert(key);
            }
        }
        let base = self.dnat_port_base;
        let slot_of = |port: u16| u32::from(port.wrapping_sub(base));
        let mut out = DnatPorts::default();
        for u in users.keys() {
            if let Some(p) = before.and_then(|b| b.upstream.get(u)) {
                out.upstream.insert(*u, *p);
            }
        }
        for (u, keys) in users.iter().filter(|(u, _)| out.upstream.contains_key(*u)) {
            for key in keys.iter().skip(1) {
                if let Some(p) = before.and_then(|b| b.shared.get(u)?.get(*key)) {
                    out.shared.entry(*u).or_default().insert(key.to_string(), *p);
                }
            }
        }
        let mut taken: BTreeSet<u32> = out.all().into_iter().map(|(_, p)| slot_of(p)).collect();
        let freed: BTreeSet<u32> =
            before.map(|b| b.all().into_iter().map(|(_, p)| slot_of(p)).filter(|s| !taken.contains(s)).collect()).unwrap_or_default();
        let mut place = |bytes: &[u8]| {
            if taken.len() >= RANGE as usize {
                return None;
            }
            // FNV-1a: stable across builds and platforms.
            let start = bytes.iter().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)) % RANGE;
            // A slot nobody held first; one given up now only if none is left.
            let free = |avoid_freed: bool| {
                (0..RANGE).map(|i| (start + i) % RANGE).find(|s| !(taken.contains(s) || avoid_freed && freed.contains(s)))
            };
            let slot = free(true).or_else(|| free(false))?;
            taken.insert(slot);
            Some(base + slot as u16)
        };
        let bytes = |u: &SocketAddrV4| -> Vec<u8> { u.ip().octets().into_iter().chain(u.port().to_be_bytes()).collect() };
        let placed: Vec<SocketAddrV4> = users.keys().filter(|u| !out.upstream.contains_key(*u)).copied().collect();
        for u in placed {
            let Some(port) = place(&bytes(&u)) else { break };
            out.upstream.insert(u, port);
        }
        for (u, keys) in &users {
            let kept = out.shared.get(u).cloned().unwrap_or_default();
            for key in keys.iter().skip(1).filter(|k| out.upstream.contains_key(u) && !kept.contains_key(**k)) {
                let Some(port) = place(&[bytes(u), key.as_bytes().to_vec()].concat()) else { break };
                out.shared.entry(*u).or_default().insert(key.to_string(), port);
            }
        }
        out
    }
}

impl Layout {
    /// The DNAT ports of network `spec`'s routes, in both transports:
    /// computed once per change of the spec (`target::NetworkTarget`), then
    /// read by the rules, the tc trees, nginx's upstreams and the usage
    /// counters alike.
    /// `before`: the ports of the network's last target (see [`Self::dnat_ports`]).
    pub fn network_dnat(&self, spec: &NetworkSpec, before: Option<&NetworkDnat>) -> NetworkDnat {
        let of = |transport| {
            let routes = spec.dnat_routes(transport);
            self.dnat_ports(routes.iter().map(|(k, u)| (k.as_str(), *u)), before.map(|b| b.of(transport)))
        };
        NetworkDnat { tcp: of(Transport::Tcp), udp: of(Transport::Udp) }
    }
}

/// A network's DNAT ports, TCP's and UDP's (see [`Layout::network_dnat`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkDnat {
    pub tcp: DnatPorts,
    pub udp: DnatPorts,
}

impl NetworkDnat {
    pub fn of(&self, transport: Transport) -> &DnatPorts {
        match transport {
            Transport::Tcp => &self.tcp,
            Transport::Udp => &self.udp,
        }
    }
}

/// The DNAT ports of one transport of a network (see [`Layout::dnat_ports`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnatPorts {
    /// Each upstream's own port: its first route's.
    upstream: BTreeMap<SocketAddrV4, u16>,
    /// The ports of the other routes that use an upstream, by route key.
    shared: BTreeMap<SocketAddrV4, BTreeMap<String, u16>>,
}

impl DnatPorts {
    /// Where route `key`'s connections to `upstream` enter the network.
    pub fn port(&self, key: &str, upstream: &SocketAddrV4) -> Option<u16> {
        self.shared.get(upstream).and_then(|routes| routes.get(key)).or_else(|| self.upstream.get(upstream)).copied()
    }

    /// Every port with the upstream it leads to, sorted by upstream, then port.
    pub fn all(&self) -> Vec<(SocketAddrV4, u16)> {
        let shared = self.shared.iter().flat_map(|(u, routes)| routes.values().map(move |p| (*u, *p)));
        let mut all: Vec<(SocketAddrV4, u16)> = self.upstream.iter().map(|(u, p)| (*u, *p)).chain(shared).collect();
        all.sort();
        all
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
        let ports = one_route(&l, &ups);
        assert_eq!(ports.len(), ups.len());
        assert_eq!(ports.values().collect::<BTreeSet<_>>().len(), ups.len(), "distinct ports");
        assert!(ports.values().all(|p| (20000..30000).contains(p)));
        let fewer = one_route(&l, &ups[1..]);
        assert!(fewer.iter().all(|(u, p)| ports[u] == *p), "removing an upstream moves no other");
        assert!(Layout::new("x;rm", "wg", "v", "br", "10.0.0.0/16", 20000).is_err());
    }

    /// The ports of one route's upstreams, by upstream.
    fn one_route(l: &Layout, upstreams: &[SocketAddrV4]) -> BTreeMap<SocketAddrV4, u16> {
        let ports = l.dnat_ports([("tcp://1", upstreams)], None);
        let all: BTreeMap<SocketAddrV4, u16> = ports.all().into_iter().collect();
        assert!(all.iter().all(|(u, p)| ports.port("tcp://1", u) == Some(*p)));
        all
    }

    #[test]
    fn dnat_port_collisions_take_the_next_free_port() {
        // These two hash to the same slot (5837): the first in order takes
        // it, the other the next one; alone, either takes the slot itself.
        let a = SocketAddrV4::new(Ipv4Addr::new(10, 80, 0, 42), 443);
        let b = SocketAddrV4::new(Ipv4Addr::new(10, 80, 0, 82), 80);
        let l = Layout::default();
        assert_eq!(one_route(&l, &[b, a]), BTreeMap::from([(a, 25837), (b, 25838)]));
        assert_eq!(one_route(&l, &[b]), BTreeMap::from([(b, 25837)]));
        assert_eq!(one_route(&l, &[a, a]), BTreeMap::from([(a, 25837)]), "an upstream twice takes one port");
    }

    /// With the last target's ports, nothing that stays moves: a new
    /// upstream whose hash lands on a held slot takes the next one, and a
    /// slot given up by this change goes to no other (nginx, on its old
    /// config until it reloads, may still send there).
    #[test]
    fn dnat_ports_stay_where_they_were() {
        // a and b hash to the same slot (see the test above); a sorts first.
        let a = SocketAddrV4::new(Ipv4Addr::new(10, 80, 0, 42), 443);
        let b = SocketAddrV4::new(Ipv4Addr::new(10, 80, 0, 82), 80);
        let c = SocketAddrV4::new(Ipv4Addr::new(10, 80, 0, 3), 443);
        let l = Layout::default();
        let route = |ups: &[SocketAddrV4], before: Option<&DnatPorts>| {
            let ports = l.dnat_ports([("tcp://1", ups)], before);
            ports.all().into_iter().collect::<BTreeMap<_, _>>()
        };
        let b_alone = l.dnat_ports([("tcp://1", &[b][..])], None);
        assert_eq!(route(&[a, b], Some(&b_alone)), BTreeMap::from([(a, 25838), (b, 25837)]), "b keeps its port; a goes next");
        assert_eq!(route(&[a, b], None), BTreeMap::from([(a, 25837), (b, 25838)]), "afresh, the order decides");
        // b leaves and a comes in the same change: b's port is not a's yet.
        let a_after_b = l.dnat_ports([("tcp://1", &[a][..])], Some(&b_alone));
        assert_eq!(a_after_b.all(), [(a, 25838)]);
        assert_eq!(route(&[a, c], Some(&a_after_b))[&a], 25838, "and a stays there");
        // A route's own port on a shared upstream is kept too.
        let shared = l.dnat_ports([("https://x.test", &[c][..]), ("https://y.test", &[c][..])], None);
        let y = shared.port("https://y.test", &c).unwrap();
        let more = l.dnat_ports([("https://x.test", &[c][..]), ("https://y.test", &[c][..]), ("tcp://5", &[a, b][..])], Some(&shared));
        assert_eq!((more.port("https://x.test", &c), more.port("https://y.test", &c)), (shared.port("https://x.test", &c), Some(y)));
    }

    /// Routes sharing an upstream each get a port of their own: the first
    /// route (in key order) keeps the upstream's, the others one derived
    /// from the upstream and their key; routes sharing nothing keep the
    /// ports they had alone.
    #[test]
    fn routes_sharing_an_upstream_each_get_a_port() {
        let l = Layout::default();
        let a = SocketAddrV4::new(Ipv4Addr::new(10, 80, 0, 42), 443);
        let b = SocketAddrV4::new(Ipv4Addr::new(10, 80, 0, 82), 80);
        let c = SocketAddrV4::new(Ipv4Addr::new(10, 80, 0, 3), 443);
        let alone = one_route(&l, &[a, b, c]);
        let ports = l.dnat_ports([("https://x.test", &[a, c][..]), ("https://y.test", &[a][..]), ("tcp://22", &[b, a][..])], None);
        assert_eq!(ports.port("https://x.test", &a), Some(alone[&a]), "the first route keeps the upstream's port");
        let (y, t) = (ports.port("https://y.test", &a).unwrap(), ports.port("tcp://22", &a).unwrap());
        assert!(y != alone[&a] && t != alone[&a] && y != t, "{y} {t}");
        assert!((20000..30000).contains(&y) && (20000..30000).contains(&t));
        assert_eq!(
            (ports.port("https://x.test", &c), ports.port("tcp://22", &b)),
            (Some(alone[&c]), Some(alone[&b])),
            "unshared: unchanged"
        );
        assert_eq!(ports.all(), {
            let mut v = vec![(a, alone[&a]), (a, y), (a, t), (b, alone[&b]), (c, alone[&c])];
            v.sort();
            v
        });
        // Adding a route before the first: it takes the upstream's port,
        // the others keep theirs or get new ones; the upstream's port stays.
        let more = l.dnat_ports([("http://w.test", &[a][..]), ("https://x.test", &[a, c][..]), ("https://y.test", &[a][..])], None);
        assert_eq!(more.port("http://w.test", &a), Some(alone[&a]));
        assert_eq!(more.port("https://y.test", &a), Some(y), "a route's own port depends on its key, not on the others");
        assert_eq!(ports.port("https://nope.test", &a), Some(alone[&a]), "unknown routes: the upstream's");
        assert_eq!(ports.port("https://x.test", &SocketAddrV4::new(Ipv4Addr::new(10, 9, 9, 9), 1)), None);
    }
}
