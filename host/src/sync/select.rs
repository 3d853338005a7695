//! Which groups a cycle looks at, and which of those it compares with AD or deletes. Pure: the
//! cycle hands in what the state store and the rules said, and gets sets of cloud ids back.
//!
//! A cycle costs what changed: with no pending change, no rules edit and no reconciliation it
//! is [`Sweep::Idle`] and reads nothing else; with k pending changes it looks at those groups,
//! the groups that contain them and nothing more. Only a rules (or settings) edit, a full
//! re-read or a reconciliation goes through every cached group, chunk by chunk.

use std::collections::{BTreeMap, BTreeSet};

use super::options::SyncOptions;

/// How much of the cache a cycle has to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sweep {
    /// Nothing changed: no evaluation, no LDAP.
    Idle,
    /// Only these groups (pending changes, the groups holding them).
    Changed(BTreeSet<String>),
    /// Every cached group.
    All(AllReason),
}

/// Why a cycle goes through every cached group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllReason {
    /// Nothing was applied with this state yet.
    FirstSync,
    /// The rules, their settings or the config that shapes the desired state changed since the
    /// applied hashes were computed.
    RulesChanged,
    /// `--full`: the tenant is read again.
    FullRead,
    /// A reconciliation: every owned AD object is compared.
    Reconcile,
}

impl AllReason {
    pub fn as_str(self) -> &'static str {
        match self {
            AllReason::FirstSync => "first sync",
            AllReason::RulesChanged => "rules changed",
            AllReason::FullRead => "full read",
            AllReason::Reconcile => "reconciliation",
        }
    }
}

/// What kind of sweep a cycle made, as reports, logs, the run history and the `sweep` label
/// of the metrics name it (its text is [`SweepKind::as_str`], the one place it is spelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SweepKind {
    #[default]
    Idle,
    Changed,
    All(AllReason),
}

impl SweepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SweepKind::Idle => "idle",
            SweepKind::Changed => "changed",
            SweepKind::All(r) => r.as_str(),
        }
    }
}

impl std::fmt::Display for SweepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for SweepKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Sweep {
    pub fn kind(&self) -> SweepKind {
        match self {
            Sweep::Idle => SweepKind::Idle,
            Sweep::Changed(_) => SweepKind::Changed,
            Sweep::All(r) => SweepKind::All(*r),
        }
    }
}

/// The rules against those the applied state was computed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RulesSeen {
    Same,
    Changed,
    /// No rules were recorded: nothing was applied with this state yet.
    Never,
}

/// Whether the sweep compares every group in scope whatever changed: a full read, a
/// reconciliation, or a first sync (`owned` 0: no group is in step yet). Then what the pending
/// changes touch need not be worked out.
pub fn compares_all(opts: &SyncOptions, rules: RulesSeen, owned: usize) -> bool {
    opts.reread_cloud || opts.compare_all || (rules == RulesSeen::Never && owned == 0)
}

/// Decides the sweep. `touched` is every group a pending change may affect (the pending groups,
/// the groups that hold a pending user or group, transitively).
pub fn sweep(opts: &SyncOptions, rules: RulesSeen, touched: BTreeSet<String>) -> Sweep {
    if opts.reread_cloud {
        Sweep::All(AllReason::FullRead)
    } else if opts.compare_all {
        Sweep::All(AllReason::Reconcile)
    } else if rules == RulesSeen::Never {
        Sweep::All(AllReason::FirstSync)
    } else if rules == RulesSeen::Changed {
        Sweep::All(AllReason::RulesChanged)
    } else if touched.is_empty() {
        Sweep::Idle
    } else {
        Sweep::Changed(touched)
    }
}

/// What the rules made of one group, kept compact (a whole-cache pass holds one per group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// In scope: the fingerprint of the rule output and members, and the DN it names.
    InScope {
        hash: String,
        dn: String,
    },
    OutOfScope,
    /// The rule keeps its AD object as it is, no longer written (see [`super::leave`]).
    Keep,
    /// The rule deletes its AD object once it has been leaving this many seconds.
    DeleteAfter(u64),
    /// The rule failed for this group: its AD object is left as it is (never deleted).
    Failed,
    /// Not in the cloud cache any more (deleted in the cloud).
    Gone,
}

/// The groups to write and the anchored groups to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// In scope and to be compared with AD (created when they have no AD object).
    pub compare: BTreeSet<String>,
    /// Owned, and out of scope or gone from the cloud.
    pub delete: BTreeSet<String>,
}

