#!/usr/bin/env bash
# The package test (a step of tests/run-tests.sh): builds the Debian package from a built
# binary, installs it on this machine, verifies the systemd unit, runs the installed
# `writeback check` and `writeback test` on the packaged config and rules as the service user,
# removes the package (state and edited config stay), then purges it (both go). Before that,
# postinst must refuse a `writeback` account that is a login user, and the installed
# delegate-samba.sh is run against stand-ins for the Samba tools (no DC needed).
#
#   packaging/test-package.sh            install what it needs (root, apt-get), then the test
#   packaging/test-package.sh install    only install what it needs
#
#   WRITEBACK_BIN   the binary to package (default target/debug/writeback: the debug build
#                   saves a release build)
#
# Refuses to run when a writeback package is installed already: it would replace it. The
# package is purged at the end, also when a check fails, and the accounts the test created are
# deleted again (a writeback account that was there before is left as it was), so a rerun starts
# clean.
set -euo pipefail

readonly PACKAGES=(dpkg-dev binutils gzip adduser init-system-helpers systemd man-db util-linux)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"

TEST_NAME=test-package
# shellcheck source=packaging/package-test-lib.sh
. "${ROOT}/packaging/package-test-lib.sh"

cmd_install() { install_packages "${PACKAGES[@]}"; }

# What the test changed on this machine; cleanup undoes it whatever happens.
PURGE_ON_EXIT=0   # a writeback package, maybe half-installed, is on the machine
REMOVE_ACCOUNT="" # the writeback account is the test's: "home" (a stand-in with a home), "plain"
RESTORE_SHELL=""  # the shell of a writeback account that was there before, changed for a while
FAKE=""           # stand-ins for ldbsearch and samba-tool

cleanup() {
    if [[ "${PURGE_ON_EXIT}" -eq 1 ]]; then
        log "purging the package"
        dpkg --purge writeback >/dev/null 2>&1 || true
    fi
    if [[ -n "${RESTORE_SHELL}" ]]; then
        usermod -s "${RESTORE_SHELL}" writeback >/dev/null 2>&1 ||
            log "warning: could not give the account writeback its shell ${RESTORE_SHELL} back"
    fi
    if [[ -n "${REMOVE_ACCOUNT}" ]]; then
        remove_account "${REMOVE_ACCOUNT}" || log "warning: could not delete the account writeback the test created"
    fi
    if [[ -n "${FAKE}" ]]; then
        rm -rf "${FAKE}"
    fi
    PURGE_ON_EXIT=0 RESTORE_SHELL="" REMOVE_ACCOUNT="" FAKE=""
}

# dpkg -i with a writeback account the package must not run as: postinst refuses with a message
# naming the account, and the half-installed package is purged again.
expect_refusal() {
    local deb="$1" what="$2" out rc=0
    PURGE_ON_EXIT=1
    out="$(dpkg -i "${deb}" 2>&1)" || rc=$?
    if [[ "${rc}" -eq 0 ]]; then
        printf '%s\n' "${out}" >&2
        die "dpkg -i accepted an existing writeback account that ${what}"
    fi
    if ! grep -qF 'existing account "writeback"' <<<"${out}"; then
        printf '%s\n' "${out}" >&2
        die "dpkg -i failed (exit ${rc}) without postinst's message naming the account \"writeback\" (an account that ${what})"
    fi
    log "ok: postinst refuses an existing writeback account that ${what}"
    dpkg --purge writeback >/dev/null || die "dpkg --purge of the half-installed package failed"
    PURGE_ON_EXIT=0
    if installed; then
        die "the refused package is still on the machine after dpkg --purge"
    fi
}

