//! The API's own security, against the binary itself: tokens rotated
//! through a token file and SIGHUP with no restart. Needs no root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

/// The daemon as a process, touching nothing on the system; killed when
/// the test ends.
struct Daemon {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Daemon {
    fn start(dir: &Path, extra: &[&str]) -> Daemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = dir.join(format!("daemon-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(["--address=127.0.0.1", "--wireguard-backend=userspace", "--netns-dir=/nonexistent", "--port", &port.to_string()])
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("gateway starts");
        let mut d = Daemon { child, log, port };
        d.wait_healthy();
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_healthy(&mut self) {
        let start = Instant::now();
        while curl(&["-sf", &self.url("/health")]).0 != "200" {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the daemon exited ({status}): {}", self.log());
            }
            assert!(start.elapsed() < Duration::from_secs(20), "the API did not come up: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our child's pid has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, signal) }, 0);
    }

    /// The status code of GET `path` with `Token: token`.
    fn get(&self, path: &str, token: &str) -> String {
        curl(&["-H", &format!("Token: {token}"), &self.url(path)]).0
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

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let pid = d.child.id();
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
    assert_eq!(d.child.id(), pid, "no restart");
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
