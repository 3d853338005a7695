//! What a sync cycle asks of its state, as a trait: the cycle's only way to the state store.
//!
//! Shaped from the cycle's needs (read the cache by key, settle a batch's writes in one
//! transaction, keep the quarantine and the held sets), not from SQLite's API: the writes come
//! as [`Write`]s and whole settlements, never as a transaction handle, so a second backend
//! implements the same calls. [`Store`] (SQLite) is the one implementation today; the cycle
//! tests run it in memory.

use std::collections::{BTreeMap, BTreeSet};

use crate::graph::model::{CloudObject, DeltaItem};
use crate::state::{
    tx, Anchor, GroupHead, HeldDelete, HeldRemovalRow, Leaving, MemberChanges, ObjectKind,
    OutboxCounts, OutboxEntry, Quarantined, Released, RoundProgress, RunMode, RunStatus, Seen,
    StateError, Store, StoredLink,
};

use super::record::Write;

/// The state a cycle reads and settles. Every settling call is atomic: all of it or none.
pub trait CycleState {
    // --- the cloud cache ---------------------------------------------------------------------
    /// Merges one chunk of a delta round into the cache (changed objects marked pending).
    fn apply_round_chunk(
        &mut self,
        kind: ObjectKind,
        items: &BTreeMap<String, DeltaItem>,
        progress: &mut RoundProgress,
    ) -> Result<(), StateError>;
    /// Ends a round: its deltaLink and select list stored, a full round's leftovers dropped.
    fn finish_round(
        &mut self,
        kind: ObjectKind,
        delta_link: &str,
        select: &str,
        progress: &mut RoundProgress,
    ) -> Result<(), StateError>;
    fn stored_link(&self, kind: ObjectKind) -> Result<Option<StoredLink>, StateError>;
    fn load_by_ids<'a>(
        &self,
        kind: ObjectKind,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, CloudObject>, StateError>;
    /// The cached groups with these ids without their members ([`GroupHead`]): what a cycle
    /// reads of groups whose rules do not look at members. Ids not cached, or cached without a
    /// member digest, are left out.
    fn load_heads<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, GroupHead>, StateError>;
    /// Which of `ids` are cached members of `group` (the cost follows `ids`, not the group).
    fn members_among<'a>(
        &self,
        group: &str,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeSet<String>, StateError>;
    /// Every cached object of `kind`, `chunk` at a time.
    fn for_each_chunk(
        &self,
        kind: ObjectKind,
        chunk: usize,
        f: impl FnMut(Vec<CloudObject>) -> Result<(), StateError>,
    ) -> Result<(), StateError>;
    fn count_objects(&self, kind: ObjectKind) -> Result<usize, StateError>;
    /// The groups holding any of `member_ids` directly.
    fn groups_containing<'a>(
        &self,
        member_ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeSet<String>, StateError>;
    fn pending(&self, kind: ObjectKind) -> Result<BTreeSet<String>, StateError>;
    /// The member changes the delta brought for these groups since each was last applied.
    fn member_changes<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, MemberChanges>, StateError>;
    fn meta(&self, key: &str) -> Result<Option<String>, StateError>;
    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StateError>;

    // --- what Writeback owns -----------------------------------------------------------------
    fn anchor(&self, cloud_id: &str) -> Result<Option<Anchor>, StateError>;
    /// The anchors of `ids` that exist: one lookup each unless the store can do better (a
    /// database across the network reads them in one query).
    fn anchors_of<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, Anchor>, StateError> {
        let mut out = BTreeMap::new();
        for id in ids {
            if let Some(a) = self.anchor(id)? {
                out.insert(id.clone(), a);
            }
        }
        Ok(out)
    }
    fn anchors(&self) -> Result<BTreeMap<String, Anchor>, StateError>;
    fn anchor_ids(&self) -> Result<BTreeSet<String>, StateError>;
    fn anchor_count(&self) -> Result<usize, StateError>;
    fn applied_hash(&self, cloud_id: &str) -> Result<Option<String>, StateError>;
    fn applied_hashes(&self) -> Result<BTreeMap<String, String>, StateError>;
    fn intent(&self, cloud_id: &str) -> Result<Option<String>, StateError>;
    /// The cloud ids with an unsettled intent.
    fn intent_ids(&self) -> Result<Vec<String>, StateError>;
    fn links_of<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, Vec<String>>, StateError>;
    fn released(&self) -> Result<BTreeMap<String, Released>, StateError>;
    fn unrelease(&mut self, ids: &[String]) -> Result<(), StateError>;
    fn leaving(&self) -> Result<BTreeMap<String, Leaving>, StateError>;
    fn leaving_due(&self, now: i64) -> Result<BTreeSet<String>, StateError>;
    fn settle_leaving(
        &mut self,
        changes: &BTreeMap<String, Option<Leaving>>,
    ) -> Result<(), StateError>;

