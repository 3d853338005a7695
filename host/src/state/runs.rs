//! Run history (`run`) and the audit trail of what each run did (`run_event`).
//!
//! Like the anchor functions these take a `Connection`, so a run's events can be recorded in
//! one transaction through [`super::Store::with_transaction`] instead of one fsync per event.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::clock::{format_rfc3339, now_rfc3339};
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
pub const INTERRUPTED: &str = super::RunStatus::Interrupted.as_str();

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
    RunRow::try_from(r)
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
    runs_where(conn, None, None, n)
}

/// Runs newest first, started at or after `since` (RFC 3339, as stored) and with `status` when
/// given, at most `n`.
pub fn runs_where(
    conn: &Connection,
    since: Option<&str>,
    status: Option<&str>,
    n: usize,
) -> Result<Vec<RunRecord>, StateError> {
    let op = || "list runs".to_string();
    let limit = i64::try_from(n).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {RUN_COLUMNS} FROM run
             WHERE (?1 IS NULL OR started_at >= ?1) AND (?2 IS NULL OR status = ?2)
             ORDER BY id DESC LIMIT ?3"
        ))
        .ctx(conn, op)?;
    let rows = stmt
        .query_map(params![since, status, limit], run_row)
        .ctx(conn, op)?;
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

const EVENT_COLUMNS: &str = "id, run_id, at, cloud_id, action, dn, detail_json, outcome";

type EventRow = (i64, i64, String, String, String, String, String, String);

fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    EventRow::try_from(r)
}

fn decode_event(conn: &Connection, row: EventRow) -> Result<EventRecord, StateError> {
    let (id, run_id, at, cloud_id, action, dn, detail, outcome) = row;
    let detail = serde_json::from_str(&detail)
        .map_err(|e| corrupt(conn, "run_event", id, "detail_json", e))?;
    Ok(EventRecord {
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
    })
}

/// A run's events in the order they were recorded.
pub fn run_events(conn: &Connection, run_id: i64) -> Result<Vec<EventRecord>, StateError> {
    let op = || format!("list events of run {run_id}");
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {EVENT_COLUMNS} FROM run_event WHERE run_id = ?1 ORDER BY id"
        ))
        .ctx(conn, op)?;
    let rows = stmt.query_map([run_id], event_row).ctx(conn, op)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(decode_event(conn, row.ctx(conn, op)?)?);
    }
    Ok(out)
}

// --- the audit trail across runs ------------------------------------------------------------

/// The objects whose events a query keeps: an event matches when its cloud id is one of
/// `cloud_ids` or its DN is one of `dns` (compared case-insensitively). Both empty: nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventSubjects {
    pub cloud_ids: BTreeSet<String>,
    pub dns: BTreeSet<String>,
}

/// Which events [`for_each_event`] visits, and in which order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Events recorded at or after this time, written as stored (`2026-12-01T08:00:00.000Z`).
    pub since: Option<String>,
    /// Events recorded at or before this time (as stored).
    pub until: Option<String>,
    /// Only these objects' events; `None`: every event.
    pub subjects: Option<EventSubjects>,
    /// Newest first (what a limit keeps); otherwise in the order they were recorded.
    pub newest_first: bool,
}

