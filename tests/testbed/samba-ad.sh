#!/usr/bin/env bash
# Throwaway Samba AD DCs on loopback for the integration tests: forest A (domain
# CORP.EXAMPLE.TEST, 127.0.0.1, the default) and forest B (FABRIKAM.EXAMPLE.TEST, 127.0.0.3), an
# independent second forest for multi-forest tests. Both can run at the same time.
#
#   samba-ad.sh [--forest a|b] install   install the Debian packages (root; apt-get)
#   samba-ad.sh [--forest a|b] up        install if needed, provision the cached template once, start, print settings
#   samba-ad.sh [--forest a|b] down      stop the DC this script started (by its recorded PID)
#   samba-ad.sh [--forest a|b] reset     down, replace the instance with a fresh copy of the template, up
#   samba-ad.sh [--forest a|b] status    say whether it runs (exit 0 when running, 3 when not)
#   samba-ad.sh [--forest a|b] save NAME     keep a copy of the instance as it is now (stopped for
#                                        the copy, restarted if it ran), e.g. after loading
#                                        250,000 users, under beds/NAME
#   samba-ad.sh [--forest a|b] restore NAME  down, replace the instance with a copy of beds/NAME, up
#   samba-ad.sh [--forest a|b] env       print the settings (KEY=VALUE lines, shell-sourceable)
#
# Environment:
#   WRITEBACK_TESTBED_FOREST       forest when --forest is not given: a (default) or b
#   WRITEBACK_TESTBED_DIR          forest A's state directory (default: <repo>/.testbed)
#   WRITEBACK_TESTBED_IP           forest A's loopback address (default 127.0.0.1)
#   WRITEBACK_TESTBED_B_DIR        forest B's state directory (default: <repo>/.testbed/forest-b)
#   WRITEBACK_TESTBED_B_IP         forest B's loopback address (default 127.0.0.3)
#   WRITEBACK_TESTBED_MAX_RUNTIME  seconds after which samba exits by itself (default 14400 = 4 h),
#                                  a guard against leaked servers
#   WRITEBACK_TESTBED_START_TIMEOUT seconds to wait for the DC to answer (default 60)
#
# An address other than 127.0.0.1 must be on lo before samba can listen on it: run as root,
# `up` and `reset` add it (`ip addr add <ip>/8 dev lo`) when it is missing; it is left there.
#
# Layout under a forest's state directory:
#   samba-template/  provisioned once, never started; copied for each clean instance
#   beds/NAME/       instances kept by `save`, copied by `restore` (refused once the template
#                    they grew from is outdated)
#   samba/           the running instance (etc/smb.conf, private/, private/tls/ca.pem, ...)
#   samba.pid        PID of the samba process this script started
#   samba.log        its stdout/stderr
#   samba.env        the settings, written by `up`, removed by `down`
#
# Nothing outside the state directories is touched except by `install` (apt-get) and the lo
# address above: no /etc/samba/smb.conf, /run/samba or /var/log/samba.
set -euo pipefail

# Bump when anything that goes into the template changes (provision options, smb.conf patch,
# schema LDIFs, certificates): the next `up` then re-provisions the template.
readonly TEMPLATE_VERSION="wb-samba-template-4"

readonly PACKAGES=(samba-ad-dc samba-ad-provision ldb-tools ldap-utils openssl)

# The forest: `--forest X` (before or after the subcommand) wins over WRITEBACK_TESTBED_FOREST.
FOREST="${WRITEBACK_TESTBED_FOREST:-a}"
ARGS=()
while (($#)); do
    case "$1" in
    --forest)
        [[ $# -ge 2 ]] || {
            printf 'samba-ad: error: --forest needs a value: a or b\n' >&2
            exit 2
        }
        FOREST="$2"
        shift 2
        ;;
    --forest=*)
        FOREST="${1#--forest=}"
        shift
        ;;
    *)
        ARGS+=("$1")
        shift
        ;;
    esac
done
FOREST="${FOREST,,}"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
REPO_ROOT="$(cd "${SCRIPT_DIR}/../.." && pwd)"
readonly REPO_ROOT

