//! `writeback audit` and `writeback explain` against the Samba AD DC and the Graph emulator:
//! the audit trail of a real sync, and explanations that read AD and the state but write
//! neither.

use ldap3::{Scope, SearchEntry};
use serde_json::{json, Value};
use std::path::Path;
use writeback_integration::harness::{new_id, security_group, Bed};

fn sqlite(state: &Path, sql: &str) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg("-readonly")
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

/// Runs the binary; returns exit code, stdout, stderr.
fn run(bed: &Bed, args: &[&str]) -> (Option<i32>, String, String) {
    let out = bed.run(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The object's own uSNChanged (the DC's highest USN moves with every other test).
async fn usn_changed(bed: &mut Bed, dn: &str) -> String {
    let (rs, _) = bed
        .ldap
        .search(dn, Scope::Base, "(objectClass=*)", vec!["uSNChanged"])
        .await
        .expect("read uSNChanged")
        .success()
        .expect("read uSNChanged result");
    let e = SearchEntry::construct(rs.into_iter().next().expect("entry"));
    e.attrs["uSNChanged"][0].clone()
}

#[tokio::test]
async fn audit_lists_a_groups_writes_by_name_as_json_lines_and_by_time() {
    let mut bed = Bed::new("wb-inspect-audit", 2).await;
    bed.create_default_containers().await;
    let (a, b) = (new_id(), new_id());
    let users = bed.synced_users();
    let member = bed.users[0].cloud_id.clone();
    bed.seed(
        users,
        vec![
            security_group(&a, "Audit Alpha", &[&member]),
            security_group(&b, "Audit Beta", &[]),
        ],
        &[],
    );
    bed.write_config(None, "", "");
    let (code, out, err) = run(&bed, &["sync"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let (dn_a, _) = bed.group_by_id(&a).await.expect("Audit Alpha written");
    let (dn_b, _) = bed.group_by_id(&b).await.expect("Audit Beta written");

    let (code, out, err) = run(&bed, &["audit", "--group", "Audit Alpha"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "exactly that group's create:\n{out}");
    let line = lines[0].to_lowercase();
    assert!(line.contains("  create  ok  "), "{out}");
    assert!(line.contains(&dn_a), "{dn_a} not in {out}");
    assert!(!line.contains(&dn_b), "{out}");
    assert!(lines[0].contains(&a), "the cloud id: {out}");
    assert!(
        line.contains("members +1"),
        "the member written with the create: {out}"
    );

    let (code, out, err) = run(&bed, &["audit", "--json-lines"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(events.len(), 2, "{out}");
    for e in &events {
        assert_eq!(e["action"], json!("create"), "{e}");
        assert_eq!(e["outcome"], json!("ok"), "{e}");
        assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
        assert!(e["run_id"].as_i64().is_some(), "{e}");
    }
    let ids: Vec<&str> = events
        .iter()
        .filter_map(|e| e["cloud_id"].as_str())
        .collect();
    assert!(
        ids.contains(&a.as_str()) && ids.contains(&b.as_str()),
        "{out}"
    );

    // The DN subtree and the time window.
    let (_, out, _) = run(&bed, &["audit", "--dn-under", &bed.managed.to_uppercase()]);
    assert_eq!(out.lines().count(), 2, "{out}");
    let (code, out, err) = run(&bed, &["audit", "--since", "2999-01-01T00:00:00Z"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.is_empty(), "nothing after a future time: {out}");
    let (_, out, _) = run(&bed, &["audit", "--since", "1h"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    bed.cleanup().await;
}

#[tokio::test]
async fn explain_shows_the_rules_verdict_and_the_pending_diff_without_writing() {
    let mut bed = Bed::new("wb-inspect-explain", 1).await;
    bed.create_default_containers().await;
    let (g, off) = (new_id(), new_id());
    let users = bed.synced_users();
    let member = bed.users[0].cloud_id.clone();
    let mut out_of_scope = security_group(&off, "Explain Off", &[]);
    out_of_scope["securityEnabled"] = json!(false);
    bed.seed(
        users,
        vec![security_group(&g, "Explain Me", &[&member]), out_of_scope],
        &[],
    );
    bed.write_config(None, "", "");
    let state = bed.dir.path().join("state.db");
    let (code, out, err) = run(&bed, &["sync"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let (dn, _) = bed.group_by_id(&g).await.expect("group written");

    // In step after the sync: its DN, its member, the rule, nothing to do.
    let (code, out, err) = run(&bed, &["explain", "Explain Me"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let text = out.to_lowercase();
    assert!(text.contains(&format!("desired: {dn}")), "{out}");
    assert!(text.contains(&format!("ad: {dn}")), "{out}");
    assert!(
        text.contains(&bed.users[0].dn.to_lowercase()),
        "the member: {out}"
    );
    assert!(out.contains("mapped by 20-security.rhai"), "{out}");
    assert!(out.contains("in step"), "{out}");
    assert!(out.contains("quarantine: no"), "{out}");

    // A rename the DC refuses (an object of the new name is there, not Writeback's): the sync
    // fails for the group, so the cache holds the edit and AD does not.
    let tail = dn
        .split(',')
        .next()
        .and_then(|cn| cn.rsplit('_').next())
        .expect("cloud sync cn tail")
        .to_string();
    let security = format!("OU=Security,{}", bed.managed);
    let blocker = format!("CN=Explain Renamed_{tail},{security}");
    bed.add_plain_group(&blocker).await;
    bed.graph(
        "PATCH",
        &format!("/groups/{g}"),
        Some(json!({"displayName": "Explain Renamed"})),
    )
    .await;
    let (code, out, err) = run(&bed, &["sync"]);
    assert_eq!(code, Some(2), "the rename fails:\n{out}\n{err}");

    let usn = usn_changed(&mut bed, &dn).await;
    let runs = sqlite(&state, "SELECT count(*) FROM run;");
    let events = sqlite(&state, "SELECT count(*) FROM run_event;");
    let (code, out, err) = run(&bed, &["explain", &g]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(!out.contains("in step"), "{out}");
    assert!(out.contains("diff: a sync would"), "{out}");
    assert!(
        out.to_lowercase()
            .contains(&format!("move to {}", blocker.to_lowercase())),
        "{out}"
    );
    assert!(
        out.contains("displayName: \"Explain Me\" -> \"Explain Renamed\""),
        "{out}"
    );
    assert!(out.contains("quarantine: yes"), "{out}");
    let (code, json_out, err) = run(&bed, &["explain", "--json", "Explain Renamed"]);
    assert_eq!(code, Some(0), "{err}");
    let x: Value = serde_json::from_str(&json_out).expect("explain --json");
    assert_eq!(x["cloud_id"], json!(g), "{x:#}");
    assert_eq!(x["in_step"], json!(false), "{x:#}");
    assert_eq!(x["changes"][0]["action"], json!("update"), "{x:#}");
    assert_eq!(x["scope"]["rule"], json!("20-security.rhai"), "{x:#}");
    // Nothing written: the object, the run history and the audit trail are as they were.
    assert_eq!(usn_changed(&mut bed, &dn).await, usn, "explain wrote to AD");
    assert_eq!(sqlite(&state, "SELECT count(*) FROM run;"), runs);
    assert_eq!(sqlite(&state, "SELECT count(*) FROM run_event;"), events);

    // Out of scope: said so, with the rules that were tried.
    let (code, out, err) = run(&bed, &["explain", "Explain Off"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("out of scope"), "{out}");
    assert!(out.contains("20-security.rhai"), "{out}");
    assert!(out.contains("no object carries its anchor"), "{out}");

    // Unknown: not found, non-zero.
    let (code, out, _) = run(&bed, &["explain", "No Such Group Anywhere"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not found"), "{out}");
    bed.cleanup().await;
}

#[tokio::test]
async fn status_holds_the_standing_total_of_members_not_found_that_an_idle_sync_does_not_count() {
    let mut bed = Bed::new("wb-inspect-unresolved", 1).await;
    bed.create_default_containers().await;
    let (g, cloud_only) = (new_id(), new_id());
    let mut users = bed.synced_users();
    users.push(writeback_integration::harness::cloud_user(
        &cloud_only,
        "Cloud Only",
        None,
    ));
    let member = bed.users[0].cloud_id.clone();
    bed.seed(
        users,
        vec![security_group(&g, "Half On-Prem", &[&member, &cloud_only])],
        &[],
    );
    bed.write_config(None, "", "");
    let first = bed.run_json(&["sync"], 0);
    assert_eq!(
        first["plan"]["unresolved_members"].as_array().map(Vec::len),
        Some(1),
        "{first:#}"
    );
    // The idle sync compares nothing, so it finds nothing unresolved, and says so...
    let (code, out, err) = run(&bed, &["sync"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains("0 unresolved members in the 0 groups compared"),
        "{out}"
    );
    // ...while status still holds the member not found.
    let (code, out, err) = run(&bed, &["status"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains("Members not found in AD: 1 in 1 groups"),
        "{out}"
    );
    let (code, out, _) = run(&bed, &["status", "--json"]);
    assert_eq!(code, Some(0));
    let s: Value = serde_json::from_str(&out).expect("status --json");
    assert_eq!(s["unresolved"], json!({"members": 1, "groups": 1}), "{s:#}");
    // The member leaves the cloud group: compared again, nothing left to find.
    let st = bed
        .graph(
            "DELETE",
            &format!("/groups/{g}/members/{cloud_only}/$ref"),
            None,
        )
        .await;
    assert!(st.is_success(), "{st}");
    bed.run_json(&["sync"], 0);
    let (_, out, _) = run(&bed, &["status"]);
    assert!(out.contains("Members not found in AD: none"), "{out}");
    bed.cleanup().await;
}
