//! `[daemon] listen` on the test bed: `/metrics` scraped over HTTP after a cycle that created
//! groups and read with Prometheus' own Python parser (`prometheus_client`, installed into the
//! repository's `.venv` by tests/conformance/run.sh), `/healthz`, and `/readyz` before and
//! while Graph fails every request (the emulator's fault injection).

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use writeback_integration::harness::{
    free_port, new_id, security_group, workspace_root, writeback_bin, Bed, CLIENT_SECRET,
};

use writeback_integration::eventually;

/// GET `url`: the status and body, or status 0 and the error when nothing answers.
async fn get(url: &str) -> (u16, String) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client");
    match http.get(url).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// Reads Prometheus text with `prometheus_client.parser.text_string_to_metric_families`, run
/// by the repository's `.venv` python: families as JSON (name, type, help, samples).
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({
        "name": f.name,
        "type": f.type,
        "help": f.documentation,
        "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples],
    })
json.dump(out, sys.stdout)
"#;

fn venv_python() -> PathBuf {
    let python = workspace_root().join(".venv/bin/python");
    let hint = "run tests/conformance/run.sh (or make test) to create it";
    assert!(
        python.is_file(),
        "{} not found: the metrics test reads /metrics with the Python prometheus_client parser from the repository's .venv; {hint}",
        python.display()
    );
    let out = Command::new(&python)
        .args(["-c", "import prometheus_client.parser"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "{} has no prometheus_client ({}); {hint}",
        python.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    python
}

/// The families of a scrape, as the parser read them (it fails on malformed text).
fn parse(python: &Path, text: &str) -> Vec<Value> {
    use std::io::Write;
    let mut child = Command::new(python)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the parser");
    child
        .stdin
        .take()
        .expect("parser stdin")
        .write_all(text.as_bytes())
        .expect("feed the parser");
    let out = child.wait_with_output().expect("parser output");
    assert!(
        out.status.success(),
        "prometheus_client did not parse /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("parser JSON");
    v.as_array().cloned().unwrap_or_default()
}

/// The value of the sample `name` whose labels include `labels`, summed over the matches
/// (`None` when there is none).
fn sample(families: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for s in families
        .iter()
        .flat_map(|f| f["samples"].as_array().cloned().unwrap_or_default())
    {
        if s["name"] != name {
            continue;
        }
        if labels.iter().all(|(k, v)| s["labels"][*k] == *v) {
            *found.get_or_insert(0.0) += s["value"].as_f64().unwrap_or(f64::NAN);
        }
    }
    found
}

async fn scrape(python: &Path, base: &str) -> Vec<Value> {
    let (status, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200, "/metrics: {text}");
    parse(python, &text)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[tokio::test]
async fn metrics_health_and_readiness_of_a_running_daemon() {
    // Before the bed: a missing parser fails the test at once, with what to run.
    let python = venv_python();
    let mut bed = Bed::new("wb-metrics", 2).await;
    bed.create_default_containers().await;
    let users = bed.synced_users();
    let members: Vec<String> = bed.users.iter().map(|u| u.cloud_id.clone()).collect();
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    let ids: Vec<String> = (0..3).map(|_| new_id()).collect();
    let groups = ids
        .iter()
        .enumerate()
        .map(|(i, id)| security_group(id, &format!("Metered {i}"), &members))
        .collect();
    bed.seed(users, groups, &[]);
    let port = free_port();
    bed.write_config(
        None,
        // Two retries: a pair of 429s is retried through, a 503 storm fails cycles fast.
        "client_secret_env = \"WRITEBACK_TEST_GRAPH_SECRET\"\nmax_retries = 2",
        &format!(
            "[daemon]\npoll_interval_secs = 1\nreconcile_interval_secs = 0\nlisten = \"127.0.0.1:{port}\"\nready_within_polls = 2\n"
        ),
    );
    let started = unix_now();
    let mut d = bed.start_daemon();
    let base = format!("http://127.0.0.1:{port}");

    // 1. Ready once the first cycle ran; the groups are in AD and counted.
    eventually!(
        Duration::from_secs(40),
        format!("/readyz 200 (log:\n{})", d.log_text()),
        get(&format!("{base}/readyz")).await.0 == 200
    );
    assert_eq!(bed.groups().await.len(), 3, "the first cycle's groups");
    let (status, body) = get(&format!("{base}/healthz")).await;
    assert_eq!((status, body.trim()), (200, "ok"), "/healthz");

    let m = scrape(&python, &base).await;
    for f in &m {
        let name = f["name"].as_str().unwrap_or_default();
        assert!(
            name.starts_with("writeback_"),
            "family without the prefix: {f}"
        );
        assert!(
            f["help"].as_str().is_some_and(|h| !h.is_empty()),
            "no help text: {f}"
        );
    }
    let v = |name: &str, labels: &[(&str, &str)]| {
        sample(&m, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?} in {m:?}"))
    };
    assert_eq!(v("writeback_changes_total", &[("kind", "create")]), 3.0);
    assert_eq!(v("writeback_changes_total", &[("kind", "update")]), 0.0);
    assert_eq!(v("writeback_changes_total", &[("kind", "delete")]), 0.0);
    assert_eq!(v("writeback_change_failures_total", &[]), 0.0);
    assert_eq!(v("writeback_refused_groups_total", &[]), 0.0);
    assert!(v("writeback_cycles_total", &[]) >= 1.0);
    assert_eq!(
        sample(&m, "writeback_cycles_total", &[("sweep", "failed")]),
        None,
        "a failed cycle"
    );
    let duration = m
        .iter()
        .find(|f| f["name"] == "writeback_cycle_duration_seconds")
        .unwrap_or_else(|| panic!("no cycle duration in {m:?}"));
    assert_eq!(duration["type"], "histogram", "{duration}");
    assert!(v("writeback_cycle_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(v("writeback_cached_objects", &[("kind", "group")]), 3.0);
    assert_eq!(v("writeback_cached_objects", &[("kind", "user")]), 2.0);
    assert_eq!(v("writeback_quarantined_groups", &[]), 0.0);
    assert_eq!(v("writeback_held_deletes", &[]), 0.0);
    let last = v("writeback_last_success_timestamp_seconds", &[]);
    assert!(
        last >= started.floor() && last <= unix_now() + 1.0,
        "last success at {last}, the daemon started at {started}"
    );
    // Users and groups by delta, at least.
    assert!(v("writeback_graph_requests_total", &[]) >= 2.0);
    assert_eq!(v("writeback_graph_throttled_total", &[]), 0.0);
    assert_eq!(v("writeback_rule_reloads_total", &[("result", "ok")]), 0.0);

    // 2. Two 429s: counted, retried through, still ready.
    bed.emulator
        .control("faults", Some(json!({"next429": 2, "retryAfter": 0.2})))
        .await;
    eventually!(
        Duration::from_secs(20),
        "the throttled requests in /metrics",
        {
            let m = scrape(&python, &base).await;
            sample(&m, "writeback_graph_throttled_total", &[]) == Some(2.0)
                && sample(&m, "writeback_graph_retries_total", &[]) >= Some(2.0)
        }
    );
    let requests = v("writeback_graph_requests_total", &[]);
    let m = scrape(&python, &base).await;
    assert!(
        sample(&m, "writeback_graph_requests_total", &[]) >= Some(requests + 2.0),
        "{m:?}"
    );
    assert_eq!(get(&format!("{base}/readyz")).await.0, 200);

    // 3. SIGHUP: a forced reload, counted.
    d.signal("HUP");
    eventually!(Duration::from_secs(20), "the reload in /metrics", {
        let m = scrape(&python, &base).await;
        sample(&m, "writeback_rule_reloads_total", &[("result", "ok")]) == Some(1.0)
    });

    // 4. Graph answers 503 to everything: cycles fail, /readyz says so, and the process stays
    // healthy.
    bed.emulator
        .control("faults", Some(json!({"rate5xx": 1.0})))
        .await;
    eventually!(
        Duration::from_secs(40),
        "/readyz 503 while every cycle fails",
        get(&format!("{base}/readyz")).await.0 == 503
    );
    // Only the verdict: the reason (the bind account, the DCs, Graph's error) is not told to
    // whoever can reach the port; `status` and the metrics have it.
    let (_, body) = get(&format!("{base}/readyz")).await;
    assert_eq!(body, "not ready\n");
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    let m = scrape(&python, &base).await;
    assert!(
        sample(&m, "writeback_cycles_total", &[("sweep", "failed")]) >= Some(1.0),
        "{m:?}"
    );
    assert!(
        sample(&m, "writeback_last_success_timestamp_seconds", &[]) <= Some(unix_now() - 2.0),
        "{m:?}"
    );

    // 5. Graph back: ready again.
    bed.emulator
        .control("faults", Some(json!({"rate5xx": 0.0})))
        .await;
    eventually!(
        Duration::from_secs(40),
        "/readyz 200 after Graph is back",
        get(&format!("{base}/readyz")).await.0 == 200
    );
    assert_eq!(d.stop(Duration::from_secs(20)), Some(0));
    bed.cleanup().await;
}

#[tokio::test]
async fn a_listen_address_in_use_stops_the_start_naming_the_key() {
    let bed = Bed::new("wb-metrics-bind", 0).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address");
    bed.write_config(None, "", &format!("[daemon]\nlisten = \"{addr}\"\n"));
    let log = bed.dir.path().join("bind.log");
    let mut child = Command::new(writeback_bin())
        .arg("--config")
        .arg(bed.config_path())
        .arg("run")
        .env("WRITEBACK_TEST_AD_PASSWORD", &bed.ad.service_password)
        .env("WRITEBACK_TEST_GRAPH_SECRET", CLIENT_SECRET)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start writeback run");
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("writeback run kept running with {addr} taken");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!status.success(), "exited {status}: {stderr}");
    assert!(
        stderr.contains("daemon.listen") && stderr.contains(&addr.to_string()),
        "the error should name the key and the address: {stderr}"
    );
    drop(taken);
    bed.cleanup().await;
}
