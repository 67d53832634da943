//! Keyword arguments: typed checks, defaults, rules between parameters, and date ranges.
//!
//! Arguments arrive as text (a query string, `--set k=v`, stored per-user defaults).
//! Explicit ones must be declared by at least one requested method; stored defaults
//! are offered to every method and silently skipped where not declared. An empty
//! value counts as absent, as it did for the old plugin.

use chrono::{Datelike, Duration, Months, NaiveDate};
use indexmap::IndexMap;
use serde_json::{Map, Value};

use crate::provider::raw::{ParamType, RangeConfig};
use crate::provider::template::parse_date;
use crate::provider::values::{Period, check_value, parse_period};
use crate::provider::{Method, Provider};

/// A parameter problem, with the method it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// An explicit argument no requested method declares.
    #[error("unknown argument `{name}`: none of the requested methods ({methods}) takes it")]
    Unknown {
        /// Argument.
        name: String,
        /// Requested methods.
        methods: String,
    },
    /// A method that does not exist.
    #[error("provider `{provider}` has no method `{method}` (known: {known})")]
    UnknownMethod {
        /// Provider.
        provider: String,
        /// Method asked for.
        method: String,
        /// Methods it has.
        known: String,
    },
    /// A value or rule violation.
    #[error("{method}: {message}")]
    Invalid {
        /// Method.
        method: String,
        /// What is wrong.
        message: String,
    },
}

/// The arguments each requested method gets, checked and defaulted.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Method name.
    pub method: String,
    /// Every declared parameter: a string, or null when absent.
    pub values: Map<String, Value>,
}

