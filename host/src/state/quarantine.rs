//! Groups that failed, and when each is tried again. A failing group is not retried every
//! poll: its wait doubles with each failure up to a cap; a change of the group, its members or
//! the rules brings it back at once (the cycle looks at changed groups whatever their wait).

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::clock::now_rfc3339;
use super::error::{SqlContext, StateError};

/// The first wait after a failure, in seconds (doubled with each failure after it).
pub const FIRST_WAIT_SECS: u64 = 60;

/// One group in quarantine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quarantined {
    pub cloud_id: String,
    pub error: String,
    /// Failures in a row.
    pub failures: u32,
    pub first_at: String,
    pub last_at: String,
    /// Unix seconds: not looked at again before this, unless it changes.
    pub retry_at: i64,
}

/// How a failure compares with what was known of the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Seen {
    /// It was not failing before.
    New,
    /// It was failing, with another error.
    Changed,
    /// The same error again.
    Repeated,
}

/// The wait after the `failures`-th failure in a row: [`FIRST_WAIT_SECS`] doubled with each
/// one, never more than `cap` seconds.
pub fn backoff_secs(failures: u32, cap: u64) -> u64 {
    let doublings = failures.saturating_sub(1).min(32);
    FIRST_WAIT_SECS.saturating_mul(1u64 << doublings).min(cap)
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Quarantined> {
    Ok(Quarantined {
        cloud_id: r.get(0)?,
        error: r.get(1)?,
        failures: r.get(2)?,
        first_at: r.get(3)?,
        last_at: r.get(4)?,
        retry_at: r.get(5)?,
    })
}

const COLUMNS: &str = "cloud_id, error, failures, first_at, last_at, retry_at";

/// What a failure of `cloud_id` at `now` (unix seconds) makes of its quarantine row
/// `before`: whether it is new, changed or repeated, and the row with its next try. Pure, so
/// both stores count failures and back off alike.
pub(crate) fn next_failure(
    before: Option<&Quarantined>,
    cloud_id: &str,
    error: &str,
    now: i64,
    cap_secs: u64,
) -> (Seen, Quarantined) {
    let at = now_rfc3339();
    let (seen, failures, first_at) = match before {
        None => (Seen::New, 1, at.clone()),
        Some(q) if q.error != error => (Seen::Changed, 1, q.first_at.clone()),
        Some(q) => (
            Seen::Repeated,
            q.failures.saturating_add(1),
            q.first_at.clone(),
        ),
    };
    let wait = i64::try_from(backoff_secs(failures, cap_secs)).unwrap_or(i64::MAX);
    let q = Quarantined {
        cloud_id: cloud_id.to_string(),
        error: error.to_string(),
        failures,
        first_at,
        last_at: at,
        retry_at: now.saturating_add(wait),
    };
    (seen, q)
}

/// Records a failure of `cloud_id` at `now` (unix seconds) and sets its next try.
pub fn record_failure(
    conn: &Connection,
    cloud_id: &str,
    error: &str,
    now: i64,
    cap_secs: u64,
) -> Result<(Seen, Quarantined), StateError> {
    let op = || format!("quarantine {cloud_id}");
    let before = get(conn, cloud_id)?;
    let (seen, q) = next_failure(before.as_ref(), cloud_id, error, now, cap_secs);
    conn.prepare_cached(
        "INSERT INTO quarantine (cloud_id, error, failures, first_at, last_at, retry_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (cloud_id) DO UPDATE SET error = excluded.error,
           failures = excluded.failures, first_at = excluded.first_at,
           last_at = excluded.last_at, retry_at = excluded.retry_at",
    )
    .and_then(|mut s| {
        s.execute(params![
            q.cloud_id, q.error, q.failures, q.first_at, q.last_at, q.retry_at
        ])
    })
    .ctx(conn, op)?;
    Ok((seen, q))
}

/// Takes `cloud_id` out of quarantine (it went through).
pub fn release(conn: &Connection, cloud_id: &str) -> Result<(), StateError> {
    conn.prepare_cached("DELETE FROM quarantine WHERE cloud_id = ?1")
        .and_then(|mut s| s.execute([cloud_id]))
        .ctx(conn, || format!("release {cloud_id} from quarantine"))?;
    Ok(())
}

pub fn get(conn: &Connection, cloud_id: &str) -> Result<Option<Quarantined>, StateError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM quarantine WHERE cloud_id = ?1"
    ))
    .and_then(|mut s| s.query_row([cloud_id], row).optional())
    .ctx(conn, || format!("read quarantine of {cloud_id}"))
}

/// Every group in quarantine, by cloud id.
pub fn all(conn: &Connection) -> Result<BTreeMap<String, Quarantined>, StateError> {
    let op = || "read quarantine".to_string();
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM quarantine ORDER BY cloud_id"
        ))
        .ctx(conn, op)?;
    let rows = stmt.query_map([], row).ctx(conn, op)?;
    let mut out = BTreeMap::new();
    for q in rows {
        let q = q.ctx(conn, op)?;
        out.insert(q.cloud_id.clone(), q);
    }
    Ok(out)
}

/// The quarantined groups whose wait is over at `now` (unix seconds).
pub fn due(conn: &Connection, now: i64) -> Result<BTreeSet<String>, StateError> {
    let op = || "read quarantined groups due".to_string();
    let mut stmt = conn
        .prepare_cached("SELECT cloud_id FROM quarantine WHERE retry_at <= ?1 ORDER BY cloud_id")
        .ctx(conn, op)?;
    let rows = stmt.query_map([now], |r| r.get(0)).ctx(conn, op)?;
    rows.collect::<Result<_, _>>().ctx(conn, op)
}

/// How many groups are in quarantine.
pub fn count(conn: &Connection) -> Result<usize, StateError> {
    conn.query_row("SELECT count(*) FROM quarantine", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| usize::try_from(n).unwrap_or(0))
    .ctx(conn, || "count quarantined groups".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_from_a_minute_up_to_the_cap() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff_secs(n, 3600)).collect();
        assert_eq!(waits, vec![60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff_secs(u32::MAX, 3600), 3600);
        assert_eq!(backoff_secs(1, 5), 5);
    }
}
