//! Checks what `to_ad(group)` (or the old `map(group)`) returned and turns it into a [`DesiredGroup`].
//!
//! Accepted: `()` (skip the group), `#{ leave: "keep" | "delete", after: "7d" }` (what becomes
//! of an AD group written earlier; see `leave`) or
//! `#{ parent, cn, attributes: #{ name: value }, on_create: #{ name: value },
//! members: "on-premises" | "flatten" | "none" }`. `on_create` attributes are written when the
//! group is created and never compared afterwards (Cloud Sync's "only during object creation").
//! Attribute values: string, integer, bool, `()` (clear) or an array of those; empty strings and
//! `()` inside arrays are dropped (LDAP has no empty values), and an empty result clears.

use std::collections::BTreeMap;

use std::collections::HashSet;

use rhai::{Array, Dynamic, Map};

use super::group::ScriptGroup;
use super::text::quoted;
use super::{Decision, DesiredGroup, MemberPolicy};

/// Attributes the host owns (identity, anchors, membership); a rule may not set them.
pub(crate) const RESERVED_ATTRIBUTES: &[&str] = &[
    "objectClass",
    "member",
    "cn",
    "name",
    "distinguishedName",
    "objectGUID",
    "objectSid",
    "msDS-ExternalDirectoryObjectId",
    "adminDescription",
];

/// AD's `cn` is at most 64 UTF-16 code units (schema rangeUpper).
pub(crate) const MAX_CN_UNITS: usize = 64;

/// Bytes of one attribute value. No string attribute a group holds allows more than a few KB
/// (rangeUpper); a value past this is a runaway rule, refused before it is copied or hashed.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// Values of one attribute. AD keeps non-linked values in the object's record: at most 3,937 in
/// one record, about 1,200 in practice (Microsoft's "maximum limits" page).
pub const MAX_VALUES: usize = 4_000;

/// Bytes of all values a rule returns for one group: one LDAP add must fit AD's request buffer
/// (MaxReceiveBuffer, 10 MiB).
pub const MAX_TOTAL_BYTES: usize = 8 * 1024 * 1024;

/// Attributes one rule output may set; the `group` class and its auxiliaries allow a few hundred.
pub const MAX_ATTRIBUTES: usize = 1_000;

/// lDAPDisplayName's rangeUpper.
const MAX_NAME_CHARS: usize = 256;

/// rangeUpper of the Unicode-string attributes a group commonly carries, in the default AD
/// schema (mailNickname and extensionAttribute1-15 from Exchange's), in UTF-16 code units.
/// Used where no forest schema is at hand (`writeback test`); a sync checks the forest's own.
const KNOWN_LIMITS: &[(&str, usize)] = &[
    ("cn", MAX_CN_UNITS),
    ("adminDisplayName", 256),
    ("company", 64),
    ("department", 64),
    ("description", 1024),
    ("displayName", 256),
    ("info", 1024),
    ("mail", 256),
    ("mailNickname", 64),
    ("proxyAddresses", 1123),
    ("sAMAccountName", 256),
    ("telephoneNumber", 64),
    ("textEncodedORAddress", 1024),
    ("wWWHomePage", 2048),
];

/// Exchange's extensionAttribute1 to extensionAttribute15.
const EXTENSION_ATTRIBUTE_UNITS: usize = 1024;

/// A value longer than Active Directory allows, counted as AD counts: in UTF-16 code units.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{rule} returned {attr} of {units} UTF-16 code units ({chars} characters); Active Directory allows at most {max}{}",
    wide_note(.units, .chars)
)]
pub struct TooLong {
    /// The rule file's name.
    pub rule: String,
    /// `cn` or the attribute's name as the rule spelt it.
    pub attr: String,
    pub units: usize,
    pub chars: usize,
    pub max: usize,
}

/// Why units and characters differ, when they do.
fn wide_note(units: &usize, chars: &usize) -> &'static str {
    if units == chars {
        ""
    } else {
        " (an emoji or other character outside the Basic Multilingual Plane counts 2)"
    }
}

