//! Each pattern against its parser, on corpora of valid values and of near
//! misses (every spelling of the same address, leading zeros, upper case,
//! boundaries): the pattern matches exactly what the parser accepts.

use std::net::{Ipv4Addr, Ipv6Addr};

use fancy_regex::Regex;

use super::*;
use crate::types::{Cidr, ProxyKey, ProxyUrl, PublicKey, parse_endpoint, parse_listen_port, parse_upstream};
use crate::validate::{check_endpoint, check_interface_address, is_ipv4_compatible};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Asserts that `pattern` matches a string exactly when `accepts` does, for
/// every string of the corpus; returns how many were accepted.
fn agrees(pattern: &str, corpus: &[String], accepts: impl Fn(&str) -> bool) -> usize {
    let re = Regex::new(pattern).expect("pattern compiles");
    let mut accepted = 0;
    for s in corpus {
        let want = accepts(s);
        assert_eq!(re.is_match(s).unwrap(), want, "pattern and parser disagree on {s:?}");
        accepted += usize::from(want);
    }
    accepted
}

#[test]
fn decimal_ranges_are_exact() {
    for (lo, hi) in [(0, 32), (0, 128), (2, 65534), (1, 65535), (1, 255), (100, 999), (7, 7), (10, 19), (0, 0), (9, 10)] {
        let re = Regex::new(&format!("^{}$", decimal_range(lo, hi))).unwrap();
        for n in 0..=70_000u64 {
            assert_eq!(re.is_match(&n.to_string()).unwrap(), (lo..=hi).contains(&n), "{n} in {lo}..={hi}");
        }
        for bad in ["", "01", "+1", "-1", "1 ", "00", "1a"] {
            assert!(!re.is_match(bad).unwrap(), "{bad:?} in {lo}..={hi}");
        }
    }
    let scope = Regex::new(&format!("^{}$", decimal_range(1, u64::from(u32::MAX)))).unwrap();
    for (s, ok) in [("1", true), ("4294967295", true), ("4294967296", false), ("0", false), ("999999999", true), ("9999999999", false)] {
        assert_eq!(scope.is_match(s).unwrap(), ok, "{s}");
    }
}

#[test]
fn listen_port_keys() {
    let mut corpus: Vec<String> = (0..=70_000u32).map(|n| n.to_string()).collect();
    corpus.extend(["", "051820", "+5", "5182O", " 2", "2 ", "99999999999", "0x10"].map(String::from));
    assert_eq!(agrees(&listen_port(), &corpus, |s| parse_listen_port(s).is_ok()), 65533);
}

#[test]
fn keys() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut corpus = Vec::new();
    use base64::Engine;
    for _ in 0..4000 {
        let bytes: Vec<u8> = (0..32).map(|_| rng.below(256) as u8).collect();
        let key = base64::engine::general_purpose::STANDARD.encode(&bytes);
        corpus.push(key.clone());
        // Every other character in the last position, and other damage.
        let c = *rng.pick(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_".as_ref()) as char;
        let mut other = key.clone();
        other.replace_range(42..43, &c.to_string());
        corpus.push(other);
        corpus.push(key.replace('=', ""));
        corpus.push(format!("{key}\n"));
        corpus.push(key[1..].to_string() + "=");
    }
    let accepted = agrees(KEY, &corpus, |s| s.parse::<PublicKey>().is_ok());
    assert!(accepted > 4000, "{accepted}");
}

/// An IPv6 address with many zero segments: every compression case.
fn ipv6_segments(rng: &mut Rng) -> [u16; 8] {
    let mut s = [0u16; 8];
    for seg in &mut s {
        *seg = match rng.below(6) {
            0..=2 => 0,
            3 => rng.below(16) as u16,
            4 => 0xffff,
            _ => rng.below(0x10000) as u16,
        };
    }
    if rng.below(8) == 0 {
        // IPv4-mapped and IPv4-compatible addresses, link-local, multicast.
        s[..5].fill(0);
        s[5] = *rng.pick(&[0, 0xffff]);
    } else if rng.below(8) == 0 {
        s[0] = *rng.pick(&[0xfe80, 0xfebf, 0xfec0, 0xff00, 0xff02, 0x00ff, 0xfe7f, 0x2001]);
    }
    s
}

