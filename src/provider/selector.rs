//! JSONPath selectors (RFC 9535), with a fast path for plain member/index chains.
//!
//! Output mappings evaluate a handful of paths per record, and a day of one-second
//! heart-rate data has 86,400 records. Most field paths are plain chains such as
//! `$.value` or `$.sampleTime.civilTime['date']`; those are walked directly instead
//! of going through the general query engine. Every path is still parsed by
//! `serde_json_path` first, so both forms accept exactly RFC 9535.
//!
//! A plain path may also hold wildcards (`$.dataPoints[*].weight`); [`Selector::steps`]
//! hands the steps to code that walks other representations of an answer (the compact
//! document of `transform`).

use serde_json::{Map, Value};
use serde_json_path::JsonPath;

/// One step of a plain path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `.name`, `['name']`: the member of an object.
    Member(String),
    /// `[N]`: an array item, counted from the end when negative.
    Index(i64),
    /// `[*]`, `.*`: every item of an array or member value of an object, in order.
    Wildcard,
}

/// A parsed JSONPath.
#[derive(Debug, Clone)]
pub struct Selector {
    text: String,
    plain: Option<Vec<Step>>,
    query: JsonPath,
}

impl Selector {
    /// Parses a JSONPath; the error explains what is wrong.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let query = JsonPath::parse(text).map_err(|e| format!("bad JSONPath `{text}`: {e}"))?;
        Ok(Selector {
            text: text.to_owned(),
            plain: plain_steps(text),
            query,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The steps of a plain path (members, indexes and wildcards only), `None` for a
    /// path that needs the general query engine (filters, slices, descendants ...).
    pub fn steps(&self) -> Option<&[Step]> {
        self.plain.as_deref()
    }

    /// The first node the path selects.
    pub fn first<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        match &self.plain {
            Some(steps) if !steps.contains(&Step::Wildcard) => walk(value, steps),
            Some(steps) => {
                let mut found = None;
                walk_all(value, steps, &mut |v| {
                    found = Some(v);
                    false
                });
                found
            }
            None => self.query.query(value).first(),
        }
    }

    /// Where every node the path selects lies under `value`, in document order, as
    /// plain steps (members and non-negative indexes): how a path that needs the
    /// general query engine is walked on other representations of the same answer.
    pub fn locate(&self, value: &Value) -> Vec<Vec<Step>> {
        self.query
            .query_located(value)
            .into_iter()
            .map(|node| {
                node.location()
                    .iter()
                    .map(|element| match element {
                        serde_json_path::PathElement::Name(name) => {
                            Step::Member((*name).to_owned())
                        }
                        serde_json_path::PathElement::Index(i) => {
                            Step::Index(i64::try_from(*i).unwrap_or(i64::MAX))
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// Every node the path selects, in document order.
    pub fn all<'a>(&self, value: &'a Value) -> Vec<&'a Value> {
        match &self.plain {
            Some(steps) if !steps.contains(&Step::Wildcard) => {
                walk(value, steps).into_iter().collect()
            }
            Some(steps) => {
                let mut found = Vec::new();
                walk_all(value, steps, &mut |v| {
                    found.push(v);
                    true
                });
                found
            }
            None => self.query.query(value).all(),
        }
    }
}

/// Calls `found` with every node `steps` select under `value`, in document order, until
/// it returns `false`; returns `false` when it was stopped.
fn walk_all<'a>(
    value: &'a Value,
    steps: &[Step],
    found: &mut dyn FnMut(&'a Value) -> bool,
) -> bool {
    let Some((step, rest)) = steps.split_first() else {
        return found(value);
    };
    match (step, value) {
        (Step::Wildcard, Value::Array(items)) => items.iter().all(|v| walk_all(v, rest, found)),
        (Step::Wildcard, Value::Object(map)) => map.values().all(|v| walk_all(v, rest, found)),
        (Step::Wildcard, _) => true,
        _ => match walk(value, std::slice::from_ref(step)) {
            Some(next) => walk_all(next, rest, found),
            None => true,
        },
    }
}

fn walk<'a>(mut value: &'a Value, steps: &[Step]) -> Option<&'a Value> {
    for step in steps {
        value = match (step, value) {
            (Step::Member(name), Value::Object(map)) => member(map, name)?,
            (Step::Wildcard, _) => return None,
            (Step::Index(i), Value::Array(items)) => {
                let idx = if *i < 0 {
                    items.len().checked_sub(i.unsigned_abs() as usize)?
                } else {
                    *i as usize
                };
                items.get(idx)?
            }
            _ => return None,
        };
    }
    Some(value)
}

/// `map.get(name)`, comparing keys directly when the object is small: records such as
/// `{"time": ..., "value": ...}` are looked up once per field and point, and a few
/// string comparisons cost less than hashing the name. Keys are unique, so both find
/// the same member.
fn member<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if map.len() <= 8 {
        map.iter()
            .find_map(|(key, value)| (key == name).then_some(value))
    } else {
        map.get(name)
    }
}

/// Recognises `$` followed by `.name`, `['name']`, `["name"]`, `[N]`, `[*]` and `.*`
/// only.
fn plain_steps(text: &str) -> Option<Vec<Step>> {
    let mut rest = text.strip_prefix('$')?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix(".*").or_else(|| rest.strip_prefix("[*]")) {
            steps.push(Step::Wildcard);
            rest = r;
        } else if let Some(r) = rest.strip_prefix('.') {
            let end = r
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(r.len());
            if end == 0 || r.starts_with(|c: char| c.is_ascii_digit()) {
                return None;
            }
            steps.push(Step::Member(r[..end].to_owned()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let close = r.find(']')?;
            let inner = &r[..close];
            if let Some(name) = inner
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
            {
                if name.contains(['\\', '\'', '"']) {
                    return None;
                }
                steps.push(Step::Member(name.to_owned()));
            } else {
                steps.push(Step::Index(inner.parse().ok()?));
            }
            rest = &r[close + 1..];
        } else {
            return None;
        }
    }
    Some(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_and_general_paths_agree() {
        let doc = json!({"a": {"b-c": [1, {"d": 2}]}, "xs": [{"t": 1}, {"t": 2}]});
        for path in [
            "$.a['b-c'][1].d",
            "$.a[\"b-c\"][-1]",
            "$.a['b-c'][0]",
            "$.nope",
        ] {
            let s = Selector::parse(path).unwrap();
            assert!(s.plain.is_some(), "{path} should take the fast path");
            assert_eq!(s.first(&doc), s.query.query(&doc).first(), "{path}");
        }
        for path in [
            "$.xs[*].t",
            "$.xs.*",
            "$.a.*",
            "$.a.*[*]",
            "$.a['b-c'][*].d",
            "$[*][*]",
            "$.a[*].nope",
            "$.xs[0].*",
        ] {
            let s = Selector::parse(path).unwrap();
            assert!(s.plain.is_some(), "{path} should take the fast path");
            assert_eq!(s.all(&doc), s.query.query(&doc).all(), "{path}");
            assert_eq!(s.first(&doc), s.query.query(&doc).first(), "{path}");
        }
        let s = Selector::parse("$.xs[?@.t > 1]").unwrap();
        assert!(s.plain.is_none());
        assert_eq!(s.all(&doc), vec![&json!({"t": 2})]);
    }

    #[test]
    fn invalid_paths_are_refused() {
        assert!(Selector::parse("$.activities-steps").is_err());
        assert!(Selector::parse("weight").is_err());
    }
}
