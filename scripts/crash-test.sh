#!/usr/bin/env bash
# Crash test: each round POSTs a random configuration, kills the daemon with
# SIGKILL at a random moment 0-600 ms into its apply, restarts it on the same
# database and checks, once it reports the stored generation applied, that
# exactly the desired networks exist (namespaces, interfaces moved out of the
# root namespace, one wireguard-go and one socket each, veths, the bridge)
# and that nginx serves exactly the stored hostnames (the newest included).
# The daemon runs in a network namespace of its own, with its own names,
# nginx, database and API port; everything is removed at the end.
#
#   scripts/crash-test.sh [BINARY]   (root; default binary target/debug/gateway)
#   CRASH_ROUNDS=100 CRASH_SEED=N    how many rounds, and the seed (printed, to replay)
#   CRASH_KEEP=1                     keep the run's directory (daemon log, database)
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-${CARGO_TARGET_DIR:-target}/debug/gateway}
rounds=${CRASH_ROUNDS:-100}
seed=${CRASH_SEED:-$(( (RANDOM << 15) | RANDOM ))}
# The kill moments follow the seed too (the system's own timing does not).
RANDOM=$seed
[ "$(id -u)" -eq 0 ] || { echo "crash-test: needs root (namespaces, WireGuard, nginx)" >&2; exit 2; }
[ -x "$bin" ] || { echo "crash-test: no binary at $bin (cargo build first)" >&2; exit 2; }

tag=gc$(( $$ % 10000 ))
host_ns=$tag-host
dir=$(mktemp -d /tmp/gateway-crash.XXXXXX)
# nginx's workers (nobody) reach the daemon's sockets in it (SNI hop, usage),
# never the defaults under /run, which a gateway on this host would own.
chmod 711 "$dir"
api=http://127.0.0.1:8000
token=crash-$seed

in_host() { ip netns exec "$host_ns" "$@"; }

# Starts the daemon in the background ($daemon: its own pid, every step
# execs the next) in the test's network namespace, with a sysfs of its own
# (its /sys/class/net shows that namespace). Unlike `ip netns exec`, the
# mount namespace keeps /run/netns shared with the host, so the namespaces
# the daemon creates are there for the host and for its next start.
spawn_daemon() {
  (exec nsenter --net="/run/netns/$host_ns" -- unshare --mount --propagation unchanged -- \
    sh -c 'mount --make-rprivate /sys && mount -t sysfs sysfs /sys && exec "$@"' sh "$@") &
  daemon=$!
}


# shellcheck disable=SC2317  # called by the trap
cleanup() {
  set +e
  [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  if pid=$(cat "$dir/nginx.pid" 2>/dev/null) && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = nginx ]; then
    kill "$pid"
  fi
  for ns in /run/netns/"$tag"-*; do
    [ -e "$ns" ] && ip netns del "${ns##*/}"
  done
  for _ in $(seq 50); do
    pgrep -f "(^|/)wireguard-go ${tag}w" >/dev/null || break
    sleep 0.1
  done
  for pid in $(pgrep -f "(^|/)wireguard-go ${tag}w"); do kill "$pid"; done
  rm -f /var/run/wireguard/"${tag}"w*.sock
  if [ -n "${CRASH_KEEP:-}" ]; then echo "crash-test: kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT

cat > "$dir/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log;
worker_processes 1;
events { worker_connections 256; }
include $dir/stream.conf;
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  # Hostnames nginx does not serve answer 418; served ones 502 (their
  # upstream, an address of the network itself, refuses at once).
  server { listen 127.0.0.1:18080 default_server; return 418; }
  include $dir/http.conf;
}
EOF

