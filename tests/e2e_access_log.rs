//! Where the gateway's own nginx servers log (`--nginx-access-log`), with a
//! real nginx whose nginx.conf has an `http {}`-level access_log, as
//! Debian's has (/var/log/nginx/access.log): by default nothing of the
//! tenants' requests lands there nor anywhere; with a path, every HTTP
//! request and stream session of the gateway's servers lands in that file,
//! and still nothing in nginx.conf's. Needs root; test index 1.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// An HTTP request to the gateway's nginx with `host`: its status (000: closed without an answer).
fn http_get(n: &Names, host: &str) -> String {
    sh(&format!("curl -s -o /dev/null -m 10 -w '%{{http_code}}' -H 'Host: {host}' http://127.0.0.1:{}/ || true", n.http_port()))
}

/// A TLS connection by SNI `host` to the gateway's HTTPS port (closed: nobody serves it).
fn https_sni(n: &Names, host: &str) {
    sh_ok(&format!("curl -sk -m 10 --resolve {host}:{p}:127.0.0.1 https://{host}:{p}/", p = n.https_port()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn the_gateway_logs_to_its_own_file_or_not_at_all() {
    require_root();
    let n = names(1);
    let _guard = Guard(n.clone());
    write_nginx_conf_logging(&n, &n.dir.join("debian-access.log").display().to_string());
    let (private, _) = genkey();
    let port = n.port(0);
    // The route's upstream is an address of the network itself where
    // nothing listens: nginx answers 502 at once.
    let cfg = json!({ port.to_string(): {
        "private_key": private, "address": ["10.80.0.1/24"],
        "proxy": { "http://app.test": ["10.80.0.1:9"], "https://tls.test": ["10.80.0.1:9"] }
    }});
    let global = n.dir.join("debian-access.log");
    let own = n.dir.join("gateway-access.log");

    // The default: off.
    let d = TestDaemon::start(&args(&n, &[])).await;
    let (code, body) = d.post(&cfg).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(http_get(&n, "app.test"), "502");
    assert_eq!(http_get(&n, "nobody.test"), "000", "the catch-all closes the connection");
    https_sni(&n, "nobody.test");
    assert_eq!(read(&global), "", "no tenant's request in nginx.conf's own access log");
    let http = read(&n.http_file());
    // No log file of its own: every access_log is off or the daemon's usage
    // socket (per-route usage, issue 19), and the file format is not defined.
    let to_a_file = |l: &&str| l.contains("access_log ") && !l.contains("access_log off;") && !l.contains("access_log syslog:server=unix:");
    assert!(
        http.contains("access_log off;") && !http.lines().any(|l| to_a_file(&l)) && !http.contains("log_format gateway_http "),
        "{http}"
    );
    d.stop().await;

    // A file of its own.
    let arg = format!("--nginx-access-log={}", own.display());
    let d = TestDaemon::start(&args(&n, &[&arg])).await;
    let (code, body) = d.post(&cfg).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(http_get(&n, "app.test"), "502");
    assert_eq!(http_get(&n, "nobody.test"), "000");
    https_sni(&n, "nobody.test");
    let mut lines = String::new();
    wait_until("three lines in the gateway's log", Duration::from_secs(10), || {
        lines = read(&own);
        lines.lines().count() >= 3
    })
    .await;
    assert!(lines.lines().any(|l| l.contains(r#"http "app.test" "GET / HTTP/1.1" 502"#)), "{lines}");
    assert!(lines.lines().any(|l| l.contains(r#"http "nobody.test" "GET / HTTP/1.1" 444"#)), "{lines}");
    let https = format!(r#"stream TCP:{} "nobody.test""#, n.https_port());
    assert!(lines.lines().any(|l| l.contains(&https)), "the SNI session, with its name: {lines}");
    assert_eq!(read(&global), "", "still nothing in nginx.conf's own access log");
    d.stop().await;
}
