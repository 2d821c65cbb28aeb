//! The desired state once checked: what every later layer (render, plan,
//! system) works from. Only `validate` builds it from the API's JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;

use crate::types::{Cidr, Hostname, ProxyKey, ProxyUrl, PublicKey, Scheme, SecretKey, Transport, parse_upstream};

/// At most this many routes of one network may have a bandwidth: each is
/// an HTB class of the network's veth, numbered from `tc::shape`'s first
/// route class to 65,535.
pub const MAX_SHAPED_ROUTES: usize = 65_520;

pub const DEFAULT_MTU: u32 = 1420;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// `None` also when the request gave the all-zero key.
    pub preshared_key: Option<SecretKey>,
    /// Normalized to network form and sorted, as `wg show` reports them.
    pub allowed_ips: Vec<Cidr>,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<u16>,
}

/// One network of the desired state, fully checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    pub port: u16,
    /// Clamped, as WireGuard reports it.
    pub private_key: SecretKey,
    /// Derived from the private key once, when the state is validated.
    pub public_key: PublicKey,
    pub mtu: u32,
    /// Sorted, without duplicates.
    pub addresses: Vec<Cidr>,
    pub peers: BTreeMap<PublicKey, PeerSpec>,
    pub https: BTreeMap<Hostname, Vec<SocketAddrV4>>,
    pub http: BTreeMap<Hostname, Vec<SocketAddrV4>>,
    /// The `https://` hostnames whose upstreams get a PROXY protocol header.
    pub proxy_protocol: BTreeSet<Hostname>,
    /// Raw ports on the gateway host (`tcp://PORT`, `udp://PORT`).
    pub tcp: BTreeMap<u16, RawRoute>,
    pub udp: BTreeMap<u16, RawRoute>,
    /// The access control and limits of the routes that have any (a route
    /// without them is absent: its path and cost stay as before).
    pub route_limits: BTreeMap<ProxyKey, RouteLimits>,
    /// Aggregate bandwidth of all the network's routes (`bandwidth`).
    pub bandwidth: Option<Bandwidth>,
    /// A standby host's view of the network (`ha::view`): its WireGuard
    /// must know no peer endpoint, so nothing it does reaches a peer.
    pub standby: bool,
}

/// Where a raw port of the gateway host goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRoute {
    pub upstreams: Vec<SocketAddrV4>,
    /// TCP only: a PROXY protocol header before the stream.
    pub proxy_protocol: bool,
}

/// A route's access control and limits, as given in its object form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteLimits {
    /// Only clients in these networks reach the route (None: everyone).
    /// Sorted, without duplicates, host bits zero; never empty.
    pub allow: Option<Vec<Cidr>>,
    /// Clients in these networks are refused, even when allowed. Sorted.
    pub deny: Vec<Cidr>,
    /// Concurrent connections (UDP: sessions) of all clients together.
    pub max_connections: Option<u32>,
    /// Concurrent connections (UDP: sessions) of one client address.
    pub max_connections_per_client: Option<u32>,
    /// Aggregate bandwidth of all the route's connections.
    pub bandwidth: Option<Bandwidth>,
}

impl RouteLimits {
    /// Whether the route says nothing beyond its upstreams.
    pub fn is_empty(&self) -> bool {
        *self == RouteLimits::default()
    }

    /// Whether some clients are refused (`allow` or `deny`).
    pub fn restricts_clients(&self) -> bool {
        self.allow.is_some() || !self.deny.is_empty()
    }

    /// Whether concurrent connections are counted.
    pub fn limits_connections(&self) -> bool {
        self.max_connections.is_some() || self.max_connections_per_client.is_some()
    }

    /// Whether a client address may reach the route: not denied, and
    /// allowed when there is an allow list.
    pub fn admits(&self, ip: std::net::IpAddr) -> bool {
        !self.deny.iter().any(|c| c.contains(ip)) && self.allow.as_ref().is_none_or(|a| a.iter().any(|c| c.contains(ip)))
    }
}

/// An aggregate bandwidth in Mbit/s; at least one direction is set.
/// `ingress` is toward the nodes, `egress` from the nodes toward clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bandwidth {
    pub ingress_mbit: Option<u32>,
    pub egress_mbit: Option<u32>,
}

impl NetworkSpec {
    /// Whether any route leads into the network (each has DNAT ports there
    /// whose open connections status.json counts).
    pub fn has_routes(&self) -> bool {
        !(self.https.is_empty() && self.http.is_empty() && self.tcp.is_empty() && self.udp.is_empty())
    }

    /// A route's access control and limits, if it has any.
    pub fn limits_of(&self, key: &ProxyKey) -> Option<&RouteLimits> {
        self.route_limits.get(key)
    }

    /// Like wg-quick: a route through the interface for every allowed IP that
    /// the interface's own address subnets do not already cover (e.g. a LAN
    /// behind a node). Sorted.
    pub fn routes(&self) -> Vec<Cidr> {
        let covered =
            |c: &Cidr| self.addresses.iter().any(|a| a.addr.is_ipv4() == c.addr.is_ipv4() && a.prefix <= c.prefix && a.contains(c.addr));
        let set: BTreeSet<Cidr> = self.peers.values().flat_map(|p| p.allowed_ips.iter().copied()).filter(|c| !covered(c)).collect();
        set.into_iter().collect()
    }

