//! Support for the fault-injection suite (`tests/faults/tests/`): a TCP proxy that breaks LDAP
//! between Writeback and the shared DC, broken disks for the state file, seeded randomness, and
//! scenes that run one tenant into several managed OUs to compare a disturbed run with an
//! undisturbed one.

pub mod disk;
pub mod proxy;
pub mod scene;
pub mod seed;
