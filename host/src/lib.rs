//! Writeback: keeps on-premises Active Directory in step with Microsoft Entra ID groups.
//!
//! The flow runs one way (see `docs/ARCHITECTURE.md`):
//! Graph delta -> cloud cache (`state`) -> rules (`rules`) -> desired AD state
//! -> diff against owned AD objects (`sync::plan`) -> gate -> apply (`ad`) -> record.

pub mod ad;
pub mod allocator;
pub mod config;
pub mod console;
pub mod daemon;
pub mod effects;
pub mod egress;
pub mod graph;
pub mod ha;
pub mod inspect;
pub mod metrics;
pub mod perms;
pub mod policy;
pub mod preflight;
pub mod printable;
pub mod rules;
pub mod setup;
pub mod state;
pub mod sync;
pub mod watch;
