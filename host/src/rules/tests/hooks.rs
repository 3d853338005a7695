//! Triggers, schedules and primitives: discovery and load diagnostics, the purity of scope/map,
//! calls with a fake host, HTTP against a local server, and the trigger examples of SCRIPTING.md.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::support::*;
use crate::effects::HostEffects;
use crate::rules::{
    AdFound, EffectError, Effects, Hook, HookError, HookTable, HttpRequest, HttpResponse,
    LoadError, TriggerEvent,
};

const SCOPE_MAP: &str = "fn scope(group) { true }\nfn map(group) { () }\n";

fn load_err(files: &[(&str, &str)]) -> LoadError {
    let dir = rules_dir(files);
    match load(dir.path()) {
        Ok(_) => panic!("the rules loaded"),
        Err(e) => e,
    }
}

fn table(files: &[(&str, &str)]) -> Arc<HookTable> {
    let dir = rules_dir(files);
    match load(dir.path()) {
        Ok(set) => set.hooks(),
        Err(e) => panic!("the rules do not load:\n{e}"),
    }
}

/// What a fake host saw, in order, as JSON.
#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<Value>>,
    ad: Vec<AdFound>,
    graph: Value,
    status: u16,
}

impl Fake {
    fn new() -> Arc<Fake> {
        Arc::new(Fake {
            status: 200,
            ..Default::default()
        })
    }

    fn calls(&self) -> Vec<Value> {
        self.calls.lock().expect("lock").clone()
    }
}

