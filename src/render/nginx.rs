use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use crate::layout::{DnatPorts, Layout, NetworkDnat};
use crate::spec::{CustomForwarding, Desired, NetworkSpec, RouteLimits};
use crate::types::{Cidr, Hostname, ProxyKey, ProxyUrl, Scheme, Transport};

/// Where nginx should send one hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub host: Hostname,
    /// A stable nginx upstream name.
    pub upstream_name: String,
    pub servers: Vec<SocketAddrV4>,
    /// HTTPS only: the upstreams get a PROXY protocol header.
    pub proxy_protocol: bool,
    /// The route's access control and connection limits, if it has any.
    pub access: Option<RouteLimits>,
}

/// Where nginx should send one raw port of the gateway host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRoute {
    /// The network whose route it is.
    pub network: u16,
    pub transport: Transport,
    pub port: u16,
    pub upstream_name: String,
    pub servers: Vec<SocketAddrV4>,
    pub proxy_protocol: bool,
    pub limits: SessionLimits,
    /// Who may reach the port (`allow`, `deny`), if the route says.
    pub access: Option<RouteLimits>,
}

/// How many sessions (TCP connections, UDP client address:port pairs) one
/// raw port holds at once, in all and per client address. nginx's workers
/// share one pool of connections among every route: without a bound, one
/// tenant's port (a UDP flood needs only a new source port per datagram)
/// takes them all and every other route stops answering. A route's own
/// limits (per-route access control) take the place of the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    pub per_port: u32,
    pub per_client: u32,
}

impl SessionLimits {
    pub const DEFAULT: SessionLimits = SessionLimits { per_port: 512, per_client: 32 };

    /// A route's own limits where it has them, the defaults elsewhere.
    pub fn of(limits: Option<&RouteLimits>) -> SessionLimits {
        let d = SessionLimits::DEFAULT;
        match limits {
            None => d,
            Some(l) => SessionLimits {
                per_port: l.max_connections.unwrap_or(d.per_port),
                per_client: l.max_connections_per_client.unwrap_or(d.per_client),
            },
        }
    }
}

/// Everything nginx needs, in typed form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxSite {
    pub options: NginxOptions,
    pub https: Vec<Route>,
    pub http: Vec<Route>,
    /// Sorted by transport, then port.
    pub raw: Vec<RawRoute>,
}

/// One address a generated server listens on: `PORT` (nginx reads it as
/// IPv4 only), `IPV4:PORT` or `[IPV6]:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Port(u16),
    Addr(SocketAddr),
}

impl Listen {
    /// A comma-separated list, each `PORT`, `IPV4:PORT` or `[IPV6]:PORT` in
    /// canonical form, port 1..=65535, none twice.
    pub fn parse_list(s: &str) -> Result<Vec<Listen>, String> {
        let mut out = Vec::new();
        for item in s.split(',') {
            let listen = match (item.parse::<u16>(), item.parse::<SocketAddr>()) {
                (Ok(p), _) if p > 0 && p.to_string() == item => Listen::Port(p),
                (_, Ok(a)) if a.port() > 0 && a.to_string() == item => Listen::Addr(a),
                _ => return Err(format!("'{item}' must be PORT, IPV4:PORT or [IPV6]:PORT")),
            };
            if out.contains(&listen) {
                return Err(format!("'{item}' is given twice"));
            }
            out.push(listen);
        }
        Ok(out)
    }

    pub fn port(&self) -> u16 {
        match self {
            Listen::Port(p) => *p,
            Listen::Addr(a) => a.port(),
        }
    }

    /// `[::]:PORT`: the one that would also take IPv4 without `ipv6only=on`.
    fn is_ipv6_wildcard(&self) -> bool {
        matches!(self, Listen::Addr(SocketAddr::V6(a)) if a.ip().is_unspecified())
    }
}

/// Addresses for the raw ports: a comma-separated list of IPs in canonical form.
pub fn parse_addresses(s: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for item in s.split(',') {
        let ip = item.parse::<IpAddr>().ok().filter(|ip| ip.to_string() == item).ok_or_else(|| format!("'{item}' is not an IP address"))?;
        if out.contains(&ip) {
            return Err(format!("'{item}' is given twice"));
        }
        out.push(ip);
    }
    Ok(out)
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Port(p) => write!(f, "{p}"),
            Listen::Addr(a) => write!(f, "{a}"),
        }
    }
}

/// Operator settings of the generated nginx config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxOptions {
    /// What the HTTPS (SNI) server and the HTTP servers listen on.
    pub https_listen: Vec<Listen>,
    pub http_listen: Vec<Listen>,
    /// The addresses raw `tcp://`/`udp://` ports are opened on.
    pub raw_listen: Vec<IpAddr>,
    /// The unix socket through which HTTPS routes without PROXY protocol go
    /// once some route has it (checked at start-up: an absolute path of
    /// plain characters).
    pub sni_socket: String,
    /// Written in the http file so long hostnames fit; 0 leaves it to the
    /// main config (nginx refuses the directive twice).
    pub server_names_hash_bucket_size: u32,
    /// `worker_shutdown_timeout`, written at nginx's main level (the stream
    /// file is included there): old workers end at most this long after a
    /// reload. None: left to the main config (nginx refuses it twice).
    pub worker_shutdown_timeout: Option<std::time::Duration>,
    /// Where the gateway's own servers log (`--nginx-access-log`, checked at
    /// start-up: an absolute path of plain characters); None: not at all.
    pub access_log: Option<String>,
    /// The daemon's usage socket (`--usage-socket`, checked at start-up: an
    /// absolute path of plain characters): every server of a route sends
    /// one line per session or request there (see `usage`); None: off.
    pub usage_socket: Option<String>,
}

