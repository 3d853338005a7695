//! An end-to-end bed for the `writeback` binary: a scratch OU tree in the Samba AD DC with
//! on-prem users, a Graph emulator seeded with a tenant built from those users' SIDs, a config
//! file pointing at both, and helpers to change the tenant through Graph's API and to read AD.
//! [`ForestBed`] is the same kind of OU tree in the second forest (forest B).

use ldap3::{Ldap, Scope, SearchEntry};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::emulator::Emulator;
use crate::testbed::{create_ou, delete_subtree, unique_ou_name, AdTestbed, StoppedDc};

pub const TENANT_ID: &str = "7f3e2a10-4b5c-4d6e-8f90-a1b2c3d4e5f6";
pub const CLIENT_ID: &str = "5a1c0f52-8d3e-4f0b-9c61-2e7d4b8a9f10";
pub const CLIENT_SECRET: &str = "e2e-secret";

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The `writeback` binary: `WRITEBACK_BIN`, else `target/debug/writeback`.
pub fn writeback_bin() -> PathBuf {
    let p = std::env::var_os("WRITEBACK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/writeback"));
    assert!(
        p.exists(),
        "writeback binary not found at {}: build it with `cargo build -p writeback`",
        p.display()
    );
    p
}

/// A loopback port free a moment ago: bound to port 0, then let go.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local address").port()
}

/// A fresh random id in Graph's format.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An on-prem user created for a test.
#[derive(Debug, Clone)]
pub struct OnPremUser {
    pub cloud_id: String,
    pub dn: String,
    pub sid: String,
}

pub struct Bed {
    pub ad: AdTestbed,
    pub ldap: Ldap,
    /// The test's root OU (deleted on `cleanup`).
    pub root: String,
    /// The managed OU, where groups go.
    pub managed: String,
    pub dir: tempfile::TempDir,
    pub emulator: Emulator,
    pub users: Vec<OnPremUser>,
}

/// Creates a disabled on-prem user `CN=User <index> <sAMAccountName>` in `users_ou` (in whichever
/// forest `ldap` is bound to) and reads back its SID; its cloud id is a fresh one.
pub async fn create_onprem_user(ldap: &mut Ldap, users_ou: &str, index: usize) -> OnPremUser {
    let sam = format!("u{}{}", &new_id()[..8], index);
    let dn = format!("CN=User {index} {sam},{users_ou}");
    ldap.add(
        &dn,
        vec![
            ("objectClass", ["user"].into_iter().collect()),
            ("sAMAccountName", [sam.as_str()].into_iter().collect()),
            ("userAccountControl", ["514"].into_iter().collect()),
        ],
    )
    .await
    .expect("add user")
    .success()
    .expect("add user result");
    let sid = read_sid(ldap, &dn).await;
    OnPremUser {
        cloud_id: new_id(),
        dn,
        sid,
    }
}

/// The objectSid of the object at `dn`, as text (`S-1-5-21-...`).
pub async fn read_sid(ldap: &mut Ldap, dn: &str) -> String {
    let (rs, _) = ldap
        .search(dn, Scope::Base, "(objectClass=*)", vec!["objectSid"])
        .await
        .expect("read sid")
        .success()
        .unwrap_or_else(|e| panic!("read the objectSid of {dn}: {e}"));
    let e = SearchEntry::construct(rs.into_iter().next().expect("an entry"));
    let raw = e
        .bin_attrs
        .get("objectSid")
        .and_then(|v| v.first())
        .expect("objectSid");
    writeback::ad::dn::sid_to_string(raw).expect("objectSid")
}

/// A test's own OU tree in the second forest (forest B, [`AdTestbed::forest_b`]), laid out as
/// [`Bed`]'s in forest A: `<prefix>` with `Users` (on-prem users with their SIDs) and `Groups`
/// (delegated to forest B's service account). Its DC can be stopped and started again.
pub struct ForestBed {
    pub ad: AdTestbed,
    /// Bound as forest B's administrator (a new connection after [`Self::start_dc`]).
    pub ldap: Ldap,
    /// The test's root OU (deleted on `cleanup`).
    pub root: String,
    pub users_ou: String,
    /// The OU delegated to the service account, where groups would go.
    pub managed: String,
    pub users: Vec<OnPremUser>,
}

