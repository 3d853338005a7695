#!/usr/bin/env bash
# Big-group benchmark: one cloud security group with WB_BIG_MEMBERS members, all of them users
# that exist in AD (synced users: their onPremisesSecurityIdentifier is the real objectSid), in
# scope of the default rules (scripts/, scope narrowed to that one group). What creating it
# costs, what a one-member change to it costs, what an idle sync costs.
#
# Setup (timed, reported): the WB_BIG_MEMBERS + 1 users created in AD with one `ldapadd` of an
# LDIF (the extra one is added to the group in the cloud later), their SIDs read back, the
# tenant file written (tests/graph-emulator/README.md format), the emulator started.
#
# Measured, each `writeback sync --json` under /usr/bin/time (wall s, user/sys CPU s, max RSS):
#   1. first sync: creates the group (its AD member count is checked: WB_BIG_MEMBERS);
#   2. one member added in the cloud (POST /groups/{id}/members/$ref), then sync: the report
#      must hold one change, an update with members_add of 1 and nothing else; AD's
#      highestCommittedUSN delta (a one-member change should be one modify);
#   3. a third, idle sync (highestCommittedUSN must not move), then `sync --full` (the
#      reconciliation: the tenant read again and the group compared with AD whole; nothing to
#      write, so the USN must not move either);
#   4. the daemon (`writeback run`, 1 s poll): WB_BIG_DAEMON_SAMPLES one-member changes, the
#      extra user removed and added back in turn at irregular moments of the poll period, each
#      timed from the Graph call until AD shows it (the user's memberOf, read every 20 ms); the
#      daemon's CPU per cycle (its /proc CPU time over the cycles it ran) and the USN delta.
# With WB_BEFORE_BIN (an earlier build, to compare with in the same run on the same DC): the
# first sync runs with it, then one more member is added and synced with it, before step 2 runs
# with WB_BIN (the state file moves to WB_BIN's schema then, so the earlier build goes first).
# Baseline, same run, same DC: one `ldapadd` of an LDIF holding the same group (the attributes
# and members of the first sync's create, from its report) in another OU (OU=Baseline), so the
# ratio first sync / LDIF import shows what Writeback adds to the DC's own cost. Samba refuses one
# add of some 200,000 members or more (MDB_TXN_FULL: one LMDB transaction too big); the baseline
# is then one `ldapmodify -a` run of an add and modifies of 5,000 members each.
#
# Environment:
#   WB_BIN, WB_EMULATOR_BIN   binaries (default target/release/writeback, target/release/graph-emulator)
#   WB_BIG_MEMBERS            members of the group (default 50000)
#   WB_BEFORE_BIN             an earlier writeback build for the first sync and a one-member
#                             change of its own (default: none)
#   WB_BIG_FRESH_DC           1: `samba-ad.sh reset` first (a fresh DC from the template: much
#                             faster than deleting a previous run's users); 0: delete the
#                             previous OU=WB Big subtree (default 0)
#   WB_BIG_BED_USERS          M (>= members + extra users): take the AD users from a saved test bed
#                             of M users (`samba-ad.sh save/restore big-users-M`), built the first
#                             time and restored in seconds afterwards; one bed serves every group
#                             size up to M (default: none, the users are added each run). The bed's
#                             users are added offline, the DC stopped, through Samba's own sam.ldb
#                             modules (the same checks, SIDs and defaults as an LDAP add) in ldb's
#                             batch mode, 10,000 per transaction, each chunk's rate logged in
#                             bed-build.tsv (an LDAP add costs in proportion to the users already
#                             there: 28/s at 100,000; this 860/s at the start, 410/s at 250,000)
#   WB_BIG_DAEMON_SAMPLES     one-member changes timed through `writeback run` with a 1 s poll
#                             (default 10; 0 skips the step)
#   WB_BIG_STEP_TIMEOUT       upper bound of each step, seconds (default 7200)
#   WB_BIG_WORKDIR            work directory (default: a new /tmp/wb-big.XXXXXX, kept for the logs)
#   WRITEBACK_TESTBED_IP / WRITEBACK_TESTBED_DIR   passed to tests/testbed/samba-ad.sh (its DC)
#
# Needs root (the Samba test bed), python3, curl, ldap-utils, GNU time; for building a bed, Samba's
# Python bindings under /usr/bin/python3 (python3-samba, installed with the DC). Loopback only. The DC
# is stopped at exit only if this script started it; the emulator always (by PID). The users
# and groups stay in AD (OU=WB Big) after the run.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
SCRIPT_START=$SECONDS
CMDLINE="$(printf '%q ' "$0" "$@")"

N="${WB_BIG_MEMBERS:-50000}"
FRESH_DC="${WB_BIG_FRESH_DC:-0}"
STEP_TIMEOUT="${WB_BIG_STEP_TIMEOUT:-7200}"
DAEMON_SAMPLES="${WB_BIG_DAEMON_SAMPLES:-10}"
WB="${WB_BIN:-$REPO/target/release/writeback}"
EMU="${WB_EMULATOR_BIN:-$REPO/target/release/graph-emulator}"
BEFORE="${WB_BEFORE_BIN:-}"
# Users beyond the group's members: one for step 2, one more for the earlier build's change.
EXTRA=1
[[ -z "$BEFORE" ]] || EXTRA=2
BED_USERS="${WB_BIG_BED_USERS:-}"
BASE_CHUNK=5000
BED_NAME=""
if [[ -n "$BED_USERS" ]]; then
    [[ "$BED_USERS" =~ ^[0-9]+$ && "$BED_USERS" -ge $((N + EXTRA)) ]] ||
        { printf 'big-group.sh: error: WB_BIG_BED_USERS must be a whole number >= %s (members + extra users)\n' "$((N + EXTRA))" >&2; exit 1; }
    BED_NAME="big-users-$BED_USERS"
