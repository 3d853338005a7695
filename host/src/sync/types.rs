//! The values the steps of a cycle hand each other: desired and actual AD objects, the plan and
//! its parts, refusals and unresolved members. One place, so `desired`, `plan`, `apply` and the
//! cycle's steps depend on these types, not on each other.

use serde::Serialize;
use std::collections::BTreeMap;

use crate::rules::Hook;

/// The anchor both Microsoft products write: `Group_<objectId>`.
pub fn anchor_value(cloud_id: &str) -> String {
    format!("Group_{cloud_id}")
}

/// Attributes that carry the anchor; the host sets them, rules cannot.
pub const ANCHOR_ATTRS: [&str; 2] = ["msDS-ExternalDirectoryObjectId", "adminDescription"];

/// An LDAP filter for the groups anchored to any of `ids` (one search for a batch of ids), by
/// either anchor attribute: Connect group writeback keeps the anchor in `adminDescription`
/// only, and its groups must be seen (as not Writeback's, or to be adopted), never created twice.
pub fn anchor_filter<S: AsRef<str>>(ids: &[S], by: &[&str]) -> String {
    let terms: String = ids
        .iter()
        .flat_map(|id| {
            let v = crate::ad::dn::escape_filter_value(&anchor_value(id.as_ref()));
            by.iter().map(move |a| format!("({a}={v})"))
        })
        .collect();
    format!("(&(objectClass=group)(|{terms}))")
}

/// `(name, values)` pairs as the attribute map of an AD entry (names lowercased): what tests
/// and the in-memory directory build entries from.
#[cfg(test)]
pub(crate) fn lower_attrs(attrs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    attrs
        .iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                v.iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect()
}

#[cfg(test)]
impl DesiredObject {
    /// A desired object at `dn` from `rule` with nothing else set (tests build on it).
    pub(crate) fn bare(id: &str, rule: &str, dn: &str) -> DesiredObject {
        DesiredObject {
            cloud_now: Default::default(),
            owners: None,
            to_cloud: Default::default(),
            member_of: Default::default(),
            cloud_id: id.into(),
            rule: rule.into(),
            dn: dn.into(),
            attributes: BTreeMap::new(),
            on_create: BTreeMap::new(),
            members: None,
        }
    }
}

/// One cloud group's AD object as it should be.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DesiredObject {
    pub cloud_id: String,
    pub rule: String,
    pub dn: String,
    /// Managed attributes; `None` = must be absent.
    pub attributes: BTreeMap<String, Option<Vec<String>>>,
    /// Attributes written only by the create (the rule's `on_create`), never compared.
    pub on_create: BTreeMap<String, Vec<String>>,
    /// Member DNs, or `None` when the rule leaves membership alone.
    pub members: Option<Vec<String>>,
    /// Groups Writeback does not own that this group is to be a member of (the rule's
    /// `member_of`, checked against `ad.link_targets`), sorted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub member_of: Vec<String>,
    /// Cloud properties the rule sets (`to_cloud`), `{dn}` replaced by `dn`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub to_cloud: BTreeMap<String, serde_json::Value>,
    /// Their current values in the cloud (null when unset), from the cached group.
    #[serde(skip)]
    pub cloud_now: BTreeMap<String, serde_json::Value>,
    /// Where the cloud group's owners go (the rule's `owners`); `attributes` gets their DNs
    /// once they are read and found in AD (see `sync::owners`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owners: Option<OwnersInto>,
}

/// The DN attribute a rule's `owners` names, as the schema defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OwnersInto {
    pub attribute: String,
    /// One DN only (`managedBy`): the first owner found in AD, by DN order.
    pub single_valued: bool,
}

/// Where cloud members live in AD, found by the job before planning.
#[derive(Debug, Clone, Default)]
pub struct MemberDirectory {
    /// Cloud user id -> AD DN.
    pub users: BTreeMap<String, String>,
    /// Cloud group id -> AD DN, for groups synced from AD (matched by SID).
    pub synced_groups: BTreeMap<String, String>,
    /// Why a cloud user could not be matched (e.g. cloud-only), by user id.
    pub user_reasons: BTreeMap<String, String>,
    /// Cloud device id -> the DN of its AD computer (hybrid-joined devices, matched by SID).
    pub devices: BTreeMap<String, String>,
    /// Why a cloud device could not be matched (not hybrid-joined, no computer), by id.
    pub device_reasons: BTreeMap<String, String>,
}