start_daemon() {
  spawn_daemon "$bin" --token "$token" --database "$dir/gateway.db" --address 127.0.0.1 --port 8000 \
    --custom-forwarding= --wireguard-backend userspace --apply-wait 30s \
    --namespace-prefix "$tag-net-" --interface-prefix "${tag}w" --veth-prefix "${tag}v" \
    --bridge "${tag}br" --bridge-subnet 10.198.0.0/16 \
    --nginx-conf "$dir/nginx.conf" --nginx-stream-config "$dir/stream.conf" \
    --nginx-http-config "$dir/http.conf" --nginx-pid "$dir/nginx.pid" \
    --https-listen 127.0.0.1:18443 --http-listen 127.0.0.1:18080 --nginx-sni-socket "$dir/sni.sock" \
    >> "$dir/daemon.log" 2>&1
  for _ in $(seq 200); do
    in_host curl -sf "$api/health" >/dev/null && return
    kill -0 "$daemon" 2>/dev/null || fail "the daemon did not start"
    sleep 0.05
  done
  fail "the API did not come up"
}

fail() {
  echo "crash-test: round ${round:-0} (seed $seed): $*" >&2
  echo "--- status.json" >&2
  in_host curl -s -H "Token: $token" "$api/api/v1/status.json" >&2 || true
  echo; echo "--- links and rules" >&2
  ip -n "$host_ns" -br link >&2
  local ns
  for ns in /run/netns/"$tag"-net-*; do
    [ -e "$ns" ] || continue
    echo "-- ${ns##*/}" >&2
    ip -n "${ns##*/}" -br addr >&2
    ip netns exec "${ns##*/}" iptables-save -t nat | grep -- '-A GATEWAY' >&2
  done
  echo "--- daemon log (last 40 lines)" >&2
  tail -n 40 "$dir/daemon.log" >&2
  echo "crash-test: replay with CRASH_SEED=$seed CRASH_ROUNDS=$rounds $0" >&2
  CRASH_KEEP=1
  exit 1
}

# A random configuration for round $1: up to four of six networks, each with
# a new private key, 0-3 peers, and hostnames naming the round.
config() {
  python3 - "$seed" "$1" <<'EOF'
import base64, json, random, sys
seed, rnd = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed * 1000003 + rnd)
key = lambda: base64.b64encode(bytes(rng.getrandbits(8) for _ in range(32))).decode()
config = {}
for port in sorted(rng.sample(range(51820, 51826), rng.randint(0, 4))):
    i = port - 51820
    peers = {}
    for j in range(rng.randint(0, 3)):
        peer = {"allowed_ips": [f"10.{80 + i}.0.{10 + j}/32"]}
        if rng.random() < 0.5:
            peer["endpoint"] = f"192.0.2.{j + 1}:{51000 + j}"
        if rng.random() < 0.3:
            peer["persistent_keepalive"] = 25
        if rng.random() < 0.3:
            peer["preshared_key"] = key()
        peers[key()] = peer
    upstream = [f"10.{80 + i}.0.1:9"]
    proxy = {f"http://r{rnd}-n{i}.crash.test": upstream}
    if rng.random() < 0.5:
        proxy[f"https://r{rnd}-n{i}.crash.test"] = upstream
    config[str(port)] = {"private_key": key(), "address": [f"10.{80 + i}.0.1/24"],
                         "mtu": rng.choice([1280, 1420, 1500]), "peers": peers, "proxy": proxy}
print(json.dumps(config))
EOF
}

# The stored generation, then the stored networks' ports, then their HTTP hostnames.
stored() {
  in_host curl -sf -H "Token: $token" "$api/api/v1/config.json" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(d["generation"])
print(" ".join(sorted(d["config"])))
print(" ".join(sorted(u[len("http://"):] for n in d["config"].values() for u in n.get("proxy", {}) if u.startswith("http://"))))'
}

wait_applied() {
  for _ in $(seq 600); do
    if in_host curl -sf -H "Token: $token" "$api/api/v1/status.json" | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if s["applied_generation"] == int(sys.argv[1]) and (s["last_apply"] or {}).get("result") == "applied" else 1)' "$1"; then
      return
    fi
    sleep 0.1
  done
  fail "generation $1 was not applied within 60 s"
}

