//! What an operator asks a running (or stopped) Writeback: its status, its run history, its
//! audit trail, what the rules make of one group. Read-only: these open the state file and,
//! for `explain`, read AD; they never write either.

pub mod audit;
pub mod explain;
pub mod history;
pub mod status;

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use std::path::{Path, PathBuf};

use crate::state::{StateError, Store};

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{flag} {value:?}: expected an RFC 3339 time (2026-12-01T08:00:00Z) or an age such as 30m, 12h or 7d")]
    BadTime { flag: &'static str, value: String },
    #[error("no sync has run with this configuration yet (its state file {} does not exist), so there is nothing to show: run `writeback sync` (or start the service, `systemctl start writeback`) first; `writeback plan` shows what the first sync would change", path.display())]
    NeverSynced { path: PathBuf },
}

/// The state file for a read-only verb: not created when it is missing (an empty one would
/// pass for a Writeback that has nothing to do).
pub fn open_existing(path: &Path) -> Result<Store, InspectError> {
    if !path.exists() {
        return Err(InspectError::NeverSynced {
            path: path.to_path_buf(),
        });
    }
    Ok(Store::open(path)?)
}

/// A time given as RFC 3339 or as an age before `now` (`90s`, `30m`, `12h`, `7d`), in the form
/// the state stores (so text order is time order).
/// `text` whole when it has at most `max` characters, else cut at the last space before them
/// with a visible `...` (a word or a DN is not split in the middle when a space is near).
pub fn cut_words(text: &str, max: usize) -> String {
    let Some((limit, _)) = text.char_indices().nth(max) else {
        return text.to_string();
    };
    let head = text.get(..limit).unwrap_or(text);
    let at = match head.rfind(' ') {
        Some(i) if i > limit / 2 => i,
        _ => limit,
    };
    format!("{} ...", text.get(..at).unwrap_or(head).trim_end())
}

/// `text` on lines of at most about `width` characters, broken between words (a word longer
/// than a line, such as a DN without spaces, gets a line of its own), each line after `indent`.
pub fn wrap_words(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(indent);
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(indent);
        out.push_str(&line);
        out.push('\n');
    }
    out
}

pub fn parse_time(
    flag: &'static str,
    value: &str,
    now: OffsetDateTime,
) -> Result<String, InspectError> {
    let bad = || InspectError::BadTime {
        flag,
        value: value.to_string(),
    };
    let v = value.trim();
    if let Ok(t) = OffsetDateTime::parse(v, &Rfc3339) {
        return Ok(crate::state::rfc3339_at_time(t));
    }
    let split = v.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = v.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let age = match unit {
        "s" => Duration::seconds(n),
        "m" => Duration::minutes(n),
        "h" => Duration::hours(n),
        "d" => Duration::days(n),
        _ => return Err(bad()),
    };
    Ok(crate::state::rfc3339_at_time(now - age))
}

/// Seconds from `at` (RFC 3339) to `now`, when `at` parses.
pub fn age_secs(at: &str, now: OffsetDateTime) -> Option<i64> {
    OffsetDateTime::parse(at, &Rfc3339)
        .ok()
        .map(|t| (now - t).whole_seconds())
}

/// An age as people read it: `45 s`, `12 min`, `3 h`, `2 d`.
pub fn human_age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7_200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3_600),
        s => format!("{} d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_between_words_with_a_marker() {
        assert_eq!(cut_words("short", 10), "short");
        let e = "create CN=Demo Blocked_238baccae6e2,OU=Security: conflict: an object Writeback does not own";
        let cut = cut_words(e, 60);
        assert!(cut.ends_with(" ..."), "{cut}");
        assert!(e.starts_with(cut.trim_end_matches(" ...")), "{cut}");
        assert!(
            cut.contains("CN=Demo Blocked_238baccae6e2,OU=Security:"),
            "{cut}"
        );
        // No space to cut at: cut at the limit, still marked.
        assert_eq!(
            cut_words(&"x".repeat(20), 10),
            format!("{} ...", "x".repeat(10))
        );
    }

    #[test]
    fn text_is_wrapped_between_words_and_indented() {
        let w = wrap_words("one two three four five", 9, "  ");
        assert_eq!(w, "  one two\n  three\n  four five\n");
        // A word longer than a line is kept whole, on a line of its own.
        let w = wrap_words("a CN=Very,OU=Long,DC=x b", 5, "");
        assert_eq!(w, "a\nCN=Very,OU=Long,DC=x\nb\n");
        assert_eq!(wrap_words("", 5, "  "), "");
    }

    #[test]
    fn a_missing_state_file_says_no_sync_has_run_and_is_not_created() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("state.db");
        let e = match open_existing(&path) {
            Err(e) => e,
            Ok(_) => anyhow::bail!("a missing state file opened"),
        };
        assert!(matches!(e, InspectError::NeverSynced { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.starts_with("no sync has run with this configuration yet")
                && text.contains("run `writeback sync`"),
            "{text}"
        );
        assert!(!path.exists());
        Store::open(&path)?;
        assert!(open_existing(&path).is_ok());
        Ok(())
    }

    #[test]
    fn times_are_rfc3339_or_ages() {
        let now = time::macros::datetime!(2026-12-02 12:00:00 UTC);
        assert_eq!(
            parse_time("--since", "2h", now).unwrap(),
            "2026-12-02T10:00:00.000Z"
        );
        assert_eq!(
            parse_time("--since", "7d", now).unwrap(),
            "2026-11-25T12:00:00.000Z"
        );
        assert_eq!(
            parse_time("--since", "2026-12-01T08:00:00+01:00", now).unwrap(),
            "2026-12-01T07:00:00.000Z"
        );
        for bad in ["", "h", "12w", "yesterday", "-3h"] {
            let e = parse_time("--since", bad, now).unwrap_err().to_string();
            assert!(e.contains("--since") && e.contains("30m"), "{bad}: {e}");
        }
        assert_eq!(human_age(59), "59 s");
        assert_eq!(human_age(600), "10 min");
        assert_eq!(human_age(90_000), "25 h");
    }
}
