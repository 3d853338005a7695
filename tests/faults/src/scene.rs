//! One tenant, several targets: a scratch OU tree with on-prem users and one Graph emulator
//! (the harness's [`Bed`]), and any number of managed OUs below it, each synced by its own state
//! file and config. A fault run and an undisturbed run of the same tenant go to two targets, and
//! their AD objects are compared with the OU names taken out.
//!
//! The same cloud ids are written by both runs, so an M365 group's sAMAccountName (unique in the
//! domain) would collide: a reference run is taken and its OU deleted before the fault runs.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ldap3::{Scope, SearchEntry};
use serde_json::Value;
use writeback_integration::harness::{
    m365_group, new_id, security_group, writeback_bin, Bed, CLIENT_SECRET,
};
use writeback_integration::testbed::{create_ou, delete_subtree, AdTestbed};

use crate::proxy::{Fault, FaultProxy};

/// AD's groups below a managed OU: DN → attribute (lowercased) → values, with the OU's DN
/// replaced by `<managed>` and what AD makes up per object (GUIDs, SIDs, USNs, times,
/// generated account names) left out.
pub type AdGroups = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// Attributes that differ between two runs of the same tenant whatever the runs did.
const PER_OBJECT: &[&str] = &[
    "objectguid",
    "objectsid",
    "whencreated",
    "whenchanged",
    "usncreated",
    "usnchanged",
    "dscorepropagationdata",
    "distinguishedname",
];

/// The managed OU's name in normalised DNs.
const MANAGED: &str = "<managed>";

/// A tenant and its AD users. See the module comment.
pub struct Scene {
    pub bed: Bed,
    /// Ids of the groups in the tenant, in the order they were made.
    pub group_ids: Vec<String>,
}

/// What an undisturbed run of the tenant did.
#[derive(Debug, Clone)]
pub struct Reference {
    /// AD after it, normalised.
    pub groups: AdGroups,
    /// How long its first sync took (fault points are drawn within it).
    pub first_sync: Duration,
    /// Bytes the first sync sent to the DC (0 without a proxy).
    pub first_sync_bytes: u64,
    /// The state file (and its WAL) after the first sync.
    pub state_bytes: u64,
    /// The largest size the state file or its WAL reached during the first sync.
    pub largest_file: u64,
}

/// A managed OU with its own config and state file.
#[derive(Debug, Clone)]
pub struct Target {
    pub managed: String,
    /// Holds the config (and the state file unless another directory was asked for).
    pub dir: PathBuf,
    pub config: PathBuf,
    pub state: PathBuf,
}

/// Runs `body` with a scene of `n_users` AD users and deletes its OU tree afterwards, also when
/// `body` panics (the panic is then passed on).
pub async fn with_scene<F, Fut>(prefix: &str, n_users: usize, body: F)
where
    F: FnOnce(Scene) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let bed = Bed::new(prefix, n_users).await;
    let root = bed.root.clone();
    let ad = bed.ad.clone();
    let scene = Scene {
        bed,
        group_ids: Vec::new(),
    };
    let outcome = tokio::spawn(body(scene)).await;
    let mut ldap = ad.connect_ldaps().await;
    delete_subtree(&mut ldap, &root).await;
    let _ = ldap.unbind().await;
    if let Err(e) = outcome {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("test body in {root} did not finish: {e}");
    }
}

