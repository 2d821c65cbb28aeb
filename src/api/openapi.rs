//! The OpenAPI document. rocket_okapi generates it from the routes and the
//! model's schemas, as JSON Schema 2020-12 (OpenAPI 3.1), so the patterns
//! and `propertyNames` of `model::schema` state exactly what the server
//! accepts. [`finish`] is the one step after generation: what the routes
//! cannot tell rocket_okapi (the version, both token schemes, which error
//! statuses each operation really answers, 405 and the rules that span values).

use rocket_okapi::r#gen::OpenApiGenerator;
use rocket_okapi::okapi::openapi3::{
    OpenApi, Operation, Parameter, ParameterValue, RefOr, SecurityRequirement, SecurityScheme, SecuritySchemeData,
};
use rocket_okapi::request::RequestHeaderInput;
use rocket_okapi::settings::OpenApiSettings;
use schemars::r#gen::SchemaSettings;

use super::auth::BEARER_SCHEME;
use super::routes::routes_and_spec;

/// The OpenAPI document of the API.
pub fn openapi_spec() -> OpenApi {
    finish(routes_and_spec().1)
}

/// An optional request header whose value is a string matching `pattern`,
/// as a request guard describes itself to rocket_okapi.
pub(super) fn optional_header(generator: &mut OpenApiGenerator, name: &str, pattern: &str, description: &str) -> RequestHeaderInput {
    let mut schema = generator.json_schema_no_ref::<String>();
    schema.string().pattern = Some(pattern.into());
    let value = ParameterValue::Schema { style: None, explode: None, allow_reserved: false, schema, example: None, examples: None };
    RequestHeaderInput::Parameter(Parameter {
        name: name.into(),
        location: "header".into(),
        description: Some(description.into()),
        required: false,
        deprecated: false,
        allow_empty_value: false,
        value,
        extensions: Default::default(),
    })
}

/// JSON Schema 2020-12 (what OpenAPI 3.1 uses) with schemas in `components`.
pub(super) fn settings() -> OpenApiSettings {
    let schema_settings = SchemaSettings::draft2019_09().with(|s| {
        s.definitions_path = "#/components/schemas/".into();
        s.meta_schema = None;
    });
    OpenApiSettings { schema_settings, ..OpenApiSettings::default() }
}

/// The error statuses each operation answers (by operation id), besides
/// its successes; what they mean is `error::ERROR_STATUSES`.
const ERRORS: &[(&str, &[u16])] = &[
    ("health", &[]),
    ("ready", &[503]),
    ("post_config", &[400, 401, 403, 412, 413, 415, 421, 422, 500, 503, 507]),
    ("patch_config", &[400, 401, 403, 412, 413, 415, 421, 422, 500, 503, 507]),
    ("get_config", &[401, 403, 421, 500]),
    ("status", &[401, 421, 500]),
    ("traffic", &[400, 401, 421, 422, 500]),
    ("metrics", &[401, 421, 500]),
    ("events", &[400, 401, 421]),
];

const DESCRIPTION: &str = "Converges WireGuard network namespaces and nginx ingress to the posted desired state, and accounts traffic per peer.

Every route but `/health` and `/ready` needs a token: `Token: <token>` or `Authorization: Bearer <token>`. The admin token opens every route; a read token opens status.json, traffic.json, /metrics and the event stream, and gets `403` (`forbidden`) on config.json (it holds private keys) and on every write. A write needs `Content-Type: application/json` (else `415`, `unsupported_media_type`). Without any token configured (loopback only), a request whose `Host` names neither loopback nor the API's address gets `421` (`misdirected_request`). Every error is an `ErrorBody`. A known path asked with a method it does not have answers `405` (`method_not_allowed`) with an `Allow` header listing its methods; an unknown path answers `404` (`not_found`).

