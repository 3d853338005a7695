//! App-only tokens for Graph: the OAuth 2.0 client-credentials flow with a client secret or a
//! certificate (a `client_assertion` JWT signed with the certificate's private key).
//!
//! Tokens are cached and renewed ahead of expiry; concurrent callers share one refresh.
//! Secrets, assertions and tokens never appear in `Debug` output, errors or logs.

use super::error::{token_error_from_body, GraphError};
use super::retry::{self, Failure, RetryPolicy};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
pub use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

/// `client_assertion_type` for a JWT bearer assertion (RFC 7523).
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Lifetime of a client assertion.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Renew a cached token when less than this is left (or half its lifetime, if shorter).
const RENEW_MARGIN: Duration = Duration::from_secs(5 * 60);

/// How the application proves its identity to the token endpoint.
#[derive(Clone)]
pub enum Credential {
    /// A client secret, sent in the form.
    Secret(SecretString),
    /// A certificate registered on the app: PEM private key (PKCS#1 or PKCS#8, RSA, not
    /// encrypted) and PEM certificate (the first `CERTIFICATE` block is the one registered).
    Certificate {
        private_key_pem: SecretString,
        certificate_pem: String,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Secret(_) => f.write_str("Secret(<redacted>)"),
            Credential::Certificate { .. } => f
                .debug_struct("Certificate")
                .field("private_key_pem", &"<redacted>")
                .field("certificate_pem", &"<certificate>")
                .finish(),
        }
    }
}

/// Signature algorithm and thumbprint header of the client assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AssertionAlg {
    /// `alg: PS256` with `x5t#S256` (base64url SHA-256 of the certificate), as the current
    /// Microsoft identity platform documentation shows.
    #[default]
    Ps256,
    /// `alg: RS256` with `x5t` (base64url SHA-1), the older form MSAL still sends for PEM keys.
    Rs256,
}

/// Claims of the client assertion (Microsoft identity platform "certificate credentials").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionClaims {
    /// The token endpoint URL.
    pub aud: String,
    /// The client (application) id.
    pub iss: String,
    /// The client id again.
    pub sub: String,
    /// A fresh UUID v4 per assertion.
    pub jti: String,
    pub nbf: u64,
    pub iat: u64,
    pub exp: u64,
}

/// The signing material prepared from a [`Credential`] at start-up, so a bad key fails early.
enum Material {
    Secret(SecretString),
    Certificate {
        key: EncodingKey,
        /// base64url SHA-256 of the certificate DER.
        x5t_s256: String,
        /// base64url SHA-1 of the certificate DER.
        x5t: String,
    },
}

struct CachedToken {
    secret: String,
    /// When to fetch a new one (ahead of the real expiry).
    renew_at: Instant,
}

/// Fetches and caches app-only access tokens.
pub struct TokenProvider {
    http: reqwest::Client,
    token_url: String,
    scope: String,
    client_id: String,
    material: Material,
    alg: AssertionAlg,
    retry: RetryPolicy,
    cache: Mutex<Option<CachedToken>>,
}

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenProvider")
            .field("token_url", &self.token_url)
            .field("scope", &self.scope)
            .field("client_id", &self.client_id)
            .field("credential", &self.credential_kind())
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The token endpoint's success answer. `expires_in` is a number on v2.0 and was a string on v1.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<Value>,
}

