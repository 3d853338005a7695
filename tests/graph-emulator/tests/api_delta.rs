//! Delta query: rounds, paging, large-group splitting, changes, tokens, resets.

mod api_common;

use api_common::*;
use serde_json::json;

#[tokio::test]
async fn full_round_pages_and_repeats_the_large_group() {
    let emu = start(&["--delta-page-size", "2", "--member-page-size", "2"]);
    let (pages, delta_link) = emu
        .delta_round("groups/delta()?$select=displayName,members", &[])
        .await;
    assert!(delta_link.starts_with(&format!("{}/v1.0/groups/delta?$deltatoken=", emu.base)));
    for p in &pages[..pages.len() - 1] {
        let next = p["@odata.nextLink"].as_str().unwrap();
        assert!(
            next.starts_with(&format!("{}/v1.0/groups/delta?$skiptoken=", emu.base)),
            "{next}"
        );
    }
    let merged = merge(&pages);
    assert_eq!(merged.len(), 4);
    assert_eq!(merged[G_M365].added, set(&[U1, U2]));
    assert_eq!(merged[G_HR].added, set(&[U1, U2]));
    assert!(merged[G_EMPTY].added.is_empty());
    assert_eq!(merged[G_BIG].added, set(&[U1, U2, U3, U4, U5, G_HR]));
    // 6 members at 2 per page: the big group is on three pages, each page only that group.
    assert_eq!(merged[G_BIG].appearances, 3);
    for p in &pages {
        let items = p["value"].as_array().unwrap();
        if items.iter().any(|i| i["id"] == G_BIG) {
            assert_eq!(items.len(), 1, "a split group fills its page: {p}");
            assert_eq!(items[0]["displayName"], "LargeGroup");
            assert!(items[0]["members@delta"].as_array().unwrap().len() <= 2);
        }
    }
    // The nested group is typed as a group.
    let nested = pages
        .iter()
        .flat_map(|p| p["value"].as_array().unwrap().clone())
        .flat_map(|i| i["members@delta"].as_array().cloned().unwrap_or_default())
        .find(|m| m["id"] == G_HR)
        .unwrap();
    assert_eq!(nested["@odata.type"], "#microsoft.graph.group");
    // Only selected properties and id.
    for item in pages
        .iter()
        .flat_map(|p| p["value"].as_array().unwrap().clone())
    {
        for k in item.as_object().unwrap().keys() {
            assert!(
                ["id", "displayName", "members@delta"].contains(&k.as_str()),
                "{k}"
            );
        }
    }
    // The first page's context names the select.
    assert_eq!(
        pages[0]["@odata.context"],
        format!("{}/v1.0/$metadata#groups(displayName,members)", emu.base)
    );
}

#[tokio::test]
async fn all_route_spellings_and_encoded_dollar() {
    let emu = start(&[]);
    for path in [
        "groups/delta",
        "groups/delta()",
        "groups/microsoft.graph.delta",
        "groups/microsoft.graph.delta()",
        "groups/delta?%24select=displayName",
        "users/delta()?$select=displayName,onPremisesSecurityIdentifier",
    ] {
        let (pages, link) = emu.delta_round(path, &[]).await;
        assert!(link.contains("$deltatoken="), "{path}");
        assert!(!merge(&pages).is_empty(), "{path}");
    }
    // No $select on groups: members@delta included with the default properties.
    let (pages, _) = emu.delta_round("groups/delta", &[]).await;
    let m = merge(&pages);
    assert_eq!(m[G_HR].added, set(&[U1, U2]));
    assert_eq!(m[G_HR].props["groupTypes"], json!([]));
    // Users: the selected on-prem property.
    let (pages, _) = emu
        .delta_round("users/delta?$select=onPremisesSecurityIdentifier", &[])
        .await;
    let m = merge(&pages);
    assert_eq!(
        m[U1].props["onPremisesSecurityIdentifier"],
        "S-1-5-21-1-2-3-1101"
    );
    assert!(
        !m[U2].props.contains_key("onPremisesSecurityIdentifier"),
        "never set → omitted"
    );
}

