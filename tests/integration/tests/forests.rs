//! Several AD targets in one config against two real, independent Samba forests (forest A,
//! `CORP`, and forest B, `FABRIKAM`) and the Graph emulator: one cloud group written into
//! both with each forest's own members, the other members reported per target, and forest B's
//! DC stopped while forest A goes on, B catching up once it is back.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use writeback_integration::eventually;
use writeback_integration::harness::{
    cloud_user, free_port, new_id, security_group, Bed, ForestBed, OnPremUser,
};
use writeback_integration::testbed::create_ou;

const DAEMON: &str =
    "poll_interval_secs = 1\nreconcile_interval_secs = 0\nready_within_polls = 2\n";

/// Writes the two-target config: `[ad]` (forest A, named `corp`) from the bed, and
/// `[targets.fabrikam]` for forest B, its service password in a private file.
fn write_config(a: &Bed, b: &ForestBed, daemon: &str) {
    let extra = format!(
        "[daemon]\n{daemon}\n{}",
        b.target_toml(a.dir.path(), "fabrikam", "fabrikam.db")
    );
    let path = a.write_config(None, "", &extra);
    let text = std::fs::read_to_string(&path).expect("read config");
    std::fs::write(&path, text.replacen("[ad]\n", "[ad]\nname = \"corp\"\n", 1))
        .expect("name the first target");
}

/// The members (lowercased DNs) of the group anchored to cloud group `id` below `managed`.
async fn members_in(ldap: &mut ldap3::Ldap, managed: &str, id: &str) -> Option<BTreeSet<String>> {
    let (rs, _) = ldap
        .search(
            managed,
            ldap3::Scope::Subtree,
            &format!("(msDS-ExternalDirectoryObjectId=Group_{id})"),
            vec!["member"],
        )
        .await
        .ok()?
        .success()
        .ok()?;
    let e = ldap3::SearchEntry::construct(rs.into_iter().next()?);
    Some(
        e.attrs
            .get("member")
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.to_lowercase())
            .collect(),
    )
}

fn dns(users: &[&OnPremUser]) -> BTreeSet<String> {
    users.iter().map(|u| u.dn.to_lowercase()).collect()
}

/// `dns(users)` and the DN `nested` (a group's copy in the same forest).
fn with_group(users: &[&OnPremUser], nested: &str) -> Option<BTreeSet<String>> {
    let mut all = dns(users);
    all.insert(nested.to_lowercase());
    Some(all)
}

/// The DN of the group anchored to cloud group `id` below `managed`.
async fn dn_of(ldap: &mut ldap3::Ldap, managed: &str, id: &str) -> String {
    let (rs, _) = ldap
        .search(
            managed,
            ldap3::Scope::Subtree,
            &format!("(msDS-ExternalDirectoryObjectId=Group_{id})"),
            vec!["cn"],
        )
        .await
        .expect("search")
        .success()
        .expect("search result");
    let e = rs
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no copy of {id} below {managed}"));
    ldap3::SearchEntry::construct(e).dn
}

fn add_member_body(id: &str) -> Value {
    json!({ "@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{id}") })
}

async fn http_get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

