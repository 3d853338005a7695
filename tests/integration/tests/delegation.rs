//! The `writeback` binary under test binds as a service account that has only the rights
//! docs/OPERATIONS.md documents, granted on the managed OU by `packaging/delegate-samba.sh`
//! (the harness does this for every bed). These tests prove that the account is that narrow,
//! and that a whole group life cycle goes through with it.

use ldap3::controls::RawControl;
use ldap3::{Ldap, Mod, Scope, SearchEntry};
use serde_json::json;
use std::collections::HashSet;
use writeback_integration::harness::{m365_group, new_id, security_group, Bed};

/// LDAP result code insufficientAccessRights.
const INSUFFICIENT_ACCESS: u32 = 50;

/// `LDAP_SERVER_SD_FLAGS_OID` asking for the owner only: SEQUENCE { INTEGER 1 }.
fn owner_only() -> RawControl {
    RawControl {
        ctype: "1.2.840.113556.1.4.801".to_string(),
        crit: true,
        val: Some(vec![0x30, 0x03, 0x02, 0x01, 0x01]),
    }
}

/// The owner SID of `dn`, from its self-relative security descriptor.
async fn owner_of(ldap: &mut Ldap, dn: &str) -> String {
    let (rs, _) = ldap
        .with_controls(owner_only())
        .search(
            dn,
            Scope::Base,
            "(objectClass=*)",
            vec!["nTSecurityDescriptor"],
        )
        .await
        .expect("read nTSecurityDescriptor")
        .success()
        .expect("read nTSecurityDescriptor result");
    let e = SearchEntry::construct(rs.into_iter().next().expect("entry"));
    let sd = &e.bin_attrs["nTSecurityDescriptor"][0];
    // SECURITY_DESCRIPTOR_RELATIVE: revision, sbz1, control (2), then OffsetOwner (4, LE).
    let at = u32::from_le_bytes(sd[4..8].try_into().expect("offset")) as usize;
    writeback::ad::dn::sid_to_string(&sd[at..]).expect("owner SID")
}

async fn sid_of(ldap: &mut Ldap, dn: &str) -> String {
    let (rs, _) = ldap
        .search(dn, Scope::Base, "(objectClass=*)", vec!["objectSid"])
        .await
        .expect("read objectSid")
        .success()
        .expect("read objectSid result");
    let e = SearchEntry::construct(rs.into_iter().next().expect("entry"));
    writeback::ad::dn::sid_to_string(&e.bin_attrs["objectSid"][0]).expect("objectSid")
}

fn group_attrs(sam: &str) -> Vec<(&'static str, HashSet<&str>)> {
    vec![
        ("objectClass", HashSet::from(["group"])),
        ("sAMAccountName", HashSet::from([sam])),
    ]
}

#[tokio::test]
async fn the_service_account_writes_groups_in_its_managed_ou_and_nowhere_else() {
    let bed = Bed::new("wb-deleg-narrow", 1).await;
    let mut svc = bed.ad.connect_as_service().await;

    // In no group: its rights are the delegated ones and those of Domain Users.
    let (rs, _) = svc
        .search(
            &bed.ad.service_dn,
            Scope::Base,
            "(objectClass=*)",
            vec!["memberOf"],
        )
        .await
        .expect("read memberOf")
        .success()
        .expect("read memberOf result");
    let me = SearchEntry::construct(rs.into_iter().next().expect("service account"));
    assert!(
        me.attrs.get("memberOf").is_none_or(|v| v.is_empty()),
        "the service account is in groups: {:?}",
        me.attrs.get("memberOf")
    );

    // Outside the managed OU: no group, no change to a user.
    let outside = format!("CN=wb-outside-{},{}", &new_id()[..8], bed.root);
    let sam = format!("wbo{}", &new_id()[..8]);
    let rc = svc.add(&outside, group_attrs(&sam)).await.expect("add").rc;
    assert_eq!(
        rc, INSUFFICIENT_ACCESS,
        "group created outside the managed OU"
    );
    let user = bed.users[0].dn.clone();
    let rc = svc
        .modify(
            &user,
            vec![Mod::Replace("description", HashSet::from(["changed"]))],
        )
        .await
        .expect("modify")
        .rc;
    assert_eq!(
        rc, INSUFFICIENT_ACCESS,
        "a user outside the managed OU was changed"
    );

    // Inside: create, change a delegated attribute, and delete.
    let inside = format!("CN=wb-inside-{},{}", &new_id()[..8], bed.managed);
    let sam = format!("wbi{}", &new_id()[..8]);
    svc.add(&inside, group_attrs(&sam))
        .await
        .expect("add")
        .success()
        .expect("create a group in the managed OU");
    svc.modify(
        &inside,
        vec![Mod::Replace("description", HashSet::from(["ok"]))],
    )
    .await
    .expect("modify")
    .success()
    .expect("write a delegated attribute");
    // An attribute outside the documented list stays refused, also on its own group.
    let rc = svc
        .modify(&inside, vec![Mod::Replace("info", HashSet::from(["no"]))])
        .await
        .expect("modify")
        .rc;
    assert_eq!(
        rc, INSUFFICIENT_ACCESS,
        "an undelegated attribute was written"
    );
    svc.delete(&inside)
        .await
        .expect("delete")
        .success()
        .expect("delete a group in the managed OU");
    let _ = svc.unbind().await;
    bed.cleanup().await;
}

