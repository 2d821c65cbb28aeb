use std::fmt::Write;

use crate::layout::{CHAIN_DNAT, CHAIN_FORWARD, CHAIN_SNAT, Layout, VETH_NS_NAME};
use crate::spec::NetworkSpec;

/// The gateway's own iptables rules inside one namespace, in the exact form
/// `iptables-save` prints them, so observed and desired compare as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    pub nat: Vec<String>,
    pub filter: Vec<String>,
}

/// Jumps from the built-in chains into ours; added once, never duplicated.
pub const JUMPS: [(&str, &str); 3] =
    [("nat", "-A PREROUTING -j GATEWAY-DNAT"), ("nat", "-A POSTROUTING -j GATEWAY-SNAT"), ("filter", "-A FORWARD -j GATEWAY-FORWARD")];

pub fn rules(layout: &Layout, spec: &NetworkSpec) -> RuleSet {
    let wg = layout.wg(spec.port);
    let veth_ip = layout.veth_ns_ip(spec.port);
    let mut nat = Vec::new();
    for (proto, upstreams) in [("tcp", spec.upstreams()), ("udp", spec.udp_upstreams())] {
        for (up, port) in layout.dnat_ports(&upstreams) {
            nat.push(format!(
                "-A {CHAIN_DNAT} -d {veth_ip}/32 -i {VETH_NS_NAME} -p {proto} -m {proto} --dport {port} -j DNAT --to-destination {up}"
            ));
        }
    }
    nat.push(format!("-A {CHAIN_SNAT} -o {wg} -j MASQUERADE"));
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

/// Input for `iptables-restore --noflush`: flushes and refills only the
/// gateway's chains, adds the jumps that are missing, touches nothing else.
pub fn iptables_restore(rules: &RuleSet, missing_jumps: &[&str]) -> String {
    let mut s = String::new();
    for (table, chains, lines) in [("nat", &[CHAIN_DNAT, CHAIN_SNAT][..], &rules.nat), ("filter", &[CHAIN_FORWARD][..], &rules.filter)] {
        let _ = writeln!(s, "*{table}");
        for c in chains {
            let _ = writeln!(s, ":{c} - [0:0]");
        }
        for c in chains {
            let _ = writeln!(s, "-F {c}");
        }
        for (t, jump) in JUMPS {
            if t == table && missing_jumps.contains(&jump) {
                let _ = writeln!(s, "{jump}");
            }
        }
        for l in lines {
            let _ = writeln!(s, "{l}");
        }
        let _ = writeln!(s, "COMMIT");
    }
    s
}
