//! Where the cloud members of the groups being written live in AD: users by
//! `onPremisesSecurityIdentifier` → `objectSid` (or `onPremisesImmutableId` → `objectGUID`),
//! groups synced from AD by SID; every lookup batched. [`wanted`] (pure) says whom to look for.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::ad::{self, AdConn};
use crate::config::{Config, UserMatch};
use crate::graph::model::{CloudObject, MemberKind, MemberRef};
use crate::rules::MemberPolicy;

use super::desired::transitive_users;
use super::types::MemberDirectory;
use super::SyncError;

/// The cloud users and groups the members of `ids` name (flattened for `"flatten"`; `groups`
/// must hold the nested groups then).
pub fn wanted(
    ids: impl IntoIterator<Item = impl AsRef<str>>,
    policies: &BTreeMap<String, MemberPolicy>,
    groups: &BTreeMap<String, CloudObject>,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut users = BTreeSet::new();
    let mut nested = BTreeSet::new();
    for id in ids {
        let id = id.as_ref();
        let flat;
        let members: Box<dyn Iterator<Item = &MemberRef>> = match (policies.get(id), groups.get(id))
        {
            (Some(MemberPolicy::Flatten), _) => {
                flat = transitive_users(groups, id);
                Box::new(flat.iter())
            }
            (Some(MemberPolicy::None), _) | (_, None) => Box::new(std::iter::empty()),
            (_, Some(g)) => Box::new(g.members.values()),
        };
        for m in members {
            match m.kind() {
                MemberKind::User => {
                    users.insert(m.id.clone());
                }
                MemberKind::Group => {
                    nested.insert(m.id.clone());
                }
                MemberKind::Other => {}
            }
        }
    }
    (users, nested)
}

/// Finds the AD accounts of the members of the groups being written, in batches.
///
/// `users` holds the cloud users among `wanted_users` (looked up in the cache by the caller);
/// `groups` the cloud groups among `wanted_groups` that are cached.
/// Entries a cycle's [`Lookups`] holds at most; past it, they are forgotten and asked again.
const LOOKUPS_KEPT: usize = 250_000;

/// What a cycle has already asked AD: SID or GUID → DN (`None`: no such object). The batches of a
/// cycle share it, so a user who is a member of groups in many batches is looked up once, not
/// once a batch. Bounded by [`LOOKUPS_KEPT`]; dropped with the cycle (AD may change between).
#[derive(Debug, Default)]
pub struct Lookups {
    sids: HashMap<String, Option<String>>,
    guids: HashMap<uuid::Uuid, Option<String>>,
}

impl Lookups {
    /// Makes room for `wanted` keys about to be looked up and used. Called before the keys
    /// to ask are picked: forgetting afterwards would drop answers the caller still reads.
    fn make_room(&mut self, wanted: usize) {
        if self.sids.len() + self.guids.len() + wanted > LOOKUPS_KEPT {
            self.sids.clear();
            self.guids.clear();
        }
    }
}

/// The keys of `wanted` that `known` has no answer for.
fn unknown<K: Clone + Eq + std::hash::Hash, V>(
    wanted: impl Iterator<Item = K>,
    known: &HashMap<K, V>,
) -> Vec<K> {
    wanted.filter(|k| !known.contains_key(k)).collect()
}

/// Records AD's answers for `asked` (absent from `found`: no such object).
fn remember<K: Ord + Eq + std::hash::Hash>(
    known: &mut HashMap<K, Option<String>>,
    asked: Vec<K>,
    found: &BTreeMap<K, String>,
) {
    for k in asked {
        let dn = found.get(&k).cloned();
        known.insert(k, dn);
    }
}