#[tokio::test]
async fn a_whole_group_life_cycle_goes_through_as_the_service_account() {
    let mut bed = Bed::new("wb-deleg-cycle", 3).await;
    bed.create_default_containers().await;
    let users = bed.synced_users();
    let ids: Vec<String> = users
        .iter()
        .map(|u| u["id"].as_str().unwrap_or_default().to_string())
        .collect();
    let (m365, sec) = (new_id(), new_id());
    bed.seed(
        users.clone(),
        vec![
            m365_group(&m365, "Deleg Team", "delegteam", &[&ids[0], &ids[1]]),
            security_group(&sec, "Deleg Sec", &[&ids[2]]),
        ],
        &[],
    );
    let config = bed.write_config(None, "", "");
    let text = std::fs::read_to_string(&config).expect("read config");
    assert!(
        text.contains(&format!("bind_dn = \"{}\"", bed.ad.service_dn)),
        "the binary does not bind as the service account:\n{text}"
    );

    bed.run_json(&["sync"], 0);
    let service_sid = sid_of(&mut bed.ldap, &bed.ad.service_dn.clone()).await;
    for id in [&m365, &sec] {
        let (dn, attrs) = bed.group_by_id(id).await.expect("group written");
        assert_eq!(
            owner_of(&mut bed.ldap, &dn).await,
            service_sid,
            "{dn} was not created by the service account"
        );
        assert!(attrs.contains_key("member"), "{dn} has no members");
    }

    let sam_before = bed.group_by_id(&m365).await.expect("written").1["samaccountname"].clone();
    assert!(
        !sam_before.is_empty(),
        "the Microsoft 365 group has an account name"
    );
    // Update every kind of thing the rules write, rename (modify DN), change members.
    bed.graph(
        "PATCH",
        &format!("/groups/{m365}"),
        Some(json!({ "displayName": "Deleg Team Renamed", "description": "new text" })),
    )
    .await;
    bed.graph(
        "DELETE",
        &format!("/groups/{m365}/members/{}/$ref", ids[1]),
        None,
    )
    .await;
    bed.run_json(&["sync"], 0);
    let (dn, attrs) = bed.group_by_id(&m365).await.expect("group still there");
    assert!(dn.starts_with("cn=deleg team renamed"), "not renamed: {dn}");
    // sAMAccountName is create-only in the default rule: the rename leaves it.
    assert_eq!(
        attrs["samaccountname"], sam_before,
        "the account name followed the rename"
    );
    assert_eq!(attrs["description"], vec!["new text".to_string()]);
    assert_eq!(attrs["member"].len(), 1, "{:?}", attrs["member"]);

    // Out of the cloud: deleted in AD.
    bed.graph("DELETE", &format!("/groups/{sec}"), None).await;
    bed.run_json(&["sync"], 0);
    assert!(
        bed.group_by_id(&sec).await.is_none(),
        "security group not deleted"
    );
    assert!(bed.group_by_id(&m365).await.is_some());
    bed.cleanup().await;
}

