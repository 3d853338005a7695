//! The state on PostgreSQL: the same tables, keys and semantics as the SQLite store at schema
//! version 12, for several instances sharing one database (see `crate::ha`): the daemon and
//! `writeback sync` with `[state.postgres]` run on it, the engine through
//! `sync::state::CycleState` (`sync/state_pg.rs`). [`copy`] moves a whole state between it and
//! a SQLite store (`writeback state copy`).
//!
//! The store's API is synchronous, as [`super::Store`]'s is: the engine calls it from async
//! code without awaiting. Each call runs its queries on the runtime captured at
//! [`PgStore::open`] inside `tokio::task::block_in_place`, which needs the multi-thread
//! runtime (the daemon and the CLI use it; `open` refuses any other).
//!
//! Every write is a transaction of its own (a single statement too), so that, when the store
//! was opened with a fence (this instance and its lease epoch), the fence runs first in each
//! one: a writer that lost its lease can never commit. Reads run outside transactions.
//!
//! Times are stored as the SQLite store stores them (fixed-width RFC 3339 text, Unix seconds
//! as `bigint`), so values read back are byte for byte the same on both backends; text
//! columns use the "C" collation so that ordering and keyset paging compare bytes, as SQLite
//! does.

mod cache;
pub mod copy;
mod history;
mod owned;
mod schema;

use std::future::Future;

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio_postgres::{Client, GenericClient, Row, Transaction};

use super::StateError;

pub use copy::{postgres_to_sqlite, sqlite_to_postgres, Copied, CopyError};
pub(crate) use schema::CREATE_LOCK;
pub use schema::SCHEMA_VERSION;

/// Writes usable inside [`PgStore::with_transaction`]: the same behaviour as the SQLite
/// store's `state::tx` functions of the same names; the `settle_*` and `*_all` ones do for a
/// whole batch what those do one row at a time.
pub mod tx {
    pub use super::cache::{
        clear_all_pending, forget_settled_member_changes, groups_named, mark_pending,
    };
    pub use super::owned::{
        anchors, approve_any, begin_run, call_delivered, call_failed, edit_unresolved, finish_run,
        put_call, put_link, record_event, record_events, record_failure, release_all,
        release_groups, remove_link, remove_links, replace_held, set_unresolved, settle_anchors,
        settle_applied, settle_intents, settle_unresolved, Net,
    };
}

pub use owned::with_instance;

/// The state store on PostgreSQL. Owns its connection.
pub struct PgStore {
    client: Client,
    handle: Handle,
    /// This instance and its lease epoch: checked first by every write transaction.
    fence: Option<(String, i64)>,
    /// This process's own view of the lease (its deadline, by its monotonic clock): asked
    /// before the database, so a process that woke past its deadline writes nothing.
    local: Option<LocalCheck>,
    /// Where to connect again when the connection was lost (the server restarted, a
    /// failover of PostgreSQL itself): see [`PgStore::revive`].
    settings: Option<(crate::ha::PgSettings, std::time::Duration)>,
    /// The epoch whose cycle lock this store's session holds (see `ha::cycles`).
    cycling: Option<i64>,
    /// That lock's first key: its target's (see `ha::cycles::class`).
    lock_class: i32,
}

/// Whether this process still holds the lease by its own clock: `Err(why)` when not.
pub type LocalCheck = std::sync::Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What messages call the database (the `path` of the errors shared with the SQLite store).
pub(crate) const PATH: &str = "(PostgreSQL)";

impl PgStore {
    /// Takes the connection, and creates the schema in one transaction when the database has
    /// none (refusing a newer schema). With `fence` (instance, epoch) every write transaction
    /// first checks that the lease is still that instance's at that epoch
    /// (`ha::pg::fence`). Call from within the multi-thread tokio runtime.
    pub fn open(client: Client, fence: Option<(String, i64)>) -> Result<PgStore, StateError> {
        let handle = Handle::try_current()
            .map_err(|e| StateError::PgRuntime(format!("no tokio runtime: {e}")))?;
        // block_in_place panics on the current-thread runtime: refused here instead.
        if handle.runtime_flavor() != RuntimeFlavor::MultiThread {
            return Err(StateError::PgRuntime(
                "the store needs the multi-thread tokio runtime".into(),
            ));
        }
        let mut store = PgStore {
            client,
            handle,
            fence,
            local: None,
            settings: None,
            cycling: None,
            lock_class: crate::ha::cycles::class(None),
        };
        store.with_transaction(async |t| schema::ensure(t).await)?;
        Ok(store)
    }