impl Effects for Fake {
    fn http(&self, r: HttpRequest) -> Result<HttpResponse, EffectError> {
        let mut call = json!({ "method": r.method, "url": r.url });
        if !r.headers.is_empty() {
            call["headers"] = r
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        if let Some(b) = &r.body {
            call["body"] = match r.content_type {
                Some("application/json") => serde_json::from_slice(b).expect("JSON body"),
                _ => json!(String::from_utf8_lossy(b)),
            };
        }
        self.calls
            .lock()
            .expect("lock")
            .push(json!({ "http": call }));
        Ok(HttpResponse {
            status: self.status,
            body: "{\"ok\":true}".into(),
        })
    }

    fn graph_get(&self, path: &str, _: Duration) -> Result<Value, EffectError> {
        self.calls
            .lock()
            .expect("lock")
            .push(json!({ "graph_get": path }));
        Ok(self.graph.clone())
    }

    fn ad_search(
        &self,
        base: &str,
        filter: &str,
        attrs: &[String],
        _: Duration,
    ) -> Result<Vec<AdFound>, EffectError> {
        self.calls
            .lock()
            .expect("lock")
            .push(json!({ "ad_search": { "base": base, "filter": filter, "attrs": attrs } }));
        Ok(self.ad.clone())
    }
}

/// Effects with one secret, `api_key`.
struct WithSecret(Arc<Fake>);

impl Effects for WithSecret {
    fn http(&self, r: HttpRequest) -> Result<HttpResponse, EffectError> {
        self.0.http(r)
    }
    fn graph_get(&self, path: &str, t: Duration) -> Result<Value, EffectError> {
        self.0.graph_get(path, t)
    }
    fn ad_search(
        &self,
        base: &str,
        filter: &str,
        attrs: &[String],
        t: Duration,
    ) -> Result<Vec<AdFound>, EffectError> {
        self.0.ad_search(base, filter, attrs, t)
    }
    fn secret(&self, name: &str) -> Result<String, EffectError> {
        match name {
            "api_key" => Ok("k3y-s3cret".into()),
            other => Err(EffectError::UnknownSecret(other.into())),
        }
    }
}

#[test]
fn secrets_reach_triggers_only_and_never_their_errors() {
    let rule = r#"
fn in_scope(group) { true }
fn to_ad(group) { #{ parent: "OU=X", cn: secret("api_key") } }
fn on_created(group, dn) {
    if group.displayName == "throw" { throw `key was ${secret("api_key")}`; }
    if group.displayName == "missing" { secret("nope"); }
    http::request(#{ method: "POST", url: "https://t.example/x", headers: #{ Authorization: `Bearer ${secret("api_key")}` } });
}
"#;
    let t = table(&[("10-s.rhai", rule)]);
    let fake = Fake::new();
    let fx = Arc::new(WithSecret(fake.clone()));
    let timeout = Duration::from_secs(5);
    let mut g = m365_group();
    t.call_trigger(
        "10-s.rhai",
        &created(g.clone(), "CN=G"),
        fx.clone(),
        timeout,
    )
    .expect("on_created");
    let calls = fake.calls();
    assert!(
        calls[0].to_string().contains("Bearer k3y-s3cret"),
        "{calls:?}"
    );
    g["displayName"] = json!("throw");
    let e = t
        .call_trigger(
            "10-s.rhai",
            &created(g.clone(), "CN=G"),
            fx.clone(),
            timeout,
        )
        .expect_err("throws");
    assert!(
        !e.to_string().contains("k3y-s3cret") && e.to_string().contains("key was ***"),
        "{e}"
    );
    g["displayName"] = json!("missing");
    let e = t
        .call_trigger("10-s.rhai", &created(g.clone(), "CN=G"), fx, timeout)
        .expect_err("missing");
    assert!(
        e.to_string().contains("secret \"nope\" is not configured"),
        "{e}"
    );
    // In the pure entry points there is no secret to read.
    let dir = super::support::rules_dir(&[("10-s.rhai", rule)]);
    let set = super::support::load(dir.path()).expect("loads");
    let e = set
        .evaluate(&m365_group())
        .expect_err("to_ad cannot read secrets");
    assert!(
        e.to_string()
            .contains("`secret` is available only in triggers"),
        "{e}"
    );
    // Literal names are known at load, for the host to check against its configuration.
    let names: Vec<&str> = set.secret_uses().iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["api_key", "api_key", "nope", "api_key"]);
    let e = set
        .check_secrets(|n| n == "api_key")
        .expect_err("nope is not configured");
    assert!(
        e.to_string().contains("10-s.rhai:6:") && e.to_string().contains("\"nope\""),
        "{e}"
    );
}

fn created(group: Value, dn: &str) -> TriggerEvent {
    TriggerEvent {
        hook: Hook::OnCreated,
        cloud_id: group["id"].as_str().unwrap_or_default().to_string(),
        dn: dn.to_string(),
        group: Some(group),
        changes: json!({}),
        members: Vec::new(),
    }
}

#[test]
fn triggers_are_found_by_name_and_arity() {
    let t = table(&[
        (
            "10-a.rhai",
            "fn scope(group) { true }\nfn map(group) { () }\nfn on_created(group, dn) {}\nfn on_deleted(id, dn) {}\nfn helper(x) { x }\n",
        ),
        ("20-b.rhai", SCOPE_MAP),
    ]);
    assert!(t.has("10-a.rhai", Hook::OnCreated));
    assert!(t.has("10-a.rhai", Hook::OnDeleted));
    assert!(!t.has("10-a.rhai", Hook::OnUpdated));
    assert!(!t.has("20-b.rhai", Hook::OnCreated));
    let listed: Vec<(&str, Vec<Hook>)> = t
        .triggers()
        .into_iter()
        .map(|(r, h)| (r, h.iter().copied().collect()))
        .collect();
    assert_eq!(
        listed,
        vec![("10-a.rhai", vec![Hook::OnCreated, Hook::OnDeleted])]
    );
    assert!(t.schedules().is_empty());
}

#[test]
fn a_trigger_with_the_wrong_arity_is_a_diagnostic_at_its_definition() {
    let e = load_err(&[(
        "10-a.rhai",
        "fn scope(group) { true }\nfn map(group) { () }\n\n  fn on_created(group) {}\nfn on_members_added(g, dn) {}\nfn on_schedule() {}\n",
    )]);
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0]
            .ends_with("10-a.rhai:4:6: `fn on_created` must take 2 parameters (group, dn), not 1"),
        "{text}"
    );
    assert!(
        lines[1].ends_with("10-a.rhai:5:4: `fn on_members_added` must take 3 parameters (group, dn, members), not 2"),
        "{text}"
    );
    assert!(
        lines[2].contains("10-a.rhai:6:4: `fn on_schedule` must take 1 parameter (info), not 0"),
        "{text}"
    );
}

