//! End-to-end tests of per-route access control and connection limits on
//! the real system (root): nginx refuses clients by address (`allow`,
//! `deny`) and counts concurrent connections (`max_connections`,
//! `max_connections_per_client`) on `https://` (the shared SNI listener),
//! `http://`, `tcp://` and `udp://` routes, while the other routes of the
//! same listener serve everyone. Clients come from 127.0.0.2 and 127.0.0.3
//! (the whole of 127.0.0.0/8 is local) to nginx's listeners on 127.0.0.1.
//! A test binary of its own: its process takes a slot of its own.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn network(t: &NodeTopology, proxy: Value) -> Value {
    json!({ t.port.to_string(): topology_network(t, proxy) })
}

/// Holds client connections open from chosen source addresses, one
/// command a line (`open ID KIND SRC PORT [NAME]`, `close ID`), and says
/// what each became:
/// - `ok ...`: it reached the node (TLS: handshake and a request answered
///   by the node; TCP: the node's echo; UDP: the node's echo);
/// - `closed ...`: nginx closed it (or, UDP, no answer came);
/// - `held`: an HTTP request (its body never sent) is being handled;
/// - `status CODE`: nginx or the node answered that HTTP status.
const CLIENTS: &str = r#"
import socket, ssl, sys
conns = {}
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE

def tls(src, port, name):
    s = socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(src, 0))
    t = ctx.wrap_socket(s, server_hostname=name)
    t.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
    got = b""
    while b"\r\n\r\n" not in got or not got.split(b"\r\n\r\n", 1)[1].endswith(b"\n"):
        chunk = t.recv(4096)
        if not chunk:
            raise OSError("closed before an answer")
        got += chunk
    return t, "ok " + got.split(b"\r\n\r\n", 1)[1].decode(errors="replace").split("\n")[0]

def tcp(src, port, name):
    s = socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(src, 0))
    s.sendall(b"ping")
    got = b""
    while len(got) < 4:
        chunk = s.recv(4)
        if not chunk:
            raise OSError("closed")
        got += chunk
    return s, "ok " + got.decode(errors="replace")

def udp(src, port, name):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    s.settimeout(3)
    s.sendto(b"ping", ("127.0.0.1", port))
    try:
        return s, "ok " + s.recv(64).decode(errors="replace")
    except socket.timeout:
        return s, "closed no answer"

def http(src, port, name):
    s = socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(src, 0))
    s.sendall(f"POST / HTTP/1.1\r\nHost: {name}\r\nContent-Length: 10\r\n\r\n".encode())
    s.settimeout(1.5)
    try:
        head = s.recv(4096)
    except socket.timeout:
        return s, "held"
    if not head:
        return s, "closed"
    return s, "status " + head.split(b" ")[1].decode()

for line in sys.stdin:
    words = line.split()
    if words[0] == "open":
        cid, kind, src, port = words[1], words[2], words[3], int(words[4])
        name = words[5] if len(words) > 5 else ""
        try:
            conns[cid], said = {"tls": tls, "tcp": tcp, "udp": udp, "http": http}[kind](src, port, name)
        except (OSError, ssl.SSLError) as e:
            said = f"closed {type(e).__name__}"
        print(said, flush=True)
    elif words[0] == "close":
        c = conns.pop(words[1], None)
        if c:
            c.close()
        print("done", flush=True)
"#;

/// The client script, running for the whole test.
struct Clients {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    /// The number of the last connection opened (its id is `c{next}`).
    next: usize,
}

impl Clients {
    fn start(n: &Names) -> Clients {
        let path = n.dir.join("clients.py");
        std::fs::write(&path, CLIENTS).unwrap();
        let mut child = Command::new("python3").arg(&path).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("python3");
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        Clients { child, input, output, next: 0 }
    }

    fn say(&mut self, line: &str) -> String {
        writeln!(self.input, "{line}").unwrap();
        let mut answer = String::new();
        self.output.read_line(&mut answer).unwrap();
        answer.trim().to_string()
    }

    /// Opens a connection (kept open until `close`); its id and what it became.
    fn open(&mut self, kind: &str, src: &str, port: u16, name: &str) -> (String, String) {
        self.next += 1;
        let id = format!("c{}", self.next);
        let said = self.say(&format!("open {id} {kind} {src} {port} {name}"));
        (id, said)
    }

