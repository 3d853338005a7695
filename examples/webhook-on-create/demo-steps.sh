# Sourced by examples/demo/run.sh after the second sync (GRAPH_BASE, WB, DEMO, say are set):
# start a webhook receiver on 127.0.0.1:8099, create a security group in the cloud, sync, and
# show what the receiver got.
say "Starting a webhook receiver on 127.0.0.1:8099 (it prints to $DEMO/hook.log)"
: >"$DEMO/hook.log"
python3 - "$DEMO/hook.log" <<'PY' &
import http.server, sys
log = open(sys.argv[1], "a", buffering=1)
class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        log.write(self.rfile.read(n).decode() + "\n")
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", 8099), Receiver).serve_forever()
PY
HOOK_PID=$!
trap 'kill "$HOOK_PID" 2>/dev/null || true; kill "$EMU_PID" 2>/dev/null || true; wait "$EMU_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
    (echo >/dev/tcp/127.0.0.1/8099) 2>/dev/null && break
    sleep 0.1
done

TENANT_ID="7f3e2a10-4b5c-4d6e-8f90-a1b2c3d4e5f6"
TOKEN="$(curl -sf "$GRAPH_BASE/$TENANT_ID/oauth2/v2.0/token" \
    -d client_id=5a1c0f52-8d3e-4f0b-9c61-2e7d4b8a9f10 -d "client_secret=$WRITEBACK_DEMO_GRAPH_SECRET" \
    -d scope=https://graph.microsoft.com/.default -d grant_type=client_credentials | jq -r .access_token)"

say "Creating the security group 'Webhook Demo' in the cloud"
curl -sf -X POST -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
    -d '{"displayName": "Webhook Demo", "mailEnabled": false, "securityEnabled": true, "mailNickname": "webhook-demo", "groupTypes": []}' \
    "$GRAPH_BASE/v1.0/groups" >/dev/null

say "writeback plan: the trigger is listed, nothing is posted"
"$WB" plan

say "writeback sync: the group is created, then on_created posts the webhook"
"$WB" sync

say "What the receiver got"
cat "$DEMO/hook.log"
kill "$HOOK_PID" 2>/dev/null || true
