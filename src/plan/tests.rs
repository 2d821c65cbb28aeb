//! The planner against a converged system as the tools really printed it
//! (`tests/fixtures/converged`), not as the planner would describe it.

use super::*;
use crate::model::GatewayConfig;
use crate::observed::HostVeth;
use crate::spec::Desired;
use crate::testing::{converged_config, converged_desired, nginx_files, observed_converged};
use crate::types::PublicKey;
use crate::validate::{Context, validate};

const PEER_A: &str = "OxvFhrgLnI9e4xzMMA2qQ7wm/xCUzxaWW5cb1JGkWSA=";
const PEER_B: &str = "LRj4SHqfSjzR+dz1Zmcq7dfiZk4tFWIm+wKv1QqGXx0=";

/// The plan for `desired`, every target computed anew, with the payloads
/// left out (`without_payload`): the tests below say which actions are
/// planned; `actions_carry_the_targets_payload` says what they carry.
fn plan(desired: &Desired, observed: &Observed, layout: &Layout, nginx: &NginxFiles) -> Vec<Action> {
    let targets = Targets::of(layout, desired);
    super::plan(&targets, observed, layout, &Arc::new(nginx.clone())).into_iter().map(without_payload).collect()
}

fn without_payload(a: Action) -> Action {
    match a {
        Action::ConfigureWg(p, _, changes) => configure(p, changes),
        Action::KickPeers { port, peers, .. } => kick_peers(port, peers),
        Action::SetRules { port, missing_jumps, .. } => set_rules(port, missing_jumps),
        Action::WriteNginx(_) => write_nginx(),
        other => other,
    }
}

fn configure(port: u16, changes: Vec<WgChange>) -> Action {
    Action::ConfigureWg(port, WgConf::default(), changes)
}

fn kick_peers(port: u16, peers: Vec<(PublicKey, std::net::SocketAddr)>) -> Action {
    Action::KickPeers { port, peers, conf: WgConf::default() }
}

fn set_rules(port: u16, missing_jumps: Vec<Jump>) -> Action {
    Action::SetRules { port, rules: RuleSet::default(), missing_jumps }
}

fn write_nginx() -> Action {
    Action::WriteNginx(Default::default())
}

/// A converged network as the tools would report it, built from its spec
/// (checked against the captured fixtures by
/// `converged_view_matches_what_the_tools_report`).
fn converged_view(layout: &Layout, spec: &NetworkSpec) -> ObservedNetwork {
    use crate::observed::Link;
    let rules = render::rules(layout, spec, &layout.network_dnat(spec, None));
    let peer = |p: &crate::spec::PeerSpec| WgPeer {
        preshared_key: p.preshared_key.clone(),
        endpoint: p.endpoint,
        allowed_ips: p.allowed_ips.clone(),
        latest_handshake: 0,
        rx: 0,
        tx: 0,
        keepalive: p.persistent_keepalive,
    };
    ObservedNetwork {
        wg: Some(WgDump {
            private_key: Some(spec.private_key.clone()),
            public_key: Some(spec.public_key),
            listen_port: spec.port,
            peers: spec.peers.iter().map(|(k, p)| (*k, peer(p))).collect(),
        }),
        wg_link: Some(Link { ifindex: 0, mtu: spec.mtu, up: true, addresses: spec.addresses.clone() }),
        uplink: Some(Link { ifindex: 0, mtu: 1500, up: true, addresses: vec![layout.veth_ns_addr(spec.port)] }),
        forwarding: true,
        rules: Some(ObservedRules {
            nat: rules.nat,
            filter6: Some(rules.filter.clone()),
            filter: rules.filter,
            jumps: render::JUMPS.into_iter().collect(),
            forward_drop: [Family::Ipv4, Family::Ipv6].into(),
        }),
        rules_generation: None,
        routes: spec.routes(),
        endpoints_changed: false,
        problems: Vec::new(),
        uplink_qdisc: Some("noqueue".into()),
        shaping: None,
        open_connections: Default::default(),
    }
}

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn key(s: &str) -> PublicKey {
    s.parse().unwrap()
}

/// The plan for a changed config against the converged system.
async fn plan_after(change: impl FnOnce(&mut serde_json::Value)) -> Vec<Action> {
    let mut cfg = serde_json::to_value(converged_config()).unwrap();
    change(&mut cfg);
    let cfg: GatewayConfig = serde_json::from_value(cfg).unwrap();
    let desired = validate(&cfg, &Context::default()).expect("changed config is valid");
    plan(&desired, &observed_converged().await, &Layout::default(), &nginx_files(&desired))
}

#[tokio::test]
async fn the_converged_system_needs_nothing() {
    let d = converged_desired();
    let observed = observed_converged().await;
    assert_eq!(observed.networks.len(), 2);
    assert_eq!(plan(&d, &observed, &Layout::default(), &nginx_files(&d)), vec![]);
}

