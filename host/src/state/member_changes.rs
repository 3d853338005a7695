//! The member changes of each group since it was last applied (`member_change`): what the delta
//! added to or removed from its cached members, net of changes that cancel out. A cycle turns
//! them into a small member modify instead of comparing the whole group; the rows go with the
//! group's pending mark.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{params, Connection, OptionalExtension};

use super::error::{SqlContext, StateError};
use crate::graph::model::MemberRef;

/// One group's net member changes since its last apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberChanges {
    /// Members the cache gained, by id.
    pub added: BTreeMap<String, MemberRef>,
    /// Members the cache lost, by id (with the type they had).
    pub removed: BTreeMap<String, MemberRef>,
}

impl MemberChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// The cached type of `member` in `group`, when it is a member.
pub(crate) fn cached_member(
    conn: &Connection,
    group: &str,
    member: &str,
) -> Result<Option<String>, StateError> {
    conn.prepare_cached(
        "SELECT member_type FROM cloud_member WHERE group_id = ?1 AND member_id = ?2",
    )
    .and_then(|mut s| s.query_row([group, member], |r| r.get(0)).optional())
    .ctx(conn, || format!("read member {member} of {group}"))
}

/// Notes that the cache is about to gain (`added`) or lose a member: a change that undoes one
/// noted before is forgotten instead, so the rows stay the net change since the last apply.
pub(crate) fn note(
    conn: &Connection,
    group: &str,
    member: &MemberRef,
    added: bool,
) -> Result<(), StateError> {
    let op = || format!("note member change of {group}");
    let undone = conn
        .prepare_cached(
            "DELETE FROM member_change WHERE group_id = ?1 AND member_id = ?2 AND added = ?3",
        )
        .and_then(|mut s| s.execute(params![group, member.id, !added]))
        .ctx(conn, op)?;
    if undone == 0 {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO member_change (group_id, member_id, member_type, added)
             VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut s| s.execute(params![group, member.id, member.odata_type, added]))
        .ctx(conn, op)?;
    }
    Ok(())
}

/// Forgets the changes noted for `group` (its members were replaced, or it is gone).
pub(crate) fn forget(conn: &Connection, group: &str) -> Result<(), StateError> {
    conn.prepare_cached("DELETE FROM member_change WHERE group_id = ?1")
        .and_then(|mut s| s.execute([group]))
        .ctx(conn, || format!("forget member changes of {group}"))?;
    Ok(())
}

/// Forgets every noted change (a full round replaced the cache).
pub(crate) fn forget_all(conn: &Connection) -> Result<(), StateError> {
    conn.execute("DELETE FROM member_change", [])
        .ctx(conn, || "forget member changes".into())?;
    Ok(())
}

/// Forgets the changes of groups no longer pending: they are applied (or no longer wanted).
pub fn forget_settled(conn: &Connection) -> Result<(), StateError> {
    conn.execute(
        "DELETE FROM member_change WHERE group_id NOT IN
           (SELECT id FROM pending WHERE kind = 'group')",
        [],
    )
    .ctx(conn, || "forget applied member changes".into())?;
    Ok(())
}

/// The noted changes of `ids` (groups without any are left out).
pub(crate) fn of<'a>(
    conn: &Connection,
    ids: impl IntoIterator<Item = &'a String>,
) -> Result<BTreeMap<String, MemberChanges>, StateError> {
    let op = || "read member changes".to_string();
    let mut stmt = conn
        .prepare_cached(
            "SELECT member_id, member_type, added FROM member_change
             WHERE group_id = ?1 ORDER BY member_id",
        )
        .ctx(conn, op)?;
    let mut out = BTreeMap::new();
    let ids: BTreeSet<&String> = ids.into_iter().collect();
    for id in ids {
        let rows = stmt
            .query_map([id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                ))
            })
            .ctx(conn, op)?;
        let mut changes = MemberChanges::default();
        for row in rows {
            let (member, odata_type, added) = row.ctx(conn, op)?;
            let m = MemberRef {
                odata_type,
                id: member.clone(),
            };
            match added {
                true => changes.added.insert(member, m),
                false => changes.removed.insert(member, m),
            };
        }
        if !changes.is_empty() {
            out.insert(id.clone(), changes);
        }
    }
    Ok(out)
}