/// The known limit of `attr` (any case), if any.
fn known_limit(attr: &str) -> Option<usize> {
    if let Some((_, max)) = KNOWN_LIMITS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(attr))
    {
        return Some(*max);
    }
    let lower = attr.to_ascii_lowercase();
    let n: u8 = lower.strip_prefix("extensionattribute")?.parse().ok()?;
    (1..=15).contains(&n).then_some(EXTENSION_ATTRIBUTE_UNITS)
}

/// `Err` when `value` has more than `max` UTF-16 code units.
fn check_units(rule: &str, attr: &str, value: &str, max: usize) -> Result<(), TooLong> {
    let units = super::text::utf16_len(value);
    if units <= max {
        return Ok(());
    }
    Err(TooLong {
        rule: rule.to_string(),
        attr: attr.to_string(),
        units,
        chars: value.chars().count(),
        max,
    })
}

/// Every value of `group` over its known AD limit (the cn and the attributes in
/// [`KNOWN_LIMITS`]), one per attribute (its longest value).
pub(crate) fn over_known_limits(group: &DesiredGroup) -> Vec<TooLong> {
    let mut out = Vec::new();
    if let Err(e) = check_units(&group.rule, "cn", &group.cn, MAX_CN_UNITS) {
        out.push(e);
    }
    for (attr, values) in group.attributes.iter().chain(&group.on_create) {
        let (Some(max), Some(values)) = (known_limit(attr), values) else {
            continue;
        };
        let longest = values
            .iter()
            .max_by_key(|v| super::text::utf16_len(v))
            .map_or("", String::as_str);
        if let Err(e) = check_units(&group.rule, attr, longest, max) {
            out.push(e);
        }
    }
    out
}

const KEYS: &str = "parent, cn, attributes, on_create, members, owners, member_of, to_cloud";

