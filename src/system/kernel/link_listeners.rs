//! Who listens to the root namespace's link events, and how full their
//! sockets are. Every wireguard-go keeps a netlink socket in the namespace
//! it was started in (the root one) subscribed to link events, and exits
//! once that socket overruns ("failed to receive netlink message: no buffer
//! space available", seen with wireguard-go 0.0.20220316: it reports the
//! error at its next read of the TUN and shuts down). A batch of link
//! changes for hundreds of networks sends thousands of events in a few
//! milliseconds; a wireguard-go the scheduler leaves waiting meanwhile
//! loses its interface. So the root namespace's batches are cut to what the
//! fullest listener has room for, and wait for room (see
//! `execute::batched`). `/proc/net/netlink` shows each socket's queue.

/// `RTMGRP_LINK`: bit 0 of a socket's first groups.
const RTMGRP_LINK: u32 = 1;

/// A socket subscribed to link events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub inode: u64,
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
            let (eth, groups, queued, drops, inode) = (f.get(1)?, f.get(3)?, f.get(4)?, f.get(8)?, f.get(9)?);
            let groups = u32::from_str_radix(groups, 16).ok()?;
            (*eth == "0" && groups & RTMGRP_LINK != 0).then_some(Listener {
                inode: inode.parse().ok()?,
                queued: queued.parse().ok()?,
                drops: drops.parse().ok()?,
            })
        })
        .collect()
}

/// Bytes the fullest listener that still reads has room for, given each
/// socket's buffer size `buffer` (`net.core.rmem_default`: nobody sets
/// its own on these sockets).
pub fn room(listeners: &[Listener], buffer: u64) -> u64 {
    let fullest = listeners.iter().filter(|l| l.drops == 0).map(|l| l.queued).max().unwrap_or(0);
    buffer.saturating_sub(fullest)
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
            [Listener { inode: 2702924, queued: 107520, drops: 0 }, Listener { inode: 2702001, queued: 200000, drops: 7 }],
            "not the address-only one, not a uevent socket (Eth 15), not one without groups"
        );
        assert_eq!(room(&l, 212992), 212992 - 107520, "one that lost events already holds nothing back");
        assert_eq!(room(&[], 212992), 212992);
        assert_eq!(room(&[Listener { inode: 1, queued: 300000, drops: 0 }], 212992), 0);
        assert!(parse("garbage\nnot a line\n").is_empty());
    }
}
