//! The lease row on PostgreSQL.
//!
//! ```sql
//! writeback_lease(name PRIMARY KEY, holder, epoch, expires_at, acquired_at)
//! writeback_presence(instance PRIMARY KEY, token, seen_at)
//! ```
//!
//! Every statement is one round trip and decides on the database's clock (`now()`), so the
//! instances' clocks never matter. A takeover is one `INSERT ... ON CONFLICT DO UPDATE ...
//! WHERE expires_at < now()`: of two instances racing for an expired lease, the row lock
//! makes one win and the other find it taken. The epoch only grows.
//!
//! Each running instance, writer or standby, also stamps its row in `writeback_presence` with
//! its process's random token as often as it renews or polls: a second process started under
//! the same name sees the stamps of a token not its own go on, and is refused at start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use secrecy::ExposeSecret;
use tokio_postgres::{Client, GenericClient};

use super::lease::{Deadline, LeaseTimes};

/// The lease's row; one per database (one writer among the instances sharing it).
pub(super) const LEASE: &str = "writer";

#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("state.postgres.ca_file {path}: {message}")]
    CaFile { path: PathBuf, message: String },
    #[error("PostgreSQL at {host}:{port}: {message}")]
    Connect {
        host: String,
        port: u16,
        message: String,
    },
    #[error("PostgreSQL at {host}:{port} refused user {user} and its password: {message}")]
    Password {
        host: String,
        port: u16,
        user: String,
        message: String,
    },
    #[error("PostgreSQL at {host}:{port}: its certificate is not trusted: {message}")]
    Certificate {
        host: String,
        port: u16,
        message: String,
    },
    #[error("PostgreSQL lease ({op}): {source}")]
    Sql {
        op: &'static str,
        source: tokio_postgres::Error,
    },
    #[error("the lease is no longer this instance's (epoch {epoch}): another instance took over")]
    Fenced { epoch: i64 },
    #[error("this instance stopped writing (lease epoch {epoch}): {why}")]
    Lost { epoch: i64, why: String },
    #[error("the cycle lock of lease epoch {epoch} was not free within {} s: {holder} holds it", waited.as_secs())]
    CycleLockBusy {
        epoch: i64,
        waited: Duration,
        holder: String,
    },
}

/// Where the shared database is. The password is never in a URL, a log or `Debug`.
#[derive(Debug, Clone)]
pub struct PgSettings {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: secrecy::SecretString,
    /// The CA that signed the server's certificate; the server's name is checked against it.
    pub ca_file: PathBuf,
    pub connect_timeout: Duration,
    /// The schema of a `[targets.<name>]` target's state (see [`target_schema`]); `None` for
    /// the `[ad]` target, whose state is in the connection's own schema beside the lease.
    pub schema: Option<String>,
}

impl PgSettings {
    /// The same database without a target's schema: where the lease and the instances'
    /// presence are, one for all the targets.
    pub fn home(&self) -> PgSettings {
        PgSettings {
            schema: None,
            ..self.clone()
        }
    }
}

/// The schema that holds target `name`'s state: its tables under the same names as the
/// `[ad]` target's, which stay in the connection's own schema.
pub fn target_schema(name: &str) -> String {
    format!("writeback_{}", name.to_ascii_lowercase())
}

/// PostgreSQL's longest identifier, in bytes (longer ones are cut, silently).
pub const MAX_IDENTIFIER: usize = 63;

/// `name` as an SQL identifier.
fn identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The lease as the database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub holder: String,
    pub epoch: i64,
    /// Whether its expiry is still ahead on the database's clock.
    pub live: bool,
}

/// What a takeover attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Takeover {
    /// This instance holds the lease now, with this epoch, until the deadline.
    Won { epoch: i64, deadline: Deadline },
    /// Another instance holds it.
    Held(LeaseRow),
}

fn tls(ca_file: &Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect, HaError> {
    let bad = |message: String| HaError::CaFile {
        path: ca_file.to_path_buf(),
        message,
    };
    crate::ad::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// A connection over TLS (required: a server that does not offer it is refused), with the
/// server's certificate and name verified. The connection runs on a task of its own.
pub async fn connect(s: &PgSettings) -> Result<Client, HaError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&s.host)
        .port(s.port)
        .dbname(&s.database)
        .user(&s.user)
        .password(s.password.expose_secret())
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(s.connect_timeout)
        .application_name("writeback");
    let (client, conn) = config.connect(tls(&s.ca_file)?).await.map_err(|e| {
        let message = crate::printable::one_line(&error_text(&e)).into_owned();
        let (host, port) = (s.host.clone(), s.port);
        use tokio_postgres::error::SqlState;
        match e.code() {
            Some(c)
                if *c == SqlState::INVALID_PASSWORD
                    || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
            {
                HaError::Password {
                    host,
                    port,
                    user: s.user.clone(),
                    message,
                }
            }
            _ if is_certificate_error(&e) => HaError::Certificate {
                host,
                port,
                message,
            },
            _ => HaError::Connect {
                host,
                port,
                message,
            },
        }
    })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!("PostgreSQL connection closed: {e}");
        }
    });
    if let Some(schema) = &s.schema {
        in_schema(&client, schema).await?;
    }
    Ok(client)
}

