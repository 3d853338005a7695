//! The cloud cache (`cloud_object`, `cloud_member`) and the delta links that say how far it is
//! current. A delta round and its link are written in one transaction, so after a crash the
//! cache and the link never disagree: the next round starts exactly where the cache is.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{params, Connection, OptionalExtension, Statement};
use serde_json::{Map, Value};

use super::clock::now_rfc3339;
use super::error::{corrupt, encode, SqlContext, StateError};
use super::member_changes;
use super::member_digest::MemberDigest;
use crate::graph::model::{CloudObject, DeltaItem, DeltaRound, MemberRef, RemovedReason};

/// Which cached objects: selects rows by `cloud_object.kind` and `delta_link.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    Group,
    User,
    /// Devices, read for the groups that hold them (schema version 12).
    Device,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 3] = [ObjectKind::Group, ObjectKind::User, ObjectKind::Device];

    /// The value stored in the `kind` columns.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Group => "group",
            ObjectKind::User => "user",
            ObjectKind::Device => "device",
        }
    }
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one applied delta round did to the cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheChanges {
    /// Ids upserted (new, changed, restored) or soft deleted.
    pub changed: BTreeSet<String>,
    /// Ids whose rows were removed: hard deleted, or absent from a full round.
    pub deleted: BTreeSet<String>,
}

/// When the delta link of `kind` was last stored (RFC 3339), if there is one.
pub(crate) fn delta_link_updated(
    conn: &Connection,
    kind: ObjectKind,
) -> Result<Option<String>, StateError> {
    conn.query_row(
        "SELECT updated_at FROM delta_link WHERE kind = ?1",
        [kind.as_str()],
        |r| r.get(0),
    )
    .optional()
    .ctx(conn, || format!("read {kind} delta link time"))
}

pub(crate) fn delta_link(
    conn: &Connection,
    kind: ObjectKind,
) -> Result<Option<String>, StateError> {
    conn.query_row(
        "SELECT link FROM delta_link WHERE kind = ?1",
        [kind.as_str()],
        |r| r.get(0),
    )
    .optional()
    .ctx(conn, || format!("read {kind} delta link"))
}

/// A stored delta link and the `$select` of the query it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLink {
    pub link: String,
    /// Comma-joined names; `None` for a link stored before the select was recorded.
    pub select: Option<String>,
}

pub(crate) fn stored_link(
    conn: &Connection,
    kind: ObjectKind,
) -> Result<Option<StoredLink>, StateError> {
    conn.query_row(
        "SELECT link, select_list FROM delta_link WHERE kind = ?1",
        [kind.as_str()],
        |r| {
            Ok(StoredLink {
                link: r.get(0)?,
                select: r.get(1)?,
            })
        },
    )
    .optional()
    .ctx(conn, || format!("read {kind} delta link"))
}

pub(crate) fn clear_delta_link(conn: &Connection, kind: ObjectKind) -> Result<(), StateError> {
    conn.execute("DELETE FROM delta_link WHERE kind = ?1", [kind.as_str()])
        .ctx(conn, || format!("clear {kind} delta link"))?;
    Ok(())
}

/// The statements one round needs, prepared once.
struct Stmts<'t> {
    select_props: Statement<'t>,
    upsert: Statement<'t>,
    soft_delete: Statement<'t>,
    delete_object: Statement<'t>,
    delete_members: Statement<'t>,
    delete_member: Statement<'t>,
    upsert_member: Statement<'t>,
    mark_pending: Statement<'t>,
    read_digest: Statement<'t>,
    write_digest: Statement<'t>,
}

