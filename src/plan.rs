//! Decides what to change: a pure function of each network's target and
//! what was observed. No I/O here, so every decision is unit-tested without
//! root. Each action carries what it applies (the WireGuard configuration,
//! the rule set, nginx's files), so the executor renders nothing and needs
//! no desired state.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use crate::layout::Layout;
use crate::observed::{Observed, ObservedNetwork, ObservedRules, WgDump, WgPeer};
use crate::render::tc::ShapingStep;
use crate::render::{self, Family, Jump, NginxFiles, RuleSet, WgConf};
use crate::spec::NetworkSpec;
use crate::target::{NetworkTarget, Targets};
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
    /// `wg syncconf` with the full desired configuration (carried): sets
    /// key, port and peers, removes peers that are not desired. The changes
    /// say why (for a dry run and the events); the command is the same
    /// whatever they are.
    ConfigureWg(u16, WgConf, Vec<WgChange>),
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
        /// `wg addconf`'s input for them (`render::wg_kick`).
        conf: WgConf,
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
        rules: RuleSet,
        missing_jumps: Vec<Jump>,
    },
    /// Aggregate bandwidth: the tc steps on the veth's ends, in their order
    /// (see `render::tc::steps`), each with the tree it builds.
    SetShaping {
        port: u16,
        steps: Vec<ShapingStep>,
    },
    /// Write these files for nginx, check them, reload (or start) nginx.
    WriteNginx(Arc<NginxFiles>),
    StartNginx,
    DeleteNetwork(u16),
    DeleteRootWg(u16),
    DeleteHostVeth(u16),
    DeleteBridge,
}

impl Action {
    /// How errors and logs name the action: its Debug form, but without
    /// the payloads (a new network's name every one of its peers; rules
    /// and nginx's files are long).
    pub fn label(&self) -> String {
        match self {
            Action::ConfigureWg(port, ..) => format!("ConfigureWg({port})"),
            Action::KickPeers { port, peers, .. } => format!("KickPeers({port}, {} peers)", peers.len()),
            Action::SetRules { port, missing_jumps, .. } => format!("SetRules({port}, {} missing jumps)", missing_jumps.len()),
            Action::WriteNginx(_) => "WriteNginx".to_string(),
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
            | ConfigureWg(p, ..)
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
            | SetShaping { port, .. }
            | KickPeers { port, .. } => Some(*port),
            CreateBridge | AddBridgeAddress(_) | DelBridgeAddress(_) | BridgeUp | WriteNginx(_) | StartNginx | DeleteBridge => None,
        }
    }

    /// Whether this action may change its network's iptables rules (or
    /// their namespace): after it, the rules are read again before they are
    /// taken as verified. WireGuard, links, addresses, routes, sysctls and
    /// tc leave them alone.
    pub fn may_change_rules(&self) -> bool {
        use Action::*;
        !matches!(
            self,
            CreateWg(_)
                | MoveWg(_)
                | ConfigureWg(..)
                | SetWgLink { .. }
                | KickPeers { .. }
                | AddAddress { .. }
                | DelAddress { .. }
                | AddRoute { .. }
                | DelRoute { .. }
                | CreateVeth(_)
                | AttachVeth(_)
                | UplinkUp(_)
                | SetForwarding(_)
                | SetShaping { .. }
                | DeleteHostVeth(_)
                | DeleteRootWg(_)
        )
    }

