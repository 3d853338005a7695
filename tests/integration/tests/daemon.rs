//! `writeback run` against the Samba AD DC and the Graph emulator: hot reload, polling,
//! coalescing and reconciliation. Stops mid-run (SIGTERM, kill -9) are in `tests/faults/`.

use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use writeback_integration::harness::{
    m365_group, new_id, security_group, workspace_root, Bed, Daemon,
};

use writeback_integration::eventually;

const DAEMON: &str =
    "[daemon]\npoll_interval_secs = 1\nreconcile_interval_secs = 0\ndebounce_ms = 200\n";

/// A private copy of the shipped rules, to edit.
fn copy_rules(bed: &Bed) -> std::path::PathBuf {
    let dst = bed.dir.path().join("rules");
    std::fs::create_dir_all(&dst).expect("rules dir");
    for e in std::fs::read_dir(workspace_root().join("scripts")).expect("scripts") {
        let e = e.expect("entry");
        if e.path().extension().is_some_and(|x| x == "rhai") {
            std::fs::copy(e.path(), dst.join(e.file_name())).expect("copy rule");
        }
    }
    dst
}

/// Writes like an editor with atomic saves: a temp file renamed over the target.
fn atomic_save(path: &Path, text: &str) {
    let tmp = path.with_extension("rhai.tmp");
    std::fs::write(&tmp, text).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename over");
}

async fn description(bed: &mut Bed, id: &str) -> Option<String> {
    bed.group_by_id(id)
        .await
        .and_then(|(_, a)| a.get("description").and_then(|v| v.first().cloned()))
}

#[tokio::test]
async fn rule_edits_reload_safely_and_take_effect() {
    let mut bed = Bed::new("wb-daemon-reload", 1).await;
    bed.create_default_containers().await;
    let rules = copy_rules(&bed);
    let users = bed.synced_users();
    let u0 = bed.users[0].cloud_id.clone();
    let g = new_id();
    bed.seed(users, vec![security_group(&g, "Reloaded", &[&u0])], &[]);
    bed.write_config(Some(&rules), "", DAEMON);
    let mut d = bed.start_daemon();
    eventually!(
        Duration::from_secs(20),
        "the first sync",
        bed.group_by_id(&g).await.is_some()
    );

    // 1. An edit (atomic save) changes AD within seconds.
    let sec = rules.join("20-security.rhai");
    let original = std::fs::read_to_string(&sec).expect("read rule");
    let edited = original.replace(
        "description: naming::left(description, global::MAX_DESCRIPTION),",
        "description: \"managed by writeback\",",
    );
    assert_ne!(edited, original, "the rule text to edit was not found");
    atomic_save(&sec, &edited);
    eventually!(
        Duration::from_secs(15),
        "the edited rule to change AD",
        description(&mut bed, &g).await.as_deref() == Some("managed by writeback")
    );

    // 2. A broken edit: logged with file:line:column, AD untouched, old rules keep working.
    let usn = bed.highest_usn().await;
    atomic_save(
        &sec,
        &edited.replace("fn to_ad(group) {", "fn to_ad(group) {\n    let x = ;"),
    );
    let log_has_error =
        || d.log_text().contains("20-security.rhai:") && d.log_text().contains("last good rules");
    eventually!(
        Duration::from_secs(15),
        "the reload error in the log",
        log_has_error()
    );
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("20-security.rhai:"))
        .unwrap_or_default()
        .to_string();
    // path:line:column
    let after = line.split("20-security.rhai:").nth(1).unwrap_or_default();
    let mut parts = after.split(':');
    assert!(
        parts
            .next()
            .is_some_and(|l| l.trim().parse::<u32>().is_ok())
            && parts
                .next()
                .is_some_and(|c| c.trim().parse::<u32>().is_ok()),
        "no line:column in {line:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(bed.highest_usn().await, usn, "a broken edit changed AD");
    // The old (last good) rules still handle a new cloud group.
    bed.graph(
        "POST",
        "/groups",
        Some(json!({
            "displayName": "Born During Breakage", "mailEnabled": false,
            "securityEnabled": true, "mailNickname": "born", "groupTypes": [],
        })),
    )
    .await;
    let g2 = find_group_id(&bed, "Born During Breakage").await;
    eventually!(
        Duration::from_secs(15),
        "the new group under the last good rules",
        description(&mut bed, &g2).await.as_deref() == Some("managed by writeback")
    );

    // 3. Fixing the file applies the new rules.
    atomic_save(
        &sec,
        &edited.replace("\"managed by writeback\"", "\"fixed\""),
    );
    eventually!(
        Duration::from_secs(15),
        "the fixed rule to apply",
        description(&mut bed, &g).await.as_deref() == Some("fixed")
    );

    // 4. An edit that takes every group out of scope deletes nothing and says why.
    for f in ["10-microsoft-365.rhai", "20-security.rhai"] {
        let p = rules.join(f);
        let t = std::fs::read_to_string(&p).expect("read");
        let t = t.replacen(
            "fn in_scope(group) {",
            "fn in_scope(group) {\n    return false;",
            1,
        );
        atomic_save(&p, &t);
    }
    eventually!(
        Duration::from_secs(15),
        "the refusal to delete everything",
        d.log_text()
            .contains("in scope, so the plan deletes every group")
    );
    assert!(bed.group_by_id(&g).await.is_some());
    assert!(bed.group_by_id(&g2).await.is_some());

    assert_eq!(d.stop(Duration::from_secs(20)), Some(0));
    bed.cleanup().await;
}