#[tokio::test]
async fn each_wireguard_field_changed_reconfigures_that_network_only() {
    let other_key = "cMXKVx1hAvvJ0Hj9OtBhFTXDA4MVk9LlHBr8rBsq5F8=";
    type Change = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: Vec<(&str, Change)> = vec![
        ("private key", Box::new(|c| c["51821"]["private_key"] = other_key.into())),
        ("preshared key removed", Box::new(|c| c["51820"]["peers"][PEER_A].as_object_mut().unwrap().retain(|k, _| k != "preshared_key"))),
        ("preshared key set", Box::new(|c| c["51820"]["peers"][PEER_B]["preshared_key"] = PEER_A.into())),
        ("keepalive changed", Box::new(|c| c["51820"]["peers"][PEER_A]["persistent_keepalive"] = 26.into())),
        ("keepalive set", Box::new(|c| c["51820"]["peers"][PEER_B]["persistent_keepalive"] = 25.into())),
        (
            "allowed IP added",
            Box::new(|c| {
                c["51820"]["peers"][PEER_B]["allowed_ips"] = serde_json::json!(["10.80.0.3/32", "10.80.0.4/32", "192.168.7.0/24"])
            }),
        ),
        ("allowed IP removed", Box::new(|c| c["51820"]["peers"][PEER_A]["allowed_ips"] = serde_json::json!(["10.80.0.2/32"]))),
        ("peer removed", Box::new(|c| c["51820"]["peers"].as_object_mut().unwrap().retain(|k, _| k != PEER_A))),
        ("peer added", Box::new(|c| c["51821"]["peers"] = serde_json::json!({ other_key: { "allowed_ips": ["10.81.0.9/32"] } }))),
        ("endpoint set where WireGuard has none", Box::new(|c| c["51820"]["peers"][PEER_B]["endpoint"] = "10.254.0.8:1".into())),
    ];
    for (what, change) in cases {
        let a = plan_after(change).await;
        let port = if what == "private key" || what == "peer added" { 51821 } else { 51820 };
        let field = match what {
            "private key" => "set private key".to_string(),
            "peer removed" => format!("remove peer {PEER_A}"),
            "peer added" => format!("add peer {other_key}"),
            w if w.starts_with("preshared") => format!("update peer {} (preshared_key)", if w.ends_with("set") { PEER_B } else { PEER_A }),
            w if w.starts_with("keepalive") => {
                format!("update peer {} (persistent_keepalive)", if w.ends_with("set") { PEER_B } else { PEER_A })
            }
            w if w.starts_with("allowed IP") => format!("update peer {} (allowed_ips)", if w.ends_with("added") { PEER_B } else { PEER_A }),
            _ => format!("update peer {PEER_B} (endpoint)"),
        };
        assert!(matches!(a.as_slice(), [Action::ConfigureWg(p, _, _)] if *p == port), "{what}: {a:?}");
        assert_eq!(a[0].to_string(), format!("configure WireGuard: {field}"), "{what}");
    }
}

#[tokio::test]
async fn links_routes_rules_and_nginx_changes_give_exactly_their_action() {
    let a = plan_after(|c| c["51820"]["mtu"] = 9000.into()).await;
    assert_eq!(a, [Action::SetWgLink { port: 51820, mtu: 9000 }]);
    let a = plan_after(|c| c["51821"]["mtu"] = 1280.into()).await;
    assert_eq!(a, [Action::SetWgLink { port: 51821, mtu: 1280 }]);
    let a = plan_after(|c| c["51821"]["address"] = serde_json::json!(["10.81.0.1/24", "fd81::1/64"])).await;
    assert_eq!(a, [Action::AddAddress { port: 51821, dev: Dev::Wg, cidr: cidr("fd81::1/64") }]);
    let a = plan_after(|c| c["51820"]["address"] = serde_json::json!(["10.80.0.1/16"])).await;
    let (gone, routed) = (cidr("fd80::1/64"), cidr("fd80::2/128"));
    assert_eq!(
        a,
        [Action::DelAddress { port: 51820, dev: Dev::Wg, cidr: gone }, Action::AddRoute { port: 51820, cidr: routed }],
        "the peer's fd80::2 is no longer on the interface's subnet: it gets a route"
    );
    // A LAN moved: one route goes, one comes, WireGuard learns the new IPs.
    let a = plan_after(|c| {
        c["51820"]["peers"][PEER_B]["allowed_ips"] = serde_json::json!(["10.80.0.3/32", "192.168.8.0/24"]);
        c["51820"]["proxy"].as_object_mut().unwrap().remove("https://lan.example.com");
    })
    .await;
    assert!(a.iter().any(|a| matches!(a, Action::ConfigureWg(51820, _, _))), "{a:?}");
    assert!(a.contains(&Action::DelRoute { port: 51820, cidr: cidr("192.168.7.0/24") }), "{a:?}");
    assert!(a.contains(&Action::AddRoute { port: 51820, cidr: cidr("192.168.8.0/24") }), "{a:?}");
    assert!(a.contains(&set_rules(51820, vec![])), "the LAN upstream's DNAT goes: {a:?}");
    assert!(a.contains(&write_nginx()), "{a:?}");
    // A new upstream: a DNAT rule and nginx; a new hostname to an existing
    // upstream too: a DNAT port of its own (each route counted and limited apart).
    let a = plan_after(|c| c["51821"]["proxy"]["https://new.test"] = serde_json::json!(["10.81.0.10:443"])).await;
    assert_eq!(a, [set_rules(51821, vec![]), write_nginx()]);
    let a = plan_after(|c| c["51821"]["proxy"]["http://other.test"] = serde_json::json!(["10.81.0.9:8443"])).await;
    assert_eq!(a, [set_rules(51821, vec![]), write_nginx()]);
}

