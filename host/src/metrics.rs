//! What `writeback run` tells a monitoring system: its numbers in Prometheus text format at
//! `/metrics`, and `/healthz` and `/readyz`, served at `[daemon] listen` from a task of its own.
//!
//! The numbers go through the `metrics` facade to a recorder installed only by [`Monitor::serve`]:
//! without `listen` (and in the one-shot verbs) the recording calls do nothing. The daemon
//! records after each cycle from its report and on each reload; the Graph client counts its
//! requests. Health is kept beside the numbers, in a small shared state the loop updates.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics::{Label, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub const CYCLES: &str = "writeback_cycles_total";
pub const CYCLE_SECONDS: &str = "writeback_cycle_duration_seconds";
pub const CHANGES: &str = "writeback_changes_total";
pub const CHANGE_FAILURES: &str = "writeback_change_failures_total";
pub const REFUSED: &str = "writeback_refused_groups_total";
pub const QUARANTINED: &str = "writeback_quarantined_groups";
pub const HELD_DELETES: &str = "writeback_held_deletes";
pub const HELD_REMOVALS: &str = "writeback_held_member_removal_groups";
pub const FOREIGN: &str = "writeback_foreign_objects";
pub const LAST_SUCCESS: &str = "writeback_last_success_timestamp_seconds";
pub const GRAPH_REQUESTS: &str = "writeback_graph_requests_total";
pub const GRAPH_THROTTLED: &str = "writeback_graph_throttled_total";
pub const GRAPH_RETRIES: &str = "writeback_graph_retries_total";
pub const RELOADS: &str = "writeback_rule_reloads_total";
pub const CACHED: &str = "writeback_cached_objects";
pub const TRIGGER_CALLS: &str = "writeback_trigger_calls";
pub const TRIGGER_DELIVERIES: &str = "writeback_trigger_deliveries_total";
pub const HA_ACTIVE: &str = "writeback_ha_active";

/// Every metric the daemon exports, by the name a scrape shows (histograms by their base name).
/// The alert rules and the dashboard in packaging/monitoring are checked against it.
pub const ALL: [&str; 18] = [
    CYCLES,
    CYCLE_SECONDS,
    CHANGES,
    CHANGE_FAILURES,
    REFUSED,
    QUARANTINED,
    HELD_DELETES,
    HELD_REMOVALS,
    FOREIGN,
    LAST_SUCCESS,
    GRAPH_REQUESTS,
    GRAPH_THROTTLED,
    GRAPH_RETRIES,
    RELOADS,
    CACHED,
    TRIGGER_CALLS,
    TRIGGER_DELIVERIES,
    HA_ACTIVE,
];

/// The histograms of [`ALL`]: a query names them with `_bucket`, `_count` or `_sum`.
pub const HISTOGRAMS: [&str; 1] = [CYCLE_SECONDS];

/// The `kind` labels of changes.
pub const CHANGE_KINDS: [&str; 3] = ["create", "update", "delete"];
/// The `outcome` labels of trigger calls that ran.
pub const DELIVERY_OUTCOMES: [&str; 3] = ["ok", "failed", "given_up"];

/// One cycle's figures as the metrics record them. The sync engine fills it from its report
/// (`SyncReport::figures`), so the metrics know nothing of the engine's types.
#[derive(Debug, Clone, Default)]
pub struct CycleFigures {
    /// The `sweep` label.
    pub sweep: &'static str,
    /// Each change applied: its `kind` label (one of [`CHANGE_KINDS`]) and whether AD took
    /// it whole.
    pub changes: Vec<(&'static str, bool)>,
    pub refused: usize,
    pub quarantined: usize,
    pub held_deletes: usize,
    pub held_removal_groups: usize,
    pub foreign: usize,
    /// Cached groups and users, when the cycle counted them.
    pub cached: Option<(usize, usize)>,
    /// The `outcome` label (one of [`DELIVERY_OUTCOMES`]) of each trigger call that ran.
    pub deliveries: Vec<&'static str>,
    /// Recorded trigger calls not yet delivered, when the cycle counted them.
    pub calls: Option<CallFigures>,
}

/// Recorded trigger calls by state.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallFigures {
    pub pending: usize,
    pub retrying: usize,
    pub given_up: usize,
}

/// The `sweep` label of a cycle that stopped with an error before its report.
pub const FAILED_SWEEP: &str = "failed";