/// The id the emulator gave a group created through the API.
async fn find_group_id(bed: &Bed, name: &str) -> String {
    let token = bed.graph_token().await;
    let v: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1.0/groups", bed.emulator.base_url))
        .query(&[("$filter", format!("displayName eq '{name}'"))])
        .bearer_auth(token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    v["value"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} not found: {v}"))
        .to_string()
}

/// A bed with `n` cloud security groups named `<name> <i>`, the daemon (1 s poll) started and
/// its first sync in AD.
async fn daemon_with_groups(prefix: &str, name: &str, n: usize) -> (Bed, Vec<String>, Daemon) {
    let mut bed = Bed::new(prefix, 0).await;
    bed.create_default_containers().await;
    let ids: Vec<String> = (0..n).map(|_| new_id()).collect();
    let groups = ids
        .iter()
        .enumerate()
        .map(|(i, id)| security_group(id, &format!("{name} {i}"), &[]))
        .collect();
    bed.seed(vec![], groups, &[]);
    bed.write_config(None, "", DAEMON);
    let d = bed.start_daemon();
    eventually!(
        Duration::from_secs(20),
        "the first sync",
        bed.groups().await.len() == n
    );
    (bed, ids, d)
}

#[tokio::test]
async fn a_burst_of_cloud_changes_gives_few_runs_and_a_correct_ad() {
    let (mut bed, ids, mut d) = daemon_with_groups("wb-daemon-burst", "Burst", 10).await;
    let state = bed.dir.path().join("state.db");
    let runs_before = count_runs(&state);

    // 100 changes within about a second.
    let token = bed.graph_token().await;
    let c = reqwest::Client::new();
    let started = Instant::now();
    for n in 0..100 {
        let id = &ids[n % ids.len()];
        let r = c
            .patch(format!("{}/v1.0/groups/{id}", bed.emulator.base_url))
            .bearer_auth(&token)
            .json(&json!({"description": format!("rev {n}")}))
            .send()
            .await
            .expect("patch");
        assert!(r.status().is_success());
    }
    let burst = started.elapsed();
    // Every group ends with its last description.
    eventually!(Duration::from_secs(20), "AD to converge", {
        let mut ok = true;
        for (i, id) in ids.iter().enumerate() {
            let last = (0..100).filter(|n| n % ids.len() == i).max().unwrap_or(0);
            if description(&mut bed, id).await != Some(format!("rev {last}")) {
                ok = false;
                break;
            }
        }
        ok
    });
    let runs = count_runs(&state) - runs_before;
    // One run per poll second at most (plus one in flight), not one per change.
    let bound = burst.as_secs() as i64 + 4;
    assert!(runs <= bound, "{runs} runs for 100 changes in {burst:?}");
    assert_eq!(d.stop(Duration::from_secs(20)), Some(0));
    bed.cleanup().await;
}

/// What `sqlite3` prints for `sql` on the state file (`|`-separated columns); panics with its
/// stderr when it fails.
fn sqlite(state: &Path, sql: &str) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg("-separator")
        .arg("|")
        .arg(state)
        .arg(sql)
        .output()
        .expect("sqlite3");
    assert!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One number from `sqlite3`.
fn sqlite_count(state: &Path, sql: &str) -> i64 {
    let text = sqlite(state, sql);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("sqlite3 printed {text:?} for {sql}"))
}

/// The daemon's cycles after `after`: (sweep, groups evaluated, changes) per run, oldest first.
fn cycles_since(state: &Path, after: i64) -> Vec<(String, i64, i64)> {
    sqlite(
        state,
        &format!(
            "SELECT json_extract(stats_json, '$.sweep'), json_extract(stats_json, '$.evaluated'), \
             json_extract(stats_json, '$.changes') FROM run WHERE id > {after} AND status IS NOT NULL ORDER BY id;"
        ),
    )
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split('|').collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse().ok()).unwrap_or(-1);
        (f.first().unwrap_or(&"").to_string(), num(1), num(2))
    })
    .collect()
}

