//! A private copy of the state file for a run that must leave it as it found it (`writeback
//! plan`): the run pulls deltas, marks pending ids and records its run in the copy, and the
//! copy is thrown away.
//!
//! The copy is made with `VACUUM INTO` from a read-only connection: one read transaction, so it
//! is consistent even with a writer at work, and the state file is never migrated, re-indexed
//! or switched to WAL by the copy (a newer build's plan leaves the file readable by the build
//! that runs the host). It lives in a temporary directory beside the state file (the disk
//! provisioned for the state, not a possibly small tmpfs) and goes with the [`Snapshot`], also
//! when the run fails.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use tempfile::TempDir;

use super::error::{SqlContext, StateError};
use super::{Store, BUSY_TIMEOUT, SCHEMA_VERSION};

/// Prefix of the temporary directory beside the state file (a plan killed with -9 leaves one).
pub const SNAPSHOT_DIR_PREFIX: &str = ".writeback-plan-";

/// A private copy of a state file; dropping it removes the copy and its WAL files.
pub struct Snapshot {
    path: PathBuf,
    dir: TempDir,
}

impl Snapshot {
    /// Copies the state file at `state` into a new temporary directory beside it. A state file
    /// that does not exist yet gives an empty copy (what a first sync would start from), and
    /// is not created; its directory must exist, as for [`Store::open`].
    pub fn take(state: &Path) -> Result<Snapshot, StateError> {
        let shown = state.display().to_string();
        let parent = match state.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !parent.is_dir() {
            return Err(StateError::MissingDirectory {
                path: shown,
                dir: parent.display().to_string(),
            });
        }
        let dir = tempfile::Builder::new()
            .prefix(SNAPSHOT_DIR_PREFIX)
            .tempdir_in(parent)
            .map_err(|cause| StateError::Io {
                path: shown.clone(),
                op: format!("create a temporary directory in {}", parent.display()),
                cause,
            })?;
        let name = state.file_name().unwrap_or("state.db".as_ref());
        let path = dir.path().join(name);
        // An unreadable path is an error, not a missing file: planning from an empty state
        // would show every group as a create.
        let exists = state.try_exists().map_err(|cause| StateError::Io {
            path: shown.clone(),
            op: "look up the state file".into(),
            cause,
        })?;
        if exists {
            copy_file(state, &path)?;
        }
        Ok(Snapshot { path, dir })
    }