/// nginx's two files as they should be (`Debug` gives their sizes only:
/// an action carrying them is logged).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NginxFiles {
    pub stream: String,
    pub http: String,
}

impl std::fmt::Debug for NginxFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NginxFiles(stream {} bytes, http {} bytes)", self.stream.len(), self.http.len())
    }
}

impl NginxFiles {
    pub fn render(layout: &Layout, desired: &Desired, custom: &[CustomForwarding], options: &NginxOptions) -> Self {
        Self::of(&NginxSite::build(layout, desired, custom, options))
    }

    pub fn of(site: &NginxSite) -> Self {
        NginxFiles::of_view(&site.view())
    }

    fn of_view(view: &SiteView<'_>) -> Self {
        NginxFiles { stream: stream_of(view), http: http_of(view) }
    }
}

/// A route and, when kept from an earlier pass, its text that depends on
/// nothing but itself and the options (an HTTPS route's upstream block,
/// an HTTP route's upstream and server, a raw port's upstream and server).
struct Piece<'a, R> {
    route: &'a R,
    text: Option<&'a str>,
}

/// What the renderers read: the options and every route in the files'
/// order, with the text each one has already.
struct SiteView<'a> {
    options: &'a NginxOptions,
    https: Vec<Piece<'a, Route>>,
    http: Vec<Piece<'a, Route>>,
    raw: Vec<Piece<'a, RawRoute>>,
}

impl SiteView<'_> {
    fn https(&self) -> impl Iterator<Item = &Route> {
        self.https.iter().map(|p| p.route)
    }
}

/// One network's part of nginx's files, rendered once per change of its
/// spec: its routes, typed (the maps, gates and hops that name routes of
/// every network are written when the files are put together), and the
/// text of each route that depends on nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkNginx {
    /// The spec it was rendered from.
    pub spec: Arc<NetworkSpec>,
    https: Vec<(Route, String)>,
    http: Vec<(Route, String)>,
    raw: Vec<(RawRoute, String)>,
}

impl NetworkNginx {
    pub fn of(layout: &Layout, spec: Arc<NetworkSpec>, dnat: &NetworkDnat, options: &NginxOptions) -> Self {
        let (https, http, raw) = network_routes(layout, &spec, dnat);
        let text = |f: &dyn Fn(&mut String)| {
            let mut s = String::new();
            f(&mut s);
            s
        };
        let https = https.into_iter().map(|r| (text(&|s| upstream_block(s, "    ", &r.upstream_name, &r.servers)), r)).map(|(t, r)| (r, t));
        let http = http.into_iter().map(|r| (text(&|s| http_server(s, options, &r)), r)).map(|(t, r)| (r, t));
        let raw = raw.into_iter().map(|r| (text(&|s| raw_server(s, options, &r)), r)).map(|(t, r)| (r, t));
        NetworkNginx { spec, https: https.collect(), http: http.collect(), raw: raw.collect() }
    }
}

/// nginx's part of every network, by port: a network whose spec did not
/// change keeps its part, so a pass renders only the networks that did,
/// and the files are put together from the parts.
#[derive(Debug, Clone, Default)]
pub struct NginxParts {
    networks: BTreeMap<u16, Arc<NetworkNginx>>,
}

impl NginxParts {
    /// The parts of the `networks` (each spec with its DNAT ports, as its
    /// `target::NetworkTarget` holds them): a network whose spec is the one
    /// `before`'s part was rendered from keeps it; the others are rendered.
    /// Also returns the ports rendered (the work done).
    pub fn build<'a>(
        layout: &Layout,
        options: &NginxOptions,
        networks: impl IntoIterator<Item = (&'a Arc<NetworkSpec>, &'a NetworkDnat)>,
        before: &NginxParts,
    ) -> (NginxParts, Vec<u16>) {
        let (networks, rendered) = crate::spec::keep_or_make(
            networks,
            |(spec, _)| spec,
            &before.networks,
            |n| &n.spec,
            |(spec, dnat), _| NetworkNginx::of(layout, (*spec).clone(), dnat, options),
        );
        (NginxParts { networks }, rendered)
    }

    /// nginx's files from the parts and the custom forwardings, the raw
    /// routes `keep` refuses left out: byte for byte what
    /// [`NginxFiles::render`] writes for the same state.
    pub fn files(&self, custom: &[CustomForwarding], options: &NginxOptions, mut keep: impl FnMut(&RawRoute) -> bool) -> NginxFiles {
        let (custom_https, custom_http) = custom_routes(custom);
        fn own(list: &[Route]) -> impl Iterator<Item = Piece<'_, Route>> {
            list.iter().map(|r| Piece { route: r, text: None })
        }
        fn kept<R>(list: &[(R, String)]) -> impl Iterator<Item = Piece<'_, R>> {
            list.iter().map(|(r, t)| Piece { route: r, text: Some(t.as_str()) })
        }
        let (mut https, mut http, mut raw) = (Vec::new(), Vec::new(), Vec::new());
        for n in self.networks.values() {
            https.extend(kept(&n.https));
            http.extend(kept(&n.http));
            raw.extend(kept(&n.raw).filter(|p| keep(p.route)));
        }
        https.extend(own(&custom_https));
        http.extend(own(&custom_http));
        sort_routes(&mut https, &mut http, &mut raw);
        NginxFiles::of_view(&SiteView { options, https, http, raw })
    }

    /// The raw routes of every network (ports a running nginx may hold).
    pub fn raw_routes(&self) -> impl Iterator<Item = &RawRoute> {
        self.networks.values().flat_map(|n| n.raw.iter().map(|(r, _)| r))
    }
}