#[test]
fn schedules_are_parsed_at_load() {
    let t = table(&[
        (
            "10-a.rhai",
            &format!("const SCHEDULE = \"5m\";\n{SCOPE_MAP}fn on_schedule(info) {{}}\n"),
        ),
        (
            "20-b.rhai",
            &format!(
                "// nightly\nconst SCHEDULE = `0 3 * * *`;\n{SCOPE_MAP}fn on_schedule(info) {{}}\n"
            ),
        ),
    ]);
    let s: Vec<(&str, &str)> = t
        .schedules()
        .into_iter()
        .map(|(r, s)| (r, s.text()))
        .collect();
    assert_eq!(s, vec![("10-a.rhai", "5m"), ("20-b.rhai", "0 3 * * *")]);
}

#[test]
fn bad_schedules_are_diagnostics_with_positions() {
    let on = "fn on_schedule(info) {}\n";
    let e = load_err(&[
        (
            "10-unit.rhai",
            &format!("{SCOPE_MAP}const SCHEDULE =   \"5x\";\n{on}"),
        ),
        (
            "20-cron.rhai",
            &format!("{SCOPE_MAP}\nconst SCHEDULE = \"61 * * * *\";\n{on}"),
        ),
        (
            "30-expr.rhai",
            &format!("{SCOPE_MAP}const PART = \"5\";\nconst SCHEDULE = PART + \"m\";\n{on}"),
        ),
        (
            "40-alone.rhai",
            &format!("{SCOPE_MAP}const SCHEDULE = \"1h\";\n"),
        ),
        ("50-nothing.rhai", &format!("{SCOPE_MAP}{on}")),
        (
            "60-fields.rhai",
            &format!("{SCOPE_MAP}const SCHEDULE = \"0 3 * *\";\n{on}"),
        ),
    ]);
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(
        lines[0].contains("10-unit.rhai:3:20: invalid SCHEDULE \"5x\": unknown unit \"x\""),
        "{text}"
    );
    assert!(
        lines[1].contains(
            "20-cron.rhai:4:18: invalid SCHEDULE \"61 * * * *\": not a valid cron expression"
        ),
        "{text}"
    );
    assert!(
        lines[2].contains("30-expr.rhai:4:7: `SCHEDULE` must be a string literal"),
        "{text}"
    );
    assert!(
        lines[3].contains(
            "40-alone.rhai:3:7: `SCHEDULE` is set but the rule defines no `fn on_schedule(info)`"
        ),
        "{text}"
    );
    assert!(
        lines[4].contains("50-nothing.rhai:3:4: `fn on_schedule` needs `const SCHEDULE"),
        "{text}"
    );
    assert!(
        lines[5].contains("60-fields.rhai:3:18: invalid SCHEDULE \"0 3 * *\": 4 fields"),
        "{text}"
    );
}

