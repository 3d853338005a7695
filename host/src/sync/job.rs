//! One sync cycle: Graph delta -> cloud cache -> which groups -> rules -> desired -> plan ->
//! gate -> apply -> record, in bounded batches.
//!
//! The cycle drives pure steps (`select`, `evaluate`, `desired`, `owners`, `plan`, `gate`,
//! `record`): it reads the store by key, talks to Graph and AD, and hands data between them. A
//! few decisions still live here (`judge`, `settle_held`).
//! What it costs follows what changed (see `select`): an idle cycle reads two delta pages and
//! the pending marks, nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use crate::ad;
use crate::config::Config;
use crate::graph::api::GraphApi;
use crate::graph::delta::{self, ChunkedRoundError};
use crate::graph::model::{CloudObject, MemberKind};
use crate::rules::{Decision, DesiredGroup, MemberPolicy, Now, RuleSet};
use crate::state::{
    held_set_id, HeldDelete, MemberChanges, ObjectKind, RoundProgress, RunStatus, StateError,
};

use super::actual;
use super::alerts;
use super::apply::{self, Outcome};
use super::desired::DesiredBuilder;
use super::devices;
use super::directory::Directory;
use super::evaluate::{evaluate_all, rules_fingerprint};
use super::gate::{self, Gate, GateInput, Held, HeldEntry};
use super::heads::{self, ReadGroups};
use super::leave::{self, Leave, LeavingNote};
use super::member_writes;
use super::ownership::{self, Claim};
use super::plan;
use super::record::{self, Write};
use super::removals;
use super::resolve;
use super::select::{self, AllReason, Known, Sweep, Verdict};
use super::state::CycleState;
use super::stream::ChangeSink;
use super::triggers::Alert;
use super::triggers::{self, TriggerLimits, TriggerOutcome, TriggerResult};
use super::types::{
    dn_key, ActualObject, Change, DesiredObject, Op, Plan, PlanCounts, Refusal, Unresolved,
};
use super::SyncError;

pub use super::options::SyncOptions;
pub use super::outcome::{Foreign, QuarantineNote, SyncReport};

/// Groups built, resolved, compared and applied together: bounds a cycle's memory whatever
/// the tenant's size (a batch holds its groups, their members and their AD objects).
pub const BATCH: usize = 500;

/// Groups evaluated together, read from the cache a chunk at a time: bounds the memory of a
/// whole-cache pass and of a changed sweep that marks most of the cache (a resync, a
/// tenant-wide change). Tiny in the crate's tests, so their small tenants span several chunks.
pub const EVAL_CHUNK: usize = if cfg!(test) { 3 } else { 2_000 };

/// Groups a cycle may compare or delete before it takes the [`actual::Census`] of the managed
/// OUs once, rather than search AD by the unindexed anchor in every batch. Tiny in the crate's
/// tests.
pub const CENSUS_ABOVE: usize = if cfg!(test) { 3 } else { BATCH };

/// `meta` key: the fingerprint of the rules and settings the applied hashes were computed with.
const RULES_KEY: &str = "rules_fingerprint";
/// `meta` key: how members were matched when the applied hashes were recorded. The hashes hold
/// member ids, not their DNs, so a change of it compares every group once.
const MATCH_KEY: &str = "member_match";

/// Builds the effects trigger calls run with (HTTP, Graph, AD), when a cycle has calls to
/// deliver.
pub type MakeEffects<'a> =
    &'a (dyn Fn() -> Result<Arc<dyn crate::rules::Effects>, crate::effects::EffectsError> + Sync);

/// The connectors and the state a cycle works with: AD and Graph through the traits the
/// cycle owns ([`Directory`], [`GraphApi`]).
pub struct SyncContext<'a, D, G, S> {
    pub config: &'a Config,
    pub graph: &'a G,
    pub ad: &'a mut D,
    pub effects: MakeEffects<'a>,
    pub store: &'a mut S,
    pub rules: &'a RuleSet,
    /// The target schema, read on first need and kept by the caller across cycles (a cycle
    /// with nothing to write never reads it).
    pub schema: &'a mut Option<ad::schema::Schema>,
    /// Where the plan goes batch by batch. With a sink, the report keeps the counts, the
    /// refusals and the outcomes, and of the changes only those whose triggers run; without
    /// one, it holds the whole plan.
    pub sink: Option<&'a mut dyn ChangeSink>,
}

/// Runs one cycle.
pub async fn run<D: Directory, G: GraphApi, S: CycleState>(
    ctx: SyncContext<'_, D, G, S>,
    opts: SyncOptions,
) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
    let mode = opts.mode();
    let run_id = ctx.store.begin_run(mode)?;
    let mut cycle = Cycle {
        config: ctx.config,
        graph: ctx.graph,
        conn: ctx.ad,
        effects: ctx.effects,
        store: ctx.store,
        rules: ctx.rules,
        schema: ctx.schema,
        sink: ctx.sink,
        counts: PlanCounts::default(),
        lookups: resolve::Lookups::default(),
        deleted_rules: BTreeMap::new(),
        foreign: Foreign::default(),
        adopted: Vec::new(),
        removals_approved: BTreeMap::new(),
        released: BTreeSet::new(),
        pending: None,
        devices_unreadable: false,
        census: None,
        opts,
        run_id,
        now: Now::current(),
        phase: Instant::now(),
    };
    let outcome = cycle.run().await;
    let dc = cycle.conn.url().to_string();
    let result = match outcome {
        Err(SyncError::Ad(e)) if e.is_connection_error() => {
            Err(SyncError::AdConnection { url: dc, source: e })
        }
        Ok(mut r) => ctx
            .store
            .quarantine_count()
            .map(|n| {
                r.quarantine_total = n;
                r
            })
            .map_err(SyncError::from),
        Err(e) => Err(e),
    };
    let (status, stats) = match &result {
        Ok(r) => (r.status(), r.stats()),
        Err(e) => (
            RunStatus::Failed,
            serde_json::json!({ "error": e.to_string() }),
        ),
    };
    ctx.store.finish_run(run_id, status, &stats)?;
    let mut report = result?;
    report.run_id = run_id;
    report.mode = mode;
    report.elapsed_ms = started.elapsed().as_millis();
    Ok(report)
}

/// What the settling step needs of the cycle so far.
struct Settle<'c> {
    deletes: &'c Deletes,
    verdicts: &'c BTreeMap<String, Verdict>,
    leave: &'c Leave,
    held_before: &'c BTreeMap<String, HeldDelete>,
    /// The groups a changed sweep looked at (`None`: all of them).
    looked_at: Option<&'c BTreeSet<String>>,
    /// The rules fingerprint to record, after a whole-cache sweep.
    fingerprint: Option<&'c str>,
}

/// What the evaluation step leaves for the rest of the cycle: a compact verdict per group
/// looked at, and what the selection needs.
#[derive(Debug, Default)]
struct Evaluated {
    verdicts: BTreeMap<String, Verdict>,
    /// Rule errors, as refusals (their AD objects are left as they are).
    refused: Vec<Refusal>,
    /// Groups whose decision read `now()`: evaluated again next cycle.
    timed: BTreeSet<String>,
    /// Hashes last applied, for the in-scope groups.
    applied: BTreeMap<String, String>,
    /// Anchored ids among the groups considered.
    owned: BTreeSet<String>,
    /// Owned AD objects found by a reconciliation's scan (DN and GUID) that are not in scope:
    /// where the deletes are.
    located: BTreeMap<String, ActualObject>,
    evaluated: usize,
}

/// One cycle's working set. Each step is a method; the pure work is in the modules it calls.
/// (`'s`, the sink's lifetime, is the caller's: the rest is borrowed for the cycle only.)
struct Cycle<'a, 's, D, G, S> {
    config: &'a Config,
    graph: &'a G,
    conn: &'a mut D,
    effects: MakeEffects<'a>,
    store: &'a mut S,
    rules: &'a RuleSet,
    schema: &'a mut Option<ad::schema::Schema>,
    sink: Option<&'s mut dyn ChangeSink>,
    counts: PlanCounts,
    /// Member SIDs and GUIDs already asked of AD this cycle.
    lookups: resolve::Lookups<D>,
    /// The rule in the anchor of each group to delete, read before the delete removes the
    /// anchor (its `on_deleted` trigger is that rule's).
    deleted_rules: BTreeMap<String, String>,
    /// Anchored objects found that Writeback did not record: left alone.
    foreign: Foreign,
    /// Objects recorded as its own this cycle without having been created by it.
    adopted: Vec<HeldEntry>,
    /// Member removals an operator approved: group -> the fingerprint of that exact set.
    removals_approved: BTreeMap<String, String>,
    /// Groups released with `writeback release`: passed over, unless this cycle adopts.
    released: BTreeSet<String>,
    /// Users and groups with an unapplied change (a group's member kept through one is
    /// compared in full): read when a batch first has member changes to judge, so a cycle
    /// without any (a first sync marks the whole tenant pending) does not hold them.
    pending: Option<BTreeSet<String>>,
    /// Graph refused this cycle's devices round (403: no `Device.Read.All`).
    devices_unreadable: bool,
    /// The managed OUs by anchor, when the cycle looks at many groups.
    census: Option<actual::Census>,
    opts: SyncOptions,
    run_id: i64,
    /// One `now()` for the whole cycle: every group is judged against the same instant.
    now: Now,
    phase: Instant,
}

impl<D: Directory, G: GraphApi, S: CycleState> Cycle<'_, '_, D, G, S> {
    /// Phase timings at debug level: where a slow cycle spends its time.
    fn lap(&mut self, name: &str) {
        tracing::debug!(
            phase = name,
            ms = self.phase.elapsed().as_millis() as u64,
            "sync phase done"
        );
        self.phase = Instant::now();
    }

