//! The pure part: provider answers in, sensor tree out. No IO, no clock.
//!
//! Each output of a method selects records with a JSONPath, optionally explodes them
//! into child rows, filters the rows, and builds one entry per row from its fields.
//! Entries of all pages and windows of a method are concatenated, then sorted when
//! the output asks for it.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Number, Value};

use crate::provider::raw::{FieldType, SourceFormat};
use crate::provider::{Field, FieldSource, Method, Output};
use crate::units::{self, UnitSystem};

/// Which layout a method's result takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// The documented sensor schema (`body-weight` entries ...).
    #[default]
    Mapped,
    /// The provider's answer as the old plugin stored it.
    Raw,
    /// Both, raw keys after mapped ones.
    Both,
}

impl Layout {
    /// Parses `mapped`, `raw` or `both`.
    pub fn parse(s: &str) -> Option<Layout> {
        match s {
            "mapped" => Some(Layout::Mapped),
            "raw" => Some(Layout::Raw),
            "both" => Some(Layout::Both),
            _ => None,
        }
    }
}

/// A mapping failure: which output and field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("output `{output}`, field `{field}`: {message}")]
pub struct TransformError {
    /// Output name.
    pub output: String,
    /// Field name.
    pub field: String,
    /// What went wrong.
    pub message: String,
}

/// The result of one method: mapped outputs (checked against the sensor schema) and
/// raw keys (the provider's answer unchanged, not described by the schema).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MethodResult {
    /// Outputs in the documented schema.
    pub mapped: Map<String, Value>,
    /// Raw keys, for the old layout.
    pub raw: Map<String, Value>,
}

/// Maps every answer (pages, windows) of one method into its outputs.
pub fn map_method(
    method: &Method,
    answers: &[Value],
    layout: Layout,
    system: UnitSystem,
) -> Result<MethodResult, TransformError> {
    let mut tree = Map::new();
    let mut raw = Map::new();
    if layout != Layout::Raw {
        for output in &method.outputs {
            let value = map_output(output, answers, system)?;
            if let Some(value) = value {
                tree.insert(output.name.clone(), value);
            }
        }
    }
    if layout != Layout::Mapped {
        for key in &method.raw {
            let mut merged: Option<Value> = None;
            for answer in answers {
                let Some(part) = answer.get(key) else {
                    continue;
                };
                merged = Some(match (merged, part) {
                    (Some(Value::Array(mut acc)), Value::Array(more)) => {
                        acc.extend(more.iter().cloned());
                        Value::Array(acc)
                    }
                    (_, other) => other.clone(),
                });
            }
            if let Some(v) = merged {
                raw.insert(key.clone(), v);
            }
        }
    }
    Ok(MethodResult { mapped: tree, raw })
}

fn map_output(
    output: &Output,
    answers: &[Value],
    system: UnitSystem,
) -> Result<Option<Value>, TransformError> {
    let mut entries: Vec<Value> = Vec::new();
    let mut parents = ParentValues::default();
    let template = EntryTemplate::new(output);
    for answer in answers {
        for record in output.each.all(answer) {
            parents.reset(output.fields.len());
            match &output.explode {
                Some(explode) => {
                    let rows = explode.all(record);
                    entries.reserve(rows.len());
                    for row in rows {
                        if output.filters.iter().all(|c| c.holds(row)) {
                            if let Some(e) =
                                entry(output, &template, row, Some(record), &mut parents, system)?
                            {
                                entries.push(e);
                            }
                        }
                    }
                }
                None => {
                    if output.filters.iter().all(|c| c.holds(record)) {
                        if let Some(e) =
                            entry(output, &template, record, None, &mut parents, system)?
                        {
                            entries.push(e);
                        }
                    }
                }
            }
        }
    }
    if let Some(index) = output.sort_by {
        let key = &output.fields[index].name;
        entries.sort_by(|a, b| compare(a.get(key), b.get(key)));
    }
    if output.single {
        return Ok(entries.into_iter().next());
    }
    Ok(Some(Value::Array(entries)))
}

