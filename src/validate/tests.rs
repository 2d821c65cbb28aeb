use super::*;
use crate::model::{NetworkConfig, PeerConfig};
use crate::spec::parse_custom_forwardings;

pub const KEY_A: &str = "0EtpYOfpZyKaIcpkq+KO/+joyV431f1X99CcB2OMo3c=";
pub const KEY_B: &str = "OxvFhrgLnI9e4xzMMA2qQ7wm/xCUzxaWW5cb1JGkWSA=";
pub const KEY_C: &str = "4dcKbDNyb6pkkRuP22OPzkHgpOb9k67iaP5R9A0xv0c=";
const ZERO_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

fn net() -> NetworkConfig {
    NetworkConfig {
        private_key: KEY_A.into(),
        listen_port: None,
        mtu: None,
        address: vec!["10.80.0.1/16".into()],
        peers: [(
            KEY_B.to_string(),
            PeerConfig {
                preshared_key: None,
                allowed_ips: vec!["10.80.0.2/32".into()],
                endpoint: Some("203.0.113.7:41213".into()),
                persistent_keepalive: None,
            },
        )]
        .into(),
        proxy: [
            ("https://app.example.com".to_string(), vec!["10.80.0.2:443".to_string()].into()),
            ("http://app.example.com".to_string(), vec!["10.80.0.2:80".to_string()].into()),
        ]
        .into(),
        bandwidth: None,
    }
}

fn one(n: NetworkConfig) -> GatewayConfig {
    [("51820".to_string(), n)].into()
}

fn paths(r: Result<Desired, Problems>) -> Vec<String> {
    r.expect_err("should be rejected").into_details().into_iter().map(|d| d.path).collect()
}

#[test]
fn accepts_the_contract_example() {
    let d = validate(&one(net()), &Context::default()).unwrap();
    let spec = &d.networks[&51820];
    assert_eq!(spec.mtu, 1420);
    assert_eq!(spec.public_key.to_string(), KEY_C, "derived from the private key");
    assert_eq!(spec.https.len(), 1);
    assert_eq!(spec.http.len(), 1);
    assert_eq!(spec.upstreams().len(), 2);
    assert!(spec.routes().is_empty(), "10.80.0.2/32 is inside 10.80.0.1/16");
    let mut n = net();
    n.peers.get_mut(KEY_B).unwrap().allowed_ips = vec!["10.80.0.2/32".into(), "192.168.7.0/24".into(), "10.0.0.0/8".into()];
    let spec = &validate(&one(n), &Context::default()).unwrap().networks[&51820];
    let routes: Vec<String> = spec.routes().iter().map(ToString::to_string).collect();
    assert_eq!(routes, ["10.0.0.0/8", "192.168.7.0/24"], "a wider prefix than the address is not covered");
    let mut n = net();
    n.peers.get_mut(KEY_B).unwrap().allowed_ips = vec!["10.80.0.0/12".into(), "fd80::/48".into()];
    n.address.push("fd80::1/64".into());
    let spec = &validate(&one(n), &Context::default()).unwrap().networks[&51820];
    let routes: Vec<String> = spec.routes().iter().map(ToString::to_string).collect();
    assert_eq!(routes, ["10.80.0.0/12", "fd80::/48"], "containing the address is not being covered by its subnet");
}

