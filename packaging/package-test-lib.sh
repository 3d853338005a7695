# shellcheck shell=bash
# Shell functions of the tests that install the writeback package on this machine
# (packaging/test-package.sh, tests/upgrade/run.sh). Sourced, not run: the sourcing script sets
# TEST_NAME (the prefix of its messages) and `set -euo pipefail` first.

log() { printf '%s: %s\n' "${TEST_NAME}" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "${TEST_NAME}" "$*" >&2
    exit 1
}

# The packages of the list that are not installed, one a line.
missing_packages() {
    local p status
    for p in "$@"; do
        status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
        [[ "${status}" == "install ok installed" ]] || printf '%s\n' "$p"
    done
}

# Installs the packages of the list that are missing. As tests/testbed/samba-ad.sh install:
# apt-get only for what is missing, `apt-get update` only when a package has no install
# candidate.
install_packages() {
    [[ "$(id -u)" -eq 0 ]] || die "must run as root (apt-get, dpkg -i)"
    local missing p need_update=0
    missing="$(missing_packages "$@")"
    if [[ -z "${missing}" ]]; then
        log "packages already installed: $*"
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
    missing="$(missing_packages "$@")"
    [[ -z "${missing}" ]] || die "still missing after apt-get install: ${missing}"
}

# The writeback package is installed, or removed with its config files left.
installed() {
    dpkg-query -W -f='${Status}\n' writeback 2>/dev/null | grep -Eq ' (installed|config-files)$'
}

# check WHAT COMMAND...: runs the command; logs "ok: WHAT", or stops with WHAT as the error.
check() {
    local what="$1"
    shift
    if "$@"; then
        log "ok: ${what}"
    else
        die "${what}"
    fi
}

# A writeback account the package accepts: a system account (uid 1-999) without a login shell.
acceptable_account() {
    local uid shell
    uid="$(getent passwd writeback | cut -d: -f3)"
    shell="$(getent passwd writeback | cut -d: -f7)"
    [[ "${uid}" -gt 0 && "${uid}" -lt 1000 ]] || return 1
    case "${shell}" in
        /usr/sbin/nologin | /sbin/nologin | /bin/false | /usr/bin/false) return 0 ;;
        *) return 1 ;;
    esac
}

# Refuses a machine the test would change more than it can undo: a writeback package already on
# it (the test would replace it), an account writeback the package refuses, a group writeback
# without its user. Sets HAD_ACCOUNT to 1 when an (acceptable) account writeback was there
# before, which the test must then leave as it was; 0 when the account will be the test's.
require_clean_machine() {
    if installed; then
        die "a writeback package is on this machine already ($(dpkg-query -W -f='${Status}' writeback)); the test would replace it: dpkg --purge writeback first"
    fi
    # shellcheck disable=SC2034 # read by the sourcing script
    HAD_ACCOUNT=0
    if getent passwd writeback >/dev/null; then
        # shellcheck disable=SC2034
        HAD_ACCOUNT=1
        acceptable_account ||
            die "an account writeback that the package refuses (not a system account, or a login shell) is on this machine: $(getent passwd writeback)"
    elif getent group writeback >/dev/null; then
        die "a group writeback without a user writeback is on this machine: the test would take it for its own"
    fi
}

# Deletes the writeback account and group (the test's own only), with the home when asked
# ("home": a stand-in login user's /home/writeback; never the package user's state dir).
remove_account() {
    local opts=()
    [[ "${1:-}" == home ]] && opts=(-r)
    if getent passwd writeback >/dev/null; then
        userdel "${opts[@]}" writeback >/dev/null 2>&1 || true
    fi
    # USERGROUPS_ENAB deletes the user's own group with it; one left over goes too.
    if getent group writeback >/dev/null; then
        groupdel writeback >/dev/null 2>&1 || true
    fi
    ! getent passwd writeback >/dev/null && ! getent group writeback >/dev/null
}

# The config: readable by the service's group, by nobody else.
config_mode_ok() {
    [[ "$(stat -c '%a %U %G' /etc/writeback/writeback.toml)" == "640 root writeback" ]]
}
