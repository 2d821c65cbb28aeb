#!/usr/bin/env bash
# Scale benchmark (issue 8): N networks x 10 peers, each with an HTTPS and an
# HTTP name, on the real system (root; userspace WireGuard). Prints:
#   - the floor: the same state built (and torn down) by a minimal
#     sequential shell script, in this run;
#   - the daemon: cold apply, no-op re-apply, one peer added, drift checks,
#     status.json, daemon RSS, removal of everything (times and processes);
#   - the upstream health checks (2 routes a network: 2N upstreams, all but
#     network 0's silent, so each waits the connect timeout: the worst
#     case): rounds, their duration, CPU per round (the check thread's and
#     the whole daemon's) and processes started, over two health intervals
#     between drift checks;
#   - traffic.json on a synthetic day of BENCH_TRAFFIC_PEERS peers (default
#     10000) in a second daemon's database;
#   - the HTTPS data path: a 64 MiB download from a node through the gateway
#     (SNI -> nginx -> WireGuard) against the same download over the bare
#     tunnel from the gateway's namespace, best of 3, as a ratio.
# Processes are counted by the daemon itself (gateway_commands_started_total
# on /metrics: every command its runner starts). Drift checks are timed by
# the daemon's own histogram of pass durations.
#
# Everything it makes has its own names (gbn-/gbw/gbv/gbbr0 for the daemon,
# gbf-/gbfw/gbfv/gbfbr0 for the floor, gbnode/gbclient), ports (UDP
# 21000+ and 23000+, TCP 19443/19080/19800/19801) and subnets (10.251-253.x),
# a private nginx and a temp dir, and is removed on exit, also on failure.
# The UDP ports stay below Linux's ephemeral range (32768-60999 by default):
# inside it, any connect() on the host may take a network's port first, and
# `wg syncconf` fails with "Address already in use" (4 of 1,000 networks did
# at 41000+). They also miss tests/common's slots (18000-18760, 30000-39999).
#
#   scripts/bench.sh N          (as root; GATEWAY_BIN, BENCH_CONCURRENCY,
#                                BENCH_WATCHDOG, BENCH_HEALTH_INTERVAL (5s;
#                                twice it must be shorter than the watchdog),
#                                BENCH_TRAFFIC_PEERS, BENCH_LIMITS=1 (every
#                                route with allow/deny, connection limits and
#                                bandwidth, every network with bandwidth: the
#                                cost of issue 19's fields), and
#                                BENCH_SKIP="floor https traffic health" to
#                                leave parts out, BENCH_DAEMON_LOG=FILE to
#                                keep the daemon's log, e.g. with
#                                RUST_LOG=gateway=debug: every command
#                                and wait, timed)
set -euo pipefail
N=${1:?usage: scripts/bench.sh N (networks)}
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench.sh needs root (namespaces, WireGuard, nginx)" >&2; exit 2; }
target=${CARGO_TARGET_DIR:-target}
bin=${GATEWAY_BIN:-$target/release/gateway}
if [ ! -x "$bin" ]; then cargo build --release --locked; fi
concurrency=${BENCH_CONCURRENCY:-8}
watchdog=${BENCH_WATCHDOG:-20s}
health_interval=${BENCH_HEALTH_INTERVAL:-5s}
traffic_peers=${BENCH_TRAFFIC_PEERS:-10000}
[ "$N" -le 2000 ] || { echo "at most 2000 networks: the floor's ports start at 23000" >&2; exit 2; }
work=$(mktemp -d /tmp/gateway-bench.XXXXXX)
# nginx's workers (nobody) reach the daemon's sockets in it (SNI hop, usage),
# never the defaults under /run, which a gateway on this host would own.
chmod 711 "$work"
BASE=21000 FBASE=23000 HTTPS=19443 HTTP=19080 API=19800 API2=19801
A=http://127.0.0.1:$API
read -r ephemeral_low _ < /proc/sys/net/ipv4/ip_local_port_range
[ $((FBASE + N)) -le "$ephemeral_low" ] || {
  echo "this host's ephemeral ports start at $ephemeral_low: the networks' UDP ports (up to $((FBASE + N - 1))) would collide" >&2; exit 2; }
