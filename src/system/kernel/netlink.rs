//! Netlink without a process: a minimal client (one socket, one request,
//! every answer until the end of the dump or the acknowledgement) and pure
//! parsers of the answers into the observed types. Reading a namespace's
//! links, addresses and routes this way costs a few system calls instead of
//! an `ip` process; the parsers are tested on dumps captured from a real
//! converged gateway (`tests/fixtures/converged/netlink-*`).

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::observed::Link;
use crate::types::Cidr;

pub const NETLINK_ROUTE: i32 = 0;
pub const NETLINK_NETFILTER: i32 = 12;
pub const NETLINK_GENERIC: i32 = 16;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 1;
pub const NLM_F_ACK: u16 = 4;
pub const NLM_F_DUMP: u16 = 0x300;
const NLA_TYPE_MASK: u16 = 0x3fff;
const HEADER: usize = 16;

pub const RTM_GETLINK: u16 = 18;
pub const RTM_GETADDR: u16 = 22;
pub const RTM_GETROUTE: u16 = 26;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;

/// One answer: its type and what follows the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: u16,
    pub payload: Vec<u8>,
}

/// A netlink socket of one protocol, in the network namespace of the thread
/// that opened it (for ever: a socket does not follow its thread).
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Socket {
    pub fn open(protocol: i32) -> io::Result<Socket> {
        // SAFETY: plain system calls on a descriptor this function owns.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // A kernel that never answers must not hang the reader.
        let timeout = libc::timeval { tv_sec: 2, tv_usec: 0 };
        let size = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
        // SAFETY: `timeout` outlives the call and `size` is its size.
        let r = unsafe { libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&raw const timeout).cast(), size) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket { fd, seq: 0, buf: vec![0; 1 << 17] })
    }

    /// Sends one request and returns every answer to it: a dump's messages
    /// until its end, or a request's answers until its acknowledgement.
    pub fn request(&mut self, kind: u16, flags: u16, payload: &[u8]) -> io::Result<Vec<Message>> {
        self.seq = self.seq.wrapping_add(1);
        let msg = encode(kind, flags | NLM_F_REQUEST, self.seq, payload);
        // SAFETY: `msg` is a valid buffer of its length; the kernel is the
        // destination when no address is given on a netlink socket.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut out = Vec::new();
        loop {
            // SAFETY: `buf` is a valid writable buffer of its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), self.buf.as_mut_ptr().cast(), self.buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if answers(&self.buf[..n as usize], self.seq, &mut out)? {
                return Ok(out);
            }
        }
    }
}

/// A request: header, then the payload, padded.
pub fn encode(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = HEADER + payload.len();
    let mut m = Vec::with_capacity(align(len));
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(payload);
    m.resize(align(len), 0);
    m
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// Splits one received datagram into messages (those of sequence `seq`:
/// a late answer to an earlier request is skipped) appended to `out`; true
/// when the answer is complete. An error message with a non-zero code is
/// the request's failure.
pub fn answers(buf: &[u8], seq: u32, out: &mut Vec<Message>) -> io::Result<bool> {
    let mut rest = buf;
    while rest.len() >= HEADER {
        let len = u32_at(rest, 0) as usize;
        if len < HEADER || len > rest.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("netlink message of length {len} in {} bytes", rest.len())));
        }
        let (kind, this_seq, payload) = (u16::from_ne_bytes([rest[4], rest[5]]), u32_at(rest, 8), &rest[HEADER..len]);
        rest = &rest[align(len).min(rest.len())..];
        if this_seq != seq {
            continue;
        }
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = payload.get(..4).map_or(-libc::EIO, |c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
                return if code == 0 { Ok(true) } else { Err(io::Error::from_raw_os_error(-code)) };
            }
            _ => out.push(Message { kind, payload: payload.to_vec() }),
        }
    }
    Ok(false)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The attributes in `buf`: (type without the nested/byte-order flags, value).
pub fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > rest.len() {
            return None;
        }
        let value = &rest[4..len];
        rest = &rest[align(len).min(rest.len())..];
        Some((kind, value))
    })
}

/// An attribute: length, type, value, padded.
pub fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut a = Vec::with_capacity(align(len));
    a.extend_from_slice(&(len as u16).to_ne_bytes());
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(value);
    a.resize(align(len), 0);
    a
}

pub fn u16_of(v: &[u8]) -> Option<u16> {
    Some(u16::from_ne_bytes(v.get(..2)?.try_into().ok()?))
}

pub fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
}

pub fn u64_of(v: &[u8]) -> Option<u64> {
    Some(u64::from_ne_bytes(v.get(..8)?.try_into().ok()?))
}

/// A NUL-terminated string attribute.
pub fn str_of(v: &[u8]) -> Option<&str> {
    std::str::from_utf8(v.split(|b| *b == 0).next()?).ok()
}

