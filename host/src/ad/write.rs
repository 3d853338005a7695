//! Writes: add, modify, rename, delete, and incremental member changes in batches that
//! tolerate members already present or already absent.

use std::collections::{BTreeMap, HashSet};

use ldap3::Mod;

use super::conn::AdConn;
use super::dn;
use super::error::{AdError, AdOp};

/// Member values per modify request. Each modify makes the DC rewrite the group's member list
/// (measured on Samba: a 100,000-member group created a thousand at a time took 2x one
/// `ldapadd` of it), so fewer, larger modifies; 5,000 DNs are about 0.5 MB, far inside AD's
/// request limits, and a DC that still answers adminLimitExceeded gets the batch in halves.
pub const MEMBER_BATCH: usize = 5000;

/// Members sent in a create's add (the rest follow as modifies of [`MEMBER_BATCH`]): an add the
/// DC refuses as too big would fail the create, so it stays at the size every AD takes.
pub const MEMBERS_IN_ADD: usize = 1000;
const _: () = assert!(MEMBERS_IN_ADD <= MEMBER_BATCH);

/// One change of a modify request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrChange {
    /// Sets the attribute to exactly these values (empty: removes the attribute, no error
    /// when it is absent).
    Replace(String, Vec<String>),
    /// Adds values.
    Add(String, Vec<String>),
    /// Removes these values; an empty list removes the whole attribute (AD answers rc 16
    /// when it is absent).
    Delete(String, Vec<String>),
}

impl AttrChange {
    pub fn attr(&self) -> &str {
        match self {
            AttrChange::Replace(a, _) | AttrChange::Add(a, _) | AttrChange::Delete(a, _) => a,
        }
    }

    fn to_mod(&self) -> Mod<String> {
        let set = |v: &Vec<String>| v.iter().cloned().collect::<HashSet<String>>();
        match self {
            AttrChange::Replace(a, v) => Mod::Replace(a.clone(), set(v)),
            AttrChange::Add(a, v) => Mod::Add(a.clone(), set(v)),
            AttrChange::Delete(a, v) => Mod::Delete(a.clone(), set(v)),
        }
    }
}

/// What an incremental member change did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberChangeOutcome {
    /// Values written.
    pub applied: usize,
    /// Values that needed no change (already a member on add, already absent on remove).
    pub already: usize,
    /// Values AD refused, with AD's message (e.g. a member DN that does not exist).
    pub missing: Vec<(String, String)>,
}

