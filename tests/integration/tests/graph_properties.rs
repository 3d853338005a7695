//! Graph properties declared by the rules (`GRAPH_GROUP_PROPERTIES`) against the Samba AD DC and
//! the Graph emulator: a directory extension property reaches AD, its changes follow by delta,
//! and a second declared property costs exactly one full re-read.

use std::path::Path;

use std::time::Duration;

use serde_json::{json, Value};
use writeback_integration::eventually;
use writeback_integration::harness::{new_id, security_group, Bed};

const COST: &str = "extension_0123456789abcdef0123456789abcdef_costCenter";
const SITE: &str = "extension_0123456789abcdef0123456789abcdef_site";

/// A security-group rule writing `info` from the declared extension properties.
fn rule(group_props: &[&str], user_props: &[&str], info: &str) -> String {
    let list = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"import "std/naming" as naming;

const GRAPH_GROUP_PROPERTIES = [{groups}];
const GRAPH_USER_PROPERTIES = [{users}];

fn in_scope(group) {{
    group.securityEnabled == true && group.mailEnabled != true
}}

fn to_ad(group) {{
    #{{
        parent: setting("security_container"),
        cn: naming::cloud_sync_cn(group),
        attributes: #{{
            groupType: -2147483640,
            displayName: group.displayName,
            info: {info},
        }},
        members: "on-premises",
    }}
}}
"#,
        groups = list(group_props),
        users = list(user_props),
    )
}

fn write_rules(dir: &Path, text: &str) {
    std::fs::create_dir_all(dir).expect("rules dir");
    std::fs::write(dir.join("10-security.rhai"), text).expect("write rule");
}

/// `writeback -v sync --json`: the report and the log.
fn sync(bed: &Bed) -> (Value, String) {
    let out = bed.run(&["-v", "sync", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "sync failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}):\n{stdout}\nstderr:\n{stderr}"));
    (report, stderr)
}

fn rereads(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("reading every"))
        .collect()
}

/// `info` of the group, `None` while it is not in AD or has none (for `eventually!`).
async fn info_now(bed: &mut Bed, id: &str) -> Option<String> {
    let (_, attrs) = bed.group_by_id(id).await?;
    attrs.get("info").and_then(|v| v.first()).cloned()
}

async fn info(bed: &mut Bed, id: &str) -> Option<String> {
    let (_, attrs) = bed
        .group_by_id(id)
        .await
        .unwrap_or_else(|| panic!("group {id} is not in AD"));
    attrs.get("info").and_then(|v| v.first()).cloned()
}

#[tokio::test]
async fn declared_extension_properties_reach_ad_and_a_new_one_rereads_once() {
    let mut bed = Bed::new("wb-graph-props", 1).await;
    bed.create_default_containers().await;
    // `info` is beyond the default attributes the service account may write.
    bed.ad.delegate_attributes(&bed.managed, &["info"]);
    let (g1, g2) = (new_id(), new_id());
    let u0 = bed.users[0].cloud_id.clone();
    let mut tagged = security_group(&g1, "Cost Tagged", &[&u0]);
    tagged[COST] = json!("CC-100");
    tagged[SITE] = json!("Oslo");
    let plain = security_group(&g2, "Untagged", &[]);
    bed.seed(bed.synced_users(), vec![tagged, plain], &[]);
    let rules = bed.dir.path().join("rules");
    write_rules(&rules, &rule(&[COST], &[], &format!("group.get({COST:?})")));
    bed.write_config(Some(&rules), "", "");

    // First sync: the declared property is selected and lands; the undeclared one does not.
    let (_, log) = sync(&bed);
    assert!(
        rereads(&log).is_empty(),
        "a first sync is full anyway:\n{log}"
    );
    assert_eq!(info(&mut bed, &g1).await.as_deref(), Some("CC-100"));
    assert_eq!(info(&mut bed, &g2).await, None);

    // A change of the property comes by delta.
    bed.graph(
        "PATCH",
        &format!("/groups/{g1}"),
        Some(json!({COST: "CC-200"})),
    )
    .await;
    let (report, log) = sync(&bed);
    assert_eq!(report["sweep"], "changed", "{report:#}");
    assert!(rereads(&log).is_empty(), "{log}");
    assert_eq!(info(&mut bed, &g1).await.as_deref(), Some("CC-200"));

    // A second property (and a user property): one full re-read, logged once, and the value
    // Graph held all along (never changed since, so no delta would carry it) lands.
    let both = format!(
        "if group.get({COST:?}) == () {{ () }} else {{ `${{group.get({COST:?})}} / ${{group.get({SITE:?})}}` }}"
    );
    write_rules(
        &rules,
        &rule(
            &[SITE, COST, COST],
            &["onPremisesExtensionAttributes"],
            &both,
        ),
    );
    let (_, log) = sync(&bed);
    let lines = rereads(&log);
    assert_eq!(lines.len(), 2, "one line per kind:\n{log}");
    assert!(
        lines.iter().any(|l| l.contains(&format!(
            "the rules read new Graph properties: {SITE}; reading every group again"
        ))),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l.contains(
            "the rules read new Graph properties: onPremisesExtensionAttributes; reading every user again"
        )),
        "{log}"
    );
    assert_eq!(info(&mut bed, &g1).await.as_deref(), Some("CC-200 / Oslo"));
    assert_eq!(info(&mut bed, &g2).await, None);

    // The new select is stored with the link: the next sync follows it, with nothing to do.
    let (report, log) = sync(&bed);
    assert!(rereads(&log).is_empty(), "{log}");
    assert_eq!(report["sweep"], "idle", "{report:#}");

    bed.cleanup().await;
}

