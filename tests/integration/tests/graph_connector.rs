//! The Graph connector (`writeback::graph`) against the Graph emulator: tokens with a secret and
//! a certificate, delta rounds with paging and a large group split across pages, changes made
//! through Graph's write API. Throttling and sync resets are in `tests/faults/`.
//!
//! Needs `target/debug/graph-emulator` (`cargo build -p graph-emulator`) and the `openssl` CLI.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use reqwest::Method;
use serde_json::json;
use writeback::graph::auth::AssertionAlg;
use writeback::graph::delta::{groups_delta_url, run_round, users_delta_url, DeltaStart};
use writeback::graph::model::RemovedReason;
use writeback::graph::{Credential, GraphApi, GraphClient, GraphError};
use writeback_integration::emulator::Emulator;

use writeback_integration::graph_tenant::*;

/// Runs the `openssl` CLI in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("the openssl CLI is needed for this test: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("reading {file}: {e}"))
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn token_with_client_secret() {
    let emu = Emulator::start(&tenant(None), &[]);
    let client = secret_client(&emu);
    let token = client
        .tokens()
        .token()
        .await
        .expect("token with the secret");
    assert!(token.split('.').count() == 3, "a JWT access token");
    // Cached: the same token comes back.
    assert_eq!(client.tokens().token().await.expect("cached token"), token);
    let groups = client
        .get_all_pages("/groups?$select=id,displayName")
        .await
        .expect("list groups");
    assert_eq!(
        ids(groups.iter().filter_map(|g| g["id"].as_str())),
        all_group_ids()
    );

    // Concurrent first calls share one token request (every token the emulator issues is unique).
    let fresh = secret_client(&emu);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let c = fresh.clone();
            tokio::spawn(async move { c.tokens().token().await.expect("concurrent token") })
        })
        .collect();
    let mut tokens = BTreeSet::new();
    for t in tasks {
        tokens.insert(t.await.expect("token task"));
    }
    assert_eq!(tokens.len(), 1, "one refresh for all callers");
    assert!(!tokens.contains(&token), "a new client has its own token");

    // A wrong secret: the token endpoint's error with its AADSTS code, and no secret in it.
    let wrong = GraphClient::new(settings(&emu, Credential::Secret("not-the-secret".into())))
        .expect("client");
    let err = wrong.get_json("/groups").await.expect_err("wrong secret");
    match &err {
        GraphError::Token(t) => {
            assert_eq!(t.status, 401, "{err}");
            assert_eq!(t.error, "invalid_client", "{err}");
            assert_eq!(t.aadsts, Some(7000215), "{err}");
        }
        other => panic!("expected a token error, got {other:?}"),
    }
    assert!(!err.to_string().contains("not-the-secret"), "{err}");

    // An unknown tenant is refused by the token endpoint too.
    let mut s = settings(&emu, Credential::Secret(SECRET.into()));
    s.token_url = emu.token_url("00000000-dead-4000-8000-000000000000");
    let err = GraphClient::new(s)
        .expect("client")
        .tokens()
        .token()
        .await
        .expect_err("unknown tenant");
    assert!(
        matches!(&err, GraphError::Token(t) if t.aadsts.is_some()),
        "{err:?}"
    );
}

#[tokio::test]
async fn token_with_certificate_ps256_and_rs256() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = dir.path();
    openssl(
        p,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "app.key",
            "-out",
            "app.pem",
            "-days",
            "2",
            "-subj",
            "/CN=writeback-integration-app",
        ],
    );
    openssl(
        p,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other.pem",
            "-days",
            "2",
            "-subj",
            "/CN=not-registered",
        ],
    );
    let emu = Emulator::start(&tenant(Some(&read(p, "app.pem"))), &[]);
    let cert = Credential::Certificate {
        private_key_pem: read(p, "app.key").into(),
        certificate_pem: read(p, "app.pem"),
    };

    for alg in [AssertionAlg::Ps256, AssertionAlg::Rs256] {
        let mut s = settings(&emu, cert.clone());
        s.assertion_alg = alg;
        let client = GraphClient::new(s).expect("client");
        client
            .tokens()
            .token()
            .await
            .unwrap_or_else(|e| panic!("{alg:?} token: {e}"));
        let g = client
            .get_json(&format!("/groups/{G_M365}?$select=id,displayName"))
            .await
            .expect("get group");
        assert_eq!(g["displayName"], "Project Falcon");
    }

    // A certificate the app does not have: refused with an AADSTS code.
    let other = Credential::Certificate {
        private_key_pem: read(p, "other.key").into(),
        certificate_pem: read(p, "other.pem"),
    };
    let err = GraphClient::new(settings(&emu, other))
        .expect("client")
        .tokens()
        .token()
        .await
        .expect_err("unknown cert");
    assert!(
        matches!(&err, GraphError::Token(t) if t.aadsts.is_some() && t.status >= 400),
        "{err:?}"
    );
}

