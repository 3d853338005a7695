//! Writes: groups and users, member references, deletedItems, validation errors.

mod api_common;

use api_common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn create_microsoft_365_and_security_groups() {
    let emu = start(&[]);
    let r = emu
        .post(
            "groups",
            json!({"displayName": "Project X", "mailEnabled": true, "mailNickname": "projectx",
                   "securityEnabled": false, "groupTypes": ["Unified"], "description": "d",
                   "members@odata.bind": [format!("https://graph.microsoft.com/v1.0/directoryObjects/{U1}")]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.body["@odata.context"],
        format!("{}/v1.0/$metadata#groups/$entity", emu.base)
    );
    assert_eq!(r.body["mail"], "projectx@contoso.onmicrosoft.com");
    assert_eq!(
        r.body["proxyAddresses"],
        json!(["SMTP:projectx@contoso.onmicrosoft.com"])
    );
    assert_eq!(r.body["visibility"], "Public");
    assert!(r.body["createdDateTime"].as_str().unwrap().ends_with('Z'));
    let id = r.body["id"].as_str().unwrap().to_string();
    let m = emu.get(&format!("groups/{id}/members")).await;
    assert_eq!(m.body["value"][0]["id"], U1);

    let r = emu
        .post(
            "groups",
            json!({"displayName": "Sec", "mailEnabled": false, "mailNickname": "sec", "securityEnabled": true}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["mail"], Value::Null);
    assert_eq!(r.body["proxyAddresses"], json!([]));
    assert_eq!(r.body["groupTypes"], json!([]));

    // Same nickname for another M365 group: proxy address conflict.
    let r = emu
        .post(
            "groups",
            json!({"displayName": "Again", "mailEnabled": true, "mailNickname": "projectx",
                   "securityEnabled": false, "groupTypes": ["Unified"]}),
        )
        .await;
    r.graph_error(400, "Request_BadRequest");
}

#[tokio::test]
async fn validation_errors() {
    let emu = start(&[]);
    let msg = emu
        .post(
            "groups",
            json!({"displayName": "x", "mailEnabled": false, "securityEnabled": true}),
        )
        .await
        .graph_error(400, "Request_BadRequest");
    assert_eq!(
        msg,
        "A value is required for property 'mailNickname' of resource 'Group'."
    );
    let msg = emu
        .post(
            "groups",
            json!({"displayName": "x", "mailEnabled": false, "mailNickname": "x", "securityEnabled": true, "mail": "a@b"}),
        )
        .await
        .graph_error(400, "Request_BadRequest");
    assert_eq!(msg, "Property 'mail' is read-only and cannot be set.");
    let msg = emu
        .post(
            "groups",
            json!({"displayName": "x", "mailEnabled": true, "mailNickname": "x", "securityEnabled": true}),
        )
        .await
        .graph_error(400, "Request_BadRequest");
    assert_eq!(
        msg,
        "Cannot create a mail-enabled security groups and or distribution list."
    );
    emu.post(
        "groups",
        json!({"displayName": "x", "mailEnabled": false, "mailNickname": "bad nick", "securityEnabled": true}),
    )
    .await
    .graph_error(400, "Request_BadRequest");
    emu.patch(&format!("groups/{G_HR}"), json!({"proxyAddresses": []}))
        .await
        .graph_error(400, "Request_BadRequest");
    emu.patch(
        "groups/00000000-0000-0000-0000-000000000000",
        json!({"displayName": "y"}),
    )
    .await
    .graph_error(404, "Request_ResourceNotFound");
    let r = emu.call(reqwest::Method::POST, "groups", None, &[]).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn member_references() {
    let emu = start(&[]);
    let path = format!("groups/{G_HR}/members/$ref");
    let msg = emu
        .post(
            &path,
            json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{U1}")}),
        )
        .await
        .graph_error(400, "Request_BadRequest");
    assert_eq!(
        msg,
        "One or more added object references already exist for the following modified properties: 'members'."
    );
    let missing = "11111111-2222-3333-4444-555555555555";
    let msg = emu
        .post(&path, json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{missing}")}))
        .await
        .graph_error(404, "Request_ResourceNotFound");
    assert!(msg.contains(missing));
    assert_eq!(
        emu.post(
            &path,
            json!({"@odata.id": format!("{}/v1.0/directoryObjects/{G_EMPTY}", emu.base)})
        )
        .await
        .status,
        204,
        "security groups nest"
    );
    emu.post(
        &format!("groups/{G_M365}/members/$ref"),
        json!({"@odata.id": format!("directoryObjects/{G_EMPTY}")}),
    )
    .await
    .graph_error(400, "Request_BadRequest");
    assert_eq!(
        emu.delete(&format!("groups/{G_HR}/members/{U2}/$ref"))
            .await
            .status,
        204
    );
    emu.delete(&format!("groups/{G_HR}/members/{U2}/$ref"))
        .await
        .graph_error(404, "Request_ResourceNotFound");
    let r = emu.get(&format!("groups/{G_HR}/members?$select=id")).await;
    let mut got: Vec<&str> = r.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    got.sort();
    let mut want = vec![U1, G_EMPTY];
    want.sort();
    assert_eq!(got, want);
}

/// Owners as "List group owners", "Add owners" and "Remove group owner" document them: users
/// only here, `@odata.type` on each, not tracked by a delta that does not select them.
#[tokio::test]
async fn owner_references() {
    let emu = start(&[]);
    let owners = |r: Resp| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = r.body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["@odata.type"].as_str().unwrap().to_string(),
                    o["id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let r = emu.get(&format!("groups/{G_HR}/owners?$select=id")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(owners(r).is_empty());
    let (_, start) = emu
        .delta_round("groups/delta?$select=displayName", &[])
        .await;
    let created = emu
        .post(
            "groups",
            json!({"displayName": "Owned", "mailEnabled": false, "mailNickname": "owned",
                   "securityEnabled": true,
                   "owners@odata.bind": [format!("https://graph.microsoft.com/v1.0/users/{U1}")]}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let gid = created.body["id"].as_str().unwrap().to_string();
    let path = format!("groups/{gid}/owners/$ref");
    let add = |id: &str| json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{id}")});
    assert_eq!(emu.post(&path, add(U2)).await.status, 204);
    let msg = emu
        .post(&path, add(U2))
        .await
        .graph_error(400, "Request_BadRequest");
    assert!(msg.contains("'owners'"), "{msg}");
    emu.post(&path, add(G_EMPTY))
        .await
        .graph_error(400, "Request_BadRequest");
    let r = emu.get(&format!("groups/{gid}/owners")).await;
    assert_eq!(owners(r), {
        let mut w = vec![
            ("#microsoft.graph.user".to_string(), U1.to_string()),
            ("#microsoft.graph.user".to_string(), U2.to_string()),
        ];
        w.sort();
        w
    });
    assert_eq!(
        emu.delete(&format!("groups/{gid}/owners/{U1}/$ref"))
            .await
            .status,
        204
    );
    emu.delete(&format!("groups/{gid}/owners/{U1}/$ref"))
        .await
        .graph_error(404, "Request_ResourceNotFound");
    let r = emu.get(&format!("groups/{gid}/owners?$select=id")).await;
    assert_eq!(
        owners(r),
        [("#microsoft.graph.user".to_string(), U2.to_string())]
    );
    // The delta shows the new group once; the owner changes after it add nothing.
    let (pages, _) = emu.delta_round(&start, &[]).await;
    let seen = merge(&pages);
    assert_eq!(seen.len(), 1, "{seen:?}");
    // A user's owners segment does not exist.
    emu.get(&format!("users/{U1}/owners"))
        .await
        .graph_error(400, "BadRequest");
}

#[tokio::test]
async fn deletes_soft_and_permanent_and_restore() {
    let emu = start(&[]);
    // M365 group: soft, listed in deletedItems, restorable.
    assert_eq!(emu.delete(&format!("groups/{G_M365}")).await.status, 204);
    emu.get(&format!("groups/{G_M365}"))
        .await
        .graph_error(404, "Request_ResourceNotFound");
    let r = emu
        .get("directory/deletedItems/microsoft.graph.group")
        .await;
    assert_eq!(r.body["value"][0]["id"], G_M365);
    assert!(r.body["value"][0]["deletedDateTime"].is_string());
    let r = emu
        .post(
            &format!("directory/deletedItems/{G_M365}/restore"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["@odata.type"], "#microsoft.graph.group");
    assert_eq!(
        emu.get(&format!("groups/{G_M365}")).await.body["deletedDateTime"],
        Value::Null
    );

    // Security group: permanent.
    assert_eq!(emu.delete(&format!("groups/{G_HR}")).await.status, 204);
    emu.post(&format!("directory/deletedItems/{G_HR}/restore"), json!({}))
        .await
        .graph_error(404, "Request_ResourceNotFound");
    let r = emu.get(&format!("groups/{G_BIG}/members?$top=999")).await;
    assert!(
        r.body["value"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["id"] != G_HR),
        "left its parents"
    );

    // User: soft, then purged.
    assert_eq!(emu.delete(&format!("users/{U3}")).await.status, 204);
    assert_eq!(
        emu.get(&format!("directory/deletedItems/{U3}"))
            .await
            .status,
        200
    );
    assert_eq!(
        emu.delete(&format!("directory/deletedItems/{U3}"))
            .await
            .status,
        204
    );
    emu.get(&format!("directory/deletedItems/{U3}"))
        .await
        .graph_error(404, "Request_ResourceNotFound");
}

#[tokio::test]
async fn create_and_update_users() {
    let emu = start(&[]);
    let body = json!({"accountEnabled": true, "displayName": "New User", "mailNickname": "newuser",
                      "userPrincipalName": "newuser@contoso.onmicrosoft.com",
                      "passwordProfile": {"forceChangePasswordNextSignIn": true, "password": "x"}});
    let r = emu.post("users", body.clone()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.body.get("passwordProfile").is_none());
    let id = r.body["id"].as_str().unwrap().to_string();
    emu.post("users", body)
        .await
        .graph_error(400, "Request_BadRequest");
    assert_eq!(
        emu.patch(&format!("users/{id}"), json!({"jobTitle": "Boss"}))
            .await
            .status,
        204
    );
    assert_eq!(
        emu.get(&format!("users/{id}")).await.body["jobTitle"],
        "Boss"
    );
    let r = emu
        .post(
            "users",
            json!({"accountEnabled": true, "displayName": "X", "mailNickname": "x",
                   "userPrincipalName": "x@elsewhere.com", "passwordProfile": {"password": "p"}}),
        )
        .await;
    r.graph_error(400, "Request_BadRequest");
    // The state dump shows it.
    let state = emu.control("state", None).await;
    assert!(state["users"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["id"] == id));
}

#[tokio::test]
async fn group_writes_need_the_write_permission_reads_do_not() {
    // Consented to read permissions only, as an app registered for reading.
    let emu = start(&["--app-roles", "Group.Read.All,User.Read.All"]);
    let r = emu.get("groups?$select=id").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.body["value"][0]["id"]
        .as_str()
        .expect("a group")
        .to_string();
    let msg = emu
        .patch(&format!("groups/{id}"), json!({"description": "x"}))
        .await
        .graph_error(403, "Authorization_RequestDenied");
    assert_eq!(msg, "Insufficient privileges to complete the operation.");
    emu.post(
        "groups",
        json!({"displayName": "N", "mailEnabled": false, "mailNickname": "n",
               "securityEnabled": true}),
    )
    .await
    .graph_error(403, "Authorization_RequestDenied");
    emu.delete(&format!("groups/{id}"))
        .await
        .graph_error(403, "Authorization_RequestDenied");
    // Group.ReadWrite.All (Microsoft's least privileged for "Update group") is enough.
    let emu = start(&["--app-roles", "Group.ReadWrite.All"]);
    let r = emu.get("groups?$select=id").await;
    let id = r.body["value"][0]["id"]
        .as_str()
        .expect("a group")
        .to_string();
    let r = emu
        .patch(&format!("groups/{id}"), json!({"description": "x"}))
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
}