same() { [ "$(tr ' ' '\n' <<< "$2" | sed '/^$/d' | sort)" = "$(tr ' ' '\n' <<< "$3" | sed '/^$/d' | sort)" ] || fail "$1: want [$2], have [$3]"; }

# Checks that the system is exactly the stored state; $1: the hostnames of
# this round and the one before (the stored state is one of those two; the
# ones not stored must not be served).
verify() {
  local lines generation ports hosts
  mapfile -t lines < <(stored)
  generation=${lines[0]}; ports=${lines[1]:-}; hosts=${lines[2]:-}
  [ "$generation" -eq 0 ] && return
  wait_applied "$generation"
  same "namespaces" "$ports" "$(find /run/netns -name "$tag-net-*" -printf '%f\n' | sed "s/^$tag-net-//")"
  local root
  root=$(ip -n "$host_ns" -o link show | awk -F': ' '{print $2}' | cut -d@ -f1)
  same "WireGuard interfaces left in the root namespace" "" "$(sed -n "s/^${tag}w//p" <<< "$root")"
  same "root ends of veths" "$ports" "$(sed -n "s/^${tag}v//p" <<< "$root")"
  if [ -n "$ports" ] && ! grep -qx "${tag}br" <<< "$root"; then fail "no bridge"; fi
  if [ -z "$ports" ] && grep -qx "${tag}br" <<< "$root"; then fail "the bridge outlived the last network"; fi
  local p
  for p in $ports; do
    ip -n "$tag-net-$p" -o link show "${tag}w$p" | grep -q ',UP' || fail "${tag}w$p is not up in its namespace"
  done
  same "wireguard-go processes" "$ports" "$(pgrep -af "(^|/)wireguard-go ${tag}w" | sed -n "s/.*wireguard-go ${tag}w//p")"
  same "wireguard-go sockets" "$ports" "$(find /var/run/wireguard -name "${tag}w*.sock" -printf '%f\n' | sed "s/^${tag}w//; s/\.sock$//")"
  local h want have
  for h in $1; do
    want=418
    tr ' ' '\n' <<< "$hosts" | grep -qxF "$h" && want=502
    have=$(in_host curl -s -o /dev/null -m 10 -w '%{http_code}' -H "Host: $h" http://127.0.0.1:18080/ || true)
    [ "$have" = "$want" ] || fail "nginx answers $have for $h (stored hostnames: $hosts)"
  done
}

echo "crash-test: $rounds rounds, seed $seed (replay: CRASH_SEED=$seed CRASH_ROUNDS=$rounds $0)"
ip netns add "$host_ns"
ip -n "$host_ns" link set lo up
start_daemon
hosts_of() { python3 -c 'import json,sys; print(" ".join(u[7:] for n in json.load(open(sys.argv[1])).values() for u in n["proxy"] if u.startswith("http://")))' "$1"; }
before="" now=""
for round in $(seq 1 "$rounds"); do
  verify "$before $now"
  config "$round" > "$dir/config.json"
  before=$now
  now=$(hosts_of "$dir/config.json")
  echo "--- round $round" >> "$dir/daemon.log"
  in_host curl -s -o /dev/null -m 30 -H "Token: $token" -H 'Content-Type: application/json' \
    --data-binary @"$dir/config.json" "$api/api/v1/config.json" &
  poster=$!
  sleep "0.$(printf '%03d' $(( RANDOM % 600 )))"
  kill -9 "$daemon"
  wait "$daemon" 2>/dev/null || true
  wait "$poster" 2>/dev/null || true
  start_daemon
  printf '.'
done
verify "$before $now"
kill -TERM "$daemon"
wait "$daemon" || fail "the daemon's stop did not exit 0"
daemon=""
grep -n "panicked" "$dir/daemon.log" >&2 && fail "the daemon's log holds a panic"
echo
echo "crash-test: $rounds rounds passed (seed $seed)"
