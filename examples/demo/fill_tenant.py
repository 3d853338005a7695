#!/usr/bin/env python3
"""Fills the demo tenant template with the SIDs and GUIDs of the demo users in AD.

stdin: `ldapsearch -LLL ... sAMAccountName objectSid objectGUID` output (LDIF).
argv[1]: the template; the filled tenant JSON goes to stdout.
"""
import base64
import struct
import sys
import uuid


def sid_to_str(b: bytes) -> str:
    rev, count = b[0], b[1]
    auth = int.from_bytes(b[2:8], "big")
    subs = struct.unpack("<" + "I" * count, b[8 : 8 + 4 * count])
    return "S-%d-%d-%s" % (rev, auth, "-".join(str(s) for s in subs))


def parse_ldif(text: str):
    entries, cur = [], {}
    # Unfold continuation lines first.
    lines = []
    for line in text.splitlines():
        if line.startswith(" ") and lines:
            lines[-1] += line[1:]
        else:
            lines.append(line)
    for line in lines:
        if not line.strip():
            if cur:
                entries.append(cur)
            cur = {}
            continue
        if line.startswith("#"):
            continue
        if ":: " in line:
            k, v = line.split(":: ", 1)
            cur[k] = base64.b64decode(v)
        elif ": " in line:
            k, v = line.split(": ", 1)
            cur[k] = v
    if cur:
        entries.append(cur)
    return entries


def main() -> None:
    template = open(sys.argv[1], encoding="utf-8").read()
    for e in parse_ldif(sys.stdin.read()):
        sam = e.get("sAMAccountName")
        if isinstance(sam, bytes):
            sam = sam.decode()
        if not sam or "objectSid" not in e or "objectGUID" not in e:
            continue
        sid = sid_to_str(e["objectSid"])
        immutable = base64.b64encode(e["objectGUID"]).decode()
        template = template.replace("{{SID:%s}}" % sam, sid)
        template = template.replace("{{IMMUTABLE:%s}}" % sam, immutable)
    if "{{" in template:
        missing = sorted(set(part.split("}}")[0] for part in template.split("{{")[1:]))
        sys.exit("demo users missing in AD for: " + ", ".join(missing))
    sys.stdout.write(template)


if __name__ == "__main__":
    main()
