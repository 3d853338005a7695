//! Whole cycles against the in-memory domain and tenant (`fakes`), one story each, compared
//! with a golden description in `sync/golden/<story>.txt`: what each cycle reported, wrote
//! to AD and to the cloud, and left in the state. `WRITEBACK_BLESS=1 cargo test -p writeback
//! cycle_tests` rewrites the files; a diff in review shows what a change of the cycle changed.
//! Each story also asserts its point directly, so a blessed mistake still fails.

use std::path::Path;

use super::fakes::{describe, Bed, Reads, COMPUTERS, M365, PEOPLE, SECURITY};
use super::types::Op;
use super::{SyncOptions, SyncReport};

/// Sids of the synced users.
const ADA: &str = "S-1-5-21-1000-2000-3000-1101";
const BOB: &str = "S-1-5-21-1000-2000-3000-1102";
const CY: &str = "S-1-5-21-1000-2000-3000-1103";

/// Cloud ids: groups g1.., users u1...
const G1: &str = "00000000-0000-4000-8000-0000000000a1";
const G2: &str = "00000000-0000-4000-8000-0000000000a2";
const G3: &str = "00000000-0000-4000-8000-0000000000a3";
const U1: &str = "00000000-0000-4000-8000-0000000000b1";
const U2: &str = "00000000-0000-4000-8000-0000000000b2";
const U3: &str = "00000000-0000-4000-8000-0000000000b3";
const U9: &str = "00000000-0000-4000-8000-0000000000b9";

/// A story's record: each step's description under its title.
struct Story {
    name: &'static str,
    text: String,
}

impl Story {
    fn new(name: &'static str) -> Story {
        Story {
            name,
            text: String::new(),
        }
    }

    /// Records a step; returns its AD writes.
    fn step(
        &mut self,
        title: &str,
        bed: &Bed,
        r: &Result<SyncReport, super::SyncError>,
    ) -> Vec<String> {
        let text = format!("== {title}\n{}\n", describe(bed, r));
        // Shown when the story fails: what happened up to the failing assertion.
        eprint!("{text}");
        self.text.push_str(&text);
        text.lines()
            .filter_map(|l| l.strip_prefix("AD: "))
            .map(str::to_string)
            .collect()
    }

    /// Compares with the golden file (or writes it with `WRITEBACK_BLESS=1`).
    fn check(self) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/sync/golden")
            .join(format!("{}.txt", self.name));
        if std::env::var_os("WRITEBACK_BLESS").is_some() {
            std::fs::write(&path, &self.text).expect("write golden file");
            return;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if want != self.text {
            let diff: Vec<String> = want
                .lines()
                .zip(self.text.lines())
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .take(5)
                .map(|(i, (a, b))| format!("line {}:\n  want: {a}\n  got:  {b}", i + 1))
                .collect();
            panic!(
                "{} differs from the cycle's description ({} lines want, {} got):\n{}\n--- got:\n{}\n(WRITEBACK_BLESS=1 rewrites it)",
                path.display(),
                want.lines().count(),
                self.text.lines().count(),
                diff.join("\n"),
                self.text
            );
        }
    }
}

/// Three synced users, a cloud-only one, two security groups and a Microsoft 365 group.
fn tenant(extra: &str) -> Bed {
    let bed = Bed::new(extra);
    bed.synced_user(U1, "Ada", ADA);
    bed.synced_user(U2, "Bob", BOB);
    bed.synced_user(U3, "Cy", CY);
    bed.cloud_user(U9, "Guest");
    bed.security_group(G1, "Finance", &[U1, U2, U9]);
    bed.security_group(G2, "Sales", &[U2]);
    bed.cloud.group(
        G3,
        serde_json::json!({
            "displayName": "Project X",
            "description": "The X team",
            "mail": "projectx@fake.test",
            "mailNickname": "projectx",
            "proxyAddresses": ["SMTP:projectx@fake.test"],
            "securityEnabled": false,
            "mailEnabled": true,
            "groupTypes": ["Unified"],
        }),
    );
    bed.cloud.add_members(G3, &[U1, U3]);
    bed
}

fn dn_of(bed: &Bed, id: &str) -> String {
    bed.store
        .anchor(id)
        .ok()
        .flatten()
        .map(|a| a.dn)
        .unwrap_or_default()
}

fn members_of(bed: &Bed, id: &str) -> Vec<String> {
    let dn = dn_of(bed, id);
    let mut m = bed
        .ad
        .get(&dn)
        .and_then(|e| e.attrs.get("member").cloned())
        .unwrap_or_default();
    m.sort();
    m
}

#[tokio::test]
async fn first_sync_creates_every_group_with_its_on_premises_members() {
    let mut story = Story::new("first_sync");
    let mut bed = tenant("");
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("first sync", &bed, &r);
    let r = r.expect("sync");
    assert_eq!((r.counts.create, r.counts.update), (3, 0));
    assert!(dn_of(&bed, G1).ends_with(SECURITY), "{}", dn_of(&bed, G1));
    assert!(dn_of(&bed, G3).ends_with(M365), "{}", dn_of(&bed, G3));
    assert_eq!(
        members_of(&bed, G1),
        [format!("CN=Ada,{PEOPLE}"), format!("CN=Bob,{PEOPLE}")]
    );
    // The cloud-only member is reported, never guessed.
    assert!(r
        .plan
        .unresolved_members
        .iter()
        .any(|u| u.group_id == G1 && u.member_id == U9));
    story.check();
}

#[tokio::test]
async fn an_idle_cycle_reads_the_delta_and_writes_nothing() {
    let mut story = Story::new("idle");
    let mut bed = tenant("");
    bed.sync().await;
    bed.ad.take_log();
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("second sync, nothing changed", &bed, &r);
    let r = r.expect("sync");
    assert_eq!(r.sweep, super::select::SweepKind::Idle);
    assert_eq!(r.counts.changes(), 0);
    assert!(bed.ad.take_log().is_empty());
    story.check();
}

