# Sourced by examples/demo/run.sh for the default rules, after the first syncs (GRAPH_BASE, WB,
# DEMO, LDAP, AD_BASE_DN and say are set): the daemon runs, cloud changes are made through the
# emulator's Graph API, and each one is shown arriving in AD with the time it took; then a rule
# edit reloaded while the daemon runs, deletes held back and approved, and a group in
# quarantine. A change that does not reach AD within 30 s stops the demo with an error.

TENANT_ID="7f3e2a10-4b5c-4d6e-8f90-a1b2c3d4e5f6"
CLIENT_ID="5a1c0f52-8d3e-4f0b-9c61-2e7d4b8a9f10"
CLOUD_OU="OU=Cloud Groups,$AD_BASE_DN"
TOKEN="$(curl -sSf "$GRAPH_BASE/$TENANT_ID/oauth2/v2.0/token" \
    -d "client_id=$CLIENT_ID" -d "client_secret=$WRITEBACK_DEMO_GRAPH_SECRET" \
    -d scope=https://graph.microsoft.com/.default -d grant_type=client_credentials |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')"

# graph METHOD PATH [JSON]: a Graph request to the emulator; prints the answer.
graph() {
    curl -sSf -X "$1" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        ${3:+--data "$3"} "$GRAPH_BASE/v1.0$2"
}

