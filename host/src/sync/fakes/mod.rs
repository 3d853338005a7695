//! In-memory stand-ins for AD and Graph, and a bed that runs whole sync cycles against them
//! with the real rules, the real state store (in memory) and the real cycle: the logic of a
//! cycle tested in milliseconds. The integration tests on Samba prove the real connectors.

pub mod directory;
pub mod tenant;
pub mod watched;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::ad::schema::Schema;
use crate::config::Config;
use crate::effects::EffectsError;
use crate::rules::{Limits, RuleSet};
use crate::state::Store;

use super::{SyncContext, SyncError, SyncOptions, SyncReport};

pub use directory::{FakeDirectory, Reads};
pub use tenant::FakeTenant;
pub use watched::Watched;

pub const MANAGED: &str = "OU=Managed,DC=fake,DC=test";
pub const SECURITY: &str = "OU=Security,OU=Managed,DC=fake,DC=test";
pub const M365: &str = "OU=M365,OU=Managed,DC=fake,DC=test";
pub const PEOPLE: &str = "OU=People,DC=fake,DC=test";
pub const COMPUTERS: &str = "OU=Computers,DC=fake,DC=test";

/// A domain, a tenant, a state store, the shipped rules (copied, so a test may edit them)
/// and a config tying them together.
pub struct Bed {
    pub ad: FakeDirectory,
    pub cloud: FakeTenant,
    pub store: Store,
    pub config: Config,
    pub rules: RuleSet,
    schema: Option<Schema>,
    /// Holds the config and the rules' copy for the bed's lifetime.
    _dir: tempfile::TempDir,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

impl Bed {
    /// The shipped rules; `extra` is appended to the config (e.g. a `[safety]` table).
    pub fn new(extra: &str) -> Bed {
        let dir = tempfile::tempdir().expect("temp dir");
        let rules = dir.path().join("rules");
        std::fs::create_dir(&rules).expect("rules dir");
        for f in std::fs::read_dir(workspace().join("scripts")).expect("scripts") {
            let p = f.expect("entry").path();
            if p.extension().is_some_and(|e| e == "rhai") {
                std::fs::copy(&p, rules.join(p.file_name().expect("name"))).expect("copy");
            }
        }
        let text = format!(
            r#"
[graph]
tenant_id = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
client_id = "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"
client_secret_env = "UNUSED"

[ad]
url = "ldaps://dc.fake.test"
bind_dn = "CN=svc-writeback,{PEOPLE}"
password_env = "UNUSED"
managed_ous = ["{MANAGED}"]

[rules]
folder = "{rules}"
stdlib = "{stdlib}"

[rules.settings]
m365_container = "{M365}"
security_container = "{SECURITY}"

[state]
path = "state.db"

{extra}
"#,
            rules = rules.display(),
            stdlib = workspace().join("stdlib").display(),
        );
        let path = dir.path().join("writeback.toml");
        std::fs::write(&path, text).expect("config");
        let config = Config::load_offline(&path).expect("config parses");
        let rules = load_rules(&config);
        let ad = FakeDirectory::new();
        for ou in [MANAGED, SECURITY, M365, PEOPLE, COMPUTERS] {
            ad.ou(ou);
        }
        Bed {
            ad,
            cloud: FakeTenant::new(),
            store: Store::open_in_memory().expect("store"),
            config,
            rules,
            schema: None,
            _dir: dir,
        }
    }

    /// A user in both places: in AD under People with `sid`, in the cloud synced from it.
    pub fn synced_user(&self, id: &str, name: &str, sid: &str) {
        self.ad.user(&format!("CN={name},{PEOPLE}"), sid);
        self.cloud.user(
            id,
            serde_json::json!({
                "displayName": name,
                "onPremisesSecurityIdentifier": sid,
                "onPremisesSyncEnabled": true,
            }),
        );
    }

    /// A hybrid-joined device: its computer in AD under Computers with `sid`, in the cloud
    /// carrying the SID Entra copied from it.
    pub fn hybrid_device(&self, id: &str, name: &str, sid: &str) {
        self.ad.computer(&format!("CN={name},{COMPUTERS}"), sid);
        self.cloud.device(
            id,
            serde_json::json!({
                "displayName": name,
                "trustType": "ServerAd",
                "onPremisesSecurityIdentifier": sid,
            }),
        );
    }

    /// A device registered in the cloud only (`trustType` `AzureAd` or `Workplace`).
    pub fn cloud_device(&self, id: &str, name: &str, trust_type: &str) {
        self.cloud.device(
            id,
            serde_json::json!({ "displayName": name, "trustType": trust_type }),
        );
    }

    /// A user who exists only in the cloud.
    pub fn cloud_user(&self, id: &str, name: &str) {
        self.cloud
            .user(id, serde_json::json!({ "displayName": name }));
    }

    /// A cloud security group.
    pub fn security_group(&self, id: &str, name: &str, members: &[&str]) {
        self.cloud.group(
            id,
            serde_json::json!({
                "displayName": name,
                "description": format!("{name} (cloud)"),
                "securityEnabled": true,
                "mailEnabled": false,
                "groupTypes": [],
            }),
        );
        self.cloud.add_members(id, members);
    }

    /// Replaces `from` with `to` in the rule file `name` (a rule edit).
    pub fn edit_rule(&mut self, name: &str, from: &str, to: &str) {
        let p = self.config.rules.folder.join(name);
        let text = std::fs::read_to_string(&p).expect("rule file");
        assert!(text.contains(from), "{name} has no {from:?}");
        std::fs::write(&p, text.replace(from, to)).expect("write rule");
        self.rules = load_rules(&self.config);
    }

