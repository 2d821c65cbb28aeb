use super::nginx::HEADER;
use super::*;
use crate::layout::Layout;
use crate::model::{GatewayConfig, NetworkConfig, PeerConfig};
use crate::spec::{Desired, parse_custom_forwardings};
use crate::validate::{Context, validate};

pub const PRIV: &str = "0EtpYOfpZyKaIcpkq+KO/+joyV431f1X99CcB2OMo3c=";
pub const PEER1: &str = "OxvFhrgLnI9e4xzMMA2qQ7wm/xCUzxaWW5cb1JGkWSA=";
pub const PEER2: &str = "LRj4SHqfSjzR+dz1Zmcq7dfiZk4tFWIm+wKv1QqGXx0=";

/// Two networks: 51820 with two peers (one with a preshared key, keepalive
/// and endpoint; one with a LAN behind it) and three routes, 51821 bare.
pub fn sample_config() -> GatewayConfig {
    let net = NetworkConfig {
        private_key: PRIV.into(),
        listen_port: Some(51820),
        mtu: Some(1380),
        address: vec!["10.80.0.1/16".into()],
        peers: [
            (
                PEER1.to_string(),
                PeerConfig {
                    preshared_key: Some(PEER2.into()),
                    allowed_ips: vec!["10.80.0.2/32".into()],
                    endpoint: Some("203.0.113.7:41213".into()),
                    persistent_keepalive: Some(25),
                },
            ),
            (
                PEER2.to_string(),
                PeerConfig {
                    preshared_key: None,
                    allowed_ips: vec!["10.80.0.3/32".into(), "192.168.7.0/24".into()],
                    endpoint: None,
                    persistent_keepalive: None,
                },
            ),
        ]
        .into(),
        proxy: [
            ("https://app.example.com".to_string(), vec!["10.80.0.2:443".to_string(), "10.80.0.3:443".to_string()]),
            ("http://app.example.com".to_string(), vec!["10.80.0.2:80".to_string()]),
            ("https://db.example.com".to_string(), vec!["10.80.0.3:443".to_string()]),
        ]
        .into(),
    };
    let mut other = net.clone();
    other.private_key = "0HPlRxcp5W4u92WrM/Esf7dN1T6XPk/a96sfThph7Vo=".into();
    other.listen_port = None;
    other.mtu = None;
    other.peers.clear();
    other.address = vec!["10.81.0.1/24".into()];
    other.proxy = [("https://other.test".to_string(), vec!["10.81.0.9:8443".to_string()])].into();
    [("51820".to_string(), net), ("51821".to_string(), other)].into()
}

pub fn sample_desired() -> Desired {
    validate(&sample_config(), &Context::default()).expect("the sample is valid")
}

/// Compares with a golden file. Only `UPDATE_GOLDEN=1` rewrites it, and
/// never in CI (`CI` set), where a rewrite would hide the difference.
pub fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        assert!(std::env::var_os("CI").is_none(), "UPDATE_GOLDEN=1 is refused in CI: golden files are checked there, never rewritten");
        std::fs::write(&path, actual).expect("write golden file");
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(
        actual, expected,
        "golden file {name} differs (if the change is intended: UPDATE_GOLDEN=1 cargo test, then review the diff)"
    );
}

fn options() -> NginxOptions {
    NginxOptions { https_listen: "443".into(), http_listen: "80".into(), server_names_hash_bucket_size: 512 }
}

fn site() -> (Desired, NginxSite) {
    let d = sample_desired();
    let custom = parse_custom_forwardings("https://api.example.com=127.0.0.1:8443,http://api.example.com=127.0.0.1:8080").unwrap();
    let site = NginxSite::build(&Layout::default(), &d, &custom, &options());
    (d, site)
}

#[test]
fn golden_nginx() {
    let (_, site) = site();
    golden("nginx-stream.conf", &nginx_stream(&site));
    golden("nginx-http.conf", &nginx_http(&site));
    let empty = NginxSite::build(&Layout::default(), &Desired::default(), &[], &options());
    golden("nginx-stream-empty.conf", &nginx_stream(&empty));
    assert_eq!(nginx_http(&empty), HEADER);
}

#[test]
fn golden_iptables() {
    let (d, _) = site();
    let rs = rules(&Layout::default(), &d.networks[&51820]);
    golden("iptables-51820.rules", &iptables_restore(&rs, &JUMPS.map(|j| j.1)));
    assert!(!iptables_restore(&rs, &[]).contains("-A PREROUTING"), "present jumps are not added again");
}

#[test]
fn golden_wireguard() {
    let (d, _) = site();
    golden("wg-51820.conf", &wg_conf(&d.networks[&51820]));
}

#[test]
fn nginx_and_nat_agree_on_ports() {
    let (d, site) = site();
    let layout = Layout::default();
    let rs = rules(&layout, &d.networks[&51820]);
    let veth = layout.veth_ns_ip(51820);
    let served: Vec<_> = site.https.iter().chain(&site.http).flat_map(|r| r.servers.iter()).filter(|s| *s.ip() == veth).collect();
    assert_eq!(served.len(), 4, "three routes of 51820 with four servers: {site:?}");
    for srv in served {
        let rule = format!("-d {}/32 -i gw-uplink -p tcp -m tcp --dport {} -j DNAT", srv.ip(), srv.port());
        assert!(rs.nat.iter().any(|l| l.contains(&rule)), "{srv} has no DNAT rule in {:?}", rs.nat);
    }
    let routes = site.routes();
    assert_eq!(routes["https://api.example.com"], ["127.0.0.1:8443".parse().unwrap()], "custom forwardings go straight to their upstream");
}