impl<R> AsRef<R> for Piece<'_, R> {
    fn as_ref(&self) -> &R {
        self.route
    }
}

/// The raw ports (`listen ADDR:PORT[ udp]`) a stream file written by the
/// gateway opens: what an nginx running it holds already.
pub fn raw_listens(stream: &str) -> std::collections::BTreeSet<(Transport, u16)> {
    let mut out = std::collections::BTreeSet::new();
    for line in stream.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("listen ").and_then(|l| l.strip_suffix(';')) else { continue };
        let mut words = rest.split_whitespace();
        let Some(Ok(addr)) = words.next().map(str::parse::<SocketAddr>) else { continue };
        let transport = if words.any(|w| w == "udp") { Transport::Udp } else { Transport::Tcp };
        out.insert((transport, addr.port()));
    }
    out
}

/// One network's routes (HTTPS, HTTP, raw), each in its map's order.
type NetworkRoutes = (Vec<Route>, Vec<Route>, Vec<RawRoute>);

fn network_routes(layout: &Layout, spec: &NetworkSpec, dnat: &NetworkDnat) -> NetworkRoutes {
    let (mut https, mut http, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    let veth_ip = layout.veth_ns_ip(spec.port);
    // Each route's own DNAT ports (routes sharing an upstream each have theirs).
    let to_veth = |ports: &DnatPorts, key: &str, servers: &[SocketAddrV4]| -> Vec<SocketAddrV4> {
        servers.iter().filter_map(|u| ports.port(key, u)).map(|p| SocketAddrV4::new(veth_ip, p)).collect()
    };
    let (tcp_ports, udp_ports) = (&dnat.tcp, &dnat.udp);
    for (scheme, map, out) in [(Scheme::Https, &spec.https, &mut https), (Scheme::Http, &spec.http, &mut http)] {
        for (i, (host, servers)) in map.iter().enumerate() {
            let upstream_name = format!("gateway_{}_{}_{i}", scheme.name(), spec.port);
            let proxy_protocol = scheme == Scheme::Https && spec.proxy_protocol.contains(host);
            let key = ProxyKey::Url(ProxyUrl { scheme, host: host.clone() });
            let servers = to_veth(tcp_ports, &key.to_string(), servers);
            let access = spec.limits_of(&key).cloned();
            out.push(Route { host: host.clone(), upstream_name, servers, proxy_protocol, access });
        }
    }
    for (transport, map, ports) in [(Transport::Tcp, &spec.tcp, tcp_ports), (Transport::Udp, &spec.udp, udp_ports)] {
        for (port, r) in map {
            let upstream_name = format!("gateway_{}_{}_{port}", transport.name(), spec.port);
            let key = ProxyKey::Raw(transport, *port);
            let servers = to_veth(ports, &key.to_string(), &r.upstreams);
            let access = spec.limits_of(&key).cloned();
            let (proxy_protocol, limits) = (r.proxy_protocol, SessionLimits::of(access.as_ref()));
            let network = spec.port;
            raw.push(RawRoute { network, transport, port: *port, upstream_name, servers, proxy_protocol, limits, access });
        }
    }
    (https, http, raw)
}

/// The `--custom-forwarding` routes (HTTPS, HTTP).
fn custom_routes(custom: &[CustomForwarding]) -> (Vec<Route>, Vec<Route>) {
    let (mut https, mut http) = (Vec::new(), Vec::new());
    for (i, f) in custom.iter().enumerate() {
        let out = if f.url.scheme == Scheme::Https { &mut https } else { &mut http };
        let upstream_name = format!("gateway_{}_custom_{i}", f.url.scheme.name());
        out.push(Route { host: f.url.host.clone(), upstream_name, servers: vec![f.upstream], proxy_protocol: false, access: None });
    }
    (https, http)
}

/// Routes in the files' order: by name (HTTPS, HTTP), by transport and
/// port (raw); stable, so the order before (networks by port, each in
/// its map's order, then the custom ones) decides nothing else.
fn sort_routes<H: AsRef<Route>, R: AsRef<RawRoute>>(https: &mut [H], http: &mut [H], raw: &mut [R]) {
    https.sort_by(|a, b| a.as_ref().host.cmp(&b.as_ref().host));
    http.sort_by(|a, b| a.as_ref().host.cmp(&b.as_ref().host));
    raw.sort_by_key(|r| (r.as_ref().transport, r.as_ref().port));
}

impl AsRef<Route> for Route {
    fn as_ref(&self) -> &Route {
        self
    }
}

impl AsRef<RawRoute> for RawRoute {
    fn as_ref(&self) -> &RawRoute {
        self
    }
}

impl NginxSite {
    pub fn build(layout: &Layout, desired: &Desired, custom: &[CustomForwarding], options: &NginxOptions) -> Self {
        let (mut https, mut http, mut raw) = (Vec::new(), Vec::new(), Vec::new());
        for spec in desired.networks.values() {
            let (s, h, r) = network_routes(layout, spec, &layout.network_dnat(spec, None));
            https.extend(s);
            http.extend(h);
            raw.extend(r);
        }
        let (custom_https, custom_http) = custom_routes(custom);
        https.extend(custom_https);
        http.extend(custom_http);
        sort_routes(&mut https, &mut http, &mut raw);
        NginxSite { options: options.clone(), https, http, raw }
    }

    /// The site as the renderers read it (every route's text rendered there).
    fn view(&self) -> SiteView<'_> {
        SiteView {
            options: &self.options,
            https: self.https.iter().map(|r| Piece { route: r, text: None }).collect(),
            http: self.http.iter().map(|r| Piece { route: r, text: None }).collect(),
            raw: self.raw.iter().map(|r| Piece { route: r, text: None }).collect(),
        }
    }

    /// Which hostnames and raw ports go where.
    pub fn routes(&self) -> BTreeMap<String, Vec<SocketAddrV4>> {
        let mut m = BTreeMap::new();
        for (scheme, list) in [(Scheme::Https, &self.https), (Scheme::Http, &self.http)] {
            for r in list {
                m.insert(format!("{}://{}", scheme.name(), r.host), r.servers.clone());
            }
        }
        for r in &self.raw {
            m.insert(format!("{}://{}", r.transport.name(), r.port), r.servers.clone());
        }
        m
    }
}

