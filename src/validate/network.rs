//! Checks of one network, one concern per function. Each adds its problems
//! and returns what it could parse, so one bad value does not hide another.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use super::{Context, MTU_RANGE, Problems, key_path, over_cap};
use crate::model::{MAX_UPSTREAMS_CEILING, NetworkConfig, PeerConfig, ProxyOptions, ProxyTarget};
use crate::spec::{DEFAULT_MTU, MAX_SHAPED_ROUTES, NetworkSpec, PeerSpec, RawRoute, RouteLimits};
use crate::types::{Cidr, Hostname, ProxyKey, ProxyUrl, PublicKey, Scheme, SecretKey, Transport, parse_endpoint, parse_upstream};

pub(super) fn validate_network(
    path: &str,
    port: Option<u16>,
    net: &NetworkConfig,
    ctx: &Context<'_>,
    problems: &mut Problems,
) -> Option<NetworkSpec> {
    let before = problems.count();
    if let (Some(lp), Some(port)) = (net.listen_port, port) {
        if lp != u32::from(port) {
            problems.add(format!("{path}.listen_port"), format!("listen_port {lp} must equal the network's key {port}"));
        }
    }
    let private_key =
        net.private_key.parse::<SecretKey>().map(SecretKey::clamped).map_err(|e| problems.add(format!("{path}.private_key"), e));
    let mtu = net.mtu.unwrap_or(DEFAULT_MTU);
    if !MTU_RANGE.contains(&mtu) {
        problems.add(format!("{path}.mtu"), format!("mtu must be {}..={}", MTU_RANGE.start(), MTU_RANGE.end()));
    }
    let addresses = addresses(path, &net.address, ctx, problems);
    let public_key = private_key.as_ref().ok().map(|k| public_key(ctx, port, k));
    let peers = peers(path, &net.peers, public_key, ctx, problems);
    let proxies = proxy(path, net, &addresses, &peers, ctx, problems);
    let bandwidth = net.bandwidth.as_ref().and_then(|b| super::limits::bandwidth(&format!("{path}.bandwidth"), b, problems));
    if problems.count() != before {
        return None;
    }
    Some(NetworkSpec {
        port: port?,
        private_key: private_key.ok()?,
        public_key: public_key?,
        mtu,
        addresses: addresses.into_iter().collect(),
        peers,
        https: proxies.https,
        http: proxies.http,
        proxy_protocol: proxies.proxy_protocol,
        tcp: proxies.tcp,
        udp: proxies.udp,
        route_limits: proxies.limits,
        bandwidth,
        standby: false,
    })
}

/// The public key of `key`: the previous state's where the network kept its
/// private key, else derived.
fn public_key(ctx: &Context<'_>, port: Option<u16>, key: &SecretKey) -> PublicKey {
    let previous = ctx.previous.zip(port).and_then(|(d, p)| d.networks.get(&p)).filter(|s| s.private_key == *key);
    previous.map_or_else(|| key.public_key(), |s| s.public_key)
}

/// The first reserved subnet (the bridge's) that overlaps `c`, if any.
fn reserved_overlap(ctx: &Context<'_>, c: &Cidr) -> Option<Cidr> {
    ctx.reserved.iter().find(|r| Cidr { addr: c.addr, prefix: c.prefix.max(r.prefix) }.within(r)).copied()
}

fn addresses(path: &str, given: &[String], ctx: &Context<'_>, problems: &mut Problems) -> BTreeSet<Cidr> {
    let mut addresses = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let cap = ctx.limits.allowed_ips;
    if over_cap(problems, &format!("{path}.address"), given.len(), "addresses", cap, "max-allowed-ips") {
        return addresses;
    }
    for (i, a) in given.iter().enumerate() {
        if problems.enough() {
            break;
        }
        let apath = format!("{path}.address[{i}]");
        match a.parse::<Cidr>() {
            Ok(c) => {
                if let Err(e) = check_interface_address(&c) {
                    problems.add(apath, e);
                } else if let Some(r) = reserved_overlap(ctx, &c) {
                    problems.add(apath, format!("{} is inside the gateway's own bridge subnet {r}", c.addr));
                } else if !seen.insert(c.addr) {
                    problems.add(apath, format!("{} is listed twice", c.addr));
                } else {
                    addresses.insert(c);
                }
            }
            Err(e) => problems.add(apath, e),
        }
    }
    addresses
}

