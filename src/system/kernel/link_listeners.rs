//! Who listens to the root namespace's link events, and how full their
//! sockets are. Every wireguard-go keeps a netlink socket in the namespace
//! it was started in (the root one) subscribed to link events, and exits
//! once that socket overruns ("failed to receive netlink message: no buffer
//! space available", seen with wireguard-go 0.0.20220316: it reports the
//! error at its next read of the TUN and shuts down). A batch of link
//! changes for hundreds of networks sends thousands of events in a few
//! milliseconds; a wireguard-go the scheduler leaves waiting meanwhile
//! loses its interface. So the root namespace's batches are cut to what the
//! fullest wireguard-go socket has room for, and wait for room (see
//! `execute::batched`). `/proc/net/netlink` shows each socket's queue.
//!
//! So each new wireguard-go is taken out of the link events' group at
//! once ([`quiet`]): its TUN is moved into its network's namespace right
//! after, from where no event reaches that socket, so it only ever heard of
//! other interfaces; each event woke every wireguard-go (300 x 300 wakeups
//! for a cold apply of 300 networks, tens of milliseconds per link moved)
//! and could end one. (It also hears nothing of an interface that later
//! takes its TUN's old index in the root namespace.) Where that cannot be
//! done (no `pidfd_getfd`: kernels before 5.6, no ptrace right in a
//! container), the pacing below keeps them alive.
//!
//! Only wireguard-go's own sockets count: each wireguard-go also holds a
//! second one, made by the process that started it (which exited: the
//! socket's port id is that process's pid) and never read; its queue fills
//! until it overruns, harmlessly. Counted, it held every batch back for the
//! whole wait once per wireguard-go started (cold apply of 300 networks
//! 3.3x the shell script's time instead of under it). Other programs that
//! listen to link events resynchronise after an overrun, as netlink asks.

use std::collections::BTreeSet;
use std::path::Path;

/// `RTMGRP_LINK`: bit 0 of a socket's first groups.
const RTMGRP_LINK: u32 = 1;

/// A socket subscribed to link events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub inode: u64,
    /// The socket's port id: the pid of the process that made it, for a
    /// process's first netlink socket.
    pub portid: u32,
    /// Bytes waiting in its receive queue.
    pub queued: u64,
    /// Events it lost already (a listener that overran is past helping, or
    /// never reads: it holds nothing back).
    pub drops: u64,
}

/// The `NETLINK_ROUTE` sockets of `/proc/net/netlink` (columns: sk Eth Pid
/// Groups Rmem Wmem Dump Locks Drops Inode) subscribed to link events.
pub fn parse(text: &str) -> Vec<Listener> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (eth, portid, groups, queued, drops, inode) = (f.get(1)?, f.get(2)?, f.get(3)?, f.get(4)?, f.get(8)?, f.get(9)?);
            let groups = u32::from_str_radix(groups, 16).ok()?;
            (*eth == "0" && groups & RTMGRP_LINK != 0).then_some(Listener {
                inode: inode.parse().ok()?,
                portid: portid.parse().ok()?,
                queued: queued.parse().ok()?,
                drops: drops.parse().ok()?,
            })
        })
        .collect()
}

/// Bytes the fullest listener that still reads and is `watched` (a live
/// wireguard-go's own socket) has room for, given each socket's buffer size
/// `buffer` (`net.core.rmem_default`: nobody sets its own on these
/// sockets). `watched` is asked from the fullest down, until one is.
pub fn room(listeners: &[Listener], buffer: u64, watched: impl Fn(&Listener) -> bool) -> u64 {
    let mut reading: Vec<&Listener> = listeners.iter().filter(|l| l.drops == 0).collect();
    reading.sort_by_key(|l| std::cmp::Reverse(l.queued));
    let fullest = reading.into_iter().find(|l| watched(l)).map_or(0, |l| l.queued);
    buffer.saturating_sub(fullest)
}

