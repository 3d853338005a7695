//! The tenant generator, HTTPS serving, and a full delta round over a generated tenant.

mod api_common;

use std::process::Command;

use api_common::*;
use serde_json::{json, Value};

fn generate(args: &[&str]) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_graph-emulator"))
        .arg("generate")
        .args(args)
        .output()
        .expect("run generate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn generator_is_deterministic_and_realistic() {
    let args = [
        "--users",
        "400",
        "--groups",
        "120",
        "--seed",
        "9",
        "--large-groups",
        "2",
        "--large-size",
        "300",
    ];
    let a = generate(&args);
    let b = generate(&args);
    assert_eq!(a, b, "same arguments, byte-identical output");
    let c = generate(&["--users", "400", "--groups", "120", "--seed", "10"]);
    assert_ne!(a, c);

    let t: Value = serde_json::from_slice(&a).unwrap();
    let users = t["users"].as_array().unwrap();
    let groups = t["groups"].as_array().unwrap();
    assert_eq!(users.len(), 400);
    assert_eq!(groups.len(), 120);
    let synced: Vec<&Value> = users
        .iter()
        .filter(|u| u["onPremisesSyncEnabled"] == true)
        .collect();
    assert_eq!(synced.len(), 200, "half synced");
    for u in &synced {
        let sid = u["onPremisesSecurityIdentifier"].as_str().unwrap();
        assert!(sid.starts_with("S-1-5-21-"), "{sid}");
        assert!(u["onPremisesImmutableId"].is_string());
    }
    assert!(
        users
            .iter()
            .filter(|u| u["onPremisesSyncEnabled"].is_null())
            .count()
            == 200
    );
    let unified = groups
        .iter()
        .filter(|g| g["groupTypes"] == json!(["Unified"]))
        .count();
    assert!(unified > 10 && unified < 110, "{unified}");
    let sizes: Vec<usize> = groups
        .iter()
        .map(|g| g["members"].as_array().unwrap().len())
        .collect();
    assert_eq!(&sizes[..2], &[300, 300], "large groups first");
    let small = sizes.iter().filter(|s| **s <= 40).count();
    assert!(small > 80, "most groups are small: {sizes:?}");
}

#[tokio::test]
async fn generated_tenant_full_round() {
    let t: Value = serde_json::from_slice(&generate(&[
        "--users",
        "3000",
        "--groups",
        "1500",
        "--seed",
        "3",
        "--large-groups",
        "1",
        "--large-size",
        "2500",
    ]))
    .unwrap();
    let memberships: usize = t["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["members"].as_array().unwrap().len())
        .sum();
    // The generated tenant's own app credentials.
    let mut tenant = t.clone();
    tenant["tenantId"] = json!(TENANT_ID);
    tenant["apps"] = json!([{"clientId": CLIENT_ID, "clientSecret": SECRET}]);
    let emu = start_with(&tenant, &["--member-page-size", "1000"]);
    let started = std::time::Instant::now();
    let (pages, _) = emu
        .delta_round("groups/delta?$select=displayName,members", &[])
        .await;
    let elapsed = started.elapsed();
    let m = merge(&pages);
    assert_eq!(m.len(), 1500);
    assert_eq!(
        m.values().map(|e| e.added.len()).sum::<usize>(),
        memberships
    );
    let big = t["groups"][0]["id"].as_str().unwrap();
    assert_eq!(m[big].appearances, 3, "2500 members at 1000 per page");
    assert!(elapsed.as_secs() < 30, "full round took {elapsed:?}");
}

#[tokio::test]
async fn serves_https() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("tls.key");
    let cert = dir.path().join("tls.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args([
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl CLI is needed to make a test certificate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let emu = start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(emu.base.starts_with("https://127.0.0.1:"), "{}", emu.base);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let r = http
        .get(format!(
            "{}/{TENANT_ID}/v2.0/.well-known/openid-configuration",
            emu.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["token_endpoint"],
        format!("{}/{TENANT_ID}/oauth2/v2.0/token", emu.base)
    );
    let token: Value = http
        .post(body["token_endpoint"].as_str().unwrap())
        .form(&[
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = http
        .get(format!("{}/v1.0/groups/delta", emu.base))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(body["@odata.deltaLink"]
        .as_str()
        .unwrap()
        .starts_with("https://127.0.0.1:"));
}
