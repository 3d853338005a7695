//! The TOML configuration file: Graph, AD, rules, state, safety settings.
//!
//! Secrets never sit in the file: each one is named by an environment variable (`*_env`) or a
//! file (`*_file`). Relative paths are taken from the config file's own folder, so a config and
//! its rules can move together. Every error names the key and the file.

use serde::Deserialize;

mod postgres;
mod targets;
pub use postgres::PostgresConfig;
pub use targets::DEFAULT_NAME as DEFAULT_TARGET;

pub use crate::ad::join::{JoinFor, JoinKey, JoinKeyError};
pub use crate::graph::auth::Credential;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} does not exist: name yours with --config <file> or the WRITEBACK_CONFIG environment variable")]
    Missing { path: PathBuf },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// The file as written, before secrets are read and paths resolved.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    graph: RawGraph,
    ad: RawAd,
    rules: RawRules,
    state: RawState,
    #[serde(default)]
    members: RawMembers,
    #[serde(default)]
    safety: RawSafety,
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    console: RawConsole,
    /// `[targets.<name>]`: more AD domains or forests, each over the shared sections
    /// (see `targets.rs`).
    #[serde(default)]
    targets: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGraph {
    tenant_id: String,
    client_id: String,
    client_secret: Option<toml::Value>,
    client_secret_env: Option<String>,
    client_secret_file: Option<PathBuf>,
    certificate_file: Option<PathBuf>,
    private_key_file: Option<PathBuf>,
    #[serde(default)]
    cloud: Cloud,
    graph_url: Option<String>,
    token_url: Option<String>,
    ca_file: Option<PathBuf>,
    #[serde(default = "default_timeout_secs")]
    timeout_secs: u64,
    #[serde(default = "default_max_retries")]
    max_retries: u32,
    #[serde(default = "default_max_pages_per_round")]
    max_pages_per_round: usize,
    #[serde(default = "default_round_timeout_secs")]
    round_timeout_secs: u64,
}

fn default_max_pages_per_round() -> usize {
    crate::graph::RoundLimits::default().max_pages
}
fn default_round_timeout_secs() -> u64 {
    crate::graph::RoundLimits::default().timeout.as_secs()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAd {
    /// The target's name (`[ad]` only; a `[targets.<name>]` is named by its key).
    name: Option<String>,
    url: Option<String>,
    urls: Option<Vec<String>>,
    discover: Option<String>,
    dns_servers: Option<Vec<String>>,
    discover_allowed_domains: Option<Vec<String>>,
    #[serde(default)]
    auth: AdAuth,
    bind_dn: Option<String>,
    keytab: Option<PathBuf>,
    principal: Option<String>,
    password: Option<toml::Value>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    starttls: bool,
    #[serde(default)]
    allow_plain_ldap: bool,
    managed_ous: Vec<String>,
    #[serde(default)]
    member_search_bases: Vec<String>,
    #[serde(default)]
    shared_ous: Vec<String>,
    #[serde(default)]
    link_targets: Vec<String>,
    /// A Global Catalog for member lookups (other domains of the forest); writes stay on the DC.
    gc_url: Option<String>,
    #[serde(default = "default_timeout_secs")]
    timeout_secs: u64,
}

/// `ad.auth`: how Writeback binds to AD.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AdAuth {
    /// `bind_dn` and a password.
    #[default]
    Simple,
    /// SASL GSSAPI with `principal`'s keys from `keytab`.
    Kerberos,
}

/// Where one script secret comes from: exactly one of the three.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScriptSecret {
    env: Option<String>,
    file: Option<PathBuf>,
    /// A systemd credential (`LoadCredential=`/`SetCredentialEncrypted=`), read from
    /// `$CREDENTIALS_DIRECTORY`.
    credential: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    folder: PathBuf,
    stdlib: Option<PathBuf>,
    #[serde(default)]
    settings: BTreeMap<String, toml::Value>,
    /// Secrets for triggers (`secret("name")`), by name: where each is read from.
    #[serde(default)]
    secrets: BTreeMap<String, RawScriptSecret>,
    #[serde(default = "default_trigger_timeout_secs")]
    trigger_timeout_secs: u64,
    #[serde(default = "default_max_triggers_per_cycle")]
    max_triggers_per_cycle: usize,
    #[serde(default = "default_trigger_budget_secs")]
    trigger_budget_secs: u64,
    #[serde(default = "default_trigger_retry_secs")]
    trigger_retry_secs: u64,
    #[serde(default = "default_trigger_max_attempts")]
    trigger_max_attempts: u32,
    #[serde(default)]
    http_allowed_hosts: Vec<String>,
    #[serde(default)]
    http_allowed_networks: Vec<String>,
}

fn default_trigger_timeout_secs() -> u64 {
    30
}
fn default_max_triggers_per_cycle() -> usize {
    1000
}
fn default_trigger_retry_secs() -> u64 {
    30
}

fn default_trigger_max_attempts() -> u32 {
    10
}

fn default_trigger_budget_secs() -> u64 {
    300
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    path: PathBuf,
    #[serde(default = "default_audit_retention_days")]
    audit_retention_days: u32,
    /// `[state.postgres]`: the state on a shared database instead (see `postgres.rs`).
    postgres: Option<postgres::RawPostgres>,
}

fn default_audit_retention_days() -> u32 {
    365
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMembers {
    user_match: Option<UserMatch>,
    users: Option<RawJoin>,
    groups: Option<RawJoin>,
}

/// `{ cloud = "<Graph property>", ad = "<AD attribute>" }`; both checked by the validator, so a
/// missing one is an error naming its key rather than a parse error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJoin {
    cloud: Option<String>,
    ad: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSafety {
    #[serde(default = "default_delete_threshold")]
    delete_threshold: usize,
    /// Also hold deletes back when they are more than this share of the owned groups.
    #[serde(default)]
    delete_threshold_percent: Option<f64>,
    #[serde(default = "default_quarantine_cap")]
    quarantine_max_backoff_secs: u64,
    #[serde(default = "default_max_members_per_group")]
    max_members_per_group: usize,
    #[serde(default = "default_member_removal_threshold_percent")]
    member_removal_threshold_percent: f64,
    #[serde(default = "default_member_removal_min_members")]
    member_removal_min_members: usize,
}

impl Default for RawSafety {
    fn default() -> Self {
        RawSafety {
            delete_threshold: default_delete_threshold(),
            delete_threshold_percent: None,
            quarantine_max_backoff_secs: default_quarantine_cap(),
            max_members_per_group: default_max_members_per_group(),
            member_removal_threshold_percent: default_member_removal_threshold_percent(),
            member_removal_min_members: default_member_removal_min_members(),
        }
    }
}

fn default_quarantine_cap() -> u64 {
    3600
}
fn default_max_members_per_group() -> usize {
    1_000_000
}
fn default_member_removal_threshold_percent() -> f64 {
    50.0
}
fn default_member_removal_min_members() -> usize {
    10
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    #[serde(default = "default_poll_secs")]
    poll_interval_secs: f64,
    #[serde(default = "default_reconcile_secs")]
    reconcile_interval_secs: f64,
    #[serde(default)]
    watch: WatchMode,
    #[serde(default = "default_watch_poll_ms")]
    watch_poll_interval_ms: u64,
    #[serde(default = "default_debounce_ms")]
    debounce_ms: u64,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; off when unset.
    listen: Option<String>,
    #[serde(default = "default_ready_within_polls")]
    ready_within_polls: u32,
    #[serde(default = "default_ready_max_cycle_secs")]
    ready_max_cycle_secs: u64,
}

impl Default for RawDaemon {
    fn default() -> Self {
        RawDaemon {
            poll_interval_secs: default_poll_secs(),
            reconcile_interval_secs: default_reconcile_secs(),
            watch: WatchMode::default(),
            watch_poll_interval_ms: default_watch_poll_ms(),
            debounce_ms: default_debounce_ms(),
            listen: None,
            ready_within_polls: default_ready_within_polls(),
            ready_max_cycle_secs: default_ready_max_cycle_secs(),
        }
    }
}

/// `[console]`: the read-only web console on `[daemon] listen`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsole {
    #[serde(default)]
    enabled: bool,
    credential_env: Option<String>,
    credential_file: Option<PathBuf>,
    credential: Option<toml::Value>,
}

fn default_poll_secs() -> f64 {
    5.0
}
fn default_reconcile_secs() -> f64 {
    3600.0
}
fn default_watch_poll_ms() -> u64 {
    1000
}
fn default_debounce_ms() -> u64 {
    300
}
fn default_ready_within_polls() -> u32 {
    3
}
fn default_ready_max_cycle_secs() -> u64 {
    900
}

/// How `writeback run` notices edits to the rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchMode {
    /// The platform's notifications (inotify), plus a periodic rescan as a safety net.
    #[default]
    Auto,
    /// Polling, for filesystems without notifications (NFS, some container mounts).
    Poll,
    /// No watching: reload only on SIGHUP.
    Off,
}

/// Settings of the long-running host (`writeback run`).
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// How often Graph is asked for changes.
    pub poll_interval: Duration,
    /// How often every owned AD object is compared (drift); `None` = never.
    pub reconcile_interval: Option<Duration>,
    pub watch: WatchMode,
    pub watch_poll_interval: Duration,
    /// Quiet time after the last file event before the rules are rescanned.
    pub debounce: Duration,
    /// Where the metrics and health endpoints are served; `None` = not served.
    pub listen: Option<std::net::SocketAddr>,
    /// `/readyz` fails when no cycle succeeded within this many poll intervals.
    pub ready_within_polls: u32,
    /// `/readyz` fails while one cycle has run longer than this.
    pub ready_max_cycle: Duration,
}

/// `[console]`: the read-only web console, served with the metrics on `[daemon] listen`.
#[derive(Debug, Clone, Default)]
pub struct ConsoleConfig {
    pub enabled: bool,
    /// Asked of every request when set (a bearer token, or the password of basic auth);
    /// required when the console is served on an address other than loopback.
    pub credential: Option<secrecy::SecretString>,
}

fn default_timeout_secs() -> u64 {
    30
}
fn default_max_retries() -> u32 {
    5
}
fn default_delete_threshold() -> usize {
    10
}

/// Which Microsoft cloud: decides the default Graph and login hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cloud {
    #[default]
    Global,
    UsGov,
    UsGovDod,
    China,
}

impl Cloud {
    fn graph_root(self) -> &'static str {
        match self {
            Cloud::Global => "https://graph.microsoft.com",
            Cloud::UsGov => "https://graph.microsoft.us",
            Cloud::UsGovDod => "https://dod-graph.microsoft.us",
            Cloud::China => "https://microsoftgraph.chinacloudapi.cn",
        }
    }
    fn login_root(self) -> &'static str {
        match self {
            Cloud::Global => "https://login.microsoftonline.com",
            Cloud::UsGov | Cloud::UsGovDod => "https://login.microsoftonline.us",
            Cloud::China => "https://login.partner.microsoftonline.cn",
        }
    }
}

/// How a cloud user is matched to its AD account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserMatch {
    /// `onPremisesSecurityIdentifier` = AD `objectSid` (works for every synced user).
    #[default]
    Sid,
    /// `onPremisesImmutableId` = base64 of AD `objectGUID` (Connect's default source anchor).
    ImmutableId,
}