# Each forest: its own realm, address, state directory (template, instance, CA, settings, PID,
# log) and passwords, so a test that binds to the wrong forest fails.
case "${FOREST}" in
a)
    REALM="CORP.EXAMPLE.TEST"
    NETBIOS_DOMAIN="CORP"
    BASE_DN="DC=corp,DC=example,DC=test"
    # Throwaway domain on loopback only; meets AD's default complexity rules.
    ADMIN_PASSWORD="Wb-Testbed-Passw0rd.1"
    SERVICE_PASSWORD="Wb-Service-Passw0rd.2"
    CA_NAME="Writeback test bed CA"
    # The LDAP ports are fixed in Samba 4.17, so another DC on the same machine needs another
    # loopback address (e.g. 127.0.0.2).
    IP="${WRITEBACK_TESTBED_IP:-127.0.0.1}"
    STATE_DIR="${WRITEBACK_TESTBED_DIR:-${REPO_ROOT}/.testbed}"
    IP_VAR="WRITEBACK_TESTBED_IP"
    ;;
b)
    REALM="FABRIKAM.EXAMPLE.TEST"
    NETBIOS_DOMAIN="FABRIKAM"
    BASE_DN="DC=fabrikam,DC=example,DC=test"
    ADMIN_PASSWORD="Wb-Fabrikam-Passw0rd.3"
    SERVICE_PASSWORD="Wb-Fabrikam-Service-Passw0rd.4"
    CA_NAME="Writeback test bed CA (forest B)"
    IP="${WRITEBACK_TESTBED_B_IP:-127.0.0.3}"
    STATE_DIR="${WRITEBACK_TESTBED_B_DIR:-${REPO_ROOT}/.testbed/forest-b}"
    IP_VAR="WRITEBACK_TESTBED_B_IP"
    ;;
*)
    printf 'samba-ad: error: unknown forest "%s": a (CORP.EXAMPLE.TEST) or b (FABRIKAM.EXAMPLE.TEST)\n' "${FOREST}" >&2
    exit 2
    ;;
esac
readonly FOREST REALM NETBIOS_DOMAIN BASE_DN ADMIN_PASSWORD SERVICE_PASSWORD CA_NAME IP IP_VAR
readonly HOST_NAME="dc1"
DC_FQDN="${HOST_NAME}.${REALM,,}"
readonly DC_FQDN
readonly BIND_DN="CN=Administrator,CN=Users,${BASE_DN}"
# Writeback's service account: no group beyond Domain Users; each test delegates it the rights
# on its managed OU with packaging/delegate-samba.sh, so the documented rights are what it has.
readonly SERVICE_ACCOUNT="svc-writeback"
readonly SERVICE_DN="CN=${SERVICE_ACCOUNT},CN=Users,${BASE_DN}"
readonly LDAP_URL="ldap://${IP}:389"
readonly LDAPS_URL="ldaps://${IP}:636"
# `--forest b` for the messages' commands (forest A's stay as they were).
if [[ "${FOREST}" == a ]]; then
    readonly SELF="$0"
else
    readonly SELF="$0 --forest ${FOREST}"
fi

readonly MAX_RUNTIME="${WRITEBACK_TESTBED_MAX_RUNTIME:-14400}"
readonly START_TIMEOUT="${WRITEBACK_TESTBED_START_TIMEOUT:-60}"

log() { printf 'samba-ad: %s\n' "$*" >&2; }
die() {
    printf 'samba-ad: error: %s\n' "$*" >&2
    exit 1
}

require_root() {
    if [[ "$(id -u)" -ne 0 ]]; then
        die "must run as root (apt-get, provisioning and binding ports 389/636 need it); try: sudo ${SELF} ${1:-up}"
    fi
}

