//! The gate between a plan and AD: how many deletes a cycle may apply on its own. Pure.
//!
//! Over the threshold, the deletes are held back and everything else is applied; an operator
//! approves the held set (`writeback approve <id>`), and the approved deletes go through on the
//! next cycle. A whole-cache pass that puts nothing in scope (a rule edit gone wrong) applies
//! nothing at all.

use std::collections::BTreeSet;

use serde::Serialize;

/// What the gate knows of a cycle.
#[derive(Debug, Clone, Copy)]
pub struct GateInput<'a> {
    /// The owned groups the plan deletes.
    pub deletes: &'a BTreeSet<String>,
    /// Held deletes an operator approved.
    pub approved: &'a BTreeSet<String>,
    pub allow_deletes: bool,
    pub threshold: usize,
    pub percent: Option<f64>,
    /// Groups Writeback owns (anchors), for the percentage.
    pub owned: usize,
    /// A whole-cache pass: cached groups and how many are in scope.
    pub cloud_groups: Option<usize>,
    pub in_scope: Option<usize>,
}

/// What the gate lets through.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    /// Apply everything.
    Open,
    /// Apply nothing: the reason.
    Blocked(String),
    /// Apply everything but these deletes, for the reason given.
    Hold {
        ids: BTreeSet<String>,
        reason: String,
    },
}

/// A cycle's held deletes, as the report shows them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Held {
    /// Approve with `writeback approve <set_id>`.
    pub set_id: String,
    pub reason: String,
    pub deletes: Vec<HeldEntry>,
    /// Not the set held by the cycle before (it is logged only then).
    pub new: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct HeldEntry {
    pub cloud_id: String,
    pub dn: String,
}

pub fn gate(g: GateInput<'_>) -> Gate {
    if g.deletes.is_empty() || g.allow_deletes {
        return Gate::Open;
    }
    if let (Some(0), Some(groups)) = (g.in_scope, g.cloud_groups) {
        if groups > 0 {
            // A rule edit that takes every group out of scope must not wipe AD, however few
            // groups there are; nor should it write anything else.
            return Gate::Blocked(format!(
                "the rules put none of the {groups} cloud groups in scope, so the plan deletes every group Writeback owns ({}); nothing was applied. If that is intended, run `writeback sync --allow-deletes`",
                g.deletes.len()
            ));
        }
    }
    let unapproved: BTreeSet<String> = g.deletes.difference(g.approved).cloned().collect();
    let n = unapproved.len();
    let over_count = n > g.threshold;
    let over_share = g.percent.filter(|p| n as f64 > p / 100.0 * g.owned as f64);
    let reason = match (over_count, over_share) {
        (true, _) => format!(
            "{n} deletes, more than the delete threshold ({})",
            g.threshold
        ),
        (false, Some(p)) => format!(
            "{n} deletes, more than {p}% of the {} groups Writeback owns",
            g.owned
        ),
        (false, None) => return Gate::Open,
    };
    Gate::Hold {
        ids: unapproved,
        reason,
    }
}

/// The held deletes to record after a cycle: the set this cycle held back (waiting, not
/// approved), and the approved deletes that failed in AD (`failed`: their cloud ids), kept
/// approved so the next cycle tries them again without asking twice. Everything else that was
/// held is done.
pub fn still_held(
    held: Option<&Held>,
    failed: &BTreeSet<&str>,
    before: &std::collections::BTreeMap<String, crate::state::HeldDelete>,
) -> Vec<crate::state::HeldDelete> {
    let mut rows: Vec<crate::state::HeldDelete> = held
        .iter()
        .flat_map(|h| &h.deletes)
        .map(|e| crate::state::HeldDelete {
            cloud_id: e.cloud_id.clone(),
            dn: e.dn.clone(),
            approved: false,
            held_at: String::new(),
        })
        .collect();
    rows.extend(
        failed
            .iter()
            .filter_map(|id| before.get(*id).filter(|b| b.approved).cloned()),
    );
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn input<'a>(deletes: &'a BTreeSet<String>, approved: &'a BTreeSet<String>) -> GateInput<'a> {
        GateInput {
            deletes,
            approved,
            allow_deletes: false,
            threshold: 2,
            percent: None,
            owned: 100,
            cloud_groups: None,
            in_scope: None,
        }
    }

    #[test]
    fn deletes_up_to_the_threshold_go_through_more_are_held() {
        let none = ids(&[]);
        let two = ids(&["a", "b"]);
        assert_eq!(gate(input(&two, &none)), Gate::Open);
        let three = ids(&["a", "b", "c"]);
        match gate(input(&three, &none)) {
            Gate::Hold { ids: held, reason } => {
                assert_eq!(held, three);
                assert!(reason.contains("delete threshold (2)"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let allow = GateInput {
            allow_deletes: true,
            ..input(&three, &none)
        };
        assert_eq!(gate(allow), Gate::Open);
    }

    #[test]
    fn approved_deletes_go_through_and_only_new_ones_count() {
        let deletes = ids(&["a", "b", "c", "d", "e"]);
        let approved = ids(&["a", "b", "c"]);
        // Two new deletes beside the approved three: within the threshold.
        assert_eq!(gate(input(&deletes, &approved)), Gate::Open);
        let more = ids(&["a", "b", "c", "d", "e", "f"]);
        match gate(input(&more, &approved)) {
            Gate::Hold { ids: held, .. } => assert_eq!(held, ids(&["d", "e", "f"])),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_percentage_of_owned_groups_holds_too() {
        let none = ids(&[]);
        let two = ids(&["a", "b"]);
        let g = GateInput {
            percent: Some(1.5),
            ..input(&two, &none)
        };
        match gate(g) {
            Gate::Hold { reason, .. } => assert!(reason.contains("1.5% of the 100"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let g = GateInput {
            percent: Some(2.0),
            ..input(&two, &none)
        };
        assert_eq!(gate(g), Gate::Open);
    }

    #[test]
    fn nothing_in_scope_blocks_everything_even_one_delete() {
        let none = ids(&[]);
        let one = ids(&["a"]);
        let g = GateInput {
            cloud_groups: Some(40),
            in_scope: Some(0),
            ..input(&one, &none)
        };
        assert!(matches!(gate(g), Gate::Blocked(r) if r.contains("none of the 40")));
    }

    #[test]
    fn the_new_set_waits_and_a_failed_approved_delete_stays_approved() {
        use crate::state::HeldDelete;
        let row = |id: &str, approved: bool| HeldDelete {
            cloud_id: id.into(),
            dn: format!("CN={id},OU=W"),
            approved,
            held_at: "2026-01-01T00:00:00.000Z".into(),
        };
        let before = std::collections::BTreeMap::from([
            ("a".to_string(), row("a", true)),
            ("b".to_string(), row("b", true)),
            ("c".to_string(), row("c", false)),
        ]);
        let held = Held {
            set_id: "s1".into(),
            reason: "over the threshold".into(),
            deletes: vec![HeldEntry {
                cloud_id: "n".into(),
                dn: "CN=n,OU=W".into(),
            }],
            new: true,
        };
        // "a" failed in AD after its approval; "b" went through; "c" was never approved.
        let failed = BTreeSet::from(["a", "c"]);
        let rows = still_held(Some(&held), &failed, &before);
        let got: Vec<(&str, bool)> = rows
            .iter()
            .map(|r| (r.cloud_id.as_str(), r.approved))
            .collect();
        assert_eq!(got, [("n", false), ("a", true)]);
        assert!(still_held(None, &BTreeSet::new(), &before).is_empty());
    }
}
