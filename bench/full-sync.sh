#!/usr/bin/env bash
# Full sync / second sync / rule edit at scale against an LDIF import baseline (BENCHMARKS.md).
# Scale: WB_BENCH_GROUPS, WB_BENCH_USERS, WB_BENCH_MEMBERSHIPS (see the bench's header).
# WB_BENCH_STATE=sqlite (default), postgres or both: where the state is kept (postgres and
# both start the PostgreSQL test bed when it is not running).
# WB_BENCH_FRESH_DC=1 (the default here) resets the DC from its template before each side, so
# the `ldapadd` baseline and the first sync each write into a DC holding only the users.
# Needs root (starts the Samba AD test bed if it is not running). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v /usr/bin/time >/dev/null || apt-get install -y --no-install-recommends time
tests/testbed/samba-ad.sh up >/dev/null
if [[ "${WB_BENCH_STATE:-sqlite}" != sqlite ]]; then
    tests/testbed/postgres.sh up >/dev/null
    export WRITEBACK_PG_ENV="$PWD/.testbed/postgres/pg.env"
fi
cargo build --release -p writeback -p graph-emulator
export WRITEBACK_TESTBED_ENV="$PWD/.testbed/samba.env"
export WRITEBACK_BIN="$PWD/target/release/writeback"
export GRAPH_EMULATOR_BIN="$PWD/target/release/graph-emulator"
export WB_BENCH_FRESH_DC="${WB_BENCH_FRESH_DC:-1}"
cargo bench -p writeback-integration --bench full_sync
