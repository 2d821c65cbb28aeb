//! Decides what to change: a pure function of the desired state and what was
//! observed. No I/O here, so every decision is unit-tested without root.

use std::collections::BTreeSet;
use std::fmt;

use crate::layout::Layout;
use crate::observed::{Link, Observed, ObservedNetwork, ObservedRules, WgDump, WgPeer};
use crate::render::{self, Family, Jump, NginxFiles};
use crate::spec::{Desired, NetworkSpec};
use crate::types::{Cidr, PublicKey};

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
    /// Remove a namespace file that holds no namespace (see
    /// `Observed::stale_namespaces`), so the name can be used again.
    RemoveStaleNamespace(u16),
    CreateNamespace(u16),
    /// Create the interface in the root namespace (its UDP socket stays there).
    CreateWg(u16),
    MoveWg(u16),
    /// `wg syncconf` with the full desired configuration: sets key, port and
    /// peers, removes peers that are not desired. The changes say why (for
    /// a dry run and the events); the command is the same whatever they are.
    ConfigureWg(u16, Vec<WgChange>),
    SetWgLink {
        port: u16,
        mtu: u32,
    },
    /// A WireGuard interface built anew (it knows no endpoint): set each
    /// peer's last endpoint the daemon saw (or the configured one) and send
    /// it one keepalive, so it answers now rather than at its next
    /// handshake timer. Runs once the interface is up.
    KickPeers {
        port: u16,
        peers: Vec<(PublicKey, std::net::SocketAddr)>,
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
    /// Both families' rules and FORWARD policies (`iptables-restore` and
    /// `ip6tables-restore`), adding the jumps that are missing.
    SetRules {
        port: u16,
        missing_jumps: Vec<Jump>,
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
    /// How errors and logs name the action: its Debug form, but without
    /// the WireGuard changes (a new network's name every one of its peers).
    pub fn label(&self) -> String {
        match self {
            Action::ConfigureWg(port, _) => format!("ConfigureWg({port})"),
            Action::KickPeers { port, peers } => format!("KickPeers({port}, {} peers)", peers.len()),
            other => format!("{other:?}"),
        }
    }

    /// The network an action belongs to; a failure stops only that network's actions.
    pub fn network(&self) -> Option<u16> {
        use Action::*;
        match self {
            RemoveStaleNamespace(p)
            | CreateNamespace(p)
            | CreateWg(p)
            | MoveWg(p)
            | ConfigureWg(p, _)
            | CreateVeth(p)
            | AttachVeth(p)
            | UplinkUp(p)
            | SetForwarding(p)
            | DeleteNetwork(p)
            | DeleteRootWg(p)
            | DeleteHostVeth(p) => Some(*p),
            SetWgLink { port, .. }
            | AddAddress { port, .. }
            | DelAddress { port, .. }
            | AddRoute { port, .. }
            | DelRoute { port, .. }
            | SetRules { port, .. }
            | KickPeers { port, .. } => Some(*port),
            CreateBridge | AddBridgeAddress(_) | DelBridgeAddress(_) | BridgeUp | WriteNginx | StartNginx | DeleteBridge => None,
        }
    }
}

/// What differs between WireGuard's configuration and the desired one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WgChange {
    PrivateKey,
    ListenPort,
    AddPeer(PublicKey),
    RemovePeer(PublicKey),
    /// The peer's fields that differ (`allowed_ips`, `preshared_key`, ...).
    UpdatePeer(PublicKey, Vec<&'static str>),
    /// A peer's desired endpoint changed since it was last given.
    Endpoints,
    /// WireGuard's state could not be read: it is set in full.
    Unknown,
    /// A standby's WireGuard knows an endpoint (learned while active, or
    /// from a peer's own handshake): set anew without any (`wg setconf`),
    /// since `wg syncconf` can set an endpoint but never clear one.
    ForgetEndpoints,
    /// A host that just became active takes its peers over: set anew
    /// (`wg setconf`), so no handshake attempt made while it was standby
    /// (traffic into a network without an endpoint) holds back the one it
    /// sends now (WireGuard sends at most one every 5 s per peer).
    ReachOut,
}

impl WgChange {
    /// Whether the change needs the peers set anew (`wg setconf`) rather
    /// than synced (`wg syncconf` keeps what it does not set).
    pub fn sets_peers_anew(&self) -> bool {
        matches!(self, WgChange::ForgetEndpoints | WgChange::ReachOut)
    }
}

/// The fields in which one observed peer differs from the desired one. The
/// endpoint counts only when WireGuard has none: peers roam, and
/// WireGuard's learned endpoint must win over the configured one.
fn peer_differences(want: &crate::spec::PeerSpec, have: &WgPeer) -> Vec<&'static str> {
    let allowed_ips = have.allowed_ips.iter().collect::<BTreeSet<_>>() != want.allowed_ips.iter().collect::<BTreeSet<_>>();
    [
        (have.preshared_key != want.preshared_key, "preshared_key"),
        (allowed_ips, "allowed_ips"),
        (have.keepalive != want.persistent_keepalive, "persistent_keepalive"),
        (want.endpoint.is_some() && have.endpoint.is_none(), "endpoint"),
    ]
    .into_iter()
    .filter_map(|(differs, field)| differs.then_some(field))
    .collect()
}

