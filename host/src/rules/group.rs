//! The group as scripts see it: a read-only `Group` value over `CloudObject::to_rule_json()`.
//!
//! It reads like an object map (`group.displayName`, `group["mail"]`, `group.get("x")`,
//! `"x" in group`) but is shared, not copied: stdlib helpers take `group` as an argument, and Rhai
//! passes arguments by value, so a plain map would be deep-copied (members included) on every
//! call. `group.to_map()` gives a real map when a rule needs one.
//!
//! Every documented Graph v1.0 group property reads as `()` when the cache does not hold it; a
//! name that is no property is an error, so a misspelt `group.displayname` stops the rule instead
//! of silently clearing an attribute in AD. Open-type extras (`extension_<app>_<name>`) are read
//! with `group.get("name")`.

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map, Position};

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

/// The script-side group: shared, read-only. Members are kept compact and turned into
/// `#{ id, type }` maps only when a rule reads `group.members` (a big group costs nothing for
/// rules that never look at its members).
#[derive(Clone)]
pub(crate) struct ScriptGroup {
    props: Arc<Map>,
    members: Arc<Members>,
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
        if let Some(v) = self.props.get(name) {
            return Some(v.clone());
        }
        match name {
            "deleted" => Some(Dynamic::FALSE),
            _ if GROUP_PROPERTIES.contains(&name) => Some(Dynamic::UNIT),
            _ => None,
        }
    }

    fn member_maps(&self) -> Array {
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
    })
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
        let kind_text = field("type");
        let kind = match out.kinds.iter().position(|k| k.as_str() == kind_text) {
            Some(i) => i,
            None => {
                out.kinds.push(kind_text.into());
                out.kinds.len() - 1
            }
        };
        out.ids.push_str(field("id"));
        out.entries.push((out.ids.len(), kind));
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
        let mut keys: Vec<Dynamic> = g.props.keys().map(|k| Dynamic::from(k.clone())).collect();
        if !g.props.contains_key("members") {
            keys.push(Dynamic::from("members"));
        }
        keys
    });
    engine.register_fn("to_map", |g: &mut ScriptGroup| -> Map { g.to_map() });
    engine.register_fn("to_string", |g: &mut ScriptGroup| -> String {
        Dynamic::from_map(g.to_map()).to_string()
    });
    engine.register_fn("to_debug", |g: &mut ScriptGroup| -> String {
        format!("Group {:?}", g.to_map())
    });
}