pub(crate) const HEADER: &str = "# Written by gateway. Do not edit: it is rewritten whenever the desired state changes.\n";

fn upstream_block(s: &mut String, indent: &str, name: &str, servers: &[SocketAddrV4]) {
    let _ = writeln!(s, "{indent}upstream {name} {{");
    for srv in servers {
        let _ = writeln!(s, "{indent}    server {srv};");
    }
    let _ = writeln!(s, "{indent}}}");
}

/// `listen` lines for `addresses`, each with `extra` parameters (`udp`,
/// `proxy_protocol`). `ipv6only=on` keeps `[::]:PORT` from also taking IPv4
/// next to `PORT`; nginx allows such options once per address, so only
/// where `with_options` is set.
fn listen_lines(s: &mut String, indent: &str, addresses: &[Listen], extra: &str, with_options: bool) {
    for l in addresses {
        let only = if with_options && l.is_ipv6_wildcard() { " ipv6only=on" } else { "" };
        let _ = writeln!(s, "{indent}listen {l}{extra}{only};");
    }
}

const STREAM_TIMEOUTS: &str = concat!(
    "        # The first connection may wait for a WireGuard handshake.\n",
    "        proxy_connect_timeout 10s;\n",
    "        # Long-lived TLS connections (websockets, streaming) stay open while idle.\n",
    "        proxy_timeout 1h;\n",
);

/// The `stream {}` block: HTTPS passed through untouched, chosen by SNI;
/// then the raw TCP and UDP ports.
pub fn nginx_stream(site: &NginxSite) -> String {
    stream_of(&site.view())
}

fn stream_of(site: &SiteView<'_>) -> String {
    let mut s = String::from(HEADER);
    if let Some(timeout) = site.options.worker_shutdown_timeout {
        // Old workers keep their connections after a reload (idle streams up
        // to `proxy_timeout 1h`): this bounds how long they live and hold memory.
        s.push_str("# After a reload, old workers close what they still hold and end within this time.\n");
        let _ = writeln!(s, "worker_shutdown_timeout {};", nginx_time(timeout));
    }
    s.push_str("stream {\n");
    // Room for 253-character names and many of them.
    s.push_str("    map_hash_bucket_size 512;\n    map_hash_max_size 65536;\n");
    if site.options.access_log.is_some() {
        s.push_str(STREAM_LOG_FORMAT);
    }
    if site.options.usage_socket.is_some() {
        s.push_str(STREAM_USAGE_FORMAT);
    }
    let gated = SniGates::of(site);
    let backend = |r: &Route| gated.backend(r);
    sni_map(&mut s, "$gateway_backend", "gateway_unknown_host", site.https().map(|r| (&r.host, backend(r))));
    let with_pp = gated.listener_pp;
    if with_pp {
        s.push_str(
            "    # Routes with PROXY protocol go straight to their upstreams; the others through the SNI hop, which drops the header.\n",
        );
        let direct = site.https().filter(|r| r.proxy_protocol || gated.entry_of(r).is_some());
        sni_map(
            &mut s,
            "$gateway_entry",
            "gateway_sni_hop",
            direct.map(|r| (&r.host, gated.entry_of(r).unwrap_or_else(|| r.upstream_name.clone()))),
        );
    }
    s.push_str("    # A name nobody serves: the connection is closed.\n");
    s.push_str("    upstream gateway_unknown_host {\n        server 127.0.0.1:9 down;\n    }\n");
    if with_pp {
        let _ = writeln!(s, "    upstream gateway_sni_hop {{\n        server unix:{};\n    }}", site.options.sni_socket);
    }
    for p in &site.https {
        match p.text {
            Some(text) => s.push_str(text),
            None => upstream_block(&mut s, "    ", &p.route.upstream_name, &p.route.servers),
        }
    }
    gated.render_gates(&mut s, site);
    s.push_str("\n    server {\n");
    listen_lines(&mut s, "        ", &site.options.https_listen, "", true);
    s.push_str("        ssl_preread on;\n");
    if with_pp {
        s.push_str("        proxy_protocol on;\n        proxy_pass $gateway_entry;\n");
    } else {
        s.push_str("        proxy_pass $gateway_backend;\n");
    }
    s.push_str(STREAM_TIMEOUTS);
    stream_access_log(&mut s, site.options, "gateway_usage");
    s.push_str("    }\n");
    if with_pp {
        s.push_str("\n    server {\n");
        let _ = writeln!(s, "        listen unix:{} proxy_protocol;", site.options.sni_socket);
        s.push_str("        ssl_preread on;\n        proxy_pass $gateway_backend;\n");
        s.push_str(STREAM_TIMEOUTS);
        stream_access_log(&mut s, site.options, "gateway_usage");
        s.push_str("    }\n");
    }
    gated.render_hops(&mut s, site);
    if !site.raw.is_empty() {
        s.push_str(RAW_LIMIT_ZONES);
    }
    for p in &site.raw {
        match p.text {
            Some(text) => s.push_str(text),
            None => raw_server(&mut s, site.options, p.route),
        }
    }
    s.push_str("}\n");
    s
}

