//! History: which days of a method the archive covers, what a sync or a backfill asks
//! for next, and where an archived entry sits (its identity, its time, its day).
//!
//! Pure: no I/O and no clock of its own. The archive stores what is planned here
//! (`store::archive`); `live::sync` runs the plans.
//!
//! A method's coverage is a list of spans of days, each with the instant its last fetch
//! ended. A day is *settled* once it was fetched at least the method's settling window
//! after the day ended (in the user's zone): late uploads can no longer change it, and
//! no sync asks for it again. Every other covered day is fetched again by each sync.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::{Map, Value};

use crate::provider::{History, Output};

/// An inclusive span of days that one fetch (or several, merged) covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First day.
    pub start: NaiveDate,
    /// Last day (inclusive).
    pub end: NaiveDate,
    /// When the fetch that covered these days ended.
    pub fetched_at: DateTime<Utc>,
}

/// The days of one method the archive holds, as disjoint spans in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    spans: Vec<Span>,
}

impl Coverage {
    /// Coverage from stored spans (in any order, possibly overlapping: later fetches
    /// win where they overlap).
    pub fn from_spans(mut spans: Vec<Span>) -> Coverage {
        spans.sort_by_key(|s| s.fetched_at);
        let mut coverage = Coverage::default();
        for span in spans {
            coverage.add(span);
        }
        coverage
    }

    /// The spans, oldest day first.
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// Whether no day is covered.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The first and last covered day.
    pub fn bounds(&self) -> Option<(NaiveDate, NaiveDate)> {
        Some((self.spans.first()?.start, self.spans.last()?.end))
    }

    /// Adds the days of a fetch that just ended: where they overlap older spans, the new
    /// fetch replaces them.
    pub fn add(&mut self, new: Span) {
        let mut spans = Vec::with_capacity(self.spans.len() + 2);
        for old in self.spans.drain(..) {
            if old.end < new.start || old.start > new.end {
                spans.push(old);
                continue;
            }
            if old.start < new.start {
                spans.push(Span {
                    end: new.start - Duration::days(1),
                    ..old
                });
            }
            if old.end > new.end {
                spans.push(Span {
                    start: new.end + Duration::days(1),
                    ..old
                });
            }
        }
        spans.push(new);
        spans.sort_by_key(|s| s.start);
        self.spans = spans;
    }

    /// The span covering `day`.
    fn span_of(&self, day: NaiveDate) -> Option<&Span> {
        let i = self.spans.partition_point(|s| s.end < day);
        self.spans.get(i).filter(|s| s.start <= day)
    }

    /// Whether `day` is covered.
    pub fn covers(&self, day: NaiveDate) -> bool {
        self.span_of(day).is_some()
    }

    /// Whether `day` is covered by a fetch made at least `settle` after it ended.
    pub fn is_settled(&self, day: NaiveDate, zone: chrono_tz::Tz, settle: Duration) -> bool {
        self.span_of(day)
            .is_some_and(|s| s.fetched_at >= day_end(day, zone) + settle)
    }

    /// Merges neighbouring spans whose days are all settled, so that years of history
    /// stay a handful of spans; unsettled spans keep their own fetch time.
    pub fn compact(&mut self, zone: chrono_tz::Tz, settle: Duration) {
        let settled = |s: &Span| s.fetched_at >= day_end(s.end, zone) + settle;
        let mut out: Vec<Span> = Vec::with_capacity(self.spans.len());
        for span in self.spans.drain(..) {
            match out.last_mut() {
                Some(last)
                    if last.end + Duration::days(1) == span.start
                        && settled(last)
                        && settled(&span) =>
                {
                    last.end = span.end;
                    last.fetched_at = last.fetched_at.min(span.fetched_at);
                }
                _ => out.push(span),
            }
        }
        self.spans = out;
    }

    /// Days of `[first, last]` that are not covered, in order.
    pub fn missing(&self, first: NaiveDate, last: NaiveDate) -> Vec<NaiveDate> {
        first
            .iter_days()
            .take_while(|d| *d <= last)
            .filter(|d| !self.covers(*d))
            .collect()
    }
}

