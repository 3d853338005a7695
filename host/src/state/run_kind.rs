//! What a recorded run was ([`RunMode`]) and how it ended ([`RunStatus`]): stored as text in the
//! `run` table (the values earlier versions wrote), typed everywhere else.

use serde::Serialize;

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RunMode {
    /// A cycle: `writeback sync` or a daemon cycle.
    #[default]
    Sync,
    /// `sync --full`.
    SyncFull,
    /// A daemon reconciliation (every owned object compared).
    Reconcile,
    Plan,
    PlanFull,
    PlanReconcile,
    Adopt,
    PlanAdopt,
    /// The rules' schedules, run by the daemon.
    Schedule,
    Release,
}

impl RunMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            RunMode::Sync => "sync",
            RunMode::SyncFull => "sync-full",
            RunMode::Reconcile => "reconcile",
            RunMode::Plan => "plan",
            RunMode::PlanFull => "plan-full",
            RunMode::PlanReconcile => "plan-reconcile",
            RunMode::Adopt => "adopt",
            RunMode::PlanAdopt => "plan-adopt",
            RunMode::Schedule => "schedule",
            RunMode::Release => "release",
        }
    }
}

impl std::fmt::Display for RunMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Everything applied.
    Ok,
    /// Some groups failed; the rest was applied.
    Partial,
    /// Stopped by an error.
    Failed,
    /// Deletes held back for approval; the rest was applied.
    Held,
    /// The rules put nothing in scope: nothing was applied.
    Blocked,
    /// Left unfinished by a killed host.
    Interrupted,
}

impl RunStatus {
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Ok,
        RunStatus::Partial,
        RunStatus::Failed,
        RunStatus::Held,
        RunStatus::Blocked,
        RunStatus::Interrupted,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
            RunStatus::Held => "held",
            RunStatus::Blocked => "blocked",
            RunStatus::Interrupted => "interrupted",
        }
    }

    /// The status a stored value names.
    pub fn parse(text: &str) -> Option<RunStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_spellings_are_the_serialized_ones_and_parse_back() {
        for s in RunStatus::ALL {
            assert_eq!(serde_json::to_value(s).ok(), Some(s.as_str().into()));
            assert_eq!(RunStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(RunStatus::parse("OK"), None);
        for m in [
            RunMode::SyncFull,
            RunMode::PlanReconcile,
            RunMode::PlanAdopt,
        ] {
            assert_eq!(serde_json::to_value(m).ok(), Some(m.as_str().into()));
        }
    }
}
