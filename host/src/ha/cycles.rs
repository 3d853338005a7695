//! The cycle lock: what keeps `writeback approve` and `writeback release` from changing a
//! shared state while the writer's cycle runs (on a state file of one's own, the file's lock
//! does this). Both verbs change only the state, never AD, so neither takes the lease: the
//! writer keeps it, and applies an approval in its next cycle.
//!
//! A PostgreSQL advisory lock whose keys are the target ([`class`]) and the lease's epoch. The
//! writer holds its epoch's key on its store's session for each cycle ([`hold`], [`let_go`]). A verb takes the key of the
//! epoch it reads for one transaction ([`wait_in`]), then checks in that transaction that the
//! lease is still at that epoch, locking the lease row `FOR KEY SHARE` so that no takeover
//! happens before it commits; when the epoch moved on, it tries again with the new one.
//!
//! This lock only orders the verbs against cycles; it fences nothing. A session lock goes with
//! its connection while its client may believe it still holds it (see the `ha` module), so
//! what keeps a deposed writer from writing stays the lease and its fence (`pg::fence`). Keyed
//! by epoch, a deposed writer still holding its old epoch's key (paused mid-cycle, its session
//! open) holds up neither the verbs nor the new writer, and whatever it would still write is
//! refused by the fence. The writer holds the key on the session its state transactions use:
//! if that session is lost, so is every write the cycle would make without the lock.

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient, Transaction};

use super::instance::{connect, JoinError};
use super::pg::{limit_session, HaError, LEASE};
use crate::config::PostgresConfig;
use crate::state::pg::{stored_schema, PgStore};
use crate::state::StateError;

/// The advisory lock's first key ("WBcy") for the `[ad]` target's state; the second is the
/// epoch (two `int4` keys, a space apart from the one-`bigint` keys the schema's creation uses).
const CLASS: i32 = 0x5742_6379;

/// The first key of the cycle lock of the state in `schema` (a `[targets.<name>]` target's;
/// `None`: the `[ad]` target's). Each target's cycles and verbs order among themselves: the
/// daemon runs the targets' cycles side by side, each on its own store's session.
pub fn class(schema: Option<&str>) -> i32 {
    let Some(schema) = schema else {
        return CLASS;
    };
    let digest: [u8; 32] = Sha256::digest(schema.as_bytes()).into();
    let [a, b, c, d, ..] = digest;
    let first = i32::from_be_bytes([a, b, c, d]);
    // Never the `[ad]` target's, whatever the name.
    match first == CLASS {
        true => !CLASS,
        false => first,
    }
}

/// How long a writer's cycle waits for a verb's transaction before it is skipped (retried at
/// the next tick). A verb's transaction takes milliseconds, and one frozen inside it is ended
/// by the server after `lease_secs` (its session is limited as the store's is).
pub const CYCLE_WAIT: Duration = Duration::from_secs(30);

/// How long a verb waits for the writer's cycle to end before it gives up, naming the holder.
pub const VERB_WAIT: Duration = Duration::from_secs(60);

/// How many times a verb tries again when the lease moves on while it waits.
const ATTEMPTS: usize = 3;

/// The second key for `epoch` (epochs only grow by one at a takeover: they never reach it,
/// but a wrap would only share a key with an epoch two billion takeovers away).
fn key(epoch: i64) -> i32 {
    i32::try_from(epoch.rem_euclid(1 << 31)).unwrap_or(0)
}

fn sql(op: &'static str) -> impl Fn(tokio_postgres::Error) -> HaError {
    move |source| HaError::Sql { op, source }
}

/// `text` as an SQL string literal (for `SET`, which takes no parameters).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn millis(d: Duration) -> u128 {
    d.as_millis().max(1)
}

/// Takes the cycle lock of `epoch` on `c`'s session, waiting at most `wait`, and names the
/// session after `who` so that a verb kept waiting can say who holds it. Held until
/// [`let_go`] or the session's end.
pub async fn hold(
    c: &Client,
    class: i32,
    epoch: i64,
    who: &str,
    wait: Duration,
) -> Result<(), HaError> {
    // One round trip; `SET LOCAL` bounds this wait only (a session lock outlives the
    // transaction that took it).
    let taken = c
        .batch_execute(&format!(
            "BEGIN; SET LOCAL lock_timeout = {}; SET application_name = {};
             SELECT pg_advisory_lock({class}, {}); COMMIT",
            millis(wait),
            literal(who),
            key(epoch),
        ))
        .await;
    let Err(e) = taken else {
        return Ok(());
    };
    // The transaction is left aborted: ended before anything else runs on the session.
    c.batch_execute("ROLLBACK")
        .await
        .map_err(sql("take the cycle lock"))?;
    match e.code() {
        Some(code) if *code == SqlState::LOCK_NOT_AVAILABLE => Err(HaError::CycleLockBusy {
            epoch,
            waited: wait,
            holder: holder(c, class, epoch).await?,
        }),
        _ => Err(HaError::Sql {
            op: "take the cycle lock",
            source: e,
        }),
    }
}

