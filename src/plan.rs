//! Decides what to change: a pure function of the desired state and what was
//! observed. No I/O here, so every decision is unit-tested without root.

use std::collections::BTreeSet;

use crate::layout::Layout;
use crate::observe::{Observed, ObservedNetwork, WgDump};
use crate::render;
use crate::validate::{Cidr, Desired, NetworkSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dev {
    /// The network's WireGuard interface.
    Wg,
    /// The namespace end of the network's veth.
    Uplink,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    CreateBridge,
    AddBridgeAddress(Cidr),
    DelBridgeAddress(Cidr),
    BridgeUp,
    CreateNamespace(u16),
    /// Create the interface in the root namespace (its UDP socket stays there).
    CreateWg(u16),
    MoveWg(u16),
    /// `wg syncconf` with the full desired configuration: sets key, port and
    /// peers, removes peers that are not desired.
    ConfigureWg(u16),
    SetWgLink {
        port: u16,
        mtu: u32,
    },
    AddAddress {
        port: u16,
        dev: Dev,
        cidr: Cidr,
    },
    DelAddress {
        port: u16,
        dev: Dev,
        cidr: Cidr,
    },
    /// A route through the WireGuard interface for an allowed IP outside its subnets.
    AddRoute {
        port: u16,
        cidr: Cidr,
    },
    DelRoute {
        port: u16,
        cidr: Cidr,
    },
    CreateVeth(u16),
    AttachVeth(u16),
    UplinkUp(u16),
    SetForwarding(u16),
    SetRules {
        port: u16,
        missing_jumps: Vec<&'static str>,
    },
    /// Write nginx's files, check them, reload (or start) nginx.
    WriteNginx,
    StartNginx,
    DeleteNetwork(u16),
    DeleteRootWg(u16),
    DeleteHostVeth(u16),
    DeleteBridge,
}

impl Action {
    /// The network an action belongs to; a failure stops only that network's actions.
    pub fn network(&self) -> Option<u16> {
        use Action::*;
        match self {
            CreateNamespace(p) | CreateWg(p) | MoveWg(p) | ConfigureWg(p) | CreateVeth(p) | AttachVeth(p) | UplinkUp(p)
            | SetForwarding(p) | DeleteNetwork(p) | DeleteRootWg(p) | DeleteHostVeth(p) => Some(*p),
            SetWgLink { port, .. }
            | AddAddress { port, .. }
            | DelAddress { port, .. }
            | AddRoute { port, .. }
            | DelRoute { port, .. }
            | SetRules { port, .. } => Some(*port),
            CreateBridge | AddBridgeAddress(_) | DelBridgeAddress(_) | BridgeUp | WriteNginx | StartNginx | DeleteBridge => None,
        }
    }
}

/// nginx's files as they should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxText {
    pub stream: String,
    pub http: String,
}

/// Whether WireGuard already runs exactly the desired configuration. The
/// endpoint counts only when WireGuard has none: peers roam, and WireGuard's
/// learned endpoint must win over the configured one.
pub fn wg_matches(spec: &NetworkSpec, dump: &WgDump) -> bool {
    if dump.private_key != spec.private_key.as_str() || dump.listen_port != spec.port || dump.peers.len() != spec.peers.len() {
        return false;
    }
    dump.peers.iter().all(|p| {
        let Some((_, want)) = spec.peers.iter().find(|(k, _)| k.as_str() == p.public_key) else {
            return false;
        };
        let have_ips: BTreeSet<&str> = p.allowed_ips.iter().map(String::as_str).collect();
        let want_ips: Vec<String> = want.allowed_ips.iter().map(ToString::to_string).collect();
        let want_ips: BTreeSet<&str> = want_ips.iter().map(String::as_str).collect();
        p.preshared_key.as_deref() == want.preshared_key.as_ref().map(|k| k.as_str())
            && have_ips == want_ips
            && p.keepalive == want.persistent_keepalive
            && !(want.endpoint.is_some() && p.endpoint.is_none())
    })
}

