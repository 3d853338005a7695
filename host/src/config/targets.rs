//! `[targets.<name>]`: more AD domains or forests written from the same tenant and rules.
//!
//! A target is a whole config of its own, built from the file's shared sections (`[graph]`,
//! `[rules]`, `[daemon]`, `[console]`) and its own: `ad` (the connection, the managed OUs, the
//! Global Catalog: nothing of `[ad]` is inherited, it is another directory), `state` (its own
//! state file: anchors, quarantine, held deletes and the audit trail are per target), and
//! `members`, `safety` and `settings`, which override `[members]`, `[safety]` and
//! `[rules.settings]` key by key. Every value goes through the same validation as `[ad]`; an
//! error names the key under `targets.<name>`.

use std::collections::BTreeSet;
use std::path::Path;

use super::{Config, ConfigError, RawConfig};

/// The name of the `[ad]` target when `ad.name` is not set.
pub const DEFAULT_NAME: &str = "default";

/// The setting the rules read the target's name from: `setting("target")`.
pub const SETTING: &str = "target";

/// What a `[targets.<name>]` table may hold.
const KEYS: [&str; 5] = ["ad", "state", "members", "safety", "settings"];

/// Names show in metrics labels, file names and `--target`: letters, digits, `-` and `_`.
pub(super) fn check_name(path: &Path, key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    match ok {
        true => Ok(()),
        false => Err(invalid(
            path,
            key,
            &format!(
                "{name:?}: a target's name is 1 to 64 letters, digits, '-' and '_' (it names the target in reports, metrics and --target)"
            ),
        )),
    }
}

/// The PostgreSQL schema of target `name`'s state on a shared database (`[state.postgres]`).
pub(super) fn schema(path: &Path, name: &str) -> Result<String, ConfigError> {
    let schema = crate::ha::pg::target_schema(name);
    if schema.len() > crate::ha::pg::MAX_IDENTIFIER {
        return Err(invalid(
            path,
            &format!("targets.{name}"),
            &format!(
                "with [state.postgres] a target's name is at most {} characters: its state is in the schema {schema:?}, and PostgreSQL cuts names after {} bytes",
                crate::ha::pg::MAX_IDENTIFIER - (schema.len() - name.len()),
                crate::ha::pg::MAX_IDENTIFIER
            ),
        ));
    }
    Ok(schema)
}

fn invalid(path: &Path, key: &str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_path_buf(),
        key: key.to_string(),
        message: message.to_string(),
    }
}

/// The config of target `name`: the file's sections with the target's own in place.
pub(super) fn merged(
    path: &Path,
    doc: &toml::Table,
    name: &str,
    own: toml::Value,
) -> Result<RawConfig, ConfigError> {
    let at = format!("targets.{name}");
    check_name(path, &at, name)?;
    let toml::Value::Table(own) = own else {
        return Err(invalid(
            path,
            &at,
            "a table is expected: [targets.<name>] with its ad and state",
        ));
    };
    if let Some(k) = own.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(invalid(
            path,
            &format!("{at}.{k}"),
            &format!("unknown key; a target holds {}", KEYS.join(", ")),
        ));
    }
    let table = |key: &str| -> Result<Option<toml::Table>, ConfigError> {
        match own.get(key) {
            None => Ok(None),
            Some(toml::Value::Table(t)) => Ok(Some(t.clone())),
            Some(_) => Err(invalid(path, &format!("{at}.{key}"), "a table is expected")),
        }
    };
    let ad = table("ad")?.ok_or_else(|| {
        invalid(
            path,
            &format!("{at}.ad"),
            "required: the target's domain controllers, bind and managed OUs (nothing of [ad] is inherited)",
        )
    })?;
    if ad.contains_key("name") {
        return Err(invalid(
            path,
            &format!("{at}.ad.name"),
            "a target is named by its key ([targets.<name>])",
        ));
    }
    let state = table("state")?;
    if state.as_ref().is_some_and(|s| s.contains_key("postgres")) {
        return Err(invalid(
            path,
            &format!("{at}.state.postgres"),
            "the targets share [state.postgres]: one database and one lease, each target's state in a schema of its own",
        ));
    }
    if !state.as_ref().is_some_and(|s| s.contains_key("path")) {
        return Err(invalid(
            path,
            &format!("{at}.state.path"),
            "required: each target keeps its anchors, quarantine, held deletes and audit trail in a state file of its own",
        ));
    }
    let mut doc = doc.clone();
    doc.remove("targets");
    doc.insert("ad".into(), toml::Value::Table(ad));
    overlay(&mut doc, "state", state);
    overlay(&mut doc, "members", table("members")?);
    overlay(&mut doc, "safety", table("safety")?);
    if let Some(settings) = table("settings")? {
        let rules = doc
            .entry("rules")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(rules) = rules {
            overlay(rules, "settings", Some(settings));
        }
    }
    toml::Value::Table(doc)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: format!("[{at}]: {}", e.message()),
        })
}

