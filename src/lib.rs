//! `gateway`: converges WireGuard network namespaces, nginx ingress by SNI
//! and Host, and per-peer traffic accounting to a posted desired state.

pub mod api;
pub mod cli;
pub mod execute;
pub mod layout;
pub mod metrics;
pub mod model;
pub mod observe;
pub mod plan;
pub mod reconcile;
pub mod render;
pub mod runner;
pub mod status;
pub mod store;
pub mod traffic;
pub mod validate;
