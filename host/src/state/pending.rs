//! Work not done yet: the cloud ids whose change has not been applied to AD (`pending`), and
//! small facts about the state (`meta`), such as the fingerprint of the rules and settings the
//! applied hashes were computed with.
//!
//! A delta round marks what it changed in the same transaction as the cache (see `cache.rs`);
//! a cycle that applied a change clears its mark; a dry run or a failure leaves it. So a
//! `plan`, a kill or an AD refusal never makes a later `sync` miss a change.

use std::collections::BTreeSet;

use rusqlite::{params, Connection, OptionalExtension};

use super::cache::ObjectKind;
use super::error::{SqlContext, StateError};

/// Ids of a kind whose change is not applied yet, sorted.
pub fn pending(conn: &Connection, kind: ObjectKind) -> Result<BTreeSet<String>, StateError> {
    let op = || format!("read pending {kind} changes");
    let mut stmt = conn
        .prepare_cached("SELECT id FROM pending WHERE kind = ?1 ORDER BY id")
        .ctx(conn, op)?;
    let rows = stmt
        .query_map([kind.as_str()], |r| r.get::<_, String>(0))
        .ctx(conn, op)?;
    rows.collect::<Result<BTreeSet<String>, _>>().ctx(conn, op)
}

/// Marks `id` as still to be applied.
pub fn mark_pending(conn: &Connection, kind: ObjectKind, id: &str) -> Result<(), StateError> {
    conn.prepare_cached("INSERT OR IGNORE INTO pending (kind, id) VALUES (?1, ?2)")
        .and_then(|mut s| s.execute([kind.as_str(), id]))
        .ctx(conn, || format!("mark {kind} {id} pending"))?;
    Ok(())
}

/// Clears the mark of `id` (its change is applied).
pub fn clear_pending(conn: &Connection, kind: ObjectKind, id: &str) -> Result<(), StateError> {
    conn.prepare_cached("DELETE FROM pending WHERE kind = ?1 AND id = ?2")
        .and_then(|mut s| s.execute([kind.as_str(), id]))
        .ctx(conn, || format!("clear pending {kind} {id}"))?;
    Ok(())
}

/// Clears every mark of a kind (a cycle that went through every cached object).
pub fn clear_all_pending(conn: &Connection, kind: ObjectKind) -> Result<(), StateError> {
    conn.execute("DELETE FROM pending WHERE kind = ?1", [kind.as_str()])
        .ctx(conn, || format!("clear pending {kind} changes"))?;
    Ok(())
}

pub fn meta(conn: &Connection, key: &str) -> Result<Option<String>, StateError> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
        .ctx(conn, || format!("read meta {key}"))
}

pub fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<(), StateError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )
    .ctx(conn, || format!("write meta {key}"))?;
    Ok(())
}

pub fn remove_meta(conn: &Connection, key: &str) -> Result<(), StateError> {
    conn.execute("DELETE FROM meta WHERE key = ?1", [key])
        .ctx(conn, || format!("remove meta {key}"))?;
    Ok(())
}
