//! The group as scripts see it: a read-only `Group` value over `CloudObject::to_rule_json()`.
//!
//! It reads like an object map (`group.displayName`, `group["mail"]`, `group.get("x")`,
//! `"x" in group`) but is shared, not copied: stdlib helpers take `group` as an argument, and Rhai
//! passes arguments by value, so a plain map would be deep-copied (members included) on every
//! call. `group.to_map()` gives a real map when a rule needs one.
//!
//! Every documented Graph v1.0 group property reads when the cache does not hold it (or holds
//! `null`): a collection as `[]`, a boolean as `false`, anything else as `()`, so rules test
//! `group.groupTypes.contains("Unified")` or `!group.onPremisesSyncEnabled` without checking
//! types first. A name that is no property is an error, so a misspelt `group.displayname` stops
//! the rule instead of silently clearing an attribute in AD. Open-type extras
//! (`extension_<app>_<name>`) are read with `group.get("name")`.
//!
//! `is_m365(group)`, `is_security(group)` and `is_dynamic(group)` name the kinds of group rules
//! usually scope on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map, Position};

use crate::graph::model::CloudObject;

/// Properties of `microsoft.graph.group` (and `directoryObject`) in the v1.0 metadata
/// (copied from the Graph v1.0 CSDL, `EntityType Name="group"`), plus the rule extras.
const GROUP_PROPERTIES: &[&str] = &[
    "id",
    "deletedDateTime",
    "accessType",
    "allowExternalSenders",
    "assignedLabels",
    "assignedLicenses",
    "autoSubscribeNewMembers",
    "classification",
    "createdDateTime",
    "description",
    "displayName",
    "expirationDateTime",
    "groupTypes",
    "hasMembersWithLicenseErrors",
    "hideFromAddressLists",
    "hideFromOutlookClients",
    "infoCatalogs",
    "isArchived",
    "isAssignableToRole",
    "isFavorite",
    "isManagementRestricted",
    "isSubscribedByMail",
    "licenseProcessingState",
    "mail",
    "mailEnabled",
    "mailNickname",
    "membershipRule",
    "membershipRuleProcessingState",
    "onPremisesDomainName",
    "onPremisesExtensionAttributes",
    "onPremisesLastSyncDateTime",
    "onPremisesNetBiosName",
    "onPremisesProvisioningErrors",
    "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "organizationId",
    "preferredDataLocation",
    "preferredLanguage",
    "proxyAddresses",
    "renewedDateTime",
    "resourceBehaviorOptions",
    "resourceProvisioningOptions",
    "securityEnabled",
    "securityIdentifier",
    "serviceProvisioningErrors",
    "theme",
    "uniqueName",
    "unseenConversationsCount",
    "unseenCount",
    "unseenMessagesCount",
    "visibility",
    "welcomeMessageEnabled",
];

/// The documented spelling of a group property named `name` in any case (v1.0, or beta-only
/// such as `writebackConfiguration`), or `None` when the group has no such property.
pub(crate) fn documented_spelling(name: &str) -> Option<&'static str> {
    GROUP_PROPERTIES
        .iter()
        .chain(crate::graph::BETA_ONLY_GROUP_PROPERTIES)
        .find(|p| p.eq_ignore_ascii_case(name))
        .copied()
}

/// Collection-valued properties of the v1.0 group: absent or `null` reads as `[]`.
const COLLECTION_PROPERTIES: &[&str] = &[
    "assignedLabels",
    "assignedLicenses",
    "groupTypes",
    "infoCatalogs",
    "onPremisesProvisioningErrors",
    "proxyAddresses",
    "resourceBehaviorOptions",
    "resourceProvisioningOptions",
    "serviceProvisioningErrors",
];

/// Boolean properties of the v1.0 group: absent or `null` reads as `false` (for
/// `onPremisesSyncEnabled`, `null` is Graph's "never synced from AD").
const BOOLEAN_PROPERTIES: &[&str] = &[
    "allowExternalSenders",
    "autoSubscribeNewMembers",
    "hasMembersWithLicenseErrors",
    "hideFromAddressLists",
    "hideFromOutlookClients",
    "isArchived",
    "isAssignableToRole",
    "isFavorite",
    "isManagementRestricted",
    "isSubscribedByMail",
    "mailEnabled",
    "onPremisesSyncEnabled",
    "securityEnabled",
    "welcomeMessageEnabled",
];