    /// The cycle's outline: each numbered step is a call into its own method or module, kept
    /// in one function (longer than most) so the order of the steps reads at once.
    async fn run(&mut self) -> Result<SyncReport, SyncError> {
        // 1. Cloud: users and devices first, so the groups' members can be matched. Each round
        // is streamed into the cache, which marks what changed as pending.
        self.pull(ObjectKind::User).await?;
        self.pull_devices().await?;
        self.pull(ObjectKind::Group).await?;
        self.lap("cloud");

        // 2. How much to look at. A pass that compares every group in scope needs no list of
        // what the pending changes touch (at a first sync of a million groups, all of them).
        let fingerprint = rules_fingerprint(self.config, self.rules);
        let rules_seen = self.rules_seen(&fingerprint)?;
        let owned = match rules_seen {
            select::RulesSeen::Never => self.store.anchor_count()?,
            _ => usize::MAX,
        };
        let forced = match select::compares_all(&self.opts, rules_seen, owned) {
            true => Affected::default(),
            false => self.affected_by_pending()?,
        };
        let sweep = select::sweep(&self.opts, rules_seen, forced.touched.clone());
        let mut report = SyncReport {
            sweep: sweep.kind(),
            ..Default::default()
        };
        let whole = match &sweep {
            Sweep::Idle => {
                self.idle(&mut report).await?;
                return Ok(report);
            }
            Sweep::Changed(_) => false,
            Sweep::All(_) => true,
        };
        // Read once the cycle has something to do: an idle cycle reads nothing it need not.
        self.released = self.store.released()?.into_keys().collect();

        // 3. Rules: the groups looked at, chunk by chunk; compact verdicts kept.
        let mut ev = self.evaluate(&sweep, &mut report)?;
        self.lap("rules");

        // 4. Which to compare and which to delete; the deletes are located first (DN only) so
        // the gate sees them all before anything is written.
        let reconcile = matches!(
            sweep,
            Sweep::All(AllReason::Reconcile | AllReason::FullRead)
        );
        let selection = self.select(&mut ev, &forced.forced, reconcile).await?;
        if selection.compare.len() + selection.delete.len() > CENSUS_ABOVE {
            self.census = Some(actual::census(self.conn, self.config).await?);
        }
        let mut deletes = self.locate_deletes(&selection).await?;

        // 5. Gate: over the threshold the deletes are held back, the rest goes through.
        let held_before = self.store.held_deletes()?;
        self.gate(&mut report, &mut deletes, &held_before)?;
        let applying = !self.opts.dry_run && report.blocked.is_none();
        let removals_before = self.store.waiting_removals()?;
        // Member removals an operator approved go through in the batches, exactly that set.
        self.removals_approved = self.store.approved_removals()?;

        // 6. Batches: build, resolve, read, plan, apply, record.
        let mut done = self
            .compare_in_batches(&selection, &mut ev, whole, applying)
            .await?;
        report.examined = done.examined + deletes.changes.len();
        report.member_deltas = done.member_deltas;
        self.lap("batches");

        // 7. Member adds that waited for groups of later batches, the deletes, the marks, the
        // quarantine, the held deletes.
        if applying {
            let looked_at = match &sweep {
                Sweep::Changed(ids) => Some(ids),
                _ => None,
            };
            let recorded = whole.then_some(fingerprint.as_str());
            let step = Settle {
                deletes: &deletes,
                verdicts: &ev.verdicts,
                leave: &selection.leave,
                held_before: &held_before,
                looked_at,
                fingerprint: recorded,
            };
            self.settle(&mut report, &mut done, step).await?;
        }
        report.held_removals = removals::held_set(
            std::mem::take(&mut done.held_removals),
            removals_before.map(|(id, _)| id),
        );
        report.foreign = std::mem::take(&mut self.foreign);
        report.adopted = std::mem::take(&mut self.adopted);
        report.leaving = self.leaving_notes(&selection.leave)?;
        let trigger_skips = std::mem::take(&mut done.trigger_skips);
        let (plan, outcomes) = self.close(done, deletes)?;
        report.counts = self.counts;
        if self.opts.dry_run {
            report.schedules =
                triggers::schedules(&self.rules.hooks(), time::OffsetDateTime::now_utc());
        }

        // 8. The operational hooks are recorded; then every due trigger call is delivered
        // (this cycle's and any left by an earlier one). Failures are reported and retried,
        // never undo the sync.
        if applying {
            self.deliver_triggers(&mut report, &plan, trigger_skips)
                .await?;
        }
        report.plan = plan;
        report.outcomes = outcomes;
        Ok(report)
    }

    /// Records this cycle's operational hooks (`on_held`, ...) and delivers every due trigger
    /// call; `skipped` are the planned ones whose change did not go through.
    async fn deliver_triggers(
        &mut self,
        report: &mut SyncReport,
        plan: &Plan,
        skipped: Vec<TriggerResult>,
    ) -> Result<(), SyncError> {
        let alerts: Vec<Write> = self
            .alerts(report, plan)?
            .iter()
            .map(|a| Write::Enqueue(triggers::new_call(self.run_id, &a.rule, &a.event)))
            .collect();
        self.store.record(self.run_id, &alerts)?;
        report.trigger_results = skipped;
        report.trigger_results.extend(self.deliver_due().await?);
        if !report.trigger_results.is_empty() {
            report.trigger_calls = Some(self.store.call_counts()?);
        }
        Ok(())
    }

    /// The rules against those last applied. A change of how members are matched compares
    /// every group.
    fn rules_seen(&mut self, fingerprint: &str) -> Result<select::RulesSeen, SyncError> {
        let rules_seen = match self.store.meta(RULES_KEY)? {
            None => select::RulesSeen::Never,
            Some(f) if f == fingerprint => select::RulesSeen::Same,
            Some(_) => select::RulesSeen::Changed,
        };
        let matching = resolve::match_fingerprint(self.config);
        if self.store.meta(MATCH_KEY)?.is_some_and(|m| m != matching) {
            self.opts.compare_all = true;
        }
        Ok(rules_seen)
    }

    /// An idle cycle: nothing to look at. A plan lists the schedules; a sync delivers the
    /// trigger calls an earlier cycle could not (a failure, a crash, its limits).
    async fn idle(&mut self, report: &mut SyncReport) -> Result<(), SyncError> {
        if self.opts.dry_run {
            report.schedules =
                triggers::schedules(&self.rules.hooks(), time::OffsetDateTime::now_utc());
        } else if self.store.any_call_due(unix_now())? {
            report.trigger_results = self.deliver_due().await?;
            report.trigger_calls = Some(self.store.call_counts()?);
        }
        Ok(())
    }

    /// Evaluates the groups the sweep looks at; a whole-cache sweep also counts the cache.
    fn evaluate(&mut self, sweep: &Sweep, report: &mut SyncReport) -> Result<Evaluated, SyncError> {
        let ev = match sweep {
            Sweep::Changed(ids) => self.evaluate_some(ids)?,
            _ => self.evaluate_everything()?,
        };
        report.evaluated = ev.evaluated;
        if matches!(sweep, Sweep::All(_)) {
            report.cloud_groups = Some(ev.evaluated);
            report.cloud_users = Some(self.store.count_objects(ObjectKind::User)?);
            report.in_scope = Some(
                ev.verdicts
                    .values()
                    .filter(|v| matches!(v, Verdict::InScope { .. }))
                    .count(),
            );
        }
        Ok(ev)
    }

    /// After the batches of an applying cycle: the waiting member adds and the deletes, the
    /// intents, the leaving rows, the quarantine, the held deletes and removals, the releases.
    async fn settle(
        &mut self,
        report: &mut SyncReport,
        done: &mut Applied,
        step: Settle<'_>,
    ) -> Result<(), SyncError> {
        // Held deletes stay pending: each cycle checks they are still to be deleted.
        if let Some(h) = &report.held {
            done.retry
                .extend(h.deletes.iter().map(|e| e.cloud_id.clone()));
        }
        self.finish(done, step.deletes, step.fingerprint).await?;
        self.settle_intents(step.verdicts)?;
        if !step.leave.record.is_empty() || !step.deletes.changes.is_empty() {
            self.store.settle_leaving(&step.leave.record)?;
        }
        report.quarantined = self.settle_failures(&done.failed, step.looked_at)?;
        self.settle_held(report, step.deletes, step.held_before, &done.outcomes)?;
        let rows: Vec<crate::state::HeldRemovalRow> = done
            .held_removals
            .iter()
            .map(|h| crate::state::HeldRemovalRow {
                cloud_id: h.cloud_id.clone(),
                dn: h.dn.clone(),
                removals: h.removals,
                members: h.members,
                removal_hash: h.removal_hash.clone(),
                approved: false,
                held_at: String::new(),
            })
            .collect();
        self.store.replace_held_removals(&rows)?;
        let adopted: Vec<String> = self
            .adopted
            .iter()
            .filter(|a| self.released.contains(&a.cloud_id))
            .map(|a| a.cloud_id.clone())
            .collect();
        self.store.unrelease(&adopted)?;
        Ok(())
    }

    /// The cycle's plan and outcomes, the deletes emitted with theirs, everything sorted
    /// (deterministic output) and the planned triggers listed.
    fn close(
        &mut self,
        done: Applied,
        deletes: Deletes,
    ) -> Result<(Plan, Vec<Outcome>), SyncError> {
        let Applied {
            mut plan,
            mut outcomes,
            ..
        } = done;
        let deleted: BTreeSet<&str> = deletes
            .changes
            .iter()
            .map(|c| c.cloud_id.as_str())
            .collect();
        let delete_outcomes: Vec<Outcome> = outcomes
            .iter()
            .filter(|o| deleted.contains(o.cloud_id.as_str()))
            .cloned()
            .collect();
        self.emit(&mut plan, deletes.changes, &delete_outcomes)?;
        self.lap("apply");
        plan.changes.sort_by(|a, b| a.cloud_id.cmp(&b.cloud_id));
        plan.refused.sort_by(|a, b| a.cloud_id.cmp(&b.cloud_id));
        plan.unresolved_members.sort();
        outcomes.sort_by(|a, b| a.cloud_id.cmp(&b.cloud_id));
        plan.triggers = self.planned_triggers(&plan.changes)?;
        Ok((plan, outcomes))
    }

