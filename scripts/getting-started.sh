#!/usr/bin/env bash
# Runs docs/getting-started.md literally: the fenced ```sh blocks, in the
# order of the document, chosen by the HTML comment just above each one
# (invisible on the rendered page):
#   <!-- ci: rustup ... -->   run on this machine only where rustc is missing or older than 1.85
#   <!-- ci: machine -->      run on this machine (install the tools, build)
#   <!-- ci: try -->          run in the "one machine" of the document: a sandbox
# Every ```sh block carries one of them, so no step of the document goes
# untested. The `try` blocks run in one shell (their variables and
# background jobs carry on) inside new network, mount and PID namespaces:
# ports 443/80/8000 and /run (namespaces, wireguard-go's sockets, nginx's
# pid file) are the sandbox's own, /etc/nginx is a copy, and when the
# sandbox's first process exits the kernel ends every process started in it.
# So the steps run as written, with the daemon's defaults, beside the
# end-to-end tests and any gateway of this machine without touching them.
# After the document's own clean-up the sandbox must hold no namespace and
# no wireguard-go. Needs root (re-runs itself with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  exec sudo --preserve-env=CARGO_HOME,RUSTUP_HOME env "PATH=$PATH" "$0" "$@"
fi
doc=docs/getting-started.md
say() { printf '\n== getting-started: %s\n' "$*"; }

# The blocks of one kind, concatenated; fails on an unmarked ```sh block.
extract() {
  awk -v want="$1" -v doc="$doc" '
    /^```sh$/ {
      if (prev !~ /^<!-- ci: [a-z]+/) { printf "%s:%d: a ```sh block without a <!-- ci: KIND --> line just above it\n", doc, NR > "/dev/stderr"; bad = 1 }
      split(prev, w, /[: ]+/); inside = 1; take = (w[3] == want); prev = $0; next
    }
    inside && /^```$/ { inside = 0; take = 0 }
    take { print }
    { prev = $0 }
    END { exit bad }
  ' "$doc"
}

if [ -e try ]; then
  echo "getting-started: ./try exists (the document's scratch directory): remove it first" >&2
  exit 1
fi
work=$(mktemp -d /tmp/gateway-getting-started.XXXXXX)
cleanup() {
  if [ -d try ]; then
    echo "--- the daemon's log (try/gateway.log)"
    cat try/gateway.log 2>/dev/null || true
    rm -rf try
  fi
  rm -rf "$work"
}
trap cleanup EXIT
for kind in rustup machine try; do extract "$kind" > "$work/$kind.sh"; done
for kind in machine try; do
  [ -s "$work/$kind.sh" ] || { echo "getting-started: $doc has no '$kind' block" >&2; exit 1; }
done

rust=$(rustc --version 2>/dev/null | awk '{print $2}' || true)
case "$rust" in
  1.[0-9].*|1.[0-7][0-9].*|1.8[0-4].*|"")
    say "rustc ${rust:-missing}: the rustup block"
    bash -euxo pipefail "$work/rustup.sh"
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env" ;;
  *) say "rustc $rust is 1.85 or newer: the rustup block is not needed" ;;
esac

say "the machine blocks (tools, build)"
bash -euxo pipefail "$work/machine.sh"

say "the try blocks, in a sandbox of new network, mount and PID namespaces"
# shellcheck disable=SC2016 # the inner script expands its own variables
unshare --pid --fork --mount-proc --net --mount --propagation private \
  env WORK="$work" bash -euo pipefail -c '
    mount -t sysfs sysfs /sys
    mount -t tmpfs tmpfs /run
    mkdir "$WORK/etc-nginx" && cp -a /etc/nginx/. "$WORK/etc-nginx/" && mount --bind "$WORK/etc-nginx" /etc/nginx
    mkdir -p /var/log/nginx && mount -t tmpfs tmpfs /var/log/nginx
    ip link set lo up
    bash -euxo pipefail "$WORK/try.sh"
    left=$(ip netns list)
    [ -z "$left" ] || { echo "getting-started: namespaces left after the clean-up: $left" >&2; exit 1; }
    if pgrep -x wireguard-go >/dev/null; then echo "getting-started: wireguard-go left running" >&2; exit 1; fi
    [ ! -e try ] || { echo "getting-started: try/ left behind" >&2; exit 1; }
  '
say "HTTPS through the node, then everything removed: the document works as written"
