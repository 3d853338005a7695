#!/usr/bin/env bash
# Scale benchmark: what a cycle costs against a large tenant when only a few hundred groups are
# in scope, and above all what an idle cycle (no cloud change) costs, for the one-shot `sync`
# and for the daemon (`writeback run`, 1 s poll). Figures go to BENCHMARKS.md.
#
# Tenant: `graph-emulator generate --users WB_SCALE_USERS --groups WB_SCALE_GROUPS --seed 1`
# (about 24 memberships a group). Rules: the default rules (scripts/) with the scope narrowed to
# the groups whose id starts with WB_SCALE_SCOPE_PREFIX (default "00": about 1/256 of them).
# The synced users that are members of those groups get an AD account (their SIDs in the tenant
# are replaced by the real ones), so the first sync writes real memberships.
#
# Measured, each under /usr/bin/time (wall s, user CPU s, sys CPU s, max RSS):
#   plan (first contact: full cloud download), first sync (creates the groups in scope),
#   second sync with no cloud change (AD highestCommittedUSN must not move), third idle sync,
#   a plan with nothing to show (its baseline: the idle sync before it);
#   then `writeback run` (poll 1 s) for WB_SCALE_DAEMON_SECS after its first cycle: cycles run,
#   CPU per idle cycle (/proc/PID/stat), VmHWM/VmRSS at the end.
# Baseline, same run: the floor of an idle cycle = the two delta requests (users, groups) from
# the current deltaLinks, made with one curl, plus a `writeback --version` process start.
#
# Opt-in steps, after the daemon window:
#   Latency (WB_SCALE_LATENCY_SAMPLES=N > 0): cloud change -> visible in AD. Each sample PATCHes
#   the description of one in-scope group that exists in AD (round robin) through the emulator's
#   Graph API, then reads that group's description in AD every 20 ms (one LDAP connection kept
#   open, base search on its DN) until the new value is there; a sample gives up after
#   WB_SCALE_LATENCY_GIVEUP s (default 10) and counts as a failure. Two series of N samples:
#   baseline = a one-shot `writeback sync` started right after the PATCH (wall time from the
#   PATCH until visible); daemon = `writeback run` (poll 1 s) running, with a random 0-1 s pause
#   before each PATCH so the changes fall at random points of the poll period. p50/p90/p99/max
#   (nearest rank) over the samples that arrived.
#   Soak (WB_SCALE_SOAK_SECS=S > 0): `writeback run` idle for S s after its first cycle;
#   VmRSS/VmHWM and CPU sampled every 60 s ($WORK/soak.csv); start/max/end, CPU per cycle.
#   Resync and bulk change (WB_SCALE_RESYNC=1), each a `writeback sync --json` under
#   /usr/bin/time, with the first sync's figures as the same run's baseline: (1) after the
#   emulator's `POST /_emulator/delta/reset {"count":1}` (the next delta request from a token,
#   the users', answers 410: the users' round starts over and every group holding a user is
#   looked at); (2) after an emulator restart on the same port with the tenant file (every
#   token of the old process answers 410: users, devices and groups read in full); (3) after
#   WB_SCALE_BULK_PERCENT % of the groups (default 90, every group but one in ten by id order,
#   in-scope ones included) got a new description through Graph's `$batch` (20 PATCHes a
#   request): a tenant-wide property change. The restart loses changes made through the API
#   before it (the latency step's), which that sync then writes back.
#   State on PostgreSQL (WB_SCALE_PG=1), last: the groups the SQLite steps wrote are deleted
#   from AD, the PostgreSQL test bed is started if it is not running (tests/testbed/postgres.sh,
#   stopped at exit if started here) and a fresh database made; then, with the config's
#   `[state.postgres]` on it and the rules as before the rule edit: first sync (full download,
#   creates), second sync (USN unchanged), third idle sync, the same rule edit, and the daemon
#   window. Each figure is set beside the SQLite step of the same run (its baseline).
#
# Environment:
#   WB_BIN, WB_EMULATOR_BIN    binaries (default target/release/writeback, target/release/graph-emulator)
#   WB_SCALE_GROUPS            groups in the tenant (default 100000)
#   WB_SCALE_USERS             users in the tenant (default 100000)
#   WB_SCALE_SCOPE_PREFIX      in-scope group ids start with this (default 00)
#   WB_SCALE_DAEMON_SECS       daemon measuring window after its first cycle (default 60)
#   WB_SCALE_LATENCY_SAMPLES   latency samples per series (default 0: no latency step)
#   WB_SCALE_LATENCY_GIVEUP    seconds after which a latency sample is a failure (default 10)
#   WB_SCALE_SOAK_SECS         idle daemon soak length after its first cycle (default 0: no soak)
#   WB_SCALE_RESYNC            1: the resync and bulk-change steps (default 0)
#   WB_SCALE_BULK_PERCENT      share of the groups the bulk-change step changes (default 90)
#   WB_SCALE_PG                1: the same steps again with the state on PostgreSQL (default 0)
#   WB_SCALE_AD_MEMBERS        1: create AD accounts for the in-scope groups' synced members (default 1)
#   WB_SCALE_STEP_TIMEOUT      upper bound of each measured step, seconds (default 3600)
#   WB_SCALE_WORKDIR           work directory (default: a new /tmp/wb-scale.XXXXXX, kept for the logs)
#   WB_SCALE_KEEP_TENANT       1: keep the (large) tenant files in the work directory (default 0)
#   WRITEBACK_TESTBED_IP / WRITEBACK_TESTBED_DIR   passed to tests/testbed/samba-ad.sh (its DC)
#
# Needs root (the Samba test bed), python3, curl, ldap-utils, GNU time. Loopback only: the DC
# listens on WRITEBACK_TESTBED_IP (a 127.x address), the emulator on 127.0.0.1.
# The DC is stopped at exit only if this script started it; the emulator always (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
SCRIPT_START=$SECONDS
CMDLINE="$(printf '%q ' "$0" "$@")"

GROUPS_N="${WB_SCALE_GROUPS:-100000}"
USERS_N="${WB_SCALE_USERS:-100000}"
PREFIX="${WB_SCALE_SCOPE_PREFIX:-00}"
DAEMON_SECS="${WB_SCALE_DAEMON_SECS:-60}"
LAT_SAMPLES="${WB_SCALE_LATENCY_SAMPLES:-0}"
LAT_GIVEUP="${WB_SCALE_LATENCY_GIVEUP:-10}"
SOAK_SECS="${WB_SCALE_SOAK_SECS:-0}"
RESYNC="${WB_SCALE_RESYNC:-0}"
BULK_PERCENT="${WB_SCALE_BULK_PERCENT:-90}"
PG="${WB_SCALE_PG:-0}"
AD_MEMBERS="${WB_SCALE_AD_MEMBERS:-1}"
STEP_TIMEOUT="${WB_SCALE_STEP_TIMEOUT:-3600}"
WB="${WB_BIN:-$REPO/target/release/writeback}"
EMU="${WB_EMULATOR_BIN:-$REPO/target/release/graph-emulator}"

say() { printf '\n==> [%5ds] %s\n' "$((SECONDS - SCRIPT_START))" "$*" >&2; }
die() {
    printf 'scale.sh: error: %s\n' "$*" >&2
    exit 1
}

[[ "$GROUPS_N" =~ ^[0-9]+$ && "$USERS_N" =~ ^[0-9]+$ && "$DAEMON_SECS" =~ ^[0-9]+$ &&
    "$LAT_SAMPLES" =~ ^[0-9]+$ && "$LAT_GIVEUP" =~ ^[0-9]+$ && "$SOAK_SECS" =~ ^[0-9]+$ &&
    "$RESYNC" =~ ^[01]$ && "$PG" =~ ^[01]$ && "$BULK_PERCENT" =~ ^[0-9]+$ && "$BULK_PERCENT" -le 100 ]] ||
    die "WB_SCALE_GROUPS, WB_SCALE_USERS, WB_SCALE_DAEMON_SECS, WB_SCALE_LATENCY_SAMPLES, WB_SCALE_LATENCY_GIVEUP and WB_SCALE_SOAK_SECS must be whole numbers, WB_SCALE_RESYNC and WB_SCALE_PG 0 or 1, WB_SCALE_BULK_PERCENT 0 to 100"
[[ "$PREFIX" =~ ^[0-9a-f]*$ ]] || die "WB_SCALE_SCOPE_PREFIX must be lowercase hex"
for b in "$WB" "$EMU"; do
    [[ -x "$b" ]] || die "binary not found or not executable: $b (set WB_BIN / WB_EMULATOR_BIN, or build with: cargo build --release -p writeback -p graph-emulator)"
done
WB="$(realpath "$WB")"
EMU="$(realpath "$EMU")"
for t in python3 curl ldapsearch ldapadd ldapdelete timeout; do
    command -v "$t" >/dev/null || die "$t is needed"
done
[[ -x /usr/bin/time ]] || die "/usr/bin/time is needed (apt-get install time)"
[[ "${WRITEBACK_TESTBED_IP:-127.0.0.1}" == 127.* ]] || die "WRITEBACK_TESTBED_IP must be a loopback address"

WORK="${WB_SCALE_WORKDIR:-$(mktemp -d /tmp/wb-scale.XXXXXX)}"
mkdir -p "$WORK"
WORK="$(realpath "$WORK")"
TENANT="$WORK/tenant.json"
EMU_PID=""
DAEMON_PID=""
DC_STARTED=0
PG_STARTED=0

