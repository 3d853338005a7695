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
    Ok(waiting_of(&held(conn)?))
}

/// [`waiting`] over rows already read (the PostgreSQL store reads its own).
pub(crate) fn waiting_of(rows: &BTreeMap<String, HeldDelete>) -> Option<(String, usize)> {
    let ids: Vec<&str> = rows
        .values()
        .filter(|h| !h.approved)
        .map(|h| h.cloud_id.as_str())
        .collect();
    (!ids.is_empty()).then(|| (set_id(ids.iter().copied()), ids.len()))
}

/// Which waiting set `writeback approve <id>` approves, given the held deletes and the held
/// member removals waiting now (each its id and size): the member removals when `id` is
/// theirs, else the deletes when it is theirs, else an error naming what does wait. Both
/// stores decide with this; each then marks the chosen rows approved.
pub(crate) fn choose(
    id: &str,
    deletes: Option<(String, usize)>,
    removals: Option<(String, usize)>,
) -> Result<(super::Approved, usize), StateError> {
    match (&deletes, &removals) {
        (_, Some((r, n))) if r == id => Ok((super::Approved::MemberRemovals, *n)),
        (Some((d, n)), _) if d == id => Ok((super::Approved::Deletes, *n)),
        _ => {
            let deletes = deletes.map(|(w, n)| format!("{w} ({n} deletes)"));
            let removals = removals.map(|(w, n)| format!("{w} (member removals of {n} groups)"));
            let waiting = match (deletes, removals) {
                (Some(d), Some(r)) => Some(format!("{d}, or {r}")),
                (d, r) => d.or(r),
            };
            Err(StateError::NoSuchHeldSet {
                id: id.to_string(),
                waiting,
            })
        }
    }
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
    fn approve_chooses_the_set_with_that_id_and_names_what_waits_otherwise() {
        use crate::state::Approved;
        let d = || Some(("d1".to_string(), 5));
        let r = || Some(("r1".to_string(), 2));
        assert_eq!(
            choose("r1", d(), r()).ok(),
            Some((Approved::MemberRemovals, 2))
        );
        assert_eq!(choose("d1", d(), r()).ok(), Some((Approved::Deletes, 5)));
        let both = choose("x", d(), r()).map_err(|e| e.to_string());
        assert_eq!(
            both.err().as_deref(),
            Some("no held deletes with id x: the set waiting for approval now is d1 (5 deletes), or r1 (member removals of 2 groups); review it with `writeback plan` and approve that id")
        );
        let none = choose("x", None, None).map_err(|e| e.to_string());
        assert!(none
            .err()
            .is_some_and(|e| e.ends_with("no delete is waiting for approval")));
    }

    #[test]
    fn a_set_id_depends_on_the_ids_not_their_order() {
        let a = set_id(["b", "a", "c"]);
        assert_eq!(a, set_id(["c", "b", "a", "a"]));
        assert_ne!(a, set_id(["a", "b"]));
        assert_eq!(a.len(), 12);
    }
}
