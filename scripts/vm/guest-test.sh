#!/usr/bin/env bash
# The gateway with kernel WireGuard, end to end, inside the VM that
# scripts/vm-test.sh boots (run by scripts/vm/init; not meant for a host: it
# uses the default names network-P, wgP, gwvP, gwbr0 and ports 8000/8443/8080).
#
# Once with --wireguard-backend kernel and once with auto (which must pick the
# kernel here), the same checks as the userspace end-to-end tests:
#  - a node namespace with a kernel WireGuard interface and HTTPS + HTTP
#    servers (tests/support/node_server.py, a self-signed certificate);
#  - POST a config: the daemon builds network-P with wgP created in the root
#    namespace and moved (the UDP port stays bound in the root namespace);
#  - HTTPS by SNI to the node's own certificate, HTTP by Host with X-Real-IP
#    and X-Forwarded-For, a LAN behind the node through a route, an unknown
#    name refused; status.json reports the kernel backend and a handshake;
#  - a no-op re-apply answers 200 with no changed network and runs no command
#    (counted in the daemon's own log, RUST_LOG=gateway=trace), and the
#    watchdog's drift checks find nothing to repair;
#  - a 1 MB download is counted in traffic.json and /metrics; a restart on
#    the same database runs no command and counts nothing twice;
#  - an interface deleted by hand is recreated the birthplace way, and the
#    traffic over it is counted once;
#  - a peer removed by hand (`wg set wgP peer KEY remove`) is put back;
#  - PATCH null removes everything: namespace, interface, UDP socket, veth,
#    bridge, nginx entries; bytes sent just before it are still counted.
set -Eeuo pipefail

GW=/usr/local/bin/gateway
TOKEN=vm-test-token
API=http://127.0.0.1:8000
HOST=app.test
HTTPS_PORT=8443
HTTP_PORT=8080
CLIENT_IP=172.31.0.2
CLIENT_GW=172.31.0.1
NODE_IP=172.30.0.2
NODE_GW=172.30.0.1
NODE_WG_PORT=51900
BIG=1000000

DAEMON_PID=""
D=/tmp
uptime_s() { local u _; read -r u _ < /proc/uptime; echo "$u"; }
T_START=$(uptime_s)
log() { printf '[%7s] %s\n' "$(uptime_s)" "$*"; }
ok() { log "ok: $*"; }

diagnostics() {
  trap - ERR
  set +e
  echo "---- diagnostics"
  echo "-- ip netns list"; ip netns list
  echo "-- links (root namespace)"; ip -br link
  for ns in $(ip netns list | awk '{ print $1 }'); do
    echo "-- links in $ns"; ip -n "$ns" -br link
    ip netns exec "$ns" wg show all 2>/dev/null
  done
  echo "-- UDP sockets (root namespace)"; cat /proc/net/udp /proc/net/udp6
  if [ -n "$DAEMON_PID" ]; then
    echo "-- status.json"; curl -sS --max-time 10 -H "Token: $TOKEN" "$API/api/v1/status.json"; echo
  fi
  echo "-- daemon log (without read commands), last 80 lines"
  grep -v ' read command=' "$D/daemon.log" 2>/dev/null | tail -n 80
  echo "-- nginx error log"; tail -n 20 "$D/error.log" 2>/dev/null
  echo "-- node server log"; tail -n 20 "$D/node-server.log" 2>/dev/null
  echo "---- end of diagnostics"
}
# fail MESSAGE: on stderr, so it shows even inside $(...); the EXIT trap then
# prints what the system looks like.
fail() {
  printf '[%7s] FAIL: %s\n' "$(uptime_s)" "$*" >&2
  exit 1
}
trap 'echo "guest-test: line $LINENO: \`$BASH_COMMAND\` failed (exit status $?)" >&2' ERR
on_exit() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then diagnostics; fi
}
trap on_exit EXIT

# wait_for DESCRIPTION SECONDS COMMAND...: until COMMAND succeeds.
wait_for() {
  local what=$1 limit=$2 start
  shift 2
  start=$(date +%s)
  until "$@"; do
    [ $(($(date +%s) - start)) -lt "$limit" ] || fail "timed out after ${limit} s waiting for $what"
    sleep 0.3
  done
}

# jq-like: the Python expression $2 over the JSON file $1 (as `d`).
jget() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2], {"d": d}))' "$1" "$2"; }

