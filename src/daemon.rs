//! The running daemon's wiring: the state the API and the reconciler share,
//! built from the options, refusing bad values before anything is touched.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::{Mutex, Notify, watch};

use crate::cli::Args;
use crate::layout::Layout;
use crate::metrics::Metrics;
use crate::model::StoreFailure;
use crate::model::events::StoreErrorEvent;
use crate::observed::ObservedNetwork;
use crate::render::{Listen, NginxFiles, NginxOptions, parse_addresses};
use crate::spec::{CustomForwarding, Desired, parse_custom_forwardings};
use crate::store::{ApplyRecord, Store, StoreError};
use crate::system::{Backend, Runner, System, SystemPaths, Tools};
use crate::traffic::Accounting;
use crate::types::Cidr;
use crate::validate::Context;

mod dry_run;
mod tokens;

pub use dry_run::{DryRunError, DryRunRequest, DryRuns};
pub use tokens::{ApiToken, Scope, TokenSet, TokenSources};

use crate::events::{Events, PeerWatch};

/// Settings that do not change while the daemon runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub nginx: NginxOptions,
    pub custom: Vec<CustomForwarding>,
    /// Subnets no request may use (the bridge subnet).
    pub reserved: Vec<Cidr>,
    /// Host ports the gateway uses itself (see `validate::Context::ports`).
    pub ports: Vec<(u16, String)>,
    /// Which raw ports a config may open.
    pub raw_ports: crate::types::PortRange,
    /// How much one config may ask for.
    pub limits: crate::validate::Limits,
    pub watchdog: Duration,
    /// Where the API's tokens come from (read again on SIGHUP); none: the
    /// API is open (the daemon then listens on loopback only).
    pub tokens: TokenSources,
    /// The address the API listens on: without a token, a request's Host
    /// must name it or loopback (DNS rebinding).
    pub api_address: IpAddr,
    /// How long POST/PATCH wait for the reconciler before answering `pending`.
    pub apply_wait: Duration,
    /// Networks worked on at once by a pass.
    pub apply_concurrency: usize,
    /// How long a stop waits for the running pass.
    pub shutdown_timeout: Duration,
    /// A peer whose latest handshake is older is disconnected (events).
    pub peer_timeout: Duration,
    /// How often upstreams are checked (zero: never).
    pub health_interval: Duration,
    /// `--ha-address`: the address whose presence makes this host active.
    pub ha_address: Option<IpAddr>,
}

impl Settings {
    pub fn validation(&self) -> Context<'_> {
        Context {
            custom: &self.custom,
            reserved: &self.reserved,
            ports: &self.ports,
            raw_ports: self.raw_ports,
            previous: None,
            limits: self.limits,
        }
    }
}

/// What was last seen of one network: status.json answers from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenNetwork {
    /// Unix seconds of the look.
    pub observed_at: i64,
    /// `None`: its namespace was not there.
    pub network: Option<ObservedNetwork>,
}

/// The last look at every network, kept up to date by the reconciler's
/// passes and by status.json's own processless re-reads (at most one at a
/// time, and not more often than [`Seen::due`] says).
#[derive(Default)]
pub struct Seen {
    pub networks: std::sync::RwLock<BTreeMap<u16, SeenNetwork>>,
    /// A re-read is running; its end is announced on `refreshed`.
    pub refreshing: std::sync::atomic::AtomicBool,
    pub refreshed: tokio::sync::Notify,
    /// When the last re-read ended, and how long it took.
    pub last: std::sync::Mutex<Option<(std::time::Instant, Duration)>>,
}

impl Seen {
    /// Counters older than this are re-read for a status request.
    pub const FRESH: Duration = Duration::from_secs(1);

    /// Whether a re-read is due: the last one is older than [`Self::FRESH`],
    /// or than five times its own duration (re-reads never take more than a
    /// fifth of the reader's time, however many networks there are).
    pub fn due(&self) -> bool {
        match *self.last.lock().unwrap_or_else(|e| e.into_inner()) {
            None => true,
            Some((at, took)) => at.elapsed() > Self::FRESH.max(took * 5),
        }
    }

    /// Records what a look saw (the newer look wins per network).
    pub fn update(&self, seen: impl IntoIterator<Item = (u16, SeenNetwork)>) {
        let mut networks = self.networks.write().unwrap_or_else(|e| e.into_inner());
        for (port, s) in seen {
            if networks.get(&port).is_none_or(|before| before.observed_at <= s.observed_at) {
                networks.insert(port, s);
            }
        }
    }

