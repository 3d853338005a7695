//! Groups an operator released (`writeback release`): Writeback stopped managing them and left
//! their AD objects as they were. Their anchors are gone, so they are no longer Writeback's;
//! this table says why they carry an anchor anyway, so cycles pass them over quietly instead of
//! reporting them as foreign, and `writeback adopt` takes them back.

use std::collections::BTreeMap;

use rusqlite::{params, Connection};
use serde::Serialize;

use super::anchors::Anchor;
use super::clock::now_rfc3339;
use super::error::{SqlContext, StateError};

/// One released group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Released {
    pub cloud_id: String,
    pub dn: String,
    pub object_guid: String,
    pub rule: String,
    pub released_at: String,
}

pub fn all(conn: &Connection) -> Result<BTreeMap<String, Released>, StateError> {
    let op = || "read released groups".to_string();
    let mut stmt = conn
        .prepare(
            "SELECT cloud_id, dn, object_guid, rule, released_at FROM released ORDER BY cloud_id",
        )
        .ctx(conn, op)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(Released {
                cloud_id: r.get(0)?,
                dn: r.get(1)?,
                object_guid: r.get(2)?,
                rule: r.get(3)?,
                released_at: r.get(4)?,
            })
        })
        .ctx(conn, op)?;
    let mut out = BTreeMap::new();
    for r in rows {
        let r = r.ctx(conn, op)?;
        out.insert(r.cloud_id.clone(), r);
    }
    Ok(out)
}

/// Records `a`'s group as released (its anchor is removed by the caller, in the same
/// transaction).
pub fn put(conn: &Connection, a: &Anchor) -> Result<(), StateError> {
    conn.prepare_cached(
        "INSERT INTO released (cloud_id, dn, object_guid, rule, released_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (cloud_id) DO UPDATE SET dn = excluded.dn, object_guid = excluded.object_guid,
             rule = excluded.rule, released_at = excluded.released_at",
    )
    .and_then(|mut s| {
        s.execute(params![
            a.cloud_id,
            a.dn,
            a.object_guid,
            a.rule,
            now_rfc3339()
        ])
    })
    .ctx(conn, || format!("release {}", a.cloud_id))?;
    Ok(())
}

/// Forgets that a group was released (it was adopted again).
pub fn remove(conn: &Connection, cloud_id: &str) -> Result<(), StateError> {
    conn.prepare_cached("DELETE FROM released WHERE cloud_id = ?1")
        .and_then(|mut s| s.execute([cloud_id]))
        .ctx(conn, || format!("unrelease {cloud_id}"))?;
    Ok(())
}