/// The value a documented property reads as when the cache holds nothing (or `null`) for it.
fn absent_value(name: &str) -> Option<Dynamic> {
    if COLLECTION_PROPERTIES.contains(&name) {
        Some(Dynamic::from_array(Array::new()))
    } else if BOOLEAN_PROPERTIES.contains(&name) || name == "deleted" {
        Some(Dynamic::FALSE)
    } else if GROUP_PROPERTIES.contains(&name) {
        Some(Dynamic::UNIT)
    } else {
        None
    }
}

/// The script-side group: shared, read-only. Members are kept compact and turned into
/// `#{ id, type }` maps only when a rule reads `group.members` (a big group costs nothing for
/// rules that never look at its members).
#[derive(Clone)]
pub(crate) struct ScriptGroup {
    props: Arc<Map>,
    members: Arc<Members>,
    /// Set for a group read without its members: raised when a rule reads them, so the
    /// caller evaluates it again with them (see [`head_script_value`]).
    unread: Option<Arc<AtomicBool>>,
}

/// Member ids in one string (one allocation for any group size) and their types.
#[derive(Default)]
struct Members {
    ids: String,
    /// (end of the id in `ids`, index into `kinds`), in Graph's order.
    entries: Vec<(usize, usize)>,
    kinds: Vec<ImmutableString>,
}

impl ScriptGroup {
    fn read(&self, name: &str) -> Option<Dynamic> {
        if name == "members" {
            return Some(Dynamic::from_array(self.member_maps()));
        }
        match self.props.get(name) {
            Some(v) if !v.is_unit() => Some(v.clone()),
            // `null` from Graph reads like an absent property; an unknown name holding `null`
            // (an open-type extra) stays `()`.
            Some(v) => absent_value(name).or_else(|| Some(v.clone())),
            None => absent_value(name),
        }
    }

    fn has_group_type(&self, kind: &str) -> bool {
        self.read("groupTypes")
            .and_then(|v| v.try_cast::<Array>())
            .is_some_and(|types| {
                types
                    .iter()
                    .any(|t| t.clone().into_immutable_string().is_ok_and(|t| t == kind))
            })
    }

    fn flag(&self, name: &str) -> bool {
        self.read(name).and_then(|v| v.as_bool().ok()) == Some(true)
    }

    /// A Microsoft 365 group: `groupTypes` holds `Unified`.
    fn is_m365(&self) -> bool {
        self.has_group_type("Unified")
    }

    /// A cloud security group as Cloud Sync writes them back: security-enabled, not
    /// mail-enabled, not a Microsoft 365 group.
    fn is_security(&self) -> bool {
        self.flag("securityEnabled") && !self.flag("mailEnabled") && !self.is_m365()
    }

    /// Members kept by a membership rule: `groupTypes` holds `DynamicMembership`.
    fn is_dynamic(&self) -> bool {
        self.has_group_type("DynamicMembership")
    }

    fn member_maps(&self) -> Array {
        if let Some(flag) = &self.unread {
            flag.store(true, Ordering::Relaxed);
            return Array::new();
        }
        let m = &*self.members;
        let mut start = 0;
        m.entries
            .iter()
            .map(|&(end, kind)| {
                let id = m.ids.get(start..end).unwrap_or("");
                start = end;
                let mut map = Map::new();
                map.insert("id".into(), Dynamic::from(ImmutableString::from(id)));
                map.insert(
                    "type".into(),
                    Dynamic::from(m.kinds.get(kind).cloned().unwrap_or_default()),
                );
                Dynamic::from_map(map)
            })
            .collect()
    }

    /// All properties as a plain map (members included), for printing and `to_map()`.
    fn to_map(&self) -> Map {
        let mut m = (*self.props).clone();
        m.insert("members".into(), Dynamic::from_array(self.member_maps()));
        m
    }
}

/// Converts the group JSON once per evaluation; never fails (a JSON value always has a Rhai form).
pub(crate) fn to_script_value(group: &serde_json::Value) -> Dynamic {
    let Some(object) = group.as_object() else {
        return rhai::serde::to_dynamic(group).unwrap_or(Dynamic::UNIT);
    };
    let mut props = Map::new();
    let mut members = Members::default();
    for (name, value) in object {
        // Host annotations (`@writeback.invalid`) are not Graph properties.
        if name.starts_with('@') {
            continue;
        }
        if name == "members" {
            if let Some(list) = value.as_array() {
                members = compact_members(list);
                continue;
            }
        }
        let v = rhai::serde::to_dynamic(value).unwrap_or(Dynamic::UNIT);
        props.insert(name.as_str().into(), v);
    }
    Dynamic::from(ScriptGroup {
        props: Arc::new(props),
        members: Arc::new(members),
        unread: None,
    })
}

