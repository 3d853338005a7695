//! Turning stored objects into Graph JSON under a `$select`.

use serde_json::{json, Map, Value};

use crate::schema;
use crate::store::Obj;

/// What to write for a selected property the object never had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unset {
    /// Lists and GETs return `null`.
    Null,
    /// Delta omits never-set properties.
    Omit,
}

/// The properties to emit: the `$select` list (without navigation properties) or the defaults.
pub fn property_names<'a>(obj: &Obj, select: Option<&'a [String]>) -> Vec<&'a str> {
    match select {
        Some(sel) => sel
            .iter()
            .map(String::as_str)
            .filter(|p| *p != "id" && !schema::is_navigation(obj.kind, p))
            .collect(),
        None => schema::default_properties(obj.kind).to_vec(),
    }
}

/// `id` plus the chosen properties.
pub fn render(obj: &Obj, select: Option<&[String]>, unset: Unset) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("id".into(), json!(obj.id));
    for p in property_names(obj, select) {
        match obj.props.get(p) {
            // Graph leaves out a directory extension property without a value.
            Some(Value::Null) if schema::is_extension_property(p) => {}
            Some(v) => {
                out.insert(p.to_string(), v.clone());
            }
            // The name was checked against the request's version when `$select` was parsed.
            None if (unset == Unset::Null || schema::reported_when_unset(obj.kind, p))
                && schema::is_declared(obj.kind, p) =>
            {
                out.insert(p.to_string(), schema::unset_value(obj.kind, p));
            }
            None => {}
        }
    }
    out
}

/// A directoryObject collection item: `@odata.type` first, then the properties.
pub fn render_directory_object(obj: &Obj, select: Option<&[String]>) -> Value {
    let mut m = render(obj, select, Unset::Null);
    m.insert("@odata.type".into(), json!(obj.kind.odata_type()));
    Value::Object(m)
}

/// `<root>/$metadata#users(a,b)` style context; `suffix` is e.g. `/$entity`.
pub fn context(root: &str, set: &str, select: Option<&[String]>, suffix: &str) -> String {
    match select {
        Some(sel) if !sel.is_empty() => {
            format!("{root}/$metadata#{set}({}){suffix}", sel.join(","))
        }
        _ => format!("{root}/$metadata#{set}{suffix}"),
    }
}
