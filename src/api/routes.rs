//! The routes: thin handlers that turn HTTP into calls of the
//! [`Gateway`] service (which owns the apply protocol) and its results into
//! answers; they never touch the system themselves.

use std::sync::Arc;

use rocket::http::Status;
use rocket::serde::json::Json;
use rocket::{State, get, patch, post};
use rocket_okapi::okapi::openapi3::OpenApi;
use rocket_okapi::{openapi, openapi_get_routes_spec};

use super::auth::{Auth, ReadAuth};
use super::body::{Applied, ConfigAnswer, DryRunFlag, JsonBody, MetricsText, QueryInt, Ready, body_error};
use super::concurrency::{IfMatch, Tagged};
use super::error::ApiError;
use super::events::{EventsStream, LastEventId};
use crate::clock::now_unix;
use crate::model::*;
use crate::service::Gateway;
use crate::service::Shared;
use crate::store::ApplyRecord;
use crate::traffic::{QueryError, Step, TrafficQuery};
use crate::types::parse_listen_port;
use crate::validate::{Problems, key_path};

/// Liveness; needs no token.
#[openapi(tag = "health")]
#[get("/health")]
fn health() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// Readiness; needs no token. 200 when the applied generation is the
/// desired one, nginx runs and no network fails; else 503 with the reasons.
#[openapi(tag = "health")]
#[get("/ready")]
async fn ready(state: &State<Arc<Shared>>) -> Ready {
    Ready(crate::status::readiness(state.inner()).await)
}

/// Replace the whole desired state, then wait (bounded) until it converged.
///
/// 200: applied; 202: stored, still converging when the wait ended; 422:
/// invalid, nothing changed; 500 `apply_failed`: stored, but the system could
/// not be converged (the reconciler keeps retrying). With `dry_run=true`:
/// 200 with what the apply would do, nothing stored or changed.
#[openapi(tag = "config")]
#[post("/api/v1/config.json?<dry_run>", data = "<body>")]
async fn post_config(
    _auth: Auth,
    state: &State<Gateway>,
    dry_run: DryRunFlag,
    if_match: IfMatch,
    body: JsonBody<GatewayConfig, GatewayConfigSchema>,
) -> Result<ConfigAnswer, ApiError> {
    let dry_run = dry_run.0.map_err(ApiError::BadRequest)?;
    let expected = if_match.0.map_err(ApiError::BadRequest)?;
    let config = body.0.map_err(body_error)?;
    answer(state, dry_run, expected, |_| config).await
}

/// Partial update: each listed port is replaced by the given network, or
/// removed where the value is `null`; unlisted ports stay. With
/// `dry_run=true`: what the apply of the whole resulting state would do.
#[openapi(tag = "config")]
#[patch("/api/v1/config.json?<dry_run>", data = "<body>")]
async fn patch_config(
    _auth: Auth,
    state: &State<Gateway>,
    dry_run: DryRunFlag,
    if_match: IfMatch,
    body: JsonBody<GatewayConfigPartial, GatewayConfigPartialSchema>,
) -> Result<ConfigAnswer, ApiError> {
    let dry_run = dry_run.0.map_err(ApiError::BadRequest)?;
    let expected = if_match.0.map_err(ApiError::BadRequest)?;
    let patch = body.0.map_err(body_error)?;
    // Keys are checked here too: `"051820": null` would otherwise remove
    // nothing and still make a new generation.
    let bad: Problems = patch.keys().filter_map(|k| parse_listen_port(k).err().map(|m| ErrorDetail::new(key_path("$", k), m))).collect();
    if !bad.is_empty() {
        return Err(ApiError::Invalid(bad));
    }
    let build = move |current: &GatewayConfig| {
        let mut current = current.clone();
        for (port, net) in patch {
            match net {
                Some(n) => current.insert(port, n),
                None => current.remove(&port),
            };
        }
        current
    };
    answer(state, dry_run, expected, build).await
}

/// A dry run, or the real apply; `expected`: the generation `If-Match` asks for.
async fn answer(
    gateway: &Gateway,
    dry_run: bool,
    expected: Option<i64>,
    build: impl FnOnce(&GatewayConfig) -> GatewayConfig,
) -> Result<ConfigAnswer, ApiError> {
    if dry_run {
        Ok(ConfigAnswer::DryRun(gateway.preview(expected, build).await?))
    } else {
        let o = gateway.apply(expected, build).await?;
        apply_answer(o.generation, o.record, o.applied_so_far, o.duration_ms).map(ConfigAnswer::Applied)
    }
}

/// 200 `applied`, 202 `pending` (the wait ended first), or 500 `apply_failed`.
fn apply_answer(generation: i64, record: Option<ApplyRecord>, applied_so_far: i64, duration_ms: u64) -> Result<Applied, ApiError> {
    match record {
        None => {
            let body = ApplyResponse {
                generation,
                result: "pending".into(),
                applied_generation: applied_so_far,
                changed_networks: vec![],
                duration_ms,
            };
            Ok(Applied(Status::Accepted, body))
        }
        Some(r) if r.ok => {
            let body = ApplyResponse {
                generation,
                result: "applied".into(),
                applied_generation: r.applied_generation,
                changed_networks: r.changed,
                duration_ms,
            };
            Ok(Applied(Status::Ok, body))
        }
        Some(r) => Err(ApiError::ApplyFailed { generation, errors: r.errors }),
    }
}

