//! What the daemon leaves within reach of others: the processes
//! it starts inherit none of its secrets or settings (root: a real daemon,
//! wireguard-go and nginx), and its database is not opened through a
//! symlink or when someone else owns it. A test binary of its own: its
//! process takes a slot of its own, so its indexes do not meet the other
//! binaries' tests.

mod common;

use common::*;
use serde_json::json;

/// The environment of process `pid`, one `NAME=value` per entry.
fn environ(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    raw.split(|b| *b == 0).filter(|e| !e.is_empty()).map(|e| String::from_utf8_lossy(e).into_owned()).collect()
}

/// Whether `needle` is anywhere in the writable memory of process `pid`
/// (heap, stack, anonymous mappings: where a copied environment lives).
fn memory_contains(pid: u32, needle: &[u8]) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(range), Some(perms)) = (fields.first(), fields.get(1)) else { continue };
        let Some((from, to)) = range.split_once('-') else { continue };
        let (from, to) = (u64::from_str_radix(from, 16).unwrap(), u64::from_str_radix(to, 16).unwrap());
        if !perms.starts_with("rw") || to - from > 256 << 20 {
            continue;
        }
        let mut buf = vec![0; (to - from) as usize];
        if mem.seek(SeekFrom::Start(from)).is_ok() && mem.read_exact(&mut buf).is_ok() && buf.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
    }
    false
}

/// Every process whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let out = sh(&format!("ps -o pid= --ppid {pid} || true"));
    out.split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

/// Started with the token, the ROCKET_ and GATEWAY_ settings and a
/// LOG_LEVEL in its environment, the daemon builds a network (wireguard-go)
/// and routes for it (nginx, which it starts itself): none of what it
/// started carries any of that, only PATH; and no process on the machine
/// but the daemon holds the token in its environment.
#[test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
fn the_processes_the_daemon_starts_inherit_nothing_of_its_environment() {
    require_root();
    let n = names(1);
    let _guard = Guard(n.clone());
    write_nginx_conf(&n);
    let token = format!("env-token-{}-{}", std::process::id(), n.prefix());
    let args: Vec<String> = arg_list(&n, &[]).into_iter().skip(1).filter(|a| !a.starts_with("--token")).collect();
    let env = [
        ("GATEWAY_TOKEN", token.as_str()),
        ("GATEWAY_LOG_FORMAT", "text"),
        ("ROCKET_ADDRESS", "127.0.0.1"),
        ("ROCKET_LIMITS", "{json=1MiB}"),
        ("RUST_LOG", "info"),
    ];
    let mut d = Process::start(&args, &env, n.dir.join("daemon.log"));
    d.wait_healthy(n.api_port());

    let port = n.port(0);
    let (key, _) = genkey();
    let body = json!({ port.to_string(): {
        "private_key": key, "address": ["10.80.0.1/24"], "proxy": { "http://isolated.test": ["10.80.0.1:9"] } } });
    let answer = sh(&format!(
        "curl -s -m 60 -w ' %{{http_code}}' -H 'Token: {token}' -H 'Content-Type: application/json' --data-binary '{body}' http://127.0.0.1:{}/api/v1/config.json",
        n.api_port()
    ));
    assert!(answer.ends_with(" 200"), "{answer}\n{}", d.log());

    let wireguard_go = wireguard_go_pids(&n.wg(port));
    assert_eq!(wireguard_go.len(), 1, "the network's wireguard-go runs: {}", d.log());
    let master: u32 = std::fs::read_to_string(n.nginx_pid()).unwrap().trim().parse().unwrap();
    let workers = children(master);
    assert!(!workers.is_empty(), "nginx's workers run");
    let path = format!("PATH={}", std::env::var("PATH").unwrap_or_default());
    // What wireguard-go hands its own forked daemon.
    let own = ["WG_TUN_FD=", "WG_UAPI_FD=", "WG_PROCESS_FOREGROUND="];
    for pid in &wireguard_go {
        let env = environ(*pid);
        let foreign: Vec<&String> = env.iter().filter(|e| **e != path && !own.iter().any(|o| e.starts_with(o))).collect();
        assert!(env.contains(&path) && foreign.is_empty(), "wireguard-go {pid} has PATH and its own WG_* only: {env:?}");
    }
    // nginx writes its process title over its original environment (after
    // copying it to its heap): /proc shows the title's tail, so its memory
    // is searched instead.
    for pid in [master].iter().chain(&workers) {
        assert!(!environ(*pid).iter().any(|e| e.contains(&token)), "nginx {pid}: {:?}", environ(*pid));
        assert!(!memory_contains(*pid, token.as_bytes()), "nginx {pid} holds the token");
        assert!(!memory_contains(*pid, b"ROCKET_LIMITS="), "nginx {pid} holds the daemon's ROCKET_ settings");
        assert!(memory_contains(*pid, path.as_bytes()), "the search works: nginx {pid} holds its PATH");
    }

    // Nothing else the daemon may have started, however short-lived its
    // parent, holds the token either.
    let daemon = d.child.id();
    let holders: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| *pid != daemon && environ(*pid).iter().any(|e| e.contains(&token)))
        .collect();
    assert_eq!(holders, Vec::<u32>::new(), "processes with the token in their environment");
}