impl TokenProvider {
    /// Prepares a provider; a certificate credential is parsed and test-signed here.
    pub fn new(
        http: reqwest::Client,
        token_url: impl Into<String>,
        scope: impl Into<String>,
        client_id: impl Into<String>,
        credential: &Credential,
        alg: AssertionAlg,
        retry: RetryPolicy,
    ) -> Result<Self, GraphError> {
        let material = match credential {
            Credential::Secret(s) if s.expose_secret().is_empty() => {
                return Err(GraphError::Credential("the client secret is empty".into()))
            }
            Credential::Secret(s) => Material::Secret(s.clone()),
            Credential::Certificate {
                private_key_pem,
                certificate_pem,
            } => {
                let der = certificate_der(certificate_pem)?;
                Material::Certificate {
                    key: rsa_encoding_key(private_key_pem.expose_secret())?,
                    x5t_s256: URL_SAFE_NO_PAD.encode(Sha256::digest(&der)),
                    x5t: URL_SAFE_NO_PAD.encode(Sha1::digest(&der)),
                }
            }
        };
        let provider = TokenProvider {
            http,
            token_url: token_url.into(),
            scope: scope.into(),
            client_id: client_id.into(),
            material,
            alg,
            retry,
            cache: Mutex::new(None),
        };
        if matches!(provider.material, Material::Certificate { .. }) {
            // A key that parses may still fail to sign (wrong type, too short): find out now.
            provider.client_assertion()?;
        }
        Ok(provider)
    }

    pub fn token_url(&self) -> &str {
        &self.token_url
    }

    /// `secret` or `certificate`, for logs.
    pub fn credential_kind(&self) -> &'static str {
        match self.material {
            Material::Secret(_) => "secret",
            Material::Certificate { .. } => "certificate",
        }
    }

    /// A valid access token: the cached one, or a new one when it is close to expiry.
    /// Concurrent callers wait for one refresh instead of each requesting a token.
    pub async fn token(&self) -> Result<String, GraphError> {
        let mut cache = self.cache.lock().await;
        if let Some(t) = cache.as_ref().filter(|t| Instant::now() < t.renew_at) {
            return Ok(t.secret.clone());
        }
        let fresh = self.fetch().await?;
        let secret = fresh.secret.clone();
        *cache = Some(fresh);
        Ok(secret)
    }

    /// Drops the cached token if it is still `rejected` (Graph answered 401 with it), so the
    /// next [`token`](Self::token) fetches a new one. A token already replaced is kept.
    pub async fn invalidate(&self, rejected: &str) {
        let mut cache = self.cache.lock().await;
        if cache.as_ref().is_some_and(|t| t.secret == rejected) {
            *cache = None;
        }
    }

    /// A freshly signed client assertion (certificate credentials only).
    pub fn client_assertion(&self) -> Result<String, GraphError> {
        let Material::Certificate { key, x5t_s256, x5t } = &self.material else {
            return Err(GraphError::Credential(
                "a client assertion needs a certificate credential".into(),
            ));
        };
        let mut header = Header::new(match self.alg {
            AssertionAlg::Ps256 => Algorithm::PS256,
            AssertionAlg::Rs256 => Algorithm::RS256,
        });
        match self.alg {
            AssertionAlg::Ps256 => header.x5t_s256 = Some(x5t_s256.clone()),
            AssertionAlg::Rs256 => header.x5t = Some(x5t.clone()),
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = AssertionClaims {
            aud: self.token_url.clone(),
            iss: self.client_id.clone(),
            sub: self.client_id.clone(),
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: now,
            iat: now,
            exp: now + ASSERTION_LIFETIME.as_secs(),
        };
        jsonwebtoken::encode(&header, &claims, key)
            // The jsonwebtoken error names the failure kind only, never the key.
            .map_err(|e| GraphError::Credential(format!("cannot sign the client assertion: {e}")))
    }

    /// One token request, retried on 429/5xx like Graph calls.
    async fn fetch(&self) -> Result<CachedToken, GraphError> {
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "client_credentials".into()),
            ("client_id", self.client_id.clone()),
            ("scope", self.scope.clone()),
        ];
        match &self.material {
            Material::Secret(s) => form.push(("client_secret", s.expose_secret().to_string())),
            Material::Certificate { .. } => {
                form.push(("client_assertion_type", ASSERTION_TYPE.into()));
                form.push(("client_assertion", self.client_assertion()?));
            }
        }
        let mut waited = Duration::ZERO;
        let mut retry = 0u32;
        loop {
            tracing::debug!(
                token_url = %self.token_url,
                client_id = %self.client_id,
                credential = self.credential_kind(),
                attempt = retry + 1,
                "requesting an access token"
            );
            let started = Instant::now();
            let failure = match self.http.post(&self.token_url).form(&form).send().await {
                Ok(resp) if resp.status().is_success() => {
                    let body = resp.bytes().await?;
                    return parse_token_response(&body, started);
                }
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
                    let body = resp.bytes().await.unwrap_or_default();
                    let err = token_error_from_body(
                        status.as_u16(),
                        status.canonical_reason().unwrap_or(""),
                        &body,
                    );
                    let failure = Failure::Status {
                        status: status.as_u16(),
                        retry_after,
                    };
                    (GraphError::Token(Box::new(err)), failure)
                }
                Err(e) => (GraphError::Transport(e), Failure::Transport),
            };
            retry += 1;
            let (err, failure) = failure;
            // A token request changes nothing server-side, so it is safe to repeat.
            match retry::next_wait(&self.retry, failure, true, retry, waited, rand::random()) {
                Some(wait) => {
                    tracing::debug!(error = %err, wait_ms = wait.as_millis() as u64, "token request failed, retrying");
                    tokio::time::sleep(wait).await;
                    waited += wait;
                }
                None => {
                    tracing::warn!(error = %err, "token request failed");
                    return Err(err);
                }
            }
        }
    }
}