/// What is wrong with what a rule returned. Every message names the rule and the key (or
/// attribute), and quotes no more of a value than it takes to find it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputError {
    #[error("{entry}() in {rule} must return (), #{{ leave: ... }} or a map #{{ {keys} }}, not {type_name}", keys = KEYS)]
    NotAMap {
        rule: String,
        entry: String,
        type_name: &'static str,
    },
    #[error(transparent)]
    Leave(#[from] super::leave::LeaveError),
    #[error("{rule} returned an unknown key {} (allowed: {keys}); attributes go inside `attributes: #{{ ... }}`", ticked(.key), keys = KEYS)]
    UnknownKey { rule: String, key: String },
    #[error("{rule} returned no `parent` (the container DN)")]
    NoParent { rule: String },
    #[error("{rule} returned no `cn`")]
    NoCn { rule: String },
    /// `parent`, `cn`: empty.
    #[error("{rule} returned an empty `{key}`")]
    EmptyText { rule: String, key: &'static str },
    /// `parent`, `cn`: not a string.
    #[error("{rule} returned `{key}` as {type_name}; it must be a string")]
    NotText {
        rule: String,
        key: &'static str,
        type_name: &'static str,
    },
    #[error("{rule} returned parent {}, which is not a distinguished name", quoted(.parent))]
    ParentNotADn { rule: String, parent: String },
    #[error(transparent)]
    TooLong(#[from] TooLong),
    #[error(
        "{rule} returned an unknown `members` value; use \"on-premises\", \"flatten\" or \"none\""
    )]
    MemberPolicy { rule: String },
    /// `owners` names an attribute the rule also sets itself.
    #[error(
        "{rule} returned `owners: \"{attr}\"` and sets `{other}` itself: one of the two must go"
    )]
    OwnersAlsoSet {
        rule: String,
        attr: String,
        other: String,
    },
    #[error("{rule} returned `owners` as {type_name}; it takes the name of a DN attribute, e.g. \"managedBy\"")]
    OwnersType {
        rule: String,
        type_name: &'static str,
    },
    #[error("{rule} returned `owners` {}, which is not an LDAP attribute name", ticked(.name))]
    OwnersName { rule: String, name: String },
    #[error("{rule} may not write the owners to `{name}`: the host owns `{reserved}`")]
    OwnersReserved {
        rule: String,
        name: String,
        reserved: &'static str,
    },
    #[error("{rule} returned `to_cloud` as {type_name}; it takes a map #{{ extension_<app id>_<name>: value }}")]
    ToCloudType {
        rule: String,
        type_name: &'static str,
    },
    #[error("{rule} returned to_cloud `{name}`: only directory extension properties (extension_<app id without dashes>_<name>) are written to the cloud")]
    NotAnExtension { rule: String, name: String },
    #[error("{rule} returned to_cloud `{name}` as {type_name}; it takes a string, an integer, a bool or ()")]
    ToCloudValue {
        rule: String,
        name: String,
        type_name: &'static str,
    },
    /// `member_of`: an item that is not a string.
    #[error("{rule} returned `{key}` with a {type_name}; it takes DNs (strings)")]
    DnType {
        rule: String,
        key: &'static str,
        type_name: &'static str,
    },
    #[error("{rule} returned `{key}` {}, which is not a distinguished name", quoted(.dn))]
    NotADn {
        rule: String,
        key: &'static str,
        dn: String,
    },
    #[error("{rule} returned `{name}` both in `attributes` and in `on_create`; an attribute is either kept in step or written once")]
    BothOnCreate { rule: String, name: String },
    #[error("{rule} returned more than {max} bytes of attribute values in `attributes` and `on_create`; one LDAP request to AD holds at most 10 MiB", max = MAX_TOTAL_BYTES)]
    TotalTooLarge { rule: String },
    #[error("{rule} returned more than {max} bytes of attribute values (reached at `{name}`); one LDAP request to AD holds at most 10 MiB", max = MAX_TOTAL_BYTES)]
    TotalTooLargeAt { rule: String, name: String },
    /// `attributes`, `on_create`: not a map.
    #[error(
        "{rule} returned `{key}` as {type_name}; it must be a map #{{ ldapDisplayName: value }}"
    )]
    AttributesType {
        rule: String,
        key: &'static str,
        type_name: &'static str,
    },
    #[error("{rule} returned {count} attributes; the host writes at most {max} per group", max = MAX_ATTRIBUTES)]
    TooManyAttributes { rule: String, count: usize },
    #[error("{rule} returned attribute {}, which is not an LDAP attribute name (letters, digits, hyphens, starting with a letter, at most {max})", ticked(.name), max = MAX_NAME_CHARS)]
    AttributeName { rule: String, name: String },
    #[error("{rule} may not set attribute `{name}`: the host owns `{reserved}`")]
    Reserved {
        rule: String,
        name: String,
        reserved: &'static str,
    },
    /// Two spellings of one (case-insensitive) attribute name.
    #[error("{rule} returned attribute `{name}` twice (also as `{first}`)")]
    Twice {
        rule: String,
        name: String,
        first: String,
    },
    #[error("{rule} returned {count} values in attribute `{name}`; the host writes at most {max} (Active Directory keeps no more in one object)", max = MAX_VALUES)]
    TooManyValues {
        rule: String,
        name: String,
        count: usize,
    },
    #[error("{rule} returned a nested {type_name} in attribute `{name}`; values must be strings, integers or booleans")]
    Nested {
        rule: String,
        name: String,
        type_name: &'static str,
    },
    #[error("{rule} returned a value of {bytes} bytes in attribute `{name}`; the host writes at most {max} bytes per value", max = MAX_VALUE_BYTES)]
    ValueTooLarge {
        rule: String,
        name: String,
        bytes: usize,
    },
    #[error("{rule} returned {type_name} in attribute `{name}`; values must be strings, integers, booleans or () to clear")]
    ValueType {
        rule: String,
        name: String,
        type_name: &'static str,
    },
}

/// What `entry` returned, as a decision: `()` skips the group (deleting an AD group written
/// earlier), a map with `leave` says what becomes of it ([`super::leave`]), any other map is the
/// group to write.
pub(crate) fn decision(rule: &str, entry: &str, out: Dynamic) -> Result<Decision, OutputError> {
    if out.is_unit() {
        return Ok(Decision::OutOfScope);
    }
    let type_name = type_name(&out);
    let Some(map) = out.try_cast::<Map>() else {
        return Err(OutputError::NotAMap {
            rule: rule.to_string(),
            entry: entry.to_string(),
            type_name,
        });
    };
    if map.contains_key("leave") || map.contains_key("after") {
        return Ok(super::leave::decision(rule, map)?);
    }
    desired_group(rule, map).map(Decision::Desired)
}

