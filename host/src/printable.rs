//! Text for a terminal or a log line, with what could forge or disguise it escaped. Cloud values
//! (display names, DNs built from them) and scripts' log messages are written by others: a C1
//! control or an ANSI escape can rewrite the operator's terminal, a bidi override can show
//! `evil` as `live`, and a newline can forge a line of its own. Each such character is shown
//! as `\u{…}` instead (`\n`, `\r` and `\t` as themselves, escaped).

use std::borrow::Cow;

/// A JSON value's kind, for messages about cloud data (never the value itself, which may be
/// large or hostile).
pub fn json_kind(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether `c` is shown escaped: control characters (C0, DEL, C1) and the invisible
/// direction marks and overrides.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

fn escape_into(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
    }
}

/// `s` as one line: every hidden character escaped, newlines included.
pub fn one_line(s: &str) -> Cow<'_, str> {
    escape(s, false)
}

/// A whole text whose own line breaks are the writer's: every hidden character but `\n`
/// escaped. Fields from outside go through [`one_line`] first.
pub fn text(s: &str) -> Cow<'_, str> {
    escape(s, true)
}

fn escape(s: &str, keep_newlines: bool) -> Cow<'_, str> {
    let keep = |c: char| !hidden(c) || (keep_newlines && c == '\n');
    if s.chars().all(keep) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if keep(c) {
            out.push(c);
        } else {
            escape_into(&mut out, c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let s = "CN=R&D \"Labs\" ‹Zürich›,OU=W → 日本";
        assert!(matches!(one_line(s), Cow::Borrowed(_)));
        assert_eq!(one_line(s), s);
    }

    #[test]
    fn controls_bidi_and_newlines_are_escaped() {
        assert_eq!(one_line("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(one_line("\u{1b}[2J"), "\\u{1b}[2J");
        assert_eq!(one_line("x\u{9b}31m"), "x\\u{9b}31m");
        assert_eq!(one_line("\u{202E}evil"), "\\u{202e}evil");
        assert_eq!(one_line("a\u{2066}b\u{200F}"), "a\\u{2066}b\\u{200f}");
        assert_eq!(one_line("\u{7f}"), "\\u{7f}");
    }

    #[test]
    fn a_text_keeps_its_own_line_breaks_only() {
        assert_eq!(text("one\ntwo\u{85}\r\n"), "one\ntwo\\u{85}\\r\n");
    }
}
