#!/usr/bin/env bash
# `make demo-stop`: stops what `make demo` left running, by the PIDs it recorded: the daemon,
# the Graph emulator, and (unless --keep-dc) the Samba AD test bed.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEMO="$(pwd)/.testbed/demo"

stop() {
    local name="$1" file="$DEMO/$1.pid" pid
    [[ -f "$file" ]] || return 0
    pid="$(cat "$file")"
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        echo "stopped the $name (PID $pid)"
    fi
    rm -f "$file"
}

stop daemon
stop emulator
[[ "${1:-}" == --keep-dc ]] || tests/testbed/samba-ad.sh down
