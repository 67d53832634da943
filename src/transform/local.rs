//! Local time: every entry is dated on the user's own day.
//!
//! An instant (RFC 3339, an epoch) is shown at the offset it was recorded in: the
//! record's own offset when the provider file names one (`offset:` on the field), else
//! the timestamp's own offset when it carries one other than `Z`, else the user's time
//! zone. A naive local date-time (`2026-11-22T07:00:05`) is read in the record's offset,
//! else in the user's zone. The user's zone is the `timezone` setting, else the zone of
//! the machine (`TZ`, then the system's), else UTC.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;

/// Where a record's offset comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RecordZone {
    /// A fixed offset (`+01:00`, `-18000s`, `3600`).
    Fixed(FixedOffset),
    /// A named zone (`Europe/Paris`).
    Named(Tz),
}

impl RecordZone {
    /// Reads a record's offset or zone: `+HH:MM`, `-HHMM`, `Z`, a whole number of
    /// seconds (a JSON number or text such as Google's `"-18000s"`), an IANA name, or
    /// text that ends in one (Strava's `"(GMT-08:00) America/Los_Angeles"`).
    pub fn parse(value: &Value) -> Result<RecordZone, String> {
        match value {
            Value::Number(n) => {
                let seconds = n
                    .as_i64()
                    .or_else(|| n.as_f64().map(|f| f as i64))
                    .ok_or_else(|| format!("`{n}` is not an offset in seconds"))?;
                fixed(seconds).map(RecordZone::Fixed)
            }
            Value::String(s) => parse_text(s.trim()),
            other => Err(format!("`{other}` is not an offset or a time zone")),
        }
    }

    fn offset_at_utc(self, at: DateTime<Utc>) -> FixedOffset {
        match self {
            RecordZone::Fixed(o) => o,
            RecordZone::Named(tz) => tz.offset_from_utc_datetime(&at.naive_utc()).fix(),
        }
    }

    fn offset_at_local(self, local: &NaiveDateTime) -> Result<FixedOffset, String> {
        match self {
            RecordZone::Fixed(o) => Ok(o),
            RecordZone::Named(tz) => zone_offset_at_local(tz, local),
        }
    }
}

fn parse_text(s: &str) -> Result<RecordZone, String> {
    if s == "Z" || s == "z" {
        return Ok(RecordZone::Fixed(FixedOffset::east_opt(0).expect("zero")));
    }
    if let Some(seconds) = s.strip_suffix('s').and_then(|n| n.parse::<f64>().ok()) {
        return fixed(seconds as i64).map(RecordZone::Fixed);
    }
    // A sign and two or four digits is `±HH[MM]`, before it could be read as seconds.
    if let Some(offset) = parse_offset(s) {
        return Ok(RecordZone::Fixed(offset));
    }
    if let Ok(seconds) = s.parse::<i64>() {
        return fixed(seconds).map(RecordZone::Fixed);
    }
    if let Ok(tz) = s.parse::<Tz>() {
        return Ok(RecordZone::Named(tz));
    }
    // "(GMT-08:00) America/Los_Angeles": the zone name is the last word.
    if let Some(last) = s.rsplit(' ').next()
        && let Ok(tz) = last.parse::<Tz>()
    {
        return Ok(RecordZone::Named(tz));
    }
    Err(format!("`{s}` is not an offset or a time zone"))
}

fn fixed(seconds: i64) -> Result<FixedOffset, String> {
    i32::try_from(seconds)
        .ok()
        .and_then(FixedOffset::east_opt)
        .ok_or_else(|| format!("`{seconds}` seconds is not an offset"))
}

/// `+HH:MM`, `-HH:MM`, `+HHMM`, `+HH`.
fn parse_offset(s: &str) -> Option<FixedOffset> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = if digits.len() == 4 {
        digits[2..].parse().ok()?
    } else {
        0
    };
    if hours > 23 || minutes > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

