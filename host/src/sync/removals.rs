//! Which member removals go through on their own. Pure.
//!
//! A cloud group that suddenly loses most of its members (a broken dynamic-membership rule, a
//! script that empties it by mistake) would strip its AD group in one cycle, and with it the
//! file-share access of everyone in it. When a change would remove more than a share of a
//! group's current AD members, and the group has at least a minimum of members (small groups
//! change by large shares all the time), those removals are held: the rest of the group's
//! change and of the cycle goes through, and an operator approves exactly that set of removals
//! (`writeback approve`) for it to be applied.

use std::collections::BTreeMap;

use serde::Serialize;

use super::types::{ActualObject, Change, Op};

pub use crate::policy::RemovalPolicy;

/// The removals of one group held back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldRemoval {
    pub cloud_id: String,
    pub dn: String,
    /// How many members would be removed, of how many the AD group has.
    pub removals: usize,
    pub members: usize,
    /// Fingerprint of exactly these removals: an approval covers this set and no other.
    pub removal_hash: String,
}

/// The member removals a cycle held, as one set to approve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldRemovals {
    /// What `writeback approve` takes: a hash of the groups and their removal fingerprints.
    pub set_id: String,
    /// The set differs from the one held before (the daemon logs it once).
    pub new: bool,
    pub groups: Vec<HeldRemoval>,
}

/// `groups` as one set to approve, or `None` when nothing was held. `before` is the id of the
/// set waiting before this cycle.
pub fn held_set(mut groups: Vec<HeldRemoval>, before: Option<String>) -> Option<HeldRemovals> {
    if groups.is_empty() {
        return None;
    }
    groups.sort_by(|a, b| a.cloud_id.cmp(&b.cloud_id));
    let keys: Vec<String> = groups
        .iter()
        .map(|h| format!("{}:{}", h.cloud_id, h.removal_hash))
        .collect();
    let set_id = crate::state::held_set_id(keys.iter().map(String::as_str));
    Some(HeldRemovals {
        new: before.as_deref() != Some(set_id.as_str()),
        set_id,
        groups,
    })
}

/// Fingerprint of a set of member DNs, whatever their order and case (the held-set hash of
/// their lower-cased forms).
pub fn removal_hash(dns: &[String]) -> String {
    let keys: Vec<String> = dns.iter().map(|d| d.to_ascii_lowercase()).collect();
    crate::state::held_set_id(keys.iter().map(String::as_str))
}

/// Whether removing `removals` of `members` is held under `policy`.
pub fn over_threshold(removals: usize, members: usize, policy: RemovalPolicy) -> bool {
    members >= policy.min_members.max(1)
        && (removals as f64) * 100.0 > policy.percent * (members as f64)
}

/// Whether `removals` could be held whatever the size of the AD group (which a change written
/// from the delta alone does not read): held for the smallest group that holds them all and
/// that the threshold applies to.
pub fn may_be_held(removals: usize, policy: RemovalPolicy) -> bool {
    removals > 0 && over_threshold(removals, removals.max(policy.min_members), policy)
}