/// The start with database `db` fails with exit code 1 and one line on
/// stderr that contains every `needle`.
fn assert_database_refused(db: &str, needles: &[&str]) {
    // Should it start after all, it must not take another daemon's port.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let (status, stdout, stderr) = run_to_end(&[
        "--wireguard-backend=userspace",
        "--netns-dir=/nonexistent",
        "--address=127.0.0.1",
        "--port",
        &port,
        "--database",
        db,
    ]);
    assert_eq!(status.code(), Some(1), "{db}: {stdout}{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line, not {stderr:?}");
    assert!(lines[0].starts_with(&format!("gateway: cannot open the database {db}: ")), "{lines:?}");
    for needle in needles {
        assert!(lines[0].contains(needle), "{needle:?} not in {lines:?}");
    }
}

fn create_database(db: &str) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        gateway::store::Store::open(Some(db)).await.unwrap().pool.close().await;
    });
}

/// A symlink planted where the database is expected (to a file, or to a
/// file not there yet), or beside it as SQLite's `-wal` file, is refused at
/// start, and nothing is written where it points.
#[test]
fn a_database_behind_a_symlink_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (target, db) = (at("target"), at("gateway.db"));
    std::fs::write(&target, "").unwrap();
    std::os::unix::fs::symlink(&target, &db).unwrap();
    assert_database_refused(&db, &["it is a symbolic link"]);
    assert_eq!(std::fs::metadata(&target).unwrap().len(), 0, "nothing written through the link");

    let (missing, dangling) = (at("not-yet"), at("dangling.db"));
    std::os::unix::fs::symlink(&missing, &dangling).unwrap();
    assert_database_refused(&dangling, &["it is a symbolic link"]);
    assert!(!std::path::Path::new(&missing).exists(), "nothing created through the link");

    // (An empty file is a new database to SQLite.)
    let real = at("real.db");
    std::fs::write(&real, "").unwrap();
    let wal = format!("{real}-wal");
    std::os::unix::fs::symlink(&target, &wal).unwrap();
    assert_database_refused(&real, &[&format!("{wal} is a symbolic link")]);
    assert_eq!(std::fs::metadata(&target).unwrap().len(), 0);
}

/// A database file that another user owns is refused (root may chown).
#[test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
fn a_database_someone_else_owns_is_refused() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gateway.db").to_str().unwrap().to_string();
    create_database(&db);
    sh(&format!("chown 65534 {db}"));
    assert_database_refused(&db, &["it is owned by uid 65534, not by root or the daemon's uid 0"]);
    sh(&format!("chown 0 {db}"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let args: Vec<String> = [
        "--wireguard-backend=userspace",
        "--netns-dir=/nonexistent",
        "--address=127.0.0.1",
        "--database",
        &db,
        "--port",
        &port.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut d = Process::start(&args, &[], dir.path().join("daemon.log"));
    d.wait_healthy(port);
}

/// A POST waits (up to --apply-wait) for its apply, without a byte either
/// way: the API's gate must not take that silence for an idle client after
/// --api-timeout, or a slow apply gets an empty reply instead of its 200.
/// The apply is made slow for real: nginx, found through PATH, is a script
/// that waits 3 s before each run (a check, a start, a reload).
#[test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
fn a_post_whose_apply_outlasts_the_api_timeout_gets_its_answer() {
    require_root();
    let n = names(2);
    let _guard = Guard(n.clone());
    write_nginx_conf(&n);
    let shims = n.dir.join("slow-tools");
    std::fs::create_dir_all(&shims).unwrap();
    let nginx = sh("command -v nginx").trim().to_string();
    let shim = shims.join("nginx");
    std::fs::write(&shim, format!("#!/bin/sh\nsleep 3\nexec {nginx} \"$@\"\n")).unwrap();
    sh(&format!("chmod 0755 {}", shim.display()));
    let path = format!("{}:{}", shims.display(), std::env::var("PATH").unwrap_or_default());
    let mut args = arg_list(&n, &["--api-timeout", "2s"]);
    args.remove(0);
    let mut d = Process::start(&args, &[("PATH", path.as_str())], n.dir.join("daemon.log"));
    d.wait_healthy(n.api_port());

    let port = n.port(0);
    let (key, _) = genkey();
    let body = json!({ port.to_string(): {
        "private_key": key, "address": ["10.80.0.1/24"], "proxy": { "http://slow.test": ["10.80.0.1:9"] } } });
    let started = std::time::Instant::now();
    let answer = sh(&format!(
        "curl -s -m 60 -w ' %{{http_code}}' -H 'Token: test-token' -H 'Content-Type: application/json' --data-binary '{body}' \
         http://127.0.0.1:{}/api/v1/config.json; echo \" curl=$?\"",
        n.api_port()
    ));
    let took = started.elapsed();
    assert!(took > std::time::Duration::from_secs(4), "the apply was slow, as meant: {took:?}\n{}", d.log());
    assert!(answer.trim_end().ends_with(" 200 curl=0"), "the answer after {took:?}: {answer}\n{}", d.log());
}
