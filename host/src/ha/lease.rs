//! Until when this instance may write, by its own monotonic clock.
//!
//! The database stamps the lease's expiry as *its* `now()` + the lease time when it runs the
//! renewal, which is after the instance sent it. So the instance's deadline, `sent + lease −
//! margin` on its monotonic clock, always falls before the database's expiry, whatever the two
//! wall clocks say. Another instance can take over only after that expiry; this one stops
//! writing at its deadline. A process paused past it (SIGSTOP, a VM freeze) finds the deadline
//! gone when it resumes and writes nothing more without renewing first.

use std::time::{Duration, Instant};

/// The lease's timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimes {
    /// How long a lease lasts from a renewal (the database's `now()` + this).
    pub lease: Duration,
    /// How often the holder renews (a third of the lease by default: two renewals may fail
    /// before it stops writing).
    pub renew_every: Duration,
    /// Kept off the end of the lease: the longest one write may take after the last check of
    /// the deadline, and drift between the two monotonic clocks.
    pub margin: Duration,
}

impl LeaseTimes {
    /// A lease of `lease`, renewed every third of it, with a fifth of it as margin.
    pub fn new(lease: Duration) -> LeaseTimes {
        LeaseTimes {
            lease,
            renew_every: lease / 3,
            margin: lease / 5,
        }
    }

    /// The deadline of a renewal (or takeover) sent at `sent` that succeeded.
    pub fn deadline_from(&self, sent: Instant) -> Deadline {
        Deadline(sent + self.lease.saturating_sub(self.margin))
    }
}

impl Default for LeaseTimes {
    fn default() -> Self {
        LeaseTimes::new(Duration::from_secs(10))
    }
}

/// The instant after which this instance must not write without renewing first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(Instant);

impl Deadline {
    /// Whether work that may take `for_` can start at `now` and end before the deadline.
    pub fn allows(&self, now: Instant, for_: Duration) -> bool {
        now.checked_add(for_).is_some_and(|end| end < self.0)
    }

    /// Time left at `now` (zero once passed).
    pub fn left(&self, now: Instant) -> Duration {
        self.0.saturating_duration_since(now)
    }

    /// The later of two deadlines (a renewal never moves it back).
    pub fn extended(self, other: Deadline) -> Deadline {
        self.max(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_counts_from_when_the_renewal_was_sent_less_the_margin() {
        let t = LeaseTimes::new(Duration::from_secs(10));
        assert_eq!(t.renew_every, Duration::from_secs(10) / 3);
        assert_eq!(t.margin, Duration::from_secs(2));
        let sent = Instant::now();
        let d = t.deadline_from(sent);
        assert_eq!(d.left(sent), Duration::from_secs(8));
        assert!(d.allows(sent, Duration::from_secs(7)));
        assert!(
            !d.allows(sent, Duration::from_secs(8)),
            "ends at the deadline"
        );
        // A process paused 9 s wakes past its deadline: nothing may start.
        let woke = sent + Duration::from_secs(9);
        assert!(!d.allows(woke, Duration::ZERO));
        assert_eq!(d.left(woke), Duration::ZERO);
    }

    #[test]
    fn a_renewal_extends_and_never_shortens() {
        let t = LeaseTimes::default();
        let first = Instant::now();
        let a = t.deadline_from(first);
        let b = t.deadline_from(first + Duration::from_secs(3));
        assert_eq!(a.extended(b), b);
        assert_eq!(
            b.extended(a),
            b,
            "a late answer to an older renewal does not move it back"
        );
    }

    #[test]
    fn a_lease_shorter_than_its_margin_allows_nothing() {
        let t = LeaseTimes {
            lease: Duration::from_secs(1),
            renew_every: Duration::from_millis(300),
            margin: Duration::from_secs(2),
        };
        let now = Instant::now();
        assert!(!t.deadline_from(now).allows(now, Duration::ZERO));
    }
}
