//! The API's own security, against the binary itself: tokens rotated
//! through a token file and SIGHUP with no restart, failed authentication
//! logged, idle sockets closed and capped, TLS with and without client
//! certificates (made with openssl here). Needs no root.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Process;

/// The daemon as a process (tests/common's), touching nothing on the
/// system; killed when the test ends.
struct Daemon {
    process: Process,
    port: u16,
    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT` with TLS.
    base: String,
    /// What curl needs for TLS (the CA, a client certificate).
    tls: Vec<String>,
}

impl Daemon {
    fn start(dir: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_with(dir, "127.0.0.1", extra, None)
    }

    /// `tls`: the scheme is https and curl gets these options.
    fn start_with(dir: &Path, address: &str, extra: &[&str], tls: Option<Vec<String>>) -> Daemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = dir.join(format!("daemon-{port}.log"));
        // No usage socket: the default is a real gateway's, under /run.
        let mut args: Vec<String> =
            ["--address", address, "--wireguard-backend=userspace", "--netns-dir=/nonexistent", "--usage-socket=off", "--port"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        args.push(port.to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        let process = Process::start(&args, &[], log);
        let base = match tls {
            Some(_) => format!("https://localhost:{port}"),
            None => format!("http://127.0.0.1:{port}"),
        };
        let mut d = Daemon { process, port, base, tls: tls.unwrap_or_default() };
        let (tls, health) = (d.tls.clone(), d.url("/health"));
        d.process.wait_until_healthy(|| {
            let mut all: Vec<&str> = tls.iter().map(String::as_str).collect();
            all.push(&health);
            curl(&all).0 == "200"
        });
        d
    }

    fn log(&self) -> String {
        self.process.log()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// curl with the daemon's TLS options.
    fn curl(&self, args: &[&str]) -> (String, String) {
        let mut all: Vec<&str> = self.tls.iter().map(String::as_str).collect();
        all.extend(args);
        curl(&all)
    }

    fn signal(&self, signal: i32) {
        self.process.signal(signal);
    }

    /// The status code of GET `path` with `Token: token`.
    fn get(&self, path: &str, token: &str) -> String {
        self.curl(&["-H", &format!("Token: {token}"), &self.url(path)]).0
    }

    /// Waits until the log holds `needle` `times` times.
    fn wait_log(&self, needle: &str, times: usize) {
        let start = Instant::now();
        while self.log().matches(needle).count() < times {
            assert!(start.elapsed() < Duration::from_secs(10), "{needle:?} x{times} not in the log: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// curl with `args`: the status code and the body.
fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl").args(["-s", "-m", "10", "-w", "\n%{http_code}"]).args(args).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (code.to_string(), body.to_string())
}

fn write_secret(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A token is rotated without lockout and without a restart: the file gets
/// the new token beside the old one (both work after SIGHUP), then loses
/// the old one (refused after the next SIGHUP). A file made unusable keeps
/// the tokens in force. Read tokens rotate the same way.
#[test]
fn tokens_rotate_through_the_file_and_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, read) = (dir.path().join("admin"), dir.path().join("read"));
    write_secret(&admin, "old-admin\n");
    write_secret(&read, "old-read\n");
    let d = Daemon::start(dir.path(), &["--token-file", admin.to_str().unwrap(), "--read-token-file", read.to_str().unwrap()]);
    let pid = d.process.child.id();
    assert_eq!((d.get("/api/v1/config.json", "old-admin"), d.get("/metrics", "old-read")), ("200".into(), "200".into()));
    assert_eq!(d.get("/api/v1/config.json", "new-admin"), "401", "not yet");

    write_secret(&admin, "old-admin\nnew-admin\n");
    write_secret(&read, "old-read\nnew-read\n");
    d.signal(libc::SIGHUP);
    d.wait_log("API tokens read again", 1);
    for token in ["old-admin", "new-admin"] {
        assert_eq!(d.get("/api/v1/config.json", token), "200", "{token} during the rotation");
    }
    for token in ["old-read", "new-read"] {
        assert_eq!((d.get("/metrics", token), d.get("/api/v1/config.json", token)), ("200".into(), "403".into()), "{token}");
    }

    write_secret(&admin, "new-admin\n");
    write_secret(&read, "new-read\n");
    d.signal(libc::SIGHUP);
    d.wait_log("API tokens read again", 2);
    assert_eq!(d.get("/api/v1/config.json", "old-admin"), "401", "the old admin token is gone");
    assert_eq!(d.get("/metrics", "old-read"), "401", "the old read token is gone");
    assert_eq!((d.get("/api/v1/config.json", "new-admin"), d.get("/metrics", "new-read")), ("200".into(), "200".into()));

    // An empty or exposed file would open the API or lock everyone out: kept.
    write_secret(&admin, "\n");
    d.signal(libc::SIGHUP);
    d.wait_log("the previous ones stay in force", 1);
    assert_eq!((d.get("/api/v1/config.json", "new-admin"), d.get("/api/v1/config.json", "")), ("200".into(), "401".into()));
    assert_eq!(d.process.child.id(), pid, "no restart");
    assert!(!d.log().contains("new-admin") && !d.log().contains("old-read"), "no token in the log: {}", d.log());
}

/// A failed authentication is logged with the client's address and never
/// the presented token, at most one line per 10 s (a flood of bad tokens
/// does not flood the log), and counted by reason in /metrics.
#[test]
fn auth_failures_are_logged_rate_limited_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &["--token", "s3cret-admin", "--read-token", "s3cret-read"]);
    for i in 0..5 {
        assert_eq!(d.get("/api/v1/status.json", &format!("guess-{i}")), "401");
    }
    assert_eq!(d.get("/api/v1/config.json", "s3cret-read"), "403");
    d.wait_log("API authentication failed", 1);
    std::thread::sleep(Duration::from_millis(300));
    let log = d.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("API authentication failed")).collect();
    assert_eq!(lines.len(), 1, "one line for six failures within 10 s: {log}");
    assert!(lines[0].contains("127.0.0.1") && lines[0].contains("invalid"), "the client's address and the reason: {}", lines[0]);
    assert!(!log.contains("guess-") && !log.contains("s3cret"), "no presented token in the log: {log}");
    let (_, metrics) = curl(&["-H", "Token: s3cret-read", &d.url("/metrics")]);
    for (reason, n) in [("invalid", 5), ("forbidden", 1), ("missing", 0)] {
        let line = format!("gateway_api_auth_failures_total{{reason=\"{reason}\"}} {n}\n");
        assert!(metrics.contains(&line), "{line:?} not in {metrics}");
    }
}

/// Whether the server closed `s`: a read sees the end (or a reset).
fn closed(s: &std::net::TcpStream) -> bool {
    use std::io::Read;
    s.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let mut reader = s;
    match reader.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// /health answered (by a fresh connection), and how long it took.
fn health_time(d: &Daemon) -> Duration {
    let start = Instant::now();
    let (code, body) = d.curl(&[&d.url("/health")]);
    assert_eq!(code, "200", "{body}: {}", d.log());
    start.elapsed()
}

/// 500 sockets that send nothing (and one that sends half a request head)
/// neither slow the API down nor stay open past --api-timeout.
#[test]
fn idle_sockets_do_not_block_the_api_and_are_closed_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &["--token", "t", "--api-timeout", "4s"]);
    let opened = Instant::now();
    let idle: Vec<std::net::TcpStream> = (0..500).map(|_| std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap()).collect();
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    let all_open = Instant::now();
    std::io::Write::write_all(&mut slow, b"GET /api/v1/status.json HTTP/1.1\r\nHost: localhost\r\n").unwrap();
    let slowest = (0..5).map(|_| health_time(&d)).max().unwrap();
    assert!(slowest < Duration::from_secs(1), "/health took {slowest:?} with 501 idle sockets open");
    assert!(opened.elapsed() < Duration::from_millis(3800), "the check ran before the timeout: {:?}", opened.elapsed());
    assert!(idle.iter().all(|s| !closed(s)), "open before the timeout");
    std::thread::sleep(Duration::from_millis(5500).saturating_sub(all_open.elapsed()));
    let open = idle.iter().filter(|s| !closed(s)).count();
    assert_eq!(open, 0, "{open} of 500 idle sockets still open 5.5 s after the last was opened (--api-timeout 4s)");
    assert!(closed(&slow), "a request head still incomplete after the timeout is closed");
    assert!(health_time(&d) < Duration::from_secs(1));
}

/// --api-max-connections: one more connection than the cap is closed at
/// once; once the others are gone the API answers again.
#[test]
fn connections_beyond_the_cap_are_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &["--token", "t", "--api-max-connections", "3"]);
    // The start's health probe may still be counted for a moment, and a
    // held connection made then is closed as one too many: such a one is
    // made again, until the three stay open (the cap is then full of them).
    let connect = || std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    let mut held: Vec<std::net::TcpStream> = (0..3).map(|_| connect()).collect();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(200));
        let before = held.len();
        held.retain(|s| !closed(s));
        if held.len() == before {
            break;
        }
        held.extend((held.len()..3).map(|_| connect()));
    }
    assert_eq!(held.len(), 3, "three connections held open under a cap of 3");
    held.iter().for_each(|s| s.set_nonblocking(false).unwrap());
    let mut extra = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 1];
    let read = std::io::Read::read(&mut extra, &mut buf);
    assert!(matches!(read, Ok(0)) || read.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset), "{read:?}");
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert!(health_time(&d) < Duration::from_secs(1));
}

/// Runs a shell command in `dir`; panics with its output if it fails.
fn sh_in(dir: &Path, cmd: &str) {
    let out = Command::new("sh").arg("-c").arg(cmd).current_dir(dir).output().expect("sh");
    assert!(out.status.success(), "`{cmd}`: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`NAME-ca.pem`) and a certificate it signed (`CERT.pem`, `CERT.key`).
fn make_certs(dir: &Path, ca: &str, cert: &str, cn: &str) {
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    if !dir.join(format!("{ca}-ca.pem")).exists() {
        sh_in(dir, &format!("openssl req -x509 {ec} -keyout {ca}-ca.key -out {ca}-ca.pem -days 2 -subj /CN={ca}-ca"));
    }
    sh_in(dir, &format!("openssl req {ec} -keyout {cert}.key -out {cert}.csr -subj /CN={cn}"));
    sh_in(dir, &format!("printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > {cert}.ext"));
    sh_in(
        dir,
        &format!(
            "openssl x509 -req -in {cert}.csr -CA {ca}-ca.pem -CAkey {ca}-ca.key -CAcreateserial -out {cert}.pem -days 2 -extfile {cert}.ext"
        ),
    );
    std::fs::set_permissions(dir.join(format!("{cert}.key")), std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// TLS with client certificates: a client with a certificate of the CA
/// given to --api-client-ca gets its answer; one without a certificate, with
/// one of another CA, or speaking plain HTTP gets none. Without
/// --api-client-ca TLS needs no client certificate. A socket beyond
/// loopback without TLS logs one warning; with TLS none.
#[test]
fn tls_with_and_without_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    make_certs(dir.path(), "test", "server", "localhost");
    make_certs(dir.path(), "test", "client", "orchestrator");
    make_certs(dir.path(), "other", "stranger", "orchestrator");
    let (ca, server, server_key) = (p("test-ca.pem"), p("server.pem"), p("server.key"));
    let with_cert = vec!["--cacert".into(), ca.clone(), "--cert".into(), p("client.pem"), "--key".into(), p("client.key")];
    let tls = ["--token", "t", "--api-tls-cert", &server, "--api-tls-key", &server_key];
    let mut mutual = tls.to_vec();
    mutual.extend(["--api-client-ca", &ca]);
    let d = Daemon::start_with(dir.path(), "127.0.0.1", &mutual, Some(with_cert));
    assert_eq!(d.get("/api/v1/status.json", "t"), "200", "with the client certificate");
    let status = d.url("/api/v1/status.json");
    let without = curl(&["--cacert", &ca, "-H", "Token: t", &status]);
    assert_eq!(without.0, "000", "no client certificate, no answer: {without:?}");
    let stranger = curl(&["--cacert", &ca, "--cert", &p("stranger.pem"), "--key", &p("stranger.key"), "-H", "Token: t", &status]);
    assert_eq!(stranger.0, "000", "a certificate of another CA, no answer: {stranger:?}");
    let plain = curl(&["-H", "Token: t", &format!("http://127.0.0.1:{}/api/v1/status.json", d.port)]);
    assert_eq!(plain.0, "000", "plain HTTP, no answer: {plain:?}");
    assert!(!d.log().contains("without TLS"), "{}", d.log());

    let d = Daemon::start_with(dir.path(), "0.0.0.0", &tls, Some(vec!["--cacert".into(), ca.clone()]));
    assert_eq!(d.get("/api/v1/status.json", "t"), "200", "TLS alone needs no client certificate");
    assert!(!d.log().contains("without TLS"), "{}", d.log());
    let d = Daemon::start_with(dir.path(), "0.0.0.0", &["--token", "t"], None);
    assert_eq!(d.log().matches("the API listens beyond loopback without TLS").count(), 1, "{}", d.log());
}

/// Rocket listens on a private loopback port behind the gate; a request
/// sent there directly (skipping TLS, the timeouts and the cap) is refused.
#[test]
fn the_private_port_behind_the_gate_answers_nothing_but_health() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &["--token", "t"]);
    let out = Command::new("ss").args(["-Hltnp"]).output().expect("ss");
    let text = String::from_utf8_lossy(&out.stdout);
    let pid = format!("pid={},", d.process.child.id());
    let ports: Vec<u16> = text
        .lines()
        .filter(|l| l.contains(&pid))
        .filter_map(|l| l.split_whitespace().nth(3)?.rsplit_once(':')?.1.parse().ok())
        .filter(|p| *p != d.port)
        .collect();
    assert_eq!(ports.len(), 1, "one private port besides {}: {text}", d.port);
    let private = format!("http://127.0.0.1:{}", ports[0]);
    let (code, body) = curl(&["-H", "Token: t", &format!("{private}/api/v1/status.json")]);
    assert_eq!(code, "421", "{body}");
    assert!(body.contains("misdirected_request"), "{body}");
    assert_eq!(d.get("/api/v1/status.json", "t"), "200", "through the gate");
}
