//! The HTTP API (CONTRACT.md §2). Thin: it validates, stores, wakes the
//! reconciler and reads; it never touches the system itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rocket::data::{FromData, Limits, ToByteUnit};
use rocket::http::{ContentType, Status};
use rocket::request::{FromRequest, Outcome, Request};
use rocket::response::{self, Responder};
use rocket::serde::json::Json;
use rocket::{Build, Data, Rocket, State, catch, catchers, get, patch, post};
use rocket_okapi::r#gen::OpenApiGenerator;
use rocket_okapi::okapi::openapi3::{OpenApi, Responses, SecurityRequirement, SecurityScheme, SecuritySchemeData};
use rocket_okapi::request::{OpenApiFromData, OpenApiFromRequest, RequestHeaderInput};
use rocket_okapi::response::OpenApiResponderInner;
use rocket_okapi::settings::OpenApiSettings;
use rocket_okapi::{openapi, openapi_get_routes_spec};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use crate::model::*;
use crate::reconcile::{Shared, now_unix};
use crate::validate::validate;

/// Everything the API needs.
pub struct ApiState {
    pub shared: Arc<Shared>,
    /// None: the API is open (the daemon then listens on loopback only).
    pub token: Option<String>,
    /// How long POST/PATCH wait for the reconciler before answering `pending`.
    pub apply_wait: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong token")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("the configuration is invalid: {} problem(s)", .0.len())]
    Invalid(Vec<ErrorDetail>),
    #[error("generation {generation} was stored but applying it failed; the reconciler retries on every watchdog tick")]
    ApplyFailed { generation: i64, errors: Vec<String> },
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Internal(String),
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!("{e}");
        ApiError::Internal(e.to_string())
    }
}

impl ApiError {
    fn parts(&self) -> (Status, &'static str, Vec<ErrorDetail>) {
        match self {
            ApiError::Unauthorized => (Status::Unauthorized, "unauthorized", vec![]),
            ApiError::BadRequest(_) => (Status::BadRequest, "bad_request", vec![]),
            ApiError::Invalid(d) => (Status::UnprocessableEntity, "invalid_config", d.clone()),
            ApiError::ApplyFailed { errors, .. } => (
                Status::InternalServerError,
                "apply_failed",
                errors.iter().map(|e| ErrorDetail { path: "$".into(), message: e.clone() }).collect(),
            ),
            ApiError::TooLarge(_) => (Status::PayloadTooLarge, "too_large", vec![]),
            ApiError::Internal(_) => (Status::InternalServerError, "internal", vec![]),
        }
    }
}

fn error_response<'o>(req: &Request<'_>, status: Status, code: &str, message: String, details: Vec<ErrorDetail>) -> response::Result<'o> {
    let body = ErrorBody { error: code.into(), message, details };
    response::Response::build_from(Json(body).respond_to(req)?).status(status).ok()
}

impl<'r> Responder<'r, 'static> for ApiError {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        let (status, code, details) = self.parts();
        error_response(req, status, code, self.to_string(), details)
    }
}

/// JSON responses of type `T` with these status codes and descriptions.
fn json_responses<T: JsonSchema>(generator: &mut OpenApiGenerator, codes: &[(u16, &str)]) -> rocket_okapi::Result<Responses> {
    let schema = generator.json_schema::<T>();
    let mut r = Responses::default();
    for (code, what) in codes {
        rocket_okapi::util::add_schema_response(&mut r, *code, "application/json", schema.clone())?;
        if let Some(rocket_okapi::okapi::openapi3::RefOr::Object(resp)) = r.responses.get_mut(&code.to_string()) {
            resp.description = (*what).into();
        }
    }
    Ok(r)
}

impl OpenApiResponderInner for ApiError {
    fn responses(generator: &mut OpenApiGenerator) -> rocket_okapi::Result<Responses> {
        json_responses::<ErrorBody>(
            generator,
            &[
                (400, "malformed request (e.g. a bad query parameter)"),
                (401, "missing or wrong token"),
                (413, "the body is larger than the JSON limit"),
                (422, "invalid configuration: every problem with its JSON path"),
                (500, "the apply failed (details list each error) or an internal error"),
            ],
        )
    }
}

