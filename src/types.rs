//! Domain values, each checked to its exact form when parsed (`FromStr`), so
//! what is printed later into a config file or onto a command line is exactly
//! what was checked. Parse errors are sentences a person can act on; the
//! validator adds the JSON path.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

pub mod pattern;

const KEY_FORM: &str = "must be a WireGuard key: 44 characters of standard base64 ending in '='";

fn decode_key(s: &str) -> Result<[u8; 32], String> {
    if s.len() != 44 || !s.ends_with('=') {
        return Err(KEY_FORM.into());
    }
    // The standard engine refuses non-canonical trailing bits, so a key
    // prints back exactly as it was given.
    let bytes = BASE64.decode(s).map_err(|_| KEY_FORM.to_string())?;
    bytes.try_into().map_err(|_| "must be a WireGuard key: 32 bytes in standard base64".to_string())
}

/// A WireGuard public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; 32]);

impl FromStr for PublicKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        decode_key(s).map(PublicKey)
    }
}

impl PublicKey {
    /// The key as WireGuard's kernel and UAPI interfaces give it (raw bytes).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PublicKey(bytes)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A secret WireGuard key: a private or a preshared key. It has no `Display`
/// and its `Debug` hides it, so it cannot reach a log by accident; the only
/// way out is [`SecretKey::expose`], where the key is handed to WireGuard.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretKey([u8; 32]);

impl FromStr for SecretKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        decode_key(s).map(SecretKey)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(redacted)")
    }
}

impl SecretKey {
    /// The key as WireGuard's kernel and UAPI interfaces give it (raw bytes).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey(bytes)
    }

    /// The key in the clamped form WireGuard stores and reports for private
    /// keys (`wg genkey` output already is): any 32 bytes are accepted, and an
    /// unclamped key would otherwise never match what `wg show` prints.
    pub fn clamped(mut self) -> Self {
        self.0[0] &= 248;
        self.0[31] = (self.0[31] & 127) | 64;
        self
    }

    /// The public key of a private key (X25519 base point multiplication).
    pub fn public_key(&self) -> PublicKey {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        PublicKey(*x25519_dalek::PublicKey::from(&secret).as_bytes())
    }

    /// All zeros: how WireGuard spells "no preshared key".
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 32]
    }

    /// The base64 text, for WireGuard's configuration only (sent on stdin).
    pub fn expose(&self) -> String {
        BASE64.encode(self.0)
    }
}

/// Plain decimal digits, no sign, no leading zeros.
fn parse_decimal(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

/// At most 64 characters of a bad value, for error messages.
pub fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Parses an IP address written in its canonical form only (no leading zeros,
/// no zone index), so the text printed later is exactly what was validated.
pub fn parse_ip_exact(s: &str) -> Result<IpAddr, String> {
    let ip = IpAddr::from_str(s).map_err(|_| format!("'{}' is not an IP address", truncate(s)))?;
    if ip.to_string() != s {
        return Err(format!("IP address must be written canonically as {ip}"));
    }
    Ok(ip)
}

/// Listen ports 0, 1 and 65535 are excluded: a network's veth address is
/// derived from its port inside the bridge /16, where .0.0, .0.1 (the bridge)
/// and .255.255 are taken.
pub const LISTEN_PORTS: std::ops::RangeInclusive<u32> = 2..=65534;

/// A network's key: its WireGuard listen port, in plain decimal.
pub fn parse_listen_port(s: &str) -> Result<u16, String> {
    parse_decimal(s).filter(|p| LISTEN_PORTS.contains(p)).map(|p| p as u16).ok_or_else(|| {
        format!("network key must be its WireGuard listen port, a decimal number {}..={}", LISTEN_PORTS.start(), LISTEN_PORTS.end())
    })
}

/// An address with a prefix length, e.g. `10.80.0.1/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    /// The canonical form only (what the validator accepts).
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').ok_or_else(|| "must be ADDRESS/PREFIX, e.g. 10.80.0.1/16".to_string())?;
        let addr = parse_ip_exact(a)?;
        let max = Cidr::max_prefix(addr);
        let prefix =
            parse_decimal(p).filter(|p| *p <= u32::from(max)).ok_or_else(|| format!("prefix length must be a number 0..={max}"))?;
        Ok(Cidr { addr, prefix: prefix as u8 })
    }
}

