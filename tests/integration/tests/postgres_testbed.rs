//! The PostgreSQL test bed (`tests/testbed/postgres.sh`): the server answers over TLS verified
//! with the test bed's CA and refuses plain connections and wrong passwords, each test gets an
//! empty database of its own, and stopping and starting the server keeps the data.
//!
//! Needs the test bed: `sudo tests/testbed/postgres.sh up`, with `WRITEBACK_PG_ENV` naming the
//! settings file it prints (`make test` does both).

use std::path::Path;
use std::time::Duration;

use writeback_integration::postgres::{process_runs, PgTestbed};

const ANSWER: Duration = Duration::from_secs(5);

/// `psql` with a connection string the test writes itself, the password and the CA given the
/// way a person would (`PGPASSWORD`, `PGSSLROOTCERT`).
fn psql_raw(
    pg: &PgTestbed,
    conninfo: &str,
    password: &str,
    ca: Option<&Path>,
    sql: &str,
) -> Result<String, String> {
    let mut cmd = pg.psql_command();
    cmd.arg(conninfo)
        .arg("-c")
        .arg(sql)
        .env("PGPASSWORD", password);
    if let Some(ca) = ca {
        cmd.env("PGSSLROOTCERT", ca);
    }
    let out = cmd.output().expect("run psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim_end().to_string())
    }
}

fn conninfo(pg: &PgTestbed, sslmode: &str) -> String {
    format!(
        "sslmode={sslmode} host={} port={} dbname={} user={}",
        pg.host, pg.port, pg.database, pg.user
    )
}

