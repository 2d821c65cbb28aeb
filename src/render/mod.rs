//! Typed renderers: checked values in, config text out. Inputs come from
//! `validate`, so nothing here needs escaping; golden tests pin the output.
//! The iptables renderers live with the rest of the iptables knowledge in
//! [`crate::system::firewall`] (pure, golden-tested); they are re-exported
//! here for the planner; so are tc's, from [`crate::system::tc`].

mod nginx;
mod wireguard;

pub use crate::system::firewall::ha::{HA_HOOKS, ha_chain, ha_missing_jumps, ha_rules};
pub use crate::system::firewall::rules::{FORWARD_POLICY, Family, JUMPS, Jump, RuleSet, iptables_restore, rules};
pub use crate::system::tc::shape as tc;
pub use nginx::{
    Listen, NetworkNginx, NginxFiles, NginxOptions, NginxParts, NginxSite, REFUSED_UPSTREAM, RawRoute, Route, SessionLimits, USAGE_TAG,
    WorkerLimits, capacity_warning, config_sets, nginx_http, nginx_stream, parse_addresses, raw_listens,
};
pub use wireguard::{WgConf, wg_conf, wg_kick};

#[cfg(test)]
pub(crate) mod tests;
