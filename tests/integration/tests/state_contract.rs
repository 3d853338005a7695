//! The engine's state contract (`sync::state::CycleState`) on both backends: every behaviour
//! is one generic body, run on the SQLite store (a temporary file) and on the PostgreSQL store
//! (a fresh database of the test bed's cluster, over TLS), with the same expectations. Plus
//! what only PostgreSQL has: the lease's fence on every write transaction, and the refusal of
//! a newer schema.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use writeback::config::PostgresConfig;
use writeback::graph::model::{DeltaItem, MemberRef, RemovedReason};
use writeback::ha::cycles::{Between, BetweenError};
use writeback::ha::{pg, HaError, LeaseTimes, PgLease, PgSettings, Takeover};
use writeback::state::pg::{tx, PgStore};
use writeback::state::{
    Anchor, Approved, AuditEvent, EventRecord, HeldDelete, HeldRemovalRow, Leaving, MemberDigest,
    NewCall, ObjectKind, OutboxCounts, RoundProgress, RunMode, RunRecord, RunStatus, Seen,
    StateError, Store, UnresolvedTotal,
};
use writeback::sync::record::Write;
use writeback::sync::state::CycleState;
use writeback_integration::postgres::PgTestbed;

// --- the backends ---------------------------------------------------------------------------

/// What the tests read and write beside the contract (the verbs' part, not the cycle's).
trait Backend: CycleState {
    fn run_of(&self, id: i64) -> Option<RunRecord>;
    fn events_of(&self, id: i64) -> Vec<EventRecord>;
    fn unresolved(&self) -> UnresolvedTotal;
    fn approve(&mut self, id: &str) -> Result<(Approved, usize), StateError>;
    fn release_groups(&mut self, run_id: i64, anchors: &[Anchor]);
    fn groups_named(&self, name: &str) -> Vec<String>;
}

impl Backend for Store {
    fn run_of(&self, id: i64) -> Option<RunRecord> {
        self.run(id).expect("read run")
    }
    fn events_of(&self, id: i64) -> Vec<EventRecord> {
        self.run_events(id).expect("read events")
    }
    fn unresolved(&self) -> UnresolvedTotal {
        self.unresolved_total().expect("unresolved total")
    }
    fn approve(&mut self, id: &str) -> Result<(Approved, usize), StateError> {
        self.approve_any(id)
    }
    fn release_groups(&mut self, run_id: i64, anchors: &[Anchor]) {
        self.release(run_id, anchors).expect("release")
    }
    fn groups_named(&self, name: &str) -> Vec<String> {
        let found = self.cached_groups_named(name).expect("find by name");
        found.into_iter().map(|(id, _)| id).collect()
    }
}

impl Backend for PgStore {
    fn run_of(&self, id: i64) -> Option<RunRecord> {
        self.run(id).expect("read run")
    }
    fn events_of(&self, id: i64) -> Vec<EventRecord> {
        self.run_events(id).expect("read events")
    }
    fn unresolved(&self) -> UnresolvedTotal {
        self.unresolved_total().expect("unresolved total")
    }
    fn approve(&mut self, id: &str) -> Result<(Approved, usize), StateError> {
        self.approve_any(id)
    }
    fn release_groups(&mut self, run_id: i64, anchors: &[Anchor]) {
        self.release(run_id, anchors).expect("release")
    }
    fn groups_named(&self, name: &str) -> Vec<String> {
        let found = self.cached_groups_named(name).expect("find by name");
        found.into_iter().map(|(id, _)| id).collect()
    }
}

fn settings(pg: &PgTestbed, database: &str) -> PgSettings {
    PgSettings {
        host: pg.host.clone(),
        port: pg.port,
        database: database.to_string(),
        user: pg.user.clone(),
        password: pg.password().into(),
        ca_file: pg.ca_file.clone(),
        connect_timeout: Duration::from_secs(5),
        schema: None,
    }
}

async fn pg_store(name: &str) -> PgStore {
    let pg = PgTestbed::load();
    let s = settings(&pg, &pg.fresh_database(name));
    let client = pg::connect(&s).await.expect("connect over TLS");
    PgStore::open(client, None).expect("open the PostgreSQL store")
}

fn sqlite_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("state.db")).expect("open the SQLite store");
    (dir, store)
}

