//! The parsers on dumps captured from a really converged gateway
//! (`scripts/capture-fixtures.sh`), and the framing on built messages.

use super::*;
use crate::testing::netlink_fixture;

fn cidrs(list: &[&str]) -> Vec<Cidr> {
    list.iter().map(|c| c.parse().unwrap()).collect()
}

#[test]
fn links_and_addresses_of_a_converged_namespace() {
    let (links, by_index) = parse_links(&netlink_fixture("netlink-51820-links.bin"), &netlink_fixture("netlink-51820-addrs.bin"));
    let wg = &links["wg51820"];
    assert!(wg.up);
    assert_eq!(wg.mtu, 1380);
    assert_eq!(wg.addresses, cidrs(&["10.80.0.1/16", "fd80::1/64"]), "link-local addresses left out");
    assert_eq!(by_index[&wg.ifindex], "wg51820");
    let uplink = &links["gw-uplink"];
    assert!(uplink.up);
    assert_eq!(uplink.addresses, cidrs(&["10.199.202.108/16"]));
    assert!(links["lo"].addresses.is_empty(), "loopback's addresses are host scope");
}

#[test]
fn static_routes_through_the_interface_only() {
    let (links, _) = parse_links(&netlink_fixture("netlink-51820-links.bin"), &netlink_fixture("netlink-51820-addrs.bin"));
    let routes = netlink_fixture("netlink-51820-routes.bin");
    assert_eq!(parse_routes(&routes, links["wg51820"].ifindex), cidrs(&["192.168.7.0/24"]), "kernel routes of the subnets left out");
    assert!(parse_routes(&routes, links["gw-uplink"].ifindex).is_empty(), "the uplink has only the kernel's route");
}

#[test]
fn the_bridge_from_the_root_namespace() {
    let (links, _) = parse_links(&netlink_fixture("netlink-root-links.bin"), &netlink_fixture("netlink-root-addrs.bin"));
    assert_eq!(links["gwbr0"].addresses, cidrs(&["10.199.0.1/16"]));
}

/// A route message: rtmsg, then attributes.
fn route(family: u8, dst_len: u8, table: u8, protocol: u8, kind: u8, attributes: &[Vec<u8>]) -> Message {
    let mut payload = vec![family, dst_len, 0, 0, table, protocol, 0, kind, 0, 0, 0, 0];
    attributes.iter().for_each(|a| payload.extend_from_slice(a));
    Message { kind: RTM_NEWROUTE, payload }
}

#[test]
fn default_routes_keep_their_family_and_other_tables_are_left_out() {
    let oif = attr(libc::RTA_OIF, &7u32.to_ne_bytes());
    let v4 = route(libc::AF_INET as u8, 0, 254, 4, 1, std::slice::from_ref(&oif));
    let v6 = route(libc::AF_INET6 as u8, 0, 254, 3, 1, std::slice::from_ref(&oif));
    let other_table = route(libc::AF_INET as u8, 24, 100, 4, 1, &[oif.clone(), attr(libc::RTA_DST, &[10, 9, 0, 0])]);
    let big_table =
        route(libc::AF_INET as u8, 24, 252, 4, 1, &[oif.clone(), attr(libc::RTA_DST, &[10, 8, 0, 0]), attr(15, &1000u32.to_ne_bytes())]);
    let blackhole = route(libc::AF_INET as u8, 24, 254, 4, 6, &[oif.clone(), attr(libc::RTA_DST, &[10, 7, 0, 0])]);
    let elsewhere =
        route(libc::AF_INET as u8, 24, 254, 4, 1, &[attr(libc::RTA_OIF, &8u32.to_ne_bytes()), attr(libc::RTA_DST, &[10, 6, 0, 0])]);
    let got = parse_routes(&[v4, v6, other_table, big_table, blackhole, elsewhere], 7);
    assert_eq!(got, cidrs(&["0.0.0.0/0", "::/0"]));
}

#[test]
fn framing_of_answers() {
    let done = encode(NLMSG_DONE, 0, 5, &[0; 4]);
    let mut buf = encode(RTM_NEWLINK, 2, 5, &[1, 2, 3]);
    buf.extend(encode(RTM_NEWLINK, 2, 4, &[9]));
    let mut out = Vec::new();
    assert!(!answers(&buf, 5, &mut out).unwrap(), "a dump goes on until its end");
    assert_eq!(out, [Message { kind: RTM_NEWLINK, payload: vec![1, 2, 3] }], "a late answer to request 4 is skipped");
    assert!(answers(&done, 5, &mut out).unwrap());
    let ack = encode(NLMSG_ERROR, 0, 6, &0i32.to_ne_bytes());
    assert!(answers(&ack, 6, &mut Vec::new()).unwrap(), "error 0 is the acknowledgement");
    let refused = encode(NLMSG_ERROR, 0, 6, &(-libc::ENODEV).to_ne_bytes());
    assert_eq!(answers(&refused, 6, &mut Vec::new()).unwrap_err().raw_os_error(), Some(libc::ENODEV));
    let mut truncated = encode(RTM_NEWLINK, 2, 5, &[0; 8]);
    truncated.truncate(20);
    assert!(answers(&truncated, 5, &mut Vec::new()).is_err(), "a message longer than the datagram");
}

