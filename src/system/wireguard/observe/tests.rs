//! wireguard-go's answer captured from a converged gateway, and kernel
//! answers built message by message (this machine has no WireGuard module;
//! the qemu test runs the kernel path for real).

use super::*;
use crate::system::kernel::netlink::attr;
use crate::testing::fixture;

const NETWORK_51820: &str = "4dcKbDNyb6pkkRuP22OPzkHgpOb9k67iaP5R9A0xv0c=";
const PEER_A: &str = "OxvFhrgLnI9e4xzMMA2qQ7wm/xCUzxaWW5cb1JGkWSA=";
const PEER_B: &str = "LRj4SHqfSjzR+dz1Zmcq7dfiZk4tFWIm+wKv1QqGXx0=";

fn key(s: &str) -> PublicKey {
    s.parse().unwrap()
}

#[test]
fn uapi_answer_of_a_converged_interface() {
    let (d, problems) = parse_uapi(&fixture("netlink-51820-uapi.txt")).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(d.listen_port, 51820);
    assert_eq!(d.public_key, Some(key(NETWORK_51820)), "derived from the private key");
    let config: serde_json::Value = serde_json::from_str(&fixture("config.json")).unwrap();
    let private: SecretKey = config["51820"]["private_key"].as_str().unwrap().parse().unwrap();
    assert_eq!(d.private_key, Some(private));
    let a = &d.peers[&key(PEER_A)];
    assert_eq!(a.preshared_key, Some(PEER_B.parse().unwrap()));
    assert_eq!(a.endpoint, Some("10.254.0.7:41213".parse().unwrap()));
    assert_eq!(a.allowed_ips, vec!["10.80.0.2/32".parse().unwrap(), "fd80::2/128".parse().unwrap()]);
    assert_eq!((a.keepalive, a.tx, a.rx, a.latest_handshake), (Some(25), 148, 0, 0));
    let b = &d.peers[&key(PEER_B)];
    assert_eq!((b.preshared_key.as_ref(), b.endpoint, b.keepalive), (None, None, None), "zeros and 0 are none and off");
    assert_eq!(b.allowed_ips.len(), 2);
}

#[test]
fn uapi_failures_and_bad_peer_lines() {
    assert!(parse_uapi("errno=19\n\n").unwrap_err().contains("errno=19"));
    assert!(parse_uapi("listen_port=1\n").unwrap_err().contains("without errno"));
    assert!(parse_uapi("private_key=zz\nerrno=0\n\n").is_err(), "a bad interface line fails the answer");
    let text = format!("listen_port=7\npublic_key={}\nrx_bytes=lots\ntx_bytes=5\nerrno=0\n\n", "ab".repeat(32));
    let (d, problems) = parse_uapi(&text).unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(d.peers.values().next().unwrap().tx, 5, "the rest of the peer is kept");
    assert_eq!((d.private_key, d.public_key), (None, None), "no key set yet");
}

fn nested(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
    attr(kind | 0x8000, &parts.concat())
}

fn allowed(ip: &[u8], mask: u8) -> Vec<u8> {
    let family = if ip.len() == 4 { libc::AF_INET } else { libc::AF_INET6 } as u16;
    nested(0, &[attr(1, &family.to_ne_bytes()), attr(2, ip), attr(3, &[mask])])
}

fn message(device: &[Vec<u8>]) -> Message {
    let mut payload = vec![0, 1, 0, 0];
    payload.extend(device.concat());
    Message { kind: 30, payload }
}

#[test]
fn kernel_device_over_two_messages() {
    let peer_a = key(PEER_A);
    let mut sin = vec![0u8; 16];
    sin[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    sin[2..4].copy_from_slice(&41213u16.to_be_bytes());
    sin[4..8].copy_from_slice(&[127, 0, 0, 1]);
    let mut handshake = 1_764_077_400u64.to_ne_bytes().to_vec();
    handshake.extend(5u64.to_ne_bytes());
    let first = message(&[
        attr(1, &9u32.to_ne_bytes()),
        attr(2, b"wg51820\0"),
        attr(3, &[0x40; 32]),
        attr(4, &[0x41; 32]),
        attr(6, &51820u16.to_ne_bytes()),
        nested(
            8,
            &[nested(
                0,
                &[
                    attr(1, &key_bytes(&peer_a)),
                    attr(2, &[0; 32]),
                    attr(4, &sin),
                    attr(5, &25u16.to_ne_bytes()),
                    attr(6, &handshake),
                    attr(7, &9132u64.to_ne_bytes()),
                    attr(8, &18020u64.to_ne_bytes()),
                    nested(9, &[allowed(&[10, 80, 0, 2], 32)]),
                ],
            )],
        ),
    ]);
    // The same peer again: its allowed IPs did not fit in the first message.
    let v6: [u8; 16] = "fd80::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let second = message(&[nested(8, &[nested(0, &[attr(1, &key_bytes(&peer_a)), nested(9, &[allowed(&v6, 128)])])])]);
    let (d, problems) = parse_device(&[first, second]).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(d.listen_port, 51820);
    assert_eq!(d.private_key, Some(SecretKey::from_bytes([0x40; 32])));
    assert_eq!(d.public_key, Some(PublicKey::from_bytes([0x41; 32])));
    let a = &d.peers[&peer_a];
    assert_eq!(a.endpoint, Some("127.0.0.1:41213".parse().unwrap()));
    assert_eq!((a.preshared_key.as_ref(), a.keepalive, a.latest_handshake, a.rx, a.tx), (None, Some(25), 1_764_077_400, 9132, 18020));
    assert_eq!(a.allowed_ips, vec!["10.80.0.2/32".parse().unwrap(), "fd80::2/128".parse().unwrap()]);
    assert_eq!(d.peers.len(), 1);
}

fn key_bytes(k: &PublicKey) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(k.to_string()).unwrap()
}

#[test]
fn kernel_answers_that_say_nothing() {
    assert!(parse_device(&[]).is_err(), "no message: no device");
    let peer_without_key = message(&[nested(8, &[nested(0, &[attr(7, &1u64.to_ne_bytes())])])]);
    let (d, problems) = parse_device(&[peer_without_key]).unwrap();
    assert_eq!((d.peers.len(), problems.len()), (0, 1));
    assert_eq!(parse_family(&[Message { kind: 16, payload: [vec![1, 2, 0, 0], attr(1, &27u16.to_ne_bytes())].concat() }]), Some(27));
    assert_eq!(device_request("wg1")[..4], [0, 1, 0, 0], "WG_CMD_GET_DEVICE, version 1");
}
