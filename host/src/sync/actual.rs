//! The AD objects a cycle compares with: read by anchor in batches (never one search per
//! group), only inside the managed OUs, and only objects whose anchor is exactly
//! `Group_<objectId>`. Whether such an object is Writeback's is decided by `ownership`.

use std::collections::{BTreeMap, BTreeSet};

use crate::ad::{self, AdEntry};
use crate::config::Config;

use super::directory::Directory;
use super::types::{anchor_value, ActualObject, DesiredObject, ANCHOR_ATTRS};
use super::SyncError;

/// Every attribute any desired object manages, plus what ownership needs.
pub fn managed_attributes(desired: &BTreeMap<String, DesiredObject>) -> Vec<String> {
    let mut set: BTreeSet<String> = ANCHOR_ATTRS.iter().map(|s| s.to_string()).collect();
    for o in desired.values() {
        set.extend(o.attributes.keys().cloned());
    }
    set.into_iter().collect()
}

/// The cloud id an entry is anchored to, when the anchor is exactly ours: in
/// `msDS-ExternalDirectoryObjectId` (Writeback, Cloud Sync), else in `adminDescription`
/// (Connect group writeback).
fn owner(e: &AdEntry) -> Option<String> {
    ANCHOR_ATTRS.iter().find_map(|a| {
        let anchor = e.first(a)?;
        let cloud_id = anchor.strip_prefix("Group_")?;
        (anchor == anchor_value(cloud_id) && !cloud_id.is_empty()).then(|| cloud_id.to_string())
    })
}

/// The objects carrying the anchors of `ids`, with the attributes `want`, found by anchor (one
/// search per [`ad::RESOLVE_BATCH`] ids and managed OU), with their cloud id. Every object is
/// returned, also when two carry the same anchor: which one is Writeback's is for the caller
/// to decide (`ownership`). An object found under two overlapping managed OUs is returned once.
pub async fn search_by_anchor(
    conn: &mut impl Directory,
    managed_ous: &[String],
    ids: &[&String],
    want: &[&str],
) -> Result<Vec<(String, AdEntry)>, ad::AdError> {
    search_by(conn, managed_ous, ids, &ANCHOR_ATTRS, want).await
}

/// [`search_by_anchor`] in the anchor attributes `by` only.
async fn search_by(
    conn: &mut impl Directory,
    managed_ous: &[String],
    ids: &[&String],
    by: &[&str],
    want: &[&str],
) -> Result<Vec<(String, AdEntry)>, ad::AdError> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for chunk in ids.chunks(ad::RESOLVE_BATCH) {
        for base in managed_ous {
            for e in conn.find_by_anchor(base, chunk, by, want).await? {
                if let Some(cloud_id) = owner(&e) {
                    if seen.insert(super::types::dn_key(&e.dn)) {
                        out.push((cloud_id, e));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The cloud ids (lowercased) that an object in the managed OUs carries the anchor of, in
/// either anchor attribute: one scan per attribute. Asked once before a cycle creates many
/// groups, instead of a search by anchor per batch for groups that are not there: AD does not
/// index `adminDescription`, so every such search reads every group of the domain (a first
/// sync of 10,000 groups made 200 of them, each slower than the last).
pub async fn anchored_ids(
    conn: &mut impl Directory,
    config: &Config,
) -> Result<BTreeSet<String>, SyncError> {
    let mut ids = BTreeSet::new();
    for attr in ANCHOR_ATTRS {
        conn.for_each_owned_group(&config.ad.managed_ous, attr, "Group_", &[], |e| {
            // Every value counts (a wrong case or a second anchor included): a group seen
            // here is read as before.
            for v in e.values(attr) {
                if let Some(id) = v.get("Group_".len()..) {
                    ids.insert(id.to_lowercase());
                }
            }
        })
        .await?;
    }
    Ok(ids)
}

/// The objects this cycle just created for `ids`, found by `msDS-ExternalDirectoryObjectId`
/// (which AD indexes and Writeback always writes), then by either anchor for any not found
/// that way (a schema without it): a search by `adminDescription`, which AD does not index,
/// reads every group of the domain.
pub async fn search_created(
    conn: &mut impl Directory,
    managed_ous: &[String],
    ids: &[&String],
    want: &[&str],
) -> Result<Vec<(String, AdEntry)>, ad::AdError> {
    let mut found = search_by(conn, managed_ous, ids, &ANCHOR_ATTRS[..1], want).await?;
    let seen: BTreeSet<&str> = found.iter().map(|(id, _)| id.as_str()).collect();
    let rest: Vec<&String> = ids
        .iter()
        .copied()
        .filter(|id| !seen.contains(id.as_str()))
        .collect();
    if !rest.is_empty() {
        found.extend(search_by_anchor(conn, managed_ous, &rest, want).await?);
    }
    Ok(found)
}

/// Reads the objects carrying the anchors of `ids` with `attrs` and their complete `member`
/// lists (ranges merged by the search itself: no second read per group).
pub async fn read_owned(
    conn: &mut impl Directory,
    config: &Config,
    ids: &[&String],
    attrs: &[String],
) -> Result<Vec<ActualObject>, SyncError> {
    let mut want: Vec<&str> = attrs.iter().map(String::as_str).collect();
    want.extend(ANCHOR_ATTRS);
    want.extend(["objectGUID", "member"]);
    // The groups it is in, only where rules may link groups into others.
    if !config.ad.link_targets.is_empty() {
        want.push("memberOf");
    }
    let found = search_by_anchor(conn, &config.ad.managed_ous, ids, &want).await?;
    Ok(found
        .into_iter()
        .map(|(cloud_id, e)| {
            let mut attrs = e.attrs;
            let members = attrs.remove("member").unwrap_or_default();
            let member_of = attrs.remove("memberof").unwrap_or_default();
            ActualObject {
                cloud_id,
                dn: e.dn,
                guid: e.guid.map(|g| g.to_string()),
                attrs,
                members,
                member_of,
                links: Vec::new(),
            }
        })
        .collect())
}

/// Where the objects carrying the anchors of `ids` are (DN and GUID only): enough to delete
/// them.
pub async fn locate_owned(
    conn: &mut impl Directory,
    config: &Config,
    ids: &[&String],
) -> Result<Vec<ActualObject>, SyncError> {
    let want = [ANCHOR_ATTRS[0], ANCHOR_ATTRS[1], "objectGUID"];
    let found = search_by_anchor(conn, &config.ad.managed_ous, ids, &want).await?;
    Ok(found.into_iter().map(|(id, e)| located(id, e)).collect())
}

/// Every object carrying an anchor in the managed OUs (DN and GUID only), handed to `f` page by
/// page, for a reconciliation: finds owned objects the cycle did not look at, and the anchored
/// objects that are not Writeback's.
pub async fn scan_owned(
    conn: &mut impl Directory,
    config: &Config,
    mut f: impl FnMut(ActualObject),
) -> Result<(), SyncError> {
    conn.for_each_owned_group(
        &config.ad.managed_ous,
        ANCHOR_ATTRS[0],
        "Group_",
        &[ANCHOR_ATTRS[0], "objectGUID"],
        |e| {
            if let Some(id) = owner(&e) {
                f(located(id, e));
            }
        },
    )
    .await?;
    Ok(())
}

fn located(cloud_id: String, e: AdEntry) -> ActualObject {
    ActualObject {
        cloud_id,
        dn: e.dn,
        guid: e.guid.map(|g| g.to_string()),
        attrs: BTreeMap::new(),
        ..Default::default()
    }
}