impl Cidr {
    /// An address and prefix read from a tool's output (any spelling of the
    /// address `std` understands); `None` if the prefix does not fit.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        (prefix <= Cidr::max_prefix(addr)).then_some(Cidr { addr, prefix })
    }

    fn max_prefix(addr: IpAddr) -> u8 {
        if addr.is_ipv4() { 32 } else { 128 }
    }

    /// The same prefix with the host bits cleared, as WireGuard reports allowed IPs.
    pub fn network(&self) -> Cidr {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Cidr { addr, prefix: self.prefix }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let probe = Cidr { addr: ip, prefix: self.prefix };
        ip.is_ipv4() == self.addr.is_ipv4() && probe.network().addr == self.network().addr
    }

    /// Whether `self` lies wholly inside `outer`.
    pub fn within(&self, outer: &Cidr) -> bool {
        self.prefix >= outer.prefix && outer.contains(self.addr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A DNS name as nginx will match it: RFC 1123 labels, lowercase, no wildcard.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hostname(String);

impl FromStr for Hostname {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 253 {
            return Err("hostname must be 1 to 253 characters".into());
        }
        for label in s.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err("hostname labels must be 1 to 63 characters (no empty label, no trailing dot)".into());
            }
            if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
                return Err("hostname may contain only lowercase letters, digits, '-' and '.' (no wildcards)".into());
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err("hostname labels must not start or end with '-'".into());
            }
        }
        if s.rsplit('.').next().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
            return Err("hostname must not look like an IP address (last label all digits)".into());
        }
        Ok(Hostname(s.to_string()))
    }
}

impl Hostname {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A proxy entry's key: `https://HOST` or `http://HOST` (an optional trailing
/// `/`), nothing else.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProxyUrl {
    pub scheme: Scheme,
    pub host: Hostname,
}

impl FromStr for ProxyUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (scheme, rest) = if let Some(rest) = s.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = s.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else {
            return Err("URL must start with https:// (TLS passthrough by SNI) or http:// (reverse proxy by Host)".into());
        };
        let host = rest.strip_suffix('/').unwrap_or(rest);
        if host.contains(':') || host.contains('/') {
            return Err("URL must be exactly SCHEME://HOST: no port, path or query".into());
        }
        Ok(ProxyUrl { scheme, host: host.parse()? })
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.name(), self.host)
    }
}

/// Which raw ports (`tcp://PORT`, `udp://PORT`) a config may open:
/// `FIRST-LAST`, both included (`--raw-port-range`). The default leaves the
/// privileged ports (below 1024: SSH, DNS, NTP, ...) to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange { first: 1024, last: 65535 }
    }
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' must be FIRST-LAST, two ports 1..=65535 in plain decimal, FIRST <= LAST (e.g. 1024-65535)");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let port = |x: &str| parse_decimal(x).filter(|p| (1..=65535).contains(p)).map(|p| p as u16);
        match (port(a), port(b)) {
            (Some(first), Some(last)) if first <= last => Ok(PortRange { first, last }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// The transport of a raw port entry (`tcp://PORT`, `udp://PORT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }

    /// The IP protocol number (tc's u32 and conntrack match on it).
    pub fn protocol_number(self) -> u8 {
        match self {
            Transport::Tcp => 6,
            Transport::Udp => 17,
        }
    }

    pub fn of_protocol_number(n: u32) -> Option<Transport> {
        match n {
            6 => Some(Transport::Tcp),
            17 => Some(Transport::Udp),
            _ => None,
        }
    }

    /// `TCP port` or `UDP port`, for messages.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP port",
            Transport::Udp => "UDP port",
        }
    }
}

/// A proxy entry's key: a hostname route (`https://HOST`, `http://HOST`) or
/// a raw port on the gateway host (`tcp://PORT`, `udp://PORT`, PORT
/// 1..=65535 in plain decimal).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProxyKey {
    Url(ProxyUrl),
    Raw(Transport, u16),
}

/// As the key is written in `proxy` (without a trailing `/`).
impl fmt::Display for ProxyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyKey::Url(u) => write!(f, "{u}"),
            ProxyKey::Raw(t, port) => write!(f, "{}://{port}", t.name()),
        }
    }
}