# Stand-ins for the Samba tools delegate-samba.sh calls: ldbsearch answers like a DC on which
# the account matches FAKE_MATCHES objects and the schema has the attribute cn; every call is
# recorded, samba-tool's arguments too.
make_fake_samba() {
    FAKE="$(mktemp -d)"
    mkdir "${FAKE}/bin"
    cat >"${FAKE}/bin/ldbsearch" <<'EOF'
#!/usr/bin/env bash
touch "${FAKE_DIR}/ldbsearch.called"
case "$*" in
    *'(sAMAccountName='*)
        for ((i = 1; i <= FAKE_MATCHES; i++)); do
            printf '# record %d\ndn: CN=svc%d,CN=Users,DC=t\nobjectSid: S-1-5-21-1-2-3-%d\n\n' "$i" "$i" "$((1100 + i))"
        done ;;
    *schemaNamingContext*)
        printf '# record 1\ndn: \nschemaNamingContext: CN=Schema,CN=Configuration,DC=t\n\n' ;;
    *lDAPDisplayName*)
        printf '# record 1\ndn: CN=Common-Name,CN=Schema,CN=Configuration,DC=t\nlDAPDisplayName: cn\nschemaIDGUID: bf96793f-0de6-11d0-a285-00aa003049e2\n\n' ;;
esac
EOF
    cat >"${FAKE}/bin/samba-tool" <<'EOF'
#!/usr/bin/env bash
printf '%s\n' "$@" >"${FAKE_DIR}/samba-tool.args"
EOF
    chmod 0755 "${FAKE}/bin/ldbsearch" "${FAKE}/bin/samba-tool"
}

# The installed delegate-samba.sh on the stand-ins, with MATCHES objects for the account and the
# remaining arguments after the OU; its output in ${FAKE}/out.
run_delegate() {
    local matches="$1"
    shift
    rm -f "${FAKE}/ldbsearch.called" "${FAKE}/samba-tool.args"
    FAKE_DIR="${FAKE}" FAKE_MATCHES="${matches}" PATH="${FAKE}/bin:${PATH}" \
        /usr/share/writeback/delegate-samba.sh -H "${FAKE}/sam.ldb" "OU=Cloud Groups,DC=t" "$@" \
        >"${FAKE}/out" 2>&1
}

# The account name is refused with a message, before the DC's database is searched.
# build-deb.sh refuses a binary that cannot bind with Kerberos ($1: the real binary, for its
# writeback-docs), naming the feature to build with.
build_deb_refuses_simple_binds() {
    local fake out rc=0
    fake="$(mktemp -d)"
    printf '#!/bin/sh\necho "writeback 0.0.0"\n' >"${fake}/writeback"
    chmod 0755 "${fake}/writeback"
    out="$(WRITEBACK_DOCS_BIN="$(dirname "$1")/writeback-docs" WRITEBACK_DEB_DIR="${fake}" \
        packaging/build-deb.sh "${fake}/writeback" 2>&1)" || rc=$?
    rm -rf "${fake}"
    [[ "${rc}" -ne 0 ]] && grep -q -- "--features kerberos" <<<"${out}"
}

delegate_refuses_name() {
    local name="$1" rc=0
    run_delegate 1 "${name}" cn || rc=$?
    if [[ "${rc}" -ne 0 ]] && grep -qF "invalid sAMAccountName '${name}'" "${FAKE}/out" &&
        [[ ! -e "${FAKE}/ldbsearch.called" && ! -e "${FAKE}/samba-tool.args" ]]; then
        return 0
    fi
    log "exit ${rc}, output:"
    cat "${FAKE}/out" >&2
    return 1
}

# With MATCHES (not 1) objects for the account the script stops before setting any ACE.
delegate_refuses_count() {
    local matches="$1" rc=0
    run_delegate "${matches}" svc-writeback cn || rc=$?
    if [[ "${rc}" -ne 0 ]] && grep -qF "matches ${matches} objects" "${FAKE}/out" &&
        [[ ! -e "${FAKE}/samba-tool.args" ]]; then
        return 0
    fi
    log "exit ${rc}, output:"
    cat "${FAKE}/out" >&2
    return 1
}

