//! Request bodies and response types that need their own handling: JSON
//! whose parse error becomes a JSON 422, the apply answer with its status
//! code, and the metrics text.

use rocket::Data;
use rocket::data::{FromData, Limits};
use rocket::form::{self, DataField, FromForm, ValueField};
use rocket::http::{ContentType, Status};
use rocket::request::Request;
use rocket::response::{self, Responder};
use rocket::serde::json::Json;
use rocket_okapi::r#gen::OpenApiGenerator;
use rocket_okapi::okapi::openapi3::{MediaType, Parameter, ParameterValue, RequestBody, Responses};
use rocket_okapi::okapi::schemars::schema::SchemaObject;
use rocket_okapi::request::{OpenApiFromData, OpenApiFromForm};
use rocket_okapi::response::OpenApiResponderInner;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use super::error::{ApiError, json_responses};
use crate::model::schema::IntRange;
use crate::model::{ApplyResponse, DryRunResponse, Readiness};
use crate::types::truncate;
use crate::validate::Problems;

const TOO_LARGE: &str = "body too large";

/// A body that could not be read: 413 when over the limit, else 422.
pub(super) fn body_error(message: String) -> ApiError {
    if message.starts_with(TOO_LARGE) { ApiError::TooLarge(message) } else { ApiError::Invalid(Problems::one("$", shorten(&message))) }
}

/// serde's message quotes the value it did not expect, whole: a 16 MiB
/// string given for a number would come back in the answer. The middle of
/// a long message goes; its end says where (line and column).
fn shorten(message: &str) -> String {
    const HEAD: usize = 200;
    const TAIL: usize = 80;
    if message.chars().count() <= HEAD + TAIL + 10 {
        return message.to_string();
    }
    let head: String = message.chars().take(HEAD).collect();
    let tail: Vec<char> = message.chars().rev().take(TAIL).collect();
    format!("{head} [...] {}", tail.into_iter().rev().collect::<String>())
}

/// A JSON body whose parse error is reported by the handler as a JSON error
/// with serde's message (line and column), not as Rocket's HTML page. `S`
/// names the body's schema in the OpenAPI document.
pub struct JsonBody<T, S>(pub Result<T, String>, std::marker::PhantomData<S>);

#[rocket::async_trait]
impl<'r, T: DeserializeOwned, S> FromData<'r> for JsonBody<T, S> {
    type Error = ApiError;
    async fn from_data(req: &'r Request<'_>, data: Data<'r>) -> rocket::data::Outcome<'r, Self> {
        // A browser page may POST `text/plain` to any address without asking
        // first (a "simple" request); `application/json` it may not.
        if !req.content_type().is_some_and(|ct| ct.is_json()) {
            return rocket::outcome::Outcome::Error((Status::UnsupportedMediaType, ApiError::UnsupportedMediaType));
        }
        let limit = req.limits().get("json").unwrap_or(Limits::JSON);
        let start = std::time::Instant::now();
        let read = data.open(limit).into_bytes().await;
        let read_ms = start.elapsed().as_secs_f64() * 1000.0;
        let parsed = match read {
            Ok(b) if b.is_complete() => serde_json::from_slice(&b).map_err(|e| format!("body is not a valid configuration: {e}")),
            Ok(_) => Err(format!("{TOO_LARGE}: the limit is {limit}")),
            Err(e) => Err(format!("reading the body: {e}")),
        };
        let parse_ms = start.elapsed().as_secs_f64() * 1000.0 - read_ms;
        tracing::debug!(read_ms = format!("{read_ms:.1}"), parse_ms = format!("{parse_ms:.1}"), "request body read and parsed");
        rocket::outcome::Outcome::Success(JsonBody(parsed, std::marker::PhantomData))
    }
}

impl<'r, T: DeserializeOwned, S: JsonSchema + Send> OpenApiFromData<'r> for JsonBody<T, S> {
    fn request_body(generator: &mut OpenApiGenerator) -> rocket_okapi::Result<RequestBody> {
        let media = MediaType { schema: Some(generator.json_schema::<S>()), ..Default::default() };
        Ok(RequestBody { content: [("application/json".to_string(), media)].into_iter().collect(), required: true, ..Default::default() })
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

/// Answer of `GET /ready`: 200 when ready, else 503, the same shape.
pub struct Ready(pub Readiness);

impl<'r> Responder<'r, 'static> for Ready {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        let status = if self.0.ready { Status::Ok } else { Status::ServiceUnavailable };
        response::Response::build_from(Json(self.0).respond_to(req)?).status(status).ok()
    }
}

impl OpenApiResponderInner for Ready {
    fn responses(generator: &mut OpenApiGenerator) -> rocket_okapi::Result<Responses> {
        json_responses::<Readiness>(
            generator,
            &[
                (200, "ready: the applied generation is the desired one, nginx runs and no network fails"),
                (503, "not ready: `reasons` says why (each with `code` and the failing network's `path`)"),
            ],
        )
    }
}

/// Answer of POST/PATCH: the apply's, or with `?dry_run=true` the dry run's.
pub enum ConfigAnswer {
    Applied(Applied),
    DryRun(DryRunResponse),
}

impl<'r> Responder<'r, 'static> for ConfigAnswer {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        match self {
            ConfigAnswer::Applied(a) => a.respond_to(req),
            ConfigAnswer::DryRun(d) => Json(d).respond_to(req),
        }
    }
}