/// Request guard: the token as `Token: T` or `Authorization: Bearer T`,
/// compared in constant time.
pub struct Auth;

fn token_matches(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Auth {
    type Error = ApiError;
    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let Some(state) = req.rocket().state::<ApiState>() else {
            return Outcome::Error((Status::InternalServerError, ApiError::Internal("no API state".into())));
        };
        let Some(expected) = &state.token else {
            return Outcome::Success(Auth);
        };
        let token = req.headers().get_one("Token").map(str::trim);
        let bearer = req
            .headers()
            .get_one("Authorization")
            .and_then(|h| h.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        // Either way of sending it may carry the token.
        if [token, bearer].into_iter().flatten().any(|g| token_matches(g, expected)) {
            Outcome::Success(Auth)
        } else {
            Outcome::Error((Status::Unauthorized, ApiError::Unauthorized))
        }
    }
}

pub const TOKEN_SCHEME: &str = "TokenHeader";
pub const BEARER_SCHEME: &str = "BearerAuth";

impl OpenApiFromRequest<'_> for Auth {
    fn from_request_input(_g: &mut OpenApiGenerator, _name: String, _required: bool) -> rocket_okapi::Result<RequestHeaderInput> {
        let scheme = SecurityScheme {
            description: Some("The token, as header `Token: <token>`.".into()),
            data: SecuritySchemeData::ApiKey { name: "Token".into(), location: "header".into() },
            extensions: Default::default(),
        };
        let mut req = SecurityRequirement::new();
        req.insert(TOKEN_SCHEME.into(), Vec::new());
        Ok(RequestHeaderInput::Security(TOKEN_SCHEME.into(), scheme, req))
    }
}

const TOO_LARGE: &str = "body too large";

/// A body that could not be read: 413 when over the limit, else 422.
fn body_error(message: String) -> ApiError {
    if message.starts_with(TOO_LARGE) {
        ApiError::TooLarge(message)
    } else {
        ApiError::Invalid(vec![ErrorDetail { path: "$".into(), message }])
    }
}

/// A JSON body whose parse error is reported by the handler as a JSON error
/// with serde's message (line and column), not as Rocket's HTML page. `S`
/// names the body's schema in the OpenAPI document.
pub struct JsonBody<T, S = T>(pub Result<T, String>, std::marker::PhantomData<S>);

/// Schema of `GatewayConfig` (a map keyed by listen port), named in the spec.
#[derive(serde::Deserialize, JsonSchema)]
#[schemars(rename = "GatewayConfig")]
#[allow(dead_code)]
pub struct GatewayConfigSchema(GatewayConfig);

/// Schema of `GatewayConfigPartial`: a `null` value removes that network.
#[derive(serde::Deserialize, JsonSchema)]
#[schemars(rename = "GatewayConfigPartial")]
#[allow(dead_code)]
pub struct GatewayConfigPartialSchema(GatewayConfigPartial);

#[rocket::async_trait]
impl<'r, T: DeserializeOwned, S> FromData<'r> for JsonBody<T, S> {
    type Error = std::convert::Infallible;
    async fn from_data(req: &'r Request<'_>, data: Data<'r>) -> rocket::data::Outcome<'r, Self> {
        let limit = req.limits().get("json").unwrap_or(Limits::JSON);
        let parsed = match data.open(limit).into_bytes().await {
            Ok(b) if b.is_complete() => serde_json::from_slice(&b).map_err(|e| format!("body is not a valid configuration: {e}")),
            Ok(_) => Err(format!("{TOO_LARGE}: the limit is {limit}")),
            Err(e) => Err(format!("reading the body: {e}")),
        };
        rocket::outcome::Outcome::Success(JsonBody(parsed, std::marker::PhantomData))
    }
}

impl<'r, T: DeserializeOwned, S: JsonSchema + DeserializeOwned + Send> OpenApiFromData<'r> for JsonBody<T, S> {
    fn request_body(generator: &mut OpenApiGenerator) -> rocket_okapi::Result<rocket_okapi::okapi::openapi3::RequestBody> {
        <Json<S> as OpenApiFromData>::request_body(generator)
    }
}

/// Answer of POST/PATCH: 200 applied, 202 still converging.
pub struct Applied(Status, ApplyResponse);

impl<'r> Responder<'r, 'static> for Applied {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        response::Response::build_from(Json(self.1).respond_to(req)?).status(self.0).ok()
    }
}