/// The desired state as last accepted, with its generation (also as
/// `ETag: "<generation>"`, for `If-Match` on POST and PATCH).
#[openapi(tag = "config")]
#[get("/api/v1/config.json")]
async fn get_config(_auth: Auth, state: &State<Gateway>) -> Result<Tagged<StoredConfig>, ApiError> {
    let (generation, config) = state.config().await?;
    Ok(Tagged(generation, StoredConfig { generation, config }))
}

/// What is really on the system now (read fresh), plus generations and the
/// last apply's result.
#[openapi(tag = "status")]
#[get("/api/v1/status.json")]
async fn status(_auth: ReadAuth, state: &State<Gateway>) -> Result<Json<StatusInfo>, ApiError> {
    Ok(Json(state.status().await?))
}

/// Traffic recorded after `start` (unix seconds, exclusive) up to `end`
/// (unix seconds, inclusive; default now), per network and peer: per
/// sample, or with `step` (seconds, 60 to 31622400) summed per bucket
/// `(K - step, K]` keyed by its end K (a multiple of `step`; `start` is
/// then rounded down to one, `end` up). Each network carries its listen
/// `port` beside its public key. 422 `invalid_query` when `end` is before
/// `start`.
#[openapi(tag = "traffic")]
#[get("/api/v1/traffic.json?<start>&<end>&<step>")]
async fn traffic(
    _auth: ReadAuth,
    state: &State<Gateway>,
    start: QueryInt<0, { i64::MAX }, true>,
    end: QueryInt<0, { i64::MAX }, false>,
    step: QueryInt<{ Step::MIN as i64 }, { Step::MAX as i64 }, false>,
) -> Result<Json<TrafficInfo>, ApiError> {
    let bad = |e: String| ApiError::BadRequest(e);
    let start = start.0.map_err(|e| bad(format!("{e} (unix seconds)")))?;
    let start = start.ok_or_else(|| bad("query parameter `start` (unix seconds) is required, e.g. ?start=1700000000".into()))?;
    let end = end.0.map_err(|e| bad(format!("{e} (unix seconds, e.g. end=1700086400)")))?;
    let step = step.0.map_err(|e| bad(format!("{e} (e.g. step=3600 for hourly sums)")))?;
    let step = step.map(|s| Step::parse(&s.to_string())).transpose().map_err(bad)?;
    let query = TrafficQuery::new(start, end, step, now_unix())
        .map_err(|message| ApiError::InvalidQuery(vec![ErrorDetail::new("$.end", message)]))?;
    state.traffic(&query).await.map(Json).map_err(|e| match e {
        QueryError::Store(e) => e.into(),
        too_many @ (QueryError::TooMany { .. } | QueryError::TooManyForStep { .. }) => ApiError::BadRequest(too_many.to_string()),
    })
}

/// Prometheus metrics; send the token as `Authorization: Bearer`.
#[openapi(tag = "metrics")]
#[get("/metrics")]
fn metrics(_auth: ReadAuth, state: &State<Arc<Shared>>) -> Result<MetricsText, ApiError> {
    // Read from /proc at each scrape: a few small files, no process.
    let workers = state.system().nginx_workers();
    state.metrics().set_nginx_workers(workers.active, workers.draining);
    state.metrics().encode().map(MetricsText).map_err(|e| ApiError::Internal(format!("encoding metrics: {e}")))
}

/// The event stream (Server-Sent Events): `apply`, `drift_repaired`,
/// `peer_connected`, `peer_disconnected`; resume with `Last-Event-ID`.
#[openapi(tag = "events")]
#[get("/api/v1/events")]
fn events(_auth: ReadAuth, state: &State<Gateway>, last: LastEventId, shutdown: rocket::Shutdown) -> Result<EventsStream, ApiError> {
    let after = last.0.map_err(ApiError::BadRequest)?;
    Ok(super::events::stream(state.events(after), shutdown))
}

pub(super) fn routes_and_spec() -> (Vec<rocket::Route>, OpenApi) {
    let settings = super::openapi::settings();
    openapi_get_routes_spec![settings: health, ready, post_config, patch_config, get_config, status, traffic, metrics, events]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_answers() {
        let record = |ok: bool| ApplyRecord {
            generation: 4,
            applied_generation: if ok { 4 } else { 3 },
            ok,
            errors: if ok { vec![] } else { vec!["network 51820: boom".into()] },
            finished_at: 0,
            duration_ms: 1,
            changed: vec![51820],
        };
        let Ok(Applied(status, body)) = apply_answer(4, Some(record(true)), 3, 9) else { panic!("applied") };
        assert_eq!((status, body.result.as_str(), body.changed_networks, body.applied_generation), (Status::Ok, "applied", vec![51820], 4));
        let Ok(Applied(status, body)) = apply_answer(4, None, 3, 9) else { panic!("pending") };
        assert_eq!((status, body.result.as_str(), body.applied_generation), (Status::Accepted, "pending", 3));
        match apply_answer(4, Some(record(false)), 3, 9) {
            Err(ApiError::ApplyFailed { generation: 4, errors }) => assert_eq!(errors, ["network 51820: boom"]),
            _ => panic!("apply_failed"),
        }
    }
}
