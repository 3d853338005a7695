//! Graph faults at the connector (`writeback::graph`) against the Graph emulator: throttling
//! (429 with Retry-After), 503s, and sync resets (410, an expired or mangled delta token) that
//! lead to full rounds.
//!
//! Needs `target/debug/graph-emulator` (`cargo build -p graph-emulator`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use writeback::graph::delta::{groups_delta_url, run_round, DeltaStart};
use writeback::graph::model::DeltaRound;
use writeback::graph::{Credential, GraphClient, GraphError, GraphSettings};
use writeback_integration::emulator::Emulator;

const TENANT_ID: &str = "4b1f0a55-5c1e-4f0e-9d7e-0d6c2c7a1b01";
const CLIENT_ID: &str = "7a3f7c1e-2b9d-4c55-8f00-9a1b2c3d4e5f";
const SECRET: &str = "emulator-client-secret";
const USERS: usize = 60;

const G_LARGE: &str = "10000000-0000-4000-8000-000000000001";
const G_M365: &str = "10000000-0000-4000-8000-000000000002";
const G_SEC: &str = "10000000-0000-4000-8000-000000000003";
const G_NESTED: &str = "10000000-0000-4000-8000-000000000004";
const G_EMPTY: [&str; 4] = [
    "10000000-0000-4000-8000-000000000005",
    "10000000-0000-4000-8000-000000000006",
    "10000000-0000-4000-8000-000000000007",
    "10000000-0000-4000-8000-000000000008",
];

/// Paging that splits the round into several pages and the large group into slices of 25.
const PAGING: &[&str] = &[
    "--delta-page-size",
    "3",
    "--member-page-size",
    "25",
    "--empty-delta-page",
];

fn user_id(i: usize) -> String {
    format!("20000000-0000-4000-8000-{i:012}")
}

fn all_group_ids() -> BTreeSet<String> {
    [G_LARGE, G_M365, G_SEC, G_NESTED]
        .into_iter()
        .chain(G_EMPTY)
        .map(str::to_owned)
        .collect()
}

