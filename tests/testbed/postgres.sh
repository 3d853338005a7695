#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback for the integration tests (the PostgreSQL state
# backend and its high-availability tests): Debian's PostgreSQL, a cluster of its own under
# .testbed/postgres/, TCP on 127.0.0.1 only (port 55432), TLS required, a database `writeback`
# owned by a role `writeback` with a random password.
#
#   postgres.sh install   install the Debian packages (root; apt-get; no system cluster is made or started)
#   postgres.sh up        install if needed, create the cluster if there is none, start, print settings
#   postgres.sh down      stop the server this script started (pg_ctl stop -m fast, then by PID); the data stays
#   postgres.sh reset     down, wipe the cluster, create a new one (new CA, passwords), up
#   postgres.sh status    say whether it runs (exit 0 when running, 3 when not)
#   postgres.sh env       print the settings (KEY=VALUE lines, shell-sourceable)
#
# `down` then `up` keeps the data (a test can stop the server and start it again mid-run);
# only `reset` wipes it.
#
# Environment:
#   WRITEBACK_PG_DIR            state directory (default: <repo>/.testbed/postgres)
#   WRITEBACK_PG_PORT           TCP port on 127.0.0.1 (default 55432)
#   WRITEBACK_PG_BIN_DIR        PostgreSQL's binaries (default: /usr/lib/postgresql/<major>/bin,
#                               the cluster's major version, else the newest installed)
#   WRITEBACK_PG_START_TIMEOUT  seconds to wait for the server to accept connections (default 60)
#
# Run as root, the server runs as the `postgres` system user (which the package creates): it
# owns the data and socket directories; initdb, pg_ctl and postgres refuse to run as root.
# Run as another user (packages already installed), it runs as that user.
#
# Layout under the state directory:
#   data/                 the cluster (PGDATA; server.crt, server.key, pg_hba.conf, testbed.conf)
#   run/                  the Unix socket (.s.PGSQL.<port>); nothing in /var/run/postgresql
#   tls/ca.pem            the test bed's own CA, which signed the server certificate
#   writeback.password    the `writeback` role's password (mode 0600)
#   admin.password        the superuser `postgres`'s password (mode 0600)
#   postgres.pid          PID of the postmaster this script started
#   postgres.port         the port it listens on
#   postgres.log          its log
#   pg.env                the settings, written by `up`, removed by `down`
#
# Nothing outside the state directory is touched except by `install` (apt-get).
set -euo pipefail

readonly PACKAGES=(postgresql openssl)

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
REPO_ROOT="$(cd "${SCRIPT_DIR}/../.." && pwd)"
readonly REPO_ROOT

readonly HOST="127.0.0.1"
readonly PORT="${WRITEBACK_PG_PORT:-55432}"
readonly DATABASE="writeback"
readonly DB_USER="writeback"
readonly ADMIN_USER="postgres"
readonly CA_NAME="Writeback test bed CA (PostgreSQL)"
readonly START_TIMEOUT="${WRITEBACK_PG_START_TIMEOUT:-60}"
STATE_DIR="${WRITEBACK_PG_DIR:-${REPO_ROOT}/.testbed/postgres}"

log() { printf 'postgres: %s\n' "$*" >&2; }
die() {
    printf 'postgres: error: %s\n' "$*" >&2
    exit 1
}

[[ "${PORT}" =~ ^[0-9]+$ ]] && ((PORT > 0 && PORT < 65536)) ||
    die "WRITEBACK_PG_PORT=${PORT} is not a TCP port"
[[ "${START_TIMEOUT}" =~ ^[0-9]+$ ]] ||
    die "WRITEBACK_PG_START_TIMEOUT=${START_TIMEOUT} is not a number of seconds"

require_root() {
    if [[ "$(id -u)" -ne 0 ]]; then
        die "must run as root (apt-get needs it); try: sudo $0 ${1:-install}"
    fi
}

