#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script with
# no argument; GitLab's jobs call single steps: fmt, clippy, test, getting-started, vm, bench, openapi, fuzz, crash).
# Needs root for `test`, `getting-started`, `bench`, `fuzz` and `crash`: the end-to-end tests and the daemons they start build real namespaces,
# WireGuard interfaces, iptables rules and a private nginx. `vm` runs the same
# kind of checks with kernel WireGuard inside a qemu VM (scripts/vm-test.sh);
# it needs root only to install its packages.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s  [%d s into this run]\n' "$*" "$SECONDS"; }

fmt() {
  step "cargo fmt --check"
  cargo fmt --check
}

clippy() {
  step "cargo clippy -D warnings"
  cargo clippy --locked --all-targets -- -D warnings
}

# Re-runs this script as root, keeping only what finds the toolchain (not,
# say, UPDATE_GOLDEN from the caller's shell).
as_root() {
  exec sudo --preserve-env=CARGO_HOME,RUSTUP_HOME,CARGO_TARGET_DIR,CARGO_INCREMENTAL,FUZZ_SEED,FUZZ_SECONDS,CRASH_SEED,CRASH_ROUNDS env "PATH=$PATH" "$0" "$@"
}

tests() {
  if [ "$(id -u)" -ne 0 ]; then
    as_root test
  fi
  step "system dependencies"
  scripts/install-deps.sh
  step "cargo test (unit, API, poller, OpenAPI, packaging; end-to-end as root: --include-ignored)"
  cargo test --locked --no-fail-fast -- --include-ignored
  step "shell scripts parse and pass shellcheck"
  for f in scripts/*.sh scripts/vm/* docker/*.sh packaging/keepalived/*.sh .ci/run; do bash -n "$f"; done
  # Installed by scripts/install-deps.sh above: missing, this step fails.
  shellcheck scripts/*.sh scripts/vm/* docker/*.sh packaging/keepalived/*.sh .ci/run
}

# docs/getting-started.md run literally, its "one machine" in a sandbox of
# its own namespaces (scripts/getting-started.sh), ending with HTTPS through
# a node; about 15 s once the debug build is there.
getting_started() {
  if [ "$(id -u)" -ne 0 ]; then
    as_root getting-started
  fi
  step "docs/getting-started.md, block by block (scripts/getting-started.sh)"
  scripts/getting-started.sh
}

vm() {
  step "kernel WireGuard end to end in a VM (scripts/vm-test.sh: qemu TCG, Debian's cloud kernel)"
  scripts/vm-test.sh
}

# The scale benchmark with a few networks, so it cannot rot: it must run to
# completion (and clean up); its timings are printed, not judged.
bench() {
  if [ "$(id -u)" -ne 0 ]; then
    as_root bench
  fi
  step "scale benchmark, small (scripts/bench.sh 5; timings not judged)"
  cargo build --locked -q
  GATEWAY_BIN="${CARGO_TARGET_DIR:-target}/debug/gateway" BENCH_TRAFFIC_PEERS=100 BENCH_WATCHDOG=5s scripts/bench.sh 5
}

openapi() {
  step "OpenAPI document (target/openapi.json) is valid: openapi-spec-validator from PyPI"
  mkdir -p target
  cargo run --locked -q -- --openapi > target/openapi.json
  if [ ! -x target/venv-openapi/bin/openapi-spec-validator ]; then
    python3 -m venv target/venv-openapi
    target/venv-openapi/bin/pip install -q openapi-spec-validator
  fi
  target/venv-openapi/bin/openapi-spec-validator target/openapi.json
}

fuzz() {
  if [ "$(id -u)" -ne 0 ]; then
    as_root fuzz
  fi
  step "fuzz the API from its OpenAPI document (schemathesis, every check, ${FUZZ_SECONDS:-60} s, against a real daemon)"
  cargo build --locked -q
  scripts/fuzz-api.sh "${CARGO_TARGET_DIR:-target}/debug/gateway"
}

crash() {
  if [ "$(id -u)" -ne 0 ]; then
    as_root crash
  fi
  step "crash test: SIGKILL at random moments of random applies, ${CRASH_ROUNDS:-20} rounds, each restart converges"
  cargo build --locked -q
  CRASH_ROUNDS=${CRASH_ROUNDS:-20} scripts/crash-test.sh "${CARGO_TARGET_DIR:-target}/debug/gateway"
}

case "${1:-all}" in
  fmt) fmt ;;
  clippy) clippy ;;
  test) tests ;;
  getting-started) getting_started ;;
  vm) vm ;;
  openapi) openapi ;;
  fuzz) fuzz ;;
  bench) bench ;;
  crash) crash ;;
  all)
    if [ "$(id -u)" -ne 0 ]; then
      as_root all
    fi
    scripts/install-deps.sh
    fmt
    clippy
    tests
    getting_started
    bench
    vm
    openapi
    fuzz
    crash
    printf '\nAll checks passed (%d s).\n' "$SECONDS"
    ;;
  *)
    echo "usage: $0 [all|fmt|clippy|test|getting-started|vm|bench|openapi|fuzz|crash]" >&2
    exit 2
    ;;
esac