    /// Removes the copies beside `state` that runs killed before their end left (Ctrl-C or
    /// kill -9 skip the clean-up); returns how many. Call it only with the state lock held,
    /// which every run holds while its copy exists, so none of them is in use.
    pub fn remove_stale(state: &Path) -> Result<usize, StateError> {
        let shown = state.display().to_string();
        let parent = match state.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let io = |op: String| {
            let path = shown.clone();
            move |cause| StateError::Io { path, op, cause }
        };
        let mut removed = 0;
        let entries = match std::fs::read_dir(parent) {
            Ok(e) => e,
            // Nothing to clean; `take` reports the missing directory.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io(format!("list {}", parent.display()))(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io(format!("list {}", parent.display())))?;
            let stale = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(SNAPSHOT_DIR_PREFIX));
            let is_dir = entry
                .file_type()
                .map_err(io(format!("look up {}", entry.path().display())))?
                .is_dir();
            if stale && is_dir {
                std::fs::remove_dir_all(entry.path())
                    .map_err(io(format!("remove {}", entry.path().display())))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The copy (it may not exist yet: [`Snapshot::open`] creates it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary directory holding the copy.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Opens the copy as a store (brought up to date there, if it is older).
    pub fn open(&self) -> Result<Store, StateError> {
        Store::open(&self.path)
    }
}

/// Writes a consistent copy of the state file `src` to `dest`, which must not exist. `src` is
/// opened read-only; a file newer than this build is refused here, naming `src`.
pub fn copy_file(src: &Path, dest: &Path) -> Result<(), StateError> {
    let shown = src.display().to_string();
    let copy_op = || format!("copy to {}", dest.display());
    let Some(dest_text) = dest.to_str() else {
        return Err(StateError::Io {
            path: shown,
            op: copy_op(),
            cause: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the destination path is not valid UTF-8",
            ),
        });
    };
    // Without CREATE: a file that vanished is an error, not a new empty database.
    let conn = Connection::open_with_flags(
        src,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|cause| StateError::Sql {
        path: shown.clone(),
        op: "open read-only for a copy".into(),
        cause,
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .ctx(&conn, || "set busy timeout".into())?;
    // The first read of the file: a file that is not a database fails here, naming it.
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .ctx(&conn, || "read schema version".into())?;
    if found > SCHEMA_VERSION {
        return Err(StateError::NewerSchema {
            path: shown,
            found,
            supported: SCHEMA_VERSION,
        });
    }
    conn.execute("VACUUM INTO ?1", [dest_text])
        .ctx(&conn, copy_op)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::model::{DeltaItem, DeltaRound, MemberRef};
    use crate::state::{Anchor, AuditEvent, ObjectKind};
    use serde_json::json;

    const TABLES: &[&str] = &[
        "delta_link",
        "cloud_object",
        "cloud_member",
        "pending",
        "meta",
        "anchor",
        "applied",
        "run",
        "run_event",
    ];

    /// Every row of every table, as text, in a stable order.
    fn rows(s: &Store) -> Vec<String> {
        let mut out = Vec::new();
        for t in TABLES {
            let mut stmt = s
                .conn
                .prepare(&format!("SELECT * FROM {t} ORDER BY 1, 2"))
                .expect("prepare");
            let n = stmt.column_count();
            let mut q = stmt.query([]).expect("query");
            while let Some(r) = q.next().expect("row") {
                let cols: Vec<String> = (0..n)
                    .map(|i| format!("{:?}", r.get_ref(i).expect("column")))
                    .collect();
                out.push(format!("{t}: {}", cols.join(" | ")));
            }
        }
        out
    }

    fn group(id: &str, name: &str, members: &[&str]) -> DeltaItem {
        DeltaItem {
            id: id.into(),
            props: json!({ "displayName": name })
                .as_object()
                .cloned()
                .expect("object"),
            members_added: members
                .iter()
                .map(|m| {
                    (
                        m.to_string(),
                        MemberRef {
                            odata_type: "#microsoft.graph.user".into(),
                            id: m.to_string(),
                        },
                    )
                })
                .collect(),
            ..Default::default()
        }
    }

    /// A state file with a row in every table.
    fn seeded(path: &Path) -> anyhow::Result<Store> {
        let mut s = Store::open(path)?;
        let items = [group("g1", "One", &["u1", "u2"]), group("g2", "Two", &[])];
        s.apply_delta(
            ObjectKind::Group,
            &DeltaRound {
                items: items.into_iter().map(|i| (i.id.clone(), i)).collect(),
                delta_link: "https://graph/delta?token=L1".into(),
                full: true,
            },
        )?;
        s.put_anchor(&Anchor {
            cloud_id: "g1".into(),
            object_guid: "guid-1".into(),
            dn: "CN=One,OU=Groups".into(),
            rule: "10-security.rhai".into(),
            updated_at: String::new(),
        })?;
        s.put_applied("g1", "hash-1")?;
        s.set_meta("rules_fingerprint", "fp-1")?;
        let run = s.begin_run(crate::state::RunMode::Sync)?;
        s.record_event(
            run,
            &AuditEvent {
                cloud_id: "g1".into(),
                action: "create".into(),
                dn: "CN=One,OU=Groups".into(),
                detail: json!({}),
                outcome: "ok".into(),
            },
        )?;
        s.finish_run(run, crate::state::RunStatus::Ok, &json!({}))?;
        Ok(s)
    }

    #[test]
    fn the_copy_holds_the_same_rows_and_its_writes_stay_in_it() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state.db");
        let before = rows(&seeded(&state)?);
        assert!(
            before.iter().any(|r| r.starts_with("pending: ")),
            "{before:#?}"
        );
        assert!(
            before.iter().any(|r| r.starts_with("run_event: ")),
            "{before:#?}"
        );
        // Closed: the last connection folded the WAL into the file, whose bytes must not move.
        let bytes = std::fs::read(&state)?;

        let snap = Snapshot::take(&state)?;
        assert!(snap.dir().starts_with(dir.path()), "{:?}", snap.dir());
        let mut copy = snap.open()?;
        assert_eq!(copy.schema_version()?, SCHEMA_VERSION);
        assert_eq!(rows(&copy), before);

        // What a dry run writes: a delta round, pending marks, meta, a run.
        copy.apply_delta(
            ObjectKind::Group,
            &DeltaRound {
                items: [("g3".to_string(), group("g3", "Three", &["u3"]))].into(),
                delta_link: "https://graph/delta?token=L2".into(),
                full: false,
            },
        )?;
        copy.set_meta("rules_fingerprint", "fp-2")?;
        copy.remove_anchor("g1")?;
        let run = copy.begin_run(crate::state::RunMode::Plan)?;
        copy.finish_run(run, crate::state::RunStatus::Ok, &json!({}))?;
        assert_ne!(rows(&copy), before);
        drop(copy);

        let original = Store::open(&state)?;
        assert_eq!(rows(&original), before);
        drop(original);
        assert_eq!(
            std::fs::read(&state)?,
            bytes,
            "the state file's bytes changed"
        );

        let tmp = snap.dir().to_path_buf();
        drop(snap);
        assert!(!tmp.exists(), "{tmp:?} left behind");
        Ok(())
    }

    #[test]
    fn copies_left_by_killed_runs_are_removed_and_nothing_else() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state.db");
        drop(seeded(&state)?);
        let left = Snapshot::take(&state)?;
        // What Ctrl-C leaves: the directory outlives the process.
        let kept = left.dir.keep();
        std::fs::write(
            dir.path().join(".writeback-plan-notes"),
            b"a file, not a copy",
        )?;
        std::fs::create_dir(dir.path().join("backups"))?;
        assert_eq!(Snapshot::remove_stale(&state)?, 1);
        assert!(!kept.exists(), "{kept:?} left behind");
        assert!(dir.path().join(".writeback-plan-notes").exists());
        assert!(dir.path().join("backups").is_dir());
        assert!(state.exists());
        assert_eq!(Snapshot::remove_stale(&state)?, 0);
        Ok(())
    }

    #[test]
    fn a_missing_state_file_gives_an_empty_copy_and_stays_missing() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state.db");
        let snap = Snapshot::take(&state)?;
        let copy = snap.open()?;
        assert!(rows(&copy).is_empty());
        assert_eq!(copy.delta_link(ObjectKind::User)?, None);
        drop(copy);
        assert!(!state.exists(), "the plan created the state file");
        Ok(())
    }

    #[test]
    fn a_missing_directory_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("nope").join("state.db");
        match Snapshot::take(&state) {
            Err(StateError::MissingDirectory { path, dir }) => {
                assert!(path.ends_with("nope/state.db"), "{path}");
                assert!(dir.ends_with("nope"), "{dir}");
            }
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("a missing directory was accepted"),
        }
    }

    #[test]
    fn a_newer_or_foreign_file_is_refused_naming_the_state_file() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state.db");
        drop(seeded(&state)?);
        let raw = Connection::open(&state)?;
        raw.pragma_update(None, "user_version", SCHEMA_VERSION + 1)?;
        drop(raw);
        match Snapshot::take(&state) {
            Err(e @ StateError::NewerSchema { .. }) => {
                assert!(e.to_string().contains(&state.display().to_string()), "{e}");
            }
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("a newer schema was copied"),
        }

        let junk = dir.path().join("junk.db");
        std::fs::write(
            &junk,
            b"not a database, just text that is long enough to fill a page",
        )?;
        match Snapshot::take(&junk) {
            Err(e @ StateError::Sql { .. }) => {
                assert!(e.to_string().contains(&junk.display().to_string()), "{e}");
            }
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("a file that is not a database was copied"),
        }
        Ok(())
    }
}