# Absolute paths, fixed once the state directory exists.
set_paths() {
    mkdir -p "${STATE_DIR}"
    STATE_DIR="$(cd "${STATE_DIR}" && pwd)"
    TEMPLATE_DIR="${STATE_DIR}/samba-template"
    INSTANCE_DIR="${STATE_DIR}/samba"
    INSTANCE_CONF="${INSTANCE_DIR}/etc/smb.conf"
    CA_FILE="${INSTANCE_DIR}/private/tls/ca.pem"
    PID_FILE="${STATE_DIR}/samba.pid"
    LOG_FILE="${STATE_DIR}/samba.log"
    ENV_FILE="${STATE_DIR}/samba.env"
    LOCK_FILE="${STATE_DIR}/.lock"
}

# Serialise concurrent invocations (several test runs may call `up` at once).
take_lock() {
    exec 9>"${LOCK_FILE}"
    if ! flock -w 300 9; then
        die "another samba-ad.sh holds ${LOCK_FILE} for more than 300 s"
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
    # Keep apt from starting smbd/nmbd/winbind on a host with an init system; only when the
    # host has no policy of its own, and removed again afterwards.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e "${policy}" ]]; then
        printf '#!/bin/sh\n# temporary, from samba-ad.sh install\nexit 101\n' >"${policy}"
        chmod 0755 "${policy}"
        created_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
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
    if [[ "${created_policy}" -eq 1 ]]; then
        rm -f "${policy}"
        trap - EXIT
    fi
    missing="$(missing_packages)"
    [[ -z "${missing}" ]] || die "still missing after apt-get install: ${missing}"
    log "installed"
}

# ---------------------------------------------------------------------------------------------
# template (provisioned once, cached)

template_is_current() {
    [[ -f "${TEMPLATE_DIR}/.version" && -f "${TEMPLATE_DIR}/.origin" ]] &&
        [[ "$(cat "${TEMPLATE_DIR}/.version")" == "${TEMPLATE_VERSION}-${IP}" ]]
}

