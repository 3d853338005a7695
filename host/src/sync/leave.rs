//! What becomes of owned groups a rule no longer wants written. Pure: the verdicts, the owned
//! ids and the recorded leaving rows in, the deletes that are due and the rows to record out.
//!
//! `#{ leave: "keep" }` leaves the AD group as it is and stops writing it, as Connect group
//! writeback v2 does for a group disabled for writeback; the group stays Writeback's, so it is
//! written again when the rule wants it back and deleted when the cloud group is deleted (as
//! Microsoft's default does). `#{ leave: "delete", after }` waits that long, counted from when
//! the rule first said so, then deletes it like any other delete (through the delete gate).

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use crate::state::Leaving;

use super::select::Verdict;

/// What [`leave`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leave {
    /// Owned groups whose delay is over: to delete now, with their row (for the reason).
    pub due: BTreeMap<String, Leaving>,
    /// Rows to record (`Some`) or forget (`None`, the group is wanted again).
    pub record: BTreeMap<String, Option<Leaving>>,
}

impl Leave {
    /// The rows this cycle starts or changes (a group newly kept or newly waiting).
    pub fn started(&self) -> impl Iterator<Item = (&String, &Leaving)> {
        self.record
            .iter()
            .filter_map(|(id, l)| l.as_ref().map(|l| (id, l)))
    }
}

/// Decides for every owned group with a keep or delete-later verdict, and forgets the rows of
/// groups in scope again. `now` is Unix seconds.
pub fn leave(
    verdicts: &BTreeMap<String, Verdict>,
    owned: &BTreeSet<String>,
    recorded: &BTreeMap<String, Leaving>,
    now: i64,
) -> Leave {
    let mut out = Leave::default();
    for (id, v) in verdicts {
        let before = recorded.get(id);
        let wanted = match v {
            Verdict::InScope { .. } => {
                if before.is_some() {
                    out.record.insert(id.clone(), None);
                }
                continue;
            }
            Verdict::Keep if owned.contains(id) => Leaving {
                // Since it was first kept: a switch from delete-later starts a new period.
                since: before
                    .filter(|b| b.delete_at.is_none())
                    .map_or(now, |b| b.since),
                delete_at: None,
            },
            Verdict::DeleteAfter(secs) if owned.contains(id) => {
                // The delay counts from when the rule first said delete-later, not from when
                // it started keeping the group: a rule switched from keep to delete after 30
                // days does not delete years-old kept groups at once.
                let since = before
                    .filter(|b| b.delete_at.is_some())
                    .map_or(now, |b| b.since);
                let at = since.saturating_add(i64::try_from(*secs).unwrap_or(i64::MAX));
                let l = Leaving {
                    since,
                    delete_at: Some(at),
                };
                if at <= now {
                    out.due.insert(id.clone(), l);
                    continue;
                }
                l
            }
            _ => continue,
        };
        if before != Some(&wanted) {
            out.record.insert(id.clone(), Some(wanted));
        }
    }
    out
}

/// A group a cycle starts keeping or deleting later, as `sync` and `plan` show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeavingNote {
    pub cloud_id: String,
    pub dn: String,
    /// RFC 3339 UTC; `None` while kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_at: Option<String>,
}

impl LeavingNote {
    pub fn new(cloud_id: &str, dn: String, l: &Leaving) -> LeavingNote {
        LeavingNote {
            cloud_id: cloud_id.to_string(),
            dn,
            delete_at: l.delete_at.map(rfc3339),
        }
    }
}

/// Why a due group is deleted, for the plan and the audit trail.
pub fn due_reason(l: &Leaving) -> String {
    let waited = l.delete_at.unwrap_or(l.since).saturating_sub(l.since);
    format!(
        "the rule deletes it {} after it left scope (out of scope since {})",
        crate::rules::format_duration(u64::try_from(waited).unwrap_or(0)),
        rfc3339(l.since)
    )
}

