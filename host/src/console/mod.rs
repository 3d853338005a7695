//! The read-only web console (`[console] enabled`), served with the metrics on `[daemon]
//! listen`: the daemon at a glance, held deletes and removals, quarantined groups, the audit
//! trail and `explain` for one group, from the same code as the CLI verbs.
//!
//! Read-only by construction: every route is a GET that opens the state file as `writeback
//! status` does and renders what it reads. Server-rendered HTML without a script; the one
//! stylesheet comes from the binary, and the Content-Security-Policy allows nothing else.
//! A credential (bearer token, or the password of basic auth) is asked of every request when
//! one is configured, and `config` refuses a non-loopback address without one.

mod chart;
pub mod html;
mod pages;

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::config::Config;
use crate::inspect::audit::{AuditError, AuditOptions, Selection};
use crate::inspect::explain::ExplainError;
use crate::inspect::{self, InspectError};
use crate::metrics::Monitor;
use crate::rules::RuleSet;
use crate::setup::{self, StateLock};
use crate::state::{ObjectKind, StateError, Store};
use html::View;

/// Nothing but the console's own stylesheet, no script, no frames, forms only to itself.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLE: &str = include_str!("style.css");

/// Runs drawn in the overview's chart.
const CHART_RUNS: usize = 60;

/// Audit events shown when the form does not say, and at most.
const AUDIT_DEFAULT: usize = 100;
const AUDIT_MAX: usize = 1_000;

/// Quarantined groups whose names are looked up in the cache (the rest show their ids).
const NAMED_MAX: usize = 200;

/// Why a page could not be made; shown on the page.
#[derive(Debug, thiserror::Error)]
enum ConsoleError {
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Explain(Box<ExplainError>),
    #[error("the state lock cannot be checked: {0}")]
    Lock(#[from] crate::setup::LockError),
    #[error("the rules are not loaded yet: the daemon is starting")]
    NoRules,
    #[error("the page could not be made: {0}")]
    Task(String),
}

impl From<ExplainError> for ConsoleError {
    fn from(e: ExplainError) -> Self {
        ConsoleError::Explain(Box::new(e))
    }
}

/// What the console serves from; cheap to clone (one per request).
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    /// The rules the daemon runs now, for `explain` (set at start and at each reload).
    rules: ArcSwapOption<RuleSet>,
    monitor: Monitor,
    /// For `explain`, whose AD connection is driven from a blocking thread.
    runtime: tokio::runtime::Handle,
}

impl Console {
    pub fn new(config: &Config, monitor: Monitor) -> Console {
        Console {
            inner: Arc::new(Inner {
                config: config.clone(),
                rules: ArcSwapOption::empty(),
                monitor,
                runtime: tokio::runtime::Handle::current(),
            }),
        }
    }

    /// The daemon loaded (or reloaded) `rules`: `explain` uses them from now on.
    pub fn rules_loaded(&self, rules: Arc<RuleSet>) {
        self.inner.rules.store(Some(rules));
    }

    /// The console's routes, behind the credential check and the security headers.
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/", get(|| async { Redirect::to(View::Overview.path()) }))
            .route(View::Overview.path(), get(overview))
            .route(View::Held.path(), get(held))
            .route(View::Quarantine.path(), get(quarantine))
            .route(View::Audit.path(), get(audit))
            .route(View::Explain.path(), get(explain))
            .route("/console/style.css", get(style))
            .layer(axum::middleware::from_fn_with_state(self.clone(), guard))
            .with_state(self.clone())
    }

    /// Runs `make` with the state file open, on a blocking thread (SQLite reads block).
    async fn read(
        &self,
        view: View,
        make: impl FnOnce(&Console, &Store, OffsetDateTime) -> Result<String, ConsoleError>
            + Send
            + 'static,
    ) -> Response {
        let me = self.clone();
        let made = tokio::task::spawn_blocking(move || {
            let store = inspect::open_existing(&me.inner.config.state_path)?;
            make(&me, &store, OffsetDateTime::now_utc())
        })
        .await
        .unwrap_or_else(|e| Err(ConsoleError::Task(e.to_string())));
        respond(view, made)
    }

    fn status(
        &self,
        store: &Store,
        now: OffsetDateTime,
    ) -> Result<inspect::status::Status, ConsoleError> {
        let config = &self.inner.config;
        let busy = StateLock::is_held(config)?;
        let on_disk =
            inspect::status::rules_hash(&crate::watch::fingerprint(&setup::rule_roots(config)));
        Ok(inspect::status::gather(store, busy, on_disk, now)?)
    }
}

