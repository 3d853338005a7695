//! Text lengths and cuts as Active Directory counts them: in UTF-16 code units (what AD stores
//! and what rangeUpper limits). A character outside the Basic Multilingual Plane (an emoji, `𝔸`)
//! is two units; everything else one. Cuts fall between characters only, so a result never holds
//! half of a surrogate pair: when a cut point lands inside such a character, the whole character
//! is left out and the result is one unit shorter than asked.
//!
//! Combining marks and joined emoji sequences are several characters; a cut may separate them
//! (the result is still valid text), as Microsoft's own `Left` does.

/// Length in UTF-16 code units.
pub(crate) fn utf16_len(s: &str) -> usize {
    // UTF-8 is never shorter than UTF-16 in units, so short ASCII needs no walk.
    if s.is_ascii() {
        return s.len();
    }
    s.chars().map(char::len_utf16).sum()
}

/// Characters of a value quoted in a message; longer values are cut (a message must stay a
/// line, whatever a rule or the cloud sent).
pub const QUOTE_CHARS: usize = 80;

/// `text` for a message: quoted, cut after [`QUOTE_CHARS`] characters with its full length
/// said, so a 10 MB value never reaches a report or a log.
pub fn quoted(text: &str) -> String {
    // Counting stops after the cut: a huge value is not walked twice.
    match text.char_indices().nth(QUOTE_CHARS) {
        None => format!("{text:?}"),
        Some((end, _)) => format!(
            "{:?}... ({} characters)",
            &text[..end],
            text.chars().count()
        ),
    }
}

/// Byte offset of the end of the longest prefix of at most `n` units.
fn prefix_end(s: &str, n: usize) -> usize {
    if s.len() <= n {
        return s.len();
    }
    let mut units = 0;
    for (i, c) in s.char_indices() {
        units += c.len_utf16();
        if units > n {
            return i;
        }
    }
    s.len()
}

/// Byte offset of the start of the longest suffix of at most `n` units.
fn suffix_start(s: &str, n: usize) -> usize {
    if s.len() <= n {
        return 0;
    }
    let mut units = 0;
    let mut start = s.len();
    for (i, c) in s.char_indices().rev() {
        units += c.len_utf16();
        if units > n {
            break;
        }
        start = i;
    }
    start
}

/// The longest prefix of `s` that is at most `n` units long.
pub(crate) fn first_units(s: &str, n: usize) -> &str {
    s.split_at(prefix_end(s, n)).0
}

/// The longest suffix of `s` that is at most `n` units long.
pub(crate) fn last_units(s: &str, n: usize) -> &str {
    s.split_at(suffix_start(s, n)).1
}

/// The characters of `s` that lie wholly within the units `start .. start + len` (a window as
/// `Mid` takes it); a character that straddles either end of the window is left out.
pub(crate) fn mid_units(s: &str, start: usize, len: usize) -> &str {
    let end = start.saturating_add(len);
    let (mut from, mut to) = (None, s.len());
    let mut units = 0;
    for (i, c) in s.char_indices() {
        let next = units + c.len_utf16();
        if from.is_none() && units >= start {
            from = Some(i);
        }
        if next > end {
            to = i;
            break;
        }
        units = next;
    }
    match from {
        Some(from) if from < to => s.get(from..to).unwrap_or(""),
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mixed text: ASCII, Latin-1, CJK, a combining mark, and two non-BMP characters.
    const MIXED: &str = "a😀é東e\u{301}𝔸z";

    #[test]
    fn lengths_count_utf16_units() {
        assert_eq!(utf16_len(""), 0);
        assert_eq!(utf16_len("abc"), 3);
        assert_eq!(utf16_len("😀"), 2);
        assert_eq!(utf16_len("𝔸"), 2);
        assert_eq!(utf16_len("東京"), 2);
        // a 1 + 😀 2 + é 1 + 東 1 + e 1 + U+0301 1 + 𝔸 2 + z 1
        assert_eq!(utf16_len(MIXED), 10);
        assert_eq!(utf16_len(MIXED), MIXED.encode_utf16().count());
    }

    #[test]
    fn first_units_never_splits_a_pair() {
        let expected = [
            "",
            "a",
            "a",
            "a😀",
            "a😀é",
            "a😀é東",
            "a😀é東e",
            "a😀é東e\u{301}",
            "a😀é東e\u{301}",
            "a😀é東e\u{301}𝔸",
            MIXED,
            MIXED,
        ];
        for (n, want) in expected.iter().enumerate() {
            assert_eq!(first_units(MIXED, n), *want, "n = {n}");
            assert!(utf16_len(first_units(MIXED, n)) <= n, "n = {n}");
        }
        assert_eq!(first_units("abc", 2), "ab");
        assert_eq!(first_units("😀😀", 3), "😀");
    }

    #[test]
    fn last_units_never_splits_a_pair() {
        let expected = [
            "",
            "z",
            "z",
            "𝔸z",
            "\u{301}𝔸z",
            "e\u{301}𝔸z",
            "東e\u{301}𝔸z",
            "é東e\u{301}𝔸z",
            "é東e\u{301}𝔸z",
            "😀é東e\u{301}𝔸z",
            MIXED,
            MIXED,
        ];
        for (n, want) in expected.iter().enumerate() {
            assert_eq!(last_units(MIXED, n), *want, "n = {n}");
            assert!(utf16_len(last_units(MIXED, n)) <= n, "n = {n}");
        }
        assert_eq!(last_units("abcdef", 2), "ef");
    }

    #[test]
    fn mid_units_keeps_the_characters_inside_the_window() {
        assert_eq!(mid_units(MIXED, 0, 99), MIXED);
        assert_eq!(mid_units(MIXED, 0, 0), "");
        assert_eq!(mid_units(MIXED, 0, 2), "a");
        assert_eq!(mid_units(MIXED, 1, 2), "😀");
        // unit 2 is the second half of 😀: the emoji is outside the window
        assert_eq!(mid_units(MIXED, 2, 3), "é東");
        assert_eq!(mid_units(MIXED, 3, 3), "é東e");
        // the window ends inside 𝔸 (units 7-8)
        assert_eq!(mid_units(MIXED, 4, 4), "東e\u{301}");
        assert_eq!(mid_units(MIXED, 7, 1), "");
        assert_eq!(mid_units(MIXED, 7, 2), "𝔸");
        assert_eq!(mid_units(MIXED, 8, 2), "z");
        assert_eq!(mid_units(MIXED, 9, 5), "z");
        assert_eq!(mid_units(MIXED, 10, 5), "");
        assert_eq!(mid_units(MIXED, 99, 5), "");
        assert_eq!(mid_units("abcdef", 2, 3), "cde");
        assert_eq!(mid_units("abcdef", 4, usize::MAX), "ef");
    }
}