daemon="" daemon2="" inotify_before=$(cat /proc/sys/fs/inotify/max_user_instances)

# The benchmark's own names only (gb...): also those an interrupted earlier
# run left (killed with its session, its trap never ran), before starting.
remove_namespaces_and_links() {
  for ns in $(ip netns list | awk '{print $1}' | grep -E '^(gbn-|gbf-|gbnode$|gbclient$)'); do
    ip netns pids "$ns" | xargs -r kill 2>/dev/null
    ip -n "$ns" link show 2>/dev/null | awk -F': ' '/gbw|gbfw/ {print $2}' | cut -d@ -f1 | xargs -r -n1 ip -n "$ns" link del 2>/dev/null
    ip netns del "$ns" 2>/dev/null
  done
  for link in /sys/class/net/gb*; do
    case ${link##*/} in gbw* | gbfw* | gbv* | gbfv* | gbbr0 | gbfbr0 | gbnh | gbch) ip link del "${link##*/}" 2>/dev/null ;; esac
  done
  rm -f /var/run/wireguard/gbw*.sock /var/run/wireguard/gbfw*.sock
}
cleanup() {
  set +e
  for pid in "$daemon" "$daemon2"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null
  remove_namespaces_and_links
  echo "$inotify_before" > /proc/sys/fs/inotify/max_user_instances
  [ -z "${BENCH_DAEMON_LOG:-}" ] || cp "$work/daemon.log" "$BENCH_DAEMON_LOG"
  rm -rf "$work"
}
trap cleanup EXIT
remove_namespaces_and_links 2>/dev/null || true
trap 'exit 130' INT TERM

now() { echo "$EPOCHREALTIME"; }
skip() { [[ " ${BENCH_SKIP:-} " == *" $1 "* ]]; }
ms() { python3 -c "print(round(($2 - $1) * 1000))"; }
# A metric's value, summed over its label sets (apply_duration_seconds has a mode label).
metric() {
  curl -fsS -H "Authorization: Bearer t" "${2:-$A}/metrics" |
    awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2; n++ } END { if (n) printf "%.17g\n", s }'
}
post() { curl -fsS -o "$work/answer.json" -w '%{http_code}' -H "Token: t" -H 'Content-Type: application/json' --data-binary "@$1" "$A/api/v1/config.json"; }
row() { printf '  %-46s %12s %14s\n' "$1" "$2" "$3"; }
# Times one POST of file $2, printing a row named $1 with the processes it
# started; the time is kept in $last_ms.
last_ms="" last_procs=""
timed_post() {
  local before t0 t1 code
  before=$(metric gateway_commands_started_total); t0=$(now)
  code=$(post "$2"); t1=$(now)
  [ "$code" = 200 ] || { echo "POST $2 answered $code: $(cat "$work/answer.json")" >&2; exit 1; }
  last_ms=$(ms "$t0" "$t1") last_procs=$(( $(metric gateway_commands_started_total) - before ))
  row "$1" "$last_ms ms" "$last_procs processes"
}
# Waits for the daemon's next pass and prints it (the daemon's own duration).
next_pass() {
  local count sum before deadline
  count=$(metric gateway_apply_duration_seconds_count); sum=$(metric gateway_apply_duration_seconds_sum)
  before=$(metric gateway_commands_started_total); deadline=$((SECONDS + 600))
  while [ "$(metric gateway_apply_duration_seconds_count)" = "$count" ]; do
    [ $SECONDS -lt $deadline ] || { echo "no drift check within 600 s" >&2; exit 1; }
    sleep 0.2
  done
  row "$1" "$(python3 -c "print(round(($(metric gateway_apply_duration_seconds_sum) - $sum) * 1000))") ms" \
    "$(( $(metric gateway_commands_started_total) - before )) processes"
}
veth_addr() { echo "10.252.$(($1 / 256)).$(($1 % 256))/16"; }