    /// The groups a pending change may affect: the pending groups, the groups holding a
    /// pending user (its AD match may have changed) and every group above a pending group
    /// (flattened members, nested groups appearing or leaving).
    fn affected_by_pending(&self) -> Result<Affected, SyncError> {
        let mut pending_users = self.store.pending(ObjectKind::User)?;
        // A device's SID decides its computer like a user's join value decides its account.
        pending_users.extend(self.store.pending(ObjectKind::Device)?);
        let mut pending_groups = self.store.pending(ObjectKind::Group)?;
        // Quarantined groups whose wait is over are tried again; leaving groups whose delay is
        // over are looked at so their delete happens.
        pending_groups.extend(self.store.quarantine_due(unix_now())?);
        pending_groups.extend(self.store.leaving_due(self.now.unix_seconds())?);
        let mut forced = self.store.groups_containing(&pending_users)?;
        forced.extend(select::ancestors(&pending_groups, |ids| {
            self.store.groups_containing(ids)
        })?);
        let touched = pending_groups.union(&forced).cloned().collect();
        Ok(Affected { forced, touched })
    }

    /// The users and groups with an unapplied change, read once per cycle on first need.
    /// Quarantined and leaving groups count as changed members too: the short way for the
    /// groups holding them would not look at them.
    fn read_pending_members(&mut self) -> Result<(), SyncError> {
        if self.pending.is_none() {
            let mut pending = self.store.pending(ObjectKind::User)?;
            pending.extend(self.store.pending(ObjectKind::Device)?);
            pending.extend(self.store.pending(ObjectKind::Group)?);
            pending.extend(self.store.quarantine_due(unix_now())?);
            pending.extend(self.store.leaving_due(self.now.unix_seconds())?);
            self.pending = Some(pending);
        }
        Ok(())
    }

    /// The groups to compare and the owned groups to delete. A reconciliation also looks for
    /// owned objects the anchors do not know (orphans).
    async fn select(
        &mut self,
        ev: &mut Evaluated,
        forced: &BTreeSet<String>,
        reconcile: bool,
    ) -> Result<Targets, SyncError> {
        if reconcile {
            let (verdicts, owned, located) = (&mut ev.verdicts, &mut ev.owned, &mut ev.located);
            let (store, foreign, adopt) = (&*self.store, &mut self.foreign, self.opts.adopt);
            let shared = &self.config.ad.shared_ous;
            let released = &self.released;
            // Claimed a batch at a time: their anchors read in one query, not one each.
            let mut settle = |found: Vec<ActualObject>| -> Result<(), StateError> {
                let claims = claims_of(store, &found, |a| {
                    adopt && matches!(verdicts.get(&a.cloud_id), Some(Verdict::InScope { .. }))
                })?;
                for (a, c) in found.into_iter().zip(claims) {
                    if !c.owned() {
                        if released.contains(&a.cloud_id) {
                            foreign.released += 1;
                        } else {
                            // A reconciliation evaluated every cached group: no verdict means
                            // the group is not in this tenant.
                            let in_scope =
                                matches!(verdicts.get(&a.cloud_id), Some(Verdict::InScope { .. }));
                            let kind = ownership::foreign_kind(
                                verdicts.get(&a.cloud_id).is_some(),
                                in_scope,
                            );
                            foreign.add(&a.dn, kind, shared);
                        }
                        continue;
                    }
                    owned.insert(a.cloud_id.clone());
                    let v = verdicts.entry(a.cloud_id.clone()).or_insert(Verdict::Gone);
                    // Kept only where a delete may need it: compared groups are read by key.
                    if !matches!(v, Verdict::InScope { .. }) {
                        located.insert(a.cloud_id.clone(), a);
                    }
                }
                Ok(())
            };
            let mut page = Vec::new();
            let mut failed = None;
            actual::scan_owned(self.conn, self.config, |a| {
                if failed.is_some() {
                    return;
                }
                page.push(a);
                if page.len() >= BATCH {
                    if let Err(e) = settle(std::mem::take(&mut page)) {
                        failed = Some(e);
                    }
                }
            })
            .await?;
            if let Some(e) = failed {
                return Err(e.into());
            }
            settle(page)?;
        }
        let mut selection = select::select(Known {
            verdicts: &ev.verdicts,
            applied: &ev.applied,
            owned: &ev.owned,
            forced,
            compare_all: self.opts.compare_all || self.opts.reread_cloud,
        });
        let parents = select::parents_to_compare(
            &selection,
            &ev.owned,
            |ids| self.store.groups_containing(ids),
            &ev.verdicts,
        )?;
        selection.compare.extend(parents);
        if !self.opts.adopt {
            // Released groups are left as they are; only an adoption takes them back.
            selection.compare.retain(|id| !self.released.contains(id));
        }
        let leave = leave::leave(
            &ev.verdicts,
            &ev.owned,
            &self.store.leaving()?,
            self.now.unix_seconds(),
        );
        selection.delete.extend(leave.due.keys().cloned());
        Ok(Targets {
            compare: selection.compare,
            delete: selection.delete,
            // Located by a reconciliation's scan: the deletes need no second read.
            located: std::mem::take(&mut ev.located),
            leave,
        })
    }

    /// The groups this cycle starts keeping or deleting later, with their DNs (the anchors').
    fn leaving_notes(&self, leave: &Leave) -> Result<Vec<LeavingNote>, SyncError> {
        let mut out = Vec::new();
        for (id, l) in leave.started() {
            let dn = self.store.anchor(id)?.map(|a| a.dn).unwrap_or_default();
            out.push(LeavingNote::new(id, dn, l));
        }
        Ok(out)
    }

    /// Where the AD objects to delete are; anchors whose object is gone already are stale.
    async fn locate_deletes(&mut self, selection: &Targets) -> Result<Deletes, SyncError> {
        let mut located = selection.located.clone();
        let missing: Vec<&String> = selection
            .delete
            .iter()
            .filter(|id| !located.contains_key(*id))
            .collect();
        if !missing.is_empty() {
            let census = self.census.as_ref();
            for a in actual::locate_owned(self.conn, self.config, census, &missing).await? {
                if claim_of(self.store, &a, false)?.owned() {
                    located.insert(a.cloud_id.clone(), a);
                } else {
                    // Located for a delete: out of scope, or gone from the cloud.
                    let cached = !self
                        .store
                        .load_by_ids(ObjectKind::Group, [&a.cloud_id])?
                        .is_empty();
                    let kind = ownership::foreign_kind(cached, false);
                    self.foreign.add(&a.dn, kind, &self.config.ad.shared_ous);
                }
            }
        }
        let mut out = Deletes::default();
        for id in &selection.delete {
            if let Some(a) = self.store.anchor(id)? {
                self.deleted_rules.insert(id.clone(), a.rule);
            }
            let reason = match selection.leave.due.get(id) {
                Some(l) => leave::due_reason(l),
                None => "no longer in scope or deleted in the cloud".into(),
            };
            match located.get(id) {
                Some(a) => out.changes.push(Change {
                    cloud_id: a.cloud_id.clone(),
                    rule: None,
                    op: Op::Delete {
                        dn: a.dn.clone(),
                        reason,
                    },
                }),
                None => out.stale.push(id.clone()),
            }
        }
        Ok(out)
    }

    /// Compares the selected groups with AD a batch at a time, and applies and records each
    /// batch when `applying` (deletes wait for [`Cycle::finish`]).
    async fn compare_in_batches(
        &mut self,
        selection: &Targets,
        ev: &mut Evaluated,
        whole: bool,
        applying: bool,
    ) -> Result<Applied, SyncError> {
        // Groups this cycle creates: member adds naming them wait until every batch has run.
        let created: BTreeSet<String> = selection
            .compare
            .iter()
            .filter(|id| !ev.owned.contains(*id))
            .filter_map(|id| match ev.verdicts.get(id) {
                Some(Verdict::InScope { dn, .. }) => Some(dn_key(dn)),
                _ => None,
            })
            .collect();
        let absent = self.absent_creates(selection, ev);
        let mut done = Applied::default();
        // Decisions that read now() are made again next cycle; rule errors go to quarantine.
        done.retry.extend(ev.timed.iter().cloned());
        done.fail_refused(&ev.refused);
        done.plan.refused = std::mem::take(&mut ev.refused);
        let ids: Vec<&String> = selection.compare.iter().collect();
        for chunk in ids.chunks(BATCH) {
            let mut batch = self
                .batch(
                    chunk,
                    &mut ev.verdicts,
                    (&ev.applied, &ev.owned, &absent),
                    whole,
                )
                .await?;
            done.examined += batch.desired.len();
            done.member_deltas += batch.member_deltas;
            // A group with held removals is not in step: it is looked at again every cycle,
            // until the removals are approved or no longer wanted.
            let held: BTreeSet<String> = batch
                .held_removals
                .iter()
                .map(|h| h.cloud_id.clone())
                .collect();
            done.retry.extend(held.iter().cloned());
            done.held_removals
                .extend(std::mem::take(&mut batch.held_removals));
            done.fail_refused(&batch.refused);
            done.plan.refused.extend(std::mem::take(&mut batch.refused));
            // Each compared group's count of members not found, for the standing total.
            let unresolved =
                record::unresolved_writes(&batch.desired, &batch.unresolved, &batch.short);
            self.emit_unresolved(&mut done.plan, std::mem::take(&mut batch.unresolved));
            if applying {
                let changes = std::mem::take(&mut batch.changes);
                self.apply_batch(changes, &batch, &created, &held, unresolved, &mut done)
                    .await?;
            } else {
                let (changes, collide) = self.collisions(batch.changes).await?;
                done.plan.refused.extend(collide);
                self.emit(&mut done.plan, changes, &[])?;
            }
        }
        Ok(done)
    }