/// `writeback check --online` asks Graph and AD what the first sync needs and writes nothing:
/// it passes as the delegated account, and names the missing right on an OU that was not
/// delegated.
#[tokio::test]
async fn check_online_asks_ad_for_the_accounts_rights_and_writes_nothing() {
    let mut bed = Bed::new("wb-deleg-check", 0).await;
    bed.create_default_containers().await;
    bed.seed(
        vec![],
        vec![security_group(&new_id(), "Check Sec", &[])],
        &[],
    );
    let config = bed.write_config(None, "", "");
    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };

    let before = bed.highest_usn().await;
    let out = bed.run(&["check", "--online"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("no group below it yet"), "{said}");
    for line in [
        "ok: Graph token",
        "ok: Graph groups delta, first page",
        "ok: Graph users delta, first page",
        "ok: AD bind to",
        "may create groups",
        "nothing was written",
    ] {
        assert!(said.contains(line), "{line:?} missing:\n{said}");
    }
    assert_eq!(
        bed.highest_usn().await,
        before,
        "check --online wrote to AD"
    );

    // With a group below the OU, AD also answers for the attributes on groups.
    bed.run_json(&["sync"], 0);
    let out = bed.run(&["check", "--online"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    // What the host always writes and what the default security rule writes on the group.
    let granted = said
        .lines()
        .find(|l| l.contains("may write") && l.contains(&bed.managed))
        .unwrap_or_default()
        .to_string();
    for attr in [
        "adminDescription",
        "description",
        "displayName",
        "groupType",
        "member",
        "msDS-ExternalDirectoryObjectId",
    ] {
        assert!(granted.contains(attr), "{attr} not asked about:\n{said}");
    }

    // Rules that also write `info`, which the account was not given: named.
    let rules = bed.dir.path().join("rules-info");
    std::fs::create_dir_all(&rules).expect("rules dir");
    let security = std::fs::read_to_string(
        writeback_integration::harness::workspace_root().join("scripts/20-security.rhai"),
    )
    .expect("the default security rule");
    let security = security.replacen(
        "            displayName: group.displayName,",
        "            displayName: group.displayName,\n            info: \"x\",",
        1,
    );
    assert!(security.contains("info: \"x\""), "the rule did not change");
    std::fs::write(rules.join("20-security.rhai"), security).expect("rule");
    let body = std::fs::read_to_string(&config).expect("config");
    let with_info = body.replacen(
        &format!(
            "folder = \"{}\"",
            writeback_integration::harness::workspace_root()
                .join("scripts")
                .display()
        ),
        &format!("folder = \"{}\"", rules.display()),
        1,
    );
    assert_ne!(with_info, body, "the rules folder did not change");
    std::fs::write(&config, &with_info).expect("config");
    let out = bed.run(&["check", "--online"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("may not write info on the groups below it"),
        "{said}"
    );
    std::fs::write(&config, &body).expect("config");

    // An OU the account was given no right on: named, with the right and how to grant it.
    let other = format!("OU=Not Delegated,{}", bed.root);
    writeback_integration::testbed::create_ou(&mut bed.ldap, &other).await;
    let body = std::fs::read_to_string(&config).expect("config");
    let body = body.replacen(
        &format!("managed_ous = [\"{}\"]", bed.managed),
        &format!("managed_ous = [\"{}\", \"{other}\"]", bed.managed),
        1,
    );
    std::fs::write(&config, body).expect("config");
    let before = bed.highest_usn().await;
    let out = bed.run(&["check", "--online"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains(&format!("FAILED: managed OU {other}"))
            && said.contains("may not create groups there (the Create group objects right)"),
        "{said}"
    );
    assert!(said.contains("1 of "), "{said}");
    assert_eq!(
        bed.highest_usn().await,
        before,
        "check --online wrote to AD"
    );
    bed.cleanup().await;
}