echo "gateway scale benchmark: $N networks x 10 peers, userspace WireGuard, apply concurrency $concurrency"
echo "  machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%d GiB", $2/1048576}' /proc/meminfo), $(uname -r); $(date -u '+%F %H:%M UTC'); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "  load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "  binary: $bin"
# --- The floor: a minimal sequential script building the same state. ---
if ! skip floor; then
# The floor raises the inotify limit itself (one instance per wireguard-go);
# it is put back afterwards, so the daemon has to raise it on its own.
[ "$inotify_before" -ge $((N + 256)) ] || echo $((N + 512)) > /proc/sys/fs/inotify/max_user_instances
mkdir -p "$work/floor"
python3 scripts/bench/state.py floor "$N" "$FBASE" "$work/floor"
t0=$(now)
ip link add gbfbr0 type bridge && ip addr add 10.252.0.1/16 dev gbfbr0 && ip link set gbfbr0 up
for n in $(seq 0 $((N - 1))); do
  p=$((FBASE + n)) ns=gbf-$((FBASE + n)) wg=gbfw$((FBASE + n)) vh=gbfv$((FBASE + n))
  ip netns add "$ns"
  # Configured (once it answers) before it moves: moved too early, its
  # daemon may not have started listening, and dies.
  wireguard-go "$wg" >/dev/null 2>&1
  until wg setconf "$wg" "$work/floor/wg$n.conf" 2>/dev/null; do sleep 0.01; done
  ip link set "$wg" netns "$ns"
  ip link add "$vh" type veth peer name gw-uplink netns "$ns"
  ip link set "$vh" master gbfbr0 up && ip link set dev "$vh" type bridge_slave isolated on
  printf 'link set lo up\naddr add 10.80.0.1/16 dev %s\nlink set %s mtu 1420 up\naddr add %s dev gw-uplink\nlink set gw-uplink up\n' \
    "$wg" "$wg" "$(veth_addr "$p")" | ip -n "$ns" -batch -
  ip netns exec "$ns" sysctl -q -w net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 net.ipv4.conf.all.promote_secondaries=1
  ip netns exec "$ns" iptables-restore < "$work/floor/rules$n"
done
t1=$(now)
floor_build=$(ms "$t0" "$t1")
t0=$(now)
for n in $(seq 0 $((N - 1))); do
  ip -n "gbf-$((FBASE + n))" link del "gbfw$((FBASE + n))"
  ip netns del "gbf-$((FBASE + n))"
done
ip link del gbfbr0
for n in $(seq 0 $((N - 1))); do
  while [ -e "/var/run/wireguard/gbfw$((FBASE + n)).sock" ]; do sleep 0.01; done
done
t1=$(now)
floor_teardown=$(ms "$t0" "$t1")
echo
echo "floor (minimal sequential shell script, same state):"
row "build $N networks" "$floor_build ms" ""
row "tear down" "$floor_teardown ms" ""
echo "$inotify_before" > /proc/sys/fs/inotify/max_user_instances
fi

# --- A node with a real tunnel to network 0, and a client. ---
ip netns add gbnode && ip -n gbnode link set lo up
ip link add gbnh type veth peer name eth0 netns gbnode
ip addr add 10.251.0.1/30 dev gbnh && ip link set gbnh up
ip -n gbnode addr add 10.251.0.2/30 dev eth0 && ip -n gbnode link set eth0 up
gw_public=$(python3 scripts/bench/state.py gateway-key | wg pubkey)
node_private=$(wg genkey); node_public=$(echo "$node_private" | wg pubkey)
echo "$node_private" > "$work/node.key"
ip netns exec gbnode wireguard-go gbnwg >/dev/null 2>&1
until ip netns exec gbnode wg set gbnwg private-key "$work/node.key" listen-port 51900 \
  peer "$gw_public" endpoint 10.251.0.1:$BASE allowed-ips 10.80.0.0/16 persistent-keepalive 5 2>/dev/null; do sleep 0.01; done
ip -n gbnode addr add 10.80.0.2/16 dev gbnwg && ip -n gbnode link set gbnwg up
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/node-tls.key" -out "$work/node.crt" -days 1 \
  -subj /CN=svc0.bench.test -addext subjectAltName=DNS:svc0.bench.test 2>/dev/null