    /// The groups this cycle would create that no object in the managed OUs is anchored to, as
    /// the census found (none without one): their batches need not search AD for them.
    fn absent_creates(&self, selection: &Targets, ev: &Evaluated) -> BTreeSet<String> {
        let Some(census) = &self.census else {
            return BTreeSet::new();
        };
        selection
            .compare
            .iter()
            .filter(|id| !ev.owned.contains(*id))
            .filter(|id| matches!(ev.verdicts.get(*id), Some(Verdict::InScope { .. })))
            .filter(|id| !census.anchored.contains(&id.to_lowercase()))
            .cloned()
            .collect()
    }

    /// A dry run's creates whose DN an object already holds: the create would fail (AD's
    /// entryAlreadyExists), so the plan shows the reason instead of a `+ create`.
    async fn collisions(
        &mut self,
        changes: Vec<Change>,
    ) -> Result<(Vec<Change>, Vec<Refusal>), SyncError> {
        let mut keep = Vec::with_capacity(changes.len());
        let mut refused = Vec::new();
        for c in changes {
            if let Op::Create { dn, .. } = &c.op {
                if self.conn.exists(dn).await? {
                    refused.push(Refusal {
                        cloud_id: c.cloud_id.clone(),
                        rule: c.rule.clone(),
                        reason: format!(
                            "the create would fail: an object that is not this group's is at {dn} already. {}",
                            apply::conflict_next(&c.cloud_id)
                        ),
                    });
                    continue;
                }
            }
            keep.push(c);
        }
        Ok((keep, refused))
    }

    /// Applies one batch's changes and records them with their bookkeeping and the triggers
    /// they fire, in one transaction after AD has answered.
    async fn apply_batch(
        &mut self,
        changes: Vec<Change>,
        batch: &Batch,
        created: &BTreeSet<String>,
        held: &BTreeSet<String>,
        unresolved: Vec<Write>,
        done: &mut Applied,
    ) -> Result<(), SyncError> {
        let batch_plan = Plan {
            changes,
            ..Default::default()
        };
        // The creates are recorded before AD sees them: an object a kill leaves behind
        // unrecorded is still known as this host's own.
        let intents: Vec<Write> = batch_plan
            .changes
            .iter()
            .filter_map(|c| match &c.op {
                Op::Create { dn, .. } => Some(Write::PutIntent(c.cloud_id.clone(), dn.clone())),
                _ => None,
            })
            .collect();
        self.store.record(self.run_id, &intents)?;
        // Still the writer? (Several instances on one state: the lease, checked per batch.)
        self.store.check_fence()?;
        let (mut outcomes, wait) = apply::apply(
            self.conn,
            &batch_plan,
            &self.config.ad.managed_ous,
            &self.config.ad.link_targets,
            created,
        )
        .await;
        self.write_cloud(&batch_plan.changes, &mut outcomes).await;
        let writes = record::bookkeeping(
            &batch_plan.changes,
            &outcomes,
            &batch.desired,
            &batch.hashes,
            &batch.actual,
        );
        let mut writes = record::not_in_step(writes, held);
        writes.extend(unresolved);
        // The triggers these changes fire, recorded with them: none is lost to a crash.
        let (calls, skipped) = self.trigger_calls(&batch_plan.changes, &outcomes)?;
        writes.extend(calls.into_iter().map(Write::Enqueue));
        done.trigger_skips.extend(skipped);
        self.store.record(self.run_id, &writes)?;
        done.fail_outcomes(&outcomes);
        self.emit(&mut done.plan, batch_plan.changes, &outcomes)?;
        done.outcomes.extend(outcomes);
        done.deferred.extend(wait);
        Ok(())
    }

    /// After the batches of an applied cycle: the member adds that waited, the deletes, stale
    /// anchors forgotten; then the pending marks are settled and, after a whole-cache pass, the
    /// rules' fingerprint recorded (the applied hashes are now those of these rules).
    async fn finish(
        &mut self,
        done: &mut Applied,
        deletes: &Deletes,
        fingerprint: Option<&str>,
    ) -> Result<(), SyncError> {
        let deferred = std::mem::take(&mut done.deferred);
        if !deferred.is_empty() {
            let ids: BTreeSet<String> = deferred.iter().map(|(id, _, _)| id.clone()).collect();
            self.store.check_fence()?;
            apply::apply_deferred(self.conn, deferred, &mut done.outcomes).await;
            let failed: Vec<Outcome> = done
                .outcomes
                .iter()
                .filter(|o| ids.contains(&o.cloud_id) && !o.ok())
                .cloned()
                .collect();
            let writes: Vec<Write> = failed
                .iter()
                .map(|o| Write::RemoveApplied(o.cloud_id.clone()))
                .collect();
            self.store.record(self.run_id, &writes)?;
            done.fail_outcomes(&failed);
        }
        if !deletes.changes.is_empty() {
            let plan = Plan {
                changes: deletes.changes.clone(),
                ..Default::default()
            };
            self.store.check_fence()?;
            let (outcomes, _) = apply::apply(
                self.conn,
                &plan,
                &self.config.ad.managed_ous,
                &self.config.ad.link_targets,
                &BTreeSet::new(),
            )
            .await;
            let mut writes = record::bookkeeping(
                &plan.changes,
                &outcomes,
                &BTreeMap::new(),
                &BTreeMap::new(),
                &BTreeMap::new(),
            );
            let (calls, skipped) = self.trigger_calls(&plan.changes, &outcomes)?;
            writes.extend(calls.into_iter().map(Write::Enqueue));
            done.trigger_skips.extend(skipped);
            self.store.record(self.run_id, &writes)?;
            done.fail_outcomes(&outcomes);
            done.outcomes.extend(outcomes);
        }
        let forget: Vec<Write> = deletes
            .stale
            .iter()
            .flat_map(|id| {
                [
                    Write::RemoveAnchor(id.clone()),
                    Write::RemoveApplied(id.clone()),
                    Write::Unresolved(id.clone(), Vec::new()),
                ]
            })
            .collect();
        self.store.record(self.run_id, &forget)?;
        // The marks this cycle dealt with are cleared; what must be tried again stays.
        self.store.settle_pending(&done.retry)?;
        if let Some(f) = fingerprint {
            self.store.set_meta(RULES_KEY, f)?;
            self.store
                .set_meta(MATCH_KEY, &resolve::match_fingerprint(self.config))?;
        }
        Ok(())
    }

    /// Drops the intents of groups that left scope or the cloud without an object of theirs
    /// being found: no create of them is in flight any more, and a stale intent would let an
    /// object someone later puts at its DN pass for Writeback's.
    fn settle_intents(&mut self, verdicts: &BTreeMap<String, Verdict>) -> Result<(), SyncError> {
        let stale: Vec<Write> = self
            .store
            .intent_ids()?
            .into_iter()
            .filter(|id| matches!(verdicts.get(id), Some(Verdict::OutOfScope | Verdict::Gone)))
            .map(Write::RemoveIntent)
            .collect();
        self.store.record(self.run_id, &stale)?;
        Ok(())
    }

    /// Hands planned changes on: to the sink when there is one (the report keeps only the
    /// changes whose triggers run after the apply), else into the report's plan.
    fn emit(
        &mut self,
        plan: &mut Plan,
        changes: Vec<Change>,
        outcomes: &[Outcome],
    ) -> Result<(), SyncError> {
        self.counts.add(&changes);
        if self.sink.is_none() {
            plan.changes.extend(changes);
            return Ok(());
        }
        let triggers = self.planned_triggers(&changes)?;
        if let Some(sink) = self.sink.as_deref_mut() {
            sink.changes(&changes, outcomes, &triggers);
        }
        let fire: BTreeSet<&str> = triggers.iter().map(|t| t.cloud_id.as_str()).collect();
        plan.changes.extend(
            changes
                .into_iter()
                .filter(|c| fire.contains(c.cloud_id.as_str())),
        );
        Ok(())
    }

    /// Hands a batch's unresolved members on, like [`Cycle::emit`] (sorted within the batch;
    /// batches come in id order).
    fn emit_unresolved(&mut self, plan: &mut Plan, mut members: Vec<Unresolved>) {
        self.counts.unresolved_members += members.len();
        match self.sink.as_deref_mut() {
            Some(sink) => {
                members.sort();
                sink.unresolved(&members);
            }
            None => plan.unresolved_members.extend(members),
        }
    }

    /// Sets the cloud properties the rules write (`to_cloud`) on the groups whose AD change went
    /// through, only those that differ. A failure leaves the group out of step (its outcome
    /// says why): it goes to quarantine and is written again when it is tried again.
    async fn write_cloud(&self, changes: &[Change], outcomes: &mut [Outcome]) {
        let at: BTreeMap<&str, usize> = outcomes
            .iter()
            .enumerate()
            .map(|(i, o)| (o.cloud_id.as_str(), i))
            .collect();
        let mut failures: Vec<(usize, String)> = Vec::new();
        for c in changes {
            let cloud = match &c.op {
                Op::Create { cloud, .. } | Op::Update { cloud, .. } => cloud,
                Op::Delete { .. } => continue,
            };
            let Some(&i) = at.get(c.cloud_id.as_str()).filter(|_| !cloud.is_empty()) else {
                continue;
            };
            if outcomes.get(i).is_none_or(|o| o.error.is_some()) {
                continue;
            }
            let body = serde_json::Value::Object(cloud.clone().into_iter().collect());
            let path = format!("groups/{}", c.cloud_id);
            if let Err(e) = self
                .graph
                .send(reqwest::Method::PATCH, &path, Some(&body))
                .await
            {
                let names: Vec<&str> = cloud.keys().map(String::as_str).collect();
                let hint = if e.to_string().contains("Authorization_RequestDenied") {
                    " (the app needs the Group.ReadWrite.All application permission to write to_cloud properties)"
                } else {
                    ""
                };
                failures.push((i, format!("cloud {}: {e}{hint}", names.join(", "))));
            }
        }
        for (i, why) in failures {
            if let Some(o) = outcomes.get_mut(i) {
                o.member_errors.push(why);
            }
        }
    }

