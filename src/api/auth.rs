//! The token guard: `Token: T` or `Authorization: Bearer T`, compared in
//! constant time (`daemon::ApiToken`).

use std::sync::Arc;

use rocket::http::Status;
use rocket::request::{FromRequest, Outcome, Request};
use rocket_okapi::r#gen::OpenApiGenerator;
use rocket_okapi::okapi::openapi3::{SecurityRequirement, SecurityScheme, SecuritySchemeData};
use rocket_okapi::request::{OpenApiFromRequest, RequestHeaderInput};

use super::error::ApiError;
use crate::daemon::Shared;

pub const TOKEN_SCHEME: &str = "TokenHeader";
pub const BEARER_SCHEME: &str = "BearerAuth";

/// Request guard: present on every route but `/health`.
pub struct Auth;

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

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Auth {
    type Error = ApiError;
    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let Some(shared) = req.rocket().state::<Arc<Shared>>() else {
            return Outcome::Error((Status::InternalServerError, ApiError::Internal("no API state".into())));
        };
        let Some(expected) = &shared.settings.token else {
            return Outcome::Success(Auth);
        };
        if given_tokens(req).any(|g| expected.matches(g)) {
            Outcome::Success(Auth)
        } else {
            Outcome::Error((Status::Unauthorized, ApiError::Unauthorized))
        }
    }
}

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
