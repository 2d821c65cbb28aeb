//! iptables rules in and out of a namespace (`iptables-restore --noflush`,
//! `iptables-save`), and the host's own rules with `--ha-address`.

use super::rules::Family;
use crate::system::exec::runner::Cmd;
use crate::system::{SysError, System};

impl System {
    /// `iptables-restore --noflush` (or `ip6tables-restore`) inside a namespace.
    pub async fn iptables_restore(&self, ns: &str, family: Family, text: String) -> Result<(), SysError> {
        let program = match family {
            Family::Ipv4 => &self.tools.iptables_restore,
            Family::Ipv6 => &self.tools.ip6tables_restore,
        };
        self.run(self.tools.in_netns(ns, program, ["--noflush"]).stdin(text)).await.map(drop)
    }

    /// `iptables-save` (or `ip6tables-save`) inside a namespace.
    pub async fn iptables_save(&self, ns: &str, family: Family) -> Result<String, SysError> {
        let program = match family {
            Family::Ipv4 => &self.tools.iptables_save,
            Family::Ipv6 => &self.tools.ip6tables_save,
        };
        self.run(self.tools.in_netns(ns, program, Vec::<String>::new()).read_only()).await
    }

    /// The host's own rules with `--ha-address` (see [`super::ha::ha_rules`]), in
    /// each family the kernel has: one `iptables-save` to see which jumps
    /// are there, one `iptables-restore --noflush` that empties and fills
    /// the chains. The shared address's family goes last, so its SNAT is
    /// not set while the other family failed.
    pub async fn set_ha_rules(&self, address: std::net::IpAddr, ports: &[u16], role: crate::ha::Role) -> Result<(), SysError> {
        let mut families = vec![Family::Ipv4];
        if self.ipv6 {
            families.push(Family::Ipv6);
        }
        if address.is_ipv4() {
            families.reverse();
        }
        let bridge = &self.layout.bridge;
        for family in families {
            let (save, restore) = match family {
                Family::Ipv4 => (&self.tools.iptables_save, &self.tools.iptables_restore),
                Family::Ipv6 => (&self.tools.ip6tables_save, &self.tools.ip6tables_restore),
            };
            let saved = self.run(Cmd::new(save, Vec::<String>::new()).read_only()).await?;
            let missing = super::ha::ha_missing_jumps(bridge, &saved);
            let text = super::ha::ha_rules(bridge, address, ports, role, family, &missing);
            self.run(Cmd::new(restore, ["--noflush"]).stdin(text)).await?;
        }
        Ok(())
    }
}