/// The converted values of a record's `parent` fields, by field index, each computed
/// when the first row needs it: they are the same for every row exploded from the
/// record (a day of one-second points shares one `dateTime`). Fields with an
/// `exponent` read it from the row, so they are never kept here.
#[derive(Default)]
struct ParentValues(Vec<Option<Result<Option<Value>, String>>>);

impl ParentValues {
    fn reset(&mut self, fields: usize) {
        self.0.clear();
        self.0.resize(fields, None);
    }
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

/// An entry with every field's key in order and `null` values: cloning it copies the
/// hashed keys, which is cheaper than inserting each key of each entry again. A
/// mapped value is never `null` (a `null` source means the field is absent).
struct EntryTemplate(Map<String, Value>);

impl EntryTemplate {
    fn new(output: &Output) -> Self {
        EntryTemplate(
            output
                .fields
                .iter()
                .map(|f| (f.name.clone(), Value::Null))
                .collect(),
        )
    }
}

fn entry(
    output: &Output,
    template: &EntryTemplate,
    row: &Value,
    parent: Option<&Value>,
    parents: &mut ParentValues,
    system: UnitSystem,
) -> Result<Option<Value>, TransformError> {
    let mut map = template.0.clone();
    let mut absent = false;
    for ((index, field), slot) in output.fields.iter().enumerate().zip(map.values_mut()) {
        let value = match &field.source {
            FieldSource::Row(path) => field_value(field, path.first(row), row, system),
            FieldSource::Parent(path) if field.exponent.is_none() => parents.0[index]
                .get_or_insert_with(|| {
                    field_value(field, parent.and_then(|p| path.first(p)), row, system)
                })
                .clone(),
            FieldSource::Parent(path) => {
                field_value(field, parent.and_then(|p| path.first(p)), row, system)
            }
            FieldSource::Const(v) => field_value(field, Some(v), row, system),
        };
        let value = value.map_err(|message| TransformError {
            output: output.name.clone(),
            field: field.name.clone(),
            message,
        })?;
        match value {
            Some(v) => *slot = v,
            None if field.required => return Ok(None),
            None => absent = true,
        }
    }
    if absent {
        map.retain(|_, v| !v.is_null());
    }
    Ok(Some(Value::Object(map)))
}

/// A field's value from what its path found: absent for nothing or `null`.
fn field_value(
    field: &Field,
    raw: Option<&Value>,
    row: &Value,
    system: UnitSystem,
) -> Result<Option<Value>, String> {
    match raw {
        None | Some(Value::Null) => Ok(None),
        Some(v) => convert(field, v, row, system).map(Some),
    }
}

fn number_of(v: &Value) -> Option<Number> {
    match v {
        Value::Number(n) => Some(n.clone()),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(i) = s.parse::<i64>() {
                Some(i.into())
            } else {
                s.parse::<f64>().ok().and_then(Number::from_f64)
            }
        }
        _ => None,
    }
}

/// Removes binary noise from arithmetic (`81.35000000000001` -> `81.35`).
fn clean(x: f64) -> f64 {
    format!("{x:.12e}").parse().unwrap_or(x)
}

fn convert(field: &Field, v: &Value, row: &Value, system: UnitSystem) -> Result<Value, String> {
    if let Some(from) = field.from {
        return convert_time(from, field.kind, v);
    }
    match field.kind {
        FieldType::Auto if !has_arithmetic(field) => Ok(v.clone()),
        FieldType::Auto | FieldType::Number | FieldType::Integer => {
            let n = number_of(v).ok_or_else(|| format!("`{}` is not a number", short(v)))?;
            let n = arithmetic(field, n, row, system)?;
            if field.kind == FieldType::Integer {
                let i = n.as_i64().or_else(|| n.as_f64().map(|f| f.round() as i64));
                return i
                    .map(|i| Value::Number(i.into()))
                    .ok_or_else(|| "number out of range".to_owned());
            }
            Ok(Value::Number(n))
        }
        FieldType::String => Ok(match v {
            Value::String(s) => Value::String(s.clone()),
            other => Value::String(other.to_string()),
        }),
        FieldType::Date => match v.as_str() {
            Some(s) if s.len() >= 10 && crate::template::parse_date(s).is_some() => {
                Ok(Value::String(s[..10].to_owned()))
            }
            _ => Err(format!("`{}` is not a date", short(v))),
        },
        FieldType::Time | FieldType::Datetime => match v {
            Value::String(s) => Ok(Value::String(s.clone())),
            _ => Err(format!("`{}` is not text", short(v))),
        },
    }
}

