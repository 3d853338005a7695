//! `[state.postgres]`: the state on a shared PostgreSQL database, for several instances of
//! which one writes at a time (see `crate::ha`).
//!
//! ```toml
//! [state.postgres]
//! url = "postgresql://writeback@db.corp.example.com:5432/writeback"
//! password_env = "WRITEBACK_PG_PASSWORD"    # or password_file
//! ca_file = "/etc/writeback/pg-ca.pem"      # the CA that signed the server's certificate
//! instance = "wb-host-1"                    # default: the host name
//! lease_secs = 10
//! standby_poll_secs = 2
//! ```
//!
//! The URL names the server, database and user only: a password in it is refused (secrets
//! never sit in the file). TLS is always on, with the server's certificate and name checked.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Validator};
use crate::ha::{LeaseTimes, PgSettings};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPostgres {
    /// Optional here so that a missing URL is refused naming `state.postgres.url`.
    url: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    instance: Option<String>,
    #[serde(default = "default_lease_secs")]
    lease_secs: u64,
    #[serde(default = "default_standby_poll_secs")]
    standby_poll_secs: u64,
    #[serde(default = "default_connect_timeout_secs")]
    connect_timeout_secs: u64,
}

fn default_lease_secs() -> u64 {
    10
}

fn default_standby_poll_secs() -> u64 {
    2
}

fn default_connect_timeout_secs() -> u64 {
    5
}

/// The state's database and this instance's part in sharing it.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub settings: PgSettings,
    /// This instance's name in the lease and the audit trail (unique among the instances).
    pub instance: String,
    pub times: LeaseTimes,
    /// How often a standby tries to take the lease over.
    pub standby_poll: Duration,
}

/// Validates `[state.postgres]` (`resolve` makes a path relative to the config file's folder).
pub(super) fn section(
    v: &Validator,
    raw: RawPostgres,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<PostgresConfig, ConfigError> {
    let text = raw.url.as_deref().ok_or_else(|| {
        v.invalid(
            "state.postgres.url",
            "required: the database, e.g. \"postgresql://writeback@db.example.com:5432/writeback\"",
        )
    })?;
    let url = tokio_postgres::Config::from_str(text).map_err(|e| {
        v.invalid(
            "state.postgres.url",
            &format!("not a PostgreSQL URL ({e}); e.g. \"postgresql://writeback@db.example.com:5432/writeback\""),
        )
    })?;
    if url.get_password().is_some() {
        return Err(v.invalid(
            "state.postgres.url",
            "secrets are not accepted inline: take the password out of the URL and use password_env or password_file",
        ));
    }
    let host = match url.get_hosts() {
        [tokio_postgres::config::Host::Tcp(h)] => h.clone(),
        [] => return Err(v.invalid("state.postgres.url", "names no host")),
        [_] => {
            return Err(v.invalid(
                "state.postgres.url",
                "a Unix socket has no TLS to verify: name the server by host name",
            ))
        }
        _ => {
            return Err(v.invalid(
                "state.postgres.url",
                "one host only (PostgreSQL's own failover belongs in front of it: Patroni, a managed service)",
            ))
        }
    };
    let port = match url.get_ports() {
        [] => 5432,
        [p] => *p,
        _ => return Err(v.invalid("state.postgres.url", "one port only")),
    };
    let user = url
        .get_user()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            v.invalid(
                "state.postgres.url",
                "names no user, e.g. \"postgresql://writeback@db.example.com/writeback\"",
            )
        })?
        .to_string();
    let database = url
        .get_dbname()
        .filter(|d| !d.is_empty())
        .ok_or_else(|| {
            v.invalid(
                "state.postgres.url",
                "names no database, e.g. \"postgresql://writeback@db.example.com/writeback\"",
            )
        })?
        .to_string();
    let password = v.secret(
        "state.postgres.password",
        raw.password_env.as_deref(),
        raw.password_file.as_deref().map(resolve).as_deref(),
    )?;
    let ca_file = resolve(raw.ca_file.as_deref().ok_or_else(|| {
        v.invalid(
            "state.postgres.ca_file",
            "required: the CA that signed the server's certificate (the connection is always TLS, verified)",
        )
    })?);
    if raw.lease_secs < 3 {
        return Err(v.invalid(
            "state.postgres.lease_secs",
            "must be at least 3 (renewed every third of it)",
        ));
    }
    if raw.lease_secs > 600 {
        return Err(v.invalid(
            "state.postgres.lease_secs",
            "must be at most 600 (a takeover waits for it)",
        ));
    }
    if raw.standby_poll_secs == 0 || raw.standby_poll_secs > raw.lease_secs {
        return Err(v.invalid(
            "state.postgres.standby_poll_secs",
            "must be at least 1 and at most lease_secs",
        ));
    }
    if raw.connect_timeout_secs == 0 {
        return Err(v.invalid("state.postgres.connect_timeout_secs", "must be at least 1"));
    }
    let instance = match raw.instance {
        Some(name) => name,
        None => host_name().ok_or_else(|| {
            v.invalid(
                "state.postgres.instance",
                "the host name cannot be read: name this instance",
            )
        })?,
    };
    let instance_ok = !instance.is_empty()
        && instance.len() <= 64
        && instance
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !instance_ok {
        return Err(v.invalid(
            "state.postgres.instance",
            &format!("{instance:?}: 1 to 64 letters, digits, '-', '_' and '.'"),
        ));
    }
    Ok(PostgresConfig {
        settings: PgSettings {
            host,
            port,
            database,
            user,
            password: secrecy::SecretString::from(password),
            ca_file,
            connect_timeout: Duration::from_secs(raw.connect_timeout_secs),
            schema: None,
        },
        instance,
        times: LeaseTimes::new(Duration::from_secs(raw.lease_secs)),
        standby_poll: Duration::from_secs(raw.standby_poll_secs),
    })
}

