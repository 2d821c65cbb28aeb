#!/usr/bin/env bash
# Container entrypoint: enable forwarding (best effort: with --net=host and
# NET_ADMIN it works; without, the daemon still runs and says why), then run
# the daemon with whatever arguments the container was given.
set -euo pipefail
if ! sysctl -q -w net.ipv4.ip_forward=1 2>/dev/null; then
  echo "entrypoint: could not set net.ipv4.ip_forward=1 (needs NET_ADMIN / --net=host); continuing" >&2
fi
mkdir -p /run/netns /var/run/wireguard
exec /usr/local/bin/gateway "$@"