    /// Forgets networks that are neither desired nor present.
    pub fn retain(&self, keep: impl Fn(u16) -> bool) {
        self.networks.write().unwrap_or_else(|e| e.into_inner()).retain(|p, _| keep(*p));
    }
}

/// Where the daemon is in its life: a stop lets the running pass finish
/// (`Stopping`, writes refused) before anything ends (`Stopped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Running,
    /// A stop was asked: the API takes no writes, the reconciler ends after
    /// the pass it is running.
    Stopping,
    /// The reconciler has ended: nothing more will be applied.
    Stopped,
}

/// State shared by the API and the reconciler.
pub struct Shared {
    pub store: Store,
    pub system: System,
    pub settings: Settings,
    /// Wakes the reconciler for an apply; permits coalesce.
    pub wake: Notify,
    /// The outcome of the latest finished pass.
    pub finished: watch::Sender<Option<ApplyRecord>>,
    /// Serializes POST/PATCH so each builds on the previous generation.
    pub write_lock: Mutex<()>,
    pub metrics: Arc<Metrics>,
    pub accounting: Accounting,
    /// The last look at each network.
    pub seen: Seen,
    pub lifecycle: watch::Sender<Lifecycle>,
    /// Dry runs waiting for the reconciler.
    pub dry_runs: DryRuns,
    /// The desired state last accepted or loaded, already validated, with
    /// its generation: passes use it instead of parsing and validating the
    /// stored JSON again (about 100 ms at 1,000 networks).
    accepted: std::sync::Mutex<Option<(i64, Arc<Desired>)>>,
    /// The event stream's events.
    pub events: Events,
    /// Which peers are connected, from every look at the networks.
    pub peers: PeerWatch,
    /// The API tokens in force (replaced whole on SIGHUP).
    tokens: std::sync::RwLock<Arc<TokenSet>>,
    /// Each peer's last endpoint.
    pub endpoints: crate::endpoints::EndpointMemory,
    /// Writes to the database failing now, by operation.
    store_failures: std::sync::Mutex<BTreeMap<&'static str, StoreFailure>>,
    /// What the health checks found of every route's upstreams.
    pub health: crate::health::Health,
    /// With `--ha-address`: this host's role, as the address watcher sees it.
    pub role: Option<watch::Receiver<crate::ha::Role>>,
    /// The digest of the desired state, with its generation (see `ha::config_digest`).
    digest: std::sync::Mutex<Option<(i64, String)>>,
}

impl Shared {
    /// `last`: the last recorded pass, so waiters see it; `retention`: how
    /// long traffic samples are kept.
    pub fn new(
        store: Store,
        system: System,
        settings: Settings,
        metrics: Arc<Metrics>,
        last: Option<ApplyRecord>,
        retention: Duration,
    ) -> Self {
        let settings_peer_timeout = settings.peer_timeout;
        let health_interval = settings.health_interval;
        Shared {
            store,
            system,
            settings,
            wake: Notify::new(),
            finished: watch::channel(last).0,
            write_lock: Mutex::new(()),
            metrics,
            accounting: Accounting::new(retention),
            seen: Seen::default(),
            lifecycle: watch::channel(Lifecycle::Running).0,
            dry_runs: DryRuns::default(),
            accepted: std::sync::Mutex::new(None),
            events: Events::new(crate::events::BACKLOG, first_event_id()),
            peers: PeerWatch::new(settings_peer_timeout),
            endpoints: Default::default(),
            store_failures: std::sync::Mutex::default(),
            tokens: Default::default(),
            health: crate::health::Health::new(health_interval, Arc::new(crate::system::probe::KernelProbe::default())),
            role: None,
            digest: std::sync::Mutex::default(),
        }
    }

    /// This host's role now (always active without `--ha-address`).
    pub fn role(&self) -> crate::ha::Role {
        self.role.as_ref().map_or(crate::ha::Role::Active, |r| *r.borrow())
    }

