//! The daemon as a process: how it starts (a token file, databases it
//! cannot use), how it stops (SIGTERM during a slow apply), and how its next
//! start heals a crash at the worst moments (GATEWAY_FAULT kills it with
//! SIGKILL right after nginx's files were written, or right after
//! wireguard-go started). Tests that change the system need root and are
//! #[ignore]d like e2e.rs (scripts/test.sh runs them with --include-ignored);
//! they use test indexes 13 to 15.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// One API call with curl: `None` if no answer came (the daemon died).
fn api(port: u16, method: &str, path: &str, body: Option<&Value>) -> Option<(u16, Value)> {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-m", "90", "-X", method, "-H", "Token: test-token", "-w", "\n%{http_code}"]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", &b.to_string()]);
    }
    let out = cmd.arg(format!("http://127.0.0.1:{port}{path}")).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    let code: u16 = code.parse().ok().filter(|c| *c != 0)?;
    Some((code, serde_json::from_str(body).unwrap_or(Value::String(body.to_string()))))
}

/// Options for a daemon that touches nothing on the system.
fn isolated(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> =
        ["--address=127.0.0.1", "--wireguard-backend=userspace", "--netns-dir=/nonexistent"].iter().map(|s| s.to_string()).collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The start failed with exit code 1 and exactly one line on stderr, which
/// contains every `needle`, and no panic anywhere.
fn assert_refused(args: &[&str], needles: &[&str]) {
    let (status, stdout, stderr) = run_to_end(args);
    assert_eq!(status.code(), Some(1), "{args:?}: {stdout}{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: one line, not {stderr:?}");
    assert!(lines[0].starts_with("gateway: "), "{lines:?}");
    for needle in needles {
        assert!(lines[0].contains(needle), "{args:?}: {needle:?} not in {lines:?}");
    }
    assert!(!format!("{stdout}{stderr}").contains("panicked"), "{stdout}{stderr}");
}

#[test]
fn a_token_file_works_and_is_refused_when_others_may_read_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "s3cret-from-a-file\n").unwrap();
    let path = file.to_str().unwrap().to_string();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_refused(&["--wireguard-backend=userspace", "--token-file", &path], &[&path, "0644", "chmod 600"]);
    assert_refused(&["--wireguard-backend=userspace", "--token-file", &path, "--token", "other"], &["use one"]);

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = free_port().to_string();
    let log = dir.path().join("daemon.log");
    let mut d = Process::start(&isolated(&["--port", &port, "--token-file", &path]), &[], log);
    let port: u16 = port.parse().unwrap();
    d.wait_healthy(port);
    let get =
        |header: &str| sh(&format!("curl -s -o /dev/null -w '%{{http_code}}' -H '{header}' http://127.0.0.1:{port}/api/v1/config.json"));
    assert_eq!(get("Token: s3cret-from-a-file"), "200", "the file's token, without its newline");
    assert_eq!(get("Authorization: Bearer s3cret-from-a-file"), "200");
    assert_eq!(get("Token: s3cret-from-a-file\\n"), "401");
    assert_eq!(get("Token: wrong"), "401");
    d.stop();
}

#[test]
fn a_database_that_cannot_be_used_stops_the_start_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let corrupt = at("corrupt.db");
    std::fs::write(&corrupt, "not a database, only text long enough to fill a header of one hundred bytes........").unwrap();
    let missing = at("no-such-dir/gateway.db");
    let directory = dir.path().to_str().unwrap().to_string();
    for (db, why) in [(&missing, "No such file or directory"), (&directory, "Is a directory"), (&corrupt, "file is not a database")] {
        assert_refused(&["--wireguard-backend=userspace", "--database", db], &["cannot open the database", db, why]);
    }
    // A database a newer gateway migrated further than this one knows.
    let newer = at("newer.db");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = gateway::store::Store::open(Some(&newer)).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (99, 'newer', 1, x'00', 0)",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        store.pool.close().await;
    });
    assert_refused(&["--wireguard-backend=userspace", "--database", &newer], &["cannot open the database", "migration 99"]);
}

/// Root can write anything but a read-only file system.
#[test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
fn a_read_only_database_stops_the_start_with_one_line() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let db = ro.join("gateway.db").to_str().unwrap().to_string();
    rt_open(&db);
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            sh_ok(&format!("umount {}", self.0.display()));
        }
    }
    sh(&format!("mount --bind {d} {d} && mount -o remount,bind,ro {d}", d = ro.display()));
    let _unmount = Unmount(ro.clone());
    assert_refused(&["--wireguard-backend=userspace", "--database", &db], &["cannot open the database", &db, "Read-only file system"]);
}

fn rt_open(db: &str) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        gateway::store::Store::open(Some(db)).await.unwrap().pool.close().await;
    });
}