/// Ways to write the same address: compressing any zero run (even a single
/// zero, or a shorter run), upper case, leading zeros, a dotted tail.
fn ipv6_spellings(rng: &mut Rng, s: [u16; 8]) -> Vec<String> {
    let mut out = vec![Ipv6Addr::from(s).to_string()];
    let seg = |v: u16, style: u64| match style {
        0 => format!("{v:x}"),
        1 => format!("{v:X}"),
        _ => format!("{v:04x}"),
    };
    for _ in 0..6 {
        let style = if rng.below(4) == 0 { rng.below(3) } else { 0 };
        let text: Vec<String> = s.iter().map(|v| seg(*v, style)).collect();
        // Compress the zero run starting at `start` of length `len`, if it is one.
        let start = rng.below(8) as usize;
        let len = (rng.below(8) + 1) as usize;
        if start + len <= 8 && s[start..start + len].iter().all(|v| *v == 0) {
            out.push(format!("{}::{}", text[..start].join(":"), text[start + len..].join(":")));
        } else {
            out.push(text.join(":"));
        }
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        out.push(format!("{}:{v4}", text[..6].join(":")));
        if s[..5] == [0; 5] {
            out.push(format!("::{}{v4}", if s[5] == 0 { "" } else { "ffff:" }));
        }
    }
    out
}

fn ipv4_text(rng: &mut Rng) -> String {
    let first = *rng.pick(&[0, 10, 127, 169, 223, 224, 239, 240, 255, 100, 1]);
    let second = *rng.pick(&[254, 0, 255, 199, 1]);
    let mut s = format!("{first}.{second}.{}.{}", rng.below(256), rng.below(256));
    match rng.below(12) {
        0 => s = "255.255.255.255".into(),
        1 => s = "0.0.0.0".into(),
        2 => s = s.replacen('.', ".0", 1),
        3 => s = format!("0{s}"),
        4 => s = format!("{s}.1"),
        5 => s = s.replacen(&second.to_string(), "256", 1),
        _ => {}
    }
    s
}

fn addresses(seed: u64, n: usize) -> Vec<String> {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    for _ in 0..n {
        let s = ipv6_segments(&mut rng);
        out.extend(ipv6_spellings(&mut rng, s));
        out.push(ipv4_text(&mut rng));
    }
    out.extend(
        ["", "::", "::1", ":", ":::", "1::2::3", "1:2:3:4:5:6:7:8:9", "g::1", "1.2.3", "::ffff:1.2.3.4", "::1.2.3.4"].map(String::from),
    );
    out
}

fn cidrs(seed: u64, n: usize) -> Vec<String> {
    let mut rng = Rng(seed);
    let prefixes = ["0", "8", "16", "24", "32", "33", "64", "96", "97", "112", "128", "129", "08", "", "-1"];
    let mut out: Vec<String> = addresses(seed, n).into_iter().map(|a| format!("{a}/{}", rng.pick(&prefixes))).collect();
    out.extend(["10.0.0.1", "/8", "10.0.0.1/8/8", "10.0.0.1/ 8", "::/0", "::/128"].map(String::from));
    out
}