/// Where a delta round stands while its pages are written chunk by chunk (see
/// [`apply_chunk`]): the ids it has written so far, and what it changed. Bounded by the round's
/// size, never by the whole cache's contents.
#[derive(Debug, Default)]
pub struct RoundProgress {
    /// True when the round carries the whole tenant (initial query, reset).
    pub full: bool,
    /// Ids written by earlier chunks of this round: a full round replaces an object's
    /// properties and members the first time it shows up, and overlays later occurrences (a
    /// large group repeated across pages).
    pub(crate) seen: SeenIds,
    /// What the round changed, when asked for ([`RoundProgress::new`]); a cycle does not ask
    /// (its changes are the pending marks), so a full round of a million groups keeps no list.
    pub changes: CacheChanges,
    untracked: bool,
}

impl RoundProgress {
    /// A round that lists what it changed in `changes`.
    pub fn new(full: bool) -> Self {
        RoundProgress {
            full,
            ..Default::default()
        }
    }

    /// A round that keeps no list of what it changed (`changes` stays empty).
    pub fn untracked(full: bool) -> Self {
        RoundProgress {
            full,
            untracked: true,
            ..Default::default()
        }
    }

    pub(crate) fn changed(&mut self, id: &str) {
        if !self.untracked {
            self.changes.changed.insert(id.to_string());
        }
    }

    pub(crate) fn deleted(&mut self, id: &str) {
        if !self.untracked {
            self.changes.deleted.insert(id.to_string());
        }
    }
}

/// The ids a round carried so far, each kept as 128 bits of its SHA-256 (a full round of a
/// million groups holds 16 MB instead of a string apiece; two ids sharing 128 bits would take
/// some 2^64 ids to expect).
#[derive(Debug, Default)]
pub(crate) struct SeenIds(std::collections::HashSet<u128>);

impl SeenIds {
    fn key(id: &str) -> u128 {
        use sha2::Digest;
        let h = sha2::Sha256::digest(id.as_bytes());
        let mut b = [0u8; 16];
        for (to, from) in b.iter_mut().zip(h.iter()) {
            *to = *from;
        }
        u128::from_le_bytes(b)
    }