#[tokio::test]
async fn changes_through_the_write_api_show_in_the_next_round() {
    let emu = start(&["--delta-page-size", "2"]);
    let (_, link) = emu
        .delta_round("groups/delta?$select=displayName,members", &[])
        .await;

    let created = emu
        .post(
            "groups",
            json!({"displayName": "Writeback Created", "mailEnabled": false, "mailNickname": "wbcreated",
                   "securityEnabled": true, "groupTypes": []}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let new_id = created.body["id"].as_str().unwrap().to_string();
    let r = emu
        .post(
            &format!("groups/{new_id}/members/$ref"),
            json!({"@odata.id": format!("{}/v1.0/directoryObjects/{U5}", emu.base)}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = emu
        .post(
            &format!("groups/{G_HR}/members/$ref"),
            json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{U3}")}),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        emu.delete(&format!("groups/{G_HR}/members/{U1}/$ref"))
            .await
            .status,
        204
    );
    assert_eq!(emu.delete(&format!("groups/{G_M365}")).await.status, 204);
    assert_eq!(emu.delete(&format!("groups/{G_EMPTY}")).await.status, 204);
    // An untracked property change does not surface the group.
    assert_eq!(
        emu.patch(&format!("groups/{G_BIG}"), json!({"description": "x"}))
            .await
            .status,
        204
    );

    let (pages, link2) = emu.delta_round(&link, &[]).await;
    let m = merge(&pages);
    assert_eq!(
        m.keys().cloned().collect::<Vec<_>>().len(),
        4,
        "only changed groups surface: {m:?}"
    );
    assert_eq!(m[&new_id].props["displayName"], "Writeback Created");
    assert_eq!(m[&new_id].added, set(&[U5]));
    assert_eq!(m[G_HR].added, set(&[U3]));
    assert_eq!(m[G_HR].removed, set(&[U1]));
    assert_eq!(
        m[G_HR].props["displayName"], "sg-HR",
        "non-minimal: tracked props too"
    );
    assert_eq!(m[G_M365].removed_reason.as_deref(), Some("changed"));
    assert_eq!(m[G_EMPTY].removed_reason.as_deref(), Some("deleted"));
    assert_eq!(m[G_EMPTY].props.len(), 1, "removed = id + @removed only");

    // Replaying the same deltaLink is idempotent.
    let (again, _) = emu.delta_round(&link, &[]).await;
    assert_eq!(merge(&again), m);

    // Nothing changed since: one page, empty, with a deltaLink.
    let (quiet, _) = emu.delta_round(&link2, &[]).await;
    assert_eq!(quiet.len(), 1);
    assert_eq!(quiet[0]["value"], json!([]));

    // Restore the M365 group: it reappears as a new object with its members.
    let r = emu
        .post(
            &format!("directory/deletedItems/{G_M365}/restore"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (pages, _) = emu.delta_round(&link2, &[]).await;
    let m = merge(&pages);
    assert_eq!(m[G_M365].removed_reason, None);
    assert_eq!(m[G_M365].added, set(&[U1, U2]));
    assert_eq!(m[G_M365].props["displayName"], "All Company");
}

#[tokio::test]
async fn user_soft_delete_keeps_memberships_and_purge_removes_them() {
    let emu = start(&[]);
    let (_, users_link) = emu
        .delta_round("users/delta?$select=displayName", &[])
        .await;
    let (_, groups_link) = emu.delta_round("groups/delta?$select=members", &[]).await;
    assert_eq!(emu.delete(&format!("users/{U2}")).await.status, 204);

    let (pages, users_link2) = emu.delta_round(&users_link, &[]).await;
    assert_eq!(merge(&pages)[U2].removed_reason.as_deref(), Some("changed"));
    let (pages, groups_link2) = emu.delta_round(&groups_link, &[]).await;
    assert!(merge(&pages).is_empty(), "soft delete is no member removal");

    let r = emu.delete(&format!("directory/deletedItems/{U2}")).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let (pages, _) = emu.delta_round(&users_link2, &[]).await;
    assert_eq!(merge(&pages)[U2].removed_reason.as_deref(), Some("deleted"));
    let (pages, _) = emu.delta_round(&groups_link2, &[]).await;
    let m = merge(&pages);
    for g in [G_M365, G_HR, G_BIG] {
        assert_eq!(m[g].removed, set(&[U2]), "{g}");
    }
}

#[tokio::test]
async fn return_minimal_sends_only_changed_properties() {
    let emu = start(&[]);
    let (_, link) = emu
        .delta_round(
            "groups/delta?$select=displayName,description,mailNickname",
            &[],
        )
        .await;
    let r = emu
        .patch(
            &format!("groups/{G_HR}"),
            json!({"description": null, "displayName": "HR"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);

    let r = emu.get_with(&link, &[("Prefer", "return=minimal")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Preference-Applied"), Some("return=minimal"));
    assert_eq!(
        r.body["value"],
        json!([{"id": G_HR, "displayName": "HR", "description": null}])
    );
    // Without the preference: every tracked property.
    let r = emu.get(&link).await;
    assert_eq!(
        r.body["value"],
        json!([{"id": G_HR, "displayName": "HR", "description": null, "mailNickname": "sghr"}])
    );
}

#[tokio::test]
async fn deltatoken_latest_gives_a_link_and_no_data() {
    let emu = start(&[]);
    let r = emu
        .get("groups/delta?$deltatoken=latest&$select=displayName")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["value"], json!([]));
    let link = r.body["@odata.deltaLink"].as_str().unwrap().to_string();
    assert!(r.body.get("@odata.nextLink").is_none());
    assert_eq!(
        emu.patch(&format!("groups/{G_HR}"), json!({"displayName": "HR2"}))
            .await
            .status,
        204
    );
    let (pages, _) = emu.delta_round(&link, &[]).await;
    let m = merge(&pages);
    assert_eq!(m.len(), 1);
    assert_eq!(m[G_HR].props["displayName"], "HR2");
}

#[tokio::test]
async fn tokens_expire_after_seven_days_of_emulator_time() {
    let emu = start(&[]);
    let (_, link) = emu.delta_round("groups/delta", &[]).await;
    emu.control("clock/advance", Some(json!({"seconds": 6 * 86400})))
        .await;
    // Still valid after six days (the access token expired, get a new one).
    let token = emu.fresh_token().await;
    let ok = emu
        .http
        .get(&link)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    emu.control("clock/advance", Some(json!({"seconds": 2 * 86400})))
        .await;
    let token = emu.fresh_token().await;
    let r = emu
        .http
        .get(&link)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "syncStateNotFound");
    assert_eq!(
        body["error"]["message"],
        "The sync state generation is not found. The delta token is expired and data must be synchronized again."
    );
}

#[tokio::test]
async fn invalidated_tokens_and_forced_reset() {
    let emu = start(&[]);
    let (_, link) = emu
        .delta_round("groups/delta?$select=displayName,members", &[])
        .await;
    emu.control("delta/reset", Some(json!({}))).await;
    let r = emu.get(&link).await;
    r.graph_error(410, "resyncRequired");
    assert_eq!(
        r.header("Location").unwrap(),
        format!("{}/v1.0/groups/delta?$select=displayName,members", emu.base)
    );
    // Only the next request was reset; following the Location restarts the round.
    assert_eq!(emu.get(&link).await.status, 200);
    let (_, fresh) = emu.delta_round(r.header("Location").unwrap(), &[]).await;

    emu.control("delta/invalidate", Some(json!({}))).await;
    emu.get(&link).await.graph_error(400, "syncStateNotFound");
    emu.get(&fresh).await.graph_error(400, "syncStateNotFound");
    let (_, newest) = emu.delta_round("groups/delta", &[]).await;
    assert_eq!(emu.get(&newest).await.status, 200);
}

#[tokio::test]
async fn malformed_and_misspelled_tokens() {
    let emu = start(&[]);
    let (_, link) = emu.delta_round("groups/delta", &[]).await;
    let msg = emu
        .get("groups/delta?$deltatoken=not-a-token")
        .await
        .graph_error(400, "Request_BadRequest");
    assert_eq!(msg, "Badly formed token.");
    let mutated = format!("{}x", link);
    let msg = emu
        .get(&mutated)
        .await
        .graph_error(400, "Request_BadRequest");
    assert_eq!(msg, "Badly formed token.");
    let r = emu.get("groups/delta?deltatoken=latest").await;
    let msg = r.graph_error(400, "Request_BadRequest");
    assert_eq!(msg, "Unrecognized query argument specified: 'deltatoken'.");
    assert!(r.header("Location").is_none());
}

#[tokio::test]
async fn id_filter_limits_and_tracks_only_those_ids() {
    let emu = start(&[]);
    let (pages, link) = emu
        .delta_round(
            &format!("groups/delta?$filter=id eq '{G_HR}' or id eq '{G_EMPTY}'"),
            &[],
        )
        .await;
    assert_eq!(merge(&pages).keys().cloned().collect::<Vec<_>>(), {
        let mut v = vec![G_HR.to_string(), G_EMPTY.to_string()];
        v.sort();
        v
    });
    emu.patch(&format!("groups/{G_BIG}"), json!({"displayName": "Big"}))
        .await;
    emu.patch(&format!("groups/{G_HR}"), json!({"displayName": "HR"}))
        .await;
    let (pages, _) = emu.delta_round(&link, &[]).await;
    assert_eq!(
        merge(&pages).keys().cloned().collect::<Vec<_>>(),
        vec![G_HR.to_string()]
    );

    let many: Vec<String> = (0..51)
        .map(|i| format!("id eq '00000000-0000-0000-0000-{i:012}'"))
        .collect();
    let r = emu
        .get(&format!("groups/delta?$filter={}", many.join(" or ")))
        .await;
    r.graph_error(400, "Request_BadRequest");
    emu.get("groups/delta?$filter=startswith(displayName,'x')")
        .await
        .graph_error(400, "Request_UnsupportedQuery");
}

#[tokio::test]
async fn empty_page_is_injected_into_every_round() {
    let emu = start(&["--empty-delta-page"]);
    let (pages, link) = emu.delta_round("groups/delta", &[]).await;
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[1]["value"], json!([]));
    assert!(pages[1]["@odata.nextLink"].is_string());
    assert_eq!(merge(&pages).len(), 4);
    let (pages, _) = emu.delta_round(&link, &[]).await;
    assert!(pages
        .iter()
        .any(|p| p["value"] == json!([]) && p["@odata.nextLink"].is_string()));
    // Switched off at run time.
    emu.control("settings", Some(json!({"emptyDeltaPage": false})))
        .await;
    let (pages, _) = emu.delta_round("groups/delta", &[]).await;
    assert_eq!(pages.len(), 1);
}

#[tokio::test]
async fn member_changes_of_a_large_group_are_split_too() {
    let emu = start(&["--member-page-size", "1"]);
    let (_, link) = emu.delta_round("groups/delta?$select=members", &[]).await;
    for u in [U3, U4, U5] {
        let r = emu
            .post(
                &format!("groups/{G_HR}/members/$ref"),
                json!({"@odata.id": format!("directoryObjects/{u}")}),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.body);
    }
    let (pages, _) = emu.delta_round(&link, &[]).await;
    assert_eq!(pages.len(), 3);
    let m = merge(&pages);
    assert_eq!(m[G_HR].added, set(&[U3, U4, U5]));
    assert_eq!(m[G_HR].appearances, 3);
}

#[tokio::test]
async fn a_replayed_round_brings_a_split_group_back_after_other_objects() {
    let emu = start(&["--member-page-size", "1", "--delta-replay"]);
    let (_, link) = emu.delta_round("groups/delta?$select=members", &[]).await;
    for u in [U3, U4] {
        let r = emu
            .post(
                &format!("groups/{G_HR}/members/$ref"),
                json!({"@odata.id": format!("directoryObjects/{u}")}),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.body);
    }
    let r = emu
        .post(
            &format!("groups/{G_EMPTY}/members/$ref"),
            json!({"@odata.id": format!("directoryObjects/{U5}")}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let (pages, _) = emu.delta_round(&link, &[]).await;
    // Where each group's entries are, in the order of the round.
    let ids: Vec<String> = pages
        .iter()
        .flat_map(|p| p["value"].as_array().cloned().unwrap_or_default())
        .map(|e| e["id"].as_str().unwrap_or_default().to_string())
        .collect();
    let at = |g: &str| -> Vec<usize> {
        ids.iter()
            .enumerate()
            .filter(|(_, id)| id.as_str() == g)
            .map(|(i, _)| i)
            .collect()
    };
    let (hr, other) = (at(G_HR), at(G_EMPTY));
    assert_eq!(hr.len(), 4, "{ids:?}");
    assert!(
        other.iter().any(|o| hr[0] < *o && *o < hr[3]),
        "HR comes back after another group: {ids:?}"
    );
    // Merged per id, the replays change nothing.
    let m = merge(&pages);
    assert_eq!(m[G_HR].added, set(&[U3, U4]));
    assert_eq!(m[G_EMPTY].added, set(&[U5]));
    assert!(m[G_HR].removed.is_empty());
}

#[tokio::test]
async fn replacing_the_tenant_resets_delta() {
    let emu = start(&[]);
    let (_, link) = emu.delta_round("groups/delta", &[]).await;
    let mut t = tenant();
    t["groups"] = json!([{"id": G_HR, "displayName": "only", "groupTypes": [], "mailEnabled": false,
                          "securityEnabled": true, "mailNickname": "only", "members": [U1]}]);
    let r = emu
        .http
        .post(format!("{}/_emulator/tenant", emu.base))
        .json(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = emu.get(&link).await;
    r.graph_error(410, "resyncRequired");
    assert_eq!(
        r.header("Location").unwrap(),
        format!("{}/v1.0/groups/delta", emu.base)
    );
    let (pages, _) = emu.delta_round(r.header("Location").unwrap(), &[]).await;
    let m = merge(&pages);
    assert_eq!(m.len(), 1);
    assert_eq!(m[G_HR].added, set(&[U1]));
    // A bad tenant file is refused and changes nothing.
    let r = emu
        .http
        .post(format!("{}/_emulator/tenant", emu.base))
        .json(&json!({"groups": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(emu.get(&format!("groups/{G_HR}")).await.status, 200);
}

const D1: &str = "5b3a0d11-8f2e-4c1a-9b7d-0e1f2a3b4c01";
const D2: &str = "5b3a0d11-8f2e-4c1a-9b7d-0e1f2a3b4c02";

/// The test tenant with a hybrid-joined device and a cloud-only one, both members of sg-HR.
fn tenant_with_devices() -> serde_json::Value {
    let mut t = tenant();
    t["devices"] = json!([
        {"id": D1, "displayName": "PC-01", "deviceId": "1d0c9a2e-0000-4000-8000-000000000001",
         "accountEnabled": true, "operatingSystem": "Windows", "operatingSystemVersion": "10.0",
         "trustType": "ServerAd", "onPremisesSyncEnabled": true,
         "onPremisesSecurityIdentifier": "S-1-5-21-1-2-3-1601"},
        {"id": D2, "displayName": "Kiosk", "deviceId": "1d0c9a2e-0000-4000-8000-000000000002",
         "accountEnabled": true, "operatingSystem": "Windows", "operatingSystemVersion": "10.0",
         "trustType": "AzureAd"},
    ]);
    let hr = t["groups"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|g| g["id"] == G_HR)
        .unwrap();
    hr["members"] = json!([U1, U2, D1, D2]);
    t
}

#[tokio::test]
async fn devices_have_their_own_delta_and_are_typed_members_of_groups() {
    let emu = start_with(&tenant_with_devices(), &["--delta-page-size", "1"]);
    // Paged like users, the SID only when selected (the device resource: "requires $select").
    let (pages, link) = emu
        .delta_round(
            "devices/delta?$select=id,displayName,trustType,onPremisesSecurityIdentifier",
            &[],
        )
        .await;
    assert_eq!(pages.len(), 2, "one device a page: {pages:?}");
    assert!(link.starts_with(&format!("{}/v1.0/devices/delta?$deltatoken=", emu.base)));
    let merged = merge(&pages);
    assert_eq!(merged.len(), 2);
    let items: Vec<serde_json::Value> = pages
        .iter()
        .flat_map(|p| p["value"].as_array().unwrap().clone())
        .collect();
    let pc = items.iter().find(|i| i["id"] == D1).unwrap();
    assert_eq!(pc["onPremisesSecurityIdentifier"], "S-1-5-21-1-2-3-1601");
    assert_eq!(pc["trustType"], "ServerAd");
    let (plain, _) = emu.delta_round("devices/delta", &[]).await;
    for i in plain
        .iter()
        .flat_map(|p| p["value"].as_array().unwrap().clone())
    {
        assert!(i.get("onPremisesSecurityIdentifier").is_none(), "{i}");
        assert!(i.get("displayName").is_some(), "{i}");
    }

    // Members of a group: typed as devices, in the groups' delta and in /members.
    let (gpages, glink) = emu
        .delta_round("groups/delta?$select=displayName,members", &[])
        .await;
    let device_refs: Vec<serde_json::Value> = gpages
        .iter()
        .flat_map(|p| p["value"].as_array().unwrap().clone())
        .filter(|g| g["id"] == G_HR)
        .flat_map(|g| g["members@delta"].as_array().cloned().unwrap_or_default())
        .filter(|m| m["id"] == D1 || m["id"] == D2)
        .collect();
    assert_eq!(device_refs.len(), 2);
    assert!(device_refs
        .iter()
        .all(|m| m["@odata.type"] == "#microsoft.graph.device"));
    let list = emu
        .get(&format!("groups/{G_HR}/members/microsoft.graph.device"))
        .await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(list.body["value"].as_array().unwrap().len(), 2);

    // A device leaving the group is a typed removal; a deleted device is `@removed` from the
    // devices' delta and leaves its groups.
    assert_eq!(
        emu.delete(&format!("groups/{G_HR}/members/{D2}/$ref"))
            .await
            .status,
        204
    );
    assert_eq!(emu.delete(&format!("devices/{D1}")).await.status, 204);
    let (pages, _) = emu.delta_round(&link, &[]).await;
    let items: Vec<serde_json::Value> = pages
        .iter()
        .flat_map(|p| p["value"].as_array().unwrap().clone())
        .collect();
    assert_eq!(
        items,
        [json!({"id": D1, "@removed": {"reason": "deleted"}})],
        "{pages:?}"
    );
    let (gpages, _) = emu.delta_round(&glink, &[]).await;
    let hr = merge(&gpages);
    assert_eq!(hr[G_HR].removed, set(&[D1, D2]));
    let removal = gpages
        .iter()
        .flat_map(|p| p["value"].as_array().unwrap().clone())
        .flat_map(|g| g["members@delta"].as_array().cloned().unwrap_or_default())
        .find(|m| m["id"] == D2)
        .unwrap();
    assert_eq!(removal["@odata.type"], "#microsoft.graph.device");
}

#[tokio::test]
async fn devices_need_a_device_read_permission_and_a_grant_takes_effect_with_the_next_token() {
    // The permissions an installation from before device members was registered with.
    let emu = start_with(
        &tenant_with_devices(),
        &["--app-roles", "GroupMember.Read.All,User.Read.All"],
    );
    let msg = emu
        .get("devices/delta?$select=id,displayName")
        .await
        .graph_error(403, "Authorization_RequestDenied");
    assert_eq!(msg, "Insufficient privileges to complete the operation.");
    emu.get(&format!("devices/{D1}"))
        .await
        .graph_error(403, "Authorization_RequestDenied");
    // Users and groups are read as before, device members typed in the groups' delta.
    let (gpages, _) = emu
        .delta_round("groups/delta?$select=displayName,members", &[])
        .await;
    assert_eq!(merge(&gpages)[G_HR].added, set(&[U1, U2, D1, D2]));
    assert_eq!(emu.get("users/delta").await.status, 200);

    // An admin grants Device.Read.All: the token held is unchanged, a new one reads devices.
    let granted = emu
        .control(
            "roles",
            Some(json!({"roles": ["GroupMember.Read.All", "User.Read.All", "Device.Read.All"]})),
        )
        .await;
    assert_eq!(granted["roles"][2], "Device.Read.All");
    emu.get("devices/delta")
        .await
        .graph_error(403, "Authorization_RequestDenied");
    let token = emu.fresh_token().await;
    let r = emu
        .http
        .get(emu.url("devices/delta?$select=id,displayName"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["value"].as_array().map(Vec::len), Some(2), "{body}");
}
