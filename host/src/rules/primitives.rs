//! Host primitives for triggers and schedules: `http::post`, `http::request`, `graph::get`,
//! `ad::search`, and `log::info|warn|error`.
//!
//! Rules stay pure: the primitives with an effect work only while the host calls a trigger or
//! `on_schedule`, which it does with a [`CallScope`] as the call's tag. Anywhere else (`scope`,
//! `map`, module top-level code at load) they raise an error naming the function. The logging
//! functions have no effect on AD and work everywhere.
//!
//! The I/O itself is behind [`Effects`] (implemented by `crate::effects::HostEffects`), so
//! `rules/` holds no network code and tests can substitute it. Effects calls block: the host
//! runs triggers on a blocking thread. Every function is registered as volatile, so the
//! optimizer never runs one at compile time.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::{
    Array, Dynamic, Engine, EvalAltResult, FuncRegistration, ImmutableString, Map, Module,
    NativeCallContext, Position, INT,
};

/// Default timeout of one HTTP request.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The entry points that may use the primitives, for messages.
const EFFECT_ENTRY_POINTS: &str =
    "on_created, on_updated, on_deleted, on_members_added, on_members_removed, on_held, on_failed, on_refused, on_schedule";

/// One HTTP request as a script asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Upper case: GET, POST, ...
    pub method: String,
    pub url: String,
    /// Header names and values, in the script's order (names as given).
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    /// Set when the host chose the body's type (JSON for maps, text for strings) and the script
    /// gave no `Content-Type` header.
    pub content_type: Option<&'static str>,
    pub timeout: Duration,
}

/// The answer: status and body text (not valid UTF-8 is replaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// One AD entry found by `ad::search`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdFound {
    pub dn: String,
    /// Values by lowercased attribute name.
    pub attrs: BTreeMap<String, Vec<String>>,
}

/// The host's side of the primitives. Calls block the calling thread (never a runtime worker).
/// Errors are messages for the script; they must not contain secrets (query strings, headers).
/// Why a primitive's effect did not happen. The message reaches the rule as a Rhai runtime
/// error (with the primitive and its target in front); the kind tells a refusal by the host
/// from a failure of the far side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EffectError {
    /// The host's policy refuses the request (an address, a path, a search base, a bad header).
    #[error("{0}")]
    Refused(String),
    /// The call's time ran out.
    #[error("timed out after {} ms", .0.as_millis())]
    TimedOut(Duration),
    /// This context has no connection of that kind (Graph, AD).
    #[error("no {0} connection is available here")]
    Unavailable(&'static str),
    /// The far side failed: transport, an unreadable answer, Graph's or AD's error.
    #[error("{0}")]
    Failed(String),
    /// `secret(name)` for a name `[rules.secrets]` does not have.
    #[error("secret {0:?} is not configured: add it to [rules.secrets] ({0} = {{ env = \"...\" }}, {{ file = \"...\" }} or {{ credential = \"...\" }})")]
    UnknownSecret(String),
}

pub trait Effects: Send + Sync {
    fn http(&self, request: HttpRequest) -> Result<HttpResponse, EffectError>;
    /// GET `path` relative to the Graph base URL.
    fn graph_get(&self, path: &str, timeout: Duration) -> Result<serde_json::Value, EffectError>;
    /// A subtree search below `base` (which the host checks against what it may read).
    fn ad_search(
        &self,
        base: &str,
        filter: &str,
        attrs: &[String],
        timeout: Duration,
    ) -> Result<Vec<AdFound>, EffectError>;
    /// The secret `name` of `[rules.secrets]`. Never logged; an unknown name is an error
    /// naming it, never an empty string.
    fn secret(&self, name: &str) -> Result<String, EffectError> {
        Err(EffectError::UnknownSecret(name.to_string()))
    }
}

