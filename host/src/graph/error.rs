//! Errors of the Graph connector: Graph API errors (with Graph's code and request-id), token
//! endpoint errors (with the AADSTS code), transport and configuration errors.
//!
//! Messages never carry secrets: no tokens, no client secrets, no key material.

use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// A non-success answer from Graph (`{"error":{"code","message","innerError":{...}}}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    /// Graph's `error.code` (e.g. `Request_ResourceNotFound`, `syncStateNotFound`), or the HTTP
    /// reason phrase when the body is not a Graph error.
    pub code: String,
    pub message: String,
    /// `request-id` response header, else `innerError.request-id` / `requestId`.
    pub request_id: Option<String>,
    /// The `client-request-id` we sent.
    pub client_request_id: Option<String>,
    /// `Location` header (a 410 sync reset carries the initial query there).
    pub location: Option<String>,
    /// `Retry-After` as sent by Graph (429/503).
    pub retry_after: Option<Duration>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Graph returned {} {}: {}",
            self.status, self.code, self.message
        )?;
        if let Some(id) = &self.request_id {
            write!(f, " (request-id {id})")?;
        }
        Ok(())
    }
}

/// A non-success answer from the token endpoint (`{"error","error_description","error_codes",...}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    pub status: u16,
    /// OAuth `error` (e.g. `invalid_client`, `invalid_scope`).
    pub error: String,
    /// First of `error_codes`: the AADSTS number (e.g. 7000215).
    pub aadsts: Option<u64>,
    /// First line of `error_description` (the trace/correlation lines are kept apart).
    pub description: String,
    pub trace_id: Option<String>,
    pub correlation_id: Option<String>,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "token endpoint returned {} {}", self.status, self.error)?;
        if let Some(code) = self.aadsts {
            write!(f, " (AADSTS{code})")?;
        }
        write!(f, ": {}", self.description)?;
        if let Some(id) = &self.trace_id {
            write!(f, " (trace-id {id})")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("{0}")]
    Api(Box<ApiError>),
    #[error("{0}")]
    Token(Box<TokenError>),
    /// Connection, TLS, timeout or body read failure.
    #[error("HTTP transport error: {0}")]
    Transport(#[from] reqwest::Error),
    /// A 2xx answer we cannot use (not JSON, a delta page without links, ...).
    #[error("invalid response from Graph: {0}")]
    InvalidResponse(String),
    /// The credential cannot be used (unreadable key or certificate).
    #[error("credential error: {0}")]
    Credential(String),
    /// Settings that cannot work (bad URL, plain http to a non-loopback host, ...).
    #[error("Graph settings error: {0}")]
    Config(String),
}

/// Longest body excerpt kept in an error built from a non-JSON body.
const BODY_EXCERPT: usize = 300;

impl GraphError {
    /// HTTP status of an API or token error.
    pub fn status(&self) -> Option<u16> {
        match self {
            GraphError::Api(e) => Some(e.status),
            GraphError::Token(e) => Some(e.status),
            GraphError::Transport(e) => e.status().map(|s| s.as_u16()),
            _ => None,
        }
    }

    /// Graph's `error.code`, or the OAuth `error` of the token endpoint.
    pub fn code(&self) -> Option<&str> {
        match self {
            GraphError::Api(e) => Some(&e.code),
            GraphError::Token(e) => Some(&e.error),
            _ => None,
        }
    }

    /// Graph's request-id (or the token endpoint's trace id), for support cases.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            GraphError::Api(e) => e.request_id.as_deref(),
            GraphError::Token(e) => e.trace_id.as_deref(),
            _ => None,
        }
    }

    /// True when Graph asks for a full resynchronisation: `410 Gone`, `syncStateNotFound`,
    /// `resyncRequired`, or `400 Badly formed token.` (what a mangled delta token gets).
    pub fn is_sync_reset(&self) -> bool {
        let GraphError::Api(e) = self else {
            return false;
        };
        e.status == 410
            || e.code.eq_ignore_ascii_case("syncStateNotFound")
            || e.code.eq_ignore_ascii_case("resyncRequired")
            || (e.status == 400
                && e.message
                    .to_ascii_lowercase()
                    .contains("badly formed token"))
    }

    /// The `Location` of a 410 reset: the URL of the initial query to restart from.
    pub fn reset_location(&self) -> Option<&str> {
        match self {
            GraphError::Api(e) if e.status == 410 => {
                e.location.as_deref().filter(|l| !l.is_empty())
            }
            _ => None,
        }
    }

    /// True for `429 Too Many Requests`.
    pub fn is_throttled(&self) -> bool {
        matches!(self, GraphError::Api(e) if e.status == 429)
    }
}