/// A test host whose nginx answers 418 for hostnames it does not serve:
/// a served one answers 502 (its upstream refuses at once), so what nginx
/// has loaded can be told apart from what its files say.
fn host_with_a_teapot(k: u8) -> (Names, Guard) {
    require_root();
    let n = names(k);
    let guard = Guard(n.clone());
    write_nginx_conf(&n);
    let teapot = format!("server {{ listen {} default_server; return 418; }}\n", n.http_port());
    std::fs::write(n.dir.join("http-extra-teapot.conf"), teapot).unwrap();
    (n, guard)
}

/// What nginx answers for `host`: 502 if it serves it, 418 if not.
fn served(n: &Names, host: &str) -> String {
    sh(&format!("curl -s -o /dev/null -m 10 -w '%{{http_code}}' -H 'Host: {host}' http://127.0.0.1:{}/", n.http_port()))
}

/// One network whose proxy sends `host` to an address of its own with no
/// server: nginx answers 502 at once.
fn teapot_network(private: &str, hosts: &[&str]) -> Value {
    let proxy: serde_json::Map<String, Value> = hosts.iter().map(|h| (format!("http://{h}"), json!(["10.80.0.1:9"]))).collect();
    json!({ "private_key": private, "address": ["10.80.0.1/24"], "proxy": proxy })
}

fn start(n: &Names, env: &[(&str, &str)]) -> Process {
    let mut d = Process::start(&arg_list(n, &[])[1..], env, n.dir.join("daemon.log"));
    d.wait_healthy(n.api_port());
    d
}