ip netns exec gbnode python3 tests/support/node_server.py "$work/node.crt" "$work/node-tls.key" > "$work/node.log" 2>&1 &
ip netns add gbclient && ip -n gbclient link set lo up
ip link add gbch type veth peer name eth0 netns gbclient
ip addr add 10.251.0.5/30 dev gbch && ip link set gbch up
ip -n gbclient addr add 10.251.0.6/30 dev eth0 && ip -n gbclient link set eth0 up
export BENCH_NODE_KEY=$node_public BENCH_NODE_ENDPOINT=10.251.0.2:51900
python3 scripts/bench/state.py json "$N" "$BASE" > "$work/state.json"
python3 scripts/bench/state.py json "$N" "$BASE" "$((N - 1))" > "$work/state-plus-one.json"
echo '{}' > "$work/empty.json"

# --- The daemon under test, with a private nginx. ---
cat > "$work/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
worker_processes auto;
events { worker_connections 4096; }
include $work/stream.conf;
http { access_log off; client_body_temp_path $work/body; proxy_temp_path $work/proxy; include $work/http.conf; }
CONF
"$bin" --database "$work/gateway.db" --token t --address 127.0.0.1 --port $API --custom-forwarding= \
  --wireguard-backend userspace --namespace-prefix gbn- --interface-prefix gbw --veth-prefix gbv --bridge gbbr0 \
  --bridge-subnet 10.253.0.0/16 --nginx-conf "$work/nginx.conf" --nginx-stream-config "$work/stream.conf" \
  --nginx-http-config "$work/http.conf" --nginx-pid "$work/nginx.pid" --https-listen $HTTPS --http-listen $HTTP \
  --nginx-sni-socket "$work/sni.sock" \
  --watchdog "$watchdog" --health-interval "$health_interval" --apply-wait 3600s --apply-concurrency "$concurrency" > "$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 200); do curl -fsS "$A/health" >/dev/null 2>&1 && break; sleep 0.05; done
echo
echo "daemon ($N networks x 10 peers):"
timed_post "cold apply" "$work/state.json"
row "  processes per new network" "$(python3 -c "print(f'{$last_procs / $N:.1f}')")" "(floor ~10)"
if ! skip floor; then
  row "  cold apply / floor's build (target <= 0.5x)" "$(python3 -c "print(f'{$last_ms / $floor_build:.2f}x')")" ""
fi
# Each POST right after a drift check, so that no drift check runs in its
# measurement (the next is a watchdog interval away).
next_pass "drift check (first: the new rules read)"
timed_post "no-op re-apply" "$work/state.json"
noop_ms=$last_ms
timed_post "one peer added (full POST)" "$work/state-plus-one.json"
peer_ms=$last_ms
# One POST each is at the mercy of the machine's other work: rounds of the
# same POSTs back to back (well inside the watchdog's interval after a
# drift check), and their medians. A round: the peer removed, a no-op, the
# peer added, a no-op.
rounds=${BENCH_POST_ROUNDS:-5}
if [ "$rounds" -gt 0 ]; then
  next_pass "drift check (before the rounds)"
  noops=() adds=() removes=() served=()
  for _ in $(seq "$rounds"); do
    for step in remove noop add noop; do
      file=$work/state-plus-one.json
      if [ "$step" = remove ] || { [ "$step" = noop ] && [ ${#adds[@]} -lt ${#removes[@]} ]; }; then file=$work/state.json; fi
      # curl's own time (connection to answer; not its process's start).
      read -r code took < <(curl -sS -o "$work/answer.json" -w '%{http_code} %{time_total}\n' -H "Token: t" \
        -H 'Content-Type: application/json' --data-binary "@$file" "$A/api/v1/config.json")
      [ "$code" = 200 ] || { echo "POST $file answered $code: $(cat "$work/answer.json")" >&2; exit 1; }
      took=$(python3 -c "print(round($took * 1000))")
      served+=("$(python3 -c "import json; print(json.load(open('$work/answer.json'))['duration_ms'])")")
      case $step in remove) removes+=("$took") ;; add) adds+=("$took") ;; noop) noops+=("$took") ;; esac
    done
  done
  median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] " ms (" v[1] "-" v[NR] ")" }'; }
  row "$rounds rounds: no-op re-apply, median (range)" "$(median "${noops[@]}")" ""
  row "$rounds rounds: one peer removed, median (range)" "$(median "${removes[@]}")" ""
  row "$rounds rounds: one peer added, median (range)" "$(median "${adds[@]}")" ""
  row "  of which the apply (lock to answer), all" "$(median "${served[@]}")" ""
  noop_ms="$noop_ms (median of $((2 * rounds)) more: $(median "${noops[@]}" | cut -d' ' -f1))"
  peer_ms="$peer_ms (median of $rounds more: $(median "${adds[@]}" | cut -d' ' -f1))"