    /// Distinct TCP upstreams of this network, sorted; each gets a DNAT port.
    pub fn upstreams(&self) -> Vec<SocketAddrV4> {
        let raw = self.tcp.values().flat_map(|r| &r.upstreams);
        let set: BTreeSet<SocketAddrV4> = self.https.values().chain(self.http.values()).flatten().chain(raw).copied().collect();
        set.into_iter().collect()
    }

    /// Distinct UDP upstreams, sorted; each gets a DNAT port too (UDP's own
    /// port space: the same number may serve a TCP upstream).
    pub fn udp_upstreams(&self) -> Vec<SocketAddrV4> {
        let set: BTreeSet<SocketAddrV4> = self.udp.values().flat_map(|r| &r.upstreams).copied().collect();
        set.into_iter().collect()
    }

    /// Each route's key (as in `proxy`) with its upstreams, in one DNAT
    /// port space: TCP (`https://`, `http://`, `tcp://`) or UDP (`udp://`).
    /// What `Layout::dnat_ports` takes (`Layout::network_dnat_ports`).
    pub fn dnat_routes(&self, transport: Transport) -> Vec<(String, &[SocketAddrV4])> {
        match transport {
            Transport::Tcp => {
                let urls = [(Scheme::Https, &self.https), (Scheme::Http, &self.http)];
                let urls = urls.into_iter().flat_map(|(scheme, map)| {
                    map.iter().map(move |(h, u)| (ProxyKey::Url(ProxyUrl { scheme, host: h.clone() }).to_string(), &u[..]))
                });
                urls.chain(self.tcp.iter().map(|(p, r)| (ProxyKey::Raw(Transport::Tcp, *p).to_string(), &r.upstreams[..]))).collect()
            }
            Transport::Udp => self.udp.iter().map(|(p, r)| (ProxyKey::Raw(Transport::Udp, *p).to_string(), &r.upstreams[..])).collect(),
        }
    }

    /// The raw ports this network owns on the gateway host.
    pub fn raw_ports(&self) -> impl Iterator<Item = (Transport, u16)> + '_ {
        self.tcp.keys().map(|p| (Transport::Tcp, *p)).chain(self.udp.keys().map(|p| (Transport::Udp, *p)))
    }

    /// The hostnames this network serves, with their scheme.
    pub fn urls(&self) -> impl Iterator<Item = (Scheme, &Hostname)> {
        self.https.keys().map(|h| (Scheme::Https, h)).chain(self.http.keys().map(|h| (Scheme::Http, h)))
    }
}

/// The whole desired state, fully checked. Each network is shared: a
/// network unchanged from one state to the next is the same value in both
/// (see `validate::Context::previous`), so later layers tell it apart
/// without comparing it field by field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub networks: BTreeMap<u16, std::sync::Arc<NetworkSpec>>,
}

/// A static forwarding given on the command line (`--custom-forwarding`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomForwarding {
    pub url: ProxyUrl,
    pub upstream: SocketAddrV4,
}

/// Parses `--custom-forwarding`: `URL=IPV4:PORT,...`.
pub fn parse_custom_forwardings(s: &str) -> Result<Vec<CustomForwarding>, String> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (url, upstream) = item.split_once('=').ok_or_else(|| format!("custom forwarding '{item}' must be URL=IP:PORT"))?;
        let url: ProxyUrl = url.parse().map_err(|e| format!("custom forwarding '{item}': {e}"))?;
        let upstream = parse_upstream(upstream).map_err(|e| format!("custom forwarding '{item}': {e}"))?;
        if !seen.insert(url.clone()) {
            return Err(format!("custom forwarding for {url} given twice"));
        }
        out.push(CustomForwarding { url, upstream });
    }
    Ok(out)
}

/// Per network (each `item` holds its spec: `spec_in`), what was made
/// from `before`'s spec where the spec is the same (by pointer, else by
/// value), else what `make` makes of the item and of the last one made
/// (`None` for a new network). Also returns the networks made anew (the
/// work done). Targets and nginx's parts are both kept this way.
pub fn keep_or_make<I, T>(
    items: impl IntoIterator<Item = I>,
    spec_in: impl Fn(&I) -> &Arc<NetworkSpec>,
    before: &BTreeMap<u16, Arc<T>>,
    spec_of: impl Fn(&T) -> &Arc<NetworkSpec>,
    mut make: impl FnMut(&I, Option<&T>) -> T,
) -> (BTreeMap<u16, Arc<T>>, Vec<u16>) {
    let mut made = Vec::new();
    let out = items
        .into_iter()
        .map(|item| {
            let spec = spec_in(&item);
            let last = before.get(&spec.port);
            let kept = last.filter(|t| Arc::ptr_eq(spec_of(t), spec) || **spec_of(t) == **spec);
            let port = spec.port;
            let value = match kept {
                Some(t) => t.clone(),
                None => {
                    made.push(port);
                    Arc::new(make(&item, last.map(|t| &**t)))
                }
            };
            (port, value)
        })
        .collect();
    (out, made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_forwardings() {
        let f = parse_custom_forwardings("https://api.example.com=127.0.0.1:8443, http://b.test=10.0.0.1:80").unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!((f[1].url.to_string(), f[1].upstream.to_string()), ("http://b.test".into(), "10.0.0.1:80".into()));
        assert!(parse_custom_forwardings("").unwrap().is_empty());
        for bad in ["https://a.test", "https://a.test=1.2.3.4:1,https://a.test=1.2.3.4:2", "ftp://a.test=1.2.3.4:1", "https://a.test=x:1"] {
            assert!(parse_custom_forwardings(bad).is_err(), "{bad}");
        }
    }
}