    /// True when `id` was not carried before.
    pub(crate) fn insert(&mut self, id: &str) -> bool {
        self.0.insert(Self::key(id))
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.0.contains(&Self::key(id))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Applies a merged round and stores its link; the caller commits. Items are visited in id
/// order, so the outcome does not depend on map iteration.
pub(crate) fn apply_delta(
    tx: &Connection,
    kind: ObjectKind,
    round: &DeltaRound,
) -> Result<CacheChanges, StateError> {
    let mut progress = RoundProgress::new(round.full);
    apply_chunk(tx, kind, &round.items, &mut progress)?;
    finish_round(tx, kind, &round.delta_link, None, &mut progress)?;
    Ok(progress.changes)
}

/// Writes one chunk of a round's merged items (no link); the caller commits. Every id written is
/// also marked pending, in the same transaction, so a change is never lost between the cache
/// and the cycle that applies it (a kill, a dry run).
pub(crate) fn apply_chunk(
    tx: &Connection,
    kind: ObjectKind,
    items: &BTreeMap<String, DeltaItem>,
    progress: &mut RoundProgress,
) -> Result<(), StateError> {
    let conn = tx;
    let op = || format!("apply {kind} delta round");
    let prep = |sql: &str| conn.prepare(sql).ctx(conn, op);
    let mut st = Stmts {
        select_props: prep("SELECT props_json FROM cloud_object WHERE kind = ?1 AND id = ?2")?,
        // A new group starts with no members: the empty set's digest.
        upsert: prep(
            "INSERT INTO cloud_object
               (kind, id, props_json, soft_deleted, updated_at, member_digest, member_count)
             VALUES (?1, ?2, ?3, 0, ?4,
               CASE WHEN ?1 = 'group' THEN ?5 END, CASE WHEN ?1 = 'group' THEN 0 END)
             ON CONFLICT (kind, id) DO UPDATE SET
               props_json = excluded.props_json, soft_deleted = 0, updated_at = excluded.updated_at",
        )?,
        soft_delete: prep(
            "UPDATE cloud_object SET props_json = ?3, soft_deleted = 1, updated_at = ?4
             WHERE kind = ?1 AND id = ?2",
        )?,
        delete_object: prep("DELETE FROM cloud_object WHERE kind = ?1 AND id = ?2")?,
        delete_members: prep("DELETE FROM cloud_member WHERE group_id = ?1")?,
        delete_member: prep("DELETE FROM cloud_member WHERE group_id = ?1 AND member_id = ?2")?,
        upsert_member: prep(
            "INSERT INTO cloud_member (group_id, member_id, member_type) VALUES (?1, ?2, ?3)
             ON CONFLICT (group_id, member_id) DO UPDATE SET member_type = excluded.member_type",
        )?,
        mark_pending: prep("INSERT OR IGNORE INTO pending (kind, id) VALUES (?1, ?2)")?,
        read_digest: prep(
            "SELECT member_digest, member_count FROM cloud_object WHERE kind = 'group' AND id = ?1",
        )?,
        write_digest: prep(
            "UPDATE cloud_object SET member_digest = ?2, member_count = ?3
             WHERE kind = 'group' AND id = ?1",
        )?,
    };
    let now = now_rfc3339();
    let k = kind.as_str();
    if progress.full && kind == ObjectKind::Group && progress.seen.is_empty() {
        // A full round writes every membership in the tenant's order, which is random for the
        // member index: kept, it costs more than the rest of the round. Built once at the
        // round's end instead (see `finish_round`; a kill in between rebuilds it at open).
        conn.execute_batch(&format!("DROP INDEX IF EXISTS {MEMBER_INDEX}"))
            .ctx(conn, || "drop the member index for a full round".into())?;
        // The cache is replaced: no group's changes are known any more.
        super::member_changes::forget_all(conn)?;
    }

    for item in items.values() {
        // A full round replaces an object the first time the round carries it.
        let replace = progress.full && progress.seen.insert(&item.id);
        match item.removed {
            Some(RemovedReason::Deleted) => {
                if delete_object(conn, &mut st, kind, &item.id)? {
                    progress.deleted(&item.id);
                }
            }
            Some(RemovedReason::Changed) => {
                // Soft delete keeps what is known, so a restore or a graveyard rule still has
                // the properties and members. An object never cached has nothing to keep.
                let Some(mut props) = cached_props(conn, &mut st, kind, &item.id)? else {
                    continue;
                };
                overlay(&mut props, &item.props);
                // Delta reports a soft delete as a bare `@removed`; remember when it was seen,
                // so rules can act on the deletion's age (e.g. a graveyard with delayed delete).
                if props.get("deletedDateTime").is_none_or(|v| v.is_null()) {
                    props.insert(
                        "deletedDateTime".into(),
                        serde_json::Value::String(now.clone()),
                    );
                }
                let json = props_json(conn, &item.id, &props)?;
                st.soft_delete
                    .execute(params![k, item.id, json, now])
                    .ctx(conn, op)?;
                progress.changed(&item.id);
            }
            None => {
                // A full round's members are the baseline, not changes to it.
                let upsert = Upsert {
                    replace,
                    note: !progress.full,
                };
                upsert_object(conn, &mut st, kind, item, upsert, &now)?;
                progress.changed(&item.id);
            }
        }
        st.mark_pending.execute([k, &item.id]).ctx(conn, op)?;
    }
    Ok(())
}

/// Ends a round: a full round deletes the cached objects it did not carry; then the link is
/// stored with the `$select` of its query (`None`: not known). The caller commits.
pub(crate) fn finish_round(
    tx: &Connection,
    kind: ObjectKind,
    delta_link: &str,
    select: Option<&str>,
    progress: &mut RoundProgress,
) -> Result<(), StateError> {
    let conn = tx;
    let k = kind.as_str();
    let now = now_rfc3339();
    if progress.full {
        // A full round is the whole tenant: whatever it did not mention is gone.
        let gone = absent_ids(conn, kind, &progress.seen)?;
        if !gone.is_empty() {
            let op = || format!("apply {kind} delta round: delete absent objects");
            let mut del = conn
                .prepare("DELETE FROM cloud_object WHERE kind = ?1 AND id = ?2")
                .ctx(conn, op)?;
            let mut del_members = conn
                .prepare("DELETE FROM cloud_member WHERE group_id = ?1")
                .ctx(conn, op)?;
            let mut pending = conn
                .prepare("INSERT OR IGNORE INTO pending (kind, id) VALUES (?1, ?2)")
                .ctx(conn, op)?;
            for id in gone {
                del.execute([k, &id]).ctx(conn, op)?;
                if kind == ObjectKind::Group {
                    del_members.execute([&id]).ctx(conn, op)?;
                }
                pending.execute([k, &id]).ctx(conn, op)?;
                progress.deleted(&id);
            }
        }
    }
    if progress.full && kind == ObjectKind::Group {
        ensure_member_index(conn)?;
    }
    // Written last: if anything above failed, the transaction rolls back with the old link.
    conn.execute(
        "INSERT INTO delta_link (kind, link, updated_at, select_list) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (kind) DO UPDATE SET link = excluded.link, updated_at = excluded.updated_at,
             select_list = excluded.select_list",
        params![k, delta_link, now, select],
    )
    .ctx(conn, || format!("store {kind} delta link"))?;
    Ok(())
}

/// The index that finds the groups holding a member (`cloud_member.member_id`).
pub(crate) const MEMBER_INDEX: &str = "cloud_member_by_member";

/// Creates the member index when it is missing: after a full round, or at open after a full
/// round was cut short. A present index costs one schema lookup and no write.
pub(crate) fn ensure_member_index(conn: &Connection) -> Result<(), StateError> {
    let present: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'index' AND name = ?1",
            [MEMBER_INDEX],
            |r| r.get(0),
        )
        .ctx(conn, || "look up the member index".into())?;
    if !present {
        conn.execute_batch(&format!(
            "CREATE INDEX IF NOT EXISTS {MEMBER_INDEX} ON cloud_member (member_id)"
        ))
        .ctx(conn, || "build the member index".into())?;
    }
    Ok(())
}

/// How [`upsert_object`] writes an item.
#[derive(Debug, Clone, Copy)]
struct Upsert {
    /// Replace the object's properties and members (its first occurrence in a full round).
    replace: bool,
    /// Note its member changes (`member_change`): in rounds from a deltaLink only.
    note: bool,
}

fn upsert_object(
    conn: &Connection,
    st: &mut Stmts<'_>,
    kind: ObjectKind,
    item: &DeltaItem,
    how: Upsert,
    now: &str,
) -> Result<(), StateError> {
    let full = how.replace;
    let op = || format!("apply {kind} delta round: upsert {}", item.id);
    // A full round carries every property; an incremental one only what changed.
    let json = if full {
        props_json(conn, &item.id, &item.props)?
    } else {
        let mut props = cached_props(conn, st, kind, &item.id)?.unwrap_or_default();
        overlay(&mut props, &item.props);
        // An object that shows up alive is not deleted (a restore comes as a plain item), even
        // if a soft delete left a deletion time in the cache.
        if !item.props.contains_key("deletedDateTime") {
            props.remove("deletedDateTime");
        }
        props_json(conn, &item.id, &props)?
    };
    let empty = MemberDigest::default().to_hex();
    st.upsert
        .execute(params![kind.as_str(), item.id, json, now, empty])
        .ctx(conn, op)?;
    if kind != ObjectKind::Group {
        return Ok(());
    }
    // The member set's digest follows each member the cache really gains or loses (Graph
    // replays entries); `None`: not known, counted again from the rows below.
    let mut set = match full {
        true => Some((MemberDigest::default(), 0i64)),
        false => stored_digest(conn, st, &item.id)?,
    };
    if full {
        st.delete_members.execute([&item.id]).ctx(conn, op)?;
        member_changes::forget(conn, &item.id)?;
    } else {
        for m in &item.members_removed {
            // Only what the cache really loses is a change.
            if let Some(odata_type) = member_changes::cached_member(conn, &item.id, m)? {
                if let Some((d, n)) = set.as_mut() {
                    d.remove(m);
                    *n -= 1;
                }
                if how.note {
                    let gone = MemberRef {
                        odata_type,
                        id: m.clone(),
                    };
                    member_changes::note(conn, &item.id, &gone, false)?;
                }
            }
            st.delete_member.execute([&item.id, m]).ctx(conn, op)?;
        }
    }
    // Additions after removals: an id in both sets ends up a member.
    for m in item.members_added.values() {
        // A replaced group's rows are gone: every addition is new.
        if full || member_changes::cached_member(conn, &item.id, &m.id)?.is_none() {
            if let Some((d, n)) = set.as_mut() {
                d.add(&m.id);
                *n += 1;
            }
            if how.note {
                member_changes::note(conn, &item.id, m, true)?;
            }
        }
        st.upsert_member
            .execute([&item.id, &m.id, &m.odata_type])
            .ctx(conn, op)?;
    }
    let (digest, count) = match set {
        Some(s) => s,
        None => count_members(conn, &item.id)?,
    };
    st.write_digest
        .execute(params![item.id, digest.to_hex(), count])
        .ctx(conn, op)?;
    Ok(())
}

/// The member digest and count stored with a cached group (`None` when the group is not
/// cached, or its digest is missing or unreadable).
fn stored_digest(
    conn: &Connection,
    st: &mut Stmts<'_>,
    id: &str,
) -> Result<Option<(MemberDigest, i64)>, StateError> {
    let row: Option<(Option<String>, Option<i64>)> = st
        .read_digest
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .ctx(conn, || format!("read the member digest of {id}"))?;
    Ok(match row {
        Some((Some(text), Some(n))) => MemberDigest::from_hex(&text).map(|d| (d, n)),
        _ => None,
    })
}

/// A group's member digest and count from its member rows.
fn count_members(conn: &Connection, id: &str) -> Result<(MemberDigest, i64), StateError> {
    let op = || format!("count the members of {id}");
    let mut stmt = conn
        .prepare_cached("SELECT member_id FROM cloud_member WHERE group_id = ?1")
        .ctx(conn, op)?;
    let mut rows = stmt.query([id]).ctx(conn, op)?;
    let (mut d, mut n) = (MemberDigest::default(), 0i64);
    while let Some(r) = rows.next().ctx(conn, op)? {
        let m: String = r.get(0).ctx(conn, op)?;
        d.add(&m);
        n += 1;
    }
    Ok((d, n))
}

/// Stores every cached group's member digest and count, computed from the member rows in one
/// ordered scan (the schema migration that adds them).
pub(crate) fn fill_member_digests(conn: &Connection) -> Result<(), StateError> {
    let op = || "compute the cached groups' member digests".to_string();
    conn.execute(
        "UPDATE cloud_object SET member_digest = ?1, member_count = 0 WHERE kind = 'group'",
        [MemberDigest::default().to_hex()],
    )
    .ctx(conn, op)?;
    let mut write = conn
        .prepare(
            "UPDATE cloud_object SET member_digest = ?2, member_count = ?3
             WHERE kind = 'group' AND id = ?1",
        )
        .ctx(conn, op)?;
    let mut scan = conn
        .prepare("SELECT group_id, member_id FROM cloud_member ORDER BY group_id")
        .ctx(conn, op)?;
    let mut rows = scan.query([]).ctx(conn, op)?;
    let mut current: Option<(String, MemberDigest, i64)> = None;
    while let Some(r) = rows.next().ctx(conn, op)? {
        let group: String = r.get(0).ctx(conn, op)?;
        let member: String = r.get(1).ctx(conn, op)?;
        if current.as_ref().is_some_and(|(g, _, _)| *g != group) {
            if let Some((g, d, n)) = current.take() {
                write.execute(params![g, d.to_hex(), n]).ctx(conn, op)?;
            }
        }
        let (_, d, n) = current.get_or_insert_with(|| (group, MemberDigest::default(), 0));
        d.add(&member);
        *n += 1;
    }
    if let Some((g, d, n)) = current {
        write.execute(params![g, d.to_hex(), n]).ctx(conn, op)?;
    }
    Ok(())
}

/// Deletes an object and the member rows it owns; true when a row existed.
fn delete_object(
    conn: &Connection,
    st: &mut Stmts<'_>,
    kind: ObjectKind,
    id: &str,
) -> Result<bool, StateError> {
    let op = || format!("apply {kind} delta round: delete {id}");
    let n = st
        .delete_object
        .execute([kind.as_str(), id])
        .ctx(conn, op)?;
    if kind == ObjectKind::Group {
        st.delete_members.execute([id]).ctx(conn, op)?;
        member_changes::forget(conn, id)?;
    }
    Ok(n > 0)
}

fn cached_props(
    conn: &Connection,
    st: &mut Stmts<'_>,
    kind: ObjectKind,
    id: &str,
) -> Result<Option<Map<String, Value>>, StateError> {
    let json: Option<String> = st
        .select_props
        .query_row([kind.as_str(), id], |r| r.get(0))
        .optional()
        .ctx(conn, || format!("apply {kind} delta round: read {id}"))?;
    json.map(|j| parse_props(conn, id, &j)).transpose()
}

/// The cached ids of `kind` that `seen` does not hold, read row by row (the whole cache's ids
/// are never held at once).
fn absent_ids(
    conn: &Connection,
    kind: ObjectKind,
    seen: &SeenIds,
) -> Result<Vec<String>, StateError> {
    let op = || format!("list cached {kind} ids");
    let mut stmt = conn
        .prepare("SELECT id FROM cloud_object WHERE kind = ?1 ORDER BY id")
        .ctx(conn, op)?;
    let mut rows = stmt.query([kind.as_str()]).ctx(conn, op)?;
    let mut gone = Vec::new();
    while let Some(r) = rows.next().ctx(conn, op)? {
        let id: String = r.get(0).ctx(conn, op)?;
        if !seen.contains(&id) {
            gone.push(id);
        }
    }
    Ok(gone)
}

/// Present keys replace cached values; a JSON null is kept as null (Graph cleared it).
pub(crate) fn overlay(props: &mut Map<String, Value>, update: &Map<String, Value>) {
    for (k, v) in update {
        props.insert(k.clone(), v.clone());
    }
}

fn props_json(
    conn: &Connection,
    id: &str,
    props: &Map<String, Value>,
) -> Result<String, StateError> {
    serde_json::to_string(props).map_err(|e| encode(conn, "cloud_object", id, "props_json", e))
}

fn parse_props(conn: &Connection, id: &str, json: &str) -> Result<Map<String, Value>, StateError> {
    serde_json::from_str(json).map_err(|e| corrupt(conn, "cloud_object", id, "props_json", e))
}

/// Streams the cached objects of a kind in id order, each with its members (groups), holding
/// one object in memory at a time. Two ordered scans merged: no query per object.
pub(crate) fn for_each_object(
    conn: &Connection,
    kind: ObjectKind,
    mut f: impl FnMut(CloudObject) -> Result<(), StateError>,
) -> Result<(), StateError> {
    let op = || format!("load cached {kind} objects");
    let mut objects = conn
        .prepare(
            "SELECT id, props_json, soft_deleted FROM cloud_object WHERE kind = ?1 ORDER BY id",
        )
        .ctx(conn, op)?;
    let mut members = conn
        .prepare(
            "SELECT group_id, member_id, member_type FROM cloud_member
             ORDER BY group_id, member_id",
        )
        .ctx(conn, op)?;
    let mut obj_rows = objects.query([kind.as_str()]).ctx(conn, op)?;
    let mut mem_rows = if kind == ObjectKind::Group {
        Some(members.query([]).ctx(conn, op)?)
    } else {
        None
    };
    // The member row read ahead but not yet placed: (group_id, member).
    let mut pending: Option<(String, MemberRef)> = None;
    while let Some(row) = obj_rows.next().ctx(conn, op)? {
        let id: String = row.get(0).ctx(conn, op)?;
        let json: String = row.get(1).ctx(conn, op)?;
        let soft_deleted: bool = row.get(2).ctx(conn, op)?;
        let mut obj = CloudObject {
            props: parse_props(conn, &id, &json)?,
            id,
            members: BTreeMap::new(),
            soft_deleted,
        };
        if let Some(rows) = mem_rows.as_mut() {
            loop {
                if pending.is_none() {
                    pending = match rows.next().ctx(conn, op)? {
                        Some(r) => Some((
                            r.get(0).ctx(conn, op)?,
                            MemberRef {
                                id: r.get(1).ctx(conn, op)?,
                                odata_type: r.get(2).ctx(conn, op)?,
                            },
                        )),
                        None => None,
                    };
                }
                match pending.take() {
                    // Rows of a group no longer cached: skip them.
                    Some((g, _)) if g.as_str() < obj.id.as_str() => {}
                    Some((g, m)) if g == obj.id => {
                        obj.members.insert(m.id.clone(), m);
                    }
                    other => {
                        pending = other;
                        break;
                    }
                }
            }
        }
        f(obj)?;
    }
    Ok(())
}

pub(crate) fn load_objects(
    conn: &Connection,
    kind: ObjectKind,
) -> Result<BTreeMap<String, CloudObject>, StateError> {
    let mut out = BTreeMap::new();
    for_each_object(conn, kind, |o| {
        out.insert(o.id.clone(), o);
        Ok(())
    })?;
    Ok(out)
}

pub(crate) fn load_object(
    conn: &Connection,
    kind: ObjectKind,
    id: &str,
) -> Result<Option<CloudObject>, StateError> {
    let op = || format!("load cached {kind} {id}");
    let row: Option<(String, bool)> = conn
        .query_row(
            "SELECT props_json, soft_deleted FROM cloud_object WHERE kind = ?1 AND id = ?2",
            [kind.as_str(), id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .ctx(conn, op)?;
    let Some((json, soft_deleted)) = row else {
        return Ok(None);
    };
    let mut members = Vec::new();
    if kind == ObjectKind::Group {
        let mut stmt = conn
            .prepare_cached(
                "SELECT member_id, member_type FROM cloud_member WHERE group_id = ?1
                 ORDER BY member_id",
            )
            .ctx(conn, op)?;
        let rows = stmt
            .query_map([id], |r| {
                Ok(MemberRef {
                    id: r.get(0)?,
                    odata_type: r.get(1)?,
                })
            })
            .ctx(conn, op)?;
        for m in rows {
            let m = m.ctx(conn, op)?;
            members.push((m.id.clone(), m));
        }
    }
    Ok(Some(CloudObject {
        id: id.to_string(),
        props: parse_props(conn, id, &json)?,
        // Built in bulk from the sorted rows: a big group's load costs a copy, not a tree
        // insert per member.
        members: BTreeMap::from_iter(members),
        soft_deleted,
    }))
}

/// The cached objects of a kind with these ids (groups with their members), by key: the cost
/// follows the number of ids, not the size of the cache. Ids not cached are left out.
pub(crate) fn load_by_ids<'a>(
    conn: &Connection,
    kind: ObjectKind,
    ids: impl IntoIterator<Item = &'a String>,
) -> Result<BTreeMap<String, CloudObject>, StateError> {
    let mut out = BTreeMap::new();
    for id in ids {
        if out.contains_key(id) {
            continue;
        }
        if let Some(o) = load_object(conn, kind, id)? {
            out.insert(id.clone(), o);
        }
    }
    Ok(out)
}

/// A cached group read without its members: its properties, how many members it has and
/// their digest. What a cycle reads of a group whose rules do not look at its members.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupHead {
    /// The group with its `members` left empty (not read).
    pub props_only: CloudObject,
    pub member_count: usize,
    pub digest: MemberDigest,
}

/// The cached groups with these ids, without their members. A group whose digest is not
/// stored is left out, as are ids not cached: the caller reads those in full.
pub(crate) fn load_heads<'a>(
    conn: &Connection,
    ids: impl IntoIterator<Item = &'a String>,
) -> Result<BTreeMap<String, GroupHead>, StateError> {
    let op = || "load cached groups without members".to_string();
    let mut stmt = conn
        .prepare_cached(
            "SELECT props_json, soft_deleted, member_digest, member_count FROM cloud_object
             WHERE kind = 'group' AND id = ?1",
        )
        .ctx(conn, op)?;
    let mut out = BTreeMap::new();
    for id in ids {
        if out.contains_key(id) {
            continue;
        }
        let row: Option<(String, bool, Option<String>, Option<i64>)> = stmt
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()
            .ctx(conn, op)?;
        let Some((json, soft_deleted, Some(digest), Some(count))) = row else {
            continue;
        };
        let (Some(digest), Ok(member_count)) =
            (MemberDigest::from_hex(&digest), usize::try_from(count))
        else {
            continue;
        };
        let props_only = CloudObject {
            id: id.clone(),
            props: parse_props(conn, id, &json)?,
            members: BTreeMap::new(),
            soft_deleted,
        };
        out.insert(
            id.clone(),
            GroupHead {
                props_only,
                member_count,
                digest,
            },
        );
    }
    Ok(out)
}

