//! Parser of `iptables-save` output into the observed rules, tested on
//! output captured from a real system (`tests/fixtures`). Everything else
//! is read over netlink and parsed in `netlink` and `wireguard::observe`.

use super::rules::{FORWARD_POLICY, Family, JUMPS};
use crate::observed::ObservedRules;

/// The gateway's chains, jumps and FORWARD policies from `iptables-save`
/// (`v4`) and `ip6tables-save` (`v6`; None where IPv6 rules are not read,
/// on a kernel without IPv6); everything else (other tools' rules) is left out.
pub fn parse_rules(v4: &str, v6: Option<&str>) -> ObservedRules {
    let mut r = ObservedRules::default();
    parse_family(v4, Family::Ipv4, &mut r);
    if let Some(v6) = v6 {
        parse_family(v6, Family::Ipv6, &mut r);
    }
    r
}

fn parse_family(text: &str, family: Family, r: &mut ObservedRules) {
    let mut table = "";
    let filter = match family {
        Family::Ipv4 => &mut r.filter,
        Family::Ipv6 => r.filter6.insert(Vec::new()),
    };
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = match t {
                "nat" => "nat",
                "filter" => "filter",
                _ => "",
            };
            continue;
        }
        if let Some(j) = JUMPS.iter().find(|j| j.family == family && j.table == table && line == j.rule) {
            r.jumps.insert(*j);
        } else if table == "filter" && line.split(" [").next() == Some(FORWARD_POLICY) {
            r.forward_drop.insert(family);
        } else if line.starts_with("-A GATEWAY-") {
            match (table, family) {
                ("nat", Family::Ipv4) => r.nat.push(line.to_string()),
                ("filter", _) => filter.push(line.to_string()),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = include_str!("../../../tests/fixtures/iptables-save.txt");

    #[test]
    fn iptables_save_fixture() {
        let r = parse_rules(SAVE, None);
        assert_eq!(r.jumps.len(), 3);
        assert_eq!(r.nat.len(), 2);
        assert_eq!(r.filter.len(), 4);
        assert_eq!(r.filter6, None, "IPv6 not read");
        assert!(r.forward_drop.is_empty(), "FORWARD ACCEPT there");
        assert!(r.nat.iter().all(|l| l.starts_with("-A GATEWAY-")));
        // A foreign rule in PREROUTING is not ours and not reported.
        assert!(!r.nat.iter().any(|l| l.contains("8.8.8.8")));
    }
}
