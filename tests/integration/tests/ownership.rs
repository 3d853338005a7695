//! Ownership only by record or by explicit adoption, against the Samba AD DC and the Graph
//! emulator: a create that met a hand-made group of the same name records nothing that later
//! reads as Writeback's — not after the administrator stamps the group with the anchor, renames
//! it, moves another stamped group into the OU, or the host restarts — until `adopt` is run.

use serde_json::{json, Value};
use writeback_integration::harness::{new_id, security_group, Bed};

fn changes(r: &Value) -> Vec<Value> {
    r["plan"]["changes"].as_array().cloned().unwrap_or_default()
}

/// The DN a plan would create the bed's one group at.
fn planned_dn(bed: &Bed) -> String {
    let p = bed.run_json(&["plan"], 0);
    changes(&p)
        .first()
        .and_then(|c| c["dn"].as_str().map(String::from))
        .unwrap_or_else(|| panic!("no create planned: {p:#}"))
}

fn outcome_error(r: &Value, id: &str) -> String {
    r["outcomes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["cloud_id"] == json!(id))
        .and_then(|o| o["error"].as_str())
        .unwrap_or_default()
        .to_string()
}

async fn add_plain_group(bed: &mut Bed, dn: &str, description: &str) {
    bed.ldap
        .add(
            dn,
            vec![
                ("objectClass", ["group"].into_iter().collect()),
                ("groupType", ["-2147483640"].into_iter().collect()),
                ("description", [description].into_iter().collect()),
            ],
        )
        .await
        .expect("add")
        .success()
        .expect("add the hand-made group");
}

async fn stamp(bed: &mut Bed, dn: &str, id: &str) {
    let anchor = format!("Group_{id}");
    bed.ldap
        .modify(
            dn,
            vec![ldap3::Mod::Replace(
                "adminDescription",
                [anchor.as_str()].into_iter().collect(),
            )],
        )
        .await
        .expect("modify")
        .success()
        .expect("stamp the anchor by hand");
}

fn explain_owned(bed: &Bed, id: &str) -> Vec<bool> {
    let x = bed.run_json(&["explain", id], 0);
    x["ad_objects"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| o["owned"].as_bool().unwrap_or(true))
        .collect()
}

async fn description_of(bed: &mut Bed, dn: &str) -> Option<String> {
    let groups = bed.groups().await;
    groups
        .iter()
        .find(|(d, _)| d.eq_ignore_ascii_case(dn))
        .and_then(|(_, a)| a.get("description").and_then(|v| v.first().cloned()))
}

#[tokio::test]
async fn a_failed_create_then_a_hand_stamp_is_not_writebacks_until_adopt() {
    let mut bed = Bed::new("wb-own-stamp", 0).await;
    bed.create_default_containers().await;
    let id = new_id();
    bed.seed(vec![], vec![security_group(&id, "Taken Name", &[])], &[]);
    bed.write_config(None, "", "");

    // The DN Writeback would write, from a plan.
    let dn = planned_dn(&bed);

    // A hand-made group already holds that name: the create is a conflict with a next step.
    add_plain_group(&mut bed, &dn, "hand-made").await;
    let r = bed.run_json(&["sync"], 2);
    let error = outcome_error(&r, &id);
    assert!(
        error.starts_with("conflict") && error.contains("writeback adopt"),
        "the conflict names the next step: {r:#}"
    );
    assert!(
        error.contains(&format!("Group_{id}")),
        "the conflict names the anchor value to set: {error}"
    );

    // The administrator stamps the anchor, thinking that hands the group over.
    stamp(&mut bed, &dn, &id).await;
    assert_eq!(
        explain_owned(&bed, &id),
        vec![false],
        "explain calls the stamped group Writeback's"
    );
    let before = bed.groups().await;
    // A restart and a full pass: still not Writeback's.
    let r = bed.run_json(&["sync", "--full"], 2);
    assert!(
        r["adopted"].as_array().is_none_or(Vec::is_empty),
        "adopted without adopt: {r:#}"
    );
    assert!(changes(&r).is_empty(), "{r:#}");
    let reason = r["plan"]["refused"][0]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("writeback adopt"), "{r:#}");
    assert_eq!(
        bed.groups().await,
        before,
        "the hand-made group was written"
    );

    // Renamed by hand: the anchor follows the object, the claim still does not.
    let renamed = dn.replacen("CN=", "CN=Renamed ", 1);
    let rdn = renamed.split(",OU=").next().unwrap_or_default().to_string();
    bed.ldap
        .modifydn(&dn, &rdn, true, None)
        .await
        .expect("modifydn")
        .success()
        .expect("rename by hand");
    assert_eq!(explain_owned(&bed, &id), vec![false]);
    let r = bed.run_json(&["sync", "--full"], 2);
    assert!(changes(&r).is_empty(), "{r:#}");
    assert_eq!(
        description_of(&mut bed, &renamed).await.as_deref(),
        Some("hand-made")
    );

    // adopt, asked for, takes it over.
    let r = bed.run_json(&["adopt"], 0);
    assert_eq!(r["adopted"][0]["dn"], json!(renamed), "{r:#}");
    assert_eq!(explain_owned(&bed, &id), vec![true]);
    bed.cleanup().await;
}

#[tokio::test]
async fn a_stamped_group_moved_into_the_ou_after_a_failed_create_is_not_writebacks() {
    let mut bed = Bed::new("wb-own-move", 0).await;
    bed.create_default_containers().await;
    let id = new_id();
    bed.seed(vec![], vec![security_group(&id, "Moved In", &[])], &[]);
    bed.write_config(None, "", "");
    let dn = planned_dn(&bed);
    add_plain_group(&mut bed, &dn, "blocks the name").await;
    bed.run_json(&["sync"], 2);

    // The blocking group goes; another group, made outside the managed OUs and stamped there,
    // is moved in at the very DN the failed create named.
    bed.ldap
        .delete(&dn)
        .await
        .expect("delete")
        .success()
        .expect("remove the blocking group");
    // OU=Users of the bed is outside the managed OU (OU=Groups).
    let outside = format!("CN=Made Outside {id},OU=Users,{}", bed.root);
    add_plain_group(&mut bed, &outside, "moved in").await;
    stamp(&mut bed, &outside, &id).await;
    let rdn = dn.split(",OU=").next().unwrap_or_default().to_string();
    let parent = dn[rdn.len() + 1..].to_string();
    bed.ldap
        .modifydn(&outside, &rdn, true, Some(&parent))
        .await
        .expect("modifydn")
        .success()
        .expect("move into the managed OU");

    assert_eq!(explain_owned(&bed, &id), vec![false]);
    let r = bed.run_json(&["sync", "--full"], 2);
    assert!(
        r["adopted"].as_array().is_none_or(Vec::is_empty),
        "adopted without adopt: {r:#}"
    );
    assert_eq!(
        description_of(&mut bed, &dn).await.as_deref(),
        Some("moved in"),
        "{r:#}"
    );
    bed.cleanup().await;
}
