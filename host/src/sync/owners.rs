//! A cloud group's owners as a DN attribute of its AD group (a rule's `owners: "managedBy"`):
//! whom to look up, and the attribute's values once AD has answered. Pure: the owners are read
//! from Graph (`graph::owners`) and looked up through the member join (`sync::resolve`) by the
//! cycle.
//!
//! Only users can be found in AD; other owners (service principals) are reported. An owner
//! without an AD account is reported, never replaced by a guess.

use std::collections::{BTreeMap, BTreeSet};

use crate::graph::model::{MemberKind, MemberRef};

use super::desired::{member_type, other_reason};
use super::types::{DesiredObject, MemberDirectory, Unresolved};

/// The owners read for the groups being written: `None` when the group was gone by the time
/// they were read (its attribute is left alone; the next delta says what became of it).
pub type Owners = BTreeMap<String, Option<Vec<MemberRef>>>;

/// The users among the owners (the only owners AD can hold).
pub fn wanted(owners: &Owners) -> BTreeSet<String> {
    owners
        .values()
        .flatten()
        .flatten()
        .filter(|o| o.kind() == MemberKind::User)
        .map(|o| o.id.clone())
        .collect()
}

/// Sets the owners attribute of `o`: the DNs of the owners found in AD (for a single-valued
/// attribute the first by DN order, so the value does not change with Graph's order), or no
/// value when none is found. The owners not found go to `unresolved`.
pub fn fill(
    o: &mut DesiredObject,
    owners: &Owners,
    dir: &MemberDirectory,
    unresolved: &mut Vec<Unresolved>,
) {
    let Some(into) = &o.owners else { return };
    let Some(Some(list)) = owners.get(&o.cloud_id) else {
        return;
    };
    let mut dns = BTreeSet::new();
    for owner in list {
        let found = match owner.kind() {
            MemberKind::User => dir.users.get(&owner.id).ok_or_else(|| {
                dir.user_reasons
                    .get(&owner.id)
                    .cloned()
                    .unwrap_or_else(|| "user has no matching AD account".into())
            }),
            MemberKind::Device => Err("a device is not written as an owner".to_string()),
            MemberKind::Group | MemberKind::Other => Err(other_reason(&owner.odata_type)),
        };
        match found {
            Ok(dn) => {
                dns.insert(dn.clone());
            }
            Err(reason) => unresolved.push(Unresolved {
                group_id: o.cloud_id.clone(),
                member_id: owner.id.clone(),
                member_type: format!("owner ({})", member_type(&owner.odata_type)),
                reason,
            }),
        }
    }
    let mut values: Vec<String> = dns.into_iter().collect();
    if into.single_valued {
        values.truncate(1);
    }
    let value = (!values.is_empty()).then_some(values);
    o.attributes.insert(into.attribute.clone(), value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::types::OwnersInto;

    fn user(id: &str) -> MemberRef {
        MemberRef {
            odata_type: "#microsoft.graph.user".into(),
            id: id.into(),
        }
    }

    fn object(single: bool) -> DesiredObject {
        DesiredObject {
            cloud_id: "g1".into(),
            rule: "r.rhai".into(),
            dn: "CN=G,OU=Cloud,DC=x".into(),
            attributes: BTreeMap::new(),
            on_create: BTreeMap::new(),
            members: None,
            member_of: Vec::new(),
            to_cloud: BTreeMap::new(),
            cloud_now: BTreeMap::new(),
            owners: Some(OwnersInto {
                attribute: "managedBy".into(),
                single_valued: single,
            }),
        }
    }

    fn directory() -> MemberDirectory {
        let mut dir = MemberDirectory::default();
        dir.users
            .insert("u-b".into(), "CN=Bea,OU=People,DC=x".into());
        dir.users
            .insert("u-a".into(), "CN=Ann,OU=People,DC=x".into());
        dir.user_reasons.insert(
            "u-cloud".into(),
            "cloud-only user (no onPremisesSecurityIdentifier)".into(),
        );
        dir
    }

    #[test]
    fn only_user_owners_are_looked_up() {
        let mut owners = Owners::new();
        let sp = MemberRef {
            odata_type: "#microsoft.graph.servicePrincipal".into(),
            id: "sp".into(),
        };
        owners.insert("g1".into(), Some(vec![user("u-a"), sp]));
        owners.insert("g2".into(), None);
        assert_eq!(wanted(&owners), BTreeSet::from(["u-a".to_string()]));
    }

    #[test]
    fn a_single_valued_attribute_gets_the_first_owner_by_dn_whatever_graphs_order() {
        let dir = directory();
        for order in [vec!["u-b", "u-a"], vec!["u-a", "u-b"]] {
            let mut o = object(true);
            let owners = Owners::from([(
                "g1".to_string(),
                Some(order.iter().map(|id| user(id)).collect()),
            )]);
            let mut unresolved = Vec::new();
            fill(&mut o, &owners, &dir, &mut unresolved);
            assert_eq!(
                o.attributes.get("managedBy"),
                Some(&Some(vec!["CN=Ann,OU=People,DC=x".to_string()]))
            );
            assert!(unresolved.is_empty());
        }
    }

    #[test]
    fn a_multi_valued_attribute_gets_every_owner_found_and_the_rest_are_reported() {
        let dir = directory();
        let mut o = object(false);
        let owners = Owners::from([(
            "g1".to_string(),
            Some(vec![user("u-b"), user("u-cloud"), user("u-a")]),
        )]);
        let mut unresolved = Vec::new();
        fill(&mut o, &owners, &dir, &mut unresolved);
        assert_eq!(
            o.attributes.get("managedBy"),
            Some(&Some(vec![
                "CN=Ann,OU=People,DC=x".to_string(),
                "CN=Bea,OU=People,DC=x".to_string()
            ]))
        );
        assert_eq!(unresolved.len(), 1);
        assert_eq!(unresolved[0].member_id, "u-cloud");
        assert_eq!(unresolved[0].member_type, "owner (user)");
        assert!(
            unresolved[0].reason.contains("cloud-only"),
            "{:?}",
            unresolved[0]
        );
    }

    #[test]
    fn no_owner_in_ad_clears_the_attribute_and_an_unread_group_leaves_it_alone() {
        let dir = directory();
        let mut o = object(true);
        let owners = Owners::from([("g1".to_string(), Some(vec![user("u-cloud")]))]);
        let mut unresolved = Vec::new();
        fill(&mut o, &owners, &dir, &mut unresolved);
        assert_eq!(o.attributes.get("managedBy"), Some(&None));
        assert_eq!(unresolved.len(), 1);

        let mut o = object(true);
        fill(
            &mut o,
            &Owners::from([("g1".to_string(), None)]),
            &dir,
            &mut unresolved,
        );
        assert_eq!(o.attributes.get("managedBy"), None);
        fill(&mut o, &Owners::new(), &dir, &mut unresolved);
        assert_eq!(o.attributes.get("managedBy"), None);
    }
}
