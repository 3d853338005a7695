//! The cloud cache, delta links, pending marks, member changes and `meta` on PostgreSQL; the
//! same behaviour as `state/cache.rs`, `state/pending.rs` and `state/member_changes.rs`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row, Statement, Transaction};

use super::{big, column, count, get, pg, PgStore, PATH};
use crate::graph::model::{CloudObject, DeltaItem, MemberRef, RemovedReason};
use crate::state::clock::now_rfc3339;
use crate::state::{
    GroupHead, MemberChanges, MemberDigest, ObjectKind, RoundProgress, StateError, StoredLink,
};

/// The statements one chunk needs, prepared once.
struct Stmts {
    select_props: Statement,
    soft_delete: Statement,
    delete_object: Statement,
    delete_members: Statement,
    delete_member: Statement,
    upsert_member: Statement,
    mark_pending: Statement,
    cached_member: Statement,
    read_digest: Statement,
    write_digest: Statement,
}

impl Stmts {
    async fn prepare(t: &Transaction<'_>, kind: ObjectKind) -> Result<Stmts, StateError> {
        let op = || format!("apply {kind} delta round");
        let prep = async |sql: &str| t.prepare(sql).await.map_err(pg(op));
        Ok(Stmts {
            select_props: prep("SELECT props_json FROM cloud_object WHERE kind = $1 AND id = $2")
                .await?,
            soft_delete: prep(
                "UPDATE cloud_object SET props_json = $3, soft_deleted = true, updated_at = $4
                 WHERE kind = $1 AND id = $2",
            )
            .await?,
            delete_object: prep("DELETE FROM cloud_object WHERE kind = $1 AND id = $2").await?,
            delete_members: prep("DELETE FROM cloud_member WHERE group_id = $1").await?,
            delete_member: prep("DELETE FROM cloud_member WHERE group_id = $1 AND member_id = $2")
                .await?,
            upsert_member: prep(
                "INSERT INTO cloud_member (group_id, member_id, member_type) VALUES ($1, $2, $3)
                 ON CONFLICT (group_id, member_id) DO UPDATE SET member_type = excluded.member_type",
            )
            .await?,
            mark_pending: prep(
                "INSERT INTO pending (kind, id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .await?,
            cached_member: prep(
                "SELECT member_type FROM cloud_member WHERE group_id = $1 AND member_id = $2",
            )
            .await?,
            read_digest: prep(
                "SELECT member_digest, member_count FROM cloud_object
                 WHERE kind = 'group' AND id = $1",
            )
            .await?,
            write_digest: prep(
                "UPDATE cloud_object SET member_digest = $2, member_count = $3
                 WHERE kind = 'group' AND id = $1",
            )
            .await?,
        })
    }
}

/// Writes one chunk of a round (no link), every id written marked pending; see
/// `state::cache::apply_chunk`. The member index is kept through a full round: PostgreSQL
/// would lock the table to drop it, and a standby reads it meanwhile.
pub(crate) async fn apply_chunk(
    t: &Transaction<'_>,
    kind: ObjectKind,
    items: &BTreeMap<String, DeltaItem>,
    progress: &mut RoundProgress,
) -> Result<(), StateError> {
    let op = || format!("apply {kind} delta round");
    let st = Stmts::prepare(t, kind).await?;
    let k = kind.as_str();
    let now = now_rfc3339();
    if progress.full && kind == ObjectKind::Group && progress.seen.is_empty() {
        // The cache is replaced: no group's changes are known any more.
        t.execute("DELETE FROM member_change", &[])
            .await
            .map_err(pg(|| "forget member changes".into()))?;
    }
    // Objects a full round sees for the first time replace what was cached: written together,
    // a few statements for the whole chunk (one round trip per row made a 100k-group first
    // download on PostgreSQL latency-bound). The rest go one by one, as on SQLite.
    let (mut whole, mut merged) = (Vec::new(), Vec::new());
    for item in items.values() {
        let replace = progress.full && progress.seen.insert(&item.id);
        let Some(removed) = &item.removed else {
            match replace {
                true => whole.push(item),
                false => merged.push(item),
            }
            continue;
        };
        match removed {
            RemovedReason::Deleted => {
                let n = t
                    .execute(&st.delete_object, &[&k, &item.id])
                    .await
                    .map_err(pg(op))?;
                if kind == ObjectKind::Group {
                    t.execute(&st.delete_members, &[&item.id])
                        .await
                        .map_err(pg(op))?;
                    forget_member_changes(t, &item.id).await?;
                }
                if n > 0 {
                    progress.deleted(&item.id);
                }
            }
            RemovedReason::Changed => {
                // A soft delete keeps what is known; an object never cached has nothing.
                let Some(mut props) = cached_props(t, &st, kind, &item.id).await? else {
                    continue;
                };
                crate::state::cache::overlay(&mut props, &item.props);
                if props.get("deletedDateTime").is_none_or(|v| v.is_null()) {
                    props.insert("deletedDateTime".into(), Value::String(now.clone()));
                }
                let json = props_json(&item.id, &props)?;
                t.execute(&st.soft_delete, &[&k, &item.id, &json, &now])
                    .await
                    .map_err(pg(op))?;
                progress.changed(&item.id);
            }
        }
        t.execute(&st.mark_pending, &[&k, &item.id])
            .await
            .map_err(pg(op))?;
    }
    replace_objects(t, kind, &whole, &now).await?;
    // A full round's members are the baseline, not changes to it.
    merge_objects(t, &st, kind, &merged, !progress.full, &now).await?;
    for i in whole.iter().chain(&merged) {
        progress.changed(&i.id);
    }
    Ok(())
}

/// Replaces `items` (alive, first seen in a full round) in the cache with their members, all
/// marked pending: what [`upsert_object`] does for one, in five statements for all of them.
async fn replace_objects(
    t: &Transaction<'_>,
    kind: ObjectKind,
    items: &[&DeltaItem],
    now: &str,
) -> Result<(), StateError> {
    if items.is_empty() {
        return Ok(());
    }
    let op = || format!("apply {kind} delta round: {} objects", items.len());
    let k = kind.as_str();
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    let jsons = items
        .iter()
        .map(|i| props_json(&i.id, &i.props))
        .collect::<Result<Vec<String>, StateError>>()?;
    t.execute(
        "INSERT INTO cloud_object (kind, id, props_json, soft_deleted, updated_at)
         SELECT $1, u.id, u.json, false, $4 FROM unnest($2::text[], $3::text[]) AS u(id, json)
         ON CONFLICT (kind, id) DO UPDATE SET props_json = excluded.props_json,
           soft_deleted = false, updated_at = excluded.updated_at",
        &[&k, &ids, &jsons, &now],
    )
    .await
    .map_err(pg(op))?;
    if kind == ObjectKind::Group {
        t.execute("DELETE FROM cloud_member WHERE group_id = ANY($1)", &[&ids])
            .await
            .map_err(pg(op))?;
        t.execute(
            "DELETE FROM member_change WHERE group_id = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(pg(op))?;
        let mut groups = Vec::new();
        let mut members = Vec::new();
        let mut types = Vec::new();
        let mut digests = Vec::with_capacity(items.len());
        let mut counts = Vec::with_capacity(items.len());
        for item in items {
            for m in item.members_added.values() {
                groups.push(item.id.as_str());
                members.push(m.id.as_str());
                types.push(m.odata_type.as_str());
            }
            let d = MemberDigest::of(item.members_added.keys().map(String::as_str));
            digests.push(d.to_hex());
            counts.push(big(item.members_added.len()));
        }
        t.execute(
            "UPDATE cloud_object SET member_digest = u.d, member_count = u.n
             FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(id, d, n)
             WHERE cloud_object.kind = 'group' AND cloud_object.id = u.id",
            &[&ids, &digests, &counts],
        )
        .await
        .map_err(pg(op))?;
        if !groups.is_empty() {
            t.execute(
                "INSERT INTO cloud_member (group_id, member_id, member_type)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
                 ON CONFLICT (group_id, member_id) DO UPDATE SET member_type = excluded.member_type",
                &[&groups, &members, &types],
            )
            .await
            .map_err(pg(op))?;
        }
    }
    mark_all_pending(t, kind, &ids, op).await
}

/// Writes `items` (alive, already cached or seen earlier in this round) over what is cached:
/// their properties laid over the cached ones (read and written for all of them at once), their
/// member changes applied one by one (`note`: kept as member changes).
async fn merge_objects(
    t: &Transaction<'_>,
    st: &Stmts,
    kind: ObjectKind,
    items: &[&DeltaItem],
    note: bool,
    now: &str,
) -> Result<(), StateError> {
    if items.is_empty() {
        return Ok(());
    }
    let op = || format!("apply {kind} delta round: {} objects", items.len());
    let k = kind.as_str();
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    let mut cached: BTreeMap<String, String> = BTreeMap::new();
    for r in t
        .query(
            "SELECT id, props_json FROM cloud_object WHERE kind = $1 AND id = ANY($2)",
            &[&k, &ids],
        )
        .await
        .map_err(pg(op))?
    {
        cached.insert(get(&r, 0, &op)?, get(&r, 1, &op)?);
    }
    let mut jsons = Vec::with_capacity(items.len());
    for item in items {
        let mut props = match cached.get(&item.id) {
            Some(json) => parse_props(&item.id, json)?,
            None => Map::new(),
        };
        crate::state::cache::overlay(&mut props, &item.props);
        // An object that shows up alive is not deleted (a restore comes as a plain item).
        if !item.props.contains_key("deletedDateTime") {
            props.remove("deletedDateTime");
        }
        jsons.push(props_json(&item.id, &props)?);
    }
    // A new group starts with no members: the empty set's digest.
    t.execute(
        "INSERT INTO cloud_object
           (kind, id, props_json, soft_deleted, updated_at, member_digest, member_count)
         SELECT $1, u.id, u.json, false, $4,
           CASE WHEN $1 = 'group' THEN $5 END, CASE WHEN $1 = 'group' THEN 0 END
         FROM unnest($2::text[], $3::text[]) AS u(id, json)
         ON CONFLICT (kind, id) DO UPDATE SET props_json = excluded.props_json,
           soft_deleted = false, updated_at = excluded.updated_at",
        &[&k, &ids, &jsons, &now, &MemberDigest::default().to_hex()],
    )
    .await
    .map_err(pg(op))?;
    if kind == ObjectKind::Group {
        for item in items {
            merge_members(t, st, item, note).await?;
        }
    }
    mark_all_pending(t, kind, &ids, op).await
}

/// A group's reported member changes over its cached members, its member digest following
/// each member the cache really gains or loses (Graph replays entries).
async fn merge_members(
    t: &Transaction<'_>,
    st: &Stmts,
    item: &DeltaItem,
    note: bool,
) -> Result<(), StateError> {
    let op = || format!("apply group delta round: members of {}", item.id);
    let mut set = stored_digest(t, st, &item.id).await?;
    for m in &item.members_removed {
        if let Some(odata_type) = cached_member(t, st, &item.id, m).await? {
            if let Some((d, n)) = set.as_mut() {
                d.remove(m);
                *n -= 1;
            }
            if note {
                let gone = MemberRef {
                    odata_type,
                    id: m.clone(),
                };
                note_member_change(t, &item.id, &gone, false).await?;
            }
        }
        t.execute(&st.delete_member, &[&item.id, m])
            .await
            .map_err(pg(op))?;
    }
    // Additions after removals: an id in both sets ends up a member.
    for m in item.members_added.values() {
        if cached_member(t, st, &item.id, &m.id).await?.is_none() {
            if let Some((d, n)) = set.as_mut() {
                d.add(&m.id);
                *n += 1;
            }
            if note {
                note_member_change(t, &item.id, m, true).await?;
            }
        }
        t.execute(&st.upsert_member, &[&item.id, &m.id, &m.odata_type])
            .await
            .map_err(pg(op))?;
    }
    let (digest, count) = match set {
        Some(s) => s,
        None => count_members(t, &item.id).await?,
    };
    t.execute(&st.write_digest, &[&item.id, &digest.to_hex(), &count])
        .await
        .map_err(pg(op))?;
    Ok(())
}

/// The member digest and count stored with a cached group (`None`: missing or unreadable).
async fn stored_digest(
    t: &Transaction<'_>,
    st: &Stmts,
    id: &str,
) -> Result<Option<(MemberDigest, i64)>, StateError> {
    let op = || format!("read the member digest of {id}");
    let row = t.query_opt(&st.read_digest, &[&id]).await.map_err(pg(op))?;
    let Some(r) = row else { return Ok(None) };
    let text: Option<String> = get(&r, 0, &op)?;
    let n: Option<i64> = get(&r, 1, &op)?;
    Ok(match (text, n) {
        (Some(text), Some(n)) => MemberDigest::from_hex(&text).map(|d| (d, n)),
        _ => None,
    })
}

/// A group's member digest and count from its member rows.
async fn count_members(t: &Transaction<'_>, id: &str) -> Result<(MemberDigest, i64), StateError> {
    let op = || format!("count the members of {id}");
    let rows = t
        .query(
            "SELECT member_id FROM cloud_member WHERE group_id = $1",
            &[&id],
        )
        .await
        .map_err(pg(op))?;
    let mut d = MemberDigest::default();
    for r in &rows {
        let m: String = get(r, 0, &op)?;
        d.add(&m);
    }
    Ok((d, rows.len() as i64))
}

async fn cached_member(
    t: &Transaction<'_>,
    st: &Stmts,
    group: &str,
    member: &str,
) -> Result<Option<String>, StateError> {
    let op = || format!("read member {member} of {group}");
    let row = t
        .query_opt(&st.cached_member, &[&group, &member])
        .await
        .map_err(pg(op))?;
    row.map(|r| get(&r, 0, &op)).transpose()
}

/// Notes a member change; one that undoes a change noted before is forgotten instead, so the
/// rows stay the net change since the last apply.
async fn note_member_change(
    t: &Transaction<'_>,
    group: &str,
    member: &MemberRef,
    added: bool,
) -> Result<(), StateError> {
    let op = || format!("note member change of {group}");
    let undone = t
        .execute(
            "DELETE FROM member_change WHERE group_id = $1 AND member_id = $2 AND added = $3",
            &[&group, &member.id, &!added],
        )
        .await
        .map_err(pg(op))?;
    if undone == 0 {
        t.execute(
            "INSERT INTO member_change (group_id, member_id, member_type, added)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (group_id, member_id) DO UPDATE SET member_type = excluded.member_type,
               added = excluded.added",
            &[&group, &member.id, &member.odata_type, &added],
        )
        .await
        .map_err(pg(op))?;
    }
    Ok(())
}

async fn forget_member_changes(t: &Transaction<'_>, group: &str) -> Result<(), StateError> {
    t.execute("DELETE FROM member_change WHERE group_id = $1", &[&group])
        .await
        .map_err(pg(|| format!("forget member changes of {group}")))?;
    Ok(())
}

async fn cached_props(
    t: &Transaction<'_>,
    st: &Stmts,
    kind: ObjectKind,
    id: &str,
) -> Result<Option<Map<String, Value>>, StateError> {
    let op = || format!("apply {kind} delta round: read {id}");
    let row = t
        .query_opt(&st.select_props, &[&kind.as_str(), &id])
        .await
        .map_err(pg(op))?;
    match row {
        Some(r) => Ok(Some(parse_props(id, &get::<String>(&r, 0, &op)?)?)),
        None => Ok(None),
    }
}

fn props_json(id: &str, props: &Map<String, Value>) -> Result<String, StateError> {
    serde_json::to_string(props).map_err(|cause| StateError::Encode {
        path: PATH.into(),
        table: "cloud_object",
        id: id.to_string(),
        column: "props_json",
        cause,
    })
}

fn parse_props(id: &str, json: &str) -> Result<Map<String, Value>, StateError> {
    serde_json::from_str(json).map_err(|cause| StateError::CorruptRow {
        path: PATH.into(),
        table: "cloud_object",
        id: id.to_string(),
        column: "props_json",
        cause,
    })
}

/// Ends a round: a full round deletes (and marks pending) the cached objects it did not
/// carry; the link is written last, with the `$select` of its query.
pub(crate) async fn finish_round(
    t: &Transaction<'_>,
    kind: ObjectKind,
    delta_link: &str,
    select: Option<&str>,
    progress: &mut RoundProgress,
) -> Result<(), StateError> {
    let k = kind.as_str();
    if progress.full {
        let op = || format!("apply {kind} delta round: delete absent objects");
        // A page of ids at a time: the whole cache's ids are never held at once.
        const PAGE: i64 = 50_000;
        let mut gone: Vec<String> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page: Vec<String> = column(
                t,
                "SELECT id FROM cloud_object WHERE kind = $1 AND ($2::text IS NULL OR id > $2)
                 ORDER BY id LIMIT $3",
                &[&k, &after, &PAGE],
                &op,
            )
            .await?;
            let last = page.last().cloned();
            let n = page.len();
            gone.extend(page.into_iter().filter(|id| !progress.seen.contains(id)));
            if (n as i64) < PAGE {
                break;
            }
            after = last;
        }
        if !gone.is_empty() {
            t.execute(
                "DELETE FROM cloud_object WHERE kind = $1 AND id = ANY($2)",
                &[&k, &gone],
            )
            .await
            .map_err(pg(op))?;
            if kind == ObjectKind::Group {
                t.execute(
                    "DELETE FROM cloud_member WHERE group_id = ANY($1)",
                    &[&gone],
                )
                .await
                .map_err(pg(op))?;
            }
            mark_all_pending(t, kind, &gone, op).await?;
            for id in &gone {
                progress.deleted(id);
            }
        }
    }
    // Written last: if anything above failed, the transaction rolls back with the old link.
    t.execute(
        "INSERT INTO delta_link (kind, link, updated_at, select_list) VALUES ($1, $2, $3, $4)
         ON CONFLICT (kind) DO UPDATE SET link = excluded.link, updated_at = excluded.updated_at,
             select_list = excluded.select_list",
        &[&k, &delta_link, &now_rfc3339(), &select],
    )
    .await
    .map_err(pg(|| format!("store {kind} delta link")))?;
    Ok(())
}

/// Objects from rows of `id, props_json, soft_deleted`, with the members of the groups among
/// them (one query for all).
async fn objects(
    c: &impl GenericClient,
    kind: ObjectKind,
    rows: &[Row],
) -> Result<Vec<CloudObject>, StateError> {
    let op = || format!("load cached {kind} objects");
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: String = get(r, 0, &op)?;
        let json: String = get(r, 1, &op)?;
        out.push(CloudObject {
            props: parse_props(&id, &json)?,
            id,
            members: BTreeMap::new(),
            soft_deleted: get(r, 2, &op)?,
        });
    }
    if kind == ObjectKind::Group && !out.is_empty() {
        let ids: Vec<&str> = out.iter().map(|o| o.id.as_str()).collect();
        let members = c
            .query(
                "SELECT group_id, member_id, member_type FROM cloud_member
                 WHERE group_id = ANY($1) ORDER BY group_id, member_id",
                &[&ids],
            )
            .await
            .map_err(pg(op))?;
        let mut by_group: BTreeMap<String, BTreeMap<String, MemberRef>> = BTreeMap::new();
        for m in &members {
            let group: String = get(m, 0, &op)?;
            let id: String = get(m, 1, &op)?;
            let odata_type: String = get(m, 2, &op)?;
            by_group
                .entry(group)
                .or_default()
                .insert(id.clone(), MemberRef { odata_type, id });
        }
        for o in &mut out {
            if let Some(m) = by_group.remove(&o.id) {
                o.members = m;
            }
        }
    }
    Ok(out)
}