fn diff_addresses(actions: &mut Vec<Action>, port: u16, dev: Dev, have: &[Cidr], want: &[Cidr]) {
    for c in have.iter().filter(|c| !want.contains(c)) {
        actions.push(Action::DelAddress { port, dev, cidr: *c });
    }
    for c in want.iter().filter(|c| !have.contains(c)) {
        actions.push(Action::AddAddress { port, dev, cidr: *c });
    }
}

fn diff_routes(actions: &mut Vec<Action>, port: u16, have: &[Cidr], want: &[Cidr]) {
    for c in have.iter().filter(|c| !want.contains(c)) {
        actions.push(Action::DelRoute { port, cidr: *c });
    }
    for c in want.iter().filter(|c| !have.contains(c)) {
        actions.push(Action::AddRoute { port, cidr: *c });
    }
}

fn plan_network(actions: &mut Vec<Action>, layout: &Layout, spec: &NetworkSpec, observed: &Observed) {
    let port = spec.port;
    let fresh = ObservedNetwork::default();
    let obs = if observed.namespaces.contains(&port) {
        observed.networks.get(&port).unwrap_or(&fresh)
    } else {
        actions.push(Action::CreateNamespace(port));
        &fresh
    };

    match &obs.wg_link {
        None => {
            // Ours and left in the root namespace (a failed move): move it.
            // Anyone else's `wgP` is not adopted: creating ours fails loudly.
            if observed.wg_in_root.get(&port) != Some(&true) {
                actions.push(Action::CreateWg(port));
            }
            actions.push(Action::MoveWg(port));
            actions.push(Action::ConfigureWg(port));
            actions.push(Action::SetWgLink { port, mtu: spec.mtu });
            diff_addresses(actions, port, Dev::Wg, &[], &spec.addresses);
            diff_routes(actions, port, &[], &spec.routes());
        }
        Some(link) => {
            if obs.endpoints_changed || !obs.wg.as_ref().is_some_and(|d| wg_matches(spec, d)) {
                actions.push(Action::ConfigureWg(port));
            }
            if link.mtu != spec.mtu || !link.up {
                actions.push(Action::SetWgLink { port, mtu: spec.mtu });
            }
            diff_addresses(actions, port, Dev::Wg, &link.addresses, &spec.addresses);
            diff_routes(actions, port, &obs.routes, &spec.routes());
        }
    }

    let veth_addr = [layout.veth_ns_addr(port)];
    match &obs.uplink {
        None => {
            if observed.host_veths.get(&port).is_some_and(|v| v.owned) {
                actions.push(Action::DeleteHostVeth(port));
            }
            actions.push(Action::CreateVeth(port));
            actions.push(Action::AttachVeth(port));
            actions.push(Action::UplinkUp(port));
            diff_addresses(actions, port, Dev::Uplink, &[], &veth_addr);
        }
        Some(link) => {
            let host = observed.host_veths.get(&port);
            if !host.is_some_and(|h| h.on_bridge && h.up && h.isolated) {
                actions.push(Action::AttachVeth(port));
            }
            if !link.up {
                actions.push(Action::UplinkUp(port));
            }
            diff_addresses(actions, port, Dev::Uplink, &link.addresses, &veth_addr);
        }
    }

    if !obs.forwarding {
        actions.push(Action::SetForwarding(port));
    }
    let want = render::rules(layout, spec);
    let missing_jumps: Vec<&'static str> = render::JUMPS.iter().map(|j| j.1).filter(|j| !obs.rules.jumps.contains(j)).collect();
    if obs.rules.nat != want.nat || obs.rules.filter != want.filter || !missing_jumps.is_empty() {
        actions.push(Action::SetRules { port, missing_jumps });
    }
}