    /// The network whose WireGuard counters this action ends (in part),
    /// if any: they must be accounted for before it runs. Adding or
    /// updating a peer keeps every counter; a removed peer, peers set anew,
    /// a new private key (samples go under the network's key) or an
    /// interface deleted does not.
    pub fn ends_counters(&self) -> Option<u16> {
        let keeps = |c: &WgChange| matches!(c, WgChange::AddPeer(_) | WgChange::UpdatePeer(..) | WgChange::Endpoints);
        match self {
            Action::ConfigureWg(port, _, changes) if !changes.iter().all(keeps) => Some(*port),
            Action::DeleteNetwork(port) | Action::DeleteRootWg(port) => Some(*port),
            _ => None,
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
            ConfigureWg(_, _, changes) => {
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
            SetShaping { steps, .. } => {
                let steps: Vec<String> = steps
                    .iter()
                    .map(|s| match &s.set {
                        Some(t) => format!("shape {} ({} classes, {} filters)", s.side, t.classes.len(), t.filters.len()),
                        None => format!("stop shaping {}", s.side),
                    })
                    .collect();
                write!(f, "set the bandwidth limits: {}", steps.join(", "))
            }
            WriteNginx(_) => f.write_str("write the nginx files, check and reload nginx"),
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
/// configured; or brought back to the target where it differs.
fn plan_wireguard(actions: &mut Vec<Action>, target: &NetworkTarget, obs: &ObservedNetwork, observed: &Observed) {
    let spec = &*target.spec;
    let port = spec.port;
    let configure = |changes| Action::ConfigureWg(port, target.wg.clone(), changes);
    let Some(link) = &obs.wg_link else {
        // Ours and left in the root namespace (a failed move): move it.
        // Anyone else's `wgP` is not adopted: creating ours fails loudly.
        if observed.wg_in_root.get(&port) != Some(&true) {
            actions.push(Action::CreateWg(port));
        }
        actions.push(Action::MoveWg(port));
        actions.push(configure(wg_changes(spec, &WgDump::default())));
        actions.push(Action::SetWgLink { port, mtu: spec.mtu });
        diff_addresses(actions, port, Dev::Wg, &[], &spec.addresses);
        diff_routes(actions, port, &[], &target.routes);
        let peers = if observed.reach_out.contains_key(&port) {
            peers_to_reach(spec, observed.endpoints.get(&port))
        } else {
            peers_to_kick(spec, observed.endpoints.get(&port))
        };
        if !peers.is_empty() && !spec.standby {
            actions.push(kick(spec, peers));
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
        actions.push(configure(changes));
    }
    if link.mtu != spec.mtu || !link.up {
        actions.push(Action::SetWgLink { port, mtu: spec.mtu });
    }
    diff_addresses(actions, port, Dev::Wg, &link.addresses, &spec.addresses);
    diff_routes(actions, port, &obs.routes, &target.routes);
    let peers = if reach { peers_to_reach(spec, observed.endpoints.get(&port)) } else { Vec::new() };
    if !peers.is_empty() {
        actions.push(kick(spec, peers));
    }
}

fn kick(spec: &NetworkSpec, peers: Vec<(PublicKey, std::net::SocketAddr)>) -> Action {
    let conf = WgConf::kick(spec, &peers);
    Action::KickPeers { port: spec.port, peers, conf }
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
fn plan_uplink(actions: &mut Vec<Action>, target: &NetworkTarget, obs: &ObservedNetwork, observed: &Observed) {
    let (port, veth_addr) = (target.port(), [target.uplink_address]);
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
    plan_host_veth(actions, port, observed);
    if !link.up {
        actions.push(Action::UplinkUp(port));
    }
    diff_addresses(actions, port, Dev::Uplink, &link.addresses, &veth_addr);
}

/// The root end of the veth, read without a process (also for a network
/// taken as unchanged, but for an apply's trusted ones): on the bridge, up,
/// isolated.
fn plan_host_veth(actions: &mut Vec<Action>, port: u16, observed: &Observed) {
    if !observed.host_veths.get(&port).is_some_and(|h| h.on_bridge && h.up && h.isolated) {
        actions.push(Action::AttachVeth(port));
    }
}

/// The gateway's chains and FORWARD policies, in both families (IPv6 where
/// its rules were read), as the target says; nothing when they match.
pub fn plan_rules(target: &NetworkTarget, rules: &ObservedRules) -> Option<Action> {
    let want = &target.rules;
    let families: Vec<Family> = [Family::Ipv4].into_iter().chain(rules.filter6.as_ref().map(|_| Family::Ipv6)).collect();
    let missing_jumps: Vec<Jump> = render::JUMPS.into_iter().filter(|j| families.contains(&j.family) && !rules.jumps.contains(j)).collect();
    let differ = rules.nat != want.nat
        || rules.filter != want.filter
        || rules.filter6.as_ref().is_some_and(|f| *f != want.filter)
        || families.iter().any(|f| !rules.forward_drop.contains(f));
    (differ || !missing_jumps.is_empty()).then(|| Action::SetRules { port: target.port(), rules: want.clone(), missing_jumps })
}

fn plan_network(actions: &mut Vec<Action>, target: &NetworkTarget, observed: &Observed) {
    let port = target.port();
    if observed.unchanged.contains(&port) {
        return actions.extend(plan_unchanged(target, observed));
    }
    // Nothing there yet: every rule of both families is missing too.
    let fresh = ObservedNetwork { rules: Some(ObservedRules { filter6: Some(Vec::new()), ..Default::default() }), ..Default::default() };
    let obs = if observed.namespaces.contains(&port) {
        observed.networks.get(&port).unwrap_or(&fresh)
    } else {
        actions.push(Action::CreateNamespace(port));
        &fresh
    };
    // The filter first (FORWARD policy DROP in both families), before any
    // link can carry a packet into the namespace; forwarding last, once the
    // filter and the links are there. A failing step stops the network's
    // later ones, so forwarding is never on without the filter.
    actions.extend(obs.rules.as_ref().and_then(|r| plan_rules(target, r)));
    plan_wireguard(actions, target, obs, observed);
    plan_uplink(actions, target, obs, observed);
    plan_shaping(actions, target, obs, observed);
    if !obs.forwarding {
        actions.push(Action::SetForwarding(port));
    }
}

/// A network whose target did not change since a pass converged it (or
/// that could not be read): nothing inside its namespace is looked at or
/// planned. What costs no look still counts: the root end of its veth (if
/// read: an apply trusts it with the rest), and
/// a host that just became active still reaches out to its peers.
pub fn plan_unchanged(target: &NetworkTarget, observed: &Observed) -> Vec<Action> {
    let spec = &*target.spec;
    let mut actions = Vec::new();
    if !observed.host_veths_trusted.contains(&spec.port) {
        plan_host_veth(&mut actions, spec.port, observed);
    }
    if spec.standby || observed.reach_out.get(&spec.port) != Some(&crate::ha::Reach::Taken) {
        return actions;
    }
    actions.push(Action::ConfigureWg(spec.port, target.wg.clone(), vec![WgChange::ReachOut]));
    let peers = peers_to_reach(spec, observed.endpoints.get(&spec.port));
    if !peers.is_empty() {
        actions.push(kick(spec, peers));
    }
    actions
}

/// Aggregate bandwidth on the veth's ends, once the veth is there. A
/// network without any bandwidth field gets nothing, unless its ends were
/// seen holding HTB (the fields went away).
fn plan_shaping(actions: &mut Vec<Action>, target: &NetworkTarget, obs: &ObservedNetwork, observed: &Observed) {
    let port = target.port();
    let host_qdisc = observed.host_veths.get(&port).and_then(|v| v.qdisc.as_deref());
    let steps = render::tc::steps(target.shaping.as_ref(), obs.shaping.as_ref(), obs.uplink_qdisc.as_deref(), host_qdisc);
    if !steps.is_empty() {
        actions.push(Action::SetShaping { port, steps });
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
fn plan_removals(actions: &mut Vec<Action>, targets: &Targets, observed: &Observed) {
    let wanted = |p: &u16| targets.networks.contains_key(p);
    for p in observed.namespaces.iter().filter(|p| !wanted(p)) {
        actions.push(Action::DeleteNetwork(*p));
    }
    for (p, _) in observed.wg_in_root.iter().filter(|(p, owned)| **owned && !wanted(p)) {
        actions.push(Action::DeleteRootWg(*p));
    }
    for (p, _) in observed.host_veths.iter().filter(|(p, v)| v.owned && !wanted(p) && !observed.namespaces.contains(p)) {
        actions.push(Action::DeleteHostVeth(*p));
    }
    if targets.networks.is_empty() && observed.bridge.as_ref().is_some_and(|b| b.owned) {
        actions.push(Action::DeleteBridge);
    }
}

/// A plan in its three stretches, so a network's actions can be added to
/// before they run (its rules, read after the rest was planned).
#[derive(Debug, Default)]
pub struct Plan {
    /// Stale namespace files, the bridge.
    pub before: Vec<Action>,
    /// Each desired network's actions, in order.
    pub networks: BTreeMap<u16, Vec<Action>>,
    /// nginx, then removals (after nginx stopped sending traffic to them).
    pub after: Vec<Action>,
}

impl Plan {
    /// Puts `action`, if any, first among `port`'s actions.
    pub fn prepend_some(&mut self, port: u16, action: Option<Action>) {
        if let Some(action) = action {
            self.networks.entry(port).or_default().insert(0, action);
        }
    }

    /// The networks with something to do.
    pub fn networks_off(&self) -> BTreeSet<u16> {
        self.networks.iter().filter(|(_, a)| !a.is_empty()).map(|(p, _)| *p).collect()
    }

    pub fn into_actions(self) -> Vec<Action> {
        let mut out = self.before;
        out.extend(self.networks.into_values().flatten());
        out.extend(self.after);
        out
    }
}

/// Everything that must change for the system to match `targets`, in the
/// order to do it: shared bridge, networks, nginx, then removals.
pub fn plan_parts(targets: &Targets, observed: &Observed, layout: &Layout, nginx: &Arc<NginxFiles>) -> Plan {
    let mut plan = Plan::default();
    plan.before.extend(observed.stale_namespaces.iter().map(|p| Action::RemoveStaleNamespace(*p)));
    if !targets.networks.is_empty() {
        plan_bridge(&mut plan.before, layout, observed);
    }
    for (port, target) in &targets.networks {
        let mut actions = Vec::new();
        plan_network(&mut actions, target, observed);
        if !actions.is_empty() {
            plan.networks.insert(*port, actions);
        }
    }
    let files_differ =
        observed.nginx_stream.as_deref() != Some(nginx.stream.as_str()) || observed.nginx_http.as_deref() != Some(nginx.http.as_str());
    // Stale: the files are right but nginx never loaded them (a crash
    // between writing and reloading); writing them again reloads it.
    if files_differ || observed.nginx_stale {
        plan.after.push(Action::WriteNginx(nginx.clone()));
    } else if !observed.nginx_running {
        plan.after.push(Action::StartNginx);
    }
    plan_removals(&mut plan.after, targets, observed);
    plan
}

/// [`plan_parts`] as one list.
pub fn plan(targets: &Targets, observed: &Observed, layout: &Layout, nginx: &Arc<NginxFiles>) -> Vec<Action> {
    plan_parts(targets, observed, layout, nginx).into_actions()
}

#[cfg(test)]
mod tests;
