#!/usr/bin/env bash
# `make demo`: group writeback end to end on the local test bed.
#
# Starts the Samba AD DC (tests/testbed/samba-ad.sh), creates the demo's on-premises users,
# seeds the Graph emulator with examples/demo/tenant.template.json (users synced from AD with
# their real SIDs, cloud-only users, Microsoft 365 and security groups, a nested group, an empty
# group, a name full of LDAP special characters), then: check, plan, sync, sync again (nothing
# to do). With the default rules it goes on (examples/demo/story.sh): the daemon runs, cloud
# changes arrive in AD in seconds, a rule edit is reloaded, deletes are held and approved, a
# group waits in quarantine. It ends with what is in AD and the commands to look around; the
# emulator, the daemon and the DC keep running until `make demo-stop`
# (examples/demo/stop.sh, by their PIDs). If a step fails, the emulator and the daemon are
# stopped at once.
#
# WRITEBACK_BIN and GRAPH_EMULATOR_BIN, when both set, are used instead of building.
#
# `examples/demo/run.sh examples/<name>/rules` runs an example's rule set instead of scripts/.
# Beside that rules folder, the example may have: settings.toml (its [rules.settings]), ous.ldif
# (OUs it needs below OU=Cloud Groups), tenant.template.json (its own sample tenant) and
# demo-steps.sh (more steps, sourced after the second sync).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO="$(pwd)"
DEMO="$REPO/.testbed/demo"
RULES="$(realpath "${1:-scripts}")"
EXAMPLE="$(dirname "$RULES")"
[[ -n "${1:-}" ]] || EXAMPLE="$REPO/examples/demo"
SETTINGS="$EXAMPLE/settings.toml"
[[ -f "$SETTINGS" ]] || SETTINGS="$REPO/examples/demo/settings.toml"
TEMPLATE="$EXAMPLE/tenant.template.json"
[[ -f "$TEMPLATE" ]] || TEMPLATE="$REPO/examples/demo/tenant.template.json"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "Starting the Samba AD test bed"
tests/testbed/samba-ad.sh up >/dev/null
# shellcheck disable=SC1091
source "$REPO/.testbed/samba.env"
export LDAPTLS_CACERT="$AD_CA_FILE"
LDAP=(-H "$AD_LDAPS_URL" -x -D "$AD_BIND_DN" -w "$AD_BIND_PASSWORD")

if [[ -n "${WRITEBACK_BIN:-}" && -n "${GRAPH_EMULATOR_BIN:-}" ]]; then
    WB="$WRITEBACK_BIN"
    EMU="$GRAPH_EMULATOR_BIN"
else
    say "Building writeback and the Graph emulator (the first build takes several minutes)"
    cargo build -p writeback -p graph-emulator
    WB="$REPO/target/debug/writeback"
    EMU="$REPO/target/debug/graph-emulator"
fi

say "Preparing AD: demo users and an empty 'OU=Cloud Groups'"
# A clean start: remove what an earlier demo left (only the demo's own OUs).
for ou in "OU=Cloud Groups,$AD_BASE_DN" "OU=Demo Users,$AD_BASE_DN"; do
    ldapdelete "${LDAP[@]}" -r "$ou" 2>/dev/null || true
done
ldapadd "${LDAP[@]}" -f examples/demo/ad-users.ldif >/dev/null
[[ ! -f "$EXAMPLE/ous.ldif" ]] || ldapadd "${LDAP[@]}" -f "$EXAMPLE/ous.ldif" >/dev/null

say "Seeding the Graph emulator with the sample tenant"
examples/demo/stop.sh --keep-dc >/dev/null 2>&1 || true
rm -rf "$DEMO" && mkdir -p "$DEMO"
if [[ -z "${1:-}" ]]; then
    # The default rules, copied: the story edits one while the daemon runs.
    cp -r "$RULES" "$DEMO/rules"
    chmod -R go-w "$DEMO/rules"
    RULES="$DEMO/rules"
fi
ldapsearch "${LDAP[@]}" -LLL -b "OU=Demo Users,$AD_BASE_DN" '(objectClass=user)' \
    sAMAccountName objectSid objectGUID | examples/demo/fill_tenant.py "$TEMPLATE" >"$DEMO/tenant.json"