/// Waits until the daemon reports `generation` applied.
fn wait_applied(n: &Names, d: &Process, generation: i64) -> Value {
    let start = Instant::now();
    loop {
        if let Some((200, st)) = api(n.api_port(), "GET", "/api/v1/status.json", None) {
            if st["applied_generation"] == generation && st["last_apply"]["result"] == "applied" {
                return st;
            }
            assert!(start.elapsed() < Duration::from_secs(40), "generation {generation} not applied: {st}\n{}", d.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
fn a_crash_right_after_the_nginx_files_were_written_heals_at_the_next_start() {
    let (n, _guard) = host_with_a_teapot(14);
    let port = n.port(0).to_string();
    let (key, _) = genkey();
    let config = |host: &str| json!({ &port: teapot_network(&key, &[host]) });

    let mut d = start(&n, &[]);
    assert_eq!(api(n.api_port(), "POST", "/api/v1/config.json", Some(&config("a.test"))).map(|a| a.0), Some(200));
    assert_eq!((served(&n, "a.test"), served(&n, "b.test")), ("502".into(), "418".into()));
    d.stop();

    let mut d = start(&n, &[("GATEWAY_FAULT", "after-nginx-write")]);
    let answer = api(n.api_port(), "POST", "/api/v1/config.json", Some(&config("b.test")));
    assert_eq!(d.wait_exit(Duration::from_secs(30)).signal(), Some(libc::SIGKILL), "no answer expected: {answer:?}");
    assert!(std::fs::read_to_string(n.http_file()).unwrap().contains("b.test"), "the files were written");
    assert_eq!(served(&n, "b.test"), "418", "the crash left nginx on the old routes");

    let mut d = start(&n, &[]);
    wait_applied(&n, &d, 2);
    assert_eq!((served(&n, "b.test"), served(&n, "a.test")), ("502".into(), "418".into()), "{}", d.log());

    // A network removed and added again (as a crash or a repair rebuilds
    // it) answers at once: its veth comes back with the same MAC, so the
    // host's neighbour entry for its address (kept alive by the other
    // network's bridge port) is still right.
    let other = n.port(1).to_string();
    let (key2, _) = genkey();
    let patch = |body: Value| api(n.api_port(), "PATCH", "/api/v1/config.json", Some(&body)).map(|a| a.0);
    // A bridge takes the lowest MAC of its ports unless given one, and a
    // MAC change flushes its neighbour entries, which would hide a stale
    // entry by chance: give it one first.
    sh(&format!("ip link set dev {} address 02:00:00:00:00:01", n.bridge()));
    assert_eq!(patch(json!({ &other: teapot_network(&key2, &["c.test"]) })), Some(200));
    assert_eq!((served(&n, "b.test"), served(&n, "c.test")), ("502".into(), "502".into()));
    assert_eq!(patch(json!({ &port: null })), Some(200));
    assert_eq!(patch(json!({ &port: teapot_network(&key, &["b.test"]) })), Some(200));
    let quick = sh(&format!("curl -s -o /dev/null -m 3 -w '%{{http_code}}' -H 'Host: b.test' http://127.0.0.1:{}/ || true", n.http_port()));
    assert_eq!(quick, "502", "the re-added network answers at once");
    d.stop();
}

#[test]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
fn a_crash_right_after_wireguard_go_started_heals_at_the_next_start() {
    let (n, _guard) = host_with_a_teapot(15);
    let (p, q) = (n.port(0), n.port(1));
    let (key_p, key_q) = (genkey().0, genkey().0);
    let root_link = |port: u16| Path::new("/sys/class/net").join(n.wg(port));
    let wireguard_go = |port: u16| wireguard_go_pids(&n.wg(port)).len();

    let mut d = start(&n, &[("GATEWAY_FAULT", "after-wireguard-go-start")]);
    let _ = api(n.api_port(), "POST", "/api/v1/config.json", Some(&json!({ p.to_string(): teapot_network(&key_p, &["p.test"]) })));
    assert_eq!(d.wait_exit(Duration::from_secs(30)).signal(), Some(libc::SIGKILL));
    assert!(root_link(p).exists(), "the crash left the interface in the root namespace");
    assert_ne!(std::fs::read_to_string(root_link(p).join("ifalias")).unwrap_or_default().trim(), "gateway", "untagged");
    assert_eq!(wireguard_go(p), 1, "and its wireguard-go");

    let mut d = start(&n, &[]);
    wait_applied(&n, &d, 1);
    assert!(!root_link(p).exists(), "moved into its namespace");
    assert!(sh_ok(&format!("ip -n {} link show {}", n.netns(p), n.wg(p))));
    assert_eq!(wireguard_go(p), 1, "one wireguard-go for the network: {}", d.log());
    assert_eq!(served(&n, "p.test"), "502");
    d.stop();

    // The same crash for a second network, which is no longer desired by
    // the next start (the orchestrator removed it meanwhile).
    let both = json!({ p.to_string(): teapot_network(&key_p, &["p.test"]), q.to_string(): teapot_network(&key_q, &["q.test"]) });
    let mut d = start(&n, &[("GATEWAY_FAULT", "after-wireguard-go-start")]);
    let _ = api(n.api_port(), "POST", "/api/v1/config.json", Some(&both));
    assert_eq!(d.wait_exit(Duration::from_secs(30)).signal(), Some(libc::SIGKILL));
    assert!(root_link(q).exists() && wireguard_go(q) == 1, "the crash left {}'s interface and wireguard-go", n.wg(q));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = gateway::store::Store::open(Some(n.db().to_str().unwrap())).await.unwrap();
        let only_p = serde_json::from_value(json!({ p.to_string(): teapot_network(&key_p, &["p.test"]) })).unwrap();
        store.save_desired(&only_p, 0).await.unwrap();
        store.pool.close().await;
    });
    let d = start(&n, &[]);
    wait_applied(&n, &d, 3);
    assert_eq!(leftovers(&n, q), Vec::<String>::new(), "{}", d.log());
    assert_eq!(wireguard_go(p), 1);
    assert_eq!((served(&n, "p.test"), served(&n, "q.test")), ("502".into(), "418".into()));
}

/// SIGTERM while an apply is slow (every `wg` takes 3 s): writes are
/// refused at once, the pass finishes and is recorded, the daemon exits 0,
/// and the network and nginx go on serving. The daemon logs at debug level
/// throughout, and no private or preshared key it was given is in its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn sigterm_during_a_slow_apply_finishes_the_pass_and_the_data_plane_stays() {
    let NodeTopology { n, gw_private, gw_public, port, node, _guard } = node_topology(13);
    let slow_wg = n.dir.join("slow-wg");
    std::fs::write(&slow_wg, "#!/bin/sh\nsleep 3\nexec wg \"$@\"\n").unwrap();
    sh(&format!("chmod 755 {}", slow_wg.display()));
    let psk = genkey().0;
    // The node uses the preshared key too, or no handshake succeeds.
    std::fs::write(n.dir.join("psk"), &psk).unwrap();
    sh(&format!("ip netns exec {} wg set {}nwg peer {gw_public} preshared-key {}", n.node_ns(), n.prefix(), n.dir.join("psk").display()));
    let peer =
        json!({ "preshared_key": psk, "allowed_ips": ["10.80.0.2/32"], "endpoint": format!("{}:{}", n.node_ip(), node.listen_port) });
    let config = json!({ port.to_string(): {
        "private_key": gw_private, "address": ["10.80.0.1/16"],
        "peers": { &node.public: peer }, "proxy": { "http://app.test": ["10.80.0.2:80"] },
    }});
    let args = arg_list(&n, &["--wg-bin", slow_wg.to_str().unwrap()]);
    let mut d = Process::start(&args[1..], &[("RUST_LOG", "debug")], n.dir.join("daemon.log"));
    d.wait_healthy(n.api_port());
    let api_port = n.api_port();
    let posted = config.clone();
    let post = std::thread::spawn(move || api(api_port, "POST", "/api/v1/config.json", Some(&posted)));
    wait_until("the apply to start", Duration::from_secs(20), || sh("ip netns list").contains(&n.netns(port))).await;
    d.signal(libc::SIGTERM);
    wait_until("the stop to begin", Duration::from_secs(5), || d.log().contains("stopping")).await;
    let refused = api(api_port, "POST", "/api/v1/config.json", Some(&config)).expect("the API answers while the pass ends");
    assert_eq!((refused.0, &refused.1["error"]), (503, &json!("shutting_down")), "{refused:?}");
    let status = d.wait_exit(Duration::from_secs(40));
    assert!(status.success(), "{status}: {}", d.log());
    let (code, body) = post.join().unwrap().expect("the POST was answered");
    assert_eq!((code, &body["result"]), (200, &json!("applied")), "the running pass finished: {body}");
    let log = d.log();
    let (stopping, converged) = (log.find("stopping").unwrap(), log.find("pass converged").expect("converged"));
    assert!(stopping < converged && log.contains("gateway stopped"), "{log}");

    // The data plane outlives the daemon: HTTP by Host reaches the node.
    let (ok, out) = client_curl(&n, &format!("-H 'Host: app.test' http://{}:{}/", n.client_gw_ip(), n.http_port()));
    assert!(ok && out.contains("node-http host=app.test"), "{out}");
    // The pass was recorded: the next daemon knows it.
    let next = TestDaemon::start(&common::args(&n, &[])).await;
    let (_, st) = next.get("/api/v1/status.json").await;
    assert_eq!(
        (&st["last_apply"]["generation"], &st["last_apply"]["result"], &st["applied_generation"]),
        (&json!(1), &json!("applied"), &json!(1))
    );
    next.stop().await;

    assert!(log.contains(" DEBUG "), "the log is at debug level");
    for (what, key) in [("private key", &gw_private), ("preshared key", &psk)] {
        assert!(!log.contains(key.as_str()), "the {what} is in the daemon's log");
    }

    // A pass that outlasts --shutdown-timeout: the daemon exits anyway, with 1.
    let mut args = args;
    args.push("--shutdown-timeout=1s".into());
    let mut d = Process::start(&args[1..], &[], n.dir.join("daemon-2.log"));
    d.wait_healthy(api_port);
    let mut changed = config.clone();
    changed[port.to_string()]["peers"][&node.public]["persistent_keepalive"] = json!(25);
    let post = std::thread::spawn(move || api(api_port, "POST", "/api/v1/config.json", Some(&changed)));
    let slow = slow_wg.display().to_string();
    // (anchored, or pgrep would find the shell that runs it)
    wait_until("the slow wg to run", Duration::from_secs(20), || sh_ok(&format!("pgrep -f '^/bin/sh {slow} '"))).await;
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "{}", d.log());
    assert!(d.log().contains("did not finish within --shutdown-timeout"), "{}", d.log());
    let _ = post.join();
}

