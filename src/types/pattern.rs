//! The exact forms the parsers of [`crate::types`] accept, as regular
//! expressions (ECMA-262, as JSON Schema's `pattern` reads them) for the
//! OpenAPI document. Each accepts exactly the strings its parser accepts:
//! the tests below check that on generated corpora, so a client validating
//! against the document never sends a value the server refuses for its form
//! (rules that span values, like "an upstream must lie inside the network",
//! cannot be said in a pattern; the document lists them in prose).
//!
//! Only negative lookaheads are used besides plain regular syntax: value
//! generators (hypothesis, schemathesis) draw from the rest of the pattern
//! and filter by the lookahead, which rejects few draws.

/// A decimal number in `lo..=hi`, plain digits, no sign, no leading zero.
pub fn decimal_range(lo: u64, hi: u64) -> String {
    let mut alternatives = Vec::new();
    for digits in lo.to_string().len()..=hi.to_string().len() {
        let smallest = if digits == 1 { 0 } else { 10u64.pow(digits as u32 - 1) };
        let largest = 10u64.saturating_pow(digits as u32) - 1;
        let (a, b) = (lo.max(smallest), hi.min(largest));
        if a <= b {
            alternatives.extend(same_length(a.to_string().as_bytes(), b.to_string().as_bytes()));
        }
    }
    format!("(?:{})", alternatives.join("|"))
}

/// Alternatives matching the numbers from `lo` to `hi`, both of one length.
fn same_length(lo: &[u8], hi: &[u8]) -> Vec<String> {
    let Some((&l, lo_rest)) = lo.split_first() else { return vec![String::new()] };
    let (&h, hi_rest) = hi.split_first().unwrap_or((&b'9', &[]));
    let rest = lo_rest.len();
    if l == h {
        return same_length(lo_rest, hi_rest).into_iter().map(|s| format!("{}{s}", l as char)).collect();
    }
    let mut out = Vec::new();
    let lo_full = lo_rest.iter().all(|&d| d == b'0');
    let hi_full = hi_rest.iter().all(|&d| d == b'9');
    if !lo_full {
        let nines = vec![b'9'; rest];
        out.extend(same_length(lo_rest, &nines).into_iter().map(|s| format!("{}{s}", l as char)));
    }
    let (first, last) = (if lo_full { l } else { l + 1 }, if hi_full { h } else { h - 1 });
    if first <= last {
        let head = if first == last { (first as char).to_string() } else { format!("[{}-{}]", first as char, last as char) };
        out.push(match rest {
            0 => head,
            1 => format!("{head}[0-9]"),
            n => format!("{head}[0-9]{{{n}}}"),
        });
    }
    if !hi_full {
        let zeros = vec![b'0'; rest];
        out.extend(same_length(&zeros, hi_rest).into_iter().map(|s| format!("{}{s}", h as char)));
    }
    out
}

/// A WireGuard key: 32 bytes of standard base64 (44 characters ending in
/// `=`); the last character before `=` carries 2 bits, so only the 16
/// characters whose low 4 bits are zero make the canonical form.
pub const KEY: &str = "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$";

/// A network's key: its listen port, 2..=65534.
pub fn listen_port() -> String {
    format!("^{}$", decimal_range(2, 65534))
}

const OCTET: &str = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
/// Any hex digits (lookaheads skip whole segments with it).
const HEX: &str = "[0-9a-f]";
/// A non-zero segment of an IPv6 address, as Rust prints it.
const NONZERO: &str = "[1-9a-f][0-9a-f]{0,3}";
const SEGMENT: &str = "(?:0|[1-9a-f][0-9a-f]{0,3})";

/// An IPv4 address in dotted decimal, no leading zeros.
fn ipv4() -> String {
    format!("{OCTET}(?:\\.{OCTET}){{3}}")
}

/// A run of `n` zero segments starting at a segment boundary somewhere
/// after the current position, within the same part of the address.
fn zero_run_ahead(n: usize, then: &str) -> String {
    format!("(?:{HEX}+:)*0(?::0){{{}}}{then}", n - 1)
}

