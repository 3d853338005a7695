//! What Writeback owns and keeps on PostgreSQL (anchors, applied hashes, intents, links,
//! released and leaving groups, the quarantine, held deletes and removals, runs and their
//! audit events, the trigger outbox, unresolved members); the same behaviour as the SQLite
//! modules of the same names.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row, Transaction};

use super::{big, column, count, get, pg, PgStore, PATH};
use crate::state::clock::now_rfc3339;
use crate::state::{
    Anchor, Approved, AuditEvent, HeldDelete, HeldRemovalRow, Leaving, NewCall, OutboxCounts,
    OutboxEntry, Quarantined, Released, RunMode, RunStatus, Seen, StateError,
};
use crate::state::{EventRecord, RunRecord, UnresolvedTotal};

/// A `bigint` the store only ever writes from a `u32`, read back.
fn small(v: i64, table: &'static str, id: &str, column: &'static str) -> Result<u32, StateError> {
    u32::try_from(v).map_err(|e| StateError::PgBadValue {
        table,
        id: id.to_string(),
        column,
        message: format!("{v}: {e}"),
    })
}

/// One `DELETE` or upsert by key, its error naming `op`.
async fn exec(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    op: impl FnOnce() -> String,
) -> Result<u64, StateError> {
    c.execute(sql, params).await.map_err(pg(op))
}

// --- anchors, applied hashes, intents -------------------------------------------------------

fn anchor_row(r: &Row, op: &dyn Fn() -> String) -> Result<Anchor, StateError> {
    Ok(Anchor {
        cloud_id: get(r, 0, op)?,
        object_guid: get(r, 1, op)?,
        dn: get(r, 2, op)?,
        rule: get(r, 3, op)?,
        updated_at: get(r, 4, op)?,
    })
}

/// The net effect of a batch's writes to one keyed table: each key's last write, a row to put
/// or `None` to remove. Only the last write of a key matters (each puts the whole row or
/// removes it), so a batch's writes to the table become two statements, not one per write.
pub type Net<'a, T> = BTreeMap<&'a str, Option<T>>;

/// The keys of `net` to remove, and the rows to put.
fn split<'a, T: Copy>(net: &Net<'a, T>) -> (Vec<&'a str>, Vec<(&'a str, T)>) {
    let mut gone = Vec::new();
    let mut put = Vec::new();
    for (k, v) in net {
        match v {
            Some(row) => put.push((*k, *row)),
            None => gone.push(*k),
        }
    }
    (gone, put)
}

/// The anchors of a batch: each group's anchor put or removed.
pub async fn settle_anchors(t: &Transaction<'_>, net: &Net<'_, &Anchor>) -> Result<(), StateError> {
    let (gone, put) = split(net);
    let op = || format!("record {} anchors", net.len());
    remove_rows(t, "anchor", &gone, op).await?;
    if !put.is_empty() {
        let now = now_rfc3339();
        let ids: Vec<&str> = put.iter().map(|(k, _)| *k).collect();
        let guids: Vec<&str> = put.iter().map(|(_, a)| a.object_guid.as_str()).collect();
        let dns: Vec<&str> = put.iter().map(|(_, a)| a.dn.as_str()).collect();
        let rules: Vec<&str> = put.iter().map(|(_, a)| a.rule.as_str()).collect();
        let times: Vec<&str> = put
            .iter()
            .map(|(_, a)| match a.updated_at.is_empty() {
                true => now.as_str(),
                false => a.updated_at.as_str(),
            })
            .collect();
        exec(
            t,
            "INSERT INTO anchor (cloud_id, object_guid, dn, rule, updated_at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
             ON CONFLICT (cloud_id) DO UPDATE SET object_guid = excluded.object_guid,
               dn = excluded.dn, rule = excluded.rule, updated_at = excluded.updated_at",
            &[&ids, &guids, &dns, &rules, &times],
            op,
        )
        .await?;
    }
    Ok(())
}

/// The applied hashes of a batch: each group's hash put (stamped now) or removed.
pub async fn settle_applied(t: &Transaction<'_>, net: &Net<'_, &str>) -> Result<(), StateError> {
    settle_values(
        t,
        net,
        "applied",
        "INSERT INTO applied (cloud_id, hash, applied_at)
         SELECT u.id, u.hash, $3 FROM unnest($1::text[], $2::text[]) AS u(id, hash)
         ON CONFLICT (cloud_id) DO UPDATE SET hash = excluded.hash, applied_at = excluded.applied_at",
        &now_rfc3339(),
    )
    .await
}

/// The intents of a batch: each group's intended create (with its DN) put or removed.
pub async fn settle_intents(
    t: &Transaction<'_>,
    net: &Net<'_, &str>,
    run_id: i64,
) -> Result<(), StateError> {
    settle_values(
        t,
        net,
        "intent",
        "INSERT INTO intent (cloud_id, dn, run_id)
         SELECT u.id, u.dn, $3 FROM unnest($1::text[], $2::text[]) AS u(id, dn)
         ON CONFLICT (cloud_id) DO UPDATE SET dn = excluded.dn, run_id = excluded.run_id",
        &run_id,
    )
    .await
}

/// A batch's writes to `table`, one text value per group: the removed rows in one statement,
/// the others in `upsert` (`$1` the cloud ids, `$2` their values, `$3` `third`).
async fn settle_values(
    t: &Transaction<'_>,
    net: &Net<'_, &str>,
    table: &'static str,
    upsert: &str,
    third: &(dyn ToSql + Sync),
) -> Result<(), StateError> {
    let (gone, put) = split(net);
    let op = || format!("record {} rows of {table}", net.len());
    remove_rows(t, table, &gone, op).await?;
    if !put.is_empty() {
        let (ids, values): (Vec<&str>, Vec<&str>) = put.into_iter().unzip();
        exec(t, upsert, &[&ids, &values, third], op).await?;
    }
    Ok(())
}

