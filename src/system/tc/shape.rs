//! Aggregate bandwidth with tc: one HTB tree on each end of a network's
//! veth. The root end's egress carries everything nginx sends toward the
//! nodes (`ingress_mbit`), the namespace end's egress everything the nodes
//! send back toward the clients (`egress_mbit`). Every route reaches its
//! upstreams through DNAT ports of its own on the veth's address inside the
//! namespace (see `layout`), so a u32 filter on the protocol and that port
//! (the destination port toward the nodes, the source port back) puts a
//! route's packets, of all its connections together, into its class. The
//! network's class, when it has a limit, is the parent of its routes'
//! classes and of one class for the routes without a limit of their own:
//! the sum of its routes stays under it. No IFB, no ingress qdisc.
//!
//! Rates are kept in kbit/s, the unit tc prints them back in exactly (a
//! Mbit/s is 1,000 kbit/s, a kbit/s 125 bytes/s), so observed and desired
//! compare as values.

use std::collections::BTreeSet;
use std::fmt::{self, Write};

use crate::types::Transport;

pub use crate::spec::Bandwidth;

/// A limit toward one side, in kbit/s.
fn toward(b: Option<&Bandwidth>, side: Side) -> Option<u64> {
    let mbit = match side {
        Side::TowardNodes => b?.ingress_mbit,
        Side::TowardClients => b?.egress_mbit,
    };
    mbit.map(|m| u64::from(m) * 1000)
}

/// Which end of the veth, by the traffic its egress carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// The root namespace's end (`gwvP`): nginx toward the nodes.
    TowardNodes,
    /// The namespace's end (`gw-uplink`): the nodes' answers toward nginx.
    TowardClients,
}

impl Side {
    /// The u32 keyword of the port that names a route on this end.
    fn port_match(self) -> &'static str {
        match self {
            Side::TowardNodes => "dport",
            Side::TowardClients => "sport",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::TowardNodes => "toward the nodes",
            Side::TowardClients => "toward the clients",
        })
    }
}

/// One route as shaping sees it: its limits and the DNAT ports it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapedRoute {
    pub bandwidth: Option<Bandwidth>,
    pub ports: Vec<(Transport, u16)>,
}

/// An HTB class `1:MINOR` (minors are printed in hex by tc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TcClass {
    pub minor: u16,
    /// `None`: under the root qdisc.
    pub parent: Option<u16>,
    pub rate_kbit: u64,
    pub ceil_kbit: u64,
}

/// A u32 filter sending one DNAT port's packets into class `1:MINOR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TcFilter {
    pub proto: Transport,
    pub port: u16,
    pub minor: u16,
}

/// One veth end's tree under its root qdisc `1: htb default 0` (packets no
/// filter classifies, ARP for one, pass unshaped). Sorted, so equal trees
/// compare equal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shaping {
    pub classes: Vec<TcClass>,
    pub filters: Vec<TcFilter>,
}

/// Both ends of one network's veth. A network with any bandwidth field has
/// the HTB qdisc on both ends, even where one end has no class: the
/// namespace end's qdisc is what a pass sees without a process (its kind
/// comes with the link), so it tells that the network is shaped at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkShaping {
    pub toward_nodes: Shaping,
    pub toward_clients: Shaping,
}

impl NetworkShaping {
    pub fn side(&self, side: Side) -> &Shaping {
        match side {
            Side::TowardNodes => &self.toward_nodes,
            Side::TowardClients => &self.toward_clients,
        }
    }
}

/// The network's class, parent of the others when the network has a limit.
pub const NETWORK_CLASS: u16 = 1;
/// The routes without a limit of their own, under a network limit.
pub const REST_CLASS: u16 = 2;
/// Routes with a limit take `1:10`, `1:11`, ... in the order given.
pub const FIRST_ROUTE_CLASS: u16 = 0x10;
// Every route validation lets have a bandwidth gets a class number.
const _: () = assert!((u16::MAX - FIRST_ROUTE_CLASS) as usize + 1 >= crate::spec::MAX_SHAPED_ROUTES);
/// The smallest rate tc is given (a class's guaranteed share).
const MIN_RATE_KBIT: u64 = 8;

