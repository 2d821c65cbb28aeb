//! The HTTP API (CONTRACT.md §2). Thin: it validates, stores, wakes the
//! reconciler and reads; it never touches the system itself.

mod auth;
mod body;
mod concurrency;
mod error;
mod events;
mod openapi;
mod routes;

use std::sync::Arc;

use rocket::data::ToByteUnit;
use rocket::{Build, Rocket, catchers};

pub use auth::{BEARER_SCHEME, TOKEN_SCHEME};
pub use error::ApiError;
pub use openapi::openapi_spec;

use crate::daemon::Shared;

/// The Rocket app, built apart from `main` so tests use the same one.
pub fn rocket(shared: Arc<Shared>, figment: rocket::figment::Figment) -> Rocket<Build> {
    let (routes, _) = routes::routes_and_spec();
    let figment = figment.merge(("limits.json", 16.mebibytes()));
    rocket::custom(figment)
        .manage(shared)
        .manage(auth::FailureLog::default())
        .mount("/", routes)
        .register("/", catchers![error::default_catcher])
}

#[cfg(test)]
mod tests;