/// Lets go of the cycle lock of `epoch` held on `c`'s session.
pub async fn let_go(c: &Client, class: i32, epoch: i64) -> Result<(), HaError> {
    c.execute("SELECT pg_advisory_unlock($1, $2)", &[&class, &key(epoch)])
        .await
        .map_err(sql("let go of the cycle lock"))?;
    Ok(())
}

/// In a verb's transaction: the lease's epoch now, its cycle lock (held until the transaction
/// ends; waiting at most `wait` for a cycle to end), and the lease kept at that epoch until
/// the transaction ends. `Ok(None)`: the lease moved on meanwhile; roll back and try again.
pub async fn wait_in(
    t: &Transaction<'_>,
    class: i32,
    wait: Duration,
) -> Result<Option<i64>, HaError> {
    let epoch = epoch_now(t).await?;
    // A savepoint: a wait that times out leaves the transaction usable, to name the holder.
    t.batch_execute(&format!(
        "SAVEPOINT cycle_lock; SET LOCAL lock_timeout = {}",
        millis(wait)
    ))
    .await
    .map_err(sql("wait for the cycle lock"))?;
    let taken = t
        .execute(
            "SELECT pg_advisory_xact_lock($1, $2)",
            &[&class, &key(epoch)],
        )
        .await;
    match taken {
        Ok(_) => t
            .batch_execute("RELEASE SAVEPOINT cycle_lock")
            .await
            .map_err(sql("wait for the cycle lock"))?,
        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
            t.batch_execute("ROLLBACK TO SAVEPOINT cycle_lock")
                .await
                .map_err(sql("wait for the cycle lock"))?;
            return Err(HaError::CycleLockBusy {
                epoch,
                waited: wait,
                holder: holder(t, class, epoch).await?,
            });
        }
        Err(source) => {
            return Err(HaError::Sql {
                op: "wait for the cycle lock",
                source,
            })
        }
    }
    Ok((pin(t, epoch).await? == epoch).then_some(epoch))
}

/// The lease's epoch, 0 when no instance ever took it.
async fn epoch_now(c: &impl GenericClient) -> Result<i64, HaError> {
    Ok(super::read_lease(c).await?.map_or(0, |l| l.epoch))
}

/// Keeps the lease at its epoch until the transaction ends and returns that epoch: the row
/// locked `FOR KEY SHARE` (a takeover changes the epoch, a key, and waits; a renewal does not),
/// or, when no instance ever took the lease, the table locked against a first takeover.
async fn pin(t: &Transaction<'_>, epoch: i64) -> Result<i64, HaError> {
    if epoch == 0 {
        let present = t
            .query_one("SELECT to_regclass('writeback_lease') IS NOT NULL", &[])
            .await
            .map_err(sql("keep the lease"))?;
        if !present
            .try_get::<_, bool>(0)
            .map_err(sql("keep the lease"))?
        {
            // No instance ever ran here: none holds the cycle lock of an epoch to come.
            return Ok(0);
        }
        t.batch_execute("LOCK TABLE writeback_lease IN SHARE MODE")
            .await
            .map_err(sql("keep the lease"))?;
    }
    let row = t
        .query_opt(
            "SELECT epoch FROM writeback_lease WHERE name = $1 FOR KEY SHARE",
            &[&LEASE],
        )
        .await
        .map_err(sql("keep the lease"))?;
    match row {
        Some(r) => r.try_get(0).map_err(sql("keep the lease")),
        None => Ok(0),
    }
}

