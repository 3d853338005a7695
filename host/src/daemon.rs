//! The long-running host (`writeback run`): polls Graph, runs one cycle at a time, reloads the
//! rules when they change, reconciles drift on a schedule, stops cleanly on a signal.
//!
//! Everything that wants a cycle (a poll tick, a reconciliation tick, a rules edit, SIGHUP)
//! sends a wake-up into one channel; the loop drains the channel before each cycle, so a burst
//! of changes or file events gives one run, and a wake-up that arrives during a run is served
//! by the next one.
//!
//! Rules with `const SCHEDULE` have their `on_schedule(info)` run between cycles when due (a
//! timer on the next due time, recomputed after each reload), with the primitives available.
//!
//! With `[state.postgres]` several instances share the state and only the one holding the
//! lease runs cycles and schedules (`Host::take_role`); the others wait as standbys, warm.
//!
//! Under systemd (`Type=notify`) the daemon says READY=1 after its first cycle, feeds the
//! watchdog from a task of its own, says STOPPING=1 on SIGTERM/SIGINT and keeps a one-line
//! STATUS=. Without `NOTIFY_SOCKET` none of this does anything.

use sd_notify::NotifyState;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use crate::ad::{AdConn, Schema, WriteGuard};
use crate::config::{Config, WatchMode};
use crate::console::Console;
use crate::graph::GraphClient;
use crate::ha::instance::{WriterRules, NOTE_PREFIX, RULES_KEY};
use crate::ha::{Keeper, Role};
use crate::inspect::status::{rules_hash, DaemonNote, DAEMON_KEY};
use crate::metrics::Monitor;
use crate::printable::one_line;
use crate::rules::{HookTable, RuleSet, Schedule};
use crate::setup::{self, StateLock};
use crate::state::pg::{LocalCheck, PgStore};
use crate::state::{now_rfc3339, AuditEvent, Compaction, ObjectKind, Seen, StateError, Store};
use crate::sync::record::Write;
use crate::sync::report::group_refusals;
use crate::sync::state::CycleState;
use crate::sync::types::Refusal;
use crate::sync::{self, triggers, SyncContext, SyncOptions, SyncReport};
use crate::watch;

/// How often the rule folders are rescanned even without file events (a missed event, a
/// filesystem without notifications).
const SAFETY_RESCAN: Duration = Duration::from_secs(30);

/// Every `PRUNE_EVERY` cycles the history is compacted: audit events older than
/// `[state] audit_retention_days` go (with the runs left empty), and a 1 s poll's 86,400 quiet
/// runs a day are folded into one row per streak, except the newest `RECENT_RUNS`.
const RECENT_RUNS: usize = 1_000;
const PRUNE_EVERY: u64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("the rules do not load, so the host does not start:\n{0}")]
    Rules(#[from] crate::rules::LoadError),
    #[error("state store: {0}")]
    State(#[from] crate::state::StateError),
    #[error("Microsoft Graph: {0}")]
    Graph(#[from] crate::graph::GraphError),
    #[error("Active Directory: {0}")]
    Ad(#[from] crate::ad::AdError),
    #[error(transparent)]
    Watch(#[from] watch::WatchError),
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error(transparent)]
    Join(#[from] crate::ha::instance::JoinError),
    #[error("target {target}: {source}")]
    TargetState {
        target: String,
        #[source]
        source: Box<crate::ha::instance::JoinError>,
    },
    #[error("the daemon's loop ended abnormally: {0}")]
    Loop(String),
}

/// What the daemon asks of its state beyond a cycle's needs: one SQLite file of its own, or
/// a PostgreSQL database shared with other instances (`crate::ha`).
pub trait HostState: CycleState + Send {
    fn close_interrupted_runs(&mut self) -> Result<usize, StateError>;
    fn compact_history(
        &mut self,
        retention_days: u32,
        keep_recent: usize,
    ) -> Result<Compaction, StateError>;
    /// Writes the status note under `key`. On a shared state each instance writes its own,
    /// standby or not, so this write is not fenced.
    fn leave_note(&mut self, key: &str, text: &str) -> Result<(), StateError>;
    /// Fences the writes from now on (see `PgStore::set_fence`); a state of one's own has
    /// nothing to fence.
    fn fence_with(&mut self, _fence: Option<(String, i64)>, _local: Option<LocalCheck>) {}
    /// Connects again when the connection was lost; a file of one's own never is.
    fn revive(&mut self) -> Result<(), StateError> {
        Ok(())
    }
    /// Holds the shared state's cycle lock, which keeps `approve` and `release` out of the
    /// cycle (see `ha::cycles`); on a state file of one's own the file's lock does that.
    fn lock_cycles(&mut self) -> Result<(), StateError> {
        Ok(())
    }
    /// Lets go of what [`HostState::lock_cycles`] took.
    fn unlock_cycles(&mut self) {}
}

/// A store whose cycle lock is held (see [`HostState::lock_cycles`]) for as long as this
/// lives: a cycle runs on it, and dropping it lets go, however the cycle ends.
pub struct Cycling<'a, S: HostState> {
    store: &'a mut S,
}

impl<'a, S: HostState> Cycling<'a, S> {
    pub fn lock(store: &'a mut S) -> Result<Cycling<'a, S>, StateError> {
        store.lock_cycles()?;
        Ok(Cycling { store })
    }
}

impl<S: HostState> std::ops::Deref for Cycling<'_, S> {
    type Target = S;
    fn deref(&self) -> &S {
        self.store
    }
}

impl<S: HostState> std::ops::DerefMut for Cycling<'_, S> {
    fn deref_mut(&mut self) -> &mut S {
        self.store
    }
}

impl<S: HostState> Drop for Cycling<'_, S> {
    fn drop(&mut self) {
        self.store.unlock_cycles();
    }
}

impl HostState for Store {
    fn close_interrupted_runs(&mut self) -> Result<usize, StateError> {
        Store::close_interrupted_runs(self)
    }
    fn compact_history(&mut self, days: u32, keep: usize) -> Result<Compaction, StateError> {
        Store::compact_history(self, days, keep)
    }
    fn leave_note(&mut self, key: &str, text: &str) -> Result<(), StateError> {
        self.set_meta(key, text)
    }
}

impl HostState for PgStore {
    fn close_interrupted_runs(&mut self) -> Result<usize, StateError> {
        PgStore::close_interrupted_runs(self)
    }
    fn compact_history(&mut self, days: u32, keep: usize) -> Result<Compaction, StateError> {
        PgStore::compact_history(self, days, keep)
    }
    fn leave_note(&mut self, key: &str, text: &str) -> Result<(), StateError> {
        self.set_note(key, text)
    }
    fn fence_with(&mut self, fence: Option<(String, i64)>, local: Option<LocalCheck>) {
        self.set_fence(fence, local)
    }
    fn revive(&mut self) -> Result<(), StateError> {
        if PgStore::revive(self)? {
            tracing::info!("connected to PostgreSQL again");
        }
        Ok(())
    }
    fn lock_cycles(&mut self) -> Result<(), StateError> {
        self.hold_cycles(crate::ha::cycles::CYCLE_WAIT)
    }
    fn unlock_cycles(&mut self) {
        self.let_go_cycles()
    }
}

/// With `[state.postgres]`: this instance among others sharing one state, of which the one
/// holding the lease writes.
struct Shared {
    keeper: Keeper,
    instance: String,
    /// The lease epoch this instance writes under, once it took the lease.
    writing: Option<i64>,
    /// This instance's rules hash, recorded as the writer's when it takes over or reloads.
    rules: String,
}

/// Why the loop wakes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Time to ask Graph for changes.
    Poll,
    /// Time to compare every owned AD object (drift).
    Reconcile,
    /// The rule files may have changed (a hint: the folder is rescanned and hashed).
    Rules,
    /// SIGHUP: reload the rules even if their content did not change.
    ForceReload,
    /// A rule's schedule is due.
    Schedule,
    /// SIGTERM / SIGINT: finish what is running, then exit.
    Stop,
}