"$EMU" serve --listen 127.0.0.1:0 --tenant "$DEMO/tenant.json" >"$DEMO/emulator.out" 2>"$DEMO/emulator.log" &
EMU_PID=$!
echo "$EMU_PID" >"$DEMO/emulator.pid"
# On a failure, what the demo started stops at once (the DC stays, as after a success).
trap 'rc=$?; if ((rc != 0)); then examples/demo/stop.sh --keep-dc >/dev/null 2>&1 || true; fi' EXIT
for _ in $(seq 1 100); do
    [[ -s "$DEMO/emulator.out" ]] && break
    sleep 0.1
done
GRAPH_BASE="$(head -n1 "$DEMO/emulator.out")"
[[ "$GRAPH_BASE" == http* ]] || { echo "the emulator did not start:"; cat "$DEMO/emulator.log"; exit 1; }
echo "Graph emulator at $GRAPH_BASE (PID $EMU_PID)"

sed -e "s|@GRAPH_BASE@|$GRAPH_BASE|g" -e "s|@AD_LDAPS_URL@|$AD_LDAPS_URL|g" \
    -e "s|@AD_BIND_DN@|$AD_BIND_DN|g" -e "s|@AD_CA_FILE@|$AD_CA_FILE|g" -e "s|@REPO@|$REPO|g" \
    -e "s|@RULES@|$RULES|g" examples/demo/writeback.toml.in >"$DEMO/writeback.toml"
cat "$SETTINGS" >>"$DEMO/writeback.toml"
export WRITEBACK_CONFIG="$DEMO/writeback.toml"
export WRITEBACK_DEMO_GRAPH_SECRET="demo-secret-not-for-production"
export WRITEBACK_DEMO_AD_PASSWORD="$AD_BIND_PASSWORD"

say "writeback check --online (the config, the rules, Graph and AD answering; nothing written)"
"$WB" check --online

say "writeback test (the rules' unit tests in $RULES/tests, offline)"
"$WB" test

say "writeback plan (what a sync would change; nothing is written)"
"$WB" plan

say "writeback sync"
"$WB" sync

say "writeback sync again: nothing changed in the cloud, so nothing is written"
"$WB" sync

# shellcheck disable=SC1091
[[ ! -f "$EXAMPLE/demo-steps.sh" ]] || source "$EXAMPLE/demo-steps.sh"
# shellcheck disable=SC1091
[[ -n "${1:-}" ]] || source examples/demo/story.sh

say "What is now in AD under OU=Cloud Groups"
# Values LDIF shows in base64 (non-ASCII, a leading space) are printed as text.
ldapsearch "${LDAP[@]}" -LLL -o ldif-wrap=no -b "OU=Cloud Groups,$AD_BASE_DN" '(objectClass=group)' \
    cn displayName description groupType sAMAccountName mail proxyAddresses mailNickname info \
    extensionName adminDisplayName msExchRecipientDisplayType msExchRecipientTypeDetails \
    msDS-ExternalDirectoryObjectId member | python3 -c '
import base64, sys
for line in sys.stdin:
    name, sep, value = line.rstrip("\n").partition(":: ")
    if not sep:
        print(line, end="")
        continue
    text = base64.b64decode(value).decode()
    # Quoted only when leading or trailing spaces would otherwise not show.
    print(f"{name}: " + (f"\"{text}\"" if text != text.strip() else text))'

cat >"$DEMO/env.sh" <<ENV
# Source this to use the demo's configuration: . $DEMO/env.sh
export WRITEBACK_CONFIG="$WRITEBACK_CONFIG"
export WRITEBACK_DEMO_GRAPH_SECRET="$WRITEBACK_DEMO_GRAPH_SECRET"
export WRITEBACK_DEMO_AD_PASSWORD="$WRITEBACK_DEMO_AD_PASSWORD"
export PATH="$(dirname "$WB"):\$PATH"
ENV
say "Done. Look around (the daemon, the emulator and the DC keep running):"
cat <<HELP
    . $DEMO/env.sh
    writeback status                     # the daemon, last runs, held deletes, failing groups
    writeback history                    # the runs, newest first
    writeback audit --group "Finance Approvers"
    writeback explain ' R&D, "Labs" <Zürich> #1; a+b=c \ '
    writeback plan                       # what a sync would change now (nothing is written)
    tail -f $DEMO/daemon.log             # the daemon's log
HELP
if [[ -f "$DEMO/console.port" ]]; then
    echo "    The same in a browser (read-only): http://127.0.0.1:$(cat "$DEMO/console.port")/console"
fi
echo "Stop everything with: make demo-stop"