/// What a trigger or schedule call carries (the Rhai call tag): who runs, the effects, and when
/// the call's time is up.
#[derive(Clone)]
pub(crate) struct CallScope {
    pub(crate) rule: ImmutableString,
    pub(crate) effects: Arc<dyn Effects>,
    pub(crate) deadline: Instant,
    /// The secret values this call read: blanked out of its log lines and its error.
    pub(crate) revealed: Revealed,
    /// A recorded trigger call's idempotency key, for its HTTP requests.
    pub(crate) idempotency: Option<Idempotency>,
}

/// The `Idempotency-Key` of a recorded call's requests: the key, then `<key>.2`, `<key>.3` ...
/// (a call that posts twice to one receiver must not look like one request sent twice).
#[derive(Clone)]
pub(crate) struct Idempotency {
    key: ImmutableString,
    sent: Arc<std::sync::atomic::AtomicUsize>,
}

impl Idempotency {
    pub(crate) fn new(key: &str) -> Idempotency {
        Idempotency {
            key: key.into(),
            sent: Arc::default(),
        }
    }

    fn next(&self) -> String {
        match self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
            0 => self.key.to_string(),
            n => format!("{}.{}", self.key, n + 1),
        }
    }
}

/// The header name receivers look for (the IETF draft's and Stripe's spelling).
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// Adds the call's idempotency key to `request`, unless the script set the header itself.
fn with_idempotency(scope: &CallScope, mut request: HttpRequest) -> HttpRequest {
    if let Some(i) = &scope.idempotency {
        if !request
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(IDEMPOTENCY_HEADER))
        {
            request
                .headers
                .push((IDEMPOTENCY_HEADER.to_string(), i.next()));
        }
    }
    request
}

/// Secret values a call has read, shared by the call's clones.
#[derive(Clone, Default)]
pub(crate) struct Revealed(Arc<std::sync::Mutex<Vec<String>>>);

impl Revealed {
    fn add(&self, value: &str) {
        if let Ok(mut v) = self.0.lock() {
            v.push(value.to_string());
        }
    }

    /// `text` with every secret value read so far replaced by `***`.
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        if let Ok(values) = self.0.lock() {
            for v in values.iter().filter(|v| !v.is_empty()) {
                out = out.replace(v.as_str(), "***");
            }
        }
        out
    }
}

impl CallScope {
    /// Time left for one effect, at most `wanted`; never zero (the call then fails fast).
    fn budget(&self, wanted: Duration) -> Duration {
        let left = self.deadline.saturating_duration_since(Instant::now());
        wanted.min(left).max(Duration::from_millis(1))
    }
}

fn runtime_error(message: String) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(message.into(), Position::NONE).into()
}

/// Host-function errors carry no position of their own: give them the call's.
fn at_call<T>(
    ctx: &NativeCallContext,
    r: Result<T, Box<EvalAltResult>>,
) -> Result<T, Box<EvalAltResult>> {
    r.map_err(|mut e| {
        if e.position().is_none() {
            e.set_position(ctx.call_position());
        }
        e
    })
}

/// The call scope, or the error a pure entry point gets.
fn scope_of(ctx: &NativeCallContext, function: &str) -> Result<CallScope, Box<EvalAltResult>> {
    ctx.tag()
        .and_then(|t| t.read_lock::<CallScope>().map(|s| s.clone()))
        .ok_or_else(|| {
            runtime_error(format!(
                "`{function}` is available only in triggers and schedules ({EFFECT_ENTRY_POINTS}); in_scope() and to_ad() must stay pure"
            ))
        })
}

