//! `writeback status`: is the daemon running, what did the last runs do, how fresh is the cloud
//! cache, which rules are loaded, which deletes wait for approval, which groups are failing, when
//! the next reconciliation is.
//!
//! The daemon leaves a note of itself in the state (`meta` key [`DAEMON_KEY`]): its pid, when it
//! started, the rules it loaded and when, the last reload error. Status reads that note and
//! checks the pid is still a `writeback` process.

use crate::sync::leave::LeavingNote;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::state::{HeldDelete, ObjectKind, Quarantined, RunRecord, Store};

use super::{age_secs, human_age, InspectError};

/// `meta` key of the daemon's note.
pub const DAEMON_KEY: &str = "daemon";

/// Quarantined groups listed one by one (the rest are counted; `--json` has them all).
const LIST: usize = 20;

/// The longest error shown for a quarantined group: a DC's reason and the advice after a
/// couple of DNs fit; a runaway message does not fill the screen.
const ERROR_CHARS: usize = 1_500;

/// What the daemon records of itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DaemonNote {
    pub pid: u32,
    pub started_at: String,
    #[serde(default)]
    pub stopped_at: Option<String>,
    /// The rule files loaded, and the hash of the rules folders' content they came from.
    pub rules: Vec<String>,
    pub rules_hash: String,
    pub rules_loaded_at: String,
    /// The last reload that did not compile (the last good rules stayed active).
    #[serde(default)]
    pub reload_error: Option<String>,
    pub poll_secs: f64,
    #[serde(default)]
    pub reconcile_secs: Option<f64>,
    /// On a shared state: writer or standby, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// A short hash of the rules folders' content (file paths and their hashes, as the watcher
/// sees them): the same on disk and in the daemon means the daemon runs what is on disk.
pub fn rules_hash(fingerprint: &BTreeMap<PathBuf, String>) -> String {
    let mut h = Sha256::new();
    for (p, f) in fingerprint {
        h.update(p.to_string_lossy().as_bytes());
        h.update(b"\0");
        h.update(f.as_bytes());
        h.update(b"\n");
    }
    crate::state::short_id(h)
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub state_file: String,
    pub daemon: DaemonState,
    /// A sync, plan or daemon cycle holds the state lock right now.
    pub busy: bool,
    /// The hash of the rules folders on disk now.
    pub rules_on_disk: String,
    pub last_success: Option<String>,
    pub last_runs: Vec<RunRecord>,
    pub delta_links: Vec<LinkAge>,
    pub held: Vec<HeldDelete>,
    /// The id to approve the held deletes that wait (not yet approved).
    pub held_set: Option<String>,
    /// Groups whose member removals are held back, and the id that approves them.
    pub held_removals: Vec<crate::state::HeldRemovalRow>,
    pub held_removals_set: Option<String>,
    /// Groups released with `writeback release`.
    pub released: Vec<crate::state::Released>,
    /// Groups the rules keep unwritten, or delete later (`delete_at`).
    pub leaving: Vec<LeavingNote>,
    /// Recorded trigger calls not yet delivered, and the last ones given up.
    pub trigger_calls: crate::state::OutboxCounts,
    pub trigger_calls_given_up: Vec<crate::state::OutboxEntry>,
    pub quarantine: Vec<Quarantined>,
    /// Members not found in AD, over every managed group as last compared (a sync's report
    /// counts only the groups it compared).
    pub unresolved: crate::state::UnresolvedTotal,
    pub next_reconciliation: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DaemonState {
    pub running: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<DaemonNote>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LinkAge {
    pub kind: &'static str,
    pub updated_at: Option<String>,
    pub age_secs: Option<i64>,
}

/// Is `pid` a live `writeback` process (Linux: `/proc/<pid>/cmdline`)?
fn alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("writeback"))
        .unwrap_or(false)
}