/// `ids` sorted and without repeats, for one `= ANY($1)` query.
fn unique_ids<'a>(ids: impl IntoIterator<Item = &'a String>) -> Vec<&'a str> {
    let set: BTreeSet<&str> = ids.into_iter().map(String::as_str).collect();
    set.into_iter().collect()
}

impl PgStore {
    pub fn stored_link(&self, kind: ObjectKind) -> Result<Option<StoredLink>, StateError> {
        let op = || format!("read {kind} delta link");
        self.block(async {
            let row = self
                .client()
                .query_opt(
                    "SELECT link, select_list FROM delta_link WHERE kind = $1",
                    &[&kind.as_str()],
                )
                .await
                .map_err(pg(op))?;
            row.map(|r| {
                Ok(StoredLink {
                    link: get(&r, 0, &op)?,
                    select: get(&r, 1, &op)?,
                })
            })
            .transpose()
        })
    }

    /// One chunk of a round read page by page, in one transaction (see
    /// `Store::apply_round_chunk`).
    pub fn apply_round_chunk(
        &mut self,
        kind: ObjectKind,
        items: &BTreeMap<String, DeltaItem>,
        progress: &mut RoundProgress,
    ) -> Result<(), StateError> {
        self.with_transaction(async |t| apply_chunk(t, kind, items, progress).await)
    }