/// The host name (the instance's default name).
fn host_name() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = text.trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use std::path::Path;

    const BASE: &str = r#"
[graph]
tenant_id = "00000000-0000-0000-0000-000000000000"
client_id = "11111111-1111-1111-1111-111111111111"
client_secret_env = "PATH"

[ad]
url = "ldaps://dc1.corp.example.com"
bind_dn = "CN=svc,DC=corp,DC=example,DC=com"
password_env = "PATH"
managed_ous = ["OU=Groups,DC=corp,DC=example,DC=com"]

[rules]
folder = "scripts"

[state]
path = "state.db"
"#;

    fn with(section: &str) -> Result<Config, String> {
        Config::parse(
            Path::new("/etc/writeback/writeback.toml"),
            &format!("{BASE}\n[state.postgres]\n{section}"),
        )
        .map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"url = "postgresql://writeback@db.corp.example.com:6432/wb"
password_env = "PATH"
ca_file = "pg-ca.pem"
instance = "wb-1""#;

    #[test]
    fn a_good_section_gives_the_settings_with_paths_beside_the_config() {
        let c = with(GOOD).unwrap_or_else(|e| panic!("{e}"));
        let pg = c.postgres.unwrap_or_else(|| panic!("no postgres"));
        assert_eq!(pg.settings.host, "db.corp.example.com");
        assert_eq!(pg.settings.port, 6432);
        assert_eq!(pg.settings.database, "wb");
        assert_eq!(pg.settings.user, "writeback");
        assert_eq!(
            pg.settings.ca_file,
            Path::new("/etc/writeback/pg-ca.pem").to_path_buf()
        );
        assert_eq!(pg.instance, "wb-1");
        assert_eq!(pg.times.lease.as_secs(), 10);
        assert_eq!(pg.standby_poll.as_secs(), 2);
    }

    #[test]
    fn bad_sections_are_refused_naming_the_key() {
        for (section, key, words) in [
            (
                GOOD.replace(
                    "postgresql://writeback@db.corp.example.com:6432/wb",
                    "nonsense:://",
                ),
                "state.postgres.url",
                "not a PostgreSQL URL",
            ),
            (
                GOOD.replace("writeback@", "writeback:hunter2@"),
                "state.postgres.url",
                "secrets are not accepted inline",
            ),
            (
                GOOD.replace("writeback@", ""),
                "state.postgres.url",
                "names no user",
            ),
            (
                GOOD.replace(":6432/wb", ":6432"),
                "state.postgres.url",
                "names no database",
            ),
            (
                GOOD.replace("password_env = \"PATH\"\n", ""),
                "state.postgres.password",
                "set the _env or the _file form",
            ),
            (
                GOOD.replace("\"PATH\"", "\"WRITEBACK_SURELY_NOT_SET_PG\""),
                "state.postgres.password_env",
                "is not set",
            ),
            (
                GOOD.replace("ca_file = \"pg-ca.pem\"\n", ""),
                "state.postgres.ca_file",
                "required",
            ),
            (
                format!("{GOOD}\nlease_secs = 1"),
                "state.postgres.lease_secs",
                "at least 3",
            ),
            (
                format!("{GOOD}\nstandby_poll_secs = 30"),
                "state.postgres.standby_poll_secs",
                "at most lease_secs",
            ),
            (
                GOOD.replace("wb-1", "wb 1"),
                "state.postgres.instance",
                "letters, digits",
            ),
        ] {
            let e = match with(&section) {
                Ok(_) => panic!("accepted: {section}"),
                Err(e) => e,
            };
            assert!(e.contains(key) && e.contains(words), "{section}\n=> {e}");
            assert!(!e.contains("hunter2"), "the password is not repeated: {e}");
        }
    }

    #[test]
    fn without_the_section_the_state_is_sqlite() {
        let c = Config::parse(Path::new("/etc/writeback/writeback.toml"), BASE)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(c.postgres.is_none());
    }
}
