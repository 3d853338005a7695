//! One sync cycle: Graph delta -> cloud cache -> rules -> desired -> plan -> gate -> apply -> record.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use crate::ad::{self, AdConn};
use crate::config::{Config, UserMatch};
use crate::graph::client::GraphClient;
use crate::graph::delta::{self, DeltaStart};
use crate::graph::model::{CloudObject, MemberKind};
use crate::rules::{Decision, DesiredGroup, MemberPolicy, RuleSet};
use crate::state::{tx, Anchor, AuditEvent, ObjectKind, Store};

use super::apply::{self, Outcome};
use super::desired::{
    anchor_filter, anchor_value, transitive_users, DesiredBuilder, DesiredObject, MemberDirectory,
    ANCHOR_ATTRS,
};
use super::plan::{self, ActualObject, Plan, Refusal};
use super::triggers::{self, ScheduleInfo, TriggerLimits, TriggerResult};
use super::SyncError;

/// How a cycle runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncOptions {
    /// Re-read the whole tenant instead of the changes since the last deltaLink.
    pub reread_cloud: bool,
    /// Compare every owned AD object, not only the groups whose desired state changed: finds
    /// hand edits (drift) and orphans.
    pub compare_all: bool,
    /// Compute the plan, write nothing to AD.
    pub dry_run: bool,
    /// Apply even when the plan deletes more objects than the configured threshold.
    pub allow_deletes: bool,
}

/// What a cycle saw and did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SyncReport {
    pub run_id: i64,
    pub mode: &'static str,
    pub cloud_groups: usize,
    pub cloud_users: usize,
    pub in_scope: usize,
    /// Groups whose desired state was compared with AD this cycle.
    pub examined: usize,
    pub plan: Plan,
    pub outcomes: Vec<Outcome>,
    /// Set when the delete threshold stopped the apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
    /// What each planned trigger did after the apply (empty in a dry run).
    pub trigger_results: Vec<TriggerResult>,
    /// Dry runs only: the rules' schedules and when each is next due.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduleInfo>,
    pub elapsed_ms: u128,
}

impl SyncReport {
    pub fn failures(&self) -> usize {
        self.outcomes.iter().filter(|o| !o.ok()).count()
    }
}

/// The connectors and the state a cycle works with.
pub struct SyncContext<'a> {
    pub config: &'a Config,
    pub graph: &'a GraphClient,
    pub ad: &'a mut AdConn,
    pub store: &'a mut Store,
    pub rules: &'a RuleSet,
    /// The target schema, read on first need and kept by the caller across cycles (a cycle
    /// with nothing to write never reads it).
    pub schema: &'a mut Option<ad::schema::Schema>,
}

