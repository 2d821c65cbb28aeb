//! JSON shapes of the API (CONTRACT.md §2). These are what the orchestrator
//! sends and reads; they are deliberately loose (strings everywhere) so that a
//! bad value reaches `validate`, which reports every problem with its path,
//! instead of failing in serde with only the first one.

//!
//! Their schemas in the OpenAPI document are exact: each string field and
//! map key borrows the pattern of what the validator accepts ([`schema`]).

pub mod events;
pub mod schema;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use schemars::r#gen::SchemaGenerator;
use schemars::schema::Schema;
use serde::{Deserialize, Serialize};

use schema::{
    AccessCidr, AllowedIp, Endpoint, HaRole, IntRange, InterfaceAddress, Keyed, ListenPortField, ListenPortKey, NonEmpty, ProxyKey,
    Sha256Hex, Upstream, WireGuardKey,
};

/// The whole desired state, keyed by the network's WireGuard listen port.
pub type GatewayConfig = BTreeMap<String, NetworkConfig>;

/// A partial update: a `null` value removes that network.
pub type GatewayConfigPartial = BTreeMap<String, Option<NetworkConfig>>;

/// The schema of [`GatewayConfig`], named in the document.
pub struct GatewayConfigSchema;

impl JsonSchema for GatewayConfigSchema {
    fn schema_name() -> String {
        "GatewayConfig".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = Keyed::<ListenPortKey, NetworkConfig>::json_schema(generator).into_object();
        let meta = schema.metadata();
        meta.description = Some("The whole desired state: networks keyed by their WireGuard listen port (a decimal string).".into());
        meta.examples = vec![example_config()];
        schema.into()
    }
}

/// The schema of [`GatewayConfigPartial`], named in the document.
pub struct GatewayConfigPartialSchema;

impl JsonSchema for GatewayConfigPartialSchema {
    fn schema_name() -> String {
        "GatewayConfigPartial".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = Keyed::<ListenPortKey, Option<NetworkConfig>>::json_schema(generator).into_object();
        schema.metadata().description =
            Some("A partial update keyed by listen port: each listed network is replaced, a `null` value removes that network.".into());
        schema.into()
    }
}

/// A configuration the server accepts, shown in the document (and sent by
/// fuzzers as their first positive case).
fn example_config() -> serde_json::Value {
    serde_json::json!({
        "51820": {
            "private_key": "0EtpYOfpZyKaIcpkq+KO/+joyV431f1X99CcB2OMo3c=",
            "mtu": 1420,
            "address": ["10.80.0.1/16"],
            "peers": {
                "OxvFhrgLnI9e4xzMMA2qQ7wm/xCUzxaWW5cb1JGkWSA=": {
                    "allowed_ips": ["10.80.0.2/32"],
                    "endpoint": "203.0.113.7:41213",
                    "persistent_keepalive": 25
                }
            },
            "proxy": {
                "https://app.example.com": ["10.80.0.2:443"],
                "http://app.example.com": ["10.80.0.2:80"],
                "https://shop.example.com": {"upstreams": ["10.80.0.2:8443"], "proxy_protocol": true},
                "tcp://2222": {"upstreams": ["10.80.0.2:22"], "proxy_protocol": false},
                "udp://27015": ["10.80.0.2:27015"]
            }
        }
    })
}

