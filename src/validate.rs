//! Turns the loose JSON of the API into typed, checked values. Every value
//! that later reaches a config file or a command line passes through one of
//! the constructors here, which accept only the exact expected form, so the
//! renderers can print them without escaping.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::str::FromStr;

use base64::Engine;

use crate::model::{ErrorDetail, GatewayConfig, NetworkConfig};

pub const DEFAULT_MTU: u32 = 1420;
const MTU_RANGE: std::ops::RangeInclusive<u32> = 1280..=9000;
/// Ports 0, 1 and 65535 are excluded: a network's veth address is derived from
/// its port inside the bridge /16, where .0.0, .0.1 (the bridge) and
/// .255.255 are taken.
pub const PORT_RANGE: std::ops::RangeInclusive<u32> = 2..=65534;

/// A WireGuard key (private, public or preshared): 32 bytes, standard base64.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WgKey(String);

impl WgKey {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.len() != 44 || !s.ends_with('=') {
            return Err("must be a WireGuard key: 44 characters of standard base64 ending in '='".into());
        }
        match base64::engine::general_purpose::STANDARD.decode(s) {
            Ok(bytes) if bytes.len() == 32 => Ok(WgKey(s.to_string())),
            _ => Err("must be a WireGuard key: 32 bytes in standard base64".into()),
        }
    }
    /// The public key of a private key (X25519 base point multiplication).
    /// Memoized: every apply validates every network, and a scalar
    /// multiplication costs ~0.2 ms, where the rest of a network costs µs.
    pub fn public_key(&self) -> WgKey {
        use std::collections::HashMap;
        use std::sync::{Mutex, OnceLock};
        static CACHE: OnceLock<Mutex<HashMap<WgKey, WgKey>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(k) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(self) {
            return k.clone();
        }
        let mut bytes = [0u8; 32];
        if let Ok(b) = base64::engine::general_purpose::STANDARD.decode(&self.0) {
            bytes.copy_from_slice(&b[..32.min(b.len())]);
        }
        let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(bytes));
        let key = WgKey(base64::engine::general_purpose::STANDARD.encode(public.as_bytes()));
        let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= 100_000 {
            map.clear();
        }
        map.insert(self.clone(), key.clone());
        key
    }

    /// A private key in the clamped form WireGuard stores and reports
    /// (`wg genkey` output already is): any 32 bytes are accepted, and an
    /// unclamped key would otherwise never match what `wg show` prints.
    pub fn parse_private(s: &str) -> Result<Self, String> {
        let key = WgKey::parse(s)?;
        let mut b = base64::engine::general_purpose::STANDARD.decode(&key.0).map_err(|e| e.to_string())?;
        b[0] &= 248;
        b[31] = (b[31] & 127) | 64;
        Ok(WgKey(base64::engine::general_purpose::STANDARD.encode(b)))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Keys are secrets (private, preshared): never print them by accident.
impl fmt::Debug for WgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WgKey({}…)", &self.0[..4])
    }
}

