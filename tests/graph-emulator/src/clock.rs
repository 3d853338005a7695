//! The emulator's clock: wall time from a chosen start, plus whatever the control endpoint
//! advanced it by. Delta token age, access token lifetime and timestamps all use it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

#[derive(Debug)]
pub struct Clock {
    start: OffsetDateTime,
    started: Instant,
    advanced: Mutex<Duration>,
}

impl Clock {
    pub fn new(start: Option<OffsetDateTime>) -> Self {
        Clock {
            start: start.unwrap_or_else(OffsetDateTime::now_utc),
            started: Instant::now(),
            advanced: Mutex::new(Duration::ZERO),
        }
    }

    pub fn now(&self) -> OffsetDateTime {
        let advanced = *self.advanced.lock().unwrap_or_else(|e| e.into_inner());
        self.start + self.started.elapsed() + advanced
    }

    pub fn advance(&self, by: Duration) -> OffsetDateTime {
        {
            let mut advanced = self.advanced.lock().unwrap_or_else(|e| e.into_inner());
            *advanced += by;
        }
        self.now()
    }
}

/// Milliseconds since the Unix epoch (what state tokens carry).
pub fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// `2021-03-12T10:36:14Z`, as Graph writes DateTimeOffset values.
pub fn format_graph(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.format(&fmt).unwrap_or_default()
}

/// `2020-08-18T12:51:51` (innerError.date).
pub fn format_inner_date(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    t.format(&fmt).unwrap_or_default()
}

/// `2016-01-09 02:02:12Z` (AADSTS timestamps).
pub fn format_aad(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let fmt = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    t.format(&fmt).unwrap_or_default()
}

pub fn parse_rfc3339(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(s, &Rfc3339)
}
