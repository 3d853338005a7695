//! Ownership records: which AD object the host created for a cloud id (`anchor`), and a hash
//! of what it last wrote there (`applied`), so an unchanged object costs no LDAP work.
//!
//! The functions take a `Connection` so they also run inside [`super::Store::with_transaction`]
//! (a `Transaction` derefs to one): batching many writes into one commit saves an fsync each.

use std::collections::BTreeMap;

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use super::clock::now_rfc3339;
use super::error::{SqlContext, StateError};

/// A cloud object's AD counterpart that the host owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub cloud_id: String,
    /// AD's `objectGUID` as a string; unique when not empty: one AD object, one cloud id.
    pub object_guid: String,
    pub dn: String,
    /// The rule (file or rule name) that produced the object.
    pub rule: String,
    /// RFC 3339 UTC; stamped with the current time when left empty.
    pub updated_at: String,
}

/// An `anchor` row selected as `cloud_id, object_guid, dn, rule, updated_at`.
fn anchor_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Anchor> {
    Ok(Anchor {
        cloud_id: r.get(0)?,
        object_guid: r.get(1)?,
        dn: r.get(2)?,
        rule: r.get(3)?,
        updated_at: r.get(4)?,
    })
}

pub fn anchors(conn: &Connection) -> Result<BTreeMap<String, Anchor>, StateError> {
    let op = || "load anchors".to_string();
    let mut stmt = conn
        .prepare("SELECT cloud_id, object_guid, dn, rule, updated_at FROM anchor ORDER BY cloud_id")
        .ctx(conn, op)?;
    let rows = stmt.query_map([], anchor_row).ctx(conn, op)?;
    let mut out = BTreeMap::new();
    for a in rows {
        let a = a.ctx(conn, op)?;
        out.insert(a.cloud_id.clone(), a);
    }
    Ok(out)
}

/// Inserts or replaces the anchor of `a.cloud_id`. Fails (UNIQUE constraint) when a non-empty
/// GUID is already anchored to another cloud id.
pub fn put_anchor(conn: &Connection, a: &Anchor) -> Result<(), StateError> {
    let updated_at = if a.updated_at.is_empty() {
        now_rfc3339()
    } else {
        a.updated_at.clone()
    };
    conn.prepare_cached(
        "INSERT INTO anchor (cloud_id, object_guid, dn, rule, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (cloud_id) DO UPDATE SET object_guid = excluded.object_guid,
           dn = excluded.dn, rule = excluded.rule, updated_at = excluded.updated_at",
    )
    .and_then(|mut s| s.execute(params![a.cloud_id, a.object_guid, a.dn, a.rule, updated_at]))
    .ctx(conn, || format!("put anchor {}", a.cloud_id))?;
    Ok(())
}

pub fn remove_anchor(conn: &Connection, cloud_id: &str) -> Result<(), StateError> {
    conn.prepare_cached("DELETE FROM anchor WHERE cloud_id = ?1")
        .and_then(|mut s| s.execute([cloud_id]))
        .ctx(conn, || format!("remove anchor {cloud_id}"))?;
    Ok(())
}

pub fn applied_hashes(conn: &Connection) -> Result<BTreeMap<String, String>, StateError> {
    let op = || "load applied hashes".to_string();
    let mut stmt = conn
        .prepare("SELECT cloud_id, hash FROM applied ORDER BY cloud_id")
        .ctx(conn, op)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .ctx(conn, op)?;
    rows.collect::<Result<BTreeMap<String, String>, _>>()
        .ctx(conn, op)
}

pub fn put_applied(conn: &Connection, cloud_id: &str, hash: &str) -> Result<(), StateError> {
    conn.prepare_cached(
        "INSERT INTO applied (cloud_id, hash, applied_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (cloud_id) DO UPDATE SET hash = excluded.hash, applied_at = excluded.applied_at",
    )
    .and_then(|mut s| s.execute([cloud_id, hash, &now_rfc3339()]))
    .ctx(conn, || format!("put applied hash {cloud_id}"))?;
    Ok(())
}