fi

say() { printf '\n==> [%5ds] %s\n' "$((SECONDS - SCRIPT_START))" "$*" >&2; }
die() {
    printf 'big-group.sh: error: %s\n' "$*" >&2
    exit 1
}

[[ "$N" =~ ^[0-9]+$ && "$N" -ge 1 && "$STEP_TIMEOUT" =~ ^[0-9]+$ ]] ||
    die "WB_BIG_MEMBERS (>= 1) and WB_BIG_STEP_TIMEOUT must be whole numbers"
for b in "$WB" "$EMU"; do
    [[ -x "$b" ]] || die "binary not found or not executable: $b (set WB_BIN / WB_EMULATOR_BIN, or build with: cargo build --release -p writeback -p graph-emulator)"
done
WB="$(realpath "$WB")"
if [[ -n "$BEFORE" ]]; then
    [[ -x "$BEFORE" ]] || die "WB_BEFORE_BIN not found or not executable: $BEFORE"
    BEFORE="$(realpath "$BEFORE")"
fi
EMU="$(realpath "$EMU")"
for t in python3 curl ldapsearch ldapadd ldapdelete timeout; do
    command -v "$t" >/dev/null || die "$t is needed"
done
[[ -x /usr/bin/time ]] || die "/usr/bin/time is needed (apt-get install time)"
[[ "${WRITEBACK_TESTBED_IP:-127.0.0.1}" == 127.* ]] || die "WRITEBACK_TESTBED_IP must be a loopback address"

WORK="${WB_BIG_WORKDIR:-$(mktemp -d /tmp/wb-big.XXXXXX)}"
mkdir -p "$WORK"
WORK="$(realpath "$WORK")"
EMU_PID=""
DC_STARTED=0

