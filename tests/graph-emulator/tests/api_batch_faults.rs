//! `$batch` and fault injection.

mod api_common;

use api_common::*;
use serde_json::{json, Value};

fn by_id(body: &Value) -> std::collections::BTreeMap<String, Value> {
    body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

#[tokio::test]
async fn batch_runs_items_with_depends_on_and_424() {
    let emu = start(&[]);
    let r = emu
        .post(
            "$batch",
            json!({"requests": [
                {"id": "1", "method": "GET", "url": "/users?$select=id&$top=2"},
                {"id": "2", "method": "GET", "url": format!("groups/{G_HR}")},
                {"id": "3", "method": "GET", "url": "/groups/00000000-0000-0000-0000-00000000dead"},
                {"id": "4", "method": "GET", "url": "/groups", "dependsOn": ["3"]},
                {"id": "5", "method": "PATCH", "url": format!("/groups/{G_HR}"),
                 "headers": {"Content-Type": "application/json"}, "body": {"description": "via batch"},
                 "dependsOn": ["2"]},
                {"id": "6", "method": "GET", "url": format!("/groups/{G_HR}?$select=description"), "dependsOn": ["5"]},
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let items = by_id(&r.body);
    assert_eq!(items.len(), 6);
    assert_eq!(items["1"]["status"], 200);
    assert_eq!(items["1"]["body"]["value"].as_array().unwrap().len(), 2);
    assert_eq!(items["2"]["body"]["displayName"], "sg-HR");
    assert_eq!(items["3"]["status"], 404);
    assert_eq!(
        items["3"]["body"]["error"]["code"],
        "Request_ResourceNotFound"
    );
    assert_eq!(items["4"]["status"], 424);
    assert_eq!(items["5"]["status"], 204);
    assert_eq!(items["6"]["body"]["description"], "via batch");

    // More than 20 requests.
    let reqs: Vec<Value> = (0..21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/users"}))
        .collect();
    let r = emu.post("$batch", json!({"requests": reqs})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    // Body without Content-Type.
    let r = emu
        .post("$batch", json!({"requests": [{"id": "1", "method": "PATCH", "url": format!("/groups/{G_HR}"), "body": {}}]}))
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn batch_items_are_throttled_one_by_one() {
    let emu = start(&["--retry-after", "7"]);
    emu.control("faults", Some(json!({"next429": 1}))).await;
    let r = emu
        .post(
            "$batch",
            json!({"requests": [
                {"id": "a", "method": "GET", "url": "/users"},
                {"id": "b", "method": "GET", "url": "/groups"},
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "the batch itself succeeds: {}", r.body);
    let items = by_id(&r.body);
    assert_eq!(items["a"]["status"], 429);
    assert_eq!(items["a"]["headers"]["Retry-After"], "7");
    assert_eq!(items["a"]["body"]["error"]["code"], "TooManyRequests");
    assert_eq!(items["b"]["status"], 200);
}

#[tokio::test]
async fn throttling_with_retry_after_is_deterministic() {
    let run = || async {
        let emu = start(&[
            "--fault-429-rate",
            "0.5",
            "--seed",
            "42",
            "--retry-after",
            "3",
        ]);
        let mut statuses = Vec::new();
        for _ in 0..20 {
            let r = emu.get("users").await;
            if r.status == 429 {
                assert_eq!(r.header("Retry-After"), Some("3"));
                assert_eq!(
                    r.header("x-ms-throttle-scope"),
                    Some(format!("Tenant_Application/ReadWrite/{CLIENT_ID}/{TENANT_ID}").as_str())
                );
                assert_eq!(r.body["error"]["code"], "TooManyRequests");
                assert_eq!(r.body["error"]["message"], "Please retry again later.");
                assert_eq!(r.body["error"]["innerError"]["code"], "429");
                assert_eq!(r.body["error"]["innerError"]["status"], "429");
                assert_eq!(
                    r.body["error"]["innerError"]["message"],
                    "Please retry after"
                );
            } else {
                assert_eq!(r.status, 200);
            }
            statuses.push(r.status);
        }
        // The control and token endpoints are never faulted.
        for _ in 0..10 {
            emu.control("health", None).await;
            emu.fresh_token().await;
        }
        let stats = emu.control("state", None).await["_emulator"].clone();
        (statuses, stats)
    };
    let (a, stats) = run().await;
    let (b, _) = run().await;
    assert_eq!(a, b, "same seed, same faults");
    let throttled = a.iter().filter(|s| **s == 429).count();
    assert!((3..=17).contains(&throttled), "{a:?}");
    assert_eq!(stats["faultsInjected"], throttled);
    assert_eq!(stats["requests"], 20);
}

#[tokio::test]
async fn service_unavailable_and_latency() {
    let emu = start(&[]);
    emu.control("faults", Some(json!({"next503": 1, "latencyMs": 150})))
        .await;
    let t = std::time::Instant::now();
    let r = emu.get("groups").await;
    assert!(t.elapsed() >= std::time::Duration::from_millis(150));
    r.graph_error(503, "serviceNotAvailable");
    assert!(r.header("Retry-After").is_some());
    assert_eq!(emu.get("groups").await.status, 200);
    emu.control("faults", Some(json!({"rate5xx": 1.0, "latencyMs": 0})))
        .await;
    let r = emu.get("groups").await;
    assert!([503, 504].contains(&r.status), "{}", r.status);
    let cfg = emu.control("faults", None).await;
    assert_eq!(cfg["rate5xx"], 1.0);
}
