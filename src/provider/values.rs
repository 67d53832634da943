//! Checks of parameter values by their declaration, shared by loading (defaults are
//! checked when a provider file loads) and the engine (arguments are checked when a
//! fetch is planned). Part of the format: it imports nothing of the runtime.

use chrono::NaiveDate;

use crate::provider::raw::{ParamConfig, ParamType};

/// Checks one value against its declaration; the error says what is expected.
pub fn check_value(name: &str, p: &ParamConfig, value: &str) -> Result<(), String> {
    let ok = match p.kind {
        ParamType::String => true,
        ParamType::PathSegment => {
            !value.contains('/') && value != "." && value != ".." && !value.is_empty()
        }
        ParamType::Path => value
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != ".."),
        ParamType::Date => {
            value == "today"
                || (value.len() == 10 && NaiveDate::parse_from_str(value, "%Y-%m-%d").is_ok())
        }
        ParamType::Time => {
            chrono::NaiveTime::parse_from_str(value, "%H:%M").is_ok()
                || chrono::NaiveTime::parse_from_str(value, "%H:%M:%S").is_ok()
        }
        ParamType::Enum => p.values.iter().any(|v| v == value),
        ParamType::Integer => match value.parse::<i64>() {
            Ok(n) => p.min.is_none_or(|m| n >= m) && p.max.is_none_or(|m| n <= m),
            Err(_) => false,
        },
        ParamType::Boolean => matches!(value, "true" | "false"),
    };
    if ok {
        return Ok(());
    }
    let expected = match p.kind {
        ParamType::String => "text".to_owned(),
        ParamType::PathSegment => "one path segment (no `/`, not `.` or `..`)".to_owned(),
        ParamType::Path => "path segments separated by `/` (none empty, `.` or `..`)".to_owned(),
        ParamType::Date => "a date YYYY-MM-DD or `today`".to_owned(),
        ParamType::Time => "a time HH:MM or HH:MM:SS".to_owned(),
        ParamType::Enum => format!("one of {}", p.values.join(", ")),
        ParamType::Integer => match (p.min, p.max) {
            (Some(a), Some(b)) => format!("a whole number from {a} to {b}"),
            (Some(a), None) => format!("a whole number of at least {a}"),
            (None, Some(b)) => format!("a whole number of at most {b}"),
            (None, None) => "a whole number".to_owned(),
        },
        ParamType::Boolean => "`true` or `false`".to_owned(),
    };
    Err(format!("`{name}` must be {expected}, got `{value}`"))
}

/// A `period` argument: days, calendar months, or as far back as the range allows.
pub enum Period {
    /// A number of days.
    Days(u32),
    /// A number of calendar months.
    Months(u32),
    /// `max`.
    Max,
}

/// Parses `Nd`, `Nw`, `Nm`, `Ny` or `max`.
pub fn parse_period(p: &str) -> Option<Period> {
    if p == "max" {
        return Some(Period::Max);
    }
    let (num, unit) = p.split_at(p.len().checked_sub(1)?);
    let n: u32 = num.parse().ok().filter(|n| *n > 0)?;
    match unit {
        "d" => Some(Period::Days(n)),
        "w" => Some(Period::Days(n * 7)),
        "m" => Some(Period::Months(n)),
        "y" => Some(Period::Months(n * 12)),
        _ => None,
    }
}

/// A span of time written as a number and a unit, `90m`, `6h` or `2d` (`0h`: none);
/// `None` for other text and for spans too long to represent.
pub fn parse_span(text: &str) -> Option<chrono::Duration> {
    let unit = text.chars().last()?;
    let number: i64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    if number < 0 {
        return None;
    }
    match unit {
        'm' => chrono::Duration::try_minutes(number),
        'h' => chrono::Duration::try_hours(number),
        'd' => chrono::Duration::try_days(number),
        _ => None,
    }
}
