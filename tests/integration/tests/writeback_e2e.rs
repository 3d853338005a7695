//! Group writeback end to end: the `writeback` binary against the Samba AD DC and the Graph
//! emulator. Each test works in its own OU tree and its own emulator.

use serde_json::{json, Value};
use writeback_integration::harness::{m365_group, new_id, security_group, Bed};

fn changes(report: &Value) -> &Vec<Value> {
    report["plan"]["changes"].as_array().expect("changes")
}

fn actions(report: &Value) -> Vec<String> {
    changes(report)
        .iter()
        .map(|c| c["action"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn first<'a>(attrs: &'a std::collections::BTreeMap<String, Vec<String>>, k: &str) -> &'a str {
    attrs
        .get(k)
        .and_then(|v| v.first())
        .map(String::as_str)
        .unwrap_or_else(|| panic!("attribute {k} missing in {attrs:#?}"))
}

#[tokio::test]
async fn groups_are_created_with_attributes_members_and_escaped_names() {
    let mut bed = Bed::new("wb-e2e-create", 3).await;
    bed.create_default_containers().await;
    let mut users = bed.synced_users();
    let cloud_only = new_id();
    users.push(json!({"id": cloud_only, "displayName": "Cloud Only", "userPrincipalName": "co@contoso.onmicrosoft.com"}));
    let (u0, u1, u2) = (
        bed.users[0].cloud_id.clone(),
        bed.users[1].cloud_id.clone(),
        bed.users[2].cloud_id.clone(),
    );
    let m365 = new_id();
    let sec = new_id();
    let nested = new_id();
    let weird = new_id();
    let long = new_id();
    let weird_name = " R&D, \"Labs\" <Zürich> #1; a+b=c \\ ";
    // Graph's limit for displayName, and AD's rangeUpper for it: 256 characters.
    let long_name = format!("{}Ünïcödé!", "Ünïcödé ".repeat(31));
    assert_eq!(long_name.chars().count(), 256);
    let groups = vec![
        m365_group(
            &m365,
            "Marketing Team",
            &format!("mkt{}", &m365[..6]),
            &[&u0, &u1, &cloud_only],
        ),
        security_group(&sec, "Finance Approvers", &[&u2, &nested]),
        security_group(&nested, "Finance Auditors", &[&u1]),
        security_group(&weird, weird_name, &[&u0]),
        security_group(&long, &long_name, &[]),
    ];
    bed.seed(users, groups, &[]);
    bed.write_config(None, "", "");

    let report = bed.run_json(&["sync"], 0);
    assert_eq!(actions(&report), vec!["create"; 5], "{report:#}");

    // Microsoft 365 group: universal distribution group with the mail attributes.
    let (dn, g) = bed.group_by_id(&m365).await.expect("m365 group written");
    assert!(dn.contains("ou=m365,"), "{dn}");
    assert_eq!(first(&g, "grouptype"), "8");
    assert_eq!(first(&g, "displayname"), "Marketing Team");
    assert_eq!(
        first(&g, "mail"),
        format!("mkt{}@contoso.example", &m365[..6])
    );
    assert_eq!(first(&g, "admindescription"), format!("Group_{m365}"));
    let proxies = &g["proxyaddresses"];
    assert!(
        proxies.contains(&format!("SMTP:mkt{}@contoso.example", &m365[..6])),
        "{proxies:?}"
    );
    assert_eq!(proxies.len(), 2, "{proxies:?}");
    assert!(g.contains_key("msexchrecipienttypedetails"), "{g:#?}");
    assert!(g.contains_key("msexchrecipientdisplaytype"), "{g:#?}");
    assert!(g.contains_key("mailnickname"), "{g:#?}");
    let members = g.get("member").cloned().unwrap_or_default();
    assert_eq!(
        members.len(),
        2,
        "cloud-only member must be skipped: {members:?}"
    );
    // The cloud-only member is reported, not written.
    let unresolved = report["plan"]["unresolved_members"]
        .as_array()
        .expect("unresolved");
    assert!(
        unresolved
            .iter()
            .any(|u| u["member_id"] == json!(cloud_only) && u["group_id"] == json!(m365)),
        "{unresolved:#?}"
    );

    // Security group: universal security, Cloud Sync's cn, nested group as member.
    let (sdn, s) = bed.group_by_id(&sec).await.expect("security group written");
    assert_eq!(first(&s, "grouptype"), "-2147483640");
    assert!(
        sdn.starts_with(&format!("cn=finance approvers_{}", &sec[24..]).to_lowercase()),
        "{sdn}"
    );
    let (ndn, _) = bed
        .group_by_id(&nested)
        .await
        .expect("nested group written");
    let smembers: Vec<String> = s["member"].iter().map(|m| m.to_lowercase()).collect();
    assert!(
        smembers.contains(&ndn),
        "nested group {ndn} not in {smembers:?}"
    );
    assert!(
        smembers.contains(&bed.users[2].dn.to_lowercase()),
        "{smembers:?}"
    );

    // Special characters survive as written (AD stores the unescaped cn).
    let (_, w) = bed
        .group_by_id(&weird)
        .await
        .expect("escaped group written");
    assert_eq!(first(&w, "displayname"), weird_name);
    assert!(
        first(&w, "cn").starts_with("R&D, \"Labs\" <Zürich> #1; a+b=c \\"),
        "{w:#?}"
    );
    // A 256-character name is cut to fit cn (Cloud Sync: 51 + "_" + 12).
    let (_, l) = bed
        .group_by_id(&long)
        .await
        .expect("long-named group written");
    assert_eq!(first(&l, "cn").chars().count(), 64, "{l:#?}");
    assert_eq!(first(&l, "displayname"), long_name);

    bed.cleanup().await;
}

#[tokio::test]
async fn second_sync_and_plan_write_nothing() {
    let mut bed = Bed::new("wb-e2e-idem", 2).await;
    bed.create_default_containers().await;
    let users = bed.synced_users();
    let (u0, u1) = (bed.users[0].cloud_id.clone(), bed.users[1].cloud_id.clone());
    let g1 = new_id();
    let g2 = new_id();
    bed.seed(
        users,
        vec![
            m365_group(&g1, "Idem M365", &format!("idem{}", &g1[..6]), &[&u0, &u1]),
            security_group(&g2, "Idem Security", &[&u0]),
        ],
        &[],
    );
    bed.write_config(None, "", "");
    bed.run_json(&["sync"], 0);

    let usn = bed.highest_usn().await;
    let again = bed.run_json(&["sync"], 0);
    assert!(changes(&again).is_empty(), "{again:#}");
    // Nothing changed: the cycle stops after the delta rounds, reading no cached group.
    assert_eq!(again["sweep"], "idle", "{again:#}");
    assert_eq!(again["evaluated"], 0, "{again:#}");
    assert_eq!(again["examined"], 0, "{again:#}");
    let full = bed.run_json(&["sync", "--full"], 0);
    assert!(changes(&full).is_empty(), "{full:#}");
    assert_eq!(full["sweep"], "full read", "{full:#}");
    assert_eq!(full["evaluated"], 2, "{full:#}");
    assert_eq!(
        bed.highest_usn().await,
        usn,
        "a sync with no cloud change wrote to AD"
    );

    // A cloud change shows in `plan`, which still writes nothing.
    bed.graph(
        "PATCH",
        &format!("/groups/{g2}"),
        Some(json!({"description": "changed"})),
    )
    .await;
    let plan = bed.run_json(&["plan"], 0);
    assert_eq!(actions(&plan), vec!["update"], "{plan:#}");
    assert_eq!(bed.highest_usn().await, usn, "plan wrote to AD");
    // ...and the sync after it applies it.
    let applied = bed.run_json(&["sync"], 0);
    assert_eq!(actions(&applied), vec!["update"], "{applied:#}");
    // Only the changed group was read and evaluated.
    assert_eq!(applied["sweep"], "changed", "{applied:#}");
    assert_eq!(applied["evaluated"], 1, "{applied:#}");
    let (_, g) = bed.group_by_id(&g2).await.expect("group");
    assert_eq!(first(&g, "description"), "changed");
    let settled = bed.run_json(&["sync"], 0);
    assert_eq!(settled["sweep"], "idle", "{settled:#}");

    bed.cleanup().await;
}

#[tokio::test]
async fn attribute_change_rename_members_and_deletes_follow_the_cloud() {
    let mut bed = Bed::new("wb-e2e-change", 3).await;
    bed.create_default_containers().await;
    let users = bed.synced_users();
    let (u0, u1, u2) = (
        bed.users[0].cloud_id.clone(),
        bed.users[1].cloud_id.clone(),
        bed.users[2].cloud_id.clone(),
    );
    let sec = new_id();
    let m365 = new_id();
    let doomed = new_id();
    bed.seed(
        users,
        vec![
            security_group(&sec, "Ops", &[&u0, &u1]),
            m365_group(
                &m365,
                "Soft Deleted Team",
                &format!("soft{}", &m365[..6]),
                &[&u0],
            ),
            security_group(&doomed, "Doomed", &[]),
        ],
        &[],
    );
    bed.write_config(None, "", "");
    bed.run_json(&["sync"], 0);
    let (old_dn, _) = bed.group_by_id(&sec).await.expect("created");

    // Rename (modrdn), description change, member add and remove.
    bed.graph(
        "PATCH",
        &format!("/groups/{sec}"),
        Some(json!({"displayName": "Operations", "description": "24/7"})),
    )
    .await;
    bed.graph(
        "POST",
        &format!("/groups/{sec}/members/$ref"),
        Some(
            json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{u2}")}),
        ),
    )
    .await;
    bed.graph("DELETE", &format!("/groups/{sec}/members/{u0}/$ref"), None)
        .await;
    // Soft delete of a Microsoft 365 group keeps its AD group; a security group is hard deleted.
    bed.graph("DELETE", &format!("/groups/{m365}"), None).await;
    bed.graph("DELETE", &format!("/groups/{doomed}"), None)
        .await;

    let r = bed.run_json(&["sync"], 0);
    let mut acts = actions(&r);
    acts.sort();
    assert_eq!(acts, vec!["delete", "update"], "{r:#}");

    let (new_dn, g) = bed.group_by_id(&sec).await.expect("still there");
    assert_ne!(new_dn, old_dn);
    assert!(
        new_dn.starts_with(&format!("cn=operations_{}", &sec[24..])),
        "{new_dn}"
    );
    assert_eq!(first(&g, "description"), "24/7");
    assert_eq!(first(&g, "displayname"), "Operations");
    let members: Vec<String> = g["member"].iter().map(|m| m.to_lowercase()).collect();
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(members.contains(&bed.users[1].dn.to_lowercase()));
    assert!(members.contains(&bed.users[2].dn.to_lowercase()));
    assert!(
        bed.group_by_id(&m365).await.is_some(),
        "soft-deleted M365 group must stay"
    );
    assert!(
        bed.group_by_id(&doomed).await.is_none(),
        "hard-deleted group must go"
    );

    // Hard delete of the soft-deleted group removes it.
    bed.graph("DELETE", &format!("/directory/deletedItems/{m365}"), None)
        .await;
    let r = bed.run_json(&["sync"], 0);
    assert_eq!(actions(&r), vec!["delete"], "{r:#}");
    assert!(bed.group_by_id(&m365).await.is_none());

    bed.cleanup().await;
}

#[tokio::test]
async fn unowned_same_name_group_is_left_alone_and_reported() {
    let mut bed = Bed::new("wb-e2e-owner", 0).await;
    bed.create_default_containers().await;
    let g = new_id();
    // What the security rule will want: cn "Shared_<last 12>" in OU=Security.
    let cn = format!("Shared_{}", &g[24..]);
    let dn = format!("CN={cn},OU=Security,{}", bed.managed);
    bed.ldap
        .add(
            &dn,
            vec![
                ("objectClass", ["group"].into_iter().collect()),
                ("description", ["hand made"].into_iter().collect()),
            ],
        )
        .await
        .expect("add")
        .success()
        .expect("add unowned group");
    let fine = new_id();
    bed.seed(
        vec![],
        vec![
            security_group(&g, "Shared", &[]),
            security_group(&fine, "Unrelated", &[]),
        ],
        &[],
    );
    bed.write_config(None, "", "");
    // The plan tells the create that would fail (exit 2), and shows the other.
    let r = bed.run_json(&["plan"], 2);
    assert_eq!(actions(&r), vec!["create"], "{r:#}");
    let refused = &r["plan"]["refused"][0];
    assert_eq!(refused["cloud_id"], json!(g), "{r:#}");
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|why| why.contains("the create would fail") && why.contains(&dn)),
        "{r:#}"
    );
    let before = bed.groups().await[&dn.to_lowercase()].clone();
    let r = bed.run_json(&["sync"], 2);
    let failed: Vec<&Value> = r["outcomes"]
        .as_array()
        .expect("outcomes")
        .iter()
        .filter(|o| o.get("error").is_some())
        .collect();
    assert_eq!(failed.len(), 1, "{r:#}");
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("conflict"),
        "{r:#}"
    );
    assert_eq!(failed[0]["cloud_id"], json!(g));
    // The rest of the plan was applied.
    assert!(bed.group_by_id(&fine).await.is_some(), "{r:#}");
    // The unowned group is exactly as it was (same attributes, same uSNChanged).
    let groups = bed.groups().await;
    let own = &groups[&dn.to_lowercase()];
    assert_eq!(own, &before);
    assert!(!own.contains_key("admindescription"));
    // The group waits in quarantine: the next run does not try again at once...
    assert_eq!(r["quarantine_total"], json!(1), "{r:#}");
    let idle = bed.run_json(&["sync"], 0);
    assert!(actions(&idle).is_empty(), "{idle:#}");
    // ...but once its wait is over it is tried (and refused) again: nothing was recorded.
    let state = bed.dir.path().join("state.db");
    let out = std::process::Command::new("sqlite3")
        .arg(&state)
        .arg("UPDATE quarantine SET retry_at = 0;")
        .output()
        .expect("sqlite3");
    assert!(out.status.success(), "{out:?}");
    let again = bed.run_json(&["sync"], 2);
    assert_eq!(actions(&again), vec!["create"], "{again:#}");
    assert_eq!(again["quarantined"][0]["failures"], json!(2), "{again:#}");
    bed.cleanup().await;
}