    /// Opens one and closes it at once: what it became.
    fn once(&mut self, kind: &str, src: &str, port: u16, name: &str) -> String {
        let (id, said) = self.open(kind, src, port, name);
        self.close(&id);
        said
    }

    fn close(&mut self, id: &str) {
        assert_eq!(self.say(&format!("close {id}")), "done");
    }

    /// Opens until one becomes `want` (nginx notices a closed connection
    /// a moment after the client closed it); the id of that one.
    fn open_until(&mut self, kind: &str, src: &str, port: u16, name: &str, want: &str) -> String {
        let start = Instant::now();
        loop {
            let (id, said) = self.open(kind, src, port, name);
            if said.starts_with(want) {
                return id;
            }
            self.close(&id);
            assert!(start.elapsed() < Duration::from_secs(10), "{kind} from {src} to {port} {name}: still {said}, not {want}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The HTTP status and body of a GET from `src`, through curl.
fn http_get(src: &str, port: u16, host: &str) -> (String, String) {
    let out =
        sh(&format!("curl -s --max-time 20 --interface {src} -H 'Host: {host}' -w '\\n%{{http_code}}' http://127.0.0.1:{port}/ || true"));
    let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
    (code.to_string(), body.to_string())
}

const A: &str = "127.0.0.2";
const B: &str = "127.0.0.3";

/// `allow` on an HTTPS route lets the listed client through and stops the
/// other, while other HTTPS routes of the same listener (one with PROXY
/// protocol and `deny`) serve them as they should; `deny` on an HTTP route
/// (403, nginx's own answer) and an HTTP route without it; `allow` on a raw
/// TCP port and `deny` on a raw UDP port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn allow_and_deny_per_route_on_every_scheme() {
    let t = node_topology(1);
    let n = &t.n;
    let (hp, cp, tcp, udp) = (n.https_port(), n.http_port(), n.https_port() + 3, n.https_port() + 4);
    let d = TestDaemon::start(&args(n, &[])).await;
    let cfg = network(
        &t,
        json!({
            "https://app.test": {"upstreams": ["10.80.0.2:443"], "allow": [format!("{A}/32"), "2001:db8::/32"]},
            "https://pp.app.test": {"upstreams": ["10.80.0.2:8443"], "proxy_protocol": true, "deny": [format!("{B}/32")]},
            "https://other.test": ["10.80.0.2:443"],
            "http://app.test": {"upstreams": ["10.80.0.2:80"], "deny": [format!("{B}/32")]},
            "http://other.test": ["10.80.0.2:80"],
            format!("tcp://{tcp}"): {"upstreams": ["10.80.0.2:7000"], "allow": ["127.0.0.0/8"], "deny": [format!("{B}/32")]},
            format!("udp://{udp}"): {"upstreams": ["10.80.0.2:7001"], "deny": [format!("{B}/32")]},
        }),
    );
    let (code, body) = d.post(&cfg).await;
    assert_eq!((code, &body["result"]), (200, &json!("applied")), "{body}");
    let mut c = Clients::start(n);

    // The first connection may wait for the WireGuard handshake.
    c.open_until("tls", A, hp, "app.test", "ok node-https host=app.test");
    assert!(c.once("tls", B, hp, "app.test").starts_with("closed"), "not in allow");
    for src in [A, B] {
        let said = c.once("tls", src, hp, "other.test");
        assert!(said.starts_with("ok node-https host=other.test "), "{said}");
    }
    // PROXY protocol still names the real client, and deny refuses the other.
    assert!(c.once("tls", A, hp, "pp.app.test").starts_with(&format!("ok node-pp header=PROXY TCP4 {A} 127.0.0.1 ")));
    assert!(c.once("tls", B, hp, "pp.app.test").starts_with("closed"), "denied");

    let (code, body) = http_get(B, cp, "app.test");
    assert!(code == "403" && body.contains("nginx") && !body.contains("node-http"), "refused by nginx, not the node: {code} {body}");
    let (code, body) = http_get(A, cp, "app.test");
    assert!(code == "200" && body.starts_with(&format!("node-http host=app.test real={A}")), "{code} {body}");
    let (code, body) = http_get(B, cp, "other.test");
    assert!(code == "200" && body.starts_with(&format!("node-http host=other.test real={B}")), "{code} {body}");

    assert_eq!(c.once("tcp", A, tcp, ""), "ok ping");
    assert!(c.once("tcp", B, tcp, "").starts_with("closed"), "denied though inside allow");
    assert_eq!(c.once("udp", A, udp, ""), "ok ping");
    assert_eq!(c.once("udp", B, udp, ""), "closed no answer", "denied");

    // The fields removed: everyone again, the geo gone from the stream file.
    let cfg = network(&t, json!({ "https://app.test": ["10.80.0.2:443"], format!("tcp://{tcp}"): ["10.80.0.2:7000"] }));
    let (code, body) = d.post(&cfg).await;
    assert_eq!(code, 200, "{body}");
    let said = c.once("tls", B, hp, "app.test");
    assert!(said.starts_with("ok node-https host=app.test "), "{said}");
    assert_eq!(c.once("tcp", B, tcp, ""), "ok ping");
    let stream = std::fs::read_to_string(n.stream_file()).unwrap();
    assert!(!stream.contains("geo ") && !stream.contains("gateway_refused") && !stream.contains("allow "), "{stream}");
    d.stop().await;
}

/// `max_connections: 2`: a third concurrent connection is closed (HTTP: 503
/// for a third request being handled) and never reaches a node; once one
/// closes, a new one works. Another HTTPS route of the listener is not
/// counted with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn max_connections_closes_the_one_too_many_until_one_closes() {
    let t = node_topology(2);
    let n = &t.n;
    let (hp, cp, tcp) = (n.https_port(), n.http_port(), n.https_port() + 3);
    let d = TestDaemon::start(&args(n, &[])).await;
    let cfg = network(
        &t,
        json!({
            "https://app.test": {"upstreams": ["10.80.0.2:443"], "max_connections": 2, "deny": ["127.0.0.4/32"]},
            "https://other.test": ["10.80.0.2:443"],
            "http://app.test": {"upstreams": ["10.80.0.2:80"], "max_connections": 2},
            format!("tcp://{tcp}"): {"upstreams": ["10.80.0.2:7000"], "max_connections": 2},
        }),
    );
    let (code, body) = d.post(&cfg).await;
    assert_eq!((code, &body["result"]), (200, &json!("applied")), "{body}");
    let stream = std::fs::read_to_string(n.stream_file()).unwrap();
    assert!(!stream.contains("proxy_protocol"), "no per-client count: no PROXY header on the listener: {stream}");
    let mut c = Clients::start(n);

    for (kind, port, name, ok) in [("tls", hp, "app.test", "ok node-https"), ("tcp", tcp, "", "ok ping")] {
        let first = c.open_until(kind, A, port, name, ok);
        let (_, second) = c.open(kind, B, port, name);
        assert!(second.starts_with(ok), "{kind}: {second}");
        let (third, said) = c.open(kind, A, port, name);
        assert!(said.starts_with("closed"), "{kind}: a third is closed: {said}");
        c.close(&third);
        if kind == "tls" {
            let said = c.once("tls", B, hp, "other.test");
            assert!(said.starts_with("ok node-https host=other.test "), "{said}");
            assert!(c.once("tls", "127.0.0.4", hp, "app.test").starts_with("closed"), "deny before the hop");
        }
        c.close(&first);
        c.open_until(kind, A, port, name, ok);
    }

    let first = c.open_until("http", A, cp, "app.test", "held");
    let (_, second) = c.open("http", B, cp, "app.test");
    assert_eq!(second, "held");
    let (third, said) = c.open("http", A, cp, "app.test");
    assert_eq!(said, "status 503", "a third request being handled");
    c.close(&third);
    c.close(&first);
    c.open_until("http", A, cp, "app.test", "held");
    d.stop().await;
}

/// `max_connections_per_client: 1`: a client's second concurrent
/// connection is closed while another client's first works; after the
/// first closes, a new one works. On HTTPS this makes the listener send a
/// PROXY header to the route's hop (which reads the client's address from
/// it): the plain routes still work through the SNI hop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn max_connections_per_client_counts_each_address() {
    let t = node_topology(3);
    let n = &t.n;
    let (hp, cp, tcp, udp) = (n.https_port(), n.http_port(), n.https_port() + 3, n.https_port() + 4);
    let d = TestDaemon::start(&args(n, &[])).await;
    let cfg = network(
        &t,
        json!({
            "https://app.test": {"upstreams": ["10.80.0.2:443"], "max_connections_per_client": 1, "allow": ["127.0.0.0/8"]},
            "https://other.test": ["10.80.0.2:443"],
            "http://app.test": {"upstreams": ["10.80.0.2:80"], "max_connections_per_client": 1},
            format!("tcp://{tcp}"): {"upstreams": ["10.80.0.2:7000"], "max_connections_per_client": 1},
            format!("udp://{udp}"): {"upstreams": ["10.80.0.2:7001"], "max_connections_per_client": 1},
        }),
    );
    let (code, body) = d.post(&cfg).await;
    assert_eq!((code, &body["result"]), (200, &json!("applied")), "{body}");
    let mut c = Clients::start(n);

    for (kind, port, name, ok) in [("tls", hp, "app.test", "ok node-https"), ("tcp", tcp, "", "ok ping"), ("http", cp, "app.test", "held")]
    {
        let first = c.open_until(kind, A, port, name, ok);
        let (second, said) = c.open(kind, A, port, name);
        let limited = if kind == "http" { "status 503" } else { "closed" };
        assert!(said.starts_with(limited), "{kind}: the same client's second: {said}");
        c.close(&second);
        let (other, said) = c.open(kind, B, port, name);
        assert!(said.starts_with(ok), "{kind}: another client's first: {said}");
        if kind == "tls" {
            let said = c.once("tls", A, hp, "other.test");
            assert!(said.starts_with("ok node-https host=other.test "), "{said}");
        }
        c.close(&other);
        c.close(&first);
        c.open_until(kind, A, port, name, ok);
    }
    // UDP: a session is a client address and port; a second port of the
    // same address is one session too many, another address is not.
    let (_, first) = c.open("udp", A, udp, "");
    assert_eq!(first, "ok ping");
    let (_, second) = c.open("udp", A, udp, "");
    assert_eq!(second, "closed no answer", "the same client's second session");
    let (_, other) = c.open("udp", B, udp, "");
    assert_eq!(other, "ok ping", "another client's first session");
    d.stop().await;
}

/// Every refusal and limit is counted where it happens, once, in
/// status.json (`networks[P].routes[KEY]`) and /metrics: an HTTPS client
/// refused by `deny` on the shared listener (sent to a closed upstream),
/// HTTPS connections over the limits in the route's hop (with a PROXY
/// header from the listener: a per-client count), HTTP's 403 and 503,
/// TCP's and UDP's closed sessions. A connection the listener passes to a
/// hop is counted by the hop alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn refusals_and_limits_are_counted_once_each() {
    const C: &str = "127.0.0.4";
    let t = node_topology(4);
    let n = &t.n;
    open_dir_to_nginx(n);
    let (hp, cp, tcp, udp) = (n.https_port(), n.http_port(), n.https_port() + 3, n.https_port() + 4);
    let d = TestDaemon::start(&args(n, &[])).await;
    let deny_b = json!([format!("{B}/32")]);
    let cfg = network(
        &t,
        json!({
            "https://app.test": {"upstreams": ["10.80.0.2:443"], "deny": deny_b, "max_connections": 1, "max_connections_per_client": 1},
            "https://other.test": ["10.80.0.2:443"],
            "http://app.test": {"upstreams": ["10.80.0.2:80"], "deny": deny_b, "max_connections": 1},
            "http://other.test": ["10.80.0.2:80"],
            format!("tcp://{tcp}"): {"upstreams": ["10.80.0.2:7000"], "deny": deny_b, "max_connections": 1},
            format!("udp://{udp}"): {"upstreams": ["10.80.0.2:7001"], "deny": deny_b, "max_connections": 1},
        }),
    );
    let (code, body) = d.post(&cfg).await;
    assert_eq!((code, &body["result"]), (200, &json!("applied")), "{body}");
    // The first request waits for the WireGuard handshake: on a route not counted below.
    let start = Instant::now();
    while http_get(A, cp, "other.test").0 != "200" {
        assert!(start.elapsed() < Duration::from_secs(30), "the tunnel never came up");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut c = Clients::start(n);

    // HTTPS: A's first passes; A's second (per client) and C's (per route)
    // are over the limits in the hop; B is refused on the listener.
    let (first, said) = c.open("tls", A, hp, "app.test");
    assert!(said.starts_with("ok node-https host=app.test"), "{said}");
    for src in [A, C, B] {
        let said = c.once("tls", src, hp, "app.test");
        assert!(said.starts_with("closed"), "{src}: {said}");
    }
    c.close(&first);
    // Another route of the listener: through the SNI hop, counted once.
    let said = c.once("tls", B, hp, "other.test");
    assert!(said.starts_with("ok node-https host=other.test"), "{said}");

    // nginx counts a route's connections (its preaccess phase) before it
    // applies allow/deny (access): B is refused while the route is below
    // its limit, else it would be refused as one too many.
    // HTTP: B gets 403; one request held; a second is over the limit (503).
    assert_eq!(http_get(B, cp, "app.test").0, "403");
    let (held, said) = c.open("http", A, cp, "app.test");
    assert_eq!(said, "held");
    let said = c.once("http", A, cp, "app.test");
    assert_eq!(said, "status 503");
    c.close(&held);

    // TCP: the same, closed instead of answered.
    assert!(c.once("tcp", B, tcp, "").starts_with("closed"), "denied");
    let (first, said) = c.open("tcp", A, tcp, "");
    assert_eq!(said, "ok ping");
    assert!(c.once("tcp", A, tcp, "").starts_with("closed"), "over the limit");
    c.close(&first);

    // UDP: the first session stays open (a minute without datagrams), so
    // it is active, not yet counted; B's and a second from A are refused.
    assert_eq!(c.once("udp", B, udp, ""), "closed no answer", "denied");
    let (_, said) = c.open("udp", A, udp, "");
    assert_eq!(said, "ok ping");
    assert_eq!(c.once("udp", A, udp, ""), "closed no answer", "over the limit");

    // (connections_total, denied_total, limited_total) of each route: every
    // connection that ended, refused ones included.
    let key = t.port.to_string();
    let tcp_key = format!("tcp://{tcp}");
    let udp_key = format!("udp://{udp}");
    let want = [
        ("https://app.test", (4, 1, 2)),
        ("https://other.test", (1, 0, 0)),
        ("http://app.test", (3, 1, 1)),
        (tcp_key.as_str(), (3, 1, 1)),
        (udp_key.as_str(), (2, 1, 1)),
    ];
    let counts = |st: &Value, route: &str| {
        let r = &st["networks"][&key]["routes"][route];
        let n = |f: &str| r[f].as_u64().unwrap_or(u64::MAX);
        (n("connections_total"), n("denied_total"), n("limited_total"))
    };
    let st = wait_for_status(&d, "every connection counted", Duration::from_secs(10), |st| {
        want.iter().all(|(route, w)| counts(st, route) == *w) && st["networks"][&key]["routes"][&udp_key]["active_connections"] == 1
    })
    .await;
    // Nothing more comes (a hop's connection counted twice would come late).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, again) = d.get("/api/v1/status.json").await;
    for (route, w) in want {
        assert_eq!(counts(&again, route), w, "{route}: {}", again["networks"][&key]["routes"]);
    }
    let routes = &st["networks"][&key]["routes"];
    assert_eq!((routes[&tcp_key]["rx_bytes"].clone(), routes[&tcp_key]["tx_bytes"].clone()), (json!(4), json!(4)), "{routes}");
    assert!(routes["https://app.test"]["tx_bytes"].as_u64().unwrap() > 0, "{routes}");
    for (route, (connections, denied, limited)) in want {
        let labels = format!("{{network=\"{}\",route=\"{route}\"}}", t.port);
        // A route never refused has no refusal series yet.
        let got = (
            metric(&d, &format!("gateway_route_connections_total{labels}")).await,
            metric(&d, &format!("gateway_route_denied_total{labels}")).await.unwrap_or(0.0),
            metric(&d, &format!("gateway_route_limited_total{labels}")).await.unwrap_or(0.0),
        );
        assert_eq!(got, (Some(connections as f64), denied as f64, limited as f64), "{route}");
    }
    d.stop().await;
}
