//! The test file format: TOML read into [`TestFile`], every problem reported with the file, line
//! and column it concerns (TOML's own errors included).
//!
//! ```toml
//! now = "2024-06-01T00:00:00Z"          # optional: what now() returns
//! [settings]                             # optional: rule settings (else the config's)
//! m365_container = "OU=M365,DC=corp,DC=example,DC=test"
//!
//! [[case]]
//! name = "Microsoft 365 group"
//! group = { displayName = "Sales", groupTypes = ["Unified"], mailEnabled = true }
//! [case.expect]
//! cn = "Sales_123456789abc"
//! attributes = { groupType = 8, info = "(cleared)" }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};
use toml::Spanned;

use super::DEFAULT_GROUP_ID;
use crate::rules::{Diagnostic, MemberPolicy, Now};

/// The spelling of a cleared attribute in `attributes`.
pub(super) const CLEARED: &str = "(cleared)";

/// A parsed test file.
#[derive(Debug, Clone, PartialEq)]
pub struct TestFile {
    /// `[settings]`: replaces the config's rule settings for this file's cases.
    pub settings: Option<BTreeMap<String, Value>>,
    /// `now`: what `now()` returns, unless a case sets its own.
    pub now: Option<Now>,
    pub cases: Vec<Case>,
}

/// One `[[case]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub name: String,
    /// Line of the `[[case]]` header.
    pub line: usize,
    /// The group as rules see it (`CloudObject::to_rule_json()` form).
    pub group: Value,
    pub now: Option<Now>,
    pub expect: Expect,
}

/// What a case expects.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// `expect = "skip"`: out of scope (no rule in scope, or `map` returned `()`).
    Skip,
    /// `expect = "keep"`: the rule returned `#{ leave: "keep" }`.
    Keep,
    /// `expect = "delete after 7d"`: the rule returned `#{ leave: "delete", after: "7d" }`.
    DeleteAfter(u64),
    /// `[case.expect] error = "..."`: evaluation fails with a message containing this text.
    Error(String),
    /// `[case.expect]` with any of `rule`, `parent`, `cn`, `members`, `attributes`, `on_create`.
    Group(ExpectedGroup),
}

/// The fields of the AD group a case expects; `None` = not checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExpectedGroup {
    /// The rule file's name, `.rhai` included.
    pub rule: Option<String>,
    pub parent: Option<String>,
    pub cn: Option<String>,
    pub members: Option<MemberPolicy>,
    /// The attribute the rule writes the owners to (`owners`); `""` expects none.
    pub owners: Option<String>,
    /// The groups the rule nests the group into (`member_of`), in any order; `[]` expects none.
    pub member_of: Option<Vec<String>>,
    /// By name as written in the test file; matched to the rule's names ignoring case.
    pub attributes: BTreeMap<String, ExpectedValue>,
    /// The rule's `on_create` attributes, matched the same way.
    pub on_create: BTreeMap<String, ExpectedValue>,
    /// Attributes the rule returns (in `attributes` or `on_create`) but the test does not list
    /// are failures.
    pub exact_attributes: bool,
}

/// An expected attribute value, normalised as the host normalises rule output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedValue {
    Values(Vec<String>),
    /// `"(cleared)"` or `[]`: the rule returns `()` or nothing that is written.
    Cleared,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    settings: Option<toml::Table>,
    now: Option<Spanned<toml::Value>>,
    #[serde(default, rename = "case")]
    cases: Vec<Spanned<RawCase>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    group: Option<Spanned<toml::Table>>,
    now: Option<Spanned<toml::Value>>,
    expect: Spanned<toml::Value>,
}

const EXPECT_KEYS: &str =
    "rule, parent, cn, members, owners, member_of, attributes, on_create, exact_attributes, error";

/// Positions in the source text, for diagnostics.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn at(&self, offset: usize, message: String) -> Diagnostic {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).unwrap_or("").chars().count() + 1;
        Diagnostic {
            file: self.path.to_path_buf(),
            line: Some(line),
            column: Some(column),
            message,
        }
    }

    fn line(&self, offset: usize) -> usize {
        self.at(offset, String::new()).line.unwrap_or(1)
    }
}

