//! Shared by the conformance tests: the emulator as a child process (stopped by PID on drop),
//! app-only tokens, Graph requests, and the copied fixtures under `conformance/`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub const TENANT_ID: &str = "5e1f0c2a-6b3d-4a8e-9c71-0d2b4f6a8c10";
pub const CLIENT_ID: &str = "0b7d9e21-4c6a-4f3b-8e15-a2c4d6e8f001";
pub const CLIENT_SECRET: &str = "conformance-secret";
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

/// `tests/graph-emulator/conformance`.
pub fn conformance_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conformance")
}

pub fn read_text(rel: &str) -> String {
    let p = conformance_dir().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// A JSON fixture under `conformance/fixtures/`.
pub fn fixture(rel: &str) -> Value {
    let text = read_text(&format!("fixtures/{rel}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {rel} is not JSON: {e}"))
}

/// A doc fixture that is not quite JSON (`<...>` placeholder lines, trailing commas), made
/// parseable without touching its structure: placeholder lines are dropped, placeholders
/// inside strings are kept as text, and commas before `]`/`}` are removed.
pub fn lenient_fixture(rel: &str) -> Value {
    let text = read_text(&format!("fixtures/{rel}"));
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('<'))
        .collect();
    let joined = kept.join("\n");
    let mut out = String::with_capacity(joined.len());
    let chars: Vec<char> = joined.chars().collect();
    let mut in_string = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if in_string {
            out.push(c);
            if c == '\\' && i + 1 < chars.len() {
                out.push(chars[i + 1]);
                i += 1;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if c == ',' {
            let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
            if !matches!(next, Some(']') | Some('}')) {
                out.push(c);
            }
        } else {
            out.push(c);
        }
        i += 1;
    }
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("fixture {rel} (cleaned) is not JSON: {e}\n{out}"))
}

/// The `graph-emulator` binary cargo built for this test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_graph-emulator"))
}

/// A running `graph-emulator serve`, killed (by its PID) when dropped.
pub struct Emulator {
    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub base: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Emulator {
    pub fn start(tenant: &Value, args: &[&str]) -> Emulator {
        let dir = tempfile::tempdir().expect("temporary directory");
        let file = dir.path().join("tenant.json");
        std::fs::write(&file, tenant.to_string()).expect("writing the tenant file");
        Self::start_file(&file, args, dir)
    }

    fn start_file(file: &Path, args: &[&str], dir: tempfile::TempDir) -> Emulator {
        let bin = binary();
        let mut child = Command::new(&bin)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--tenant")
            .arg(file)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let base = line.trim().to_string();
        if read.is_err() || !base.starts_with("http://127.0.0.1:") {
            let _ = child.kill();
            let _ = child.wait();
            panic!("graph-emulator did not print its base URL (got {base:?})");
        }
        Emulator {
            base,
            child,
            _dir: dir,
        }
    }

    pub fn graph(&self, path: &str) -> String {
        format!("{}/v1.0{path}", self.base)
    }

    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.base)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // Child::kill signals this child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP client for loopback (no proxies from the environment).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("HTTP client")
}

/// POST the token endpoint; returns status and JSON body.
pub async fn token_request(
    http: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
) -> (u16, Value) {
    let r = http
        .post(url)
        .form(form)
        .send()
        .await
        .expect("token request");
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("token response is JSON");
    (status, body)
}

/// A client-credentials token obtained with the client secret.
pub async fn token(
    http: &reqwest::Client,
    emu: &Emulator,
    tenant: &str,
    client: &str,
    secret: &str,
) -> String {
    let (status, body) = token_request(
        http,
        &emu.token_url(tenant),
        &[
            ("client_id", client),
            ("client_secret", secret),
            ("grant_type", "client_credentials"),
            ("scope", GRAPH_SCOPE),
        ],
    )
    .await;
    assert_eq!(status, 200, "token endpoint: {body}");
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token in {body}"))
        .to_string()
}

/// One Graph response: status, headers (lower-case names) and JSON body (Null when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A Graph caller with a bearer token.
pub struct Graph {
    pub http: reqwest::Client,
    pub token: String,
}

impl Graph {
    pub async fn new(emu: &Emulator) -> Graph {
        let http = http();
        let token = token(&http, emu, TENANT_ID, CLIENT_ID, CLIENT_SECRET).await;
        Graph { http, token }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        let mut req = self.http.request(method, url).bearer_auth(&self.token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {url}: {e}"));
        let status = r.status().as_u16();
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let text = r.text().await.unwrap_or_default();
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, url: &str) -> Reply {
        self.send(reqwest::Method::GET, url, &[], None).await
    }

    /// GET that must answer 200 with a JSON object.
    pub async fn get_ok(&self, url: &str) -> Value {
        let r = self.get(url).await;
        assert_eq!(r.status, 200, "GET {url}: {}", r.body);
        r.body
    }

    /// A Graph write that must succeed (2xx).
    pub async fn write(&self, method: reqwest::Method, url: &str, body: Option<&Value>) -> Reply {
        let r = self.send(method.clone(), url, &[], body).await;
        assert!(
            (200..300).contains(&r.status),
            "{method} {url}: {} {}",
            r.status,
            r.body
        );
        r
    }
}

/// Follow a delta round from `url` (initial request or deltaLink) to its deltaLink; returns
/// the pages. Asserts every page carries exactly one of nextLink/deltaLink.
pub async fn delta_round(g: &Graph, url: &str, headers: &[(&str, &str)]) -> (Vec<Value>, String) {
    let mut pages = Vec::new();
    let mut next = url.to_string();
    loop {
        let r = g.send(reqwest::Method::GET, &next, headers, None).await;
        assert_eq!(r.status, 200, "GET {next}: {}", r.body);
        let page = r.body;
        let nl = page
            .get("@odata.nextLink")
            .and_then(Value::as_str)
            .map(str::to_string);
        let dl = page
            .get("@odata.deltaLink")
            .and_then(Value::as_str)
            .map(str::to_string);
        pages.push(page);
        match (nl, dl) {
            (Some(n), None) => next = n,
            (None, Some(d)) => return (pages, d),
            (n, d) => {
                panic!("a delta page needs exactly one of nextLink/deltaLink, got {n:?} / {d:?}")
            }
        }
        assert!(pages.len() < 500, "delta round does not end");
    }
}
