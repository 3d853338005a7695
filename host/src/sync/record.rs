//! What a batch leaves in the state store after its apply: anchors, applied hashes, audit
//! events, and which changes stay pending. [`bookkeeping`] is pure (plan + outcomes in, a list
//! of writes out); [`write`] carries the list out in one transaction.

use std::collections::{BTreeMap, BTreeSet};

use crate::state::{Anchor, AuditEvent};

use super::apply::{Action, Outcome};
use super::types::{ActualObject, Change, DesiredObject};

/// One write to the state store.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Event(AuditEvent),
    PutAnchor(Anchor),
    RemoveAnchor(String),
    /// The group is in step with this hash: the next cycle skips it while nothing changes.
    PutApplied(String, String),
    /// Not (fully) applied: compared again next time.
    RemoveApplied(String),
    /// A create of this cloud id at this DN is about to be written (see `ownership`).
    PutIntent(String, String),
    /// The create was recorded (or its object is gone): the intent is settled.
    RemoveIntent(String),
    /// Writeback added the group (cloud id) to the group at this DN: its own link.
    PutLink(String, String),
    /// That link was removed (or found gone).
    RemoveLink(String, String),
    /// The group was deleted: AD dropped its memberships with it.
    RemoveLinks(String),
    /// A trigger call to deliver, recorded with the change that fires it.
    Enqueue(crate::state::NewCall),
    /// Recorded call `id` was delivered: forgotten.
    CallDelivered(i64),
    /// Recorded call `id` failed with this error: tried again at the time given, or given up.
    CallFailed(i64, String, Option<i64>),
    /// The group's members (ids) not found in AD when it was last compared (none forgets it).
    Unresolved(String, Vec<String>),
    /// A group written from its member changes alone: added members not found (`add`), and
    /// removed members that are no longer to find (`remove`).
    UnresolvedEdit {
        group: String,
        add: Vec<String>,
        remove: Vec<String>,
    },
}

/// What each compared group leaves of its members not found in AD, for the standing total
/// `status` shows: the group's whole list, or, for a group written from its member changes
/// alone (`short`: the removed member ids by group), the added ones not found and the
/// removed ones.
pub fn unresolved_writes(
    desired: &BTreeMap<String, DesiredObject>,
    unresolved: &[super::types::Unresolved],
    short: &BTreeMap<String, Vec<String>>,
) -> Vec<Write> {
    let mut missing: BTreeMap<&str, Vec<String>> =
        desired.keys().map(|id| (id.as_str(), Vec::new())).collect();
    for u in unresolved {
        if let Some(m) = missing.get_mut(u.group_id.as_str()) {
            m.push(u.member_id.clone());
        }
    }
    missing
        .into_iter()
        .filter_map(|(id, add)| match short.get(id) {
            None => Some(Write::Unresolved(id.to_string(), add)),
            Some(removed) if add.is_empty() && removed.is_empty() => None,
            Some(removed) => Some(Write::UnresolvedEdit {
                group: id.to_string(),
                add,
                remove: removed.clone(),
            }),
        })
        .collect()
}

/// What a batch's plan and outcomes mean for the store.
///
/// - every outcome is audited, with its change;
/// - a delete that worked drops the anchor and the hash;
/// - a create or update that worked records the anchor and the hash; an update that failed
///   keeps the anchor (the object is still there and still ours) and forgets the hash;
/// - a group that was compared and needed no change is in step: its anchor and hash are
///   recorded, so the next cycle skips it.
pub fn bookkeeping(
    changes: &[Change],
    outcomes: &[Outcome],
    desired: &BTreeMap<String, DesiredObject>,
    hashes: &BTreeMap<String, String>,
    actual: &BTreeMap<String, ActualObject>,
) -> Vec<Write> {
    let by_id: BTreeMap<&String, &Change> = changes.iter().map(|c| (&c.cloud_id, c)).collect();
    let mut out = Vec::new();
    for o in outcomes {
        out.extend(outcome_writes(
            o,
            by_id.get(&o.cloud_id).copied(),
            desired,
            hashes,
            actual,
        ));
    }
    // Compared, no change needed: in step.
    let changed: BTreeSet<&String> = changes.iter().map(|c| &c.cloud_id).collect();
    for (id, d) in desired {
        if changed.contains(id) {
            continue;
        }
        if let (Some(a), Some(h)) = (actual.get(id), hashes.get(id)) {
            out.push(Write::PutApplied(id.clone(), h.clone()));
            out.push(anchor(
                id,
                a.guid.clone().unwrap_or_default(),
                &a.dn,
                &d.rule,
            ));
            out.push(Write::RemoveIntent(id.clone()));
        }
    }
    out
}