/// An IPv6 address exactly as Rust prints it (RFC 5952): lowercase, no
/// leading zeros, the longest run (the first of equal ones) of two or more
/// zero segments as `::`, IPv4-mapped addresses as `::ffff:a.b.c.d`. `end`
/// is a character class of what follows the address (`/` of a prefix, `]`).
pub fn ipv6(end: &str) -> String {
    let whole_segment_end = format!("(?::|{end})");
    // No `::`: eight segments and no two zero segments in a row.
    let mut forms = vec![format!("(?!{})(?:{SEGMENT}:){{7}}{SEGMENT}", zero_run_ahead(2, &whole_segment_end))];
    // `::` for a run of `run` zero segments, `left` segments before it.
    for run in 2..=8usize {
        for left in 0..=8 - run {
            let right = 8 - run - left;
            let mut form = String::new();
            // A run before `::` may not be as long; one after it not longer.
            if left > run {
                form += &format!("(?!{})", zero_run_ahead(run, ":"));
            }
            if left > 0 {
                form += &format!("(?:{SEGMENT}:){{{}}}{NONZERO}", left - 1);
            }
            form += "::";
            if right > run + 1 {
                form += &format!("(?!{})", zero_run_ahead(run + 1, &whole_segment_end));
            }
            if left == 0 && right == 3 {
                // ::ffff:a:b is IPv4-mapped, printed in its dotted form below.
                form += "(?!ffff:)";
            }
            if right > 0 {
                form += &format!("{NONZERO}(?::{SEGMENT}){{{}}}", right - 1);
            }
            forms.push(form);
        }
    }
    forms.push(format!("::ffff:{}", ipv4()));
    format!("(?:{})", forms.join("|"))
}

fn cidr_body() -> String {
    format!("(?:{}/{}|{}/{})", ipv4(), decimal_range(0, 32), ipv6("/"), decimal_range(0, 128))
}

/// `ADDRESS/PREFIX` in canonical form (what `Cidr::from_str` accepts).
pub fn cidr() -> String {
    format!("^{}$", cidr_body())
}

/// An interface address: a canonical CIDR whose address is global unicast
/// (`validate::check_interface_address`).
pub fn interface_address() -> String {
    let v4 = "(?:127|22[4-9]|23[0-9])\\.|169\\.254\\.|0\\.0\\.0\\.0/|255\\.255\\.255\\.255/";
    // Multicast ff00::/8, link-local fe80::/10, site-local fec0::/10, the
    // first 96 bits zero (::, ::1, IPv4-compatible), IPv4-mapped.
    let v6 = format!("ff{HEX}{{2}}:|fe[89a-f]{HEX}:|::(?:{HEX}{{1,4}}(?::{HEX}{{1,4}})?)?/|::ffff:[0-9]{{1,3}}\\.");
    format!("^(?!{v4}|{v6}){}$", cidr_body())
}

/// An allowed IP: a canonical CIDR, not an IPv4-compatible IPv6 address
/// longer than /96 (`validate::is_ipv4_compatible`).
pub fn allowed_ip() -> String {
    format!("^(?!::(?:{HEX}{{1,4}}(?::{HEX}{{1,4}})?)?/(?:9[7-9]|1[01][0-9]|12[0-8])$){}$", cidr_body())
}

/// A network of clients in `allow`/`deny`: a canonical CIDR, not an
/// IPv4-mapped or IPv4-compatible IPv6 form (`validate` also wants the host
/// bits zero, which a pattern cannot say).
pub fn access_cidr() -> String {
    format!("^(?!::ffff:[0-9]{{1,3}}\\.|::(?:{HEX}{{1,4}}(?::{HEX}{{1,4}})?)?/(?:9[7-9]|1[01][0-9]|12[0-8])$){}$", cidr_body())
}

/// A peer endpoint: `IPV4:PORT` or `[IPV6]:PORT`, port 1..=65535, no scope
/// id; not loopback, link-local, multicast, broadcast, 0.0.0.0/8, `::/96`,
/// nor an IPv4-mapped form of those (`validate::check_endpoint`).
pub fn endpoint() -> String {
    let v4 = |end: &str| format!("(?:(?:127|0|22[4-9]|23[0-9])\\.|169\\.254\\.|255\\.255\\.255\\.255{end})");
    let v6 = format!("::(?:{HEX}{{1,4}}(?::{HEX}{{1,4}})?)?\\]|fe[89ab]{HEX}:|ff{HEX}{{2}}:|::ffff:{}", v4("\\]"));
    format!("^(?!{}|\\[(?:{v6}))(?:{}|\\[{}\\]):{}$", v4(":"), ipv4(), ipv6("\\]"), decimal_range(1, 65535))
}

/// An upstream: `IPV4:PORT`, port 1..=65535.
pub fn upstream() -> String {
    format!("^{}:{}$", ipv4(), decimal_range(1, 65535))
}

/// A proxy key: `https://HOST` or `http://HOST`, an optional trailing `/`;
/// HOST lowercase RFC 1123, at most 253 characters, its last label not all
/// digits.
pub fn proxy_url() -> String {
    let label = "[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?";
    format!("^https?://(?![a-z0-9.-]{{254}})(?!(?:[a-z0-9-]+\\.)*[0-9]+/?$){label}(?:\\.{label})*/?$")
}

/// Any proxy key: a [`proxy_url`] or a raw port `tcp://PORT` / `udp://PORT`,
/// PORT 1..=65535.
pub fn proxy_key() -> String {
    let url = proxy_url();
    let url = url.trim_start_matches('^').trim_end_matches('$');
    format!("^(?:{url}|(?:tcp|udp)://{})$", decimal_range(1, 65535))
}

#[cfg(test)]
mod tests;
