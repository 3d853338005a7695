//! The PostgreSQL schema: the SQLite store's tables at its schema version, with PostgreSQL
//! types, and its version in `writeback_schema` (one row).
//!
//! The SQLite file's migrations are its history; here the schema starts at 12, created whole,
//! and later versions are steps from there.
//! A later SQLite migration needs its PostgreSQL counterpart: the assertion below stops the
//! build until it has one.

use tokio_postgres::{GenericClient, Transaction};

use super::{get, pg};
use crate::state::StateError;

/// The schema version this build writes: the SQLite store's.
pub const SCHEMA_VERSION: i64 = crate::state::SCHEMA_VERSION;

// The tables below are version 13's; a new SQLite version must be mirrored here first.
const _: () = assert!(SCHEMA_VERSION == 13);

/// Serializes the creation among instances opening a fresh database together (the key is
/// arbitrary, fixed: "wbschema" in ASCII).
pub(crate) const CREATE_LOCK: i64 = 0x7762_7363_6865_6d61;

/// Version 12. Booleans are `boolean` (SQLite's 0/1 integers), integers `bigint`, JSON stays
/// text checked by a cast (so it reads back exactly as written), times stay the RFC 3339 text
/// and Unix seconds the SQLite store writes. `COLLATE "C"` orders text by bytes, as SQLite.
/// `INTEGER PRIMARY KEY` row ids are identity columns (never reused, as AUTOINCREMENT).
const V12: &str = r#"
CREATE TABLE writeback_schema (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version  bigint  NOT NULL
);

CREATE TABLE delta_link (
    kind        text COLLATE "C" NOT NULL PRIMARY KEY CHECK (kind IN ('group', 'user', 'device')),
    link        text COLLATE "C" NOT NULL CHECK (link <> ''),
    updated_at  text COLLATE "C" NOT NULL,
    select_list text COLLATE "C"
);

CREATE TABLE cloud_object (
    kind         text COLLATE "C" NOT NULL CHECK (kind IN ('group', 'user', 'device')),
    id           text COLLATE "C" NOT NULL,
    props_json   text COLLATE "C" NOT NULL CHECK (props_json::json IS NOT NULL),
    soft_deleted boolean NOT NULL DEFAULT false,
    updated_at   text COLLATE "C" NOT NULL,
    PRIMARY KEY (kind, id)
);

CREATE TABLE cloud_member (
    group_id    text COLLATE "C" NOT NULL,
    member_id   text COLLATE "C" NOT NULL,
    member_type text COLLATE "C" NOT NULL,
    PRIMARY KEY (group_id, member_id)
);
CREATE INDEX cloud_member_by_member ON cloud_member (member_id);

CREATE TABLE anchor (
    cloud_id    text COLLATE "C" NOT NULL PRIMARY KEY,
    object_guid text COLLATE "C" NOT NULL,
    dn          text COLLATE "C" NOT NULL,
    rule        text COLLATE "C" NOT NULL,
    updated_at  text COLLATE "C" NOT NULL
);
CREATE UNIQUE INDEX anchor_object_guid ON anchor (object_guid) WHERE object_guid <> '';

CREATE TABLE applied (
    cloud_id   text COLLATE "C" NOT NULL PRIMARY KEY,
    hash       text COLLATE "C" NOT NULL,
    applied_at text COLLATE "C" NOT NULL
);

CREATE TABLE run (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mode        text COLLATE "C" NOT NULL,
    started_at  text COLLATE "C" NOT NULL,
    finished_at text COLLATE "C",
    status      text COLLATE "C",
    stats_json  text COLLATE "C" CHECK (stats_json IS NULL OR stats_json::json IS NOT NULL)
);

CREATE TABLE run_event (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      bigint NOT NULL REFERENCES run (id) ON DELETE CASCADE,
    at          text COLLATE "C" NOT NULL,
    cloud_id    text COLLATE "C" NOT NULL,
    action      text COLLATE "C" NOT NULL,
    dn          text COLLATE "C" NOT NULL,
    detail_json text COLLATE "C" NOT NULL CHECK (detail_json::json IS NOT NULL),
    outcome     text COLLATE "C" NOT NULL
);
CREATE INDEX run_event_by_run ON run_event (run_id);
CREATE INDEX run_event_by_cloud_id ON run_event (cloud_id);
CREATE INDEX run_event_by_at ON run_event (at);
-- SQLite's COLLATE NOCASE folds ASCII only, as lower() does under the "C" collation.
CREATE INDEX run_event_by_dn ON run_event (lower(dn));

