//! Observes every network namespace without starting a process: a thread of
//! its own enters each namespace in turn (`setns`), asks the kernel over
//! netlink sockets opened there for links, addresses, routes and the
//! nf_tables ruleset generation (and, with the kernel backend, the
//! WireGuard device), reads the namespace's sysctls from /proc/sys/net, and
//! asks wireguard-go on its socket (userspace backend). The sockets are
//! closed before the thread leaves the namespace, so nothing here keeps a
//! deleted namespace alive.
//!
//! The raw answers ([`NsRaw`]) are parsed by the caller, so unit tests
//! replay answers captured from a real gateway through the same parsers
//! ([`Observer`] is the seam).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use super::netlink::{self, Message, NETLINK_GENERIC, NETLINK_NETFILTER, NETLINK_ROUTE, NLM_F_ACK, NLM_F_DUMP, Socket};
use crate::layout::NAMESPACE_SYSCTLS;
use crate::system::wireguard::observe as wgobserve;

/// What to read for one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The namespace's file (`/run/netns/NAME`); `None`: the daemon's own.
    pub netns: Option<PathBuf>,
    /// The WireGuard interface, read over generic netlink (kernel backend).
    pub genl_wg: Option<String>,
    /// wireguard-go's socket (userspace backend).
    pub uapi: Option<PathBuf>,
    /// Whose connections to read from the namespace's conntrack table: the
    /// network's address on its uplink, the destination of its DNAT ports.
    pub conntrack_to: Option<Ipv4Addr>,
}

/// A namespace's raw answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NsRaw {
    pub links: Vec<Message>,
    pub addrs: Vec<Message>,
    pub routes: Vec<Message>,
    /// The values of [`NAMESPACE_SYSCTLS`] in order; `None` where the
    /// kernel lacks the key (e.g. without IPv6).
    pub sysctls: Vec<Option<String>>,
    /// nf_tables' ruleset generation: it changes with every change to the
    /// namespace's rules. `None` where it cannot be read (no nf_tables).
    pub nft_generation: Option<u32>,
    /// The WireGuard device: generic netlink messages (kernel) or the UAPI
    /// text (userspace); the error if the interface could not be asked.
    pub wg: Option<Result<WgRaw, String>>,
    /// The connections to [`Target::conntrack_to`] in the namespace's IPv4
    /// conntrack table (empty where it cannot be read): those open on each
    /// route's DNAT ports.
    pub conntrack: Vec<Message>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WgRaw {
    Genl(Vec<Message>),
    Uapi(String),
}

/// Observes namespaces; blocking (called on a thread of its own).
pub trait Observer: Send + Sync {
    fn observe(&self, targets: &[Target]) -> Vec<Result<NsRaw, String>>;
}

/// The real thing: `setns`, netlink, /proc, wireguard-go's sockets.
pub struct KernelObserver;

impl Observer for KernelObserver {
    fn observe(&self, targets: &[Target]) -> Vec<Result<NsRaw, String>> {
        // This thread's own namespace, to come back to after each visit: the
        // next target's file is opened from there (a namespace file may be
        // reachable only from the mount namespace, not through the net one).
        let home = std::fs::File::open("/proc/thread-self/ns/net");
        targets
            .iter()
            .map(|t| {
                let result = observe_one(t);
                if t.netns.is_some() {
                    if let Ok(home) = &home {
                        // SAFETY: a valid namespace descriptor.
                        unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) };
                    }
                }
                result
            })
            .collect()
    }
}

