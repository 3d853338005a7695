//! Cloud objects as the rest of the host sees them: Graph's own property names, so rules read
//! `group.displayName` exactly as Microsoft documents it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A property the delta parser sets on a group whose entry was malformed (a `members@delta`
/// entry without an id, ...): the reason, or `null` once Graph sent the members cleanly again.
/// Names with `@` are annotations, never Graph properties, so the name cannot collide; the rules
/// refuse a group carrying a reason and never see the property.
pub const INVALID_MARKER: &str = "@writeback.invalid";

/// A member reference as Graph returns it in `members@delta` and `/members`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberRef {
    /// `#microsoft.graph.user`, `#microsoft.graph.group`, `#microsoft.graph.device`, ...
    #[serde(rename = "@odata.type", default)]
    pub odata_type: String,
    pub id: String,
}

impl MemberRef {
    pub fn kind(&self) -> MemberKind {
        match self.odata_type.as_str() {
            "#microsoft.graph.user" => MemberKind::User,
            "#microsoft.graph.group" => MemberKind::Group,
            "#microsoft.graph.device" => MemberKind::Device,
            _ => MemberKind::Other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    User,
    Group,
    /// Written by its AD computer object when hybrid-joined (matched by objectSid).
    Device,
    /// Contacts, service principals: never resolved to AD.
    Other,
}

/// Why Graph reported an object as removed (`@removed.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemovedReason {
    /// Soft deleted: restorable from deletedItems (Microsoft 365 groups, users).
    Changed,
    /// Permanently deleted.
    Deleted,
}

/// A cloud object (group, user or device) in the cache: its Graph properties, its members (groups only)
/// and whether it is soft deleted. Properties are kept as Graph sent them (a JSON object without
/// annotations), so any property a rule selects is available without a model change.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CloudObject {
    pub id: String,
    pub props: Map<String, Value>,
    /// Member ids with their kind (groups only), sorted for deterministic output.
    #[serde(default)]
    pub members: BTreeMap<String, MemberRef>,
    /// True when Graph reported `@removed: {reason: changed}` (soft delete).
    #[serde(default)]
    pub soft_deleted: bool,
}

impl CloudObject {
    pub fn str_prop(&self, name: &str) -> Option<&str> {
        self.props.get(name).and_then(Value::as_str)
    }

    /// The object as rules see it: Graph's properties plus `id`, `members` (array of
    /// `#{ id, type }`) and `deleted` (bool).
    pub fn to_rule_json(&self) -> Value {
        let mut m = self.props.clone();
        m.insert("id".into(), Value::String(self.id.clone()));
        m.insert("deleted".into(), Value::Bool(self.soft_deleted));
        let members: Vec<Value> = self
            .members
            .values()
            .map(|r| {
                serde_json::json!({
                    "id": r.id,
                    "type": r.odata_type.trim_start_matches("#microsoft.graph."),
                })
            })
            .collect();
        m.insert("members".into(), Value::Array(members));
        Value::Object(m)
    }
}

/// One object's net change within a delta round, merged across pages.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeltaItem {
    pub id: String,
    /// Properties present in the round (later pages overlay earlier ones); annotations removed.
    pub props: Map<String, Value>,
    /// `members@delta` entries without `@removed`.
    pub members_added: BTreeMap<String, MemberRef>,
    /// `members@delta` entries with `@removed`.
    pub members_removed: std::collections::BTreeSet<String>,
    /// `@removed` on the object itself.
    pub removed: Option<RemovedReason>,
}

/// The outcome of following one delta round to its deltaLink.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeltaRound {
    /// Merged items, keyed by object id.
    pub items: BTreeMap<String, DeltaItem>,
    /// The deltaLink to start the next round from.
    pub delta_link: String,
    /// True when the round started from scratch (no link, an expired token, or a 410 reset):
    /// the items are then the complete current state, and cached objects absent from it are gone.
    pub full: bool,
}
