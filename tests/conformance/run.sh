#!/usr/bin/env bash
# Run the msgraph-sdk conformance test against the Graph emulator binary.
# Builds nothing: uses $GRAPH_EMULATOR_BIN, else <repo>/target/debug/graph-emulator
# (`cargo build -p graph-emulator` first). Fails when pytest fails or collects no tests.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

bash "$here/setup.sh"

bin="${GRAPH_EMULATOR_BIN:-$repo/target/debug/graph-emulator}"
if [[ ! -x "$bin" ]]; then
    echo "run.sh: emulator binary not found at $bin (set GRAPH_EMULATOR_BIN or run: cargo build -p graph-emulator)" >&2
    exit 1
fi
export GRAPH_EMULATOR_BIN="$bin"

cd "$repo"
# pytest exits 5 when it collects nothing; any non-zero status fails this script.
"$repo/.venv/bin/python" -m pytest -q -p no:cacheprovider tests/conformance "$@"
