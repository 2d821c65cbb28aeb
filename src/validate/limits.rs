//! A route's access control and limits (`allow`, `deny`,
//! `max_connections`, `max_connections_per_client`, `bandwidth`) and a
//! network's `bandwidth`, checked item by item from the loose JSON the
//! model keeps of them.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{Context, Problems, key_path, over_cap};
use crate::model::ProxyOptions;
use crate::spec::{Bandwidth, RouteLimits};
use crate::types::Cidr;

/// The largest connection limit and bandwidth (Mbit/s) a route may ask for.
pub const MAX_CONNECTIONS: u32 = 1_000_000;
pub const MAX_MBIT: u32 = 1_000_000;

/// The access and limit fields of a proxy value, as they came (absent or
/// `null`: None).
#[derive(Debug, Default, Clone, Copy)]
pub struct LimitFields<'a> {
    pub allow: Option<&'a Value>,
    pub deny: Option<&'a Value>,
    pub max_connections: Option<&'a Value>,
    pub max_connections_per_client: Option<&'a Value>,
    pub bandwidth: Option<&'a Value>,
}

impl<'a> LimitFields<'a> {
    pub fn of(o: &'a ProxyOptions) -> Self {
        LimitFields {
            allow: o.allow.as_ref(),
            deny: o.deny.as_ref(),
            max_connections: o.max_connections.as_ref(),
            max_connections_per_client: o.max_connections_per_client.as_ref(),
            bandwidth: o.bandwidth.as_ref(),
        }
    }

    /// The fields of a proxy value's object form as given (`null`: absent).
    pub fn from_map(fields: &'a serde_json::Map<String, Value>) -> Self {
        let get = |name: &str| fields.get(name).filter(|v| !v.is_null());
        LimitFields {
            allow: get("allow"),
            deny: get("deny"),
            max_connections: get("max_connections"),
            max_connections_per_client: get("max_connections_per_client"),
            bandwidth: get("bandwidth"),
        }
    }
}

/// Checks a route's fields (`path` is the route's); what is wrong is added
/// to `problems` with the path of the value.
pub fn route_limits(path: &str, given: &LimitFields<'_>, ctx: &Context<'_>, problems: &mut Problems) -> RouteLimits {
    let allow = given.allow.map(|v| cidrs(&format!("{path}.allow"), v, ctx, problems));
    if allow.as_ref().is_some_and(|a| a.as_ref().is_some_and(Vec::is_empty)) {
        problems.add(
            format!("{path}.allow"),
            "an empty allow list would refuse every client; leave allow out to let everyone in, or list the networks to let in",
        );
    }
    let deny = given.deny.map(|v| cidrs(&format!("{path}.deny"), v, ctx, problems));
    let count = |name: &str, v: Option<&Value>, problems: &mut Problems| {
        v.and_then(|v| {
            let n = whole(v).filter(|n| (1..=u64::from(MAX_CONNECTIONS)).contains(n));
            if n.is_none() {
                problems.add(
                    format!("{path}.{name}"),
                    format!("{name} must be a whole number 1..={MAX_CONNECTIONS} (concurrent connections; UDP: sessions)"),
                );
            }
            n.map(|n| n as u32)
        })
    };
    RouteLimits {
        allow: allow.flatten(),
        deny: deny.flatten().unwrap_or_default(),
        max_connections: count("max_connections", given.max_connections, problems),
        max_connections_per_client: count("max_connections_per_client", given.max_connections_per_client, problems),
        bandwidth: given.bandwidth.and_then(|v| bandwidth(&format!("{path}.bandwidth"), v, problems)),
    }
}

/// A number JSON calls an integer (also `2.0`, `2e3`), if non-negative.
fn whole(v: &Value) -> Option<u64> {
    let n = v.as_number()?;
    match (n.as_u64(), n.as_f64()) {
        (Some(u), _) => Some(u),
        (None, Some(f)) if f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&f) => Some(f as u64),
        _ => None,
    }
}

/// A list of networks of clients, sorted and without duplicates (None if
/// anything in it is wrong).
fn cidrs(path: &str, v: &Value, ctx: &Context<'_>, problems: &mut Problems) -> Option<Vec<Cidr>> {
    let Some(items) = v.as_array() else {
        problems.add(path, "must be a list of CIDRs, e.g. [\"203.0.113.0/24\", \"2001:db8::/32\"]");
        return None;
    };
    let cap = ctx.limits.allowed_ips.min(crate::model::MAX_UPSTREAMS_CEILING);
    if over_cap(problems, path, items.len(), "CIDRs", cap, "max-allowed-ips") {
        return None;
    }
    let before = problems.total();
    let mut out = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        if problems.enough() {
            break;
        }
        let ipath = format!("{path}[{i}]");
        match item.as_str().ok_or_else(|| "must be a CIDR string, e.g. 203.0.113.0/24".to_string()).and_then(access_cidr) {
            Ok(c) => {
                out.insert(c);
            }
            Err(e) => problems.add(ipath, e),
        }
    }
    (problems.total() == before).then(|| out.into_iter().collect())
}

/// One network of clients: canonical, host bits zero, IPv4 in IPv4 form.
pub(crate) fn access_cidr(s: &str) -> Result<Cidr, String> {
    let c: Cidr = s.parse().map_err(|e| format!("'{}': {e}", crate::types::truncate(s)))?;
    if let std::net::IpAddr::V6(a) = c.addr {
        if a.to_ipv4_mapped().is_some() || super::network::is_ipv4_compatible(&c) {
            return Err(format!(
                "{c}: write IPv4 networks in their IPv4 form (e.g. 203.0.113.0/24); nginx matches IPv4 clients by their IPv4 address"
            ));
        }
    }
    if c.network() != c {
        return Err(format!("{c} has host bits set; the network is {}", c.network()));
    }
    Ok(c)
}

/// A bandwidth object: `ingress_mbit`, `egress_mbit`, each optional; None
/// when wrong or when neither is given.
pub fn bandwidth(path: &str, v: &Value, problems: &mut Problems) -> Option<Bandwidth> {
    let Some(fields) = v.as_object() else {
        problems.add(path, "bandwidth must be an object {\"ingress_mbit\": N, \"egress_mbit\": N} (Mbit/s, each optional)");
        return None;
    };
    let before = problems.total();
    let mut out = Bandwidth { ingress_mbit: None, egress_mbit: None };
    for (name, value) in fields {
        let slot = match name.as_str() {
            "ingress_mbit" => &mut out.ingress_mbit,
            "egress_mbit" => &mut out.egress_mbit,
            _ => {
                problems.add(key_path(path, name), "unknown field; bandwidth has only ingress_mbit and egress_mbit");
                continue;
            }
        };
        if value.is_null() {
            continue;
        }
        match whole(value).filter(|n| (1..=u64::from(MAX_MBIT)).contains(n)) {
            Some(n) => *slot = Some(n as u32),
            None => problems.add(format!("{path}.{name}"), format!("{name} must be a whole number of Mbit/s, 1..={MAX_MBIT}")),
        }
    }
    let set = out.ingress_mbit.is_some() || out.egress_mbit.is_some();
    (problems.total() == before && set).then_some(out)
}
