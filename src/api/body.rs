//! Request bodies and response types that need their own handling: JSON
//! whose parse error becomes a JSON 422, the apply answer with its status
//! code, and the metrics text.

use rocket::Data;
use rocket::data::{FromData, Limits};
use rocket::http::{ContentType, Status};
use rocket::request::Request;
use rocket::response::{self, Responder};
use rocket::serde::json::Json;
use rocket_okapi::r#gen::OpenApiGenerator;
use rocket_okapi::okapi::openapi3::Responses;
use rocket_okapi::request::OpenApiFromData;
use rocket_okapi::response::OpenApiResponderInner;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use super::error::{ApiError, json_responses};
use crate::model::{ApplyResponse, ErrorDetail, GatewayConfig, GatewayConfigPartial};

const TOO_LARGE: &str = "body too large";

/// A body that could not be read: 413 when over the limit, else 422.
pub(super) fn body_error(message: String) -> ApiError {
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
pub struct Applied(pub Status, pub ApplyResponse);

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

/// Prometheus metrics (OpenMetrics text).
pub struct MetricsText(pub String);

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