impl OpenApiResponderInner for Applied {
    fn responses(generator: &mut OpenApiGenerator) -> rocket_okapi::Result<Responses> {
        json_responses::<ApplyResponse>(
            generator,
            &[
                (200, "the system has converged to this generation (`result`: `applied`)"),
                (202, "stored; still converging when the wait ended (`result`: `pending`); see status.json"),
            ],
        )
    }
}

/// Liveness; needs no token.
#[openapi(tag = "health")]
#[get("/health")]
fn health() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// Replace the whole desired state, then wait (bounded) until it converged.
///
/// 200: applied; 202: stored, still converging when the wait ended; 422:
/// invalid, nothing changed; 500 `apply_failed`: stored, but the system could
/// not be converged (the reconciler keeps retrying).
#[openapi(tag = "config")]
#[post("/api/v1/config.json", data = "<body>")]
async fn post_config(_auth: Auth, state: &State<ApiState>, body: JsonBody<GatewayConfig>) -> Result<Applied, ApiError> {
    let config = body.0.map_err(body_error)?;
    store_and_apply(state, |_| Ok(config)).await
}

/// Partial update: each listed port is replaced by the given network, or
/// removed where the value is `null`; unlisted ports stay.
#[openapi(tag = "config")]
#[patch("/api/v1/config.json", data = "<body>")]
async fn patch_config(
    _auth: Auth,
    state: &State<ApiState>,
    body: JsonBody<GatewayConfigPartial, GatewayConfigPartialSchema>,
) -> Result<Applied, ApiError> {
    let patch = body.0.map_err(body_error)?;
    // Keys are checked here too: `"051820": null` would otherwise remove
    // nothing and still make a new generation.
    let bad: Vec<ErrorDetail> = patch
        .keys()
        .filter_map(|k| {
            crate::validate::parse_port_key(k)
                .err()
                .map(|m| ErrorDetail { path: format!("$[{}]", serde_json::Value::from(k.as_str())), message: m })
        })
        .collect();
    if !bad.is_empty() {
        return Err(ApiError::Invalid(bad));
    }
    store_and_apply(state, move |mut current| {
        for (port, net) in patch {
            match net {
                Some(n) => current.insert(port, n),
                None => current.remove(&port),
            };
        }
        Ok(current)
    })
    .await
}

