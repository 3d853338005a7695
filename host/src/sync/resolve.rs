//! Where the cloud members of the groups being written live in AD: users by
//! `onPremisesSecurityIdentifier` → `objectSid` (or `onPremisesImmutableId` → `objectGUID`),
//! groups synced from AD by SID; every lookup batched. [`wanted`] (pure) says whom to look for.

use std::collections::{BTreeMap, BTreeSet};

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
pub async fn resolve_members(
    config: &Config,
    conn: &mut AdConn,
    wanted_users: &BTreeSet<String>,
    wanted_groups: &BTreeSet<String>,
    groups: &BTreeMap<String, CloudObject>,
    users: &BTreeMap<String, CloudObject>,
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
    if !by_sid.is_empty() {
        let sids: Vec<String> = by_sid.keys().cloned().collect();
        let found = conn.resolve_sids(&sids, &bases).await?;
        for (sid, owners) in &by_sid {
            for (is_user, id) in owners {
                match (found.get(sid), is_user) {
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
    }
    if !by_guid.is_empty() {
        let guids: Vec<uuid::Uuid> = by_guid.keys().cloned().collect();
        let found = conn.resolve_guids(&guids, &bases).await?;
        for (g, owners) in &by_guid {
            for id in owners {
                match found.get(g) {
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
    }
    Ok(dir)
}

/// Connect's source anchor: base64 of the AD objectGUID bytes.
fn guid_from_immutable_id(v: &str) -> Option<uuid::Uuid> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
    ad::dn::guid_from_ad_bytes(&bytes).ok()
}
