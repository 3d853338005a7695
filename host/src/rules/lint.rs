//! A load-time check for one Rhai trap: script functions can be called as methods, so
//! `list.map(|x| ...)` anywhere in a rule set (a rule or a module it imports) calls the rule's own
//! `fn map(group)` with the list as `this`, instead of Rhai's array `map`. The result is a
//! confusing error or endless recursion on some groups. Writing `map(list, |x| ...)` is
//! unambiguous, so the method form is refused with its position.

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

/// Finds `.map(` and `.scope(` outside comments and string literals.
pub(crate) fn shadowed_methods(source: &str) -> Vec<Shadowed> {
    let chars: Vec<char> = source.chars().collect();
    let mut found = Vec::new();
    let (mut line, mut column) = (1usize, 1usize);
    let mut i = 0;
    let advance = |i: &mut usize, line: &mut usize, column: &mut usize| {
        if chars.get(*i) == Some(&'\n') {
            *line += 1;
            *column = 1;
        } else {
            *column += 1;
        }
        *i += 1;
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    advance(&mut i, &mut line, &mut column);
                }
            }
            '/' if next == Some('*') => {
                // Rhai block comments nest.
                let mut depth = 0usize;
                while i < chars.len() {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        advance(&mut i, &mut line, &mut column);
                    } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        advance(&mut i, &mut line, &mut column);
                        if depth == 0 {
                            advance(&mut i, &mut line, &mut column);
                            break;
                        }
                    }
                    advance(&mut i, &mut line, &mut column);
                }
            }
            '"' | '`' | '\'' => {
                advance(&mut i, &mut line, &mut column);
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' {
                        advance(&mut i, &mut line, &mut column);
                    }
                    advance(&mut i, &mut line, &mut column);
                }
                advance(&mut i, &mut line, &mut column);
            }
            '.' => {
                let (at_line, at_column) = (line, column);
                let mut j = i + 1;
                while chars.get(j).is_some_and(|c| c.is_whitespace()) {
                    j += 1;
                }
                let start = j;
                while chars
                    .get(j)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_')
                {
                    j += 1;
                }
                let word: String = chars[start..j].iter().collect();
                while chars.get(j).is_some_and(|c| c.is_whitespace()) {
                    j += 1;
                }
                if chars.get(j) == Some(&'(') {
                    if let Some(name) = ENTRY_POINTS.iter().find(|n| **n == word) {
                        found.push(Shadowed {
                            line: at_line,
                            column: at_column,
                            name,
                        });
                    }
                }
                advance(&mut i, &mut line, &mut column);
            }
            _ => advance(&mut i, &mut line, &mut column),
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_method_calls_outside_comments_and_strings() {
        let src = "let a = x.map(|v| v);\n// y.map(f)\nlet s = \"z.map(\";\n/* w.scope( /* nested */ q.map( */\nlet b = list\n    . scope (1);\nlet c = map(list, f);\nlet d = x.mapping(1);";
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
            ]
        );
        assert!(found[0].message().contains("`map(value, ...)`"));
    }
}
