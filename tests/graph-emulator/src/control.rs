//! The emulator's own control endpoint under `/_emulator/` (no auth, never faulted): faults,
//! clock, delta resets, paging settings, state dump, tenant replacement.

use std::time::Duration;

use serde_json::{json, Value};

use crate::clock::{format_graph, unix_ms};
use crate::faults::FaultConfig;
use crate::state::{AppState, Settings};
use crate::store::Kind;
use crate::tenant;

fn error(status: u16, message: impl Into<String>) -> (u16, Value) {
    (status, json!({"error": message.into()}))
}

fn body_json(body: &[u8]) -> Result<Value, (u16, Value)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| error(400, format!("body is not JSON: {e}")))
}

/// Merge the keys of `patch` into `current` (a partial update), then read it back.
fn merge<T: serde::Serialize + serde::de::DeserializeOwned>(
    current: &T,
    patch: &Value,
) -> Result<T, (u16, Value)> {
    let mut v = serde_json::to_value(current).map_err(|e| error(500, e.to_string()))?;
    if let (Some(dst), Some(src)) = (v.as_object_mut(), patch.as_object()) {
        for (k, x) in src {
            dst.insert(k.clone(), x.clone());
        }
    } else {
        return Err(error(400, "body must be a JSON object"));
    }
    serde_json::from_value(v).map_err(|e| error(400, e.to_string()))
}

/// Serve `/_emulator/<segments>`.
pub fn handle(state: &AppState, method: &str, segs: &[&str], body: &[u8]) -> (u16, Value) {
    match run(state, method, segs, body) {
        Ok(v) => v,
        Err(e) => e,
    }
}

fn run(
    state: &AppState,
    method: &str,
    segs: &[&str],
    body: &[u8],
) -> Result<(u16, Value), (u16, Value)> {
    let write = matches!(method, "POST" | "PUT" | "PATCH");
    Ok(match (method, segs) {
        ("GET", ["health"]) => (200, json!({"status": "ok"})),
        ("GET", ["faults"]) => (200, json!(state.faults.config())),
        (_, ["faults"]) if write => {
            let cfg: FaultConfig = merge(&state.faults.config(), &body_json(body)?)?;
            state.faults.set(cfg.clone());
            (200, json!(cfg))
        }
        ("GET", ["settings"]) => (200, json!(state.settings())),
        (_, ["settings"]) if write => {
            let s: Settings = merge(&state.settings(), &body_json(body)?)?;
            *state.settings.lock().unwrap_or_else(|e| e.into_inner()) = s.clone();
            (200, json!(s))
        }
        ("GET", ["roles"]) => (200, json!({"roles": state.signer.roles()})),
        ("PUT" | "POST", ["roles"]) => {
            // An admin granting (or revoking) application permissions: tokens issued from now
            // on carry exactly these.
            let b = body_json(body)?;
            let roles: Vec<String> = b
                .get("roles")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().map(|r| r.as_str().map(str::to_string)).collect())
                .ok_or_else(|| error(400, "expected {\"roles\": [\"Permission.Name\", ...]}"))?;
            state.signer.set_roles(roles.clone());
            (200, json!({"roles": roles}))
        }
        ("GET", ["clock"]) => (200, clock(state)),
        ("POST", ["clock", "advance"]) => {
            let b = body_json(body)?;
            let secs = b
                .get("seconds")
                .and_then(Value::as_f64)
                .filter(|s| *s >= 0.0 && s.is_finite())
                .ok_or_else(|| error(400, "expected {\"seconds\": N} with N >= 0"))?;
            state.clock.advance(Duration::from_secs_f64(secs));
            (200, clock(state))
        }
        ("POST", ["delta", "reset"]) => {
            let b = body_json(body)?;
            let count = b.get("count").and_then(Value::as_u64).unwrap_or(1);
            state.delta_control().force_reset = count.min(u32::MAX as u64) as u32;
            (200, json!({"forceReset": count}))
        }
        ("POST", ["delta", "invalidate"]) => {
            let now = unix_ms(state.clock.now());
            state.delta_control().invalid_before_ms = now;
            (
                200,
                json!({"invalidBefore": format_graph(state.clock.now())}),
            )
        }
        ("GET", ["state"]) => {
            let store = state.store();
            let mut dump = tenant::dump(&store);
            dump["_emulator"] = json!({
                "changeLogHead": store.head(),
                "users": store.count(Kind::User),
                "groups": store.count(Kind::Group),
                "devices": store.count(Kind::Device),
                "requests": state.faults.requests(),
                "faultsInjected": state.faults.injected(),
                "now": format_graph(state.clock.now()),
            });
            (200, dump)
        }
        ("POST" | "PUT", ["tenant"]) => {
            let t = body_json(body)?;
            let store =
                tenant::load(&t, state.clock.now()).map_err(|e| error(400, e.to_string()))?;
            state.replace_store(store);
            (200, json!({"status": "replaced"}))
        }
        _ => {
            return Err(error(
                404,
                format!("no control route {method} /_emulator/{}", segs.join("/")),
            ))
        }
    })
}

fn clock(state: &AppState) -> Value {
    let now = state.clock.now();
    json!({"now": format_graph(now), "unixMs": unix_ms(now)})
}