/// A reconciliation: every owned group compared, as the daemon does on its schedule.
fn reconcile() -> SyncOptions {
    SyncOptions {
        compare_all: true,
        ..Default::default()
    }
}

/// The tenant synced once, its writes forgotten.
async fn synced(extra: &str) -> Bed {
    let mut bed = tenant(extra);
    let r = bed.sync().await;
    assert_eq!(r.failures(), 0, "first sync: {:?}", r.outcomes);
    bed.ad.take_log();
    bed
}

fn attr(bed: &Bed, id: &str, name: &str) -> Vec<String> {
    bed.ad
        .get(&dn_of(bed, id))
        .and_then(|e| e.attrs.get(&name.to_ascii_lowercase()).cloned())
        .unwrap_or_default()
}

#[tokio::test]
async fn one_cloud_change_becomes_one_modify_and_one_member_add() {
    let mut story = Story::new("one_change");
    let mut bed = synced("").await;
    bed.ad.take_reads();
    bed.cloud
        .group(G1, serde_json::json!({"description": "Finance, all of it"}));
    bed.cloud.add_members(G1, &[U3]);
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("description changed, Cy added", &bed, &r);
    let r = r.expect("sync");
    assert_eq!(
        (r.counts.create, r.counts.update, r.counts.delete),
        (0, 1, 0)
    );
    assert_eq!(attr(&bed, G1, "description"), ["Finance, all of it"]);
    assert!(members_of(&bed, G1).contains(&format!("CN=Cy,{PEOPLE}")));
    // The other groups were not looked at.
    assert_eq!(r.evaluated, 1);
    // A property changed with the members: the group is compared in full.
    assert_eq!(r.member_deltas, 0);
    assert_eq!(bed.ad.take_reads().member_lists, 1);
    story.check();
}

#[tokio::test]
async fn a_rename_in_the_cloud_renames_the_same_ad_object() {
    let mut story = Story::new("rename");
    let mut bed = synced("").await;
    let before = bed.ad.get(&dn_of(&bed, G2)).expect("Sales in AD");
    bed.cloud
        .group(G2, serde_json::json!({"displayName": "Sales EMEA"}));
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("Sales renamed Sales EMEA", &bed, &r);
    r.expect("sync");
    let after = bed.ad.get(&dn_of(&bed, G2)).expect("renamed group in AD");
    assert!(after.dn.starts_with("CN=Sales EMEA_"), "{}", after.dn);
    assert_eq!(after.guid, before.guid, "the same object, renamed");
    assert!(bed.ad.get(&before.dn).is_none(), "the old DN is gone");
    assert_eq!(attr(&bed, G2, "displayName"), ["Sales EMEA"]);
    story.check();
}

#[tokio::test]
async fn approved_deletes_are_named_in_the_report() {
    let mut bed = synced("[safety]\ndelete_threshold = 1\n").await;
    bed.cloud.delete_group(G1);
    bed.cloud.delete_group(G2);
    let r = bed.cycle(SyncOptions::default()).await.expect("sync");
    assert!(r.approved_deletes.is_empty(), "{:?}", r.approved_deletes);
    let set = r.held.expect("held").set_id;
    bed.store.approve_any(&set).expect("approve");
    let r = bed.cycle(SyncOptions::default()).await.expect("sync");
    assert_eq!(r.approved_deletes, [G1, G2]);
    let deleted: Vec<&str> = r
        .outcomes
        .iter()
        .filter(|o| o.action == super::apply::Action::Delete && o.ok())
        .map(|o| o.cloud_id.as_str())
        .collect();
    assert_eq!(deleted, [G1, G2]);
}

#[tokio::test]
async fn deletes_over_the_threshold_are_held_until_allowed() {
    let mut story = Story::new("delete_held");
    let mut bed = synced("[safety]\ndelete_threshold = 1\n").await;
    let (finance, sales) = (dn_of(&bed, G1), dn_of(&bed, G2));
    bed.cloud.delete_group(G1);
    bed.cloud.delete_group(G2);
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("two groups deleted in the cloud, threshold 1", &bed, &r);
    let r = r.expect("sync");
    let held: Vec<&str> = r
        .held
        .iter()
        .flat_map(|h| &h.deletes)
        .map(|d| d.cloud_id.as_str())
        .collect();
    assert_eq!(held, [G1, G2]);
    assert!(
        bed.ad.get(&finance).is_some() && bed.ad.get(&sales).is_some(),
        "a held delete was applied"
    );
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("next cycle: still held", &bed, &r);
    assert!(
        bed.ad.get(&finance).is_some() && bed.ad.get(&sales).is_some(),
        "a held delete was applied"
    );
    let r = bed
        .cycle(SyncOptions {
            allow_deletes: true,
            ..Default::default()
        })
        .await;
    story.step("sync --allow-deletes", &bed, &r);
    r.expect("sync");
    assert!(bed.ad.get(&finance).is_none() && bed.ad.get(&sales).is_none());
    assert!(bed.store.held_deletes().expect("held").is_empty());
    assert!(bed.store.anchor(G1).expect("anchor").is_none());
    story.check();
}

#[tokio::test]
async fn a_delete_under_the_threshold_goes_through() {
    let mut story = Story::new("delete");
    let mut bed = synced("").await;
    let sales = dn_of(&bed, G2);
    bed.cloud.delete_group(G2);
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("Sales deleted in the cloud", &bed, &r);
    assert_eq!(r.expect("sync").counts.delete, 1);
    assert!(bed.ad.get(&sales).is_none());
    story.check();
}

