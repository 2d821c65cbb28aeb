//! Every error the API returns: one type, mapped to a status code and a JSON
//! body in one place, plus the catcher for what Rocket answers itself.

use rocket::catch;
use rocket::http::Status;
use rocket::request::Request;
use rocket::response::{self, Responder};
use rocket::serde::json::Json;
use rocket_okapi::r#gen::OpenApiGenerator;
use rocket_okapi::okapi::openapi3::Responses;
use rocket_okapi::response::OpenApiResponderInner;
use schemars::JsonSchema;

use crate::model::{ErrorBody, ErrorDetail};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong token")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("the configuration is invalid: {} problem(s)", .0.len())]
    Invalid(Vec<ErrorDetail>),
    #[error("generation {generation} was stored but applying it failed; the reconciler retries")]
    ApplyFailed { generation: i64, errors: Vec<String> },
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Internal(String),
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "database error while answering a request");
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

pub(super) fn error_response<'o>(
    req: &Request<'_>,
    status: Status,
    code: &str,
    message: String,
    details: Vec<ErrorDetail>,
) -> response::Result<'o> {
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
pub(super) fn json_responses<T: JsonSchema>(generator: &mut OpenApiGenerator, codes: &[(u16, &str)]) -> rocket_okapi::Result<Responses> {
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

/// What Rocket answers itself (no route, a failed guard, an oversized body)
/// is JSON too, never an HTML page.
#[catch(default)]
pub(super) fn default_catcher(status: Status, req: &Request<'_>) -> (Status, Json<ErrorBody>) {
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
