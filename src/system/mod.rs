//! The only layer that touches the system: it observes it ([`observe`]) and
//! changes it ([`execute`]), every command through the one [`Runner`].
//! Each resource has a room of its own, holding all the knowledge of it:
//!
//! - [`wireguard`]: the interfaces, kernel or wireguard-go, and their state;
//! - [`firewall`]: iptables rules rendered, restored and parsed back from
//!   `iptables-save`;
//! - [`netns`]: namespaces, links, the bridge, veths, addresses, routes;
//! - [`nginx`]: its files written, checked, reloaded or started;
//! - [`exec`]: the one command runner and every tool's command line (tool
//!   failures are classified in one place: [`exec::runner::CmdError::kind`]);
//! - [`tc`]: aggregate bandwidth, HTB classes on the veth's two ends;
//! - [`kernel`]: what needs no process: netlink, /proc and /sys, namespaces
//!   entered by a thread (observation, health checks, the HA role).

mod error;
pub mod exec;
pub mod execute;
pub mod fault;
pub mod firewall;
pub mod intent;
pub mod kernel;
pub mod netns;
pub mod nginx;
pub mod observe;
pub mod tc;
pub mod wireguard;

use std::path::PathBuf;
use std::sync::Arc;

pub use error::SysError;
pub use exec::runner::{Cmd, CmdError, FailureKind, Record, Reply, Runner, Script};
pub use exec::tools::Tools;
pub use execute::ExecReport;
pub use wireguard::Backend;

use crate::layout::Layout;

/// Files and directories the gateway reads and writes directly.
#[derive(Debug, Clone)]
pub struct SystemPaths {
    pub netns_dir: PathBuf,
    pub sys_class_net: PathBuf,
    pub wireguard_sock_dir: PathBuf,
    pub nginx_stream: PathBuf,
    pub nginx_http: PathBuf,
    pub nginx_conf: PathBuf,
    pub nginx_pid: PathBuf,
    /// nginx's SNI hop socket: left behind when nginx was killed, it would
    /// keep a new nginx from starting, so it goes before a start.
    pub nginx_sni_socket: PathBuf,
    /// `fs.inotify.max_user_instances` (each wireguard-go takes one).
    pub inotify_max_user_instances: PathBuf,
    /// `/proc/net/netlink`: how full the sockets listening to the root
    /// namespace's link events are (see `kernel::link_listeners`).
    pub proc_net_netlink: PathBuf,
    /// `net.core.rmem_default`: those sockets' buffer size.
    pub rmem_default: PathBuf,
    /// `/proc`: which process made each of those sockets.
    pub proc_dir: PathBuf,
}

impl SystemPaths {
    /// Everything under `dir` (for tests): nothing of the real system is read.
    pub fn under(dir: &std::path::Path) -> Self {
        SystemPaths {
            netns_dir: dir.join("netns"),
            sys_class_net: dir.join("net"),
            wireguard_sock_dir: dir.join("wireguard"),
            nginx_stream: dir.join("stream.conf"),
            nginx_http: dir.join("http.conf"),
            nginx_conf: dir.join("nginx.conf"),
            nginx_pid: dir.join("nginx.pid"),
            nginx_sni_socket: dir.join("sni.sock"),
            inotify_max_user_instances: dir.join("max_user_instances"),
            proc_net_netlink: dir.join("netlink"),
            rmem_default: dir.join("rmem_default"),
            proc_dir: dir.join("proc"),
        }
    }
}

/// Everything needed to read and change the system.
#[derive(Clone)]
pub struct System {
    pub runner: Runner,
    pub layout: Layout,
    pub tools: Tools,
    pub paths: SystemPaths,
    pub backend: Backend,
    /// Observes namespaces without a process (replayed in unit tests).
    pub observer: Arc<dyn kernel::observer::Observer>,
    /// Where links about to be created are recorded (see [`intent`]).
    pub journal: Arc<dyn intent::Journal>,
    /// Whether the host's ports can be opened (scripted in unit tests).
    pub ports: Arc<dyn kernel::ports::PortProbe>,
    /// The kernel has IPv6: namespaces get IPv6 rules (`ip6tables`) too.
    pub ipv6: bool,
}

impl System {
    /// Who other than the gateway holds `transport` port `port` on one of
    /// `ips`, as `sshd (pid 812) on 0.0.0.0`; None when nginx or WireGuard
    /// could open it there, or only the gateway's own nginx holds it (a
    /// reload keeps its sockets).
    pub fn port_held_by_another(&self, transport: crate::types::Transport, ips: &[std::net::IpAddr], port: u16) -> Option<String> {
        for ip in ips {
            let kernel::ports::Probe::Held(holders) = self.ports.probe(transport, *ip, port) else { continue };
            let ours = self.nginx_master().map(|m| {
                let mut pids = kernel::procfs::children_of(m);
                pids.insert(m);
                pids
            });
            if !holders.is_empty() && ours.is_some_and(|ours| holders.iter().all(|h| ours.contains(&h.pid))) {
                continue;
            }
            return Some(format!("{} on {ip}", kernel::ports::describe(&holders)));
        }
        None
    }
}

/// Whether the kernel has IPv6 at all (it is not booted with
/// `ipv6.disable=1`): then every namespace has IPv6 and needs its filter.
pub fn kernel_has_ipv6() -> bool {
    std::path::Path::new("/proc/sys/net/ipv6").exists()
}

/// Whether nginx could listen on IPv6 here: a socket bound to `[::]` (a
/// kernel without IPv6, or booted with `ipv6.disable=1`, refuses it).
pub fn host_has_ipv6() -> bool {
    std::net::UdpSocket::bind((std::net::Ipv6Addr::UNSPECIFIED, 0)).is_ok()
}