/// Wake-ups folded together.
#[derive(Debug, Default, Clone, Copy)]
struct Pending {
    poll: bool,
    reconcile: bool,
    rules: bool,
    force_reload: bool,
    schedule: bool,
    stop: bool,
}

impl Pending {
    fn add(&mut self, w: Wake) {
        match w {
            Wake::Poll => self.poll = true,
            Wake::Reconcile => self.reconcile = true,
            Wake::Rules => self.rules = true,
            Wake::ForceReload => self.force_reload = true,
            Wake::Schedule => self.schedule = true,
            Wake::Stop => self.stop = true,
        }
    }
}

/// One AD target the daemon writes to: its config, connection, state and rules (compiled
/// with its own settings). The first is `[ad]`; the others are `[targets.<name>]`.
struct Target<S> {
    config: Config,
    /// The connection, or the bind under way: a DC out of reach at start, or one slow to
    /// answer, is waited for in the background while the other targets carry on.
    ad: Bind,
    /// Read on first need, kept for the host's lifetime.
    schema: Option<Schema>,
    store: S,
    rules: Arc<RuleSet>,
    /// Asked before each AD write: set while this instance holds a shared state's lease.
    guard: Option<WriteGuard>,
}

/// A target's connection to its DC.
enum Bind {
    /// None yet (or the last bind failed): the next need starts one.
    Idle,
    /// A bind running on a task of its own, so a DC that does not answer (a firewall dropping
    /// packets, a frozen VM) holds up no cycle for `ad.timeout_secs`, only its own target.
    Pending(tokio::task::JoinHandle<Result<AdConn, crate::ad::AdError>>),
    Ready(Box<AdConn>),
}

/// How long a cycle waits for a bind it has just started; a bind already under way is not
/// waited for at all (its target's part of the cycle is skipped until it is done).
const BIND_WAIT: Duration = Duration::from_secs(2);

/// Starts a bind on a task of its own.
fn start_bind(config: &Config) -> Bind {
    let config = config.clone();
    Bind::Pending(tokio::spawn(
        async move { setup::ad_connection(&config).await },
    ))
}

/// A target's connection, bound now when there is none (see [`Bind`]).
async fn connection<'a>(ad: &'a mut Bind, config: &Config) -> Result<&'a mut AdConn, String> {
    let mut wait = Duration::ZERO;
    if matches!(ad, Bind::Idle) {
        *ad = start_bind(config);
        wait = BIND_WAIT;
    }
    if let Bind::Pending(handle) = ad {
        let joined = match tokio::time::timeout(wait, &mut *handle).await {
            Ok(joined) => joined,
            Err(_) => {
                return Err(
                    "AD: the DC has not answered the bind yet; tried again at the next tick".into(),
                )
            }
        };
        *ad = match joined {
            Ok(Ok(conn)) => Bind::Ready(Box::new(conn)),
            Ok(Err(e)) => {
                *ad = Bind::Idle;
                return Err(format!("AD not reached: {e}"));
            }
            Err(e) => {
                *ad = Bind::Idle;
                return Err(format!("AD bind stopped: {e}"));
            }
        };
    }
    match ad {
        Bind::Ready(conn) => Ok(conn),
        Bind::Idle | Bind::Pending(_) => Err("AD: no connection".into()),
    }
}

struct Host<S> {
    /// The `[ad]` target's config: the daemon's own settings are the same in every target's.
    config: Config,
    graph: GraphClient,
    /// Never empty: `[ad]` first.
    targets: Vec<Target<S>>,
    /// With a shared state: the lease and this instance's part.
    shared: Option<Shared>,
    fingerprint: BTreeMap<PathBuf, String>,
    cycles: u64,
    timetable: Timetable,
    /// The runtime the primitives of schedules and triggers enter from their blocking threads.
    handle: tokio::runtime::Handle,
    /// Set once the first cycle is done and READY=1 was sent (read by the watchdog task).
    ready: Arc<AtomicBool>,
    /// What `writeback status` reads of this process (kept in the state's `meta`).
    note: DaemonNote,
    /// Health and numbers for `[daemon] listen`.
    monitor: Monitor,
    /// The web console, when `[console] enabled`: told of each reload.
    console: Option<Console>,
}

/// When each rule's `on_schedule` is next due (UTC).
#[derive(Debug, Default)]
struct Timetable {
    /// Rule file -> (schedule, next due).
    due: BTreeMap<String, (Schedule, time::OffsetDateTime)>,
}

