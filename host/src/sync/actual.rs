//! The owned AD objects a cycle compares with: read by anchor in batches (never one search per
//! group), only inside the managed OUs, and only objects whose anchor is exactly
//! `Group_<objectId>`.

use std::collections::{BTreeMap, BTreeSet};

use crate::ad::{self, AdConn, AdEntry};
use crate::config::Config;

use super::types::{anchor_filter, anchor_value, ActualObject, DesiredObject, ANCHOR_ATTRS};
use super::SyncError;

/// Every attribute any desired object manages, plus what ownership needs.
pub fn managed_attributes(desired: &BTreeMap<String, DesiredObject>) -> Vec<String> {
    let mut set: BTreeSet<String> = ANCHOR_ATTRS.iter().map(|s| s.to_string()).collect();
    for o in desired.values() {
        set.extend(o.attributes.keys().cloned());
    }
    set.into_iter().collect()
}

/// The cloud id an entry is anchored to, when the anchor is exactly ours.
fn owner(e: &AdEntry) -> Option<String> {
    let anchor = e.first(ANCHOR_ATTRS[0])?;
    let cloud_id = anchor.strip_prefix("Group_")?;
    (anchor == anchor_value(cloud_id)).then(|| cloud_id.to_string())
}

/// The owned objects of `ids` with the attributes `want`, found by anchor (one search per
/// [`ad::RESOLVE_BATCH`] ids and managed OU), keyed by cloud id.
pub async fn search_by_anchor(
    conn: &mut AdConn,
    managed_ous: &[String],
    ids: &[&String],
    want: &[&str],
) -> Result<BTreeMap<String, AdEntry>, ad::AdError> {
    let mut out = BTreeMap::new();
    for chunk in ids.chunks(ad::RESOLVE_BATCH) {
        let filter = anchor_filter(chunk);
        for base in managed_ous {
            for e in conn.search(base, ad::Scope::Subtree, &filter, want).await? {
                if let Some(cloud_id) = owner(&e) {
                    out.insert(cloud_id, e);
                }
            }
        }
    }
    Ok(out)
}

/// Reads the owned objects of `ids` with `attrs` and their complete `member` lists (ranges
/// merged by the search itself: no second read per group).
pub async fn read_owned(
    conn: &mut AdConn,
    config: &Config,
    ids: &[&String],
    attrs: &[String],
) -> Result<BTreeMap<String, ActualObject>, SyncError> {
    let mut want: Vec<&str> = attrs.iter().map(String::as_str).collect();
    want.extend([ANCHOR_ATTRS[0], "objectGUID", "member"]);
    let found = search_by_anchor(conn, &config.ad.managed_ous, ids, &want).await?;
    Ok(found
        .into_iter()
        .map(|(cloud_id, e)| {
            let mut attrs = e.attrs;
            let members = attrs.remove("member").unwrap_or_default();
            let a = ActualObject {
                cloud_id: cloud_id.clone(),
                dn: e.dn,
                guid: e.guid.map(|g| g.to_string()),
                attrs,
                members,
            };
            (cloud_id, a)
        })
        .collect())
}

/// Where the owned objects of `ids` are (DN and GUID only): enough to delete them.
pub async fn locate_owned(
    conn: &mut AdConn,
    config: &Config,
    ids: &[&String],
) -> Result<BTreeMap<String, ActualObject>, SyncError> {
    let want = [ANCHOR_ATTRS[0], "objectGUID"];
    let found = search_by_anchor(conn, &config.ad.managed_ous, ids, &want).await?;
    Ok(found
        .into_iter()
        .map(|(id, e)| (id.clone(), located(id, e)))
        .collect())
}

/// Every owned object in the managed OUs (DN and GUID only), handed to `f` page by page, for a
/// reconciliation: finds the objects whose anchor record is missing (orphans).
pub async fn scan_owned(
    conn: &mut AdConn,
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
        members: Vec::new(),
    }
}