/// The trees for a network's limits and its routes'; `None` when none of
/// them has a bandwidth field (then no tc command is run for it at all).
/// `all_ports` are every DNAT port of the network: under a network limit,
/// the ports of routes without their own limit go to [`REST_CLASS`]. Each
/// route has ports of its own (see `layout::dnat_ports`); a port two routes
/// would share (only past the 10,000 ports of a network) goes to the first
/// route with a limit that has it.
pub fn shaping(network: Option<Bandwidth>, routes: &[ShapedRoute], all_ports: &[(Transport, u16)]) -> Option<NetworkShaping> {
    if network.is_none() && routes.iter().all(|r| r.bandwidth.is_none()) {
        return None;
    }
    Some(NetworkShaping {
        toward_nodes: side_shaping(Side::TowardNodes, network, routes, all_ports),
        toward_clients: side_shaping(Side::TowardClients, network, routes, all_ports),
    })
}

fn side_shaping(side: Side, network: Option<Bandwidth>, routes: &[ShapedRoute], all_ports: &[(Transport, u16)]) -> Shaping {
    let net = toward(network.as_ref(), side);
    let limited: Vec<(u64, &[(Transport, u16)])> =
        routes.iter().filter_map(|r| Some((toward(r.bandwidth.as_ref(), side)?, &r.ports[..]))).collect();
    let mut out = Shaping::default();
    // Under a network limit each leaf is guaranteed an equal share and may
    // borrow up to its ceiling: HTB lets a class send at its own rate
    // without asking its parent, so the rates must add up to no more than
    // the network's for the network's ceiling to hold.
    let leaves = limited.len() as u64 + u64::from(net.is_some());
    let share = |ceil: u64| net.map_or(ceil, |n| (n / leaves.max(1)).clamp(MIN_RATE_KBIT, ceil.max(MIN_RATE_KBIT)));
    let parent = net.map(|n| {
        out.classes.push(TcClass { minor: NETWORK_CLASS, parent: None, rate_kbit: n, ceil_kbit: n });
        NETWORK_CLASS
    });
    let mut claimed = BTreeSet::new();
    for (minor, (limit, ports)) in (FIRST_ROUTE_CLASS..=u16::MAX).zip(&limited) {
        let ceil = net.map_or(*limit, |n| (*limit).min(n));
        out.classes.push(TcClass { minor, parent, rate_kbit: share(ceil), ceil_kbit: ceil });
        for p in ports.iter().filter(|p| claimed.insert(**p)) {
            out.filters.push(TcFilter { proto: p.0, port: p.1, minor });
        }
    }
    if let Some(n) = net {
        out.classes.push(TcClass { minor: REST_CLASS, parent, rate_kbit: share(n), ceil_kbit: n });
        for p in all_ports.iter().filter(|p| claimed.insert(**p)) {
            out.filters.push(TcFilter { proto: p.0, port: p.1, minor: REST_CLASS });
        }
    }
    out.classes.sort();
    out.filters.sort();
    out
}

/// The trees a network's spec asks for (see [`shaping`]): `None`, at no
/// cost, for a network without any bandwidth field.
pub fn of_spec(spec: &crate::spec::NetworkSpec, dnat: &crate::layout::NetworkDnat) -> Option<NetworkShaping> {
    if spec.bandwidth.is_none() && spec.route_limits.values().all(|l| l.bandwidth.is_none()) {
        return None;
    }
    let routes = route_ports(spec, dnat);
    let mut all: Vec<(Transport, u16)> = routes.iter().flat_map(|(_, ports)| ports.iter().copied()).collect();
    all.sort();
    all.dedup();
    let limits: std::collections::BTreeMap<String, Bandwidth> =
        spec.route_limits.iter().filter_map(|(key, l)| Some((key.to_string(), l.bandwidth?))).collect();
    let shaped: Vec<ShapedRoute> =
        routes.into_iter().filter_map(|(key, ports)| Some(ShapedRoute { bandwidth: Some(*limits.get(&key)?), ports })).collect();
    shaping(spec.bandwidth, &shaped, &all)
}