CREATE TABLE pending (
    kind text COLLATE "C" NOT NULL CHECK (kind IN ('group', 'user', 'device')),
    id   text COLLATE "C" NOT NULL,
    PRIMARY KEY (kind, id)
);

CREATE TABLE meta (
    key   text COLLATE "C" NOT NULL PRIMARY KEY,
    value text COLLATE "C" NOT NULL
);

CREATE TABLE quarantine (
    cloud_id text COLLATE "C" NOT NULL PRIMARY KEY,
    error    text COLLATE "C" NOT NULL,
    failures bigint NOT NULL CHECK (failures > 0),
    first_at text COLLATE "C" NOT NULL,
    last_at  text COLLATE "C" NOT NULL,
    retry_at bigint NOT NULL
);
CREATE INDEX quarantine_by_retry ON quarantine (retry_at);

CREATE TABLE intent (
    cloud_id text COLLATE "C" NOT NULL PRIMARY KEY,
    dn       text COLLATE "C" NOT NULL,
    run_id   bigint NOT NULL
);

CREATE TABLE held_delete (
    cloud_id text COLLATE "C" NOT NULL PRIMARY KEY,
    dn       text COLLATE "C" NOT NULL,
    approved boolean NOT NULL DEFAULT false,
    held_at  text COLLATE "C" NOT NULL
);

CREATE TABLE released (
    cloud_id    text COLLATE "C" PRIMARY KEY,
    dn          text COLLATE "C" NOT NULL,
    object_guid text COLLATE "C" NOT NULL,
    rule        text COLLATE "C" NOT NULL,
    released_at text COLLATE "C" NOT NULL
);

CREATE TABLE held_removal (
    cloud_id     text COLLATE "C" PRIMARY KEY,
    dn           text COLLATE "C" NOT NULL,
    removals     bigint NOT NULL,
    members      bigint NOT NULL,
    removal_hash text COLLATE "C" NOT NULL,
    approved     boolean NOT NULL DEFAULT false,
    held_at      text COLLATE "C" NOT NULL
);

CREATE TABLE leaving (
    cloud_id  text COLLATE "C" PRIMARY KEY,
    since     bigint NOT NULL,
    delete_at bigint
);
CREATE INDEX leaving_due ON leaving (delete_at) WHERE delete_at IS NOT NULL;

CREATE TABLE link (
    cloud_id  text COLLATE "C" NOT NULL,
    target_dn text COLLATE "C" NOT NULL,
    added_at  text COLLATE "C" NOT NULL,
    PRIMARY KEY (cloud_id, target_dn)
);

CREATE TABLE outbox (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key        text COLLATE "C" NOT NULL UNIQUE,
    rule       text COLLATE "C" NOT NULL,
    hook       text COLLATE "C" NOT NULL,
    cloud_id   text COLLATE "C" NOT NULL,
    event_json text COLLATE "C" NOT NULL,
    attempts   bigint NOT NULL DEFAULT 0,
    next_at    bigint NOT NULL,
    state      text COLLATE "C" NOT NULL DEFAULT 'pending',
    last_error text COLLATE "C",
    created_at text COLLATE "C" NOT NULL
);
CREATE INDEX outbox_due ON outbox (state, next_at);

CREATE TABLE unresolved (
    cloud_id  text COLLATE "C" NOT NULL,
    member_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (cloud_id, member_id)
);

CREATE TABLE member_change (
    group_id    text COLLATE "C" NOT NULL,
    member_id   text COLLATE "C" NOT NULL,
    member_type text COLLATE "C" NOT NULL,
    added       boolean NOT NULL,
    PRIMARY KEY (group_id, member_id)
);
"#;

/// Version 13: each cached group's member digest and count (see the SQLite store's version 13),
/// filled for the groups already cached by [`fill_member_digests`].
const V13: &str = r#"
ALTER TABLE cloud_object ADD COLUMN member_digest text COLLATE "C", ADD COLUMN member_count bigint;
"#;

