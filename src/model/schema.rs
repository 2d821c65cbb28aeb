//! Schema-only types: what the OpenAPI document says about the strings and
//! map keys of the API's JSON shapes. The shapes themselves stay loose
//! (plain strings) so the validator can report every problem at once; their
//! fields borrow these types' schemas (`#[schemars(with = "...")]`), whose
//! patterns (`types::pattern`) accept exactly what the parsers accept.
//!
//! [`Keyed`] gives a map the schema of its keys (`propertyNames`), which
//! schemars cannot derive for a `BTreeMap<String, _>`.

use std::marker::PhantomData;

use schemars::JsonSchema;
use schemars::r#gen::SchemaGenerator;
use schemars::schema::{InstanceType, Metadata, ObjectValidation, Schema, SchemaObject, StringValidation};

use crate::types::pattern;

/// A string schema with a pattern and a description.
fn string_schema(pattern: String, description: &str) -> Schema {
    SchemaObject {
        instance_type: Some(InstanceType::String.into()),
        string: Some(Box::new(StringValidation { pattern: Some(pattern), ..Default::default() })),
        metadata: Some(Box::new(Metadata { description: Some(description.into()), ..Default::default() })),
        ..Default::default()
    }
    .into()
}

/// Declares a schema-only string type, named in the document's components.
macro_rules! string_type {
    ($(#[$doc:meta])* $name:ident, $pattern:expr, $description:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl JsonSchema for $name {
            fn schema_name() -> String {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                string_schema($pattern, $description)
            }
        }
    };
}

string_type!(
    /// A WireGuard key (private, public or preshared).
    WireGuardKey,
    pattern::KEY.to_string(),
    "A WireGuard key: 32 bytes in standard base64, 44 characters ending in `=` (as `wg genkey` prints them)."
);
string_type!(
    /// A network's key in GatewayConfig: its listen port.
    ListenPortKey,
    pattern::listen_port(),
    "The network's WireGuard listen port, 2..=65534, in plain decimal (no sign, no leading zero)."
);
string_type!(
    /// An address of the gateway's interface in a network.
    InterfaceAddress,
    pattern::interface_address(),
    "`ADDRESS/PREFIX` in canonical form (IPv6 as RFC 5952 prints it: lowercase, shortest), a global unicast address: not loopback, link-local, site-local, multicast, unspecified, IPv4-mapped or IPv4-compatible. Each address once per network, outside the gateway's bridge subnet."
);
string_type!(
    /// A peer's allowed IP.
    AllowedIp,
    pattern::allowed_ip(),
    "`ADDRESS/PREFIX` in canonical form (IPv6 as RFC 5952 prints it); not an IPv4-compatible IPv6 address longer than /96. Given to only one peer of the network, not inside the gateway's bridge subnet."
);
string_type!(
    /// A network of clients in a route's `allow` or `deny`.
    AccessCidr,
    pattern::access_cidr(),
    "`ADDRESS/PREFIX` of a network of clients, canonical: host bits zero (`203.0.113.0/24`, not `203.0.113.7/24`), IPv6 as RFC 5952 prints it; IPv4 networks in their IPv4 form (no IPv4-mapped or IPv4-compatible IPv6 form)."
);
string_type!(
    /// A peer's endpoint.
    Endpoint,
    pattern::endpoint(),
    "`IPV4:PORT` or `[IPV6]:PORT` in canonical form, port 1..=65535; no hostnames, no scope id. A unicast address of another machine: not loopback, link-local, multicast, broadcast, unspecified (0.0.0.0/8, `::`), IPv4-compatible, nor an IPv4-mapped form of those; outside the gateway's bridge subnet."
);
string_type!(
    /// A proxy key of any kind.
    ProxyKey,
    pattern::proxy_key(),
    "`https://HOST` (TLS passed through, chosen by SNI) or `http://HOST` (reverse proxy by Host), an optional trailing `/`; HOST lowercase RFC 1123, at most 253 characters, no wildcard, port or path. A hostname may be in only one network, whatever the scheme. Or `tcp://PORT` / `udp://PORT`: a raw port on the gateway host, 1..=65535 in plain decimal, owned by one network and not used by the gateway itself (HTTPS/HTTP listeners, API, WireGuard listen ports, --custom-forwarding upstreams)."
);
string_type!(
    /// A proxy upstream.
    Upstream,
    pattern::upstream(),
    "`IPV4:PORT` inside the network (covered by one of its addresses or a peer's allowed IPs), port 1..=65535."
);

string_type!(
    /// A host's role with `--ha-address`.
    HaRole,
    "^(active|standby)$".to_string(),
    "`active`: this host holds the shared address (`--ha-address`), serves and talks to the peers; `standby`: it does not, and sends nothing to any peer."
);
string_type!(
    /// A SHA-256 digest.
    Sha256Hex,
    "^[0-9a-f]{64}$".to_string(),
    "A SHA-256 digest in lowercase hex (64 characters)."
);

/// A JSON object whose keys have the schema of `K` and values that of `V`.
pub struct Keyed<K, V>(PhantomData<(K, V)>);

impl<K: JsonSchema, V: JsonSchema> JsonSchema for Keyed<K, V> {
    fn is_referenceable() -> bool {
        false
    }
    fn schema_name() -> String {
        format!("Map_of_{}_to_{}", K::schema_name(), V::schema_name())
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        SchemaObject {
            instance_type: Some(InstanceType::Object.into()),
            object: Some(Box::new(ObjectValidation {
                property_names: Some(Box::new(generator.subschema_for::<K>())),
                additional_properties: Some(Box::new(generator.subschema_for::<V>())),
                ..Default::default()
            })),
            ..Default::default()
        }
        .into()
    }
}

/// A list of at least one item of `T`.
pub struct NonEmpty<T>(PhantomData<T>);

impl<T: JsonSchema> JsonSchema for NonEmpty<T> {
    fn is_referenceable() -> bool {
        false
    }
    fn schema_name() -> String {
        format!("NonEmpty_of_{}", T::schema_name())
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = generator.subschema_for::<Vec<T>>().into_object();
        schema.array().min_items = Some(1);
        schema.into()
    }
}

/// An integer in `MIN..=MAX`. The bounds are written as JSON integers:
/// schemars writes `range` bounds as floats (`9000.0`), which leads value
/// generators to send `1420.0`, a number JSON Schema calls an integer but
/// serde does not.
pub struct IntRange<const MIN: i64, const MAX: i64>;

/// `listen_port`: output only in the document (`readOnly`). JSON Schema
/// cannot say that a value must equal its object's key, so a schema-valid
/// body could break that rule; the key already says the port, so a client
/// need not send it. The server still takes it when it equals the key, as
/// it always did.
pub struct ListenPortField;

impl JsonSchema for ListenPortField {
    fn is_referenceable() -> bool {
        false
    }
    fn schema_name() -> String {
        "ListenPortField".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = IntRange::<2, 65534>::json_schema(generator).into_object();
        schema.metadata().read_only = true;
        schema.into()
    }
}

impl<const MIN: i64, const MAX: i64> JsonSchema for IntRange<MIN, MAX> {
    fn is_referenceable() -> bool {
        false
    }
    fn schema_name() -> String {
        format!("Integer_{MIN}_to_{MAX}")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let mut schema = SchemaObject { instance_type: Some(InstanceType::Integer.into()), ..Default::default() };
        schema.extensions.insert("minimum".into(), MIN.into());
        schema.extensions.insert("maximum".into(), MAX.into());
        schema.into()
    }
}
