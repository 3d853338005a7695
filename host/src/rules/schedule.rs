//! `const SCHEDULE = "..."` in a rule file: when its `on_schedule(info)` runs.
//!
//! A schedule is an interval (`"30s"`, `"5m"`, `"1h"`, `"1d"`: a whole number and one unit) or a
//! 5-field cron expression (minute hour day-of-month month day-of-week) read in UTC, with
//! croner's syntax: lists, ranges, steps, `MON`/`JAN` names, `L` and `#`.

use std::cmp::Ordering;
use std::time::Duration;

use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};
use croner::{CivilDate, CivilDateTime, CivilTime, Cron, CronDateTime, Resolution, Weekday};
use time::OffsetDateTime;

/// The longest interval accepted: a year.
const MAX_INTERVAL: Duration = Duration::from_secs(366 * 86_400);

/// Why a `SCHEDULE` is refused.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("the schedule is empty")]
    Empty,
    #[error("not a valid cron expression: {0}")]
    Cron(#[source] CronError),
    /// Neither one field (an interval) nor five (cron).
    #[error("{0} fields; a cron expression has 5 (minute hour day-of-month month day-of-week)")]
    FieldCount(usize),
    #[error("no unit (s, m, h or d)")]
    NoUnit,
    #[error("{0:?} is not a whole number and a unit")]
    NotANumber(String),
    #[error("unknown unit {0:?} (s, m, h or d)")]
    UnknownUnit(String),
    #[error("the interval must be at least 1")]
    Zero,
    #[error("the interval is longer than a year")]
    TooLong,
}

/// A parsed `SCHEDULE`.
#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Every(Duration),
    Cron(Box<Cron>),
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Schedule {
    /// Parses an interval or a 5-field cron expression; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(ScheduleError::Empty);
        }
        let fields = trimmed.split_whitespace().count();
        let kind = if fields == 1 {
            Kind::Every(interval(trimmed)?)
        } else if fields == 5 {
            let cron = CronParser::builder()
                .seconds(Seconds::Disallowed)
                .year(Year::Disallowed)
                .build()
                .parse(trimmed)
                .map_err(ScheduleError::Cron)?;
            Kind::Cron(Box::new(cron))
        } else {
            return Err(ScheduleError::FieldCount(fields));
        };
        Ok(Schedule {
            text: trimmed.to_string(),
            kind,
        })
    }

    /// The schedule as written (trimmed).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The interval, for interval schedules.
    pub fn interval(&self) -> Option<Duration> {
        match self.kind {
            Kind::Every(d) => Some(d),
            Kind::Cron(_) => None,
        }
    }

    /// The first due time strictly after `after` (UTC); `None` when a cron expression never
    /// matches again (e.g. February 30th).
    pub fn next_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        match &self.kind {
            Kind::Every(d) => after.checked_add(time::Duration::try_from(*d).ok()?),
            Kind::Cron(c) => c
                .find_next_occurrence(&Utc(after.to_offset(time::UtcOffset::UTC)), false)
                .ok()
                .map(|u| u.0),
        }
    }
}

/// `<n><unit>` with unit s, m, h or d.
fn interval(text: &str) -> Result<Duration, ScheduleError> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or(ScheduleError::NoUnit)?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| ScheduleError::NotANumber(text.to_string()))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(ScheduleError::UnknownUnit(unit.to_string())),
    };
    if n == 0 {
        return Err(ScheduleError::Zero);
    }
    let d = n
        .checked_mul(secs)
        .map(Duration::from_secs)
        .filter(|d| *d <= MAX_INTERVAL)
        .ok_or(ScheduleError::TooLong)?;
    Ok(d)
}

/// A UTC instant for croner (its own backends are chrono and jiff; the host uses `time`).
#[derive(Debug, Clone, Copy)]
struct Utc(OffsetDateTime);

impl CronDateTime for Utc {
    fn to_civil(&self) -> CivilDateTime {
        let t = self.0;
        CivilDateTime::new(
            CivilDate::from_parts_unchecked(
                t.year(),
                u32::from(u8::from(t.month())),
                t.day().into(),
            ),
            CivilTime::from_parts_unchecked(t.hour().into(), t.minute().into(), t.second().into()),
        )
    }