/// An optional whole number, also written with a zero fraction (`1420.0`)
/// or an exponent (`1.42e3`): JSON Schema calls those integers too, and
/// some JSON encoders write every number so.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else { return Ok(None) };
    let whole = match (n.as_u64(), n.as_f64()) {
        (Some(u), _) => u32::try_from(u).ok(),
        (None, Some(f)) if f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f) => Some(f as u32),
        _ => None,
    };
    whole.map(Some).ok_or_else(|| serde::de::Error::custom(format!("{n} is not a whole number 0..=4294967295")))
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Base64 WireGuard private key of the gateway's interface in this
    /// network; no two networks may have the same.
    #[schemars(with = "WireGuardKey")]
    pub private_key: String,
    /// Output only: the network's key is its listen port. A client need not
    /// send it; one that does must send the key (else 422), as JSON Schema
    /// cannot state that a value equals its key.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole_number")]
    #[schemars(with = "Option<ListenPortField>")]
    pub listen_port: Option<u32>,
    /// Interface MTU, 1280..=9000; defaults to 1420.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole_number")]
    #[schemars(with = "Option<IntRange<1280, 9000>>")]
    pub mtu: Option<u32>,
    /// Addresses of the gateway's interface, e.g. `10.80.0.1/16`; a network
    /// with proxy entries needs an IPv4 one.
    #[serde(default)]
    #[schemars(with = "Vec<InterfaceAddress>")]
    pub address: Vec<String>,
    /// Peers keyed by their base64 public key (not the network's own).
    #[serde(default)]
    #[schemars(with = "Keyed<WireGuardKey, PeerConfig>")]
    pub peers: BTreeMap<String, PeerConfig>,
    /// `https://HOST` (TLS passthrough by SNI), `http://HOST` (reverse proxy
    /// by Host), `tcp://PORT` or `udp://PORT` (a raw port on the gateway
    /// host) mapped to upstreams `IP:PORT` inside the network (at most
    /// `--max-upstreams`, 1000 by default, distinct upstreams per network): a list of upstreams, or an object
    /// that also asks for a PROXY protocol header (https:// and tcp:// only).
    #[serde(default)]
    #[schemars(with = "Keyed<ProxyKey, ProxyTarget>")]
    pub proxy: BTreeMap<String, ProxyTarget>,
    /// Aggregate bandwidth of all the network's routes together (each route
    /// may also have its own), shaped with tc on the network's veth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Bandwidth>")]
    pub bandwidth: Option<serde_json::Value>,
}

/// A proxy entry's value: the list form (no PROXY protocol) or the object
/// form. Anything else is kept in outline, for `validate` to say exactly
/// what is wrong with it and where (serde could only say "no variant").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ProxyTarget {
    Upstreams(Vec<String>),
    Options(ProxyOptions),
    /// The outline of a value of neither form: an upstream list's strings
    /// as they came and `null` for any other item, an object's
    /// `proxy_protocol` if a boolean, `null` for everything else.
    Invalid(serde_json::Value),
    /// An upstream list longer than any `--max-upstreams` allows
    /// ([`MAX_UPSTREAMS_CEILING`]): only its length is kept; `object` if it
    /// is the object form's `upstreams`.
    TooLong {
        upstreams: usize,
        object: bool,
    },
    /// The object form's `allow` or `deny` (`field`) longer than
    /// [`MAX_UPSTREAMS_CEILING`]: only its length is kept.
    TooLongList {
        field: String,
        len: usize,
    },
}

/// The most `--max-upstreams` may be set to: each upstream takes one of the
/// 10,000 DNAT ports after `--dnat-port-base`.
pub const MAX_UPSTREAMS_CEILING: usize = 10_000;

/// Read in one pass, keeping only what `validate` reports on: not
/// `#[serde(untagged)]`, which first copies the whole value into a buffer
/// and then tries each form on the copy (a million-item list cost seconds
/// and a copy per item).
impl<'de> Deserialize<'de> for ProxyTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(outline::TargetVisitor)
    }
}

mod outline {
    use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    use super::{MAX_UPSTREAMS_CEILING, ProxyOptions, ProxyTarget};

    /// A list item: a string, boolean or number as it came, an empty list or
    /// object for a list or object (read, not kept), `null` for `null`.
    pub(super) struct Item(pub Value);