#[tokio::test]
async fn a_refused_write_quarantines_the_group_and_its_next_change_retries_it() {
    let mut story = Story::new("quarantine");
    let mut bed = synced("").await;
    bed.ad.refuse_writes_to("CN=Sales_", 19);
    bed.cloud
        .group(G2, serde_json::json!({"description": "Sales, all regions"}));
    bed.cloud
        .group(G1, serde_json::json!({"description": "Finance, all of it"}));
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("the DC refuses writes to Sales", &bed, &r);
    let r = r.expect("sync");
    assert_eq!(r.failures(), 1);
    assert_eq!(
        attr(&bed, G1, "description"),
        ["Finance, all of it"],
        "the other group went through"
    );
    assert!(bed.store.quarantined().expect("q").contains_key(G2));
    bed.ad.recover();
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("the DC takes writes again; the wait is not over", &bed, &r);
    assert_eq!(r.expect("sync").examined, 0);
    assert_eq!(attr(&bed, G2, "description"), ["Sales (cloud)"]);
    bed.cloud
        .group(G2, serde_json::json!({"description": "Sales, worldwide"}));
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("Sales changes again: tried at once", &bed, &r);
    assert_eq!(r.expect("sync").failures(), 0);
    assert_eq!(attr(&bed, G2, "description"), ["Sales, worldwide"]);
    assert!(bed.store.quarantined().expect("q").is_empty());
    story.check();
}

#[tokio::test]
async fn a_rule_edit_rewrites_only_the_groups_it_changes() {
    let mut story = Story::new("rule_edit");
    let mut bed = synced("").await;
    bed.edit_rule(
        "20-security.rhai",
        "description: naming::left(description, global::MAX_DESCRIPTION),",
        "description: \"Synced: \" + naming::left(description, global::MAX_DESCRIPTION),",
    );
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("the security rule prefixes descriptions", &bed, &r);
    let r = r.expect("sync");
    assert_eq!((r.counts.create, r.counts.update), (0, 2));
    assert_eq!(attr(&bed, G1, "description"), ["Synced: Finance (cloud)"]);
    assert_eq!(attr(&bed, G3, "description"), ["The X team"]);
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("next cycle", &bed, &r);
    assert_eq!(r.expect("sync").sweep, super::select::SweepKind::Idle);
    story.check();
}

#[tokio::test]
async fn a_reconciliation_undoes_a_hand_edit_a_plain_sync_does_not_see() {
    let mut story = Story::new("reconcile");
    let mut bed = synced("").await;
    bed.ad
        .hand_edit(&dn_of(&bed, G1), "description", &["edited by hand"]);
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("a hand edit in AD; plain sync", &bed, &r);
    assert_eq!(r.expect("sync").counts.changes(), 0);
    assert_eq!(attr(&bed, G1, "description"), ["edited by hand"]);
    let r = bed.cycle(reconcile()).await;
    story.step(
        "reconciliation (every owned group compared, as the daemon does hourly)",
        &bed,
        &r,
    );
    assert_eq!(r.expect("sync").counts.update, 1);
    assert_eq!(attr(&bed, G1, "description"), ["Finance (cloud)"]);
    story.check();
}

#[tokio::test]
async fn an_object_with_our_anchor_that_writeback_did_not_make_is_left_alone() {
    let mut story = Story::new("foreign");
    let mut bed = tenant("");
    let anchor = super::types::anchor_value(G2);
    let theirs = format!("CN=Sales (made by hand),{SECURITY}");
    bed.ad.put(
        &theirs,
        &[
            ("objectClass", &["group"]),
            ("adminDescription", &[anchor.as_str()]),
            ("description", &["someone else's"]),
        ],
    );
    let r = bed.cycle(SyncOptions::default()).await;
    story.step(
        "first sync; Sales' anchor is on an object nobody recorded",
        &bed,
        &r,
    );
    let r = r.expect("sync");
    assert_eq!(r.foreign.unrecorded, 1, "{:?}", r.foreign);
    assert!(r
        .plan
        .refused
        .iter()
        .any(|f| f.cloud_id == G2 && f.reason.contains("no record")));
    assert_eq!(r.counts.create, 2, "no second Sales beside theirs");
    let after = bed.ad.get(&theirs).expect("theirs still there");
    assert_eq!(
        after.attrs.get("description"),
        Some(&vec!["someone else's".to_string()])
    );
    assert!(bed
        .ad
        .take_log()
        .iter()
        .all(|l| !l.contains("made by hand")));
    story.check();
}

#[tokio::test]
async fn a_dc_lost_mid_apply_fails_the_cycle_and_the_next_one_finishes_without_duplicates() {
    let mut story = Story::new("dc_failure");
    let mut bed = tenant("");
    bed.ad.fail_after_writes(1);
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("first sync; the DC goes away after one write", &bed, &r);
    // The adds after the loss fail as transport errors (the add may have landed: the
    // group is looked for by its anchor next time, never added twice).
    let failed: Vec<&str> = r
        .as_ref()
        .expect("the cycle reports per group")
        .outcomes
        .iter()
        .filter(|o| !o.ok())
        .map(|o| o.cloud_id.as_str())
        .collect();
    assert_eq!(failed, [G2, G3], "a lost DC must not look like success");
    bed.ad.recover();
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("the DC is back", &bed, &r);
    assert_eq!(r.expect("sync").failures(), 0);
    let r = bed.cycle(reconcile()).await;
    story.step("reconciliation: nothing left to do", &bed, &r);
    assert_eq!(r.expect("sync").counts.changes(), 0);
    for id in [G1, G2, G3] {
        assert!(bed.ad.get(&dn_of(&bed, id)).is_some(), "{id} in AD");
    }
    let groups = bed.ad.group_count();
    assert_eq!(groups, 3, "each group exactly once");
    story.check();
}