# Absolute paths, fixed once the state directory exists.
set_paths() {
    mkdir -p "${STATE_DIR}"
    STATE_DIR="$(cd "${STATE_DIR}" && pwd)"
    DATA_DIR="${STATE_DIR}/data"
    SOCKET_DIR="${STATE_DIR}/run"
    TLS_DIR="${STATE_DIR}/tls"
    CA_FILE="${TLS_DIR}/ca.pem"
    PASSWORD_FILE="${STATE_DIR}/writeback.password"
    ADMIN_PASSWORD_FILE="${STATE_DIR}/admin.password"
    PID_FILE="${STATE_DIR}/postgres.pid"
    PORT_FILE="${STATE_DIR}/postgres.port"
    LOG_FILE="${STATE_DIR}/postgres.log"
    ENV_FILE="${STATE_DIR}/pg.env"
    LOCK_FILE="${STATE_DIR}/.lock"
}

# Serialise concurrent invocations (several test runs may call `up` at once).
take_lock() {
    { exec 9>"${LOCK_FILE}"; } 2>/dev/null ||
        die "cannot open ${LOCK_FILE}: run as the user who made the test bed (as root: sudo $0 ${1:-up})"
    if ! flock -w 300 9; then
        die "another postgres.sh holds ${LOCK_FILE} for more than 300 s"
    fi
}

# ---------------------------------------------------------------------------------------------
# install

missing_packages() {
    local p status
    for p in "${PACKAGES[@]}"; do
        status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
        if [[ "${status}" != "install ok installed" ]]; then
            printf '%s\n' "$p"
        fi
    done
}

# Removes what cmd_install put in place for the duration of apt-get (files, then the directory
# it made), also when apt-get fails.
INSTALL_CLEANUP=()
install_cleanup() {
    local path
    for path in "${INSTALL_CLEANUP[@]}"; do
        if [[ -d "${path}" ]]; then
            rmdir "${path}" 2>/dev/null || true
        else
            rm -f "${path}"
        fi
    done
    INSTALL_CLEANUP=()
}