pub async fn resolve_members(
    config: &Config,
    conn: &mut AdConn,
    wanted_users: &BTreeSet<String>,
    wanted_groups: &BTreeSet<String>,
    groups: &BTreeMap<String, CloudObject>,
    users: &BTreeMap<String, CloudObject>,
    known: &mut Lookups,
) -> Result<MemberDirectory, SyncError> {
    let mut dir = MemberDirectory::default();
    let mut by_sid: BTreeMap<String, Vec<(bool, String)>> = BTreeMap::new();
    let mut by_guid: BTreeMap<uuid::Uuid, Vec<String>> = BTreeMap::new();
    for uid in wanted_users {
        let Some(u) = users.get(uid) else {
            dir.user_reasons
                .insert(uid.clone(), "user not found in the cloud cache".into());
            continue;
        };
        match config.user_match {
            UserMatch::Sid => match u.str_prop("onPremisesSecurityIdentifier") {
                Some(sid) if !sid.is_empty() => by_sid
                    .entry(sid.to_string())
                    .or_default()
                    .push((true, uid.clone())),
                _ => {
                    dir.user_reasons.insert(
                        uid.clone(),
                        "cloud-only user (no onPremisesSecurityIdentifier)".into(),
                    );
                }
            },
            UserMatch::ImmutableId => {
                match u
                    .str_prop("onPremisesImmutableId")
                    .and_then(guid_from_immutable_id)
                {
                    Some(g) => by_guid.entry(g).or_default().push(uid.clone()),
                    None => {
                        dir.user_reasons.insert(
                            uid.clone(),
                            "cloud-only user (no usable onPremisesImmutableId)".into(),
                        );
                    }
                }
            }
        }
    }
    for gid in wanted_groups {
        if let Some(sid) = groups
            .get(gid)
            .and_then(|g| g.str_prop("onPremisesSecurityIdentifier"))
        {
            by_sid
                .entry(sid.to_string())
                .or_default()
                .push((false, gid.clone()));
        }
    }
    // Empty = the domain root (the connector asks AD for it).
    let bases = config.ad.member_search_bases.clone();
    known.make_room(by_sid.len());
    let ask = unknown(by_sid.keys().cloned(), &known.sids);
    if !ask.is_empty() {
        let found = conn.resolve_sids(&ask, &bases).await?;
        remember(&mut known.sids, ask, &found);
    }
    for (sid, owners) in &by_sid {
        let found = known.sids.get(sid).cloned().flatten();
        for (is_user, id) in owners {
            match (&found, is_user) {
                (Some(dn), true) => {
                    dir.users.insert(id.clone(), dn.clone());
                }
                (Some(dn), false) => {
                    dir.synced_groups.insert(id.clone(), dn.clone());
                }
                (None, true) => {
                    dir.user_reasons
                        .insert(id.clone(), format!("no AD account has objectSid {sid}"));
                }
                (None, false) => {}
            }
        }
    }
    known.make_room(by_guid.len());
    let ask = unknown(by_guid.keys().cloned(), &known.guids);
    if !ask.is_empty() {
        let found = conn.resolve_guids(&ask, &bases).await?;
        remember(&mut known.guids, ask, &found);
    }
    for (g, owners) in &by_guid {
        let found = known.guids.get(g).cloned().flatten();
        for id in owners {
            match &found {
                Some(dn) => {
                    dir.users.insert(id.clone(), dn.clone());
                }
                None => {
                    dir.user_reasons
                        .insert(id.clone(), format!("no AD account has objectGUID {g}"));
                }
            }
        }
    }
    Ok(dir)
}

/// Connect's source anchor: base64 of the AD objectGUID bytes.
fn guid_from_immutable_id(v: &str) -> Option<uuid::Uuid> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
    ad::dn::guid_from_ad_bytes(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_stay_bounded_and_keep_what_fits() {
        let mut l = Lookups::default();
        for i in 0..LOOKUPS_KEPT - 1 {
            l.sids.insert(format!("S-1-5-21-{i}"), None);
        }
        l.make_room(1);
        assert_eq!(l.sids.len(), LOOKUPS_KEPT - 1, "room for one more");
        l.make_room(2);
        assert!(l.sids.is_empty(), "over the bound: forgotten");
    }

    #[test]
    fn every_wanted_key_is_asked_after_room_was_made() {
        let mut l = Lookups::default();
        for i in 0..LOOKUPS_KEPT {
            l.sids
                .insert(format!("S-1-5-21-{i}"), Some(format!("CN=U{i}")));
        }
        // A batch wanting a known SID and a new one: the room is made first, so the known one
        // is asked again rather than read from a map that was just emptied.
        let wanted = ["S-1-5-21-0".to_string(), "S-1-5-21-new".to_string()];
        l.make_room(wanted.len());
        let ask = unknown(wanted.iter().cloned(), &l.sids);
        assert_eq!(ask, wanted);
        let found: BTreeMap<String, String> = [("S-1-5-21-0".to_string(), "CN=U0".to_string())]
            .into_iter()
            .collect();
        remember(&mut l.sids, ask, &found);
        assert_eq!(l.sids.get("S-1-5-21-0"), Some(&Some("CN=U0".to_string())));
        assert_eq!(l.sids.get("S-1-5-21-new"), Some(&None));
    }
}
