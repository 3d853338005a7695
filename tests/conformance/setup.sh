#!/usr/bin/env bash
# Create <repo>/.venv with the machine's python3 and install the pinned requirements of the
# msgraph-sdk conformance test. Idempotent: does nothing when every pin is already installed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$repo/.venv"
req="$here/requirements.txt"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "setup.sh: creating $venv" >&2
    python3 -m venv "$venv"
fi

# Exit 0 when every `name==version` pin is installed at exactly that version.
satisfied() {
    "$venv/bin/python" - "$req" <<'PY'
import re, sys
from importlib import metadata

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

installed = {norm(d.metadata["Name"]): d.version for d in metadata.distributions()}
missing = []
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, version = line.partition("==")
    if installed.get(norm(name)) != version.strip():
        missing.append(line)
if missing:
    print("setup.sh: not installed yet: " + ", ".join(missing), file=sys.stderr)
    sys.exit(1)
PY
}

if satisfied 2>/dev/null; then
    exit 0
fi
echo "setup.sh: installing $req into $venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
satisfied
