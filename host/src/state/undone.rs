//! What a dry run (`writeback plan`) leaves of the state file: nothing. It runs on the file
//! itself, inside one transaction that is never committed ([`Store::open_undone`]): its delta
//! rounds, pending marks and run record are visible to it alone and rolled back at its end,
//! also when it is killed. Before the first sync there is no file: the run works in an empty
//! scratch file in a directory beside where it will be. Plans of earlier versions worked on a
//! copy in such a directory; [`remove_old_copies`] clears what a stopped plan left.

use std::path::Path;

use super::error::StateError;

/// Prefix of the scratch directories of plans (and of the copies plans of earlier versions
/// made).
pub const OLD_COPY_PREFIX: &str = ".writeback-plan-";

/// Removes the scratch directories beside `state` that plans stopped before their end left;
/// returns how many. Call it with the state lock held (a running plan holds it).
pub fn remove_old_copies(state: &Path) -> Result<usize, StateError> {
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
        // Nothing to clean; the store reports a missing directory.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(format!("list {}", parent.display()))(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io(format!("list {}", parent.display())))?;
        let stale = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(OLD_COPY_PREFIX));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::model::{DeltaItem, DeltaRound, MemberRef};
    use crate::state::{Anchor, AuditEvent, ObjectKind, Store, SCHEMA_VERSION};
    use rusqlite::Connection;
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
    fn an_undone_runs_writes_never_reach_the_file() -> anyhow::Result<()> {
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

        let mut copy = Store::open_undone(&state)?;
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
        // A round read page by page, as big tenants are.
        let mut progress = crate::state::RoundProgress::new(false);
        copy.apply_round_chunk(
            ObjectKind::Group,
            &[("g4".to_string(), group("g4", "Four", &[]))].into(),
            &mut progress,
        )?;
        copy.finish_round(
            ObjectKind::Group,
            "https://graph/delta?token=L3",
            "id",
            &mut progress,
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
        // Nothing was put beside it either.
        let beside: Vec<_> = std::fs::read_dir(dir.path())?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .filter(|n| n.to_str().is_some_and(|n| n.starts_with(OLD_COPY_PREFIX)))
            .collect();
        assert!(beside.is_empty(), "{beside:?}");
        Ok(())
    }

    /// What a process beside a plan sees (`status`, the console, the daemon): readers are
    /// not held up and read the committed state; a writer waits for the plan's end (SQLite's
    /// busy timeout), then its write lands and the plan's rollback takes nothing of it.
    #[test]
    fn beside_an_undone_run_readers_go_on_and_a_writer_waits_for_its_end() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state.db");
        let before = rows(&seeded(&state)?);
        let mut plan = Store::open_undone(&state)?;
        plan.set_meta("rules_fingerprint", "planned")?;

        let started = std::time::Instant::now();
        let reader = Store::open(&state)?;
        assert_eq!(rows(&reader), before, "a reader saw the plan's writes");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "a reader waited {:?}",
            started.elapsed()
        );
        drop(reader);

        // A writer that does not wait is refused while the plan runs...
        let hurried = Connection::open(&state)?;
        hurried.busy_timeout(std::time::Duration::from_millis(50))?;
        let refused = hurried.execute(
            "INSERT INTO meta (key, value) VALUES ('daemon', 'hurried')",
            [],
        );
        assert!(
            matches!(
                refused,
                Err(rusqlite::Error::SqliteFailure(ref e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
            ),
            "{refused:?}"
        );
        drop(hurried);
        // ... and one that waits (a store's busy timeout) writes once the plan is over.
        let path = state.clone();
        let writer = std::thread::spawn(move || -> Result<(), StateError> {
            Store::open(&path)?.set_meta("daemon", "waited")
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            !writer.is_finished(),
            "the writer did not wait for the plan"
        );
        drop(plan);
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("the writer panicked"))??;

        let after = Store::open(&state)?;
        assert_eq!(after.meta("daemon")?.as_deref(), Some("waited"));
        assert_eq!(after.meta("rules_fingerprint")?.as_deref(), Some("fp-1"));
        Ok(())
    }

    #[test]
    fn an_older_file_is_migrated_for_the_run_and_left_at_its_version() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state.db");
        // The file as the build before the last migration left it.
        let older = usize::try_from(SCHEMA_VERSION - 1)?;
        let raw = Connection::open(&state)?;
        raw.pragma_update(None, "journal_mode", "WAL")?;
        crate::state::schema::create_at(&raw, older)?;
        let objects = |c: &Connection| -> anyhow::Result<Vec<String>> {
            let mut stmt = c.prepare("SELECT name FROM sqlite_master ORDER BY name")?;
            let names = stmt.query_map([], |r| r.get(0))?;
            Ok(names.collect::<Result<Vec<String>, _>>()?)
        };
        let before = objects(&raw)?;
        drop(raw);
        let run = Store::open_undone(&state)?;
        assert_eq!(run.schema_version()?, SCHEMA_VERSION);
        assert_eq!(
            run.unresolved_total()?,
            crate::state::UnresolvedTotal::default()
        );
        drop(run);
        let raw = Connection::open(&state)?;
        let version: i64 = raw.pragma_query_value(None, "user_version", |r| r.get(0))?;
        assert_eq!(version, SCHEMA_VERSION - 1, "the migration was kept");
        assert_eq!(objects(&raw)?, before, "the migration's tables were kept");
        Ok(())
    }

    #[test]
    fn copies_left_by_earlier_plans_are_removed_and_nothing_else() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state.db");
        drop(seeded(&state)?);
        // What a plan of an earlier version stopped by Ctrl-C left: a copy in a directory.
        let kept = dir.path().join(format!("{OLD_COPY_PREFIX}a1b2c3"));
        std::fs::create_dir(&kept)?;
        std::fs::write(kept.join("state.db"), b"copy")?;
        std::fs::write(
            dir.path().join(".writeback-plan-notes"),
            b"a file, not a copy",
        )?;
        std::fs::create_dir(dir.path().join("backups"))?;
        assert_eq!(remove_old_copies(&state)?, 1);
        assert!(!kept.exists(), "{kept:?} left behind");
        assert!(dir.path().join(".writeback-plan-notes").exists());
        assert!(dir.path().join("backups").is_dir());
        assert!(state.exists());
        assert_eq!(remove_old_copies(&state)?, 0);
        Ok(())
    }

    #[test]
    fn a_missing_state_file_gives_an_empty_store_and_stays_missing() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state.db");
        let copy = Store::open_undone(&state)?;
        assert!(rows(&copy).is_empty());
        assert_eq!(copy.delta_link(ObjectKind::User)?, None);
        // On disk (a first download of a big tenant does not fit in memory), beside it.
        let scratch = std::path::PathBuf::from(copy.path());
        assert!(
            scratch.starts_with(dir.path()) && scratch.exists(),
            "{scratch:?}"
        );
        drop(copy);
        assert!(!state.exists(), "the plan created the state file");
        let left: Vec<_> = std::fs::read_dir(dir.path())?.collect();
        assert!(left.is_empty(), "left beside the state file: {left:?}");
        Ok(())
    }

    #[test]
    fn a_missing_directory_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("nope").join("state.db");
        match Store::open_undone(&state) {
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
        match Store::open_undone(&state) {
            Err(e @ StateError::NewerSchema { .. }) => {
                assert!(e.to_string().contains(&state.display().to_string()), "{e}");
            }
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("a newer schema was opened"),
        }

        let junk = dir.path().join("junk.db");
        std::fs::write(
            &junk,
            b"not a database, just text that is long enough to fill a page",
        )?;
        match Store::open_undone(&junk) {
            Err(e @ StateError::Sql { .. }) => {
                assert!(e.to_string().contains(&junk.display().to_string()), "{e}");
            }
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("a file that is not a database was opened"),
        }
        Ok(())
    }
}