/// Visits the events `q` selects, one at a time (a year of events never sits in memory), until
/// `f` breaks. Times use `run_event_by_at`, subjects `run_event_by_cloud_id` and `run_event_by_dn`.
pub fn for_each_event(
    conn: &Connection,
    q: &EventQuery,
    mut f: impl FnMut(EventRecord) -> ControlFlow<()>,
) -> Result<(), StateError> {
    let op = || "list audit events".to_string();
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM run_event WHERE 1");
    let mut args: Vec<String> = Vec::new();
    if let Some(t) = &q.since {
        args.push(t.clone());
        sql.push_str(&format!(" AND at >= ?{}", args.len()));
    }
    if let Some(t) = &q.until {
        args.push(t.clone());
        sql.push_str(&format!(" AND at <= ?{}", args.len()));
    }
    if let Some(s) = &q.subjects {
        // One JSON array parameter per list: any number of ids fits in one statement.
        let ids = serde_json::to_string(&s.cloud_ids)
            .map_err(|e| encode(conn, "run_event", "query", "cloud_id", e))?;
        let dns = serde_json::to_string(&s.dns)
            .map_err(|e| encode(conn, "run_event", "query", "dn", e))?;
        args.push(ids);
        let i = args.len();
        args.push(dns);
        let d = args.len();
        sql.push_str(&format!(
            " AND (cloud_id IN (SELECT value FROM json_each(?{i}))
                   OR dn COLLATE NOCASE IN (SELECT value FROM json_each(?{d})))"
        ));
    }
    sql.push_str(if q.newest_first {
        " ORDER BY id DESC"
    } else {
        " ORDER BY id"
    });
    let mut stmt = conn.prepare(&sql).ctx(conn, op)?;
    let mut rows = stmt
        .query(rusqlite::params_from_iter(args.iter()))
        .ctx(conn, op)?;
    while let Some(r) = rows.next().ctx(conn, op)? {
        let row = event_row(r).ctx(conn, op)?;
        if f(decode_event(conn, row)?).is_break() {
            break;
        }
    }
    Ok(())
}

/// The cloud ids of the events recorded at `dn` (case-insensitively): a group's trail also
/// from before its anchor moved or was forgotten.
pub fn event_cloud_ids_at(conn: &Connection, dn: &str) -> Result<BTreeSet<String>, StateError> {
    let op = || "find the events of a DN".to_string();
    let mut stmt = conn
        .prepare(
            "SELECT DISTINCT cloud_id FROM run_event
             WHERE dn = ?1 COLLATE NOCASE AND cloud_id <> ''",
        )
        .ctx(conn, op)?;
    let rows = stmt
        .query_map([dn], |r| r.get::<_, String>(0))
        .ctx(conn, op)?;
    let mut out = BTreeSet::new();
    for id in rows {
        out.insert(id.ctx(conn, op)?);
    }
    Ok(out)
}