/// One test per backend for a behaviour: `<behaviour>::sqlite` and `<behaviour>::postgres`.
macro_rules! contract {
    ($($behaviour:ident),* $(,)?) => {$(
        mod $behaviour {
            #[tokio::test(flavor = "multi_thread")]
            async fn sqlite() {
                let (_dir, mut store) = super::sqlite_store();
                super::$behaviour(&mut store);
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn postgres() {
                let mut store = super::pg_store(stringify!($behaviour)).await;
                super::$behaviour(&mut store);
            }
        }
    )*};
}

contract!(
    a_delta_round_in_chunks,
    a_full_round_drops_what_it_did_not_carry,
    member_changes_are_net_and_go_with_their_marks,
    member_digests_follow_every_member_change,
    meta_is_kept_by_key,
    a_batch_of_writes_is_one_transaction,
    runs_begin_and_finish,
    the_quarantine_backs_off,
    held_deletes_and_removals_are_replaced,
    the_outbox_delivers_once,
    unresolved_members_add_up,
    leaving_groups_are_due_and_forgotten,
    a_held_set_is_approved_by_its_id_once,
    released_groups_are_forgotten_and_audited,
    cached_groups_are_found_by_name,
);

// --- helpers --------------------------------------------------------------------------------

fn member(kind: &str, id: &str) -> MemberRef {
    MemberRef {
        odata_type: format!("#microsoft.graph.{kind}"),
        id: id.to_string(),
    }
}

fn item(id: &str, name: &str, members: &[MemberRef]) -> DeltaItem {
    DeltaItem {
        id: id.to_string(),
        props: json!({ "displayName": name })
            .as_object()
            .cloned()
            .expect("object"),
        members_added: members.iter().map(|m| (m.id.clone(), m.clone())).collect(),
        ..DeltaItem::default()
    }
}

fn removed(id: &str, why: RemovedReason) -> DeltaItem {
    DeltaItem {
        id: id.to_string(),
        removed: Some(why),
        ..DeltaItem::default()
    }
}

fn chunk(items: Vec<DeltaItem>) -> BTreeMap<String, DeltaItem> {
    items.into_iter().map(|i| (i.id.clone(), i)).collect()
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn set(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn anchor(cloud_id: &str, guid: &str) -> Anchor {
    Anchor {
        cloud_id: cloud_id.to_string(),
        object_guid: guid.to_string(),
        dn: format!("CN={cloud_id},OU=Groups,DC=example,DC=test"),
        rule: "rules.rhai".to_string(),
        updated_at: String::new(),
    }
}

fn event(cloud_id: &str, action: &str) -> AuditEvent {
    AuditEvent {
        cloud_id: cloud_id.to_string(),
        action: action.to_string(),
        dn: format!("CN={cloud_id},OU=Groups,DC=example,DC=test"),
        detail: json!({ "why": action }),
        outcome: "ok".to_string(),
    }
}

/// A first (full) group round in two chunks: g1 {u1, u2}, g2 {u2}, then g3 {d1}.
fn first_round(store: &mut impl CycleState) -> RoundProgress {
    let mut progress = RoundProgress::new(true);
    let users = [member("user", "u1"), member("user", "u2")];
    store
        .apply_round_chunk(
            ObjectKind::Group,
            &chunk(vec![
                item("g1", "One", &users),
                item("g2", "Two", &users[1..]),
            ]),
            &mut progress,
        )
        .expect("first chunk");
    store
        .apply_round_chunk(
            ObjectKind::Group,
            &chunk(vec![item("g3", "Three", &[member("device", "d1")])]),
            &mut progress,
        )
        .expect("second chunk");
    progress
}

// --- behaviours -----------------------------------------------------------------------------

fn a_delta_round_in_chunks<S: CycleState>(store: &mut S) {
    let mut progress = first_round(store);
    // Until the round is finished, there is no link: a kill replays the whole round.
    assert_eq!(store.stored_link(ObjectKind::Group).expect("link"), None);
    assert_eq!(store.count_objects(ObjectKind::Group).expect("count"), 3);
    store
        .finish_round(ObjectKind::Group, "L1", "id,displayName", &mut progress)
        .expect("finish");
    let link = store
        .stored_link(ObjectKind::Group)
        .expect("link")
        .expect("stored");
    assert_eq!(
        (link.link.as_str(), link.select.as_deref()),
        ("L1", Some("id,displayName"))
    );
    assert_eq!(progress.changes.changed, set(&["g1", "g2", "g3"]));
    assert!(progress.changes.deleted.is_empty());
    assert_eq!(store.stored_link(ObjectKind::User).expect("link"), None);

    let wanted = ids(&["g3", "g1", "missing", "g1"]);
    let loaded = store
        .load_by_ids(ObjectKind::Group, wanted.iter())
        .expect("load");
    assert_eq!(
        loaded.keys().cloned().collect::<Vec<_>>(),
        ids(&["g1", "g3"])
    );
    let g1 = &loaded["g1"];
    assert_eq!(g1.str_prop("displayName"), Some("One"));
    assert!(!g1.soft_deleted);
    assert_eq!(
        g1.members.values().cloned().collect::<Vec<_>>(),
        vec![member("user", "u1"), member("user", "u2")]
    );
    assert_eq!(
        loaded["g3"].members.keys().cloned().collect::<Vec<_>>(),
        ids(&["d1"])
    );
    assert!(store
        .load_by_ids(ObjectKind::User, wanted.iter())
        .expect("load users")
        .is_empty());

    let mut seen = Vec::new();
    store
        .for_each_chunk(ObjectKind::Group, 2, |objects| {
            seen.push(
                objects
                    .iter()
                    .map(|o| format!("{}:{}", o.id, o.members.len()))
                    .collect::<Vec<_>>(),
            );
            Ok(())
        })
        .expect("chunks");
    assert_eq!(
        seen,
        vec![vec!["g1:2".to_string(), "g2:1".into()], vec!["g3:1".into()]]
    );
    let mut none = 0;
    store
        .for_each_chunk(ObjectKind::Device, 2, |_| {
            none += 1;
            Ok(())
        })
        .expect("no devices");
    assert_eq!(none, 0);

    let u2 = ids(&["u2"]);
    assert_eq!(
        store.groups_containing(u2.iter()).expect("groups"),
        set(&["g1", "g2"])
    );
    let d1_u1 = ids(&["d1", "u1", "nobody"]);
    assert_eq!(
        store.groups_containing(d1_u1.iter()).expect("groups"),
        set(&["g1", "g3"])
    );
    assert_eq!(
        store.pending(ObjectKind::Group).expect("pending"),
        set(&["g1", "g2", "g3"])
    );

    // An incremental round: g1 loses u1 and gains u3, g2 is deleted, g3 soft deleted, a
    // soft delete of an object never cached is left out.
    store.settle_pending(&BTreeSet::new()).expect("settle");
    let mut progress = RoundProgress::new(false);
    let mut g1 = item("g1", "One renamed", &[member("user", "u3")]);
    g1.members_removed.insert("u1".into());
    store
        .apply_round_chunk(
            ObjectKind::Group,
            &chunk(vec![
                g1,
                removed("g2", RemovedReason::Deleted),
                removed("g3", RemovedReason::Changed),
                removed("g9", RemovedReason::Changed),
            ]),
            &mut progress,
        )
        .expect("incremental chunk");
    store
        .finish_round(ObjectKind::Group, "L2", "id,displayName", &mut progress)
        .expect("finish");
    assert_eq!(progress.changes.changed, set(&["g1", "g3"]));
    assert_eq!(progress.changes.deleted, set(&["g2"]));
    assert_eq!(
        store
            .stored_link(ObjectKind::Group)
            .expect("link")
            .map(|l| l.link),
        Some("L2".to_string())
    );
    assert_eq!(store.count_objects(ObjectKind::Group).expect("count"), 2);
    assert_eq!(
        store.pending(ObjectKind::Group).expect("pending"),
        set(&["g1", "g2", "g3"])
    );
    let all = ids(&["g1", "g2", "g3"]);
    let loaded = store
        .load_by_ids(ObjectKind::Group, all.iter())
        .expect("load");
    assert_eq!(
        loaded.keys().cloned().collect::<Vec<_>>(),
        ids(&["g1", "g3"])
    );
    assert_eq!(loaded["g1"].str_prop("displayName"), Some("One renamed"));
    assert_eq!(
        loaded["g1"].members.keys().cloned().collect::<Vec<_>>(),
        ids(&["u2", "u3"])
    );
    // A soft delete keeps what is known and notes when it was seen.
    let g3 = &loaded["g3"];
    assert!(g3.soft_deleted);
    assert_eq!(g3.str_prop("displayName"), Some("Three"));
    assert!(g3.str_prop("deletedDateTime").is_some());
    assert_eq!(g3.members.len(), 1);
    let u2 = ids(&["u2"]);
    assert_eq!(
        store.groups_containing(u2.iter()).expect("groups"),
        set(&["g1"])
    );

    // Users and devices are cached apart from groups, without members.
    let mut progress = RoundProgress::new(true);
    store
        .apply_round_chunk(
            ObjectKind::User,
            &chunk(vec![
                item("u1", "User One", &[]),
                item("u2", "User Two", &[]),
            ]),
            &mut progress,
        )
        .expect("users");
    store
        .finish_round(ObjectKind::User, "U1", "id", &mut progress)
        .expect("finish users");
    assert_eq!(store.count_objects(ObjectKind::User).expect("count"), 2);
    assert_eq!(store.count_objects(ObjectKind::Group).expect("count"), 2);
    assert_eq!(
        store.pending(ObjectKind::User).expect("pending"),
        set(&["u1", "u2"])
    );
}

fn a_full_round_drops_what_it_did_not_carry<S: CycleState>(store: &mut S) {
    let mut progress = first_round(store);
    store
        .finish_round(ObjectKind::Group, "L1", "id", &mut progress)
        .expect("finish");
    store.settle_pending(&BTreeSet::new()).expect("settle");
    // A reset: the tenant now holds g2 (with another member) and g4 only.
    let mut progress = RoundProgress::new(true);
    store
        .apply_round_chunk(
            ObjectKind::Group,
            &chunk(vec![
                item("g2", "Two", &[member("user", "u9")]),
                item("g4", "Four", &[]),
            ]),
            &mut progress,
        )
        .expect("chunk");
    store
        .finish_round(ObjectKind::Group, "L2", "id", &mut progress)
        .expect("finish");
    assert_eq!(progress.changes.deleted, set(&["g1", "g3"]));
    assert_eq!(progress.changes.changed, set(&["g2", "g4"]));
    assert_eq!(store.count_objects(ObjectKind::Group).expect("count"), 2);
    assert_eq!(
        store.pending(ObjectKind::Group).expect("pending"),
        set(&["g1", "g2", "g3", "g4"])
    );
    // The replaced group's members are the round's, the dropped groups' are gone.
    let members = ids(&["u1", "u2", "d1", "u9"]);
    assert_eq!(
        store.groups_containing(members.iter()).expect("groups"),
        set(&["g2"])
    );
    // A full round's members are the baseline, not changes.
    let all = ids(&["g1", "g2", "g3", "g4"]);
    assert!(store
        .member_changes(all.iter())
        .expect("changes")
        .is_empty());
}

/// Each group's stored member digest and count are those of its cached members, and a group
/// read without members has the same properties.
fn digests_match<S: CycleState>(store: &S, groups: &[&str]) {
    let groups = ids(groups);
    let heads = store.load_heads(groups.iter()).expect("heads");
    let whole = store
        .load_by_ids(ObjectKind::Group, groups.iter())
        .expect("groups");
    let read: Vec<&String> = heads.keys().collect();
    assert_eq!(read, whole.keys().collect::<Vec<_>>());
    for (id, g) in &whole {
        let h = &heads[id];
        let want = MemberDigest::of(g.members.keys().map(String::as_str));
        assert_eq!(h.digest, want, "{id}: {:?}", g.members.keys());
        assert_eq!(h.member_count, g.members.len(), "{id}");
        assert!(h.props_only.members.is_empty(), "{id}");
        assert_eq!(
            (&h.props_only.props, h.props_only.soft_deleted),
            (&g.props, g.soft_deleted)
        );
    }
}

fn member_digests_follow_every_member_change<S: CycleState>(store: &mut S) {
    let mut progress = first_round(store);
    store
        .finish_round(ObjectKind::Group, "L1", "id", &mut progress)
        .expect("finish");
    let all = ["g1", "g2", "g3", "g4"];
    digests_match(store, &all);
    assert_eq!(
        store.load_heads(ids(&["g3"]).iter()).expect("heads")["g3"].member_count,
        1
    );

    // From the link: a member gone, one added, one replayed, one removed that never was;
    // a new group; a soft delete; a hard delete.
    let mut g1 = item("g1", "One", &[member("user", "u3"), member("user", "u2")]);
    g1.members_removed = set(&["u1", "u9"]);
    let mut progress = RoundProgress::new(false);
    store
        .apply_round_chunk(
            ObjectKind::Group,
            &chunk(vec![
                g1,
                item("g4", "Four", &[member("user", "u1")]),
                removed("g2", RemovedReason::Changed),
                removed("g3", RemovedReason::Deleted),
            ]),
            &mut progress,
        )
        .expect("incremental chunk");
    store
        .finish_round(ObjectKind::Group, "L2", "id", &mut progress)
        .expect("finish");
    digests_match(store, &all);
    let heads = store.load_heads(ids(&all).iter()).expect("heads");
    assert_eq!(
        heads.keys().map(String::as_str).collect::<Vec<_>>(),
        ["g1", "g2", "g4"]
    );
    assert_eq!(heads["g1"].digest, MemberDigest::of(["u2", "u3"]));
    assert!(heads["g2"].props_only.soft_deleted);

    // A reset whose big group spans two chunks: replaced by its first part, the second laid
    // over it (a member added, one of the first part removed).
    let mut progress = RoundProgress::new(true);
    let first = [member("user", "u1"), member("user", "u4")];
    store
        .apply_round_chunk(
            ObjectKind::Group,
            &chunk(vec![item("g1", "One", &first), item("g4", "Four", &[])]),
            &mut progress,
        )
        .expect("first chunk");
    let mut rest = item("g1", "One", &[member("user", "u5"), member("user", "u4")]);
    rest.members_removed = set(&["u1"]);
    store
        .apply_round_chunk(ObjectKind::Group, &chunk(vec![rest]), &mut progress)
        .expect("second chunk");
    store
        .finish_round(ObjectKind::Group, "L3", "id", &mut progress)
        .expect("finish");
    digests_match(store, &all);
    let heads = store.load_heads(ids(&all).iter()).expect("heads");
    assert_eq!(heads["g1"].digest, MemberDigest::of(["u4", "u5"]));
    assert_eq!(heads["g1"].member_count, 2);
    assert_eq!(heads["g4"].digest, MemberDigest::default());
    assert!(!heads.contains_key("g2"), "dropped by the reset");

    // Members asked by id, whatever the group's size.
    let asked = ids(&["u5", "u1", "u9", "u4"]);
    assert_eq!(
        store.members_among("g1", asked.iter()).expect("members"),
        set(&["u4", "u5"])
    );
    assert!(store
        .members_among("g4", asked.iter())
        .expect("members")
        .is_empty());
}

fn member_changes_are_net_and_go_with_their_marks<S: CycleState>(store: &mut S) {
    let mut progress = first_round(store);
    store
        .finish_round(ObjectKind::Group, "L1", "id", &mut progress)
        .expect("finish");
    store.settle_pending(&BTreeSet::new()).expect("settle");
    let round = |store: &mut S, items: Vec<DeltaItem>, link: &str| {
        let mut progress = RoundProgress::new(false);
        store
            .apply_round_chunk(ObjectKind::Group, &chunk(items), &mut progress)
            .expect("chunk");
        store
            .finish_round(ObjectKind::Group, link, "id", &mut progress)
            .expect("finish");
    };
    // g1 gains u3 and loses u1 (a replayed removal of a non-member is no change); g2 gains u4.
    let mut g1 = item("g1", "One", &[member("user", "u3")]);
    g1.members_removed = set(&["u1", "u8"]);
    round(
        store,
        vec![g1, item("g2", "Two", &[member("group", "u4")])],
        "L2",
    );
    // Then g2 loses u4 again: the changes cancel out.
    let mut g2 = item("g2", "Two", &[]);
    g2.members_removed = set(&["u4"]);
    round(store, vec![g2], "L3");

    let groups = ids(&["g1", "g2", "g3"]);
    let changes = store.member_changes(groups.iter()).expect("changes");
    assert_eq!(changes.keys().cloned().collect::<Vec<_>>(), ids(&["g1"]));
    assert_eq!(
        changes["g1"].added.values().cloned().collect::<Vec<_>>(),
        vec![member("user", "u3")]
    );
    assert_eq!(
        changes["g1"].removed.values().cloned().collect::<Vec<_>>(),
        vec![member("user", "u1")]
    );
    assert_eq!(
        store.pending(ObjectKind::Group).expect("pending"),
        set(&["g1", "g2"])
    );

    // g1 failed and is tried again; g2 was applied: its mark goes, g1's changes stay.
    store.settle_pending(&set(&["g1"])).expect("settle");
    assert_eq!(
        store.pending(ObjectKind::Group).expect("pending"),
        set(&["g1"])
    );
    assert_eq!(
        store
            .member_changes(groups.iter())
            .expect("changes")
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        ids(&["g1"])
    );
    store.settle_pending(&BTreeSet::new()).expect("settle");
    assert!(store
        .pending(ObjectKind::Group)
        .expect("pending")
        .is_empty());
    assert!(store
        .member_changes(groups.iter())
        .expect("changes")
        .is_empty());
}

fn meta_is_kept_by_key<S: CycleState>(store: &mut S) {
    assert_eq!(store.meta("rules_fingerprint").expect("meta"), None);
    store.set_meta("rules_fingerprint", "abc").expect("set");
    store.set_meta("other", "1").expect("set");
    store
        .set_meta("rules_fingerprint", "def")
        .expect("set again");
    assert_eq!(
        store.meta("rules_fingerprint").expect("meta").as_deref(),
        Some("def")
    );
    assert_eq!(store.meta("other").expect("meta").as_deref(), Some("1"));
}

fn a_batch_of_writes_is_one_transaction<S: Backend>(store: &mut S) {
    let run = store.begin_run(RunMode::Sync).expect("begin");
    let a1 = anchor("g1", "guid-1");
    store
        .record(
            run,
            &[
                Write::PutIntent("g1".into(), a1.dn.clone()),
                Write::PutIntent("g2".into(), "CN=g2".into()),
                Write::PutAnchor(a1.clone()),
                Write::PutAnchor(anchor("g0", "")),
                Write::PutApplied("g1".into(), "h1".into()),
                Write::PutApplied("g0".into(), "h0".into()),
                Write::PutLink("g1".into(), "CN=T2".into()),
                Write::PutLink("g1".into(), "CN=T1".into()),
                Write::PutLink("g1".into(), "CN=T1".into()),
                Write::Event(event("g1", "create")),
            ],
        )
        .expect("record");
    let stored = store.anchor("g1").expect("anchor").expect("anchored");
    assert_eq!(
        (stored.object_guid.as_str(), stored.dn.as_str()),
        ("guid-1", a1.dn.as_str())
    );
    assert!(!stored.updated_at.is_empty(), "an empty time is stamped");
    assert_eq!(store.anchor("g9").expect("anchor"), None);
    // Many at once: those that exist, each as read alone.
    let asked = ids(&["g0", "g1", "g9"]);
    let some = store.anchors_of(asked.iter()).expect("anchors of");
    assert_eq!(
        some.keys().map(String::as_str).collect::<Vec<_>>(),
        ["g0", "g1"]
    );
    assert_eq!(some.get("g1"), Some(&stored));
    assert!(store.anchors_of([].iter()).expect("none").is_empty());
    assert_eq!(
        store
            .anchors()
            .expect("anchors")
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        ids(&["g0", "g1"])
    );
    assert_eq!(store.anchor_ids().expect("ids"), set(&["g0", "g1"]));
    assert_eq!(store.anchor_count().expect("count"), 2);
    assert_eq!(
        store.applied_hash("g1").expect("hash").as_deref(),
        Some("h1")
    );
    assert_eq!(
        store.applied_hashes().expect("hashes"),
        BTreeMap::from([("g0".into(), "h0".into()), ("g1".into(), "h1".into())])
    );
    assert_eq!(
        store.intent("g1").expect("intent").as_deref(),
        Some(a1.dn.as_str())
    );
    assert_eq!(store.intent_ids().expect("intents"), ids(&["g1", "g2"]));
    let of = ids(&["g1", "g2"]);
    assert_eq!(
        store.links_of(of.iter()).expect("links"),
        BTreeMap::from([("g1".into(), ids(&["CN=T1", "CN=T2"]))])
    );

    store
        .record(
            run,
            &[
                Write::RemoveIntent("g1".into()),
                Write::RemoveApplied("g0".into()),
                Write::RemoveAnchor("g0".into()),
                Write::RemoveLink("g1".into(), "CN=T2".into()),
                Write::Event(event("g0", "delete")),
            ],
        )
        .expect("record");
    assert_eq!(store.intent_ids().expect("intents"), ids(&["g2"]));
    assert_eq!(store.anchor_ids().expect("ids"), set(&["g1"]));
    assert_eq!(store.applied_hash("g0").expect("hash"), None);
    assert_eq!(
        store.links_of(of.iter()).expect("links"),
        BTreeMap::from([("g1".into(), ids(&["CN=T1"]))])
    );

    // A write the database refuses (one GUID, two cloud ids) undoes the whole batch.
    let refused = store.record(
        run,
        &[
            Write::PutApplied("g7".into(), "h7".into()),
            Write::RemoveLinks("g1".into()),
            Write::PutAnchor(anchor("g8", "guid-1")),
        ],
    );
    assert!(refused.is_err(), "a second anchor of one GUID was taken");
    assert_eq!(store.applied_hash("g7").expect("hash"), None);
    assert_eq!(store.anchor("g8").expect("anchor"), None);
    assert_eq!(
        store.links_of(of.iter()).expect("links"),
        BTreeMap::from([("g1".into(), ids(&["CN=T1"]))])
    );
    store
        .record(run, &[Write::RemoveLinks("g1".into())])
        .expect("record");
    assert!(store.links_of(of.iter()).expect("links").is_empty());

    // Writes of one key in one batch: the last one counts; the events keep their order.
    store
        .record(
            run,
            &[
                Write::PutApplied("g5".into(), "h5".into()),
                Write::Event(event("g5", "create")),
                Write::RemoveApplied("g5".into()),
                Write::RemoveApplied("g6".into()),
                Write::PutApplied("g6".into(), "h6".into()),
                Write::PutIntent("g5".into(), "CN=g5".into()),
                Write::RemoveIntent("g5".into()),
                Write::RemoveIntent("g6".into()),
                Write::PutIntent("g6".into(), "CN=g6".into()),
                Write::PutAnchor(anchor("g5", "guid-5")),
                Write::RemoveAnchor("g5".into()),
                Write::PutAnchor(anchor("g6", "guid-6")),
                Write::RemoveAnchor("g6".into()),
                Write::PutAnchor(anchor("g6", "guid-66")),
                Write::Event(event("g6", "modify")),
            ],
        )
        .expect("record");
    assert_eq!(store.applied_hash("g5").expect("hash"), None);
    assert_eq!(
        store.applied_hash("g6").expect("hash").as_deref(),
        Some("h6")
    );
    assert_eq!(store.intent_ids().expect("intents"), ids(&["g2", "g6"]));
    assert_eq!(store.anchor("g5").expect("anchor"), None);
    assert_eq!(
        store.anchor("g6").expect("anchor").map(|a| a.object_guid),
        Some("guid-66".to_string())
    );

    // An event of a run that does not exist is refused as such.
    match store.record(run + 1000, &[Write::Event(event("g1", "modify"))]) {
        Err(StateError::UnknownRun { run_id, .. }) => assert_eq!(run_id, run + 1000),
        other => panic!("expected an unknown run, got {other:?}"),
    }
    let events: Vec<(String, String)> = store
        .events_of(run)
        .into_iter()
        .map(|e| (e.event.cloud_id, e.event.action))
        .collect();
    assert_eq!(
        events,
        vec![
            ("g1".to_string(), "create".to_string()),
            ("g0".to_string(), "delete".to_string()),
            ("g5".to_string(), "create".to_string()),
            ("g6".to_string(), "modify".to_string())
        ]
    );
    assert!(store.record(run, &[]).is_ok());
}

fn runs_begin_and_finish<S: Backend>(store: &mut S) {
    let first = store.begin_run(RunMode::Sync).expect("begin");
    let second = store.begin_run(RunMode::PlanFull).expect("begin");
    assert!(second > first, "run ids grow: {first}, {second}");
    let started = store.run_of(second).expect("run");
    assert_eq!(started.mode, "plan-full");
    assert_eq!((started.status, started.finished_at), (None, None));
    store
        .finish_run(second, RunStatus::Partial, &json!({ "failed": 2 }))
        .expect("finish");
    let done = store.run_of(second).expect("run");
    assert_eq!(done.status.as_deref(), Some("partial"));
    assert_eq!(done.stats, Some(json!({ "failed": 2 })));
    assert!(done.finished_at.is_some());
    assert_eq!(store.run_of(first).expect("run").status, None);
    match store.finish_run(second + 1000, RunStatus::Ok, &json!({})) {
        Err(StateError::UnknownRun { run_id, .. }) => assert_eq!(run_id, second + 1000),
        other => panic!("expected an unknown run, got {other:?}"),
    }
    assert!(store.run_of(second + 1000).is_none());
}

fn the_quarantine_backs_off<S: CycleState>(store: &mut S) {
    let failed = BTreeMap::from([
        ("g1".to_string(), "AD said no".to_string()),
        ("g2".to_string(), "rule error".to_string()),
    ]);
    let seen = store
        .settle_quarantine(&[], &failed, 1000, 3600)
        .expect("settle");
    let summary: Vec<(String, Seen, u32, i64)> = seen
        .iter()
        .map(|(id, s, q)| (id.clone(), *s, q.failures, q.retry_at))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("g1".into(), Seen::New, 1, 1060),
            ("g2".into(), Seen::New, 1, 1060)
        ]
    );
    let again = BTreeMap::from([
        ("g1".to_string(), "AD said no".to_string()),
        ("g2".to_string(), "another error".to_string()),
    ]);
    let seen = store
        .settle_quarantine(&[], &again, 1100, 3600)
        .expect("settle");
    let summary: Vec<(String, Seen, u32, i64)> = seen
        .iter()
        .map(|(id, s, q)| (id.clone(), *s, q.failures, q.retry_at))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("g1".into(), Seen::Repeated, 2, 1220),
            ("g2".into(), Seen::Changed, 1, 1160)
        ]
    );
    assert_eq!(store.quarantine_count().expect("count"), 2);
    assert!(store.quarantine_due(1159).expect("due").is_empty());
    assert_eq!(store.quarantine_due(1160).expect("due"), set(&["g2"]));
    assert_eq!(store.quarantine_due(1220).expect("due"), set(&["g1", "g2"]));
    let all = store.quarantined().expect("all");
    assert_eq!(all["g2"].error, "another error");
    assert!(all["g1"].first_at <= all["g1"].last_at);

    // g2 went through; g3 fails in the same settlement; the cap holds.
    let third = BTreeMap::from([("g3".to_string(), "x".to_string())]);
    let seen = store
        .settle_quarantine(&ids(&["g2"]), &third, 2000, 30)
        .expect("settle");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].2.retry_at, 2030);
    assert_eq!(
        store
            .quarantined()
            .expect("all")
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        ids(&["g1", "g3"])
    );
    assert_eq!(store.quarantine_count().expect("count"), 2);
}