#[tokio::test]
async fn a_plan_shows_the_changes_and_writes_nothing() {
    let mut story = Story::new("plan");
    let mut bed = tenant("");
    let r = bed
        .cycle(SyncOptions {
            dry_run: true,
            ..Default::default()
        })
        .await;
    story.step("plan before the first sync", &bed, &r);
    let r = r.expect("plan");
    assert_eq!(r.plan.changes.len(), 3);
    assert!(bed.ad.take_log().is_empty());
    assert!(bed.store.anchors().expect("anchors").is_empty());
    story.check();
}

#[tokio::test]
async fn a_member_removed_in_the_cloud_is_removed_in_ad_alone() {
    let mut story = Story::new("member_removed");
    let mut bed = synced("").await;
    bed.ad.take_reads();
    bed.cloud.remove_members(G1, &[U2]);
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("Bob leaves Finance", &bed, &r);
    let r = r.expect("sync");
    assert_eq!(r.counts.update, 1);
    assert_eq!(r.member_deltas, 1);
    // Only Bob was looked up; Finance's member list was not read.
    assert_eq!(
        bed.ad.take_reads(),
        Reads {
            member_lists: 0,
            join_values: 1,
            // The group itself, located by either anchor.
            anchor_terms: 2,
        }
    );
    assert_eq!(members_of(&bed, G1), [format!("CN=Ada,{PEOPLE}")]);
    assert_eq!(
        members_of(&bed, G2),
        [format!("CN=Bob,{PEOPLE}")],
        "Sales untouched"
    );
    story.check();
}

#[tokio::test]
async fn a_member_change_reads_no_member_of_the_group_unless_a_rule_looks_at_them() {
    let mut bed = synced("").await;
    bed.cloud.remove_members(G1, &[U2]);
    let (r, reads) = bed.cycle_watched(SyncOptions::default()).await;
    let r = r.expect("sync");
    assert_eq!((r.counts.update, r.member_deltas), (1, 1));
    // The rules, the hash and the modify came from the group's properties and digest.
    assert_eq!(reads.members, 0, "{reads:?}");
    assert_eq!(members_of(&bed, G1), [format!("CN=Ada,{PEOPLE}")]);

    // A rule that reads members: the group is read whole for it, and still written alone.
    bed.edit_rule(
        "20-security.rhai",
        "is_security(group) && !group.onPremisesSyncEnabled",
        "is_security(group) && !group.onPremisesSyncEnabled && group.members.len() < 1000",
    );
    let r = bed.cycle(SyncOptions::default()).await.expect("rule edit");
    assert_eq!(r.counts.changes(), 0, "the edit changes no decision");
    bed.cloud.add_members(G1, &[U2]);
    let (r, reads) = bed.cycle_watched(SyncOptions::default()).await;
    let r = r.expect("sync");
    assert_eq!((r.counts.update, r.member_deltas), (1, 1));
    assert!(reads.members >= 2, "read whole for the rule: {reads:?}");
    assert_eq!(
        members_of(&bed, G1),
        [format!("CN=Ada,{PEOPLE}"), format!("CN=Bob,{PEOPLE}")]
    );
    // And a reconciliation finds AD as the rules want it.
    let r = bed.cycle(reconcile()).await.expect("reconcile");
    assert_eq!(r.counts.changes(), 0);
}

#[tokio::test]
async fn owners_become_managed_by_when_a_rule_asks() {
    let mut story = Story::new("owners");
    let mut bed = synced("").await;
    bed.cloud.owners(G1, &[U2, U1]);
    bed.cloud.owners(G2, &[U9]);
    bed.edit_rule(
        "20-security.rhai",
        "members: \"on-premises\",",
        "members: \"on-premises\",\n        owners: \"managedBy\",",
    );
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("the security rule writes owners to managedBy", &bed, &r);
    let r = r.expect("sync");
    // The first owner by DN, whatever Graph's order; a cloud-only owner is reported.
    assert_eq!(attr(&bed, G1, "managedBy"), [format!("CN=Ada,{PEOPLE}")]);
    assert!(attr(&bed, G2, "managedBy").is_empty());
    assert!(r
        .plan
        .unresolved_members
        .iter()
        .any(|u| u.group_id == G2 && u.member_id == U9));
    story.check();
}

#[tokio::test]
async fn a_plan_tells_a_create_whose_name_another_object_holds() {
    let mut bed = tenant("");
    let dry = SyncOptions {
        dry_run: true,
        ..Default::default()
    };
    let r = bed.cycle(dry).await.expect("plan");
    let dn = r
        .plan
        .changes
        .iter()
        .find_map(|c| match &c.op {
            Op::Create { dn, .. } if c.cloud_id == G2 => Some(dn.clone()),
            _ => None,
        })
        .expect("Sales to create");
    // A hand-made group without an anchor, where Sales would go.
    bed.ad.put(&dn, &[("objectClass", &["group"])]);
    let r = bed.cycle(dry).await.expect("plan");
    assert!(
        r.plan.changes.iter().all(|c| c.cloud_id != G2),
        "no `+ create` that would fail: {:?}",
        r.plan.changes
    );
    let why = r
        .plan
        .refused
        .iter()
        .find(|f| f.cloud_id == G2)
        .map(|f| f.reason.clone())
        .unwrap_or_default();
    assert!(
        why.contains("the create would fail")
            && why.contains(&dn)
            && why.contains("writeback adopt"),
        "{why}"
    );
    assert_eq!(r.plan.changes.len(), 2, "the other creates are shown");
    assert!(bed.ad.take_log().is_empty(), "a plan writes nothing");
    // The sync tries and AD refuses it, as the plan said.
    let r = bed.cycle(SyncOptions::default()).await.expect("sync");
    let failed: Vec<&str> = r
        .outcomes
        .iter()
        .filter(|o| !o.ok())
        .map(|o| o.cloud_id.as_str())
        .collect();
    assert_eq!(failed, [G2]);
}