/// Addresses an interface may carry: unicast and global (the observer sees
/// only global-scope addresses, so anything else would never converge).
pub(crate) fn check_interface_address(c: &Cidr) -> Result<(), String> {
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

/// Where the host's WireGuard socket may send a peer's packets: a unicast
/// address of some other machine. Loopback would reach the host's own
/// services, link-local and multicast its local links, unspecified
/// addresses nothing; an IPv4-mapped IPv6 address is judged by its IPv4
/// address (the socket sends to that). Link-local scope ids (`%N`) go with
/// link-local addresses.
pub(crate) fn check_endpoint(e: &SocketAddr) -> Result<(), String> {
    let v4 = |a: Ipv4Addr| {
        let o = a.octets();
        if a.is_loopback() {
            Some("a loopback address")
        } else if a.is_link_local() {
            Some("a link-local address")
        } else if a.is_multicast() || a.is_broadcast() {
            Some("a multicast or broadcast address")
        } else if o[0] == 0 {
            Some("an unspecified address (0.0.0.0/8)")
        } else {
            None
        }
    };
    let what = match e {
        SocketAddr::V4(e) => v4(*e.ip()),
        SocketAddr::V6(e) if e.scope_id() != 0 => Some("a scoped address (a scope id is for link-local addresses, which are refused)"),
        SocketAddr::V6(e) => match e.ip().to_ipv4_mapped() {
            Some(a) => v4(a),
            None => {
                let (a, s) = (e.ip(), e.ip().segments());
                if s[..6] == [0; 6] {
                    Some("a loopback, unspecified or IPv4-compatible address (::/96)")
                } else if (s[0] & 0xffc0) == 0xfe80 {
                    Some("a link-local address")
                } else if a.is_multicast() {
                    Some("a multicast address")
                } else {
                    None
                }
            }
        },
    };
    match what {
        Some(what) => Err(format!(
            "endpoint {e} is {what}: the gateway's WireGuard socket would send this peer's packets there; give the unicast address the node is reachable at"
        )),
        None => Ok(()),
    }
}

/// An endpoint inside the gateway's own bridge subnet would make the host's
/// WireGuard socket send into the networks' namespaces.
fn outside_bridge(ctx: &Context<'_>, e: SocketAddr) -> Result<SocketAddr, String> {
    let ip = match e.ip() {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4),
        v4 => v4,
    };
    match ctx.reserved.iter().find(|r| r.contains(ip)) {
        Some(r) => Err(format!("endpoint {e} is inside the gateway's own bridge subnet {r}; give the address the node is reachable at")),
        None => Ok(e),
    }
}

/// `::a.b.c.d` (first 96 bits zero, longer than /96): Rust and iproute2 print
/// these differently, so they could never be matched against `ip`/`wg` output.
pub(crate) fn is_ipv4_compatible(c: &Cidr) -> bool {
    matches!(c.addr, IpAddr::V6(a) if c.prefix > 96 && a.segments()[..6] == [0; 6])
}

fn peers(
    path: &str,
    given: &BTreeMap<String, PeerConfig>,
    own_key: Option<PublicKey>,
    ctx: &Context<'_>,
    problems: &mut Problems,
) -> BTreeMap<PublicKey, PeerSpec> {
    let mut peers = BTreeMap::new();
    if over_cap(problems, &format!("{path}.peers"), given.len(), "peers", ctx.limits.peers, "max-peers") {
        return peers;
    }
    for (key, peer) in given {
        if problems.enough() {
            break;
        }
        let ppath = key_path(&format!("{path}.peers"), key);
        let spec = peer_spec(&ppath, peer, ctx, problems);
        match key.parse::<PublicKey>() {
            // WireGuard silently ignores a peer with the interface's own key.
            Ok(pk) if Some(pk) == own_key => problems.add(ppath, "this peer's key is the network's own public key"),
            Ok(pk) => {
                peers.insert(pk, spec);
            }
            Err(e) => problems.add(ppath, format!("peer key {e}")),
        }
    }
    allowed_ips_have_one_owner(path, &peers, problems);
    peers
}

