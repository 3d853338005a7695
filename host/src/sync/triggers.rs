//! Triggers after an apply, and the rules' schedules.
//!
//! The plan lists the triggers its changes fire ([`super::plan::planned_triggers`]). Those whose
//! change went through are recorded in the state's outbox in the same transaction as the
//! change's own record ([`calls`]), so a crash between the AD write and the call loses nothing;
//! then the due calls are delivered ([`deliver`]) one at a time, each on a blocking thread (the
//! primitives block on I/O) within the trigger time limit, with an idempotency key that stays
//! the same across attempts. A failed call is tried again with growing waits
//! ([`RetryPolicy`]) and given up after the last attempt. At most `max_calls` run per cycle;
//! the rest wait for the next one, so a mass change cannot become a webhook storm. A failing
//! trigger never undoes or blocks the sync.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::graph::model::CloudObject;
use crate::rules::{Effects, Hook, HookError, HookTable, TriggerEvent};
use crate::state::{AuditEvent, NewCall};

use super::apply::Outcome;
use super::types::{AttrChange, Change, Op, Plan, PlannedTrigger};

/// How long past its own time limit a trigger's thread is awaited before it is given up.
const GRACE: Duration = Duration::from_secs(5);

/// What became of one trigger call. Its text ([`TriggerOutcome::as_str`]) is what reports,
/// the audit trail and the metrics' `outcome` label show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerOutcome {
    Ok,
    /// Failed; tried again later.
    Failed,
    /// Failed on its last attempt.
    GivenUp,
    /// Not tried this cycle: over its limits.
    Waiting,
    /// Its change did not go through.
    Skipped,
}

impl TriggerOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerOutcome::Ok => "ok",
            TriggerOutcome::Failed => "failed",
            TriggerOutcome::GivenUp => "given_up",
            TriggerOutcome::Waiting => "waiting",
            TriggerOutcome::Skipped => "skipped",
        }
    }

    /// The call ran (the metrics count these as deliveries).
    pub fn ran(self) -> bool {
        matches!(
            self,
            TriggerOutcome::Ok | TriggerOutcome::Failed | TriggerOutcome::GivenUp
        )
    }
}

impl std::fmt::Display for TriggerOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one planned trigger did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TriggerResult {
    pub cloud_id: String,
    pub rule: String,
    pub hook: Hook,
    /// The DN the trigger was given.
    pub dn: String,
    pub outcome: TriggerOutcome,
    /// Why it failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Which attempt this was (shown from the second on).
    #[serde(skip_serializing_if = "first_attempt")]
    pub attempt: u32,
    /// The idempotency key its requests carried (empty when it did not run).
    #[serde(skip)]
    pub key: String,
}

fn first_attempt(n: &u32) -> bool {
    *n <= 1
}

impl TriggerResult {
    /// The audit record (`action = "trigger:<hook>"`).
    pub fn audit_event(&self) -> AuditEvent {
        AuditEvent {
            cloud_id: self.cloud_id.clone(),
            action: format!("trigger:{}", self.hook),
            dn: self.dn.clone(),
            detail: serde_json::json!({
                "rule": self.rule,
                "error": self.error,
                "attempt": self.attempt,
                "key": self.key,
            }),
            outcome: self.outcome.to_string(),
        }
    }
}

/// A schedule as `writeback plan` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleInfo {
    pub rule: String,
    pub schedule: String,
    /// RFC 3339, UTC; intervals count from when `writeback run` starts or reloads the rule.
    pub next_due: Option<String>,
}

/// Every schedule of `hooks`, with its next due time after `now`.
pub fn schedules(hooks: &HookTable, now: time::OffsetDateTime) -> Vec<ScheduleInfo> {
    hooks
        .schedules()
        .into_iter()
        .map(|(rule, s)| ScheduleInfo {
            rule: rule.to_string(),
            schedule: s.text().to_string(),
            next_due: s.next_after(now).map(rfc3339),
        })
        .collect()
}

