//! The plan: the difference between the desired AD objects and the owned AD objects that exist.
//!
//! Pure: it sees data only (no LDAP, no Graph), so it runs the same in `plan`, in a dry run and
//! in tests, and the same inputs always give the same plan (everything is sorted).

use std::collections::{BTreeMap, BTreeSet};

use super::types::{
    dn_key, ActualObject, AttrChange, Change, DesiredObject, Links, Op, PlannedTrigger,
};
use crate::rules::Hook;

/// Computes the changes that turn `actual` into `desired`.
///
/// `desired` holds every cloud group in scope (keyed by cloud id); `actual` the owned AD objects
/// being compared; `consider` limits deletes to the cloud ids whose absence from `desired` is
/// known (all of `actual` in a full run). Objects in `actual` but not in `desired` are deleted.
pub fn plan(
    desired: &BTreeMap<String, DesiredObject>,
    actual: &BTreeMap<String, ActualObject>,
) -> Vec<Change> {
    let mut changes = Vec::new();
    let ids: BTreeSet<&String> = desired.keys().chain(actual.keys()).collect();
    for id in ids {
        match (desired.get(id), actual.get(id)) {
            (Some(d), None) => changes.push(Change {
                cloud_id: id.clone(),
                rule: Some(d.rule.clone()),
                op: Op::Create {
                    dn: d.dn.clone(),
                    attributes: d
                        .attributes
                        .iter()
                        .filter_map(|(k, v)| match v {
                            Some(vals) if !vals.is_empty() => Some((k.clone(), vals.clone())),
                            _ => None,
                        })
                        .chain(
                            d.on_create
                                .iter()
                                .filter(|(_, vals)| !vals.is_empty())
                                .map(|(k, vals)| (k.clone(), vals.clone())),
                        )
                        .collect(),
                    members: d.members.clone().unwrap_or_default(),
                    links: Links {
                        add: d.member_of.clone(),
                        remove: Vec::new(),
                    },
                    cloud: cloud_diff(d),
                },
            }),
            (None, Some(a)) => changes.push(Change {
                cloud_id: id.clone(),
                rule: None,
                op: Op::Delete {
                    dn: a.dn.clone(),
                    reason: "no longer in scope or deleted in the cloud".into(),
                },
            }),
            (Some(d), Some(a)) => {
                if let Some(c) = update(d, a) {
                    changes.push(c);
                }
            }
            (None, None) => {}
        }
    }
    changes
}

