//! OData query options: parsing `$select`, `$top` and the `$filter` subset directory objects
//! support without advanced query headers, and evaluating filters on stored objects.

use serde_json::Value;

use crate::errors::{GraphError, GraphResult};
use crate::schema::{self, ApiVersion};
use crate::store::{Kind, Obj};
use crate::urlenc;

/// Decoded query string (`%24select` and `$select` are the same key).
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: &str) -> Self {
        Query {
            pairs: urlenc::parse_pairs(raw),
        }
    }

    /// Value of a parameter; names compare case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
    }
}

/// `$select=a,b` → canonical property names; names unknown in `version` are a 400 as in Graph.
pub fn parse_select(kind: Kind, raw: &str, version: ApiVersion) -> GraphResult<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let canonical = schema::canonical_property(kind, name, version)
            .map(str::to_string)
            .or_else(|| schema::extension_property(name))
            .ok_or_else(|| {
                GraphError::bad_request(format!(
                    "Could not find a property named '{name}' on type 'microsoft.graph.{}'.",
                    kind.type_name()
                ))
            })?;
        if !out.contains(&canonical) {
            out.push(canonical);
        }
    }
    Ok(out)
}

/// `$top`: 1..=999.
pub fn parse_top(raw: &str) -> GraphResult<usize> {
    match raw.trim().parse::<i64>() {
        Ok(n) if (1..=999).contains(&n) => Ok(n as usize),
        _ => Err(GraphError::unsupported_query(format!(
            "Invalid page size specified: '{raw}'. Must be between 1 and 999 inclusive."
        ))),
    }
}

/// A filter literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Str(String),
    Bool(bool),
    Null,
}

/// The filter forms the emulator evaluates.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Eq(String, Lit),
    In(String, Vec<Lit>),
    StartsWith(String, String),
    /// `prop/any(c:c eq 'x')` on a string collection.
    Any(String, String),
}

const EQ_PROPS: &[&str] = &[
    "id",
    "displayName",
    "mail",
    "mailNickname",
    "userPrincipalName",
    "givenName",
    "surname",
    "onPremisesSecurityIdentifier",
    "onPremisesImmutableId",
    "onPremisesSamAccountName",
    "onPremisesSyncEnabled",
    "securityIdentifier",
    "securityEnabled",
    "mailEnabled",
    "accountEnabled",
    "userType",
    "isAssignableToRole",
];
const STARTSWITH_PROPS: &[&str] = &[
    "displayName",
    "mail",
    "mailNickname",
    "userPrincipalName",
    "givenName",
    "surname",
];
const ANY_PROPS: &[&str] = &["groupTypes", "proxyAddresses"];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Open,
    Close,
    Comma,
    Colon,
}

fn tokenize(s: &str) -> Option<Vec<Tok>> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1
            }
            ')' => {
                out.push(Tok::Close);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            ':' => {
                out.push(Tok::Colon);
                i += 1
            }
            '\'' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return None,
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            v.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&c) => {
                            v.push(c);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(v));
            }
            c if c.is_alphanumeric() || "/._-$@".contains(c) => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || "/._-$@".contains(chars[i]))
                {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            _ => return None,
        }
    }
    Some(out)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    kind: Kind,
    raw: &'a str,
}