#[tokio::test]
async fn full_groups_round_pages_and_merges_a_large_group() {
    let emu = Emulator::start(&tenant(None), PAGING);
    let client = secret_client(&emu);
    let before = emulator_stats(&emu).await["requests"]
        .as_u64()
        .expect("request count");
    let (round, _) = initial_round(&client).await;
    let requests = emulator_stats(&emu).await["requests"]
        .as_u64()
        .expect("request count")
        - before;
    // 8 groups at 3 per page, the large group in 25-member slices, plus the empty page.
    assert!(
        requests >= 5,
        "the round should span several pages, took {requests} requests"
    );

    assert!(round.full);
    assert!(
        round.delta_link.starts_with(&emu.graph_url()),
        "{}",
        round.delta_link
    );
    assert!(
        round.delta_link.contains("$deltatoken="),
        "{}",
        round.delta_link
    );
    assert_eq!(ids(round.items.keys()), all_group_ids());
    for item in round.items.values() {
        assert_eq!(item.removed, None, "{}", item.id);
        assert!(item.members_removed.is_empty(), "{}", item.id);
        assert!(
            !item.props.keys().any(|k| k.contains('@')),
            "annotations in props of {}",
            item.id
        );
    }

    let large = &round.items[G_LARGE];
    assert_eq!(
        ids(large.members_added.keys()),
        ids((0..USERS).map(user_id))
    );
    assert!(large
        .members_added
        .values()
        .all(|m| m.odata_type == "#microsoft.graph.user"));
    assert_eq!(large.props["displayName"], "Large");

    let m365 = &round.items[G_M365];
    assert_eq!(m365.props["groupTypes"], json!(["Unified"]));
    assert_eq!(m365.props["mailEnabled"], json!(true));
    assert_eq!(m365.props["mail"], "falcon@contoso.onmicrosoft.com");
    assert_eq!(m365.props["mailNickname"], "falcon");
    assert_eq!(
        m365.props["proxyAddresses"],
        json!(["SMTP:falcon@contoso.onmicrosoft.com"])
    );
    assert_eq!(ids(m365.members_added.keys()), ids((0..5).map(user_id)));

    let sec = &round.items[G_SEC];
    assert_eq!(
        sec.members_added[G_NESTED].odata_type,
        "#microsoft.graph.group"
    );
    assert_eq!(sec.members_added.len(), 4);
    assert!(round.items[G_EMPTY[0]].members_added.is_empty());

    // What the merger had to deal with: the raw pages, the large group repeated on several.
    let mut url = groups_delta_url(client.graph_base(), &[]);
    let (mut pages, mut empty_pages, mut large_slices) = (0, 0, 0);
    loop {
        let page = client.get_json(&url).await.expect("raw delta page");
        pages += 1;
        let values = page["value"].as_array().expect("value array");
        empty_pages += usize::from(values.is_empty());
        large_slices += values.iter().filter(|v| v["id"] == G_LARGE).count();
        match page["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    assert!(pages >= 4, "{pages} pages");
    assert!(empty_pages >= 1, "an empty page with a nextLink");
    assert!(
        large_slices >= 3,
        "60 members in slices of 25: {large_slices} occurrences"
    );

    // The next round from the deltaLink has nothing to say.
    let initial_url = groups_delta_url(client.graph_base(), &[]);
    let next = run_round(
        &client,
        DeltaStart::Link {
            link: round.delta_link.clone(),
            initial_url,
        },
    )
    .await
    .expect("incremental round");
    assert!(!next.full);
    assert!(
        next.items.is_empty(),
        "no changes expected: {:?}",
        next.items.keys()
    );
}

#[tokio::test]
async fn users_round_reads_the_selected_properties() {
    let emu = Emulator::start(&tenant(None), &["--delta-page-size", "7"]);
    let client = secret_client(&emu);
    let url = users_delta_url(client.graph_base(), &[]);
    let round = run_round(&client, DeltaStart::Initial { url })
        .await
        .expect("users round");
    assert!(round.full);
    assert_eq!(ids(round.items.keys()), ids((0..USERS).map(user_id)));
    let u = &round.items[&user_id(3)];
    assert_eq!(
        u.props["userPrincipalName"],
        "user3@contoso.onmicrosoft.com"
    );
    assert_eq!(u.props["accountEnabled"], json!(true));
}

#[tokio::test]
async fn changes_show_in_the_next_round() {
    let emu = Emulator::start(&tenant(None), PAGING);
    let client = secret_client(&emu);
    let (round, initial_url) = initial_round(&client).await;

    // Rename a group, move members, delete a (security, so permanently deleted) group.
    client
        .send_with_retry(
            Method::PATCH,
            &format!("/groups/{G_M365}"),
            Some(&json!({"displayName": "Project Hawk"})),
        )
        .await
        .expect("PATCH group");
    client
        .send_with_retry(
            Method::DELETE,
            &format!("/groups/{G_M365}/members/{}/$ref", user_id(0)),
            None,
        )
        .await
        .expect("remove member");
    let member_ref =
        json!({"@odata.id": format!("{}/directoryObjects/{}", client.graph_base(), user_id(42))});
    client
        .send_with_retry(
            Method::POST,
            &format!("/groups/{G_M365}/members/$ref"),
            Some(&member_ref),
        )
        .await
        .expect("add member");
    client
        .send_with_retry(Method::DELETE, &format!("/groups/{}", G_EMPTY[3]), None)
        .await
        .expect("delete group");

    let changes = run_round(
        &client,
        DeltaStart::Link {
            link: round.delta_link.clone(),
            initial_url: initial_url.clone(),
        },
    )
    .await
    .expect("incremental round");
    assert!(!changes.full);
    assert_ne!(changes.delta_link, round.delta_link);
    assert_eq!(ids(changes.items.keys()), ids([G_M365, G_EMPTY[3]]));
    let m365 = &changes.items[G_M365];
    assert_eq!(m365.props["displayName"], "Project Hawk");
    assert_eq!(m365.removed, None);
    assert_eq!(ids(&m365.members_removed), ids([user_id(0)]));
    assert_eq!(ids(m365.members_added.keys()), ids([user_id(42)]));
    assert_eq!(
        changes.items[G_EMPTY[3]].removed,
        Some(RemovedReason::Deleted)
    );

    // And then quiet again.
    let quiet = run_round(
        &client,
        DeltaStart::Link {
            link: changes.delta_link.clone(),
            initial_url,
        },
    )
    .await
    .expect("quiet round");
    assert!(quiet.items.is_empty(), "{:?}", quiet.items.keys());
}

#[tokio::test]
async fn https_with_an_extra_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = dir.path();
    openssl(
        p,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Writeback test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        p,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        p.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext file");
    openssl(
        p,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    let cert = p.join("server.pem").display().to_string();
    let key = p.join("server.key").display().to_string();
    let emu = Emulator::start(&tenant(None), &["--tls-cert", &cert, "--tls-key", &key]);
    assert!(emu.base_url.starts_with("https://"), "{}", emu.base_url);

    // Without the CA the emulator's certificate is not trusted: verification is always on.
    let untrusted = secret_client(&emu);
    let err = untrusted
        .tokens()
        .token()
        .await
        .expect_err("untrusted certificate");
    assert!(matches!(err, GraphError::Transport(_)), "{err:?}");

    let mut s = settings(&emu, Credential::Secret(SECRET.into()));
    s.ca_file = Some(p.join("ca.pem"));
    let client = GraphClient::new(s).expect("client with the CA");
    let (round, _) = initial_round(&client).await;
    assert_eq!(ids(round.items.keys()), all_group_ids());
}