/// Removes the rows of `keys` (cloud ids) from `table`, in one statement.
async fn remove_rows(
    t: &Transaction<'_>,
    table: &'static str,
    keys: &[&str],
    op: impl FnOnce() -> String,
) -> Result<(), StateError> {
    if !keys.is_empty() {
        let sql = format!("DELETE FROM {table} WHERE cloud_id = ANY($1)");
        exec(t, &sql, &[&keys], op).await?;
    }
    Ok(())
}

/// Every anchor, by cloud id.
pub async fn anchors(c: &impl GenericClient) -> Result<BTreeMap<String, Anchor>, StateError> {
    let op = || "load anchors".to_string();
    let rows = c
        .query(
            "SELECT cloud_id, object_guid, dn, rule, updated_at FROM anchor ORDER BY cloud_id",
            &[],
        )
        .await
        .map_err(pg(op))?;
    rows.iter()
        .map(|r| anchor_row(r, &op).map(|a| (a.cloud_id.clone(), a)))
        .collect()
}

// --- links ----------------------------------------------------------------------------------

pub async fn put_link(t: &Transaction<'_>, cloud_id: &str, target: &str) -> Result<(), StateError> {
    exec(
        t,
        "INSERT INTO link (cloud_id, target_dn, added_at) VALUES ($1, $2, $3)
         ON CONFLICT (cloud_id, target_dn) DO NOTHING",
        &[&cloud_id, &target, &now_rfc3339()],
        || format!("record link {cloud_id} -> {target}"),
    )
    .await?;
    Ok(())
}

pub async fn remove_link(
    t: &Transaction<'_>,
    cloud_id: &str,
    target: &str,
) -> Result<(), StateError> {
    exec(
        t,
        "DELETE FROM link WHERE cloud_id = $1 AND target_dn = $2",
        &[&cloud_id, &target],
        || format!("forget link {cloud_id} -> {target}"),
    )
    .await?;
    Ok(())
}

/// Forgets every link of a group (deleted: AD removed its memberships with it).
pub async fn remove_links(t: &Transaction<'_>, cloud_id: &str) -> Result<(), StateError> {
    exec(
        t,
        "DELETE FROM link WHERE cloud_id = $1",
        &[&cloud_id],
        || format!("forget the links of {cloud_id}"),
    )
    .await?;
    Ok(())
}

// --- quarantine -----------------------------------------------------------------------------

const QUARANTINE_COLUMNS: &str = "cloud_id, error, failures, first_at, last_at, retry_at";

fn quarantine_row(r: &Row, op: &dyn Fn() -> String) -> Result<Quarantined, StateError> {
    let cloud_id: String = get(r, 0, op)?;
    let failures = small(get(r, 2, op)?, "quarantine", &cloud_id, "failures")?;
    Ok(Quarantined {
        error: get(r, 1, op)?,
        failures,
        first_at: get(r, 3, op)?,
        last_at: get(r, 4, op)?,
        retry_at: get(r, 5, op)?,
        cloud_id,
    })
}

/// Records a failure of `cloud_id` at `now` (Unix seconds) and sets its next try; see
/// `state::quarantine::record_failure`.
pub async fn record_failure(
    t: &Transaction<'_>,
    cloud_id: &str,
    error: &str,
    now: i64,
    cap_secs: u64,
) -> Result<(Seen, Quarantined), StateError> {
    let op = || format!("quarantine {cloud_id}");
    let before = t
        .query_opt(
            &format!("SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE cloud_id = $1"),
            &[&cloud_id],
        )
        .await
        .map_err(pg(op))?
        .map(|r| quarantine_row(&r, &op))
        .transpose()?;
    let (seen, q) =
        crate::state::quarantine::next_failure(before.as_ref(), cloud_id, error, now, cap_secs);
    exec(
        t,
        "INSERT INTO quarantine (cloud_id, error, failures, first_at, last_at, retry_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (cloud_id) DO UPDATE SET error = excluded.error,
           failures = excluded.failures, first_at = excluded.first_at,
           last_at = excluded.last_at, retry_at = excluded.retry_at",
        &[
            &q.cloud_id,
            &q.error,
            &i64::from(q.failures),
            &q.first_at,
            &q.last_at,
            &q.retry_at,
        ],
        op,
    )
    .await?;
    Ok((seen, q))
}

/// Takes `cloud_id` out of quarantine.
/// Takes `cloud_ids` out of the quarantine, in one statement.
pub async fn release_all(t: &Transaction<'_>, cloud_ids: &[String]) -> Result<(), StateError> {
    if cloud_ids.is_empty() {
        return Ok(());
    }
    exec(
        t,
        "DELETE FROM quarantine WHERE cloud_id = ANY($1)",
        &[&cloud_ids],
        || format!("release {} groups from quarantine", cloud_ids.len()),
    )
    .await?;
    Ok(())
}

// --- held deletes and member removals -------------------------------------------------------