#[tokio::test]
async fn a_member_added_in_the_cloud_is_one_member_add_and_nothing_else_read() {
    let mut story = Story::new("member_delta_added");
    let mut bed = synced("").await;
    bed.ad.take_reads();
    bed.cloud.add_members(G1, &[U3]);
    let r = bed.cycle(SyncOptions::default()).await;
    let log = story.step("Cy joins Finance", &bed, &r);
    let r = r.expect("sync");
    assert_eq!((r.counts.update, r.member_deltas), (1, 1));
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].starts_with("add-members CN=Finance"), "{log:?}");
    assert!(log[0].ends_with(&format!("CN=Cy,{PEOPLE}")), "{log:?}");
    assert_eq!(
        bed.ad.take_reads(),
        Reads {
            member_lists: 0,
            join_values: 1,
            // The group itself, located by either anchor.
            anchor_terms: 2,
        }
    );
    // In step afterwards: the next cycle has nothing to do, and a reconciliation agrees.
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("idle", &bed, &r);
    assert_eq!(r.expect("sync").counts.changes(), 0);
    let r = bed.cycle(reconcile()).await;
    story.step("reconciliation", &bed, &r);
    assert_eq!(r.expect("reconcile").counts.changes(), 0);
    assert_eq!(
        members_of(&bed, G1),
        [
            format!("CN=Ada,{PEOPLE}"),
            format!("CN=Bob,{PEOPLE}"),
            format!("CN=Cy,{PEOPLE}")
        ]
    );
    story.check();
}

#[tokio::test]
async fn member_changes_spread_over_pages_with_the_group_repeated_are_merged() {
    let mut story = Story::new("member_delta_paged");
    let mut bed = synced("").await;
    bed.ad.take_reads();
    // One member change per entry, two entries a page: Finance's add and removal come in two
    // entries on two pages, Sales' change between them.
    bed.cloud.page(2, 1);
    bed.cloud.add_members(G1, &[U3]);
    bed.cloud.remove_members(G1, &[U2]);
    bed.cloud.add_members(G2, &[U1]);
    let r = bed.cycle(SyncOptions::default()).await;
    let log = story.step("Cy in and Bob out of Finance, Ada into Sales", &bed, &r);
    let r = r.expect("sync");
    assert_eq!((r.counts.update, r.member_deltas), (2, 2));
    // One modify per change: Finance's add and removal, Sales' add.
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(bed.ad.take_reads().member_lists, 0);
    assert_eq!(
        members_of(&bed, G1),
        [format!("CN=Ada,{PEOPLE}"), format!("CN=Cy,{PEOPLE}")]
    );
    assert_eq!(
        members_of(&bed, G2),
        [format!("CN=Ada,{PEOPLE}"), format!("CN=Bob,{PEOPLE}")]
    );
    let r = bed.cycle(reconcile()).await;
    story.step("reconciliation", &bed, &r);
    assert_eq!(r.expect("reconcile").counts.changes(), 0);
    story.check();
}

#[tokio::test]
async fn an_added_member_without_an_ad_account_is_reported_and_nothing_written() {
    let mut story = Story::new("member_delta_unresolved");
    let mut bed = synced("").await;
    bed.ad.take_reads();
    bed.cloud.add_members(G2, &[U9]);
    let r = bed.cycle(SyncOptions::default()).await;
    let log = story.step("Guest joins Sales", &bed, &r);
    assert!(log.is_empty(), "{log:?}");
    let r = r.expect("sync");
    assert_eq!((r.counts.changes(), r.member_deltas), (0, 1));
    assert_eq!(bed.ad.take_reads().member_lists, 0);
    let unresolved: Vec<(&str, &str)> = r
        .plan
        .unresolved_members
        .iter()
        .map(|u| (u.group_id.as_str(), u.member_id.as_str()))
        .collect();
    assert_eq!(unresolved, [(G2, U9)]);
    // In step: the next cycle does nothing.
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("idle", &bed, &r);
    assert_eq!(r.expect("sync").sweep.to_string(), "idle");
    story.check();
}

#[tokio::test]
async fn removals_the_threshold_may_hold_are_compared_in_full_and_held() {
    let mut story = Story::new("member_delta_held");
    let mut bed = synced("[safety]\nmember_removal_min_members = 2\n").await;
    bed.ad.take_reads();
    bed.cloud.remove_members(G1, &[U1, U2]);
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("Ada and Bob leave Finance", &bed, &r);
    let r = r.expect("sync");
    assert_eq!(r.member_deltas, 0);
    assert_eq!(bed.ad.take_reads().member_lists, 1);
    let held = r.held_removals.expect("held removals");
    assert_eq!(held.groups.len(), 1);
    assert_eq!(
        members_of(&bed, G1),
        [format!("CN=Ada,{PEOPLE}"), format!("CN=Bob,{PEOPLE}")]
    );
    // Held: the group stays out of step, so a later member change is compared in full too.
    bed.cloud.add_members(G1, &[U3]);
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("Cy joins Finance while the removals wait", &bed, &r);
    let r = r.expect("sync");
    assert_eq!(r.member_deltas, 0);
    assert!(r.held_removals.is_some());
    assert_eq!(
        members_of(&bed, G1),
        [
            format!("CN=Ada,{PEOPLE}"),
            format!("CN=Bob,{PEOPLE}"),
            format!("CN=Cy,{PEOPLE}")
        ]
    );
    story.check();
}

/// Sids of the computers of hybrid-joined devices.
const PC1_SID: &str = "S-1-5-21-1000-2000-3000-2101";
const PC2_SID: &str = "S-1-5-21-1000-2000-3000-2102";
const PC3_SID: &str = "S-1-5-21-1000-2000-3000-2103";
const GONE_SID: &str = "S-1-5-21-1000-2000-3000-2199";
/// Cloud ids of devices.
const D1: &str = "00000000-0000-4000-8000-0000000000d1";
const D2: &str = "00000000-0000-4000-8000-0000000000d2";
const D3: &str = "00000000-0000-4000-8000-0000000000d3";
const D4: &str = "00000000-0000-4000-8000-0000000000d4";
const G4: &str = "00000000-0000-4000-8000-0000000000a4";

