//! A [`CycleState`] over the real store that notes how many cached groups a cycle holds at
//! once: each `load_by_ids` and `for_each_chunk` of groups is measured, every other call
//! passes through. What a memory bound looks like from outside the cycle.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use crate::graph::model::{CloudObject, DeltaItem};
use crate::state::{
    Anchor, GroupHead, HeldDelete, HeldRemovalRow, Leaving, MemberChanges, ObjectKind,
    OutboxCounts, OutboxEntry, Quarantined, Released, RoundProgress, RunMode, RunStatus, Seen,
    StateError, Store, StoredLink,
};

use super::super::record::Write;
use super::super::state::CycleState;

/// The real store, watched.
pub struct Watched<'s> {
    pub store: &'s mut Store,
    /// The most cached groups one read handed the cycle.
    pub widest: Cell<usize>,
    /// Cached groups handed over in all, over every read.
    pub groups_read: Cell<usize>,
    /// Members of the groups handed over with their members, over every read.
    pub members_read: Cell<usize>,
}

impl<'s> Watched<'s> {
    pub fn new(store: &'s mut Store) -> Self {
        Watched {
            store,
            widest: Cell::new(0),
            groups_read: Cell::new(0),
            members_read: Cell::new(0),
        }
    }

    fn saw_members<'a>(&self, groups: impl Iterator<Item = &'a CloudObject>) {
        let n: usize = groups.map(|g| g.members.len()).sum();
        self.members_read.set(self.members_read.get() + n);
    }

    fn saw(&self, kind: ObjectKind, n: usize) {
        if kind == ObjectKind::Group {
            self.widest.set(self.widest.get().max(n));
            self.groups_read.set(self.groups_read.get() + n);
        }
    }
}

/// Passes each listed call through to the store.
macro_rules! through {
    () => {};
    ($name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; $($rest:tt)*) => {
        fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StateError> {
            CycleState::$name(&*self.store $(, $arg)*)
        }
        through! { $($rest)* }
    };
    ($name:ident(&mut self $(, $arg:ident: $ty:ty)*) -> $ret:ty; $($rest:tt)*) => {
        fn $name(&mut self $(, $arg: $ty)*) -> Result<$ret, StateError> {
            CycleState::$name(&mut *self.store $(, $arg)*)
        }
        through! { $($rest)* }
    };
}

impl CycleState for Watched<'_> {
    through! {
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
        settle_quarantine(&mut self, release: &[String], failed: &BTreeMap<String, String>, now: i64, cap_secs: u64) -> Vec<(String, Seen, Quarantined)>;
        held_deletes(&self) -> BTreeMap<String, HeldDelete>;
        replace_held(&mut self, rows: &[HeldDelete]) -> ();
        waiting_removals(&self) -> Option<(String, usize)>;
        approved_removals(&self) -> BTreeMap<String, String>;
        replace_held_removals(&mut self, rows: &[HeldRemovalRow]) -> ();
        begin_run(&mut self, mode: RunMode) -> i64;
        finish_run(&mut self, run_id: i64, status: RunStatus, stats: &serde_json::Value) -> ();
        record(&mut self, run_id: i64, writes: &[Write]) -> ();
        settle_pending(&mut self, retry: &BTreeSet<String>) -> ();
        any_call_due(&self, now: i64) -> bool;
        calls_due(&self, now: i64, limit: usize) -> Vec<OutboxEntry>;
        settle_call(&mut self, id: i64, outcome: Result<(), (&str, Option<i64>)>) -> ();
        call_counts(&self) -> OutboxCounts;
    }

    fn load_by_ids<'a>(
        &self,
        kind: ObjectKind,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, CloudObject>, StateError> {
        let found = CycleState::load_by_ids(&*self.store, kind, ids)?;
        self.saw(kind, found.len());
        self.saw_members(found.values());
        Ok(found)
    }

    fn load_heads<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, GroupHead>, StateError> {
        let found = CycleState::load_heads(&*self.store, ids)?;
        self.saw(ObjectKind::Group, found.len());
        Ok(found)
    }

    fn members_among<'a>(
        &self,
        group: &str,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeSet<String>, StateError> {
        CycleState::members_among(&*self.store, group, ids)
    }

    fn for_each_chunk(
        &self,
        kind: ObjectKind,
        chunk: usize,
        mut f: impl FnMut(Vec<CloudObject>) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        CycleState::for_each_chunk(&*self.store, kind, chunk, |objects| {
            self.saw(kind, objects.len());
            self.saw_members(objects.iter());
            f(objects)
        })
    }

    fn groups_containing<'a>(
        &self,
        member_ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeSet<String>, StateError> {
        CycleState::groups_containing(&*self.store, member_ids)
    }

    fn member_changes<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, MemberChanges>, StateError> {
        CycleState::member_changes(&*self.store, ids)
    }

    fn links_of<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, Vec<String>>, StateError> {
        CycleState::links_of(&*self.store, ids)
    }
}