async fn held(c: &impl GenericClient) -> Result<BTreeMap<String, HeldDelete>, StateError> {
    let op = || "read held deletes".to_string();
    let rows = c
        .query(
            "SELECT cloud_id, dn, approved, held_at FROM held_delete ORDER BY cloud_id",
            &[],
        )
        .await
        .map_err(pg(op))?;
    let mut out = BTreeMap::new();
    for r in &rows {
        let h = HeldDelete {
            cloud_id: get(r, 0, &op)?,
            dn: get(r, 1, &op)?,
            approved: get(r, 2, &op)?,
            held_at: get(r, 3, &op)?,
        };
        out.insert(h.cloud_id.clone(), h);
    }
    Ok(out)
}

/// Replaces the held set with `rows` (a held delete keeps the time it was first held).
pub async fn replace_held(t: &Transaction<'_>, rows: &[HeldDelete]) -> Result<(), StateError> {
    let before = held(t).await?;
    exec(t, "DELETE FROM held_delete", &[], || {
        "clear held deletes".into()
    })
    .await?;
    let now = now_rfc3339();
    for h in rows {
        let at = before
            .get(&h.cloud_id)
            .map_or_else(|| now.clone(), |b| b.held_at.clone());
        exec(
            t,
            "INSERT INTO held_delete (cloud_id, dn, approved, held_at) VALUES ($1, $2, $3, $4)",
            &[&h.cloud_id, &h.dn, &h.approved, &at],
            || format!("hold delete of {}", h.cloud_id),
        )
        .await?;
    }
    Ok(())
}

async fn held_removals(
    c: &impl GenericClient,
) -> Result<BTreeMap<String, HeldRemovalRow>, StateError> {
    let op = || "read held member removals".to_string();
    let rows = c
        .query(
            "SELECT cloud_id, dn, removals, members, removal_hash, approved, held_at
             FROM held_removal ORDER BY cloud_id",
            &[],
        )
        .await
        .map_err(pg(op))?;
    let mut out = BTreeMap::new();
    for r in &rows {
        let h = HeldRemovalRow {
            cloud_id: get(r, 0, &op)?,
            dn: get(r, 1, &op)?,
            removals: count(get(r, 2, &op)?),
            members: count(get(r, 3, &op)?),
            removal_hash: get(r, 4, &op)?,
            approved: get(r, 5, &op)?,
            held_at: get(r, 6, &op)?,
        };
        out.insert(h.cloud_id.clone(), h);
    }
    Ok(out)
}

/// Replaces the held removals; a row whose group and fingerprint were held before keeps the
/// time it was first held and its approval (see `state::held_removals::replace`).
async fn replace_held_removals(
    t: &Transaction<'_>,
    rows: &[HeldRemovalRow],
) -> Result<(), StateError> {
    let before = held_removals(t).await?;
    exec(t, "DELETE FROM held_removal", &[], || {
        "clear held member removals".into()
    })
    .await?;
    let now = now_rfc3339();
    for h in rows {
        let same = before
            .get(&h.cloud_id)
            .filter(|b| b.removal_hash == h.removal_hash);
        let at = same.map_or_else(|| now.clone(), |b| b.held_at.clone());
        let approved = h.approved || same.is_some_and(|b| b.approved);
        exec(
            t,
            "INSERT INTO held_removal
               (cloud_id, dn, removals, members, removal_hash, approved, held_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &h.cloud_id,
                &h.dn,
                &big(h.removals),
                &big(h.members),
                &h.removal_hash,
                &approved,
                &at,
            ],
            || format!("hold member removals of {}", h.cloud_id),
        )
        .await?;
    }
    Ok(())
}

/// Approves the held set `id`: the member removals or the deletes waiting for approval
/// (`state::held::choose` decides, as for the SQLite store); what it approved and how many.
pub async fn approve_any(t: &Transaction<'_>, id: &str) -> Result<(Approved, usize), StateError> {
    let deletes = crate::state::held::waiting_of(&held(t).await?);
    let removals = crate::state::held_removals::waiting_of(&held_removals(t).await?);
    let chosen = crate::state::held::choose(id, deletes, removals)?;
    let table = match chosen.0 {
        Approved::Deletes => "UPDATE held_delete SET approved = true WHERE NOT approved",
        Approved::MemberRemovals => "UPDATE held_removal SET approved = true WHERE NOT approved",
    };
    exec(t, table, &[], || format!("approve held set {id}")).await?;
    Ok(chosen)
}

// --- released groups ------------------------------------------------------------------------

/// Stops managing the groups of `anchors` without touching AD, as the SQLite store's
/// `release`: each anchor (with its applied hash, intent and leaving row) is replaced by a
/// `released` row, and the release is in the audit trail of run `run_id`, naming `instance`
/// when given.
pub async fn release_groups(
    t: &Transaction<'_>,
    run_id: i64,
    anchors: &[Anchor],
    instance: Option<&str>,
) -> Result<(), StateError> {
    let now = now_rfc3339();
    for a in anchors {
        exec(
            t,
            "INSERT INTO released (cloud_id, dn, object_guid, rule, released_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (cloud_id) DO UPDATE SET dn = excluded.dn,
               object_guid = excluded.object_guid, rule = excluded.rule,
               released_at = excluded.released_at",
            &[&a.cloud_id, &a.dn, &a.object_guid, &a.rule, &now],
            || format!("release {}", a.cloud_id),
        )
        .await?;
        for table in ["leaving", "anchor", "applied", "intent"] {
            exec(
                t,
                &format!("DELETE FROM {table} WHERE cloud_id = $1"),
                &[&a.cloud_id],
                || format!("release {}: forget its {table} row", a.cloud_id),
            )
            .await?;
        }
        let event = AuditEvent {
            cloud_id: a.cloud_id.clone(),
            action: "release".into(),
            dn: a.dn.clone(),
            detail: serde_json::json!({ "rule": a.rule, "object_guid": a.object_guid }),
            outcome: "ok".into(),
        };
        match instance {
            Some(i) => record_event(t, run_id, &with_instance(&event, i)).await?,
            None => record_event(t, run_id, &event).await?,
        }
    }
    Ok(())
}