/// From an idle poll (a millisecond) to a first sync of a large tenant (an hour and more).
const CYCLE_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// A reason in `/readyz` is one line, and an error can be long.
const REASON_CHARS: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("`daemon.listen` = {addr}: cannot serve the metrics there: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("`daemon.listen`: the metrics recorder cannot be installed: {0}")]
    Recorder(String),
}

/// One Graph HTTP request sent (each attempt, retries included).
pub fn graph_request() {
    counter!(GRAPH_REQUESTS).increment(1);
}

/// Graph answered 429.
pub fn graph_throttled() {
    counter!(GRAPH_THROTTLED).increment(1);
}

/// A failed Graph request is sent again.
pub fn graph_retry() {
    counter!(GRAPH_RETRIES).increment(1);
}

/// Help text for every metric; counters and gauges start at zero, so a scrape shows them (and
/// `rate()` works) before the first event. The foreign-object gauge and the last success are
/// left out until they are known: zero would claim something.
fn describe() {
    describe_counter!(
        CYCLES,
        "Cycles run, by sweep (idle, changed, first sync, rules changed, full read, reconciliation; failed: stopped by an error)"
    );
    describe_histogram!(
        CYCLE_SECONDS,
        Unit::Seconds,
        "Duration of a cycle, by sweep"
    );
    describe_counter!(
        CHANGES,
        "Changes applied to AD, by kind (create, update, delete)"
    );
    describe_counter!(
        CHANGE_FAILURES,
        "Changes AD refused in whole or in part, by kind"
    );
    describe_counter!(
        REFUSED,
        "Groups refused before anything was written (outside the managed OUs, schema, foreign object, rule error), once per cycle that refused them"
    );
    describe_gauge!(QUARANTINED, "Groups in quarantine after the last cycle");
    describe_gauge!(
        HELD_DELETES,
        "Deletes held back for approval after the last cycle (writeback approve)"
    );
    describe_gauge!(
        HELD_REMOVALS,
        "Groups whose member removals are held back for approval after the last cycle (writeback approve)"
    );
    describe_gauge!(
        FOREIGN,
        "Objects carrying a group anchor Writeback did not record, left alone (last reconciliation)"
    );
    describe_gauge!(
        LAST_SUCCESS,
        Unit::Seconds,
        "Unix time at which the last successful cycle ended"
    );
    describe_counter!(
        GRAPH_REQUESTS,
        "HTTP requests sent to Microsoft Graph, retries included"
    );
    describe_counter!(GRAPH_THROTTLED, "Graph requests answered 429 (throttled)");
    describe_counter!(
        GRAPH_RETRIES,
        "Graph requests sent again after a 429, 503, 504 or a transport failure"
    );
    describe_counter!(
        RELOADS,
        "Rule reloads, by result (ok; failed: the last good rules stayed)"
    );
    describe_gauge!(
        CACHED,
        "Cloud objects in the cache, by kind (group, user); counted at start and by cycles that look at every group"
    );
    describe_gauge!(
        TRIGGER_CALLS,
        "Recorded trigger calls not yet delivered, by state (pending: not tried yet; retrying: failed, tried again later; given_up: failed every attempt)"
    );
    describe_counter!(
        TRIGGER_DELIVERIES,
        "Trigger call attempts, by outcome (ok, failed: tried again later, given_up: the last attempt failed)"
    );
    describe_gauge!(
        HA_ACTIVE,
        "With [state.postgres]: 1 while this instance holds the lease and writes, 0 while it is a standby"
    );
    for outcome in DELIVERY_OUTCOMES {
        counter!(TRIGGER_DELIVERIES, "outcome" => outcome).absolute(0);
    }
    for kind in CHANGE_KINDS {
        counter!(CHANGES, "kind" => kind).absolute(0);
        counter!(CHANGE_FAILURES, "kind" => kind).absolute(0);
    }
    for result in ["ok", "failed"] {
        counter!(RELOADS, "result" => result).absolute(0);
    }
    for name in [REFUSED, GRAPH_REQUESTS, GRAPH_THROTTLED, GRAPH_RETRIES] {
        counter!(name).absolute(0);
    }
    gauge!(QUARANTINED).set(0.0);
    gauge!(HELD_DELETES).set(0.0);
    gauge!(HELD_REMOVALS).set(0.0);
}

/// A series' labels: `pairs`, and `target` in configs with several AD targets (a config with
/// one keeps the series it always had).
fn labels(target: Option<&str>, pairs: &[(&'static str, &'static str)]) -> Vec<Label> {
    let mut all: Vec<Label> = pairs.iter().map(|(k, v)| Label::new(*k, *v)).collect();
    if let Some(t) = target {
        all.push(Label::new("target", t.to_string()));
    }
    all
}

