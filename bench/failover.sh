#!/usr/bin/env bash
# Failover benchmark: kill -9 of the writer -> a cloud change in AD, written by the standby,
# with the default lease (figures go to BENCHMARKS.md). Baseline: one instance on SQLite
# killed and restarted at once. Needs root (starts the Samba and PostgreSQL test beds if they
# are not running). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/testbed/samba-ad.sh up >/dev/null
tests/testbed/postgres.sh up >/dev/null
cargo build --release -p writeback -p graph-emulator
export WRITEBACK_TESTBED_ENV="$PWD/.testbed/samba.env"
export WRITEBACK_PG_ENV="$PWD/.testbed/postgres/pg.env"
export WRITEBACK_BIN="$PWD/target/release/writeback"
export GRAPH_EMULATOR_BIN="$PWD/target/release/graph-emulator"
cargo bench -p writeback-integration --bench failover