impl Timetable {
    /// Takes the schedules of freshly loaded rules. An unchanged schedule of a rule keeps its
    /// due time, so editing a rule does not postpone the others (or itself).
    fn update(&mut self, hooks: &HookTable, now: time::OffsetDateTime) {
        let mut next = BTreeMap::new();
        for (rule, s) in hooks.schedules() {
            let at = match self.due.remove(rule) {
                Some((old, at)) if old == *s => Some(at),
                _ => s.next_after(now),
            };
            match at {
                Some(at) => {
                    next.insert(rule.to_string(), (s.clone(), at));
                }
                None => tracing::warn!(rule, schedule = s.text(), "the schedule never comes due"),
            }
        }
        self.due = next;
    }

    fn next_due(&self) -> Option<time::OffsetDateTime> {
        self.due.values().map(|(_, at)| *at).min()
    }

    /// The rules due at `now`, each moved on to its next due time after `now` (no catching up
    /// on missed runs).
    fn take_due(&mut self, now: time::OffsetDateTime) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.due.retain(|rule, (s, at)| {
            if *at > now {
                return true;
            }
            out.push((rule.clone(), s.text().to_string()));
            match s.next_after(now) {
                Some(next) => {
                    *at = next;
                    true
                }
                None => false,
            }
        });
        out
    }
}

/// The tokio instant of a wall-clock time (now when it has passed).
fn instant_of(at: time::OffsetDateTime) -> tokio::time::Instant {
    let wait = at - time::OffsetDateTime::now_utc();
    tokio::time::Instant::now() + Duration::try_from(wait).unwrap_or(Duration::ZERO)
}

/// Runs until SIGTERM or SIGINT. Returns Ok after a clean stop.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    match config.postgres.clone() {
        None => run_on(config, None, |c: &Config| Ok(Store::open(&c.state_path)?)).await,
        Some(pg) => {
            // Every check before anything is written: a refusal fails the start.
            let joined = crate::ha::instance::join(&config, &pg).await?;
            tracing::info!(instance = %pg.instance, "joined the shared state; waiting for the lease");
            let shared = Shared {
                keeper: joined.keeper,
                instance: pg.instance.clone(),
                writing: None,
                rules: joined.rules,
            };
            // Each target's state is in a schema of its own, written under the one lease.
            let mut stores = BTreeMap::from([(config.target.clone(), joined.store)]);
            for t in &config.more_targets {
                if let Some(pg) = &t.postgres {
                    let store = crate::ha::instance::target_store(pg)
                        .await
                        .map_err(|source| DaemonError::TargetState {
                            target: t.target.clone(),
                            source: Box::new(source),
                        })?;
                    stores.insert(t.target.clone(), store);
                }
            }
            let daemon = run_on(config, Some(shared), move |c: &Config| {
                stores.remove(&c.target).ok_or_else(|| {
                    DaemonError::State(StateError::PgRuntime(format!(
                        "target {}: no state opened on the shared database",
                        c.target
                    )))
                })
            });
            // On a runtime worker, not on the thread of the runtime's own `block_on`: the store's
            // calls block in `block_in_place`, and on that thread, with the targets' cycles side
            // by side in the loop's task, a cycle was left waiting for a wake-up that never came
            // (the daemon hung in a cycle). On a worker, wake-ups go through the scheduler.
            tokio::spawn(daemon)
                .await
                .map_err(|e| DaemonError::Loop(e.to_string()))?
        }
    }
}

async fn run_on<S: HostState>(
    config: Config,
    shared: Option<Shared>,
    mut open: impl FnMut(&Config) -> Result<S, DaemonError>,
) -> Result<(), DaemonError> {
    // Signals first: a stop request during start-up is honoured once the loop runs.
    let (tx, rx) = mpsc::unbounded_channel();
    spawn_signals(tx.clone())?;
    let ready = Arc::new(AtomicBool::new(false));
    spawn_watchdog(ready.clone());
    let monitor = Monitor::with_max_cycle(
        config.daemon.poll_interval,
        config.daemon.ready_within_polls,
        config.daemon.ready_max_cycle,
    );
    let console = config
        .console
        .enabled
        .then(|| Console::new(&config, monitor.clone()));
    if let Some(addr) = config.daemon.listen {
        // Before anything slow: a port already taken fails the start at once.
        monitor
            .serve(addr, console.as_ref().map(Console::router))
            .await?;
    }
    notify_status("starting: loading the rules, connecting to Graph and AD");
    let roots = setup::rule_roots(&config);
    let fingerprint = watch::fingerprint(&roots);
    let several = config.has_targets();
    let mut targets = Vec::new();
    for t in config.targets() {
        let mut target_config = t.clone();
        target_config.more_targets.clear();
        targets.push(open_target(target_config, several, &monitor, &mut open)?);
    }
    if let (Some(c), Some(t)) = (&console, targets.first()) {
        c.rules_loaded(t.rules.clone());
    }
    let graph = setup::graph_client(&config)?;
    for t in &mut targets {
        t.ad = match several {
            // With one target nothing can be done without its DC: the start fails, as it
            // always did.
            false => Bind::Ready(Box::new(setup::ad_connection(&t.config).await?)),
            // With several, each binds in the background; the first cycle uses what answered.
            true => start_bind(&t.config),
        };
    }

    spawn_ticker(tx.clone(), config.daemon.poll_interval, Wake::Poll, true);
    if let Some(every) = config.daemon.reconcile_interval {
        spawn_ticker(tx.clone(), every, Wake::Reconcile, false);
    }
    spawn_ticker(tx.clone(), SAFETY_RESCAN, Wake::Rules, false);
    let (hint_tx, mut hint_rx) = mpsc::unbounded_channel();
    let mut poll_rules = config.daemon.watch == WatchMode::Poll;
    let _watcher = match watch::watch(&roots, config.daemon.watch, config.daemon.debounce, hint_tx)
    {
        Ok(w) => Some(w),
        Err(e) => {
            // E.g. the inotify watch limit: polling still sees every edit.
            tracing::warn!("{e}; watching the rules by polling instead");
            poll_rules = true;
            None
        }
    };
    if poll_rules {
        spawn_ticker(
            tx.clone(),
            config.daemon.watch_poll_interval,
            Wake::Rules,
            false,
        );
    }
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            while hint_rx.recv().await.is_some() {
                if tx.send(Wake::Rules).is_err() {
                    break;
                }
            }
        });
    }
    tracing::info!(
        poll_secs = config.daemon.poll_interval.as_secs_f64(),
        reconcile_secs = config.daemon.reconcile_interval.map(|d| d.as_secs_f64()),
        watch = ?config.daemon.watch,
        rules = %config.rules.folder.display(),
        "writeback is running"
    );
    if let Some(sh) = &shared {
        monitor.role(Some("waiting for the lease"));
        // A takeover (or a loss) runs a cycle at once rather than at the next tick.
        let mut keeper = sh.keeper.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            while keeper.changed().await {
                if tx.send(Wake::Poll).is_err() {
                    break;
                }
            }
        });
    }
    let mut timetable = Timetable::default();
    if let Some(t) = targets.first() {
        timetable.update(&t.rules.hooks(), time::OffsetDateTime::now_utc());
    }
    let mut host = Host {
        config,
        graph,
        targets,
        shared,
        fingerprint,
        cycles: 0,
        timetable,
        handle: tokio::runtime::Handle::current(),
        ready,
        note: DaemonNote::default(),
        monitor,
        console,
    };
    host.note = DaemonNote {
        pid: std::process::id(),
        started_at: now_rfc3339(),
        poll_secs: host.config.daemon.poll_interval.as_secs_f64(),
        reconcile_secs: host
            .config
            .daemon
            .reconcile_interval
            .map(|d| d.as_secs_f64()),
        ..Default::default()
    };
    host.note_rules(None);
    host.leave_note();
    host.serve(rx).await;
    host.monitor.stopping();
    host.note.stopped_at = Some(now_rfc3339());
    host.leave_note();
    if let Some(sh) = host.shared.take() {
        // Handed over at once: a standby need not wait for the lease to expire.
        sh.keeper.stop(Duration::from_secs(2)).await;
    }
    tracing::info!(cycles = host.cycles, "stopped");
    Ok(())
}