/// Each route of a network (by its key in `proxy`) with the DNAT ports its
/// connections go to: one per upstream, its own (see `layout::dnat_ports`).
pub fn route_ports(spec: &crate::spec::NetworkSpec, dnat: &crate::layout::NetworkDnat) -> Vec<(String, Vec<(Transport, u16)>)> {
    let mut out = Vec::new();
    for transport in [Transport::Tcp, Transport::Udp] {
        let ports = dnat.of(transport);
        for (key, upstreams) in spec.dnat_routes(transport) {
            let mut v: Vec<(Transport, u16)> = upstreams.iter().filter_map(|u| ports.port(&key, u)).map(|p| (transport, p)).collect();
            v.sort();
            v.dedup();
            out.push((key, v));
        }
    }
    out
}

/// Input for `tc -batch -` that builds `shaping` on `dev` (whose root
/// qdisc must be the default one: see `system::tc`). Classes before the
/// filters that name them, parents before children.
pub fn tc_batch(dev: &str, side: Side, shaping: &Shaping) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "qdisc add dev {dev} root handle 1: htb default 0");
    let mut classes = shaping.classes.clone();
    classes.sort_by_key(|c| (c.parent.is_some(), c.minor));
    for c in &classes {
        let parent = c.parent.map_or_else(|| "1:".to_string(), |p| format!("1:{p:x}"));
        // A quantum of one full frame: tc's default (rate / 10) is over the
        // kernel's bound above 16 Mbit/s and draws a warning.
        let _ = writeln!(
            s,
            "class add dev {dev} parent {parent} classid 1:{:x} htb rate {}kbit ceil {}kbit quantum 1514",
            c.minor, c.rate_kbit, c.ceil_kbit
        );
    }
    for f in &shaping.filters {
        let _ = writeln!(
            s,
            "filter add dev {dev} parent 1: protocol ip prio 1 u32 match ip protocol {} 0xff match ip {} {} 0xffff flowid 1:{:x}",
            f.proto.protocol_number(),
            side.port_match(),
            f.port,
            f.minor
        );
    }
    s
}

/// The commands that read one device's tree back (`tc -batch -`): its
/// qdiscs, classes and filters, parsed by [`parse_tc_show`].
pub fn tc_show_batch(dev: &str) -> String {
    format!("qdisc show dev {dev}\nclass show dev {dev}\nfilter show dev {dev}\n")
}

/// One device's tree as `tc qdisc/class/filter show` printed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedShaping {
    /// The root qdisc is HTB (ours, or made by hand: the veth is the gateway's).
    pub htb: bool,
    /// The root qdisc is another than the device's default (`noqueue`):
    /// it must go before ours can be added.
    pub custom_root: bool,
    /// The root qdisc is exactly `htb 1: ... default 0`.
    pub ours: bool,
    pub tree: Shaping,
    /// Classes and filters of another form than the gateway makes.
    pub foreign: usize,
}

impl ObservedShaping {
    /// Whether the device holds exactly `want`.
    pub fn matches(&self, want: &Shaping) -> bool {
        self.ours && self.foreign == 0 && self.tree == *want
    }
}

/// Both ends of a network's veth as read (see [`NetworkShaping`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedTc {
    pub toward_nodes: ObservedShaping,
    pub toward_clients: ObservedShaping,
}

impl ObservedTc {
    pub fn side(&self, side: Side) -> &ObservedShaping {
        match side {
            Side::TowardNodes => &self.toward_nodes,
            Side::TowardClients => &self.toward_clients,
        }
    }

