//! Every error the API returns: one type, mapped to a status code and a JSON
//! body in one place, plus the catcher for what Rocket answers itself.

use rocket::catch;
use rocket::http::{Method, Status};
use rocket::request::Request;
use rocket::response::{self, Responder};
use rocket::serde::json::Json;
use rocket_okapi::r#gen::OpenApiGenerator;
use rocket_okapi::okapi::openapi3::Responses;
use rocket_okapi::response::OpenApiResponderInner;
use schemars::JsonSchema;

use crate::model::{ErrorBody, ErrorDetail};
use crate::validate::{MAX_DETAILS, Problems, STOP_AFTER};

/// The 422's message: how many problems, and how many of them are listed.
fn invalid_message(p: &Problems) -> String {
    match p.total() {
        n if n >= STOP_AFTER => {
            format!("the configuration is invalid: at least {n} problems (checking stopped there); the first {MAX_DETAILS} are listed")
        }
        n if n > MAX_DETAILS => format!("the configuration is invalid: {n} problems; the first {MAX_DETAILS} are listed"),
        n => format!("the configuration is invalid: {n} problem(s)"),
    }
}

const FORBIDDEN: &str = "this token may only read (status.json, traffic.json, /metrics, the event stream): config.json, which holds private keys, and every write need the admin token";

const MISDIRECTED: &str = "not for this API: without a token it answers only requests addressed to loopback (Host: localhost, 127.0.0.1, [::1]) or to its own address (set a token, --token, to use another name), and only on its public address";
const UNSUPPORTED_MEDIA_TYPE: &str = "a write needs `Content-Type: application/json`";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong token")]
    Unauthorized,
    #[error("{FORBIDDEN}")]
    Forbidden,
    #[error("{MISDIRECTED}")]
    MisdirectedRequest,
    #[error("{UNSUPPORTED_MEDIA_TYPE}")]
    UnsupportedMediaType,
    #[error("{0}")]
    BadRequest(String),
    #[error("{}", invalid_message(.0))]
    Invalid(Problems),
    /// Query parameters each of its form, but not together (traffic.json's `end` before `start`).
    #[error("{}", .0.iter().map(|d| d.message.as_str()).collect::<Vec<_>>().join("; "))]
    InvalidQuery(Vec<ErrorDetail>),
    #[error("generation {generation} was stored but applying it failed; the reconciler retries")]
    ApplyFailed { generation: i64, errors: Vec<String> },
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Internal(String),
    #[error("the daemon is stopping: nothing was stored; send it again once it is back")]
    ShuttingDown,
    #[error("{0}")]
    Busy(String),
    #[error(
        "If-Match asks for generation {expected}, but the stored generation is {stored}: nothing changed; GET /api/v1/config.json again, then send the change with its ETag"
    )]
    PreconditionFailed { expected: i64, stored: i64 },
    /// The database's disk is full: nothing was stored.
    #[error("the disk of the gateway's database is full, so nothing was stored ({0}): free space on it and send the request again")]
    DiskFull(String),
}

impl From<crate::service::DryRunError> for ApiError {
    fn from(e: crate::service::DryRunError) -> Self {
        match e {
            crate::service::DryRunError::Stopped => ApiError::ShuttingDown,
            busy @ crate::service::DryRunError::Busy(_) => ApiError::Busy(busy.to_string()),
        }
    }
}

impl From<crate::service::Refused> for ApiError {
    fn from(r: crate::service::Refused) -> Self {
        use crate::service::Refused;
        match r {
            Refused::ShuttingDown => ApiError::ShuttingDown,
            Refused::PreconditionFailed { expected, stored } => ApiError::PreconditionFailed { expected, stored },
            Refused::Invalid(problems) => ApiError::Invalid(problems),
            Refused::Store(e) => e.into(),
            Refused::DryRun(e) => e.into(),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "database error while answering a request");
        if e.disk_full() { ApiError::DiskFull(e.to_string()) } else { ApiError::Internal(e.to_string()) }
    }
}

