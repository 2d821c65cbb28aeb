//! `ip -batch`: many iproute2 commands in one process. The lines are the
//! same words as the single commands (`link set wg1 up`), built here once;
//! what went wrong is read back per line from iproute2's stderr, so each
//! failure is its own network's.

use std::collections::BTreeMap;

use super::Change;
use crate::layout::OWNED_ALIAS;
use crate::types::Cidr;

/// `netns add NS` (root namespace).
pub fn netns_add(ns: &str) -> String {
    format!("netns add {ns}")
}

/// `link set DEV [mtu MTU] up`.
pub fn link_up(dev: &str, mtu: Option<u32>) -> String {
    match mtu {
        Some(mtu) => format!("link set {dev} mtu {mtu} up"),
        None => format!("link set {dev} up"),
    }
}

/// `addr add|del CIDR dev DEV`.
pub fn address(change: Change, cidr: Cidr, dev: &str) -> String {
    format!("addr {} {cidr} dev {dev}", change.verb())
}

/// A route through `dev`, replaced if one exists, or its removal.
pub fn route(change: Change, cidr: Cidr, dev: &str) -> String {
    let verb = if change == Change::Add { "replace" } else { "del" };
    format!("route {verb} {cidr} dev {dev}")
}

/// Tags a root-namespace link as the gateway's (see `intent`).
pub fn tag(link: &str) -> String {
    format!("link set dev {link} alias {OWNED_ALIAS}")
}

/// A WireGuard interface of the kernel module, in the root namespace.
pub fn wireguard_add(link: &str) -> String {
    format!("link add {link} type wireguard")
}

/// A veth pair: `host` in the root namespace, `inside` in `ns` with MAC `mac`.
pub fn veth_add(host: &str, inside: &str, mac: &str, ns: &str) -> String {
    format!("link add {host} type veth peer name {inside} address {mac} netns {ns}")
}

/// Makes `link` an isolated port of `bridge` (isolated ports cannot reach
/// each other, so networks stay apart): two lines, in this order.
pub fn attach_isolated(link: &str, bridge: &str) -> [String; 2] {
    [format!("link set {link} master {bridge} up"), format!("link set dev {link} type bridge_slave isolated on")]
}

/// Moves a root-namespace link into a namespace.
pub fn move_link(link: &str, ns: &str) -> String {
    format!("link set {link} netns {ns}")
}

pub fn link_del(link: &str) -> String {
    format!("link del {link}")
}

/// What a root-namespace line sends to each listener of link events, in
/// bytes of its receive buffer, rounded up (measured with a stopped
/// listener, kernel 6.18: a veth made 2.3-4.6 KiB, attaching it and
/// setting it up 14 KiB, isolating it 4 KiB and more, a move 4 KiB; a new
/// namespace none, nor an alias on a link that is down). See
/// `kernel::link_listeners`.
pub fn link_event_bytes(line: &str) -> u64 {
    const KIB: u64 = 1024;
    if line.starts_with("netns add ") {
        0
    } else if line.contains(" master ") || line.contains(" bridge_slave ") {
        20 * KIB
    } else if line.contains(" alias ") {
        2 * KIB
    } else {
        8 * KIB
    }
}

/// What iproute2 said about each failed line of a batch (1-based line
/// number to its message): it prints the message, then `Command failed
/// -:N`. Text after the last such marker belongs to no line (iproute2 stops
/// at once on some errors): it is returned with line 0.
pub fn line_failures(stderr: &str) -> BTreeMap<usize, String> {
    let mut failures = BTreeMap::new();
    let mut said: Vec<&str> = Vec::new();
    for l in stderr.lines() {
        let marker =
            l.strip_prefix("Command failed ").and_then(|rest| rest.rsplit_once(':')).and_then(|(_, n)| n.trim().parse::<usize>().ok());
        match marker {
            Some(n) => {
                failures.insert(n, std::mem::take(&mut said).join("; "));
            }
            None if !l.trim().is_empty() => said.push(l.trim()),
            None => {}
        }
    }
    if !said.is_empty() {
        failures.insert(0, said.join("; "));
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden: the lines are iproute2's own words (checked by hand with
    /// `ip -batch` on iproute2 6.1).
    #[test]
    fn lines() {
        let cidr: Cidr = "10.80.0.1/16".parse().unwrap();
        let net: Cidr = "192.168.7.0/24".parse().unwrap();
        let got = [
            netns_add("network-51820"),
            link_up("lo", None),
            link_up("wg51820", Some(1380)),
            address(Change::Add, cidr, "wg51820"),
            address(Change::Del, cidr, "gw-uplink"),
            route(Change::Add, net, "wg51820"),
            route(Change::Del, net, "wg51820"),
            tag("gwv51820"),
            wireguard_add("wg51820"),
            veth_add("gwv51820", "gw-uplink", "02:00:0a:fd:ca:6c", "network-51820"),
            attach_isolated("gwv51820", "gwbr0").join("\n"),
            move_link("wg51820", "network-51820"),
            link_del("gwv51820"),
        ];
        let want = "\
netns add network-51820
link set lo up
link set wg51820 mtu 1380 up
addr add 10.80.0.1/16 dev wg51820
addr del 10.80.0.1/16 dev gw-uplink
route replace 192.168.7.0/24 dev wg51820
route del 192.168.7.0/24 dev wg51820
link set dev gwv51820 alias gateway
link add wg51820 type wireguard
link add gwv51820 type veth peer name gw-uplink address 02:00:0a:fd:ca:6c netns network-51820
link set gwv51820 master gwbr0 up
link set dev gwv51820 type bridge_slave isolated on
link set wg51820 netns network-51820
link del gwv51820";
        assert_eq!(got.join("\n"), want);
    }

    #[test]
    fn attaching_costs_the_most_events() {
        let lines = [netns_add("n"), tag("v"), veth_add("v", "u", "02:00:00:00:00:01", "n"), move_link("w", "n")];
        let costs: Vec<u64> = lines.iter().map(|l| link_event_bytes(l)).collect();
        assert_eq!(costs, [0, 2048, 8192, 8192]);
        assert!(attach_isolated("v", "br").iter().all(|l| link_event_bytes(l) >= 14 * 1024));
    }

    /// As iproute2 6.1 printed it for `ip -force -batch -` (seen by hand).
    #[test]
    fn failures_are_read_per_line() {
        let stderr = "Cannot find device \"nonexist1\"\nCommand failed -:1\nRTNETLINK answers: File exists\nCommand failed -:3\n";
        let f = line_failures(stderr);
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(f[&1], "Cannot find device \"nonexist1\"");
        assert_eq!(f[&3], "RTNETLINK answers: File exists");
        let early = line_failures("Error: any valid prefix is expected rather than \"10.0.0.1/99\".");
        assert_eq!(early.keys().copied().collect::<Vec<_>>(), [0], "a message no line claims: {early:?}");
        assert!(line_failures("").is_empty());
    }
}