/// The instant `day` ends in `zone` (the next day's first moment).
pub fn day_end(day: NaiveDate, zone: chrono_tz::Tz) -> DateTime<Utc> {
    crate::provider::template::midnight(day + Duration::days(1), zone)
}

/// The days a sync asks for: from the first covered day (or, with nothing covered, the
/// earliest day that is not settled yet) through `today`, every day not settled. Days
/// of failed windows were never covered, so they are asked for again; the sync never
/// moves past them.
pub fn sync_days(
    coverage: &Coverage,
    history: &History,
    today: NaiveDate,
    now: DateTime<Utc>,
    zone: chrono_tz::Tz,
) -> Vec<NaiveDate> {
    let first = match coverage.bounds() {
        Some((first, _)) => first,
        None => first_unsettled(history, today, now, zone),
    };
    first
        .iter_days()
        .take_while(|d| *d <= today)
        .filter(|d| !coverage.is_settled(*d, zone, history.settle))
        .collect()
}

/// The earliest day that a fetch now would not settle: the start of a first sync.
fn first_unsettled(
    history: &History,
    today: NaiveDate,
    now: DateTime<Utc>,
    zone: chrono_tz::Tz,
) -> NaiveDate {
    let mut day = today;
    while now < day_end(day - Duration::days(1), zone) + history.settle {
        day -= Duration::days(1);
    }
    day
}

/// The days a backfill from `since` asks for: every day through `today` not covered
/// yet, never before the provider's earliest day.
pub fn backfill_days(
    coverage: &Coverage,
    history: &History,
    since: NaiveDate,
    today: NaiveDate,
) -> Vec<NaiveDate> {
    let since = history.earliest.map_or(since, |e| since.max(e));
    coverage.missing(since, today)
}

/// Splits days into request windows: runs of consecutive days, each cut into windows of
/// at most `max_days`, oldest first. The fewest windows that cover exactly these days.
pub fn windows(days: &[NaiveDate], max_days: u32) -> Vec<(NaiveDate, NaiveDate)> {
    let max = i64::from(max_days.max(1));
    let mut out: Vec<(NaiveDate, NaiveDate)> = Vec::new();
    for &day in days {
        match out.last_mut() {
            Some((start, end))
                if *end + Duration::days(1) == day && (day - *start).num_days() < max =>
            {
                *end = day;
            }
            _ => out.push((day, day)),
        }
    }
    out
}

/// Where an archived entry sits: its identity among the output's entries, its time (a
/// sortable local date-time) and the user's day it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The identity: the JSON text of the identity fields' values, in order.
    pub identity: String,
    /// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS`, local to the user.
    pub at: String,
    /// The user's day.
    pub day: NaiveDate,
}

/// Places an entry of `output` (a row object as the sensor tree holds it); `None` when
/// it has no readable time (such outputs are kept whole, as account data).
pub fn place(output: &Output, row: &Map<String, Value>, zone: chrono_tz::Tz) -> Option<Placed> {
    let field = |i: usize| row.get(&output.fields[i].name);
    let (&first, rest) = output.time.split_first()?;
    let (at, day) = local_time(field(first)?.as_str()?, zone)?;
    let at = match rest.first().and_then(|&i| field(i)).and_then(Value::as_str) {
        Some(time) if at.len() == 10 => format!("{at}T{time}"),
        _ => at,
    };
    let values: Vec<&Value> = output
        .identity
        .iter()
        .map(|&i| field(i).unwrap_or(&Value::Null))
        .collect();
    let identity = serde_json::to_string(&values).ok()?;
    Some(Placed { identity, at, day })
}

/// The local date-time text and day of a date, an RFC 3339 local date-time (its own
/// clock reading) or a UTC instant (read in `zone`).
fn local_time(text: &str, zone: chrono_tz::Tz) -> Option<(String, NaiveDate)> {
    if text.len() == 10 {
        let day = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
        return Some((text.to_owned(), day));
    }
    let parsed = DateTime::parse_from_rfc3339(text).ok()?;
    let local = if text.ends_with('Z') {
        parsed.with_timezone(&zone).naive_local()
    } else {
        parsed.naive_local()
    };
    Some((local.format("%Y-%m-%dT%H:%M:%S").to_string(), local.date()))
}

