//! The per-request context and the transport-neutral response that both plain requests and
//! `$batch` items produce.

use serde_json::Value;
use time::OffsetDateTime;

use crate::schema::ApiVersion;

/// Graph's success Content-Type for JSON payloads.
pub const ODATA_JSON: &str =
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

/// What a handler needs to know about the request it serves.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    pub request_id: String,
    pub client_request_id: String,
    pub now: OffsetDateTime,
    /// `scheme://host:port` of the emulator, without a trailing slash.
    pub base_url: String,
    /// Lower-cased request header names with their values.
    pub headers: Vec<(String, String)>,
    /// `/v1.0` or `/beta`: decides the properties known and the root of links.
    pub version: ApiVersion,
    /// The application permissions of the caller's token (empty before it is validated).
    pub roles: Vec<String>,
}

impl RequestCtx {
    /// Whether the caller holds one of `roles` (a write needs its permission, as Graph checks).
    pub fn has_role(&self, roles: &[&str]) -> bool {
        self.roles.iter().any(|r| roles.contains(&r.as_str()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `<base>/v1.0` or `<base>/beta`, as requested.
    pub fn graph_root(&self) -> String {
        format!("{}/{}", self.base_url, self.version.segment())
    }

    /// `innerError.date` is second precision without an offset, e.g. `2020-08-18T12:51:51`.
    pub fn inner_error_date(&self) -> String {
        crate::clock::format_inner_date(self.now)
    }

    /// True when `Prefer` asks for `return=minimal`.
    pub fn prefers_minimal(&self) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("prefer"))
            .flat_map(|(_, v)| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("return=minimal"))
    }
}

/// Response body kinds the emulator produces.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Empty,
    Json(Value),
    Text(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct GraphResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl GraphResponse {
    /// A 2xx OData JSON payload with Graph's headers.
    pub fn json(status: u16, body: Value) -> Self {
        GraphResponse {
            status,
            headers: vec![
                ("Content-Type".into(), ODATA_JSON.into()),
                ("OData-Version".into(), "4.0".into()),
            ],
            body: Body::Json(body),
        }
    }

    pub fn ok(body: Value) -> Self {
        Self::json(200, body)
    }

    pub fn error_json(status: u16, body: Value) -> Self {
        GraphResponse {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: Body::Json(body),
        }
    }

    pub fn no_content() -> Self {
        GraphResponse {
            status: 204,
            headers: Vec::new(),
            body: Body::Empty,
        }
    }

    pub fn text(status: u16, text: String) -> Self {
        GraphResponse {
            status,
            headers: vec![("Content-Type".into(), "text/plain;charset=utf-8".into())],
            body: Body::Text(text),
        }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}
