//! The TOML configuration file: Graph, AD, rules, state, safety settings.
