//! `writeback history`: the runs, newest first, filtered by time and status.

use std::fmt::Write as _;

use serde_json::Value;

use crate::state::{RunRecord, Store};

use super::InspectError;

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// RFC 3339 as stored (see [`super::parse_time`]).
    pub since: Option<String>,
    /// `ok`, `partial`, `failed`, `held`, `blocked`, `interrupted`.
    pub status: Option<String>,
    pub limit: usize,
}

pub fn runs(store: &Store, f: &Filter) -> Result<Vec<RunRecord>, InspectError> {
    Ok(store.runs_where(f.since.as_deref(), f.status.as_deref(), f.limit)?)
}

/// One line per run: id, start, mode, status, duration, what it did.
pub fn render(runs: &[RunRecord]) -> String {
    let mut out = String::new();
    if runs.is_empty() {
        out.push_str("No runs.\n");
        return out;
    }
    for r in runs {
        let _ = writeln!(out, "{}", line(r));
    }
    out
}

pub fn line(r: &RunRecord) -> String {
    let took = match &r.finished_at {
        Some(end) => duration_ms(&r.started_at, end)
            .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
            .unwrap_or_default(),
        None => "running".into(),
    };
    format!(
        "#{:<6} {}  {:<14} {:<11} {:>9}  {}",
        r.id,
        r.started_at,
        r.mode,
        r.status.as_deref().unwrap_or("-"),
        took,
        r.stats.as_ref().map(summary).unwrap_or_default()
    )
}

/// Milliseconds from `start` to `end` (RFC 3339), when both parse.
pub fn duration_ms(start: &str, end: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    let s = time::OffsetDateTime::parse(start, &Rfc3339).ok()?;
    let e = time::OffsetDateTime::parse(end, &Rfc3339).ok()?;
    Some((e - s).whole_milliseconds() as i64)
}

/// The run's figures that are not zero, in a fixed order.
pub fn summary(stats: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(s) = stats.get("sweep").and_then(Value::as_str) {
        parts.push(format!("sweep {s}"));
    }
    for k in [
        "evaluated",
        "changes",
        "refused",
        "failures",
        "held",
        "quarantined",
        "unresolved_members",
    ] {
        if let Some(n) = stats.get(k).and_then(Value::as_i64).filter(|n| *n > 0) {
            parts.push(format!("{k} {n}"));
        }
    }
    if let Some(e) = stats.get("error").and_then(Value::as_str) {
        let cut: String = e.chars().take(200).collect();
        parts.push(format!("error: {cut}"));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_run_is_one_line_with_what_it_did() {
        let r = RunRecord {
            id: 7,
            mode: "sync".into(),
            started_at: "2026-12-02T10:00:00.000Z".into(),
            finished_at: Some("2026-12-02T10:00:01.500Z".into()),
            status: Some("held".into()),
            stats: Some(
                json!({"sweep": "changed", "evaluated": 9, "changes": 2, "held": 5, "refused": 0}),
            ),
        };
        let l = line(&r);
        assert!(l.starts_with("#7 "), "{l}");
        assert!(l.contains("held") && l.contains("1.5 s"), "{l}");
        assert!(
            l.ends_with("sweep changed, evaluated 9, changes 2, held 5"),
            "{l}"
        );
        assert_eq!(render(&[]), "No runs.\n");
    }
}
