//! The run history's upkeep on PostgreSQL: runs a killed process left open, and the
//! compaction (ageing out, folding quiet streaks) with the same rules as the SQLite store's
//! (`state::runs::fold` decides; this file only reads and writes).

use serde_json::Value;

use super::{big, count, get, pg, PgStore, PATH};
use crate::state::clock::{format_rfc3339, now_rfc3339};
use crate::state::runs::{fold, FoldRow, FOLDED_FROM, INTERRUPTED};
use crate::state::{Compaction, StateError};

impl PgStore {
    /// Marks the runs left unfinished (by an instance killed mid-run) as interrupted.
    pub fn close_interrupted_runs(&mut self) -> Result<usize, StateError> {
        self.with_transaction(async |t| {
            let n = t
                .execute(
                    "UPDATE run SET finished_at = $1, status = $2 WHERE finished_at IS NULL",
                    &[&now_rfc3339(), &INTERRUPTED],
                )
                .await
                .map_err(pg(|| "close interrupted runs".into()))?;
            Ok(count(i64::try_from(n).unwrap_or(i64::MAX)))
        })
    }

    /// As the SQLite store's `compact_history`: one transaction.
    pub fn compact_history(
        &mut self,
        retention_days: u32,
        keep_recent: usize,
    ) -> Result<Compaction, StateError> {
        let cutoff = format_rfc3339(
            time::OffsetDateTime::now_utc() - time::Duration::days(i64::from(retention_days)),
        );
        self.with_transaction(async |t| {
            let n = |r: u64| count(i64::try_from(r).unwrap_or(i64::MAX));
            let mut out = Compaction {
                events_deleted: n(t
                    .execute("DELETE FROM run_event WHERE at < $1", &[&cutoff])
                    .await
                    .map_err(pg(|| "age out audit events".into()))?),
                runs_deleted: n(t
                    .execute(
                        "DELETE FROM run WHERE COALESCE(finished_at, started_at) < $1
                         AND NOT EXISTS (SELECT 1 FROM run_event e WHERE e.run_id = run.id)",
                        &[&cutoff],
                    )
                    .await
                    .map_err(pg(|| "age out runs".into()))?),
                runs_folded: 0,
            };
            t.execute(
                "DELETE FROM outbox WHERE state = 'given_up' AND created_at < $1",
                &[&cutoff],
            )
            .await
            .map_err(pg(|| "age out given-up trigger calls".into()))?;
            let op = || "fold quiet runs".to_string();
            let last = t
                .query_opt(
                    "SELECT id FROM run ORDER BY id DESC LIMIT 1 OFFSET $1",
                    &[&big(keep_recent)],
                )
                .await
                .map_err(pg(op))?;
            let Some(last) = last else {
                return Ok(out);
            };
            let last: i64 = get(&last, 0, &op)?;
            let from: i64 = t
                .query_opt("SELECT value FROM meta WHERE key = $1", &[&FOLDED_FROM])
                .await
                .map_err(pg(op))?
                .map(|r| get::<String>(&r, 0, &op))
                .transpose()?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let rows = t
                .query(
                    "SELECT id, mode, status, finished_at, stats_json,
                            EXISTS (SELECT 1 FROM run_event e WHERE e.run_id = run.id)
                     FROM run WHERE id >= $1 AND id <= $2 ORDER BY id",
                    &[&from, &last],
                )
                .await
                .map_err(pg(op))?;
            let rows = rows.iter().map(|r| {
                let id: i64 = get(r, 0, &op)?;
                let stats: Option<String> = get(r, 4, &op)?;
                let stats: Option<Value> = stats
                    .map(|s| serde_json::from_str(&s))
                    .transpose()
                    .map_err(|cause| StateError::CorruptRow {
                        path: PATH.into(),
                        table: "run",
                        id: id.to_string(),
                        column: "stats_json",
                        cause,
                    })?;
                Ok(FoldRow {
                    id,
                    mode: get(r, 1, &op)?,
                    status: get(r, 2, &op)?,
                    finished_at: get(r, 3, &op)?,
                    stats,
                    has_events: get(r, 5, &op)?,
                })
            });
            let plan = fold(from, rows)?;
            for (id, finished_at, stats) in &plan.updates {
                let json = serde_json::to_string(stats).map_err(|cause| StateError::Encode {
                    path: PATH.into(),
                    table: "run",
                    id: id.to_string(),
                    column: "stats_json",
                    cause,
                })?;
                t.execute(
                    "UPDATE run SET finished_at = $2, stats_json = $3 WHERE id = $1",
                    &[id, finished_at, &json],
                )
                .await
                .map_err(pg(|| format!("fold quiet runs into run {id}")))?;
            }
            if !plan.gone.is_empty() {
                t.execute("DELETE FROM run WHERE id = ANY($1)", &[&plan.gone])
                    .await
                    .map_err(pg(op))?;
            }
            out.runs_folded = plan.gone.len();
            t.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&FOLDED_FROM, &plan.stop.to_string()],
            )
            .await
            .map_err(pg(op))?;
            Ok(out)
        })
    }
}