/// `e` with the instance that wrote it in its detail (several instances share this state).
pub fn with_instance(e: &AuditEvent, instance: &str) -> AuditEvent {
    let mut e = e.clone();
    match &mut e.detail {
        serde_json::Value::Object(m) => {
            m.insert("instance".into(), instance.into());
        }
        other => {
            *other = serde_json::json!({ "value": other.take(), "instance": instance });
        }
    }
    e
}

// --- runs and audit events ------------------------------------------------------------------

/// Starts a run record and returns its id.
pub async fn begin_run(t: &Transaction<'_>, mode: RunMode) -> Result<i64, StateError> {
    let mode = mode.as_str();
    let op = || format!("begin {mode} run");
    let row = t
        .query_one(
            "INSERT INTO run (mode, started_at) VALUES ($1, $2) RETURNING id",
            &[&mode, &now_rfc3339()],
        )
        .await
        .map_err(pg(op))?;
    get(&row, 0, &op)
}

/// Closes run `run_id` with `status` and `stats`; an unknown run is [`StateError::UnknownRun`].
pub async fn finish_run(
    t: &Transaction<'_>,
    run_id: i64,
    status: RunStatus,
    stats: &serde_json::Value,
) -> Result<(), StateError> {
    let json = serde_json::to_string(stats).map_err(|cause| StateError::Encode {
        path: PATH.into(),
        table: "run",
        id: run_id.to_string(),
        column: "stats_json",
        cause,
    })?;
    let n = exec(
        t,
        "UPDATE run SET finished_at = $2, status = $3, stats_json = $4 WHERE id = $1",
        &[&run_id, &now_rfc3339(), &status.as_str(), &json],
        || format!("finish run {run_id}"),
    )
    .await?;
    if n == 0 {
        return Err(StateError::UnknownRun {
            path: PATH.into(),
            op: "finish run",
            run_id,
        });
    }
    Ok(())
}

/// Records `ev` in run `run_id`; an unknown run is [`StateError::UnknownRun`].
/// Records `events` in their order, in one statement (their ids grow in that order).
pub async fn record_events(
    t: &Transaction<'_>,
    run_id: i64,
    events: &[AuditEvent],
) -> Result<(), StateError> {
    match events {
        [] => return Ok(()),
        [one] => return record_event(t, run_id, one).await,
        _ => {}
    }
    let mut details = Vec::with_capacity(events.len());
    for ev in events {
        details.push(
            serde_json::to_string(&ev.detail).map_err(|cause| StateError::Encode {
                path: PATH.into(),
                table: "run_event",
                id: ev.cloud_id.clone(),
                column: "detail_json",
                cause,
            })?,
        );
    }
    let ids: Vec<&str> = events.iter().map(|e| e.cloud_id.as_str()).collect();
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    let dns: Vec<&str> = events.iter().map(|e| e.dn.as_str()).collect();
    let outcomes: Vec<&str> = events.iter().map(|e| e.outcome.as_str()).collect();
    let res = t
        .execute(
            "INSERT INTO run_event (run_id, at, cloud_id, action, dn, detail_json, outcome)
             SELECT $1, $2, u.id, u.action, u.dn, u.detail, u.outcome
             FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
               WITH ORDINALITY AS u(id, action, dn, detail, outcome, n)
             ORDER BY u.n",
            &[
                &run_id,
                &now_rfc3339(),
                &ids,
                &actions,
                &dns,
                &details,
                &outcomes,
            ],
        )
        .await;
    event_outcome(res, run_id, || {
        format!("record {} events in run {run_id}", events.len())
    })
}

/// An event insert's result: a run the database does not know (the foreign key) is named as
/// such; anything else is a database error described by `op`.
fn event_outcome(
    res: Result<u64, tokio_postgres::Error>,
    run_id: i64,
    op: impl FnOnce() -> String,
) -> Result<(), StateError> {
    match res {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => {
            Err(StateError::UnknownRun {
                path: PATH.into(),
                op: "record event",
                run_id,
            })
        }
        Err(cause) => Err(StateError::Postgres { op: op(), cause }),
    }
}

pub async fn record_event(
    t: &Transaction<'_>,
    run_id: i64,
    ev: &AuditEvent,
) -> Result<(), StateError> {
    let detail = serde_json::to_string(&ev.detail).map_err(|cause| StateError::Encode {
        path: PATH.into(),
        table: "run_event",
        id: ev.cloud_id.clone(),
        column: "detail_json",
        cause,
    })?;
    let res = t
        .execute(
            "INSERT INTO run_event (run_id, at, cloud_id, action, dn, detail_json, outcome)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &run_id,
                &now_rfc3339(),
                &ev.cloud_id,
                &ev.action,
                &ev.dn,
                &detail,
                &ev.outcome,
            ],
        )
        .await;
    event_outcome(res, run_id, || {
        format!(
            "record event {} for {} in run {run_id}",
            ev.action, ev.cloud_id
        )
    })
}

// --- the trigger outbox ---------------------------------------------------------------------