#[tokio::test]
async fn hybrid_joined_devices_are_written_by_their_computers_and_the_others_reported() {
    let mut story = Story::new("devices");
    let mut bed = Bed::new("");
    bed.synced_user(U1, "Ada", ADA);
    bed.hybrid_device(D1, "PC-01", PC1_SID);
    bed.hybrid_device(D2, "PC-02", PC2_SID);
    bed.cloud_device(D3, "Ada's phone", "Workplace");
    // Hybrid-joined in the cloud, but its computer account is gone from AD.
    bed.cloud.device(
        D4,
        serde_json::json!({"displayName": "PC-OLD", "trustType": "ServerAd",
                           "onPremisesSecurityIdentifier": GONE_SID}),
    );
    bed.security_group(G4, "Laptops", &[U1]);
    bed.cloud.add_devices(G4, &[D1, D2, D3, D4]);

    let r = bed.cycle(SyncOptions::default()).await;
    story.step("first sync", &bed, &r);
    let r = r.expect("sync");
    assert_eq!(r.counts.create, 1);
    assert_eq!(
        members_of(&bed, G4),
        [
            format!("CN=Ada,{PEOPLE}"),
            format!("CN=PC-01,{COMPUTERS}"),
            format!("CN=PC-02,{COMPUTERS}"),
        ]
    );
    let reasons: Vec<(&str, &str, &str)> = r
        .plan
        .unresolved_members
        .iter()
        .map(|u| {
            (
                u.member_id.as_str(),
                u.member_type.as_str(),
                u.reason.as_str(),
            )
        })
        .collect();
    let gone = format!("no computer with objectSid {GONE_SID} in AD (device \"PC-OLD\")");
    assert_eq!(
        reasons,
        [
            (
                D3,
                "device",
                "device \"Ada's phone\" is not hybrid-joined (trustType Workplace, no onPremisesSecurityIdentifier)"
            ),
            (D4, "device", gone.as_str()),
        ]
    );
    assert_eq!(bed.store.unresolved_total().expect("unresolved").members, 2);

    // A device leaving the cloud group leaves the AD group, the short way.
    bed.ad.take_reads();
    bed.cloud.remove_members(G4, &[D2]);
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("PC-02 leaves Laptops", &bed, &r);
    let r = r.expect("sync");
    assert_eq!((r.counts.update, r.member_deltas), (1, 1));
    assert_eq!(bed.ad.take_reads().member_lists, 0);
    assert_eq!(
        members_of(&bed, G4),
        [format!("CN=Ada,{PEOPLE}"), format!("CN=PC-01,{COMPUTERS}")]
    );

    // And coming back, the short way too.
    bed.cloud.add_devices(G4, &[D2]);
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("PC-02 joins Laptops again", &bed, &r);
    assert_eq!(r.expect("sync").member_deltas, 1);
    assert_eq!(members_of(&bed, G4).len(), 3);

    // The phone's device object is replaced by a hybrid-joined one: a changed device is
    // looked at in the groups holding it, like a changed user.
    bed.ad.computer(&format!("CN=PC-03,{COMPUTERS}"), PC3_SID);
    bed.cloud.device(
        D3,
        serde_json::json!({"displayName": "PC-03", "trustType": "ServerAd",
                           "onPremisesSecurityIdentifier": PC3_SID}),
    );
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("the phone's entry becomes PC-03, hybrid-joined", &bed, &r);
    let r = r.expect("sync");
    assert_eq!(r.counts.update, 1);
    assert!(members_of(&bed, G4).contains(&format!("CN=PC-03,{COMPUTERS}")));
    assert_eq!(bed.store.unresolved_total().expect("unresolved").members, 1);

    let r = bed.cycle(SyncOptions::default()).await;
    story.step("idle", &bed, &r);
    assert_eq!(r.expect("sync").sweep.to_string(), "idle");
    story.check();
}

/// The device link as the store holds it.
fn device_link(bed: &Bed) -> Option<String> {
    bed.store
        .stored_link(crate::state::ObjectKind::Device)
        .expect("link")
        .map(|l| l.link)
}