/// The anchor record of an object.
fn anchor(id: &str, guid: String, dn: &str, rule: &str) -> Write {
    Write::PutAnchor(Anchor {
        cloud_id: id.to_string(),
        object_guid: guid,
        dn: dn.to_string(),
        rule: rule.to_string(),
        updated_at: String::new(),
    })
}

/// What one outcome records: its audit event, and its anchor, hash, intent and links as it
/// went (see [`bookkeeping`]).
fn outcome_writes(
    o: &Outcome,
    change: Option<&Change>,
    desired: &BTreeMap<String, DesiredObject>,
    hashes: &BTreeMap<String, String>,
    actual: &BTreeMap<String, ActualObject>,
) -> Vec<Write> {
    let mut out = Vec::new();
    let detail = change
        .map(|c| serde_json::to_value(c).unwrap_or_default())
        .unwrap_or_default();
    out.push(Write::Event(AuditEvent {
        cloud_id: o.cloud_id.clone(),
        action: o.action.as_str().to_string(),
        dn: o.dn.clone(),
        detail,
        outcome: if o.ok() { "ok".into() } else { "failed".into() },
    }));
    match o.action {
        Action::Delete => {
            if o.error.is_none() {
                out.push(Write::RemoveAnchor(o.cloud_id.clone()));
                out.push(Write::RemoveApplied(o.cloud_id.clone()));
                out.push(Write::RemoveIntent(o.cloud_id.clone()));
                out.push(Write::RemoveLinks(o.cloud_id.clone()));
                out.push(Write::Unresolved(o.cloud_id.clone(), Vec::new()));
            }
        }
        Action::Create | Action::Update => {
            // Links are recorded as they landed, whatever else failed: a link added is
            // Writeback's to remove later, and one removed is no longer to be removed.
            out.extend(
                o.links_added
                    .iter()
                    .map(|t| Write::PutLink(o.cloud_id.clone(), t.clone())),
            );
            out.extend(
                o.links_removed
                    .iter()
                    .map(|t| Write::RemoveLink(o.cloud_id.clone(), t.clone())),
            );
            let guid = o
                .guid
                .clone()
                .or_else(|| actual.get(&o.cloud_id).and_then(|a| a.guid.clone()));
            if o.error.is_none() || (o.action == Action::Update && guid.is_some()) {
                if let Some(d) = desired.get(&o.cloud_id) {
                    out.push(anchor(
                        &o.cloud_id,
                        guid.unwrap_or_default(),
                        &o.dn,
                        &d.rule,
                    ));
                    out.push(Write::RemoveIntent(o.cloud_id.clone()));
                }
            }
            // A create AD refused made nothing: its intent must not later claim an object
            // someone else puts at that DN (a hand-made group stamped with the anchor).
            if o.action == Action::Create && o.not_created {
                out.push(Write::RemoveIntent(o.cloud_id.clone()));
            }
            // Only a fully applied change is remembered; anything else is retried.
            match (o.ok(), hashes.get(&o.cloud_id)) {
                (true, Some(h)) => out.push(Write::PutApplied(o.cloud_id.clone(), h.clone())),
                _ => out.push(Write::RemoveApplied(o.cloud_id.clone())),
            }
        }
    }
    out
}