The schemas give each value its exact form. The server also checks the rules that span values, which a schema cannot state, and answers `422` with the JSON path of each problem:
- `listen_port`, when given, equals the network's key (it is `readOnly`: the key says the port, so a client need not send it);
- no two networks have the same private key; no peer has the network's own public key;
- an interface address appears once in a network; an allowed IP belongs to one peer of the network;
- no address, allowed IP, upstream or peer endpoint (also in its IPv4-mapped form) lies inside the gateway's bridge subnet (`--bridge-subnet`, default 10.199.0.0/16);
- each upstream lies inside its network (one of the network's addresses or a peer's allowed IPs covers it); no URL is given twice (with and without a trailing `/`);
- a hostname is served by one network only, whatever the scheme, and not by a `--custom-forwarding`;
- `proxy_protocol: true` only on `https://` and `tcp://` entries (nginx cannot send the header to an HTTP reverse proxy's upstream, and PROXY v1 has no UDP form);
- a `tcp://PORT` or `udp://PORT` port is owned by one network (its `tcp://` and `udp://` may share it) and is none of the gateway's own ports: the HTTPS and HTTP listeners, the API port, a network's WireGuard listen port, a `--custom-forwarding` upstream's port.
- the caps on lists, options of the daemon: networks (`--max-networks`, 4096 by default), peers per network (`--max-peers`, 4096), allowed IPs per peer and addresses per network (`--max-allowed-ips`, 1024), proxy entries per network (`--max-routes`, 1024), distinct upstreams per network and entries per upstream list (`--max-upstreams`, 1000).
A PATCH is checked as the whole state it would make. An error lists at most 100 details; `total` says how many there were.
traffic.json's `end`, when given, is not before its `start` (else `422`, `invalid_query`, with the path `$.end`).";

/// The one step after generation; see the module's documentation.
fn finish(mut spec: OpenApi) -> OpenApi {
    spec.openapi = "3.1.0".into();
    spec.info.title = "gateway".into();
    spec.info.version = env!("CARGO_PKG_VERSION").into();
    spec.info.description = Some(DESCRIPTION.into());
    let components = spec.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        BEARER_SCHEME.into(),
        RefOr::Object(SecurityScheme {
            description: Some("The token, as `Authorization: Bearer <token>`.".into()),
            data: SecuritySchemeData::Http { scheme: "bearer".into(), bearer_format: None },
            extensions: Default::default(),
        }),
    );
    if let Some(network) = components.schemas.get_mut("NetworkConfig") {
        proxy_needs_ipv4(network);
    }
    for item in spec.paths.values_mut() {
        for op in [&mut item.get, &mut item.post, &mut item.patch].into_iter().flatten() {
            add_bearer(op);
            keep_own_errors(op);
        }
    }
    spec
}

/// The one rule across a network's fields that JSON Schema can state and
/// schemars cannot derive: proxy entries need an IPv4 address (nginx
/// reaches the network over IPv4).
fn proxy_needs_ipv4(network: &mut schemars::schema::SchemaObject) {
    let ipv4 = serde_json::json!({ "pattern": "^[0-9.]+/" });
    network.extensions.insert("if".into(), serde_json::json!({ "required": ["proxy"], "properties": { "proxy": { "minProperties": 1 } } }));
    network
        .extensions
        .insert("then".into(), serde_json::json!({ "required": ["address"], "properties": { "address": { "contains": ipv4 } } }));
}

/// Either token header may carry the token.
fn add_bearer(op: &mut Operation) {
    if let Some(sec) = op.security.as_mut().filter(|s| !s.is_empty()) {
        let mut bearer = SecurityRequirement::new();
        bearer.insert(BEARER_SCHEME.into(), Vec::new());
        sec.push(bearer);
    }
}

/// Drops the error statuses this operation never answers.
fn keep_own_errors(op: &mut Operation) {
    let own = ERRORS.iter().find(|(id, _)| op.operation_id.as_deref() == Some(*id)).map(|(_, codes)| *codes);
    if let Some(own) = own {
        op.responses.responses.retain(|code, _| code.parse::<u16>().is_ok_and(|c| c < 400 || own.contains(&c)));
    }
}

#[cfg(test)]
mod tests {
    use super::super::auth::TOKEN_SCHEME;
    use super::*;

