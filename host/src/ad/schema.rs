//! The target forest's schema, read once: attribute definitions (syntax, single-valued,
//! ranges, system-only, linked) and which attributes a class may hold. `check` refuses a
//! value before AD would, with a message that names the attribute and the limit.

use std::collections::{BTreeMap, BTreeSet};

use super::conn::AdConn;
use super::dn;
use super::error::{AdError, AdOp};
use super::search::Scope;

/// attributeSyntax values the checks understand.
pub mod syntax {
    pub const DN: &str = "2.5.5.1";
    pub const CASE_IGNORE_STRING: &str = "2.5.5.4";
    pub const IA5_STRING: &str = "2.5.5.5";
    pub const NUMERIC_STRING: &str = "2.5.5.6";
    pub const BOOLEAN: &str = "2.5.5.8";
    pub const INTEGER: &str = "2.5.5.9";
    pub const OCTET_STRING: &str = "2.5.5.10";
    pub const UNICODE_STRING: &str = "2.5.5.12";
    pub const LARGE_INTEGER: &str = "2.5.5.16";
}

/// One attributeSchema object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrDef {
    /// lDAPDisplayName as AD spells it.
    pub name: String,
    pub single_valued: bool,
    pub range_lower: Option<u32>,
    pub range_upper: Option<u32>,
    /// attributeSyntax OID, e.g. `2.5.5.12`.
    pub syntax: String,
    /// Only the system may write it.
    pub system_only: bool,
    /// A linked attribute (has a linkID), like `member`.
    pub linked: bool,
}

/// One classSchema object; attribute and class names lowercased.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassDef {
    pub name: String,
    pub sub_class_of: Option<String>,
    /// mayContain, mustContain, systemMayContain and systemMustContain together.
    pub attrs: BTreeSet<String>,
    /// auxiliaryClass and systemAuxiliaryClass together.
    pub aux: BTreeSet<String>,
}

/// Why a value would be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaViolation {
    #[error("attribute {} is not in the AD schema", quote(.attr))]
    UnknownAttribute { attr: String },
    #[error("attribute {attr} is not allowed on class {class} (neither the class, its superclasses nor its auxiliary classes list it)")]
    NotAllowed { attr: String, class: String },
    #[error("attribute {attr} is system-only; AD does not let clients write it")]
    SystemOnly { attr: String },
    #[error("attribute {attr} is single-valued, got {count} values")]
    SingleValued { attr: String, count: usize },
    #[error("attribute {attr}: empty values are not allowed")]
    EmptyValue { attr: String },
    #[error("attribute {attr}: value {} is {len} {unit} long, the schema allows at most {max} (rangeUpper)", quote(.value))]
    TooLong {
        attr: String,
        value: String,
        len: usize,
        max: u32,
        unit: &'static str,
    },
    #[error("attribute {attr}: value {} is {len} {unit} long, the schema needs at least {min} (rangeLower)", quote(.value))]
    TooShort {
        attr: String,
        value: String,
        len: usize,
        min: u32,
        unit: &'static str,
    },
    #[error("attribute {attr} ({syntax}): {} is not a valid value: {}", quote(.value), cut(.reason))]
    BadValue {
        attr: String,
        syntax: String,
        value: String,
        reason: String,
    },
}

/// Characters of a value quoted in a violation; a message stays one readable line even for a
/// 10 MB value.
const QUOTE_CHARS: usize = 80;

/// `value` quoted, cut after [`QUOTE_CHARS`] characters with its full length said.
fn quote(value: &str) -> String {
    match value.char_indices().nth(QUOTE_CHARS) {
        None => format!("{value:?}"),
        Some((end, _)) => format!(
            "{:?}... ({} characters)",
            &value[..end],
            value.chars().count()
        ),
    }
}

/// A reason that may quote the value itself (a DN parser's message), cut to a line.
fn cut(reason: &str) -> String {
    const CHARS: usize = 200;
    match reason.char_indices().nth(CHARS) {
        None => reason.to_string(),
        Some((end, _)) => format!("{}...", &reason[..end]),
    }
}

/// The schema, as read from the schema naming context.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    attrs: BTreeMap<String, AttrDef>,
    classes: BTreeMap<String, ClassDef>,
    /// Precomputed allowed attributes of `group`, the class the host writes.
    group_attrs: Option<BTreeSet<String>>,
}

