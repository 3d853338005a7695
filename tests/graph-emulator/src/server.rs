//! The HTTP(S) listener: request-id headers, auth, faults, and routing to the token endpoint,
//! the control endpoint, `$batch` and the Graph handlers (under `/v1.0` and `/beta`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body as AxumBody};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use serde_json::Value;

use crate::auth::{self, Endpoint};
use crate::batch;
use crate::clock::unix_ms;
use crate::control;
use crate::errors::GraphError;
use crate::faults;
use crate::graph;
use crate::response::{Body, GraphResponse, RequestCtx};
use crate::schema::ApiVersion;
use crate::state::AppState;
use crate::urlenc;

/// Request bodies above this are refused (a `$batch` of 20 large PATCHes fits easily).
const MAX_BODY: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS certificate/key: {0}")]
    Tls(std::io::Error),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Listener {
    listener: std::net::TcpListener,
    pub base_url: String,
    tls: Option<(PathBuf, PathBuf)>,
}

/// Bind first so the base URL (with the real port) is known before the state is built.
pub fn bind(addr: SocketAddr, tls: Option<(PathBuf, PathBuf)>) -> Result<Listener, ServeError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    Ok(Listener {
        listener,
        base_url: format!("{scheme}://{local}"),
        tls,
    })
}

/// Serve until SIGTERM/SIGINT. Prints the base URL as the first stdout line.
pub async fn run(listener: Listener, state: Arc<AppState>) -> Result<(), ServeError> {
    let app = Router::new().fallback(handle).with_state(state);
    let handle = axum_server::Handle::new();
    let shutdown = handle.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        shutdown.graceful_shutdown(Some(Duration::from_secs(2)));
    });

    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", listener.base_url)?;
    out.flush()?;
    drop(out);
    tracing::info!(base_url = %listener.base_url, "listening");

    let service = app.into_make_service();
    match listener.tls {
        Some((cert, key)) => {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(ServeError::Tls)?;
            axum_server::from_tcp_rustls(listener.listener, config)?
                .handle(handle)
                .serve(service)
                .await?;
        }
        None => {
            axum_server::from_tcp(listener.listener)?
                .handle(handle)
                .serve(service)
                .await?;
        }
    }
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn json_response(status: u16, body: &Value) -> Response {
    let mut r = Response::new(AxumBody::from(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn to_http(resp: GraphResponse, ctx: &RequestCtx) -> Response {
    let body = match resp.body {
        Body::Empty => AxumBody::empty(),
        Body::Json(v) => AxumBody::from(serde_json::to_vec(&v).unwrap_or_default()),
        Body::Text(t) => AxumBody::from(t),
    };
    let mut r = Response::new(body);
    *r.status_mut() =
        StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    for (k, v) in resp.headers.iter().chain(
        [
            ("request-id".to_string(), ctx.request_id.clone()),
            (
                "client-request-id".to_string(),
                ctx.client_request_id.clone(),
            ),
        ]
        .iter(),
    ) {
        if let (Ok(k), Ok(v)) = (
            HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) {
            h.append(k, v);
        }
    }
    r
}

async fn handle(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str().to_string();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return json_response(413, &serde_json::json!({"error": "request body too large"}))
        }
    };
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| urlenc::decode(s, false))
        .collect();
    let low: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let low: Vec<&str> = low.iter().map(String::as_str).collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };

    let started = std::time::Instant::now();
    let response = match (method.as_str(), &low[..]) {
        (_, ["_emulator", rest @ ..]) => {
            let (status, v) = control::handle(&state, &method, rest, &body);
            json_response(status, &v)
        }
        ("POST", [_, "oauth2", "v2.0", "token"]) | ("POST", [_, "oauth2", "token"]) => {
            let endpoint = if low.len() == 4 {
                Endpoint::V2
            } else {
                Endpoint::V1
            };
            let (status, v) =
                auth::token(&state, &segs[0], endpoint, header("authorization"), &body);
            json_response(status, &v)
        }
        ("GET", [_, "v2.0", ".well-known", "openid-configuration"]) => {
            let (status, v) = auth::openid_configuration(&state, &segs[0], true);
            json_response(status, &v)
        }
        ("GET", [_, ".well-known", "openid-configuration"]) => {
            let (status, v) = auth::openid_configuration(&state, &segs[0], false);
            json_response(status, &v)
        }
        (_, [first, ..]) if ApiVersion::from_segment(first).is_some() => {
            let version = ApiVersion::from_segment(first).unwrap_or(ApiVersion::V1);
            graph_request(
                &state,
                version,
                &method,
                &path,
                &query,
                headers.clone(),
                &body,
            )
            .await
        }
        _ => {
            let ctx = new_ctx(&state, headers.clone(), ApiVersion::V1);
            let resp = GraphError::new(
                404,
                "NotFound",
                format!("No route for {path}. Graph is served under /v1.0 and /beta."),
            )
            .into_response(&ctx);
            to_http(resp, &ctx)
        }
    };
    tracing::debug!(%method, %path, status = response.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
    response
}

fn new_ctx(state: &AppState, headers: Vec<(String, String)>, version: ApiVersion) -> RequestCtx {
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_request_id = headers
        .iter()
        .find(|(k, _)| k == "client-request-id")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| request_id.clone());
    RequestCtx {
        request_id,
        client_request_id,
        now: state.clock.now(),
        base_url: state.base_url.clone(),
        headers,
        version,
        roles: Vec::new(),
    }
}

async fn graph_request(
    state: &Arc<AppState>,
    version: ApiVersion,
    method: &str,
    path: &str,
    query: &str,
    headers: Vec<(String, String)>,
    body: &[u8],
) -> Response {
    let mut ctx = new_ctx(state, headers, version);
    let latency = state.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let now_unix = unix_ms(ctx.now) / 1000;
    let tenant_id = state.store().tenant_id.clone();
    let app_id = match state
        .signer
        .validate(ctx.header("authorization"), &tenant_id, now_unix)
    {
        Ok(caller) => {
            ctx.roles = caller.roles;
            caller.app_id
        }
        Err(e) => return to_http(e.into_response(&ctx), &ctx),
    };
    // Strip the version segment ("/v1.0", "/beta").
    let trimmed = path.trim_start_matches('/');
    let rest = trimmed.find('/').map_or("", |i| &trimmed[i..]);
    let is_batch = rest.trim_matches('/').eq_ignore_ascii_case("$batch")
        || rest.trim_matches('/').eq_ignore_ascii_case("%24batch");
    if is_batch {
        let resp = if method.eq_ignore_ascii_case("POST") {
            batch::run(state, &ctx, body)
        } else {
            GraphError::method_not_allowed().into_response(&ctx)
        };
        return to_http(resp, &ctx);
    }
    if let Some((fault, retry_after)) = state.faults.draw() {
        let mut err = faults::fault_error(fault, retry_after);
        if fault == faults::Fault::Throttled {
            err = err.with_header(
                "x-ms-throttle-scope",
                format!("Tenant_Application/ReadWrite/{app_id}/{tenant_id}"),
            );
        }
        return to_http(err.into_response(&ctx), &ctx);
    }
    let resp = graph::dispatch(state, &ctx, method, rest, query, body);
    to_http(resp, &ctx)
}
