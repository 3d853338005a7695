//! Member removals held back by the removal threshold (`sync::removals`), and the operator's
//! approval of them. As with held deletes, the waiting set has an id (a hash of the groups and
//! their removal fingerprints); approving that id lets exactly those removals through, once.

use std::collections::BTreeMap;

use rusqlite::{params, Connection};
use serde::Serialize;

use super::clock::now_rfc3339;
use super::error::{SqlContext, StateError};

/// One group's held removals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldRemovalRow {
    pub cloud_id: String,
    pub dn: String,
    pub removals: usize,
    pub members: usize,
    /// Fingerprint of the member DNs to remove (see `sync::removals::removal_hash`).
    pub removal_hash: String,
    pub approved: bool,
    pub held_at: String,
}

/// Every held removal set, by cloud id.
pub fn held(conn: &Connection) -> Result<BTreeMap<String, HeldRemovalRow>, StateError> {
    let op = || "read held member removals".to_string();
    let mut stmt = conn
        .prepare(
            "SELECT cloud_id, dn, removals, members, removal_hash, approved, held_at
             FROM held_removal ORDER BY cloud_id",
        )
        .ctx(conn, op)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(HeldRemovalRow {
                cloud_id: r.get(0)?,
                dn: r.get(1)?,
                removals: usize::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                members: usize::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                removal_hash: r.get(4)?,
                approved: r.get::<_, i64>(5)? != 0,
                held_at: r.get(6)?,
            })
        })
        .ctx(conn, op)?;
    super::error::keyed(conn, op, rows, |h| h.cloud_id.clone())
}

/// Replaces the held removals with `rows`. A row whose group and fingerprint were held before
/// keeps the time it was first held and its approval (an approval is for that exact set).
pub fn replace(conn: &Connection, rows: &[HeldRemovalRow]) -> Result<(), StateError> {
    let before = held(conn)?;
    conn.execute("DELETE FROM held_removal", [])
        .ctx(conn, || "clear held member removals".into())?;
    let now = now_rfc3339();
    for h in rows {
        let same = before
            .get(&h.cloud_id)
            .filter(|b| b.removal_hash == h.removal_hash);
        let at = same.map_or_else(|| now.clone(), |b| b.held_at.clone());
        let approved = h.approved || same.is_some_and(|b| b.approved);
        conn.prepare_cached(
            "INSERT INTO held_removal (cloud_id, dn, removals, members, removal_hash, approved, held_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut s| {
            s.execute(params![
                h.cloud_id,
                h.dn,
                i64::try_from(h.removals).unwrap_or(i64::MAX),
                i64::try_from(h.members).unwrap_or(i64::MAX),
                h.removal_hash,
                i64::from(approved),
                at
            ])
        })
        .ctx(conn, || format!("hold member removals of {}", h.cloud_id))?;
    }
    Ok(())
}

/// The id of the set waiting for approval and how many groups it holds.
pub fn waiting(conn: &Connection) -> Result<Option<(String, usize)>, StateError> {
    Ok(waiting_of(&held(conn)?))
}

/// [`waiting`] over rows already read (the PostgreSQL store reads its own).
pub(crate) fn waiting_of(rows: &BTreeMap<String, HeldRemovalRow>) -> Option<(String, usize)> {
    let keys: Vec<String> = rows
        .values()
        .filter(|h| !h.approved)
        .map(|h| format!("{}:{}", h.cloud_id, h.removal_hash))
        .collect();
    (!keys.is_empty()).then(|| {
        (
            super::held::set_id(keys.iter().map(String::as_str)),
            keys.len(),
        )
    })
}

/// Approves the waiting set if its id is `id`; `None` when `id` is not that set.
pub fn approve(conn: &Connection, id: &str) -> Result<Option<usize>, StateError> {
    match waiting(conn)? {
        Some((current, n)) if current == id => {
            conn.execute(
                "UPDATE held_removal SET approved = 1 WHERE approved = 0",
                [],
            )
            .ctx(conn, || format!("approve held member removals {id}"))?;
            Ok(Some(n))
        }
        _ => Ok(None),
    }
}
