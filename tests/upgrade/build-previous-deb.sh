#!/usr/bin/env bash
# Rebuilds the previous release's package, the upgrade test's starting point
# (tests/upgrade/writeback_<version>_<arch>.deb), from its git tag: the tagged tree (git archive,
# nothing of the working tree), `cargo build --release --locked -p writeback` as that release's
# README says, then that release's own packaging/build-deb.sh. Not run by `make test`: the .deb
# is kept in the repository (CI clones may be shallow, and the build takes minutes).
#
#   tests/upgrade/build-previous-deb.sh [TAG]     TAG defaults to v0.2.0
#
#   CARGO_TARGET_DIR   where cargo builds (default: a temporary directory, deleted afterwards)
#
# Reproducible: the sources are unpacked under a fixed path (/tmp/writeback-<version>-build),
# the timestamps in the archive are the tagged commit's (SOURCE_DATE_EPOCH), and the paths of
# the sources, cargo's registry and the target directory are remapped out of the binary. The
# same toolchain (rustc --version is printed) gives the same .deb; the sha256 is printed.
set -euo pipefail
umask 022

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT_DIR="${ROOT}/tests/upgrade"
TAG="${1:-v0.2.0}"

log() { printf 'build-previous-deb: %s\n' "$*" >&2; }
die() {
    printf 'build-previous-deb: error: %s\n' "$*" >&2
    exit 1
}

for tool in git cargo rustc dpkg-deb; do
    command -v "${tool}" >/dev/null || die "${tool} not found"
done
commit="$(git -C "${ROOT}" rev-parse --verify --quiet "${TAG}^{commit}")" ||
    die "no tag ${TAG} in ${ROOT}: fetch the tags (git fetch --tags) or create it"
version="$(git -C "${ROOT}" show "${commit}:Cargo.toml" |
    sed -n '/^\[workspace\.package\]/,/^\[/ s/^version *= *"\([^"]*\)".*/\1/p' | head -n1)"
[[ -n "${version}" ]] || die "no workspace version in ${TAG}'s Cargo.toml"
[[ "v${version}" == "${TAG}" ]] || die "${TAG} holds version ${version}: a release tag is v<version>"

SRC="/tmp/writeback-${version}-build"
[[ ! -e "${SRC}" ]] || die "${SRC} exists (another build running, or left over): remove it first"
TARGET="${CARGO_TARGET_DIR:-}"
cleanup() {
    rm -rf "${SRC}"
    [[ -n "${CARGO_TARGET_DIR:-}" ]] || rm -rf "${TARGET}"
}
trap cleanup EXIT
mkdir -p "${SRC}"
[[ -n "${TARGET}" ]] || TARGET="$(mktemp -d)"
mkdir -p "${TARGET}"
TARGET="$(cd "${TARGET}" && pwd)"

log "unpacking ${TAG} (${commit}) into ${SRC}"
git -C "${ROOT}" archive --format=tar "${commit}" | tar -x -C "${SRC}"
SOURCE_DATE_EPOCH="$(git -C "${ROOT}" log -1 --format=%ct "${commit}")"
export SOURCE_DATE_EPOCH

cargo_home="${CARGO_HOME:-${HOME}/.cargo}"
export RUSTFLAGS="--remap-path-prefix=${SRC}=/build/writeback-${version} --remap-path-prefix=${cargo_home}=/cargo --remap-path-prefix=${TARGET}=/build/target"
log "$(rustc --version), $(cargo --version)"
log "cargo build --release --locked -p writeback (several minutes)"
(cd "${SRC}" && CARGO_TARGET_DIR="${TARGET}" cargo build --release --locked -p writeback)

log "packaging with ${TAG}'s packaging/build-deb.sh"
deb="$(cd "${SRC}" && WRITEBACK_DEB_DIR="${TARGET}/debian" packaging/build-deb.sh "${TARGET}/release/writeback")"
cp "${deb}" "${OUT_DIR}/"
deb="${OUT_DIR}/$(basename "${deb}")"
log "wrote ${deb} ($(du -h "${deb}" | cut -f1))"
sha256sum "${deb}"