    /// The digest of the desired state of `generation` (computed once per generation).
    pub fn config_digest(&self, generation: i64, desired: &Desired) -> String {
        let mut kept = self.digest.lock().unwrap_or_else(|e| e.into_inner());
        match &*kept {
            Some((g, d)) if *g == generation => d.clone(),
            _ => {
                let d = crate::ha::config_digest(desired);
                *kept = Some((generation, d.clone()));
                d
            }
        }
    }

    /// The API tokens in force.
    pub fn tokens(&self) -> Arc<TokenSet> {
        self.tokens.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_tokens(&self, tokens: TokenSet) {
        *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tokens);
    }

    /// SIGHUP: reads the token files again. A file that cannot be used
    /// (gone, open to others, empty) keeps the tokens in force: a reload
    /// never opens the API nor locks everyone out.
    pub fn reload_tokens(&self) {
        match self.settings.tokens.load() {
            Ok(tokens) => {
                let (admin, read) = tokens.counts();
                self.set_tokens(tokens);
                tracing::info!(admin, read, "API tokens read again");
            }
            Err(e) => tracing::error!(error = %format!("{e:#}"), "API tokens not read again; the previous ones stay in force"),
        }
    }

    /// Records how a write to the database went. A failure is logged,
    /// counted (`gateway_store_errors_total`), published (`store_error`) and
    /// shown in status.json until the same operation next succeeds.
    pub fn store_outcome<T>(&self, operation: &'static str, result: &Result<T, StoreError>) {
        let mut failures = self.store_failures.lock().unwrap_or_else(|e| e.into_inner());
        let Err(e) = result else {
            if failures.remove(operation).is_some() {
                tracing::info!(operation, "the database takes writes again");
            }
            return;
        };
        let (message, disk_full) = (e.to_string(), e.disk_full());
        tracing::error!(operation, error = %message, disk_full, "a write to the database failed");
        self.metrics.store_failed(operation);
        let before = failures.get(operation).map(|f| f.since);
        failures
            .insert(operation, StoreFailure { message: message.clone(), disk_full, since: before.unwrap_or_else(crate::clock::now_unix) });
        drop(failures);
        // The events' own writes retry by themselves: one event when they
        // start failing, not one per retry (each would be another to write).
        if operation != "events" || before.is_none() {
            self.events.publish("store_error", &StoreErrorEvent { operation: operation.into(), message, disk_full });
        }
    }

    /// The writes to the database failing now, by operation.
    pub fn store_failures(&self) -> BTreeMap<String, StoreFailure> {
        let failures = self.store_failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.iter().map(|(op, f)| (op.to_string(), f.clone())).collect()
    }

    /// Keeps the validated form of generation `generation`.
    pub fn remember_accepted(&self, generation: i64, desired: Arc<Desired>) {
        let mut accepted = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
        if accepted.as_ref().is_none_or(|(g, _)| *g <= generation) {
            *accepted = Some((generation, desired));
        }
    }

    /// The validated desired state of `generation`, if it is the one kept.
    pub fn accepted(&self, generation: i64) -> Option<Arc<Desired>> {
        let accepted = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
        accepted.as_ref().filter(|(g, _)| *g == generation).map(|(_, d)| d.clone())
    }

    /// Records a look at networks for status.json, and tells the event
    /// stream which peers connected or disconnected since the last one.
    pub fn record_seen(&self, seen: Vec<(u16, SeenNetwork)>) {
        for (port, s) in &seen {
            self.endpoints.observe(*port, s.network.as_ref());
            for (connected, event) in self.peers.observe(*port, s.observed_at, s.network.as_ref()) {
                self.events.publish(if connected { "peer_connected" } else { "peer_disconnected" }, &event);
            }
        }
        self.seen.update(seen);
    }

    /// The host ports of `ports` another program holds, each a problem at
    /// its path (nginx, or WireGuard, could not open it): raw ports on the
    /// raw listen addresses, WireGuard ports on every address.
    pub fn ports_held_by_others(&self, ports: &[crate::validate::HostPort]) -> Vec<crate::model::ErrorDetail> {
        let all = [IpAddr::from(Ipv4Addr::UNSPECIFIED), IpAddr::from(Ipv6Addr::UNSPECIFIED)];
        let wireguard_ips = if crate::system::host_has_ipv6() { &all[..] } else { &all[..1] };
        let mut problems = Vec::new();
        for p in ports {
            let ips = if p.wireguard { wireguard_ips } else { &self.settings.nginx.raw_listen[..] };
            let Some(holder) = self.system.port_held_by_another(p.transport, ips, p.port) else { continue };
            let (what, opener) =
                if p.wireguard { ("UDP port", "the network's WireGuard interface") } else { (p.transport.label(), "nginx") };
            let message = format!("{what} {} is in use by {holder}: {opener} could not open it; choose another port or free it", p.port);
            problems.push(crate::model::ErrorDetail::new(p.path.clone(), message));
        }
        problems
    }

