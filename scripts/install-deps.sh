#!/usr/bin/env bash
# Installs the system tools the gateway drives (and its tests need) on Debian.
# Idempotent: safe to run on every CI run and on a machine that has them already.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# What the daemon drives at run time (the container installs only these:
# --runtime), then what the tests and the demo use besides.
pkgs=(wireguard-tools wireguard-go iptables iproute2 nginx libnginx-mod-stream
      curl ca-certificates procps)
if [ "${1:-}" != "--runtime" ]; then
  # Building (a C compiler for the bundled SQLite and the linker), the test
  # servers and clients, the OpenAPI validator's venv (from PyPI), and the
  # linter for the shell scripts.
  pkgs+=(gcc libc6-dev openssl python3 python3-venv shellcheck sqlite3)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends --no-remove "${missing[@]}"
fi
# On a systemd host apt starts nginx.service; in a container or CI nothing
# starts it. Either way the gateway reloads it (via its pid file) or starts it.