fn held_deletes_and_removals_are_replaced<S: CycleState>(store: &mut S) {
    let held = |id: &str, approved: bool| HeldDelete {
        cloud_id: id.to_string(),
        dn: format!("CN={id}"),
        approved,
        held_at: String::new(),
    };
    store
        .replace_held(&[held("g1", false), held("g2", true)])
        .expect("hold");
    let first = store.held_deletes().expect("held");
    assert_eq!(
        first.keys().cloned().collect::<Vec<_>>(),
        ids(&["g1", "g2"])
    );
    assert!(!first["g1"].approved && first["g2"].approved);
    assert!(!first["g1"].held_at.is_empty());
    std::thread::sleep(Duration::from_millis(20));
    store
        .replace_held(&[held("g1", false), held("g3", false)])
        .expect("hold again");
    let second = store.held_deletes().expect("held");
    assert_eq!(
        second.keys().cloned().collect::<Vec<_>>(),
        ids(&["g1", "g3"])
    );
    // A delete held before keeps the time it was first held.
    assert_eq!(second["g1"].held_at, first["g1"].held_at);
    assert!(second["g3"].held_at > first["g1"].held_at);
    store.replace_held(&[]).expect("clear");
    assert!(store.held_deletes().expect("held").is_empty());

    let removal = |id: &str, hash: &str, approved: bool| HeldRemovalRow {
        cloud_id: id.to_string(),
        dn: format!("CN={id}"),
        removals: 40,
        members: 50,
        removal_hash: hash.to_string(),
        approved,
        held_at: String::new(),
    };
    assert_eq!(store.waiting_removals().expect("waiting"), None);
    store
        .replace_held_removals(&[removal("g1", "h1", false), removal("g2", "h2", false)])
        .expect("hold removals");
    let (set_id, n) = store
        .waiting_removals()
        .expect("waiting")
        .expect("a set waits");
    assert_eq!(n, 2);
    assert_eq!(set_id.len(), 12);
    assert!(store.approved_removals().expect("approved").is_empty());
    // The operator approved g1's set; held again with the same fingerprint, it stays approved;
    // g2's set changed and waits again.
    store
        .replace_held_removals(&[removal("g1", "h1", true), removal("g2", "h2", false)])
        .expect("approve g1");
    store
        .replace_held_removals(&[removal("g1", "h1", false), removal("g2", "h2b", false)])
        .expect("hold again");
    assert_eq!(
        store.approved_removals().expect("approved"),
        BTreeMap::from([("g1".into(), "h1".into())])
    );
    let (other_id, n) = store
        .waiting_removals()
        .expect("waiting")
        .expect("a set waits");
    assert_eq!(n, 1);
    assert_ne!(other_id, set_id);
}