    /// Fences the writes from now on with `fence` (this instance, its epoch), and `local`,
    /// this process's own view of the lease, asked first. `None` writes unfenced (a store
    /// used by one process alone).
    pub fn set_fence(&mut self, fence: Option<(String, i64)>, local: Option<LocalCheck>) {
        self.fence = fence;
        self.local = local;
    }

    /// Limits this session for several instances sharing the state (see
    /// `ha::pg::limit_session`: a transaction left idle `lease` long is ended), and lets
    /// [`PgStore::revive`] connect again with `settings` and the same limit.
    pub fn share(
        &mut self,
        settings: crate::ha::PgSettings,
        lease: std::time::Duration,
    ) -> Result<(), StateError> {
        block_on(
            &self.handle,
            crate::ha::pg::limit_session(&self.client, lease),
        )
        .map_err(StateError::Lease)?;
        self.lock_class = crate::ha::cycles::class(settings.schema.as_deref());
        self.settings = Some((settings, lease));
        Ok(())
    }

    /// Connects again when the connection is closed (the server went away and came back):
    /// true when it did. The schema is not created again (it was there).
    pub fn revive(&mut self) -> Result<bool, StateError> {
        if !self.client.is_closed() {
            return Ok(false);
        }
        let Some((settings, lease)) = &self.settings else {
            return Ok(false);
        };
        let client = block_on(&self.handle, async {
            let c = crate::ha::pg::connect(settings).await?;
            crate::ha::pg::limit_session(&c, *lease).await?;
            Ok(c)
        })
        .map_err(StateError::Lease)?;
        self.client = client;
        // A session lock goes with its session.
        self.cycling = None;
        Ok(true)
    }

    /// Holds the cycle lock of this store's epoch on its session until
    /// [`PgStore::let_go_cycles`], waiting at most `wait` for a verb's transaction (see
    /// `ha::cycles`). A store not fenced as a writer has no cycle to keep verbs out of.
    pub fn hold_cycles(&mut self, wait: std::time::Duration) -> Result<(), StateError> {
        let Some((instance, epoch)) = self.fence.as_ref().filter(|(_, e)| *e > 0) else {
            return Ok(());
        };
        let (who, epoch) = (format!("writeback cycle of {instance}"), *epoch);
        self.let_go_cycles();
        block_on(
            &self.handle,
            crate::ha::cycles::hold(&self.client, self.lock_class, epoch, &who, wait),
        )
        .map_err(StateError::Lease)?;
        self.cycling = Some(epoch);
        Ok(())
    }

    /// Lets go of the cycle lock taken by [`PgStore::hold_cycles`]. A failure is only logged:
    /// the session it fails on is gone, and the lock with it.
    pub fn let_go_cycles(&mut self) {
        if let Some(epoch) = self.cycling.take() {
            let let_go = crate::ha::cycles::let_go(&self.client, self.lock_class, epoch);
            if let Err(e) = block_on(&self.handle, let_go) {
                tracing::warn!("{e}");
            }
        }
    }

    /// The instance and epoch writes are fenced with.
    pub fn fence(&self) -> Option<(&str, i64)> {
        self.fence.as_ref().map(|(i, e)| (i.as_str(), *e))
    }

    /// Checks the fence now, without writing: this process's view, then the database's
    /// (the lease is still this instance's at its epoch). Run before each batch of AD writes.
    pub fn check_fence(&mut self) -> Result<(), StateError> {
        if self.fence.is_none() {
            return Ok(());
        }
        self.with_transaction(async |_| Ok(()))
    }

    /// The schema version recorded in the database.
    pub fn schema_version(&self) -> Result<Option<i64>, StateError> {
        self.block(schema::version(&self.client))
    }

