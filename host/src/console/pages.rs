//! The console's views, rendered from what the CLI verbs read (`inspect::status::gather`,
//! the run history, `inspect::audit::Selection`, `inspect::explain`): pure functions from that
//! data to HTML, every value escaped by [`esc`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use time::OffsetDateTime;

use super::chart::{self, Bar};
use super::html::{esc, esc_text, page, query_value, table, View};
use crate::inspect::audit::{AuditLine, AuditOptions};
use crate::inspect::explain::Explanation;
use crate::inspect::status::Status;
use crate::inspect::{age_secs, history, human_age};
use crate::state::RunRecord;

/// The longest error shown for a quarantined group, as `writeback status` shows it.
const ERROR_CHARS: usize = 1_500;

/// What the overview shows beside the status: this process's own view of itself.
#[derive(Debug, Clone)]
pub struct Live {
    /// `/readyz`: ready or not, and why.
    pub ready: bool,
    pub readiness: String,
    /// The runs for the chart, newest first (as the state returns them).
    pub runs: Vec<RunRecord>,
}

fn ago(at: &str, now: OffsetDateTime) -> String {
    match age_secs(at, now) {
        Some(a) if a >= 0 => format!("{} ({} ago)", esc(at), human_age(a)),
        Some(a) => format!("{} (in {})", esc(at), human_age(-a)),
        None => esc(at),
    }
}

fn row(out: &mut String, key: &str, value: &str) {
    let _ = write!(
        out,
        "<tr><th scope=\"row\">{}</th><td>{value}</td></tr>",
        esc(key)
    );
}

/// A DN in a table cell: it may break anywhere (it has no spaces).
fn dn(text: &str) -> String {
    format!("<span class=\"dn\">{}</span>", esc(text))
}

fn group_link(cloud_id: &str) -> String {
    format!(
        "<a class=\"id\" href=\"{}?group={}\">{}</a>",
        View::Explain.path(),
        query_value(cloud_id),
        esc(cloud_id)
    )
}

/// The daemon at a glance: role, readiness, rules, freshness, what waits, the last runs.
pub fn overview(s: &Status, live: &Live, now: OffsetDateTime) -> String {
    let mut b = String::from("<table class=\"facts\"><tbody>");
    let daemon = match (&s.daemon.note, s.daemon.running) {
        (Some(n), true) => format!(
            "running (pid {}, since {}), polling every {} s",
            n.pid,
            ago(&n.started_at, now),
            n.poll_secs
        ),
        (Some(n), false) => format!("not running (last started {})", ago(&n.started_at, now)),
        (None, _) => "not running (never ran on this state file)".to_string(),
    };
    row(&mut b, "Daemon", &daemon);
    row(
        &mut b,
        "Role",
        "active: this instance writes to AD (one instance, no standby)",
    );
    row(
        &mut b,
        "Readiness",
        &format!(
            "<span class=\"{}\">{}</span>",
            if live.ready { "ok" } else { "bad" },
            esc(&live.readiness)
        ),
    );
    if let Some(n) = &s.daemon.note {
        let mut rules = format!(
            "{} (hash {}, loaded {})",
            esc(&n.rules.join(", ")),
            esc(&n.rules_hash),
            ago(&n.rules_loaded_at, now)
        );
        if n.rules_hash != s.rules_on_disk {
            let _ = write!(
                rules,
                "<br><span class=\"warn\">the rules on disk differ (hash {}): not loaded yet, or they do not compile</span>",
                esc(&s.rules_on_disk)
            );
        }
        row(&mut b, "Rules loaded", &rules);
        if let Some(e) = &n.reload_error {
            row(
                &mut b,
                "Last reload refused",
                &format!("<pre>{}</pre>", esc_text(e)),
            );
        }
    }
    row(
        &mut b,
        "Last run without failures",
        &s.last_success
            .as_deref()
            .map_or_else(|| "none".to_string(), |t| ago(t, now)),
    );
    for l in &s.delta_links {
        row(
            &mut b,
            &format!("Cloud {}s read up to", l.kind),
            &l.updated_at
                .as_deref()
                .map_or_else(|| "never".to_string(), |t| ago(t, now)),
        );
    }
    if let Some(t) = &s.next_reconciliation {
        row(&mut b, "Next reconciliation", &ago(t, now));
    }
    row(
        &mut b,
        "Members not found in AD",
        &esc(&crate::inspect::status::unresolved_line(&s.unresolved)),
    );
    let waiting = s.held.iter().filter(|h| !h.approved).count();
    row(
        &mut b,
        "Held back",
        &format!(
            "<a href=\"{}\">{waiting} deletes, {} groups' member removals</a>",
            View::Held.path(),
            s.held_removals.iter().filter(|h| !h.approved).count()
        ),
    );
    row(
        &mut b,
        "Quarantine",
        &format!(
            "<a href=\"{}\">{} groups failing</a>",
            View::Quarantine.path(),
            s.quarantine.len()
        ),
    );
    let c = &s.trigger_calls;
    row(
        &mut b,
        "Trigger calls",
        &format!(
            "{} waiting, {} retrying, {} given up",
            c.pending, c.retrying, c.given_up
        ),
    );
    b.push_str("</tbody></table>\n");
    let bars: Vec<Bar> = live.runs.iter().rev().filter_map(Bar::of).collect();
    if !bars.is_empty() {
        let _ = writeln!(
            b,
            "<h2>Last {} runs</h2><figure>{}</figure>",
            bars.len(),
            chart::svg(&bars)
        );
    }
    b.push_str("<h2>Recent runs</h2>\n");
    if s.last_runs.is_empty() {
        b.push_str("<p>No runs yet.</p>\n");
    } else {
        let rows: Vec<Vec<String>> = s.last_runs.iter().map(run_row).collect();
        b.push_str(&table(
            "runs",
            &["Run", "Started", "Mode", "Status", "Took", "What it did"],
            &rows,
        ));
    }
    page(View::Overview, &b)
}