/// The HTTPS routes with access control or connection limits on the shared
/// SNI listener. nginx's stream module runs `allow`/`deny` and
/// `limit_conn` before `ssl_preread`, so on that listener neither can
/// depend on the name. Instead:
/// - who may reach a route is decided by a `geo` on the client address,
///   per route, whose value is where the connection goes: the route's
///   next step, or `gateway_refused` (a server marked down: closed at once,
///   nothing is connected). It is taken through the SNI map, on the first
///   hop, so no other route's path changes;
/// - a route with connection limits goes through a hop of its own (a unix
///   socket server, `{sni_socket}.{n}`) where `limit_conn` counts that
///   route's connections alone. When some route counts per client, the
///   listener sends a PROXY header (as for `proxy_protocol` routes) and
///   the hops read the client's address from it (`set_real_ip_from unix:`).
struct SniGates {
    /// The hop of each route that has one, by upstream name.
    hops: BTreeMap<String, String>,
    /// The listener sends a PROXY protocol header on every connection.
    listener_pp: bool,
}

impl SniGates {
    fn of(site: &SiteView<'_>) -> SniGates {
        let mut hops = BTreeMap::new();
        for r in site.https().filter(|r| r.access.as_ref().is_some_and(RouteLimits::limits_connections)) {
            let n = hops.len();
            hops.insert(r.upstream_name.clone(), format!("{}.{n}", site.options.sni_socket));
        }
        let per_client = site.https().any(|r| r.access.as_ref().is_some_and(|a| a.max_connections_per_client.is_some()));
        SniGates { hops, listener_pp: per_client || site.https().any(|r| r.proxy_protocol) }
    }

    fn restricted(r: &Route) -> bool {
        r.access.as_ref().is_some_and(RouteLimits::restricts_clients)
    }

    /// Where an admitted client of `r` goes from the listener.
    fn next_step(&self, r: &Route) -> String {
        if self.hops.contains_key(&r.upstream_name) {
            format!("{}_hop", r.upstream_name)
        } else if self.listener_pp && !r.proxy_protocol {
            "gateway_sni_hop".to_string()
        } else {
            r.upstream_name.clone()
        }
    }

    /// The value of `$gateway_backend` for `r`: its upstream, or, without a
    /// PROXY header on the listener, the gate or hop it goes through.
    fn backend(&self, r: &Route) -> String {
        if self.listener_pp { r.upstream_name.clone() } else { self.entry_of(r).unwrap_or_else(|| r.upstream_name.clone()) }
    }

    /// What the listener sends `r` to when that is not its plain path.
    fn entry_of(&self, r: &Route) -> Option<String> {
        if Self::restricted(r) {
            Some(format!("$gateway_access_{}", r.upstream_name))
        } else if self.hops.contains_key(&r.upstream_name) {
            Some(self.next_step(r))
        } else {
            None
        }
    }

    /// The `geo` of each restricted route and the hops' upstreams.
    fn render_gates(&self, s: &mut String, site: &SiteView<'_>) {
        let restricted: Vec<&Route> = site.https().filter(|r| Self::restricted(r)).collect();
        if !restricted.is_empty() {
            s.push_str("    # A client a route refuses (allow, deny): closed at once, nothing is connected.\n");
            let _ = writeln!(s, "    upstream {REFUSED_UPSTREAM} {{\n        server 127.0.0.1:9 down;\n    }}");
        }
        for r in restricted {
            let Some(access) = &r.access else { continue };
            access_geo(s, &format!("$gateway_access_{}", r.upstream_name), access, &self.next_step(r), REFUSED_UPSTREAM);
        }
        for (name, socket) in &self.hops {
            let _ = writeln!(s, "    upstream {name}_hop {{\n        server unix:{socket};\n    }}");
        }
    }

    /// One server per hop: the route's connection limits, then its upstream.
    fn render_hops(&self, s: &mut String, site: &SiteView<'_>) {
        if self.hops.is_empty() {
            return;
        }
        s.push_str(HOP_LIMIT_ZONES);
        if site.options.usage_socket.is_some() {
            // A hop's connection refused by its limits ends before the
            // ClientHello is read: the hop's usage line names the route
            // itself (the listener's line of the session is skipped).
            s.push_str("    # Each hop's usage line names its route: its limits act before any SNI is read.\n");
            for r in site.https().filter(|r| self.hops.contains_key(&r.upstream_name)) {
                let _ = writeln!(s, "    log_format {} {HOP_USAGE_FORMAT_HEAD}{} $upstream_addr';", hop_usage_format(r), r.host);
            }
        }
        for r in site.https().filter(|r| self.hops.contains_key(&r.upstream_name)) {
            let Some(access) = &r.access else { continue };
            s.push_str("\n    server {\n");
            if self.listener_pp {
                let _ = writeln!(s, "        listen unix:{} proxy_protocol;", self.hops[&r.upstream_name]);
                s.push_str("        set_real_ip_from unix:;\n");
            } else {
                let _ = writeln!(s, "        listen unix:{};", self.hops[&r.upstream_name]);
            }
            if let Some(n) = access.max_connections {
                let _ = writeln!(s, "        limit_conn gateway_route {n};");
            }
            if let Some(n) = access.max_connections_per_client {
                let _ = writeln!(s, "        limit_conn gateway_route_client {n};");
            }
            let _ = writeln!(s, "        proxy_pass {};", r.upstream_name);
            s.push_str(STREAM_TIMEOUTS);
            stream_access_log(s, site.options, &hop_usage_format(r));
            s.push_str("    }\n");
        }
    }
}

