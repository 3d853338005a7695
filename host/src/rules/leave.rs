//! What a rule says about a group it no longer wants written: `#{ leave: "keep" }` (the AD group
//! stays as it is and is no longer written, as Connect group writeback v2 does for a group
//! disabled for writeback) or `#{ leave: "delete", after: "7d" }` (deleted once the group has
//! been out of scope that long; without `after`, at once, as `()` does).

use rhai::Map;

use super::text::quoted;
use super::Decision;

const KEYS: &str = "leave, after";

/// What is wrong with a `#{ leave: ... }` map. Messages name the rule and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaveError {
    #[error("{rule} returned `leave` as {type_name}; it must be \"keep\" or \"delete\"")]
    LeaveType {
        rule: String,
        type_name: &'static str,
    },
    #[error("{rule} returned `after` as {type_name}; it must be a duration such as \"7d\", \"12h\" or \"30m\"")]
    AfterType {
        rule: String,
        type_name: &'static str,
    },
    #[error("{rule} returned `after`: {cause}")]
    After {
        rule: String,
        #[source]
        cause: DurationError,
    },
    #[error("{rule} returned `leave` with an unknown key `{key}` (allowed next to `leave`: {keys}); a group to write has no `leave`", keys = KEYS)]
    UnknownKey { rule: String, key: String },
    #[error("{rule} returned leave: \"keep\" with `after`; a kept group is never deleted by the rule (use leave: \"delete\", after: ...)")]
    KeepAfter { rule: String },
    #[error("{rule} returned leave: {}; it must be \"keep\" or \"delete\"", quoted(.value))]
    UnknownLeave { rule: String, value: String },
    #[error("{rule} returned `after` without `leave`")]
    AfterWithoutLeave { rule: String },
}

/// A duration that [`parse_duration`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{} is not a duration such as \"7d\", \"12h\", \"30m\" or \"90s\"", quoted(.text))]
    Malformed { text: String },
    #[error("{} is longer than 10 years", quoted(.text))]
    TooLong { text: String },
}

/// The decision a `#{ leave: ... }` map stands for.
pub(crate) fn decision(rule: &str, map: Map) -> Result<Decision, LeaveError> {
    let rule_of = || rule.to_string();
    let mut leave = None;
    let mut after = None;
    for (key, value) in map {
        match key.as_str() {
            "leave" => {
                leave = Some(
                    value
                        .into_string()
                        .map_err(|type_name| LeaveError::LeaveType {
                            rule: rule_of(),
                            type_name,
                        })?,
                )
            }
            "after" => {
                let text = value
                    .into_string()
                    .map_err(|type_name| LeaveError::AfterType {
                        rule: rule_of(),
                        type_name,
                    })?;
                after = Some(parse_duration(&text).map_err(|cause| LeaveError::After {
                    rule: rule_of(),
                    cause,
                })?);
            }
            other => {
                return Err(LeaveError::UnknownKey {
                    rule: rule_of(),
                    key: other.to_string(),
                })
            }
        }
    }
    match (leave.as_deref(), after) {
        (Some("keep"), None) => Ok(Decision::Keep),
        (Some("keep"), Some(_)) => Err(LeaveError::KeepAfter { rule: rule_of() }),
        (Some("delete"), None | Some(0)) => Ok(Decision::OutOfScope),
        (Some("delete"), Some(secs)) => Ok(Decision::DeleteAfter { secs }),
        (Some(other), _) => Err(LeaveError::UnknownLeave {
            rule: rule_of(),
            value: other.to_string(),
        }),
        (None, _) => Err(LeaveError::AfterWithoutLeave { rule: rule_of() }),
    }
}

/// Seconds in `text`: a whole number followed by `s`, `m`, `h` or `d` (`"90s"`, `"7d"`).
pub fn parse_duration(text: &str) -> Result<u64, DurationError> {
    let malformed = || DurationError::Malformed {
        text: text.to_string(),
    };
    let t = text.trim();
    let unit = t.chars().last().unwrap_or(' ');
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(malformed()),
    };
    let number = &t[..t.len() - 1];
    let n: u64 = number.parse().map_err(|_| malformed())?;
    n.checked_mul(scale)
        .filter(|s| *s <= MAX_DELAY_SECS)
        .ok_or_else(|| DurationError::TooLong {
            text: text.to_string(),
        })
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
        let e = decision("10-a.rhai", map(&[("leave", "kep")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("10-a.rhai") && e.contains("\"kep\""), "{e}");
        let e = decision("r", map(&[("leave", "keep"), ("after", "1d")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("never deleted"), "{e}");
        let e = decision("r", map(&[("leave", "delete"), ("after", "7 days")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"7 days\""), "{e}");
        let e = decision("r", map(&[("leave", "keep"), ("parent", "x")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`parent`"), "{e}");
        let e = decision("r", map(&[("after", "1d")]))
            .unwrap_err()
            .to_string();
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