impl Schema {
    /// Builds a schema from definitions (also what tests use).
    pub fn from_parts(attrs: Vec<AttrDef>, classes: Vec<ClassDef>) -> Schema {
        let mut s = Schema {
            attrs: attrs
                .into_iter()
                .map(|a| (a.name.to_ascii_lowercase(), a))
                .collect(),
            classes: classes
                .into_iter()
                .map(|c| {
                    // lookups are by lowercased name
                    let lower = |set: BTreeSet<String>| {
                        set.into_iter().map(|x| x.to_ascii_lowercase()).collect()
                    };
                    let c = ClassDef {
                        name: c.name.to_ascii_lowercase(),
                        sub_class_of: c.sub_class_of.map(|x| x.to_ascii_lowercase()),
                        attrs: lower(c.attrs),
                        aux: lower(c.aux),
                    };
                    (c.name.clone(), c)
                })
                .collect(),
            group_attrs: None,
        };
        s.group_attrs = s.class_attrs("group");
        s
    }

    /// The definition of an attribute (any case).
    pub fn attr(&self, name: &str) -> Option<&AttrDef> {
        self.attrs.get(&name.to_ascii_lowercase())
    }

    pub fn attr_count(&self) -> usize {
        self.attrs.len()
    }

    pub fn class(&self, name: &str) -> Option<&ClassDef> {
        self.classes.get(&name.to_ascii_lowercase())
    }

    /// Every attribute (lowercased) an object of `class` may hold: its own, its superclasses'
    /// and those of its auxiliary classes (recursively). None when the class is unknown.
    pub fn class_attrs(&self, class: &str) -> Option<BTreeSet<String>> {
        let start = class.to_ascii_lowercase();
        self.classes.get(&start)?;
        let mut out = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut todo = vec![start];
        while let Some(c) = todo.pop() {
            if !seen.insert(c.clone()) {
                continue;
            }
            let Some(def) = self.classes.get(&c) else {
                continue;
            };
            out.extend(def.attrs.iter().cloned());
            if let Some(sup) = &def.sub_class_of {
                todo.push(sup.clone());
            }
            todo.extend(def.aux.iter().cloned());
        }
        Some(out)
    }

    /// Checks values the host is about to write to a `group`.
    pub fn check(&self, attr: &str, values: &[String]) -> Result<(), SchemaViolation> {
        self.check_attr(attr, values)?;
        if let Some(allowed) = &self.group_attrs {
            if !allowed.contains(&attr.to_ascii_lowercase()) {
                return Err(SchemaViolation::NotAllowed {
                    attr: self.display(attr),
                    class: "group".into(),
                });
            }
        }
        Ok(())
    }

    /// Checks values for an object of `class` (the class check is skipped when the class is
    /// not in the schema).
    pub fn check_for_class(
        &self,
        class: &str,
        attr: &str,
        values: &[String],
    ) -> Result<(), SchemaViolation> {
        self.check_attr(attr, values)?;
        if let Some(allowed) = self.class_attrs(class) {
            if !allowed.contains(&attr.to_ascii_lowercase()) {
                return Err(SchemaViolation::NotAllowed {
                    attr: self.display(attr),
                    class: class.to_string(),
                });
            }
        }
        Ok(())
    }

    fn display(&self, attr: &str) -> String {
        self.attr(attr)
            .map(|d| d.name.clone())
            .unwrap_or_else(|| attr.to_string())
    }

    /// Checks values against the attribute definition only (no class).
    pub fn check_attr(&self, attr: &str, values: &[String]) -> Result<(), SchemaViolation> {
        let def = self
            .attr(attr)
            .ok_or_else(|| SchemaViolation::UnknownAttribute {
                attr: attr.to_string(),
            })?;
        let name = def.name.clone();
        if def.system_only {
            return Err(SchemaViolation::SystemOnly { attr: name });
        }
        if def.single_valued && values.len() > 1 {
            return Err(SchemaViolation::SingleValued {
                attr: name,
                count: values.len(),
            });
        }
        for v in values {
            check_value(def, v)?;
        }
        Ok(())
    }
}

