#!/bin/sh
# keepalived's check of a gateway host (vrrp_script): healthy while the
# daemon answers /health and nginx runs. A failing check lowers this host's
# priority so the other host takes the shared address.
#   gateway-check.sh [HEALTH_URL] [NGINX_PID_FILE]
set -eu
url="${1:-http://127.0.0.1:8000/health}"
pid_file="${2:-/run/nginx.pid}"
curl -fsS --max-time 1 "$url" | grep -q '"ok"'
pid="$(cat "$pid_file")"
kill -0 "$pid"
