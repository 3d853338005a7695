//! Safety under ordinary mistakes, against the Samba AD DC and the Graph emulator: deletes held
//! back for approval, failing groups in quarantine, and strict ownership (two tenants in one
//! OU, a lost state file taken back by `writeback adopt`).

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use writeback_integration::harness::{new_id, security_group, workspace_root, Bed};

use writeback_integration::eventually;

fn actions(r: &Value) -> Vec<String> {
    r["plan"]["changes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["action"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn held_ids(r: &Value) -> BTreeSet<String> {
    r["held"]["deletes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| d["cloud_id"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn sqlite(state: &Path, sql: &str) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg(state)
        .arg(sql)
        .output()
        .expect("sqlite3");
    assert!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn description(bed: &mut Bed, id: &str) -> Option<String> {
    bed.group_by_id(id)
        .await
        .and_then(|(_, a)| a.get("description").and_then(|v| v.first().cloned()))
}

async fn set_security(bed: &Bed, id: &str, on: bool) {
    bed.graph(
        "PATCH",
        &format!("/groups/{id}"),
        Some(json!({ "securityEnabled": on })),
    )
    .await;
}

#[tokio::test]
async fn deletes_over_the_threshold_are_held_the_rest_applied_and_approval_lets_exactly_that_set_through(
) {
    let mut bed = Bed::new("wb-safety-held", 0).await;
    bed.create_default_containers().await;
    let bulk: Vec<String> = (0..8).map(|_| new_id()).collect();
    let keep = new_id();
    let mut groups: Vec<Value> = bulk
        .iter()
        .enumerate()
        .map(|(i, id)| security_group(id, &format!("Bulk {i}"), &[]))
        .collect();
    groups.push(security_group(&keep, "Keep", &[]));
    bed.seed(vec![], groups, &[]);
    bed.write_config(None, "", "[safety]\ndelete_threshold = 2\n");
    assert_eq!(actions(&bed.run_json(&["sync"], 0)), vec!["create"; 9]);

    // Five groups leave the scope, and another group changes.
    for id in &bulk[..5] {
        set_security(&bed, id, false).await;
    }
    bed.graph(
        "PATCH",
        &format!("/groups/{keep}"),
        Some(json!({"description": "still here"})),
    )
    .await;
    let r = bed.run_json(&["sync"], 3);
    let first: BTreeSet<String> = bulk[..5].iter().cloned().collect();
    assert_eq!(held_ids(&r), first, "{r:#}");
    assert!(
        r["held"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("delete threshold (2)"),
        "{r:#}"
    );
    assert_eq!(actions(&r), vec!["update"], "the rest is applied: {r:#}");
    assert_eq!(
        description(&mut bed, &keep).await.as_deref(),
        Some("still here")
    );
    for id in &bulk {
        assert!(
            bed.group_by_id(id).await.is_some(),
            "a held delete was applied"
        );
    }
    let set = r["held"]["set_id"].as_str().unwrap_or_default().to_string();
    assert_eq!(set.len(), 12, "{r:#}");

    // The plan shows the same held set; a second sync holds it again without deleting.
    let p = bed.run_json(&["plan"], 3);
    assert_eq!(p["held"]["set_id"], json!(set), "{p:#}");
    assert!(actions(&p).is_empty(), "{p:#}");

    // `writeback status` shows the same set, waiting for approval.
    let st = bed.run(&["status", "--json"]);
    assert_eq!(
        st.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let st: Value = serde_json::from_slice(&st.stdout).expect("status JSON");
    assert_eq!(st["held_set"], json!(set), "{st:#}");
    assert_eq!(st["held"].as_array().map(Vec::len), Some(5), "{st:#}");
    let text = String::from_utf8_lossy(&bed.run(&["status"]).stdout).to_string();
    assert!(text.contains(&format!("writeback approve {set}")), "{text}");

    // Only the id that was shown approves.
    let wrong = bed.run(&["approve", "0123456789ab"]);
    assert_eq!(wrong.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&wrong.stderr);
    assert!(msg.contains(&set) && msg.contains("5 deletes"), "{msg}");
    let ok = bed.run(&["approve", &set]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // Before the next sync one held group comes back into scope, and three more leave it.
    set_security(&bed, &bulk[0], true).await;
    for id in &bulk[5..] {
        set_security(&bed, id, false).await;
    }
    let r = bed.run_json(&["sync"], 3);
    assert_eq!(
        actions(&r),
        vec!["delete"; 4],
        "the approved set, less the one back: {r:#}"
    );
    let second: BTreeSet<String> = bulk[5..].iter().cloned().collect();
    assert_eq!(
        held_ids(&r),
        second,
        "new deletes need a new approval: {r:#}"
    );
    let set2 = r["held"]["set_id"].as_str().unwrap_or_default().to_string();
    assert_ne!(set2, set);
    assert!(bed.group_by_id(&bulk[0]).await.is_some());
    for id in &bulk[1..5] {
        assert!(
            bed.group_by_id(id).await.is_none(),
            "approved delete not applied"
        );
    }
    for id in &bulk[5..] {
        assert!(
            bed.group_by_id(id).await.is_some(),
            "unapproved delete applied"
        );
    }
    // The old approval was used once: it does not cover the new set.
    let again = bed.run(&["approve", &set]);
    assert_eq!(again.status.code(), Some(1));

    let ok = bed.run(&["approve", &set2]);
    assert_eq!(ok.status.code(), Some(0));
    let r = bed.run_json(&["sync"], 0);
    assert_eq!(actions(&r), vec!["delete"; 3], "{r:#}");
    assert!(r.get("held").is_none(), "{r:#}");
    let state = bed.dir.path().join("state.db");
    assert_eq!(sqlite(&state, "SELECT count(*) FROM held_delete;"), "0");
    bed.cleanup().await;
}

/// The shipped rules, with a security rule that throws for groups named "Bad ...".
fn rules_that_throw(bed: &Bed) -> std::path::PathBuf {
    let dst = bed.dir.path().join("rules");
    std::fs::create_dir_all(&dst).expect("rules dir");
    let src = workspace_root().join("scripts");
    std::fs::copy(
        src.join("10-microsoft-365.rhai"),
        dst.join("10-microsoft-365.rhai"),
    )
    .expect("copy rule");
    let sec = std::fs::read_to_string(src.join("20-security.rhai")).expect("read rule");
    let sec = sec.replacen(
        "fn to_ad(group) {",
        "fn to_ad(group) {\n    if group.displayName.starts_with(\"Bad\") { throw \"this rule refuses bad groups\"; }",
        1,
    );
    assert!(sec.contains("refuses bad groups"), "the rule's map() moved");
    std::fs::write(dst.join("20-security.rhai"), sec).expect("write rule");
    dst
}

#[tokio::test]
async fn a_failing_group_waits_in_quarantine_and_comes_back_when_it_changes_or_is_due() {
    let mut bed = Bed::new("wb-safety-quarantine", 0).await;
    bed.create_default_containers().await;
    let bad: Vec<String> = (0..3).map(|_| new_id()).collect();
    let good = new_id();
    let mut groups: Vec<Value> = bad
        .iter()
        .enumerate()
        .map(|(i, id)| security_group(id, &format!("Bad {i}"), &[]))
        .collect();
    groups.push(security_group(&good, "Good", &[]));
    bed.seed(vec![], groups, &[]);
    let rules = rules_that_throw(&bed);
    bed.write_config(Some(&rules), "", "");
    let state = bed.dir.path().join("state.db");

    let r = bed.run_json(&["sync"], 2);
    assert_eq!(actions(&r), vec!["create"], "{r:#}");
    assert_eq!(r["quarantine_total"], json!(3), "{r:#}");
    let q = r["quarantined"].as_array().cloned().unwrap_or_default();
    assert_eq!(q.len(), 3, "{r:#}");
    for n in &q {
        assert_eq!(n["seen"], json!("new"), "{n:#}");
        assert_eq!(n["failures"], json!(1), "{n:#}");
        assert!(
            n["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("refuses bad groups"),
            "{n:#}"
        );
    }

    // Nothing changed: the failing groups are not tried again before their wait is over.
    let r = bed.run_json(&["sync"], 0);
    assert_eq!(r["sweep"], json!("idle"), "{r:#}");
    assert_eq!(r["evaluated"], json!(0), "{r:#}");
    assert_eq!(r["quarantine_total"], json!(3), "{r:#}");
    assert_eq!(sqlite(&state, "SELECT count(*) FROM quarantine;"), "3");

    // A change of one of them brings that one back at once; it fails again, longer wait.
    bed.graph(
        "PATCH",
        &format!("/groups/{}", bad[0]),
        Some(json!({"description": "edited"})),
    )
    .await;
    let r = bed.run_json(&["sync"], 2);
    assert_eq!(r["evaluated"], json!(1), "{r:#}");
    let q = &r["quarantined"][0];
    assert_eq!(q["cloud_id"], json!(bad[0]), "{r:#}");
    assert_eq!(
        (q["seen"].clone(), q["failures"].clone()),
        (json!("repeated"), json!(2))
    );
    let wait = sqlite(
        &state,
        &format!(
            "SELECT retry_at - CAST(strftime('%s', 'now') AS INTEGER) FROM quarantine WHERE cloud_id = '{}';",
            bad[0]
        ),
    );
    let wait: i64 = wait.parse().unwrap_or(-1);
    assert!(
        (100..=121).contains(&wait),
        "second wait is two minutes, got {wait} s"
    );

    // Its wait over, another one is tried again by itself.
    sqlite(
        &state,
        &format!(
            "UPDATE quarantine SET retry_at = 0 WHERE cloud_id = '{}';",
            bad[1]
        ),
    );
    let r = bed.run_json(&["sync"], 2);
    assert_eq!(r["evaluated"], json!(1), "{r:#}");
    assert_eq!(r["quarantined"][0]["cloud_id"], json!(bad[1]), "{r:#}");

    // Fixed in the cloud (no longer "Bad"): written, and out of quarantine.
    bed.graph(
        "PATCH",
        &format!("/groups/{}", bad[2]),
        Some(json!({"displayName": "Fine now"})),
    )
    .await;
    let r = bed.run_json(&["sync"], 0);
    assert_eq!(actions(&r), vec!["create"], "{r:#}");
    assert_eq!(r["quarantine_total"], json!(2), "{r:#}");
    assert!(bed.group_by_id(&bad[2]).await.is_some());
    bed.cleanup().await;
}

#[tokio::test]
async fn a_rule_that_throws_for_every_group_is_one_log_line_not_one_per_group_and_poll() {
    let mut bed = Bed::new("wb-safety-mass", 0).await;
    bed.create_default_containers().await;
    let groups: Vec<Value> = (0..30)
        .map(|i| security_group(&new_id(), &format!("Bad {i}"), &[]))
        .collect();
    bed.seed(vec![], groups, &[]);
    let rules = rules_that_throw(&bed);
    bed.write_config(
        Some(&rules),
        "",
        "[daemon]\npoll_interval_secs = 1\nreconcile_interval_secs = 0\n",
    );
    let state = bed.dir.path().join("state.db");
    let mut d = bed.start_daemon();
    eventually!(
        Duration::from_secs(30),
        "the failing groups in quarantine",
        state.exists() && sqlite(&state, "SELECT count(*) FROM quarantine;") == "30"
    );
    let first = sqlite(&state, "SELECT max(id) FROM run;");
    eventually!(
        Duration::from_secs(20),
        "three more cycles",
        sqlite(&state, "SELECT max(id) FROM run WHERE status IS NOT NULL;")
            .parse::<i64>()
            .unwrap_or(0)
            >= first.parse::<i64>().unwrap_or(0) + 3
    );
    // Status sees the daemon, its rules and the quarantine; `history` the idle polls.
    let st: Value =
        serde_json::from_slice(&bed.run(&["status", "--json"]).stdout).expect("status JSON");
    assert_eq!(st["daemon"]["running"], json!(true), "{st:#}");
    assert_eq!(
        st["daemon"]["note"]["rules"],
        json!(["10-microsoft-365.rhai", "20-security.rhai"]),
        "{st:#}"
    );
    assert_eq!(
        st["daemon"]["note"]["rules_hash"], st["rules_on_disk"],
        "{st:#}"
    );
    assert_eq!(
        st["quarantine"].as_array().map(Vec::len),
        Some(30),
        "{st:#}"
    );
    let h = bed.run(&["history", "--status", "ok", "--since", "1h"]);
    let text = String::from_utf8_lossy(&h.stdout).to_string();
    assert!(
        text.lines().count() >= 3 && text.contains("sweep idle"),
        "{text}"
    );
    assert_eq!(d.stop(Duration::from_secs(20)), Some(0));
    let st: Value =
        serde_json::from_slice(&bed.run(&["status", "--json"]).stdout).expect("status JSON");
    assert_eq!(st["daemon"]["running"], json!(false), "{st:#}");
    assert!(st["daemon"]["note"]["stopped_at"].is_string(), "{st:#}");
    let log = d.log_text();
    let failing: Vec<&str> = log.lines().filter(|l| l.contains("failing:")).collect();
    assert_eq!(
        failing.len(),
        1,
        "one line for the whole mass failure:\n{log}"
    );
    assert!(
        failing[0].contains("groups=30") && failing[0].contains("refuses bad groups"),
        "{}",
        failing[0]
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("WARN") && l.contains("refused:")),
        "no line per group:\n{log}"
    );
    // The polls after the first did not evaluate the failing groups again.
    let evaluated = sqlite(
        &state,
        &format!(
            "SELECT sum(json_extract(stats_json, '$.evaluated')) FROM run WHERE id > {first};"
        ),
    );
    assert_eq!(evaluated, "0", "quarantined groups were retried every poll");
    bed.cleanup().await;
}

#[tokio::test]
async fn two_instances_with_two_tenants_in_one_ou_never_touch_each_others_groups() {
    let mut a = Bed::new("wb-safety-tenant-a", 0).await;
    a.create_default_containers().await;
    let mut b = Bed::new("wb-safety-tenant-b", 0).await;
    // B writes into A's managed OU, with its own emulator (tenant) and state.
    b.managed = a.managed.clone();
    let a_ids: Vec<String> = (0..3).map(|_| new_id()).collect();
    let b_ids: Vec<String> = (0..3).map(|_| new_id()).collect();
    let tenant = |ids: &[String], name: &str| -> Vec<Value> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| security_group(id, &format!("{name} {i}"), &[]))
            .collect()
    };
    a.seed(vec![], tenant(&a_ids, "Tenant A"), &[]);
    b.seed(vec![], tenant(&b_ids, "Tenant B"), &[]);
    a.write_config(None, "", "");
    b.write_config(None, "", "");
    assert_eq!(actions(&a.run_json(&["sync"], 0)), vec!["create"; 3]);
    assert_eq!(actions(&b.run_json(&["sync"], 0)), vec!["create"; 3]);
    assert_eq!(a.groups().await.len(), 6);

    for (me, other) in [(&a, &b_ids), (&b, &a_ids)] {
        let r = me.run_json(&["sync", "--full"], 0);
        assert!(
            actions(&r).is_empty(),
            "a full reconciliation touched something: {r:#}"
        );
        // Told apart: another tenant's groups, not groups to adopt.
        assert_eq!(r["foreign"]["count"], json!(3), "{r:#}");
        assert_eq!(r["foreign"]["other_tenant"], json!(3), "{r:#}");
        assert_eq!(r["foreign"]["unrecorded"], json!(0), "{r:#}");
        let _ = other;
    }
    // The OU shared on purpose: the other tenant's groups are expected, not foreign.
    for me in [&a, &b] {
        me.write_config(None, "", "");
        let path = me.config_path();
        let text = std::fs::read_to_string(&path).expect("read config");
        let shared = format!("shared_ous = [\"{}\"]\nmanaged_ous", a.managed);
        std::fs::write(&path, text.replacen("managed_ous", &shared, 1)).expect("write config");
        let r = me.run_json(&["sync", "--full"], 0);
        assert_eq!(r["foreign"]["count"], json!(0), "{r:#}");
        assert_eq!(r["foreign"]["shared"], json!(3), "{r:#}");
    }
    // Each tenant's groups are as its instance wrote them.
    for (id, name) in a_ids
        .iter()
        .map(|id| (id, "Tenant A"))
        .chain(b_ids.iter().map(|id| (id, "Tenant B")))
    {
        let d = description(&mut a, id).await.unwrap_or_default();
        assert!(d.starts_with(name), "{id}: {d}");
    }
    // A group that leaves tenant A is deleted by A alone; B's stay.
    a.graph("DELETE", &format!("/groups/{}", a_ids[0]), None)
        .await;
    let r = a.run_json(&["sync", "--full"], 0);
    assert_eq!(actions(&r), vec!["delete"], "{r:#}");
    for id in &b_ids {
        assert!(a.group_by_id(id).await.is_some());
    }
    b.cleanup().await;
    a.cleanup().await;
}

#[tokio::test]
async fn a_lost_state_file_leaves_ad_alone_until_adopt_takes_the_groups_back() {
    let mut bed = Bed::new("wb-safety-adopt", 0).await;
    bed.create_default_containers().await;
    let ids: Vec<String> = (0..3).map(|_| new_id()).collect();
    let groups = ids
        .iter()
        .enumerate()
        .map(|(i, id)| security_group(id, &format!("Adopt {i}"), &[]))
        .collect();
    bed.seed(vec![], groups, &[]);
    bed.write_config(None, "", "");
    assert_eq!(actions(&bed.run_json(&["sync"], 0)), vec!["create"; 3]);
    let before = bed.groups().await;

    // The state file is lost: Writeback no longer knows these objects as its own.
    let state = bed.dir.path().join("state.db");
    for ext in ["", "-wal", "-shm"] {
        let p = std::path::PathBuf::from(format!("{}{ext}", state.display()));
        if p.exists() {
            std::fs::remove_file(&p).expect("remove state");
        }
    }
    bed.graph(
        "PATCH",
        &format!("/groups/{}", ids[0]),
        Some(json!({"description": "edited meanwhile"})),
    )
    .await;
    let r = bed.run_json(&["sync"], 2);
    assert!(actions(&r).is_empty(), "{r:#}");
    let refused = r["plan"]["refused"].as_array().cloned().unwrap_or_default();
    assert_eq!(refused.len(), 3, "{r:#}");
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("writeback adopt"),
        "{r:#}"
    );
    assert_eq!(
        bed.groups().await,
        before,
        "an unrecorded object was modified"
    );

    // adopt --dry-run shows, writes nothing.
    let p = bed.run_json(&["adopt", "--dry-run"], 0);
    assert_eq!(p["adopted"].as_array().map(Vec::len), Some(3), "{p:#}");
    assert_eq!(actions(&p), vec!["update"], "{p:#}");
    assert_eq!(bed.groups().await, before);

    let r = bed.run_json(&["adopt"], 0);
    assert_eq!(r["adopted"].as_array().map(Vec::len), Some(3), "{r:#}");
    assert_eq!(actions(&r), vec!["update"], "{r:#}");
    assert_eq!(
        description(&mut bed, &ids[0]).await.as_deref(),
        Some("edited meanwhile")
    );
    let r = bed.run_json(&["sync"], 0);
    assert!(actions(&r).is_empty(), "{r:#}");
    assert_eq!(r["quarantine_total"], json!(0), "{r:#}");
    // Owned again: a cloud delete is followed.
    bed.graph("DELETE", &format!("/groups/{}", ids[1]), None)
        .await;
    let r = bed.run_json(&["sync"], 0);
    assert_eq!(actions(&r), vec!["delete"], "{r:#}");
    bed.cleanup().await;
}

#[tokio::test]
async fn a_group_written_by_connect_is_left_alone_not_duplicated_and_adopt_takes_it_over() {
    let mut bed = Bed::new("wb-safety-connect", 0).await;
    bed.create_default_containers().await;
    let id = new_id();
    // As Connect group writeback leaves it: the anchor in adminDescription only, its own CN.
    let dn = format!("CN=Group_{id},OU=Security,{}", bed.managed);
    bed.ldap
        .add(
            &dn,
            vec![
                ("objectClass", ["group"].into_iter().collect()),
                ("groupType", ["-2147483640"].into_iter().collect()),
                (
                    "adminDescription",
                    [format!("Group_{id}").as_str()].into_iter().collect(),
                ),
                ("description", ["written by Connect"].into_iter().collect()),
            ],
        )
        .await
        .expect("add")
        .success()
        .expect("add the Connect group");
    bed.seed(vec![], vec![security_group(&id, "From Connect", &[])], &[]);
    bed.write_config(None, "", "");
    let before = bed.groups().await;
    let r = bed.run_json(&["sync"], 2);
    assert!(actions(&r).is_empty(), "no second group is created: {r:#}");
    let reason = r["plan"]["refused"][0]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains(&dn) && reason.contains("writeback adopt"),
        "{r:#}"
    );
    assert_eq!(bed.groups().await, before, "the Connect group was modified");

    let r = bed.run_json(&["adopt"], 0);
    assert_eq!(r["adopted"][0]["dn"], json!(dn), "{r:#}");
    let groups = bed.groups().await;
    assert_eq!(groups.len(), 1, "{groups:#?}");
    let (_, attrs) = groups.into_iter().next().expect("the group");
    assert_eq!(
        attrs.get("msds-externaldirectoryobjectid"),
        Some(&vec![format!("Group_{id}")]),
        "adopted and anchored the Writeback way: {attrs:#?}"
    );
    assert_eq!(
        attrs
            .get("description")
            .and_then(|v| v.first())
            .map(String::as_str),
        Some("From Connect (security)")
    );
    let r = bed.run_json(&["sync"], 0);
    assert!(actions(&r).is_empty(), "{r:#}");
    bed.cleanup().await;
}
