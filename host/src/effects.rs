//! The host's side of the rule primitives ([`crate::rules::Effects`]): HTTP requests (reqwest,
//! rustls, certificates verified, destinations held to the [`egress`] policy), read-only Graph
//! GETs through the host's [`GraphClient`], and read-only AD searches inside the OUs the host
//! may read.
//!
//! Triggers run on blocking threads; each call here enters the async runtime with
//! `Handle::block_on` (the handle captured when the host started) and is bounded by the time the
//! trigger has left. Logs, errors and the audit trail name a destination as scheme://host:port
//! only: webhook URLs carry their key in the path (Slack, Teams, Discord) or the query.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

use crate::ad::{self, AdConn};
use crate::graph::GraphClient;
use crate::rules::{safe_url, AdFound, EffectError, Effects, HttpRequest, HttpResponse};

pub use crate::egress::Egress;

/// Response bodies larger than this are refused (a webhook answer is small).
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// `ad::search` answers larger than this are refused: narrow the filter.
const MAX_AD_ENTRIES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum EffectsError {
    #[error("cannot build the HTTP client for rule primitives: {0}")]
    Http(String),
}

/// Where `ad::search` may look: the managed OUs and the member search bases (the whole domain
/// when no member search base is configured, as for member lookups).
#[derive(Debug, Clone)]
struct AdScope {
    bases: Vec<String>,
    domain_wide: bool,
}

/// The effects of one host: HTTP always, Graph and AD when given.
pub struct HostEffects {
    handle: Handle,
    http: reqwest::Client,
    egress: Egress,
    graph: Option<GraphClient>,
    ad: Option<(Mutex<AdConn>, AdScope)>,
    /// `[rules.secrets]`, for `secret("name")`.
    secrets: Arc<BTreeMap<String, secrecy::SecretString>>,
}

impl std::fmt::Debug for HostEffects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostEffects")
            .field("graph", &self.graph.is_some())
            .field("ad", &self.ad.as_ref().map(|(_, s)| s))
            .finish_non_exhaustive()
    }
}

