//! Moving the state between its backends: every table of a SQLite state copied into the test
//! bed's PostgreSQL and back, compared row by row each way (the table list read from the files
//! themselves, so a table the copy forgets fails here), the id sequences, the local snapshot in
//! memory, and the refusals: a destination holding state, a schema of another version, a
//! table the build does not know, a live lease, a state file in use. Then the verb on a state
//! a real first sync wrote (Samba and the Graph emulator): `writeback state copy --to
//! postgres`, `--to sqlite` into a new file, and a sync on the copy that writes nothing and
//! reads no more of the tenant than its delta links say.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use writeback::ha::{pg, LeaseTimes, PgLease, PgSettings, Takeover};
use writeback::state::pg::{postgres_to_sqlite, sqlite_to_postgres, CopyError, PgStore};
use writeback::state::Store;
use writeback_integration::harness::{m365_group, new_id, security_group, Bed};
use writeback_integration::postgres::PgTestbed;

/// Every table's rows as text, sorted, by table name.
type Tables = BTreeMap<String, Vec<Vec<String>>>;

/// How a NULL is shown on both sides (no state value looks like it).
const NULL: &str = "\u{2400}NULL\u{2400}";

/// PostgreSQL's tables that are not the state's.
const PG_OWN: &[&str] = &["writeback_schema", "writeback_lease"];

fn settings(pg: &PgTestbed, database: &str) -> PgSettings {
    PgSettings {
        host: pg.host.clone(),
        port: pg.port,
        database: database.to_string(),
        user: pg.user.clone(),
        password: pg.password().into(),
        ca_file: pg.ca_file.clone(),
        connect_timeout: Duration::from_secs(5),
        schema: None,
    }
}

async fn connect(pg: &PgTestbed, database: &str) -> tokio_postgres::Client {
    pg::connect(&settings(pg, database))
        .await
        .expect("connect over TLS")
}

/// Every table of the SQLite file at `path` (but SQLite's own), read with its own columns.
fn sqlite_tables(path: &Path) -> Tables {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the state file");
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("read the tables");
    let mut out = Tables::new();
    for name in names {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {name}"))
            .expect("select");
        let n = stmt.column_count();
        let mut rows: Vec<Vec<String>> = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        Ok(match r.get_ref(i)? {
                            rusqlite::types::ValueRef::Null => NULL.to_string(),
                            rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                            rusqlite::types::ValueRef::Text(t) => {
                                String::from_utf8_lossy(t).into_owned()
                            }
                            other => panic!("{name}: unexpected {other:?}"),
                        })
                    })
                    .collect()
            })
            .and_then(|rows| rows.collect())
            .expect("read rows");
        rows.sort();
        out.insert(name, rows);
    }
    out
}

/// SQLite's record of the highest id each AUTOINCREMENT table handed out.
fn sqlite_sequences(path: &Path) -> BTreeMap<String, i64> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the state file");
    conn.prepare("SELECT name, seq FROM sqlite_sequence")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .expect("read sqlite_sequence")
}

/// Rows of `sql` through the test bed's `psql`, fields and records split on control
/// characters (values may hold newlines), NULL shown as [`NULL`].
fn psql_rows(pg: &PgTestbed, database: &str, sql: &str) -> Vec<Vec<String>> {
    let out = pg
        .psql_command()
        .arg(pg.conninfo(database))
        .args(["-F", "\u{1f}", "-R", "\u{1e}", "-P"])
        .arg(format!("null={NULL}"))
        .arg("-c")
        .arg(sql)
        .env("PGPASSWORD", pg.password())
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 from psql");
    let text = text.trim_end_matches('\n');
    if text.is_empty() {
        return Vec::new();
    }
    text.split('\u{1e}')
        .map(|r| r.split('\u{1f}').map(str::to_string).collect())
        .collect()
}

/// Every state table of a PostgreSQL database, booleans shown as SQLite stores them (0/1).
fn pg_tables(pg: &PgTestbed, database: &str) -> Tables {
    let columns = psql_rows(
        pg,
        database,
        "SELECT table_name, column_name, data_type FROM information_schema.columns
         WHERE table_schema = 'public' ORDER BY table_name, ordinal_position",
    );
    let mut by_table: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in columns {
        let [table, column, ty] = &c[..] else {
            panic!("{c:?}")
        };
        if PG_OWN.contains(&table.as_str()) {
            continue;
        }
        let expr = match ty.as_str() {
            "boolean" => format!("CASE WHEN {column} THEN '1' WHEN NOT {column} THEN '0' END"),
            _ => format!("{column}::text"),
        };
        by_table.entry(table.clone()).or_default().push(expr);
    }
    by_table
        .into_iter()
        .map(|(table, exprs)| {
            let mut rows = psql_rows(
                pg,
                database,
                &format!("SELECT {} FROM {table}", exprs.join(", ")),
            );
            rows.sort();
            (table, rows)
        })
        .collect()
}