/// Opens a target's state and compiles its rules (a daemon that cannot do this for every target
/// does not start: it is the config or the rules that are wrong, not a DC).
fn open_target<S: HostState>(
    config: Config,
    several: bool,
    monitor: &Monitor,
    open: &mut impl FnMut(&Config) -> Result<S, DaemonError>,
) -> Result<Target<S>, DaemonError> {
    let rules = Arc::new(setup::load_rules(&config)?);
    let mut store = open(&config)?;
    if config.daemon.listen.is_some() {
        // Counted once here (tens of ms at 100,000 objects); whole-cache cycles count them again.
        match (
            store.count_objects(ObjectKind::Group),
            store.count_objects(ObjectKind::User),
        ) {
            (Ok(groups), Ok(users)) => {
                monitor.cached(several.then_some(config.target.as_str()), groups, users)
            }
            (Err(e), _) | (_, Err(e)) => tracing::warn!("cached objects not counted: {e}"),
        }
    }
    // On a shared state the writer closes them when it takes over (a standby writes nothing).
    if config.postgres.is_none() {
        close_interrupted(&mut store, &config.target)?;
    }
    Ok(Target {
        config,
        ad: Bind::Idle,
        schema: None,
        store,
        rules,
        guard: None,
    })
}

fn close_interrupted<S: HostState>(store: &mut S, target: &str) -> Result<(), StateError> {
    let interrupted = store.close_interrupted_runs()?;
    if interrupted > 0 {
        tracing::warn!(
            interrupted,
            target = %target,
            "earlier runs did not finish; the first cycle completes them"
        );
    }
    Ok(())
}

impl<S: HostState> Host<S> {
    /// The `[ad]` target's rules: the ones the note, the console and the schedules use.
    fn rules(&self) -> Option<Arc<RuleSet>> {
        self.targets.first().map(|t| t.rules.clone())
    }

    /// On a shared state: whether this instance may write now. It takes the writer's part
    /// when its keeper holds the lease (fencing every state write and AD write with the
    /// epoch, closing the runs a dead writer left open, recording its rules) and gives it
    /// up, saying so, when the keeper lost it. Always true on a state of one's own.
    fn take_role(&mut self) -> bool {
        let Some(sh) = &mut self.shared else {
            return true;
        };
        let role = sh.keeper.role();
        let Some(epoch) = role.may_write(Duration::ZERO) else {
            let why = match &role {
                Role::Standby { why: Some(w), .. } => w.clone(),
                Role::Standby {
                    holder: Some(h), ..
                } => format!("{h} writes"),
                _ => "waiting for the lease".to_string(),
            };
            if sh.writing.take().is_some() {
                tracing::error!("this instance stopped writing: {why}");
                for t in &mut self.targets {
                    t.store.fence_with(Some((sh.instance.clone(), 0)), None);
                    t.guard = Some(Arc::new(|| Err("standby".to_string())));
                }
            }
            self.monitor.role(Some(&why));
            let role = Some(format!("standby: {why}"));
            if self.note.role != role {
                // `writeback status` on any host shows each instance's role from its note.
                self.note.role = role;
                self.leave_note();
            }
            notify_status(&format!("standby: {why}"));
            return false;
        };
        if sh.writing != Some(epoch) {
            let check: LocalCheck = Arc::new(sh.keeper.still_writer(epoch));
            let writer = serde_json::to_string(&WriterRules {
                instance: sh.instance.clone(),
                hash: sh.rules.clone(),
            })
            .unwrap_or_default();
            for t in &mut self.targets {
                if let Err(e) = t.store.revive() {
                    tracing::warn!("{e}");
                }
                t.store
                    .fence_with(Some((sh.instance.clone(), epoch)), Some(check.clone()));
                t.guard = Some(check.clone());
                if let Err(e) = close_interrupted(&mut t.store, &t.config.target) {
                    tracing::warn!("runs left open not closed: {e}");
                }
                if let Err(e) = t.store.set_meta(RULES_KEY, &writer) {
                    tracing::warn!("rules not recorded as the writer's: {e}");
                }
            }
            sh.writing = Some(epoch);
            tracing::info!(epoch, instance = %sh.instance, "this instance holds the lease: it writes now");
            self.monitor.role(None);
            self.note.role = Some(format!("writer (epoch {epoch})"));
            self.leave_note();
        }
        true
    }

