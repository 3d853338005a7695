//! Shared helpers of the api_* tests: start the built emulator, get tokens, call Graph.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use reqwest::header::HeaderMap;
use serde_json::{json, Value};

pub const TENANT_ID: &str = "5e1f0c2a-6b3d-4a8e-9c71-0d2b4f6a8c10";
pub const CLIENT_ID: &str = "0b7d9e21-4c6a-4f3b-8e15-a2c4d6e8f001";
pub const SECRET: &str = "api-test-secret";

pub const U1: &str = "693acd06-2877-4339-8ade-b704261fe7a0";
pub const U2: &str = "49320844-be99-4164-8167-87ff5d047ace";
pub const U3: &str = "632f6bb2-3ec8-4c1f-9073-0027a8c68593";
pub const U4: &str = "3c8ac7c4-d365-4df9-abfa-356a9dd7763c";
pub const U5: &str = "37de1ae3-408f-4702-8636-20824abda004";
pub const G_M365: &str = "c2f798fd-f95d-4623-8824-63aec21f0001";
pub const G_HR: &str = "ec22655c-8eb2-432a-b4ea-8b8a254b0002";
pub const G_EMPTY: &str = "bed7f0d4-750e-4e7e-a1b2-169002d06fc9";
pub const G_BIG: &str = "2e5807ce-58f3-4a94-9b37-0cde2e085957";

fn user(id: &str, n: usize, synced: bool) -> Value {
    let mut u = json!({
        "id": id,
        "displayName": format!("Testuser{n}"),
        "givenName": format!("Given{n}"),
        "surname": "Doe",
        "userPrincipalName": format!("testuser{n}@contoso.onmicrosoft.com"),
        "mailNickname": format!("testuser{n}"),
        "accountEnabled": true,
    });
    if synced {
        u["onPremisesSecurityIdentifier"] = json!(format!("S-1-5-21-1-2-3-{}", 1100 + n));
        u["onPremisesImmutableId"] = json!(format!("imm{n}"));
        u["onPremisesSyncEnabled"] = json!(true);
    }
    u
}

/// Five users; an M365 group, a security group, an empty one and a "big" one with all users.
pub fn tenant() -> Value {
    json!({
        "tenantId": TENANT_ID,
        "domain": "contoso.onmicrosoft.com",
        "apps": [{"clientId": CLIENT_ID, "clientSecret": SECRET}],
        "users": [user(U1, 1, true), user(U2, 2, false), user(U3, 3, true), user(U4, 4, false), user(U5, 5, true)],
        "groups": [
            {"id": G_M365, "displayName": "All Company", "description": "everyone", "groupTypes": ["Unified"],
             "mailEnabled": true, "securityEnabled": false, "mailNickname": "allcompany",
             "mail": "allcompany@contoso.onmicrosoft.com", "proxyAddresses": ["SMTP:allcompany@contoso.onmicrosoft.com"],
             "visibility": "Public", "members": [U1, U2]},
            {"id": G_HR, "displayName": "sg-HR", "description": "All HR personnel", "groupTypes": [],
             "mailEnabled": false, "securityEnabled": true, "mailNickname": "sghr", "members": [U1, U2]},
            {"id": G_EMPTY, "displayName": "All Employees", "groupTypes": [], "mailEnabled": false,
             "securityEnabled": true, "mailNickname": "allemployees", "members": []},
            {"id": G_BIG, "displayName": "LargeGroup", "description": "A group containing all users", "groupTypes": [],
             "mailEnabled": false, "securityEnabled": true, "mailNickname": "large",
             "members": [U1, U2, U3, U4, U5, G_HR]},
        ],
    })
}

pub struct Emu {
    pub base: String,
    child: Child,
    _dir: tempfile::TempDir,
    pub http: reqwest::Client,
    token: tokio::sync::OnceCell<String>,
}

impl Drop for Emu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client")
}

/// Spawn `graph-emulator serve` on `tenant` with extra flags.
pub fn start_with(tenant: &Value, args: &[&str]) -> Emu {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tenant.json");
    std::fs::write(&path, tenant.to_string()).expect("write tenant");
    let mut child = Command::new(env!("CARGO_BIN_EXE_graph-emulator"))
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--tenant")
        .arg(&path)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn graph-emulator");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("first line");
    let base = line.trim().to_string();
    assert!(base.starts_with("http"), "emulator printed {base:?}");
    std::thread::spawn(move || for _ in out.lines().map_while(Result::ok) {});
    Emu {
        base,
        child,
        _dir: dir,
        http: client(),
        token: tokio::sync::OnceCell::new(),
    }
}

