//! Turns the loose JSON of the API into the checked [`Desired`] state. Values
//! are parsed by their types (`crate::types`); this module only walks the
//! config, collects every problem with its JSON path, and checks the rules
//! that span values: one owner per hostname, per allowed IP, per private key.

mod limits;

pub use limits::LimitFields;
#[cfg(test)]
pub(crate) use limits::access_cidr;
mod network;

pub(crate) use network::check_interface_address;
#[cfg(test)]
pub(crate) use network::{check_endpoint, is_ipv4_compatible};

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{ErrorDetail, GatewayConfig, NetworkConfig};
use crate::spec::{CustomForwarding, Desired, NetworkSpec};
use crate::types::{Cidr, Hostname, PortRange, ProxyKey, SecretKey, Transport, parse_listen_port, truncate};

pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 1280..=9000;

/// What a config is checked against besides itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// Static forwardings: their hostnames are taken.
    pub custom: &'a [CustomForwarding],
    /// Subnets the gateway uses itself (the bridge): no address, allowed IP or
    /// upstream may fall inside them, or the namespace's route to nginx breaks.
    pub reserved: &'a [Cidr],
    /// Ports of the gateway host the gateway itself uses (its listeners, the
    /// API, `--custom-forwarding` upstreams), each with what uses it: no
    /// `tcp://`/`udp://` entry may take them.
    pub ports: &'a [(u16, String)],
    /// Which raw ports a config may open (`--raw-port-range`).
    pub raw_ports: PortRange,
    /// The state accepted before, if known: a network that keeps its
    /// private key keeps its public key without deriving it again (an x25519
    /// multiplication each, a third of validating 1,000 networks).
    pub previous: Option<&'a Desired>,
    /// The config `previous` was validated from (with this context): a
    /// network given exactly as there is not checked again but keeps its
    /// spec, the same shared value, so later layers see it unchanged at a
    /// glance. The checks across networks still run on the whole state.
    pub previous_config: Option<&'a GatewayConfig>,
    /// How much one config may ask for (`--max-networks` and the rest).
    pub limits: Limits,
}

/// How much one config may ask for. Each bounds work the daemon does for
/// every pass (processes, nginx server blocks, routes, DNAT rules) and the
/// work of checking a request: a list longer than its cap is refused as a
/// whole, before any of its items is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Networks of the whole state (`--max-networks`).
    pub networks: usize,
    /// Peers of one network (`--max-peers`).
    pub peers: usize,
    /// Allowed IPs of one peer, and addresses of one network's interface
    /// (`--max-allowed-ips`).
    pub allowed_ips: usize,
    /// Proxy entries (`https://`, `http://`, `tcp://`, `udp://`) of one
    /// network (`--max-routes`).
    pub routes: usize,
    /// Distinct upstreams of one network, each taking a DNAT port of the
    /// 10,000 after `--dnat-port-base`; also the longest upstream list of
    /// one entry (`--max-upstreams`).
    pub upstreams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { networks: 4096, peers: 4096, allowed_ips: 1024, routes: 1024, upstreams: 1000 }
    }
}

/// A list longer than its cap: one problem naming the cap, its value and
/// the option that raises it.
pub(crate) fn over_cap(problems: &mut Problems, path: &str, len: usize, what: &str, cap: usize, option: &str) -> bool {
    if len <= cap {
        return false;
    }
    problems.add(path, format!("{len} {what}; at most {cap} (--{option}, GATEWAY_{} raises it)", option.to_uppercase().replace('-', "_")));
    true
}

/// At most this many problems are listed in an answer ([`Problems`]).
pub const MAX_DETAILS: usize = 100;
/// Validation stops once it has found this many problems: a body of a
/// million bad items is not walked to its end.
pub const STOP_AFTER: usize = 10_000;

/// The problems found, each with its JSON path: the first [`MAX_DETAILS`]
/// kept, all counted (up to [`STOP_AFTER`], where validation stops).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Problems {
    details: Vec<ErrorDetail>,
    total: usize,
}

