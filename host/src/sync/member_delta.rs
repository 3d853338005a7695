//! Whether a group's change can be written as its member changes alone (the members the delta
//! added and removed, resolved and sent as one small modify) instead of a comparison of the
//! whole group with AD, and what that modify is. Pure: the cycle brings the facts.
//!
//! The short way is taken only when the group was in step before these changes: the hash of
//! what the rules want now, over the members it had before, is the hash last applied. That one
//! comparison says the rule output (name, OU, attributes, links) did not change, no earlier
//! change is still unapplied, and no removal is held (held groups have no applied hash).

use std::collections::{BTreeMap, BTreeSet};

use crate::graph::model::{CloudObject, MemberRef};
use crate::policy::RemovalPolicy;
use crate::rules::MemberPolicy;
use crate::state::{MemberChanges, MemberDigest};

use super::types::{dn_key, Change, Links, Op};

/// Why a group's member changes go the full comparison's way instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullCompare {
    /// The rule flattens nested groups or leaves members alone: its members are not the
    /// changed ones.
    Policy,
    /// Not anchored yet, or nothing applied to compare with.
    NotInStep,
    /// In quarantine: its last write failed.
    Quarantined,
    /// A member it keeps changed too (its AD match may have moved).
    MemberChanged,
    /// More removals than can go through without knowing the AD group's size.
    Removals,
    /// A removed member is no longer cached: where it is in AD is not known.
    RemovedUnknown,
    /// Its AD object was not found where the anchor says, or is not Writeback's.
    NotFound,
}

impl FullCompare {
    /// For the debug log.
    pub fn as_str(self) -> &'static str {
        match self {
            FullCompare::Policy => "the rule does not write cloud members as they are",
            FullCompare::NotInStep => "not in step before these changes",
            FullCompare::Quarantined => "in quarantine",
            FullCompare::MemberChanged => "a member it keeps changed",
            FullCompare::Removals => "removals may be over the removal threshold",
            FullCompare::RemovedUnknown => "a removed member is not in the cloud cache",
            FullCompare::NotFound => "its AD object is not where its anchor says",
        }
    }
}

/// What the cycle knows of one group besides its member changes.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub policy: MemberPolicy,
    /// The hash last applied (`None`: never, or forgotten after a failure or a hold).
    pub applied: Option<&'a str>,
    /// The hash of what the rules want now over the members before these changes.
    pub before: Option<&'a str>,
    pub anchored: bool,
    pub quarantined: bool,
    /// A member the group keeps (not one just added) has an unapplied change of its own
    /// ([`kept_changed`]).
    pub kept_changed: bool,
    pub removals: RemovalPolicy,
}

/// Whether a member `group` keeps through `changes` (not one they added) is among `pending`,
/// the users and groups with an unapplied change of their own.
pub fn kept_changed(
    group: &CloudObject,
    changes: &MemberChanges,
    pending: &BTreeSet<String>,
) -> bool {
    group
        .members
        .keys()
        .any(|m| pending.contains(m) && !changes.added.contains_key(m))
}

/// Whether a group's member changes `changes` can go the short way.
pub fn judge(changes: &MemberChanges, facts: Facts<'_>) -> Result<(), FullCompare> {
    if facts.policy != MemberPolicy::OnPremises {
        return Err(FullCompare::Policy);
    }
    if facts.quarantined {
        return Err(FullCompare::Quarantined);
    }
    if !facts.anchored || facts.applied.is_none() || facts.applied != facts.before {
        return Err(FullCompare::NotInStep);
    }
    // A kept member whose own object changed may match another AD object now.
    if facts.kept_changed {
        return Err(FullCompare::MemberChanged);
    }
    if super::removals::may_be_held(changes.removed.len(), facts.removals) {
        return Err(FullCompare::Removals);
    }
    Ok(())
}

/// `group` as it was before `changes`: what the hash last applied was computed over (the
/// tests' oracle for [`digest_before`]).
#[cfg(test)]
pub fn before(group: &CloudObject, changes: &MemberChanges) -> CloudObject {
    let mut g = group.clone();
    for id in changes.added.keys() {
        g.members.remove(id);
    }
    for (id, m) in &changes.removed {
        g.members.insert(id.clone(), m.clone());
    }
    g
}

/// The digest of a group's members before `changes`, from the digest `now` of its members
/// after them: the cache notes a member added only when it was not cached and removed only
/// when it was, so each added id is in `now` and no removed one is.
pub fn digest_before(now: MemberDigest, changes: &MemberChanges) -> MemberDigest {
    let mut d = now;
    for id in changes.added.keys() {
        d.remove(id);
    }
    for id in changes.removed.keys() {
        d.add(id);
    }
    d
}

/// A group `id` holding only `members` (to resolve them as the full path resolves a group's).
pub fn holding(id: &str, members: &BTreeMap<String, MemberRef>) -> CloudObject {
    CloudObject {
        id: id.to_string(),
        members: members.clone(),
        ..Default::default()
    }
}