#[tokio::test]
async fn a_rule_writing_outside_the_managed_ous_is_refused() {
    let mut bed = Bed::new("wb-e2e-outside", 0).await;
    let rules = bed.dir.path().join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    std::fs::write(
        rules.join("10-escape.rhai"),
        format!(
            "fn in_scope(group) {{ true }}\nfn to_ad(group) {{ #{{ parent: \"{}\", cn: group.displayName, attributes: #{{}} }} }}\n",
            bed.root.replace('\\', "\\\\")
        ),
    )
    .expect("write rule");
    let g = new_id();
    bed.seed(vec![], vec![security_group(&g, "Escapee", &[])], &[]);
    bed.write_config(Some(&rules), "", "");
    let usn = bed.highest_usn().await;
    let r = bed.run_json(&["sync"], 2);
    let refused = r["plan"]["refused"].as_array().expect("refused");
    assert_eq!(refused.len(), 1, "{r:#}");
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("outside the managed OUs"),
        "{r:#}"
    );
    assert!(changes(&r).is_empty());
    assert_eq!(bed.highest_usn().await, usn);
    bed.cleanup().await;
}

#[tokio::test]
async fn an_expired_delta_token_leads_to_a_full_resync_that_converges() {
    let mut bed = Bed::new("wb-e2e-expired", 1).await;
    bed.create_default_containers().await;
    let users = bed.synced_users();
    let u0 = bed.users[0].cloud_id.clone();
    let keep = new_id();
    let gone = new_id();
    bed.seed(
        users,
        vec![
            security_group(&keep, "Keeper", &[&u0]),
            security_group(&gone, "Goner", &[]),
        ],
        &[],
    );
    bed.write_config(None, "", "");
    bed.run_json(&["sync"], 0);

    // Changes while the host is away for more than a week: the stored deltaLink expires.
    bed.graph(
        "PATCH",
        &format!("/groups/{keep}"),
        Some(json!({"description": "after the holidays"})),
    )
    .await;
    bed.graph("DELETE", &format!("/groups/{gone}"), None).await;
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{}/_emulator/clock/advance", bed.emulator.base_url))
        .json(&json!({"seconds": 8 * 24 * 3600}))
        .send()
        .await
        .expect("advance clock");
    assert!(r.status().is_success(), "clock advance: {}", r.status());

    let r = bed.run_json(&["sync"], 0);
    let mut acts = actions(&r);
    acts.sort();
    assert_eq!(acts, vec!["delete", "update"], "{r:#}");
    let (_, g) = bed.group_by_id(&keep).await.expect("kept");
    assert_eq!(first(&g, "description"), "after the holidays");
    assert!(bed.group_by_id(&gone).await.is_none());
    // Converged: the next run has nothing to do.
    let again = bed.run_json(&["sync"], 0);
    assert!(changes(&again).is_empty(), "{again:#}");
    bed.cleanup().await;
}