#[tokio::test]
async fn without_device_read_all_users_sync_devices_are_reported_and_computers_stay() {
    let mut story = Story::new("devices_refused");
    let mut bed = Bed::new("");
    bed.synced_user(U1, "Ada", ADA);
    bed.synced_user(U2, "Bob", BOB);
    bed.hybrid_device(D1, "PC-01", PC1_SID);
    bed.hybrid_device(D2, "PC-02", PC2_SID);
    bed.security_group(G4, "Laptops", &[U1]);
    bed.cloud.add_devices(G4, &[D1, D2]);
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("first sync, devices readable", &bed, &r);
    r.expect("sync");
    let link = device_link(&bed);
    assert!(link.is_some());

    // The permission is taken away (or an installation upgraded without it): Graph answers
    // the devices' delta with 403. Meanwhile Bob joins, Ada leaves, the group is renamed (a
    // full compare, not the member changes alone) and a new hybrid-joined device joins.
    bed.cloud.refuse_devices(Some(403));
    bed.ad.computer(&format!("CN=PC-03,{COMPUTERS}"), PC3_SID);
    bed.cloud.device(
        D3,
        serde_json::json!({"displayName": "PC-03", "trustType": "ServerAd",
                           "onPremisesSecurityIdentifier": PC3_SID}),
    );
    bed.cloud.add_devices(G4, &[D3]);
    bed.cloud.add_members(G4, &[U2]);
    bed.cloud.remove_members(G4, &[U1]);
    bed.cloud
        .group(G4, serde_json::json!({"displayName": "Laptops EU"}));
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("devices refused (403)", &bed, &r);
    let r = r.expect("a 403 on devices does not fail the cycle");
    assert_eq!(r.status(), crate::state::RunStatus::Ok);
    assert_eq!(r.counts.update, 1);
    // Bob is written and Ada removed; the computers written earlier stay; PC-03 is not added.
    assert_eq!(
        members_of(&bed, G4),
        [
            format!("CN=Bob,{PEOPLE}"),
            format!("CN=PC-01,{COMPUTERS}"),
            format!("CN=PC-02,{COMPUTERS}"),
        ]
    );
    let reasons: Vec<(&str, &str)> = r
        .plan
        .unresolved_members
        .iter()
        .map(|u| (u.member_id.as_str(), u.reason.as_str()))
        .collect();
    let why = "not resolved: devices cannot be read (grant the app Device.Read.All)";
    let (pc1, pc2, pc3) = (
        format!("device \"PC-01\" {why}"),
        format!("device \"PC-02\" {why}"),
        format!("device {D3} {why}"),
    );
    assert_eq!(
        reasons,
        [(D1, pc1.as_str()), (D2, pc2.as_str()), (D3, pc3.as_str())]
    );
    assert_eq!(bed.store.unresolved_total().expect("unresolved").members, 3);
    // The device link is left where it stood.
    assert_eq!(device_link(&bed), link);

    // Still refused, nothing changed: idle (no warning per poll, no write).
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("still refused, idle", &bed, &r);
    assert_eq!(r.expect("sync").sweep.to_string(), "idle");

    // PC-02 leaves the cloud group: its computer cannot be told without its SID, so it stays
    // (the member change alone is written, and removes nothing).
    bed.cloud.remove_members(G4, &[D2]);
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("PC-02 leaves, still refused", &bed, &r);
    r.expect("sync");
    assert!(members_of(&bed, G4).contains(&format!("CN=PC-02,{COMPUTERS}")));
    assert_eq!(bed.store.unresolved_total().expect("unresolved").members, 2);

    // Granted: devices are read from where they stood, every group is compared once: PC-03
    // is written and PC-02 leaves.
    bed.cloud.refuse_devices(None);
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("Device.Read.All granted", &bed, &r);
    let r = r.expect("sync");
    assert!(r.plan.unresolved_members.is_empty(), "{:?}", r.plan);
    assert_eq!(
        members_of(&bed, G4),
        [
            format!("CN=Bob,{PEOPLE}"),
            format!("CN=PC-01,{COMPUTERS}"),
            format!("CN=PC-03,{COMPUTERS}"),
        ]
    );
    assert_eq!(bed.store.unresolved_total().expect("unresolved").members, 0);
    assert_ne!(device_link(&bed), link);
    story.check();
}

#[tokio::test]
async fn other_errors_on_the_devices_still_fail_the_cycle() {
    let mut bed = Bed::new("");
    bed.synced_user(U1, "Ada", ADA);
    bed.security_group(G4, "Laptops", &[U1]);
    bed.cloud.refuse_devices(Some(503));
    let e = bed
        .cycle(SyncOptions::default())
        .await
        .expect_err("a 503 on devices fails the cycle");
    assert!(e.to_string().contains("503"), "{e}");
    assert!(bed.ad.take_log().is_empty(), "nothing is written");
}

/// The tenant synced once, with `n` more groups synced from AD (out of scope for the shipped
/// rules) holding the synced users: the bulk of a tenant that a resync or a tenant-wide change
/// touches without anything to write.
async fn synced_with_ad_groups(n: usize) -> (Bed, Vec<String>) {
    let bed = tenant("");
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("00000000-0000-4000-8000-0000000001{i:02}");
        bed.cloud.group(
            &id,
            serde_json::json!({
                "displayName": format!("AD group {i}"),
                "description": "synced from AD",
                "securityEnabled": true,
                "mailEnabled": false,
                "groupTypes": [],
                "onPremisesSyncEnabled": true,
            }),
        );
        bed.cloud.add_members(&id, &[U1, U2, U3]);
        ids.push(id);
    }
    let mut bed = bed;
    let r = bed.sync().await;
    assert_eq!(r.failures(), 0, "first sync: {:?}", r.outcomes);
    bed.ad.take_log();
    (bed, ids)
}