fn run_row(r: &RunRecord) -> Vec<String> {
    let took = match &r.finished_at {
        Some(end) => history::duration_ms(&r.started_at, end)
            .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
            .unwrap_or_default(),
        None => "running".into(),
    };
    let status = r.status.as_deref().unwrap_or("-");
    vec![
        format!("#{}", r.id),
        esc(&r.started_at),
        esc(&r.mode),
        format!(
            "<span class=\"{}\">{}</span>",
            if status == "ok" { "ok" } else { "warn" },
            esc(status)
        ),
        took,
        esc(&r.stats.as_ref().map(history::summary).unwrap_or_default()),
    ]
}

/// Held deletes and held member removals, with the command that approves each set.
pub fn held(s: &Status) -> String {
    let mut b = String::new();
    b.push_str("<h2>Deletes</h2>\n");
    let waiting: Vec<_> = s.held.iter().filter(|h| !h.approved).collect();
    match &s.held_set {
        Some(id) if !waiting.is_empty() => {
            let _ = writeln!(
                b,
                "<p>{} deletes wait for approval: <code>writeback approve {}</code></p>",
                waiting.len(),
                esc(id)
            );
            let rows: Vec<Vec<String>> = waiting
                .iter()
                .map(|h| vec![dn(&h.dn), group_link(&h.cloud_id), esc(&h.held_at)])
                .collect();
            b.push_str(&table(
                "held",
                &["AD object", "Cloud group", "Held since"],
                &rows,
            ));
        }
        _ => b.push_str("<p>No deletes are held back.</p>\n"),
    }
    let approved = s.held.len() - waiting.len();
    if approved > 0 {
        let _ = writeln!(
            b,
            "<p>Approved deletes not applied yet: {approved} (the next cycle applies them).</p>"
        );
    }
    b.push_str("<h2>Member removals</h2>\n");
    let waiting: Vec<_> = s.held_removals.iter().filter(|h| !h.approved).collect();
    match &s.held_removals_set {
        Some(id) if !waiting.is_empty() => {
            let _ = writeln!(
                b,
                "<p>Member removals of {} groups wait for approval: <code>writeback approve {}</code></p>",
                waiting.len(),
                esc(id)
            );
            let rows: Vec<Vec<String>> = waiting
                .iter()
                .map(|h| {
                    vec![
                        dn(&h.dn),
                        group_link(&h.cloud_id),
                        format!("{} of {}", h.removals, h.members),
                        esc(&h.held_at),
                    ]
                })
                .collect();
            b.push_str(&table(
                "held",
                &["AD group", "Cloud group", "Removals", "Held since"],
                &rows,
            ));
        }
        _ => b.push_str("<p>No member removals are held back.</p>\n"),
    }
    page(View::Held, &b)
}

