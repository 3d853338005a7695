#!/usr/bin/env bash
# The long, randomised run of the fault suite: many kill -9 points of a first sync, and many
# LDAP outage and cut points, over several seeds. Every seed is printed; a failing one replays
# with `FAULTS_SEED=<seed> FAULTS_POINTS=<n> tests/faults/randomised.sh`.
#
#   FAULTS_POINTS  fault points per test and seed (default 25)
#   FAULTS_RUNS    seeds to try (default 4); ignored when FAULTS_SEED is set
#   FAULTS_SEED    one seed to replay
#   FAULTS_FILTER  nextest filter (default: the kill -9, DC stop and cut tests)
#
# Needs the Samba test bed up (tests/testbed/samba-ad.sh up) and runs as root, like CI.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${root}"

points="${FAULTS_POINTS:-25}"
runs="${FAULTS_RUNS:-4}"
filter="${FAULTS_FILTER:-test(kill_9_at_random_points) | test(mid_apply) | test(mid_batch)}"

cargo build -p writeback -p graph-emulator
export WRITEBACK_TESTBED_ENV="${WRITEBACK_TESTBED_ENV:-${root}/.testbed/samba.env}"
export GRAPH_EMULATOR_BIN="${GRAPH_EMULATOR_BIN:-${root}/target/debug/graph-emulator}"
export WRITEBACK_BIN="${WRITEBACK_BIN:-${root}/target/debug/writeback}"
export FAULTS_POINTS="${points}"

if [[ -n "${FAULTS_SEED:-}" ]]; then
    seeds=("${FAULTS_SEED}")
else
    seeds=()
    for _ in $(seq "${runs}"); do
        seeds+=("$(od -An -N6 -tu8 /dev/urandom | tr -d ' ')")
    done
fi

failed=()
for seed in "${seeds[@]}"; do
    echo "== seed ${seed}: ${points} points per test"
    # --no-capture shows every fault point and runs one test at a time: the kill points are
    # drawn within the timing of an undisturbed run, which a busy machine stretches.
    if ! FAULTS_SEED="${seed}" cargo nextest run -p writeback-faults --no-fail-fast \
        --no-capture -E "${filter}"; then
        failed+=("${seed}")
    fi
done

if ((${#failed[@]})); then
    echo "failed seeds: ${failed[*]} (replay: FAULTS_SEED=<seed> FAULTS_POINTS=${points} $0)" >&2
    exit 1
fi
echo "all ${#seeds[@]} seeds passed"