/// The offset of `tz` at the local time `local`; in a gap (clocks moved forward) the
/// offset before the change, in an overlap the earlier of the two.
fn zone_offset_at_local(tz: Tz, local: &NaiveDateTime) -> Result<FixedOffset, String> {
    use chrono::LocalResult;
    match tz.offset_from_local_datetime(local) {
        LocalResult::Single(o) => Ok(o.fix()),
        LocalResult::Ambiguous(earlier, _) => Ok(earlier.fix()),
        LocalResult::None => {
            let before = *local - chrono::Duration::hours(3);
            Ok(tz
                .offset_from_local_datetime(&before)
                .earliest()
                .map_or_else(|| tz.offset_from_utc_datetime(local).fix(), |o| o.fix()))
        }
    }
}

/// A local date-time and the offset it was recorded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// The wall-clock date and time.
    pub at: NaiveDateTime,
    /// Its offset from UTC.
    pub offset: FixedOffset,
}

impl Local {
    /// The local date (`YYYY-MM-DD`).
    pub fn date(&self) -> NaiveDate {
        self.at.date()
    }

    /// The instant in UTC.
    pub fn utc(&self) -> DateTime<Utc> {
        (self.at - chrono::Duration::seconds(i64::from(self.offset.local_minus_utc()))).and_utc()
    }
}

/// An instant at the offset it was recorded in: `record` when given, else `own` (the
/// timestamp's offset, None for `Z` and epochs), else the user's zone.
pub fn at_instant(
    at: DateTime<Utc>,
    own: Option<FixedOffset>,
    record: Option<RecordZone>,
    user: Tz,
) -> Local {
    let offset = match (record, own) {
        (Some(r), _) => r.offset_at_utc(at),
        (None, Some(o)) => o,
        (None, None) => user.offset_from_utc_datetime(&at.naive_utc()).fix(),
    };
    Local {
        at: at.naive_utc() + chrono::Duration::seconds(i64::from(offset.local_minus_utc())),
        offset,
    }
}

/// A naive local date-time in the record's offset, else the user's zone.
pub fn at_local(at: NaiveDateTime, record: Option<RecordZone>, user: Tz) -> Result<Local, String> {
    let offset = match record {
        Some(r) => r.offset_at_local(&at)?,
        None => zone_offset_at_local(user, &at)?,
    };
    Ok(Local { at, offset })
}

/// Parses an RFC 3339 timestamp: the instant and its own offset (None for `Z`, which
/// says nothing about where it was recorded).
pub fn parse_rfc3339(s: &str) -> Result<(DateTime<Utc>, Option<FixedOffset>), String> {
    let parsed =
        DateTime::parse_from_rfc3339(s).map_err(|e| format!("`{s}` is not RFC 3339: {e}"))?;
    let utc_marker = s.ends_with('Z') || s.ends_with('z');
    let own = (!utc_marker).then(|| *parsed.offset());
    Ok((parsed.with_timezone(&Utc), own))
}

/// Parses a naive local date-time: `YYYY-MM-DDTHH:MM[:SS[.fff]]` (or a space for `T`).
pub fn parse_naive(s: &str) -> Result<NaiveDateTime, String> {
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(at) = NaiveDateTime::parse_from_str(s, format) {
            return Ok(at);
        }
    }
    Err(format!(
        "`{s}` is not a local date-time (YYYY-MM-DDTHH:MM:SS, without an offset)"
    ))
}

