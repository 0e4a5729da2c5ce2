//! UTC timestamps (RFC 3339) and calendar arithmetic, without a date library.

use std::time::{SystemTime, UNIX_EPOCH};

/// Howard Hinnant's days since 1970-01-01 → (year, month, day), proleptic Gregorian.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `2026-11-23T17:25:01.123Z`
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rest = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rest / 3600, rest / 60 % 60, rest % 60, since.subsec_millis())
}

pub fn now() -> String {
    rfc3339(SystemTime::now())
}

/// `20261123-172501`, for run ids that sort by time.
pub fn compact(time: SystemTime) -> String {
    let text = rfc3339(time);
    format!("{}{}{}-{}{}{}", &text[0..4], &text[5..7], &text[8..10], &text[11..13], &text[14..16], &text[17..19])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_795_454_701_123);
        assert_eq!(rfc3339(t), "2026-11-23T17:25:01.123Z");
        assert_eq!(compact(t), "20261123-172501");
    }
}
