//! The Graph properties rules read beyond the host's own `$select`, declared per rule file as
//! `const GRAPH_GROUP_PROPERTIES = [...]` and `const GRAPH_USER_PROPERTIES = [...]`, read from the
//! compiled AST and checked when the rules load.
//!
//! Graph returns only what a query selects, so a property no rule declares is never in the
//! cache. A name that Graph would refuse (`400` on the whole delta query, so every sync would
//! fail) is a load error at its `file:line:column` instead.

use std::collections::BTreeSet;
use std::path::Path;

use rhai::{ASTFlags, Position, Stmt, Token, AST};
use serde::Serialize;

use super::diagnostics::Diagnostic;
use super::input::MAX_PROPERTY_NAME_CHARS;
use super::tokens::tokens;

/// The constant naming the extra group properties a rule file reads.
pub const GROUP_PROPERTIES_CONST: &str = "GRAPH_GROUP_PROPERTIES";
/// The constant naming the extra user properties a rule file reads.
pub const USER_PROPERTIES_CONST: &str = "GRAPH_USER_PROPERTIES";

/// The prefix of a directory extension property: `extension_<appId without dashes>_<name>`.
const EXTENSION_PREFIX: &str = "extension_";

/// Relationships, not properties: selecting one changes what delta tracks (`members@delta`,
/// `owners@delta`), and the host reads `members` itself.
const RELATIONSHIPS: &[&str] = &[
    "members",
    "owners",
    "memberOf",
    "transitiveMembers",
    "transitiveMemberOf",
    "manager",
    "directReports",
];

/// The extra Graph properties a rule set reads: the union over its rule files, sorted, without
/// duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GraphProperties {
    /// Extra group properties (`$select` of `groups/delta`).
    pub groups: Vec<String>,
    /// Extra user properties (`$select` of `users/delta`).
    pub users: Vec<String>,
}

impl GraphProperties {
    /// Adds `other`'s names, keeping the lists sorted and unique.
    pub(crate) fn merge(&mut self, other: GraphProperties) {
        fn union(into: &mut Vec<String>, more: Vec<String>) {
            let all: BTreeSet<String> = into.drain(..).chain(more).collect();
            into.extend(all);
        }
        union(&mut self.groups, other.groups);
        union(&mut self.users, other.users);
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.users.is_empty()
    }
}

/// Reads both declarations of one compiled rule file; problems go to `diags`.
pub(crate) fn discover(
    ast: &AST,
    path: &Path,
    text: &str,
    diags: &mut Vec<Diagnostic>,
) -> GraphProperties {
    let mut found = GraphProperties::default();
    let declared: Vec<(&str, Position)> = ast
        .statements()
        .iter()
        .filter_map(|stmt| match stmt {
            Stmt::Var(x, flags, _) if flags.contains(ASTFlags::CONSTANT) => {
                let (ident, _, _) = &**x;
                [GROUP_PROPERTIES_CONST, USER_PROPERTIES_CONST]
                    .into_iter()
                    .find(|c| *c == ident.name.as_str())
                    .map(|c| (c, ident.pos))
            }
            _ => None,
        })
        .collect();
    if declared.is_empty() {
        return found;
    }
    let toks = tokens(text);
    let at = |pos: Position, message: String| Diagnostic {
        file: path.to_path_buf(),
        line: pos.line(),
        column: pos.position(),
        message,
    };
    for (name, pos) in declared {
        let Some(list) = written_list(&toks, pos) else {
            diags.push(at(
                pos,
                format!(
                    "`{name}` must be an array of string literals, e.g. `const {name} = [\"classification\"];`"
                ),
            ));
            continue;
        };
        let mut names = Vec::with_capacity(list.len());
        for (property, at_name) in list {
            let checked = check_name(&property).and_then(|()| {
                if name == GROUP_PROPERTIES_CONST {
                    check_group_property(&property)
                } else {
                    Ok(())
                }
            });
            match checked {
                Ok(()) => names.push(property),
                Err(why) => diags.push(at(
                    at_name,
                    format!("`{name}`: {property:?} is not a Graph property name: {why}"),
                )),
            }
        }
        let one = if name == GROUP_PROPERTIES_CONST {
            GraphProperties {
                groups: names,
                users: Vec::new(),
            }
        } else {
            GraphProperties {
                groups: Vec::new(),
                users: names,
            }
        };
        found.merge(one);
    }
    found
}

