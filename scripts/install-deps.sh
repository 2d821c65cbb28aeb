#!/usr/bin/env bash
# Installs the system tools the gateway drives (and its tests need) on Debian.
# Idempotent: safe to run on every CI run and on a machine that has them already.
# What it cannot do it says, with how to get it: not Debian (no apt-get),
# not root while something is missing, a package apt cannot install, and
# (unless --runtime) no Rust or a Rust older than the 1.85 the crate needs.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
runtime=false
[ "${1:-}" = "--runtime" ] && runtime=true
say() { echo "install-deps: $*" >&2; }

# What the daemon drives at run time (the container installs only these:
# --runtime), then what the tests and the demo use besides.
pkgs=(wireguard-tools wireguard-go iptables iproute2 nginx libnginx-mod-stream
      curl ca-certificates procps)
if ! $runtime; then
  # Building (a C compiler for the bundled SQLite and the linker), the test
  # servers and clients, the OpenAPI validator's venv (from PyPI), the
  # linter for the shell scripts, and sqlite3 (backups; tests read the
  # database with it), keepalived (the two-host test).
  pkgs+=(gcc libc6-dev openssl python3 python3-venv shellcheck sqlite3 keepalived)
fi

os=$(sed -n 's/^PRETTY_NAME=//p' /etc/os-release 2>/dev/null | tr -d '"')
os=${os:-an unknown system}
if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
  say "this script installs Debian packages with apt-get, which $os does not have."
  say "Use Debian 12 (bookworm) or a derivative, or install by hand what these Debian packages hold: ${pkgs[*]}"
  exit 1
fi
if [ -r /etc/os-release ] && ! grep -qx 'VERSION_CODENAME=bookworm' /etc/os-release; then
  say "note: tested on Debian 12 (bookworm); this is $os"
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    say "missing: ${missing[*]}. Installing them needs root: sudo $0 $*"
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  if ! apt-get update -qq; then
    say "apt-get update failed: check the network and the sources in /etc/apt/sources.list(.d)"
    exit 1
  fi
  if ! apt-get install -y -qq --no-install-recommends --no-remove "${missing[@]}"; then
    say "apt-get could not install: ${missing[*]}. On Debian 12 they are all in 'main'; see which one with: apt-cache policy ${missing[*]}"
    exit 1
  fi
fi
# On a systemd host apt starts nginx.service; in a container or CI nothing
# starts it. Either way the gateway reloads it (via its pid file) or starts it.

# Building needs Rust 1.85 or newer (edition 2024); Debian 12's own rustc
# (1.63) is older, so it comes from rustup.
if ! $runtime; then
  rustup_line="curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y && . \"\$HOME/.cargo/env\""
  if ! command -v cargo >/dev/null || ! command -v rustc >/dev/null; then
    say "the system tools are there, but not Rust (cargo and rustc are not on PATH: $PATH)."
    say "Install Rust 1.85 or newer with rustup (as the user who builds; then open a new shell or source the env file):"
    say "  $rustup_line"
    exit 1
  fi
  rust=$(rustc --version 2>/dev/null | awk '{print $2}')
  if [ -z "$rust" ] || [ "$(printf '%s\n' 1.85.0 "$rust" | sort -V | head -n1)" != 1.85.0 ]; then
    say "the system tools are there, but rustc ${rust:-(unreadable version)} at $(command -v rustc) is older than the 1.85 the crate needs."
    if command -v rustup >/dev/null; then
      say "Update it: rustup update stable"
    else
      say "Install Rust 1.85 or newer with rustup (Debian's rustc is too old; put ~/.cargo/bin first on PATH):"
      say "  $rustup_line"
    fi
    exit 1
  fi
fi
