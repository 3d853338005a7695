//! Each group's members not found in AD when it was last compared: a cycle looks only at the
//! groups that changed, so its own count says nothing of the others; these rows keep the
//! standing total `writeback status` shows. A group written from its member changes alone has
//! its added members not found added and its removed members taken out.

use rusqlite::{params, Connection};
use serde::Serialize;

use super::error::{SqlContext, StateError};

/// The members not found in AD, over the groups Writeback manages (their anchors; groups the
/// rules keep or let go of are not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UnresolvedTotal {
    pub members: u64,
    pub groups: u64,
}

/// The group's members not found are `members` (none: its rows go).
pub fn set(conn: &Connection, cloud_id: &str, members: &[String]) -> Result<(), StateError> {
    conn.prepare_cached("DELETE FROM unresolved WHERE cloud_id = ?1")
        .and_then(|mut s| s.execute([cloud_id]))
        .ctx(conn, || {
            format!("forget the unresolved members of {cloud_id}")
        })?;
    edit(conn, cloud_id, members, &[])
}

/// `add` are members of the group not found too; `remove` are no longer its members.
pub fn edit(
    conn: &Connection,
    cloud_id: &str,
    add: &[String],
    remove: &[String],
) -> Result<(), StateError> {
    let op = || format!("record the unresolved members of {cloud_id}");
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO unresolved (cloud_id, member_id) VALUES (?1, ?2)
             ON CONFLICT (cloud_id, member_id) DO NOTHING",
        )
        .ctx(conn, op)?;
    for m in add {
        insert.execute(params![cloud_id, m]).ctx(conn, op)?;
    }
    let mut delete = conn
        .prepare_cached("DELETE FROM unresolved WHERE cloud_id = ?1 AND member_id = ?2")
        .ctx(conn, op)?;
    for m in remove {
        delete.execute(params![cloud_id, m]).ctx(conn, op)?;
    }
    Ok(())
}

pub fn total(conn: &Connection) -> Result<UnresolvedTotal, StateError> {
    let (members, groups): (i64, i64) = conn
        .query_row(
            "SELECT count(*), count(DISTINCT u.cloud_id) FROM unresolved u
             JOIN anchor a ON a.cloud_id = u.cloud_id
             WHERE u.cloud_id NOT IN (SELECT cloud_id FROM leaving)
               AND u.cloud_id NOT IN (SELECT cloud_id FROM released)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ctx(conn, || "count the unresolved members".to_string())?;
    Ok(UnresolvedTotal {
        members: u64::try_from(members).unwrap_or(0),
        groups: u64::try_from(groups).unwrap_or(0),
    })
}
