//! The Rhai rule runtime: sandboxed engine, the API scripts see, compile and check.
