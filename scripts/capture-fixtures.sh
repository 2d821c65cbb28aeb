#!/usr/bin/env bash
# Captures what the tools print for a really converged gateway, with the
# names the code produces by default (network-P, wgP, gwbr0), into
# tests/fixtures/converged/: the planner and reconciler unit tests replay
# it. Run as root on a machine without a real gateway using those names:
#   scripts/capture-fixtures.sh [path to the gateway binary]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/gateway}
out=tests/fixtures/converged
dir=$(mktemp -d)
api=127.0.0.1:18999
daemon=""
cleanup() {
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  [ -f "$dir/nginx.pid" ] && kill "$(cat "$dir/nginx.pid")" 2>/dev/null
  for p in 51820 51821; do ip netns del "network-$p" 2>/dev/null || true; done
  ip link del gwbr0 2>/dev/null || true
  ip link del gwcapture0 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
# The peer endpoint of config.json is an address of this host (on a veth
# pair of the script's own): WireGuard's keepalives stay on the machine.
ip link add gwcapture0 type veth peer name gwcapture1
ip addr add 10.254.0.7/32 dev gwcapture0
ip link set gwcapture0 up && ip link set gwcapture1 up
cat > "$dir/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 64; }
include $dir/stream.conf;
http { access_log off; include $dir/http.conf; }
CONF
"$bin" --database "$dir/db" --token t --address 127.0.0.1 --port 18999 --wireguard-backend userspace --watchdog 1h \
  --nginx-conf "$dir/nginx.conf" --nginx-stream-config "$dir/stream.conf" --nginx-http-config "$dir/http.conf" \
  --nginx-pid "$dir/nginx.pid" --https-listen 127.0.0.1:18443 --http-listen 127.0.0.1:18080 --custom-forwarding= \
  >"$dir/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do curl -fsS "http://$api/health" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS -H "Token: t" -H 'Content-Type: application/json' --data-binary "@$out/config.json" "http://$api/api/v1/config.json"
echo
for p in 51820 51821; do
  # The netlink dumps and wireguard-go's answer the daemon reads itself.
  ip netns exec "network-$p" scripts/capture-netlink.py "$out/netlink-$p" "/var/run/wireguard/wg$p.sock"
  ip netns exec "network-$p" iptables-save | grep -v '^#' > "$out/iptables-save-$p.txt"
  ip netns exec "network-$p" ip6tables-save | grep -v '^#' > "$out/ip6tables-save-$p.txt"
  ip netns exec "network-$p" sysctl -n -e net.ipv4.ip_forward net.ipv6.conf.all.forwarding \
    net.ipv4.conf.all.promote_secondaries > "$out/sysctl-$p.txt"
done
# The bridge's addresses, from the root namespace: only the bridge's
# messages are kept (the host's own links are nobody's business).
scripts/capture-netlink.py "$dir/root"
python3 - "$dir/root" "$out/netlink-root" "$(cat /sys/class/net/gwbr0/ifindex)" <<'PY'
import struct, sys
src, dst, index = sys.argv[1], sys.argv[2], int(sys.argv[3])
for name, off in (("links", 4), ("addrs", 4)):
    data, keep, pos = open(f"{src}-{name}.bin", "rb").read(), b"", 0
    while pos + 16 <= len(data):
        length, typ = struct.unpack_from("=IH", data, pos)
        msg = data[pos:pos + length]
        if typ in (2, 3) or struct.unpack_from("=i" if name == "links" else "=I", msg, 16 + off)[0] == index:
            keep += msg + bytes((-length) % 4)
        pos += (length + 3) & ~3
    open(f"{dst}-{name}.bin", "wb").write(keep)
PY
curl -fsS -X POST -H "Token: t" -H 'Content-Type: application/json' -d '{}' "http://$api/api/v1/config.json" >/dev/null
echo "captured into $out"
