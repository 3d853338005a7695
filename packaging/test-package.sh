#!/usr/bin/env bash
# The package test (a step of tests/run-tests.sh): builds the Debian package from a built
# binary, installs it on this machine, verifies the systemd unit, runs the installed
# `writeback check` and `writeback test` on the packaged config and rules as the service user,
# removes the package (state and edited config stay), then purges it (both go).
#
#   packaging/test-package.sh            install what it needs (root, apt-get), then the test
#   packaging/test-package.sh install    only install what it needs
#
#   WRITEBACK_BIN   the binary to package (default target/debug/writeback: the debug build
#                   saves a release build)
#
# Refuses to run when a writeback package is installed already: it would replace it. The
# package is purged at the end, also when a check fails, so a rerun starts clean.
set -euo pipefail

readonly PACKAGES=(dpkg-dev binutils gzip adduser init-system-helpers systemd man-db util-linux)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"

log() { printf 'test-package: %s\n' "$*" >&2; }
die() {
    printf 'test-package: error: %s\n' "$*" >&2
    exit 1
}

missing_packages() {
    local p status
    for p in "${PACKAGES[@]}"; do
        status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
        [[ "${status}" == "install ok installed" ]] || printf '%s\n' "$p"
    done
}

# As tests/testbed/samba-ad.sh install: apt-get only for what is missing, `apt-get update`
# only when a package has no install candidate.
cmd_install() {
    [[ "$(id -u)" -eq 0 ]] || die "must run as root (apt-get, dpkg -i)"
    local missing p need_update=0
    missing="$(missing_packages)"
    if [[ -z "${missing}" ]]; then
        log "packages already installed: ${PACKAGES[*]}"
        return 0
    fi
    log "installing: $(echo "${missing}" | tr '\n' ' ')"
    export DEBIAN_FRONTEND=noninteractive
    for p in ${missing}; do
        if ! apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [^(]'; then
            need_update=1
        fi
    done
    [[ "${need_update}" -eq 0 ]] || apt-get update
    # shellcheck disable=SC2086 # one word per package
    if ! apt-get install -y --no-install-recommends ${missing}; then
        apt-get update
        # shellcheck disable=SC2086
        apt-get install -y --no-install-recommends ${missing}
    fi
    missing="$(missing_packages)"
    [[ -z "${missing}" ]] || die "still missing after apt-get install: ${missing}"
}

# Installed, or removed with its config files left.
installed() {
    dpkg-query -W -f='${Status}\n' writeback 2>/dev/null | grep -Eq ' (installed|config-files)$'
}

check() {
    local what="$1"
    shift
    if "$@"; then
        log "ok: ${what}"
    else
        die "${what}"
    fi
}

cmd_test() {
    cmd_install
    if installed; then
        die "a writeback package is on this machine already ($(dpkg-query -W -f='${Status}' writeback)); the test would replace it: dpkg --purge writeback first"
    fi
    local bin="${WRITEBACK_BIN:-target/debug/writeback}"
    local deb
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
    for f in ./usr/bin/writeback ./lib/systemd/system/writeback.service \
        ./usr/share/writeback/stdlib/naming.rhai ./usr/share/man/man1/writeback.1.gz \
        ./usr/share/man/man1/writeback-run.1.gz ./usr/share/bash-completion/completions/writeback \
        ./usr/share/zsh/vendor-completions/_writeback \
        ./usr/share/fish/vendor_completions.d/writeback.fish \
        ./usr/share/doc/writeback/OPERATIONS.md ./usr/share/writeback/delegate-samba.sh; do
        check "package holds ${f}" grep -q " ${f}\( \|$\)" <<<"${contents}"
    done

    trap 'log "purging the package"; dpkg --purge writeback >/dev/null 2>&1 || true' EXIT
    log "dpkg -i ${deb}"
    dpkg -i "${deb}"

    check "system user writeback" bash -c 'getent passwd writeback | grep -q ":/usr/sbin/nologin$"'
    check "writeback is a system user" bash -c '[[ $(id -u writeback) -lt 1000 ]]'
    check "state dir /var/lib/writeback owned by writeback" \
        bash -c '[[ $(stat -c %U:%G:%a /var/lib/writeback) == writeback:writeback:750 ]]'
    check "the stdlib is where the binary looks (beside the rules folder)" \
        test -f /etc/writeback/stdlib/naming.rhai
    check "man writeback" bash -c 'man -w writeback | grep -q /usr/share/man/man1/writeback.1.gz'
    check "bash completion parses" bash -n /usr/share/bash-completion/completions/writeback
    check "delegate-samba.sh is executable and parses" \
        bash -c 'test -x /usr/share/writeback/delegate-samba.sh && bash -n /usr/share/writeback/delegate-samba.sh'

    local version
    version="$(dpkg-query -W -f='${Version}' writeback)"
    check "writeback --version is the package's (${version})" \
        bash -c '/usr/bin/writeback --version | grep -qx "writeback $1"' _ "${version}"

    # The unit as systemd reads it: unknown keys, bad values, a missing binary or man page.
    local out rc=0
    out="$(systemd-analyze verify /lib/systemd/system/writeback.service 2>&1)" || rc=$?
    if [[ "${rc}" -ne 0 || -n "${out}" ]]; then
        printf '%s\n' "${out}" >&2
        die "systemd-analyze verify writeback.service failed (exit ${rc})"
    fi
    log "ok: systemd-analyze verify writeback.service"
    # The hardening stays: systemd's exposure score (0-100 here; 11 when written) at most 20.
    out="$(systemd-analyze security --offline=true --threshold=20 /lib/systemd/system/writeback.service 2>&1)" || {
        printf '%s\n' "${out}" >&2
        die "systemd-analyze security: the unit's exposure rose above the threshold"
    }
    log "ok: systemd-analyze security: $(grep -o 'Overall exposure level.*' <<<"${out}")"

    # The installed binary on the packaged config and rules, as the service's user.
    check "writeback check on the packaged config" \
        env -u WRITEBACK_CONFIG runuser -u writeback -- /usr/bin/writeback check
    check "writeback test on the packaged rules" \
        env -u WRITEBACK_CONFIG runuser -u writeback -- /usr/bin/writeback test

    # Remove: the binary and the unit go; the edited config, the rules and the state stay.
    printf '\n# edited by test-package.sh\n' >>/etc/writeback/writeback.toml
    runuser -u writeback -- sh -c 'echo kept >/var/lib/writeback/state.marker'
    log "dpkg -r writeback"
    dpkg -r writeback
    check "binary removed" test ! -e /usr/bin/writeback
    check "unit removed" test ! -e /lib/systemd/system/writeback.service
    check "package left as config-files" \
        bash -c '[[ $(dpkg-query -W -f="\${Status}" writeback) == "deinstall ok config-files" ]]'
    check "edited conffile kept" grep -q '^# edited by test-package.sh$' /etc/writeback/writeback.toml
    check "default rules kept" test -f /etc/writeback/rules/20-security.rhai
    check "state dir kept" grep -qx kept /var/lib/writeback/state.marker

    # Purge: config, state and systemd's leftovers go.
    log "dpkg --purge writeback"
    dpkg --purge writeback
    trap - EXIT
    check "config purged" test ! -e /etc/writeback/writeback.toml
    check "rules purged" test ! -e /etc/writeback/rules/20-security.rhai
    check "state purged" test ! -e /var/lib/writeback
    check "no mask left for the unit" test ! -L /etc/systemd/system/writeback.service
    check "package gone" bash -c '! dpkg-query -W -f="\${Status}" writeback 2>/dev/null | grep -q installed'
    log "package test passed"
}

case "${1:-test}" in
    install) cmd_install ;;
    test) cmd_test ;;
    *) die "usage: $0 [install|test]" ;;
esac
