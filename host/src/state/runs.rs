//! Run history (`run`) and the audit trail of what each run did (`run_event`).
//!
//! Like the anchor functions these take a `Connection`, so a run's events can be recorded in
//! one transaction through [`super::Store::with_transaction`] instead of one fsync per event.

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::clock::now_rfc3339;
use super::error::{corrupt, db_path, encode, SqlContext, StateError};

/// One audited action on one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub cloud_id: String,
    pub action: String,
    pub dn: String,
    pub detail: Value,
    /// `ok`, `failed` or `skipped` (not enforced by the schema).
    pub outcome: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: i64,
    pub mode: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub status: Option<String>,
    pub stats: Option<Value>,
}

/// An audit event as stored, with its row id and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: i64,
    pub run_id: i64,
    pub at: String,
    pub event: AuditEvent,
}

/// The status given to runs that never finished (the host was killed mid-run).
pub const INTERRUPTED: &str = "interrupted";

const FOREIGN_KEY_FAILED: i32 = rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY;

pub fn begin_run(conn: &Connection, mode: &str) -> Result<i64, StateError> {
    conn.execute(
        "INSERT INTO run (mode, started_at) VALUES (?1, ?2)",
        [mode, &now_rfc3339()],
    )
    .ctx(conn, || format!("begin {mode} run"))?;
    Ok(conn.last_insert_rowid())
}

pub fn finish_run(
    conn: &Connection,
    run_id: i64,
    status: &str,
    stats: &Value,
) -> Result<(), StateError> {
    let json =
        serde_json::to_string(stats).map_err(|e| encode(conn, "run", run_id, "stats_json", e))?;
    let n = conn
        .execute(
            "UPDATE run SET finished_at = ?2, status = ?3, stats_json = ?4 WHERE id = ?1",
            params![run_id, now_rfc3339(), status, json],
        )
        .ctx(conn, || format!("finish run {run_id}"))?;
    if n == 0 {
        return Err(StateError::UnknownRun {
            path: db_path(conn),
            op: "finish run",
            run_id,
        });
    }
    Ok(())
}

pub fn record_event(conn: &Connection, run_id: i64, ev: &AuditEvent) -> Result<(), StateError> {
    let detail = serde_json::to_string(&ev.detail)
        .map_err(|e| encode(conn, "run_event", &ev.cloud_id, "detail_json", e))?;
    let res = conn
        .prepare_cached(
            "INSERT INTO run_event (run_id, at, cloud_id, action, dn, detail_json, outcome)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut s| {
            s.execute(params![
                run_id,
                now_rfc3339(),
                ev.cloud_id,
                ev.action,
                ev.dn,
                detail,
                ev.outcome
            ])
        });
    match res {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.extended_code == FOREIGN_KEY_FAILED => {
            Err(StateError::UnknownRun {
                path: db_path(conn),
                op: "record event",
                run_id,
            })
        }
        Err(e) => Err(e).ctx(conn, || {
            format!(
                "record event {} for {} in run {run_id}",
                ev.action, ev.cloud_id
            )
        }),
    }
}

const RUN_COLUMNS: &str = "id, mode, started_at, finished_at, status, stats_json";

type RunRow = (
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn decode_run(conn: &Connection, row: RunRow) -> Result<RunRecord, StateError> {
    let (id, mode, started_at, finished_at, status, stats) = row;
    let stats = stats
        .map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(|e| corrupt(conn, "run", id, "stats_json", e))?;
    Ok(RunRecord {
        id,
        mode,
        started_at,
        finished_at,
        status,
        stats,
    })
}

/// The last `n` runs, newest first.
pub fn recent_runs(conn: &Connection, n: usize) -> Result<Vec<RunRecord>, StateError> {
    let op = || "list recent runs".to_string();
    let limit = i64::try_from(n).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {RUN_COLUMNS} FROM run ORDER BY id DESC LIMIT ?1"
        ))
        .ctx(conn, op)?;
    let rows = stmt.query_map([limit], run_row).ctx(conn, op)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(decode_run(conn, row.ctx(conn, op)?)?);
    }
    Ok(out)
}

pub fn run(conn: &Connection, run_id: i64) -> Result<Option<RunRecord>, StateError> {
    let row = conn
        .query_row(
            &format!("SELECT {RUN_COLUMNS} FROM run WHERE id = ?1"),
            [run_id],
            run_row,
        )
        .optional()
        .ctx(conn, || format!("read run {run_id}"))?;
    row.map(|r| decode_run(conn, r)).transpose()
}

/// A run's events in the order they were recorded.
pub fn run_events(conn: &Connection, run_id: i64) -> Result<Vec<EventRecord>, StateError> {
    let op = || format!("list events of run {run_id}");
    let mut stmt = conn
        .prepare(
            "SELECT id, run_id, at, cloud_id, action, dn, detail_json, outcome FROM run_event
             WHERE run_id = ?1 ORDER BY id",
        )
        .ctx(conn, op)?;
    let rows = stmt
        .query_map([run_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
            ))
        })
        .ctx(conn, op)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, run_id, at, cloud_id, action, dn, detail, outcome) = row.ctx(conn, op)?;
        let detail = serde_json::from_str(&detail)
            .map_err(|e| corrupt(conn, "run_event", id, "detail_json", e))?;
        out.push(EventRecord {
            id,
            run_id,
            at,
            event: AuditEvent {
                cloud_id,
                action,
                dn,
                detail,
                outcome,
            },
        });
    }
    Ok(out)
}

/// Marks runs left unfinished by a killed host as [`INTERRUPTED`]; returns how many.
pub fn close_interrupted_runs(conn: &Connection) -> Result<usize, StateError> {
    conn.execute(
        "UPDATE run SET finished_at = ?1, status = ?2 WHERE finished_at IS NULL",
        [&now_rfc3339(), INTERRUPTED],
    )
    .ctx(conn, || "close interrupted runs".into())
}

/// Keeps the newest `keep` runs and deletes older ones with their events; returns how many
/// runs were deleted. A daemon polling every second records many runs a day.
pub fn prune_runs(conn: &Connection, keep: usize) -> Result<usize, StateError> {
    let keep = i64::try_from(keep).unwrap_or(i64::MAX);
    conn.execute(
        "DELETE FROM run WHERE id NOT IN (SELECT id FROM run ORDER BY id DESC LIMIT ?1)",
        [keep],
    )
    .ctx(conn, || "prune run history".into())
}