pub fn remove_applied(conn: &Connection, cloud_id: &str) -> Result<(), StateError> {
    conn.prepare_cached("DELETE FROM applied WHERE cloud_id = ?1")
        .and_then(|mut s| s.execute([cloud_id]))
        .ctx(conn, || format!("remove applied hash {cloud_id}"))?;
    Ok(())
}

/// The anchor of one cloud id, by key.
pub fn anchor(conn: &Connection, cloud_id: &str) -> Result<Option<Anchor>, StateError> {
    use rusqlite::OptionalExtension;
    conn.prepare_cached(
        "SELECT cloud_id, object_guid, dn, rule, updated_at FROM anchor WHERE cloud_id = ?1",
    )
    .and_then(|mut s| s.query_row([cloud_id], anchor_row).optional())
    .ctx(conn, || format!("load anchor {cloud_id}"))
}

/// Every anchored cloud id, sorted (ids only: what a whole-state pass needs to find deletes).
pub fn anchor_ids(conn: &Connection) -> Result<std::collections::BTreeSet<String>, StateError> {
    let op = || "load anchored ids".to_string();
    let mut stmt = conn
        .prepare("SELECT cloud_id FROM anchor ORDER BY cloud_id")
        .ctx(conn, op)?;
    let rows = stmt.query_map([], |r| r.get(0)).ctx(conn, op)?;
    rows.collect::<Result<_, _>>().ctx(conn, op)
}

/// The hash last applied for one cloud id, by key.
pub fn applied_hash(conn: &Connection, cloud_id: &str) -> Result<Option<String>, StateError> {
    use rusqlite::OptionalExtension;
    conn.prepare_cached("SELECT hash FROM applied WHERE cloud_id = ?1")
        .and_then(|mut s| s.query_row([cloud_id], |r| r.get(0)).optional())
        .ctx(conn, || format!("load applied hash {cloud_id}"))
}

/// Records that a create of `cloud_id` at `dn` is about to be written: if the host dies after
/// AD took it and before the anchor is recorded, the next cycle knows the object as its own.
pub fn put_intent(
    conn: &Connection,
    cloud_id: &str,
    dn: &str,
    run_id: i64,
) -> Result<(), StateError> {
    conn.prepare_cached(
        "INSERT INTO intent (cloud_id, dn, run_id) VALUES (?1, ?2, ?3)
         ON CONFLICT (cloud_id) DO UPDATE SET dn = excluded.dn, run_id = excluded.run_id",
    )
    .and_then(|mut s| s.execute(params![cloud_id, dn, run_id]))
    .ctx(conn, || format!("record intent to create {cloud_id}"))?;
    Ok(())
}

pub fn remove_intent(conn: &Connection, cloud_id: &str) -> Result<(), StateError> {
    conn.prepare_cached("DELETE FROM intent WHERE cloud_id = ?1")
        .and_then(|mut s| s.execute([cloud_id]))
        .ctx(conn, || format!("remove intent of {cloud_id}"))?;
    Ok(())
}

/// The DN a create of `cloud_id` was about to be written at, if not settled.
pub fn intent(conn: &Connection, cloud_id: &str) -> Result<Option<String>, StateError> {
    use rusqlite::OptionalExtension;
    conn.prepare_cached("SELECT dn FROM intent WHERE cloud_id = ?1")
        .and_then(|mut s| s.query_row([cloud_id], |r| r.get(0)).optional())
        .ctx(conn, || format!("load intent of {cloud_id}"))
}

/// The cloud ids with an unsettled intent (a handful at most: creates that met a kill or a lost
/// connection).
pub fn intent_ids(conn: &Connection) -> Result<Vec<String>, StateError> {
    conn.prepare_cached("SELECT cloud_id FROM intent ORDER BY cloud_id")
        .and_then(|mut s| {
            s.query_map([], |r| r.get(0))
                .and_then(|rows| rows.collect::<Result<Vec<String>, _>>())
        })
        .ctx(conn, || "list intents".into())
}

pub fn anchor_count(conn: &Connection) -> Result<usize, StateError> {
    conn.query_row("SELECT count(*) FROM anchor", [], |r| r.get::<_, i64>(0))
        .map(|n| usize::try_from(n).unwrap_or(0))
        .ctx(conn, || "count anchors".into())
}