    /// nginx's files for a desired state.
    pub fn nginx_files(&self, desired: &Desired) -> NginxFiles {
        NginxFiles::render(&self.system.layout, desired, &self.settings.custom, &self.settings.nginx)
    }
}

/// The lowest event id of this run: the start time in microseconds (see
/// `Events::resume`).
fn first_event_id() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(1)
}

/// Everything started from the options.
pub struct Daemon {
    pub shared: Arc<Shared>,
    /// Rocket's configuration (address, port, quiet logs).
    pub figment: rocket::figment::Figment,
}

fn system_from(args: &Args, runner: Runner, layout: Layout, backend: Backend, store: &Store) -> System {
    let tools = Tools {
        ip: args.ip_bin.clone(),
        wg: args.wg_bin.clone(),
        wireguard_go: args.wireguard_go_bin.clone(),
        iptables_save: args.iptables_save_bin.clone(),
        iptables_restore: args.iptables_restore_bin.clone(),
        ip6tables_save: args.ip6tables_save_bin.clone(),
        ip6tables_restore: args.ip6tables_restore_bin.clone(),
        sysctl: args.sysctl_bin.clone(),
        nginx: args.nginx_bin.clone(),
    };
    let paths = SystemPaths {
        netns_dir: args.netns_dir.clone(),
        sys_class_net: "/sys/class/net".into(),
        wireguard_sock_dir: args.wireguard_sock_dir.clone(),
        nginx_stream: args.nginx_stream_config.clone(),
        nginx_http: args.nginx_http_config.clone(),
        nginx_conf: args.nginx_conf.clone(),
        nginx_pid: args.nginx_pid.clone(),
        nginx_sni_socket: args.nginx_sni_socket.clone().into(),
        inotify_max_user_instances: "/proc/sys/fs/inotify/max_user_instances".into(),
    };
    let tools = tools.resolved(&std::env::var("PATH").unwrap_or_default());
    let reader = Arc::new(crate::system::nsread::KernelReader);
    System {
        runner,
        layout,
        tools,
        paths,
        backend,
        reader,
        journal: Arc::new(store.clone()),
        ports: Arc::new(crate::system::ports::KernelPorts),
        ipv6: crate::system::kernel_has_ipv6(),
    }
}

/// The nginx settings from the options: listeners default to both address
/// families, or IPv4 alone on a host without IPv6 (nginx could not bind `[::]`).
fn nginx_options(args: &Args, ipv6: bool) -> Result<NginxOptions, String> {
    let listens = |given: &Option<String>, port: u16| match given {
        Some(list) => Listen::parse_list(list),
        None => Ok([Listen::Port(port), Listen::Addr(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))][..1 + usize::from(ipv6)].to_vec()),
    };
    let raw_listen = match &args.raw_listen {
        Some(list) => parse_addresses(list)?,
        None => [IpAddr::from(Ipv4Addr::UNSPECIFIED), IpAddr::from(Ipv6Addr::UNSPECIFIED)][..1 + usize::from(ipv6)].to_vec(),
    };
    Ok(NginxOptions {
        https_listen: listens(&args.https_listen, 443)?,
        http_listen: listens(&args.http_listen, 80)?,
        raw_listen,
        sni_socket: args.nginx_sni_socket.clone(),
        server_names_hash_bucket_size: args.nginx_server_names_hash_bucket_size,
        worker_shutdown_timeout: worker_shutdown_timeout(args),
        access_log: Some(args.nginx_access_log.clone()).filter(|l| l != "off"),
    })
}

