//! A plan and its outcome as a person reads them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::apply::Outcome;
use super::job::SyncReport;
use super::types::{AttrChange, Op, PlannedTrigger, Unresolved};

/// Unresolved members listed one by one up to this many; above it, a summary per reason.
const LIST_UNRESOLVED: usize = 20;

/// Renders the report: one block per change, then refusals, unresolved members and a summary.
pub fn render(r: &SyncReport, applied: bool) -> String {
    let mut out = String::new();
    let p = &r.plan;
    if p.changes.is_empty() {
        let _ = writeln!(out, "No changes: AD is in step with the cloud.");
    }
    // Indexed once: a plan of 100,000 changes must not search the outcomes per change.
    let outcomes: BTreeMap<&str, &Outcome> = r
        .outcomes
        .iter()
        .map(|o| (o.cloud_id.as_str(), o))
        .collect();
    let mut triggers: BTreeMap<&str, Vec<&PlannedTrigger>> = BTreeMap::new();
    for t in &p.triggers {
        triggers.entry(t.cloud_id.as_str()).or_default().push(t);
    }
    let outcome = |id: &str| outcomes.get(id).copied();
    for c in &p.changes {
        let rule = c
            .rule
            .as_deref()
            .map(|r| format!("  [{r}]"))
            .unwrap_or_default();
        match &c.op {
            Op::Create {
                dn,
                attributes,
                members,
            } => {
                let _ = writeln!(out, "+ create {dn}{rule}");
                for (k, v) in attributes {
                    let _ = writeln!(out, "    {k}: {}", show(v));
                }
                if !members.is_empty() {
                    let _ = writeln!(out, "    member: +{}", members.len());
                    for m in members.iter().take(10) {
                        let _ = writeln!(out, "      + {m}");
                    }
                    if members.len() > 10 {
                        let _ = writeln!(out, "      ... and {} more", members.len() - 10);
                    }
                }
            }
            Op::Update {
                dn,
                move_to,
                changes,
                members_add,
                members_remove,
            } => {
                let _ = writeln!(out, "~ update {dn}{rule}");
                if let Some(t) = move_to {
                    let _ = writeln!(out, "    move to {t}");
                }
                for ch in changes {
                    match ch {
                        AttrChange::Replace { attr, values, old } => {
                            let _ = writeln!(out, "    {attr}: {} -> {}", show(old), show(values));
                        }
                        AttrChange::Clear { attr, old } => {
                            let _ = writeln!(out, "    {attr}: {} -> (cleared)", show(old));
                        }
                    }
                }
                for m in members_add.iter().take(10) {
                    let _ = writeln!(out, "    member + {m}");
                }
                if members_add.len() > 10 {
                    let _ = writeln!(out, "    member + ... {} more", members_add.len() - 10);
                }
                for m in members_remove.iter().take(10) {
                    let _ = writeln!(out, "    member - {m}");
                }
                if members_remove.len() > 10 {
                    let _ = writeln!(out, "    member - ... {} more", members_remove.len() - 10);
                }
            }
            Op::Delete { dn, reason } => {
                let _ = writeln!(out, "- delete {dn}  ({reason})");
            }
        }
        if let Some(o) = outcome(&c.cloud_id) {
            if let Some(e) = &o.error {
                let _ = writeln!(out, "    FAILED: {e}");
            }
            for e in &o.member_errors {
                let _ = writeln!(out, "    member not written: {e}");
            }
        }
        for t in triggers.get(c.cloud_id.as_str()).into_iter().flatten() {
            let done = r
                .trigger_results
                .iter()
                .find(|x| x.cloud_id == t.cloud_id && x.hook == t.hook && x.rule == t.rule);
            let status = match done {
                None => String::new(),
                Some(x) => match &x.error {
                    None => format!(": {}", x.outcome),
                    Some(e) if x.outcome == "skipped" => format!(": skipped ({e})"),
                    Some(e) => format!(": FAILED: {e}"),
                },
            };
            let _ = writeln!(out, "    \u{2192} {} [{}]{status}", t.hook, t.rule);
        }
    }
    if !p.refused.is_empty() {
        let _ = writeln!(out, "\nRefused ({}):", p.refused.len());
        for f in &p.refused {
            let rule = f
                .rule
                .as_deref()
                .map(|r| format!(" [{r}]"))
                .unwrap_or_default();
            let _ = writeln!(out, "  ! group {}{rule}: {}", f.cloud_id, f.reason);
        }
    }
    if !p.unresolved_members.is_empty() {
        unresolved(&mut out, &p.unresolved_members);
    }
    if !r.schedules.is_empty() {
        let _ = writeln!(out, "\nSchedules (run by `writeback run`):");
        for s in &r.schedules {
            let _ = writeln!(
                out,
                "  {} [{}]: next due {}",
                s.schedule,
                s.rule,
                s.next_due.as_deref().unwrap_or("never")
            );
        }
    }
    if let Some(b) = &r.blocked {
        let _ = writeln!(out, "\nBLOCKED: {b}");
    }
    let count = |f: fn(&Op) -> bool| p.changes.iter().filter(|c| f(&c.op)).count();
    let _ = writeln!(
        out,
        "\n{}: {} to create, {} to update, {} to delete; {} refused; {} members unresolved. {}{} evaluated, {} examined ({}), {} ms.",
        if applied { "Applied" } else { "Plan" },
        count(|o| matches!(o, Op::Create { .. })),
        count(|o| matches!(o, Op::Update { .. })),
        count(|o| matches!(o, Op::Delete { .. })),
        p.refused.len(),
        p.unresolved_members.len(),
        match (r.cloud_groups, r.in_scope) {
            (Some(g), Some(s)) => format!("{g} cloud groups, {s} in scope, "),
            _ => String::new(),
        },
        r.evaluated,
        r.examined,
        r.sweep,
        r.elapsed_ms,
    );
    if !p.triggers.is_empty() {
        let failed = r
            .trigger_results
            .iter()
            .filter(|t| t.outcome != "ok")
            .count();
        if applied && !r.trigger_results.is_empty() {
            let _ = writeln!(
                out,
                "Triggers: {} planned, {} ran, {} failed or skipped.",
                p.triggers.len(),
                r.trigger_results.len() - failed,
                failed
            );
        } else {
            let _ = writeln!(
                out,
                "Triggers: {} would fire once the changes are applied.",
                p.triggers.len()
            );
        }
    }
    if applied && r.failures() > 0 {
        let _ = writeln!(
            out,
            "{} changes failed; they are retried on the next run.",
            r.failures()
        );
    }
    out
}

