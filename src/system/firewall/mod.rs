//! All the gateway's iptables knowledge: the rule sets rendered from a
//! network's spec ([`rules`]) and the host's HA rules ([`ha`]), both pure
//! and golden-tested; written with `iptables-restore` and read back with
//! `iptables-save` ([`restore`]); parsed back into the observed rules
//! ([`save_parse`]).

pub mod ha;
mod restore;
pub mod rules;
pub mod save_parse;