/// The 200 answer's schema: one of the two shapes (`dry_run` tells them apart).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
#[schemars(rename = "ConfigAnswer")]
enum ConfigAnswerSchema {
    Applied(ApplyResponse),
    DryRun(DryRunResponse),
}

impl OpenApiResponderInner for ConfigAnswer {
    fn responses(generator: &mut OpenApiGenerator) -> rocket_okapi::Result<Responses> {
        let mut r = json_responses::<ConfigAnswerSchema>(
            generator,
            &[(
                200,
                "the system has converged to this generation (an ApplyResponse, `result`: `applied`); with `dry_run=true`, what an apply would do (a DryRunResponse; nothing stored or changed)",
            )],
        )?;
        let pending = json_responses::<ApplyResponse>(
            generator,
            &[(202, "stored; still converging when the wait ended (`result`: `pending`); see status.json")],
        )?;
        r.responses.extend(pending.responses);
        Ok(r)
    }
}

/// The name of a query parameter and every value given for it: the query
/// types below take them all and decide in `finalize`, so a bad value, or
/// one given twice, gets the handler's clear 400.
type Given<'r> = (&'r str, Vec<&'r str>);

fn remember<'r>(given: &mut Given<'r>, field: ValueField<'r>) {
    given.0 = field.name.source().as_str();
    given.1.push(field.value);
}

/// The value given, if any; more than one is an error.
fn single<'r>(name: &str, values: &[&'r str]) -> Result<Option<&'r str>, String> {
    match values {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(format!("`{name}` is given more than once")),
    }
}

/// A query parameter's entry in the OpenAPI document.
fn query_parameter(name: String, schema: SchemaObject, description: Option<&str>, required: bool) -> Parameter {
    Parameter {
        name,
        location: "query".into(),
        description: description.map(Into::into),
        required,
        deprecated: false,
        allow_empty_value: false,
        value: ParameterValue::Schema { style: None, explode: None, allow_reserved: false, schema, example: None, examples: None },
        extensions: Default::default(),
    }
}

/// The `dry_run` query parameter, `true` or `false` (the default). It never
/// fails to parse, so any other value gets the handler's clear 400 (not
/// Rocket's default, nor a silent `false` that would turn a dry run into
/// an apply).
pub struct DryRunFlag(pub Result<bool, String>);

const DRY_RUN_DOC: &str = "`true`: validate as usual (422 on bad input), then answer what an apply would do now (a DryRunResponse), from the same look at the system and the same plan as a real apply; nothing is stored, no generation is made, nothing on the system changes.";

#[rocket::async_trait]
impl<'r> FromForm<'r> for DryRunFlag {
    type Context = Given<'r>;

    fn init(_: form::Options) -> Self::Context {
        ("", Vec::new())
    }

    fn push_value(given: &mut Self::Context, field: ValueField<'r>) {
        remember(given, field);
    }

    async fn push_data(_: &mut Self::Context, _: DataField<'r, '_>) {}

    fn finalize((name, values): Self::Context) -> form::Result<'r, Self> {
        let parsed = single(name, &values).and_then(|value| match value {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(one) => Err(format!("`{name}` must be `true` or `false`, not {:?}", truncate(one))),
        });
        Ok(DryRunFlag(parsed))
    }
}