fn show(v: &[String]) -> String {
    match v.len() {
        0 => "(none)".into(),
        1 => format!("{:?}", v[0]),
        _ => format!(
            "[{}]",
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Unresolved members: each one when there are few; otherwise a count per reason with an
/// example (`--json` holds them all).
fn unresolved(out: &mut String, all: &[Unresolved]) {
    let _ = writeln!(
        out,
        "\nMembers without an AD object, not written ({}):",
        all.len()
    );
    if all.len() <= LIST_UNRESOLVED {
        for u in all {
            let _ = writeln!(
                out,
                "  ? group {}: {} {}: {}",
                u.group_id, u.member_type, u.member_id, u.reason
            );
        }
        return;
    }
    let mut by_reason: BTreeMap<String, (usize, &Unresolved)> = BTreeMap::new();
    for u in all {
        by_reason.entry(reason_kind(&u.reason)).or_insert((0, u)).0 += 1;
    }
    let mut rows: Vec<(String, usize, &Unresolved)> =
        by_reason.into_iter().map(|(k, (n, u))| (k, n, u)).collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (kind, n, u) in rows {
        let _ = writeln!(
            out,
            "  {n:>7}  {kind}  (e.g. group {}: {} {})",
            u.group_id, u.member_type, u.member_id
        );
    }
    let _ = writeln!(out, "  (every one is in the --json output)");
}

/// A reason without the identifiers in it (SIDs, GUIDs), so like reasons count together.
fn reason_kind(reason: &str) -> String {
    reason
        .split(' ')
        .map(|w| {
            let id = w.starts_with("S-1-")
                || (w.len() == 36 && w.chars().filter(|c| *c == '-').count() == 4);
            if id {
                "…"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(i: usize, reason: &str) -> Unresolved {
        Unresolved {
            group_id: format!("g{i}"),
            member_id: format!("m{i}"),
            member_type: "user".into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn many_unresolved_members_are_summarised_per_reason() {
        let mut all: Vec<Unresolved> = (0..30)
            .map(|i| u(i, "cloud-only user (no onPremisesSecurityIdentifier)"))
            .collect();
        all.extend((30..35).map(|i| u(i, &format!("no AD account has objectSid S-1-5-21-1-{i}"))));
        let mut out = String::new();
        unresolved(&mut out, &all);
        assert!(out.contains("not written (35)"), "{out}");
        assert!(
            out.contains("30  cloud-only user (no onPremisesSecurityIdentifier)  (e.g. group g0"),
            "{out}"
        );
        assert!(
            out.contains("5  no AD account has objectSid …  (e.g. group g30"),
            "{out}"
        );
        assert!(!out.contains("m34"), "not listed one by one: {out}");

        let mut few = String::new();
        unresolved(&mut few, &all[30..]);
        assert!(few.contains("? group g34: user m34: no AD account has objectSid S-1-5-21-1-34"));
    }
}