/// Resolves the arguments of `methods`: `explicit` from the caller, `stored` from the
/// user's saved defaults; `today` is the pinned clock's date.
pub fn resolve(
    provider: &Provider,
    methods: &[String],
    explicit: &IndexMap<String, String>,
    stored: &IndexMap<String, String>,
    today: NaiveDate,
) -> Result<Vec<Resolved>, ParamError> {
    let mut selected: Vec<&Method> = Vec::new();
    for name in methods {
        match provider.methods.get(name) {
            Some(m) => selected.push(m),
            None => {
                return Err(ParamError::UnknownMethod {
                    provider: provider.name.clone(),
                    method: name.clone(),
                    known: provider
                        .methods
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
    }
    for name in explicit.keys() {
        if !selected.iter().any(|m| m.params.contains_key(name)) {
            return Err(ParamError::Unknown {
                name: name.clone(),
                methods: methods.join(", "),
            });
        }
    }
    selected
        .into_iter()
        .map(|m| resolve_method(m, explicit, stored, today))
        .collect()
}

fn resolve_method(
    m: &Method,
    explicit: &IndexMap<String, String>,
    stored: &IndexMap<String, String>,
    today: NaiveDate,
) -> Result<Resolved, ParamError> {
    let invalid = |message: String| ParamError::Invalid {
        method: m.name.clone(),
        message,
    };
    // Given values (explicit beats stored); empty means absent.
    let mut given: IndexMap<&str, &str> = IndexMap::new();
    for name in m.params.keys() {
        let v = explicit.get(name).or_else(|| stored.get(name));
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            given.insert(name.as_str(), v.as_str());
        }
    }
    for (name, p) in &m.params {
        if !given.contains_key(name.as_str()) {
            continue;
        }
        for other in &p.conflicts {
            if given.contains_key(other.as_str()) {
                return Err(invalid(format!(
                    "`{name}` and `{other}` cannot be given together"
                )));
            }
        }
    }
    for (name, p) in &m.params {
        if let Some(v) = given.get(name.as_str()) {
            check_value(name, p, v).map_err(invalid)?;
        }
    }
    let mut values = Map::new();
    for (name, p) in &m.params {
        let given_value = given.get(name.as_str()).copied();
        let value = given_value.or(p.default.as_deref());
        let value = match (value, p.kind) {
            (Some("today"), ParamType::Date) if !p.literal_today => {
                Some(today.format("%Y-%m-%d").to_string())
            }
            (v, _) => v.map(str::to_owned),
        };
        values.insert(
            name.clone(),
            value.map(Value::String).unwrap_or(Value::Null),
        );
    }
    for (name, p) in &m.params {
        let present = !values[name].is_null();
        if p.required && !present {
            return Err(invalid(format!("`{name}` is required")));
        }
        if !p.required_unless.is_empty()
            && !present
            && !p.required_unless.iter().any(|o| !values[o].is_null())
        {
            return Err(invalid(format!(
                "`{name}` is required unless {} is given",
                p.required_unless
                    .iter()
                    .map(|o| format!("`{o}`"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            )));
        }
        if present && given.contains_key(name.as_str()) {
            for other in &p.requires {
                if values[other].is_null() {
                    return Err(invalid(format!("`{name}` needs `{other}` as well")));
                }
            }
        }
    }
    Ok(Resolved {
        method: m.name.clone(),
        values,
    })
}

/// An inclusive range of days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    /// First day.
    pub start: NaiveDate,
    /// Last day (inclusive).
    pub end: NaiveDate,
}

impl DateRange {
    /// The range as template context (`start`, `end`, `end_exclusive`).
    pub fn context(&self) -> Value {
        let fmt = |d: NaiveDate| Value::String(d.format("%Y-%m-%d").to_string());
        let mut m = Map::new();
        m.insert("start".into(), fmt(self.start));
        m.insert("end".into(), fmt(self.end));
        m.insert("end_exclusive".into(), fmt(self.end + Duration::days(1)));
        Value::Object(m)
    }

    /// Splits the range into windows of at most `days` days, oldest first.
    pub fn windows(&self, days: u32) -> Vec<DateRange> {
        let mut out = Vec::new();
        let mut start = self.start;
        let step = Duration::days(i64::from(days.max(1)));
        while start <= self.end {
            let end = (start + step - Duration::days(1)).min(self.end);
            out.push(DateRange { start, end });
            start = end + Duration::days(1);
        }
        out
    }
}

/// The date range a method's `range` gives for resolved arguments.
pub fn date_range(
    range: &RangeConfig,
    values: &Map<String, Value>,
    today: NaiveDate,
) -> Result<DateRange, String> {
    let date_of = |name: &str| -> Result<Option<NaiveDate>, String> {
        match values.get(name).and_then(Value::as_str) {
            None => Ok(None),
            Some("today") => Ok(Some(today)),
            Some(s) => parse_date(s)
                .map(Some)
                .ok_or_else(|| format!("`{name}` is not a date: `{s}`")),
        }
    };
    let anchor = date_of(&range.start)?.unwrap_or(today);
    if let Some(end_name) = &range.end {
        if let Some(end) = date_of(end_name)? {
            if end < anchor {
                return Err(format!(
                    "`{end_name}` ({end}) is before `{}` ({anchor})",
                    range.start
                ));
            }
            return Ok(DateRange { start: anchor, end });
        }
    }
    if let Some(period_name) = &range.period {
        if let Some(p) = values.get(period_name).and_then(Value::as_str) {
            let start = match parse_period(p) {
                Some(Period::Days(n)) => anchor - Duration::days(i64::from(n) - 1),
                Some(Period::Months(n)) => anchor
                    .checked_sub_months(Months::new(n))
                    .map(|d| d + Duration::days(1))
                    .ok_or("period out of range")?,
                Some(Period::Max) => anchor - Duration::days(i64::from(range.max_days) - 1),
                None => return Err(format!("`{period_name}`: unknown period `{p}`")),
            };
            return Ok(DateRange { start, end: anchor });
        }
    }
    Ok(DateRange {
        start: anchor,
        end: anchor,
    })
}

/// Days between two dates, for messages.
pub fn days_between(a: NaiveDate, b: NaiveDate) -> i64 {
    (b.num_days_from_ce() - a.num_days_from_ce()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn ranges_follow_fitbit_semantics() {
        let range = RangeConfig {
            start: "base_date".into(),
            period: Some("period".into()),
            end: Some("end_date".into()),
            max_days: 1095,
        };
        let mut v = Map::new();
        v.insert("base_date".into(), "2026-11-24".into());
        v.insert("period".into(), "7d".into());
        v.insert("end_date".into(), Value::Null);
        let r = date_range(&range, &v, d("2026-11-24")).unwrap();
        assert_eq!((r.start, r.end), (d("2026-11-18"), d("2026-11-24")));
        v.insert("period".into(), "1m".into());
        let r = date_range(&range, &v, d("2026-11-24")).unwrap();
        assert_eq!((r.start, r.end), (d("2026-10-25"), d("2026-11-24")));
        v.insert("period".into(), Value::Null);
        v.insert("end_date".into(), "2026-12-31".into());
        let r = date_range(&range, &v, d("2026-11-24")).unwrap();
        assert_eq!(r.windows(31).len(), 2);
        assert_eq!(r.windows(31)[1].start, d("2026-12-25"));
    }
}