fn tenant(certificate_pem: Option<&str>) -> Value {
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

fn settings(emu: &Emulator, credential: Credential) -> GraphSettings {
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

fn secret_client(emu: &Emulator) -> GraphClient {
    GraphClient::new(settings(emu, Credential::Secret(SECRET.into()))).expect("Graph client")
}

async fn initial_round(client: &GraphClient) -> (DeltaRound, String) {
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

fn ids(set: impl IntoIterator<Item = impl AsRef<str>>) -> BTreeSet<String> {
    set.into_iter().map(|s| s.as_ref().to_owned()).collect()
}

async fn emulator_stats(emu: &Emulator) -> Value {
    emu.control("state", None).await["_emulator"].clone()
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn throttling_and_unavailability_are_retried() {
    let emu = Emulator::start(&tenant(None), PAGING);
    let client = secret_client(&emu);
    client.tokens().token().await.expect("token");

    // Two 429s with a fractional Retry-After, in the middle of a paged round.
    emu.control("faults", Some(json!({"next429": 2, "retryAfter": 0.3})))
        .await;
    let started = Instant::now();
    let (round, _) = initial_round(&client).await;
    let elapsed = started.elapsed();
    assert_eq!(ids(round.items.keys()), all_group_ids());
    assert_eq!(round.items[G_LARGE].members_added.len(), USERS);
    assert_eq!(emulator_stats(&emu).await["faultsInjected"], json!(2));
    assert!(
        elapsed >= Duration::from_millis(600),
        "Retry-After honoured: {elapsed:?}"
    );

    // 503 with Retry-After.
    emu.control("faults", Some(json!({"next503": 2, "retryAfter": 0.2})))
        .await;
    let g = client
        .get_json(&format!("/groups/{G_SEC}"))
        .await
        .expect("GET after two 503s");
    assert_eq!(g["displayName"], "Security");

    // Out of retries: the last 429 comes back with Graph's code and request-id.
    let mut s = settings(&emu, Credential::Secret(SECRET.into()));
    s.max_retries = 1;
    let impatient = GraphClient::new(s).expect("client");
    impatient.tokens().token().await.expect("token");
    emu.control("faults", Some(json!({"next429": 3, "retryAfter": 0.1})))
        .await;
    let err = impatient
        .get_json("/groups")
        .await
        .expect_err("still throttled");
    assert!(err.is_throttled(), "{err:?}");
    assert_eq!(err.code(), Some("TooManyRequests"));
    assert!(err.request_id().is_some_and(|id| !id.is_empty()), "{err:?}");

    // A Retry-After beyond the wait cap is not waited for.
    let mut s = settings(&emu, Credential::Secret(SECRET.into()));
    s.max_retry_wait = Duration::from_millis(500);
    let capped = GraphClient::new(s).expect("client");
    capped.tokens().token().await.expect("token");
    emu.control("faults", Some(json!({"next429": 1, "retryAfter": 5})))
        .await;
    let started = Instant::now();
    let err = capped
        .get_json("/groups")
        .await
        .expect_err("throttled beyond the cap");
    assert!(err.is_throttled(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "did not wait out a 5 s Retry-After"
    );
    emu.control("faults", Some(json!({"next429": 0, "next503": 0})))
        .await;
}

#[tokio::test]
async fn a_410_reset_leads_to_a_full_round() {
    let emu = Emulator::start(&tenant(None), PAGING);
    let client = secret_client(&emu);
    let (round, initial_url) = initial_round(&client).await;
    emu.control("delta/reset", Some(json!({"count": 1}))).await;
    let reset = run_round(
        &client,
        DeltaStart::Link {
            link: round.delta_link.clone(),
            initial_url: initial_url.clone(),
        },
    )
    .await
    .expect("round after a 410");
    assert!(reset.full, "a reset round is a full round");
    assert_eq!(ids(reset.items.keys()), all_group_ids());
    assert_eq!(reset.items[G_LARGE].members_added.len(), USERS);
    // The new deltaLink works normally.
    let next = run_round(
        &client,
        DeltaStart::Link {
            link: reset.delta_link.clone(),
            initial_url,
        },
    )
    .await
    .expect("round after the reset");
    assert!(!next.full && next.items.is_empty());
}

#[tokio::test]
async fn an_expired_delta_token_leads_to_a_full_round() {
    let emu = Emulator::start(&tenant(None), PAGING);
    let client = secret_client(&emu);
    let (round, initial_url) = initial_round(&client).await;
    let token_before = client.tokens().token().await.expect("token");
    // Eight days later: the access token (1 h) and the delta token (7 days) have both expired.
    emu.advance_clock(8 * 24 * 3600).await;
    // Graph says 401 to the old access token; the client fetches a new one and goes on.
    let err = client.get_json(&round.delta_link).await;
    assert!(
        matches!(&err, Err(e) if e.code().is_some_and(|c| c.eq_ignore_ascii_case("syncStateNotFound"))),
        "expected syncStateNotFound, got {err:?}"
    );
    assert!(err.as_ref().is_err_and(GraphError::is_sync_reset));
    assert_ne!(
        client.tokens().token().await.expect("token"),
        token_before,
        "the token was renewed"
    );

    let full = run_round(
        &client,
        DeltaStart::Link {
            link: round.delta_link.clone(),
            initial_url: initial_url.clone(),
        },
    )
    .await
    .expect("round after expiry");
    assert!(full.full);
    assert_eq!(ids(full.items.keys()), all_group_ids());

    // A mangled token ("Badly formed token.") also restarts.
    let mangled = full
        .delta_link
        .replace("$deltatoken=", "$deltatoken=garbage");
    assert_ne!(mangled, full.delta_link);
    let again = run_round(
        &client,
        DeltaStart::Link {
            link: mangled,
            initial_url,
        },
    )
    .await
    .expect("round after a bad token");
    assert!(again.full);
    assert_eq!(ids(again.items.keys()), all_group_ids());
}
