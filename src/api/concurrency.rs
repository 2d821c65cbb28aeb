//! Optimistic concurrency: GET config.json answers `ETag: "<generation>"`,
//! and a POST or PATCH with `If-Match: "<generation>"` is refused (412)
//! when the stored generation is another, so two orchestrators (or one
//! retrying) never overwrite a state they did not read.

use rocket::request::{FromRequest, Outcome, Request};
use rocket::response::{self, Responder};
use rocket::serde::json::Json;
use rocket_okapi::r#gen::OpenApiGenerator;
use rocket_okapi::okapi::openapi3::{Header, ParameterValue, RefOr, Responses};
use rocket_okapi::request::{OpenApiFromRequest, RequestHeaderInput};
use rocket_okapi::response::OpenApiResponderInner;
use schemars::JsonSchema;
use serde::Serialize;

use crate::types::truncate;

/// The entity tag of a generation: the number, quoted (a strong tag).
pub fn etag(generation: i64) -> String {
    format!("\"{generation}\"")
}

/// What `If-Match` asks for: `None` when absent or `*` (any stored state
/// will do). It never fails to parse, so a bad value gets the handler's 400.
pub struct IfMatch(pub Result<Option<i64>, String>);

/// `"N"` (a generation as GET config.json tagged it) or `*`.
fn parse_if_match(value: &str) -> Result<Option<i64>, String> {
    let value = value.trim();
    if value == "*" {
        return Ok(None);
    }
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .filter(|n| !n.is_empty() && n.len() <= 18 && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| {
            format!(
                "header If-Match must be the ETag of GET /api/v1/config.json, a quoted generation like \"7\" (or *), not {:?}",
                truncate(value)
            )
        })
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for IfMatch {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let mut values = req.headers().get("If-Match");
        let parsed = match (values.next(), values.next()) {
            (None, _) => Ok(None),
            (Some(one), None) => parse_if_match(one),
            (Some(_), Some(_)) => Err("header If-Match is given more than once: give one generation".into()),
        };
        Outcome::Success(IfMatch(parsed))
    }
}

impl OpenApiFromRequest<'_> for IfMatch {
    fn from_request_input(generator: &mut OpenApiGenerator, _: String, _: bool) -> rocket_okapi::Result<RequestHeaderInput> {
        Ok(super::openapi::optional_header(
            generator,
            "If-Match",
            "^(\"[0-9]{1,18}\"|\\*)$",
            "The `ETag` of GET /api/v1/config.json (`\"<generation>\"`): the change is made only if that generation is still the stored one, else `412 precondition_failed` and nothing changes. Absent or `*`: no check.",
        ))
    }
}

/// A JSON answer tagged with the generation it shows (`ETag`).
pub struct Tagged<T>(pub i64, pub T);

impl<'r, T: Serialize> Responder<'r, 'static> for Tagged<T> {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        response::Response::build_from(Json(self.1).respond_to(req)?).raw_header("ETag", etag(self.0)).ok()
    }
}

impl<T: Serialize + JsonSchema + Send> OpenApiResponderInner for Tagged<T> {
    fn responses(generator: &mut OpenApiGenerator) -> rocket_okapi::Result<Responses> {
        let mut r = <Json<T> as OpenApiResponderInner>::responses(generator)?;
        for response in r.responses.values_mut() {
            if let RefOr::Object(response) = response {
                let schema = generator.json_schema_no_ref::<String>();
                let header = Header {
                    description: Some("`\"<generation>\"`: send it back as `If-Match` to change exactly this state.".into()),
                    required: true,
                    deprecated: false,
                    allow_empty_value: false,
                    value: ParameterValue::Schema {
                        style: None,
                        explode: None,
                        allow_reserved: false,
                        schema,
                        example: None,
                        examples: None,
                    },
                    extensions: Default::default(),
                };
                response.headers.insert("ETag".into(), RefOr::Object(header));
            }
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_values() {
        assert_eq!(parse_if_match("\"7\""), Ok(Some(7)));
        assert_eq!(parse_if_match(" \"0\" "), Ok(Some(0)));
        assert_eq!(parse_if_match("*"), Ok(None));
        for bad in ["7", "W/\"7\"", "\"\"", "\"-1\"", "\"7\", \"8\"", "\"1e3\"", "\"9999999999999999999\"", ""] {
            assert!(parse_if_match(bad).is_err(), "{bad}");
        }
        assert_eq!(etag(12), "\"12\"");
    }
}
