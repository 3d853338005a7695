//! `writeback release`, against the Samba AD DC and the Graph emulator: released groups keep
//! their AD objects exactly as they were, later cloud changes no longer reach them, they are
//! passed over quietly (not refused, not foreign), and `writeback adopt` takes them back.

use serde_json::json;
use writeback_integration::harness::{new_id, security_group, Bed};

async fn description(bed: &mut Bed, id: &str) -> Option<String> {
    bed.group_by_id(id)
        .await
        .and_then(|(_, a)| a.get("description").and_then(|v| v.first().cloned()))
}

#[tokio::test]
async fn release_leaves_ad_untouched_and_adopt_takes_the_groups_back() {
    let mut bed = Bed::new("wb-release", 0).await;
    bed.create_default_containers().await;
    let (kept, managed) = (new_id(), new_id());
    bed.seed(
        vec![],
        vec![
            security_group(&kept, "Handed Over", &[]),
            security_group(&managed, "Still Managed", &[]),
        ],
        &[],
    );
    bed.write_config(None, "", "");
    bed.run_json(&["sync"], 0);
    let usn = bed.highest_usn().await;

    // A name that matches nothing managed is an error; a dry run changes nothing.
    let out = bed.run(&["release", "No Such Group"]);
    assert!(!out.status.success());
    let r = bed.run_json(&["release", "--dry-run", "Handed Over"], 0);
    assert_eq!(r["released"][0]["cloud_id"], json!(kept), "{r:#}");
    let r = bed.run_json(&["release", "Handed Over"], 0);
    assert_eq!(r["released"].as_array().map(Vec::len), Some(1), "{r:#}");
    assert_eq!(bed.highest_usn().await, usn, "release wrote to AD");

    // A later cloud change reaches the managed group only; the released one is passed over
    // without a refusal or a foreign object.
    for id in [&kept, &managed] {
        bed.graph(
            "PATCH",
            &format!("/groups/{id}"),
            Some(json!({ "description": "changed in the cloud" })),
        )
        .await;
    }
    let r = bed.run_json(&["sync", "--full"], 0);
    assert!(
        r["plan"]["refused"].as_array().is_none_or(Vec::is_empty),
        "{r:#}"
    );
    assert_eq!(r["foreign"]["count"], json!(0), "{r:#}");
    assert_eq!(r["foreign"]["released"], json!(1), "{r:#}");
    assert_eq!(
        description(&mut bed, &kept).await.as_deref(),
        Some("Handed Over (security)")
    );
    assert_eq!(
        description(&mut bed, &managed).await.as_deref(),
        Some("changed in the cloud")
    );
    let status = bed.run(&["status"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("Released (1)"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    // adopt takes it back, and the cloud's change follows.
    let r = bed.run_json(&["adopt"], 0);
    assert_eq!(r["adopted"][0]["cloud_id"], json!(kept), "{r:#}");
    assert_eq!(
        description(&mut bed, &kept).await.as_deref(),
        Some("changed in the cloud")
    );
    let status = bed.run(&["status"]);
    assert!(!String::from_utf8_lossy(&status.stdout).contains("Released ("));
    bed.graph("DELETE", &format!("/groups/{kept}"), None).await;
    let r = bed.run_json(&["sync"], 0);
    assert_eq!(
        r["plan"]["changes"][0]["action"],
        json!("delete"),
        "managed again: {r:#}"
    );
    bed.cleanup().await;
}
