//! Checks on the cloud group before any rule sees it: a value Graph would never send (a
//! displayName over Graph's limit, a 10 MB string, an array of a million values) or a group the
//! delta parser marked as malformed is refused for that group alone, with a short reason and
//! without the value. Rules then never have to guard against hostile input.

use serde_json::{Map, Value};

use super::text::{quoted, utf16_len};
use crate::graph::model::{CloudObject, INVALID_MARKER};

/// Graph's limit on a group's displayName (group resource, v1.0), counted as Graph counts:
/// UTF-16 code units.
pub const GRAPH_DISPLAY_NAME_MAX: usize = 256;

/// Bytes of one string property. Graph's longest group strings (membershipRule, 3,072
/// characters; description, 1,024) stay far below.
pub const MAX_CLOUD_STRING_BYTES: usize = 64 * 1024;

/// Values of one array property (proxyAddresses, assignedLabels, ...); members are not counted.
pub const MAX_CLOUD_ARRAY: usize = 10_000;

/// Properties of one group; the v1.0 group has about 60.
pub const MAX_CLOUD_PROPERTIES: usize = 1_000;

/// Characters of a property name (`extension_<appId>_<name>` is the longest kind Graph sends).
pub const MAX_PROPERTY_NAME_CHARS: usize = 256;

/// The reason the group must not be evaluated, or `None` when it is fine.
pub(crate) fn problem(group: &Value) -> Option<String> {
    let object = group.as_object()?;
    problem_in(object, object.len())
}

/// [`problem`] for a cached group, before it is turned into its rule form (which adds `id`,
/// `deleted` and `members` to its properties).
pub(crate) fn problem_of(group: &CloudObject) -> Option<String> {
    let added = ["id", "deleted", "members"]
        .iter()
        .filter(|k| !group.props.contains_key(**k))
        .count();
    problem_in(&group.props, group.props.len() + added)
}

fn problem_in(object: &Map<String, Value>, properties: usize) -> Option<String> {
    if let Some(Value::String(why)) = object.get(INVALID_MARKER) {
        return Some(cut_reason(why));
    }
    if properties > MAX_CLOUD_PROPERTIES {
        return Some(format!(
            "Graph sent {properties} properties for the group; at most {MAX_CLOUD_PROPERTIES} are accepted"
        ));
    }
    match object.get("displayName") {
        Some(Value::String(name)) => {
            let units = utf16_len(name);
            if units > GRAPH_DISPLAY_NAME_MAX {
                return Some(format!(
                    "displayName is {units} characters long; Graph allows at most {GRAPH_DISPLAY_NAME_MAX}"
                ));
            }
        }
        Some(Value::Null) | None => {}
        Some(other) => {
            return Some(format!(
                "displayName is {}, not a string",
                crate::printable::json_kind(other)
            ))
        }
    }
    for (name, value) in object {
        if name.chars().nth(MAX_PROPERTY_NAME_CHARS).is_some() {
            return Some(format!(
                "Graph sent a property named {}; names are at most {MAX_PROPERTY_NAME_CHARS} characters",
                quoted(name)
            ));
        }
        if name == "members" || name == "id" || name.starts_with('@') {
            continue;
        }
        if let Some(why) = oversized(value) {
            return Some(format!("property {} {why}", quoted(name)));
        }
    }
    None
}

/// What is too big in `value`, walked without recursion (serde_json caps nesting at 128).
fn oversized(value: &Value) -> Option<String> {
    let mut todo = vec![value];
    while let Some(v) = todo.pop() {
        match v {
            Value::String(s) if s.len() > MAX_CLOUD_STRING_BYTES => {
                return Some(format!(
                    "holds a string of {} bytes; at most {MAX_CLOUD_STRING_BYTES} are accepted",
                    s.len()
                ));
            }
            Value::Array(items) if items.len() > MAX_CLOUD_ARRAY => {
                return Some(format!(
                    "holds {} values; at most {MAX_CLOUD_ARRAY} are accepted",
                    items.len()
                ));
            }
            Value::Array(items) => todo.extend(items),
            Value::Object(map) if map.len() > MAX_CLOUD_ARRAY => {
                return Some(format!(
                    "holds {} entries; at most {MAX_CLOUD_ARRAY} are accepted",
                    map.len()
                ));
            }
            Value::Object(map) => todo.extend(map.values()),
            _ => {}
        }
    }
    None
}

/// The marker is the host's own text; it is cut all the same, as every reason is.
fn cut_reason(why: &str) -> String {
    const MAX: usize = 400;
    match why.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &why[..end]),
        None => why.to_string(),
    }
}