fn check_value(def: &AttrDef, v: &str) -> Result<(), SchemaViolation> {
    let attr = || def.name.clone();
    if v.is_empty() {
        return Err(SchemaViolation::EmptyValue { attr: attr() });
    }
    let bad = |reason: &str| SchemaViolation::BadValue {
        attr: attr(),
        syntax: def.syntax.clone(),
        value: v.to_string(),
        reason: reason.to_string(),
    };
    // length in the unit AD counts: UTF-16 code units for Unicode strings (what AD stores and
    // what Samba measures), bytes for the byte-string syntaxes
    let length: Option<(usize, &'static str)> = match def.syntax.as_str() {
        syntax::UNICODE_STRING => Some((v.encode_utf16().count(), "characters")),
        syntax::IA5_STRING | syntax::CASE_IGNORE_STRING | syntax::NUMERIC_STRING => {
            if def.syntax == syntax::IA5_STRING && !v.is_ascii() {
                return Err(bad("IA5 strings are ASCII only"));
            }
            if def.syntax == syntax::NUMERIC_STRING
                && !v.bytes().all(|c| c.is_ascii_digit() || c == b' ')
            {
                return Err(bad("numeric strings hold digits and spaces only"));
            }
            Some((v.len(), "bytes"))
        }
        syntax::OCTET_STRING => Some((v.len(), "bytes")),
        syntax::INTEGER => {
            // AD's Integer is 32 bits; unsigned spellings (e.g. of groupType) are accepted too
            let n: i64 = v.trim().parse().map_err(|_| bad("not an integer"))?;
            if n < i64::from(i32::MIN) || n > i64::from(u32::MAX) {
                return Err(bad("outside the 32-bit range"));
            }
            if let Some(lo) = def.range_lower {
                if n < i64::from(lo) {
                    return Err(bad(&format!("below rangeLower {lo}")));
                }
            }
            if let Some(hi) = def.range_upper {
                if n > i64::from(hi) {
                    return Err(bad(&format!("above rangeUpper {hi}")));
                }
            }
            None
        }
        syntax::LARGE_INTEGER => {
            v.trim()
                .parse::<i64>()
                .map_err(|_| bad("not a 64-bit integer"))?;
            None
        }
        syntax::BOOLEAN => {
            if v != "TRUE" && v != "FALSE" {
                return Err(bad("booleans are TRUE or FALSE"));
            }
            None
        }
        syntax::DN => {
            dn::parse_dn(v).map_err(|e| bad(&e.to_string()))?;
            None
        }
        _ => None,
    };
    if let Some((len, unit)) = length {
        if let Some(max) = def.range_upper {
            if len > max as usize {
                return Err(SchemaViolation::TooLong {
                    attr: attr(),
                    value: v.to_string(),
                    len,
                    max,
                    unit,
                });
            }
        }
        if let Some(min) = def.range_lower {
            if len < min as usize {
                return Err(SchemaViolation::TooShort {
                    attr: attr(),
                    value: v.to_string(),
                    len,
                    min,
                    unit,
                });
            }
        }
    }
    Ok(())
}

fn parse_u32(v: Option<&str>) -> Option<u32> {
    // rangeUpper is stored as a signed 32-bit integer; negative or absurd values mean no limit
    v.and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|n| u32::try_from(n).ok())
}

fn lowered(e: &super::search::AdEntry, attr: &str) -> BTreeSet<String> {
    e.values(attr)
        .iter()
        .map(|v| v.to_ascii_lowercase())
        .collect()
}