fn parse_token_response(body: &[u8], started: Instant) -> Result<CachedToken, GraphError> {
    let resp: TokenResponse = serde_json::from_slice(body).map_err(|e| {
        // serde_json's message names the position, not the content.
        GraphError::InvalidResponse(format!(
            "token endpoint answer is not a token response: {e}"
        ))
    })?;
    if resp.access_token.is_empty() {
        return Err(GraphError::InvalidResponse(
            "token endpoint returned an empty access_token".into(),
        ));
    }
    let lifetime = match &resp.expires_in {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .map(Duration::from_secs)
    // Entra tokens live 60-90 minutes; without a lifetime assume the minimum.
    .unwrap_or(Duration::from_secs(3600));
    let margin = RENEW_MARGIN.min(lifetime / 2);
    Ok(CachedToken {
        secret: resp.access_token,
        renew_at: started + (lifetime - margin),
    })
}

/// DER of the first certificate in a PEM text.
fn certificate_der(pem: &str) -> Result<Vec<u8>, GraphError> {
    match CertificateDer::pem_slice_iter(pem.as_bytes()).next() {
        Some(Ok(der)) => Ok(der.to_vec()),
        Some(Err(e)) => Err(GraphError::Credential(format!(
            "unreadable certificate PEM: {e}"
        ))),
        None => Err(GraphError::Credential(
            "no CERTIFICATE block in the certificate PEM".into(),
        )),
    }
}

/// An RSA signing key from PEM (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`). The PEM may
/// also hold the certificate (a combined file): only the key block is used.
fn rsa_encoding_key(pem: &str) -> Result<EncodingKey, GraphError> {
    let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
        GraphError::Credential(format!(
            "no usable private key in the key PEM (expected an unencrypted RSA PRIVATE KEY or PRIVATE KEY block): {e}"
        ))
    })?;
    match key {
        PrivateKeyDer::Pkcs1(k) => Ok(EncodingKey::from_rsa_der(k.secret_pkcs1_der())),
        // jsonwebtoken reads PKCS#8 only through PEM: hand it a clean single-block PEM.
        PrivateKeyDer::Pkcs8(k) => {
            let b64 = STANDARD.encode(k.secret_pkcs8_der());
            let mut text = String::from("-----BEGIN PRIVATE KEY-----\n");
            for chunk in b64.as_bytes().chunks(64) {
                text.push_str(&String::from_utf8_lossy(chunk));
                text.push('\n');
            }
            text.push_str("-----END PRIVATE KEY-----\n");
            EncodingKey::from_rsa_pem(text.as_bytes()).map_err(|e| {
                GraphError::Credential(format!("the private key is not an RSA key: {e}"))
            })
        }
        _ => Err(GraphError::Credential(
            "the private key is not an RSA key (EC keys are not supported)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};
    use std::path::Path;
    use std::process::Command;

    const TOKEN_URL: &str = "https://login.example.test/contoso/oauth2/v2.0/token";
    const CLIENT_ID: &str = "aaaabbbb-0000-cccc-1111-dddd2222eeee";

    /// A throwaway RSA key and self-signed certificate made by the `openssl` CLI.
    struct TestCert {
        _dir: tempfile::TempDir,
        key_pkcs8: String,
        key_pkcs1: String,
        cert: String,
        cert_der: Vec<u8>,
        public_pem: String,
    }

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

    fn test_cert() -> TestCert {
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
                "key.pem",
                "-out",
                "cert.pem",
                "-days",
                "2",
                "-subj",
                "/CN=writeback-test",
            ],
        );
        openssl(
            p,
            &["rsa", "-in", "key.pem", "-traditional", "-out", "key1.pem"],
        );
        openssl(
            p,
            &[
                "x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der",
            ],
        );
        openssl(
            p,
            &[
                "x509", "-in", "cert.pem", "-pubkey", "-noout", "-out", "pub.pem",
            ],
        );
        let read = |f: &str| std::fs::read_to_string(p.join(f)).expect("read test file");
        TestCert {
            key_pkcs8: read("key.pem"),
            key_pkcs1: read("key1.pem"),
            cert: read("cert.pem"),
            cert_der: std::fs::read(p.join("cert.der")).expect("read cert.der"),
            public_pem: read("pub.pem"),
            _dir: dir,
        }
    }

    fn provider(credential: &Credential, alg: AssertionAlg) -> Result<TokenProvider, GraphError> {
        TokenProvider::new(
            reqwest::Client::new(),
            TOKEN_URL,
            "https://graph.microsoft.com/.default",
            CLIENT_ID,
            credential,
            alg,
            RetryPolicy::default(),
        )
    }

    fn decode(jwt: &str, public_pem: &str, alg: Algorithm) -> (Header, AssertionClaims) {
        let mut v = Validation::new(alg);
        v.set_audience(&[TOKEN_URL]);
        v.set_issuer(&[CLIENT_ID]);
        v.sub = Some(CLIENT_ID.into());
        v.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        v.validate_nbf = true;
        let key = DecodingKey::from_rsa_pem(public_pem.as_bytes()).expect("public key");
        let data =
            jsonwebtoken::decode::<AssertionClaims>(jwt, &key, &v).expect("assertion verifies");
        (data.header, data.claims)
    }

    #[test]
    fn ps256_assertion_verifies_with_sha256_thumbprint() {
        let c = test_cert();
        let cred = Credential::Certificate {
            private_key_pem: c.key_pkcs8.clone().into(),
            certificate_pem: c.cert.clone(),
        };
        let p = provider(&cred, AssertionAlg::Ps256).expect("provider");
        let jwt = p.client_assertion().expect("assertion");
        let (header, claims) = decode(&jwt, &c.public_pem, Algorithm::PS256);
        assert_eq!(header.alg, Algorithm::PS256);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        assert_eq!(
            header.x5t_s256,
            Some(URL_SAFE_NO_PAD.encode(Sha256::digest(&c.cert_der)))
        );
        assert_eq!(header.x5t, None);
        assert_eq!(claims.aud, TOKEN_URL);
        assert_eq!(claims.iss, CLIENT_ID);
        assert_eq!(claims.sub, CLIENT_ID);
        assert_eq!(claims.exp - claims.nbf, 600);
        assert_eq!(claims.iat, claims.nbf);
        let jti = uuid::Uuid::parse_str(&claims.jti).expect("jti is a uuid");
        assert_eq!(jti.get_version_num(), 4);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        assert!(claims.nbf <= now && now - claims.nbf < 60);
        // Each assertion is fresh.
        let (_, again) = decode(
            &p.client_assertion().expect("assertion"),
            &c.public_pem,
            Algorithm::PS256,
        );
        assert_ne!(again.jti, claims.jti);
        // The raw header really spells the thumbprint "x5t#S256".
        let raw = URL_SAFE_NO_PAD
            .decode(jwt.split('.').next().expect("header part"))
            .expect("b64");
        let raw: Value = serde_json::from_slice(&raw).expect("header json");
        assert!(raw.get("x5t#S256").is_some_and(Value::is_string), "{raw}");
    }

    #[test]
    fn rs256_assertion_with_sha1_thumbprint_and_pkcs1_key() {
        let c = test_cert();
        // A combined PEM (certificate first, then the key) is accepted as the key file.
        let combined = format!("{}{}", c.cert, c.key_pkcs1);
        let cred = Credential::Certificate {
            private_key_pem: combined.into(),
            certificate_pem: c.cert.clone(),
        };
        let p = provider(&cred, AssertionAlg::Rs256).expect("provider");
        let (header, claims) = decode(
            &p.client_assertion().expect("assertion"),
            &c.public_pem,
            Algorithm::RS256,
        );
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(
            header.x5t,
            Some(URL_SAFE_NO_PAD.encode(Sha1::digest(&c.cert_der)))
        );
        assert_eq!(header.x5t_s256, None);
        assert_eq!(claims.aud, TOKEN_URL);
    }

    #[test]
    fn bad_certificate_material_is_rejected_without_echoing_it() {
        let c = test_cert();
        let secret_looking =
            "-----BEGIN PRIVATE KEY-----\nTOPSECRETgarbage\n-----END PRIVATE KEY-----\n";
        let cred = Credential::Certificate {
            private_key_pem: secret_looking.into(),
            certificate_pem: c.cert.clone(),
        };
        let err = provider(&cred, AssertionAlg::Ps256).expect_err("garbage key");
        assert!(matches!(err, GraphError::Credential(_)), "{err:?}");
        assert!(!err.to_string().contains("TOPSECRET"), "{err}");
        let cred = Credential::Certificate {
            private_key_pem: c.key_pkcs8.clone().into(),
            certificate_pem: "not a cert".into(),
        };
        assert!(matches!(
            provider(&cred, AssertionAlg::Ps256),
            Err(GraphError::Credential(_))
        ));
        assert!(matches!(
            provider(
                &Credential::Secret(String::new().into()),
                AssertionAlg::Ps256
            ),
            Err(GraphError::Credential(_))
        ));
    }

    #[test]
    fn secret_provider_has_no_assertion() {
        let p = provider(
            &Credential::Secret("s3cr3t-value".into()),
            AssertionAlg::Ps256,
        )
        .expect("provider");
        assert!(matches!(
            p.client_assertion(),
            Err(GraphError::Credential(_))
        ));
        assert_eq!(p.credential_kind(), "secret");
        assert!(!format!("{p:?}").contains("s3cr3t"));
    }

    #[test]
    fn debug_redacts_credentials() {
        let s = format!("{:?}", Credential::Secret("s3cr3t-value".into()));
        assert_eq!(s, "Secret(<redacted>)");
        let c = Credential::Certificate {
            private_key_pem: "KEYDATA".into(),
            certificate_pem: "CERTDATA".into(),
        };
        let s = format!("{c:?}");
        assert!(!s.contains("KEYDATA") && !s.contains("CERTDATA"), "{s}");
    }

    #[test]
    fn token_response_parsing_and_renewal_margin() {
        let started = Instant::now();
        let t = parse_token_response(
            include_bytes!("testdata/auth/token_response_success.json"),
            started,
        )
        .expect("doc sample parses");
        assert!(t.secret.starts_with("eyJ0eXAiOiJKV1Qi"));
        // 3599 s lifetime, renewed 5 minutes before expiry.
        assert_eq!(t.renew_at - started, Duration::from_secs(3599 - 300));
        // A short-lived token is renewed at half its lifetime.
        let t = parse_token_response(br#"{"access_token":"x","expires_in":"120"}"#, started)
            .expect("v1 string");
        assert_eq!(t.renew_at - started, Duration::from_secs(60));
        assert!(matches!(
            parse_token_response(br#"{"token_type":"Bearer"}"#, started),
            Err(GraphError::InvalidResponse(_))
        ));
        assert!(matches!(
            parse_token_response(br#"{"access_token":""}"#, started),
            Err(GraphError::InvalidResponse(_))
        ));
    }
}