impl Problems {
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(ErrorDetail::new(path, message));
    }

    pub fn push(&mut self, detail: ErrorDetail) {
        self.total += 1;
        if self.details.len() < MAX_DETAILS {
            self.details.push(detail);
        }
    }

    /// One problem.
    pub fn one(path: impl Into<String>, message: impl Into<String>) -> Problems {
        let mut p = Problems::default();
        p.add(path, message);
        p
    }

    /// How many were found (validation stopped at [`STOP_AFTER`]).
    pub fn total(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Whether validation should stop walking: enough was found.
    pub fn enough(&self) -> bool {
        self.total >= STOP_AFTER
    }

    /// The problems kept (at most [`MAX_DETAILS`]).
    pub fn details(&self) -> &[ErrorDetail] {
        &self.details
    }

    pub fn into_details(self) -> Vec<ErrorDetail> {
        self.details
    }

    fn count(&self) -> usize {
        self.total
    }
}

impl FromIterator<ErrorDetail> for Problems {
    fn from_iter<I: IntoIterator<Item = ErrorDetail>>(iter: I) -> Self {
        let mut p = Problems::default();
        for d in iter {
            p.push(d);
            if p.enough() {
                break;
            }
        }
        p
    }
}

/// `base["key"]`, with the key escaped as a JSON string, so a hostile key
/// cannot break the path's syntax.
pub fn key_path(base: &str, key: &str) -> String {
    format!("{base}[{}]", serde_json::Value::String(truncate(key)))
}

/// Checks the whole config; on failure returns its problems, each with its
/// JSON path (see [`Problems`] for how many).
pub fn validate(config: &GatewayConfig, ctx: &Context<'_>) -> Result<Desired, Problems> {
    let mut problems = Problems::default();
    if over_cap(&mut problems, "$", config.len(), "networks", ctx.limits.networks, "max-networks") {
        return Err(problems);
    }
    let mut networks = BTreeMap::new();
    for (key, net) in config {
        if problems.enough() {
            return Err(problems);
        }
        if let Some(spec) = unchanged(key, net, ctx) {
            networks.insert(spec.port, spec);
            continue;
        }
        let path = key_path("$", key);
        let port = parse_listen_port(key).map_err(|e| problems.add(path.clone(), e)).ok();
        if let Some(spec) = network::validate_network(&path, port, net, ctx, &mut problems) {
            networks.insert(spec.port, std::sync::Arc::new(spec));
        }
    }
    let desired = Desired { networks };
    one_network_per_hostname(&desired, ctx, &mut problems);
    let wireguard_ports: BTreeSet<u16> = config.keys().filter_map(|k| parse_listen_port(k).ok()).collect();
    one_owner_per_port(&desired, &wireguard_ports, ctx, &mut problems);
    unique_private_keys(&desired, &mut problems);
    if problems.is_empty() { Ok(desired) } else { Err(problems) }
}

/// The spec of a network given exactly as in the previous config.
fn unchanged(key: &str, net: &NetworkConfig, ctx: &Context<'_>) -> Option<std::sync::Arc<NetworkSpec>> {
    let (config, desired) = (ctx.previous_config?, ctx.previous?);
    if config.get(key) != Some(net) {
        return None;
    }
    desired.networks.get(&parse_listen_port(key).ok()?).cloned()
}

/// A hostname may be served by only one network, whatever the scheme (and not
/// by a custom forwarding): one tenant's http:// would otherwise answer for
/// another's https:// name, e.g. to an ACME HTTP-01 check.
fn one_network_per_hostname(desired: &Desired, ctx: &Context<'_>, problems: &mut Problems) {
    let mut owners: BTreeMap<&Hostname, Option<u16>> = ctx.custom.iter().map(|f| (&f.url.host, None)).collect();
    for spec in desired.networks.values() {
        for (scheme, host) in spec.urls() {
            match owners.get(host) {
                Some(Some(p)) if *p == spec.port => {}
                Some(other) => {
                    let by = other.map_or("a --custom-forwarding".to_string(), |p| format!("network {p}"));
                    problems.add(
                        key_path(&format!("{}.proxy", key_path("$", &spec.port.to_string())), &format!("{}://{host}", scheme.name())),
                        format!("{host} is already served by {by}; a hostname may be in only one network"),
                    );
                }
                None => {
                    owners.insert(host, Some(spec.port));
                }
            }
        }
    }
}