impl ApiError {
    /// Status, code, the details listed (at most [`MAX_DETAILS`]) and how
    /// many there were in all.
    fn parts(&self) -> (Status, &'static str, Vec<ErrorDetail>, usize) {
        let (status, code, details) = self.status_code_details();
        match self {
            ApiError::Invalid(p) => (status, code, details, p.total()),
            _ => {
                let total = details.len();
                (status, code, details.into_iter().take(MAX_DETAILS).collect(), total)
            }
        }
    }

    fn status_code_details(&self) -> (Status, &'static str, Vec<ErrorDetail>) {
        match self {
            ApiError::Unauthorized => (Status::Unauthorized, "unauthorized", vec![]),
            ApiError::Forbidden => (Status::Forbidden, "forbidden", vec![]),
            ApiError::MisdirectedRequest => (Status::MisdirectedRequest, "misdirected_request", vec![]),
            ApiError::UnsupportedMediaType => (Status::UnsupportedMediaType, "unsupported_media_type", vec![]),
            ApiError::BadRequest(_) => (Status::BadRequest, "bad_request", vec![]),
            ApiError::Invalid(p) => (Status::UnprocessableEntity, "invalid_config", p.details().to_vec()),
            ApiError::InvalidQuery(d) => (Status::UnprocessableEntity, "invalid_query", d.clone()),
            ApiError::ApplyFailed { errors, .. } => {
                (Status::InternalServerError, "apply_failed", errors.iter().map(|e| ErrorDetail::of_pass_error(e)).collect())
            }
            ApiError::TooLarge(_) => (Status::PayloadTooLarge, "too_large", vec![]),
            ApiError::Internal(_) => (Status::InternalServerError, "internal", vec![]),
            ApiError::ShuttingDown => (Status::ServiceUnavailable, "shutting_down", vec![]),
            ApiError::Busy(_) => (Status::ServiceUnavailable, "busy", vec![]),
            ApiError::DiskFull(_) => (Status::InsufficientStorage, "insufficient_storage", vec![]),
            ApiError::PreconditionFailed { .. } => (Status::PreconditionFailed, "precondition_failed", vec![]),
        }
    }
}

pub(super) fn error_response<'o>(
    req: &Request<'_>,
    status: Status,
    code: &str,
    message: String,
    details: Vec<ErrorDetail>,
    total: usize,
) -> response::Result<'o> {
    let total = (total > details.len()).then_some(total);
    let body = ErrorBody { error: code.into(), message, details, total };
    response::Response::build_from(Json(body).respond_to(req)?).status(status).ok()
}

impl<'r> Responder<'r, 'static> for ApiError {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        let (status, code, details, total) = self.parts();
        error_response(req, status, code, self.to_string(), details, total)
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

/// Every error status the API answers with, described once; each operation
/// lists its own in the document (`openapi::ERRORS`).
pub(super) const ERROR_STATUSES: &[(u16, &str)] = &[
    (400, "malformed request (e.g. a bad query parameter)"),
    (401, "missing or wrong token"),
    (403, "a read token on a route that needs the admin token (config.json: it holds private keys; every write)"),
    (415, "the body is not sent as `Content-Type: application/json`"),
    (421, "no token is configured and the `Host` header names neither loopback nor the API's address (DNS rebinding)"),
    (412, "`precondition_failed`: the `If-Match` generation is not the stored one (another change came first); nothing changed"),
    (413, "the body is larger than the JSON limit (16 MiB)"),
    (
        422,
        "invalid configuration (`invalid_config`), or query parameters that do not go together (`invalid_query`: traffic.json's `end` before `start`): every problem with its path; nothing changed",
    ),
    (
        500,
        "the apply failed (`apply_failed`: details list each error; stored anyway and retried) or an internal error (`internal`, e.g. the database)",
    ),
    (
        503,
        "the daemon is stopping (`shutting_down`): nothing was stored; send it again once it is back; or a dry run waited too long for the reconciler (`busy`): try again",
    ),
    (
        507,
        "the disk of the gateway's database is full (`insufficient_storage`): nothing was stored; free space on it and send the request again",
    ),
];