/// `+HH:MM` (`+00:00` for UTC).
pub fn format_offset(offset: FixedOffset) -> String {
    let seconds = offset.local_minus_utc();
    let sign = if seconds < 0 { '-' } else { '+' };
    let minutes = seconds.abs() / 60;
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

/// The user's zone from a `timezone` setting: an IANA name.
pub fn parse_zone(name: &str) -> Option<Tz> {
    name.trim().parse::<Tz>().ok()
}

/// The machine's zone: `TZ` when it names an IANA zone, else the system's, else UTC.
/// Looked up once per process.
pub fn machine_zone() -> Tz {
    static ZONE: std::sync::OnceLock<Tz> = std::sync::OnceLock::new();
    *ZONE.get_or_init(|| {
        if let Ok(tz) = std::env::var("TZ")
            && let Some(zone) = parse_zone(tz.trim_start_matches(':'))
        {
            return zone;
        }
        iana_time_zone::get_timezone()
            .ok()
            .and_then(|name| parse_zone(&name))
            .unwrap_or(Tz::UTC)
    })
}

/// The civil date at `now` in `zone`.
pub fn today_in(now: DateTime<Utc>, zone: Tz) -> NaiveDate {
    now.with_timezone(&zone).date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn la() -> Tz {
        "America/Los_Angeles".parse().unwrap()
    }

    #[test]
    fn an_evening_in_los_angeles_is_still_that_day() {
        let now = DateTime::parse_from_rfc3339("2026-11-23T01:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(today_in(now, la()).to_string(), "2026-11-22");
        assert_eq!(today_in(now, Tz::UTC).to_string(), "2026-11-23");
    }

    #[test]
    fn instants_keep_the_offset_they_were_recorded_in() {
        let (at, own) = parse_rfc3339("2026-11-20T19:45:00-08:00").unwrap();
        let local = at_instant(at, own, None, Tz::Europe__Amsterdam);
        assert_eq!(local.at.to_string(), "2026-11-20 19:45:00");
        assert_eq!(format_offset(local.offset), "-08:00");
        // `Z` says nothing about where: the user's zone decides.
        let (at, own) = parse_rfc3339("2026-11-21T03:45:00Z").unwrap();
        let local = at_instant(at, own, None, la());
        assert_eq!(local.at.to_string(), "2026-11-20 19:45:00");
        // A record's own offset wins over both.
        let record = RecordZone::parse(&json!("3600s")).unwrap();
        let local = at_instant(at, own, Some(record), la());
        assert_eq!(local.at.to_string(), "2026-11-21 04:45:00");
        assert_eq!(local.utc(), at);
    }

    #[test]
    fn record_offsets_in_every_provider_spelling() {
        for (given, expected) in [
            (json!("+01:00"), "+01:00"),
            (json!("-05:30"), "-05:30"),
            (json!("-0800"), "-08:00"),
            (json!("Z"), "+00:00"),
            (json!("-18000s"), "-05:00"),
            (json!(-28800), "-08:00"),
            (json!("7200"), "+02:00"),
        ] {
            let RecordZone::Fixed(o) = RecordZone::parse(&given).unwrap() else {
                panic!("{given} is not fixed");
            };
            assert_eq!(format_offset(o), expected, "{given}");
        }
        for named in [
            json!("Europe/Paris"),
            json!("(GMT-08:00) America/Los_Angeles"),
        ] {
            assert!(
                matches!(RecordZone::parse(&named), Ok(RecordZone::Named(_))),
                "{named}"
            );
        }
        for bad in [
            json!("soon"),
            json!("+25:00"),
            json!(true),
            json!("Mars/Olympus"),
        ] {
            assert!(RecordZone::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn naive_times_are_read_in_the_zone_with_its_daylight_saving() {
        let at = parse_naive("2026-07-01T07:00:05").unwrap();
        let summer = at_local(at, None, la()).unwrap();
        assert_eq!(format_offset(summer.offset), "-07:00");
        let at = parse_naive("2026-11-22T07:00:05").unwrap();
        let winter = at_local(at, None, la()).unwrap();
        assert_eq!(format_offset(winter.offset), "-08:00");
        assert_eq!(winter.utc().to_rfc3339(), "2026-11-22T15:00:05+00:00");
        // 02:30 does not exist on 2026-03-08 in Los Angeles: the offset before the change.
        let gap = at_local(parse_naive("2026-03-08T02:30").unwrap(), None, la()).unwrap();
        assert_eq!(format_offset(gap.offset), "-08:00");
        assert!(parse_naive("2026-11-22T07:00:05Z").is_err());
    }
}