fn peer_spec(ppath: &str, peer: &PeerConfig, ctx: &Context<'_>, problems: &mut Problems) -> PeerSpec {
    let preshared_key = peer
        .preshared_key
        .as_ref()
        .and_then(|k| k.parse::<SecretKey>().map_err(|e| problems.add(format!("{ppath}.preshared_key"), e)).ok())
        // All zeros is how WireGuard spells "no preshared key".
        .filter(|k| !k.is_zero());
    let endpoint = peer.endpoint.as_ref().and_then(|e| {
        let checked = parse_endpoint(e).and_then(|a| check_endpoint(&a).map(|()| a)).and_then(|a| outside_bridge(ctx, a));
        checked.map_err(|m| problems.add(format!("{ppath}.endpoint"), m)).ok()
    });
    let persistent_keepalive = match peer.persistent_keepalive {
        None => None,
        Some(k) if (1..=65535).contains(&k) => Some(k as u16),
        Some(_) => {
            problems.add(format!("{ppath}.persistent_keepalive"), "persistent_keepalive must be 1..=65535 seconds");
            None
        }
    };
    let allowed_ips = allowed_ips(ppath, &peer.allowed_ips, ctx, problems);
    PeerSpec { preshared_key, allowed_ips, endpoint, persistent_keepalive }
}

fn allowed_ips(ppath: &str, given: &[String], ctx: &Context<'_>, problems: &mut Problems) -> Vec<Cidr> {
    let mut allowed = BTreeSet::new();
    let cap = ctx.limits.allowed_ips;
    if over_cap(problems, &format!("{ppath}.allowed_ips"), given.len(), "allowed IPs", cap, "max-allowed-ips") {
        return vec![];
    }
    for (i, a) in given.iter().enumerate() {
        if problems.enough() {
            break;
        }
        let ipath = format!("{ppath}.allowed_ips[{i}]");
        match a.parse::<Cidr>() {
            Ok(c) if is_ipv4_compatible(&c) => {
                problems.add(ipath, format!("{c}: IPv4-compatible IPv6 addresses are refused (tools print them differently)"))
            }
            // Wider prefixes (a default route) are fine: the bridge's own more
            // specific route still wins.
            Ok(c) => match ctx.reserved.iter().find(|r| c.network().within(r)) {
                Some(r) => problems.add(ipath, format!("{c} is inside the gateway's own bridge subnet {r}")),
                None => {
                    allowed.insert(c.network());
                }
            },
            Err(e) => problems.add(ipath, e),
        }
    }
    allowed.into_iter().collect()
}

/// Which peer owns an allowed IP must be unambiguous: WireGuard would
/// silently move it to the last peer configured.
fn allowed_ips_have_one_owner(path: &str, peers: &BTreeMap<PublicKey, PeerSpec>, problems: &mut Problems) {
    let mut owner: BTreeMap<Cidr, &PublicKey> = BTreeMap::new();
    for (pk, p) in peers {
        for c in &p.allowed_ips {
            if let Some(other) = owner.insert(*c, pk) {
                problems.add(key_path(&format!("{path}.peers"), &pk.to_string()), format!("allowed IP {c} is also given to peer {other}"));
            }
        }
    }
}

/// A network's proxy entries, parsed.
#[derive(Default)]
struct Proxies {
    https: BTreeMap<Hostname, Vec<SocketAddrV4>>,
    http: BTreeMap<Hostname, Vec<SocketAddrV4>>,
    proxy_protocol: BTreeSet<Hostname>,
    tcp: BTreeMap<u16, RawRoute>,
    udp: BTreeMap<u16, RawRoute>,
    limits: BTreeMap<ProxyKey, RouteLimits>,
}

impl Proxies {
    fn is_empty(&self) -> bool {
        self.https.is_empty() && self.http.is_empty() && self.tcp.is_empty() && self.udp.is_empty()
    }

    /// Files one entry; false if its key was already given in another spelling.
    fn insert(&mut self, key: ProxyKey, upstreams: Vec<SocketAddrV4>, proxy_protocol: bool) -> bool {
        match key {
            ProxyKey::Url(ProxyUrl { scheme, host }) => {
                if proxy_protocol {
                    self.proxy_protocol.insert(host.clone());
                }
                let map = if scheme == Scheme::Https { &mut self.https } else { &mut self.http };
                map.insert(host, upstreams).is_none()
            }
            ProxyKey::Raw(t, port) => {
                let map = if t == Transport::Tcp { &mut self.tcp } else { &mut self.udp };
                map.insert(port, RawRoute { upstreams, proxy_protocol }).is_none()
            }
        }
    }
}