fn observe_one(t: &Target) -> Result<NsRaw, String> {
    if let Some(path) = &t.netns {
        let ns = std::fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
        // SAFETY: a valid descriptor; CLONE_NEWNET changes only this thread.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("entering {}: {}", path.display(), io::Error::last_os_error()));
        }
    }
    let mut raw = NsRaw::default();
    let mut route = Socket::open(NETLINK_ROUTE).map_err(|e| format!("rtnetlink socket: {e}"))?;
    let dumps = netlink::route_dumps();
    let mut answers = dumps.iter().map(|(kind, payload)| route.request(*kind, NLM_F_DUMP, payload));
    let mut next = |what: &str| answers.next().unwrap_or(Ok(Vec::new())).map_err(|e| format!("netlink dump of {what}: {e}"));
    raw.links = next("links")?;
    raw.addrs = next("addresses")?;
    raw.routes = next("routes")?;
    raw.sysctls = NAMESPACE_SYSCTLS.iter().map(|(key, _)| read_sysctl(key)).collect();
    raw.nft_generation = nft_generation().ok();
    if let Some(dst) = t.conntrack_to {
        raw.conntrack = conntrack_dump(dst).unwrap_or_default();
    }
    raw.wg = match (&t.genl_wg, &t.uapi) {
        (Some(ifname), _) => Some(genl_device(ifname).map(WgRaw::Genl)),
        (None, Some(sock)) => Some(uapi_get(sock).map(WgRaw::Uapi)),
        (None, None) => None,
    };
    Ok(raw)
}

/// A sysctl of the current thread's network namespace.
fn read_sysctl(key: &str) -> Option<String> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::read_to_string(path).ok().map(|v| v.trim().to_string())
}

/// `NFT_MSG_GETGEN`: the ruleset generation of this namespace.
fn nft_generation() -> io::Result<u32> {
    const NFNL_SUBSYS_NFTABLES: u16 = 10;
    const NFT_MSG_GETGEN: u16 = 16;
    const NFTA_GEN_ID: u16 = 1;
    let mut s = Socket::open(NETLINK_NETFILTER)?;
    let answers = s.request(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETGEN, NLM_F_ACK, &[0, 0, 0, 0])?;
    answers
        .iter()
        .find_map(|m| netlink::attrs(m.payload.get(4..)?).find(|(k, _)| *k == NFTA_GEN_ID).map(|(_, v)| v.to_vec()))
        .and_then(|v| Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?)))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no generation in the answer"))
}

/// `IPCTNL_MSG_CT_GET` dump of this namespace's IPv4 connections to `dst`.
fn conntrack_dump(dst: Ipv4Addr) -> io::Result<Vec<Message>> {
    const NFNL_SUBSYS_CTNETLINK: u16 = 1;
    const IPCTNL_MSG_CT_GET: u16 = 1;
    let mut s = Socket::open(NETLINK_NETFILTER)?;
    s.request(NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET, NLM_F_DUMP, &netlink::conntrack_request(dst))
}

/// The WireGuard device `ifname` of this namespace, over generic netlink.
fn genl_device(ifname: &str) -> Result<Vec<Message>, String> {
    let mut s = Socket::open(NETLINK_GENERIC).map_err(|e| format!("generic netlink socket: {e}"))?;
    let family = s
        .request(wgobserve::GENL_ID_CTRL, NLM_F_ACK, &wgobserve::family_request())
        .map_err(|e| format!("WireGuard's netlink family: {e}"))?;
    let id = wgobserve::parse_family(&family).ok_or("the kernel has no WireGuard netlink family")?;
    s.request(id, NLM_F_DUMP, &wgobserve::device_request(ifname)).map_err(|e| format!("WireGuard device {ifname}: {e}"))
}

/// wireguard-go's answer to `get=1` (it holds the private key: never logged).
pub fn uapi_get(sock: &std::path::Path) -> Result<String, String> {
    use std::io::{Read, Write};
    let fail = |e: io::Error| format!("wireguard-go's socket {}: {e}", sock.display());
    let mut stream = std::os::unix::net::UnixStream::connect(sock).map_err(fail)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(2))).map_err(fail)?;
    stream.set_write_timeout(Some(std::time::Duration::from_secs(2))).map_err(fail)?;
    stream.write_all(wgobserve::UAPI_GET).map_err(fail)?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 16384];
    // The answer ends with an empty line after `errno=N`.
    while !answer.ends_with(b"\n\n") {
        let n = stream.read(&mut buf).map_err(fail)?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(answer).map_err(|_| format!("wireguard-go's socket {}: an answer that is not text", sock.display()))
}