/// How WireGuard's configuration differs from the desired one (nothing:
/// it already runs exactly that).
pub fn wg_changes(spec: &NetworkSpec, dump: &WgDump) -> Vec<WgChange> {
    let mut changes = Vec::new();
    if dump.private_key.as_ref() != Some(&spec.private_key) {
        changes.push(WgChange::PrivateKey);
    }
    if dump.listen_port != spec.port {
        changes.push(WgChange::ListenPort);
    }
    changes.extend(dump.peers.keys().filter(|k| !spec.peers.contains_key(k)).map(|k| WgChange::RemovePeer(*k)));
    if spec.standby && dump.peers.values().any(|p| p.endpoint.is_some()) {
        changes.push(WgChange::ForgetEndpoints);
    }
    for (key, want) in &spec.peers {
        match dump.peers.get(key) {
            None => changes.push(WgChange::AddPeer(*key)),
            Some(have) => {
                let fields = peer_differences(want, have);
                if !fields.is_empty() {
                    changes.push(WgChange::UpdatePeer(*key, fields));
                }
            }
        }
    }
    changes
}

/// Whether WireGuard already runs exactly the desired configuration.
pub fn wg_matches(spec: &NetworkSpec, dump: &WgDump) -> bool {
    wg_changes(spec, dump).is_empty()
}

impl fmt::Display for WgChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WgChange::PrivateKey => f.write_str("set private key"),
            WgChange::ListenPort => f.write_str("set listen port"),
            WgChange::AddPeer(k) => write!(f, "add peer {k}"),
            WgChange::RemovePeer(k) => write!(f, "remove peer {k}"),
            WgChange::UpdatePeer(k, fields) => write!(f, "update peer {k} ({})", fields.join(", ")),
            WgChange::Endpoints => f.write_str("set the changed peer endpoints"),
            WgChange::Unknown => f.write_str("set key, port and peers (its state was not readable)"),
            WgChange::ForgetEndpoints => f.write_str("forget the peers' endpoints (standby)"),
            WgChange::ReachOut => f.write_str("set the peers anew to reach them (just became active)"),
        }
    }
}

