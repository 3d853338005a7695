//! Trigger calls waiting for delivery. A call is written in the same transaction as the record
//! of the AD change that fires it, so a crash between the two cannot lose it; it stays until a
//! delivery succeeds, or is marked given up after the configured attempts (kept for `status`
//! and pruned with the run history).

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::clock::now_rfc3339;
use super::error::{SqlContext, StateError};

/// A call to deliver, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxEntry {
    pub id: i64,
    /// The idempotency key: stable across attempts, unique per call.
    pub key: String,
    pub rule: String,
    /// The hook's name (`on_created`, ...).
    pub hook: String,
    pub cloud_id: String,
    /// The call's arguments (`TriggerEvent` as JSON).
    pub event_json: String,
    pub attempts: u32,
    /// Unix seconds.
    pub next_at: i64,
    pub last_error: Option<String>,
    pub created_at: String,
}

/// A call to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCall {
    pub key: String,
    pub rule: String,
    pub hook: String,
    pub cloud_id: String,
    pub event_json: String,
}

/// How many calls wait, retry, or were given up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutboxCounts {
    /// Not tried yet.
    pub pending: usize,
    /// Tried and failed, to be tried again.
    pub retrying: usize,
    pub given_up: usize,
}

/// Records `c`, due at once; a call with the same key is recorded once.
pub fn put(conn: &Connection, c: &NewCall, now: i64) -> Result<(), StateError> {
    conn.prepare_cached(
        "INSERT INTO outbox (key, rule, hook, cloud_id, event_json, next_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (key) DO NOTHING",
    )
    .and_then(|mut s| {
        s.execute(params![
            c.key,
            c.rule,
            c.hook,
            c.cloud_id,
            c.event_json,
            now,
            now_rfc3339()
        ])
    })
    .ctx(conn, || {
        format!("record trigger {} of {}", c.hook, c.cloud_id)
    })?;
    Ok(())
}

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxEntry> {
    Ok(OutboxEntry {
        id: r.get(0)?,
        key: r.get(1)?,
        rule: r.get(2)?,
        hook: r.get(3)?,
        cloud_id: r.get(4)?,
        event_json: r.get(5)?,
        attempts: r.get(6)?,
        next_at: r.get(7)?,
        last_error: r.get(8)?,
        created_at: r.get(9)?,
    })
}

const COLUMNS: &str =
    "id, key, rule, hook, cloud_id, event_json, attempts, next_at, last_error, created_at";

/// The pending calls due at `now`, oldest first, at most `limit`.
pub fn due(conn: &Connection, now: i64, limit: usize) -> Result<Vec<OutboxEntry>, StateError> {
    let op = || "read due trigger calls".to_string();
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE state = 'pending' AND next_at <= ?1 ORDER BY id LIMIT ?2"
        ))
        .ctx(conn, op)?;
    let rows = stmt
        .query_map(
            params![now, i64::try_from(limit).unwrap_or(i64::MAX)],
            entry,
        )
        .ctx(conn, op)?
        .collect::<Result<Vec<_>, _>>()
        .ctx(conn, op)?;
    Ok(rows)
}

/// Whether any pending call is due at `now` (one indexed probe, for idle cycles).
pub fn any_due(conn: &Connection, now: i64) -> Result<bool, StateError> {
    conn.prepare_cached("SELECT 1 FROM outbox WHERE state = 'pending' AND next_at <= ?1 LIMIT 1")
        .and_then(|mut s| s.query_row([now], |_| Ok(())).optional())
        .map(|r| r.is_some())
        .ctx(conn, || "read due trigger calls".to_string())
}

/// Delivered: forgotten.
pub fn delivered(conn: &Connection, id: i64) -> Result<(), StateError> {
    conn.prepare_cached("DELETE FROM outbox WHERE id = ?1")
        .and_then(|mut s| s.execute([id]))
        .ctx(conn, || format!("forget delivered trigger call {id}"))?;
    Ok(())
}

/// A failed attempt: tried again at `next_at`, or given up when `next_at` is `None`.
pub fn failed(
    conn: &Connection,
    id: i64,
    error: &str,
    next_at: Option<i64>,
) -> Result<(), StateError> {
    let (state, at) = match next_at {
        Some(at) => ("pending", at),
        None => ("given_up", 0),
    };
    conn.prepare_cached(
        "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, state = ?3,
             next_at = CASE WHEN ?3 = 'pending' THEN ?4 ELSE next_at END
         WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![id, error, state, at]))
    .ctx(conn, || {
        format!("record a failed delivery of trigger call {id}")
    })?;
    Ok(())
}

pub fn counts(conn: &Connection) -> Result<OutboxCounts, StateError> {
    let op = || "count trigger calls".to_string();
    let mut stmt = conn
        .prepare_cached(
            "SELECT state, attempts > 0, COUNT(*) FROM outbox GROUP BY state, attempts > 0",
        )
        .ctx(conn, op)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, bool>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .ctx(conn, op)?;
    let mut c = OutboxCounts::default();
    for row in rows {
        let (state, tried, n) = row.ctx(conn, op)?;
        let n = usize::try_from(n).unwrap_or(0);
        match (state.as_str(), tried) {
            ("given_up", _) => c.given_up += n,
            (_, true) => c.retrying += n,
            _ => c.pending += n,
        }
    }
    Ok(c)
}

/// Forgets the calls given up before `cutoff` (RFC 3339, as the history's own cutoff): their
/// audit events age out with the run history, and the calls with them.
pub fn prune_given_up(conn: &Connection, cutoff: &str) -> Result<usize, StateError> {
    conn.execute(
        "DELETE FROM outbox WHERE state = 'given_up' AND created_at < ?1",
        [cutoff],
    )
    .ctx(conn, || "age out given-up trigger calls".to_string())
}

/// The calls given up, newest first, at most `limit`.
pub fn given_up(conn: &Connection, limit: usize) -> Result<Vec<OutboxEntry>, StateError> {
    let op = || "read given-up trigger calls".to_string();
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE state = 'given_up' ORDER BY id DESC LIMIT ?1"
        ))
        .ctx(conn, op)?;
    let rows = stmt
        .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], entry)
        .ctx(conn, op)?
        .collect::<Result<Vec<_>, _>>()
        .ctx(conn, op)?;
    Ok(rows)
}