fn proxy(
    path: &str,
    net: &NetworkConfig,
    addresses: &BTreeSet<Cidr>,
    peers: &BTreeMap<PublicKey, PeerSpec>,
    ctx: &Context<'_>,
    problems: &mut Problems,
) -> Proxies {
    let mut out = Proxies::default();
    if over_cap(problems, &format!("{path}.proxy"), net.proxy.len(), "proxy entries", ctx.limits.routes, "max-routes") {
        return out;
    }
    let covered = Coverage::new(addresses.iter().chain(peers.values().flat_map(|p| &p.allowed_ips)));
    let routed = |ip: IpAddr| covered.contains(ip);
    for (key, target) in &net.proxy {
        if problems.enough() {
            break;
        }
        let upath = key_path(&format!("{path}.proxy"), key);
        let parsed = key.parse::<ProxyKey>().map_err(|e| problems.add(upath.clone(), e)).ok();
        let Some((ups, ups_path, proxy_protocol)) = target_form(&upath, target, ctx, problems) else { continue };
        let limits = match target {
            ProxyTarget::Options(o) => super::limits::route_limits(&upath, &super::limits::LimitFields::of(o), ctx, problems),
            _ => RouteLimits::default(),
        };
        if ups.is_empty() {
            problems.add(ups_path.clone(), "at least one upstream IP:PORT is needed");
        }
        if over_cap(problems, &ups_path, ups.len(), "upstreams", ctx.limits.upstreams, "max-upstreams") {
            continue;
        }
        let mut list = BTreeSet::new();
        for (i, u) in ups.iter().enumerate() {
            if problems.enough() {
                break;
            }
            list.extend(upstream(&format!("{ups_path}[{i}]"), u, &routed, ctx, problems));
        }
        let Some(parsed) = parsed else { continue };
        if proxy_protocol && !matches!(parsed, ProxyKey::Url(ProxyUrl { scheme: Scheme::Https, .. }) | ProxyKey::Raw(Transport::Tcp, _)) {
            problems.add(format!("{upath}.proxy_protocol"), PROXY_PROTOCOL_ONLY);
        }
        if proxy_protocol && limits.limits_connections() && matches!(parsed, ProxyKey::Url(ProxyUrl { scheme: Scheme::Https, .. })) {
            let field = if limits.max_connections.is_some() { "max_connections" } else { "max_connections_per_client" };
            problems.add(format!("{upath}.{field}"), HTTPS_PP_LIMITS);
        }
        if !limits.is_empty() {
            out.limits.insert(parsed.clone(), limits);
        }
        if !out.insert(parsed, list.into_iter().collect(), proxy_protocol) {
            problems.add(upath, "the same URL is given twice (e.g. with and without a trailing '/')");
        }
    }
    if !out.is_empty() && !addresses.iter().any(|c| c.addr.is_ipv4()) {
        problems.add(format!("{path}.address"), "a network with proxy entries needs an IPv4 address");
    }
    let raw = out.tcp.values().chain(out.udp.values()).flat_map(|r| &r.upstreams);
    let distinct: BTreeSet<&SocketAddrV4> = out.https.values().chain(out.http.values()).flatten().chain(raw).collect();
    over_cap(problems, &format!("{path}.proxy"), distinct.len(), "distinct upstreams", ctx.limits.upstreams, "max-upstreams");
    let shaped = out.limits.values().filter(|l| l.bandwidth.is_some()).count();
    if shaped > MAX_SHAPED_ROUTES {
        let message = format!(
            "{shaped} routes with a bandwidth; at most {MAX_SHAPED_ROUTES} in one network (each is a tc class of the network's veth, and class numbers end there)"
        );
        problems.add(format!("{path}.proxy"), message);
    }
    out
}

/// Which addresses a network routes (its interface's subnets and its peers'
/// allowed IPs): each lookup costs one set probe per prefix length in use,
/// not one comparison per subnet, so 1,000 upstreams against 100,000
/// allowed IPs stay cheap.
struct Coverage(BTreeMap<u8, BTreeSet<IpAddr>>);

impl Coverage {
    fn new<'c>(subnets: impl Iterator<Item = &'c Cidr>) -> Coverage {
        let mut by_prefix: BTreeMap<u8, BTreeSet<IpAddr>> = BTreeMap::new();
        for c in subnets.filter(|c| c.addr.is_ipv4()) {
            by_prefix.entry(c.prefix).or_default().insert(c.network().addr);
        }
        Coverage(by_prefix)
    }

    fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|(prefix, nets)| Cidr::new(ip, *prefix).is_some_and(|c| nets.contains(&c.network().addr)))
    }
}

/// nginx can add a PROXY protocol header only in its stream module over TCP:
/// not to an HTTP reverse proxy's requests, and v1 has no UDP form.
pub(crate) const PROXY_PROTOCOL_ONLY: &str = "proxy_protocol is only for https:// and tcp:// entries (nginx cannot send the header for http:// or udp://; http:// upstreams get X-Real-IP and X-Forwarded-For)";

