//! `gateway`: converges WireGuard network namespaces, nginx ingress by SNI
//! and Host, and per-peer traffic accounting to a posted desired state.
//!
//! The layers, each using only those above it:
//!
//! | layer | modules | what |
//! |---|---|---|
//! | domain | [`types`], [`model`], [`clock`] | checked values (keys, CIDRs, hostnames); the API's JSON shapes |
//! | desired | [`spec`], [`validate`], [`ha`] | the checked desired state, built from the JSON with every problem reported; what a standby applies of it |
//! | derived | [`layout`], [`render`] | names and addresses from a listen port; WireGuard, iptables and nginx text |
//! | observed | [`observed`] | what the system looks like, in the same types |
//! | decide | [`plan`] | pure: desired + observed → actions |
//! | effect | [`system`] | the only layer that runs commands or touches system files: observe, execute |
//! | persist | [`store`], [`traffic`], [`metrics`] | SQLite, traffic deltas, Prometheus |
//! | run | [`events`], [`endpoints`], [`health`], [`daemon`], [`reconcile`], [`checks`], [`status`] | the event stream; each peer's last endpoint; the upstreams' health; shared state and wiring; the reconcile loop; the health check loop; status.json |
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
pub mod spec;
pub mod status;
pub mod store;
pub mod system;
pub mod traffic;
pub mod types;
pub mod validate;

#[cfg(test)]
pub(crate) mod testing;
