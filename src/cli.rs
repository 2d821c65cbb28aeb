//! Command line and environment: every option, checked as it is parsed
//! (`daemon::build` turns them into the running daemon's parts).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Parses `30s`, `5m`, `1h`, `7d` (also `500ms`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("'{s}' is not a duration like 30s, 5m, 1h or 7d"))?;
    let scale = |k: u64| n.checked_mul(k).map(Duration::from_secs).ok_or_else(|| format!("'{s}' is too long"));
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => scale(60)?,
        "h" => scale(3600)?,
        "d" => scale(86400)?,
        _ => return Err(format!("'{s}': unit must be ms, s, m, h or d")),
    };
    if d.is_zero() {
        return Err("duration must be more than zero".into());
    }
    Ok(d)
}

/// A duration as [`parse_duration`], or `0`: off.
pub fn parse_duration_or_off(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" { Ok(Duration::ZERO) } else { parse_duration(s).map_err(|e| format!("{e} (or 0: off)")) }
}

/// What nginx listens on: a comma-separated list of `PORT`, `IPV4:PORT` or `[IPV6]:PORT`.
fn parse_listen(s: &str) -> Result<String, String> {
    crate::render::Listen::parse_list(s).map(|_| s.to_string())
}

fn parse_raw_listen(s: &str) -> Result<String, String> {
    crate::render::parse_addresses(s).map(|_| s.to_string())
}

fn parse_port_range(s: &str) -> Result<crate::types::PortRange, String> {
    s.parse()
}

/// A path nginx reads unquoted: absolute, of plain characters.
fn parse_socket_path(s: &str) -> Result<String, String> {
    let plain = s.starts_with('/') && s.len() <= 100 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b));
    if plain {
        Ok(s.to_string())
    } else {
        Err(format!("'{s}' must be an absolute path of at most 100 characters a-z, A-Z, 0-9, '/', '.', '_', '-'"))
    }
}

/// `--usage-socket`: `auto`, `off` or a socket path.
fn parse_usage_socket(s: &str) -> Result<String, String> {
    if s == "auto" || s == "off" {
        return Ok(s.to_string());
    }
    parse_socket_path(s).map_err(|e| format!("{e}, or `auto` or `off`"))
}

impl Args {
    /// The usage socket's path (None: `off`).
    pub fn usage_socket_path(&self) -> Option<String> {
        match self.usage_socket.as_str() {
            "off" => None,
            "auto" => {
                let dir = std::path::Path::new(&self.nginx_sni_socket).parent().map_or("/run".into(), |d| d.display().to_string());
                Some(format!("{}/gateway-usage.sock", dir.trim_end_matches('/')))
            }
            path => Some(path.to_string()),
        }
    }
}