/// An HTTPS route's connections are counted in a hop of its own (a unix
/// socket server); nginx would write that socket's path into the PROXY
/// header it sends from there, which no receiver parses.
pub(crate) const HTTPS_PP_LIMITS: &str = "connection limits on an https:// route with proxy_protocol are not supported (nginx counts them in a local hop and would send a malformed PROXY header from there); use allow/deny, or drop proxy_protocol";

/// The upstreams of a proxy value (with their JSON path) and whether it asks
/// for a PROXY protocol header; a value of neither form is reported in
/// detail, field by field.
fn target_form<'t>(
    path: &str,
    target: &'t ProxyTarget,
    ctx: &Context<'_>,
    problems: &mut Problems,
) -> Option<(&'t [String], String, bool)> {
    match target {
        ProxyTarget::Upstreams(list) => Some((list, path.to_string(), false)),
        ProxyTarget::Options(o) => Some((&o.upstreams, format!("{path}.upstreams"), o.proxy_protocol)),
        ProxyTarget::Invalid(value) => {
            invalid_target(path, value, ctx, problems);
            None
        }
        ProxyTarget::TooLong { upstreams, object } => {
            let path = if *object { format!("{path}.upstreams") } else { path.to_string() };
            over_cap(problems, &path, *upstreams, "upstreams", ctx.limits.upstreams.min(MAX_UPSTREAMS_CEILING), "max-upstreams");
            None
        }
        ProxyTarget::TooLongList { field, len } => {
            let cap = ctx.limits.allowed_ips.min(MAX_UPSTREAMS_CEILING);
            over_cap(problems, &format!("{path}.{field}"), *len, "CIDRs", cap, "max-allowed-ips");
            None
        }
    }
}

fn invalid_target(path: &str, value: &serde_json::Value, ctx: &Context<'_>, problems: &mut Problems) {
    use serde_json::Value;
    let strings = |path: &str, items: &[Value], problems: &mut Problems| {
        if over_cap(problems, path, items.len(), "upstreams", ctx.limits.upstreams, "max-upstreams") {
            return;
        }
        for (i, _) in items.iter().enumerate().filter(|(_, v)| !v.is_string()) {
            if problems.enough() {
                break;
            }
            problems.add(format!("{path}[{i}]"), "an upstream must be a string IPV4:PORT");
        }
    };
    match value {
        Value::Array(items) => strings(path, items, problems),
        Value::Object(fields) => {
            if !fields.contains_key("upstreams") {
                problems.add(path, "the object form needs \"upstreams\": a list of IPV4:PORT");
            }
            for (name, v) in fields {
                if problems.enough() {
                    break;
                }
                let fpath = format!("{path}.{name}");
                match (name.as_str(), v) {
                    ("upstreams", Value::Array(items)) => strings(&fpath, items, problems),
                    ("upstreams", _) => problems.add(fpath, "upstreams must be a list of IPV4:PORT"),
                    ("proxy_protocol", Value::Bool(_)) => {}
                    ("proxy_protocol", _) => problems.add(fpath, "proxy_protocol must be true or false"),
                    (limit, _) if ProxyOptions::LIMIT_FIELDS.contains(&limit) => {}
                    _ => problems.add(key_path(path, name), UNKNOWN_FIELD),
                }
            }
            super::limits::route_limits(path, &super::limits::LimitFields::from_map(fields), ctx, problems);
        }
        _ => problems.add(path, "must be a list of upstreams IPV4:PORT or an object {\"upstreams\": [...], \"proxy_protocol\": bool}"),
    }
}

const UNKNOWN_FIELD: &str =
    "unknown field; the object form has upstreams, proxy_protocol, allow, deny, max_connections, max_connections_per_client and bandwidth";

/// One upstream: `IPV4:PORT`, routed into the network, outside the bridge.
fn upstream(path: &str, u: &str, routed: &dyn Fn(IpAddr) -> bool, ctx: &Context<'_>, problems: &mut Problems) -> Option<SocketAddrV4> {
    let sa = parse_upstream(u).map_err(|e| problems.add(path, e)).ok()?;
    let ip = IpAddr::V4(*sa.ip());
    if let Some(r) = ctx.reserved.iter().find(|r| r.contains(ip)) {
        problems.add(path, format!("upstream {u} is inside the gateway's own bridge subnet {r}"));
    } else if !routed(ip) {
        problems.add(path, format!("upstream {u} is not inside the network (no address or peer allowed IP covers it)"));
    }
    Some(sa)
}