# api METHOD PATH [BODY]: the answer in $D/answer.json, the HTTP status printed.
api() {
  local args=(-sS --max-time 90 -o "$D/answer.json" -w '%{http_code}' -X "$1" -H "Token: $TOKEN")
  if [ $# -ge 3 ]; then args+=(-H 'Content-Type: application/json' --data-binary "$3"); fi
  curl "${args[@]}" "$API$2"
}

client_curl() { ip netns exec client curl -sS --max-time 30 "$@"; }
https_get() {
  client_curl --retry 5 --retry-all-errors --retry-delay 1 --cacert "$D/node.crt" \
    --resolve "$1:$HTTPS_PORT:$CLIENT_GW" "https://$1:$HTTPS_PORT$2"
}

udp_bound() { # udp_bound PORT: a UDP socket on PORT in the current namespace
  awk -v p="$(printf ':%04X' "$1")" '$2 ~ p"$" { found = 1 } END { exit !found }' /proc/net/udp /proc/net/udp6
}

log_lines() { wc -l < "$D/daemon.log"; }
# log_has LINE REGEX: the daemon logged REGEX after line LINE. (Not a pipe
# into `grep -q`: with pipefail, the writer's SIGPIPE would fail it.)
log_has() { awk -v from="$1" -v re="$2" 'NR > from && $0 ~ re { f = 1; exit } END { exit !f }' "$D/daemon.log"; }
# How many changing commands (`run` lines) the daemon ran after line $1.
runs_after() { tail -n +"$(($1 + 1))" "$D/daemon.log" | grep -c ' run command=' || true; }

# --- topology: a client namespace (the internet side) and a node ---------------
setup_client() {
  ip netns add client
  ip -n client link set lo up
  ip link add vmclient type veth peer name eth0 netns client
  ip addr add "$CLIENT_GW/30" dev vmclient
  ip link set vmclient up
  ip -n client addr add "$CLIENT_IP/30" dev eth0
  ip -n client link set eth0 up
}

# start_node GATEWAY_PUBLIC_KEY GATEWAY_PORT: sets NODE_PUB.
start_node() {
  local gw_pub=$1 port=$2 priv
  ip netns add node
  ip -n node link set lo up
  ip link add vmnode type veth peer name eth0 netns node
  ip addr add "$NODE_GW/30" dev vmnode
  ip link set vmnode up
  ip -n node addr add "$NODE_IP/30" dev eth0
  ip -n node link set eth0 up
  # The node's WireGuard is the kernel's too.
  ip -n node link add wgnode type wireguard
  priv=$(wg genkey)
  NODE_PUB=$(wg pubkey <<< "$priv")
  (umask 077 && echo "$priv" > "$D/node.wgkey")
  ip netns exec node wg set wgnode private-key "$D/node.wgkey" listen-port "$NODE_WG_PORT" \
    peer "$gw_pub" endpoint "$NODE_GW:$port" allowed-ips 10.80.0.0/16 persistent-keepalive 5
  ip -n node addr add 10.80.0.2/16 dev wgnode
  # A "LAN" behind the node, reachable only through a route the gateway adds.
  ip -n node addr add 192.168.50.1/24 dev wgnode
  ip -n node link set wgnode up
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -keyout "$D/node.key" -out "$D/node.crt" -subj "/CN=$HOST" -addext "subjectAltName=DNS:$HOST" 2>/dev/null
  ip netns exec node python3 /vm/node_server.py "$D/node.crt" "$D/node.key" > "$D/node-server.log" 2>&1 &
  wait_for "the node's servers" 30 grep -q ready "$D/node-server.log"
}

stop_node() {
  local pids
  pids=$(ip netns pids node)
  # shellcheck disable=SC2086 # one pid per word
  if [ -n "$pids" ]; then kill $pids; fi
  ip netns del node
}

write_nginx_conf() {
  cat > "$D/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
pid $D/nginx.pid;
error_log $D/error.log;
worker_processes 1;
events { worker_connections 256; }
include $D/stream.conf;
http {
  access_log off;
  client_body_temp_path $D/body;
  proxy_temp_path $D/proxy;
  fastcgi_temp_path $D/fastcgi;
  uwsgi_temp_path $D/uwsgi;
  scgi_temp_path $D/scgi;
  include $D/http.conf;
}
EOF
}

start_daemon() { # start_daemon BACKEND
  RUST_LOG=gateway=trace "$GW" --token "$TOKEN" --database "$D/gateway.db" \
    --address 127.0.0.1 --port 8000 --wireguard-backend "$1" --watchdog 1s \
    --nginx-conf "$D/nginx.conf" --nginx-pid "$D/nginx.pid" \
    --nginx-stream-config "$D/stream.conf" --nginx-http-config "$D/http.conf" \
    --https-listen "$HTTPS_PORT" --http-listen "$HTTP_PORT" >> "$D/daemon.log" 2>&1 &
  DAEMON_PID=$!
  wait_for "the daemon's API" 60 curl -sf --max-time 2 -o /dev/null "$API/health"
}

stop_daemon() {
  kill "$DAEMON_PID"
  wait "$DAEMON_PID" || true
  DAEMON_PID=""
}

stop_nginx() {
  if [ -f "$D/nginx.pid" ]; then
    local pid
    pid=$(cat "$D/nginx.pid")
    kill "$pid"
    nginx_gone() { [ ! -e "/proc/$pid" ] || [ "$(awk '{ print $3 }' "/proc/$pid/stat")" = Z ]; }
    wait_for "nginx to stop" 20 nginx_gone
  fi
}

peer_rx_tx() { # peer_rx_tx GW_PUB NODE_PUB: "rx tx" recorded for the peer so far
  [ "$(api GET '/api/v1/traffic.json?start=0')" = 200 ] || fail "traffic.json: $(cat "$D/answer.json")"
  jget "$D/answer.json" "' '.join(str(d.get('networks', {}).get('$1', {}).get('devices', {}).get('$2', {}).get('traffic', {}).get(k, 0)) for k in ('rx', 'tx'))"
}

# ticks_after LINE N: the daemon stored N traffic ticks after line LINE.
ticks_after() { [ "$(tail -n +"$(($1 + 1))" "$D/daemon.log" | grep -c 'traffic tick stored' || true)" -ge "$2" ]; }

# settled GW_PUB: "rx tx" recorded for the peer once a whole tick, begun
# after the reading, has added no rx. (A tick may read the counters while
# the last packets of a download still arrive: traffic.json can pass the
# download's size before the rest is counted by the next tick.)
settled() {
  local last now l
  now=$(peer_rx_tx "$1" "$NODE_PUB")
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    last=$now
    l=$(log_lines)
    # The second tick logged after the reading began after it.
    wait_for "two traffic ticks" 30 ticks_after "$l" 2
    now=$(peer_rx_tx "$1" "$NODE_PUB")
    if [ "${now% *}" = "${last% *}" ]; then
      echo "$now"
      return
    fi
  done
  fail "the peer's traffic did not settle: still moving after 10 rounds of two ticks ($last -> $now)"
}

download() { # download BYTES: over HTTPS by SNI, through the tunnel
  local n
  n=$(https_get "$HOST" "/bytes/$1" | wc -c)
  [ "$n" = "$1" ] || fail "downloaded $n bytes instead of $1"
}

# counted WHAT GW_PUB BEFORE BYTES: waits until the peer's rx in traffic.json
# grew by BYTES since BEFORE ("rx tx"), and not by much more (WireGuard and
# TLS overhead); sets COUNTED.
counted() {
  local what=$1 gw_pub=$2 before=$3 bytes=$4 now rx tx
  grown() {
    now=$(peer_rx_tx "$gw_pub" "$NODE_PUB")
    [ $((${now% *} - ${before% *})) -ge "$bytes" ]
  }
  wait_for "traffic.json to count $what ($bytes bytes)" 30 grown
  rx=$((${now% *} - ${before% *}))
  tx=$((${now#* } - ${before#* }))
  [ "$rx" -lt $((bytes + bytes / 5)) ] || fail "rx grew by $rx for $what ($bytes bytes)"
  [ "$tx" -gt 0 ] || fail "tx did not grow for $what (the request went to the node)"
  COUNTED="rx +$rx, tx +$tx bytes"
}

# --- one backend, one network, all the checks ----------------------------------
run_backend() {
  local backend=$1 P=$2 t0 code gw_priv gw_pub cfg L0 out runs
  local NS=network-$P WG=wg$P VETH=gwv$P BR=gwbr0
  t0=$(uptime_s)
  D=/tmp/gw-$backend
  mkdir -p "$D"
  log "==== --wireguard-backend $backend, network $P"
  gw_priv=$(wg genkey)
  gw_pub=$(wg pubkey <<< "$gw_priv")
  start_node "$gw_pub" "$P"
  write_nginx_conf
  start_daemon "$backend"
  grep -q 'backend="\?kernel' "$D/daemon.log" || fail "the daemon's start line does not name the kernel backend"
  ok "daemon started (backend $backend)"

  cfg=$(cat <<JSON
{"$P": {"private_key": "$gw_priv", "address": ["10.80.0.1/16"],
  "peers": {"$NODE_PUB": {"allowed_ips": ["10.80.0.2/32", "192.168.50.0/24"], "endpoint": "$NODE_IP:$NODE_WG_PORT"}},
  "proxy": {"https://$HOST": ["10.80.0.2:443"], "http://$HOST": ["10.80.0.2:80"],
            "http://lan.$HOST": ["192.168.50.1:80"]}}}
JSON
)
  code=$(api POST /api/v1/config.json "$cfg")
  [ "$code" = 200 ] || fail "POST config answered $code: $(cat "$D/answer.json")"
  [ "$(jget "$D/answer.json" 'd["result"]')" = applied ] || fail "POST result: $(cat "$D/answer.json")"
  [ "$(jget "$D/answer.json" 'd["changed_networks"]')" = "[$P]" ] || fail "changed_networks: $(cat "$D/answer.json")"
  ok "POST config: 200 applied, changed_networks [$P] ($(grep -o 'pass converged mode="apply".*duration_ms=[0-9]*' "$D/daemon.log" | head -n 1))"

  # Where things are: the birthplace trick with a kernel interface.
  ip -n "$NS" -d link show "$WG" | grep -q wireguard || fail "$WG is not a WireGuard interface in $NS"
  [ ! -e "/sys/class/net/$WG" ] || fail "$WG is (also) in the root namespace"
  [ "$(ip netns exec "$NS" wg show "$WG" listen-port)" = "$P" ] || fail "$WG does not listen on $P"
  udp_bound "$P" || fail "UDP $P is not bound in the root namespace"
  ! ip netns exec "$NS" bash -c "$(declare -f udp_bound); udp_bound $P" ||
    fail "UDP $P is bound inside $NS: the interface was created there, not moved"
  ip -n "$NS" link show gw-uplink > /dev/null || fail "no uplink veth in $NS"
  ip link show "$VETH" | grep -q "master $BR" || fail "$VETH is not on bridge $BR"
  if [ "$backend" = auto ]; then
    ! ip -br link | grep -q '^gwprobe' || fail "auto's probe interface was left behind: $(ip -br link)"
  fi
  ok "$WG (kind wireguard) lives in $NS, its UDP socket on $P in the root namespace; veth $VETH on $BR"

  out=$(https_get "$HOST" /hello) || fail "HTTPS by SNI failed: $out"
  [[ $out == "node-https host=$HOST"* ]] || fail "HTTPS by SNI: $out"
  ok "HTTPS by SNI reaches the node, its own certificate verified: $out"
  out=$(client_curl -H "Host: $HOST" "http://$CLIENT_GW:$HTTP_PORT/") || fail "HTTP by Host failed: $out"
  [[ $out == *"node-http host=$HOST real=$CLIENT_IP xff=$CLIENT_IP"* ]] || fail "HTTP by Host: $out"
  ok "HTTP by Host reaches the node with X-Real-IP and X-Forwarded-For: $out"
  out=$(client_curl -H "Host: lan.$HOST" "http://$CLIENT_GW:$HTTP_PORT/") || fail "HTTP to the LAN behind the node failed: $out"
  [[ $out == "node-http host=lan.$HOST"* ]] || fail "LAN behind the node: $out"
  ip -n "$NS" route show dev "$WG" | grep -q 192.168.50.0/24 || fail "no route to the node's LAN in $NS"
  ok "a LAN behind the node is reached through the route the gateway added"
  if out=$(client_curl --max-time 10 -k --resolve "nope.test:$HTTPS_PORT:$CLIENT_GW" "https://nope.test:$HTTPS_PORT/" 2>&1); then
    fail "an unknown SNI name was served: $out"
  fi
  ok "an unknown SNI name is refused"

  [ "$(api GET /api/v1/status.json)" = 200 ] || fail "status.json: $(cat "$D/answer.json")"
  cp "$D/answer.json" "$D/status.json"
  [ "$(jget "$D/status.json" 'd["backend"]')" = kernel ] || fail "status.json backend: $(cat "$D/status.json")"
  [ "$(jget "$D/status.json" "d['networks']['$P']['namespace_present'] and d['networks']['$P']['interface_up']")" = True ] ||
    fail "status.json: $(cat "$D/status.json")"
  [ "$(jget "$D/status.json" "d['networks']['$P']['public_key']")" = "$gw_pub" ] || fail "status.json public key: $(cat "$D/status.json")"
  [ "$(jget "$D/status.json" "(d['networks']['$P']['peers']['$NODE_PUB'].get('latest_handshake') or 0) > 0")" = True ] ||
    fail "no handshake with the node in status.json: $(cat "$D/status.json")"
  ok "status.json: backend kernel, network up, public key, handshake with the node"

  # The same state again: nothing to do, no command run. Passes are serial,
  # each ends with one summary line, so the re-apply's commands are the
  # `run`/`read` lines between its summary and the previous one.
  L0=$(log_lines)
  code=$(api POST /api/v1/config.json "$cfg")
  [ "$code" = 200 ] || fail "re-POST answered $code: $(cat "$D/answer.json")"
  [ "$(jget "$D/answer.json" 'd["changed_networks"]')" = "[]" ] || fail "re-POST changed something: $(cat "$D/answer.json")"
  sleep 3 # three watchdog ticks
  runs=$(awk -v from="$L0" '
    NR <= from { next }
    / (run|read) command=/ { n++ }
    /drift check: nothing to do|pass converged mode="drift check"|pass failed/ { n = 0 }
    /pass converged mode="apply"/ { if (/generation=2/) { print n + 0; found = 1; exit } n = 0 }
    END { if (!found) print "none" }' "$D/daemon.log")
  [ "$runs" != none ] || fail "no 'pass converged mode=\"apply\"' line of generation 2 in the daemon's log"
  [ "$runs" = 0 ] || fail "the no-op re-apply ran $runs commands"
  [ "$(runs_after "$L0")" = 0 ] || fail "commands changed the system after the re-apply: $(tail -n +"$((L0 + 1))" "$D/daemon.log" | grep ' run command=')"
  log_has "$L0" 'drift check: nothing to do' || fail "no drift check ran in 3 s (--watchdog 1s)"
  ok "re-POST: 200, changed_networks [], no command run; drift checks since then change nothing"

  # Traffic: a download through the tunnel is counted (rx = from the peer).
  local before after
  before=$(peer_rx_tx "$gw_pub" "$NODE_PUB")
  download "$BIG"
  counted "the download" "$gw_pub" "$before" "$BIG"
  curl -sS --max-time 30 -H "Authorization: Bearer $TOKEN" "$API/metrics" > "$D/metrics.txt"
  out=$(grep "^gateway_peer_receive_bytes_total{.*$NODE_PUB" "$D/metrics.txt") || fail "no rx counter for the peer in /metrics"
  [ "${out##* }" -ge "$BIG" ] || fail "/metrics: $out"
  ok "traffic.json counted the download: $COUNTED; /metrics agrees"

  # A restart on the same database changes nothing and counts nothing twice.
  after=$(settled "$gw_pub")
  stop_daemon
  L0=$(log_lines)
  start_daemon "$backend"
  restarted() { log_has "$L0" 'drift check: nothing to do'; }
  wait_for "the restarted daemon's first pass" 30 restarted
  # (auto's probe, `ip link add gwprobeN type wireguard` and its deletion, aside)
  runs=$(tail -n +"$((L0 + 1))" "$D/daemon.log" | grep ' run command=' | grep -vc ' gwprobe[0-9]' || true)
  [ "$runs" = 0 ] || fail "the restart changed something: $(tail -n +"$((L0 + 1))" "$D/daemon.log" | grep ' run command=')"
  before=$(peer_rx_tx "$gw_pub" "$NODE_PUB")
  [ $((${before% *} - ${after% *})) -lt 10000 ] || fail "the restart counted traffic again: rx $after -> $before"
  ok "a restart on the same database runs no command and counts nothing twice"

  # Drift: an interface deleted by hand is born again in the root namespace
  # (its UDP socket there) and moved; its new counters count once.
  L0=$(log_lines)
  ip -n "$NS" link del "$WG"
  wg_back() { ip netns exec "$NS" wg show "$WG" > /dev/null 2>&1 && udp_bound "$P"; }
  wait_for "the watchdog to recreate $WG" 30 wg_back
  [ ! -e "/sys/class/net/$WG" ] || fail "the recreated $WG stayed in the root namespace"
  ! ip netns exec "$NS" bash -c "$(declare -f udp_bound); udp_bound $P" || fail "the recreated $WG has its UDP socket inside $NS"
  # The repair is visible before the pass logs its end.
  wait_for "the drift repair in the daemon's log" 15 log_has "$L0" 'pass converged mode="drift check"'
  download $((2 * BIG))
  counted "a download over the recreated interface" "$gw_pub" "$before" $((2 * BIG))
  ok "an interface deleted by hand is recreated the birthplace way; traffic over it counted once: $COUNTED"

  # Drift: a peer removed by hand comes back with the next watchdog tick.
  L0=$(log_lines)
  ip netns exec "$NS" wg set "$WG" peer "$NODE_PUB" remove
  ! ip netns exec "$NS" wg show "$WG" peers | grep -qF "$NODE_PUB" || fail "the peer is still there after removing it"
  peer_back() { ip netns exec "$NS" wg show "$WG" peers | grep -qF "$NODE_PUB"; }
  wait_for "the watchdog to put the peer back" 30 peer_back
  out=$(https_get "$HOST" /again) || fail "HTTPS after the repair failed: $out"
  [[ $out == "node-https host=$HOST"* ]] || fail "HTTPS after the repair: $out"
  # The repair is visible before the pass logs its end.
  wait_for "the drift repair in the daemon's log" 15 log_has "$L0" 'pass converged mode="drift check"'
  ok "a peer removed by hand is put back by the watchdog, and HTTPS works again"

  # Removal leaves nothing; bytes sent just before it are still counted.
  before=$(peer_rx_tx "$gw_pub" "$NODE_PUB")
  download "$BIG"
  code=$(api PATCH /api/v1/config.json "{\"$P\": null}")
  [ "$code" = 200 ] || fail "PATCH null answered $code: $(cat "$D/answer.json")"
  counted "a download just before the removal" "$gw_pub" "$before" "$BIG"
  ! ip netns list | awk '{ print $1 }' | grep -qx "$NS" || fail "namespace $NS is still there"
  [ ! -e "/sys/class/net/$WG" ] || fail "$WG is in the root namespace"
  [ -z "$(ip -br link show type wireguard)" ] || fail "WireGuard interfaces left in the root namespace: $(ip -br link show type wireguard)"
  [ "$(ip -n node -br link show type wireguard | awk '{ print $1 }')" = wgnode ] || fail "unexpected WireGuard interfaces in the node"
  [ ! -e "/sys/class/net/$VETH" ] || fail "veth $VETH is still there"
  [ ! -e "/sys/class/net/$BR" ] || fail "bridge $BR is still there"
  udp_closed() { ! udp_bound "$P"; }
  wait_for "UDP $P to be closed" 10 udp_closed
  ! grep -q "$HOST" "$D/stream.conf" "$D/http.conf" || fail "nginx still routes $HOST"
  [ "$(api GET /api/v1/status.json)" = 200 ] || fail "status.json after removal: $(cat "$D/answer.json")"
  [ "$(jget "$D/answer.json" 'len(d["networks"])')" = 0 ] || fail "status.json after removal: $(cat "$D/answer.json")"
  ok "PATCH null: no namespace, no wg interface, no UDP socket, no veth, no bridge, no nginx entry left; last download counted: $COUNTED"

  stop_daemon
  stop_nginx
  stop_node
  log "the daemon's passes that did something (commands: $(grep -c ' run command=' "$D/daemon.log") changing, $(grep -c ' read command=' "$D/daemon.log") reading):"
  grep -E 'pass converged|pass failed|WARN|ERROR' "$D/daemon.log" | sed 's/^/    /'
  if grep -q 'vmtest.verbose=1' /proc/cmdline; then
    log "the daemon's log without its read commands (VM_VERBOSE=1):"
    grep -v ' read command=' "$D/daemon.log" | sed 's/^/    /'
  fi
  log "==== backend $backend passed in $(awk -v a="$t0" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }') s"
}

log "guest test: kernel $(uname -r), $(nproc) CPUs"
/usr/sbin/modprobe wireguard || fail "modprobe wireguard failed"
ip link add vmprobe type wireguard || fail "the kernel cannot create a WireGuard interface"
ip link del vmprobe
setup_client
run_backend kernel 51820
run_backend auto 51821
# Nothing of the gateway's is left: only the client's link and loopback.
left=$(ip -br link | awk '{ print $1 }' | grep -v -e '^lo$' -e '^vmclient@' || true)
[ -z "$left" ] || fail "links left in the root namespace: $left"
[ "$(ip netns list | awk '{ print $1 }')" = client ] || fail "namespaces left: $(ip netns list)"
log "kernel modules loaded: $(awk '{ print $1 }' /proc/modules | sort | tr '\n' ' ')"
log "all checks passed in $(awk -v a="$T_START" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }') s"