/// Records one cycle's figures. `reconcile`: the cycle compared every owned AD object, so
/// its foreign count is the whole picture.
fn record_cycle(t: Option<&str>, f: &CycleFigures, reconcile: bool, took: Duration) {
    counter!(CYCLES, labels(t, &[("sweep", f.sweep)])).increment(1);
    histogram!(CYCLE_SECONDS, labels(t, &[("sweep", f.sweep)])).record(took.as_secs_f64());
    record_changes(t, f.changes.iter().copied());
    counter!(REFUSED, labels(t, &[])).increment(f.refused as u64);
    gauge!(QUARANTINED, labels(t, &[])).set(f.quarantined as f64);
    gauge!(HELD_DELETES, labels(t, &[])).set(f.held_deletes as f64);
    gauge!(HELD_REMOVALS, labels(t, &[])).set(f.held_removal_groups as f64);
    if reconcile {
        gauge!(FOREIGN, labels(t, &[])).set(f.foreign as f64);
    }
    if let Some((groups, users)) = f.cached {
        record_cached(t, groups, users);
    }
    for outcome in &f.deliveries {
        counter!(TRIGGER_DELIVERIES, labels(t, &[("outcome", *outcome)])).increment(1);
    }
    if let Some(c) = &f.calls {
        gauge!(TRIGGER_CALLS, labels(t, &[("state", "pending")])).set(c.pending as f64);
        gauge!(TRIGGER_CALLS, labels(t, &[("state", "retrying")])).set(c.retrying as f64);
        gauge!(TRIGGER_CALLS, labels(t, &[("state", "given_up")])).set(c.given_up as f64);
    }
    gauge!(LAST_SUCCESS, labels(t, &[])).set(unix_now());
}

