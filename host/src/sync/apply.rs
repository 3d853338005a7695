//! Apply: carries a plan out over LDAP, in an order AD accepts (create, move, modify, members,
//! delete). An object AD refuses is reported with AD's message and skipped; the rest goes on.

use serde::Serialize;
use std::collections::BTreeMap;

use crate::ad::{self, AdConn};

use super::desired::is_within;
use super::plan::{AttrChange, Change, Op, Plan};

/// What happened to one planned change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub cloud_id: String,
    pub action: &'static str,
    /// The DN the object has after the change (the new DN after a move).
    pub dn: String,
    /// AD's objectGUID after a create (for the anchor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
    /// `None` when everything succeeded; otherwise what failed, with AD's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Member values AD did not take (e.g. the member object vanished), with AD's message.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub member_errors: Vec<String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.member_errors.is_empty()
    }
}

/// Runs `plan` against AD. Every DN is checked against the managed OUs once more here, so no
/// plan, whatever produced it, writes elsewhere.
pub async fn apply(conn: &mut AdConn, plan: &Plan, managed_ous: &[String]) -> Vec<Outcome> {
    let inside = |dn: &str| managed_ous.iter().any(|ou| is_within(dn, ou));
    let mut outcomes: BTreeMap<String, Outcome> = BTreeMap::new();

    let start = |c: &Change, action: &'static str, dn: &str| Outcome {
        cloud_id: c.cloud_id.clone(),
        action,
        dn: dn.to_string(),
        guid: None,
        error: None,
        member_errors: Vec::new(),
    };

    // 1. Creates, without members: a nested group may be created later in this same phase.
    for c in &plan.changes {
        if let Op::Create { dn, attributes, .. } = &c.op {
            let mut o = start(c, "create", dn);
            if !inside(dn) {
                o.error = Some(format!("refused: {dn} is outside the managed OUs"));
            } else {
                let mut attrs = attributes.clone();
                attrs.insert("objectClass".into(), vec!["group".into()]);
                match conn.add(dn, &attrs).await {
                    Ok(()) => match conn.read_entry(dn, &["objectGUID"]).await {
                        Ok(Some(e)) if e.guid.is_some() => o.guid = e.guid.map(|g| g.to_string()),
                        Ok(_) => o.error = Some("created, but AD returned no objectGUID".into()),
                        Err(e) => {
                            o.error = Some(format!("created, but reading objectGUID failed: {e}"))
                        }
                    },
                    Err(e) if e.rc() == Some(68) => {
                        o.error = Some(format!(
                            "conflict: an object Writeback does not own already uses this name or sAMAccountName; left untouched ({e})"
                        ))
                    }
                    Err(e) => o.error = Some(e.to_string()),
                }
            }
            outcomes.insert(c.cloud_id.clone(), o);
        }
    }

    // 2. Moves and attribute changes.
    for c in &plan.changes {
        if let Op::Update {
            dn,
            move_to,
            changes,
            ..
        } = &c.op
        {
            let mut o = start(c, "update", dn);
            if !inside(dn) || move_to.as_deref().is_some_and(|t| !inside(t)) {
                o.error =
                    Some("refused: the object or its new place is outside the managed OUs".into());
                outcomes.insert(c.cloud_id.clone(), o);
                continue;
            }
            if let Some(target) = move_to {
                match (ad::dn::leaf_value(target), ad::dn::parent(target)) {
                    (Some(cn), Some(parent)) => {
                        let new_parent =
                            (!ad::dn::dn_eq(&parent, &ad::dn::parent(dn).unwrap_or_default()))
                                .then_some(parent.as_str());
                        match conn.rename(dn, &ad::dn::rdn("CN", &cn), new_parent).await {
                            Ok(new_dn) => o.dn = new_dn,
                            Err(e) => o.error = Some(e.to_string()),
                        }
                    }
                    _ => o.error = Some(format!("cannot move to {target:?}: not a valid DN")),
                }
            }
            if o.error.is_none() && !changes.is_empty() {
                let mods: Vec<ad::AttrChange> = changes
                    .iter()
                    .map(|ch| match ch {
                        AttrChange::Replace { attr, values, .. } => {
                            ad::AttrChange::Replace(attr.clone(), values.clone())
                        }
                        AttrChange::Clear { attr, .. } => {
                            ad::AttrChange::Delete(attr.clone(), vec![])
                        }
                    })
                    .collect();
                if let Err(e) = conn.modify(&o.dn, &mods).await {
                    o.error = Some(e.to_string());
                }
            }
            outcomes.insert(c.cloud_id.clone(), o);
        }
    }

    // 3. Members, once every group of this plan exists.
    for c in &plan.changes {
        let (add, remove): (&[String], &[String]) = match &c.op {
            Op::Create { members, .. } => (members, &[]),
            Op::Update {
                members_add,
                members_remove,
                ..
            } => (members_add, members_remove),
            Op::Delete { .. } => continue,
        };
        let Some(o) = outcomes.get_mut(&c.cloud_id) else {
            continue;
        };
        if o.error.is_some() {
            continue;
        }
        if !add.is_empty() {
            match conn.add_members(&o.dn, add).await {
                Ok(r) => o.member_errors.extend(
                    r.missing
                        .into_iter()
                        .map(|(m, msg)| format!("add {m}: {msg}")),
                ),
                Err(e) => o.error = Some(e.to_string()),
            }
        }
        if o.error.is_none() && !remove.is_empty() {
            match conn.remove_members(&o.dn, remove).await {
                Ok(r) => o.member_errors.extend(
                    r.missing
                        .into_iter()
                        .map(|(m, msg)| format!("remove {m}: {msg}")),
                ),
                Err(e) => o.error = Some(e.to_string()),
            }
        }
    }

    // 4. Deletes last, so members moved elsewhere first are not lost.
    for c in &plan.changes {
        if let Op::Delete { dn, .. } = &c.op {
            let mut o = start(c, "delete", dn);
            if !inside(dn) {
                o.error = Some(format!("refused: {dn} is outside the managed OUs"));
            } else if let Err(e) = conn.delete(dn).await {
                // Already gone is what we wanted.
                if e.rc() != Some(32) {
                    o.error = Some(e.to_string());
                }
            }
            outcomes.insert(c.cloud_id.clone(), o);
        }
    }

    outcomes.into_values().collect()
}