impl ForestBed {
    /// The `[targets.<name>.*]` tables that write into this forest (its DC, its service account
    /// with the password in a private file under `dir`, its managed OU and the default rules'
    /// containers below it), keeping its state in `state_path`.
    pub fn target_toml(&self, dir: &Path, name: &str, state_path: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let pw = dir.join(format!("{name}-password"));
        std::fs::write(&pw, &self.ad.service_password).expect("password file");
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        format!(
            r#"
[targets.{name}.ad]
url = "{url}"
bind_dn = "{bind}"
password_file = "{pw}"
ca_file = "{ca}"
managed_ous = ["{managed}"]
member_search_bases = ["{root}"]

[targets.{name}.state]
path = "{state_path}"

[targets.{name}.settings]
m365_container = "OU=M365,{managed}"
security_container = "OU=Security,{managed}"
"#,
            url = self.ad.ldaps_url,
            bind = self.ad.service_dn,
            pw = pw.display(),
            ca = self.ad.ca_file.display(),
            managed = self.managed,
            root = self.root,
        )
    }

    /// The tree in forest B with `n_users` users; panics (naming `WRITEBACK_TESTBED_B_ENV`)
    /// when forest B is not running.
    pub async fn new(prefix: &str, n_users: usize) -> ForestBed {
        Self::new_in(AdTestbed::forest_b(), prefix, n_users).await
    }

    /// The same tree in the forest `ad` names.
    pub async fn new_in(ad: AdTestbed, prefix: &str, n_users: usize) -> ForestBed {
        let mut ldap = ad.connect_ldaps().await;
        let root = format!("OU={},{}", unique_ou_name(prefix), ad.base_dn);
        create_ou(&mut ldap, &root).await;
        let users_ou = format!("OU=Users,{root}");
        let managed = format!("OU=Groups,{root}");
        create_ou(&mut ldap, &users_ou).await;
        create_ou(&mut ldap, &managed).await;
        ad.delegate(&managed);
        let mut bed = ForestBed {
            ad,
            ldap,
            root,
            users_ou,
            managed,
            users: Vec::new(),
        };
        for _ in 0..n_users {
            bed.add_user().await;
        }
        bed
    }

    /// One more on-prem user in the tree's `Users` OU, with its SID.
    pub async fn add_user(&mut self) -> OnPremUser {
        let user = create_onprem_user(&mut self.ldap, &self.users_ou, self.users.len()).await;
        self.users.push(user.clone());
        user
    }

    /// Stops the forest's DC ([`AdTestbed::stop_dc`]); `self.ldap` is dead until
    /// [`Self::start_dc`]. Dropping the returned value starts the DC again.
    #[must_use = "the DC starts again when this is dropped"]
    pub fn stop_dc(&self) -> StoppedDc {
        self.ad.stop_dc()
    }

    /// Starts the DC `stopped` names again (same data) and reconnects.
    pub async fn start_dc(&mut self, stopped: StoppedDc) {
        self.ad = stopped.start();
        self.ldap = self.ad.connect_ldaps().await;
    }

    /// Deletes the test's OU tree.
    pub async fn cleanup(mut self) {
        delete_subtree(&mut self.ldap, &self.root).await;
        let _ = self.ldap.unbind().await;
    }
}

/// DNs lower-cased, to compare with [`Bed::group_members`].
pub fn lowercased(dns: &[&str]) -> std::collections::BTreeSet<String> {
    dns.iter().map(|d| d.to_lowercase()).collect()
}

/// Builds a user's cloud representation (synced from AD when `sid` is given).
pub fn cloud_user(id: &str, name: &str, sid: Option<&str>) -> Value {
    let mut u = json!({
        "id": id,
        "displayName": name,
        "userPrincipalName": format!("{}@contoso.example", name.to_lowercase().replace(' ', ".")),
    });
    if let Some(sid) = sid {
        u["onPremisesSecurityIdentifier"] = json!(sid);
        u["onPremisesSyncEnabled"] = json!(true);
    }
    u
}

/// A Microsoft 365 group.
pub fn m365_group(id: &str, name: &str, nick: &str, members: &[&str]) -> Value {
    json!({
        "id": id,
        "displayName": name,
        "description": format!("{name} (Microsoft 365)"),
        "groupTypes": ["Unified"],
        "mailEnabled": true,
        "securityEnabled": false,
        "mailNickname": nick,
        "mail": format!("{nick}@contoso.example"),
        "proxyAddresses": [format!("SMTP:{nick}@contoso.example"), format!("smtp:{nick}@contoso.onmicrosoft.com")],
        "members": members,
    })
}

/// A cloud security group.
pub fn security_group(id: &str, name: &str, members: &[&str]) -> Value {
    json!({
        "id": id,
        "displayName": name,
        "description": format!("{name} (security)"),
        "groupTypes": [],
        "mailEnabled": false,
        "securityEnabled": true,
        "mailNickname": format!("sg-{}", &id[..8]),
        "members": members,
    })
}

