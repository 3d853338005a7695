//! The Graph connector tests' tenant (shared by `tests/graph_connector.rs` and the fault tests in
//! `tests/faults/`): its ids and shape, the emulator serving it, a client and a first round.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use writeback::graph::delta::{groups_delta_url, run_round, DeltaStart};
use writeback::graph::model::DeltaRound;
use writeback::graph::{Credential, GraphClient, GraphSettings};

use crate::emulator::Emulator;

pub const TENANT_ID: &str = "4b1f0a55-5c1e-4f0e-9d7e-0d6c2c7a1b01";
pub const CLIENT_ID: &str = "7a3f7c1e-2b9d-4c55-8f00-9a1b2c3d4e5f";
pub const SECRET: &str = "emulator-client-secret";
pub const USERS: usize = 60;

pub const G_LARGE: &str = "10000000-0000-4000-8000-000000000001";
pub const G_M365: &str = "10000000-0000-4000-8000-000000000002";
pub const G_SEC: &str = "10000000-0000-4000-8000-000000000003";
pub const G_NESTED: &str = "10000000-0000-4000-8000-000000000004";
pub const G_EMPTY: [&str; 4] = [
    "10000000-0000-4000-8000-000000000005",
    "10000000-0000-4000-8000-000000000006",
    "10000000-0000-4000-8000-000000000007",
    "10000000-0000-4000-8000-000000000008",
];

/// Paging that splits the round into several pages and the large group into slices of 25.
pub const PAGING: &[&str] = &[
    "--delta-page-size",
    "3",
    "--member-page-size",
    "25",
    "--empty-delta-page",
];

pub fn user_id(i: usize) -> String {
    format!("20000000-0000-4000-8000-{i:012}")
}

pub fn all_group_ids() -> BTreeSet<String> {
    [G_LARGE, G_M365, G_SEC, G_NESTED]
        .into_iter()
        .chain(G_EMPTY)
        .map(str::to_owned)
        .collect()
}

pub fn tenant(certificate_pem: Option<&str>) -> Value {
    let users: Vec<Value> = (0..USERS)
        .map(|i| {
            json!({
                "id": user_id(i),
                "displayName": format!("User {i}"),
                "userPrincipalName": format!("user{i}@contoso.onmicrosoft.com"),
                "mail": format!("user{i}@contoso.onmicrosoft.com"),
                "accountEnabled": true,
            })
        })
        .collect();
    let security = |id: &str, name: &str, members: Vec<String>| {
        json!({
            "id": id, "displayName": name, "description": format!("{name} group"),
            "groupTypes": [], "mailEnabled": false, "securityEnabled": true,
            "mailNickname": name.to_lowercase(), "members": members,
        })
    };
    let mut groups = vec![
        security(G_LARGE, "Large", (0..USERS).map(user_id).collect()),
        json!({
            "id": G_M365, "displayName": "Project Falcon", "description": "M365 group",
            "groupTypes": ["Unified"], "mailEnabled": true, "securityEnabled": false,
            "mail": "falcon@contoso.onmicrosoft.com", "mailNickname": "falcon",
            "proxyAddresses": ["SMTP:falcon@contoso.onmicrosoft.com"], "visibility": "Private",
            "members": (0..5).map(user_id).collect::<Vec<_>>(),
        }),
        security(G_NESTED, "Nested", vec![user_id(10)]),
        security(
            G_SEC,
            "Security",
            vec![user_id(5), user_id(6), user_id(7), G_NESTED.to_owned()],
        ),
    ];
    for (i, id) in G_EMPTY.iter().enumerate() {
        groups.push(security(id, &format!("Empty{i}"), vec![]));
    }
    let mut app = json!({"clientId": CLIENT_ID, "clientSecret": SECRET});
    if let Some(pem) = certificate_pem {
        app["certificatePem"] = json!(pem);
    }
    json!({
        "tenantId": TENANT_ID,
        "domain": "contoso.onmicrosoft.com",
        "apps": [app],
        "users": users,
        "groups": groups,
    })
}

pub fn settings(emu: &Emulator, credential: Credential) -> GraphSettings {
    let mut s = GraphSettings::new(
        emu.graph_url(),
        emu.token_url(TENANT_ID),
        CLIENT_ID,
        credential,
    );
    s.timeout = Duration::from_secs(30);
    s.max_retry_wait = Duration::from_secs(20);
    s
}

pub fn secret_client(emu: &Emulator) -> GraphClient {
    GraphClient::new(settings(emu, Credential::Secret(SECRET.into()))).expect("Graph client")
}

pub async fn initial_round(client: &GraphClient) -> (DeltaRound, String) {
    let initial_url = groups_delta_url(client.graph_base(), &[]);
    let round = run_round(
        client,
        DeltaStart::Initial {
            url: initial_url.clone(),
        },
    )
    .await
    .expect("initial groups delta round");
    (round, initial_url)
}

pub fn ids(set: impl IntoIterator<Item = impl AsRef<str>>) -> BTreeSet<String> {
    set.into_iter().map(|s| s.as_ref().to_owned()).collect()
}

pub async fn emulator_stats(emu: &Emulator) -> Value {
    emu.control("state", None).await["_emulator"].clone()
}