/// Records `c`, due at once; a call with the same key is recorded once.
pub async fn put_call(t: &Transaction<'_>, c: &NewCall, now: i64) -> Result<(), StateError> {
    exec(
        t,
        "INSERT INTO outbox (key, rule, hook, cloud_id, event_json, next_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (key) DO NOTHING",
        &[
            &c.key,
            &c.rule,
            &c.hook,
            &c.cloud_id,
            &c.event_json,
            &now,
            &now_rfc3339(),
        ],
        || format!("record trigger {} of {}", c.hook, c.cloud_id),
    )
    .await?;
    Ok(())
}

/// Delivered: forgotten.
pub async fn call_delivered(t: &Transaction<'_>, id: i64) -> Result<(), StateError> {
    exec(t, "DELETE FROM outbox WHERE id = $1", &[&id], || {
        format!("forget delivered trigger call {id}")
    })
    .await?;
    Ok(())
}

/// A failed attempt: tried again at `next_at`, or given up when `next_at` is `None`.
pub async fn call_failed(
    t: &Transaction<'_>,
    id: i64,
    error: &str,
    next_at: Option<i64>,
) -> Result<(), StateError> {
    let (state, at) = match next_at {
        Some(at) => ("pending", at),
        None => ("given_up", 0),
    };
    exec(
        t,
        "UPDATE outbox SET attempts = attempts + 1, last_error = $2, state = $3,
             next_at = CASE WHEN $3 = 'pending' THEN $4 ELSE next_at END
         WHERE id = $1",
        &[&id, &error, &state, &at],
        || format!("record a failed delivery of trigger call {id}"),
    )
    .await?;
    Ok(())
}

const OUTBOX_COLUMNS: &str =
    "id, key, rule, hook, cloud_id, event_json, attempts, next_at, last_error, created_at";

fn outbox_row(r: &Row, op: &dyn Fn() -> String) -> Result<OutboxEntry, StateError> {
    let id: i64 = get(r, 0, op)?;
    Ok(OutboxEntry {
        id,
        key: get(r, 1, op)?,
        rule: get(r, 2, op)?,
        hook: get(r, 3, op)?,
        cloud_id: get(r, 4, op)?,
        event_json: get(r, 5, op)?,
        attempts: small(get(r, 6, op)?, "outbox", &id.to_string(), "attempts")?,
        next_at: get(r, 7, op)?,
        last_error: get(r, 8, op)?,
        created_at: get(r, 9, op)?,
    })
}

// --- unresolved members ---------------------------------------------------------------------

/// The group's members not found are `members` (none: its rows go).
pub async fn set_unresolved(
    t: &Transaction<'_>,
    cloud_id: &str,
    members: &[String],
) -> Result<(), StateError> {
    exec(
        t,
        "DELETE FROM unresolved WHERE cloud_id = $1",
        &[&cloud_id],
        || format!("forget the unresolved members of {cloud_id}"),
    )
    .await?;
    edit_unresolved(t, cloud_id, members, &[]).await
}

/// `add` are members of the group not found too; `remove` are no longer its members.
pub async fn edit_unresolved(
    t: &Transaction<'_>,
    cloud_id: &str,
    add: &[String],
    remove: &[String],
) -> Result<(), StateError> {
    let op = || format!("record the unresolved members of {cloud_id}");
    if !add.is_empty() {
        exec(
            t,
            "INSERT INTO unresolved (cloud_id, member_id) SELECT $1, unnest($2::text[])
             ON CONFLICT (cloud_id, member_id) DO NOTHING",
            &[&cloud_id, &add],
            op,
        )
        .await?;
    }
    if !remove.is_empty() {
        exec(
            t,
            "DELETE FROM unresolved WHERE cloud_id = $1 AND member_id = ANY($2)",
            &[&cloud_id, &remove],
            op,
        )
        .await?;
    }
    Ok(())
}

/// The unresolved members of many groups, each set replaced as [`set_unresolved`] does: two
/// statements for them all.
pub async fn settle_unresolved(
    t: &Transaction<'_>,
    sets: &BTreeMap<&str, &[String]>,
) -> Result<(), StateError> {
    if sets.is_empty() {
        return Ok(());
    }
    let op = || format!("record the unresolved members of {} groups", sets.len());
    let groups: Vec<&str> = sets.keys().copied().collect();
    exec(
        t,
        "DELETE FROM unresolved WHERE cloud_id = ANY($1)",
        &[&groups],
        op,
    )
    .await?;
    let (ids, members): (Vec<&str>, Vec<&str>) = sets
        .iter()
        .flat_map(|(g, ms)| ms.iter().map(move |m| (*g, m.as_str())))
        .unzip();
    if !ids.is_empty() {
        exec(
            t,
            "INSERT INTO unresolved (cloud_id, member_id)
             SELECT * FROM unnest($1::text[], $2::text[])
             ON CONFLICT (cloud_id, member_id) DO NOTHING",
            &[&ids, &members],
            op,
        )
        .await?;
    }
    Ok(())
}

// --- the store's calls ----------------------------------------------------------------------

impl PgStore {
    pub fn anchor(&self, cloud_id: &str) -> Result<Option<Anchor>, StateError> {
        let op = || format!("load anchor {cloud_id}");
        self.block(async {
            let row = self
                .client()
                .query_opt(
                    "SELECT cloud_id, object_guid, dn, rule, updated_at FROM anchor
                     WHERE cloud_id = $1",
                    &[&cloud_id],
                )
                .await
                .map_err(pg(op))?;
            row.map(|r| anchor_row(&r, &op)).transpose()
        })
    }

    pub fn anchors(&self) -> Result<BTreeMap<String, Anchor>, StateError> {
        self.block(anchors(self.client()))
    }

