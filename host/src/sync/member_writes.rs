//! The short way for member changes: picks the groups of a batch whose change is their member
//! changes alone (`member_delta` decides), finds their AD objects (DN and GUID only, no member
//! read), resolves only the members added and removed, and builds one modify per group.
//! Whatever it cannot decide safely is left to the full comparison.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Config;
use crate::graph::model::{CloudObject, MemberKind};
use crate::rules::{MemberPolicy, Now, RuleSet};
use crate::state::MemberChanges;

use super::actual;
use super::desired::DesiredBuilder;
use super::directory::Directory;
use super::heads::ReadGroups;
use super::member_delta::{self, Facts, FullCompare};
use super::ownership::Claim;
use super::resolve;
use super::select::Verdict;
use super::state::CycleState;
use super::types::{ActualObject, Change, DesiredObject, Unresolved};
use super::SyncError;

/// What the cycle knows of the batch's groups, for [`pick`].
pub struct Known<'a> {
    /// Hashes last applied.
    pub applied: &'a BTreeMap<String, String>,
    /// Hashes of what the rules want now over the members before the noted changes.
    pub before: &'a BTreeMap<String, String>,
    pub owned: &'a BTreeSet<String>,
    pub quarantined: &'a BTreeSet<String>,
    /// Users and groups with an unapplied change of their own.
    pub pending: &'a BTreeSet<String>,
    pub policies: &'a BTreeMap<String, MemberPolicy>,
}

/// A group going the short way: its member changes and its AD object (no members read).
#[derive(Debug)]
pub struct Short {
    pub changes: MemberChanges,
    pub actual: ActualObject,
}

/// How many pending users and groups a group read without its members is asked about by id;
/// with more pending, its member changes are compared in full.
const PENDING_ASKED_BY_ID: usize = 10_000;

/// The groups of `changes` that go the short way. The rest are compared in full; why is
/// logged at debug level. A group read without its members is asked about its kept members
/// by id (the pending ones only), not read.
pub fn pick<S: CycleState>(
    store: &S,
    config: &Config,
    groups: &ReadGroups,
    changes: BTreeMap<String, MemberChanges>,
    known: Known<'_>,
) -> Result<BTreeMap<String, MemberChanges>, SyncError> {
    let mut picked = BTreeMap::new();
    for (id, c) in changes {
        let kept_changed = match (groups.full.get(&id), groups.is_head(&id)) {
            (Some(g), _) => member_delta::kept_changed(g, &c, known.pending),
            // Beyond a bound (a users' round read in full marks every user) asking by id
            // costs more than the full comparison it could save.
            (None, true) if known.pending.len() > PENDING_ASKED_BY_ID => true,
            (None, true) => {
                let others = known.pending.iter().filter(|m| !c.added.contains_key(*m));
                !store.members_among(&id, others)?.is_empty()
            }
            (None, false) => continue,
        };
        let facts = Facts {
            policy: known
                .policies
                .get(&id)
                .copied()
                .unwrap_or(MemberPolicy::None),
            applied: known.applied.get(&id).map(String::as_str),
            before: known.before.get(&id).map(String::as_str),
            anchored: known.owned.contains(&id),
            quarantined: known.quarantined.contains(&id),
            kept_changed,
            removals: config.member_removals,
        };
        match member_delta::judge(&c, facts) {
            Ok(()) => {
                picked.insert(id, c);
            }
            Err(why) => full(&id, why),
        }
    }
    drop_unknown_removals(store, &mut picked)?;
    Ok(picked)
}

/// Logs why a group's member changes are compared in full.
fn full(id: &str, why: FullCompare) {
    tracing::debug!(
        group = id,
        reason = why.as_str(),
        "member changes compared in full"
    );
}

/// Drops the groups a removed member of which is no longer cached: without its join value
/// its AD object cannot be named.
fn drop_unknown_removals<S: CycleState>(
    store: &S,
    picked: &mut BTreeMap<String, MemberChanges>,
) -> Result<(), SyncError> {
    let mut named = resolve::Named::default();
    for c in picked.values() {
        for m in c.removed.values() {
            match m.kind() {
                MemberKind::User => named.users.insert(m.id.clone()),
                MemberKind::Group => named.groups.insert(m.id.clone()),
                MemberKind::Device => named.devices.insert(m.id.clone()),
                MemberKind::Other => false,
            };
        }
    }
    let found = resolve::Cached::load(store, &named)?;
    let cached: BTreeSet<&String> = found
        .users
        .keys()
        .chain(found.groups.keys())
        .chain(found.devices.keys())
        .collect();
    picked.retain(|id, c| {
        let known = c
            .removed
            .values()
            .all(|m| m.kind() == MemberKind::Other || cached.contains(&m.id));
        if !known {
            full(id, FullCompare::RemovedUnknown);
        }
        known
    });
    Ok(())
}