#[tokio::test]
async fn one_group_in_two_forests_each_with_its_own_members_and_b_down_holds_up_only_b() {
    let mut a = Bed::new("wb-forests", 2).await;
    a.create_default_containers().await;
    let mut b = ForestBed::new("wb-forests", 2).await;
    create_ou(&mut b.ldap, &format!("OU=M365,{}", b.managed)).await;
    create_ou(&mut b.ldap, &format!("OU=Security,{}", b.managed)).await;
    let (a0, a1) = (a.users[0].clone(), a.users[1].clone());
    let (b0, b1) = (b.users[0].clone(), b.users[1].clone());
    // Cloud users synced from either forest: each one's SID is its own forest's.
    let users = vec![
        cloud_user(&a0.cloud_id, "Alice Corp", Some(&a0.sid)),
        cloud_user(&a1.cloud_id, "Arno Corp", Some(&a1.sid)),
        cloud_user(&b0.cloud_id, "Bea Fabrikam", Some(&b0.sid)),
        cloud_user(&b1.cloud_id, "Bo Fabrikam", Some(&b1.sid)),
    ];
    let (g, child) = (new_id(), new_id());
    a.seed(
        users,
        vec![
            security_group(&g, "Both Forests", &[&a0.cloud_id, &b0.cloud_id, &child]),
            security_group(&child, "Nested In Both", &[]),
        ],
        &[],
    );
    let port = free_port();
    write_config(&a, &b, &format!("{DAEMON}listen = \"127.0.0.1:{port}\"\n"));

    // 1. One sync writes the group into both forests, each with its own forest's members.
    let out = a.run(&["sync"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("== target corp ==") && stdout.contains("== target fabrikam =="),
        "{stdout}"
    );
    // A nested cloud group is its copy in the same forest.
    let child_a = dn_of(&mut a.ldap, &a.managed, &child).await;
    let child_b = dn_of(&mut b.ldap, &b.managed, &child).await;
    assert_eq!(
        members_in(&mut a.ldap, &a.managed, &g).await,
        with_group(&[&a0], &child_a),
        "forest A's copy holds forest A's member"
    );
    assert_eq!(
        members_in(&mut b.ldap, &b.managed, &g).await,
        with_group(&[&b0], &child_b),
        "forest B's copy holds forest B's member"
    );

    // The member of the other forest is reported per target.
    let s: Value = serde_json::from_str(&String::from_utf8_lossy(
        &a.run(&["status", "--json"]).stdout,
    ))
    .expect("status --json");
    for t in ["corp", "fabrikam"] {
        assert_eq!(
            s[t]["unresolved"],
            json!({"members": 1, "groups": 1}),
            "{t}: {s:#}"
        );
    }
    let out = a.run(&["--target", "corp", "explain", &g]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&b0.cloud_id),
        "corp does not report B's member:\n{text}"
    );
    let out = a.run(&["--target", "fabrikam", "explain", "--json", &g]);
    let x: Value = serde_json::from_slice(&out.stdout).expect("explain --json");
    assert!(
        x.to_string().contains(&a0.cloud_id),
        "fabrikam does not report A's member: {x:#}"
    );

    // A second sync writes nothing anywhere; the plan of one target names it.
    let (usn_a, usn_b) = (a.highest_usn().await, highest_usn(&mut b).await);
    let out = a.run(&["sync"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(a.highest_usn().await, usn_a, "forest A written again");
    assert_eq!(highest_usn(&mut b).await, usn_b, "forest B written again");
    let out = a.run(&["--target", "fabrikam", "plan", "--json"]);
    let plan: Value = serde_json::from_slice(&out.stdout).expect("plan --json");
    assert_eq!(plan["target"], "fabrikam", "{plan:#}");

    // 2. Forest B's DC stops. A member of each forest joins the cloud group.
    let stopped = b.stop_dc();
    for m in [&a1.cloud_id, &b1.cloud_id] {
        let st = a
            .graph(
                "POST",
                &format!("/groups/{g}/members/$ref"),
                Some(add_member_body(m)),
            )
            .await;
        assert!(st.is_success(), "add member: {st}");
    }
    // A one-shot sync applies forest A's change, says B could not run, and exits 1.
    let out = a.run(&["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("target fabrikam"), "{stderr}");
    assert_eq!(
        members_in(&mut a.ldap, &a.managed, &g).await,
        with_group(&[&a0, &a1], &child_a),
        "forest A's change waited for forest B"
    );

    // The daemon starts with B's DC still down: it runs A, and says B fails.
    let mut d = a.start_daemon();
    eventually!(
        Duration::from_secs(20),
        "the daemon's metrics naming the failing target",
        http_get(&format!("http://127.0.0.1:{port}/metrics"))
            .await
            .1
            .contains("writeback_cycles_total{sweep=\"failed\",target=\"fabrikam\"}")
    );
    let (_, metrics) = http_get(&format!("http://127.0.0.1:{port}/metrics")).await;
    assert!(
        metrics.contains("target=\"corp\""),
        "no series of target corp:\n{metrics}"
    );
    eventually!(
        Duration::from_secs(15),
        "/readyz to fail while forest B fails",
        http_get(&format!("http://127.0.0.1:{port}/readyz")).await.0 == 503
    );
    // A change in forest A's part goes through meanwhile.
    let st = a
        .graph(
            "DELETE",
            &format!("/groups/{g}/members/{}/$ref", a0.cloud_id),
            None,
        )
        .await;
    assert!(st.is_success(), "remove member: {st}");
    eventually!(
        Duration::from_secs(20),
        "forest A's change while forest B is down",
        members_in(&mut a.ldap, &a.managed, &g).await == with_group(&[&a1], &child_a)
    );

    // 3. B is back: the daemon binds again and B catches up from its own delta link.
    b.start_dc(stopped).await;
    eventually!(
        Duration::from_secs(30),
        "forest B to catch up",
        members_in(&mut b.ldap, &b.managed, &g).await == with_group(&[&b0, &b1], &child_b)
    );
    eventually!(
        Duration::from_secs(15),
        "/readyz to recover",
        http_get(&format!("http://127.0.0.1:{port}/readyz")).await.0 == 200
    );
    assert_eq!(d.stop(Duration::from_secs(20)), Some(0), "{}", d.log_text());
    let log = d.log_text();
    assert!(
        log.contains("fabrikam"),
        "the log does not name target fabrikam"
    );

    // The audit trail names each event's target.
    let out = a.run(&["audit", "--json-lines"]);
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit line"))
        .collect();
    let targets: BTreeSet<&str> = lines.iter().filter_map(|l| l["target"].as_str()).collect();
    assert_eq!(targets, BTreeSet::from(["corp", "fabrikam"]), "{lines:#?}");
    assert!(lines.iter().all(|l| l["target"].is_string()), "{lines:#?}");

    b.cleanup().await;
    a.cleanup().await;
}

async fn highest_usn(b: &mut ForestBed) -> u64 {
    let (rs, _) = b
        .ldap
        .search(
            "",
            ldap3::Scope::Base,
            "(objectClass=*)",
            vec!["highestCommittedUSN"],
        )
        .await
        .expect("rootDSE")
        .success()
        .expect("rootDSE result");
    let e = ldap3::SearchEntry::construct(rs.into_iter().next().expect("rootDSE entry"));
    e.attrs["highestCommittedUSN"][0].parse().expect("a USN")
}

#[tokio::test]
async fn a_config_whose_target_is_unknown_or_shares_a_state_file_is_refused_naming_the_key() {
    let a = Bed::new("wb-forests-cfg", 0).await;
    let b = ForestBed::new("wb-forests-cfg", 0).await;
    write_config(&a, &b, DAEMON);
    // Both targets load, and the rules compile with each one's settings.
    let out = a.run(&["check"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Before any sync, status says so for each target, as an error of its own.
    let out = a.run(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let s: Value = serde_json::from_slice(&out.stdout).expect("status --json");
    for t in ["corp", "fabrikam"] {
        assert!(s[t]["error"].is_string(), "{t}: {s:#}");
    }
    let out = a.run(&["--target", "nowhere", "status"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--target") && stderr.contains("corp, fabrikam"),
        "{stderr}"
    );
    let path = a.config_path();
    let text = std::fs::read_to_string(&path).expect("config");
    std::fs::write(&path, text.replace("fabrikam.db", "state.db")).expect("write");
    let out = a.run(&["check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("targets.fabrikam.state.path"), "{stderr}");
    b.cleanup().await;
    a.cleanup().await;
}

/// A listener that takes connections and never says a word: a DC that hangs (a firewall
/// dropping its answers, a frozen VM) rather than refusing.
fn silent_dc() -> (u16, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().take(64) {
            match conn {
                Ok(c) => held.push(c),
                Err(_) => break,
            }
        }
    });
    (port, handle)
}

#[tokio::test]
async fn a_target_whose_dc_hangs_does_not_hold_up_the_others_in_the_daemon() {
    let mut a = Bed::new("wb-forests-hang", 2).await;
    a.create_default_containers().await;
    let b = ForestBed::new("wb-forests-hang", 0).await;
    let (a0, a1) = (a.users[0].clone(), a.users[1].clone());
    let g = new_id();
    a.seed(
        a.synced_users(),
        vec![security_group(&g, "Hang Elsewhere", &[&a0.cloud_id])],
        &[],
    );
    write_config(&a, &b, DAEMON);
    // Forest B's DC hangs: every bind waits its whole timeout.
    let (port, _dc) = silent_dc();
    let path = a.config_path();
    let text = std::fs::read_to_string(&path).expect("config");
    let text = text.replace(
        &format!(
            "url = \"{}\"\nbind_dn = \"{}\"",
            b.ad.ldaps_url, b.ad.service_dn
        ),
        &format!(
            "url = \"ldaps://127.0.0.1:{port}\"\ntimeout_secs = 30\nbind_dn = \"{}\"",
            b.ad.service_dn
        ),
    );
    assert!(
        text.contains(&format!("127.0.0.1:{port}")),
        "B's URL not replaced"
    );
    std::fs::write(&path, text).expect("write config");

    let mut d = a.start_daemon();
    eventually!(
        Duration::from_secs(15),
        "forest A's first sync while B's DC hangs",
        members_in(&mut a.ldap, &a.managed, &g).await == Some(dns(&[&a0]))
    );
    let st = a
        .graph(
            "POST",
            &format!("/groups/{g}/members/$ref"),
            Some(add_member_body(&a1.cloud_id)),
        )
        .await;
    assert!(st.is_success(), "add member: {st}");
    // Well within B's 30 s timeout: A's cycles do not wait for B's.
    eventually!(
        Duration::from_secs(10),
        "forest A's change while B's DC hangs",
        members_in(&mut a.ldap, &a.managed, &g).await == Some(dns(&[&a0, &a1]))
    );
    assert_eq!(d.stop(Duration::from_secs(45)), Some(0), "{}", d.log_text());
    b.cleanup().await;
    a.cleanup().await;
}
