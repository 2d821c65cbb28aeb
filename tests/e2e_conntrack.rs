//! End-to-end (root; run by scripts/test.sh with --include-ignored): the
//! reader asks the kernel for a network's connections to one address only
//! (a conntrack dump filtered in the kernel), so a network busy with
//! node-to-node flows costs its drift check no more than an idle one.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use common::*;
use gateway::system::kernel::netlink::open_connections;
use gateway::system::kernel::observer::{KernelObserver, Observer, Target};
use gateway::types::Transport;

/// The namespace, removed on drop also when the test fails.
struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        sh_ok(&format!("ip netns del {}", self.0));
    }
}

/// The connections to `dst` the reader returns from namespace `ns`, as the
/// kernel sent them (before any filter of ours) and counted by port.
fn read(ns: &str, dst: Ipv4Addr) -> (usize, BTreeMap<(Transport, u16), u64>) {
    let target = Target { netns: Some(PathBuf::from("/run/netns").join(ns)), genl_wg: None, uapi: None, conntrack_to: Some(dst) };
    let raw = KernelObserver.observe(&[target]).pop().expect("one answer").expect("the namespace is read");
    (raw.conntrack.len(), open_connections(&raw.conntrack, dst))
}

#[test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
fn the_conntrack_dump_holds_only_the_connections_to_the_asked_address() {
    require_root();
    let n = names(1);
    let ns = Namespace(format!("{}-ct", n.prefix()));
    sh(&format!("ip netns add {}", ns.0));
    sh(&format!("ip -n {} link set lo up", ns.0));
    // A conntrack match makes the namespace track its connections.
    sh(&format!("ip netns exec {} iptables -w -A OUTPUT -m conntrack --ctstate NEW -j ACCEPT", ns.0));
    // One UDP flow to 127.0.0.1, two to 127.0.0.2 (unanswered: each stays
    // in the table for 30 s).
    let send = "import socket\n\
                for a, p in (('127.0.0.1', 9), ('127.0.0.2', 9), ('127.0.0.2', 10)):\n\
                \x20   socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', (a, p))";
    sh(&format!("ip netns exec {} python3 -c \"{send}\"", ns.0));

    let (sent, open) = read(&ns.0, Ipv4Addr::new(127, 0, 0, 2));
    assert_eq!(open, BTreeMap::from([((Transport::Udp, 9), 1), ((Transport::Udp, 10), 1)]));
    assert_eq!(sent, 2, "the kernel sent only the two flows to 127.0.0.2, not the one to 127.0.0.1");
    let (sent, open) = read(&ns.0, Ipv4Addr::new(127, 0, 0, 1));
    assert_eq!((sent, open), (1, BTreeMap::from([((Transport::Udp, 9), 1)])));
    let (sent, _) = read(&ns.0, Ipv4Addr::new(127, 0, 0, 3));
    assert_eq!(sent, 0, "nothing to an address no flow went to");
}
