//! Each group's members not found in AD when it was last compared: a cycle looks only at the
//! groups that changed, so its own count says nothing of the others; these rows keep the
//! standing total `writeback status` shows.

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

/// Records `members` for the group (none: its row goes).
pub fn set(conn: &Connection, cloud_id: &str, members: usize) -> Result<(), StateError> {
    let op = || format!("record the unresolved members of {cloud_id}");
    if members == 0 {
        conn.prepare_cached("DELETE FROM unresolved WHERE cloud_id = ?1")
            .and_then(|mut s| s.execute([cloud_id]))
            .ctx(conn, op)?;
    } else {
        let n = i64::try_from(members).unwrap_or(i64::MAX);
        conn.prepare_cached(
            "INSERT INTO unresolved (cloud_id, members) VALUES (?1, ?2)
             ON CONFLICT (cloud_id) DO UPDATE SET members = excluded.members",
        )
        .and_then(|mut s| s.execute(params![cloud_id, n]))
        .ctx(conn, op)?;
    }
    Ok(())
}

/// Counts `members` more for the group.
pub fn add(conn: &Connection, cloud_id: &str, members: usize) -> Result<(), StateError> {
    let n = i64::try_from(members).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "INSERT INTO unresolved (cloud_id, members) VALUES (?1, ?2)
         ON CONFLICT (cloud_id) DO UPDATE SET members = members + excluded.members",
    )
    .and_then(|mut s| s.execute(params![cloud_id, n]))
    .ctx(conn, || {
        format!("count the unresolved members of {cloud_id}")
    })?;
    Ok(())
}

pub fn total(conn: &Connection) -> Result<UnresolvedTotal, StateError> {
    let (members, groups): (i64, i64) = conn
        .query_row(
            "SELECT coalesce(sum(u.members), 0), count(*) FROM unresolved u
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
