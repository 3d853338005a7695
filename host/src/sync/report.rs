//! A plan and its outcome as a person reads them.

use crate::printable::one_line;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::apply::Outcome;
use super::outcome::SyncReport;
use super::triggers::{TriggerOutcome, TriggerResult};
use super::types::{AttrChange, Change, Op, PlannedTrigger, Refusal, Unresolved};

/// Unresolved members listed one by one up to this many; above it, a summary per reason.
const LIST_UNRESOLVED: usize = 20;

/// Renders the whole report: one block per change, then refusals, unresolved members and a
/// summary.
pub fn render(r: &SyncReport, applied: bool) -> String {
    let mut out = render_changes(
        &r.plan.changes,
        &r.outcomes,
        &r.plan.triggers,
        &r.trigger_results,
    );
    out.push_str(&render_tail(r, applied, None));
    crate::printable::text(&out).into_owned()
}

/// One block per change, with its outcome and its triggers (and what they did, when known).
/// (Long: it is the text layout of a change block, line by line, kept in one reading order.)
pub fn render_changes(
    changes: &[Change],
    outcomes: &[Outcome],
    triggers: &[PlannedTrigger],
    results: &[TriggerResult],
) -> String {
    let mut out = String::new();
    // Indexed once: a plan of 100,000 changes must not search the outcomes per change.
    let outcomes: BTreeMap<&str, &Outcome> =
        outcomes.iter().map(|o| (o.cloud_id.as_str(), o)).collect();
    let mut by_group: BTreeMap<&str, Vec<&PlannedTrigger>> = BTreeMap::new();
    for t in triggers {
        by_group.entry(t.cloud_id.as_str()).or_default().push(t);
    }
    let outcome = |id: &str| outcomes.get(id).copied();
    for c in changes {
        let rule = c
            .rule
            .as_deref()
            .map(|r| format!("  [{r}]"))
            .unwrap_or_default();
        match &c.op {
            Op::Create {
                cloud,
                dn,
                attributes,
                members,
                links,
            } => {
                let _ = writeln!(out, "+ create {}{rule}", one_line(dn));
                for (k, v) in attributes {
                    let _ = writeln!(out, "    {k}: {}", show(v));
                }
                if !members.is_empty() {
                    let _ = writeln!(out, "    member: +{}", members.len());
                    for m in members.iter().take(10) {
                        let _ = writeln!(out, "      + {}", one_line(m));
                    }
                    if members.len() > 10 {
                        let _ = writeln!(out, "      ... and {} more", members.len() - 10);
                    }
                }
                links_lines(&mut out, links);
                cloud_lines(&mut out, cloud);
            }
            Op::Update {
                cloud,
                dn,
                move_to,
                changes,
                members_add,
                members_remove,
                links,
            } => {
                let _ = writeln!(out, "~ update {}{rule}", one_line(dn));
                if let Some(t) = move_to {
                    let _ = writeln!(out, "    move to {}", one_line(t));
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
                    let _ = writeln!(out, "    member + {}", one_line(m));
                }
                if members_add.len() > 10 {
                    let _ = writeln!(out, "    member + ... {} more", members_add.len() - 10);
                }
                for m in members_remove.iter().take(10) {
                    let _ = writeln!(out, "    member - {}", one_line(m));
                }
                if members_remove.len() > 10 {
                    let _ = writeln!(out, "    member - ... {} more", members_remove.len() - 10);
                }
                links_lines(&mut out, links);
                cloud_lines(&mut out, cloud);
            }
            Op::Delete { dn, reason } => {
                let _ = writeln!(out, "- delete {}  ({})", one_line(dn), one_line(reason));
            }
        }
        if let Some(o) = outcome(&c.cloud_id) {
            if let Some(e) = &o.error {
                let _ = writeln!(out, "    FAILED: {}", one_line(e));
            }
            for e in &o.member_errors {
                let _ = writeln!(out, "    member not written: {}", one_line(e));
            }
        }
        for t in by_group.get(c.cloud_id.as_str()).into_iter().flatten() {
            let done = results
                .iter()
                .find(|x| x.cloud_id == t.cloud_id && x.hook == t.hook && x.rule == t.rule);
            let status = match done {
                None => String::new(),
                Some(x) => match &x.error {
                    None => format!(": {}", x.outcome),
                    Some(e) if x.outcome == TriggerOutcome::Skipped => format!(": skipped ({e})"),
                    Some(e) => format!(": FAILED: {e}"),
                },
            };
            let _ = writeln!(
                out,
                "    \u{2192} {} [{}]{}",
                t.hook,
                t.rule,
                one_line(&status)
            );
        }
    }
    out
}

