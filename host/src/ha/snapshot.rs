//! Read-only verbs on a shared state (`status`, `history`, `audit`, `explain`, `plan`): they
//! work on a snapshot, a copy of the PostgreSQL state into a private SQLite file, taken from
//! one consistent read of the database. The database is never written, nothing waits for the
//! writer, and the verbs run the same code as on a state file of one's own.
//!
//! The copy costs time and disk in proportion to the state (the cloud cache above all): see
//! docs/OPERATIONS.md, "High availability".

use std::path::PathBuf;

use super::instance::{connect, JoinError};
use crate::config::PostgresConfig;
use crate::state::pg::copy::CopyError;
use crate::state::pg::{stored_schema, PgStore};
use crate::state::{StateError, Store};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error("state.postgres: {0}")]
    State(#[from] StateError),
    #[error("state.postgres: the snapshot for reading: {0}")]
    Copy(#[from] CopyError),
    #[error("the snapshot's scratch folder: {0}")]
    Scratch(#[from] std::io::Error),
    #[error("state.postgres: the database holds no state yet: no instance has synced into it (run `writeback sync` or start the daemon)")]
    Empty,
}

/// The state as it is now, in a private SQLite file removed with the value.
pub struct Snapshot {
    pub store: Store,
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

/// Takes a snapshot. Call from the multi-thread runtime.
pub async fn take(pg: &PostgresConfig) -> Result<Snapshot, SnapshotError> {
    let client = connect(pg).await?;
    // A database without the schema has nothing to show; the check writes nothing.
    if stored_schema(&client).await?.is_none() {
        return Err(SnapshotError::Empty);
    }
    let mut source = PgStore::open(client, None)?;
    let dir = tempfile::Builder::new()
        .prefix("writeback-snapshot-")
        .tempdir()?;
    let path = dir.path().join("state.db");
    let mut store = Store::open(&path)?;
    source.copy_into(&mut store)?;
    Ok(Snapshot {
        store,
        _dir: dir,
        path,
    })
}
