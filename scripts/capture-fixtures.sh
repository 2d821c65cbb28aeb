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
  rm -rf "$dir"
}
trap cleanup EXIT
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
  printf 'addr show\nroute show table all root 0.0.0.0/0\nroute show table all root ::/0\n' \
    | ip -n "network-$p" -json -batch - > "$out/ip-batch-$p.json"
  ip netns exec "network-$p" wg show "wg$p" dump > "$out/wg-dump-$p.txt"
  ip netns exec "network-$p" iptables-save | grep -v '^#' > "$out/iptables-save-$p.txt"
  ip netns exec "network-$p" sysctl -n -e net.ipv4.ip_forward net.ipv6.conf.all.forwarding \
    net.ipv4.conf.all.promote_secondaries > "$out/sysctl-$p.txt"
done
ip -json addr show dev gwbr0 > "$out/bridge-addr.json"
curl -fsS -X POST -H "Token: t" -H 'Content-Type: application/json' -d '{}' "http://$api/api/v1/config.json" >/dev/null
echo "captured into $out"
