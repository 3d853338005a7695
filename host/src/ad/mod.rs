//! The Active Directory connector: TLS connections and binds, paged and ranged searches,
//! writes, DN/filter escaping and the target schema.
