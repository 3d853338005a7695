//! The web console in a real browser: a daemon on the test bed with `[console] enabled` and a
//! credential, a tenant whose display names are hostile markup, a group in quarantine and
//! deletes held back. Headless Chromium (Debian's, through ChromeDriver) loads each page with
//! the credential; the test reads what a person would see (the rendered text, the styles
//! applied, the chart drawn), checks that no hostile name became markup or ran, and saves a
//! screenshot of each page under target/console-screenshots/. Over plain HTTP: the credential
//! is asked for, the security headers are there, nothing but GET is served.

use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use writeback_integration::browser::Browser;
use writeback_integration::eventually;
use writeback_integration::harness::{free_port, new_id, security_group, workspace_root, Bed};

/// Display names written by someone hostile: markup that would run, a table breakout, a
/// right-to-left override.
const IMG: &str = "<img src=x onerror=\"window.__pwned=1\">Payroll";
const SCRIPT: &str = "</td><script>window.__pwned=2</script>Sales";
const BIDI: &str = "Board \u{202e}gpj.exe";

const RULE: &str = r#"
import "std/naming" as naming;
fn in_scope(group) { true }
fn to_ad(group) {
    // "Blocked Group" keeps its plain name: an object the test put there first refuses it.
    let cn = if group.displayName == "Blocked Group" { "Blocked Group" } else { naming::cloud_sync_cn(group) };
    #{
        parent: setting("security_container"),
        cn: cn,
        attributes: #{ displayName: group.displayName, description: group.description },
    }
}
"#;

const CREDENTIAL: &str = "console-test-credential";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