    /// On a shared state: this instance's rules hash, recomputed after a reload, and recorded
    /// as the writer's when it writes (instances joining later compare theirs with it).
    fn record_writer_rules(&mut self) {
        let Some(sh) = &mut self.shared else {
            return;
        };
        sh.rules = crate::ha::instance::rules_hash(&self.config);
        if sh.writing.is_none() {
            return;
        }
        let writer = serde_json::to_string(&WriterRules {
            instance: sh.instance.clone(),
            hash: sh.rules.clone(),
        })
        .unwrap_or_default();
        for t in &mut self.targets {
            if let Err(e) = t.store.set_meta(RULES_KEY, &writer) {
                tracing::warn!("rules not recorded as the writer's: {e}");
            }
        }
    }

    /// Records the loaded rules in the note (or, with `error`, a reload that was refused).
    fn note_rules(&mut self, error: Option<String>) {
        match error {
            Some(e) => self.note.reload_error = Some(e),
            None => {
                self.note.rules = self
                    .rules()
                    .map(|r| r.rule_names().iter().map(|r| r.to_string()).collect())
                    .unwrap_or_default();
                self.note.rules_hash = rules_hash(&self.fingerprint);
                self.note.rules_loaded_at = now_rfc3339();
                self.note.reload_error = None;
            }
        }
    }

    /// Writes the note for `writeback status` in every target's state; a failure is logged,
    /// never stops the daemon.
    fn leave_note(&mut self) {
        let text = match serde_json::to_string(&self.note) {
            Ok(t) => t,
            Err(e) => return tracing::warn!("status note not written: {e}"),
        };
        let key = match &self.shared {
            Some(sh) => format!("{NOTE_PREFIX}{}", sh.instance),
            None => DAEMON_KEY.to_string(),
        };
        for t in &mut self.targets {
            if let Err(e) = t.store.leave_note(&key, &text) {
                tracing::warn!(target = %t.config.target, "status note not written: {e}");
            }
        }
    }

    async fn serve(&mut self, mut rx: UnboundedReceiver<Wake>) {
        loop {
            let woken = match self.timetable.next_due() {
                Some(at) => tokio::select! {
                    w = rx.recv() => w,
                    _ = tokio::time::sleep_until(instant_of(at)) => Some(Wake::Schedule),
                },
                None => rx.recv().await,
            };
            let Some(first) = woken else { return };
            self.monitor.turned();
            let mut p = Pending::default();
            p.add(first);
            while let Ok(w) = rx.try_recv() {
                p.add(w);
            }
            if p.stop {
                return;
            }
            let mut run = p.poll || p.reconcile;
            if (p.rules || p.force_reload) && self.reload(p.force_reload).await {
                // New rules: re-evaluate the cached cloud objects now, without a download.
                run = true;
            }
            if run {
                self.cycle(p.reconcile).await;
                if !self.ready.swap(true, Ordering::SeqCst) {
                    // Ready once a cycle ran, failed or not: a failing cycle is retried at the
                    // next tick and its STATUS= says why.
                    notify(&[NotifyState::Ready]);
                }
            }
            // Between cycles: whatever is due by now (also when the timer fired mid-cycle).
            if p.schedule || self.timetable.next_due().is_some() {
                self.monitor.busy(true);
                self.run_schedules().await;
                self.monitor.busy(false);
            }
        }
    }

