//! The beta endpoint: the same handlers as v1.0 under `/beta`, links rooted at `/beta`, and
//! `group.writebackConfiguration`, which only beta has.

mod api_common;

use api_common::*;
use serde_json::{json, Value};

const WB: &str = "writebackConfiguration";

fn unset() -> Value {
    json!({"isEnabled": null, "onPremisesGroupType": null})
}

/// The shared tenant with a writeback configuration on the HR group.
fn tenant_with_writeback() -> Value {
    let mut t = tenant();
    t["groups"][1][WB] =
        json!({"isEnabled": true, "onPremisesGroupType": "universalSecurityGroup"});
    t
}

fn beta(emu: &Emu, path: &str) -> String {
    format!("{}/beta/{}", emu.base, path.trim_start_matches('/'))
}

fn by_id(items: &Value) -> std::collections::BTreeMap<String, Value> {
    items
        .as_array()
        .expect("value array")
        .iter()
        .map(|i| (i["id"].as_str().expect("id").to_string(), i.clone()))
        .collect()
}

#[tokio::test]
async fn beta_serves_the_same_handlers_with_links_under_beta() {
    let emu = start(&[]);
    let root = format!("{}/beta", emu.base);

    let r = emu.get(&beta(&emu, "groups?$top=2")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["@odata.context"], format!("{root}/$metadata#groups"));
    let next = r.body["@odata.nextLink"].as_str().expect("nextLink");
    assert!(next.starts_with(&format!("{root}/groups?")), "{next}");
    let r2 = emu.get(next).await;
    assert_eq!(r2.status, 200, "{}", r2.body);
    assert_eq!(r2.body["value"].as_array().unwrap().len(), 2);

    let r = emu.get(&beta(&emu, &format!("users/{U1}"))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["@odata.context"],
        format!("{root}/$metadata#users/$entity")
    );
    let r = emu
        .get(&beta(&emu, &format!("groups/{G_HR}/members?$top=1")))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["@odata.nextLink"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{root}/groups/{G_HR}/members?")));

    let (pages, delta_link) = emu
        .delta_round(&beta(&emu, "groups/delta?$select=displayName&$top=2"), &[])
        .await;
    assert!(pages.len() > 1);
    assert_eq!(
        pages[0]["@odata.context"],
        format!("{root}/$metadata#groups(displayName)")
    );
    for p in &pages[..pages.len() - 1] {
        let n = p["@odata.nextLink"].as_str().unwrap();
        assert!(
            n.starts_with(&format!("{root}/groups/delta?$skiptoken=")),
            "{n}"
        );
    }
    assert!(
        delta_link.starts_with(&format!("{root}/groups/delta?$deltatoken=")),
        "{delta_link}"
    );
    assert_eq!(merge(&pages).len(), 4);

    // Auth and faults are the same as on v1.0.
    let r = emu
        .http
        .get(beta(&emu, "groups"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 401);
    emu.control("faults", Some(json!({"next429": 1}))).await;
    let r = emu.get(&beta(&emu, "groups")).await;
    r.graph_error(429, "TooManyRequests");
    assert_eq!(emu.get(&beta(&emu, "groups")).await.status, 200);

    // A batch posted to beta runs its items on beta.
    let r = emu
        .post(
            &beta(&emu, "$batch"),
            json!({"requests": [
                {"id": "1", "method": "GET", "url": format!("/groups/{G_HR}?$select={WB}")},
                {"id": "2", "method": "GET", "url": format!("beta/groups/{G_HR}?$select=id")},
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let items = by_id(&r.body["responses"]);
    assert_eq!(items["1"]["status"], 200, "{}", r.body);
    assert_eq!(items["1"]["body"][WB], unset());
    assert_eq!(items["2"]["status"], 200, "{}", r.body);
    assert!(items["2"]["body"]["@odata.context"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{root}/$metadata#groups")));

    // Other version segments are no Graph route.
    let r = emu.get(&format!("{}/v2.0/groups", emu.base)).await;
    r.graph_error(404, "NotFound");
}

#[tokio::test]
async fn v1_refuses_writeback_configuration() {
    let emu = start_with(&tenant_with_writeback(), &[]);
    let unknown =
        "Could not find a property named 'writebackConfiguration' on type 'microsoft.graph.group'.";
    for path in [
        format!("groups/{G_HR}?$select=id,{WB}"),
        format!("groups?$select=displayName,{WB}"),
        format!("groups/delta?$select=displayName,{WB}"),
    ] {
        let r = emu.get(&path).await;
        assert_eq!(r.graph_error(400, "Request_BadRequest"), unknown, "{path}");
    }
    // Never in v1.0's default set, even when the group has one.
    let r = emu.get(&format!("groups/{G_HR}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.get(WB).is_none(), "{}", r.body);

    let r = emu
        .patch(&format!("groups/{G_HR}"), json!({WB: {"isEnabled": false}}))
        .await;
    assert_eq!(
        r.graph_error(400, "Request_BadRequest"),
        "Property 'writebackConfiguration' does not exist as a declared property or extension property."
    );
    let r = emu
        .get(&beta(&emu, &format!("groups/{G_HR}?$select={WB}")))
        .await;
    assert_eq!(r.body[WB]["isEnabled"], true, "unchanged: {}", r.body);

    // A beta link that selects it is refused on v1.0 like the query itself.
    let (_, link) = emu
        .delta_round(&beta(&emu, &format!("groups/delta?$select={WB}")), &[])
        .await;
    let on_v1 = link.replacen("/beta/", "/v1.0/", 1);
    let r = emu.get(&on_v1).await;
    assert_eq!(r.graph_error(400, "Request_BadRequest"), unknown);
}

#[tokio::test]
async fn beta_selects_writeback_configuration_on_get_list_and_delta() {
    let emu = start_with(&tenant_with_writeback(), &[]);
    let seeded = json!({"isEnabled": true, "onPremisesGroupType": "universalSecurityGroup"});

    let r = emu
        .get(&beta(&emu, &format!("groups/{G_HR}?$select=id,{WB}")))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body[WB], seeded);
    assert_eq!(
        r.body["@odata.context"],
        format!("{}/beta/$metadata#groups(id,{WB})/$entity", emu.base)
    );
    // Case-insensitive like any $select name; unset is two nulls, not defaults.
    let r = emu
        .get(&beta(
            &emu,
            &format!("groups/{G_M365}?$select=WritebackConfiguration"),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body[WB], unset());
    // Only when selected.
    let r = emu.get(&beta(&emu, &format!("groups/{G_HR}"))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.get(WB).is_none(), "{}", r.body);
    assert_eq!(r.body["displayName"], "sg-HR");
    // Not a user property on beta either.
    let r = emu
        .get(&beta(&emu, &format!("users/{U1}?$select={WB}")))
        .await;
    r.graph_error(400, "Request_BadRequest");

    let r = emu
        .get(&beta(&emu, &format!("groups?$select=displayName,{WB}")))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let groups = by_id(&r.body["value"]);
    assert_eq!(groups.len(), 4);
    assert_eq!(groups[G_HR][WB], seeded);
    for id in [G_M365, G_EMPTY, G_BIG] {
        assert_eq!(groups[id][WB], unset(), "{id}");
    }
    // directoryObject reads take group properties too.
    let r = emu
        .get(&beta(&emu, &format!("users/{U1}/memberOf?$select=id,{WB}")))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(by_id(&r.body["value"])[G_HR][WB], seeded);
    let r = emu.get(&beta(&emu, "groups")).await;
    assert!(r.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .all(|g| g.get(WB).is_none()));

    let (pages, _) = emu
        .delta_round(
            &beta(&emu, &format!("groups/delta?$select=displayName,{WB}")),
            &[],
        )
        .await;
    let merged = merge(&pages);
    assert_eq!(merged.len(), 4);
    assert_eq!(merged[G_HR].props[WB], seeded);
    assert_eq!(merged[G_M365].props[WB], unset());
    let (pages, _) = emu
        .delta_round(&beta(&emu, "groups/delta?$select=displayName"), &[])
        .await;
    assert!(merge(&pages).values().all(|m| !m.props.contains_key(WB)));
}

#[tokio::test]
async fn patch_merges_and_shows_in_a_delta_that_selects_it() {
    let emu = start(&[]);
    let (_, selecting) = emu
        .delta_round(
            &beta(&emu, &format!("groups/delta?$select=displayName,{WB}")),
            &[],
        )
        .await;
    let (_, plain) = emu.delta_round(&beta(&emu, "groups/delta"), &[]).await;
    let (_, v1) = emu
        .delta_round("groups/delta?$select=displayName", &[])
        .await;

    let path = beta(&emu, &format!("groups/{G_M365}"));
    let r = emu.patch(&path, json!({WB: {"isEnabled": false}})).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = emu
        .patch(
            &path,
            json!({WB: {"onPremisesGroupType": "universalDistributionGroup"}}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let expected = json!({"isEnabled": false, "onPremisesGroupType": "universalDistributionGroup"});
    let r = emu.get(&format!("{path}?$select={WB}")).await;
    assert_eq!(r.body[WB], expected, "the two PATCHes merge");

    let (pages, next) = emu.delta_round(&selecting, &[]).await;
    let merged = merge(&pages);
    assert_eq!(merged.len(), 1, "{pages:?}");
    assert_eq!(merged[G_M365].props[WB], expected);
    assert_eq!(merged[G_M365].props["displayName"], "All Company");
    // return=minimal reports just the changed property.
    let (pages, _) = emu
        .delta_round(&selecting, &[("Prefer", "return=minimal")])
        .await;
    let item = &pages[0]["value"][0];
    assert_eq!(item[WB], expected);
    assert!(item.get("displayName").is_none(), "{item}");

    // Not tracked without selecting it, and not at all on v1.0.
    let (pages, _) = emu.delta_round(&plain, &[]).await;
    assert!(merge(&pages).is_empty(), "{pages:?}");
    let (pages, _) = emu.delta_round(&v1, &[]).await;
    assert!(merge(&pages).is_empty(), "{pages:?}");

    // The same value again is no change; null clears both fields.
    let r = emu.patch(&path, json!({WB: expected.clone()})).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let (pages, next) = emu.delta_round(&next, &[]).await;
    assert!(merge(&pages).is_empty(), "{pages:?}");
    let r = emu.patch(&path, json!({WB: null})).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let (pages, _) = emu.delta_round(&next, &[]).await;
    assert_eq!(merge(&pages)[G_M365].props[WB], unset());

    // A group created on beta may carry one.
    let r = emu
        .post(
            &beta(&emu, "groups"),
            json!({"displayName": "Writeback", "mailEnabled": false, "mailNickname": "wb",
                   "securityEnabled": true, WB: {"isEnabled": true}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(
        r.body.get(WB).is_none(),
        "not a default property: {}",
        r.body
    );
    let id = r.body["id"].as_str().unwrap();
    let r = emu
        .get(&beta(&emu, &format!("groups/{id}?$select={WB}")))
        .await;
    assert_eq!(
        r.body[WB],
        json!({"isEnabled": true, "onPremisesGroupType": null})
    );
}

#[tokio::test]
async fn bad_writeback_values_are_400() {
    let emu = start_with(&tenant_with_writeback(), &[]);
    let path = beta(&emu, &format!("groups/{G_HR}"));
    for (body, message) in [
        (
            json!({WB: {"isEnabled": "no"}}),
            "Invalid value specified for property 'isEnabled' of resource 'Group'.",
        ),
        (
            json!({WB: {"onPremisesGroupType": "globalSecurityGroup"}}),
            "Invalid value specified for property 'onPremisesGroupType' of resource 'Group'.",
        ),
        (
            json!({WB: {"onPremisesGroupType": true}}),
            "Invalid value specified for property 'onPremisesGroupType' of resource 'Group'.",
        ),
        (
            json!({WB: true}),
            "Invalid value specified for property 'writebackConfiguration' of resource 'Group'.",
        ),
        (
            json!({WB: {"isEnabled": true, "scope": "x"}}),
            "Property 'scope' does not exist as a declared property or extension property.",
        ),
    ] {
        let r = emu.patch(&path, body.clone()).await;
        assert_eq!(r.graph_error(400, "Request_BadRequest"), message, "{body}");
    }
    let r = emu.get(&format!("{path}?$select={WB}")).await;
    assert_eq!(
        r.body[WB],
        json!({"isEnabled": true, "onPremisesGroupType": "universalSecurityGroup"}),
        "unchanged"
    );

    // A tenant file is checked the same way.
    let mut t = tenant();
    t["groups"][0][WB] = json!({"onPremisesGroupType": "domainLocal"});
    let r = emu
        .http
        .post(format!("{}/_emulator/tenant", emu.base))
        .json(&t)
        .send()
        .await
        .expect("control");
    assert_eq!(r.status().as_u16(), 400);
    let text = r.text().await.unwrap();
    assert!(text.contains("writebackConfiguration"), "{text}");
}