/// One line per action, as a dry run lists it and events report it: what
/// is done, in the operator's words; the network is given by the context.
impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Action::*;
        let dev = |d: &Dev| match d {
            Dev::Wg => "the WireGuard interface",
            Dev::Uplink => "the uplink",
        };
        match self {
            CreateBridge => f.write_str("create the bridge"),
            AddBridgeAddress(c) => write!(f, "add address {c} to the bridge"),
            DelBridgeAddress(c) => write!(f, "remove address {c} from the bridge"),
            BridgeUp => f.write_str("set the bridge up"),
            RemoveStaleNamespace(_) => f.write_str("remove a stale namespace file"),
            CreateNamespace(_) => f.write_str("create the namespace"),
            CreateWg(_) => f.write_str("create the WireGuard interface"),
            MoveWg(_) => f.write_str("move the WireGuard interface into the namespace"),
            ConfigureWg(_, changes) => {
                let changes: Vec<String> = changes.iter().map(ToString::to_string).collect();
                write!(f, "configure WireGuard: {}", changes.join(", "))
            }
            SetWgLink { mtu, .. } => write!(f, "set mtu {mtu} and up"),
            KickPeers { peers, .. } => {
                let endpoints: Vec<String> = peers.iter().map(|(_, e)| e.to_string()).collect();
                write!(f, "send a keepalive to the peers' last endpoints ({})", endpoints.join(", "))
            }
            AddAddress { dev: d, cidr, .. } => write!(f, "add address {cidr} to {}", dev(d)),
            DelAddress { dev: d, cidr, .. } => write!(f, "remove address {cidr} from {}", dev(d)),
            AddRoute { cidr, .. } => write!(f, "add route {cidr} through WireGuard"),
            DelRoute { cidr, .. } => write!(f, "remove route {cidr}"),
            CreateVeth(_) => f.write_str("create the veth to the bridge"),
            AttachVeth(_) => f.write_str("attach the veth to the bridge (isolated)"),
            UplinkUp(_) => f.write_str("set the uplink up"),
            SetForwarding(_) => f.write_str("enable forwarding"),
            SetRules { missing_jumps, .. } if missing_jumps.is_empty() => f.write_str("replace the iptables rules"),
            SetRules { missing_jumps, .. } => {
                let jumps: Vec<String> = missing_jumps.iter().map(ToString::to_string).collect();
                write!(f, "replace the iptables rules (add jumps from {})", jumps.join(", "))
            }
            WriteNginx => f.write_str("write the nginx files, check and reload nginx"),
            StartNginx => f.write_str("start nginx"),
            DeleteNetwork(_) => f.write_str("delete the network (interface, namespace, rules)"),
            DeleteRootWg(_) => f.write_str("delete the WireGuard interface left in the root namespace"),
            DeleteHostVeth(_) => f.write_str("delete the veth"),
            DeleteBridge => f.write_str("delete the bridge"),
        }
    }
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

/// The WireGuard interface: created in the root namespace and moved, then
/// configured; or brought back to the spec where it differs.
fn plan_wireguard(actions: &mut Vec<Action>, spec: &NetworkSpec, obs: &ObservedNetwork, observed: &Observed) {
    let port = spec.port;
    let Some(link) = &obs.wg_link else {
        // Ours and left in the root namespace (a failed move): move it.
        // Anyone else's `wgP` is not adopted: creating ours fails loudly.
        if observed.wg_in_root.get(&port) != Some(&true) {
            actions.push(Action::CreateWg(port));
        }
        actions.push(Action::MoveWg(port));
        actions.push(Action::ConfigureWg(port, wg_changes(spec, &WgDump::default())));
        actions.push(Action::SetWgLink { port, mtu: spec.mtu });
        diff_addresses(actions, port, Dev::Wg, &[], &spec.addresses);
        diff_routes(actions, port, &[], &spec.routes());
        let peers = if observed.reach_out.contains_key(&port) {
            peers_to_reach(spec, observed.endpoints.get(&port))
        } else {
            peers_to_kick(spec, observed.endpoints.get(&port))
        };
        if !peers.is_empty() && !spec.standby {
            actions.push(Action::KickPeers { port, peers });
        }
        return;
    };
    let mut changes = match &obs.wg {
        Some(dump) => wg_changes(spec, dump),
        None => vec![WgChange::Unknown],
    };
    // Reaching out once the host is active. At a start, only where
    // WireGuard knows no endpoint: where it knows some, the host was active
    // before the restart and its sessions live.
    let silent = || obs.wg.as_ref().is_some_and(|d| d.peers.values().all(|p| p.endpoint.is_none()));
    let reach = !spec.standby
        && match observed.reach_out.get(&port) {
            Some(crate::ha::Reach::Taken) => true,
            Some(crate::ha::Reach::Started) => silent(),
            None => false,
        };
    if reach {
        changes.push(WgChange::ReachOut);
    }
    if obs.endpoints_changed && changes.is_empty() {
        changes.push(WgChange::Endpoints);
    }
    if !changes.is_empty() {
        actions.push(Action::ConfigureWg(port, changes));
    }
    if link.mtu != spec.mtu || !link.up {
        actions.push(Action::SetWgLink { port, mtu: spec.mtu });
    }
    diff_addresses(actions, port, Dev::Wg, &link.addresses, &spec.addresses);
    diff_routes(actions, port, &obs.routes, &spec.routes());
    let peers = if reach { peers_to_reach(spec, observed.endpoints.get(&port)) } else { Vec::new() };
    if !peers.is_empty() {
        actions.push(Action::KickPeers { port, peers });
    }
}