fn desired_group(rule: &str, map: Map) -> Result<DesiredGroup, OutputError> {
    let rule_of = || rule.to_string();
    let mut parent = None;
    let mut cn = None;
    let mut attributes = BTreeMap::new();
    let mut on_create = BTreeMap::new();
    let mut members = MemberPolicy::OnPremises;
    let mut member_of = Vec::new();
    let mut to_cloud = BTreeMap::new();
    let mut owners = None;
    for (key, value) in map {
        match key.as_str() {
            "parent" => parent = Some(required_text(rule, "parent", value)?),
            "cn" => cn = Some(required_text(rule, "cn", value)?),
            "attributes" => attributes = attribute_map(rule, "attributes", value)?,
            "on_create" => on_create = attribute_map(rule, "on_create", value)?,
            "members" => members = member_policy(rule, value)?,
            "member_of" => member_of = dn_list(rule, "member_of", value)?,
            "owners" => owners = owners_attribute(rule, value)?,
            "to_cloud" => to_cloud = cloud_properties(rule, value)?,
            other => {
                return Err(OutputError::UnknownKey {
                    rule: rule_of(),
                    key: other.to_string(),
                })
            }
        }
    }
    let parent = parent.ok_or_else(|| OutputError::NoParent { rule: rule_of() })?;
    let cn = cn.ok_or_else(|| OutputError::NoCn { rule: rule_of() })?;
    if !parent.contains('=') {
        return Err(OutputError::ParentNotADn {
            rule: rule_of(),
            parent,
        });
    }
    // Counted as AD counts, so a cn that fits here is never refused for its length.
    check_units(rule, "cn", &cn, MAX_CN_UNITS)?;
    check_on_create(rule, &attributes, &on_create)?;
    if let Some(attr) = &owners {
        if let Some(other) = attributes
            .keys()
            .chain(on_create.keys())
            .find(|a| a.eq_ignore_ascii_case(attr))
        {
            return Err(OutputError::OwnersAlsoSet {
                rule: rule_of(),
                attr: attr.clone(),
                other: other.clone(),
            });
        }
    }
    Ok(DesiredGroup {
        rule: rule.to_string(),
        parent,
        cn,
        attributes,
        on_create,
        members,
        member_of,
        to_cloud,
        owners,
    })
}

/// `owners`: the DN-valued AD attribute the cloud group's owners go to (`"managedBy"`), or `()`.
fn owners_attribute(rule: &str, value: Dynamic) -> Result<Option<String>, OutputError> {
    if value.is_unit() {
        return Ok(None);
    }
    let type_name = type_name(&value);
    let name = value.into_string().map_err(|_| OutputError::OwnersType {
        rule: rule.to_string(),
        type_name,
    })?;
    if !is_ldap_display_name(&name) || name.chars().count() > MAX_NAME_CHARS {
        return Err(OutputError::OwnersName {
            rule: rule.to_string(),
            name,
        });
    }
    if let Some(reserved) = RESERVED_ATTRIBUTES
        .iter()
        .find(|r| r.eq_ignore_ascii_case(&name))
    {
        return Err(OutputError::OwnersReserved {
            rule: rule.to_string(),
            name,
            reserved,
        });
    }
    Ok(Some(name))
}