    #[test]
    fn spec_lists_every_route_and_both_schemes() {
        let spec = serde_json::to_value(openapi_spec()).unwrap();
        assert_eq!(spec["openapi"], "3.1.0");
        for p in ["/health", "/api/v1/config.json", "/api/v1/status.json", "/api/v1/traffic.json", "/metrics", "/api/v1/events"] {
            assert!(spec["paths"].get(p).is_some(), "missing {p}");
        }
        assert!(spec["paths"]["/api/v1/config.json"]["patch"].is_object());
        let schemes = &spec["components"]["securitySchemes"];
        assert_eq!(schemes[TOKEN_SCHEME]["in"], "header");
        assert_eq!(schemes[BEARER_SCHEME]["scheme"], "bearer");
        assert!(spec["paths"]["/health"]["get"].get("security").is_none());
        assert!(spec["paths"]["/ready"]["get"].get("security").is_none(), "readiness needs no token");
        for name in ["GatewayConfig", "GatewayConfigPartial", "TrafficInfo", "StatusInfo", "ErrorBody", "ApplyResponse", "StoredConfig"] {
            assert!(spec["components"]["schemas"].get(name).is_some(), "schema {name} missing");
        }
        let post = &spec["paths"]["/api/v1/config.json"]["post"];
        assert_eq!(post["requestBody"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/GatewayConfig");
    }

    #[test]
    fn each_operation_lists_the_errors_it_answers() {
        let spec = serde_json::to_value(openapi_spec()).unwrap();
        let mut seen = 0;
        for (path, item) in spec["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap();
                let (_, own) = ERRORS.iter().find(|(i, _)| *i == id).unwrap_or_else(|| panic!("{method} {path}: {id} not in ERRORS"));
                let codes: Vec<u16> =
                    op["responses"].as_object().unwrap().keys().map(|c| c.parse().unwrap()).filter(|c| *c >= 400).collect();
                assert_eq!(&codes, own, "{method} {path}");
                seen += 1;
            }
        }
        assert_eq!(seen, ERRORS.len(), "every operation of ERRORS exists");
        let get = &spec["paths"]["/api/v1/traffic.json"]["get"];
        assert_eq!(get["parameters"][0]["required"], true, "start is required: {get}");
        assert_eq!(get["parameters"][0]["schema"]["minimum"], 0, "{get}");
    }

    #[test]
    fn config_writes_describe_the_dry_run() {
        let spec = serde_json::to_value(openapi_spec()).unwrap();
        for method in ["post", "patch"] {
            let op = &spec["paths"]["/api/v1/config.json"][method];
            let param = op["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "dry_run").expect("dry_run parameter");
            assert_eq!((&param["in"], &param["schema"]["type"]), (&"query".into(), &"boolean".into()));
            assert_ne!(param["required"], true);
            let ok = &op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(ok, "#/components/schemas/ConfigAnswer", "{method}");
            let pending = &op["responses"]["202"]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(pending, "#/components/schemas/ApplyResponse", "{method}");
        }
        let answer = spec["components"]["schemas"]["ConfigAnswer"].to_string();
        assert!(answer.contains("DryRunResponse") && answer.contains("ApplyResponse"), "{answer}");
        let dry = &spec["components"]["schemas"]["DryRunResponse"];
        for field in ["dry_run", "generation", "changes", "shared", "nginx_reload", "removed", "errors"] {
            assert!(dry["required"].as_array().unwrap().contains(&field.into()), "{field}: {dry}");
        }
        assert_eq!(dry["properties"]["changes"]["propertyNames"]["$ref"], "#/components/schemas/ListenPortKey");
    }

    #[test]
    fn the_event_stream_is_described_with_its_events_and_data() {
        let spec = serde_json::to_value(openapi_spec()).unwrap();
        let get = &spec["paths"]["/api/v1/events"]["get"];
        let ok = &get["responses"]["200"];
        assert!(ok["content"]["text/event-stream"].is_object(), "{ok}");
        let text = ok["description"].as_str().unwrap();
        for name in [
            "`apply`",
            "`drift_repaired`",
            "`peer_connected`",
            "`peer_disconnected`",
            "`route_failed`",
            "`store_error`",
            "`upstream_down`",
            "`role_changed`",
            "Last-Event-ID",
            "`id:`",
        ] {
            assert!(text.contains(name), "{name} missing: {text}");
        }
        // Each event as a validator sees it (OpenAPI 3.1: the schema of a
        // `text/event-stream` describes one event): its name, its id, and
        // its data, JSON of the event's schema.
        let kinds = ok["content"]["text/event-stream"]["schema"]["oneOf"].as_array().expect("one schema per kind of event");
        let kind = |name: &str| {
            kinds
                .iter()
                .find(|k| {
                    k["properties"]["event"]["const"] == name
                        || k["properties"]["event"]["enum"].as_array().is_some_and(|e| e.contains(&name.into()))
                })
                .unwrap_or_else(|| panic!("no schema for the event {name}"))
        };
        for (name, data) in [
            ("apply", "ApplyEvent"),
            ("drift_repaired", "DriftRepairedEvent"),
            ("peer_connected", "PeerEvent"),
            ("peer_disconnected", "PeerEvent"),
            ("route_failed", "RouteFailedEvent"),
            ("store_error", "StoreErrorEvent"),
            ("upstream_down", "UpstreamEvent"),
            ("upstream_up", "UpstreamEvent"),
            ("events_lost", "EventsLostEvent"),
            ("role_changed", "RoleChangedEvent"),
        ] {
            let k = kind(name);
            assert_eq!(k["properties"]["data"]["contentMediaType"], "application/json", "{name}: {k}");
            assert_eq!(k["properties"]["data"]["contentSchema"]["$ref"], format!("#/components/schemas/{data}"), "{name}");
            let required = k["required"].as_array().unwrap();
            assert!(required.contains(&"event".into()) && required.contains(&"data".into()), "{name}: {k}");
            assert_eq!(required.contains(&"id".into()), name != "events_lost", "{name}: only events_lost has no id");
        }
        assert_eq!(kinds.len(), 8, "one schema per data type");
        let header = get["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "Last-Event-ID").expect("the header");
        assert_eq!(header["in"], "header");
        let schemas = &spec["components"]["schemas"];
        for (name, field) in [
            ("ApplyEvent", "generation"),
            ("DriftRepairedEvent", "repaired"),
            ("PeerEvent", "peer_public_key"),
            ("RouteFailedEvent", "route"),
            ("StoreErrorEvent", "disk_full"),
            ("UpstreamEvent", "upstream"),
            ("RoleChangedEvent", "role"),
        ] {
            assert!(schemas[name]["properties"][field].is_object(), "{name}: {}", schemas[name]);
        }
    }

    #[test]
    fn values_and_keys_have_their_exact_forms() {
        let spec = serde_json::to_value(openapi_spec()).unwrap();
        let schemas = &spec["components"]["schemas"];
        let config = &schemas["GatewayConfig"];
        assert_eq!(config["propertyNames"]["$ref"], "#/components/schemas/ListenPortKey");
        assert_eq!(config["additionalProperties"]["$ref"], "#/components/schemas/NetworkConfig");
        let net = &schemas["NetworkConfig"];
        assert_eq!(net["additionalProperties"], false, "unknown fields are refused");
        let mtu = &net["properties"]["mtu"];
        assert_eq!((&mtu["minimum"], &mtu["maximum"], &mtu["type"]), (&1280.into(), &9000.into(), &serde_json::json!(["integer", "null"])));
        assert_eq!(net["properties"]["peers"]["propertyNames"]["$ref"], "#/components/schemas/WireGuardKey");
        assert_eq!(net["properties"]["proxy"]["propertyNames"]["$ref"], "#/components/schemas/ProxyKey");
        assert_eq!(net["properties"]["proxy"]["additionalProperties"]["$ref"], "#/components/schemas/ProxyTarget");
        let forms = &schemas["ProxyTarget"]["anyOf"];
        assert_eq!(forms[0]["minItems"], 1, "the list form: {forms}");
        assert_eq!(forms[1]["$ref"], "#/components/schemas/ProxyOptions", "the object form: {forms}");
        let object = &schemas["ProxyOptions"];
        assert_eq!((&object["additionalProperties"], &object["required"]), (&false.into(), &serde_json::json!(["upstreams"])));
        assert_eq!(object["properties"]["proxy_protocol"]["type"], "boolean");
        assert_eq!(object["properties"]["upstreams"]["minItems"], 1);
        let key = schemas["ProxyKey"]["pattern"].as_str().unwrap();
        assert!(key.contains("(?:tcp|udp)://"), "{key}");
        assert_eq!(schemas["PeerConfig"]["additionalProperties"], false);
        assert_eq!(net["then"]["properties"]["address"]["contains"]["pattern"], "^[0-9.]+/", "proxy entries need an IPv4 address");
        for name in ["WireGuardKey", "ListenPortKey", "InterfaceAddress", "AllowedIp", "Endpoint", "ProxyKey", "Upstream"] {
            assert!(schemas[name]["pattern"].as_str().is_some_and(|p| p.starts_with('^') && p.ends_with('$')), "{name}");
        }
        // listen_port: output only (a schema cannot tie a value to its key).
        let listen_port = &schemas["NetworkConfig"]["properties"]["listen_port"];
        assert_eq!(listen_port["readOnly"], true, "{listen_port}");
        assert_eq!((listen_port["minimum"].clone(), listen_port["maximum"].clone()), (2.into(), 65534.into()));
        let partial = &schemas["GatewayConfigPartial"]["additionalProperties"];
        assert!(partial.to_string().contains("null"), "null removes a network: {partial}");
    }
}
