//! The SQLite state store: delta links, the cloud cache, anchors, applied state, run history.
//!
//! One file, readable with the operator's `sqlite3`: tables `delta_link`, `cloud_object`,
//! `cloud_member`, `anchor`, `intent`, `applied`, `pending`, `meta`, `quarantine`, `held_delete`,
//! `run`, `run_event` (see `schema.rs`). WAL journal with
//! `synchronous=FULL`, so a commit that returned survives a kill -9 or a power cut, and a killed
//! host restarts from the last committed delta link with a cache that matches it. (The pages of
//! a delta round are committed without a sync of their own; the commit that stores the round's
//! link syncs them all.)
//!
//! A dry run works inside a transaction that is never committed ([`Store::open_undone`]) and
//! leaves the file as it found it.
//!
//! The store is synchronous: async callers own it on one thread (or use `spawn_blocking`).
//! Each single-row write is its own commit (one fsync); batch many through
//! [`Store::with_transaction`] and the functions in [`tx`].

mod anchors;
mod cache;
pub(crate) mod clock;
mod error;
mod held;
pub(crate) mod held_removals;
mod leaving;
mod links;
mod member_changes;
mod member_digest;
mod outbox;
mod pending;
pub mod pg;
mod quarantine;
mod released;
mod run_kind;
pub(crate) mod runs;
mod schema;
#[cfg(test)]
mod tests;
pub mod undone;
mod unresolved;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, Savepoint, Transaction, TransactionBehavior};

pub use anchors::Anchor;
pub use cache::{CacheChanges, GroupHead, ObjectKind, RoundProgress, StoredLink};
pub use clock::{now_rfc3339, rfc3339_at, rfc3339_at_time};
pub use error::StateError;
pub use held::{set_id as held_set_id, short_id, HeldDelete};
pub use held_removals::HeldRemovalRow;
pub use leaving::Leaving;
pub use member_changes::MemberChanges;
pub use member_digest::MemberDigest;
pub use outbox::{NewCall, OutboxCounts, OutboxEntry};
pub use released::Released;

/// What `writeback approve` let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approved {
    Deletes,
    MemberRemovals,
}
pub use quarantine::{backoff_secs, Quarantined, Seen};
pub use run_kind::{RunMode, RunStatus};
pub use runs::{
    AuditEvent, Compaction, EventQuery, EventRecord, EventSubjects, RunRecord, FOLDED_RUNS,
    INTERRUPTED,
};
pub use schema::SCHEMA_VERSION;
pub use unresolved::UnresolvedTotal;

use crate::graph::model::{CloudObject, DeltaItem, DeltaRound};
use error::{db_path, SqlContext};

/// Writes usable inside [`Store::with_transaction`] (pass the transaction; it derefs to a
/// `Connection`). Same behaviour as the `Store` methods of the same name.
pub mod tx {
    pub use super::anchors::{
        put_anchor, put_applied, put_intent, remove_anchor, remove_applied, remove_intent,
    };
    pub use super::held::replace as replace_held;
    pub use super::links::{put as put_link, remove as remove_link, remove_all as remove_links};
    pub use super::member_changes::forget_settled as forget_settled_member_changes;
    pub use super::outbox::{delivered as call_delivered, failed as call_failed, put as put_call};
    pub use super::pending::{
        clear_all_pending, clear_pending, mark_pending, remove_meta, set_meta,
    };
    pub use super::quarantine::{record_failure, release};
    pub use super::runs::record_event;
    pub use super::unresolved::{edit as edit_unresolved, set as set_unresolved};
}

/// How long a statement waits for another process's lock (an operator's `sqlite3` session,
/// a second host by mistake) before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The state store. Owns its connection; `Send`, not `Sync`.
pub struct Store {
    conn: Connection,
    /// The directory of a scratch file a dry run works in (see [`Store::open_undone`]),
    /// removed after the connection closes (fields drop in order).
    scratch: Option<tempfile::TempDir>,
}

