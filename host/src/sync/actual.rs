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

/// What the managed OUs hold by anchor, from one scan per anchor attribute: taken once before
/// a cycle that compares or deletes many groups, so that its batches search for each group by
/// `msDS-ExternalDirectoryObjectId` alone, which AD indexes. AD does not index
/// `adminDescription`: every search naming it reads every group of the domain (a first sync of
/// 10,000 groups made 200 such searches, each slower than the last).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Census {
    /// The cloud ids (lowercased) some object carries the anchor of, in either attribute.
    pub anchored: BTreeSet<String>,
    /// The cloud ids (lowercased) some object carries in `adminDescription` without the same
    /// `msDS-ExternalDirectoryObjectId` (Connect's groups, someone's copy): only these are
    /// still searched by both anchors, so such an object is seen as before.
    pub by_admin_description: BTreeSet<String>,
}

impl Census {
    /// Whether `id` must be searched by both anchors.
    fn needs_both(&self, id: &str) -> bool {
        self.by_admin_description.contains(&id.to_lowercase())
    }
}

/// Takes the [`Census`] of the managed OUs. Every value counts (a wrong case or a second
/// anchor included): an object seen here is read as before. An object anchored by someone
/// else while the cycle runs is not in it; the cycle then treats it as it would had it been
/// made a moment later.
pub async fn census(conn: &mut impl Directory, config: &Config) -> Result<Census, SyncError> {
    let [external, admin] = ANCHOR_ATTRS;
    let mut out = Census::default();
    conn.for_each_owned_group(&config.ad.managed_ous, admin, "Group_", &[external], |e| {
        let theirs: BTreeSet<String> = e
            .values(external)
            .iter()
            .map(|v| v.to_lowercase())
            .collect();
        for v in e.values(admin) {
            if let Some(id) = v.get("Group_".len()..) {
                let id = id.to_lowercase();
                if !theirs.contains(&v.to_lowercase()) {
                    out.by_admin_description.insert(id.clone());
                }
                out.anchored.insert(id);
            }
        }
    })
    .await?;
    conn.for_each_owned_group(&config.ad.managed_ous, external, "Group_", &[], |e| {
        for v in e.values(external) {
            if let Some(id) = v.get("Group_".len()..) {
                out.anchored.insert(id.to_lowercase());
            }
        }
    })
    .await?;
    Ok(out)
}

/// [`search_by_anchor`], by `msDS-ExternalDirectoryObjectId` alone for the ids the census
/// found no other anchor of (by both without a census).
async fn search_owned(
    conn: &mut impl Directory,
    managed_ous: &[String],
    census: Option<&Census>,
    ids: &[&String],
    want: &[&str],
) -> Result<Vec<(String, AdEntry)>, ad::AdError> {
    let Some(census) = census else {
        return search_by_anchor(conn, managed_ous, ids, want).await;
    };
    let (both, indexed): (Vec<&String>, Vec<&String>) =
        ids.iter().copied().partition(|id| census.needs_both(id));
    let mut found = search_by(conn, managed_ous, &indexed, &ANCHOR_ATTRS[..1], want).await?;
    if !both.is_empty() {
        // An object can carry one group's anchor in one attribute and another's in the other.
        let mut seen: BTreeSet<String> = found
            .iter()
            .map(|(_, e)| super::types::dn_key(&e.dn))
            .collect();
        for (id, e) in search_by_anchor(conn, managed_ous, &both, want).await? {
            if seen.insert(super::types::dn_key(&e.dn)) {
                found.push((id, e));
            }
        }
    }
    Ok(found)
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
/// lists (ranges merged by the search itself: no second read per group); by the indexed anchor
/// where the `census` allows.
pub async fn read_owned(
    conn: &mut impl Directory,
    config: &Config,
    census: Option<&Census>,
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
    let found = search_owned(conn, &config.ad.managed_ous, census, ids, &want).await?;
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
/// them. By the indexed anchor where the `census` allows.
pub async fn locate_owned(
    conn: &mut impl Directory,
    config: &Config,
    census: Option<&Census>,
    ids: &[&String],
) -> Result<Vec<ActualObject>, SyncError> {
    let want = [ANCHOR_ATTRS[0], ANCHOR_ATTRS[1], "objectGUID"];
    let found = search_owned(conn, &config.ad.managed_ous, census, ids, &want).await?;
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
