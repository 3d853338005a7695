//! App certificates and client-assertion (jwt-bearer) verification.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha1::Digest;

use super::aad::AadError;

/// A certificate registered on an app: its thumbprints and RSA public key.
#[derive(Debug, Clone)]
pub struct AppCertificate {
    /// base64url SHA-1 of the DER certificate, no padding (`x5t`).
    pub x5t: String,
    /// base64url SHA-256 of the DER certificate, no padding (`x5t#S256`).
    pub x5t_s256: String,
    /// PKCS#1 RSAPublicKey DER.
    pub public_key: Vec<u8>,
}

impl AppCertificate {
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map_err(|e| format!("certificatePem is not PEM: {e}"))?;
        let der = pem.contents;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("certificatePem is not an X.509 certificate: {e}"))?;
        let public_key = cert.public_key().subject_public_key.data.to_vec();
        Ok(AppCertificate {
            x5t: URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(&der)),
            x5t_s256: URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&der)),
            public_key,
        })
    }
}

/// Thumbprints arrive as base64 or base64url, with or without `=` padding: compare them in
/// one spelling.
fn normalise_thumbprint(t: &str) -> String {
    t.trim_end_matches('=').replace('+', "-").replace('/', "_")
}

/// What the assertion must say besides a good signature.
pub struct Expectation<'a> {
    pub client_id: &'a str,
    /// Token endpoint URLs this emulator answers on (lower case, no trailing slash).
    pub audiences: &'a [String],
    /// Wall-clock seconds since the epoch (clients stamp assertions from their own clock).
    pub now_unix: f64,
}

/// Check a client assertion against the app's certificates.
pub fn verify_assertion(
    assertion: &str,
    certs: &[AppCertificate],
    expect: &Expectation<'_>,
) -> Result<(), AadError> {
    let header =
        jsonwebtoken::decode_header(assertion).map_err(|_| AadError::malformed_assertion())?;
    let (thumb, matches): (Option<String>, Vec<&AppCertificate>) =
        if let Some(t) = header.x5t_s256.as_deref() {
            let t = normalise_thumbprint(t);
            let m = certs.iter().filter(|c| c.x5t_s256 == t).collect();
            (Some(t), m)
        } else if let Some(t) = header.x5t.as_deref() {
            let t = normalise_thumbprint(t);
            let m = certs.iter().filter(|c| c.x5t == t).collect();
            (Some(t), m)
        } else {
            (None, certs.iter().collect())
        };
    if matches.is_empty() {
        return Err(AadError::bad_assertion(format!(
            "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{}'.]",
            thumb.unwrap_or_default(),
            expect.client_id
        )));
    }
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::PS256) {
        return Err(AadError::malformed_assertion());
    }
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let mut claims = None;
    for cert in matches {
        let key = DecodingKey::from_rsa_der(&cert.public_key);
        if let Ok(data) = jsonwebtoken::decode::<Value>(assertion, &key, &validation) {
            claims = Some(data.claims);
            break;
        }
    }
    let claims = claims
        .ok_or_else(|| AadError::bad_assertion("Client assertion failed signature validation."))?;
    check_claims(&claims, expect)
}

fn check_claims(claims: &Value, expect: &Expectation<'_>) -> Result<(), AadError> {
    let auds: Vec<String> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    };
    let aud_ok = auds.iter().any(|a| {
        let a = a.trim_end_matches('/').to_ascii_lowercase();
        expect.audiences.contains(&a)
    });
    if !aud_ok {
        return Err(AadError::new(
            401,
            "invalid_client",
            700212,
            format!(
                "No matching federated identity record found for presented assertion audience '{}'.",
                auds.first().cloned().unwrap_or_default()
            ),
        ));
    }
    for claim in ["iss", "sub"] {
        let v = claims
            .get(claim)
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !v.eq_ignore_ascii_case(expect.client_id) {
            return Err(AadError::new(
                401,
                "invalid_client",
                700021,
                "Client assertion application identifier doesn't match 'client_id' parameter.",
            ));
        }
    }
    // exp is required; MSAL Python writes it as a float.
    let exp = claims.get("exp").and_then(Value::as_f64);
    const SKEW: f64 = 300.0;
    match exp {
        Some(exp) if exp + SKEW >= expect.now_unix => {}
        _ => {
            return Err(AadError::new(
                401,
                "invalid_client",
                700024,
                "Client assertion is not within its valid time range.",
            ))
        }
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_f64) {
        if nbf - SKEW > expect.now_unix {
            return Err(AadError::new(
                401,
                "invalid_client",
                700024,
                "Client assertion is not within its valid time range.",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_compare_in_one_spelling() {
        assert_eq!(normalise_thumbprint("ab+/cd=="), "ab-_cd");
        assert_eq!(normalise_thumbprint("ab-_cd"), "ab-_cd");
    }
}
