#!/usr/bin/env python3
"""The benchmark's desired state: N networks of 10 peers, each with one
HTTPS and one HTTP name, as the daemon's JSON (`json`) or as the files a
plain shell script needs to build the same by hand (`floor DIR`: per
network its `wg setconf` text and its iptables-restore text).
Keys are fixed bytes (any 32 bytes are a WireGuard key); standard library only.

    state.py json N BASE_PORT [EXTRA_PEER_NETWORK]
        (BENCH_NODE_KEY and BENCH_NODE_ENDPOINT, if set, make network 0's
        first peer a real node; BENCH_LIMITS=1 gives every route an allow
        list, a deny list, connection limits and a bandwidth, and every
        network a bandwidth: the cost of issue 19's fields)
    state.py floor N BASE_PORT DIR
    state.py gateway-key     (network 0's private key)
"""

import base64
import json
import sys

PEERS = 10


def key(kind: int, n: int, p: int) -> str:
    raw = bytearray([0x40 | kind]) + n.to_bytes(2, "big") + p.to_bytes(2, "big") + bytes(27)
    return base64.b64encode(bytes(raw)).decode()


def peer_ip(p: int) -> str:
    return f"10.80.0.{p + 1}"


def network(n: int, extra: bool) -> dict:
    count = PEERS + (1 if extra else 0)
    peers = {key(1, n, p): {"allowed_ips": [f"{peer_ip(p)}/32"]} for p in range(1, count + 1)}
    return {
        "private_key": key(0, n, 0),
        "address": ["10.80.0.1/16"],
        "peers": peers,
        "proxy": {f"https://svc{n}.bench.test": [f"{peer_ip(1)}:443"], f"http://svc{n}.bench.test": [f"{peer_ip(1)}:80"]},
    }


def with_limits(net: dict, n: int) -> dict:
    """Every route in the object form with all of issue 19's fields."""
    limits = {
        "allow": ["203.0.113.0/24", "198.51.100.0/24", "10.251.0.0/16", "2001:db8::/32"],
        "deny": ["203.0.113.7/32"],
        "max_connections": 1000,
        "max_connections_per_client": 50,
        "bandwidth": {"ingress_mbit": 100 + n % 7, "egress_mbit": 50 + n % 5},
    }
    net["proxy"] = {k: dict(limits, upstreams=v) for k, v in net["proxy"].items()}
    net["bandwidth"] = {"ingress_mbit": 1000, "egress_mbit": 500}
    return net


def with_node(state: dict, base: int) -> dict:
    import os

    node, endpoint = os.environ.get("BENCH_NODE_KEY"), os.environ.get("BENCH_NODE_ENDPOINT")
    if node and str(base) in state:
        peers = state[str(base)]["peers"]
        first = key(1, 0, 1)
        peers[node] = dict(peers.pop(first), endpoint=endpoint)
    return state


def main() -> None:
    if sys.argv[1] == "gateway-key":
        print(key(0, 0, 0))
        return
    mode, count, base = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if mode == "json":
        import os

        extra = int(sys.argv[4]) if len(sys.argv) > 4 else -1
        limited = os.environ.get("BENCH_LIMITS") == "1"
        nets = {str(base + n): network(n, n == extra) for n in range(count)}
        if limited:
            nets = {k: with_limits(v, n) for n, (k, v) in enumerate(nets.items())}
        print(json.dumps(with_node(nets, base)))
        return
    out = sys.argv[4]
    for n in range(count):
        net = network(n, False)
        conf = f"[Interface]\nPrivateKey = {net['private_key']}\nListenPort = {base + n}\n"
        for k, p in net["peers"].items():
            conf += f"\n[Peer]\nPublicKey = {k}\nAllowedIPs = {p['allowed_ips'][0]}\n"
        with open(f"{out}/wg{n}.conf", "w") as f:
            f.write(conf)
        with open(f"{out}/rules{n}", "w") as f:
            f.write(
                "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
                f"-A PREROUTING -p tcp --dport 20443 -j DNAT --to-destination {peer_ip(1)}:443\n"
                f"-A PREROUTING -p tcp --dport 20080 -j DNAT --to-destination {peer_ip(1)}:80\n"
                "-A POSTROUTING -o wg+ -j MASQUERADE\nCOMMIT\n"
                "*filter\n:FORWARD DROP [0:0]\n-A FORWARD -i wg+ -o wg+ -j ACCEPT\n"
                "-A FORWARD -i gw-uplink -o wg+ -j ACCEPT\n"
                "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n"
            )


if __name__ == "__main__":
    main()