/// The cached cloud groups whose `displayName` is `name`, as `(id, displayName)` sorted by id:
/// the exact spelling when any group has it, else the matches ignoring ASCII case, else those
/// also ignoring leading and trailing spaces (Entra ID neither keeps names unique nor compares
/// them by case, and keeps the spaces a shell drops). A caller tells a loose match by its name.
pub fn cached_groups_named(
    conn: &Connection,
    name: &str,
) -> Result<Vec<(String, String)>, StateError> {
    let op = || "find cached groups by displayName".to_string();
    let mut stmt = conn
        .prepare(
            "SELECT id, json_extract(props_json, '$.displayName') FROM cloud_object
             WHERE kind = 'group'
               AND trim(json_extract(props_json, '$.displayName')) = trim(?1) COLLATE NOCASE
             ORDER BY id",
        )
        .ctx(conn, op)?;
    let rows = stmt
        .query_map([name], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .ctx(conn, op)?;
    let mut all = Vec::new();
    for row in rows {
        all.push(row.ctx(conn, op)?);
    }
    Ok(closest_spelling(all, name))
}

/// Of the groups whose name matches `name` loosely (ASCII case and surrounding spaces
/// ignored), the closest spelling wins: exactly as Graph holds it, then ignoring case, then
/// also ignoring surrounding spaces (a name typed on a command line loses them). Both stores
/// filter their matches with this.
pub(crate) fn closest_spelling(
    mut all: Vec<(String, String)>,
    name: &str,
) -> Vec<(String, String)> {
    if all.iter().any(|(_, n)| n == name) {
        all.retain(|(_, n)| n == name);
    } else if all
        .iter()
        .any(|(_, n)| n.to_lowercase() == name.to_lowercase())
    {
        all.retain(|(_, n)| n.to_lowercase() == name.to_lowercase());
    }
    all
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

/// What [`compact_history`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Compaction {
    /// Audit events older than the retention.
    pub events_deleted: usize,
    /// Runs older than the retention with no event left.
    pub runs_deleted: usize,
    /// Quiet runs folded into the first run of their streak.
    pub runs_folded: usize,
}

/// `stats_json` key of a run standing for a streak of quiet runs: how many it stands for
/// (itself included). Its `started_at` is the first one's, its `finished_at` the last one's.
pub const FOLDED_RUNS: &str = "folded_runs";

/// `meta` key: the run the last compaction stopped at (where the next one takes up the streak).
pub(crate) const FOLDED_FROM: &str = "history_folded_from";

/// A run that left no trace: finished, no audit event, nothing changed, failed or refused
/// (`held` counts: a held set waiting for approval makes every poll a `held` run).
fn is_quiet(status: Option<&str>, stats: Option<&Value>, has_events: bool) -> bool {
    let zero = |k: &str| {
        stats
            .and_then(|s| s.get(k))
            .is_none_or(|v| v.as_u64() == Some(0))
    };
    !has_events
        && matches!(
            status.and_then(super::RunStatus::parse),
            Some(super::RunStatus::Ok | super::RunStatus::Held)
        )
        && stats.is_some_and(Value::is_object)
        && zero("changes")
        && zero("failures")
        && zero("refused")
}

/// A run as the compaction reads it.
pub(crate) struct FoldRow {
    pub id: i64,
    pub mode: String,
    pub status: Option<String>,
    pub finished_at: Option<String>,
    pub stats: Option<Value>,
    pub has_events: bool,
}

/// What a compaction changes in the runs it read.
pub(crate) struct Fold {
    /// Each streak's first run: its new `finished_at` and stats.
    pub updates: Vec<(i64, Option<String>, Value)>,
    /// The runs folded into one before them.
    pub gone: Vec<i64>,
    /// Where the next compaction takes up (an open streak's head).
    pub stop: i64,
}

/// Folds `rows` (runs in id order from `from`): the pure half of [`compact_history`], shared
/// by both stores.
pub(crate) fn fold(
    from: i64,
    rows: impl Iterator<Item = Result<FoldRow, StateError>>,
) -> Result<Fold, StateError> {
    /// The first run of a streak, and what it has taken in so far.
    struct Head {
        id: i64,
        mode: String,
        status: Option<String>,
        stats: Value,
        runs: u64,
        finished_at: Option<String>,
        changed: bool,
    }
    let mut head: Option<Head> = None;
    let mut gone: Vec<i64> = Vec::new();
    let mut heads: Vec<Head> = Vec::new();
    let mut stop = from;
    for row in rows {
        let FoldRow {
            id,
            mode,
            status,
            finished_at,
            stats,
            has_events,
        } = row?;
        stop = id;
        if !is_quiet(status.as_deref(), stats.as_ref(), has_events) {
            heads.extend(head.take());
            continue;
        }
        let runs = stats
            .as_ref()
            .and_then(|s| s.get(FOLDED_RUNS))
            .and_then(Value::as_u64)
            .unwrap_or(1);
        match &mut head {
            Some(h) if h.mode == mode && h.status == status => {
                h.runs += runs;
                h.finished_at = finished_at;
                h.changed = true;
                gone.push(id);
            }
            _ => {
                heads.extend(head.take());
                head = Some(Head {
                    id,
                    mode,
                    status,
                    stats: stats.unwrap_or(Value::Null),
                    runs,
                    finished_at,
                    changed: false,
                });
            }
        }
    }
    // An open streak is taken up again by the next call: it starts at its head.
    if let Some(h) = &head {
        stop = h.id;
    }
    heads.extend(head);
    let updates = heads
        .into_iter()
        .filter(|h| h.changed)
        .map(|mut h| {
            if let Value::Object(m) = &mut h.stats {
                m.insert(FOLDED_RUNS.into(), Value::from(h.runs));
            }
            (h.id, h.finished_at, h.stats)
        })
        .collect();
    Ok(Fold {
        updates,
        gone,
        stop,
    })
}

/// Keeps the history useful and bounded: events are kept `cutoff` long whatever the number of
/// runs, and a daemon's polls that did nothing are folded instead of one row each.
///
/// 1. Audit events recorded before `cutoff` are deleted, then the runs that finished before it
///    and hold no event any more (runs with changes or failures are kept as long as their
///    events are).
/// 2. Of the runs older than the newest `keep_recent` (kept as they are), each streak of
///    consecutive quiet runs (see [`is_quiet`]) of the same mode and status becomes its first
///    run, with [`FOLDED_RUNS`] in its stats and the last one's `finished_at`. A run with an
///    event, a change or a failure ends a streak, so the history still says what happened
///    between two changes, and since when the daemon was polling quietly.
///
/// Run it in one transaction. Each call looks only at the runs after the one the last call
/// stopped at.
pub fn compact_history(
    conn: &Connection,
    cutoff: OffsetDateTime,
    keep_recent: usize,
) -> Result<Compaction, StateError> {
    let cutoff = format_rfc3339(cutoff);
    let mut out = Compaction {
        events_deleted: conn
            .execute("DELETE FROM run_event WHERE at < ?1", [&cutoff])
            .ctx(conn, || "age out audit events".into())?,
        runs_deleted: conn
            .execute(
                "DELETE FROM run WHERE COALESCE(finished_at, started_at) < ?1
                 AND NOT EXISTS (SELECT 1 FROM run_event e WHERE e.run_id = run.id)",
                [&cutoff],
            )
            .ctx(conn, || "age out runs".into())?,
        runs_folded: 0,
    };
    let offset = i64::try_from(keep_recent).unwrap_or(i64::MAX);
    let last: Option<i64> = conn
        .query_row(
            "SELECT id FROM run ORDER BY id DESC LIMIT 1 OFFSET ?1",
            [offset],
            |r| r.get(0),
        )
        .optional()
        .ctx(conn, || "find the runs to fold".into())?;
    let Some(last) = last else {
        return Ok(out);
    };
    let from: i64 = super::pending::meta(conn, FOLDED_FROM)?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let op = || "fold quiet runs".to_string();
    let mut stmt = conn
        .prepare(
            "SELECT id, mode, status, finished_at, stats_json,
                    EXISTS (SELECT 1 FROM run_event e WHERE e.run_id = run.id)
             FROM run WHERE id >= ?1 AND id <= ?2 ORDER BY id",
        )
        .ctx(conn, op)?;
    let rows = stmt
        .query_map([from, last], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, bool>(5)?,
            ))
        })
        .ctx(conn, op)?;
    let rows = rows.map(|row| {
        let (id, mode, status, finished_at, stats, has_events) = row.ctx(conn, op)?;
        let stats: Option<Value> = stats
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|e| corrupt(conn, "run", id, "stats_json", e))?;
        Ok(FoldRow {
            id,
            mode,
            status,
            finished_at,
            stats,
            has_events,
        })
    });
    let plan = fold(from, rows)?;
    drop(stmt);
    for (id, finished_at, stats) in &plan.updates {
        let json =
            serde_json::to_string(stats).map_err(|e| encode(conn, "run", *id, "stats_json", e))?;
        conn.execute(
            "UPDATE run SET finished_at = ?2, stats_json = ?3 WHERE id = ?1",
            params![id, finished_at, json],
        )
        .ctx(conn, || format!("fold quiet runs into run {id}"))?;
    }
    let gone = plan.gone;
    let stop = plan.stop;
    let mut del = conn
        .prepare_cached("DELETE FROM run WHERE id = ?1")
        .ctx(conn, op)?;
    for id in &gone {
        del.execute([id]).ctx(conn, op)?;
    }
    out.runs_folded = gone.len();
    super::pending::set_meta(conn, FOLDED_FROM, &stop.to_string())?;
    Ok(out)
}