#[tokio::test]
async fn a_certificate_authenticated_run_works() {
    let mut bed = Bed::new("wb-e2e-cert", 0).await;
    bed.create_default_containers().await;
    let dir = bed.dir.path().to_path_buf();
    let (cert, key) = self_signed(&dir.join("app"), "writeback-e2e");
    let pem = std::fs::read_to_string(&cert).expect("cert");
    let g = new_id();
    let mut tenant = json!({
        "tenantId": writeback_integration::harness::TENANT_ID,
        "apps": [{ "clientId": writeback_integration::harness::CLIENT_ID, "certificatePem": pem }],
        "users": [],
        "groups": [security_group(&g, "Cert Group", &[])],
    });
    // Also the secret the harness uses for its own Graph calls.
    tenant["apps"][0]["clientSecret"] = json!(writeback_integration::harness::CLIENT_SECRET);
    bed.seed_tenant(tenant, &[]);
    bed.write_config(
        None,
        &format!(
            "certificate_file = \"{}\"\nprivate_key_file = \"{}\"",
            cert.display(),
            key.display()
        ),
        "",
    );
    let r = bed.run_json(&["sync"], 0);
    assert_eq!(actions(&r), vec!["create"], "{r:#}");
    assert!(bed.group_by_id(&g).await.is_some());

    // A certificate the app does not have is refused with the token endpoint's code.
    let (other_cert, other_key) = self_signed(&dir.join("other"), "intruder");
    bed.write_config(
        None,
        &format!(
            "certificate_file = \"{}\"\nprivate_key_file = \"{}\"",
            other_cert.display(),
            other_key.display()
        ),
        "",
    );
    let out = bed.run(&["sync"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AADSTS"), "{err}");
    bed.cleanup().await;
}

#[tokio::test]
async fn schema_violations_are_refused_naming_rule_and_attribute() {
    let mut bed = Bed::new("wb-e2e-schema", 0).await;
    let rules = bed.dir.path().join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    let parent = bed.managed.replace('\\', "\\\\");
    std::fs::write(
        rules.join("10-unknown-attr.rhai"),
        format!(
            "fn in_scope(group) {{ group.displayName == \"A\" }}\nfn to_ad(group) {{ #{{ parent: \"{parent}\", cn: \"A\", attributes: #{{ notAnAttribute: \"x\" }} }} }}\n"
        ),
    )
    .expect("write rule");
    std::fs::write(
        rules.join("20-too-long.rhai"),
        format!(
            "fn in_scope(group) {{ group.displayName == \"B\" }}\nfn to_ad(group) {{ let s = \"x\"; s.pad(2000, \"y\"); #{{ parent: \"{parent}\", cn: \"B\", attributes: #{{ info: s }} }} }}\n"
        ),
    )
    .expect("write rule");
    std::fs::write(
        rules.join("30-fine.rhai"),
        format!(
            "fn in_scope(group) {{ group.displayName == \"C\" }}\nfn to_ad(group) {{ #{{ parent: \"{parent}\", cn: \"C \" + group.id, attributes: #{{ info: \"fine\" }} }} }}\n"
        ),
    )
    .expect("write rule");
    let (a, b, c) = (new_id(), new_id(), new_id());
    bed.seed(
        vec![],
        vec![
            security_group(&a, "A", &[]),
            security_group(&b, "B", &[]),
            security_group(&c, "C", &[]),
        ],
        &[],
    );
    bed.write_config(Some(&rules), "", "");
    let r = bed.run_json(&["sync"], 2);
    let refused = r["plan"]["refused"].as_array().expect("refused");
    assert_eq!(refused.len(), 2, "{r:#}");
    let by_id = |id: &str| {
        refused
            .iter()
            .find(|x| x["cloud_id"] == json!(id))
            .cloned()
            .unwrap_or_default()
    };
    let ra = by_id(&a);
    assert_eq!(ra["rule"], json!("10-unknown-attr.rhai"), "{ra:#}");
    assert!(
        ra["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("notAnAttribute"),
        "{ra:#}"
    );
    let rb = by_id(&b);
    assert_eq!(rb["rule"], json!("20-too-long.rhai"), "{rb:#}");
    let reason = rb["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("info") && reason.contains("1024"), "{rb:#}");
    assert!(bed.group_by_id(&a).await.is_none());
    assert!(bed.group_by_id(&b).await.is_none());
    assert!(
        bed.group_by_id(&c).await.is_some(),
        "the valid group is still written"
    );
    bed.cleanup().await;
}

#[tokio::test]
async fn a_rule_can_move_soft_deleted_groups_to_a_graveyard() {
    let mut bed = Bed::new("wb-e2e-graveyard", 0).await;
    let rules = bed.dir.path().join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    let live = format!("OU=Live,{}", bed.managed);
    let grave = format!("OU=Graveyard,{}", bed.managed);
    for ou in [&live, &grave] {
        writeback_integration::testbed::create_ou(&mut bed.ldap, ou).await;
    }
    std::fs::write(
        rules.join("10-m365.rhai"),
        format!(
            "fn in_scope(group) {{ group.groupTypes.contains(\"Unified\") }}\n\
             fn to_ad(group) {{ #{{ parent: if group.deleted {{ \"{}\" }} else {{ \"{}\" }}, cn: group.displayName + \"_\" + group.id.sub_string(24), attributes: #{{ groupType: 8 }} }} }}\n",
            grave.replace('\\', "\\\\"),
            live.replace('\\', "\\\\")
        ),
    )
    .expect("write rule");
    let g = new_id();
    bed.seed(
        vec![],
        vec![m365_group(
            &g,
            "Retired Team",
            &format!("ret{}", &g[..6]),
            &[],
        )],
        &[],
    );
    bed.write_config(Some(&rules), "", "");
    bed.run_json(&["sync"], 0);
    let (dn, _) = bed.group_by_id(&g).await.expect("created");
    assert!(dn.contains(",ou=live,"), "{dn}");
    bed.graph("DELETE", &format!("/groups/{g}"), None).await;
    let r = bed.run_json(&["sync"], 0);
    assert_eq!(actions(&r), vec!["update"], "{r:#}");
    let (dn, _) = bed.group_by_id(&g).await.expect("kept, moved");
    assert!(dn.contains(",ou=graveyard,"), "{dn}");
    bed.cleanup().await;
}

/// A throwaway RSA key and self-signed certificate in `dir` (made by the openssl CLI).
fn self_signed(dir: &std::path::Path, cn: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).expect("cert dir");
    let (cert, key) = (dir.join("app.pem"), dir.join("app.key"));
    let st = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        ])
        .arg(format!("/CN={cn}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        st.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    // A private key others can read is refused, as it should be.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
    (cert, key)
}

/// The rows a sync depends on, and the history, as `sqlite3` prints them (read-only).
fn state_rows(state: &std::path::Path) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg("-readonly")
        .arg(state)
        .arg("PRAGMA user_version;")
        .arg(".dump delta_link cloud_object cloud_member pending meta anchor applied run run_event")
        .output()
        .expect("sqlite3");
    assert!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn plan_leaves_the_state_as_it_was_and_the_sync_after_it_does_what_it_showed() {
    let mut bed = Bed::new("wb-e2e-plan-ro", 2).await;
    bed.create_default_containers().await;
    let users = bed.synced_users();
    let (u0, u1_sid, u1_dn) = (
        bed.users[0].cloud_id.clone(),
        bed.users[1].sid.clone(),
        bed.users[1].dn.to_lowercase(),
    );
    let team = new_id();
    let notes = new_id();
    bed.seed(
        users,
        vec![
            security_group(&team, "Plan Team", &[&u0]),
            security_group(&notes, "Plan Notes", &[]),
        ],
        &[],
    );
    bed.write_config(None, "", "");
    let first_sync = bed.run_json(&["sync"], 0);
    assert_eq!(actions(&first_sync), vec!["create"; 2], "{first_sync:#}");
    let (_, g) = bed.group_by_id(&team).await.expect("team written");
    let members: Vec<String> = g["member"].iter().map(|m| m.to_lowercase()).collect();
    assert_eq!(members, vec![bed.users[0].dn.to_lowercase()], "{members:?}");

    // In the cloud, the member's on-premises identity becomes the second AD user's. The
    // emulator keeps onPremisesSecurityIdentifier read-only, as Graph does: the tenant is
    // reloaded with the new SID, and the next delta round is a full one. Then a description.
    let mut tenant = bed.emulator.control("state", None).await;
    tenant
        .as_object_mut()
        .expect("tenant dump")
        .remove("_emulator");
    let user = tenant["users"]
        .as_array_mut()
        .expect("users")
        .iter_mut()
        .find(|u| u["id"] == json!(u0))
        .expect("the member in the tenant");
    user["onPremisesSecurityIdentifier"] = json!(u1_sid);
    bed.emulator.control("tenant", Some(tenant)).await;
    bed.graph(
        "PATCH",
        &format!("/groups/{notes}"),
        Some(json!({"description": "planned, then synced"})),
    )
    .await;

    let state = bed.dir.path().join("state.db");
    let before = state_rows(&state);
    assert!(before.contains("INSERT INTO delta_link"), "{before}");
    assert!(before.contains("INSERT INTO anchor"), "{before}");
    // The DC is shared with other tests: the groups' own attributes (uSNChanged among them),
    // not the DC's highest USN, tell whether the plan wrote.
    let ad_before = (
        bed.group_by_id(&team).await.expect("team"),
        bed.group_by_id(&notes).await.expect("notes"),
    );
    assert!(ad_before.0 .1.contains_key("usnchanged"), "{ad_before:#?}");

    let plan = bed.run_json(&["plan"], 0);
    let mut acts = actions(&plan);
    acts.sort();
    assert_eq!(acts, vec!["update", "update"], "{plan:#}");
    let team_change = changes(&plan)
        .iter()
        .find(|c| c["cloud_id"] == json!(team))
        .unwrap_or_else(|| panic!("no change of the team group: {plan:#}"));
    let added: Vec<String> = team_change["members_add"]
        .as_array()
        .expect("members_add")
        .iter()
        .map(|m| m.as_str().unwrap_or_default().to_lowercase())
        .collect();
    assert_eq!(added, vec![u1_dn.clone()], "{plan:#}");
    assert_eq!(state_rows(&state), before, "plan changed the state file");
    // Not in the history: the id would be the next sync's.
    assert_eq!(plan["run_id"], 0, "{plan:#}");
    let ad_after = (
        bed.group_by_id(&team).await.expect("team"),
        bed.group_by_id(&notes).await.expect("notes"),
    );
    assert_eq!(ad_after, ad_before, "plan wrote to AD");

    // A second plan sees the same: the first consumed no delta.
    let again = bed.run_json(&["plan"], 0);
    assert_eq!(changes(&again), changes(&plan), "{again:#}");
    assert_eq!(again["sweep"], plan["sweep"], "{again:#}");
    assert_eq!(
        state_rows(&state),
        before,
        "second plan changed the state file"
    );
    let left: Vec<String> = std::fs::read_dir(bed.dir.path())
        .expect("list the state directory")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".writeback-plan-"))
        .collect();
    assert!(
        left.is_empty(),
        "a plan left a copy beside the state: {left:?}"
    );

    // The sync does exactly what the plan showed, from the same delta round.
    let applied = bed.run_json(&["sync"], 0);
    assert_eq!(changes(&applied), changes(&plan), "{applied:#}");
    assert_eq!(applied["sweep"], plan["sweep"], "{applied:#}");
    assert_eq!(applied["counts"], plan["counts"], "{applied:#}");
    let (_, g) = bed.group_by_id(&team).await.expect("team");
    let members: Vec<String> = g["member"].iter().map(|m| m.to_lowercase()).collect();
    assert_eq!(members, vec![u1_dn], "{members:?}");
    let (_, n) = bed.group_by_id(&notes).await.expect("notes");
    assert_eq!(first(&n, "description"), "planned, then synced");
    let settled = bed.run_json(&["sync"], 0);
    assert!(changes(&settled).is_empty(), "{settled:#}");

    bed.cleanup().await;
}

/// `member` of the group at `dn` (any object), lower-cased.
async fn member_values(bed: &mut Bed, dn: &str) -> std::collections::BTreeSet<String> {
    bed.values_of(dn, "member").await.into_iter().collect()
}

async fn add_group(bed: &mut Bed, dn: &str, members: &[&str]) {
    let mut attrs = vec![("objectClass", ["group"].into_iter().collect())];
    if !members.is_empty() {
        attrs.push(("member", members.iter().copied().collect()));
    }
    bed.ldap
        .add(dn, attrs)
        .await
        .expect("add")
        .success()
        .expect("add group");
}

#[tokio::test]
async fn member_of_links_into_existing_groups_and_removes_only_its_own() {
    let mut bed = Bed::new("wb-e2e-links", 1).await;
    bed.create_default_containers().await;
    // The file-share groups: outside the managed OUs, made by hand, with a member of their own.
    let shares = format!("OU=Shares,{}", bed.root);
    writeback_integration::testbed::create_ou(&mut bed.ldap, &shares).await;
    let (rw, audit) = (
        format!("CN=FS-Finance-RW,{shares}"),
        format!("CN=FS-Audit,{shares}"),
    );
    let user = bed.users[0].dn.clone();
    add_group(&mut bed, &rw, &[&user]).await;
    add_group(&mut bed, &audit, &[]).await;
    bed.ad.delegate_link_target(&shares);

    let rules = bed.dir.path().join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    std::fs::write(
        rules.join("10-links.rhai"),
        r#"import "std/naming" as naming;
fn in_scope(group) { group.securityEnabled }
fn to_ad(group) {
    #{
        parent: setting("security_container"),
        cn: naming::display_name_suffixed(group),
        attributes: #{ groupType: -2147483640, displayName: group.displayName },
        on_create: #{ sAMAccountName: naming::sam(group) },
        member_of: switch group.description {
            "rw" => [setting("rw")],
            "outside" => [setting("outside")],
            _ => [],
        },
    }
}
"#,
    )
    .expect("write rule");
    let finance = new_id();
    let mut g = security_group(&finance, "Finance", &[]);
    g["description"] = json!("rw");
    bed.seed(vec![], vec![g], &[]);
    let path = bed.write_config(Some(&rules), "", "");
    let text = std::fs::read_to_string(&path).expect("config");
    let outside = format!("CN=Domain Admins,CN=Users,{}", bed.ad.base_dn);
    let text = text
        .replacen(
            "managed_ous = [",
            &format!("link_targets = [\"{shares}\"]\nmanaged_ous = ["),
            1,
        )
        .replacen(
            "[rules.settings]\n",
            &format!("[rules.settings]\nrw = \"{rw}\"\noutside = \"{outside}\"\n"),
            1,
        );
    std::fs::write(&path, text).expect("write config");

    // The plan shows the link before anything is written.
    let plan = bed.run_json(&["plan"], 0);
    assert_eq!(
        changes(&plan)[0]["links"],
        json!({ "add": [rw] }),
        "{plan:#}"
    );
    assert!(!member_values(&mut bed, &rw)
        .await
        .iter()
        .any(|m| m.contains("finance")));
    bed.run_json(&["sync"], 0);
    let (dn, _) = bed.group_by_id(&finance).await.expect("created");
    let rw_members = member_values(&mut bed, &rw).await;
    assert!(rw_members.contains(&dn.to_lowercase()), "{rw_members:?}");
    assert!(rw_members.contains(&user.to_lowercase()), "{rw_members:?}");

    // Someone links the group into FS-Audit by hand: a full sync leaves that link alone.
    bed.ldap
        .modify(
            &audit,
            vec![ldap3::Mod::Add(
                "member",
                [dn.as_str()].into_iter().collect(),
            )],
        )
        .await
        .expect("modify")
        .success()
        .expect("hand link");
    let r = bed.run_json(&["sync", "--full"], 0);
    assert!(actions(&r).is_empty(), "{r:#}");

    // The rule drops the link: only Writeback's own goes; the hand-made one and the share
    // group's own member stay.
    bed.graph(
        "PATCH",
        &format!("/groups/{finance}"),
        Some(json!({ "description": "none" })),
    )
    .await;
    let r = bed.run_json(&["sync"], 0);
    assert_eq!(changes(&r)[0]["links"], json!({ "remove": [rw] }), "{r:#}");
    let rw_members = member_values(&mut bed, &rw).await;
    assert!(!rw_members.contains(&dn.to_lowercase()), "{rw_members:?}");
    assert!(rw_members.contains(&user.to_lowercase()), "{rw_members:?}");
    assert!(member_values(&mut bed, &audit)
        .await
        .contains(&dn.to_lowercase()));

    // A target outside ad.link_targets is refused, naming the rule; nothing is written.
    bed.graph(
        "PATCH",
        &format!("/groups/{finance}"),
        Some(json!({ "description": "outside" })),
    )
    .await;
    let r = bed.run_json(&["sync"], 2);
    let refused = r["plan"]["refused"][0].clone();
    assert_eq!(refused["rule"], json!("10-links.rhai"), "{r:#}");
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|why| why.contains("ad.link_targets")),
        "{r:#}"
    );
    assert!(!member_values(&mut bed, &outside)
        .await
        .contains(&dn.to_lowercase()));

    // Linked again, then deleted in the cloud: the group goes, the share group's member stays.
    bed.graph(
        "PATCH",
        &format!("/groups/{finance}"),
        Some(json!({ "description": "rw" })),
    )
    .await;
    bed.run_json(&["sync"], 0);
    assert!(member_values(&mut bed, &rw)
        .await
        .contains(&dn.to_lowercase()));
    bed.graph("DELETE", &format!("/groups/{finance}"), None)
        .await;
    let r = bed.run_json(&["sync"], 0);
    assert_eq!(actions(&r), vec!["delete"], "{r:#}");
    assert_eq!(
        member_values(&mut bed, &rw).await,
        [user.to_lowercase()].into_iter().collect()
    );
    bed.cleanup().await;
}
