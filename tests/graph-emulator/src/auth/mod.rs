//! The token endpoint (client credentials with a secret or a certificate assertion) and the
//! OpenID discovery document MSAL reads first.

pub mod aad;
pub mod access;
pub mod cert;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use crate::clock::unix_ms;
use crate::state::AppState;
use crate::urlenc;
use aad::AadError;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

/// Token endpoint flavour, by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/{tenant}/oauth2/v2.0/token`
    V2,
    /// `/{tenant}/oauth2/token`
    V1,
}

/// Does `segment` name this tenant (its id or its domain)?
pub fn tenant_matches(state: &AppState, segment: &str) -> bool {
    let store = state.store();
    segment.eq_ignore_ascii_case(&store.tenant_id) || segment.eq_ignore_ascii_case(&store.domain)
}

/// POST /{tenant}/oauth2/v2.0/token. Returns status and JSON body.
pub fn token(
    state: &AppState,
    tenant_segment: &str,
    endpoint: Endpoint,
    authorization: Option<&str>,
    body: &[u8],
) -> (u16, Value) {
    let now = state.clock.now();
    match issue(state, tenant_segment, endpoint, authorization, body) {
        Ok(v) => (200, v),
        Err(e) => (e.status, e.body(now)),
    }
}

fn issue(
    state: &AppState,
    tenant_segment: &str,
    endpoint: Endpoint,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<Value, AadError> {
    if !tenant_matches(state, tenant_segment) {
        return Err(AadError::tenant_not_found(tenant_segment));
    }
    let form = urlenc::parse_pairs(&String::from_utf8_lossy(body));
    let param = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let (basic_id, basic_secret) = basic_credentials(authorization);

    match param("grant_type") {
        None => return Err(AadError::missing_parameter("grant_type")),
        Some("client_credentials") => {}
        Some(other) => {
            return Err(AadError::new(
                400,
                "unsupported_grant_type",
                70003,
                format!("The app requested an unsupported grant type '{other}'."),
            ))
        }
    }
    let client_id = param("client_id")
        .map(str::to_string)
        .or(basic_id)
        .ok_or_else(|| AadError::missing_parameter("client_id"))?
        .to_ascii_lowercase();

    check_scope(state, endpoint, param("scope"), param("resource"))?;

    let (tenant_id, app) = {
        let store = state.store();
        let app = store
            .apps
            .iter()
            .find(|a| a.client_id == client_id)
            .cloned()
            .ok_or_else(|| AadError::app_not_found(&client_id, &store.tenant_id))?;
        (store.tenant_id.clone(), app)
    };

    let secret = param("client_secret").map(str::to_string).or(basic_secret);
    let assertion = param("client_assertion");
    if let Some(secret) = secret {
        if app.client_secret.as_deref() != Some(secret.as_str()) {
            return Err(AadError::invalid_secret(&client_id));
        }
    } else if let Some(assertion) = assertion {
        if param("client_assertion_type") != Some(JWT_BEARER) {
            return Err(AadError::new(
                400,
                "invalid_request",
                50027,
                "Invalid client_assertion_type: expected urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
            ));
        }
        let audiences = token_audiences(state, tenant_segment);
        let wall = time::OffsetDateTime::now_utc();
        let expect = cert::Expectation {
            client_id: &client_id,
            audiences: &audiences,
            now_unix: wall.unix_timestamp() as f64,
        };
        cert::verify_assertion(assertion, &app.certificates, &expect)?;
    } else {
        return Err(AadError::no_credential());
    }

    let now = unix_ms(state.clock.now()) / 1000;
    let access_token = state.signer.issue(&tenant_id, &client_id, now);
    let mut out = json!({
        "token_type": "Bearer",
        "expires_in": access::LIFETIME,
        "ext_expires_in": access::LIFETIME,
        "access_token": access_token,
    });
    if endpoint == Endpoint::V1 {
        out["expires_on"] = json!((now + access::LIFETIME).to_string());
        out["resource"] = json!(access::GRAPH_AUDIENCE);
    }
    Ok(out)
}

fn basic_credentials(authorization: Option<&str>) -> (Option<String>, Option<String>) {
    let Some(encoded) = authorization.map(str::trim).and_then(|h| {
        h.strip_prefix("Basic ")
            .or_else(|| h.strip_prefix("basic "))
    }) else {
        return (None, None);
    };
    let Ok(decoded) = STANDARD.decode(encoded.trim()) else {
        return (None, None);
    };
    let decoded = String::from_utf8_lossy(&decoded).into_owned();
    match decoded.split_once(':') {
        // RFC 6749 2.3.1: both parts are form-urlencoded before base64.
        Some((id, secret)) => (
            Some(urlenc::decode(id, true)),
            Some(urlenc::decode(secret, true)),
        ),
        None => (None, None),
    }
}

/// v2 wants `<resource>/.default`; v1 uses `resource=`. Only Graph is a known resource.
fn check_scope(
    state: &AppState,
    endpoint: Endpoint,
    scope: Option<&str>,
    resource: Option<&str>,
) -> Result<(), AadError> {
    let known_resource = |r: &str| {
        let r = r.trim_end_matches('/').to_ascii_lowercase();
        r == access::GRAPH_AUDIENCE || r == GRAPH_APP_ID || r == state.base_url.to_ascii_lowercase()
    };
    let tenant = state.store().domain.clone();
    let unknown_resource = |r: &str| {
        AadError::new(
            400,
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {r} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
        )
    };
    if endpoint == Endpoint::V1 && scope.is_none() {
        let r = resource.ok_or_else(|| AadError::missing_parameter("resource"))?;
        return if known_resource(r) {
            Ok(())
        } else {
            Err(unknown_resource(r))
        };
    }
    let scope = scope.ok_or_else(|| AadError::missing_parameter("scope"))?;
    let mut resources = 0;
    for s in scope.split_whitespace() {
        if matches!(s, "openid" | "profile" | "offline_access") {
            continue;
        }
        let Some(r) = s.strip_suffix("/.default") else {
            return Err(AadError::new(
                400,
                "invalid_scope",
                1002012,
                format!("The provided value for scope {s} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
            ));
        };
        if !known_resource(r) {
            // The token doc's example answers an unknown `.default` resource this way.
            return Err(AadError::new(
                400,
                "invalid_scope",
                70011,
                format!("The provided value for the input parameter 'scope' is not valid. The scope {s} is not valid."),
            ));
        }
        resources += 1;
    }
    if resources != 1 {
        return Err(AadError::new(
            400,
            "invalid_scope",
            70011,
            format!("The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."),
        ));
    }
    Ok(())
}

/// Token endpoint URLs an assertion's `aud` may name (lower case, no trailing slash).
fn token_audiences(state: &AppState, tenant_segment: &str) -> Vec<String> {
    let (tenant_id, domain) = {
        let s = state.store();
        (s.tenant_id.clone(), s.domain.clone())
    };
    let mut bases = vec![state.base_url.to_ascii_lowercase()];
    if bases[0].contains("127.0.0.1") {
        bases.push(bases[0].replace("127.0.0.1", "localhost"));
    }
    let mut out = Vec::new();
    for base in &bases {
        for seg in [tenant_id.as_str(), domain.as_str(), tenant_segment] {
            for path in ["oauth2/v2.0/token", "oauth2/token"] {
                out.push(format!("{base}/{}/{path}", seg.to_ascii_lowercase()));
            }
        }
    }
    out
}

/// GET /{tenant}/v2.0/.well-known/openid-configuration (and the v1 document without `v2.0`).
pub fn openid_configuration(state: &AppState, tenant_segment: &str, v2: bool) -> (u16, Value) {
    if !tenant_matches(state, tenant_segment) {
        let mut e = AadError::tenant_not_found(tenant_segment);
        e.error = "invalid_tenant";
        return (400, e.body(state.clock.now()));
    }
    let tenant_id = state.store().tenant_id.clone();
    let base = &state.base_url;
    let seg = tenant_segment;
    let (oauth, issuer) = if v2 {
        ("oauth2/v2.0", format!("{base}/{tenant_id}/v2.0"))
    } else {
        ("oauth2", format!("https://sts.windows.net/{tenant_id}/"))
    };
    (
        200,
        json!({
            "token_endpoint": format!("{base}/{seg}/{oauth}/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": format!("{base}/{seg}/discovery/{}keys", if v2 { "v2.0/" } else { "" }),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": issuer,
            "request_uri_parameter_supported": false,
            "authorization_endpoint": format!("{base}/{seg}/{oauth}/authorize"),
            "device_authorization_endpoint": format!("{base}/{seg}/{oauth}/devicecode"),
            "end_session_endpoint": format!("{base}/{seg}/{oauth}/logout"),
            "http_logout_supported": true,
            "frontchannel_logout_supported": true,
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
        }),
    )
}