#[test]
fn mtu_edges_and_listen_port() {
    for (mtu, ok) in [(1279, false), (1280, true), (9000, true), (9001, false)] {
        let mut n = net();
        n.mtu = Some(mtu);
        assert_eq!(validate(&one(n), &Context::default()).is_ok(), ok, "mtu {mtu}");
    }
    let mut n = net();
    n.listen_port = Some(51820);
    assert!(validate(&one(n.clone()), &Context::default()).is_ok());
    n.listen_port = Some(51821);
    assert_eq!(paths(validate(&one(n), &Context::default())), [r#"$["51820"].listen_port"#]);
}

#[test]
fn private_keys_are_stored_clamped_and_allowed_ips_normalized() {
    let mut n = net();
    n.private_key = "//////////////////////////////////////////8=".into();
    n.peers.get_mut(KEY_B).unwrap().allowed_ips = vec!["10.80.0.2/32".into(), "192.168.7.9/24".into()];
    let d = validate(&one(n), &Context::default()).unwrap();
    let spec = &d.networks[&51820];
    assert_eq!(spec.private_key.expose(), "+P///////////////////////////////////////38=");
    let ips: Vec<String> = spec.peers.values().next().unwrap().allowed_ips.iter().map(ToString::to_string).collect();
    assert_eq!(ips, ["10.80.0.2/32", "192.168.7.0/24"], "host bits cleared, as wg show reports them");
}

#[test]
fn reports_every_problem_with_its_path() {
    let mut n = net();
    n.private_key = "nope".into();
    n.mtu = Some(100);
    n.listen_port = Some(1);
    n.address.push("10.0.0.1/99".into());
    n.proxy.insert("ftp://x.test".into(), vec!["10.80.0.2:21".into()].into());
    n.proxy.insert("https://y.test".into(), vec!["192.168.1.1:443".into()].into());
    n.proxy.insert("https://z.test".into(), vec![].into());
    let p = paths(validate(&[("51820".to_string(), n), ("0".to_string(), net())].into(), &Context::default()));
    for want in [
        r#"$["51820"].private_key"#,
        r#"$["51820"].mtu"#,
        r#"$["51820"].listen_port"#,
        r#"$["51820"].address[1]"#,
        r#"$["51820"].proxy["ftp://x.test"]"#,
        r#"$["51820"].proxy["https://y.test"][0]"#,
        r#"$["51820"].proxy["https://z.test"]"#,
        r#"$["0"]"#,
    ] {
        assert!(p.contains(&want.to_string()), "missing {want} in {p:?}");
    }
}

#[test]
fn hostname_in_one_network_only() {
    let mut second = net();
    second.private_key = KEY_C.into();
    let cfg = [("51820".to_string(), net()), ("51821".to_string(), second)].into();
    let p = paths(validate(&cfg, &Context::default()));
    assert_eq!(p, [r#"$["51821"].proxy["https://app.example.com"]"#, r#"$["51821"].proxy["http://app.example.com"]"#]);
    let custom = parse_custom_forwardings("https://app.example.com=127.0.0.1:8443").unwrap();
    let p = paths(validate(&one(net()), &Context { custom: &custom, ..Default::default() }));
    assert_eq!(p, [r#"$["51820"].proxy["https://app.example.com"]"#, r#"$["51820"].proxy["http://app.example.com"]"#], "both schemes");
}

#[test]
fn peer_keys_psk_and_compat_addresses() {
    let mut n = net();
    n.peers.insert(KEY_C.into(), PeerConfig { preshared_key: None, allowed_ips: vec![], endpoint: None, persistent_keepalive: None });
    let e = validate(&one(n), &Context::default()).expect_err("own key as a peer").into_details();
    assert!(e[0].message.contains("own public key"), "{e:?}");
    let mut n = net();
    n.peers.get_mut(KEY_B).unwrap().preshared_key = Some(ZERO_KEY.into());
    let d = validate(&one(n), &Context::default()).unwrap();
    assert_eq!(d.networks[&51820].peers.values().next().unwrap().preshared_key, None, "all zeros = none");
    let mut n = net();
    n.peers.get_mut(KEY_B).unwrap().preshared_key = Some(KEY_C.into());
    let d = validate(&one(n), &Context::default()).unwrap();
    assert_eq!(d.networks[&51820].peers.values().next().unwrap().preshared_key, Some(KEY_C.parse().unwrap()));
    let mut n = net();
    n.peers.get_mut(KEY_B).unwrap().allowed_ips.push("::102:304/128".into());
    assert!(validate(&one(n), &Context::default()).is_err());
}

#[test]
fn peer_problems() {
    let mut n = net();
    n.peers.insert(
        "bad".into(),
        PeerConfig {
            preshared_key: Some("x".into()),
            allowed_ips: vec!["10.80.0.2/32".into()],
            endpoint: Some("host:1".into()),
            persistent_keepalive: Some(0),
        },
    );
    let p = paths(validate(&one(n), &Context::default()));
    for want in [
        r#"$["51820"].peers["bad"]"#,
        r#"$["51820"].peers["bad"].preshared_key"#,
        r#"$["51820"].peers["bad"].endpoint"#,
        r#"$["51820"].peers["bad"].persistent_keepalive"#,
    ] {
        assert!(p.contains(&want.to_string()), "missing {want} in {p:?}");
    }
    for (k, ok) in [(1, true), (65535, true), (65536, false)] {
        let mut n = net();
        n.peers.get_mut(KEY_B).unwrap().persistent_keepalive = Some(k);
        assert_eq!(validate(&one(n), &Context::default()).is_ok(), ok, "keepalive {k}");
    }
}

#[test]
fn an_allowed_ip_belongs_to_one_peer() {
    let mut n = net();
    n.peers.insert(
        KEY_C.into(),
        PeerConfig { preshared_key: None, allowed_ips: vec!["10.80.0.2/32".into()], endpoint: None, persistent_keepalive: None },
    );
    n.private_key = "0HPlRxcp5W4u92WrM/Esf7dN1T6XPk/a96sfThph7Vo=".into();
    let e = validate(&one(n), &Context::default()).expect_err("shared allowed IP").into_details();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].message.contains("also given to peer"), "{e:?}");
}

#[test]
fn one_hostname_one_network_whatever_the_scheme() {
    let mut other = net();
    other.private_key = KEY_C.into();
    other.proxy = [("http://app.example.com".to_string(), vec!["10.80.0.2:80".to_string()].into())].into();
    let p = paths(validate(&[("51820".to_string(), net()), ("51821".to_string(), other)].into(), &Context::default()));
    assert_eq!(p, vec![r#"$["51821"].proxy["http://app.example.com"]"#.to_string()]);
}

#[test]
fn same_url_twice_and_proxy_needs_ipv4() {
    let mut n = net();
    n.proxy.insert("https://app.example.com/".into(), vec!["10.80.0.2:443".into()].into());
    let e = validate(&one(n), &Context::default()).expect_err("same URL twice").into_details();
    assert!(e[0].message.contains("given twice"), "{e:?}");
    let mut n = net();
    n.address = vec!["fd00::1/64".into()];
    n.peers.get_mut(KEY_B).unwrap().allowed_ips = vec!["10.80.0.2/32".into()];
    let p = paths(validate(&one(n.clone()), &Context::default()));
    assert_eq!(p, [r#"$["51820"].address"#]);
    n.proxy.retain(|u, _| u.starts_with("https"));
    assert_eq!(paths(validate(&one(n.clone()), &Context::default())), [r#"$["51820"].address"#], "HTTPS entries alone");
    n.proxy.clear();
    assert!(validate(&one(n), &Context::default()).is_ok(), "an IPv6-only network without proxy entries is fine");
}

#[test]
fn addresses_must_be_global_unique_and_outside_the_bridge() {
    let bridge = ["10.199.0.0/16".parse().unwrap()];
    let ctx = Context { reserved: &bridge, ..Default::default() };
    for (bad, why) in [
        ("127.0.0.2/8", "global"),
        ("169.254.1.1/16", "global"),
        ("fe80::1/64", "global"),
        ("::ffff:10.0.0.1/128", "global"),
        ("::102:304/128", "global"),
        ("fec0::1/64", "global"),
        ("224.0.0.1/4", "global"),
        ("0.0.0.0/8", "global"),
        ("255.255.255.255/32", "global"),
        ("ff02::1/128", "global"),
        ("10.199.3.4/24", "bridge"),
    ] {
        let mut n = net();
        n.address.push(bad.into());
        let e = validate(&one(n), &ctx).expect_err(bad).into_details();
        assert!(e[0].message.contains(why), "{bad}: {e:?}");
    }
    let mut n = net();
    n.address = vec!["fd00::1/64".into(), "fd00::1/48".into(), "10.80.0.1/16".into()];
    let e = validate(&one(n), &ctx).expect_err("same IP twice").into_details();
    assert!(e[0].message.contains("listed twice"), "{e:?}");
    let mut n = net();
    n.peers.get_mut(KEY_B).unwrap().allowed_ips.push("10.199.0.0/24".into());
    assert!(validate(&one(n), &ctx).is_err(), "allowed IP inside the bridge subnet");
    let mut n = net();
    n.peers.get_mut(KEY_B).unwrap().allowed_ips.push("0.0.0.0/0".into());
    n.proxy.insert("https://x.test".into(), vec!["10.199.0.1:443".into()].into());
    let e = validate(&one(n.clone()), &ctx).expect_err("upstream in the bridge").into_details();
    assert_eq!(e.len(), 1, "a default route is fine, the upstream is not: {e:?}");
    n.proxy.remove("https://x.test");
    assert!(validate(&one(n), &ctx).is_ok());
}

#[test]
fn upstreams_must_be_inside_the_network() {
    let mut n = net();
    n.proxy.insert("https://lan.test".into(), vec!["192.168.7.5:443".into()].into());
    assert_eq!(paths(validate(&one(n.clone()), &Context::default())), [r#"$["51820"].proxy["https://lan.test"][0]"#]);
    n.peers.get_mut(KEY_B).unwrap().allowed_ips.push("192.168.7.0/24".into());
    assert!(validate(&one(n), &Context::default()).is_ok(), "a peer's allowed IPs route it");
}

#[test]
fn private_keys_unique_and_upstreams_bounded() {
    let mut other = net();
    other.proxy.clear();
    let p = paths(validate(&[("51820".to_string(), net()), ("51821".to_string(), other)].into(), &Context::default()));
    assert_eq!(p, vec![r#"$["51821"].private_key"#.to_string()]);
    let upstreams = |count: usize| -> Vec<String> { (0..count).map(|i| format!("10.80.{}.{}:443", i / 250, i % 250 + 2)).collect() };
    let max = Limits::default().upstreams;
    assert_eq!(max, 1000, "the documented default");
    let mut n = net();
    let all = upstreams(max + 1);
    let (first, second) = all.split_at(600);
    n.proxy = [("https://many.test".to_string(), first.to_vec().into()), ("https://more.test".to_string(), second.to_vec().into())].into();
    assert_eq!(
        details(validate(&one(n.clone()), &Context::default())),
        [(
            r#"$["51820"].proxy"#.to_string(),
            "1001 distinct upstreams; at most 1000 (--max-upstreams, GATEWAY_MAX_UPSTREAMS raises it)".to_string()
        )]
    );
    n.proxy = [("https://many.test".to_string(), upstreams(max).into())].into();
    assert!(validate(&one(n), &Context::default()).is_ok(), "exactly the maximum is fine");
}

#[test]
fn an_upstream_list_longer_than_any_cap_is_counted_not_kept() {
    use crate::model::ProxyTarget;
    let list = |n: usize, item: &str| format!("[{}]", vec![item; n].join(","));
    let parse = |json: &str| serde_json::from_str::<ProxyTarget>(json).unwrap();
    assert!(matches!(parse(&list(10_000, r#""x""#)), ProxyTarget::Upstreams(v) if v.len() == 10_000), "10,000 kept");
    assert_eq!(parse(&list(10_006, r#""x""#)), ProxyTarget::TooLong { upstreams: 10_006, object: false });
    assert_eq!(parse(&list(20_000, r#"[1, {"a": "b"}]"#)), ProxyTarget::TooLong { upstreams: 20_000, object: false });
    let object = parse(&format!(r#"{{"proxy_protocol": true, "upstreams": {}}}"#, list(12_345, "1")));
    assert_eq!(object, ProxyTarget::TooLong { upstreams: 12_345, object: true });
    let later = parse(&format!(r#"{{"upstreams": {}, "upstreams": ["10.80.0.2:80"]}}"#, list(12_345, "1")));
    assert!(matches!(later, ProxyTarget::Options(o) if o.upstreams == ["10.80.0.2:80"]), "the last `upstreams` counts");
    let deep = format!("[{}, {}{}]", list(10_000, r#""x""#), "[".repeat(200), "]".repeat(200));
    assert!(serde_json::from_str::<ProxyTarget>(&deep).is_err(), "a counted item is still read with the nesting limit");

    let mut n = net();
    n.proxy = [("tcp://2000".to_string(), object), ("tcp://2001".to_string(), parse(&list(10_001, r#""x""#)))].into();
    let cap = |count| format!("{count} upstreams; at most 1000 (--max-upstreams, GATEWAY_MAX_UPSTREAMS raises it)");
    assert_eq!(
        details(validate(&one(n), &Context::default())),
        [
            (r#"$["51820"].proxy["tcp://2000"].upstreams"#.to_string(), cap(12_345)),
            (r#"$["51820"].proxy["tcp://2001"]"#.to_string(), cap(10_001)),
        ]
    );
}

/// 1,000 networks of 10 peers, each with an HTTPS name.
pub(crate) fn thousand_networks() -> GatewayConfig {
    use base64::Engine;
    let key = |n: u32, p: u8| {
        let mut b = [0x40u8; 32];
        b[1..5].copy_from_slice(&n.to_le_bytes());
        b[5] = p;
        base64::engine::general_purpose::STANDARD.encode(b)
    };
    (0..1000u32)
        .map(|i| {
            let mut n = net();
            n.private_key = key(i, 0);
            n.peers = (1..=10u8)
                .map(|p| {
                    let peer = PeerConfig {
                        preshared_key: None,
                        allowed_ips: vec![format!("10.80.0.{}/32", p + 1)],
                        endpoint: None,
                        persistent_keepalive: None,
                    };
                    (key(i, p), peer)
                })
                .collect();
            n.proxy = [(format!("https://svc{i}.test"), vec!["10.80.0.2:443".to_string()].into())].into();
            ((20000 + i).to_string(), n)
        })
        .collect()
}

#[test]
fn a_thousand_networks_validate() {
    let d = validate(&thousand_networks(), &Context::default()).unwrap();
    assert_eq!(d.networks.len(), 1000);
    assert_eq!(d.networks.values().map(|s| s.peers.len()).sum::<usize>(), 10_000);
}

#[test]
fn an_invalid_network_is_left_out_of_the_checks_across_networks() {
    // Its own problem is reported; that it would share a hostname (or a
    // key) with a valid network is not a second, misleading one.
    let mut bad = net();
    bad.mtu = Some(100);
    let mut good = net();
    good.private_key = KEY_C.into();
    let p = paths(validate(&[("51820".to_string(), bad), ("51821".to_string(), good)].into(), &Context::default()));
    assert_eq!(p, [r#"$["51820"].mtu"#]);
}

/// A proxy map from JSON, for the forms a struct literal cannot write.
fn proxy_json(v: serde_json::Value) -> std::collections::BTreeMap<String, crate::model::ProxyTarget> {
    serde_json::from_value(v).expect("a JSON object")
}

fn details(r: Result<Desired, Problems>) -> Vec<(String, String)> {
    r.expect_err("should be rejected").into_details().into_iter().map(|d| (d.path, d.message)).collect()
}

#[test]
fn object_form_raw_ports_and_proxy_protocol() {
    let mut n = net();
    n.proxy.extend(proxy_json(serde_json::json!({
        "https://pp.example.com": {"upstreams": ["10.80.0.2:8443"], "proxy_protocol": true},
        "https://plain.example.com": {"upstreams": ["10.80.0.2:443"]},
        "tcp://2222": {"upstreams": ["10.80.0.2:22"], "proxy_protocol": true},
        "tcp://5353": ["10.80.0.2:53"],
        "udp://5353": ["10.80.0.2:53"],
        "udp://27015": {"upstreams": ["10.80.0.2:27015"], "proxy_protocol": false},
    })));
    let d = validate(&one(n), &Context::default()).unwrap();
    let spec = &d.networks[&51820];
    let pp: Vec<String> = spec.proxy_protocol.iter().map(ToString::to_string).collect();
    assert_eq!(pp, ["pp.example.com"], "only where asked; the list form and a missing field mean false");
    assert_eq!(spec.https.len(), 3);
    assert_eq!((spec.tcp.keys().collect::<Vec<_>>(), spec.udp.keys().collect::<Vec<_>>()), (vec![&2222, &5353], vec![&5353, &27015]));
    assert!(spec.tcp[&2222].proxy_protocol && !spec.tcp[&5353].proxy_protocol);
    assert!(spec.upstreams().iter().any(|u| u.port() == 22) && !spec.upstreams().iter().any(|u| u.port() == 27015), "TCP upstreams");
    assert_eq!(spec.udp_upstreams().iter().map(|u| u.port()).collect::<Vec<_>>(), [53, 27015]);
}

#[test]
fn new_forms_are_refused_with_their_paths() {
    let mut n = net();
    n.proxy.extend(proxy_json(serde_json::json!({
        "http://h.example.com": {"upstreams": ["10.80.0.2:80"], "proxy_protocol": true},
        "udp://5000": {"upstreams": ["10.80.0.2:5000"], "proxy_protocol": true},
        "https://a.example.com": {"upstreams": ["10.80.0.2:443"], "proxy_protocol": "yes"},
        "https://b.example.com": {"upstreams": ["10.80.0.2:443"], "extra": 1},
        "https://c.example.com": {"proxy_protocol": true},
        "https://d.example.com": {"upstreams": []},
        "https://e.example.com": {"upstreams": "10.80.0.2:443"},
        "https://f.example.com": ["10.80.0.2:443", 7],
        "https://g.example.com": 42,
        "tcp://0": ["10.80.0.2:1"],
        "tcp://080": ["10.80.0.2:1"],
        "tcp://+81": ["10.80.0.2:1"],
        "tcp://65536": ["10.80.0.2:1"],
        "udp:// 82": ["10.80.0.2:1"],
        "sctp://83": ["10.80.0.2:1"],
        "tcp://84": {"upstreams": ["10.80.0.2:x"]},
    })));
    let got = details(validate(&one(n), &Context::default()));
    let p = |k: &str, tail: &str| format!(r#"$["51820"].proxy["{k}"]{tail}"#);
    for (want, says) in [
        (p("http://h.example.com", ".proxy_protocol"), "only for https:// and tcp://"),
        (p("udp://5000", ".proxy_protocol"), "only for https:// and tcp://"),
        (p("https://a.example.com", ".proxy_protocol"), "true or false"),
        (p("https://b.example.com", r#"["extra"]"#), "unknown field"),
        (p("https://c.example.com", ""), "needs \"upstreams\""),
        (p("https://d.example.com", ".upstreams"), "at least one upstream"),
        (p("https://e.example.com", ".upstreams"), "must be a list"),
        (p("https://f.example.com", "[1]"), "must be a string"),
        (p("https://g.example.com", ""), "a list of upstreams IPV4:PORT or an object"),
        (p("tcp://0", ""), "1..=65535"),
        (p("tcp://080", ""), "plain decimal"),
        (p("tcp://+81", ""), "plain decimal"),
        (p("tcp://65536", ""), "1..=65535"),
        (p("udp:// 82", ""), "plain decimal"),
        (p("sctp://83", ""), "tcp:// or udp://"),
        (p("tcp://84", ".upstreams[0]"), "upstream port"),
    ] {
        assert!(got.iter().any(|(path, m)| *path == want && m.contains(says)), "no {want}: ...{says}... in {got:#?}");
    }
    assert_eq!(got.len(), 16, "one problem each: {got:#?}");
}

#[test]
fn a_raw_port_has_one_owner_and_is_none_of_the_gateways_own() {
    let raw = |n: &mut NetworkConfig, v: serde_json::Value| n.proxy = proxy_json(v);
    let mut a = net();
    raw(&mut a, serde_json::json!({"tcp://7000": ["10.80.0.2:7"], "udp://7000": ["10.80.0.2:7"]}));
    let mut b = net();
    b.private_key = KEY_C.into();
    raw(&mut b, serde_json::json!({"udp://7000": ["10.80.0.2:7"], "udp://51820": ["10.80.0.2:7"], "tcp://443": ["10.80.0.2:7"]}));
    assert!(validate(&one(a.clone()), &Context::default()).is_ok(), "tcp:// and udp:// of one port in one network");
    let ports = [(443, "the HTTPS listener".to_string())];
    let ctx = Context { ports: &ports, ..Default::default() };
    let mut got = details(validate(&[("51820".to_string(), a), ("51821".to_string(), b)].into(), &ctx));
    got.sort();
    assert_eq!(
        got,
        [
            (r#"$["51821"].proxy["tcp://443"]"#.into(), "port 443 is already used by the HTTPS listener; a port may be used once".into()),
            (
                r#"$["51821"].proxy["udp://51820"]"#.into(),
                "port 51820 is already used by network 51820's WireGuard listen port; a port may be used once".into()
            ),
            (r#"$["51821"].proxy["udp://7000"]"#.into(), "port 7000 is already used by network 51820; a port may be used once".into()),
        ]
    );
}

#[test]
fn raw_ports_outside_the_operators_range_are_refused() {
    let mut n = net();
    n.proxy = proxy_json(serde_json::json!({
        "tcp://22": ["10.80.0.2:22"], "udp://1023": ["10.80.0.2:7"], "tcp://1024": ["10.80.0.2:7"], "udp://65535": ["10.80.0.2:7"],
    }));
    let got = details(validate(&one(n.clone()), &Context::default()));
    let says = |port: u16, range: &str| format!("port {port} is outside the raw ports this gateway opens ({range}, --raw-port-range)");
    assert_eq!(
        got,
        [
            (r#"$["51820"].proxy["tcp://22"]"#.into(), says(22, "1024-65535")),
            (r#"$["51820"].proxy["udp://1023"]"#.into(), says(1023, "1024-65535")),
        ],
        "the default is 1024-65535, both ends included"
    );
    let ctx = Context { raw_ports: "1-2000".parse().unwrap(), ..Context::default() };
    let got = details(validate(&one(n), &ctx));
    assert_eq!(got, [(r#"$["51820"].proxy["udp://65535"]"#.into(), says(65535, "1-2000"))]);
}

#[test]
fn only_host_ports_the_state_before_did_not_open_are_probed() {
    use crate::types::Transport::{Tcp, Udp};
    let mut a = net();
    a.proxy = proxy_json(serde_json::json!({"tcp://7000": ["10.80.0.2:7"], "udp://7001": ["10.80.0.2:7"]}));
    let mut b = net();
    b.private_key = KEY_C.into();
    b.proxy = proxy_json(serde_json::json!({"tcp://7002": ["10.80.0.2:7"]}));
    let before: crate::model::GatewayConfig = [("51820".to_string(), a.clone())].into();
    let ports = host_ports_of(&before);
    assert_eq!(ports, [(Tcp, 7000), (Udp, 7001), (Udp, 51820)].into());
    let after = validate(&[("51820".to_string(), a), ("51821".to_string(), b)].into(), &Context::default()).unwrap();
    let new: Vec<(String, Transport, u16, bool)> =
        new_host_ports(&ports, &after).into_iter().map(|h| (h.path, h.transport, h.port, h.wireguard)).collect();
    assert_eq!(
        new,
        [(r#"$["51821"]"#.to_string(), Udp, 51821, true), (r#"$["51821"].proxy["tcp://7002"]"#.to_string(), Tcp, 7002, false),],
        "network 51820's ports are the gateway's already"
    );
    assert!(new_host_ports(&host_ports_of(&Default::default()), &after).len() == 5, "all of them from an empty state");
    // A stored config that is not valid today still tells its ports.
    let mut odd = net();
    odd.proxy = proxy_json(serde_json::json!({"tcp://22": ["nonsense"], "https://x.test": ["10.80.0.2:443"]}));
    assert_eq!(host_ports_of(&[("51822".to_string(), odd)].into()), [(Tcp, 22), (Udp, 51822)].into());
}

#[test]
fn list_form_unchanged() {
    let json = serde_json::json!({"https://app.example.com": ["10.80.0.2:443"]});
    let map = proxy_json(json.clone());
    assert!(matches!(map["https://app.example.com"], crate::model::ProxyTarget::Upstreams(_)));
    assert_eq!(serde_json::to_value(&map).unwrap(), json, "stored and shown as given");
}

/// A network that keeps its private key keeps the public key the previous
/// state derived (no second x25519 multiplication); a new private key gets
/// its own.
#[test]
fn the_previous_public_key_is_kept_only_with_the_same_private_key() {
    let mut previous = validate(&one(net()), &Context::default()).unwrap();
    // KEY_A derives KEY_C, not this: seeing it proves it was taken.
    let marker = crate::types::PublicKey::from_bytes([7; 32]);
    std::sync::Arc::make_mut(previous.networks.get_mut(&51820).unwrap()).public_key = marker;
    let ctx = Context { previous: Some(&previous), ..Context::default() };
    assert_eq!(validate(&one(net()), &ctx).unwrap().networks[&51820].public_key, marker);
    let mut n = net();
    n.private_key = KEY_C.into();
    let derived = KEY_C.parse::<SecretKey>().unwrap().clamped().public_key();
    assert_eq!(validate(&one(n), &ctx).unwrap().networks[&51820].public_key, derived);
    assert_ne!(derived, marker);
}

/// A network given exactly as in the previous config is not checked
/// again: it keeps the previous spec, the same shared value (the previous
/// spec is marked to tell). A changed network is checked and built anew,
/// and the checks across networks still see every network.
#[test]
fn a_network_given_as_before_keeps_its_spec_and_only_changed_ones_are_checked() {
    let mut other = net();
    other.private_key = KEY_C.into();
    other.address = vec!["10.81.0.1/24".into()];
    other.peers.clear();
    other.proxy = [("https://other.example.com".to_string(), vec!["10.81.0.9:443".to_string()].into())].into();
    let config: GatewayConfig = [("51820".to_string(), net()), ("51821".to_string(), other.clone())].into();
    let mut previous = validate(&config, &Context::default()).unwrap();
    std::sync::Arc::make_mut(previous.networks.get_mut(&51820).unwrap()).mtu = 1399;
    let ctx = Context { previous: Some(&previous), previous_config: Some(&config), ..Context::default() };
    let mut changed = config.clone();
    changed.get_mut("51821").unwrap().mtu = Some(1300);
    let d = validate(&changed, &ctx).unwrap();
    assert!(std::sync::Arc::ptr_eq(&d.networks[&51820], &previous.networks[&51820]), "unchanged: the previous spec itself");
    assert_eq!(d.networks[&51820].mtu, 1399, "not built again (that would give 1420)");
    assert_eq!(d.networks[&51821].mtu, 1300, "the changed one is built anew");
    // Unchanged 51820 still owns its hostname against a changed network.
    changed.get_mut("51821").unwrap().proxy.insert("http://app.example.com".into(), vec!["10.81.0.9:80".to_string()].into());
    assert_eq!(paths(validate(&changed, &ctx)), [r#"$["51821"].proxy["http://app.example.com"]"#]);
    // A bad value in a changed network is found as ever.
    changed.get_mut("51821").unwrap().mtu = Some(1);
    assert!(paths(validate(&changed, &ctx)).contains(&r#"$["51821"].mtu"#.to_string()));
}

/// Endpoints the host's WireGuard socket must not send to: each a 422 at
/// the endpoint's own path, saying what it is; addresses of other machines
/// (public or private, IPv4, IPv6 or IPv4-mapped) pass.
#[test]
fn endpoints_must_be_unicast_addresses_outside_the_bridge() {
    let bridge = ["10.199.0.0/16".parse().unwrap()];
    let ctx = Context { reserved: &bridge, ..Default::default() };
    let path = format!(r#"$["51820"].peers["{KEY_B}"].endpoint"#);
    for (bad, why) in [
        ("127.0.0.1:51820", "loopback"),
        ("127.8.9.10:1", "loopback"),
        ("[::1]:51820", "loopback"),
        ("[::ffff:127.0.0.1]:51820", "loopback"),
        ("169.254.169.254:80", "link-local"),
        ("[fe80::1]:51820", "link-local"),
        ("[febf::1]:51820", "link-local"),
        ("[fe80::1%2]:51820", "scope id"),
        ("[2001:db8::1%2]:51820", "scope id"),
        ("[::ffff:169.254.0.1]:51820", "link-local"),
        ("224.0.0.1:51820", "multicast"),
        ("239.255.255.250:1900", "multicast"),
        ("255.255.255.255:51820", "broadcast"),
        ("[ff02::1]:51820", "multicast"),
        ("[::ffff:224.0.0.5]:51820", "multicast"),
        ("0.0.0.0:51820", "unspecified"),
        ("0.1.2.3:51820", "unspecified"),
        ("[::]:51820", "unspecified"),
        ("[::ffff:0.0.0.0]:51820", "unspecified"),
        ("[::102:304]:51820", "IPv4-compatible"),
        ("10.199.0.1:51820", "bridge subnet 10.199.0.0/16"),
        ("10.199.202.108:51820", "bridge subnet"),
        ("[::ffff:10.199.0.1]:51820", "bridge subnet"),
    ] {
        let mut n = net();
        n.peers.get_mut(KEY_B).unwrap().endpoint = Some(bad.into());
        let e = validate(&one(n), &ctx).expect_err(bad).into_details();
        assert_eq!(e.len(), 1, "{bad}: {e:?}");
        assert_eq!(e[0].path, path, "{bad}");
        assert!(e[0].message.contains(why) && e[0].message.contains(bad), "{bad}: {}", e[0].message);
    }
    for good in
        ["203.0.113.7:41213", "10.200.0.1:51820", "192.168.1.5:1", "[2001:db8::1]:51820", "[::ffff:203.0.113.7]:51820", "[fd00::2]:51820"]
    {
        let mut n = net();
        n.peers.get_mut(KEY_B).unwrap().endpoint = Some(good.into());
        assert!(validate(&one(n), &ctx).is_ok(), "{good}");
    }
}

/// Each cap refuses a list longer than itself as a whole (one problem at the
/// list's path naming the cap, its value and the option), and takes one of
/// exactly its length.
#[test]
fn each_cap_names_itself_its_value_and_its_option() {
    let limits = Limits { networks: 2, peers: 1, allowed_ips: 2, routes: 2, upstreams: 2 };
    let ctx = Context { limits, ..Context::default() };
    let says = |n: usize, what: &str, cap: usize, opt: &str, var: &str| format!("{n} {what}; at most {cap} (--{opt}, {var} raises it)");
    let at = |path: &str, message: String| vec![(path.to_string(), message)];

    let mut three = one(net());
    for (port, key) in [("51821", KEY_B), ("51822", KEY_C)] {
        let mut n = net();
        n.private_key = key.into();
        n.proxy.clear();
        three.insert(port.into(), n);
    }
    assert_eq!(details(validate(&three, &ctx)), at("$", says(3, "networks", 2, "max-networks", "GATEWAY_MAX_NETWORKS")));
    three.remove("51822");
    assert!(validate(&three, &ctx).is_ok(), "two networks: exactly the cap");

    let mut n = net();
    n.peers.insert(KEY_C.into(), PeerConfig { preshared_key: None, allowed_ips: vec![], endpoint: None, persistent_keepalive: None });
    assert_eq!(details(validate(&one(n), &ctx)), at(r#"$["51820"].peers"#, says(2, "peers", 1, "max-peers", "GATEWAY_MAX_PEERS")));

    let mut n = net();
    n.peers.get_mut(KEY_B).unwrap().allowed_ips = vec!["10.80.0.2/32".into(), "10.80.0.3/32".into(), "10.80.0.4/32".into()];
    let path = format!(r#"$["51820"].peers["{KEY_B}"].allowed_ips"#);
    assert_eq!(details(validate(&one(n), &ctx)), at(&path, says(3, "allowed IPs", 2, "max-allowed-ips", "GATEWAY_MAX_ALLOWED_IPS")));
    let mut n = net();
    n.address = vec!["10.80.0.1/16".into(), "fd80::1/64".into(), "10.81.0.1/16".into()];
    let want = at(r#"$["51820"].address"#, says(3, "addresses", 2, "max-allowed-ips", "GATEWAY_MAX_ALLOWED_IPS"));
    assert_eq!(details(validate(&one(n), &ctx))[..1], want[..]);

    let mut n = net();
    n.proxy.insert("udp://5000".into(), vec!["10.80.0.2:53".to_string()].into());
    assert_eq!(
        details(validate(&one(n), &ctx)),
        at(r#"$["51820"].proxy"#, says(3, "proxy entries", 2, "max-routes", "GATEWAY_MAX_ROUTES"))
    );

    let mut n = net();
    let three_upstreams: Vec<String> = ["10.80.0.2:1", "10.80.0.2:2", "10.80.0.2:2"].map(String::from).into();
    n.proxy = [("tcp://5000".to_string(), three_upstreams.into())].into();
    let want = at(r#"$["51820"].proxy["tcp://5000"]"#, says(3, "upstreams", 2, "max-upstreams", "GATEWAY_MAX_UPSTREAMS"));
    assert_eq!(details(validate(&one(n), &ctx)), want, "a list longer than the cap, duplicates or not");
}

/// At most [`MAX_DETAILS`] problems are kept, all are counted, and
/// validation stops at [`STOP_AFTER`]: a million bad items are not walked.
#[test]
fn problems_keep_the_first_hundred_count_all_and_stop_at_ten_thousand() {
    let limits = Limits { allowed_ips: 2_000_000, ..Limits::default() };
    let ctx = Context { limits, ..Context::default() };
    let bad = |count: usize| {
        let mut n = net();
        n.peers.get_mut(KEY_B).unwrap().allowed_ips = vec!["x".to_string(); count];
        one(n)
    };
    let e = validate(&bad(250), &ctx).expect_err("250 bad allowed IPs");
    assert_eq!((e.details().len(), e.total()), (100, 250));
    let first = format!(r#"$["51820"].peers["{KEY_B}"].allowed_ips[0]"#);
    assert_eq!(e.details()[0].path, first, "the first ones, in order");
    assert!(e.details()[99].path.ends_with(".allowed_ips[99]"), "{:?}", e.details()[99]);

    let e = validate(&bad(1_000_000), &ctx).expect_err("a million bad allowed IPs");
    assert_eq!((e.details().len(), e.total()), (100, 10_000), "stopped at 10,000");
    assert!(e.enough());
}

#[test]
fn access_and_limits_are_carried_per_route_and_absent_without_them() {
    use crate::spec::{Bandwidth, RouteLimits};
    use crate::types::ProxyKey;
    let mut n = net();
    n.proxy.extend(proxy_json(serde_json::json!({
        "https://app.example.com": {
            "upstreams": ["10.80.0.2:443"],
            "allow": ["203.0.113.0/24", "2001:db8::/32", "203.0.113.0/24"],
            "deny": ["203.0.113.7/32"],
            "max_connections": 1000,
            "max_connections_per_client": 20.0,
            "bandwidth": {"ingress_mbit": 100, "egress_mbit": 50}
        },
        "tcp://2222": {"upstreams": ["10.80.0.2:22"], "deny": [], "max_connections": null},
        "udp://5353": {"upstreams": ["10.80.0.2:53"], "max_connections_per_client": 2, "bandwidth": {"egress_mbit": 1}},
    })));
    n.bandwidth = Some(serde_json::json!({"ingress_mbit": 1000}));
    let d = validate(&one(n), &Context::default()).unwrap();
    let spec = &d.networks[&51820];
    let key = |k: &str| k.parse::<ProxyKey>().unwrap();
    let cidrs = |l: &[&str]| l.iter().map(|c| c.parse().unwrap()).collect::<Vec<crate::types::Cidr>>();
    assert_eq!(
        spec.route_limits[&key("https://app.example.com")],
        RouteLimits {
            allow: Some(cidrs(&["203.0.113.0/24", "2001:db8::/32"])),
            deny: cidrs(&["203.0.113.7/32"]),
            max_connections: Some(1000),
            max_connections_per_client: Some(20),
            bandwidth: Some(Bandwidth { ingress_mbit: Some(100), egress_mbit: Some(50) }),
        },
        "sorted, duplicates once"
    );
    let udp = &spec.route_limits[&key("udp://5353")];
    assert_eq!((udp.max_connections_per_client, udp.bandwidth), (Some(2), Some(Bandwidth { ingress_mbit: None, egress_mbit: Some(1) })));
    assert!(!spec.route_limits.contains_key(&key("tcp://2222")), "an empty deny and a null limit say nothing");
    assert!(!spec.route_limits.contains_key(&key("http://app.example.com")), "the list form has none");
    assert_eq!(spec.route_limits.len(), 2);
    assert_eq!(spec.bandwidth, Some(Bandwidth { ingress_mbit: Some(1000), egress_mbit: None }));
    let plain = validate(&one(net()), &Context::default()).unwrap();
    assert!(plain.networks[&51820].route_limits.is_empty() && plain.networks[&51820].bandwidth.is_none());
}

#[test]
fn bad_access_and_limit_values_are_refused_with_their_paths() {
    let mut n = net();
    n.proxy.extend(proxy_json(serde_json::json!({
        "tcp://2222": {"upstreams": ["10.80.0.2:22"], "allow": ["10.0.0.1/8", "x", 7, "::ffff:10.0.0.0/104", "10.0.0.0/33"]},
        "tcp://2223": {"upstreams": ["10.80.0.2:22"], "allow": []},
        "tcp://2224": {"upstreams": ["10.80.0.2:22"], "deny": "10.0.0.0/8"},
        "udp://2225": {"upstreams": ["10.80.0.2:22"], "max_connections": 0, "max_connections_per_client": 1000001},
        "https://m.example.com": {"upstreams": ["10.80.0.2:22"], "max_connections": 2.5, "max_connections_per_client": "3"},
        "http://b.example.com": {"upstreams": ["10.80.0.2:22"], "bandwidth": {"ingress_mbit": 0, "egress_mbit": -1, "burst": 1}},
        "http://c.example.com": {"upstreams": ["10.80.0.2:22"], "bandwidth": 5},
        "https://i.example.com": {"upstreams": "10.80.0.2:22", "allow": [], "max_connections": -1},
        "https://pp.example.com": {"upstreams": ["10.80.0.2:22"], "proxy_protocol": true, "max_connections_per_client": 2, "allow": ["10.0.0.0/8"]},
        "tcp://2226": {"upstreams": ["10.80.0.2:22"], "proxy_protocol": true, "max_connections": 2},
    })));
    n.bandwidth = Some(serde_json::json!({"egress_mbit": 1000001}));
    let got = details(validate(&one(n), &Context::default()));
    let p = |k: &str, tail: &str| format!(r#"$["51820"].proxy["{k}"]{tail}"#);
    for (want, says) in [
        (p("tcp://2222", ".allow[0]"), "host bits set; the network is 10.0.0.0/8"),
        (p("tcp://2222", ".allow[1]"), "ADDRESS/PREFIX"),
        (p("tcp://2222", ".allow[2]"), "must be a CIDR string"),
        (p("tcp://2222", ".allow[3]"), "IPv4 form"),
        (p("tcp://2222", ".allow[4]"), "prefix length"),
        (p("tcp://2223", ".allow"), "empty allow list would refuse every client"),
        (p("tcp://2224", ".deny"), "must be a list of CIDRs"),
        (p("udp://2225", ".max_connections"), "1..=1000000"),
        (p("udp://2225", ".max_connections_per_client"), "1..=1000000"),
        (p("https://m.example.com", ".max_connections"), "whole number"),
        (p("https://m.example.com", ".max_connections_per_client"), "whole number"),
        (p("http://b.example.com", ".bandwidth.ingress_mbit"), "1..=1000000"),
        (p("http://b.example.com", ".bandwidth.egress_mbit"), "whole number of Mbit/s"),
        (p("http://b.example.com", r#".bandwidth["burst"]"#), "only ingress_mbit and egress_mbit"),
        (p("http://c.example.com", ".bandwidth"), "must be an object"),
        (p("https://i.example.com", ".upstreams"), "must be a list"),
        (p("https://i.example.com", ".allow"), "empty allow list"),
        (p("https://i.example.com", ".max_connections"), "1..=1000000"),
        (r#"$["51820"].bandwidth.egress_mbit"#.to_string(), "1..=1000000"),
        (p("https://pp.example.com", ".max_connections_per_client"), "not supported"),
    ] {
        assert!(got.iter().any(|(path, m)| *path == want && m.contains(says)), "no {want}: ...{says}... in {got:#?}");
    }
    assert_eq!(got.len(), 20, "one problem each (tcp:// takes limits with proxy_protocol): {got:#?}");
}

#[test]
fn an_allow_list_is_bounded_like_allowed_ips() {
    let mut n = net();
    let many: Vec<String> = (0..3).map(|i| format!("10.{i}.0.0/16")).collect();
    n.proxy.extend(proxy_json(serde_json::json!({"tcp://2222": {"upstreams": ["10.80.0.2:22"], "allow": many}})));
    let ctx = Context { limits: super::Limits { allowed_ips: 2, ..Default::default() }, ..Default::default() };
    let got = details(validate(&one(n), &ctx));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].0.ends_with(r#"["tcp://2222"].allow"#) && got[0].1.contains("--max-allowed-ips"), "{got:#?}");
}

#[test]
fn an_allow_list_past_the_ceiling_is_counted_not_kept() {
    let mut n = net();
    let many = vec!["10.0.0.0/8"; crate::model::MAX_UPSTREAMS_CEILING + 5];
    n.proxy.extend(proxy_json(serde_json::json!({"tcp://2222": {"upstreams": ["10.80.0.2:22"], "deny": many}})));
    assert!(matches!(n.proxy["tcp://2222"], crate::model::ProxyTarget::TooLongList { len: 10_005, .. }));
    let ctx = Context { limits: super::Limits { allowed_ips: 1_000_000, ..Default::default() }, ..Default::default() };
    let got = details(validate(&one(n), &ctx));
    assert_eq!(
        got,
        [(
            r#"$["51820"].proxy["tcp://2222"].deny"#.to_string(),
            "10005 CIDRs; at most 10000 (--max-allowed-ips, GATEWAY_MAX_ALLOWED_IPS raises it)".to_string()
        )]
    );
}

/// tc numbers a network's shaped routes' classes up to 65,535: one past
/// that many is refused, as a whole, at the network's `proxy`.
#[test]
fn more_shaped_routes_than_tc_has_classes_are_refused() {
    let limits = Limits { networks: 1, peers: 10, allowed_ips: 10, routes: 100_000, upstreams: 10 };
    let ctx = Context { limits, ..Context::default() };
    let shaped = |count: usize| {
        let mut n = net();
        let route = || serde_json::json!({ "upstreams": ["10.80.0.2:443"], "bandwidth": { "ingress_mbit": 10 } });
        n.proxy = (0..count).map(|i| (format!("https://r{i}.example.com"), serde_json::from_value(route()).unwrap())).collect();
        one(n)
    };
    assert!(validate(&shaped(crate::spec::MAX_SHAPED_ROUTES), &ctx).is_ok(), "exactly as many as there are classes");
    let e = validate(&shaped(crate::spec::MAX_SHAPED_ROUTES + 1), &ctx).expect_err("one too many").into_details();
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path, r#"$["51820"].proxy"#);
    assert!(e[0].message.starts_with("65521 routes with a bandwidth; at most 65520 in one network"), "{}", e[0].message);
}
