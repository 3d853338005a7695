//! A one-shot verb that writes (`writeback sync`, `adopt`) on a shared state: it becomes the
//! writer for its duration, through the lease, like a daemon; or it is refused when another
//! instance writes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::instance::{join, JoinError};
use super::{Keeper, Role};
use crate::config::{Config, PostgresConfig};
use crate::state::pg::{LocalCheck, PgStore};

#[derive(Debug, thiserror::Error)]
pub enum OneShotError {
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error("instance {holder} holds the lease and writes; a second writer is refused: run the verb on {holder}'s host, or stop that instance and run it again")]
    HeldBy { holder: String },
    #[error("the lease was not taken within {0:?}: {1}")]
    NotTaken(Duration, String),
}

/// The writer's part for one verb: the store fenced with the lease, the check for AD writes,
/// and the keeper renewing the lease until [`Writer::done`].
pub struct Writer {
    /// The state of the target `take` was given (taken by the caller).
    pub store: Option<PgStore>,
    pub check: LocalCheck,
    pub epoch: i64,
    keeper: Keeper,
}

impl Writer {
    /// Joins and takes the lease (refused at once when another instance holds it). `config`
    /// is the whole file's (its rules hash covers every target); [`Writer::store`] is the
    /// state of `pg`'s target.
    pub async fn take(config: &Config, pg: &PostgresConfig) -> Result<Writer, OneShotError> {
        let joined = join(config, pg).await?;
        let mut keeper = joined.keeper;
        let wait = pg.times.lease + pg.standby_poll;
        let until = Instant::now() + wait;
        loop {
            match keeper.role() {
                Role::Active { epoch, .. } => {
                    let check: LocalCheck = Arc::new(keeper.still_writer(epoch));
                    let mut store = joined.store;
                    store.set_fence(Some((pg.instance.clone(), epoch)), Some(check.clone()));
                    return Ok(Writer {
                        store: Some(store),
                        check,
                        epoch,
                        keeper,
                    });
                }
                Role::Standby {
                    holder: Some(holder),
                    ..
                } => {
                    keeper.stop(Duration::from_secs(1)).await;
                    return Err(OneShotError::HeldBy { holder });
                }
                Role::Standby { why, .. } => {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() || tokio::time::timeout(left, keeper.changed()).await.is_err()
                    {
                        keeper.stop(Duration::from_secs(1)).await;
                        return Err(OneShotError::NotTaken(
                            wait,
                            why.unwrap_or_else(|| "no answer".into()),
                        ));
                    }
                }
            }
        }
    }

    /// The state of another target (`pg`: its `[state.postgres]`, its own schema), fenced
    /// with this writer's lease like [`Writer::store`].
    pub async fn target_store(&self, pg: &PostgresConfig) -> Result<PgStore, OneShotError> {
        let mut store = super::instance::target_store(pg).await?;
        store.set_fence(
            Some((pg.instance.clone(), self.epoch)),
            Some(self.check.clone()),
        );
        Ok(store)
    }

    /// Gives the lease up.
    pub async fn done(self) {
        self.keeper.stop(Duration::from_secs(2)).await;
    }
}
