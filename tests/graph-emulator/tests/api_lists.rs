//! Collection reads: paging, $select, $filter, members, headers, errors.

mod api_common;

use api_common::*;
use serde_json::{json, Value};

fn ids(body: &Value) -> Vec<String> {
    body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn users_page_with_skiptoken_links_rooted_at_the_emulator() {
    let emu = start(&["--page-size", "2"]);
    let mut url = "users".to_string();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = emu.get(&url).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.header("content-type"),
            Some("application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8")
        );
        assert_eq!(r.header("odata-version"), Some("4.0"));
        assert!(r.header("request-id").is_some());
        assert_eq!(
            r.body["@odata.context"],
            format!("{}/v1.0/$metadata#users", emu.base)
        );
        seen.extend(ids(&r.body));
        pages += 1;
        match r.body["@odata.nextLink"].as_str() {
            Some(n) => {
                assert!(n.starts_with(&format!("{}/v1.0/users?", emu.base)), "{n}");
                assert!(n.contains("$skiptoken="), "{n}");
                url = n.to_string();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, vec![U1, U2, U3, U4, U5]);

    // $top overrides the page size; other parameters are carried into the nextLink.
    let r = emu.get("users?$top=4&$select=displayName").await;
    assert_eq!(ids(&r.body).len(), 4);
    let next = r.body["@odata.nextLink"].as_str().unwrap();
    assert!(
        next.contains("$top=4") && next.contains("$select=displayName"),
        "{next}"
    );
    let r2 = emu.get(next).await;
    assert_eq!(ids(&r2.body), vec![U5]);
}

#[tokio::test]
async fn select_and_default_properties() {
    let emu = start(&[]);
    let r = emu.get(&format!("users/{U1}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body["@odata.context"],
        format!("{}/v1.0/$metadata#users/$entity", emu.base)
    );
    assert_eq!(r.body["displayName"], "Testuser1");
    assert!(
        r.body.get("onPremisesSecurityIdentifier").is_none(),
        "on-prem props only on $select"
    );
    assert_eq!(
        r.body["mail"],
        Value::Null,
        "default props are null when unset"
    );

    let r = emu
        .get(&format!("users/{U1}?$select=onPremisesSecurityIdentifier,onPremisesImmutableId,onPremisesSyncEnabled"))
        .await;
    assert_eq!(
        r.body["onPremisesSecurityIdentifier"],
        "S-1-5-21-1-2-3-1101"
    );
    assert_eq!(r.body["onPremisesImmutableId"], "imm1");
    assert_eq!(r.body["onPremisesSyncEnabled"], true);
    assert!(r.body.get("displayName").is_none());

    // Unset non-nullable properties come back as the schema's empty value, not null.
    let r = emu
        .get(&format!(
            "users/{U1}?$select=proxyAddresses,otherMails,birthday"
        ))
        .await;
    assert_eq!(r.body["proxyAddresses"], json!([]));
    assert_eq!(r.body["otherMails"], json!([]));
    assert_eq!(r.body["birthday"], "0001-01-01T00:00:00Z");
    emu.patch(&format!("groups/{G_HR}"), json!({"groupTypes": null}))
        .await
        .graph_error(400, "Request_BadRequest");

    // Lookup by UPN.
    let r = emu
        .get("users/testuser2@contoso.onmicrosoft.com?$select=id")
        .await;
    assert_eq!(r.body["id"], U2);

    let r = emu.get(&format!("groups/{G_M365}")).await;
    assert_eq!(r.body["groupTypes"], json!(["Unified"]));
    assert_eq!(r.body["mail"], "allcompany@contoso.onmicrosoft.com");
    assert!(r.body["securityIdentifier"]
        .as_str()
        .unwrap()
        .starts_with("S-1-12-1-"));
    assert_eq!(r.body["onPremisesSyncEnabled"], Value::Null);

    let msg = emu
        .get("users?$select=skills")
        .await
        .graph_error(501, "NotImplemented");
    assert_eq!(msg, "This operation target is not yet supported.");
    let msg = emu
        .get("users?$select=nope")
        .await
        .graph_error(400, "Request_BadRequest");
    assert_eq!(
        msg,
        "Could not find a property named 'nope' on type 'microsoft.graph.user'."
    );
}

#[tokio::test]
async fn filters() {
    let emu = start(&[]);
    let cases: Vec<(String, Vec<&str>)> = vec![
        (format!("users?$filter=id eq '{U3}'"), vec![U3]),
        (format!("users?$filter=id in ('{U1}','{U4}')"), vec![U1, U4]),
        (
            "users?$filter=onPremisesSecurityIdentifier eq 'S-1-5-21-1-2-3-1105'".into(),
            vec![U5],
        ),
        ("users?$filter=displayName eq 'testuser2'".into(), vec![U2]),
        (
            "users?$filter=startswith(displayName,'Testuser')&$top=2".into(),
            vec![U1, U2],
        ),
        (
            "groups?$filter=groupTypes/any(c:c eq 'Unified')".into(),
            vec![G_M365],
        ),
        (
            "groups?$filter=securityEnabled eq true".into(),
            vec![G_HR, G_EMPTY, G_BIG],
        ),
        ("groups?$filter=mailEnabled eq true".into(), vec![G_M365]),
        (
            "groups?$filter=startswith(displayName,'All')".into(),
            vec![G_M365, G_EMPTY],
        ),
        (
            "groups?%24filter=displayName%20eq%20%27sg-HR%27".into(),
            vec![G_HR],
        ),
    ];
    for (url, want) in cases {
        let r = emu.get(&url).await;
        assert_eq!(r.status, 200, "{url}: {}", r.body);
        assert_eq!(ids(&r.body), want, "{url}");
    }
    for bad in [
        "users?$filter=endsWith(mail,'@contoso.com')",
        "users?$filter=displayName ne 'x'",
        "groups?$filter=description eq 'x'",
    ] {
        emu.get(bad)
            .await
            .graph_error(400, "Request_UnsupportedQuery");
    }
    let msg = emu
        .get("users?$top=1000")
        .await
        .graph_error(400, "Request_UnsupportedQuery");
    assert!(msg.contains("999"), "{msg}");
    assert_eq!(emu.get("users?$top=999").await.status, 200);
}

#[tokio::test]
async fn members_are_directory_objects() {
    let emu = start(&["--page-size", "4"]);
    let r = emu.get(&format!("groups/{G_BIG}/members")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body["@odata.context"],
        format!("{}/v1.0/$metadata#directoryObjects", emu.base)
    );
    let items = r.body["value"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert!(items.iter().all(|i| i["@odata.type"].is_string()));
    let next = r.body["@odata.nextLink"].as_str().unwrap().to_string();
    let r2 = emu.get(&next).await;
    let mut all: Vec<String> = ids(&r.body);
    all.extend(ids(&r2.body));
    all.sort();
    let mut want = vec![U1, U2, U3, U4, U5, G_HR];
    want.sort();
    assert_eq!(all, want);
    let group_item = r.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .chain(r2.body["value"].as_array().unwrap())
        .find(|i| i["id"] == G_HR)
        .unwrap()
        .clone();
    assert_eq!(group_item["@odata.type"], "#microsoft.graph.group");

    // $expand=members on one group: up to 20 directory objects.
    let r = emu
        .get(&format!("groups/{G_BIG}?$expand=members&$select=id"))
        .await;
    assert_eq!(r.body["members"].as_array().unwrap().len(), 6);

    // Cast and transitive members.
    let r = emu
        .get(&format!("groups/{G_BIG}/members/microsoft.graph.group"))
        .await;
    assert_eq!(ids(&r.body), vec![G_HR]);
    let r = emu
        .get(&format!("groups/{G_BIG}/transitiveMembers?$top=999"))
        .await;
    assert_eq!(ids(&r.body).len(), 6);
    let r = emu.get(&format!("users/{U1}/memberOf")).await;
    assert_eq!(ids(&r.body).len(), 3);

    // $count needs the advanced-query header.
    let msg = emu
        .get(&format!("groups/{G_BIG}/members/$count"))
        .await
        .graph_error(400, "Request_BadRequest");
    assert_eq!(msg, "$count is not currently supported.");
    let r = emu
        .get_with(
            &format!("groups/{G_BIG}/members/$count"),
            &[("ConsistencyLevel", "eventual")],
        )
        .await;
    assert_eq!(r.body, json!(6));
}

#[tokio::test]
async fn errors_have_graph_shape_and_echo_client_request_id() {
    let emu = start(&[]);
    let r = emu
        .get_with(
            "groups/00000000-0000-0000-0000-00000000dead",
            &[("client-request-id", "abc-123")],
        )
        .await;
    let msg = r.graph_error(404, "Request_ResourceNotFound");
    assert_eq!(
        msg,
        "Resource '00000000-0000-0000-0000-00000000dead' does not exist or one of its queried reference-property objects are not present."
    );
    assert_eq!(r.header("client-request-id"), Some("abc-123"));
    assert_eq!(
        r.body["error"]["innerError"]["client-request-id"],
        "abc-123"
    );
    assert_eq!(
        r.body["error"]["innerError"]["request-id"],
        r.header("request-id").unwrap()
    );
    emu.get("nonsense").await.graph_error(400, "BadRequest");
}
