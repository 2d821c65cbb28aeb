//! `gateway`: converges WireGuard network namespaces, nginx ingress by SNI
//! and Host, and per-peer traffic accounting to a posted desired state.
//!
//! The layers, each using only those above it (`tests/layers.rs` reads this
//! table and fails on an import from a layer below; a module is in the layer
//! of the longest path here it starts with):
//!
//! | layer | modules | what |
//! |---|---|---|
//! | domain | [`types`], [`model`], [`clock`] | checked values (keys, CIDRs, hostnames); the API's JSON shapes |
//! | desired | [`spec`], [`validate`], [`ha`] | the checked desired state, built from the JSON with every problem reported; what a standby applies of it |
//! | derived | [`layout`], [`render`], [`target`], [`system::firewall::rules`], [`system::firewall::ha`], [`system::tc::shape`] | names and addresses from a listen port; WireGuard, iptables (with its chains), tc and nginx text; each network's target and nginx part, computed once per change, the target with its digest |
//! | observed | [`observed`], [`endpoints`] | what the system looks like, in the same types; each peer's last endpoint |
//! | decide | [`plan`] | pure: targets + observed → actions carrying what they apply |
//! | effect | [`system`] | the only layer that runs commands or touches system files, one room per resource: observe, execute |
//! | persist | [`store`], [`traffic`], [`metrics`] | SQLite, traffic deltas, Prometheus |
//! | run | [`events`], [`health`], [`usage`], [`daemon`], [`reconcile`], [`checks`], [`status`], [`service`] | the event stream; the upstreams' health; each route's usage (nginx's lines on the usage socket); the wiring (builds the pieces); the reconcile loop; the health check loop; status.json; the `Gateway` service: the apply protocol's owner and of the state the loops share, what the API offers |
//! | serve | [`api`], [`cli`] | the HTTP API; the options |

pub mod api;
pub mod checks;
pub mod cli;
pub mod clock;
pub mod daemon;
pub mod endpoints;
pub mod events;
pub mod ha;
pub mod health;
pub mod layout;
pub mod metrics;
pub mod model;
pub mod observed;
pub mod plan;
pub mod reconcile;
pub mod render;
pub mod service;
pub mod spec;
pub mod status;
pub mod store;
pub mod system;
pub mod target;
pub mod traffic;
pub mod types;
pub mod usage;
pub mod validate;

#[cfg(test)]
pub(crate) mod testing;