/// Takes the held removals out of `changes` (a change left with nothing to do is dropped) and
/// returns them. `approved` maps a group to the removal hash an operator approved: that set,
/// and only that one, goes through.
pub fn hold(
    changes: &mut Vec<Change>,
    actual: &BTreeMap<String, ActualObject>,
    policy: RemovalPolicy,
    approved: &BTreeMap<String, String>,
) -> Vec<HeldRemoval> {
    let mut held = Vec::new();
    changes.retain_mut(|c| {
        let Op::Update {
            cloud,
            dn,
            move_to,
            changes: attrs,
            members_add,
            members_remove,
            links,
        } = &mut c.op
        else {
            return true;
        };
        let members = actual.get(&c.cloud_id).map_or(0, |a| a.members.len());
        if members_remove.is_empty() || !over_threshold(members_remove.len(), members, policy) {
            return true;
        }
        let hash = removal_hash(members_remove);
        if approved.get(&c.cloud_id) == Some(&hash) {
            return true;
        }
        held.push(HeldRemoval {
            cloud_id: c.cloud_id.clone(),
            dn: dn.clone(),
            removals: members_remove.len(),
            members,
            removal_hash: hash,
        });
        members_remove.clear();
        move_to.is_some()
            || !attrs.is_empty()
            || !members_add.is_empty()
            || !links.is_empty()
            || !cloud.is_empty()
    });
    held
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::types::AttrChange;

    const POLICY: RemovalPolicy = RemovalPolicy {
        percent: 50.0,
        min_members: 10,
    };

    fn actual(id: &str, n: usize) -> (String, ActualObject) {
        (
            id.to_string(),
            ActualObject {
                cloud_id: id.into(),
                dn: format!("CN={id},OU=W"),
                members: (0..n).map(|i| format!("CN=u{i},OU=U")).collect(),
                ..Default::default()
            },
        )
    }

    fn update(id: &str, remove: usize, add: usize, attr: bool) -> Change {
        Change {
            cloud_id: id.into(),
            rule: Some("r".into()),
            op: Op::Update {
                cloud: Default::default(),
                links: Default::default(),
                dn: format!("CN={id},OU=W"),
                move_to: None,
                changes: if attr {
                    vec![AttrChange::Replace {
                        attr: "description".into(),
                        values: vec!["new".into()],
                        old: vec![],
                    }]
                } else {
                    vec![]
                },
                members_add: (0..add).map(|i| format!("CN=n{i},OU=U")).collect(),
                members_remove: (0..remove).map(|i| format!("CN=u{i},OU=U")).collect(),
            },
        }
    }

    #[test]
    fn the_threshold_needs_both_the_share_and_the_size() {
        assert!(!over_threshold(5, 10, POLICY));
        assert!(over_threshold(6, 10, POLICY));
        // Small groups are never held.
        assert!(!over_threshold(9, 9, POLICY));
        assert!(over_threshold(1000, 1000, POLICY));
    }

    #[test]
    fn held_removals_leave_the_rest_of_the_change_and_the_cycle() {
        let actual: BTreeMap<String, ActualObject> = [
            actual("emptied", 12),
            actual("renamed", 12),
            actual("small", 4),
            actual("some", 12),
        ]
        .into_iter()
        .collect();
        let mut changes = vec![
            update("emptied", 12, 0, false),
            update("renamed", 12, 1, true),
            update("small", 4, 0, false),
            update("some", 3, 0, false),
        ];
        let held = hold(&mut changes, &actual, POLICY, &BTreeMap::new());
        let ids: Vec<&str> = held.iter().map(|h| h.cloud_id.as_str()).collect();
        assert_eq!(ids, ["emptied", "renamed"]);
        assert_eq!((held[0].removals, held[0].members), (12, 12));
        // "emptied" had nothing else to do: dropped; "renamed" keeps its description and add.
        let left: Vec<&str> = changes.iter().map(|c| c.cloud_id.as_str()).collect();
        assert_eq!(left, ["renamed", "small", "some"]);
        match &changes[0].op {
            Op::Update {
                changes,
                members_add,
                members_remove,
                ..
            } => {
                assert_eq!(changes.len(), 1);
                assert_eq!(members_add.len(), 1);
                assert!(members_remove.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_approval_lets_exactly_that_set_through() {
        let actual: BTreeMap<String, ActualObject> = [actual("g", 12)].into_iter().collect();
        let mut first = vec![update("g", 12, 0, false)];
        let held = hold(&mut first, &actual, POLICY, &BTreeMap::new());
        let approved: BTreeMap<String, String> = [("g".to_string(), held[0].removal_hash.clone())]
            .into_iter()
            .collect();
        let mut same = vec![update("g", 12, 0, false)];
        assert!(hold(&mut same, &actual, POLICY, &approved).is_empty());
        assert_eq!(same.len(), 1);
        // Another set (one member fewer removed) needs its own approval.
        let mut other = vec![update("g", 11, 0, false)];
        assert_eq!(hold(&mut other, &actual, POLICY, &approved).len(), 1);
        assert!(other.is_empty());
    }

    #[test]
    fn removals_that_no_group_size_could_hold_are_known_without_the_size() {
        let p = RemovalPolicy {
            percent: 50.0,
            min_members: 10,
        };
        // Five of at least ten members is never over half; six of exactly ten is.
        assert!(!may_be_held(0, p) && !may_be_held(5, p));
        assert!(may_be_held(6, p) && may_be_held(500, p));
        let all = RemovalPolicy {
            percent: 100.0,
            min_members: 10,
        };
        assert!(!may_be_held(500, all));
    }

    #[test]
    fn the_hash_ignores_order_and_case() {
        assert_eq!(
            removal_hash(&["CN=a".into(), "cn=B".into()]),
            removal_hash(&["CN=b".into(), "CN=A".into()])
        );
        assert_ne!(
            removal_hash(&["CN=a".into()]),
            removal_hash(&["CN=b".into()])
        );
    }
}
