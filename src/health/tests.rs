use super::*;
use crate::model::GatewayConfig;
use crate::render::tests::{PEER1, PRIV};
use crate::validate::{Context, validate};

fn desired(proxy: serde_json::Value) -> Arc<Desired> {
    let config: GatewayConfig = serde_json::from_value(serde_json::json!({
        "51820": {
            "private_key": PRIV,
            "address": ["10.80.0.1/16"],
            "peers": {PEER1: {"allowed_ips": ["10.80.0.2/32"]}},
            "proxy": proxy,
        }
    }))
    .unwrap();
    Arc::new(validate(&config, &Context::default()).expect("valid"))
}

fn four_routes() -> Arc<Desired> {
    desired(serde_json::json!({
        "https://app.test": ["10.80.0.2:443", "10.80.0.3:443"],
        "http://app.test": ["10.80.0.2:80"],
        "tcp://2222": ["10.80.0.2:443"],
        "udp://27015": ["10.80.0.2:27015"],
    }))
}

fn up(h: Option<bool>, since: i64, e: Option<&str>) -> UpstreamHealth {
    UpstreamHealth { healthy: h, since, last_error: e.map(String::from) }
}

fn health() -> Health {
    Health::new(Duration::from_secs(10), Arc::new(crate::system::kernel::probe::KernelProbe::default()))
}

#[test]
fn the_first_check_reports_only_a_failure_then_every_change_once() {
    let unchecked = up(None, 100, None);
    let refused: Outcome = Err("TCP connect to 10.80.0.2:443: connection refused".into());
    assert_eq!(next_state(&unchecked, &Ok(()), 200), (up(Some(true), 200, None), None), "healthy at first: silent");
    let (down, event) = next_state(&unchecked, &refused, 200);
    assert_eq!((down.clone(), event), (up(Some(false), 200, Some("TCP connect to 10.80.0.2:443: connection refused")), Some(false)));
    let timeout: Outcome = Err("TCP connect to 10.80.0.2:443: no answer within 5 s".into());
    let (still, event) = next_state(&down, &timeout, 210);
    assert_eq!((still.since, event), (200, None), "still down: no event, since kept");
    assert_eq!(still.last_error.as_deref(), Some("TCP connect to 10.80.0.2:443: no answer within 5 s"), "the newest error");
    let (back, event) = next_state(&still, &Ok(()), 220);
    assert_eq!((back.clone(), event), (up(Some(true), 220, None), Some(true)));
    assert_eq!(next_state(&back, &Ok(()), 230), (up(Some(true), 220, None), None));
    assert_eq!(next_state(&back, &refused, 240).1, Some(false), "down again");
}

