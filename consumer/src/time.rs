//! RFC 3339 times (UTC, nanoseconds) and relative times like `10m`, as the command line
//! and the GUI take and show them, without a time crate: days to civil dates by Howard
//! Hinnant's algorithms.

/// A time that is neither RFC 3339 nor relative.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is neither an RFC 3339 time (2026-12-01T06:19:16Z) nor a relative one (10m, 2h, 3d)"
)]
pub struct TimeError {
    /// The text given.
    pub text: String,
}

/// Days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-12-01T06:19:16.123456789Z` for ns since the epoch.
///
/// # Examples
/// ```
/// assert_eq!(firehose_consumer::time::rfc3339(0), "1970-01-01T00:00:00.000000000Z");
/// ```
pub fn rfc3339(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let nanos = ns % 1_000_000_000;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Parses an RFC 3339 time (`Z` or `±HH:MM`, any fraction) or a relative one before `now`
/// (`30s`, `10m`, `2h`, `3d`, `1w`) to ns since the epoch.
///
/// # Errors
/// [`TimeError`] if it is neither.
///
/// # Examples
/// ```
/// use firehose_consumer::time::parse_time;
/// let now = 3_600_000_000_000;
/// assert_eq!(parse_time("10m", now), Ok(now - 600_000_000_000));
/// assert_eq!(parse_time("1970-01-01T00:00:01Z", now), Ok(1_000_000_000));
/// assert!(parse_time("yesterday", now).is_err());
/// ```
pub fn parse_time(text: &str, now_ns: u64) -> Result<u64, TimeError> {
    let text = text.trim();
    if let Some(ns) = parse_relative(text) {
        return Ok(now_ns.saturating_sub(ns));
    }
    parse_rfc3339(text).ok_or_else(|| TimeError {
        text: text.to_string(),
    })
}

/// Now, in ns since the epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn parse_relative(text: &str) -> Option<u64> {
    let unit = text.chars().last()?;
    let n: u64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let secs = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(secs)?.checked_mul(1_000_000_000)
}

fn parse_rfc3339(t: &str) -> Option<u64> {
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<u32>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    if h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &t[start..i];
        if digits.is_empty() {
            return None;
        }
        let mut frac: String = digits.chars().take(9).collect();
        while frac.len() < 9 {
            frac.push('0');
        }
        nanos = frac.parse().ok()?;
    }
    let offset: i64 = match &t[i..] {
        "Z" | "z" => 0,
        o if o.len() == 6 && matches!(o.as_bytes()[0], b'+' | b'-') && o.as_bytes()[3] == b':' => {
            // By bytes: a multi-byte character here must not be sliced through.
            let oh: i64 = o.get(1..3)?.parse().ok()?;
            let om: i64 = o.get(4..6)?.parse().ok()?;
            if oh > 23 || om > 59 {
                return None;
            }
            let v = oh * 3600 + om * 60;
            if o.as_bytes()[0] == b'-' {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + s) - offset;
    u64::try_from(secs)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_rfc3339() {
        let ns = 1_796_106_356_123_456_789;
        let s = rfc3339(ns);
        assert_eq!(s, "2026-12-01T06:25:56.123456789Z");
        assert_eq!(parse_time(&s, 0), Ok(ns));
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            parse_time("2026-12-01T08:25:56+02:00", 0),
            Ok(ns - 123_456_789)
        );
        assert_eq!(
            parse_time("2000-02-29T00:00:00Z", 0),
            Ok(951_782_400_000_000_000)
        );
    }

    #[test]
    fn parses_relative_times() {
        let now = 10_000 * 1_000_000_000;
        assert_eq!(parse_time("10m", now), Ok(now - 600 * 1_000_000_000));
        assert_eq!(parse_time("2h", now), Ok(now - 7200 * 1_000_000_000));
        assert_eq!(parse_time("3d", now), Ok(0), "saturates at the epoch");
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("2026-13-01T00:00:00Z", now).is_err());
        // Typed into a box: never a panic, whatever the characters.
        for bad in [
            "2026-12-01T06:19:16é:000",
            "2026-12-01T06:19:16+é:00",
            "2026-12-01T06:19:16+0é:0",
            "2026-12-01T06:19:16+24:00",
            "2026-12-01T06:19:16.é",
            "é",
            "1é",
            "",
        ] {
            assert!(parse_time(bad, now).is_err(), "{bad:?}");
        }
    }
}
