//! The HTTP side of the Graph connector: one reqwest client (rustls, verification always on),
//! bearer tokens from [`TokenProvider`], `client-request-id` on every call, and retries of
//! throttled (429) and unavailable (503/504) answers that honour `Retry-After`.

use super::auth::{AssertionAlg, Credential, TokenProvider};
use super::error::{api_error_from_body, GraphError};
use super::retry::{self, Failure, RetryPolicy};
use reqwest::header::{HeaderMap, ACCEPT, LOCATION, RETRY_AFTER};
use reqwest::{Method, Url};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Public-cloud Graph v1.0 root.
pub const PUBLIC_GRAPH_BASE: &str = "https://graph.microsoft.com/v1.0";
/// Public-cloud login root.
pub const PUBLIC_LOGIN_BASE: &str = "https://login.microsoftonline.com";

/// Everything the connector needs to reach Graph.
#[derive(Debug, Clone)]
pub struct GraphSettings {
    /// Graph root including the version, e.g. `https://graph.microsoft.com/v1.0`.
    pub graph_base: String,
    /// Token endpoint, e.g. `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`.
    pub token_url: String,
    /// `<graph root>/.default`, e.g. `https://graph.microsoft.com/.default`.
    pub scope: String,
    pub client_id: String,
    pub credential: Credential,
    /// An extra trusted CA (PEM, may hold several), e.g. the emulator's over https.
    pub ca_file: Option<PathBuf>,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Retries after the first attempt of a request (429, 503, 504, transport failures).
    pub max_retries: u32,
    /// Cap on the total time one request may spend waiting between retries.
    pub max_retry_wait: Duration,
    /// Client assertion form for certificate credentials.
    pub assertion_alg: AssertionAlg,
    /// Bounds of one delta round: pages, and time from its first page.
    pub round_limits: RoundLimits,
}

/// How far one delta round may go before it is given up: a nextLink chain that never reaches
/// its deltaLink (a loop, an endless delta) must not hold the cycle forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundLimits {
    pub max_pages: usize,
    pub timeout: Duration,
}

impl Default for RoundLimits {
    fn default() -> Self {
        RoundLimits {
            max_pages: 1_000_000,
            timeout: Duration::from_secs(4 * 3600),
        }
    }
}

/// A Graph answer larger than this is refused: a page is a few MB at most, and a body is held
/// whole to be parsed.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

impl GraphSettings {
    /// Settings with defaults: scope from `graph_base`, 60 s timeout, 5 retries within 180 s,
    /// PS256 assertions.
    pub fn new(
        graph_base: impl Into<String>,
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        credential: Credential,
    ) -> Self {
        let graph_base = graph_base.into();
        GraphSettings {
            scope: default_scope(&graph_base),
            graph_base,
            token_url: token_url.into(),
            client_id: client_id.into(),
            credential,
            ca_file: None,
            timeout: Duration::from_secs(60),
            max_retries: RetryPolicy::default().max_retries,
            max_retry_wait: RetryPolicy::default().max_total_wait,
            assertion_alg: AssertionAlg::default(),
            round_limits: RoundLimits::default(),
        }
    }

    /// Settings for a tenant in the public cloud.
    pub fn public_cloud(
        tenant: &str,
        client_id: impl Into<String>,
        credential: Credential,
    ) -> Self {
        Self::new(
            PUBLIC_GRAPH_BASE,
            token_url(PUBLIC_LOGIN_BASE, tenant),
            client_id,
            credential,
        )
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.max_retries,
            max_total_wait: self.max_retry_wait,
            ..RetryPolicy::default()
        }
    }
}

/// `<login root>/{tenant}/oauth2/v2.0/token`.
pub fn token_url(login_base: &str, tenant: &str) -> String {
    format!(
        "{}/{tenant}/oauth2/v2.0/token",
        login_base.trim_end_matches('/')
    )
}

/// `<graph root>/.default`: the scheme and authority of `graph_base` (the version path dropped).
pub fn default_scope(graph_base: &str) -> String {
    match Url::parse(graph_base) {
        Ok(u) => format!("{}/.default", u.origin().ascii_serialization()),
        Err(_) => format!("{}/.default", graph_base.trim_end_matches('/')),
    }
}

