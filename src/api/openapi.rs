//! The OpenAPI document: what rocket_okapi generates from the routes, with
//! both ways to send the token and the config schema named.

use rocket_okapi::okapi::openapi3::{OpenApi, RefOr, SecurityRequirement, SecurityScheme, SecuritySchemeData};

use super::auth::BEARER_SCHEME;
use super::routes::routes_and_spec;

/// The OpenAPI document, with both ways to send the token.
pub fn openapi_spec() -> OpenApi {
    let (_, mut spec) = routes_and_spec();
    spec.info.title = "gateway".into();
    spec.info.version = env!("CARGO_PKG_VERSION").into();
    spec.info.description =
        Some("Converges WireGuard network namespaces and nginx ingress to the posted desired state, and accounts traffic per peer.".into());
    let components = spec.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        BEARER_SCHEME.into(),
        RefOr::Object(SecurityScheme {
            description: Some("The token, as `Authorization: Bearer <token>`.".into()),
            data: SecuritySchemeData::Http { scheme: "bearer".into(), bearer_format: None },
            extensions: Default::default(),
        }),
    );
    for item in spec.paths.values_mut() {
        for op in [&mut item.get, &mut item.post, &mut item.patch].into_iter().flatten() {
            if let Some(sec) = op.security.as_mut().filter(|s| !s.is_empty()) {
                let mut bearer = SecurityRequirement::new();
                bearer.insert(BEARER_SCHEME.into(), Vec::new());
                sec.push(bearer);
            }
        }
    }
    name_gateway_config(spec)
}

/// schemars inlines the map behind `GatewayConfig`; give it its name in
/// `components` so clients generate a `GatewayConfig` type.
fn name_gateway_config(spec: OpenApi) -> OpenApi {
    let Ok(mut v) = serde_json::to_value(&spec) else {
        return spec;
    };
    let body = &mut v["paths"]["/api/v1/config.json"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    if body.get("$ref").is_none() && body.is_object() {
        let mut schema = body.take();
        schema["description"] = "The whole desired state: networks keyed by their WireGuard listen port (a decimal string).".into();
        *body = serde_json::json!({ "$ref": "#/components/schemas/GatewayConfig" });
        v["components"]["schemas"]["GatewayConfig"] = schema;
    }
    serde_json::from_value(v).unwrap_or(spec)
}

#[cfg(test)]
mod tests {
    use super::super::auth::TOKEN_SCHEME;
    use super::*;

    #[test]
    fn spec_lists_every_route_and_both_schemes() {
        let spec = serde_json::to_value(openapi_spec()).unwrap();
        for p in ["/health", "/api/v1/config.json", "/api/v1/status.json", "/api/v1/traffic.json", "/metrics"] {
            assert!(spec["paths"].get(p).is_some(), "missing {p}");
        }
        assert!(spec["paths"]["/api/v1/config.json"]["patch"].is_object());
        let schemes = &spec["components"]["securitySchemes"];
        assert_eq!(schemes[TOKEN_SCHEME]["in"], "header");
        assert_eq!(schemes[BEARER_SCHEME]["scheme"], "bearer");
        assert!(spec["paths"]["/health"]["get"].get("security").is_none());
        for name in ["GatewayConfig", "GatewayConfigPartial", "TrafficInfo", "StatusInfo", "ErrorBody", "ApplyResponse", "StoredConfig"] {
            assert!(spec["components"]["schemas"].get(name).is_some(), "schema {name} missing");
        }
        let post = &spec["paths"]["/api/v1/config.json"]["post"];
        assert_eq!(post["requestBody"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/GatewayConfig");
        for code in ["200", "202", "401", "422", "500"] {
            assert!(post["responses"].get(code).is_some(), "POST lacks {code}");
        }
    }
}
