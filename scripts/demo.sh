#!/usr/bin/env bash
# The gateway's main job, end to end, on this machine (as root, ~1 minute):
# installs what it needs, builds and starts the daemon, makes a node (its own
# namespace running wireguard-go and a small HTTPS + HTTP site), POSTs a
# config, fetches the site through the gateway by SNI (TLS passed through:
# the certificate is the node's) and by Host, prints the traffic recorded,
# then removes the network and everything else it made.
#
# DEMO_METRICS_MINUTES=N keeps traffic flowing for N minutes, scrapes
# /metrics and renders docs/dashboard.png (the dashboard picture of docs/operating.md).
#
# Everything uses its own names (gwdemo*), a private nginx on ports 8443/8080
# and a temp dir; /etc/nginx and other networks are not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  exec sudo -E env "PATH=$PATH" "$0" "$@"
fi

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
API=http://127.0.0.1:18000
TOKEN=demo-token
PORT=51820
HOST=app.demo.test
WORK=$(mktemp -d /tmp/gateway-demo.XXXXXX)
# nginx's workers (nobody) reach the daemon's sockets in it (SNI hop, usage
# socket next to it), never the defaults under /run a real gateway owns.
chmod 711 "$WORK"
DAEMON_PID=""

# Removes what the demo made (and leftovers of an earlier run). The body is a
# subshell, so its `set +e` does not switch off errexit for the script.
cleanup() (
  set +e
  work=$1
  if [ -n "$DAEMON_PID" ]; then
    kill "$DAEMON_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  if [ -n "$work" ] && [ -f "$work/nginx.pid" ]; then kill "$(cat "$work/nginx.pid")" 2>/dev/null; fi
  for ns in $(ip netns list | awk '{print $1}' | grep '^gwdemo'); do
    ip netns pids "$ns" | xargs -r kill 2>/dev/null
    ip netns del "$ns"
  done
  for l in gwdemonh gwdemobr; do ip link del "$l" 2>/dev/null; done
  if [ -n "$work" ]; then rm -rf "$work"; fi
  true
)
trap 'cleanup "$WORK"' EXIT
cleanup ""

say "Installing system tools and building the gateway"
scripts/install-deps.sh
# The crate needs Rust 1.85 or newer (edition 2024); Debian's own rustc is older.
need_rust() {
  echo "demo: $1. Install Rust 1.85 or newer with rustup:" >&2
  echo "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y && . \"\$HOME/.cargo/env\"" >&2
  exit 1
}
command -v cargo >/dev/null || need_rust "cargo is not installed (not on PATH)"
rust=$(rustc --version 2>/dev/null | awk '{print $2}')
case "$rust" in
  1.[0-9].*|1.[0-7][0-9].*|1.8[0-4].*|"") need_rust "rustc ${rust:-is missing}: too old" ;;
esac
cargo build --release --locked -q
BIN=${CARGO_TARGET_DIR:-target}/release/gateway

say "A node: namespace gwdemo-node, wireguard-go, an HTTPS + HTTP site for $HOST"
read -r GW_PRIV <<<"$(wg genkey)"; GW_PUB=$(echo "$GW_PRIV" | wg pubkey)
read -r NODE_PRIV <<<"$(wg genkey)"; NODE_PUB=$(echo "$NODE_PRIV" | wg pubkey)
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/node.key" -out "$WORK/node.crt" -days 1 \
  -subj "/CN=$HOST" -addext "subjectAltName=DNS:$HOST" 2>/dev/null
ip netns add gwdemo-node
ip -n gwdemo-node link set lo up
ip link add gwdemonh type veth peer name eth0 netns gwdemo-node
ip addr add 172.29.0.1/30 dev gwdemonh && ip link set gwdemonh up
ip -n gwdemo-node addr add 172.29.0.2/30 dev eth0 && ip -n gwdemo-node link set eth0 up
ip netns exec gwdemo-node wireguard-go gwdemonode >/dev/null 2>&1
(umask 077; echo "$NODE_PRIV" > "$WORK/node.wgkey")
ip netns exec gwdemo-node wg set gwdemonode private-key "$WORK/node.wgkey" listen-port 51900 \
  peer "$GW_PUB" endpoint 172.29.0.1:$PORT allowed-ips 10.80.0.0/16 persistent-keepalive 5
ip -n gwdemo-node addr add 10.80.0.2/16 dev gwdemonode && ip -n gwdemo-node link set gwdemonode up
ip netns exec gwdemo-node python3 tests/support/node_server.py "$WORK/node.crt" "$WORK/node.key" > "$WORK/site.log" 2>&1 &
for _ in $(seq 50); do grep -q ready "$WORK/site.log" 2>/dev/null && break; sleep 0.1; done