/// Everything that must change for the system to match `desired`, in the
/// order to do it: shared bridge, networks, nginx, then removals (after
/// nginx stopped sending traffic to them).
pub fn plan(desired: &Desired, observed: &Observed, layout: &Layout, nginx: &NginxText) -> Vec<Action> {
    let mut actions = Vec::new();
    if !desired.networks.is_empty() {
        let want = [layout.bridge_addr()];
        match &observed.bridge {
            None => {
                actions.push(Action::CreateBridge);
                actions.push(Action::AddBridgeAddress(want[0]));
                actions.push(Action::BridgeUp);
            }
            Some(b) => {
                if let Some(have) = &b.addresses {
                    // Another address on a bridge we did not create is its owner's.
                    for c in have.iter().filter(|c| b.owned && !want.contains(c)) {
                        actions.push(Action::DelBridgeAddress(*c));
                    }
                    if !have.contains(&want[0]) {
                        actions.push(Action::AddBridgeAddress(want[0]));
                    }
                }
                if !b.up {
                    actions.push(Action::BridgeUp);
                }
            }
        }
    }
    for spec in desired.networks.values() {
        plan_network(&mut actions, layout, spec, observed);
    }
    if observed.nginx_stream.as_deref() != Some(nginx.stream.as_str()) || observed.nginx_http.as_deref() != Some(nginx.http.as_str()) {
        actions.push(Action::WriteNginx);
    } else if !observed.nginx_running {
        actions.push(Action::StartNginx);
    }
    let wanted = |p: &u16| desired.networks.contains_key(p);
    for p in observed.namespaces.iter().filter(|p| !wanted(p)) {
        actions.push(Action::DeleteNetwork(*p));
    }
    for (p, _) in observed.wg_in_root.iter().filter(|(p, owned)| **owned && !wanted(p)) {
        actions.push(Action::DeleteRootWg(*p));
    }
    for (p, _) in observed.host_veths.iter().filter(|(p, v)| v.owned && !wanted(p) && !observed.namespaces.contains(p)) {
        actions.push(Action::DeleteHostVeth(*p));
    }
    if desired.networks.is_empty() && observed.bridge.as_ref().is_some_and(|b| b.owned) {
        actions.push(Action::DeleteBridge);
    }
    actions
}