/// `--nginx-worker-shutdown-timeout`, unless 0 or nginx.conf sets the
/// directive itself (nginx would refuse it twice: one warning line says so).
fn worker_shutdown_timeout(args: &Args) -> Option<Duration> {
    let timeout = Some(args.nginx_worker_shutdown_timeout).filter(|t| !t.is_zero())?;
    let conf = std::fs::read_to_string(&args.nginx_conf).unwrap_or_default();
    if crate::render::config_sets(&conf, "worker_shutdown_timeout") {
        tracing::warn!(
            nginx_conf = %args.nginx_conf.display(),
            "nginx.conf sets worker_shutdown_timeout: --nginx-worker-shutdown-timeout is not written (nginx refuses it twice)"
        );
        return None;
    }
    Some(timeout)
}

/// Ports of the host the gateway uses itself, with what uses them: no raw
/// `tcp://`/`udp://` entry may take one.
fn gateway_ports(nginx: &NginxOptions, api_port: u16, custom: &[CustomForwarding]) -> Vec<(u16, String)> {
    let mut ports: Vec<(u16, String)> = vec![(api_port, "the API".into())];
    ports.extend(nginx.https_listen.iter().map(|l| (l.port(), "the HTTPS listener".into())));
    ports.extend(nginx.http_listen.iter().map(|l| (l.port(), "the HTTP listener".into())));
    ports.extend(custom.iter().map(|f| (f.upstream.port(), format!("--custom-forwarding {}", f.url))));
    ports
}