/// `to_cloud`: directory extension properties (`extension_<app id without dashes>_<name>`, the
/// only cloud properties an app writes here) and their values: a string, an integer, a bool, or
/// `()` to clear.
fn cloud_properties(
    rule: &str,
    value: Dynamic,
) -> Result<BTreeMap<String, serde_json::Value>, OutputError> {
    let typ = type_name(&value);
    let Some(map) = value.try_cast::<Map>() else {
        return Err(OutputError::ToCloudType {
            rule: rule.to_string(),
            type_name: typ,
        });
    };
    let mut out = BTreeMap::new();
    for (name, v) in map {
        if !is_extension_property(&name) {
            return Err(OutputError::NotAnExtension {
                rule: rule.to_string(),
                name: name.to_string(),
            });
        }
        let json = if v.is_unit() {
            serde_json::Value::Null
        } else if let Ok(b) = v.as_bool() {
            serde_json::Value::Bool(b)
        } else if let Ok(i) = v.as_int() {
            serde_json::Value::from(i)
        } else if v.is_string() {
            serde_json::Value::String(v.into_string().unwrap_or_default())
        } else {
            return Err(OutputError::ToCloudValue {
                rule: rule.to_string(),
                name: name.to_string(),
                type_name: type_name(&v),
            });
        };
        out.insert(name.to_string(), json);
    }
    Ok(out)
}

