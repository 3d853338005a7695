#!/usr/bin/env bash
# Builds the writeback Debian package from a built binary, with dpkg-deb from a staged tree.
#
#   packaging/build-deb.sh [BINARY]
#
#   BINARY / WRITEBACK_BIN   the writeback binary to package (default target/release/writeback)
#   WRITEBACK_DOCS_BIN       writeback-docs, which writes the man pages and completions
#                            (default: beside BINARY; `cargo build -p writeback` builds both)
#   WRITEBACK_DEB_DIR        where the .deb goes (default target/debian)
#   WRITEBACK_DEB_MAINTAINER the Maintainer field
#   WRITEBACK_DEB_SIMPLE_ONLY=1  package a binary built without Kerberos binds (refused
#                            otherwise: domains that refuse simple binds need them)
#
# The version is the workspace's (Cargo.toml). Prints the path of the .deb on stdout.
#
# Layout: /usr/bin/writeback; /etc/writeback/writeback.toml and /etc/writeback/rules (the
# default rules and their tests; conffiles); /usr/share/writeback/stdlib, linked from
# /etc/writeback/stdlib, where the binary looks by default (`stdlib` beside the rules folder);
# the systemd unit; man pages; bash, zsh and fish completions; docs; Prometheus alert rules and a
# Grafana dashboard in /usr/share/writeback/monitoring.
set -euo pipefail
umask 022

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"

die() {
    printf 'build-deb: error: %s\n' "$*" >&2
    exit 1
}

BIN="${1:-${WRITEBACK_BIN:-target/release/writeback}}"
[[ -x "${BIN}" ]] || die "no binary at ${BIN}: build it (cargo build --release -p writeback) or pass its path"
DOCS_BIN="${WRITEBACK_DOCS_BIN:-$(dirname "${BIN}")/writeback-docs}"
[[ -x "${DOCS_BIN}" ]] || die "no writeback-docs at ${DOCS_BIN}: it is built with the writeback binary (cargo build -p writeback), or set WRITEBACK_DOCS_BIN"
OUT_DIR="${WRITEBACK_DEB_DIR:-target/debian}"
# The package binds with Kerberos unless asked not to: `--version` says "(kerberos)" when the
# binary was built with the feature.
if ! "${BIN}" --version | grep -q '(kerberos)'; then
    [[ "${WRITEBACK_DEB_SIMPLE_ONLY:-}" == 1 ]] ||
        die "${BIN} cannot bind with Kerberos (\`$("${BIN}" --version)\`): build it with \`cargo build --release -p writeback --features kerberos\` (needs clang, libclang-dev, libkrb5-dev), or set WRITEBACK_DEB_SIMPLE_ONLY=1 for a package with simple binds only"
fi
MAINTAINER="${WRITEBACK_DEB_MAINTAINER:-Writeback maintainers <writeback@localhost>}"

for tool in dpkg-deb dpkg-shlibdeps strip gzip; do
    command -v "${tool}" >/dev/null || die "${tool} not found (Debian packages dpkg-dev, binutils, gzip)"
done

# The version: host/Cargo.toml's own, or the workspace's when it inherits it.
version="$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' host/Cargo.toml | head -n1)"
if [[ -z "${version}" ]]; then
    version="$(sed -n '/^\[workspace\.package\]/,/^\[/ s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n1)"
fi
[[ -n "${version}" ]] || die "no version found in host/Cargo.toml or the workspace Cargo.toml"
arch="$(dpkg --print-architecture)"

# Reproducible timestamps in the archive: the last commit's time when built from git.
if [[ -z "${SOURCE_DATE_EPOCH:-}" ]] && git rev-parse --git-dir >/dev/null 2>&1; then
    SOURCE_DATE_EPOCH="$(git log -1 --format=%ct 2>/dev/null || true)"
    [[ -n "${SOURCE_DATE_EPOCH}" ]] && export SOURCE_DATE_EPOCH
fi

WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT
STAGE="${WORK}/stage"
mkdir -p "${STAGE}/DEBIAN"

# Copies the files of SRC matching the find expression into DST, keeping subfolders.
copy_tree() {
    local src="$1" dst="$2"
    shift 2
    (cd "${src}" && find . -type f \( "$@" \) -print0) | while IFS= read -r -d '' f; do
        install -D -m 0644 "${src}/${f}" "${dst}/${f}"
    done
}

