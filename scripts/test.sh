#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
# Needs root: the end-to-end tests build real namespaces, WireGuard
# interfaces, iptables rules and a private nginx.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  exec sudo -E env "PATH=$PATH" "$0" "$@"
fi

step() { printf '\n== %s\n' "$*"; }

step "system dependencies"
scripts/install-deps.sh

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy -D warnings"
cargo clippy --locked --all-targets -- -D warnings

step "cargo test (unit, API, OpenAPI, end-to-end as root)"
cargo test --locked

step "OpenAPI document is valid (openapi-spec-validator)"
cargo run --locked -q -- --openapi > target/openapi.json
if [ ! -x target/venv-openapi/bin/openapi-spec-validator ]; then
  python3 -m venv target/venv-openapi
  target/venv-openapi/bin/pip install -q openapi-spec-validator
fi
target/venv-openapi/bin/openapi-spec-validator target/openapi.json

step "shell scripts parse"
for f in scripts/*.sh docker/*.sh; do if [ -f "$f" ]; then bash -n "$f"; fi; done
if command -v shellcheck >/dev/null; then shellcheck scripts/*.sh docker/*.sh; fi

printf '\nAll checks passed.\n'