/// An address with a prefix length, e.g. `10.80.0.1/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').ok_or_else(|| "must be ADDRESS/PREFIX, e.g. 10.80.0.1/16".to_string())?;
        let addr = parse_ip_exact(a)?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = parse_decimal(p).filter(|p| *p <= max).ok_or_else(|| format!("prefix length must be a number 0..={max}"))? as u8;
        Ok(Cidr { addr, prefix })
    }

    /// The same prefix with the host bits cleared, as WireGuard reports allowed IPs.
    pub fn network(&self) -> Cidr {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Cidr { addr, prefix: self.prefix }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let probe = Cidr { addr: ip, prefix: self.prefix };
        ip.is_ipv4() == self.addr.is_ipv4() && probe.network().addr == self.network().addr
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A DNS name as nginx will match it: RFC 1123 labels, lowercase, no wildcard.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hostname(String);

impl Hostname {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 253 {
            return Err("hostname must be 1 to 253 characters".into());
        }
        for label in s.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err("hostname labels must be 1 to 63 characters (no empty label, no trailing dot)".into());
            }
            if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
                return Err("hostname may contain only lowercase letters, digits, '-' and '.' (no wildcards)".into());
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err("hostname labels must not start or end with '-'".into());
            }
        }
        if s.rsplit('.').next().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
            return Err("hostname must not look like an IP address (last label all digits)".into());
        }
        Ok(Hostname(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scheme {
    Http,
    Https,
}

/// Parses `https://HOST` or `http://HOST` (an optional trailing `/`), nothing else.
pub fn parse_proxy_url(s: &str) -> Result<(Scheme, Hostname), String> {
    let (scheme, rest) = if let Some(rest) = s.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else if let Some(rest) = s.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else {
        return Err("URL must start with https:// (TLS passthrough by SNI) or http:// (reverse proxy by Host)".into());
    };
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.contains(':') || host.contains('/') {
        return Err("URL must be exactly SCHEME://HOST: no port, path or query".into());
    }
    Ok((scheme, Hostname::parse(host)?))
}

/// An upstream inside a network (or, for custom forwardings, on the host): IPv4:PORT.
pub fn parse_upstream(s: &str) -> Result<SocketAddrV4, String> {
    let (ip, port) = s.rsplit_once(':').ok_or_else(|| "upstream must be IPV4:PORT, e.g. 10.80.0.2:443".to_string())?;
    let ip = match parse_ip_exact(ip)? {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(_) => return Err("upstream must be an IPv4 address".into()),
    };
    let port = parse_decimal(port).filter(|p| (1..=65535).contains(p)).ok_or_else(|| "upstream port must be 1..=65535".to_string())?;
    Ok(SocketAddrV4::new(ip, port as u16))
}

/// A peer endpoint: `IP:PORT` or `[IPv6]:PORT`. Hostnames are refused because
/// WireGuard resolves them once and reports the address, which would look
/// like drift on every check.
pub fn parse_endpoint(s: &str) -> Result<SocketAddr, String> {
    let addr = SocketAddr::from_str(s).map_err(|_| "endpoint must be IP:PORT or [IPV6]:PORT (no hostnames)".to_string())?;
    if addr.port() == 0 {
        return Err("endpoint port must be 1..=65535".into());
    }
    if addr.to_string() != s {
        return Err(format!("endpoint must be in canonical form ({addr})"));
    }
    Ok(addr)
}

/// Parses an IP address written in its canonical form only (no leading zeros,
/// no zone index), so the text we print later is exactly what was validated.
fn parse_ip_exact(s: &str) -> Result<IpAddr, String> {
    let ip = IpAddr::from_str(s).map_err(|_| format!("'{}' is not an IP address", truncate(s)))?;
    if ip.to_string() != s {
        return Err(format!("IP address must be written canonically as {ip}"));
    }
    Ok(ip)
}

/// Plain decimal digits, no sign, no leading zeros.
fn parse_decimal(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

pub fn parse_port_key(s: &str) -> Result<u16, String> {
    parse_decimal(s).filter(|p| PORT_RANGE.contains(p)).map(|p| p as u16).ok_or_else(|| {
        format!("network key must be its WireGuard listen port, a decimal number {}..={}", PORT_RANGE.start(), PORT_RANGE.end())
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    pub preshared_key: Option<WgKey>,
    /// Normalized to network form and sorted, as `wg show` reports them.
    pub allowed_ips: Vec<Cidr>,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<u16>,
}

/// One network of the desired state, fully checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    pub port: u16,
    pub private_key: WgKey,
    pub mtu: u32,
    /// Sorted, without duplicates.
    pub addresses: Vec<Cidr>,
    pub peers: BTreeMap<WgKey, PeerSpec>,
    pub https: BTreeMap<Hostname, Vec<SocketAddrV4>>,
    pub http: BTreeMap<Hostname, Vec<SocketAddrV4>>,
}

impl NetworkSpec {
    /// Distinct upstreams of this network, sorted: the index of an upstream in
    /// this list decides its DNAT port, so nginx and iptables agree.
    pub fn routes(&self) -> Vec<Cidr> {
        // Like wg-quick: a route for every allowed IP that the interface's
        // own address subnets do not already cover (e.g. a LAN behind a node).
        let covered =
            |c: &Cidr| self.addresses.iter().any(|a| a.addr.is_ipv4() == c.addr.is_ipv4() && a.prefix <= c.prefix && a.contains(c.addr));
        let set: BTreeSet<Cidr> = self.peers.values().flat_map(|p| p.allowed_ips.iter().copied()).filter(|c| !covered(c)).collect();
        set.into_iter().collect()
    }

    pub fn upstreams(&self) -> Vec<SocketAddrV4> {
        let set: BTreeSet<SocketAddrV4> = self.https.values().chain(self.http.values()).flatten().copied().collect();
        set.into_iter().collect()
    }
}

/// The whole desired state, fully checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub networks: BTreeMap<u16, NetworkSpec>,
}

/// A static forwarding given on the command line (`--custom-forwarding`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomForwarding {
    pub scheme: Scheme,
    pub host: Hostname,
    pub upstream: SocketAddrV4,
}

pub fn parse_custom_forwardings(s: &str) -> Result<Vec<CustomForwarding>, String> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (url, upstream) = item.split_once('=').ok_or_else(|| format!("custom forwarding '{item}' must be URL=IP:PORT"))?;
        let (scheme, host) = parse_proxy_url(url).map_err(|e| format!("custom forwarding '{item}': {e}"))?;
        let upstream = parse_upstream(upstream).map_err(|e| format!("custom forwarding '{item}': {e}"))?;
        if !seen.insert((scheme, host.clone())) {
            return Err(format!("custom forwarding for {url} given twice"));
        }
        out.push(CustomForwarding { scheme, host, upstream });
    }
    Ok(out)
}