# The binary, stripped (a debug build is mostly debug info).
install -D -m 0755 "${BIN}" "${STAGE}/usr/bin/writeback"
strip --strip-unneeded "${STAGE}/usr/bin/writeback"

# Configuration and default rules (conffiles), the stdlib (not configuration: updated with the
# package) and the link that makes the binary find it. The config is not world-readable from
# the start; postinst gives it to the group writeback (root:writeback 0640), which only exists
# on the target.
install -D -m 0640 packaging/writeback.toml "${STAGE}/etc/writeback/writeback.toml"
copy_tree scripts "${STAGE}/etc/writeback/rules" -name '*.rhai' -o -name '*.toml'
copy_tree stdlib "${STAGE}/usr/share/writeback/stdlib" -name '*.rhai'
ln -s /usr/share/writeback/stdlib "${STAGE}/etc/writeback/stdlib"

install -D -m 0644 packaging/writeback.service "${STAGE}/lib/systemd/system/writeback.service"
# Run on a Samba DC to delegate the service account's rights (docs/OPERATIONS.md).
install -D -m 0755 packaging/delegate-samba.sh "${STAGE}/usr/share/writeback/delegate-samba.sh"

# Alert rules and dashboard, for the operator's Prometheus and Grafana to load (not conffiles:
# copied or referenced from there, and updated with the package).
for f in writeback-alerts.yml writeback-dashboard.json; do
    install -D -m 0644 "packaging/monitoring/${f}" "${STAGE}/usr/share/writeback/monitoring/${f}"
done

# Man pages and completions, generated from the CLI definition the binary was built from.
"${DOCS_BIN}" "${WORK}/docs" >/dev/null
mkdir -p "${STAGE}/usr/share/man/man1"
for page in "${WORK}"/docs/*.1; do
    gzip -9n <"${page}" >"${STAGE}/usr/share/man/man1/$(basename "${page}").gz"
done
chmod 0644 "${STAGE}"/usr/share/man/man1/*.gz
install -D -m 0644 "${WORK}/docs/writeback.bash" "${STAGE}/usr/share/bash-completion/completions/writeback"
install -D -m 0644 "${WORK}/docs/_writeback" "${STAGE}/usr/share/zsh/vendor-completions/_writeback"
install -D -m 0644 "${WORK}/docs/writeback.fish" "${STAGE}/usr/share/fish/vendor_completions.d/writeback.fish"

DOC="${STAGE}/usr/share/doc/writeback"
install -d "${DOC}"
install -m 0644 README.md docs/OPERATIONS.md docs/SCRIPTING.md docs/ARCHITECTURE.md "${DOC}/"
cat >"${DOC}/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: writeback

Files: *
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF
chmod 0644 "${DOC}/copyright"

# Maintainer scripts and the list of conffiles (every regular file under /etc).
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "${STAGE}/DEBIAN/"
(cd "${STAGE}" && find etc -type f | sort | sed 's|^|/|') >"${STAGE}/DEBIAN/conffiles"

# Shared-library dependencies of the binary, as dpkg-shlibdeps computes them (it wants a
# debian/control to exist in the folder it runs in).
mkdir -p "${WORK}/src/debian"
printf 'Source: writeback\n\nPackage: writeback\nArchitecture: any\n' >"${WORK}/src/debian/control"
shlibs="$(cd "${WORK}/src" && dpkg-shlibdeps -O "${STAGE}/usr/bin/writeback" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')"
[[ -n "${shlibs}" ]] || die "dpkg-shlibdeps found no dependencies for the binary"

installed_size="$(du -sk --exclude=DEBIAN "${STAGE}" | cut -f1)"
cat >"${STAGE}/DEBIAN/control" <<EOF
Package: writeback
Version: ${version}
Architecture: ${arch}
Maintainer: ${MAINTAINER}
Installed-Size: ${installed_size}
Depends: ${shlibs}, adduser
Section: admin
Priority: optional
Description: Microsoft Entra ID groups written into on-premises Active Directory
 Writeback reads groups from Microsoft Graph with delta queries, turns each one into the
 AD group its Rhai rules describe, compares that with the AD objects it owns, and writes
 only the difference over LDAP, with a preview of every change first.
 .
 The writeback service (writeback run) polls Graph, applies changes within seconds,
 reconciles drift and reloads the rules when they are edited.
EOF

mkdir -p "${OUT_DIR}"
deb="${OUT_DIR}/writeback_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "${STAGE}" "${deb}" >/dev/null
printf '%s\n' "${deb}"
