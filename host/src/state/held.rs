//! Deletes held back by the delete threshold, and the operator's approval of them.
//!
//! A held set has an id: a hash of its cloud ids. An operator approves the id that was shown;
//! the approval covers exactly those groups, once: a later delete outside the set needs its
//! own approval, and an approved delete that was applied (or whose group came back into
//! scope) leaves the table.

use std::collections::BTreeMap;

use rusqlite::{params, Connection};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::clock::now_rfc3339;
use super::error::{SqlContext, StateError};

/// One held delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldDelete {
    pub cloud_id: String,
    pub dn: String,
    pub approved: bool,
    pub held_at: String,
}

/// The id of a held set: the same ids give the same id, whatever their order.
pub fn set_id<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut ids: Vec<&str> = ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    short_id(h)
}

/// The first six bytes of a digest in hex: an id short enough to type (`writeback approve`),
/// long enough not to repeat among the few sets an installation sees.
pub fn short_id(h: Sha256) -> String {
    h.finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every held delete, by cloud id.
pub fn held(conn: &Connection) -> Result<BTreeMap<String, HeldDelete>, StateError> {
    let op = || "read held deletes".to_string();
    let mut stmt = conn
        .prepare("SELECT cloud_id, dn, approved, held_at FROM held_delete ORDER BY cloud_id")
        .ctx(conn, op)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(HeldDelete {
                cloud_id: r.get(0)?,
                dn: r.get(1)?,
                approved: r.get::<_, i64>(2)? != 0,
                held_at: r.get(3)?,
            })
        })
        .ctx(conn, op)?;
    super::error::keyed(conn, op, rows, |h| h.cloud_id.clone())
}

/// Replaces the held set with `rows` (a held delete keeps the time it was first held).
pub fn replace(conn: &Connection, rows: &[HeldDelete]) -> Result<(), StateError> {
    let before = held(conn)?;
    conn.execute("DELETE FROM held_delete", [])
        .ctx(conn, || "clear held deletes".into())?;
    let now = now_rfc3339();
    for h in rows {
        let at = before
            .get(&h.cloud_id)
            .map(|b| b.held_at.clone())
            .unwrap_or_else(|| now.clone());
        conn.prepare_cached(
            "INSERT INTO held_delete (cloud_id, dn, approved, held_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut s| s.execute(params![h.cloud_id, h.dn, i64::from(h.approved), at]))
        .ctx(conn, || format!("hold delete of {}", h.cloud_id))?;
    }
    Ok(())
}

/// The id of the set waiting for approval (the held deletes not approved yet), and its size.
pub fn waiting(conn: &Connection) -> Result<Option<(String, usize)>, StateError> {
    let rows = held(conn)?;
    let ids: Vec<&str> = rows
        .values()
        .filter(|h| !h.approved)
        .map(|h| h.cloud_id.as_str())
        .collect();
    Ok((!ids.is_empty()).then(|| (set_id(ids.iter().copied()), ids.len())))
}

/// Approves the waiting set if its id is `id`; returns how many deletes that approves.
pub fn approve(conn: &Connection, id: &str) -> Result<usize, StateError> {
    match waiting(conn)? {
        Some((current, n)) if current == id => {
            conn.execute("UPDATE held_delete SET approved = 1 WHERE approved = 0", [])
                .ctx(conn, || format!("approve held deletes {id}"))?;
            Ok(n)
        }
        other => Err(StateError::NoSuchHeldSet {
            id: id.to_string(),
            waiting: other.map(|(w, n)| format!("{w} ({n} deletes)")),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_id_depends_on_the_ids_not_their_order() {
        let a = set_id(["b", "a", "c"]);
        assert_eq!(a, set_id(["c", "b", "a", "a"]));
        assert_ne!(a, set_id(["a", "b"]));
        assert_eq!(a.len(), 12);
    }
}