/// Whether listener `l` is the socket of a live wireguard-go, by the
/// process its port id names under `proc_dir` (`/proc`).
pub fn is_wireguard_go(proc_dir: &std::path::Path, l: &Listener) -> bool {
    super::procfs::ProcStat::read(&proc_dir.join(l.portid.to_string())).is_some_and(|s| s.comm == "wireguard-go" && s.alive())
}

/// Whether process `pid` is the wireguard-go serving interface `wg`.
pub fn serves(proc_dir: &Path, pid: u32, wg: &str) -> bool {
    let dir = proc_dir.join(pid.to_string());
    let is_wireguard_go = super::procfs::ProcStat::read(&dir).is_some_and(|s| s.comm == "wireguard-go" && s.alive());
    is_wireguard_go && std::fs::read(dir.join("cmdline")).is_ok_and(|c| c.split(|b| *b == 0).nth(1) == Some(wg.as_bytes()))
}

/// The file descriptors of process `pid` that are sockets among `inodes`
/// (`/proc/PID/fd/N` links to `socket:[INODE]`).
pub fn socket_fds(proc_dir: &Path, pid: u32, inodes: &BTreeSet<u64>) -> Vec<i32> {
    let dir = proc_dir.join(pid.to_string()).join("fd");
    let mut fds: Vec<i32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse::<i32>().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            let inode = target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse::<u64>().ok()?;
            inodes.contains(&inode).then_some(fd)
        })
        .collect();
    fds.sort_unstable();
    fds
}

/// `NETLINK_DROP_MEMBERSHIP` (linux/netlink.h).
const NETLINK_DROP_MEMBERSHIP: libc::c_int = 2;