/// Where the gateway's own nginx servers log: `off`, or an absolute path
/// of plain characters with no `.` or `..` component (nginx's master opens
/// it as root, so it is written into nginx's files only in this form).
fn parse_access_log(s: &str) -> Result<String, String> {
    if s == "off" {
        return Ok(s.to_string());
    }
    let plain = s.starts_with('/')
        && s.len() <= 200
        && !s.ends_with('/')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
        && s.split('/').skip(1).all(|part| !part.is_empty() && part != "." && part != "..");
    if plain {
        Ok(s.to_string())
    } else {
        Err(format!(
            "'{s}' must be `off` or an absolute file path of at most 200 characters a-z, A-Z, 0-9, '/', '.', '_', '-', without empty, '.' or '..' parts"
        ))
    }
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "gateway",
    version,
    about = "Gateway daemon: one WireGuard network namespace per network, HTTPS (by SNI, passed through) and HTTP (by Host) ingress through nginx, per-peer traffic accounting.",
    long_about = None,
    args_override_self = true,
    after_help = "Runs as root on Linux. The orchestrator POSTs the desired state to /api/v1/config.json; the daemon converges the system to it and keeps it there. RUST_LOG sets log filtering (default: info,rocket=error,gateway::api::_=error)."
)]
pub struct Args {
    /// Admin secret that API calls must present (`Token:` header or `Authorization: Bearer`): it may do everything. Without one the API is open and only loopback is allowed.
    #[arg(long, env = "GATEWAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the admin token instead (e.g. a container secret), or several, one per line (rotation): only its owner may read it (mode 0600 or 0400); surrounding whitespace and blank lines are ignored; read again on SIGHUP. Not together with --token; empty means none.
    #[arg(long, env = "GATEWAY_TOKEN_FILE")]
    pub token_file: Option<String>,
    /// Token that may only read: status.json, traffic.json, /metrics, the event stream (never config.json, which holds private keys, and no write). Needs an admin token (--token or --token-file).
    #[arg(long, env = "GATEWAY_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,
    /// File holding read tokens, one per line, as --token-file (owner only, read again on SIGHUP). Not together with --read-token.
    #[arg(long, env = "GATEWAY_READ_TOKEN_FILE")]
    pub read_token_file: Option<String>,
    /// SQLite file (created 0600 if missing) holding the desired state and traffic. Default (or empty, or `:memory:`): in memory, lost on exit.
    #[arg(long, env = "GATEWAY_DATABASE")]
    pub database: Option<String>,
    /// API listen address (also read from ROCKET_ADDRESS).
    #[arg(long, env = "GATEWAY_ADDRESS", default_value = "127.0.0.1")]
    pub address: IpAddr,
    /// API listen port (also read from ROCKET_PORT) [default: 8000].
    #[arg(long, env = "GATEWAY_PORT")]
    pub port: Option<u16>,
    /// Serve the API over TLS with this certificate chain (PEM); with --api-tls-key.
    #[arg(long, env = "GATEWAY_API_TLS_CERT", requires = "api_tls_key")]
    pub api_tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM; only its owner may read it); with --api-tls-cert.
    #[arg(long, env = "GATEWAY_API_TLS_KEY", requires = "api_tls_cert")]
    pub api_tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS; needs --api-tls-cert.
    #[arg(long, env = "GATEWAY_API_CLIENT_CA", requires = "api_tls_cert")]
    pub api_client_ca: Option<PathBuf>,
    /// A connection must complete its TLS handshake and request head within this time, and is closed after this long without a byte either way (never before --apply-wait plus 10 s: a POST waiting for its apply gets its answer). Keep it above 10s for the event stream (its heartbeat).
    #[arg(long, env = "GATEWAY_API_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub api_timeout: Duration,
    /// API connections open at once; one more is closed at once.
    #[arg(long, env = "GATEWAY_API_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub api_max_connections: u32,
    /// Print the OpenAPI 3 spec as JSON and exit.
    #[arg(long)]
    pub openapi: bool,
    /// WireGuard implementation: kernel, userspace (wireguard-go) or auto (kernel if available).
    #[arg(long, env = "GATEWAY_WIREGUARD_BACKEND", default_value = "auto", value_parser = ["auto", "kernel", "userspace"])]
    pub wireguard_backend: String,
    /// File the daemon owns holding nginx's `stream {}` block (HTTPS SNI passthrough).
    #[arg(long, default_value = "/etc/nginx/modules-enabled/gateway.conf")]
    pub nginx_stream_config: PathBuf,
    /// File the daemon owns holding `server {}` blocks for HTTP (included inside `http {}`).
    #[arg(long, default_value = "/etc/nginx/sites-enabled/gateway.conf")]
    pub nginx_http_config: PathBuf,
    /// Main nginx config, used for `nginx -t -c` and `nginx -s reload -c`.
    #[arg(long, default_value = "/etc/nginx/nginx.conf")]
    pub nginx_conf: PathBuf,
    /// nginx's pid file, to tell whether it runs (reload) or not (start).
    #[arg(long, default_value = "/run/nginx.pid")]
    pub nginx_pid: PathBuf,
    /// What the generated HTTPS (stream) server listens on: comma-separated `PORT` (IPv4), `IPV4:PORT` or `[IPV6]:PORT` [default: 443,[::]:443; only 443 on a host without IPv6].
    #[arg(long, value_parser = parse_listen)]
    pub https_listen: Option<String>,
    /// What the generated HTTP servers listen on, as --https-listen [default: 80,[::]:80; only 80 on a host without IPv6].
    #[arg(long, value_parser = parse_listen)]
    pub http_listen: Option<String>,
    /// Addresses the raw `tcp://PORT` and `udp://PORT` entries are opened on, comma-separated [default: 0.0.0.0,::; only 0.0.0.0 on a host without IPv6].
    #[arg(long, value_parser = parse_raw_listen)]
    pub raw_listen: Option<String>,
    /// Unix socket inside nginx through which HTTPS routes without PROXY protocol pass once some route has it (the entry server then sends the header, this hop drops it); each HTTPS route with connection limits has a hop of its own at this path + `.N`. Its directory must be reachable by nginx's workers. Refused at start when the last possible hop (N below --max-networks x --max-routes) would not fit a unix socket path (107 bytes).
    #[arg(long, default_value = "/run/gateway-sni.sock", value_parser = parse_socket_path)]
    pub nginx_sni_socket: String,
    /// Where the gateway's own nginx servers (HTTP by Host, HTTPS by SNI, raw ports) log each request or connection: `off` (none is logged, also not into nginx.conf's own access_log, e.g. Debian's /var/log/nginx/access.log), or an absolute file path (its directory must exist; nginx opens it as root): HTTP requests and stream sessions, one line each, marked `http` or `stream`.
    #[arg(long, default_value = "off", value_parser = parse_access_log)]
    pub nginx_access_log: String,
    /// The unix datagram socket the daemon owns and nginx's workers send one line per connection or request to, for the per-route usage counters (status.json `routes`, `gateway_route_*`): `auto` (`gateway-usage.sock` next to --nginx-sni-socket), `off`, or an absolute path. Made 0600 and owned by nginx.conf's `user` (nobody when it has none).
    #[arg(long, default_value = "auto", value_parser = parse_usage_socket)]
    pub usage_socket: String,
    /// `server_names_hash_bucket_size` written in the HTTP file so long hostnames fit; 0 = leave it to the main nginx config (set it there if your nginx.conf already has one).
    #[arg(long, default_value_t = 512)]
    pub nginx_server_names_hash_bucket_size: u32,
    /// `worker_shutdown_timeout` written in the stream file (included at nginx's main level): after a reload, old workers close what they still hold and end at most this long after it. 0 = not written (leave it to nginx.conf; it is not written either when nginx.conf sets it, since nginx refuses it twice).
    #[arg(long, default_value = "1h", value_parser = parse_duration_or_off)]
    pub nginx_worker_shutdown_timeout: Duration,
    /// Which raw `tcp://PORT` / `udp://PORT` entries a config may open: FIRST-LAST, both included. Ports outside are refused (422), so no tenant takes the host's own services (SSH, DNS, NTP).
    #[arg(long, env = "GATEWAY_RAW_PORT_RANGE", default_value = "1024-65535", value_parser = parse_port_range)]
    pub raw_port_range: crate::types::PortRange,
    /// At most this many networks in the desired state (a config with more is refused, 422); each is a namespace, a WireGuard interface (a wireguard-go process in userspace) and a veth.
    #[arg(long, env = "GATEWAY_MAX_NETWORKS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=65533))]
    pub max_networks: u32,
    /// At most this many peers in one network (422 beyond).
    #[arg(long, env = "GATEWAY_MAX_PEERS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_peers: u32,
    /// At most this many allowed IPs of one peer, and addresses of one network's interface (422 beyond); each allowed IP is a WireGuard entry and may be a route.
    #[arg(long, env = "GATEWAY_MAX_ALLOWED_IPS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_allowed_ips: u32,
    /// At most this many proxy entries (https://, http://, tcp://, udp://) in one network (422 beyond); each is an nginx server or map entry.
    #[arg(long, env = "GATEWAY_MAX_ROUTES", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_routes: u32,
    /// At most this many distinct upstreams in one network, and entries in one upstream list (422 beyond); each takes a DNAT port of the 10,000 after --dnat-port-base (and one more per other route that uses it).
    #[arg(long, env = "GATEWAY_MAX_UPSTREAMS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=crate::model::MAX_UPSTREAMS_CEILING as i64))]
    pub max_upstreams: u32,
    /// Extra static forwardings, e.g. `https://api.example.com=127.0.0.1:8443,http://b.example.com=127.0.0.1:8080`.
    #[arg(long, env = "GATEWAY_CUSTOM_FORWARDING", default_value = "")]
    pub custom_forwarding: String,
    /// Export per-peer metric series (`gateway_peer_*`); turn off on very large hosts (per-network series stay).
    #[arg(long, env = "GATEWAY_METRICS_PER_PEER", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics_per_peer: bool,
    /// Log lines as human-readable text or as JSON objects (one per line, with timestamp, level, message and fields).
    #[arg(long, env = "GATEWAY_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// The address keepalived moves between two gateway hosts holding the same state: this host is active while the address is on one of its interfaces (it serves and talks to the peers) and standby otherwise (everything built, nothing sent to any peer).
    #[arg(long, env = "GATEWAY_HA_ADDRESS", value_parser = crate::ha::parse_address)]
    pub ha_address: Option<std::net::IpAddr>,
    /// How often the drift check and the traffic poll run.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub watchdog: Duration,
    /// How often every upstream of every route is checked (a TCP connect from inside its network's namespace; `udp://` is not checked). 0 = no checks.
    #[arg(long, default_value = "10s", value_parser = parse_duration_or_off)]
    pub health_interval: Duration,
    /// How long traffic samples are kept.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub retention: Duration,
    /// How many of the last events are kept (in the database, and in memory) for clients that resume the event stream with `Last-Event-ID`, also across a restart; a live client further behind is disconnected (it may resume). About 300 bytes each.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub events_kept: u32,
    /// How long POST/PATCH wait for the apply before answering 202 `pending`.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub apply_wait: Duration,
    /// How many networks an apply works on at once (1 = one after the other). Shared steps (bridge, nginx) still run alone, and each network's steps in order.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub apply_concurrency: u16,
    /// On SIGTERM/SIGINT, how long the running pass may take to finish before the daemon exits anyway (exit code 1).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// A peer counts as disconnected (event stream) once its latest handshake is older than this: WireGuard's reject-after time. Hidden: for tests.
    #[arg(long, default_value = "180s", value_parser = parse_duration, hide = true)]
    pub peer_timeout: Duration,
    /// Time limit of every command the daemon runs.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub command_timeout: Duration,
    /// Namespace of network P is PREFIX+P; namespaces with this prefix that are not desired are removed.
    #[arg(long, default_value = "network-")]
    pub namespace_prefix: String,
    /// WireGuard interface of network P is PREFIX+P.
    #[arg(long, default_value = "wg")]
    pub interface_prefix: String,
    /// Root-namespace end of network P's veth is PREFIX+P.
    #[arg(long, default_value = "gwv")]
    pub veth_prefix: String,
    /// Bridge joining the networks' veths in the root namespace.
    #[arg(long, default_value = "gwbr0")]
    pub bridge: String,
    /// Bridge subnet (/16 or larger): the bridge takes .0.1, network P takes base+P.
    #[arg(long, default_value = "10.199.0.0/16")]
    pub bridge_subnet: String,
    /// First of the 10,000 TCP ports on a network's veth address that DNAT to its upstreams.
    #[arg(long, default_value_t = 20000)]
    pub dnat_port_base: u16,
    /// The `ip` program.
    #[arg(long, default_value = "ip", help_heading = "Tool paths")]
    pub ip_bin: String,
    /// The `wg` program.
    #[arg(long, default_value = "wg", help_heading = "Tool paths")]
    pub wg_bin: String,
    /// The `wireguard-go` program.
    #[arg(long, default_value = "wireguard-go", help_heading = "Tool paths")]
    pub wireguard_go_bin: String,
    /// The `iptables-save` program.
    #[arg(long, default_value = "iptables-save", help_heading = "Tool paths")]
    pub iptables_save_bin: String,
    /// The `iptables-restore` program.
    #[arg(long, default_value = "iptables-restore", help_heading = "Tool paths")]
    pub iptables_restore_bin: String,
    /// The `ip6tables-save` program (not used on a kernel without IPv6).
    #[arg(long, env = "GATEWAY_IP6TABLES_SAVE_BIN", default_value = "ip6tables-save", help_heading = "Tool paths")]
    pub ip6tables_save_bin: String,
    /// The `ip6tables-restore` program (not used on a kernel without IPv6).
    #[arg(long, env = "GATEWAY_IP6TABLES_RESTORE_BIN", default_value = "ip6tables-restore", help_heading = "Tool paths")]
    pub ip6tables_restore_bin: String,
    /// The `sysctl` program: no longer run (a namespace's sysctls are written from a thread that enters it, without a process); still accepted, so that existing command lines and units keep working.
    #[arg(long, default_value = "sysctl", help_heading = "Tool paths")]
    pub sysctl_bin: String,
    /// The `tc` program (iproute2; run only for networks with a `bandwidth` field).
    #[arg(long, default_value = "tc", help_heading = "Tool paths")]
    pub tc_bin: String,
    /// The `nginx` program.
    #[arg(long, default_value = "nginx", help_heading = "Tool paths")]
    pub nginx_bin: String,
    /// Where network namespaces are mounted.
    #[arg(long, default_value = "/run/netns", help_heading = "Tool paths")]
    pub netns_dir: PathBuf,
    /// Where wireguard-go puts its control sockets.
    #[arg(long, default_value = "/var/run/wireguard", help_heading = "Tool paths")]
    pub wireguard_sock_dir: PathBuf,
}