fi
next_pass "drift check (the changed network's rules read)"
next_pass "drift check (steady)"
t0=$(now); curl -fsS -o /dev/null -H "Token: t" "$A/api/v1/status.json"; t1=$(now)
row "status.json (stale: re-read first)" "$(ms "$t0" "$t1") ms" "0 processes"
t0=$(now); curl -fsS -o "$work/status.json" -H "Token: t" "$A/api/v1/status.json"; t1=$(now)
row "status.json (fresh, $(du -k "$work/status.json" | cut -f1) KiB)" "$(ms "$t0" "$t1") ms" ""
sleep 1.1
t0=$(now)
pids=()
for _ in $(seq 10); do
  curl -fsS -o /dev/null -H "Token: t" "$A/api/v1/status.json" &
  pids+=($!)
done
wait "${pids[@]}"
t1=$(now)
row "status.json, 10 requests at once (all done)" "$(ms "$t0" "$t1") ms" ""
rss_mib=$(awk '/VmRSS/ {printf "%d", $2/1024}' "/proc/$daemon/status")
row "daemon RSS" "$rss_mib MiB" ""
echo "  issue 20's targets (this run: $N networks):"
echo "    no-op pass: $noop_ms ms (target < 50 ms at 1,000 networks)"
echo "    one peer added: $peer_ms ms (target < 100 ms at 1,000 networks)"
echo "    daemon RSS: $rss_mib MiB (target < 100 MiB at 1,000 networks)"
grep -h 'raised fs.inotify' "$work/daemon.log" | sed 's/^/  daemon: /' || true

