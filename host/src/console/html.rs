//! HTML text for the console: every value from outside (display names, DNs, errors, rule
//! output) goes through [`esc`], which shows hidden characters as `printable` does for a
//! terminal and turns the five characters that mean markup into entities. Markup is only ever
//! written by the console's own literals.

use std::fmt::Write as _;

/// `s` as HTML text or a quoted attribute value: one line, hidden characters escaped
/// (`\u{202e}`, `\n`), `& < > " '` as entities.
pub fn esc(s: &str) -> String {
    let shown = crate::printable::one_line(s);
    let mut out = String::with_capacity(shown.len() + 8);
    for c in shown.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A multi-line text (the CLI's own rendering) for a `<pre>`: its line breaks kept.
pub fn esc_text(s: &str) -> String {
    s.split('\n').map(esc).collect::<Vec<_>>().join("\n")
}

/// `s` as a query-string value (`/console/explain?group=…`).
pub fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// The console's pages, one per view, in the order of the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Overview,
    Held,
    Quarantine,
    Audit,
    Explain,
}

impl View {
    pub const ALL: [View; 5] = [
        View::Overview,
        View::Held,
        View::Quarantine,
        View::Audit,
        View::Explain,
    ];

    pub fn path(self) -> &'static str {
        match self {
            View::Overview => "/console",
            View::Held => "/console/held",
            View::Quarantine => "/console/quarantine",
            View::Audit => "/console/audit",
            View::Explain => "/console/explain",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            View::Overview => "Overview",
            View::Held => "Held back",
            View::Quarantine => "Quarantine",
            View::Audit => "Audit trail",
            View::Explain => "Explain a group",
        }
    }
}

/// A whole page: the navigation (the current view marked), the title, `body` (markup the
/// caller built with [`esc`] around every value).
pub fn page(view: View, body: &str) -> String {
    let mut nav = String::new();
    for v in View::ALL {
        let current = if v == view {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{}\"{current}>{}</a>", v.path(), v.title());
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · Writeback</title><link rel=\"stylesheet\" href=\"/console/style.css\"></head>\
<body><header><span class=\"brand\">Writeback</span><nav>{nav}</nav>\
<span class=\"ro\">read-only</span></header><main><h1>{title}</h1>\n{body}</main></body></html>\n",
        title = view.title()
    )
}

/// A table: `head` cells, then rows of cells that are already markup.
pub fn table(class: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("<table class=\"{class}\"><thead><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for r in rows {
        out.push_str("<tr>");
        for cell in r {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_values_is_text() {
        let hostile = "<img src=x onerror=\"alert(1)\"> & 'x' </td><script>";
        let e = esc(hostile);
        assert!(
            !e.contains('<') && !e.contains('>') && !e.contains('"'),
            "{e}"
        );
        assert_eq!(
            e,
            "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; &#39;x&#39; &lt;/td&gt;&lt;script&gt;"
        );
    }

    #[test]
    fn hidden_characters_are_shown_escaped_and_lines_stay_lines() {
        assert_eq!(esc("\u{202E}evil\nline"), "\\u{202e}evil\\nline");
        assert_eq!(esc_text("a <b>\nc\u{1b}"), "a &lt;b&gt;\nc\\u{1b}");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(query_value("R&D <x>/ä"), "R%26D%20%3Cx%3E%2F%C3%A4");
    }

    #[test]
    fn a_page_marks_its_view_and_names_no_outside_asset() {
        let p = page(View::Held, "<p>x</p>");
        assert!(p.contains("<a href=\"/console/held\" aria-current=\"page\">Held back</a>"));
        assert!(p.contains("<title>Held back · Writeback</title>"));
        assert!(!p.contains("http://") && !p.contains("https://"), "{p}");
    }
}
