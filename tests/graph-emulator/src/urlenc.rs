//! Percent-decoding of paths, query strings and form bodies, and encoding for the links we emit.

/// Decode `%XX` sequences (and `+` as space when `plus_is_space`). Invalid escapes stay literal.
pub fn decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Split `a=1&b=2` into decoded pairs, keeping order and duplicates.
pub fn parse_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k, true), decode(v, true)),
            None => (decode(p, true), String::new()),
        })
        .collect()
}

/// Encode a query value; keeps the characters Graph itself leaves readable in links
/// (`$`, `,`, `'`, `(`, `)`, `:`, `/`).
pub fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b'$'
            | b','
            | b'\''
            | b'('
            | b')'
            | b':'
            | b'/' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_dollar_and_plus() {
        assert_eq!(decode("%24select", false), "$select");
        assert_eq!(decode("a+b%20c", true), "a b c");
        assert_eq!(decode("100%", true), "100%");
        assert_eq!(decode("%4", true), "%4");
        assert_eq!(decode("%41", true), "A");
    }

    #[test]
    fn pairs() {
        let p = parse_pairs("%24filter=id+eq+%27x%27&$top=5&flag");
        assert_eq!(p[0], ("$filter".into(), "id eq 'x'".into()));
        assert_eq!(p[1], ("$top".into(), "5".into()));
        assert_eq!(p[2], ("flag".into(), String::new()));
    }

    #[test]
    fn encode_roundtrip() {
        let v = "id eq 'a b' or x=&";
        assert_eq!(decode(&encode_query_value(v), true), v);
    }
}
