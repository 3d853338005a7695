//! Triggers and schedules end to end: the `writeback` binary against the Samba AD DC and the
//! Graph emulator, with a local HTTP receiver (127.0.0.1) that records what the rules post.

use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use writeback_integration::harness::{new_id, security_group, workspace_root, Bed};
use writeback_integration::receiver::{Behaviour, Received, Receiver};

/// The example rule set (default security rule + `on_created` webhook), copied so a test can
/// add rule files.
fn example_rules(bed: &Bed, extra: &[(&str, &str)]) -> PathBuf {
    let dst = bed.dir.path().join("rules");
    std::fs::create_dir_all(&dst).expect("rules dir");
    let src = workspace_root().join("examples/webhook-on-create/rules/20-security.rhai");
    std::fs::copy(&src, dst.join("20-security.rhai")).expect("copy example rule");
    for (name, text) in extra {
        std::fs::write(dst.join(name), text).expect("write rule");
    }
    dst
}

/// The bed's config plus `hook_url` and `[rules]` / top-level extras.
fn configure(bed: &Bed, rules: &Path, hook_url: &str, rules_extra: &str, extra: &str) {
    let path = bed.write_config(Some(rules), "", extra);
    let text = std::fs::read_to_string(&path).expect("read config");
    let text = text
        .replacen(
            "[rules]\n",
            // The receiver listens on loopback, which triggers reach only when allowed.
            &format!("[rules]\nhttp_allowed_networks = [\"127.0.0.1\"]\n{rules_extra}\n"),
            1,
        )
        .replacen(
            "[rules.settings]\n",
            &format!("[rules.settings]\nhook_url = \"{hook_url}\"\n"),
            1,
        );
    std::fs::write(&path, text).expect("write config");
}

/// Every run and audit row, as `sqlite3 -json` prints them.
fn audit_dump(bed: &Bed) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg("-json")
        .arg(bed.dir.path().join("state.db"))
        .arg("SELECT * FROM run; SELECT * FROM run_event;")
        .output()
        .expect("sqlite3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `(action, outcome, detail)` of the audit events whose action starts with `prefix`.
fn audit(bed: &Bed, prefix: &str) -> Vec<(String, String, Value)> {
    let out = std::process::Command::new("sqlite3")
        .arg("-json")
        .arg(bed.dir.path().join("state.db"))
        .arg(format!(
            "SELECT action, outcome, detail_json FROM run_event WHERE action LIKE '{prefix}%' ORDER BY id;"
        ))
        .output()
        .expect("sqlite3");
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Vec::new();
    }
    let rows: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "sqlite3 -json: {e}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    rows.into_iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or_default().to_string(),
                r["outcome"].as_str().unwrap_or_default().to_string(),
                serde_json::from_str(r["detail_json"].as_str().unwrap_or("null"))
                    .unwrap_or(Value::Null),
            )
        })
        .collect()
}

