//! The links of Writeback's groups into groups it does not own (a rule's `member_of`) that
//! Writeback added itself. Only these are ever removed: a link someone else made is not here.

use std::collections::BTreeMap;

use rusqlite::{params, Connection};

use super::clock::now_rfc3339;
use super::error::{SqlContext, StateError};

/// The recorded links of `ids`, by cloud id (target DNs, sorted).
pub fn of<'a>(
    conn: &Connection,
    ids: impl IntoIterator<Item = &'a String>,
) -> Result<BTreeMap<String, Vec<String>>, StateError> {
    let op = || "read links".to_string();
    let mut stmt = conn
        .prepare_cached("SELECT target_dn FROM link WHERE cloud_id = ?1 ORDER BY target_dn")
        .ctx(conn, op)?;
    let mut out = BTreeMap::new();
    for id in ids {
        let targets = stmt
            .query_map([id], |r| r.get::<_, String>(0))
            .ctx(conn, op)?
            .collect::<Result<Vec<_>, _>>()
            .ctx(conn, op)?;
        if !targets.is_empty() {
            out.insert(id.clone(), targets);
        }
    }
    Ok(out)
}

pub fn put(conn: &Connection, cloud_id: &str, target: &str) -> Result<(), StateError> {
    conn.prepare_cached(
        "INSERT INTO link (cloud_id, target_dn, added_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (cloud_id, target_dn) DO NOTHING",
    )
    .and_then(|mut s| s.execute(params![cloud_id, target, now_rfc3339()]))
    .ctx(conn, || format!("record link {cloud_id} -> {target}"))?;
    Ok(())
}

pub fn remove(conn: &Connection, cloud_id: &str, target: &str) -> Result<(), StateError> {
    conn.prepare_cached("DELETE FROM link WHERE cloud_id = ?1 AND target_dn = ?2")
        .and_then(|mut s| s.execute([cloud_id, target]))
        .ctx(conn, || format!("forget link {cloud_id} -> {target}"))?;
    Ok(())
}

/// Forgets every link of a group (deleted: AD removed its memberships with it).
pub fn remove_all(conn: &Connection, cloud_id: &str) -> Result<(), StateError> {
    conn.prepare_cached("DELETE FROM link WHERE cloud_id = ?1")
        .and_then(|mut s| s.execute([cloud_id]))
        .ctx(conn, || format!("forget the links of {cloud_id}"))?;
    Ok(())
}
