//! The wiring: from a [`Config`] (the options', or a test's), build the
//! pieces (layout, store, system, settings, the service's state), refusing
//! bad values before anything is touched. The loops are started by `main`
//! (and the tests) from what [`build`] returns; the state itself belongs to
//! [`crate::service`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::events::Events;
use crate::layout::Layout;
use crate::metrics::Metrics;
use crate::render::{Listen, NginxOptions};
use crate::service::{Settings, Shared, TokenSources, first_event_id};
use crate::spec::{CustomForwarding, parse_custom_forwardings};
use crate::store::Store;
use crate::system::{Backend, Runner, System, SystemPaths, Tools};

mod config;

pub use config::{Config, ConfigSource};

/// Everything started from the options.
pub struct Daemon {
    pub shared: Arc<Shared>,
    /// The usage socket, bound (`--usage-socket`; `None`: off, or it could
    /// not be made, and nginx is told of none).
    pub usage: Option<tokio::net::UnixDatagram>,
    /// Rocket's configuration (address, port, quiet logs).
    pub figment: rocket::figment::Figment,
}

fn system_from(config: &Config, runner: Runner, layout: Layout, backend: Backend, store: &Store) -> System {
    let tools = Tools {
        ip: config.ip_bin.clone(),
        wg: config.wg_bin.clone(),
        wireguard_go: config.wireguard_go_bin.clone(),
        iptables_save: config.iptables_save_bin.clone(),
        iptables_restore: config.iptables_restore_bin.clone(),
        ip6tables_save: config.ip6tables_save_bin.clone(),
        ip6tables_restore: config.ip6tables_restore_bin.clone(),
        tc: config.tc_bin.clone(),
        nginx: config.nginx_bin.clone(),
    };
    let paths = SystemPaths {
        netns_dir: config.netns_dir.clone(),
        sys_class_net: "/sys/class/net".into(),
        wireguard_sock_dir: config.wireguard_sock_dir.clone(),
        nginx_stream: config.nginx_stream_config.clone(),
        nginx_http: config.nginx_http_config.clone(),
        nginx_conf: config.nginx_conf.clone(),
        nginx_pid: config.nginx_pid.clone(),
        nginx_sni_socket: config.nginx_sni_socket.clone().into(),
        inotify_max_user_instances: "/proc/sys/fs/inotify/max_user_instances".into(),
        proc_net_netlink: "/proc/net/netlink".into(),
        rmem_default: "/proc/sys/net/core/rmem_default".into(),
        proc_dir: "/proc".into(),
    };
    let tools = tools.resolved(&std::env::var("PATH").unwrap_or_default());
    let observer = Arc::new(crate::system::kernel::observer::KernelObserver);
    System {
        runner,
        layout,
        tools,
        paths,
        backend,
        observer,
        journal: Arc::new(store.clone()),
        ports: Arc::new(crate::system::kernel::ports::KernelPorts),
        ipv6: crate::system::kernel_has_ipv6(),
    }
}

/// The nginx settings from the options: listeners default to both address
/// families, or IPv4 alone on a host without IPv6 (nginx could not bind `[::]`).
fn nginx_options(config: &Config, ipv6: bool) -> NginxOptions {
    let listens = |given: &Option<Vec<Listen>>, port: u16| match given {
        Some(list) => list.clone(),
        None => [Listen::Port(port), Listen::Addr(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))][..1 + usize::from(ipv6)].to_vec(),
    };
    let raw_listen = match &config.raw_listen {
        Some(list) => list.clone(),
        None => [IpAddr::from(Ipv4Addr::UNSPECIFIED), IpAddr::from(Ipv6Addr::UNSPECIFIED)][..1 + usize::from(ipv6)].to_vec(),
    };
    NginxOptions {
        https_listen: listens(&config.https_listen, 443),
        http_listen: listens(&config.http_listen, 80),
        raw_listen,
        sni_socket: config.nginx_sni_socket.clone(),
        server_names_hash_bucket_size: config.nginx_server_names_hash_bucket_size,
        worker_shutdown_timeout: worker_shutdown_timeout(config),
        access_log: Some(config.nginx_access_log.clone()).filter(|l| l != "off"),
        usage_socket: config.usage_socket.clone(),
    }
}

