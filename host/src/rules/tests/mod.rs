//! Rule runtime tests: the shipped rules and stdlib, load and evaluation errors, the sandbox,
//! concurrency, and the examples in docs/SCRIPTING.md.

mod docs;
mod hooks;
mod runtime;
mod shipped;
mod support;
