//! The token guards: `Token: T` or `Authorization: Bearer T`, compared in
//! constant time (`daemon::TokenSet`). [`Auth`] needs the admin token,
//! [`ReadAuth`] the read token or the admin one.

use std::sync::Arc;

use rocket::http::Status;
use rocket::request::{FromRequest, Outcome, Request};
use rocket_okapi::r#gen::OpenApiGenerator;
use rocket_okapi::okapi::openapi3::{SecurityRequirement, SecurityScheme, SecuritySchemeData};
use rocket_okapi::request::{OpenApiFromRequest, RequestHeaderInput};

use super::error::ApiError;
use crate::daemon::{Scope, Shared};

pub const TOKEN_SCHEME: &str = "TokenHeader";
pub const BEARER_SCHEME: &str = "BearerAuth";

/// Request guard of the routes that write or show config.json: the admin token.
pub struct Auth;

/// Request guard of the routes that only read (status, traffic, metrics,
/// events): the read token or the admin token.
pub struct ReadAuth;

/// The tokens a request carries: either header may hold the right one.
fn given_tokens<'a>(req: &'a Request<'_>) -> impl Iterator<Item = &'a str> {
    let token = req.headers().get_one("Token").map(str::trim);
    let bearer = req
        .headers()
        .get_one("Authorization")
        .and_then(|h| h.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    [token, bearer].into_iter().flatten()
}

/// Whether the request may use a route that needs `needed`: 401 without a
/// valid token, 403 for a read token on an admin route.
fn check(req: &Request<'_>, needed: Scope) -> Result<(), (Status, ApiError)> {
    let Some(shared) = req.rocket().state::<Arc<Shared>>() else {
        return Err((Status::InternalServerError, ApiError::Internal("no API state".into())));
    };
    let tokens = shared.tokens();
    if tokens.is_open() {
        return Ok(());
    }
    let scope = given_tokens(req).filter_map(|g| tokens.scope_of(g)).max();
    match scope {
        Some(s) if s >= needed => Ok(()),
        Some(_) => Err((Status::Forbidden, ApiError::Forbidden)),
        None => Err((Status::Unauthorized, ApiError::Unauthorized)),
    }
}

fn outcome<T>(req: &Request<'_>, needed: Scope, ok: T) -> Outcome<T, ApiError> {
    match check(req, needed) {
        Ok(()) => Outcome::Success(ok),
        Err(e) => Outcome::Error(e),
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Auth {
    type Error = ApiError;
    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        outcome(req, Scope::Admin, Auth)
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for ReadAuth {
    type Error = ApiError;
    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        outcome(req, Scope::Read, ReadAuth)
    }
}

fn security(description: &str) -> rocket_okapi::Result<RequestHeaderInput> {
    let scheme = SecurityScheme {
        description: Some(description.into()),
        data: SecuritySchemeData::ApiKey { name: "Token".into(), location: "header".into() },
        extensions: Default::default(),
    };
    let mut req = SecurityRequirement::new();
    req.insert(TOKEN_SCHEME.into(), Vec::new());
    Ok(RequestHeaderInput::Security(TOKEN_SCHEME.into(), scheme, req))
}

const SCHEME_TEXT: &str = "The token, as header `Token: <token>`. The admin token (`--token`) opens every route; a read token (`--read-token`) opens status.json, traffic.json, /metrics and the event stream, and gets 403 elsewhere.";

impl OpenApiFromRequest<'_> for Auth {
    fn from_request_input(_g: &mut OpenApiGenerator, _name: String, _required: bool) -> rocket_okapi::Result<RequestHeaderInput> {
        security(SCHEME_TEXT)
    }
}

impl OpenApiFromRequest<'_> for ReadAuth {
    fn from_request_input(_g: &mut OpenApiGenerator, _name: String, _required: bool) -> rocket_okapi::Result<RequestHeaderInput> {
        security(SCHEME_TEXT)
    }
}