#[tokio::test]
async fn a_hot_reload_with_a_new_property_rereads_once_in_the_daemon() {
    let mut bed = Bed::new("wb-graph-props-daemon", 0).await;
    bed.create_default_containers().await;
    bed.ad.delegate_attributes(&bed.managed, &["info"]);
    let g = new_id();
    let mut tagged = security_group(&g, "Daemon Tagged", &[]);
    tagged[COST] = json!("CC-100");
    tagged[SITE] = json!("Oslo");
    bed.seed(vec![], vec![tagged], &[]);
    let rules = bed.dir.path().join("rules");
    write_rules(&rules, &rule(&[COST], &[], &format!("group.get({COST:?})")));
    bed.write_config(
        Some(&rules),
        "",
        "[daemon]\npoll_interval_secs = 1\nreconcile_interval_secs = 0\ndebounce_ms = 200\n",
    );
    let d = bed.start_daemon();
    eventually!(
        Duration::from_secs(20),
        "the first sync",
        info_now(&mut bed, &g).await.as_deref() == Some("CC-100")
    );

    // An atomic save of the rule with a second property: reloaded, read again, written.
    let both = format!("`${{group.get({COST:?})}} / ${{group.get({SITE:?})}}`");
    let path = rules.join("10-security.rhai");
    let tmp = rules.join("10-security.rhai.tmp");
    std::fs::write(&tmp, rule(&[COST, SITE], &[], &both)).expect("write temp");
    std::fs::rename(&tmp, &path).expect("rename over");
    eventually!(
        Duration::from_secs(20),
        "the new property in AD",
        info_now(&mut bed, &g).await.as_deref() == Some("CC-100 / Oslo")
    );
    // Several poll cycles later, still one re-read.
    let polls = |log: &str| {
        log.lines()
            .filter(|l| l.contains("sync phase done") && l.contains("cloud"))
            .count()
    };
    let seen = polls(&d.log_text());
    eventually!(
        Duration::from_secs(20),
        "three more cycles",
        polls(&d.log_text()) >= seen + 3
    );
    let log = d.log_text();
    assert_eq!(rereads(&log).len(), 1, "{log}");
    drop(d);
    bed.cleanup().await;
}