#[test]
fn primitives_are_refused_in_scope_and_map_by_name() {
    for (call, name) in [
        ("http::post(\"http://127.0.0.1:9/x\", #{})", "http::post"),
        (
            "http::request(#{ url: \"http://127.0.0.1:9/x\" })",
            "http::request",
        ),
        ("graph::get(\"organization\")", "graph::get"),
        ("ad::search(\"DC=x\", \"(cn=*)\", [])", "ad::search"),
    ] {
        let text =
            format!("fn scope(group) {{ true }}\nfn map(group) {{\n    {call};\n    ()\n}}\n");
        let dir = rules_dir(&[("10-impure.rhai", &text)]);
        let set = load(dir.path()).expect("loads: the check is at run time");
        let e = set.evaluate(&m365_group()).unwrap_err();
        assert_eq!(e.function, "map");
        assert!(
            e.message.starts_with(&format!(
                "`{name}` is available only in triggers and schedules"
            )),
            "{e}"
        );
        assert!(e.message.contains("must stay pure"), "{e}");
        assert_eq!(e.line, Some(3), "{e}");
        // Also in scope(), through a module.
        let module = format!("fn call_out() {{ {call} }}\n");
        let text = "import \"lib/out\" as out;\nfn scope(group) { out::call_out(); true }\nfn map(group) { () }\n";
        let dir = rules_dir(&[("10-impure.rhai", text), ("lib/out.rhai", &module)]);
        let set = load(dir.path()).expect("loads");
        let e = set.evaluate(&m365_group()).unwrap_err();
        assert_eq!(e.function, "scope");
        assert!(e.message.contains(name), "{e}");
        assert!(e.file.ends_with("lib/out.rhai"), "{e}");
    }
}

#[test]
fn logging_works_everywhere() {
    let dir = rules_dir(&[(
        "10-log.rhai",
        "fn scope(group) { log::info(`scope ${group.id}`); true }\nfn map(group) { log::warn(42); log::error(#{ a: 1 }); () }\n",
    )]);
    let set = load(dir.path()).expect("loads");
    assert!(set.evaluate(&m365_group()).is_ok());
}

