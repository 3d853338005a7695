//! The owners of groups (`GET /groups/{id}/owners`), read only for the groups whose rule writes
//! them to AD: Graph's delta does not carry owners. Twenty groups per JSON batch (`POST
//! /$batch`, Graph's limit), so a first sync of many such groups costs one round trip per
//! twenty; an item the batch could not answer (throttled, a second page) is read on its own,
//! with the client's retries.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{json, Value};

use super::api::GraphApi;
use super::error::GraphError;
use super::model::MemberRef;

/// Requests in one JSON batch (Graph refuses more).
const BATCH: usize = 20;

/// The owners of each group in `ids`; `None` for a group Graph no longer has (404).
pub async fn read(
    client: &impl GraphApi,
    ids: &[String],
) -> Result<BTreeMap<String, Option<Vec<MemberRef>>>, GraphError> {
    let mut out = BTreeMap::new();
    for chunk in ids.chunks(BATCH) {
        let requests: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| json!({"id": i.to_string(), "method": "GET", "url": path(id)}))
            .collect();
        let body = json!({ "requests": requests });
        let answers = match client.send_json(Method::POST, "$batch", Some(&body)).await {
            Ok(v) => v,
            // A batch the service would not take is read one group at a time.
            Err(e) if e.status().is_some_and(|s| s >= 500 || s == 429) => Value::Null,
            Err(e) => return Err(e),
        };
        let mut answered = answers_by_index(&answers, chunk.len());
        for (i, id) in chunk.iter().enumerate() {
            let owners = match answered.remove(&i) {
                Some(Answer::Owners(list)) => Some(list),
                Some(Answer::Gone) => None,
                Some(Answer::Again) | None => alone(client, id).await?,
            };
            out.insert(id.clone(), owners);
        }
    }
    Ok(out)
}

fn path(id: &str) -> String {
    format!("/groups/{id}/owners?$select=id")
}

/// What the batch said for one group.
#[derive(Debug, PartialEq)]
enum Answer {
    Owners(Vec<MemberRef>),
    Gone,
    /// Read it on its own: throttled, failed, or more than one page.
    Again,
}

/// The batch's answers by request index (Graph answers in any order).
fn answers_by_index(answers: &Value, asked: usize) -> BTreeMap<usize, Answer> {
    let mut out = BTreeMap::new();
    let Some(items) = answers.get("responses").and_then(Value::as_array) else {
        return out;
    };
    for item in items {
        let Some(i) = item
            .get("id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|i| *i < asked)
        else {
            continue;
        };
        let status = item.get("status").and_then(Value::as_u64).unwrap_or(0);
        let body = item.get("body");
        let answer = match status {
            200 if body.and_then(|b| b.get("@odata.nextLink")).is_none() => body
                .and_then(|b| b.get("value"))
                .and_then(|v| serde_json::from_value::<Vec<MemberRef>>(v.clone()).ok())
                .map_or(Answer::Again, Answer::Owners),
            404 => Answer::Gone,
            _ => Answer::Again,
        };
        out.insert(i, answer);
    }
    out
}

/// One group's owners on their own, every page.
async fn alone(client: &impl GraphApi, id: &str) -> Result<Option<Vec<MemberRef>>, GraphError> {
    match client.get_all_pages(&path(id)).await {
        Ok(items) => items
            .into_iter()
            .map(|v| {
                serde_json::from_value::<MemberRef>(v).map_err(|e| {
                    GraphError::InvalidResponse(format!("an owner of group {id}: {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Err(e) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_answers_are_matched_by_id_whatever_their_order() {
        let answers = json!({"responses": [
            {"id": "2", "status": 404, "body": {"error": {"code": "Request_ResourceNotFound"}}},
            {"id": "0", "status": 200, "body": {"value": [
                {"@odata.type": "#microsoft.graph.user", "id": "u1"}]}},
            {"id": "1", "status": 429, "headers": {"Retry-After": "1"}},
            {"id": "3", "status": 200, "body": {"value": [], "@odata.nextLink": "https://x/next"}},
            {"id": "9", "status": 200, "body": {"value": []}},
            {"id": "4", "status": 200, "body": {"value": [{"id": 7}]}}
        ]});
        let got = answers_by_index(&answers, 6);
        assert_eq!(
            got.get(&0),
            Some(&Answer::Owners(vec![MemberRef {
                odata_type: "#microsoft.graph.user".into(),
                id: "u1".into()
            }]))
        );
        assert_eq!(got.get(&1), Some(&Answer::Again));
        assert_eq!(got.get(&2), Some(&Answer::Gone));
        assert_eq!(got.get(&3), Some(&Answer::Again), "a second page");
        assert_eq!(got.get(&4), Some(&Answer::Again), "a malformed owner");
        assert_eq!(got.get(&5), None, "not answered");
        assert!(!got.contains_key(&9), "an id that was not asked");
        assert!(answers_by_index(&json!({"error": 1}), 3).is_empty());
    }
}
