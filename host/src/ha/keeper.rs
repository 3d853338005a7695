//! Holds the lease for the daemon: a task that takes it when free, renews it while held, and
//! says at every moment what this instance is ([`Role`]). It stops claiming the writer's role
//! at its local deadline when it cannot renew (the database away, the connection cut), before
//! the database's expiry lets another instance take over.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::lease::{Deadline, LeaseTimes};
use super::pg::{self, HaError, PgLease, PgSettings, Takeover};

/// What this instance is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Waiting: another instance writes (`holder`, when known), or the database is out of reach
    /// (`why`).
    Standby {
        holder: Option<String>,
        why: Option<String>,
    },
    /// The writer, under `epoch`, until `deadline` unless renewed.
    Active { epoch: i64, deadline: Deadline },
}

impl Role {
    /// Whether work that may take `for_` may start now as the writer: the epoch to fence it
    /// with, or `None`.
    pub fn may_write(&self, for_: Duration) -> Option<i64> {
        match self {
            Role::Active { epoch, deadline } if deadline.allows(Instant::now(), for_) => {
                Some(*epoch)
            }
            _ => None,
        }
    }
}

/// The keeper's handle: the role as it changes.
#[derive(Clone)]
pub struct Keeper {
    role: watch::Receiver<Role>,
    pub instance: String,
    /// Tells the task to give the lease up and end.
    stop: Arc<watch::Sender<bool>>,
}

impl Keeper {
    /// Starts the task. `poll`: how often a standby tries to take over. `token`: this
    /// process's presence stamp (see `pg`), renewed at every turn.
    pub fn start(
        settings: PgSettings,
        instance: String,
        token: String,
        times: LeaseTimes,
        poll: Duration,
    ) -> Keeper {
        let (tx, rx) = watch::channel(Role::Standby {
            holder: None,
            why: Some("starting".into()),
        });
        let name = instance.clone();
        let (stop, stopping) = watch::channel(false);
        let turn = Turn { times, poll, token };
        tokio::spawn(async move { hold(settings, name, turn, tx, stopping).await });
        Keeper {
            role: rx,
            instance,
            stop: Arc::new(stop),
        }
    }

    /// Gives the lease up (a clean stop: a standby takes over at its next try instead of
    /// after the expiry) and waits, at most `wait`, until that is done.
    pub async fn stop(mut self, wait: Duration) {
        let _ = self.stop.send(true);
        let _ =
            tokio::time::timeout(wait, async { while self.role.changed().await.is_ok() {} }).await;
    }

    /// A check of this instance's own view of the lease at `epoch`: `Err(why)` once it is not
    /// the writer under that epoch, or its deadline has passed (see `lease`).
    pub fn still_writer(&self, epoch: i64) -> impl Fn() -> Result<(), String> + Send + Sync {
        let role = self.role.clone();
        move || match &*role.borrow() {
            Role::Active { epoch: e, deadline }
                if *e == epoch && deadline.allows(Instant::now(), Duration::ZERO) =>
            {
                Ok(())
            }
            Role::Active { epoch: e, .. } if *e == epoch => {
                Err("the lease was not renewed in time".to_string())
            }
            Role::Active { epoch: e, .. } => Err(format!(
                "the lease was taken again under epoch {e}, not {epoch}"
            )),
            Role::Standby { holder, why } => Err(match (holder, why) {
                (_, Some(why)) => format!("standby: {why}"),
                (Some(h), None) => format!("standby: {h} writes"),
                (None, None) => "standby".to_string(),
            }),
        }
    }

    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// Waits until the role changes (or the task ended).
    pub async fn changed(&mut self) -> bool {
        self.role.changed().await.is_ok()
    }
}

/// How the keeper turns: its timings and the process's presence token.
struct Turn {
    times: LeaseTimes,
    poll: Duration,
    token: String,
}