impl AdConn {
    /// Reads attribute and class definitions from the schema naming context (paged).
    pub async fn load_schema(&mut self) -> Result<Schema, AdError> {
        let dse = self.root_dse(&["schemaNamingContext"]).await?;
        let snc = dse
            .first("schemaNamingContext")
            .ok_or_else(|| AdError::Protocol {
                op: AdOp::Search,
                dn: String::new(),
                reason: "rootDSE has no schemaNamingContext".into(),
            })?
            .to_string();
        let attr_entries = self
            .search(
                &snc,
                Scope::OneLevel,
                "(objectClass=attributeSchema)",
                &[
                    "lDAPDisplayName",
                    "isSingleValued",
                    "rangeLower",
                    "rangeUpper",
                    "attributeSyntax",
                    "systemOnly",
                    "linkID",
                ],
            )
            .await?;
        let mut attrs = Vec::with_capacity(attr_entries.len());
        for e in &attr_entries {
            let Some(name) = e.first("lDAPDisplayName") else {
                continue;
            };
            attrs.push(AttrDef {
                name: name.to_string(),
                single_valued: e.first("isSingleValued") == Some("TRUE"),
                range_lower: parse_u32(e.first("rangeLower")),
                range_upper: parse_u32(e.first("rangeUpper")),
                syntax: e.first("attributeSyntax").unwrap_or_default().to_string(),
                system_only: e.first("systemOnly") == Some("TRUE"),
                linked: e.first("linkID").is_some(),
            });
        }
        let class_entries = self
            .search(
                &snc,
                Scope::OneLevel,
                "(objectClass=classSchema)",
                &[
                    "lDAPDisplayName",
                    "subClassOf",
                    "mayContain",
                    "mustContain",
                    "systemMayContain",
                    "systemMustContain",
                    "auxiliaryClass",
                    "systemAuxiliaryClass",
                ],
            )
            .await?;
        let mut classes = Vec::with_capacity(class_entries.len());
        for e in &class_entries {
            let Some(name) = e.first("lDAPDisplayName") else {
                continue;
            };
            let name = name.to_ascii_lowercase();
            let mut cattrs = lowered(e, "mayContain");
            for a in ["mustContain", "systemMayContain", "systemMustContain"] {
                cattrs.extend(lowered(e, a));
            }
            let mut aux = lowered(e, "auxiliaryClass");
            aux.extend(lowered(e, "systemAuxiliaryClass"));
            let sub = e
                .first("subClassOf")
                .map(str::to_ascii_lowercase)
                .filter(|s| *s != name);
            classes.push(ClassDef {
                name,
                sub_class_of: sub,
                attrs: cattrs,
                aux,
            });
        }
        Ok(Schema::from_parts(attrs, classes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(name: &str, syntax: &str, single: bool, lo: Option<u32>, hi: Option<u32>) -> AttrDef {
        AttrDef {
            name: name.into(),
            single_valued: single,
            range_lower: lo,
            range_upper: hi,
            syntax: syntax.into(),
            system_only: false,
            linked: false,
        }
    }

    fn c(name: &str, sup: &str, attrs: &[&str], aux: &[&str]) -> ClassDef {
        ClassDef {
            name: name.into(),
            sub_class_of: (!sup.is_empty()).then(|| sup.to_string()),
            attrs: attrs.iter().map(|s| s.to_ascii_lowercase()).collect(),
            aux: aux.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn schema() -> Schema {
        let mut guid = a("objectGUID", syntax::OCTET_STRING, true, Some(16), Some(16));
        guid.system_only = true;
        let mut member = a("member", syntax::DN, false, None, None);
        member.linked = true;
        Schema::from_parts(
            vec![
                a("cn", syntax::UNICODE_STRING, true, Some(1), Some(64)),
                a("mail", syntax::UNICODE_STRING, true, None, Some(256)),
                a(
                    "proxyAddresses",
                    syntax::UNICODE_STRING,
                    false,
                    Some(1),
                    Some(1123),
                ),
                a("groupType", syntax::INTEGER, true, None, None),
                a(
                    "msExchRecipientTypeDetails",
                    syntax::LARGE_INTEGER,
                    true,
                    None,
                    None,
                ),
                a(
                    "msExchHideFromAddressLists",
                    syntax::BOOLEAN,
                    true,
                    None,
                    None,
                ),
                a("managedBy", syntax::DN, true, None, None),
                a("userAccountControl", syntax::INTEGER, true, None, None),
                a(
                    "msDS-ExternalDirectoryObjectId",
                    syntax::UNICODE_STRING,
                    true,
                    None,
                    Some(256),
                ),
                guid,
                member,
            ],
            vec![
                c("top", "", &["cn", "objectGUID"], &[]),
                c(
                    "group",
                    "top",
                    &["groupType", "member", "managedBy"],
                    &["mailRecipient"],
                ),
                c(
                    "mailRecipient",
                    "top",
                    &[
                        "mail",
                        "proxyAddresses",
                        "msDS-ExternalDirectoryObjectId",
                        "msExchHideFromAddressLists",
                        "msExchRecipientTypeDetails",
                    ],
                    &[],
                ),
                c("user", "top", &["userAccountControl"], &["mailRecipient"]),
            ],
        )
    }

    fn v(vals: &[&str]) -> Vec<String> {
        vals.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn unknown_and_not_allowed() {
        let s = schema();
        assert!(matches!(
            s.check("noSuchAttr", &v(&["x"])),
            Err(SchemaViolation::UnknownAttribute { .. })
        ));
        let e = s.check("userAccountControl", &v(&["514"])).unwrap_err();
        assert!(matches!(e, SchemaViolation::NotAllowed { .. }), "{e}");
        assert!(s
            .check_for_class("user", "userAccountControl", &v(&["514"]))
            .is_ok());
        // through the auxiliary class
        assert!(s
            .check("MSDS-externalDirectoryObjectId", &v(&["Group_1"]))
            .is_ok());
        assert!(s.check("member", &v(&["CN=a,DC=x", "CN=b,DC=x"])).is_ok());
        let all = s.class_attrs("group").unwrap();
        assert!(all.contains("cn") && all.contains("mail") && all.contains("grouptype"));
        assert!(s.class_attrs("nope").is_none());
        assert!(matches!(
            s.check("objectGUID", &v(&["x"])),
            Err(SchemaViolation::SystemOnly { .. })
        ));
    }

    #[test]
    fn single_valued_and_empty() {
        let s = schema();
        let e = s.check("mail", &v(&["a@x", "b@x"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "attribute mail is single-valued, got 2 values"
        );
        assert!(s
            .check("proxyAddresses", &v(&["SMTP:a@x", "smtp:b@x"]))
            .is_ok());
        assert!(s.check("mail", &[]).is_ok());
        assert!(matches!(
            s.check("mail", &v(&[""])),
            Err(SchemaViolation::EmptyValue { .. })
        ));
    }

    #[test]
    fn lengths_count_utf16_units() {
        let s = schema();
        assert!(s.check("cn", &v(&[&"a".repeat(64)])).is_ok());
        let e = s.check("cn", &v(&[&"a".repeat(65)])).unwrap_err();
        assert!(e.to_string().contains("65 characters long"), "{e}");
        assert!(e.to_string().contains("at most 64"), "{e}");
        // 64 non-ASCII BMP characters are 64 units (but 128 bytes): allowed
        assert!(s.check("cn", &v(&[&"é".repeat(64)])).is_ok());
        assert!(s.check("cn", &v(&[&"東".repeat(64)])).is_ok());
        // astral characters take two UTF-16 units each
        assert!(s.check("cn", &v(&[&"🎉".repeat(32)])).is_ok());
        assert!(s.check("cn", &v(&[&"🎉".repeat(33)])).is_err());
        assert!(s
            .check("mail", &v(&[&format!("{}@x.test", "a".repeat(249))]))
            .is_ok());
        assert!(s
            .check("mail", &v(&[&format!("{}@x.test", "a".repeat(250))]))
            .is_err());
    }

    #[test]
    fn integer_boolean_dn_syntaxes() {
        let s = schema();
        for ok in ["-2147483640", "8", "2147483656", "4294967295"] {
            assert!(s.check("groupType", &v(&[ok])).is_ok(), "{ok}");
        }
        for bad in ["eight", "8.0", "", "4294967296", "-2147483649"] {
            assert!(s.check("groupType", &v(&[bad])).is_err(), "{bad}");
        }
        assert!(s
            .check("msExchRecipientTypeDetails", &v(&["2147483648"]))
            .is_ok());
        assert!(s.check("msExchRecipientTypeDetails", &v(&["x"])).is_err());
        assert!(s.check("msExchHideFromAddressLists", &v(&["TRUE"])).is_ok());
        assert!(s
            .check("msExchHideFromAddressLists", &v(&["true"]))
            .is_err());
        assert!(s.check("managedBy", &v(&["CN=a\\,b,DC=x"])).is_ok());
        assert!(s.check("managedBy", &v(&["not a dn"])).is_err());
    }

    #[test]
    fn range_parsing() {
        assert_eq!(parse_u32(Some("64")), Some(64));
        assert_eq!(parse_u32(Some("-1")), None);
        assert_eq!(parse_u32(Some("x")), None);
        assert_eq!(parse_u32(None), None);
    }
}