#[tokio::test]
async fn new_ingress_forms_touch_only_their_network() {
    let rules_and_nginx = |port| vec![set_rules(port, vec![]), write_nginx()];
    let a = plan_after(|c| c["51821"]["proxy"]["tcp://2222"] = serde_json::json!({"upstreams": ["10.81.0.9:22"], "proxy_protocol": true}))
        .await;
    assert_eq!(a, rules_and_nginx(51821), "a raw TCP port: its DNAT rule and nginx");
    let a = plan_after(|c| c["51820"]["proxy"]["udp://27015"] = serde_json::json!(["10.80.0.2:27015"])).await;
    assert_eq!(a, rules_and_nginx(51820), "a raw UDP port: its (UDP) DNAT rule and nginx");
    let a = plan_after(|c| c["51821"]["proxy"]["udp://5353"] = serde_json::json!(["10.81.0.9:8443"])).await;
    assert_eq!(a, rules_and_nginx(51821), "UDP to an upstream TCP already has: a UDP rule of its own");
    // The same route in the object form, without and with PROXY protocol.
    let a = plan_after(|c| c["51821"]["proxy"]["https://other.test"] = serde_json::json!({"upstreams": ["10.81.0.9:8443"]})).await;
    assert_eq!(a, [], "the object form without proxy_protocol is the list form");
    let a = plan_after(|c| {
        c["51821"]["proxy"]["https://other.test"] = serde_json::json!({"upstreams": ["10.81.0.9:8443"], "proxy_protocol": true})
    })
    .await;
    assert_eq!(a, [write_nginx()], "PROXY protocol is nginx's alone");
}

fn net(o: &mut Observed) -> &mut crate::observed::ObservedNetwork {
    o.networks.get_mut(&51820).unwrap()
}