/// Takes the sockets among `listeners` of process `pid`, the wireguard-go
/// serving `wg`, out of the link events' group: each is borrowed
/// (`pidfd_getfd`: the same socket, another descriptor) and leaves the
/// group, which the process then no longer hears. Returns how many.
pub fn quiet(proc_dir: &Path, pid: u32, wg: &str, listeners: &[Listener]) -> std::io::Result<usize> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let inodes: BTreeSet<u64> = listeners.iter().map(|l| l.inode).collect();
    let fds = socket_fds(proc_dir, pid, &inodes);
    if fds.is_empty() {
        return Ok(0);
    }
    let check = |r: libc::c_long| if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(r as libc::c_int) };
    // SAFETY: plain system calls; each descriptor they return is owned here.
    let pidfd = unsafe { OwnedFd::from_raw_fd(check(libc::syscall(libc::SYS_pidfd_open, pid as libc::c_long, 0))?) };
    // The pid checked before, still the same process now that it is held:
    // never another process's sockets, should that wireguard-go have ended.
    if !serves(proc_dir, pid, wg) {
        return Ok(0);
    }
    for fd in &fds {
        use std::os::fd::AsRawFd;
        let raw = check(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd() as libc::c_long, *fd as libc::c_long, 0) })?;
        let borrowed = unsafe { OwnedFd::from_raw_fd(raw) };
        let group = libc::RTNLGRP_LINK;
        let r = unsafe {
            libc::setsockopt(
                borrowed.as_raw_fd(),
                libc::SOL_NETLINK,
                NETLINK_DROP_MEMBERSHIP,
                (&group as *const libc::c_uint).cast(),
                std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
            )
        };
        check(r as libc::c_long)?;
    }
    Ok(fds.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As /proc/net/netlink showed it with a stopped wireguard-go (pid
    /// 29032, groups LINK|IPV4_IFADDR|IPV6_IFADDR) after 16 link changes.
    const SEEN: &str = "\
sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode
00000000f0ce2333 0   3375752494 00000040 0        0        0     2        0        2702935
0000000078d25c74 0   29032      00000111 107520   0        0     2        0        2702924
0000000030d0ce8f 0   0          00000000 0        0        0     2        0        2702909
00000000aaaaaaaa 15  812        00000001 4096     0        0     2        0        2702000
00000000bbbbbbbb 0   900        00000001 200000   0        0     2        7        2702001
";

    #[test]
    fn only_route_sockets_that_listen_to_links() {
        let l = parse(SEEN);
        assert_eq!(
            l,
            [
                Listener { inode: 2702924, portid: 29032, queued: 107520, drops: 0 },
                Listener { inode: 2702001, portid: 900, queued: 200000, drops: 7 }
            ],
            "not the address-only one, not a uevent socket (Eth 15), not one without groups"
        );
        let all = |_: &Listener| true;
        assert_eq!(room(&l, 212992, all), 212992 - 107520, "one that lost events already holds nothing back");
        assert_eq!(room(&[], 212992, all), 212992);
        assert_eq!(room(&[Listener { inode: 1, portid: 1, queued: 300000, drops: 0 }], 212992, all), 0);
        assert!(parse("garbage\nnot a line\nsk Eth\n0 0 x 1 0 0 0 2 0 5\n").is_empty(), "a port id that is no number");
    }

    /// As seen after 80 bridges were made beside one wireguard-go (pid
    /// 23958): its own socket read everything, the one of the process that
    /// started it (pid 23952, exited) filled and overran. Before it
    /// overruns, the unread one must hold nothing back; the fullest watched
    /// one decides.
    #[test]
    fn only_watched_listeners_decide_the_room() {
        let l = [
            Listener { inode: 10, portid: 23952, queued: 204800, drops: 0 },
            Listener { inode: 11, portid: 23958, queued: 4096, drops: 0 },
            Listener { inode: 12, portid: 24001, queued: 1024, drops: 0 },
        ];
        let wireguard_go = |l: &Listener| l.portid != 23952;
        assert_eq!(room(&l, 212992, wireguard_go), 212992 - 4096);
        assert_eq!(room(&l, 212992, |_: &Listener| false), 212992, "nothing watched: nothing held back");
    }

    #[test]
    fn the_process_serving_an_interface_and_its_listening_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("23958");
        std::fs::create_dir_all(p.join("fd")).unwrap();
        std::fs::write(p.join("stat"), "23958 (wireguard-go) S 1 23958 ...").unwrap();
        std::fs::write(p.join("cmdline"), "/usr/bin/wireguard-go\0gbw21000\0").unwrap();
        for (fd, target) in
            [("0", "/dev/null"), ("7", "socket:[439854]"), ("9", "socket:[439251]"), ("10", "socket:[5]"), ("11", "anon_inode:[eventpoll]")]
        {
            std::os::unix::fs::symlink(target, p.join("fd").join(fd)).unwrap();
        }
        assert!(serves(dir.path(), 23958, "gbw21000"));
        assert!(!serves(dir.path(), 23958, "gbw2100"), "the whole name");
        assert!(!serves(dir.path(), 23958, "gbw21001"));
        assert!(!serves(dir.path(), 4, "gbw21000"), "no such process");
        let inodes: BTreeSet<u64> = [439251, 439854, 1].into();
        assert_eq!(socket_fds(dir.path(), 23958, &inodes), [7, 9], "both link listeners it holds, no other socket");
        assert!(socket_fds(dir.path(), 4, &inodes).is_empty());
    }

    #[test]
    fn a_listener_is_a_wireguard_go_by_its_port_id_s_process() {
        let dir = tempfile::tempdir().unwrap();
        let proc_with = |pid: u32, stat: &str| {
            std::fs::create_dir_all(dir.path().join(pid.to_string())).unwrap();
            std::fs::write(dir.path().join(pid.to_string()).join("stat"), stat).unwrap();
        };
        proc_with(23958, "23958 (wireguard-go) S 1 23958 ...");
        proc_with(23959, "23959 (wireguard-go) Z 1 23958 ...");
        proc_with(23960, "23960 (ip) R 1 23958 ...");
        let l = |portid| Listener { inode: 1, portid, queued: 0, drops: 0 };
        assert!(is_wireguard_go(dir.path(), &l(23958)));
        assert!(!is_wireguard_go(dir.path(), &l(23959)), "a zombie reads nothing");
        assert!(!is_wireguard_go(dir.path(), &l(23960)), "the pid taken by another program");
        assert!(!is_wireguard_go(dir.path(), &l(23952)), "the process is gone: an inherited socket");
    }
}
