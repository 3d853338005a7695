//! Join keys (`[members] users = { cloud, ad }`) and the Global Catalog (`ad.gc_url`) against the
//! Samba AD DC and the Graph emulator: each key finds the AD account carrying the cloud value
//! (case-insensitively, values escaped), a value two accounts hold and a missing value are
//! reported and not written, and member lookups go through the Global Catalog port when set.

use std::collections::HashSet;

use ldap3::{Scope, SearchEntry};
use serde_json::{json, Value};
use writeback_integration::harness::{lowercased, new_id, security_group, workspace_root, Bed};

/// A directory extension property of the test tenant's app.
const EXT: &str = "extension_0123456789abcdef0123456789abcdef_hrNumber";

/// Standard base64 with padding, as Connect writes an immutableId.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An AD user created for a test.
struct AdUser {
    dn: String,
    guid_b64: String,
    sid: String,
}

/// Creates a disabled user `name` under the bed's `OU=Users` with `attrs` (name, value).
async fn add_user(bed: &mut Bed, name: &str, attrs: &[(&str, &str)]) -> AdUser {
    let sam = format!("j{}", &new_id()[..12]);
    let dn = format!("CN={name} {sam},OU=Users,{}", bed.root);
    let mut all: Vec<(&str, HashSet<&str>)> = vec![
        ("objectClass", ["user"].into_iter().collect()),
        ("sAMAccountName", [sam.as_str()].into_iter().collect()),
        ("userAccountControl", ["514"].into_iter().collect()),
    ];
    for (a, v) in attrs {
        all.push((a, [*v].into_iter().collect()));
    }
    bed.ldap
        .add(&dn, all)
        .await
        .expect("add user")
        .success()
        .unwrap_or_else(|e| panic!("add {dn}: {e}"));
    let (rs, _) = bed
        .ldap
        .search(
            &dn,
            Scope::Base,
            "(objectClass=*)",
            vec!["objectGUID", "objectSid"],
        )
        .await
        .expect("read user")
        .success()
        .expect("read user result");
    let e = SearchEntry::construct(rs.into_iter().next().expect("user entry"));
    let bin = |a: &str| {
        e.bin_attrs
            .get(a)
            .and_then(|v| v.first())
            .cloned()
            .unwrap_or_else(|| panic!("{a} of {dn}"))
    };
    AdUser {
        dn: dn.clone(),
        guid_b64: base64(&bin("objectGUID")),
        sid: writeback::ad::dn::sid_to_string(&bin("objectSid")).expect("objectSid"),
    }
}

/// A cloud user with `props` (not synced from AD: no onPremisesSecurityIdentifier).
fn cloud(id: &str, name: &str, props: Value) -> Value {
    let mut u = json!({
        "id": id,
        "displayName": name,
        "userPrincipalName": format!("{}@cloud.example", &id[..8]),
    });
    if let (Some(u), Some(p)) = (u.as_object_mut(), props.as_object()) {
        for (k, v) in p {
            u.insert(k.clone(), v.clone());
        }
    }
    u
}

/// Seeds `users` and one security group holding them all, writes the config with `members`
/// (a `[members]` table) and returns the group's id.
fn seed_group(bed: &mut Bed, users: Vec<Value>, members: &str) -> String {
    let g = new_id();
    let ids: Vec<String> = users
        .iter()
        .map(|u| u["id"].as_str().unwrap_or_default().to_string())
        .collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    bed.seed(users, vec![security_group(&g, "Joined", &refs)], &[]);
    bed.write_config(None, "", &format!("[members]\n{members}\n"));
    g
}

