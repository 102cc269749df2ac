//! Timestamps in Go's `time.RFC3339Nano` form (trailing zeros of the fraction trimmed), which is
//! how Sonobuoy's JSON carries them.

use time::{format_description::well_known::Rfc3339, OffsetDateTime, UtcOffset};

/// Go's zero time, which Sonobuoy's `tar-info.created` holds before a tarball exists.
pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

pub fn rfc3339_nano(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    // Digits written straight into the string: every progress update is stamped, and
    // `format!` with six padded fields cost about 2 µs a stamp on a 2-core machine.
    fn push(s: &mut String, n: u32, digits: u32) {
        for i in (0..digits).rev() {
            s.push(char::from(b'0' + (n / 10u32.pow(i) % 10) as u8));
        }
    }
    let mut s = String::with_capacity(30);
    match u32::try_from(t.year()) {
        Ok(year) if year <= 9999 => push(&mut s, year, 4),
        _ => s.push_str(&format!("{:04}", t.year())),
    }
    s.push('-');
    push(&mut s, u8::from(t.month()).into(), 2);
    s.push('-');
    push(&mut s, t.day().into(), 2);
    s.push('T');
    push(&mut s, t.hour().into(), 2);
    s.push(':');
    push(&mut s, t.minute().into(), 2);
    s.push(':');
    push(&mut s, t.second().into(), 2);
    let nanos = t.nanosecond();
    if nanos != 0 {
        s.push('.');
        push(&mut s, nanos, 9);
        // Go trims the fraction's trailing zeros; a digit other than zero stays.
        s.truncate(s.trim_end_matches('0').len());
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

/// A duration as Go's `time.Duration.String` writes it (`0s`, `850ns`, `1.5µs`, `12.3ms`,
/// `4.25s`, `2m3.5s`, `1h0m0s`), the form of `meta/query-time.json`.
pub fn go_duration(d: std::time::Duration) -> String {
    let n = d.as_nanos();
    if n == 0 {
        return "0s".into();
    }
    let frac = |whole: u128, rest: u128, digits: usize| -> String {
        let f = format!("{rest:0digits$}");
        let f = f.trim_end_matches('0');
        if f.is_empty() {
            whole.to_string()
        } else {
            format!("{whole}.{f}")
        }
    };
    if n < 1_000 {
        return format!("{n}ns");
    }
    if n < 1_000_000 {
        return format!("{}\u{b5}s", frac(n / 1_000, n % 1_000, 3));
    }
    if n < 1_000_000_000 {
        return format!("{}ms", frac(n / 1_000_000, n % 1_000_000, 6));
    }
    let secs = n / 1_000_000_000;
    let s = format!("{}s", frac(secs % 60, n % 1_000_000_000, 9));
    match (secs / 3600, secs / 60 % 60) {
        (0, 0) => s,
        (0, m) => format!("{m}m{s}"),
        (h, m) => format!("{h}h{m}m{s}"),
    }
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
        assert_eq!(
            rfc3339_nano(datetime!(0999-01-02 03:04:05.000000001 UTC)),
            "0999-01-02T03:04:05.000000001Z"
        );
        assert_eq!(
            rfc3339_nano(datetime!(2026-12-31 23:59:59.999999999 +01:00)),
            "2026-12-31T22:59:59.999999999Z"
        );
        assert!(parse_rfc3339(&now_rfc3339_nano()).is_some());
    }

    #[test]
    fn durations_read_as_go_prints_them() {
        use std::time::Duration;
        for (d, want) in [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(850), "850ns"),
            (Duration::from_nanos(1_500), "1.5\u{b5}s"),
            (Duration::from_micros(12_300), "12.3ms"),
            (Duration::from_millis(4_250), "4.25s"),
            (Duration::from_millis(123_500), "2m3.5s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(5), "5s"),
        ] {
            assert_eq!(go_duration(d), want);
        }
    }
}
