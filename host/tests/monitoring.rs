//! The alert rules and the Grafana dashboard in packaging/monitoring against the metrics the
//! daemon exports (`writeback::metrics::ALL`, itself checked against a scrape in metrics.rs):
//!
//! - every metric a rule expression or a dashboard query names is exported (a histogram only
//!   by its `_bucket`, `_count` or `_sum` series);
//! - the dashboard is JSON with a panel over every exported metric;
//! - each rule has a `for:`, a severity, a summary and a description that says what to run,
//!   and the promtool tests beside it cover it.
//!
//! promtool parses the rules and runs their tests (tests/run-tests.sh); no YAML parser here.

// A test file: its helpers stop the test where something is not as expected.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use writeback::metrics::{ALL, HISTOGRAMS};

const RULES: &str = "writeback-alerts.yml";
const RULE_TESTS: &str = "writeback-alerts.test.yml";
const DASHBOARD: &str = "writeback-dashboard.json";

fn read(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/monitoring")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `writeback_...` identifier in `query`, whole (Prometheus's name characters), so a
/// misspelt suffix is not cut to a known prefix.
fn names(query: &str) -> Vec<&str> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    query
        .match_indices("writeback_")
        .filter(|(at, _)| !query[..*at].ends_with(ident))
        .map(|(at, _)| {
            let rest = &query[at..];
            let end = rest.find(|c| !ident(c)).unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

/// A series the daemon exports: an exported metric, or a histogram's `_bucket`, `_count` or
/// `_sum` (the bare name of a histogram has no series).
fn known(name: &str) -> bool {
    if HISTOGRAMS.contains(&name) {
        return false;
    }
    ALL.contains(&name)
        || ["_bucket", "_count", "_sum"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| HISTOGRAMS.contains(&base))
        })
}

/// The exported metric a known series belongs to.
fn metric(name: &str) -> &str {
    ["_bucket", "_count", "_sum"]
        .iter()
        .find_map(|suffix| {
            name.strip_suffix(suffix)
                .filter(|base| HISTOGRAMS.contains(base))
        })
        .unwrap_or(name)
}

/// The names in `queries` that are not exported series, with the query naming each.
fn unknown<'a>(queries: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    queries
        .iter()
        .copied()
        .flat_map(|q| names(q).into_iter().map(move |n| (n, q)))
        .filter(|(n, _)| !known(n))
        .collect()
}

#[test]
fn the_checker_tells_exported_series_from_others() {
    assert_eq!(
        names("sum(rate(writeback_cycles_total{sweep=\"failed\"}[5m])) / writeback_x2_y"),
        ["writeback_cycles_total", "writeback_x2_y"]
    );
    // Only whole identifiers: no match inside another name.
    assert!(names("my_writeback_cycles_total").is_empty());
    assert!(known("writeback_cycles_total"));
    assert!(known("writeback_cycle_duration_seconds_bucket"));
    assert!(
        !known("writeback_cycle_duration_seconds"),
        "a bare histogram"
    );
    assert!(!known("writeback_held_deletes_sum"), "a gauge has no _sum");
    assert!(!known("writeback_cycle_total"));
    assert_eq!(
        unknown(&[
            "writeback_held_deletes > 0",
            "rate(writeback_nope_total[5m])"
        ]),
        [("writeback_nope_total", "rate(writeback_nope_total[5m])")]
    );
}

/// One alerting rule as the file spells it: the keys this test needs, read line by line.
#[derive(Debug, Default)]
struct Rule {
    alert: String,
    expr: String,
    r#for: Option<String>,
    severity: Option<String>,
    summary: bool,
    /// The description's text, the lines of a block scalar joined.
    description: String,
}

/// The rules of the file: keys at any indentation, as written in writeback-alerts.yml (one
/// line per `expr:`; a description may continue on more-indented lines).
fn rules(text: &str) -> Vec<Rule> {
    let mut rules: Vec<Rule> = Vec::new();
    let mut in_description: Option<usize> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let t = line.trim();
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        if let Some(at) = in_description {
            if indent > at {
                if let Some(r) = rules.last_mut() {
                    r.description.push(' ');
                    r.description.push_str(t);
                }
                continue;
            }
            in_description = None;
        }
        if let Some(name) = t.strip_prefix("- alert:") {
            rules.push(Rule {
                alert: name.trim().to_string(),
                ..Default::default()
            });
            continue;
        }
        let Some(r) = rules.last_mut() else { continue };
        let value = |key: &str| t.strip_prefix(key).map(|v| v.trim().to_string());
        if let Some(v) = value("expr:") {
            assert!(
                !v.starts_with(['|', '>']) && !v.is_empty(),
                "{}: write the expr on one line (this test reads it as a line): {line}",
                r.alert
            );
            r.expr = v;
        } else if let Some(v) = value("for:") {
            r.r#for = Some(v);
        } else if let Some(v) = value("severity:") {
            r.severity = Some(v);
        } else if t.starts_with("summary:") {
            r.summary = true;
        } else if let Some(v) = value("description:") {
            r.description = v;
            in_description = Some(indent);
        }
    }
    rules
}