/// Points `client`'s session at `schema`, created when missing: the state's tables are found
/// and created there, and the lease (never in a target's schema) in the schemas after it. The
/// schema exists before the search path names it, so no state table is ever looked up in the
/// `[ad]` target's schema instead.
async fn in_schema(client: &Client, schema: &str) -> Result<(), HaError> {
    // Under the lock the state's creation takes: instances starting together would otherwise
    // race in `CREATE SCHEMA IF NOT EXISTS` (the loser failing on the catalog's unique key).
    client
        .batch_execute(&format!(
            "BEGIN;
             SELECT pg_advisory_xact_lock({});
             CREATE SCHEMA IF NOT EXISTS {};
             COMMIT;",
            crate::state::pg::CREATE_LOCK,
            identifier(schema)
        ))
        .await
        .map_err(sql("create the target's schema"))?;
    // `writeback.target_schema` tells the state's schema check that this session is a target's:
    // its state is looked up in its own schema only (see `state::pg::schema::version`).
    client
        .execute(
            "SELECT set_config('search_path', $1 || ', ' || current_setting('search_path'), false),
                    set_config('writeback.target_schema', $2, false)",
            &[&identifier(schema), &schema],
        )
        .await
        .map_err(sql("set the target's schema"))?;
    Ok(())
}

/// Whether the TLS layer refused the server's certificate (somewhere in the error's sources).
fn is_certificate_error(e: &tokio_postgres::Error) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(rustls::Error::InvalidCertificate(_)) = c.downcast_ref::<rustls::Error>() {
            return true;
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if let Some(rustls::Error::InvalidCertificate(_)) =
                io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
            {
                return true;
            }
        }
        cause = c.source();
    }
    false
}