/// What follows the changes: refusals, unresolved members, schedules, the gate and the
/// totals. `streamed` holds the unresolved members grouped by a stream (the report then holds
/// none); a streamed report also lists its failures and trigger results here, since their
/// changes were printed before they were known. (Long: the report's closing sections in the
/// order an operator reads them.)
pub fn render_tail(
    r: &SyncReport,
    applied: bool,
    streamed: Option<&[(String, usize, Vec<Unresolved>)]>,
) -> String {
    let mut out = String::new();
    let p = &r.plan;
    if r.counts.changes() == 0 {
        let _ = writeln!(out, "No changes: AD is in step with the cloud.");
    }
    if streamed.is_some() {
        streamed_results(&mut out, r);
    }
    refused(&mut out, &p.refused);
    match streamed {
        Some(groups) => unresolved(&mut out, r.counts.unresolved_members, groups),
        None => unresolved(
            &mut out,
            p.unresolved_members.len(),
            &group_unresolved(&p.unresolved_members),
        ),
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
        let _ = writeln!(out, "\nBLOCKED: {}", one_line(b));
    }
    held(&mut out, r, applied);
    held_removals(&mut out, r, applied);
    ownership(&mut out, r, applied);
    leaving(&mut out, r, applied);
    if r.quarantine_total > 0 {
        let again = r.quarantined.iter().map(|q| q.retry_at.as_str()).min();
        let _ = writeln!(
            out,
            "\nQuarantine: {} groups failing ({} this run{}); each is tried again after a growing wait, or as soon as it, its members or the rules change.",
            r.quarantine_total,
            r.quarantined.len(),
            again
                .map(|t| format!(", the first again at {t}"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(
        out,
        "\n{}: {} to create, {} to update, {} to delete; {} refused; {} unresolved members in the {} groups compared. {}{} evaluated, {} examined ({}), {} ms.",
        if applied { "Applied" } else { "Plan" },
        r.counts.create,
        r.counts.update,
        r.counts.delete,
        p.refused.len(),
        // Members are resolved only for the groups a cycle compares: an idle cycle compares
        // none, whatever is still unresolved in the others.
        r.counts.unresolved_members,
        r.examined,
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
            .filter(|t| t.outcome != TriggerOutcome::Ok)
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

/// Refusals: each one when there are few; otherwise a count per reason with examples (a rule
/// that throws for every group is one line, not one per group).
fn refused(out: &mut String, refused: &[Refusal]) {
    if refused.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nRefused ({}):", refused.len());
    if refused.len() <= LIST_UNRESOLVED {
        for f in refused {
            let rule = f
                .rule
                .as_deref()
                .map(|r| format!(" [{r}]"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  ! group {}{rule}: {}",
                f.cloud_id,
                one_line(&f.reason)
            );
        }
        return;
    }
    for (kind, n, ids) in group_refusals(refused) {
        let _ = writeln!(
            out,
            "  {n:>7}  {kind}  (e.g. group {})",
            ids.join(", group ")
        );
    }
    let _ = writeln!(out, "  (every one is in the --json output)");
}

/// Refusals grouped by the kind of their reason, most frequent first: (kind, how many, the
/// first three group ids).
pub fn group_refusals(all: &[Refusal]) -> Vec<(String, usize, Vec<String>)> {
    let mut by: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
    for f in all {
        let (n, ex) = by.entry(reason_kind(&f.reason)).or_default();
        *n += 1;
        if ex.len() < 3 {
            ex.push(f.cloud_id.clone());
        }
    }
    let mut rows: Vec<(String, usize, Vec<String>)> =
        by.into_iter().map(|(k, (n, ex))| (k, n, ex)).collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows
}

/// Member removals held back by the removal threshold, and how to let them through.
fn held_removals(out: &mut String, r: &SyncReport, applied: bool) {
    let Some(h) = &r.held_removals else { return };
    let _ = writeln!(
        out,
        "\nHELD BACK: member removals of {} {} ({}); each would remove more than safety.member_removal_threshold_percent of its AD members. Approve exactly these removals with `writeback approve {}`; the next sync applies them.",
        h.groups.len(),
        if h.groups.len() == 1 { "group" } else { "groups" },
        if applied { "their other changes were applied" } else { "their other changes would be applied" },
        h.set_id
    );
    for g in h.groups.iter().take(LIST_UNRESOLVED) {
        let _ = writeln!(
            out,
            "  - {}  (group {}): {} of {} members",
            one_line(&g.dn),
            g.cloud_id,
            g.removals,
            g.members
        );
    }
    if h.groups.len() > LIST_UNRESOLVED {
        let _ = writeln!(
            out,
            "  ... and {} more (every one is in the --json output)",
            h.groups.len() - LIST_UNRESOLVED
        );
    }
}

/// Deletes held back by the threshold, and how to let them through.
fn held(out: &mut String, r: &SyncReport, applied: bool) {
    let Some(h) = &r.held else { return };
    let these = if h.deletes.len() == 1 {
        "this group"
    } else {
        "these groups"
    };
    let outcome = match (applied, h.deletes.len() == 1) {
        (true, true) => "was not deleted; everything else was applied",
        (true, false) => "were not deleted; everything else was applied",
        (false, _) => "would not be deleted; everything else would be applied",
    };
    let _ = writeln!(
        out,
        "\nHELD BACK: {}: {these} {outcome}. Approve exactly this set with `writeback approve {}`; the next sync applies it.",
        h.reason,
        h.set_id
    );
    for e in h.deletes.iter().take(LIST_UNRESOLVED) {
        let _ = writeln!(out, "  - {}  (group {})", one_line(&e.dn), e.cloud_id);
    }
    if h.deletes.len() > LIST_UNRESOLVED {
        let _ = writeln!(
            out,
            "  ... and {} more (every one is in the --json output)",
            h.deletes.len() - LIST_UNRESOLVED
        );
    }
}

/// Cloud properties set on the group (`to_cloud`), one per line.
fn cloud_lines(out: &mut String, cloud: &BTreeMap<String, serde_json::Value>) {
    for (k, v) in cloud {
        let _ = writeln!(out, "    cloud {k}: {}", one_line(&v.to_string()));
    }
}

/// Links into groups Writeback does not own (`member_of`), one per line.
fn links_lines(out: &mut String, links: &super::types::Links) {
    for t in &links.add {
        let _ = writeln!(out, "    member of + {}", one_line(t));
    }
    for t in &links.remove {
        let _ = writeln!(out, "    member of - {}", one_line(t));
    }
}

/// Owned groups the rules stopped writing this cycle: kept, or deleted later.
fn leaving(out: &mut String, r: &SyncReport, applied: bool) {
    let (kept, later): (Vec<_>, Vec<_>) = r.leaving.iter().partition(|l| l.delete_at.is_none());
    if !kept.is_empty() {
        let _ = writeln!(
            out,
            "\n{} ({}): the rule keeps them as they are in AD; no longer written until it wants them again, deleted when the cloud group is deleted. `writeback release` hands them over for good.",
            if applied { "Kept, no longer written" } else { "Would keep, no longer written" },
            kept.len()
        );
        for l in kept.iter().take(LIST_UNRESOLVED) {
            let _ = writeln!(out, "  = {}  (group {})", one_line(&l.dn), l.cloud_id);
        }
    }
    if !later.is_empty() {
        let _ = writeln!(
            out,
            "\n{} ({}): the rule deletes them after a delay; not written meanwhile, and written again if it wants them back:",
            if applied { "To be deleted later" } else { "Would be deleted later" },
            later.len()
        );
        for l in later.iter().take(LIST_UNRESOLVED) {
            let _ = writeln!(
                out,
                "  - {}  (group {}) at {}",
                one_line(&l.dn),
                l.cloud_id,
                l.delete_at.as_deref().unwrap_or("?")
            );
        }
    }
    let shown = kept.len().min(LIST_UNRESOLVED) + later.len().min(LIST_UNRESOLVED);
    if r.leaving.len() > shown {
        let _ = writeln!(
            out,
            "  ... and {} more (every one is in the --json output)",
            r.leaving.len() - shown
        );
    }
}

/// Objects adopted, and anchored objects left alone because Writeback did not record them.
fn ownership(out: &mut String, r: &SyncReport, applied: bool) {
    if !r.adopted.is_empty() {
        let _ = writeln!(
            out,
            "\n{} ({}):",
            if applied { "Adopted" } else { "Would adopt" },
            r.adopted.len()
        );
        for a in &r.adopted {
            let _ = writeln!(out, "  + {}  (group {})", one_line(&a.dn), a.cloud_id);
        }
    }
    if !r.foreign.is_empty() {
        let f = &r.foreign;
        let _ = writeln!(
            out,
            "\nNot Writeback's, left alone ({}): objects carrying a group anchor that Writeback has no record of creating:",
            f.count
        );
        for (n, what) in [
            (f.unrecorded, "of groups the rules want (written by Connect or Cloud Sync, or the state file was lost): review with `writeback adopt --dry-run`, take over with `writeback adopt`"),
            (f.out_of_scope, "of this tenant's groups the rules do not manage (another instance's or tool's): declare the OU in ad.shared_ous if that is intended"),
            (f.other_tenant, "of groups not in this tenant (another tenant's instance writes here): declare the OU in ad.shared_ous if that is intended"),
        ] {
            if n > 0 {
                let _ = writeln!(out, "  {n:>7}  {what}");
            }
        }
        for dn in &r.foreign.examples {
            let _ = writeln!(out, "  = {}", one_line(dn));
        }
        if r.foreign.count > r.foreign.examples.len() {
            let _ = writeln!(
                out,
                "  ... and {} more",
                r.foreign.count - r.foreign.examples.len()
            );
        }
    }
}

fn show(v: &[String]) -> String {
    match v {
        [] => "(none)".into(),
        [one] => format!("{one:?}"),
        _ => format!(
            "[{}]",
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Unresolved members grouped by the kind of their reason: (kind, how many, the first
/// [`LIST_UNRESOLVED`] of them).
pub fn group_unresolved(all: &[Unresolved]) -> Vec<(String, usize, Vec<Unresolved>)> {
    let mut by_reason: BTreeMap<String, (usize, Vec<Unresolved>)> = BTreeMap::new();
    for u in all {
        let (n, ex) = by_reason.entry(reason_kind(&u.reason)).or_default();
        *n += 1;
        if ex.len() < LIST_UNRESOLVED {
            ex.push(u.clone());
        }
    }
    by_reason
        .into_iter()
        .map(|(k, (n, ex))| (k, n, ex))
        .collect()
}

/// Unresolved members: each one when there are few; otherwise a count per reason with an
/// example (`--json` holds them all).
fn unresolved(out: &mut String, total: usize, groups: &[(String, usize, Vec<Unresolved>)]) {
    if total == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "\nMembers and owners without an AD object in the groups compared, not written ({total}):"
    );
    if total <= LIST_UNRESOLVED {
        let mut all: Vec<&Unresolved> = groups.iter().flat_map(|(_, _, ex)| ex).collect();
        all.sort();
        for u in all {
            let _ = writeln!(
                out,
                "  ? group {}: {} {}: {}",
                u.group_id,
                u.member_type,
                u.member_id,
                one_line(&u.reason)
            );
        }
        return;
    }
    let mut rows: Vec<&(String, usize, Vec<Unresolved>)> = groups.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (kind, n, ex) in rows {
        let Some(u) = ex.first() else { continue };
        let _ = writeln!(
            out,
            "  {n:>7}  {kind}  (e.g. group {}: {} {})",
            u.group_id, u.member_type, u.member_id
        );
    }
    let _ = writeln!(out, "  (every one is in the --json output)");
}

/// A streamed report's failures and trigger results, after the changes they belong to.
fn streamed_results(out: &mut String, r: &SyncReport) {
    let failed: Vec<&Outcome> = r.outcomes.iter().filter(|o| !o.ok()).collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "\nFailed ({}):", failed.len());
        for o in failed {
            let what = o
                .error
                .clone()
                .unwrap_or_else(|| o.member_errors.join("; "));
            let _ = writeln!(
                out,
                "  ! {} {}: {}",
                o.action,
                one_line(&o.dn),
                one_line(&what)
            );
        }
    }
    if !r.trigger_results.is_empty() {
        let _ = writeln!(out, "\nTriggers:");
        for x in &r.trigger_results {
            let status = match &x.error {
                None => x.outcome.to_string(),
                Some(e) if x.outcome == TriggerOutcome::Skipped => format!("skipped ({e})"),
                Some(e) => format!("FAILED: {e}"),
            };
            let _ = writeln!(
                out,
                "  \u{2192} {} [{}] {}: {}",
                x.hook,
                x.rule,
                one_line(&x.dn),
                one_line(&status)
            );
        }
    }
}

/// A reason without the identifiers in it (SIDs, GUIDs, quoted values), so like reasons count
/// together.
pub fn reason_kind(reason: &str) -> String {
    unquoted(reason)
        .split(' ')
        .map(|w| {
            // An id may be quoted or end a parenthesis: "(group <id>)".
            let core = w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-');
            let id = core.starts_with("S-1-")
                || (core.len() == 36 && core.chars().filter(|c| *c == '-').count() == 4);
            if id && !core.is_empty() {
                w.replacen(core, "…", 1)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `reason` with every `"..."` (a join value, Rust-quoted) as `…`.
fn unquoted(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut rest = reason;
    while let Some(start) = rest.find('"') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        // the closing quote is the first one not escaped
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        match end {
            Some(i) => {
                out.push('…');
                rest = &after[i + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_values_cannot_forge_lines_or_reach_the_terminal() {
        let dn = "CN=Evil\nApplied: 0 to create\u{1b}[2J\u{9b}31m\u{202E}gnp.exe,OU=W";
        let changes = vec![Change {
            cloud_id: "g".into(),
            rule: Some("10-r.rhai".into()),
            op: Op::Delete {
                dn: dn.into(),
                reason: "gone\r\nforged".into(),
            },
        }];
        let text = render_changes(&changes, &[], &[], &[]);
        assert_eq!(text.lines().count(), 1, "{text}");
        for c in ['\u{1b}', '\u{9b}', '\u{202E}', '\r'] {
            assert!(!text.contains(c), "{c:?} in {text:?}");
        }
        assert!(text.contains("CN=Evil\\nApplied"), "{text}");
    }

    #[test]
    fn kept_and_later_deleted_groups_are_told_apart() {
        let note = |id: &str, at: Option<&str>| crate::sync::leave::LeavingNote {
            cloud_id: id.into(),
            dn: format!("CN={id},OU=W"),
            delete_at: at.map(str::to_string),
        };
        let r = SyncReport {
            leaving: vec![note("k", None), note("d", Some("2026-12-07T00:00:00Z"))],
            ..Default::default()
        };
        let text = render(&r, true);
        assert!(text.contains("Kept, no longer written (1)"), "{text}");
        assert!(text.contains("= CN=k,OU=W  (group k)"), "{text}");
        assert!(text.contains("To be deleted later (1)"), "{text}");
        assert!(
            text.contains("CN=d,OU=W  (group d) at 2026-12-07T00:00:00Z"),
            "{text}"
        );
        assert!(render(&r, false).contains("Would keep"), "dry run wording");
    }

    #[test]
    fn held_deletes_and_unresolved_counts_read_as_sentences() {
        let held = crate::sync::gate::Held {
            set_id: "h-1".into(),
            reason: "20 deletes, more than the delete threshold (5)".into(),
            deletes: (0..20)
                .map(|i| crate::sync::gate::HeldEntry {
                    cloud_id: format!("g{i}"),
                    dn: format!("CN=g{i},OU=W"),
                })
                .collect(),
            new: true,
        };
        let mut r = SyncReport {
            held: Some(held),
            examined: 0,
            ..Default::default()
        };
        r.counts.unresolved_members = 0;
        let plan = render(&r, false);
        assert!(
            plan.contains("HELD BACK: 20 deletes, more than the delete threshold (5): these groups would not be deleted; everything else would be applied. Approve exactly this set with `writeback approve h-1`"),
            "{plan}"
        );
        let applied = render(&r, true);
        assert!(
            applied.contains("(5): these groups were not deleted; everything else was applied."),
            "{applied}"
        );
        // The count says whose members it counts: an idle cycle compared no group.
        assert!(
            plan.contains("0 refused; 0 unresolved members in the 0 groups compared."),
            "{plan}"
        );
        if let Some(h) = r.held.as_mut() {
            h.deletes.truncate(1);
            h.reason = "1 deletes, more than 0% of the 3 groups Writeback owns".into();
        }
        let one = render(&r, true);
        assert!(
            one.contains(": this group was not deleted; everything else was applied."),
            "{one}"
        );
    }

    #[test]
    fn quoted_join_values_count_together() {
        assert_eq!(
            reason_kind("no AD account has mail \"a b@x\""),
            "no AD account has mail …"
        );
        assert_eq!(
            reason_kind(
                "ambiguous: 2 AD accounts have mail \"q\\\"x\" (CN=A; CN=B); none is picked"
            ),
            "ambiguous: 2 AD accounts have mail … (CN=A; CN=B); none is picked"
        );
        assert_eq!(reason_kind("odd \"quote"), "odd \"quote");
    }

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
        unresolved(&mut out, all.len(), &group_unresolved(&all));
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
        unresolved(&mut few, 5, &group_unresolved(&all[30..]));
        assert!(few.contains("? group g34: user m34: no AD account has objectSid S-1-5-21-1-34"));
    }

    #[test]
    fn a_rule_error_for_every_group_is_one_row() {
        let all: Vec<Refusal> = (0..40)
            .map(|i| Refusal {
                cloud_id: format!("00000000-0000-0000-0000-{i:012}"),
                rule: None,
                reason: format!(
                    "r.rhai:3:9: boom (rule r.rhai, map(), group 00000000-0000-0000-0000-{i:012})"
                ),
            })
            .collect();
        let rows = group_refusals(&all);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].1, 40);
        assert_eq!(rows[0].0, "r.rhai:3:9: boom (rule r.rhai, map(), group …)");
        let mut out = String::new();
        refused(&mut out, &all);
        assert_eq!(out.lines().count(), 4, "{out}");
    }
}
