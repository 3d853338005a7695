//! Extension properties: directory extensions (`extension_<appId>_<name>`) and
//! `onPremisesExtensionAttributes`, on the object, in delta, only when selected.

mod api_common;

use api_common::*;
use serde_json::{json, Value};

const COST: &str = "extension_0123456789abcdef0123456789abcdef_costCenter";
const SITE: &str = "extension_0123456789abcdef0123456789abcdef_site";

fn tenant_with_extensions() -> Value {
    let mut t = tenant();
    t["groups"][0][COST] = json!("CC-100");
    t["groups"][0]["classification"] = json!("MBI");
    t["users"][0]["onPremisesExtensionAttributes"] = json!({"extensionAttribute1": "badge-1"});
    t
}

#[tokio::test]
async fn extension_properties_appear_only_when_selected() {
    let emu = start_with(&tenant_with_extensions(), &[]);
    let plain = emu.get(&format!("groups/{G_M365}")).await;
    assert_eq!(plain.status, 200, "{}", plain.body);
    assert!(plain.body.get(COST).is_none(), "{}", plain.body);
    assert_eq!(plain.body["classification"], "MBI", "a default property");

    let sel = emu
        .get(&format!(
            "groups/{G_M365}?$select=displayName,{COST},{SITE},classification"
        ))
        .await;
    assert_eq!(sel.status, 200, "{}", sel.body);
    assert_eq!(sel.body[COST], "CC-100");
    // An extension without a value is left out; a declared property without one is null.
    assert!(sel.body.get(SITE).is_none(), "{}", sel.body);
    let other = emu
        .get(&format!("groups/{G_HR}?$select={COST},classification"))
        .await;
    assert!(other.body.get(COST).is_none(), "{}", other.body);
    assert!(other.body["classification"].is_null(), "{}", other.body);

    // Lists honour the same select.
    let list = emu.get(&format!("groups?$select=id,{COST}")).await;
    let values = list.body["value"].as_array().expect("value");
    let with: Vec<&Value> = values.iter().filter(|g| g.get(COST).is_some()).collect();
    assert_eq!(with.len(), 1);
    assert_eq!(with[0]["id"], G_M365);

    // A malformed extension name is no property.
    let bad = emu
        .get(&format!("groups/{G_M365}?$select=extension_12_x"))
        .await;
    bad.graph_error(400, "Request_BadRequest");
}

#[tokio::test]
async fn on_premises_extension_attributes_have_fifteen_keys_and_merge_on_patch() {
    let emu = start_with(&tenant_with_extensions(), &[]);
    let path = format!("users/{U1}?$select=onPremisesExtensionAttributes");
    let r = emu.get(&path).await;
    let attrs = r.body["onPremisesExtensionAttributes"]
        .as_object()
        .expect("an object");
    assert_eq!(attrs.len(), 15);
    assert_eq!(attrs["extensionAttribute1"], "badge-1");
    assert!(attrs["extensionAttribute13"].is_null());
    assert!(emu
        .get(&format!("users/{U1}"))
        .await
        .body
        .get("onPremisesExtensionAttributes")
        .is_none());
    // A user without any: all 15 keys null.
    let r = emu
        .get(&format!("users/{U2}?$select=onPremisesExtensionAttributes"))
        .await;
    assert_eq!(
        r.body["onPremisesExtensionAttributes"]
            .as_object()
            .map(|m| m.len()),
        Some(15)
    );

    // The documented PATCH: one key set, one cleared, the rest kept.
    let body = json!({"onPremisesExtensionAttributes": {"extensionAttribute2": "x", "extensionAttribute1": null}});
    let p = emu.patch(&format!("users/{U2}"), body).await;
    assert_eq!(p.status, 204, "{}", p.body);
    let p = emu
        .patch(
            &format!("users/{U2}"),
            json!({"onPremisesExtensionAttributes": {"extensionAttribute3": "y"}}),
        )
        .await;
    assert_eq!(p.status, 204, "{}", p.body);
    let r = emu
        .get(&format!("users/{U2}?$select=onPremisesExtensionAttributes"))
        .await;
    let attrs = &r.body["onPremisesExtensionAttributes"];
    assert_eq!(
        (
            attrs["extensionAttribute2"].as_str(),
            attrs["extensionAttribute3"].as_str()
        ),
        (Some("x"), Some("y"))
    );
    assert!(attrs["extensionAttribute1"].is_null());

    for bad in [
        json!({"onPremisesExtensionAttributes": {"extensionAttribute16": "x"}}),
        json!({"onPremisesExtensionAttributes": {"extensionAttribute1": 5}}),
        json!({"onPremisesExtensionAttributes": "x"}),
    ] {
        let p = emu.patch(&format!("users/{U2}"), bad.clone()).await;
        assert_eq!(p.status, 400, "{bad}: {}", p.body);
    }
}

#[tokio::test]
async fn delta_carries_selected_extensions_and_their_changes() {
    let emu = start_with(&tenant_with_extensions(), &[]);
    let start = format!("groups/delta?$select=displayName,members,{COST}");
    let (pages, link) = emu.delta_round(&start, &[]).await;
    let merged = merge(&pages);
    assert_eq!(merged[G_M365].props[COST], "CC-100");
    assert!(!merged[G_HR].props.contains_key(COST));
    for m in merged.values() {
        assert!(!m.props.contains_key("classification"), "not selected");
    }

    // Setting a selected extension surfaces the group with its value.
    let p = emu
        .patch(&format!("groups/{G_HR}"), json!({COST: "CC-200"}))
        .await;
    assert_eq!(p.status, 204, "{}", p.body);
    // A change to an extension that is not selected does not.
    let p = emu
        .patch(&format!("groups/{G_EMPTY}"), json!({SITE: "Oslo"}))
        .await;
    assert_eq!(p.status, 204, "{}", p.body);
    let (pages, link) = emu.delta_round(&link, &[]).await;
    let merged = merge(&pages);
    assert_eq!(merged.keys().collect::<Vec<_>>(), vec![G_HR]);
    assert_eq!(merged[G_HR].props[COST], "CC-200");

    // Clearing it is reported as null.
    let p = emu
        .patch(&format!("groups/{G_HR}"), json!({COST: null}))
        .await;
    assert_eq!(p.status, 204, "{}", p.body);
    let (pages, _) = emu.delta_round(&link, &[]).await;
    let merged = merge(&pages);
    assert!(
        merged[G_HR].props[COST].is_null(),
        "{:?}",
        merged[G_HR].props
    );
    let r = emu.get(&format!("groups/{G_HR}?$select={COST}")).await;
    assert!(r.body.get(COST).is_none(), "{}", r.body);

    // An extension value must be a simple value or a list of them.
    let p = emu
        .patch(&format!("groups/{G_HR}"), json!({COST: {"a": 1}}))
        .await;
    assert_eq!(p.status, 400, "{}", p.body);
}