    /// The trigger calls `changes` fire now that they are applied (`outcomes`), to record with
    /// them, and the planned ones that do not run.
    fn trigger_calls(
        &self,
        changes: &[Change],
        outcomes: &[Outcome],
    ) -> Result<(Vec<crate::state::NewCall>, Vec<TriggerResult>), SyncError> {
        let planned = self.planned_triggers(changes)?;
        if planned.is_empty() {
            return Ok(Default::default());
        }
        let ids: BTreeSet<String> = planned.iter().map(|t| t.cloud_id.clone()).collect();
        let groups = self.store.load_by_ids(ObjectKind::Group, &ids)?;
        let plan = Plan {
            changes: changes
                .iter()
                .filter(|c| ids.contains(&c.cloud_id))
                .cloned()
                .collect(),
            triggers: planned,
            ..Default::default()
        };
        Ok(triggers::calls(&plan, outcomes, &groups, self.run_id))
    }

    /// Triggers of the rule that handled each group; a delete's rule is the one in its anchor
    /// (read when the deletes were located).
    fn planned_triggers(
        &self,
        changes: &[Change],
    ) -> Result<Vec<super::types::PlannedTrigger>, SyncError> {
        let hooks = self.rules.hooks();
        Ok(plan::planned_triggers(
            changes,
            |id| self.deleted_rules.get(id).cloned(),
            |rule, hook| hooks.has(rule, hook),
        ))
    }

    /// The devices' round. Graph's 403 (the app lacks `Device.Read.All`, e.g. an installation
    /// upgraded without granting it) does not fail the cycle: the device link stays as it was
    /// (a later round reads from there, or from the start), device members are reported with
    /// the permission named and groups keep the computers they have (`sync::devices`). Any
    /// other error fails the cycle as every Graph error does. Devices read again after a
    /// refusal compare every group once: what was kept meanwhile is looked at anew.
    async fn pull_devices(&mut self) -> Result<(), SyncError> {
        let before = devices::Readable::load(&*self.store)?;
        let now = match self.pull(ObjectKind::Device).await {
            Ok(()) => {
                devices::rearm();
                devices::Readable::Yes
            }
            Err(SyncError::Graph(e)) if devices::denied(&e) => {
                devices::warn_once(&e);
                self.devices_unreadable = true;
                devices::Readable::No
            }
            Err(e) => return Err(e),
        };
        if before.regained(now) {
            tracing::info!(
                "devices can be read again ({}): every group is compared once",
                devices::PERMISSION
            );
            self.opts.compare_all = true;
        }
        before.record(&mut *self.store, now)?;
        Ok(())
    }

    /// Follows one delta round for `kind`, writing it to the cache chunk by chunk; the link
    /// is stored last, so a kill mid-round replays it.
    async fn pull(&mut self, kind: ObjectKind) -> Result<(), SyncError> {
        let base = self.graph.graph_base();
        let declared = self.rules.graph_properties();
        // The rules' properties plus the join keys' (a name the host selects anyway adds nothing).
        let joins = &self.config.members;
        let query = match kind {
            ObjectKind::Group => delta::groups_delta_query(
                base,
                &resolve::with_join(&declared.groups, &joins.groups),
            ),
            ObjectKind::User => {
                delta::users_delta_query(base, &resolve::with_join(&declared.users, &joins.users))
            }
            ObjectKind::Device => delta::devices_delta_query(base),
        };
        let stored = match self.opts.reread_cloud {
            true => None,
            false => self.store.stored_link(kind)?,
        };
        let unrecorded = match kind {
            ObjectKind::Group => delta::groups_delta_query(base, &[]),
            ObjectKind::User => delta::users_delta_query(base, &[]),
            ObjectKind::Device => delta::devices_delta_query(base),
        };
        let (start, change) = delta::choose_start(
            &query,
            stored.map(|s| (s.link, s.select)),
            &unrecorded.select,
        );
        if !change.is_empty() {
            tracing::info!("{}", change.describe(kind.as_str()));
        }
        let store = &mut *self.store;
        let mut progress = RoundProgress::default();
        let result = delta::run_round_chunked(self.graph, start, delta::CHUNK_ENTRIES, |chunk| {
            if chunk.first {
                // The round's changes are its pending marks: no list of them is kept.
                progress = RoundProgress::untracked(chunk.full);
            }
            store.apply_round_chunk(kind, &chunk.items, &mut progress)
        })
        .await;
        let (link, _full) = match result {
            Ok(done) => done,
            Err(ChunkedRoundError::Graph(e)) => return Err(e.into()),
            Err(ChunkedRoundError::Sink(e)) => return Err(e.into()),
        };
        store.finish_round(kind, &link, &query.select, &mut progress)?;
        Ok(())
    }

    /// Verdicts for every cached group, a chunk at a time; every anchored id without a cached
    /// group is gone. The rules run on a chunk while the next one is read (the two took turns,
    /// and a whole-cache pass at 100k groups spent as long reading as evaluating).
    fn evaluate_everything(&mut self) -> Result<Evaluated, SyncError> {
        let mut ev = Evaluated::default();
        let (rules, now, store) = (self.rules, self.now, &*self.store);
        std::thread::scope(|s| -> Result<(), StateError> {
            type Chunk = BTreeMap<String, CloudObject>;
            // Two chunks at most: one evaluated while the next is read.
            let (to_rules, chunks) = std::sync::mpsc::sync_channel::<Chunk>(1);
            let (to_settle, results) = std::sync::mpsc::sync_channel::<(Chunk, Vec<_>)>(1);
            let rules_thread = s.spawn(move || {
                for groups in chunks {
                    let results = evaluate_all(rules, &groups, now);
                    if to_settle.send((groups, results)).is_err() {
                        break;
                    }
                }
            });
            // A chunk's verdicts, on this thread (flattening reads nested groups from the state).
            let settle_next = |ev: &mut Evaluated| -> Result<bool, StateError> {
                match results.recv() {
                    Ok((groups, results)) => settle(store, &groups, results, ev).map(|()| true),
                    Err(_) => Ok(false),
                }
            };
            let mut in_flight = 0usize;
            let read = store.for_each_chunk(ObjectKind::Group, EVAL_CHUNK, |chunk| {
                let groups: Chunk = chunk.into_iter().map(|g| (g.id.clone(), g)).collect();
                // The chunk before is settled before this one is handed over.
                if in_flight > 0 && settle_next(&mut ev)? {
                    in_flight -= 1;
                }
                if to_rules.send(groups).is_err() {
                    return Ok(());
                }
                in_flight += 1;
                Ok(())
            });
            drop(to_rules);
            let mut settled = read;
            while settled.is_ok() && in_flight > 0 {
                match settle_next(&mut ev) {
                    Ok(true) => in_flight -= 1,
                    Ok(false) => break,
                    Err(e) => settled = Err(e),
                }
            }
            drop(results);
            // A panic in the rules thread is a host bug, not a rule's: surface it.
            if let Err(p) = rules_thread.join() {
                std::panic::resume_unwind(p);
            }
            settled
        })?;
        ev.owned = self.store.anchor_ids()?;
        for id in &ev.owned {
            ev.verdicts.entry(id.clone()).or_insert(Verdict::Gone);
        }
        ev.applied = self.store.applied_hashes()?;
        Ok(ev)
    }

    /// Verdicts for `ids` only, read by key [`EVAL_CHUNK`] at a time (a resync or a tenant-wide
    /// change marks most of the cache: only one chunk's groups and members are held, as in a
    /// whole-cache pass); an id no longer cached is gone.
    fn evaluate_some(&mut self, ids: &BTreeSet<String>) -> Result<Evaluated, SyncError> {
        let mut ev = Evaluated::default();
        let all: Vec<&String> = ids.iter().collect();
        for chunk in all.chunks(EVAL_CHUNK) {
            // Read without members where the rules allow: a verdict needs their digest only.
            let (groups, results) = heads::read_and_evaluate(
                self.store,
                self.rules,
                self.now,
                chunk.iter().copied(),
                |_| true,
            )?;
            settle_read(self.store, &groups, results, &mut ev)?;
        }
        if ids.len() > EVAL_CHUNK {
            // Many ids: the anchors and hashes in two reads (bounded by the owned groups, as a
            // whole-cache pass reads them) instead of two lookups per id.
            let mut owned = self.store.anchor_ids()?;
            owned.retain(|id| ids.contains(id));
            ev.owned = owned;
            let mut applied = self.store.applied_hashes()?;
            applied.retain(|id, _| ids.contains(id));
            ev.applied = applied;
        } else {
            for id in ids {
                if self.store.anchor(id)?.is_some() {
                    ev.owned.insert(id.clone());
                }
                if let Some(h) = self.store.applied_hash(id)? {
                    ev.applied.insert(id.clone(), h);
                }
            }
        }
        for id in ids {
            ev.verdicts.entry(id.clone()).or_insert(Verdict::Gone);
        }
        Ok(ev)
    }