/// `writes` with the groups in `held` not recorded as in step: their applied hash is forgotten,
/// so the next cycle compares them again (their anchors and events stay).
pub fn not_in_step(writes: Vec<Write>, held: &BTreeSet<String>) -> Vec<Write> {
    if held.is_empty() {
        return writes;
    }
    let mut out: Vec<Write> = writes
        .into_iter()
        .filter(|w| !matches!(w, Write::PutApplied(id, _) if held.contains(id)))
        .collect();
    out.extend(held.iter().map(|id| Write::RemoveApplied(id.clone())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::types::Op;

    fn outcome(id: &str, action: Action, error: Option<&str>, guid: Option<&str>) -> Outcome {
        Outcome {
            links_added: Default::default(),
            links_removed: Default::default(),
            cloud_id: id.into(),
            action,
            dn: format!("CN={id},OU=X"),
            guid: guid.map(Into::into),
            error: error.map(Into::into),
            member_errors: vec![],
            transient: false,
            not_created: false,
        }
    }

    fn desired(id: &str) -> DesiredObject {
        DesiredObject::bare(id, "10-r.rhai", &format!("CN={id},OU=X"))
    }

    fn change(id: &str, op: Op) -> Change {
        Change {
            cloud_id: id.into(),
            rule: Some("10-r.rhai".into()),
            op,
        }
    }

    #[test]
    fn applied_changes_are_recorded_failed_ones_retried_in_step_ones_remembered() {
        let changes = vec![
            change(
                "new",
                Op::Create {
                    cloud: Default::default(),
                    links: Default::default(),
                    dn: "CN=new,OU=X".into(),
                    attributes: BTreeMap::new(),
                    members: vec![],
                },
            ),
            change(
                "bad",
                Op::Create {
                    cloud: Default::default(),
                    links: Default::default(),
                    dn: "CN=bad,OU=X".into(),
                    attributes: BTreeMap::new(),
                    members: vec![],
                },
            ),
            change(
                "old",
                Op::Delete {
                    dn: "CN=old,OU=X".into(),
                    reason: "gone".into(),
                },
            ),
        ];
        let outcomes = vec![
            outcome("new", Action::Create, None, Some("g-new")),
            outcome("bad", Action::Create, Some("AD said no"), None),
            outcome("old", Action::Delete, None, None),
        ];
        let desired: BTreeMap<String, DesiredObject> = ["new", "bad", "same"]
            .iter()
            .map(|id| (id.to_string(), desired(id)))
            .collect();
        let hashes: BTreeMap<String, String> = ["new", "bad", "same"]
            .iter()
            .map(|id| (id.to_string(), format!("h-{id}")))
            .collect();
        let actual: BTreeMap<String, ActualObject> = [(
            "same".to_string(),
            ActualObject {
                cloud_id: "same".into(),
                dn: "CN=same,OU=X".into(),
                guid: Some("g-same".into()),
                ..Default::default()
            },
        )]
        .into_iter()
        .collect();
        let w = bookkeeping(&changes, &outcomes, &desired, &hashes, &actual);
        let events = w.iter().filter(|w| matches!(w, Write::Event(_))).count();
        assert_eq!(events, 3);
        assert!(w.contains(&Write::PutApplied("new".into(), "h-new".into())));
        assert!(w.contains(&Write::RemoveApplied("bad".into())));
        assert!(w.contains(&Write::RemoveAnchor("old".into())));
        assert!(w.contains(&Write::PutApplied("same".into(), "h-same".into())));
        let anchors: Vec<(&str, &str)> = w
            .iter()
            .filter_map(|w| match w {
                Write::PutAnchor(a) => Some((a.cloud_id.as_str(), a.object_guid.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(anchors, vec![("new", "g-new"), ("same", "g-same")]);
    }

    #[test]
    fn a_failed_update_keeps_its_anchor_and_forgets_its_hash() {
        let outcomes = vec![outcome("u", Action::Update, Some("constraint"), None)];
        let desired: BTreeMap<String, DesiredObject> =
            [("u".to_string(), desired("u"))].into_iter().collect();
        let hashes: BTreeMap<String, String> =
            [("u".to_string(), "h".to_string())].into_iter().collect();
        let actual: BTreeMap<String, ActualObject> = [(
            "u".to_string(),
            ActualObject {
                cloud_id: "u".into(),
                dn: "CN=u,OU=X".into(),
                guid: Some("g-u".into()),
                ..Default::default()
            },
        )]
        .into_iter()
        .collect();
        let changes = vec![change(
            "u",
            Op::Update {
                cloud: Default::default(),
                links: Default::default(),
                dn: "CN=u,OU=X".into(),
                move_to: None,
                changes: vec![],
                members_add: vec!["CN=m".into()],
                members_remove: vec![],
            },
        )];
        let w = bookkeeping(&changes, &outcomes, &desired, &hashes, &actual);
        assert!(w.contains(&Write::RemoveApplied("u".into())));
        assert!(w
            .iter()
            .any(|w| matches!(w, Write::PutAnchor(a) if a.object_guid == "g-u")));
        assert!(!w.iter().any(|w| matches!(w, Write::PutApplied(..))));
    }

    #[test]
    fn a_create_ad_refused_settles_its_intent_a_lost_connection_does_not() {
        let create = |id: &str| {
            change(
                id,
                Op::Create {
                    cloud: Default::default(),
                    links: Default::default(),
                    dn: format!("CN={id},OU=X"),
                    attributes: BTreeMap::new(),
                    members: vec![],
                },
            )
        };
        let mut refused = outcome("taken", Action::Create, Some("conflict"), None);
        refused.not_created = true;
        let mut lost = outcome("lost", Action::Create, Some("connection reset"), None);
        lost.transient = true;
        let desired: BTreeMap<String, DesiredObject> = ["taken", "lost"]
            .iter()
            .map(|id| (id.to_string(), desired(id)))
            .collect();
        let w = bookkeeping(
            &[create("taken"), create("lost")],
            &[refused, lost],
            &desired,
            &BTreeMap::new(),
            &BTreeMap::new(),
        );
        assert!(w.contains(&Write::RemoveIntent("taken".into())));
        // The add may have landed before the connection went: the object is still known as ours.
        assert!(!w.contains(&Write::RemoveIntent("lost".into())));
        assert!(!w.iter().any(|w| matches!(w, Write::PutAnchor(_))));
    }

    #[test]
    fn each_compared_group_gets_its_unresolved_count_others_none() {
        let desired = BTreeMap::from([
            ("g1".to_string(), desired("g1")),
            ("g2".to_string(), desired("g2")),
        ]);
        let u = |g: &str, m: &str| crate::sync::types::Unresolved {
            group_id: g.into(),
            member_id: m.into(),
            member_type: "user".into(),
            reason: "no AD object".into(),
        };
        let found = [u("g1", "a"), u("g1", "b"), u("elsewhere", "c")];
        let w = unresolved_writes(&desired, &found, &BTreeMap::new());
        assert_eq!(
            w,
            vec![
                Write::Unresolved("g1".into(), vec!["a".into(), "b".into()]),
                Write::Unresolved("g2".into(), Vec::new())
            ]
        );
        // Written from member changes alone: the added members not found come on top, the
        // removed ones go; a group with neither keeps what it had.
        let short = BTreeMap::from([
            ("g1".to_string(), vec!["z".to_string()]),
            ("g2".to_string(), Vec::new()),
        ]);
        assert_eq!(
            unresolved_writes(&desired, &found, &short),
            vec![Write::UnresolvedEdit {
                group: "g1".into(),
                add: vec!["a".into(), "b".into()],
                remove: vec!["z".into()],
            }]
        );
    }
}
