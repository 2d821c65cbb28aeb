use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};

use crate::layout::Layout;
use crate::spec::{CustomForwarding, Desired};
use crate::types::{Hostname, Scheme, Transport};

/// Where nginx should send one hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub host: Hostname,
    /// A stable nginx upstream name.
    pub upstream_name: String,
    pub servers: Vec<SocketAddrV4>,
    /// HTTPS only: the upstreams get a PROXY protocol header.
    pub proxy_protocol: bool,
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
}

/// nginx's two files as they should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxFiles {
    pub stream: String,
    pub http: String,
}

impl NginxFiles {
    pub fn render(layout: &Layout, desired: &Desired, custom: &[CustomForwarding], options: &NginxOptions) -> Self {
        Self::of(&NginxSite::build(layout, desired, custom, options))
    }

    pub fn of(site: &NginxSite) -> Self {
        NginxFiles { stream: nginx_stream(site), http: nginx_http(site) }
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

impl NginxSite {
    pub fn build(layout: &Layout, desired: &Desired, custom: &[CustomForwarding], options: &NginxOptions) -> Self {
        let mut https = Vec::new();
        let mut http = Vec::new();
        let mut raw = Vec::new();
        for spec in desired.networks.values() {
            let veth_ip = layout.veth_ns_ip(spec.port);
            let to_veth = |ports: &BTreeMap<SocketAddrV4, u16>, servers: &[SocketAddrV4]| -> Vec<SocketAddrV4> {
                servers.iter().filter_map(|u| ports.get(u)).map(|p| SocketAddrV4::new(veth_ip, *p)).collect()
            };
            let tcp_ports = layout.dnat_ports(&spec.upstreams());
            let udp_ports = layout.dnat_ports(&spec.udp_upstreams());
            for (scheme, map, out) in [(Scheme::Https, &spec.https, &mut https), (Scheme::Http, &spec.http, &mut http)] {
                for (i, (host, servers)) in map.iter().enumerate() {
                    let upstream_name = format!("gateway_{}_{}_{i}", scheme.name(), spec.port);
                    let proxy_protocol = scheme == Scheme::Https && spec.proxy_protocol.contains(host);
                    out.push(Route { host: host.clone(), upstream_name, servers: to_veth(&tcp_ports, servers), proxy_protocol });
                }
            }
            for (transport, map, ports) in [(Transport::Tcp, &spec.tcp, &tcp_ports), (Transport::Udp, &spec.udp, &udp_ports)] {
                for (port, r) in map {
                    let upstream_name = format!("gateway_{}_{}_{port}", transport.name(), spec.port);
                    let servers = to_veth(ports, &r.upstreams);
                    let (proxy_protocol, limits) = (r.proxy_protocol, SessionLimits::DEFAULT);
                    raw.push(RawRoute { network: spec.port, transport, port: *port, upstream_name, servers, proxy_protocol, limits });
                }
            }
        }
        for (i, f) in custom.iter().enumerate() {
            let out = if f.url.scheme == Scheme::Https { &mut https } else { &mut http };
            let upstream_name = format!("gateway_{}_custom_{i}", f.url.scheme.name());
            out.push(Route { host: f.url.host.clone(), upstream_name, servers: vec![f.upstream], proxy_protocol: false });
        }
        https.sort_by(|a, b| a.host.cmp(&b.host));
        http.sort_by(|a, b| a.host.cmp(&b.host));
        raw.sort_by_key(|r| (r.transport, r.port));
        NginxSite { options: options.clone(), https, http, raw }
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
    sni_map(&mut s, "$gateway_backend", "gateway_unknown_host", site.https.iter().map(|r| (&r.host, &r.upstream_name)));
    let with_pp = site.https.iter().any(|r| r.proxy_protocol);
    if with_pp {
        s.push_str(
            "    # Routes with PROXY protocol go straight to their upstreams; the others through the SNI hop, which drops the header.\n",
        );
        let direct = site.https.iter().filter(|r| r.proxy_protocol).map(|r| (&r.host, &r.upstream_name));
        sni_map(&mut s, "$gateway_entry", "gateway_sni_hop", direct);
    }
    s.push_str("    # A name nobody serves: the connection is closed.\n");
    s.push_str("    upstream gateway_unknown_host {\n        server 127.0.0.1:9 down;\n    }\n");
    if with_pp {
        let _ = writeln!(s, "    upstream gateway_sni_hop {{\n        server unix:{};\n    }}", site.options.sni_socket);
    }
    for r in &site.https {
        upstream_block(&mut s, "    ", &r.upstream_name, &r.servers);
    }
    s.push_str("\n    server {\n");
    listen_lines(&mut s, "        ", &site.options.https_listen, "", true);
    s.push_str("        ssl_preread on;\n");
    if with_pp {
        s.push_str("        proxy_protocol on;\n        proxy_pass $gateway_entry;\n");
    } else {
        s.push_str("        proxy_pass $gateway_backend;\n");
    }
    s.push_str(STREAM_TIMEOUTS);
    stream_access_log(&mut s, site);
    s.push_str("    }\n");
    if with_pp {
        s.push_str("\n    server {\n");
        let _ = writeln!(s, "        listen unix:{} proxy_protocol;", site.options.sni_socket);
        s.push_str("        ssl_preread on;\n        proxy_pass $gateway_backend;\n");
        s.push_str(STREAM_TIMEOUTS);
        stream_access_log(&mut s, site);
        s.push_str("    }\n");
    }
    if !site.raw.is_empty() {
        s.push_str(RAW_LIMIT_ZONES);
    }
    for r in &site.raw {
        raw_server(&mut s, site, r);
    }
    s.push_str("}\n");
    s
}

/// A duration as nginx reads it: whole seconds, else milliseconds.
fn nginx_time(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

/// A `map` from the SNI name to an upstream name.
fn sni_map<'a>(s: &mut String, variable: &str, default: &str, routes: impl Iterator<Item = (&'a Hostname, &'a String)>) {
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
pub fn capacity_warning(site: &NginxSite, limits: &WorkerLimits, cpus: u64, open_files: u64) -> Option<String> {
    let workers = limits.processes.unwrap_or(cpus).max(1);
    let per_worker = limits.connections.min(limits.rlimit_nofile.unwrap_or(open_files));
    let have = workers * per_worker;
    let need: u64 = site.raw.iter().map(|r| 2 * u64::from(r.limits.per_port)).sum();
    if need < have {
        return None;
    }
    let want = need.div_ceil(workers) + 512;
    Some(format!(
        "nginx has {have} connections ({workers} worker(s) x min(worker_connections {}, open files {})) but the {} raw port(s) may hold {need} (sessions x 2): a flood on them could stop every other route; raise worker_connections to {want} or more, and worker_rlimit_nofile with it, in nginx.conf",
        limits.connections,
        limits.rlimit_nofile.unwrap_or(open_files),
        site.raw.len()
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
fn raw_server(s: &mut String, site: &NginxSite, r: &RawRoute) {
    s.push('\n');
    upstream_block(s, "    ", &r.upstream_name, &r.servers);
    s.push_str("    server {\n");
    let addresses: Vec<Listen> = site.options.raw_listen.iter().map(|ip| Listen::Addr(SocketAddr::new(*ip, r.port))).collect();
    let extra = if r.transport == Transport::Udp { " udp" } else { "" };
    listen_lines(s, "        ", &addresses, extra, true);
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
    stream_access_log(s, site);
    s.push_str("    }\n");
}

/// Stream sessions (HTTPS by SNI, raw ports) in the gateway's own log:
/// client, port, SNI name, status, bytes each way, seconds, upstream.
const STREAM_LOG_FORMAT: &str = "    log_format gateway_stream '$remote_addr - [$time_local] stream $protocol:$server_port \"$ssl_preread_server_name\" $status $bytes_received $bytes_sent $session_time upstream=$upstream_addr';\n";

/// HTTP requests in the gateway's own log: the `combined` format with the
/// Host, the request time and the upstream.
const HTTP_LOG_FORMAT: &str = "log_format gateway_http '$remote_addr - $remote_user [$time_local] http \"$host\" \"$request\" $status $body_bytes_sent \"$http_referer\" \"$http_user_agent\" $request_time upstream=$upstream_addr';\n";

/// A stream server's log, when there is one (stream servers log nothing
/// unless told).
fn stream_access_log(s: &mut String, site: &NginxSite) {
    if let Some(path) = &site.options.access_log {
        let _ = writeln!(s, "        access_log {path} gateway_stream;");
    }
}

/// An HTTP server's log: each server says it, so nothing falls through to
/// the `access_log` of nginx.conf's `http {}` (Debian's access.log).
fn http_access_log(s: &mut String, indent: &str, site: &NginxSite) {
    match &site.options.access_log {
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
fn catch_all(s: &mut String, site: &NginxSite) {
    s.push_str("\n# Host names no route serves: closed by the gateway, never passed to a tenant.\nserver {\n");
    listen_lines(s, "    ", &site.options.http_listen, "", true);
    s.push_str("    server_name _;\n");
    http_access_log(s, "    ", site);
    s.push_str("    return 444;\n}\n");
}

/// `server {}` blocks included inside `http {}`: reverse proxy by Host.
pub fn nginx_http(site: &NginxSite) -> String {
    let mut s = String::from(HEADER);
    if site.http.is_empty() {
        return s;
    }
    if site.options.server_names_hash_bucket_size > 0 {
        let _ = writeln!(s, "server_names_hash_bucket_size {};", site.options.server_names_hash_bucket_size);
    }
    if site.options.access_log.is_some() {
        s.push_str(HTTP_LOG_FORMAT);
    }
    s.push_str("map $http_upgrade $gateway_connection_upgrade {\n    default upgrade;\n    '' close;\n}\n");
    catch_all(&mut s, site);
    for r in &site.http {
        s.push('\n');
        upstream_block(&mut s, "", &r.upstream_name, &r.servers);
        s.push_str("server {\n");
        listen_lines(&mut s, "    ", &site.options.http_listen, "", false);
        let _ = writeln!(s, "    server_name {};", r.host);
        http_access_log(&mut s, "    ", site);
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
    s
}