#[tokio::test]
async fn a_misspelt_property_stops_the_load_and_nothing_is_read() {
    let mut bed = Bed::new("wb-graph-props-bad", 0).await;
    bed.create_default_containers().await;
    bed.seed(vec![], vec![security_group(&new_id(), "Any", &[])], &[]);
    let rules = bed.dir.path().join("rules");
    write_rules(&rules, &rule(&["extension_0123_costCenter"], &[], "()"));
    bed.write_config(Some(&rules), "", "");
    let out = bed.run(&["check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_ne!(out.status.code(), Some(0), "{stdout}{stderr}");
    let text = format!("{stdout}{stderr}");
    assert!(
        text.contains("10-security.rhai:3:")
            && text.contains("\"extension_0123_costCenter\" is not a Graph property name"),
        "{text}"
    );
    let out = bed.run(&["sync"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(bed.groups().await.is_empty());
    bed.cleanup().await;
}

const ON_PREM_DN: &str = "extension_0123456789abcdef0123456789abcdef_onPremDn";

/// A security-group rule that tells the cloud where each group landed (`to_cloud`).
fn landing_rule() -> String {
    format!(
        r#"import "std/naming" as naming;

const GRAPH_GROUP_PROPERTIES = ["{ON_PREM_DN}"];

fn in_scope(group) {{
    group.securityEnabled == true && group.mailEnabled != true
}}

fn to_ad(group) {{
    #{{
        parent: setting("security_container"),
        cn: naming::cloud_sync_cn(group),
        attributes: #{{ groupType: -2147483640, displayName: group.displayName }},
        to_cloud: #{{ {ON_PREM_DN}: "{{dn}}" }},
    }}
}}
"#
    )
}

/// The cloud group's extension value, read back from the emulator.
async fn landed(bed: &Bed, id: &str) -> Value {
    let g = bed
        .graph_get(&format!("/groups/{id}?$select=id,{ON_PREM_DN}"))
        .await;
    g.get(ON_PREM_DN).cloned().unwrap_or(Value::Null)
}

#[tokio::test]
async fn to_cloud_writes_where_the_group_landed_once_and_again_after_a_move() {
    let mut bed = Bed::new("wb-props-landed", 0).await;
    bed.create_default_containers().await;
    let g = new_id();
    bed.seed(vec![], vec![security_group(&g, "Landing", &[])], &[]);
    let rules = bed.dir.path().join("rules");
    write_rules(&rules, &landing_rule());
    bed.write_config(Some(&rules), "", "");

    // The plan shows the PATCH with the DN the group will have; nothing is written.
    let plan = bed.run_json(&["plan"], 0);
    let want_dn = plan["plan"]["changes"][0]["dn"].clone();
    assert_eq!(
        plan["plan"]["changes"][0]["cloud"][ON_PREM_DN], want_dn,
        "{plan:#}"
    );
    assert_eq!(landed(&bed, &g).await, Value::Null);

    let (r, _) = sync(&bed);
    let (dn, _) = bed.group_by_id(&g).await.expect("created");
    assert_eq!(
        landed(&bed, &g).await.as_str().map(str::to_lowercase),
        Some(dn.clone()),
        "{r:#}"
    );
    // Its own write read back by delta is no change: nothing to write, no second PATCH.
    for _ in 0..2 {
        let (r, _) = sync(&bed);
        assert!(
            r["plan"]["changes"].as_array().is_some_and(Vec::is_empty),
            "{r:#}"
        );
    }

    // Renamed in the cloud: the AD group moves and the cloud hears the new DN.
    bed.graph(
        "PATCH",
        &format!("/groups/{g}"),
        Some(json!({ "displayName": "Landing Moved" })),
    )
    .await;
    let (r, _) = sync(&bed);
    let (moved, _) = bed.group_by_id(&g).await.expect("still there");
    assert_ne!(moved, dn);
    assert_eq!(
        landed(&bed, &g).await.as_str().map(str::to_lowercase),
        Some(moved),
        "{r:#}"
    );

    // Cleared by someone in the cloud: put back.
    bed.graph(
        "PATCH",
        &format!("/groups/{g}"),
        Some(json!({ ON_PREM_DN: null })),
    )
    .await;
    sync(&bed);
    assert!(landed(&bed, &g).await.is_string());
    bed.cleanup().await;
}

#[tokio::test]
async fn to_cloud_without_the_write_permission_is_an_error_naming_it() {
    let mut bed = Bed::new("wb-props-noperm", 0).await;
    bed.create_default_containers().await;
    let g = new_id();
    // The app may read groups and users, not write them.
    bed.seed(
        vec![],
        vec![security_group(&g, "Read Only", &[])],
        &[
            "--app-roles",
            "Group.Read.All,User.Read.All,GroupMember.Read.All",
        ],
    );
    let rules = bed.dir.path().join("rules");
    write_rules(&rules, &landing_rule());
    bed.write_config(Some(&rules), "", "");
    let r = bed.run_json(&["sync"], 2);
    assert!(
        bed.group_by_id(&g).await.is_some(),
        "the AD side is written"
    );
    let why = r["outcomes"][0]["member_errors"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        why.contains("Authorization_RequestDenied") && why.contains("Group.ReadWrite.All"),
        "{r:#}"
    );
    // The group stays out of step, in quarantine like any failing group; a full pass (or the
    // end of its wait) tries again.
    let status = bed.run_json(&["status"], 0);
    assert!(
        status["quarantine"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("Group.ReadWrite.All")),
        "{status:#}"
    );
    let r = bed.run_json(&["sync", "--full"], 2);
    assert!(
        r["plan"]["changes"][0]["cloud"][ON_PREM_DN].is_string(),
        "{r:#}"
    );
    bed.cleanup().await;
}