# Rewrite [global] of a freshly provisioned smb.conf: drop what provision wrote for the keys we
# set (and what it silently dropped from --option), then add ours right after the header.
patch_smb_conf() {
    local dir="$1" conf="$1/etc/smb.conf" tmp
    tmp="$(mktemp "${conf}.XXXXXX")"
    awk -v dir="${dir}" -v ip="${IP}" '
        function key(line) { sub(/=.*/, "", line); gsub(/^[ \t]+|[ \t]+$/, "", line); return tolower(line) }
        BEGIN {
            drop["interfaces"]; drop["bind interfaces only"]; drop["server services"]
            drop["log file"]; drop["pid directory"]; drop["ncalrpc dir"]
            drop["winbindd socket directory"]; drop["ldap server require strong auth"]
            drop["tls enabled"]; drop["tls certfile"]; drop["tls keyfile"]; drop["tls cafile"]
            drop["ldb:nosync"]; drop["dsdb:schema update allowed"]
        }
        /^[ \t]*\[/ { section = tolower($0); gsub(/[ \t]/, "", section) }
        section == "[global]" && /=/ && (key($0) in drop) { next }
        { print }
        section == "[global]" && /^[ \t]*\[/ {
            print "\t# Test bed: loopback only, one process serving LDAP and the KDC (Kerberos binds), everything under the instance dir."
            print "\tinterfaces = " ip
            print "\tbind interfaces only = yes"
            print "\tserver services = ldap, cldap, kdc"
            print "\tldap server require strong auth = no"
            print "\tlog file = " dir "/log/samba.log"
            print "\tpid directory = " dir "/run"
            print "\tncalrpc dir = " dir "/run/ncalrpc"
            print "\twinbindd socket directory = " dir "/run/winbindd"
            print "\ttls enabled = yes"
            print "\ttls certfile = " dir "/private/tls/cert.pem"
            print "\ttls keyfile = " dir "/private/tls/key.pem"
            print "\ttls cafile = " dir "/private/tls/ca.pem"
            print "\t# Tests only: no fsync, about 3x faster writes."
            print "\tldb:nosync = true"
        }
    ' "${conf}" >"${tmp}"
    mv "${tmp}" "${conf}"
    mkdir -p "${dir}/log" "${dir}/run"
}

# Our own CA (one per forest) and a server certificate whose SAN names the DC's address, so clients verify the server
# (Samba's autogenerated certificate has no SAN). Made before the first start, so samba does
# not generate its own.
make_certs() {
    local tls="$1/private/tls" work
    mkdir -p "${tls}"
    work="$(mktemp -d)"
    openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days 3650 \
        -keyout "${work}/ca-key.pem" -out "${tls}/ca.pem" \
        -subj "/O=Writeback test bed/CN=${CA_NAME}" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -new -newkey rsa:2048 -nodes -sha256 \
        -keyout "${tls}/key.pem" -out "${work}/server.csr" \
        -subj "/O=Writeback test bed/CN=${DC_FQDN}" 2>/dev/null
    printf '%s\n' \
        "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth" \
        "subjectAltName=IP:${IP},DNS:localhost,DNS:${DC_FQDN}" >"${work}/server.ext"
    openssl x509 -req -sha256 -days 3650 -in "${work}/server.csr" \
        -CA "${tls}/ca.pem" -CAkey "${work}/ca-key.pem" -set_serial "0x$(openssl rand -hex 16)" \
        -extfile "${work}/server.ext" -out "${tls}/cert.pem" 2>/dev/null
    # The CA key is not kept: nothing else should be signed by this CA.
    rm -rf "${work}"
    chmod 0600 "${tls}/key.pem"
    chmod 0644 "${tls}/ca.pem" "${tls}/cert.pem"
}

# Add the attributes the stock 2012_R2 schema lacks, offline, in two runs (the class change
# needs the reloaded schema).
extend_schema() {
    local dir="$1" f
    for f in schema-1-attributes.ldif schema-2-mail-recipient.ldif; do
        sed "s/@BASE_DN@/${BASE_DN}/g" "${SCRIPT_DIR}/${f}" |
            ldbmodify --configfile="${dir}/etc/smb.conf" -H "${dir}/private/sam.ldb" \
                --option="dsdb:schema update allowed=true" >/dev/null ||
            die "schema extension ${f} failed"
    done
}

provision_template() {
    local tmp="${STATE_DIR}/samba-template.new" out
    log "provisioning template ${TEMPLATE_DIR} (${TEMPLATE_VERSION}); takes about 10 s"
    rm -rf "${tmp}"
    mkdir -p "${tmp}"
    if ! out="$(samba-tool domain provision \
        --realm="${REALM}" --domain="${NETBIOS_DOMAIN}" --host-name="${HOST_NAME}" \
        --server-role=dc --dns-backend=NONE --use-rfc2307 \
        --base-schema=2012_R2 --function-level=2008_R2 --host-ip="${IP}" \
        --backend-store=mdb --adminpass="${ADMIN_PASSWORD}" \
        --option="interfaces = ${IP}" --option="bind interfaces only = yes" \
        --targetdir="${tmp}" 2>&1)"; then
        printf '%s\n' "${out}" | tail -n 30 >&2
        die "samba-tool domain provision failed"
    fi
    patch_smb_conf "${tmp}"
    make_certs "${tmp}"
    extend_schema "${tmp}"
    # AD's default 42-day maximum password age would lock a cached template out.
    samba-tool user setexpiry Administrator --noexpiry \
        -s "${tmp}/etc/smb.conf" -H "${tmp}/private/sam.ldb" >/dev/null ||
        die "samba-tool user setexpiry failed"
    samba-tool user create "${SERVICE_ACCOUNT}" "${SERVICE_PASSWORD}" \
        --description="Writeback service account (test bed)" \
        -s "${tmp}/etc/smb.conf" -H "${tmp}/private/sam.ldb" >/dev/null ||
        die "samba-tool user create ${SERVICE_ACCOUNT} failed"
    samba-tool user setexpiry "${SERVICE_ACCOUNT}" --noexpiry \
        -s "${tmp}/etc/smb.conf" -H "${tmp}/private/sam.ldb" >/dev/null ||
        die "samba-tool user setexpiry ${SERVICE_ACCOUNT} failed"
    # Kerberos binds ask for ldap/<DC name>; provision registers only HOST/ names.
    samba-tool spn add "ldap/${DC_FQDN}" "${HOST_NAME^^}\$" \
        -s "${tmp}/etc/smb.conf" -H "${tmp}/private/sam.ldb" >/dev/null ||
        die "samba-tool spn add ldap/${DC_FQDN} failed"
    # The directory this was provisioned in: clones rewrite it in smb.conf.
    printf '%s\n' "${tmp}" >"${tmp}/.origin"
    printf '%s\n' "${TEMPLATE_VERSION}-${IP}" >"${tmp}/.version"
    rm -rf "${TEMPLATE_DIR}"
    mv "${tmp}" "${TEMPLATE_DIR}"
}

ensure_template() {
    if template_is_current; then
        return 0
    fi
    provision_template
}

# A clean instance: a copy of the template with its absolute paths rewritten.
clone_template() {
    clone_from "${TEMPLATE_DIR}"
}

# The instance replaced by a copy of SOURCE (the template or a saved bed), its paths rewritten.
clone_from() {
    local source="$1" origin tmp="${INSTANCE_DIR}.new"
    origin="$(cat "${source}/.origin")"
    rm -rf "${tmp}"
    cp -a "${source}" "${tmp}"
    sed -i "s|${origin}|${INSTANCE_DIR}|g" "${tmp}/etc/smb.conf"
    rm -rf "${INSTANCE_DIR}"
    mv "${tmp}" "${INSTANCE_DIR}"
}

bed_dir() {
    [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] ||
        die "a bed's name is letters, digits, '.', '_' and '-' (got \"$1\")"
    echo "${STATE_DIR}/beds/$1"
}

# ---------------------------------------------------------------------------------------------
# process

# True when PID is a samba process serving our instance. Samba rewrites its process title
# ("samba: root process"), which overwrites /proc/PID/cmdline (and environ) right after start,
# so the command line names our conf only in the first moments. Any of these proves the
# instance: the command line, an open descriptor on our sam.ldb, or samba's own pidfile in our
# instance's pid directory holding this PID (the only proof a non-root `status` can read).
is_our_samba() {
    local pid="$1" exe fd
    [[ "${pid}" =~ ^[0-9]+$ && -d "/proc/${pid}" ]] || return 1
    if exe="$(readlink "/proc/${pid}/exe" 2>/dev/null)"; then
        [[ "$(basename "${exe}")" == "samba" ]] || return 1
    else
        [[ "$(cat "/proc/${pid}/comm" 2>/dev/null)" == "samba" ]] || return 1
    fi
    if tr '\0' '\n' 2>/dev/null <"/proc/${pid}/cmdline" | grep -qxF -- "${INSTANCE_CONF}"; then
        return 0
    fi
    if [[ "$(tr -dc '0-9' 2>/dev/null <"${INSTANCE_DIR}/run/samba.pid")" == "${pid}" ]]; then
        return 0
    fi
    for fd in "/proc/${pid}/fd/"*; do
        if [[ "$(readlink "${fd}" 2>/dev/null)" == "${INSTANCE_DIR}/private/sam.ldb" ]]; then
            return 0
        fi
    done
    return 1
}

recorded_pid() {
    [[ -f "${PID_FILE}" ]] && tr -dc '0-9' <"${PID_FILE}"
}

# PID of our running samba, or nothing. Adopts one that runs with our conf but lost its pidfile.
running_pid() {
    local pid
    pid="$(recorded_pid || true)"
    if [[ -n "${pid}" ]] && is_our_samba "${pid}"; then
        printf '%s\n' "${pid}"
        return 0
    fi
    local f
    for f in /proc/[0-9]*/cmdline; do
        pid="${f#/proc/}"
        pid="${pid%/cmdline}"
        if is_our_samba "${pid}"; then
            printf '%s\n' "${pid}" >"${PID_FILE}"
            printf '%s\n' "${pid}"
            return 0
        fi
    done
    return 1
}

# Samba listens only on addresses it finds on an interface: without the address on lo it logs
# "no network interfaces found" and never answers. As root, add it (and leave it there).
ensure_ip_on_lo() {
    [[ "${IP}" == "127.0.0.1" ]] && return 0
    [[ "${IP}" =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
        die "${IP_VAR}=${IP} is not a loopback address (127.x.y.z); the test bed serves on loopback only"
    command -v ip >/dev/null 2>&1 ||
        die "the ip command (iproute2) is missing: cannot check that ${IP} is on lo; install iproute2, or add the address yourself"
    # Read whole, not piped into `grep -q`: under pipefail, grep quitting at its first match
    # kills `ip` with SIGPIPE when lo has many addresses, and the check fails at random.
    if [[ "$(ip -4 -o addr show dev lo)" == *" inet ${IP}/"* ]]; then
        return 0
    fi
    if [[ "$(id -u)" -eq 0 ]] && ip addr add "${IP}/8" dev lo 2>/dev/null &&
        [[ "$(ip -4 -o addr show dev lo)" == *" inet ${IP}/"* ]]; then
        log "added ${IP}/8 to lo (samba listens only on addresses of an interface)"
        return 0
    fi
    die "${IP} is not on the loopback interface, so samba cannot listen on it; add it with: sudo ip addr add ${IP}/8 dev lo"
}

port_in_use() {
    (exec 3<>"/dev/tcp/${IP}/$1") 2>/dev/null
}

ldap_answers() {
    ldapsearch -x -LLL -o nettimeout=2 -H "${LDAP_URL}" -D "${BIND_DN}" -w "${ADMIN_PASSWORD}" \
        -b "${BASE_DN}" -s base dn >/dev/null 2>&1
}

ldaps_answers() {
    LDAPTLS_CACERT="${CA_FILE}" LDAPTLS_REQCERT=demand \
        ldapsearch -x -LLL -o nettimeout=2 -H "${LDAPS_URL}" -D "${BIND_DN}" -w "${ADMIN_PASSWORD}" \
        -b "${BASE_DN}" -s base dn >/dev/null 2>&1
}

print_log_tail() {
    if [[ -f "${LOG_FILE}" ]]; then
        log "last lines of ${LOG_FILE}:"
        tail -n 40 "${LOG_FILE}" >&2
    fi
}

# Called when our samba is not running: anything on the ports is someone else's.
require_free_ports() {
    local port owner
    for port in 389 636; do
        if port_in_use "${port}"; then
            owner="$(ss -ltnpH "sport = :${port}" 2>/dev/null | sed -n 's/.*users:((\(.*\)))/\1/p' | head -n 1 || true)"
            die "port ${port} on ${IP} is already taken by another process${owner:+ (${owner})}; the test bed needs 389 and 636 (stop that server first)"
        fi
    done
}

start_samba() {
    require_free_ports
    : >"${LOG_FILE}"
    # setsid: its own session, so a caller's process-group cleanup does not take the DC down.
    # 9>&-: samba must not inherit (and hold) our lock.
    setsid samba --foreground --no-process-group -M single --debug-stdout -s "${INSTANCE_CONF}" \
        --maximum-runtime="${MAX_RUNTIME}" </dev/null >>"${LOG_FILE}" 2>&1 9>&- &
    local pid=$!
    printf '%s\n' "${pid}" >"${PID_FILE}"
    local deadline=$((SECONDS + START_TIMEOUT))
    while ! ldap_answers; do
        if grep -q "no network interfaces found" "${LOG_FILE}" 2>/dev/null; then
            stop_pid "${pid}"
            rm -f "${PID_FILE}"
            die "samba found no interface with ${IP}; add it with: sudo ip addr add ${IP}/8 dev lo"
        fi
        if ! kill -0 "${pid}" 2>/dev/null; then
            rm -f "${PID_FILE}"
            print_log_tail
            die "samba exited during start-up"
        fi
        if ((SECONDS >= deadline)); then
            print_log_tail
            stop_pid "${pid}"
            rm -f "${PID_FILE}"
            die "samba did not answer an authenticated LDAP search within ${START_TIMEOUT} s"
        fi
        sleep 0.2
    done
    if ! ldaps_answers; then
        print_log_tail
        die "LDAP answers but LDAPS with CA verification (${CA_FILE}) does not"
    fi
}

# SIGTERM, then SIGKILL after about 10 s. Only ever called for a PID that is_our_samba.
stop_pid() {
    local pid="$1" i
    kill -TERM "${pid}" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "${pid}" 2>/dev/null || return 0
        sleep 0.1
    done
    log "samba (PID ${pid}) ignored SIGTERM for 10 s; sending SIGKILL"
    kill -KILL "${pid}" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "${pid}" 2>/dev/null || return 0
        sleep 0.1
    done
    die "samba (PID ${pid}) survived SIGKILL"
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

write_env() {
    local pid="$1" tmp
    tmp="$(mktemp "${ENV_FILE}.XXXXXX")"
    {
        echo "# Samba AD test bed settings (forest ${FOREST^^}), written by tests/testbed/samba-ad.sh up"
        env_line AD_LDAP_URL "${LDAP_URL}"
        env_line AD_LDAPS_URL "${LDAPS_URL}"
        env_line AD_BASE_DN "${BASE_DN}"
        env_line AD_BIND_DN "${BIND_DN}"
        env_line AD_BIND_PASSWORD "${ADMIN_PASSWORD}"
        env_line AD_SERVICE_ACCOUNT "${SERVICE_ACCOUNT}"
        env_line AD_SERVICE_DN "${SERVICE_DN}"
        env_line AD_SERVICE_PASSWORD "${SERVICE_PASSWORD}"
        env_line AD_CA_FILE "${CA_FILE}"
        env_line AD_PID "${pid}"
        env_line AD_REALM "${REALM}"
        env_line AD_NETBIOS_DOMAIN "${NETBIOS_DOMAIN}"
        env_line AD_INSTANCE_DIR "${INSTANCE_DIR}"
        env_line AD_LOG_FILE "${LOG_FILE}"
        env_line AD_FOREST "${FOREST}"
        env_line AD_IP "${IP}"
        env_line AD_STATE_DIR "${STATE_DIR}"
    } >"${tmp}"
    chmod 0644 "${tmp}"
    mv "${tmp}" "${ENV_FILE}"
}

# ---------------------------------------------------------------------------------------------
# subcommands

do_up() {
    local pid running_ip
    if pid="$(running_pid)"; then
        # The running DC listens where it was started: settings for another address would
        # name a URL nothing answers on.
        running_ip="$(cat "${INSTANCE_DIR}/.version" 2>/dev/null)"
        running_ip="${running_ip##*-}"
        if [[ -n "${running_ip}" && "${running_ip}" != "${IP}" ]]; then
            die "the running DC (PID ${pid}) listens on ${running_ip}, not ${IP}: run \`${SELF} down\` first, or set ${IP_VAR}=${running_ip}"
        fi
        write_env "${pid}"
        cat "${ENV_FILE}"
        return 0
    fi
    # Fail fast, before installing or provisioning.
    ensure_ip_on_lo
    require_free_ports
    if [[ -n "$(missing_packages)" ]]; then
        cmd_install
    fi
    ensure_template
    # A stopped instance cloned from an older template is replaced (its data is throwaway).
    if [[ ! -f "${INSTANCE_CONF}" ]] ||
        [[ "$(cat "${INSTANCE_DIR}/.version" 2>/dev/null)" != "${TEMPLATE_VERSION}-${IP}" ]]; then
        clone_template
    fi
    start_samba
    pid="$(recorded_pid)"
    write_env "${pid}"
    log "running: PID ${pid}, ${LDAP_URL} and ${LDAPS_URL}, settings in ${ENV_FILE}"
    cat "${ENV_FILE}"
}

do_down() {
    local pid
    rm -f "${ENV_FILE}"
    if pid="$(running_pid)"; then
        stop_pid "${pid}"
        log "stopped samba (PID ${pid})"
    else
        log "not running"
    fi
    rm -f "${PID_FILE}"
}

cmd_up() {
    require_root up
    set_paths
    take_lock
    do_up
}

cmd_down() {
    require_root down
    set_paths
    take_lock
    do_down
}

cmd_reset() {
    require_root reset
    set_paths
    take_lock
    ensure_ip_on_lo
    # Install and re-provision (if needed) while the old instance still serves.
    if [[ -n "$(missing_packages)" ]]; then
        cmd_install
    fi
    ensure_template
    do_down
    clone_template
    do_up
}

cmd_save() {
    require_root save
    [[ $# -eq 1 ]] || die "usage: ${SELF} save NAME"
    set_paths
    take_lock
    local dir was_running=0
    dir="$(bed_dir "$1")"
    [[ -f "${INSTANCE_CONF}" ]] || die "no instance to save (run: ${SELF} up)"
    if running_pid >/dev/null 2>&1; then
        was_running=1
    fi
    # A consistent copy: the DC is stopped while its databases are copied.
    do_down
    mkdir -p "${STATE_DIR}/beds"
    rm -rf "${dir}.new"
    cp -a "${INSTANCE_DIR}" "${dir}.new"
    echo "${INSTANCE_DIR}" >"${dir}.new/.origin"
    rm -rf "${dir}"
    mv "${dir}.new" "${dir}"
    log "saved the instance as ${dir} ($(du -sh "${dir}" | cut -f1))"
    if [[ "${was_running}" -eq 1 ]]; then
        do_up >/dev/null
    fi
}

cmd_restore() {
    require_root restore
    [[ $# -eq 1 ]] || die "usage: ${SELF} restore NAME"
    set_paths
    take_lock
    local dir
    dir="$(bed_dir "$1")"
    [[ -f "${dir}/.origin" ]] || die "no saved bed ${dir} (${SELF} save $1 keeps one)"
    [[ "$(cat "${dir}/.version" 2>/dev/null)" == "${TEMPLATE_VERSION}-${IP}" ]] ||
        die "bed ${dir} grew from template $(cat "${dir}/.version" 2>/dev/null || echo '?'), not ${TEMPLATE_VERSION}-${IP}: build it again"
    ensure_ip_on_lo
    do_down
    clone_from "${dir}"
    do_up
}

cmd_status() {
    set_paths
    local pid
    if pid="$(running_pid 2>/dev/null)"; then
        # Where it listens: the address it was started for, which need not be today's setting.
        local ip
        ip="$(cat "${INSTANCE_DIR}/.version" 2>/dev/null)"
        ip="${ip##*-}"
        ip="${ip:-${IP}}"
        echo "running: PID ${pid}, ldap://${ip}:389, ldaps://${ip}:636 (forest ${FOREST^^}, ${REALM})"
    else
        echo "stopped"
    fi
    if template_is_current; then
        echo "template: ${TEMPLATE_DIR} (${TEMPLATE_VERSION})"
    elif [[ -d "${TEMPLATE_DIR}" ]]; then
        echo "template: ${TEMPLATE_DIR} (outdated; re-provisioned by the next up)"
    else
        echo "template: none (provisioned by the next up)"
    fi
    if [[ -f "${INSTANCE_CONF}" ]]; then
        echo "instance: ${INSTANCE_DIR}"
    else
        echo "instance: none"
    fi
    echo "settings: ${ENV_FILE}"
    [[ -n "${pid:-}" ]] || return 3
}

cmd_env() {
    set_paths
    local pid
    pid="$(running_pid 2>/dev/null)" || die "the test bed (forest ${FOREST^^}, ${REALM}) is not running; run: ${SELF} up"
    [[ -f "${ENV_FILE}" ]] || write_env "${pid}"
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
    save) cmd_save "${@:2}" ;;
    restore) cmd_restore "${@:2}" ;;
    status) cmd_status ;;
    env) cmd_env ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "${ARGS[@]}"
