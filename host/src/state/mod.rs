//! The SQLite state store: delta links, the cloud cache, anchors, applied state, run history.
