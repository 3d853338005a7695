//! The Microsoft Graph connector: tokens, HTTP with retries, delta rounds, cloud objects.

pub mod api;
pub mod auth;
pub mod client;
pub mod delta;
pub mod error;
pub mod model;
pub mod owners;
pub mod retry;

pub use api::GraphApi;
pub use auth::{AssertionAlg, Credential, TokenProvider};
pub use client::{GraphClient, GraphSettings, RoundLimits};
pub use delta::{
    groups_delta_url, run_round, users_delta_url, DeltaMerger, DeltaStart,
    BETA_ONLY_GROUP_PROPERTIES,
};
pub use error::GraphError;