struct Problems(Vec<ErrorDetail>);

impl Problems {
    fn add(&mut self, path: String, message: impl Into<String>) {
        self.0.push(ErrorDetail { path, message: message.into() });
    }
}

fn key_path(base: &str, key: &str) -> String {
    // serde_json escapes quotes and control characters, so a hostile key
    // cannot break the path's syntax.
    format!("{base}[{}]", serde_json::Value::String(truncate(key)))
}

/// What a config is checked against besides itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// Static forwardings: their hostnames are taken.
    pub custom: &'a [CustomForwarding],
    /// Subnets the gateway uses itself (the bridge): no address, allowed IP or
    /// upstream may fall inside them, or the namespace's route to nginx breaks.
    pub reserved: &'a [Cidr],
}

/// At most this many distinct upstreams per network (each takes a DNAT port).
pub const MAX_UPSTREAMS: usize = 1000;

/// Whether `inner` lies wholly inside `outer`.
fn within(inner: &Cidr, outer: &Cidr) -> bool {
    inner.prefix >= outer.prefix && outer.contains(inner.addr)
}

/// `wg` and `ip` print the all-zero key as "none".
pub const ZERO_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

/// `::a.b.c.d` (first 96 bits zero, longer than /96): Rust and iproute2 print
/// these differently, so they could never be matched against `ip`/`wg` output.
fn is_ipv4_compatible(c: &Cidr) -> bool {
    matches!(c.addr, IpAddr::V6(a) if c.prefix > 96 && a.segments()[..6] == [0; 6])
}

/// Addresses an interface may carry: unicast and global (the observer sees
/// only global-scope addresses, so anything else would never converge).
fn check_interface_address(c: &Cidr) -> Result<(), String> {
    let bad = match c.addr {
        IpAddr::V4(a) => a.is_loopback() || a.is_link_local() || a.is_multicast() || a.is_unspecified() || a.is_broadcast(),
        IpAddr::V6(a) => {
            let s = a.segments();
            a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || a.to_ipv4_mapped().is_some()
                || (s[..6] == [0; 6])
        }
    };
    if bad {
        Err(format!("{c} is not a global unicast address (loopback, link-local, multicast and IPv4-in-IPv6 forms are refused)"))
    } else {
        Ok(())
    }
}