/// What [`select`] needs to know about the groups of a cycle.
#[derive(Debug, Clone, Copy)]
pub struct Known<'a> {
    pub verdicts: &'a BTreeMap<String, Verdict>,
    /// The hash last applied, for (at least) every in-scope id of `verdicts`.
    pub applied: &'a BTreeMap<String, String>,
    /// Cloud ids the host owns an AD object for (anchors), among those considered.
    pub owned: &'a BTreeSet<String>,
    /// Groups to compare whatever their hash says (a member whose AD match may have changed).
    pub forced: &'a BTreeSet<String>,
    /// Compare every in-scope group (reconciliation, full read).
    pub compare_all: bool,
}

/// Picks the groups to compare and to delete.
///
/// - compare: in scope, and forced, or `compare_all`, or never applied with this hash, or not
///   owned (no AD object yet);
/// - delete: owned and out of scope or gone (an owned id without a verdict counts as gone only
///   when the caller evaluated everything; pass its verdict as [`Verdict::Gone`] otherwise).
///   A group whose rule failed is never deleted; one the rule keeps or deletes later is left to
///   [`super::leave::leave`].
pub fn select(k: Known<'_>) -> Selection {
    let mut s = Selection::default();
    for (id, v) in k.verdicts {
        match v {
            Verdict::InScope { hash, .. } => {
                let in_step = k.applied.get(id) == Some(hash) && k.owned.contains(id);
                if k.compare_all || k.forced.contains(id) || !in_step {
                    s.compare.insert(id.clone());
                }
            }
            Verdict::OutOfScope | Verdict::Gone => {
                if k.owned.contains(id) {
                    s.delete.insert(id.clone());
                }
            }
            // Kept or waiting: `leave` decides; a failed rule leaves the object as it is.
            Verdict::Keep | Verdict::DeleteAfter(_) | Verdict::Failed => {}
        }
    }
    s
}

/// Groups whose member list depends on groups that appear or disappear in AD this cycle: a
/// parent of a new or deleted group must be compared too (a rename needs nothing: AD follows
/// it in every `member` value). Only in-scope parents not already compared.
pub fn parents_to_compare<E>(
    selection: &Selection,
    owned: &BTreeSet<String>,
    parents: impl FnOnce(&BTreeSet<String>) -> Result<BTreeSet<String>, E>,
    verdicts: &BTreeMap<String, Verdict>,
) -> Result<BTreeSet<String>, E> {
    let appearing: BTreeSet<String> = selection
        .compare
        .iter()
        .filter(|id| !owned.contains(*id))
        .chain(selection.delete.iter())
        .cloned()
        .collect();
    if appearing.is_empty() {
        return Ok(BTreeSet::new());
    }
    Ok(parents(&appearing)?
        .into_iter()
        .filter(|p| !selection.compare.contains(p))
        .filter(|p| matches!(verdicts.get(p), Some(Verdict::InScope { .. })))
        .collect())
}

