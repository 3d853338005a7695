//! Token endpoint (secret, HTTP Basic, certificate assertions) and Graph bearer checks.

mod api_common;

use std::path::Path;
use std::process::Command;

use api_common::*;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sha1::Digest;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const SCOPE: &str = "https://graph.microsoft.com/.default";

/// A throwaway RSA key and self-signed certificate made with the openssl CLI.
struct TestCert {
    key_pem: Vec<u8>,
    cert_pem: String,
    der: Vec<u8>,
}

fn make_cert(dir: &Path, name: &str) -> TestCert {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        ])
        .arg(format!("/CN={name}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl CLI is needed to make a test certificate");
    assert!(
        status.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let der = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert)
        .output()
        .expect("openssl x509");
    assert!(der.status.success());
    TestCert {
        key_pem: std::fs::read(&key).unwrap(),
        cert_pem: std::fs::read_to_string(&cert).unwrap(),
        der: der.stdout,
    }
}

fn tenant_with_cert(cert: &TestCert) -> Value {
    let mut t = tenant();
    t["apps"] = json!([
        {"clientId": CLIENT_ID, "clientSecret": SECRET, "certificatePem": cert.cert_pem},
    ]);
    t
}

fn assertion(cert: &TestCert, alg: Algorithm, aud: &str, exp_float: bool, sha256: bool) -> String {
    let mut header = Header::new(alg);
    header.typ = Some("JWT".into());
    if sha256 {
        header.x5t_s256 = Some(URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&cert.der)));
    } else {
        // MSAL Python pads its thumbprints.
        header.x5t = Some(URL_SAFE.encode(sha1::Sha1::digest(&cert.der)));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let exp = if exp_float {
        json!(now + 600.5)
    } else {
        json!((now + 600.0) as u64)
    };
    let claims = json!({
        "aud": aud, "iss": CLIENT_ID, "sub": CLIENT_ID, "jti": "j1",
        "exp": exp, "iat": now,
    });
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(&cert.key_pem).unwrap(),
    )
    .unwrap()
}

async fn assert_aad_error(r: &Resp, status: u16, error: &str, code: u64) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.body["error"], error, "{}", r.body);
    assert_eq!(r.body["error_codes"], json!([code]));
    let desc = r.body["error_description"].as_str().unwrap();
    assert!(desc.starts_with(&format!("AADSTS{code}: ")), "{desc}");
    assert!(
        desc.contains("\r\nTrace ID: ")
            && desc.contains("\r\nCorrelation ID: ")
            && desc.contains("\r\nTimestamp: ")
    );
    for k in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
        assert!(r.body[k].is_string(), "{k}: {}", r.body);
    }
}