impl Bed {
    /// Creates `<prefix>` OU with `Users` (holding `n_users` on-prem users) and `Groups`
    /// (managed) below it; starts the emulator with `users` + `groups` from `tenant`, where the
    /// placeholders `{{SID:i}}` in user objects are replaced by the i-th on-prem user's SID.
    pub async fn new(prefix: &str, n_users: usize) -> Bed {
        let ad = AdTestbed::load();
        let mut ldap = ad.connect_ldaps().await;
        let root = format!("OU={},{}", unique_ou_name(prefix), ad.base_dn);
        create_ou(&mut ldap, &root).await;
        let users_ou = format!("OU=Users,{root}");
        let managed = format!("OU=Groups,{root}");
        create_ou(&mut ldap, &users_ou).await;
        create_ou(&mut ldap, &managed).await;
        // The binary under test has only the documented rights, on the managed OU only.
        ad.delegate(&managed);
        let mut users = Vec::new();
        for i in 0..n_users {
            users.push(create_onprem_user(&mut ldap, &users_ou, i).await);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let emulator = Emulator::start(&empty_tenant(), &[]);
        Bed {
            ad,
            ldap,
            root,
            managed,
            dir,
            emulator,
            users,
        }
    }

    /// Replaces the emulator with one serving `users` and `groups` (extra CLI args allowed).
    pub fn seed(&mut self, users: Vec<Value>, groups: Vec<Value>, extra_args: &[&str]) {
        let mut tenant = empty_tenant();
        tenant["users"] = Value::Array(users);
        tenant["groups"] = Value::Array(groups);
        self.seed_tenant(tenant, extra_args);
    }

    pub fn seed_tenant(&mut self, tenant: Value, extra_args: &[&str]) {
        self.emulator = Emulator::start(&tenant, extra_args);
    }

    /// The cloud users matching the on-prem users (same order).
    pub fn synced_users(&self) -> Vec<Value> {
        self.users
            .iter()
            .enumerate()
            .map(|(i, u)| cloud_user(&u.cloud_id, &format!("User {i}"), Some(&u.sid)))
            .collect()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("writeback.toml")
    }

    /// Writes the config: default rules unless `rules_dir` is given; `extra` is appended.
    pub fn write_config(
        &self,
        rules_dir: Option<&Path>,
        extra_graph: &str,
        extra: &str,
    ) -> PathBuf {
        let root = workspace_root();
        let extra_graph = if extra_graph.is_empty() {
            "client_secret_env = \"WRITEBACK_TEST_GRAPH_SECRET\""
        } else {
            extra_graph
        };
        let rules = rules_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| root.join("scripts"));
        let text = format!(
            r#"
[graph]
tenant_id = "{TENANT_ID}"
client_id = "{CLIENT_ID}"
graph_url = "{base}/v1.0"
token_url = "{base}/{TENANT_ID}/oauth2/v2.0/token"
{extra_graph}

[ad]
url = "{ldaps}"
bind_dn = "{bind}"
password_env = "WRITEBACK_TEST_AD_PASSWORD"
ca_file = "{ca}"
managed_ous = ["{managed}"]
member_search_bases = ["{root}"]

[rules]
folder = "{rules}"
stdlib = "{stdlib}"

[rules.settings]
m365_container = "OU=M365,{managed}"
security_container = "OU=Security,{managed}"

[state]
path = "state.db"

{extra}
"#,
            base = self.emulator.base_url,
            ldaps = self.ad.ldaps_url,
            bind = self.ad.service_dn,
            ca = self.ad.ca_file.display(),
            managed = self.managed,
            root = self.root,
            rules = rules.display(),
            stdlib = root.join("stdlib").display(),
        );
        let p = self.config_path();
        std::fs::write(&p, text).expect("write config");
        p
    }

    /// Puts a hand-made group (no anchor, a random sAMAccountName) at `dn`: an object that is
    /// not Writeback's, holding a name a rule may want.
    pub async fn add_plain_group(&mut self, dn: &str) {
        let sam = format!("blk{}", &new_id()[..8]);
        self.ldap
            .add(
                dn,
                vec![
                    ("objectClass", ["group"].into_iter().collect()),
                    ("sAMAccountName", [sam.as_str()].into_iter().collect()),
                ],
            )
            .await
            .expect("add a plain group")
            .success()
            .expect("add a plain group result");
    }

