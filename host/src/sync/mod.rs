//! The sync engine: desired state from the rules, a pure plan against owned AD objects, apply.
