//! Graph error bodies (`{"error":{"code","message","innerError":{...}}}`) as directory
//! endpoints return them.

use serde_json::{json, Map, Value};

use crate::response::{GraphResponse, RequestCtx};

/// A Graph error before it is rendered for one request (the innerError needs request ids).
#[derive(Debug, Clone, PartialEq)]
pub struct GraphError {
    pub status: u16,
    pub code: String,
    pub message: String,
    /// Extra response headers (Retry-After, Location, WWW-Authenticate).
    pub headers: Vec<(String, String)>,
    /// Extra innerError members (the throttling body carries code/status/message there).
    pub inner: Map<String, Value>,
}

impl GraphError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        GraphError {
            status,
            code: code.to_string(),
            message: message.into(),
            headers: Vec::new(),
            inner: Map::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "Request_BadRequest", message)
    }

    pub fn unsupported_query(message: impl Into<String>) -> Self {
        Self::new(400, "Request_UnsupportedQuery", message)
    }

    /// The directory's 404 text for an unknown object id.
    pub fn not_found(id: &str) -> Self {
        Self::new(
            404,
            "Request_ResourceNotFound",
            format!(
                "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
            ),
        )
    }

    /// Path that no handler serves (Graph answers these with a 400 about the segment).
    pub fn bad_segment(segment: &str) -> Self {
        Self::new(
            400,
            "BadRequest",
            format!("Resource not found for the segment '{segment}'."),
        )
    }

    /// 403 for a token without the permission the call needs (Graph's code and message).
    pub fn forbidden() -> Self {
        Self::new(
            403,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "InvalidAuthenticationToken", message).with_header(
            "WWW-Authenticate",
            "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "Request_BadRequest",
            "The requested HTTP method is not allowed for this resource.",
        )
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn with_inner(mut self, key: &str, value: Value) -> Self {
        self.inner.insert(key.to_string(), value);
        self
    }

    /// The body exactly as Graph shapes it for this request.
    pub fn body(&self, ctx: &RequestCtx) -> Value {
        let mut inner = Map::new();
        inner.insert("date".into(), json!(ctx.inner_error_date()));
        inner.insert("request-id".into(), json!(ctx.request_id));
        inner.insert("client-request-id".into(), json!(ctx.client_request_id));
        for (k, v) in &self.inner {
            inner.insert(k.clone(), v.clone());
        }
        json!({"error": {"code": self.code, "message": self.message, "innerError": inner}})
    }

    pub fn into_response(self, ctx: &RequestCtx) -> GraphResponse {
        let body = self.body(ctx);
        let mut resp = GraphResponse::error_json(self.status, body);
        resp.headers.extend(self.headers);
        resp
    }
}

pub type GraphResult<T> = Result<T, GraphError>;