impl FromStr for ProxyKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        for t in [Transport::Tcp, Transport::Udp] {
            if let Some(port) = s.strip_prefix(t.name()).and_then(|r| r.strip_prefix("://")) {
                let port = parse_decimal(port)
                    .filter(|p| (1..=65535).contains(p))
                    .ok_or_else(|| format!("{}://PORT needs a port 1..=65535 in plain decimal", t.name()))?;
                return Ok(ProxyKey::Raw(t, port as u16));
            }
        }
        if !s.starts_with("https://") && !s.starts_with("http://") {
            return Err(
                "key must start with https:// (TLS passthrough by SNI), http:// (reverse proxy by Host), tcp:// or udp:// (a raw port)"
                    .into(),
            );
        }
        s.parse().map(ProxyKey::Url)
    }
}

/// An upstream inside a network (or, for custom forwardings, on the host): IPv4:PORT.
pub fn parse_upstream(s: &str) -> Result<SocketAddrV4, String> {
    let (ip, port) = s.rsplit_once(':').ok_or_else(|| "upstream must be IPV4:PORT, e.g. 10.80.0.2:443".to_string())?;
    let ip = match parse_ip_exact(ip)? {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(_) => return Err("upstream must be an IPv4 address".into()),
    };
    let port = parse_decimal(port).filter(|p| (1..=65535).contains(p)).ok_or_else(|| "upstream port must be 1..=65535".to_string())?;
    Ok(SocketAddrV4::new(ip, port as u16))
}