struct Inner {
    http: reqwest::Client,
    tokens: TokenProvider,
    base: Url,
    /// `graph_base` without a trailing slash, to join relative paths.
    base_str: String,
    retry: RetryPolicy,
    round_limits: RoundLimits,
}

/// A Graph client; cheap to clone (shared connection pool and token cache).
#[derive(Clone)]
pub struct GraphClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("graph_base", &self.inner.base_str)
            .field("tokens", &self.inner.tokens)
            .finish_non_exhaustive()
    }
}

impl GraphClient {
    /// Builds the HTTP client and the token provider. Fails on unusable URLs (plain http is only
    /// allowed to loopback hosts), an unreadable CA file or credential.
    pub fn new(settings: GraphSettings) -> Result<Self, GraphError> {
        let base = checked_url("graph_base", &settings.graph_base)?;
        checked_url("token_url", &settings.token_url)?;
        if settings.client_id.trim().is_empty() {
            return Err(GraphError::Config("client_id is empty".into()));
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("writeback/", env!("CARGO_PKG_VERSION")))
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)));
        if let Some(path) = &settings.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                GraphError::Config(format!("cannot read ca_file {}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                GraphError::Config(format!("ca_file {} is not PEM: {e}", path.display()))
            })?;
            if certs.is_empty() {
                return Err(GraphError::Config(format!(
                    "ca_file {} holds no certificate",
                    path.display()
                )));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| GraphError::Config(format!("cannot build the HTTP client: {e}")))?;
        let retry = settings.retry_policy();
        let scope = if settings.scope.trim().is_empty() {
            default_scope(&settings.graph_base)
        } else {
            settings.scope.clone()
        };
        let tokens = TokenProvider::new(
            http.clone(),
            settings.token_url.clone(),
            scope,
            settings.client_id.clone(),
            &settings.credential,
            settings.assertion_alg,
            retry,
        )?;
        Ok(GraphClient {
            inner: Arc::new(Inner {
                http,
                tokens,
                base,
                base_str: settings.graph_base.trim_end_matches('/').to_owned(),
                retry,
                round_limits: settings.round_limits,
            }),
        })
    }

    /// The Graph root this client talks to (no trailing slash).
    pub fn graph_base(&self) -> &str {
        &self.inner.base_str
    }

    /// The bounds of one delta round.
    pub fn round_limits(&self) -> RoundLimits {
        self.inner.round_limits
    }

    pub fn tokens(&self) -> &TokenProvider {
        &self.inner.tokens
    }

    /// An absolute URL for a path relative to `graph_base` (`/groups/delta?...` or `groups`),
    /// or an absolute URL (a nextLink/deltaLink) used verbatim. Absolute URLs must share the
    /// origin of `graph_base`: the bearer token is never sent elsewhere.
    pub fn resolve(&self, url_or_path: &str) -> Result<Url, GraphError> {
        if url_or_path.starts_with("https://") || url_or_path.starts_with("http://") {
            let url = Url::parse(url_or_path).map_err(|e| {
                GraphError::InvalidResponse(format!("bad URL {url_or_path:?}: {e}"))
            })?;
            if url.origin() != self.inner.base.origin() {
                return Err(GraphError::Config(format!(
                    "refusing to send the Graph token to {} (graph_base is {})",
                    url.origin().ascii_serialization(),
                    self.inner.base.origin().ascii_serialization()
                )));
            }
            return Ok(url);
        }
        let joined = format!(
            "{}/{}",
            self.inner.base_str,
            url_or_path.trim_start_matches('/')
        );
        Url::parse(&joined)
            .map_err(|e| GraphError::Config(format!("bad Graph path {url_or_path:?}: {e}")))
    }

    /// GET a JSON document.
    pub async fn get_json(&self, url_or_path: &str) -> Result<Value, GraphError> {
        self.send_json(Method::GET, url_or_path, None).await
    }

    /// Sends a request (with retries, see [`Self::send_with_retry`]) and reads its JSON answer.
    pub async fn send_json(
        &self,
        method: Method,
        url_or_path: &str,
        json: Option<&Value>,
    ) -> Result<Value, GraphError> {
        let body = self
            .send_for_body(method.clone(), url_or_path, json)
            .await?;
        serde_json::from_slice(&body).map_err(|e| {
            GraphError::InvalidResponse(format!("body of {method} {url_or_path} is not JSON: {e}"))
        })
    }

    /// GET a document's body as it came (at most [`MAX_BODY_BYTES`]), for a caller that parses
    /// it a part at a time.
    pub async fn get_body(&self, url_or_path: &str) -> Result<Vec<u8>, GraphError> {
        self.send_for_body(Method::GET, url_or_path, None).await
    }

    async fn send_for_body(
        &self,
        method: Method,
        url_or_path: &str,
        json: Option<&Value>,
    ) -> Result<Vec<u8>, GraphError> {
        let mut resp = self
            .send_with_retry(method.clone(), url_or_path, json)
            .await?;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(GraphError::InvalidResponse(format!(
                    "body of {method} {url_or_path} is larger than {} MiB; refused",
                    MAX_BODY_BYTES / (1024 * 1024)
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Sends a request with a bearer token and `client-request-id`, retrying 429 (any method;
    /// `Retry-After` honoured) and 503/504/transport failures (not for POST) with backoff, within
    /// the retry count and total-wait cap. A 401 refreshes the token once. Returns the 2xx
    /// response, or the last error with Graph's code and request-id.
    pub async fn send_with_retry(
        &self,
        method: Method,
        url_or_path: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, GraphError> {
        let url = self.resolve(url_or_path)?;
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let idempotent = method != Method::POST;
        let mut retries = 0u32;
        let mut waited = Duration::ZERO;
        let mut token_refreshed = false;
        loop {
            let token = self.inner.tokens.token().await?;
            let mut req = self
                .inner
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(&token)
                .header(ACCEPT, "application/json")
                .header("client-request-id", &client_request_id);
            if retries > 0 {
                // As the Graph SDKs do, so the server side can tell retries apart.
                req = req.header("Retry-Attempt", retries.to_string());
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let started = Instant::now();
            crate::metrics::graph_request();
            let (err, failure) = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    tracing::debug!(
                        %method,
                        url = %url,
                        status = status.as_u16(),
                        request_id = header_str(resp.headers(), "request-id").unwrap_or_default(),
                        client_request_id = %client_request_id,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "graph request"
                    );
                    if status.is_success() {
                        return Ok(resp);
                    }
                    if status.as_u16() == 429 {
                        crate::metrics::graph_throttled();
                    }
                    let err = self.api_error(resp, &url, &client_request_id).await;
                    if err.status == 401 && !token_refreshed {
                        // The token may have been revoked or outlived a clock jump: fetch a new one once.
                        token_refreshed = true;
                        self.inner.tokens.invalidate(&token).await;
                        continue;
                    }
                    let failure = Failure::Status {
                        status: err.status,
                        retry_after: err.retry_after,
                    };
                    (GraphError::Api(Box::new(err)), failure)
                }
                Err(e) => (GraphError::Transport(e), Failure::Transport),
            };
            retries += 1;
            match retry::next_wait(
                &self.inner.retry,
                failure,
                idempotent,
                retries,
                waited,
                rand::random(),
            ) {
                Some(wait) => {
                    crate::metrics::graph_retry();
                    tracing::debug!(
                        %method,
                        url = %url,
                        error = %err,
                        retry = retries,
                        wait_ms = wait.as_millis() as u64,
                        "graph request failed, retrying"
                    );
                    tokio::time::sleep(wait).await;
                    waited += wait;
                }
                None => return Err(err),
            }
        }
    }

    async fn api_error(
        &self,
        resp: reqwest::Response,
        url: &Url,
        client_request_id: &str,
    ) -> super::error::ApiError {
        let status = resp.status();
        let headers = resp.headers().clone();
        // An error body is read for its code and message only: the first megabyte is plenty.
        let mut resp = resp;
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() > 1024 * 1024 {
                body.truncate(1024 * 1024);
                break;
            }
        }
        let mut err = api_error_from_body(
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            &body,
        );
        if let Some(id) = header_str(&headers, "request-id") {
            err.request_id = Some(id.to_owned());
        }
        err.client_request_id = Some(client_request_id.to_owned());
        err.retry_after = header_str(&headers, RETRY_AFTER.as_str())
            .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
        // Location may be relative; resolve it against the request URL.
        err.location = header_str(&headers, LOCATION.as_str())
            .and_then(|l| url.join(l).ok())
            .map(|u| u.to_string());
        err
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Parses a configured URL; plain http only to a loopback host (the emulator).
fn checked_url(name: &str, value: &str) -> Result<Url, GraphError> {
    let url = Url::parse(value)
        .map_err(|e| GraphError::Config(format!("{name} {value:?} is not a URL: {e}")))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(GraphError::Config(format!(
            "{name} {value:?} must use https (plain http is only allowed to a loopback address)"
        ))),
        other => Err(GraphError::Config(format!(
            "{name} {value:?}: unsupported scheme {other:?}"
        ))),
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(base: &str) -> GraphSettings {
        GraphSettings::new(
            base,
            "http://127.0.0.1:9/t/oauth2/v2.0/token",
            "app",
            Credential::Secret("s".into()),
        )
    }

    #[test]
    fn defaults() {
        let s = GraphSettings::public_cloud(
            "contoso.onmicrosoft.com",
            "app",
            Credential::Secret("s".into()),
        );
        assert_eq!(s.graph_base, "https://graph.microsoft.com/v1.0");
        assert_eq!(
            s.token_url,
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(s.scope, "https://graph.microsoft.com/.default");
        assert_eq!(
            default_scope("http://127.0.0.1:8080/v1.0/"),
            "http://127.0.0.1:8080/.default"
        );
        assert_eq!(
            default_scope("https://graph.microsoft.us/v1.0"),
            "https://graph.microsoft.us/.default"
        );
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(GraphClient::new(settings("http://127.0.0.1:8080/v1.0")).is_ok());
        assert!(GraphClient::new(settings("http://localhost:8080/v1.0")).is_ok());
        assert!(GraphClient::new(settings("http://[::1]:8080/v1.0")).is_ok());
        assert!(GraphClient::new(settings("https://graph.microsoft.com/v1.0")).is_ok());
        let err =
            GraphClient::new(settings("http://graph.example.com/v1.0")).expect_err("plain http");
        assert!(matches!(err, GraphError::Config(_)), "{err}");
        let mut s = settings("https://graph.microsoft.com/v1.0");
        s.token_url = "http://login.example.com/t/oauth2/v2.0/token".into();
        assert!(matches!(GraphClient::new(s), Err(GraphError::Config(_))));
        assert!(matches!(
            GraphClient::new(settings("ftp://127.0.0.1/")),
            Err(GraphError::Config(_))
        ));
    }

    #[test]
    fn missing_ca_file_is_a_config_error() {
        let mut s = settings("http://127.0.0.1:8080/v1.0");
        s.ca_file = Some(PathBuf::from("/nonexistent/ca.pem"));
        assert!(matches!(GraphClient::new(s), Err(GraphError::Config(_))));
    }

    #[test]
    fn resolve_paths_and_links() {
        let c = GraphClient::new(settings("http://127.0.0.1:8080/v1.0/")).expect("client");
        assert_eq!(c.graph_base(), "http://127.0.0.1:8080/v1.0");
        assert_eq!(
            c.resolve("/groups/delta?$select=id,members")
                .expect("path")
                .as_str(),
            "http://127.0.0.1:8080/v1.0/groups/delta?$select=id,members"
        );
        assert_eq!(
            c.resolve("users").expect("path").as_str(),
            "http://127.0.0.1:8080/v1.0/users"
        );
        let link = "http://127.0.0.1:8080/v1.0/groups/delta?$deltatoken=abc%3D";
        assert_eq!(c.resolve(link).expect("link").as_str(), link);
        // A link to another origin (scheme, host or port) does not get the token.
        for foreign in [
            "http://127.0.0.1:8081/v1.0/groups/delta",
            "https://127.0.0.1:8080/v1.0/groups/delta",
            "http://evil.example/v1.0/groups/delta",
        ] {
            assert!(
                matches!(c.resolve(foreign), Err(GraphError::Config(_))),
                "{foreign}"
            );
        }
    }
}