cleanup() {
    local rc=$?
    set +e
    if [[ -n "$DAEMON_PID" ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -TERM "$DAEMON_PID"
        for _ in $(seq 1 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$DAEMON_PID" 2>/dev/null && kill -KILL "$DAEMON_PID"
        wait "$DAEMON_PID" 2>/dev/null
    fi
    if [[ -n "$EMU_PID" ]] && kill -0 "$EMU_PID" 2>/dev/null; then
        kill -TERM "$EMU_PID"
        for _ in $(seq 1 50); do kill -0 "$EMU_PID" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$EMU_PID" 2>/dev/null && kill -KILL "$EMU_PID"
        wait "$EMU_PID" 2>/dev/null
    fi
    if [[ "$DC_STARTED" -eq 1 ]]; then
        tests/testbed/samba-ad.sh down >/dev/null 2>&1
    fi
    if [[ "$PG_STARTED" -eq 1 ]]; then
        tests/testbed/postgres.sh down >/dev/null 2>&1
    fi
    if [[ "${WB_SCALE_KEEP_TENANT:-0}" != 1 ]]; then
        rm -f "$TENANT" "$WORK/tenant.generated.json"
    fi
    echo "scale.sh: logs in $WORK (exit $rc)" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
say "Samba AD test bed (tests/testbed/samba-ad.sh, ${WRITEBACK_TESTBED_IP:-127.0.0.1})"
if ! tests/testbed/samba-ad.sh status >/dev/null 2>&1; then
    DC_STARTED=1
fi
tests/testbed/samba-ad.sh up >/dev/null
ENV_FILE="${WRITEBACK_TESTBED_DIR:-$REPO/.testbed}/samba.env"
[[ -f "$ENV_FILE" ]] || die "no $ENV_FILE after samba-ad.sh up"
# shellcheck disable=SC1090
source "$ENV_FILE"
[[ "$AD_LDAPS_URL" == ldaps://127.* ]] || die "the DC is not on loopback: $AD_LDAPS_URL"
export LDAPTLS_CACERT="$AD_CA_FILE"
LDAP=(-H "$AD_LDAPS_URL" -x -D "$AD_BIND_DN" -w "$AD_BIND_PASSWORD" -o nettimeout=30)
ROOT_OU="OU=WB Scale,$AD_BASE_DN"
MANAGED_OU="OU=Cloud Groups,$ROOT_OU"
USERS_OU="OU=Users,$ROOT_OU"

highest_usn() {
    ldapsearch "${LDAP[@]}" -LLL -b "" -s base highestCommittedUSN |
        sed -n 's/^highestCommittedUSN: //p'
}

say "AD: a fresh $ROOT_OU (managed OUs and the members' accounts)"
if ldapsearch "${LDAP[@]}" -LLL -b "$ROOT_OU" -s base dn >/dev/null 2>&1; then
    timeout "$STEP_TIMEOUT" ldapdelete "${LDAP[@]}" -r "$ROOT_OU" ||
        die "could not delete the previous $ROOT_OU"
fi
ldapadd "${LDAP[@]}" >/dev/null <<EOF
dn: $ROOT_OU
objectClass: organizationalUnit
ou: WB Scale

dn: $USERS_OU
objectClass: organizationalUnit
ou: Users

dn: $MANAGED_OU
objectClass: organizationalUnit
ou: Cloud Groups

dn: OU=Microsoft 365,$MANAGED_OU
objectClass: organizationalUnit
ou: Microsoft 365

dn: OU=Security,$MANAGED_OU
objectClass: organizationalUnit
ou: Security
EOF

# ---------------------------------------------------------------------------------------------
say "Tenant: graph-emulator generate --users $USERS_N --groups $GROUPS_N --seed 1"
T0=$SECONDS
timeout "$STEP_TIMEOUT" "$EMU" generate --users "$USERS_N" --groups "$GROUPS_N" --seed 1 \
    >"$WORK/tenant.generated.json"
GEN_SECS=$((SECONDS - T0))

say "Tenant: in-scope members' AD accounts, SIDs, app credentials"
T0=$SECONDS
WB_PREP_PREFIX="$PREFIX" WB_PREP_AD_MEMBERS="$AD_MEMBERS" WB_PREP_USERS_OU="$USERS_OU" \
    WB_PREP_LDAP_URL="$AD_LDAPS_URL" WB_PREP_BIND_DN="$AD_BIND_DN" WB_PREP_BIND_PW="$AD_BIND_PASSWORD" \
    timeout "$STEP_TIMEOUT" python3 - "$WORK/tenant.generated.json" "$TENANT" "$WORK/tenant.meta" <<'PY'
import base64, json, os, subprocess, sys

src, dst, meta_path = sys.argv[1:4]
prefix = os.environ["WB_PREP_PREFIX"]
with open(src) as f:
    t = json.load(f)
users = {u["id"]: u for u in t["users"]}
candidates = [g for g in t["groups"] if g["id"].startswith(prefix)]
memberships = sum(len(g.get("members", [])) for g in t["groups"])
wanted = []
seen = set()
for g in candidates:
    for m in g.get("members", []):
        u = users.get(m)
        if u is not None and u.get("onPremisesSecurityIdentifier") and m not in seen:
            seen.add(m)
            wanted.append(m)

def ldap_env():
    return dict(os.environ)

base = [ "-H", os.environ["WB_PREP_LDAP_URL"], "-x", "-D", os.environ["WB_PREP_BIND_DN"],
         "-w", os.environ["WB_PREP_BIND_PW"], "-o", "nettimeout=30"]
ou = os.environ["WB_PREP_USERS_OU"]
mapped = 0
if os.environ["WB_PREP_AD_MEMBERS"] == "1" and wanted:
    ldif = []
    for i, uid in enumerate(wanted):
        ldif.append(f"dn: CN=wbs{i},{ou}\nobjectClass: user\nsAMAccountName: wbs{i}\n"
                    f"description: {uid}\nuserAccountControl: 514\n")
    r = subprocess.run(["ldapadd", *base], input="\n".join(ldif), text=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ldap_env())
    if r.returncode != 0:
        sys.exit(f"ldapadd of the members' accounts failed: {r.stderr.strip()}")
    r = subprocess.run(["ldapsearch", *base, "-LLL", "-o", "ldif-wrap=no", "-E", "pr=1000/noprompt",
                        "-b", ou, "-s", "one", "(objectClass=user)", "description", "objectSid"],
                       text=True, capture_output=True, env=ldap_env())
    if r.returncode != 0:
        sys.exit(f"ldapsearch of the members' accounts failed: {r.stderr.strip()}")
    def sid_str(b):
        n = b[1]
        auth = int.from_bytes(b[2:8], "big")
        subs = [int.from_bytes(b[8 + 4 * k:12 + 4 * k], "little") for k in range(n)]
        return "S-%d-%d%s" % (b[0], auth, "".join("-%d" % s for s in subs))
    for block in r.stdout.split("\n\n"):
        desc = sid = None
        for line in block.splitlines():
            if line.startswith("description: "):
                desc = line[len("description: "):].strip()
            elif line.startswith("objectSid:: "):
                sid = sid_str(base64.b64decode(line[len("objectSid:: "):]))
        if desc in users and sid:
            users[desc]["onPremisesSecurityIdentifier"] = sid
            mapped += 1
    if mapped != len(wanted):
        sys.exit(f"only {mapped} of {len(wanted)} AD accounts read back")
with open(dst, "w") as f:
    json.dump(t, f, separators=(",", ":"))
app = t["apps"][0]
with open(meta_path, "w") as f:
    f.write(f"TENANT_ID={t['tenantId']}\nCLIENT_ID={app['clientId']}\n"
            f"CLIENT_SECRET='{app['clientSecret']}'\n"
            f"N_USERS={len(t['users'])}\nN_GROUPS={len(t['groups'])}\nN_MEMBERSHIPS={memberships}\n"
            f"N_CANDIDATES={len(candidates)}\nN_AD_USERS={mapped}\n")
PY
PREP_SECS=$((SECONDS - T0))
# shellcheck disable=SC1091
source "$WORK/tenant.meta"
rm -f "$WORK/tenant.generated.json"
echo "tenant: $N_USERS users, $N_GROUPS groups, $N_MEMBERSHIPS memberships; $N_CANDIDATES groups with an id starting \"$PREFIX\"; $N_AD_USERS member accounts created in AD" >&2

# ---------------------------------------------------------------------------------------------
say "Graph emulator"
T0=$SECONDS
"$EMU" serve --listen 127.0.0.1:0 --tenant "$TENANT" >"$WORK/emulator.out" 2>"$WORK/emulator.log" &
EMU_PID=$!
while [[ ! -s "$WORK/emulator.out" ]]; do
    kill -0 "$EMU_PID" 2>/dev/null || { cat "$WORK/emulator.log" >&2; die "the emulator exited"; }
    ((SECONDS - T0 < STEP_TIMEOUT)) || die "the emulator printed no URL within $STEP_TIMEOUT s"
    sleep 0.2
done
GRAPH_BASE="$(head -n1 "$WORK/emulator.out")"
[[ "$GRAPH_BASE" == http://127.0.0.1:* ]] || die "unexpected emulator URL: $GRAPH_BASE"
EMU_SECS=$((SECONDS - T0))
echo "emulator at $GRAPH_BASE (PID $EMU_PID), up in $EMU_SECS s" >&2

# ---------------------------------------------------------------------------------------------
say "Rules: scripts/ with scope narrowed to group ids starting \"$PREFIX\""
RULES="$WORK/rules"
rm -rf "$RULES" && mkdir -p "$RULES"
for f in "$REPO"/scripts/*.rhai; do
    grep -q '^fn in_scope(group) {$' "$f" || die "$f has no 'fn in_scope(group) {' line to narrow"
    sed "s/^fn in_scope(group) {\$/fn in_scope(group) {\n    group.id.starts_with(\"$PREFIX\") \&\&/" "$f" \
        >"$RULES/$(basename "$f")"
done

CONFIG="$WORK/writeback.toml"
cat >"$CONFIG" <<EOF
# Written by bench/scale.sh
[graph]
tenant_id = "$TENANT_ID"
client_id = "$CLIENT_ID"
client_secret_env = "WB_SCALE_GRAPH_SECRET"
graph_url = "$GRAPH_BASE/v1.0"
token_url = "$GRAPH_BASE/$TENANT_ID/oauth2/v2.0/token"

[ad]
url = "$AD_LDAPS_URL"
bind_dn = "$AD_BIND_DN"
password_env = "WB_SCALE_AD_PASSWORD"
ca_file = "$AD_CA_FILE"
managed_ous = ["$MANAGED_OU"]

[members]
user_match = "sid"

[rules]
folder = "$RULES"
stdlib = "$REPO/stdlib"

[rules.settings]
m365_container = "OU=Microsoft 365,$MANAGED_OU"
security_container = "OU=Security,$MANAGED_OU"

[state]
path = "$WORK/state.db"

[safety]
delete_threshold = 10

[daemon]
poll_interval_secs = 1
reconcile_interval_secs = 86400
EOF
rm -f "$WORK"/state.db*
export WB_SCALE_GRAPH_SECRET="$CLIENT_SECRET"
export NO_COLOR=1
export WB_SCALE_AD_PASSWORD="$AD_BIND_PASSWORD"
"$WB" --config "$CONFIG" check >"$WORK/check.log" 2>&1 || { cat "$WORK/check.log" >&2; die "writeback check failed"; }

# ---------------------------------------------------------------------------------------------
# Seconds between two $EPOCHREALTIME readings, 3 decimals.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# timed NAME ARGS...: runs `writeback --config CONFIG ARGS` under /usr/bin/time; sets
# T_<NAME>="wall user sys maxrss_kib" and RC_<NAME>; stdout/stderr in $WORK/NAME.{out,log}.
timed() {
    local name="$1"
    shift
    local rc=0 t0 t1
    t0=$EPOCHREALTIME
    RUST_LOG="writeback=debug" timeout "$STEP_TIMEOUT" /usr/bin/time -f "%e %U %S %M" -o "$WORK/$name.time" \
        "$WB" --config "$CONFIG" "$@" >"$WORK/$name.out" 2>"$WORK/$name.log" || rc=$?
    t1=$EPOCHREALTIME
    [[ -s "$WORK/$name.time" ]] || { tail -n 30 "$WORK/$name.log" >&2; die "writeback $* produced no timing (exit $rc)"; }
    # wall (ms precision, from the shell's clock), user, sys, max RSS (from /usr/bin/time).
    printf -v "T_${name}" '%s %s' "$(elapsed "$t0" "$t1")" "$(tail -n1 "$WORK/$name.time" | cut -d' ' -f2-)"
    printf -v "RC_${name}" '%s' "$rc"
    if [[ "$rc" -eq 124 ]]; then
        die "writeback $* did not finish within $STEP_TIMEOUT s"
    elif [[ "$rc" -ne 0 && "$rc" -ne 2 ]]; then
        tail -n 30 "$WORK/$name.log" >&2
        die "writeback $* exited $rc"
    fi
    local t="T_${name}"
    echo "  writeback $*: exit $rc; wall/user/sys/maxrss: ${!t}" >&2
    echo "    phases (ms): $(phases "$name")" >&2
    tail -n 1 "$WORK/$name.out" | sed 's/^/    /' >&2 || true
}

# A log without colour codes.
clean() { sed 's/\x1b\[[0-9;]*m//g' "$1"; }
# "phase=ms" of the host's "sync phase done" debug lines on stdin, space-separated.
phase_pairs() {
    grep -E 'sync phase done' | sed -n 's/.*phase="\{0,1\}\([a-z_]*\)"\{0,1\} ms=\([0-9]*\).*/\1=\2/p' |
        paste -sd' ' - || true
}
phases() { clean "$WORK/$1.log" | phase_pairs; }

say "writeback plan (first contact: full cloud download, nothing written)"
timed plan plan
say "writeback sync (first: creates the groups in scope)"
timed sync1 sync
say "writeback sync (second, no cloud change)"
USN_BEFORE="$(highest_usn)"
timed sync2 sync
USN_AFTER="$(highest_usn)"
echo "  highestCommittedUSN before/after: $USN_BEFORE / $USN_AFTER" >&2
say "writeback sync (third, idle)"
timed sync3 sync
say "writeback plan (nothing to show: the state as the idle syncs left it)"
timed plan_idle plan

# A rule edit: the description of the in-scope groups whose id starts with "${PREFIX}0" (about a
# sixteenth of them) changes. Every cached group is evaluated again; only those are written.
say "Rule edit: description of the groups whose id starts with \"${PREFIX}0\", then writeback sync --json"
# Kept to restore before the latency step, whose samples change those groups' descriptions.
rm -rf "$WORK/rules.unedited" && cp -r "$RULES" "$WORK/rules.unedited"
for f in "$RULES"/*.rhai; do
    grep -qE '^    let description = .*;$' "$f" || die "$f has no 'let description = ...;' line to edit"
    sed -i -E "s/^(    let description = .*;)\$/\1\n    if group.id.starts_with(\"${PREFIX}0\") { description = \"edited by a rule\"; }/" "$f"
done
USN_E0="$(highest_usn)"
timed ruleedit sync --json
USN_E1="$(highest_usn)"
read -r E_SWEEP E_EVALUATED E_CHANGES E_KINDS E_WANT < <(python3 - "$WORK/ruleedit.out" "$PREFIX" <<'PY'
import collections, json, sys
r = json.load(open(sys.argv[1]))
ch = r["plan"]["changes"]
kinds = collections.Counter(c["action"] for c in ch)
edited = all(c["cloud_id"].startswith(sys.argv[2] + "0") for c in ch)
print(r["sweep"].replace(" ", "_"), r["evaluated"], len(ch),
      ",".join(f"{k}:{n}" for k, n in sorted(kinds.items())) or "-", "yes" if edited else "NO")
PY
)
echo "  rule edit: sweep $E_SWEEP, evaluated $E_EVALUATED, changes $E_CHANGES ($E_KINDS), all of them edited groups: $E_WANT; USN $USN_E0 -> $USN_E1" >&2
[[ "$E_WANT" == yes ]] || die "the rule edit changed groups it does not touch (see $WORK/ruleedit.out)"

# ---------------------------------------------------------------------------------------------
say "Baseline: the two delta requests from the deltaLinks (curl) + writeback --version"
TOKEN="$(curl -sS --fail --max-time 30 "$GRAPH_BASE/$TENANT_ID/oauth2/v2.0/token" \
    --data-urlencode grant_type=client_credentials --data-urlencode "client_id=$CLIENT_ID" \
    --data-urlencode "client_secret=$CLIENT_SECRET" --data-urlencode "scope=https://graph.microsoft.com/.default" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
# The host's stored deltaLinks when the state has them (same requests as an idle cycle), else
# links from now ($deltatoken=latest, same cost: no change since).
USERS_LINK="" GROUPS_LINK="" LINK_SOURCE="state.db"
if command -v sqlite3 >/dev/null; then
    USERS_LINK="$(sqlite3 "$WORK/state.db" "SELECT link FROM delta_link WHERE kind='user'" 2>/dev/null || true)"
    GROUPS_LINK="$(sqlite3 "$WORK/state.db" "SELECT link FROM delta_link WHERE kind='group'" 2>/dev/null || true)"
fi
latest_link() {
    curl -sS --fail --max-time 60 -H "Authorization: Bearer $TOKEN" "$GRAPH_BASE/v1.0/$1/delta?\$select=id&\$deltatoken=latest" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["@odata.deltaLink"])'
}
if [[ "$USERS_LINK" != http://127.0.0.1:* || "$GROUPS_LINK" != http://127.0.0.1:* ]]; then
    LINK_SOURCE='$deltatoken=latest'
    USERS_LINK="$(latest_link users)"
    GROUPS_LINK="$(latest_link groups)"
fi
BASE_RUNS=5
: >"$WORK/baseline.txt"
for i in $(seq 1 "$BASE_RUNS"); do
    t0=$EPOCHREALTIME
    curl -sS --fail --max-time 60 \
        -H "Authorization: Bearer $TOKEN" -H "Prefer: return=minimal" \
        -o "$WORK/base-users.json" "$USERS_LINK" -o "$WORK/base-groups.json" "$GROUPS_LINK"
    t1=$EPOCHREALTIME
    "$WB" --version >/dev/null
    t2=$EPOCHREALTIME
    echo "$(elapsed "$t0" "$t1") $(elapsed "$t1" "$t2")" >>"$WORK/baseline.txt"
done
grep -q '"@odata.deltaLink"' "$WORK/base-users.json" && grep -q '"@odata.deltaLink"' "$WORK/base-groups.json" ||
    die "the baseline delta requests did not end in a deltaLink (see $WORK/base-*.json)"
# Medians of the runs: curl, version, and their sum.
read -r BASE_CURL BASE_VERSION BASE_TOTAL < <(python3 - "$WORK/baseline.txt" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
c = statistics.median(r[0] for r in rows); v = statistics.median(r[1] for r in rows)
t = statistics.median(r[0] + r[1] for r in rows)
print(f"{c:.4f} {v:.4f} {t:.4f}")
PY
)
echo "  baseline medians of $BASE_RUNS: curl (2 delta requests) ${BASE_CURL} s, --version ${BASE_VERSION} s, sum ${BASE_TOTAL} s (links from $LINK_SOURCE)" >&2

# ---------------------------------------------------------------------------------------------
say "writeback run, poll 1 s, ${DAEMON_SECS} s after its first cycle"
CYCLE_RE='cycle: no change|cycle applied|cycle failed'
cycles() { clean "$WORK/daemon.log" | grep -cE "$CYCLE_RE" || true; }
# utime+stime of PID in seconds.
cpu_secs() {
    local stat
    stat="$(cat "/proc/$1/stat")"
    stat="${stat##*) }"
    # After the comm: field 3 is state; utime and stime are fields 14 and 15 of the full line.
    awk -v tck="$(getconf CLK_TCK)" '{ printf "%.2f", ($12 + $13) / tck }' <<<"$stat"
}
USN_D0="$(highest_usn)"
RUST_LOG="writeback=debug" "$WB" --config "$CONFIG" run >"$WORK/daemon.out" 2>"$WORK/daemon.log" &
DAEMON_PID=$!
T0=$SECONDS
D_START=$EPOCHREALTIME
while [[ "$(cycles)" -lt 1 ]]; do
    kill -0 "$DAEMON_PID" 2>/dev/null || { tail -n 30 "$WORK/daemon.log" >&2; die "writeback run exited before its first cycle"; }
    ((SECONDS - T0 < STEP_TIMEOUT)) || die "writeback run finished no cycle within $STEP_TIMEOUT s"
    sleep 0.1
done
D_FIRST_SECS="$(elapsed "$D_START" "$EPOCHREALTIME")"
C0="$(cycles)"
CPU0="$(cpu_secs "$DAEMON_PID")"
W0="$(date +%s.%N)"
sleep "$DAEMON_SECS"
kill -0 "$DAEMON_PID" 2>/dev/null || { tail -n 30 "$WORK/daemon.log" >&2; die "writeback run died during the window"; }
C1="$(cycles)"
CPU1="$(cpu_secs "$DAEMON_PID")"
W1="$(date +%s.%N)"
VMHWM="$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$DAEMON_PID/status")"
VMRSS="$(sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$DAEMON_PID/status")"
kill -TERM "$DAEMON_PID"
DRC=0
T0=$SECONDS
while kill -0 "$DAEMON_PID" 2>/dev/null; do
    ((SECONDS - T0 < STEP_TIMEOUT)) || die "writeback run did not stop within $STEP_TIMEOUT s of SIGTERM"
    sleep 0.1
done
wait "$DAEMON_PID" || DRC=$?
DAEMON_PID=""
USN_D1="$(highest_usn)"
D_CYCLES=$((C1 - C0))
# Per-cycle wall (ms) of the cycles in the window, from the daemon's own log lines.
read -r D_CYCLE_MED D_CYCLE_MAX < <(clean "$WORK/daemon.log" | grep -E "$CYCLE_RE" | sed -n "$((C0 + 1)),${C1}p" |
    sed -n 's/.* ms=\([0-9]*\).*/\1/p' | python3 -c '
import statistics, sys
v = [int(x) for x in sys.stdin.read().split()]
print(f"{statistics.median(v):.0f} {max(v)}" if v else "- -")')
D_FAILED="$(clean "$WORK/daemon.log" | grep -cE 'cycle failed|cycle applied' || true)"
read -r D_CPU_TOTAL D_CPU_PER D_WALL < <(python3 -c "
c0, c1, n, w0, w1 = $CPU0, $CPU1, $D_CYCLES, $W0, $W1
print(f'{c1 - c0:.2f} {((c1 - c0) / n) if n else float(\"nan\"):.3f} {w1 - w0:.1f}')")
echo "  first cycle after ${D_FIRST_SECS} s; ${D_CYCLES} cycles in ${D_WALL} s; CPU ${D_CPU_TOTAL} s (${D_CPU_PER} s/cycle); cycle wall median ${D_CYCLE_MED} ms, max ${D_CYCLE_MAX} ms; VmHWM ${VMHWM} kB, VmRSS ${VMRSS} kB; exit ${DRC} after SIGTERM" >&2

# ---------------------------------------------------------------------------------------------
# Helpers of the opt-in steps. cycles_in LOG: cycles finished in a daemon log.
cycles_in() { clean "$1" | grep -cE "$CYCLE_RE" || true; }
# start_daemon LOG: `writeback run` in the background (DAEMON_PID); returns after its first cycle.
start_daemon() {
    local log="$1" t0=$SECONDS
    RUST_LOG="writeback=debug" "$WB" --config "$CONFIG" run >"${log%.log}.out" 2>"$log" &
    DAEMON_PID=$!
    while [[ "$(cycles_in "$log")" -lt 1 ]]; do
        kill -0 "$DAEMON_PID" 2>/dev/null || { tail -n 30 "$log" >&2; die "writeback run exited before its first cycle (see $log)"; }
        ((SECONDS - t0 < STEP_TIMEOUT)) || die "writeback run finished no cycle within $STEP_TIMEOUT s"
        sleep 0.1
    done
}
# stop_daemon: SIGTERM, wait; sets STOP_RC.
stop_daemon() {
    local t0=$SECONDS
    kill -TERM "$DAEMON_PID"
    STOP_RC=0
    while kill -0 "$DAEMON_PID" 2>/dev/null; do
        ((SECONDS - t0 < STEP_TIMEOUT)) || die "writeback run did not stop within $STEP_TIMEOUT s of SIGTERM"
        sleep 0.1
    done
    wait "$DAEMON_PID" || STOP_RC=$?
    DAEMON_PID=""
}
# proc_kb PID FIELD: a /proc/PID/status figure in kB (VmRSS, VmHWM).
proc_kb() { sed -n "s/^$2:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$1/status"; }
# median_max: "median max" of the ms= values of the log lines on stdin ("- -" when none).
median_max() {
    sed -n 's/.* ms=\([0-9]*\).*/\1/p' | python3 -c '
import statistics, sys
v = [int(x) for x in sys.stdin.read().split()]
print(f"{statistics.median(v):.0f} {max(v)} {len(v)}" if v else "- - 0")'
}

# ---------------------------------------------------------------------------------------------
if [[ "$LAT_SAMPLES" -gt 0 ]]; then
    # The edited rule forces the description of the groups whose id starts with "${PREFIX}0": a
    # sample on one of them would never arrive. The rules are put back, and a sync brings AD
    # and the state in step with them before the first sample.
    say "Latency: the rules as before the rule edit, and one sync to apply them"
    rm -rf "$RULES" && cp -r "$WORK/rules.unedited" "$RULES"
    timed unedit sync
    [[ "$RC_unedit" -eq 0 ]] || die "the sync with the rules restored exited $RC_unedit (see $WORK/unedit.log)"
    say "Latency: cloud change -> visible in AD, $LAT_SAMPLES samples a series (one-shot sync, then writeback run with a 1 s poll)"
    cat >"$WORK/latency.py" <<'PY'
import json, os, random, re, signal, socket, subprocess, sys, time, urllib.parse, urllib.request

# bench/scale.sh latency step: python3 latency.py SERIES OUT_PREFIX (SERIES: baseline | daemon).
# Settings from the environment (LAT_*). Samples in ms go to OUT_PREFIX.samples, a summary line
# (shell-sourceable) to OUT_PREFIX.summary, progress to stderr.
E = os.environ
series, out = sys.argv[1], sys.argv[2]
N = int(E["LAT_SAMPLES"])
GIVEUP = float(E["LAT_GIVEUP"])
POLL = 0.020


# --- a minimal LDAP client (simple bind, base search), one connection kept open -------------
def blen(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def tlv(tag, content):
    return bytes([tag]) + blen(len(content)) + content


def bint(tag, v):
    return tlv(tag, v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big", signed=True))


def octets(s):
    return tlv(0x04, s.encode())


def parse(buf):
    """[(tag, content)] of the TLVs in buf."""
    items, i = [], 0
    while i < len(buf):
        tag, n = buf[i], buf[i + 1]
        i += 2
        if n & 0x80:
            k = n & 0x7F
            n = int.from_bytes(buf[i:i + k], "big")
            i += k
        items.append((tag, buf[i:i + n]))
        i += n
    return items


class Ldap:
    def __init__(self, host, port, dn, pw):
        self.addr, self.dn, self.pw, self.sock, self.msgid = (host, port), dn, pw, None, 0

    def _recv_exact(self, n):
        b = b""
        while len(b) < n:
            c = self.sock.recv(n - len(b))
            if not c:
                raise ConnectionError("LDAP connection closed")
            b += c
        return b

    def _recv_msg(self):
        hdr = self._recv_exact(2)
        n = hdr[1]
        extra = b""
        if n & 0x80:
            extra = self._recv_exact(n & 0x7F)
            n = int.from_bytes(extra, "big")
        body = self._recv_exact(n)
        (_, msgid), (op, content) = parse(body)[:2]
        return op, content

    def _send(self, op):
        self.msgid += 1
        self.sock.sendall(tlv(0x30, bint(0x02, self.msgid) + op))

    def connect(self):
        self.close()
        self.sock = socket.create_connection(self.addr, timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._send(tlv(0x60, bint(0x02, 3) + octets(self.dn) + tlv(0x80, self.pw.encode())))
        op, content = self._recv_msg()
        rc = int.from_bytes(parse(content)[0][1], "big")
        if op != 0x61 or rc != 0:
            raise RuntimeError(f"LDAP bind failed: op {op:#x} result {rc}")

    def close(self):
        if self.sock:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    def attr(self, base, name):
        """First value of attribute name of the object base (None when absent or no object)."""
        for attempt in (1, 2):
            try:
                if self.sock is None:
                    self.connect()
                self._send(tlv(0x63, octets(base) + bint(0x0A, 0) + bint(0x0A, 0) + bint(0x02, 0)
                               + bint(0x02, 0) + tlv(0x01, b"\x00") + tlv(0x87, b"objectClass")
                               + tlv(0x30, octets(name))))
                value = None
                while True:
                    op, content = self._recv_msg()
                    if op == 0x64:  # SearchResultEntry
                        _, attrs = parse(content)[:2]
                        for _, pa in parse(attrs[1]):
                            (_, t), (_, vals) = parse(pa)[:2]
                            if t.decode().lower() == name.lower():
                                vs = parse(vals)
                                value = vs[0][1].decode() if vs else None
                    elif op == 0x65:  # SearchResultDone
                        return value
            except (OSError, ConnectionError, IndexError, ValueError):
                self.close()
                if attempt == 2:
                    raise


# --- Graph --------------------------------------------------------------------------------
_token = [None, 0.0]


def token():
    if _token[0] is None or time.monotonic() - _token[1] > 1800:
        data = urllib.parse.urlencode({
            "grant_type": "client_credentials", "client_id": E["LAT_CLIENT_ID"],
            "client_secret": E["LAT_CLIENT_SECRET"], "scope": "https://graph.microsoft.com/.default",
        }).encode()
        with urllib.request.urlopen(E["LAT_TOKEN_URL"], data=data, timeout=30) as r:
            _token[0] = json.load(r)["access_token"]
        _token[1] = time.monotonic()
    return _token[0]


def patch_description(gid, value):
    req = urllib.request.Request(
        f"{E['LAT_GRAPH_BASE']}/v1.0/groups/{gid}", method="PATCH",
        data=json.dumps({"description": value}).encode(),
        headers={"Authorization": f"Bearer {token()}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        if r.status not in (200, 204):
            sys.exit(f"PATCH /groups/{gid} -> {r.status}")


# --- the in-scope groups that exist in AD ----------------------------------------------------
def ad_groups():
    r = subprocess.run(
        ["ldapsearch", "-H", E["LAT_LDAP_URL"], "-x", "-D", E["LAT_BIND_DN"], "-w", E["LAT_BIND_PW"],
         "-LLL", "-o", "ldif-wrap=no", "-E", "pr=1000/noprompt", "-b", E["LAT_MANAGED_OU"],
         "(&(objectClass=group)(msDS-ExternalDirectoryObjectId=Group_*))", "msDS-ExternalDirectoryObjectId"],
        capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"ldapsearch of the managed groups failed: {r.stderr.strip()}")
    groups = []
    for block in r.stdout.split("\n\n"):
        dn = gid = None
        for line in block.splitlines():
            if line.startswith("dn: "):
                dn = line[4:]
            elif line.lower().startswith("msds-externaldirectoryobjectid: group_"):
                gid = line.split(": ", 1)[1][len("Group_"):]
        if dn and gid:
            groups.append((gid, dn))
    groups.sort()
    return groups


ldap = Ldap(E["LAT_LDAP_HOST"], int(E["LAT_LDAP_PORT"]), E["LAT_BIND_DN"], E["LAT_BIND_PW"])
groups = ad_groups()
if not groups:
    sys.exit("no managed group in AD to change")
random.seed(int(E.get("LAT_SEED", "1")) + (0 if series == "baseline" else 1000))
tag = f"{series}-{int(time.time())}"


def wait_visible(dn, want, t0):
    """Seconds from t0 until AD shows want, or None after GIVEUP."""
    while True:
        if ldap.attr(dn, "description") == want:
            return time.monotonic() - t0
        if time.monotonic() - t0 > GIVEUP:
            return None
        time.sleep(POLL)


samples, failures, probe_ms = [], [], []
for i in range(N):
    gid, dn = groups[i % len(groups)]
    want = f"wb-latency {tag} {i}"
    if series == "daemon":
        os.kill(int(E["LAT_DAEMON_PID"]), 0)  # still running
        time.sleep(random.uniform(0.0, 1.0))
    t0 = time.monotonic()
    patch_description(gid, want)
    proc = None
    if series == "baseline":
        with open(f"{out}.sync.log", "a") as log, open(f"{out}.sync.json", "a") as js:
            proc = subprocess.Popen([E["LAT_WB"], "--config", E["LAT_CONFIG"], "sync", "--json"],
                                    stdout=js, stderr=log)
    lat = wait_visible(dn, want, t0)
    if proc is not None:
        try:
            rc = proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            sys.exit(f"sample {i}: writeback sync did not finish within 600 s")
        if rc != 0:
            sys.exit(f"sample {i}: writeback sync exited {rc} (see {out}.sync.log)")
        if lat is None:  # the sync finished after the give-up: was it applied at all?
            late = ldap.attr(dn, "description") == want
            print(f"  sample {i}: not visible within {GIVEUP:.0f} s (after the sync: {'visible' if late else 'NOT visible'})", file=sys.stderr)
    t = time.monotonic()
    ldap.attr(dn, "description")
    probe_ms.append((time.monotonic() - t) * 1000)
    if lat is None:
        failures.append(i)
        if series == "daemon":
            print(f"  sample {i}: not visible within {GIVEUP:.0f} s", file=sys.stderr)
            # Let it land before the next sample, so one late change does not shift the rest.
            wait_visible(dn, want, time.monotonic())
    else:
        samples.append(lat * 1000)
    print(f"  {series} {i + 1}/{N}: {'-' if lat is None else f'{lat * 1000:.0f} ms'} ({dn.split(',')[0]})", file=sys.stderr)

with open(f"{out}.samples", "w") as f:
    f.write("".join(f"{v:.1f}\n" for v in samples))


def pct(v, q):
    s = sorted(v)
    k = max(0, min(len(s) - 1, -(-int(q * 100) * len(s) // 100) - 1))  # nearest rank
    return s[k]


probe_ms.sort()
with open(f"{out}.summary", "w") as f:
    if samples:
        f.write(f"P50={pct(samples, .5):.0f} P90={pct(samples, .9):.0f} P99={pct(samples, .99):.0f} "
                f"MAX={max(samples):.0f} MIN={min(samples):.0f} ")
    else:
        f.write("P50=- P90=- P99=- MAX=- MIN=- ")
    f.write(f"OK={len(samples)} FAILED={len(failures)} GROUPS={min(N, len(groups))} "
            f"PROBE_MS={probe_ms[len(probe_ms) // 2]:.1f}\n")
PY
    [[ "$AD_LDAP_URL" =~ ^ldap://(127\.[0-9.]+):([0-9]+)$ ]] || die "unexpected AD_LDAP_URL: $AD_LDAP_URL"
    export LAT_SAMPLES LAT_GIVEUP LAT_LDAP_HOST="${BASH_REMATCH[1]}" LAT_LDAP_PORT="${BASH_REMATCH[2]}" \
        LAT_LDAP_URL="$AD_LDAPS_URL" LAT_BIND_DN="$AD_BIND_DN" LAT_BIND_PW="$AD_BIND_PASSWORD" \
        LAT_MANAGED_OU="$MANAGED_OU" LAT_GRAPH_BASE="$GRAPH_BASE" \
        LAT_TOKEN_URL="$GRAPH_BASE/$TENANT_ID/oauth2/v2.0/token" LAT_CLIENT_ID="$CLIENT_ID" \
        LAT_CLIENT_SECRET="$CLIENT_SECRET" LAT_WB="$WB" LAT_CONFIG="$CONFIG"
    rm -f "$WORK"/latency-*
    T0=$SECONDS
    timeout "$STEP_TIMEOUT" python3 "$WORK/latency.py" baseline "$WORK/latency-baseline" ||
        die "the latency baseline failed (see $WORK/latency-baseline.sync.log)"
    LAT_BASE_SECS=$((SECONDS - T0))
    # The reports of the baseline syncs: sweep, evaluated, examined (first and most common).
    LAT_BASE_REPORT="$(python3 - "$WORK/latency-baseline.sync.json" <<'PY'
import collections, json, sys
text, dec, i, reps = open(sys.argv[1]).read(), json.JSONDecoder(), 0, []
while True:
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text):
        break
    obj, i = dec.raw_decode(text, i)
    reps.append(obj)
c = collections.Counter(f"sweep {r.get('sweep')!r}, evaluated {r.get('evaluated')}, examined {r.get('examined')}" for r in reps)
print("; ".join(f"{k} (x{n})" for k, n in c.most_common()) or "-")
PY
)"
    USN_L0="$(highest_usn)"
    start_daemon "$WORK/latency-daemon.log"
    LC0="$(cycles_in "$WORK/latency-daemon.log")"
    T0=$SECONDS
    LAT_DAEMON_PID="$DAEMON_PID" timeout "$STEP_TIMEOUT" python3 "$WORK/latency.py" daemon "$WORK/latency-daemon" ||
        die "the latency daemon series failed (see $WORK/latency-daemon.log)"
    LAT_DAEMON_SECS=$((SECONDS - T0))
    kill -0 "$DAEMON_PID" 2>/dev/null || die "writeback run died during the latency series"
    stop_daemon
    LAT_DRC=$STOP_RC
    USN_L1="$(highest_usn)"
    read -r L_APPLIED_MED L_APPLIED_MAX L_APPLIED_N < <(clean "$WORK/latency-daemon.log" | grep -E 'cycle applied' | median_max)
    L_FAILED_CYCLES="$(clean "$WORK/latency-daemon.log" | grep -cE 'cycle failed' || true)"
    LB="$(cat "$WORK/latency-baseline.summary")" LD="$(cat "$WORK/latency-daemon.summary")"
    lat_get() { sed -n "s/.*\b$2=\([^ ]*\).*/\1/p" <<<"$1"; }
    echo "  baseline (one-shot sync): $LB" >&2
    echo "  daemon (poll 1 s):        $LD" >&2
    echo "  daemon cycles that applied: $L_APPLIED_N (wall median $L_APPLIED_MED ms, max $L_APPLIED_MAX ms); failed cycles: $L_FAILED_CYCLES; exit $LAT_DRC after SIGTERM" >&2
fi

# ---------------------------------------------------------------------------------------------
if [[ "$SOAK_SECS" -gt 0 ]]; then
    say "Soak: writeback run idle for $SOAK_SECS s after its first cycle, VmRSS/VmHWM every 60 s"
    USN_S0="$(highest_usn)"
    start_daemon "$WORK/soak.log"
    echo "elapsed_s,cycles,cpu_s,vmrss_kb,vmhwm_kb" >"$WORK/soak.csv"
    S_START=$EPOCHREALTIME
    soak_sample() {
        kill -0 "$DAEMON_PID" 2>/dev/null || { tail -n 30 "$WORK/soak.log" >&2; die "writeback run died during the soak"; }
        echo "$(elapsed "$S_START" "$EPOCHREALTIME"),$(cycles_in "$WORK/soak.log"),$(cpu_secs "$DAEMON_PID"),$(proc_kb "$DAEMON_PID" VmRSS),$(proc_kb "$DAEMON_PID" VmHWM)" >>"$WORK/soak.csv"
    }
    soak_sample
    S_END=$((SECONDS + SOAK_SECS))
    while ((SECONDS < S_END)); do
        sleep "$((S_END - SECONDS < 60 ? S_END - SECONDS : 60))"
        soak_sample
        echo "    soak: $(tail -n1 "$WORK/soak.csv")" >&2
    done
    stop_daemon
    SOAK_DRC=$STOP_RC
    USN_S1="$(highest_usn)"
    S_BAD="$(clean "$WORK/soak.log" | grep -cE 'cycle failed|cycle applied' || true)"
    read -r S_CYCLE_MED S_CYCLE_MAX _ < <(clean "$WORK/soak.log" | grep -E "$CYCLE_RE" | sed 1d | median_max)
    SOAK_SUMMARY="$(python3 - "$WORK/soak.csv" <<'PY'
import csv, sys
r = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(open(sys.argv[1]))]
a, b = r[0], r[-1]
mib = lambda kb: f"{kb / 1024:.1f}"
n = b["cycles"] - a["cycles"]
per = lambda x, y: (y["cpu_s"] - x["cpu_s"]) / (y["cycles"] - x["cycles"]) * 1000 if y["cycles"] > x["cycles"] else float("nan")
first = per(r[0], r[1]) if len(r) > 1 else float("nan")
last = per(r[-2], r[-1]) if len(r) > 1 else float("nan")
print(f"RSS_START={mib(a['vmrss_kb'])} RSS_MAX={mib(max(x['vmrss_kb'] for x in r))} RSS_END={mib(b['vmrss_kb'])} "
      f"HWM_START={mib(a['vmhwm_kb'])} HWM_END={mib(b['vmhwm_kb'])} CYCLES={n:.0f} WALL={b['elapsed_s'] - a['elapsed_s']:.0f} "
      f"CPU={b['cpu_s'] - a['cpu_s']:.2f} CPU_PER_MS={per(a, b):.2f} CPU_FIRST_MS={first:.2f} CPU_LAST_MS={last:.2f} SAMPLES={len(r)}")
PY
)"
    soak_get() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$SOAK_SUMMARY"; }
    echo "  soak: $SOAK_SUMMARY; cycle wall median $S_CYCLE_MED ms, max $S_CYCLE_MAX ms; applied/failed cycles $S_BAD; USN $USN_S0 -> $USN_S1; exit $SOAK_DRC after SIGTERM" >&2
fi

# ---------------------------------------------------------------------------------------------
# resync_figures NAME: "sweep evaluated changes kinds" of a `sync --json` report.
resync_figures() {
    python3 - "$WORK/$1.out" <<'PY'
import collections, json, sys
r = json.load(open(sys.argv[1]))
ch = r["plan"]["changes"]
kinds = collections.Counter(c["action"] for c in ch)
print(r["sweep"].replace(" ", "_"), r["evaluated"], len(ch),
      ",".join(f"{k}:{n}" for k, n in sorted(kinds.items())) or "-")
PY
}
if [[ "$RESYNC" -eq 1 ]]; then
    say "Resync: the next delta request from a token answers 410 (POST /_emulator/delta/reset), then writeback sync --json"
    curl -sS --fail --max-time 30 -X POST -H 'Content-Type: application/json' \
        --data '{"count":1}' "$GRAPH_BASE/_emulator/delta/reset" >/dev/null
    USN_R0="$(highest_usn)"
    timed resync sync --json
    USN_R1="$(highest_usn)"
    read -r R_SWEEP R_EVALUATED R_CHANGES R_KINDS < <(resync_figures resync)
    echo "  sweep ${R_SWEEP//_/ }, $R_EVALUATED groups evaluated, $R_CHANGES changes ($R_KINDS); USN $USN_R0 -> $USN_R1" >&2

    say "Resync: the emulator restarted on the same port (every old token answers 410), then writeback sync --json"
    EMU_PORT="${GRAPH_BASE##*:}"
    kill -TERM "$EMU_PID"
    wait "$EMU_PID" 2>/dev/null || true
    T0=$SECONDS
    : >"$WORK/emulator.out"
    "$EMU" serve --listen "127.0.0.1:$EMU_PORT" --tenant "$TENANT" >"$WORK/emulator.out" 2>>"$WORK/emulator.log" &
    EMU_PID=$!
    while [[ ! -s "$WORK/emulator.out" ]]; do
        kill -0 "$EMU_PID" 2>/dev/null || { tail -n 20 "$WORK/emulator.log" >&2; die "the emulator did not restart"; }
        ((SECONDS - T0 < STEP_TIMEOUT)) || die "the restarted emulator printed no URL within $STEP_TIMEOUT s"
        sleep 0.2
    done
    [[ "$(head -n1 "$WORK/emulator.out")" == "$GRAPH_BASE" ]] || die "the emulator came back at $(head -n1 "$WORK/emulator.out"), not $GRAPH_BASE"
    USN_RR0="$(highest_usn)"
    timed restart sync --json
    USN_RR1="$(highest_usn)"
    read -r RR_SWEEP RR_EVALUATED RR_CHANGES RR_KINDS < <(resync_figures restart)
    echo "  sweep ${RR_SWEEP//_/ }, $RR_EVALUATED groups evaluated, $RR_CHANGES changes ($RR_KINDS); USN $USN_RR0 -> $USN_RR1" >&2

    say "Bulk change: $BULK_PERCENT % of the groups get a new description (\$batch PATCHes), then writeback sync --json"
    T0=$SECONDS
    BULK_CHANGED="$(BULK_PERCENT="$BULK_PERCENT" BULK_GRAPH_BASE="$GRAPH_BASE" BULK_TENANT_ID="$TENANT_ID" \
        BULK_CLIENT_ID="$CLIENT_ID" BULK_CLIENT_SECRET="$CLIENT_SECRET" \
        timeout "$STEP_TIMEOUT" python3 - "$TENANT" <<'PY'
import http.client, json, os, sys, urllib.parse

E = os.environ
base = urllib.parse.urlparse(E["BULK_GRAPH_BASE"])
conn = http.client.HTTPConnection(base.hostname, base.port, timeout=60)


def call(method, path, body, headers):
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        sys.exit(f"{method} {path} -> {r.status}: {data[:300]!r}")
    return json.loads(data)


form = urllib.parse.urlencode({
    "grant_type": "client_credentials", "client_id": E["BULK_CLIENT_ID"],
    "client_secret": E["BULK_CLIENT_SECRET"], "scope": "https://graph.microsoft.com/.default",
})
token = call("POST", f"/{E['BULK_TENANT_ID']}/oauth2/v2.0/token", form,
             {"Content-Type": "application/x-www-form-urlencoded"})["access_token"]
with open(sys.argv[1]) as f:
    ids = sorted(g["id"] for g in json.load(f)["groups"])
every = round(100 / (100 - int(E["BULK_PERCENT"]))) if int(E["BULK_PERCENT"]) < 100 else 0
chosen = [g for i, g in enumerate(ids) if every == 0 or i % every != every - 1]
headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
for k in range(0, len(chosen), 20):
    reqs = [{"id": str(n), "method": "PATCH", "url": f"/groups/{g}",
             "headers": {"Content-Type": "application/json"},
             "body": {"description": "Reviewed by the tenant-wide policy"}}
            for n, g in enumerate(chosen[k:k + 20])]
    out = call("POST", "/v1.0/$batch", json.dumps({"requests": reqs}), headers)
    bad = [r for r in out["responses"] if r["status"] not in (200, 204)]
    if bad:
        sys.exit(f"$batch PATCH failed: {bad[:3]}")
print(len(chosen))
PY
)" || die "the bulk change failed"
    BULK_SECS=$((SECONDS - T0))
    echo "  $BULK_CHANGED groups changed in $BULK_SECS s" >&2
    USN_B0="$(highest_usn)"
    timed bulk sync --json
    USN_B1="$(highest_usn)"
    read -r B_SWEEP B_EVALUATED B_CHANGES B_KINDS < <(resync_figures bulk)
    echo "  sweep ${B_SWEEP//_/ }, $B_EVALUATED groups evaluated, $B_CHANGES changes ($B_KINDS); USN $USN_B0 -> $USN_B1" >&2
fi

# ---------------------------------------------------------------------------------------------
if [[ "$PG" -eq 1 ]]; then
    say "PostgreSQL state: the SQLite steps' groups deleted from AD, a fresh database"
    if ! tests/testbed/postgres.sh status >/dev/null 2>&1; then
        PG_STARTED=1
    fi
    tests/testbed/postgres.sh up >/dev/null
    PG_ENV_FILE="${WRITEBACK_PG_DIR:-$REPO/.testbed/postgres}/pg.env"
    [[ -f "$PG_ENV_FILE" ]] || die "no $PG_ENV_FILE after postgres.sh up"
    # shellcheck disable=SC1090
    source "$PG_ENV_FILE"
    [[ "$PG_HOST" == 127.* ]] || die "PostgreSQL is not on loopback: $PG_HOST"
    PG_DB="wb_scale_$(date +%s)"
    PGPASSWORD="$(cat "$PG_ADMIN_PASSWORD_FILE")" "$PG_BIN_DIR/psql" -X -q -v ON_ERROR_STOP=1 \
        "host=$PG_HOST port=$PG_PORT dbname=postgres user=$PG_ADMIN_USER sslmode=verify-full sslrootcert=$PG_CA_FILE" \
        -c "CREATE DATABASE $PG_DB OWNER $PG_USER" >/dev/null || die "could not create database $PG_DB"
    for c in "Microsoft 365" "Security"; do
        timeout "$STEP_TIMEOUT" ldapdelete "${LDAP[@]}" -r "OU=$c,$MANAGED_OU" || die "could not delete OU=$c,$MANAGED_OU"
        printf 'dn: OU=%s,%s\nobjectClass: organizationalUnit\nou: %s\n' "$c" "$MANAGED_OU" "$c" |
            ldapadd "${LDAP[@]}" >/dev/null || die "could not create OU=$c,$MANAGED_OU again"
    done
    rm -rf "$WORK/rules.pg" && cp -r "$WORK/rules.unedited" "$WORK/rules.pg"
    CONFIG_SQLITE="$CONFIG"
    CONFIG="$WORK/writeback-pg.toml"
    sed -e "s|^folder = \"$RULES\"\$|folder = \"$WORK/rules.pg\"|" \
        -e "s|^path = \"$WORK/state.db\"\$|path = \"$WORK/state-pg-local.db\"|" "$CONFIG_SQLITE" >"$CONFIG"
    printf '\n[state.postgres]\nurl = "postgresql://%s@%s:%s/%s"\npassword_env = "WB_SCALE_PG_PASSWORD"\nca_file = "%s"\ninstance = "scale"\n' \
        "$PG_USER" "$PG_HOST" "$PG_PORT" "$PG_DB" "$PG_CA_FILE" >>"$CONFIG"
    grep -q "rules.pg" "$CONFIG" && grep -q "state-pg-local.db" "$CONFIG" || die "could not write $CONFIG"
    WB_SCALE_PG_PASSWORD="$(cat "$PG_PASSWORD_FILE")"
    export WB_SCALE_PG_PASSWORD

    say "PostgreSQL state: writeback sync (first: full download, creates the groups in scope)"
    timed pg_sync1 sync
    say "PostgreSQL state: writeback sync (second, no cloud change)"
    USN_PG0="$(highest_usn)"
    timed pg_sync2 sync
    USN_PG1="$(highest_usn)"
    echo "  highestCommittedUSN before/after: $USN_PG0 / $USN_PG1" >&2
    say "PostgreSQL state: writeback sync (third, idle)"
    timed pg_sync3 sync
    say "PostgreSQL state: the same rule edit, then writeback sync --json"
    for f in "$WORK/rules.pg"/*.rhai; do
        sed -i -E "s/^(    let description = .*;)\$/\1\n    if group.id.starts_with(\"${PREFIX}0\") { description = \"edited by a rule\"; }/" "$f"
    done
    timed pg_ruleedit sync --json
    read -r PE_SWEEP PE_EVALUATED PE_CHANGES PE_KINDS < <(resync_figures pg_ruleedit)
    echo "  rule edit: sweep ${PE_SWEEP//_/ }, evaluated $PE_EVALUATED, changes $PE_CHANGES ($PE_KINDS)" >&2

    say "PostgreSQL state: writeback run, poll 1 s, ${DAEMON_SECS} s after its first cycle"
    start_daemon "$WORK/pgdaemon.log"
    PC0="$(cycles_in "$WORK/pgdaemon.log")"
    PCPU0="$(cpu_secs "$DAEMON_PID")"
    sleep "$DAEMON_SECS"
    kill -0 "$DAEMON_PID" 2>/dev/null || { tail -n 30 "$WORK/pgdaemon.log" >&2; die "writeback run (PostgreSQL) died during the window"; }
    PC1="$(cycles_in "$WORK/pgdaemon.log")"
    PCPU1="$(cpu_secs "$DAEMON_PID")"
    PVMHWM="$(proc_kb "$DAEMON_PID" VmHWM)"
    stop_daemon
    PG_DRC="$STOP_RC"
    PD_CYCLES=$((PC1 - PC0))
    read -r PD_CYCLE_MED PD_CYCLE_MAX _ < <(clean "$WORK/pgdaemon.log" | grep -E "$CYCLE_RE" |
        sed -n "$((PC0 + 1)),${PC1}p" | median_max)
    PD_CPU_PER="$(awk -v a="$PCPU0" -v b="$PCPU1" -v n="$PD_CYCLES" 'BEGIN { if (n > 0) printf "%.3f", (b - a) / n; else print "nan" }')"
    echo "  $PD_CYCLES cycles; CPU ${PD_CPU_PER} s/cycle; cycle wall median ${PD_CYCLE_MED} ms, max ${PD_CYCLE_MAX} ms; VmHWM ${PVMHWM} kB; exit ${PG_DRC} after SIGTERM" >&2
    CONFIG="$CONFIG_SQLITE"
fi

# ---------------------------------------------------------------------------------------------
TOTAL_SECS=$((SECONDS - SCRIPT_START))
field() { awk -v i="$2" '{ print $i }' <<<"$1"; }
mib() { awk '{ printf "%.0f", $1 / 1024 }' <<<"$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "-" }'; }
row() {
    local label="$1" t="$2" rc="$3"
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$(field "$t" 1)" "$(field "$t" 2)" \
        "$(field "$t" 3)" "$(mib "$(field "$t" 4)")" "$rc" "$(ratio "$(field "$t" 1)" "$BASE_TOTAL")"
}
USN_OK=yes
[[ "$USN_BEFORE" == "$USN_AFTER" ]] || USN_OK=NO
D_CPU_MS="$(awk -v c="$D_CPU_PER" 'BEGIN { printf "%.0f", c * 1000 }')"

{
    echo
    echo "## bench/scale.sh — $(date -u +%Y-%m-%d) on $(hostname) ($(nproc) CPU)"
    echo
    echo "Command: \`${CMDLINE% }\` with WB_SCALE_GROUPS=$GROUPS_N WB_SCALE_USERS=$USERS_N WB_SCALE_SCOPE_PREFIX=$PREFIX WB_SCALE_DAEMON_SECS=$DAEMON_SECS WB_SCALE_AD_MEMBERS=$AD_MEMBERS WB_SCALE_LATENCY_SAMPLES=$LAT_SAMPLES WB_SCALE_SOAK_SECS=$SOAK_SECS WB_SCALE_RESYNC=$RESYNC WB_SCALE_BULK_PERCENT=$BULK_PERCENT"
    echo "Binaries: $WB ($("$WB" --version 2>/dev/null | head -n1)), $EMU"
    echo
    echo "Tenant: $N_USERS users, $N_GROUPS groups, $N_MEMBERSHIPS memberships; $N_CANDIDATES groups with an id starting \"$PREFIX\" (scope), $N_AD_USERS member accounts in AD."
    echo "Setup: generate ${GEN_SECS} s, AD accounts + tenant rewrite ${PREP_SECS} s, emulator start ${EMU_SECS} s. Whole run ${TOTAL_SECS} s."
    echo
    echo "| step | wall s | user s | sys s | max RSS MiB | exit | / baseline |"
    echo "|---|---|---|---|---|---|---|"
    row "\`plan\` (first, full download)" "$T_plan" "$RC_plan"
    row "\`sync\` first (creates)" "$T_sync1" "$RC_sync1"
    row "\`sync\` second, no change" "$T_sync2" "$RC_sync2"
    row "\`sync\` third, idle" "$T_sync3" "$RC_sync3"
    row "\`plan\` with nothing to show" "$T_plan_idle" "$RC_plan_idle"
    row "\`sync\` after a rule edit" "$T_ruleedit" "$RC_ruleedit"
    echo
    echo "| figure | value |"
    echo "|---|---|"
    echo "| baseline: 2 delta requests (curl, median of $BASE_RUNS) | ${BASE_CURL} s |"
    echo "| baseline: \`writeback --version\` (median of $BASE_RUNS) | ${BASE_VERSION} s |"
    echo "| baseline: floor of an idle cycle (sum) | ${BASE_TOTAL} s |"
    echo "| ratio second sync / baseline | $(ratio "$(field "$T_sync2" 1)" "$BASE_TOTAL") |"
    echo "| ratio third sync / baseline | $(ratio "$(field "$T_sync3" 1)" "$BASE_TOTAL") |"
    echo "| ratio plan with nothing to show / third (idle) sync | $(ratio "$(field "$T_plan_idle" 1)" "$(field "$T_sync3" 1)") |"
    echo "| highestCommittedUSN before / after second sync | $USN_BEFORE / $USN_AFTER (equal: $USN_OK) |"
    echo "| rule edit: sweep, groups evaluated, changes (all edited groups) | ${E_SWEEP//_/ }, $E_EVALUATED, $E_CHANGES $E_KINDS ($E_WANT) |"
    echo "| highestCommittedUSN before / after the rule edit's sync | $USN_E0 / $USN_E1 |"
    echo "| daemon: first cycle done after start | ${D_FIRST_SECS} s |"
    echo "| daemon: idle cycles in the window | $D_CYCLES in ${D_WALL} s (poll 1 s) |"
    echo "| daemon: CPU per idle cycle (utime+stime) | ${D_CPU_PER} s (${D_CPU_TOTAL} s in all) |"
    echo "| daemon: cycle wall, median / max (its log) | ${D_CYCLE_MED} / ${D_CYCLE_MAX} ms |"
    echo "| daemon: cycle wall median / baseline curl | $(ratio "$(awk -v m="$D_CYCLE_MED" 'BEGIN { print m / 1000 }')" "$BASE_CURL") |"
    echo "| daemon: VmHWM / VmRSS at the end | $(mib "$VMHWM") / $(mib "$VMRSS") MiB |"
    echo "| daemon: cycles that applied or failed (whole run) | $D_FAILED |"
    echo "| daemon: exit after SIGTERM | $DRC |"
    echo "| highestCommittedUSN before / after the daemon | $USN_D0 / $USN_D1 |"
    if [[ "$LAT_SAMPLES" -gt 0 ]]; then
        echo
        echo "Latency, cloud change (PATCH description) -> visible in AD (read every 20 ms), ms; $(lat_get "$LB" GROUPS) in-scope groups changed in turn, give-up after ${LAT_GIVEUP} s:"
        echo
        echo "| series | arrived / failed | p50 | p90 | p99 | max |"
        echo "|---|---|---|---|---|---|"
        for v in LB LD; do
            [[ "$v" == LB ]] && label="baseline: one-shot \`sync\` started right after the PATCH" || label="\`writeback run\`, poll 1 s, PATCH after a random 0-1 s pause"
            echo "| $label | $(lat_get "${!v}" OK) / $(lat_get "${!v}" FAILED) | $(lat_get "${!v}" P50) | $(lat_get "${!v}" P90) | $(lat_get "${!v}" P99) | $(lat_get "${!v}" MAX) |"
        done
        echo
        echo "| figure | value |"
        echo "|---|---|"
        echo "| ratio daemon / baseline, p50 / p90 | $(ratio "$(lat_get "$LD" P50)" "$(lat_get "$LB" P50)") / $(ratio "$(lat_get "$LD" P90)" "$(lat_get "$LB" P90)") |"
        echo "| one AD read of the poll (median) | $(lat_get "$LD" PROBE_MS) ms |"
        echo "| baseline syncs' reports | $LAT_BASE_REPORT |"
        echo "| daemon cycles that applied: count, wall median / max (its log) | $L_APPLIED_N, $L_APPLIED_MED / $L_APPLIED_MAX ms |"
        echo "| daemon cycles that failed | $L_FAILED_CYCLES |"
        echo "| series wall: baseline / daemon | ${LAT_BASE_SECS} / ${LAT_DAEMON_SECS} s |"
        echo "| highestCommittedUSN before / after the daemon series | $USN_L0 / $USN_L1 |"
        echo "| daemon exit after SIGTERM | $LAT_DRC |"
    fi
    if [[ "$RESYNC" -eq 1 ]]; then
        echo
        echo "Resync and bulk change (\`sync --json\` each; baseline: the first sync of this run):"
        echo
        echo "| step | wall s | user s | sys s | max RSS MiB | exit | wall / first sync | RSS / first sync | sweep, evaluated, changes | USN before / after |"
        echo "|---|---|---|---|---|---|---|---|---|---|"
        resync_row() {
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$(field "$2" 1)" "$(field "$2" 2)" \
                "$(field "$2" 3)" "$(mib "$(field "$2" 4)")" "$3" "$(ratio "$(field "$2" 1)" "$(field "$T_sync1" 1)")" \
                "$(ratio "$(field "$2" 4)" "$(field "$T_sync1" 4)")" "$4" "$5"
        }
        resync_row "\`sync\` first (creates), the baseline" "$T_sync1" "$RC_sync1" "-" "-"
        resync_row "\`sync\` after a 410 on the users' delta (\`delta/reset\`)" "$T_resync" "$RC_resync" \
            "${R_SWEEP//_/ }, $R_EVALUATED, $R_CHANGES $R_KINDS" "$USN_R0 / $USN_R1"
        resync_row "\`sync\` after an emulator restart (every delta 410)" "$T_restart" "$RC_restart" \
            "${RR_SWEEP//_/ }, $RR_EVALUATED, $RR_CHANGES $RR_KINDS" "$USN_RR0 / $USN_RR1"
        resync_row "\`sync\` after $BULK_CHANGED groups ($BULK_PERCENT %) changed description (PATCHed in $BULK_SECS s)" "$T_bulk" "$RC_bulk" \
            "${B_SWEEP//_/ }, $B_EVALUATED, $B_CHANGES $B_KINDS" "$USN_B0 / $USN_B1"
    fi
    if [[ "$PG" -eq 1 ]]; then
        echo
        echo "State on PostgreSQL (database $PG_DB on the test bed, TLS; the SQLite steps' groups deleted from AD first); baseline: the same step on SQLite in this run:"
        echo
        echo "| step | wall s | user s | sys s | max RSS MiB | exit | wall / SQLite | RSS / SQLite |"
        echo "|---|---|---|---|---|---|---|---|"
        pg_row() {
            printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$(field "$2" 1)" "$(field "$2" 2)" \
                "$(field "$2" 3)" "$(mib "$(field "$2" 4)")" "$3" "$(ratio "$(field "$2" 1)" "$(field "$4" 1)")" \
                "$(ratio "$(field "$2" 4)" "$(field "$4" 4)")"
        }
        pg_row "\`sync\` first (full download, creates)" "$T_pg_sync1" "$RC_pg_sync1" "$T_sync1"
        pg_row "\`sync\` second, no change" "$T_pg_sync2" "$RC_pg_sync2" "$T_sync2"
        pg_row "\`sync\` third, idle" "$T_pg_sync3" "$RC_pg_sync3" "$T_sync3"
        pg_row "\`sync\` after the rule edit ($PE_EVALUATED evaluated, $PE_CHANGES changes)" "$T_pg_ruleedit" "$RC_pg_ruleedit" "$T_ruleedit"
        echo
        echo "| figure | PostgreSQL | SQLite |"
        echo "|---|---|---|"
        echo "| daemon: CPU per idle cycle | ${PD_CPU_PER} s | ${D_CPU_PER} s |"
        echo "| daemon: cycle wall median / max | ${PD_CYCLE_MED} / ${PD_CYCLE_MAX} ms | ${D_CYCLE_MED} / ${D_CYCLE_MAX} ms |"
        echo "| daemon: VmHWM | $(mib "$PVMHWM") MiB | $(mib "$VMHWM") MiB |"
        echo "| daemon: exit after SIGTERM | $PG_DRC | $DRC |"
        echo "| highestCommittedUSN before / after the second sync | $USN_PG0 / $USN_PG1 | $USN_BEFORE / $USN_AFTER |"
    fi
    if [[ "$SOAK_SECS" -gt 0 ]]; then
        echo
        echo "Soak: \`writeback run\` idle, $(soak_get WALL) s after its first cycle, sampled every 60 s ($(soak_get SAMPLES) samples, $WORK/soak.csv):"
        echo
        echo "| figure | start | max | end |"
        echo "|---|---|---|---|"
        echo "| VmRSS MiB | $(soak_get RSS_START) | $(soak_get RSS_MAX) | $(soak_get RSS_END) |"
        echo "| VmHWM MiB | $(soak_get HWM_START) | - | $(soak_get HWM_END) |"
        echo
        echo "| figure | value |"
        echo "|---|---|"
        echo "| idle cycles | $(soak_get CYCLES) |"
        echo "| CPU per cycle (utime+stime): whole soak / first interval / last interval | $(soak_get CPU_PER_MS) / $(soak_get CPU_FIRST_MS) / $(soak_get CPU_LAST_MS) ms ($(soak_get CPU) s in all) |"
        echo "| cycle wall median / max (its log) | $S_CYCLE_MED / $S_CYCLE_MAX ms |"
        echo "| cycles that applied or failed | $S_BAD |"
        echo "| highestCommittedUSN before / after | $USN_S0 / $USN_S1 |"
        echo "| exit after SIGTERM | $SOAK_DRC |"
    fi
    echo
    echo "Phases (ms, the host's debug log):"
    echo
    echo "| step | phases |"
    echo "|---|---|"
    STEPS=(plan sync1 sync2 sync3 ruleedit)
    [[ "$RESYNC" -eq 1 ]] && STEPS+=(resync restart bulk)
    [[ "$PG" -eq 1 ]] && STEPS+=(pg_sync1 pg_sync2 pg_sync3 pg_ruleedit)
    for s in "${STEPS[@]}"; do
        echo "| $s | $(phases "$s") |"
    done
    # The phase lines between the last two cycle lines.
    echo "| daemon, last idle cycle | $(clean "$WORK/daemon.log" | awk -v re="$CYCLE_RE" '
        $0 ~ re { last = cur; cur = ""; next } /sync phase done/ { cur = cur $0 "\n" }
        END { printf "%s", last }' | phase_pairs) |"
} | tee "$WORK/result.md"

[[ "$USN_OK" == yes ]] || die "the second sync wrote to AD (highestCommittedUSN $USN_BEFORE -> $USN_AFTER)"
[[ "$DRC" -eq 0 ]] || die "writeback run exited $DRC after SIGTERM"
if [[ "$PG" -eq 1 ]]; then
    [[ "$USN_PG0" == "$USN_PG1" ]] || die "the second sync on PostgreSQL wrote to AD (highestCommittedUSN $USN_PG0 -> $USN_PG1)"
    [[ "$PG_DRC" -eq 0 ]] || die "writeback run (PostgreSQL) exited $PG_DRC after SIGTERM"
fi
if [[ "$LAT_SAMPLES" -gt 0 ]]; then
    [[ "$LAT_DRC" -eq 0 ]] || die "writeback run (latency series) exited $LAT_DRC after SIGTERM"
    [[ "$(lat_get "$LB" FAILED)" -eq 0 && "$(lat_get "$LD" FAILED)" -eq 0 ]] ||
        die "latency samples failed (not visible within ${LAT_GIVEUP} s): baseline $(lat_get "$LB" FAILED), daemon $(lat_get "$LD" FAILED)"
fi
if [[ "$SOAK_SECS" -gt 0 ]]; then
    [[ "$SOAK_DRC" -eq 0 ]] || die "writeback run (soak) exited $SOAK_DRC after SIGTERM"
    [[ "$USN_S0" == "$USN_S1" ]] || die "the idle soak wrote to AD (highestCommittedUSN $USN_S0 -> $USN_S1)"
    [[ "$S_BAD" -eq 0 ]] || die "the idle soak had $S_BAD cycles that applied or failed (see $WORK/soak.log)"
fi
