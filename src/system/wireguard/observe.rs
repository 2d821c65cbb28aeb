//! WireGuard's state without `wg show`: wireguard-go's UAPI answer to
//! `get=1` (key=value lines, keys in hex) and the kernel module's generic
//! netlink answer to `WG_CMD_GET_DEVICE`, both parsed into [`WgDump`].

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::observed::{WgDump, WgPeer};
use crate::system::kernel::netlink::{Message, attr, attrs, ip_of, sockaddr_of, str_of, u16_of, u64_of};
use crate::types::{Cidr, PublicKey, SecretKey};

/// What wireguard-go is asked on its socket.
pub const UAPI_GET: &[u8] = b"get=1\n\n";

fn hex_key(s: &str) -> Result<[u8; 32], String> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("not 64 hex digits".into());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn secret(bytes: [u8; 32]) -> Option<SecretKey> {
    let k = SecretKey::from_bytes(bytes);
    (!k.is_zero()).then_some(k)
}

fn new_peer() -> WgPeer {
    WgPeer { preshared_key: None, endpoint: None, allowed_ips: Vec::new(), latest_handshake: 0, rx: 0, tx: 0, keepalive: None }
}

/// Parses wireguard-go's answer to `get=1`. The interface's public key is
/// derived from its private key (the protocol does not send it). A peer
/// line that does not parse is returned as a problem; a failed `errno` or a
/// bad interface line fails the whole answer.
pub fn parse_uapi(text: &str) -> Result<(WgDump, Vec<String>), String> {
    let mut dump = WgDump { private_key: None, public_key: None, listen_port: 0, peers: BTreeMap::new() };
    let mut problems = Vec::new();
    let mut peer: Option<(PublicKey, WgPeer)> = None;
    let mut errno = None;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (key, value) =
            line.split_once('=').ok_or_else(|| format!("line without '=': {:?}", line.chars().take(40).collect::<String>()))?;
        match (key, &mut peer) {
            ("errno", _) => errno = Some(value.to_string()),
            ("public_key", _) => {
                if let Some((k, p)) = peer.take() {
                    dump.peers.insert(k, p);
                }
                match hex_key(value) {
                    Ok(k) => peer = Some((PublicKey::from_bytes(k), new_peer())),
                    Err(e) => problems.push(format!("peer public key {e}")),
                }
            }
            ("private_key", None) => dump.private_key = secret(hex_key(value).map_err(|e| format!("private key {e}"))?),
            ("listen_port", None) => dump.listen_port = value.parse().map_err(|_| format!("bad listen port {value:?}"))?,
            (_, None) => {}
            (_, Some((k, p))) => {
                if let Err(e) = peer_field(p, key, value) {
                    problems.push(format!("peer {k}: {e}"));
                }
            }
        }
    }
    if let Some((k, p)) = peer {
        dump.peers.insert(k, p);
    }
    match errno.as_deref() {
        Some("0") => {}
        Some(e) => return Err(format!("wireguard-go answered errno={e}")),
        None => return Err("answer ends without errno".into()),
    }
    dump.public_key = dump.private_key.as_ref().map(SecretKey::public_key);
    Ok((dump, problems))
}

fn peer_field(p: &mut WgPeer, key: &str, value: &str) -> Result<(), String> {
    let num = |what: &str| value.parse::<u64>().map_err(|_| format!("bad {what} {value:?}"));
    match key {
        "preshared_key" => p.preshared_key = secret(hex_key(value).map_err(|e| format!("preshared key {e}"))?),
        "endpoint" => p.endpoint = Some(value.parse::<SocketAddr>().map_err(|_| format!("bad endpoint {value:?}"))?),
        "last_handshake_time_sec" => p.latest_handshake = num("handshake")? as i64,
        "rx_bytes" => p.rx = num("rx bytes")?,
        "tx_bytes" => p.tx = num("tx bytes")?,
        "persistent_keepalive_interval" => {
            p.keepalive = match num("keepalive")? {
                0 => None,
                k => Some(u16::try_from(k).map_err(|_| format!("bad keepalive {k}"))?),
            }
        }
        "allowed_ip" => p.allowed_ips.push(value.parse::<Cidr>().or_else(|_| parse_any_cidr(value))?),
        _ => {}
    }
    p.allowed_ips.sort();
    Ok(())
}

/// An allowed IP as WireGuard prints it (not necessarily canonical).
fn parse_any_cidr(s: &str) -> Result<Cidr, String> {
    let (a, p) = s.split_once('/').ok_or_else(|| format!("bad allowed ip {s:?}"))?;
    let ip = a.parse().map_err(|_| format!("bad allowed ip {s:?}"))?;
    p.parse().ok().and_then(|p| Cidr::new(ip, p)).ok_or_else(|| format!("bad allowed ip {s:?}"))
}