    pub fn anchor_ids(&self) -> Result<BTreeSet<String>, StateError> {
        let op = || "load anchored ids".to_string();
        let ids: Vec<String> = self.block(column(
            self.client(),
            "SELECT cloud_id FROM anchor ORDER BY cloud_id",
            &[],
            &op,
        ))?;
        Ok(ids.into_iter().collect())
    }

    pub fn anchor_count(&self) -> Result<usize, StateError> {
        self.count_rows("SELECT count(*) FROM anchor", "count anchors")
    }

    pub fn applied_hash(&self, cloud_id: &str) -> Result<Option<String>, StateError> {
        let op = || format!("load applied hash {cloud_id}");
        let found: Vec<String> = self.block(column(
            self.client(),
            "SELECT hash FROM applied WHERE cloud_id = $1",
            &[&cloud_id],
            &op,
        ))?;
        Ok(found.into_iter().next())
    }

    pub fn applied_hashes(&self) -> Result<BTreeMap<String, String>, StateError> {
        let op = || "load applied hashes".to_string();
        self.block(async {
            let rows = self
                .client()
                .query("SELECT cloud_id, hash FROM applied ORDER BY cloud_id", &[])
                .await
                .map_err(pg(op))?;
            rows.iter()
                .map(|r| Ok((get(r, 0, &op)?, get(r, 1, &op)?)))
                .collect()
        })
    }

    pub fn intent(&self, cloud_id: &str) -> Result<Option<String>, StateError> {
        let op = || format!("load intent of {cloud_id}");
        let found: Vec<String> = self.block(column(
            self.client(),
            "SELECT dn FROM intent WHERE cloud_id = $1",
            &[&cloud_id],
            &op,
        ))?;
        Ok(found.into_iter().next())
    }

    /// The cloud ids with an unsettled intent, sorted.
    pub fn intent_ids(&self) -> Result<Vec<String>, StateError> {
        let op = || "list intents".to_string();
        self.block(column(
            self.client(),
            "SELECT cloud_id FROM intent ORDER BY cloud_id",
            &[],
            &op,
        ))
    }

    /// The recorded links of `ids`, by cloud id (target DNs sorted; ids without any left out).
    /// The anchors of `ids` that exist, in one query.
    pub fn anchors_of<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, Anchor>, StateError> {
        let ids: Vec<&str> = ids.into_iter().map(String::as_str).collect();
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let op = || format!("load the anchors of {} groups", ids.len());
        self.block(async {
            let rows = self
                .client()
                .query(
                    "SELECT cloud_id, object_guid, dn, rule, updated_at FROM anchor
                     WHERE cloud_id = ANY($1)",
                    &[&ids],
                )
                .await
                .map_err(pg(op))?;
            rows.iter()
                .map(|r| anchor_row(r, &op).map(|a| (a.cloud_id.clone(), a)))
                .collect()
        })
    }

    pub fn links_of<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, Vec<String>>, StateError> {
        let ids: Vec<&str> = ids.into_iter().map(String::as_str).collect();
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let op = || "read links".to_string();
        self.block(async {
            let rows = self
                .client()
                .query(
                    "SELECT cloud_id, target_dn FROM link WHERE cloud_id = ANY($1)
                     ORDER BY cloud_id, target_dn",
                    &[&ids],
                )
                .await
                .map_err(pg(op))?;
            let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for r in &rows {
                out.entry(get(r, 0, &op)?)
                    .or_default()
                    .push(get(r, 1, &op)?);
            }
            Ok(out)
        })
    }

    pub fn released(&self) -> Result<BTreeMap<String, Released>, StateError> {
        let op = || "read released groups".to_string();
        self.block(async {
            let rows = self
                .client()
                .query(
                    "SELECT cloud_id, dn, object_guid, rule, released_at FROM released
                     ORDER BY cloud_id",
                    &[],
                )
                .await
                .map_err(pg(op))?;
            let mut out = BTreeMap::new();
            for r in &rows {
                let g = Released {
                    cloud_id: get(r, 0, &op)?,
                    dn: get(r, 1, &op)?,
                    object_guid: get(r, 2, &op)?,
                    rule: get(r, 3, &op)?,
                    released_at: get(r, 4, &op)?,
                };
                out.insert(g.cloud_id.clone(), g);
            }
            Ok(out)
        })
    }

