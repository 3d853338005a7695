//! Settings of the running PostgreSQL test bed (`tests/testbed/postgres.sh up`) and helpers for
//! the tests of the PostgreSQL state backend: a database of its own per test
//! ([`PgTestbed::fresh_database`]), SQL as the `writeback` role or the superuser through `psql`
//! (TLS, the server verified against the test bed's CA), and stopping and starting the server
//! mid-test ([`PgTestbed::stop`]) with the data kept.
//!
//! Like the Samba helpers, these panic with a clear message instead of returning errors: a test
//! that needs PostgreSQL fails loudly when the test bed is not up, it is never skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::testbed::{env_value, unique_ou_name};

/// Environment variable naming the settings file (default
/// `<workspace>/.testbed/postgres/pg.env`).
pub const ENV_FILE_VAR: &str = "WRITEBACK_PG_ENV";

/// The message every test that needs PostgreSQL fails with when the test bed is not up.
pub const NOT_RUNNING: &str = "PostgreSQL test bed is not running: run \
     `sudo tests/testbed/postgres.sh up` and point WRITEBACK_PG_ENV at the settings file it \
     prints (`<repo>/.testbed/postgres/pg.env`), or run `make test`";

/// The test bed's script, which starts and stops the server.
const SCRIPT: &str = "../../tests/testbed/postgres.sh";

/// How long one `psql` waits for the server to accept the connection.
const CONNECT_TIMEOUT_SECS: u64 = 10;

/// Connection settings of the running PostgreSQL test bed, as written by `postgres.sh up`.
/// The passwords stay in their files ([`Self::password`], [`Self::admin_password`]).
#[derive(Clone, Debug)]
pub struct PgTestbed {
    /// `127.0.0.1`: the server listens on no other address.
    pub host: String,
    /// `55432` unless `WRITEBACK_PG_PORT` said otherwise.
    pub port: u16,
    /// `writeback`, owned by [`Self::user`].
    pub database: String,
    /// `writeback`: the role Writeback connects as (no superuser, no CREATEDB).
    pub user: String,
    /// The `writeback` role's password (one line, mode 0600).
    pub password_file: PathBuf,
    /// PEM file of the test bed's own CA, which signed the server's certificate (SAN
    /// `IP:127.0.0.1, DNS:localhost`).
    pub ca_file: PathBuf,
    /// `postgres://writeback@127.0.0.1:55432/writeback?sslmode=verify-full&sslrootcert=<CA>`,
    /// without the password.
    pub url: String,
    /// `postgres`: the superuser, for set-up and for what a test does to the server (create
    /// databases, terminate backends).
    pub admin_user: String,
    pub admin_password_file: PathBuf,
    /// Directory of the server's Unix socket (inside the state directory).
    pub socket_dir: PathBuf,
    /// The postmaster's PID.
    pub pid: u32,
    /// The cluster (PGDATA), owned by the server's user.
    pub data_dir: PathBuf,
    /// `/usr/lib/postgresql/<major>/bin`: `psql`, `pg_ctl`, ...
    pub bin_dir: PathBuf,
    /// The cluster's major version (`15`).
    pub version: String,
    /// The server's log.
    pub log_file: PathBuf,
    /// The test bed's state directory (`<repo>/.testbed/postgres`).
    pub state_dir: PathBuf,
    /// The settings file these were read from.
    pub env_file: PathBuf,
}

impl PgTestbed {
    /// Reads `$WRITEBACK_PG_ENV` (else `<workspace>/.testbed/postgres/pg.env`). Panics with
    /// [`NOT_RUNNING`] when the file is missing, incomplete, or the server it names is gone.
    pub fn load() -> PgTestbed {
        Self::load_from(&env_file_path())
    }