#[tokio::test]
async fn observed_drift_of_each_kind_is_repaired() {
    let d = converged_desired();
    let nginx = nginx_files(&d);
    let l = Layout::default();
    let base = observed_converged().await;
    let check = |what: &str, change: &dyn Fn(&mut Observed), want: Vec<Action>| {
        let mut o = base.clone();
        change(&mut o);
        assert_eq!(plan(&d, &o, &l, &nginx), want, "{what}");
    };
    check("listen port", &|o| net(o).wg.as_mut().unwrap().listen_port = 1, vec![configure(51820, vec![WgChange::ListenPort])]);
    check("private key", &|o| net(o).wg.as_mut().unwrap().private_key = None, vec![configure(51820, vec![WgChange::PrivateKey])]);
    check(
        "a stray peer",
        &|o| {
            let extra = net(o).wg.as_ref().unwrap().peers[&key(PEER_A)].clone();
            net(o).wg.as_mut().unwrap().peers.insert(key("cMXKVx1hAvvJ0Hj9OtBhFTXDA4MVk9LlHBr8rBsq5F8="), extra);
        },
        vec![configure(51820, vec![WgChange::RemovePeer(key("cMXKVx1hAvvJ0Hj9OtBhFTXDA4MVk9LlHBr8rBsq5F8="))])],
    );
    check("interface down", &|o| net(o).wg_link.as_mut().unwrap().up = false, vec![Action::SetWgLink { port: 51820, mtu: 1380 }]);
    check(
        "a stray address",
        &|o| net(o).wg_link.as_mut().unwrap().addresses.push(cidr("10.99.0.1/24")),
        vec![Action::DelAddress { port: 51820, dev: Dev::Wg, cidr: cidr("10.99.0.1/24") }],
    );
    check("a route gone", &|o| net(o).routes.clear(), vec![Action::AddRoute { port: 51820, cidr: cidr("192.168.7.0/24") }]);
    check(
        "a stray route",
        &|o| net(o).routes.push(cidr("172.16.0.0/12")),
        vec![Action::DelRoute { port: 51820, cidr: cidr("172.16.0.0/12") }],
    );
    check("a DNAT rule gone", &|o| drop(net(o).rules.as_mut().unwrap().nat.remove(0)), vec![set_rules(51820, vec![])]);
    check("a FORWARD rule gone", &|o| drop(net(o).rules.as_mut().unwrap().filter.pop()), vec![set_rules(51820, vec![])]);
    check(
        "a jump gone",
        &|o| {
            net(o).rules.as_mut().unwrap().jumps.remove(&render::JUMPS[2]);
        },
        vec![set_rules(51820, vec![render::JUMPS[2]])],
    );
    check(
        "the IPv6 jump gone",
        &|o| {
            net(o).rules.as_mut().unwrap().jumps.remove(&render::JUMPS[3]);
        },
        vec![set_rules(51820, vec![render::JUMPS[3]])],
    );
    check(
        "an IPv6 FORWARD rule gone",
        &|o| drop(net(o).rules.as_mut().unwrap().filter6.as_mut().unwrap().pop()),
        vec![set_rules(51820, vec![])],
    );
    for family in [render::Family::Ipv4, render::Family::Ipv6] {
        check(
            &format!("FORWARD policy ACCEPT ({family:?})"),
            &|o| {
                net(o).rules.as_mut().unwrap().forward_drop.remove(&family);
            },
            vec![set_rules(51820, vec![])],
        );
    }
    check("forwarding off", &|o| net(o).forwarding = false, vec![Action::SetForwarding(51820)]);
    check("uplink down", &|o| net(o).uplink.as_mut().unwrap().up = false, vec![Action::UplinkUp(51820)]);
    check(
        "uplink address gone",
        &|o| net(o).uplink.as_mut().unwrap().addresses.clear(),
        vec![Action::AddAddress { port: 51820, dev: Dev::Uplink, cidr: l.veth_ns_addr(51820) }],
    );
    check("veth not isolated", &|o| o.host_veths.get_mut(&51820).unwrap().isolated = false, vec![Action::AttachVeth(51820)]);
    check("veth off the bridge", &|o| o.host_veths.get_mut(&51820).unwrap().on_bridge = false, vec![Action::AttachVeth(51820)]);
    check("veth down", &|o| o.host_veths.get_mut(&51820).unwrap().up = false, vec![Action::AttachVeth(51820)]);
    let new_uplink = |delete_first: bool| {
        let mut v = if delete_first { vec![Action::DeleteHostVeth(51820)] } else { vec![] };
        v.extend([Action::CreateVeth(51820), Action::AttachVeth(51820), Action::UplinkUp(51820)]);
        v.push(Action::AddAddress { port: 51820, dev: Dev::Uplink, cidr: l.veth_ns_addr(51820) });
        v
    };
    check("uplink gone, our root end lingering", &|o| net(o).uplink = None, new_uplink(true));
    check(
        "uplink gone, a root link of someone else's by that name",
        &|o| {
            net(o).uplink = None;
            o.host_veths.get_mut(&51820).unwrap().owned = false;
        },
        new_uplink(false),
    );
    check("bridge down", &|o| o.bridge.as_mut().unwrap().up = false, vec![Action::BridgeUp]);
    check("bridge address gone", &|o| o.bridge.as_mut().unwrap().addresses = Some(vec![]), vec![Action::AddBridgeAddress(l.bridge_addr())]);
    check("nginx stopped", &|o| o.nginx_running = false, vec![Action::StartNginx]);
    check("nginx file edited", &|o| o.nginx_http = Some("# edited".into()), vec![write_nginx()]);
    check("nginx runs older files than those on disk", &|o| o.nginx_stale = true, vec![write_nginx()]);
}

