use super::*;
use crate::layout::Layout;
use crate::spec::Desired;

fn dgram(message: &str) -> Vec<u8> {
    format!("<190>Dec  2 13:25:23 {TAG}: {message}").into_bytes()
}

fn host(s: &str) -> Hostname {
    s.parse().unwrap()
}

#[test]
fn lines_of_each_form() {
    let line = |m: &str| parse_line(&dgram(m));
    let https = |h: &str| RouteRef::Https(host(h));
    assert_eq!(
        line("s TCP 18010 200 517 8389123 app.test 100.80.0.2:20001"),
        Some(UsageLine { route: https("app.test"), outcome: Outcome::Passed, rx: 517, tx: 8389123 })
    );
    assert_eq!(
        line("s TCP 18013 403 0 0 - -"),
        Some(UsageLine { route: RouteRef::Raw(Transport::Tcp, 18013), outcome: Outcome::Denied, rx: 0, tx: 0 })
    );
    assert_eq!(line("s UDP 18015 200 12 12 - 100.80.0.2:20002").map(|l| l.route), Some(RouteRef::Raw(Transport::Udp, 18015)));
    assert_eq!(line("s UDP 18015 503 4 0 - -").map(|l| l.outcome), Some(Outcome::Limited));
    let outcome = |m: &str| line(m).map(|l| l.outcome);
    assert_eq!(outcome("s TCP 18013 502 1 0 - 100.80.0.2:20003, 100.80.0.2:20004"), Some(Outcome::Passed), "two upstreams tried");
    // An HTTPS client refused by allow/deny on the listener: sent to the refused upstream.
    assert_eq!(
        line("s TCP 18010 502 0 0 app.test gateway_refused"),
        Some(UsageLine { route: https("app.test"), outcome: Outcome::Denied, rx: 0, tx: 0 })
    );
    // A route's hop names the route; its limits refuse before any upstream.
    assert_eq!(line("s TCP - 503 0 0 app.test -"), Some(UsageLine { route: https("app.test"), outcome: Outcome::Limited, rx: 0, tx: 0 }));
    assert_eq!(outcome("s TCP - 200 517 4000 app.test 100.80.0.2:20001"), Some(Outcome::Passed));
    // HTTP: nginx's own 403/503 (no upstream) are refusals; the node's are answers.
    assert_eq!(
        line("h app.test 503 80 190 -"),
        Some(UsageLine { route: RouteRef::Http(host("app.test")), outcome: Outcome::Limited, rx: 80, tx: 190 })
    );
    assert_eq!(outcome("h app.test 403 80 190 -"), Some(Outcome::Denied));
    assert_eq!(outcome("h app.test 403 80 190 100.80.0.2:20001"), Some(Outcome::Passed), "the node said 403");
    assert_eq!(outcome("h app.test 503 80 190 100.80.0.2:20001, 100.80.0.3:20002"), Some(Outcome::Passed), "the nodes said 503");
    // The HTTPS listener's half of a session passed to a hop: the hop reports it.
    assert_eq!(line("s TCP 18010 200 517 4000 app.test unix:/run/gateway/sni.sock"), None);
    assert_eq!(line("s TCP 18010 200 517 4000 app.test unix:/run/gateway-sni.sock.3"), None);
}

#[test]
fn anything_else_is_refused_without_a_panic() {
    for bad in [
        "s TCP 18010 200 517 8389123 App.Test 1.2.3.4:5",
        "s TCP 18010 200 -1 0 - -",
        "s TCP 018010 200 1 0 - -",
        "s TCP 70000 200 1 0 - -",
        "s SCTP 1 200 1 0 - -",
        "s TCP 18010 200 1 0 -",
        "s TCP 18010 200 1 0 a_b c",
        "h app.test 200 1",
        "h app.test 200 1 1",
        "h * 200 1 1 -",
        "h app.test 200 99999999999999999999 1 -",
        "s TCP - 200 1 1 - -",
        "",
        "x",
    ] {
        assert_eq!(parse_line(&dgram(bad)), None, "{bad}");
    }
    assert_eq!(parse_line(b"s TCP 18013 200 1 1 - -"), None, "no syslog header");
    assert_eq!(parse_line(b"<190>Dec  2 13:25:23 other: h app.test 200 1 1"), None, "another tag");
    assert_eq!(parse_line(&[b'<', 0xff, 0xfe]), None);
    let mut long = dgram("h app.test 200 1 1 -");
    long.resize(MAX_DATAGRAM + 1, b' ');
    assert_eq!(parse_line(&long), None);
}

/// The converged fixture's state (`https://app.example.com` and
/// `http://app.example.com` on 51820), with `tcp://2222` added.
fn desired() -> Desired {
    let mut d = crate::testing::converged_desired();
    let raw = crate::spec::RawRoute { upstreams: vec!["10.80.0.2:22".parse().unwrap()], proxy_protocol: false };
    std::sync::Arc::make_mut(d.networks.get_mut(&51820).unwrap()).tcp.insert(2222, raw);
    d
}

#[test]
fn counts_go_to_the_route_of_the_desired_state() {
    let (usage, metrics) = (Usage::default(), Metrics::default());
    usage.set_routes(&Targets::of(&Layout::default(), &desired()), &metrics);
    for m in [
        "s TCP 443 200 100 1000 app.example.com 10.1.1.1:1",
        "s TCP 443 502 0 0 app.example.com gateway_refused",
        "h app.example.com 503 50 10 -",
        "h app.example.com 503 5 5 10.1.1.1:1",
        "s TCP 2222 200 7 9 - x:1",
    ] {
        usage.record(&dgram(m), &metrics);
    }
    usage.record(&dgram("s TCP 443 200 1 1 nobody.test -"), &metrics);
    usage.record(&dgram("s TCP 2223 200 1 1 - -"), &metrics);
    usage.record(b"garbage", &metrics);
    let got = usage.of_network(51820);
    assert_eq!(
        got["https://app.example.com"],
        RouteCounters { connections_total: 2, denied_total: 1, limited_total: 0, rx_bytes: 100, tx_bytes: 1000 }
    );
    assert_eq!(
        got["http://app.example.com"],
        RouteCounters { connections_total: 2, denied_total: 0, limited_total: 1, rx_bytes: 55, tx_bytes: 15 }
    );
    assert_eq!(got["tcp://2222"].tx_bytes, 9);
    assert_eq!(usage.unknown.load(Ordering::Relaxed), 3);
    assert!(usage.of_network(51821).is_empty());
    // A route that goes loses its counters; the others keep theirs.
    let mut d = desired();
    std::sync::Arc::make_mut(d.networks.get_mut(&51820).unwrap()).tcp.clear();
    usage.set_routes(&Targets::of(&Layout::default(), &d), &metrics);
    assert_eq!(usage.of_network(51820).keys().collect::<Vec<_>>(), ["http://app.example.com", "https://app.example.com"]);
}
