#!/usr/bin/env bash
# The upgrade test (a step of tests/run-tests.sh): the previous release's package, installed and
# run on the test bed, then upgraded to the package of the current build.
#
#   1. installs tests/upgrade/writeback_<previous>_<arch>.deb (kept in the repository;
#      build-previous-deb.sh rebuilds it from its tag), fills in /etc/writeback/writeback.toml
#      for the test bed and the Graph emulator, edits a default rule so that the edit shows in
#      AD, and runs the old `writeback sync` as the service user: the groups land in AD;
#   2. builds the new package from the current binary with packaging/build-deb.sh (as
#      packaging/test-package.sh does) and upgrades with `dpkg -i --force-confold`;
#   3. checks that the config and the rule edit survived (the package's own version of an
#      edited file it changed is left beside it as .dpkg-dist; the rules left alone are the new
#      package's), the state survived (anchors, runs) and its schema version moves to the
#      current one on the first sync, and that this sync writes nothing: its report says
#      "No changes" and AD's highestCommittedUSN does not move; nor does a `sync --full`, which
#      compares every group with what the new release makes of it; then that a cloud change
#      still arrives in AD through the migrated state;
#   4. purges the package.
#
#   tests/upgrade/run.sh
#
#   WRITEBACK_BIN           the binary of the new package (default target/debug/writeback)
#   GRAPH_EMULATOR_BIN      the Graph emulator (default target/debug/graph-emulator)
#   WRITEBACK_PREVIOUS_DEB  the previous release's package
#                           (default tests/upgrade/writeback_0.2.0_<arch>.deb)
#   WRITEBACK_TESTBED_IP, WRITEBACK_TESTBED_DIR   the test bed's, as tests/testbed/samba-ad.sh
#                           takes them (defaults 127.0.0.1 and <repo>/.testbed)
#
# Needs root. Uses the running test bed, or starts one and stops it again; its users and groups
# live in OU=Upgrade Test (replaced at the start, deleted at the end). Refuses to run when a
# writeback package is installed, or /etc/writeback or /var/lib/writeback is there without one.
# Whatever happens, the emulator is stopped by its PID, the package purged, the files the test
# added to /etc/writeback deleted, and the writeback account deleted if the test's package
# created it.
set -euo pipefail

# The previous release, and its state schema version (the fixture's: host/src/state/schema.rs
# of that release).
readonly PREVIOUS_VERSION=0.2.0
readonly PREVIOUS_SCHEMA=6
# Building and installing the package, the checks' tools.
readonly PACKAGES=(dpkg-dev binutils gzip adduser ldap-utils sqlite3 curl)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${ROOT}"
HERE="${ROOT}/tests/upgrade"

TEST_NAME=test-upgrade
# shellcheck source=packaging/package-test-lib.sh
. "${ROOT}/packaging/package-test-lib.sh"

# The emulator's tenant and app (tests/upgrade/tenant.template.json).
readonly TENANT_ID=3c9e5d21-7a4b-4f60-8b12-c0d1e2f3a4b5
readonly CLIENT_ID=6b2d1e63-9f4a-4c1c-8d72-3f8e5c9a0b21
readonly CLIENT_SECRET=upgrade-test-secret-not-for-production
# The secrets and the test bed's CA, added to /etc/writeback as an admin would.
readonly ADDED_FILES=(/etc/writeback/graph-client-secret /etc/writeback/ad-password /etc/writeback/testbed-ca.pem)
# The rule edit: the security groups get an `info` attribute.
readonly RULE=/etc/writeback/rules/20-security.rhai
readonly RULE_INFO="Written by the rule as edited in /etc/writeback before the upgrade"

# What the test started or changed; cleanup undoes it whatever happens.
WORK=""
EMU_PID=""
STARTED_DC=0
PURGE_ON_EXIT=0
HAD_ACCOUNT=1
AD_READY=0