    /// The gate (`sync::gate`): blocks the whole plan, or holds deletes back (taken out of
    /// `deletes`, listed in the report).
    fn gate(
        &mut self,
        report: &mut SyncReport,
        deletes: &mut Deletes,
        held_before: &BTreeMap<String, HeldDelete>,
    ) -> Result<(), SyncError> {
        let ids: BTreeSet<String> = deletes.changes.iter().map(|c| c.cloud_id.clone()).collect();
        let approved: BTreeSet<String> = held_before
            .values()
            .filter(|h| h.approved)
            .map(|h| h.cloud_id.clone())
            .collect();
        let owned = match self.config.delete_threshold_percent {
            Some(_) if !ids.is_empty() => self.store.anchor_count()?,
            _ => 0,
        };
        let verdict = gate::gate(GateInput {
            deletes: &ids,
            approved: &approved,
            allow_deletes: self.opts.allow_deletes,
            threshold: self.config.delete_threshold,
            percent: self.config.delete_threshold_percent,
            owned,
            cloud_groups: report.cloud_groups,
            in_scope: report.in_scope,
        });
        match verdict {
            Gate::Open => {}
            Gate::Blocked(why) => report.blocked = Some(why),
            Gate::Hold { ids, reason } => {
                let (held, go): (Vec<Change>, Vec<Change>) = std::mem::take(&mut deletes.changes)
                    .into_iter()
                    .partition(|c| ids.contains(&c.cloud_id));
                deletes.changes = go;
                let set_id = held_set_id(ids.iter().map(String::as_str));
                let before = held_set_id(
                    held_before
                        .values()
                        .filter(|h| !h.approved)
                        .map(|h| h.cloud_id.as_str()),
                );
                report.held = Some(Held {
                    new: before != set_id,
                    set_id,
                    reason,
                    deletes: held
                        .iter()
                        .filter_map(|c| match &c.op {
                            Op::Delete { dn, .. } => Some(HeldEntry {
                                cloud_id: c.cloud_id.clone(),
                                dn: dn.clone(),
                            }),
                            _ => None,
                        })
                        .collect(),
                });
            }
        }
        if report.blocked.is_none() {
            report.approved_deletes = deletes
                .changes
                .iter()
                .filter(|c| approved.contains(&c.cloud_id))
                .map(|c| c.cloud_id.clone())
                .collect();
        }
        Ok(())
    }

    /// Keeps of `found` the objects that are Writeback's (recorded, intended, or adopted this
    /// cycle); a group whose anchor only a foreign object carries is refused, so it is neither
    /// modified nor created a second time.
    fn claim_found(&mut self, found: Vec<ActualObject>, out: &mut Batch) -> Result<(), SyncError> {
        let mut foreign: BTreeMap<String, ActualObject> = BTreeMap::new();
        let adopt = |a: &ActualObject| self.opts.adopt && out.desired.contains_key(&a.cloud_id);
        let claims = claims_of(self.store, &found, adopt)?;
        for (a, claim) in found.into_iter().zip(claims) {
            match claim {
                Claim::Foreign => {
                    // Read for a group the rules want: this tenant's, never recorded.
                    self.foreign.add(
                        &a.dn,
                        ownership::ForeignKind::Unrecorded,
                        &self.config.ad.shared_ous,
                    );
                    foreign.insert(a.cloud_id.clone(), a);
                }
                c => {
                    if matches!(c, Claim::Adopted | Claim::Intended) {
                        self.adopted.push(HeldEntry {
                            cloud_id: a.cloud_id.clone(),
                            dn: a.dn.clone(),
                        });
                    }
                    out.actual.insert(a.cloud_id.clone(), a);
                }
            }
        }
        for (id, a) in foreign {
            if out.actual.contains_key(&id) {
                continue;
            }
            if let Some(d) = out.desired.remove(&id) {
                out.hashes.remove(&id);
                out.refused.push(Refusal {
                    cloud_id: id,
                    rule: Some(d.rule),
                    reason: ownership::foreign_reason(&a),
                });
            }
        }
        Ok(())
    }

    /// Settles the quarantine after an applied cycle: the groups that failed are in (their next
    /// try pushed back), the groups looked at that went through are out. `looked_at` is `None`
    /// when the cycle looked at every group.
    fn settle_failures(
        &mut self,
        failed: &BTreeMap<String, String>,
        looked_at: Option<&BTreeSet<String>>,
    ) -> Result<Vec<QuarantineNote>, SyncError> {
        let release: Vec<String> = match looked_at {
            Some(ids) => ids
                .iter()
                .filter(|id| !failed.contains_key(*id))
                .cloned()
                .collect(),
            None => self
                .store
                .quarantined()?
                .into_keys()
                .filter(|id| !failed.contains_key(id))
                .collect(),
        };
        if release.is_empty() && failed.is_empty() {
            return Ok(Vec::new());
        }
        let (now, cap) = (unix_now(), self.config.quarantine_max_backoff_secs);
        let notes = self
            .store
            .settle_quarantine(&release, failed, now, cap)?
            .into_iter()
            .map(|(id, seen, q)| QuarantineNote {
                reason: failed.get(&id).cloned().unwrap_or_default(),
                cloud_id: id,
                failures: q.failures,
                retry_at: crate::state::rfc3339_at(q.retry_at),
                seen,
            })
            .collect();
        Ok(notes)
    }

    /// Records the held set after an applied cycle: this cycle's held deletes (waiting for
    /// approval), and approved deletes that did not go through (still approved). Approved
    /// deletes that were applied, and held groups back in scope, leave it.
    fn settle_held(
        &mut self,
        report: &SyncReport,
        deletes: &Deletes,
        before: &BTreeMap<String, HeldDelete>,
        outcomes: &[Outcome],
    ) -> Result<(), SyncError> {
        let planned: BTreeSet<&str> = deletes
            .changes
            .iter()
            .map(|c| c.cloud_id.as_str())
            .collect();
        let failed: BTreeSet<&str> = outcomes
            .iter()
            .filter(|o| !o.ok() && o.action == apply::Action::Delete)
            .map(|o| o.cloud_id.as_str())
            .filter(|id| planned.contains(id))
            .collect();
        let rows = gate::still_held(report.held.as_ref(), &failed, before);
        if rows.is_empty() && before.is_empty() {
            return Ok(());
        }
        self.store.replace_held(&rows)?;
        Ok(())
    }

    /// One batch of groups to compare: desired objects (checked against the schema), member
    /// DNs, the owned AD objects, the changes.
    async fn batch(
        &mut self,
        ids: &[&String],
        verdicts: &mut BTreeMap<String, Verdict>,
        (applied, owned, absent): (
            &BTreeMap<String, String>,
            &BTreeSet<String>,
            &BTreeSet<String>,
        ),
        whole: bool,
    ) -> Result<Batch, SyncError> {
        let mut out = Batch::default();
        // A whole-cache pass compares every group in full (a reconciliation's point).
        let noted = match whole || self.opts.compare_all {
            true => BTreeMap::new(),
            false => self.store.member_changes(ids.iter().copied())?,
        };
        let (mut groups, policies) = self.desire(ids, &noted, &mut out).await?;
        let short = self
            .pick_short(&groups, &policies, noted, applied, owned, &mut out)
            .await?;
        // The short groups wait outside the batch's full comparison.
        let mut short_desired = BTreeMap::new();
        for id in short.keys() {
            if let Some(d) = out.desired.remove(id) {
                short_desired.insert(id.clone(), d);
            }
        }
        // The groups compared in full are compared with all their members.
        groups.read_members(&*self.store, out.desired.keys())?;
        self.fill_members(&groups.full, &policies, verdicts, whole, &mut out)
            .await?;
        let attrs = actual::managed_attributes(&out.desired);
        // Groups known to be absent from AD are not searched for.
        let keys: Vec<&String> = out
            .desired
            .keys()
            .filter(|k| !absent.contains(*k))
            .collect();
        let census = self.census.as_ref();
        let found = actual::read_owned(self.conn, self.config, census, &keys, &attrs).await?;
        self.claim_found(found, &mut out)?;
        if !self.config.ad.link_targets.is_empty() {
            // The links Writeback added: the only ones the plan may remove.
            let mut links = self.store.links_of(out.actual.keys())?;
            for (id, a) in out.actual.iter_mut() {
                a.links = links.remove(id).unwrap_or_default();
            }
        }
        if self.devices_unreadable {
            self.keep_computers(&mut out).await?;
        }
        out.changes = plan::plan(&out.desired, &out.actual);
        out.held_removals = removals::hold(
            &mut out.changes,
            &out.actual,
            self.config.member_removals,
            &self.removals_approved,
        );
        self.write_short(short, short_desired, verdicts, whole, &mut out)
            .await?;
        Ok(out)
    }

    /// While devices cannot be read, a group holding device members keeps the computers it has
    /// in AD: its device members are reported, not resolved, so without this the plan would
    /// remove every computer written for them earlier. Its users and groups are written as
    /// usual (holding the whole group back would stop them too, for as long as the permission
    /// is missing). A device that leaves such a group meanwhile keeps its computer until
    /// devices are read again: that cycle compares every group.
    async fn keep_computers(&mut self, out: &mut Batch) -> Result<(), SyncError> {
        for id in devices::holding_unreadable(&out.unresolved) {
            let (Some(d), Some(a)) = (out.desired.get_mut(&id), out.actual.get(&id)) else {
                continue;
            };
            let kept = devices::keep_computers(self.conn, d, a).await?;
            if kept > 0 {
                tracing::debug!(group = %id, kept, "computers kept: devices cannot be read");
            }
        }
        Ok(())
    }

