#!/usr/bin/env python3
"""Captures what the kernel and wireguard-go answer to the gateway's own
reads (src/system/kernel/observer.rs) in the current network namespace: the link,
address and route dumps (raw netlink bytes, every datagram one after the
other) and, given a wireguard-go socket, its answer to `get=1`.
Run by scripts/capture-fixtures.sh inside each namespace:
    ip netns exec NS capture-netlink.py OUT_PREFIX [UAPI_SOCKET]"""

import socket
import struct
import sys

NLM_F_REQUEST, NLM_F_DUMP = 1, 0x300
NLMSG_DONE, NLMSG_ERROR = 3, 2
DUMPS = {"links": (18, 16), "addrs": (22, 8), "routes": (26, 12)}  # type, family header size


def dump(kind: int, header: int) -> bytes:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    payload = bytes(header)
    s.send(struct.pack("=IHHII", 16 + len(payload), kind, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + payload)
    out = b""
    while True:
        data = s.recv(1 << 17)
        out += data
        off = 0
        while off + 16 <= len(data):
            length, typ = struct.unpack_from("=IH", data, off)
            if typ in (NLMSG_DONE, NLMSG_ERROR):
                return out
            off += (length + 3) & ~3


def main() -> None:
    prefix = sys.argv[1]
    for name, (kind, header) in DUMPS.items():
        with open(f"{prefix}-{name}.bin", "wb") as f:
            f.write(dump(kind, header))
    if len(sys.argv) > 2:
        u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        u.connect(sys.argv[2])
        u.sendall(b"get=1\n\n")
        answer = b""
        while not answer.endswith(b"\n\n"):
            chunk = u.recv(16384)
            if not chunk:
                break
            answer += chunk
        with open(f"{prefix}-uapi.txt", "wb") as f:
            f.write(answer)


if __name__ == "__main__":
    main()