/// Options that are actions, not settings: no variable stands for them.
const ACTIONS: [&str; 3] = ["help", "version", "openapi"];

/// Variables the daemon reads besides its options' (a test hook).
const OTHER_VARIABLES: [&str; 1] = ["GATEWAY_FAULT"];

/// The variable of option `--some-name`: `GATEWAY_SOME_NAME`.
fn variable_of(id: &str) -> String {
    format!("GATEWAY_{}", id.to_ascii_uppercase().replace('-', "_"))
}

impl crate::daemon::ConfigSource for Args {
    /// What the daemon is built from: every option typed (the listen lists
    /// parsed here, once); the daemon never sees the command line.
    fn config(&self) -> Result<crate::daemon::Config, String> {
        let listens = |l: &Option<String>| l.as_deref().map(crate::render::Listen::parse_list).transpose();
        Ok(crate::daemon::Config {
            token: self.token.clone(),
            token_file: self.token_file.clone(),
            read_token: self.read_token.clone(),
            read_token_file: self.read_token_file.clone(),
            database: self.database().map(String::from),
            address: self.address,
            port: self.api_port()?,
            wireguard_backend: self.wireguard_backend.clone(),
            nginx_stream_config: self.nginx_stream_config.clone(),
            nginx_http_config: self.nginx_http_config.clone(),
            nginx_conf: self.nginx_conf.clone(),
            nginx_pid: self.nginx_pid.clone(),
            https_listen: listens(&self.https_listen)?,
            http_listen: listens(&self.http_listen)?,
            raw_listen: self.raw_listen.as_deref().map(crate::render::parse_addresses).transpose()?,
            nginx_sni_socket: self.nginx_sni_socket.clone(),
            nginx_access_log: self.nginx_access_log.clone(),
            usage_socket: self.checked_usage_socket()?,
            nginx_server_names_hash_bucket_size: self.nginx_server_names_hash_bucket_size,
            nginx_worker_shutdown_timeout: self.nginx_worker_shutdown_timeout,
            raw_port_range: self.raw_port_range,
            limits: self.limits(),
            custom_forwarding: self.custom_forwarding.clone(),
            metrics_per_peer: self.metrics_per_peer,
            ha_address: self.ha_address,
            watchdog: self.watchdog,
            health_interval: self.health_interval,
            retention: self.retention,
            events_kept: self.events_kept,
            apply_wait: self.apply_wait,
            apply_concurrency: self.apply_concurrency,
            shutdown_timeout: self.shutdown_timeout,
            peer_timeout: self.peer_timeout,
            namespace_prefix: self.namespace_prefix.clone(),
            interface_prefix: self.interface_prefix.clone(),
            veth_prefix: self.veth_prefix.clone(),
            bridge: self.bridge.clone(),
            bridge_subnet: self.bridge_subnet.clone(),
            dnat_port_base: self.dnat_port_base,
            tc_bin: self.tc_bin.clone(),
            ip_bin: self.ip_bin.clone(),
            wg_bin: self.wg_bin.clone(),
            wireguard_go_bin: self.wireguard_go_bin.clone(),
            iptables_save_bin: self.iptables_save_bin.clone(),
            iptables_restore_bin: self.iptables_restore_bin.clone(),
            ip6tables_save_bin: self.ip6tables_save_bin.clone(),
            ip6tables_restore_bin: self.ip6tables_restore_bin.clone(),
            nginx_bin: self.nginx_bin.clone(),
            netns_dir: self.netns_dir.clone(),
            wireguard_sock_dir: self.wireguard_sock_dir.clone(),
        })
    }
}