# new_group NAME NICK: creates a cloud security group; prints its id.
new_group() {
    graph POST /groups "{\"displayName\": \"$1\", \"mailEnabled\": false, \"mailNickname\": \"$2\", \"securityEnabled\": true}" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# arrives WHAT FILTER present|gone STARTED_MS: waits until FILTER matches under OU=Cloud Groups
# (or, with gone, matches nothing) and says how long after STARTED_MS (the change) that was.
arrives() {
    local what="$1" filter="$2" want="$3" started="$4" n ms
    for _ in $(seq 1 300); do
        n="$(ldapsearch "${LDAP[@]}" -LLL -b "$CLOUD_OU" "$filter" 1.1 | grep -c '^dn' || true)"
        if { [[ "$want" == present ]] && ((n > 0)); } || { [[ "$want" == gone ]] && ((n == 0)); }; then
            ms=$(($(now_ms) - started))
            printf '    %s: in AD after %d.%d s\n' "$what" $((ms / 1000)) $((ms % 1000 / 100))
            return 0
        fi
        sleep 0.1
    done
    echo "    $what: not in AD after 30 s; the daemon's log: $DEMO/daemon.log" >&2
    return 1
}

say "The daemon: writeback run, polling Graph every second ($DEMO/daemon.log)"
# The metrics and the read-only web console on a free loopback port.
CONSOLE_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
printf '\n[daemon]\npoll_interval_secs = 1\nlisten = "127.0.0.1:%s"\n\n[console]\nenabled = true\n' \
    "$CONSOLE_PORT" >>"$WRITEBACK_CONFIG"
echo "$CONSOLE_PORT" >"$DEMO/console.port"
# Four deletes in one cycle are then over the threshold (the rest of the demo deletes one).
sed -i 's/^delete_threshold = 10$/delete_threshold = 3/' "$WRITEBACK_CONFIG"
grep -q '^delete_threshold = 3$' "$WRITEBACK_CONFIG"
# A group whose AD name a hand-made object already holds: created in the cloud before the
# daemon starts, so the daemon's first cycle meets the conflict.
BLOCKED="$(new_group "Demo Blocked" demo-blocked)"
ldapadd "${LDAP[@]}" >/dev/null <<LDIF
dn: CN=Demo Blocked_${BLOCKED:24},OU=Security,$CLOUD_OU
objectClass: group
description: made by hand, not Writeback's
LDIF
"$WB" run >"$DEMO/daemon.log" 2>&1 &
echo $! >"$DEMO/daemon.pid"
echo "daemon PID $(cat "$DEMO/daemon.pid")"

say "Cloud changes, each timed until it is in AD"
t=$(now_ms)
new_group "Demo Newcomers" demo-newcomers >/dev/null
arrives "new group \"Demo Newcomers\"" "(displayName=Demo Newcomers)" present "$t"
t=$(now_ms)
graph PATCH /groups/b2000000-0000-4000-8000-00000000a001 '{"displayName": "Marketing and Sales"}'
arrives "rename \"Marketing Team\" -> \"Marketing and Sales\"" "(displayName=Marketing and Sales)" present "$t"
t=$(now_ms)
graph POST /groups/b2000000-0000-4000-8000-00000000b001/members/\$ref \
    '{"@odata.id": "https://graph.microsoft.com/v1.0/directoryObjects/a1000000-0000-4000-8000-000000000002"}'
arrives "Bob Brown added to \"Finance Approvers\"" \
    "(&(displayName=Finance Approvers)(member=CN=Bob Brown,OU=Demo Users,$AD_BASE_DN))" present "$t"
t=$(now_ms)
graph DELETE /groups/b2000000-0000-4000-8000-00000000b002
arrives "\"Finance Auditors\" deleted" "(displayName=Finance Auditors)" gone "$t"

say "A rule edit while the daemon runs: 20-security.rhai now also writes info"
t=$(now_ms)
sed -i 's|            displayName: group.displayName,|            displayName: group.displayName,\n            info: "written by Writeback",|' \
    "$DEMO/rules/20-security.rhai"
arrives "the edited rule reloaded and applied to \"Demo Newcomers\"" \
    "(&(displayName=Demo Newcomers)(info=written by Writeback))" present "$t"

say "Deletes held back: four groups deleted at once, over safety.delete_threshold (3)"
TEMP=()
for i in 1 2 3 4; do
    TEMP+=("$(new_group "Demo Temp $i" "demo-temp-$i")")
done
t=$(now_ms)
arrives "four new groups" "(&(displayName=Demo Temp 4)(info=written by Writeback))" present "$t"
for id in "${TEMP[@]}"; do graph DELETE "/groups/$id"; done
HELD=""
for _ in $(seq 1 300); do
    HELD="$("$WB" status --json | python3 -c 'import json, sys; print(json.load(sys.stdin).get("held_set") or "")')"
    [[ -n "$HELD" ]] && break
    sleep 0.1
done
[[ -n "$HELD" ]] || { echo "no deletes were held back" >&2; exit 1; }
"$WB" status | sed -n '/Deletes held back/,/^$/p'
n="$(ldapsearch "${LDAP[@]}" -LLL -b "$CLOUD_OU" '(displayName=Demo Temp *)' 1.1 | grep -c '^dn' || true)"
echo "    still in AD while held: $n of 4"
((n == 4)) || { echo "held deletes were applied" >&2; exit 1; }
t=$(now_ms)
"$WB" approve "$HELD"
arrives "the approved deletes" "(displayName=Demo Temp *)" gone "$t"

say "A group that cannot be written: quarantined, tried again with a growing wait"
"$WB" status | sed -n '/Groups failing/,/^$/p'
"$WB" status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
q = [g for g in s.get("quarantine", []) if g.get("cloud_id") == sys.argv[1]]
sys.exit(0 if q else "the blocked group is not in quarantine")' "$BLOCKED"
echo "    \"Demo Blocked\" ($BLOCKED) waits in quarantine; the hand-made group is left as it was"
curl -sSf "http://127.0.0.1:$CONSOLE_PORT/console/quarantine" | grep -q "$BLOCKED" ||
    { echo "the web console does not show the blocked group" >&2; exit 1; }
echo "    the web console shows it too: http://127.0.0.1:$CONSOLE_PORT/console/quarantine"

say "writeback explain, by the name as the cloud holds it (spaces and all)"
"$WB" explain ' R&D, "Labs" <Zürich> #1; a+b=c \ '