    /// Creates a computer account `name` (sAMAccountName `name$`, a workstation trust account:
    /// userAccountControl 4096) directly below the test's OU, as joining a machine to the
    /// domain does; returns its DN and objectSid.
    pub async fn add_computer(&mut self, name: &str) -> (String, String) {
        let dn = format!("CN={name},{}", self.root);
        let sam = format!("{name}$");
        self.ldap
            .add(
                &dn,
                vec![
                    ("objectClass", ["computer"].into_iter().collect()),
                    ("sAMAccountName", [sam.as_str()].into_iter().collect()),
                    ("userAccountControl", ["4096"].into_iter().collect()),
                ],
            )
            .await
            .expect("add a computer")
            .success()
            .unwrap_or_else(|e| panic!("add {dn}: {e}"));
        let sid = read_sid(&mut self.ldap, &dn).await;
        (dn, sid)
    }

    /// Creates the containers the default rules use.
    pub async fn create_default_containers(&mut self) {
        let m = format!("OU=M365,{}", self.managed);
        let s = format!("OU=Security,{}", self.managed);
        create_ou(&mut self.ldap, &m).await;
        create_ou(&mut self.ldap, &s).await;
    }

    /// Replaces the `url = "<the DC's LDAPS URL>"` line of the config at `path` with `with`
    /// (other ways to reach the DC: `urls`, `discover`, ...).
    pub fn replace_dc_url(&self, path: &Path, with: &str) {
        let text = std::fs::read_to_string(path).expect("read config");
        let one = format!("url = \"{}\"", self.ad.ldaps_url);
        assert!(text.contains(&one), "the bed's config has no {one}");
        std::fs::write(path, text.replace(&one, with)).expect("write config");
    }

    /// Runs the binary with the bed's config; `args` after the verb.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(writeback_bin())
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .env("WRITEBACK_TEST_AD_PASSWORD", &self.ad.service_password)
            .env("WRITEBACK_TEST_GRAPH_SECRET", CLIENT_SECRET)
            .output()
            .expect("run writeback")
    }

    /// Runs the binary with the config at `config`, and `env` besides the bed's secrets.
    pub fn run_with(&self, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(writeback_bin())
            .arg("--config")
            .arg(config)
            .args(args)
            .env("WRITEBACK_TEST_AD_PASSWORD", &self.ad.service_password)
            .env("WRITEBACK_TEST_GRAPH_SECRET", CLIENT_SECRET)
            .envs(env.iter().copied())
            .output()
            .expect("run writeback")
    }

    /// Starts `writeback <args>` without waiting for it (to kill it midway).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        Command::new(writeback_bin())
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .env("WRITEBACK_TEST_AD_PASSWORD", &self.ad.service_password)
            .env("WRITEBACK_TEST_GRAPH_SECRET", CLIENT_SECRET)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start writeback")
    }

    /// Runs `writeback <verb> --json`, asserting the exit status, and returns the report.
    pub fn run_json(&self, args: &[&str], expect_code: i32) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.run(&a);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(expect_code),
            "writeback {args:?} exited {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status.code()
        );
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("report is not JSON ({e}):\n{stdout}\nstderr:\n{stderr}"))
    }

    /// All groups below the managed OU, keyed by lowercased DN, with their attributes
    /// (lowercased names) and members (ranged reads are not needed for test-sized groups).
    pub async fn groups(&mut self) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
        let (rs, _) = self
            .ldap
            .search(
                &self.managed,
                Scope::Subtree,
                "(objectClass=group)",
                vec!["*"],
            )
            .await
            .expect("search groups")
            .success()
            .expect("search groups result");
        rs.into_iter()
            .map(SearchEntry::construct)
            .map(|e| {
                (
                    e.dn.to_lowercase(),
                    e.attrs
                        .into_iter()
                        .map(|(k, v)| (k.to_lowercase(), v))
                        .collect(),
                )
            })
            .collect()
    }

    /// The member DNs, lower-cased, of the group written for cloud group `id` (panics when
    /// there is none).
    pub async fn group_members(&mut self, id: &str) -> std::collections::BTreeSet<String> {
        let (_, attrs) = self
            .group_by_id(id)
            .await
            .unwrap_or_else(|| panic!("group {id} is not in AD"));
        attrs
            .get("member")
            .map(|v| v.iter().map(|m| m.to_lowercase()).collect())
            .unwrap_or_default()
    }

    /// The group whose msDS-ExternalDirectoryObjectId is `Group_<id>`.
    pub async fn group_by_id(
        &mut self,
        id: &str,
    ) -> Option<(String, BTreeMap<String, Vec<String>>)> {
        let anchor = format!("Group_{id}");
        self.groups().await.into_iter().find(|(_, a)| {
            a.get("msds-externaldirectoryobjectid")
                .is_some_and(|v| v.first() == Some(&anchor))
        })
    }

    /// The values of one attribute of the object at `dn`, lowercased (none when it has none).
    pub async fn values_of(&mut self, dn: &str, attr: &str) -> Vec<String> {
        let (rs, _) = self
            .ldap
            .search(dn, Scope::Base, "(objectClass=*)", vec![attr])
            .await
            .expect("search")
            .success()
            .expect("search result");
        rs.into_iter()
            .flat_map(|e| {
                SearchEntry::construct(e)
                    .attrs
                    .remove(attr)
                    .unwrap_or_default()
            })
            .map(|m| m.to_lowercase())
            .collect()
    }

    pub async fn highest_usn(&mut self) -> u64 {
        let (rs, _) = self
            .ldap
            .search(
                "",
                Scope::Base,
                "(objectClass=*)",
                vec!["highestCommittedUSN"],
            )
            .await
            .expect("rootDSE")
            .success()
            .expect("rootDSE result");
        let e = SearchEntry::construct(rs.into_iter().next().expect("rootDSE entry"));
        e.attrs["highestCommittedUSN"][0].parse().expect("usn")
    }

    /// An app-only token from the emulator.
    pub async fn graph_token(&self) -> String {
        let url = format!("{}/{TENANT_ID}/oauth2/v2.0/token", self.emulator.base_url);
        let r: Value = reqwest::Client::new()
            .post(url)
            .form(&[
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("scope", "https://graph.microsoft.com/.default"),
                ("grant_type", "client_credentials"),
            ])
            .send()
            .await
            .expect("token request")
            .json()
            .await
            .expect("token json");
        r["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {r}"))
            .to_string()
    }

    /// A Graph write through the emulator's API (`method` + path below /v1.0).
    pub async fn graph(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::StatusCode {
        self.graph_at("v1.0", method, path, body).await
    }

    /// [`graph`](Self::graph) against another API version (`"beta"`).
    pub async fn graph_at(
        &self,
        version: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::StatusCode {
        let token = self.graph_token().await;
        let url = format!("{}/{version}{path}", self.emulator.base_url);
        let c = reqwest::Client::new();
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = c.request(m, url).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("graph request");
        let status = resp.status();
        assert!(
            status.is_success(),
            "{method} {path} -> {status}: {}",
            resp.text().await.unwrap_or_default()
        );
        status
    }

    /// A Graph GET through the emulator's API (path below /v1.0): the JSON answer.
    pub async fn graph_get(&self, path: &str) -> Value {
        let token = self.graph_token().await;
        let url = format!("{}/v1.0{path}", self.emulator.base_url);
        let resp = reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("graph request");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "GET {path} -> {status}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {text}"))
    }

    /// Deletes the test's OU tree.
    pub async fn cleanup(mut self) {
        delete_subtree(&mut self.ldap, &self.root).await;
    }
}

