//! What a cycle saw and did ([`SyncReport`]): values the cycle fills and the report, the
//! metrics and the alerts read, kept apart from the cycle so those readers do not depend on it.

use serde::Serialize;

use crate::state::Seen;

use super::apply::Outcome;
use super::gate::{Held, HeldEntry};
use super::leave::LeavingNote;
use super::ownership;
use super::removals;
use super::triggers::{ScheduleInfo, TriggerResult};
use super::types::{Plan, PlanCounts};

/// What a cycle saw and did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SyncReport {
    /// The AD target of the run, in configs with several (`[targets.<name>]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub run_id: i64,
    pub mode: crate::state::RunMode,
    /// How much of the cache the cycle looked at: `idle`, `changed`, or why it looked at
    /// everything (`rules changed`, `full read`, `reconciliation`).
    pub sweep: super::select::SweepKind,
    /// Cached groups and users; counted only by cycles that look at every group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_groups: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_users: Option<usize>,
    /// Groups the rules put in scope (whole-cache cycles only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_scope: Option<usize>,
    /// Cached groups read from the store and evaluated this cycle.
    pub evaluated: usize,
    /// Groups whose desired state was compared with AD this cycle.
    pub examined: usize,
    /// Of those, the groups whose change was their member changes alone, written as one
    /// member modify each without reading their AD members or resolving the others.
    pub member_deltas: usize,
    /// What the plan holds, counted as it was made (a streamed plan's lists are in the sink).
    pub counts: PlanCounts,
    pub plan: Plan,
    pub outcomes: Vec<Outcome>,
    /// Set when the "nothing in scope" guard stopped the apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
    /// Deletes the threshold held back (everything else was applied), waiting for approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<Held>,
    /// Member removals the removal threshold held back (the groups' other changes were
    /// applied), waiting for approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_removals: Option<removals::HeldRemovals>,
    /// The groups that failed this cycle and when each is tried again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<QuarantineNote>,
    /// Groups in quarantine after this cycle.
    pub quarantine_total: usize,
    /// Objects carrying an anchor of a group that Writeback has no record of: left alone.
    #[serde(skip_serializing_if = "Foreign::nothing_seen")]
    pub foreign: Foreign,
    /// The cloud ids of the deletes an operator approved (`writeback approve`) that this cycle
    /// sends to AD; whether each went through is in `outcomes`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approved_deletes: Vec<String>,
    /// Objects taken over by an adoption (or after a stopped run), as cloud id and DN.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub adopted: Vec<HeldEntry>,
    /// Owned groups the rules stopped writing this cycle: kept as they are, or deleted later.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub leaving: Vec<LeavingNote>,
    /// What each planned trigger did after the apply, and each delivery of a recorded call
    /// (empty in a dry run).
    pub trigger_results: Vec<TriggerResult>,
    /// The recorded trigger calls after this cycle's deliveries (counted when it delivered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_calls: Option<crate::state::OutboxCounts>,
    /// Dry runs only: the rules' schedules and when each is next due.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduleInfo>,
    pub elapsed_ms: u128,
}

impl SyncReport {
    pub fn failures(&self) -> usize {
        self.outcomes.iter().filter(|o| !o.ok()).count()
    }

    /// How the run history records this cycle.
    pub fn status(&self) -> crate::state::RunStatus {
        use crate::state::RunStatus;
        if self.blocked.is_some() {
            RunStatus::Blocked
        } else if self.held.is_some() {
            RunStatus::Held
        } else if self.failures() > 0 {
            RunStatus::Partial
        } else {
            RunStatus::Ok
        }
    }

    /// The figures the run history keeps of this cycle.
    pub fn stats(&self) -> serde_json::Value {
        serde_json::json!({
            "sweep": self.sweep,
            "changes": self.counts.changes(),
            "refused": self.plan.refused.len(),
            "unresolved_members": self.counts.unresolved_members,
            "failures": self.failures(),
            "held": self.held.as_ref().map_or(0, |h| h.deletes.len()),
            "quarantined": self.quarantine_total,
            "evaluated": self.evaluated,
            "examined": self.examined,
        })
    }