    /// Runs the `on_schedule` of every rule that is due, one after the other, and records each
    /// in the audit trail (`action = "schedule"`) of a run of mode `schedule`.
    async fn run_schedules(&mut self) {
        let now = time::OffsetDateTime::now_utc();
        let due = self.timetable.take_due(now);
        if due.is_empty() {
            return;
        }
        if !self.take_role() {
            tracing::info!(
                schedules = due.len(),
                "schedules not run: this instance is a standby"
            );
            return;
        }
        let Some(_lock) = self.lock().await else {
            return;
        };
        // Schedules run once, with the `[ad]` target's primitives and state.
        let Some(target) = self.targets.first_mut() else {
            return;
        };
        let hooks = target.rules.hooks();
        let timeout = self.config.rules.trigger_timeout;
        let ad = match connection(&mut target.ad, &target.config).await {
            Ok(ad) => ad,
            Err(e) => {
                tracing::error!("schedules not run: {e}");
                return;
            }
        };
        ad.set_write_guard(target.guard.clone());
        let effects = crate::effects::HostEffects::for_host(
            self.handle.clone(),
            &target.config,
            &self.graph,
            ad,
        );
        let effects: Arc<dyn crate::rules::Effects> = match effects {
            Ok(e) => Arc::new(e),
            Err(e) => {
                tracing::error!("schedules not run: {e}");
                return;
            }
        };
        let store = &mut target.store;
        let run_id = match store.begin_run(crate::state::RunMode::Schedule) {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::error!("schedules run unrecorded: {e}");
                None
            }
        };
        let mut failed = 0usize;
        for (rule, schedule) in &due {
            let result =
                triggers::run_schedule(hooks.clone(), rule, now, effects.clone(), timeout).await;
            match &result {
                Ok(()) => tracing::info!(rule, schedule, "schedule ran"),
                Err(e) => {
                    failed += 1;
                    tracing::warn!(rule, schedule, "schedule failed: {e}");
                }
            }
            if let Some(run_id) = run_id {
                let event = AuditEvent {
                    cloud_id: String::new(),
                    action: "schedule".into(),
                    dn: String::new(),
                    detail: serde_json::json!({
                        "rule": rule,
                        "schedule": schedule,
                        "error": result.as_ref().err().map(|e| e.to_string()),
                    }),
                    outcome: if result.is_ok() { "ok" } else { "failed" }.into(),
                };
                if let Err(e) = store.record(run_id, &[Write::Event(event)]) {
                    tracing::error!("schedule not recorded: {e}");
                }
            }
        }
        if let Some(run_id) = run_id {
            let status = match failed {
                0 => crate::state::RunStatus::Ok,
                _ => crate::state::RunStatus::Partial,
            };
            let stats = serde_json::json!({ "schedules": due.len(), "failed": failed });
            if let Err(e) = store.finish_run(run_id, status, &stats) {
                tracing::error!("schedule run not closed: {e}");
            }
        }
    }

    /// The state lock, or `None` (logged) when it cannot be had.
    async fn lock(&self) -> Option<StateLock> {
        let config = self.config.clone();
        match tokio::task::spawn_blocking(move || StateLock::acquire(&config)).await {
            Ok(Ok(l)) => Some(l),
            Ok(Err(e)) => {
                tracing::error!("skipped: {e}");
                None
            }
            Err(e) => {
                tracing::error!("skipped: {e}");
                None
            }
        }
    }

    /// Rescans the rule folders; compiles and swaps when their content changed (or `force`).
    /// A broken edit keeps the last good rules. Returns true when new rules were swapped in.
    async fn reload(&mut self, force: bool) -> bool {
        let roots = setup::rule_roots(&self.config);
        let fingerprint = watch::fingerprint(&roots);
        if !force && fingerprint == self.fingerprint {
            return false;
        }
        let configs: Vec<Config> = self.targets.iter().map(|t| t.config.clone()).collect();
        let several = configs.len() > 1;
        // Every target's rules compile (each with its settings) or none is swapped.
        let loaded = tokio::task::spawn_blocking(move || {
            configs
                .iter()
                .map(|c| {
                    setup::load_rules(c).map_err(|e| match several {
                        true => format!("target {}: {e}", c.target),
                        false => e.to_string(),
                    })
                })
                .collect::<Result<Vec<RuleSet>, String>>()
        })
        .await;
        self.fingerprint = fingerprint;
        match loaded {
            Ok(Ok(sets)) => {
                for (t, rules) in self.targets.iter_mut().zip(sets) {
                    t.rules = Arc::new(rules);
                }
                let Some(rules) = self.rules() else {
                    return false;
                };
                let names = rules.rule_names().join(", ");
                self.timetable
                    .update(&rules.hooks(), time::OffsetDateTime::now_utc());
                if let Some(c) = &self.console {
                    c.rules_loaded(rules);
                }
                tracing::info!(rules = %names, "rules reloaded");
                self.record_writer_rules();
                self.monitor.rules_reloaded(true);
                self.note_rules(None);
                self.leave_note();
                true
            }
            Ok(Err(e)) => {
                tracing::error!("rules not reloaded, the last good rules stay active:\n{e}");
                self.monitor.rules_reloaded(false);
                self.note_rules(Some(e));
                self.leave_note();
                false
            }
            Err(e) => {
                tracing::error!("rules not reloaded: the compiler stopped: {e}");
                self.monitor.rules_reloaded(false);
                false
            }
        }
    }

    /// One cycle: every target's, side by side, so a DC that hangs (a connect timing out)
    /// delays only its own target. A target that fails is reported and retried at the next
    /// tick; the others are applied as usual.
    async fn cycle(&mut self, reconcile: bool) {
        use tracing::Instrument;
        if !self.take_role() {
            return;
        }
        let started = Instant::now();
        self.monitor.cycle_started();
        self.cycles += 1;
        let several = self.targets.len() > 1;
        let graph = &self.graph;
        let compact = self.cycles.is_multiple_of(PRUNE_EVERY);
        let runs = self.targets.iter_mut().map(|target| {
            let span = tracing::info_span!("target", name = %target.config.target);
            let name = target.config.target.clone();
            let inner = span.clone();
            async move {
                let took = Instant::now();
                let result = cycle_one(target, graph, reconcile, compact).await;
                (name, span, result, took.elapsed())
            }
            .instrument(inner)
        });
        let results = futures_util::future::join_all(runs).await;
        let mut failed = Vec::new();
        let mut lines = Vec::new();
        let mut worked = false;
        for (name, span, result, took) in results {
            let _entered = span.enter();
            worked |= matches!(&result, Ok(r) if r.evaluated > 0 || r.examined > 0);
            let prefix = match several {
                true => format!("{name}: "),
                false => String::new(),
            };
            match result {
                Ok(report) => {
                    log_report(&report, reconcile, took);
                    match several {
                        true => {
                            self.monitor
                                .target_succeeded(&name, &report.figures(), reconcile, took)
                        }
                        false => self.monitor.cycle_succeeded(
                            &report.figures(),
                            reconcile,
                            started.elapsed(),
                        ),
                    }
                    lines.push(format!(
                        "{prefix}{} change(s), {} failure(s), {} refused",
                        report.counts.changes(),
                        report.failures(),
                        report.plan.refused.len(),
                    ));
                }
                Err(e) => {
                    tracing::error!("cycle failed, retried at the next tick: {e}");
                    match several {
                        true => self.monitor.target_failed(&name, took),
                        false => self.monitor.cycle_failed(&e, started.elapsed()),
                    }
                    lines.push(format!("{prefix}failed, retried at the next tick: {e}"));
                    failed.push(format!("{prefix}{e}"));
                }
            }
        }
        if several {
            let error = (!failed.is_empty()).then(|| failed.join("; "));
            self.monitor.cycle_finished(error.as_deref());
        }
        if worked {
            crate::allocator::release_freed();
        }
        notify_status(&format!(
            "cycle {}: {}, {} ms",
            self.cycles,
            lines.join("; "),
            started.elapsed().as_millis()
        ));
    }
}

/// One target's part of a cycle: under its state lock, on its connection (bound again when
/// there is none). `compact`: the run history is compacted first (under the lock).
async fn cycle_one<S: HostState>(
    t: &mut Target<S>,
    graph: &GraphClient,
    reconcile: bool,
    compact: bool,
) -> Result<SyncReport, String> {
    let lock = {
        let config = t.config.clone();
        tokio::task::spawn_blocking(move || StateLock::acquire(&config)).await
    };
    let _lock = match lock {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => return Err(format!("cycle skipped: {e}")),
        Err(e) => return Err(format!("cycle skipped: {e}")),
    };
    t.store
        .revive()
        .map_err(|e| format!("cycle skipped: {e}"))?;
    // On a shared state: no `approve` or `release` from any host while the cycle runs.
    let mut store = Cycling::lock(&mut t.store).map_err(|e| format!("cycle skipped: {e}"))?;
    // Under the lock: a plan holding the state would otherwise make it wait out SQLite's
    // busy timeout and fail.
    if compact {
        match store.compact_history(t.config.audit_retention_days, RECENT_RUNS) {
            Ok(c) => tracing::debug!(
                events_deleted = c.events_deleted,
                runs_deleted = c.runs_deleted,
                runs_folded = c.runs_folded,
                "run history compacted"
            ),
            Err(e) => tracing::warn!("compacting the run history failed: {e}"),
        }
    }
    let rules = t.rules.clone();
    let ad = connection(&mut t.ad, &t.config).await?;
    ad.set_write_guard(t.guard.clone());
    let effects = crate::effects::HostEffects::maker(&t.config, graph, ad.clone());
    sync::run(
        SyncContext {
            config: &t.config,
            graph,
            ad,
            effects: &effects,
            store: &mut *store,
            rules: &rules,
            schema: &mut t.schema,
            sink: None,
        },
        SyncOptions {
            reread_cloud: false,
            compare_all: reconcile,
            dry_run: false,
            allow_deletes: false,
            adopt: false,
        },
    )
    .await
    .map_err(|e| e.to_string())
}

