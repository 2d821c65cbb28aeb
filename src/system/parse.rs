//! Parser of `iptables-save` output into the observed rules, tested on
//! output captured from a real system (`tests/fixtures`). Everything else
//! is read over netlink and parsed in `netlink` and `wgread`.

use crate::observed::ObservedRules;
use crate::render::JUMPS;

/// The gateway's chains and jumps from `iptables-save`; everything else
/// (other tools' rules) is left out.
pub fn parse_iptables_save(text: &str) -> ObservedRules {
    let mut r = ObservedRules::default();
    let mut table = "";
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = match t {
                "nat" => "nat",
                "filter" => "filter",
                _ => "",
            };
            continue;
        }
        if let Some((_, jump)) = JUMPS.iter().find(|(t, j)| *t == table && line == *j) {
            r.jumps.insert(jump);
        } else if line.starts_with("-A GATEWAY-") {
            match table {
                "nat" => r.nat.push(line.to_string()),
                "filter" => r.filter.push(line.to_string()),
                _ => {}
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = include_str!("../../tests/fixtures/iptables-save.txt");

    #[test]
    fn iptables_save_fixture() {
        let r = parse_iptables_save(SAVE);
        assert_eq!(r.jumps.len(), 3);
        assert_eq!(r.nat.len(), 2);
        assert_eq!(r.filter.len(), 4);
        assert!(r.nat.iter().all(|l| l.starts_with("-A GATEWAY-")));
        // A foreign rule in PREROUTING is not ours and not reported.
        assert!(!r.nat.iter().any(|l| l.contains("8.8.8.8")));
    }
}
