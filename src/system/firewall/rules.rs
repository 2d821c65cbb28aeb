use std::fmt::{self, Write};

use crate::layout::{Layout, NetworkDnat, VETH_NS_NAME};
use crate::spec::NetworkSpec;
use crate::types::Transport;

/// The gateway's own chains inside a network's namespace: ingress DNAT to
/// the upstreams, SNAT of the bridge's traffic into the tunnel, and what
/// may be forwarded (the rest is dropped). Their names appear nowhere else
/// ([`JUMPS`] spells them in the form `iptables-save` prints).
pub const CHAIN_DNAT: &str = "GATEWAY-DNAT";
pub const CHAIN_SNAT: &str = "GATEWAY-SNAT";
pub const CHAIN_FORWARD: &str = "GATEWAY-FORWARD";

/// The gateway's own iptables rules inside one namespace, in the exact form
/// `iptables-save` prints them, so observed and desired compare as text.
/// `filter` is the filter of both families (`ip6tables` gets the same
/// lines); `nat` is IPv4's alone (ingress is IPv4, nothing is NATed in IPv6).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    pub nat: Vec<String>,
    pub filter: Vec<String>,
}

/// The address family of a rule set: `iptables` or `ip6tables`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

/// A jump from a built-in chain into ours, in one family's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Jump {
    pub family: Family,
    pub table: &'static str,
    pub rule: &'static str,
}

impl fmt::Display for Jump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.family {
            Family::Ipv4 => f.write_str(self.rule),
            Family::Ipv6 => write!(f, "{} (IPv6)", self.rule),
        }
    }
}

const fn jump(family: Family, table: &'static str, rule: &'static str) -> Jump {
    Jump { family, table, rule }
}

/// Jumps from the built-in chains into ours; added once, never duplicated.
pub const JUMPS: [Jump; 4] = [
    jump(Family::Ipv4, "nat", "-A PREROUTING -j GATEWAY-DNAT"),
    jump(Family::Ipv4, "nat", "-A POSTROUTING -j GATEWAY-SNAT"),
    jump(Family::Ipv4, "filter", "-A FORWARD -j GATEWAY-FORWARD"),
    jump(Family::Ipv6, "filter", "-A FORWARD -j GATEWAY-FORWARD"),
];

/// FORWARD's policy in both families, as `iptables-save` prints it: what
/// our chain does not accept is dropped even while our chain is missing or
/// empty (a namespace just made, rules flushed by hand).
pub const FORWARD_POLICY: &str = ":FORWARD DROP";

pub fn rules(layout: &Layout, spec: &NetworkSpec, dnat: &NetworkDnat) -> RuleSet {
    let wg = layout.wg(spec.port);
    let veth_ip = layout.veth_ns_ip(spec.port);
    let mut nat = Vec::new();
    for (proto, transport) in [("tcp", Transport::Tcp), ("udp", Transport::Udp)] {
        for (up, port) in dnat.of(transport).all() {
            nat.push(format!(
                "-A {CHAIN_DNAT} -d {veth_ip}/32 -i {VETH_NS_NAME} -p {proto} -m {proto} --dport {port} -j DNAT --to-destination {up}"
            ));
        }
    }
    // Only ingress (from nginx, on the bridge) is masqueraded, so a node's
    // answer goes back through the tunnel. Traffic between two nodes keeps
    // its source: node B must see node A, never the gateway's address, which
    // nodes trust for PROXY protocol and X-Real-IP.
    nat.push(format!("-A {CHAIN_SNAT} -s {} -o {wg} -j MASQUERADE", layout.bridge_subnet()));
    // Nodes reach each other and the DNATed ingress; nothing else crosses the
    // namespace (in particular not the bridge, the host or other networks).
    let filter = vec![
        format!("-A {CHAIN_FORWARD} -i {wg} -o {wg} -j ACCEPT"),
        format!("-A {CHAIN_FORWARD} -i {VETH_NS_NAME} -o {wg} -j ACCEPT"),
        format!("-A {CHAIN_FORWARD} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
        format!("-A {CHAIN_FORWARD} -j DROP"),
    ];
    RuleSet { nat, filter }
}

/// Input for `iptables-restore --noflush` (IPv4) or `ip6tables-restore
/// --noflush` (IPv6, the filter alone): sets FORWARD's policy to DROP,
/// flushes and refills only the gateway's chains, adds the jumps of
/// `family` that are missing, touches nothing else.
pub fn iptables_restore(rules: &RuleSet, family: Family, missing_jumps: &[Jump]) -> String {
    let filter: (&str, &[&str], &[String], Option<&str>) = ("filter", &[CHAIN_FORWARD], &rules.filter, Some(FORWARD_POLICY));
    let tables = match family {
        Family::Ipv4 => vec![("nat", &[CHAIN_DNAT, CHAIN_SNAT][..], &rules.nat[..], None), filter],
        Family::Ipv6 => vec![filter],
    };
    let mut s = String::new();
    for (table, chains, lines, policy) in tables {
        let _ = writeln!(s, "*{table}");
        if let Some(policy) = policy {
            let _ = writeln!(s, "{policy} [0:0]");
        }
        for c in chains {
            let _ = writeln!(s, ":{c} - [0:0]");
        }
        for c in chains {
            let _ = writeln!(s, "-F {c}");
        }
        for j in JUMPS.iter().filter(|j| j.family == family && j.table == table && missing_jumps.contains(j)) {
            let _ = writeln!(s, "{}", j.rule);
        }
        for l in lines {
            let _ = writeln!(s, "{l}");
        }
        let _ = writeln!(s, "COMMIT");
    }
    s
}