#[test]
fn triggers_get_their_arguments_and_reach_the_host() {
    let rule = r#"
fn scope(group) { true }
fn map(group) { () }
fn on_created(group, dn) {
    http::post(setting("m365_container"), #{ name: group.displayName, dn: dn });
}
fn on_updated(group, dn, changes) {
    http::post("u", #{ changes: changes, from: changes.moved_from });
}
fn on_members_added(group, dn, members) { http::post("a", members); }
fn on_members_removed(group, dn, members) { http::post("r", members.len()); }
fn on_deleted(group_id, dn) { http::post("d", `${group_id} ${dn}`); }
"#;
    let t = table(&[("10-all.rhai", rule)]);
    let fake = Fake::new();
    let g = m365_group();
    let id = g["id"].as_str().unwrap_or_default().to_string();
    let timeout = Duration::from_secs(5);
    let run = |e: TriggerEvent| t.call_trigger("10-all.rhai", &e, fake.clone(), timeout);
    run(created(g.clone(), "CN=G,OU=X")).expect("on_created");
    let changes =
        json!({ "info": { "before": null, "after": ["x"] }, "moved_from": "CN=Old,OU=X" });
    run(TriggerEvent {
        hook: Hook::OnUpdated,
        changes: changes.clone(),
        ..created(g.clone(), "CN=G,OU=X")
    })
    .expect("on_updated");
    let members = vec!["CN=u1,OU=U".to_string(), "CN=u2,OU=U".to_string()];
    run(TriggerEvent {
        hook: Hook::OnMembersAdded,
        members: members.clone(),
        ..created(g.clone(), "CN=G,OU=X")
    })
    .expect("on_members_added");
    run(TriggerEvent {
        hook: Hook::OnMembersRemoved,
        members,
        ..created(g.clone(), "CN=G,OU=X")
    })
    .expect("on_members_removed");
    run(TriggerEvent {
        hook: Hook::OnDeleted,
        group: None,
        ..created(g.clone(), "CN=G,OU=X")
    })
    .expect("on_deleted");
    let bodies: Vec<Value> = fake
        .calls()
        .into_iter()
        .map(|c| c["http"]["body"].clone())
        .collect();
    assert_eq!(
        bodies,
        vec![
            json!({ "name": "OutlookGroup101", "dn": "CN=G,OU=X" }),
            json!({ "changes": changes, "from": "CN=Old,OU=X" }),
            json!(["CN=u1,OU=U", "CN=u2,OU=U"]),
            json!(2),
            json!(format!("{id} CN=G,OU=X")),
        ]
    );
    assert_eq!(fake.calls()[0]["http"]["url"], json!(M365_OU));
}

#[test]
fn a_failing_trigger_names_rule_function_group_and_position() {
    let rule = "fn scope(group) { true }\nfn map(group) { () }\nfn on_created(group, dn) {\n    let x = 1;\n    throw `no ticket for ${dn}`;\n}\n";
    let t = table(&[("10-fail.rhai", rule)]);
    let e: Box<HookError> = t
        .call_trigger(
            "10-fail.rhai",
            &created(m365_group(), "CN=G,OU=X"),
            Fake::new(),
            Duration::from_secs(5),
        )
        .unwrap_err();
    assert_eq!(e.function, "on_created");
    assert_eq!(e.line, Some(5));
    let text = e.to_string();
    assert!(text.ends_with(": no ticket for CN=G,OU=X (rule 10-fail.rhai, on_created(), group 4c5ee71b-e6a5-4343-9e2c-4244bc7e0938)"), "{text}");
    // A status other than 2xx makes http::post fail.
    let t = table(&[(
        "10-post.rhai",
        "fn scope(group) { true }\nfn map(group) { () }\nfn on_created(group, dn) { http::post(\"https://h.example.test/x?key=SECRET\", #{}) }\n",
    )]);
    let fake = Arc::new(Fake {
        status: 500,
        ..Default::default()
    });
    let e = t
        .call_trigger(
            "10-post.rhai",
            &created(m365_group(), "CN=G"),
            fake,
            Duration::from_secs(5),
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("http::post https://h.example.test: the server answered 500"),
        "{e}"
    );
    assert!(!e.contains("SECRET"), "{e}");
}

#[test]
fn a_schedule_gets_its_rule_and_time_and_the_time_limit_holds() {
    let rule = "const SCHEDULE = \"1h\";\nfn scope(group) { false }\nfn map(group) { () }\nfn on_schedule(info) { http::post(\"s\", info); loop {} }\n";
    let t = table(&[("10-s.rhai", rule)]);
    let fake = Fake::new();
    let started = Instant::now();
    let e = t
        .call_schedule(
            "10-s.rhai",
            "2026-03-16T06:00:00Z",
            fake.clone(),
            Duration::from_millis(300),
        )
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        e.message.contains("stopped after 300 ms")
            || e.message.contains("operations (the operation limit)"),
        "{e}"
    );
    assert!(
        !e.to_string().contains(", group"),
        "schedules have no group: {e}"
    );
    assert_eq!(
        fake.calls(),
        vec![json!({ "http": { "method": "POST", "url": "s",
            "body": { "rule": "10-s.rhai", "now": "2026-03-16T06:00:00Z" } } })]
    );
}

/// One request as the local server saw it.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body: String,
}

/// An HTTP/1.1 server on 127.0.0.1 that records requests and answers `status` + `body` after
/// `delay`.
async fn server(
    status: u16,
    body: &'static str,
    delay: Duration,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    server_with(status, "", body, delay).await
}