/// Parses a test file; `path` is only used in diagnostics.
pub fn parse(path: &Path, text: &str) -> Result<TestFile, Diagnostic> {
    let src = Source { path, text };
    let raw: RawFile = toml::from_str(text).map_err(|e| match e.span() {
        Some(span) => src.at(span.start, e.message().to_string()),
        None => Diagnostic::file(path, e.message().to_string()),
    })?;
    if raw.cases.is_empty() {
        return Err(Diagnostic::file(
            path,
            "no test cases: add [[case]] entries with `name`, `group` and `expect`".to_string(),
        ));
    }
    let settings = match raw.settings {
        None => None,
        Some(table) => Some(
            table
                .iter()
                .map(|(k, v)| {
                    to_json(v)
                        .map(|j| (k.clone(), j))
                        .map_err(|m| Diagnostic::file(path, format!("[settings] {k}: {m}")))
                })
                .collect::<Result<BTreeMap<_, _>, _>>()?,
        ),
    };
    let now = raw.now.map(|n| parse_now(&src, &n, "now")).transpose()?;
    let mut cases = Vec::with_capacity(raw.cases.len());
    for spanned in raw.cases {
        let line = src.line(spanned.span().start);
        let raw_case = spanned.into_inner();
        let name = raw_case.name;
        let context = |what: &str| format!("case {name:?}: {what}");
        let group_span = raw_case.group.as_ref().map_or(0, |g| g.span().start);
        let group = raw_case
            .group
            .as_ref()
            .map_or_else(
                || group_json(&toml::Table::new()),
                |g| group_json(g.get_ref()),
            )
            .map_err(|m| src.at(group_span, context(&m.to_string())))?;
        let now = raw_case
            .now
            .map(|n| parse_now(&src, &n, &context("now")))
            .transpose()?;
        let expect = parse_expect(raw_case.expect.get_ref())
            .map_err(|m| src.at(raw_case.expect.span().start, context(&m.to_string())))?;
        cases.push(Case {
            name,
            line,
            group,
            now,
            expect,
        });
    }
    Ok(TestFile {
        settings,
        now,
        cases,
    })
}

/// `now` as an RFC 3339 string or a TOML offset date-time.
fn parse_now(
    src: &Source<'_>,
    value: &Spanned<toml::Value>,
    what: &str,
) -> Result<Now, Diagnostic> {
    let text = match value.get_ref() {
        toml::Value::String(s) => s.clone(),
        toml::Value::Datetime(d) => d.to_string(),
        other => {
            return Err(src.at(
                value.span().start,
                format!(
                    "{what} must be an RFC 3339 time such as \"2024-05-01T12:00:00Z\", not a {}",
                    other.type_str()
                ),
            ))
        }
    };
    Now::parse(&text).map_err(|e| src.at(value.span().start, format!("{what}: {e}")))
}

/// A TOML float JSON cannot hold (NaN, infinity).
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("{0} has no JSON form")]
struct NoJsonForm(f64);

/// What is wrong with a case's `group`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum GroupError {
    #[error("group.{key}: {cause}")]
    Property {
        key: String,
        #[source]
        cause: NoJsonForm,
    },
    #[error("group.id must be a string")]
    IdType,
    #[error("group.members must be an array of {{ id = \"...\", type = \"user\" }}")]
    MembersType,
    #[error("group.members[{0}] must be {{ id = \"...\", type = \"user\" | \"group\" | ... }}")]
    Member(usize),
    #[error("group.members[{index}]: unknown key `{key}` (allowed: id, type)")]
    MemberKey { index: usize, key: String },
}

