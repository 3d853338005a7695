//! JSON batching: `POST /v1.0/$batch` with up to 20 requests, `dependsOn` ordering (424 for a
//! failed dependency), and fault injection per item.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

use crate::errors::GraphError;
use crate::faults;
use crate::graph;
use crate::response::{Body, GraphResponse, RequestCtx};
use crate::state::AppState;

pub const MAX_REQUESTS: usize = 20;

struct Item {
    id: String,
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Value>,
    depends_on: Vec<String>,
}

fn batch_error(message: impl Into<String>) -> GraphError {
    GraphError::new(400, "BadRequest", message)
}

fn parse(body: &[u8]) -> Result<Vec<Item>, GraphError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| batch_error("Invalid batch payload format."))?;
    let requests = v
        .get("requests")
        .and_then(Value::as_array)
        .ok_or_else(|| batch_error("Invalid batch payload format."))?;
    if requests.len() > MAX_REQUESTS {
        return Err(batch_error(format!(
            "The number of requests in the batch exceeds the limit of {MAX_REQUESTS}."
        )));
    }
    let mut items = Vec::with_capacity(requests.len());
    for r in requests {
        let field = |name: &str| r.get(name).and_then(Value::as_str).map(str::to_string);
        let id = field("id")
            .or_else(|| r.get("id").and_then(Value::as_u64).map(|n| n.to_string()))
            .ok_or_else(|| batch_error("Invalid batch payload format: a request has no id."))?;
        let method = field("method")
            .ok_or_else(|| {
                batch_error(format!(
                    "Invalid batch payload format: request {id} has no method."
                ))
            })?
            .to_ascii_uppercase();
        let url = field("url").ok_or_else(|| {
            batch_error(format!(
                "Invalid batch payload format: request {id} has no url."
            ))
        })?;
        let headers: Vec<(String, String)> = r
            .get("headers")
            .and_then(Value::as_object)
            .map(|h| {
                h.iter()
                    .map(|(k, v)| {
                        let v = v
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string());
                        (k.to_ascii_lowercase(), v)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let body = r.get("body").filter(|b| !b.is_null()).cloned();
        if body.is_some() && !headers.iter().any(|(k, _)| k == "content-type") {
            return Err(batch_error(format!(
                "Write request id : {id} does not contain Content-Type header or body."
            )));
        }
        let depends_on = match r.get("dependsOn") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|d| d.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    batch_error("Invalid batch payload format: dependsOn must list ids.")
                })?,
            Some(_) => {
                return Err(batch_error(
                    "Invalid batch payload format: dependsOn must be an array.",
                ))
            }
        };
        items.push(Item {
            id,
            method,
            url,
            headers,
            body,
            depends_on,
        });
    }
    let mut seen = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        if seen.insert(item.id.clone(), i).is_some() {
            return Err(batch_error(format!(
                "Request ids must be unique: '{}' is repeated.",
                item.id
            )));
        }
    }
    for item in &items {
        for d in &item.depends_on {
            if !seen.contains_key(d) {
                return Err(batch_error(format!(
                    "Request '{}' depends on '{d}', which is not in the batch.",
                    item.id
                )));
            }
        }
    }
    Ok(items)
}

/// Serve a `$batch` request (already authenticated).
pub fn run(state: &AppState, ctx: &RequestCtx, body: &[u8]) -> GraphResponse {
    let items = match parse(body) {
        Ok(i) => i,
        Err(e) => return e.into_response(ctx),
    };
    let mut status: HashMap<String, u16> = HashMap::new();
    let mut responses: Vec<Value> = Vec::with_capacity(items.len());
    // Run whatever has its dependencies settled, until nothing moves (a cycle).
    let mut pending: Vec<&Item> = items.iter().collect();
    while !pending.is_empty() {
        let (ready, waiting): (Vec<&Item>, Vec<&Item>) = pending
            .into_iter()
            .partition(|i| i.depends_on.iter().all(|d| status.contains_key(d)));
        if ready.is_empty() {
            return batch_error("The dependsOn references of the batch form a cycle.")
                .into_response(ctx);
        }
        for item in ready {
            let failed_dep = item
                .depends_on
                .iter()
                .any(|d| status.get(d).is_some_and(|s| *s >= 400));
            let item_ctx = RequestCtx {
                request_id: uuid::Uuid::new_v4().to_string(),
                headers: item.headers.clone(),
                ..ctx.clone()
            };
            let resp = if failed_dep {
                GraphError::new(
                    424,
                    "FailedDependency",
                    "The request was not executed because a request it depends on failed.",
                )
                .into_response(&item_ctx)
            } else {
                execute(state, &item_ctx, item)
            };
            status.insert(item.id.clone(), resp.status);
            responses.push(item_json(&item.id, resp));
        }
        pending = waiting;
    }
    GraphResponse::ok(json!({ "responses": responses }))
}

fn execute(state: &AppState, ctx: &RequestCtx, item: &Item) -> GraphResponse {
    let url = item.url.trim();
    if url.starts_with("http://") || url.starts_with("https://") {
        return GraphError::bad_request("Batch request URLs must be relative to the version root.")
            .into_response(ctx);
    }
    let url = url.trim_start_matches('/');
    // Items are relative to the version the batch was posted to.
    let prefix = format!("{}/", ctx.version.segment());
    let url = match url.get(..prefix.len()) {
        Some(p) if p.eq_ignore_ascii_case(&prefix) => &url[prefix.len()..],
        _ => url,
    };
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    if path.trim_matches('/').eq_ignore_ascii_case("$batch") {
        return GraphError::bad_request("A batch request cannot contain another batch.")
            .into_response(ctx);
    }
    if let Some((fault, retry_after)) = state.faults.draw() {
        return faults::fault_error(fault, retry_after).into_response(ctx);
    }
    let body = item
        .body
        .as_ref()
        .map(|b| serde_json::to_vec(b).unwrap_or_default())
        .unwrap_or_default();
    graph::dispatch(state, ctx, &item.method, &format!("/{path}"), query, &body)
}

fn item_json(id: &str, resp: GraphResponse) -> Value {
    let mut headers: BTreeMap<String, Value> = BTreeMap::new();
    for (k, v) in resp.headers {
        headers.insert(k, json!(v));
    }
    let mut m = Map::new();
    m.insert("id".into(), json!(id));
    m.insert("status".into(), json!(resp.status));
    m.insert("headers".into(), json!(headers));
    match resp.body {
        Body::Empty => {}
        Body::Json(v) => {
            m.insert("body".into(), v);
        }
        Body::Text(t) => {
            m.insert("body".into(), json!(t));
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_limits() {
        let reqs: Vec<Value> = (0..21)
            .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/users"}))
            .collect();
        let body = serde_json::to_vec(&json!({"requests": reqs})).unwrap();
        assert!(parse(&body).is_err());
        let body = br#"{"requests":[{"id":"1","method":"PATCH","url":"/users/x","body":{}}]}"#;
        let e = parse(body).err().unwrap();
        assert!(e.message.contains("Content-Type"));
        let body = br#"{"requests":[{"id":"1","method":"GET","url":"/users","dependsOn":["9"]}]}"#;
        assert!(parse(body).is_err());
    }
}
