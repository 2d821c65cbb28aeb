//! Turns the loose JSON of the API into the checked [`Desired`] state. Values
//! are parsed by their types (`crate::types`); this module only walks the
//! config, collects every problem with its JSON path, and checks the rules
//! that span values: one owner per hostname, per allowed IP, per private key.

mod network;

#[cfg(test)]
pub(crate) use network::{check_endpoint, check_interface_address, is_ipv4_compatible};

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{ErrorDetail, GatewayConfig};
use crate::spec::{CustomForwarding, Desired};
use crate::types::{Cidr, Hostname, PortRange, ProxyKey, SecretKey, Transport, parse_listen_port, truncate};

/// At most this many distinct upstreams per network (each takes a DNAT port).
pub const MAX_UPSTREAMS: usize = 1000;
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
}

/// Every problem found, each with its JSON path.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<ErrorDetail>);

impl Problems {
    pub(crate) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ErrorDetail::new(path, message));
    }

    fn count(&self) -> usize {
        self.0.len()
    }
}

/// `base["key"]`, with the key escaped as a JSON string, so a hostile key
/// cannot break the path's syntax.
pub fn key_path(base: &str, key: &str) -> String {
    format!("{base}[{}]", serde_json::Value::String(truncate(key)))
}

/// Checks the whole config; on failure returns every problem with its JSON path.
pub fn validate(config: &GatewayConfig, ctx: &Context<'_>) -> Result<Desired, Vec<ErrorDetail>> {
    let mut problems = Problems::default();
    let mut networks = BTreeMap::new();
    for (key, net) in config {
        let path = key_path("$", key);
        let port = parse_listen_port(key).map_err(|e| problems.add(path.clone(), e)).ok();
        if let Some(spec) = network::validate_network(&path, port, net, ctx, &mut problems) {
            networks.insert(spec.port, spec);
        }
    }
    let desired = Desired { networks };
    one_network_per_hostname(&desired, ctx, &mut problems);
    let wireguard_ports: BTreeSet<u16> = config.keys().filter_map(|k| parse_listen_port(k).ok()).collect();
    one_owner_per_port(&desired, &wireguard_ports, ctx, &mut problems);
    unique_private_keys(&desired, &mut problems);
    if problems.0.is_empty() { Ok(desired) } else { Err(problems.0) }
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