/// The longest path a unix socket can have: `sun_path` holds 108 bytes,
/// the terminating NUL included. nginx refuses a longer one in its config
/// check, and the daemon could not bind it.
pub const SOCKET_PATH_MAX: usize = 107;

impl Args {
    /// The usage socket's path (None: `off`), once every unix socket path
    /// is known to fit [`SOCKET_PATH_MAX`]: `--nginx-sni-socket` with the
    /// suffix of its last possible HTTPS hop (`PATH.N`, one hop per HTTPS
    /// route with connection limits: N below --max-networks x
    /// --max-routes), and the usage socket (`auto` puts it next to the SNI
    /// socket, so a deep directory can make it too long). Checked at
    /// start, each error naming the option to change, rather than failing
    /// in nginx's config check at the first route with limits.
    fn checked_usage_socket(&self) -> Result<Option<String>, String> {
        let last_hop = u64::from(self.max_networks) * u64::from(self.max_routes) - 1;
        let hop = format!("{}.{last_hop}", self.nginx_sni_socket);
        if hop.len() > SOCKET_PATH_MAX {
            return Err(format!(
                "--nginx-sni-socket '{}' is too long: the HTTPS routes with connection limits each get a hop socket PATH.N, up to '{hop}' ({} bytes) with --max-networks {} and --max-routes {}, and a unix socket's path has at most {SOCKET_PATH_MAX} bytes; give a path of at most {} characters",
                self.nginx_sni_socket,
                hop.len(),
                self.max_networks,
                self.max_routes,
                SOCKET_PATH_MAX - (hop.len() - self.nginx_sni_socket.len())
            ));
        }
        let usage = self.usage_socket_path();
        if let Some(path) = usage.as_ref().filter(|p| p.len() > SOCKET_PATH_MAX) {
            return Err(format!(
                "--usage-socket {}: '{path}' is {} bytes, and a unix socket's path has at most {SOCKET_PATH_MAX}; give --usage-socket a shorter absolute path (or off)",
                self.usage_socket,
                path.len()
            ));
        }
        Ok(usage)
    }

