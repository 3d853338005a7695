//! Groups read for the rules with their members only when something needs them. A changed
//! group is first read without its members (its properties, member count and digest, see
//! `state::GroupHead`) and evaluated that way; the rules that read `group.members`, and
//! flattening rules, get it again read whole. So a member change of a 100,000-member group
//! costs the rules, the hash and the cap check the same as a 10-member group's.

use std::collections::{BTreeMap, BTreeSet};

use crate::graph::model::CloudObject;
use crate::rules::{Decision, DesiredGroup, MemberPolicy, Now, RuleSet};
use crate::state::{GroupHead, MemberChanges, MemberDigest, ObjectKind, StateError};

use super::evaluate::{desired_hash, desired_hash_with, evaluate_all, evaluate_heads, Evaluation};
use super::member_delta;
use super::state::CycleState;

/// The groups a step read: whole ones, and ones read without members. An id is in one of the
/// two maps, never both.
#[derive(Debug, Default)]
pub struct ReadGroups {
    /// Groups read with their members (and, for flattening rules, the groups nested in them).
    pub full: BTreeMap<String, CloudObject>,
    /// Groups read without their members.
    pub heads: BTreeMap<String, GroupHead>,
}

impl ReadGroups {
    /// Groups all read whole.
    pub fn whole(full: BTreeMap<String, CloudObject>) -> Self {
        ReadGroups {
            full,
            heads: BTreeMap::new(),
        }
    }

    /// The group's properties; its `members` are empty when it was read without them.
    pub fn props_of(&self, id: &str) -> Option<&CloudObject> {
        self.full
            .get(id)
            .or_else(|| self.heads.get(id).map(|h| &h.props_only))
    }

    /// How many cloud members the group has.
    pub fn member_count(&self, id: &str) -> Option<usize> {
        match self.full.get(id) {
            Some(g) => Some(g.members.len()),
            None => self.heads.get(id).map(|h| h.member_count),
        }
    }

    /// The fingerprint of what the rules want for the group (see `evaluate::desired_hash`).
    pub fn hash(&self, id: &str, d: &DesiredGroup) -> Option<String> {
        match (self.full.get(id), self.heads.get(id)) {
            (Some(g), _) => Some(desired_hash(d, g, &self.full)),
            (None, Some(h)) => Some(desired_hash_with(d, &h.props_only, h.digest)),
            (None, None) => None,
        }
    }

    /// [`ReadGroups::hash`] over the members the group had before `changes` (a rule that
    /// writes cloud members as they are: its hash is over the direct members).
    pub fn hash_before(
        &self,
        id: &str,
        d: &DesiredGroup,
        changes: &MemberChanges,
    ) -> Option<String> {
        let (g, now) = match (self.full.get(id), self.heads.get(id)) {
            (Some(g), _) => (g, MemberDigest::of(g.members.keys().map(String::as_str))),
            (None, Some(h)) => (&h.props_only, h.digest),
            (None, None) => return None,
        };
        let was = member_delta::digest_before(now, changes);
        Some(desired_hash_with(d, g, was))
    }

    /// Whether the group was read without its members.
    pub fn is_head(&self, id: &str) -> bool {
        self.heads.contains_key(id) && !self.full.contains_key(id)
    }

    /// Reads again with their members the groups among `ids` that were read without.
    pub fn read_members<'a, S: CycleState>(
        &mut self,
        store: &S,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<(), StateError> {
        let wanted: BTreeSet<&String> = ids.into_iter().filter(|id| self.is_head(id)).collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let found = store.load_by_ids(ObjectKind::Group, wanted.iter().copied())?;
        for id in wanted {
            self.heads.remove(id);
        }
        self.full.extend(found);
        Ok(())
    }

    /// Drops the heads of groups read whole since (flattening reads nested groups whole).
    pub fn settle(&mut self) {
        let full = &self.full;
        self.heads.retain(|id, _| !full.contains_key(id));
    }
}

/// Reads the groups `ids` and runs the rules on them, those for which `headed` holds read
/// without members first. A group whose rules read its members, or that a rule flattens, is
/// read whole and evaluated again. Ids not cached are left out; the evaluations are in id
/// order, against the one instant `now`.
pub fn read_and_evaluate<'a, S: CycleState>(
    store: &S,
    rules: &RuleSet,
    now: Now,
    ids: impl IntoIterator<Item = &'a String>,
    headed: impl Fn(&str) -> bool,
) -> Result<(ReadGroups, Vec<Evaluation>), StateError> {
    let ids: BTreeSet<&String> = ids.into_iter().collect();
    let wanted: Vec<&String> = ids.iter().copied().filter(|id| headed(id)).collect();
    let mut heads = match wanted.is_empty() {
        true => BTreeMap::new(),
        false => store.load_heads(wanted)?,
    };
    let mut whole: Vec<&String> = ids
        .iter()
        .copied()
        .filter(|id| !heads.contains_key(*id))
        .collect();
    let mut out = Vec::with_capacity(ids.len());
    let mut again = Vec::new();
    for (e, read_members) in evaluate_heads(rules, &heads, now) {
        let flattens = matches!(
            &e.decision,
            Ok(Decision::Desired(d)) if d.members == MemberPolicy::Flatten
        );
        match read_members || flattens {
            true => again.push(e.id),
            false => out.push(e),
        }
    }
    for id in &again {
        heads.remove(id);
    }
    whole.extend(again.iter());
    let full = store.load_by_ids(ObjectKind::Group, whole)?;
    out.extend(evaluate_all(rules, &full, now));
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok((ReadGroups { full, heads }, out))
}