#[tokio::test]
async fn cold_start_builds_everything_in_order() {
    let l = Layout::default();
    let d = converged_desired();
    let a = plan(&d, &Observed::default(), &l, &nginx_files(&d));
    assert_eq!(&a[..3], &[Action::CreateBridge, Action::AddBridgeAddress(l.bridge_addr()), Action::BridgeUp]);
    for p in [51820, 51821] {
        for want in [Action::CreateNamespace(p), Action::CreateWg(p), Action::MoveWg(p), Action::CreateVeth(p), Action::SetForwarding(p)] {
            assert!(a.contains(&want), "missing {want:?}");
        }
        let at = |x: Action| a.iter().position(|y| *y == x).unwrap();
        let configure = a.iter().position(|y| matches!(y, Action::ConfigureWg(q, _, _) if *q == p)).expect("configured");
        let Action::ConfigureWg(_, _, changes) = &a[configure] else { unreachable!() };
        let peers = d.networks[&p].peers.keys().map(|k| WgChange::AddPeer(*k));
        assert_eq!(changes, &[WgChange::PrivateKey, WgChange::ListenPort].into_iter().chain(peers).collect::<Vec<_>>());
        assert!(at(Action::CreateNamespace(p)) < at(Action::CreateWg(p)));
        assert!(at(Action::CreateWg(p)) < at(Action::MoveWg(p)) && at(Action::MoveWg(p)) < configure);
        // The filter (FORWARD policy DROP) before any link that could carry
        // a packet in; forwarding after every other step of the network.
        let rules = at(set_rules(p, render::JUMPS.to_vec()));
        assert_eq!(rules, at(Action::CreateNamespace(p)) + 1, "{a:#?}");
        let last = a.iter().rposition(|x| x.network() == Some(p)).unwrap();
        assert_eq!(at(Action::SetForwarding(p)), last, "{a:#?}");
    }
    assert_eq!(a.last(), Some(&write_nginx()));
    assert!(a.contains(&Action::AddRoute { port: 51820, cidr: cidr("192.168.7.0/24") }), "a LAN behind a peer is routed");
    assert!(a.contains(&set_rules(51820, render::JUMPS.to_vec())));
}

/// A namespace file that holds no namespace (a crash inside `ip netns
/// add`) goes first, whether its network is desired (then built anew) or not.
#[tokio::test]
async fn stale_namespace_files_go_first_and_a_desired_network_is_built_anew() {
    let l = Layout::default();
    let d = converged_desired();
    let mut o = observed_converged().await;
    o.namespaces.remove(&51821);
    o.networks.remove(&51821);
    o.stale_namespaces.extend([51821, 40000]);
    let a = plan(&d, &o, &l, &nginx_files(&d));
    assert_eq!(&a[..2], &[Action::RemoveStaleNamespace(40000), Action::RemoveStaleNamespace(51821)]);
    assert!(a.contains(&Action::CreateNamespace(51821)) && a.contains(&Action::CreateWg(51821)), "{a:?}");
    assert!(!a.iter().any(|x| x.network() == Some(51820)), "the other network is left alone: {a:?}");
    assert!(!a.contains(&Action::DeleteNetwork(40000)), "nothing to delete in a namespace that is not there");
}

#[tokio::test]
async fn roamed_endpoint_is_not_drift_but_a_missing_or_changed_one_is() {
    let l = Layout::default();
    let d = converged_desired();
    let nginx = nginx_files(&d);
    let mut o = observed_converged().await;
    let peer =
        |o: &mut Observed| o.networks.get_mut(&51820).unwrap().wg.as_mut().unwrap().peers.get_mut(&key(PEER_A)).unwrap().endpoint = None;
    o.networks.get_mut(&51820).unwrap().wg.as_mut().unwrap().peers.get_mut(&key(PEER_A)).unwrap().endpoint =
        Some("198.51.100.1:999".parse().unwrap());
    assert_eq!(plan(&d, &o, &l, &nginx), vec![], "roamed");
    o.networks.get_mut(&51820).unwrap().endpoints_changed = true;
    assert_eq!(plan(&d, &o, &l, &nginx), vec![configure(51820, vec![WgChange::Endpoints])], "the desired endpoint changed");
    o.networks.get_mut(&51820).unwrap().endpoints_changed = false;
    peer(&mut o);
    let lost = WgChange::UpdatePeer(key(PEER_A), vec!["endpoint"]);
    assert_eq!(plan(&d, &o, &l, &nginx), vec![configure(51820, vec![lost])], "WireGuard lost it");
}

#[tokio::test]
async fn undesired_networks_are_removed_after_nginx() {
    let l = Layout::default();
    let d = converged_desired();
    let mut o = observed_converged().await;
    o.namespaces.insert(40000);
    o.wg_in_root.insert(40001, true);
    o.wg_in_root.insert(40003, false);
    o.host_veths.insert(40002, HostVeth { owned: true, ..Default::default() });
    o.host_veths.insert(40004, HostVeth::default());
    // The root end of a namespace being deleted goes with the namespace.
    o.host_veths.insert(40000, HostVeth { owned: true, ..Default::default() });
    let nginx2 = NginxFiles { stream: "s2".into(), http: nginx_files(&d).http };
    let a = plan(&d, &o, &l, &nginx2);
    assert_eq!(a, vec![write_nginx(), Action::DeleteNetwork(40000), Action::DeleteRootWg(40001), Action::DeleteHostVeth(40002)]);
    // Everything goes when nothing is desired, the bridge last.
    let a = plan(&Desired::default(), &o, &l, &nginx2);
    assert_eq!(a.last(), Some(&Action::DeleteBridge));
    assert!(a.contains(&Action::DeleteNetwork(51820)) && a.contains(&Action::DeleteNetwork(51821)));
}