/// Failing groups: the error whole (up to what `status` shows), failures, when tried next.
/// `names` holds the cached displayName of each, when there is one.
pub fn quarantine(s: &Status, names: &BTreeMap<String, String>, now: OffsetDateTime) -> String {
    let mut b = String::new();
    if s.quarantine.is_empty() {
        b.push_str("<p>No group is in quarantine.</p>\n");
        return page(View::Quarantine, &b);
    }
    let _ = writeln!(
        b,
        "<p>{} groups failed and are tried again after a wait that doubles with each failure, or at once when they change in the cloud.</p>",
        s.quarantine.len()
    );
    let rows: Vec<Vec<String>> = s
        .quarantine
        .iter()
        .map(|q| {
            let name = names.get(&q.cloud_id).map(|n| esc(n)).unwrap_or_default();
            let err = crate::inspect::cut_words(q.error.trim_end(), ERROR_CHARS);
            let next = crate::state::rfc3339_at(q.retry_at);
            vec![
                format!(
                    "{}<br><span class=\"name\">{name}</span>",
                    group_link(&q.cloud_id)
                ),
                format!("<div class=\"error\">{}</div>", esc(&err)),
                q.failures.to_string(),
                esc(&q.first_at),
                ago(&next, now),
            ]
        })
        .collect();
    b.push_str(&table(
        "quarantine",
        &["Group", "Error", "Failures", "Failing since", "Next try"],
        &rows,
    ));
    page(View::Quarantine, &b)
}

/// The audit trail's form (the CLI's filters) and the events it selects, or the error that
/// the filters got.
pub fn audit(
    opts: &AuditOptions,
    notes: &str,
    found: Result<&[AuditLine], String>,
    limit: usize,
) -> String {
    let v = |o: &Option<String>| esc(o.as_deref().unwrap_or(""));
    let mut b = format!(
        "<form method=\"get\" action=\"{}\" class=\"filters\">\
<label>Group (cloud id, displayName or DN) <input name=\"group\" value=\"{}\"></label>\
<label>DN under <input name=\"dn_under\" value=\"{}\"></label>\
<label>Since <input name=\"since\" value=\"{}\" placeholder=\"7d or 2026-12-01T08:00:00Z\"></label>\
<label>Until <input name=\"until\" value=\"{}\"></label>\
<label>Newest <input name=\"limit\" value=\"{limit}\" inputmode=\"numeric\"></label>\
<button type=\"submit\">Search</button></form>\n",
        View::Audit.path(),
        v(&opts.group),
        v(&opts.dn_under),
        v(&opts.since),
        v(&opts.until),
    );
    if !notes.is_empty() {
        let _ = writeln!(
            b,
            "<pre class=\"note\">{}</pre>",
            esc_text(notes.trim_end())
        );
    }
    match found {
        Err(e) => {
            let _ = writeln!(b, "<p class=\"bad\">{}</p>", esc(&e));
        }
        Ok([]) => b.push_str("<p>No event matches.</p>\n"),
        Ok(lines) => {
            let _ = writeln!(
                b,
                "<p>{} events, oldest first (the newest {limit} at most).</p>",
                lines.len()
            );
            let rows: Vec<Vec<String>> = lines
                .iter()
                .map(|l| {
                    let details: Vec<String> = l.details().iter().map(|d| esc(d)).collect();
                    vec![
                        esc(&l.time),
                        l.run_id.to_string(),
                        esc(&l.action),
                        format!(
                            "<span class=\"{}\">{}</span>",
                            if l.outcome == "ok" { "ok" } else { "bad" },
                            esc(&l.outcome)
                        ),
                        dn(&l.dn),
                        if l.cloud_id.is_empty() {
                            String::new()
                        } else {
                            group_link(&l.cloud_id)
                        },
                        details.join("<br>"),
                    ]
                })
                .collect();
            b.push_str(&table(
                "audit",
                &[
                    "Time",
                    "Run",
                    "Action",
                    "Outcome",
                    "DN",
                    "Cloud group",
                    "What changed",
                ],
                &rows,
            ));
        }
    }
    page(View::Audit, &b)
}

