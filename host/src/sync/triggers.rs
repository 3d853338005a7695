//! Triggers after an apply, and the rules' schedules.
//!
//! The plan lists the triggers its changes fire ([`super::plan::planned_triggers`]); after the
//! apply, those whose change went through run one at a time, each on a blocking thread (the
//! primitives block on I/O) within the trigger time limit. At most `max_calls` run per cycle,
//! the rest are reported as skipped, so a mass change cannot become a webhook storm. A failing
//! trigger is reported and logged; it never undoes or blocks the sync.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::graph::model::CloudObject;
use crate::rules::{Effects, Hook, HookTable, TriggerEvent};
use crate::state::AuditEvent;

use super::apply::Outcome;
use super::types::{AttrChange, Change, Op, Plan, PlannedTrigger};

/// How long past its own time limit a trigger's thread is awaited before it is given up.
const GRACE: Duration = Duration::from_secs(5);

/// What one planned trigger did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TriggerResult {
    pub cloud_id: String,
    pub rule: String,
    pub hook: Hook,
    /// The DN the trigger was given.
    pub dn: String,
    /// `ok`, `failed` or `skipped`.
    pub outcome: &'static str,
    /// Why it failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TriggerResult {
    /// The audit record (`action = "trigger:<hook>"`).
    pub fn audit_event(&self) -> AuditEvent {
        AuditEvent {
            cloud_id: self.cloud_id.clone(),
            action: format!("trigger:{}", self.hook),
            dn: self.dn.clone(),
            detail: serde_json::json!({ "rule": self.rule, "error": self.error }),
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

/// One entry of a cycle's trigger run: already decided, or a call to make.
enum Step {
    Done(TriggerResult),
    Call(String, TriggerEvent),
}

/// Runs the planned triggers whose change was applied (`outcomes`), in plan order, then the
/// operational hooks (`alerts`), all within one cycle's limits.
pub async fn run_triggers(
    hooks: Arc<HookTable>,
    plan: &Plan,
    outcomes: &[Outcome],
    groups: &BTreeMap<String, CloudObject>,
    alerts: Vec<Alert>,
    effects: Result<Arc<dyn Effects>, String>,
    limits: TriggerLimits,
) -> Vec<TriggerResult> {
    let mut steps = planned_steps(plan, outcomes, groups);
    steps.extend(alerts.into_iter().map(|a| Step::Call(a.rule, a.event)));
    let mut results = Vec::with_capacity(steps.len());
    let mut calls = 0usize;
    let mut over_limit = 0usize;
    let mut over_budget = 0usize;
    let started = std::time::Instant::now();
    for step in steps {
        let (rule, event) = match step {
            Step::Done(r) => {
                results.push(r);
                continue;
            }
            Step::Call(rule, event) => (rule, event),
        };
        let result = |outcome: &'static str, error: Option<String>| TriggerResult {
            cloud_id: event.cloud_id.clone(),
            rule: rule.clone(),
            hook: event.hook,
            dn: event.dn.clone(),
            outcome,
            error,
        };
        let left = limits.budget.saturating_sub(started.elapsed());
        if left.is_zero() {
            over_budget += 1;
            results.push(result(
                "skipped",
                Some(format!(
                    "not run: the cycle's trigger time ({} s, [rules] trigger_budget_secs) was spent",
                    limits.budget.as_secs()
                )),
            ));
            continue;
        }
        if calls >= limits.max_calls {
            over_limit += 1;
            results.push(result(
                "skipped",
                Some(format!(
                    "not run: more than {} trigger calls in one cycle ([rules] max_triggers_per_cycle)",
                    limits.max_calls
                )),
            ));
            continue;
        }
        calls += 1;
        let error = match &effects {
            Err(e) => Some(e.clone()),
            Ok(fx) => call(
                hooks.clone(),
                rule.clone(),
                event.clone(),
                fx.clone(),
                limits.timeout.min(left),
            )
            .await
            .err(),
        };
        match &error {
            None => tracing::info!(
                cloud_id = %event.cloud_id,
                rule = %rule,
                hook = %event.hook,
                "trigger ran"
            ),
            Some(e) => tracing::warn!(
                cloud_id = %event.cloud_id,
                rule = %rule,
                hook = %event.hook,
                "trigger failed: {e}"
            ),
        }
        let outcome = if error.is_none() { "ok" } else { "failed" };
        results.push(result(outcome, error));
    }
    if over_budget > 0 {
        tracing::warn!(
            skipped = over_budget,
            budget_secs = limits.budget.as_secs(),
            "trigger calls over the cycle's time budget were skipped ([rules] trigger_budget_secs)"
        );
    }
    if over_limit > 0 {
        tracing::warn!(
            skipped = over_limit,
            limit = limits.max_calls,
            "trigger calls over the per-cycle limit were skipped ([rules] max_triggers_per_cycle)"
        );
    }
    results
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
                outcome: "skipped",
                error: Some(why.to_string()),
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

/// One call on a blocking thread, awaited at most a little past its own time limit.
async fn call(
    hooks: Arc<HookTable>,
    rule: String,
    event: TriggerEvent,
    effects: Arc<dyn Effects>,
    timeout: Duration,
) -> Result<(), String> {
    let task =
        tokio::task::spawn_blocking(move || hooks.call_trigger(&rule, &event, effects, timeout));
    match tokio::time::timeout(timeout + GRACE, task).await {
        Ok(Ok(r)) => r.map_err(|e| e.to_string()),
        Ok(Err(e)) => Err(format!("the trigger stopped abnormally: {e}")),
        Err(_) => Err(format!(
            "the trigger did not finish within {} s",
            (timeout + GRACE).as_secs()
        )),
    }
}

/// Runs `on_schedule` of `rule` on a blocking thread.
pub async fn run_schedule(
    hooks: Arc<HookTable>,
    rule: &str,
    now: time::OffsetDateTime,
    effects: Arc<dyn Effects>,
    timeout: Duration,
) -> Result<(), String> {
    let rule_name = rule.to_string();
    let now = rfc3339(now);
    let task = tokio::task::spawn_blocking(move || {
        hooks.call_schedule(&rule_name, &now, effects, timeout)
    });
    match tokio::time::timeout(timeout + GRACE, task).await {
        Ok(Ok(r)) => r.map_err(|e| e.to_string()),
        Ok(Err(e)) => Err(format!("on_schedule stopped abnormally: {e}")),
        Err(_) => Err(format!(
            "on_schedule did not finish within {} s",
            (timeout + GRACE).as_secs()
        )),
    }
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
    use crate::rules::{AdFound, HttpRequest, HttpResponse, Limits, RuleSet};
    use crate::sync::apply::Action;
    use std::sync::Mutex;

    /// Records the bodies posted.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<serde_json::Value>>);

    impl Effects for Recorder {
        fn http(&self, r: HttpRequest) -> Result<HttpResponse, String> {
            let body = serde_json::from_slice(&r.body.unwrap_or_default()).unwrap_or_default();
            self.0.lock().expect("lock").push(body);
            Ok(HttpResponse {
                status: 204,
                body: String::new(),
            })
        }
        fn graph_get(&self, _: &str, _: Duration) -> Result<serde_json::Value, String> {
            Err("no Graph here".into())
        }
        fn ad_search(
            &self,
            _: &str,
            _: &str,
            _: &[String],
            _: Duration,
        ) -> Result<Vec<AdFound>, String> {
            Err("no AD here".into())
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
        let results = run_triggers(
            table.clone(),
            &plan,
            &outcomes,
            &BTreeMap::new(),
            Vec::new(),
            Ok(rec.clone()),
            limits,
        )
        .await;
        let got: Vec<(&str, Hook, &str)> = results
            .iter()
            .map(|r| (r.cloud_id.as_str(), r.hook, r.outcome))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", Hook::OnCreated, "ok"),
                ("b", Hook::OnCreated, "skipped"),
                ("c", Hook::OnCreated, "skipped"),
                ("d", Hook::OnMembersAdded, "ok"),
                ("e", Hook::OnDeleted, "skipped"),
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
        let results = run_triggers(
            table.clone(),
            &plan,
            &outcomes,
            &BTreeMap::new(),
            Vec::new(),
            Ok(rec.clone()),
            limits,
        )
        .await;
        let e = &results[4];
        assert_eq!(e.outcome, "failed");
        assert!(
            e.error
                .as_deref()
                .is_some_and(|m| m.contains("no (rule 10-t.rhai, on_deleted(), group e)")),
            "{e:?}"
        );
        let results = run_triggers(
            table.clone(),
            &plan,
            &outcomes,
            &BTreeMap::new(),
            Vec::new(),
            Err("no HTTP client".into()),
            limits,
        )
        .await;
        assert_eq!(results[0].outcome, "failed");
        assert_eq!(results[0].error.as_deref(), Some("no HTTP client"));

        // The cycle's trigger time spent: nothing more runs, each says why.
        let spent = TriggerLimits {
            budget: Duration::ZERO,
            ..limits
        };
        let calls_before = rec.0.lock().expect("lock").len();
        let results = run_triggers(
            table,
            &plan,
            &outcomes,
            &BTreeMap::new(),
            Vec::new(),
            Ok(rec.clone()),
            spent,
        )
        .await;
        assert_eq!(rec.0.lock().expect("lock").len(), calls_before);
        assert_eq!(results[0].outcome, "skipped");
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
        let outcomes: Vec<(Hook, &str)> = results.iter().map(|r| (r.hook, r.outcome)).collect();
        // The second one is over the per-cycle limit, like any trigger.
        assert_eq!(outcomes, [(Hook::OnHeld, "ok"), (Hook::OnHeld, "skipped")]);
        assert_eq!(
            rec.0.lock().expect("lock").clone(),
            [serde_json::json!({ "hook": "held", "approve": "writeback approve s1" })]
        );
    }
}
