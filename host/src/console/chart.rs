//! The overview's chart of the last cycles, drawn on the server as inline SVG: one bar per
//! run for its duration and one for its changes, coloured by status, each with a tooltip.
//! No script, nothing fetched: the page's Content-Security-Policy allows neither.

use std::fmt::Write as _;

use serde_json::Value;

use super::html::esc;
use crate::state::RunRecord;

const WIDTH: f64 = 720.0;
const BAND: f64 = 90.0;
const GAP: f64 = 28.0;
/// Bars are at most this wide a share of the chart.
const MIN_SLOTS: usize = 30;

/// One run as the chart draws it.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub id: i64,
    pub started_at: String,
    pub status: String,
    pub secs: f64,
    pub changes: u64,
}

impl Bar {
    /// Finished runs only: one in flight has no duration yet.
    pub fn of(r: &RunRecord) -> Option<Bar> {
        let end = r.finished_at.as_deref()?;
        let secs = crate::inspect::history::duration_ms(&r.started_at, end)? as f64 / 1000.0;
        Some(Bar {
            id: r.id,
            started_at: r.started_at.clone(),
            status: r.status.clone().unwrap_or_else(|| "-".into()),
            secs,
            changes: r
                .stats
                .as_ref()
                .and_then(|s| s.get("changes"))
                .and_then(Value::as_u64)
                .unwrap_or(0),
        })
    }
}

fn class_of(status: &str) -> &'static str {
    match status {
        "ok" => "ok",
        "held" | "partial" => "warn",
        _ => "bad",
    }
}

/// The SVG for `bars`, oldest first (empty text when there is nothing to draw).
pub fn svg(bars: &[Bar]) -> String {
    if bars.is_empty() {
        return String::new();
    }
    let max_secs = bars.iter().map(|b| b.secs).fold(0.0, f64::max).max(0.001);
    let max_changes = bars.iter().map(|b| b.changes).max().unwrap_or(0).max(1);
    // A few runs are drawn as narrow as many: the scale of a bar does not jump.
    let step = WIDTH / bars.len().max(MIN_SLOTS) as f64;
    let bar_w = (step * 0.8).max(1.0);
    let height = 2.0 * (BAND + GAP);
    let mut out = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"Duration and changes of the last {} runs\">",
        bars.len()
    );
    let _ = write!(
        out,
        "<text x=\"0\" y=\"14\" class=\"axis\">duration (longest {:.2} s)</text>",
        max_secs
    );
    let _ = write!(
        out,
        "<text x=\"0\" y=\"{}\" class=\"axis\">changes (most {max_changes})</text>",
        BAND + GAP + 14.0
    );
    for (i, b) in bars.iter().enumerate() {
        let x = i as f64 * step;
        let tip = format!(
            "run {} at {}: {}, {:.2} s, {} changes",
            b.id, b.started_at, b.status, b.secs, b.changes
        );
        let h = (b.secs / max_secs * (BAND - GAP)).max(1.0);
        let _ = write!(
            out,
            "<rect class=\"{}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar_w:.1}\" height=\"{h:.1}\"><title>{}</title></rect>",
            class_of(&b.status),
            GAP + (BAND - GAP) - h,
            esc(&tip)
        );
        let h = b.changes as f64 / max_changes as f64 * (BAND - GAP);
        if h > 0.0 {
            let _ = write!(
                out,
                "<rect class=\"changes\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar_w:.1}\" height=\"{h:.1}\"><title>{}</title></rect>",
                BAND + 2.0 * GAP + (BAND - GAP) - h,
                esc(&tip)
            );
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(id: i64, end: &str, status: &str, changes: u64) -> RunRecord {
        RunRecord {
            id,
            mode: "daemon".into(),
            started_at: "2026-12-07T10:00:00.000Z".into(),
            finished_at: Some(end.into()),
            status: Some(status.into()),
            stats: Some(json!({ "changes": changes })),
        }
    }

    #[test]
    fn bars_scale_to_the_longest_and_the_most_and_say_what_they_are() {
        let bars: Vec<Bar> = [
            run(1, "2026-12-07T10:00:02.000Z", "ok", 4),
            run(2, "2026-12-07T10:00:01.000Z", "failed", 0),
        ]
        .iter()
        .filter_map(Bar::of)
        .collect();
        assert_eq!(bars.len(), 2);
        assert_eq!(bars[0].secs, 2.0);
        let s = svg(&bars);
        assert!(s.contains("longest 2.00 s") && s.contains("most 4"), "{s}");
        assert!(
            s.contains("<title>run 1 at 2026-12-07T10:00:00.000Z: ok, 2.00 s, 4 changes</title>")
        );
        assert!(s.contains("class=\"bad\""), "a failed run is marked: {s}");
        // No changes, no changes bar: one duration bar each and one changes bar.
        assert_eq!(s.matches("<rect").count(), 3, "{s}");
    }

    #[test]
    fn a_run_in_flight_is_not_drawn() {
        let mut r = run(3, "x", "ok", 1);
        r.finished_at = None;
        assert_eq!(Bar::of(&r), None);
        assert_eq!(svg(&[]), "");
    }
}
