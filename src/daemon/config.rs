//! What the daemon is built from: typed values, whoever produced them
//! (`cli` parses them from the options and their `GATEWAY_*` variables).
//! The daemon never sees the command line.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::render::Listen;
use crate::types::PortRange;
use crate::validate::Limits;

/// Everything [`super::build`] needs, one field per option.
#[derive(Debug, Clone)]
pub struct Config {
    pub token: Option<String>,
    pub token_file: Option<String>,
    pub read_token: Option<String>,
    pub read_token_file: Option<String>,
    /// `None`: in memory (lost on exit), as `:memory:`.
    pub database: Option<String>,
    pub address: IpAddr,
    pub port: u16,
    pub wireguard_backend: String,
    pub nginx_stream_config: PathBuf,
    pub nginx_http_config: PathBuf,
    pub nginx_conf: PathBuf,
    pub nginx_pid: PathBuf,
    /// `None`: the default (both address families where the host has IPv6).
    pub https_listen: Option<Vec<Listen>>,
    pub http_listen: Option<Vec<Listen>>,
    pub raw_listen: Option<Vec<IpAddr>>,
    pub nginx_sni_socket: String,
    pub nginx_access_log: String,
    /// The usage socket's path (None: `--usage-socket off`).
    pub usage_socket: Option<String>,
    pub nginx_server_names_hash_bucket_size: u32,
    pub nginx_worker_shutdown_timeout: Duration,
    pub raw_port_range: PortRange,
    pub limits: Limits,
    pub custom_forwarding: String,
    pub metrics_per_peer: bool,
    pub ha_address: Option<IpAddr>,
    pub watchdog: Duration,
    pub health_interval: Duration,
    pub retention: Duration,
    pub events_kept: u32,
    pub apply_wait: Duration,
    pub apply_concurrency: u16,
    pub shutdown_timeout: Duration,
    pub peer_timeout: Duration,
    pub namespace_prefix: String,
    pub interface_prefix: String,
    pub veth_prefix: String,
    pub bridge: String,
    pub bridge_subnet: String,
    pub dnat_port_base: u16,
    pub ip_bin: String,
    pub wg_bin: String,
    pub wireguard_go_bin: String,
    pub iptables_save_bin: String,
    pub iptables_restore_bin: String,
    pub ip6tables_save_bin: String,
    pub ip6tables_restore_bin: String,
    pub tc_bin: String,
    pub nginx_bin: String,
    pub netns_dir: PathBuf,
    pub wireguard_sock_dir: PathBuf,
}

/// Whatever gives the daemon its [`Config`]: the config itself, or the
/// parsed options (`cli` implements it for its `Args`, so the daemon needs
/// nothing of `cli`).
pub trait ConfigSource {
    fn config(&self) -> Result<Config, String>;
}

impl ConfigSource for Config {
    fn config(&self) -> Result<Config, String> {
        Ok(self.clone())
    }
}
