//! The Graph emulator as a child process, stopped by PID when dropped.
//!
//! ```ignore
//! let tenant = serde_json::json!({"tenantId": "...", "apps": [...], "users": [...], "groups": [...]});
//! let emu = Emulator::start(&tenant, &["--delta-page-size", "2"]);
//! // Graph at emu.graph_url(), token endpoint at emu.token_url(tenant_id)
//! ```

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// A running `graph-emulator serve`.
pub struct Emulator {
    /// `http://127.0.0.1:<port>` (or `https://` with `--tls-cert`), no trailing slash.
    pub base_url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

/// Where the binary is: `$GRAPH_EMULATOR_BIN`, else `<workspace>/target/debug/graph-emulator`
/// (or under `$CARGO_TARGET_DIR`).
pub fn binary_path() -> PathBuf {
    if let Some(p) = std::env::var_os("GRAPH_EMULATOR_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("..")
                .join("target")
        });
    target.join("debug").join("graph-emulator")
}

impl Emulator {
    /// Write `tenant` to a temporary file and start the emulator on it with `extra_args`
    /// (any `serve` flags). Panics with a clear message when the binary is missing or does
    /// not start.
    pub fn start(tenant: &Value, extra_args: &[&str]) -> Emulator {
        let bin = binary_path();
        if !bin.is_file() {
            panic!(
                "graph-emulator binary not found at {}: build it with `cargo build -p graph-emulator` \
                 (or set GRAPH_EMULATOR_BIN)",
                bin.display()
            );
        }
        let dir = tempfile::tempdir().expect("temporary directory for the tenant file");
        let tenant_file = dir.path().join("tenant.json");
        std::fs::write(&tenant_file, tenant.to_string()).expect("writing the tenant file");
        let mut child = Command::new(&bin)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--tenant")
            .arg(&tenant_file)
            .args(extra_args)
            .env(
                "RUST_LOG",
                std::env::var("GRAPH_EMULATOR_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        // Keep draining stderr so the child never blocks on a full pipe; show it on failure.
        let log = std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[graph-emulator] {line}");
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        let mut lines = BufReader::new(stdout);
        let mut first = String::new();
        let read = lines.read_line(&mut first);
        let base_url = first.trim().to_string();
        if read.is_err() || !base_url.starts_with("http") {
            let _ = child.kill();
            let _ = child.wait();
            let log = log.join().unwrap_or_default();
            panic!("graph-emulator did not print its base URL (got {base_url:?}); stderr:\n{log}");
        }
        // Drain the rest of stdout in the background.
        std::thread::spawn(move || for _ in lines.lines().map_while(Result::ok) {});
        Emulator {
            base_url,
            child,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `<base>/v1.0`
    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.base_url)
    }

    /// `<base>/{tenant}/oauth2/v2.0/token`
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.base_url)
    }

    /// `<base>/_emulator/<path>`
    pub fn control_url(&self, path: &str) -> String {
        format!(
            "{}/_emulator/{}",
            self.base_url,
            path.trim_start_matches('/')
        )
    }

    /// Call the control endpoint (POST with a JSON body, or GET when `body` is None).
    pub async fn control(&self, path: &str, body: Option<Value>) -> Value {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("HTTP client");
        let req = match body {
            Some(b) => http.post(self.control_url(path)).json(&b),
            None => http.get(self.control_url(path)),
        };
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("control {path}: {e}"));
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "control {path}: {status} {v}");
        v
    }

    /// Move the emulator clock forward (expires delta tokens after 7 days, access tokens after 1 h).
    pub async fn advance_clock(&self, seconds: u64) -> Value {
        self.control(
            "clock/advance",
            Some(serde_json::json!({ "seconds": seconds })),
        )
        .await
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(tenant id, client id, client secret)` of the first app with a secret in a tenant file.
pub fn app_credentials(tenant: &Value) -> Option<(String, String, String)> {
    let tenant_id = tenant.get("tenantId")?.as_str()?.to_string();
    tenant.get("apps")?.as_array()?.iter().find_map(|a| {
        Some((
            tenant_id.clone(),
            a.get("clientId")?.as_str()?.to_string(),
            a.get("clientSecret")?.as_str()?.to_string(),
        ))
    })
}

/// A minimal tenant file: one app with a secret, the given users and groups.
pub fn tenant_with(
    tenant_id: &str,
    client_id: &str,
    secret: &str,
    users: Value,
    groups: Value,
) -> Value {
    serde_json::json!({
        "tenantId": tenant_id,
        "domain": "contoso.onmicrosoft.com",
        "apps": [{"clientId": client_id, "clientSecret": secret}],
        "users": users,
        "groups": groups,
    })
}
