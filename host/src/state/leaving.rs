//! Owned groups a rule no longer wants written (`#{ leave: "keep" }` or
//! `#{ leave: "delete", after: ... }`): since when, and when the delete is due. A row lives only
//! as long as the group's anchor: once the group is deleted, released or back in scope, it goes.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{params, Connection};
use serde::Serialize;

use super::error::{SqlContext, StateError};

/// One group leaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Leaving {
    /// Unix seconds: when the rule first said keep or delete-later.
    pub since: i64,
    /// Unix seconds: when the delete is due; `None` while the rule keeps it.
    pub delete_at: Option<i64>,
}

pub fn all(conn: &Connection) -> Result<BTreeMap<String, Leaving>, StateError> {
    let op = || "read leaving groups".to_string();
    let mut stmt = conn
        .prepare("SELECT cloud_id, since, delete_at FROM leaving ORDER BY cloud_id")
        .ctx(conn, op)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Leaving {
                    since: r.get(1)?,
                    delete_at: r.get(2)?,
                },
            ))
        })
        .ctx(conn, op)?;
    let mut out = BTreeMap::new();
    for r in rows {
        let (id, l) = r.ctx(conn, op)?;
        out.insert(id, l);
    }
    Ok(out)
}

/// The groups whose delete is due at `now`: looked at again so the delete happens.
pub fn due(conn: &Connection, now: i64) -> Result<BTreeSet<String>, StateError> {
    let op = || "read due deletes of leaving groups".to_string();
    let mut stmt = conn
        .prepare_cached("SELECT cloud_id FROM leaving WHERE delete_at <= ?1")
        .ctx(conn, op)?;
    let ids = stmt
        .query_map([now], |r| r.get::<_, String>(0))
        .ctx(conn, op)?
        .collect::<Result<BTreeSet<_>, _>>()
        .ctx(conn, op)?;
    Ok(ids)
}

pub fn put(conn: &Connection, cloud_id: &str, l: Leaving) -> Result<(), StateError> {
    conn.prepare_cached(
        "INSERT INTO leaving (cloud_id, since, delete_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (cloud_id) DO UPDATE SET since = excluded.since, delete_at = excluded.delete_at",
    )
    .and_then(|mut s| s.execute(params![cloud_id, l.since, l.delete_at]))
    .ctx(conn, || format!("record {cloud_id} as leaving"))?;
    Ok(())
}

pub fn remove(conn: &Connection, cloud_id: &str) -> Result<(), StateError> {
    conn.prepare_cached("DELETE FROM leaving WHERE cloud_id = ?1")
        .and_then(|mut s| s.execute([cloud_id]))
        .ctx(conn, || format!("forget {cloud_id} as leaving"))?;
    Ok(())
}

/// Forgets the rows of groups that are no longer Writeback's (deleted or released).
pub fn forget_unowned(conn: &Connection) -> Result<(), StateError> {
    conn.execute(
        "DELETE FROM leaving WHERE cloud_id NOT IN (SELECT cloud_id FROM anchor)",
        [],
    )
    .ctx(conn, || "forget leaving groups no longer owned".to_string())?;
    Ok(())
}
