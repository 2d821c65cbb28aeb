//! `GET /api/v1/events` as Server-Sent Events: the `Last-Event-ID` guard
//! and the stream, which ends when its subscriber fell too far behind
//! (the reconciler never waits for it) or the server stops.

use std::sync::Arc;
use std::time::Duration;

use rocket::futures::stream::{self, BoxStream, StreamExt};
use rocket::request::{FromRequest, Outcome, Request};
use rocket::response::stream::{Event as Sse, EventStream};
use rocket::response::{self, Responder};
use rocket_okapi::r#gen::OpenApiGenerator;
use rocket_okapi::okapi::openapi3::{MediaType, Responses};
use rocket_okapi::okapi::schemars::schema::SchemaObject;
use rocket_okapi::request::{OpenApiFromRequest, RequestHeaderInput};
use rocket_okapi::response::OpenApiResponderInner;
use tokio::sync::broadcast::error::RecvError;

use crate::events::{Event, Subscription};
use crate::model::events::{
    ApplyEvent, DriftRepairedEvent, EventsLostEvent, PeerEvent, RoleChangedEvent, RouteFailedEvent, StoreErrorEvent, UpstreamEvent,
};
use crate::types::truncate;

/// A keep-alive comment at least this often, so proxies keep an idle stream open.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// The `Last-Event-ID` header: the id of the last event a client got. It
/// never fails to parse, so a bad value gets the handler's clear 400.
pub struct LastEventId(pub Result<Option<u64>, String>);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for LastEventId {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let parsed = match req.headers().get_one("Last-Event-ID").map(str::trim) {
            None | Some("") => Ok(None),
            Some(id) => id
                .parse::<u64>()
                .ok()
                .filter(|_| id.bytes().all(|b| b.is_ascii_digit()))
                .map(Some)
                .ok_or_else(|| format!("header Last-Event-ID must be an event id (a whole number), not {:?}", truncate(id))),
        };
        Outcome::Success(LastEventId(parsed))
    }
}

impl OpenApiFromRequest<'_> for LastEventId {
    fn from_request_input(generator: &mut OpenApiGenerator, _: String, _: bool) -> rocket_okapi::Result<RequestHeaderInput> {
        Ok(super::openapi::optional_header(
            generator,
            "Last-Event-ID",
            "^[0-9]{1,19}$",
            "The `id` of the last event received: the events after it that are still kept (the last `--events-kept`, 10000 by default, also across a restart) are sent first; if some after it are gone, `events_lost` comes first. Browsers' EventSource sends it when they reconnect.",
        ))
    }
}

/// The open stream.
pub struct EventsStream(EventStream<BoxStream<'static, Sse>>);

fn sse(event: Arc<Event>) -> Sse {
    Sse::data(event.data.clone()).event(event.name.clone()).id(event.id.to_string())
}

/// `events_lost` has no `id:`: the client's `Last-Event-ID` stays the last
/// event it really got.
fn lost(lost: &EventsLostEvent) -> Sse {
    Sse::json(lost).event("events_lost")
}

/// `events_lost` if some events the client has not seen are gone, the
/// subscription's missed events, then the live ones, until the subscriber
/// falls behind by more than the kept count or the server stops.
pub fn stream(subscription: Subscription, shutdown: rocket::Shutdown) -> EventsStream {
    let Subscription { lost: gone, missed, live } = subscription;
    let live = stream::unfold(live, |mut rx| async move {
        match rx.recv().await {
            Ok(event) => Some((sse(event), rx)),
            Err(RecvError::Lagged(n)) => {
                tracing::info!(missed = n, "an event subscriber fell too far behind and was dropped; it may resume with Last-Event-ID");
                None
            }
            Err(RecvError::Closed) => None,
        }
    });
    let first = gone.as_ref().map(lost);
    let events = stream::iter(first.into_iter().chain(missed.into_iter().map(sse))).chain(live).take_until(shutdown).boxed();
    EventsStream(EventStream::from(events).heartbeat(HEARTBEAT))
}

impl<'r> Responder<'r, 'r> for EventsStream {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'r> {
        self.0.respond_to(req)
    }
}