impl<'r> OpenApiFromForm<'r> for DryRunFlag {
    fn form_multi_parameter(generator: &mut OpenApiGenerator, name: String, _: bool) -> rocket_okapi::Result<Vec<Parameter>> {
        Ok(vec![query_parameter(name, generator.json_schema_no_ref::<bool>(), Some(DRY_RUN_DOC), false)])
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

/// A whole-number query parameter in `MIN..=MAX` (in any spelling JSON
/// Schema calls an integer: `1700000000.0` too), required or not. It never
/// fails to parse, so a bad value gets the handler's clear 400, not Rocket's
/// generic answer; its document entry says exactly that range.
pub struct QueryInt<const MIN: i64, const MAX: i64, const REQUIRED: bool>(pub Result<Option<i64>, String>);

#[rocket::async_trait]
impl<'r, const MIN: i64, const MAX: i64, const REQUIRED: bool> FromForm<'r> for QueryInt<MIN, MAX, REQUIRED> {
    type Context = Given<'r>;

    fn init(_: form::Options) -> Self::Context {
        ("", Vec::new())
    }
    fn push_value(given: &mut Self::Context, field: ValueField<'r>) {
        remember(given, field);
    }
    async fn push_data(_: &mut Self::Context, _: DataField<'r, '_>) {}
    fn finalize((name, values): Self::Context) -> form::Result<'r, Self> {
        let whole = |one: &str| {
            whole_decimal(one)
                .filter(|n| (MIN..=MAX).contains(n))
                .ok_or_else(|| format!("`{name}` must be a whole number from {MIN} to {MAX}, not {:?}", truncate(one)))
        };
        Ok(QueryInt(single(name, &values).and_then(|value| value.map(whole).transpose())))
    }
}

impl<'r, const MIN: i64, const MAX: i64, const REQUIRED: bool> OpenApiFromForm<'r> for QueryInt<MIN, MAX, REQUIRED> {
    fn form_multi_parameter(generator: &mut OpenApiGenerator, name: String, _: bool) -> rocket_okapi::Result<Vec<Parameter>> {
        Ok(vec![query_parameter(name, generator.json_schema_no_ref::<IntRange<MIN, MAX>>(), None, REQUIRED)])
    }
}

/// A whole decimal number that fits an i64, also written with a zero
/// fraction (`1700000000.0`) or an exponent (`1.7e9`): what JSON Schema
/// calls an integer, as clients may print it into a query.
fn whole_decimal(s: &str) -> Option<i64> {
    let unsigned = s.strip_prefix('+').unwrap_or(s);
    let (number, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((n, e)) => (n, e.parse::<i32>().ok().filter(|e| e.abs() <= 40)?),
        None => (unsigned, 0),
    };
    let (int, frac) = match number.split_once('.') {
        Some((_, "")) => return None,
        Some(parts) => parts,
        None => (number, ""),
    };
    if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = format!("{int}{frac}");
    let shift = exponent - frac.len() as i32;
    let (kept, dropped) =
        if shift >= 0 { (digits.as_str(), "") } else { digits.split_at(digits.len().saturating_sub(shift.unsigned_abs() as usize)) };
    if !dropped.bytes().all(|b| b == b'0') {
        return None;
    }
    let kept: i64 = if kept.is_empty() { 0 } else { kept.parse().ok()? };
    kept.checked_mul(10i64.checked_pow(shift.max(0) as u32)?)
}

#[cfg(test)]
mod tests {
    use super::whole_decimal;

    #[test]
    fn whole_decimals() {
        for (text, want) in [
            ("0", 0),
            ("1700000000", 1_700_000_000),
            ("1700000000.0", 1_700_000_000),
            ("1.7e9", 1_700_000_000),
            ("17E8", 1_700_000_000),
            ("+5", 5),
            ("007", 7),
            ("9223372036854775807", i64::MAX),
            ("9223372036854775807.000", i64::MAX),
            ("50e-1", 5),
            ("0.0", 0),
        ] {
            assert_eq!(whole_decimal(text), Some(want), "{text}");
        }
        for bad in ["", "abc", "1.5", "-1", "1e", "e5", ".5", "1.", "9223372036854775808", "1e19", "1e-1", "1_0", " 1", "0x10", "NaN"] {
            assert_eq!(whole_decimal(bad), None, "{bad}");
        }
    }
}