impl Scene {
    /// Seeds the emulator with the AD users' cloud twins and `n_security` security groups and
    /// `n_m365` Microsoft 365 groups: members drawn from the users, every fifth security group
    /// nesting the one before it, one cloud-only member in the first M365 group. `extra_args`
    /// go to the emulator.
    pub fn seed(&mut self, n_security: usize, n_m365: usize, extra_args: &[&str]) {
        let mut users = self.bed.synced_users();
        let cloud_only = new_id();
        users.push(serde_json::json!({
            "id": cloud_only, "displayName": "Cloud Only",
            "userPrincipalName": "cloud.only@contoso.onmicrosoft.com",
        }));
        let ids: Vec<String> = self.bed.users.iter().map(|u| u.cloud_id.clone()).collect();
        let members = |i: usize| -> Vec<String> {
            if ids.is_empty() {
                return Vec::new();
            }
            (0..(i % 4))
                .map(|k| ids[(i + k * 3) % ids.len()].clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        let mut groups = Vec::new();
        let mut group_ids: Vec<String> = Vec::new();
        for i in 0..n_security {
            let id = new_id();
            let mut m = members(i);
            if i % 5 == 4 {
                m.push(group_ids[i - 1].clone());
            }
            let refs: Vec<&str> = m.iter().map(String::as_str).collect();
            groups.push(security_group(&id, &format!("Fault Sec {i}"), &refs));
            group_ids.push(id);
        }
        for i in 0..n_m365 {
            let id = new_id();
            let mut m = members(i + 1);
            if i == 0 {
                m.push(cloud_only.clone());
            }
            let refs: Vec<&str> = m.iter().map(String::as_str).collect();
            groups.push(m365_group(
                &id,
                &format!("Fault Team {i}"),
                &format!("fault{}{i}", &id[..6]),
                &refs,
            ));
            group_ids.push(id);
        }
        self.bed.seed(users, groups, extra_args);
        self.group_ids = group_ids;
    }

    pub fn ad(&self) -> &AdTestbed {
        &self.bed.ad
    }

    /// A managed OU `OU=<name>,<root>` with the containers of the default rules, and a config for
    /// it: AD at `ad_url` (default: the DC's LDAPS URL), the state file in `state_dir` (default:
    /// a directory of its own), `extra` appended to the config.
    pub async fn target(
        &mut self,
        name: &str,
        ad_url: Option<&str>,
        state_dir: Option<&Path>,
        extra: &str,
    ) -> Target {
        let managed = format!("OU={name},{}", self.bed.root);
        create_ou(&mut self.bed.ldap, &managed).await;
        self.bed.ad.delegate(&managed);
        for sub in ["M365", "Security"] {
            create_ou(&mut self.bed.ldap, &format!("OU={sub},{managed}")).await;
        }
        let dir = self.bed.dir.path().join(name);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let state = state_dir.unwrap_or(&dir).join("state.db");
        // The harness writes the config for its managed OU: borrow that, then retarget it.
        let own = std::mem::replace(&mut self.bed.managed, managed.clone());
        let written = self.bed.write_config(None, "", extra);
        self.bed.managed = own;
        let text = std::fs::read_to_string(&written)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", written.display()));
        let state_line = "path = \"state.db\"";
        assert!(text.contains(state_line), "config layout changed:\n{text}");
        let mut text = text.replace(
            state_line,
            &format!("path = {}", toml_string(&state.display().to_string())),
        );
        if let Some(url) = ad_url {
            let url_line = format!("url = \"{}\"", self.bed.ad.ldaps_url);
            assert!(text.contains(&url_line), "config layout changed:\n{text}");
            text = text.replace(&url_line, &format!("url = {}", toml_string(url)));
        }
        let config = dir.join("writeback.toml");
        std::fs::write(&config, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
        Target {
            managed,
            dir,
            config,
            state,
        }
    }

    /// Deletes a target's OU tree (its groups' account names become free again).
    pub async fn drop_target(&mut self, target: &Target) {
        delete_subtree(&mut self.bed.ldap, &target.managed).await;
    }

    /// An undisturbed first sync of the tenant as it is now, into a target of its own (AD
    /// reached through `proxy` when given, which counts the bytes): what every fault run must
    /// end with. The target is deleted afterwards.
    pub async fn reference(&mut self, name: &str, proxy: Option<&FaultProxy>) -> Reference {
        let url = proxy.map(|p| format!("ldaps://127.0.0.1:{}", p.port()));
        let t = self.target(name, url.as_deref(), None, "").await;
        if let Some(p) = proxy {
            p.arm(u64::MAX, Fault::Cut);
        }
        // The largest the state file and its WAL get during the first sync (a file-size limit
        // below it fails the run somewhere inside).
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (done, state) = (done.clone(), t.state.clone());
            std::thread::spawn(move || {
                let mut largest = 0;
                while !done.load(Ordering::SeqCst) {
                    largest = largest
                        .max(file_len(&state))
                        .max(file_len(&state.with_extension("db-wal")));
                    std::thread::sleep(Duration::from_millis(1));
                }
                largest
            })
        };
        let started = Instant::now();
        let r = t.run_json(&["sync"], 0);
        let first_sync = started.elapsed();
        done.store(true, Ordering::SeqCst);
        let largest_file = watcher.join().unwrap_or(0);
        let first_sync_bytes = proxy.map(FaultProxy::bytes_sent).unwrap_or(0);
        let state_bytes = file_len(&t.state) + file_len(&t.state.with_extension("db-wal"));
        let again = t.run_json(&["sync"], 0);
        assert!(
            changes(&again).is_empty(),
            "the undisturbed run did not settle: {again:#}"
        );
        let groups = self.groups(&t).await;
        assert_eq!(
            groups.len(),
            self.group_ids.len(),
            "the undisturbed run wrote {} of {} groups: {r:#}",
            groups.len(),
            self.group_ids.len()
        );
        self.drop_target(&t).await;
        Reference {
            groups,
            first_sync,
            first_sync_bytes,
            state_bytes,
            largest_file,
        }
    }

    /// The groups below a target's managed OU, normalised (see [`AdGroups`]).
    pub async fn groups(&mut self, target: &Target) -> AdGroups {
        let (rs, _) = self
            .bed
            .ldap
            .search(
                &target.managed,
                Scope::Subtree,
                "(objectClass=group)",
                vec!["*"],
            )
            .await
            .and_then(|r| r.success())
            .unwrap_or_else(|e| panic!("cannot read the groups below {}: {e}", target.managed));
        let managed = target.managed.to_lowercase();
        let norm = |v: &str| {
            let lower = v.to_lowercase();
            if lower.contains(&managed) {
                lower.replace(&managed, MANAGED)
            } else {
                v.to_string()
            }
        };
        rs.into_iter()
            .map(SearchEntry::construct)
            .map(|e| {
                let attrs = e
                    .attrs
                    .into_iter()
                    .map(|(k, v)| (k.to_lowercase(), v))
                    .filter(|(k, _)| !PER_OBJECT.contains(&k.as_str()))
                    .map(|(k, v)| {
                        let mut v: Vec<String> = v
                            .iter()
                            .map(|x| {
                                // AD makes up an account name for groups the rules give none.
                                if k == "samaccountname" && x.starts_with('$') {
                                    "<generated>".to_string()
                                } else {
                                    norm(x)
                                }
                            })
                            .collect();
                        v.sort();
                        (k, v)
                    })
                    .collect();
                (norm(&e.dn), attrs)
            })
            .collect()
    }

    /// How many groups are below a target's managed OU now (a cheap search: no attributes).
    pub async fn count_groups(&mut self, target: &Target) -> usize {
        let (rs, _) = self
            .bed
            .ldap
            .search(
                &target.managed,
                Scope::Subtree,
                "(objectClass=group)",
                vec!["1.1"],
            )
            .await
            .and_then(|r| r.success())
            .unwrap_or_else(|e| panic!("cannot count the groups below {}: {e}", target.managed));
        rs.len()
    }

    /// Nothing half-recorded: every objectGUID the state file records is an object below the
    /// target's managed OU (records follow writes, never precede them).
    pub async fn check_recorded_exist(&mut self, target: &Target) {
        // A run killed before its schema was made has recorded nothing.
        if !target.state.exists()
            || sqlite(
                &target.state,
                "SELECT count(*) FROM sqlite_master WHERE name = 'anchor';",
            )
            .trim()
                == "0"
        {
            return;
        }
        let (rs, _) = self
            .bed
            .ldap
            .search(
                &target.managed,
                Scope::Subtree,
                "(objectClass=group)",
                vec!["objectGUID"],
            )
            .await
            .and_then(|r| r.success())
            .unwrap_or_else(|e| panic!("cannot read the groups below {}: {e}", target.managed));
        let in_ad: BTreeSet<String> = rs
            .into_iter()
            .map(SearchEntry::construct)
            .filter_map(|e| {
                e.bin_attrs
                    .get("objectGUID")
                    .and_then(|v| v.first())
                    .cloned()
            })
            .filter_map(|b| writeback::ad::dn::guid_from_ad_bytes(&b).ok())
            .map(|g| g.to_string())
            .collect();
        let recorded = sqlite(
            &target.state,
            "SELECT cloud_id, object_guid FROM anchor WHERE object_guid <> '';",
        );
        let missing: Vec<&str> = recorded
            .lines()
            .filter(|l| {
                let guid = l.split_once('|').map(|(_, g)| g).unwrap_or("");
                !in_ad.contains(&guid.to_lowercase())
            })
            .collect();
        assert!(
            missing.is_empty(),
            "{} records objects that are not in AD (cloud id|objectGUID): {missing:?}",
            target.state.display()
        );
    }

    /// No two AD objects below the target carry the same anchor, the state file records no
    /// objectGUID twice, and every anchored AD object is recorded with its own objectGUID.
    pub async fn check_anchors(&mut self, target: &Target) {
        let (rs, _) = self
            .bed
            .ldap
            .search(
                &target.managed,
                Scope::Subtree,
                "(objectClass=group)",
                vec![
                    "msDS-ExternalDirectoryObjectId",
                    "adminDescription",
                    "objectGUID",
                ],
            )
            .await
            .and_then(|r| r.success())
            .unwrap_or_else(|e| panic!("cannot read the anchors below {}: {e}", target.managed));
        let recorded = sqlite(&target.state, "SELECT cloud_id, object_guid FROM anchor;");
        let mut by_cloud: BTreeMap<String, String> = BTreeMap::new();
        let mut guids: BTreeMap<String, usize> = BTreeMap::new();
        for line in recorded.lines() {
            let (cloud, guid) = line.split_once('|').unwrap_or((line, ""));
            by_cloud.insert(cloud.to_string(), guid.to_lowercase());
            if !guid.is_empty() {
                *guids.entry(guid.to_lowercase()).or_default() += 1;
            }
        }
        let twice: Vec<_> = guids.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "objectGUIDs recorded more than once in {}: {twice:?}",
            target.state.display()
        );
        let mut anchors: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in rs.into_iter().map(SearchEntry::construct) {
            for attr in ["msDS-ExternalDirectoryObjectId", "adminDescription"] {
                if let Some(a) = e.attrs.get(attr).and_then(|v| v.first()) {
                    anchors
                        .entry(format!("{attr}={a}"))
                        .or_default()
                        .push(e.dn.clone());
                }
            }
            let Some(anchor) = e
                .attrs
                .get("msDS-ExternalDirectoryObjectId")
                .and_then(|v| v.first())
            else {
                continue;
            };
            let cloud = anchor.strip_prefix("Group_").unwrap_or(anchor);
            let guid = e
                .bin_attrs
                .get("objectGUID")
                .and_then(|v| v.first())
                .and_then(|b| writeback::ad::dn::guid_from_ad_bytes(b).ok())
                .map(|g| g.to_string())
                .unwrap_or_else(|| panic!("{} has no readable objectGUID", e.dn));
            assert_eq!(
                by_cloud.get(cloud).map(String::as_str),
                Some(guid.as_str()),
                "{} ({anchor}) is not recorded with its objectGUID in {}",
                e.dn,
                target.state.display()
            );
        }
        let dup: Vec<_> = anchors.iter().filter(|(_, dns)| dns.len() > 1).collect();
        assert!(
            dup.is_empty(),
            "anchors carried by several objects: {dup:#?}"
        );
    }
}

impl Target {
    /// `writeback --config <target config> <args>` with the secrets in the environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(writeback_bin());
        c.arg("--config")
            .arg(&self.config)
            .args(args)
            .env(
                "WRITEBACK_TEST_AD_PASSWORD",
                AdTestbed::load().service_password,
            )
            .env("WRITEBACK_TEST_GRAPH_SECRET", CLIENT_SECRET);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run writeback {args:?}: {e}"))
    }