/// A host that just became active reaches out to every peer whose endpoint
/// it knows (configured, else the last one seen), so each node handshakes
/// with it now instead of at its own timer's next turn.
fn peers_to_reach(
    spec: &NetworkSpec,
    last: Option<&std::collections::BTreeMap<PublicKey, std::net::SocketAddr>>,
) -> Vec<(PublicKey, std::net::SocketAddr)> {
    let seen = |key: &PublicKey| last.and_then(|l| l.get(key)).copied();
    spec.peers.iter().filter_map(|(key, p)| p.endpoint.or_else(|| seen(key)).map(|e| (*key, e))).collect()
}

/// The peers of a network built anew that the daemon saw before, with the
/// endpoint to reach them at: the configured one (it takes precedence),
/// else the last one seen. A first build knows none, so kicks nobody.
fn peers_to_kick(
    spec: &NetworkSpec,
    last: Option<&std::collections::BTreeMap<PublicKey, std::net::SocketAddr>>,
) -> Vec<(PublicKey, std::net::SocketAddr)> {
    let Some(last) = last else { return Vec::new() };
    spec.peers.iter().filter_map(|(key, p)| last.get(key).map(|seen| (*key, p.endpoint.unwrap_or(*seen)))).collect()
}

/// The veth to the bridge: its root end attached to the bridge as an
/// isolated port, its namespace end up with the network's bridge address.
fn plan_uplink(actions: &mut Vec<Action>, layout: &Layout, port: u16, obs: &ObservedNetwork, observed: &Observed) {
    let veth_addr = [layout.veth_ns_addr(port)];
    let Some(link) = &obs.uplink else {
        if observed.host_veths.get(&port).is_some_and(|v| v.owned) {
            actions.push(Action::DeleteHostVeth(port));
        }
        actions.push(Action::CreateVeth(port));
        actions.push(Action::AttachVeth(port));
        actions.push(Action::UplinkUp(port));
        diff_addresses(actions, port, Dev::Uplink, &[], &veth_addr);
        return;
    };
    if !observed.host_veths.get(&port).is_some_and(|h| h.on_bridge && h.up && h.isolated) {
        actions.push(Action::AttachVeth(port));
    }
    if !link.up {
        actions.push(Action::UplinkUp(port));
    }
    diff_addresses(actions, port, Dev::Uplink, &link.addresses, &veth_addr);
}

/// The gateway's chains and FORWARD policies, in both families (IPv6 where
/// its rules were read), as the desired rules say.
fn plan_rules(actions: &mut Vec<Action>, layout: &Layout, spec: &NetworkSpec, obs: &ObservedNetwork) {
    let Some(rules) = &obs.rules else { return };
    let want = render::rules(layout, spec);
    let families: Vec<Family> = [Family::Ipv4].into_iter().chain(rules.filter6.as_ref().map(|_| Family::Ipv6)).collect();
    let missing_jumps: Vec<Jump> = render::JUMPS.into_iter().filter(|j| families.contains(&j.family) && !rules.jumps.contains(j)).collect();
    let differ = rules.nat != want.nat
        || rules.filter != want.filter
        || rules.filter6.as_ref().is_some_and(|f| *f != want.filter)
        || families.iter().any(|f| !rules.forward_drop.contains(f));
    if differ || !missing_jumps.is_empty() {
        actions.push(Action::SetRules { port: spec.port, missing_jumps });
    }
}

