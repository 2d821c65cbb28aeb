//! End-to-end (root; run by scripts/test.sh with --include-ignored): the
//! root namespace's link work of a big apply never overruns a netlink
//! socket a wireguard-go listens to link events on. wireguard-go exits
//! once that socket overruns, and its network's interface with it (seen in
//! bench runs: 1 of 100, 4 of 300 networks rebuilt by the first drift check
//! after a converged cold apply). The daemon takes each wireguard-go it
//! starts out of those events (`kernel::link_listeners::quiet`).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// `count` networks with one peer each.
fn networks(n: &Names, count: u16) -> Value {
    let mut cfg = serde_json::Map::new();
    for i in 0..count {
        let peer = json!({ test_key(n.k, i, 1): { "allowed_ips": ["10.80.0.2/32"] } });
        cfg.insert(n.port(i).to_string(), json!({ "private_key": test_key(n.k, i, 0), "address": ["10.80.0.1/16"], "peers": peer }));
    }
    Value::Object(cfg)
}

/// Bytes queued and events lost on process `pid`'s netlink socket that
/// listens to link events (from /proc/net/netlink: sk Eth Pid Groups Rmem
/// Wmem Dump Locks Drops Inode).
fn link_socket(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/netlink").ok()?;
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let groups = u32::from_str_radix(f.get(3)?, 16).ok()?;
        (f.get(1) == Some(&"0") && f.get(2)?.parse::<u32>().ok()? == pid && groups & 1 == 1)
            .then(|| Some((f.get(4)?.parse().ok()?, f.get(8)?.parse().ok()?)))?
    })
}

/// Lets a stopped process go on, also when the test fails.
struct Continue(u32);
impl Drop for Continue {
    fn drop(&mut self) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGCONT) };
    }
}

/// Link-event sockets process `pid` holds (its own and any it inherited):
/// their inodes among /proc/net/netlink's link listeners.
fn link_sockets_held_by(pid: u32) -> Vec<u64> {
    let text = std::fs::read_to_string("/proc/net/netlink").unwrap();
    let listening: Vec<u64> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let groups = u32::from_str_radix(f.get(3)?, 16).ok()?;
            (f.get(1) == Some(&"0") && groups & 1 == 1).then(|| f.get(9)?.parse().ok())?
        })
        .collect();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    fds.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok()?.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .filter(|i| listening.contains(i))
        .collect()
}

/// Each wireguard-go the daemon starts hears no link event of the root
/// namespace (neither on its own socket nor on the one it inherits); one
/// the scheduler lets run seldom (here: stopped but for 20 ms in every
/// 120) while 40 networks are built keeps its interface.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn a_wireguard_go_that_reads_late_loses_no_link_event() {
    require_root();
    let n = names(1);
    let _guard = Guard(n.clone());
    write_nginx_conf(&n);
    let d = TestDaemon::start(&args(&n, &[])).await;
    let (code, body) = d.post(&networks(&n, 1)).await;
    assert_eq!(code, 200, "{body}");
    let wg = n.wg(n.port(0));
    let pids = wireguard_go_pids(&wg);
    assert_eq!(pids.len(), 1, "{pids:?}");
    let pid = pids[0];
    assert_eq!(link_socket(pid), None, "its own socket left the link events' group");
    assert_eq!(link_sockets_held_by(pid), Vec::<u64>::new(), "nor does it hold another that listens");

    // Stopped most of the time while 40 networks are built: it reads for
    // 20 ms in every 120.
    let _continued = Continue(pid);
    let done = std::sync::atomic::AtomicBool::new(false);
    let forty_more = networks(&n, 41);
    let apply = async {
        let answer = d.post(&forty_more).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        answer
    };
    let slow = async {
        let mut fullest = 0;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
            tokio::time::sleep(Duration::from_millis(100)).await;
            fullest = fullest.max(link_socket(pid).map_or(0, |(queued, _)| queued));
            // SAFETY: as above.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        fullest
    };
    let ((code, body), fullest) = tokio::join!(apply, slow);
    assert_eq!(code, 200, "{body}");
    assert_eq!(fullest, 0, "nothing queued for it");
    for i in 1..41 {
        let other = wireguard_go_pids(&n.wg(n.port(i)));
        assert_eq!(other.len(), 1, "network {i}: {other:?}");
        assert_eq!(link_sockets_held_by(other[0]), Vec::<u64>::new(), "network {i}'s wireguard-go hears no link event");
    }

    // A packet into the tunnel makes it read its TUN (where it would find
    // an overrun and shut down): it is still there, and so is its interface.
    let send = "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('10.80.0.2', 9))";
    sh(&format!("ip netns exec {} python3 -c \"{send}\"", n.netns(n.port(0))));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(wireguard_go_pids(&wg), [pid]);
    let outcome = d.drift_ok().await;
    assert!(!outcome.record.changed.contains(&n.port(0)), "nothing to rebuild: {:?}", outcome.record);
    d.stop().await;
}