    /// One cycle, as `writeback sync` runs it (`opts` as its flags set them).
    pub async fn cycle(&mut self, opts: SyncOptions) -> Result<SyncReport, SyncError> {
        let no_effects = || -> Result<std::sync::Arc<dyn crate::rules::Effects>, EffectsError> {
            Err(EffectsError::Http(
                "no trigger effects in cycle tests".into(),
            ))
        };
        super::run(
            SyncContext {
                config: &self.config,
                graph: &self.cloud,
                ad: &mut self.ad,
                effects: &no_effects,
                store: &mut self.store,
                rules: &self.rules,
                schema: &mut self.schema,
                sink: None,
            },
            opts,
        )
        .await
    }

    /// One cycle like [`Bed::cycle`], through a store that notes how many cached groups it
    /// read at once: the largest read and the total.
    pub async fn cycle_watched(
        &mut self,
        opts: SyncOptions,
    ) -> (Result<SyncReport, SyncError>, GroupReads) {
        let no_effects = || -> Result<std::sync::Arc<dyn crate::rules::Effects>, EffectsError> {
            Err(EffectsError::Http(
                "no trigger effects in cycle tests".into(),
            ))
        };
        let mut store = Watched::new(&mut self.store);
        let r = super::run(
            SyncContext {
                config: &self.config,
                graph: &self.cloud,
                ad: &mut self.ad,
                effects: &no_effects,
                store: &mut store,
                rules: &self.rules,
                schema: &mut self.schema,
                sink: None,
            },
            opts,
        )
        .await;
        let seen = GroupReads {
            widest: store.widest.get(),
            total: store.groups_read.get(),
            members: store.members_read.get(),
        };
        (r, seen)
    }

    /// A plain `writeback sync`.
    pub async fn sync(&mut self) -> SyncReport {
        self.cycle(SyncOptions::default()).await.expect("sync")
    }
}

/// How a cycle read the cached groups (see [`Watched`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupReads {
    /// The most groups one read handed over.
    pub widest: usize,
    /// Groups handed over in all.
    pub total: usize,
    /// Members of the groups handed over with their members, in all.
    pub members: usize,
}

fn load_rules(config: &Config) -> RuleSet {
    RuleSet::load(
        &config.rules.folder,
        &config.rules.stdlib,
        config.rules.settings.clone(),
        Limits::default(),
    )
    .expect("rules load")
}

/// What a cycle did, as text: its report (volatile figures left out), the AD writes and the
/// cloud writes in the order they were made, and what the state holds afterwards.
pub fn describe(bed: &Bed, result: &Result<SyncReport, SyncError>) -> String {
    let mut out = String::new();
    match result {
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
        }
        Ok(r) => {
            let c = &r.counts;
            let _ = writeln!(
                out,
                "sweep: {}; evaluated {}, examined {}; create {}, update {}, delete {}, unresolved members {}",
                r.sweep, r.evaluated, r.examined, c.create, c.update, c.delete, c.unresolved_members
            );
            if r.member_deltas > 0 {
                let _ = writeln!(
                    out,
                    "written from member changes alone: {}",
                    r.member_deltas
                );
            }
            for o in &r.outcomes {
                let _ = writeln!(
                    out,
                    "outcome: {} {} {}",
                    o.action.as_str(),
                    o.cloud_id,
                    o.dn
                );
                if let Some(e) = &o.error {
                    let _ = writeln!(out, "  error: {e}");
                }
                for e in &o.member_errors {
                    let _ = writeln!(out, "  member error: {e}");
                }
            }
            for f in &r.plan.refused {
                let _ = writeln!(out, "refused: {} {}", f.cloud_id, f.reason);
            }
            for u in &r.plan.unresolved_members {
                let _ = writeln!(
                    out,
                    "unresolved: {} {} ({})",
                    u.group_id, u.member_id, u.reason
                );
            }
            if let Some(b) = &r.blocked {
                let _ = writeln!(out, "blocked: {b}");
            }
            if let Some(h) = &r.held {
                let ids: Vec<&str> = h.deletes.iter().map(|d| d.cloud_id.as_str()).collect();
                let _ = writeln!(out, "held deletes: {}", ids.join(", "));
            }
            for q in &r.quarantined {
                let _ = writeln!(
                    out,
                    "quarantined: {} after {} failure(s): {}",
                    q.cloud_id, q.failures, q.reason
                );
            }
            if !r.foreign.nothing_seen() {
                let _ = writeln!(
                    out,
                    "foreign: {} ({} unrecorded): {}",
                    r.foreign.count,
                    r.foreign.unrecorded,
                    r.foreign.examples.join(", ")
                );
            }
        }
    }
    for line in bed.ad.take_log() {
        let _ = writeln!(out, "AD: {line}");
    }
    for line in bed.cloud.take_patches() {
        let _ = writeln!(out, "cloud: {line}");
    }
    let state = |out: &mut String| -> Result<(), crate::state::StateError> {
        for (id, a) in bed.store.anchors()? {
            let _ = writeln!(out, "anchor: {id} {}", a.dn);
        }
        for (id, q) in bed.store.quarantined()? {
            let _ = writeln!(out, "in quarantine: {id} ({} failure(s))", q.failures);
        }
        for id in bed.store.held_deletes()?.keys() {
            let _ = writeln!(out, "held delete: {id}");
        }
        Ok(())
    };
    if let Err(e) = state(&mut out) {
        let _ = writeln!(out, "state unreadable: {e}");
    }
    out
}