/// How members are matched to AD objects: one join key per kind of cloud member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberJoins {
    pub users: JoinKey,
    /// Groups synced from AD (the members that are groups).
    pub groups: JoinKey,
}

impl Default for MemberJoins {
    fn default() -> Self {
        MemberJoins {
            users: JoinKey::sid(),
            groups: JoinKey::sid(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GraphConfig {
    pub tenant_id: String,
    pub client_id: String,
    pub credential: Credential,
    /// Graph's versioned root, e.g. `https://graph.microsoft.com/v1.0`.
    pub graph_url: String,
    pub token_url: String,
    /// `<graph root>/.default`.
    pub scope: String,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    pub max_retries: u32,
    /// Bounds of one delta round (`max_pages_per_round`, `round_timeout_secs`).
    pub round_limits: crate::graph::RoundLimits,
}

/// `[ad]`. `Debug` shows the password as redacted (a `SecretString`).
#[derive(Clone, Debug)]
pub struct AdConfig {
    /// The domain controllers in order of preference (`ad.url` or `ad.urls`); empty with
    /// `discover`.
    pub urls: Vec<String>,
    /// `ad.discover` and `ad.dns_servers`: the DCs are looked up in DNS.
    pub discover: Option<crate::ad::discover::Discovery>,
    /// Empty with Kerberos.
    pub bind_dn: String,
    pub password: secrecy::SecretString,
    /// `auth = "kerberos"`: the keytab and principal (then no bind DN and no password).
    pub kerberos: Option<crate::ad::kerberos::Kerberos>,
    pub ca_file: Option<PathBuf>,
    pub starttls: bool,
    pub allow_plain_ldap: bool,
    pub managed_ous: Vec<String>,
    /// Managed OUs other instances (another tenant's, or other rules') write to as well: their
    /// groups there are expected, not counted as foreign objects.
    pub shared_ous: Vec<String>,
    /// Groups (or OUs holding groups) outside the managed OUs that rules may add their groups
    /// to (`member_of`); Writeback only adds and removes its own links there.
    pub link_targets: Vec<String>,
    /// Where members are looked up; empty = the domain root (the forest with `gc_url`).
    pub member_search_bases: Vec<String>,
    /// The Global Catalog members are looked up in, when set.
    pub gc_url: Option<String>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct RulesConfig {
    pub folder: PathBuf,
    pub stdlib: PathBuf,
    pub settings: BTreeMap<String, serde_json::Value>,
    /// Time limit of one trigger or `on_schedule` call (primitives included).
    pub trigger_timeout: Duration,
    /// Trigger calls per cycle; the rest are reported as skipped (a storm stays bounded).
    pub max_triggers_per_cycle: usize,
    /// Time all trigger calls of one cycle may take together.
    pub trigger_budget: Duration,
    /// When a failed trigger call is tried again, and how often before it is given up.
    pub trigger_retry: crate::policy::RetryPolicy,
    /// Where triggers' HTTP requests may go (`http_allowed_hosts`, `http_allowed_networks`).
    pub egress: crate::egress::Egress,
    /// Secrets triggers read with `secret("name")`, by name (empty values when the config was
    /// read without its secrets, for `writeback check`).
    pub secrets: std::sync::Arc<BTreeMap<String, secrecy::SecretString>>,
}

/// Parts of setting names that say the value is a secret, which belongs in `[rules.secrets]`.
const SECRET_WORDS: [&str; 7] = [
    "secret",
    "password",
    "passwd",
    "token",
    "apikey",
    "api_key",
    "private_key",
];

impl RulesConfig {
    /// Settings whose name says they hold a secret: a warning each, naming the key. A secret
    /// in `[rules.settings]` sits in plain text in the config and in every `writeback plan`
    /// reader's reach.
    pub fn secret_looking_settings(&self) -> Vec<String> {
        self.settings
            .iter()
            .filter(|(k, v)| {
                let k = k.to_ascii_lowercase();
                v.is_string() && SECRET_WORDS.iter().any(|w| k.contains(w))
            })
            .map(|(k, _)| {
                format!(
                    "rules.settings.{k} looks like a secret: move it to [rules.secrets] ({k} = {{ env = \"...\" }}, {{ file = \"...\" }} or {{ credential = \"...\" }}) and read it with secret(\"{k}\") in the trigger"
                )
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub graph: GraphConfig,
    pub ad: AdConfig,
    pub rules: RulesConfig,
    pub state_path: PathBuf,
    /// `[state.postgres]`: the state on PostgreSQL, shared by several instances of which one
    /// writes; `None`: the SQLite file at `state_path`.
    pub postgres: Option<PostgresConfig>,
    /// `[members]`: how cloud members are matched to AD objects.
    pub members: MemberJoins,
    /// More deletes than this in one cycle are held back for approval.
    pub delete_threshold: usize,
    /// Also held back when more than this percentage of the owned groups.
    pub delete_threshold_percent: Option<f64>,
    /// The longest wait, in seconds, before a failing group is tried again.
    pub quarantine_max_backoff_secs: u64,
    /// A cloud group with more members than this is not written (quarantined, with the reason).
    pub max_members_per_group: usize,
    /// When a group's member removals are held for approval.
    pub member_removals: crate::policy::RemovalPolicy,
    /// How long audit events (what was written to AD) are kept, in days.
    pub audit_retention_days: u32,
    pub daemon: DaemonConfig,
    pub console: ConsoleConfig,
    /// The environment variables secrets were read from (`*_env`): see
    /// [`Config::forget_secret_env`].
    pub secret_env: Vec<String>,
    /// This config's AD target: `[ad] name` (default `default`) or a `[targets.<name>]` key.
    pub target: String,
    /// The `[targets.<name>]` after this one (empty in theirs): see [`Config::targets`].
    pub more_targets: Vec<Config>,
}

/// The config file's text; a missing file says how to name another.
pub(crate) fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ConfigError::Missing {
            path: path.to_path_buf(),
        },
        _ => ConfigError::Read {
            path: path.to_path_buf(),
            source,
        },
    })
}

impl Config {
    /// Reads and validates the file, and reads the secrets it names.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_text(path)?;
        Self::parse(path, &text)
    }

    /// Removes the `*_env` secrets from the process environment once they are read, so no child
    /// process inherits them and no later reader of the environment finds them (the kernel's
    /// copy in `/proc/<pid>/environ`, readable by the service's own user only, stays as it
    /// was at exec). Changing the environment races with any thread reading it: call this
    /// before the runtime starts.
    pub fn forget_secret_env(&self) {
        for var in &self.secret_env {
            std::env::remove_var(var);
        }
    }

    /// Reads and validates the file without reading any secret (for `writeback check`, which
    /// runs where the secrets are not, e.g. in CI). Secret fields are left empty.
    pub fn load_offline(path: &Path) -> Result<Config, ConfigError> {
        let text = read_text(path)?;
        Self::parse_with(path, &text, false)
    }

    /// Reads and validates the file, and reads the AD secrets only (for `explain`, which reads
    /// AD and never asks Graph or calls a trigger): the Graph credential and `[rules.secrets]`
    /// are validated, not read, and left empty.
    pub fn load_for_ad(path: &Path) -> Result<Config, ConfigError> {
        let text = read_text(path)?;
        Self::parse_secrets(path, &text, Secrets::AdOnly)
    }

    /// Reads and validates the file, and reads the state database's password only (for
    /// `writeback state copy`, which moves the state and contacts neither Graph nor AD): the
    /// other secrets are validated, not read, and left empty.
    pub fn load_for_state(path: &Path) -> Result<Config, ConfigError> {
        let text = read_text(path)?;
        Self::parse_secrets(path, &text, Secrets::StateOnly)
    }

    /// Validates `text` as if read from `path` (used by `load` and by tests).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        Self::parse_with(path, text, true)
    }

    fn parse_with(path: &Path, text: &str, read_secrets: bool) -> Result<Config, ConfigError> {
        let which = match read_secrets {
            true => Secrets::All,
            false => Secrets::None,
        };
        Self::parse_secrets(path, text, which)
    }

    fn parse_secrets(path: &Path, text: &str, which: Secrets) -> Result<Config, ConfigError> {
        Self::parse_noting(path, text, which).map(|(c, _)| c)
    }

    /// Validates `text` (the file at `path`) and reads every secret it names, for `writeback
    /// check`: a secret that cannot be read does not stop the load; each is returned, with the
    /// config (its value left empty).
    pub fn preflight(path: &Path, text: &str) -> Result<(Config, Vec<ConfigError>), ConfigError> {
        Self::parse_noting(path, text, Secrets::Collect)
    }

    fn parse_noting(
        path: &Path,
        text: &str,
        which: Secrets,
    ) -> Result<(Config, Vec<ConfigError>), ConfigError> {
        let mut raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let more = std::mem::take(&mut raw.targets);
        let name = match raw.ad.name.take() {
            Some(n) => {
                targets::check_name(path, "ad.name", &n)?;
                n
            }
            None => targets::DEFAULT_NAME.to_string(),
        };
        let (mut config, mut unread) = Self::build(path, raw, which, &name)?;
        if more.is_empty() {
            return Ok((config, unread));
        }
        let doc: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        for (name, table) in more {
            let raw = targets::merged(path, &doc, &name, table)?;
            let settings = targets::own_settings(&doc, &name);
            let (mut target, more_unread) = Self::build(path, raw, which, &name)
                .map_err(|e| targets::locate(e, &name, &settings))?;
            if let Some(pg) = &mut target.postgres {
                pg.settings.schema = Some(targets::schema(path, &name)?);
            }
            // The shared sections' secrets were noted with the first target.
            unread.extend(
                more_unread
                    .into_iter()
                    .map(|e| targets::locate(e, &name, &settings))
                    .filter(|e| {
                        matches!(e, ConfigError::Invalid { key, .. } if key.starts_with("targets."))
                    }),
            );
            config.secret_env.extend(target.secret_env.iter().cloned());
            config.more_targets.push(target);
        }
        targets::check_distinct(&config)?;
        Ok((config, unread))
    }

    /// One target's config from its sections (the shared ones and its own).
    fn build(
        path: &Path,
        raw: RawConfig,
        which: Secrets,
        target: &str,
    ) -> Result<(Config, Vec<ConfigError>), ConfigError> {
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let v = Validator {
            path,
            read_secrets: which != Secrets::None,
            secret_env: Default::default(),
            unread: (which == Secrets::Collect).then(Default::default),
        };
        // Validates the secrets a verb does not need without reading them.
        let offline = Validator {
            path,
            read_secrets: false,
            secret_env: Default::default(),
            unread: None,
        };
        let cloud_v = match which {
            Secrets::AdOnly | Secrets::StateOnly => &offline,
            Secrets::All | Secrets::None | Secrets::Collect => &v,
        };
        let ad_v = match which {
            Secrets::StateOnly => &offline,
            Secrets::All | Secrets::AdOnly | Secrets::None | Secrets::Collect => &v,
        };
        let resolve = |p: &Path| -> PathBuf {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };

        let graph = graph_section(&v, cloud_v, raw.graph, &resolve)?;
        let ad = ad_section(ad_v, raw.ad, &resolve)?;
        let members = member_joins(&v, raw.members)?;

        // Rules
        let folder = resolve(&raw.rules.folder);
        let stdlib = match &raw.rules.stdlib {
            Some(p) => resolve(p),
            None => folder
                .parent()
                .map(|p| p.join("stdlib"))
                .unwrap_or_else(|| PathBuf::from("stdlib")),
        };
        let mut settings = BTreeMap::new();
        if raw.rules.settings.contains_key(targets::SETTING) {
            return Err(v.invalid(
                &format!("rules.settings.{}", targets::SETTING),
                "reserved: setting(\"target\") is the name of the AD target the rules are evaluated for ([ad] name, or the key of [targets.<name>])",
            ));
        }
        settings.insert(
            targets::SETTING.to_string(),
            serde_json::Value::String(target.to_string()),
        );
        for (k, val) in raw.rules.settings {
            let json = serde_json::to_value(&val).map_err(|e| {
                v.invalid(
                    &format!("rules.settings.{k}"),
                    &format!("unusable value: {e}"),
                )
            })?;
            settings.insert(k, json);
        }
        let mut secrets = BTreeMap::new();
        for (name, src) in &raw.rules.secrets {
            let key = format!("rules.secrets.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Err(v.invalid(
                    &key,
                    "a secret's name is letters, digits, '_', '-' and '.' only",
                ));
            }
            let value = match (&src.env, &src.file, &src.credential) {
                (Some(_), None, None) | (None, Some(_), None) => cloud_v.secret(
                    &key,
                    src.env.as_deref(),
                    src.file.as_deref().map(resolve).as_deref(),
                )?,
                (None, None, Some(cred)) => cloud_v.credential(&key, cred)?,
                _ => return Err(v.invalid(&key, "give exactly one of env, file and credential")),
            };
            secrets.insert(name.clone(), secrecy::SecretString::from(value));
        }

        if !(1..=3600).contains(&raw.rules.trigger_timeout_secs) {
            return Err(v.invalid(
                "rules.trigger_timeout_secs",
                "must be between 1 and 3600 seconds",
            ));
        }

        if raw.rules.trigger_retry_secs == 0 {
            return Err(v.invalid("rules.trigger_retry_secs", "must be at least 1"));
        }
        if raw.rules.trigger_max_attempts == 0 {
            return Err(v.invalid("rules.trigger_max_attempts", "must be at least 1"));
        }
        if raw.rules.trigger_budget_secs == 0 {
            return Err(v.invalid("rules.trigger_budget_secs", "must be at least 1"));
        }
        let egress = crate::egress::Egress::new(
            &raw.rules.http_allowed_hosts,
            &raw.rules.http_allowed_networks,
        )
        .map_err(|(key, message)| v.invalid(&key, &message))?;

        if let Some(p) = raw.safety.delete_threshold_percent {
            if !(p > 0.0 && p <= 100.0) {
                return Err(v.invalid(
                    "safety.delete_threshold_percent",
                    "must be a percentage above 0 and at most 100",
                ));
            }
        }
        let p = raw.safety.member_removal_threshold_percent;
        if !(p > 0.0 && p <= 100.0) {
            return Err(v.invalid(
                "safety.member_removal_threshold_percent",
                "must be a percentage above 0 and at most 100 (100 never holds a removal)",
            ));
        }
        if raw.safety.max_members_per_group == 0 {
            return Err(v.invalid("safety.max_members_per_group", "must be at least 1"));
        }
        if raw.safety.quarantine_max_backoff_secs == 0 {
            return Err(v.invalid(
                "safety.quarantine_max_backoff_secs",
                "must be at least 1 second",
            ));
        }

        if raw.state.audit_retention_days == 0 {
            return Err(v.invalid("state.audit_retention_days", "must be at least 1 day"));
        }
        let postgres = match raw.state.postgres {
            Some(p) => Some(postgres::section(&v, p, &resolve)?),
            None => None,
        };

        let daemon = daemon_section(&v, raw.daemon)?;
        let console = console_section(&v, raw.console, daemon.listen, &resolve)?;

        let config = Config {
            path: path.to_path_buf(),
            graph,
            ad,
            rules: RulesConfig {
                folder,
                stdlib,
                settings,
                trigger_timeout: Duration::from_secs(raw.rules.trigger_timeout_secs),
                max_triggers_per_cycle: raw.rules.max_triggers_per_cycle,
                trigger_budget: Duration::from_secs(raw.rules.trigger_budget_secs),
                trigger_retry: crate::policy::RetryPolicy {
                    first_wait_secs: raw.rules.trigger_retry_secs,
                    max_attempts: raw.rules.trigger_max_attempts,
                },
                egress,
                secrets: std::sync::Arc::new(secrets),
            },
            state_path: resolve(&raw.state.path),
            postgres,
            members,
            delete_threshold: raw.safety.delete_threshold,
            delete_threshold_percent: raw.safety.delete_threshold_percent,
            quarantine_max_backoff_secs: raw.safety.quarantine_max_backoff_secs,
            max_members_per_group: raw.safety.max_members_per_group,
            member_removals: crate::policy::RemovalPolicy {
                percent: raw.safety.member_removal_threshold_percent,
                min_members: raw.safety.member_removal_min_members,
            },
            audit_retention_days: raw.state.audit_retention_days,
            daemon,
            console,
            secret_env: v.secret_env.take(),
            target: target.to_string(),
            more_targets: Vec::new(),
        };
        let unread = v.unread.map(|u| u.into_inner()).unwrap_or_default();
        Ok((config, unread))
    }
}

/// `[graph]`: the tenant, the app's credential (read by `cloud_v`, which may leave it unread),
/// the endpoints.
fn graph_section(
    v: &Validator,
    cloud_v: &Validator,
    g: RawGraph,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<GraphConfig, ConfigError> {
    v.non_empty("graph.tenant_id", &g.tenant_id)?;
    v.non_empty("graph.client_id", &g.client_id)?;
    if g.client_secret.is_some() {
        return Err(v.invalid(
            "graph.client_secret",
            "secrets are not accepted inline; use client_secret_env or client_secret_file",
        ));
    }
    let secret_sources = [
        g.client_secret_env.is_some(),
        g.client_secret_file.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    let has_cert = g.certificate_file.is_some() || g.private_key_file.is_some();
    let credential = match (secret_sources, has_cert) {
        (0, false) => {
            return Err(v.invalid(
                "graph",
                "no app credential: set client_secret_env, client_secret_file, or certificate_file + private_key_file",
            ))
        }
        (n, true) if n > 0 => {
            return Err(v.invalid(
                "graph",
                "give either a client secret or a certificate, not both",
            ))
        }
        (n, false) if n > 1 => {
            return Err(v.invalid(
                "graph",
                "give only one of client_secret_env and client_secret_file",
            ))
        }
        (_, false) => Credential::Secret(
            cloud_v.secret(
                "graph.client_secret",
                g.client_secret_env.as_deref(),
                g.client_secret_file.as_deref().map(resolve).as_deref(),
            )?
            .into(),
        ),
        (_, true) => {
            let cert = g.certificate_file.as_deref().ok_or_else(|| {
                v.invalid(
                    "graph.certificate_file",
                    "required with graph.private_key_file",
                )
            })?;
            let key = g.private_key_file.as_deref().ok_or_else(|| {
                v.invalid(
                    "graph.private_key_file",
                    "required with graph.certificate_file",
                )
            })?;
            Credential::Certificate {
                certificate_pem: cloud_v.read_file("graph.certificate_file", &resolve(cert))?,
                private_key_pem: v
                    .read_secret_file("graph.private_key_file", &resolve(key))?
                    .into(),
            }
        }
    };
    let graph_root = match &g.graph_url {
        Some(u) => {
            v.url("graph.graph_url", u)?;
            u.trim_end_matches('/').to_string()
        }
        None => format!("{}/v1.0", g.cloud.graph_root()),
    };
    // The scope is the resource root, without the version segment.
    let scope_root = graph_root
        .strip_suffix("/v1.0")
        .or_else(|| graph_root.strip_suffix("/beta"))
        .unwrap_or(&graph_root);
    let scope = match &g.graph_url {
        Some(_) if scope_root.starts_with("http://") => {
            // A local emulator: scope it like the public cloud so tokens look real.
            format!("{}/.default", Cloud::Global.graph_root())
        }
        Some(_) => format!("{scope_root}/.default"),
        None => format!("{}/.default", g.cloud.graph_root()),
    };
    let token_url = match &g.token_url {
        Some(u) => {
            v.url("graph.token_url", u)?;
            u.clone()
        }
        None => format!("{}/{}/oauth2/v2.0/token", g.cloud.login_root(), g.tenant_id),
    };
    if g.timeout_secs == 0 {
        return Err(v.invalid("graph.timeout_secs", "must be at least 1"));
    }
    let graph = GraphConfig {
        tenant_id: g.tenant_id,
        client_id: g.client_id,
        credential,
        graph_url: graph_root,
        token_url,
        scope,
        ca_file: g.ca_file.as_deref().map(resolve),
        timeout: Duration::from_secs(g.timeout_secs),
        max_retries: g.max_retries,
        round_limits: crate::graph::RoundLimits {
            max_pages: g.max_pages_per_round,
            timeout: Duration::from_secs(g.round_timeout_secs),
        },
    };
    if g.max_pages_per_round == 0 {
        return Err(v.invalid("graph.max_pages_per_round", "must be at least 1"));
    }
    if g.round_timeout_secs == 0 {
        return Err(v.invalid("graph.round_timeout_secs", "must be at least 1"));
    }
    Ok(graph)
}

/// `[ad]`: the DCs (or their discovery), the bind (password or keytab), TLS, the OUs.
fn ad_section(
    v: &Validator,
    a: RawAd,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<AdConfig, ConfigError> {
    if a.discover.is_some() && (a.url.is_some() || a.urls.is_some()) {
        return Err(v.invalid(
            "ad.discover",
            "give either ad.discover (the DCs from DNS) or ad.url / ad.urls, not both",
        ));
    }
    if a.dns_servers.is_some() && a.discover.is_none() {
        return Err(v.invalid(
            "ad.dns_servers",
            "only used with ad.discover (the name servers the DCs are looked up in)",
        ));
    }
    let (urls, urls_key) = match (a.url, a.urls) {
        (Some(_), Some(_)) => {
            return Err(v.invalid(
                "ad.url",
                "give either ad.url (one DC) or ad.urls (several, in order of preference), not both",
            ))
        }
        (Some(u), None) => (vec![u], "ad.url"),
        (None, Some(list)) if list.is_empty() => {
            return Err(v.invalid("ad.urls", "name at least one domain controller"))
        }
        (None, Some(list)) => (list, "ad.urls"),
        (None, None) if a.discover.is_some() => (Vec::new(), "ad.urls"),
        (None, None) => {
            return Err(v.invalid(
                "ad.url",
                "name the domain controller: ad.url, ad.urls for several, or ad.discover to find them in DNS",
            ))
        }
    };
    if a.discover_allowed_domains.is_some() && a.discover.is_none() {
        return Err(v.invalid(
            "ad.discover_allowed_domains",
            "only used with ad.discover (other domains whose hosts may be DCs)",
        ));
    }
    let discover = match a.discover {
        None => None,
        Some(domain) => Some(crate::ad::discover::Discovery {
            servers: dns_servers(a.dns_servers.as_deref().unwrap_or_default())
                .map_err(|e| v.invalid("ad.dns_servers", &e.to_string()))?,
            domain: discover_domain(&domain)
                .map_err(|e| v.invalid("ad.discover", &e.to_string()))?,
            allowed_domains: a
                .discover_allowed_domains
                .as_deref()
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    discover_domain(d).map_err(|e| {
                        v.invalid(&format!("ad.discover_allowed_domains[{i}]"), &e.to_string())
                    })
                })
                .collect::<Result<_, _>>()?,
        }),
    };
    // DNS answers are unsigned: a spoofed one can name any host. Only a certificate from
    // the operator's own CA (or Kerberos' mutual authentication) proves the host is a DC,
    // and plain LDAP would hand the password to whoever answers.
    if discover.is_some() {
        if a.allow_plain_ldap {
            return Err(v.invalid(
                "ad.allow_plain_ldap",
                "not with ad.discover: a DC found in DNS is reached over TLS only (ldaps://, or starttls = true)",
            ));
        }
        if a.ca_file.is_none() && a.auth != AdAuth::Kerberos {
            return Err(v.invalid(
                "ad.discover",
                "needs ad.ca_file (the CA that issued your DCs' certificates) or auth = \"kerberos\": DNS answers are not authenticated, and with the system's public CAs any host DNS names could present a valid certificate and receive the bind password",
            ));
        }
    }
    for (i, url) in urls.iter().enumerate() {
        let key = if urls_key == "ad.url" {
            urls_key.to_string()
        } else {
            format!("{urls_key}[{i}]")
        };
        let url_l = url.to_ascii_lowercase();
        if !(url_l.starts_with("ldaps://") || url_l.starts_with("ldap://")) {
            return Err(v.invalid(&key, "must start with ldaps:// or ldap://"));
        }
        if url_l.starts_with("ldap://") && !a.starttls && !a.allow_plain_ldap {
            return Err(v.invalid(
                &key,
                "ldap:// without TLS sends the bind password in clear: use ldaps://, set starttls = true, or set allow_plain_ldap = true explicitly",
            ));
        }
        if url_l.starts_with("ldaps://") && a.starttls {
            return Err(v.invalid(
                "ad.starttls",
                "StartTLS applies to ldap:// URLs; ldaps:// is TLS already",
            ));
        }
    }
    if a.password.is_some() {
        return Err(v.invalid(
            "ad.password",
            "secrets are not accepted inline; use password_env or password_file",
        ));
    }
    let (bind_dn, password, kerberos) = match a.auth {
        AdAuth::Simple => {
            for (key, set) in [
                ("ad.keytab", a.keytab.is_some()),
                ("ad.principal", a.principal.is_some()),
            ] {
                if set {
                    return Err(v.invalid(key, "only used with auth = \"kerberos\""));
                }
            }
            let bind_dn = a.bind_dn.ok_or_else(|| {
                v.invalid(
                    "ad.bind_dn",
                    "required with auth = \"simple\" (the default): the account Writeback binds as",
                )
            })?;
            v.non_empty("ad.bind_dn", &bind_dn)?;
            let password = v.secret(
                "ad.password",
                a.password_env.as_deref(),
                a.password_file.as_deref().map(resolve).as_deref(),
            )?;
            (bind_dn, password, None)
        }
        AdAuth::Kerberos => {
            if !crate::ad::kerberos::BUILT_IN {
                return Err(v.invalid("ad.auth", crate::ad::kerberos::HOW_TO_BUILD));
            }
            for (key, set) in [
                ("ad.bind_dn", a.bind_dn.is_some()),
                ("ad.password_env", a.password_env.is_some()),
                ("ad.password_file", a.password_file.is_some()),
            ] {
                if set {
                    return Err(v.invalid(
                        key,
                        "not used with auth = \"kerberos\" (the keytab replaces the password)",
                    ));
                }
            }
            let principal = a.principal.ok_or_else(|| {
                v.invalid(
                    "ad.principal",
                    "required with auth = \"kerberos\", e.g. \"svc-writeback@CORP.EXAMPLE.COM\"",
                )
            })?;
            if !principal.contains('@') || principal.starts_with('@') {
                return Err(v.invalid(
                    "ad.principal",
                    "a Kerberos principal with its realm, like \"svc-writeback@CORP.EXAMPLE.COM\"",
                ));
            }
            let keytab = resolve(
                a.keytab
                    .as_deref()
                    .ok_or_else(|| v.invalid("ad.keytab", "required with auth = \"kerberos\""))?,
            );
            if v.read_secrets {
                let problem = match std::fs::File::open(&keytab) {
                    Err(e) => Some(format!("{}: {e}", keytab.display())),
                    Ok(_) => crate::perms::check_secret_file(&keytab)
                        .err()
                        .map(|e| e.to_string()),
                };
                if let Some(m) = problem {
                    v.unreadable(v.invalid("ad.keytab", &m))?;
                }
            }
            // ldap3 0.12's sealing layer (Kerberos on plain LDAP) stalls on large answers
            // (the schema read timed out on the test bed), so Kerberos runs inside TLS.
            let plain_url = urls
                .iter()
                .any(|u| u.to_ascii_lowercase().starts_with("ldap://"));
            if !a.starttls && (plain_url || (discover.is_some() && a.allow_plain_ldap)) {
                return Err(v.invalid(
                    "ad.auth",
                    "Kerberos binds need TLS: use ldaps:// or starttls = true (plain LDAP sealed by Kerberos is not supported)",
                ));
            }
            // The service ticket is for ldap/<host>: an address names no service.
            for url in &urls {
                let host = crate::ad::kerberos::spn_host(url).unwrap_or_default();
                if host
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok()
                {
                    return Err(v.invalid(
                        urls_key,
                        &format!("{url}: Kerberos needs the DC's host name (its SPN is ldap/<host name>), not an address"),
                    ));
                }
            }
            (
                String::new(),
                String::new(),
                Some(crate::ad::kerberos::Kerberos { principal, keytab }),
            )
        }
    };
    if a.managed_ous.is_empty() {
        return Err(v.invalid(
            "ad.managed_ous",
            "name at least one OU: Writeback writes only inside these",
        ));
    }
    for (i, ou) in a.managed_ous.iter().enumerate() {
        if !looks_like_dn(ou) {
            return Err(v.invalid(
                &format!("ad.managed_ous[{i}]"),
                &format!("{ou:?} is not a valid distinguished name"),
            ));
        }
    }
    for (i, ou) in a.shared_ous.iter().enumerate() {
        let key = format!("ad.shared_ous[{i}]");
        if !looks_like_dn(ou) {
            return Err(v.invalid(&key, &format!("{ou:?} is not a valid distinguished name")));
        }
        if !a
            .managed_ous
            .iter()
            .any(|m| crate::ad::dn::is_within(ou, m))
        {
            return Err(v.invalid(
                &key,
                &format!("{ou:?} is not inside ad.managed_ous: only a managed OU can be shared"),
            ));
        }
    }
    for (i, t) in a.link_targets.iter().enumerate() {
        let key = format!("ad.link_targets[{i}]");
        if !looks_like_dn(t) {
            return Err(v.invalid(&key, &format!("{t:?} is not a valid distinguished name")));
        }
        // Groups Writeback writes get their members from the cloud: a link added there
        // would be removed by the next compare of that group.
        if a.managed_ous
            .iter()
            .any(|m| crate::ad::dn::is_within(t, m) || crate::ad::dn::is_within(m, t))
        {
            return Err(v.invalid(
                &key,
                &format!("{t:?} overlaps ad.managed_ous: groups Writeback writes take their members from the cloud (nest them there)"),
            ));
        }
    }
    for (i, b) in a.member_search_bases.iter().enumerate() {
        if !looks_like_dn(b) {
            return Err(v.invalid(
                &format!("ad.member_search_bases[{i}]"),
                &format!("{b:?} is not a valid distinguished name"),
            ));
        }
    }
    if let Some(gc) = &a.gc_url {
        v.gc_url(gc)?;
    }
    let ad = AdConfig {
        urls,
        discover,
        bind_dn,
        password: password.into(),
        kerberos,
        ca_file: a.ca_file.as_deref().map(resolve),
        starttls: a.starttls,
        allow_plain_ldap: a.allow_plain_ldap,
        managed_ous: a.managed_ous,
        shared_ous: a.shared_ous,
        link_targets: a.link_targets,
        member_search_bases: a.member_search_bases,
        gc_url: a.gc_url,
        timeout: Duration::from_secs(a.timeout_secs.max(1)),
    };
    Ok(ad)
}

/// `[daemon]`: the poll and reconciliation intervals, the watcher, the metrics endpoint.
fn daemon_section(v: &Validator, d: RawDaemon) -> Result<DaemonConfig, ConfigError> {
    if d.poll_interval_secs.is_nan() || d.poll_interval_secs < 1.0 {
        return Err(v.invalid(
            "daemon.poll_interval_secs",
            "must be at least 1 (Graph is asked for changes at most once a second)",
        ));
    }
    if !d.reconcile_interval_secs.is_finite() || d.reconcile_interval_secs < 0.0 {
        return Err(v.invalid(
            "daemon.reconcile_interval_secs",
            "must be a number of seconds (0 turns reconciliation off)",
        ));
    }
    if d.poll_interval_secs > 86_400.0 {
        return Err(v.invalid("daemon.poll_interval_secs", "must be at most 86400 (a day)"));
    }
    let listen = match d.listen.as_deref() {
        None => None,
        Some(text) => {
            Some(listen_address(text).map_err(|e| v.invalid("daemon.listen", &e.to_string()))?)
        }
    };
    if d.ready_max_cycle_secs == 0 {
        return Err(v.invalid("daemon.ready_max_cycle_secs", "must be at least 1"));
    }
    if d.ready_within_polls == 0 {
        return Err(v.invalid("daemon.ready_within_polls", "must be at least 1"));
    }
    let daemon = DaemonConfig {
        poll_interval: Duration::from_secs_f64(d.poll_interval_secs),
        reconcile_interval: (d.reconcile_interval_secs > 0.0)
            .then(|| Duration::from_secs_f64(d.reconcile_interval_secs)),
        watch: d.watch,
        watch_poll_interval: Duration::from_millis(d.watch_poll_interval_ms.max(50)),
        debounce: Duration::from_millis(d.debounce_ms),
        listen,
        ready_within_polls: d.ready_within_polls,
        ready_max_cycle: Duration::from_secs(d.ready_max_cycle_secs),
    };
    Ok(daemon)
}

/// `[console]`: served on `[daemon] listen`, so it needs that; a credential is required for an
/// address other than loopback (anyone who reaches it would read the audit trail otherwise).
fn console_section(
    v: &Validator,
    c: RawConsole,
    listen: Option<std::net::SocketAddr>,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<ConsoleConfig, ConfigError> {
    if c.credential.is_some() {
        return Err(v.invalid(
            "console.credential",
            "secrets are not accepted inline; use credential_env or credential_file",
        ));
    }
    let credential = match (c.credential_env.as_deref(), c.credential_file.as_deref()) {
        (None, None) => None,
        (env, file) => Some(secrecy::SecretString::from(v.secret(
            "console.credential",
            env,
            file.map(resolve).as_deref(),
        )?)),
    };
    if c.enabled {
        let Some(addr) = listen else {
            return Err(v.invalid(
                "console.enabled",
                "the console is served on [daemon] listen, which is not set (e.g. listen = \"127.0.0.1:9464\")",
            ));
        };
        if !addr.ip().is_loopback() && credential.is_none() {
            return Err(v.invalid(
                "console.credential_file",
                &format!("required: daemon.listen ({addr}) is not a loopback address, so the console asks every request for a credential (a bearer token, or the password of basic auth); set credential_file or credential_env"),
            ));
        }
    }
    Ok(ConsoleConfig {
        enabled: c.enabled,
        credential,
    })
}

/// `[daemon] listen`: an IP address and a port (`127.0.0.1:9464`, `[::1]:9464`). Host names
/// are refused: what a name resolves to can change, and the endpoints should not move with it.
fn listen_address(text: &str) -> Result<std::net::SocketAddr, ListenError> {
    let addr: std::net::SocketAddr = text
        .trim()
        .parse()
        .map_err(|_| ListenError::NotAnAddress(text.to_string()))?;
    if addr.port() == 0 {
        return Err(ListenError::PortZero(text.to_string()));
    }
    Ok(addr)
}

/// Why `[daemon] listen` is refused; holds the text as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ListenError {
    #[error("{0:?} is not an IP address with a port, like \"127.0.0.1:9464\"")]
    NotAnAddress(String),
    #[error("{0:?} has port 0: give the port a scraper is pointed at")]
    PortZero(String),
}

/// `[members]`: the join keys; `user_match` stays as the short form of the users key.
fn member_joins(v: &Validator<'_>, m: RawMembers) -> Result<MemberJoins, ConfigError> {
    let key = |what: JoinFor, name: &str, raw: RawJoin| -> Result<JoinKey, ConfigError> {
        let need = |field: &str, what: &str| v.invalid(&format!("{name}.{field}"), what);
        let cloud = raw
            .cloud
            .ok_or_else(|| need("cloud", "required: the Graph property to match on"))?;
        let ad = raw
            .ad
            .ok_or_else(|| need("ad", "required: the AD attribute holding the same value"))?;
        JoinKey::new(what, &cloud, &ad).map_err(|e| {
            let field = match e {
                JoinKeyError::AdAttribute { .. } => "ad",
                _ => "cloud",
            };
            need(field, &e.to_string())
        })
    };
    let users = match (m.user_match, m.users) {
        (Some(_), Some(_)) => {
            return Err(v.invalid(
                "members.user_match",
                "give either user_match or users, not both (user_match = \"immutable_id\" is users = { cloud = \"onPremisesImmutableId\", ad = \"objectGUID\" })",
            ))
        }
        (_, Some(raw)) => key(JoinFor::Users, "members.users", raw)?,
        (Some(UserMatch::ImmutableId), None) => JoinKey::immutable_id(),
        (Some(UserMatch::Sid) | None, None) => JoinKey::sid(),
    };
    let groups = match m.groups {
        Some(raw) => key(JoinFor::Groups, "members.groups", raw)?,
        None => JoinKey::sid(),
    };
    Ok(MemberJoins { users, groups })
}

/// `ad.discover`: a DNS domain name (`corp.example.test`), a trailing dot allowed.
fn discover_domain(text: &str) -> Result<String, NotADomain> {
    let d = text.trim().trim_end_matches('.');
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if d.is_empty() || d.len() > 253 || !d.split('.').all(label_ok) {
        return Err(NotADomain {
            text: text.to_string(),
        });
    }
    Ok(d.to_ascii_lowercase())
}

/// A name given as a DNS domain that is not one (empty, a bad label, too long).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a DNS domain name like \"corp.example.com\"")]
struct NotADomain {
    text: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{text:?} is not an IP address (with an optional port), like \"10.0.0.53\" or \"127.0.0.1:5353\"")]
struct NotAnAddress {
    text: String,
}

/// `ad.dns_servers`: IP addresses, each with an optional port (`10.0.0.53`, `127.0.0.1:5353`,
/// `[::1]:53`). Names are refused: the name servers are what names are resolved with.
fn dns_servers(list: &[String]) -> Result<Vec<std::net::SocketAddr>, NotAnAddress> {
    list.iter()
        .map(|text| {
            let t = text.trim();
            t.parse::<std::net::SocketAddr>()
                .or_else(|_| {
                    t.parse::<std::net::IpAddr>()
                        .map(|ip| std::net::SocketAddr::new(ip, 53))
                })
                .map_err(|_| NotAnAddress { text: text.clone() })
        })
        .collect()
}

/// A DN the host can work with: parses, and is not the empty root.
fn looks_like_dn(dn: &str) -> bool {
    crate::ad::dn::parse_dn(dn).is_ok_and(|p| !p.rdns.is_empty())
}

/// Which secrets a load reads (the others are validated, not read, and left empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Secrets {
    All,
    /// The AD bind password or keytab only.
    AdOnly,
    /// The state database's password only.
    StateOnly,
    None,
    /// Every secret read; one that cannot be is noted and left empty, so `writeback check`
    /// names each missing piece, not only the first.
    Collect,
}

