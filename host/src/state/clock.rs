//! Timestamps as stored: RFC 3339, UTC, millisecond precision, fixed width so that text order
//! is time order in `sqlite3` queries.

use time::OffsetDateTime;

pub fn now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
}

/// A time given in Unix seconds, formatted like every stored time (out of range: the epoch).
pub fn rfc3339_at(unix: i64) -> String {
    format_rfc3339(OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH))
}

/// A time formatted like every stored time.
pub fn rfc3339_at_time(t: OffsetDateTime) -> String {
    format_rfc3339(t)
}

pub(crate) fn format_rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_width_utc() {
        let t = time::macros::datetime!(2024-03-05 07:08:09.012345 +02:00);
        assert_eq!(format_rfc3339(t), "2024-03-05T05:08:09.012Z");
        let parsed = OffsetDateTime::parse(
            &now_rfc3339(),
            &time::format_description::well_known::Rfc3339,
        );
        assert!(parsed.is_ok(), "{parsed:?}");
    }
}