# With exactly one match it sets the ACEs, the OWNER RIGHTS one among them.
delegate_sets_aces() {
    local rc=0 sddl group=bf967a9c-0de6-11d0-a285-00aa003049e2 sid=S-1-5-21-1-2-3-1101
    run_delegate 1 svc-writeback cn || rc=$?
    sddl="$(sed -n 's/^--sddl=//p' "${FAKE}/samba-tool.args" 2>/dev/null || true)"
    if [[ "${rc}" -eq 0 ]] &&
        [[ "${sddl}" == *"(OA;CI;CCDC;${group};;${sid})"* ]] &&
        [[ "${sddl}" == *"(OA;CIIO;RPWP;bf96793f-0de6-11d0-a285-00aa003049e2;${group};${sid})"* ]] &&
        [[ "${sddl}" == *"(OA;CIIO;RC;;${group};S-1-3-4)"* ]]; then
        return 0
    fi
    log "exit ${rc}, SDDL: ${sddl:-none}, output:"
    cat "${FAKE}/out" >&2
    return 1
}

cmd_test() {
    cmd_install
    require_clean_machine
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM HUP
    local bin="${WRITEBACK_BIN:-target/debug/writeback}"
    local deb
    check "build-deb.sh refuses a binary without Kerberos binds" build_deb_refuses_simple_binds "${bin}"
    deb="$(packaging/build-deb.sh "${bin}")"
    log "built ${deb}"

    # What the archive holds: conffiles are the config and the rules, nothing else.
    local conffiles contents
    conffiles="$(dpkg-deb --ctrl-tarfile "${deb}" | tar -xO ./conffiles)"
    contents="$(dpkg-deb --contents "${deb}")"
    for f in /etc/writeback/writeback.toml /etc/writeback/rules/10-microsoft-365.rhai \
        /etc/writeback/rules/20-security.rhai /etc/writeback/rules/tests/security.toml; do
        check "conffile ${f}" grep -qx "${f}" <<<"${conffiles}"
    done
    check "only /etc files are conffiles" bash -c '! grep -v "^/etc/writeback/" <<<"$1"' _ "${conffiles}"
    check "the config is not world-readable in the archive" \
        grep -Eq '^-rw-r----- root/root .* \./etc/writeback/writeback\.toml$' <<<"${contents}"
    for f in ./usr/bin/writeback ./lib/systemd/system/writeback.service \
        ./usr/share/writeback/stdlib/naming.rhai ./usr/share/man/man1/writeback.1.gz \
        ./usr/share/man/man1/writeback-run.1.gz ./usr/share/bash-completion/completions/writeback \
        ./usr/share/zsh/vendor-completions/_writeback \
        ./usr/share/fish/vendor_completions.d/writeback.fish \
        ./usr/share/doc/writeback/OPERATIONS.md ./usr/share/writeback/delegate-samba.sh \
        ./usr/share/writeback/monitoring/writeback-alerts.yml \
        ./usr/share/writeback/monitoring/writeback-dashboard.json; do
        check "package holds ${f}" grep -q " ${f}\( \|$\)" <<<"${contents}"
    done

    # postinst refuses a writeback account that is not what it creates. A machine without one
    # gets stand-ins (deleted again); an existing (system) account gets a login shell for a while.
    if [[ "${HAD_ACCOUNT}" -eq 0 ]]; then
        useradd -m -s /bin/bash writeback
        REMOVE_ACCOUNT=home
        expect_refusal "${deb}" "is a login user (uid $(id -u writeback), shell /bin/bash)"
        remove_account home || die "could not delete the stand-in account writeback"
        useradd -r -s /bin/bash writeback
        REMOVE_ACCOUNT=plain
        expect_refusal "${deb}" "is a system account (uid $(id -u writeback)) with the shell /bin/bash"
        remove_account plain || die "could not delete the stand-in account writeback"
        useradd -s /usr/sbin/nologin writeback
        expect_refusal "${deb}" "has no login shell but is not a system account (uid $(id -u writeback))"
        remove_account plain || die "could not delete the stand-in account writeback"
        # From here on the account is the package's system user, deleted at the end.
    else
        RESTORE_SHELL="$(getent passwd writeback | cut -d: -f7)"
        usermod -s /bin/bash writeback
        expect_refusal "${deb}" "has the shell /bin/bash"
        usermod -s "${RESTORE_SHELL}" writeback
        RESTORE_SHELL=""
    fi

    PURGE_ON_EXIT=1
    log "dpkg -i ${deb}"
    dpkg -i "${deb}"

    check "system user writeback" bash -c 'getent passwd writeback | grep -q ":/usr/sbin/nologin$"'
    check "writeback is a system user" bash -c '[[ $(id -u writeback) -lt 1000 ]]'
    check "state dir /var/lib/writeback owned by writeback" \
        bash -c '[[ $(stat -c %U:%G:%a /var/lib/writeback) == writeback:writeback:750 ]]'
    check "config /etc/writeback/writeback.toml is 640 root writeback" config_mode_ok
    check "the stdlib is where the binary looks (beside the rules folder)" \
        test -f /etc/writeback/stdlib/naming.rhai
    check "man writeback" bash -c 'man -w writeback | grep -q /usr/share/man/man1/writeback.1.gz'
    check "bash completion parses" bash -n /usr/share/bash-completion/completions/writeback
    for f in writeback-alerts.yml writeback-dashboard.json; do
        check "monitoring/${f} installed as in the repository" \
            cmp -s "packaging/monitoring/${f}" "/usr/share/writeback/monitoring/${f}"
    done
    check "delegate-samba.sh is executable and parses" \
        bash -c 'test -x /usr/share/writeback/delegate-samba.sh && bash -n /usr/share/writeback/delegate-samba.sh'
    make_fake_samba
    check "delegate-samba.sh refuses the account name 'svc*' before searching" delegate_refuses_name 'svc*'
    check "delegate-samba.sh refuses the account name 'a)(b' before searching" delegate_refuses_name 'a)(b'
    check "delegate-samba.sh refuses an account name matching 2 objects" delegate_refuses_count 2
    check "delegate-samba.sh refuses an account name matching no object" delegate_refuses_count 0
    check "delegate-samba.sh sets the ACEs, OWNER RIGHTS (read control only) on groups among them" \
        delegate_sets_aces

    local version
    version="$(dpkg-query -W -f='${Version}' writeback)"
    check "writeback --version is the package's (${version}) and binds with Kerberos" \
        bash -c '/usr/bin/writeback --version | grep -qx "writeback $1 (kerberos)"' _ "${version}"
    check "the package depends on MIT Kerberos' GSSAPI library" \
        bash -c 'dpkg-query -W -f="\${Depends}" writeback | grep -q "libgssapi-krb5-2"'

    # The unit as systemd reads it: unknown keys, bad values, a missing binary or man page.
    local out rc=0
    out="$(systemd-analyze verify /lib/systemd/system/writeback.service 2>&1)" || rc=$?
    if [[ "${rc}" -ne 0 || -n "${out}" ]]; then
        printf '%s\n' "${out}" >&2
        die "systemd-analyze verify writeback.service failed (exit ${rc})"
    fi
    log "ok: systemd-analyze verify writeback.service"
    check "unit: no core dumps (LimitCORE=0)" grep -qx 'LimitCORE=0' /lib/systemd/system/writeback.service
    check "unit: link-local addresses denied (cloud metadata endpoints)" \
        grep -qx 'IPAddressDeny=169.254.0.0/16 fe80::/10' /lib/systemd/system/writeback.service
    # The hardening stays: systemd's exposure score (0-100 here; 11 when written) at most 20.
    out="$(systemd-analyze security --offline=true --threshold=20 /lib/systemd/system/writeback.service 2>&1)" || {
        printf '%s\n' "${out}" >&2
        die "systemd-analyze security: the unit's exposure rose above the threshold"
    }
    log "ok: systemd-analyze security: $(grep -o 'Overall exposure level.*' <<<"${out}")"

    # The installed binary on the packaged config and rules, as the service's user. The config
    # is a template: check fails and names each piece to fill in.
    local out key
    if out="$(env -u WRITEBACK_CONFIG runuser -u writeback -- /usr/bin/writeback check 2>&1)"; then
        die "writeback check passed the untouched template: ${out}"
    fi
    for key in graph.tenant_id graph.client_id graph.client_secret_file ad.url ad.bind_dn \
        ad.password_file 'ad.managed_ous[0]' rules.settings.m365_container; do
        grep -qF "\`${key}\`" <<<"${out}" || die "writeback check does not name ${key}: ${out}"
    done
    log "ok: writeback check names every placeholder and missing secret of the packaged config"
    # Filled in, with its secret files readable by the service only, it passes.
    cp -p /etc/writeback/writeback.toml /etc/writeback/writeback.toml.orig
    sed -i -e 's/00000000-0000-0000-0000-000000000000/5e1f0c2a-6b3d-4a8e-9c71-0d2b4f6a8c10/' \
        -e 's/example\.com/corp.contoso.test/; s/DC=example,DC=com/DC=corp,DC=contoso,DC=test/g' \
        /etc/writeback/writeback.toml
    for f in graph-client-secret ad-password; do
        printf 'not-a-real-secret\n' >"/etc/writeback/${f}"
        chown root:writeback "/etc/writeback/${f}"
        chmod 0640 "/etc/writeback/${f}"
    done
    check "writeback check on the filled-in config" \
        env -u WRITEBACK_CONFIG runuser -u writeback -- /usr/bin/writeback check
    mv /etc/writeback/writeback.toml.orig /etc/writeback/writeback.toml
    rm -f /etc/writeback/graph-client-secret /etc/writeback/ad-password
    check "writeback test on the packaged rules" \
        env -u WRITEBACK_CONFIG runuser -u writeback -- /usr/bin/writeback test

    # Remove: the binary and the unit go; the edited config, the rules and the state stay.
    printf '\n# edited by test-package.sh\n' >>/etc/writeback/writeback.toml
    runuser -u writeback -- sh -c 'echo kept >/var/lib/writeback/state.marker'
    log "dpkg -r writeback"
    dpkg -r writeback
    check "binary removed" test ! -e /usr/bin/writeback
    check "unit removed" test ! -e /lib/systemd/system/writeback.service
    check "monitoring files removed" test ! -e /usr/share/writeback/monitoring
    check "package left as config-files" \
        bash -c '[[ $(dpkg-query -W -f="\${Status}" writeback) == "deinstall ok config-files" ]]'
    check "edited conffile kept" grep -q '^# edited by test-package.sh$' /etc/writeback/writeback.toml
    check "kept config still 640 root writeback" config_mode_ok
    check "default rules kept" test -f /etc/writeback/rules/20-security.rhai
    check "state dir kept" grep -qx kept /var/lib/writeback/state.marker

    # Purge: config, state and systemd's leftovers go.
    log "dpkg --purge writeback"
    dpkg --purge writeback
    PURGE_ON_EXIT=0
    check "config purged" test ! -e /etc/writeback/writeback.toml
    check "rules purged" test ! -e /etc/writeback/rules/20-security.rhai
    check "state purged" test ! -e /var/lib/writeback
    check "no mask left for the unit" test ! -L /etc/systemd/system/writeback.service
    check "package gone" bash -c '! dpkg-query -W -f="\${Status}" writeback 2>/dev/null | grep -q installed'
    check "system user kept after purge" getent passwd writeback
    cleanup
    if [[ "${HAD_ACCOUNT}" -eq 0 ]]; then
        check "the test's accounts are gone" bash -c '! getent passwd writeback && ! getent group writeback'
    fi
    log "package test passed"
}

case "${1:-test}" in
    install) cmd_install ;;
    test) cmd_test ;;
    *) die "usage: $0 [install|test]" ;;
esac