# --- Upstream health checks: what a round costs. ---
if ! skip health; then
# CPU time (ms) of the daemon's thread named $1, or of the whole daemon without one.
cpu_ms() {
  local stat="/proc/$daemon/stat" t
  if [ -n "${1:-}" ]; then
    stat=""
    for t in /proc/"$daemon"/task/*; do [ "$(cat "$t/comm")" = "$1" ] && stat="$t/stat"; done
    [ -n "$stat" ] || { echo 0; return; }
  fi
  sed 's/.*) //' "$stat" | awk -v hz="$(getconf CLK_TCK)" '{ printf "%d\n", ($12 + $13) * 1000 / hz }'
}
window=$(python3 -c "import re; v, u = re.fullmatch(r'(\d+)(ms|s|m)', '$health_interval').groups(); print(2 * int(v) * {'ms': 0.001, 's': 1, 'm': 60}[u])")
next_pass "drift check (before the health window)"
rounds0=$(metric gateway_health_round_duration_seconds_count); rsum0=$(metric gateway_health_round_duration_seconds_sum)
thread0=$(cpu_ms gateway-health); all0=$(cpu_ms); procs0=$(metric gateway_commands_started_total)
sleep "$window"
rounds=$(( $(metric gateway_health_round_duration_seconds_count) - rounds0 ))
rsum=$(metric gateway_health_round_duration_seconds_sum)
thread=$(( $(cpu_ms gateway-health) - thread0 )); all=$(( $(cpu_ms) - all0 ))
procs=$(( $(metric gateway_commands_started_total) - procs0 ))
echo
echo "health checks ($((2 * N)) upstreams, $((2 * N - 2)) of them silent; interval $health_interval, ${window} s measured):"
if [ "$rounds" -gt 0 ]; then
  row "rounds, mean duration" "$rounds" "$(python3 -c "print(round(($rsum - $rsum0) * 1000 / $rounds))") ms each"
  row "CPU per round: the check thread" "$((thread / rounds)) ms" ""
  row "CPU per round: the whole daemon" "$((all / rounds)) ms" ""
else
  row "rounds" "0" "(none ended in the window)"
fi
row "processes started in the window" "$procs" ""
fi

# --- The HTTPS data path: through the gateway against the bare tunnel. ---
if ! skip https; then
big=$((64 * 1024 * 1024))
best() { sort -g | tail -1; }
gateway_get() {
  ip netns exec gbclient curl -sS -k --max-time 120 -o /dev/null -w '%{speed_download}\n' \
    --resolve "svc0.bench.test:$HTTPS:10.251.0.5" "https://svc0.bench.test:$HTTPS/bytes/$big"
}
bare_get() {
  ip netns exec "gbn-$BASE" curl -sS -k --max-time 120 -o /dev/null -w '%{speed_download}\n' "https://10.80.0.2/bytes/$big"
}
ip netns exec gbclient curl -sS -k --retry 10 --retry-all-errors --retry-delay 1 -o /dev/null \
  --resolve "svc0.bench.test:$HTTPS:10.251.0.5" "https://svc0.bench.test:$HTTPS/bytes/1"
through=$(for _ in 1 2 3; do gateway_get; done | best)
bare=$(for _ in 1 2 3; do bare_get; done | best)
echo
echo "HTTPS data path (64 MiB, best of 3):"
row "through the gateway (SNI, nginx, WireGuard)" "$(python3 -c "print(f'{$through / 1048576:.0f} MiB/s')")" ""
row "bare tunnel from the gateway's namespace" "$(python3 -c "print(f'{$bare / 1048576:.0f} MiB/s')")" ""
row "ratio" "$(python3 -c "print(f'{$through / $bare:.2f}')")" ""
fi

echo
timed_post "removal of all $N networks" "$work/empty.json"
left=$(ip netns list | grep -c '^gbn-' || true)
socks=$(find /var/run/wireguard -name 'gbw*.sock' 2>/dev/null | wc -l)
row "left behind: namespaces, sockets" "$left, $socks" ""
kill "$daemon"
wait "$daemon" 2>/dev/null || true
daemon=""

# --- traffic.json on a synthetic day, in a second daemon's database. ---
if ! skip traffic; then
"$bin" --database "$work/traffic.db" --token t --address 127.0.0.1 --port $API2 --custom-forwarding= \
  --wireguard-backend userspace --netns-dir /nonexistent --nginx-conf /nonexistent --usage-socket off > "$work/daemon2.log" 2>&1 &
daemon2=$!
for _ in $(seq 200); do curl -fsS "http://127.0.0.1:$API2/health" >/dev/null 2>&1 && break; sleep 0.05; done
python3 scripts/bench/traffic-day.py "$work/traffic.db" "$traffic_peers" > "$work/traffic-day.log"
echo
echo "traffic.json ($(cut -d: -f2 "$work/traffic-day.log" | cut -d, -f1-2 | xargs)):"
traffic() {
  local t0 t1 code
  t0=$(now)
  code=$(curl -sS -o "$work/traffic.json" -w '%{http_code}' -H "Token: t" "http://127.0.0.1:$API2/api/v1/traffic.json?$2")
  t1=$(now)
  row "$1" "$(ms "$t0" "$t1") ms" "$code, $(du -k "$work/traffic.json" | cut -f1) KiB"
}
s=$(date +%s)
traffic "last 5 minutes (target < 100 ms)" "start=$((s - 300))"
traffic "last 5 minutes (again)" "start=$((s - 300))"
traffic "24 h, step=3600" "start=$((s - 86400))&step=3600"
traffic "24 h, step=3600 (again)" "start=$((s - 86400))&step=3600"
traffic "24 h per sample (refused past a million)" "start=$((s - 86400))"
fi
echo
echo "done"