/// Unix seconds as RFC 3339 (UTC); the number itself when out of range.
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(v: &[(&str, Verdict)]) -> BTreeMap<String, Verdict> {
        v.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const DAY: u64 = 86_400;

    #[test]
    fn kept_groups_are_recorded_once_and_never_deleted() {
        let v = verdicts(&[("kept", Verdict::Keep), ("never-written", Verdict::Keep)]);
        let owned = set(&["kept"]);
        let first = leave(&v, &owned, &BTreeMap::new(), 100);
        let row = Leaving {
            since: 100,
            delete_at: None,
        };
        assert_eq!(first.record, [("kept".to_string(), Some(row))].into());
        assert!(first.due.is_empty());
        // A year later: still kept, nothing to record again.
        let recorded = [("kept".to_string(), row)].into();
        let later = leave(&v, &owned, &recorded, 100 + 365 * DAY as i64);
        assert_eq!(later, Leave::default());
    }

    #[test]
    fn delete_after_waits_then_is_due() {
        let v = verdicts(&[("g", Verdict::DeleteAfter(7 * DAY))]);
        let owned = set(&["g"]);
        let first = leave(&v, &owned, &BTreeMap::new(), 1_000);
        let row = Leaving {
            since: 1_000,
            delete_at: Some(1_000 + 7 * DAY as i64),
        };
        assert_eq!(first.record, [("g".to_string(), Some(row))].into());
        let recorded: BTreeMap<String, Leaving> = [("g".to_string(), row)].into();
        assert_eq!(
            leave(&v, &owned, &recorded, 1_000 + 7 * DAY as i64 - 1),
            Leave::default()
        );
        let due = leave(&v, &owned, &recorded, 1_000 + 7 * DAY as i64);
        assert_eq!(due.due, [("g".to_string(), row)].into());
        assert!(due.record.is_empty());
        assert!(
            due_reason(&row).contains("7d after it left scope"),
            "{}",
            due_reason(&row)
        );
    }

    #[test]
    fn a_changed_delay_moves_the_date_and_a_switch_from_keep_starts_afresh() {
        let owned = set(&["g"]);
        let waiting: BTreeMap<String, Leaving> = [(
            "g".to_string(),
            Leaving {
                since: 0,
                delete_at: Some(7 * DAY as i64),
            },
        )]
        .into();
        let longer = leave(
            &verdicts(&[("g", Verdict::DeleteAfter(30 * DAY))]),
            &owned,
            &waiting,
            10,
        );
        assert_eq!(longer.record["g"].unwrap().delete_at, Some(30 * DAY as i64));
        let kept: BTreeMap<String, Leaving> = [(
            "g".to_string(),
            Leaving {
                since: 0,
                delete_at: None,
            },
        )]
        .into();
        let now = 400 * DAY as i64;
        let switched = leave(
            &verdicts(&[("g", Verdict::DeleteAfter(30 * DAY))]),
            &owned,
            &kept,
            now,
        );
        assert!(
            switched.due.is_empty(),
            "kept for 400 days, not due at once"
        );
        assert_eq!(switched.record["g"].unwrap().since, now);
    }

    #[test]
    fn back_in_scope_forgets_the_row_and_failures_change_nothing() {
        let row = Leaving {
            since: 5,
            delete_at: Some(50),
        };
        let recorded: BTreeMap<String, Leaving> =
            [("back".to_string(), row), ("failing".to_string(), row)].into();
        let v = verdicts(&[
            (
                "back",
                Verdict::InScope {
                    hash: "h".into(),
                    dn: "CN=b".into(),
                },
            ),
            ("failing", Verdict::Failed),
        ]);
        let out = leave(&v, &set(&["back", "failing"]), &recorded, 100);
        assert_eq!(out.record, [("back".to_string(), None)].into());
        assert!(out.due.is_empty(), "a failing rule never deletes");
    }
}
