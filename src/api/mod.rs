//! The HTTP API (CONTRACT.md §2). Thin: it validates, stores, wakes the
//! reconciler and reads; it never touches the system itself.

mod auth;
mod body;
mod concurrency;
mod error;
mod events;
pub mod gate;
mod openapi;
mod routes;

use std::sync::Arc;

use rocket::data::ToByteUnit;
use rocket::{Build, Rocket, catchers};

pub use auth::{BEARER_SCHEME, TOKEN_SCHEME};
pub use error::ApiError;
pub use openapi::openapi_spec;

use crate::service::Shared;

/// The Rocket app, built apart from `main` so tests use the same one.
pub fn rocket(shared: Arc<Shared>, figment: rocket::figment::Figment) -> Rocket<Build> {
    let (routes, _) = routes::routes_and_spec();
    let figment = figment.merge(("limits.json", 16.mebibytes()));
    rocket::custom(figment)
        .manage(crate::service::Gateway::new(shared.clone()))
        .manage(shared)
        .manage(auth::FailureLog::default())
        .mount("/", routes)
        .register("/", catchers![error::default_catcher])
}

/// The app as it runs behind the [`gate`]: on a private loopback port,
/// one request per connection (so the gate sees every request head),
/// telling `listening` its port once it listens.
pub fn rocket_behind_gate(
    shared: Arc<Shared>,
    figment: rocket::figment::Figment,
    peers: Arc<gate::Peers>,
    listening: tokio::sync::watch::Sender<Option<std::net::SocketAddr>>,
) -> Rocket<Build> {
    let figment = figment.merge(("address", std::net::Ipv4Addr::LOCALHOST)).merge(("port", 0)).merge(("keep_alive", 0));
    let listening = rocket::fairing::AdHoc::on_liftoff("gate", move |r| {
        let addr = std::net::SocketAddr::new(r.config().address, r.config().port);
        Box::pin(async move {
            listening.send_replace(Some(addr));
        })
    });
    rocket(shared, figment).manage(peers).attach(listening)
}

#[cfg(test)]
mod tests;
