//! The token guards: `Token: T` or `Authorization: Bearer T`, compared in
//! constant time (`service::TokenSet`). [`Auth`] needs the admin token,
//! [`ReadAuth`] the read token or the admin one. Without any token the API
//! is open on loopback, so a request must then name loopback (or the bound
//! address) as its Host: a web page whose name resolves to 127.0.0.1 (DNS
//! rebinding) gets 421. Failures are counted and logged, rate-limited.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rocket::http::Status;
use rocket::request::{FromRequest, Outcome, Request};
use rocket_okapi::r#gen::OpenApiGenerator;
use rocket_okapi::okapi::openapi3::{SecurityRequirement, SecurityScheme, SecuritySchemeData};
use rocket_okapi::request::{OpenApiFromRequest, RequestHeaderInput};

use super::error::ApiError;
use crate::service::{Scope, Shared};

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

/// Whether a `Host` header names loopback (`localhost`, a loopback
/// address) or the address the API is bound to, with any port. No Host
/// (HTTP/1.0) passes: every browser sends one.
pub(super) fn host_allowed(host: Option<&str>, bound: IpAddr) -> bool {
    let Some(host) = host else { return true };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map(|(ip, _)| ip),
        None => Some(host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h)),
    };
    let Some(name) = name else { return false };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback() || ip == bound)
}

/// Why a request is refused, for the metric's `reason` label.
fn failure_reason(req: &Request<'_>, scope: Option<Scope>) -> &'static str {
    match scope {
        Some(_) => "forbidden",
        None if given_tokens(req).next().is_none() => "missing",
        None => "invalid",
    }
}

/// Whether the request may use a route that needs `needed`: 401 without a
/// valid token, 403 for a read token on an admin route; without any token
/// configured, 421 for a Host that is not loopback.
fn check(req: &Request<'_>, needed: Scope) -> Result<(), (Status, ApiError)> {
    let Some(shared) = req.rocket().state::<Arc<Shared>>() else {
        return Err((Status::InternalServerError, ApiError::Internal("no API state".into())));
    };
    // Behind the gate, a request reaches Rocket only through it; one that
    // came to the private port directly skipped TLS and the limits.
    let client = match req.rocket().state::<Arc<super::gate::Peers>>() {
        Some(peers) => match req.remote().and_then(|r| peers.client(r)) {
            Some(c) => Some(c),
            None => return Err((Status::MisdirectedRequest, ApiError::MisdirectedRequest)),
        },
        None => req.remote(),
    };
    let tokens = shared.tokens();
    if tokens.is_open() {
        return match host_allowed(req.headers().get_one("Host"), shared.settings().api_address) {
            true => Ok(()),
            false => Err((Status::MisdirectedRequest, ApiError::MisdirectedRequest)),
        };
    }
    let scope = given_tokens(req).filter_map(|g| tokens.scope_of(g)).max();
    if scope.is_some_and(|s| s >= needed) {
        return Ok(());
    }
    let reason = failure_reason(req, scope);
    shared.metrics().auth_failure(reason);
    if let Some(log) = req.rocket().state::<FailureLog>() {
        log.note(client, reason);
    }
    match reason {
        "forbidden" => Err((Status::Forbidden, ApiError::Forbidden)),
        _ => Err((Status::Unauthorized, ApiError::Unauthorized)),
    }
}

/// Logs failed authentications: the first at once, then at most one line
/// per [`FailureLog::EVERY`] with how many were not logged, so a flood of
/// bad tokens cannot flood the log. The presented token is never logged.
#[derive(Default)]
pub struct FailureLog {
    /// When the last line was written, and failures since that were not.
    state: Mutex<(Option<Instant>, u64)>,
}

impl FailureLog {
    pub const EVERY: Duration = Duration::from_secs(10);

    fn note(&self, client: Option<std::net::SocketAddr>, reason: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, unlogged) = &mut *state;
        if last.is_some_and(|at| at.elapsed() < Self::EVERY) {
            *unlogged += 1;
            return;
        }
        let client = client.map_or_else(|| "unknown".to_string(), |a| a.ip().to_string());
        tracing::warn!(client, reason, not_logged_before = *unlogged, "API authentication failed");
        *state = (Some(Instant::now()), 0);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_token_only_loopback_hosts_pass() {
        let bound: IpAddr = "127.0.0.2".parse().unwrap();
        for ok in [None, Some("localhost"), Some("LocalHost:8000"), Some("127.0.0.1"), Some("127.0.0.1:8000"), Some("127.9.9.9:1")] {
            assert!(host_allowed(ok, bound), "{ok:?}");
        }
        for ok in ["[::1]", "[::1]:8000", "127.0.0.2:8000"] {
            assert!(host_allowed(Some(ok), bound), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8000",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "10.0.0.1:8000",
            "[::1",
            "[2001:db8::1]:8000",
            "localhost.",
            "",
            "0.0.0.0:8000",
        ] {
            assert!(!host_allowed(Some(bad), bound), "{bad}");
        }
        assert!(host_allowed(Some("192.0.2.7:8000"), "192.0.2.7".parse().unwrap()), "the bound address");
    }
}