fn unsupported() -> GraphError {
    GraphError::unsupported_query("Unsupported Query.")
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(kw))
    }

    fn expect(&mut self, t: Tok) -> GraphResult<()> {
        if self.next() == Some(t) {
            Ok(())
        } else {
            Err(self.syntax())
        }
    }

    fn syntax(&self) -> GraphError {
        GraphError::bad_request(format!("Invalid filter clause: {}", self.raw))
    }

    fn or(&mut self) -> GraphResult<Expr> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.pos += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> GraphResult<Expr> {
        let mut left = self.term()?;
        while self.keyword("and") {
            self.pos += 1;
            let right = self.term()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn property(&self, name: &str, allowed: &[&str]) -> GraphResult<String> {
        let canonical = allowed
            .iter()
            .find(|p| p.eq_ignore_ascii_case(name))
            // The filterable properties are v1.0 ones, which beta has too.
            .filter(|p| {
                **p == "id" || schema::canonical_property(self.kind, p, ApiVersion::V1).is_some()
            });
        match canonical {
            Some(p) => Ok(p.to_string()),
            None => Err(GraphError::unsupported_query(format!(
                "Unsupported or invalid query filter clause specified for property '{name}' of resource '{}'.",
                match self.kind {
                    Kind::User => "User",
                    Kind::Group => "Group",
                    Kind::Device => "Device",
                }
            ))),
        }
    }

    fn literal(&mut self) -> GraphResult<Lit> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Lit::Str(s)),
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("true") => Ok(Lit::Bool(true)),
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("false") => Ok(Lit::Bool(false)),
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("null") => Ok(Lit::Null),
            _ => Err(self.syntax()),
        }
    }

    fn term(&mut self) -> GraphResult<Expr> {
        match self.next() {
            Some(Tok::Open) => {
                let e = self.or()?;
                self.expect(Tok::Close)?;
                Ok(e)
            }
            Some(Tok::Ident(name)) if name.eq_ignore_ascii_case("not") => Err(unsupported()),
            Some(Tok::Ident(name)) if name.eq_ignore_ascii_case("startswith") => {
                self.expect(Tok::Open)?;
                let prop = match self.next() {
                    Some(Tok::Ident(p)) => p,
                    _ => return Err(self.syntax()),
                };
                let prop = self.property(&prop, STARTSWITH_PROPS)?;
                self.expect(Tok::Comma)?;
                let value = match self.next() {
                    Some(Tok::Str(v)) => v,
                    _ => return Err(self.syntax()),
                };
                self.expect(Tok::Close)?;
                Ok(Expr::StartsWith(prop, value))
            }
            Some(Tok::Ident(name))
                if name.eq_ignore_ascii_case("endswith")
                    || name.eq_ignore_ascii_case("contains") =>
            {
                Err(unsupported())
            }
            Some(Tok::Ident(name)) if name.to_ascii_lowercase().ends_with("/any") => {
                let prop = &name[..name.len() - 4];
                let prop = self.property(prop, ANY_PROPS)?;
                self.expect(Tok::Open)?;
                let var = match self.next() {
                    Some(Tok::Ident(v)) => v,
                    _ => return Err(self.syntax()),
                };
                self.expect(Tok::Colon)?;
                match self.next() {
                    Some(Tok::Ident(v)) if v == var => {}
                    _ => return Err(self.syntax()),
                }
                if !self.keyword("eq") {
                    return Err(unsupported());
                }
                self.pos += 1;
                let value = match self.next() {
                    Some(Tok::Str(v)) => v,
                    _ => return Err(self.syntax()),
                };
                self.expect(Tok::Close)?;
                Ok(Expr::Any(prop, value))
            }
            Some(Tok::Ident(name)) => {
                let op = match self.next() {
                    Some(Tok::Ident(op)) => op.to_ascii_lowercase(),
                    _ => return Err(self.syntax()),
                };
                match op.as_str() {
                    "eq" => {
                        let prop = self.property(&name, EQ_PROPS)?;
                        Ok(Expr::Eq(prop, self.literal()?))
                    }
                    "in" => {
                        let prop = self.property(&name, EQ_PROPS)?;
                        self.expect(Tok::Open)?;
                        let mut values = vec![self.literal()?];
                        while self.peek() == Some(&Tok::Comma) {
                            self.pos += 1;
                            values.push(self.literal()?);
                        }
                        self.expect(Tok::Close)?;
                        Ok(Expr::In(prop, values))
                    }
                    "ne" | "gt" | "ge" | "lt" | "le" => Err(unsupported()),
                    _ => Err(self.syntax()),
                }
            }
            _ => Err(self.syntax()),
        }
    }
}

/// Parse a `$filter` for a user or group collection.
pub fn parse_filter(kind: Kind, raw: &str) -> GraphResult<Expr> {
    let toks = tokenize(raw)
        .ok_or_else(|| GraphError::bad_request(format!("Invalid filter clause: {raw}")))?;
    let mut p = Parser {
        toks,
        pos: 0,
        kind,
        raw,
    };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(p.syntax());
    }
    Ok(e)
}

fn prop_value<'a>(obj: &'a Obj, prop: &str) -> Option<&'a Value> {
    obj.props.get(prop)
}

fn lit_matches(v: Option<&Value>, lit: &Lit, obj_id: &str, prop: &str) -> bool {
    if prop == "id" {
        return matches!(lit, Lit::Str(s) if s.eq_ignore_ascii_case(obj_id));
    }
    match (v, lit) {
        (None | Some(Value::Null), Lit::Null) => true,
        (Some(Value::String(a)), Lit::Str(b)) => a.eq_ignore_ascii_case(b),
        (Some(Value::Bool(a)), Lit::Bool(b)) => a == b,
        _ => false,
    }
}

/// Does the object satisfy the filter?
pub fn matches(expr: &Expr, obj: &Obj) -> bool {
    match expr {
        Expr::And(a, b) => matches(a, obj) && matches(b, obj),
        Expr::Or(a, b) => matches(a, obj) || matches(b, obj),
        Expr::Eq(p, lit) => lit_matches(prop_value(obj, p), lit, &obj.id, p),
        Expr::In(p, lits) => lits
            .iter()
            .any(|l| lit_matches(prop_value(obj, p), l, &obj.id, p)),
        Expr::StartsWith(p, prefix) => {
            prop_value(obj, p).and_then(Value::as_str).is_some_and(|v| {
                v.len() >= prefix.len()
                    && v.is_char_boundary(prefix.len())
                    && v[..prefix.len()].eq_ignore_ascii_case(prefix)
            })
        }
        Expr::Any(p, value) => prop_value(obj, p)
            .and_then(Value::as_array)
            .is_some_and(|a| {
                a.iter()
                    .any(|x| x.as_str().is_some_and(|s| s.eq_ignore_ascii_case(value)))
            }),
    }
}