/// How much of the archive the user's tree shows (`keep` of a plugin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Keep {
    /// The days each method asks for with the user's arguments (what the old plugin
    /// stored: today, by default).
    #[default]
    Asked,
    /// The last `N` days.
    Days(u32),
    /// The last `N` entries of each output.
    Entries(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn history(settle_hours: i64) -> History {
        History {
            max_days: 31,
            settle: Duration::hours(settle_hours),
            deletions: false,
            earliest: None,
        }
    }

    fn span(start: &str, end: &str, fetched: &str) -> Span {
        Span {
            start: d(start),
            end: d(end),
            fetched_at: at(fetched),
        }
    }

    #[test]
    fn a_newer_fetch_replaces_the_days_it_overlaps() {
        let mut c = Coverage::default();
        c.add(span("2026-01-01", "2026-01-31", "2026-02-10T00:00:00Z"));
        c.add(span("2026-01-10", "2026-01-12", "2026-02-11T00:00:00Z"));
        assert_eq!(
            c.spans(),
            &[
                span("2026-01-01", "2026-01-09", "2026-02-10T00:00:00Z"),
                span("2026-01-10", "2026-01-12", "2026-02-11T00:00:00Z"),
                span("2026-01-13", "2026-01-31", "2026-02-10T00:00:00Z"),
            ]
        );
        c.compact(chrono_tz::UTC, Duration::days(2));
        assert_eq!(
            c.spans(),
            &[span("2026-01-01", "2026-01-31", "2026-02-10T00:00:00Z")]
        );
        assert!(c.covers(d("2026-01-31")) && !c.covers(d("2026-02-01")));
    }

    #[test]
    fn a_sync_asks_again_for_unsettled_and_missing_days_only() {
        let zone = chrono_tz::UTC;
        let now = at("2026-11-30T10:00:00Z");
        let today = d("2026-11-30");
        // Fetched on the 28th at 10:00: the 25th is settled (two days after its end is
        // the 28th 00:00), the 26th is not. The 29th failed; the 30th was never asked for.
        let c = Coverage::from_spans(vec![span(
            "2026-11-20",
            "2026-11-28",
            "2026-11-28T10:00:00Z",
        )]);
        let h = History {
            settle: Duration::days(2),
            ..history(0)
        };
        assert_eq!(
            sync_days(&c, &h, today, now, zone),
            vec![
                d("2026-11-26"),
                d("2026-11-27"),
                d("2026-11-28"),
                d("2026-11-29"),
                d("2026-11-30")
            ]
        );
        // With nothing covered, a first sync starts at the first unsettled day: with
        // six hours' settling at 10:00, yesterday is settled, today is not.
        assert_eq!(
            sync_days(&Coverage::default(), &history(6), today, now, zone),
            vec![d("2026-11-30")]
        );
        assert_eq!(
            sync_days(&Coverage::default(), &history(12), today, now, zone),
            vec![d("2026-11-29"), d("2026-11-30")]
        );
    }

    #[test]
    fn windows_are_the_fewest_that_cover_exactly_the_days() {
        let days: Vec<NaiveDate> = d("2025-12-01")
            .iter_days()
            .take(365)
            .filter(|day| *day != d("2026-03-01"))
            .collect();
        let w = windows(&days, 31);
        // 90 days before the gap (3 windows), 274 after (9 windows).
        assert_eq!(w.len(), 3 + 9);
        assert_eq!(w[2], (d("2026-02-01"), d("2026-02-28")));
        assert_eq!(w[3].0, d("2026-03-02"));
        assert_eq!(windows(&days, 1).len(), 364);
    }

    #[test]
    fn backfill_skips_covered_days_and_days_before_the_earliest() {
        let c = Coverage::from_spans(vec![span(
            "2026-06-01",
            "2026-06-30",
            "2026-07-05T00:00:00Z",
        )]);
        let h = History {
            earliest: Some(d("2026-05-30")),
            ..history(0)
        };
        let days = backfill_days(&c, &h, d("2026-01-01"), d("2026-07-02"));
        assert_eq!(
            days,
            vec![
                d("2026-05-30"),
                d("2026-05-31"),
                d("2026-07-01"),
                d("2026-07-02")
            ]
        );
    }
}