/// What a deep observation of a converged network shows. Used for networks
/// converged earlier and unchanged since, so a no-op apply reads nothing.
pub fn converged_view(layout: &Layout, spec: &NetworkSpec) -> ObservedNetwork {
    use crate::observe::{Link, ObservedRules, WgPeer};
    let rules = render::rules(layout, spec);
    ObservedNetwork {
        wg: Some(WgDump {
            private_key: spec.private_key.as_str().into(),
            public_key: String::new(),
            listen_port: spec.port,
            peers: spec
                .peers
                .iter()
                .map(|(k, p)| WgPeer {
                    public_key: k.as_str().into(),
                    preshared_key: p.preshared_key.as_ref().map(|k| k.as_str().into()),
                    endpoint: p.endpoint.map(|e| e.to_string()),
                    allowed_ips: p.allowed_ips.iter().map(ToString::to_string).collect(),
                    latest_handshake: 0,
                    rx: 0,
                    tx: 0,
                    keepalive: p.persistent_keepalive,
                })
                .collect(),
        }),
        wg_link: Some(Link { ifindex: 0, mtu: spec.mtu, up: true, addresses: spec.addresses.clone() }),
        uplink: Some(Link { ifindex: 0, mtu: 1500, up: true, addresses: vec![layout.veth_ns_addr(spec.port)] }),
        forwarding: true,
        rules: ObservedRules { nat: rules.nat, filter: rules.filter, jumps: render::JUMPS.iter().map(|j| j.1).collect() },
        routes: spec.routes(),
        endpoints_changed: false,
        problems: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{HostVeth, ObservedBridge};
    use crate::render::tests::sample_config;
    use crate::validate::{Context, validate};

    fn desired() -> Desired {
        validate(&sample_config(), &Context::default()).unwrap()
    }

    fn nginx() -> NginxText {
        NginxText { stream: "s".into(), http: "h".into() }
    }

    /// The system as it is once `desired` has converged.
    fn converged(layout: &Layout, d: &Desired) -> Observed {
        Observed {
            bridge: Some(ObservedBridge { up: true, addresses: Some(vec![layout.bridge_addr()]), owned: true }),
            namespaces: d.networks.keys().copied().collect(),
            wg_in_root: Default::default(),
            host_veths: d.networks.keys().map(|p| (*p, HostVeth { on_bridge: true, up: true, isolated: true, owned: true })).collect(),
            networks: d.networks.iter().map(|(p, s)| (*p, converged_view(layout, s))).collect(),
            nginx_stream: Some("s".into()),
            nginx_http: Some("h".into()),
            nginx_running: true,
        }
    }

    #[test]
    fn converged_needs_nothing() {
        let l = Layout::default();
        let d = desired();
        assert_eq!(plan(&d, &converged(&l, &d), &l, &nginx()), vec![]);
    }

    #[test]
    fn cold_start_builds_everything_in_order() {
        let l = Layout::default();
        let d = desired();
        let a = plan(&d, &Observed::default(), &l, &nginx());
        assert_eq!(&a[..3], &[Action::CreateBridge, Action::AddBridgeAddress(l.bridge_addr()), Action::BridgeUp]);
        for p in [51820, 51821] {
            for want in [
                Action::CreateNamespace(p),
                Action::CreateWg(p),
                Action::MoveWg(p),
                Action::ConfigureWg(p),
                Action::CreateVeth(p),
                Action::SetForwarding(p),
            ] {
                assert!(a.contains(&want), "missing {want:?}");
            }
        }
        let ns = a.iter().position(|x| *x == Action::CreateNamespace(51820)).unwrap();
        let mv = a.iter().position(|x| *x == Action::MoveWg(51820)).unwrap();
        let cf = a.iter().position(|x| *x == Action::ConfigureWg(51820)).unwrap();
        assert!(ns < mv && mv < cf);
        assert_eq!(a.last(), Some(&Action::WriteNginx));
        let lan = Cidr::parse("192.168.7.0/24").unwrap();
        assert!(a.contains(&Action::AddRoute { port: 51820, cidr: lan }), "a LAN behind a peer is routed");
        assert!(a.contains(&Action::SetRules { port: 51820, missing_jumps: render::JUMPS.map(|j| j.1).to_vec() }));
    }

    #[test]
    fn stale_address_and_peer_are_removed() {
        let l = Layout::default();
        let d = desired();
        let mut o = converged(&l, &d);
        let net = o.networks.get_mut(&51820).unwrap();
        let stale = Cidr::parse("10.99.0.1/24").unwrap();
        net.wg_link.as_mut().unwrap().addresses.push(stale);
        net.wg.as_mut().unwrap().peers.pop();
        let a = plan(&d, &o, &l, &nginx());
        assert_eq!(a, vec![Action::ConfigureWg(51820), Action::DelAddress { port: 51820, dev: Dev::Wg, cidr: stale }]);
    }

    #[test]
    fn stale_route_removed_missing_route_added() {
        let l = Layout::default();
        let d = desired();
        let mut o = converged(&l, &d);
        let stale = Cidr::parse("172.16.0.0/12").unwrap();
        let lan = Cidr::parse("192.168.7.0/24").unwrap();
        o.networks.get_mut(&51820).unwrap().routes = vec![stale];
        assert_eq!(
            plan(&d, &o, &l, &nginx()),
            vec![Action::DelRoute { port: 51820, cidr: stale }, Action::AddRoute { port: 51820, cidr: lan }]
        );
    }

    #[test]
    fn roamed_endpoint_is_not_drift_but_a_missing_one_is() {
        let l = Layout::default();
        let d = desired();
        let mut o = converged(&l, &d);
        let peer = &mut o.networks.get_mut(&51820).unwrap().wg.as_mut().unwrap().peers[1];
        assert!(peer.endpoint.is_some());
        peer.endpoint = Some("198.51.100.1:999".into());
        assert_eq!(plan(&d, &o, &l, &nginx()), vec![]);
        o.networks.get_mut(&51820).unwrap().wg.as_mut().unwrap().peers[1].endpoint = None;
        assert_eq!(plan(&d, &o, &l, &nginx()), vec![Action::ConfigureWg(51820)]);
    }

    #[test]
    fn a_changed_endpoint_is_pushed_even_after_roaming() {
        let l = Layout::default();
        let d = desired();
        let mut o = converged(&l, &d);
        o.networks.get_mut(&51820).unwrap().endpoints_changed = true;
        assert_eq!(plan(&d, &o, &l, &nginx()), vec![Action::ConfigureWg(51820)]);
    }

    #[test]
    fn change_to_one_network_touches_only_it() {
        let l = Layout::default();
        let mut cfg = sample_config();
        let o = converged(&l, &validate(&cfg, &Context::default()).unwrap());
        cfg.get_mut("51821").unwrap().mtu = Some(1300);
        let a = plan(&validate(&cfg, &Context::default()).unwrap(), &o, &l, &nginx());
        assert_eq!(a, vec![Action::SetWgLink { port: 51821, mtu: 1300 }]);
    }

    #[test]
    fn drift_is_repaired() {
        let l = Layout::default();
        let d = desired();
        let mut o = converged(&l, &d);
        o.namespaces.remove(&51821);
        let n = o.networks.get_mut(&51820).unwrap();
        n.rules.jumps.clear();
        n.rules.nat.pop();
        n.forwarding = false;
        o.host_veths.get_mut(&51820).unwrap().isolated = false;
        o.nginx_running = false;
        let a = plan(&d, &o, &l, &nginx());
        assert!(a.contains(&Action::CreateNamespace(51821)));
        assert!(a.contains(&Action::SetForwarding(51820)));
        assert!(a.contains(&Action::AttachVeth(51820)));
        assert!(a.contains(&Action::SetRules { port: 51820, missing_jumps: render::JUMPS.map(|j| j.1).to_vec() }));
        assert!(a.contains(&Action::StartNginx));
    }

    #[test]
    fn undesired_networks_are_removed_after_nginx() {
        let l = Layout::default();
        let d = desired();
        let mut o = converged(&l, &d);
        o.namespaces.insert(40000);
        o.wg_in_root.insert(40001, true);
        o.wg_in_root.insert(40003, false);
        o.host_veths.insert(40002, HostVeth { owned: true, ..Default::default() });
        o.host_veths.insert(40004, HostVeth::default());
        let nginx2 = NginxText { stream: "s2".into(), http: "h".into() };
        let a = plan(&d, &o, &l, &nginx2);
        assert_eq!(a, vec![Action::WriteNginx, Action::DeleteNetwork(40000), Action::DeleteRootWg(40001), Action::DeleteHostVeth(40002)]);
        // Everything gone when nothing is desired, the bridge last.
        let a = plan(&Desired::default(), &o, &l, &nginx());
        assert_eq!(a.last(), Some(&Action::DeleteBridge));
        assert!(a.contains(&Action::DeleteNetwork(51820)));
    }

    #[test]
    fn links_of_others_are_never_deleted_or_adopted() {
        let l = Layout::default();
        let d = desired();
        let mut o = converged(&l, &d);
        o.bridge.as_mut().unwrap().owned = false;
        o.bridge.as_mut().unwrap().addresses = Some(vec![l.bridge_addr(), Cidr::parse("192.168.1.1/24").unwrap()]);
        assert_eq!(plan(&d, &o, &l, &nginx()), vec![], "an operator's bridge keeps its own address");
        assert!(!plan(&Desired::default(), &o, &l, &nginx()).contains(&Action::DeleteBridge));
        o.networks.get_mut(&51821).unwrap().wg_link = None;
        o.wg_in_root.insert(51821, false);
        let a = plan(&d, &o, &l, &nginx());
        assert_eq!(a[..2], [Action::CreateWg(51821), Action::MoveWg(51821)], "not adopted: creating ours reports the clash");
    }

    #[test]
    fn wg_left_in_root_is_moved_not_recreated() {
        let l = Layout::default();
        let d = desired();
        let mut o = converged(&l, &d);
        o.networks.get_mut(&51821).unwrap().wg_link = None;
        o.wg_in_root.insert(51821, true);
        let a = plan(&d, &o, &l, &nginx());
        assert!(!a.contains(&Action::CreateWg(51821)));
        assert_eq!(a[0], Action::MoveWg(51821));
    }
}