cmd_install() {
    require_root install
    local missing
    missing="$(missing_packages)"
    if [[ -z "${missing}" ]]; then
        log "packages already installed: ${PACKAGES[*]}"
        return 0
    fi
    log "installing: $(echo "${missing}" | tr '\n' ' ')"
    export DEBIAN_FRONTEND=noninteractive
    # The package would create a system cluster ("main", port 5432) and start it. Neither is
    # wanted: a drop-in for pg_createcluster's settings (read by the package's postinst) turns the
    # cluster off, and a temporary policy-rc.d keeps apt from starting services. Both only when
    # the host has none of its own, and removed again afterwards.
    INSTALL_CLEANUP=()
    trap install_cleanup EXIT
    local policy=/usr/sbin/policy-rc.d dropin_dir=/etc/postgresql-common/createcluster.d
    local dropin="${dropin_dir}/zz-writeback-testbed.conf"
    if [[ ! -e "${policy}" ]]; then
        printf '#!/bin/sh\n# temporary, from postgres.sh install\nexit 101\n' >"${policy}"
        chmod 0755 "${policy}"
        INSTALL_CLEANUP+=("${policy}")
    fi
    if [[ ! -d "${dropin_dir}" ]]; then
        mkdir -p "${dropin_dir}"
        INSTALL_CLEANUP+=("${dropin_dir}")
    fi
    if [[ ! -e "${dropin}" ]]; then
        printf '# temporary, from postgres.sh install: no system cluster\ncreate_main_cluster = false\n' >"${dropin}"
        INSTALL_CLEANUP=("${dropin}" "${INSTALL_CLEANUP[@]}")
    fi
    # `apt-get update` only when a package has no install candidate (empty or stale lists).
    local p need_update=0
    for p in ${missing}; do
        if ! apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [^(]'; then
            need_update=1
        fi
    done
    if [[ "${need_update}" -eq 1 ]]; then
        apt-get update
    fi
    if ! apt-get install -y --no-install-recommends "${PACKAGES[@]}"; then
        # A stale list can name .debs the mirror no longer has: refresh once and retry.
        apt-get update
        apt-get install -y --no-install-recommends "${PACKAGES[@]}"
    fi
    install_cleanup
    trap - EXIT
    missing="$(missing_packages)"
    [[ -z "${missing}" ]] || die "still missing after apt-get install: ${missing}"
    log "installed"
}

# ---------------------------------------------------------------------------------------------
# binaries and the user the server runs as

# The major version of the cluster in DATA_DIR, or nothing.
data_version() {
    tr -dc '0-9' 2>/dev/null <"${DATA_DIR}/PG_VERSION" || true
}

has_binaries() {
    [[ -x "$1/initdb" && -x "$1/pg_ctl" && -x "$1/postgres" && -x "$1/psql" ]]
}

# Debian's layout: /usr/lib/postgresql/<major>/bin. The cluster's own version when it has one,
# else the newest installed.
find_bin_dir() {
    if [[ -n "${WRITEBACK_PG_BIN_DIR:-}" ]]; then
        has_binaries "${WRITEBACK_PG_BIN_DIR}" ||
            die "WRITEBACK_PG_BIN_DIR=${WRITEBACK_PG_BIN_DIR} lacks initdb, pg_ctl, postgres or psql"
        printf '%s\n' "${WRITEBACK_PG_BIN_DIR}"
        return 0
    fi
    local version dir
    version="$(data_version)"
    if [[ -n "${version}" ]]; then
        dir="/usr/lib/postgresql/${version}/bin"
        has_binaries "${dir}" ||
            die "the cluster in ${DATA_DIR} is PostgreSQL ${version}, whose binaries (${dir}) are not installed; run: $0 reset"
        printf '%s\n' "${dir}"
        return 0
    fi
    for dir in $(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -rV); do
        if has_binaries "${dir}"; then
            printf '%s\n' "${dir}"
            return 0
        fi
    done
    return 1
}

# The OS user the server runs as: `postgres` under root (the server refuses root), else us.
server_user() {
    if [[ "$(id -u)" -eq 0 ]]; then
        printf 'postgres\n'
    else
        id -un
    fi
}

# Runs a command as the server's user, from / (root's working directory may be closed to it),
# without our lock descriptor.
as_server() {
    if [[ "$(id -u)" -eq 0 ]]; then
        (cd / && runuser -u postgres -- "$@" 9>&-)
    else
        (cd / && "$@" 9>&-)
    fi
}

# Fail before creating anything when the server's user cannot work in the state directory.
check_server_user() {
    [[ "$(id -u)" -eq 0 ]] || return 0
    id -u postgres >/dev/null 2>&1 ||
        die "there is no postgres system user (the postgresql package creates it); run: $0 install"
    runuser -u postgres -- test -x "${STATE_DIR}" 2>/dev/null ||
        die "the postgres user cannot reach ${STATE_DIR} (a parent directory is closed to it); set WRITEBACK_PG_DIR to a directory it can reach"
}

# ---------------------------------------------------------------------------------------------
# the cluster

# Our own CA and a server certificate for 127.0.0.1 and localhost (SAN), so clients verify the
# server with sslmode=verify-full. The CA key is not kept.
make_certs() {
    local data="$1" work
    work="$(mktemp -d)"
    mkdir -p "${TLS_DIR}"
    openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days 3650 \
        -keyout "${work}/ca-key.pem" -out "${work}/ca.pem" \
        -subj "/O=Writeback test bed/CN=${CA_NAME}" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null ||
        die "openssl could not make the CA"
    openssl req -new -newkey rsa:2048 -nodes -sha256 \
        -keyout "${work}/server.key" -out "${work}/server.csr" \
        -subj "/O=Writeback test bed/CN=localhost" 2>/dev/null ||
        die "openssl could not make the server key"
    printf '%s\n' \
        "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth" \
        "subjectAltName=IP:${HOST},DNS:localhost" >"${work}/server.ext"
    openssl x509 -req -sha256 -days 3650 -in "${work}/server.csr" \
        -CA "${work}/ca.pem" -CAkey "${work}/ca-key.pem" -set_serial "0x$(openssl rand -hex 16)" \
        -extfile "${work}/server.ext" -out "${work}/server.crt" 2>/dev/null ||
        die "openssl could not sign the server certificate"
    # The server wants its key owned by its user and closed to others.
    install -m 0644 "${work}/ca.pem" "${CA_FILE}"
    install -m 0644 -o "$(server_user)" "${work}/server.crt" "${data}/server.crt"
    install -m 0600 -o "$(server_user)" "${work}/server.key" "${data}/server.key"
    rm -rf "${work}"
}

# The settings this script owns, rewritten before every start (the port and the absolute paths
# may have changed since the cluster was made).
write_server_conf() {
    local data="$1" listen="$2" tmp
    tmp="$(mktemp)"
    cat >"${tmp}" <<EOF
# Test bed settings, rewritten by tests/testbed/postgres.sh before every start.
listen_addresses = '${listen}'
port = ${PORT}
unix_socket_directories = '${SOCKET_DIR}'
cluster_name = 'writeback-testbed'
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
ssl_min_protocol_version = 'TLSv1.2'
password_encryption = 'scram-sha-256'
# Tests only: no fsync. Committed data survives the server being stopped or killed (it is in
# the kernel's page cache), not a crash of the machine.
fsync = off
full_page_writes = off
shared_buffers = 32MB
max_connections = 100
log_line_prefix = '%m [%p] %q%u@%d '
EOF
    install -m 0600 -o "$(server_user)" "${tmp}" "${data}/testbed.conf"
    rm -f "${tmp}"
}

write_hba() {
    local data="$1" tmp
    tmp="$(mktemp)"
    cat >"${tmp}" <<EOF
# Test bed: TCP on 127.0.0.1 with TLS only, SCRAM passwords everywhere. Written by
# tests/testbed/postgres.sh.
# TYPE    DATABASE  USER       ADDRESS        METHOD
local     all       all                       scram-sha-256
hostnossl all       all        127.0.0.1/32   reject
hostssl   all       ${DB_USER}  127.0.0.1/32   scram-sha-256
hostssl   all       ${ADMIN_USER}   127.0.0.1/32   scram-sha-256
EOF
    install -m 0600 -o "$(server_user)" "${tmp}" "${data}/pg_hba.conf"
    rm -f "${tmp}"
}

new_password() {
    openssl rand -hex 24
}

write_secret() {
    local file="$1" value="$2" tmp
    tmp="$(mktemp "${file}.XXXXXX")"
    chmod 0600 "${tmp}"
    printf '%s\n' "${value}" >"${tmp}"
    mv "${tmp}" "${file}"
}

# A new cluster in DATA_DIR: initdb, certificates, configuration, the roles and the database
# (in single-user mode, so nothing listens before the passwords are set). Built beside and moved
# into place, so an interrupted run leaves no half-made cluster.
create_cluster() {
    local bin_dir="$1" new="${STATE_DIR}/data.new" out admin_pw db_pw
    log "creating a cluster in ${DATA_DIR} ($("${bin_dir}/postgres" --version))"
    rm -rf "${new}"
    mkdir -p "${SOCKET_DIR}"
    chown "$(server_user)" "${SOCKET_DIR}"
    chmod 0755 "${SOCKET_DIR}"
    install -d -m 0700 -o "$(server_user)" "${new}"
    # --auth=trust only until write_hba below replaces pg_hba.conf; nothing listens before.
    if ! out="$(as_server "${bin_dir}/initdb" --no-sync -D "${new}" -U "${ADMIN_USER}" \
        --encoding=UTF8 --locale=C.UTF-8 --auth=trust 2>&1)"; then
        printf '%s\n' "${out}" | tail -n 30 >&2
        die "initdb failed"
    fi
    printf "\ninclude = 'testbed.conf'\n" | as_server tee -a "${new}/postgresql.conf" >/dev/null
    make_certs "${new}"
    write_server_conf "${new}" ""
    write_hba "${new}"
    admin_pw="$(new_password)"
    db_pw="$(new_password)"
    write_secret "${ADMIN_PASSWORD_FILE}" "${admin_pw}"
    write_secret "${PASSWORD_FILE}" "${db_pw}"
    # One statement per line; the passwords are hex, so they need no quoting.
    if ! out="$(printf '%s\n' \
        "ALTER ROLE ${ADMIN_USER} PASSWORD '${admin_pw}';" \
        "CREATE ROLE ${DB_USER} LOGIN PASSWORD '${db_pw}';" \
        "CREATE DATABASE ${DATABASE} OWNER ${DB_USER};" |
        as_server "${bin_dir}/postgres" --single -D "${new}" postgres 2>&1)" ||
        grep -qE '(ERROR|FATAL|PANIC): ' <<<"${out}"; then
        printf '%s\n' "${out}" | tail -n 30 >&2
        die "creating the roles and the database in single-user mode failed"
    fi
    rm -rf "${DATA_DIR}"
    mv "${new}" "${DATA_DIR}"
}