/// Each change applied (`true`) or refused by AD in whole or in part, by `kind` label.
fn record_changes(t: Option<&str>, changes: impl Iterator<Item = (&'static str, bool)>) {
    for (kind, ok) in changes {
        let name = if ok { CHANGES } else { CHANGE_FAILURES };
        counter!(name, labels(t, &[("kind", kind)])).increment(1);
    }
}

fn record_failure(t: Option<&str>, took: Duration) {
    counter!(CYCLES, labels(t, &[("sweep", FAILED_SWEEP)])).increment(1);
    histogram!(CYCLE_SECONDS, labels(t, &[("sweep", FAILED_SWEEP)])).record(took.as_secs_f64());
}

fn record_cached(t: Option<&str>, groups: usize, users: usize) {
    gauge!(CACHED, labels(t, &[("kind", "group")])).set(groups as f64);
    gauge!(CACHED, labels(t, &[("kind", "user")])).set(users as f64);
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What the daemon loop is doing, for `/healthz` and `/readyz`.
#[derive(Debug)]
struct State {
    /// The loop last took a wake-up or finished a piece of work.
    last_turn: Instant,
    /// A cycle or the schedules are running since then (long ones are legitimate).
    busy_since: Option<Instant>,
    /// The cycle in flight started then.
    cycle_since: Option<Instant>,
    last_success: Option<Instant>,
    /// Why the last cycle failed; `None` when it succeeded (or none ran).
    last_error: Option<String>,
    stopping: bool,
    /// With a shared state: why this instance does not write now (another one does).
    standby: Option<String>,
}

/// The daemon's side: health kept for the endpoints, numbers recorded for `/metrics`.
#[derive(Debug, Clone)]
pub struct Monitor {
    state: Arc<Mutex<State>>,
    poll: Duration,
    polls: u32,
    /// A cycle in flight longer than this is unreadiness (a stuck webhook, a hanging DC).
    max_cycle: Duration,
}

impl Monitor {
    /// `poll` and `ready_within_polls`: `/readyz` fails when no cycle succeeded within
    /// `ready_within_polls` poll intervals.
    pub fn new(poll: Duration, ready_within_polls: u32) -> Monitor {
        Self::with_max_cycle(poll, ready_within_polls, Duration::from_secs(900))
    }

    /// As [`Monitor::new`], and `/readyz` also fails while one cycle has run longer than
    /// `max_cycle`.
    pub fn with_max_cycle(poll: Duration, ready_within_polls: u32, max_cycle: Duration) -> Monitor {
        Monitor {
            state: Arc::new(Mutex::new(State {
                last_turn: Instant::now(),
                busy_since: None,
                cycle_since: None,
                last_success: None,
                last_error: None,
                stopping: false,
                standby: None,
            })),
            poll,
            polls: ready_within_polls.max(1),
            max_cycle,
        }
    }

    /// Installs the recorder, binds `addr` and serves the endpoints (and `more`, the console's
    /// routes when it is on) from a task of their own. Returns the address bound. Call once per
    /// process (the recorder is global).
    pub async fn serve(
        &self,
        addr: SocketAddr,
        more: Option<axum::Router>,
    ) -> Result<SocketAddr, MetricsError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let handle = install()?;
        describe();
        {
            // Histogram samples are folded into their buckets by the upkeep, also between scrapes.
            let handle = handle.clone();
            tokio::spawn(async move {
                let mut t = tokio::time::interval(Duration::from_secs(5));
                loop {
                    t.tick().await;
                    handle.run_upkeep();
                }
            });
        }
        let mut app = router(handle, self.clone());
        let console = more.is_some();
        if let Some(more) = more {
            app = app.merge(more);
        }
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(%bound, "the metrics endpoint stopped: {e}");
            }
        });
        if console {
            tracing::info!(%bound, "serving /metrics, /healthz, /readyz and the console at /console");
        } else {
            tracing::info!(%bound, "serving /metrics, /healthz and /readyz");
        }
        Ok(bound)
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A panic elsewhere while holding the lock leaves plain data: keep using it.
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s)
    }

    /// The loop took a wake-up.
    pub fn turned(&self) {
        self.with(|s| s.last_turn = Instant::now());
    }

    /// The loop starts (`true`) or ends (`false`) a piece of work that may take long (the
    /// schedules; cycles say so themselves).
    pub fn busy(&self, busy: bool) {
        self.with(|s| {
            let now = Instant::now();
            s.busy_since = busy.then_some(now);
            s.last_turn = now;
        });
    }

    pub fn cycle_started(&self) {
        self.with(|s| {
            let now = Instant::now();
            s.cycle_since = Some(now);
            s.busy_since = Some(now);
        });
    }

    pub fn cycle_succeeded(&self, figures: &CycleFigures, reconcile: bool, took: Duration) {
        record_cycle(None, figures, reconcile, took);
        self.cycle_finished(None);
    }

    /// A cycle stopped with `error` (or could not start).
    pub fn cycle_failed(&self, error: &str, took: Duration) {
        record_failure(None, took);
        self.cycle_finished(Some(error));
    }

    /// One target's cycle in a config with several: its figures, labelled with its name.
    /// [`Monitor::cycle_finished`] says how the targets' cycles went together.
    pub fn target_succeeded(
        &self,
        target: &str,
        figures: &CycleFigures,
        reconcile: bool,
        took: Duration,
    ) {
        record_cycle(Some(target), figures, reconcile, took);
    }

    /// One target's cycle failed (see [`Monitor::target_succeeded`]).
    pub fn target_failed(&self, target: &str, took: Duration) {
        record_failure(Some(target), took);
    }

    /// The cycle (every target's) is over: `error` says why one failed. Readiness counts a
    /// cycle as successful only when every target's was.
    pub fn cycle_finished(&self, error: Option<&str>) {
        let Some(error) = error else {
            return self.succeeded();
        };
        self.with(|s| {
            s.last_error = Some(one_line(error));
            s.cycle_since = None;
            s.busy_since = None;
            s.last_turn = Instant::now();
        });
    }

    fn succeeded(&self) {
        self.with(|s| {
            let now = Instant::now();
            s.last_success = Some(now);
            s.last_error = None;
            s.cycle_since = None;
            s.busy_since = None;
            s.last_turn = now;
        });
    }

    pub fn rules_reloaded(&self, ok: bool) {
        counter!(RELOADS, "result" => if ok { "ok" } else { "failed" }).increment(1);
    }

    /// Cloud objects in the cache (counted where it is cheap: at start, whole-cache cycles).
    pub fn cached(&self, target: Option<&str>, groups: usize, users: usize) {
        record_cached(target, groups, users);
    }

    /// With a shared state: this instance writes (`None`) or waits as a standby (`Some(why)`).
    /// A standby is alive (`/healthz`) but not ready (`/readyz`: 503 naming the writer).
    pub fn role(&self, standby: Option<&str>) {
        gauge!(HA_ACTIVE).set(if standby.is_none() { 1.0 } else { 0.0 });
        self.with(|s| {
            s.standby = standby.map(one_line);
            s.last_turn = Instant::now();
        });
    }

    /// The loop has ended: the process is about to exit.
    pub fn stopping(&self) {
        self.with(|s| s.stopping = true);
    }

    /// What `/readyz` would answer now: ready or not, and why.
    pub fn readiness_now(&self) -> (bool, String) {
        match self.readiness(Instant::now()) {
            Probe::Up(why) => (true, why),
            Probe::Down(why) => (false, why),
        }
    }

    fn window(&self) -> Duration {
        self.poll.saturating_mul(self.polls)
    }

    /// 200 while the loop turns: a wake-up comes every poll, so a loop that neither turned nor
    /// works for several polls (at least a minute) is stuck.
    fn health(&self, now: Instant) -> Probe {
        let stall = self.window().saturating_mul(2).max(Duration::from_secs(60));
        self.with(|s| {
            if s.stopping {
                return Probe::Down("stopping".to_string());
            }
            if let Some(since) = s.busy_since {
                return Probe::Up(format!(
                    "ok: working for {:.1} s",
                    now.saturating_duration_since(since).as_secs_f64()
                ));
            }
            let idle = now.saturating_duration_since(s.last_turn);
            if idle > stall {
                return Probe::Down(format!(
                    "the daemon loop has not turned for {:.1} s",
                    idle.as_secs_f64()
                ));
            }
            Probe::Up("ok".to_string())
        })
    }

    /// 200 when a cycle succeeded within the window. A cycle in flight does not count against
    /// it (the time is taken up to its start, so a long reconciliation is not unreadiness,
    /// while failing cycles are) until it has run longer than `max_cycle`: then it is stuck.
    fn readiness(&self, now: Instant) -> Probe {
        let window = self.window();
        let polls = self.polls;
        let poll = self.poll.as_secs_f64();
        let max_cycle = self.max_cycle;
        self.with(|s| {
            if s.stopping {
                return Probe::Down("stopping".to_string());
            }
            if let Some(why) = &s.standby {
                return Probe::Down(format!("standby: {why}"));
            }
            if let Some(running) = s.cycle_since.map(|c| now.saturating_duration_since(c)) {
                if running > max_cycle {
                    return Probe::Down(format!(
                        "the cycle in flight has run {:.0} s, more than daemon.ready_max_cycle_secs ({} s)",
                        running.as_secs_f64(),
                        max_cycle.as_secs()
                    ));
                }
            }
            let failed = s
                .last_error
                .as_deref()
                .map(|e| format!("; the last cycle failed: {e}"))
                .unwrap_or_default();
            let Some(success) = s.last_success else {
                return Probe::Down(match &s.last_error {
                    Some(e) => format!("no cycle has succeeded yet; the last one failed: {e}"),
                    None => "starting: the first cycle has not finished".to_string(),
                });
            };
            let upto = s.cycle_since.unwrap_or(now).max(success);
            let stale = upto.saturating_duration_since(success);
            if stale > window {
                return Probe::Down(format!(
                    "no successful cycle for {:.1} s (more than {polls} polls of {poll} s){failed}",
                    stale.as_secs_f64()
                ));
            }
            Probe::Up(format!(
                "ready: the last successful cycle ended {:.1} s ago",
                now.saturating_duration_since(success).as_secs_f64()
            ))
        })
    }
}

