//! Which role this host has (`--ha-address`): active while the shared
//! address is on one of its interfaces. One thread listens to the kernel's
//! address notifications (netlink groups `RTMGRP_IPV4_IFADDR` and
//! `RTMGRP_IPV6_IFADDR`) and, on each, dumps the host's addresses once
//! (a few system calls, no process): a change is seen within milliseconds
//! of keepalived adding or removing the address. Nothing happens while no
//! address changes but one dump every [`SAFETY_NET`], should a notification
//! be lost (a full socket buffer).

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::sync::watch;

use super::netlink::{self, Message, NETLINK_ROUTE, NLM_F_DUMP, RTM_GETADDR, Socket};
use crate::ha::Role;

const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTM_NEWADDR: u16 = 20;

/// How often the addresses are read even without a notification.
pub const SAFETY_NET: Duration = Duration::from_secs(10);

/// Every address on the interfaces of the namespace the socket was opened in.
pub fn local_addresses(socket: &mut Socket) -> io::Result<Vec<IpAddr>> {
    Ok(parse_addresses(&socket.request(RTM_GETADDR, NLM_F_DUMP, &[0; 8])?))
}

/// The addresses in an address dump (`IFA_LOCAL`, else `IFA_ADDRESS`), any scope.
pub fn parse_addresses(messages: &[Message]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for m in messages.iter().filter(|m| m.kind == RTM_NEWADDR && m.payload.len() >= 8) {
        let (mut local, mut address) = (None, None);
        for (kind, v) in netlink::attrs(&m.payload[8..]) {
            match kind {
                libc::IFA_LOCAL => local = netlink::ip_of(v),
                libc::IFA_ADDRESS => address = netlink::ip_of(v),
                _ => {}
            }
        }
        out.extend(local.or(address));
    }
    out
}

/// A netlink socket that receives the address notifications.
fn subscribe() -> io::Result<OwnedFd> {
    // SAFETY: plain system calls on a descriptor this function owns.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_ROUTE) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_nl is valid; the fields are set below.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    addr.nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
    let size = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: `addr` outlives the call and `size` is its size.
    if unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), size) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let timeout = libc::timeval { tv_sec: SAFETY_NET.as_secs() as libc::time_t, tv_usec: 0 };
    let tsize = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: `timeout` outlives the call and `tsize` is its size.
    if unsafe { libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&raw const timeout).cast(), tsize) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Waits for a notification (or the safety net's timeout), then takes
/// every other one already queued: one dump answers them all.
fn wait_for_change(fd: &OwnedFd, buf: &mut [u8]) {
    // SAFETY: `buf` is a valid writable buffer of its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        // A timeout, or ENOBUFS (notifications lost): read anyway.
        return;
    }
    // SAFETY: as above; MSG_DONTWAIT only empties what is queued.
    while unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) } > 0 {}
}

/// Reads the role now, then follows it on a thread of its own for as long
/// as someone holds the returned receiver. Sockets are opened here, in the
/// daemon's own network namespace (the thread never enters another).
pub fn watch_role(address: IpAddr) -> io::Result<watch::Receiver<Role>> {
    let notifications = subscribe()?;
    let mut dumps = Socket::open(NETLINK_ROUTE)?;
    let first = Role::of(address, local_addresses(&mut dumps)?);
    let (tx, rx) = watch::channel(first);
    std::thread::Builder::new().name("ha-role".into()).spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while !tx.is_closed() {
            wait_for_change(&notifications, &mut buf);
            match local_addresses(&mut dumps) {
                Ok(local) => {
                    tx.send_if_modified(|role| {
                        let now = Role::of(address, local);
                        std::mem::replace(role, now) != now
                    });
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the host's addresses; the role stays as it was"),
            }
        }
    })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_a_captured_dump() {
        let local = parse_addresses(&crate::testing::netlink_fixture("netlink-root-addrs.bin"));
        assert!(local.contains(&"10.199.0.1".parse().unwrap()), "the bridge's address: {local:?}");
        assert!(local.contains(&"fe80::6002:13ff:febd:b3ad".parse().unwrap()), "any scope counts: {local:?}");
        assert_eq!(Role::of("10.199.0.1".parse().unwrap(), local.clone()), Role::Active);
        assert_eq!(Role::of("10.199.0.2".parse().unwrap(), local), Role::Standby);
    }
}