pub use crate::ad::dn::key as dn_key;

pub use crate::ad::dn::is_within;

/// An owned AD object as read from the directory.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ActualObject {
    pub cloud_id: String,
    pub dn: String,
    /// AD's GUID string.
    pub guid: Option<String>,
    /// Attribute values, keys lowercased.
    pub attrs: BTreeMap<String, Vec<String>>,
    /// Member DNs (complete: read with ranged retrieval).
    pub members: Vec<String>,
    /// The groups it is a member of (AD's `memberOf`).
    pub member_of: Vec<String>,
    /// The links into other groups Writeback added and recorded (the only ones it removes).
    pub links: Vec<String>,
}

/// Links of a group into groups Writeback does not own: the target groups' DNs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Links {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl Links {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// One attribute change on an existing object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AttrChange {
    /// Set the attribute to exactly these values.
    Replace {
        attr: String,
        values: Vec<String>,
        old: Vec<String>,
    },
    /// Remove the attribute.
    Clear { attr: String, old: Vec<String> },
}

impl AttrChange {
    pub fn attr(&self) -> &str {
        match self {
            AttrChange::Replace { attr, .. } | AttrChange::Clear { attr, .. } => attr,
        }
    }
}

/// What to do with one cloud group's AD object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Op {
    Create {
        dn: String,
        attributes: BTreeMap<String, Vec<String>>,
        members: Vec<String>,
        /// Added once the group exists (`member_of`).
        #[serde(skip_serializing_if = "Links::is_empty")]
        links: Links,
        /// Set on the cloud group once the AD group exists (`to_cloud`).
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        cloud: BTreeMap<String, serde_json::Value>,
    },
    Update {
        dn: String,
        /// New DN when the name or the container changed (modrdn, applied first).
        #[serde(skip_serializing_if = "Option::is_none")]
        move_to: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        changes: Vec<AttrChange>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        members_add: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        members_remove: Vec<String>,
        #[serde(skip_serializing_if = "Links::is_empty")]
        links: Links,
        /// Cloud properties that differ from what the rule sets (`to_cloud`).
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        cloud: BTreeMap<String, serde_json::Value>,
    },
    Delete {
        dn: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub cloud_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(flatten)]
    pub op: Op,
}

impl Change {
    pub fn is_delete(&self) -> bool {
        matches!(self.op, Op::Delete { .. })
    }
}

/// A cloud group the host will not write, and why (outside the managed OUs, schema, rule error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub cloud_id: String,
    /// The rule that mapped the group; `None` for a rule error (the reason names the rule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub reason: String,
}

/// A cloud member that has no AD object, so it is not written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Unresolved {
    pub group_id: String,
    pub member_id: String,
    pub member_type: String,
    pub reason: String,
}

/// A trigger that fires when its change is applied: `hook` of `rule` for the group `cloud_id`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PlannedTrigger {
    pub cloud_id: String,
    pub rule: String,
    pub hook: Hook,
}

/// How much a cycle planned, counted as it goes: a streamed plan keeps these, not the lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct PlanCounts {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    pub unresolved_members: usize,
}

impl PlanCounts {
    pub fn add(&mut self, changes: &[Change]) {
        for c in changes {
            match c.op {
                Op::Create { .. } => self.create += 1,
                Op::Update { .. } => self.update += 1,
                Op::Delete { .. } => self.delete += 1,
            }
        }
    }

    pub fn changes(&self) -> usize {
        self.create + self.update + self.delete
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub refused: Vec<Refusal>,
    pub unresolved_members: Vec<Unresolved>,
    /// The triggers the changes fire once applied, sorted (none run in `plan`).
    pub triggers: Vec<PlannedTrigger>,
}

impl Plan {
    pub fn deletes(&self) -> usize {
        self.changes.iter().filter(|c| c.is_delete()).count()
    }
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}