#[tokio::test]
async fn on_created_is_planned_then_fires_once_per_created_group() {
    let mut bed = Bed::new("wb-trig-create", 1).await;
    bed.create_default_containers().await;
    let hook = Receiver::start();
    let rules = example_rules(&bed, &[]);
    let users = bed.synced_users();
    let u0 = bed.users[0].cloud_id.clone();
    let g = new_id();
    bed.seed(users, vec![security_group(&g, "Webhook Team", &[&u0])], &[]);
    configure(&bed, &rules, &hook.url, "", "");

    // The plan lists the trigger and calls nothing.
    let plan = bed.run_json(&["plan"], 0);
    assert_eq!(
        plan["plan"]["triggers"],
        json!([{ "cloud_id": g, "rule": "20-security.rhai", "hook": "on_created" }]),
        "{plan:#}"
    );
    assert_eq!(plan["trigger_results"], json!([]));
    let text = bed.run(&["plan"]);
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        text.contains("\u{2192} on_created [20-security.rhai]"),
        "{text}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        hook.received().is_empty(),
        "plan called out: {:?}",
        hook.received()
    );
    assert!(bed.group_by_id(&g).await.is_none(), "plan wrote AD");

    // The sync creates the group, then posts exactly once.
    let r = bed.run_json(&["sync"], 0);
    let (dn, _) = bed.group_by_id(&g).await.expect("group created");
    assert_eq!(
        r["trigger_results"].as_array().map(Vec::len),
        Some(1),
        "{r:#}"
    );
    assert_eq!(r["trigger_results"][0]["outcome"], "ok", "{r:#}");
    assert_eq!(r["trigger_results"][0]["hook"], "on_created");
    let got = hook.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].path, "/hook");
    assert_eq!(got[0].body["event"], "created");
    assert_eq!(got[0].body["group"], "Webhook Team");
    assert_eq!(
        got[0].body["dn"].as_str().map(str::to_lowercase),
        Some(dn.clone()),
        "{:?}",
        got[0].body
    );
    let events = audit(&bed, "trigger:");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].0.as_str(), events[0].1.as_str()),
        ("trigger:on_created", "ok")
    );
    assert_eq!(events[0].2["rule"], "20-security.rhai");

    // Nothing changed in the cloud: nothing is written and nothing fires.
    let r = bed.run_json(&["sync"], 0);
    assert_eq!(r["plan"]["changes"], json!([]), "{r:#}");
    assert_eq!(r["trigger_results"], json!([]));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(hook.received().len(), 1);
    bed.cleanup().await;
}

#[tokio::test]
async fn a_failing_trigger_is_reported_and_the_group_stays_created() {
    let mut bed = Bed::new("wb-trig-fail", 0).await;
    bed.create_default_containers().await;
    // A port nobody listens on (bound, then released).
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let rules = example_rules(&bed, &[]);
    let g = new_id();
    bed.seed(vec![], vec![security_group(&g, "Unheard", &[])], &[]);
    configure(
        &bed,
        &rules,
        &format!("http://127.0.0.1:{closed}/hook/PATH-CANARY-T0K3N?key=NOT-FOR-LOGS"),
        "trigger_timeout_secs = 10",
        "",
    );
    let started = Instant::now();
    let out = bed.run(&["sync", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "exit status: {stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        bed.group_by_id(&g).await.is_some(),
        "the group was not created"
    );
    let t = &r["trigger_results"][0];
    assert_eq!(t["outcome"], "failed", "{r:#}");
    let error = t["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "http::post http://127.0.0.1:{closed}: cannot connect"
        )),
        "{error}"
    );
    assert!(error.contains("20-security.rhai"), "{error}");
    // Webhook URLs carry their key in the path as often as in the query: neither is shown,
    // logged, reported or kept in the audit trail.
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let trail = audit_dump(&bed);
    for canary in ["NOT-FOR-LOGS", "PATH-CANARY-T0K3N"] {
        assert!(!error.contains(canary), "{error}");
        assert!(!stderr.contains(canary), "{canary} logged: {stderr}");
        assert!(!stdout.contains(canary), "{canary} reported: {stdout}");
        assert!(
            !trail.contains(canary),
            "{canary} in the audit trail: {trail}"
        );
    }
    assert!(
        stderr.contains("trigger failed"),
        "no warning logged: {stderr}"
    );
    let events = audit(&bed, "trigger:");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].1, "failed");
    bed.cleanup().await;
}

