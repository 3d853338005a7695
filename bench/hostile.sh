#!/usr/bin/env bash
# Hostile values: what a few hostile groups cost a sync beside WB_HOSTILE_GROUPS normal ones.
#
# Two first syncs in the same run, on the same DC, each `writeback sync --json` under
# /usr/bin/time (wall s, user/sys CPU s, max RSS KiB), each with its own state file, tenant and
# managed OU:
#   baseline  WB_HOSTILE_GROUPS normal cloud security groups (exit 0, every group created);
#   hostile   the same number of normal groups plus hostile ones (exit 2: the normal groups
#             created, each hostile one refused with a short reason):
#             rule output: a 10 MB string, a 1,000,000-element array, a 1,000-deep nested map,
#             an attribute of 100,000 values, nesting grown until a limit stops it;
#             cloud data: a displayName of 300 characters, one of 10 MB, a member whose id is
#             200 characters (no directory object has such an id).
# The script checks the exit codes, the counts, that no line of the log and no string of the
# report is longer than 4 KB, then prints both timings and the ratio.
#
# Environment:
#   WB_BIN, WB_EMULATOR_BIN   binaries (default: the newer of target/release/* and target/debug/*)
#   WB_HOSTILE_GROUPS         normal groups (default 1000)
#   WB_HOSTILE_WORKDIR        work directory (default: a new /tmp/wb-hostile.XXXXXX, kept)
#   WB_HOSTILE_DAEMON_SECS    also run `writeback run` over the hostile tenant (fresh state, poll
#                             1 s) this long, sampling its VmRSS every second: the peak of the
#                             cycle that refuses the hostile groups, and what it holds after the
#                             idle cycles that follow (default 0: not run)
#
# Needs root (the Samba test bed), python3, ldap-utils, GNU time. Loopback only. The emulator is
# stopped by PID; the OU=WB Hostile subtree is deleted at the start and at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
N="${WB_HOSTILE_GROUPS:-1000}"
# The newer of the release and the debug build (a stale release binary lacks the limits).
pick() {
    local r="$REPO/target/release/$1" d="$REPO/target/debug/$1"
    if [[ -x "$r" && ( ! -x "$d" || "$r" -nt "$d" ) ]]; then echo "$r"; else echo "$d"; fi
}
WB="${WB_BIN:-$(pick writeback)}"
EMU="${WB_EMULATOR_BIN:-$(pick graph-emulator)}"

die() {
    printf 'hostile.sh: error: %s\n' "$*" >&2
    exit 1
}
[[ "$N" =~ ^[0-9]+$ && "$N" -ge 1 ]] || die "WB_HOSTILE_GROUPS must be a whole number >= 1"
for b in "$WB" "$EMU"; do [[ -x "$b" ]] || die "binary not found: $b (set WB_BIN / WB_EMULATOR_BIN)"; done
for t in python3 ldapsearch ldapadd ldapdelete timeout; do command -v "$t" >/dev/null || die "$t is needed"; done
[[ -x /usr/bin/time ]] || die "/usr/bin/time is needed (apt-get install time)"