/// The modify of the AD group at `dn`: the member DNs to add and to remove (a DN on both sides
/// cancels out). `None` when there is nothing to write.
pub fn change(
    cloud_id: &str,
    rule: &str,
    dn: &str,
    add: Vec<String>,
    remove: Vec<String>,
) -> Option<Change> {
    let adding: BTreeSet<String> = add.iter().map(|d| dn_key(d)).collect();
    let removing: BTreeSet<String> = remove.iter().map(|d| dn_key(d)).collect();
    let mut members_add: Vec<String> = add
        .into_iter()
        .filter(|d| !removing.contains(&dn_key(d)))
        .collect();
    let mut members_remove: Vec<String> = remove
        .into_iter()
        .filter(|d| !adding.contains(&dn_key(d)))
        .collect();
    members_add.sort();
    members_add.dedup();
    members_remove.sort();
    members_remove.dedup();
    if members_add.is_empty() && members_remove.is_empty() {
        return None;
    }
    Some(Change {
        cloud_id: cloud_id.to_string(),
        rule: Some(rule.to_string()),
        op: Op::Update {
            dn: dn.to_string(),
            move_to: None,
            changes: Vec::new(),
            members_add,
            members_remove,
            links: Links::default(),
            cloud: BTreeMap::new(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> MemberRef {
        MemberRef {
            odata_type: "#microsoft.graph.user".into(),
            id: id.into(),
        }
    }

    fn group(members: &[&str]) -> CloudObject {
        CloudObject {
            id: "g".into(),
            members: members.iter().map(|m| (m.to_string(), user(m))).collect(),
            ..Default::default()
        }
    }

    fn changes(added: &[&str], removed: &[&str]) -> MemberChanges {
        MemberChanges {
            added: added.iter().map(|m| (m.to_string(), user(m))).collect(),
            removed: removed.iter().map(|m| (m.to_string(), user(m))).collect(),
        }
    }

    const POLICY: RemovalPolicy = RemovalPolicy {
        percent: 50.0,
        min_members: 10,
    };

    fn facts() -> Facts<'static> {
        Facts {
            policy: MemberPolicy::OnPremises,
            applied: Some("h"),
            before: Some("h"),
            anchored: true,
            quarantined: false,
            kept_changed: false,
            removals: POLICY,
        }
    }

    #[test]
    fn the_group_before_its_changes() {
        let now = group(&["a", "new"]);
        let was = before(&now, &changes(&["new"], &["gone"]));
        let ids: Vec<&String> = was.members.keys().collect();
        assert_eq!(ids, ["a", "gone"]);
    }

    #[test]
    fn the_digest_before_the_changes_is_the_group_before_them() {
        // What the cache notes: an added id is a member now, a removed one is not.
        let cases: [(&[&str], &[&str], &[&str]); 4] = [
            (&["a", "new"], &["new"], &["gone"]),
            (&["b", "d", "f"], &["d"], &["a", "c", "e", "g"]),
            (&[], &[], &["x", "y"]),
            (&["m", "n"], &["m", "n"], &[]),
        ];
        for (now, added, removed) in cases {
            let (g, c) = (group(now), changes(added, removed));
            let want = MemberDigest::of(before(&g, &c).members.keys().map(String::as_str));
            let got = digest_before(MemberDigest::of(now.iter().copied()), &c);
            assert_eq!(
                got, want,
                "now {now:?}, added {added:?}, removed {removed:?}"
            );
        }
    }

    #[test]
    fn only_a_group_in_step_before_its_member_changes_goes_the_short_way() {
        let c = changes(&["b"], &[]);
        assert_eq!(judge(&c, facts()), Ok(()));
        let other = |f: Facts<'_>| judge(&c, f);
        let mut f = facts();
        f.before = Some("other");
        assert_eq!(other(f), Err(FullCompare::NotInStep));
        f = facts();
        f.applied = None;
        f.before = None;
        assert_eq!(other(f), Err(FullCompare::NotInStep));
        f = facts();
        f.anchored = false;
        assert_eq!(other(f), Err(FullCompare::NotInStep));
        f = facts();
        f.quarantined = true;
        assert_eq!(other(f), Err(FullCompare::Quarantined));
        f = facts();
        f.policy = MemberPolicy::Flatten;
        assert_eq!(other(f), Err(FullCompare::Policy));
        f = facts();
        f.kept_changed = true;
        assert_eq!(other(f), Err(FullCompare::MemberChanged));
    }

    #[test]
    fn a_kept_member_with_a_change_of_its_own_needs_the_full_compare() {
        let g = group(&["a", "b"]);
        let c = changes(&["b"], &[]);
        // The added member's own change is resolved anyway.
        let added = BTreeSet::from(["b".to_string()]);
        assert!(!kept_changed(&g, &c, &added));
        let kept = BTreeSet::from(["a".to_string()]);
        assert!(kept_changed(&g, &c, &kept));
        assert!(!kept_changed(&g, &c, &BTreeSet::new()));
    }

    #[test]
    fn removals_that_could_be_held_need_the_full_compare() {
        let five = ["r0", "r1", "r2", "r3", "r4"];
        let six = ["r0", "r1", "r2", "r3", "r4", "r5"];
        assert_eq!(judge(&changes(&[], &five), facts()), Ok(()));
        assert_eq!(
            judge(&changes(&[], &six), facts()),
            Err(FullCompare::Removals)
        );
    }

    #[test]
    fn the_modify_holds_the_member_dns_and_nothing_else() {
        let c = change(
            "g",
            "r.rhai",
            "CN=G,OU=W",
            vec!["CN=B".into(), "CN=A".into(), "cn=x".into()],
            vec!["CN=X".into(), "CN=Y".into()],
        )
        .expect("a change");
        match c.op {
            Op::Update {
                members_add,
                members_remove,
                changes,
                move_to,
                ..
            } => {
                assert_eq!(members_add, ["CN=A", "CN=B"]);
                assert_eq!(members_remove, ["CN=Y"]);
                assert!(changes.is_empty() && move_to.is_none());
            }
            other => panic!("{other:?}"),
        }
        assert!(change("g", "r", "CN=G", vec![], vec![]).is_none());
    }
}