/// `2026-03-10T03:00:00Z`: UTC, to the second.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Limits of the trigger run of one cycle.
#[derive(Debug, Clone, Copy)]
pub struct TriggerLimits {
    /// Per call, primitives included.
    pub timeout: Duration,
    /// Calls per cycle.
    pub max_calls: usize,
    /// Time all of a cycle's calls may take together: a slow webhook times 1,000 triggers
    /// must not hold the cycle (and the next one) for hours.
    pub budget: Duration,
}

/// An operational hook to call (`on_held`, `on_failed`, `on_refused`) in `rule`.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub rule: String,
    pub event: TriggerEvent,
}

/// One recorded call to deliver (a row of the state's outbox).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub key: String,
    pub rule: String,
    pub event: TriggerEvent,
    /// Attempts made before this one.
    pub attempts: u32,
}

pub use crate::policy::RetryPolicy;

/// The idempotency key of a call: the same for every attempt of it, different for any other
/// (another run, rule, hook, group or event).
pub fn call_key(run_id: i64, rule: &str, event: &TriggerEvent) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(run_id.to_le_bytes());
    for part in [rule, event.hook.name(), &event.cloud_id] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(serde_json::to_vec(&event.changes).unwrap_or_default());
    let hex = format!("{:x}", h.finalize());
    hex.get(..32).unwrap_or(&hex).to_string()
}

/// The call to record for `event` of `rule`.
pub fn new_call(run_id: i64, rule: &str, event: &TriggerEvent) -> NewCall {
    NewCall {
        key: call_key(run_id, rule, event),
        rule: rule.to_string(),
        hook: event.hook.name().to_string(),
        cloud_id: event.cloud_id.clone(),
        event_json: serde_json::to_string(event).unwrap_or_default(),
    }
}

/// The planned triggers of a batch as the calls to record (those whose change went through)
/// and a result for each that does not run, with the reason.
pub fn calls(
    plan: &Plan,
    outcomes: &[Outcome],
    groups: &BTreeMap<String, CloudObject>,
    run_id: i64,
) -> (Vec<NewCall>, Vec<TriggerResult>) {
    let mut calls = Vec::new();
    let mut skipped = Vec::new();
    for step in planned_steps(plan, outcomes, groups) {
        match step {
            Step::Done(r) => skipped.push(r),
            Step::Call(rule, event) => calls.push(new_call(run_id, &rule, &event)),
        }
    }
    (calls, skipped)
}

/// One entry of a batch's triggers: decided already, or a call to make.
enum Step {
    Done(TriggerResult),
    Call(String, TriggerEvent),
}

/// Delivers `deliveries` in order, within one cycle's limits: each is `ok`, `failed` (the
/// caller decides between a retry and giving up) or `waiting` (not tried: the cycle's calls or
/// time were spent; it stays due for the next cycle).
pub async fn deliver(
    hooks: Arc<HookTable>,
    deliveries: Vec<Delivery>,
    effects: Result<Arc<dyn Effects>, crate::effects::EffectsError>,
    limits: TriggerLimits,
) -> Vec<(i64, TriggerResult)> {
    let mut results = Vec::with_capacity(deliveries.len());
    let mut calls = 0usize;
    let mut over_limit = 0usize;
    let mut over_budget = 0usize;
    let started = std::time::Instant::now();
    for d in deliveries {
        let result = |outcome, error| d.result(outcome, error);
        let left = limits.budget.saturating_sub(started.elapsed());
        if left.is_zero() {
            over_budget += 1;
            results.push((
                d.id,
                result(
                    TriggerOutcome::Waiting,
                    Some(format!(
                        "not run yet: the cycle's trigger time ({} s, [rules] trigger_budget_secs) was spent; it runs next cycle",
                        limits.budget.as_secs()
                    )),
                ),
            ));
            continue;
        }
        if calls >= limits.max_calls {
            over_limit += 1;
            results.push((
                d.id,
                result(
                    TriggerOutcome::Waiting,
                    Some(format!(
                        "not run yet: more than {} trigger calls in one cycle ([rules] max_triggers_per_cycle); it runs next cycle",
                        limits.max_calls
                    )),
                ),
            ));
            continue;
        }
        calls += 1;
        let error = run_one(&hooks, &d, &effects, limits.timeout.min(left)).await;
        let outcome = match error {
            None => TriggerOutcome::Ok,
            Some(_) => TriggerOutcome::Failed,
        };
        results.push((d.id, result(outcome, error)));
    }
    if over_budget > 0 {
        tracing::warn!(
            waiting = over_budget,
            budget_secs = limits.budget.as_secs(),
            "trigger calls over the cycle's time budget wait for the next cycle ([rules] trigger_budget_secs)"
        );
    }
    if over_limit > 0 {
        tracing::warn!(
            waiting = over_limit,
            limit = limits.max_calls,
            "trigger calls over the per-cycle limit wait for the next cycle ([rules] max_triggers_per_cycle)"
        );
    }
    results
}