cleanup() {
    local rc=$?
    set +e
    if [[ -n "${EMU_PID}" ]]; then
        kill "${EMU_PID}" 2>/dev/null && wait "${EMU_PID}" 2>/dev/null
        EMU_PID=""
    fi
    if [[ "${PURGE_ON_EXIT}" -eq 1 ]]; then
        log "purging the package"
        dpkg --purge writeback >/dev/null 2>&1 || log "warning: dpkg --purge writeback failed"
        PURGE_ON_EXIT=0
    fi
    rm -f "${ADDED_FILES[@]}"
    [[ ! -d /etc/writeback ]] || rmdir /etc/writeback 2>/dev/null ||
        log "warning: /etc/writeback is left with files the test did not add: $(find /etc/writeback -mindepth 1 -printf '%P ')"
    if [[ "${HAD_ACCOUNT}" -eq 0 ]]; then
        remove_account plain || log "warning: could not delete the account writeback the package created"
    fi
    if [[ "${AD_READY}" -eq 1 ]]; then
        ldapdelete "${LDAP[@]}" -r "${TEST_OU}" >/dev/null 2>&1 || log "warning: could not delete ${TEST_OU}"
    fi
    if [[ "${STARTED_DC}" -eq 1 ]]; then
        tests/testbed/samba-ad.sh down >/dev/null 2>&1 || log "warning: samba-ad.sh down failed"
    fi
    [[ -z "${WORK}" ]] || rm -rf "${WORK}"
    if [[ "${rc}" -ne 0 ]]; then
        log "FAILED (exit ${rc})"
    fi
    return "${rc}"
}

# The installed writeback as the service's user, with the packaged config, from /.
as_service() {
    (cd / && env -u WRITEBACK_CONFIG runuser -u writeback -- /usr/bin/writeback "$@")
}

# A query on the state file, as the service's user (the file is its own, and a WAL database
# gets companion files on open).
state_sql() {
    (cd / && runuser -u writeback -- sqlite3 -batch -bail /var/lib/writeback/state.db "$1")
}

# One value of AD's rootDSE, read anonymously (no bind that the DC would record).
root_dse() {
    ldapsearch -x -LLL -o ldif-wrap=no -H "${AD_LDAPS_URL}" -b "" -s base "$1" |
        sed -n "s/^$1: //p"
}

# The attribute values of the groups under the managed OU, one "dn: <DN>|attribute: value" a
# line, sorted; base64 values (a leading space, non-ASCII) stay as LDIF gives them.
ad_groups() {
    ldapsearch "${LDAP[@]}" -LLL -o ldif-wrap=no -b "${GROUPS_OU}" '(objectClass=group)' "$@" |
        awk '/^dn/ { dn = $0; next } NF { print dn "|" $0 }' | sort
}

# The number of groups under the managed OU matching the LDAP filter.
ad_count() {
    ldapsearch "${LDAP[@]}" -LLL -b "${GROUPS_OU}" "(&(objectClass=group)$1)" dn | grep -c '^dn' || true
}

# sync_as_service WHAT [OPTION...]: the installed writeback's sync, its output shown and kept in
# ${WORK}/sync.out; stops the test unless it exits 0.
sync_as_service() {
    local what="$1" rc=0
    shift
    as_service sync "$@" >"${WORK}/sync.out" 2>&1 || rc=$?
    sed 's/^/    | /' "${WORK}/sync.out" >&2
    [[ "${rc}" -eq 0 ]] || die "${what}: writeback sync $* exited ${rc}"
}