async fn hold(
    settings: PgSettings,
    instance: String,
    turn: Turn,
    tx: watch::Sender<Role>,
    mut stopping: watch::Receiver<bool>,
) {
    let Turn { times, poll, token } = turn;
    let mut lease: Option<PgLease> = None;
    // Set when told to stop, or when every handle is gone (the sender dropped).
    let mut stop = false;
    loop {
        if tx.is_closed() || stop || *stopping.borrow() {
            // Nobody listens: give the lease up for a quick takeover, then end.
            let last = tx.borrow().clone();
            if let (Some(l), Role::Active { epoch, .. }) = (&lease, last) {
                let _ = l.release(epoch).await;
            }
            if let Some(l) = &lease {
                let _ = l.clear_presence(&token).await;
            }
            // Dropping the sender ends the waits of `Keeper::stop`.
            return;
        }
        if lease.is_none() {
            match connect(&settings, &instance, times).await {
                Ok(l) => lease = Some(l),
                Err(e) => lost_or_waiting(&tx, &e),
            }
        }
        if let Some(l) = &lease {
            // A failed stamp is only a later start's check missing this process; the lease's
            // own statements below find the connection's trouble.
            if let Err(e) = l.stamp_presence(&token).await {
                tracing::debug!("presence not stamped: {e}");
            }
        }
        let current = tx.borrow().clone();
        let next = match (&lease, current) {
            (None, _) => poll,
            (Some(l), Role::Active { epoch, deadline }) => match l.renew(epoch).await {
                Ok(d) => {
                    tx.send_replace(Role::Active {
                        epoch,
                        deadline: deadline.extended(d),
                    });
                    times.renew_every
                }
                Err(e @ HaError::Fenced { .. }) => {
                    tracing::error!("{e}; no more writes from this instance");
                    standby(&tx, None, Some(e.to_string()));
                    poll
                }
                Err(e) => {
                    // Tried again soon; the role stays until its deadline passes.
                    tracing::warn!("lease not renewed: {e}");
                    lease = None;
                    lost_or_waiting(&tx, &e);
                    times.renew_every.min(poll)
                }
            },
            (Some(l), Role::Standby { .. }) => match l.try_take().await {
                Ok(Takeover::Won { epoch, deadline }) => {
                    tracing::info!(epoch, "this instance is the writer now");
                    tx.send_replace(Role::Active { epoch, deadline });
                    times.renew_every
                }
                Ok(Takeover::Held(row)) => {
                    standby(&tx, Some(row.holder), None);
                    poll
                }
                Err(e) => {
                    lease = None;
                    standby(&tx, None, Some(e.to_string()));
                    poll
                }
            },
        };
        // Wake for the deadline too: the role must turn to standby at it, renewal or not.
        let now_role = tx.borrow().clone();
        let wake = match now_role {
            Role::Active { deadline, .. } => next.min(deadline.left(Instant::now())),
            Role::Standby { .. } => next,
        };
        tokio::select! {
            _ = tokio::time::sleep(wake.max(Duration::from_millis(10))) => {}
            _ = stopping.changed() => {
                stop = true;
                continue;
            }
        }
        let after = tx.borrow().clone();
        if let Role::Active { deadline, .. } = after {
            if !deadline.allows(Instant::now(), Duration::ZERO) {
                tracing::error!(
                    "the lease could not be renewed in time; this instance stops writing"
                );
                standby(
                    &tx,
                    None,
                    Some("the lease could not be renewed in time".into()),
                );
            }
        }
    }
}

async fn connect(s: &PgSettings, instance: &str, times: LeaseTimes) -> Result<PgLease, HaError> {
    let client = pg::connect(s).await?;
    PgLease::open(Arc::new(client), instance.to_string(), times).await
}

fn standby(tx: &watch::Sender<Role>, holder: Option<String>, why: Option<String>) {
    let role = Role::Standby { holder, why };
    tx.send_if_modified(|r| {
        let changed = *r != role;
        *r = role.clone();
        changed
    });
}

/// The database is out of reach: a standby says why; the writer keeps its role until its
/// deadline (checked by the loop).
fn lost_or_waiting(tx: &watch::Sender<Role>, e: &HaError) {
    if matches!(*tx.borrow(), Role::Standby { .. }) {
        standby(tx, None, Some(e.to_string()));
    }
}