WORK="${WB_HOSTILE_WORKDIR:-$(mktemp -d /tmp/wb-hostile.XXXXXX)}"
mkdir -p "$WORK/bin"
# Both runs use the same binaries, whatever is rebuilt meanwhile.
cp "$WB" "$WORK/bin/writeback" && cp "$EMU" "$WORK/bin/graph-emulator"
WB="$WORK/bin/writeback" EMU="$WORK/bin/graph-emulator"
EMU_PID=""
stop_emulator() {
    if [[ -n "$EMU_PID" ]] && kill -0 "$EMU_PID" 2>/dev/null; then
        kill -TERM "$EMU_PID"
        for _ in $(seq 1 50); do kill -0 "$EMU_PID" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$EMU_PID" 2>/dev/null && kill -KILL "$EMU_PID"
        wait "$EMU_PID" 2>/dev/null || true
    fi
    EMU_PID=""
}
cleanup() {
    local rc=$?
    set +e
    stop_emulator
    [[ -n "${ROOT_OU:-}" ]] && ldapdelete "${LDAP[@]}" -r "$ROOT_OU" >/dev/null 2>&1
    rm -f "$WORK"/tenant-*.json
    echo "hostile.sh: logs in $WORK (exit $rc)" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

tests/testbed/samba-ad.sh up >/dev/null
# shellcheck disable=SC1091
source "${WRITEBACK_TESTBED_DIR:-$REPO/.testbed}/samba.env"
[[ "$AD_LDAPS_URL" == ldaps://127.* ]] || die "the DC is not on loopback: $AD_LDAPS_URL"
export LDAPTLS_CACERT="$AD_CA_FILE"
LDAP=(-H "$AD_LDAPS_URL" -x -D "$AD_BIND_DN" -w "$AD_BIND_PASSWORD" -o nettimeout=120)
ROOT_OU="OU=WB Hostile,$AD_BASE_DN"
ldapdelete "${LDAP[@]}" -r "$ROOT_OU" >/dev/null 2>&1 || true
ldapadd "${LDAP[@]}" >/dev/null <<EOF
dn: $ROOT_OU
objectClass: organizationalUnit
ou: WB Hostile

dn: OU=baseline,$ROOT_OU
objectClass: organizationalUnit
ou: baseline

dn: OU=hostile,$ROOT_OU
objectClass: organizationalUnit
ou: hostile
EOF

RULES="$WORK/rules"
rm -rf "$RULES" && mkdir -p "$RULES"
cat >"$RULES/10-hostile.rhai" <<'EOF'
// Each group named "Hostile <kind>" gets a runaway value; the rest go to 20-normal.rhai.
fn in_scope(group) { group.displayName.starts_with("Hostile ") }
fn to_ad(group) {
    let kind = group.displayName.sub_string(8);
    let v = "";
    if kind == "string" {
        v = "0123456789"; while v.len() < 10_000_000 { v += v; }
    } else if kind == "array" {
        v = []; v.pad(1_000_000, "smtp:a@x.test");
    } else if kind == "nested" {
        v = #{}; for i in 0..1000 { v = #{ a: v }; }
    } else if kind == "values" {
        v = []; v.pad(100_000, "x"); v = map(v, |x, i| `smtp:u${i}@x.test`);
    } else if kind == "deep" {
        v = []; loop { v = [v]; }
    }
    #{ parent: setting("container"), cn: `Hostile ${kind}`, attributes: #{ info: v } }
}
EOF
cat >"$RULES/20-normal.rhai" <<'EOF'
import "std/naming" as naming;
fn in_scope(group) { true }
fn to_ad(group) {
    #{
        parent: setting("container"),
        cn: naming::cloud_sync_cn(group),
        attributes: #{ displayName: group.displayName, description: group.description },
    }
}
EOF

# tenant NAME HOSTILE: writes $WORK/tenant-NAME.json and $WORK/NAME.meta.
tenant() {
    python3 - "$N" "$2" "$WORK/tenant-$1.json" "$WORK/$1.meta" "$1" <<'PY'
import json, random, sys, uuid
n, hostile, dst, meta, name = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3], sys.argv[4], sys.argv[5]
rnd = random.Random(name)
uid = lambda: str(uuid.UUID(int=rnd.getrandbits(128), version=4))
def group(name, members=()):
    return {"id": uid(), "displayName": name, "description": f"{name} (bench)", "groupTypes": [],
            "mailEnabled": False, "securityEnabled": True, "mailNickname": f"g{rnd.getrandbits(32):08x}",
            "members": list(members)}
users, groups = [], [group(f"Normal {i}") for i in range(n)]
if hostile:
    for kind in ["string", "array", "nested", "values", "deep"]:
        groups.append(group(f"Hostile {kind}"))
    groups.append(group("Y" * 300))
    groups.append(group("Z" * (10 * 1024 * 1024)))
    odd = "a" * 200
    users.append({"id": odd, "displayName": "Odd", "userPrincipalName": "odd@contoso.onmicrosoft.com"})
    groups.append(group("Odd member", [odd]))
app = {"clientId": uid(), "clientSecret": "wb-hostile-" + uid(), "displayName": "Writeback"}
tenant = {"tenantId": uid(), "domain": "contoso.onmicrosoft.com", "apps": [app], "users": users, "groups": groups}
json.dump(tenant, open(dst, "w"), separators=(",", ":"))
open(meta, "w").write(f"TENANT_ID={tenant['tenantId']}\nCLIENT_ID={app['clientId']}\nCLIENT_SECRET='{app['clientSecret']}'\nTOTAL_GROUPS={len(groups)}\n")
PY
}

# emulate NAME: serves $WORK/tenant-NAME.json; sets BASE to its URL.
emulate() {
    local name="$1"
    rm -f "$WORK/emulator-$name.out"
    "$EMU" serve --listen 127.0.0.1:0 --tenant "$WORK/tenant-$name.json" >"$WORK/emulator-$name.out" 2>"$WORK/emulator-$name.log" &
    EMU_PID=$!
    for _ in $(seq 1 300); do [[ -s "$WORK/emulator-$name.out" ]] && break; sleep 0.2; done
    BASE="$(head -n1 "$WORK/emulator-$name.out")"
    [[ "$BASE" == http://127.0.0.1:* ]] || die "emulator URL: $BASE"
}

# config NAME OU EXTRA: writes $WORK/NAME.toml for the emulator at $BASE, groups into OU=OU.
config() {
    local name="$1" ou="$2" base="$BASE"
    cat >"$WORK/$name.toml" <<EOF
[graph]
tenant_id = "$TENANT_ID"
client_id = "$CLIENT_ID"
client_secret_env = "WB_HOSTILE_GRAPH_SECRET"
graph_url = "$base/v1.0"
token_url = "$base/$TENANT_ID/oauth2/v2.0/token"

[ad]
url = "$AD_LDAPS_URL"
bind_dn = "$AD_BIND_DN"
password_env = "WB_HOSTILE_AD_PASSWORD"
ca_file = "$AD_CA_FILE"
managed_ous = ["OU=$ou,$ROOT_OU"]

[rules]
folder = "$RULES"
stdlib = "$REPO/stdlib"

[rules.settings]
container = "OU=$ou,$ROOT_OU"

[state]
path = "$WORK/$name.db"

$3
EOF
    rm -f "$WORK/$name".db*
}

# run NAME HOSTILE EXPECTED_EXIT: one first sync; sets T_NAME="wall user sys maxrss_kib".
run() {
    local name="$1" rc=0
    tenant "$name" "$2"
    # shellcheck disable=SC1090
    source "$WORK/$name.meta"
    emulate "$name"
    config "$name" "$name" ""
    local t0=$EPOCHREALTIME
    WB_HOSTILE_GRAPH_SECRET="$CLIENT_SECRET" WB_HOSTILE_AD_PASSWORD="$AD_BIND_PASSWORD" NO_COLOR=1 \
        timeout 1800 /usr/bin/time -f "%e %U %S %M" -o "$WORK/$name.time" \
        "$WB" --config "$WORK/$name.toml" sync --json >"$WORK/$name.json" 2>"$WORK/$name.log" || rc=$?
    local wall
    wall="$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')"
    stop_emulator
    [[ "$rc" -eq "$3" ]] || { tail -n 20 "$WORK/$name.log" >&2; die "$name: writeback sync exited $rc, expected $3"; }
    printf -v "T_$name" '%s %s' "$wall" "$(tail -n1 "$WORK/$name.time" | cut -d' ' -f2-)"
    python3 - "$WORK/$name.json" "$WORK/$name.log" "$N" "$TOTAL_GROUPS" <<'PY'
import json, sys
report, log, n, groups = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
longest = max((len(l) for l in open(log, "rb")), default=0)
if longest > 4096:
    sys.exit(f"{log}: a line of {longest} bytes")
doc = json.load(open(report))
todo, longest = [doc], 0
while todo:
    v = todo.pop()
    if isinstance(v, dict):
        todo.extend(v.values())
    elif isinstance(v, list):
        todo.extend(v)
    elif isinstance(v, str):
        longest = max(longest, len(v))
if longest > 4096:
    sys.exit(f"{report}: a string of {longest} characters")
p = doc["plan"]
created = sum(1 for c in p["changes"] if c["action"] == "create")
refused = p["refused"]
if created != n or len(refused) != groups - n:
    sys.exit(f"{report}: {created} created (expected {n}), {len(refused)} refused (expected {groups - n})")
for r in refused:
    print(f"    refused {r['cloud_id'][:40]}: {r['reason'][:150]}", file=sys.stderr)
PY
}

echo "writeback: $WB" >&2
run baseline 0 0
run hostile 1 2
read -r BW BU BS BM <<<"$T_baseline"
read -r HW HU HS HM <<<"$T_hostile"
echo
echo "groups: $N normal; hostile run: +8 hostile (5 rule outputs, 3 cloud groups)"
printf '%-9s %8s %8s %8s %12s\n' run "wall s" "user s" "sys s" "max RSS MiB"
printf '%-9s %8s %8s %8s %12s\n' baseline "$BW" "$BU" "$BS" "$((BM / 1024))"
printf '%-9s %8s %8s %8s %12s\n' hostile "$HW" "$HU" "$HS" "$((HM / 1024))"
awk -v a="$BW" -v b="$HW" -v c="$BM" -v d="$HM" 'BEGIN { printf "hostile/baseline: wall %.2fx, max RSS %.2fx\n", b / a, d / c }'

DSECS="${WB_HOSTILE_DAEMON_SECS:-0}"
[[ "$DSECS" =~ ^[0-9]+$ ]] || die "WB_HOSTILE_DAEMON_SECS must be a whole number"
if [[ "$DSECS" -gt 0 ]]; then
    # The hostile tenant again, into a fresh OU and state, under the daemon.
    ldapadd "${LDAP[@]}" >/dev/null <<EOF
dn: OU=daemon,$ROOT_OU
objectClass: organizationalUnit
ou: daemon
EOF
    # shellcheck disable=SC1090
    source "$WORK/hostile.meta"
    emulate hostile
    config daemon daemon '[daemon]
poll_interval_secs = 1
reconcile_interval_secs = 0
watch = "off"'
    WB_HOSTILE_GRAPH_SECRET="$CLIENT_SECRET" WB_HOSTILE_AD_PASSWORD="$AD_BIND_PASSWORD" NO_COLOR=1 \
        "$WB" --config "$WORK/daemon.toml" run 2>"$WORK/daemon.log" &
    DPID=$!
    : >"$WORK/daemon.rss"
    for _ in $(seq 1 "$DSECS"); do
        sleep 1
        kill -0 "$DPID" 2>/dev/null || die "the daemon stopped; see $WORK/daemon.log"
        awk '/^VmRSS/ { print $2 }' "/proc/$DPID/status" >>"$WORK/daemon.rss"
    done
    HWM="$(awk '/^VmHWM/ { print $2 }' "/proc/$DPID/status")"
    # CPU the daemon used (utime + stime, clock ticks).
    DCPU="$(awk '{ printf "%.2f", ($14 + $15) / '"$(getconf CLK_TCK)"' }' "/proc/$DPID/stat")"
    # Where the resident memory is at the end, mapping by mapping (heap, arenas, thread stacks).
    cp "/proc/$DPID/smaps" "$WORK/daemon.smaps"
    kill -TERM "$DPID"
    wait "$DPID" || true
    stop_emulator
    # Cycles after the first, and the groups they evaluated (the refused ones wait in quarantine).
    AFTER="$(python3 - "$WORK/daemon.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
first = c.execute("select min(id) from run where mode = 'sync'").fetchone()[0]
n, ev = c.execute("select count(*), coalesce(sum(json_extract(stats_json, '$.evaluated')), 0) "
                  "from run where mode = 'sync' and id > ?", (first,)).fetchone()
print(f"{n} cycles, {ev} groups evaluated")
PY
)"
    LAST="$(tail -n1 "$WORK/daemon.rss")"
    MIN="$(sort -n "$WORK/daemon.rss" | head -n1)"
    echo
    echo "daemon over the hostile tenant for ${DSECS} s: VmHWM $((HWM / 1024)) MiB (the first cycle);"
    echo "  VmRSS lowest $((MIN / 1024)) MiB, at the end $((LAST / 1024)) MiB; CPU ${DCPU} s; after the first cycle: $AFTER"
fi