/// Every group reached upwards from `start` through `parents_of` (the groups containing a
/// group, and so on), `start` excluded unless a cycle leads back to it. Nested groups are a
/// DAG in Entra, but a cycle is followed once.
pub fn ancestors<E>(
    start: &BTreeSet<String>,
    mut parents_of: impl FnMut(&BTreeSet<String>) -> Result<BTreeSet<String>, E>,
) -> Result<BTreeSet<String>, E> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut frontier = start.clone();
    while !frontier.is_empty() {
        let next: BTreeSet<String> = parents_of(&frontier)?
            .into_iter()
            .filter(|p| !seen.contains(p))
            .collect();
        seen.extend(next.iter().cloned());
        frontier = next;
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn in_scope(h: &str) -> Verdict {
        Verdict::InScope {
            hash: h.into(),
            dn: format!("CN={h},OU=X"),
        }
    }

    fn opts(reread: bool, all: bool) -> SyncOptions {
        SyncOptions {
            reread_cloud: reread,
            compare_all: all,
            ..Default::default()
        }
    }

    #[test]
    fn nothing_pending_is_idle_and_anything_else_says_why() {
        use RulesSeen::{Changed, Never, Same};
        assert_eq!(sweep(&opts(false, false), Same, set(&[])), Sweep::Idle);
        assert_eq!(
            sweep(&opts(false, false), Same, set(&["g1"])),
            Sweep::Changed(set(&["g1"]))
        );
        assert_eq!(
            sweep(&opts(false, false), Changed, set(&[])),
            Sweep::All(AllReason::RulesChanged)
        );
        assert_eq!(
            sweep(&opts(false, false), Never, set(&["g1"])),
            Sweep::All(AllReason::FirstSync)
        );
        assert_eq!(
            sweep(&opts(false, true), Same, set(&[])),
            Sweep::All(AllReason::Reconcile)
        );
        assert_eq!(
            sweep(&opts(true, true), Changed, set(&["g"])),
            Sweep::All(AllReason::FullRead)
        );
    }

    #[test]
    fn compares_only_what_is_not_in_step() {
        let verdicts: BTreeMap<String, Verdict> = [
            ("same", in_scope("h1")),
            ("changed", in_scope("h2")),
            ("new", in_scope("h3")),
            ("forced", in_scope("h4")),
            ("unowned", in_scope("h5")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let applied: BTreeMap<String, String> = [
            ("same", "h1"),
            ("changed", "old"),
            ("forced", "h4"),
            ("unowned", "h5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let owned = set(&["same", "changed", "forced"]);
        let forced = set(&["forced"]);
        let s = select(Known {
            verdicts: &verdicts,
            applied: &applied,
            owned: &owned,
            forced: &forced,
            compare_all: false,
        });
        assert_eq!(s.compare, set(&["changed", "forced", "new", "unowned"]));
        assert!(s.delete.is_empty());
        let all = select(Known {
            compare_all: true,
            ..Known {
                verdicts: &verdicts,
                applied: &applied,
                owned: &owned,
                forced: &forced,
                compare_all: false,
            }
        });
        assert_eq!(all.compare.len(), 5);
    }

    #[test]
    fn deletes_owned_groups_out_of_scope_or_gone_never_failed_ones() {
        let verdicts: BTreeMap<String, Verdict> = [
            ("out", Verdict::OutOfScope),
            ("gone", Verdict::Gone),
            ("failed", Verdict::Failed),
            ("out-unowned", Verdict::OutOfScope),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let owned = set(&["out", "gone", "failed"]);
        let s = select(Known {
            verdicts: &verdicts,
            applied: &BTreeMap::new(),
            owned: &owned,
            forced: &BTreeSet::new(),
            compare_all: true,
        });
        assert_eq!(s.delete, set(&["gone", "out"]));
        assert!(s.compare.is_empty());
    }

    #[test]
    fn parents_of_new_and_deleted_groups_are_compared() {
        let verdicts: BTreeMap<String, Verdict> = [
            ("p1", in_scope("a")),
            ("p2", in_scope("b")),
            ("p3", Verdict::OutOfScope),
            ("new", in_scope("c")),
            ("renamed", in_scope("d")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let selection = Selection {
            compare: set(&["new", "renamed"]),
            delete: set(&["old"]),
        };
        let owned = set(&["renamed", "old", "p1", "p2"]);
        let parents = |ids: &BTreeSet<String>| {
            let mut out = BTreeSet::new();
            for id in ids {
                match id.as_str() {
                    "new" => out.extend(set(&["p1", "p3"])),
                    "old" => out.extend(set(&["p2", "new"])),
                    "renamed" => out.extend(set(&["p9"])),
                    _ => {}
                }
            }
            Ok::<_, ()>(out)
        };
        // p1 holds the new group, p2 the deleted one; p3 is out of scope; `new` is compared
        // already; `renamed` is owned, so its parents need nothing.
        assert_eq!(
            parents_to_compare(&selection, &owned, parents, &verdicts),
            Ok(set(&["p1", "p2"]))
        );
    }

    #[test]
    fn ancestors_follow_nesting_upwards_and_survive_cycles() {
        let up = |ids: &BTreeSet<String>| {
            let mut out = BTreeSet::new();
            for id in ids {
                match id.as_str() {
                    "c" => out.extend(set(&["b"])),
                    "b" => out.extend(set(&["a", "x"])),
                    "a" => out.extend(set(&["c"])),
                    _ => {}
                }
            }
            Ok::<_, ()>(out)
        };
        assert_eq!(ancestors(&set(&["c"]), up), Ok(set(&["a", "b", "c", "x"])));
        assert_eq!(ancestors(&set(&["x"]), up), Ok(set(&[])));
        assert_eq!(
            ancestors(&set(&["c"]), |_| Err("store down")),
            Err("store down")
        );
    }
}
