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
//! Only wireguard-go's own sockets count: each wireguard-go also holds a
//! second one, made by the process that started it (which exited: the
//! socket's port id is that process's pid) and never read; its queue fills
//! until it overruns, harmlessly. Counted, it held every batch back for the
//! whole wait once per wireguard-go started (cold apply of 300 networks
//! 3.3x the shell script's time instead of under it). Other programs that
//! listen to link events resynchronise after an overrun, as netlink asks.

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