/// Builds an [`ApiError`] from a Graph error response. `request_id_header` wins over the body's
/// `innerError` (directory errors spell it `request-id`, the generic docs `requestId`).
pub fn api_error_from_body(status: u16, reason: &str, body: &[u8]) -> ApiError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let err = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .filter(|e| e.is_object());
    match err {
        Some(e) => {
            let inner = e.get("innerError").or_else(|| e.get("innererror"));
            let request_id = inner
                .and_then(|i| i.get("request-id").or_else(|| i.get("requestId")))
                .and_then(Value::as_str)
                .map(str::to_owned);
            ApiError {
                status,
                code: str_field(e, "code").unwrap_or_else(|| reason.to_owned()),
                message: str_field(e, "message").unwrap_or_default(),
                request_id,
                client_request_id: None,
                location: None,
                retry_after: None,
            }
        }
        None => ApiError {
            status,
            code: reason.to_owned(),
            message: excerpt(body),
            request_id: None,
            client_request_id: None,
            location: None,
            retry_after: None,
        },
    }
}

/// Builds a [`TokenError`] from a token endpoint error response.
pub fn token_error_from_body(status: u16, reason: &str, body: &[u8]) -> TokenError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    match parsed
        .as_ref()
        .filter(|v| v.get("error").is_some_and(Value::is_string))
    {
        Some(v) => {
            let description = str_field(v, "error_description").unwrap_or_default();
            TokenError {
                status,
                error: str_field(v, "error").unwrap_or_default(),
                aadsts: v
                    .get("error_codes")
                    .and_then(Value::as_array)
                    .and_then(|a| a.first())
                    .and_then(Value::as_u64),
                // The description repeats trace id, correlation id and timestamp on further lines.
                description: description
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
                trace_id: str_field(v, "trace_id"),
                correlation_id: str_field(v, "correlation_id"),
            }
        }
        None => TokenError {
            status,
            error: reason.to_owned(),
            aadsts: None,
            description: excerpt(body),
            trace_id: None,
            correlation_id: None,
        },
    }
}

