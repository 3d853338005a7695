//! Errors of the state store. Every message names the state file and the operation, so an
//! operator reading a log line knows which file to open with `sqlite3` and what failed. The
//! underlying error is also each variant's `source()`, so a caller walking the chain finds it
//! (the binary prints each cause once).

use rusqlite::Connection;

/// What the in-memory database is called in messages.
pub(crate) const IN_MEMORY: &str = "(in memory)";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: directory {dir} does not exist (create it before starting)")]
    MissingDirectory { path: String, dir: String },

    #[error("state file {path}: {op}: {cause}{}", recovery(cause))]
    Sql {
        path: String,
        op: String,
        #[source]
        cause: rusqlite::Error,
    },

    #[error(
        "state file {path}: schema version {found} is newer than this build supports ({supported})"
    )]
    NewerSchema {
        path: String,
        found: i64,
        supported: i64,
    },

    #[error("state file {path}: schema version {found} is not valid (set by hand?)")]
    BadSchemaVersion { path: String, found: i64 },

    #[error("state file {path}: table {table}, id {id}: unreadable {column}: {cause}")]
    CorruptRow {
        path: String,
        table: &'static str,
        id: String,
        column: &'static str,
        #[source]
        cause: serde_json::Error,
    },

    #[error("state file {path}: table {table}, id {id}: cannot encode {column}: {cause}")]
    Encode {
        path: String,
        table: &'static str,
        id: String,
        column: &'static str,
        #[source]
        cause: serde_json::Error,
    },

    /// A file operation on or beside the state file (looking it up, old plan copies).
    #[error("state file {path}: {op}: {cause}")]
    Io {
        path: String,
        op: String,
        #[source]
        cause: std::io::Error,
    },

    #[error("state file {path}: {op}: run {run_id} does not exist")]
    UnknownRun {
        path: String,
        op: &'static str,
        run_id: i64,
    },

    /// A statement on the PostgreSQL state failed (see `state::pg`).
    #[error("PostgreSQL state: {op}: {cause}")]
    Postgres {
        op: String,
        #[source]
        cause: tokio_postgres::Error,
    },

    #[error(
        "PostgreSQL state: schema version {found} is newer than this build supports ({supported})"
    )]
    PgNewerSchema { found: i64, supported: i64 },

    /// A version this build never wrote and has no migration from (no row, or an older one).
    #[error("PostgreSQL state: schema version {found:?} is not one this build can use ({supported}); set by hand?")]
    PgBadSchema { found: Option<i64>, supported: i64 },

    /// A value PostgreSQL holds that the store never writes (out of range for its type).
    #[error("PostgreSQL state: table {table}, id {id}: unreadable {column}: {message}")]
    PgBadValue {
        table: &'static str,
        id: String,
        column: &'static str,
        message: String,
    },

    /// The PostgreSQL store is synchronous over async I/O: it needs the multi-thread runtime.
    #[error("PostgreSQL state: {0}")]
    PgRuntime(String),

    /// The write transaction's fence failed: another instance holds the lease now.
    #[error("PostgreSQL state: {0}")]
    Lease(#[source] crate::ha::HaError),

    /// `writeback approve` with an id that is not the set waiting for approval.
    #[error("no held deletes with id {id}: {}", match waiting {
        Some(w) => format!("the set waiting for approval now is {w}; review it with `writeback plan` and approve that id"),
        None => "no delete is waiting for approval".to_string(),
    })]
    NoSuchHeldSet { id: String, waiting: Option<String> },
}

/// What to do about a state file SQLite says is damaged (not a database, malformed): the
/// cache, anchors and history cannot be trusted, and the AD objects are taken back by `adopt`.
fn recovery(cause: &rusqlite::Error) -> &'static str {
    match cause.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
            " (the file is damaged: stop Writeback, move the file and its -wal and -shm files \
             aside, then run `writeback adopt --dry-run` to see what would be taken back and \
             `writeback adopt` to take it; see README.md, \"Recovering the state file\")"
        }
        // SQLite says only "disk I/O error" when the disk is full at open (the -shm file).
        Some(rusqlite::ErrorCode::SystemIoFailure) => {
            " (check that the disk holding the file is not full or read-only)"
        }
        _ => "",
    }
}

/// The file behind a connection, as messages show it.
pub(crate) fn db_path(conn: &Connection) -> String {
    match conn.path() {
        Some(p) if !p.is_empty() => p.to_string(),
        _ => IN_MEMORY.to_string(),
    }
}

/// Attaches the file and the operation to a SQLite error.
pub(crate) trait SqlContext<T> {
    fn ctx(self, conn: &Connection, op: impl FnOnce() -> String) -> Result<T, StateError>;
}

/// Rows read by `op`, keyed by `key` (the cloud id of held sets, ...).
pub(crate) fn keyed<T>(
    conn: &Connection,
    op: impl Fn() -> String,
    rows: impl Iterator<Item = rusqlite::Result<T>>,
    key: impl Fn(&T) -> String,
) -> Result<std::collections::BTreeMap<String, T>, StateError> {
    let mut out = std::collections::BTreeMap::new();
    for row in rows {
        let row = row.ctx(conn, &op)?;
        out.insert(key(&row), row);
    }
    Ok(out)
}

impl<T> SqlContext<T> for rusqlite::Result<T> {
    fn ctx(self, conn: &Connection, op: impl FnOnce() -> String) -> Result<T, StateError> {
        self.map_err(|cause| StateError::Sql {
            path: db_path(conn),
            op: op(),
            cause,
        })
    }
}

pub(crate) fn corrupt(
    conn: &Connection,
    table: &'static str,
    id: impl ToString,
    column: &'static str,
    cause: serde_json::Error,
) -> StateError {
    StateError::CorruptRow {
        path: db_path(conn),
        table,
        id: id.to_string(),
        column,
        cause,
    }
}

pub(crate) fn encode(
    conn: &Connection,
    table: &'static str,
    id: impl ToString,
    column: &'static str,
    cause: serde_json::Error,
) -> StateError {
    StateError::Encode {
        path: db_path(conn),
        table,
        id: id.to_string(),
        column,
        cause,
    }
}

#[cfg(test)]
mod recovery_tests {
    use super::*;

    fn sql(code: i32) -> StateError {
        StateError::Sql {
            path: "/var/lib/writeback/state.db".into(),
            op: "enable WAL journal".into(),
            cause: rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None),
        }
    }

    #[test]
    fn a_damaged_file_names_the_recovery_and_other_errors_do_not() {
        for damaged in [rusqlite::ffi::SQLITE_NOTADB, rusqlite::ffi::SQLITE_CORRUPT] {
            let text = sql(damaged).to_string();
            assert!(
                text.starts_with("state file /var/lib/writeback/state.db: "),
                "{text}"
            );
            assert!(text.contains("`writeback adopt --dry-run`"), "{text}");
        }
        let full = sql(rusqlite::ffi::SQLITE_FULL).to_string();
        assert!(!full.contains("adopt"), "{full}");
        let io = sql(rusqlite::ffi::SQLITE_IOERR).to_string();
        assert!(io.contains("not full or read-only"), "{io}");
    }

    #[test]
    fn the_cause_is_the_source_too() {
        let e = sql(rusqlite::ffi::SQLITE_FULL);
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert!(source.is_some_and(|s| e.to_string().contains(&s)), "{e}");
    }
}