/// Checks the whole config; on failure returns every problem with its JSON path.
pub fn validate(config: &GatewayConfig, ctx: &Context<'_>) -> Result<Desired, Vec<ErrorDetail>> {
    let mut problems = Problems(Vec::new());
    let mut networks = BTreeMap::new();
    for (key, net) in config {
        let path = key_path("$", key);
        let port = match parse_port_key(key) {
            Ok(p) => Some(p),
            Err(e) => {
                problems.add(path.clone(), e);
                None
            }
        };
        if let Some(spec) = validate_network(&path, port, net, ctx, &mut problems) {
            networks.insert(spec.port, spec);
        }
    }

    // A hostname may be served by only one network, whatever the scheme
    // (and not by a custom forwarding): one tenant's http:// would otherwise
    // answer for another's https:// name, e.g. to an ACME HTTP-01 check.
    let mut owners: BTreeMap<&Hostname, Option<u16>> = BTreeMap::new();
    for f in ctx.custom {
        owners.insert(&f.host, None);
    }
    for spec in networks.values() {
        for (scheme, map) in [("https", &spec.https), ("http", &spec.http)] {
            for host in map.keys() {
                match owners.get(host) {
                    Some(Some(p)) if *p == spec.port => {}
                    Some(other) => {
                        let by = match other {
                            Some(p) => format!("network {p}"),
                            None => "a --custom-forwarding".to_string(),
                        };
                        problems.add(
                            key_path(&format!("{}.proxy", key_path("$", &spec.port.to_string())), &format!("{scheme}://{host}")),
                            format!("{host} is already served by {by}; a hostname may be in only one network"),
                        );
                    }
                    None => {
                        owners.insert(host, Some(spec.port));
                    }
                }
            }
        }
    }

    // The same private key twice would be the same WireGuard identity twice.
    let mut keys: BTreeMap<&WgKey, u16> = BTreeMap::new();
    for spec in networks.values() {
        if let Some(other) = keys.insert(&spec.private_key, spec.port) {
            problems
                .add(format!("{}.private_key", key_path("$", &spec.port.to_string())), format!("network {other} has the same private key"));
        }
    }

    if problems.0.is_empty() { Ok(Desired { networks }) } else { Err(problems.0) }
}

