//! Checks what `map(group)` returned and turns it into a [`DesiredGroup`].
//!
//! Accepted: `()` (skip the group) or
//! `#{ parent, cn, attributes: #{ name: value }, members: "on-premises" | "flatten" | "none" }`.
//! Attribute values: string, integer, bool, `()` (clear) or an array of those; empty strings and
//! `()` inside arrays are dropped (LDAP has no empty values), and an empty result clears.

use std::collections::BTreeMap;

use rhai::{Array, Dynamic, Map};

use super::group::ScriptGroup;
use super::{DesiredGroup, MemberPolicy};

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

/// AD's `cn` is at most 64 characters (schema rangeUpper).
const MAX_CN_CHARS: usize = 64;

const KEYS: &str = "parent, cn, attributes, members";

/// `Ok(None)` when the rule skips the group. Errors are messages naming the rule and the key.
pub(crate) fn desired_group(rule: &str, out: Dynamic) -> Result<Option<DesiredGroup>, String> {
    if out.is_unit() {
        return Ok(None);
    }
    let type_name = type_name(&out);
    let Some(map) = out.try_cast::<Map>() else {
        return Err(format!(
            "map() in {rule} must return () or a map #{{ {KEYS} }}, not {type_name}"
        ));
    };

    let mut parent = None;
    let mut cn = None;
    let mut attributes = BTreeMap::new();
    let mut members = MemberPolicy::OnPremises;
    for (key, value) in map {
        match key.as_str() {
            "parent" => parent = Some(required_text(rule, "parent", value)?),
            "cn" => cn = Some(required_text(rule, "cn", value)?),
            "attributes" => attributes = attribute_map(rule, value)?,
            "members" => members = member_policy(rule, value)?,
            other => {
                return Err(format!(
                    "{rule} returned an unknown key `{other}` (allowed: {KEYS}); attributes go inside `attributes: #{{ ... }}`"
                ))
            }
        }
    }
    let parent = parent.ok_or_else(|| format!("{rule} returned no `parent` (the container DN)"))?;
    let cn = cn.ok_or_else(|| format!("{rule} returned no `cn`"))?;
    if !parent.contains('=') {
        return Err(format!(
            "{rule} returned parent {parent:?}, which is not a distinguished name"
        ));
    }
    let cn_len = cn.chars().count();
    if cn_len > MAX_CN_CHARS {
        return Err(format!(
            "{rule} returned a cn of {cn_len} characters; Active Directory allows at most {MAX_CN_CHARS}"
        ));
    }
    Ok(Some(DesiredGroup {
        rule: rule.to_string(),
        parent,
        cn,
        attributes,
        members,
    }))
}

fn required_text(rule: &str, key: &str, value: Dynamic) -> Result<String, String> {
    let type_name = type_name(&value);
    match value.into_immutable_string() {
        Ok(s) if !s.trim().is_empty() => Ok(s.to_string()),
        Ok(_) => Err(format!("{rule} returned an empty `{key}`")),
        Err(_) => Err(format!(
            "{rule} returned `{key}` as {type_name}; it must be a string"
        )),
    }
}

fn member_policy(rule: &str, value: Dynamic) -> Result<MemberPolicy, String> {
    if value.is_unit() {
        return Ok(MemberPolicy::OnPremises);
    }
    match value.into_immutable_string().as_deref().map(str::to_string) {
        Ok(s) if s == "on-premises" => Ok(MemberPolicy::OnPremises),
        Ok(s) if s == "none" => Ok(MemberPolicy::None),
        Ok(s) if s == "flatten" => Ok(MemberPolicy::Flatten),
        _ => Err(format!(
            "{rule} returned an unknown `members` value; use \"on-premises\", \"flatten\" or \"none\""
        )),
    }
}

fn attribute_map(
    rule: &str,
    value: Dynamic,
) -> Result<BTreeMap<String, Option<Vec<String>>>, String> {
    if value.is_unit() {
        return Ok(BTreeMap::new());
    }
    let type_name = type_name(&value);
    let Some(map) = value.try_cast::<Map>() else {
        return Err(format!(
            "{rule} returned `attributes` as {type_name}; it must be a map #{{ ldapDisplayName: value }}"
        ));
    };
    let mut out = BTreeMap::new();
    // LDAP attribute names are case-insensitive: two spellings of one name are a mistake.
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (name, v) in map {
        let name = name.to_string();
        if !is_ldap_display_name(&name) {
            return Err(format!(
                "{rule} returned attribute `{name}`, which is not an LDAP attribute name (letters, digits, hyphens, starting with a letter)"
            ));
        }
        if let Some(reserved) = RESERVED_ATTRIBUTES
            .iter()
            .find(|r| r.eq_ignore_ascii_case(&name))
        {
            return Err(format!(
                "{rule} may not set attribute `{name}`: the host owns `{reserved}`"
            ));
        }
        if let Some(first) = seen.insert(name.to_ascii_lowercase(), name.clone()) {
            return Err(format!(
                "{rule} returned attribute `{name}` twice (also as `{first}`)"
            ));
        }
        let values = attribute_values(rule, &name, v)?;
        out.insert(name, values);
    }
    Ok(out)
}

fn is_ldap_display_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn attribute_values(rule: &str, name: &str, v: Dynamic) -> Result<Option<Vec<String>>, String> {
    let mut values = Vec::new();
    if v.is_array() {
        for item in v.cast::<Array>() {
            if item.is_array() || item.is_map() {
                return Err(format!(
                    "{rule} returned a nested {} in attribute `{name}`; values must be strings, integers or booleans",
                    type_name(&item)
                ));
            }
            push_scalar(rule, name, item, &mut values)?;
        }
    } else {
        push_scalar(rule, name, v, &mut values)?;
    }
    // Keep the order the rule chose; drop exact repeats (AD refuses duplicate values).
    let mut unique: Vec<String> = Vec::with_capacity(values.len());
    for v in values {
        if !unique.contains(&v) {
            unique.push(v);
        }
    }
    Ok((!unique.is_empty()).then_some(unique))
}

fn push_scalar(rule: &str, name: &str, v: Dynamic, out: &mut Vec<String>) -> Result<(), String> {
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
        let s = v.to_string();
        if !s.is_empty() {
            out.push(s);
        }
        return Ok(());
    }
    Err(format!(
        "{rule} returned {} in attribute `{name}`; values must be strings, integers, booleans or () to clear",
        type_name(&v)
    ))
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