say "The gateway daemon (private nginx on :8443 HTTPS / :8080 HTTP, API on :18000)"
cat > "$WORK/nginx.conf" <<NGINX
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 256; }
include $WORK/stream.conf;
http { access_log off; include $WORK/http.conf; }
NGINX
$BIN --token $TOKEN --database "$WORK/gateway.db" --port 18000 \
  --nginx-conf "$WORK/nginx.conf" --nginx-pid "$WORK/nginx.pid" \
  --nginx-stream-config "$WORK/stream.conf" --nginx-http-config "$WORK/http.conf" \
  --https-listen 8443 --http-listen 8080 --watchdog 3s --nginx-sni-socket "$WORK/sni.sock" \
  --namespace-prefix gwdemo-net- --interface-prefix gwdemo --veth-prefix gwdemov --bridge gwdemobr \
  > "$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 100); do curl -sf $API/health >/dev/null && break; sleep 0.1; done
curl -sf $API/health; echo

say "POST /api/v1/config.json: network $PORT with the node as a peer and $HOST proxied"
CONFIG=$(cat <<JSON
{"$PORT": {"private_key": "$GW_PRIV", "address": ["10.80.0.1/16"],
  "peers": {"$NODE_PUB": {"allowed_ips": ["10.80.0.2/32"], "endpoint": "172.29.0.2:51900"}},
  "proxy": {"https://$HOST": ["10.80.0.2:443"], "http://$HOST": ["10.80.0.2:80"]}}}
JSON
)
curl -sS -H "Token: $TOKEN" -H 'Content-Type: application/json' -d "$CONFIG" $API/api/v1/config.json; echo

say "HTTPS by SNI through the gateway (the certificate checked is the node's own)"
curl -sS --retry 5 --retry-all-errors --cacert "$WORK/node.crt" --resolve $HOST:8443:127.0.0.1 https://$HOST:8443/hello
say "HTTP by Host through the gateway"
curl -sS -H "Host: $HOST" http://127.0.0.1:8080/hello
say "Downloading 1 MB over HTTPS, then waiting for a traffic poll"
curl -sS -o /dev/null -w '%{size_download} bytes\n' --cacert "$WORK/node.crt" --resolve $HOST:8443:127.0.0.1 https://$HOST:8443/bytes/1000000
sleep 4

if [ "${DEMO_METRICS_MINUTES:-0}" -gt 0 ]; then
  say "Traffic for $DEMO_METRICS_MINUTES minutes, /metrics scraped every 5 s, one by-hand change repaired"
  mkdir -p "$WORK/scrapes"
  end=$(( $(date +%s) + 60 * DEMO_METRICS_MINUTES ))
  half=$(( $(date +%s) + 30 * DEMO_METRICS_MINUTES ))
  while [ "$(date +%s)" -lt "$end" ]; do
    size=$(( (RANDOM % 40 + 1) * 100000 ))
    curl -sS -o /dev/null --cacert "$WORK/node.crt" --resolve $HOST:8443:127.0.0.1 "https://$HOST:8443/bytes/$size" || true
    curl -sS -H "Authorization: Bearer $TOKEN" $API/metrics > "$WORK/scrapes/$(date +%s).txt"
    if [ -n "$half" ] && [ "$(date +%s)" -ge "$half" ]; then
      ip netns exec gwdemo-net-$PORT wg set gwdemo$PORT peer "$NODE_PUB" remove
      half=""
    fi
    sleep 5
  done
  if [ ! -x target/venv-plot/bin/python ]; then
    python3 -m venv target/venv-plot && target/venv-plot/bin/pip install -q matplotlib
  fi
  target/venv-plot/bin/python scripts/dashboard-preview.py "$WORK/scrapes" docs/dashboard.png
  echo "docs/dashboard.png written from $(find "$WORK/scrapes" -type f | wc -l) scrapes"
fi

say "GET /api/v1/traffic.json?start=0 (rx = bytes the gateway received from the peer)"
curl -sS -H "Authorization: Bearer $TOKEN" "$API/api/v1/traffic.json?start=0" | python3 -m json.tool
say "GET /api/v1/status.json"
# Its first 40 lines (sed reads to the end: `head` would close the pipe early
# and, under pipefail, end the demo when status.json is longer).
curl -sS -H "Token: $TOKEN" $API/api/v1/status.json | python3 -m json.tool | sed -n 1,40p

say "PATCH the network away: namespace, interface, rules, nginx entries and wireguard-go go"
curl -sS -X PATCH -H "Token: $TOKEN" -H 'Content-Type: application/json' -d "{\"$PORT\": null}" $API/api/v1/config.json; echo
echo "namespaces left with the demo's network prefix: $(ip netns list | grep -c '^gwdemo-net-' || true)"
echo "wireguard-go for the network still running: $(pgrep -fc "^wireguard-go gwdemo$PORT\$" || true)"

say "The daemon's log"
cat "$WORK/daemon.log"
say "Done; cleaning up"