#[test]
fn cidrs_interface_addresses_and_allowed_ips() {
    let corpus = cidrs(0x9e37_79b9_7f4a_7c15, 700);
    let accepted = agrees(&cidr(), &corpus, |s| s.parse::<Cidr>().is_ok());
    assert!(accepted > 700, "the corpus holds valid CIDRs too: {accepted} of {}", corpus.len());
    agrees(&interface_address(), &corpus, |s| s.parse::<Cidr>().is_ok_and(|c| check_interface_address(&c).is_ok()));
    agrees(&allowed_ip(), &corpus, |s| s.parse::<Cidr>().is_ok_and(|c| !is_ipv4_compatible(&c)));
    // The pattern cannot say "host bits zero": judged on the network of each.
    let networks: Vec<String> = corpus.iter().map(|s| s.parse::<Cidr>().map_or_else(|_| s.clone(), |c| c.network().to_string())).collect();
    agrees(&access_cidr(), &networks, |s| crate::validate::access_cidr(s).is_ok());
}

#[test]
fn endpoints_and_upstreams() {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let ports = ["1", "51820", "65535", "65536", "0", "080", "", "+1"];
    let scopes = ["", "%1", "%0", "%02", "%4294967295", "%4294967296", "%eth0"];
    let mut corpus = Vec::new();
    for a in addresses(0x0123_4567_89ab_cdef, 1500) {
        let port = rng.pick(&ports);
        if a.contains(':') {
            corpus.push(format!("[{a}{}]:{port}", rng.pick(&scopes)));
            corpus.push(format!("{a}:{port}"));
        } else {
            corpus.push(format!("{a}:{port}"));
        }
    }
    let accepted = agrees(&endpoint(), &corpus, |s| parse_endpoint(s).is_ok_and(|a| check_endpoint(&a).is_ok()));
    assert!(accepted > 200, "the corpus holds valid endpoints too: {accepted}");
    let accepted = agrees(&upstream(), &corpus, |s| parse_upstream(s).is_ok());
    assert!(accepted > 80, "{accepted}");
}

#[test]
fn proxy_urls() {
    let mut rng = Rng(0x5151_7777_abab_0101);
    let pieces = ["a", "app", "example", "com", "x-1", "-a", "a-", "1", "42", "A", "a_b", "*", "", "xn--bcher-kva", "0a"];
    let mut corpus = Vec::new();
    for _ in 0..6000 {
        let labels: Vec<&str> = (0..=rng.below(4)).map(|_| *rng.pick(&pieces)).collect();
        let host = labels.join(".");
        let scheme = rng.pick(&["https://", "http://", "ftp://", "HTTPS://", "", "https:/"]);
        let tail = rng.pick(&["", "/", "//", ":443", "/x", ".", " "]);
        corpus.push(format!("{scheme}{host}{tail}"));
    }
    let label63 = "a".repeat(63);
    for (n, last) in [(3, 61), (3, 62), (4, 1), (3, 63)] {
        // 253 and 254 characters.
        let host = format!("{}.{}", vec![label63.as_str(); n].join("."), "b".repeat(last));
        corpus.push(format!("https://{host}"));
        corpus.push(format!("http://{host}/"));
    }
    corpus.push(format!("https://{}a.b", "a".repeat(63)));
    let accepted = agrees(&proxy_url(), &corpus, |s| s.parse::<ProxyUrl>().is_ok());
    assert!(accepted > 100, "{accepted}");
}

#[test]
fn proxy_keys() {
    let mut rng = Rng(0x7070_1234_cdcd_0202);
    let ports = ["0", "1", "22", "65535", "65536", "080", "+80", "-1", " 80", "80 ", "", "99999", "1e3", "443/"];
    let hosts = ["app.example.com", "a", "A.b", "x/"];
    let mut corpus = Vec::new();
    for _ in 0..3000 {
        let scheme = rng.pick(&["tcp://", "udp://", "https://", "http://", "TCP://", "sctp://", "tcp:/", ""]);
        let tail = if rng.below(2) == 0 { *rng.pick(&ports) } else { *rng.pick(&hosts) };
        corpus.push(format!("{scheme}{tail}"));
    }
    let accepted = agrees(&proxy_key(), &corpus, |s| s.parse::<ProxyKey>().is_ok());
    assert!(accepted > 300, "{accepted}");
}
