//! Held member removals, against the Samba AD DC and the Graph emulator: a cloud group emptied
//! by mistake keeps its AD members until an operator approves exactly those removals, while an
//! unrelated change in the same cycle (and the group's own other changes) are applied.

use serde_json::{json, Value};
use writeback_integration::harness::{new_id, security_group, Bed};

async fn ad_members(bed: &mut Bed, id: &str) -> (Vec<String>, Option<String>) {
    let (_, attrs) = bed.group_by_id(id).await.expect("the group is in AD");
    (
        attrs.get("member").cloned().unwrap_or_default(),
        attrs.get("description").and_then(|d| d.first().cloned()),
    )
}

#[tokio::test]
async fn an_emptied_group_keeps_its_members_until_exactly_that_set_is_approved() {
    let mut bed = Bed::new("wb-held-removals", 12).await;
    bed.create_default_containers().await;
    let (g, other) = (new_id(), new_id());
    let ids: Vec<String> = bed.users.iter().map(|u| u.cloud_id.clone()).collect();
    let all: Vec<&str> = ids.iter().map(String::as_str).collect();
    bed.seed(
        bed.synced_users(),
        vec![
            security_group(&g, "File Share RW", &all),
            security_group(&other, "Unrelated", &[]),
        ],
        &[],
    );
    bed.write_config(None, "", "");
    bed.run_json(&["sync"], 0);
    assert_eq!(ad_members(&mut bed, &g).await.0.len(), 12);

    // The cloud group loses every member (and is renamed); an unrelated group changes too.
    for u in &ids {
        bed.graph("DELETE", &format!("/groups/{g}/members/{u}/$ref"), None)
            .await;
    }
    bed.graph(
        "PATCH",
        &format!("/groups/{g}"),
        Some(json!({ "description": "emptied by a broken rule" })),
    )
    .await;
    bed.graph(
        "PATCH",
        &format!("/groups/{other}"),
        Some(json!({ "description": "changed meanwhile" })),
    )
    .await;
    // Exit status 3: something waits for approval.
    let r = bed.run_json(&["sync"], 3);
    let held = &r["held_removals"];
    assert_eq!(held["groups"][0]["cloud_id"], json!(g), "{r:#}");
    assert_eq!(held["groups"][0]["removals"], json!(12), "{r:#}");
    let set = held["set_id"].as_str().expect("a set id").to_string();
    let (kept, description) = ad_members(&mut bed, &g).await;
    assert_eq!(kept.len(), 12, "members were removed without approval");
    assert_eq!(description.as_deref(), Some("emptied by a broken rule"));
    assert_eq!(
        ad_members(&mut bed, &other).await.1.as_deref(),
        Some("changed meanwhile")
    );

    // Still held on the next cycle, and shown by status.
    let r = bed.run_json(&["sync"], 3);
    assert_eq!(r["held_removals"]["set_id"], json!(set), "{r:#}");
    let status = bed.run(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(
        text.contains("Member removals held back (1 groups)") && text.contains(&set),
        "{text}"
    );

    // A wrong id approves nothing; the shown one lets exactly those removals through.
    let wrong = bed.run(&["approve", "000000000000"]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains(&set));
    let ok = bed.run(&["approve", &set]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let r: Value = bed.run_json(&["sync"], 0);
    assert!(r.get("held_removals").is_none(), "{r:#}");
    assert!(ad_members(&mut bed, &g).await.0.is_empty());
    bed.cleanup().await;
}