fn the_outbox_delivers_once<S: CycleState>(store: &mut S) {
    let run = store.begin_run(RunMode::Sync).expect("begin");
    let call = |key: &str| NewCall {
        key: key.to_string(),
        rule: "rules.rhai".to_string(),
        hook: "on_created".to_string(),
        cloud_id: "g1".to_string(),
        event_json: json!({ "key": key }).to_string(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(!store.any_call_due(now + 60).expect("due"));
    store
        .record(
            run,
            &[
                Write::Enqueue(call("k1")),
                Write::Enqueue(call("k2")),
                Write::Enqueue(call("k1")),
                Write::Enqueue(call("k3")),
            ],
        )
        .expect("enqueue");
    assert!(!store.any_call_due(now - 60).expect("due"));
    assert!(store.any_call_due(now + 60).expect("due"));
    let due = store.calls_due(now + 60, 10).expect("due");
    assert_eq!(
        due.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(),
        vec!["k1", "k2", "k3"]
    );
    assert!(due
        .iter()
        .all(|c| c.attempts == 0 && c.last_error.is_none()));
    assert_eq!(
        store.calls_due(now + 60, 1).expect("due")[0].key,
        "k1".to_string()
    );
    assert_eq!(
        store.call_counts().expect("counts"),
        OutboxCounts {
            pending: 3,
            retrying: 0,
            given_up: 0
        }
    );
    let (k1, k2, k3) = (due[0].id, due[1].id, due[2].id);
    store.settle_call(k1, Ok(())).expect("delivered");
    store
        .settle_call(k2, Err(("503", Some(now + 600))))
        .expect("retry later");
    store
        .record(run, &[Write::CallFailed(k3, "refused".into(), None)])
        .expect("give up");
    assert_eq!(
        store.call_counts().expect("counts"),
        OutboxCounts {
            pending: 0,
            retrying: 1,
            given_up: 1
        }
    );
    assert!(store.calls_due(now + 60, 10).expect("due").is_empty());
    let later = store.calls_due(now + 600, 10).expect("due");
    assert_eq!(later.len(), 1);
    assert_eq!(
        (
            later[0].id,
            later[0].attempts,
            later[0].last_error.as_deref()
        ),
        (k2, 1, Some("503"))
    );
    store
        .record(run, &[Write::CallDelivered(k2)])
        .expect("delivered");
    assert_eq!(
        store.call_counts().expect("counts"),
        OutboxCounts {
            pending: 0,
            retrying: 0,
            given_up: 1
        }
    );
}

fn unresolved_members_add_up<S: Backend>(store: &mut S) {
    let run = store.begin_run(RunMode::Sync).expect("begin");
    store
        .record(
            run,
            &[
                Write::PutAnchor(anchor("g1", "guid-1")),
                Write::PutAnchor(anchor("g2", "guid-2")),
                Write::Unresolved("g1".into(), ids(&["m1", "m2"])),
                // Set twice in one batch: the last set counts.
                Write::Unresolved("g2".into(), ids(&["m8", "m7"])),
                Write::Unresolved("g2".into(), ids(&["m9"])),
                // Not managed: not counted.
                Write::Unresolved("g5".into(), ids(&["m5"])),
            ],
        )
        .expect("record");
    assert_eq!(
        store.unresolved(),
        UnresolvedTotal {
            members: 3,
            groups: 2
        }
    );
    store
        .record(
            run,
            &[
                Write::UnresolvedEdit {
                    group: "g1".into(),
                    add: ids(&["m3", "m2"]),
                    remove: ids(&["m1"]),
                },
                Write::Unresolved("g2".into(), vec![]),
            ],
        )
        .expect("record");
    assert_eq!(
        store.unresolved(),
        UnresolvedTotal {
            members: 2,
            groups: 1
        }
    );
    // A group leaving is not counted.
    store
        .settle_leaving(&BTreeMap::from([(
            "g1".to_string(),
            Some(Leaving {
                since: 10,
                delete_at: None,
            }),
        )]))
        .expect("leaving");
    assert_eq!(store.unresolved(), UnresolvedTotal::default());
}

fn leaving_groups_are_due_and_forgotten<S: CycleState>(store: &mut S) {
    let run = store.begin_run(RunMode::Sync).expect("begin");
    store
        .record(
            run,
            &[
                Write::PutAnchor(anchor("g1", "guid-1")),
                Write::PutAnchor(anchor("g2", "guid-2")),
            ],
        )
        .expect("anchors");
    let leave = |since, delete_at| Some(Leaving { since, delete_at });
    store
        .settle_leaving(&BTreeMap::from([
            ("g1".to_string(), leave(10, Some(100))),
            ("g2".to_string(), leave(20, None)),
            // Not owned: forgotten at once.
            ("g3".to_string(), leave(30, Some(50))),
        ]))
        .expect("leaving");
    let all = store.leaving().expect("leaving");
    assert_eq!(all.keys().cloned().collect::<Vec<_>>(), ids(&["g1", "g2"]));
    assert_eq!(
        all["g2"],
        Leaving {
            since: 20,
            delete_at: None
        }
    );
    assert!(store.leaving_due(99).expect("due").is_empty());
    assert_eq!(store.leaving_due(100).expect("due"), set(&["g1"]));
    store
        .settle_leaving(&BTreeMap::from([("g1".to_string(), None)]))
        .expect("back");
    assert_eq!(
        store
            .leaving()
            .expect("leaving")
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        ids(&["g2"])
    );
    assert!(store.released().expect("released").is_empty());
    store.unrelease(&ids(&["g2"])).expect("unrelease nothing");
    assert_eq!(store.anchor_count().expect("count"), 2);
}

fn a_held_set_is_approved_by_its_id_once<S: Backend>(store: &mut S) {
    let held = |id: &str| HeldDelete {
        cloud_id: id.to_string(),
        dn: format!("CN={id}"),
        approved: false,
        held_at: String::new(),
    };
    let removal = |id: &str| HeldRemovalRow {
        cloud_id: id.to_string(),
        dn: format!("CN={id}"),
        removals: 40,
        members: 50,
        removal_hash: format!("h-{id}"),
        approved: false,
        held_at: String::new(),
    };
    match store.approve("0123456789ab") {
        Err(StateError::NoSuchHeldSet { waiting: None, .. }) => {}
        other => panic!("approved with nothing held: {other:?}"),
    }
    store
        .replace_held(&[held("g1"), held("g2")])
        .expect("hold deletes");
    store
        .replace_held_removals(&[removal("g3")])
        .expect("hold removals");
    let (removals, _) = store
        .waiting_removals()
        .expect("waiting")
        .expect("removals wait");
    // The wrong id names both sets that wait, and approves nothing.
    let wrong = store.approve("0123456789ab").map_err(|e| e.to_string());
    let text = wrong.expect_err("a wrong id is refused");
    assert!(
        text.contains("(2 deletes), or ")
            && text.contains(&format!("{removals} (member removals of 1 groups)")),
        "{text}"
    );
    assert!(store
        .held_deletes()
        .expect("held")
        .values()
        .all(|h| !h.approved));
    assert!(store.approved_removals().expect("approved").is_empty());

    assert_eq!(
        store.approve(&removals).expect("approve removals"),
        (Approved::MemberRemovals, 1)
    );
    assert_eq!(
        store.approved_removals().expect("approved"),
        BTreeMap::from([("g3".to_string(), "h-g3".to_string())])
    );
    assert_eq!(store.waiting_removals().expect("waiting"), None);
    // The deletes' id is the SQLite store's (`held::set_id` of the cloud ids).
    let deletes = writeback::state::held_set_id(["g2", "g1"]);
    assert_eq!(
        store.approve(&deletes).expect("approve deletes"),
        (Approved::Deletes, 2)
    );
    assert!(store
        .held_deletes()
        .expect("held")
        .values()
        .all(|h| h.approved));
    // Once: nothing waits any more.
    match store.approve(&deletes) {
        Err(StateError::NoSuchHeldSet { waiting: None, .. }) => {}
        other => panic!("approved twice: {other:?}"),
    }
}

fn released_groups_are_forgotten_and_audited<S: Backend>(store: &mut S) {
    let run = store.begin_run(RunMode::Sync).expect("begin");
    store
        .record(
            run,
            &[
                Write::PutAnchor(anchor("g1", "guid-1")),
                Write::PutApplied("g1".into(), "hash-1".into()),
                Write::PutIntent("g1".into(), "CN=g1,OU=Groups,DC=example,DC=test".into()),
                Write::PutAnchor(anchor("g2", "guid-2")),
            ],
        )
        .expect("anchors");
    store
        .settle_leaving(&BTreeMap::from([(
            "g1".to_string(),
            Some(Leaving {
                since: 10,
                delete_at: None,
            }),
        )]))
        .expect("leaving");
    let g1 = store.anchor("g1").expect("read").expect("g1 anchored");

    let release = store.begin_run(RunMode::Release).expect("begin release");
    store.release_groups(release, std::slice::from_ref(&g1));
    store
        .finish_run(release, RunStatus::Ok, &json!({ "released": 1 }))
        .expect("finish release");

    assert_eq!(store.anchor_ids().expect("anchors"), set(&["g2"]));
    assert_eq!(store.applied_hash("g1").expect("applied"), None);
    assert_eq!(store.intent("g1").expect("intent"), None);
    assert!(store.leaving().expect("leaving").is_empty());
    let released = store.released().expect("released");
    assert_eq!(released.keys().cloned().collect::<Vec<_>>(), ids(&["g1"]));
    assert_eq!(released["g1"].object_guid, "guid-1");
    assert_eq!(released["g1"].dn, g1.dn);
    let events = store.events_of(release);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event.action, "release");
    assert_eq!(events[0].event.cloud_id, "g1");
    assert_eq!(events[0].event.detail["object_guid"], json!("guid-1"));
    let run = store.run_of(release).expect("the release run");
    assert_eq!(run.mode, "release");
    assert_eq!(run.status.as_deref(), Some("ok"));
    // Taken back (adopt): the release is forgotten.
    store.unrelease(&ids(&["g1"])).expect("unrelease");
    assert!(store.released().expect("released").is_empty());
}

fn cached_groups_are_found_by_name<S: Backend>(store: &mut S) {
    let mut progress = RoundProgress::new(true);
    store
        .apply_round_chunk(
            ObjectKind::Group,
            &chunk(vec![
                item("g1", "Sales", &[]),
                item("g2", "SALES", &[]),
                item("g3", " Sales Team ", &[]),
                item("g4", "Salé", &[]),
                item("g5", "SALÉ", &[]),
            ]),
            &mut progress,
        )
        .expect("groups");
    // The exact spelling, then ignoring case, then also ignoring surrounding spaces; the
    // case of ASCII letters only, as SQLite's NOCASE.
    assert_eq!(store.groups_named("Sales"), ids(&["g1"]));
    assert_eq!(store.groups_named("sales"), ids(&["g1", "g2"]));
    assert_eq!(store.groups_named("Sales Team"), ids(&["g3"]));
    assert_eq!(store.groups_named("sales team"), ids(&["g3"]));
    assert_eq!(store.groups_named("salé"), ids(&["g4"]));
    assert_eq!(store.groups_named("SALÉ"), ids(&["g5"]));
    assert!(store.groups_named("Nobody").is_empty());
}

// --- PostgreSQL only ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_write_is_refused_once_another_instance_took_the_lease() {
    let pg = PgTestbed::load();
    let s = settings(&pg, &pg.fresh_database("state_fence"));
    // Long enough for a to open the store and write before it expires on a busy machine.
    let lease = Duration::from_secs(3);
    let open_lease = |name: &'static str| {
        let s = s.clone();
        async move {
            let client = pg::connect(&s).await.expect("connect");
            PgLease::open(Arc::new(client), name.to_string(), LeaseTimes::new(lease))
                .await
                .expect("open the lease")
        }
    };
    let a = open_lease("a").await;
    let b = open_lease("b").await;
    let epoch_a = match a.try_take().await.expect("a takes") {
        Takeover::Won { epoch, .. } => epoch,
        Takeover::Held(row) => panic!("{} holds the lease", row.holder),
    };
    let mut store_a = PgStore::open(
        pg::connect(&s).await.expect("connect"),
        Some(("a".to_string(), epoch_a)),
    )
    .expect("a opens the store");
    store_a.set_meta("writer", "a").expect("a writes");
    let run = store_a.begin_run(RunMode::Sync).expect("a begins a run");

    // a stops renewing; after the expiry b takes over.
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    let epoch_b = match b.try_take().await.expect("b takes") {
        Takeover::Won { epoch, .. } => epoch,
        Takeover::Held(row) => panic!("{} still holds the lease", row.holder),
    };
    assert_eq!(epoch_b, epoch_a + 1);

    match store_a.set_meta("writer", "a again") {
        Err(StateError::Lease(HaError::Fenced { epoch })) => assert_eq!(epoch, epoch_a),
        other => panic!("a wrote after losing the lease: {other:?}"),
    }
    let batch = store_a.record(
        run,
        &[
            Write::PutAnchor(anchor("g1", "guid-1")),
            Write::Event(event("g1", "create")),
        ],
    );
    assert!(
        matches!(batch, Err(StateError::Lease(HaError::Fenced { .. }))),
        "{batch:?}"
    );
    // Reads need no lease.
    assert_eq!(store_a.meta("writer").expect("read").as_deref(), Some("a"));
    assert_eq!(store_a.anchor_count().expect("count"), 0);

    let mut store_b = PgStore::open(
        pg::connect(&s).await.expect("connect"),
        Some(("b".to_string(), epoch_b)),
    )
    .expect("b opens the store");
    store_b.set_meta("writer", "b").expect("b writes");
    assert_eq!(store_a.meta("writer").expect("read").as_deref(), Some("b"));
    // An old epoch of b's own is fenced too.
    // An old epoch of b's own is fenced too: opening is a write transaction as well.
    let stale = PgStore::open(
        pg::connect(&s).await.expect("connect"),
        Some(("b".to_string(), epoch_a)),
    );
    assert!(
        matches!(stale, Err(StateError::Lease(HaError::Fenced { .. }))),
        "a stale epoch opened the store"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_schema_is_refused_and_the_current_one_kept() {
    let pg = PgTestbed::load();
    let database = pg.fresh_database("state_schema");
    let s = settings(&pg, &database);
    let mut store = PgStore::open(pg::connect(&s).await.expect("connect"), None).expect("create");
    assert_eq!(store.schema_version().expect("version"), Some(13));
    assert_eq!(
        writeback::state::pg::SCHEMA_VERSION,
        writeback::state::SCHEMA_VERSION
    );
    store.set_meta("kept", "yes").expect("write");
    drop(store);

    // Opened again: the schema is there, the data too.
    let again = PgStore::open(pg::connect(&s).await.expect("connect"), None).expect("reopen");
    assert_eq!(again.meta("kept").expect("read").as_deref(), Some("yes"));
    drop(again);

    pg.query(&database, "UPDATE writeback_schema SET version = 14");
    match PgStore::open(pg::connect(&s).await.expect("connect"), None) {
        Err(e @ StateError::PgNewerSchema { .. }) => {
            assert!(
                matches!(
                    e,
                    StateError::PgNewerSchema {
                        found: 14,
                        supported: 13
                    }
                ),
                "{e:?}"
            );
            let text = e.to_string();
            assert!(text.contains("14") && text.contains("13"), "{text}");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a newer schema was opened"),
    }
    // Refused without a change: the version is still the newer one.
    assert_eq!(
        pg.query(&database, "SELECT version FROM writeback_schema")
            .trim(),
        "14"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_12_database_is_migrated_with_its_groups_member_digests() {
    let pg = PgTestbed::load();
    let database = pg.fresh_database("state_schema_12");
    let s = settings(&pg, &database);
    let mut store = PgStore::open(pg::connect(&s).await.expect("connect"), None).expect("create");
    let mut progress = first_round(&mut store);
    store
        .finish_round(ObjectKind::Group, "L1", "id", &mut progress)
        .expect("finish");
    drop(store);
    // What a build of schema version 12 left: no digests.
    pg.query(
        &database,
        "ALTER TABLE cloud_object DROP COLUMN member_digest, DROP COLUMN member_count;
         UPDATE writeback_schema SET version = 12",
    );
    let store = PgStore::open(pg::connect(&s).await.expect("connect"), None).expect("migrate");
    assert_eq!(store.schema_version().expect("version"), Some(13));
    digests_match(&store, &["g1", "g2", "g3"]);
    let heads = store
        .load_heads(ids(&["g1", "g2", "g3"]).iter())
        .expect("heads");
    assert_eq!(heads.len(), 3, "every group has its digest");
    assert_eq!(heads["g1"].digest, MemberDigest::of(["u1", "u2"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_refuses_the_current_thread_runtime() {
    let pg = PgTestbed::load();
    let s = settings(&pg, &pg.fresh_database("state_runtime"));
    let refused = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let client = pg::connect(&s).await.expect("connect");
            PgStore::open(client, None).err().map(|e| e.to_string())
        })
    })
    .join()
    .expect("join");
    let text = refused.expect("refused");
    assert!(text.contains("multi-thread"), "{text}");
}

/// Every table, column and index of the SQLite store at this schema version is in the
/// PostgreSQL schema under the same name, and nothing else but the version row's table.
#[tokio::test(flavor = "multi_thread")]
async fn the_postgres_schema_has_the_sqlite_stores_tables_columns_and_indexes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state.db");
    drop(Store::open(&path).expect("create the SQLite store"));
    let conn = rusqlite::Connection::open(&path).expect("open with rusqlite");
    let mut stmt = conn
        .prepare(
            "SELECT m.name || '.' || p.name FROM sqlite_master m, pragma_table_info(m.name) p
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
        )
        .expect("prepare");
    let sqlite_columns: BTreeSet<String> = stmt
        .query_map([], |r| r.get(0))
        .expect("columns")
        .collect::<Result<_, _>>()
        .expect("columns");
    let mut stmt = conn
        .prepare(
            "SELECT name FROM sqlite_master
             WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex_%'",
        )
        .expect("prepare");
    let sqlite_indexes: BTreeSet<String> = stmt
        .query_map([], |r| r.get(0))
        .expect("indexes")
        .collect::<Result<_, _>>()
        .expect("indexes");
    assert!(sqlite_columns.contains("cloud_object.props_json"));
    assert!(sqlite_indexes.contains("anchor_object_guid"));

    let pg = PgTestbed::load();
    let database = pg.fresh_database("state_tables");
    let store = PgStore::open(
        pg::connect(&settings(&pg, &database))
            .await
            .expect("connect"),
        None,
    )
    .expect("create");
    drop(store);
    let lines = |sql: &str| -> BTreeSet<String> {
        pg.query(&database, sql)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    let pg_columns = lines(
        "SELECT table_name || '.' || column_name FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name <> 'writeback_schema'",
    );
    // Primary keys and UNIQUE constraints are named by PostgreSQL, as SQLite's automatic
    // indexes are by SQLite.
    let pg_indexes = lines(
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'
         AND indexname NOT LIKE '%_pkey' AND indexname NOT LIKE '%_key'",
    );
    assert_eq!(pg_columns, sqlite_columns);
    assert_eq!(pg_indexes, sqlite_indexes);
}

// --- the cycle lock: approve and release between the writer's cycles ------------------------

/// Takes the lease for `name` on `s` (a lease of `lease`, never renewed here): its epoch.
async fn take_lease(s: &PgSettings, name: &str, lease: Duration) -> i64 {
    let client = pg::connect(s).await.expect("connect");
    let l = PgLease::open(Arc::new(client), name.to_string(), LeaseTimes::new(lease))
        .await
        .expect("open the lease");
    match l.try_take().await.expect("take the lease") {
        Takeover::Won { epoch, .. } => epoch,
        Takeover::Held(row) => panic!("{} holds the lease", row.holder),
    }
}

/// A writer's store, fenced with `name` at `epoch`.
async fn writer_store(s: &PgSettings, name: &str, epoch: i64) -> PgStore {
    PgStore::open(
        pg::connect(s).await.expect("connect"),
        Some((name.to_string(), epoch)),
    )
    .expect("open the store")
}

/// `[state.postgres]` of instance `name` on `s`.
fn shared(s: &PgSettings, name: &str) -> PostgresConfig {
    PostgresConfig {
        settings: s.clone(),
        instance: name.to_string(),
        times: LeaseTimes::new(Duration::from_secs(10)),
        standby_poll: Duration::from_secs(1),
    }
}

/// `writeback approve <id>` as instance `name`, waiting at most `wait` for a cycle, on a task
/// of its own.
fn approve_between(
    s: &PgSettings,
    name: &str,
    id: &str,
    wait: Duration,
) -> tokio::task::JoinHandle<Result<(Approved, usize), BetweenError>> {
    let (config, id) = (shared(s, name), id.to_string());
    tokio::spawn(async move {
        let mut between = Between::open(&config, "approve", wait).await?;
        between.run(async |t, _| tx::approve_any(t, &id).await)
    })
}

fn hold_g1(store: &mut PgStore) -> String {
    store
        .replace_held(&[HeldDelete {
            cloud_id: "g1".into(),
            dn: "CN=g1".into(),
            approved: false,
            held_at: String::new(),
        }])
        .expect("hold a delete");
    writeback::state::held_set_id(["g1"])
}

fn approved_g1(store: &PgStore) -> bool {
    store.held_deletes().expect("held")["g1"].approved
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_waits_for_the_writers_cycle_and_is_made_when_it_ends() {
    let pg = PgTestbed::load();
    let s = settings(&pg, &pg.fresh_database("cycle_wait"));
    let epoch = take_lease(&s, "a", Duration::from_secs(60)).await;
    let mut a = writer_store(&s, "a", epoch).await;
    let set = hold_g1(&mut a);
    a.hold_cycles(Duration::from_secs(5)).expect("a's cycle");
    let started = std::time::Instant::now();
    let verb = approve_between(&s, "b", &set, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!verb.is_finished(), "approved while a cycle ran");
    assert!(!approved_g1(&a));
    a.let_go_cycles();
    let done = verb.await.expect("the verb's task");
    assert_eq!(done.expect("approved"), (Approved::Deletes, 1));
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert!(approved_g1(&a));
    // The next cycle takes the lock again at once: the verb let go when it committed.
    a.hold_cycles(Duration::from_secs(1))
        .expect("the next cycle");
    a.let_go_cycles();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verb_kept_waiting_too_long_names_the_cycle_and_changes_nothing() {
    let pg = PgTestbed::load();
    let empty = settings(&pg, &pg.fresh_database("cycle_empty"));
    match Between::open(&shared(&empty, "b"), "approve", Duration::from_secs(1)).await {
        Err(BetweenError::Empty) => {}
        Err(e) => panic!("a database without a state: {e}"),
        Ok(_) => panic!("a database without a state opened"),
    }
    let s = settings(&pg, &pg.fresh_database("cycle_busy"));
    let epoch = take_lease(&s, "a", Duration::from_secs(60)).await;
    let mut a = writer_store(&s, "a", epoch).await;
    let set = hold_g1(&mut a);
    a.hold_cycles(Duration::from_secs(5)).expect("a's cycle");
    let verb = approve_between(&s, "b", &set, Duration::from_secs(1));
    let err = verb
        .await
        .expect("the verb's task")
        .expect_err("approved while a cycle ran");
    let text = err.to_string();
    assert!(matches!(err, BetweenError::Busy(_)), "{text}");
    assert!(
        text.contains(&format!("lease epoch {epoch}"))
            && text.contains("\"writeback cycle of a\"")
            && text.contains("run the command again"),
        "{text}"
    );
    assert!(!approved_g1(&a));
    // A cycle kept waiting says who holds the lock as well.
    let mut other = writer_store(&s, "a", epoch).await;
    match other.hold_cycles(Duration::from_secs(1)) {
        Err(StateError::Lease(e @ HaError::CycleLockBusy { .. })) => {
            assert!(e.to_string().contains("writeback cycle of a"), "{e}")
        }
        other => panic!("two cycles at once: {other:?}"),
    }
    a.let_go_cycles();
    other
        .hold_cycles(Duration::from_secs(1))
        .expect("free again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deposed_writer_still_holding_its_cycle_lock_holds_up_no_one() {
    let pg = PgTestbed::load();
    let s = settings(&pg, &pg.fresh_database("cycle_deposed"));
    let lease = Duration::from_secs(2);
    let epoch_a = take_lease(&s, "a", lease).await;
    let mut a = writer_store(&s, "a", epoch_a).await;
    let set = hold_g1(&mut a);
    // a is paused mid-cycle, its session open: b takes over once the lease expired.
    a.hold_cycles(Duration::from_secs(5)).expect("a's cycle");
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    let epoch_b = take_lease(&s, "b", lease * 30).await;
    assert_eq!(epoch_b, epoch_a + 1);
    let mut b = writer_store(&s, "b", epoch_b).await;
    b.hold_cycles(Duration::from_secs(2))
        .expect("b's cycle does not wait for a's");
    b.let_go_cycles();
    let done = approve_between(&s, "c", &set, Duration::from_secs(5)).await;
    assert_eq!(
        done.expect("the verb's task").expect("approved"),
        (Approved::Deletes, 1)
    );
    assert!(approved_g1(&b));
    // a, waking, writes nothing: the lease fences it, not the lock.
    assert!(matches!(
        a.replace_held(&[]),
        Err(StateError::Lease(HaError::Fenced { .. }))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verb_that_waited_through_a_takeover_waits_for_the_new_writers_cycle() {
    let pg = PgTestbed::load();
    let s = settings(&pg, &pg.fresh_database("cycle_takeover"));
    let lease = Duration::from_secs(2);
    let epoch_a = take_lease(&s, "a", lease).await;
    let mut a = writer_store(&s, "a", epoch_a).await;
    let set = hold_g1(&mut a);
    a.hold_cycles(Duration::from_secs(5)).expect("a's cycle");
    let verb = approve_between(&s, "c", &set, Duration::from_secs(30));
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    let epoch_b = take_lease(&s, "b", lease * 30).await;
    let mut b = writer_store(&s, "b", epoch_b).await;
    b.hold_cycles(Duration::from_secs(5)).expect("b's cycle");
    // a's cycle ends: the verb, waiting on epoch a's lock, finds the lease moved on and
    // waits for b's cycle.
    a.let_go_cycles();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!verb.is_finished(), "approved during b's cycle");
    assert!(!approved_g1(&b));
    b.let_go_cycles();
    assert_eq!(
        verb.await.expect("the verb's task").expect("approved"),
        (Approved::Deletes, 1)
    );
    assert!(approved_g1(&b));
}