fn install() -> Result<PrometheusHandle, MetricsError> {
    builder()?
        .install_recorder()
        .map_err(|e| MetricsError::Recorder(e.to_string()))
}

fn builder() -> Result<PrometheusBuilder, MetricsError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(CYCLE_SECONDS.to_string()), CYCLE_BUCKETS)
        .map_err(|e| MetricsError::Recorder(e.to_string()))
}

/// Whitespace (newlines included) collapsed, cut to [`REASON_CHARS`].
fn one_line(text: &str) -> String {
    let mut one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some((cut, _)) = one.char_indices().nth(REASON_CHARS) {
        one.truncate(cut);
        one.push('…');
    }
    one
}

#[derive(Clone)]
struct Served {
    handle: PrometheusHandle,
    monitor: Monitor,
}

fn router(handle: PrometheusHandle, monitor: Monitor) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Served { handle, monitor })
}

type Page = (
    axum::http::StatusCode,
    [(axum::http::header::HeaderName, &'static str); 1],
    String,
);

fn page(status: axum::http::StatusCode, content_type: &'static str, body: String) -> Page {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, content_type)],
        body,
    )
}

async fn metrics_page(axum::extract::State(s): axum::extract::State<Served>) -> Page {
    page(
        axum::http::StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        s.handle.render(),
    )
}

/// What `/healthz` or `/readyz` finds: up or down, with the line that says why.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Probe {
    Up(String),
    Down(String),
}