/// tokio-postgres's message with its source (the server's, the TLS layer's).
fn error_text(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn sql(op: &'static str) -> impl Fn(tokio_postgres::Error) -> HaError {
    move |source| HaError::Sql { op, source }
}

/// A duration as PostgreSQL's `interval * float8` takes it.
fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// One instance's hold on the lease.
pub struct PgLease {
    client: Arc<Client>,
    /// This instance, as the row names its holder (`state.postgres.instance`). Fencing does
    /// not rest on it being unique (a takeover needs the lease expired, a renewal and a fence
    /// the epoch this process won), but two live processes under one name are refused at
    /// start (see [`PgLease::renewed_by_holder`]).
    pub instance: String,
    pub times: LeaseTimes,
}

impl PgLease {
    /// Creates the lease table when it is missing.
    pub async fn open(
        client: Arc<Client>,
        instance: String,
        times: LeaseTimes,
    ) -> Result<PgLease, HaError> {
        // One transaction under an advisory lock: instances starting together would otherwise
        // race in `CREATE ... IF NOT EXISTS` (PostgreSQL can fail the loser with a duplicate
        // key in its catalog). The index: see `fence` (a takeover changes a key column, a
        // renewal does not).
        client
            .batch_execute(
                "BEGIN;
                 SELECT pg_advisory_xact_lock(7162090931386217829);
                 CREATE TABLE IF NOT EXISTS writeback_lease (
                    name text PRIMARY KEY,
                    holder text NOT NULL,
                    epoch bigint NOT NULL,
                    expires_at timestamptz NOT NULL,
                    acquired_at timestamptz NOT NULL
                 );
                 CREATE UNIQUE INDEX IF NOT EXISTS writeback_lease_epoch
                    ON writeback_lease (name, epoch);
                 CREATE TABLE IF NOT EXISTS writeback_presence (
                    instance text PRIMARY KEY,
                    token text NOT NULL,
                    seen_at timestamptz NOT NULL
                 );
                 COMMIT;",
            )
            .await
            .map_err(sql("create the table"))?;
        Ok(PgLease {
            client,
            instance,
            times,
        })
    }

    /// Takes the lease when it is free or expired (the epoch grows by one), else says who
    /// holds it.
    pub async fn try_take(&self) -> Result<Takeover, HaError> {
        let sent = Instant::now();
        let won = self
            .client
            .query_opt(
                "INSERT INTO writeback_lease AS l (name, holder, epoch, expires_at, acquired_at)
                 VALUES ($1, $2, 1, now() + $3::float8 * interval '1 second', now())
                 ON CONFLICT (name) DO UPDATE
                   SET holder = EXCLUDED.holder, epoch = l.epoch + 1,
                       expires_at = EXCLUDED.expires_at, acquired_at = now()
                   WHERE l.expires_at < now()
                 RETURNING epoch",
                &[&LEASE, &self.instance, &seconds(self.times.lease)],
            )
            .await;
        let won = match won {
            // Two first takeovers at once: the loser's insert runs into the epoch index (only
            // the primary key arbitrates the conflict). The other one holds the lease.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => None,
            other => other.map_err(sql("take over"))?,
        };
        match won {
            Some(row) => Ok(Takeover::Won {
                epoch: row.try_get(0).map_err(sql("take over"))?,
                deadline: self.times.deadline_from(sent),
            }),
            None => Ok(Takeover::Held(
                self.row().await?.ok_or(HaError::Fenced { epoch: 0 })?,
            )),
        }
    }

    /// Renews the lease of `epoch`: the new deadline, or `Fenced` when it is not ours any more
    /// (expired, or taken over).
    pub async fn renew(&self, epoch: i64) -> Result<Deadline, HaError> {
        let sent = Instant::now();
        let renewed = self
            .client
            .query_opt(
                "UPDATE writeback_lease SET expires_at = now() + $4::float8 * interval '1 second'
                 WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > now()
                 RETURNING epoch",
                &[&LEASE, &self.instance, &epoch, &seconds(self.times.lease)],
            )
            .await
            .map_err(sql("renew"))?;
        match renewed {
            Some(_) => Ok(self.times.deadline_from(sent)),
            None => Err(HaError::Fenced { epoch }),
        }
    }

    /// Gives the lease up at once (a clean stop): a standby takes over at its next try
    /// instead of waiting for the expiry.
    pub async fn release(&self, epoch: i64) -> Result<(), HaError> {
        self.client
            .execute(
                "UPDATE writeback_lease SET expires_at = now() - interval '1 millisecond'
                 WHERE name = $1 AND holder = $2 AND epoch = $3",
                &[&LEASE, &self.instance, &epoch],
            )
            .await
            .map_err(sql("release"))?;
        Ok(())
    }

    /// Whether the holder of a live lease renews it within `wait`: a running process, not
    /// one that died holding it (whose lease only runs out).
    pub async fn renewed_by_holder(&self, wait: Duration) -> Result<bool, HaError> {
        const EXPIRY: &str = "SELECT holder, epoch, extract(epoch FROM expires_at)::float8
             FROM writeback_lease WHERE name = $1 AND expires_at > now()";
        let read = || async {
            let row = self
                .client
                .query_opt(EXPIRY, &[&LEASE])
                .await
                .map_err(sql("read"))?;
            row.map(|r| -> Result<(String, i64, f64), HaError> {
                Ok((
                    r.try_get(0).map_err(sql("read"))?,
                    r.try_get(1).map_err(sql("read"))?,
                    r.try_get(2).map_err(sql("read"))?,
                ))
            })
            .transpose()
        };
        let Some((holder, epoch, expires)) = read().await? else {
            return Ok(false);
        };
        tokio::time::sleep(wait).await;
        Ok(matches!(read().await?, Some((h, e, x)) if h == holder && e == epoch && x > expires))
    }

    /// Stamps this process (`token`) as running under this instance's name.
    pub async fn stamp_presence(&self, token: &str) -> Result<(), HaError> {
        self.client
            .execute(
                "INSERT INTO writeback_presence (instance, token, seen_at) VALUES ($1, $2, now())
                 ON CONFLICT (instance) DO UPDATE SET token = EXCLUDED.token, seen_at = now()",
                &[&self.instance, &token],
            )
            .await
            .map_err(sql("stamp presence"))?;
        Ok(())
    }

    /// Takes this process's stamp away (a clean stop): the next start under the name need not
    /// wait to see whether it goes on.
    pub async fn clear_presence(&self, token: &str) -> Result<(), HaError> {
        self.client
            .execute(
                "DELETE FROM writeback_presence WHERE instance = $1 AND token = $2",
                &[&self.instance, &token],
            )
            .await
            .map_err(sql("clear presence"))?;
        Ok(())
    }

    /// Whether a process other than `token` is running under this instance's name: its stamp
    /// is renewed within `wait` (a process that died stamps no more; one stopped cleanly left
    /// none, and nothing is waited for).
    pub async fn other_process(
        &self,
        token: &str,
        wait: Duration,
    ) -> Result<OtherProcess, HaError> {
        const SEEN: &str = "SELECT token, extract(epoch FROM seen_at)::float8
             FROM writeback_presence WHERE instance = $1 AND token <> $2";
        let read = || async {
            let row = self
                .client
                .query_opt(SEEN, &[&self.instance, &token])
                .await
                .map_err(sql("read presence"))?;
            row.map(|r| -> Result<(String, f64), HaError> {
                Ok((
                    r.try_get(0).map_err(sql("read presence"))?,
                    r.try_get(1).map_err(sql("read presence"))?,
                ))
            })
            .transpose()
        };
        let Some((_, seen)) = read().await? else {
            return Ok(OtherProcess::None { stale: None });
        };
        tokio::time::sleep(wait).await;
        Ok(match read().await? {
            Some((_, later)) if later > seen => OtherProcess::Running,
            Some((stale, _)) => OtherProcess::None { stale: Some(stale) },
            None => OtherProcess::None { stale: None },
        })
    }

    /// Claims this instance's name for the process `token`: stamps it where no process has
    /// (`stale` `None`) or over the stale stamp [`PgLease::other_process`] found, in one
    /// statement. False when another process stamped the name since: of processes starting
    /// together under one name, one claims it.
    pub async fn claim_presence(&self, token: &str, stale: Option<&str>) -> Result<bool, HaError> {
        let n = match stale {
            None => {
                self.client
                    .execute(
                        "INSERT INTO writeback_presence (instance, token, seen_at)
                     VALUES ($1, $2, now()) ON CONFLICT (instance) DO NOTHING",
                        &[&self.instance, &token],
                    )
                    .await
            }
            Some(old) => {
                self.client
                    .execute(
                        "UPDATE writeback_presence SET token = $2, seen_at = now()
                     WHERE instance = $1 AND token = $3",
                        &[&self.instance, &token, &old],
                    )
                    .await
            }
        }
        .map_err(sql("claim presence"))?;
        Ok(n == 1)
    }

    /// The lease row, if any instance ever took it.
    pub async fn row(&self) -> Result<Option<LeaseRow>, HaError> {
        select_row(self.client.as_ref()).await
    }
}

/// Who else runs under an instance's name (see [`PgLease::other_process`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OtherProcess {
    /// Another process stamps the name: it is running.
    Running,
    /// None does: `stale` is the stamp a killed process left, if any.
    None { stale: Option<String> },
}