cleanup() {
    local rc=$?
    set +e
    if [[ -n "${DAEMON_PID:-}" ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -TERM "$DAEMON_PID"
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
    rm -f "$WORK/tenant.json" "$WORK"/users.*.ldif "$WORK/baseline.ldif"
    echo "big-group.sh: logs in $WORK (exit $rc)" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Seconds between two $EPOCHREALTIME readings, 3 decimals.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# ---------------------------------------------------------------------------------------------
say "Samba AD test bed (tests/testbed/samba-ad.sh, ${WRITEBACK_TESTBED_IP:-127.0.0.1})"
if ! tests/testbed/samba-ad.sh status >/dev/null 2>&1; then
    DC_STARTED=1
fi
T0=$SECONDS
BED_DIR="${WRITEBACK_TESTBED_DIR:-$REPO/.testbed}/beds/$BED_NAME"
BED_READY=0
if [[ -n "$BED_NAME" && -f "$BED_DIR/wb-users.tsv" ]]; then
    tests/testbed/samba-ad.sh restore "$BED_NAME" >/dev/null
    BED_READY=1
elif [[ "$FRESH_DC" == 1 || -n "$BED_NAME" ]]; then
    tests/testbed/samba-ad.sh reset >/dev/null
else
    tests/testbed/samba-ad.sh up >/dev/null
fi
DC_SECS=$((SECONDS - T0))
ENV_FILE="${WRITEBACK_TESTBED_DIR:-$REPO/.testbed}/samba.env"
[[ -f "$ENV_FILE" ]] || die "no $ENV_FILE after samba-ad.sh up"
# shellcheck disable=SC1090
source "$ENV_FILE"
[[ "$AD_LDAPS_URL" == ldaps://127.* ]] || die "the DC is not on loopback: $AD_LDAPS_URL"
export LDAPTLS_CACERT="$AD_CA_FILE"
LDAP=(-H "$AD_LDAPS_URL" -x -D "$AD_BIND_DN" -w "$AD_BIND_PASSWORD" -o nettimeout=120)
ROOT_OU="OU=WB Big,$AD_BASE_DN"
MANAGED_OU="OU=Cloud Groups,$ROOT_OU"
USERS_OU="OU=Users,$ROOT_OU"
BASELINE_OU="OU=Baseline,$ROOT_OU"

highest_usn() {
    ldapsearch "${LDAP[@]}" -LLL -b "" -s base highestCommittedUSN |
        sed -n 's/^highestCommittedUSN: //p'
}

OU_DELETE_SECS=0
if [[ "$BED_READY" -eq 0 ]]; then
    say "AD: a fresh $ROOT_OU"
    T0=$SECONDS
    if ldapsearch "${LDAP[@]}" -LLL -b "$ROOT_OU" -s base dn >/dev/null 2>&1; then
        timeout "$STEP_TIMEOUT" ldapdelete "${LDAP[@]}" -r "$ROOT_OU" ||
            die "could not delete the previous $ROOT_OU (WB_BIG_FRESH_DC=1 starts from a fresh DC instead)"
    fi
    OU_DELETE_SECS=$((SECONDS - T0))
    ldapadd "${LDAP[@]}" >/dev/null <<EOF
dn: $ROOT_OU
objectClass: organizationalUnit
ou: WB Big

dn: $USERS_OU
objectClass: organizationalUnit
ou: Users
EOF
fi

# ---------------------------------------------------------------------------------------------
# The users: wbb0, wbb1, ... with deterministic (seeded) cloud ids, each AD user keeping its
# cloud id in its description. $WORK/users.tsv: "cloud id<TAB>SID" per user, in order.
USERS_TOTAL=$((N + EXTRA))
[[ -z "$BED_NAME" ]] || USERS_TOTAL="$BED_USERS"
if [[ "$BED_READY" -eq 1 ]]; then
    say "AD: $USERS_TOTAL users from the saved bed $BED_NAME"
    cp "$BED_DIR/wb-users.tsv" "$WORK/users.tsv"
    [[ ! -f "$BED_DIR/wb-bed-build.tsv" ]] || cp "$BED_DIR/wb-bed-build.tsv" "$WORK/bed-build.tsv"
    [[ "$(wc -l <"$WORK/users.tsv")" -eq "$BED_USERS" ]] || die "$BED_DIR/wb-users.tsv does not list $BED_USERS users"
    USERS_SECS="0 (restored)"
else
    CHUNK="$USERS_TOTAL"
    [[ -z "$BED_NAME" ]] || CHUNK=10000
    if [[ -z "$BED_NAME" ]]; then
        say "AD: $USERS_TOTAL users, $CHUNK per ldapadd of an LDIF"
    else
        say "AD: $USERS_TOTAL users, $CHUNK per transaction, offline (the DC stopped meanwhile)"
    fi
    python3 - "$USERS_TOTAL" "$USERS_OU" "$WORK/users" "$WORK/ids.txt" "$CHUNK" <<'PY'
import random, sys, uuid
n, ou, prefix, ids, chunk = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
rnd = random.Random(1)
with open(ids, "w") as g:
    for start in range(0, n, chunk):
        with open(f"{prefix}.{start // chunk:04d}.ldif", "w") as f:
            for i in range(start, min(n, start + chunk)):
                uid = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
                g.write(uid + "\n")
                f.write(f"dn: CN=wbb{i},{ou}\nobjectClass: user\nsAMAccountName: wbb{i}\n"
                        f"description: {uid}\nuserAccountControl: 514\n\n")
PY
    USN_U0="$(highest_usn)"
    T0=$EPOCHREALTIME
    DONE=0
    : >"$WORK/bed-build.tsv"
    if [[ -n "$BED_NAME" ]]; then
        # Offline, the DC stopped: every LDAP add is a transaction of its own that rewrites each
        # index list its user joins (objectClass top/person/organizationalPerson/user,
        # objectCategory, primaryGroupID, sAMAccountType, userAccountControl, the OU's one-level
        # list: 16 bytes a user each), so an add costs in proportion to the users already there
        # (35 ms at 100,000). Here 10,000 adds share a transaction, and batch_mode (what `samba-tool
        # domain join` uses) spares the sub-transaction per add that would copy those lists
        # again; an add that fails fails its whole chunk.
        /usr/bin/python3 -c 'import samba.samdb' 2>/dev/null ||
            die "building a bed needs Samba's Python bindings under /usr/bin/python3 (apt-get install python3-samba)"
        tests/testbed/samba-ad.sh down >/dev/null 2>&1
        timeout "$STEP_TIMEOUT" /usr/bin/python3 - "$AD_INSTANCE_DIR/etc/smb.conf" "$AD_INSTANCE_DIR/private/sam.ldb" \
            "$WORK/bed-build.tsv" "$WORK"/users.*.ldif <<'PY' ||
import sys, time
from samba.auth import system_session
from samba.param import LoadParm
from samba.samdb import SamDB
conf, url, tsv, ldifs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
lp = LoadParm()
lp.load(conf)
# transaction_index_cache_size: the in-memory index cache's hash size, as provision's batch mode
# sets it for an 8 GB database.
db = SamDB(url=url, lp=lp, session_info=system_session(),
           options=["batch_mode:1", "transaction_index_cache_size:202481"])
t0 = time.time()
done = 0
with open(tsv, "w") as out:
    for path in ldifs:
        t1 = time.time()
        count = 0
        db.transaction_start()
        try:
            with open(path) as f:
                for _, msg in db.parse_ldif(f.read()):
                    db.add(msg)
                    count += 1
            db.transaction_commit()
        except BaseException:
            db.transaction_cancel()
            raise
        done += count
        t2 = time.time()
        out.write(f"{done}\t{t2 - t1:.3f}\t{t2 - t0:.3f}\n")
        out.flush()
        print(f"  {done} users; this chunk of {count} at {count / (t2 - t1):.0f}/s", file=sys.stderr, flush=True)
PY
            die "the offline add of the users failed (the instance is left as it is, the DC stopped)"
        rm -f "$WORK"/users.*.ldif
        tests/testbed/samba-ad.sh up >/dev/null
    fi
    for ldif in "$WORK"/users.*.ldif; do
        [[ -f "$ldif" ]] || continue
        t1=$EPOCHREALTIME
        count="$(grep -c '^dn: ' "$ldif")"
        timeout "$STEP_TIMEOUT" ldapadd "${LDAP[@]}" -f "$ldif" >/dev/null 2>"$WORK/users-ldapadd.log" ||
            { tail -n 20 "$WORK/users-ldapadd.log" >&2; die "ldapadd of the users in $ldif failed"; }
        DONE=$((DONE + count))
        secs="$(elapsed "$t1" "$EPOCHREALTIME")"
        printf '%s\t%s\t%s\n' "$DONE" "$secs" "$(elapsed "$T0" "$EPOCHREALTIME")" >>"$WORK/bed-build.tsv"
        [[ "$CHUNK" -eq "$USERS_TOTAL" ]] ||
            echo "  $DONE users; this chunk of $count at $(awk -v n="$count" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')/s" >&2
        rm -f "$ldif"
    done
    USERS_SECS="$(elapsed "$T0" "$EPOCHREALTIME")"
    USN_U1="$(highest_usn)"
    echo "  $USERS_TOTAL users in ${USERS_SECS} s ($(awk -v n="$USERS_TOTAL" -v s="$USERS_SECS" 'BEGIN { printf "%.0f", n / s }')/s); highestCommittedUSN $USN_U0 -> $USN_U1" >&2

    say "AD: the users' SIDs read back"
    WB_PREP_LDAP_URL="$AD_LDAPS_URL" WB_PREP_BIND_DN="$AD_BIND_DN" WB_PREP_BIND_PW="$AD_BIND_PASSWORD" \
        timeout "$STEP_TIMEOUT" python3 - "$USERS_OU" "$WORK/ids.txt" "$WORK/users.tsv" <<'PY'
import base64, os, subprocess, sys
ou, ids_path, dst = sys.argv[1], sys.argv[2], sys.argv[3]
ids = open(ids_path).read().split()
base = ["-H", os.environ["WB_PREP_LDAP_URL"], "-x", "-D", os.environ["WB_PREP_BIND_DN"],
        "-w", os.environ["WB_PREP_BIND_PW"], "-o", "nettimeout=120"]
r = subprocess.run(["ldapsearch", *base, "-LLL", "-o", "ldif-wrap=no", "-E", "pr=1000/noprompt",
                    "-b", ou, "-s", "one", "(objectClass=user)", "description", "objectSid"],
                   text=True, capture_output=True)
if r.returncode != 0:
    sys.exit(f"ldapsearch of the users failed: {r.stderr.strip()}")
def sid_str(b):
    k = b[1]
    auth = int.from_bytes(b[2:8], "big")
    subs = [int.from_bytes(b[8 + 4 * j:12 + 4 * j], "little") for j in range(k)]
    return "S-%d-%d%s" % (b[0], auth, "".join("-%d" % s for s in subs))
sids = {}
for block in r.stdout.split("\n\n"):
    desc = sid = None
    for line in block.splitlines():
        if line.startswith("description: "):
            desc = line[len("description: "):].strip()
        elif line.startswith("objectSid:: "):
            sid = sid_str(base64.b64decode(line[len("objectSid:: "):]))
    if desc and sid:
        sids[desc] = sid
missing = [u for u in ids if u not in sids]
if missing:
    sys.exit(f"{len(missing)} of {len(ids)} users have no AD account read back")
with open(dst, "w") as f:
    for uid in ids:
        f.write(f"{uid}\t{sids[uid]}\n")
PY
    if [[ -n "$BED_NAME" ]]; then
        say "AD: the bed saved as $BED_NAME (tests/testbed/samba-ad.sh save)"
        cp "$WORK/users.tsv" "${AD_INSTANCE_DIR}/wb-users.tsv"
        cp "$WORK/bed-build.tsv" "${AD_INSTANCE_DIR}/wb-bed-build.tsv"
        tests/testbed/samba-ad.sh save "$BED_NAME" >&2
    fi
fi

# The OUs of the run (after the bed was saved: a restored bed starts without them).
ldapadd "${LDAP[@]}" >/dev/null <<EOF
dn: $BASELINE_OU
objectClass: organizationalUnit
ou: Baseline

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

say "Tenant: one security group of $N members, app credentials"
T0=$SECONDS
timeout "$STEP_TIMEOUT" python3 - "$N" "$USERS_OU" "$WORK/users.tsv" "$WORK/tenant.json" "$WORK/tenant.meta" "$EXTRA" <<'PY'
import json, random, sys, uuid
n, ou, users_path, dst, meta_path, extra = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
rows = [line.rstrip("\n").split("\t") for _, line in zip(range(n + extra), open(users_path))]
if len(rows) < n + extra:
    sys.exit(f"{users_path} lists {len(rows)} users, not {n + extra}")
ids = [uid for uid, _ in rows]
users = []
for i, (uid, sid) in enumerate(rows):
    users.append({
        "id": uid, "displayName": f"Big Member {i}", "userPrincipalName": f"wbb{i}@contoso.onmicrosoft.com",
        "accountEnabled": True, "userType": "Member", "onPremisesSyncEnabled": True,
        "onPremisesSecurityIdentifier": sid, "onPremisesSamAccountName": f"wbb{i}",
        "onPremisesDomainName": "corp.example.test",
    })
rnd = random.Random(2)
gid = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
group = {
    "id": gid, "displayName": f"Big Group {n}", "description": f"A security group of {n} members",
    "groupTypes": [], "mailEnabled": False, "securityEnabled": True, "mailNickname": f"big-group-{n}",
    "onPremisesSyncEnabled": None, "members": ids[:n],
}
app = {"clientId": str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
       "clientSecret": "wb-big-" + uuid.UUID(int=rnd.getrandbits(128), version=4).hex, "displayName": "Writeback"}
tenant = {"tenantId": str(uuid.UUID(int=rnd.getrandbits(128), version=4)), "domain": "contoso.onmicrosoft.com",
          "apps": [app], "users": users, "groups": [group]}
with open(dst, "w") as f:
    json.dump(tenant, f, separators=(",", ":"))
with open(meta_path, "w") as f:
    f.write(f"TENANT_ID={tenant['tenantId']}\nCLIENT_ID={app['clientId']}\nCLIENT_SECRET='{app['clientSecret']}'\n"
            f"GROUP_ID={gid}\nEXTRA_USER_ID={ids[n]}\nEXTRA_USER_DN='CN=wbb{n},{ou}'\n"
            f"BEFORE_USER_ID={ids[n + 1] if len(ids) > n + 1 else ''}\n")
PY
TENANT_SECS=$((SECONDS - T0))
# shellcheck disable=SC1091
source "$WORK/tenant.meta"

say "Graph emulator"
T0=$SECONDS
rm -f "$WORK/emulator.out"
"$EMU" serve --listen 127.0.0.1:0 --tenant "$WORK/tenant.json" >"$WORK/emulator.out" 2>"$WORK/emulator.log" &
EMU_PID=$!
while [[ ! -s "$WORK/emulator.out" ]]; do
    kill -0 "$EMU_PID" 2>/dev/null || { cat "$WORK/emulator.log" >&2; die "the emulator exited"; }
    ((SECONDS - T0 < STEP_TIMEOUT)) || die "the emulator printed no URL within $STEP_TIMEOUT s"
    sleep 0.2
done
GRAPH_BASE="$(head -n1 "$WORK/emulator.out")"
[[ "$GRAPH_BASE" == http://127.0.0.1:* ]] || die "unexpected emulator URL: $GRAPH_BASE"
EMU_SECS=$((SECONDS - T0))
echo "  emulator at $GRAPH_BASE (PID $EMU_PID), up in $EMU_SECS s" >&2

# ---------------------------------------------------------------------------------------------
RULES="$WORK/rules"
rm -rf "$RULES" && mkdir -p "$RULES"
for f in "$REPO"/scripts/*.rhai; do
    grep -q '^fn in_scope(group) {$' "$f" || die "$f has no 'fn in_scope(group) {' line to narrow"
    sed "s/^fn in_scope(group) {\$/fn in_scope(group) {\n    group.id == \"$GROUP_ID\" \&\&/" "$f" \
        >"$RULES/$(basename "$f")"
done
CONFIG="$WORK/writeback.toml"
cat >"$CONFIG" <<EOF
# Written by bench/big-group.sh
[graph]
tenant_id = "$TENANT_ID"
client_id = "$CLIENT_ID"
client_secret_env = "WB_BIG_GRAPH_SECRET"
graph_url = "$GRAPH_BASE/v1.0"
token_url = "$GRAPH_BASE/$TENANT_ID/oauth2/v2.0/token"

[ad]
url = "$AD_LDAPS_URL"
bind_dn = "$AD_BIND_DN"
password_env = "WB_BIG_AD_PASSWORD"
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
EOF
rm -f "$WORK"/state.db*
export WB_BIG_GRAPH_SECRET="$CLIENT_SECRET" WB_BIG_AD_PASSWORD="$AD_BIND_PASSWORD" NO_COLOR=1
"$WB" --config "$CONFIG" check >"$WORK/check.log" 2>&1 || { cat "$WORK/check.log" >&2; die "writeback check failed"; }

# timed NAME ARGS...: `writeback --config CONFIG ARGS` under /usr/bin/time; sets
# T_<NAME>="wall user sys maxrss_kib"; stdout/stderr in $WORK/NAME.{json,log}. Exit must be 0.
timed() {
    local name="$1"
    shift
    local rc=0 t0 t1
    t0=$EPOCHREALTIME
    RUST_LOG="writeback=debug" timeout "$STEP_TIMEOUT" /usr/bin/time -f "%e %U %S %M" -o "$WORK/$name.time" \
        "${RUN_BIN:-$WB}" --config "$CONFIG" "$@" >"$WORK/$name.json" 2>"$WORK/$name.log" || rc=$?
    t1=$EPOCHREALTIME
    [[ -s "$WORK/$name.time" ]] || { tail -n 30 "$WORK/$name.log" >&2; die "writeback $* produced no timing (exit $rc)"; }
    printf -v "T_${name}" '%s %s' "$(elapsed "$t0" "$t1")" "$(tail -n1 "$WORK/$name.time" | cut -d' ' -f2-)"
    [[ "$rc" -ne 124 ]] || die "writeback $* did not finish within $STEP_TIMEOUT s"
    [[ "$rc" -eq 0 ]] || { tail -n 30 "$WORK/$name.log" >&2; die "writeback $* exited $rc (see $WORK/$name.log)"; }
    local t="T_${name}"
    echo "  writeback $*: wall/user/sys/maxrss: ${!t}; phases (ms): $(phases "$name")" >&2
    echo "    report: $(report "$name")" >&2
}
clean() { sed 's/\x1b\[[0-9;]*m//g' "$1"; }
phases() {
    clean "$WORK/$1.log" | grep -E 'sync phase done' |
        sed -n 's/.*phase="\{0,1\}\([a-z_]*\)"\{0,1\} ms=\([0-9]*\).*/\1=\2/p' | paste -sd' ' - || true
}
# report NAME: the gist of a --json report (sweep, evaluated, examined, the changes).
report() {
    python3 - "$WORK/$1.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
p = r.get("plan", {})
ch = []
for c in p.get("changes", []):
    a = c.get("action")
    if a == "create":
        ch.append(f"create ({len(c.get('members', []))} members, {len(c.get('attributes', {}))} attributes)")
    elif a == "update":
        ch.append(f"update (members_add {len(c.get('members_add', []))}, members_remove {len(c.get('members_remove', []))}, "
                  f"attribute changes {len(c.get('changes', []))}{', move' if c.get('move_to') else ''})")
    else:
        ch.append(a)
print(f"sweep {r.get('sweep')!r}, evaluated {r.get('evaluated')}, examined {r.get('examined')}; "
      f"changes: {'; '.join(ch) or 'none'}; refused {len(p.get('refused', []))}; "
      f"unresolved members {len(p.get('unresolved_members', []))}")
PY
}
# member_count DN: the group's members in AD (ranged retrieval, as AD hands out large values).
member_count() {
    python3 - "$1" "${LDAP[@]}" <<'PY'
import subprocess, sys
dn, base = sys.argv[1], sys.argv[2:]
lo, total, attr = 0, 0, "member"  # Samba hands out all values; AD a range at a time
while True:
    r = subprocess.run(["ldapsearch", *base, "-LLL", "-o", "ldif-wrap=no", "-b", dn, "-s", "base",
                        attr], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"ldapsearch {dn}: {r.stderr.strip()}")
    vals = [l for l in r.stdout.splitlines() if l.lower().startswith("member")]
    total += len(vals)
    tags = {l.split(":", 1)[0].lower() for l in vals}
    # "member" (everything), "member;range=lo-hi" (more to come) or "member;range=lo-*" (last).
    more = [t for t in tags if t.startswith("member;range=") and not t.endswith("-*")]
    if not vals or not more:
        break
    lo = int(more[0].rsplit("-", 1)[1]) + 1
    attr = f"member;range={lo}-*"
print(total)
PY
}

# ---------------------------------------------------------------------------------------------
say "writeback sync (first: creates the group of $N members)"
USN_1A="$(highest_usn)"
RUN_BIN="${BEFORE:-$WB}" timed sync1 sync --json
USN_1B="$(highest_usn)"
read -r N_CREATE GROUP_DN < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
c = [c for c in r["plan"]["changes"] if c.get("action") == "create"]
print(len(c), c[0]["dn"] if len(c) == 1 else "-")' "$WORK/sync1.json")
[[ "$N_CREATE" -eq 1 ]] || die "the first sync did not create exactly one group (see $WORK/sync1.json)"
T0=$SECONDS
AD_MEMBERS="$(member_count "$GROUP_DN")"
echo "  $GROUP_DN: $AD_MEMBERS members in AD (counted in $((SECONDS - T0)) s); highestCommittedUSN $USN_1A -> $USN_1B" >&2
[[ "$AD_MEMBERS" -eq "$N" ]] || die "the group has $AD_MEMBERS members in AD, not $N"

# graph_token: an app token from the emulator (client credentials).
graph_token() {
    curl -sS --fail --max-time 30 "$GRAPH_BASE/$TENANT_ID/oauth2/v2.0/token" \
        --data-urlencode grant_type=client_credentials --data-urlencode "client_id=$CLIENT_ID" \
        --data-urlencode "client_secret=$CLIENT_SECRET" --data-urlencode "scope=https://graph.microsoft.com/.default" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}

# add_member USER_ID: POST /groups/{id}/members/$ref to the emulator.
add_member() {
    local token
    token="$(graph_token)" || die "no token from the emulator"
    curl -sS --fail --max-time 60 -X POST -H "Authorization: Bearer $token" -H "Content-Type: application/json" \
        --data "{\"@odata.id\": \"$GRAPH_BASE/v1.0/directoryObjects/$1\"}" \
        "$GRAPH_BASE/v1.0/groups/$GROUP_ID/members/\$ref" >/dev/null || die "POST members/\$ref failed"
}

# remove_member USER_ID: DELETE /groups/{id}/members/{user}/$ref to the emulator.
remove_member() {
    local token
    token="$(graph_token)" || die "no token from the emulator"
    curl -sS --fail --max-time 60 -X DELETE -H "Authorization: Bearer $token" \
        "$GRAPH_BASE/v1.0/groups/$GROUP_ID/members/$1/\$ref" >/dev/null || die "DELETE members/{id}/\$ref failed"
}

USN_2BD=""
if [[ -n "$BEFORE" ]]; then
    say "Cloud: one member added, then writeback sync with the earlier build ($BEFORE)"
    add_member "$BEFORE_USER_ID"
    USN_2BA="$(highest_usn)"
    RUN_BIN="$BEFORE" timed sync2before sync --json
    USN_2BD=$(($(highest_usn) - USN_2BA))
    echo "  highestCommittedUSN delta $USN_2BD" >&2
fi

say "Cloud: one member added (POST /groups/$GROUP_ID/members/\$ref), then writeback sync"
add_member "$EXTRA_USER_ID"
USN_2A="$(highest_usn)"
timed sync2 sync --json
USN_2B="$(highest_usn)"
USN_2D=$((USN_2B - USN_2A))
CHANGE_OK="$(python3 - "$WORK/sync2.json" "$EXTRA_USER_DN" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ch = r["plan"]["changes"]
ok = (len(ch) == 1 and ch[0].get("action") == "update" and len(ch[0].get("members_add", [])) == 1
      and ch[0]["members_add"][0].lower() == sys.argv[2].lower() and not ch[0].get("members_remove")
      and not ch[0].get("changes") and not ch[0].get("move_to"))
print("yes" if ok else "NO")
PY
)"
AD_MEMBERS2="$(member_count "$GROUP_DN")"
echo "  one update with members_add = [the new member] and nothing else: $CHANGE_OK; $AD_MEMBERS2 members in AD; highestCommittedUSN $USN_2A -> $USN_2B (delta $USN_2D)" >&2

say "writeback sync (third, idle)"
USN_3A="$(highest_usn)"
timed sync3 sync --json
USN_3B="$(highest_usn)"
echo "  highestCommittedUSN $USN_3A -> $USN_3B" >&2

say "writeback sync --full (reconciliation: the tenant read again, the group compared with AD whole)"
USN_4A="$(highest_usn)"
timed sync4 sync --full --json
USN_4B="$(highest_usn)"
echo "  highestCommittedUSN $USN_4A -> $USN_4B" >&2

# ---------------------------------------------------------------------------------------------
DAEMON_ROW=""
if [[ "$DAEMON_SAMPLES" -gt 0 ]]; then
    say "writeback run (1 s poll): $DAEMON_SAMPLES one-member changes, each timed until AD shows it"
    cat >>"$CONFIG" <<EOF

[daemon]
poll_interval_secs = 1
reconcile_interval_secs = 0
EOF
    USN_DA="$(highest_usn)"
    RUST_LOG="writeback=debug" "$WB" --config "$CONFIG" run >"$WORK/daemon.out" 2>"$WORK/daemon.log" &
    DAEMON_PID=$!
    # Ready: its first cycle logged (nothing to do: the state is in step).
    for _ in $(seq 1 600); do
        grep -q "sync phase done" "$WORK/daemon.log" 2>/dev/null && break
        kill -0 "$DAEMON_PID" 2>/dev/null || { tail -n 20 "$WORK/daemon.log" >&2; die "writeback run exited"; }
        sleep 0.1
    done
    sleep 1.5
    cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$DAEMON_PID/stat"; }
    cycles() { clean "$WORK/daemon.log" | grep -c 'phase="\{0,1\}cloud' || true; }
    CPU0="$(cpu_ticks)"
    CYC0="$(cycles)"
    : >"$WORK/daemon-latency.txt"
    for i in $(seq 1 "$DAEMON_SAMPLES"); do
        # Irregular moments within the poll period (deterministic 137 ms steps).
        sleep "$(awk -v i="$i" 'BEGIN { printf "%.3f", (i * 137 % 1000) / 1000 }')"
        if ((i % 2 == 1)); then want=0; else want=1; fi
        t0=$EPOCHREALTIME
        if [[ "$want" -eq 0 ]]; then remove_member "$EXTRA_USER_ID"; else add_member "$EXTRA_USER_ID"; fi
        while :; do
            n="$(ldapsearch "${LDAP[@]}" -LLL -b "$EXTRA_USER_DN" -s base "(memberOf=$GROUP_DN)" dn | grep -c '^dn:' || true)"
            [[ "$n" -eq "$want" ]] && break
            (($(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { print (b - a > 120) }'))) && die "sample $i: AD did not show the change within 120 s"
            sleep 0.02
        done
        elapsed "$t0" "$EPOCHREALTIME" >>"$WORK/daemon-latency.txt"
        echo >>"$WORK/daemon-latency.txt"
    done
    sleep 1.2
    CPU1="$(cpu_ticks)"
    CYC1="$(cycles)"
    DAEMON_RSS="$(awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$DAEMON_PID/status")"
    kill -TERM "$DAEMON_PID"
    wait "$DAEMON_PID" 2>/dev/null || true
    DAEMON_PID=""
    USN_DB="$(highest_usn)"
    TICK="$(getconf CLK_TCK)"
    DAEMON_ROW="$(sort -n "$WORK/daemon-latency.txt" | awk -v cpu="$((CPU1 - CPU0))" -v tick="$TICK" \
        -v cyc="$((CYC1 - CYC0))" -v usn="$((USN_DB - USN_DA))" -v rss="$DAEMON_RSS" '
        NF { v[++n] = $1 }
        END {
            p50 = v[int((n + 1) / 2)]; mx = v[n]
            printf "%d samples: median %.2f s, max %.2f s (the p99 of %d); %d cycles, CPU %.1f ms per cycle; USN delta %d (%d changes); peak RSS %s MiB",
                n, p50, mx, n, cyc, (cyc > 0 ? cpu / tick * 1000 / cyc : 0), usn, n, rss
        }')"
    echo "  $DAEMON_ROW" >&2
fi

# ---------------------------------------------------------------------------------------------
say "Baseline: one ldapadd of an LDIF with the same group and its $N members, in $BASELINE_OU"
python3 - "$WORK/sync1.json" "$BASELINE_OU" "$MANAGED_OU" "$WORK/baseline.ldif" <<'PY'
import base64, json, sys
r = json.load(open(sys.argv[1]))
c = [c for c in r["plan"]["changes"] if c.get("action") == "create"][0]
rdn = c["dn"].split(",", 1)[0]
def line(k, v):
    v = str(v)
    safe = v and v[0] not in " :<" and v[-1] != " " and all(32 <= ord(ch) < 127 for ch in v)
    return f"{k}: {v}\n" if safe else f"{k}:: {base64.b64encode(v.encode()).decode()}\n"
with open(sys.argv[4], "w") as f:
    f.write(line("dn", f"{rdn},{sys.argv[2]}"))
    attrs = {k: v for k, v in c["attributes"].items()}
    if not any(k.lower() == "objectclass" for k in attrs):
        f.write("objectClass: group\n")
    for k, vs in attrs.items():
        for v in (vs if isinstance(vs, list) else [vs]):
            # An anchor value of its own, so the copy is never taken for the managed group.
            if k.lower() == "msds-externaldirectoryobjectid":
                v = "Baseline_" + str(v)
            f.write(line(k, v))
    for m in c["members"]:
        f.write(line("member", m))
print(f"  LDIF: {rdn}, {len(c['attributes'])} attributes ({', '.join(sorted(c['attributes']))}), {len(c['members'])} members", file=sys.stderr)
PY
USN_BA="$(highest_usn)"
T0=$EPOCHREALTIME
BASE_KIND="one \`ldapadd\` of the same group + $N members (LDIF)"
if ! timeout "$STEP_TIMEOUT" /usr/bin/time -f "%e %U %S %M" -o "$WORK/baseline.time" \
    ldapadd "${LDAP[@]}" -f "$WORK/baseline.ldif" >/dev/null 2>"$WORK/baseline.log"; then
    # Samba writes an add in one LMDB transaction, and each member's back-link dirties pages
    # of it: past some 200,000 members the add is refused (MDB_TXN_FULL). The import then
    # writes the group as one add and modifies of $BASE_CHUNK members, in one ldapmodify run.
    grep -q "MDB_TXN_FULL" "$WORK/baseline.log" ||
        { tail -n 20 "$WORK/baseline.log" >&2; die "the baseline ldapadd failed"; }
    echo "  one add of $N members refused by Samba (MDB_TXN_FULL: transaction too big); the import in chunks of $BASE_CHUNK instead" >&2
    python3 - "$WORK/baseline.ldif" "$WORK/baseline-chunked.ldif" "$BASE_CHUNK" <<'PY'
import sys
src, dst, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = open(src).read().splitlines()
head = [l for l in lines if not l.lower().startswith("member:")]
members = [l for l in lines if l.lower().startswith("member:")]
dn = head[0]
with open(dst, "w") as f:
    f.write("\n".join(head) + "\n" + "\n".join(members[:chunk]) + "\n")
    for i in range(chunk, len(members), chunk):
        f.write(f"\n{dn}\nchangetype: modify\nadd: member\n" + "\n".join(members[i:i + chunk]) + "\n-\n")
PY
    T0=$EPOCHREALTIME
    timeout "$STEP_TIMEOUT" /usr/bin/time -f "%e %U %S %M" -o "$WORK/baseline.time" \
        ldapmodify -a "${LDAP[@]}" -f "$WORK/baseline-chunked.ldif" >/dev/null 2>"$WORK/baseline.log" ||
        { tail -n 20 "$WORK/baseline.log" >&2; die "the baseline import in chunks failed"; }
    BASE_KIND="one \`ldapmodify -a\` of the same group: an add of $BASE_CHUNK members and modifies of $BASE_CHUNK (one add of $N is refused: MDB_TXN_FULL)"
fi
BASE_SECS="$(elapsed "$T0" "$EPOCHREALTIME")"
USN_BB="$(highest_usn)"
BASE_MEMBERS="$(member_count "$(sed -n '1s/^dn: //p' "$WORK/baseline.ldif")")"
echo "  ldapadd ${BASE_SECS} s; $BASE_MEMBERS members in AD; highestCommittedUSN $USN_BA -> $USN_BB" >&2

# ---------------------------------------------------------------------------------------------
TOTAL_SECS=$((SECONDS - SCRIPT_START))
field() { awk -v i="$2" '{ print $i }' <<<"$1"; }
mib() { awk '{ printf "%.0f", $1 / 1024 }' <<<"$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
row() {
    local label="$1" t="$2" usn="$3"
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$(field "$t" 1)" "$(field "$t" 2)" \
        "$(field "$t" 3)" "$(mib "$(field "$t" 4)")" "$usn" "$(ratio "$(field "$t" 1)" "$BASE_SECS")"
}
{
    echo
    echo "## bench/big-group.sh — $(date -u +%Y-%m-%d) on $(hostname) ($(nproc) CPU)"
    echo
    echo "Command: \`${CMDLINE% }\` with WB_BIG_MEMBERS=$N WB_BIG_FRESH_DC=$FRESH_DC"
    echo "Binaries: $WB ($("$WB" --version 2>/dev/null | head -n1)), $EMU"
    echo
    echo "One cloud security group of $N members, all synced users with an AD account; default rules, scope = that group."
    if [[ "$BED_READY" -eq 1 ]]; then
        echo "Setup: the saved bed $BED_NAME ($BED_USERS AD users) restored in ${DC_SECS} s, tenant written ${TENANT_SECS} s, emulator start ${EMU_SECS} s. Whole run ${TOTAL_SECS} s."
    else
        echo "Setup: DC $( [[ "$FRESH_DC" == 1 || -n "$BED_NAME" ]] && echo reset || echo up ) ${DC_SECS} s, previous OU deleted in ${OU_DELETE_SECS} s, $USERS_TOTAL AD users by ldapadd in **${USERS_SECS} s** ($(awk -v n="$USERS_TOTAL" -v s="$USERS_SECS" 'BEGIN { printf "%.0f", n / s }') users/s), tenant written ${TENANT_SECS} s, emulator start ${EMU_SECS} s. Whole run ${TOTAL_SECS} s."
    fi
    echo
    echo "| step | wall s | user s | sys s | max RSS MiB | highestCommittedUSN delta | / LDIF import |"
    echo "|---|---|---|---|---|---|---|"
    row "\`sync\` first (creates the group, $AD_MEMBERS members in AD)" "$T_sync1" "$((USN_1B - USN_1A))"
    if [[ -n "$BEFORE" ]]; then
        row "\`sync\` after one member added in the cloud, earlier build" "$T_sync2before" "$USN_2BD"
    fi
    row "\`sync\` after one member added in the cloud" "$T_sync2" "$USN_2D"
    row "\`sync\` third, idle" "$T_sync3" "$((USN_3B - USN_3A))"
    row "\`sync --full\`: reconciliation, the group compared with AD" "$T_sync4" "$((USN_4B - USN_4A))"
    printf '| baseline: %s | %s | - | - | - | %s | 1.00x |\n' "$BASE_KIND" "$BASE_SECS" "$((USN_BB - USN_BA))"
    echo
    echo "| figure | value |"
    echo "|---|---|"
    echo "| ratio first sync / LDIF import | $(ratio "$(field "$T_sync1" 1)" "$BASE_SECS") |"
    if [[ -n "$BEFORE" ]]; then
        echo "| earlier build: $BEFORE ($("$BEFORE" --version 2>/dev/null | head -n1)); it ran the first sync too |"
        echo "| one-member change, this build / earlier build (wall) | $(ratio "$(field "$T_sync2" 1)" "$(field "$T_sync2before" 1)") |"
    fi
    echo "| second sync: one update with members_add of 1, nothing else | $CHANGE_OK |"
    echo "| second sync: highestCommittedUSN delta (1 = one modify) | $USN_2D |"
    [[ -z "$DAEMON_ROW" ]] || echo "| daemon, 1 s poll: one member removed / added back, change -> visible in AD | $DAEMON_ROW |"
    echo "| members in AD after the first / second sync; baseline group | $AD_MEMBERS / $AD_MEMBERS2; $BASE_MEMBERS |"
    STEPS="sync1${BEFORE:+ sync2before} sync2 sync3 sync4"
    for s in $STEPS; do
        echo "| $s report | $(report "$s") |"
    done
    for s in $STEPS; do
        echo "| $s phases (ms, debug log) | $(phases "$s") |"
    done
} | tee "$WORK/result.md"

[[ "$CHANGE_OK" == yes ]] || die "the one-member change was not planned as one update with members_add of 1 (see $WORK/sync2.json)"
[[ "$AD_MEMBERS2" -eq $((N + EXTRA)) ]] || die "after the second sync the group has $AD_MEMBERS2 members in AD, not $((N + EXTRA))"
[[ "$USN_3A" == "$USN_3B" ]] || die "the idle sync wrote to AD (highestCommittedUSN $USN_3A -> $USN_3B)"
[[ "$USN_4A" == "$USN_4B" ]] || die "the reconciliation of a group in step wrote to AD (highestCommittedUSN $USN_4A -> $USN_4B)"