/// Runs one cycle.
pub async fn run(ctx: SyncContext<'_>, opts: SyncOptions) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
    let mode = match (opts.dry_run, opts.reread_cloud, opts.compare_all) {
        (true, true, _) => "plan-full",
        (true, false, true) => "plan-reconcile",
        (true, false, false) => "plan",
        (false, true, _) => "sync-full",
        (false, false, true) => "reconcile",
        (false, false, false) => "sync",
    };
    let run_id = ctx.store.begin_run(mode)?;
    let result = cycle(
        ctx.config, ctx.graph, ctx.ad, ctx.store, ctx.rules, ctx.schema, opts, run_id,
    )
    .await;
    let (status, stats) = match &result {
        Ok(r) => (
            if r.blocked.is_some() {
                "blocked"
            } else if r.failures() > 0 {
                "partial"
            } else {
                "ok"
            },
            serde_json::json!({
                "changes": r.plan.changes.len(),
                "refused": r.plan.refused.len(),
                "unresolved_members": r.plan.unresolved_members.len(),
                "failures": r.failures(),
                "examined": r.examined,
            }),
        ),
        Err(e) => ("failed", serde_json::json!({ "error": e.to_string() })),
    };
    ctx.store.finish_run(run_id, status, &stats)?;
    let mut report = result?;
    report.run_id = run_id;
    report.mode = mode;
    report.elapsed_ms = started.elapsed().as_millis();
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn cycle(
    config: &Config,
    graph: &GraphClient,
    conn: &mut AdConn,
    store: &mut Store,
    rules: &RuleSet,
    schema: &mut Option<ad::schema::Schema>,
    opts: SyncOptions,
    run_id: i64,
) -> Result<SyncReport, SyncError> {
    // Phase timings at debug level: where a slow cycle spends its time.
    let mut phase = Instant::now();
    let mut lap = |name: &str| {
        tracing::debug!(
            phase = name,
            ms = phase.elapsed().as_millis() as u64,
            "sync phase done"
        );
        phase = Instant::now();
    };
    // 1. Cloud: users first, so the groups' members can be matched.
    let users_changed = pull(graph, store, ObjectKind::User, opts.reread_cloud).await?;
    pull(graph, store, ObjectKind::Group, opts.reread_cloud).await?;
    let groups = store.load_objects(ObjectKind::Group)?;
    let users = store.load_objects(ObjectKind::User)?;
    lap("cloud");

    // 2. Rules: every cached group, every cycle (cheap; makes rule edits and cloud changes alike).
    let mut refused: Vec<Refusal> = Vec::new();
    let mut decided: BTreeMap<String, DesiredGroup> = BTreeMap::new();
    for (id, result) in evaluate_all(rules, &groups) {
        match result {
            Ok(Decision::Desired(d)) => {
                decided.insert(id, d);
            }
            Ok(Decision::OutOfScope) => {}
            Err(e) => refused.push(Refusal {
                cloud_id: id,
                rule: None,
                reason: e,
            }),
        }
    }
    // A group the rules could not evaluate keeps its AD object as it is: never delete on error.
    let errored: BTreeSet<String> = refused.iter().map(|r| r.cloud_id.clone()).collect();

    lap("rules");
    // 3. Which groups to compare with AD.
    let anchors = store.anchors()?;
    let applied = store.applied_hashes()?;
    let hashes: BTreeMap<String, String> = decided
        .iter()
        .map(|(id, d)| (id.clone(), desired_hash(d, &groups[id], &groups)))
        .collect();
    let dirty: BTreeSet<String> = if opts.compare_all {
        decided.keys().chain(anchors.keys()).cloned().collect()
    } else {
        let mut dirty: BTreeSet<String> = hashes
            .iter()
            .filter(|(id, h)| applied.get(*id) != Some(*h) || !anchors.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        // Anchored groups that left scope or the cloud.
        dirty.extend(
            anchors
                .keys()
                .filter(|id| !decided.contains_key(*id))
                .cloned(),
        );
        // Groups with a member whose AD match may have changed.
        for (id, g) in &groups {
            if decided.contains_key(id)
                && g.members
                    .keys()
                    .any(|m| users_changed.contains(m) || dirty.contains(m))
            {
                dirty.insert(id.clone());
            }
        }
        dirty
    };
    let dirty: BTreeSet<String> = dirty.difference(&errored).cloned().collect();

    // 4. Desired objects: first their DNs (nested groups need them), then members. Only the
    // groups to compare are built and checked in full; the others need just their DN.
    if schema.is_none() && !dirty.is_empty() {
        *schema = Some(conn.load_schema().await?);
    }
    let builder = DesiredBuilder {
        managed_ous: &config.ad.managed_ous,
        schema: schema.as_ref(),
    };
    let mut written_dns: BTreeMap<String, String> = BTreeMap::new();
    let mut desired: BTreeMap<String, DesiredObject> = BTreeMap::new();
    let mut policies = BTreeMap::new();
    for (id, d) in &decided {
        if !dirty.contains(id) {
            written_dns.insert(id.clone(), DesiredBuilder::dn(d));
            continue;
        }
        match builder.object(id, d) {
            Ok(o) => {
                written_dns.insert(id.clone(), o.dn.clone());
                policies.insert(id.clone(), d.members);
                desired.insert(id.clone(), o);
            }
            Err(r) => refused.push(r),
        }
    }
    let refused_ids: BTreeSet<String> = refused.iter().map(|r| r.cloud_id.clone()).collect();
    let directory = resolve_members(config, conn, &desired, &policies, &groups, &users).await?;
    let mut unresolved = Vec::new();
    for (id, o) in desired.iter_mut() {
        o.members = builder.members(
            &groups[id],
            &groups,
            policies[id],
            &written_dns,
            &directory,
            &mut unresolved,
        );
    }

    lap("desired");
    // 5. Actual: the owned AD objects for the same groups.
    let attrs = managed_attributes(&desired);
    let actual = read_owned(conn, config, &dirty, opts.compare_all, &attrs).await?;
    lap("actual");
    // Never delete what the rules refused or failed on: its AD object stays as it is.
    let actual: BTreeMap<String, ActualObject> = actual
        .into_iter()
        .filter(|(id, _)| {
            !refused_ids.contains(id) && (desired.contains_key(id) || !decided.contains_key(id))
        })
        .collect();

    let mut changes = plan::plan(&desired, &actual);
    // A group whose rule output did not change and that already matches AD needs no record either.
    refused.sort_by(|a, b| a.cloud_id.cmp(&b.cloud_id));
    unresolved.sort();
    changes.sort_by(|a, b| a.cloud_id.cmp(&b.cloud_id));
    // Triggers of the rule that handled each group; a delete's rule is the one in its anchor.
    let hooks = rules.hooks();
    let triggers = plan::planned_triggers(
        &changes,
        |id| anchors.get(id).map(|a| a.rule.clone()),
        |rule, hook| hooks.has(rule, hook),
    );
    let plan = Plan {
        changes,
        refused,
        unresolved_members: unresolved,
        triggers,
    };

    let mut report = SyncReport {
        cloud_groups: groups.len(),
        cloud_users: users.len(),
        in_scope: decided.len(),
        examined: desired.len() + actual.keys().filter(|k| !desired.contains_key(*k)).count(),
        ..Default::default()
    };

    // 6. Gate.
    let deletes = plan.deletes();
    if deletes > 0 && decided.is_empty() && !groups.is_empty() && !opts.allow_deletes {
        // A rule edit that takes every group out of scope must not wipe AD, however few
        // groups there are.
        report.blocked = Some(format!(
            "the rules put none of the {} cloud groups in scope, so the plan deletes every group Writeback owns ({deletes}); nothing was applied. If that is intended, run `writeback sync --allow-deletes`",
            groups.len()
        ));
    } else if deletes > config.delete_threshold && !opts.allow_deletes {
        report.blocked = Some(format!(
            "the plan deletes {deletes} objects, more than the delete threshold ({}); nothing was applied. Review it with `writeback plan`, then run with --allow-deletes to apply",
            config.delete_threshold
        ));
    }
    if opts.dry_run {
        report.schedules = triggers::schedules(&hooks, time::OffsetDateTime::now_utc());
    }
    if opts.dry_run || report.blocked.is_some() {
        report.plan = plan;
        return Ok(report);
    }

    // 7. Apply and record.
    tracing::info!(changes = plan.changes.len(), "applying the plan");
    let outcomes = apply::apply(conn, &plan, &config.ad.managed_ous).await;
    lap("apply");
    record(store, run_id, &plan, &outcomes, &desired, &hashes, &actual)?;
    lap("record");
    // Groups examined with no change are in step: remember that, so the next cycle skips them.
    let changed: BTreeSet<&String> = plan.changes.iter().map(|c| &c.cloud_id).collect();
    store.with_transaction(|tx| {
        for (id, o) in &desired {
            if changed.contains(id) {
                continue;
            }
            if let Some(a) = actual.get(id) {
                tx::put_applied(tx, id, &hashes[id])?;
                tx::put_anchor(
                    tx,
                    &Anchor {
                        cloud_id: id.clone(),
                        object_guid: a.guid.clone().unwrap_or_default(),
                        dn: a.dn.clone(),
                        rule: o.rule.clone(),
                        updated_at: String::new(),
                    },
                )?;
            }
        }
        Ok(())
    })?;

    // 8. Triggers of the applied changes; their failures are reported, never undo the sync.
    if !plan.triggers.is_empty() {
        let effects = crate::effects::HostEffects::for_host(
            tokio::runtime::Handle::current(),
            config,
            graph,
            conn,
        )
        .map(|e| Arc::new(e) as Arc<dyn crate::rules::Effects>)
        .map_err(|e| e.to_string());
        report.trigger_results = triggers::run_triggers(
            hooks,
            &plan,
            &outcomes,
            &groups,
            effects,
            TriggerLimits {
                timeout: config.rules.trigger_timeout,
                max_calls: config.rules.max_triggers_per_cycle,
            },
        )
        .await;
        store.with_transaction(|t| {
            for r in &report.trigger_results {
                tx::record_event(t, run_id, &r.audit_event())?;
            }
            Ok(())
        })?;
    }
    report.plan = plan;
    report.outcomes = outcomes;
    Ok(report)
}

/// Evaluates the rules for every group, on all cores (the rule set is thread-safe and pure).
fn evaluate_all(
    rules: &RuleSet,
    groups: &BTreeMap<String, CloudObject>,
) -> Vec<(String, Result<Decision, String>)> {
    let all: Vec<(&String, &CloudObject)> = groups.iter().collect();
    // One `now()` for the whole cycle: every group is judged against the same instant.
    let now = crate::rules::Now::current();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    let eval = |part: &[(&String, &CloudObject)]| -> Vec<(String, Result<Decision, String>)> {
        part.iter()
            .map(|(id, g)| {
                let r = rules
                    .evaluate_at(&g.to_rule_json(), now)
                    .map_err(|e| e.to_string());
                ((*id).clone(), r)
            })
            .collect()
    };
    if threads < 2 || all.len() < 256 {
        return eval(&all);
    }
    let chunk = all.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = all
            .chunks(chunk)
            .map(|part| s.spawn(move || eval(part)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                // A panicking rule evaluation is a bug in the host, not in a rule: surface it.
                h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
            .collect()
    })
}

/// Follows one delta round for `kind` and stores it with its deltaLink; returns the ids changed.
async fn pull(
    graph: &GraphClient,
    store: &mut Store,
    kind: ObjectKind,
    full: bool,
) -> Result<BTreeSet<String>, SyncError> {
    let base = graph.graph_base();
    let initial = match kind {
        ObjectKind::Group => delta::groups_delta_url(base, delta::DEFAULT_GROUP_SELECT),
        ObjectKind::User => delta::users_delta_url(base, delta::DEFAULT_USER_SELECT),
    };
    let start = match (full, store.delta_link(kind)?) {
        (false, Some(link)) => DeltaStart::Link {
            link,
            initial_url: initial,
        },
        _ => DeltaStart::Initial { url: initial },
    };
    let round = delta::run_round(graph, start).await?;
    let changes = store.apply_delta(kind, &round)?;
    Ok(changes.changed.union(&changes.deleted).cloned().collect())
}

/// A stable fingerprint of what the rules want for a group, and of its cloud members.
fn desired_hash(
    d: &DesiredGroup,
    g: &CloudObject,
    groups: &BTreeMap<String, CloudObject>,
) -> String {
    let mut h = Sha256::new();
    h.update(
        serde_json::to_vec(&(&d.rule, &d.parent, &d.cn, &d.attributes, d.members))
            .unwrap_or_default(),
    );
    let members: Vec<String> = match d.members {
        MemberPolicy::Flatten => transitive_users(groups, &g.id)
            .into_iter()
            .map(|m| m.id)
            .collect(),
        _ => g.members.keys().cloned().collect(),
    };
    for id in members {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    format!("{:x}", h.finalize())
}

/// Every attribute any desired object manages, plus what ownership needs.
fn managed_attributes(desired: &BTreeMap<String, DesiredObject>) -> Vec<String> {
    let mut set: BTreeSet<String> = ANCHOR_ATTRS.iter().map(|s| s.to_string()).collect();
    for o in desired.values() {
        set.extend(o.attributes.keys().cloned());
    }
    set.into_iter().collect()
}

/// Reads owned objects: all of them in a full run, else those of the dirty ids (looked up by
/// anchor in batches, never one search per group).
async fn read_owned(
    conn: &mut AdConn,
    config: &Config,
    dirty: &BTreeSet<String>,
    full: bool,
    attrs: &[String],
) -> Result<BTreeMap<String, ActualObject>, SyncError> {
    let anchor_attr = ANCHOR_ATTRS[0];
    let mut want: Vec<&str> = attrs.iter().map(String::as_str).collect();
    // `member` comes with the search, read completely in ranges: no second read per group.
    want.extend(["objectGUID", "member"]);
    let mut entries = Vec::new();
    if full {
        entries = conn
            .find_owned_groups(&config.ad.managed_ous, anchor_attr, "Group_", &want)
            .await?;
    } else {
        let ids: Vec<&String> = dirty.iter().collect();
        for chunk in ids.chunks(ad::RESOLVE_BATCH) {
            let filter = anchor_filter(chunk);
            for base in &config.ad.managed_ous {
                entries.extend(
                    conn.search(base, ad::Scope::Subtree, &filter, &want)
                        .await?,
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    for e in entries {
        let anchor = e.first(anchor_attr).unwrap_or_default().to_string();
        let Some(cloud_id) = anchor.strip_prefix("Group_") else {
            continue;
        };
        // Ownership is exact: `Group_<id>`, inside a managed OU (the search bases).
        if anchor != anchor_value(cloud_id) {
            continue;
        }
        let mut attrs = e.attrs;
        let members = attrs.remove("member").unwrap_or_default();
        out.insert(
            cloud_id.to_string(),
            ActualObject {
                cloud_id: cloud_id.to_string(),
                dn: e.dn,
                guid: e.guid.map(|g| g.to_string()),
                attrs,
                members,
            },
        );
    }
    Ok(out)
}

/// Finds the AD accounts of the members of the groups being written, in batches.
async fn resolve_members(
    config: &Config,
    conn: &mut AdConn,
    desired: &BTreeMap<String, DesiredObject>,
    policies: &BTreeMap<String, MemberPolicy>,
    groups: &BTreeMap<String, CloudObject>,
    users: &BTreeMap<String, CloudObject>,
) -> Result<MemberDirectory, SyncError> {
    let mut dir = MemberDirectory::default();
    let mut by_sid: BTreeMap<String, Vec<(bool, String)>> = BTreeMap::new();
    let mut by_guid: BTreeMap<uuid::Uuid, Vec<String>> = BTreeMap::new();
    let mut wanted_users = BTreeSet::new();
    let mut wanted_groups = BTreeSet::new();
    for id in desired.keys() {
        let flat;
        let members: Box<dyn Iterator<Item = &crate::graph::model::MemberRef>> = if policies
            .get(id)
            .is_some_and(|p| *p == MemberPolicy::Flatten)
        {
            flat = transitive_users(groups, id);
            Box::new(flat.iter())
        } else {
            Box::new(groups[id].members.values())
        };
        for m in members {
            match m.kind() {
                MemberKind::User => {
                    wanted_users.insert(m.id.clone());
                }
                MemberKind::Group => {
                    wanted_groups.insert(m.id.clone());
                }
                MemberKind::Other => {}
            }
        }
    }
    for uid in &wanted_users {
        let Some(u) = users.get(uid) else {
            dir.user_reasons
                .insert(uid.clone(), "user not found in the cloud cache".into());
            continue;
        };
        match config.user_match {
            UserMatch::Sid => match u.str_prop("onPremisesSecurityIdentifier") {
                Some(sid) if !sid.is_empty() => by_sid
                    .entry(sid.to_string())
                    .or_default()
                    .push((true, uid.clone())),
                _ => {
                    dir.user_reasons.insert(
                        uid.clone(),
                        "cloud-only user (no onPremisesSecurityIdentifier)".into(),
                    );
                }
            },
            UserMatch::ImmutableId => {
                match u
                    .str_prop("onPremisesImmutableId")
                    .and_then(guid_from_immutable_id)
                {
                    Some(g) => by_guid.entry(g).or_default().push(uid.clone()),
                    None => {
                        dir.user_reasons.insert(
                            uid.clone(),
                            "cloud-only user (no usable onPremisesImmutableId)".into(),
                        );
                    }
                }
            }
        }
    }
    for gid in &wanted_groups {
        if let Some(sid) = groups
            .get(gid)
            .and_then(|g| g.str_prop("onPremisesSecurityIdentifier"))
        {
            by_sid
                .entry(sid.to_string())
                .or_default()
                .push((false, gid.clone()));
        }
    }
    // Empty = the domain root (the connector asks AD for it).
    let bases = config.ad.member_search_bases.clone();
    if !by_sid.is_empty() {
        let sids: Vec<String> = by_sid.keys().cloned().collect();
        let found = conn.resolve_sids(&sids, &bases).await?;
        for (sid, owners) in &by_sid {
            for (is_user, id) in owners {
                match (found.get(sid), is_user) {
                    (Some(dn), true) => {
                        dir.users.insert(id.clone(), dn.clone());
                    }
                    (Some(dn), false) => {
                        dir.synced_groups.insert(id.clone(), dn.clone());
                    }
                    (None, true) => {
                        dir.user_reasons
                            .insert(id.clone(), format!("no AD account has objectSid {sid}"));
                    }
                    (None, false) => {}
                }
            }
        }
    }
    if !by_guid.is_empty() {
        let guids: Vec<uuid::Uuid> = by_guid.keys().cloned().collect();
        let found = conn.resolve_guids(&guids, &bases).await?;
        for (g, owners) in &by_guid {
            for id in owners {
                match found.get(g) {
                    Some(dn) => {
                        dir.users.insert(id.clone(), dn.clone());
                    }
                    None => {
                        dir.user_reasons
                            .insert(id.clone(), format!("no AD account has objectGUID {g}"));
                    }
                }
            }
        }
    }
    Ok(dir)
}

/// Connect's source anchor: base64 of the AD objectGUID bytes.
fn guid_from_immutable_id(v: &str) -> Option<uuid::Uuid> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
    ad::dn::guid_from_ad_bytes(&bytes).ok()
}

fn record(
    store: &mut Store,
    run_id: i64,
    plan: &Plan,
    outcomes: &[Outcome],
    desired: &BTreeMap<String, DesiredObject>,
    hashes: &BTreeMap<String, String>,
    actual: &BTreeMap<String, ActualObject>,
) -> Result<(), SyncError> {
    let by_id: BTreeMap<&String, &super::plan::Change> =
        plan.changes.iter().map(|c| (&c.cloud_id, c)).collect();
    // One transaction: one fsync for the whole run's bookkeeping.
    store.with_transaction(|t| {
        for o in outcomes {
            let detail = by_id
                .get(&o.cloud_id)
                .map(|c| serde_json::to_value(c).unwrap_or_default())
                .unwrap_or_default();
            tx::record_event(
                t,
                run_id,
                &AuditEvent {
                    cloud_id: o.cloud_id.clone(),
                    action: o.action.to_string(),
                    dn: o.dn.clone(),
                    detail,
                    outcome: if o.ok() { "ok".into() } else { "failed".into() },
                },
            )?;
            match o.action {
                "delete" if o.error.is_none() => {
                    tx::remove_anchor(t, &o.cloud_id)?;
                    tx::remove_applied(t, &o.cloud_id)?;
                }
                "create" | "update" => {
                    let guid = o
                        .guid
                        .clone()
                        .or_else(|| actual.get(&o.cloud_id).and_then(|a| a.guid.clone()));
                    if o.error.is_none() || (o.action == "update" && guid.is_some()) {
                        if let Some(d) = desired.get(&o.cloud_id) {
                            tx::put_anchor(
                                t,
                                &Anchor {
                                    cloud_id: o.cloud_id.clone(),
                                    object_guid: guid.unwrap_or_default(),
                                    dn: o.dn.clone(),
                                    rule: d.rule.clone(),
                                    updated_at: String::new(),
                                },
                            )?;
                        }
                    }
                    // Only a fully applied change is remembered; anything else is retried next cycle.
                    if o.ok() {
                        if let Some(h) = hashes.get(&o.cloud_id) {
                            tx::put_applied(t, &o.cloud_id, h)?;
                        }
                    } else {
                        tx::remove_applied(t, &o.cloud_id)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    })?;
    Ok(())
}