    /// Forgets the release of `ids` (they were adopted again).
    pub fn unrelease(&mut self, ids: &[String]) -> Result<(), StateError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.with_transaction(async |t| {
            for id in ids {
                exec(t, "DELETE FROM released WHERE cloud_id = $1", &[id], || {
                    format!("unrelease {id}")
                })
                .await?;
            }
            Ok(())
        })
    }

    pub fn leaving(&self) -> Result<BTreeMap<String, Leaving>, StateError> {
        let op = || "read leaving groups".to_string();
        self.block(async {
            let rows = self
                .client()
                .query(
                    "SELECT cloud_id, since, delete_at FROM leaving ORDER BY cloud_id",
                    &[],
                )
                .await
                .map_err(pg(op))?;
            rows.iter()
                .map(|r| {
                    Ok((
                        get(r, 0, &op)?,
                        Leaving {
                            since: get(r, 1, &op)?,
                            delete_at: get(r, 2, &op)?,
                        },
                    ))
                })
                .collect()
        })
    }

    /// Leaving groups whose delete is due at `now` (Unix seconds).
    pub fn leaving_due(&self, now: i64) -> Result<BTreeSet<String>, StateError> {
        let op = || "read due deletes of leaving groups".to_string();
        let ids: Vec<String> = self.block(column(
            self.client(),
            "SELECT cloud_id FROM leaving WHERE delete_at <= $1",
            &[&now],
            &op,
        ))?;
        Ok(ids.into_iter().collect())
    }

    /// Records the groups leaving (`Some`) or back (`None`), and forgets the rows of groups no
    /// longer owned; one transaction.
    pub fn settle_leaving(
        &mut self,
        changes: &BTreeMap<String, Option<Leaving>>,
    ) -> Result<(), StateError> {
        self.with_transaction(async |t| {
            for (id, l) in changes {
                match l {
                    Some(l) => {
                        exec(
                            t,
                            "INSERT INTO leaving (cloud_id, since, delete_at) VALUES ($1, $2, $3)
                             ON CONFLICT (cloud_id) DO UPDATE SET since = excluded.since,
                               delete_at = excluded.delete_at",
                            &[id, &l.since, &l.delete_at],
                            || format!("record {id} as leaving"),
                        )
                        .await?
                    }
                    None => {
                        exec(t, "DELETE FROM leaving WHERE cloud_id = $1", &[id], || {
                            format!("forget {id} as leaving")
                        })
                        .await?
                    }
                };
            }
            exec(
                t,
                "DELETE FROM leaving WHERE cloud_id NOT IN (SELECT cloud_id FROM anchor)",
                &[],
                || "forget leaving groups no longer owned".into(),
            )
            .await?;
            Ok(())
        })
    }

    pub fn quarantined(&self) -> Result<BTreeMap<String, Quarantined>, StateError> {
        let op = || "read quarantine".to_string();
        self.block(async {
            let rows = self
                .client()
                .query(
                    &format!("SELECT {QUARANTINE_COLUMNS} FROM quarantine ORDER BY cloud_id"),
                    &[],
                )
                .await
                .map_err(pg(op))?;
            rows.iter()
                .map(|r| quarantine_row(r, &op).map(|q| (q.cloud_id.clone(), q)))
                .collect()
        })
    }

    /// The quarantined groups whose wait is over at `now` (Unix seconds).
    pub fn quarantine_due(&self, now: i64) -> Result<BTreeSet<String>, StateError> {
        let op = || "read quarantined groups due".to_string();
        let ids: Vec<String> = self.block(column(
            self.client(),
            "SELECT cloud_id FROM quarantine WHERE retry_at <= $1 ORDER BY cloud_id",
            &[&now],
            &op,
        ))?;
        Ok(ids.into_iter().collect())
    }

    pub fn quarantine_count(&self) -> Result<usize, StateError> {
        self.count_rows(
            "SELECT count(*) FROM quarantine",
            "count quarantined groups",
        )
    }

    pub fn held_deletes(&self) -> Result<BTreeMap<String, HeldDelete>, StateError> {
        self.block(held(self.client()))
    }

    pub fn held_removals(&self) -> Result<BTreeMap<String, HeldRemovalRow>, StateError> {
        self.block(held_removals(self.client()))
    }

    /// The id of the member-removal set waiting for approval, and how many groups it holds.
    pub fn waiting_removals(&self) -> Result<Option<(String, usize)>, StateError> {
        Ok(crate::state::held_removals::waiting_of(
            &self.held_removals()?,
        ))
    }

    /// The member removals an operator approved: group → the fingerprint of that exact set.
    pub fn approved_removals(&self) -> Result<BTreeMap<String, String>, StateError> {
        Ok(self
            .held_removals()?
            .into_values()
            .filter(|h| h.approved)
            .map(|h| (h.cloud_id, h.removal_hash))
            .collect())
    }

    pub fn replace_held_removals(&mut self, rows: &[HeldRemovalRow]) -> Result<(), StateError> {
        self.with_transaction(async |t| replace_held_removals(t, rows).await)
    }

    /// Starts a run record and returns its id.
    pub fn begin_run(&mut self, mode: RunMode) -> Result<i64, StateError> {
        self.with_transaction(async |t| begin_run(t, mode).await)
    }

    pub fn finish_run(
        &mut self,
        run_id: i64,
        status: RunStatus,
        stats: &serde_json::Value,
    ) -> Result<(), StateError> {
        self.with_transaction(async |t| finish_run(t, run_id, status, stats).await)
    }

    /// Approves the held set `id` (see [`approve_any`]); one transaction.
    pub fn approve_any(&mut self, id: &str) -> Result<(Approved, usize), StateError> {
        self.with_transaction(async |t| approve_any(t, id).await)
    }

    /// Stops managing the groups of `anchors` (see [`release_groups`]); one transaction. The
    /// audit events name the instance the writes are fenced with, if any.
    pub fn release(&mut self, run_id: i64, anchors: &[Anchor]) -> Result<(), StateError> {
        let instance = self.fence().map(|(i, _)| i.to_string());
        self.with_transaction(async |t| {
            release_groups(t, run_id, anchors, instance.as_deref()).await
        })
    }

    /// A run as stored (see `Store::run`).
    pub fn run(&self, run_id: i64) -> Result<Option<RunRecord>, StateError> {
        let op = || format!("read run {run_id}");
        self.block(async {
            let row = self
                .client()
                .query_opt(
                    "SELECT id, mode, started_at, finished_at, status, stats_json FROM run
                     WHERE id = $1",
                    &[&run_id],
                )
                .await
                .map_err(pg(op))?;
            let Some(r) = row else {
                return Ok(None);
            };
            let stats: Option<String> = get(&r, 5, &op)?;
            let stats = stats
                .map(|s| serde_json::from_str(&s))
                .transpose()
                .map_err(|cause| StateError::CorruptRow {
                    path: PATH.into(),
                    table: "run",
                    id: run_id.to_string(),
                    column: "stats_json",
                    cause,
                })?;
            Ok(Some(RunRecord {
                id: get(&r, 0, &op)?,
                mode: get(&r, 1, &op)?,
                started_at: get(&r, 2, &op)?,
                finished_at: get(&r, 3, &op)?,
                status: get(&r, 4, &op)?,
                stats,
            }))
        })
    }

    /// The audit events of a run in the order recorded (see `Store::run_events`).
    pub fn run_events(&self, run_id: i64) -> Result<Vec<EventRecord>, StateError> {
        let op = || format!("read the events of run {run_id}");
        self.block(async {
            let rows = self
                .client()
                .query(
                    "SELECT id, run_id, at, cloud_id, action, dn, detail_json, outcome
                     FROM run_event WHERE run_id = $1 ORDER BY id",
                    &[&run_id],
                )
                .await
                .map_err(pg(op))?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let id: i64 = get(r, 0, &op)?;
                let detail: String = get(r, 6, &op)?;
                let detail =
                    serde_json::from_str(&detail).map_err(|cause| StateError::CorruptRow {
                        path: PATH.into(),
                        table: "run_event",
                        id: id.to_string(),
                        column: "detail_json",
                        cause,
                    })?;
                out.push(EventRecord {
                    id,
                    run_id: get(r, 1, &op)?,
                    at: get(r, 2, &op)?,
                    event: AuditEvent {
                        cloud_id: get(r, 3, &op)?,
                        action: get(r, 4, &op)?,
                        dn: get(r, 5, &op)?,
                        detail,
                        outcome: get(r, 7, &op)?,
                    },
                });
            }
            Ok(out)
        })
    }

    /// Whether a trigger call is due at `now`.
    pub fn any_call_due(&self, now: i64) -> Result<bool, StateError> {
        let op = || "read due trigger calls".to_string();
        self.block(async {
            let row = self
                .client()
                .query_opt(
                    "SELECT 1 FROM outbox WHERE state = 'pending' AND next_at <= $1 LIMIT 1",
                    &[&now],
                )
                .await
                .map_err(pg(op))?;
            Ok(row.is_some())
        })
    }

    /// Trigger calls due at `now`, oldest first, at most `limit`.
    pub fn calls_due(&self, now: i64, limit: usize) -> Result<Vec<OutboxEntry>, StateError> {
        let op = || "read due trigger calls".to_string();
        self.block(async {
            let rows = self
                .client()
                .query(
                    &format!(
                        "SELECT {OUTBOX_COLUMNS} FROM outbox
                         WHERE state = 'pending' AND next_at <= $1 ORDER BY id LIMIT $2"
                    ),
                    &[&now, &big(limit)],
                )
                .await
                .map_err(pg(op))?;
            rows.iter().map(|r| outbox_row(r, &op)).collect()
        })
    }

    /// Records the outcome of delivering call `id`: delivered (`Ok`), to be tried again at
    /// `next_at`, or given up (`next_at` = `None`).
    pub fn settle_call(
        &mut self,
        id: i64,
        outcome: Result<(), (&str, Option<i64>)>,
    ) -> Result<(), StateError> {
        self.with_transaction(async |t| match outcome {
            Ok(()) => call_delivered(t, id).await,
            Err((error, next_at)) => call_failed(t, id, error, next_at).await,
        })
    }

    pub fn call_counts(&self) -> Result<OutboxCounts, StateError> {
        let op = || "count trigger calls".to_string();
        self.block(async {
            let rows = self
                .client()
                .query(
                    "SELECT state, attempts > 0, count(*) FROM outbox GROUP BY state, attempts > 0",
                    &[],
                )
                .await
                .map_err(pg(op))?;
            let mut c = OutboxCounts::default();
            for r in &rows {
                let state: String = get(r, 0, &op)?;
                let tried: bool = get(r, 1, &op)?;
                let n = count(get(r, 2, &op)?);
                match (state.as_str(), tried) {
                    ("given_up", _) => c.given_up += n,
                    (_, true) => c.retrying += n,
                    _ => c.pending += n,
                }
            }
            Ok(c)
        })
    }

    /// Members not found in AD at each managed group's last comparison, added up (see
    /// `Store::unresolved_total`).
    pub fn unresolved_total(&self) -> Result<UnresolvedTotal, StateError> {
        let op = || "count the unresolved members".to_string();
        self.block(async {
            let row = self
                .client()
                .query_one(
                    "SELECT count(*), count(DISTINCT u.cloud_id) FROM unresolved u
                     JOIN anchor a ON a.cloud_id = u.cloud_id
                     WHERE u.cloud_id NOT IN (SELECT cloud_id FROM leaving)
                       AND u.cloud_id NOT IN (SELECT cloud_id FROM released)",
                    &[],
                )
                .await
                .map_err(pg(op))?;
            let members: i64 = get(&row, 0, &op)?;
            let groups: i64 = get(&row, 1, &op)?;
            Ok(UnresolvedTotal {
                members: u64::try_from(members).unwrap_or(0),
                groups: u64::try_from(groups).unwrap_or(0),
            })
        })
    }

    fn count_rows(&self, sql: &str, what: &str) -> Result<usize, StateError> {
        let op = || what.to_string();
        self.block(async {
            let row = self.client().query_one(sql, &[]).await.map_err(pg(op))?;
            Ok(count(get(&row, 0, &op)?))
        })
    }
}
