//! Rule runtime tests: the shipped rules and stdlib, load and evaluation errors, the sandbox,
//! concurrency, the examples in docs/SCRIPTING.md, and lengths as AD counts them (UTF-16).

mod docs;
mod hooks;
mod hostile;
mod runtime;
mod shipped;
mod support;
mod utf16;
