//! [`CycleState`] for the PostgreSQL store ([`PgStore`]): the same calls, and the same
//! settlements in one transaction each, as `state.rs` gives the SQLite store; and the fence
//! before each batch of AD writes.

use std::collections::{BTreeMap, BTreeSet};

use crate::graph::model::{CloudObject, DeltaItem};
use crate::state::pg::{tx, with_instance, PgStore};
use crate::state::{
    Anchor, HeldDelete, HeldRemovalRow, Leaving, MemberChanges, ObjectKind, OutboxCounts,
    OutboxEntry, Quarantined, Released, RoundProgress, RunMode, RunStatus, Seen, StateError,
    StoredLink,
};

use super::record::Write;
use super::state::{forward_cycle_state, CycleState};

impl CycleState for PgStore {
    forward_cycle_state!(PgStore);

    fn check_fence(&mut self) -> Result<(), StateError> {
        PgStore::check_fence(self)
    }

    fn load_by_ids<'a>(
        &self,
        kind: ObjectKind,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, CloudObject>, StateError> {
        PgStore::load_by_ids(self, kind, ids)
    }

    fn load_heads<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, crate::state::GroupHead>, StateError> {
        PgStore::load_heads(self, ids)
    }

    fn members_among<'a>(
        &self,
        group: &str,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeSet<String>, StateError> {
        PgStore::members_among(self, group, ids)
    }

    fn for_each_chunk(
        &self,
        kind: ObjectKind,
        chunk: usize,
        f: impl FnMut(Vec<CloudObject>) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        PgStore::for_each_chunk(self, kind, chunk, f)
    }

    fn groups_containing<'a>(
        &self,
        member_ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeSet<String>, StateError> {
        PgStore::groups_containing(self, member_ids)
    }

    fn member_changes<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, MemberChanges>, StateError> {
        PgStore::member_changes(self, ids)
    }

    fn links_of<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, Vec<String>>, StateError> {
        PgStore::links_of(self, ids)
    }

    fn anchors_of<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, Anchor>, StateError> {
        PgStore::anchors_of(self, ids)
    }

    fn settle_quarantine(
        &mut self,
        release: &[String],
        failed: &BTreeMap<String, String>,
        now: i64,
        cap_secs: u64,
    ) -> Result<Vec<(String, Seen, Quarantined)>, StateError> {
        self.with_transaction(async |t| {
            tx::release_all(t, release).await?;
            let mut seen = Vec::with_capacity(failed.len());
            for (id, why) in failed {
                let (s, q) = tx::record_failure(t, id, why, now, cap_secs).await?;
                seen.push((id.clone(), s, q));
            }
            Ok(seen)
        })
    }

    fn replace_held(&mut self, rows: &[HeldDelete]) -> Result<(), StateError> {
        self.with_transaction(async |t| tx::replace_held(t, rows).await)
    }

    fn record(&mut self, run_id: i64, writes: &[Write]) -> Result<(), StateError> {
        if writes.is_empty() {
            return Ok(());
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        // The audit trail names the instance that wrote (several share this state).
        let instance = self.fence().map(|(i, _)| i.to_string());
        // Each round trip to the database costs: the anchors, applied hashes, intents and
        // unresolved sets go as their net effect per group (a few statements for the whole
        // batch), the events in one statement; the rest keeps its order, one statement each.
        let mut events = Vec::new();
        let mut anchors: tx::Net<&Anchor> = BTreeMap::new();
        let mut applied: tx::Net<&str> = BTreeMap::new();
        let mut intents: tx::Net<&str> = BTreeMap::new();
        let mut unresolved: BTreeMap<&str, &[String]> = BTreeMap::new();
        // An edit reads the set it changes: with one in the batch, the sets keep their order.
        let edits = writes
            .iter()
            .any(|w| matches!(w, Write::UnresolvedEdit { .. }));
        let mut rest = Vec::new();
        for w in writes {
            match w {
                Write::Event(e) => events.push(match &instance {
                    Some(i) => with_instance(e, i),
                    None => e.clone(),
                }),
                Write::PutAnchor(a) => {
                    anchors.insert(&a.cloud_id, Some(a));
                }
                Write::RemoveAnchor(id) => {
                    anchors.insert(id, None);
                }
                Write::PutApplied(id, h) => {
                    applied.insert(id, Some(h));
                }
                Write::RemoveApplied(id) => {
                    applied.insert(id, None);
                }
                Write::PutIntent(id, dn) => {
                    intents.insert(id, Some(dn));
                }
                Write::RemoveIntent(id) => {
                    intents.insert(id, None);
                }
                Write::Unresolved(id, members) if !edits => {
                    unresolved.insert(id, members);
                }
                other => rest.push(other),
            }
        }
        self.with_transaction(async |t| {
            tx::record_events(t, run_id, &events).await?;
            tx::settle_anchors(t, &anchors).await?;
            tx::settle_applied(t, &applied).await?;
            tx::settle_intents(t, &intents, run_id).await?;
            tx::settle_unresolved(t, &unresolved).await?;
            for w in &rest {
                match w {
                    Write::PutLink(id, target) => tx::put_link(t, id, target).await?,
                    Write::RemoveLink(id, target) => tx::remove_link(t, id, target).await?,
                    Write::RemoveLinks(id) => tx::remove_links(t, id).await?,
                    Write::Enqueue(c) => tx::put_call(t, c, now).await?,
                    Write::CallDelivered(id) => tx::call_delivered(t, *id).await?,
                    Write::CallFailed(id, error, next) => {
                        tx::call_failed(t, *id, error, *next).await?
                    }
                    Write::Unresolved(id, members) => tx::set_unresolved(t, id, members).await?,
                    Write::UnresolvedEdit { group, add, remove } => {
                        tx::edit_unresolved(t, group, add, remove).await?
                    }
                    // Taken out above.
                    Write::Event(_)
                    | Write::PutAnchor(_)
                    | Write::RemoveAnchor(_)
                    | Write::PutApplied(..)
                    | Write::RemoveApplied(_)
                    | Write::PutIntent(..)
                    | Write::RemoveIntent(_) => {}
                }
            }
            Ok(())
        })
    }

    fn settle_pending(&mut self, retry: &BTreeSet<String>) -> Result<(), StateError> {
        self.with_transaction(async |t| {
            tx::clear_all_pending(t, ObjectKind::User).await?;
            tx::clear_all_pending(t, ObjectKind::Group).await?;
            tx::clear_all_pending(t, ObjectKind::Device).await?;
            for id in retry {
                tx::mark_pending(t, ObjectKind::Group, id).await?;
            }
            // Applied member changes are forgotten with their marks.
            tx::forget_settled_member_changes(t).await
        })
    }
}