/// Registers `secret` and the `http`, `graph`, `ad` and `log` namespaces.
pub(crate) fn register(engine: &mut Engine) {
    FuncRegistration::new("secret")
        .with_volatility(true)
        .register_into_engine(engine, |ctx: NativeCallContext, name: ImmutableString| {
            at_call(&ctx, secret(&ctx, &name))
        });

    let mut http = Module::new();
    FuncRegistration::new("post")
        .with_volatility(true)
        .set_into_module(
            &mut http,
            |ctx: NativeCallContext, url: ImmutableString, body: Dynamic| {
                at_call(&ctx, http_post(&ctx, url, body))
            },
        );
    FuncRegistration::new("request")
        .with_volatility(true)
        .set_into_module(&mut http, |ctx: NativeCallContext, spec: Map| {
            at_call(&ctx, http_request(&ctx, spec))
        });
    engine.register_static_module("http", http.into());

    let mut graph = Module::new();
    FuncRegistration::new("get")
        .with_volatility(true)
        .set_into_module(
            &mut graph,
            |ctx: NativeCallContext, path: ImmutableString| at_call(&ctx, graph_get(&ctx, path)),
        );
    engine.register_static_module("graph", graph.into());

    let mut ad = Module::new();
    FuncRegistration::new("search")
        .with_volatility(true)
        .set_into_module(
            &mut ad,
            |ctx: NativeCallContext,
             base: ImmutableString,
             filter: ImmutableString,
             attrs: Array| { at_call(&ctx, ad_search(&ctx, base, filter, attrs)) },
        );
    // Pure: a cloud value bound for a filter is escaped wherever the filter is built.
    FuncRegistration::new("escape_filter").set_into_module(&mut ad, |value: ImmutableString| {
        crate::ad::dn::escape_filter_value(&value)
    });
    engine.register_static_module("ad", ad.into());

    let mut log = Module::new();
    FuncRegistration::new("info")
        .with_volatility(true)
        .set_into_module(&mut log, |ctx: NativeCallContext, msg: Dynamic| {
            write_log(&ctx, tracing::Level::INFO, msg)
        });
    FuncRegistration::new("warn")
        .with_volatility(true)
        .set_into_module(&mut log, |ctx: NativeCallContext, msg: Dynamic| {
            write_log(&ctx, tracing::Level::WARN, msg)
        });
    FuncRegistration::new("error")
        .with_volatility(true)
        .set_into_module(&mut log, |ctx: NativeCallContext, msg: Dynamic| {
            write_log(&ctx, tracing::Level::ERROR, msg)
        });
    engine.register_static_module("log", log.into());
}

/// `secret(name)`: the value, recorded so the call's logs and error never show it.
fn secret(ctx: &NativeCallContext, name: &str) -> Result<ImmutableString, Box<EvalAltResult>> {
    let scope = scope_of(ctx, "secret")?;
    let value = scope
        .effects
        .secret(name)
        .map_err(|e| runtime_error(e.to_string()))?;
    scope.revealed.add(&value);
    Ok(value.into())
}