#[tokio::test]
async fn on_members_added_gets_the_new_member_dns() {
    let mut bed = Bed::new("wb-trig-members", 2).await;
    bed.create_default_containers().await;
    let hook = Receiver::start();
    let rules = example_rules(&bed, &[]);
    // The rule file gets a second trigger.
    let path = rules.join("20-security.rhai");
    let mut text = std::fs::read_to_string(&path).expect("read rule");
    text.push_str(
        "\nfn on_members_added(group, dn, members) {\n    http::post(setting(\"hook_url\"), #{ event: \"members_added\", dn: dn, members: members });\n}\n",
    );
    std::fs::write(&path, text).expect("write rule");
    let users = bed.synced_users();
    let (u0, u1) = (bed.users[0].clone(), bed.users[1].clone());
    let g = new_id();
    bed.seed(
        users,
        vec![security_group(&g, "Growing", &[&u0.cloud_id])],
        &[],
    );
    configure(&bed, &rules, &hook.url, "", "");
    let r = bed.run_json(&["sync"], 0);
    assert_eq!(r["trigger_results"][0]["hook"], "on_created", "{r:#}");
    assert_eq!(hook.received().len(), 1);

    bed.graph(
        "POST",
        &format!("/groups/{g}/members/$ref"),
        Some(json!({
            "@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{}", u1.cloud_id)
        })),
    )
    .await;
    let plan = bed.run_json(&["plan"], 0);
    assert_eq!(
        plan["plan"]["triggers"],
        json!([{ "cloud_id": g, "rule": "20-security.rhai", "hook": "on_members_added" }]),
        "{plan:#}"
    );
    let r = bed.run_json(&["sync"], 0);
    assert_eq!(r["trigger_results"][0]["outcome"], "ok", "{r:#}");
    let got = hook.received();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].body["event"], "members_added");
    let members: Vec<String> = got[1].body["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| m.as_str().unwrap_or_default().to_lowercase())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(members, vec![u1.dn.to_lowercase()], "{:?}", got[1].body);
    let (dn, _) = bed.group_by_id(&g).await.expect("group");
    assert_eq!(got[1].body["dn"].as_str().map(str::to_lowercase), Some(dn));
    bed.cleanup().await;
}

#[tokio::test]
async fn a_schedule_runs_in_the_daemon() {
    let mut bed = Bed::new("wb-trig-schedule", 0).await;
    bed.create_default_containers().await;
    let hook = Receiver::start();
    let tick = "// Posts a tick every second.\nconst SCHEDULE = \"1s\";\n\nfn in_scope(group) { false }\nfn to_ad(group) { () }\n\nfn on_schedule(info) {\n    http::post(setting(\"hook_url\"), #{ event: \"tick\", rule: info.rule, now: info.now });\n}\n";
    let rules = example_rules(&bed, &[("90-tick.rhai", tick)]);
    bed.seed(vec![], vec![], &[]);
    configure(
        &bed,
        &rules,
        &hook.url,
        "",
        "[daemon]\npoll_interval_secs = 1\nreconcile_interval_secs = 0\n",
    );
    // The plan lists it with its next due time; one-shot verbs never run it.
    let plan = bed.run_json(&["plan"], 0);
    assert_eq!(plan["schedules"][0]["rule"], "90-tick.rhai", "{plan:#}");
    assert_eq!(plan["schedules"][0]["schedule"], "1s");
    assert!(plan["schedules"][0]["next_due"].is_string(), "{plan:#}");
    bed.run_json(&["sync"], 0);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        hook.received().is_empty(),
        "a one-shot verb ran the schedule"
    );

    let mut d = bed.start_daemon();
    let start = Instant::now();
    while hook.received().len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "fewer than 2 ticks in 20 s: {:?}\nlog:\n{}",
            hook.received(),
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(d.stop(Duration::from_secs(20)), Some(0), "{}", d.log_text());
    let got = hook.received();
    for r in &got {
        assert_eq!(r.body["event"], "tick");
        assert_eq!(r.body["rule"], "90-tick.rhai");
        assert!(
            r.body["now"].as_str().is_some_and(|n| n.ends_with('Z')),
            "{r:?}"
        );
    }
    let events = audit(&bed, "schedule");
    assert!(events.len() >= 2, "{events:?}");
    assert!(events.iter().all(|e| e.1 == "ok"), "{events:?}");
    assert!(d.log_text().contains("schedule ran"), "{}", d.log_text());
    bed.cleanup().await;
}