    /// What a network converged to `want` looks like (tests: what tc
    /// reports once `want` is applied).
    #[cfg(test)]
    pub fn converged(want: Option<&NetworkShaping>) -> Self {
        let side = |s: Option<&Shaping>| match s {
            Some(tree) => ObservedShaping { htb: true, custom_root: true, ours: true, tree: tree.clone(), foreign: 0 },
            None => ObservedShaping::default(),
        };
        ObservedTc { toward_nodes: side(want.map(|w| &w.toward_nodes)), toward_clients: side(want.map(|w| &w.toward_clients)) }
    }
}

/// What to do on one end of the veth: remove the root qdisc that is there
/// (`clear`), then build a tree (`set`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapingStep {
    pub side: Side,
    pub clear: bool,
    pub set: Option<Shaping>,
}

/// The steps that bring a network's veth from what was seen to `want`.
/// `seen` is `None` when tc was not read: a network made in this pass
/// (nothing there yet), or one without any bandwidth field whose ends
/// were not seen to hold HTB (their qdisc's kind comes with the links, for
/// free: `uplink_qdisc` always, `host_qdisc` in a drift check). The
/// namespace end is made first and cleared last: it tells a later pass,
/// without a process, that the network may be shaped, so a kill between
/// two steps never leaves a tree nobody looks at.
pub fn steps(
    want: Option<&NetworkShaping>,
    seen: Option<&ObservedTc>,
    uplink_qdisc: Option<&str>,
    host_qdisc: Option<&str>,
) -> Vec<ShapingStep> {
    match want {
        Some(want) => [Side::TowardClients, Side::TowardNodes]
            .into_iter()
            .filter_map(|side| {
                let seen = seen.map(|s| s.side(side));
                if seen.is_some_and(|o| o.matches(want.side(side))) {
                    return None;
                }
                Some(ShapingStep { side, clear: seen.is_some_and(|o| o.custom_root), set: Some(want.side(side).clone()) })
            })
            .collect(),
        None => {
            let htb = |side: Side| match seen {
                Some(s) => s.side(side).htb,
                None => match side {
                    Side::TowardNodes => host_qdisc == Some("htb"),
                    Side::TowardClients => uplink_qdisc == Some("htb"),
                },
            };
            [Side::TowardNodes, Side::TowardClients]
                .into_iter()
                .filter(|s| htb(*s))
                .map(|side| ShapingStep { side, clear: true, set: None })
                .collect()
        }
    }
}

/// Parses the output of [`tc_show_batch`] for one `side`. Anything of
/// another form than [`tc_batch`] writes is counted in `foreign`, so the
/// device is rebuilt rather than trusted.
pub fn parse_tc_show(text: &str, side: Side) -> ObservedShaping {
    let mut out = ObservedShaping::default();
    let mut filter: Option<FilterParts> = None;
    let finish = |f: Option<FilterParts>, out: &mut ObservedShaping| {
        if let Some(f) = f {
            match f.build(side) {
                Some(tf) => out.tree.filters.push(tf),
                None => out.foreign += 1,
            }
        }
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            Some("qdisc") if words.contains(&"root") => {
                out.custom_root = !matches!(words.get(1).copied(), Some("noqueue" | "noop"));
                out.htb = words.get(1) == Some(&"htb");
                out.ours = out.htb && words.get(2) == Some(&"1:") && value_after(&words, "default") == Some("0");
            }
            Some("class") => match parse_class(&words) {
                Some(c) => out.tree.classes.push(c),
                None => out.foreign += 1,
            },
            // Only a line with a node handle (`fh 800::800`) is a filter;
            // the others are its chain's and hash table's headers.
            Some("filter") if value_after(&words, "fh").is_some_and(|h| h.split("::").nth(1).is_some_and(|n| !n.is_empty())) => {
                finish(filter.take(), &mut out);
                filter = Some(FilterParts::start(&words));
            }
            Some("match") => match filter.as_mut() {
                Some(f) => f.matches.push(words.iter().map(|w| w.to_string()).collect()),
                None => out.foreign += 1,
            },
            _ => {}
        }
    }
    finish(filter.take(), &mut out);
    out.tree.classes.sort();
    out.tree.filters.sort();
    out
}

