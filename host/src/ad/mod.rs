//! The Active Directory connector: TLS connections and binds, paged and ranged searches,
//! writes, DN/filter escaping and the target schema.
//!
//! One [`AdConn`] is one authenticated connection; its operations are spread over the
//! modules by concern: `search` (reads), `write` (changes), `schema` (definitions and
//! checks), `resolve` (batched SID/GUID lookups, owned groups). `dn` and `failover` (which
//! domain controller next) are pure; `discover` finds the DCs in DNS.

pub mod conn;
pub mod discover;
pub mod dn;
pub mod error;
pub mod failover;
pub mod join;
pub mod kerberos;
pub mod resolve;
pub mod schema;
pub mod search;
pub mod write;

pub use conn::{install_crypto_provider, AdConn, AdSettings, Transport, WriteGuard};
pub use error::{AdError, AdOp, DnError};
pub use resolve::{JoinAttribute, RESOLVE_BATCH};
pub use schema::{AttrDef, ClassDef, Schema, SchemaViolation};
pub use search::{AdEntry, Scope, PAGE_SIZE, RANGE_STEP};
pub use uuid::Uuid;
pub use write::{AttrChange, MemberChangeOutcome, MEMBERS_IN_ADD, MEMBER_BATCH};