#[tokio::test]
async fn a_resync_and_a_tenant_wide_change_are_evaluated_a_chunk_at_a_time() {
    use super::job::EVAL_CHUNK;
    let mut story = Story::new("resync");
    let (mut bed, ad_groups) = synced_with_ad_groups(12).await;
    let groups = ad_groups.len() + 3;
    assert!(groups > 3 * EVAL_CHUNK, "the tenant spans several chunks");

    // Every group's description changes at once (a tenant-wide property change).
    for id in ad_groups.iter().map(String::as_str).chain([G1, G2]) {
        bed.cloud
            .group(id, serde_json::json!({"description": "Policy: reviewed"}));
    }
    let (r, reads) = bed.cycle_watched(SyncOptions::default()).await;
    let writes = story.step("every group's description changed", &bed, &r);
    let r = r.expect("sync");
    assert_eq!(r.sweep, super::select::SweepKind::Changed);
    assert_eq!(r.evaluated, groups - 1, "G3 did not change");
    // Only the two changed groups in scope are written, each once.
    assert_eq!((r.counts.create, r.counts.update), (0, 2), "{writes:?}");
    assert_eq!(attr(&bed, G1, "description"), ["Policy: reviewed"]);
    // Held a chunk at a time: no read handed the cycle more groups than one chunk.
    assert!(reads.widest <= EVAL_CHUNK, "{reads:?}");

    // Graph drops the sync state: the users' round starts over and marks every user, so every
    // group holding one is looked at again (nothing changed: nothing is written).
    bed.cloud.reset_delta(1);
    let (r, reads) = bed.cycle_watched(SyncOptions::default()).await;
    let writes = story.step("users' delta answered 410: a full users round", &bed, &r);
    let r = r.expect("sync");
    assert_eq!(r.sweep, super::select::SweepKind::Changed);
    assert_eq!(r.evaluated, groups);
    assert!(writes.is_empty(), "{writes:?}");
    assert!(reads.widest <= EVAL_CHUNK, "{reads:?}");

    // Every round from its token answered 410 (an emulator restart, a sync state older than
    // Graph keeps): users, devices and groups read in full, every group marked.
    bed.cloud.reset_delta(3);
    let (r, reads) = bed.cycle_watched(SyncOptions::default()).await;
    let writes = story.step("every delta answered 410: every round in full", &bed, &r);
    let r = r.expect("sync");
    assert_eq!(r.evaluated, groups);
    assert!(writes.is_empty(), "{writes:?}");
    assert!(reads.widest <= EVAL_CHUNK, "{reads:?}");
    assert!(reads.total >= groups, "{reads:?}");
    let r = bed.cycle(SyncOptions::default()).await;
    story.step("then an idle cycle", &bed, &r);
    assert_eq!(r.expect("sync").sweep, super::select::SweepKind::Idle);
    story.check();
}

#[tokio::test]
async fn a_rule_edit_over_many_chunks_evaluates_every_group_once() {
    use super::job::EVAL_CHUNK;
    let (mut bed, ad_groups) = synced_with_ad_groups(12).await;
    let groups = ad_groups.len() + 3;
    assert!(groups > 3 * EVAL_CHUNK, "the tenant spans several chunks");
    bed.edit_rule(
        "20-security.rhai",
        "description: naming::left(description, global::MAX_DESCRIPTION),",
        "description: \"Synced: \" + naming::left(description, global::MAX_DESCRIPTION),",
    );
    // A whole-cache pass: chunks are read while the one before is evaluated; every verdict
    // comes back once, in whichever order the chunks finish.
    let r = bed.cycle(SyncOptions::default()).await.expect("sync");
    assert_eq!(
        r.sweep,
        super::select::SweepKind::All(super::select::AllReason::RulesChanged)
    );
    assert_eq!(r.evaluated, groups);
    assert_eq!((r.counts.create, r.counts.update), (0, 2));
    assert_eq!(attr(&bed, G1, "description"), ["Synced: Finance (cloud)"]);
    let r = bed.cycle(SyncOptions::default()).await.expect("sync");
    assert_eq!(r.sweep, super::select::SweepKind::Idle);
}

#[tokio::test]
async fn many_creates_ask_ad_once_which_exist_and_an_object_of_connect_is_still_seen() {
    use super::job::CENSUS_ABOVE;
    let mut bed = tenant("");
    let more: Vec<String> = (0..3)
        .map(|i| format!("00000000-0000-4000-8000-0000000002{i:02}"))
        .collect();
    for (i, id) in more.iter().enumerate() {
        bed.security_group(id, &format!("Team {i}"), &[U1]);
    }
    assert!(
        more.len() + 3 > CENSUS_ABOVE,
        "more creates than the threshold"
    );
    // Connect group writeback made Sales earlier: its anchor in adminDescription only.
    let anchor = super::types::anchor_value(G2);
    let theirs = format!("CN=Sales (Connect),{SECURITY}");
    bed.ad.put(
        &theirs,
        &[
            ("objectClass", &["group"]),
            ("adminDescription", &[anchor.as_str()]),
        ],
    );
    bed.ad.take_reads();
    let r = bed.cycle(SyncOptions::default()).await.expect("sync");
    // Sales is seen (not created beside theirs); the five others are created.
    assert_eq!(r.counts.create, 5, "{:?}", r.plan.refused);
    assert_eq!(r.foreign.unrecorded, 1, "{:?}", r.foreign);
    assert!(bed.ad.get(&theirs).is_some());
    // Searched for by anchor: Sales by both attributes (the one group the scan found), the
    // five created by msDS-ExternalDirectoryObjectId alone for their GUIDs. Not the others by
    // adminDescription, which AD does not index (22 terms before).
    let reads = bed.ad.take_reads();
    assert_eq!(reads.anchor_terms, 2 + 5, "{reads:?}");
    // A second cycle with the groups in AD: nothing more to create, nothing duplicated.
    let r = bed.cycle(SyncOptions::default()).await.expect("sync");
    assert_eq!(r.counts.create, 0);

    // Someone copies Team 0 the way Connect writes: the anchor in adminDescription only.
    let copy = format!("CN=Team 0 (copy),{SECURITY}");
    let anchor = super::types::anchor_value(&more[0]);
    bed.ad.put(
        &copy,
        &[
            ("objectClass", &["group"]),
            ("adminDescription", &[anchor.as_str()]),
        ],
    );
    bed.ad.take_reads();
    let all = SyncOptions {
        compare_all: true,
        ..Default::default()
    };
    let r = bed.cycle(all).await.expect("sync");
    // The copy is seen beside Writeback's Team 0 and left alone; nothing is created.
    assert_eq!(r.counts.create, 0, "{:?}", r.plan.refused);
    assert!(r.foreign.unrecorded >= 1, "{:?}", r.foreign);
    assert!(bed.ad.get(&copy).is_some());
    // Sales and Team 0 searched by both anchors (the census found an adminDescription-only
    // object of each), the other owned groups by msDS-ExternalDirectoryObjectId alone: 8
    // terms, 12 by both anchors.
    let reads = bed.ad.take_reads();
    assert_eq!(reads.anchor_terms, 2 + 2 + 4, "{reads:?}");
}