const DESCRIPTION: &str = "Server-Sent Events (`text/event-stream`), endless: each event has an `id:` (increasing by one within a run, higher after a restart, never given twice; a client resumes with `Last-Event-ID`, also across a restart), an `event:` name and a JSON `data:` line; a comment (`:`) at least every 10 s keeps the connection alive.
- `events_lost` (data: EventsLostEvent, no `id:`): first, when a client resumed after an event that is no longer kept (or unknown): some events after it are gone; all kept ones follow. Re-read status.json and config.json.
- `apply` (data: ApplyEvent): a pass for a new generation, or its retry, finished.
- `drift_repaired` (data: DriftRepairedEvent): the watchdog put back what was changed by hand.
- `peer_connected` / `peer_disconnected` (data: PeerEvent): a peer's latest handshake became newer / older than 180 s (seen by the drift check and status reads).
- `route_failed` (data: RouteFailedEvent): a raw route was left out of nginx because another process holds its port; everything else is served.
- `store_error` (data: StoreErrorEvent): a write to the database failed (e.g. its disk is full): a POST/PATCH answered 507, or a pass's result, a traffic tick, the peers' endpoints or the events could not be recorded.
- `upstream_down` / `upstream_up` (data: UpstreamEvent): a route's upstream failed / passed its health check after passing / failing the one before (an upstream's first check sends `upstream_down` only if it fails).
- `role_changed` (data: RoleChangedEvent): with `--ha-address`, the shared address came to this host (`active`) or went (`standby`).
A client more than `--events-kept` events behind is disconnected (it may resume from what is kept); the reconciler never waits for a client.";

/// Each event name of the stream with its data's schema (the `data:`
/// line is that JSON); `events_lost` alone has no `id:`.
fn kinds(generator: &mut OpenApiGenerator) -> Vec<(&'static [&'static str], SchemaObject)> {
    vec![
        (&["apply"], generator.json_schema::<ApplyEvent>()),
        (&["drift_repaired"], generator.json_schema::<DriftRepairedEvent>()),
        (&["peer_connected", "peer_disconnected"], generator.json_schema::<PeerEvent>()),
        (&["route_failed"], generator.json_schema::<RouteFailedEvent>()),
        (&["store_error"], generator.json_schema::<StoreErrorEvent>()),
        (&["upstream_down", "upstream_up"], generator.json_schema::<UpstreamEvent>()),
        (&["events_lost"], generator.json_schema::<EventsLostEvent>()),
        (&["role_changed"], generator.json_schema::<RoleChangedEvent>()),
    ]
}

/// One event as Server-Sent Events carry it (OpenAPI 3.1: a
/// `text/event-stream` schema describes each event, the fields `event`,
/// `data` and `id` as strings): the `event:` name, the `id:` (a whole
/// number; none for `events_lost`), and the `data:` line, JSON of the
/// named schema (`contentMediaType` and `contentSchema`, which validators
/// such as schemathesis decode and check).
fn event_schema(names: &[&str], data: SchemaObject) -> serde_json::Value {
    let event = match names {
        [one] => serde_json::json!({"const": one}),
        many => serde_json::json!({"enum": many}),
    };
    let mut required = vec!["event", "data"];
    let mut properties = serde_json::json!({
        "event": event,
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data},
    });
    if names != ["events_lost"] {
        required.push("id");
        properties["id"] = serde_json::json!({"type": "string", "pattern": "^[0-9]{1,20}$"});
    }
    serde_json::json!({"type": "object", "required": required, "properties": properties})
}

impl OpenApiResponderInner for EventsStream {
    fn responses(generator: &mut OpenApiGenerator) -> rocket_okapi::Result<Responses> {
        let one_of: Vec<serde_json::Value> = kinds(generator).into_iter().map(|(names, data)| event_schema(names, data)).collect();
        let schema = serde_json::json!({
            "description": "One event of the stream (each is validated on its own): its `event:` name, `id:` and JSON `data:` line, one of these kinds.",
            "oneOf": one_of,
        });
        let schema: SchemaObject = serde_json::from_value(schema).map_err(|e| rocket_okapi::OpenApiError::new(e.to_string()))?;
        let media = MediaType { schema: Some(schema), ..Default::default() };
        let response = rocket_okapi::okapi::openapi3::Response {
            description: DESCRIPTION.into(),
            content: [("text/event-stream".to_string(), media)].into_iter().collect(),
            ..Default::default()
        };
        let mut r = Responses::default();
        r.responses.insert("200".into(), response.into());
        Ok(r)
    }
}