fn respond(view: View, made: Result<String, ConsoleError>) -> Response {
    match made {
        Ok(body) => axum::response::Html(body).into_response(),
        // Nothing synced yet is a state, not a failure.
        Err(ConsoleError::Inspect(e @ InspectError::NeverSynced { .. })) => {
            axum::response::Html(pages::unavailable(view, &e.to_string())).into_response()
        }
        Err(e) => {
            tracing::warn!(page = view.path(), "console: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::response::Html(pages::unavailable(view, &e.to_string())),
            )
                .into_response()
        }
    }
}

/// The credential check, then the headers every console response carries.
async fn guard(State(c): State<Console>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let mut response = match &c.inner.config.console.credential {
        Some(want) if !authorized(given, want) => (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"Writeback console\", charset=\"UTF-8\"",
            )],
            "The Writeback console asks for its credential: a bearer token, or the password of basic auth (any user name).\n",
        )
            .into_response(),
        _ => next.run(request).await,
    };
    let h = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// `Authorization: Bearer <credential>` or `Basic <base64(any user:credential)>`. Compared
/// as digests, so the time taken says nothing of how much of it matched. An empty credential
/// (not read) lets nobody in.
fn authorized(given: Option<&str>, want: &SecretString) -> bool {
    use base64::Engine as _;
    let want = want.expose_secret();
    let Some(given) = given.map(str::trim) else {
        return false;
    };
    if want.is_empty() {
        return false;
    }
    let (scheme, value) = given.split_once(' ').unwrap_or((given, ""));
    let secret = if scheme.eq_ignore_ascii_case("bearer") {
        value.trim().as_bytes().to_vec()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(value.trim()) else {
            return false;
        };
        match decoded.iter().position(|b| *b == b':') {
            Some(at) => decoded.get(at + 1..).unwrap_or_default().to_vec(),
            None => return false,
        }
    } else {
        return false;
    };
    Sha256::digest(&secret) == Sha256::digest(want.as_bytes())
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

async fn overview(State(c): State<Console>) -> Response {
    c.read(View::Overview, |c, store, now| {
        let s = c.status(store, now)?;
        let (ready, readiness) = c.inner.monitor.readiness_now();
        let live = pages::Live {
            ready,
            readiness,
            runs: store.recent_runs(CHART_RUNS)?,
        };
        Ok(pages::overview(&s, &live, now))
    })
    .await
}

async fn held(State(c): State<Console>) -> Response {
    c.read(View::Held, |c, store, now| {
        Ok(pages::held(&c.status(store, now)?))
    })
    .await
}

async fn quarantine(State(c): State<Console>) -> Response {
    c.read(View::Quarantine, |c, store, now| {
        let s = c.status(store, now)?;
        let mut names = BTreeMap::new();
        for q in s.quarantine.iter().take(NAMED_MAX) {
            let name = store
                .load_object(ObjectKind::Group, &q.cloud_id)?
                .and_then(|g| g.str_prop("displayName").map(str::to_string));
            if let Some(n) = name {
                names.insert(q.cloud_id.clone(), n);
            }
        }
        Ok(pages::quarantine(&s, &names, now))
    })
    .await
}

/// The audit form's fields; empty ones are not filters.
#[derive(Debug, Default, Deserialize)]
struct AuditForm {
    group: Option<String>,
    dn_under: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
}

fn given(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

async fn audit(State(c): State<Console>, Query(form): Query<AuditForm>) -> Response {
    c.read(View::Audit, move |_, store, now| {
        let limit = match given(form.limit) {
            None => Ok(AUDIT_DEFAULT),
            Some(l) => match l.trim().parse::<usize>() {
                Ok(n) if (1..=AUDIT_MAX).contains(&n) => Ok(n),
                _ => Err(format!(
                    "Newest {}: give a number of events from 1 to {AUDIT_MAX}",
                    crate::rules::quoted(&l)
                )),
            },
        };
        let opts = AuditOptions {
            group: given(form.group),
            dn_under: given(form.dn_under),
            since: given(form.since),
            until: given(form.until),
            limit: None,
            json_lines: false,
        };
        let mut notes = Vec::new();
        let shown = limit.clone().unwrap_or(AUDIT_DEFAULT);
        let lines = limit.and_then(|limit| {
            Selection::new(store, &opts, now, &mut notes)
                .and_then(|s| s.newest(store, limit))
                .map_err(|e| e.to_string())
        });
        let notes = String::from_utf8_lossy(&notes);
        Ok(pages::audit(
            &opts,
            &notes,
            lines.as_deref().map_err(String::clone),
            shown,
        ))
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
struct ExplainForm {
    group: Option<String>,
}

/// `writeback explain` for one group: the rules the daemon runs now, the state, and AD read
/// on a connection of its own (closed with the page).
async fn explain(State(c): State<Console>, Query(form): Query<ExplainForm>) -> Response {
    let Some(group) = given(form.group) else {
        return axum::response::Html(pages::explain("", None)).into_response();
    };
    let me = c.clone();
    let query = group.clone();
    let made = tokio::task::spawn_blocking(move || {
        let rules = me.inner.rules.load_full().ok_or(ConsoleError::NoRules)?;
        let config = &me.inner.config;
        let store = inspect::open_existing(&config.state_path)?;
        me.inner.runtime.block_on(async {
            let mut conn = setup::ad_connection(config).await;
            let conn = conn.as_mut().map_err(|e| &*e);
            Ok(inspect::explain::explain(config, &rules, &store, conn, &query).await?)
        })
    })
    .await
    .unwrap_or_else(|e| Err(ConsoleError::Task(e.to_string())));
    let body = match &made {
        Ok(x) => pages::explain(&group, Some(Ok(x))),
        Err(ConsoleError::Inspect(e @ InspectError::NeverSynced { .. })) => {
            pages::explain(&group, Some(Err(e.to_string())))
        }
        Err(e) => {
            tracing::warn!(page = View::Explain.path(), "console: {e}");
            pages::explain(&group, Some(Err(e.to_string())))
        }
    };
    axum::response::Html(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn basic(user_pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    #[test]
    fn a_bearer_token_or_the_basic_password_lets_in_nothing_else_does() {
        let want = SecretString::from("s3cret:with colon");
        assert!(authorized(Some("Bearer s3cret:with colon"), &want));
        assert!(authorized(Some("bearer   s3cret:with colon "), &want));
        assert!(authorized(Some(&basic("ops:s3cret:with colon")), &want));
        assert!(authorized(Some(&basic(":s3cret:with colon")), &want));
        for wrong in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer s3cret"),
            Some("s3cret:with colon"),
            Some("Basic !!notbase64"),
            Some(&*basic("s3cret:with colon")),
            Some(&*basic("ops:wrong")),
            Some("Digest s3cret:with colon"),
        ] {
            assert!(!authorized(wrong, &want), "{wrong:?}");
        }
        let unread = SecretString::from("");
        assert!(!authorized(Some("Bearer "), &unread));
        assert!(!authorized(Some(&basic("x:")), &unread));
    }
}