/// What is wrong with a case's `expect`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ExpectError {
    #[error("expect: {0}")]
    Duration(#[source] crate::rules::DurationError),
    #[error("expect must be \"skip\", \"keep\", \"delete after <duration>\" or a table ([case.expect] with rule, parent, cn, members, attributes, on_create or error)")]
    Type,
    #[error("expect: unknown key `{0}` (allowed: {keys})", keys = EXPECT_KEYS)]
    UnknownKey(String),
    #[error("expect: `error` cannot be combined with other expectations")]
    ErrorCombined,
    #[error("expect.error must be a non-empty string: text the error message contains")]
    ErrorText,
    #[error("expect.{key} must be a string, not a {type_name}")]
    NotAString {
        key: &'static str,
        type_name: &'static str,
    },
    #[error("expect.members must be \"on-premises\", \"flatten\" or \"none\", not {0:?}")]
    Members(String),
    #[error("expect.exact_attributes must be true or false")]
    ExactAttributes,
    #[error("expect.member_of must be a DN or an array of DNs")]
    MemberOf,
    #[error("expect.member_of must be a DN or an array of DNs, not a {0}")]
    MemberOfType(&'static str),
    /// `attributes` or `on_create` names an attribute twice (in two cases).
    #[error("expect.{key} lists `{name}` twice (also as `{first}`); attribute names ignore case")]
    AttributeTwice {
        key: &'static str,
        name: String,
        first: String,
    },
    #[error("expect.{key}.{name}: {cause}")]
    Attribute {
        key: &'static str,
        name: String,
        #[source]
        cause: Box<ExpectError>,
    },
    #[error("expect.{0} must be a table {{ name = value | [values] | \"(cleared)\" }}")]
    AttributesType(&'static str),
    /// An expected attribute value that is not a string, an integer or a boolean.
    #[error("values must be strings, integers or booleans (or \"{cleared}\"), not a {0}", cleared = CLEARED)]
    ValueType(&'static str),
}

/// The case's group as the rules see it: Graph property names, `id` defaulted, members as
/// `{ id, type }` with `type` defaulting to `"user"`.
fn group_json(table: &toml::Table) -> Result<Value, GroupError> {
    let mut out = Map::new();
    for (k, v) in table {
        let value = if k == "members" {
            members_json(v)?
        } else {
            to_json(v).map_err(|cause| GroupError::Property {
                key: k.clone(),
                cause,
            })?
        };
        out.insert(k.clone(), value);
    }
    match out.get("id") {
        None => {
            out.insert("id".into(), Value::String(DEFAULT_GROUP_ID.into()));
        }
        Some(Value::String(_)) => {}
        Some(_) => return Err(GroupError::IdType),
    }
    Ok(Value::Object(out))
}

fn members_json(value: &toml::Value) -> Result<Value, GroupError> {
    let Some(list) = value.as_array() else {
        return Err(GroupError::MembersType);
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let bad = || GroupError::Member(i);
        let t = m.as_table().ok_or_else(bad)?;
        if let Some(k) = t.keys().find(|k| *k != "id" && *k != "type") {
            return Err(GroupError::MemberKey {
                index: i,
                key: k.clone(),
            });
        }
        let id = t.get("id").and_then(toml::Value::as_str).ok_or_else(bad)?;
        let kind = match t.get("type") {
            None => "user",
            Some(v) => v.as_str().ok_or_else(bad)?,
        };
        out.push(serde_json::json!({ "id": id, "type": kind }));
    }
    Ok(Value::Array(out))
}

/// TOML to JSON; date-times become their RFC 3339 text (Graph sends times as strings).
fn to_json(value: &toml::Value) -> Result<Value, NoJsonForm> {
    Ok(match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or(NoJsonForm(*f))?,
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(to_json).collect::<Result<_, _>>()?),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| to_json(v).map(|j| (k.clone(), j)))
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn parse_expect(value: &toml::Value) -> Result<Expect, ExpectError> {
    let table = match value {
        toml::Value::String(s) if s == "skip" => return Ok(Expect::Skip),
        toml::Value::String(s) if s == "keep" => return Ok(Expect::Keep),
        toml::Value::String(s) if s.starts_with("delete after ") => {
            let after = s.trim_start_matches("delete after ");
            return crate::rules::parse_duration(after)
                .map(Expect::DeleteAfter)
                .map_err(ExpectError::Duration);
        }
        toml::Value::Table(t) => t,
        _ => return Err(ExpectError::Type),
    };
    if let Some(k) = table
        .keys()
        .find(|k| !EXPECT_KEYS.split(", ").any(|a| a == *k))
    {
        return Err(ExpectError::UnknownKey(k.clone()));
    }
    if let Some(err) = table.get("error") {
        if table.len() > 1 {
            return Err(ExpectError::ErrorCombined);
        }
        return match err.as_str() {
            Some(s) if !s.is_empty() => Ok(Expect::Error(s.to_string())),
            _ => Err(ExpectError::ErrorText),
        };
    }
    let text = |key: &'static str| -> Result<Option<String>, ExpectError> {
        match table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(ExpectError::NotAString {
                key,
                type_name: other.type_str(),
            }),
        }
    };
    let rule = text("rule")?.map(|r| {
        if r.ends_with(".rhai") {
            r
        } else {
            format!("{r}.rhai")
        }
    });
    let members = match text("members")?.as_deref() {
        None => None,
        Some("on-premises") => Some(MemberPolicy::OnPremises),
        Some("flatten") => Some(MemberPolicy::Flatten),
        Some("none") => Some(MemberPolicy::None),
        Some(other) => return Err(ExpectError::Members(other.to_string())),
    };
    let exact_attributes = match table.get("exact_attributes") {
        None => false,
        Some(toml::Value::Boolean(b)) => *b,
        Some(_) => return Err(ExpectError::ExactAttributes),
    };
    let member_of = match table.get("member_of") {
        None => None,
        Some(toml::Value::String(dn)) => Some(vec![dn.clone()]),
        Some(toml::Value::Array(items)) => Some(
            items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<String>>>()
                .ok_or(ExpectError::MemberOf)?,
        ),
        Some(other) => return Err(ExpectError::MemberOfType(other.type_str())),
    };
    Ok(Expect::Group(ExpectedGroup {
        rule,
        parent: text("parent")?,
        cn: text("cn")?,
        members,
        owners: text("owners")?,
        member_of,
        attributes: expected_attributes(table, "attributes")?,
        on_create: expected_attributes(table, "on_create")?,
        exact_attributes,
    }))
}

/// `expect.<key>` (`attributes` or `on_create`): a table `{ name = value | [values] | "(cleared)" }`.
fn expected_attributes(
    table: &toml::Table,
    key: &'static str,
) -> Result<BTreeMap<String, ExpectedValue>, ExpectError> {
    let mut attributes = BTreeMap::new();
    match table.get(key) {
        None => {}
        Some(toml::Value::Table(t)) => {
            let mut seen: BTreeMap<String, &str> = BTreeMap::new();
            for (name, v) in t {
                if let Some(first) = seen.insert(name.to_ascii_lowercase(), name) {
                    return Err(ExpectError::AttributeTwice {
                        key,
                        name: name.clone(),
                        first: first.to_string(),
                    });
                }
                let value = expected_value(v).map_err(|cause| ExpectError::Attribute {
                    key,
                    name: name.clone(),
                    cause: Box::new(cause),
                })?;
                attributes.insert(name.clone(), value);
            }
        }
        Some(_) => return Err(ExpectError::AttributesType(key)),
    }
    Ok(attributes)
}

/// A value as the host writes it: integers in decimal, booleans TRUE/FALSE, empty strings
/// dropped, repeats dropped; nothing left (or `"(cleared)"`) is a cleared attribute.
fn expected_value(value: &toml::Value) -> Result<ExpectedValue, ExpectError> {
    if value.as_str() == Some(CLEARED) {
        return Ok(ExpectedValue::Cleared);
    }
    let items: Vec<&toml::Value> = match value {
        toml::Value::Array(a) => a.iter().collect(),
        one => vec![one],
    };
    let mut values: Vec<String> = Vec::new();
    for item in items {
        let v = match item {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => if *b { "TRUE" } else { "FALSE" }.to_string(),
            other => return Err(ExpectError::ValueType(other.type_str())),
        };
        if !v.is_empty() && !values.contains(&v) {
            values.push(v);
        }
    }
    Ok(if values.is_empty() {
        ExpectedValue::Cleared
    } else {
        ExpectedValue::Values(values)
    })
}