/// Sends systemd's notifications; a no-op without `NOTIFY_SOCKET`. A failure is only logged:
/// the service manager being away is no reason to stop syncing.
fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("systemd notification not sent: {e}");
    }
}

/// STATUS= takes one line: errors can span several, and a long one is cut.
fn notify_status(line: &str) {
    let mut one: String = line.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some((cut, _)) = one.char_indices().nth(200) {
        one.truncate(cut);
        one.push('…');
    }
    notify(&[NotifyState::Status(&one)]);
}

/// Feeds systemd's watchdog (`WatchdogSec=`, seen as `WATCHDOG_USEC`) every half period from a
/// task of its own, so a long cycle (a first full sync, a 50,000-member group) does not starve
/// it while a wedged runtime still does. Until READY=1 each beat also extends the start
/// timeout by a period: a first sync of a large tenant is not a failed start.
fn spawn_watchdog(ready: Arc<AtomicBool>) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (period / 2).max(Duration::from_millis(1));
    let extend = u32::try_from(period.as_micros()).unwrap_or(u32::MAX);
    tokio::spawn(async move {
        let mut t = tokio::time::interval(every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            t.tick().await;
            if ready.load(Ordering::SeqCst) {
                notify(&[NotifyState::Watchdog]);
            } else {
                notify(&[
                    NotifyState::Watchdog,
                    NotifyState::ExtendTimeoutUsec(extend),
                ]);
            }
        }
    });
}

/// The groups that failed: one line per kind of reason, with the count and a few ids, and only
/// for failures that are new or changed (the same failure again is at debug level), so a rule
/// that throws for every group is one line, not one per group and poll.
fn log_failures(r: &SyncReport) {
    // A cycle that applied nothing (blocked) settled no quarantine: its refusals are all there is.
    let fresh: Vec<Refusal> = if r.quarantined.is_empty() {
        r.plan.refused.clone()
    } else {
        r.quarantined
            .iter()
            .filter(|q| q.seen != Seen::Repeated)
            .map(|q| Refusal {
                cloud_id: q.cloud_id.clone(),
                rule: None,
                reason: q.reason.clone(),
            })
            .collect()
    };
    for (kind, n, ids) in group_refusals(&fresh) {
        // A DC's message ends with a line break and may carry others: one log line each.
        let kind = one_line(kind.trim_end()).into_owned();
        tracing::warn!(
            groups = n,
            "failing: {kind} (e.g. group {}); tried again after a growing wait, or when the group, its members or the rules change",
            ids.join(", group ")
        );
    }
    let repeated = r.quarantined.len().saturating_sub(fresh.len());
    if !r.quarantined.is_empty() && repeated > 0 {
        tracing::debug!(repeated, "groups failing as before");
    }
}

fn log_report(r: &SyncReport, reconcile: bool, took: Duration) {
    let changes = r.counts.changes();
    if let Some(b) = &r.blocked {
        tracing::error!(run_id = r.run_id, "plan not applied: {b}");
    }
    log_failures(r);
    if let Some(h) = &r.held_removals {
        if h.new {
            tracing::error!(
                run_id = r.run_id,
                groups = h.groups.len(),
                first = %one_line(h.groups.first().map(|g| g.dn.as_str()).unwrap_or("")),
                "member removals held back: each would remove more than safety.member_removal_threshold_percent of a group's AD members; the groups' other changes were applied. Review with `writeback plan` or `writeback status`, approve with `writeback approve {}`",
                h.set_id
            );
        } else {
            tracing::debug!(groups = h.groups.len(), set = %h.set_id, "member removals still held back");
        }
    }
    if let Some(h) = &r.held {
        // Logged when the held set first appears or changes, not every poll.
        if h.new {
            tracing::error!(
                run_id = r.run_id,
                held = h.deletes.len(),
                "deletes held back: {}; everything else was applied. Review with `writeback plan`, approve with `writeback approve {}`",
                one_line(&h.reason),
                h.set_id
            );
        } else {
            tracing::debug!(held = h.deletes.len(), set = %h.set_id, "deletes still held back");
        }
    }
    for a in &r.adopted {
        tracing::info!(cloud_id = %a.cloud_id, dn = %one_line(&a.dn), "adopted");
    }
    // An approved delete is the one delete an operator asked for by name: logged as it lands,
    // not only in the audit trail.
    for o in r.outcomes.iter().filter(|o| {
        o.action == sync::apply::Action::Delete
            && o.ok()
            && r.approved_deletes.contains(&o.cloud_id)
    }) {
        tracing::info!(
            run_id = r.run_id,
            cloud_id = %o.cloud_id,
            dn = %one_line(&o.dn),
            "deleted after approval"
        );
    }
    if !r.foreign.is_empty() {
        tracing::info!(
            count = r.foreign.count,
            unrecorded = r.foreign.unrecorded,
            out_of_scope = r.foreign.out_of_scope,
            other_tenant = r.foreign.other_tenant,
            first = %one_line(r.foreign.examples.first().map(String::as_str).unwrap_or("")),
            "objects carrying a group anchor Writeback did not record were left alone"
        );
    }
    if reconcile {
        // On a reconciliation, a change means AD had drifted from the desired state.
        for c in &r.plan.changes {
            tracing::warn!(cloud_id = %c.cloud_id, "drift found and corrected: {}", serde_json::to_string(&c.op).unwrap_or_default());
        }
    }
    let level_info = changes > 0 || r.failures() > 0;
    if level_info {
        tracing::info!(
            run_id = r.run_id,
            mode = %r.mode,
            changes,
            failures = r.failures(),
            refused = r.plan.refused.len(),
            sweep = %r.sweep,
            evaluated = r.evaluated,
            ms = took.as_millis() as u64,
            "cycle applied"
        );
    } else {
        tracing::debug!(
            run_id = r.run_id,
            mode = %r.mode,
            sweep = %r.sweep,
            evaluated = r.evaluated,
            ms = took.as_millis() as u64,
            "cycle: no change"
        );
    }
}