async fn page_text(url: &str) -> String {
    match http().get(url).bearer_auth(CREDENTIAL).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn screenshots() -> PathBuf {
    workspace_root().join("target/console-screenshots")
}

/// No hostile name became an element, and none ran.
async fn nothing_injected(b: &Browser, page: &str) {
    let found = b
        .eval(
            "return {pwned: window.__pwned === undefined ? null : window.__pwned, \
             injected: document.querySelectorAll('main img, main script, main iframe, main object').length, \
             scripts: document.scripts.length};",
        )
        .await;
    assert_eq!(
        found,
        json!({"pwned": null, "injected": 0, "scripts": 0}),
        "{page}: markup from a display name"
    );
}

/// The stylesheet (from the console itself, allowed by its CSP) is applied.
async fn styled(b: &Browser, page: &str) {
    let bg = b
        .eval("return getComputedStyle(document.querySelector('header')).backgroundColor;")
        .await;
    assert_eq!(
        bg,
        json!("rgb(36, 41, 47)"),
        "{page}: the stylesheet is not applied"
    );
}

#[tokio::test]
async fn the_console_in_a_browser_shows_the_daemon_and_renders_hostile_names_as_text() {
    // Before the bed: a missing browser fails at once, saying which package.
    let browser = Browser::start().await;
    let mut bed = Bed::new("wb-console", 1).await;
    bed.create_default_containers().await;
    let users = bed.synced_users();
    let member = bed.users[0].cloud_id.clone();
    let ids: Vec<String> = (0..6).map(|_| new_id()).collect();
    let names = [IMG, SCRIPT, BIDI, "Blocked Group", "Doomed A", "Doomed B"];
    let groups = ids
        .iter()
        .zip(names)
        .map(|(id, name)| security_group(id, name, &[&member]))
        .collect();
    bed.seed(users, groups, &[]);
    let security = format!("OU=Security,{}", bed.managed);
    let blocker = format!("CN=Blocked Group,{security}");
    bed.add_plain_group(&blocker).await;

    let rules = bed.dir.path().join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    std::fs::write(rules.join("10-console.rhai"), RULE).expect("rule");
    let secret = bed.dir.path().join("console.secret");
    std::fs::write(&secret, format!("{CREDENTIAL}\n")).expect("secret");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("mode");
    }
    let port = free_port();
    bed.write_config(
        Some(&rules),
        "",
        &format!(
            "[safety]\ndelete_threshold = 1\n\n[daemon]\npoll_interval_secs = 1\nreconcile_interval_secs = 0\nlisten = \"127.0.0.1:{port}\"\n\n[console]\nenabled = true\ncredential_file = \"{}\"\n",
            secret.display()
        ),
    );
    let mut d = bed.start_daemon();
    let base = format!("http://127.0.0.1:{port}");

    // The first cycle: five groups written, the blocked one in quarantine.
    eventually!(
        Duration::from_secs(60),
        format!("the blocked group in quarantine (log:\n{})", d.log_text()),
        page_text(&format!("{base}/console/quarantine"))
            .await
            .contains("Blocked Group")
    );
    // Two deletes in the cloud, over the threshold of one: held back.
    for id in &ids[4..] {
        let st = bed.graph("DELETE", &format!("/groups/{id}"), None).await;
        assert!(st.is_success(), "delete {id}: {st}");
    }
    eventually!(
        Duration::from_secs(60),
        format!("the deletes held (log:\n{})", d.log_text()),
        page_text(&format!("{base}/console/held"))
            .await
            .contains("2 deletes wait for approval")
    );

    // Over plain HTTP: the credential is asked for, the headers are there, GET only.
    let r = http()
        .get(format!("{base}/console"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 401, "no credential");
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .is_ok_and(|v| v.starts_with("Basic ")),
        "{:?}",
        r.headers()
    );
    let r = http()
        .get(format!("{base}/console"))
        .basic_auth("anyone", Some("wrong"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 401, "a wrong credential");
    let r = http()
        .get(format!("{base}/console"))
        .basic_auth("ops", Some(CREDENTIAL))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200, "basic auth");
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .expect("CSP")
        .to_string();
    assert!(csp.starts_with("default-src 'none';"), "{csp}");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let body = r.text().await.expect("body");
    assert!(
        !body.contains("http://") && !body.contains("https://"),
        "an outside address: {body}"
    );
    let r = http()
        .post(format!("{base}/console/held"))
        .bearer_auth(CREDENTIAL)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 405, "the console only reads");
    // /metrics stays as it was: no credential asked there.
    let r = http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);

    // In the browser, with the credential.
    browser
        .send_headers(json!({"Authorization": format!("Bearer {CREDENTIAL}")}))
        .await;
    let shots = screenshots();

    browser.goto(&format!("{base}/console")).await;
    let text = browser.text().await;
    for want in [
        "Overview",
        "running (pid",
        "active: this instance writes to AD",
        "Rules loaded",
        "10-console.rhai",
        "Cloud groups read up to",
        "2 deletes, 0 groups' member removals",
        "1 groups failing",
        "Recent runs",
    ] {
        assert!(text.contains(want), "overview: no {want:?} in:\n{text}");
    }
    let bars = browser
        .eval("return document.querySelectorAll('svg.chart rect').length;")
        .await;
    assert!(bars.as_u64().is_some_and(|n| n >= 2), "the chart: {bars}");
    styled(&browser, "overview").await;
    nothing_injected(&browser, "overview").await;
    browser.screenshot(&shots.join("overview.png")).await;

    browser.goto(&format!("{base}/console/held")).await;
    let text = browser.text().await;
    assert!(
        text.contains("2 deletes wait for approval: writeback approve "),
        "{text}"
    );
    assert!(
        text.contains("Doomed A") && text.contains("Doomed B"),
        "{text}"
    );
    assert!(text.contains("No member removals are held back."), "{text}");
    nothing_injected(&browser, "held").await;
    browser.screenshot(&shots.join("held.png")).await;

    browser.goto(&format!("{base}/console/quarantine")).await;
    let text = browser.text().await;
    assert!(text.contains("Blocked Group"), "{text}");
    assert!(text.contains(&ids[3]), "the group's id: {text}");
    assert!(
        text.contains("writeback adopt"),
        "the error, whole, with its advice: {text}"
    );
    nothing_injected(&browser, "quarantine").await;
    browser.screenshot(&shots.join("quarantine.png")).await;

    browser.goto(&format!("{base}/console/audit")).await;
    let text = browser.text().await;
    // The hostile names as a person reads them: text, the override shown escaped.
    // Values are quoted as `writeback audit` quotes them (inner quotes escaped).
    let img_quoted = IMG.replace('"', "\\\"");
    assert!(
        text.contains(&img_quoted),
        "audit: the name as text:\n{text}"
    );
    assert!(text.contains(SCRIPT), "audit: the name as text:\n{text}");
    assert!(text.contains("Board \\u{202e}gpj.exe"), "audit:\n{text}");
    assert!(!text.contains('\u{202e}'), "an override reached the page");
    nothing_injected(&browser, "audit").await;
    browser.screenshot(&shots.join("audit.png")).await;

    // Searched by the hostile name, through the form's own query string.
    let q = writeback::console::html::query_value(IMG);
    browser
        .goto(&format!("{base}/console/audit?group={q}&since=1h"))
        .await;
    let text = browser.text().await;
    assert!(
        text.contains("1 events"),
        "one create of that group:\n{text}"
    );
    assert!(text.contains(&ids[0]), "{text}");
    assert!(!text.contains(&ids[1]), "another group's event:\n{text}");
    let kept = browser
        .eval("return document.querySelector('input[name=group]').value;")
        .await;
    assert_eq!(kept, json!(IMG), "the form keeps the search");
    nothing_injected(&browser, "audit search").await;
    browser.screenshot(&shots.join("audit-search.png")).await;

    browser
        .goto(&format!("{base}/console/audit?since=yesterday"))
        .await;
    let text = browser.text().await;
    assert!(
        text.contains("--since \"yesterday\""),
        "the filter's error:\n{text}"
    );

    browser
        .goto(&format!("{base}/console/explain?group={}", ids[0]))
        .await;
    let text = browser.text().await;
    assert!(
        text.contains("In step: a sync would change nothing"),
        "{text}"
    );
    assert!(text.contains("mapped by 10-console.rhai"), "{text}");
    assert!(text.contains(&img_quoted), "{text}");
    nothing_injected(&browser, "explain").await;
    browser.screenshot(&shots.join("explain.png")).await;

    browser
        .goto(&format!("{base}/console/explain?group=No%20Such%20Group"))
        .await;
    let text = browser.text().await;
    assert!(text.contains("Not found."), "{text}");

    // No secret on any page: neither the console's credential nor the bind password.
    for p in [
        "",
        "/held",
        "/quarantine",
        "/audit",
        &format!("/explain?group={}", ids[0]),
    ] {
        let html = page_text(&format!("{base}/console{p}")).await;
        assert!(!html.contains(CREDENTIAL), "{p}: the credential");
        assert!(
            !html.contains(&bed.ad.service_password),
            "{p}: the bind password"
        );
    }
    for shot in [
        "overview",
        "held",
        "quarantine",
        "audit",
        "audit-search",
        "explain",
    ] {
        let p = shots.join(format!("{shot}.png"));
        let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{}: {size} bytes", p.display());
    }

    browser.close().await;
    assert_eq!(d.stop(Duration::from_secs(30)), Some(0), "{}", d.log_text());
    bed.cleanup().await;
}
