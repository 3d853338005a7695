//! A load-time check for one Rhai trap: script functions can be called as methods, so
//! `list.map(|x| ...)` anywhere in a rule set (a rule or a module it imports) calls the rule's own
//! `fn map(group)` with the list as `this`, instead of Rhai's array `map`. The result is a
//! confusing error or endless recursion on some groups. Writing `map(list, |x| ...)` is
//! unambiguous, so the method form is refused with its position.

use rhai::Token;

/// The rule entry points that shadow a method of the same name.
const ENTRY_POINTS: [&str; 2] = ["map", "scope"];

/// A method call that would hit a rule entry point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shadowed {
    pub(crate) line: usize,
    pub(crate) column: usize,
    pub(crate) name: &'static str,
}

impl Shadowed {
    pub(crate) fn message(&self) -> String {
        format!(
            "`.{0}(...)` called as a method runs the rule's own `fn {0}(group)` (Rhai lets script functions be called as methods); write `{0}(value, ...)` instead",
            self.name
        )
    }
}

/// Finds `.map(` and `.scope(` (and `?.map(`) in code, read with Rhai's own tokenizer so comments
/// and strings of every kind are skipped as Rhai skips them.
pub(crate) fn shadowed_methods(source: &str) -> Vec<Shadowed> {
    let toks = super::tokens::tokens(source);
    let mut found = Vec::new();
    for w in toks.windows(3) {
        let [(dot, at), (Token::Identifier(word), _), (Token::LeftParen | Token::Unit, _)] = w
        else {
            continue;
        };
        let (Some(line), Some(column)) = (at.line(), at.position()) else {
            continue;
        };
        let column = match dot {
            Token::Period => column,
            // `?.` is one token; the column shown is the `.`'s.
            Token::Elvis => column + 1,
            _ => continue,
        };
        if let Some(name) = ENTRY_POINTS.iter().find(|n| **n == word.as_str()) {
            found.push(Shadowed { line, column, name });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_method_calls_outside_comments_and_strings() {
        let src = "let a = x.map(|v| v);\n// y.map(f)\nlet s = \"z.map(\";\n/* w.scope( /* nested */ q.map( */\nlet b = list\n    . scope (1);\nlet c = map(list, f);\nlet d = x.mapping(1);\nlet e = y?.map();\nlet f = `${ z.scope(1) } .map(`;\nlet g = #\"q.map(\"#;";
        let found = shadowed_methods(src);
        assert_eq!(
            found,
            vec![
                Shadowed {
                    line: 1,
                    column: 10,
                    name: "map"
                },
                Shadowed {
                    line: 6,
                    column: 5,
                    name: "scope"
                },
                Shadowed {
                    line: 9,
                    column: 11,
                    name: "map"
                },
                Shadowed {
                    line: 10,
                    column: 14,
                    name: "scope"
                },
            ]
        );
        assert!(found[0].message().contains("`map(value, ...)`"));
    }
}