    fn civil_weekday(&self) -> Weekday {
        Weekday::from_days_from_sunday(self.0.weekday().number_days_from_sunday().into())
    }

    fn resolve_civil(&self, civil: CivilDateTime) -> Result<Resolution<Self>, CronError> {
        let month = u8::try_from(civil.month())
            .ok()
            .and_then(|m| time::Month::try_from(m).ok())
            .ok_or(CronError::InvalidDate)?;
        let day = u8::try_from(civil.day()).map_err(|_| CronError::InvalidDate)?;
        let date = time::Date::from_calendar_date(civil.year(), month, day)
            .map_err(|_| CronError::InvalidDate)?;
        let hms = |v: u32| u8::try_from(v).map_err(|_| CronError::InvalidTime);
        let time = time::Time::from_hms(
            hms(civil.hour())?,
            hms(civil.minute())?,
            hms(civil.second())?,
        )
        .map_err(|_| CronError::InvalidTime)?;
        // UTC has no gaps or folds.
        Ok(Resolution::Single(Utc(time::PrimitiveDateTime::new(
            date, time,
        )
        .assume_utc())))
    }

    fn checked_add_seconds(&self, seconds: i64) -> Option<Self> {
        self.0
            .checked_add(time::Duration::seconds(seconds))
            .map(Utc)
    }

    fn cmp_instant(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn intervals() {
        for (text, secs) in [("30s", 30), ("5m", 300), ("1h", 3600), ("1d", 86_400)] {
            let s = Schedule::parse(text).expect(text);
            assert_eq!(s.interval(), Some(Duration::from_secs(secs)));
            let t = datetime!(2026-01-01 00:00:00 UTC);
            assert_eq!(
                s.next_after(t),
                Some(t + time::Duration::seconds(secs as i64))
            );
        }
        for bad in ["0s", "5", "5x", "m", "1.5h", "-1m", "400d", " "] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} accepted");
        }
        let e = Schedule::parse("5x").unwrap_err().to_string();
        assert!(e.contains("unknown unit"), "{e}");
    }

    #[test]
    fn cron_expressions_in_utc() {
        let s = Schedule::parse("0 3 * * *").expect("daily at 03:00");
        assert_eq!(s.interval(), None);
        assert_eq!(
            s.next_after(datetime!(2026-03-10 02:59:59 UTC)),
            Some(datetime!(2026-03-10 03:00:00 UTC))
        );
        // Strictly after: a due time that is now gives the next one.
        assert_eq!(
            s.next_after(datetime!(2026-03-10 03:00:00 UTC)),
            Some(datetime!(2026-03-11 03:00:00 UTC))
        );
        // Another offset is read as the same instant.
        assert_eq!(
            s.next_after(datetime!(2026-03-10 04:30:00 +02:00)),
            Some(datetime!(2026-03-10 03:00:00 UTC))
        );
        let weekdays = Schedule::parse("*/15 9-17 * * MON-FRI").expect("office hours");
        assert_eq!(
            weekdays.next_after(datetime!(2026-03-14 12:00:00 UTC)), // a Saturday
            Some(datetime!(2026-03-16 09:00:00 UTC))
        );
        let leap = Schedule::parse("0 0 29 2 *").expect("leap day");
        assert_eq!(
            leap.next_after(datetime!(2026-01-01 00:00:00 UTC)),
            Some(datetime!(2028-02-29 00:00:00 UTC))
        );
    }

    #[test]
    fn bad_cron_expressions_say_why() {
        let e = Schedule::parse("0 3 * *").unwrap_err().to_string();
        assert!(e.contains("4 fields"), "{e}");
        let e = Schedule::parse("0 0 3 * * *").unwrap_err().to_string();
        assert!(e.contains("6 fields"), "{e}");
        let e = Schedule::parse("61 * * * *").unwrap_err().to_string();
        assert!(e.contains("cron"), "{e}");
        assert!(Schedule::parse("* * * * FUNDAY").is_err());
    }
}