/// [`server`] with one more response header line (`Name: value\r\n`).
async fn server_with(
    status: u16,
    header: &'static str,
    body: &'static str,
    delay: Duration,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body_start) = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break (String::from_utf8_lossy(&buf[..i]).to_string(), i + 4);
                    }
                };
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while buf.len() < body_start + len {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let req_body = String::from_utf8_lossy(&buf[body_start..]).to_string();
                log.lock().expect("lock").push(Seen {
                    head,
                    body: req_body,
                });
                tokio::time::sleep(delay).await;
                let answer = format!(
                    "HTTP/1.1 {status} X\r\n{header}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(answer.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

/// The egress policy of these tests: their receiver listens on 127.0.0.1.
fn loopback() -> crate::effects::Egress {
    crate::effects::Egress::new(&[], &["127.0.0.1".into()]).expect("policy")
}

/// Runs `on_created` of a one-rule set on a blocking thread with the real host effects.
async fn fire(rule_body: &str, timeout: Duration) -> Result<(), Box<HookError>> {
    let text = format!("fn scope(group) {{ true }}\nfn map(group) {{ () }}\n{rule_body}");
    let t = table(&[("10-http.rhai", &text)]);
    let fx: Arc<dyn Effects> =
        Arc::new(HostEffects::new(tokio::runtime::Handle::current(), loopback()).expect("effects"));
    tokio::task::spawn_blocking(move || {
        t.call_trigger(
            "10-http.rhai",
            &created(m365_group(), "CN=G,OU=X"),
            fx,
            timeout,
        )
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_request_reaches_a_local_server() {
    let (base, seen) = server(201, "made", Duration::ZERO).await;
    let rule = format!(
        r#"fn on_created(group, dn) {{
    let r = http::request(#{{
        method: "put",
        url: "{base}/hooks/groups?token=SECRET",
        headers: #{{ "X-Writeback": "1" }},
        body: #{{ dn: dn, name: group.displayName }},
    }});
    if r.status != 201 || r.body != "made" {{ throw `unexpected answer ${{r}}`; }}
    let p = http::post("{base}/plain", "hello");
    if p.status != 201 {{ throw "post"; }}
}}
"#
    );
    fire(&rule, Duration::from_secs(10)).await.expect("trigger");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let head = seen[0].head.to_ascii_lowercase();
    assert!(
        head.starts_with("put /hooks/groups?token=secret http/1.1"),
        "{head}"
    );
    assert!(head.contains("x-writeback: 1"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let body: Value = serde_json::from_str(&seen[0].body).expect("JSON body");
    assert_eq!(
        body,
        json!({ "dn": "CN=G,OU=X", "name": "OutlookGroup101" })
    );
    assert!(seen[1].head.starts_with("POST /plain HTTP/1.1"));
    assert!(seen[1]
        .head
        .to_ascii_lowercase()
        .contains("content-type: text/plain"));
    assert_eq!(seen[1].body, "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_times_out_and_says_so_without_the_query() {
    let (base, seen) = server(200, "late", Duration::from_secs(30)).await;
    // The request's own timeout.
    let started = Instant::now();
    let rule = format!(
        "fn on_created(group, dn) {{ http::request(#{{ url: \"{base}/slow?key=SECRET\", timeout_ms: 300 }}); }}\n"
    );
    let e = fire(&rule, Duration::from_secs(10)).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let text = e.to_string();
    assert!(
        text.contains(&format!("http::request GET {base}: timed out after 300 ms")),
        "{text}"
    );
    assert!(!text.contains("SECRET"), "{text}");
    // No timeout given: the trigger's time limit bounds the request.
    let started = Instant::now();
    let rule = format!("fn on_created(group, dn) {{ http::post(\"{base}/slow\", #{{}}); }}\n");
    let e = fire(&rule, Duration::from_millis(500)).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(e.to_string().contains("timed out after"), "{e}");
    assert_eq!(seen.lock().expect("lock").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_returned_not_followed() {
    let (base, seen) = server_with(
        302,
        "Location: http://127.0.0.1:9/elsewhere?key=SECRET\r\n",
        "moved",
        Duration::ZERO,
    )
    .await;
    let rule = format!(
        "fn on_created(group, dn) {{ let r = http::request(#{{ url: \"{base}/old\" }}); if r.status != 302 {{ throw `got ${{r.status}}`; }} http::post(\"{base}/old\", #{{}}); }}\n"
    );
    let e = fire(&rule, Duration::from_secs(10)).await.unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("http::post {base}: the server answered 302")),
        "{e}"
    );
    assert_eq!(seen.lock().expect("lock").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_to_a_closed_port_is_an_error() {
    // Bind and drop: the port is then (almost certainly) closed.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr").port()
    };
    let rule = format!(
        "fn on_created(group, dn) {{ http::post(\"http://127.0.0.1:{port}/hook\", #{{ a: 1 }}); }}\n"
    );
    let e = fire(&rule, Duration::from_secs(10)).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "http::post http://127.0.0.1:{port}: cannot connect"
        )),
        "{text}"
    );
    let rule = "fn on_created(group, dn) { http::post(\"file:///etc/passwd\", #{}); }\n";
    let e = fire(rule, Duration::from_secs(10)).await.unwrap_err();
    assert!(e.to_string().contains("only http:// and https://"), "{e}");
}

/// Runs `on_created` with the host effects under `egress`.
async fn fire_with(rule_body: &str, egress: crate::effects::Egress) -> Result<(), Box<HookError>> {
    let text = format!("fn scope(group) {{ true }}\nfn map(group) {{ () }}\n{rule_body}");
    let t = table(&[("10-http.rhai", &text)]);
    let fx: Arc<dyn Effects> =
        Arc::new(HostEffects::new(tokio::runtime::Handle::current(), egress).expect("effects"));
    tokio::task::spawn_blocking(move || {
        t.call_trigger(
            "10-http.rhai",
            &created(m365_group(), "CN=G,OU=X"),
            fx,
            Duration::from_secs(10),
        )
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_reach_no_loopback_private_or_link_local_address_by_default() {
    let (base, seen) = server(200, "secret answer", Duration::ZERO).await;
    let port = base.rsplit(':').next().unwrap_or_default().to_string();
    for url in [
        format!("{base}/x"),
        format!("http://localhost:{port}/x"),
        format!("http://[::ffff:127.0.0.1]:{port}/x"),
    ] {
        let rule = format!(
            "fn on_created(group, dn) {{ http::request(#{{ url: \"{url}\", headers: #{{ Metadata: \"true\" }} }}); }}\n"
        );
        let e = fire_with(&rule, crate::effects::Egress::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("loopback address"), "{url}: {e}");
    }
    // Link-local stays refused even when the operator opens other networks (nothing is
    // listening there: the refusal comes before any connection).
    let open = crate::effects::Egress::new(&[], &["127.0.0.0/8".into(), "10.0.0.0/8".into()])
        .expect("policy");
    let rule = "fn on_created(group, dn) { http::request(#{ url: \"http://169.254.169.254/metadata\" }); }\n";
    let e = fire_with(rule, open).await.unwrap_err().to_string();
    assert!(e.contains("link-local address, never reached"), "{e}");
    // A host outside the allow-list is not even resolved.
    let only = crate::effects::Egress::new(&["hooks.example.test".into()], &["127.0.0.1".into()])
        .expect("policy");
    let rule = format!("fn on_created(group, dn) {{ http::post(\"{base}/x\", #{{}}); }}\n");
    let e = fire_with(&rule, only).await.unwrap_err().to_string();
    assert!(e.contains("not in rules.http_allowed_hosts"), "{e}");
    assert!(
        seen.lock().expect("lock").is_empty(),
        "the listener was reached"
    );
}

/// Fenced blocks as (info string, content).
fn blocks(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in doc.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) => current = Some((info.trim().to_string(), String::new())),
            (Some(_), Some(rest)) if rest.trim().is_empty() => out.extend(current.take()),
            (Some((_, text)), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

#[test]
fn scripting_guide_trigger_examples_do_what_they_show() {
    const DOC: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/SCRIPTING.md"));
    let blocks = blocks(DOC);
    let group: Value = blocks
        .iter()
        .find(|(info, _)| info == "json sample-group")
        .map(|(_, t)| serde_json::from_str(t).expect("sample group"))
        .expect("sample group block");
    let settings: BTreeMap<String, Value> = {
        let (_, text) = blocks
            .iter()
            .find(|(info, _)| info == "toml settings")
            .expect("settings block");
        let t: toml::Table = toml::from_str(text).expect("TOML");
        t["rules"]["settings"]
            .as_table()
            .expect("[rules.settings]")
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::to_value(v).expect("JSON")))
            .collect()
    };
    let mut checked = 0;
    for (i, (info, text)) in blocks.iter().enumerate() {
        if info != "rhai" {
            continue;
        }
        let Some(name) = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("// file: "))
        else {
            continue;
        };
        let Some((_, calls)) = blocks[i + 1..]
            .iter()
            .take(2)
            .find(|(info, _)| info == "json trigger")
        else {
            continue;
        };
        let dir = rules_dir(&[(name.trim(), text)]);
        let set = crate::rules::RuleSet::load(
            dir.path(),
            &stdlib(),
            settings.clone(),
            crate::rules::Limits::default(),
        )
        .unwrap_or_else(|e| panic!("{name} does not load:\n{e}"));
        let hooks = set.hooks();
        let calls: Vec<Value> = serde_json::from_str(calls).expect("trigger block is JSON");
        for c in calls {
            let fake = Arc::new(Fake {
                status: 200,
                ad: c["fake"]["ad"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|e| AdFound {
                                dn: e["dn"].as_str().unwrap_or_default().into(),
                                attrs: serde_json::from_value(e["attrs"].clone()).expect("attrs"),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                graph: c["fake"]["graph"].clone(),
                ..Default::default()
            });
            let call = &c["call"];
            let result = if let Some(now) = call["schedule"].as_str() {
                hooks.call_schedule(name.trim(), now, fake.clone(), Duration::from_secs(5))
            } else {
                let hook = serde_json::from_value::<String>(call["hook"].clone()).expect("hook");
                let hook = Hook::ALL
                    .into_iter()
                    .find(|h| h.name() == hook)
                    .unwrap_or_else(|| panic!("unknown hook {hook}"));
                let event = TriggerEvent {
                    hook,
                    cloud_id: group["id"].as_str().unwrap_or_default().into(),
                    dn: call["dn"].as_str().unwrap_or_default().into(),
                    group: Some(group.clone()),
                    changes: call.get("changes").cloned().unwrap_or(json!({})),
                    members: serde_json::from_value(call["members"].clone()).unwrap_or_default(),
                };
                hooks.call_trigger(name.trim(), &event, fake.clone(), Duration::from_secs(5))
            };
            result.unwrap_or_else(|e| panic!("{name}: {call} failed: {e}"));
            assert_eq!(
                Value::Array(fake.calls()),
                c["effects"],
                "{name}: {call} has other effects than SCRIPTING.md shows"
            );
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} trigger examples found");
}

#[test]
fn rule_files_in_the_examples_folder_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/webhook-on-create/rules");
    let mut s = settings();
    s.insert("hook_url".into(), json!("https://hooks.example.test/x"));
    let set = crate::rules::RuleSet::load(&dir, &stdlib(), s, crate::rules::Limits::default())
        .unwrap_or_else(|e| panic!("examples/webhook-on-create does not load:\n{e}"));
    assert!(set.hooks().has("20-security.rhai", Hook::OnCreated));
}

#[test]
fn ad_escape_filter_keeps_a_hostile_cloud_value_a_value() {
    let t = table(&[(
        "10-find.rhai",
        "fn scope(group) { true }\nfn map(group) { () }\nfn on_created(group, dn) {\n    ad::search(\"OU=X\", \"(mail=\" + ad::escape_filter(\"*)(objectClass=*\") + \")\", [\"cn\"]);\n}\n",
    )]);
    let fake = Fake::new();
    t.call_trigger(
        "10-find.rhai",
        &created(m365_group(), "CN=G"),
        fake.clone(),
        Duration::from_secs(5),
    )
    .expect("trigger");
    let calls = fake.calls();
    assert_eq!(
        calls[0]["ad_search"]["filter"],
        json!("(mail=\\2a\\29\\28objectClass=\\2a)")
    );
}
