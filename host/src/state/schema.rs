//! The schema and its migrations, versioned with `PRAGMA user_version`.
//!
//! Migration N (1-based) moves a file from version N-1 to N. Append, never edit: a released
//! migration is part of every state file written since. Keep to SQL that the operator's
//! `sqlite3` (3.40) understands, since they open these files by hand.

use rusqlite::{Connection, TransactionBehavior};

use super::error::{db_path, SqlContext, StateError};

const V1: &str = r#"
CREATE TABLE delta_link (
    kind       TEXT NOT NULL PRIMARY KEY CHECK (kind IN ('group', 'user')),
    link       TEXT NOT NULL CHECK (link <> ''),
    updated_at TEXT NOT NULL
) STRICT;

CREATE TABLE cloud_object (
    kind         TEXT    NOT NULL CHECK (kind IN ('group', 'user')),
    id           TEXT    NOT NULL,
    props_json   TEXT    NOT NULL CHECK (json_valid(props_json)),
    soft_deleted INTEGER NOT NULL DEFAULT 0 CHECK (soft_deleted IN (0, 1)),
    updated_at   TEXT    NOT NULL,
    PRIMARY KEY (kind, id)
) STRICT;

CREATE TABLE cloud_member (
    group_id    TEXT NOT NULL,
    member_id   TEXT NOT NULL,
    member_type TEXT NOT NULL,
    PRIMARY KEY (group_id, member_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE anchor (
    cloud_id    TEXT NOT NULL PRIMARY KEY,
    object_guid TEXT NOT NULL,
    dn          TEXT NOT NULL,
    rule        TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) STRICT;

-- One AD object belongs to one cloud id. An empty GUID means "not known yet" and may repeat.
CREATE UNIQUE INDEX anchor_object_guid ON anchor (object_guid) WHERE object_guid <> '';

CREATE TABLE applied (
    cloud_id   TEXT NOT NULL PRIMARY KEY,
    hash       TEXT NOT NULL,
    applied_at TEXT NOT NULL
) STRICT;

CREATE TABLE run (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    mode        TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    status      TEXT,
    stats_json  TEXT CHECK (stats_json IS NULL OR json_valid(stats_json))
) STRICT;

CREATE TABLE run_event (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES run (id) ON DELETE CASCADE,
    at          TEXT NOT NULL,
    cloud_id    TEXT NOT NULL,
    action      TEXT NOT NULL,
    dn          TEXT NOT NULL,
    detail_json TEXT NOT NULL CHECK (json_valid(detail_json)),
    outcome     TEXT NOT NULL
) STRICT;

CREATE INDEX run_event_by_run ON run_event (run_id);
CREATE INDEX run_event_by_cloud_id ON run_event (cloud_id);
"#;

/// Version 2: what a cycle needs to cost what changed, not what exists. `pending` holds the
/// cloud ids whose change has not been applied yet (written with the delta that brought it, kept
/// by dry runs and failures, cleared once applied); `cloud_member_by_member` finds the groups of
/// a changed user or group without a scan; `meta` holds small facts such as the fingerprint of
/// the rules the applied hashes were computed with.
const V2: &str = r#"
CREATE INDEX cloud_member_by_member ON cloud_member (member_id);

CREATE TABLE pending (
    kind TEXT NOT NULL CHECK (kind IN ('group', 'user')),
    id   TEXT NOT NULL,
    PRIMARY KEY (kind, id)
) STRICT, WITHOUT ROWID;

CREATE TABLE meta (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
"#;

/// Version 3: what keeps mistakes from spreading. `quarantine` holds the groups that failed
/// (rule error, refusal, AD said no) and when each is tried again (unix seconds, backoff per
/// group); `intent` the creates about to be written, so an object a killed host created before
/// recording it is still known as its own; `held_delete` the deletes the threshold held back and
/// whether an operator approved them.
const V3: &str = r#"
CREATE TABLE quarantine (
    cloud_id TEXT    NOT NULL PRIMARY KEY,
    error    TEXT    NOT NULL,
    failures INTEGER NOT NULL CHECK (failures > 0),
    first_at TEXT    NOT NULL,
    last_at  TEXT    NOT NULL,
    retry_at INTEGER NOT NULL
) STRICT;

CREATE INDEX quarantine_by_retry ON quarantine (retry_at);

CREATE TABLE intent (
    cloud_id TEXT    NOT NULL PRIMARY KEY,
    dn       TEXT    NOT NULL,
    run_id   INTEGER NOT NULL
) STRICT;

CREATE TABLE held_delete (
    cloud_id TEXT    NOT NULL PRIMARY KEY,
    dn       TEXT    NOT NULL,
    approved INTEGER NOT NULL DEFAULT 0 CHECK (approved IN (0, 1)),
    held_at  TEXT    NOT NULL
) STRICT;
"#;

/// Version 4: what `writeback audit` and the history's compaction read. `run_event_by_at` serves
/// time windows (`--since`, `--until`) and ages events out; `run_event_by_dn` finds a group's
/// events by the DN they were written at (case-insensitively, as AD compares DNs).
const V4: &str = r#"
CREATE INDEX run_event_by_at ON run_event (at);
CREATE INDEX run_event_by_dn ON run_event (dn COLLATE NOCASE);
"#;

/// Version 5: `delta_link.select_list`, the `$select` of the query a link came from (names
/// comma-joined; NULL for links stored before it was recorded). A link only reports the
/// properties its first query selected, so a different select starts the round afresh.
const V5: &str = r#"
ALTER TABLE delta_link ADD COLUMN select_list TEXT;
"#;

/// Version 6: `held_removal`, member removals held back by the removal threshold, with the
/// fingerprint of the exact set of members and whether an operator approved it; `released`,
/// the groups an operator stopped managing (`writeback release`), their AD objects left as
/// they were.
const V6: &str = r#"
CREATE TABLE released (
    cloud_id    TEXT PRIMARY KEY,
    dn          TEXT NOT NULL,
    object_guid TEXT NOT NULL,
    rule        TEXT NOT NULL,
    released_at TEXT NOT NULL
) STRICT;

CREATE TABLE held_removal (
    cloud_id     TEXT PRIMARY KEY,
    dn           TEXT NOT NULL,
    removals     INTEGER NOT NULL,
    members      INTEGER NOT NULL,
    removal_hash TEXT NOT NULL,
    approved     INTEGER NOT NULL DEFAULT 0,
    held_at      TEXT NOT NULL
) STRICT;
"#;

/// Version 7: `leaving`, owned groups a rule no longer wants written: kept as they are
/// (`delete_at` NULL) or deleted at `delete_at` (Unix seconds); `since` is when they left.
const V7: &str = r#"
CREATE TABLE leaving (
    cloud_id  TEXT PRIMARY KEY,
    since     INTEGER NOT NULL,
    delete_at INTEGER
) STRICT;
CREATE INDEX leaving_due ON leaving (delete_at) WHERE delete_at IS NOT NULL;
"#;

/// Version 8: `link`, the links of Writeback's groups into groups it does not own (a rule's
/// `member_of`) that Writeback added: the only ones it ever removes.
const V8: &str = r#"
CREATE TABLE link (
    cloud_id  TEXT NOT NULL,
    target_dn TEXT NOT NULL,
    added_at  TEXT NOT NULL,
    PRIMARY KEY (cloud_id, target_dn)
) STRICT, WITHOUT ROWID;
"#;

/// Version 9: `outbox`, trigger calls recorded with the AD write that fires them, delivered at
/// least once: pending (due at `next_at`, Unix seconds) until delivered, or given up after the
/// configured attempts. `key` is the idempotency key receivers see.
const V9: &str = r#"
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY,
    key        TEXT NOT NULL UNIQUE,
    rule       TEXT NOT NULL,
    hook       TEXT NOT NULL,
    cloud_id   TEXT NOT NULL,
    event_json TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    INTEGER NOT NULL,
    state      TEXT NOT NULL DEFAULT 'pending',
    last_error TEXT,
    created_at TEXT NOT NULL
) STRICT;
CREATE INDEX outbox_due ON outbox (state, next_at);
"#;

/// Version 10: `unresolved`, each group's members not found in AD when it was last compared
/// (kept up to date by member changes written alone): `writeback status` counts them.
const V10: &str = r#"
CREATE TABLE unresolved (
    cloud_id  TEXT NOT NULL,
    member_id TEXT NOT NULL,
    PRIMARY KEY (cloud_id, member_id)
) STRICT, WITHOUT ROWID;
"#;

/// Version 11: `member_change`, each pending group's member changes since it was last applied
/// (net: a change undone before the apply is forgotten), so a member change is written as a
/// small modify instead of a comparison of the whole group. `added` is 1 for a member gained.
const V11: &str = r#"
CREATE TABLE member_change (
    group_id    TEXT NOT NULL,
    member_id   TEXT NOT NULL,
    member_type TEXT NOT NULL,
    added       INTEGER NOT NULL CHECK (added IN (0, 1)),
    PRIMARY KEY (group_id, member_id)
) STRICT, WITHOUT ROWID;
"#;

/// Version 12: devices in the cloud cache (`kind` 'device', read by their own delta link and
/// marked pending like users), so a group's device members can be written by their AD
/// computer objects. SQLite cannot change a CHECK constraint in place: the three tables that
/// name the kinds are copied into new ones with the same columns (created under their own
/// names, so the schema reads as it would in a new file).
const V12: &str = r#"
ALTER TABLE delta_link RENAME TO delta_link_v11;
CREATE TABLE delta_link (
    kind        TEXT NOT NULL PRIMARY KEY CHECK (kind IN ('group', 'user', 'device')),
    link        TEXT NOT NULL CHECK (link <> ''),
    updated_at  TEXT NOT NULL,
    select_list TEXT
) STRICT;
INSERT INTO delta_link (kind, link, updated_at, select_list)
    SELECT kind, link, updated_at, select_list FROM delta_link_v11;
DROP TABLE delta_link_v11;

ALTER TABLE cloud_object RENAME TO cloud_object_v11;
CREATE TABLE cloud_object (
    kind         TEXT    NOT NULL CHECK (kind IN ('group', 'user', 'device')),
    id           TEXT    NOT NULL,
    props_json   TEXT    NOT NULL CHECK (json_valid(props_json)),
    soft_deleted INTEGER NOT NULL DEFAULT 0 CHECK (soft_deleted IN (0, 1)),
    updated_at   TEXT    NOT NULL,
    PRIMARY KEY (kind, id)
) STRICT;
INSERT INTO cloud_object (kind, id, props_json, soft_deleted, updated_at)
    SELECT kind, id, props_json, soft_deleted, updated_at FROM cloud_object_v11;
DROP TABLE cloud_object_v11;

ALTER TABLE pending RENAME TO pending_v11;
CREATE TABLE pending (
    kind TEXT NOT NULL CHECK (kind IN ('group', 'user', 'device')),
    id   TEXT NOT NULL,
    PRIMARY KEY (kind, id)
) STRICT, WITHOUT ROWID;
INSERT INTO pending (kind, id) SELECT kind, id FROM pending_v11;
DROP TABLE pending_v11;
"#;

/// Version 13: each cached group's member set as a digest (`state::member_digest`, 64 hex
/// digits) and a count, kept with every member change, so a cycle fingerprints a big group's
/// members without reading them. Filled for the groups already cached by
/// [`MEMBER_DIGEST_VERSION`]'s step in [`migrate`]; NULL for users and devices.
const V13: &str = r#"
ALTER TABLE cloud_object ADD COLUMN member_digest TEXT;
ALTER TABLE cloud_object ADD COLUMN member_count INTEGER;
"#;

/// The version whose migration also computes the cached groups' member digests (in Rust:
/// SQLite has no SHA-256).
const MEMBER_DIGEST_VERSION: usize = 13;

/// Migration scripts, index i moving version i to i + 1.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11, V12, V13];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the file to [`SCHEMA_VERSION`]. A current file is only read, so opening it next to a
/// running host takes no write lock; otherwise the migration runs in one IMMEDIATE transaction
/// that re-reads the version, so two processes opening a fresh file cannot both migrate it.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StateError> {
    if check_version(conn)? == SCHEMA_VERSION {
        return Ok(());
    }
    let path = db_path(conn);
    let sql_err = |op: &str| {
        let (path, op) = (path.clone(), op.to_string());
        move |cause| StateError::Sql { path, op, cause }
    };
    // Inside the transaction of a run that is undone, a savepoint of it.
    let tx = if conn.is_autocommit() {
        conn.transaction_with_behavior(TransactionBehavior::Immediate)
            .map(super::WriteTx::Own)
    } else {
        conn.savepoint().map(super::WriteTx::Nested)
    }
    .map_err(sql_err("begin migration"))?;
    let found = check_version(&tx)?;
    let start = usize::try_from(found).unwrap_or(MIGRATIONS.len());
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(start) {
        let to = i + 1;
        tx.execute_batch(sql)
            .ctx(&tx, || format!("migrate schema to version {to}"))?;
        if to == MEMBER_DIGEST_VERSION {
            super::cache::fill_member_digests(&tx)?;
        }
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .ctx(&tx, || "write schema version".into())?;
    tx.commit().map_err(sql_err("commit migration"))
}

/// A database as a build that wrote schema `version` made it (tests of migrations).
#[cfg(test)]
pub(crate) fn create_at(conn: &Connection, version: usize) -> rusqlite::Result<()> {
    for sql in MIGRATIONS.iter().take(version) {
        conn.execute_batch(sql)?;
    }
    conn.pragma_update(None, "user_version", version as i64)
}

/// The file's schema version, refused when this build cannot handle it.
fn check_version(conn: &Connection) -> Result<i64, StateError> {
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .ctx(conn, || "read schema version".into())?;
    if found > SCHEMA_VERSION {
        return Err(StateError::NewerSchema {
            path: db_path(conn),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found < 0 {
        return Err(StateError::BadSchemaVersion {
            path: db_path(conn),
            found,
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_5_keeps_links_and_leaves_their_select_unrecorded() -> anyhow::Result<()> {
        let mut conn = Connection::open_in_memory()?;
        for sql in &MIGRATIONS[..4] {
            conn.execute_batch(sql)?;
        }
        conn.pragma_update(None, "user_version", 4)?;
        conn.execute(
            "INSERT INTO delta_link (kind, link, updated_at) VALUES ('group', 'L1', 't')",
            [],
        )?;
        migrate(&mut conn)?;
        let (link, select): (String, Option<String>) = conn.query_row(
            "SELECT link, select_list FROM delta_link WHERE kind = 'group'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        assert_eq!((link.as_str(), select), ("L1", None));
        Ok(())
    }

    #[test]
    fn version_12_keeps_the_cache_and_takes_devices() -> anyhow::Result<()> {
        let mut conn = Connection::open_in_memory()?;
        create_at(&conn, 11)?;
        conn.execute_batch(
            "INSERT INTO delta_link (kind, link, updated_at, select_list) VALUES ('user', 'L', 't', 'id');
             INSERT INTO cloud_object (kind, id, props_json, soft_deleted, updated_at)
                 VALUES ('group', 'g1', '{\"displayName\":\"G\"}', 1, 't');
             INSERT INTO pending (kind, id) VALUES ('user', 'u1');",
        )?;
        migrate(&mut conn)?;
        let link: (String, String, Option<String>) =
            conn.query_row("SELECT kind, link, select_list FROM delta_link", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        assert_eq!(link, ("user".into(), "L".into(), Some("id".into())));
        let g: (String, i64) = conn.query_row(
            "SELECT props_json, soft_deleted FROM cloud_object WHERE kind = 'group' AND id = 'g1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        assert_eq!(g, ("{\"displayName\":\"G\"}".into(), 1));
        let pending: i64 = conn.query_row("SELECT count(*) FROM pending", [], |r| r.get(0))?;
        assert_eq!(pending, 1);
        conn.execute_batch(
            "INSERT INTO cloud_object (kind, id, props_json, updated_at) VALUES ('device', 'd1', '{}', 't');
             INSERT INTO pending (kind, id) VALUES ('device', 'd1');
             INSERT INTO delta_link (kind, link, updated_at) VALUES ('device', 'D', 't');",
        )?;
        let refused = conn.execute(
            "INSERT INTO pending (kind, id) VALUES ('contact', 'c1')",
            [],
        );
        assert!(refused.is_err(), "the kinds are still checked");
        Ok(())
    }

    #[test]
    fn version_13_computes_the_cached_groups_member_digests() -> anyhow::Result<()> {
        use crate::state::member_digest::MemberDigest;
        let mut conn = Connection::open_in_memory()?;
        create_at(&conn, 12)?;
        conn.execute_batch(
            "INSERT INTO cloud_object (kind, id, props_json, updated_at) VALUES
                 ('group', 'g1', '{}', 't'), ('group', 'g2', '{}', 't'),
                 ('group', 'g3', '{}', 't'), ('user', 'u1', '{}', 't');
             INSERT INTO cloud_member (group_id, member_id, member_type) VALUES
                 ('g1', 'u1', 'user'), ('g1', 'u2', 'user'), ('g3', 'u2', 'user');",
        )?;
        migrate(&mut conn)?;
        let row = |kind: &str, id: &str| -> anyhow::Result<(Option<String>, Option<i64>)> {
            Ok(conn.query_row(
                "SELECT member_digest, member_count FROM cloud_object WHERE kind = ?1 AND id = ?2",
                [kind, id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        };
        let digest = |ids: &[&str]| Some(MemberDigest::of(ids.iter().copied()).to_hex());
        assert_eq!(row("group", "g1")?, (digest(&["u1", "u2"]), Some(2)));
        assert_eq!(row("group", "g2")?, (digest(&[]), Some(0)));
        assert_eq!(row("group", "g3")?, (digest(&["u2"]), Some(1)));
        assert_eq!(row("user", "u1")?, (None, None));
        Ok(())
    }
}