/// Builds the new desired state from the current one under the write lock,
/// validates it, stores it, wakes the reconciler and waits for the result.
async fn store_and_apply(
    state: &ApiState,
    build: impl FnOnce(GatewayConfig) -> Result<GatewayConfig, ApiError>,
) -> Result<Applied, ApiError> {
    let shared = &state.shared;
    let start = Instant::now();
    let mut finished = shared.finished.subscribe();
    let generation = {
        let _guard = shared.write_lock.lock().await;
        let (_, current) = shared.store.desired().await?;
        let config = build(current)?;
        validate(&config, &shared.settings.validation()).map_err(ApiError::Invalid)?;
        shared.store.save_desired(&config, now_unix()).await?
    };
    shared.wake.notify_one();
    let done = tokio::time::timeout(state.apply_wait, finished.wait_for(|r| r.as_ref().is_some_and(|r| r.generation >= generation))).await;
    let record = match done {
        Ok(Ok(r)) => r.clone(),
        _ => None,
    };
    let duration_ms = start.elapsed().as_millis() as u64;
    match record {
        None => {
            let applied = shared.finished.borrow().as_ref().map(|r| r.applied_generation).unwrap_or(0);
            let body =
                ApplyResponse { generation, result: "pending".into(), applied_generation: applied, changed_networks: vec![], duration_ms };
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

/// The desired state as last accepted, with its generation.
#[openapi(tag = "config")]
#[get("/api/v1/config.json")]
async fn get_config(_auth: Auth, state: &State<ApiState>) -> Result<Json<StoredConfig>, ApiError> {
    let (generation, config) = state.shared.store.desired().await?;
    Ok(Json(StoredConfig { generation, config }))
}

/// What is really on the system now (read fresh), plus generations and the
/// last apply's result.
#[openapi(tag = "status")]
#[get("/api/v1/status.json")]
async fn status(_auth: Auth, state: &State<ApiState>) -> Result<Json<StatusInfo>, ApiError> {
    Ok(Json(crate::status::collect(&state.shared).await?))
}

/// Traffic recorded after `start` (unix seconds, exclusive), per network and peer.
#[openapi(tag = "traffic")]
#[get("/api/v1/traffic.json?<start>")]
async fn traffic(_auth: Auth, state: &State<ApiState>, start: Option<&str>) -> Result<Json<TrafficInfo>, ApiError> {
    let start =
        start.ok_or_else(|| ApiError::BadRequest("query parameter `start` (unix seconds) is required, e.g. ?start=1700000000".into()))?;
    let start: i64 = start.parse().ok().filter(|s| *s >= 0).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "`start` must be unix seconds (a non-negative integer), not {:?}",
            start.chars().take(40).collect::<String>()
        ))
    })?;
    Ok(Json(crate::traffic::traffic_since(&state.shared.store, start, now_unix()).await?))
}

/// Prometheus metrics (OpenMetrics text).
pub struct MetricsText(String);

impl<'r> Responder<'r, 'static> for MetricsText {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        let ct = ContentType::new("application", "openmetrics-text").with_params([("version", "1.0.0"), ("charset", "utf-8")]);
        response::Response::build_from(self.0.respond_to(req)?).header(ct).ok()
    }
}

impl OpenApiResponderInner for MetricsText {
    fn responses(generator: &mut OpenApiGenerator) -> rocket_okapi::Result<Responses> {
        let mut r = <String as OpenApiResponderInner>::responses(generator)?;
        rocket_okapi::util::set_content_type(&mut r, "application/openmetrics-text; version=1.0.0; charset=utf-8")?;
        Ok(r)
    }
}

/// Prometheus metrics; send the token as `Authorization: Bearer`.
#[openapi(tag = "metrics")]
#[get("/metrics")]
fn metrics(_auth: Auth, state: &State<ApiState>) -> Result<MetricsText, ApiError> {
    state.shared.metrics.encode().map(MetricsText).map_err(|e| ApiError::Internal(format!("encoding metrics: {e}")))
}

#[catch(default)]
fn default_catcher(status: Status, req: &Request<'_>) -> (Status, Json<ErrorBody>) {
    let (code, message) = match status.code {
        401 => ("unauthorized", "missing or wrong token: send `Token: <token>` or `Authorization: Bearer <token>`".to_string()),
        404 => ("not_found", format!("no route for {} {}", req.method(), req.uri().path())),
        413 => ("too_large", "request body too large".to_string()),
        422 => ("invalid_config", "the body could not be read as the expected JSON".to_string()),
        c if c < 500 => ("bad_request", status.reason_lossy().to_string()),
        _ => ("internal", "internal error; see the daemon's log".to_string()),
    };
    (status, Json(ErrorBody { error: code.into(), message, details: vec![] }))
}

fn routes_and_spec() -> (Vec<rocket::Route>, OpenApi) {
    let settings = OpenApiSettings::default();
    openapi_get_routes_spec![settings: health, post_config, patch_config, get_config, status, traffic, metrics]
}

