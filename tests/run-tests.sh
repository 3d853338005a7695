#!/usr/bin/env bash
# The test command (`make test`): installs what the tests need, checks and tests every rule set
# (scripts/, examples/*/rules) and the Prometheus alert rules (packaging/monitoring), installs
# headless Chromium for the console's browser tests, starts a clean Samba AD DC with the
# project's own script (and a second one, forest B, for the multi-forest tests) and a clean
# PostgreSQL cluster (tests/testbed/postgres.sh), runs the Rust suites (unit, emulator, integration, the console in the
# browser), the demo end to end, the package test, the upgrade from the previous release's
# package and the Python conformance suite, and stops the DCs, the PostgreSQL server (and what
# the demo started) by PID whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

step() { printf '\n==> %s\n' "$*"; }

# Installs the Debian packages named that are not installed yet (`apt-get update` only when the
# install fails, e.g. on a machine whose package lists are old).
install_missing() {
    local p missing=()
    for p in "$@"; do
        [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == "install ok installed" ]] || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${missing[@]}" ||
        { apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; }
}

step "Installing the test bed's Debian packages (if missing)"
tests/testbed/samba-ad.sh install
# postgresql and openssl; no system cluster is created or started.
tests/testbed/postgres.sh install

step "Build packages of the kerberos feature (if missing): clang, libclang-dev, libkrb5-dev"
install_missing clang libclang-dev libkrb5-dev
# Everything below is built and tested with Kerberos binds in (tests/integration/tests/kerberos.rs).
features=(--features writeback-integration/kerberos)

step "Python packages of the tests (pinned, in .venv): msgraph-sdk, prometheus-client"
tests/conformance/setup.sh

step "Building the workspace"
cargo build --workspace --all-targets "${features[@]}"
cargo clippy -p writeback --all-targets --features kerberos -- -D warnings

step "Rule sets, offline: writeback check and writeback test for scripts/ and examples/*/rules"
for rules in scripts examples/*/rules; do
    env -u WRITEBACK_CONFIG target/debug/writeback check --rules "$rules"
    env -u WRITEBACK_CONFIG target/debug/writeback test --rules "$rules"
done

step "Alert rules: promtool check rules and test rules for packaging/monitoring (prometheus, if missing)"
if ! command -v promtool >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends prometheus ||
        { apt-get update && apt-get install -y --no-install-recommends prometheus; }
    # Only promtool is wanted: on a machine run by systemd the package also starts a
    # Prometheus server, which the tests neither need nor stop otherwise.
    if [[ -d /run/systemd/system ]]; then
        systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    fi
fi
promtool check rules packaging/monitoring/writeback-alerts.yml
promtool test rules packaging/monitoring/writeback-alerts.test.yml

step "Headless Chromium and ChromeDriver for the console's browser tests (chromium, chromium-driver, if missing)"
install_missing chromium chromium-driver

# Both forests' DCs and the PostgreSQL server, each stopped by its script's own `down` (by PID).
stop_testbed() {
    tests/testbed/samba-ad.sh down || true
    tests/testbed/samba-ad.sh --forest b down || true
    tests/testbed/postgres.sh down || true
}

step "Starting a clean Samba AD DC on loopback"
trap stop_testbed EXIT
tests/testbed/samba-ad.sh reset

step "Starting a clean second forest (B: FABRIKAM.EXAMPLE.TEST on 127.0.0.3) for the multi-forest tests"
tests/testbed/samba-ad.sh --forest b reset

step "Starting a clean PostgreSQL cluster on 127.0.0.1:${WRITEBACK_PG_PORT:-55432} (TLS only) for the PostgreSQL state backend's tests"
tests/testbed/postgres.sh reset

export WRITEBACK_TESTBED_ENV="$ROOT/.testbed/samba.env"
export WRITEBACK_TESTBED_B_ENV="${WRITEBACK_TESTBED_B_DIR:-$ROOT/.testbed/forest-b}/samba.env"
export WRITEBACK_PG_ENV="${WRITEBACK_PG_DIR:-$ROOT/.testbed/postgres}/pg.env"
export GRAPH_EMULATOR_BIN="$ROOT/target/debug/graph-emulator"
export WRITEBACK_BIN="$ROOT/target/debug/writeback"

step "Rust tests (unit, Graph emulator, integration against Samba AD, PostgreSQL and the emulator)"
if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "${features[@]}"
else
    cargo test --workspace --no-fail-fast "${features[@]}" -- --test-threads=1
fi

step "The demo, end to end: each cloud change checked in AD (examples/demo/run.sh), then stopped"
trap 'examples/demo/stop.sh --keep-dc || true; stop_testbed' EXIT
examples/demo/run.sh
examples/demo/stop.sh --keep-dc

step "Debian package: built from the debug binary, installed, unit verified, check and test run, removed, purged"
packaging/test-package.sh

step "Upgrade: the previous release's package run on the test bed, upgraded to this build's; config, rules and state kept, nothing written (tests/upgrade)"
tests/upgrade/run.sh

step "Graph emulator against Microsoft's Python SDK (msgraph-sdk, pinned, in .venv)"
tests/conformance/run.sh