#[tokio::test]
async fn links_of_others_are_never_deleted_or_adopted() {
    let l = Layout::default();
    let d = converged_desired();
    let nginx = nginx_files(&d);
    let mut o = observed_converged().await;
    o.bridge.as_mut().unwrap().owned = false;
    o.bridge.as_mut().unwrap().addresses = Some(vec![l.bridge_addr(), cidr("192.168.1.1/24")]);
    assert_eq!(plan(&d, &o, &l, &nginx), vec![], "an operator's bridge keeps its own address");
    assert!(!plan(&Desired::default(), &o, &l, &nginx).contains(&Action::DeleteBridge));
    o.bridge.as_mut().unwrap().owned = true;
    assert_eq!(plan(&d, &o, &l, &nginx), vec![Action::DelBridgeAddress(cidr("192.168.1.1/24"))], "ours is kept clean");
    o.bridge.as_mut().unwrap().addresses = Some(vec![l.bridge_addr()]);
    o.networks.get_mut(&51821).unwrap().wg_link = None;
    o.wg_in_root.insert(51821, false);
    let a = plan(&d, &o, &l, &nginx);
    assert_eq!(a[..2], [Action::CreateWg(51821), Action::MoveWg(51821)], "not adopted: creating ours reports the clash");
    o.wg_in_root.insert(51821, true);
    let a = plan(&d, &o, &l, &nginx);
    assert_eq!(a[0], Action::MoveWg(51821), "ours, left in the root namespace: moved, not recreated");
}

#[test]
fn converged_view_matches_what_the_tools_report() {
    // The tests build converged networks with converged_view: it must plan
    // nothing where the real converged system plans nothing.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let observed = rt.block_on(observed_converged());
    let d = converged_desired();
    let l = Layout::default();
    for (port, spec) in &d.networks {
        let mut o = observed.clone();
        o.networks.insert(*port, converged_view(&l, spec));
        assert_eq!(plan(&d, &o, &l, &nginx_files(&d)), vec![], "network {port}");
    }
}

/// The size a gateway may reach: 1,000 networks of 10 peers go through
/// validation and planning; from nothing every network is built, converged
/// nothing is planned, and one changed network plans only its own action.
#[test]
fn a_thousand_networks_plan() {
    let mut cfg = crate::validate::tests::thousand_networks();
    let d = validate(&cfg, &Context::default()).expect("valid");
    let l = Layout::default();
    let nginx = nginx_files(&d);
    let cold = plan(&d, &Observed::default(), &l, &nginx);
    let configured: BTreeSet<u16> =
        cold.iter().filter_map(|a| if let Action::ConfigureWg(p, _, _) = a { Some(*p) } else { None }).collect();
    assert_eq!(configured, d.networks.keys().copied().collect(), "every network built");
    assert_eq!(cold.iter().filter(|a| **a == write_nginx()).count(), 1, "nginx written once for all");

    let mut o = Observed {
        bridge: Some(crate::observed::ObservedBridge { up: true, owned: true, addresses: Some(vec![l.bridge_addr()]) }),
        nginx_stream: Some(nginx.stream.clone()),
        nginx_http: Some(nginx.http.clone()),
        nginx_running: true,
        ..Default::default()
    };
    for (p, spec) in &d.networks {
        o.namespaces.insert(*p);
        o.host_veths.insert(*p, HostVeth { on_bridge: true, up: true, isolated: true, owned: true, qdisc: None });
        o.networks.insert(*p, converged_view(&l, spec));
    }
    assert_eq!(plan(&d, &o, &l, &nginx), vec![], "converged: nothing to do");

    cfg.get_mut("20500").unwrap().mtu = Some(1500);
    let d = validate(&cfg, &Context::default()).expect("valid");
    assert_eq!(plan(&d, &o, &l, &nginx), [Action::SetWgLink { port: 20500, mtu: 1500 }]);
}