/// Which of `ids` are cached members of `group`: one lookup each, whatever the group's size.
pub(crate) fn members_among<'a>(
    conn: &Connection,
    group: &str,
    ids: impl IntoIterator<Item = &'a String>,
) -> Result<BTreeSet<String>, StateError> {
    let mut out = BTreeSet::new();
    for id in ids {
        if member_changes::cached_member(conn, group, id)?.is_some() {
            out.insert(id.clone());
        }
    }
    Ok(out)
}

/// The groups that hold any of `member_ids` as a direct member (index `cloud_member_by_member`).
pub(crate) fn groups_containing<'a>(
    conn: &Connection,
    member_ids: impl IntoIterator<Item = &'a String>,
) -> Result<BTreeSet<String>, StateError> {
    let op = || "find the groups of changed members".to_string();
    let mut stmt = conn
        .prepare_cached("SELECT group_id FROM cloud_member WHERE member_id = ?1")
        .ctx(conn, op)?;
    let mut out = BTreeSet::new();
    for m in member_ids {
        let rows = stmt
            .query_map([m], |r| r.get::<_, String>(0))
            .ctx(conn, op)?;
        for g in rows {
            out.insert(g.ctx(conn, op)?);
        }
    }
    Ok(out)
}

/// Visits the cached groups in id order, `chunk` at a time (each with its members): a whole
/// cache pass that holds one chunk in memory.
pub(crate) fn for_each_chunk(
    conn: &Connection,
    kind: ObjectKind,
    chunk: usize,
    mut f: impl FnMut(Vec<CloudObject>) -> Result<(), StateError>,
) -> Result<(), StateError> {
    let chunk = chunk.max(1);
    let mut buf = Vec::with_capacity(chunk);
    for_each_object(conn, kind, |o| {
        buf.push(o);
        if buf.len() >= chunk {
            f(std::mem::take(&mut buf))?;
        }
        Ok(())
    })?;
    if !buf.is_empty() {
        f(buf)?;
    }
    Ok(())
}

/// How many objects of a kind are cached.
pub(crate) fn count(conn: &Connection, kind: ObjectKind) -> Result<usize, StateError> {
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM cloud_object WHERE kind = ?1",
            [kind.as_str()],
            |r| r.get(0),
        )
        .ctx(conn, || format!("count cached {kind} objects"))?;
    Ok(usize::try_from(n).unwrap_or(0))
}