impl Probe {
    #[cfg(test)]
    fn is_up(&self) -> bool {
        matches!(self, Probe::Up(_))
    }

    /// Why it is down, if it is.
    #[cfg(test)]
    fn down(self) -> Option<String> {
        match self {
            Probe::Up(_) => None,
            Probe::Down(why) => Some(why),
        }
    }
}

fn verdict(probe: Probe) -> Page {
    let (status, line) = match probe {
        Probe::Up(line) => (axum::http::StatusCode::OK, line),
        Probe::Down(line) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, line),
    };
    page(status, "text/plain; charset=utf-8", format!("{line}\n"))
}

async fn healthz(axum::extract::State(s): axum::extract::State<Served>) -> Page {
    verdict(s.monitor.health(Instant::now()))
}

/// Only "ready" or "not ready": the endpoint answers without authentication, and the reason
/// can name the bind account or the DCs. The reason is logged, and `writeback status` and the
/// metrics tell the rest.
async fn readyz(axum::extract::State(s): axum::extract::State<Served>) -> Page {
    readyz_page(s.monitor.readiness(Instant::now()))
}

fn readyz_page(probe: Probe) -> Page {
    verdict(match probe {
        Probe::Up(_) => Probe::Up("ready".into()),
        Probe::Down(reason) => {
            tracing::debug!(%reason, "/readyz: not ready");
            // The reason stays in the log; a standby says what it is (nothing to hide there,
            // and a load balancer's operator wants to tell it from a failure).
            match reason.starts_with("standby") {
                true => Probe::Down("not ready: standby".into()),
                false => Probe::Down("not ready".into()),
            }
        }
    })
}