/// How a store's connection was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    File,
    Memory,
    /// A file, inside a transaction that is never committed.
    Undone,
}

impl Store {
    /// Opens or creates the state file and brings its schema up to date. The parent directory
    /// must exist: creating it silently would hide a mistyped path and start from scratch.
    pub fn open(path: &Path) -> Result<Store, StateError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(StateError::MissingDirectory {
                    path: shown,
                    dir: dir.display().to_string(),
                });
            }
        }
        private_file(path).map_err(|cause| StateError::Io {
            path: shown.clone(),
            op: "create or check".into(),
            cause,
        })?;
        let flags = rusqlite::OpenFlags::default() | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(path, flags).map_err(|cause| StateError::Sql {
            path: shown.clone(),
            op: "open".into(),
            cause,
        })?;
        Self::setup(conn, Opening::File)
    }

    /// Opens the state file for a run whose every write is undone (`writeback plan`): one
    /// IMMEDIATE transaction spans the run (the store's own transactions become savepoints in
    /// it) and is rolled back when the store is dropped or the process dies, so the file, its
    /// schema version included, is left as it was; nothing is copied. A file that does not
    /// exist yet is not created: the run gets an empty scratch file (what a first sync starts
    /// from; on disk, as a first download of a big tenant needs) in a directory beside it,
    /// removed with the store. The write lock is held for the run: take the state lock first,
    /// as every run.
    pub fn open_undone(path: &Path) -> Result<Store, StateError> {
        let shown = path.display().to_string();
        // An unreadable path is an error, not a missing file: planning from an empty state
        // would show every group as a create.
        let exists = path.try_exists().map_err(|cause| StateError::Io {
            path: shown.clone(),
            op: "look up the state file".into(),
            cause,
        })?;
        if !exists {
            let parent = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            if !parent.is_dir() {
                return Err(StateError::MissingDirectory {
                    path: shown,
                    dir: parent.display().to_string(),
                });
            }
            // Named as plans of earlier versions named their copies: one a kill leaves behind
            // is removed by the next plan ([`undone::remove_old_copies`]).
            let scratch = tempfile::Builder::new()
                .prefix(undone::OLD_COPY_PREFIX)
                .tempdir_in(parent)
                .map_err(|cause| StateError::Io {
                    path: shown,
                    op: format!("create a scratch directory in {}", parent.display()),
                    cause,
                })?;
            let mut store = Self::open(&scratch.path().join("state.db"))?;
            store.scratch = Some(scratch);
            return Ok(store);
        }
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
            | rusqlite::OpenFlags::SQLITE_OPEN_URI
            | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(path, flags).map_err(|cause| StateError::Sql {
            path: shown,
            op: "open".into(),
            cause,
        })?;
        Self::setup(conn, Opening::Undone)
    }

    /// A private in-memory store (tests).
    pub fn open_in_memory() -> Result<Store, StateError> {
        let conn = Connection::open_in_memory().map_err(|cause| StateError::Sql {
            path: error::IN_MEMORY.into(),
            op: "open".into(),
            cause,
        })?;
        Self::setup(conn, Opening::Memory)
    }

    fn setup(mut conn: Connection, how: Opening) -> Result<Store, StateError> {
        let file = how != Opening::Memory;
        conn.busy_timeout(BUSY_TIMEOUT)
            .ctx(&conn, || "set busy timeout".into())?;
        if file {
            // The first statement that reads the file: a non-database file fails here.
            let mode: String = conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
                .ctx(&conn, || "enable WAL journal".into())?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StateError::Sql {
                    path: db_path(&conn),
                    op: format!("enable WAL journal (got journal_mode={mode})"),
                    cause: rusqlite::Error::InvalidQuery,
                });
            }
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .ctx(&conn, || "set synchronous=FULL".into())?;
        conn.pragma_update(None, "foreign_keys", true)
            .ctx(&conn, || "enable foreign keys".into())?;
        if how == Opening::Undone {
            // After the pragmas, which a transaction would ignore; the migration, if any,
            // is undone with the rest.
            conn.execute_batch("BEGIN IMMEDIATE")
                .ctx(&conn, || "begin the run that is undone".into())?;
        }
        schema::migrate(&mut conn)?;
        cache::ensure_member_index(&conn)?;
        Ok(Store {
            conn,
            scratch: None,
        })
    }

    /// The file behind the store (`(in memory)` for in-memory stores).
    pub fn path(&self) -> String {
        db_path(&self.conn)
    }

    /// The schema version recorded in the file.
    pub fn schema_version(&self) -> Result<i64, StateError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .ctx(&self.conn, || "read schema version".into())
    }

    // --- delta links -----------------------------------------------------------------------

    pub fn delta_link(&self, kind: ObjectKind) -> Result<Option<String>, StateError> {
        cache::delta_link(&self.conn, kind)
    }

    /// The link of `kind` with the `$select` of the query it came from.
    pub fn stored_link(&self, kind: ObjectKind) -> Result<Option<StoredLink>, StateError> {
        cache::stored_link(&self.conn, kind)
    }

    /// When the delta link of `kind` was last stored (RFC 3339).
    pub fn delta_link_updated(&self, kind: ObjectKind) -> Result<Option<String>, StateError> {
        cache::delta_link_updated(&self.conn, kind)
    }

    /// Forgets the link, so the next round of this kind is full.
    pub fn clear_delta_link(&mut self, kind: ObjectKind) -> Result<(), StateError> {
        cache::clear_delta_link(&self.conn, kind)
    }

    // --- cloud cache ------------------------------------------------------------------------

    /// Applies one merged delta round and stores its deltaLink in one transaction.
    ///
    /// - `removed == Some(Deleted)`: the row and its member rows are deleted.
    /// - `removed == Some(Changed)`: `soft_deleted = true`, properties and members kept
    ///   (present properties overlaid); an object not cached is left out.
    /// - otherwise upsert, `soft_deleted = false` (a restored object is reported as changed):
    ///   incremental rounds overlay present properties (JSON null stored as null), add
    ///   `members_added` and delete `members_removed`; full rounds replace the properties and
    ///   the member set with what the round carries.
    /// - `round.full`: cached objects of the kind absent from the round are deleted.
    ///
    /// Members are kept for groups only.
    pub fn apply_delta(
        &mut self,
        kind: ObjectKind,
        round: &DeltaRound,
    ) -> Result<CacheChanges, StateError> {
        let tx = self.write_tx(|| format!("apply {kind} delta round"))?;
        let changes = cache::apply_delta(&tx, kind, round)?;
        tx.commit()
            .ctx(&self.conn, || format!("commit {kind} delta round"))?;
        Ok(changes)
    }

    /// Writes one chunk of a round that is read page by page (no link yet), in one
    /// transaction; see [`Store::finish_round`]. A kill between chunks leaves the old link, so
    /// the next cycle replays the round: chunks are idempotent.
    pub fn apply_round_chunk(
        &mut self,
        kind: ObjectKind,
        items: &BTreeMap<String, DeltaItem>,
        progress: &mut RoundProgress,
    ) -> Result<(), StateError> {
        // A chunk's commit need not reach the disk on its own: until `finish_round` stores the
        // link (with synchronous=FULL, which syncs every chunk before it), a lost chunk is one
        // the next cycle reads again. WAL keeps commits in order, so what survives a power cut
        // is always a prefix of the round with the old link. (A run that is undone commits
        // nothing: its level stays, and may not change inside its transaction.)
        if !self.conn.is_autocommit() {
            return self.write_chunk(kind, items, progress);
        }
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .ctx(&self.conn, || {
                "set synchronous=NORMAL for a delta page".into()
            })?;
        let written = self.write_chunk(kind, items, progress);
        let restored = self
            .conn
            .pragma_update(None, "synchronous", "FULL")
            .ctx(&self.conn, || "set synchronous=FULL".into());
        written.and(restored)
    }

    fn write_chunk(
        &mut self,
        kind: ObjectKind,
        items: &BTreeMap<String, DeltaItem>,
        progress: &mut RoundProgress,
    ) -> Result<(), StateError> {
        let tx = self.write_tx(|| format!("apply {kind} delta page"))?;
        cache::apply_chunk(&tx, kind, items, progress)?;
        tx.commit()
            .ctx(&self.conn, || format!("commit {kind} delta page"))
    }

    /// Ends a chunked round: a full round drops what it did not carry; the link is stored
    /// with `select`, the `$select` of the round's query (see [`Store::stored_link`]).
    pub fn finish_round(
        &mut self,
        kind: ObjectKind,
        delta_link: &str,
        select: &str,
        progress: &mut RoundProgress,
    ) -> Result<(), StateError> {
        let tx = self.write_tx(|| format!("finish {kind} delta round"))?;
        cache::finish_round(&tx, kind, delta_link, Some(select), progress)?;
        tx.commit()
            .ctx(&self.conn, || format!("commit {kind} delta round"))
    }

    /// The cached objects with these ids, by key (ids not cached are left out).
    pub fn load_by_ids<'a>(
        &self,
        kind: ObjectKind,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, CloudObject>, StateError> {
        cache::load_by_ids(&self.conn, kind, ids)
    }

    /// The cached groups with these ids without their members (see [`GroupHead`]).
    pub fn load_heads<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, GroupHead>, StateError> {
        cache::load_heads(&self.conn, ids)
    }

    /// Which of `ids` are cached members of `group`.
    pub fn members_among<'a>(
        &self,
        group: &str,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeSet<String>, StateError> {
        cache::members_among(&self.conn, group, ids)
    }

    /// The member changes noted for these groups since each was last applied (groups without
    /// any are left out).
    pub fn member_changes<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, MemberChanges>, StateError> {
        member_changes::of(&self.conn, ids)
    }

    /// The cached groups that hold any of `member_ids` directly.
    pub fn groups_containing<'a>(
        &self,
        member_ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeSet<String>, StateError> {
        cache::groups_containing(&self.conn, member_ids)
    }

    /// Visits the cached objects of a kind in id order, `chunk` at a time.
    pub fn for_each_chunk(
        &self,
        kind: ObjectKind,
        chunk: usize,
        f: impl FnMut(Vec<CloudObject>) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        cache::for_each_chunk(&self.conn, kind, chunk, f)
    }

    /// How many objects of a kind are cached.
    pub fn count_objects(&self, kind: ObjectKind) -> Result<usize, StateError> {
        cache::count(&self.conn, kind)
    }

    // --- pending changes and facts -----------------------------------------------------------

    /// Ids of a kind whose change is not applied yet.
    pub fn pending(&self, kind: ObjectKind) -> Result<BTreeSet<String>, StateError> {
        pending::pending(&self.conn, kind)
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StateError> {
        pending::meta(&self.conn, key)
    }

    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StateError> {
        pending::set_meta(&self.conn, key, value)
    }

    /// All cached objects of a kind, with members for groups. Two queries, whatever the size.
    pub fn load_objects(
        &self,
        kind: ObjectKind,
    ) -> Result<BTreeMap<String, CloudObject>, StateError> {
        cache::load_objects(&self.conn, kind)
    }

    /// Visits the cached objects of a kind in id order without holding them all in memory.
    pub fn for_each_object(
        &self,
        kind: ObjectKind,
        f: impl FnMut(CloudObject) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        cache::for_each_object(&self.conn, kind, f)
    }

    pub fn load_object(
        &self,
        kind: ObjectKind,
        id: &str,
    ) -> Result<Option<CloudObject>, StateError> {
        cache::load_object(&self.conn, kind, id)
    }

    // --- anchors and applied hashes ---------------------------------------------------------

    pub fn anchors(&self) -> Result<BTreeMap<String, Anchor>, StateError> {
        anchors::anchors(&self.conn)
    }

    /// Inserts or replaces the anchor of `a.cloud_id` (an empty `updated_at` is stamped now).
    /// Fails when a non-empty `a.object_guid` is anchored to another cloud id.
    pub fn put_anchor(&mut self, a: &Anchor) -> Result<(), StateError> {
        anchors::put_anchor(&self.conn, a)
    }

    pub fn remove_anchor(&mut self, cloud_id: &str) -> Result<(), StateError> {
        anchors::remove_anchor(&self.conn, cloud_id)
    }

    pub fn anchor(&self, cloud_id: &str) -> Result<Option<Anchor>, StateError> {
        anchors::anchor(&self.conn, cloud_id)
    }

    /// How many groups Writeback owns.
    pub fn anchor_count(&self) -> Result<usize, StateError> {
        anchors::anchor_count(&self.conn)
    }

    /// Every anchored cloud id (ids only).
    pub fn anchor_ids(&self) -> Result<BTreeSet<String>, StateError> {
        anchors::anchor_ids(&self.conn)
    }

    pub fn applied_hash(&self, cloud_id: &str) -> Result<Option<String>, StateError> {
        anchors::applied_hash(&self.conn, cloud_id)
    }

    pub fn applied_hashes(&self) -> Result<BTreeMap<String, String>, StateError> {
        anchors::applied_hashes(&self.conn)
    }

    pub fn put_applied(&mut self, cloud_id: &str, hash: &str) -> Result<(), StateError> {
        anchors::put_applied(&self.conn, cloud_id, hash)
    }

    pub fn remove_applied(&mut self, cloud_id: &str) -> Result<(), StateError> {
        anchors::remove_applied(&self.conn, cloud_id)
    }

    /// The create about to be written for `cloud_id`, if one was recorded and not settled.
    pub fn intent(&self, cloud_id: &str) -> Result<Option<String>, StateError> {
        anchors::intent(&self.conn, cloud_id)
    }

    /// The cloud ids with an unsettled intent.
    pub fn intent_ids(&self) -> Result<Vec<String>, StateError> {
        anchors::intent_ids(&self.conn)
    }

    // --- quarantine and held deletes ----------------------------------------------------------

    /// The quarantined groups whose wait is over at `now` (unix seconds).
    pub fn quarantine_due(&self, now: i64) -> Result<BTreeSet<String>, StateError> {
        quarantine::due(&self.conn, now)
    }

    pub fn quarantined(&self) -> Result<BTreeMap<String, Quarantined>, StateError> {
        quarantine::all(&self.conn)
    }

    pub fn quarantine_count(&self) -> Result<usize, StateError> {
        quarantine::count(&self.conn)
    }

    pub fn held_deletes(&self) -> Result<BTreeMap<String, HeldDelete>, StateError> {
        held::held(&self.conn)
    }

    /// The held set waiting for approval: its id and size.
    pub fn held_waiting(&self) -> Result<Option<(String, usize)>, StateError> {
        held::waiting(&self.conn)
    }

    /// Approves the held set `id` (the one shown by the last run); how many deletes it covers.
    pub fn approve_held(&mut self, id: &str) -> Result<usize, StateError> {
        let tx = self.write_tx(|| format!("approve held deletes {id}"))?;
        let n = held::approve(&tx, id)?;
        tx.commit()
            .ctx(&self.conn, || format!("commit approval {id}"))?;
        Ok(n)
    }

    /// Approves the held set `id`: the deletes waiting for approval, or the member removals.
    /// Returns what it approved and how many.
    pub fn approve_any(&mut self, id: &str) -> Result<(Approved, usize), StateError> {
        let tx = self.write_tx(|| format!("approve held set {id}"))?;
        let result = held::choose(id, held::waiting(&tx)?, held_removals::waiting(&tx)?)?;
        match result.0 {
            Approved::MemberRemovals => held_removals::approve(&tx, id).map(|_| ())?,
            Approved::Deletes => held::approve(&tx, id).map(|_| ())?,
        }
        tx.commit()
            .ctx(&self.conn, || format!("commit approval {id}"))?;
        Ok(result)
    }

    /// Trigger calls due at `now`, oldest first, at most `limit`.
    pub fn calls_due(&self, now: i64, limit: usize) -> Result<Vec<OutboxEntry>, StateError> {
        outbox::due(&self.conn, now, limit)
    }

    /// Whether a trigger call is due at `now`.
    pub fn any_call_due(&self, now: i64) -> Result<bool, StateError> {
        outbox::any_due(&self.conn, now)
    }

    /// Records the outcome of delivering call `id`: delivered (`Ok`), to be tried again at
    /// `next_at`, or given up (`next_at` = `None`).
    pub fn settle_call(
        &mut self,
        id: i64,
        outcome: Result<(), (&str, Option<i64>)>,
    ) -> Result<(), StateError> {
        match outcome {
            Ok(()) => outbox::delivered(&self.conn, id),
            Err((error, next_at)) => outbox::failed(&self.conn, id, error, next_at),
        }
    }

    pub fn call_counts(&self) -> Result<OutboxCounts, StateError> {
        outbox::counts(&self.conn)
    }

    pub fn calls_given_up(&self, limit: usize) -> Result<Vec<OutboxEntry>, StateError> {
        outbox::given_up(&self.conn, limit)
    }

    /// The links into groups Writeback does not own that it added, for `ids`.
    pub fn links_of<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, Vec<String>>, StateError> {
        links::of(&self.conn, ids)
    }

    /// Owned groups a rule no longer wants written: kept, or deleted later.
    pub fn leaving(&self) -> Result<BTreeMap<String, Leaving>, StateError> {
        leaving::all(&self.conn)
    }

    /// Leaving groups whose delete is due at `now` (Unix seconds).
    pub fn leaving_due(&self, now: i64) -> Result<BTreeSet<String>, StateError> {
        leaving::due(&self.conn, now)
    }

    /// Records the groups leaving (`Some`) or back (`None`), and forgets the rows of groups no
    /// longer owned; one transaction.
    pub fn settle_leaving(
        &mut self,
        changes: &BTreeMap<String, Option<Leaving>>,
    ) -> Result<(), StateError> {
        let tx = self.write_tx(|| "record leaving groups".into())?;
        for (id, l) in changes {
            match l {
                Some(l) => leaving::put(&tx, id, *l)?,
                None => leaving::remove(&tx, id)?,
            }
        }
        leaving::forget_unowned(&tx)?;
        tx.commit()
            .ctx(&self.conn, || "commit leaving groups".into())
    }

    /// The groups an operator released.
    pub fn released(&self) -> Result<BTreeMap<String, Released>, StateError> {
        released::all(&self.conn)
    }

    /// Stops managing the groups of `anchors` without touching AD: each anchor (with its
    /// applied hash and any intent) is replaced by a `released` row, and the release is in the
    /// audit trail of run `run_id`; one transaction.
    pub fn release(&mut self, run_id: i64, anchors: &[Anchor]) -> Result<(), StateError> {
        let tx = self.write_tx(|| "release groups".into())?;
        for a in anchors {
            released::put(&tx, a)?;
            leaving::remove(&tx, &a.cloud_id)?;
            anchors::remove_anchor(&tx, &a.cloud_id)?;
            anchors::remove_applied(&tx, &a.cloud_id)?;
            anchors::remove_intent(&tx, &a.cloud_id)?;
            runs::record_event(
                &tx,
                run_id,
                &AuditEvent {
                    cloud_id: a.cloud_id.clone(),
                    action: "release".into(),
                    dn: a.dn.clone(),
                    detail: serde_json::json!({ "rule": a.rule, "object_guid": a.object_guid }),
                    outcome: "ok".into(),
                },
            )?;
        }
        tx.commit()
            .ctx(&self.conn, || "commit released groups".into())
    }

    /// Forgets the release of `ids` (they were adopted again).
    pub fn unrelease(&mut self, ids: &[String]) -> Result<(), StateError> {
        if ids.is_empty() {
            return Ok(());
        }
        let tx = self.write_tx(|| "take released groups back".into())?;
        for id in ids {
            released::remove(&tx, id)?;
        }
        tx.commit()
            .ctx(&self.conn, || "commit taking released groups back".into())
    }

    /// Every group's held member removals.
    pub fn held_removals(&self) -> Result<BTreeMap<String, HeldRemovalRow>, StateError> {
        held_removals::held(&self.conn)
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

    /// The id of the member-removal set waiting for approval, and how many groups it holds.
    pub fn waiting_removals(&self) -> Result<Option<(String, usize)>, StateError> {
        held_removals::waiting(&self.conn)
    }

    /// Replaces the held member removals (see [`held_removals::replace`]).
    pub fn replace_held_removals(&mut self, rows: &[HeldRemovalRow]) -> Result<(), StateError> {
        let tx = self.write_tx(|| "hold member removals".into())?;
        held_removals::replace(&tx, rows)?;
        tx.commit()
            .ctx(&self.conn, || "commit held member removals".into())
    }

    // --- runs and audit ---------------------------------------------------------------------

    /// Starts a run record (`mode`: "sync", "plan", "full", ...) and returns its id.
    pub fn begin_run(&mut self, mode: RunMode) -> Result<i64, StateError> {
        runs::begin_run(&self.conn, mode.as_str())
    }

    pub fn finish_run(
        &mut self,
        run_id: i64,
        status: RunStatus,
        stats: &serde_json::Value,
    ) -> Result<(), StateError> {
        runs::finish_run(&self.conn, run_id, status.as_str(), stats)
    }

    pub fn record_event(&mut self, run_id: i64, ev: &AuditEvent) -> Result<(), StateError> {
        runs::record_event(&self.conn, run_id, ev)
    }

    /// Members not found in AD at each managed group's last comparison, added up.
    pub fn unresolved_total(&self) -> Result<UnresolvedTotal, StateError> {
        unresolved::total(&self.conn)
    }

    /// The last `n` runs, newest first.
    pub fn recent_runs(&self, n: usize) -> Result<Vec<RunRecord>, StateError> {
        runs::recent_runs(&self.conn, n)
    }

    /// Runs newest first, filtered by start time (RFC 3339) and status, at most `n`.
    pub fn runs_where(
        &self,
        since: Option<&str>,
        status: Option<&str>,
        n: usize,
    ) -> Result<Vec<RunRecord>, StateError> {
        runs::runs_where(&self.conn, since, status, n)
    }

    pub fn run(&self, run_id: i64) -> Result<Option<RunRecord>, StateError> {
        runs::run(&self.conn, run_id)
    }

    pub fn run_events(&self, run_id: i64) -> Result<Vec<EventRecord>, StateError> {
        runs::run_events(&self.conn, run_id)
    }

    /// Marks runs a killed host left unfinished as [`INTERRUPTED`]; call once at start-up.
    pub fn close_interrupted_runs(&mut self) -> Result<usize, StateError> {
        runs::close_interrupted_runs(&self.conn)
    }

    /// Keeps the newest `keep` runs (and their events), deletes the rest.
    pub fn prune_runs(&mut self, keep: usize) -> Result<usize, StateError> {
        runs::prune_runs(&self.conn, keep)
    }

    /// Ages out the audit events older than `retention_days` (and the runs left without any),
    /// and folds streaks of quiet runs older than the newest `keep_recent` into one row each;
    /// see [`runs::compact_history`]. One transaction.
    pub fn compact_history(
        &mut self,
        retention_days: u32,
        keep_recent: usize,
    ) -> Result<Compaction, StateError> {
        let cutoff =
            time::OffsetDateTime::now_utc() - time::Duration::days(i64::from(retention_days));
        self.compact_history_before(cutoff, keep_recent)
    }

    /// [`Store::compact_history`] with the retention given as the instant events older than
    /// which go.
    pub fn compact_history_before(
        &mut self,
        cutoff: time::OffsetDateTime,
        keep_recent: usize,
    ) -> Result<Compaction, StateError> {
        let tx = self.write_tx(|| "compact the run history".into())?;
        let done = runs::compact_history(&tx, cutoff, keep_recent)?;
        outbox::prune_given_up(&tx, &clock::format_rfc3339(cutoff))?;
        tx.commit()
            .ctx(&self.conn, || "commit the compacted run history".into())?;
        Ok(done)
    }

    /// Visits the audit events `q` selects until `f` breaks (see [`EventQuery`]).
    pub fn for_each_event(
        &self,
        q: &EventQuery,
        f: impl FnMut(EventRecord) -> std::ops::ControlFlow<()>,
    ) -> Result<(), StateError> {
        runs::for_each_event(&self.conn, q, f)
    }

    /// The cloud ids of the audit events recorded at `dn` (case-insensitively).
    pub fn event_cloud_ids_at(&self, dn: &str) -> Result<BTreeSet<String>, StateError> {
        runs::event_cloud_ids_at(&self.conn, dn)
    }

    /// The cached groups named `name`, as `(id, displayName)` sorted by id.
    pub fn cached_groups_named(&self, name: &str) -> Result<Vec<(String, String)>, StateError> {
        runs::cached_groups_named(&self.conn, name)
    }

    // --- batching ---------------------------------------------------------------------------

    /// Runs `f` in one write transaction: committed when it returns `Ok`, rolled back on `Err`.
    /// Use the functions in [`tx`] inside.
    pub fn with_transaction<T>(
        &mut self,
        f: impl FnOnce(&Connection) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let tx = self.write_tx(|| "begin transaction".into())?;
        let out = f(&tx)?;
        tx.commit()
            .ctx(&self.conn, || "commit transaction".into())?;
        Ok(out)
    }

    /// An IMMEDIATE transaction: takes the write lock up front, so a concurrent writer makes us
    /// wait (busy_timeout) instead of failing halfway with SQLITE_BUSY. Inside a run that is
    /// undone ([`Store::open_undone`]) it is a savepoint of that run's transaction.
    fn write_tx(&mut self, op: impl FnOnce() -> String) -> Result<WriteTx<'_>, StateError> {
        let path = db_path(&self.conn);
        let tx = if self.conn.is_autocommit() {
            self.conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map(WriteTx::Own)
        } else {
            self.conn.savepoint().map(WriteTx::Nested)
        };
        tx.map_err(|cause| StateError::Sql {
            path,
            op: op(),
            cause,
        })
    }
}

