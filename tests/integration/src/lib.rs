//! Shared helpers for the integration tests: the Samba AD test bed's settings and the Graph
//! emulator as a child process.

pub mod emulator;
pub mod harness;
pub mod testbed;