/// Runs one due call with the cycle's effects, logging what came of it; its error, if any.
async fn run_one(
    hooks: &Arc<HookTable>,
    d: &Delivery,
    effects: &Result<Arc<dyn Effects>, crate::effects::EffectsError>,
    timeout: Duration,
) -> Option<String> {
    let error = match effects {
        Err(e) => Some(e.to_string()),
        Ok(fx) => call(
            hooks.clone(),
            d.rule.clone(),
            d.event.clone(),
            Some(d.key.clone()),
            fx.clone(),
            timeout,
        )
        .await
        .err()
        .map(|e| e.to_string()),
    };
    match &error {
        None => tracing::info!(
            cloud_id = %d.event.cloud_id,
            rule = %d.rule,
            hook = %d.event.hook,
            attempt = d.attempts + 1,
            "trigger ran"
        ),
        Some(e) => tracing::warn!(
            cloud_id = %d.event.cloud_id,
            rule = %d.rule,
            hook = %d.event.hook,
            attempt = d.attempts + 1,
            "trigger failed: {e}"
        ),
    }
    error
}

impl Delivery {
    /// What came of this call.
    fn result(&self, outcome: TriggerOutcome, error: Option<String>) -> TriggerResult {
        TriggerResult {
            cloud_id: self.event.cloud_id.clone(),
            rule: self.rule.clone(),
            hook: self.event.hook,
            dn: self.event.dn.clone(),
            outcome,
            error,
            attempt: self.attempts + 1,
            key: self.key.clone(),
        }
    }
}

/// The planned triggers as steps: a call for each whose change went through, a skip with the
/// reason for the others.
fn planned_steps(
    plan: &Plan,
    outcomes: &[Outcome],
    groups: &BTreeMap<String, CloudObject>,
) -> Vec<Step> {
    let changes: BTreeMap<&str, &Change> = plan
        .changes
        .iter()
        .map(|c| (c.cloud_id.as_str(), c))
        .collect();
    let outcomes: BTreeMap<&str, &Outcome> =
        outcomes.iter().map(|o| (o.cloud_id.as_str(), o)).collect();
    let mut steps = Vec::with_capacity(plan.triggers.len());
    for t in &plan.triggers {
        let skip = |dn: String, why: &str| {
            Step::Done(TriggerResult {
                cloud_id: t.cloud_id.clone(),
                rule: t.rule.clone(),
                hook: t.hook,
                dn,
                outcome: TriggerOutcome::Skipped,
                error: Some(why.to_string()),
                attempt: 0,
                key: String::new(),
            })
        };
        let (Some(change), Some(o)) = (
            changes.get(t.cloud_id.as_str()),
            outcomes.get(t.cloud_id.as_str()),
        ) else {
            steps.push(skip(String::new(), "not run: the change was not applied"));
            continue;
        };
        if o.error.is_some() {
            steps.push(skip(o.dn.clone(), "not run: the change failed"));
            continue;
        }
        let event = event(t, change, o, groups);
        if matches!(t.hook, Hook::OnMembersAdded | Hook::OnMembersRemoved)
            && event.members.is_empty()
        {
            steps.push(skip(
                event.dn,
                "not run: AD took none of the member changes",
            ));
            continue;
        }
        steps.push(Step::Call(t.rule.clone(), event));
    }
    steps
}