#[tokio::test]
async fn graph_and_ad_reads_work_in_triggers_inside_their_bounds() {
    let mut bed = Bed::new("wb-trig-reads", 1).await;
    bed.create_default_containers().await;
    let hook = Receiver::start();
    let rules = example_rules(&bed, &[]);
    let outside = bed.ad.base_dn.clone();
    let path = rules.join("20-security.rhai");
    let text = std::fs::read_to_string(&path).expect("read rule");
    // on_created reads the group back from Graph and AD, and tries a base it may not read.
    let text = text.replace(
        "fn on_created(group, dn) {",
        &format!(
            r#"fn on_created(group, dn) {{
    let cloud = graph::get(`groups/${{group.id}}`);
    let found = ad::search(dn, "(objectClass=group)", ["cn", "description"]);
    let refused = "";
    try {{ ad::search("{outside}", "(objectClass=user)", ["cn"]); }} catch (e) {{ refused = `${{e}}`; }}
    http::post(setting("hook_url"), #{{
        event: "read", cloud: cloud.displayName, found: found.len(),
        found_dn: found[0].dn, cn: found[0].attrs.cn, refused: refused,
    }});
    return;"#
        ),
    );
    std::fs::write(&path, text).expect("write rule");
    let users = bed.synced_users();
    let g = new_id();
    bed.seed(users, vec![security_group(&g, "Readers", &[])], &[]);
    configure(&bed, &rules, &hook.url, "", "");
    let r = bed.run_json(&["sync"], 0);
    assert_eq!(r["trigger_results"][0]["outcome"], "ok", "{r:#}");
    let (dn, _) = bed.group_by_id(&g).await.expect("group");
    let got = hook.received();
    assert_eq!(got.len(), 1, "{got:?}");
    let b = &got[0].body;
    assert_eq!(b["event"], "read");
    assert_eq!(b["cloud"], "Readers");
    assert_eq!(b["found"], 1);
    assert_eq!(b["found_dn"].as_str().map(str::to_lowercase), Some(dn));
    assert_eq!(
        b["cn"][0].as_str().map(|c| c.starts_with("Readers_")),
        Some(true),
        "{b}"
    );
    let refused = b["refused"].as_str().unwrap_or_default();
    assert!(
        refused.contains("must be inside the managed OUs or the member search bases"),
        "{b}"
    );
    bed.cleanup().await;
}

#[tokio::test]
async fn on_deleted_fires_when_a_sync_deletes_the_group() {
    let mut bed = Bed::new("wb-trig-delete", 0).await;
    bed.create_default_containers().await;
    let hook = Receiver::start();
    let rules = example_rules(&bed, &[]);
    let rule = rules.join("20-security.rhai");
    let mut text = std::fs::read_to_string(&rule).expect("read rule");
    text.push_str(
        "\nfn on_deleted(group_id, dn) {\n    http::post(setting(\"hook_url\"), #{ event: \"deleted\", id: group_id, dn: dn });\n}\n",
    );
    std::fs::write(&rule, text).expect("write rule");
    let g = new_id();
    bed.seed(vec![], vec![security_group(&g, "Leaving Team", &[])], &[]);
    configure(&bed, &rules, &hook.url, "", "");
    bed.run_json(&["sync"], 0);
    let (dn, _) = bed.group_by_id(&g).await.expect("group created");

    bed.graph("DELETE", &format!("/groups/{g}"), None).await;
    let plan = bed.run_json(&["plan"], 0);
    assert_eq!(
        plan["plan"]["triggers"],
        json!([{ "cloud_id": g, "rule": "20-security.rhai", "hook": "on_deleted" }]),
        "{plan:#}"
    );
    let r = bed.run_json(&["sync"], 0);
    assert!(bed.group_by_id(&g).await.is_none(), "deleted: {r:#}");
    assert_eq!(
        r["trigger_results"],
        json!([{
            "cloud_id": g,
            "rule": "20-security.rhai",
            "hook": "on_deleted",
            "dn": r["trigger_results"][0]["dn"],
            "outcome": "ok",
        }]),
        "{r:#}"
    );
    let deleted: Vec<_> = hook
        .received()
        .into_iter()
        .filter(|h| h.body["event"] == "deleted")
        .collect();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0].body["id"], json!(g));
    assert_eq!(
        deleted[0].body["dn"].as_str().map(str::to_lowercase),
        Some(dn),
        "{:?}",
        deleted[0].body
    );
    bed.cleanup().await;
}

