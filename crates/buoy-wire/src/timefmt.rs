//! Timestamps in Go's `time.RFC3339Nano` form (trailing zeros of the fraction trimmed), which is
//! how Sonobuoy's JSON carries them.

use time::{format_description::well_known::Rfc3339, OffsetDateTime, UtcOffset};

/// Go's zero time, which Sonobuoy's `tar-info.created` holds before a tarball exists.
pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

pub fn rfc3339_nano(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let nanos = t.nanosecond();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

pub fn now_rfc3339_nano() -> String {
    rfc3339_nano(OffsetDateTime::now_utc())
}

/// Parses an RFC 3339 timestamp (used when reading back stored status).
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_like_go() {
        assert_eq!(
            rfc3339_nano(datetime!(2020-06-10 15:04:05.1234 UTC)),
            "2020-06-10T15:04:05.1234Z"
        );
        assert_eq!(
            rfc3339_nano(datetime!(2020-06-10 15:04:05 UTC)),
            "2020-06-10T15:04:05Z"
        );
        assert!(parse_rfc3339(&now_rfc3339_nano()).is_some());
    }
}