fn spawn_ticker(tx: UnboundedSender<Wake>, every: Duration, wake: Wake, immediately: bool) {
    tokio::spawn(async move {
        let start = if immediately {
            tokio::time::Instant::now()
        } else {
            tokio::time::Instant::now() + every
        };
        let mut t = tokio::time::interval_at(start, every);
        // After a long cycle, don't fire a backlog of ticks: one is enough.
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            t.tick().await;
            if tx.send(wake).is_err() {
                break;
            }
        }
    });
}

fn spawn_signals(tx: UnboundedSender<Wake>) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    tokio::spawn(async move {
        loop {
            let wake = tokio::select! {
                _ = hup.recv() => Wake::ForceReload,
                _ = term.recv() => Wake::Stop,
                _ = int.recv() => Wake::Stop,
            };
            if wake == Wake::Stop {
                tracing::info!("stop requested: finishing the operation in flight");
                notify(&[
                    NotifyState::Stopping,
                    NotifyState::Status("stopping: finishing the operation in flight"),
                ]);
            }
            if tx.send(wake).is_err() {
                break;
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// What `f` logs at info and above, in the daemon's text format.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                if let Ok(mut v) = self.0.lock() {
                    v.extend_from_slice(b);
                }
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(sub, f);
        let bytes = buf.0.lock().map(|v| v.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn approved_deletes_are_logged_at_info() {
        let delete = |id: &str, error: Option<&str>| sync::apply::Outcome {
            cloud_id: id.into(),
            action: sync::apply::Action::Delete,
            dn: format!("CN={id},OU=W"),
            guid: None,
            error: error.map(str::to_string),
            member_errors: vec![],
            transient: false,
            not_created: false,
            links_added: vec![],
            links_removed: vec![],
        };
        let r = SyncReport {
            run_id: 7,
            approved_deletes: vec!["a".into(), "b".into()],
            outcomes: vec![
                delete("a", None),
                delete("b", Some("rc=50")),
                delete("c", None),
            ],
            ..Default::default()
        };
        let log = logged(|| log_report(&r, false, Duration::from_millis(5)));
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("deleted after approval"))
            .collect();
        assert_eq!(lines.len(), 1, "{log}");
        assert!(
            lines[0].contains(" INFO ")
                && lines[0].contains("cloud_id=a")
                && lines[0].contains("CN=a,OU=W"),
            "{log}"
        );
    }

    #[test]
    fn a_failing_groups_log_line_is_one_line() {
        let r = SyncReport {
            plan: sync::types::Plan {
                refused: vec![Refusal {
                    cloud_id: "g1".into(),
                    rule: None,
                    reason: "modify \"CN=x\" failed: rc=19 (constraintViolation): 000021C7: AtrErr\n\u{1b}[2J".into(),
                }],
                ..Default::default()
            },
            ..Default::default()
        };
        let log = logged(|| log_failures(&r));
        let failing: Vec<&str> = log.lines().filter(|l| l.contains("failing:")).collect();
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(
            failing[0].contains("AtrErr\\n\\u{1b}[2J (e.g. group g1)"),
            "{log}"
        );
    }

    fn hooks(files: &[(&str, &str)]) -> (tempfile::TempDir, Arc<HookTable>) {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write rule");
        }
        let stdlib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../stdlib");
        let set = RuleSet::load(
            dir.path(),
            &stdlib,
            BTreeMap::new(),
            crate::rules::Limits::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        (dir, set.hooks())
    }

    fn rule(schedule: &str) -> String {
        format!("const SCHEDULE = \"{schedule}\";\nfn scope(group) {{ false }}\nfn map(group) {{ () }}\nfn on_schedule(info) {{}}\n")
    }

    #[test]
    fn timetable_keeps_unchanged_due_times_and_never_catches_up() {
        let (_a, h) = hooks(&[
            ("10-a.rhai", &rule("1h")),
            ("20-b.rhai", &rule("0 3 * * *")),
        ]);
        let t0 = datetime!(2026-03-10 00:30:00 UTC);
        let mut tt = Timetable::default();
        tt.update(&h, t0);
        assert_eq!(tt.next_due(), Some(datetime!(2026-03-10 01:30:00 UTC)));

        // A reload with the same interval keeps its due time; a changed schedule is recomputed.
        let (_b, h) = hooks(&[
            ("10-a.rhai", &rule("1h")),
            ("20-b.rhai", &rule("0 1 * * *")),
        ]);
        tt.update(&h, datetime!(2026-03-10 00:40:00 UTC));
        assert_eq!(tt.due["10-a.rhai"].1, datetime!(2026-03-10 01:30:00 UTC));
        assert_eq!(tt.due["20-b.rhai"].1, datetime!(2026-03-10 01:00:00 UTC));
        assert!(tt.take_due(datetime!(2026-03-10 00:59:59 UTC)).is_empty());

        // Hours late: each due rule runs once and moves past now.
        let late = datetime!(2026-03-10 05:00:00 UTC);
        assert_eq!(
            tt.take_due(late),
            vec![
                ("10-a.rhai".to_string(), "1h".to_string()),
                ("20-b.rhai".to_string(), "0 1 * * *".to_string())
            ]
        );
        assert_eq!(tt.due["10-a.rhai"].1, datetime!(2026-03-10 06:00:00 UTC));
        assert_eq!(tt.due["20-b.rhai"].1, datetime!(2026-03-11 01:00:00 UTC));

        // A rule without its schedule any more leaves the timetable.
        let (_c, h) = hooks(&[("10-a.rhai", &rule("1h"))]);
        tt.update(&h, late);
        assert_eq!(tt.due.keys().collect::<Vec<_>>(), vec!["10-a.rhai"]);
    }
}
