//! The host's own rules with `--ha-address` (root namespace, one chain per
//! table, named after the bridge so two instances never share one):
//!
//! - **source address** (the shared address's family): the WireGuard
//!   sockets listen on every address, and without sticky sockets
//!   (wireguard-go before 2023) a reply or a handshake leaves from the
//!   address the route picks: the host's own. A node would then roam to
//!   the host's own address and lose it at the next failover. So UDP from
//!   a WireGuard port is SNATed to the shared address (`nat` POSTROUTING),
//!   and UDP arriving at the shared address on those ports is not tracked
//!   (`raw` PREROUTING), nor is UDP leaving from the shared address itself
//!   (`raw` OUTPUT: wireguard-go answers from the address a packet came to
//!   once it has one): a tracked flow of the same four-tuple as a SNATed
//!   one would clash with it, and the kernel would give the second
//!   another source port, which the node would roam to.
//! - **standby silence** (both families): a standby drops UDP leaving from
//!   a WireGuard port (`filter` OUTPUT), whatever WireGuard would send (it
//!   has no endpoint to send to anyway: see `ha::view`). Becoming active
//!   empties that chain: one command for the whole host.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::rules::Family;
use crate::ha::Role;

/// The chains' name for the bridge `bridge`.
pub fn ha_chain(bridge: &str) -> String {
    format!("HA-{bridge}")
}

/// Where each chain is jumped to from: (table, built-in chain).
pub const HA_HOOKS: [(&str, &str); 4] = [("raw", "PREROUTING"), ("raw", "OUTPUT"), ("nat", "POSTROUTING"), ("filter", "OUTPUT")];

const TABLES: [&str; 3] = ["raw", "nat", "filter"];

/// The rules of one family, as `iptables-restore --noflush` input: each
/// chain declared (so emptied) and filled; the jumps into them are added
/// where `missing_jumps` says (hooks of `HA_HOOKS` not yet jumping).
pub fn ha_rules(bridge: &str, address: IpAddr, ports: &[u16], role: Role, family: Family, missing_jumps: &[(&str, &str)]) -> String {
    let chain = ha_chain(bridge);
    let own_family = matches!((family, address), (Family::Ipv4, IpAddr::V4(_)) | (Family::Ipv6, IpAddr::V6(_)));
    let host = if address.is_ipv4() { 32 } else { 128 };
    let mut s = String::new();
    for table in TABLES {
        if !own_family && table != "filter" {
            continue;
        }
        let _ = writeln!(s, "*{table}\n:{chain} - [0:0]");
        for (_, hook) in missing_jumps.iter().filter(|(t, _)| *t == table) {
            let _ = writeln!(s, "-A {hook} -j {chain}");
        }
        for port in ports {
            let rules = match table {
                "raw" => vec![
                    format!("-d {address}/{host} -p udp -m udp --dport {port} -j CT --notrack"),
                    format!("-s {address}/{host} -p udp -m udp --sport {port} -j CT --notrack"),
                ],
                "nat" => vec![format!("-p udp -m udp --sport {port} -j SNAT --to-source {address}")],
                _ if role == Role::Standby => vec![format!("-p udp -m udp --sport {port} -j DROP")],
                _ => continue,
            };
            for rule in rules {
                let _ = writeln!(s, "-A {chain} {rule}");
            }
        }
        s.push_str("COMMIT\n");
    }
    s
}

/// The hooks of `HA_HOOKS` that do not jump to our chain yet, from
/// `iptables-save`'s output.
pub fn ha_missing_jumps(bridge: &str, saved: &str) -> Vec<(&'static str, &'static str)> {
    let chain = ha_chain(bridge);
    let mut table = String::new();
    let mut present = Vec::new();
    for line in saved.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.to_string();
            continue;
        }
        present.extend(HA_HOOKS.iter().filter(|(t, hook)| *t == table && line == format!("-A {hook} -j {chain}")));
    }
    HA_HOOKS.into_iter().filter(|h| !present.contains(&h)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_active_host_rewrites_the_source_and_a_standby_also_drops() {
        let vip: IpAddr = "10.220.0.100".parse().unwrap();
        let active = ha_rules("gwbr0", vip, &[51820, 51821], Role::Active, Family::Ipv4, &HA_HOOKS);
        assert_eq!(
            active,
            "*raw\n:HA-gwbr0 - [0:0]\n-A PREROUTING -j HA-gwbr0\n-A OUTPUT -j HA-gwbr0\n\
             -A HA-gwbr0 -d 10.220.0.100/32 -p udp -m udp --dport 51820 -j CT --notrack\n\
             -A HA-gwbr0 -s 10.220.0.100/32 -p udp -m udp --sport 51820 -j CT --notrack\n\
             -A HA-gwbr0 -d 10.220.0.100/32 -p udp -m udp --dport 51821 -j CT --notrack\n\
             -A HA-gwbr0 -s 10.220.0.100/32 -p udp -m udp --sport 51821 -j CT --notrack\nCOMMIT\n\
             *nat\n:HA-gwbr0 - [0:0]\n-A POSTROUTING -j HA-gwbr0\n\
             -A HA-gwbr0 -p udp -m udp --sport 51820 -j SNAT --to-source 10.220.0.100\n\
             -A HA-gwbr0 -p udp -m udp --sport 51821 -j SNAT --to-source 10.220.0.100\nCOMMIT\n\
             *filter\n:HA-gwbr0 - [0:0]\n-A OUTPUT -j HA-gwbr0\nCOMMIT\n"
        );
        let standby = ha_rules("gwbr0", vip, &[51820], Role::Standby, Family::Ipv4, &[]);
        assert!(standby.ends_with("*filter\n:HA-gwbr0 - [0:0]\n-A HA-gwbr0 -p udp -m udp --sport 51820 -j DROP\nCOMMIT\n"), "{standby}");
        assert!(!standby.contains("-A OUTPUT"), "jumps only where missing");
        // The other family: only the standby's silence.
        let v6 = ha_rules("gwbr0", vip, &[51820], Role::Standby, Family::Ipv6, &[("filter", "OUTPUT")]);
        assert_eq!(v6, "*filter\n:HA-gwbr0 - [0:0]\n-A OUTPUT -j HA-gwbr0\n-A HA-gwbr0 -p udp -m udp --sport 51820 -j DROP\nCOMMIT\n");
        let vip6: IpAddr = "2001:db8::10".parse().unwrap();
        let own6 = ha_rules("gwbr0", vip6, &[51820], Role::Active, Family::Ipv6, &[]);
        assert!(own6.contains("-d 2001:db8::10/128 -p udp") && own6.contains("--to-source 2001:db8::10\n"), "{own6}");
    }

    #[test]
    fn jumps_present_are_found_per_table() {
        let saved = "# Generated\n*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j HA-gwbr0\nCOMMIT\n\
                     *nat\n-A PREROUTING -j HA-gwbr0\n-A POSTROUTING -j HA-other\nCOMMIT\n*filter\n-A OUTPUT -j HA-gwbr0\nCOMMIT\n";
        assert_eq!(ha_missing_jumps("gwbr0", saved), [("raw", "OUTPUT"), ("nat", "POSTROUTING")]);
        assert_eq!(ha_missing_jumps("gwbr0", ""), HA_HOOKS);
    }
}