wipe_cluster() {
    rm -rf "${DATA_DIR}" "${STATE_DIR}/data.new" "${SOCKET_DIR}" "${TLS_DIR}" \
        "${PASSWORD_FILE}" "${ADMIN_PASSWORD_FILE}" "${LOG_FILE}" "${PORT_FILE}"
}

# ---------------------------------------------------------------------------------------------
# process

# True when PID is the postmaster serving our DATA_DIR: a `postgres` process whose command line
# is `postgres -D <DATA_DIR>` (pg_ctl starts it so; the postmaster keeps its command line,
# its children rewrite theirs).
is_our_postgres() {
    local pid="$1" args
    [[ "${pid}" =~ ^[0-9]+$ && -d "/proc/${pid}" ]] || return 1
    [[ "$(cat "/proc/${pid}/comm" 2>/dev/null)" == "postgres" ]] || return 1
    args="$(tr '\0' '\n' 2>/dev/null <"/proc/${pid}/cmdline")" || return 1
    grep -qxF -- "${DATA_DIR}" <<<"${args}"
}

recorded_pid() {
    [[ -f "${PID_FILE}" ]] && tr -dc '0-9' <"${PID_FILE}"
}

# PID of our running postmaster, or nothing. Adopts one whose postmaster.pid is in our data
# directory but whose PID file was lost.
running_pid() {
    local pid
    pid="$(recorded_pid || true)"
    if [[ -n "${pid}" ]] && is_our_postgres "${pid}"; then
        printf '%s\n' "${pid}"
        return 0
    fi
    pid="$(head -n 1 "${DATA_DIR}/postmaster.pid" 2>/dev/null | tr -dc '0-9' || true)"
    if [[ -n "${pid}" ]] && is_our_postgres "${pid}"; then
        { printf '%s\n' "${pid}" >"${PID_FILE}"; } 2>/dev/null || true
        printf '%s\n' "${pid}"
        return 0
    fi
    return 1
}