#[test]
fn answers_over_tls_verified_with_the_test_bed_ca() {
    let pg = PgTestbed::load();
    assert_eq!(pg.host, "127.0.0.1");

    let who = psql_raw(
        &pg,
        &conninfo(&pg, "verify-full"),
        &pg.password(),
        Some(&pg.ca_file),
        "SELECT current_user, current_database(), ssl, version \
         FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .unwrap_or_else(|e| panic!("verify-full with the test bed's CA: {e}"));
    let fields: Vec<&str> = who.split('|').collect();
    assert_eq!(fields[..3], ["writeback", "writeback", "t"], "{who}");
    assert!(fields[3].starts_with("TLSv1."), "{who}");

    // The certificate names localhost too.
    let localhost = format!(
        "sslmode=verify-full host=localhost port={} dbname={} user={}",
        pg.port, pg.database, pg.user
    );
    psql_raw(
        &pg,
        &localhost,
        &pg.password(),
        Some(&pg.ca_file),
        "SELECT 1",
    )
    .unwrap_or_else(|e| panic!("verify-full to localhost: {e}"));

    // The URL from the settings file is enough on its own (it names the CA).
    let db = psql_raw(
        &pg,
        &pg.url,
        &pg.password(),
        None,
        "SELECT current_database()",
    )
    .unwrap_or_else(|e| panic!("PG_URL {}: {e}", pg.url));
    assert_eq!(db, "writeback");
    assert!(
        !pg.url.contains(&pg.password()),
        "PG_URL holds the password"
    );

    // Another CA does not vouch for the server.
    let other_ca = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(other_ca.path(), ca_of_another_server()).expect("write CA");
    let err = psql_raw(
        &pg,
        &conninfo(&pg, "verify-full"),
        &pg.password(),
        Some(other_ca.path()),
        "SELECT 1",
    )
    .expect_err("a server certificate from another CA accepted");
    assert!(err.contains("certificate verify failed"), "{err}");
}

#[test]
fn plain_connections_are_refused() {
    let pg = PgTestbed::load();
    let err = psql_raw(
        &pg,
        &conninfo(&pg, "disable"),
        &pg.password(),
        None,
        "SELECT 1",
    )
    .expect_err("a connection without TLS accepted");
    assert!(
        err.contains("pg_hba.conf rejects connection") && err.contains("no encryption"),
        "{err}"
    );
    // The superuser neither.
    let admin = format!(
        "sslmode=disable host={} port={} dbname=postgres user={}",
        pg.host, pg.port, pg.admin_user
    );
    let err = psql_raw(&pg, &admin, &pg.admin_password(), None, "SELECT 1")
        .expect_err("a superuser connection without TLS accepted");
    assert!(err.contains("pg_hba.conf rejects connection"), "{err}");
}

#[test]
fn a_wrong_password_is_refused() {
    let pg = PgTestbed::load();
    let err = psql_raw(
        &pg,
        &conninfo(&pg, "verify-full"),
        "not-the-password",
        Some(&pg.ca_file),
        "SELECT 1",
    )
    .expect_err("a wrong password accepted");
    assert!(
        err.contains("password authentication failed for user \"writeback\""),
        "{err}"
    );
    // The role's password is no other role's.
    let admin_with_ours = pg.try_query_as(&pg.admin_user, &pg.password(), "postgres", "SELECT 1");
    assert!(
        admin_with_ours
            .as_ref()
            .is_err_and(|e| e.contains("password authentication failed")),
        "{admin_with_ours:?}"
    );
}

#[test]
fn fresh_databases_are_empty_separate_and_owned_by_writeback() {
    let pg = PgTestbed::load();
    let a = pg.fresh_database("testbed-fresh");
    let b = pg.fresh_database("testbed-fresh");
    assert_ne!(a, b);

    for db in [&a, &b] {
        let owner = pg.admin_query(
            "postgres",
            &format!("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{db}'"),
        );
        assert_eq!(owner, "writeback", "owner of {db}");
        let tables = pg.query(
            db,
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
        );
        assert_eq!(tables, "0", "{db} is not empty");
    }

    // writeback makes its own schema in it, and the other database does not see it.
    pg.query(
        &a,
        "CREATE TABLE lease (name text PRIMARY KEY, holder text NOT NULL); \
         INSERT INTO lease VALUES ('sync', 'instance-1')",
    );
    assert_eq!(
        pg.query(&a, "SELECT holder FROM lease WHERE name = 'sync'"),
        "instance-1"
    );
    let err = pg
        .try_query(&b, "SELECT holder FROM lease")
        .expect_err("a table of one fresh database seen in another");
    assert!(err.contains("relation \"lease\" does not exist"), "{err}");

    // Its URL works as PG_URL does.
    let url = pg.url_for(&a);
    assert_eq!(
        psql_raw(
            &pg,
            &url,
            &pg.password(),
            None,
            "SELECT count(*) FROM lease"
        )
        .unwrap_or_else(|e| panic!("{url}: {e}")),
        "1"
    );

    // The superuser can cut a test's sessions (as a failover would).
    assert_eq!(pg.terminate_backends(&a), 0);

    pg.drop_database(&a);
    pg.drop_database(&b);
    let left = pg.admin_query(
        "postgres",
        &format!("SELECT count(*) FROM pg_database WHERE datname IN ('{a}', '{b}')"),
    );
    assert_eq!(left, "0");
}

#[test]
fn stop_and_start_keep_the_data() {
    let pg = PgTestbed::load();
    let db = pg.fresh_database("testbed-restart");
    pg.query(
        &db,
        "CREATE TABLE run (id int PRIMARY KEY, note text); \
         INSERT INTO run VALUES (1, 'before the stop')",
    );

    let stopped = pg.stop();
    assert!(
        !pg.answers(Duration::ZERO),
        "the server answers while stopped"
    );
    assert!(
        !process_runs(pg.pid),
        "the postmaster {} still runs",
        pg.pid
    );
    assert!(
        !pg.env_file.exists(),
        "{} left behind by down",
        pg.env_file.display()
    );
    // Tests that need the server fail loudly while it is down.
    let env_file = pg.env_file.clone();
    let load = std::panic::catch_unwind(move || PgTestbed::load_from(&env_file));
    assert!(
        load.is_err(),
        "the settings load while the server is stopped"
    );
    let pg2 = stopped.start();
    assert_ne!(pg2.pid, pg.pid, "a new postmaster");
    assert_eq!(pg2.port, pg.port);
    assert_eq!(pg2.password(), pg.password(), "the passwords stay");
    assert!(pg2.answers(ANSWER));
    assert_eq!(
        pg2.query(&db, "SELECT note FROM run WHERE id = 1"),
        "before the stop"
    );
    pg2.query(&db, "INSERT INTO run VALUES (2, 'after the start')");

    // Dropping the guard starts the server too (a test that panics while it is down).
    {
        let _stopped = pg2.stop();
        assert!(!pg2.answers(Duration::ZERO));
    }
    let pg3 = PgTestbed::load();
    assert_ne!(pg3.pid, pg2.pid);
    assert!(pg3.answers(ANSWER));
    assert_eq!(pg3.query(&db, "SELECT count(*) FROM run"), "2");
    pg3.drop_database(&db);
}

#[test]
fn a_killed_server_comes_back_with_its_committed_data() {
    let pg = PgTestbed::load();
    let db = pg.fresh_database("testbed-crash");
    pg.query(
        &db,
        "CREATE TABLE run (id int PRIMARY KEY); INSERT INTO run SELECT generate_series(1, 1000)",
    );

    let log_before = std::fs::metadata(&pg.log_file).map_or(0, |m| m.len());
    let killed = pg.kill();
    assert!(!process_runs(pg.pid));
    assert!(
        !pg.answers(Duration::ZERO),
        "the server answers after SIGKILL"
    );
    let pg2 = killed.start();
    assert_ne!(pg2.pid, pg.pid);
    assert_eq!(pg2.query(&db, "SELECT count(*) FROM run"), "1000");
    let log = std::fs::read(&pg2.log_file).expect("read the server log");
    let log = String::from_utf8_lossy(log.get(log_before as usize..).unwrap_or_default());
    assert!(
        log.contains("database system was interrupted") || log.contains("not properly shut down"),
        "no crash recovery in {}",
        pg2.log_file.display()
    );
    pg2.drop_database(&db);
}

#[test]
#[should_panic(
    expected = "PostgreSQL test bed is not running: run `sudo tests/testbed/postgres.sh up` and point WRITEBACK_PG_ENV"
)]
fn a_missing_settings_file_fails_loudly() {
    PgTestbed::load_from(Path::new("/nonexistent/.testbed/postgres/pg.env"));
}

/// A self-signed CA that signed nothing the test bed serves.
fn ca_of_another_server() -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=Some other CA"])
        .arg("-keyout")
        .arg(dir.path().join("key.pem"))
        .arg("-out")
        .arg(dir.path().join("ca.pem"))
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(dir.path().join("ca.pem")).expect("read CA")
}
