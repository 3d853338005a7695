//! What a cycle is asked to do: the options `sync`, `plan`, `adopt` and the daemon set.

/// How a cycle runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncOptions {
    /// Re-read the whole tenant instead of the changes since the last deltaLink.
    pub reread_cloud: bool,
    /// Compare every owned AD object, not only the groups whose desired state changed: finds
    /// hand edits (drift) and orphans.
    pub compare_all: bool,
    /// Compute the plan, write nothing to AD.
    pub dry_run: bool,
    /// Apply even when the plan deletes more objects than the configured threshold.
    pub allow_deletes: bool,
    /// Take over objects in the managed OUs that carry the anchor of an in-scope group of this
    /// tenant but that Writeback has no record of (groups written by Connect or Cloud Sync, or
    /// a state file rebuilt from scratch).
    pub adopt: bool,
}