/// The usage format of `r`'s hop.
fn hop_usage_format(r: &Route) -> String {
    format!("{}_usage", r.upstream_name)
}

/// The connection counters of the HTTPS hops: per hop (its socket is its
/// address) and per client address on it.
const HOP_LIMIT_ZONES: &str = concat!(
    "\n    # Connections per HTTPS route with limits (each has its own hop), and per client address on it.\n",
    "    limit_conn_zone $server_addr zone=gateway_route:1m;\n",
    "    limit_conn_zone $binary_remote_addr$server_addr zone=gateway_route_client:16m;\n",
);

/// A `geo` on the client address whose value is `admitted` for a client
/// the route lets in and `refused` for the others. `geo` takes the longest
/// matching prefix, not the first: a denied network gets `refused`, an
/// allowed one inside a denied one is left out (denied wins), and the
/// default is `refused` when there is an allow list.
fn access_geo(s: &mut String, variable: &str, access: &RouteLimits, admitted: &str, refused: &str) {
    let default = if access.allow.is_some() { refused } else { admitted };
    let _ = writeln!(s, "    geo {variable} {{\n        default {default};");
    for c in &access.deny {
        let _ = writeln!(s, "        {c} {refused};");
    }
    let denied = |a: &Cidr| access.deny.iter().any(|d| a.within(d));
    for c in access.allow.iter().flatten().filter(|a| !denied(a)) {
        let _ = writeln!(s, "        {c} {admitted};");
    }
    s.push_str("    }\n");
}

/// A duration as nginx reads it: whole seconds, else milliseconds.
fn nginx_time(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

/// A `map` from the SNI name to an upstream name (or a variable that
/// names one).
fn sni_map<'a, T: std::fmt::Display>(s: &mut String, variable: &str, default: &str, routes: impl Iterator<Item = (&'a Hostname, T)>) {
    let _ = writeln!(s, "    map $ssl_preread_server_name {variable} {{\n        default {default};");
    for (host, upstream) in routes {
        // The leading backslash makes names like `default`, `include` or
        // `hostnames` plain keys instead of map parameters.
        let _ = writeln!(s, "        \\{host} {upstream};");
    }
    s.push_str("    }\n\n");
}

/// What nginx.conf says about its workers' connections; nginx's defaults
/// where it says nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerLimits {
    /// `worker_processes`; None: `auto` (one per CPU).
    pub processes: Option<u64>,
    /// `worker_connections` of each worker (default 512).
    pub connections: u64,
    /// `worker_rlimit_nofile`; None: the limit nginx was started with.
    pub rlimit_nofile: Option<u64>,
}

/// The statements of an nginx config's text, comments skipped (blocks
/// flattened: `events {` and `}` end statements too).
fn statements(conf: &str) -> Vec<String> {
    let text = conf.lines().map(|l| l.split('#').next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    text.split([';', '{', '}']).map(str::to_string).collect()
}

/// Whether an nginx config's own text sets `directive` (its includes are
/// not read).
pub fn config_sets(conf: &str, directive: &str) -> bool {
    statements(conf).iter().any(|s| s.split_whitespace().next() == Some(directive))
}

impl WorkerLimits {
    /// Reads the directives from the main config's text (comments skipped).
    pub fn parse(conf: &str) -> Self {
        let mut limits = WorkerLimits { processes: Some(1), connections: 512, rlimit_nofile: None };
        for statement in statements(conf) {
            let mut words = statement.split_whitespace();
            let (Some(name), Some(value), None) = (words.next(), words.next(), words.next()) else { continue };
            match name {
                "worker_processes" => limits.processes = if value == "auto" { None } else { value.parse().ok().or(limits.processes) },
                "worker_connections" => limits.connections = value.parse().unwrap_or(limits.connections),
                "worker_rlimit_nofile" => limits.rlimit_nofile = value.parse().ok(),
                _ => {}
            }
        }
        limits
    }
}

/// One warning line, with the figures, when the raw ports' sessions (two
/// connections each: the client's and the upstream's) could take every
/// connection nginx's workers have, so a flood within the bounds would
/// still stop the other routes. `cpus` stands for `worker_processes auto`;
/// `open_files` is the open-file limit nginx starts with.
pub fn capacity_warning<'a>(
    raw: impl IntoIterator<Item = &'a RawRoute>,
    limits: &WorkerLimits,
    cpus: u64,
    open_files: u64,
) -> Option<String> {
    let workers = limits.processes.unwrap_or(cpus).max(1);
    let per_worker = limits.connections.min(limits.rlimit_nofile.unwrap_or(open_files));
    let have = workers * per_worker;
    let (ports, need) = raw.into_iter().fold((0, 0u64), |(n, need), r| (n + 1, need + 2 * u64::from(r.limits.per_port)));
    if need < have {
        return None;
    }
    let want = need.div_ceil(workers) + 512;
    Some(format!(
        "nginx has {have} connections ({workers} worker(s) x min(worker_connections {}, open files {})) but the {} raw port(s) may hold {need} (sessions x 2): a flood on them could stop every other route; raise worker_connections to {want} or more, and worker_rlimit_nofile with it, in nginx.conf",
        limits.connections,
        limits.rlimit_nofile.unwrap_or(open_files),
        ports
    ))
}