    /// Runs `f` in one write transaction (after the fence, when the store has one): committed
    /// when it returns `Ok`, rolled back on `Err`. Use the functions in [`tx`] inside.
    pub fn with_transaction<T>(
        &mut self,
        f: impl AsyncFnOnce(&Transaction<'_>) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let PgStore {
            client,
            handle,
            fence,
            local,
            settings: _,
            cycling: _,
            lock_class: _,
        } = self;
        if let (Some((_, epoch)), Some(local)) = (fence.as_ref(), local.as_ref()) {
            local().map_err(|why| {
                StateError::Lease(crate::ha::HaError::Lost { epoch: *epoch, why })
            })?;
        }
        let fence = fence.as_ref();
        block_on(handle, async move {
            let t = client
                .transaction()
                .await
                .map_err(pg(|| "begin transaction".into()))?;
            if let Some((instance, epoch)) = fence {
                crate::ha::pg::fence(&t, instance, *epoch)
                    .await
                    .map_err(StateError::Lease)?;
            }
            // Dropped uncommitted on an error: tokio-postgres rolls it back.
            let out = f(&t).await?;
            t.commit()
                .await
                .map_err(pg(|| "commit transaction".into()))?;
            Ok(out)
        })
    }

    /// Runs a read on the connection, outside any transaction.
    fn block<F: Future>(&self, fut: F) -> F::Output {
        block_on(&self.handle, fut)
    }

    fn client(&self) -> &Client {
        &self.client
    }
}

/// The schema version a database holds, `None` when it has none (nothing is created).
pub async fn stored_schema(c: &impl GenericClient) -> Result<Option<i64>, StateError> {
    schema::version(c).await
}

/// Waits for `fut` on `handle` from synchronous code running inside the runtime.
///
/// The wait parks this thread with the standard library's parker, not with `handle.block_on`:
/// on the thread of the runtime's own `block_on` (where the daemon's loop runs), a nested
/// `block_on` parks on the same parker as the outer one and can take the wake-up meant for
/// another future of the calling task (the targets' cycles run side by side in one task),
/// which then sleeps for ever. The queries themselves run on the connection's task.
fn block_on<F: Future>(handle: &Handle, fut: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    tokio::task::block_in_place(|| {
        // Timers and sockets (a connection made again) need the runtime's drivers.
        let _entered = handle.enter();
        let waker = Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut fut = std::pin::pin!(fut);
        loop {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out;
            }
            // Returns at the next wake-up (or spuriously: the future is polled again).
            std::thread::park();
        }
    })
}

/// Attaches the operation to a PostgreSQL error.
pub(crate) fn pg(op: impl FnOnce() -> String) -> impl FnOnce(tokio_postgres::Error) -> StateError {
    move |cause| StateError::Postgres { op: op(), cause }
}

/// Column `i` of `row`, or an error naming the operation.
pub(crate) fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    i: usize,
    op: &dyn Fn() -> String,
) -> Result<T, StateError> {
    row.try_get(i)
        .map_err(|cause| StateError::Postgres { op: op(), cause })
}

/// A count as `usize` (counts are never negative).
pub(crate) fn count(n: i64) -> usize {
    usize::try_from(n).unwrap_or(0)
}

/// A limit or size as PostgreSQL's `bigint`.
pub(crate) fn big(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Runs `sql` and reads column 0 of every row.
pub(crate) async fn column<T>(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    op: &dyn Fn() -> String,
) -> Result<Vec<T>, StateError>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    let rows = c.query(sql, params).await.map_err(pg(op))?;
    rows.iter().map(|r| get(r, 0, op)).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// The daemon's loop runs in the runtime's own `block_on`, its targets' cycles side by side
    /// in one task: a store call waiting inside one of them must not swallow the wake-up of
    /// another (which would then sleep for ever).
    #[test]
    fn a_wait_inside_the_runtimes_block_on_leaves_the_other_futures_wake_ups_alone() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            else {
                return;
            };
            let handle = rt.handle().clone();
            rt.block_on(async move {
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let _ = tx.send(());
                });
                // Polled first: waits for the message, sent while the other one blocks.
                let waiting = async { rx.await.is_ok() };
                let blocking = async {
                    super::block_on(&handle, tokio::time::sleep(Duration::from_millis(200)));
                };
                let (got, ()) = tokio::join!(waiting, blocking);
                let _ = done.send(got);
            });
        });
        assert_eq!(
            finished.recv_timeout(Duration::from_secs(10)),
            Ok(true),
            "the waiting future was never woken"
        );
    }
}