struct Validator<'a> {
    path: &'a Path,
    /// False for offline checks: secret sources are validated, not read.
    read_secrets: bool,
    /// The environment variables secrets were read from.
    secret_env: std::cell::RefCell<Vec<String>>,
    /// With [`Secrets::Collect`]: the secrets that could not be read.
    unread: Option<std::cell::RefCell<Vec<ConfigError>>>,
}

impl Validator<'_> {
    fn invalid(&self, key: &str, message: &str) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            message: message.to_string(),
        }
    }

    /// A secret that cannot be read: noted when collecting (an empty value stands in),
    /// otherwise the error.
    fn unreadable(&self, e: ConfigError) -> Result<String, ConfigError> {
        match &self.unread {
            Some(list) => {
                list.borrow_mut().push(e);
                Ok(String::new())
            }
            None => Err(e),
        }
    }

    fn non_empty(&self, key: &str, value: &str) -> Result<(), ConfigError> {
        if value.trim().is_empty() {
            Err(self.invalid(key, "must not be empty"))
        } else {
            Ok(())
        }
    }

    /// `ad.gc_url`: an LDAP URL with a host (Global Catalog ports: 3269 LDAPS, 3268 LDAP).
    fn gc_url(&self, value: &str) -> Result<(), ConfigError> {
        let lower = value.trim().to_ascii_lowercase();
        let rest = lower
            .strip_prefix("ldaps://")
            .or_else(|| lower.strip_prefix("ldap://"))
            .ok_or_else(|| {
                self.invalid(
                    "ad.gc_url",
                    "must start with ldaps:// (Global Catalog port 3269) or ldap:// (port 3268)",
                )
            })?;
        if rest.split(['/', ':']).next().unwrap_or_default().is_empty() {
            return Err(self.invalid("ad.gc_url", "names no host"));
        }
        Ok(())
    }

    fn url(&self, key: &str, value: &str) -> Result<(), ConfigError> {
        if value.starts_with("https://") || value.starts_with("http://") {
            Ok(())
        } else {
            Err(self.invalid(key, "must be an http:// or https:// URL"))
        }
    }

    fn read_file(&self, key: &str, file: &Path) -> Result<String, ConfigError> {
        if !self.read_secrets {
            return Ok(String::new());
        }
        match std::fs::read_to_string(file) {
            Ok(text) => Ok(text),
            Err(e) => {
                self.unreadable(self.invalid(key, &format!("cannot read {}: {e}", file.display())))
            }
        }
    }

    /// A secret file's content, after its mode is checked ([`crate::perms`]).
    fn read_secret_file(&self, key: &str, file: &Path) -> Result<String, ConfigError> {
        if !self.read_secrets {
            return Ok(String::new());
        }
        if let Err(e) = crate::perms::check_secret_file(file) {
            return self.unreadable(self.invalid(key, &e.to_string()));
        }
        self.read_file(key, file)
    }

    /// A secret from an environment variable or a file (trailing newline removed).
    /// A systemd credential: `$CREDENTIALS_DIRECTORY/<name>` (set by systemd for the unit's
    /// `LoadCredential=`; the directory is private to the service).
    fn credential(&self, key: &str, name: &str) -> Result<String, ConfigError> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(self.invalid(key, "a credential name has no '/'"));
        }
        if !self.read_secrets {
            return Ok(String::new());
        }
        let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
            if self.unread.is_some() {
                // `writeback check` outside the unit: systemd hands credentials to the
                // service only, so there is nothing to read here.
                return Ok(String::new());
            }
            return self.unreadable(self.invalid(
                key,
                &format!("systemd credential {name:?}: CREDENTIALS_DIRECTORY is not set (give the unit LoadCredential={name}:<path>)"),
            ));
        };
        let path = Path::new(&dir).join(name);
        let before = self.unread.as_ref().map_or(0, |u| u.borrow().len());
        let value = self
            .read_file(key, &path)?
            .trim_end_matches(['\r', '\n'])
            .to_string();
        let noted = self.unread.as_ref().map_or(0, |u| u.borrow().len()) > before;
        if value.is_empty() && !noted {
            return self.unreadable(self.invalid(key, "the secret is empty"));
        }
        Ok(value)
    }

    fn secret(
        &self,
        key: &str,
        env: Option<&str>,
        file: Option<&Path>,
    ) -> Result<String, ConfigError> {
        let value = match (env, file) {
            (Some(_), Some(_)) => {
                return Err(self.invalid(key, "give either the _env or the _file form, not both"))
            }
            _ if !self.read_secrets && (env.is_some() || file.is_some()) => {
                return Ok(String::new())
            }
            (Some(var), None) => {
                let Ok(value) = std::env::var(var) else {
                    return self.unreadable(self.invalid(
                        &format!("{key}_env"),
                        &format!("environment variable {var} is not set"),
                    ));
                };
                self.secret_env.borrow_mut().push(var.to_string());
                value
            }
            (None, Some(f)) => {
                let before = self.unread.as_ref().map_or(0, |u| u.borrow().len());
                let value = self
                    .read_secret_file(&format!("{key}_file"), f)?
                    .trim_end_matches(['\r', '\n'])
                    .to_string();
                if self.unread.as_ref().map_or(0, |u| u.borrow().len()) > before {
                    return Ok(value);
                }
                value
            }
            (None, None) => {
                return Err(self.invalid(key, "set the _env or the _file form of this secret"))
            }
        };
        if value.is_empty() {
            return self.unreadable(self.invalid(key, "the secret is empty"));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn cfg(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/writeback/writeback.toml"), text)
    }

    const GOOD: &str = r#"
[graph]
tenant_id = "contoso.onmicrosoft.com"
client_id = "11111111-2222-3333-4444-555555555555"
client_secret_env = "WB_TEST_SECRET_PRESENT"

[ad]
url = "ldaps://dc1.corp.example.test"
bind_dn = "CN=svc,DC=corp,DC=example,DC=test"
password_env = "WB_TEST_SECRET_PRESENT"
managed_ous = ["OU=Cloud Groups,DC=corp,DC=example,DC=test"]

[rules]
folder = "rules"
[rules.settings]
m365_container = "OU=Cloud Groups,DC=corp,DC=example,DC=test"

[state]
path = "state.db"
"#;

    fn with_env() {
        std::env::set_var("WB_TEST_SECRET_PRESENT", "s3cret");
    }

    #[test]
    fn a_missing_config_file_says_how_to_name_another() {
        let e = Config::load_offline(Path::new("/nonexistent/writeback.toml"))
            .expect_err("no such file");
        let text = e.to_string();
        assert!(
            text.contains("/nonexistent/writeback.toml does not exist")
                && text.contains("--config")
                && text.contains("WRITEBACK_CONFIG"),
            "{text}"
        );
    }

    /// `writeback check` names every secret it cannot read, not only the first.
    #[test]
    fn a_preflight_names_each_unreadable_secret() {
        with_env();
        let path = Path::new("/etc/writeback/writeback.toml");
        let text = GOOD
            .replacen(
                "client_secret_env = \"WB_TEST_SECRET_PRESENT\"",
                "client_secret_file = \"/nonexistent/graph-secret\"",
                1,
            )
            .replacen(
                "password_env = \"WB_TEST_SECRET_PRESENT\"",
                "password_env = \"WB_TEST_AD_NOT_SET\"",
                1,
            )
            + "[rules.secrets]\nkey = { env = \"WB_TEST_SECRET_PRESENT\" }\nother = { file = \"/nonexistent/other\" }\nunit = { credential = \"x\" }\n";
        let (c, unread) = Config::parse_noting(path, &text, Secrets::Collect).expect("loads");
        let keys: Vec<String> = unread
            .iter()
            .map(|e| match e {
                ConfigError::Invalid { key, .. } => key.clone(),
                other => other.to_string(),
            })
            .collect();
        assert_eq!(
            keys,
            [
                "graph.client_secret_file",
                "ad.password_env",
                "rules.secrets.other_file"
            ]
        );
        assert!(unread[0].to_string().contains("/nonexistent/graph-secret"));
        assert_eq!(c.secret_env, ["WB_TEST_SECRET_PRESENT"]);
        // A mistake in the file itself still stops the load.
        let broken = text.replacen("[ad]", "[ad]\nnot_a_key = 1", 1);
        assert!(Config::parse_noting(path, &broken, Secrets::Collect).is_err());
    }

    /// `explain` reads AD, never Graph: the Graph credential and the triggers' secrets are not
    /// read, the AD password is.
    #[test]
    fn a_load_for_ad_reads_only_the_ad_secret() {
        with_env();
        let path = Path::new("/etc/writeback/writeback.toml");
        let text = GOOD.replacen(
            "client_secret_env = \"WB_TEST_SECRET_PRESENT\"",
            "client_secret_env = \"WB_TEST_GRAPH_NOT_SET\"",
            1,
        ) + "[rules.secrets]\nkey = { env = \"WB_TEST_HOOK_NOT_SET\" }\n";
        let e = Config::parse(path, &text).expect_err("the full load needs every secret");
        assert!(e.to_string().contains("WB_TEST_GRAPH_NOT_SET"), "{e}");
        let c = Config::parse_secrets(path, &text, Secrets::AdOnly).expect("AD secrets only");
        assert!(c.secret_env.iter().all(|v| v == "WB_TEST_SECRET_PRESENT"));
        assert!(!c.secret_env.is_empty(), "the AD password was read");
        let no_ad = text.replacen(
            "password_env = \"WB_TEST_SECRET_PRESENT\"",
            "password_env = \"WB_TEST_AD_NOT_SET\"",
            1,
        );
        let e = Config::parse_secrets(path, &no_ad, Secrets::AdOnly).expect_err("AD's is read");
        assert!(e.to_string().contains("WB_TEST_AD_NOT_SET"), "{e}");
    }

    #[test]
    fn a_load_for_state_reads_only_the_database_password() {
        with_env();
        let path = Path::new("/etc/writeback/writeback.toml");
        let text = GOOD
            .replace("WB_TEST_SECRET_PRESENT", "WB_TEST_NOT_SET_EITHER")
            .replace(
                "[state]\npath = \"state.db\"\n",
                "[state]\npath = \"state.db\"\n[state.postgres]\n\
                 url = \"postgresql://writeback@db.corp.example.test/writeback\"\n\
                 password_env = \"WB_TEST_SECRET_PRESENT\"\nca_file = \"ca.pem\"\n",
            );
        let e = Config::parse(path, &text).expect_err("the full load needs every secret");
        assert!(e.to_string().contains("WB_TEST_NOT_SET_EITHER"), "{e}");
        let c = Config::parse_secrets(path, &text, Secrets::StateOnly).expect("state only");
        assert_eq!(c.secret_env, vec!["WB_TEST_SECRET_PRESENT".to_string()]);
        assert!(c.postgres.is_some());
        let no_pg = text.replace(
            "password_env = \"WB_TEST_SECRET_PRESENT\"\nca_file",
            "password_env = \"WB_TEST_PG_NOT_SET\"\nca_file",
        );
        let e = Config::parse_secrets(path, &no_pg, Secrets::StateOnly).expect_err("read");
        assert!(e.to_string().contains("state.postgres.password_env"), "{e}");
    }

    #[test]
    fn good_config_resolves_paths_and_defaults() {
        with_env();
        let c = cfg(GOOD).expect("valid");
        assert_eq!(c.state_path, PathBuf::from("/etc/writeback/state.db"));
        assert_eq!(c.rules.folder, PathBuf::from("/etc/writeback/rules"));
        assert_eq!(c.rules.stdlib, PathBuf::from("/etc/writeback/stdlib"));
        assert_eq!(c.graph.graph_url, "https://graph.microsoft.com/v1.0");
        assert_eq!(
            c.graph.token_url,
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(c.graph.scope, "https://graph.microsoft.com/.default");
        assert_eq!(c.delete_threshold, 10);
        assert_eq!(c.members, MemberJoins::default());
        assert_eq!(c.ad.gc_url, None);
        assert_eq!(c.rules.trigger_timeout, Duration::from_secs(30));
        assert_eq!(c.rules.max_triggers_per_cycle, 1000);
        assert_eq!(
            c.rules.settings["m365_container"],
            serde_json::json!("OU=Cloud Groups,DC=corp,DC=example,DC=test")
        );
        // Secrets never show in Debug output.
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
    }

    #[test]
    fn member_join_keys_are_read_and_checked() {
        with_env();
        let c = cfg(&format!(
            "{GOOD}\n[members]\nusers = {{ cloud = \"userPrincipalName\", ad = \"userPrincipalName\" }}\ngroups = {{ cloud = \"onPremisesSamAccountName\", ad = \"sAMAccountName\" }}\n"
        ))
        .expect("valid");
        assert_eq!(c.members.users.cloud(), "userPrincipalName");
        assert_eq!(c.members.groups.ad(), "sAMAccountName");
        // the short form still works
        let c = cfg(&format!(
            "{GOOD}\n[members]\nuser_match = \"immutable_id\"\n"
        ))
        .expect("valid");
        assert_eq!(c.members.users, JoinKey::immutable_id());
        assert_eq!(c.members.groups, JoinKey::sid());
        for (bad, key, says) in [
            (
                "users = { cloud = \"mail\" }",
                "members.users.ad",
                "required",
            ),
            (
                "users = { ad = \"mail\" }",
                "members.users.cloud",
                "required",
            ),
            (
                "users = { cloud = \"displayName\", ad = \"cn\" }",
                "members.users.cloud",
                "employeeId",
            ),
            (
                "users = { cloud = \"mail\", ad = \"mail;binary\" }",
                "members.users.ad",
                "not an AD attribute",
            ),
            (
                "groups = { cloud = \"employeeId\", ad = \"employeeID\" }",
                "members.groups.cloud",
                "group join",
            ),
            (
                "user_match = \"sid\"\nusers = { cloud = \"mail\", ad = \"mail\" }",
                "members.user_match",
                "not both",
            ),
        ] {
            let e = cfg(&format!("{GOOD}\n[members]\n{bad}\n"))
                .expect_err(bad)
                .to_string();
            assert!(
                e.contains(&format!("`{key}`"))
                    && e.contains(says)
                    && e.contains("/etc/writeback/writeback.toml"),
                "{bad}: {e}"
            );
        }
        // unknown fields of a key are parse errors naming them
        let e = cfg(&format!(
            "{GOOD}\n[members]\nusers = {{ cloud = \"mail\", ad = \"mail\", mode = 1 }}\n"
        ))
        .expect_err("unknown field")
        .to_string();
        assert!(e.contains("mode"), "{e}");
    }

    #[test]
    fn global_catalog_url_is_checked() {
        with_env();
        let gc =
            |url: &str| GOOD.replace("managed_ous", &format!("gc_url = \"{url}\"\nmanaged_ous"));
        let c = cfg(&gc("ldaps://gc.corp.example.test:3269")).expect("valid");
        assert_eq!(
            c.ad.gc_url.as_deref(),
            Some("ldaps://gc.corp.example.test:3269")
        );
        assert!(cfg(&gc("ldap://gc.corp.example.test:3268")).is_ok());
        for bad in [
            "https://gc:3269",
            "gc.corp.example.test",
            "ldaps://",
            "ldaps://:3269",
        ] {
            let e = cfg(&gc(bad)).expect_err(bad).to_string();
            assert!(e.contains("`ad.gc_url`"), "{bad}: {e}");
        }
    }

    #[test]
    fn national_cloud_endpoints() {
        with_env();
        let text = GOOD.replace("client_secret_env", "cloud = \"us-gov\"\nclient_secret_env");
        let c = cfg(&text).expect("valid");
        assert_eq!(c.graph.graph_url, "https://graph.microsoft.us/v1.0");
        assert!(c
            .graph
            .token_url
            .starts_with("https://login.microsoftonline.us/"));
        assert_eq!(c.graph.scope, "https://graph.microsoft.us/.default");
    }

    #[test]
    fn inline_secret_is_refused_naming_the_key() {
        with_env();
        let text = GOOD.replace(
            "client_secret_env = \"WB_TEST_SECRET_PRESENT\"",
            "client_secret = \"abc\"",
        );
        let e = cfg(&text).unwrap_err().to_string();
        assert!(e.contains("graph.client_secret"), "{e}");
        assert!(e.contains("inline"), "{e}");
    }

    #[test]
    fn missing_env_var_names_key_and_variable() {
        let text = GOOD.replace(
            "password_env = \"WB_TEST_SECRET_PRESENT\"",
            "password_env = \"WB_TEST_SECRET_ABSENT_XYZ\"",
        );
        with_env();
        let e = cfg(&text).unwrap_err().to_string();
        assert!(e.contains("ad.password_env"), "{e}");
        assert!(e.contains("WB_TEST_SECRET_ABSENT_XYZ"), "{e}");
    }

    #[test]
    fn unknown_key_is_reported_with_its_name() {
        with_env();
        let text = GOOD.replace("[state]", "[state]\nfrobnicate = 1");
        let e = cfg(&text).unwrap_err().to_string();
        assert!(e.contains("frobnicate"), "{e}");
        assert!(e.contains("/etc/writeback/writeback.toml"), "{e}");
    }

    #[test]
    fn plain_ldap_needs_explicit_consent() {
        with_env();
        let text = GOOD.replace("ldaps://dc1", "ldap://dc1");
        let e = cfg(&text).unwrap_err().to_string();
        assert!(
            e.contains("ad.url") && e.contains("allow_plain_ldap"),
            "{e}"
        );
        let ok = text.replace("managed_ous", "allow_plain_ldap = true\nmanaged_ous");
        assert!(cfg(&ok).is_ok());
        let tls = text.replace("managed_ous", "starttls = true\nmanaged_ous");
        assert!(cfg(&tls).is_ok());
    }

    #[test]
    fn several_dc_urls_in_order_and_not_with_url() {
        with_env();
        assert_eq!(
            cfg(GOOD).unwrap().ad.urls,
            ["ldaps://dc1.corp.example.test"]
        );
        let two = GOOD.replace(
            "url = \"ldaps://dc1.corp.example.test\"",
            "urls = [\"ldaps://dc2.corp.example.test\", \"ldaps://dc1.corp.example.test\"]",
        );
        assert_eq!(
            cfg(&two).unwrap().ad.urls,
            [
                "ldaps://dc2.corp.example.test",
                "ldaps://dc1.corp.example.test"
            ]
        );
        let both = two.replace("urls =", "url = \"ldaps://dc3\"\nurls =");
        let e = cfg(&both).unwrap_err().to_string();
        assert!(e.contains("ad.url") && e.contains("ad.urls"), "{e}");
        let none = GOOD.replace("url = \"ldaps://dc1.corp.example.test\"\n", "");
        let e = cfg(&none).unwrap_err().to_string();
        assert!(e.contains("ad.url"), "{e}");
        let empty = GOOD.replace("url = \"ldaps://dc1.corp.example.test\"", "urls = []");
        assert!(cfg(&empty).unwrap_err().to_string().contains("ad.urls"));
        let plain = two.replace("\"ldaps://dc1", "\"ldap://dc1");
        let e = cfg(&plain).unwrap_err().to_string();
        assert!(
            e.contains("ad.urls[1]") && e.contains("allow_plain_ldap"),
            "{e}"
        );
    }

    #[test]
    fn dcs_from_dns_with_optional_name_servers() {
        with_env();
        let url = "url = \"ldaps://dc1.corp.example.test\"";
        let pinned = "discover = \"Corp.Example.Test.\"\nca_file = \"corp-ca.pem\"";
        let d = GOOD.replace(url, pinned);
        let c = cfg(&d).unwrap();
        assert!(c.ad.urls.is_empty());
        let disc = c.ad.discover.unwrap();
        assert_eq!(disc.domain, "corp.example.test");
        assert!(disc.servers.is_empty());
        let with_ns = GOOD.replace(
            url,
            "discover = \"corp.example.test\"\nca_file = \"ca.pem\"\ndns_servers = [\"10.0.0.53\", \"127.0.0.1:5353\", \"[::1]:53\"]",
        );
        let servers = cfg(&with_ns).unwrap().ad.discover.unwrap().servers;
        let shown: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
        assert_eq!(shown, ["10.0.0.53:53", "127.0.0.1:5353", "[::1]:53"]);
        let both = GOOD.replace(url, &format!("{url}\ndiscover = \"corp.example.test\""));
        let e = cfg(&both).unwrap_err().to_string();
        assert!(e.contains("ad.discover") && e.contains("ad.url"), "{e}");
        let ns_alone = GOOD.replace(url, &format!("{url}\ndns_servers = [\"10.0.0.53\"]"));
        assert!(cfg(&ns_alone)
            .unwrap_err()
            .to_string()
            .contains("ad.dns_servers"));
        let bad_ns = GOOD.replace(
            url,
            "discover = \"corp.example.test\"\ndns_servers = [\"dns.corp\"]",
        );
        assert!(cfg(&bad_ns)
            .unwrap_err()
            .to_string()
            .contains("ad.dns_servers"));
        let bad_domain = GOOD.replace(url, "discover = \"corp example\"");
        assert!(cfg(&bad_domain)
            .unwrap_err()
            .to_string()
            .contains("ad.discover"));
    }

    #[test]
    fn secrets_read_from_the_environment_can_be_taken_out_of_it() {
        // Each test runs in a process of its own under nextest; a name of its own otherwise.
        std::env::set_var("WB_TEST_FORGET_ME", "pw");
        let text = GOOD.replace("WB_TEST_SECRET_PRESENT", "WB_TEST_FORGET_ME");
        let c = cfg(&text).unwrap();
        // The Graph secret and the AD password, both from that variable.
        assert_eq!(c.secret_env, ["WB_TEST_FORGET_ME", "WB_TEST_FORGET_ME"]);
        c.forget_secret_env();
        assert!(std::env::var("WB_TEST_FORGET_ME").is_err());
        assert_eq!(c.ad.password.expose_secret(), "pw");
    }

    #[test]
    fn a_secret_file_others_can_read_or_write_is_refused_naming_the_key() {
        use std::os::unix::fs::PermissionsExt;
        with_env();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ad-password");
        std::fs::write(&file, "pw\n").unwrap();
        let text = GOOD.replace(
            "password_env = \"WB_TEST_SECRET_PRESENT\"",
            &format!("password_file = \"{}\"", file.display()),
        );
        for (mode, ok) in [(0o600, true), (0o640, true), (0o644, false), (0o660, false)] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            match cfg(&text) {
                Ok(_) => assert!(ok, "{mode:o} accepted"),
                Err(e) => {
                    let e = e.to_string();
                    assert!(!ok, "{mode:o}: {e}");
                    assert!(
                        e.contains("ad.password_file") && e.contains(&format!("{mode:04o}")),
                        "{e}"
                    );
                }
            }
        }
    }

    #[test]
    fn discovery_needs_a_pinned_ca_or_kerberos_and_never_plain_ldap() {
        with_env();
        let url = "url = \"ldaps://dc1.corp.example.test\"";
        let unpinned = GOOD.replace(url, "discover = \"corp.example.test\"");
        let e = cfg(&unpinned).unwrap_err().to_string();
        assert!(e.contains("ad.discover") && e.contains("ad.ca_file"), "{e}");
        let plain = GOOD.replace(
            url,
            "discover = \"corp.example.test\"\nca_file = \"ca.pem\"\nallow_plain_ldap = true",
        );
        let e = cfg(&plain).unwrap_err().to_string();
        assert!(e.contains("ad.allow_plain_ldap"), "{e}");
        let allowed = GOOD.replace(
            url,
            "discover = \"corp.example.test\"\nca_file = \"ca.pem\"\ndiscover_allowed_domains = [\"DCs.Example.Net.\"]",
        );
        assert_eq!(
            cfg(&allowed).unwrap().ad.discover.unwrap().allowed_domains,
            ["dcs.example.net"]
        );
        let bad = allowed.replace("DCs.Example.Net.", "not a domain");
        let e = cfg(&bad).unwrap_err().to_string();
        assert!(e.contains("ad.discover_allowed_domains[0]"), "{e}");
        let alone = GOOD.replace(
            url,
            &format!("{url}\ndiscover_allowed_domains = [\"example.net\"]"),
        );
        let e = cfg(&alone).unwrap_err().to_string();
        assert!(e.contains("ad.discover_allowed_domains"), "{e}");
    }

    #[test]
    fn kerberos_needs_a_keytab_and_a_principal_and_no_password() {
        with_env();
        let dir = tempfile::tempdir().unwrap();
        let keytab = dir.path().join("svc.keytab");
        std::fs::write(&keytab, b"\x05\x02").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&keytab, std::fs::Permissions::from_mode(0o600)).unwrap();
        let simple = "bind_dn = \"CN=svc,DC=corp,DC=example,DC=test\"\npassword_env = \"WB_TEST_SECRET_PRESENT\"\n";
        assert!(GOOD.contains(simple));
        let krb = GOOD.replace(
            simple,
            &format!(
                "auth = \"kerberos\"\nprincipal = \"svc@CORP.EXAMPLE.TEST\"\nkeytab = \"{}\"\n",
                keytab.display()
            ),
        );
        if !crate::ad::kerberos::BUILT_IN {
            let e = cfg(&krb).unwrap_err().to_string();
            assert!(
                e.contains("ad.auth") && e.contains("--features kerberos"),
                "{e}"
            );
            return;
        }
        let c = cfg(&krb).unwrap();
        let k = c.ad.kerberos.unwrap();
        assert_eq!(k.principal, "svc@CORP.EXAMPLE.TEST");
        assert_eq!(k.keytab, keytab);
        assert!(c.ad.password.expose_secret().is_empty() && c.ad.bind_dn.is_empty());
        let with_password = krb.replace(
            "auth =",
            "password_env = \"WB_TEST_SECRET_PRESENT\"\nauth =",
        );
        assert!(cfg(&with_password)
            .unwrap_err()
            .to_string()
            .contains("ad.password_env"));
        let no_keytab = krb.replace(&format!("keytab = \"{}\"\n", keytab.display()), "");
        assert!(cfg(&no_keytab)
            .unwrap_err()
            .to_string()
            .contains("ad.keytab"));
        let missing = krb.replace("svc.keytab", "nope.keytab");
        assert!(cfg(&missing)
            .unwrap_err()
            .to_string()
            .contains("nope.keytab"));
        let no_realm = krb.replace("svc@CORP.EXAMPLE.TEST", "svc");
        assert!(cfg(&no_realm)
            .unwrap_err()
            .to_string()
            .contains("ad.principal"));
        let plain = krb
            .replace("ldaps://dc1", "ldap://dc1")
            .replace("managed_ous", "allow_plain_ldap = true\nmanaged_ous");
        let e = cfg(&plain).unwrap_err().to_string();
        assert!(e.contains("ad.auth") && e.contains("TLS"), "{e}");
        let starttls = krb
            .replace("ldaps://dc1", "ldap://dc1")
            .replace("managed_ous", "starttls = true\nmanaged_ous");
        assert!(cfg(&starttls).is_ok());
        let by_ip = krb.replace("ldaps://dc1.corp.example.test", "ldaps://10.0.0.1");
        let e = cfg(&by_ip).unwrap_err().to_string();
        assert!(e.contains("host name"), "{e}");
    }

    #[test]
    fn keytab_and_principal_belong_to_kerberos() {
        with_env();
        let stray = GOOD.replace("managed_ous", "principal = \"svc@CORP\"\nmanaged_ous");
        let e = cfg(&stray).unwrap_err().to_string();
        assert!(e.contains("ad.principal") && e.contains("kerberos"), "{e}");
        let no_dn = GOOD.replace("bind_dn = \"CN=svc,DC=corp,DC=example,DC=test\"\n", "");
        assert!(cfg(&no_dn).unwrap_err().to_string().contains("ad.bind_dn"));
    }

    #[test]
    fn safety_percent_and_quarantine_cap_are_checked() {
        with_env();
        let c = cfg(GOOD).unwrap();
        assert_eq!(c.delete_threshold_percent, None);
        assert_eq!(c.quarantine_max_backoff_secs, 3600);
        let ok = format!(
            "{GOOD}\n[safety]\ndelete_threshold_percent = 5.5\nquarantine_max_backoff_secs = 600\n"
        );
        let c = cfg(&ok).unwrap();
        assert_eq!(c.delete_threshold_percent, Some(5.5));
        assert_eq!(c.quarantine_max_backoff_secs, 600);
        for bad in [
            "delete_threshold_percent = 0",
            "delete_threshold_percent = 150",
            "quarantine_max_backoff_secs = 0",
        ] {
            let e = cfg(&format!("{GOOD}\n[safety]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            let key = bad.split(' ').next().unwrap_or_default();
            assert!(e.contains(&format!("safety.{key}")), "{bad}: {e}");
        }
    }

    #[test]
    fn managed_ous_required_and_valid() {
        with_env();
        let text = GOOD.replace(
            "managed_ous = [\"OU=Cloud Groups,DC=corp,DC=example,DC=test\"]",
            "managed_ous = []",
        );
        let e = cfg(&text).unwrap_err().to_string();
        assert!(e.contains("ad.managed_ous"), "{e}");
        let text = GOOD.replace(
            "managed_ous = [\"OU=Cloud Groups,DC=corp,DC=example,DC=test\"]",
            "managed_ous = [\"not a dn\"]",
        );
        let e = cfg(&text).unwrap_err().to_string();
        assert!(e.contains("ad.managed_ous[0]"), "{e}");
    }

    #[test]
    fn daemon_settings_have_defaults_and_limits() {
        with_env();
        let c = cfg(GOOD).expect("valid");
        assert_eq!(c.daemon.poll_interval, Duration::from_secs(5));
        assert_eq!(c.daemon.reconcile_interval, Some(Duration::from_secs(3600)));
        let fast = format!("{GOOD}\n[daemon]\npoll_interval_secs = 1\nreconcile_interval_secs = 0\nwatch = \"poll\"\n");
        let c = cfg(&fast).expect("valid");
        assert_eq!(c.daemon.poll_interval, Duration::from_secs(1));
        assert_eq!(c.daemon.reconcile_interval, None);
        assert_eq!(c.daemon.watch, WatchMode::Poll);
        let too_fast = format!("{GOOD}\n[daemon]\npoll_interval_secs = 0.2\n");
        let e = cfg(&too_fast).unwrap_err().to_string();
        assert!(e.contains("daemon.poll_interval_secs"), "{e}");
    }

    #[test]
    fn the_console_is_off_by_default_needs_listen_and_a_credential_off_loopback() {
        with_env();
        let c = cfg(GOOD).expect("valid");
        assert!(!c.console.enabled && c.console.credential.is_none());
        let listen = |addr: &str, console: &str| {
            cfg(&format!(
                "{GOOD}\n[daemon]\nlisten = \"{addr}\"\n[console]\n{console}\n"
            ))
        };
        let c = listen("127.0.0.1:9464", "enabled = true").expect("loopback, no credential");
        assert!(c.console.enabled && c.console.credential.is_none());
        let c = listen(
            "10.0.0.5:9464",
            "enabled = true\ncredential_env = \"WB_TEST_SECRET_PRESENT\"",
        )
        .expect("another address with a credential");
        assert_eq!(
            c.console
                .credential
                .as_ref()
                .map(|s| s.expose_secret().to_string()),
            Some("s3cret".to_string())
        );
        let e = listen("10.0.0.5:9464", "enabled = true")
            .expect_err("another address without a credential")
            .to_string();
        assert!(
            e.contains("console.credential_file") && e.contains("10.0.0.5:9464"),
            "{e}"
        );
        let e = cfg(&format!("{GOOD}\n[console]\nenabled = true\n"))
            .expect_err("no listen")
            .to_string();
        assert!(e.contains("console.enabled") && e.contains("daemon"), "{e}");
        let e = listen("127.0.0.1:9464", "enabled = true\ncredential = \"x\"")
            .expect_err("inline")
            .to_string();
        assert!(
            e.contains("console.credential") && e.contains("inline"),
            "{e}"
        );
        let e = listen(
            "127.0.0.1:9464",
            "enabled = true\ncredential_file = \"/nonexistent/console-secret\"",
        )
        .expect_err("missing file")
        .to_string();
        assert!(e.contains("console.credential_file"), "{e}");
    }

    #[test]
    fn metrics_listen_is_off_by_default_and_checked() {
        with_env();
        let c = cfg(GOOD).expect("valid");
        assert_eq!(c.daemon.listen, None);
        assert_eq!(c.daemon.ready_within_polls, 3);
        let on = format!("{GOOD}\n[daemon]\nlisten = \"127.0.0.1:9464\"\nready_within_polls = 5\n");
        let c = cfg(&on).expect("valid");
        assert_eq!(
            c.daemon.listen,
            Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9464)))
        );
        assert_eq!(c.daemon.ready_within_polls, 5);
        let v6 = format!("{GOOD}\n[daemon]\nlisten = \"[::1]:9464\"\n");
        assert!(cfg(&v6)
            .expect("valid")
            .daemon
            .listen
            .is_some_and(|a| a.is_ipv6()));
        for bad in [
            "listen = \"localhost:9464\"",
            "listen = \"127.0.0.1\"",
            "listen = \"127.0.0.1:99999\"",
            "listen = \"127.0.0.1:0\"",
            "listen = \"\"",
        ] {
            let e = cfg(&format!("{GOOD}\n[daemon]\n{bad}\n"))
                .expect_err(bad)
                .to_string();
            assert!(
                e.contains("daemon.listen") && e.contains("/etc/writeback/writeback.toml"),
                "{bad}: {e}"
            );
        }
        let e = cfg(&format!("{GOOD}\n[daemon]\nready_within_polls = 0\n"))
            .expect_err("zero polls")
            .to_string();
        assert!(e.contains("daemon.ready_within_polls"), "{e}");
        // A number is not an address: refused by the parser, naming the key.
        let e = cfg(&format!("{GOOD}\n[daemon]\nlisten = 9464\n"))
            .expect_err("a number")
            .to_string();
        assert!(e.contains("listen"), "{e}");
    }

    #[test]
    fn script_secrets_come_from_env_file_or_credential_and_are_named_when_wrong() {
        use std::os::unix::fs::PermissionsExt;
        with_env();
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ticket.key");
        std::fs::write(&file, "from-file\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).expect("mkdir");
        std::fs::write(creds.join("hook"), "from-credential").expect("write");
        std::env::set_var("CREDENTIALS_DIRECTORY", &creds);
        let text = format!(
            "{GOOD}\n[rules.secrets]\napi = {{ env = \"WB_TEST_SECRET_PRESENT\" }}\nticket = {{ file = \"{}\" }}\nhook = {{ credential = \"hook\" }}\n",
            file.display()
        );
        let c = cfg(&text).expect("valid");
        let got: Vec<(&str, &str)> = c
            .rules
            .secrets
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose_secret()))
            .collect();
        assert_eq!(
            got,
            [
                ("api", "s3cret"),
                ("hook", "from-credential"),
                ("ticket", "from-file")
            ]
        );
        assert!(
            !format!("{c:?}").contains("from-file"),
            "secrets stay out of Debug"
        );
        // Offline (writeback check): names only.
        let offline = Config::parse_with(Path::new("/etc/w.toml"), &text, false).expect("offline");
        assert!(offline.rules.secrets.contains_key("hook"));

        for (bad, key, why) in [
            (
                "x = { env = \"WB_TEST_NOT_SET_ANYWHERE\" }",
                "rules.secrets.x",
                "WB_TEST_NOT_SET_ANYWHERE is not set",
            ),
            (
                "x = { env = \"A\", credential = \"b\" }",
                "rules.secrets.x",
                "exactly one of env, file and credential",
            ),
            (
                "x = { credential = \"../etc/passwd\" }",
                "rules.secrets.x",
                "no '/'",
            ),
            (
                "x = { credential = \"missing\" }",
                "rules.secrets.x",
                "missing",
            ),
            (
                "\"a b\" = { env = \"WB_TEST_SECRET_PRESENT\" }",
                "rules.secrets.a b",
                "letters, digits",
            ),
            ("x = { value = \"inline\" }", "value", "unknown field"),
        ] {
            let e = cfg(&format!("{GOOD}\n[rules.secrets]\n{bad}\n"))
                .expect_err(bad)
                .to_string();
            assert!(e.contains(key) && e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_secret_looking_setting_gets_a_warning_naming_it() {
        with_env();
        let text = GOOD.replace(
            "[rules.settings]\n",
            "[rules.settings]\nticket_api_token = \"abc\"\nmax_size = 5\nm365_token_count = 3\n",
        );
        let c = cfg(&text).expect("valid");
        let w = c.rules.secret_looking_settings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("rules.settings.ticket_api_token") && w[0].contains("[rules.secrets]"),
            "{w:?}"
        );
    }

    #[test]
    fn trigger_settings_are_read_and_checked() {
        with_env();
        let text = GOOD.replace(
            "folder = \"rules\"",
            "folder = \"rules\"\ntrigger_timeout_secs = 5\nmax_triggers_per_cycle = 3",
        );
        let c = cfg(&text).expect("valid");
        assert_eq!(c.rules.trigger_timeout, Duration::from_secs(5));
        assert_eq!(c.rules.max_triggers_per_cycle, 3);
        let text = GOOD.replace(
            "folder = \"rules\"",
            "folder = \"rules\"\ntrigger_timeout_secs = 0",
        );
        let e = cfg(&text).unwrap_err().to_string();
        assert!(e.contains("rules.trigger_timeout_secs"), "{e}");
    }

    #[test]
    fn offline_load_needs_no_secrets() {
        let text = GOOD.replace("WB_TEST_SECRET_PRESENT", "WB_TEST_SECRET_NEVER_SET");
        let c = Config::parse_with(Path::new("/x/w.toml"), &text, false).expect("offline");
        assert_eq!(c.ad.password.expose_secret(), "");
        assert!(Config::parse_with(Path::new("/x/w.toml"), &text, true).is_err());
    }

    #[test]
    fn secret_and_certificate_together_refused() {
        with_env();
        let text = GOOD.replace(
            "client_secret_env",
            "certificate_file = \"a.pem\"\nprivate_key_file = \"a.key\"\nclient_secret_env",
        );
        let e = cfg(&text).unwrap_err().to_string();
        assert!(e.contains("not both"), "{e}");
    }

    #[test]
    fn audit_retention_has_a_default_and_is_at_least_a_day() {
        with_env();
        assert_eq!(cfg(GOOD).expect("valid").audit_retention_days, 365);
        let text = GOOD.replace(
            "path = \"state.db\"",
            "path = \"state.db\"\naudit_retention_days = 30",
        );
        assert_eq!(cfg(&text).expect("valid").audit_retention_days, 30);
        let text = GOOD.replace(
            "path = \"state.db\"",
            "path = \"state.db\"\naudit_retention_days = 0",
        );
        let e = cfg(&text).unwrap_err().to_string();
        assert!(e.contains("state.audit_retention_days"), "{e}");
        let text = GOOD.replace(
            "path = \"state.db\"",
            "path = \"state.db\"\naudit_retention_days = -1",
        );
        assert!(cfg(&text).is_err());
    }
}
