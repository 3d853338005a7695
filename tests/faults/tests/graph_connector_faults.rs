//! Graph faults at the connector (`writeback::graph`) against the Graph emulator: throttling
//! (429 with Retry-After), 503s, and sync resets (410, an expired or mangled delta token) that
//! lead to full rounds.
//!
//! Needs `target/debug/graph-emulator` (`cargo build -p graph-emulator`).

use std::time::{Duration, Instant};

use serde_json::json;
use writeback::graph::delta::{run_round, DeltaStart};
use writeback::graph::{Credential, GraphClient, GraphError};
use writeback_integration::emulator::Emulator;

use writeback_integration::graph_tenant::*;

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
