//! Whether a port of the gateway host can be opened: a bind probe, as nginx
//! and WireGuard would bind it, and when it fails, which processes hold it
//! (`/proc/net/{tcp,udp}{,6}` socket inodes matched against `/proc/*/fd`).
//! No process is started. The [`PortProbe`] seam is scripted in unit tests.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::os::fd::{FromRawFd, OwnedFd};

use crate::types::Transport;

/// A process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Process {
    pub pid: u32,
    pub program: String,
}

/// What a bind probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Could be bound (or nothing tells: e.g. no permission below 1024).
    Free,
    /// In use; the processes holding it where /proc tells (none: a socket
    /// of the kernel's own, such as a kernel WireGuard interface's, or
    /// /proc hides its owner).
    Held(Vec<Process>),
}

/// Probes ports of the host (the real one: [`KernelPorts`]).
pub trait PortProbe: Send + Sync {
    fn probe(&self, transport: Transport, ip: IpAddr, port: u16) -> Probe;
}

/// The host's own sockets.
pub struct KernelPorts;

impl PortProbe for KernelPorts {
    fn probe(&self, transport: Transport, ip: IpAddr, port: u16) -> Probe {
        match bind_probe(transport, ip, port) {
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => Probe::Held(holders(transport, port)),
            _ => Probe::Free,
        }
    }
}

/// Binds a socket as nginx would and closes it at once: TCP with
/// `SO_REUSEADDR` (so connections in TIME_WAIT do not count, as they do
/// not for nginx), UDP without it (a UDP socket that allows sharing would
/// otherwise split the datagrams with nginx); `[::]` with `IPV6_V6ONLY`, as
/// the gateway's IPv6 listeners are.
fn bind_probe(transport: Transport, ip: IpAddr, port: u16) -> io::Result<()> {
    let kind = match transport {
        Transport::Tcp => libc::SOCK_STREAM,
        Transport::Udp => libc::SOCK_DGRAM,
    };
    let family = if ip.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: socket(2) has no memory preconditions; the fd is owned at once.
    let raw = unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let set = |level, name| {
        let one: libc::c_int = 1;
        // SAFETY: a valid fd and a pointer to an int of the given size.
        unsafe { libc::setsockopt(raw, level, name, (&one as *const libc::c_int).cast(), size_of::<libc::c_int>() as libc::socklen_t) }
    };
    if transport == Transport::Tcp {
        set(libc::SOL_SOCKET, libc::SO_REUSEADDR);
    }
    let result = match ip {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_in is plain data; zeroed is a valid value.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_port = port.to_be();
            sa.sin_addr.s_addr = u32::from(a).to_be();
            // SAFETY: a valid fd and a sockaddr_in of the size given.
            unsafe { libc::bind(raw, (&sa as *const libc::sockaddr_in).cast(), size_of::<libc::sockaddr_in>() as libc::socklen_t) }
        }
        IpAddr::V6(a) => {
            set(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY);
            // SAFETY: sockaddr_in6 is plain data; zeroed is a valid value.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_port = port.to_be();
            sa.sin6_addr.s6_addr = a.octets();
            // SAFETY: a valid fd and a sockaddr_in6 of the size given.
            unsafe { libc::bind(raw, (&sa as *const libc::sockaddr_in6).cast(), size_of::<libc::sockaddr_in6>() as libc::socklen_t) }
        }
    };
    let out = if result == 0 { Ok(()) } else { Err(io::Error::last_os_error()) };
    drop(fd);
    out
}

/// The socket inodes bound to local port `port` in a `/proc/net/tcp`-style
/// table: listening ones only for TCP (state `0A`); every UDP one. Inode 0
/// (a kernel socket) is kept: it tells that no process owns it.
pub fn socket_inodes(table: &str, port: u16, listening_only: bool) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else { continue };
        let Some(p) = local.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok()) else { continue };
        if p == port && (!listening_only || *state == "0A") {
            if let Ok(inode) = inode.parse() {
                out.insert(inode);
            }
        }
    }
    out
}