fn validate_network(path: &str, port: Option<u16>, net: &NetworkConfig, ctx: &Context<'_>, problems: &mut Problems) -> Option<NetworkSpec> {
    let reserved = |c: &Cidr| ctx.reserved.iter().find(|r| within(&Cidr { addr: c.addr, prefix: c.prefix.max(r.prefix) }, r)).copied();
    let before = problems.0.len();
    if let (Some(lp), Some(port)) = (net.listen_port, port) {
        if lp != u32::from(port) {
            problems.add(format!("{path}.listen_port"), format!("listen_port {lp} must equal the network's key {port}"));
        }
    }
    let private_key = WgKey::parse_private(&net.private_key).map_err(|e| problems.add(format!("{path}.private_key"), e)).ok();
    let mtu = net.mtu.unwrap_or(DEFAULT_MTU);
    if !MTU_RANGE.contains(&mtu) {
        problems.add(format!("{path}.mtu"), format!("mtu must be {}..={}", MTU_RANGE.start(), MTU_RANGE.end()));
    }
    let mut addresses = BTreeSet::new();
    for (i, a) in net.address.iter().enumerate() {
        let apath = format!("{path}.address[{i}]");
        match Cidr::parse(a) {
            Ok(c) => {
                if let Err(e) = check_interface_address(&c) {
                    problems.add(apath, e);
                } else if let Some(r) = reserved(&c) {
                    problems.add(apath, format!("{} is inside the gateway's own bridge subnet {r}", c.addr));
                } else if addresses.iter().any(|x: &Cidr| x.addr == c.addr) {
                    problems.add(apath, format!("{} is listed twice", c.addr));
                } else {
                    addresses.insert(c);
                }
            }
            Err(e) => problems.add(apath, e),
        }
    }
    let mut peers = BTreeMap::new();
    for (key, peer) in &net.peers {
        let ppath = key_path(&format!("{path}.peers"), key);
        let pk = WgKey::parse(key).map_err(|e| problems.add(ppath.clone(), format!("peer key {e}"))).ok();
        let psk = match &peer.preshared_key {
            None => None,
            // All zeros is how WireGuard spells "no preshared key".
            Some(k) => {
                WgKey::parse(k).map_err(|e| problems.add(format!("{ppath}.preshared_key"), e)).ok().filter(|k| k.as_str() != ZERO_KEY)
            }
        };
        let mut allowed = BTreeSet::new();
        for (i, a) in peer.allowed_ips.iter().enumerate() {
            match Cidr::parse(a) {
                // Wider prefixes (a default route) are fine: the bridge's own
                // more specific route still wins.
                Ok(c) if is_ipv4_compatible(&c) => problems.add(
                    format!("{ppath}.allowed_ips[{i}]"),
                    format!("{c}: IPv4-compatible IPv6 addresses are refused (tools print them differently)"),
                ),
                Ok(c) => match ctx.reserved.iter().find(|r| within(&c.network(), r)) {
                    Some(r) => {
                        problems.add(format!("{ppath}.allowed_ips[{i}]"), format!("{c} is inside the gateway's own bridge subnet {r}"))
                    }
                    None => {
                        allowed.insert(c.network());
                    }
                },
                Err(e) => problems.add(format!("{ppath}.allowed_ips[{i}]"), e),
            }
        }
        let endpoint = match &peer.endpoint {
            None => None,
            Some(e) => parse_endpoint(e).map_err(|m| problems.add(format!("{ppath}.endpoint"), m)).ok(),
        };
        let keepalive = match peer.persistent_keepalive {
            None => None,
            Some(k) if (1..=65535).contains(&k) => Some(k as u16),
            Some(_) => {
                problems.add(format!("{ppath}.persistent_keepalive"), "persistent_keepalive must be 1..=65535 seconds");
                None
            }
        };
        if let Some(pk) = pk {
            // WireGuard silently ignores a peer with the interface's own key.
            if private_key.as_ref().map(WgKey::public_key) == Some(pk.clone()) {
                problems.add(ppath.clone(), "this peer's key is the network's own public key");
            }
            peers.insert(
                pk,
                PeerSpec { preshared_key: psk, allowed_ips: allowed.into_iter().collect(), endpoint, persistent_keepalive: keepalive },
            );
        }
    }
    // Which peer owns an allowed IP must be unambiguous, as WireGuard would
    // otherwise silently move it to the last peer configured.
    let mut ip_owner: BTreeMap<Cidr, &WgKey> = BTreeMap::new();
    for (pk, p) in &peers {
        for c in &p.allowed_ips {
            if let Some(other) = ip_owner.insert(*c, pk) {
                problems.add(
                    key_path(&format!("{path}.peers"), pk.as_str()),
                    format!("allowed IP {c} is also given to peer {}", other.as_str()),
                );
            }
        }
    }

    let mut https = BTreeMap::new();
    let mut http = BTreeMap::new();
    for (url, ups) in &net.proxy {
        let upath = key_path(&format!("{path}.proxy"), url);
        let parsed = parse_proxy_url(url).map_err(|e| problems.add(upath.clone(), e)).ok();
        if ups.is_empty() {
            problems.add(upath.clone(), "at least one upstream IP:PORT is needed");
        }
        let mut list = BTreeSet::new();
        for (i, u) in ups.iter().enumerate() {
            match parse_upstream(u) {
                Ok(sa) => {
                    let ip = IpAddr::V4(*sa.ip());
                    let routed =
                        addresses.iter().any(|c| c.contains(ip)) || peers.values().any(|p| p.allowed_ips.iter().any(|c| c.contains(ip)));
                    if let Some(r) = ctx.reserved.iter().find(|r| r.contains(ip)) {
                        problems.add(format!("{upath}[{i}]"), format!("upstream {u} is inside the gateway's own bridge subnet {r}"));
                    } else if !routed {
                        problems.add(
                            format!("{upath}[{i}]"),
                            format!("upstream {u} is not inside the network (no address or peer allowed IP covers it)"),
                        );
                    }
                    list.insert(sa);
                }
                Err(e) => problems.add(format!("{upath}[{i}]"), e),
            }
        }
        if let Some((scheme, host)) = parsed {
            let map = if scheme == Scheme::Https { &mut https } else { &mut http };
            if map.insert(host, list.into_iter().collect::<Vec<_>>()).is_some() {
                problems.add(upath, "the same URL is given twice (e.g. with and without a trailing '/')");
            }
        }
    }
    let has_proxy = !https.is_empty() || !http.is_empty();
    if has_proxy && !addresses.iter().any(|c| c.addr.is_ipv4()) {
        problems.add(format!("{path}.address"), "a network with proxy entries needs an IPv4 address");
    }

    let distinct: BTreeSet<&SocketAddrV4> = https.values().chain(http.values()).flatten().collect();
    if distinct.len() > MAX_UPSTREAMS {
        problems.add(format!("{path}.proxy"), format!("{} distinct upstreams; at most {MAX_UPSTREAMS} per network", distinct.len()));
    }
    if problems.0.len() != before {
        return None;
    }
    Some(NetworkSpec { port: port?, private_key: private_key?, mtu, addresses: addresses.into_iter().collect(), peers, https, http })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PeerConfig;

    pub const KEY_A: &str = "0EtpYOfpZyKaIcpkq+KO/+joyV431f1X99CcB2OMo3c=";
    pub const KEY_B: &str = "OxvFhrgLnI9e4xzMMA2qQ7wm/xCUzxaWW5cb1JGkWSA=";
    pub const KEY_C: &str = "4dcKbDNyb6pkkRuP22OPzkHgpOb9k67iaP5R9A0xv0c=";

    fn net() -> NetworkConfig {
        NetworkConfig {
            private_key: KEY_A.into(),
            listen_port: None,
            mtu: None,
            address: vec!["10.80.0.1/16".into()],
            peers: [(
                KEY_B.to_string(),
                PeerConfig {
                    preshared_key: None,
                    allowed_ips: vec!["10.80.0.2/32".into()],
                    endpoint: Some("203.0.113.7:41213".into()),
                    persistent_keepalive: None,
                },
            )]
            .into(),
            proxy: [
                ("https://app.example.com".to_string(), vec!["10.80.0.2:443".to_string()]),
                ("http://app.example.com".to_string(), vec!["10.80.0.2:80".to_string()]),
            ]
            .into(),
        }
    }

    fn paths(r: Result<Desired, Vec<ErrorDetail>>) -> Vec<String> {
        r.expect_err("should be rejected").into_iter().map(|d| d.path).collect()
    }

    #[test]
    fn accepts_the_contract_example() {
        let d = validate(&[("51820".to_string(), net())].into(), &Context::default()).unwrap();
        let spec = &d.networks[&51820];
        assert_eq!(spec.mtu, 1420);
        assert_eq!(spec.https.len(), 1);
        assert_eq!(spec.http.len(), 1);
        assert_eq!(spec.upstreams().len(), 2);
        assert!(spec.routes().is_empty(), "10.80.0.2/32 is inside 10.80.0.1/16");
        let mut n = net();
        n.peers.get_mut(KEY_B).unwrap().allowed_ips = vec!["10.80.0.2/32".into(), "192.168.7.0/24".into(), "10.0.0.0/8".into()];
        let spec = &validate(&[("51820".to_string(), n)].into(), &Context::default()).unwrap().networks[&51820];
        let routes: Vec<String> = spec.routes().iter().map(ToString::to_string).collect();
        assert_eq!(routes, ["10.0.0.0/8", "192.168.7.0/24"], "a wider prefix than the address is not covered");
    }

    #[test]
    fn keys() {
        assert!(WgKey::parse(KEY_A).is_ok());
        assert!(WgKey::parse("short=").is_err());
        assert_eq!(WgKey::parse_private(KEY_A).unwrap().as_str(), KEY_A, "wg genkey output is clamped already");
        let raw = "//////////////////////////////////////////8=";
        assert_eq!(WgKey::parse_private(raw).unwrap().as_str(), "+P///////////////////////////////////////38=", "clamped like WireGuard");
        assert!(WgKey::parse(&KEY_A.replace('+', "-")).is_err(), "url-safe alphabet refused");
        assert!(WgKey::parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n").is_err());
        // 33 bytes would be 44 chars without padding: refused.
        assert!(WgKey::parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").is_err());
    }

    #[test]
    fn hostnames() {
        for ok in ["app.example.com", "a", "x-1.test", "xn--bcher-kva.example"] {
            assert!(Hostname::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "App.example.com",
            "*.example.com",
            "a..b",
            "a.",
            "-a.b",
            "a-.b",
            "a b",
            "a;b",
            "a\nb",
            "1.2.3.4",
            "a_b.c",
            &"a".repeat(64),
            "a}b",
            "a$b",
        ] {
            assert!(Hostname::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn proxy_urls() {
        assert_eq!(parse_proxy_url("https://a.b/").unwrap().0, Scheme::Https);
        assert_eq!(parse_proxy_url("http://a.b").unwrap().0, Scheme::Http);
        for bad in ["ftp://a.b", "https://a.b:8443", "https://a.b/x", "a.b", "https://", "https://a.b;"] {
            assert!(parse_proxy_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upstreams_endpoints_cidrs() {
        assert!(parse_upstream("10.0.0.1:443").is_ok());
        for bad in ["10.0.0.1", "10.0.0.1:0", "10.0.0.1:65536", "010.0.0.1:1", "[::1]:80", "h:80", "10.0.0.1:+1"] {
            assert!(parse_upstream(bad).is_err(), "{bad}");
        }
        assert!(parse_endpoint("203.0.113.7:41213").is_ok());
        assert!(parse_endpoint("[2001:db8::1]:51820").is_ok());
        for bad in ["example.com:51820", "1.2.3.4", "1.2.3.4:0", "[2001:DB8::1]:1"] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
        assert_eq!(Cidr::parse("10.80.0.5/24").unwrap().network().to_string(), "10.80.0.0/24");
        assert_eq!(Cidr::parse("fd00::1/64").unwrap().network().to_string(), "fd00::/64");
        for bad in ["10.0.0.1", "10.0.0.1/33", "10.0.0.1/ 8", "10.0.0.01/8", "10.0.0.1/08", "x/8"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let mut n = net();
        n.private_key = "nope".into();
        n.mtu = Some(100);
        n.listen_port = Some(1);
        n.address.push("10.0.0.1/99".into());
        n.proxy.insert("ftp://x.test".into(), vec!["10.80.0.2:21".into()]);
        n.proxy.insert("https://y.test".into(), vec!["192.168.1.1:443".into()]);
        let p = paths(validate(&[("51820".to_string(), n), ("0".to_string(), net())].into(), &Context::default()));
        for want in [
            r#"$["51820"].private_key"#,
            r#"$["51820"].mtu"#,
            r#"$["51820"].listen_port"#,
            r#"$["51820"].address[1]"#,
            r#"$["51820"].proxy["ftp://x.test"]"#,
            r#"$["51820"].proxy["https://y.test"][0]"#,
            r#"$["0"]"#,
        ] {
            assert!(p.contains(&want.to_string()), "missing {want} in {p:?}");
        }
    }

    #[test]
    fn hostname_in_one_network_only() {
        let mut second = net();
        second.private_key = KEY_C.into();
        let cfg = [("51820".to_string(), net()), ("51821".to_string(), second)].into();
        let p = paths(validate(&cfg, &Context::default()));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p.iter().all(|p| p.starts_with(r#"$["51821"].proxy"#)));
        let custom = parse_custom_forwardings("https://app.example.com=127.0.0.1:8443").unwrap();
        let p = paths(validate(&[("51820".to_string(), net())].into(), &Context { custom: &custom, reserved: &[] }));
        assert_eq!(p, [r#"$["51820"].proxy["https://app.example.com"]"#, r#"$["51820"].proxy["http://app.example.com"]"#], "both schemes");
    }

    #[test]
    fn peer_keys_psk_and_compat_addresses() {
        // KEY_A's public key, as `wg pubkey` prints it.
        assert_eq!(WgKey::parse(KEY_A).unwrap().public_key().as_str(), "4dcKbDNyb6pkkRuP22OPzkHgpOb9k67iaP5R9A0xv0c=");
        let mut n = net();
        n.peers.insert(
            "4dcKbDNyb6pkkRuP22OPzkHgpOb9k67iaP5R9A0xv0c=".into(),
            PeerConfig { preshared_key: None, allowed_ips: vec![], endpoint: None, persistent_keepalive: None },
        );
        let e = validate(&[("51820".to_string(), n)].into(), &Context::default()).expect_err("own key as a peer");
        assert!(e[0].message.contains("own public key"), "{e:?}");
        let mut n = net();
        n.peers.get_mut(KEY_B).unwrap().preshared_key = Some(ZERO_KEY.into());
        let d = validate(&[("51820".to_string(), n)].into(), &Context::default()).unwrap();
        assert_eq!(d.networks[&51820].peers.values().next().unwrap().preshared_key, None, "all zeros = none");
        let mut n = net();
        n.peers.get_mut(KEY_B).unwrap().allowed_ips.push("::102:304/128".into());
        assert!(validate(&[("51820".to_string(), n)].into(), &Context::default()).is_err());
    }

    #[test]
    fn peer_problems() {
        let mut n = net();
        n.peers.insert(
            "bad".into(),
            PeerConfig {
                preshared_key: Some("x".into()),
                allowed_ips: vec!["10.80.0.2/32".into()],
                endpoint: Some("host:1".into()),
                persistent_keepalive: Some(0),
            },
        );
        let p = paths(validate(&[("51820".to_string(), n)].into(), &Context::default()));
        for want in [
            r#"$["51820"].peers["bad"]"#,
            r#"$["51820"].peers["bad"].preshared_key"#,
            r#"$["51820"].peers["bad"].endpoint"#,
            r#"$["51820"].peers["bad"].persistent_keepalive"#,
        ] {
            assert!(p.contains(&want.to_string()), "missing {want} in {p:?}");
        }
    }

    #[test]
    fn one_hostname_one_network_whatever_the_scheme() {
        let mut other = net();
        other.private_key = KEY_C.into();
        other.proxy = [("http://app.example.com".to_string(), vec!["10.80.0.2:80".to_string()])].into();
        let p = paths(validate(&[("51820".to_string(), net()), ("51821".to_string(), other)].into(), &Context::default()));
        assert_eq!(p, vec![r#"$["51821"].proxy["http://app.example.com"]"#.to_string()]);
    }

    #[test]
    fn addresses_must_be_global_unique_and_outside_the_bridge() {
        let bridge = [Cidr::parse("10.199.0.0/16").unwrap()];
        let ctx = Context { custom: &[], reserved: &bridge };
        for (bad, why) in [
            ("127.0.0.2/8", "global"),
            ("169.254.1.1/16", "global"),
            ("fe80::1/64", "global"),
            ("::ffff:10.0.0.1/128", "global"),
            ("::102:304/128", "global"),
            ("fec0::1/64", "global"),
            ("224.0.0.1/4", "global"),
            ("10.199.3.4/24", "bridge"),
        ] {
            let mut n = net();
            n.address.push(bad.into());
            let e = validate(&[("51820".to_string(), n)].into(), &ctx).expect_err(bad);
            assert!(e[0].message.contains(why), "{bad}: {e:?}");
        }
        let mut n = net();
        n.address = vec!["fd00::1/64".into(), "fd00::1/48".into(), "10.80.0.1/16".into()];
        let e = validate(&[("51820".to_string(), n)].into(), &ctx).expect_err("same IP twice");
        assert!(e[0].message.contains("listed twice"), "{e:?}");
        let mut n = net();
        n.peers.get_mut(KEY_B).unwrap().allowed_ips.push("10.199.0.0/24".into());
        assert!(validate(&[("51820".to_string(), n)].into(), &ctx).is_err(), "allowed IP inside the bridge subnet");
        let mut n = net();
        n.peers.get_mut(KEY_B).unwrap().allowed_ips.push("0.0.0.0/0".into());
        n.proxy.insert("https://x.test".into(), vec!["10.199.0.1:443".into()]);
        let e = validate(&[("51820".to_string(), n.clone())].into(), &ctx).expect_err("upstream in the bridge");
        assert_eq!(e.len(), 1, "a default route is fine, the upstream is not: {e:?}");
        n.proxy.remove("https://x.test");
        assert!(validate(&[("51820".to_string(), n)].into(), &ctx).is_ok());
    }

    #[test]
    fn private_keys_unique_and_upstreams_bounded() {
        let mut other = net();
        other.proxy.clear();
        let p = paths(validate(&[("51820".to_string(), net()), ("51821".to_string(), other)].into(), &Context::default()));
        assert_eq!(p, vec![r#"$["51821"].private_key"#.to_string()]);
        let mut n = net();
        n.address = vec!["10.80.0.1/16".into()];
        n.proxy =
            [("https://many.test".to_string(), (0..=MAX_UPSTREAMS).map(|i| format!("10.80.{}.{}:443", i / 250, i % 250 + 2)).collect())]
                .into();
        let p = paths(validate(&[("51820".to_string(), n)].into(), &Context::default()));
        assert_eq!(p, vec![r#"$["51820"].proxy"#.to_string()]);
    }

    #[test]
    fn port_keys() {
        assert_eq!(parse_port_key("51820"), Ok(51820));
        for bad in ["", "0", "1", "65535", "051820", "+5", "5182O", "99999999999"] {
            assert!(parse_port_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn custom_forwardings() {
        let f = parse_custom_forwardings("https://api.example.com=127.0.0.1:8443, http://b.test=10.0.0.1:80").unwrap();
        assert_eq!(f.len(), 2);
        assert!(parse_custom_forwardings("https://a.test").is_err());
        assert!(parse_custom_forwardings("https://a.test=1.2.3.4:1,https://a.test=1.2.3.4:2").is_err());
    }
}