#[test]
fn routes_are_listed_checked_and_forgotten_with_their_series() {
    let h = health();
    let m = Metrics::default();
    h.sync(&four_routes(), &m, 100);
    let routes = h.routes(51820);
    assert_eq!(routes.keys().collect::<Vec<_>>(), ["http://app.test", "https://app.test", "tcp://2222", "udp://27015"]);
    assert_eq!(routes["udp://27015"].upstreams["10.80.0.2:27015"], up(None, 100, None), "UDP: not checked");
    assert_eq!(routes["https://app.test"].upstreams.len(), 2);
    let targets = h.targets();
    let want: Vec<SocketAddrV4> = ["10.80.0.2:80", "10.80.0.2:443", "10.80.0.3:443"].map(|a| a.parse().unwrap()).into();
    assert_eq!(targets, vec![(51820, want)], "each upstream once, UDP not at all");

    let a443: SocketAddrV4 = "10.80.0.2:443".parse().unwrap();
    let outcomes: BTreeMap<SocketAddrV4, Outcome> = [
        (a443, Err("TCP connect to 10.80.0.2:443: connection refused".to_string())),
        ("10.80.0.2:80".parse().unwrap(), Ok(())),
        ("10.80.0.3:443".parse().unwrap(), Ok(())),
    ]
    .into();
    let events = h.record(51820, &outcomes, 110, &m);
    let names: Vec<(&str, &str)> = events.iter().map(|(n, e)| (*n, e.route.as_str())).collect();
    assert_eq!(names, [("upstream_down", "https://app.test"), ("upstream_down", "tcp://2222")], "one per route of the upstream");
    assert_eq!(events[0].1.error.as_deref(), Some("TCP connect to 10.80.0.2:443: connection refused"));
    assert_eq!(events[0].1.upstream, "10.80.0.2:443");
    let text = m.encode().unwrap();
    assert!(text.contains(r#"gateway_upstream_up{network="51820",route="tcp://2222",upstream="10.80.0.2:443"} 0"#), "{text}");
    assert!(text.contains(r#"gateway_upstream_up{network="51820",route="http://app.test",upstream="10.80.0.2:80"} 1"#), "{text}");
    assert!(!text.contains("route=\"udp://"), "no series for what is not checked: {text}");
    assert_eq!(
        h.routes(51820)["tcp://2222"].upstreams["10.80.0.2:443"],
        up(Some(false), 110, Some("TCP connect to 10.80.0.2:443: connection refused"))
    );

    let outcomes: BTreeMap<SocketAddrV4, Outcome> = [(a443, Ok(()))].into();
    let events = h.record(51820, &outcomes, 120, &m);
    assert_eq!(events.iter().map(|(n, _)| *n).collect::<Vec<_>>(), ["upstream_up", "upstream_up"]);
    assert_eq!(events[0].1.error, None);

    // A change keeps what is known of the upstreams that stay.
    let fewer = desired(serde_json::json!({"https://app.test": ["10.80.0.2:443"], "udp://27015": ["10.80.0.2:27015"]}));
    h.sync(&fewer, &m, 130);
    let routes = h.routes(51820);
    assert_eq!(routes.keys().collect::<Vec<_>>(), ["https://app.test", "udp://27015"]);
    assert_eq!(routes["https://app.test"].upstreams["10.80.0.2:443"], up(Some(true), 120, None));
    let text = m.encode().unwrap();
    assert!(!text.contains("route=\"tcp://2222") && !text.contains("10.80.0.3:443") && !text.contains("route=\"http://"), "{text}");
    assert!(text.contains(r#"route="https://app.test",upstream="10.80.0.2:443"} 1"#), "{text}");

    // A network removed: not listed, not checked, no series; a round that
    // was running records nothing for it.
    h.sync(&Arc::new(Desired::default()), &m, 140);
    assert!(h.routes(51820).is_empty() && h.targets().is_empty());
    assert!(h.record(51820, &outcomes, 150, &m).is_empty());
    assert!(!m.encode().unwrap().contains("gateway_upstream_up{"), "{}", m.encode().unwrap());
}

#[test]
fn a_pass_that_changed_nothing_lists_nothing_again() {
    let h = health();
    let m = Metrics::default();
    let d = four_routes();
    h.sync(&d, &m, 100);
    let outcomes: BTreeMap<SocketAddrV4, Outcome> = [("10.80.0.2:80".parse().unwrap(), Ok(()))].into();
    h.record(51820, &outcomes, 110, &m);
    h.sync(&d, &m, 120);
    assert_eq!(h.routes(51820)["http://app.test"].upstreams["10.80.0.2:80"], up(Some(true), 110, None));
    // The same state validated again (a restart's first pass) is another Arc, same routes.
    h.sync(&four_routes(), &m, 130);
    assert_eq!(h.routes(51820)["http://app.test"].upstreams["10.80.0.2:80"], up(Some(true), 110, None));
}

#[test]
fn the_connect_timeout_follows_the_interval_within_bounds() {
    let t = |s: u64| Health::new(Duration::from_secs(s), Arc::new(crate::system::kernel::probe::KernelProbe::default())).timeout();
    assert_eq!(
        (t(1), t(4), t(10), t(60)),
        (Duration::from_millis(500), Duration::from_secs(2), Duration::from_secs(5), Duration::from_secs(5))
    );
}
