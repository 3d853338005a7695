#!/usr/bin/env bash
# Delegates to Writeback's AD service account the rights it needs on one managed OU of a Samba
# AD DC, and nothing else (docs/OPERATIONS.md, "The AD service account"):
#
#   - create and delete objects of class group in the OU and its sub-OUs  (OA;CI;CCDC;group)
#   - read and write, on the groups below, exactly the attributes Writeback writes
#                                                                   (OA;CIIO;RPWP;<attr>;group)
#
# Run on the DC, as root, once per managed OU:
#
#   delegate-samba.sh [-H <sam.ldb>] [-s <smb.conf>] <managed OU DN> <sAMAccountName> [attribute...]
#
# The attributes default to what the default rules write; give your own list when your rules
# write others. An attribute the schema does not have (the Exchange ones on a forest without the
# Exchange schema) is skipped with a warning. Existing ACEs on the OU are kept; running it twice
# adds nothing new (Samba drops duplicate ACEs).
set -euo pipefail

readonly DEFAULT_ATTRIBUTES=(cn name groupType sAMAccountName displayName description mail
    proxyAddresses member adminDescription msDS-ExternalDirectoryObjectId mailNickname
    msExchRecipientTypeDetails msExchRecipientDisplayType)
# schemaIDGUID of the class group, the same in every AD schema.
readonly GROUP_CLASS=bf967a9c-0de6-11d0-a285-00aa003049e2

die() {
    printf 'delegate-samba: error: %s\n' "$*" >&2
    exit 1
}

SAM_LDB=/var/lib/samba/private/sam.ldb
CONF=()
while getopts 'H:s:' opt; do
    case "${opt}" in
        H) SAM_LDB="${OPTARG}" ;;
        s) CONF=(--configfile="${OPTARG}") ;;
        *) die "usage: $0 [-H sam.ldb] [-s smb.conf] <OU DN> <sAMAccountName> [attribute...]" ;;
    esac
done
shift $((OPTIND - 1))
[[ $# -ge 2 ]] || die "usage: $0 [-H sam.ldb] [-s smb.conf] <OU DN> <sAMAccountName> [attribute...]"
OU="$1"
ACCOUNT="$2"
shift 2
if [[ $# -gt 0 ]]; then ATTRIBUTES=("$@"); else ATTRIBUTES=("${DEFAULT_ATTRIBUTES[@]}"); fi

# One value of one attribute of the single entry a search finds (base64 values are not expected
# for these: SIDs and GUIDs print as text).
value_of() {
    awk -v key="$1:" '$1 == key { print $2; exit }'
}

SID="$(ldbsearch "${CONF[@]}" -H "${SAM_LDB}" "(sAMAccountName=${ACCOUNT})" objectSid | value_of objectSid)"
[[ -n "${SID}" ]] || die "no account with sAMAccountName ${ACCOUNT} in ${SAM_LDB}"
SCHEMA="$(ldbsearch "${CONF[@]}" -H "${SAM_LDB}" -b "" -s base schemaNamingContext | value_of schemaNamingContext)"
[[ -n "${SCHEMA}" ]] || die "cannot read schemaNamingContext from ${SAM_LDB}"

# Every attribute's schemaIDGUID in one search.
filter="(|"
for a in "${ATTRIBUTES[@]}"; do filter="${filter}(lDAPDisplayName=${a})"; done
filter="${filter})"
declare -A GUID=()
while read -r name guid; do
    GUID["${name,,}"]="${guid}"
done < <(ldbsearch "${CONF[@]}" -H "${SAM_LDB}" -b "${SCHEMA}" "${filter}" lDAPDisplayName schemaIDGUID |
    awk '$1 == "lDAPDisplayName:" { n = $2 } $1 == "schemaIDGUID:" { g = $2 } /^$/ && n != "" { print n, g; n = ""; g = "" }
         END { if (n != "") print n, g }')

SDDL="(OA;CI;CCDC;${GROUP_CLASS};;${SID})"
for a in "${ATTRIBUTES[@]}"; do
    g="${GUID[${a,,}]:-}"
    if [[ -z "${g}" ]]; then
        printf 'delegate-samba: not in the schema, skipped: %s\n' "${a}" >&2
        continue
    fi
    SDDL="${SDDL}(OA;CIIO;RPWP;${g};${GROUP_CLASS};${SID})"
done
samba-tool dsacl set "${CONF[@]}" -H "${SAM_LDB}" --objectdn="${OU}" --sddl="${SDDL}" >/dev/null ||
    die "samba-tool dsacl set on ${OU} failed"
printf 'delegate-samba: %s may now create, change and delete groups in %s\n' "${ACCOUNT}" "${OU}" >&2