#[test]
fn attributes_and_values() {
    let mut buf = attr(3, b"wg0\0");
    buf.extend(attr(4 | 0x8000, &1420u32.to_ne_bytes()));
    let got: Vec<(u16, Vec<u8>)> = attrs(&buf).map(|(k, v)| (k, v.to_vec())).collect();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].0, str_of(&got[0].1)), (3, Some("wg0")));
    assert_eq!((got[1].0, u32_of(&got[1].1)), (4, Some(1420)), "the nested flag is not part of the type");
    assert_eq!(attrs(&[8, 0, 1]).count(), 0, "a cut attribute ends the list");
    let mut sin6 = vec![0u8; 28];
    sin6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
    sin6[2..4].copy_from_slice(&51820u16.to_be_bytes());
    sin6[8..24].copy_from_slice(&"fd00::7".parse::<std::net::Ipv6Addr>().unwrap().octets());
    assert_eq!(sockaddr_of(&sin6), Some("[fd00::7]:51820".parse().unwrap()));
    assert_eq!(sockaddr_of(&[0; 16]), None, "no endpoint");
}

/// A conntrack entry as the kernel dumps it (`IPCTNL_MSG_CT_NEW`: nfgenmsg,
/// then nested attributes; ports in network order).
fn conntrack_entry(dst: [u8; 4], proto: u8, dport: u16, tcp_state: Option<u8>) -> Message {
    let nest = |kind: u16, inner: Vec<u8>| attr(kind | 0x8000, &inner);
    let ip = nest(1, [attr(1, &[10, 199, 0, 1]), attr(2, &dst)].concat());
    let ports = nest(2, [attr(1, &[proto]), attr(2, &40000u16.to_be_bytes()), attr(3, &dport.to_be_bytes())].concat());
    let mut payload = vec![libc::AF_INET as u8, 0, 0, 0];
    payload.extend(nest(1, [ip, ports].concat()));
    if let Some(state) = tcp_state {
        payload.extend(nest(4, nest(1, attr(1, &[state]))));
    }
    Message { kind: 1 << 8, payload }
}

#[test]
fn open_connections_by_dnat_port() {
    use crate::types::Transport;
    let veth = [10, 199, 202, 108];
    let dump = vec![
        conntrack_entry(veth, 6, 20001, Some(3)),
        conntrack_entry(veth, 6, 20001, Some(3)),
        conntrack_entry(veth, 6, 20001, Some(7)), // TIME_WAIT: closed
        conntrack_entry(veth, 17, 20001, None),
        conntrack_entry([10, 80, 0, 2], 6, 20001, Some(3)), // not to the veth's address
        conntrack_entry(veth, 1, 0, None),                  // ICMP
        Message { kind: 1 << 8, payload: vec![2, 0] },      // cut short
        Message { kind: 3, payload: vec![] },
    ];
    let open = open_connections(&dump, Ipv4Addr::from(veth));
    assert_eq!(open, BTreeMap::from([((Transport::Tcp, 20001), 2), ((Transport::Udp, 20001), 1)]));
}

/// The filtered dump request, byte for byte as `nfnetlink_conntrack.h`
/// lays it out (written out here by hand, not built with `attr`).
#[test]
fn the_conntrack_request_asks_the_kernel_for_one_destination() {
    let ne16 = |v: u16| v.to_ne_bytes();
    let mut want = vec![2, 0, 0, 0]; // nfgenmsg: AF_INET, version 0, resource 0
    want.extend(ne16(16)); // CTA_TUPLE_ORIG, nested: 4 + 12
    want.extend(ne16(0x8001));
    want.extend(ne16(12)); // CTA_TUPLE_IP, nested: 4 + 8
    want.extend(ne16(0x8001));
    want.extend(ne16(8)); // CTA_IP_V4_DST: the address in network order
    want.extend(ne16(2));
    want.extend([10, 199, 202, 108]);
    want.extend(ne16(12)); // CTA_FILTER, nested: 4 + 8
    want.extend(ne16(0x8000 | 25));
    want.extend(ne16(8)); // CTA_FILTER_ORIG_FLAGS: CTA_FILTER_FLAG_CTA_IP_DST
    want.extend(ne16(1));
    want.extend(2u32.to_ne_bytes());
    assert_eq!(conntrack_request(Ipv4Addr::new(10, 199, 202, 108)), want);
}