/// The session counters of the raw ports (see [`SessionLimits`]): per
/// port and transport, and per client address on it; 1 MB holds about
/// 8,000 keys, a key over the limit is refused, not evicted.
const RAW_LIMIT_ZONES: &str = concat!(
    "\n    # Sessions per raw port, and per client address on it (UDP included): one port's flood cannot take every route's connections.\n",
    "    limit_conn_zone $protocol$server_port zone=gateway_raw_port:1m;\n",
    "    limit_conn_zone $binary_remote_addr$protocol$server_port zone=gateway_raw_client:16m;\n",
    "    limit_conn_log_level warn;\n",
);

/// One raw port: its upstream and a server on every raw listen address.
fn raw_server(s: &mut String, options: &NginxOptions, r: &RawRoute) {
    s.push('\n');
    upstream_block(s, "    ", &r.upstream_name, &r.servers);
    s.push_str("    server {\n");
    let addresses: Vec<Listen> = options.raw_listen.iter().map(|ip| Listen::Addr(SocketAddr::new(*ip, r.port))).collect();
    let extra = if r.transport == Transport::Udp { " udp" } else { "" };
    listen_lines(s, "        ", &addresses, extra, true);
    if let Some(access) = r.access.as_ref().filter(|a| a.restricts_clients()) {
        access_rules(s, "        ", access);
    }
    if r.proxy_protocol {
        s.push_str("        proxy_protocol on;\n");
    }
    let _ = writeln!(s, "        proxy_pass {};", r.upstream_name);
    let _ = writeln!(
        s,
        "        limit_conn gateway_raw_port {};\n        limit_conn gateway_raw_client {};",
        r.limits.per_port, r.limits.per_client
    );
    if r.transport == Transport::Tcp {
        s.push_str("        proxy_connect_timeout 10s;\n        # Idle connections (SSH, databases) stay open for an hour.\n        proxy_timeout 1h;\n");
    } else {
        s.push_str("        # A UDP session ends after a minute without datagrams.\n        proxy_timeout 1m;\n");
    }
    stream_access_log(s, options, "gateway_usage");
    s.push_str("    }\n");
}

/// `deny`, then `allow` and `deny all` (nginx takes the first rule that
/// matches: a denied client is refused even when allowed). HTTP answers a
/// refused client 403; a stream connection is closed (UDP: no datagram
/// goes on).
fn access_rules(s: &mut String, indent: &str, access: &RouteLimits) {
    for c in &access.deny {
        let _ = writeln!(s, "{indent}deny {c};");
    }
    if let Some(allow) = &access.allow {
        for c in allow {
            let _ = writeln!(s, "{indent}allow {c};");
        }
        let _ = writeln!(s, "{indent}deny all;");
    }
}

/// Stream sessions (HTTPS by SNI, raw ports) in the gateway's own log:
/// client, port, SNI name, status, bytes each way, seconds, upstream.
const STREAM_LOG_FORMAT: &str = "    log_format gateway_stream '$remote_addr - [$time_local] stream $protocol:$server_port \"$ssl_preread_server_name\" $status $bytes_received $bytes_sent $session_time upstream=$upstream_addr';\n";

/// HTTP requests in the gateway's own log: the `combined` format with the
/// Host, the request time and the upstream.
const HTTP_LOG_FORMAT: &str = "log_format gateway_http '$remote_addr - $remote_user [$time_local] http \"$host\" \"$request\" $status $body_bytes_sent \"$http_referer\" \"$http_user_agent\" $request_time upstream=$upstream_addr';\n";

/// Each stream session to the daemon's usage socket (parsed by
/// `usage::parse_line`): protocol, port, status, bytes from and to the
/// client, SNI name, upstream (last: a list when several were tried). A
/// client an HTTPS route refuses (`allow`, `deny`) is sent to
/// [`REFUSED_UPSTREAM`], which is then its upstream.
const STREAM_USAGE_FORMAT: &str = "    log_format gateway_usage 's $protocol $server_port $status $bytes_received $bytes_sent $ssl_preread_server_name $upstream_addr';\n";

/// The same for an HTTPS route's hop, up to the route's name (written
/// literally: see `SniGates::render_hops`) and the upstream after it; its
/// port is `-` (a unix socket has none).
const HOP_USAGE_FORMAT_HEAD: &str = "'s TCP - $status $bytes_received $bytes_sent ";

/// Each HTTP request to the usage socket: the route's server name, status,
/// bytes of the request and of the answer, upstream (`-`: nginx answered
/// itself, so a 403 or 503 is its refusal, not the node's answer).
const HTTP_USAGE_FORMAT: &str = "log_format gateway_usage 'h $server_name $status $request_length $bytes_sent $upstream_addr';\n";

/// The upstream an HTTPS route sends the clients it refuses to: a server
/// marked down, so nothing is connected; the usage lines name it.
pub const REFUSED_UPSTREAM: &str = "gateway_refused";

/// The syslog tag of the lines on the usage socket (see `usage`).
pub const USAGE_TAG: &str = "gateway_usage";

