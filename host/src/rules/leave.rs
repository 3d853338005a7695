//! What a rule says about a group it no longer wants written: `#{ leave: "keep" }` (the AD group
//! stays as it is and is no longer written, as Connect group writeback v2 does for a group
//! disabled for writeback) or `#{ leave: "delete", after: "7d" }` (deleted once the group has
//! been out of scope that long; without `after`, at once, as `()` does).

use rhai::Map;

use super::text::quoted;
use super::Decision;

const KEYS: &str = "leave, after";

/// The decision a `#{ leave: ... }` map stands for. Errors name the rule and the key.
pub(crate) fn decision(rule: &str, map: Map) -> Result<Decision, String> {
    let mut leave = None;
    let mut after = None;
    for (key, value) in map {
        match key.as_str() {
            "leave" => {
                leave = Some(value.into_string().map_err(|typ| {
                    format!("{rule} returned `leave` as {typ}; it must be \"keep\" or \"delete\"")
                })?)
            }
            "after" => {
                let text = value.into_string().map_err(|typ| {
                    format!("{rule} returned `after` as {typ}; it must be a duration such as \"7d\", \"12h\" or \"30m\"")
                })?;
                after = Some(parse_duration(&text).map_err(|e| format!("{rule} returned `after`: {e}"))?);
            }
            other => {
                return Err(format!(
                    "{rule} returned `leave` with an unknown key `{other}` (allowed next to `leave`: {KEYS}); a group to write has no `leave`"
                ))
            }
        }
    }
    match (leave.as_deref(), after) {
        (Some("keep"), None) => Ok(Decision::Keep),
        (Some("keep"), Some(_)) => Err(format!(
            "{rule} returned leave: \"keep\" with `after`; a kept group is never deleted by the rule (use leave: \"delete\", after: ...)"
        )),
        (Some("delete"), None | Some(0)) => Ok(Decision::OutOfScope),
        (Some("delete"), Some(secs)) => Ok(Decision::DeleteAfter { secs }),
        (Some(other), _) => Err(format!(
            "{rule} returned leave: {}; it must be \"keep\" or \"delete\"",
            quoted(other)
        )),
        (None, _) => Err(format!("{rule} returned `after` without `leave`")),
    }
}

/// Seconds in `text`: a whole number followed by `s`, `m`, `h` or `d` (`"90s"`, `"7d"`).
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let unit = t.chars().last().unwrap_or(' ');
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => {
            return Err(format!(
                "{} is not a duration such as \"7d\", \"12h\", \"30m\" or \"90s\"",
                quoted(text)
            ))
        }
    };
    let number = &t[..t.len() - 1];
    let n: u64 = number.parse().map_err(|_| {
        format!(
            "{} is not a duration such as \"7d\", \"12h\", \"30m\" or \"90s\"",
            quoted(text)
        )
    })?;
    n.checked_mul(scale)
        .filter(|s| *s <= MAX_DELAY_SECS)
        .ok_or_else(|| format!("{} is longer than 10 years", quoted(text)))
}

/// Longer than any retention an administrator sets; refuses typos such as "7000000d".
const MAX_DELAY_SECS: u64 = 10 * 365 * 86_400;

/// `secs` in the largest unit that divides it exactly: `"7d"`, `"36h"`, `"90s"`.
pub fn format_duration(secs: u64) -> String {
    for (unit, scale) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs >= scale && secs.is_multiple_of(scale) {
            return format!("{}{unit}", secs / scale);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rhai::Dynamic;

    fn map(pairs: &[(&str, &str)]) -> Map {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), Dynamic::from(v.to_string())))
            .collect()
    }

    #[test]
    fn keep_delete_and_delete_after() {
        assert_eq!(decision("r", map(&[("leave", "keep")])), Ok(Decision::Keep));
        assert_eq!(
            decision("r", map(&[("leave", "delete")])),
            Ok(Decision::OutOfScope)
        );
        assert_eq!(
            decision("r", map(&[("leave", "delete"), ("after", "7d")])),
            Ok(Decision::DeleteAfter { secs: 7 * 86_400 })
        );
    }

    #[test]
    fn mistakes_are_named() {
        let e = decision("10-a.rhai", map(&[("leave", "kep")])).unwrap_err();
        assert!(e.contains("10-a.rhai") && e.contains("\"kep\""), "{e}");
        let e = decision("r", map(&[("leave", "keep"), ("after", "1d")])).unwrap_err();
        assert!(e.contains("never deleted"), "{e}");
        let e = decision("r", map(&[("leave", "delete"), ("after", "7 days")])).unwrap_err();
        assert!(e.contains("\"7 days\""), "{e}");
        let e = decision("r", map(&[("leave", "keep"), ("parent", "x")])).unwrap_err();
        assert!(e.contains("`parent`"), "{e}");
        let e = decision("r", map(&[("after", "1d")])).unwrap_err();
        assert!(e.contains("without `leave`"), "{e}");
    }

    #[test]
    fn durations_round_trip() {
        for (text, secs) in [
            ("90s", 90),
            ("30m", 1_800),
            ("36h", 129_600),
            ("7d", 604_800),
        ] {
            assert_eq!(parse_duration(text), Ok(secs));
            assert_eq!(format_duration(secs), text);
        }
        assert!(parse_duration("").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("-1d").is_err());
        assert!(parse_duration("99999d").is_err());
    }
}
