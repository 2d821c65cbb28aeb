//! A client of the event stream that resumes across the daemon's restarts:
//! the daemon is the real binary, stopped (SIGTERM), killed (SIGKILL) and
//! started again on the same database; the client is curl with
//! `Last-Event-ID`. Needs root (the daemon builds its bridge and starts a
//! private nginx); #[ignore]d like e2e.rs. Test indexes 1 and 2.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

/// The running binary; killed if the test ends while it runs.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(n: &Names, extra: &[&str]) -> Process {
        let log = n.dir.join("daemon.log");
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = Command::new(BIN)
            .args(&arg_list(n, extra)[1..])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("gateway starts");
        let mut p = Process { child, log };
        let start = Instant::now();
        while !sh_ok(&format!("curl -sf http://127.0.0.1:{}/health", n.api_port())) {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("the daemon exited ({status}): {}", p.log());
            }
            assert!(start.elapsed() < Duration::from_secs(30), "the API did not come up: {}", p.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM (`true`: it must exit with success) or SIGKILL.
    fn end(mut self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, signal) }, 0);
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(start.elapsed() < Duration::from_secs(40), "the daemon did not exit: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        };
        if signal == libc::SIGTERM {
            assert!(status.success(), "stopping: {status}: {}", self.log());
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn post(n: &Names, body: &Value) -> (u16, Value) {
    let out = sh(&format!(
        "curl -s -m 90 -H 'Token: test-token' -H 'Content-Type: application/json' --data-binary '{body}' -w '\\n%{{http_code}}' http://127.0.0.1:{}/api/v1/config.json",
        n.api_port()
    ));
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), serde_json::from_str(body).unwrap_or(Value::String(body.into())))
}

/// One SSE event as received: its id (None: no `id:` line), name and data.
#[derive(Debug, Clone, PartialEq)]
struct Received {
    id: Option<u64>,
    name: String,
    data: Value,
}

fn parse_sse(text: &str) -> Vec<Received> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let (mut id, mut name, mut data) = (None, String::new(), None);
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().parse().expect("a numeric id"));
            } else if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data = Some(serde_json::from_str(v.trim()).expect("JSON data"));
            }
        }
        if let Some(data) = data {
            out.push(Received { id, name, data });
        }
    }
    out
}

fn curl_events(n: &Names, last: Option<u64>) -> String {
    let header = last.map(|id| format!("-H 'Last-Event-ID: {id}'")).unwrap_or_default();
    format!("curl -s -N -H 'Token: test-token' {header} http://127.0.0.1:{}/api/v1/events", n.api_port())
}

/// What the stream sends at once to a client resuming after `last` (read
/// for a second: kept events come at once, the stream then stays open).
fn resume(n: &Names, last: Option<u64>) -> Vec<Received> {
    let out = Command::new("sh").arg("-c").arg(format!("{} -m 1", curl_events(n, last))).output().unwrap();
    parse_sse(&String::from_utf8_lossy(&out.stdout))
}

/// The generations of `apply` events, with their ids.
fn applies(events: &[Received]) -> Vec<(u64, i64)> {
    events.iter().filter(|e| e.name == "apply").map(|e| (e.id.expect("an id"), e.data["generation"].as_i64().unwrap())).collect()
}