fn plan_network(actions: &mut Vec<Action>, layout: &Layout, spec: &NetworkSpec, observed: &Observed) {
    // Nothing there yet: every rule of both families is missing too.
    let fresh = ObservedNetwork { rules: Some(ObservedRules { filter6: Some(Vec::new()), ..Default::default() }), ..Default::default() };
    let obs = if observed.namespaces.contains(&spec.port) {
        observed.networks.get(&spec.port).unwrap_or(&fresh)
    } else {
        actions.push(Action::CreateNamespace(spec.port));
        &fresh
    };
    // The filter first (FORWARD policy DROP in both families), before any
    // link can carry a packet into the namespace; forwarding last, once the
    // filter and the links are there. A failing step stops the network's
    // later ones, so forwarding is never on without the filter.
    plan_rules(actions, layout, spec, obs);
    plan_wireguard(actions, spec, obs, observed);
    plan_uplink(actions, layout, spec.port, obs, observed);
    if !obs.forwarding {
        actions.push(Action::SetForwarding(spec.port));
    }
}

/// The bridge in the root namespace: there, up, with its address; another
/// address is removed only from a bridge the gateway created.
fn plan_bridge(actions: &mut Vec<Action>, layout: &Layout, observed: &Observed) {
    let want = layout.bridge_addr();
    let Some(b) = &observed.bridge else {
        actions.extend([Action::CreateBridge, Action::AddBridgeAddress(want), Action::BridgeUp]);
        return;
    };
    if let Some(have) = &b.addresses {
        for c in have.iter().filter(|c| b.owned && **c != want) {
            actions.push(Action::DelBridgeAddress(*c));
        }
        if !have.contains(&want) {
            actions.push(Action::AddBridgeAddress(want));
        }
    }
    if !b.up {
        actions.push(Action::BridgeUp);
    }
}

/// What the gateway made for networks that are no longer desired.
fn plan_removals(actions: &mut Vec<Action>, desired: &Desired, observed: &Observed) {
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
}

/// Everything that must change for the system to match `desired`, in the
/// order to do it: shared bridge, networks, nginx, then removals (after
/// nginx stopped sending traffic to them).
pub fn plan(desired: &Desired, observed: &Observed, layout: &Layout, nginx: &NginxFiles) -> Vec<Action> {
    let mut actions: Vec<Action> = observed.stale_namespaces.iter().map(|p| Action::RemoveStaleNamespace(*p)).collect();
    if !desired.networks.is_empty() {
        plan_bridge(&mut actions, layout, observed);
    }
    for spec in desired.networks.values() {
        plan_network(&mut actions, layout, spec, observed);
    }
    let files_differ =
        observed.nginx_stream.as_deref() != Some(nginx.stream.as_str()) || observed.nginx_http.as_deref() != Some(nginx.http.as_str());
    // Stale: the files are right but nginx never loaded them (a crash
    // between writing and reloading); writing them again reloads it.
    if files_differ || observed.nginx_stale {
        actions.push(Action::WriteNginx);
    } else if !observed.nginx_running {
        actions.push(Action::StartNginx);
    }
    plan_removals(&mut actions, desired, observed);
    actions
}

/// What a network converged earlier and unchanged since is taken to look
/// like, so a no-op apply reads nothing: the reconciler stands this in for
/// a deep observation of a network it trusts.
pub fn converged_view(layout: &Layout, spec: &NetworkSpec) -> ObservedNetwork {
    let rules = render::rules(layout, spec);
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
    }
}

#[cfg(test)]
mod tests;