    /// What the metrics record of this cycle.
    pub fn figures(&self) -> crate::metrics::CycleFigures {
        crate::metrics::CycleFigures {
            sweep: self.sweep.as_str(),
            changes: self
                .outcomes
                .iter()
                .map(|o| (o.action.as_str(), o.ok()))
                .collect(),
            refused: self.plan.refused.len(),
            quarantined: self.quarantine_total,
            held_deletes: self.held.as_ref().map_or(0, |h| h.deletes.len()),
            held_removal_groups: self.held_removals.as_ref().map_or(0, |h| h.groups.len()),
            foreign: self.foreign.count,
            cached: self.cloud_groups.zip(self.cloud_users),
            deliveries: self
                .trigger_results
                .iter()
                .filter(|t| t.outcome.ran())
                .map(|t| t.outcome.as_str())
                .collect(),
            calls: self
                .trigger_calls
                .as_ref()
                .map(|c| crate::metrics::CallFigures {
                    pending: c.pending,
                    retrying: c.retrying,
                    given_up: c.given_up,
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::apply::Action;
    use super::super::triggers::TriggerOutcome;
    use crate::metrics::{CHANGE_KINDS, DELIVERY_OUTCOMES};

    #[test]
    fn a_cycle_is_recorded_blocked_before_held_before_partial() {
        use crate::state::RunStatus;
        let mut r = super::SyncReport::default();
        assert_eq!(r.status(), RunStatus::Ok);
        r.outcomes.push(super::Outcome {
            cloud_id: "g".into(),
            action: Action::Update,
            dn: "CN=g".into(),
            guid: None,
            error: Some("rc=19".into()),
            member_errors: Vec::new(),
            transient: false,
            not_created: false,
            links_added: Vec::new(),
            links_removed: Vec::new(),
        });
        assert_eq!(r.status(), RunStatus::Partial);
        r.held = Some(super::Held {
            set_id: "s".into(),
            reason: "over the threshold".into(),
            deletes: Vec::new(),
            new: true,
        });
        assert_eq!(r.status(), RunStatus::Held);
        r.blocked = Some("over the threshold".into());
        assert_eq!(r.status(), RunStatus::Blocked);
        assert_eq!(r.stats()["failures"], 1);
    }

    /// The labels the metrics zero at start are the ones the engine's types spell.
    #[test]
    fn the_metrics_labels_are_the_engines_words() {
        let kinds = [Action::Create, Action::Update, Action::Delete].map(Action::as_str);
        assert_eq!(kinds, CHANGE_KINDS);
        let ran: Vec<&str> = [
            TriggerOutcome::Ok,
            TriggerOutcome::Failed,
            TriggerOutcome::GivenUp,
            TriggerOutcome::Waiting,
            TriggerOutcome::Skipped,
        ]
        .into_iter()
        .filter(|o| o.ran())
        .map(TriggerOutcome::as_str)
        .collect();
        assert_eq!(ran, DELIVERY_OUTCOMES);
    }
}

/// A group that failed this cycle, in quarantine until `retry_at` (or until it changes).
#[derive(Debug, Clone, Serialize)]
pub struct QuarantineNote {
    pub cloud_id: String,
    pub reason: String,
    /// Failures in a row.
    pub failures: u32,
    /// RFC 3339 UTC.
    pub retry_at: String,
    /// New failure, another error than last time, or the same again.
    pub seen: Seen,
}

/// Objects in the managed OUs that carry a group's anchor Writeback did not record, told apart
/// by whose they are likely to be (see [`super::ownership::ForeignKind`]). `count` and
/// `examples` hold the unexpected ones (what the `writeback_foreign_objects` alert counts);
/// objects of another tenant or instance inside an OU declared shared (`ad.shared_ous`) are
/// only counted in `shared`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Foreign {
    pub count: usize,
    /// The first [`Foreign::EXAMPLES`] unexpected DNs.
    pub examples: Vec<String>,
    /// A group of this tenant that the rules want, carrying its anchor without a record:
    /// written by Connect or Cloud Sync, or the state was lost. `writeback adopt` takes them.
    pub unrecorded: usize,
    /// This tenant's groups the rules do not manage: another instance's, or another tool's.
    pub out_of_scope: usize,
    /// Groups not in this tenant: another tenant's instance shares the OU.
    pub other_tenant: usize,
    /// Expected: another tenant's or instance's, inside an OU declared shared.
    pub shared: usize,
    /// Expected: groups released with `writeback release` (left as they were).
    pub released: usize,
}

impl Foreign {
    pub const EXAMPLES: usize = 20;

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// No unrecorded object at all, expected or not.
    pub fn nothing_seen(&self) -> bool {
        self.count == 0 && self.shared == 0 && self.released == 0
    }

    pub(super) fn add(&mut self, dn: &str, kind: ownership::ForeignKind, shared_ous: &[String]) {
        use ownership::ForeignKind as K;
        if kind != K::Unrecorded && shared_ous.iter().any(|ou| super::types::is_within(dn, ou)) {
            self.shared += 1;
            return;
        }
        match kind {
            K::Unrecorded => self.unrecorded += 1,
            K::OutOfScope => self.out_of_scope += 1,
            K::OtherTenant => self.other_tenant += 1,
        }
        self.count += 1;
        if self.examples.len() < Self::EXAMPLES {
            self.examples.push(dn.to_string());
        }
    }
}