/// Each action reads as one line in the operator's words (what a dry run
/// lists and a drift_repaired event reports).
#[test]
fn actions_describe_themselves() {
    let k = key(PEER_A);
    for (action, line) in [
        (Action::SetWgLink { port: 1, mtu: 1400 }, "set mtu 1400 and up".to_string()),
        (
            Action::AddAddress { port: 1, dev: Dev::Wg, cidr: cidr("10.0.0.1/24") },
            "add address 10.0.0.1/24 to the WireGuard interface".into(),
        ),
        (Action::DelAddress { port: 1, dev: Dev::Uplink, cidr: cidr("10.0.0.1/24") }, "remove address 10.0.0.1/24 from the uplink".into()),
        (Action::AddRoute { port: 1, cidr: cidr("192.168.7.0/24") }, "add route 192.168.7.0/24 through WireGuard".into()),
        (
            configure(1, vec![WgChange::AddPeer(k), WgChange::UpdatePeer(k, vec!["allowed_ips", "endpoint"])]),
            format!("configure WireGuard: add peer {PEER_A}, update peer {PEER_A} (allowed_ips, endpoint)"),
        ),
        (configure(1, vec![WgChange::RemovePeer(k)]), format!("configure WireGuard: remove peer {PEER_A}")),
        (set_rules(1, vec![]), "replace the iptables rules".into()),
        (
            set_rules(1, render::JUMPS[2..].to_vec()),
            "replace the iptables rules (add jumps from -A FORWARD -j GATEWAY-FORWARD, -A FORWARD -j GATEWAY-FORWARD (IPv6))".into(),
        ),
        (write_nginx(), "write the nginx files, check and reload nginx".into()),
        (Action::CreateNamespace(1), "create the namespace".into()),
        (Action::DeleteNetwork(1), "delete the network (interface, namespace, rules)".into()),
    ] {
        assert_eq!(action.to_string(), line, "{action:?}");
    }
}

/// A WireGuard interface built anew gets its peers' last endpoints and one
/// keepalive each, once it is up: the configured endpoint (PEER_A's) wins
/// over the one seen, a peer seen but not desired is not kicked, and a
/// network that was not rebuilt, or one built for the first time (nothing
/// seen), gets none.
#[tokio::test]
async fn a_rebuilt_interface_kicks_the_peers_seen_before() {
    let l = Layout::default();
    let d = converged_desired();
    let mut o = observed_converged().await;
    let (seen_a, seen_b): (std::net::SocketAddr, std::net::SocketAddr) =
        ("192.0.2.1:1000".parse().unwrap(), "192.0.2.2:2000".parse().unwrap());
    let gone = key("cMXKVx1hAvvJ0Hj9OtBhFTXDA4MVk9LlHBr8rBsq5F8=");
    o.endpoints.insert(51820, [(key(PEER_A), seen_a), (key(PEER_B), seen_b), (gone, seen_b)].into());
    assert!(!plan(&d, &o, &l, &nginx_files(&d)).iter().any(|a| matches!(a, Action::KickPeers { .. })), "nothing rebuilt");
    net(&mut o).wg_link = None;
    net(&mut o).wg = None;
    let a = plan(&d, &o, &l, &nginx_files(&d));
    let kicks: Vec<&Action> = a.iter().filter(|a| matches!(a, Action::KickPeers { .. })).collect();
    let configured_a: std::net::SocketAddr = "10.254.0.7:41213".parse().unwrap();
    assert_eq!(kicks, [&kick_peers(51820, vec![(key(PEER_B), seen_b), (key(PEER_A), configured_a)])]);
    let at = |x: &Action| a.iter().position(|y| y == x).unwrap();
    assert!(at(&Action::SetWgLink { port: 51820, mtu: 1380 }) < at(kicks[0]), "kicked once up: {a:?}");
    assert_eq!(kicks[0].to_string(), "send a keepalive to the peers' last endpoints (192.0.2.2:2000, 10.254.0.7:41213)");
    assert_eq!(kicks[0].label(), "KickPeers(51820, 2 peers)", "no keys in logs");
    let cold = plan(&d, &Observed::default(), &l, &nginx_files(&d));
    assert!(!cold.iter().any(|a| matches!(a, Action::KickPeers { .. })), "a first build knows no endpoint");
}