fn update(d: &DesiredObject, a: &ActualObject) -> Option<Change> {
    let move_to = (dn_key(&d.dn) != dn_key(&a.dn)).then(|| d.dn.clone());
    let mut changes = Vec::new();
    for (attr, want) in &d.attributes {
        let have = a
            .attrs
            .get(&attr.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default();
        match want {
            Some(vals) if !vals.is_empty() => {
                if !same_values(vals, &have) {
                    changes.push(AttrChange::Replace {
                        attr: attr.clone(),
                        values: vals.clone(),
                        old: have,
                    });
                }
            }
            _ => {
                if !have.is_empty() {
                    changes.push(AttrChange::Clear {
                        attr: attr.clone(),
                        old: have,
                    });
                }
            }
        }
    }
    let (members_add, members_remove) = match &d.members {
        None => (Vec::new(), Vec::new()),
        Some(want) => member_diff(want, &a.members),
    };
    let links = link_diff(&d.member_of, a);
    let cloud = cloud_diff(d);
    if move_to.is_none()
        && changes.is_empty()
        && members_add.is_empty()
        && members_remove.is_empty()
        && links.is_empty()
        && cloud.is_empty()
    {
        return None;
    }
    Some(Change {
        cloud_id: d.cloud_id.clone(),
        rule: Some(d.rule.clone()),
        op: Op::Update {
            dn: a.dn.clone(),
            move_to,
            changes,
            members_add,
            members_remove,
            links,
            cloud,
        },
    })
}

/// The cloud properties whose value differs from what the rule sets (`to_cloud`).
fn cloud_diff(d: &DesiredObject) -> BTreeMap<String, serde_json::Value> {
    d.to_cloud
        .iter()
        .filter(|(k, v)| d.cloud_now.get(*k).unwrap_or(&serde_json::Value::Null) != *v)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The links to add (wanted, not in AD's `memberOf`) and to remove (added and recorded by
/// Writeback, no longer wanted). A link someone else made is never removed: it is not
/// recorded; a recorded link already gone is removed all the same, so its record goes too.
fn link_diff(want: &[String], a: &ActualObject) -> Links {
    let have: BTreeSet<String> = a.member_of.iter().map(|m| dn_key(m)).collect();
    let wanted: BTreeSet<String> = want.iter().map(|m| dn_key(m)).collect();
    Links {
        add: want
            .iter()
            .filter(|t| !have.contains(&dn_key(t)))
            .cloned()
            .collect(),
        remove: a
            .links
            .iter()
            .filter(|t| !wanted.contains(&dn_key(t)))
            .cloned()
            .collect(),
    }
}

/// The triggers `changes` fire: a create fires `on_created`; an update `on_updated` (a move or
/// an attribute change), `on_members_added` and `on_members_removed`; a delete `on_deleted` of
/// the rule recorded in the anchor (`deleted_rule`). Only hooks the rule defines (`defined`).
pub fn planned_triggers(
    changes: &[Change],
    deleted_rule: impl Fn(&str) -> Option<String>,
    defined: impl Fn(&str, Hook) -> bool,
) -> Vec<PlannedTrigger> {
    let mut out = Vec::new();
    for c in changes {
        let (rule, hooks) = match &c.op {
            Op::Create { .. } => (c.rule.clone(), vec![Hook::OnCreated]),
            Op::Update {
                move_to,
                changes,
                members_add,
                members_remove,
                ..
            } => {
                let mut hooks = Vec::new();
                if move_to.is_some() || !changes.is_empty() {
                    hooks.push(Hook::OnUpdated);
                }
                if !members_add.is_empty() {
                    hooks.push(Hook::OnMembersAdded);
                }
                if !members_remove.is_empty() {
                    hooks.push(Hook::OnMembersRemoved);
                }
                (c.rule.clone(), hooks)
            }
            Op::Delete { .. } => (deleted_rule(&c.cloud_id), vec![Hook::OnDeleted]),
        };
        let Some(rule) = rule else { continue };
        for hook in hooks {
            if defined(&rule, hook) {
                out.push(PlannedTrigger {
                    cloud_id: c.cloud_id.clone(),
                    rule: rule.clone(),
                    hook,
                });
            }
        }
    }
    out.sort();
    out
}

/// Multi-valued attributes are sets in AD: order does not count, exact spelling does.
fn same_values(want: &[String], have: &[String]) -> bool {
    if want.len() != have.len() {
        return false;
    }
    let w: BTreeSet<&String> = want.iter().collect();
    let h: BTreeSet<&String> = have.iter().collect();
    w == h
}

/// Member DNs compared as AD compares them (case-insensitive, escaping-insensitive).
fn member_diff(want: &[String], have: &[String]) -> (Vec<String>, Vec<String>) {
    let want_k: BTreeMap<String, &String> = want.iter().map(|d| (dn_key(d), d)).collect();
    let have_k: BTreeMap<String, &String> = have.iter().map(|d| (dn_key(d), d)).collect();
    let add = want_k
        .iter()
        .filter(|(k, _)| !have_k.contains_key(*k))
        .map(|(_, d)| (*d).clone())
        .collect();
    let remove = have_k
        .iter()
        .filter(|(k, _)| !want_k.contains_key(*k))
        .map(|(_, d)| (*d).clone())
        .collect();
    (add, remove)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(
        id: &str,
        dn: &str,
        attrs: &[(&str, Option<&[&str]>)],
        members: Option<&[&str]>,
    ) -> DesiredObject {
        DesiredObject {
            attributes: attrs
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        v.map(|vs| vs.iter().map(|s| s.to_string()).collect()),
                    )
                })
                .collect(),
            members: members.map(|m| m.iter().map(|s| s.to_string()).collect()),
            ..DesiredObject::bare(id, "10-test.rhai", dn)
        }
    }

    #[test]
    fn on_create_attributes_go_into_the_create_and_are_never_compared_again() {
        let mut d = desired("g1", "CN=G,OU=X", &[("description", Some(&["d"]))], None);
        d.on_create
            .insert("sAMAccountName".into(), vec!["first-name".into()]);
        let created = plan(
            &BTreeMap::from([("g1".to_string(), d.clone())]),
            &BTreeMap::new(),
        );
        match &created[..] {
            [Change {
                op: Op::Create { attributes, .. },
                ..
            }] => {
                assert_eq!(attributes["sAMAccountName"], vec!["first-name".to_string()]);
                assert_eq!(attributes["description"], vec!["d".to_string()]);
            }
            other => panic!("expected one create, got {other:?}"),
        }
        // The account name was changed in AD since (or the rule now computes another): no update.
        d.on_create
            .insert("sAMAccountName".into(), vec!["renamed".into()]);
        let a = actual(
            "g1",
            "CN=G,OU=X",
            &[("description", &["d"]), ("samaccountname", &["first-name"])],
            &[],
        );
        let again = plan(
            &BTreeMap::from([("g1".to_string(), d)]),
            &BTreeMap::from([("g1".to_string(), a)]),
        );
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn cloud_properties_are_written_only_when_they_differ() {
        let mut d = desired("g", "CN=G,OU=X", &[], None);
        d.to_cloud = [("extension_a_dn".to_string(), serde_json::json!("CN=G,OU=X"))].into();
        let a = actual("g", "CN=G,OU=X", &[], &[]);
        let run = |d: &DesiredObject| {
            plan(
                &BTreeMap::from([("g".to_string(), d.clone())]),
                &BTreeMap::from([("g".to_string(), a.clone())]),
            )
        };
        // Unset in the cloud: an update with the PATCH alone.
        match &run(&d)[..] {
            [Change {
                op: Op::Update { cloud, changes, .. },
                ..
            }] => {
                assert_eq!(cloud, &d.to_cloud);
                assert!(changes.is_empty());
            }
            other => panic!("expected one update, got {other:?}"),
        }
        // The cloud has it: nothing to do.
        d.cloud_now = d.to_cloud.clone();
        assert!(run(&d).is_empty());
        // A create carries it too.
        let created = plan(
            &BTreeMap::from([("g".to_string(), d.clone())]),
            &BTreeMap::new(),
        );
        assert!(matches!(&created[0].op, Op::Create { cloud, .. } if cloud.is_empty()));
        d.cloud_now.clear();
        let created = plan(
            &BTreeMap::from([("g".to_string(), d.clone())]),
            &BTreeMap::new(),
        );
        assert!(matches!(&created[0].op, Op::Create { cloud, .. } if cloud == &d.to_cloud));
    }

    #[test]
    fn links_add_what_is_missing_and_remove_only_their_own() {
        let mut d = desired("g", "CN=G,OU=X", &[], None);
        d.member_of = vec!["CN=RW,OU=S".into(), "CN=New,OU=S".into()];
        let mut a = actual("g", "CN=G,OU=X", &[], &[]);
        // In RW already (any case); in Audit by hand; in Old through Writeback, no longer wanted.
        a.member_of = vec![
            "cn=rw,ou=s".into(),
            "CN=Audit,OU=S".into(),
            "CN=Old,OU=S".into(),
        ];
        a.links = vec!["CN=RW,OU=S".into(), "CN=Old,OU=S".into()];
        let got = plan(
            &BTreeMap::from([("g".to_string(), d.clone())]),
            &BTreeMap::from([("g".to_string(), a.clone())]),
        );
        match &got[..] {
            [Change {
                op: Op::Update { links, .. },
                ..
            }] => assert_eq!(
                links,
                &Links {
                    add: vec!["CN=New,OU=S".into()],
                    remove: vec!["CN=Old,OU=S".into()],
                }
            ),
            other => panic!("expected one update, got {other:?}"),
        }
        // Nothing wanted and nothing recorded: the hand-made links stay, no change at all.
        d.member_of.clear();
        a.links.clear();
        let none = plan(
            &BTreeMap::from([("g".to_string(), d)]),
            &BTreeMap::from([("g".to_string(), a)]),
        );
        assert!(none.is_empty(), "{none:?}");
    }

    fn actual(id: &str, dn: &str, attrs: &[(&str, &[&str])], members: &[&str]) -> ActualObject {
        ActualObject {
            links: Default::default(),
            member_of: Default::default(),
            cloud_id: id.into(),
            dn: dn.into(),
            guid: None,
            attrs: super::super::types::lower_attrs(attrs),
            members: members.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn create_update_delete_and_no_op() {
        let mut d = BTreeMap::new();
        let mut a = BTreeMap::new();
        d.insert(
            "new".into(),
            desired(
                "new",
                "CN=New,OU=G,DC=x",
                &[("displayName", Some(&["New"]))],
                Some(&["CN=u1,DC=x"]),
            ),
        );
        d.insert(
            "same".into(),
            desired(
                "same",
                "CN=Same,OU=G,DC=x",
                &[("displayName", Some(&["Same"]))],
                Some(&["CN=u1,DC=x"]),
            ),
        );
        a.insert(
            "same".into(),
            actual(
                "same",
                "cn=same,ou=g,dc=x",
                &[("displayName", &["Same"])],
                &["CN=U1,DC=X"],
            ),
        );
        a.insert("gone".into(), actual("gone", "CN=Gone,OU=G,DC=x", &[], &[]));
        let p = plan(&d, &a);
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(matches!(&p[0].op, Op::Delete { dn, .. } if dn == "CN=Gone,OU=G,DC=x"));
        match &p[1].op {
            Op::Create {
                cloud: _,
                links: _,
                dn,
                attributes,
                members,
            } => {
                assert_eq!(dn, "CN=New,OU=G,DC=x");
                assert_eq!(attributes["displayName"], vec!["New".to_string()]);
                assert_eq!(members, &vec!["CN=u1,DC=x".to_string()]);
            }
            other => panic!("expected create, got {other:?}"),
        }
    }

    #[test]
    fn attribute_rename_and_member_changes() {
        let mut d = BTreeMap::new();
        let mut a = BTreeMap::new();
        d.insert(
            "g".into(),
            desired(
                "g",
                "CN=Renamed,OU=G,DC=x",
                &[
                    ("displayName", Some(&["Renamed"])),
                    ("proxyAddresses", Some(&["SMTP:a@x", "smtp:b@x"])),
                    ("info", None),
                ],
                Some(&["CN=u1,DC=x", "CN=u3,DC=x"]),
            ),
        );
        a.insert(
            "g".into(),
            actual(
                "g",
                "CN=Old,OU=G,DC=x",
                &[
                    ("displayName", &["Old"]),
                    ("proxyAddresses", &["smtp:b@x", "SMTP:a@x"]),
                    ("info", &["stale"]),
                ],
                &["CN=u1,DC=x", "CN=u2,DC=x"],
            ),
        );
        let p = plan(&d, &a);
        assert_eq!(p.len(), 1);
        match &p[0].op {
            Op::Update {
                cloud: _,
                links: _,
                dn,
                move_to,
                changes,
                members_add,
                members_remove,
            } => {
                assert_eq!(dn, "CN=Old,OU=G,DC=x");
                assert_eq!(move_to.as_deref(), Some("CN=Renamed,OU=G,DC=x"));
                // proxyAddresses differ only in order: no change.
                assert_eq!(changes.len(), 2, "{changes:#?}");
                assert_eq!(changes[0].attr(), "displayName");
                assert!(matches!(&changes[1], AttrChange::Clear { attr, .. } if attr == "info"));
                assert_eq!(members_add, &vec!["CN=u3,DC=x".to_string()]);
                assert_eq!(members_remove, &vec!["CN=u2,DC=x".to_string()]);
            }
            other => panic!("expected update, got {other:?}"),
        }
    }

    #[test]
    fn unmanaged_members_are_left_alone() {
        let mut d = BTreeMap::new();
        let mut a = BTreeMap::new();
        d.insert("g".into(), desired("g", "CN=G,DC=x", &[], None));
        a.insert(
            "g".into(),
            actual("g", "CN=G,DC=x", &[], &["CN=someone,DC=x"]),
        );
        assert!(plan(&d, &a).is_empty());
    }

    #[test]
    fn triggers_follow_the_changes_and_the_rules_hooks() {
        let mut d = BTreeMap::new();
        let mut a = BTreeMap::new();
        d.insert(
            "c-new".into(),
            desired("c-new", "CN=New,DC=x", &[], Some(&[])),
        );
        d.insert(
            "b-upd".into(),
            desired(
                "b-upd",
                "CN=Upd,DC=x",
                &[("info", Some(&["x"]))],
                Some(&["CN=u1,DC=x"]),
            ),
        );
        a.insert(
            "b-upd".into(),
            actual("b-upd", "CN=Upd,DC=x", &[], &["CN=u2,DC=x"]),
        );
        d.insert(
            "d-mem".into(),
            desired("d-mem", "CN=Mem,DC=x", &[], Some(&["CN=u1,DC=x"])),
        );
        a.insert("d-mem".into(), actual("d-mem", "CN=Mem,DC=x", &[], &[]));
        a.insert("a-gone".into(), actual("a-gone", "CN=Gone,DC=x", &[], &[]));
        a.insert("e-orphan".into(), actual("e-orphan", "CN=O,DC=x", &[], &[]));
        let changes = plan(&d, &a);
        let anchors = |id: &str| (id == "a-gone").then(|| "05-old.rhai".to_string());
        let all = planned_triggers(&changes, anchors, |_, _| true);
        let got: Vec<(&str, &str, Hook)> = all
            .iter()
            .map(|t| (t.cloud_id.as_str(), t.rule.as_str(), t.hook))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a-gone", "05-old.rhai", Hook::OnDeleted),
                ("b-upd", "10-test.rhai", Hook::OnUpdated),
                ("b-upd", "10-test.rhai", Hook::OnMembersAdded),
                ("b-upd", "10-test.rhai", Hook::OnMembersRemoved),
                ("c-new", "10-test.rhai", Hook::OnCreated),
                ("d-mem", "10-test.rhai", Hook::OnMembersAdded),
            ]
        );
        // Only the hooks a rule defines.
        let some = planned_triggers(&changes, anchors, |r, h| {
            r == "10-test.rhai" && h == Hook::OnCreated
        });
        assert_eq!(some.len(), 1);
        assert_eq!(some[0].cloud_id, "c-new");
    }

    #[test]
    fn deterministic() {
        let mut d = BTreeMap::new();
        for i in (0..50).rev() {
            let id = format!("id{i:03}");
            d.insert(
                id.clone(),
                desired(&id, &format!("CN={id},DC=x"), &[], Some(&[])),
            );
        }
        let a = BTreeMap::new();
        let p1 = plan(&d, &a);
        let p2 = plan(&d, &a);
        assert_eq!(p1, p2);
        let ids: Vec<_> = p1.iter().map(|c| c.cloud_id.clone()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }
}