/// Every option is read from its `GATEWAY_*` variable (here the port and
/// the retention, which had none), `ROCKET_ADDRESS` still works, and a
/// `GATEWAY_*` variable no option reads is one warning line at start.
#[test]
fn options_come_from_their_variables_and_an_unknown_one_is_one_warning() {
    let (status, _, stderr) = {
        let out = gateway(&isolated(&[]), &[("GATEWAY_RETENTION", "forever")]).output().unwrap();
        (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(status.code(), Some(2), "a bad GATEWAY_RETENTION is refused: {stderr}");
    assert!(stderr.contains("forever") && stderr.contains("--retention"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let env = [
        ("GATEWAY_PORT", port.to_string()),
        ("GATEWAY_RETENTION", "2h".into()),
        ("GATEWAY_RETENTON", "1h".into()),
        ("ROCKET_ADDRESS", "127.0.0.1".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut d = Process::start(&isolated(&[]), &env, dir.path().join("daemon.log"));
    d.wait_healthy(port);
    let log = d.log();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("unknown GATEWAY_* variables")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("GATEWAY_RETENTON") && !warnings[0].contains("GATEWAY_RETENTION"), "{log}");
    d.stop();
    // Without --address, ROCKET_ADDRESS is read (and checked).
    let bare = ["--wireguard-backend=userspace".to_string(), "--netns-dir=/nonexistent".to_string()];
    let out = gateway(&bare, &[("ROCKET_ADDRESS", "not-an-ip")]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ROCKET_ADDRESS 'not-an-ip'"), "{stderr}");
}
