//! Policies the config sets and the engine applies: plain values, and the arithmetic that
//! goes with them. They sit below both, so the config does not reach up into the engine.

/// When failed trigger calls are tried again, and how often (`[rules] trigger_retry_secs`,
/// `trigger_max_attempts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first wait; each further one doubles, up to an hour.
    pub first_wait_secs: u64,
    /// Attempts in all; after the last failed one the call is given up.
    pub max_attempts: u32,
}

/// The longest wait between two attempts.
const MAX_WAIT_SECS: u64 = 3_600;

impl RetryPolicy {
    /// When a call that has now failed `attempts` times is tried again (Unix seconds), or
    /// `None` when it is given up.
    pub fn next_at(&self, attempts: u32, now: i64) -> Option<i64> {
        if attempts >= self.max_attempts {
            return None;
        }
        let wait = self
            .first_wait_secs
            .saturating_mul(1u64 << attempts.saturating_sub(1).min(20))
            .min(MAX_WAIT_SECS);
        Some(now.saturating_add(i64::try_from(wait).unwrap_or(i64::MAX)))
    }
}

/// `safety.member_removal_threshold_percent` and `safety.member_removal_min_members`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RemovalPolicy {
    /// Removals above this share of the group's current AD members are held.
    pub percent: f64,
    /// Groups with fewer current AD members are never held.
    pub min_members: usize,
}
