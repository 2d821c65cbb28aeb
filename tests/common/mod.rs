//! Real test topologies for the end-to-end tests (root only): a private
//! nginx, a node namespace running wireguard-go and HTTPS/HTTP servers, a
//! client namespace, and the daemon itself in-process. Every name carries the
//! test's own prefix; leftovers of that prefix are removed at start and
//! everything is removed on drop, also when the test fails.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::cli::Args;
use gateway::daemon::{Daemon, build};
use gateway::reconcile::{Mode, Reconciler};
use gateway::service::Shared;
use gateway::system::Runner;
use rocket::local::asynchronous::Client;

/// Runs a shell command; panics with its output if it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(out.status.success(), "`{cmd}` failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a shell command, ignoring failure (cleanup).
pub fn sh_ok(cmd: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("{cmd} >/dev/null 2>&1")).status().is_ok_and(|s| s.success())
}

pub fn require_root() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the end-to-end tests need root (namespaces, WireGuard, iptables, nginx); run them as root, e.g. in CI via .ci/run"
    );
}

pub fn genkey() -> (String, String) {
    let private = sh("wg genkey").trim().to_string();
    let public = sh(&format!("echo {private} | wg pubkey")).trim().to_string();
    (private, public)
}

/// Polls status.json until `cond` holds; returns that status.
pub async fn wait_for_status(d: &TestDaemon, what: &str, limit: Duration, cond: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let (code, st) = d.get("/api/v1/status.json").await;
        if code == 200 && cond(&st) {
            return st;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A sample's value in the /metrics text (`series` with its labels).
pub async fn metric(d: &TestDaemon, series: &str) -> Option<f64> {
    let (code, text) = d.get_text("/metrics").await;
    assert_eq!(code, 200, "{text}");
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Lets nginx's workers (`nobody`) reach the daemon's usage socket, which
/// `args` puts in the test's directory (0700 as made).
pub fn open_dir_to_nginx(n: &Names) {
    std::fs::set_permissions(&n.dir, std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
}

pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many copies of the suite may run at once on one machine.
const SLOTS: u8 = 4;

/// This process's slot, 0..SLOTS, held by an exclusive lock on a file for
/// as long as the process lives: two runs of the suite at once get
/// different slots, so different names, ports and subnets.
fn slot() -> u8 {
    static SLOT: std::sync::OnceLock<(u8, std::fs::File)> = std::sync::OnceLock::new();
    SLOT.get_or_init(|| {
        for _ in 0..6000 {
            for s in 0..SLOTS {
                let path = std::env::temp_dir().join(format!("gateway-test-slot-{s}.lock"));
                let Ok(file) = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path) else { continue };
                use std::os::fd::AsRawFd;
                if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                    return (s, file);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("all {SLOTS} test slots are taken by other runs of the suite for ten minutes");
    })
    .0
}

/// Names, ports and addresses of one test, derived from the run's slot `s`
/// and the test's index `k` (1..=15). Networks live in 100.64.0.0/10 and the
/// test hosts' links in 10.210-213.x (outside Docker's default pools).
#[derive(Clone)]
pub struct Names {
    pub k: u8,
    pub s: u8,
    pub dir: PathBuf,
    _tmp: Arc<tempfile::TempDir>,
}

impl Names {
    pub fn prefix(&self) -> String {
        format!("gt{}{:02}", self.s, self.k)
    }
    pub fn netns_prefix(&self) -> String {
        format!("{}-net-", self.prefix())
    }
    pub fn wg(&self, port: u16) -> String {
        format!("{}w{port}", self.prefix())
    }
    pub fn netns(&self, port: u16) -> String {
        format!("{}{port}", self.netns_prefix())
    }
    pub fn bridge(&self) -> String {
        format!("{}br", self.prefix())
    }
    pub fn bridge_subnet(&self) -> String {
        format!("100.{}.0.0/16", 64 + 16 * u16::from(self.s) + u16::from(self.k))
    }
    /// Network ports of this test: 30000 + 2500s + 100k + i.
    pub fn port(&self, i: u16) -> u16 {
        30000 + 2500 * u16::from(self.s) + 100 * u16::from(self.k) + i
    }
    pub fn https_port(&self) -> u16 {
        18000 + 250 * u16::from(self.s) + 10 * u16::from(self.k)
    }
    pub fn http_port(&self) -> u16 {
        self.https_port() + 1
    }
    pub fn api_port(&self) -> u16 {
        self.https_port() + 2
    }
    pub fn node_ns(&self) -> String {
        format!("{}-node", self.prefix())
    }
    pub fn client_ns(&self) -> String {
        format!("{}-client", self.prefix())
    }
    fn link_net(&self) -> String {
        format!("10.{}.{}", 210 + u16::from(self.s), self.k)
    }
    /// Root-namespace address facing the node (the node's "internet").
    pub fn node_gw_ip(&self) -> String {
        format!("{}.1", self.link_net())
    }
    pub fn node_ip(&self) -> String {
        format!("{}.2", self.link_net())
    }
    /// Root-namespace address the client reaches nginx on.
    pub fn client_gw_ip(&self) -> String {
        format!("{}.5", self.link_net())
    }
    pub fn client_ip(&self) -> String {
        format!("{}.6", self.link_net())
    }
    pub fn stream_file(&self) -> PathBuf {
        self.dir.join("stream.conf")
    }
    pub fn http_file(&self) -> PathBuf {
        self.dir.join("http.conf")
    }
    pub fn nginx_conf(&self) -> PathBuf {
        self.dir.join("nginx.conf")
    }
    pub fn nginx_pid(&self) -> PathBuf {
        self.dir.join("nginx.pid")
    }
    pub fn db(&self) -> PathBuf {
        self.dir.join("gateway.db")
    }

    /// Removes everything with this test's prefix. Never panics: it runs in
    /// `Drop`, also while a failing test unwinds.
    pub fn cleanup(&self) {
        let p = self.prefix();
        // Only our nginx: the pid file of a crashed run may name a reused pid.
        if let Some(pid) = std::fs::read_to_string(self.nginx_pid()).ok().and_then(|p| p.trim().parse::<u32>().ok()) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "nginx" {
                sh_ok(&format!("kill {pid}"));
            }
        }
        let namespaces = Command::new("ip").args(["netns", "list"]).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        for ns in namespaces.unwrap_or_default().lines().filter_map(|l| l.split_whitespace().next()) {
            if ns.starts_with(&format!("{p}-")) {
                // Kill what runs inside (the node's servers and wireguard-go).
                sh_ok(&format!("ip netns pids {ns} | xargs -r kill"));
                sh_ok(&format!("ip netns del {ns}"));
            }
        }
        for link in std::fs::read_dir("/sys/class/net").into_iter().flatten().flatten() {
            let name = link.file_name().to_string_lossy().to_string();
            if name.starts_with(&p) && name[p.len()..].starts_with(|c: char| !c.is_ascii_digit()) {
                sh_ok(&format!("ip link del {name}"));
            }
        }
    }
}

/// The names of test `k` (1..=15) in this run's slot; leftovers of an earlier
/// crashed run in the same slot are removed first.
pub fn names(k: u8) -> Names {
    assert!((1..=15).contains(&k), "test index {k} out of 1..=15");
    static TAKEN: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    assert!(!taken.contains(&k), "test index {k} is used by two tests of this binary: give each test its own");
    taken.push(k);
    drop(taken);
    let tmp = tempfile::Builder::new().prefix(&format!("gateway-test-{k}-")).tempdir().expect("temp dir");
    let n = Names { k, s: slot(), dir: tmp.path().to_path_buf(), _tmp: Arc::new(tmp) };
    n.cleanup();
    n
}

/// A private nginx config that includes the daemon's two files.
pub fn write_nginx_conf(n: &Names) {
    write_nginx_conf_logging(n, "off");
}

/// The same, with `access_log` at the `http {}` level set to `http_log`
/// (as Debian's nginx.conf sets it).
pub fn write_nginx_conf_logging(n: &Names, http_log: &str) {
    let d = n.dir.display();
    let conf = format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
         pid {d}/nginx.pid;\nerror_log {d}/error.log;\nworker_processes 1;\n\
         events {{ worker_connections 256; }}\n\
         include {d}/stream.conf;\n\
         http {{\n  access_log {http_log};\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           include {d}/http-extra*.conf;\n  include {d}/http.conf;\n}}\n"
    );
    std::fs::write(n.nginx_conf(), conf).unwrap();
}

/// Arguments for a daemon that touches nothing on the system (no namespace
/// directory, in-memory database, no usage socket: the default would bind
/// /run/gateway-usage.sock, a real gateway's on this host; no token unless
/// `extra` gives one). Only
/// these arguments count: no option is read from the caller's environment
/// (a live gateway's GATEWAY_DATABASE or GATEWAY_TOKEN, a GATEWAY_PORT), and
/// the port is given so ROCKET_PORT is not read either.
pub fn isolated_args(extra: &[&str]) -> Args {
    let mut argv = vec![
        "gateway",
        "--port=8000",
        "--address=127.0.0.1",
        "--wireguard-backend=userspace",
        "--netns-dir=/nonexistent",
        "--usage-socket=off",
    ];
    argv.extend(extra);
    Args::try_parse_args_only(argv).expect("test arguments")
}

/// Command-line arguments of the daemon under test.
pub fn args(n: &Names, extra: &[&str]) -> Args {
    Args::try_parse_args_only(arg_list(n, extra)).expect("test arguments")
}

/// The same arguments as text (the first is the program name), to start
/// the binary itself.
pub fn arg_list(n: &Names, extra: &[&str]) -> Vec<String> {
    // Only these arguments count (see `isolated_args`).
    let mut v: Vec<String> = ["gateway", "--token=test-token", "--address=127.0.0.1", "--wireguard-backend=userspace", "--apply-wait=60s"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend([
        "--port".into(),
        n.api_port().to_string(),
        "--database".into(),
        n.db().display().to_string(),
        "--namespace-prefix".into(),
        n.netns_prefix(),
        "--interface-prefix".into(),
        format!("{}w", n.prefix()),
        "--veth-prefix".into(),
        format!("{}v", n.prefix()),
        "--bridge".into(),
        n.bridge(),
        "--bridge-subnet".into(),
        n.bridge_subnet(),
        "--nginx-conf".into(),
        n.nginx_conf().display().to_string(),
        "--nginx-stream-config".into(),
        n.stream_file().display().to_string(),
        "--nginx-http-config".into(),
        n.http_file().display().to_string(),
        "--nginx-pid".into(),
        n.nginx_pid().display().to_string(),
        "--https-listen".into(),
        n.https_port().to_string(),
        "--http-listen".into(),
        n.http_port().to_string(),
        "--nginx-sni-socket".into(),
        n.dir.join("sni.sock").display().to_string(),
    ]);
    if !extra.iter().any(|e| e.starts_with("--watchdog")) {
        v.push("--watchdog=1h".into());
    }
    // Health checks only where a test asks for them (their events would mix
    // with what other tests wait for).
    if !extra.iter().any(|e| e.starts_with("--health-interval")) {
        v.push("--health-interval=0".into());
    }
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// The daemon in-process: the Rocket app on a local client, the reconciler
/// answering applies in a task, and drift checks run by the test on demand.
pub struct TestDaemon {
    pub client: Client,
    pub runner: Runner,
    /// None when the daemon's own loop (with its watchdog timer) runs.
    pub reconciler: Option<Arc<tokio::sync::Mutex<Reconciler>>>,
    pub shared: Arc<Shared>,
    /// Sees every pass recorded after the daemon was built.
    passes: tokio::sync::watch::Receiver<Option<gateway::store::ApplyRecord>>,
    /// Taken when stopped.
    task: Option<tokio::task::JoinHandle<()>>,
    /// The health check loop (returns at once with checks off).
    checks: Option<tokio::task::JoinHandle<()>>,
}

impl TestDaemon {
    /// Applies are answered by a task; drift checks run when the test asks.
    pub async fn start(args: &Args) -> TestDaemon {
        Self::start_inner(args, false).await
    }

    /// The daemon's own reconcile loop, with its watchdog timer.
    pub async fn start_with_watchdog(args: &Args) -> TestDaemon {
        Self::start_inner(args, true).await
    }

    async fn start_inner(args: &Args, own_loop: bool) -> TestDaemon {
        let runner = Runner::recording(Duration::from_secs(30));
        let Daemon { shared, usage, figment } = build(args, runner.clone()).await.expect("daemon starts");
        let passes = shared.passes();
        let rec = Reconciler::new(shared.clone()).await;
        let (reconciler, task) = if own_loop {
            (None, tokio::spawn(rec.run()))
        } else {
            let reconciler = Arc::new(tokio::sync::Mutex::new(rec));
            let (r, s) = (reconciler.clone(), shared.clone());
            let task = tokio::spawn(async move {
                let mut dry_runs = s.take_dry_runs();
                loop {
                    tokio::select! {
                        _ = s.woken() => {
                            r.lock().await.tick(Mode::Apply).await;
                        }
                        Some(request) = gateway::reconcile::next_dry_run(&mut dry_runs) => r.lock().await.answer_dry_run(request).await,
                    }
                }
            });
            (Some(reconciler), task)
        };
        let checks = Some(tokio::spawn(gateway::checks::run(shared.clone())));
        if let Some(socket) = usage {
            tokio::spawn(gateway::usage::socket::run(shared.clone(), socket));
        }
        let client = Client::untracked(gateway::api::rocket(shared.clone(), figment)).await.expect("rocket");
        TestDaemon { client, runner, reconciler, shared, passes, task: Some(task), checks }
    }

    /// Waits for the next pass to be recorded (the first one: since the
    /// daemon was built) and returns its record.
    pub async fn next_pass(&mut self, limit: Duration) -> gateway::store::ApplyRecord {
        match tokio::time::timeout(limit, self.passes.changed()).await {
            Ok(Ok(())) => self.passes.borrow_and_update().clone().expect("a recorded pass"),
            _ => panic!("no pass recorded within {limit:?}"),
        }
    }

    pub async fn drift_check(&self) -> Option<gateway::reconcile::PassOutcome> {
        self.reconciler.as_ref().expect("drift checks on demand need TestDaemon::start").lock().await.tick(Mode::Drift).await
    }

    /// A drift check that must run and succeed.
    pub async fn drift_ok(&self) -> gateway::reconcile::PassOutcome {
        let outcome = self.drift_check().await.expect("a pass runs once a config was accepted");
        assert!(outcome.record.ok, "drift check failed: {:?}", outcome.record.errors);
        outcome
    }

    pub async fn post(&self, body: &serde_json::Value) -> (u16, serde_json::Value) {
        self.send(rocket::http::Method::Post, "/api/v1/config.json", Some(body)).await
    }

    pub async fn patch(&self, body: &serde_json::Value) -> (u16, serde_json::Value) {
        self.send(rocket::http::Method::Patch, "/api/v1/config.json", Some(body)).await
    }

    /// A request with a JSON body to any path (e.g. with a query).
    pub async fn send_to(&self, method: rocket::http::Method, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        self.send(method, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(rocket::http::Method::Get, path, None).await
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self.client.get(path.to_string()).header(rocket::http::Header::new("Authorization", "Bearer test-token")).dispatch().await;
        (r.status().code, r.into_string().await.unwrap_or_default())
    }

    async fn send(&self, method: rocket::http::Method, path: &str, body: Option<&serde_json::Value>) -> (u16, serde_json::Value) {
        let mut req = self.client.req(method, path.to_string()).header(rocket::http::Header::new("Token", "test-token"));
        if let Some(b) = body {
            req = req.header(rocket::http::ContentType::JSON).body(b.to_string());
        }
        let r = req.dispatch().await;
        let status = r.status().code;
        let text = r.into_string().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
    }

    pub async fn stop(mut self) {
        if let Some(checks) = self.checks.take() {
            checks.abort();
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.shared.store().pool.close().await;
    }
}

/// A test that panics must not leave the reconciler running while its guard
/// cleans up (it would put namespaces back): stop it, and wait until it has
/// stopped, first. Fields drop after this, and the test's `Guard` (declared
/// earlier) after that. Never panics.
impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(checks) = self.checks.take() {
            checks.abort();
        }
        let Some(task) = self.task.take() else { return };
        task.abort();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
                let _ = tokio::task::block_in_place(|| handle.block_on(task));
            }
        }
    }
}

/// A node: its own namespace with a link to the root namespace, wireguard-go,
/// and the HTTPS/HTTP servers, with a self-signed certificate for `host`.
pub struct Node {
    pub private: String,
    pub public: String,
    pub listen_port: u16,
    pub cert: PathBuf,
}

pub fn start_node(n: &Names, host: &str, gateway_public: &str, gateway_port: u16) -> Node {
    let (ns, k, d) = (n.node_ns(), n.prefix(), n.dir.display().to_string());
    let (private, public) = genkey();
    let listen_port = 51900;
    sh(&format!(
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout {d}/node.key -out {d}/node.crt -days 1 \
         -subj /CN={host} -addext subjectAltName=DNS:{host},DNS:pp.{host} 2>/dev/null"
    ));
    sh(&format!("ip netns add {ns} && ip -n {ns} link set lo up"));
    sh(&format!("ip link add {k}nh type veth peer name eth0 netns {ns}"));
    sh(&format!("ip addr add {}/30 dev {k}nh && ip link set {k}nh up", n.node_gw_ip()));
    sh(&format!("ip -n {ns} addr add {}/30 dev eth0 && ip -n {ns} link set eth0 up", n.node_ip()));
    sh(&format!("ip netns exec {ns} wireguard-go {k}nwg >/dev/null 2>&1"));
    std::fs::write(n.dir.join("node.wgkey"), &private).unwrap();
    sh(&format!(
        "ip netns exec {ns} wg set {k}nwg private-key {d}/node.wgkey listen-port {listen_port} \
         peer {gateway_public} endpoint {}:{gateway_port} allowed-ips 10.80.0.0/16 persistent-keepalive 5",
        n.node_gw_ip()
    ));
    sh(&format!("ip -n {ns} addr add 10.80.0.2/16 dev {k}nwg && ip -n {ns} link set {k}nwg up"));
    // A "LAN" behind the node, reachable only through a route the gateway adds.
    sh(&format!("ip -n {ns} addr add 192.168.50.1/24 dev {k}nwg"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/node_server.py");
    sh(&format!("ip netns exec {ns} python3 {script} {d}/node.crt {d}/node.key > {d}/node-server.log 2>&1 &"));
    let log = n.dir.join("node-server.log");
    let start = Instant::now();
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("ready") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "node server did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Node { private, public, listen_port, cert: n.dir.join("node.crt") }
}

/// An address of the gateway host that is neither loopback nor in a
/// network's bridge subnet, on a veth pair of the test's own in the root
/// namespace: a peer endpoint (loopback ones are refused) whose WireGuard
/// packets stay on this machine. Made once per test; removed by cleanup.
pub fn local_endpoint_ip(n: &Names) -> String {
    let (k, ip) = (n.prefix(), format!("{}.9", n.link_net()));
    if !std::path::Path::new(&format!("/sys/class/net/{k}ea")).exists() {
        sh(&format!("ip link add {k}ea type veth peer name {k}eb && ip addr add {ip}/32 dev {k}ea"));
        sh(&format!("ip link set {k}ea up && ip link set {k}eb up"));
    }
    ip
}

/// A client namespace that reaches the gateway host on `client_gw_ip`.
pub fn start_client(n: &Names) {
    let (ns, k) = (n.client_ns(), n.prefix());
    sh(&format!("ip netns add {ns} && ip -n {ns} link set lo up"));
    sh(&format!("ip link add {k}ch type veth peer name eth0 netns {ns}"));
    sh(&format!("ip addr add {}/30 dev {k}ch && ip link set {k}ch up", n.client_gw_ip()));
    sh(&format!("ip -n {ns} addr add {}/30 dev eth0 && ip -n {ns} link set eth0 up", n.client_ip()));
}

/// curl from the client namespace; returns (exit ok, stdout).
pub fn client_curl(n: &Names, args: &str) -> (bool, String) {
    let out =
        Command::new("sh").arg("-c").arg(format!("ip netns exec {} curl -sS --max-time 20 {args}", n.client_ns())).output().expect("curl");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// What is left on the system for network `port` of this test.
pub fn leftovers(n: &Names, port: u16) -> Vec<String> {
    let mut left = Vec::new();
    if sh("ip netns list").lines().any(|l| l.split_whitespace().next() == Some(n.netns(port).as_str())) {
        left.push(format!("namespace {}", n.netns(port)));
    }
    if std::path::Path::new(&format!("/sys/class/net/{}", n.wg(port))).exists() {
        left.push(format!("interface {} in the root namespace", n.wg(port)));
    }
    if std::path::Path::new(&format!("/var/run/wireguard/{}.sock", n.wg(port))).exists() {
        left.push(format!("wireguard-go socket of {}", n.wg(port)));
    }
    if !wireguard_go_pids(&n.wg(port)).is_empty() {
        left.push(format!("wireguard-go process for {}", n.wg(port)));
    }
    left
}

/// The wireguard-go processes serving `iface`, whatever path started them
/// (the daemon runs it by its absolute path).
pub fn wireguard_go_pids(iface: &str) -> Vec<u32> {
    let out = Command::new("pgrep").args(["-f", &format!("^(/\\S*/)?wireguard-go {iface}$")]).output().expect("pgrep");
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// The PromQL expressions of the Grafana dashboard in packaging/.
pub fn dashboard_queries() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/grafana/gateway-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("the dashboard is valid JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    panels
        .iter()
        .flat_map(|p| p["targets"].as_array().expect("targets").iter().map(|t| t["expr"].as_str().expect("expr").to_string()))
        .collect()
}

/// Metric names a PromQL expression uses (`gateway_...`).
pub fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("gateway_") {
        let name: String = rest[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        rest = &rest[i + name.len()..];
        out.push(name);
    }
    out
}

/// An event stream client on the daemon's `GET /api/v1/events`.
pub struct Sse<'c> {
    response: rocket::local::asynchronous::LocalResponse<'c>,
    buffer: String,
    /// When the stream last sent something (an event or a keep-alive comment).
    last_sent: Instant,
    /// The longest silence of the stream so far.
    pub longest_silence: Duration,
    /// Keep-alive comments received.
    pub comments: usize,
}

/// One event: id, name, data.
pub type SseEvent = (u64, String, serde_json::Value);

impl<'c> Sse<'c> {
    pub async fn open(d: &'c TestDaemon) -> Sse<'c> {
        let response = d.client.get("/api/v1/events").header(rocket::http::Header::new("Token", "test-token")).dispatch().await;
        assert_eq!(response.status().code, 200);
        assert_eq!(response.content_type(), Some(rocket::http::ContentType::EventStream));
        Sse { response, buffer: String::new(), last_sent: Instant::now(), longest_silence: Duration::ZERO, comments: 0 }
    }

    /// The next event (comments skipped), or None when the stream ends or `limit` passes.
    pub async fn next(&mut self, limit: Duration) -> Option<SseEvent> {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string());
                self.comments += block.lines().filter(|l| l.starts_with(':')).count();
                if let (Some(id), Some(name), Some(data)) = (field("id:"), field("event:"), field("data:")) {
                    return Some((id.parse().expect("numeric id"), name, serde_json::from_str(&data).expect("JSON data")));
                }
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.response.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => {
                    self.longest_silence = self.longest_silence.max(self.last_sent.elapsed());
                    self.last_sent = Instant::now();
                    self.buffer.push_str(&String::from_utf8_lossy(&chunk[..n]))
                }
                _ => return None,
            }
        }
    }

    /// Waits for an event `name` whose data satisfies `cond`, asking for
    /// status.json meanwhile (its reads are what notice handshakes);
    /// returns it and the events skipped before it.
    pub async fn wait(
        &mut self,
        d: &TestDaemon,
        name: &str,
        limit: Duration,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) -> (serde_json::Value, Vec<SseEvent>) {
        let start = Instant::now();
        let mut skipped = Vec::new();
        while start.elapsed() < limit {
            match self.next(Duration::from_millis(300)).await {
                Some((_, n, data)) if n == name && cond(&data) => return (data, skipped),
                Some(other) => skipped.push(other),
                None => {
                    let _ = d.get("/api/v1/status.json").await;
                }
            }
        }
        panic!("no {name} event within {limit:?}; got {skipped:?}");
    }
}

/// Removes everything test `n` made when it drops, also when the test fails.
pub struct Guard(pub Names);
impl Drop for Guard {
    fn drop(&mut self) {
        self.0.cleanup();
    }
}

/// A private nginx, a node serving `app.test` (and `pp.app.test`) through a
/// tunnel to the gateway's network `n.port(0)`, and a client; everything
/// goes when it drops.
/// A distinct 32-byte key (any 32 bytes are a valid WireGuard key).
pub fn test_key(k: u8, network: u16, peer: u16) -> String {
    use base64::Engine;
    let mut b = [7u8; 32];
    b[0] = k;
    b[1..3].copy_from_slice(&network.to_be_bytes());
    b[3..5].copy_from_slice(&peer.to_be_bytes());
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The gateway's network of a [`NodeTopology`]: the node as its one peer
/// (reachable at its address), with `proxy`.
pub fn topology_network(t: &NodeTopology, proxy: serde_json::Value) -> serde_json::Value {
    let peer = serde_json::json!({ "allowed_ips": ["10.80.0.2/32"], "endpoint": format!("{}:{}", t.n.node_ip(), t.node.listen_port) });
    serde_json::json!({ "private_key": t.gw_private, "address": ["10.80.0.1/16"], "peers": { &t.node.public: peer }, "proxy": proxy })
}

pub struct NodeTopology {
    pub n: Names,
    pub gw_private: String,
    pub gw_public: String,
    pub port: u16,
    pub node: Node,
    pub _guard: Guard,
}

pub fn node_topology(k: u8) -> NodeTopology {
    require_root();
    let n = names(k);
    let _guard = Guard(n.clone());
    write_nginx_conf(&n);
    let (gw_private, gw_public) = genkey();
    let port = n.port(0);
    let node = start_node(&n, "app.test", &gw_public, port);
    start_client(&n);
    NodeTopology { n, gw_private, gw_public, port, node, _guard }
}

/// The gateway binary of this build.
pub const BIN: &str = env!("CARGO_BIN_EXE_gateway");

/// The binary with exactly `env` as its environment (and PATH): nothing of
/// the caller's (a live gateway's GATEWAY_TOKEN or GATEWAY_DATABASE).
pub fn gateway(args: &[String], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).envs(env.iter().copied());
    cmd
}

/// The binary run to its end (it must end within 20 s): exit status, stdout, stderr.
pub fn run_to_end(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let mut argv = vec!["20", BIN];
    argv.extend(args);
    let out = Command::new("timeout").args(&argv).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).output().unwrap();
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The daemon as a process, its output (both streams) in a log file;
/// killed if the test ends while it runs.
pub struct Process {
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl Process {
    /// Starts `command` (e.g. [`gateway`]) with its output appended to `log`.
    pub fn spawn(mut command: Command, log: PathBuf) -> Process {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child =
            command.stdout(out.try_clone().unwrap()).stderr(out).stdin(std::process::Stdio::null()).spawn().expect("gateway starts");
        Process { child, log }
    }

    /// Starts the binary with `args` and exactly `env` (see [`gateway`]).
    pub fn start(args: &[String], env: &[(&str, &str)], log: PathBuf) -> Process {
        Process::spawn(gateway(args, env), log)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (20 s at most) until `/health` answers on loopback's `port`.
    pub fn wait_healthy(&mut self, port: u16) {
        self.wait_until_healthy(|| sh_ok(&format!("curl -sf http://127.0.0.1:{port}/health")));
    }

    /// Waits (20 s at most) until `healthy`; fails at once if the daemon exited.
    pub fn wait_until_healthy(&mut self, healthy: impl Fn() -> bool) {
        let start = Instant::now();
        while !healthy() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the daemon exited ({status}): {}", self.log());
            }
            assert!(start.elapsed() < Duration::from_secs(20), "the API did not come up: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our child's pid has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, signal) }, 0);
    }

    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < limit, "the daemon did not exit within {limit:?}: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and the exit that follows must be a success.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(Duration::from_secs(40));
        assert!(status.success(), "stopping: {status}: {}", self.log());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