/// `log::*`: the rule running (a trigger's rule, else the file the call is in) as a field.
fn write_log(ctx: &NativeCallContext, level: tracing::Level, msg: Dynamic) {
    let rule = ctx
        .tag()
        .and_then(|t| t.read_lock::<CallScope>().map(|s| s.rule.to_string()))
        .or_else(|| {
            ctx.call_source()
                .and_then(|s| Path::new(s).file_name())
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let text = if msg.is_string() {
        msg.into_immutable_string().unwrap_or_default().to_string()
    } else {
        msg.to_string()
    };
    // One message, one line: a script cannot forge log lines or reach the terminal.
    let mut text = crate::printable::one_line(&text);
    if let Some(scope) = ctx
        .tag()
        .and_then(|t| t.read_lock::<CallScope>().map(|s| s.clone()))
    {
        text = scope.revealed.redact(&text).into();
    }
    match level {
        tracing::Level::ERROR => tracing::error!(target: "writeback::rules", rule, "{text}"),
        tracing::Level::WARN => tracing::warn!(target: "writeback::rules", rule, "{text}"),
        _ => tracing::info!(target: "writeback::rules", rule, "{text}"),
    }
}

/// `http::post(url, body)`: a POST; a status other than 2xx is an error.
fn http_post(
    ctx: &NativeCallContext,
    url: ImmutableString,
    body: Dynamic,
) -> Result<Map, Box<EvalAltResult>> {
    let scope = scope_of(ctx, "http::post")?;
    let (body, content_type) = encode_body("http::post", body)?;
    let request = HttpRequest {
        method: "POST".into(),
        url: url.to_string(),
        headers: Vec::new(),
        body,
        content_type,
        timeout: scope.budget(DEFAULT_HTTP_TIMEOUT),
    };
    let shown = safe_url(&request.url);
    let response = scope
        .effects
        .http(with_idempotency(&scope, request))
        .map_err(|e| runtime_error(format!("http::post {shown}: {e}")))?;
    if !(200..300).contains(&response.status) {
        return Err(runtime_error(format!(
            "http::post {shown}: the server answered {}",
            response.status
        )));
    }
    Ok(response_map(response))
}

/// `http::request(#{ method, url, headers, body, timeout_ms })`: any status is returned.
fn http_request(ctx: &NativeCallContext, spec: Map) -> Result<Map, Box<EvalAltResult>> {
    const KEYS: &str = "method, url, headers, body, timeout_ms";
    let scope = scope_of(ctx, "http::request")?;
    let mut method = "GET".to_string();
    let mut url = None;
    let mut headers = Vec::new();
    let mut body = (None, None);
    let mut timeout = DEFAULT_HTTP_TIMEOUT;
    for (key, value) in spec {
        match key.as_str() {
            "method" => {
                let m = text_arg("http::request", "method", value)?.to_ascii_uppercase();
                if m.is_empty() || !m.chars().all(|c| c.is_ascii_alphabetic()) {
                    return Err(runtime_error(format!(
                        "http::request: {m:?} is not an HTTP method"
                    )));
                }
                method = m;
            }
            "url" => url = Some(text_arg("http::request", "url", value)?),
            "headers" => {
                if value.is_unit() {
                    continue;
                }
                let Some(map) = value.try_cast::<Map>() else {
                    return Err(runtime_error(
                        "http::request: `headers` must be a map #{ name: \"value\" }".into(),
                    ));
                };
                for (name, v) in map {
                    let v = if v.is_string() {
                        v.into_immutable_string().unwrap_or_default().to_string()
                    } else {
                        v.to_string()
                    };
                    headers.push((name.to_string(), v));
                }
            }
            "body" => body = encode_body("http::request", value)?,
            "timeout_ms" => {
                let ms = value.as_int().ok().filter(|ms| *ms > 0).ok_or_else(|| {
                    runtime_error("http::request: `timeout_ms` must be a positive integer".into())
                })?;
                timeout = Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX));
            }
            other => {
                return Err(runtime_error(format!(
                    "http::request: unknown key `{other}` (allowed: {KEYS})"
                )))
            }
        }
    }
    let url = url.ok_or_else(|| runtime_error("http::request: `url` is required".into()))?;
    let shown = safe_url(&url);
    let request = HttpRequest {
        method: method.clone(),
        url,
        headers,
        body: body.0,
        content_type: body.1,
        timeout: scope.budget(timeout),
    };
    let response = scope
        .effects
        .http(with_idempotency(&scope, request))
        .map_err(|e| runtime_error(format!("http::request {method} {shown}: {e}")))?;
    Ok(response_map(response))
}

/// `graph::get(path)`: a read-only GET below the Graph base URL, as a map.
fn graph_get(
    ctx: &NativeCallContext,
    path: ImmutableString,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let scope = scope_of(ctx, "graph::get")?;
    let p = path.trim();
    if p.is_empty() || p.contains("://") {
        return Err(runtime_error(format!(
            "graph::get: {p:?} is not a path relative to the Graph base URL (e.g. \"groups/<id>/owners\")"
        )));
    }
    let value = scope
        .effects
        .graph_get(p, scope.budget(Duration::MAX))
        .map_err(|e| runtime_error(format!("graph::get {}: {e}", safe_url(p))))?;
    rhai::serde::to_dynamic(&value).map_err(|e| runtime_error(format!("graph::get: {e}")))
}

