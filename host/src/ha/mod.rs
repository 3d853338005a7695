//! High availability: several instances on one PostgreSQL database, exactly one writing.
//!
//! The writer holds a lease: one row (`writeback_lease`) with the holder, an epoch that grows
//! by one at every takeover, and an expiry stamped by the database's clock. A lease row
//! rather than advisory locks: a session lock dies with its connection while the client may
//! still believe it holds it, breaks under a transaction-pooling proxy, and leaks when a
//! cancelled task leaves its session open; a row and an epoch survive all three, and the
//! epoch is a fencing token every write checks.
//!
//! - [`lease`]: the local side, pure: until when this instance may write (its own monotonic
//!   clock, from when its last successful renewal was *sent*, less a margin), so a process
//!   paused past its lease (SIGSTOP, a VM freeze) finds its deadline gone when it wakes.
//! - [`pg`]: the row itself: take over an expired lease, renew, give up, and the fence a state
//!   transaction runs first (it locks the row shared, so a takeover waits for it to end).
//! - [`keeper`]: the task that holds the lease for a daemon and publishes its [`Role`].
//! - [`instance`]: an instance joining: the start-up checks, the store, the keeper.
//! - [`oneshot`]: a one-shot verb that writes takes the lease for its duration.
//! - [`cycles`]: the cycle lock, which keeps `approve` and `release` out of the writer's
//!   cycles (an advisory lock, keyed by the epoch, that orders them and fences nothing).
//! - [`snapshot`]: read-only verbs read a private copy of the state.
//! - [`status`]: `writeback status`'s part on the lease and the instances.

pub mod cycles;
pub mod instance;
pub mod keeper;
pub mod lease;
pub mod oneshot;
pub mod pg;
pub mod snapshot;
pub mod status;

pub use keeper::{Keeper, Role};
pub use lease::{Deadline, LeaseTimes};
pub use pg::{read_lease, HaError, LeaseRow, PgLease, PgSettings, Takeover};