    pub fn finish_round(
        &mut self,
        kind: ObjectKind,
        delta_link: &str,
        select: &str,
        progress: &mut RoundProgress,
    ) -> Result<(), StateError> {
        self.with_transaction(async |t| {
            finish_round(t, kind, delta_link, Some(select), progress).await
        })
    }

    /// The cached objects with these ids, by key (ids not cached are left out).
    pub fn load_by_ids<'a>(
        &self,
        kind: ObjectKind,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, CloudObject>, StateError> {
        let ids = unique_ids(ids);
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let op = || format!("load cached {kind} objects by id");
        self.block(async {
            let rows = self
                .client()
                .query(
                    "SELECT id, props_json, soft_deleted FROM cloud_object
                     WHERE kind = $1 AND id = ANY($2) ORDER BY id",
                    &[&kind.as_str(), &ids],
                )
                .await
                .map_err(pg(op))?;
            let objects = objects(self.client(), kind, &rows).await?;
            Ok(objects.into_iter().map(|o| (o.id.clone(), o)).collect())
        })
    }

    /// Visits the cached objects of a kind in id order, `chunk` at a time: one page of the
    /// table per chunk (keyset paging), so `f` runs between queries, never inside one.
    pub fn for_each_chunk(
        &self,
        kind: ObjectKind,
        chunk: usize,
        mut f: impl FnMut(Vec<CloudObject>) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        let chunk = chunk.max(1);
        let op = || format!("load cached {kind} objects");
        let mut after: Option<String> = None;
        loop {
            let page = self.block(async {
                let rows = self
                    .client()
                    .query(
                        "SELECT id, props_json, soft_deleted FROM cloud_object
                         WHERE kind = $1 AND ($2::text IS NULL OR id > $2)
                         ORDER BY id LIMIT $3",
                        &[&kind.as_str(), &after, &big(chunk)],
                    )
                    .await
                    .map_err(pg(op))?;
                objects(self.client(), kind, &rows).await
            })?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.id.clone());
            let full = page.len() >= chunk;
            f(page)?;
            if !full {
                return Ok(());
            }
        }
    }

    /// The cached groups with these ids without their members (see `GroupHead`); a group
    /// whose digest is not stored is left out.
    pub fn load_heads<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, GroupHead>, StateError> {
        let ids = unique_ids(ids);
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let op = || "load cached groups without members".to_string();
        self.block(async {
            let rows = self
                .client()
                .query(
                    "SELECT id, props_json, soft_deleted, member_digest, member_count
                     FROM cloud_object WHERE kind = 'group' AND id = ANY($1) ORDER BY id",
                    &[&ids],
                )
                .await
                .map_err(pg(op))?;
            let mut out = BTreeMap::new();
            for r in &rows {
                let id: String = get(r, 0, &op)?;
                let json: String = get(r, 1, &op)?;
                let digest: Option<String> = get(r, 3, &op)?;
                let n: Option<i64> = get(r, 4, &op)?;
                let (Some(digest), Some(Ok(member_count))) = (
                    digest.as_deref().and_then(MemberDigest::from_hex),
                    n.map(usize::try_from),
                ) else {
                    continue;
                };
                let props_only = CloudObject {
                    props: parse_props(&id, &json)?,
                    id: id.clone(),
                    members: BTreeMap::new(),
                    soft_deleted: get(r, 2, &op)?,
                };
                out.insert(
                    id,
                    GroupHead {
                        props_only,
                        member_count,
                        digest,
                    },
                );
            }
            Ok(out)
        })
    }

    /// Which of `ids` are cached members of `group` (one query).
    pub fn members_among<'a>(
        &self,
        group: &str,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeSet<String>, StateError> {
        let ids: Vec<&str> = ids.into_iter().map(String::as_str).collect();
        if ids.is_empty() {
            return Ok(BTreeSet::new());
        }
        let op = || format!("read members of {group}");
        self.block(async {
            let rows = self
                .client()
                .query(
                    "SELECT member_id FROM cloud_member WHERE group_id = $1 AND member_id = ANY($2)",
                    &[&group, &ids],
                )
                .await
                .map_err(pg(op))?;
            rows.iter().map(|r| get(r, 0, &op)).collect()
        })
    }

    pub fn count_objects(&self, kind: ObjectKind) -> Result<usize, StateError> {
        let op = || format!("count cached {kind} objects");
        self.block(async {
            let row = self
                .client()
                .query_one(
                    "SELECT count(*) FROM cloud_object WHERE kind = $1",
                    &[&kind.as_str()],
                )
                .await
                .map_err(pg(op))?;
            Ok(count(get(&row, 0, &op)?))
        })
    }

    /// The cached groups that hold any of `member_ids` directly.
    pub fn groups_containing<'a>(
        &self,
        member_ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeSet<String>, StateError> {
        let ids: Vec<&str> = member_ids.into_iter().map(String::as_str).collect();
        if ids.is_empty() {
            return Ok(BTreeSet::new());
        }
        let op = || "find the groups of changed members".to_string();
        self.block(async {
            let groups: Vec<String> = column(
                self.client(),
                "SELECT DISTINCT group_id FROM cloud_member WHERE member_id = ANY($1)",
                &[&ids],
                &op,
            )
            .await?;
            Ok(groups.into_iter().collect())
        })
    }

    /// Ids of a kind whose change is not applied yet.
    pub fn pending(&self, kind: ObjectKind) -> Result<BTreeSet<String>, StateError> {
        let op = || format!("read pending {kind} changes");
        self.block(async {
            let ids: Vec<String> = column(
                self.client(),
                "SELECT id FROM pending WHERE kind = $1 ORDER BY id",
                &[&kind.as_str()],
                &op,
            )
            .await?;
            Ok(ids.into_iter().collect())
        })
    }

    /// The member changes noted for these groups since each was last applied (groups without
    /// any are left out).
    pub fn member_changes<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, MemberChanges>, StateError> {
        let ids: Vec<&str> = ids.into_iter().map(String::as_str).collect();
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let op = || "read member changes".to_string();
        self.block(async {
            let rows = self
                .client()
                .query(
                    "SELECT group_id, member_id, member_type, added FROM member_change
                     WHERE group_id = ANY($1) ORDER BY group_id, member_id",
                    &[&ids],
                )
                .await
                .map_err(pg(op))?;
            let mut out: BTreeMap<String, MemberChanges> = BTreeMap::new();
            for r in &rows {
                let group: String = get(r, 0, &op)?;
                let id: String = get(r, 1, &op)?;
                let odata_type: String = get(r, 2, &op)?;
                let added: bool = get(r, 3, &op)?;
                let changes = out.entry(group).or_default();
                let side = match added {
                    true => &mut changes.added,
                    false => &mut changes.removed,
                };
                side.insert(id.clone(), MemberRef { odata_type, id });
            }
            Ok(out)
        })
    }

    /// The cached cloud groups named `name` (see [`groups_named`]).
    pub fn cached_groups_named(&self, name: &str) -> Result<Vec<(String, String)>, StateError> {
        self.block(groups_named(self.client(), name))
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StateError> {
        let op = || format!("read meta {key}");
        self.block(async {
            let row = self
                .client()
                .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
                .await
                .map_err(pg(op))?;
            row.map(|r| get(&r, 0, &op)).transpose()
        })
    }

    /// Writes an instance's status note, unfenced: a standby writes its own too, and no
    /// cycle reads it.
    pub fn set_note(&mut self, key: &str, value: &str) -> Result<(), StateError> {
        let fence = self.fence.take();
        let local = self.local.take();
        let done = self.set_meta(key, value);
        self.fence = fence;
        self.local = local;
        done
    }

    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StateError> {
        self.with_transaction(async |t| {
            t.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&key, &value],
            )
            .await
            .map_err(pg(|| format!("write meta {key}")))?;
            Ok(())
        })
    }
}

