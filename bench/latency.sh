#!/usr/bin/env bash
# Cloud change -> AD latency benchmark (figures go to BENCHMARKS.md).
# Needs root (starts the Samba AD test bed if it is not running). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/testbed/samba-ad.sh up >/dev/null
cargo build --release -p writeback -p graph-emulator
export WRITEBACK_TESTBED_ENV="$PWD/.testbed/samba.env"
export WRITEBACK_BIN="$PWD/target/release/writeback"
export GRAPH_EMULATOR_BIN="$PWD/target/release/graph-emulator"
cargo bench -p writeback-integration --bench latency