// Generic netlink: the controller, and WireGuard's family (linux/wireguard.h).
pub const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const WG_CMD_GET_DEVICE: u8 = 0;
const WGDEVICE_A_IFNAME: u16 = 2;
const WGDEVICE_A_PRIVATE_KEY: u16 = 3;
const WGDEVICE_A_PUBLIC_KEY: u16 = 4;
const WGDEVICE_A_LISTEN_PORT: u16 = 6;
const WGDEVICE_A_PEERS: u16 = 8;
const WGPEER_A_PUBLIC_KEY: u16 = 1;
const WGPEER_A_PRESHARED_KEY: u16 = 2;
const WGPEER_A_ENDPOINT: u16 = 4;
const WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL: u16 = 5;
const WGPEER_A_LAST_HANDSHAKE_TIME: u16 = 6;
const WGPEER_A_RX_BYTES: u16 = 7;
const WGPEER_A_TX_BYTES: u16 = 8;
const WGPEER_A_ALLOWEDIPS: u16 = 9;
const WGALLOWEDIP_A_IPADDR: u16 = 2;
const WGALLOWEDIP_A_CIDR_MASK: u16 = 3;

fn genl(cmd: u8, attributes: &[u8]) -> Vec<u8> {
    let mut p = vec![cmd, 1, 0, 0];
    p.extend_from_slice(attributes);
    p
}

/// The controller request that resolves the id of the `wireguard` family.
pub fn family_request() -> Vec<u8> {
    genl(CTRL_CMD_GETFAMILY, &attr(CTRL_ATTR_FAMILY_NAME, b"wireguard\0"))
}

pub fn parse_family(msgs: &[Message]) -> Option<u16> {
    msgs.iter().find_map(|m| attrs(m.payload.get(4..)?).find(|(k, _)| *k == CTRL_ATTR_FAMILY_ID).and_then(|(_, v)| u16_of(v)))
}

/// The dump request of one device by name.
pub fn device_request(ifname: &str) -> Vec<u8> {
    let mut name = ifname.as_bytes().to_vec();
    name.push(0);
    genl(WG_CMD_GET_DEVICE, &attr(WGDEVICE_A_IFNAME, &name))
}

fn key32(v: &[u8]) -> Option<[u8; 32]> {
    v.try_into().ok()
}

/// Parses the kernel's answer to [`device_request`]: one device over one or
/// more messages; a peer with many allowed IPs may continue in the next
/// message (the same public key again), whose IPs are then added.
pub fn parse_device(msgs: &[Message]) -> Result<(WgDump, Vec<String>), String> {
    if msgs.is_empty() {
        return Err("no answer for the device".into());
    }
    let mut dump = WgDump { private_key: None, public_key: None, listen_port: 0, peers: BTreeMap::new() };
    let mut problems = Vec::new();
    for m in msgs {
        let Some(body) = m.payload.get(4..) else { continue };
        for (kind, v) in attrs(body) {
            match kind {
                WGDEVICE_A_PRIVATE_KEY => dump.private_key = key32(v).and_then(secret),
                WGDEVICE_A_PUBLIC_KEY => dump.public_key = key32(v).filter(|k| *k != [0; 32]).map(PublicKey::from_bytes),
                WGDEVICE_A_LISTEN_PORT => dump.listen_port = u16_of(v).unwrap_or(0),
                WGDEVICE_A_PEERS => {
                    for (_, peer) in attrs(v) {
                        match parse_genl_peer(peer) {
                            Ok((key, p)) => merge_peer(&mut dump.peers, key, p),
                            Err(e) => problems.push(e),
                        }
                    }
                }
                WGDEVICE_A_IFNAME if str_of(v).is_none() => return Err("bad interface name".into()),
                _ => {}
            }
        }
    }
    Ok((dump, problems))
}

fn merge_peer(peers: &mut BTreeMap<PublicKey, WgPeer>, key: PublicKey, p: WgPeer) {
    match peers.get_mut(&key) {
        Some(before) => {
            before.allowed_ips.extend(p.allowed_ips);
            before.allowed_ips.sort();
        }
        None => {
            peers.insert(key, p);
        }
    }
}

fn parse_genl_peer(v: &[u8]) -> Result<(PublicKey, WgPeer), String> {
    let mut key = None;
    let mut p = new_peer();
    for (kind, a) in attrs(v) {
        match kind {
            WGPEER_A_PUBLIC_KEY => key = key32(a).map(PublicKey::from_bytes),
            WGPEER_A_PRESHARED_KEY => p.preshared_key = key32(a).and_then(secret),
            WGPEER_A_ENDPOINT => p.endpoint = sockaddr_of(a),
            WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL => p.keepalive = u16_of(a).filter(|k| *k > 0),
            // struct __kernel_timespec: seconds first.
            WGPEER_A_LAST_HANDSHAKE_TIME => p.latest_handshake = u64_of(a).unwrap_or(0) as i64,
            WGPEER_A_RX_BYTES => p.rx = u64_of(a).unwrap_or(0),
            WGPEER_A_TX_BYTES => p.tx = u64_of(a).unwrap_or(0),
            WGPEER_A_ALLOWEDIPS => {
                for (_, ip) in attrs(a) {
                    let fields: BTreeMap<u16, &[u8]> = attrs(ip).collect();
                    let addr = fields.get(&WGALLOWEDIP_A_IPADDR).and_then(|v| ip_of(v));
                    let mask = fields.get(&WGALLOWEDIP_A_CIDR_MASK).and_then(|v| v.first().copied());
                    let cidr = addr.zip(mask).and_then(|(a, m)| Cidr::new(a, m)).ok_or("a peer's allowed IP does not parse")?;
                    p.allowed_ips.push(cidr);
                }
            }
            _ => {}
        }
    }
    p.allowed_ips.sort();
    let key = key.ok_or("a peer without a public key")?;
    Ok((key, p))
}

#[cfg(test)]
mod tests;