/// A raw port belongs to one network (`tcp://5353` and `udp://5353` of one
/// network may go together), never to a port the gateway itself uses (nginx
/// would fail to bind it), and lies in the operator's `--raw-port-range`
/// (a tenant must not take the host's SSH or DNS port).
fn one_owner_per_port(desired: &Desired, wireguard_ports: &BTreeSet<u16>, ctx: &Context<'_>, problems: &mut Problems) {
    let mut owners: BTreeMap<u16, u16> = BTreeMap::new();
    for spec in desired.networks.values() {
        for (transport, port) in spec.raw_ports() {
            let taken_by = if let Some((_, what)) = ctx.ports.iter().find(|(p, _)| *p == port) {
                Some(what.clone())
            } else if wireguard_ports.contains(&port) {
                Some(format!("network {port}'s WireGuard listen port"))
            } else {
                match *owners.entry(port).or_insert(spec.port) {
                    owner if owner != spec.port => Some(format!("network {owner}")),
                    _ => None,
                }
            };
            let path = || key_path(&format!("{}.proxy", key_path("$", &spec.port.to_string())), &format!("{}://{port}", transport.name()));
            if let Some(what) = taken_by {
                problems.add(path(), format!("port {port} is already used by {what}; a port may be used once"));
            } else if !ctx.raw_ports.contains(port) {
                let range = ctx.raw_ports;
                problems.add(path(), format!("port {port} is outside the raw ports this gateway opens ({range}, --raw-port-range)"));
            }
        }
    }
}

/// A port of the gateway host a state opens: a raw port's nginx listener
/// or a network's WireGuard socket, with the JSON path that asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub path: String,
    pub transport: Transport,
    pub port: u16,
    /// The network's own WireGuard listen port (else a raw port).
    pub wireguard: bool,
}

/// The host ports a stored config opens (its networks' WireGuard ports and
/// raw ports, read from its keys: a stored config need not be valid today).
pub fn host_ports_of(config: &GatewayConfig) -> BTreeSet<(Transport, u16)> {
    let mut out = BTreeSet::new();
    for (key, net) in config {
        out.extend(parse_listen_port(key).ok().map(|p| (Transport::Udp, p)));
        out.extend(net.proxy.keys().filter_map(|k| match k.parse::<ProxyKey>() {
            Ok(ProxyKey::Raw(t, p)) => Some((t, p)),
            _ => None,
        }));
    }
    out
}

/// The host ports `desired` opens that the state before did not
/// (`before`, from [`host_ports_of`]): only these need a look at who holds
/// them. A port the gateway opened already is its own; probing it again
/// would fail every change once a port was taken behind its back.
pub fn new_host_ports(before: &BTreeSet<(Transport, u16)>, desired: &Desired) -> Vec<HostPort> {
    let mut out = Vec::new();
    for spec in desired.networks.values() {
        let net = key_path("$", &spec.port.to_string());
        if !before.contains(&(Transport::Udp, spec.port)) {
            out.push(HostPort { path: net.clone(), transport: Transport::Udp, port: spec.port, wireguard: true });
        }
        for (transport, port) in spec.raw_ports().filter(|p| !before.contains(p)) {
            let path = key_path(&format!("{net}.proxy"), &format!("{}://{port}", transport.name()));
            out.push(HostPort { path, transport, port, wireguard: false });
        }
    }
    out
}

/// The same private key twice would be the same WireGuard identity twice.
fn unique_private_keys(desired: &Desired, problems: &mut Problems) {
    let mut keys: BTreeMap<&SecretKey, u16> = BTreeMap::new();
    for spec in desired.networks.values() {
        if let Some(other) = keys.insert(&spec.private_key, spec.port) {
            let path = format!("{}.private_key", key_path("$", &spec.port.to_string()));
            problems.add(path, format!("network {other} has the same private key"));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
