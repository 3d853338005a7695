//! Access tokens the emulator issues (HS256 JWTs) and their validation on Graph calls.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};

use crate::errors::GraphError;

/// The audience of Graph tokens.
pub const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";
/// Seconds a token lives, as Entra reports it.
pub const LIFETIME: i64 = 3599;

/// Signs and checks access tokens with a per-process key.
pub struct TokenSigner {
    key: Vec<u8>,
    /// The application permissions (app roles) granted to the app: the tokens' `roles`.
    /// Changed by an admin's grant (`PUT /_emulator/roles`): tokens issued after carry them.
    roles: std::sync::Mutex<Vec<String>>,
}

/// What an app-only token says about its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub app_id: String,
    /// The application permissions the token carries (`roles` claim).
    pub roles: Vec<String>,
}

/// The application permissions granted by default: what the host needs and more.
pub const DEFAULT_ROLES: [&str; 4] = [
    "Group.ReadWrite.All",
    "User.ReadWrite.All",
    "GroupMember.ReadWrite.All",
    "Directory.ReadWrite.All",
];

impl TokenSigner {
    pub fn new(key: Vec<u8>) -> Self {
        TokenSigner {
            key,
            roles: std::sync::Mutex::new(DEFAULT_ROLES.iter().map(|r| r.to_string()).collect()),
        }
    }

    /// Grants exactly `roles` to the app (as an admin consenting to those permissions).
    pub fn with_roles(self, roles: Vec<String>) -> Self {
        self.set_roles(roles);
        self
    }

    /// Grants exactly `roles` from now on. As in Entra, tokens already issued keep the roles
    /// they carry: a client sees the change with its next token.
    pub fn set_roles(&self, roles: Vec<String>) {
        *self.roles.lock().unwrap_or_else(|e| e.into_inner()) = roles;
    }

    /// The application permissions granted now.
    pub fn roles(&self) -> Vec<String> {
        self.roles.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn issue(&self, tenant_id: &str, client_id: &str, now_unix: i64) -> String {
        let claims = json!({
            "aud": GRAPH_AUDIENCE,
            "iss": format!("https://sts.windows.net/{tenant_id}/"),
            "iat": now_unix,
            "nbf": now_unix,
            "exp": now_unix + LIFETIME,
            "appid": client_id,
            "azp": client_id,
            "idtyp": "app",
            "oid": client_id,
            "sub": client_id,
            "tid": tenant_id,
            "roles": self.roles(),
            "ver": "1.0",
            "uti": uuid::Uuid::new_v4().simple().to_string(),
        });
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("JWT".into());
        // Encoding with a valid HMAC key cannot fail.
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&self.key))
            .unwrap_or_default()
    }

    /// Check an `Authorization` header value; returns the app id on success.
    pub fn validate(
        &self,
        authorization: Option<&str>,
        tenant_id: &str,
        now_unix: i64,
    ) -> Result<Caller, GraphError> {
        let token = authorization
            .map(str::trim)
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .unwrap_or("");
        if token.is_empty() {
            return Err(GraphError::unauthorized("Access token is empty."));
        }
        if token.matches('.').count() != 2 {
            return Err(GraphError::unauthorized(
                "CompactToken parsing failed with error code: 80049217",
            ));
        }
        // The audience is checked before the signature, so a token for another resource
        // gets the message Graph gives for it.
        let unverified = jsonwebtoken::dangerous::insecure_decode_claims::<Value>(token)
            .map_err(|_| GraphError::unauthorized("Access token validation failure."))?;
        if unverified.get("aud").and_then(Value::as_str) != Some(GRAPH_AUDIENCE) {
            return Err(GraphError::unauthorized(
                "Access token validation failure. Invalid audience.",
            ));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims =
            jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(&self.key), &validation)
                .map_err(|_| GraphError::unauthorized("Access token validation failure."))?
                .claims;
        if claims.get("aud").and_then(Value::as_str) != Some(GRAPH_AUDIENCE) {
            return Err(GraphError::unauthorized(
                "Access token validation failure. Invalid audience.",
            ));
        }
        if claims.get("tid").and_then(Value::as_str) != Some(tenant_id) {
            return Err(GraphError::unauthorized("Access token validation failure."));
        }
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        if exp <= now_unix {
            return Err(GraphError::unauthorized(
                "Lifetime validation failed, the token is expired.",
            ));
        }
        Ok(Caller {
            app_id: claims
                .get("appid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            roles: claims
                .get("roles")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_and_validate() {
        let s = TokenSigner::new(b"k".to_vec());
        let t = s.issue("tid", "app", 1000);
        let bearer = format!("Bearer {t}");
        let caller = s.validate(Some(&bearer), "tid", 1000).unwrap();
        assert_eq!(caller.app_id, "app");
        assert!(caller.roles.iter().any(|r| r == "Group.ReadWrite.All"));
        let narrow = TokenSigner::new(b"k".to_vec()).with_roles(vec!["Group.Read.All".into()]);
        let t = narrow.issue("tid", "app", 1000);
        let caller = narrow
            .validate(Some(&format!("Bearer {t}")), "tid", 1000)
            .unwrap();
        assert_eq!(caller.roles, ["Group.Read.All"]);
        let e = s
            .validate(Some(&bearer), "tid", 1000 + LIFETIME)
            .unwrap_err();
        assert!(e.message.contains("expired"));
        let e = s.validate(None, "tid", 0).unwrap_err();
        assert_eq!(e.message, "Access token is empty.");
        let e = s.validate(Some("Bearer abc"), "tid", 0).unwrap_err();
        assert_eq!(e.status, 401);
        let other = TokenSigner::new(b"other".to_vec());
        let e = other.validate(Some(&bearer), "tid", 1000).unwrap_err();
        assert_eq!(e.message, "Access token validation failure.");
        // A token for another audience.
        let foreign = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({"aud": "https://management.azure.com", "exp": 5000}),
            &EncodingKey::from_secret(b"x"),
        )
        .unwrap();
        let e = s
            .validate(Some(&format!("Bearer {foreign}")), "tid", 1000)
            .unwrap_err();
        assert_eq!(
            e.message,
            "Access token validation failure. Invalid audience."
        );
    }
}