    // --- safety: quarantine, held deletes and removals ---------------------------------------
    fn quarantined(&self) -> Result<BTreeMap<String, Quarantined>, StateError>;
    fn quarantine_due(&self, now: i64) -> Result<BTreeSet<String>, StateError>;
    fn quarantine_count(&self) -> Result<usize, StateError>;
    /// Takes `release` out of quarantine and puts `failed` (id → error) in, each with its next
    /// try at `now` plus its backoff (at most `cap_secs`); returns how each failure was seen.
    fn settle_quarantine(
        &mut self,
        release: &[String],
        failed: &BTreeMap<String, String>,
        now: i64,
        cap_secs: u64,
    ) -> Result<Vec<(String, Seen, Quarantined)>, StateError>;
    fn held_deletes(&self) -> Result<BTreeMap<String, HeldDelete>, StateError>;
    /// Replaces the held deletes (a delete held before keeps the time it was first held).
    fn replace_held(&mut self, rows: &[HeldDelete]) -> Result<(), StateError>;
    fn waiting_removals(&self) -> Result<Option<(String, usize)>, StateError>;
    fn approved_removals(&self) -> Result<BTreeMap<String, String>, StateError>;
    fn replace_held_removals(&mut self, rows: &[HeldRemovalRow]) -> Result<(), StateError>;

    // --- runs, bookkeeping and trigger calls -------------------------------------------------
    fn begin_run(&mut self, mode: RunMode) -> Result<i64, StateError>;
    fn finish_run(
        &mut self,
        run_id: i64,
        status: RunStatus,
        stats: &serde_json::Value,
    ) -> Result<(), StateError>;
    /// Carries `writes` out in one transaction, with run `run_id`'s audit events.
    fn record(&mut self, run_id: i64, writes: &[Write]) -> Result<(), StateError>;
    /// Clears every pending mark and marks `retry` again, in one transaction.
    fn settle_pending(&mut self, retry: &BTreeSet<String>) -> Result<(), StateError>;
    fn any_call_due(&self, now: i64) -> Result<bool, StateError>;
    fn calls_due(&self, now: i64, limit: usize) -> Result<Vec<OutboxEntry>, StateError>;
    fn settle_call(
        &mut self,
        id: i64,
        outcome: Result<(), (&str, Option<i64>)>,
    ) -> Result<(), StateError>;
    fn call_counts(&self) -> Result<OutboxCounts, StateError>;

    // --- several instances on one state ------------------------------------------------------
    /// Whether this process may still write: asked before each batch of AD writes. A store
    /// only this process writes says yes; a shared one checks the lease (`crate::ha`).
    fn check_fence(&mut self) -> Result<(), StateError> {
        Ok(())
    }
}

/// Forwards trait calls to `$store`'s own methods of the same name and arguments.
macro_rules! forward {
    ($store:ident;) => {};
    ($store:ident; $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; $($rest:tt)*) => {
        fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StateError> {
            $store::$name(self $(, $arg)*)
        }
        $crate::sync::state::forward! { $store; $($rest)* }
    };
    ($store:ident; $name:ident(&mut self $(, $arg:ident: $ty:ty)*) -> $ret:ty; $($rest:tt)*) => {
        fn $name(&mut self $(, $arg: $ty)*) -> Result<$ret, StateError> {
            $store::$name(self $(, $arg)*)
        }
        $crate::sync::state::forward! { $store; $($rest)* }
    };
}

/// The trait methods every store has as methods of its own with the same signature (the
/// SQLite store here, the PostgreSQL store in `state_pg.rs`): one list for both.
macro_rules! forward_cycle_state {
    ($store:ident) => {
        $crate::sync::state::forward! { $store;
        apply_round_chunk(&mut self, kind: ObjectKind, items: &BTreeMap<String, DeltaItem>, progress: &mut RoundProgress) -> ();
        finish_round(&mut self, kind: ObjectKind, delta_link: &str, select: &str, progress: &mut RoundProgress) -> ();
        stored_link(&self, kind: ObjectKind) -> Option<StoredLink>;
        count_objects(&self, kind: ObjectKind) -> usize;
        pending(&self, kind: ObjectKind) -> BTreeSet<String>;
        meta(&self, key: &str) -> Option<String>;
        set_meta(&mut self, key: &str, value: &str) -> ();
        anchor(&self, cloud_id: &str) -> Option<Anchor>;
        anchors(&self) -> BTreeMap<String, Anchor>;
        anchor_ids(&self) -> BTreeSet<String>;
        anchor_count(&self) -> usize;
        applied_hash(&self, cloud_id: &str) -> Option<String>;
        applied_hashes(&self) -> BTreeMap<String, String>;
        intent(&self, cloud_id: &str) -> Option<String>;
        intent_ids(&self) -> Vec<String>;
        released(&self) -> BTreeMap<String, Released>;
        unrelease(&mut self, ids: &[String]) -> ();
        leaving(&self) -> BTreeMap<String, Leaving>;
        leaving_due(&self, now: i64) -> BTreeSet<String>;
        settle_leaving(&mut self, changes: &BTreeMap<String, Option<Leaving>>) -> ();
        quarantined(&self) -> BTreeMap<String, Quarantined>;
        quarantine_due(&self, now: i64) -> BTreeSet<String>;
        quarantine_count(&self) -> usize;
        held_deletes(&self) -> BTreeMap<String, HeldDelete>;
        waiting_removals(&self) -> Option<(String, usize)>;
        approved_removals(&self) -> BTreeMap<String, String>;
        replace_held_removals(&mut self, rows: &[HeldRemovalRow]) -> ();
        begin_run(&mut self, mode: RunMode) -> i64;
        finish_run(&mut self, run_id: i64, status: RunStatus, stats: &serde_json::Value) -> ();
        any_call_due(&self, now: i64) -> bool;
        calls_due(&self, now: i64, limit: usize) -> Vec<OutboxEntry>;
        settle_call(&mut self, id: i64, outcome: Result<(), (&str, Option<i64>)>) -> ();
        call_counts(&self) -> OutboxCounts;
        }
    };
}
pub(crate) use {forward, forward_cycle_state};