/// A state with rows in every table, and the values that are easy to get wrong: NULLs, both
/// booleans, newlines, quotes and non-ASCII text, ids with gaps, run ids handed out and deleted.
fn fill_every_table(path: &Path) {
    drop(Store::open(path).expect("create the state file"));
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.execute_batch(
        r#"
        INSERT INTO delta_link VALUES ('group', 'https://graph/v1.0/groups/delta?$deltatoken=a', '2024-05-01T10:00:00Z', 'id,displayName');
        INSERT INTO delta_link VALUES ('user', 'https://graph/v1.0/users/delta?$deltatoken=b', '2024-05-01T10:00:01Z', NULL);
        INSERT INTO cloud_object VALUES ('group', 'g1', '{"displayName":"R&D, \"Labs\" <Zürich> ✓","note":"a\nb"}', 0, '2024-05-01T10:00:00Z', '00000000000000010000000000000002000000000000000300000000000000ff', 2);
        INSERT INTO cloud_object VALUES ('user', 'u1', '{}', 1, '2024-05-01T10:00:00Z', NULL, NULL);
        INSERT INTO cloud_object VALUES ('device', 'd1', '{"trustType":null}', 0, '2024-05-01T10:00:00Z', NULL, NULL);
        INSERT INTO cloud_member VALUES ('g1', 'u1', '#microsoft.graph.user'), ('g1', 'd1', '#microsoft.graph.device');
        INSERT INTO anchor VALUES ('g1', 'guid-1', 'CN=R&D\, "Labs",OU=Groups,DC=corp', '10-m365.rhai', '2024-05-01T10:00:02Z');
        INSERT INTO anchor VALUES ('g2', '', 'CN=B,OU=Groups,DC=corp', '10-m365.rhai', '2024-05-01T10:00:02Z');
        INSERT INTO applied VALUES ('g1', 'h1', '2024-05-01T10:00:02Z');
        INSERT INTO run (id, mode, started_at, finished_at, status, stats_json) VALUES
            (1, 'sync', '2024-05-01T10:00:00Z', '2024-05-01T10:00:03Z', 'ok', '{"changes":1}'),
            (2, 'sync', 't', 't', 'ok', NULL), (3, 'sync', 't', 't', 'ok', NULL),
            (4, 'sync', 't', 't', 'ok', NULL), (5, 'reconcile', 't', NULL, NULL, NULL),
            (6, 'sync', 't', 't', 'ok', NULL), (7, 'sync', 't', 't', 'ok', NULL);
        DELETE FROM run WHERE id IN (3, 4, 6, 7);
        INSERT INTO run_event (id, run_id, at, cloud_id, action, dn, detail_json, outcome) VALUES
            (1, 1, 't', 'g1', 'create', 'CN=R&D\, "Labs",OU=Groups,DC=corp', '{"after":{"cn":"R&D"}}', 'ok'),
            (4, 5, 't', 'g2', 'trigger:on_created', 'CN=B', '{}', 'failed');
        INSERT INTO pending VALUES ('group', 'g1'), ('device', 'd1');
        INSERT INTO meta VALUES ('rules_fingerprint', 'fp'), ('empty', '');
        INSERT INTO quarantine VALUES ('g3', 'line one
line two', 2, 't', 't', 1700000000);
        INSERT INTO intent VALUES ('g4', 'CN=Intent', 5);
        INSERT INTO held_delete VALUES ('g5', 'CN=Y', 1, 't'), ('g6', 'CN=Z', 0, 't');
        INSERT INTO released VALUES ('g7', 'CN=R', 'guid-7', '20-security.rhai', 't');
        INSERT INTO held_removal VALUES ('g8', 'CN=H', 3, 10, 'rh', 0, 't'), ('g9', 'CN=I', 1, 2, 'rh2', 1, 't');
        INSERT INTO leaving VALUES ('g10', 1700000000, NULL), ('g11', 1700000000, 1800000000);
        INSERT INTO link VALUES ('g1', 'CN=Target,OU=Apps,DC=corp', 't');
        INSERT INTO outbox VALUES (3, 'k3', 'r.rhai', 'on_created', 'g1', '{"dn":"CN=R&D"}', 0, 1700000000, 'pending', NULL, 't');
        INSERT INTO outbox VALUES (9, 'k9', 'r.rhai', 'on_deleted', 'g2', '{}', 5, 1700000100, 'given_up', 'HTTP 500', 't');
        INSERT INTO unresolved VALUES ('g1', 'u2');
        INSERT INTO member_change VALUES ('g1', 'u1', 'user', 1), ('g1', 'u3', 'user', 0);
        "#,
    )
    .expect("fill every table");
}

fn refused(result: Result<impl std::fmt::Debug, CopyError>) -> (CopyError, String) {
    match result {
        Ok(done) => panic!("not refused: {done:?}"),
        Err(e) => {
            let text = e.to_string();
            (e, text)
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_table_goes_to_postgres_and_back_row_for_row() {
    let pg = PgTestbed::load();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("state.db");
    fill_every_table(&file);
    let source = sqlite_tables(&file);
    let empty: Vec<&String> = source
        .iter()
        .filter(|(_, rows)| rows.is_empty())
        .map(|(t, _)| t)
        .collect();
    assert!(
        empty.is_empty(),
        "fill_every_table leaves {empty:?} empty: give every table of the schema rows here"
    );

    // SQLite into a new database: the schema is created, every row copied.
    let db = pg.fresh_database("state_copy");
    let mut client = connect(&pg, &db).await;
    let store = Store::open(&file).expect("open");
    let copied = sqlite_to_postgres(&store, &mut client)
        .await
        .expect("copy into PostgreSQL");
    let counted: BTreeMap<String, usize> = copied
        .tables
        .iter()
        .map(|(t, n)| (t.to_string(), usize::try_from(*n).expect("a count")))
        .collect();
    let expected: BTreeMap<String, usize> =
        source.iter().map(|(t, r)| (t.clone(), r.len())).collect();
    assert_eq!(counted, expected, "rows copied per table");
    assert_eq!(
        pg_tables(&pg, &db),
        source,
        "PostgreSQL holds the same rows"
    );

    // Into it again: refused, nothing merged.
    let (e, text) = refused(sqlite_to_postgres(&store, &mut client).await);
    assert!(matches!(e, CopyError::NotEmpty { .. }), "{e:?}");
    assert!(
        text.contains(&format!(
            "PostgreSQL database {db} already holds Writeback state"
        )),
        "{text}"
    );
    assert_eq!(pg_tables(&pg, &db), source, "nothing was merged");

    // Back into a new SQLite file: the same rows, and the run ids SQLite handed out.
    let back = dir.path().join("back.db");
    let mut back_store = Store::open(&back).expect("create");
    let copied = postgres_to_sqlite(&mut client, &mut back_store)
        .await
        .expect("copy into SQLite");
    assert_eq!(copied.rows(), expected.values().sum::<usize>() as u64);
    assert_eq!(
        sqlite_tables(&back),
        source,
        "the copy back holds the same rows"
    );
    assert_eq!(
        sqlite_sequences(&back),
        sqlite_sequences(&file),
        "runs 6 and 7 were handed out before: never again"
    );
    assert_eq!(sqlite_sequences(&file).get("run"), Some(&7));

    // Into a file that holds state: refused, the file as it was.
    let (e, text) = refused(postgres_to_sqlite(&mut client, &mut back_store).await);
    assert!(matches!(e, CopyError::NotEmpty { .. }), "{e:?}");
    assert!(
        text.contains(&format!("state file {} already holds", back.display())),
        "{text}"
    );
    drop(back_store);
    assert_eq!(sqlite_tables(&back), source);

    // A local snapshot in memory, through the store's own connection.
    let mut pg_store = PgStore::open(connect(&pg, &db).await, None).expect("open");
    let mut memory = Store::open_in_memory().expect("in memory");
    pg_store.copy_into(&mut memory).expect("snapshot in memory");
    assert_eq!(
        memory.anchors().expect("anchors"),
        store.anchors().expect("anchors")
    );
    assert_eq!(
        memory.quarantined().expect("q"),
        store.quarantined().expect("q")
    );
    assert_eq!(
        memory.held_removals().expect("h"),
        store.held_removals().expect("h")
    );
    assert_eq!(memory.leaving().expect("l"), store.leaving().expect("l"));
    assert_eq!(
        memory
            .pending(writeback::state::ObjectKind::Device)
            .expect("p")
            .len(),
        1
    );
    assert_eq!(
        memory.recent_runs(10).expect("runs"),
        store.recent_runs(10).expect("runs")
    );

    // The id sequences go past the copied ids (and past the run ids SQLite handed out).
    for (table, next) in [("run", "8"), ("run_event", "5"), ("outbox", "10")] {
        assert_eq!(
            pg.query(
                &db,
                &format!("SELECT nextval(pg_get_serial_sequence('{table}', 'id'))")
            ),
            next,
            "{table}"
        );
    }

    // A schema of another version, on either side, is refused naming both versions.
    pg.query(&db, "UPDATE writeback_schema SET version = 14");
    let mut memory = Store::open_in_memory().expect("in memory");
    let (e, text) = refused(postgres_to_sqlite(&mut client, &mut memory).await);
    assert!(matches!(e, CopyError::SchemaVersion { .. }), "{e:?}");
    assert!(
        text.contains(&format!("PostgreSQL database {db} (schema version 14)"))
            && text.contains("state file (in memory) (schema version 13)"),
        "{text}"
    );
    let old = pg.fresh_database("state_copy_old");
    pg.query(
        &old,
        "CREATE TABLE writeback_schema (only_row boolean PRIMARY KEY DEFAULT true, version bigint NOT NULL);
         INSERT INTO writeback_schema (version) VALUES (11)",
    );
    let mut old_client = connect(&pg, &old).await;
    let (e, text) = refused(sqlite_to_postgres(&store, &mut old_client).await);
    assert!(matches!(e, CopyError::SchemaVersion { .. }), "{e:?}");
    assert!(
        text.contains(&format!(
            "state file {} (schema version 13)",
            file.display()
        )) && text.contains(&format!("PostgreSQL database {old} (schema version 11)")),
        "{text}"
    );
    assert_eq!(
        pg.query(&old, "SELECT to_regclass('anchor') IS NULL"),
        "t",
        "nothing was written"
    );

    // A table this build does not know is refused, not left behind.
    pg.query(
        &db,
        "UPDATE writeback_schema SET version = 13; CREATE TABLE surprise (x text)",
    );
    let (e, text) = refused(postgres_to_sqlite(&mut client, &mut memory).await);
    assert!(matches!(e, CopyError::Layout { .. }), "{e:?}");
    assert!(text.contains("surprise"), "{text}");

    // A database without state has nothing to copy.
    let none = pg.fresh_database("state_copy_none");
    let (e, _) = refused(postgres_to_sqlite(&mut connect(&pg, &none).await, &mut memory).await);
    assert!(matches!(e, CopyError::NoState { .. }), "{e:?}");

    for d in [db, old, none] {
        pg.drop_database(&d);
    }
}

/// Runs the binary; returns exit code, stdout, stderr.
fn run(bed: &Bed, args: &[&str]) -> (Option<i32>, String, String) {
    let out = bed.run(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The config's `[state] path` set to `file`.
fn state_path(bed: &Bed, file: &str) {
    let p = bed.config_path();
    let text = std::fs::read_to_string(&p).expect("read config");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("path = "))
        .expect("a [state] path");
    lines[at] = format!("path = \"{file}\"");
    std::fs::write(&p, lines.join("\n") + "\n").expect("write config");
}

fn changes(report: &Value) -> usize {
    report["plan"]["changes"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_synced_state_moves_to_postgres_and_back_with_the_verb() {
    let pg = PgTestbed::load();
    let mut bed = Bed::new("wb-state-copy", 3).await;
    bed.create_default_containers().await;
    let users: Vec<String> = bed.users.iter().map(|u| u.cloud_id.clone()).collect();
    let (m, s) = (new_id(), new_id());
    bed.seed(
        bed.synced_users(),
        vec![
            m365_group(&m, "Moving Team", "moving", &[&users[0], &users[1]]),
            security_group(&s, "Moving Share", &[&users[1], &users[2]]),
        ],
        &[],
    );
    bed.write_config(None, "", "");

    // A real first sync on SQLite, then a second that changes nothing: two runs, links, cache.
    let first = bed.run_json(&["sync"], 0);
    assert_eq!(changes(&first), 2, "{first:#}");
    let second = bed.run_json(&["sync"], 0);
    assert_eq!(changes(&second), 0, "{second:#}");
    let file = bed.dir.path().join("state.db");
    let source = sqlite_tables(&file);
    assert_eq!(source["anchor"].len(), 2, "{source:?}");

    // Without [state.postgres] there is nowhere to copy to.
    let (code, out, err) = run(&bed, &["state", "copy", "--to", "postgres"]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(err.contains("[state.postgres] is not configured"), "{err}");

    let db = pg.fresh_database("state_copy_verb");
    let section = format!(
        "[state.postgres]\nurl = \"postgresql://{}@{}:{}/{db}\"\npassword_file = \"{}\"\nca_file = \"{}\"\ninstance = \"wb-copy-test\"\n",
        pg.user,
        pg.host,
        pg.port,
        pg.password_file.display(),
        pg.ca_file.display()
    );
    let config = bed.config_path();
    let text = std::fs::read_to_string(&config).expect("read config") + "\n" + section.as_str();
    std::fs::write(&config, text).expect("write config");

    // A sync (or a daemon's cycle) holding the state file's lock: refused, not waited for.
    let lock = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(bed.dir.path().join("state.db.lock"))
        .expect("open the lock");
    lock.lock().expect("take the lock");
    let (code, out, err) = run(&bed, &["state", "copy", "--to", "postgres"]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(err.contains("is in use"), "{err}");
    drop(lock);

    let (code, out, err) = run(&bed, &["state", "copy", "--to", "postgres"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains(&format!("copied the state from {}", file.display()))
            && out.contains(&format!("/{db}")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["anchor", "2"]),
        "{out}"
    );
    assert_eq!(
        pg_tables(&pg, &db),
        source,
        "PostgreSQL holds the synced state"
    );
    assert_eq!(sqlite_tables(&file), source, "the file is left as it was");

    // Again: the database holds state now.
    let (code, out, err) = run(&bed, &["state", "copy", "--to", "postgres"]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(err.contains("already holds Writeback state"), "{err}");
    assert_eq!(pg_tables(&pg, &db), source);

    // An instance holding the lease: refused, naming it; no file is made.
    state_path(&bed, "back.db");
    let back = bed.dir.path().join("back.db");
    let holder = Arc::new(connect(&pg, &db).await);
    let lease = PgLease::open(
        holder,
        "wb-other-host".into(),
        LeaseTimes::new(Duration::from_secs(60)),
    )
    .await
    .expect("lease table");
    let Takeover::Won { epoch, .. } = lease.try_take().await.expect("take") else {
        panic!("the lease is free")
    };
    let (code, out, err) = run(&bed, &["state", "copy", "--to", "sqlite"]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        err.contains("instance wb-other-host holds the lease"),
        "{err}"
    );
    assert!(!back.exists(), "no file is left by a refused copy");
    let (code, _, err) = run(&bed, &["state", "copy", "--to", "postgres"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("wb-other-host"), "{err}");
    lease.release(epoch).await.expect("release");

    // A stopped instance's lease is no obstacle: back into a new file, row for row.
    let (code, out, err) = run(&bed, &["state", "copy", "--to", "sqlite"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains(&format!("into {}", back.display())), "{out}");
    assert_eq!(
        sqlite_tables(&back),
        source,
        "the copy back holds the same rows"
    );
    assert_eq!(sqlite_sequences(&back), sqlite_sequences(&file));

    // Into that file again: it holds state now.
    let (code, out, err) = run(&bed, &["state", "copy", "--to", "sqlite"]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(err.contains("already holds Writeback state"), "{err}");

    // The moved state is the whole state: a sync on the copy reads the tenant from its delta
    // links (an idle sweep, not a first sync), writes nothing to AD, and adopts nothing.
    let usn = bed.highest_usn().await;
    let after = bed.run_json(&["sync"], 0);
    assert_eq!(after["sweep"], json!("idle"), "{after:#}");
    assert_eq!(changes(&after), 0, "{after:#}");
    assert_eq!(
        bed.highest_usn().await,
        usn,
        "the sync on the copy wrote to AD"
    );
    // And a change in the cloud arrives as a change, through the copied links.
    bed.graph(
        "POST",
        &format!("/groups/{s}/members/$ref"),
        Some(json!({
            "@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{}", users[0])
        })),
    )
    .await;
    let changed = bed.run_json(&["sync"], 0);
    assert_eq!(changed["sweep"], json!("changed"), "{changed:#}");
    assert_eq!(changes(&changed), 1, "{changed:#}");

    pg.drop_database(&db);
    bed.cleanup().await;
}