fn value_after<'a>(words: &[&'a str], key: &str) -> Option<&'a str> {
    words.iter().position(|w| *w == key).and_then(|i| words.get(i + 1)).copied()
}

/// `1:10` → 0x10 (major 1 only).
fn minor_of(handle: &str) -> Option<u16> {
    let (major, minor) = handle.split_once(':')?;
    (major == "1").then_some(())?;
    u16::from_str_radix(minor, 16).ok()
}

/// `class htb 1:10 parent 1:1 prio 0 rate 16Mbit ceil 16Mbit burst ...`
/// or `class htb 1:1 root rate ...`.
fn parse_class(words: &[&str]) -> Option<TcClass> {
    if words.get(1) != Some(&"htb") {
        return None;
    }
    let minor = minor_of(words.get(2)?)?;
    let parent = match words.get(3).copied()? {
        "root" => None,
        "parent" => Some(minor_of(words.get(4)?)?),
        _ => return None,
    };
    let rate_kbit = kbit_of(value_after(words, "rate")?)?;
    let ceil_kbit = kbit_of(value_after(words, "ceil")?)?;
    Some(TcClass { minor, parent, rate_kbit, ceil_kbit })
}

/// A rate as tc prints it (`500bit`, `6666Kbit`, `16Mbit`, `1Gbit`), in
/// kbit/s when it is a whole number of them.
pub fn kbit_of(rate: &str) -> Option<u64> {
    let digits = rate.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = rate.split_at(digits);
    let n: u64 = n.parse().ok()?;
    match unit {
        "bit" => (n % 1000 == 0).then_some(n / 1000),
        "Kbit" => Some(n),
        "Mbit" => n.checked_mul(1000),
        "Gbit" => n.checked_mul(1_000_000),
        "Tbit" => n.checked_mul(1_000_000_000),
        _ => None,
    }
}

/// A u32 filter node being read: its head line's words, then its matches.
struct FilterParts {
    head_ok: bool,
    minor: Option<u16>,
    matches: Vec<Vec<String>>,
}

impl FilterParts {
    fn start(words: &[&str]) -> Self {
        let head_ok = value_after(words, "parent") == Some("1:") && value_after(words, "protocol") == Some("ip") && words.contains(&"u32");
        let minor = ["flowid", "*flowid", "classid", "*classid"].iter().find_map(|k| value_after(words, k)).and_then(minor_of);
        FilterParts { head_ok, minor, matches: Vec::new() }
    }

    /// The filter, when it is exactly the protocol and port matches
    /// [`tc_batch`] writes for `side`: `match 00060000/00ff0000 at 8` and
    /// `match 00004e20/0000ffff at 20` (destination port) or
    /// `match 4e200000/ffff0000 at 20` (source port).
    fn build(&self, side: Side) -> Option<TcFilter> {
        if !self.head_ok || self.matches.len() != 2 {
            return None;
        }
        let parsed: Vec<(u32, u32, &str)> = self.matches.iter().map(|m| match_of(m)).collect::<Option<_>>()?;
        let [(proto, proto_mask, "8"), (port, port_mask, "20")] = parsed[..] else { return None };
        if proto_mask != 0x00ff_0000 {
            return None;
        }
        let port = match (side, port_mask) {
            (Side::TowardNodes, 0x0000_ffff) => port,
            (Side::TowardClients, 0xffff_0000) => port >> 16,
            _ => return None,
        };
        Some(TcFilter { proto: Transport::of_protocol_number(proto >> 16)?, port: u16::try_from(port).ok()?, minor: self.minor? })
    }
}

/// `match VALUE/MASK at OFFSET` → (value, mask, offset).
fn match_of(words: &[String]) -> Option<(u32, u32, &str)> {
    let [m, vm, at, off] = words else { return None };
    if m != "match" || at != "at" {
        return None;
    }
    let (v, mask) = vm.split_once('/')?;
    Some((u32::from_str_radix(v, 16).ok()?, u32::from_str_radix(mask, 16).ok()?, off.as_str()))
}

#[cfg(test)]
mod tests;