/// The recorded version: `None` when the database has no schema yet.
pub(crate) async fn version(c: &impl GenericClient) -> Result<Option<i64>, StateError> {
    let op = || "read the schema version".to_string();
    let present: bool = {
        let row = c
            // A target's session (see `ha::pg::connect`) looks in its own schema only: the
            // `[ad]` target's table further down its search path is not its state. Any other
            // session finds the table on its search path, as its statements do.
            .query_one(
                "SELECT CASE WHEN current_setting('writeback.target_schema', true) <> ''
                    THEN to_regclass(format('%I.writeback_schema', current_schema()))
                    ELSE to_regclass('writeback_schema') END IS NOT NULL",
                &[],
            )
            .await
            .map_err(pg(op))?;
        get(&row, 0, &op)?
    };
    if !present {
        return Ok(None);
    }
    let row = c
        .query_opt("SELECT version FROM writeback_schema", &[])
        .await
        .map_err(pg(op))?;
    match row {
        Some(r) => Ok(Some(get(&r, 0, &op)?)),
        // A table without its row was not left by this build (it writes both at once).
        None => Err(StateError::PgBadSchema {
            found: None,
            supported: SCHEMA_VERSION,
        }),
    }
}

/// Creates the schema when the database has none; refuses another version. The caller's
/// transaction makes it all or nothing.
pub(crate) async fn ensure(t: &Transaction<'_>) -> Result<(), StateError> {
    t.execute("SELECT pg_advisory_xact_lock($1)", &[&CREATE_LOCK])
        .await
        .map_err(pg(|| "lock the schema creation".into()))?;
    match version(t).await? {
        Some(found) if found == SCHEMA_VERSION => Ok(()),
        Some(12) => {
            t.batch_execute(V13)
                .await
                .map_err(pg(|| "migrate the schema to version 13".into()))?;
            fill_member_digests(t).await?;
            t.execute(
                "UPDATE writeback_schema SET version = $1",
                &[&SCHEMA_VERSION],
            )
            .await
            .map_err(pg(|| "write the schema version".into()))?;
            Ok(())
        }
        Some(found) if found > SCHEMA_VERSION => Err(StateError::PgNewerSchema {
            found,
            supported: SCHEMA_VERSION,
        }),
        Some(found) => Err(StateError::PgBadSchema {
            found: Some(found),
            supported: SCHEMA_VERSION,
        }),
        None => {
            t.batch_execute(&format!("{V12}{V13}"))
                .await
                .map_err(pg(|| format!("create schema version {SCHEMA_VERSION}")))?;
            t.execute(
                "INSERT INTO writeback_schema (version) VALUES ($1)",
                &[&SCHEMA_VERSION],
            )
            .await
            .map_err(pg(|| "write the schema version".into()))?;
            Ok(())
        }
    }
}

/// Stores every cached group's member digest and count, computed from the member rows read in
/// group order, a page at a time (the migration to version 13).
async fn fill_member_digests(t: &Transaction<'_>) -> Result<(), StateError> {
    use crate::state::MemberDigest;
    let op = || "compute the cached groups' member digests".to_string();
    t.execute(
        "UPDATE cloud_object SET member_digest = $1, member_count = 0 WHERE kind = 'group'",
        &[&MemberDigest::default().to_hex()],
    )
    .await
    .map_err(pg(op))?;
    let write = t
        .prepare(
            "UPDATE cloud_object SET member_digest = $2, member_count = $3
             WHERE kind = 'group' AND id = $1",
        )
        .await
        .map_err(pg(op))?;
    // Keyset pages of whole groups' rows: a page ends at a group boundary it then resumes from.
    const PAGE: i64 = 50_000;
    let mut after: Option<(String, String)> = None;
    let mut current: Option<(String, MemberDigest, i64)> = None;
    loop {
        let (g0, m0) = after.clone().unzip();
        let rows = t
            .query(
                "SELECT group_id, member_id FROM cloud_member
                 WHERE $1::text IS NULL OR (group_id, member_id) > ($1, $2)
                 ORDER BY group_id, member_id LIMIT $3",
                &[&g0, &m0, &PAGE],
            )
            .await
            .map_err(pg(op))?;
        for r in &rows {
            let group: String = get(r, 0, &op)?;
            let member: String = get(r, 1, &op)?;
            if current.as_ref().is_some_and(|(g, _, _)| *g != group) {
                if let Some((g, d, n)) = current.take() {
                    t.execute(&write, &[&g, &d.to_hex(), &n])
                        .await
                        .map_err(pg(op))?;
                }
            }
            let (_, d, n) =
                current.get_or_insert_with(|| (group.clone(), MemberDigest::default(), 0));
            d.add(&member);
            *n += 1;
            after = Some((group, member));
        }
        if (rows.len() as i64) < PAGE {
            break;
        }
    }
    if let Some((g, d, n)) = current {
        t.execute(&write, &[&g, &d.to_hex(), &n])
            .await
            .map_err(pg(op))?;
    }
    Ok(())
}