/// Why a trigger or `on_schedule` call did not go through.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The rule's code failed (its message names the rule and the line).
    #[error(transparent)]
    Rule(Box<HookError>),
    /// The blocking thread running it panicked or was cancelled (the reason is shown in the
    /// message: a trigger's error is read where it is reported, not through a chain).
    #[error("{what} stopped abnormally: {reason}")]
    Aborted {
        what: &'static str,
        reason: tokio::task::JoinError,
    },
    #[error("{what} did not finish within {secs} s")]
    TimedOut { what: &'static str, secs: u64 },
}

/// Runs `f` on a blocking thread, awaited at most a little past its own time limit.
async fn on_thread(
    what: &'static str,
    timeout: Duration,
    f: impl FnOnce() -> Result<(), Box<HookError>> + Send + 'static,
) -> Result<(), CallError> {
    let task = tokio::task::spawn_blocking(f);
    match tokio::time::timeout(timeout + GRACE, task).await {
        Ok(Ok(r)) => r.map_err(CallError::Rule),
        Ok(Err(reason)) => Err(CallError::Aborted { what, reason }),
        Err(_) => Err(CallError::TimedOut {
            what,
            secs: (timeout + GRACE).as_secs(),
        }),
    }
}

/// One trigger call.
async fn call(
    hooks: Arc<HookTable>,
    rule: String,
    event: TriggerEvent,
    key: Option<String>,
    effects: Arc<dyn Effects>,
    timeout: Duration,
) -> Result<(), CallError> {
    on_thread("the trigger", timeout, move || {
        hooks.deliver(&rule, &event, key.as_deref(), effects, timeout)
    })
    .await
}

/// Runs `on_schedule` of `rule`.
pub async fn run_schedule(
    hooks: Arc<HookTable>,
    rule: &str,
    now: time::OffsetDateTime,
    effects: Arc<dyn Effects>,
    timeout: Duration,
) -> Result<(), CallError> {
    let rule_name = rule.to_string();
    let now = rfc3339(now);
    on_thread("on_schedule", timeout, move || {
        hooks.call_schedule(&rule_name, &now, effects, timeout)
    })
    .await
}