pub fn start(args: &[&str]) -> Emu {
    start_with(&tenant(), args)
}

pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Assert a Graph error with this status and code; returns the message.
    pub fn graph_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.body["error"]["code"], code, "{}", self.body);
        let inner = &self.body["error"]["innerError"];
        assert!(inner["request-id"].is_string(), "{}", self.body);
        assert!(inner["date"].is_string(), "{}", self.body);
        self.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

async fn into_resp(r: reqwest::Response) -> Resp {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Resp {
        status,
        headers,
        body,
    }
}

impl Emu {
    pub fn token_url(&self) -> String {
        format!("{}/{TENANT_ID}/oauth2/v2.0/token", self.base)
    }

    pub async fn token_request(&self, form: &[(&str, &str)]) -> Resp {
        into_resp(
            self.http
                .post(self.token_url())
                .form(form)
                .send()
                .await
                .expect("token request"),
        )
        .await
    }

    pub async fn fresh_token(&self) -> String {
        let r = self
            .token_request(&[
                ("client_id", CLIENT_ID),
                ("client_secret", SECRET),
                ("scope", "https://graph.microsoft.com/.default"),
                ("grant_type", "client_credentials"),
            ])
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    pub async fn token(&self) -> String {
        self.token.get_or_init(|| self.fresh_token()).await.clone()
    }

    /// Absolute URL for a path below /v1.0, or the URL itself when absolute.
    pub fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            format!("{}/v1.0/{}", self.base, path_or_url.trim_start_matches('/'))
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let token = self.token().await;
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        into_resp(req.send().await.expect("graph request")).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call(reqwest::Method::GET, path, None, &[]).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.call(reqwest::Method::GET, path, None, headers).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.call(reqwest::Method::POST, path, Some(body), &[])
            .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.call(reqwest::Method::PATCH, path, Some(body), &[])
            .await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.call(reqwest::Method::DELETE, path, None, &[]).await
    }

    pub async fn control(&self, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/_emulator/{path}", self.base);
        let req = match body {
            Some(b) => self.http.post(url).json(&b),
            None => self.http.get(url),
        };
        let r = into_resp(req.send().await.expect("control")).await;
        assert_eq!(r.status, 200, "control {path}: {}", r.body);
        r.body
    }

    /// Follow a delta round from `start` (path or link) to its deltaLink.
    pub async fn delta_round(&self, start: &str, headers: &[(&str, &str)]) -> (Vec<Value>, String) {
        let mut pages = Vec::new();
        let mut url = start.to_string();
        loop {
            let r = self.get_with(&url, headers).await;
            assert_eq!(r.status, 200, "{url}: {}", r.body);
            let next = r.body["@odata.nextLink"].as_str().map(str::to_string);
            let delta = r.body["@odata.deltaLink"].as_str().map(str::to_string);
            assert!(
                next.is_some() != delta.is_some(),
                "exactly one link: {}",
                r.body
            );
            pages.push(r.body);
            match (next, delta) {
                (Some(n), None) => url = n,
                (None, Some(d)) => return (pages, d),
                _ => unreachable!(),
            }
            assert!(pages.len() < 1000, "round does not end");
        }
    }
}

/// Per-id merge of a delta round's items.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Merged {
    pub props: serde_json::Map<String, Value>,
    pub added: std::collections::BTreeSet<String>,
    pub removed: std::collections::BTreeSet<String>,
    pub removed_reason: Option<String>,
    pub appearances: usize,
}

pub fn merge(pages: &[Value]) -> std::collections::BTreeMap<String, Merged> {
    let mut out: std::collections::BTreeMap<String, Merged> = Default::default();
    for p in pages {
        for item in p["value"].as_array().expect("value array") {
            let id = item["id"]
                .as_str()
                .expect("every item has an id")
                .to_string();
            let e = out.entry(id).or_default();
            e.appearances += 1;
            for (k, v) in item.as_object().unwrap() {
                match k.as_str() {
                    "members@delta" => {
                        for m in v.as_array().unwrap() {
                            let mid = m["id"].as_str().unwrap().to_string();
                            assert!(m["@odata.type"].is_string(), "{m}");
                            if m.get("@removed").is_some() {
                                assert_eq!(m["@removed"], json!({"reason": "deleted"}));
                                e.removed.insert(mid);
                            } else {
                                e.added.insert(mid);
                            }
                        }
                    }
                    "@removed" => e.removed_reason = v["reason"].as_str().map(str::to_string),
                    _ => {
                        e.props.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
    out
}

pub fn set(ids: &[&str]) -> std::collections::BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}