/// The lease row as any client reads it, without creating the table (`None` when no instance
/// ever took it, or the table does not exist yet): what an operator's verb checks before
/// touching a state that an instance may be writing.
pub async fn read_lease(c: &impl GenericClient) -> Result<Option<LeaseRow>, HaError> {
    let present = c
        .query_one("SELECT to_regclass('writeback_lease') IS NOT NULL", &[])
        .await
        .map_err(sql("read"))?;
    if !present.try_get::<_, bool>(0).map_err(sql("read"))? {
        return Ok(None);
    }
    select_row(c).await
}

async fn select_row(c: &impl GenericClient) -> Result<Option<LeaseRow>, HaError> {
    let row = c
        .query_opt(
            "SELECT holder, epoch, expires_at > now() FROM writeback_lease WHERE name = $1",
            &[&LEASE],
        )
        .await
        .map_err(sql("read"))?;
    row.map(|r| {
        Ok(LeaseRow {
            holder: r.try_get(0).map_err(sql("read"))?,
            epoch: r.try_get(1).map_err(sql("read"))?,
            live: r.try_get(2).map_err(sql("read"))?,
        })
    })
    .transpose()
}

/// The fence every state transaction of the writer runs first: the lease is still
/// `instance`'s at `epoch` and not expired, and its row is locked (`FOR KEY SHARE`) until the
/// transaction ends, so a takeover waits for it and a transaction begun under an old epoch
/// can never commit after a new writer started. The epoch is in a unique index, so a takeover
/// (which changes it) conflicts with that lock while a renewal (which changes only the expiry)
/// does not: the writer's own long transactions never hold up its renewals. A writer paused
/// inside a transaction is cut off by the server (`idle_in_transaction_session_timeout`, set
/// to the lease time on the store's session), so it holds a takeover up at most that long.
pub async fn fence(tx: &impl GenericClient, instance: &str, epoch: i64) -> Result<(), HaError> {
    let row = tx
        .query_opt(
            "SELECT 1 FROM writeback_lease
             WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > now()
             FOR KEY SHARE",
            &[&LEASE, &instance, &epoch],
        )
        .await
        .map_err(sql("fence"))?;
    match row {
        Some(_) => Ok(()),
        None => Err(HaError::Fenced { epoch }),
    }
}

/// Limits the store's session: a transaction left idle longer than `lease` (its process
/// paused, frozen or cut off mid-transaction) is ended by the server, so its lock on the
/// lease row (see [`fence`]) holds a takeover up at most that long.
pub async fn limit_session(c: &Client, lease: Duration) -> Result<(), HaError> {
    let ms = lease.as_millis().max(1);
    c.batch_execute(&format!("SET idle_in_transaction_session_timeout = {ms}"))
        .await
        .map_err(sql("limit the session"))
}