    /// Runs `writeback <args> --json`, asserting the exit status; returns the report.
    pub fn run_json(&self, args: &[&str], expect_code: i32) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        report(&a, &self.run(&a), expect_code)
    }
}

/// The report of a finished run, after checking its exit status.
pub fn report(args: &[&str], out: &Output, expect_code: i32) -> Value {
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

/// The changes a report planned.
pub fn changes(report: &Value) -> Vec<Value> {
    report["plan"]["changes"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no plan.changes in the report: {report:#}"))
}

/// Asserts that a normalised AD equals the reference, naming what differs.
pub fn assert_same_ad(what: &str, got: &AdGroups, want: &AdGroups) {
    if got == want {
        return;
    }
    let mut diff = Vec::new();
    for dn in want.keys().filter(|dn| !got.contains_key(*dn)) {
        diff.push(format!("missing {dn}"));
    }
    for dn in got.keys().filter(|dn| !want.contains_key(*dn)) {
        diff.push(format!("extra {dn}"));
    }
    for (dn, w) in want {
        let Some(g) = got.get(dn) else { continue };
        let keys: BTreeSet<&String> = w.keys().chain(g.keys()).collect();
        for k in keys {
            if w.get(k) != g.get(k) {
                diff.push(format!(
                    "{dn}: {k}: {:?} instead of {:?}",
                    g.get(k),
                    w.get(k)
                ));
            }
        }
    }
    panic!(
        "{what}: AD differs from the undisturbed run ({} differences):\n{}",
        diff.len(),
        diff.join("\n")
    );
}

/// What `sqlite3 -readonly` prints for `sql` (`|`-separated); panics with its error.
pub fn sqlite(state: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg("-readonly")
        .arg("-separator")
        .arg("|")
        .arg(state)
        .arg(sql)
        .output()
        .unwrap_or_else(|e| panic!("cannot run sqlite3 (needed to read the state file): {e}"));
    assert!(
        out.status.success(),
        "sqlite3 {} {sql:?}: {}",
        state.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `PRAGMA integrity_check` of a state file is `ok`.
pub fn assert_intact(state: &Path) {
    let check = sqlite(state, "PRAGMA integrity_check;");
    assert_eq!(
        check.trim(),
        "ok",
        "{} is damaged after the fault",
        state.display()
    );
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