    /// Reads the settings file at `path`; panics as [`Self::load`] does.
    pub fn load_from(path: &Path) -> PgTestbed {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => panic!(
                "{NOT_RUNNING} (cannot read {} named by {ENV_FILE_VAR} or its default: {e})",
                path.display()
            ),
        };
        let testbed = match parse_env(&text, path) {
            Ok(testbed) => testbed,
            Err(e) => panic!("{NOT_RUNNING} ({}: {e})", path.display()),
        };
        // A server that was stopped or died without the script leaves the file behind.
        if Path::new("/proc/self").exists() && !process_runs(testbed.pid) {
            panic!(
                "{NOT_RUNNING} (the postmaster {} named in {} is gone)",
                testbed.pid,
                path.display()
            );
        }
        testbed
    }

    /// The settings file again (after the server was restarted: a new PID).
    pub fn reload(&self) -> PgTestbed {
        Self::load_from(&self.env_file)
    }

    /// The `writeback` role's password, read from [`Self::password_file`].
    pub fn password(&self) -> String {
        read_secret(&self.password_file)
    }

    /// The `[state.postgres]` section of a config putting the state on `database` as instance
    /// `instance`, the password read from the environment variable `password_env`; `extra`
    /// lines (lease and poll settings) are appended to the section.
    pub fn state_section(
        &self,
        database: &str,
        instance: &str,
        password_env: &str,
        extra: &str,
    ) -> String {
        format!(
            "[state.postgres]\nurl = \"postgresql://{user}@{host}:{port}/{database}\"\n\
             password_env = \"{password_env}\"\nca_file = \"{ca}\"\ninstance = \"{instance}\"\n{extra}",
            user = self.user,
            host = self.host,
            port = self.port,
            ca = self.ca_file.display(),
        )
    }

    /// The superuser's password, read from [`Self::admin_password_file`].
    pub fn admin_password(&self) -> String {
        read_secret(&self.admin_password_file)
    }

    /// [`Self::url`] for another database (one of [`Self::fresh_database`]'s).
    pub fn url_for(&self, database: &str) -> String {
        let query = self.url.split_once('?').map_or("", |(_, q)| q);
        format!(
            "postgres://{}@{}:{}/{database}?{query}",
            self.user, self.host, self.port
        )
    }

    /// A libpq connection string for `user` on `database`: TCP to [`Self::host`], TLS required,
    /// the server's certificate and name verified against the test bed's CA
    /// (`sslmode=verify-full`). No password: `psql` gets it through `PGPASSWORD`.
    pub fn conninfo_as(&self, user: &str, database: &str) -> String {
        format!(
            "host={} port={} dbname={} user={} sslmode=verify-full sslrootcert={}",
            conninfo_value(&self.host),
            self.port,
            conninfo_value(database),
            conninfo_value(user),
            conninfo_value(&self.ca_file.to_string_lossy()),
        )
    }

    /// [`Self::conninfo_as`] for the `writeback` role.
    pub fn conninfo(&self, database: &str) -> String {
        self.conninfo_as(&self.user, database)
    }

    /// The test bed's `psql`, unaligned and tuples only (`-X -q -A -t -v ON_ERROR_STOP=1`),
    /// with a connect timeout and none of the caller's `PG*` variables. Add the connection
    /// string, `-c SQL` and `PGPASSWORD`.
    pub fn psql_command(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("psql"));
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(key);
            }
        }
        cmd.env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT_SECS.to_string());
        cmd
    }

    /// Runs `sql` on `database` as `user` with `password`; its output (tuples only, `|`
    /// between columns, trailing newline removed) or `psql`'s error message.
    pub fn try_query_as(
        &self,
        user: &str,
        password: &str,
        database: &str,
        sql: &str,
    ) -> Result<String, String> {
        let out = self
            .psql_command()
            .arg(self.conninfo_as(user, database))
            .arg("-c")
            .arg(sql)
            .env("PGPASSWORD", password)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}/psql: {e}", self.bin_dir.display()));
        psql_result(&out)
    }

    /// Runs `sql` on `database` as `writeback`; panics with `psql`'s message when it fails.
    pub fn query(&self, database: &str, sql: &str) -> String {
        self.try_query(database, sql)
            .unwrap_or_else(|e| panic!("`{sql}` on {database} as {} failed: {e}", self.user))
    }

    /// Runs `sql` on `database` as `writeback`; `psql`'s message when it fails.
    pub fn try_query(&self, database: &str, sql: &str) -> Result<String, String> {
        self.try_query_as(&self.user, &self.password(), database, sql)
    }

    /// Runs `sql` on `database` as the superuser; panics with `psql`'s message when it fails.
    pub fn admin_query(&self, database: &str, sql: &str) -> String {
        self.try_query_as(&self.admin_user, &self.admin_password(), database, sql)
            .unwrap_or_else(|e| panic!("`{sql}` on {database} as {} failed: {e}", self.admin_user))
    }

    /// Creates a new, empty database owned by `writeback` for one test and returns its name
    /// (`wb_<prefix>_<16 hex digits>`, different on every call), so tests share no state.
    /// The database stays until [`Self::drop_database`] or the next `postgres.sh reset`.
    pub fn fresh_database(&self, prefix: &str) -> String {
        let name = database_name(prefix);
        self.admin_query(
            "postgres",
            &format!(
                "CREATE DATABASE {} OWNER {}",
                quote_ident(&name),
                quote_ident(&self.user)
            ),
        );
        name
    }

    /// Drops `database`, disconnecting whoever is still on it; a missing one is no error.
    pub fn drop_database(&self, database: &str) {
        self.admin_query(
            "postgres",
            &format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(database)
            ),
        );
    }

    /// Terminates every other session on `database` (as an administrator or a failover would)
    /// and returns how many there were.
    pub fn terminate_backends(&self, database: &str) -> usize {
        let n = self.admin_query(
            "postgres",
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = {} AND pid <> pg_backend_pid()",
                quote_literal(database)
            ),
        );
        n.parse()
            .unwrap_or_else(|e| panic!("pg_terminate_backend count {n:?}: {e}"))
    }

    /// True when `writeback` can run a query on its database within `timeout` (no panic: for
    /// checking that the server is down, or up).
    pub fn answers(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.try_query(&self.database, "SELECT 1").as_deref() == Ok("1") {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server with `postgres.sh down` (`pg_ctl stop -m fast`; the cluster and its data
    /// stay). It comes back with [`StoppedPg::start`], or when the returned value is dropped
    /// (also when the test panics). Panics when the script fails. Needs the user that started
    /// the test bed (root under `make test`).
    #[must_use = "the server starts again when this is dropped"]
    pub fn stop(&self) -> StoppedPg {
        self.run_script("down");
        StoppedPg {
            testbed: Some(self.clone()),
        }
    }

    /// Kills the postmaster with SIGKILL, as a crash would (no shutdown checkpoint; its backends
    /// exit on their own), and waits until it is gone. The data directory stays as the crash
    /// left it: [`StoppedPg::start`] (or dropping the returned value) starts the server again,
    /// which recovers from its WAL. Needs the right to signal the server (root under
    /// `make test`).
    #[must_use = "the server starts again when this is dropped"]
    pub fn kill(&self) -> StoppedPg {
        let out = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .output()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(
            out.status.success(),
            "kill -KILL {} failed: {}",
            self.pid,
            String::from_utf8_lossy(&out.stderr)
        );
        let stopped = StoppedPg {
            testbed: Some(self.clone()),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_runs(self.pid) {
            assert!(
                Instant::now() < deadline,
                "the postmaster {} still runs 10 s after SIGKILL",
                self.pid
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        stopped
    }

    /// Runs `postgres.sh <verb>` for this test bed's state directory and port; panics with its
    /// output when it fails.
    fn run_script(&self, verb: &str) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(SCRIPT);
        let out = Command::new(&script)
            .arg(verb)
            .env("WRITEBACK_PG_DIR", &self.state_dir)
            .env("WRITEBACK_PG_PORT", self.port.to_string())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} {verb} failed ({}):\n{}{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A server stopped by [`PgTestbed::stop`]: [`start`](Self::start) it again, or it starts when
/// this is dropped.
#[derive(Debug)]
pub struct StoppedPg {
    testbed: Option<PgTestbed>,
}

impl StoppedPg {
    /// The settings of the stopped server (its PID is the old one).
    pub fn testbed(&self) -> &PgTestbed {
        self.testbed.as_ref().expect("a stopped server")
    }

    /// Starts the server again with `postgres.sh up` (same cluster, same data, same port, same
    /// passwords) and returns the new settings (a new PID). Panics when it does not come up.
    pub fn start(mut self) -> PgTestbed {
        let testbed = self.testbed.take().expect("a stopped server");
        testbed.run_script("up");
        testbed.reload()
    }
}

impl Drop for StoppedPg {
    fn drop(&mut self) {
        if let Some(testbed) = self.testbed.take() {
            // A test that failed while the server was down must not leave it down for the next.
            let restart = std::panic::catch_unwind(|| testbed.run_script("up"));
            if restart.is_err() {
                eprintln!(
                    "could not start the PostgreSQL test bed again; run: sudo tests/testbed/postgres.sh up"
                );
            }
        }
    }
}

/// True while `pid` runs. A process that exited but was not reaped yet (a killed postmaster,
/// whose new parent has not waited for it) still has a `/proc` entry, but no command line.
pub fn process_runs(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

/// The settings file: `$WRITEBACK_PG_ENV`, else `<workspace root>/.testbed/postgres/pg.env`.
pub fn env_file_path() -> PathBuf {
    match std::env::var_os(ENV_FILE_VAR) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(".testbed/postgres/pg.env"),
    }
}

/// Parses the `KEY=VALUE` lines `postgres.sh` writes (values optionally quoted).
fn parse_env(text: &str, path: &Path) -> Result<PgTestbed, String> {
    let get = |key: &str| env_value(text, key).ok_or_else(|| format!("{key} is missing"));
    let number = |key: &str| -> Result<u32, String> {
        let value = get(key)?;
        value
            .parse()
            .map_err(|e| format!("{key}={value} is not a number: {e}"))
    };
    let port = u16::try_from(number("PG_PORT")?).map_err(|e| format!("PG_PORT: {e}"))?;
    let state_dir = env_value(text, "PG_STATE_DIR")
        .map(PathBuf::from)
        .or_else(|| path.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    Ok(PgTestbed {
        host: get("PG_HOST")?,
        port,
        database: get("PG_DATABASE")?,
        user: get("PG_USER")?,
        password_file: PathBuf::from(get("PG_PASSWORD_FILE")?),
        ca_file: PathBuf::from(get("PG_CA_FILE")?),
        url: get("PG_URL")?,
        admin_user: get("PG_ADMIN_USER")?,
        admin_password_file: PathBuf::from(get("PG_ADMIN_PASSWORD_FILE")?),
        socket_dir: env_value(text, "PG_SOCKET_DIR")
            .map_or_else(|| state_dir.join("run"), PathBuf::from),
        pid: number("PG_PID")?,
        data_dir: PathBuf::from(get("PG_DATA_DIR")?),
        bin_dir: PathBuf::from(get("PG_BIN_DIR")?),
        version: env_value(text, "PG_VERSION").unwrap_or_default(),
        log_file: env_value(text, "PG_LOG_FILE")
            .map_or_else(|| state_dir.join("postgres.log"), PathBuf::from),
        state_dir,
        env_file: path.to_path_buf(),
    })
}

fn read_secret(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{NOT_RUNNING} (cannot read the password file {}: {e})",
            path.display()
        )
    });
    text.trim_end_matches(['\n', '\r']).to_string()
}

/// `Ok(stdout)` without its trailing newline, or `Err(stderr)`.
fn psql_result(out: &Output) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout)
            .trim_end_matches('\n')
            .to_string())
    } else {
        Err(format!(
            "psql {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        ))
    }
}

/// `wb_<prefix>_<16 hex digits>`: lower-case letters, digits and `_` only, at most 63 bytes
/// (PostgreSQL's limit), so it never needs quoting.
fn database_name(prefix: &str) -> String {
    let mut clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    for strip in ["wb_", "wb-"] {
        if let Some(rest) = clean.strip_prefix(strip) {
            clean = rest.to_string();
        }
    }
    clean.truncate(40);
    // `wb-<prefix>-<16 hex>` from the OU names' generator, with `_` for `-`.
    unique_ou_name(&clean).replace('-', "_")
}

/// A value in a libpq connection string, single-quoted when it has to be.
fn conninfo_value(value: &str) -> String {
    if !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:-@".contains(c))
    {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// A quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A quoted SQL string literal.
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENV: &str = "# PostgreSQL test bed settings\nPG_HOST=127.0.0.1\nPG_PORT=55432\n\
        PG_DATABASE=writeback\nPG_USER=writeback\nPG_PASSWORD_FILE=/s/writeback.password\n\
        PG_CA_FILE=/s/tls/ca.pem\n\
        PG_URL='postgres://writeback@127.0.0.1:55432/writeback?sslmode=verify-full&sslrootcert=/s/tls/ca.pem'\n\
        PG_ADMIN_USER=postgres\nPG_ADMIN_PASSWORD_FILE=/s/admin.password\nPG_PID=4242\n\
        PG_DATA_DIR=/s/data\nPG_BIN_DIR=/usr/lib/postgresql/15/bin\n";

    #[test]
    fn parses_the_env_file_postgres_sh_writes() {
        let tb = parse_env(ENV, Path::new("/s/pg.env")).unwrap();
        assert_eq!(tb.host, "127.0.0.1");
        assert_eq!(tb.port, 55432);
        assert_eq!(tb.pid, 4242);
        assert_eq!(tb.ca_file, PathBuf::from("/s/tls/ca.pem"));
        assert!(tb
            .url
            .ends_with("sslmode=verify-full&sslrootcert=/s/tls/ca.pem"));
        // Keys with defaults.
        assert_eq!(tb.state_dir, PathBuf::from("/s"));
        assert_eq!(tb.socket_dir, PathBuf::from("/s/run"));
        assert_eq!(
            tb.url_for("wb_x_1"),
            "postgres://writeback@127.0.0.1:55432/wb_x_1?sslmode=verify-full&sslrootcert=/s/tls/ca.pem"
        );
        assert_eq!(
            tb.conninfo("wb_x_1"),
            "host=127.0.0.1 port=55432 dbname=wb_x_1 user=writeback sslmode=verify-full \
             sslrootcert=/s/tls/ca.pem"
        );
    }

    #[test]
    fn reports_missing_keys() {
        let text = ENV.replace("PG_CA_FILE=/s/tls/ca.pem\n", "");
        let err = parse_env(&text, Path::new("/s/pg.env")).unwrap_err();
        assert_eq!(err, "PG_CA_FILE is missing");
    }

    #[test]
    fn database_names_are_plain_identifiers_that_differ() {
        let a = database_name("HA lease");
        let b = database_name("wb-HA lease");
        assert!(a.starts_with("wb_ha_lease_"), "{a}");
        assert!(b.starts_with("wb_ha_lease_"), "{b}");
        assert_ne!(a, b);
        let long = database_name(&"x".repeat(200));
        assert!(long.len() <= 63, "{long}");
        assert!(long
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
    }

    #[test]
    fn quotes_conninfo_values_and_sql() {
        assert_eq!(conninfo_value("/a b/it's"), "'/a b/it\\'s'");
        assert_eq!(conninfo_value(""), "''");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
