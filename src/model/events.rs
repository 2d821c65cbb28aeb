//! The data of each event of `GET /api/v1/events` (JSON in the SSE `data:`
//! field; the SSE `event:` field names it).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `apply`: a pass for a new generation (or its retry) finished.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct ApplyEvent {
    pub generation: i64,
    /// `applied` or `failed`.
    pub result: String,
    /// Networks that changed on the system.
    pub changed_networks: Vec<u16>,
    pub errors: Vec<String>,
    pub duration_ms: u64,
}

/// `drift_repaired`: the watchdog found something changed by hand and put it back.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct DriftRepairedEvent {
    /// The network's listen port; null for what all networks share (the bridge, nginx).
    pub network: Option<u16>,
    /// What was repaired, one line per step (as a dry run lists them).
    pub repaired: Vec<String>,
}

/// `peer_connected` (a handshake newer than 180 s, WireGuard's
/// reject-after time) and `peer_disconnected` (the latest one got older,
/// the peer or its network went).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct PeerEvent {
    /// The network's listen port.
    pub network: u16,
    /// The gateway interface's public key in that network.
    pub network_public_key: Option<String>,
    pub peer_public_key: String,
    /// The peer's endpoint as WireGuard knows it.
    pub endpoint: Option<String>,
    /// Unix seconds of its latest handshake (null if never or unknown).
    pub latest_handshake: Option<i64>,
}

/// `route_failed`: a raw route was left out of nginx because another
/// process holds its port; the network's other routes, and every other
/// network, are served. Sent when it is first left out; the pass's errors
/// and `gateway_routes_failed` say so until the port is free and opened.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct RouteFailedEvent {
    /// The network's listen port.
    pub network: u16,
    /// `tcp://PORT` or `udp://PORT`.
    pub route: String,
    pub error: String,
}

/// `store_error`: a write to the database failed (e.g. its disk is full):
/// a POST/PATCH's state was not stored, or a pass's result, a traffic tick
/// or the peers' endpoints could not be recorded.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct StoreErrorEvent {
    /// `config`, `apply_result`, `traffic`, `endpoints` or `events`.
    pub operation: String,
    /// The database's error.
    pub message: String,
    /// The disk the database is on is full.
    pub disk_full: bool,
}

/// `events_lost`: sent first (without an `id:`, so a client's
/// `Last-Event-ID` stays its own) to a client that resumed after an event
/// the daemon no longer keeps, or does not know: some events after it are
/// gone (beyond the kept count, or from before the database kept events).
/// What follows are all the events still kept; re-read what you track
/// (status.json, config.json) instead of relying on the missed events.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct EventsLostEvent {
    /// The `Last-Event-ID` the client sent.
    pub last_event_id: u64,
    /// The oldest event still kept (the first one sent next); null if none is kept.
    pub first_kept_id: Option<u64>,
}

/// `upstream_down` / `upstream_up`: a route's upstream stopped or started
/// answering the health check (a TCP connect from inside its network's
/// namespace). An upstream's first check sends `upstream_down` if it fails
/// and nothing if it succeeds; after that, one event per change, so every
/// `upstream_up` follows an `upstream_down` of the same upstream.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct UpstreamEvent {
    /// The network's listen port.
    pub network: u16,
    /// The route, as a key of the network's `proxy` (`https://HOST`, `http://HOST`, `tcp://PORT`).
    pub route: String,
    /// `IP:PORT`.
    pub upstream: String,
    /// Why the check failed (`upstream_down`); null for `upstream_up`.
    pub error: Option<String>,
}

/// `role_changed` (`--ha-address`): the shared address came to this host
/// (`active`: it reaches out to every peer whose endpoint it knows and
/// serves) or went (`standby`: it goes silent toward the peers).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct RoleChangedEvent {
    /// `active` or `standby`: the role now.
    pub role: String,
    /// The role before.
    pub previous: String,
    /// The shared address (`--ha-address`).
    pub address: String,
}
