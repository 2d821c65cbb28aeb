#!/usr/bin/env python3
"""Times the API's answer to hostile bodies (issue 18, item 5).

Starts the daemon (no root needed: it touches nothing on the system for a
refused body) on a free loopback port, sends each body to POST, PATCH and
POST ?dry_run=true, and prints per body: its size, the status, the answer's
size, the number of details, `total`, the time to the full answer, and
the daemon's CPU time for it (what the answer costs whatever the load).

    scripts/hostile-bodies.py [BINARY] [MIB]   (default target/debug/gateway, 16)
"""

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/debug/gateway"
MIB = float(sys.argv[2]) if len(sys.argv) > 2 else 16.0
SIZE = int(MIB * 1024 * 1024) - 4096  # under the 16 MiB JSON limit
KEY = "0EtpYOfpZyKaIcpkq+KO/+joyV431f1X99CcB2OMo3c="
TOKEN = "hostile-bodies-token"


def fill(prefix, item, suffix, sep=","):
    """prefix + item,item,... + suffix, about SIZE bytes."""
    n = max(1, (SIZE - len(prefix) - len(suffix)) // (len(item) + len(sep)))
    return prefix + sep.join([item] * n) + suffix


def net(extra):
    """The start of network 51820's object, then `extra` (which closes it)."""
    return '{"private_key": "%s", "address": ["10.80.0.1/16"], %s' % (KEY, extra)


def bodies():
    yield "1M+ bad upstreams [1,1,...]", fill('{"51820": ' + net('"proxy": {"tcp://2000": ['), "1", "]}}}")
    yield "bad upstream strings", fill('{"51820": ' + net('"proxy": {"tcp://2000": ['), '"x"', "]}}}")
    yield "valid upstreams (duplicates)", fill('{"51820": ' + net('"proxy": {"tcp://2000": ['), '"10.80.0.2:80"', "]}}}")
    yield "bad allowed IPs", fill('{"51820": ' + net('"peers": {"%sA=": {"allowed_ips": [' % KEY[:-2]), '"x"', "]}}}}")
    i = [0]

    def ip():
        i[0] += 1
        return '"10.%d.%d.%d/32"' % (i[0] >> 16 & 255, i[0] >> 8 & 255, i[0] & 255)

    n = SIZE // 18
    yield "valid allowed IPs", '{"51820": ' + net('"peers": {"%sA=": {"allowed_ips": [%s]}}}' % (KEY[:-2], ",".join(ip() for _ in range(n)))) + "}"
    n = SIZE // 40
    yield "many bad peers", '{"51820": ' + net('"peers": {%s}}' % ",".join('"p%d": {}' % k for k in range(n))) + "}"
    n = SIZE // 26
    yield "many routes", '{"51820": ' + net('"proxy": {%s}}' % ",".join('"http://h%d.test": []' % k for k in range(n))) + "}"
    n = SIZE // 90
    yield "many networks (bad keys)", "{" + ",".join('"n%d": {"private_key": "%s"}' % (k, KEY) for k in range(n)) + "}"
    yield "many networks (65533 ports)", "{" + ",".join('"%d": {"private_key": "%s"}' % (k, KEY) for k in range(2, 65535)) + "}"
    # Refused (a bad MTU), as every body here must be: an accepted one would be applied to this host.
    yield "duplicate keys", fill("{", '"51820": {"private_key": "%s", "mtu": 1}' % KEY, "}")
    yield "deep nesting", '{"51820": ' + net('"proxy": {"tcp://2000": ' + "[" * (SIZE // 2) + "]" * (SIZE // 2) + "}}") + "}"
    yield "huge string", '{"51820": {"private_key": "' + "A" * (SIZE - 40) + '"}}'
    yield "huge key", '{"' + "5" * (SIZE - 20) + '": {}}'
    yield "huge wrong-type string", '{"51820": {"private_key": "%s", "mtu": "%s"}}' % (KEY, "A" * (SIZE - 80))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def ask(port, method, path, body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t = time.monotonic()
    try:
        c.request(method, path, body=body.encode(), headers={"Token": TOKEN, "Content-Type": "application/json"})
    except (BrokenPipeError, ConnectionResetError):
        pass  # answered and closed before the whole body was sent (e.g. 413): read that answer
    r = c.getresponse()
    data = r.read()
    return r.status, data, time.monotonic() - t


def cpu_seconds(pid):
    """User + system CPU time of process `pid` so far: the cost of an answer
    whatever else the machine runs (the wall time grows with the load)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    port = free_port()
    d = tempfile.mkdtemp(prefix="hostile-")
    log = open(os.path.join(d, "daemon.log"), "w")
    args = [BIN, "--address", "127.0.0.1", "--port", str(port), "--token", TOKEN, "--wireguard-backend=userspace", "--netns-dir=/nonexistent", "--database", ":memory:"]
    daemon = subprocess.Popen(args, stdout=log, stderr=log, env={"PATH": os.environ["PATH"]})
    try:
        for _ in range(400):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        print(f"{'body':30} {'MiB':>5} {'route':16} {'status':>6} {'answer B':>10} {'details':>7} {'total':>7} {'seconds':>8} {'cpu s':>6}")
        worst, worst_cpu = 0.0, 0.0
        for name, body in bodies():
            for method, path, label in [("POST", "/api/v1/config.json", "POST"), ("PATCH", "/api/v1/config.json", "PATCH"), ("POST", "/api/v1/config.json?dry_run=true", "POST dry_run")]:
                cpu = cpu_seconds(daemon.pid)
                status, data, secs = ask(port, method, path, body)
                cpu = cpu_seconds(daemon.pid) - cpu
                try:
                    j = json.loads(data)
                except ValueError:
                    j = {}
                details = len(j.get("details") or []) if isinstance(j, dict) else "-"
                total = j.get("total", "-") if isinstance(j, dict) else "-"
                if not 400 <= status < 500:
                    sys.exit(f"{name} {label}: {status}: every body here must be refused (an accepted one is applied to this host)")
                worst, worst_cpu = max(worst, secs), max(worst_cpu, cpu)
                print(f"{name:30} {len(body) / 1048576:5.1f} {label:16} {status:6} {len(data):10} {details:>7} {total:>7} {secs:8.3f} {cpu:6.2f}", flush=True)
        print(f"slowest answer: {worst:.3f} s; most CPU for one answer: {worst_cpu:.2f} s (load {os.getloadavg()[0]:.1f})")
    finally:
        daemon.terminate()
        daemon.wait()


if __name__ == "__main__":
    main()