/// The `access_log` line that sends `format`'s lines to the usage socket.
fn usage_log(s: &mut String, indent: &str, options: &NginxOptions, format: &str) {
    if let Some(socket) = &options.usage_socket {
        let _ = writeln!(s, "{indent}access_log syslog:server=unix:{socket},tag={USAGE_TAG},nohostname {format};");
    }
}

/// A stream server's log, when there is one (stream servers log nothing
/// unless told), and its usage lines in `usage_format`.
fn stream_access_log(s: &mut String, options: &NginxOptions, usage_format: &str) {
    if let Some(path) = &options.access_log {
        let _ = writeln!(s, "        access_log {path} gateway_stream;");
    }
    usage_log(s, "        ", options, usage_format);
}

/// An HTTP server's log: each server says it, so nothing falls through to
/// the `access_log` of nginx.conf's `http {}` (Debian's access.log).
fn http_access_log(s: &mut String, indent: &str, options: &NginxOptions) {
    match &options.access_log {
        Some(path) => {
            let _ = writeln!(s, "{indent}access_log {path} gateway_http;");
        }
        None => {
            let _ = writeln!(s, "{indent}access_log off;");
        }
    }
}

/// The gateway's own server, first on every HTTP listen address: nginx
/// makes the first server of an address its default (unless another one
/// says `default_server`, e.g. Debian's own site: then that one), so a
/// Host no route names, or none at all, never reaches a tenant's node (an
/// ACME HTTP-01 check for another tenant's name included). The connection
/// is closed without an answer (nginx's 444). It carries the listen
/// options, nginx taking them once per address.
fn catch_all(s: &mut String, options: &NginxOptions) {
    s.push_str("\n# Host names no route serves: closed by the gateway, never passed to a tenant.\nserver {\n");
    listen_lines(s, "    ", &options.http_listen, "", true);
    s.push_str("    server_name _;\n");
    http_access_log(s, "    ", options);
    s.push_str("    return 444;\n}\n");
}

/// Requests being handled per HTTP route (its server's name) and per
/// client address on it. nginx counts a connection while a request on it
/// is handled (an idle keep-alive connection does not count).
const HTTP_LIMIT_ZONES: &str = concat!(
    "# Requests being handled per route with limits, and per client address on it.\n",
    "limit_conn_zone $server_name zone=gateway_http_route:1m;\n",
    "limit_conn_zone $binary_remote_addr$server_name zone=gateway_http_client:16m;\n",
);

/// An HTTP route's access rules (403) and limits (503).
fn http_limits(s: &mut String, access: &RouteLimits) {
    access_rules(s, "    ", access);
    if access.limits_connections() {
        s.push_str("    limit_conn_status 503;\n    limit_conn_log_level warn;\n");
    }
    if let Some(n) = access.max_connections {
        let _ = writeln!(s, "    limit_conn gateway_http_route {n};");
    }
    if let Some(n) = access.max_connections_per_client {
        let _ = writeln!(s, "    limit_conn gateway_http_client {n};");
    }
}

/// `server {}` blocks included inside `http {}`: reverse proxy by Host.
pub fn nginx_http(site: &NginxSite) -> String {
    http_of(&site.view())
}

fn http_of(site: &SiteView<'_>) -> String {
    let mut s = String::from(HEADER);
    let options = site.options;
    if site.http.is_empty() {
        return s;
    }
    if options.server_names_hash_bucket_size > 0 {
        let _ = writeln!(s, "server_names_hash_bucket_size {};", options.server_names_hash_bucket_size);
    }
    if options.access_log.is_some() {
        s.push_str(HTTP_LOG_FORMAT);
    }
    if options.usage_socket.is_some() {
        s.push_str(HTTP_USAGE_FORMAT);
    }
    s.push_str("map $http_upgrade $gateway_connection_upgrade {\n    default upgrade;\n    '' close;\n}\n");
    if site.http.iter().any(|p| p.route.access.as_ref().is_some_and(RouteLimits::limits_connections)) {
        s.push_str(HTTP_LIMIT_ZONES);
    }
    catch_all(&mut s, options);
    for p in &site.http {
        match p.text {
            Some(text) => s.push_str(text),
            None => http_server(&mut s, options, p.route),
        }
    }
    s
}

/// One HTTP route: its upstream and its server.
fn http_server(s: &mut String, options: &NginxOptions, r: &Route) {
    s.push('\n');
    upstream_block(s, "", &r.upstream_name, &r.servers);
    s.push_str("server {\n");
    listen_lines(s, "    ", &options.http_listen, "", false);
    let _ = writeln!(s, "    server_name {};", r.host);
    match (&options.access_log, &options.usage_socket) {
        // `access_log off` would also turn the usage lines off.
        (None, Some(_)) => {}
        _ => http_access_log(s, "    ", options),
    }
    usage_log(s, "    ", options, "gateway_usage");
    if let Some(access) = &r.access {
        http_limits(s, access);
    }
    s.push_str("    location / {\n");
    let _ = writeln!(s, "        proxy_pass http://{};", r.upstream_name);
    s.push_str(concat!(
        "        proxy_http_version 1.1;\n",
        "        proxy_set_header Host $host;\n",
        "        proxy_set_header X-Real-IP $remote_addr;\n",
        "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n",
        "        proxy_set_header X-Forwarded-Proto $scheme;\n",
        "        proxy_set_header Upgrade $http_upgrade;\n",
        "        proxy_set_header Connection $gateway_connection_upgrade;\n",
        "        proxy_connect_timeout 10s;\n",
        "        proxy_read_timeout 1h;\n",
        "        proxy_send_timeout 1h;\n",
        "    }\n}\n",
    ));
}