/// The daemon's note when the daemon that left it still runs (a stale note of a stopped or
/// killed one is `None`).
pub fn running_daemon(store: &Store) -> Result<Option<DaemonNote>, InspectError> {
    let note: Option<DaemonNote> = store
        .meta(DAEMON_KEY)?
        .and_then(|t| serde_json::from_str(&t).ok());
    Ok(note.filter(|n| n.stopped_at.is_none() && alive(n.pid)))
}

/// Reads everything status shows. `rules_on_disk` is [`rules_hash`] of the folders now.
pub fn gather(
    store: &Store,
    busy: bool,
    rules_on_disk: String,
    now: OffsetDateTime,
) -> Result<Status, InspectError> {
    let note: Option<DaemonNote> = store
        .meta(DAEMON_KEY)?
        .and_then(|t| serde_json::from_str(&t).ok());
    let running = note
        .as_ref()
        .is_some_and(|n| n.stopped_at.is_none() && alive(n.pid));
    let last_runs = store.recent_runs(10)?;
    let last_success = store
        .runs_where(None, Some("ok"), 1)?
        .into_iter()
        .next()
        .and_then(|r| r.finished_at);
    let delta_links = [ObjectKind::Group, ObjectKind::User]
        .into_iter()
        .map(|k| {
            let updated_at = store.delta_link_updated(k)?;
            let age = updated_at.as_deref().and_then(|t| age_secs(t, now));
            Ok(LinkAge {
                kind: k.as_str(),
                updated_at,
                age_secs: age,
            })
        })
        .collect::<Result<Vec<_>, InspectError>>()?;
    let held: Vec<HeldDelete> = store.held_deletes()?.into_values().collect();
    let held_set = store.held_waiting()?.map(|(id, _)| id);
    let held_removals: Vec<crate::state::HeldRemovalRow> =
        store.held_removals()?.into_values().collect();
    let held_removals_set = store.waiting_removals()?.map(|(id, _)| id);
    let released: Vec<crate::state::Released> = store.released()?.into_values().collect();
    let mut leaving = Vec::new();
    for (id, l) in store.leaving()? {
        let dn = store.anchor(&id)?.map(|a| a.dn).unwrap_or_default();
        leaving.push(LeavingNote::new(&id, dn, &l));
    }
    let trigger_calls = store.call_counts()?;
    let mut trigger_calls_given_up = store.calls_given_up(LIST)?;
    for c in &mut trigger_calls_given_up {
        // The arguments stay in the state (they hold the cloud group); status names the call.
        c.event_json.clear();
    }
    let quarantine: Vec<Quarantined> = store.quarantined()?.into_values().collect();
    let unresolved = store.unresolved_total()?;
    let next_reconciliation = match note.as_ref().filter(|_| running) {
        Some(n) => match n.reconcile_secs {
            Some(every) => {
                let last = store
                    .runs_where(None, None, 1_000)?
                    .into_iter()
                    .find(|r| r.mode == "reconcile")
                    .map(|r| r.started_at)
                    .unwrap_or_else(|| n.started_at.clone());
                next_after(&last, every)
            }
            None => None,
        },
        None => None,
    };
    Ok(Status {
        state_file: store.path(),
        daemon: DaemonState { running, note },
        busy,
        rules_on_disk,
        last_success,
        last_runs,
        delta_links,
        held,
        held_set,
        held_removals,
        held_removals_set,
        released,
        leaving,
        trigger_calls,
        trigger_calls_given_up,
        quarantine,
        unresolved,
        next_reconciliation,
    })
}

/// The standing total of unresolved members, as status and the console say it.
pub fn unresolved_line(u: &crate::state::UnresolvedTotal) -> String {
    match (u.members, u.groups) {
        (0, _) => "none".to_string(),
        (m, g) => format!(
            "{m} in {g} groups, as each group was last compared (`writeback explain <group>` lists a group's, with the reason)"
        ),
    }
}