#[tokio::test]
async fn client_secret_success_and_failures() {
    let emu = start(&[]);
    let ok = emu
        .token_request(&[
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", SCOPE),
            ("grant_type", "client_credentials"),
        ])
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body["token_type"], "Bearer");
    assert_eq!(ok.body["expires_in"], 3599);
    assert_eq!(ok.body["ext_expires_in"], 3599);
    assert!(ok.body["access_token"].is_string());

    // HTTP Basic.
    let basic = STANDARD.encode(format!("{CLIENT_ID}:{SECRET}"));
    let r = emu
        .http
        .post(emu.token_url())
        .header("Authorization", format!("Basic {basic}"))
        .form(&[("scope", SCOPE), ("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let bad = emu
        .token_request(&[
            ("client_id", CLIENT_ID),
            ("client_secret", "nope"),
            ("scope", SCOPE),
            ("grant_type", "client_credentials"),
        ])
        .await;
    assert_aad_error(&bad, 401, "invalid_client", 7000215).await;

    let scope = emu
        .token_request(&[
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", "https://graph.microsoft.com/User.Read"),
            ("grant_type", "client_credentials"),
        ])
        .await;
    assert_aad_error(&scope, 400, "invalid_scope", 1002012).await;
    let scope = emu
        .token_request(&[
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", "https://foo.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
        ])
        .await;
    assert_aad_error(&scope, 400, "invalid_scope", 70011).await;
    // The host's default scope: the emulator's own origin.
    let own = format!("{}/.default", emu.base);
    let r = emu
        .token_request(&[
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", &own),
            ("grant_type", "client_credentials"),
        ])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let app = emu
        .token_request(&[
            ("client_id", "11111111-1111-1111-1111-111111111111"),
            ("client_secret", SECRET),
            ("scope", SCOPE),
            ("grant_type", "client_credentials"),
        ])
        .await;
    assert_aad_error(&app, 400, "unauthorized_client", 700016).await;

    let r = emu
        .http
        .post(format!(
            "{}/not-my-tenant.onmicrosoft.com/oauth2/v2.0/token",
            emu.base
        ))
        .form(&[
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", SCOPE),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error_codes"], json!([90002]));

    // The tenant's domain works as the tenant segment too.
    let r = emu
        .http
        .post(format!(
            "{}/contoso.onmicrosoft.com/oauth2/v2.0/token",
            emu.base
        ))
        .form(&[
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", SCOPE),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn certificate_assertions_rs256_x5t_and_ps256_x5t_s256() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(dir.path(), "app");
    let other = make_cert(dir.path(), "other");
    let emu = start_with(&tenant_with_cert(&cert), &[]);
    let v2 = emu.token_url();
    let v1 = format!("{}/{TENANT_ID}/oauth2/token", emu.base);

    for (alg, sha256, aud, float) in [
        (Algorithm::RS256, false, v2.as_str(), true),
        (Algorithm::PS256, true, v2.as_str(), false),
        (Algorithm::PS256, true, v1.as_str(), false),
    ] {
        let a = assertion(&cert, alg, aud, float, sha256);
        let r = emu
            .token_request(&[
                ("client_id", CLIENT_ID),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &a),
                ("scope", SCOPE),
                ("grant_type", "client_credentials"),
            ])
            .await;
        assert_eq!(r.status, 200, "{alg:?}: {}", r.body);
        let token = r.body["access_token"].as_str().unwrap().to_string();
        let g = emu
            .http
            .get(format!("{}/v1.0/groups", emu.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(g.status(), 200);
    }

    // Signed by a key whose certificate is not registered.
    let a = assertion(&other, Algorithm::RS256, &v2, true, false);
    let r = emu
        .token_request(&[
            ("client_id", CLIENT_ID),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &a),
            ("scope", SCOPE),
            ("grant_type", "client_credentials"),
        ])
        .await;
    assert_aad_error(&r, 401, "invalid_client", 700027).await;

    // Registered thumbprint, wrong signature.
    let mut forged = assertion(&cert, Algorithm::RS256, &v2, true, false);
    let sig = assertion(&other, Algorithm::RS256, &v2, true, false);
    forged.truncate(forged.rfind('.').unwrap());
    forged.push_str(&sig[sig.rfind('.').unwrap()..]);
    let r = emu
        .token_request(&[
            ("client_id", CLIENT_ID),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &forged),
            ("scope", SCOPE),
            ("grant_type", "client_credentials"),
        ])
        .await;
    assert_aad_error(&r, 401, "invalid_client", 700027).await;

    // Audience of another endpoint.
    let a = assertion(
        &cert,
        Algorithm::RS256,
        "https://login.example.com/x/oauth2/v2.0/token",
        true,
        false,
    );
    let r = emu
        .token_request(&[
            ("client_id", CLIENT_ID),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &a),
            ("scope", SCOPE),
            ("grant_type", "client_credentials"),
        ])
        .await;
    assert_eq!(r.status, 401, "{}", r.body);

    // Not a JWT.
    let r = emu
        .token_request(&[
            ("client_id", CLIENT_ID),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", "garbage"),
            ("scope", SCOPE),
            ("grant_type", "client_credentials"),
        ])
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
}

#[tokio::test]
async fn graph_rejects_missing_bad_and_expired_tokens() {
    let emu = start(&[]);
    let r = emu
        .http
        .get(format!("{}/v1.0/users", emu.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    assert_eq!(body["error"]["message"], "Access token is empty.");

    let r = emu
        .http
        .get(format!("{}/v1.0/users", emu.base))
        .bearer_auth("a.b.c")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Access token validation failure"));

    let token = emu.token().await;
    emu.control("clock/advance", Some(json!({"seconds": 3600})))
        .await;
    let r = emu
        .http
        .get(format!("{}/v1.0/users", emu.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
}

#[tokio::test]
async fn openid_configuration_names_the_token_endpoint() {
    let emu = start(&[]);
    let r = emu
        .http
        .get(format!(
            "{}/{TENANT_ID}/v2.0/.well-known/openid-configuration",
            emu.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_endpoint"], emu.token_url());
    assert_eq!(body["issuer"], format!("{}/{TENANT_ID}/v2.0", emu.base));
}