/// The OpenAPI document, with both ways to send the token.
pub fn openapi_spec() -> OpenApi {
    let (_, mut spec) = routes_and_spec();
    spec.info.title = "gateway".into();
    spec.info.version = env!("CARGO_PKG_VERSION").into();
    spec.info.description =
        Some("Converges WireGuard network namespaces and nginx ingress to the posted desired state, and accounts traffic per peer.".into());
    let components = spec.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        BEARER_SCHEME.into(),
        rocket_okapi::okapi::openapi3::RefOr::Object(SecurityScheme {
            description: Some("The token, as `Authorization: Bearer <token>`.".into()),
            data: SecuritySchemeData::Http { scheme: "bearer".into(), bearer_format: None },
            extensions: Default::default(),
        }),
    );
    for item in spec.paths.values_mut() {
        for op in [&mut item.get, &mut item.post, &mut item.patch].into_iter().flatten() {
            if let Some(sec) = &mut op.security {
                if !sec.is_empty() {
                    let mut bearer = SecurityRequirement::new();
                    bearer.insert(BEARER_SCHEME.into(), Vec::new());
                    sec.push(bearer);
                }
            }
        }
    }
    name_gateway_config(spec)
}

/// schemars inlines the map behind `GatewayConfig`; give it its name in
/// `components` so clients generate a `GatewayConfig` type.
fn name_gateway_config(spec: OpenApi) -> OpenApi {
    let Ok(mut v) = serde_json::to_value(&spec) else {
        return spec;
    };
    let body = &mut v["paths"]["/api/v1/config.json"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    if body.get("$ref").is_none() && body.is_object() {
        let mut schema = body.take();
        schema["description"] = "The whole desired state: networks keyed by their WireGuard listen port (a decimal string).".into();
        *body = serde_json::json!({ "$ref": "#/components/schemas/GatewayConfig" });
        v["components"]["schemas"]["GatewayConfig"] = schema;
    }
    serde_json::from_value(v).unwrap_or(spec)
}

/// The Rocket app, built apart from `main` so tests use the same one.
pub fn rocket(state: ApiState, figment: rocket::figment::Figment) -> Rocket<Build> {
    let (routes, _) = routes_and_spec();
    let figment = figment.merge(("limits.json", 16.mebibytes()));
    rocket::custom(figment).manage(state).mount("/", routes).register("/", catchers![default_catcher])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare_is_exact() {
        assert!(token_matches("secret", "secret"));
        assert!(!token_matches("secret ", "secret"));
        assert!(!token_matches("secre", "secret"));
        assert!(!token_matches("", "secret"));
    }

    #[test]
    fn spec_lists_every_route_and_both_schemes() {
        let spec = serde_json::to_value(openapi_spec()).unwrap();
        for p in ["/health", "/api/v1/config.json", "/api/v1/status.json", "/api/v1/traffic.json", "/metrics"] {
            assert!(spec["paths"].get(p).is_some(), "missing {p}");
        }
        assert!(spec["paths"]["/api/v1/config.json"]["patch"].is_object());
        let schemes = &spec["components"]["securitySchemes"];
        assert_eq!(schemes[TOKEN_SCHEME]["in"], "header");
        assert_eq!(schemes[BEARER_SCHEME]["scheme"], "bearer");
        assert!(spec["paths"]["/health"]["get"].get("security").is_none());
        for name in ["GatewayConfig", "GatewayConfigPartial", "TrafficInfo", "StatusInfo", "ErrorBody", "ApplyResponse", "StoredConfig"] {
            assert!(spec["components"]["schemas"].get(name).is_some(), "schema {name} missing");
        }
        let post = &spec["paths"]["/api/v1/config.json"]["post"];
        assert_eq!(post["requestBody"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/GatewayConfig");
        for code in ["200", "202", "401", "422", "500"] {
            assert!(post["responses"].get(code).is_some(), "POST lacks {code}");
        }
    }
}
