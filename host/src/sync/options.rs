//! What a cycle is asked to do: the options `sync`, `plan`, `adopt` and the daemon set.

use crate::state::RunMode;

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

impl SyncOptions {
    /// How the run history names a run with these options.
    pub fn mode(&self) -> RunMode {
        match (
            self.adopt,
            self.dry_run,
            self.reread_cloud,
            self.compare_all,
        ) {
            (true, true, _, _) => RunMode::PlanAdopt,
            (true, false, _, _) => RunMode::Adopt,
            (false, true, true, _) => RunMode::PlanFull,
            (false, true, false, true) => RunMode::PlanReconcile,
            (false, true, false, false) => RunMode::Plan,
            (false, false, true, _) => RunMode::SyncFull,
            (false, false, false, true) => RunMode::Reconcile,
            (false, false, false, false) => RunMode::Sync,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_verb_is_recorded_as_its_own_mode() {
        let o = |adopt, dry_run, reread_cloud, compare_all| SyncOptions {
            adopt,
            dry_run,
            reread_cloud,
            compare_all,
            allow_deletes: false,
        };
        assert_eq!(o(false, false, false, false).mode(), RunMode::Sync);
        assert_eq!(o(false, false, true, true).mode(), RunMode::SyncFull);
        assert_eq!(o(false, false, false, true).mode(), RunMode::Reconcile);
        assert_eq!(o(false, true, false, false).mode(), RunMode::Plan);
        assert_eq!(o(false, true, true, true).mode(), RunMode::PlanFull);
        assert_eq!(o(false, true, false, true).mode(), RunMode::PlanReconcile);
        assert_eq!(o(true, false, false, true).mode(), RunMode::Adopt);
        assert_eq!(o(true, true, false, true).mode(), RunMode::PlanAdopt);
    }
}