/// `extension_` + 32 hex digits (the app id without dashes) + `_` + a name.
fn is_extension_property(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("extension_") else {
        return false;
    };
    let (app, prop) = rest.split_at(rest.len().min(32));
    app.len() == 32
        && app.chars().all(|c| c.is_ascii_hexdigit())
        && prop.strip_prefix('_').is_some_and(|p| {
            !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// A DN or an array of DNs (`()` or `[]` for none): sorted, unique, each checked to be a DN.
fn dn_list(rule: &str, key: &'static str, value: Dynamic) -> Result<Vec<String>, OutputError> {
    let items: Vec<Dynamic> = if value.is_unit() {
        Vec::new()
    } else if value.is_array() {
        value.cast::<Array>()
    } else {
        vec![value]
    };
    let mut out = std::collections::BTreeSet::new();
    for item in items {
        let type_name = type_name(&item);
        let dn = item.into_string().map_err(|_| OutputError::DnType {
            rule: rule.to_string(),
            key,
            type_name,
        })?;
        if crate::ad::dn::normalize(&dn).is_err() || !dn.contains('=') {
            return Err(OutputError::NotADn {
                rule: rule.to_string(),
                key,
                dn,
            });
        }
        out.insert(dn);
    }
    Ok(out.into_iter().collect())
}

/// `on_create` names no attribute `attributes` also sets, and both fit one LDAP add together.
fn check_on_create(rule: &str, attributes: &Values, on_create: &Values) -> Result<(), OutputError> {
    if let Some(name) = on_create
        .keys()
        .find(|n| attributes.keys().any(|a| a.eq_ignore_ascii_case(n)))
    {
        return Err(OutputError::BothOnCreate {
            rule: rule.to_string(),
            name: name.clone(),
        });
    }
    let total: usize = attributes
        .values()
        .chain(on_create.values())
        .flatten()
        .flatten()
        .map(String::len)
        .sum();
    if total > MAX_TOTAL_BYTES {
        return Err(OutputError::TotalTooLarge {
            rule: rule.to_string(),
        });
    }
    Ok(())
}

fn required_text(rule: &str, key: &'static str, value: Dynamic) -> Result<String, OutputError> {
    let type_name = type_name(&value);
    match value.into_immutable_string() {
        Ok(s) if !s.trim().is_empty() => Ok(s.to_string()),
        Ok(_) => Err(OutputError::EmptyText {
            rule: rule.to_string(),
            key,
        }),
        Err(_) => Err(OutputError::NotText {
            rule: rule.to_string(),
            key,
            type_name,
        }),
    }
}

fn member_policy(rule: &str, value: Dynamic) -> Result<MemberPolicy, OutputError> {
    if value.is_unit() {
        return Ok(MemberPolicy::OnPremises);
    }
    match value.into_immutable_string().as_deref().map(str::to_string) {
        Ok(s) if s == "on-premises" => Ok(MemberPolicy::OnPremises),
        Ok(s) if s == "none" => Ok(MemberPolicy::None),
        Ok(s) if s == "flatten" => Ok(MemberPolicy::Flatten),
        _ => Err(OutputError::MemberPolicy {
            rule: rule.to_string(),
        }),
    }
}

/// Attribute name -> values (`None` = clear).
type Values = BTreeMap<String, Option<Vec<String>>>;

fn attribute_map(rule: &str, key: &'static str, value: Dynamic) -> Result<Values, OutputError> {
    let rule_of = || rule.to_string();
    if value.is_unit() {
        return Ok(BTreeMap::new());
    }
    let type_name = type_name(&value);
    let Some(map) = value.try_cast::<Map>() else {
        return Err(OutputError::AttributesType {
            rule: rule_of(),
            key,
            type_name,
        });
    };
    if map.len() > MAX_ATTRIBUTES {
        return Err(OutputError::TooManyAttributes {
            rule: rule_of(),
            count: map.len(),
        });
    }
    let mut out = BTreeMap::new();
    // LDAP attribute names are case-insensitive: two spellings of one name are a mistake.
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut total = 0usize;
    for (name, v) in map {
        let name = name.to_string();
        if !is_ldap_display_name(&name) || name.chars().count() > MAX_NAME_CHARS {
            return Err(OutputError::AttributeName {
                rule: rule_of(),
                name,
            });
        }
        if let Some(reserved) = RESERVED_ATTRIBUTES
            .iter()
            .find(|r| r.eq_ignore_ascii_case(&name))
        {
            return Err(OutputError::Reserved {
                rule: rule_of(),
                name,
                reserved,
            });
        }
        if let Some(first) = seen.insert(name.to_ascii_lowercase(), name.clone()) {
            return Err(OutputError::Twice {
                rule: rule_of(),
                name,
                first,
            });
        }
        let values = attribute_values(rule, &name, v)?;
        total += values.iter().flatten().map(String::len).sum::<usize>();
        if total > MAX_TOTAL_BYTES {
            return Err(OutputError::TotalTooLargeAt {
                rule: rule_of(),
                name,
            });
        }
        out.insert(name, values);
    }
    Ok(out)
}

/// A name in backticks, or quoted and cut when it is too long to read.
fn ticked(name: &str) -> String {
    if name.chars().nth(super::text::QUOTE_CHARS).is_none() {
        format!("`{name}`")
    } else {
        quoted(name)
    }
}

fn is_ldap_display_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn attribute_values(
    rule: &str,
    name: &str,
    v: Dynamic,
) -> Result<Option<Vec<String>>, OutputError> {
    let mut values = Vec::new();
    if v.is_array() {
        let items = v.cast::<Array>();
        // Counted before anything is converted: a million-element array is refused at once.
        if items.len() > MAX_VALUES {
            return Err(OutputError::TooManyValues {
                rule: rule.to_string(),
                name: name.to_string(),
                count: items.len(),
            });
        }
        for item in items {
            if item.is_array() || item.is_map() {
                return Err(OutputError::Nested {
                    rule: rule.to_string(),
                    name: name.to_string(),
                    type_name: type_name(&item),
                });
            }
            push_scalar(rule, name, item, &mut values)?;
        }
    } else {
        push_scalar(rule, name, v, &mut values)?;
    }
    // Keep the order the rule chose; drop exact repeats (AD refuses duplicate values).
    let mut seen: HashSet<&str> = HashSet::with_capacity(values.len());
    let keep: Vec<bool> = values.iter().map(|v| seen.insert(v.as_str())).collect();
    drop(seen);
    let mut keep = keep.into_iter();
    values.retain(|_| keep.next().unwrap_or(false));
    Ok((!values.is_empty()).then_some(values))
}

fn push_scalar(
    rule: &str,
    name: &str,
    v: Dynamic,
    out: &mut Vec<String>,
) -> Result<(), OutputError> {
    if v.is_unit() {
        return Ok(());
    }
    if let Ok(i) = v.as_int() {
        out.push(i.to_string());
        return Ok(());
    }
    if let Ok(b) = v.as_bool() {
        out.push(if b { "TRUE" } else { "FALSE" }.to_string());
        return Ok(());
    }
    if v.is_string() || v.is_char() {
        // Measured before it is copied out of the script value.
        let s = if v.is_char() {
            v.to_string().into()
        } else {
            match v.into_immutable_string() {
                Ok(s) => s,
                Err(_) => return Ok(()),
            }
        };
        if s.len() > MAX_VALUE_BYTES {
            return Err(OutputError::ValueTooLarge {
                rule: rule.to_string(),
                name: name.to_string(),
                bytes: s.len(),
            });
        }
        if !s.is_empty() {
            out.push(s.to_string());
        }
        return Ok(());
    }
    Err(OutputError::ValueType {
        rule: rule.to_string(),
        name: name.to_string(),
        type_name: type_name(&v),
    })
}

/// The type as scripts know it (`type_of`), for messages.
fn type_name(v: &Dynamic) -> &'static str {
    if v.is::<ScriptGroup>() {
        "Group"
    } else if v.is_int() {
        "integer"
    } else if v.is_float() {
        "float"
    } else {
        v.type_name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(cn: &str, attributes: &[(&str, Option<Vec<String>>)]) -> DesiredGroup {
        DesiredGroup {
            to_cloud: Default::default(),
            member_of: Default::default(),
            owners: None,
            rule: "10-x.rhai".into(),
            parent: "OU=A,DC=x".into(),
            cn: cn.into(),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            on_create: BTreeMap::new(),
            members: MemberPolicy::OnPremises,
        }
    }

    fn one(v: String) -> Option<Vec<String>> {
        Some(vec![v])
    }

    /// (attribute, limit) of each violation.
    fn over(g: &DesiredGroup) -> Vec<(String, usize, usize)> {
        over_known_limits(g)
            .into_iter()
            .map(|e| (e.attr, e.units, e.max))
            .collect()
    }

    #[test]
    fn known_limits_count_utf16_units_at_every_limit() {
        for (attr, max) in [
            ("cn", 64),
            ("displayName", 256),
            ("description", 1024),
            ("sAMAccountName", 256),
            ("mailNickname", 64),
            ("info", 1024),
            ("extensionAttribute1", 1024),
            ("extensionAttribute15", 1024),
            ("proxyAddresses", 1123),
        ] {
            assert_eq!(known_limit(attr), Some(max), "{attr}");
            // Half emoji: exactly `max` units fits, one BMP character more does not.
            let exact = if max % 2 == 0 {
                "😀".repeat(max / 2)
            } else {
                format!("{}a", "😀".repeat(max / 2))
            };
            let longer = format!("{exact}a");
            let (fits, refused) = if attr == "cn" {
                (group(&exact, &[]), group(&longer, &[]))
            } else {
                (
                    group("c", &[(attr, one(exact.clone()))]),
                    group("c", &[(attr, one(longer.clone()))]),
                )
            };
            assert_eq!(over(&fits), vec![], "{attr}");
            assert_eq!(
                over(&refused),
                vec![(attr.to_string(), max + 1, max)],
                "{attr}"
            );
        }
        assert_eq!(known_limit("DISPLAYNAME"), Some(256));
        assert_eq!(known_limit("extensionAttribute16"), None);
        assert_eq!(known_limit("extensionAttribute0"), None);
        assert_eq!(known_limit("extensionAttributeX"), None);
        assert_eq!(known_limit("msExchRecipientDisplayType"), None);
    }

    #[test]
    fn every_value_of_a_multi_valued_attribute_is_measured() {
        let g = group(
            "c",
            &[
                (
                    "proxyAddresses",
                    Some(vec!["SMTP:a@x.test".into(), "𝔸".repeat(562)]),
                ),
                ("description", None),
                ("unknownAttr", one("😀".repeat(5000))),
            ],
        );
        assert_eq!(over(&g), vec![("proxyAddresses".to_string(), 1124, 1123)]);
    }

    #[test]
    fn the_message_names_rule_attribute_units_and_limit() {
        let e = over_known_limits(&group("c", &[("displayName", one("😀".repeat(129)))]));
        assert_eq!(
            e.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec![
                "10-x.rhai returned displayName of 258 UTF-16 code units (129 characters); \
                 Active Directory allows at most 256 (an emoji or other character outside the \
                 Basic Multilingual Plane counts 2)"
            ]
        );
        let ascii = check_units("10-x.rhai", "cn", &"a".repeat(65), 64).expect_err("too long");
        assert_eq!(
            ascii.to_string(),
            "10-x.rhai returned cn of 65 UTF-16 code units (65 characters); Active Directory allows at most 64"
        );
    }
}
