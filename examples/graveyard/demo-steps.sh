# Sourced by examples/demo/run.sh after the second sync (GRAPH_BASE, WB, LDAP, say are set):
# delete a Microsoft 365 group in the cloud and sync, so it moves to the graveyard.
GROUP_ID="b2000000-0000-4000-8000-00000000a001" # Marketing Team
TENANT_ID="7f3e2a10-4b5c-4d6e-8f90-a1b2c3d4e5f6"
TOKEN="$(curl -sf "$GRAPH_BASE/$TENANT_ID/oauth2/v2.0/token" \
    -d client_id=5a1c0f52-8d3e-4f0b-9c61-2e7d4b8a9f10 -d "client_secret=$WRITEBACK_DEMO_GRAPH_SECRET" \
    -d scope=https://graph.microsoft.com/.default -d grant_type=client_credentials | jq -r .access_token)"

say "Deleting 'Marketing Team' in the cloud (soft delete: restorable for 30 days)"
curl -sf -X DELETE -H "Authorization: Bearer $TOKEN" "$GRAPH_BASE/v1.0/groups/$GROUP_ID"

say "writeback sync: the group moves to OU=Graveyard"
"$WB" sync

say "What is now in OU=Graveyard"
ldapsearch "${LDAP[@]}" -LLL -o ldif-wrap=no -b "OU=Graveyard,OU=Cloud Groups,$AD_BASE_DN" \
    '(objectClass=group)' cn info mail