/// If the filter only selects ids (`id eq` / `id in`, joined by `or`), those ids.
pub fn id_list(expr: &Expr) -> Option<Vec<String>> {
    match expr {
        Expr::Eq(p, Lit::Str(id)) if p == "id" => Some(vec![id.to_ascii_lowercase()]),
        Expr::In(p, lits) if p == "id" => lits
            .iter()
            .map(|l| match l {
                Lit::Str(s) => Some(s.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        Expr::Or(a, b) => {
            let mut ids = id_list(a)?;
            ids.extend(id_list(b)?);
            Some(ids)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeSet;

    fn group(id: &str, props: Value) -> Obj {
        Obj {
            id: id.into(),
            kind: Kind::Group,
            props: props.as_object().cloned().unwrap(),
            members: BTreeSet::new(),
            owners: BTreeSet::new(),
            life: crate::store::Life::Live,
            order: 0,
        }
    }

    #[test]
    fn parses_supported_forms() {
        let g = group(
            "abc",
            json!({"displayName":"Sales Team","groupTypes":["Unified"],"securityEnabled":false,
                   "mailEnabled":true}),
        );
        for (f, expect) in [
            ("id eq 'ABC'", true),
            ("id in ('x','abc')", true),
            ("displayName eq 'sales team'", true),
            ("startswith(displayName,'Sal')", true),
            ("groupTypes/any(c:c eq 'Unified')", true),
            ("securityEnabled eq true", false),
            ("mailEnabled eq true and startswith(displayName,'x')", false),
            ("(mailEnabled eq true) or id eq 'z'", true),
            ("onPremisesSecurityIdentifier eq null", true),
        ] {
            let e = parse_filter(Kind::Group, f).unwrap();
            assert_eq!(matches(&e, &g), expect, "{f}");
        }
    }

    #[test]
    fn rejects_unsupported() {
        for f in [
            "endsWith(mail,'@x.com')",
            "displayName ne 'x'",
            "description eq 'x'",
            "not(id eq 'x')",
        ] {
            let e = parse_filter(Kind::Group, f).unwrap_err();
            assert_eq!(e.code, "Request_UnsupportedQuery", "{f}");
        }
        assert_eq!(
            parse_filter(Kind::Group, "id eq").unwrap_err().code,
            "Request_BadRequest"
        );
    }

    #[test]
    fn id_lists() {
        let e = parse_filter(Kind::Group, "id eq 'a' or id eq 'B'").unwrap();
        assert_eq!(id_list(&e), Some(vec!["a".into(), "b".into()]));
        let e = parse_filter(Kind::Group, "id eq 'a' and id eq 'b'").unwrap();
        assert_eq!(id_list(&e), None);
    }

    #[test]
    fn select_and_top() {
        assert_eq!(
            parse_select(Kind::Group, "DisplayName,members,id", ApiVersion::V1).unwrap(),
            vec!["displayName", "members", "id"]
        );
        assert!(parse_select(Kind::User, "nope", ApiVersion::V1).is_err());
        // Directory extension properties: any well-formed name, app id in lowercase.
        assert_eq!(
            parse_select(
                Kind::User,
                "extension_0123456789ABCDEF0123456789abcdef_costCenter,onpremisesextensionattributes",
                ApiVersion::V1
            )
            .unwrap(),
            vec![
                "extension_0123456789abcdef0123456789abcdef_costCenter",
                "onPremisesExtensionAttributes"
            ]
        );
        for bad in [
            "extension_0123_costCenter",
            "extension_0123456789abcdef0123456789abcdef",
            "extension_0123456789abcdef0123456789abcdef_",
            "extension_0123456789abcdef0123456789abcdeg_x",
        ] {
            assert!(
                parse_select(Kind::Group, bad, ApiVersion::V1).is_err(),
                "{bad}"
            );
        }
        // Beta-only properties are unknown on v1.0, with Graph's message.
        let e = parse_select(Kind::Group, "id,writebackConfiguration", ApiVersion::V1).unwrap_err();
        assert_eq!(
            e.message,
            "Could not find a property named 'writebackConfiguration' on type 'microsoft.graph.group'."
        );
        assert_eq!(
            parse_select(Kind::Group, "id,WRITEBACKCONFIGURATION", ApiVersion::Beta).unwrap(),
            vec!["id", "writebackConfiguration"]
        );
        assert!(parse_select(Kind::User, "writebackConfiguration", ApiVersion::Beta).is_err());
        assert_eq!(parse_top("999").unwrap(), 999);
        assert!(parse_top("1000").is_err());
        assert!(parse_top("0").is_err());
    }
}