/// `--nginx-worker-shutdown-timeout`, unless 0 or nginx.conf sets the
/// directive itself (nginx would refuse it twice: one warning line says so).
fn worker_shutdown_timeout(config: &Config) -> Option<Duration> {
    let timeout = Some(config.nginx_worker_shutdown_timeout).filter(|t| !t.is_zero())?;
    let conf = std::fs::read_to_string(&config.nginx_conf).unwrap_or_default();
    if crate::render::config_sets(&conf, "worker_shutdown_timeout") {
        tracing::warn!(
            nginx_conf = %config.nginx_conf.display(),
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

/// Where the API's tokens come from, from the token options.
fn token_sources(config: &Config) -> anyhow::Result<TokenSources> {
    TokenSources::new(
        (config.token.as_deref(), config.token_file.as_deref()),
        (config.read_token.as_deref(), config.read_token_file.as_deref()),
    )
}

/// The daemon from its configuration (the options' or a test's).
pub async fn build(source: &impl ConfigSource, runner: Runner) -> anyhow::Result<Daemon> {
    let config = &source.config().map_err(anyhow::Error::msg)?;
    let token_sources = token_sources(config)?;
    let tokens = token_sources.load()?;
    let port = config.port;
    if tokens.is_open() && !config.address.is_loopback() {
        bail!(
            "no token given (--token or GATEWAY_TOKEN): the API would be open, so it may only listen on loopback, not {}. Set a token or use --address 127.0.0.1",
            config.address
        );
    }
    let layout = Layout::new(
        &config.namespace_prefix,
        &config.interface_prefix,
        &config.veth_prefix,
        &config.bridge,
        &config.bridge_subnet,
        config.dnat_port_base,
    )
    .map_err(anyhow::Error::msg)?;
    let custom = parse_custom_forwardings(&config.custom_forwarding).map_err(anyhow::Error::msg)?;
    // Every check of the options before the database is opened (or made).
    if let Some(address) = config.ha_address.filter(|a| layout.bridge_subnet().contains(*a)) {
        bail!(
            "--ha-address {address} is inside the bridge subnet {}: give the address keepalived moves on the host's LAN",
            layout.bridge_subnet()
        );
    }
    match config.database.as_deref() {
        None => tracing::warn!("no --database given: the desired state and traffic live in memory and are lost on exit"),
        Some(crate::store::IN_MEMORY) => {
            tracing::warn!("--database :memory:: the desired state and traffic live in memory and are lost on exit")
        }
        Some(_) => {}
    }
    let store = Store::open(config.database.as_deref()).await?;
    let metrics = Metrics::new(config.metrics_per_peer);
    let metrics = Arc::new(if config.ha_address.is_some() { metrics.with_ha() } else { metrics });
    let mut system = system_from(config, runner.observed_by(metrics.clone()), layout, Backend::Userspace, &store);
    system.backend = Backend::detect(&system.runner, &system.tools, &config.wireguard_backend).await.map_err(anyhow::Error::msg)?;
    let last = store.last_apply().await.context("reading the last apply")?;
    metrics.set_generation("desired", store.desired_generation().await.context("reading the desired generation")?);
    metrics.set_generation("applied", last.as_ref().map_or(0, |r| r.applied_generation));
    let mut nginx = nginx_options(config, crate::system::host_has_ipv6());
    let usage = nginx.usage_socket.as_deref().and_then(|path| crate::usage::socket::open(path, &config.nginx_conf));
    if usage.is_none() {
        nginx.usage_socket = None;
    }
    let settings = Settings {
        ports: gateway_ports(&nginx, port, &custom),
        nginx,
        custom,
        reserved: vec![system.layout.bridge_subnet()],
        raw_ports: config.raw_port_range,
        limits: config.limits,
        watchdog: config.watchdog,
        tokens: token_sources,
        api_address: config.address,
        apply_wait: config.apply_wait,
        apply_concurrency: usize::from(config.apply_concurrency),
        shutdown_timeout: config.shutdown_timeout,
        peer_timeout: config.peer_timeout,
        health_interval: config.health_interval,
        ha_address: config.ha_address,
    };
    let endpoints = store.endpoints().await.context("reading the peers' last endpoints")?;
    let kept = usize::try_from(config.events_kept).unwrap_or(usize::MAX);
    let stored_events = crate::events::durable::load(&store, kept).await.context("reading the kept events")?;
    let mut shared = Shared::new(store, system, settings, metrics, last, config.retention)
        .with_endpoints(crate::endpoints::EndpointMemory::new(endpoints))
        .with_events(Events::resume(kept, stored_events, first_event_id()));
    if let Some(address) = config.ha_address {
        let role = crate::system::kernel::role::watch_role(address).context("watching the host's addresses for --ha-address")?;
        tracing::info!(address = %address, role = role.borrow().name(), "high availability: the role follows the shared address");
        shared = shared.with_role(role);
    }
    let shared = Arc::new(shared);
    let writer = shared.clone();
    shared.events().set_writer(tokio::spawn(async move {
        writer.events().write(writer.store(), crate::events::durable::RETRY, |written| writer.store_outcome("events", written)).await;
    }));
    shared.set_tokens(tokens);
    // Not `Config::figment()`: that would let ROCKET_* variables and a
    // Rocket.toml in the working directory change the API behind the options.
    let figment = rocket::figment::Figment::from(rocket::Config::default())
        .merge(("address", config.address))
        .merge(("port", port))
        .merge(("log_level", rocket::config::LogLevel::Critical))
        .merge(("cli_colors", false))
        // The daemon handles SIGTERM/SIGINT itself: the running pass ends first.
        .merge(("shutdown", rocket::config::Shutdown { ctrlc: false, signals: Default::default(), ..Default::default() }));
    Ok(Daemon { shared, usage, figment })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Args;

    fn config(argv: &[&str]) -> Config {
        ConfigSource::config(&Args::try_parse_args_only(argv.iter().copied()).unwrap()).unwrap()
    }

    #[test]
    fn listeners_default_to_both_families_or_ipv4_alone_without_ipv6() {
        let a = config(&["gateway"]);
        let both = nginx_options(&a, true);
        let text = |l: &[Listen]| l.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        assert_eq!((text(&both.https_listen), text(&both.http_listen)), ("443,[::]:443".into(), "80,[::]:80".into()));
        assert_eq!(both.raw_listen, [IpAddr::from(Ipv4Addr::UNSPECIFIED), IpAddr::from(Ipv6Addr::UNSPECIFIED)]);
        let v4 = nginx_options(&a, false);
        assert_eq!((text(&v4.https_listen), text(&v4.http_listen)), ("443".into(), "80".into()), "a host without IPv6 still works");
        assert_eq!(v4.raw_listen, [IpAddr::from(Ipv4Addr::UNSPECIFIED)]);
        let given = config(&["gateway", "--https-listen=[::]:8443", "--raw-listen=127.0.0.1"]);
        let o = nginx_options(&given, false);
        assert_eq!((text(&o.https_listen), o.raw_listen), ("[::]:8443".into(), vec![IpAddr::from(Ipv4Addr::LOCALHOST)]), "given: as given");
        let ports: Vec<u16> =
            gateway_ports(&both, 8000, &parse_custom_forwardings("https://a.test=127.0.0.1:9443").unwrap()).iter().map(|p| p.0).collect();
        assert_eq!(ports, [8000, 443, 443, 80, 80, 9443]);
    }

    #[tokio::test]
    async fn open_api_only_on_loopback() {
        let a = config(&["gateway", "--port=8000", "--address", "0.0.0.0", "--wireguard-backend", "userspace"]);
        let err = build(&a, Runner::new(Duration::from_secs(1))).await.err().expect("refused");
        assert!(err.to_string().contains("only listen on loopback"), "{err}");
    }

    #[tokio::test]
    async fn a_token_with_surrounding_whitespace_is_refused_at_start() {
        for token in [" s3cret", "s3cret ", "s3cret\n", "\ts3cret"] {
            let a = config(&["gateway", "--port=8000", "--wireguard-backend", "userspace", "--token", token]);
            let err = build(&a, Runner::new(Duration::from_secs(1))).await.err().expect("refused");
            assert!(err.to_string().contains("leading or trailing whitespace"), "{token:?}: {err}");
        }
        // Its own usage socket off: a daemon built with the defaults would bind
        // /run/gateway-usage.sock, a real gateway's on this host.
        let a = config(&["gateway", "--port=8000", "--wireguard-backend", "userspace", "--token", "s3 cret", "--usage-socket", "off"]);
        assert!(build(&a, Runner::new(Duration::from_secs(1))).await.is_ok(), "inner whitespace is part of the token");
    }
}