#[test]
fn every_alert_rule_names_exported_metrics_and_says_what_to_do() {
    let text = read(RULES);
    assert!(
        !text.contains('\t'),
        "{RULES}: YAML does not indent with tabs"
    );
    assert!(
        text.lines().any(|l| l.trim() == "- name: writeback"),
        "{RULES}: no group `writeback`"
    );
    let rules = rules(&text);
    assert!(
        rules.len() >= 8,
        "{RULES}: only {} rules: {rules:#?}",
        rules.len()
    );
    let mut seen = BTreeSet::new();
    for r in &rules {
        assert!(seen.insert(r.alert.as_str()), "alert {} twice", r.alert);
        assert!(!r.expr.is_empty(), "{}: no expr", r.alert);
        assert!(r.r#for.is_some(), "{}: no `for:`", r.alert);
        assert!(
            matches!(r.severity.as_deref(), Some("critical" | "warning" | "info")),
            "{}: severity {:?}",
            r.alert,
            r.severity
        );
        assert!(r.summary, "{}: no summary", r.alert);
        assert!(
            ["`writeback ", "`systemctl ", "`journalctl "]
                .iter()
                .any(|c| r.description.contains(c)),
            "{}: the description names no command to run: {:?}",
            r.alert,
            r.description
        );
    }
    let exprs: Vec<&str> = rules.iter().map(|r| r.expr.as_str()).collect();
    assert_eq!(unknown(&exprs), [], "metrics the daemon does not export");
    // Not vacuous: the rules do query the daemon's metrics.
    assert!(exprs.iter().filter(|e| !names(e).is_empty()).count() >= 7);

    // Each alert is exercised by the promtool tests beside it.
    let tests = read(RULE_TESTS);
    for r in &rules {
        assert!(
            tests.contains(&format!("alertname: {}", r.alert)),
            "{RULE_TESTS} does not test {}",
            r.alert
        );
    }
}

/// Every query string of the dashboard: panel targets' `expr` and variables' `query`.
fn queries<'a>(v: &'a Value, key: Option<&str>, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) if matches!(key, Some("expr" | "query")) => out.push(s),
        Value::Object(m) => {
            for (k, v) in m {
                queries(v, Some(k), out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| queries(v, key, out)),
        _ => {}
    }
}

/// Every panel, those inside collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let top = dashboard["panels"].as_array().expect("panels");
    top.iter()
        .chain(top.iter().filter_map(|p| p["panels"].as_array()).flatten())
        .collect()
}

#[test]
fn the_dashboard_queries_exported_metrics_and_shows_each() {
    let text = read(DASHBOARD);
    let d: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion"
    );
    assert!(
        d["__inputs"]
            .as_array()
            .is_some_and(|i| i.iter().any(|i| i["name"] == "DS_PROMETHEUS")),
        "no DS_PROMETHEUS input"
    );
    for p in panels(&d).into_iter().filter(|p| p["type"] != "row") {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {p}");
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = p["targets"].as_array().map_or(0, Vec::len);
        assert!(targets > 0, "{title}: no query");
    }
    // No external assets: no images or scripts from elsewhere.
    assert!(!text.contains("http://") && !text.contains("https://"));

    let mut qs = Vec::new();
    queries(&d, None, &mut qs);
    assert!(qs.len() >= 17, "only {} queries", qs.len());
    assert_eq!(unknown(&qs), [], "metrics the daemon does not export");
    let shown: BTreeSet<&str> = qs.iter().copied().flat_map(names).map(metric).collect();
    let missing: Vec<&&str> = ALL.iter().filter(|n| !shown.contains(**n)).collect();
    assert!(missing.is_empty(), "no panel shows {missing:?}");
}