fn next_after(at: &str, every_secs: f64) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    let t = OffsetDateTime::parse(at, &Rfc3339).ok()?;
    Some(crate::state::rfc3339_at_time(
        t + time::Duration::seconds_f64(every_secs),
    ))
}

pub fn render(s: &Status, now: OffsetDateTime) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "State file: {}", s.state_file);
    let ago = |t: &str| {
        age_secs(t, now)
            .map(|a| format!("{t} ({} ago)", human_age(a)))
            .unwrap_or_else(|| t.to_string())
    };
    match (&s.daemon.note, s.daemon.running) {
        (Some(n), true) => {
            let _ = writeln!(
                out,
                "Daemon: running (pid {}, since {}), polling every {} s",
                n.pid,
                ago(&n.started_at),
                n.poll_secs
            );
            let _ = writeln!(
                out,
                "Rules: {} (hash {}, loaded {}){}",
                n.rules.join(", "),
                n.rules_hash,
                ago(&n.rules_loaded_at),
                if n.rules_hash == s.rules_on_disk {
                    String::new()
                } else {
                    format!(
                        "; the rules on disk differ (hash {}): not loaded yet, or they do not compile",
                        s.rules_on_disk
                    )
                }
            );
            if let Some(e) = &n.reload_error {
                let cut: String = e.chars().take(400).collect();
                let _ = writeln!(out, "Last reload refused: {cut}");
            }
        }
        (Some(n), false) => {
            let _ = writeln!(
                out,
                "Daemon: not running (last started {}{})",
                ago(&n.started_at),
                n.stopped_at
                    .as_deref()
                    .map(|t| format!(", stopped {}", ago(t)))
                    .unwrap_or_else(|| ", did not stop cleanly".into())
            );
        }
        (None, _) => {
            let _ = writeln!(out, "Daemon: not running (never ran on this state file)");
        }
    }
    if s.busy {
        let _ = writeln!(
            out,
            "A sync or cycle is running now (the state lock is held)."
        );
    }
    let _ = writeln!(
        out,
        "Last successful run: {}",
        s.last_success
            .as_deref()
            .map(ago)
            .unwrap_or_else(|| "none".into())
    );
    for l in &s.delta_links {
        let _ = writeln!(
            out,
            "Cloud {}s read up to: {}",
            l.kind,
            l.updated_at
                .as_deref()
                .map(ago)
                .unwrap_or_else(|| "never".into())
        );
    }
    if let Some(t) = &s.next_reconciliation {
        let _ = writeln!(out, "Next reconciliation: {t}");
    }
    let _ = writeln!(
        out,
        "Members not found in AD: {}",
        unresolved_line(&s.unresolved)
    );
    let waiting: Vec<&HeldDelete> = s.held.iter().filter(|h| !h.approved).collect();
    let approved = s.held.len() - waiting.len();
    if let Some(id) = &s.held_set {
        let _ = writeln!(
            out,
            "\nDeletes held back ({}), waiting for approval: `writeback approve {id}`",
            waiting.len()
        );
        for h in waiting.iter().take(LIST) {
            let _ = writeln!(
                out,
                "  - {}  (group {}, held since {})",
                h.dn, h.cloud_id, h.held_at
            );
        }
        if waiting.len() > LIST {
            let _ = writeln!(out, "  ... and {} more", waiting.len() - LIST);
        }
    }
    if approved > 0 {
        let _ = writeln!(out, "Approved deletes not applied yet: {approved}");
    }
    if let Some(id) = &s.held_removals_set {
        let waiting: Vec<_> = s.held_removals.iter().filter(|h| !h.approved).collect();
        let _ = writeln!(
            out,
            "\nMember removals held back ({} groups), waiting for approval: `writeback approve {id}`",
            waiting.len()
        );
        for h in waiting.iter().take(LIST) {
            let _ = writeln!(
                out,
                "  - {}  (group {}): {} of {} members, held since {}",
                h.dn, h.cloud_id, h.removals, h.members, h.held_at
            );
        }
        if waiting.len() > LIST {
            let _ = writeln!(out, "  ... and {} more", waiting.len() - LIST);
        }
    }
    if !s.released.is_empty() {
        let _ = writeln!(
            out,
            "\nReleased ({}): no longer managed, AD objects left as they were; `writeback adopt` takes them back",
            s.released.len()
        );
        for r in s.released.iter().take(LIST) {
            let _ = writeln!(
                out,
                "  - {}  (group {}, released at {})",
                r.dn, r.cloud_id, r.released_at
            );
        }
        if s.released.len() > LIST {
            let _ = writeln!(out, "  ... and {} more", s.released.len() - LIST);
        }
    }
    let (kept, later): (Vec<&LeavingNote>, Vec<&LeavingNote>) =
        s.leaving.iter().partition(|l| l.delete_at.is_none());
    if !kept.is_empty() {
        let _ = writeln!(
            out,
            "\nKept ({}): out of scope, the rule keeps them as they are; no longer written",
            kept.len()
        );
        for l in kept.iter().take(LIST) {
            let _ = writeln!(out, "  = {}  (group {})", l.dn, l.cloud_id);
        }
        if kept.len() > LIST {
            let _ = writeln!(out, "  ... and {} more", kept.len() - LIST);
        }
    }
    if !later.is_empty() {
        let _ = writeln!(
            out,
            "\nTo be deleted later ({}): out of scope, the rule deletes them after a delay",
            later.len()
        );
        for l in later.iter().take(LIST) {
            let _ = writeln!(
                out,
                "  - {}  (group {}) at {}",
                l.dn,
                l.cloud_id,
                l.delete_at.as_deref().unwrap_or("?")
            );
        }
        if later.len() > LIST {
            let _ = writeln!(out, "  ... and {} more", later.len() - LIST);
        }
    }
    let c = &s.trigger_calls;
    if c.pending + c.retrying + c.given_up > 0 {
        let _ = writeln!(
            out,
            "\nTrigger calls: {} waiting, {} failed and retrying, {} given up",
            c.pending, c.retrying, c.given_up
        );
        for g in &s.trigger_calls_given_up {
            let _ = writeln!(
                out,
                "  ! {} of {} (rule {}, {} attempts, recorded {}): {}",
                g.hook,
                if g.cloud_id.is_empty() {
                    "the cycle"
                } else {
                    &g.cloud_id
                },
                g.rule,
                g.attempts,
                g.created_at,
                crate::printable::one_line(g.last_error.as_deref().unwrap_or(""))
            );
        }
    }
    if !s.quarantine.is_empty() {
        let _ = writeln!(
            out,
            "\nGroups failing, in quarantine ({}):",
            s.quarantine.len()
        );
        for q in s.quarantine.iter().take(LIST) {
            // The error on lines of its own, wrapped, not cut short: the DC's reason and the
            // advice come at its end, after one or two DNs. Bounded all the same, and on lines
            // of this listing only (a line break it carries is shown escaped).
            let err = crate::printable::one_line(q.error.trim_end());
            let err = super::cut_words(&err, ERROR_CHARS);
            let _ = writeln!(
                out,
                "  ! group {}: {} failure(s), next try {}:",
                q.cloud_id,
                q.failures,
                crate::state::rfc3339_at(q.retry_at)
            );
            out.push_str(&super::wrap_words(&err, 96, "      "));
        }
        let _ = writeln!(
            out,
            "  (`writeback explain <group>` shows one whole, with what to do)"
        );
        if s.quarantine.len() > LIST {
            let _ = writeln!(
                out,
                "  ... and {} more (`--json` lists them all)",
                s.quarantine.len() - LIST
            );
        }
    }
    let _ = writeln!(out, "\nLast runs:");
    if s.last_runs.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for r in &s.last_runs {
        let _ = writeln!(out, "  {}", super::history::line(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_state_has_a_readable_status() -> anyhow::Result<()> {
        let store = Store::open_in_memory()?;
        let now = OffsetDateTime::now_utc();
        let s = gather(&store, false, "abc".into(), now)?;
        assert!(!s.daemon.running);
        let text = render(&s, now);
        assert!(text.contains("Daemon: not running (never ran"), "{text}");
        assert!(text.contains("Cloud groups read up to: never"), "{text}");
        assert!(text.contains("Last runs:\n  none"), "{text}");
        Ok(())
    }

    #[test]
    fn a_failing_groups_reason_and_advice_are_shown_whole() -> anyhow::Result<()> {
        let store = Store::open_in_memory()?;
        let dn = "CN=Demo Blocked Group With A Long Name_238baccae6e2,OU=Security,OU=Cloud Groups,OU=Writeback,DC=corp,DC=example";
        let error = format!(
            "create {dn}: add \"{dn}\" failed: rc=19 (constraintViolation): 000021C7: AtrErr: DSID-03200BBA, #1: 0: 000021C7: DSID-03200BBA, problem 1005 (CONSTRAINT_ATT_TYPE), data 0, Att 90290 (sAMAccountName)\n"
        );
        let now = OffsetDateTime::now_utc();
        let mut s = gather(&store, false, "h".into(), now)?;
        s.quarantine = vec![Quarantined {
            cloud_id: "g1".into(),
            error,
            failures: 1,
            first_at: "2026-12-02T10:00:00.000Z".into(),
            last_at: "2026-12-02T10:00:00.000Z".into(),
            retry_at: now.unix_timestamp() + 60,
        }];
        let text = render(&s, now);
        let block: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("Groups failing"))
            .skip(1)
            .take_while(|l| !l.contains("writeback explain"))
            .collect();
        assert!(
            block[0].starts_with("  ! group g1: 1 failure(s), next try "),
            "{text}"
        );
        let joined = block[1..]
            .iter()
            .map(|l| l.trim())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            joined.ends_with("(constraintViolation): 000021C7: AtrErr: DSID-03200BBA, #1: 0: 000021C7: DSID-03200BBA, problem 1005 (CONSTRAINT_ATT_TYPE), data 0, Att 90290 (sAMAccountName)"),
            "{text}"
        );
        assert!(block[1..].iter().all(|l| l.starts_with("      ")), "{text}");
        Ok(())
    }

    #[test]
    fn a_dead_daemon_is_not_running_and_a_live_one_is() -> anyhow::Result<()> {
        let mut store = Store::open_in_memory()?;
        let note = DaemonNote {
            pid: u32::MAX - 1,
            started_at: "2026-12-02T10:00:00.000Z".into(),
            rules: vec!["10-a.rhai".into()],
            rules_hash: "h1".into(),
            rules_loaded_at: "2026-12-02T10:00:00.000Z".into(),
            poll_secs: 30.0,
            reconcile_secs: Some(3600.0),
            ..Default::default()
        };
        store.set_meta(DAEMON_KEY, &serde_json::to_string(&note)?)?;
        let now = OffsetDateTime::now_utc();
        let s = gather(&store, false, "h1".into(), now)?;
        assert!(!s.daemon.running, "no such pid");
        assert!(render(&s, now).contains("did not stop cleanly"));
        // This test process runs the `writeback-<hash>` test binary: a live writeback process.
        let me = DaemonNote {
            pid: std::process::id(),
            ..note
        };
        store.set_meta(DAEMON_KEY, &serde_json::to_string(&me)?)?;
        let s = gather(&store, false, "h2".into(), now)?;
        assert!(s.daemon.running);
        assert_eq!(
            s.next_reconciliation.as_deref(),
            Some("2026-12-02T11:00:00.000Z")
        );
        let text = render(&s, now);
        assert!(
            text.contains("the rules on disk differ (hash h2)"),
            "{text}"
        );
        Ok(())
    }
}