fn last_run_id(state: &Path) -> i64 {
    sqlite_count(state, "SELECT coalesce(max(id), 0) FROM run;")
}

#[tokio::test]
async fn idle_daemon_cycles_read_no_group_and_write_nothing_then_one_change_costs_one_group() {
    let (mut bed, ids, mut d) = daemon_with_groups("wb-daemon-idle", "Idle", 20).await;
    // Past the cycle that created them (and its bookkeeping), AD stands still.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let state = bed.dir.path().join("state.db");
    let mark = last_run_id(&state);
    let usn = bed.highest_usn().await;
    eventually!(
        Duration::from_secs(20),
        "four idle cycles",
        cycles_since(&state, mark).len() >= 4
    );
    let idle = cycles_since(&state, mark);
    for (sweep, evaluated, changes) in &idle {
        assert_eq!(
            (sweep.as_str(), *evaluated, *changes),
            ("idle", 0, 0),
            "an idle cycle looked at the cache or planned a change: {idle:?}"
        );
    }
    assert_eq!(bed.highest_usn().await, usn, "an idle cycle wrote to AD");

    // One changed group: the next cycle reads and evaluates that group alone.
    let mark = last_run_id(&state);
    bed.graph(
        "PATCH",
        &format!("/groups/{}", ids[7]),
        Some(json!({"description": "changed once"})),
    )
    .await;
    eventually!(
        Duration::from_secs(15),
        "the change in AD",
        description(&mut bed, &ids[7]).await.as_deref() == Some("changed once")
    );
    eventually!(
        Duration::from_secs(5),
        "the cycle's record",
        cycles_since(&state, mark)
            .iter()
            .any(|(_, _, changes)| *changes > 0)
    );
    let after = cycles_since(&state, mark);
    let applied: Vec<_> = after.iter().filter(|(_, _, c)| *c > 0).collect();
    assert_eq!(
        applied,
        vec![&("changed".to_string(), 1, 1)],
        "the change should cost one group: {after:?}"
    );
    assert!(
        after
            .iter()
            .filter(|(_, _, c)| *c == 0)
            .all(|(s, e, _)| s == "idle" && *e == 0),
        "cycles around the change: {after:?}"
    );
    assert_eq!(d.stop(Duration::from_secs(20)), Some(0));
    bed.cleanup().await;
}

/// Runs that applied at least one change.
fn count_runs(state: &Path) -> i64 {
    sqlite_count(
        state,
        "SELECT count(*) FROM run WHERE json_extract(stats_json, '$.changes') > 0;",
    )
}

#[tokio::test]
async fn reconciliation_puts_back_a_hand_edit() {
    let mut bed = Bed::new("wb-daemon-drift", 0).await;
    bed.create_default_containers().await;
    let g = new_id();
    let m = new_id();
    bed.seed(
        vec![],
        vec![
            security_group(&g, "Drifter", &[]),
            m365_group(&m, "Drifter Team", &format!("drift{}", &m[..6]), &[]),
        ],
        &[],
    );
    bed.write_config(
        None,
        "",
        "[daemon]\npoll_interval_secs = 1\nreconcile_interval_secs = 2\n",
    );
    let mut d = bed.start_daemon();
    eventually!(
        Duration::from_secs(20),
        "the first sync",
        bed.group_by_id(&g).await.is_some() && bed.group_by_id(&m).await.is_some()
    );
    let (dn, _) = bed.group_by_id(&g).await.expect("group");
    let (mdn, _) = bed.group_by_id(&m).await.expect("group");
    bed.ldap
        .modify(
            &dn,
            vec![ldap3::Mod::Replace(
                "description",
                ["edited by hand"].into_iter().collect(),
            )],
        )
        .await
        .expect("modify")
        .success()
        .expect("hand edit");
    bed.ldap
        .modify(
            &mdn,
            vec![ldap3::Mod::Delete(
                "proxyAddresses",
                std::collections::HashSet::new(),
            )],
        )
        .await
        .expect("modify")
        .success()
        .expect("hand edit");
    eventually!(
        Duration::from_secs(15),
        "the hand edits to be reverted",
        description(&mut bed, &g).await.as_deref() == Some("Drifter (security)")
            && bed
                .group_by_id(&m)
                .await
                .is_some_and(|(_, a)| a.contains_key("proxyaddresses"))
    );
    // The cycle logs its drift after its writes are visible: wait for the line.
    let logged = Instant::now();
    while !d.log_text().contains("drift") {
        assert!(
            logged.elapsed() < Duration::from_secs(10),
            "drift not reported:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(d.stop(Duration::from_secs(20)), Some(0));
    bed.cleanup().await;
}