/// The strings of `[ "a", "b", ]` written right after the constant's name and `=`, with their
/// positions; `None` when the value is written any other way. Reading the tokens, not the
/// optimised AST, keeps each name's position (the optimizer folds the array into one value).
fn written_list(toks: &[(Token, Position)], name_at: Position) -> Option<Vec<(String, Position)>> {
    let k = toks.iter().position(|(_, p)| *p == name_at)?;
    let mut rest = toks.get(k + 1..)?.iter();
    if !matches!(rest.next(), Some((Token::Equals, _))) {
        return None;
    }
    if !matches!(rest.next(), Some((Token::LeftBracket, _))) {
        return None;
    }
    let mut out = Vec::new();
    loop {
        match rest.next()? {
            (Token::RightBracket, _) => break,
            (Token::StringConstant(s), at) => {
                out.push((s.to_string(), *at));
                match rest.next()? {
                    (Token::Comma, _) => {}
                    (Token::RightBracket, _) => break,
                    _ => return None,
                }
            }
            _ => return None,
        }
    }
    match rest.next() {
        Some((Token::SemiColon, _)) | None => Some(out),
        _ => None,
    }
}

/// Why a name is not a Graph property a rule may read. Messages read on from "... is not a
/// Graph property name: ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertyNameError {
    #[error("the name is empty")]
    Empty,
    #[error("names are at most {max} characters", max = MAX_PROPERTY_NAME_CHARS)]
    TooLong,
    #[error("a property name starts with a letter")]
    FirstNotALetter,
    #[error("{0:?} is not allowed; property names hold only letters, digits and `_`")]
    Character(char),
    #[error("a directory extension property is named `extension_<application id, 32 lowercase hex digits without dashes>_<name>`, e.g. `extension_0123456789abcdef0123456789abcdef_costCenter`")]
    Extension,
    #[error("`{0}` is a relationship, not a property; the host reads members itself")]
    Relationship(&'static str),
    /// A group property in another case than Graph's.
    #[error("Graph spells it `{0}`")]
    Spelling(&'static str),
    #[error("the group has no such property in Graph's v1.0 or beta schema (a misspelling?)")]
    NoSuchGroupProperty,
}

/// Whether Graph would take `name` as a property in `$select`: an identifier (ASCII letters,
/// digits, `_`, starting with a letter); a directory extension property spelled
/// `extension_<application id as 32 lowercase hex digits, no dashes>_<name>`; no relationship.
/// A group property other than a directory extension must be one the group has, spelt as
/// Graph spells it: a misspelt name would make Graph refuse the whole delta query (400), and a
/// name in another case would read as nothing in the rule.
fn check_group_property(name: &str) -> Result<(), PropertyNameError> {
    if name.starts_with(EXTENSION_PREFIX) {
        return Ok(());
    }
    match super::group::documented_spelling(name) {
        Some(p) if p == name => Ok(()),
        Some(p) => Err(PropertyNameError::Spelling(p)),
        None => Err(PropertyNameError::NoSuchGroupProperty),
    }
}

pub fn check_name(name: &str) -> Result<(), PropertyNameError> {
    if name.is_empty() {
        return Err(PropertyNameError::Empty);
    }
    if name.chars().count() > MAX_PROPERTY_NAME_CHARS {
        return Err(PropertyNameError::TooLong);
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(PropertyNameError::FirstNotALetter);
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(PropertyNameError::Character(c));
    }
    let prefix = name.get(..EXTENSION_PREFIX.len());
    if prefix.is_some_and(|p| p.eq_ignore_ascii_case(EXTENSION_PREFIX)) {
        let rest = name.get(EXTENSION_PREFIX.len()..).unwrap_or("");
        let app_id = rest.get(..32).unwrap_or(rest);
        let tail = rest.get(32..).unwrap_or("");
        // Graph names the property with the id in lowercase; a rule reading another spelling
        // would find nothing.
        let ok = prefix == Some(EXTENSION_PREFIX)
            && app_id.len() == 32
            && app_id.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
            && tail.len() > 1
            && tail.starts_with('_');
        if !ok {
            return Err(PropertyNameError::Extension);
        }
    }
    if let Some(r) = RELATIONSHIPS.iter().find(|r| r.eq_ignore_ascii_case(name)) {
        return Err(PropertyNameError::Relationship(r));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rhai::Engine;

    const EXT: &str = "extension_0123456789abcdef0123456789abcdef_costCenter";

    fn run(src: &str) -> (GraphProperties, Vec<String>) {
        let ast = Engine::new().compile(src).expect("compiles");
        let mut diags = Vec::new();
        let found = discover(&ast, Path::new("r.rhai"), src, &mut diags);
        (found, diags.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn both_declarations_are_read_sorted_and_unique() {
        let src = format!(
            "const GRAPH_GROUP_PROPERTIES = [\"{EXT}\", \"classification\", \"classification\",];\n\
             const GRAPH_USER_PROPERTIES = [\"onPremisesExtensionAttributes\"];\n\
             fn in_scope(g) {{ true }}\n"
        );
        let (found, diags) = run(&src);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(found.groups, vec!["classification".to_string(), EXT.into()]);
        assert_eq!(
            found.users,
            vec!["onPremisesExtensionAttributes".to_string()]
        );
    }

    #[test]
    fn no_declaration_and_empty_lists_read_nothing() {
        for src in [
            "fn in_scope(g) { true }",
            "const GRAPH_GROUP_PROPERTIES = [];",
            "let GRAPH_GROUP_PROPERTIES = [1];",
            "fn f() { const GRAPH_GROUP_PROPERTIES = 5; }",
        ] {
            let (found, diags) = run(src);
            assert!(found.is_empty() && diags.is_empty(), "{src}: {diags:?}");
        }
    }

    #[test]
    fn a_bad_name_is_located() {
        let src = "// x\nconst GRAPH_GROUP_PROPERTIES = [\n    \"classification\",\n    \"cost center\",\n];\n";
        let (found, diags) = run(src);
        assert_eq!(found.groups, vec!["classification".to_string()]);
        assert_eq!(diags.len(), 1);
        assert!(
            diags[0].starts_with("r.rhai:4:5: `GRAPH_GROUP_PROPERTIES`: \"cost center\" is not a Graph property name"),
            "{}",
            diags[0]
        );
    }

    #[test]
    fn group_names_must_be_group_properties_spelt_as_graph_spells_them() {
        let src = "const GRAPH_GROUP_PROPERTIES = [\"classification\", \"writebackConfiguration\", \"clasification\", \"Classification\"];\n";
        let (found, diags) = run(src);
        assert_eq!(
            found.groups,
            vec![
                "classification".to_string(),
                "writebackConfiguration".into()
            ]
        );
        assert_eq!(diags.len(), 2, "{diags:?}");
        assert!(
            diags[0].contains(
                "\"clasification\" is not a Graph property name: the group has no such property"
            ),
            "{}",
            diags[0]
        );
        assert!(
            diags[1].contains("Graph spells it `classification`"),
            "{}",
            diags[1]
        );
        // User names are checked for their form only (the host keeps no user schema).
        let (found, diags) = run("const GRAPH_USER_PROPERTIES = [\"employeeId\"];");
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(found.users, vec!["employeeId".to_string()]);
    }

    #[test]
    fn values_other_than_a_list_of_literals_are_refused() {
        for src in [
            "const GRAPH_GROUP_PROPERTIES = \"classification\";",
            "const GRAPH_GROUP_PROPERTIES = [\"a\", 1];",
            "const GRAPH_USER_PROPERTIES = [\"a\"] + [\"b\"];",
            "const A = \"x\";\nconst GRAPH_USER_PROPERTIES = [A];",
            "const GRAPH_USER_PROPERTIES = #{ a: \"b\" };",
            "const GRAPH_USER_PROPERTIES = [`${\"x\"}`];",
        ] {
            let (_, diags) = run(src);
            assert_eq!(diags.len(), 1, "{src}");
            assert!(
                diags[0].contains("must be an array of string literals"),
                "{src}: {}",
                diags[0]
            );
        }
        let (_, diags) = run("\n  const GRAPH_USER_PROPERTIES = 5;");
        assert!(diags[0].starts_with("r.rhai:2:9: "), "{}", diags[0]);
    }

    #[test]
    fn names() {
        for ok in [
            "classification",
            "onPremisesExtensionAttributes",
            EXT,
            "extension_0123456789abcdef0123456789abcdef_a_b",
            "extensionAttribute1",
        ] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("1abc", "starts with a letter"),
            ("_x", "starts with a letter"),
            ("display Name", "not allowed"),
            ("a,b", "not allowed"),
            ("a$b", "not allowed"),
            ("extension_0123_cost", "lowercase hex digits"),
            (
                "extension_0123456789abcdef0123456789abcdef",
                "lowercase hex digits",
            ),
            (
                "extension_0123456789abcdef0123456789abcdef_",
                "lowercase hex digits",
            ),
            (
                "extension_0123456789abcdef0123456789abcdeg_x",
                "lowercase hex digits",
            ),
            (
                "extension_0123456789ABCDEF0123456789abcdef_x",
                "lowercase hex digits",
            ),
            (
                "Extension_0123456789abcdef0123456789abcdef_x",
                "lowercase hex digits",
            ),
            ("members", "relationship"),
            ("Owners", "relationship"),
        ] {
            let err = check_name(bad).expect_err(bad).to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(check_name(&"a".repeat(MAX_PROPERTY_NAME_CHARS + 1)).is_err());
    }

    /// Loads a rules folder holding `files` with the repository's stdlib.
    fn load(files: &[(&str, &str)]) -> Result<super::super::RuleSet, super::super::LoadError> {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write rule");
        }
        let stdlib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../stdlib");
        super::super::RuleSet::load(
            dir.path(),
            &stdlib,
            Default::default(),
            super::super::Limits::default(),
        )
    }

    #[test]
    fn a_rule_set_reads_the_union_of_its_files() {
        const BODY: &str = "fn in_scope(g) { false }\nfn to_ad(g) { () }\n";
        let a = format!("const GRAPH_GROUP_PROPERTIES = [\"{EXT}\", \"classification\"];\n{BODY}");
        let b = format!(
            "const GRAPH_GROUP_PROPERTIES = [\"classification\", \"theme\"];\nconst GRAPH_USER_PROPERTIES = [\"employeeId\"];\n{BODY}"
        );
        let set = match load(&[("10-a.rhai", &a), ("20-b.rhai", &b), ("30-c.rhai", BODY)]) {
            Ok(set) => set,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            set.graph_properties(),
            &GraphProperties {
                groups: vec!["classification".into(), EXT.into(), "theme".into()],
                users: vec!["employeeId".into()],
            }
        );
        let plain = load(&[("10-c.rhai", BODY)]).map_err(|e| e.to_string());
        assert!(plain.map(|s| s.graph_properties().is_empty()) == Ok(true));
    }

    #[test]
    fn a_bad_declaration_stops_the_load_with_file_and_line() {
        let text = "fn in_scope(g) { false }\nfn to_ad(g) { () }\nconst GRAPH_USER_PROPERTIES = [\"ok\", \"extension_abc_x\"];\n";
        let err = match load(&[("10-a.rhai", text)]) {
            Ok(_) => panic!("loaded"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("10-a.rhai:3:38: `GRAPH_USER_PROPERTIES`: \"extension_abc_x\" is not a Graph property name"),
            "{err}"
        );
    }

    /// `docs/graph-properties.md` shows a declaration and a load error: both as the host has them.
    #[test]
    fn the_documented_declaration_and_error_hold() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/graph-properties.md");
        let doc = std::fs::read_to_string(&path).expect("read docs/graph-properties.md");
        let block = doc
            .split("```rhai\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a rhai block");
        let (found, diags) = run(block);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(found.groups, vec!["classification".to_string(), EXT.into()]);
        assert_eq!(
            found.users,
            vec!["onPremisesExtensionAttributes".to_string()]
        );

        let src = "// x\nconst GRAPH_GROUP_PROPERTIES = [\n    \"classification\",\n    \"cost center\",\n];\n";
        let ast = Engine::new().compile(src).expect("compiles");
        let mut diags = Vec::new();
        let file = Path::new("rules/10-extension-attributes.rhai");
        discover(&ast, file, src, &mut diags);
        let shown = diags[0].to_string();
        assert!(doc.contains(&shown), "the doc should show:\n{shown}");
    }

    #[test]
    fn merge_is_a_sorted_union() {
        let mut a = GraphProperties {
            groups: vec!["b".into(), "d".into()],
            users: vec![],
        };
        a.merge(GraphProperties {
            groups: vec!["c".into(), "b".into()],
            users: vec!["x".into()],
        });
        assert_eq!(a.groups, vec!["b", "c", "d"]);
        assert_eq!(a.users, vec!["x"]);
    }
}