/// `doc[key]`'s keys replaced by `own`'s (a table `doc` lacks is added).
fn overlay(doc: &mut toml::Table, key: &str, own: Option<toml::Table>) {
    let Some(own) = own else { return };
    match doc.get_mut(key) {
        Some(toml::Value::Table(t)) => t.extend(own),
        _ => {
            doc.insert(key.to_string(), toml::Value::Table(own));
        }
    }
}

/// The names of the settings target `name` sets itself.
pub(super) fn own_settings(doc: &toml::Table, name: &str) -> BTreeSet<String> {
    doc.get("targets")
        .and_then(|t| t.get(name))
        .and_then(|t| t.get("settings"))
        .and_then(toml::Value::as_table)
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

/// An error in a target's config, with its key as the file has it (`targets.<name>.ad.url`).
pub(super) fn locate(e: ConfigError, name: &str, settings: &BTreeSet<String>) -> ConfigError {
    match e {
        ConfigError::Invalid { path, key, message } => {
            let first = key.split('.').next().unwrap_or_default();
            let key = match key.strip_prefix("rules.settings.") {
                Some(s) if settings.contains(s) => format!("targets.{name}.settings.{s}"),
                _ if matches!(first, "ad" | "state" | "members" | "safety") => {
                    format!("targets.{name}.{key}")
                }
                _ => key,
            };
            ConfigError::Invalid { path, key, message }
        }
        other => other,
    }
}

/// Two targets may not share a name or a state file (their anchors would mix).
pub(super) fn check_distinct(config: &Config) -> Result<(), ConfigError> {
    let mut names = BTreeSet::new();
    let mut states = BTreeSet::new();
    for (i, t) in config.targets().enumerate() {
        let key = match i {
            0 => "ad.name".to_string(),
            _ => format!("targets.{}", t.target),
        };
        if !names.insert(t.target.to_ascii_lowercase()) {
            return Err(invalid(
                &config.path,
                &key,
                &format!("two targets are named {:?}", t.target),
            ));
        }
        if !states.insert(t.state_path.clone()) {
            return Err(invalid(
                &config.path,
                &format!("targets.{}.state.path", t.target),
                &format!(
                    "{} is the state file of another target: each target needs its own",
                    t.state_path.display()
                ),
            ));
        }
    }
    // MIT Kerberos reads one keytab per process (`KRB5_CLIENT_KTNAME`); one keytab may hold
    // the principals of several realms.
    let mut keytabs = config
        .targets()
        .filter_map(|t| t.ad.kerberos.as_ref().map(|k| (t, &k.keytab)));
    if let Some((_, first)) = keytabs.next() {
        if let Some((t, other)) = keytabs.find(|(_, k)| k != &first) {
            return Err(invalid(
                &config.path,
                &format!("targets.{}.ad.keytab", t.target),
                &format!(
                    "{} differs from {}: the targets that bind with Kerberos share one keytab (it may hold a principal of each realm)",
                    other.display(),
                    first.display()
                ),
            ));
        }
    }
    Ok(())
}

impl Config {
    /// Every AD target: this one (`[ad]`), then each `[targets.<name>]` in name order.
    pub fn targets(&self) -> impl Iterator<Item = &Config> {
        std::iter::once(self).chain(self.more_targets.iter())
    }

    /// The targets a verb works on: all of them, or the one `--target` names.
    pub fn select_targets(&self, name: Option<&str>) -> Result<Vec<&Config>, ConfigError> {
        let Some(name) = name else {
            return Ok(self.targets().collect());
        };
        match self.targets().find(|t| t.target == name) {
            Some(t) => Ok(vec![t]),
            None => Err(invalid(
                &self.path,
                "--target",
                &format!(
                    "no target is named {name:?}; the config has {}",
                    self.targets()
                        .map(|t| t.target.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// True when the config names more than one target (reports then name each).
    pub fn has_targets(&self) -> bool {
        !self.more_targets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const BASE: &str = r#"
[graph]
tenant_id = "contoso.onmicrosoft.com"
client_id = "11111111-2222-3333-4444-555555555555"
client_secret_env = "WB_TARGETS_TEST_SECRET"

[ad]
name = "corp"
url = "ldaps://dc1.corp.example.test"
bind_dn = "CN=svc,DC=corp,DC=example,DC=test"
password_env = "WB_TARGETS_TEST_SECRET"
managed_ous = ["OU=Cloud Groups,DC=corp,DC=example,DC=test"]

[members]
user_match = "sid"

[rules]
folder = "rules"
[rules.settings]
parent = "OU=Cloud Groups,DC=corp,DC=example,DC=test"
prefix = "cloud-"

[state]
path = "corp.sqlite"

[safety]
delete_threshold = 7
max_members_per_group = 5000
"#;

    const FABRIKAM: &str = r#"
[targets.fabrikam.ad]
url = "ldaps://dc1.fabrikam.example.test"
bind_dn = "CN=svc,DC=fabrikam,DC=example,DC=test"
password_env = "WB_TARGETS_TEST_SECRET"
managed_ous = ["OU=Cloud,DC=fabrikam,DC=example,DC=test"]
[targets.fabrikam.state]
path = "fabrikam.sqlite"
[targets.fabrikam.safety]
delete_threshold = 2
[targets.fabrikam.settings]
parent = "OU=Cloud,DC=fabrikam,DC=example,DC=test"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with(Path::new("/etc/writeback/writeback.toml"), text, false)
    }

    fn key_of(e: ConfigError) -> String {
        match e {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("not a key error: {other}"),
        }
    }

    #[test]
    fn a_target_has_its_own_directory_and_state_and_inherits_the_rest_key_by_key() {
        let c = parse(&format!("{BASE}{FABRIKAM}")).expect("loads");
        let names: Vec<&str> = c.targets().map(|t| t.target.as_str()).collect();
        assert_eq!(names, ["corp", "fabrikam"]);
        let f = &c.more_targets[0];
        assert_eq!(f.ad.urls, ["ldaps://dc1.fabrikam.example.test"]);
        assert_eq!(
            f.ad.managed_ous,
            ["OU=Cloud,DC=fabrikam,DC=example,DC=test"]
        );
        assert_eq!(
            f.state_path,
            PathBuf::from("/etc/writeback/fabrikam.sqlite")
        );
        assert_eq!(c.state_path, PathBuf::from("/etc/writeback/corp.sqlite"));
        // safety: its own threshold, the shared member cap.
        assert_eq!((f.delete_threshold, c.delete_threshold), (2, 7));
        assert_eq!(f.max_members_per_group, 5000);
        // settings: its own parent, the shared prefix, and its name as setting("target").
        let s = &f.rules.settings;
        assert_eq!(s["parent"], "OU=Cloud,DC=fabrikam,DC=example,DC=test");
        assert_eq!(s["prefix"], "cloud-");
        assert_eq!(s[SETTING], "fabrikam");
        assert_eq!(c.rules.settings[SETTING], "corp");
        assert_eq!(
            c.rules.settings["parent"],
            "OU=Cloud Groups,DC=corp,DC=example,DC=test"
        );
        // Shared sections are the same.
        assert_eq!(f.graph.tenant_id, c.graph.tenant_id);
        assert_eq!(f.rules.folder, c.rules.folder);
        assert!(f.more_targets.is_empty());
        assert!(c.has_targets());
    }

    #[test]
    fn without_targets_there_is_one_named_default_unless_ad_names_it() {
        let c = parse(&BASE.replace("name = \"corp\"\n", "")).expect("loads");
        assert_eq!(c.target, DEFAULT_NAME);
        assert_eq!(c.rules.settings[SETTING], DEFAULT_NAME);
        assert_eq!(c.targets().count(), 1);
        assert!(!c.has_targets());
    }

    #[test]
    fn errors_name_the_key_under_the_target() {
        let cases = [
            (
                FABRIKAM.replace("ldaps://dc1.fabrikam", "ftp://dc1.fabrikam"),
                "targets.fabrikam.ad.url",
            ),
            (
                FABRIKAM.replace("[targets.fabrikam.state]\npath = \"fabrikam.sqlite\"\n", ""),
                "targets.fabrikam.state.path",
            ),
            (
                FABRIKAM.replace("fabrikam.sqlite", "corp.sqlite"),
                "targets.fabrikam.state.path",
            ),
            (
                FABRIKAM.replace(
                    "delete_threshold = 2",
                    "member_removal_threshold_percent = 0.0",
                ),
                "targets.fabrikam.safety.member_removal_threshold_percent",
            ),
            (
                FABRIKAM.replace("[targets.fabrikam.settings]", "[targets.fabrikam.rules]"),
                "targets.fabrikam.rules",
            ),
            (
                FABRIKAM.replace("targets.fabrikam.", "targets.\"fab rikam\"."),
                "targets.fab rikam",
            ),
            (
                format!("{FABRIKAM}name = \"x\"\n").replace(
                    "[targets.fabrikam.state]",
                    "name = \"x\"\n[targets.fabrikam.state]",
                ),
                "targets.fabrikam.ad.name",
            ),
            (
                "[targets.corp.state]\npath = \"x.sqlite\"\n".to_string(),
                "targets.corp.ad",
            ),
        ];
        for (extra, key) in cases {
            let e = parse(&format!("{BASE}{extra}")).expect_err(key);
            assert_eq!(key_of(e), key, "{extra}");
        }
    }

    const POSTGRES: &str = "[state.postgres]\n\
        url = \"postgresql://writeback@db.corp.example.test/writeback\"\n\
        password_env = \"WB_TARGETS_TEST_SECRET\"\nca_file = \"ca.pem\"\ninstance = \"wb1\"\n";

    fn with_postgres(targets: &str) -> String {
        format!("{BASE}{targets}").replace(
            "[state]\npath = \"corp.sqlite\"\n",
            &format!("[state]\npath = \"corp.sqlite\"\n{POSTGRES}"),
        )
    }

    #[test]
    fn on_a_shared_database_each_target_has_its_schema_and_all_share_the_instance() {
        let c = parse(&with_postgres(FABRIKAM)).expect("loads");
        let corp = c.postgres.as_ref().expect("corp on PostgreSQL");
        let fab = c.more_targets[0].postgres.as_ref().expect("fabrikam too");
        // The [ad] target's state stays in the connection's schema, beside the lease.
        assert_eq!(corp.settings.schema, None);
        assert_eq!(fab.settings.schema.as_deref(), Some("writeback_fabrikam"));
        assert_eq!(fab.settings.home().schema, None);
        assert_eq!(
            (&fab.instance, &fab.settings.database),
            (&corp.instance, &corp.settings.database)
        );
        // Names differing in case only are one target already; the schema is lower case.
        let upper = FABRIKAM.replace("targets.fabrikam.", "targets.Fab_2.");
        let c = parse(&with_postgres(&upper)).expect("loads");
        let schema = c.more_targets[0]
            .postgres
            .as_ref()
            .and_then(|p| p.settings.schema.clone());
        assert_eq!(schema.as_deref(), Some("writeback_fab_2"));
    }

    #[test]
    fn a_target_of_its_own_database_or_too_long_a_name_for_a_schema_is_refused() {
        let own = FABRIKAM.replace(
            "path = \"fabrikam.sqlite\"\n",
            &format!(
                "path = \"fabrikam.sqlite\"\n{}",
                POSTGRES.replace("[state.postgres]", "[targets.fabrikam.state.postgres]")
            ),
        );
        let e = parse(&with_postgres(&own)).expect_err("its own database");
        assert_eq!(key_of(e), "targets.fabrikam.state.postgres");
        let long = "f".repeat(54);
        let e = parse(&with_postgres(
            &FABRIKAM.replace("targets.fabrikam.", &format!("targets.{long}.")),
        ))
        .expect_err("too long");
        let text = e.to_string();
        assert_eq!(key_of(e), format!("targets.{long}"));
        assert!(text.contains("at most 53 characters"), "{text}");
        // The same name is fine without PostgreSQL (it names no schema).
        parse(&format!(
            "{BASE}{}",
            FABRIKAM.replace("targets.fabrikam.", &format!("targets.{long}."))
        ))
        .expect("without [state.postgres]");
        let fits = "f".repeat(53);
        parse(&with_postgres(
            &FABRIKAM.replace("targets.fabrikam.", &format!("targets.{fits}.")),
        ))
        .expect("53 characters");
    }

    #[test]
    fn two_targets_with_one_name_or_a_reserved_setting_are_refused() {
        let same = FABRIKAM.replace("targets.fabrikam.", "targets.corp.");
        let e = parse(&format!("{BASE}{same}")).expect_err("two named corp");
        assert!(e.to_string().contains("two targets are named"), "{e}");
        let e = parse(&BASE.replace("prefix = ", "target = \"x\"\nprefix = ")).expect_err("target");
        assert_eq!(key_of(e), "rules.settings.target");
        let e = parse(&BASE.replace("name = \"corp\"", "name = \"corp/1\"")).expect_err("name");
        assert_eq!(key_of(e), "ad.name");
    }

    #[test]
    fn a_preflight_names_a_targets_unreadable_secret_under_the_target_once() {
        let text = format!("{BASE}{FABRIKAM}").replace(
            "password_env = \"WB_TARGETS_TEST_SECRET\"\nmanaged_ous = [\"OU=Cloud,",
            "password_file = \"/nonexistent/fabrikam\"\nmanaged_ous = [\"OU=Cloud,",
        );
        let (_, unread) = Config::parse_noting(
            Path::new("/etc/writeback/writeback.toml"),
            &text,
            super::super::Secrets::Collect,
        )
        .expect("loads");
        let keys: Vec<String> = unread.into_iter().map(key_of).collect();
        // The shared Graph secret (unset here) once, the target's password under its key.
        assert_eq!(
            keys,
            [
                "graph.client_secret_env",
                "ad.password_env",
                "targets.fabrikam.ad.password_file"
            ],
            "{keys:?}"
        );
    }

    #[test]
    fn select_targets_takes_all_or_the_one_named() {
        let c = parse(&format!("{BASE}{FABRIKAM}")).expect("loads");
        assert_eq!(c.select_targets(None).expect("all").len(), 2);
        let one = c.select_targets(Some("fabrikam")).expect("one");
        assert_eq!(one[0].target, "fabrikam");
        let e = c.select_targets(Some("nope")).expect_err("unknown");
        assert!(e.to_string().contains("corp, fabrikam"), "{e}");
    }
}
