//! The Microsoft Graph connector: tokens, HTTP with retries, delta rounds, cloud objects.

pub mod model;