# The port the running server was started on.
running_port() {
    tr -dc '0-9' 2>/dev/null <"${PORT_FILE}" || true
}

port_in_use() {
    (exec 3<>"/dev/tcp/${HOST}/${PORT}") 2>/dev/null
}

# Called when our server is not running: anything on the port is someone else's. A server of
# ours killed a moment ago may still hold it while its last children exit: waited for briefly.
require_free_port() {
    local owner
    for _ in $(seq 1 50); do
        port_in_use || return 0
        sleep 0.2
    done
    if port_in_use; then
        owner="$(ss -ltnpH "sport = :${PORT}" 2>/dev/null | sed -n 's/.*users:((\(.*\)))/\1/p' | head -n 1 || true)"
        die "port ${PORT} on ${HOST} is already taken by another process${owner:+ (${owner})}; stop it or set WRITEBACK_PG_PORT"
    fi
}

# The socket path must fit in sun_path (107 bytes).
check_socket_path() {
    local path="${SOCKET_DIR}/.s.PGSQL.${PORT}"
    ((${#path} <= 100)) ||
        die "the socket path ${path} is too long for a Unix socket (${#path} > 100 bytes); set WRITEBACK_PG_DIR to a shorter directory"
}

print_log_tail() {
    if [[ -f "${LOG_FILE}" ]]; then
        log "last lines of ${LOG_FILE}:"
        tail -n 40 "${LOG_FILE}" >&2
    fi
}

# A query as `writeback` over TLS, the server verified against our CA (what the tests do).
tls_query() {
    local bin_dir="$1" sql="$2"
    PGPASSWORD="$(cat "${PASSWORD_FILE}")" PGCONNECT_TIMEOUT=5 \
        "${bin_dir}/psql" -X -q -A -t -v ON_ERROR_STOP=1 \
        "host=${HOST} port=${PORT} dbname=${DATABASE} user=${DB_USER} sslmode=verify-full sslrootcert=${CA_FILE}" \
        -c "${sql}"
}

start_postgres() {
    local bin_dir="$1" pid out
    check_socket_path
    require_free_port
    [[ -f "${PASSWORD_FILE}" && -f "${ADMIN_PASSWORD_FILE}" && -f "${CA_FILE}" ]] ||
        die "the cluster in ${DATA_DIR} lacks its password files or CA; run: $0 reset"
    mkdir -p "${SOCKET_DIR}"
    chown "$(server_user)" "${SOCKET_DIR}"
    chmod 0755 "${SOCKET_DIR}"
    touch "${LOG_FILE}"
    chown "$(server_user)" "${LOG_FILE}"
    write_server_conf "${DATA_DIR}" "${HOST}"
    wait_for_leftovers
    remove_stale_lock "${DATA_DIR}/postmaster.pid"
    remove_stale_lock "${SOCKET_DIR}/.s.PGSQL.${PORT}.lock"
    printf '%s\n' "${PORT}" >"${PORT_FILE}"
    # pg_ctl puts the postmaster in a session of its own (setsid), so a caller's process-group
    # cleanup does not take it down; -w waits until it accepts connections.
    if ! out="$(as_server "${bin_dir}/pg_ctl" -D "${DATA_DIR}" -l "${LOG_FILE}" \
        -w -t "${START_TIMEOUT}" start 2>&1)"; then
        printf '%s\n' "${out}" >&2
        print_log_tail
        # A postmaster that came up too late is still ours to stop.
        pid="$(head -n 1 "${DATA_DIR}/postmaster.pid" 2>/dev/null | tr -dc '0-9' || true)"
        if [[ -n "${pid}" ]] && is_our_postgres "${pid}"; then
            stop_postgres "${bin_dir}" "${pid}"
        fi
        die "pg_ctl start failed (or the server did not accept connections within ${START_TIMEOUT} s)"
    fi
    pid="$(head -n 1 "${DATA_DIR}/postmaster.pid" | tr -dc '0-9')"
    is_our_postgres "${pid}" || die "pg_ctl started no postmaster for ${DATA_DIR}"
    printf '%s\n' "${pid}" >"${PID_FILE}"
    if ! out="$(tls_query "${bin_dir}" "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()" 2>&1)" ||
        [[ "${out}" != "t" ]]; then
        printf '%s\n' "${out}" >&2
        print_log_tail
        die "the server runs (PID ${pid}) but ${DB_USER} cannot connect over TLS verified with ${CA_FILE}"
    fi
}

# True while PID runs (a zombie, exited but not yet reaped by its new parent, does not).
pid_alive() {
    local state
    state="$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null)" || return 1
    [[ -n "${state}" && "${state}" != Z && "${state}" != X ]]
}

# PIDs of the running processes of this cluster (every one works in the data directory), which
# a killed postmaster can leave behind for a moment. Only root sees the postgres user's.
cluster_processes() {
    local dir pid
    for dir in /proc/[0-9]*; do
        pid="${dir#/proc/}"
        [[ "$(cat "${dir}/comm" 2>/dev/null)" == "postgres" ]] || continue
        [[ "$(readlink "${dir}/cwd" 2>/dev/null)" == "${DATA_DIR}" ]] || continue
        pid_alive "${pid}" && printf '%s\n' "${pid}"
    done
    return 0
}

# Before a start: the backends of a killed postmaster exit on their own, soon; a new postmaster
# refuses to start while one still holds the old shared memory.
wait_for_leftovers() {
    local left i
    for ((i = 0; i < 100; i++)); do
        left="$(cluster_processes)"
        [[ -n "${left}" ]] || return 0
        sleep 0.1
    done
    die "processes of the old server still run in ${DATA_DIR} after 10 s (PIDs $(echo "${left}" | tr '\n' ' ')); stop them first"
}

# A lock file (postmaster.pid, the socket's .lock) left by a postmaster that was killed. The
# server ignores one whose PID is gone, but not one whose PID is a zombie (a killed postmaster
# its new parent has not reaped yet), so one whose PID does not run is removed here.
remove_stale_lock() {
    local file="$1" pid
    [[ -f "${file}" ]] || return 0
    pid="$(head -n 1 "${file}" 2>/dev/null | tr -dc '0-9' || true)"
    if [[ -n "${pid}" ]] && ! pid_alive "${pid}"; then
        log "removing ${file} of PID ${pid}, which no longer runs"
        rm -f "${file}"
    fi
}

# pg_ctl stop -m fast; a postmaster that lingers gets SIGTERM, then SIGKILL. Returns once the
# process is gone (pg_ctl returns when postmaster.pid is removed, a moment before the process
# exits). Only ever called for a PID that is_our_postgres.
stop_postgres() {
    local bin_dir="$1" pid="$2" i
    as_server "${bin_dir}/pg_ctl" -D "${DATA_DIR}" -m fast -w -t 30 stop >/dev/null 2>&1 || true
    for ((i = 0; i < 50; i++)); do
        pid_alive "${pid}" || return 0
        sleep 0.1
    done
    is_our_postgres "${pid}" || return 0
    log "the postmaster (PID ${pid}) outlived pg_ctl stop by 5 s; sending SIGTERM"
    kill -TERM "${pid}" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        pid_alive "${pid}" || return 0
        sleep 0.1
    done
    log "the postmaster (PID ${pid}) ignored SIGTERM for 10 s; sending SIGKILL"
    kill -KILL "${pid}" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        pid_alive "${pid}" || return 0
        sleep 0.1
    done
    die "the postmaster (PID ${pid}) survived SIGKILL"
}

# ---------------------------------------------------------------------------------------------
# settings

# KEY=VALUE, single-quoted only when the value needs it (the Rust loader strips the quotes).
env_line() {
    local key="$1" value="$2"
    if [[ "${value}" =~ ^[A-Za-z0-9_./:=,@+-]*$ ]]; then
        printf '%s=%s\n' "${key}" "${value}"
    else
        printf "%s='%s'\n" "${key}" "${value//\'/\'\\\'\'}"
    fi
}

# Percent-encodes what a URL query value cannot hold as is.
url_encode() {
    local s="$1" out="" c i
    for ((i = 0; i < ${#s}; i++)); do
        c="${s:i:1}"
        case "${c}" in
        [A-Za-z0-9/._~-]) out+="${c}" ;;
        *) out+="$(printf '%%%02X' "'${c}")" ;;
        esac
    done
    printf '%s' "${out}"
}

write_env() {
    local pid="$1" bin_dir="$2" port="$3" tmp
    tmp="$(mktemp "${ENV_FILE}.XXXXXX")"
    {
        echo "# PostgreSQL test bed settings, written by tests/testbed/postgres.sh up"
        env_line PG_HOST "${HOST}"
        env_line PG_PORT "${port}"
        env_line PG_DATABASE "${DATABASE}"
        env_line PG_USER "${DB_USER}"
        env_line PG_PASSWORD_FILE "${PASSWORD_FILE}"
        env_line PG_CA_FILE "${CA_FILE}"
        env_line PG_URL "postgres://${DB_USER}@${HOST}:${port}/${DATABASE}?sslmode=verify-full&sslrootcert=$(url_encode "${CA_FILE}")"
        env_line PG_ADMIN_USER "${ADMIN_USER}"
        env_line PG_ADMIN_PASSWORD_FILE "${ADMIN_PASSWORD_FILE}"
        env_line PG_SOCKET_DIR "${SOCKET_DIR}"
        env_line PG_PID "${pid}"
        env_line PG_DATA_DIR "${DATA_DIR}"
        env_line PG_BIN_DIR "${bin_dir}"
        env_line PG_VERSION "$(data_version)"
        env_line PG_SERVER_USER "$(server_user)"
        env_line PG_LOG_FILE "${LOG_FILE}"
        env_line PG_STATE_DIR "${STATE_DIR}"
    } >"${tmp}"
    chmod 0644 "${tmp}"
    mv "${tmp}" "${ENV_FILE}"
}

# ---------------------------------------------------------------------------------------------
# subcommands

ensure_packages() {
    [[ -n "$(missing_packages)" ]] || return 0
    if [[ "$(id -u)" -eq 0 ]]; then
        cmd_install
    else
        die "missing packages: $(missing_packages | tr '\n' ' '); run: sudo $0 install"
    fi
}

do_up() {
    local pid port bin_dir
    if pid="$(running_pid)"; then
        # The running server listens where it was started: settings for another port would
        # name a URL nothing answers on.
        port="$(running_port)"
        if [[ -n "${port}" && "${port}" != "${PORT}" ]]; then
            die "the running server (PID ${pid}) listens on port ${port}, not ${PORT}: run \`$0 down\` first, or set WRITEBACK_PG_PORT=${port}"
        fi
        bin_dir="$(find_bin_dir)" || die "no PostgreSQL binaries under /usr/lib/postgresql"
        write_env "${pid}" "${bin_dir}" "${port:-${PORT}}"
        cat "${ENV_FILE}"
        return 0
    fi
    # Fail fast, before installing or creating anything.
    check_socket_path
    require_free_port
    ensure_packages
    check_server_user
    bin_dir="$(find_bin_dir)" || die "no PostgreSQL binaries under /usr/lib/postgresql; run: $0 install"
    if [[ ! -f "${DATA_DIR}/PG_VERSION" ]]; then
        create_cluster "${bin_dir}"
        bin_dir="$(find_bin_dir)"
    fi
    start_postgres "${bin_dir}"
    pid="$(recorded_pid)"
    write_env "${pid}" "${bin_dir}" "${PORT}"
    log "running: PID ${pid}, ${HOST}:${PORT} (TLS only), settings in ${ENV_FILE}"
    cat "${ENV_FILE}"
}

do_down() {
    local pid bin_dir
    if pid="$(running_pid)"; then
        # Another user's server (started as root: it runs as postgres) is not ours to stop.
        if [[ "$(id -u)" -ne 0 && "$(stat -c %u "/proc/${pid}")" != "$(id -u)" ]]; then
            die "the server (PID ${pid}) runs as $(stat -c %U "/proc/${pid}"); run: sudo $0 down"
        fi
        rm -f "${ENV_FILE}"
        bin_dir="$(find_bin_dir)" || die "no PostgreSQL binaries to run pg_ctl stop with"
        stop_postgres "${bin_dir}" "${pid}"
        log "stopped PostgreSQL (PID ${pid}); the data stays in ${DATA_DIR}"
    else
        rm -f "${ENV_FILE}"
        log "not running"
    fi
    rm -f "${PID_FILE}"
}

cmd_up() {
    set_paths
    take_lock up
    do_up
}

cmd_down() {
    set_paths
    take_lock down
    do_down
}

cmd_reset() {
    set_paths
    take_lock reset
    ensure_packages
    do_down
    # Fail before wiping anything when the new server could not listen.
    check_socket_path
    require_free_port
    wipe_cluster
    do_up
}

cmd_status() {
    set_paths
    local pid port
    if pid="$(running_pid 2>/dev/null)"; then
        port="$(running_port)"
        echo "running: PID ${pid}, ${HOST}:${port:-${PORT}} (TLS only), socket in ${SOCKET_DIR}"
    else
        echo "stopped"
    fi
    if [[ -d "${DATA_DIR}" ]]; then
        echo "cluster: ${DATA_DIR}"
    else
        echo "cluster: none (created by the next up)"
    fi
    echo "settings: ${ENV_FILE}"
    [[ -n "${pid:-}" ]] || return 3
}

cmd_env() {
    set_paths
    local pid bin_dir port
    pid="$(running_pid 2>/dev/null)" || die "the PostgreSQL test bed is not running; run: $0 up"
    if [[ ! -f "${ENV_FILE}" ]]; then
        bin_dir="$(find_bin_dir)" || die "no PostgreSQL binaries under /usr/lib/postgresql"
        port="$(running_port)"
        write_env "${pid}" "${bin_dir}" "${port:-${PORT}}"
    fi
    cat "${ENV_FILE}"
}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

main() {
    case "${1:-}" in
    install) cmd_install ;;
    up) cmd_up ;;
    down) cmd_down ;;
    reset) cmd_reset ;;
    status) cmd_status ;;
    env) cmd_env ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