/// The cached cloud groups whose `displayName` is `name`, as `(id, displayName)` sorted by
/// id, with the SQLite store's matching (`state::runs::cached_groups_named`): ASCII case and
/// surrounding spaces ignored by the query (`lower` under the "C" collation folds ASCII only,
/// as SQLite's NOCASE), the closest spelling kept.
pub async fn groups_named(
    c: &impl GenericClient,
    name: &str,
) -> Result<Vec<(String, String)>, StateError> {
    let op = || "find cached groups by displayName".to_string();
    let rows = c
        .query(
            "SELECT id, props_json::json->>'displayName' FROM cloud_object
             WHERE kind = 'group'
               AND lower(trim(props_json::json->>'displayName') COLLATE \"C\")
                   = lower(trim($1::text) COLLATE \"C\")
             ORDER BY id",
            &[&name],
        )
        .await
        .map_err(pg(op))?;
    let all = rows
        .iter()
        .map(|r| Ok((get(r, 0, &op)?, get(r, 1, &op)?)))
        .collect::<Result<Vec<(String, String)>, StateError>>()?;
    Ok(crate::state::runs::closest_spelling(all, name))
}

/// Marks `id` as still to be applied.
pub async fn mark_pending(
    t: &Transaction<'_>,
    kind: ObjectKind,
    id: &str,
) -> Result<(), StateError> {
    t.execute(
        "INSERT INTO pending (kind, id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&kind.as_str(), &id],
    )
    .await
    .map_err(pg(|| format!("mark {kind} {id} pending")))?;
    Ok(())
}

/// Marks every id of `ids` (a text array) as still to be applied, in one statement.
async fn mark_all_pending(
    t: &Transaction<'_>,
    kind: ObjectKind,
    ids: &(dyn ToSql + Sync),
    op: impl FnOnce() -> String,
) -> Result<(), StateError> {
    t.execute(
        "INSERT INTO pending (kind, id) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
        &[&kind.as_str(), ids],
    )
    .await
    .map_err(pg(op))?;
    Ok(())
}

/// Clears every mark of a kind.
pub async fn clear_all_pending(t: &Transaction<'_>, kind: ObjectKind) -> Result<(), StateError> {
    t.execute("DELETE FROM pending WHERE kind = $1", &[&kind.as_str()])
        .await
        .map_err(pg(|| format!("clear pending {kind} changes")))?;
    Ok(())
}

/// Forgets the member changes of groups no longer pending.
pub async fn forget_settled_member_changes(t: &Transaction<'_>) -> Result<(), StateError> {
    t.execute(
        "DELETE FROM member_change WHERE group_id NOT IN
           (SELECT id FROM pending WHERE kind = 'group')",
        &[],
    )
    .await
    .map_err(pg(|| "forget applied member changes".into()))?;
    Ok(())
}