pub fn ip_of(v: &[u8]) -> Option<IpAddr> {
    match v.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(v).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(v).ok()?))),
        _ => None,
    }
}

/// A `struct sockaddr_in` or `sockaddr_in6` (port in network order).
pub fn sockaddr_of(v: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16_of(v)?);
    let port = u16::from_be_bytes(v.get(2..4)?.try_into().ok()?);
    let ip = match family {
        libc::AF_INET => ip_of(v.get(4..8)?)?,
        libc::AF_INET6 => ip_of(v.get(8..24)?)?,
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The requests that dump a namespace's links, addresses and routes (all
/// families: `rtgenmsg` / `ifinfomsg` / `rtmsg` with family unspecified).
pub fn route_dumps() -> [(u16, Vec<u8>); 3] {
    [(RTM_GETLINK, vec![0; 16]), (RTM_GETADDR, vec![0; 8]), (RTM_GETROUTE, vec![0; 12])]
}

/// Links by name with their global addresses (sorted), from the answers to
/// the link and address dumps; also the links' names by index.
pub fn parse_links(links: &[Message], addrs: &[Message]) -> (BTreeMap<String, Link>, BTreeMap<u32, String>) {
    let mut by_index = BTreeMap::new();
    let mut out = BTreeMap::new();
    for m in links.iter().filter(|m| m.kind == RTM_NEWLINK && m.payload.len() >= 16) {
        let p = &m.payload;
        let index = u32_of(&p[4..8]).unwrap_or(0);
        let flags = u32_of(&p[8..12]).unwrap_or(0);
        let mut link = Link { ifindex: index, up: flags & libc::IFF_UP as u32 != 0, ..Default::default() };
        let mut name = None;
        for (kind, v) in attrs(&p[16..]) {
            match kind {
                libc::IFLA_IFNAME => name = str_of(v).map(str::to_string),
                libc::IFLA_MTU => link.mtu = u32_of(v).unwrap_or(0),
                _ => {}
            }
        }
        if let Some(name) = name {
            by_index.insert(index, name.clone());
            out.insert(name, link);
        }
    }
    for m in addrs.iter().filter(|m| m.kind == RTM_NEWADDR && m.payload.len() >= 8) {
        let p = &m.payload;
        let (prefix, scope, index) = (p[1], p[3], u32_of(&p[4..8]).unwrap_or(0));
        // Global scope only: link-local addresses come and go on their own.
        if scope != libc::RT_SCOPE_UNIVERSE {
            continue;
        }
        let (mut local, mut address) = (None, None);
        for (kind, v) in attrs(&p[8..]) {
            match kind {
                libc::IFA_LOCAL => local = ip_of(v),
                libc::IFA_ADDRESS => address = ip_of(v),
                _ => {}
            }
        }
        let link = by_index.get(&index).and_then(|n| out.get_mut(n));
        if let (Some(link), Some(cidr)) = (link, local.or(address).and_then(|ip| Cidr::new(ip, prefix))) {
            link.addresses.push(cidr);
        }
    }
    for link in out.values_mut() {
        link.addresses.sort();
    }
    (out, by_index)
}

/// Each link's root qdisc kind (`noqueue`, `htb`, ...), by name: it comes
/// with the link dump, so whether a link is shaped costs nothing to see.
pub fn link_qdiscs(links: &[Message]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for m in links.iter().filter(|m| m.kind == RTM_NEWLINK && m.payload.len() >= 16) {
        let (mut name, mut qdisc) = (None, None);
        for (kind, v) in attrs(&m.payload[16..]) {
            match kind {
                libc::IFLA_IFNAME => name = str_of(v).map(str::to_string),
                libc::IFLA_QDISC => qdisc = str_of(v).map(str::to_string),
                _ => {}
            }
        }
        if let (Some(name), Some(qdisc)) = (name, qdisc) {
            out.insert(name, qdisc);
        }
    }
    out
}

/// Connections open to `dst` in a conntrack dump, by protocol and original
/// destination port (a DNAT port: the tuple before the translation): TCP
/// ones established, UDP ones all (a UDP entry is a live session).
pub fn open_connections(messages: &[Message], dst: Ipv4Addr) -> BTreeMap<(crate::types::Transport, u16), u64> {
    use crate::types::Transport;
    const CT_NEW: u16 = 1 << 8;
    // linux/netfilter/nfnetlink_conntrack.h; TCP_CONNTRACK_ESTABLISHED.
    const CTA_TUPLE_ORIG: u16 = 1;
    const CTA_PROTOINFO: u16 = 4;
    const CTA_TUPLE_IP: u16 = 1;
    const CTA_TUPLE_PROTO: u16 = 2;
    const CTA_IP_V4_DST: u16 = 2;
    const CTA_PROTO_NUM: u16 = 1;
    const CTA_PROTO_DST_PORT: u16 = 3;
    const CTA_PROTOINFO_TCP: u16 = 1;
    const CTA_PROTOINFO_TCP_STATE: u16 = 1;
    const ESTABLISHED: u8 = 3;
    let nested = |v: &[u8], kind: u16| attrs(v).find(|(k, _)| *k == kind).map(|(_, v)| v.to_vec());
    let mut out = BTreeMap::new();
    for m in messages.iter().filter(|m| m.kind == CT_NEW && m.payload.len() >= 4) {
        let top = &m.payload[4..];
        let Some(orig) = nested(top, CTA_TUPLE_ORIG) else { continue };
        let ip = nested(&orig, CTA_TUPLE_IP).and_then(|ip| nested(&ip, CTA_IP_V4_DST)).and_then(|v| ip_of(&v));
        let proto = nested(&orig, CTA_TUPLE_PROTO);
        let number = proto.as_ref().and_then(|p| nested(p, CTA_PROTO_NUM)).and_then(|v| v.first().copied());
        let port =
            proto.as_ref().and_then(|p| nested(p, CTA_PROTO_DST_PORT)).and_then(|v| Some(u16::from_be_bytes(v.get(..2)?.try_into().ok()?)));
        let (Some(IpAddr::V4(ip)), Some(number), Some(port)) = (ip, number, port) else { continue };
        let Some(proto) = Transport::of_protocol_number(u32::from(number)) else { continue };
        if ip != dst {
            continue;
        }
        if proto == Transport::Tcp {
            let state = nested(top, CTA_PROTOINFO)
                .and_then(|i| nested(&i, CTA_PROTOINFO_TCP))
                .and_then(|t| nested(&t, CTA_PROTOINFO_TCP_STATE))
                .and_then(|v| v.first().copied());
            if state != Some(ESTABLISHED) {
                continue;
            }
        }
        *out.entry((proto, port)).or_insert(0) += 1;
    }
    out
}

/// The dump request (`IPCTNL_MSG_CT_GET`, IPv4) of the connections whose
/// original destination is `dst`. The kernel filters them (`CTA_FILTER`,
/// Linux 5.9 and later), so the node-to-node flows of a busy network are
/// neither copied nor parsed at each drift check; an older kernel ignores
/// the attribute and dumps them all, which [`open_connections`] filters
/// the same way.
pub fn conntrack_request(dst: Ipv4Addr) -> Vec<u8> {
    // linux/netfilter/nfnetlink_conntrack.h
    const CTA_TUPLE_ORIG: u16 = 1;
    const CTA_FILTER: u16 = 25;
    const CTA_TUPLE_IP: u16 = 1;
    const CTA_IP_V4_DST: u16 = 2;
    const CTA_FILTER_ORIG_FLAGS: u16 = 1;
    const CTA_FILTER_FLAG_CTA_IP_DST: u32 = 1 << 1;
    // The filter's attribute is parsed strictly: its nested flag is needed.
    const NLA_F_NESTED: u16 = 1 << 15;
    let tuple_ip = attr(CTA_TUPLE_IP | NLA_F_NESTED, &attr(CTA_IP_V4_DST, &dst.octets()));
    let flags = attr(CTA_FILTER_ORIG_FLAGS, &CTA_FILTER_FLAG_CTA_IP_DST.to_ne_bytes());
    let mut payload = vec![libc::AF_INET as u8, 0, 0, 0];
    payload.extend(attr(CTA_TUPLE_ORIG | NLA_F_NESTED, &tuple_ip));
    payload.extend(attr(CTA_FILTER | NLA_F_NESTED, &flags));
    payload
}

/// Static routes of the main table through link `oif`, sorted: the kernel's
/// own (`proto kernel`), other tables and other types are left out.
pub fn parse_routes(routes: &[Message], oif: u32) -> Vec<Cidr> {
    const RTPROT_KERNEL: u8 = 2;
    let mut out = Vec::new();
    for m in routes.iter().filter(|m| m.kind == RTM_NEWROUTE && m.payload.len() >= 12) {
        let p = &m.payload;
        let (family, dst_len, table, protocol, kind) = (i32::from(p[0]), p[1], p[4], p[5], p[7]);
        let mut table = u32::from(table);
        let (mut dst, mut dev) = (None, None);
        for (k, v) in attrs(&p[12..]) {
            match k {
                libc::RTA_DST => dst = ip_of(v),
                libc::RTA_OIF => dev = u32_of(v),
                libc::RTA_TABLE => table = u32_of(v).unwrap_or(table),
                _ => {}
            }
        }
        let ours = dev == Some(oif) && table == u32::from(libc::RT_TABLE_MAIN) && protocol != RTPROT_KERNEL && kind == libc::RTN_UNICAST;
        if !ours {
            continue;
        }
        let dst = dst.or(match family {
            libc::AF_INET => Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            libc::AF_INET6 => Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            _ => None,
        });
        if let Some(c) = dst.and_then(|ip| Cidr::new(ip, dst_len)) {
            out.push(c);
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests;
