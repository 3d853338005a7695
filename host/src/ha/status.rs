//! `writeback status` on a shared state: who holds the lease, what this instance is, and what
//! each instance last said of itself. Reads only.

use std::collections::BTreeMap;

use serde::Serialize;

use super::instance::{connect, JoinError, NOTE_PREFIX};
use crate::config::PostgresConfig;
use crate::inspect::status::DaemonNote;

/// The lease as the database holds it, and when it expires.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseView {
    pub holder: String,
    pub epoch: i64,
    /// Its expiry is ahead on the database's clock: `holder` writes.
    pub live: bool,
    /// Seconds until it expires (negative: expired that long ago).
    pub expires_in_secs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SharedStatus {
    pub database: String,
    /// `None`: no instance ever took it.
    pub lease: Option<LeaseView>,
    /// This host's instance (the config's `state.postgres.instance`).
    pub instance: String,
    /// `writer` or `standby`.
    pub role: String,
    /// Each instance's last status note, by name.
    pub instances: BTreeMap<String, DaemonNote>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error("state.postgres: reading the status: {0}")]
    Sql(#[from] tokio_postgres::Error),
}

pub async fn gather(pg: &PostgresConfig) -> Result<SharedStatus, StatusError> {
    let c = connect(pg).await?;
    let has = |table: &'static str| {
        let c = &c;
        async move {
            let row = c
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
                .await?;
            row.try_get::<_, bool>(0)
        }
    };
    let lease = match has("writeback_lease").await? {
        false => None,
        true => c
            .query_opt(
                "SELECT holder, epoch, expires_at > now(),
                        EXTRACT(EPOCH FROM expires_at - now())::float8
                 FROM writeback_lease WHERE name = 'writer'",
                &[],
            )
            .await?
            .map(|r| -> Result<LeaseView, tokio_postgres::Error> {
                Ok(LeaseView {
                    holder: r.try_get(0)?,
                    epoch: r.try_get(1)?,
                    live: r.try_get(2)?,
                    expires_in_secs: r.try_get(3)?,
                })
            })
            .transpose()?,
    };
    let mut instances = BTreeMap::new();
    if has("meta").await? {
        let rows = c
            .query(
                "SELECT key, value FROM meta WHERE key LIKE $1 ORDER BY key",
                &[&format!("{NOTE_PREFIX}%")],
            )
            .await?;
        for r in rows {
            let key: String = r.try_get(0)?;
            let value: String = r.try_get(1)?;
            // A note this build cannot read is left out rather than failing the status.
            if let Ok(note) = serde_json::from_str::<DaemonNote>(&value) {
                let name = key.trim_start_matches(NOTE_PREFIX).to_string();
                instances.insert(name, note);
            }
        }
    }
    let writer = lease
        .as_ref()
        .is_some_and(|l| l.live && l.holder == pg.instance);
    Ok(SharedStatus {
        database: format!(
            "{}@{}:{}/{}",
            pg.settings.user, pg.settings.host, pg.settings.port, pg.settings.database
        ),
        lease,
        instance: pg.instance.clone(),
        role: if writer { "writer" } else { "standby" }.to_string(),
        instances,
    })
}

/// The status as text.
pub fn render(s: &SharedStatus) -> String {
    let mut out = format!("state: PostgreSQL {} (shared)\n", s.database);
    match &s.lease {
        None => out.push_str("lease: never taken (no instance has written yet)\n"),
        Some(l) if l.live => out.push_str(&format!(
            "lease: held by {} (epoch {}, renewed within the next {:.1} s or lost)\n",
            l.holder, l.epoch, l.expires_in_secs
        )),
        Some(l) => out.push_str(&format!(
            "lease: free (last held by {}, epoch {}, expired {:.1} s ago): no instance writes\n",
            l.holder, l.epoch, -l.expires_in_secs
        )),
    }
    out.push_str(&format!("this instance ({}): {}\n", s.instance, s.role));
    if !s.instances.is_empty() {
        out.push_str("instances:\n");
        for (name, n) in &s.instances {
            let state = match (&n.stopped_at, &n.role) {
                (Some(at), _) => format!("stopped at {at}"),
                (None, Some(role)) => role.clone(),
                (None, None) => "running".to_string(),
            };
            out.push_str(&format!(
                "  {name}: pid {}, started {}, {state}\n",
                n.pid, n.started_at
            ));
        }
    }
    out
}