/// A write transaction of its own, or a savepoint in the transaction a run that is undone keeps
/// open; either is rolled back when dropped uncommitted.
pub(crate) enum WriteTx<'a> {
    Own(Transaction<'a>),
    Nested(Savepoint<'a>),
}

impl WriteTx<'_> {
    pub(crate) fn commit(self) -> rusqlite::Result<()> {
        match self {
            WriteTx::Own(t) => t.commit(),
            WriteTx::Nested(s) => s.commit(),
        }
    }
}

impl std::ops::Deref for WriteTx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            WriteTx::Own(t) => t,
            WriteTx::Nested(s) => s,
        }
    }
}

/// Makes sure the state file is the service's alone before SQLite opens it: created 0600 (SQLite
/// gives its `-wal` and `-shm` files the same mode), an existing file or its companions others
/// can read tightened to 0600, and never reached through a symbolic link (one planted in the
/// state directory would redirect the writes).
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let tighten = |f: &std::fs::File| -> std::io::Result<()> {
        let mode = f.metadata()?.permissions().mode();
        if mode & 0o077 != 0 {
            f.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))?;
        }
        Ok(())
    };
    tighten(&file)?;
    for ext in ["-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(ext);
        match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(std::path::PathBuf::from(p))
        {
            Ok(f) => tighten(&f)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
