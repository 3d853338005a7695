//! `setting("name")` with a name the host configuration does not define is a load error, with
//! the call's position, instead of a failure for every group at sync time. Found in the compiled
//! AST (Rhai's own parser), so comments and strings never match. Only literal names in the rule
//! file itself are checked: a computed name, or a call in an imported module, still fails at the
//! call. `setting_or("name", default)` has a default and is never an error.

use rhai::{ASTNode, Expr, Position, Stmt, AST};

/// A `setting("…")` call whose name is not configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownSetting {
    pub(crate) name: String,
    pub(crate) at: Position,
}

impl UnknownSetting {
    pub(crate) fn message(&self) -> String {
        format!(
            "setting {:?} is not defined in the host configuration ([rules.settings]); define it, or use setting_or({:?}, default)",
            self.name, self.name
        )
    }
}

/// Every `setting("<literal>")` in `ast` whose name `defined` rejects, in source order.
pub(crate) fn unknown(ast: &AST, defined: impl Fn(&str) -> bool) -> Vec<UnknownSetting> {
    literal_calls(ast, "setting")
        .into_iter()
        .filter(|u| !defined(&u.name))
        .collect()
}

/// Every call `function("<literal>")` in `ast` (global, one argument), in source order: the
/// names a rule file reads with `setting` or `secret`.
pub(crate) fn literal_calls(ast: &AST, function: &str) -> Vec<UnknownSetting> {
    let mut found = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        // A call used as a statement (`secret("x");`) is a statement node of its own.
        let (call, at) = match path.last() {
            Some(ASTNode::Expr(Expr::FnCall(call, at))) => (call, at),
            Some(ASTNode::Stmt(Stmt::FnCall(call, at))) => (call, at),
            _ => return true,
        };
        if call.name.as_str() != function || !call.namespace.is_empty() {
            return true;
        }
        if let [Expr::StringConstant(name, _)] = call.args.as_slice() {
            found.push(UnknownSetting {
                name: name.to_string(),
                at: *at,
            });
        }
        true
    });
    found.sort_by_key(|u| (u.at.line(), u.at.position()));
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(src: &str) -> AST {
        let mut engine = rhai::Engine::new_raw();
        engine.set_optimization_level(rhai::OptimizationLevel::None);
        engine.register_fn("setting", |_: &str| 0_i64);
        engine.register_fn("setting_or", |_: &str, d: i64| d);
        engine.compile(src).expect("compiles")
    }

    #[test]
    fn finds_literal_names_not_defined_anywhere_in_the_file() {
        let ast = compile(
            "const A = setting(\"top\");\n\
             fn to_ad(group) {\n\
             \x20   // setting(\"in_comment\")\n\
             \x20   let s = \"setting(\\\"in_string\\\")\";\n\
             \x20   let x = if true { setting(\"nested\") } else { 0 };\n\
             \x20   let y = setting_or(\"with_default\", 1);\n\
             \x20   let n = \"computed\";\n\
             \x20   let z = setting(n);\n\
             \x20   setting(\"known\") + setting(\"missing\")\n\
             }",
        );
        let found = unknown(&ast, |n| n == "known");
        let names: Vec<(&str, Option<usize>)> = found
            .iter()
            .map(|u| (u.name.as_str(), u.at.line()))
            .collect();
        assert_eq!(
            names,
            vec![("top", Some(1)), ("nested", Some(5)), ("missing", Some(9))]
        );
        assert!(found[0].message().contains("setting_or(\"top\", default)"));
    }

    #[test]
    fn nothing_when_every_name_is_defined() {
        let ast = compile("fn in_scope(g) { setting(\"a\") == 1 }");
        assert!(unknown(&ast, |_| true).is_empty());
    }
}