/// Renders what `f` records, through a recorder of its own (tests).
#[cfg(test)]
fn rendered(f: impl FnOnce()) -> String {
    let recorder = builder().unwrap_or_else(|e| panic!("{e}")).build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder as &dyn metrics::Recorder, f);
    handle.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample `name{labels}` (labels as rendered, without braces).
    fn value(text: &str, sample: &str) -> Option<f64> {
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            l.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    #[test]
    fn a_report_becomes_counters_and_gauges_with_help() {
        let r = CycleFigures {
            sweep: "changed",
            quarantined: 4,
            refused: 1,
            held_deletes: 2,
            foreign: 7,
            ..Default::default()
        };
        let changes = [
            ("create", true),
            ("create", true),
            ("update", true),
            ("delete", false),
        ];
        let text = rendered(|| {
            describe();
            record_cycle(None, &r, false, Duration::from_millis(30));
            record_changes(None, changes.into_iter());
            record_cycle(None, &r, false, Duration::from_secs(20));
            record_changes(None, changes.into_iter());
        });
        let v = |s: &str| value(&text, s).unwrap_or_else(|| panic!("no {s} in:\n{text}"));
        assert_eq!(v("writeback_cycles_total{sweep=\"changed\"}"), 2.0);
        assert_eq!(v("writeback_changes_total{kind=\"create\"}"), 4.0);
        assert_eq!(v("writeback_changes_total{kind=\"update\"}"), 2.0);
        assert_eq!(v("writeback_changes_total{kind=\"delete\"}"), 0.0);
        assert_eq!(v("writeback_change_failures_total{kind=\"delete\"}"), 2.0);
        assert_eq!(v("writeback_refused_groups_total"), 2.0);
        assert_eq!(v("writeback_quarantined_groups"), 4.0);
        assert_eq!(v("writeback_held_deletes"), 2.0);
        assert_eq!(v("writeback_graph_requests_total"), 0.0);
        // A histogram with the buckets set here, not a summary.
        assert_eq!(
            v("writeback_cycle_duration_seconds_bucket{sweep=\"changed\",le=\"0.1\"}"),
            1.0
        );
        assert_eq!(
            v("writeback_cycle_duration_seconds_bucket{sweep=\"changed\",le=\"30\"}"),
            2.0
        );
        assert_eq!(
            v("writeback_cycle_duration_seconds_count{sweep=\"changed\"}"),
            2.0
        );
        // Not a reconciliation: the foreign count is not the whole picture and is left out.
        assert!(
            value(&text, "writeback_foreign_objects").is_none(),
            "{text}"
        );
        assert!(v("writeback_last_success_timestamp_seconds") > 1.7e9);
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert!(line.starts_with("writeback_"), "{line}");
        }
        for name in [CYCLES, CHANGES, QUARANTINED, HELD_DELETES, CYCLE_SECONDS] {
            let help = format!("# HELP {name} ");
            assert!(text.contains(&help), "no help for {name}:\n{text}");
        }
    }

    /// Every family a scrape can show is in [`ALL`] and every name there shows up, once each
    /// kind of figure is recorded; [`HISTOGRAMS`] are exactly the histograms.
    #[test]
    fn all_lists_exactly_the_exported_metrics() {
        let r = CycleFigures {
            sweep: "reconciliation",
            changes: vec![("create", true), ("delete", false)],
            refused: 1,
            quarantined: 1,
            held_deletes: 1,
            held_removal_groups: 1,
            foreign: 1,
            cached: Some((1, 1)),
            deliveries: vec!["ok"],
            calls: Some(CallFigures {
                pending: 1,
                retrying: 0,
                given_up: 0,
            }),
        };
        let text = rendered(|| {
            describe();
            record_cycle(None, &r, true, Duration::from_millis(30));
            record_failure(None, Duration::from_millis(10));
            graph_request();
            graph_throttled();
            graph_retry();
            Monitor::new(Duration::from_secs(1), 3).rules_reloaded(true);
            Monitor::new(Duration::from_secs(1), 3).role(None);
        });
        let families = |prefix: &str| -> Vec<(String, String)> {
            text.lines()
                .filter_map(|l| l.strip_prefix(prefix))
                .filter_map(|l| l.split_once(' '))
                .map(|(name, rest)| (name.to_string(), rest.to_string()))
                .collect()
        };
        let helped: std::collections::BTreeSet<String> =
            families("# HELP ").into_iter().map(|(n, _)| n).collect();
        let listed: std::collections::BTreeSet<String> =
            ALL.iter().map(|n| n.to_string()).collect();
        assert_eq!(listed.len(), ALL.len(), "a name twice in ALL: {ALL:?}");
        assert_eq!(helped, listed, "# HELP names against ALL in:\n{text}");
        let histograms: Vec<String> = families("# TYPE ")
            .into_iter()
            .filter(|(_, kind)| kind == "histogram")
            .map(|(n, _)| n)
            .collect();
        assert_eq!(histograms, HISTOGRAMS, "{text}");
    }

    #[test]
    fn with_several_targets_each_series_names_its_target_and_readiness_waits_for_all() {
        let ok = CycleFigures {
            sweep: "changed",
            changes: vec![("create", true)],
            ..Default::default()
        };
        let m = Monitor::new(Duration::from_secs(1), 3);
        let text = rendered(|| {
            m.cycle_started();
            m.target_succeeded("corp", &ok, false, Duration::from_millis(5));
            m.target_failed("fabrikam", Duration::from_millis(5));
            m.cycle_finished(Some("fabrikam: AD not reached"));
        });
        let v = |s: &str| value(&text, s);
        assert_eq!(
            v("writeback_changes_total{kind=\"create\",target=\"corp\"}"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            v("writeback_cycles_total{sweep=\"changed\",target=\"corp\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("writeback_cycles_total{sweep=\"failed\",target=\"fabrikam\"}"),
            Some(1.0)
        );
        assert!(v("writeback_last_success_timestamp_seconds{target=\"corp\"}").is_some());
        assert!(v("writeback_last_success_timestamp_seconds{target=\"fabrikam\"}").is_none());
        // One target failing keeps the daemon unready, and says which.
        let (ready, why) = m.readiness_now();
        assert!(!ready && why.contains("fabrikam: AD not reached"), "{why}");
        m.cycle_started();
        m.cycle_finished(None);
        let (ready, why) = m.readiness_now();
        assert!(ready, "{why}");
    }

    #[test]
    fn reconciliation_sets_foreign_and_whole_cache_cycles_the_cache_size() {
        let r = CycleFigures {
            sweep: "reconciliation",
            cached: Some((12, 30)),
            foreign: 3,
            ..Default::default()
        };
        let text = rendered(|| {
            record_cycle(None, &r, true, Duration::from_secs(1));
            record_failure(None, Duration::from_secs(2));
            Monitor::new(Duration::from_secs(1), 3).rules_reloaded(false);
        });
        assert_eq!(value(&text, "writeback_foreign_objects"), Some(3.0));
        assert_eq!(
            value(&text, "writeback_cached_objects{kind=\"group\"}"),
            Some(12.0)
        );
        assert_eq!(
            value(&text, "writeback_cached_objects{kind=\"user\"}"),
            Some(30.0)
        );
        assert_eq!(
            value(&text, "writeback_cycles_total{sweep=\"failed\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "writeback_rule_reloads_total{result=\"failed\"}"),
            Some(1.0)
        );
    }

    #[test]
    fn readiness_follows_the_last_success_and_ignores_the_cycle_in_flight() {
        let m = Monitor::new(Duration::from_secs(2), 3);
        let t0 = Instant::now();
        let e = m.readiness(t0).down().expect("before the first cycle");
        assert!(e.starts_with("starting"), "{e}");
        m.cycle_failed("Microsoft Graph: 503\nService Unavailable", Duration::ZERO);
        let e = m
            .readiness(Instant::now())
            .down()
            .expect("first cycle failed");
        assert!(
            e.contains("no cycle has succeeded yet") && e.contains("503 Service Unavailable"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e:?}");

        m.cycle_succeeded(&CycleFigures::default(), false, Duration::ZERO);
        let done = Instant::now();
        assert!(m.readiness(done).is_up());
        assert!(m.readiness(done + Duration::from_millis(5900)).is_up());
        let e = m
            .readiness(done + Duration::from_secs(7))
            .down()
            .expect("three polls of 2 s passed");
        assert!(e.contains("more than 3 polls of 2 s"), "{e}");

        // A long cycle that started in time keeps it ready while it runs.
        m.cycle_started();
        assert!(m
            .readiness(Instant::now() + Duration::from_secs(600))
            .is_up());
        m.cycle_failed("AD: bind refused", Duration::from_secs(600));
        let e = m
            .readiness(Instant::now() + Duration::from_secs(7))
            .down()
            .expect("failed since");
        assert!(e.contains("the last cycle failed: AD: bind refused"), "{e}");

        m.stopping();
        assert_eq!(
            m.readiness(Instant::now()),
            Probe::Down("stopping".to_string())
        );
    }

    #[test]
    fn a_cycle_running_past_its_bound_is_unreadiness_and_readyz_names_no_detail() {
        let m = Monitor::with_max_cycle(Duration::from_secs(1), 3, Duration::from_secs(60));
        m.cycle_succeeded(&CycleFigures::default(), false, Duration::ZERO);
        m.cycle_started();
        assert!(m
            .readiness(Instant::now() + Duration::from_secs(59))
            .is_up());
        let e = m
            .readiness(Instant::now() + Duration::from_secs(61))
            .down()
            .expect("stuck");
        assert!(e.contains("daemon.ready_max_cycle_secs (60 s)"), "{e}");
        let (status, _, body) = readyz_page(Probe::Down(
            "no cycle has succeeded yet; the last one failed: bind CN=svc,OU=X at ldaps://dc1"
                .into(),
        ));
        assert_eq!(status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "not ready\n");
        let (status, _, body) = readyz_page(Probe::Up(
            "ready: the last successful cycle ended 1 s ago".into(),
        ));
        assert_eq!(status, axum::http::StatusCode::OK);
        assert_eq!(body, "ready\n");
    }

    #[test]
    fn health_is_ok_while_the_loop_turns_or_works() {
        let m = Monitor::new(Duration::from_secs(1), 3);
        let now = Instant::now();
        assert!(m.health(now).is_up());
        let e = m
            .health(now + Duration::from_secs(61))
            .down()
            .expect("no turn for a minute");
        assert!(e.contains("has not turned"), "{e}");
        m.cycle_started();
        assert!(m.health(Instant::now() + Duration::from_secs(3600)).is_up());
        m.cycle_succeeded(&CycleFigures::default(), false, Duration::ZERO);
        m.turned();
        assert!(m.health(Instant::now()).is_up());
        m.stopping();
        assert!(!m.health(Instant::now()).is_up());
    }

    #[tokio::test]
    async fn an_address_in_use_is_an_error_naming_the_key_and_the_address() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = taken
            .local_addr()
            .unwrap_or_else(|e| panic!("address: {e}"));
        let e = Monitor::new(Duration::from_secs(1), 3)
            .serve(addr, None)
            .await
            .expect_err("the port is taken");
        assert!(matches!(e, MetricsError::Bind { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("daemon.listen") && text.contains(&addr.to_string()),
            "{text}"
        );
    }

    #[test]
    fn one_line_collapses_and_cuts() {
        assert_eq!(one_line("a\n  b\tc "), "a b c");
        let long = "x".repeat(1000);
        assert_eq!(one_line(&long).chars().count(), REASON_CHARS + 1);
    }
}