/// The arguments of one trigger, from its change and what the apply did.
fn event(
    t: &PlannedTrigger,
    change: &Change,
    o: &Outcome,
    groups: &BTreeMap<String, CloudObject>,
) -> TriggerEvent {
    let mut e = TriggerEvent {
        hook: t.hook,
        cloud_id: t.cloud_id.clone(),
        dn: o.dn.clone(),
        group: groups.get(&t.cloud_id).map(CloudObject::to_rule_json),
        changes: serde_json::Value::Object(serde_json::Map::new()),
        members: Vec::new(),
    };
    let not_taken = |verb: &str, m: &String| {
        let prefix = format!("{verb} {m}: ");
        o.member_errors.iter().any(|e| e.starts_with(&prefix))
    };
    match (&change.op, t.hook) {
        (
            Op::Update {
                dn,
                move_to,
                changes,
                ..
            },
            Hook::OnUpdated,
        ) => {
            let mut map = serde_json::Map::new();
            for ch in changes {
                let (attr, old, new) = match ch {
                    AttrChange::Replace { attr, values, old } => (attr, old, Some(values)),
                    AttrChange::Clear { attr, old } => (attr, old, None),
                };
                let as_json = |v: Option<&Vec<String>>| match v {
                    Some(v) if !v.is_empty() => serde_json::json!(v),
                    _ => serde_json::Value::Null,
                };
                map.insert(
                    attr.clone(),
                    serde_json::json!({ "before": as_json(Some(old)), "after": as_json(new) }),
                );
            }
            if move_to.is_some() {
                map.insert("moved_from".into(), serde_json::json!(dn));
            }
            e.changes = serde_json::Value::Object(map);
        }
        (Op::Update { members_add, .. }, Hook::OnMembersAdded) => {
            e.members = members_add
                .iter()
                .filter(|m| !not_taken("add", m))
                .cloned()
                .collect();
        }
        (Op::Update { members_remove, .. }, Hook::OnMembersRemoved) => {
            e.members = members_remove
                .iter()
                .filter(|m| !not_taken("remove", m))
                .cloned()
                .collect();
        }
        (Op::Delete { dn, .. }, Hook::OnDeleted) => {
            e.dn = dn.clone();
            e.group = None;
        }
        _ => {}
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{AdFound, EffectError, HttpRequest, HttpResponse, Limits, RuleSet};
    use crate::sync::apply::Action;
    use std::sync::Mutex;

    /// Records the bodies posted.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<serde_json::Value>>);

    impl Effects for Recorder {
        fn http(&self, r: HttpRequest) -> Result<HttpResponse, EffectError> {
            let body = serde_json::from_slice(&r.body.unwrap_or_default()).unwrap_or_default();
            self.0.lock().expect("lock").push(body);
            Ok(HttpResponse {
                status: 204,
                body: String::new(),
            })
        }
        fn graph_get(&self, _: &str, _: Duration) -> Result<serde_json::Value, EffectError> {
            Err(EffectError::Unavailable("Graph"))
        }
        fn ad_search(
            &self,
            _: &str,
            _: &str,
            _: &[String],
            _: Duration,
        ) -> Result<Vec<AdFound>, EffectError> {
            Err(EffectError::Unavailable("AD"))
        }
    }

    fn hooks(rule: &str) -> (tempfile::TempDir, Arc<HookTable>) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("10-t.rhai"), rule).expect("write rule");
        let stdlib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../stdlib");
        let set = RuleSet::load(dir.path(), &stdlib, BTreeMap::new(), Limits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        (dir, set.hooks())
    }

    fn change(id: &str, op: Op) -> Change {
        Change {
            cloud_id: id.into(),
            rule: Some("10-t.rhai".into()),
            op,
        }
    }

    fn ok(id: &str, action: Action, dn: &str) -> Outcome {
        Outcome {
            links_added: Default::default(),
            links_removed: Default::default(),
            cloud_id: id.into(),
            action,
            dn: dn.into(),
            guid: None,
            error: None,
            member_errors: Vec::new(),
            transient: false,
            not_created: false,
        }
    }

    /// What a cycle does with a batch's triggers: record the calls (through their JSON, as the
    /// state keeps them), then deliver them and the alerts; results by cloud id.
    async fn run_triggers(
        hooks: Arc<HookTable>,
        plan: &Plan,
        outcomes: &[Outcome],
        groups: &BTreeMap<String, CloudObject>,
        alerts: Vec<Alert>,
        effects: Result<Arc<dyn Effects>, crate::effects::EffectsError>,
        limits: TriggerLimits,
    ) -> Vec<TriggerResult> {
        let (recorded, mut results) = calls(plan, outcomes, groups, 1);
        let mut deliveries: Vec<Delivery> = recorded
            .into_iter()
            .zip(0..)
            .map(|(c, id)| Delivery {
                id,
                key: c.key,
                rule: c.rule,
                event: serde_json::from_str(&c.event_json).expect("recorded event reads back"),
                attempts: 0,
            })
            .collect();
        deliveries.extend(alerts.into_iter().map(|a| Delivery {
            id: -1,
            key: call_key(1, &a.rule, &a.event),
            rule: a.rule,
            event: a.event,
            attempts: 0,
        }));
        results.extend(
            deliver(hooks, deliveries, effects, limits)
                .await
                .into_iter()
                .map(|(_, r)| r),
        );
        results.sort_by(|a, b| a.cloud_id.cmp(&b.cloud_id));
        results
    }

    #[test]
    fn retries_wait_longer_each_time_and_stop_after_the_last_attempt() {
        let p = RetryPolicy {
            first_wait_secs: 30,
            max_attempts: 4,
        };
        assert_eq!(p.next_at(1, 1_000), Some(1_030));
        assert_eq!(p.next_at(2, 1_000), Some(1_060));
        assert_eq!(p.next_at(3, 1_000), Some(1_120));
        assert_eq!(p.next_at(4, 1_000), None);
        let long = RetryPolicy {
            first_wait_secs: 600,
            max_attempts: 100,
        };
        assert_eq!(long.next_at(40, 0), Some(3_600), "capped at an hour");
    }

    #[test]
    fn a_call_key_is_stable_and_tells_calls_apart() {
        let e = TriggerEvent {
            hook: Hook::OnCreated,
            cloud_id: "g1".into(),
            dn: "CN=G".into(),
            group: None,
            changes: serde_json::json!({}),
            members: Vec::new(),
        };
        let k = call_key(7, "10-a.rhai", &e);
        assert_eq!(k.len(), 32);
        assert_eq!(k, call_key(7, "10-a.rhai", &e));
        assert_ne!(k, call_key(8, "10-a.rhai", &e));
        assert_ne!(k, call_key(7, "20-b.rhai", &e));
        let other = TriggerEvent {
            cloud_id: "g2".into(),
            ..e.clone()
        };
        assert_ne!(k, call_key(7, "10-a.rhai", &other));
    }

    const RULE: &str = r#"
fn scope(group) { true }
fn map(group) { () }
fn on_created(group, dn) { http::post("h", #{ hook: "created", dn: dn }); }
fn on_members_added(group, dn, members) { http::post("h", #{ hook: "added", members: members }); }
fn on_deleted(id, dn) { throw "no"; }
"#;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_applied_changes_fire_within_the_per_cycle_limit() {
        let (_dir, table) = hooks(RULE);
        let create = |dn: &str| Op::Create {
            cloud: Default::default(),
            links: Default::default(),
            dn: dn.into(),
            attributes: BTreeMap::new(),
            members: Vec::new(),
        };
        let changes = vec![
            change("a", create("CN=A")),
            change("b", create("CN=B")),
            change("c", create("CN=C")),
            change(
                "d",
                Op::Update {
                    cloud: Default::default(),
                    links: Default::default(),
                    dn: "CN=D".into(),
                    move_to: None,
                    changes: Vec::new(),
                    members_add: vec!["CN=u1".into(), "CN=u2".into()],
                    members_remove: Vec::new(),
                },
            ),
            change(
                "e",
                Op::Delete {
                    dn: "CN=E".into(),
                    reason: String::new(),
                },
            ),
        ];
        let triggers = super::super::plan::planned_triggers(
            &changes,
            |_| Some("10-t.rhai".into()),
            |r, h| table.has(r, h),
        );
        let plan = Plan {
            changes,
            triggers,
            ..Default::default()
        };
        let mut failed_b = ok("b", Action::Create, "CN=B");
        failed_b.error = Some("AD said no".into());
        let mut d = ok("d", Action::Update, "CN=D");
        d.member_errors = vec!["add CN=u2: no such object".into()];
        // `c` has no outcome at all (not applied).
        let outcomes = vec![
            ok("a", Action::Create, "CN=A"),
            failed_b,
            d,
            ok("e", Action::Delete, "CN=E"),
        ];
        let rec = Arc::new(Recorder::default());
        let limits = TriggerLimits {
            timeout: Duration::from_secs(5),
            max_calls: 2,
            budget: Duration::from_secs(60),
        };
        // The plan's triggers with these effects and limits.
        let run = async |effects, limits| {
            let groups = BTreeMap::new();
            run_triggers(
                table.clone(),
                &plan,
                &outcomes,
                &groups,
                Vec::new(),
                effects,
                limits,
            )
            .await
        };
        let results = run(Ok(rec.clone()), limits).await;
        let got: Vec<(&str, Hook, TriggerOutcome)> = results
            .iter()
            .map(|r| (r.cloud_id.as_str(), r.hook, r.outcome))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", Hook::OnCreated, TriggerOutcome::Ok),
                ("b", Hook::OnCreated, TriggerOutcome::Skipped),
                ("c", Hook::OnCreated, TriggerOutcome::Skipped),
                ("d", Hook::OnMembersAdded, TriggerOutcome::Ok),
                ("e", Hook::OnDeleted, TriggerOutcome::Waiting),
            ]
        );
        assert!(results[4]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("max_triggers_per_cycle")));
        assert_eq!(
            *rec.0.lock().expect("lock"),
            vec![
                serde_json::json!({ "hook": "created", "dn": "CN=A" }),
                // The member AD did not take is not passed.
                serde_json::json!({ "hook": "added", "members": ["CN=u1"] }),
            ]
        );
        let ev = results[0].audit_event();
        assert_eq!(
            (ev.action.as_str(), ev.outcome.as_str()),
            ("trigger:on_created", "ok")
        );

        // A throwing trigger fails; no effects at all fails every call with the reason.
        let limits = TriggerLimits {
            max_calls: 10,
            ..limits
        };
        let results = run(Ok(rec.clone()), limits).await;
        let e = &results[4];
        assert_eq!(e.outcome, TriggerOutcome::Failed);
        assert!(
            e.error
                .as_deref()
                .is_some_and(|m| m.contains("no (rule 10-t.rhai, on_deleted(), group e)")),
            "{e:?}"
        );
        let no_client = crate::effects::EffectsError::Http("no HTTP client".into());
        let results = run(Err(no_client), limits).await;
        assert_eq!(results[0].outcome, TriggerOutcome::Failed);
        assert_eq!(
            results[0].error.as_deref(),
            Some("cannot build the HTTP client for rule primitives: no HTTP client")
        );

        // The cycle's trigger time spent: nothing more runs, each says why.
        let spent = TriggerLimits {
            budget: Duration::ZERO,
            ..limits
        };
        let calls_before = rec.0.lock().expect("lock").len();
        let results = run(Ok(rec.clone()), spent).await;
        assert_eq!(rec.0.lock().expect("lock").len(), calls_before);
        assert_eq!(results[0].outcome, TriggerOutcome::Waiting);
        assert!(results[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("trigger_budget_secs")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn operational_hooks_get_their_event_after_the_planned_triggers() {
        let (_dir, table) = hooks(
            r#"
fn scope(group) { true }
fn map(group) { () }
fn on_held(event) { http::post("h", #{ hook: "held", approve: event.approve }); }
"#,
        );
        let alert = Alert {
            rule: "10-t.rhai".into(),
            event: TriggerEvent {
                hook: Hook::OnHeld,
                cloud_id: String::new(),
                dn: String::new(),
                group: None,
                changes: serde_json::json!({ "approve": "writeback approve s1" }),
                members: Vec::new(),
            },
        };
        let rec = Arc::new(Recorder::default());
        let limits = TriggerLimits {
            timeout: Duration::from_secs(5),
            max_calls: 1,
            budget: Duration::from_secs(60),
        };
        let results = run_triggers(
            table,
            &Plan::default(),
            &[],
            &BTreeMap::new(),
            vec![alert.clone(), alert],
            Ok(rec.clone()),
            limits,
        )
        .await;
        let outcomes: Vec<(Hook, TriggerOutcome)> =
            results.iter().map(|r| (r.hook, r.outcome)).collect();
        // The second one is over the per-cycle limit, like any trigger.
        assert_eq!(
            outcomes,
            [
                (Hook::OnHeld, TriggerOutcome::Ok),
                (Hook::OnHeld, TriggerOutcome::Waiting)
            ]
        );
        assert_eq!(
            rec.0.lock().expect("lock").clone(),
            [serde_json::json!({ "hook": "held", "approve": "writeback approve s1" })]
        );
    }
}
