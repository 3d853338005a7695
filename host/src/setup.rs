//! Builds the connectors, the rule set and the state lock from a validated config: the wiring
//! shared by the one-shot verbs and the daemon.

use std::fs::File;
use std::path::PathBuf;

use crate::ad::{AdConn, AdError, AdSettings};
use crate::config::Config;
use crate::graph::{GraphClient, GraphError, GraphSettings};
use crate::rules::{Limits, LoadError, RuleSet};

/// The Graph client for the config's tenant and app.
pub fn graph_client(config: &Config) -> Result<GraphClient, GraphError> {
    let g = &config.graph;
    let mut settings = GraphSettings::new(
        g.graph_url.clone(),
        g.token_url.clone(),
        g.client_id.clone(),
        g.credential.clone(),
    );
    settings.scope = g.scope.clone();
    settings.ca_file = g.ca_file.clone();
    settings.timeout = g.timeout;
    settings.max_retries = g.max_retries;
    settings.round_limits = g.round_limits;
    GraphClient::new(settings)
}

/// How to reach and bind to the config's DCs.
pub fn ad_settings(config: &Config) -> AdSettings {
    let a = &config.ad;
    AdSettings {
        urls: a.urls.clone(),
        discover: a.discover.clone(),
        bind_dn: a.bind_dn.clone(),
        password: a.password.clone(),
        kerberos: a.kerberos.clone(),
        ca_file: a.ca_file.clone(),
        starttls: a.starttls,
        allow_plain: a.allow_plain_ldap,
        timeout: a.timeout,
    }
}

/// A bound AD connection (the schema is read by the first cycle that writes).
pub async fn ad_connection(config: &Config) -> Result<AdConn, AdError> {
    AdConn::connect(&ad_settings(config)).await
}

/// Compiles the configured rules folder, once no one but its owner can write it.
pub fn load_rules(config: &Config) -> Result<RuleSet, LoadError> {
    let writable = crate::perms::writable_rule_paths(&rule_roots(config));
    if !writable.is_empty() {
        return Err(LoadError::new(
            writable
                .into_iter()
                .map(|(path, why)| crate::rules::Diagnostic::file(&path, why))
                .collect(),
        ));
    }
    let set = RuleSet::load(
        &config.rules.folder,
        &config.rules.stdlib,
        config.rules.settings.clone(),
        Limits::default(),
    )?;
    set.check_secrets(|n| config.rules.secrets.contains_key(n))?;
    Ok(set)
}

/// The folders whose `.rhai` files make up the rule set.
pub fn rule_roots(config: &Config) -> Vec<PathBuf> {
    let mut roots = vec![config.rules.folder.clone()];
    if config.rules.stdlib.is_dir() {
        roots.push(config.rules.stdlib.clone());
    }
    roots
}

#[derive(Debug, thiserror::Error)]
#[error("state lock {path}: {source}")]
pub struct LockError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// An exclusive lock beside the state file, held for one cycle: the daemon and a one-shot
/// `writeback sync` never write AD at the same time.
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Waits until no other Writeback process holds the lock.
    pub fn acquire(config: &Config) -> Result<StateLock, LockError> {
        let (path, file) = open_lock(config)?;
        file.lock().map_err(|source| LockError { path, source })?;
        Ok(StateLock { _file: file })
    }

    /// Takes the lock only when no other Writeback process holds it (`None` when one does),
    /// for verbs that must not wait behind a cycle.
    pub fn try_acquire(config: &Config) -> Result<Option<StateLock>, LockError> {
        let (path, file) = open_lock(config)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(StateLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(source)) => Err(LockError { path, source }),
        }
    }
}

/// The lock file, created when missing: the service's alone, and never through a planted link.
fn open_lock(config: &Config) -> Result<(PathBuf, File), LockError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = lock_path(config);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|source| LockError {
            path: path.clone(),
            source,
        })?;
    Ok((path, file))
}

impl StateLock {
    /// Whether another process holds the lock now (a sync, a plan, or the daemon's cycle).
    pub fn is_held(config: &Config) -> Result<bool, LockError> {
        let path = lock_path(config);
        let file = match File::options().read(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(LockError { path, source }),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(false),
            Err(std::fs::TryLockError::WouldBlock) => Ok(true),
            Err(std::fs::TryLockError::Error(source)) => Err(LockError { path, source }),
        }
    }
}

fn lock_path(config: &Config) -> PathBuf {
    let mut p = config.state_path.clone().into_os_string();
    p.push(".lock");
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn rules_others_can_write_are_not_loaded_and_the_error_names_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules = dir.path().join("rules");
        std::fs::create_dir(&rules).expect("mkdir");
        let rule = rules.join("10-all.rhai");
        std::fs::write(
            &rule,
            "fn in_scope(group) { false }\nfn to_ad(group) { () }\n",
        )
        .expect("write");
        for p in [&rules, &rule] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let text = format!(
            "[graph]\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret_env = \"X\"\n\
             [ad]\nurl = \"ldaps://dc\"\nbind_dn = \"CN=s\"\npassword_env = \"X\"\n\
             managed_ous = [\"OU=W,DC=x\"]\n[rules]\nfolder = \"{}\"\n[state]\npath = \"s.db\"\n",
            rules.display()
        );
        let path = dir.path().join("writeback.toml");
        std::fs::write(&path, text).expect("write config");
        let config = Config::load_offline(&path).expect("config");
        load_rules(&config).expect("an owner-only folder loads");
        std::fs::set_permissions(&rule, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let e = match load_rules(&config) {
            Ok(_) => panic!("a rule file anyone can write was loaded"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains(&rule.display().to_string()) && e.contains("0666"),
            "{e}"
        );
    }
}
