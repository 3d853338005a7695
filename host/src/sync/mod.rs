//! The sync engine: desired state from the rules, a pure plan against owned AD objects, apply.
//!
//! `job` runs one cycle; `desired` and `plan` are pure (data in, data out) so they can be tested
//! alone and run in a dry run; `apply` is the only part that writes to AD.

pub mod actual;
pub mod alerts;
pub mod apply;
pub mod desired;
pub mod devices;
pub mod directory;
pub mod evaluate;
pub mod gate;
pub mod heads;
pub mod job;
pub mod leave;
pub mod member_delta;
pub mod member_writes;
pub mod options;
pub mod outcome;
pub mod owners;
pub mod ownership;
pub mod plan;
pub mod progress;
pub mod record;
pub mod release;
pub mod removals;
pub mod report;
pub mod resolve;
pub mod select;
pub mod state;
pub mod state_pg;
pub mod stream;
pub mod triggers;
pub mod types;

#[cfg(test)]
mod cycle_tests;
#[cfg(test)]
pub(crate) mod fakes;

pub use job::{run, SyncContext};
pub use options::SyncOptions;
pub use outcome::SyncReport;

/// Why a cycle could not run to its end. Per-object problems are not errors: they are in the
/// report (refused, failed, unresolved members).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("Microsoft Graph: {0}")]
    Graph(#[from] crate::graph::GraphError),
    #[error("Active Directory: {0}")]
    Ad(#[from] crate::ad::AdError),
    /// The connection to the domain controller broke and the cycle stopped: named, since with
    /// several DCs the operator must know which one.
    #[error("Active Directory {url}: {source}")]
    AdConnection {
        url: String,
        #[source]
        source: crate::ad::AdError,
    },
    #[error("state store: {0}")]
    State(#[from] crate::state::StateError),
    #[error("Global Catalog {url}: {source}")]
    GlobalCatalog {
        url: String,
        #[source]
        source: crate::ad::AdError,
    },
    /// A join key the directory cannot answer (checked when members are first looked up).
    #[error("config `{key}`: {message}")]
    Join { key: String, message: String },
}
