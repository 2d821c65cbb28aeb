//! `--log-format json`: every line the daemon prints is one JSON object with
//! a timestamp, a level, a message and the event's fields.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn json_logs_parse_line_by_line() {
    let port = free_port().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--log-format", "json", "--database=", "--token=", "--custom-forwarding=", "--address=127.0.0.1", "--port", &port])
        .args(["--wireguard-backend=userspace", "--netns-dir=/nonexistent", "--watchdog=1h", "--usage-socket=off"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let start = Instant::now();
    while !lines.iter().any(|l: &String| l.contains("serving the API")) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => lines.push(line),
            Err(_) => assert!(start.elapsed() < Duration::from_secs(20), "no start-up line within 20 s: {lines:?}"),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(lines.len() >= 2, "{lines:?}");
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["timestamp", "level", "message"] {
            assert!(v[key].is_string(), "{key} missing in {line}");
        }
    }
    let warn = lines.iter().find(|l| l.contains("no --database")).expect("the in-memory warning");
    assert!(warn.contains("\"level\":\"WARN\""), "{warn}");
    let serving: serde_json::Value = serde_json::from_str(lines.iter().find(|l| l.contains("serving the API")).unwrap()).unwrap();
    assert_eq!(serving["backend"], "userspace", "structured fields are fields: {serving}");
    assert_eq!(serving["port"].to_string(), port, "{serving}");
}