fn empty_tenant() -> Value {
    json!({
        "tenantId": TENANT_ID,
        "apps": [{ "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET }],
        "users": [],
        "groups": [],
    })
}

/// `writeback run` as a child process, its log (stderr) in a file; SIGTERM and wait on drop.
pub struct Daemon {
    child: Option<std::process::Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal (`libc`-free: through the `kill` command).
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(st.success(), "kill -{sig} {}", self.pid());
    }

    /// SIGTERM, then waits (at most `timeout`) and returns the exit code.
    pub fn stop(&mut self, timeout: std::time::Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let start = std::time::Instant::now();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                let log = self.log_text();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "writeback run did not stop within {timeout:?} after SIGTERM; the end of its log:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Bed {
    /// Starts `writeback run` with the bed's config.
    pub fn start_daemon(&self) -> Daemon {
        self.start_daemon_with(&self.config_path(), &[])
    }

    /// Starts `writeback run` with the config at `config`, and `env` besides the bed's secrets.
    pub fn start_daemon_with(&self, config: &Path, env: &[(&str, &str)]) -> Daemon {
        let log = self.dir.path().join(format!("daemon-{}.log", new_id()));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(writeback_bin())
            .arg("--config")
            .arg(config)
            .arg("-v")
            .arg("run")
            .env("WRITEBACK_TEST_AD_PASSWORD", &self.ad.service_password)
            .env("WRITEBACK_TEST_GRAPH_SECRET", CLIENT_SECRET)
            .envs(env.iter().copied())
            .env("RUST_LOG", "writeback=debug")
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start writeback run");
        Daemon {
            child: Some(child),
            log,
        }
    }
}

/// The stderr of a run that must have exited 0; panics with stdout and stderr otherwise.
pub fn succeeded(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "writeback failed:\nstdout:\n{}\nstderr:\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}
