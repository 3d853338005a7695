//! A group above AD's 1,500-value range and the host's 1,000-value write batch, on the real DC:
//! created with its members (one add of the first thousand, modifies for the rest), compared
//! again with ranged reads and found in step (nothing written), and a one-member addition and
//! removal each sent as one small modify written from the member change alone (the group's AD
//! members not read back), which the next full comparison agrees with.

use serde_json::{json, Value};
use writeback_integration::harness::{new_id, security_group, Bed};

/// Above `MaxValRange` (1,500) and two write batches (1,000 each).
const MEMBERS: usize = 1_600;

fn changes(report: &Value) -> &Vec<Value> {
    report["plan"]["changes"].as_array().expect("changes")
}

#[tokio::test]
async fn a_group_above_the_range_and_batch_limits_is_written_compared_and_changed_by_one() {
    let mut bed = Bed::new("wb-big", MEMBERS + 1).await;
    bed.create_default_containers().await;
    let users = bed.synced_users();
    let ids: Vec<String> = bed.users.iter().map(|u| u.cloud_id.clone()).collect();
    let (first, last) = ids.split_at(MEMBERS);
    let members: Vec<&str> = first.iter().map(String::as_str).collect();
    let g = new_id();
    // Replays: every incremental round sends the group again after everything else.
    bed.seed(
        users,
        vec![security_group(&g, "Big Group", &members)],
        &["--delta-replay"],
    );
    bed.write_config(None, "", "");

    let created = bed.run_json(&["sync"], 0);
    let c = &changes(&created)[0];
    assert_eq!(c["action"], "create", "{created:#}");
    assert_eq!(c["members"].as_array().map(Vec::len), Some(MEMBERS));
    assert!(
        created["outcomes"].as_array().is_some_and(|o| o.len() == 1
            && o[0].get("error").is_none()
            && o[0].get("member_errors").is_none()),
        "{created:#}"
    );
    let (dn, attrs) = bed.group_by_id(&g).await.expect("the group exists");
    assert_eq!(
        attrs.get("member").map(Vec::len),
        Some(MEMBERS),
        "{dn} holds every member"
    );

    // Compared again in full: the 1,600 members are read in ranges and found in step.
    let usn = bed.highest_usn().await;
    let full = bed.run_json(&["sync", "--full"], 0);
    assert!(changes(&full).is_empty(), "{full:#}");
    assert_eq!(full["examined"], 1, "{full:#}");
    assert_eq!(
        bed.highest_usn().await,
        usn,
        "an in-step big group was written"
    );

    // One member more in the cloud: one update adding exactly that member.
    bed.graph(
        "POST",
        &format!("/groups/{g}/members/$ref"),
        Some(json!({
            "@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{}", last[0])
        })),
    )
    .await;
    let added = bed.run_json(&["sync"], 0);
    let c = &changes(&added)[0];
    assert_eq!(c["action"], "update", "{added:#}");
    assert_eq!(
        c["members_add"].as_array().map(Vec::len),
        Some(1),
        "{added:#}"
    );
    assert!(c.get("members_remove").is_none(), "{added:#}");
    assert!(c.get("changes").is_none(), "{added:#}");
    // Written from the member change alone: the group's 1,600 AD members were not read back
    // nor its other cloud members looked up.
    assert_eq!(added["member_deltas"], 1, "{added:#}");
    let (_, attrs) = bed.group_by_id(&g).await.expect("the group exists");
    assert_eq!(attrs.get("member").map(Vec::len), Some(MEMBERS + 1));
    let after_add = bed.highest_usn().await;
    assert_eq!(
        after_add - usn,
        1,
        "a one-member change is one small modify"
    );

    // One member less: one modify removing exactly that member, nothing else read either.
    bed.graph(
        "DELETE",
        &format!("/groups/{g}/members/{}/$ref", first[0]),
        None,
    )
    .await;
    let removed = bed.run_json(&["sync"], 0);
    let c = &changes(&removed)[0];
    assert_eq!(
        c["members_remove"].as_array().map(Vec::len),
        Some(1),
        "{removed:#}"
    );
    assert!(c.get("members_add").is_none(), "{removed:#}");
    assert_eq!(removed["member_deltas"], 1, "{removed:#}");
    assert_eq!(bed.highest_usn().await - after_add, 1, "{removed:#}");

    // The reconciliation compares the whole group and agrees: nothing to write.
    let usn = bed.highest_usn().await;
    let full = bed.run_json(&["sync", "--full"], 0);
    assert!(changes(&full).is_empty(), "{full:#}");
    assert_eq!(full["member_deltas"], 0, "{full:#}");
    assert_eq!(bed.highest_usn().await, usn);

    bed.cleanup().await;
}