    impl<'de> Deserialize<'de> for Item {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(ItemVisitor { keep_strings: true }).map(Item)
        }
    }

    /// A list item only counted: read to its end like [`Item`] (with the
    /// parser's nesting limit) but a string is not copied.
    struct Skip;

    impl<'de> Deserialize<'de> for Skip {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(ItemVisitor { keep_strings: false }).map(|_| Skip)
        }
    }

    struct ItemVisitor {
        keep_strings: bool,
    }

    impl<'de> Visitor<'de> for ItemVisitor {
        type Value = Value;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
            Ok(if self.keep_strings { Value::String(v.to_string()) } else { Value::Null })
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
            Ok(if self.keep_strings { Value::String(v) } else { Value::Null })
        }
        fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Value, E> {
            Ok(Value::Bool(b))
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Value, E> {
            Ok(Value::from(n))
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Value, E> {
            Ok(Value::from(n))
        }
        fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Value, E> {
            Ok(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        // Nested values are read as items too, not skipped with
        // `IgnoredAny`: serde_json skips without its nesting limit, so 16 MiB
        // of `[[[[...` would be read to its end instead of refused at 128.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            while seq.next_element::<Skip>()?.is_some() {}
            Ok(Value::Array(Vec::new()))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            while map.next_entry::<IgnoredAny, Skip>()?.is_some() {}
            Ok(Value::Object(serde_json::Map::new()))
        }
    }

    /// A value one level deep: a list's items and an object's fields as
    /// [`Item`]s, a scalar as it came. What `validate` needs to report on
    /// `allow`, `deny`, the connection limits and `bandwidth` with the path
    /// of each item.
    /// A list longer than [`MAX_UPSTREAMS_CEILING`] keeps its first items
    /// only, with its length.
    pub(super) struct Loose(pub Value, pub usize);

    impl<'de> Deserialize<'de> for Loose {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(LooseVisitor).map(|(v, len)| Loose(v, len))
        }
    }

    struct LooseVisitor;

    impl<'de> Visitor<'de> for LooseVisitor {
        type Value = (Value, usize);
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(Value, usize), E> {
            Ok((Value::String(v.to_string()), 0))
        }
        fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<(Value, usize), E> {
            Ok((Value::Bool(b), 0))
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<(Value, usize), E> {
            Ok((Value::from(n), 0))
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<(Value, usize), E> {
            Ok((Value::from(n), 0))
        }
        fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<(Value, usize), E> {
            Ok((serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number), 0))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<(Value, usize), E> {
            Ok((Value::Null, 0))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(Value, usize), A::Error> {
            items(seq).map(|(items, len)| (Value::Array(items), len))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(Value, usize), A::Error> {
            let mut fields = serde_json::Map::new();
            while let Some((key, Item(v))) = map.next_entry::<String, Item>()? {
                fields.insert(key, v);
            }
            Ok((Value::Object(fields), 0))
        }
    }

    /// An upstream list in outline: its first items (or `null` if not a
    /// list) and its length (see [`items`]).
    struct List(Value, usize);

    impl<'de> Deserialize<'de> for List {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(ListVisitor).map(|(items, len)| List(items, len))
        }
    }

    struct ListVisitor;

    impl<'de> Visitor<'de> for ListVisitor {
        type Value = (Value, usize);
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(Value, usize), A::Error> {
            items(seq).map(|(items, len)| (Value::Array(items), len))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(Value, usize), A::Error> {
            ItemVisitor { keep_strings: false }.visit_map(map).map(|v| (v, 0))
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(Value, usize), E> {
            Ok((Value::Null, 0))
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(Value, usize), E> {
            Ok((Value::Null, 0))
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(Value, usize), E> {
            Ok((Value::Null, 0))
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(Value, usize), E> {
            Ok((Value::Null, 0))
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(Value, usize), E> {
            Ok((Value::Null, 0))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<(Value, usize), E> {
            Ok((Value::Null, 0))
        }
    }

    /// An upstream list's first items and its length: no `--max-upstreams`
    /// allows more than [`MAX_UPSTREAMS_CEILING`], so a longer list is refused
    /// whatever its items are and the rest are only counted (4 M one-letter
    /// strings, kept, cost a second of allocations).
    fn items<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(Vec<Value>, usize), A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while items.len() < MAX_UPSTREAMS_CEILING {
            match seq.next_element()? {
                Some(Item(v)) => items.push(v),
                None => {
                    let total = items.len();
                    return Ok((items, total));
                }
            }
        }
        let mut total = items.len();
        while seq.next_element::<Skip>()?.is_some() {
            total += 1;
        }
        Ok((items, total))
    }

    /// The strings of an outline list, if every item is one.
    fn strings(items: &[Value]) -> Option<Vec<String>> {
        items.iter().map(|v| v.as_str().map(str::to_string)).collect()
    }

    pub(super) struct TargetVisitor;

    impl<'de> Visitor<'de> for TargetVisitor {
        type Value = ProxyTarget;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of upstreams or an object {\"upstreams\": [...], \"proxy_protocol\": bool}")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<ProxyTarget, A::Error> {
            let (items, len) = items(seq)?;
            if len > items.len() {
                return Ok(ProxyTarget::TooLong { upstreams: len, object: false });
            }
            Ok(strings(&items).map_or(ProxyTarget::Invalid(Value::Array(items)), ProxyTarget::Upstreams))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ProxyTarget, A::Error> {
            let mut fields = serde_json::Map::new();
            // The length of an `upstreams` list too long to keep (the last
            // `upstreams` key counts, as for the other fields).
            let mut too_long = None;
            // The same for an `allow` or `deny` list.
            let mut limit_too_long = None;
            while let Some(key) = map.next_key::<String>()? {
                let value = match key.as_str() {
                    "upstreams" => {
                        let List(items, len) = map.next_value()?;
                        too_long = (len > items.as_array().map_or(0, Vec::len)).then_some(len);
                        items
                    }
                    "proxy_protocol" => map.next_value::<Item>()?.0,
                    k if ProxyOptions::LIMIT_FIELDS.contains(&k) => {
                        let Loose(v, len) = map.next_value()?;
                        if len > v.as_array().map_or(0, Vec::len) {
                            limit_too_long = Some((key.clone(), len));
                        }
                        v
                    }
                    _ => map.next_value::<Item>().map(|_| Value::Null)?,
                };
                fields.insert(key, value);
            }
            if let Some(upstreams) = too_long {
                return Ok(ProxyTarget::TooLong { upstreams, object: true });
            }
            if let Some((field, len)) = limit_too_long {
                return Ok(ProxyTarget::TooLongList { field, len });
            }
            let known = fields.keys().all(|k| ProxyOptions::FIELDS.contains(&k.as_str()));
            let upstreams = fields.get("upstreams").and_then(Value::as_array).and_then(|a| strings(a));
            let proxy_protocol = match fields.get("proxy_protocol") {
                None => Some(false),
                Some(v) => v.as_bool(),
            };
            // `validate` checks these with the path of each item, whatever they are.
            let limit = |name: &str| fields.get(name).filter(|v| !v.is_null()).cloned();
            let (allow, deny, bandwidth) = (limit("allow"), limit("deny"), limit("bandwidth"));
            let (max_connections, max_connections_per_client) = (limit("max_connections"), limit("max_connections_per_client"));
            Ok(match (known, upstreams, proxy_protocol) {
                (true, Some(upstreams), Some(proxy_protocol)) => ProxyTarget::Options(ProxyOptions {
                    upstreams,
                    proxy_protocol,
                    allow,
                    deny,
                    max_connections,
                    max_connections_per_client,
                    bandwidth,
                }),
                _ => ProxyTarget::Invalid(Value::Object(fields)),
            })
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<ProxyTarget, E> {
            Ok(ProxyTarget::Invalid(Value::Null))
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<ProxyTarget, E> {
            Ok(ProxyTarget::Invalid(Value::Null))
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<ProxyTarget, E> {
            Ok(ProxyTarget::Invalid(Value::Null))
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<ProxyTarget, E> {
            Ok(ProxyTarget::Invalid(Value::Null))
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<ProxyTarget, E> {
            Ok(ProxyTarget::Invalid(Value::Null))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<ProxyTarget, E> {
            Ok(ProxyTarget::Invalid(Value::Null))
        }
    }
}

impl From<Vec<String>> for ProxyTarget {
    fn from(upstreams: Vec<String>) -> Self {
        ProxyTarget::Upstreams(upstreams)
    }
}

// The access and limit fields are kept as they came (one level deep) for
// `validate` to check item by item, with the path of each.
/// The object form of a proxy entry: its upstreams, a PROXY protocol
/// header, and optional access control and limits (absent: everyone, no
/// limit, at no cost).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyOptions {
    #[schemars(with = "NonEmpty<Upstream>")]
    pub upstreams: Vec<String>,
    /// Send a PROXY protocol v1 header with the client's address and port
    /// before the (untouched) stream; `https://` and `tcp://` entries only.
    /// Default false, as in the list form.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Only clients in these networks reach the route (absent: everyone;
    /// an empty list is refused). Canonical CIDRs, IPv4 and IPv6, at most
    /// `--max-allowed-ips` (1024 by default). Others are refused: HTTP 403,
    /// other schemes' connections closed; they never reach a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<NonEmpty<AccessCidr>>")]
    pub allow: Option<serde_json::Value>,
    /// Clients in these networks are refused, even when `allow` lists them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<AccessCidr>>")]
    pub deny: Option<serde_json::Value>,
    /// Concurrent connections to the route, all clients together (UDP:
    /// sessions; `http://`: requests being handled), 1..=1000000. One more
    /// is closed (HTTP: 503) and never reaches a node. Not with
    /// `proxy_protocol` on an `https://` route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<IntRange<1, 1000000>>")]
    pub max_connections: Option<serde_json::Value>,
    /// The same per client address, 1..=1000000; not with `proxy_protocol`
    /// on an `https://` route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<IntRange<1, 1000000>>")]
    pub max_connections_per_client: Option<serde_json::Value>,
    /// Aggregate bandwidth of the route, all its connections together,
    /// shaped with tc on the network's veth (within the network's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Bandwidth>")]
    pub bandwidth: Option<serde_json::Value>,
}

impl ProxyOptions {
    /// The fields of the object form.
    pub const FIELDS: [&str; 7] =
        ["upstreams", "proxy_protocol", "allow", "deny", "max_connections", "max_connections_per_client", "bandwidth"];
    /// The access and limit fields among them.
    pub const LIMIT_FIELDS: [&str; 5] = ["allow", "deny", "max_connections", "max_connections_per_client", "bandwidth"];
}

/// An aggregate bandwidth (of a route, or of a whole network's routes),
/// in Mbit/s: whole numbers 1..=1000000, each optional (absent: not
/// limited that way). Schema only: the value is checked by `validate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bandwidth {
    /// Toward the nodes (what clients send).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<IntRange<1, 1000000>>")]
    pub ingress_mbit: Option<u32>,
    /// From the nodes toward clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<IntRange<1, 1000000>>")]
    pub egress_mbit: Option<u32>,
}

impl JsonSchema for ProxyTarget {
    fn schema_name() -> String {
        "ProxyTarget".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = schemars::schema::SchemaObject::default();
        schema.subschemas().any_of = Some(vec![generator.subschema_for::<NonEmpty<Upstream>>(), generator.subschema_for::<ProxyOptions>()]);
        schema.metadata().description = Some(
            "Upstreams `IPV4:PORT` inside the network: a list (no PROXY protocol), or an object `{\"upstreams\": [...], \"proxy_protocol\": true}`.".into(),
        );
        schema.into()
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// All zeros means none, as in WireGuard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<WireGuardKey>")]
    pub preshared_key: Option<String>,
    #[serde(default)]
    #[schemars(with = "Vec<AllowedIp>")]
    pub allowed_ips: Vec<String>,
    /// `IP:PORT` or `[IPv6]:PORT` (no hostnames: WireGuard would report the resolved address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Endpoint>")]
    pub endpoint: Option<String>,
    /// Seconds, 1..=65535; absent means off.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole_number")]
    #[schemars(with = "Option<IntRange<1, 65535>>")]
    pub persistent_keepalive: Option<u32>,
}

/// What `Debug` prints instead of a secret key.
const REDACTED: &str = "(redacted)";

/// Private keys never reach a log, even through `{:?}` of a whole config.
impl std::fmt::Debug for NetworkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkConfig")
            .field("private_key", &REDACTED)
            .field("listen_port", &self.listen_port)
            .field("mtu", &self.mtu)
            .field("address", &self.address)
            .field("peers", &self.peers)
            .field("proxy", &self.proxy)
            .field("bandwidth", &self.bandwidth)
            .finish()
    }
}

/// Preshared keys never reach a log either.
impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("preshared_key", &self.preshared_key.as_ref().map(|_| REDACTED))
            .field("allowed_ips", &self.allowed_ips)
            .field("endpoint", &self.endpoint)
            .field("persistent_keepalive", &self.persistent_keepalive)
            .finish()
    }
}

/// `GET /api/v1/config.json`: the desired state as last accepted.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StoredConfig {
    /// Increases by one with every accepted POST or PATCH; 0 = nothing accepted yet.
    pub generation: i64,
    #[schemars(with = "GatewayConfigSchema")]
    pub config: GatewayConfig,
}

/// Answer of POST/PATCH `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ApplyResponse {
    /// Generation this request created.
    pub generation: i64,
    /// `applied`: the system has converged to this generation (or a later one);
    /// `pending`: still converging when the wait ended (see status.json).
    pub result: String,
    /// Generation the reconciler last finished (may be newer than `generation`).
    pub applied_generation: i64,
    /// Networks that changed on the system in that apply.
    pub changed_networks: Vec<u16>,
    pub duration_ms: u64,
}

/// Answer of POST/PATCH `config.json?dry_run=true`: what an apply of that
/// state would do now, from the same look and plan as a real apply.
/// Nothing was stored, no generation made, nothing on the system changed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DryRunResponse {
    /// Always `true`: this answer changed nothing.
    pub dry_run: bool,
    /// The desired generation the dry run was compared against (unchanged).
    pub generation: i64,
    /// Per network (listen port) that would change, one line per step, in
    /// order; networks not listed would not be touched.
    #[schemars(with = "Keyed<ListenPortKey, Vec<String>>")]
    pub changes: BTreeMap<String, Vec<String>>,
    /// Steps shared by all networks (the bridge, nginx), in order.
    pub shared: Vec<String>,
    /// nginx's files would be rewritten, checked and nginx reloaded.
    pub nginx_reload: bool,
    /// Networks that would be removed (also listed in `changes`).
    pub removed: Vec<u16>,
    /// What could not be read: the plan leaves those networks alone.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct Traffic {
    pub rx: i64,
    pub tx: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct DeviceTraffic {
    pub traffic: Traffic,
    /// Per sample time (unix seconds, as a string key): bytes in that sample.
    pub times: BTreeMap<String, Traffic>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct NetworkTraffic {
    /// The network's listen port (the key of config.json and status.json)
    /// its samples were recorded under; null for samples recorded before
    /// the gateway kept it, until the network's next sample.
    #[serde(default)]
    pub port: Option<u16>,
    pub traffic: Traffic,
    /// Keyed by peer public key.
    pub devices: BTreeMap<String, DeviceTraffic>,
}

/// `GET /api/v1/traffic.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct TrafficInfo {
    /// Samples after this time (exclusive) are counted; with `step`, the
    /// asked start rounded down to a multiple of the step.
    pub start_time: i64,
    pub stop_time: i64,
    /// Present when sums per bucket were asked for: each key of `times` is
    /// then the end of a bucket `(key - step, key]` (the last one may still
    /// be filling), not a sample time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    pub traffic: Traffic,
    /// Keyed by the network's (gateway interface's) public key.
    pub networks: BTreeMap<String, NetworkTraffic>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PeerStatus {
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    /// Unix seconds of the latest handshake, null if never.
    pub latest_handshake: Option<i64>,
    /// Raw counters of the interface (since it was created).
    pub rx_bytes: i64,
    pub tx_bytes: i64,
}

/// One upstream of a route as the health checks last found it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct UpstreamHealth {
    /// Whether the last TCP connect to it, from inside the network's
    /// namespace, succeeded; null: not checked (a `udp://` route, checks
    /// off with `--health-interval 0`, or not checked yet).
    pub healthy: Option<bool>,
    /// Unix seconds since it has been in this state (since it was first
    /// listed, while not checked).
    pub since: i64,
    /// Why the last check failed (null when it succeeded or none ran).
    pub last_error: Option<String>,
}

/// One route of a network (a key of its `proxy`): its usage and how its
/// upstreams are. The counters count since the daemon started (they are
/// not persisted), from the line nginx sends the daemon at the end of each
/// connection (HTTP: each request) on the usage socket (`--usage-socket`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Default)]
pub struct RouteStatus {
    /// Connections (HTTP: requests) that ended, refused and limited ones included.
    pub connections_total: u64,
    /// Connections open now: the established connections to the route's
    /// DNAT ports in its namespace's conntrack table, read at each drift
    /// check (each route has DNAT ports of its own, also when it shares an
    /// upstream with another route).
    pub active_connections: u64,
    /// Connections refused by `allow`/`deny` (nginx's own 403; HTTPS: sent
    /// to the closed upstream `gateway_refused` on the shared listener).
    /// nginx counts connections before it applies `allow`/`deny`: a
    /// refused client arriving while the route is at its limit counts as
    /// limited.
    pub denied_total: u64,
    /// Connections refused by `max_connections`/`max_connections_per_client`
    /// (nginx's own 503; an HTTP 503 from a node is not counted here).
    pub limited_total: u64,
    /// Bytes from the clients (toward the nodes).
    pub rx_bytes: u64,
    /// Bytes to the clients.
    pub tx_bytes: u64,
    /// By upstream (`IP:PORT`).
    pub upstreams: BTreeMap<String, UpstreamHealth>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct NetworkStatus {
    pub namespace: String,
    pub namespace_present: bool,
    pub interface: String,
    pub interface_present: bool,
    pub interface_up: bool,
    pub public_key: Option<String>,
    pub listen_port: Option<u16>,
    pub mtu: Option<u32>,
    pub addresses: Vec<String>,
    /// Whether this network is in the desired state (false: leftover being removed).
    pub desired: bool,
    /// Unix seconds when what this entry says was read from the system
    /// (null: not looked at yet). Counters are re-read for a request when
    /// older than a second; the rest comes from the reconciler's last look.
    pub observed_at: Option<i64>,
    pub peers: BTreeMap<String, PeerStatus>,
    /// The network's routes as the last pass applied them (keys as in
    /// `proxy`: `https://HOST`, `http://HOST`, `tcp://PORT`, `udp://PORT`),
    /// each with the health of its upstreams; empty for a network not desired.
    pub routes: BTreeMap<String, RouteStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LastApply {
    pub generation: i64,
    /// `applied` or `failed`.
    pub result: String,
    /// Unix seconds when it finished.
    pub finished_at: i64,
    pub duration_ms: u64,
    pub errors: Vec<String>,
}

/// A write to the database failing now (status.json's `store_errors`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct StoreFailure {
    /// The database's error.
    pub message: String,
    /// The disk the database is on is full.
    pub disk_full: bool,
    /// Unix seconds of the first failure since the operation last succeeded.
    pub since: i64,
}

/// `GET /api/v1/status.json`: what is really on the system.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StatusInfo {
    /// With `--ha-address` only: `active` while this host holds the shared
    /// address (it serves and talks to the peers), else `standby` (all
    /// built, nothing sent to any peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<HaRole>")]
    pub role: Option<String>,
    /// SHA-256 (lowercase hex) of the canonical desired state: two hosts
    /// given the same state show the same digest, however it was sent.
    #[schemars(with = "Sha256Hex")]
    pub config_digest: String,
    /// `kernel` or `userspace`.
    pub backend: String,
    pub desired_generation: i64,
    pub applied_generation: i64,
    pub last_apply: Option<LastApply>,
    pub nginx_running: bool,
    /// Writes to the database failing now, by operation (`config`,
    /// `apply_result`, `traffic`, `endpoints`, `events`): each is listed from its
    /// first failure until it next succeeds. Empty while every write succeeds.
    pub store_errors: BTreeMap<String, StoreFailure>,
    /// Keyed by listen port.
    pub networks: BTreeMap<String, NetworkStatus>,
}

/// Answer of `GET /ready`: 200 with `ready: true`, or 503 with the reasons.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Readiness {
    /// The applied generation is the desired one, nginx runs, no network fails.
    pub ready: bool,
    pub desired_generation: i64,
    pub applied_generation: i64,
    pub nginx_running: bool,
    /// Listen ports of the networks the last pass could not converge.
    pub failing_networks: Vec<u16>,
    /// Why it is not ready, each with its path and `code` (empty when ready).
    pub reasons: Vec<ErrorDetail>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    pub status: String,
}

/// Every error the API returns has this shape.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `unauthorized`, `invalid_config`.
    pub error: String,
    pub message: String,
    /// At most 100; `total` says how many there were.
    pub details: Vec<ErrorDetail>,
    /// How many problems were found, when there were more than `details`
    /// lists (at most 100 are listed). Validation stops after 10,000, so
    /// 10000 means at least that many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct ErrorDetail {
    /// JSON path of the offending value, e.g. `$["51820"].peers["abc="].endpoint`;
    /// for an apply error, the failing network (`$["51820"]`) or `$` for a
    /// shared step (bridge, nginx).
    pub path: String,
    pub message: String,
    /// What kind of problem, for programs (apply errors and readiness):
    /// `network_failed`, `network_unreadable`, `shared_failed`,
    /// `stored_state_invalid`, `not_applied`, `nginx_not_running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl ErrorDetail {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorDetail { path: path.into(), message: message.into(), code: None }
    }

    /// A pass's error (as recorded, see [`pass_error`]) with the path of
    /// what failed and its code.
    pub fn of_pass_error(message: &str) -> Self {
        let (path, code) = if let Some((port, what)) = pass_error_network(message) {
            let code = if what.starts_with(UNREADABLE) { "network_unreadable" } else { "network_failed" };
            (format!("$[\"{port}\"]"), code)
        } else if let Some(rest) = message.strip_prefix(STORED_INVALID) {
            (rest.split_once(": ").map_or("$", |(path, _)| path).to_string(), "stored_state_invalid")
        } else {
            ("$".to_string(), "shared_failed")
        };
        ErrorDetail { path, message: message.to_string(), code: Some(code.into()) }
    }
}

/// A pass's error about network `port`: `network P: WHAT`, the form
/// [`pass_error_network`] reads back.
pub fn pass_error(port: u16, what: impl std::fmt::Display) -> String {
    format!("network {port}: {what}")
}

/// What a look that could not read a network says (after the network).
pub const UNREADABLE: &str = "reading its state: ";
/// What a pass says of a stored state that no longer validates.
pub const STORED_INVALID: &str = "stored desired state is invalid: ";

/// The network a pass's error is about, and the rest of the message.
pub fn pass_error_network(message: &str) -> Option<(u16, &str)> {
    let (port, what) = message.strip_prefix("network ")?.split_once(": ")?;
    Some((crate::types::parse_listen_port(port).ok()?, what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_in_any_spelling() {
        let net = |mtu: &str| serde_json::from_str::<NetworkConfig>(&format!(r#"{{"private_key": "k", "mtu": {mtu}}}"#));
        for (text, want) in [("1420", 1420), ("1420.0", 1420), ("1.42e3", 1420), ("0", 0), ("4294967295", u32::MAX)] {
            assert_eq!(net(text).unwrap().mtu, Some(want), "{text}");
        }
        assert_eq!(net("null").unwrap().mtu, None);
        for bad in ["1420.5", "-1", "4294967296", "1e20", "\"1420\"", "true"] {
            assert!(net(bad).is_err(), "{bad}");
        }
        let peer: PeerConfig = serde_json::from_str(r#"{"persistent_keepalive": 25.0}"#).unwrap();
        assert_eq!(peer.persistent_keepalive, Some(25));
        assert_eq!(serde_json::to_string(&peer).unwrap(), r#"{"allowed_ips":[],"persistent_keepalive":25}"#, "stored as written by us");
    }

    #[test]
    fn debug_output_hides_secret_keys() {
        let secret = "0EtpYOfpZyKaIcpkq+KO/+joyV431f1X99CcB2OMo3c=";
        let psk = "OxvFhrgLnI9e4xzMMA2qQ7wm/xCUzxaWW5cb1JGkWSA=";
        let json = format!(
            r#"{{"51820": {{"private_key": "{secret}", "peers": {{"S0DGe1Pns8GtjaEnjj/Twc2KUKtHerUm8bYxMUHwOQ8=": {{"preshared_key": "{psk}"}}}}}}}}"#
        );
        let config: GatewayConfig = serde_json::from_str(&json).unwrap();
        let printed = format!("{config:?} {:?}", StoredConfig { generation: 1, config: config.clone() });
        assert!(!printed.contains(secret) && !printed.contains(psk), "{printed}");
        assert!(printed.contains("S0DGe1Pns8GtjaEnjj/Twc2KUKtHerUm8bYxMUHwOQ8="), "public keys are printed: {printed}");
    }

    #[test]
    fn pass_errors_carry_their_network_and_code() {
        let d = ErrorDetail::of_pass_error(&pass_error(51820, "ConfigureWg: wg set failed"));
        assert_eq!((d.path.as_str(), d.code.as_deref()), ("$[\"51820\"]", Some("network_failed")));
        assert_eq!(d.message, "network 51820: ConfigureWg: wg set failed");
        let d = ErrorDetail::of_pass_error(&pass_error(1024, format_args!("{UNREADABLE}Permission denied")));
        assert_eq!((d.path.as_str(), d.code.as_deref()), ("$[\"1024\"]", Some("network_unreadable")));
        let d = ErrorDetail::of_pass_error(&format!("{STORED_INVALID}$[\"51820\"].proxy[\"https://a.test\"]: taken"));
        assert_eq!((d.path.as_str(), d.code.as_deref()), ("$[\"51820\"].proxy[\"https://a.test\"]", Some("stored_state_invalid")));
        for shared in ["ReloadNginx: nginx -t failed", "network abc: x", "network 0: x", "reading the bridge: gone"] {
            let d = ErrorDetail::of_pass_error(shared);
            assert_eq!((d.path.as_str(), d.code.as_deref()), ("$", Some("shared_failed")), "{shared}");
        }
        assert_eq!(pass_error_network("network 51820: x: y"), Some((51820, "x: y")));
    }
}