/// The script value of a cached group, the same as `to_script_value(&g.to_rule_json())` but
/// built without the JSON form: a big group's members go straight into the compact form
/// (no map per member on the way).
pub(crate) fn object_script_value(g: &CloudObject) -> Dynamic {
    let mut members = Members {
        ids: String::with_capacity(g.members.len() * 36),
        entries: Vec::with_capacity(g.members.len()),
        kinds: Vec::new(),
    };
    for m in g.members.values() {
        members.push(&m.id, m.odata_type.trim_start_matches("#microsoft.graph."));
    }
    Dynamic::from(ScriptGroup {
        props: Arc::new(object_props(g)),
        members: Arc::new(members),
        unread: None,
    })
}

/// The script value of a group read without its members (`g.members` is not looked at):
/// the same properties as [`object_script_value`]; reading `members` (directly or through
/// `to_map()`) raises `unread` and gives an empty array, and the caller throws that answer
/// away. A rule that never reads members decides the same either way.
pub(crate) fn head_script_value(g: &CloudObject, unread: Arc<AtomicBool>) -> Dynamic {
    Dynamic::from(ScriptGroup {
        props: Arc::new(object_props(g)),
        members: Arc::new(Members::default()),
        unread: Some(unread),
    })
}

/// A cached group's properties as rules read them, with `id` and `deleted`.
fn object_props(g: &CloudObject) -> Map {
    let mut props = Map::new();
    for (name, value) in &g.props {
        if name.starts_with('@') || matches!(name.as_str(), "id" | "deleted" | "members") {
            continue;
        }
        let v = rhai::serde::to_dynamic(value).unwrap_or(Dynamic::UNIT);
        props.insert(name.as_str().into(), v);
    }
    props.insert(
        "id".into(),
        Dynamic::from(ImmutableString::from(g.id.as_str())),
    );
    props.insert("deleted".into(), Dynamic::from_bool(g.soft_deleted));
    props
}

impl Members {
    fn push(&mut self, id: &str, kind_text: &str) {
        let kind = match self.kinds.iter().position(|k| k.as_str() == kind_text) {
            Some(i) => i,
            None => {
                self.kinds.push(kind_text.into());
                self.kinds.len() - 1
            }
        };
        self.ids.push_str(id);
        self.entries.push((self.ids.len(), kind));
    }
}

/// `[{id, type}]` in the compact form; the few distinct type names are stored once.
fn compact_members(list: &[serde_json::Value]) -> Members {
    let mut out = Members {
        ids: String::with_capacity(list.len() * 36),
        entries: Vec::with_capacity(list.len()),
        kinds: Vec::new(),
    };
    for m in list {
        let field = |k: &str| m.get(k).and_then(serde_json::Value::as_str).unwrap_or("");
        out.push(field("id"), field("type"));
    }
    out
}

/// Registers the `Group` type: property and index access, `get`, `in`, `keys`, `to_map`, printing.
pub(crate) fn register(engine: &mut Engine) {
    engine.register_type_with_name::<ScriptGroup>("Group");
    engine.register_indexer_get(
        |g: &mut ScriptGroup, name: ImmutableString| -> Result<Dynamic, Box<EvalAltResult>> {
            g.read(&name).ok_or_else(|| {
                EvalAltResult::ErrorPropertyNotFound(name.to_string(), Position::NONE).into()
            })
        },
    );
    engine.register_fn("get", |g: &mut ScriptGroup, name: ImmutableString| {
        g.read(&name).unwrap_or(Dynamic::UNIT)
    });
    engine.register_fn("contains", |g: &mut ScriptGroup, name: ImmutableString| {
        name == "members" || g.props.contains_key(name.as_str())
    });
    engine.register_fn("keys", |g: &mut ScriptGroup| -> Array {
        // Rhai strings (map keys are another string type that rules could not write out).
        let mut keys: Vec<Dynamic> = g
            .props
            .keys()
            .map(|k| Dynamic::from(ImmutableString::from(k.as_str())))
            .collect();
        if !g.props.contains_key("members") {
            keys.push(Dynamic::from("members"));
        }
        keys
    });
    engine.register_fn("to_map", |g: &mut ScriptGroup| -> Map { g.to_map() });
    engine.register_fn("is_m365", |g: &mut ScriptGroup| g.is_m365());
    engine.register_fn("is_security", |g: &mut ScriptGroup| g.is_security());
    engine.register_fn("is_dynamic", |g: &mut ScriptGroup| g.is_dynamic());
    engine.register_fn("to_string", |g: &mut ScriptGroup| -> String {
        Dynamic::from_map(g.to_map()).to_string()
    });
    engine.register_fn("to_debug", |g: &mut ScriptGroup| -> String {
        format!("Group {:?}", g.to_map())
    });
}