/// The explain form, and `writeback explain`'s own text for the group asked about.
pub fn explain(query: &str, found: Option<Result<&Explanation, String>>) -> String {
    let mut b = format!(
        "<form method=\"get\" action=\"{}\" class=\"filters\">\
<label>Group (cloud id, displayName or DN) <input name=\"group\" value=\"{}\"></label>\
<button type=\"submit\">Explain</button></form>\n",
        View::Explain.path(),
        esc(query)
    );
    match found {
        None => b.push_str(
            "<p>What the rules make of one group, what AD holds, and what a sync would change.</p>\n",
        ),
        Some(Err(e)) => {
            let _ = writeln!(b, "<p class=\"bad\">{}</p>", esc(&e));
        }
        Some(Ok(x)) => {
            let verdict = if !x.found() {
                "<p class=\"warn\">Not found.</p>".to_string()
            } else if x.in_step {
                "<p class=\"ok\">In step: a sync would change nothing (as of the cache).</p>"
                    .to_string()
            } else {
                format!(
                    "<p class=\"warn\">A sync would make {} changes.</p>",
                    x.changes.len()
                )
            };
            b.push_str(&verdict);
            let _ = writeln!(
                b,
                "<pre class=\"explain\">{}</pre>",
                esc_text(&crate::inspect::explain::render(x))
            );
        }
    }
    page(View::Explain, &b)
}

/// A page that could not be read (the state file missing, a database error).
pub fn unavailable(view: View, why: &str) -> String {
    page(view, &format!("<p class=\"bad\">{}</p>\n", esc(why)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::status::{DaemonState, LinkAge};
    use crate::state::{HeldDelete, Quarantined};

    const HOSTILE: &str = "<img src=x onerror=alert(1)>\"'&\u{202e}";

    fn status() -> Status {
        Status {
            state_file: "/var/lib/writeback/state.db".into(),
            daemon: DaemonState {
                running: false,
                note: None,
            },
            busy: false,
            rules_on_disk: "abc".into(),
            last_success: None,
            last_runs: Vec::new(),
            delta_links: vec![LinkAge {
                kind: "group",
                updated_at: None,
                age_secs: None,
            }],
            held: vec![HeldDelete {
                cloud_id: HOSTILE.into(),
                dn: format!("CN={HOSTILE},OU=Cloud"),
                approved: false,
                held_at: "2026-12-07T10:00:00.000Z".into(),
            }],
            held_set: Some("set1".into()),
            held_removals: Vec::new(),
            held_removals_set: None,
            released: Vec::new(),
            leaving: Vec::new(),
            trigger_calls: Default::default(),
            trigger_calls_given_up: Vec::new(),
            unresolved: Default::default(),
            quarantine: vec![Quarantined {
                cloud_id: "g1".into(),
                error: format!("rc=19 {HOSTILE}\nsecond line"),
                failures: 3,
                first_at: "2026-12-07T09:00:00.000Z".into(),
                last_at: "2026-12-07T10:00:00.000Z".into(),
                retry_at: 1_796_000_000,
            }],
            next_reconciliation: None,
        }
    }

    fn no_markup_from(value_page: &str) {
        assert!(!value_page.contains("<img"), "{value_page}");
        assert!(value_page.contains("&lt;img src=x onerror=alert(1)&gt;&quot;&#39;&amp;\\u{202e}"));
    }

    #[test]
    fn held_and_quarantine_show_hostile_values_as_text() {
        let s = status();
        let h = held(&s);
        no_markup_from(&h);
        assert!(h.contains("<code>writeback approve set1</code>"), "{h}");
        let names = BTreeMap::from([("g1".to_string(), HOSTILE.to_string())]);
        let now = OffsetDateTime::from_unix_timestamp(1_795_999_700).expect("time");
        let q = quarantine(&s, &names, now);
        no_markup_from(&q);
        assert!(q.contains("second line"), "the whole error: {q}");
        assert!(q.contains("(in 5 min)"), "when it is tried next: {q}");
    }

    #[test]
    fn the_overview_says_what_it_knows_and_links_what_waits() {
        let s = status();
        let live = Live {
            ready: false,
            readiness: "starting: the first cycle has not finished".into(),
            runs: Vec::new(),
        };
        let o = overview(&s, &live, OffsetDateTime::UNIX_EPOCH);
        assert!(o.contains("never ran on this state file"), "{o}");
        assert!(o.contains("<span class=\"bad\">starting: the first cycle has not finished</span>"));
        assert!(o.contains("1 deletes, 0 groups"), "{o}");
        assert!(o.contains("No runs yet."), "{o}");
        assert!(!o.contains("<svg"), "no runs, no chart");
    }

    #[test]
    fn the_audit_form_keeps_the_filters_escaped() {
        let opts = AuditOptions {
            group: Some(HOSTILE.into()),
            ..Default::default()
        };
        let a = audit(&opts, "", Ok(&[]), 100);
        no_markup_from(&a);
        assert!(a.contains("No event matches."));
        let a = audit(&opts, "", Err("--since x: expected".into()), 100);
        assert!(
            a.contains("<p class=\"bad\">--since x: expected</p>"),
            "{a}"
        );
    }
}