impl MemberChangeOutcome {
    fn merge(&mut self, other: MemberChangeOutcome) {
        self.applied += other.applied;
        self.already += other.already;
        self.missing.extend(other.missing);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemberOp {
    Add,
    Remove,
}

impl MemberOp {
    /// Result codes that mean "some value of this batch is already in the target state" (or,
    /// for 32, "some member DN does not exist"): worth splitting the batch to find which.
    fn splits_on(self, rc: u32) -> bool {
        match self {
            // 68: Samba/AD "already exists"; 20: attributeOrValueExists; 32: no such member DN
            MemberOp::Add => matches!(rc, 68 | 20 | 32),
            // 53 (Samba/AD), 16 noSuchAttribute: not a member; 32: no such member DN
            MemberOp::Remove => matches!(rc, 53 | 16 | 32),
        }
    }

    /// For a single value: true when the result code means "already in the target state".
    fn already(self, rc: u32) -> bool {
        match self {
            MemberOp::Add => matches!(rc, 68 | 20),
            MemberOp::Remove => matches!(rc, 53 | 16 | 32),
        }
    }
}

fn ldap_result(
    op: AdOp,
    dn: &str,
    r: Result<ldap3::LdapResult, ldap3::LdapError>,
) -> Result<(), AdError> {
    let res = r.map_err(|e| AdError::from_ldap(op, dn, e))?;
    AdError::check(op, dn, &res)
}

fn check_attr(name: &str) -> Result<(), AdError> {
    if dn::is_attr_name(name) && !name.contains(';') {
        Ok(())
    } else {
        Err(AdError::Invalid(format!(
            "malformed attribute name {name:?}"
        )))
    }
}

impl AdConn {
    /// Creates an entry. Attributes with no values are left out.
    pub async fn add(
        &mut self,
        dn: &str,
        attrs: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), AdError> {
        let mut list = Vec::with_capacity(attrs.len());
        for (name, values) in attrs {
            check_attr(name)?;
            if values.is_empty() {
                continue;
            }
            list.push((
                name.clone(),
                values.iter().cloned().collect::<HashSet<String>>(),
            ));
        }
        let r = self.writer().await?.add(dn, list).await;
        ldap_result(AdOp::Add, dn, r)
    }

    /// Applies changes to one entry in a single (atomic) modify request.
    pub async fn modify(&mut self, dn: &str, changes: &[AttrChange]) -> Result<(), AdError> {
        if changes.is_empty() {
            return Ok(());
        }
        for c in changes {
            check_attr(c.attr())?;
        }
        let mods: Vec<Mod<String>> = changes.iter().map(AttrChange::to_mod).collect();
        let r = self.writer().await?.modify(dn, mods).await;
        ldap_result(AdOp::Modify, dn, r)
    }

    /// Renames and/or moves an entry (modify DN, old RDN value deleted). `new_rdn` is an
    /// escaped RDN such as [`dn::rdn`] builds. Returns the new DN.
    pub async fn rename(
        &mut self,
        dn: &str,
        new_rdn: &str,
        new_parent: Option<&str>,
    ) -> Result<String, AdError> {
        let parsed = dn::parse_dn(new_rdn)?;
        if parsed.rdns.len() != 1 {
            return Err(AdError::Invalid(format!(
                "new RDN {new_rdn:?} must be exactly one RDN"
            )));
        }
        let parent = match new_parent {
            Some(p) => {
                dn::parse_dn(p)?;
                p.to_string()
            }
            None => dn::parent(dn)
                .ok_or_else(|| AdError::Invalid(format!("{dn:?} has no parent to stay under")))?,
        };
        let r = self
            .writer()
            .await?
            .modifydn(dn, new_rdn, true, new_parent)
            .await;
        ldap_result(AdOp::Rename, dn, r)?;
        Ok(format!("{new_rdn},{parent}"))
    }

    /// Deletes a leaf entry.
    pub async fn delete(&mut self, dn: &str) -> Result<(), AdError> {
        let r = self.writer().await?.delete(dn).await;
        ldap_result(AdOp::Delete, dn, r)
    }

    /// Adds members to a group in batches of [`MEMBER_BATCH`]. Members already present count
    /// as `already`; member DNs AD refuses (e.g. not existing) are reported in `missing`.
    pub async fn add_members(
        &mut self,
        group_dn: &str,
        members: &[String],
    ) -> Result<MemberChangeOutcome, AdError> {
        self.change_members(group_dn, members, MemberOp::Add, MEMBER_BATCH)
            .await
    }

    /// Removes members from a group in batches of [`MEMBER_BATCH`]. Members already absent
    /// count as `already`.
    pub async fn remove_members(
        &mut self,
        group_dn: &str,
        members: &[String],
    ) -> Result<MemberChangeOutcome, AdError> {
        self.change_members(group_dn, members, MemberOp::Remove, MEMBER_BATCH)
            .await
    }

    async fn change_members(
        &mut self,
        group_dn: &str,
        members: &[String],
        op: MemberOp,
        batch: usize,
    ) -> Result<MemberChangeOutcome, AdError> {
        // duplicates in the input would make AD refuse the batch; keep the first of each
        let mut seen = HashSet::new();
        let unique: Vec<&String> = members
            .iter()
            .filter(|m| seen.insert(dn::normalize(m).unwrap_or_else(|_| m.to_string())))
            .collect();
        let mut outcome = MemberChangeOutcome {
            already: members.len() - unique.len(),
            ..Default::default()
        };
        for chunk in unique.chunks(batch.max(1)) {
            let o = self.apply_member_batch(group_dn, chunk, op).await?;
            outcome.merge(o);
        }
        Ok(outcome)
    }

    /// One batch. When AD refuses it because some value is already in the target state (or
    /// does not exist), the batch is split in halves until the offending values are isolated,
    /// so a few stray values cost O(k log n) requests instead of one request per value.
    async fn apply_member_batch(
        &mut self,
        group_dn: &str,
        batch: &[&String],
        op: MemberOp,
    ) -> Result<MemberChangeOutcome, AdError> {
        let mut outcome = MemberChangeOutcome::default();
        let mut stack: Vec<&[&String]> = vec![batch];
        while let Some(part) = stack.pop() {
            if part.is_empty() {
                continue;
            }
            let values: HashSet<String> = part.iter().map(|s| (*s).clone()).collect();
            let m = match op {
                MemberOp::Add => Mod::Add("member".to_string(), values),
                MemberOp::Remove => Mod::Delete("member".to_string(), values),
            };
            let r = self.writer().await?.modify(group_dn, vec![m]).await;
            match ldap_result(AdOp::Modify, group_dn, r) {
                Ok(()) => outcome.applied += part.len(),
                Err(AdError::Ldap { rc, message, .. }) if part.len() == 1 => {
                    if op.already(rc) {
                        outcome.already += 1;
                    } else if op.splits_on(rc) || is_value_problem(rc) {
                        let value = part.first().map(|v| (*v).clone()).unwrap_or_default();
                        outcome.missing.push((value, format!("rc={rc}: {message}")));
                    } else {
                        return Err(AdError::Ldap {
                            op: AdOp::Modify,
                            dn: group_dn.to_string(),
                            rc,
                            message,
                        });
                    }
                }
                Err(AdError::Ldap { rc, .. }) if worth_splitting(op, rc) => {
                    let (a, b) = part.split_at(part.len() / 2);
                    stack.push(b);
                    stack.push(a);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(outcome)
    }

    /// AD's `highestCommittedUSN` from the rootDSE: unchanged means nothing was written.
    pub async fn highest_committed_usn(&mut self) -> Result<u64, AdError> {
        let dse = self.root_dse(&["highestCommittedUSN"]).await?;
        let v = dse
            .first("highestCommittedUSN")
            .ok_or_else(|| AdError::Protocol {
                op: AdOp::Search,
                dn: String::new(),
                reason: "rootDSE has no highestCommittedUSN".into(),
            })?;
        v.parse().map_err(|_| AdError::Protocol {
            op: AdOp::Search,
            dn: String::new(),
            reason: format!("highestCommittedUSN {v:?} is not a number"),
        })
    }
}

/// LDAP adminLimitExceeded: the request was bigger than the DC takes (a batch of values); a
/// single value refused this way is an error like any other.
const ADMIN_LIMIT_EXCEEDED: u32 = 11;

/// Whether a batch refused with `rc` is tried again in halves: one value may be the cause, or
/// the batch was too big for the DC.
fn worth_splitting(op: MemberOp, rc: u32) -> bool {
    op.splits_on(rc) || is_value_problem(rc) || rc == ADMIN_LIMIT_EXCEEDED
}

/// Codes that one bad value can cause for a whole batch (constraint, syntax, a member AD will
/// not take such as a group of an incompatible scope): worth isolating.
fn is_value_problem(rc: u32) -> bool {
    matches!(rc, 19 | 21 | 34 | 53)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_codes() {
        assert!(MemberOp::Add.splits_on(68));
        assert!(MemberOp::Add.already(68));
        assert!(MemberOp::Add.splits_on(32));
        assert!(!MemberOp::Add.already(32));
        assert!(!MemberOp::Add.splits_on(50));
        assert!(MemberOp::Remove.already(53));
        assert!(MemberOp::Remove.already(16));
        assert!(MemberOp::Remove.already(32));
        assert!(!MemberOp::Remove.already(68));
    }

    #[test]
    fn a_batch_too_big_for_the_dc_is_sent_in_halves_and_an_access_error_is_not() {
        for op in [MemberOp::Add, MemberOp::Remove] {
            assert!(worth_splitting(op, ADMIN_LIMIT_EXCEEDED), "{op:?}");
            // insufficientAccessRights and busy are the whole request's: no retry in parts.
            assert!(!worth_splitting(op, 50), "{op:?}");
            assert!(!worth_splitting(op, 51), "{op:?}");
        }
    }

    #[test]
    fn attr_change_to_mod() {
        let c = AttrChange::Replace("mail".into(), vec!["a@x".into()]);
        assert_eq!(c.attr(), "mail");
        match c.to_mod() {
            Mod::Replace(a, v) => {
                assert_eq!(a, "mail");
                assert!(v.contains("a@x"));
            }
            _ => panic!("wrong mod"),
        }
        assert!(matches!(
            AttrChange::Delete("info".into(), vec![]).to_mod(),
            Mod::Delete(_, v) if v.is_empty()
        ));
        assert!(check_attr("member;range=0-1").is_err());
        assert!(check_attr("cn)(x").is_err());
        assert!(check_attr("msDS-ExternalDirectoryObjectId").is_ok());
    }

    #[test]
    fn outcome_merge() {
        let mut a = MemberChangeOutcome {
            applied: 1,
            already: 2,
            missing: vec![("CN=x".into(), "rc=32".into())],
        };
        a.merge(MemberChangeOutcome {
            applied: 3,
            already: 0,
            missing: vec![("CN=y".into(), "rc=32".into())],
        });
        assert_eq!(a.applied, 4);
        assert_eq!(a.already, 2);
        assert_eq!(a.missing.len(), 2);
    }
}