main() {
    [[ "$(id -u)" -eq 0 ]] || die "must run as root (dpkg -i, runuser, the test bed)"
    install_packages "${PACKAGES[@]}"
    command -v python3 >/dev/null || die "python3 not found (it fills in the tenant with the users' SIDs)"
    local bin="${WRITEBACK_BIN:-target/debug/writeback}"
    local emu="${GRAPH_EMULATOR_BIN:-target/debug/graph-emulator}"
    local arch
    arch="$(dpkg --print-architecture)"
    local old_deb="${WRITEBACK_PREVIOUS_DEB:-${HERE}/writeback_${PREVIOUS_VERSION}_${arch}.deb}"
    [[ -x "${bin}" ]] || die "no writeback binary at ${bin}: cargo build -p writeback --features kerberos, or set WRITEBACK_BIN"
    [[ -x "${emu}" ]] || die "no Graph emulator at ${emu}: cargo build -p graph-emulator, or set GRAPH_EMULATOR_BIN"
    [[ -f "${old_deb}" ]] ||
        die "no package of the previous release at ${old_deb}: tests/upgrade/build-previous-deb.sh v${PREVIOUS_VERSION} builds it (or set WRITEBACK_PREVIOUS_DEB)"
    local schema
    schema="$(sed -n 's/^const MIGRATIONS: &\[&str\] = &\[\(.*\)\];$/\1/p' host/src/state/schema.rs | tr ',' '\n' | grep -c 'V[0-9]')" ||
        die "cannot read the schema version from host/src/state/schema.rs (const MIGRATIONS)"

    require_clean_machine
    # A purge leaves the files an admin added to /etc/writeback, and deletes /var/lib/writeback
    # whoever made it: neither may be there before.
    local d
    for d in /etc/writeback /var/lib/writeback; do
        [[ ! -e "${d}" ]] || die "${d} is on this machine without a writeback package (left from an earlier install?): the test would add to it and delete it; move it away first"
    done
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM HUP
    WORK="$(mktemp -d)"

    log "building the new package from ${bin}"
    local new_deb new_version
    new_deb="$(WRITEBACK_DEB_DIR="${WORK}" packaging/build-deb.sh "${bin}")"
    new_version="$(dpkg-deb -f "${new_deb}" Version)"
    check "the previous package is ${PREVIOUS_VERSION}" \
        test "$(dpkg-deb -f "${old_deb}" Version)" = "${PREVIOUS_VERSION}"
    check "the new package (${new_version}) is newer than ${PREVIOUS_VERSION}" \
        dpkg --compare-versions "${new_version}" gt "${PREVIOUS_VERSION}"

    # The test bed: the running one, or one of our own.
    if ! tests/testbed/samba-ad.sh status >/dev/null; then
        STARTED_DC=1
    fi
    tests/testbed/samba-ad.sh up >/dev/null
    # shellcheck disable=SC1090
    source <(tests/testbed/samba-ad.sh env)
    export LDAPTLS_CACERT="${AD_CA_FILE}" LDAPTLS_REQCERT=demand
    LDAP=(-H "${AD_LDAPS_URL}" -x -D "${AD_BIND_DN}" -w "${AD_BIND_PASSWORD}")
    TEST_OU="OU=Upgrade Test,${AD_BASE_DN}"
    GROUPS_OU="OU=Groups,${TEST_OU}"
    ldapdelete "${LDAP[@]}" -r "${TEST_OU}" >/dev/null 2>&1 || true
    AD_READY=1
    sed "s/DC=corp,DC=example,DC=test/${AD_BASE_DN}/" "${HERE}/ad.ldif" | ldapadd "${LDAP[@]}" >/dev/null ||
        die "ldapadd of tests/upgrade/ad.ldif failed"

    # The Graph emulator, seeded with the tenant, its users filled in with their SIDs from AD.
    ldapsearch "${LDAP[@]}" -LLL -b "OU=Users,${TEST_OU}" '(objectClass=user)' \
        sAMAccountName objectSid objectGUID |
        examples/demo/fill_tenant.py "${HERE}/tenant.template.json" >"${WORK}/tenant.json"
    "${emu}" serve --listen 127.0.0.1:0 --tenant "${WORK}/tenant.json" \
        >"${WORK}/emulator.out" 2>"${WORK}/emulator.log" &
    EMU_PID=$!
    local graph_base="" i
    for ((i = 0; i < 100; i++)); do
        graph_base="$(head -n1 "${WORK}/emulator.out" 2>/dev/null || true)"
        [[ -z "${graph_base}" ]] || break
        kill -0 "${EMU_PID}" 2>/dev/null || break
        sleep 0.1
    done
    if [[ "${graph_base}" != http* ]]; then
        cat "${WORK}/emulator.log" >&2
        die "the Graph emulator (${emu}) did not print its URL"
    fi
    log "Graph emulator at ${graph_base} (PID ${EMU_PID}), test bed at ${AD_LDAPS_URL}"

    # 1. The previous release, installed, configured by hand, run.
    PURGE_ON_EXIT=1
    log "dpkg -i ${old_deb}"
    dpkg -i "${old_deb}" >/dev/null </dev/null || die "dpkg -i of the previous release's package failed"
    check "the installed binary is ${PREVIOUS_VERSION}" \
        bash -c '/usr/bin/writeback --version | grep -qx "writeback $1\( (kerberos)\)\?"' _ "${PREVIOUS_VERSION}"

    # The config, filled in for the test bed (the file keeps the package's owner and mode).
    cat >/etc/writeback/writeback.toml <<EOF
# Filled in by tests/upgrade/run.sh: the test bed and its Graph emulator.
[graph]
tenant_id = "${TENANT_ID}"
client_id = "${CLIENT_ID}"
client_secret_file = "/etc/writeback/graph-client-secret"
graph_url = "${graph_base}/v1.0"
token_url = "${graph_base}/${TENANT_ID}/oauth2/v2.0/token"

[ad]
url = "${AD_LDAPS_URL}"
bind_dn = "${AD_BIND_DN}"
password_file = "/etc/writeback/ad-password"
ca_file = "/etc/writeback/testbed-ca.pem"
managed_ous = ["${GROUPS_OU}"]

[members]
user_match = "sid"

[rules]
folder = "/etc/writeback/rules"

[rules.settings]
m365_container = "OU=Microsoft 365,${GROUPS_OU}"
security_container = "OU=Security,${GROUPS_OU}"

[state]
path = "/var/lib/writeback/state.db"
EOF
    install -m 0640 -o root -g writeback /dev/null /etc/writeback/graph-client-secret
    printf '%s\n' "${CLIENT_SECRET}" >/etc/writeback/graph-client-secret
    install -m 0640 -o root -g writeback /dev/null /etc/writeback/ad-password
    printf '%s\n' "${AD_BIND_PASSWORD}" >/etc/writeback/ad-password
    install -m 0644 "${AD_CA_FILE}" /etc/writeback/testbed-ca.pem
    check "the filled-in config is 640 root writeback" config_mode_ok

    # The rule edit (a conffile the admin changed): an attribute that shows in AD.
    sed -i "s|^\( *\)displayName: group.displayName,$|&\n\1info: \"${RULE_INFO}\",|" "${RULE}"
    check "the rule edit is in ${RULE}" grep -qF "info: \"${RULE_INFO}\"," "${RULE}"
    cp -p /etc/writeback/writeback.toml "${WORK}/writeback.toml.before"
    cp -p "${RULE}" "${WORK}/rule.before"

    log "writeback ${PREVIOUS_VERSION}: sync as the service user"
    sync_as_service "the previous release's first sync"
    check "the previous release wrote the 4 groups" test "$(ad_count '(msDS-ExternalDirectoryObjectId=Group_*)')" -eq 4
    check "the rule edit shows in AD (info on the 3 security groups)" \
        test "$(ad_count "(info=${RULE_INFO})")" -eq 3
    sync_as_service "the previous release's second sync"
    check "the previous release's second sync wrote nothing" \
        grep -qF 'No changes: AD is in step with the cloud.' "${WORK}/sync.out"
    ad_groups '*' >"${WORK}/ad.before"

    local old_schema old_anchors old_runs
    old_schema="$(state_sql 'PRAGMA user_version')"
    # Cloud id and AD object: a compare after the upgrade records a DN as AD spells it (its own
    # escaping), and the AD check below already holds every DN to what it was.
    old_anchors="$(state_sql 'SELECT cloud_id, object_guid FROM anchor ORDER BY cloud_id')"
    old_runs="$(state_sql 'SELECT count(*) FROM run')"
    check "the previous release's state is at schema version ${PREVIOUS_SCHEMA}" \
        test "${old_schema}" = "${PREVIOUS_SCHEMA}"
    check "the previous release recorded 4 anchors" test "$(wc -l <<<"${old_anchors}")" -eq 4

    # 2. The upgrade. The edited conffiles are kept without asking (--force-confold; dpkg would
    # ask only for a conffile that both the admin and the new package changed).
    log "dpkg -i --force-confold ${new_deb}"
    dpkg -i --force-confold "${new_deb}" </dev/null >"${WORK}/dpkg.out" 2>&1 || {
        cat "${WORK}/dpkg.out" >&2
        die "dpkg -i of the new package over ${PREVIOUS_VERSION} failed"
    }
    check "the package is ${new_version}, installed" \
        test "$(dpkg-query -W -f='${Version} ${Status}' writeback)" = "${new_version} install ok installed"
    check "the installed binary is ${new_version}" \
        bash -c '/usr/bin/writeback --version | grep -qx "writeback $1\( (kerberos)\)\?"' _ "${new_version}"

    # 3. What survived.
    check "the edited config survived the upgrade" cmp -s "${WORK}/writeback.toml.before" /etc/writeback/writeback.toml
    check "the config is still 640 root writeback" config_mode_ok
    check "the rule edit survived the upgrade" cmp -s "${WORK}/rule.before" "${RULE}"
    check "the rule left alone is the new package's" \
        cmp -s scripts/10-microsoft-365.rhai /etc/writeback/rules/10-microsoft-365.rhai
    # An edited conffile that the new package changed too: dpkg kept the admin's and left the
    # package's beside it (<file>.dpkg-dist); one the package did not change gets no such file.
    dpkg-deb -x "${old_deb}" "${WORK}/old-tree"
    dpkg-deb -x "${new_deb}" "${WORK}/new-tree"
    local f
    for f in /etc/writeback/writeback.toml "${RULE}"; do
        if cmp -s "${WORK}/old-tree${f}" "${WORK}/new-tree${f}"; then
            check "no ${f}.dpkg-dist (the new package did not change ${f})" test ! -e "${f}.dpkg-dist"
        else
            check "${f}.dpkg-dist is the new package's version (it changed ${f})" \
                cmp -s "${WORK}/new-tree${f}" "${f}.dpkg-dist"
        fi
    done
    for f in stdlib/*.rhai; do
        check "the stdlib's $(basename "${f}") is the new package's" cmp -s "${f}" "/usr/share/writeback/${f}"
    done
    for f in "${ADDED_FILES[@]}"; do
        check "${f} (added by the admin) survived the upgrade" test -s "${f}"
    done
    check "the state is untouched by the upgrade (schema version ${PREVIOUS_SCHEMA})" \
        test "$(state_sql 'PRAGMA user_version')" = "${PREVIOUS_SCHEMA}"
    check "the new release's config check passes" as_service check

    # The new release's plan and its first sync: nothing to write.
    local out rc=0
    out="$(as_service plan 2>&1)" || rc=$?
    sed 's/^/    | /' <<<"${out}" >&2
    [[ "${rc}" -eq 0 ]] || die "writeback plan after the upgrade exited ${rc}"
    check "the plan after the upgrade changes nothing" grep -qF 'No changes: AD is in step with the cloud.' <<<"${out}"
    check "the plan left the state as it was (schema version ${PREVIOUS_SCHEMA})" \
        test "$(state_sql 'PRAGMA user_version')" = "${PREVIOUS_SCHEMA}"

    local usn_before usn_after
    usn_before="$(root_dse highestCommittedUSN)"
    [[ "${usn_before}" =~ ^[0-9]+$ ]] || die "cannot read highestCommittedUSN from ${AD_LDAPS_URL} (got '${usn_before}')"
    log "writeback ${new_version}: the first sync after the upgrade (highestCommittedUSN ${usn_before})"
    sync_as_service "the first sync after the upgrade"
    usn_after="$(root_dse highestCommittedUSN)"
    check "the first sync after the upgrade reports no changes" \
        grep -qF 'No changes: AD is in step with the cloud.' "${WORK}/sync.out"
    check "the first sync after the upgrade wrote nothing to AD (highestCommittedUSN ${usn_before} -> ${usn_after})" \
        test "${usn_after}" = "${usn_before}"
    ad_groups '*' >"${WORK}/ad.after"
    check "the groups in AD are as the previous release left them" cmp -s "${WORK}/ad.before" "${WORK}/ad.after"
    check "the state migrated to schema version ${schema}" test "$(state_sql 'PRAGMA user_version')" = "${schema}"
    check "the anchors survived the upgrade" \
        test "$(state_sql 'SELECT cloud_id, object_guid FROM anchor ORDER BY cloud_id')" = "${old_anchors}"
    check "the run history survived the upgrade (${old_runs} runs, and the new one)" \
        test "$(state_sql 'SELECT count(*) FROM run')" -eq "$((old_runs + 1))"
    check "writeback status reads the migrated state" as_service status

    # The first sync had nothing to look at (no cloud change, the same rules). The daemon's
    # reconciliation compares every owned group: what the new release makes of each group must
    # be what the previous one wrote.
    log "writeback ${new_version}: sync --full, every owned group compared"
    usn_before="$(root_dse highestCommittedUSN)"
    sync_as_service "the full sync after the upgrade" --full
    usn_after="$(root_dse highestCommittedUSN)"
    check "sync --full compared the 4 groups" grep -qF 'in the 4 groups compared' "${WORK}/sync.out"
    check "sync --full after the upgrade reports no changes" \
        grep -qF 'No changes: AD is in step with the cloud.' "${WORK}/sync.out"
    check "sync --full after the upgrade wrote nothing to AD (highestCommittedUSN ${usn_before} -> ${usn_after})" \
        test "${usn_after}" = "${usn_before}"

    # The migrated state still works: a rename in the cloud arrives in AD.
    local token
    token="$(curl -sSf "${graph_base}/${TENANT_ID}/oauth2/v2.0/token" \
        -d "client_id=${CLIENT_ID}" -d "client_secret=${CLIENT_SECRET}" \
        -d scope=https://graph.microsoft.com/.default -d grant_type=client_credentials |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')" ||
        die "no token from the emulator"
    curl -sSf -X PATCH -H "Authorization: Bearer ${token}" -H 'Content-Type: application/json' \
        --data '{"displayName": "Upgrade Auditors, renamed after the upgrade"}' \
        "${graph_base}/v1.0/groups/d4000000-0000-4000-8000-00000000b002" >/dev/null ||
        die "the rename through the emulator's Graph API failed"
    usn_before="$(root_dse highestCommittedUSN)"
    sync_as_service "the sync of a cloud rename after the upgrade"
    usn_after="$(root_dse highestCommittedUSN)"
    check "the cloud rename arrived in AD" \
        test "$(ad_count '(displayName=Upgrade Auditors, renamed after the upgrade)')" -eq 1
    check "highestCommittedUSN moves when the sync writes (${usn_before} -> ${usn_after})" \
        test "${usn_after}" -gt "${usn_before}"
    check "the rule edit still shows in AD" test "$(ad_count "(info=${RULE_INFO})")" -eq 3

    # 4. Purge: the state and the config go.
    log "dpkg --purge writeback"
    dpkg --purge writeback >/dev/null
    PURGE_ON_EXIT=0
    check "state purged" test ! -e /var/lib/writeback
    check "config purged" test ! -e /etc/writeback/writeback.toml
    cleanup
    trap - EXIT
    check "/etc/writeback is gone (the purge took the package's files, .dpkg-dist included)" \
        test ! -e /etc/writeback
    if [[ "${HAD_ACCOUNT}" -eq 0 ]]; then
        check "the package's account is gone" bash -c '! getent passwd writeback && ! getent group writeback'
    fi
    log "upgrade test passed: ${PREVIOUS_VERSION} -> ${new_version}"
}

main "$@"