/// The unresolved members of a sync report: member id -> reason.
fn unresolved(report: &Value) -> Vec<(String, String)> {
    report["plan"]["unresolved_members"]
        .as_array()
        .unwrap_or_else(|| panic!("no unresolved_members: {report:#}"))
        .iter()
        .map(|u| {
            (
                u["member_id"].as_str().unwrap_or_default().to_string(),
                u["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A second sync writes nothing: the join is stable.
fn converged(bed: &Bed) {
    let again = bed.run_json(&["sync"], 0);
    let changes = again["plan"]["changes"].as_array().map(Vec::len);
    assert_eq!(changes, Some(0), "{again:#}");
}

#[tokio::test]
async fn user_principal_name_joins_case_insensitively() {
    let mut bed = Bed::new("wb-join-upn", 0).await;
    bed.create_default_containers().await;
    let upn = format!("ada.{}@corp.example.test", &new_id()[..8]);
    let ada = add_user(&mut bed, "Ada", &[("userPrincipalName", &upn)]).await;
    add_user(
        &mut bed,
        "Decoy",
        &[("userPrincipalName", &format!("x{upn}"))],
    )
    .await;
    let id = new_id();
    let g = seed_group(
        &mut bed,
        vec![cloud(
            &id,
            "Ada",
            json!({ "userPrincipalName": upn.to_uppercase() }),
        )],
        r#"users = { cloud = "userPrincipalName", ad = "userPrincipalName" }"#,
    );
    let report = bed.run_json(&["sync"], 0);
    assert!(unresolved(&report).is_empty(), "{report:#}");
    assert_eq!(bed.group_members(&g).await, lowercased(&[&ada.dn]));
    converged(&bed);
    bed.cleanup().await;
}

#[tokio::test]
async fn mail_joins_and_a_value_two_accounts_hold_is_reported_not_guessed() {
    let mut bed = Bed::new("wb-join-mail", 0).await;
    bed.create_default_containers().await;
    let tag = &new_id()[..8];
    let (one, shared) = (
        format!("one.{tag}@contoso.example"),
        format!("shared.{tag}@contoso.example"),
    );
    let ada = add_user(&mut bed, "Ada", &[("mail", &one)]).await;
    add_user(&mut bed, "Twin A", &[("mail", &shared)]).await;
    add_user(&mut bed, "Twin B", &[("mail", &shared.to_uppercase())]).await;
    let (a, t) = (new_id(), new_id());
    let g = seed_group(
        &mut bed,
        vec![
            cloud(&a, "Ada", json!({ "mail": one })),
            cloud(&t, "Twin", json!({ "mail": shared })),
        ],
        r#"users = { cloud = "mail", ad = "mail" }"#,
    );
    let report = bed.run_json(&["sync"], 0);
    assert_eq!(bed.group_members(&g).await, lowercased(&[&ada.dn]));
    let u = unresolved(&report);
    assert_eq!(u.len(), 1, "{u:?}");
    assert_eq!(u[0].0, t);
    assert!(
        u[0].1.starts_with("ambiguous: 2 AD accounts have mail")
            && u[0].1.contains("Twin A")
            && u[0].1.contains("Twin B")
            && u[0].1.contains("none is picked"),
        "{u:?}"
    );
    bed.cleanup().await;
}

#[tokio::test]
async fn employee_id_joins_with_filter_characters_escaped_and_a_missing_value_is_reported() {
    let mut bed = Bed::new("wb-join-empid", 0).await;
    bed.create_default_containers().await;
    // `*` and parentheses would be a wildcard and a broken filter unescaped (RFC 4515).
    let tag = &new_id()[..6];
    let value = format!("E*({tag})");
    let ada = add_user(&mut bed, "Ada", &[("employeeID", &value)]).await;
    add_user(&mut bed, "Decoy", &[("employeeID", &format!("E-({tag})"))]).await;
    let (a, none) = (new_id(), new_id());
    let g = seed_group(
        &mut bed,
        vec![
            cloud(&a, "Ada", json!({ "employeeId": value })),
            cloud(&none, "No Number", json!({})),
        ],
        r#"users = { cloud = "employeeId", ad = "employeeID" }"#,
    );
    let report = bed.run_json(&["sync"], 0);
    assert_eq!(bed.group_members(&g).await, lowercased(&[&ada.dn]));
    assert_eq!(
        unresolved(&report),
        vec![(none.clone(), "the cloud user has no employeeId".to_string())]
    );
    converged(&bed);
    bed.cleanup().await;
}

#[tokio::test]
async fn sam_account_name_joins() {
    let mut bed = Bed::new("wb-join-sam", 0).await;
    bed.create_default_containers().await;
    let ada = add_user(&mut bed, "Ada", &[]).await;
    let (rs, _) = bed
        .ldap
        .search(
            &ada.dn,
            Scope::Base,
            "(objectClass=*)",
            vec!["sAMAccountName"],
        )
        .await
        .expect("read sam")
        .success()
        .expect("read sam result");
    let sam = SearchEntry::construct(rs.into_iter().next().expect("entry")).attrs["sAMAccountName"]
        [0]
    .clone();
    let id = new_id();
    let g = seed_group(
        &mut bed,
        vec![cloud(
            &id,
            "Ada",
            json!({ "onPremisesSamAccountName": sam }),
        )],
        r#"users = { cloud = "onPremisesSamAccountName", ad = "sAMAccountName" }"#,
    );
    let report = bed.run_json(&["sync"], 0);
    assert!(unresolved(&report).is_empty(), "{report:#}");
    assert_eq!(bed.group_members(&g).await, lowercased(&[&ada.dn]));
    bed.cleanup().await;
}

#[tokio::test]
async fn a_directory_extension_joins_an_ad_attribute() {
    let mut bed = Bed::new("wb-join-ext", 0).await;
    bed.create_default_containers().await;
    let number = format!("HR-{}", &new_id()[..8]);
    let ada = add_user(&mut bed, "Ada", &[("employeeNumber", &number)]).await;
    let id = new_id();
    let g = seed_group(
        &mut bed,
        vec![cloud(&id, "Ada", json!({ EXT: number }))],
        &format!(r#"users = {{ cloud = "{EXT}", ad = "employeeNumber" }}"#),
    );
    let report = bed.run_json(&["sync"], 0);
    assert!(unresolved(&report).is_empty(), "{report:#}");
    assert_eq!(bed.group_members(&g).await, lowercased(&[&ada.dn]));
    bed.cleanup().await;
}

#[tokio::test]
async fn an_exchange_extension_attribute_joins_an_ad_attribute() {
    let mut bed = Bed::new("wb-join-extattr", 0).await;
    bed.create_default_containers().await;
    let value = format!("badge-{}", &new_id()[..8]);
    let ada = add_user(
        &mut bed,
        "Ada",
        &[("msDS-cloudExtensionAttribute1", &value)],
    )
    .await;
    let id = new_id();
    let g = seed_group(
        &mut bed,
        vec![cloud(
            &id,
            "Ada",
            json!({ "onPremisesExtensionAttributes": { "extensionAttribute5": value } }),
        )],
        r#"users = { cloud = "onPremisesExtensionAttributes.extensionAttribute5", ad = "msDS-cloudExtensionAttribute1" }"#,
    );
    let report = bed.run_json(&["sync"], 0);
    assert!(unresolved(&report).is_empty(), "{report:#}");
    assert_eq!(bed.group_members(&g).await, lowercased(&[&ada.dn]));
    bed.cleanup().await;
}

#[tokio::test]
async fn immutable_id_joins_object_guid_with_the_short_form() {
    let mut bed = Bed::new("wb-join-immutable", 0).await;
    bed.create_default_containers().await;
    let ada = add_user(&mut bed, "Ada", &[]).await;
    let (a, bad, gone) = (new_id(), new_id(), new_id());
    let unknown_guid = base64(uuid::Uuid::new_v4().as_bytes());
    let g = seed_group(
        &mut bed,
        vec![
            cloud(&a, "Ada", json!({ "onPremisesImmutableId": ada.guid_b64 })),
            cloud(
                &bad,
                "Garbled",
                json!({ "onPremisesImmutableId": "not base64!" }),
            ),
            cloud(
                &gone,
                "Gone",
                json!({ "onPremisesImmutableId": unknown_guid }),
            ),
        ],
        r#"user_match = "immutable_id""#,
    );
    let report = bed.run_json(&["sync"], 0);
    assert_eq!(bed.group_members(&g).await, lowercased(&[&ada.dn]));
    let u = unresolved(&report);
    assert!(
        u.contains(&(
            bad.clone(),
            "cloud-only user (no usable onPremisesImmutableId)".into()
        )),
        "{u:?}"
    );
    assert!(
        u.iter()
            .any(|(id, r)| *id == gone && r.starts_with("no AD account has objectGUID ")),
        "{u:?}"
    );
    converged(&bed);
    bed.cleanup().await;
}

#[tokio::test]
async fn immutable_id_joins_the_consistency_guid_as_bytes() {
    let mut bed = Bed::new("wb-join-consistency", 0).await;
    bed.create_default_containers().await;
    let ada = add_user(&mut bed, "Ada", &[]).await;
    // Connect's anchor after a migration: a consistency GUID that is not the objectGUID.
    let anchor = *uuid::Uuid::new_v4().as_bytes();
    bed.ldap
        .modify(
            &ada.dn,
            vec![ldap3::Mod::Replace(
                b"mS-DS-ConsistencyGuid".to_vec(),
                HashSet::from([anchor.to_vec()]),
            )],
        )
        .await
        .expect("set consistency guid")
        .success()
        .expect("set consistency guid result");
    let (a, by_guid) = (new_id(), new_id());
    let g = seed_group(
        &mut bed,
        vec![
            cloud(
                &a,
                "Ada",
                json!({ "onPremisesImmutableId": base64(&anchor) }),
            ),
            // the objectGUID is not the anchor any more: not found
            cloud(
                &by_guid,
                "Old",
                json!({ "onPremisesImmutableId": ada.guid_b64 }),
            ),
        ],
        r#"users = { cloud = "onPremisesImmutableId", ad = "mS-DS-ConsistencyGuid" }"#,
    );
    let report = bed.run_json(&["sync"], 0);
    assert_eq!(bed.group_members(&g).await, lowercased(&[&ada.dn]));
    let u = unresolved(&report);
    assert!(
        u.len() == 1
            && u[0].0 == by_guid
            && u[0]
                .1
                .starts_with("no AD account has mS-DS-ConsistencyGuid "),
        "{u:?}"
    );
    converged(&bed);
    bed.cleanup().await;
}

/// The bed's config with `gc_url` set and the search bases dropped (the whole forest).
fn with_gc(bed: &Bed, gc_url: &str) {
    let path = bed.config_path();
    let text = std::fs::read_to_string(&path).expect("read config");
    let bases = format!("member_search_bases = [\"{}\"]\n", bed.root);
    assert!(text.contains(&bases), "{text}");
    let text = text.replacen(&bases, &format!("gc_url = \"{gc_url}\"\n"), 1);
    std::fs::write(&path, text).expect("write config");
}

/// The Global Catalog's LDAPS port on the test bed's DC (Samba serves it on 3269).
fn gc_ldaps(bed: &Bed) -> String {
    let host = bed
        .ad
        .ldaps_url
        .trim_start_matches("ldaps://")
        .split(':')
        .next()
        .unwrap_or("127.0.0.1")
        .to_string();
    format!("ldaps://{host}:3269")
}

#[tokio::test]
async fn members_are_looked_up_in_the_global_catalog_from_the_forest_root() {
    let mut bed = Bed::new("wb-join-gc", 0).await;
    bed.create_default_containers().await;
    let upn = format!("gc.{}@corp.example.test", &new_id()[..8]);
    let ada = add_user(&mut bed, "Ada", &[("userPrincipalName", &upn)]).await;
    let synced = add_user(&mut bed, "Synced", &[]).await;
    let (a, s) = (new_id(), new_id());
    let mut by_sid = cloud(
        &s,
        "Synced",
        json!({ "onPremisesSecurityIdentifier": synced.sid }),
    );
    by_sid["userPrincipalName"] = json!(format!("synced.{}@corp.example.test", &s[..8]));
    let g = seed_group(
        &mut bed,
        vec![
            cloud(&a, "Ada", json!({ "userPrincipalName": upn })),
            by_sid,
        ],
        r#"users = { cloud = "userPrincipalName", ad = "userPrincipalName" }"#,
    );
    with_gc(&bed, &gc_ldaps(&bed));
    // No search base: the lookup searches "" on the Global Catalog, which only a Global
    // Catalog answers with the forest's objects.
    let report = bed.run_json(&["sync"], 0);
    assert_eq!(bed.group_members(&g).await, lowercased(&[&ada.dn]));
    let u = unresolved(&report);
    assert_eq!(u.len(), 1, "{u:?}");
    assert!(
        u[0].0 == s && u[0].1.starts_with("no AD account has userPrincipalName"),
        "{u:?}"
    );

    // The default SID key through the Global Catalog too.
    bed.write_config(None, "", "");
    with_gc(&bed, &gc_ldaps(&bed));
    let report = bed.run_json(&["sync"], 0);
    assert_eq!(
        bed.group_members(&g).await,
        lowercased(&[&synced.dn]),
        "{report:#}"
    );
    bed.cleanup().await;
}

#[tokio::test]
async fn a_wrong_global_catalog_or_an_attribute_it_lacks_is_a_clear_error() {
    let mut bed = Bed::new("wb-join-gc-bad", 0).await;
    bed.create_default_containers().await;
    let synced = add_user(&mut bed, "Synced", &[("employeeID", "E-1")]).await;
    let s = new_id();
    let g = seed_group(
        &mut bed,
        vec![cloud(
            &s,
            "Synced",
            json!({ "onPremisesSecurityIdentifier": synced.sid, "employeeId": "E-1" }),
        )],
        "",
    );
    // Nothing listens on port 1: the cycle fails, naming the Global Catalog, and writes nothing.
    with_gc(&bed, "ldaps://127.0.0.1:1");
    let out = bed.run(&["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("Global Catalog ldaps://127.0.0.1:1") && stderr.contains("connect"),
        "{stderr}"
    );
    assert!(
        bed.group_by_id(&g).await.is_none(),
        "nothing written without its members"
    );

    // employeeID is not in the partial attribute set: the Global Catalog cannot answer it.
    bed.write_config(
        None,
        "",
        "[members]\nusers = { cloud = \"employeeId\", ad = \"employeeID\" }\n",
    );
    with_gc(&bed, &gc_ldaps(&bed));
    let out = bed.run(&["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("members.users.ad") && stderr.contains("not in the Global Catalog"),
        "{stderr}"
    );
    bed.cleanup().await;
}

#[tokio::test]
async fn synced_groups_join_by_sam_account_name() {
    let mut bed = Bed::new("wb-join-groups", 0).await;
    bed.create_default_containers().await;
    let sam = format!("onprem-{}", &new_id()[..8]);
    let nested_dn = format!("CN={sam},OU=Users,{}", bed.root);
    bed.ldap
        .add(
            &nested_dn,
            vec![
                ("objectClass", ["group"].into_iter().collect()),
                ("sAMAccountName", [sam.as_str()].into_iter().collect()),
            ],
        )
        .await
        .expect("add group")
        .success()
        .expect("add group result");
    let (g, synced) = (new_id(), new_id());
    let synced_group = json!({
        "id": synced,
        "displayName": "On-prem group",
        "groupTypes": [],
        "mailEnabled": false,
        "securityEnabled": true,
        "mailNickname": sam,
        "onPremisesSyncEnabled": true,
        "onPremisesSamAccountName": sam.to_uppercase(),
        "members": [],
    });
    bed.seed(
        vec![],
        vec![security_group(&g, "Outer", &[&synced]), synced_group],
        &[],
    );
    bed.write_config(
        None,
        "",
        "[members]\ngroups = { cloud = \"onPremisesSamAccountName\", ad = \"sAMAccountName\" }\n",
    );
    bed.run_json(&["sync"], 0);
    assert_eq!(bed.group_members(&g).await, lowercased(&[&nested_dn]));
    bed.cleanup().await;
}

/// examples/upn-join: its `[members]` table, as its README says, with the default rules.
#[tokio::test]
async fn the_upn_join_example_writes_members_of_unsynced_users() {
    let example = workspace_root().join("examples/upn-join/members.toml");
    let snippet =
        std::fs::read_to_string(&example).unwrap_or_else(|e| panic!("{}: {e}", example.display()));
    let mut bed = Bed::new("wb-ex-upn-join", 0).await;
    bed.create_default_containers().await;
    let tag = &new_id()[..8];
    let mut ad = Vec::new();
    let mut users = Vec::new();
    for name in ["Grace", "Linus"] {
        let upn = format!("{}.{tag}@corp.example.test", name.to_lowercase());
        ad.push(add_user(&mut bed, name, &[("userPrincipalName", &upn)]).await);
        users.push(cloud(&new_id(), name, json!({ "userPrincipalName": upn })));
    }
    let only_cloud = new_id();
    users.push(cloud(&only_cloud, "Cloud Only", json!({})));
    let ids: Vec<String> = users
        .iter()
        .map(|u| u["id"].as_str().unwrap_or_default().to_string())
        .collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (m365, nick) = (new_id(), format!("upn{tag}"));
    bed.seed(
        users,
        vec![writeback_integration::harness::m365_group(
            &m365, "UPN Team", &nick, &refs,
        )],
        &[],
    );
    bed.write_config(None, "", &snippet);
    let report = bed.run_json(&["sync"], 0);
    assert_eq!(
        bed.group_members(&m365).await,
        lowercased(&[&ad[0].dn, &ad[1].dn]),
        "{report:#}"
    );
    let u = unresolved(&report);
    assert!(
        u.len() == 1
            && u[0].0 == only_cloud
            && u[0].1.starts_with("no AD account has userPrincipalName"),
        "{u:?}"
    );
    converged(&bed);
    bed.cleanup().await;
}
