//! Typed renderers: checked values in, config text out. Inputs come from
//! `validate`, so nothing here needs escaping; golden tests pin the output.

mod ha;
mod iptables;
mod nginx;
mod wireguard;

pub use ha::{HA_HOOKS, ha_chain, ha_missing_jumps, ha_rules};
pub use iptables::{FORWARD_POLICY, Family, JUMPS, Jump, RuleSet, iptables_restore, rules};
pub use nginx::{
    Listen, NginxFiles, NginxOptions, NginxSite, RawRoute, Route, SessionLimits, WorkerLimits, capacity_warning, config_sets, nginx_http,
    nginx_stream, parse_addresses, raw_listens,
};
pub use wireguard::{wg_conf, wg_kick};

#[cfg(test)]
pub(crate) mod tests;