impl OpenApiResponderInner for ApiError {
    fn responses(generator: &mut OpenApiGenerator) -> rocket_okapi::Result<Responses> {
        json_responses::<ErrorBody>(generator, ERROR_STATUSES)
    }
}

/// What the catcher answers: an error body, and for a known path asked with
/// another method, the methods it has.
pub(super) struct Caught {
    status: Status,
    body: ErrorBody,
    allow: Option<String>,
}

impl<'r> Responder<'r, 'static> for Caught {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        let mut r = response::Response::build_from(Json(self.body).respond_to(req)?);
        r.status(self.status);
        if let Some(allow) = self.allow {
            r.raw_header("Allow", allow);
        }
        r.ok()
    }
}

/// The methods the mounted routes answer on the request's path (HEAD
/// wherever GET is: Rocket answers it), `None` if no route has this path.
fn allowed_methods(req: &Request<'_>) -> Option<Vec<Method>> {
    let wanted: Vec<&str> = req.uri().path().segments().collect();
    let same_path = |route: &rocket::Route| {
        let segments: Vec<&str> = route.uri.path().split('/').filter(|s| !s.is_empty()).collect();
        segments.len() == wanted.len() && segments.iter().zip(&wanted).all(|(r, w)| r.starts_with('<') || r == w)
    };
    let mut methods: Vec<Method> = req.rocket().routes().filter(|r| same_path(r)).map(|r| r.method).collect();
    if methods.contains(&Method::Get) {
        methods.push(Method::Head);
    }
    methods.sort_by_key(|m| m.as_str());
    methods.dedup();
    (!methods.is_empty()).then_some(methods)
}

/// Whether the catcher was called for a method the path does not have:
/// 404 for a known method no route of the path answers; 400 for a method
/// Rocket does not know at all (e.g. `QUERY`), which it reports with the
/// request turned into a GET (no route here sends 400 to the catcher).
fn wrong_method(status: Status, req: &Request<'_>, allowed: &[Method]) -> bool {
    match status.code {
        404 => !allowed.contains(&req.method()),
        400 => true,
        _ => false,
    }
}

/// What Rocket answers itself (no route, a failed guard, an oversized body)
/// is JSON too, never an HTML page. A known path asked with a method it does
/// not have is 405 with `Allow`; an unknown path is 404.
#[catch(default)]
pub(super) fn default_catcher(status: Status, req: &Request<'_>) -> Caught {
    if let Some(methods) = allowed_methods(req).filter(|m| wrong_method(status, req, m)) {
        let allow = methods.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ");
        let message = format!("{} takes only {allow}", req.uri().path());
        let body = ErrorBody { error: "method_not_allowed".into(), message, details: vec![], total: None };
        return Caught { status: Status::MethodNotAllowed, body, allow: Some(allow) };
    }
    let (code, message) = match status.code {
        401 => ("unauthorized", "missing or wrong token: send `Token: <token>` or `Authorization: Bearer <token>`".to_string()),
        403 => ("forbidden", FORBIDDEN.to_string()),
        415 => ("unsupported_media_type", UNSUPPORTED_MEDIA_TYPE.to_string()),
        421 => ("misdirected_request", MISDIRECTED.to_string()),
        404 => ("not_found", format!("no route for {} {}", req.method(), req.uri().path())),
        413 => ("too_large", "request body too large".to_string()),
        422 => ("invalid_config", "the body could not be read as the expected JSON".to_string()),
        c if c < 500 => ("bad_request", status.reason_lossy().to_string()),
        _ => ("internal", "internal error; see the daemon's log".to_string()),
    };
    Caught { status, body: ErrorBody { error: code.into(), message, details: vec![], total: None }, allow: None }
}
