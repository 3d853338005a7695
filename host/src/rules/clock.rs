//! Time for rules: `now()` and the date primitives behind `std/time`.
//!
//! Rules stay deterministic: `now()` is not the wall clock but the instant the host fixed for the
//! evaluation batch (one sync cycle, one rule test case), so every group in a cycle sees the same
//! time and a re-run of the same batch gives the same answers. The instant is kept to the second,
//! in UTC, and written as RFC 3339 (`2024-05-01T12:00:00Z`), the format Graph uses for
//! `createdDateTime` and `deletedDateTime`.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use rhai::{Engine, EvalAltResult, ImmutableString, INT};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// The instant rules see as `now()`, to the second, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Now {
    unix: i64,
}

/// A time that is not RFC 3339, or is outside the years 1-9999.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an RFC 3339 time with an offset (e.g. 2024-05-01T12:00:00Z)")]
pub struct TimeError(pub String);

impl Now {
    /// The wall clock, truncated to the second.
    pub fn current() -> Now {
        Now {
            unix: OffsetDateTime::now_utc().unix_timestamp(),
        }
    }

    /// Parses an RFC 3339 time (any offset; fractions of a second are dropped).
    pub fn parse(text: &str) -> Result<Now, TimeError> {
        OffsetDateTime::parse(text.trim(), &Rfc3339)
            .map(|t| Now {
                unix: t.unix_timestamp(),
            })
            .map_err(|_| TimeError(text.to_string()))
    }

    /// Seconds since 1970-01-01T00:00:00Z; `None` outside what RFC 3339 can write.
    pub fn from_unix(unix: i64) -> Option<Now> {
        format_unix(unix).map(|_| Now { unix })
    }

    pub fn unix_seconds(self) -> i64 {
        self.unix
    }
}

impl fmt::Display for Now {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every `Now` is built from a valid instant, so formatting cannot fail.
        f.write_str(&format_unix(self.unix).unwrap_or_default())
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`, or `None` outside years 1-9999.
fn format_unix(unix: i64) -> Option<String> {
    let t = OffsetDateTime::from_unix_timestamp(unix)
        .ok()?
        .to_offset(UtcOffset::UTC);
    if !(1..=9999).contains(&t.year()) {
        return None;
    }
    t.format(&Rfc3339).ok()
}

/// The batch instant of one engine. Engines are leased to one caller at a time, so the caller
/// sets it before each call and nothing else reads it meanwhile. It also notes whether a script
/// read it: a decision that depends on the time can change with no cloud change, so the host
/// evaluates such groups again every cycle.
#[derive(Debug)]
pub(crate) struct NowCell(AtomicI64, AtomicBool);

impl NowCell {
    pub(crate) fn new(now: Now) -> Arc<NowCell> {
        Arc::new(NowCell(AtomicI64::new(now.unix), AtomicBool::new(false)))
    }

    /// Sets the instant and clears the "read" note.
    pub(crate) fn set(&self, now: Now) {
        self.0.store(now.unix, Ordering::Relaxed);
        self.1.store(false, Ordering::Relaxed);
    }

    /// True when `now()` was called since the last [`NowCell::set`].
    pub(crate) fn was_read(&self) -> bool {
        self.1.load(Ordering::Relaxed)
    }

    fn get(&self) -> Now {
        self.1.store(true, Ordering::Relaxed);
        Now {
            unix: self.0.load(Ordering::Relaxed),
        }
    }
}

/// `now()`, `parse_time(text)` and `format_time(seconds)`.
pub(crate) fn register(engine: &mut Engine, cell: Arc<NowCell>) {
    engine.register_fn("now", move || -> ImmutableString {
        cell.get().to_string().into()
    });
    engine.register_fn(
        "parse_time",
        |text: &str| -> Result<INT, Box<EvalAltResult>> {
            Now::parse(text)
                .map(Now::unix_seconds)
                .map_err(|e| format!("parse_time: {e}").into())
        },
    );
    engine.register_fn("parse_time", |_: ()| -> Result<INT, Box<EvalAltResult>> {
        Err("parse_time: the time is () (the property is not set)".into())
    });
    engine.register_fn(
        "format_time",
        |seconds: INT| -> Result<ImmutableString, Box<EvalAltResult>> {
            format_unix(seconds)
                .map(Into::into)
                .ok_or_else(|| format!("format_time: {seconds} is outside the years 1-9999").into())
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_rfc3339_in_utc() {
        let t = Now::parse("2024-05-01T14:30:15.1234567+02:00").expect("valid");
        assert_eq!(t.to_string(), "2024-05-01T12:30:15Z");
        assert_eq!(
            Now::parse("1970-01-01T00:00:00Z").map(Now::unix_seconds),
            Ok(0)
        );
        assert_eq!(
            Now::from_unix(86_400).map(|n| n.to_string()),
            Some("1970-01-02T00:00:00Z".into())
        );
        assert!(Now::parse("2024-05-01").is_err());
        assert!(
            Now::parse("2024-05-01T12:00:00").is_err(),
            "an offset is required"
        );
        assert_eq!(Now::from_unix(i64::MAX), None);
        let e = Now::parse("yesterday").expect_err("invalid");
        assert!(e
            .to_string()
            .contains("\"yesterday\" is not an RFC 3339 time"));
    }

    #[test]
    fn current_is_whole_seconds() {
        let now = Now::current();
        assert_eq!(Now::parse(&now.to_string()), Ok(now));
    }
}