fn str_field(v: &Value, name: &str) -> Option<String> {
    v.get(name).and_then(Value::as_str).map(str::to_owned)
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(BODY_EXCERPT) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, body: &str) -> GraphError {
        GraphError::Api(Box::new(api_error_from_body(
            status,
            "reason",
            body.as_bytes(),
        )))
    }

    #[test]
    fn parses_directory_error_with_request_id() {
        let e = api_error_from_body(
            400,
            "Bad Request",
            include_bytes!("testdata/errors/observed_deltatoken-without-dollar-400.json"),
        );
        assert_eq!(e.code, "Request_BadRequest");
        assert_eq!(
            e.message,
            "Unrecognized query argument specified: 'deltatoken'."
        );
        assert_eq!(
            e.request_id.as_deref(),
            Some("f2ea5621-e131-47c3-9ee2-d1bd91f96236")
        );
    }

    #[test]
    fn parses_generic_error_with_request_id_camel_case() {
        let e = api_error_from_body(
            416,
            "Range Not Satisfiable",
            include_bytes!("testdata/errors/errors_generic-example.json"),
        );
        assert_eq!(e.code, "invalidRange");
        assert_eq!(e.request_id.as_deref(), Some("request-id"));
    }

    #[test]
    fn parses_throttling_body() {
        let e = api_error_from_body(
            429,
            "Too Many Requests",
            include_bytes!("testdata/errors/throttling_429_body.json"),
        );
        assert_eq!(e.code, "TooManyRequests");
        assert_eq!(e.message, "Please retry again later.");
        assert_eq!(
            e.request_id.as_deref(),
            Some("94fb3b52-452a-4535-a601-69e0a90e3aa2")
        );
        assert!(GraphError::Api(Box::new(e)).is_throttled());
    }

    #[test]
    fn non_json_body_keeps_reason_and_excerpt() {
        let e = api_error_from_body(502, "Bad Gateway", b"<html>upstream down</html>");
        assert_eq!(e.code, "Bad Gateway");
        assert_eq!(e.message, "<html>upstream down</html>");
        let long = "x".repeat(1000);
        let e = api_error_from_body(502, "Bad Gateway", long.as_bytes());
        assert_eq!(e.message.len(), BODY_EXCERPT + 3);
    }

    #[test]
    fn sync_reset_detection() {
        assert!(api(410, "").is_sync_reset());
        assert!(api(
            400,
            r#"{"error":{"code":"syncStateNotFound","message":"The sync state generation is not found."}}"#
        )
        .is_sync_reset());
        assert!(api(400, r#"{"error":{"code":"resyncRequired","message":"x"}}"#).is_sync_reset());
        assert!(api(
            400,
            r#"{"error":{"code":"Request_BadRequest","message":"Badly formed token."}}"#
        )
        .is_sync_reset());
        // The Outlook observation spells it with a capital S.
        assert!(api(
            410,
            r#"{"error":{"code":"SyncStateNotFound","message":"gone"}}"#
        )
        .is_sync_reset());
        assert!(!api(
            400,
            r#"{"error":{"code":"Request_BadRequest","message":"Unrecognized query argument specified: 'deltatoken'."}}"#
        )
        .is_sync_reset());
        assert!(!api(
            404,
            r#"{"error":{"code":"Request_ResourceNotFound","message":"x"}}"#
        )
        .is_sync_reset());
        assert!(!GraphError::Config("x".into()).is_sync_reset());
    }

    #[test]
    fn reset_location_only_on_410() {
        let mut e = api_error_from_body(410, "Gone", b"");
        e.location = Some("https://graph.example/v1.0/groups/delta?$deltatoken=".into());
        let err = GraphError::Api(Box::new(e.clone()));
        assert_eq!(
            err.reset_location(),
            Some("https://graph.example/v1.0/groups/delta?$deltatoken=")
        );
        e.status = 400;
        assert_eq!(GraphError::Api(Box::new(e)).reset_location(), None);
    }

    #[test]
    fn token_error_invalid_client() {
        let e = token_error_from_body(
            401,
            "Unauthorized",
            include_bytes!("testdata/auth/observed_token_error_invalid-client-401.json"),
        );
        assert_eq!(e.error, "invalid_client");
        assert_eq!(e.aadsts, Some(7000215));
        assert_eq!(
            e.description,
            "AADSTS7000215: Invalid client secret is provided."
        );
        assert_eq!(
            e.trace_id.as_deref(),
            Some("60c018fb-32af-45ed-94d1-921ff3b68600")
        );
        let err = GraphError::Token(Box::new(e));
        assert_eq!(err.code(), Some("invalid_client"));
        assert_eq!(err.status(), Some(401));
        assert_eq!(
            err.to_string(),
            "token endpoint returned 401 invalid_client (AADSTS7000215): AADSTS7000215: Invalid client \
             secret is provided. (trace-id 60c018fb-32af-45ed-94d1-921ff3b68600)"
        );
    }

    #[test]
    fn token_error_invalid_scope() {
        let e = token_error_from_body(
            400,
            "Bad Request",
            include_bytes!("testdata/auth/token_response_error_invalid-scope.json"),
        );
        assert_eq!(e.error, "invalid_scope");
        assert_eq!(e.aadsts, Some(70011));
        assert!(e.description.starts_with("AADSTS70011: The provided value"));
        assert!(!e.description.contains("Trace ID"));
    }

    #[test]
    fn parses_invalid_authentication_token() {
        let e = api_error_from_body(
            401,
            "Unauthorized",
            include_bytes!(
                "testdata/errors/observed_invalidauthenticationtoken-validation-401.json"
            ),
        );
        assert_eq!(e.code, "InvalidAuthenticationToken");
        assert_eq!(e.message, "Access token validation failure.");
        assert_eq!(
            e.request_id.as_deref(),
            Some("be979fa7-653b-4bf4-9640-47fc8aa3fcba")
        );
        assert!(!GraphError::Api(Box::new(e)).is_sync_reset());
    }

    #[test]
    fn api_error_display_names_code_and_request_id() {
        let err = api(
            403,
            r#"{"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges to complete the operation.","innerError":{"request-id":"abc"}}}"#,
        );
        assert_eq!(
            err.to_string(),
            "Graph returned 403 Authorization_RequestDenied: Insufficient privileges to complete the \
             operation. (request-id abc)"
        );
    }
}