    /// The groups of the batch whose change is their member changes alone, with their AD
    /// objects (see `member_writes`).
    async fn pick_short(
        &mut self,
        groups: &ReadGroups,
        policies: &BTreeMap<String, MemberPolicy>,
        noted: BTreeMap<String, MemberChanges>,
        applied: &BTreeMap<String, String>,
        owned: &BTreeSet<String>,
        out: &mut Batch,
    ) -> Result<BTreeMap<String, member_writes::Short>, SyncError> {
        if noted.is_empty() {
            return Ok(BTreeMap::new());
        }
        let quarantined: BTreeSet<String> = self.store.quarantined()?.into_keys().collect();
        self.read_pending_members()?;
        let none = BTreeSet::new();
        let known = member_writes::Known {
            applied,
            before: &out.before,
            owned,
            quarantined: &quarantined,
            pending: self.pending.as_ref().unwrap_or(&none),
            policies,
        };
        let picked = member_writes::pick(&*self.store, self.config, groups, noted, known)?;
        let census = self.census.as_ref();
        member_writes::locate(self.conn, &*self.store, self.config, census, picked).await
    }

    /// The short groups' modifies, added to the batch with their desired objects, hashes and
    /// AD objects, so the apply and the record treat them as any compared group.
    async fn write_short(
        &mut self,
        short: BTreeMap<String, member_writes::Short>,
        desired: BTreeMap<String, DesiredObject>,
        verdicts: &mut BTreeMap<String, Verdict>,
        whole: bool,
        out: &mut Batch,
    ) -> Result<(), SyncError> {
        if short.is_empty() {
            return Ok(());
        }
        let resolving = member_writes::Resolving {
            config: self.config,
            rules: self.rules,
            now: self.now,
            builder: DesiredBuilder {
                managed_ous: &self.config.ad.managed_ous,
                link_targets: &self.config.ad.link_targets,
                readable: &self.rules.graph_properties().groups,
                schema: self.schema.as_ref(),
            },
            lookups: &mut self.lookups,
            whole,
        };
        let changes = member_writes::write(
            self.conn,
            &*self.store,
            resolving,
            &short,
            &desired,
            verdicts,
            &mut out.unresolved,
        )
        .await?;
        out.member_deltas += short.len();
        out.short.extend(
            short
                .iter()
                .map(|(id, s)| (id.clone(), s.changes.removed.keys().cloned().collect())),
        );
        out.changes.extend(changes);
        out.changes.sort_by(|a, b| a.cloud_id.cmp(&b.cloud_id));
        out.desired.extend(desired);
        out.actual.extend(
            short
                .into_values()
                .map(|s| (s.actual.cloud_id.clone(), s.actual)),
        );
        Ok(())
    }

    /// Builds desired objects with the config's OUs and link targets and the target schema.
    fn builder(&self) -> DesiredBuilder<'_> {
        DesiredBuilder {
            managed_ous: &self.config.ad.managed_ous,
            link_targets: &self.config.ad.link_targets,
            readable: &self.rules.graph_properties().groups,
            schema: self.schema.as_ref(),
        }
    }

    /// The batch's groups evaluated and built into desired objects (in `out`, with their
    /// hashes; refusals there too). Returns the groups read (with the nested ones a flattening
    /// rule needs) and each desired group's member policy. A group with noted member changes
    /// is read without its members unless its rules read them (see `heads`).
    async fn desire(
        &mut self,
        ids: &[&String],
        noted: &BTreeMap<String, MemberChanges>,
        out: &mut Batch,
    ) -> Result<(ReadGroups, BTreeMap<String, MemberPolicy>), SyncError> {
        let (mut groups, evaluations) = heads::read_and_evaluate(
            self.store,
            self.rules,
            self.now,
            ids.iter().copied(),
            |id| noted.contains_key(id),
        )?;
        let mut decided: BTreeMap<String, DesiredGroup> = BTreeMap::new();
        for e in evaluations {
            match e.decision {
                Ok(Decision::Desired(d)) => {
                    decided.insert(e.id, d);
                }
                // Not in scope: it was not selected for a compare (a rule that changed its
                // mind between the two evaluations is seen next cycle).
                Ok(_) => {}
                Err(reason) => out.refused.push(Refusal {
                    cloud_id: e.id,
                    rule: None,
                    reason: reason.to_string(),
                }),
            }
        }
        let flatten: Vec<String> = decided
            .iter()
            .filter(|(_, d)| d.members == MemberPolicy::Flatten)
            .map(|(id, _)| id.clone())
            .collect();
        load_nested(self.store, &flatten, &mut groups.full)?;
        groups.settle();
        if self.schema.is_none() && !decided.is_empty() {
            *self.schema = Some(self.conn.load_schema().await?);
        }
        let builder = self.builder();
        let mut policies = BTreeMap::new();
        for (id, d) in &decided {
            let (Some(g), Some(count), Some(hash)) = (
                groups.props_of(id),
                groups.member_count(id),
                groups.hash(id, d),
            ) else {
                continue;
            };
            let cap = self.config.max_members_per_group;
            if let Some(reason) = super::desired::over_member_cap(count, cap) {
                out.refused.push(Refusal {
                    cloud_id: id.clone(),
                    rule: Some(d.rule.clone()),
                    reason,
                });
                continue;
            }
            match builder.object(id, d) {
                Ok(mut o) => {
                    o.cloud_now = super::desired::cloud_values(&o.to_cloud, g);
                    policies.insert(id.clone(), d.members);
                    out.hashes.insert(id.clone(), hash);
                    let before = noted
                        .get(id)
                        .filter(|_| d.members == MemberPolicy::OnPremises)
                        .and_then(|c| groups.hash_before(id, d, c));
                    if let Some(h) = before {
                        out.before.insert(id.clone(), h);
                    }
                    out.desired.insert(id.clone(), o);
                }
                Err(r) => out.refused.push(r),
            }
        }
        Ok((groups, policies))
    }

    /// Reads the owners the rules write, finds the members' and owners' AD objects and fills
    /// them into the batch's desired objects (what cannot be found goes to `out.unresolved`).
    async fn fill_members(
        &mut self,
        groups: &BTreeMap<String, CloudObject>,
        policies: &BTreeMap<String, MemberPolicy>,
        verdicts: &mut BTreeMap<String, Verdict>,
        whole: bool,
        out: &mut Batch,
    ) -> Result<(), SyncError> {
        // Owners are not in the delta: read for the groups whose rule writes them.
        let with_owners: Vec<String> = out
            .desired
            .values()
            .filter(|o| o.owners.is_some())
            .map(|o| o.cloud_id.clone())
            .collect();
        let owners = match with_owners.is_empty() {
            true => super::owners::Owners::new(),
            false => crate::graph::owners::read(self.graph, &with_owners).await?,
        };
        // Member groups: the DN the rules give them (or the AD group they came from).
        let mut named = resolve::wanted(out.desired.keys(), policies, groups);
        named.users.extend(super::owners::wanted(&owners));
        let written = member_group_dns(
            self.store,
            self.rules,
            self.now,
            &named.groups,
            verdicts,
            whole,
        )?;
        let cached = resolve::Cached::load(&*self.store, &named)?;
        let directory =
            resolve::resolve_members(self.config, self.conn, &named, cached, &mut self.lookups)
                .await?;
        let builder = self.builder();
        for (id, o) in out.desired.iter_mut() {
            let (Some(g), Some(p)) = (groups.get(id), policies.get(id)) else {
                continue;
            };
            o.members = builder.members(g, groups, *p, &written, &directory, &mut out.unresolved);
            super::owners::fill(o, &owners, &directory, &mut out.unresolved);
        }
        Ok(())
    }

    /// The operational hooks this applied cycle fires (none when no rule defines one).
    fn alerts(&self, report: &SyncReport, plan: &Plan) -> Result<Vec<Alert>, SyncError> {
        let hooks = self.rules.hooks();
        if [
            crate::rules::Hook::OnHeld,
            crate::rules::Hook::OnFailed,
            crate::rules::Hook::OnRefused,
        ]
        .iter()
        .all(|h| hooks.defining(*h).is_empty())
        {
            return Ok(Vec::new());
        }
        let ids: BTreeSet<String> = report
            .quarantined
            .iter()
            .map(|q| q.cloud_id.as_str())
            .chain(
                report
                    .held
                    .iter()
                    .flat_map(|h| h.deletes.iter().map(|e| e.cloud_id.as_str())),
            )
            .chain(
                report
                    .held_removals
                    .iter()
                    .flat_map(|h| h.groups.iter().map(|g| g.cloud_id.as_str())),
            )
            .map(str::to_string)
            .collect();
        let names: BTreeMap<String, String> = self
            .store
            .load_by_ids(ObjectKind::Group, &ids)?
            .into_iter()
            .filter_map(|(id, g)| g.str_prop("displayName").map(|n| (id, n.to_string())))
            .collect();
        Ok(alerts::alerts(
            alerts::Cycle {
                held: report.held.as_ref(),
                held_removals: report.held_removals.as_ref(),
                quarantined: &report.quarantined,
                refused: &plan.refused,
                names: &names,
            },
            |h| hooks.defining(h).into_iter().map(str::to_string).collect(),
        ))
    }

    /// Delivers the trigger calls due now, within the cycle's limits, and records each outcome:
    /// delivered calls are forgotten, failed ones wait for their next attempt or are given up
    /// (in the audit trail either way).
    async fn deliver_due(&mut self) -> Result<Vec<TriggerResult>, SyncError> {
        let now = unix_now();
        let limits = TriggerLimits {
            timeout: self.config.rules.trigger_timeout,
            max_calls: self.config.rules.max_triggers_per_cycle,
            budget: self.config.rules.trigger_budget,
        };
        // One more than may run, so the report says some wait.
        let due = self
            .store
            .calls_due(now, limits.max_calls.saturating_add(1))?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut deliveries = Vec::with_capacity(due.len());
        for row in due {
            match serde_json::from_str::<crate::rules::TriggerEvent>(&row.event_json) {
                Ok(event) => deliveries.push(triggers::Delivery {
                    id: row.id,
                    key: row.key,
                    rule: row.rule,
                    event,
                    attempts: row.attempts,
                }),
                // Written by an older version in another shape: nothing can run it.
                Err(e) => self.store.settle_call(
                    row.id,
                    Err((&format!("the recorded call cannot be read: {e}"), None)),
                )?,
            }
        }
        let effects = (self.effects)();
        let delivered = triggers::deliver(self.rules.hooks(), deliveries, effects, limits).await;
        let retry = self.config.rules.trigger_retry;
        let mut results = Vec::with_capacity(delivered.len());
        // Every outcome and its audit event in one transaction.
        let mut writes = Vec::new();
        for (id, mut r) in delivered {
            match r.outcome {
                TriggerOutcome::Ok => writes.push(Write::CallDelivered(id)),
                TriggerOutcome::Failed => {
                    let next = retry.next_at(r.attempt, unix_now());
                    if next.is_none() {
                        r.outcome = TriggerOutcome::GivenUp;
                    }
                    let error = r.error.clone().unwrap_or_default();
                    writes.push(Write::CallFailed(id, error, next));
                }
                _ => {}
            }
            if r.outcome != TriggerOutcome::Waiting {
                writes.push(Write::Event(r.audit_event()));
            }
            results.push(r);
        }
        self.store.record(self.run_id, &writes)?;
        Ok(results)
    }
}