    /// The caps on what one config may ask for.
    pub fn limits(&self) -> crate::validate::Limits {
        let n = |v: u32| v as usize;
        crate::validate::Limits {
            networks: n(self.max_networks),
            peers: n(self.max_peers),
            allowed_ips: n(self.max_allowed_ips),
            routes: n(self.max_routes),
            upstreams: n(self.max_upstreams),
        }
    }

    /// The command line with a `GATEWAY_*` variable for every option that
    /// does not name its own, so no setting is reachable only by argument
    /// (`--help` lists each).
    pub fn command_with_env() -> clap::Command {
        use clap::CommandFactory;
        Args::command().mut_args(|a| {
            if a.get_env().is_some() || ACTIONS.contains(&a.get_id().as_str()) {
                return a;
            }
            // clap keeps `&'static str`; the few names are made once per process.
            let name: &'static str = Box::leak(variable_of(a.get_id().as_str()).into_boxed_str());
            a.env(name)
        })
    }

    /// Parses the command line and the environment as `main` does: every
    /// option's `GATEWAY_*` variable, and `ROCKET_ADDRESS` when neither
    /// `--address` nor `GATEWAY_ADDRESS` is given. Exits on an error.
    pub fn parse_with_env() -> Args {
        use clap::FromArgMatches;
        let mut command = Args::command_with_env();
        let matches = command.get_matches_mut();
        let mut args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        if matches.value_source("address") == Some(clap::parser::ValueSource::DefaultValue) {
            if let Ok(given) = std::env::var("ROCKET_ADDRESS") {
                args.address = given.parse().unwrap_or_else(|_| {
                    let message = format!("ROCKET_ADDRESS '{given}' is not an IP address (prefer --address or GATEWAY_ADDRESS)");
                    command.error(clap::error::ErrorKind::ValueValidation, message).exit()
                });
            }
        }
        args
    }