/// `--ha-address`: a standby's WireGuard is set anew without endpoints
/// (syncconf cannot clear one) and never kicked, not even when rebuilt
/// with endpoints remembered; a host that just became active sets its
/// peers anew and reaches every peer whose endpoint it knows; one that
/// merely restarted active leaves live sessions alone.
#[tokio::test]
async fn a_standby_sends_nothing_and_a_host_taking_over_reaches_out() {
    use crate::ha::{Reach, Role, view};
    let l = Layout::default();
    let d = converged_desired();
    let standby = view(&d, Role::Standby);
    let seen_b: std::net::SocketAddr = "192.0.2.2:2000".parse().unwrap();
    let mut o = observed_converged().await;
    o.endpoints.insert(51820, [(key(PEER_B), seen_b)].into());
    assert!(net(&mut o).wg.as_ref().unwrap().peers.values().any(|p| p.endpoint.is_some()), "the fixture knows an endpoint");
    let a = plan(&standby, &o, &l, &nginx_files(&standby));
    let configure = a.iter().find_map(|x| match x {
        Action::ConfigureWg(51820, _, changes) => Some(changes.clone()),
        _ => None,
    });
    assert!(configure.is_some_and(|c| c.contains(&WgChange::ForgetEndpoints)), "{a:?}");
    assert!(!a.iter().any(|x| matches!(x, Action::KickPeers { .. })), "{a:?}");
    // Rebuilt while standby: endpoints remembered, still nobody kicked.
    let mut rebuilt = o.clone();
    net(&mut rebuilt).wg_link = None;
    net(&mut rebuilt).wg = None;
    rebuilt.reach_out.insert(51820, Reach::Taken);
    assert!(!plan(&standby, &rebuilt, &l, &nginx_files(&standby)).iter().any(|x| matches!(x, Action::KickPeers { .. })));

    // The standby converged: no endpoint, no keepalive.
    let quiet = converged_view(&l, &standby.networks[&51820]);
    net(&mut o).wg = quiet.wg.clone();
    let settled: Vec<Action> = plan(&standby, &o, &l, &nginx_files(&standby)).into_iter().filter(|x| x.network() == Some(51820)).collect();
    assert_eq!(settled, vec![], "a converged standby needs nothing");
    // It takes the address over.
    o.reach_out.insert(51820, Reach::Taken);
    let a = plan(&d, &o, &l, &nginx_files(&d));
    let ours: Vec<&Action> = a.iter().filter(|x| x.network() == Some(51820)).collect();
    let configured_a: std::net::SocketAddr = "10.254.0.7:41213".parse().unwrap();
    assert!(matches!(ours[0], Action::ConfigureWg(51820, _, c) if c.contains(&WgChange::ReachOut)), "{ours:?}");
    assert_eq!(ours.last().copied(), Some(&kick_peers(51820, vec![(key(PEER_B), seen_b), (key(PEER_A), configured_a)])));
    // Started active where WireGuard knows endpoints: nothing but the sync.
    let mut live = observed_converged().await;
    live.reach_out.insert(51820, Reach::Started);
    live.endpoints.insert(51820, [(key(PEER_B), seen_b)].into());
    assert_eq!(plan(&d, &live, &l, &nginx_files(&d)), vec![], "a restart while active disturbs no session");
    // Started active where it knows none (it was standby): reach out.
    o.reach_out.insert(51820, Reach::Started);
    assert!(
        plan(&d, &o, &l, &nginx_files(&d)).iter().any(|x| matches!(x, Action::ConfigureWg(51820, _, c) if c.contains(&WgChange::ReachOut)))
    );
    assert_eq!(WgChange::ReachOut.to_string(), "set the peers anew to reach them (just became active)");
}

/// A network an apply trusts: the root end of its veth was not read, and
/// nothing is planned for it (the next drift check reads it); the same
/// network taken as unchanged with its root end read off the bridge is
/// attached again.
#[tokio::test]
async fn a_trusted_network_s_unread_veth_end_is_left_to_the_drift_check() {
    let d = converged_desired();
    let l = Layout::default();
    let mut o = observed_converged().await;
    o.networks.remove(&51820);
    o.unchanged.insert(51820);
    o.host_veths.remove(&51820);
    o.host_veths_trusted.insert(51820);
    assert_eq!(plan(&d, &o, &l, &nginx_files(&d)), vec![]);
    o.host_veths_trusted.clear();
    assert_eq!(plan(&d, &o, &l, &nginx_files(&d)), vec![Action::AttachVeth(51820)], "read, and not on the bridge");
}

#[test]
fn only_what_ends_a_counter_asks_for_a_tick_first() {
    let a = || key(PEER_A);
    let keeps = [
        configure(51820, vec![WgChange::AddPeer(a())]),
        configure(51820, vec![WgChange::UpdatePeer(a(), vec!["allowed_ips"]), WgChange::Endpoints]),
        Action::CreateWg(51820),
        Action::SetRules { port: 51820, rules: Default::default(), missing_jumps: vec![] },
        Action::DeleteHostVeth(51820),
    ];
    for action in keeps {
        assert_eq!(action.ends_counters(), None, "{action:?}");
    }
    let ends = [
        configure(51820, vec![WgChange::AddPeer(a()), WgChange::RemovePeer(key(PEER_B))]),
        configure(51820, vec![WgChange::PrivateKey]),
        configure(51820, vec![WgChange::ReachOut]),
        configure(51820, vec![WgChange::ForgetEndpoints]),
        configure(51820, vec![WgChange::Unknown]),
        Action::DeleteNetwork(51820),
        Action::DeleteRootWg(51820),
    ];
    for action in ends {
        assert_eq!(action.ends_counters(), Some(51820), "{action:?}");
    }
}