/// Who holds the cycle lock of `epoch`: the holding session's name and server PID.
async fn holder(c: &impl GenericClient, class: i32, epoch: i64) -> Result<String, HaError> {
    let row = c
        .query_opt(
            "SELECT a.application_name, a.pid, coalesce(host(a.client_addr), 'a local socket')
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
                     SELECT oid FROM pg_database WHERE datname = current_database())
               AND l.classid::bigint = $1 AND l.objid::bigint = $2 AND l.objsubid = 2
             LIMIT 1",
            &[&i64::from(class), &i64::from(key(epoch))],
        )
        .await
        .map_err(sql("find the cycle lock's holder"))?;
    let Some(r) = row else {
        return Ok("a session that let go meanwhile".into());
    };
    let name: String = r.try_get(0).map_err(sql("find the cycle lock's holder"))?;
    let pid: i32 = r.try_get(1).map_err(sql("find the cycle lock's holder"))?;
    let from: String = r.try_get(2).map_err(sql("find the cycle lock's holder"))?;
    let name = match name.is_empty() {
        true => "a session".to_string(),
        false => format!("\"{}\"", crate::printable::one_line(&name)),
    };
    Ok(format!(
        "{name} (PostgreSQL backend pid {pid}, from {from})"
    ))
}

#[derive(Debug, thiserror::Error)]
pub enum BetweenError {
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error("state.postgres: {0}")]
    State(#[from] StateError),
    #[error("state.postgres: the database holds no state yet: no instance has synced into it (run `writeback sync` or start the daemon)")]
    Empty,
    #[error("{0}: the writer's cycle is still running; run the command again when it is over")]
    Busy(#[source] HaError),
    #[error("state.postgres: the lease changed hands {ATTEMPTS} times while waiting for the cycle lock; run the command again")]
    Moving,
}

/// A verb that changes a shared state between the writer's cycles: a session of its own,
/// its store unfenced (the verb is no writer: the lock, not the lease, keeps it out of the
/// cycles; see the module's doc).
pub struct Between {
    store: PgStore,
    instance: String,
    wait: Duration,
    /// The cycle lock's first key for this target's state.
    class: i32,
}

impl Between {
    /// Connects for `verb` (the session is named after it and this instance); refuses a
    /// database without a state.
    pub async fn open(
        pg: &PostgresConfig,
        verb: &str,
        wait: Duration,
    ) -> Result<Between, BetweenError> {
        let client = connect(pg).await?;
        if stored_schema(&client).await?.is_none() {
            return Err(BetweenError::Empty);
        }
        // A verb frozen inside its transaction (which holds the cycle lock) is ended by the
        // server after `lease_secs`, as a writer's would be.
        limit_session(&client, pg.times.lease)
            .await
            .map_err(StateError::Lease)?;
        client
            .batch_execute(&format!(
                "SET application_name = {}",
                literal(&format!("writeback {verb} by {}", pg.instance))
            ))
            .await
            .map_err(|cause| StateError::Postgres {
                op: "name the session".into(),
                cause,
            })?;
        Ok(Between {
            store: PgStore::open(client, None)?,
            instance: pg.instance.clone(),
            wait,
            class: class(pg.settings.schema.as_deref()),
        })
    }

    /// Runs `f` in one transaction that holds the cycle lock of the lease's epoch (waiting for
    /// a running cycle up to the wait given at [`Between::open`]); `f` gets the transaction and
    /// this instance's name (for the audit trail). Synchronous, like the store's calls.
    pub fn run<T>(
        &mut self,
        f: impl AsyncFn(&Transaction<'_>, &str) -> Result<T, StateError>,
    ) -> Result<T, BetweenError> {
        let Between {
            store,
            instance,
            wait,
            class,
        } = self;
        for _ in 0..ATTEMPTS {
            let done = store.with_transaction(async |t| {
                match wait_in(t, *class, *wait).await.map_err(StateError::Lease)? {
                    Some(_) => f(t, instance).await.map(Some),
                    None => Ok(None),
                }
            });
            match done {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => continue,
                Err(StateError::Lease(e @ HaError::CycleLockBusy { .. })) => {
                    return Err(BetweenError::Busy(e))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(BetweenError::Moving)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epochs_key_is_itself_within_int4_and_never_negative() {
        assert_eq!(key(0), 0);
        assert_eq!(key(7), 7);
        assert_eq!(key(i64::from(i32::MAX)), i32::MAX);
        assert_eq!(key(i64::from(i32::MAX) + 1), 0);
        assert!(key(-1) >= 0);
    }

    #[test]
    fn each_targets_cycle_lock_is_its_own_and_the_first_keeps_its_key() {
        assert_eq!(class(None), CLASS);
        let (a, b) = (class(Some("writeback_a")), class(Some("writeback_b")));
        assert_ne!(a, b);
        assert!(a != CLASS && b != CLASS);
        assert_eq!(a, class(Some("writeback_a")), "stable");
    }

    #[test]
    fn a_session_name_is_quoted_as_a_literal() {
        assert_eq!(literal("writeback a"), "'writeback a'");
        assert_eq!(literal("o'brien"), "'o''brien'");
    }
}
