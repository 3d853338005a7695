//! An instance joining a shared state: everything is checked before anything is written, and
//! each refusal names the setting to look at.
//!
//! Checked in order: the server answers at `state.postgres.url`, trusts nobody but
//! `state.postgres.ca_file`'s CA, takes the user and password; the database holds no newer
//! schema than this build's; no running instance, writer or standby, has this one's name; and
//! the instance writing now runs the same rules (the rule files' content and
//! `[rules.settings]`) as this one. Then the store is open, fenced with epoch 0 (which no
//! lease ever has: nothing is written until this instance takes the lease), and the keeper
//! started.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::pg::{self, HaError, OtherProcess, PgLease};
use super::Keeper;
use crate::config::{Config, PostgresConfig};
use crate::state::pg::PgStore;
use crate::state::StateError;

/// `meta` key: the writer's name and rules hash (see [`rules_hash`]), written when it takes
/// the lease and when its rules change.
pub const RULES_KEY: &str = "ha.rules";

/// `meta` key prefix of each instance's status note (`daemon@<instance>`).
pub const NOTE_PREFIX: &str = "daemon@";

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("state.postgres.url: {0}")]
    Unreachable(#[source] HaError),
    #[error("state.postgres.ca_file ({}): {source}", path.display())]
    Certificate {
        path: PathBuf,
        #[source]
        source: HaError,
    },
    #[error("state.postgres.password: {0}")]
    Password(#[source] HaError),
    #[error("state.postgres: {0}")]
    State(#[from] StateError),
    #[error("state.postgres: the lease: {0}")]
    Lease(#[source] HaError),
    #[error("state.postgres.instance: another running instance is named {0:?} (it is still renewing the lease or its presence in the database): give each host its own name")]
    SameName(String),
    #[error("state.postgres: instance {holder} writes to this database with other rules (hash {theirs}) than this instance's (hash {ours}): deploy the same rule files and [rules.settings] on every instance, or stop {holder} first")]
    OtherRules {
        holder: String,
        theirs: String,
        ours: String,
    },
}

/// The writer's rules as recorded under [`RULES_KEY`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WriterRules {
    pub instance: String,
    pub hash: String,
}

/// An instance that joined: its store (writes fenced until it takes the lease) and the
/// keeper that takes and holds the lease for it.
pub struct Joined {
    pub store: PgStore,
    pub keeper: Keeper,
    /// This instance's [`rules_hash`].
    pub rules: String,
}

/// Connects, checks and starts holding the lease (see the module's doc).
pub async fn join(config: &Config, pg: &PostgresConfig) -> Result<Joined, JoinError> {
    let store = target_store(pg).await?;
    // The lease is one for every target: in the `[ad]` target's schema.
    let home = pg.settings.home();
    let lease = PgLease::open(
        Arc::new(connect_to(pg, &home).await?),
        pg.instance.clone(),
        pg.times,
    )
    .await
    .map_err(JoinError::Lease)?;
    let ours = rules_hash(config);
    // A writer or a standby running under this name stamps its presence at each turn of its
    // keeper: a process killed stamps no more, one stopped cleanly took its stamp away.
    let token = uuid::Uuid::new_v4().to_string();
    let turn = pg.times.renew_every.max(pg.standby_poll);
    // Then the name is claimed in one statement: of processes starting together under one
    // name, one goes on.
    let claimed = match lease
        .other_process(&token, turn + turn / 2)
        .await
        .map_err(JoinError::Lease)?
    {
        OtherProcess::Running => false,
        OtherProcess::None { stale } => lease
            .claim_presence(&token, stale.as_deref())
            .await
            .map_err(JoinError::Lease)?,
    };
    if !claimed {
        return Err(JoinError::SameName(pg.instance.clone()));
    }
    if let Some(row) = lease.row().await.map_err(JoinError::Lease)? {
        // This name holds the lease: this instance's previous process, killed (its lease runs
        // out, nobody renews it), or another host configured with the same name. Two live
        // processes under one name would be told apart by nothing in the status, the notes
        // or the audit trail.
        if row.live && row.holder == pg.instance {
            let wait = pg.times.renew_every + pg.times.renew_every / 2;
            if lease
                .renewed_by_holder(wait)
                .await
                .map_err(JoinError::Lease)?
            {
                // The name is given back: this process does not run.
                let _ = lease.clear_presence(&token).await;
                return Err(JoinError::SameName(pg.instance.clone()));
            }
        }
        let theirs = store
            .meta(RULES_KEY)?
            .and_then(|t| serde_json::from_str::<WriterRules>(&t).ok());
        if let Some(w) = theirs {
            if row.live && row.holder != pg.instance && w.instance == row.holder && w.hash != ours {
                let _ = lease.clear_presence(&token).await;
                return Err(JoinError::OtherRules {
                    holder: row.holder,
                    theirs: w.hash,
                    ours,
                });
            }
        }
    }
    drop(lease);
    let keeper = Keeper::start(home, pg.instance.clone(), token, pg.times, pg.standby_poll);
    Ok(Joined {
        store,
        keeper,
        rules: ours,
    })
}

/// The state of the target `pg` belongs to, opened for an instance sharing it: its schema
/// created or checked, writes fenced with epoch 0 (which no lease ever has) until the caller
/// fences them with its own.
pub async fn target_store(pg: &PostgresConfig) -> Result<PgStore, JoinError> {
    let client = connect(pg).await?;
    let mut store = PgStore::open(client, None)?;
    store.set_fence(Some((pg.instance.clone(), 0)), None);
    store.share(pg.settings.clone(), pg.times.lease)?;
    Ok(store)
}

/// A connection, its failure named by the setting to fix.
pub async fn connect(pg: &PostgresConfig) -> Result<tokio_postgres::Client, JoinError> {
    connect_to(pg, &pg.settings).await
}

/// [`connect`] with other settings of the same database (its `[ad]` target's schema).
async fn connect_to(
    pg: &PostgresConfig,
    settings: &pg::PgSettings,
) -> Result<tokio_postgres::Client, JoinError> {
    pg::connect(settings).await.map_err(|e| match e {
        HaError::Password { .. } => JoinError::Password(e),
        HaError::Certificate { .. } | HaError::CaFile { .. } => JoinError::Certificate {
            path: pg.settings.ca_file.clone(),
            source: e,
        },
        _ => JoinError::Unreachable(e),
    })
}

/// What makes two instances decide alike: the rule files (by their path under their folder,
/// so two hosts may keep them in different places) and `[rules.settings]`.
pub fn rules_hash(config: &Config) -> String {
    let roots = crate::setup::rule_roots(config);
    let files = crate::watch::fingerprint(&roots);
    let mut relative = BTreeMap::new();
    for (path, hash) in &files {
        let (i, rel) = roots
            .iter()
            .enumerate()
            .find_map(|(i, r)| path.strip_prefix(r).ok().map(|rel| (i, rel)))
            .unwrap_or((usize::MAX, path.as_path()));
        relative.insert((i, rel.to_string_lossy().into_owned()), hash);
    }
    let mut h = Sha256::new();
    for ((root, path), hash) in relative {
        h.update(root.to_string().as_bytes());
        h.update(b"\0");
        h.update(path.as_bytes());
        h.update(b"\0");
        h.update(hash.as_bytes());
        h.update(b"\n");
    }
    // Sorted maps: the same settings give the same text.
    h.update(serde_json::to_string(&config.rules.settings).unwrap_or_default());
    // Each other target's settings (its own overrides merged in): a config without targets
    // hashes as it always did.
    for t in &config.more_targets {
        h.update(b"\0target\0");
        h.update(t.target.as_bytes());
        h.update(b"\0");
        h.update(serde_json::to_string(&t.rules.settings).unwrap_or_default());
    }
    crate::state::short_id(h)
}