/// `ad::search(base, filter, attrs)`: a read-only subtree search; `[#{ dn, attrs }]`.
fn ad_search(
    ctx: &NativeCallContext,
    base: ImmutableString,
    filter: ImmutableString,
    attrs: Array,
) -> Result<Array, Box<EvalAltResult>> {
    let scope = scope_of(ctx, "ad::search")?;
    let attrs = attrs
        .into_iter()
        .map(|a| {
            a.into_immutable_string()
                .map(|s| s.to_string())
                .map_err(|t| {
                    runtime_error(format!("ad::search: attribute names are strings, not {t}"))
                })
        })
        .collect::<Result<Vec<String>, _>>()?;
    let found = scope
        .effects
        .ad_search(&base, &filter, &attrs, scope.budget(Duration::MAX))
        .map_err(|e| runtime_error(format!("ad::search {base}: {e}")))?;
    Ok(found
        .into_iter()
        .map(|f| {
            let mut attrs = Map::new();
            for (k, vs) in f.attrs {
                let values: Array = vs.into_iter().map(Dynamic::from).collect();
                attrs.insert(k.into(), Dynamic::from_array(values));
            }
            let mut m = Map::new();
            m.insert("dn".into(), Dynamic::from(f.dn));
            m.insert("attrs".into(), Dynamic::from_map(attrs));
            Dynamic::from_map(m)
        })
        .collect())
}

fn text_arg(function: &str, key: &str, value: Dynamic) -> Result<String, Box<EvalAltResult>> {
    value
        .into_immutable_string()
        .map(|s| s.to_string())
        .map_err(|t| runtime_error(format!("{function}: `{key}` must be a string, not {t}")))
}

/// A request body and the content type the host picked for it.
type Body = (Option<Vec<u8>>, Option<&'static str>);

/// A string is sent as text, `()` as no body, anything else as JSON.
fn encode_body(function: &str, body: Dynamic) -> Result<Body, Box<EvalAltResult>> {
    if body.is_unit() {
        return Ok((None, None));
    }
    if body.is_string() {
        let text = body.into_immutable_string().unwrap_or_default();
        return Ok((
            Some(text.as_bytes().to_vec()),
            Some("text/plain; charset=utf-8"),
        ));
    }
    let json: serde_json::Value = rhai::serde::from_dynamic(&body).map_err(|e| {
        runtime_error(format!(
            "{function}: the body cannot be sent as JSON ({e}); pass a map, an array or a string (a Group: group.to_map())"
        ))
    })?;
    let bytes = serde_json::to_vec(&json)
        .map_err(|e| runtime_error(format!("{function}: the body cannot be sent as JSON: {e}")))?;
    Ok((Some(bytes), Some("application/json")))
}

fn response_map(r: HttpResponse) -> Map {
    let mut m = Map::new();
    m.insert("status".into(), Dynamic::from(INT::from(r.status)));
    m.insert("body".into(), Dynamic::from(r.body));
    m
}

/// A URL as logs, messages and the audit trail may show it: scheme, host and port, never the
/// path, query, fragment or user info (they often carry keys). A relative Graph path keeps its
/// path, without the query.
pub fn safe_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            // Only where it goes: webhook URLs carry their key in the path (Slack, Teams,
            // Discord) as often as in the query.
            let host = u.host_str().unwrap_or("");
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{host}{port}", u.scheme())
        }
        // Not a URL (a relative Graph path, or garbage): cut at the query.
        Err(_) => url
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_url_drops_query_fragment_and_credentials() {
        assert_eq!(
            safe_url("https://user:pw@hooks.example.test:8443/a/b?code=SECRET#frag"),
            "https://hooks.example.test:8443"
        );
        assert_eq!(
            safe_url("https://hooks.slack.com/services/T000/B000/XXXXSECRET"),
            "https://hooks.slack.com"
        );
        assert_eq!(
            safe_url("groups/x/owners?$select=id&key=k"),
            "groups/x/owners"
        );
    }
}