/// The AD objects of `picked` (DN and GUID: no attribute, no member), kept only when they are
/// Writeback's as recorded; the others go back to the full comparison.
pub async fn locate<D: Directory, S: CycleState>(
    conn: &mut D,
    store: &S,
    config: &Config,
    census: Option<&actual::Census>,
    picked: BTreeMap<String, MemberChanges>,
) -> Result<BTreeMap<String, Short>, SyncError> {
    let ids: Vec<&String> = picked.keys().collect();
    let mut found: BTreeMap<String, Vec<ActualObject>> = BTreeMap::new();
    if !ids.is_empty() {
        for a in actual::locate_owned(conn, config, census, &ids).await? {
            found.entry(a.cloud_id.clone()).or_default().push(a);
        }
    }
    let mut out = BTreeMap::new();
    for (id, changes) in picked {
        let mut objects = found.remove(&id).unwrap_or_default();
        // Exactly one object, the one recorded: anything else is for the full comparison.
        let recorded = match (objects.pop(), objects.is_empty()) {
            (Some(a), true) if super::job::claim_of(store, &a, false)? == Claim::Recorded => {
                Some(a)
            }
            _ => None,
        };
        match recorded {
            Some(actual) => {
                out.insert(id, Short { changes, actual });
            }
            None => full(&id, FullCompare::NotFound),
        }
    }
    Ok(out)
}

/// What [`write`] needs of the cycle to resolve members as the full comparison does.
pub struct Resolving<'a, D> {
    pub config: &'a Config,
    pub rules: &'a RuleSet,
    pub now: Now,
    pub builder: DesiredBuilder<'a>,
    pub lookups: &'a mut resolve::Lookups<D>,
    pub whole: bool,
}

/// The modifies of the short groups: their added and removed members resolved (and nothing
/// else), added members without an AD object reported in `unresolved`. A removed member
/// without one has nothing to remove.
pub async fn write<D: Directory, S: CycleState>(
    conn: &mut D,
    store: &S,
    r: Resolving<'_, D>,
    short: &BTreeMap<String, Short>,
    desired: &BTreeMap<String, DesiredObject>,
    verdicts: &mut BTreeMap<String, Verdict>,
    unresolved: &mut Vec<Unresolved>,
) -> Result<Vec<Change>, SyncError> {
    // The changed members only, as groups of their own, resolved as any group's members are.
    let mut added: BTreeMap<String, CloudObject> = BTreeMap::new();
    let mut removed: BTreeMap<String, CloudObject> = BTreeMap::new();
    for (id, s) in short {
        added.insert(id.clone(), member_delta::holding(id, &s.changes.added));
        removed.insert(id.clone(), member_delta::holding(id, &s.changes.removed));
    }
    let policies: BTreeMap<String, MemberPolicy> = short
        .keys()
        .map(|id| (id.clone(), MemberPolicy::OnPremises))
        .collect();
    let mut named = resolve::wanted(short.keys(), &policies, &added);
    named.extend(resolve::wanted(short.keys(), &policies, &removed));
    let written =
        super::job::member_group_dns(store, r.rules, r.now, &named.groups, verdicts, r.whole)?;
    let cached = resolve::Cached::load(store, &named)?;
    let directory =
        resolve::resolve_members(r.config, conn, &named, cached, &mut *r.lookups).await?;
    let none = BTreeMap::new();
    let mut changes = Vec::new();
    for (id, s) in short {
        let (Some(gained), Some(lost), Some(d)) = (added.get(id), removed.get(id), desired.get(id))
        else {
            continue;
        };
        let p = MemberPolicy::OnPremises;
        let add = r
            .builder
            .members(gained, &none, p, &written, &directory, unresolved)
            .unwrap_or_default();
        // A removed member that has no AD object was never written: nothing to report.
        let mut ignored = Vec::new();
        let remove = r
            .builder
            .members(lost, &none, p, &written, &directory, &mut ignored)
            .unwrap_or_default();
        changes.extend(member_delta::change(id, &d.rule, &s.actual.dn, add, remove));
    }
    Ok(changes)
}
