//! Whose an AD object is. Pure.
//!
//! An object carrying a group's anchor (`Group_<objectId>`) is Writeback's only when Writeback
//! recorded it: its objectGUID is in the state, or a create of it was about to be written at
//! that very DN when the host stopped (an intent). An intent is settled by the create's
//! outcome: a create AD refused (the name was taken) leaves none behind, so an object someone
//! stamps with the anchor later is never mistaken for Writeback's. Anything else with the
//! anchor (another tenant's groups in the same OU, groups written by Connect or Cloud Sync, a
//! hand-made group stamped to "hand it over") is left alone, unless the operator adopts it on
//! purpose (`writeback adopt`).

use crate::state::Anchor;

use super::types::{dn_key, ActualObject};

/// What Writeback may do with an AD object carrying a group's anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Recorded as its own (the GUID matches, or the GUID was not known yet and the DN matches).
    Recorded,
    /// Created by a run that stopped before recording it.
    Intended,
    /// Taken over by an adoption.
    Adopted,
    /// Not Writeback's: never modified, never deleted.
    Foreign,
}

impl Claim {
    pub fn owned(self) -> bool {
        self != Claim::Foreign
    }
}

/// Decides the claim on `found` from the state's record of its group, the DN of an unsettled
/// intent to create it, and whether this cycle adopts.
pub fn claim(
    found: &ActualObject,
    record: Option<&Anchor>,
    intent: Option<&str>,
    adopt: bool,
) -> Claim {
    if let Some(r) = record {
        let same = match (&found.guid, r.object_guid.is_empty()) {
            (Some(g), false) => g.eq_ignore_ascii_case(&r.object_guid),
            (_, true) => dn_key(&found.dn) == dn_key(&r.dn),
            (None, false) => false,
        };
        if same {
            return Claim::Recorded;
        }
    } else if intent.is_some_and(|dn| dn_key(dn) == dn_key(&found.dn)) {
        // Only the object at the DN the create named: a create is never followed by a move
        // before it is recorded, so anything elsewhere was made by someone else.
        return Claim::Intended;
    }
    if adopt {
        Claim::Adopted
    } else {
        Claim::Foreign
    }
}

/// Whose an unrecorded object carrying a group's anchor is likely to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignKind {
    /// A group of this tenant the rules want: Connect or Cloud Sync wrote it, or the state
    /// was lost. Needs an operator: `writeback adopt`.
    Unrecorded,
    /// A group of this tenant the rules do not manage: another instance's or tool's.
    OutOfScope,
    /// Not a group of this tenant: another tenant's instance shares the OU.
    OtherTenant,
}

/// The kind of a foreign object from what the cycle knows of its group: whether the cloud
/// cache holds it, and whether the rules want it.
pub fn foreign_kind(in_this_tenant: bool, in_scope: bool) -> ForeignKind {
    match (in_this_tenant, in_scope) {
        (_, true) => ForeignKind::Unrecorded,
        (true, false) => ForeignKind::OutOfScope,
        (false, false) => ForeignKind::OtherTenant,
    }
}

/// Why a group is refused when another object carries its anchor.
pub fn foreign_reason(found: &ActualObject) -> String {
    format!(
        "{} carries this group's anchor, but Writeback has no record of creating it (another tenant's or another tool's group, or a group stamped by hand?); it is left alone. To take it over, run `writeback adopt --dry-run`, then `writeback adopt` (docs/OPERATIONS.md, \"Taking over existing groups\")",
        found.dn
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(guid: Option<&str>, dn: &str) -> ActualObject {
        ActualObject {
            cloud_id: "g1".into(),
            dn: dn.into(),
            guid: guid.map(Into::into),
            ..Default::default()
        }
    }

    fn record(guid: &str, dn: &str) -> Anchor {
        Anchor {
            cloud_id: "g1".into(),
            object_guid: guid.into(),
            dn: dn.into(),
            rule: "r".into(),
            updated_at: String::new(),
        }
    }

    #[test]
    fn only_recorded_objects_are_owned() {
        let o = found(Some("AAAA-1"), "CN=a,OU=W");
        assert_eq!(
            claim(&o, Some(&record("aaaa-1", "CN=old,OU=W")), None, false),
            Claim::Recorded
        );
        assert_eq!(
            claim(&o, Some(&record("bbbb-2", "CN=a,OU=W")), None, false),
            Claim::Foreign
        );
        assert_eq!(claim(&o, None, None, false), Claim::Foreign);
        assert!(!claim(&o, None, None, false).owned());
    }

    #[test]
    fn an_unknown_guid_is_matched_by_dn() {
        let o = found(Some("AAAA-1"), "cn=A,ou=W");
        assert_eq!(
            claim(&o, Some(&record("", "CN=a,OU=W")), None, false),
            Claim::Recorded
        );
        assert_eq!(
            claim(&o, Some(&record("", "CN=b,OU=W")), None, false),
            Claim::Foreign
        );
    }

    #[test]
    fn intents_and_adoption_claim_unrecorded_objects() {
        let o = found(Some("AAAA-1"), "CN=a,OU=W");
        assert_eq!(claim(&o, None, Some("cn=A,ou=w"), false), Claim::Intended);
        assert_eq!(claim(&o, None, None, true), Claim::Adopted);
        // Adoption also takes over an object whose record names another GUID (the recorded
        // one is gone): the operator asked for it.
        assert_eq!(
            claim(&o, Some(&record("bbbb-2", "CN=a,OU=W")), None, true),
            Claim::Adopted
        );
    }

    #[test]
    fn foreign_objects_are_told_apart_by_whose_group_they_carry() {
        assert_eq!(foreign_kind(true, true), ForeignKind::Unrecorded);
        assert_eq!(foreign_kind(true, false), ForeignKind::OutOfScope);
        assert_eq!(foreign_kind(false, false), ForeignKind::OtherTenant);
    }

    #[test]
    fn an_intent_claims_only_the_object_at_the_dn_it_named() {
        // A group renamed or moved into the OU after a create failed is someone else's.
        let moved = found(Some("AAAA-1"), "CN=renamed,OU=W");
        assert_eq!(
            claim(&moved, None, Some("CN=a,OU=W"), false),
            Claim::Foreign
        );
        // A record, even of another object, outranks an intent.
        assert_eq!(
            claim(
                &found(Some("AAAA-1"), "CN=a,OU=W"),
                Some(&record("bbbb-2", "CN=b,OU=W")),
                Some("CN=a,OU=W"),
                false
            ),
            Claim::Foreign
        );
    }
}