impl CycleState for Store {
    forward_cycle_state!(Store);

    fn load_by_ids<'a>(
        &self,
        kind: ObjectKind,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, CloudObject>, StateError> {
        Store::load_by_ids(self, kind, ids)
    }

    fn load_heads<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, GroupHead>, StateError> {
        Store::load_heads(self, ids)
    }

    fn members_among<'a>(
        &self,
        group: &str,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeSet<String>, StateError> {
        Store::members_among(self, group, ids)
    }

    fn for_each_chunk(
        &self,
        kind: ObjectKind,
        chunk: usize,
        f: impl FnMut(Vec<CloudObject>) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        Store::for_each_chunk(self, kind, chunk, f)
    }

    fn groups_containing<'a>(
        &self,
        member_ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeSet<String>, StateError> {
        Store::groups_containing(self, member_ids)
    }

    fn member_changes<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, MemberChanges>, StateError> {
        Store::member_changes(self, ids)
    }

    fn links_of<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, Vec<String>>, StateError> {
        Store::links_of(self, ids)
    }

    fn settle_quarantine(
        &mut self,
        release: &[String],
        failed: &BTreeMap<String, String>,
        now: i64,
        cap_secs: u64,
    ) -> Result<Vec<(String, Seen, Quarantined)>, StateError> {
        self.with_transaction(|t| {
            for id in release {
                tx::release(t, id)?;
            }
            let mut seen = Vec::with_capacity(failed.len());
            for (id, why) in failed {
                let (s, q) = tx::record_failure(t, id, why, now, cap_secs)?;
                seen.push((id.clone(), s, q));
            }
            Ok(seen)
        })
    }

    fn replace_held(&mut self, rows: &[HeldDelete]) -> Result<(), StateError> {
        self.with_transaction(|t| tx::replace_held(t, rows))
    }

    fn record(&mut self, run_id: i64, writes: &[Write]) -> Result<(), StateError> {
        if writes.is_empty() {
            return Ok(());
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.with_transaction(|t| {
            for w in writes {
                match w {
                    Write::Event(e) => tx::record_event(t, run_id, e)?,
                    Write::PutAnchor(a) => tx::put_anchor(t, a)?,
                    Write::RemoveAnchor(id) => tx::remove_anchor(t, id)?,
                    Write::PutApplied(id, h) => tx::put_applied(t, id, h)?,
                    Write::RemoveApplied(id) => tx::remove_applied(t, id)?,
                    Write::PutIntent(id, dn) => tx::put_intent(t, id, dn, run_id)?,
                    Write::RemoveIntent(id) => tx::remove_intent(t, id)?,
                    Write::PutLink(id, target) => tx::put_link(t, id, target)?,
                    Write::RemoveLink(id, target) => tx::remove_link(t, id, target)?,
                    Write::RemoveLinks(id) => tx::remove_links(t, id)?,
                    Write::Enqueue(c) => tx::put_call(t, c, now)?,
                    Write::CallDelivered(id) => tx::call_delivered(t, *id)?,
                    Write::CallFailed(id, error, next) => tx::call_failed(t, *id, error, *next)?,
                    Write::Unresolved(id, members) => tx::set_unresolved(t, id, members)?,
                    Write::UnresolvedEdit { group, add, remove } => {
                        tx::edit_unresolved(t, group, add, remove)?
                    }
                }
            }
            Ok(())
        })
    }

    fn settle_pending(&mut self, retry: &BTreeSet<String>) -> Result<(), StateError> {
        self.with_transaction(|t| {
            tx::clear_all_pending(t, ObjectKind::User)?;
            tx::clear_all_pending(t, ObjectKind::Group)?;
            tx::clear_all_pending(t, ObjectKind::Device)?;
            for id in retry {
                tx::mark_pending(t, ObjectKind::Group, id)?;
            }
            // Applied member changes are forgotten with their marks.
            tx::forget_settled_member_changes(t)
        })
    }
}