/// Resumes after `last` until the last kept apply event is of `generation`.
fn resume_until(n: &Names, last: Option<u64>, generation: i64) -> Vec<Received> {
    let start = Instant::now();
    loop {
        let got = resume(n, last);
        if applies(&got).last().is_some_and(|(_, g)| *g == generation) {
            return got;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no apply event of generation {generation}: {got:?}");
    }
}

fn host(k: u8) -> (Names, Guard) {
    require_root();
    let n = names(k);
    let guard = Guard(n.clone());
    write_nginx_conf(&n);
    (n, guard)
}

#[test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
fn a_client_resumes_the_event_stream_across_a_restart_and_a_crash() {
    let (n, _guard) = host(1);
    let kept = ["--events-kept=3"];
    let d = Process::start(&n, &kept);
    for generation in 1..=4 {
        assert_eq!(post(&n, &json!({})).0, 200, "generation {generation}: {}", d.log());
    }
    let first = resume_until(&n, Some(0), 4);
    assert_eq!(first[0].name, "events_lost", "0 is not an id of this daemon: {first:?}");
    let a = applies(&first);
    assert_eq!(a.iter().map(|x| x.1).collect::<Vec<_>>(), [2, 3, 4], "the last 3 kept: {first:?}");
    let (a2, a3, a4) = (a[0].0, a[1].0, a[2].0);
    assert_eq!((a3, a4), (a2 + 1, a2 + 2), "numbered one by one");

    // A clean restart: what the client missed is sent, exactly.
    d.end(libc::SIGTERM);
    let d = Process::start(&n, &kept);
    let got = resume(&n, Some(a2));
    assert_eq!(got.iter().map(|e| (e.id, e.name.as_str())).collect::<Vec<_>>(), [(Some(a3), "apply"), (Some(a4), "apply")], "{got:?}");
    assert_eq!(got[1].data["generation"], 4);
    assert_eq!(post(&n, &json!({})).0, 200, "{}", d.log());
    let got = resume_until(&n, Some(a4), 5);
    let b5 = applies(&got)[0].0;
    assert_eq!(applies(&got), [(b5, 5)], "only the new one: {got:?}");
    assert!(b5 > a4, "ids keep increasing across the restart: {b5} after {a4}");
    let got = resume(&n, Some(a2));
    assert_eq!(applies(&got), [(a3, 3), (a4, 4), (b5, 5)], "a2 was the last dropped: nothing unseen is gone: {got:?}");
    assert!(got.iter().all(|e| e.name != "events_lost"), "{got:?}");
    let got = resume(&n, Some(a2 - 1));
    assert_eq!(got[0].name, "events_lost", "a2 is gone and the client had not seen it: {got:?}");
    assert_eq!((got[0].id, &got[0].data), (None, &json!({"last_event_id": a2 - 1, "first_kept_id": a3})), "no id: {got:?}");
    assert_eq!(applies(&got[1..]), [(a3, 3), (a4, 4), (b5, 5)]);

    // A crash right after a live client got an event: it is still there.
    let seen = n.dir.join("live.sse");
    let mut live = Command::new("sh").arg("-c").arg(format!("exec {} > {}", curl_events(&n, Some(b5)), seen.display())).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(post(&n, &json!({})).0, 200, "{}", d.log());
    let c6 = wait_for_event(&seen, 6);
    d.end(libc::SIGKILL);
    let _ = live.kill();
    let _ = live.wait();
    let d = Process::start(&n, &kept);
    let got = resume(&n, Some(b5));
    assert_eq!(applies(&got), [(c6, 6)], "the event a client saw before the crash was stored first: {got:?}");
    assert_eq!(post(&n, &json!({})).0, 200, "{}", d.log());
    let got = resume_until(&n, Some(c6), 7);
    assert!(applies(&got)[0].0 > c6, "{got:?}");
    d.end(libc::SIGTERM);
}

/// Waits until the live client's file holds the apply event of `generation`; its id.
fn wait_for_event(file: &Path, generation: i64) -> u64 {
    let start = Instant::now();
    loop {
        let got = parse_sse(&std::fs::read_to_string(file).unwrap_or_default());
        if let Some((id, _)) = applies(&got).into_iter().find(|(_, g)| *g == generation) {
            return id;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the live client got no event of generation {generation}: {got:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A pass that fails on a network with a private and a preshared key: its
/// errors go into the `apply` events, which are stored; neither key is in
/// the stream nor in the stored events.
#[test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
fn no_secret_lands_in_an_event() {
    let (n, _guard) = host(2);
    let (private, _) = genkey();
    let (psk, (_, peer)) = (sh("wg genpsk").trim().to_string(), genkey());
    let d = Process::start(&n, &["--wireguard-go-bin=/nonexistent/wireguard-go"]);
    let network = json!({
        "private_key": private,
        "address": ["10.80.0.1/24"],
        "peers": { peer.clone(): { "preshared_key": psk, "allowed_ips": ["10.80.0.2/32"] } }
    });
    let (code, body) = post(&n, &json!({ n.port(0).to_string(): network }));
    assert_eq!(code, 500, "wireguard-go cannot start: {body}");
    let got = resume_until(&n, Some(0), 1);
    let failed = got.iter().find(|e| e.name == "apply").unwrap();
    assert!(!failed.data["errors"].as_array().unwrap().is_empty(), "the errors are in the event: {failed:?}");
    d.end(libc::SIGTERM);
    let stored = sh(&format!("sqlite3 {} 'SELECT name, data FROM events'", n.db().display()));
    assert!(stored.contains("apply") && stored.contains(&format!("{}", n.port(0))), "{stored}");
    let streamed = format!("{got:?}");
    for secret in [&private, &psk] {
        assert!(!stored.contains(secret.as_str()), "a secret key in the stored events: {stored}");
        assert!(!streamed.contains(secret.as_str()), "a secret key in the stream: {streamed}");
    }
}