/// A peer endpoint: `IP:PORT` or `[IPv6]:PORT`. Hostnames are refused because
/// WireGuard resolves them once and reports the address, which would look
/// like drift on every check.
pub fn parse_endpoint(s: &str) -> Result<SocketAddr, String> {
    let addr = SocketAddr::from_str(s).map_err(|_| "endpoint must be IP:PORT or [IPV6]:PORT (no hostnames)".to_string())?;
    if addr.port() == 0 {
        return Err("endpoint port must be 1..=65535".into());
    }
    if addr.to_string() != s {
        return Err(format!("endpoint must be in canonical form ({addr})"));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const KEY_A: &str = "0EtpYOfpZyKaIcpkq+KO/+joyV431f1X99CcB2OMo3c=";

    #[test]
    fn port_ranges_parse_strictly() {
        assert_eq!("1024-65535".parse(), Ok(PortRange::default()));
        assert_eq!("1-1".parse(), Ok(PortRange { first: 1, last: 1 }));
        let r: PortRange = "2000-3000".parse().unwrap();
        assert!(r.contains(2000) && r.contains(3000) && !r.contains(1999) && !r.contains(3001));
        assert_eq!(r.to_string(), "2000-3000");
        assert!(!PortRange::default().contains(1023) && PortRange::default().contains(1024));
        for bad in ["", "1024", "0-10", "10-5", "1024-65536", "01024-2000", "1024 - 2000", "-5", "a-b", "1024-", "1-2-3"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_parse_strictly_and_print_back() {
        let k: PublicKey = KEY_A.parse().unwrap();
        assert_eq!(k.to_string(), KEY_A);
        assert!("short=".parse::<PublicKey>().is_err());
        assert!(KEY_A.replace('+', "-").parse::<PublicKey>().is_err(), "url-safe alphabet refused");
        assert!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n".parse::<PublicKey>().is_err());
        // 33 bytes would be 44 chars without padding: refused.
        assert!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".parse::<PublicKey>().is_err());
        // Non-canonical trailing bits would print back differently.
        assert!("0EtpYOfpZyKaIcpkq+KO/+joyV431f1X99CcB2OMo3d=".parse::<PublicKey>().is_err());
        // The form is checked before decoding, with the message saying so.
        assert_eq!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".parse::<PublicKey>(), Err(KEY_FORM.to_string()));
        assert_eq!(format!("{k:?}"), format!("PublicKey({KEY_A})"));
    }

    #[test]
    fn decimals_are_plain_and_bounded() {
        assert_eq!(parse_decimal("0"), Some(0));
        assert_eq!(parse_decimal("123456789"), Some(123_456_789), "nine digits fit");
        for bad in ["", "1234567890", "01", "+1", "-1", " 1", "1 ", "1_0"] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn private_keys_are_clamped_and_derive_their_public_key() {
        let k: SecretKey = KEY_A.parse().unwrap();
        assert_eq!(k.clone().clamped().expose(), KEY_A, "wg genkey output is clamped already");
        let raw: SecretKey = "//////////////////////////////////////////8=".parse().unwrap();
        assert_eq!(raw.clamped().expose(), "+P///////////////////////////////////////38=", "clamped like WireGuard");
        // As `wg pubkey` prints it.
        assert_eq!(k.public_key().to_string(), "4dcKbDNyb6pkkRuP22OPzkHgpOb9k67iaP5R9A0xv0c=");
        assert_eq!(format!("{k:?}"), "SecretKey(redacted)", "never printed");
        assert!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".parse::<SecretKey>().unwrap().is_zero());
        assert!(!k.is_zero());
    }

    #[test]
    fn hostnames() {
        let longest = format!("{}.{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61));
        assert_eq!(longest.len(), 253);
        for ok in ["app.example.com", "a", "x-1.test", "xn--bcher-kva.example", &longest] {
            assert_eq!(ok.parse::<Hostname>().map(|h| h.to_string()).as_deref(), Ok(ok), "{ok}");
        }
        let long_label = "a".repeat(64);
        let too_long = format!("{}.{}.{}.{}.x", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61));
        for bad in [
            "",
            "App.example.com",
            "*.example.com",
            "a..b",
            "a.",
            "-a.b",
            "a-.b",
            "a b",
            "a;b",
            "a\nb",
            "1.2.3.4",
            "a_b.c",
            &long_label,
            &too_long,
            "a}b",
            "a$b",
        ] {
            assert!(bad.parse::<Hostname>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn proxy_urls() {
        let u: ProxyUrl = "https://a.b/".parse().unwrap();
        assert_eq!((u.scheme, u.to_string()), (Scheme::Https, "https://a.b".to_string()));
        assert_eq!("http://a.b".parse::<ProxyUrl>().unwrap().scheme, Scheme::Http);
        for bad in ["ftp://a.b", "https://a.b:8443", "https://a.b/x", "a.b", "https://", "https://a.b;", "HTTPS://a.b"] {
            assert!(bad.parse::<ProxyUrl>().is_err(), "{bad}");
        }
        for (bad, says) in [("https://a.b:8443", "no port"), ("http://a.b/x", "no port, path"), ("https://A.b", "lowercase")] {
            let e = bad.parse::<ProxyUrl>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn upstreams_endpoints_cidrs_ports() {
        assert_eq!(parse_upstream("10.0.0.1:443").unwrap().to_string(), "10.0.0.1:443");
        for bad in ["10.0.0.1", "10.0.0.1:0", "10.0.0.1:65536", "010.0.0.1:1", "[::1]:80", "h:80", "10.0.0.1:+1", "10.0.0.1:01"] {
            assert!(parse_upstream(bad).is_err(), "{bad}");
        }
        assert!(parse_endpoint("203.0.113.7:41213").is_ok());
        assert!(parse_endpoint("[2001:db8::1]:51820").is_ok());
        for bad in ["example.com:51820", "1.2.3.4", "1.2.3.4:0", "[2001:DB8::1]:1"] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
        let c: Cidr = "10.80.0.5/24".parse().unwrap();
        assert_eq!(c.network().to_string(), "10.80.0.0/24");
        assert_eq!("fd00::1/64".parse::<Cidr>().unwrap().network().to_string(), "fd00::/64");
        assert_eq!("fd00::1:2:3:4/64".parse::<Cidr>().unwrap().network().to_string(), "fd00::/64", "all 64 host bits cleared");
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().network().to_string(), "0.0.0.0/0");
        for bad in ["10.0.0.1", "10.0.0.1/33", "fd00::1/129", "10.0.0.1/ 8", "10.0.0.01/8", "10.0.0.1/08", "x/8"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert!(c.contains("10.80.0.200".parse().unwrap()));
        assert!(!c.contains("10.80.1.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        assert!("10.80.0.0/25".parse::<Cidr>().unwrap().within(&c));
        assert!(!"10.80.0.0/23".parse::<Cidr>().unwrap().within(&c));
        assert_eq!(parse_listen_port("51820"), Ok(51820));
        for bad in ["", "0", "1", "65535", "051820", "+5", "5182O", "99999999999"] {
            assert!(parse_listen_port(bad).is_err(), "{bad}");
        }
    }
}