/// Seconds since the Unix epoch (the quarantine's clock).
fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// [`claim_of`] for many objects, their anchors read at once.
pub(crate) fn claims_of(
    store: &impl CycleState,
    objects: &[ActualObject],
    adopt: impl Fn(&ActualObject) -> bool,
) -> Result<Vec<Claim>, StateError> {
    let anchors = store.anchors_of(objects.iter().map(|a| &a.cloud_id))?;
    objects
        .iter()
        .map(|a| {
            let record = anchors.get(&a.cloud_id);
            let intent = match record {
                None => store.intent(&a.cloud_id)?,
                Some(_) => None,
            };
            Ok(ownership::claim(a, record, intent.as_deref(), adopt(a)))
        })
        .collect()
}

/// The claim on an object carrying a group's anchor, from the state's records.
pub(crate) fn claim_of(
    store: &impl CycleState,
    a: &ActualObject,
    adopt: bool,
) -> Result<Claim, StateError> {
    let record = store.anchor(&a.cloud_id)?;
    let intent = match record {
        None => store.intent(&a.cloud_id)?,
        Some(_) => None,
    };
    Ok(ownership::claim(
        a,
        record.as_ref(),
        intent.as_deref(),
        adopt,
    ))
}

/// The groups pending changes affect (see [`Cycle::affected_by_pending`]).
#[derive(Debug, Default)]
struct Affected {
    /// Compared whatever their hash says.
    forced: BTreeSet<String>,
    /// Looked at: the pending groups and `forced`.
    touched: BTreeSet<String>,
}

/// The groups a cycle compares and deletes, with the owned objects a reconciliation's scan
/// already located.
#[derive(Debug, Default)]
struct Targets {
    compare: BTreeSet<String>,
    delete: BTreeSet<String>,
    located: BTreeMap<String, ActualObject>,
    /// Groups the rules keep or delete later: the due ones are in `delete` too.
    leave: Leave,
}

/// The deletes of a cycle, located before anything is written.
#[derive(Debug, Default)]
struct Deletes {
    changes: Vec<Change>,
    /// Anchored and gone from the cloud, but no AD object left: anchors to forget.
    stale: Vec<String>,
}

/// What the batches of a cycle planned and did.
#[derive(Debug, Default)]
struct Applied {
    plan: Plan,
    outcomes: Vec<Outcome>,
    /// Member adds waiting for groups created by later batches.
    deferred: apply::Deferred,
    /// Groups to look at again next cycle (marked pending): decisions that read `now()`, held
    /// deletes.
    retry: BTreeSet<String>,
    /// Groups that failed, with why: they go to quarantine.
    failed: BTreeMap<String, String>,
    examined: usize,
    /// Groups written from their member changes alone (see `member_writes`).
    member_deltas: usize,
    /// Member removals held back, waiting for approval.
    held_removals: Vec<removals::HeldRemoval>,
    /// Planned triggers that do not run (their change did not go through), with why.
    trigger_skips: Vec<TriggerResult>,
}

impl Applied {
    fn fail_refused(&mut self, refused: &[Refusal]) {
        for r in refused {
            self.failed
                .entry(r.cloud_id.clone())
                .or_insert_with(|| r.reason.clone());
        }
    }

    fn fail_outcomes(&mut self, outcomes: &[Outcome]) {
        for o in outcomes.iter().filter(|o| !o.ok()) {
            // The DC or the connection failed, not the group: tried again next cycle.
            if o.transient {
                self.retry.insert(o.cloud_id.clone());
                continue;
            }
            let why = o
                .error
                .clone()
                .unwrap_or_else(|| o.member_errors.join("; "));
            self.failed
                .entry(o.cloud_id.clone())
                .or_insert_with(|| format!("{} {}: {why}", o.action, o.dn));
        }
    }
}

/// What one batch produced.
#[derive(Debug, Default)]
struct Batch {
    desired: BTreeMap<String, DesiredObject>,
    hashes: BTreeMap<String, String>,
    actual: BTreeMap<String, ActualObject>,
    changes: Vec<Change>,
    refused: Vec<Refusal>,
    unresolved: Vec<super::types::Unresolved>,
    /// Member removals over the threshold, taken out of `changes`.
    held_removals: Vec<removals::HeldRemoval>,
    /// For the groups with member changes: the hash of what the rules want now over the
    /// members before the changes.
    before: BTreeMap<String, String>,
    /// Groups written from their member changes alone.
    member_deltas: usize,
    /// Their ids, with the members they lost: their other members were not looked at.
    short: BTreeMap<String, Vec<String>>,
}

/// The DNs of the in-scope groups among `ids` (for nested members). A whole-cache cycle has
/// every verdict; otherwise the missing ones are evaluated now, by key.
pub(crate) fn member_group_dns(
    store: &impl CycleState,
    rules: &RuleSet,
    now: Now,
    ids: &BTreeSet<String>,
    verdicts: &mut BTreeMap<String, Verdict>,
    whole: bool,
) -> Result<BTreeMap<String, String>, StateError> {
    if !whole {
        let unknown: BTreeSet<String> = ids
            .iter()
            .filter(|id| !verdicts.contains_key(*id))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            let mut ev = Evaluated::default();
            let groups = store.load_by_ids(ObjectKind::Group, &unknown)?;
            judge(store, rules, now, &groups, &mut ev)?;
            verdicts.extend(ev.verdicts);
        }
    }
    Ok(ids
        .iter()
        .filter_map(|id| match verdicts.get(id) {
            Some(Verdict::InScope { dn, .. }) => Some((id.clone(), dn.clone())),
            _ => None,
        })
        .collect())
}

/// Evaluates `groups` and adds their verdicts to `ev` (nested groups of flattening rules are
/// read by key for the hash).
fn judge(
    store: &impl CycleState,
    rules: &RuleSet,
    now: Now,
    groups: &BTreeMap<String, CloudObject>,
    ev: &mut Evaluated,
) -> Result<(), StateError> {
    settle(store, groups, evaluate_all(rules, groups, now), ev)
}

/// What the rules decided for `groups` (`results`), turned into verdicts.
fn settle(
    store: &impl CycleState,
    groups: &BTreeMap<String, CloudObject>,
    results: Vec<super::evaluate::Evaluation>,
    ev: &mut Evaluated,
) -> Result<(), StateError> {
    ev.evaluated += results.len();
    let flatten: Vec<String> = results
        .iter()
        .filter(|e| {
            matches!(&e.decision, Ok(Decision::Desired(d)) if d.members == MemberPolicy::Flatten)
        })
        .map(|e| e.id.clone())
        .collect();
    let mut nested = BTreeMap::new();
    if !flatten.is_empty() {
        nested = groups.clone();
        load_nested(store, &flatten, &mut nested)?;
    }
    let with_nested = if flatten.is_empty() { groups } else { &nested };
    for e in results {
        if e.timed {
            ev.timed.insert(e.id.clone());
        }
        let (verdict, refused) = super::evaluate::verdict(&e.id, e.decision, groups, with_nested);
        ev.refused.extend(refused);
        ev.verdicts.insert(e.id, verdict);
    }
    Ok(())
}

/// [`settle`] over groups of which some were read without their members: those are judged by
/// their member digest.
fn settle_read(
    store: &impl CycleState,
    groups: &ReadGroups,
    results: Vec<super::evaluate::Evaluation>,
    ev: &mut Evaluated,
) -> Result<(), StateError> {
    let (headed, whole): (Vec<_>, Vec<_>) =
        results.into_iter().partition(|e| groups.is_head(&e.id));
    settle(store, &groups.full, whole, ev)?;
    ev.evaluated += headed.len();
    for e in headed {
        if e.timed {
            ev.timed.insert(e.id.clone());
        }
        let (verdict, refused) =
            super::evaluate::verdict_by(&e.id, e.decision, |d| groups.hash(&e.id, d));
        ev.refused.extend(refused);
        ev.verdicts.insert(e.id, verdict);
    }
    Ok(())
}

/// Adds to `groups` every group nested (transitively) in `roots`, read by key: what flattening
/// needs, and nothing more.
pub(crate) fn load_nested(
    store: &impl CycleState,
    roots: &[String],
    groups: &mut BTreeMap<String, CloudObject>,
) -> Result<(), StateError> {
    let mut todo: Vec<String> = roots.to_vec();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    while let Some(id) = todo.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        if !groups.contains_key(&id) {
            let found = store.load_by_ids(ObjectKind::Group, [&id])?;
            groups.extend(found);
        }
        if let Some(g) = groups.get(&id) {
            todo.extend(
                g.members
                    .values()
                    .filter(|m| m.kind() == MemberKind::Group)
                    .map(|m| m.id.clone()),
            );
        }
    }
    Ok(())
}