/// The processes holding `transport` port `port`, from /proc.
fn holders(transport: Transport, port: u16) -> Vec<Process> {
    let tables: &[&str] = match transport {
        Transport::Tcp => &["/proc/net/tcp", "/proc/net/tcp6"],
        Transport::Udp => &["/proc/net/udp", "/proc/net/udp6"],
    };
    let mut inodes = BTreeSet::new();
    for t in tables {
        inodes.extend(socket_inodes(&std::fs::read_to_string(t).unwrap_or_default(), port, transport == Transport::Tcp));
    }
    inodes.remove(&0);
    if inodes.is_empty() {
        return Vec::new();
    }
    let wanted: BTreeSet<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let holds = std::fs::read_dir(e.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| wanted.contains(l.to_string_lossy().as_ref())));
        if holds {
            let program = super::procfs::read_trimmed(&e.path().join("comm")).unwrap_or_else(|| "?".into());
            out.insert(Process { pid, program });
        }
    }
    out.into_iter().collect()
}

/// `sshd (pid 812)`, up to three of them, for an error message.
pub fn describe(holders: &[Process]) -> String {
    if holders.is_empty() {
        return "a socket no process shows (the kernel's, e.g. a WireGuard interface's)".into();
    }
    let mut shown: Vec<String> = holders.iter().take(3).map(|p| format!("{} (pid {})", p.program, p.pid)).collect();
    if holders.len() > 3 {
        shown.push(format!("{} more", holders.len() - 3));
    }
    shown.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inodes_of_a_port_from_the_proc_tables() {
        // As the kernel prints them: 0x1F90 = 8080, 0x0016 = 22.
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n\
           1: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1\n\
           2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(socket_inodes(tcp, 8080, true), [4242].into(), "only the listening socket, not a connection from it");
        assert_eq!(socket_inodes(tcp, 8080, false), [4242, 4343].into());
        assert_eq!(socket_inodes(tcp, 22, true), [17].into());
        assert!(socket_inodes(tcp, 23, true).is_empty());
        let udp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
           9: 00000000000000000000000000000000:CA6C 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 0 2 0000000000000000 0\n";
        assert_eq!(socket_inodes(udp6, 51820, false), [0].into(), "a kernel socket: inode 0");
    }

    #[test]
    fn a_port_held_here_is_found_with_its_holder_and_a_free_one_is_free() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        let me = Process { pid: std::process::id(), program: super::super::procfs::read_trimmed("/proc/self/comm".as_ref()).unwrap() };
        // Other programs on the machine may use the same port number on
        // another address at the same moment (an ephemeral port of theirs):
        // this process must be among the holders, not alone.
        let held_by_me = |probe: Probe| matches!(probe, Probe::Held(ref holders) if holders.contains(&me));
        assert!(held_by_me(KernelPorts.probe(Transport::Tcp, "127.0.0.1".parse().unwrap(), port)));
        assert!(held_by_me(KernelPorts.probe(Transport::Tcp, "0.0.0.0".parse().unwrap(), port)));
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let uport = udp.local_addr().unwrap().port();
        assert!(held_by_me(KernelPorts.probe(Transport::Udp, "127.0.0.1".parse().unwrap(), uport)));
        drop((tcp, udp));
        assert_eq!(KernelPorts.probe(Transport::Tcp, "127.0.0.1".parse().unwrap(), port), Probe::Free, "closed: free again");
        assert_eq!(KernelPorts.probe(Transport::Udp, "127.0.0.1".parse().unwrap(), uport), Probe::Free);
    }

    #[test]
    fn holders_are_named_briefly() {
        let p = |pid| Process { pid, program: "nginx".into() };
        assert_eq!(describe(&[p(1)]), "nginx (pid 1)");
        assert_eq!(describe(&[p(1), p(2), p(3), p(4), p(5)]), "nginx (pid 1), nginx (pid 2), nginx (pid 3), 2 more");
        assert!(describe(&[]).contains("kernel"));
    }
}