#[tokio::test]
async fn a_trigger_to_a_loopback_address_is_refused_unless_allowed_and_the_listener_sees_nothing() {
    let mut bed = Bed::new("wb-trig-egress", 0).await;
    bed.create_default_containers().await;
    let hook = Receiver::start();
    let rules = example_rules(&bed, &[]);
    let g = new_id();
    bed.seed(vec![], vec![security_group(&g, "Egress", &[])], &[]);
    configure(&bed, &rules, &hook.url, "", "");
    // The default policy: no network opened for triggers.
    let path = bed.config_path();
    let text = std::fs::read_to_string(&path).expect("read config");
    std::fs::write(
        &path,
        text.replace("http_allowed_networks = [\"127.0.0.1\"]\n", ""),
    )
    .expect("write config");
    let r = bed.run_json(&["sync"], 0);
    assert!(
        bed.group_by_id(&g).await.is_some(),
        "the group was not created"
    );
    let t = &r["trigger_results"][0];
    assert_eq!(t["outcome"], "failed", "{r:#}");
    let error = t["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("127.0.0.1 is a loopback address, not in rules.http_allowed_networks"),
        "{error}"
    );
    assert!(
        hook.received().is_empty(),
        "the loopback listener was reached"
    );
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_dns_maps_to_loopback_is_refused_after_resolution() {
    use writeback::effects::{Egress, HostEffects};
    use writeback::rules::{Effects, HttpRequest};
    use writeback_integration::dns::{DnsServer, Zone};

    let hook = Receiver::start();
    let port = hook.url.split(':').nth(2).and_then(|p| p.split('/').next());
    let url = format!(
        "http://hooks.corp.example.test:{}/hook",
        port.expect("receiver port")
    );
    // The test's own name server answers the name with 127.0.0.1, as a rebinding attacker's
    // would.
    let dns = DnsServer::start(
        Zone::default().with_a("hooks.corp.example.test", std::net::Ipv4Addr::LOCALHOST),
    );
    let post = |egress: Egress| {
        let fx = HostEffects::new(tokio::runtime::Handle::current(), egress).expect("effects");
        let request = HttpRequest {
            method: "POST".into(),
            url: url.clone(),
            headers: vec![],
            body: Some(b"{}".to_vec()),
            content_type: Some("application/json"),
            timeout: Duration::from_secs(5),
        };
        tokio::task::spawn_blocking(move || fx.http(request))
    };
    let e = post(Egress::default().with_name_servers(vec![dns.addr]))
        .await
        .expect("join")
        .unwrap_err();
    assert!(
        e.to_string().contains("hooks.corp.example.test resolves to refused addresses: 127.0.0.1 is a loopback address"),
        "{e}"
    );
    assert!(
        hook.received().is_empty(),
        "the loopback listener was reached"
    );

    // The same name, with loopback opened on purpose, goes through: the refusal above was the
    // policy's, not a failed lookup.
    let open = Egress::new(&[], &["127.0.0.1".into()])
        .expect("policy")
        .with_name_servers(vec![dns.addr]);
    let r = post(open).await.expect("join").expect("allowed request");
    assert_eq!(r.status, 204);
    assert_eq!(hook.received().len(), 1);
}

#[tokio::test]
async fn operational_hooks_open_one_ticket_per_held_set_failure_and_refusal() {
    let mut bed = Bed::new("wb-trig-ops", 0).await;
    bed.create_default_containers().await;
    let hook = Receiver::start();
    let tickets = r#"
fn on_held(event) {
    http::post(setting("hook_url"), #{ event: "held", kind: event.kind, approve: event.approve, groups: event.groups.len() });
}
fn on_failed(event) {
    http::post(setting("hook_url"), #{ event: "failed", id: event.cloud_id, name: event.display_name, error: event.error });
}
fn on_refused(event) {
    http::post(setting("hook_url"), #{ event: "refused", id: event.cloud_id, reason: event.reason });
}
"#;
    let boom = "fn in_scope(group) { group.displayName == \"Boom\" }\nfn to_ad(group) { throw \"no mapping for Boom\"; }\n";
    let rules = example_rules(
        &bed,
        &[("90-tickets.rhai", tickets), ("10-boom.rhai", boom)],
    );
    let (a, b, c, failing, taken) = (new_id(), new_id(), new_id(), new_id(), new_id());
    // Another tool's group already carries the anchor of `taken`: refused, left alone.
    let foreign = format!("CN=Not Ours,OU=Security,{}", bed.managed);
    let anchor = format!("Group_{taken}");
    bed.ldap
        .add(
            &foreign,
            vec![
                ("objectClass", ["group"].into_iter().collect()),
                ("adminDescription", [anchor.as_str()].into_iter().collect()),
            ],
        )
        .await
        .expect("add")
        .success()
        .expect("add foreign group");
    bed.seed(
        vec![],
        vec![
            security_group(&a, "Ops A", &[]),
            security_group(&b, "Ops B", &[]),
            security_group(&c, "Ops C", &[]),
            security_group(&failing, "Boom", &[]),
            security_group(&taken, "Taken", &[]),
        ],
        &[],
    );
    configure(
        &bed,
        &rules,
        &hook.url,
        "",
        "[safety]\ndelete_threshold = 2\n",
    );
    let tickets_of = |kind: &str| -> Vec<Value> {
        hook.received()
            .into_iter()
            .filter(|h| h.body["event"] == kind)
            .map(|h| h.body)
            .collect()
    };

    // First sync: the failing rule and the foreign object each open one ticket.
    let r = bed.run(&["sync", "--json"]);
    let r: Value = serde_json::from_slice(&r.stdout).expect("sync --json");
    let failed = tickets_of("failed");
    let mut ids: Vec<&str> = failed.iter().filter_map(|t| t["id"].as_str()).collect();
    ids.sort();
    let mut want = vec![failing.as_str(), taken.as_str()];
    want.sort();
    assert_eq!(ids, want, "{failed:?} {r:#}");
    let boom_ticket = failed
        .iter()
        .find(|t| t["id"] == json!(failing))
        .expect("boom");
    assert_eq!(boom_ticket["name"], json!("Boom"));
    assert!(
        boom_ticket["error"]
            .as_str()
            .is_some_and(|e| e.contains("no mapping for Boom")),
        "{boom_ticket}"
    );
    let refused = tickets_of("refused");
    assert_eq!(
        refused.len(),
        1,
        "a rule error is not a refusal: {refused:?}"
    );
    assert_eq!(refused[0]["id"], json!(taken));
    assert!(
        refused[0]["reason"]
            .as_str()
            .is_some_and(|why| why.contains("Not Ours")),
        "{refused:?}"
    );

    // Failing the same way again opens nothing more.
    bed.run_json(&["sync", "--full"], 2);
    assert_eq!(tickets_of("failed").len(), 2);
    assert_eq!(tickets_of("refused").len(), 1);

    // Three deletes over a threshold of two: held, one ticket with the approval command;
    // the same set held again next cycle opens none.
    for g in [&a, &b, &c] {
        // Security groups are deleted for good at once (no deletedItems).
        bed.graph("DELETE", &format!("/groups/{g}"), None).await;
    }
    let r = bed.run(&["sync", "--json"]);
    let r: Value = serde_json::from_slice(&r.stdout).expect("sync --json");
    let set = r["held"]["set_id"].as_str().expect("held set").to_string();
    let held = tickets_of("held");
    assert_eq!(
        held,
        [
            json!({ "event": "held", "kind": "deletes", "approve": format!("writeback approve {set}"), "groups": 3 })
        ],
        "{r:#}"
    );
    bed.run(&["sync"]);
    assert_eq!(
        tickets_of("held").len(),
        1,
        "the same held set opens one ticket"
    );
    let audit = audit(&bed, "trigger:on_");
    assert!(
        audit
            .iter()
            .any(|(action, outcome, _)| action == "trigger:on_held" && outcome == "ok"),
        "{audit:?}"
    );
    bed.cleanup().await;
}

#[tokio::test]
async fn a_trigger_reads_a_configured_secret_that_never_shows_in_reports_or_the_audit() {
    let mut bed = Bed::new("wb-trig-secret", 0).await;
    bed.create_default_containers().await;
    let hook = Receiver::start();
    let key = format!("hook-key-{}", &new_id()[..8]);
    // Read from the environment by the config, as a service would get it.
    std::env::set_var("WB_IT_HOOK_KEY", &key);
    let tickets = r#"
fn on_created(group, dn) {
    if group.displayName == "Leaky" { throw `refused with ${secret("hook_key")}`; }
    http::post(setting("hook_url"), #{ event: "created", key: secret("hook_key") });
}
"#;
    let rules = example_rules(&bed, &[]);
    let rule = rules.join("20-security.rhai");
    // Triggers run in the rule that handles the group: this one replaces the example's own.
    let text = std::fs::read_to_string(&rule).expect("read rule");
    std::fs::write(
        &rule,
        text.replace("fn on_created(", "fn example_on_created(") + tickets,
    )
    .expect("write rule");
    let (fine, leaky) = (new_id(), new_id());
    bed.seed(
        vec![],
        vec![
            security_group(&fine, "Fine", &[]),
            security_group(&leaky, "Leaky", &[]),
        ],
        &[],
    );
    // A secret the rules read but the config lacks: a load error with file and line.
    configure(&bed, &rules, &hook.url, "", "");
    let out = bed.run(&["check"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("20-security.rhai:") && err.contains("secret \"hook_key\" is not configured"),
        "{err}"
    );

    configure(
        &bed,
        &rules,
        &hook.url,
        "",
        "[rules.secrets]\nhook_key = { env = \"WB_IT_HOOK_KEY\" }\n",
    );
    let out = bed.run(&["sync", "--json"]);
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    let logs = String::from_utf8_lossy(&out.stderr).to_string();
    let created: Vec<Value> = hook
        .received()
        .into_iter()
        .filter(|h| h.body["event"] == "created")
        .map(|h| h.body)
        .collect();
    assert_eq!(created, [json!({ "event": "created", "key": key })]);
    assert!(report.contains("refused with ***"), "{report}");
    for (what, text) in [
        ("report", &report),
        ("logs", &logs),
        ("audit", &audit_dump(&bed)),
    ] {
        assert!(!text.contains(&key), "the secret is in the {what}: {text}");
    }
    bed.cleanup().await;
}

/// The requests the receiver got for the created group `g`.
fn created_calls(hook: &Receiver) -> Vec<Received> {
    hook.received()
        .into_iter()
        .filter(|h| h.body["event"] == "created")
        .collect()
}

#[tokio::test]
async fn a_failed_call_is_retried_with_the_same_key_and_given_up_after_the_last_attempt() {
    let mut bed = Bed::new("wb-trig-retry", 0).await;
    bed.create_default_containers().await;
    let hook = Receiver::with(Behaviour {
        fail_first: 1,
        ..Default::default()
    });
    let rules = example_rules(&bed, &[]);
    let g = new_id();
    bed.seed(vec![], vec![security_group(&g, "Retry Team", &[])], &[]);
    configure(
        &bed,
        &rules,
        &hook.url,
        "trigger_retry_secs = 1\ntrigger_max_attempts = 2",
        "",
    );

    // The receiver fails: the group is created, the call waits for another attempt.
    let r = bed.run_json(&["sync"], 0);
    assert_eq!(r["trigger_results"][0]["outcome"], json!("failed"), "{r:#}");
    assert_eq!(r["trigger_calls"]["retrying"], json!(1), "{r:#}");
    let status = bed.run_json(&["status"], 0);
    assert_eq!(status["trigger_calls"]["retrying"], json!(1), "{status:#}");
    // Due after its wait (when exactly is RetryPolicy's unit test: this machine's timing is not).
    std::thread::sleep(Duration::from_millis(1_500));
    // Due: the idle cycle delivers it, with the key of the first attempt.
    let r = bed.run_json(&["sync"], 0);
    assert_eq!(r["sweep"], json!("idle"), "{r:#}");
    assert_eq!(r["trigger_results"][0]["outcome"], json!("ok"), "{r:#}");
    assert_eq!(r["trigger_results"][0]["attempt"], json!(2), "{r:#}");
    let calls = created_calls(&hook);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls[0].key.as_ref().is_some_and(|k| k.len() == 32),
        "{calls:?}"
    );
    assert_eq!(calls[0].key, calls[1].key, "the same call, the same key");
    let r = bed.run_json(&["sync"], 0);
    assert!(
        r["trigger_results"].as_array().is_some_and(Vec::is_empty),
        "{r:#}"
    );

    // A receiver that always fails: given up after the second attempt, in the audit trail.
    let down = Receiver::with(Behaviour {
        fail_first: usize::MAX,
        ..Default::default()
    });
    bed.graph(
        "POST",
        "/groups",
        Some(json!({
            "displayName": "Never Heard", "mailEnabled": false,
            "securityEnabled": true, "mailNickname": "never-heard", "groupTypes": [],
        })),
    )
    .await;
    configure(
        &bed,
        &rules,
        &down.url,
        "trigger_retry_secs = 1\ntrigger_max_attempts = 2",
        "",
    );
    bed.run_json(&["sync"], 0);
    std::thread::sleep(Duration::from_millis(1_500));
    let r = bed.run_json(&["sync"], 0);
    assert_eq!(
        r["trigger_results"][0]["outcome"],
        json!("given_up"),
        "{r:#}"
    );
    let status = bed.run_json(&["status"], 0);
    assert_eq!(status["trigger_calls"]["given_up"], json!(1), "{status:#}");
    assert!(
        audit(&bed, "trigger:on_created")
            .iter()
            .any(|(_, outcome, _)| outcome == "given_up"),
        "{}",
        audit_dump(&bed)
    );
    bed.cleanup().await;
}

#[tokio::test]
async fn a_call_cut_by_kill_9_is_delivered_after_the_restart_once_per_key() {
    let mut bed = Bed::new("wb-trig-kill", 0).await;
    bed.create_default_containers().await;
    // The first request is never answered: the sync is killed while it waits.
    let hook = Receiver::with(Behaviour {
        hang_first: Some(Duration::from_secs(60)),
        ..Default::default()
    });
    let rules = example_rules(&bed, &[]);
    let g = new_id();
    bed.seed(vec![], vec![security_group(&g, "Kill Team", &[])], &[]);
    configure(&bed, &rules, &hook.url, "", "");

    let mut child = bed.spawn(&["sync"]);
    let started = Instant::now();
    while created_calls(&hook).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the trigger never called"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SIGKILL: no handler, no cleanup.
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    assert!(bed.group_by_id(&g).await.is_some(), "the AD write landed");

    // The restart delivers the call the kill cut, with the same key.
    let r = bed.run_json(&["sync"], 0);
    assert_eq!(r["trigger_results"][0]["outcome"], json!("ok"), "{r:#}");
    let calls = created_calls(&hook);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].key, calls[1].key);
    // A receiver that honours the key saw one call; nothing more comes.
    let keys: std::collections::BTreeSet<_> = calls.iter().map(|c| c.key.clone()).collect();
    assert_eq!(keys.len(), 1);
    bed.run_json(&["sync"], 0);
    assert_eq!(created_calls(&hook).len(), 2);
    bed.cleanup().await;
}