pub async fn build(args: &Args, runner: Runner) -> anyhow::Result<Daemon> {
    let token_sources = TokenSources::from_args(args)?;
    let tokens = token_sources.load()?;
    let port = args.api_port().map_err(anyhow::Error::msg)?;
    if tokens.is_open() && !args.address.is_loopback() {
        bail!(
            "no token given (--token or GATEWAY_TOKEN): the API would be open, so it may only listen on loopback, not {}. Set a token or use --address 127.0.0.1",
            args.address
        );
    }
    let layout = Layout::new(
        &args.namespace_prefix,
        &args.interface_prefix,
        &args.veth_prefix,
        &args.bridge,
        &args.bridge_subnet,
        args.dnat_port_base,
    )
    .map_err(anyhow::Error::msg)?;
    let custom = parse_custom_forwardings(&args.custom_forwarding).map_err(anyhow::Error::msg)?;
    match args.database() {
        None => tracing::warn!("no --database given: the desired state and traffic live in memory and are lost on exit"),
        Some(crate::store::IN_MEMORY) => {
            tracing::warn!("--database :memory:: the desired state and traffic live in memory and are lost on exit")
        }
        Some(_) => {}
    }
    let store = Store::open(args.database()).await?;
    let metrics = Metrics::new(args.metrics_per_peer);
    let metrics = Arc::new(if args.ha_address.is_some() { metrics.with_ha() } else { metrics });
    let mut system = system_from(args, runner.observed_by(metrics.clone()), layout, Backend::Userspace, &store);
    system.backend = Backend::detect(&system.runner, &system.tools, &args.wireguard_backend).await.map_err(anyhow::Error::msg)?;
    let last = store.last_apply().await.context("reading the last apply")?;
    metrics.set_generation("desired", store.desired_generation().await.context("reading the desired generation")?);
    metrics.set_generation("applied", last.as_ref().map_or(0, |r| r.applied_generation));
    let nginx = nginx_options(args, crate::system::host_has_ipv6()).map_err(anyhow::Error::msg)?;
    let settings = Settings {
        ports: gateway_ports(&nginx, port, &custom),
        nginx,
        custom,
        reserved: vec![system.layout.bridge_subnet()],
        raw_ports: args.raw_port_range,
        limits: args.limits(),
        watchdog: args.watchdog,
        tokens: token_sources,
        api_address: args.address,
        apply_wait: args.apply_wait,
        apply_concurrency: usize::from(args.apply_concurrency),
        shutdown_timeout: args.shutdown_timeout,
        peer_timeout: args.peer_timeout,
        health_interval: args.health_interval,
        ha_address: args.ha_address,
    };
    if let Some(address) = args.ha_address {
        if system.layout.bridge_subnet().contains(address) {
            bail!(
                "--ha-address {address} is inside the bridge subnet {}: give the address keepalived moves on the host's LAN",
                system.layout.bridge_subnet()
            );
        }
    }
    let endpoints = store.endpoints().await.context("reading the peers' last endpoints")?;
    let kept = usize::try_from(args.events_kept).unwrap_or(usize::MAX);
    let stored_events = crate::events::durable::load(&store, kept).await.context("reading the kept events")?;
    let mut shared = Shared::new(store, system, settings, metrics, last, args.retention);
    shared.endpoints = crate::endpoints::EndpointMemory::new(endpoints);
    shared.events = Events::resume(kept, stored_events, first_event_id());
    if let Some(address) = args.ha_address {
        let role = crate::system::role::watch_role(address).context("watching the host's addresses for --ha-address")?;
        tracing::info!(address = %address, role = role.borrow().name(), "high availability: the role follows the shared address");
        shared.metrics.set_ha_active(*role.borrow() == crate::ha::Role::Active);
        shared.role = Some(role);
    }
    let shared = Arc::new(shared);
    let writer = shared.clone();
    shared.events.set_writer(tokio::spawn(async move {
        writer.events.write(&writer.store, crate::events::durable::RETRY, |written| writer.store_outcome("events", written)).await;
    }));
    shared.set_tokens(tokens);
    // Not `Config::figment()`: that would let ROCKET_* variables and a
    // Rocket.toml in the working directory change the API behind the options.
    let figment = rocket::figment::Figment::from(rocket::Config::default())
        .merge(("address", args.address))
        .merge(("port", port))
        .merge(("log_level", rocket::config::LogLevel::Critical))
        .merge(("cli_colors", false))
        // The daemon handles SIGTERM/SIGINT itself: the running pass ends first.
        .merge(("shutdown", rocket::config::Shutdown { ctrlc: false, signals: Default::default(), ..Default::default() }));
    Ok(Daemon { shared, figment })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_default_to_both_families_or_ipv4_alone_without_ipv6() {
        let a = Args::try_parse_args_only(["gateway"]).unwrap();
        let both = nginx_options(&a, true).unwrap();
        let text = |l: &[Listen]| l.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        assert_eq!((text(&both.https_listen), text(&both.http_listen)), ("443,[::]:443".into(), "80,[::]:80".into()));
        assert_eq!(both.raw_listen, [IpAddr::from(Ipv4Addr::UNSPECIFIED), IpAddr::from(Ipv6Addr::UNSPECIFIED)]);
        let v4 = nginx_options(&a, false).unwrap();
        assert_eq!((text(&v4.https_listen), text(&v4.http_listen)), ("443".into(), "80".into()), "a host without IPv6 still works");
        assert_eq!(v4.raw_listen, [IpAddr::from(Ipv4Addr::UNSPECIFIED)]);
        let given = Args::try_parse_args_only(["gateway", "--https-listen=[::]:8443", "--raw-listen=127.0.0.1"]).unwrap();
        let o = nginx_options(&given, false).unwrap();
        assert_eq!((text(&o.https_listen), o.raw_listen), ("[::]:8443".into(), vec![IpAddr::from(Ipv4Addr::LOCALHOST)]), "given: as given");
        let ports: Vec<u16> =
            gateway_ports(&both, 8000, &parse_custom_forwardings("https://a.test=127.0.0.1:9443").unwrap()).iter().map(|p| p.0).collect();
        assert_eq!(ports, [8000, 443, 443, 80, 80, 9443]);
    }

    #[tokio::test]
    async fn open_api_only_on_loopback() {
        let a = Args::try_parse_args_only(["gateway", "--port=8000", "--address", "0.0.0.0", "--wireguard-backend", "userspace"]).unwrap();
        let err = build(&a, Runner::new(Duration::from_secs(1))).await.err().expect("refused");
        assert!(err.to_string().contains("only listen on loopback"), "{err}");
    }

    #[tokio::test]
    async fn a_token_with_surrounding_whitespace_is_refused_at_start() {
        for token in [" s3cret", "s3cret ", "s3cret\n", "\ts3cret"] {
            let a = Args::try_parse_args_only(["gateway", "--port=8000", "--wireguard-backend", "userspace", "--token", token]).unwrap();
            let err = build(&a, Runner::new(Duration::from_secs(1))).await.err().expect("refused");
            assert!(err.to_string().contains("leading or trailing whitespace"), "{token:?}: {err}");
        }
        let a = Args::try_parse_args_only(["gateway", "--port=8000", "--wireguard-backend", "userspace", "--token", "s3 cret"]).unwrap();
        assert!(build(&a, Runner::new(Duration::from_secs(1))).await.is_ok(), "inner whitespace is part of the token");
    }
}