impl HostEffects {
    /// HTTP only, to the destinations `egress` allows; `handle` is the runtime the blocking
    /// calls enter.
    pub fn new(handle: Handle, egress: Egress) -> Result<HostEffects, EffectsError> {
        let resolver = egress
            .resolver(Duration::from_secs(10))
            .map_err(|e| EffectsError::Http(e.to_string()))?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("writeback/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            // A redirect is answered to the script as it is: following it would send the body
            // elsewhere, and the client would log the full target URL.
            .redirect(reqwest::redirect::Policy::none())
            // Every address connected to is one the policy checked: a proxy would connect
            // elsewhere on the trigger's behalf.
            .no_proxy()
            .dns_resolver(std::sync::Arc::new(resolver))
            .build()
            .map_err(|e| EffectsError::Http(e.to_string()))?;
        Ok(HostEffects {
            handle,
            http,
            egress,
            graph: None,
            ad: None,
            secrets: Arc::default(),
        })
    }

    /// Lets `secret("name")` read the configured secrets.
    pub fn with_secrets(
        mut self,
        secrets: Arc<BTreeMap<String, secrecy::SecretString>>,
    ) -> HostEffects {
        self.secrets = secrets;
        self
    }

    /// Lets `graph::get` read through `graph` (its token, retries and origin check).
    pub fn with_graph(mut self, graph: GraphClient) -> HostEffects {
        self.graph = Some(graph);
        self
    }

    /// Lets `ad::search` read through `conn`, below `managed_ous` and `member_search_bases`
    /// (empty = the whole domain, as for member lookups).
    pub fn with_ad(
        mut self,
        conn: AdConn,
        managed_ous: &[String],
        member_search_bases: &[String],
    ) -> HostEffects {
        let mut bases = managed_ous.to_vec();
        bases.extend(member_search_bases.iter().cloned());
        self.ad = Some((
            Mutex::new(conn),
            AdScope {
                bases,
                domain_wide: member_search_bases.is_empty(),
            },
        ));
        self
    }

    /// What a sync cycle builds its trigger calls' effects with, when it has calls to
    /// deliver: [`Self::for_host`] over the cycle's Graph client and a clone of its AD
    /// connection.
    pub fn maker<'a>(
        config: &'a crate::config::Config,
        graph: &'a GraphClient,
        conn: AdConn,
    ) -> impl Fn() -> Result<Arc<dyn Effects>, EffectsError> + Sync + 'a {
        move || {
            let e = HostEffects::for_host(Handle::current(), config, graph, &conn)?;
            Ok(Arc::new(e) as Arc<dyn Effects>)
        }
    }

    /// Everything the config gives: HTTP, Graph, AD.
    pub fn for_host(
        handle: Handle,
        config: &crate::config::Config,
        graph: &GraphClient,
        conn: &AdConn,
    ) -> Result<HostEffects, EffectsError> {
        Ok(HostEffects::new(handle, config.rules.egress.clone())?
            .with_secrets(config.rules.secrets.clone())
            .with_graph(graph.clone())
            .with_ad(
                conn.clone(),
                &config.ad.managed_ous,
                &config.ad.member_search_bases,
            ))
    }

    async fn send(&self, req: HttpRequest) -> Result<HttpResponse, EffectError> {
        use EffectError::Refused;
        let url = reqwest::Url::parse(&req.url).map_err(|_| Refused("not a valid URL".into()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused(format!(
                "only http:// and https:// URLs are allowed, not {}:",
                url.scheme()
            )));
        }
        let host = url.host_str().unwrap_or_default();
        if !self.egress.host_allowed(host) {
            return Err(Refused(format!(
                "{} is not in rules.http_allowed_hosts",
                host.trim_matches(['[', ']'])
            )));
        }
        // An address in the URL is not resolved, so the resolver's check does not see it.
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
            self.egress
                .address_allowed(ip)
                .map_err(|e| Refused(e.to_string()))?;
        }
        let method = reqwest::Method::from_bytes(req.method.as_bytes())
            .map_err(|_| Refused(format!("{:?} is not an HTTP method", req.method)))?;
        let mut builder = self.http.request(method, url).timeout(req.timeout);
        let mut has_type = false;
        for (name, value) in &req.headers {
            has_type |= name.eq_ignore_ascii_case("content-type");
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Refused(format!("{name:?} is not a valid header name")))?;
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| Refused(format!("the value of header {name} is not valid")))?;
            builder = builder.header(name, value);
        }
        if let Some(body) = req.body {
            if let (Some(t), false) = (req.content_type, has_type) {
                builder = builder.header(reqwest::header::CONTENT_TYPE, t);
            }
            builder = builder.body(body);
        }
        let mut resp = builder
            .send()
            .await
            .map_err(|e| describe(&e, req.timeout))?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e, req.timeout))? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(EffectError::Failed(format!(
                    "the response body is larger than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// A reqwest error without its URL (which may hold a query string with a key).
fn describe(e: &reqwest::Error, timeout: Duration) -> EffectError {
    if e.is_timeout() {
        return EffectError::TimedOut(timeout);
    }
    let kind = if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "the response could not be read"
    } else {
        "request failed"
    };
    // The innermost cause says what went wrong (refused, DNS, certificate); none carries the URL.
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut last = None;
    while let Some(c) = cause {
        last = Some(c.to_string());
        cause = c.source();
    }
    EffectError::Failed(match last {
        Some(c) => format!("{kind}: {c}"),
        None => kind.to_string(),
    })
}

impl Effects for HostEffects {
    fn secret(&self, name: &str) -> Result<String, EffectError> {
        use secrecy::ExposeSecret;
        self.secrets
            .get(name)
            .map(|v| v.expose_secret().to_string())
            .ok_or_else(|| EffectError::UnknownSecret(name.to_string()))
    }

    fn http(&self, request: HttpRequest) -> Result<HttpResponse, EffectError> {
        let shown = safe_url(&request.url);
        let method = request.method.clone();
        let started = Instant::now();
        let result = self.handle.block_on(self.send(request));
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(r) => tracing::info!(
                target: "writeback::effects",
                method = %method,
                url = %shown,
                status = r.status,
                ms,
                "http request"
            ),
            Err(e) => tracing::warn!(
                target: "writeback::effects",
                method = %method,
                url = %shown,
                ms,
                "http request failed: {e}"
            ),
        }
        result
    }

    fn graph_get(&self, path: &str, timeout: Duration) -> Result<serde_json::Value, EffectError> {
        let graph = self
            .graph
            .as_ref()
            .ok_or(EffectError::Unavailable("Graph"))?;
        check_graph_path(path)?;
        let shown = safe_url(path);
        let result = self.handle.block_on(async {
            match tokio::time::timeout(timeout, graph.get_json(path)).await {
                Ok(r) => r.map_err(|e| EffectError::Failed(e.to_string())),
                Err(_) => Err(EffectError::TimedOut(timeout)),
            }
        });
        tracing::info!(
            target: "writeback::effects",
            path = %shown,
            ok = result.is_ok(),
            "graph get"
        );
        result
    }

    fn ad_search(
        &self,
        base: &str,
        filter: &str,
        attrs: &[String],
        timeout: Duration,
    ) -> Result<Vec<AdFound>, EffectError> {
        let (conn, scope) = self.ad.as_ref().ok_or(EffectError::Unavailable("AD"))?;
        // A search needs `&mut`: each call works on a clone (clones share the LDAP connection).
        let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let result = self.handle.block_on(async {
            let work = async {
                let mut allowed = scope.bases.clone();
                if scope.domain_wide {
                    allowed.push(
                        conn.domain_root()
                            .await
                            .map_err(|e| EffectError::Failed(e.to_string()))?,
                    );
                }
                if ad::dn::parse_dn(base).is_err() {
                    return Err(EffectError::Refused(format!(
                        "{base:?} is not a distinguished name"
                    )));
                }
                if !allowed.iter().any(|b| ad::dn::is_within(base, b)) {
                    return Err(EffectError::Refused(format!(
                        "the search base must be inside the managed OUs or the member search bases ({})",
                        allowed.join("; ")
                    )));
                }
                let wanted: Vec<&str> = attrs.iter().map(String::as_str).collect();
                conn.search(base, ad::Scope::Subtree, filter, &wanted)
                    .await
                    .map_err(|e| EffectError::Failed(e.to_string()))
            };
            match tokio::time::timeout(timeout, work).await {
                Ok(r) => r,
                Err(_) => Err(EffectError::TimedOut(timeout)),
            }
        });
        tracing::info!(
            target: "writeback::effects",
            base,
            ok = result.is_ok(),
            found = result.as_ref().map(Vec::len).unwrap_or(0),
            "ad search"
        );
        let entries = result?;
        if entries.len() > MAX_AD_ENTRIES {
            return Err(EffectError::Refused(format!(
                "{} entries found, more than {MAX_AD_ENTRIES}: narrow the filter",
                entries.len()
            )));
        }
        Ok(entries
            .into_iter()
            .map(|e| AdFound {
                dn: e.dn,
                attrs: e.attrs,
            })
            .collect())
    }
}

/// A `graph::get` path must stay below the Graph base URL: `..` would climb out of `/v1.0` (to
/// beta or another service on the same host) once the URL is resolved.
fn check_graph_path(path: &str) -> Result<(), EffectError> {
    let route = path.split(['?', '#']).next().unwrap_or_default();
    let climbs = route.split(['/', '\\']).any(|seg| {
        let seg = seg.to_ascii_lowercase().replace("%2e", ".");
        seg == ".." || seg == "."
    });
    if climbs || route.contains("://") || route.starts_with("//") {
        return Err(EffectError::Refused(format!(
            "graph::get takes a path below the Graph base URL, not {:?}",
            safe_url(path)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_graph_path;

    #[test]
    fn graph_paths_stay_below_the_base() {
        for ok in [
            "groups/abc",
            "/users?$select=id",
            "groups/a/members?$filter=x eq '..'",
        ] {
            assert!(check_graph_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "../beta/groups",
            "groups/../../beta",
            "%2E%2E/beta",
            "./groups",
            "https://evil.example/x",
            "//evil.example/x",
        ] {
            let e = check_graph_path(bad).unwrap_err();
            assert!(
                matches!(&e, crate::rules::EffectError::Refused(m) if m.contains("below the Graph base URL")),
                "{bad}: {e}"
            );
        }
    }
}