fn has_arithmetic(f: &Field) -> bool {
    f.scale.is_some() || f.exponent.is_some() || f.unit.is_some() || f.round.is_some()
}

fn arithmetic(field: &Field, n: Number, row: &Value, system: UnitSystem) -> Result<Number, String> {
    if !has_arithmetic(field) {
        return Ok(n);
    }
    let mut x = n.as_f64().ok_or("number out of range")?;
    if let Some(path) = &field.exponent {
        let e = path
            .first(row)
            .and_then(number_of)
            .and_then(|e| e.as_i64())
            .ok_or_else(|| format!("no whole exponent at `{}`", path.as_str()))?;
        let e = i32::try_from(e).map_err(|_| "exponent out of range")?;
        x = if e < 0 {
            x / 10f64.powi(-e)
        } else {
            x * 10f64.powi(e)
        };
    }
    if let Some(s) = field.scale {
        x *= s;
    }
    if let Some(u) = &field.unit {
        x = units::convert(x, u.quantity, u.from, system).ok_or("unit mismatch")?;
    }
    if let Some(d) = field.round {
        let f = 10f64.powi(d as i32);
        x = (x * f).round() / f;
    }
    Number::from_f64(clean(x)).ok_or_else(|| "not a finite number".to_owned())
}

fn convert_time(from: SourceFormat, kind: FieldType, v: &Value) -> Result<Value, String> {
    let text = |s: String| Ok(Value::String(s));
    match from {
        SourceFormat::CivilDate => {
            let part = |k: &str| v.get(k).and_then(number_of).and_then(|n| n.as_i64());
            let (y, m, d) = (part("year"), part("month"), part("day"));
            match (y, m, d) {
                (Some(y), Some(m), Some(d)) => {
                    let date = NaiveDate::from_ymd_opt(y as i32, m as u32, d as u32)
                        .ok_or_else(|| format!("`{}` is not a valid date", short(v)))?;
                    text(date.format("%Y-%m-%d").to_string())
                }
                _ => Err(format!("`{}` is not a {{year, month, day}} date", short(v))),
            }
        }
        SourceFormat::CivilTime => {
            if !v.is_object() {
                return Err(format!(
                    "`{}` is not a {{hours, minutes, seconds}} time",
                    short(v)
                ));
            }
            let part = |k: &str| {
                v.get(k)
                    .and_then(number_of)
                    .and_then(|n| n.as_i64())
                    .unwrap_or(0)
            };
            text(format!(
                "{:02}:{:02}:{:02}",
                part("hours"),
                part("minutes"),
                part("seconds")
            ))
        }
        SourceFormat::EpochS | SourceFormat::EpochMs => {
            let n = number_of(v)
                .and_then(|n| n.as_f64())
                .ok_or_else(|| format!("`{}` is not an epoch number", short(v)))?;
            let ms = if from == SourceFormat::EpochS {
                n * 1000.0
            } else {
                n
            };
            let at = DateTime::<Utc>::from_timestamp_millis(ms as i64)
                .ok_or_else(|| format!("`{}` is out of range", short(v)))?;
            format_instant(at, kind)
        }
        SourceFormat::Rfc3339 => {
            let s = v
                .as_str()
                .ok_or_else(|| format!("`{}` is not text", short(v)))?;
            let at = DateTime::parse_from_rfc3339(s)
                .map_err(|e| format!("`{s}` is not RFC 3339: {e}"))?
                .with_timezone(&Utc);
            format_instant(at, kind)
        }
    }
}

fn format_instant(at: DateTime<Utc>, kind: FieldType) -> Result<Value, String> {
    let s = match kind {
        FieldType::Date => at.format("%Y-%m-%d").to_string(),
        FieldType::Time => at.format("%H:%M:%S").to_string(),
        _ => at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    };
    Ok(Value::String(s))
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!("{}…", &s[..s.floor_char_boundary(60)])
    } else {
        s
    }
}
