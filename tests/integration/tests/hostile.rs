//! Hostile values end to end: a rule that returns a 10 MB value for one group, a cloud group
//! whose displayName is over Graph's limit and one whose member entry carries an id the host
//! cannot use, beside a normal group. The sync writes the normal group, refuses the others
//! with short reasons (no line of output holds the value), and exits 2; the next sync refuses
//! them again (nothing is lost between cycles).

use serde_json::{json, Value};
use writeback_integration::harness::{cloud_user, new_id, security_group, Bed};

/// No line of the report or the log may be longer than this.
const LINE_MAX: usize = 4096;

const HOSTILE_RULE: &str = r#"
fn in_scope(group) { group.displayName == "Hostile rule output" }
fn to_ad(group) {
    let s = "0123456789";
    while s.len() < 10_000_000 { s += s; }
    #{ parent: setting("security_container"), cn: "Hostile", attributes: #{ info: s } }
}
"#;

const NORMAL_RULE: &str = r#"
import "std/naming" as naming;
fn in_scope(group) { true }
fn to_ad(group) {
    #{
        parent: setting("security_container"),
        cn: naming::cloud_sync_cn(group),
        attributes: #{ displayName: group.displayName, description: group.description },
    }
}
"#;

fn assert_short_lines(what: &str, text: &str) {
    for line in text.lines() {
        assert!(
            line.len() <= LINE_MAX,
            "{what}: a line of {} bytes: {}...",
            line.len(),
            line.chars().take(200).collect::<String>()
        );
    }
    assert!(
        !text.contains("01234567890123456789012345678901234567890123456789"),
        "{what} holds the rule's value"
    );
    assert!(
        !text.contains(&"Y".repeat(100)),
        "{what} holds the long displayName"
    );
}

fn refused(report: &Value) -> Vec<(String, String)> {
    report["plan"]["refused"]
        .as_array()
        .expect("refused")
        .iter()
        .map(|r| {
            (
                r["cloud_id"].as_str().unwrap_or_default().to_string(),
                r["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn hostile_values_are_refused_per_group_and_the_rest_is_written() {
    let mut bed = Bed::new("wb-hostile", 1).await;
    bed.create_default_containers().await;
    let rules = bed.dir.path().join("rules");
    std::fs::create_dir_all(&rules).expect("rules folder");
    std::fs::write(rules.join("10-hostile.rhai"), HOSTILE_RULE).expect("rule");
    std::fs::write(rules.join("20-normal.rhai"), NORMAL_RULE).expect("rule");

    let mut users = bed.synced_users();
    // An id no directory object has (Graph's are GUIDs): its member entry cannot be used.
    let odd_user = "a".repeat(200);
    users.push(cloud_user(&odd_user, "Odd", None));
    let member = bed.users[0].cloud_id.clone();
    let (normal, hostile, long, odd) = (new_id(), new_id(), new_id(), new_id());
    let groups = vec![
        security_group(&normal, "Normal group", &[&member]),
        security_group(&hostile, "Hostile rule output", &[&member]),
        security_group(&long, &"Y".repeat(300), &[]),
        security_group(&odd, "Odd member", &[&member, &odd_user]),
    ];
    bed.seed(users, groups, &[]);
    bed.write_config(Some(&rules), "", "");

    // The report and the log: short lines only, exit 2 for the refusals.
    let out = bed.run(&["sync", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout:\n{}\nstderr:\n{}",
        stdout.chars().take(4000).collect::<String>(),
        stderr.chars().take(4000).collect::<String>()
    );
    assert_short_lines("stdout", &stdout);
    assert_short_lines("stderr", &stderr);
    let report: Value = serde_json::from_str(&stdout).expect("report is JSON");
    assert_eq!(
        report["plan"]["changes"][0]["cloud_id"],
        json!(normal),
        "{report:#}"
    );
    assert_eq!(report["plan"]["changes"].as_array().map(Vec::len), Some(1));

    // The normal group is written with its member; the others are not in AD.
    let (dn, g) = bed
        .group_by_id(&normal)
        .await
        .expect("normal group written");
    assert!(dn.contains("ou=security,"), "{dn}");
    assert_eq!(g["displayname"], vec!["Normal group".to_string()]);
    assert_eq!(g["member"].len(), 1, "{g:?}");
    for id in [&hostile, &long, &odd] {
        assert!(
            bed.group_by_id(id).await.is_none(),
            "{id} must not be written"
        );
    }

    // A full sync reads the tenant again and refuses them again, in the text report too.
    let out = bed.run(&["sync", "--full"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_short_lines("text report", &text);
    assert_short_lines("stderr", &String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains(&hostile), "{text}");

    let refused = refused(&report);
    let reason = |id: &str| -> &str {
        refused
            .iter()
            .find(|(r, _)| r == id)
            .map(|(_, why)| why.as_str())
            .unwrap_or_else(|| panic!("{id} not refused: {refused:?}"))
    };
    let why = reason(&hostile);
    assert!(why.contains("10-hostile.rhai"), "{why}");
    assert!(why.contains("`info`"), "{why}");
    assert!(why.contains("at most 1048576 bytes"), "{why}");
    assert!(why.contains(&hostile), "{why}");
    let why = reason(&long);
    assert!(
        why.contains(&format!(
            "cloud group {long}: displayName is 300 characters long"
        )),
        "{why}"
    );
    let why = reason(&odd);
    assert!(why.contains(&format!("cloud group {odd}")), "{why}");
    assert!(why.contains("has an id of 200 bytes"), "{why}");
    assert!(!why.contains(&odd_user), "{why}");
    assert!(
        refused.iter().all(|(_, why)| why.len() < 1000),
        "{refused:?}"
    );
    assert!(refused.iter().all(|(id, _)| id != &normal), "{refused:?}");
    assert_eq!(refused.len(), 3, "{refused:?}");

    bed.cleanup().await;
}