    /// The `GATEWAY_*` variables of `vars` that no option reads (a typo, or
    /// a setting of another version): worth one warning at start.
    pub fn unknown_variables(vars: impl IntoIterator<Item = String>) -> Vec<String> {
        let command = Args::command_with_env();
        let known: Vec<String> = command.get_arguments().filter_map(|a| a.get_env()).map(|e| e.to_string_lossy().into_owned()).collect();
        let mut unknown: Vec<String> = vars
            .into_iter()
            .filter(|v| v.starts_with("GATEWAY_") && !known.contains(v) && !OTHER_VARIABLES.contains(&v.as_str()))
            .collect();
        unknown.sort();
        unknown
    }

    /// Parses `argv` alone: no option is taken from the environment. For
    /// tests (and tools) that must not inherit a live gateway's
    /// `GATEWAY_TOKEN` or `GATEWAY_DATABASE` from the caller's shell.
    pub fn try_parse_args_only<I, T>(argv: I) -> Result<Args, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let command = Args::command().mut_args(|a| a.env(None::<&'static str>));
        Args::from_arg_matches(&command.try_get_matches_from(argv)?)
    }

    pub fn api_port(&self) -> Result<u16, String> {
        match self.port {
            Some(p) => Ok(p),
            None => match std::env::var("ROCKET_PORT") {
                Ok(p) => p.parse().map_err(|_| format!("ROCKET_PORT '{p}' is not a port")),
                Err(_) => Ok(8000),
            },
        }
    }

    /// The database file; empty (e.g. `--database ""`) means in memory.
    pub fn database(&self) -> Option<&str> {
        self.database.as_deref().filter(|d| !d.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every unix socket path must fit `sun_path`: the SNI socket with its
    /// last possible hop's suffix, the usage socket (`auto`: next to it).
    #[test]
    fn socket_paths_too_long_are_refused_at_start_naming_the_option() {
        use crate::daemon::ConfigSource;
        let with = |extra: &[&str]| {
            let mut argv = vec!["gateway", "--port=8000"];
            argv.extend(extra);
            Args::try_parse_args_only(argv).expect("each path alone passes the parser").config().map(|c| c.usage_socket)
        };
        // Default caps: up to 4096 x 1024 HTTPS routes, so hops up to `.4194303`.
        let sni99 = format!("/{}", "s".repeat(98));
        assert!(with(&[&format!("--nginx-sni-socket={sni99}"), "--usage-socket=off"]).is_ok(), "99 + '.4194303': 107 bytes");
        let e = with(&[&format!("--nginx-sni-socket={sni99}s"), "--usage-socket=off"]).unwrap_err();
        assert!(
            e.starts_with("--nginx-sni-socket '/") && e.contains(".4194303' (108 bytes)") && e.contains("at most 99 characters"),
            "{e}"
        );
        // Fewer routes allowed, shorter suffixes: the same path fits.
        assert!(with(&[&format!("--nginx-sni-socket={sni99}s"), "--usage-socket=off", "--max-networks=100", "--max-routes=10"]).is_ok());
        // `auto` puts the usage socket next to the SNI socket.
        let dir = format!("/{}", "d".repeat(80));
        assert_eq!(with(&[&format!("--nginx-sni-socket={dir}/sni.sock")]), Ok(Some(format!("{dir}/gateway-usage.sock"))));
        let deep = format!("--nginx-sni-socket=/{}/s", "d".repeat(89));
        let e = with(&[&deep]).unwrap_err();
        assert!(e.starts_with("--usage-socket auto: '/") && e.contains("gateway-usage.sock' is 109 bytes"), "{e}");
        assert_eq!(with(&[&deep, "--usage-socket=/run/u.sock"]), Ok(Some("/run/u.sock".to_string())));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "s", "10", "10x", "-1s", "0s", "1.5h", "18446744073709551615d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration_or_off("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration_or_off("10s"), Ok(Duration::from_secs(10)));
        for bad in ["", "00", "0s", "-0", "x"] {
            assert!(parse_duration_or_off(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listens() {
        for ok in ["443", "0.0.0.0:443", "[::]:443", "127.0.0.1:18443", "443,[::]:443", "10.0.0.1:443,[2001:db8::1]:443"] {
            assert!(parse_listen(ok).is_ok(), "{ok}");
        }
        for bad in ["0", "443;", "host:443", "1.2.3.4", "443 ssl", "", "443,", "443,443", "0443", "+443", " 443", "[::0]:443", "[::]:0"] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
        assert_eq!(crate::render::parse_addresses("0.0.0.0,::"), Ok(vec![IpAddr::from([0, 0, 0, 0]), IpAddr::from([0u16; 8])]));
        for bad in ["", "0.0.0.0,", "::,::", "[::]", "010.0.0.1", "0.0.0.0:1", "::0"] {
            assert!(crate::render::parse_addresses(bad).is_err(), "{bad}");
        }
        assert!(parse_socket_path("/run/gateway-sni.sock").is_ok());
        for ok in ["off", "/var/log/nginx/gateway-access.log", "/l", "/var/log/a_b-c.1"] {
            assert_eq!(parse_access_log(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in [
            "",
            "on",
            "OFF",
            "access.log",
            "/var/log/",
            "/var/log/../../etc/passwd",
            "/var/./log",
            "//log",
            "/var//log",
            "/var/log/a b",
            "/var/log/a;b",
            "/var/log/$host",
            "/var/log/{a}",
            "/var/log/a\"b",
            "syslog:server=1.2.3.4",
            "/var/log/a\nerror_log /x",
            &format!("/{}", "a".repeat(200)),
        ] {
            assert!(parse_access_log(bad).is_err(), "{bad:?}");
        }
        for bad in ["run/x.sock", "/run/x y.sock", "/run/x;.sock", "/run/{x}.sock", ""] {
            assert!(parse_socket_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn help_and_defaults() {
        use clap::CommandFactory;
        Args::command().debug_assert();
        let a = Args::try_parse_args_only(["gateway"]).unwrap();
        assert_eq!(a.watchdog, Duration::from_secs(60));
        assert_eq!(a.retention, Duration::from_secs(86400));
        assert_eq!((a.health_interval, a.nginx_worker_shutdown_timeout), (Duration::from_secs(10), Duration::from_secs(3600)));
        assert_eq!(a.https_listen, None, "both families unless given");
        assert_eq!((a.token, a.database, a.port), (None, None, None), "nothing from the caller's environment");
        assert!(Args::try_parse_args_only(["gateway", "--wireguard-backend", "magic"]).is_err());
    }

    #[test]
    fn every_option_has_its_variable_and_unknown_ones_are_found() {
        Args::command_with_env().debug_assert();
        for a in Args::command_with_env().get_arguments() {
            let id = a.get_id().as_str();
            let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
            if ACTIONS.contains(&id) {
                assert_eq!(env, None, "--{id} is an action");
            } else {
                assert_eq!(env, Some(variable_of(id)), "--{id}");
            }
        }
        assert_eq!(variable_of("nginx_pid"), "GATEWAY_NGINX_PID");
        let vars = [
            "GATEWAY_RETENTION",
            "GATEWAY_RETENTON",
            "GATEWAY_TOKEN",
            "GATEWAY_FAULT",
            "HOME",
            "GATEWAY_ADDRESS",
            "ROCKET_PORT",
            "GATEWAY_",
        ];
        assert_eq!(Args::unknown_variables(vars.map(String::from)), ["GATEWAY_", "GATEWAY_RETENTON"]);
    }
}
