#!/usr/bin/env bash
# Delegates to Writeback's AD service account the rights it needs on one managed OU of a Samba
# AD DC, and nothing else (docs/OPERATIONS.md, "The AD service account"):
#
#   - create and delete objects of class group in the OU and its sub-OUs  (OA;CI;CCDC;group)
#   - read and write, on the groups below, exactly the attributes Writeback writes
#                                                                   (OA;CIIO;RPWP;<attr>;group)
#   - for the owner of a group below (the account, for the groups it creates) only read access
#     to the security descriptor: an OWNER RIGHTS ACE replaces the owner's implicit
#     READ_CONTROL and WRITE_DAC, so the account cannot re-ACL its groups (OA;CIIO;RC;;group;OW)
#
# Run on the DC, as root, once per managed OU:
#
#   delegate-samba.sh [-H <sam.ldb>] [-s <smb.conf>] <managed OU DN> <sAMAccountName> [attribute...]
#
# and, with -l, once per link target (`ad.link_targets`: a group, or an OU of groups, outside the
# managed OUs that rules add their groups to with `member_of`): write `member` on that object and
# the groups below it, nothing else (OA;CI;WP;member) :
#
#   delegate-samba.sh -l [-H <sam.ldb>] [-s <smb.conf>] <link target DN> <sAMAccountName>
#
# The account must match exactly one object; its name may hold only letters, digits, '.', '_'
# and '-' (and a final '$' for a managed service account), so nothing in it acts as an LDAP
# filter. The attributes default to what the default rules write; give your own list when your
# rules write others. An attribute the schema does not have (the Exchange ones on a forest
# without the Exchange schema) is skipped with a warning. Existing ACEs on the OU are kept;
# running it twice adds nothing new (Samba drops duplicate ACEs). Samba stores the OWNER RIGHTS
# ACE but does not enforce it (see below).
set -euo pipefail

readonly DEFAULT_ATTRIBUTES=(cn name groupType sAMAccountName displayName description mail
    proxyAddresses member adminDescription msDS-ExternalDirectoryObjectId mailNickname
    msExchRecipientTypeDetails msExchRecipientDisplayType)
# schemaIDGUID of the class group, the same in every AD schema.
readonly GROUP_CLASS=bf967a9c-0de6-11d0-a285-00aa003049e2
# OWNER RIGHTS (SDDL alias OW), written as the SID, which every SDDL parser knows.
readonly OWNER_RIGHTS=S-1-3-4

die() {
    printf 'delegate-samba: error: %s\n' "$*" >&2
    exit 1
}

SAM_LDB=/var/lib/samba/private/sam.ldb
CONF=()
LINK_TARGET=0
while getopts 'lH:s:' opt; do
    case "${opt}" in
        l) LINK_TARGET=1 ;;
        H) SAM_LDB="${OPTARG}" ;;
        s) CONF=(--configfile="${OPTARG}") ;;
        *) die "usage: $0 [-l] [-H sam.ldb] [-s smb.conf] <OU DN> <sAMAccountName> [attribute...]" ;;
    esac
done
shift $((OPTIND - 1))
[[ $# -ge 2 ]] || die "usage: $0 [-H sam.ldb] [-s smb.conf] <OU DN> <sAMAccountName> [attribute...]"
OU="$1"
ACCOUNT="$2"
shift 2
if ((LINK_TARGET)); then
    [[ $# -eq 0 ]] || die "-l takes no attribute list: a link target only needs member"
    ATTRIBUTES=(member)
elif [[ $# -gt 0 ]]; then ATTRIBUTES=("$@"); else ATTRIBUTES=("${DEFAULT_ATTRIBUTES[@]}"); fi

# The names go into LDAP filters: checked here, before the DC's database is opened, against
# the filter's metacharacters and then against a plain charset (C locale: ASCII ranges).
validate_account() {
    local LC_ALL=C name="$1"
    case "${name}" in
        *[\*\(\)\\]*)
            die "invalid sAMAccountName '${name}': it contains an LDAP filter metacharacter (* ( ) \\ or NUL); give the account's exact name, not a pattern" ;;
    esac
    [[ "${name}" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,19}[$]?$ && "${name}" != *. ]] ||
        die "invalid sAMAccountName '${name}': use 1-20 characters of A-Z a-z 0-9 . _ - (starting with a letter or digit, not ending in '.'), optionally followed by '$'"
}
validate_attribute() {
    local LC_ALL=C name="$1"
    [[ "${name}" =~ ^[A-Za-z][A-Za-z0-9-]*$ ]] ||
        die "invalid attribute name '${name}': an LDAP display name has only A-Z a-z 0-9 and '-', starting with a letter"
}
validate_account "${ACCOUNT}"
for a in "${ATTRIBUTES[@]}"; do validate_attribute "${a}"; done

# One value of one attribute of the single entry a search finds (base64 values are not expected
# for these: SIDs and GUIDs print as text).
value_of() {
    awk -v key="$1:" '$1 == key { print $2; exit }'
}

# The account: exactly one object with that sAMAccountName (matching is case-insensitive).
found="$(ldbsearch "${CONF[@]}" -H "${SAM_LDB}" "(sAMAccountName=${ACCOUNT})" objectSid)" ||
    die "cannot search ${SAM_LDB} for sAMAccountName ${ACCOUNT}"
count="$(awk '$1 == "dn:" { n++ } END { print n + 0 }' <<<"${found}")"
[[ "${count}" -eq 1 ]] ||
    die "sAMAccountName ${ACCOUNT} matches ${count} objects in ${SAM_LDB}, not exactly 1"
SID="$(value_of objectSid <<<"${found}")"
[[ -n "${SID}" ]] || die "the object with sAMAccountName ${ACCOUNT} has no objectSid"
SCHEMA="$(ldbsearch "${CONF[@]}" -H "${SAM_LDB}" -b "" -s base schemaNamingContext | value_of schemaNamingContext)" || true
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

if ((LINK_TARGET)); then
    g="${GUID[member]:-}"
    [[ -n "${g}" ]] || die "the schema has no member attribute"
    samba-tool dsacl set "${CONF[@]}" -H "${SAM_LDB}" --objectdn="${OU}" \
        --sddl="(OA;CI;WP;${g};;${SID})" >/dev/null ||
        die "samba-tool dsacl set on ${OU} failed"
    printf 'delegate-samba: %s may now add and remove members of %s (and the groups below it)\n' "${ACCOUNT}" "${OU}" >&2
    exit 0
fi

SDDL="(OA;CI;CCDC;${GROUP_CLASS};;${SID})"
for a in "${ATTRIBUTES[@]}"; do
    g="${GUID[${a,,}]:-}"
    if [[ -z "${g}" ]]; then
        printf 'delegate-samba: not in the schema, skipped: %s\n' "${a}" >&2
        continue
    fi
    SDDL="${SDDL}(OA;CIIO;RPWP;${g};${GROUP_CLASS};${SID})"
done
# Windows Server 2008 and later honour OWNER RIGHTS; Samba's AD DC (4.17, sec_access_check_ds) does not and always grants the owner READ_CONTROL and WRITE_DAC, so there this ACE is inert.
SDDL="${SDDL}(OA;CIIO;RC;;${GROUP_CLASS};${OWNER_RIGHTS})"
samba-tool dsacl set "${CONF[@]}" -H "${SAM_LDB}" --objectdn="${OU}" --sddl="${SDDL}" >/dev/null ||
    die "samba-tool dsacl set on ${OU} failed"
printf 'delegate-samba: %s may now create, change and delete groups in %s\n' "${ACCOUNT}" "${OU}" >&2
