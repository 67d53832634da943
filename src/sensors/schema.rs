//! The sensor output schema (`schemas/sensors.schema.json`): which outputs a provider
//! may declare, and the check every mapped tree passes before it is printed or stored.
//!
//! One check, [`validate_sensors`], of the one tree every fetch produces: it first runs
//! a check compiled from the schema over the compact [`Sensors`] tree (a table of
//! 86,400 heart-rate entries is checked column by column, without building them as
//! `Value`s), and only when that check is not sure the tree is valid does it build the
//! tree's `Value` form for the full JSON Schema validator, whose problems (path and
//! rule) it returns.

use std::sync::OnceLock;

use serde_json::Value;

use crate::sensors::{Cell, Node, PARALLEL_ROWS, Segment, Sensors, Table};

/// The schema text, built into the binary so `check` works anywhere.
pub const SENSOR_SCHEMA_TEXT: &str = include_str!("../../schemas/sensors.schema.json");

/// The parsed sensor schema.
pub fn sensor_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        serde_json::from_str(SENSOR_SCHEMA_TEXT)
            .unwrap_or_else(|e| panic!("schemas/sensors.schema.json is not JSON: {e}"))
    })
}

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        jsonschema::validator_for(sensor_schema())
            .unwrap_or_else(|e| panic!("schemas/sensors.schema.json is not a valid schema: {e}"))
    })
}

fn properties() -> Option<&'static serde_json::Map<String, Value>> {
    sensor_schema().get("properties").and_then(Value::as_object)
}

fn pattern_properties() -> &'static [(regex_lite::Regex, &'static Value)] {
    static PATTERNS: OnceLock<Vec<(regex_lite::Regex, &'static Value)>> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        sensor_schema()
            .get("patternProperties")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| regex_lite::Regex::new(k).ok().map(|r| (r, v)))
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// The schema of output `name`: its property, else the first matching pattern.
fn output_schema(name: &str) -> Option<&'static Value> {
    if let Some(p) = properties().and_then(|p| p.get(name)) {
        return Some(p);
    }
    pattern_properties()
        .iter()
        .find(|(re, _)| re.is_match(name))
        .map(|(_, v)| *v)
}

/// Whether a provider may produce an output (or raw key) called `name`.
pub fn output_allowed(name: &str) -> bool {
    output_schema(name).is_some()
}

/// Every output name the schema allows, and the patterns of allowed names.
pub fn output_names() -> Vec<String> {
    let mut names: Vec<String> = properties()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    names.extend(
        pattern_properties()
            .iter()
            .map(|(re, _)| format!("/{}/", re.as_str())),
    );
    names
}

fn resolve(node: &'static Value) -> &'static Value {
    if let Some(name) = node
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
    {
        if let Some(def) = sensor_schema().get("$defs").and_then(|d| d.get(name)) {
            return def;
        }
    }
    node
}

/// What a provider declares a field gives, as far as the schema can judge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Whatever the answer holds (not judged).
    Any,
    /// A number.
    Number,
    /// A whole number.
    Integer,
    /// Text.
    Text,
    /// `YYYY-MM-DD`.
    Date,
    /// `HH:MM:SS`.
    Time,
    /// A local date-time with its offset.
    DateTime,
    /// An instant in UTC (`...Z`).
    Instant,
    /// An offset (`+01:00`).
    Offset,
}

/// A declared field of an output: its name, what it gives, and whether an entry
/// without it is dropped (`required`, or a constant, which is never missing).
#[derive(Debug, Clone, Copy)]
pub struct DeclaredField<'a> {
    /// The field's name.
    pub name: &'a str,
    /// What it gives.
    pub kind: FieldKind,
    /// Whether every entry has it.
    pub always: bool,
}

/// Checks an output's declared fields against the entry schema of that output:
/// fields the schema requires must be declared and marked `required` (else an entry
/// without one would be refused when stored, not dropped), undeclared fields must be
/// allowed, and each field's type must be one the schema accepts there.
pub fn check_output_fields(
    name: &str,
    fields: &[DeclaredField<'_>],
    single: bool,
) -> Option<String> {
    let prop = resolve(output_schema(name)?);
    let entry = match prop.get("type").and_then(Value::as_str) {
        Some("array") if single => {
            return Some(format!(
                "output `{name}` is a list in the schema; drop `single`"
            ));
        }
        Some("array") => resolve(prop.get("items")?),
        Some("object") if !single => {
            return Some(format!(
                "output `{name}` is one object in the schema; set `single: true`"
            ));
        }
        _ => prop,
    };
    let mut problems = Vec::new();
    if let Some(required) = entry.get("required").and_then(Value::as_array) {
        for r in required.iter().filter_map(Value::as_str) {
            match fields.iter().find(|f| f.name == r) {
                None => problems.push(format!("the schema requires field `{r}`")),
                Some(f) if !f.always => problems.push(format!(
                    "the schema requires field `{r}`: mark it `required: true`, so an entry without it is left out"
                )),
                Some(_) => {}
            }
        }
    }
    let allowed = entry.get("properties").and_then(Value::as_object);
    for f in fields {
        match allowed.and_then(|a| a.get(f.name)) {
            Some(schema) => {
                if let Some(want) = kind_mismatch(f.kind, resolve_ref(schema)) {
                    problems.push(format!(
                        "field `{}` gives {}, but the schema wants {want}",
                        f.name,
                        kind_name(f.kind)
                    ));
                }
            }
            None if entry.get("additionalProperties") == Some(&Value::Bool(false)) => {
                problems.push(format!("the schema does not allow field `{}`", f.name));
            }
            None => {}
        }
    }
    (!problems.is_empty()).then(|| format!("output `{name}`: {}", problems.join("; ")))
}

/// A `$ref` to one of the definitions, with the name it goes by.
fn resolve_ref(node: &'static Value) -> (&'static Value, Option<&'static str>) {
    let name = node
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"));
    (resolve(node), name)
}

fn kind_name(kind: FieldKind) -> &'static str {
    match kind {
        FieldKind::Any => "any value",
        FieldKind::Number => "a number",
        FieldKind::Integer => "a whole number",
        FieldKind::Text => "text",
        FieldKind::Date => "a date",
        FieldKind::Time => "a time of day",
        FieldKind::DateTime => "a local date-time",
        FieldKind::Instant => "an instant in UTC",
        FieldKind::Offset => "an offset",
    }
}

/// What the schema wants instead, when a field of `kind` cannot be valid there.
fn kind_mismatch(
    kind: FieldKind,
    (schema, def): (&'static Value, Option<&'static str>),
) -> Option<String> {
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return None,
    };
    let json_ok = match kind {
        FieldKind::Any => true,
        FieldKind::Number => types.contains(&"number"),
        FieldKind::Integer => types.contains(&"integer") || types.contains(&"number"),
        _ => types.contains(&"string"),
    };
    // Text of a known shape must match the shape the schema names.
    let shape_ok = match (kind, def) {
        (FieldKind::Date, Some(d)) => d == "date",
        (FieldKind::Time, Some(d)) => d == "time",
        (FieldKind::DateTime, Some(d)) => d == "localDateTime",
        (FieldKind::Offset, Some(d)) => d == "offset",
        (FieldKind::Instant, Some(_)) => false,
        _ => true,
    };
    if json_ok && shape_ok {
        return None;
    }
    Some(match def {
        Some("date") => "a date (`type: date`)".to_owned(),
        Some("time") => "a time of day (`type: time`)".to_owned(),
        Some("localDateTime") => "a local date-time (`type: datetime`)".to_owned(),
        Some("offset") => "an offset (`type: offset`)".to_owned(),
        _ => format!(
            "{} (`type: {}`)",
            types.join(" or "),
            suggested_type(&types)
        ),
    })
}

fn suggested_type(types: &[&str]) -> &'static str {
    if types.contains(&"number") {
        "number"
    } else if types.contains(&"integer") {
        "integer"
    } else if types.contains(&"boolean") {
        "boolean (leave out `type`)"
    } else {
        "string"
    }
}

/// The full validator on a tree's `Value` form; each problem names the path and the
/// rule it breaks.
fn full_check(tree: &Value) -> Result<(), Vec<String>> {
    let problems: Vec<String> = validator()
        .iter_errors(tree)
        .map(|e| {
            let path = e.instance_path().as_str();
            let path = if path.is_empty() { "/" } else { path };
            let rule = e
                .schema_path()
                .as_str()
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_owned();
            format!("{path}: {e} (rule `{rule}`)")
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Validates a sensor tree as the full JSON Schema validator validates its `Value`
/// form, with the same problems. Most trees pass the compiled check of [`Rules`] without ever being
/// turned into `Value`s (or compiling the full validator); a tree that does not pass
/// it, or uses a rule it does not know, is checked by the full validator.
pub fn validate_sensors(tree: &Sensors) -> Result<(), Vec<String>> {
    if rules().is_some_and(|r| r.tree_ok(tree)) {
        return Ok(());
    }
    full_check(&tree.to_value())
}

// ---------------------------------------------------------------------------------------
// The compiled check
// ---------------------------------------------------------------------------------------

fn rules() -> Option<&'static Rules> {
    static RULES: OnceLock<Option<Rules>> = OnceLock::new();
    RULES
        .get_or_init(|| Rules::compile(sensor_schema()))
        .as_ref()
}

const T_NULL: u8 = 1;
const T_BOOL: u8 = 2;
const T_OBJECT: u8 = 4;
const T_ARRAY: u8 = 8;
const T_NUMBER: u8 = 16;
const T_INTEGER: u8 = 32;
const T_STRING: u8 = 64;

/// A sure-valid check compiled from the sensor schema, for the keywords it uses:
/// `type`, `pattern`, `$ref` (to `#/$defs/NAME`), `required`, `properties`,
/// `patternProperties`, `additionalProperties` (true or false) and `items`, plus
/// annotations. It answers "valid" only where the full validator would; a schema node
/// with another keyword (or a pattern outside the subset [`Pattern`] matches exactly),
/// and any instance it is unsure about (a float against `integer`), count as "not sure"
/// and send the tree to the full validator, which then names the path and rule.
struct Rules {
    rules: Vec<Rule>,
    /// Every pattern of the schema once, compiled when a check first needs it: a tree
    /// meets a few of them, and building an automaton for every one at each start
    /// would cost more than checking a day of points.
    patterns: Vec<LazyPattern>,
}

struct LazyPattern {
    source: String,
    compiled: OnceLock<Option<Pattern>>,
}

#[derive(Default)]
struct Rule {
    supported: bool,
    types: Option<u8>,
    /// The index of its pattern in [`Rules::patterns`].
    pattern: Option<usize>,
    refs: Vec<usize>,
    required: Vec<String>,
    properties: Vec<(String, usize)>,
    /// Patterns (indexes in [`Rules::patterns`]) and the rules of the members they match.
    pattern_properties: Vec<(usize, usize)>,
    no_additional: bool,
    items: Option<usize>,
}

/// Rules deeper than this (through `$ref`s) are not trusted.
const MAX_RULE_DEPTH: u32 = 64;

impl Rules {
    fn compile(root: &Value) -> Option<Rules> {
        let mut rules = Rules {
            rules: Vec::new(),
            patterns: Vec::new(),
        };
        let mut defs = std::collections::HashMap::new();
        let top = rules.add(root, root, &mut defs, true);
        (top == 0).then_some(rules)
    }

    /// The index of pattern `source` in [`Rules::patterns`], added when new.
    fn intern(&mut self, source: &str) -> usize {
        match self.patterns.iter().position(|p| p.source == source) {
            Some(i) => i,
            None => {
                self.patterns.push(LazyPattern {
                    source: source.to_owned(),
                    compiled: OnceLock::new(),
                });
                self.patterns.len() - 1
            }
        }
    }

    /// Pattern `p`, compiled on first use; `None` when it is outside the subset
    /// [`Pattern`] matches exactly (whatever it is checked against is then "not sure").
    fn pattern(&self, p: usize) -> Option<&Pattern> {
        let lazy = &self.patterns[p];
        lazy.compiled
            .get_or_init(|| Pattern::compile(&lazy.source))
            .as_ref()
    }

    /// Whether `text` matches pattern `p` (an absent pattern matches all); `false` for
    /// a pattern outside the subset.
    fn matches(&self, p: Option<usize>, text: &str) -> bool {
        p.is_none_or(|p| {
            self.pattern(p)
                .is_some_and(|pattern| pattern.is_match(text))
        })
    }

    fn add(
        &mut self,
        node: &Value,
        root: &Value,
        defs: &mut std::collections::HashMap<String, usize>,
        is_root: bool,
    ) -> usize {
        let index = self.rules.len();
        self.rules.push(Rule::default());
        let rule = self
            .compile_rule(node, root, defs, is_root)
            .unwrap_or_default();
        self.rules[index] = rule;
        index
    }

    fn compile_rule(
        &mut self,
        node: &Value,
        root: &Value,
        defs: &mut std::collections::HashMap<String, usize>,
        is_root: bool,
    ) -> Option<Rule> {
        let map = match node {
            Value::Bool(true) => {
                return Some(Rule {
                    supported: true,
                    ..Rule::default()
                });
            }
            Value::Object(map) => map,
            _ => return None,
        };
        let mut rule = Rule {
            supported: true,
            ..Rule::default()
        };
        for (key, value) in map {
            match key.as_str() {
                "title" | "description" | "$comment" | "examples" | "default" | "deprecated"
                | "readOnly" | "writeOnly" | "x-unit" | "x-time" => {}
                "$schema" | "$id" | "$defs" if is_root => {}
                "type" => {
                    let names: Vec<&str> = match value {
                        Value::String(s) => vec![s.as_str()],
                        Value::Array(items) => {
                            items.iter().map(Value::as_str).collect::<Option<_>>()?
                        }
                        _ => return None,
                    };
                    let mut bits = 0;
                    for name in names {
                        bits |= match name {
                            "null" => T_NULL,
                            "boolean" => T_BOOL,
                            "object" => T_OBJECT,
                            "array" => T_ARRAY,
                            "number" => T_NUMBER,
                            "integer" => T_INTEGER,
                            "string" => T_STRING,
                            _ => return None,
                        };
                    }
                    rule.types = Some(bits);
                }
                "pattern" => rule.pattern = Some(self.intern(value.as_str()?)),
                "$ref" => {
                    let name = value.as_str()?.strip_prefix("#/$defs/")?;
                    if name.contains(['/', '~', '%']) {
                        return None;
                    }
                    let target = match defs.get(name) {
                        Some(&t) => t,
                        None => {
                            let def = root.get("$defs")?.get(name)?;
                            let t = self.rules.len();
                            defs.insert(name.to_owned(), t);
                            self.add(def, root, defs, false)
                        }
                    };
                    rule.refs.push(target);
                }
                "required" => {
                    rule.required = value
                        .as_array()?
                        .iter()
                        .map(|v| v.as_str().map(str::to_owned))
                        .collect::<Option<_>>()?;
                }
                "properties" => {
                    for (name, schema) in value.as_object()? {
                        let r = self.add(schema, root, defs, false);
                        rule.properties.push((name.clone(), r));
                    }
                }
                "patternProperties" => {
                    for (pattern, schema) in value.as_object()? {
                        let p = self.intern(pattern);
                        let r = self.add(schema, root, defs, false);
                        rule.pattern_properties.push((p, r));
                    }
                }
                "additionalProperties" => rule.no_additional = !value.as_bool()?,
                "items" => rule.items = Some(self.add(value, root, defs, false)),
                _ => return None,
            }
        }
        Some(rule)
    }

    fn type_ok(types: Option<u8>, kind: u8) -> bool {
        types.is_none_or(|t| t & kind != 0)
    }

    fn number_ok(types: Option<u8>, n: &str) -> bool {
        match types {
            None => true,
            // An integer literal, of any size (numbers keep their text).
            Some(t) => {
                t & T_NUMBER != 0
                    || (t & T_INTEGER != 0 && crate::sensors::integer_magnitude(n).is_some())
            }
        }
    }

    /// The rules (by index) that apply to member `key` of an object checked against
    /// `rule`, or `None` when `rule` does not allow the member.
    fn member_rules(&self, rule: &Rule, key: &str, out: &mut Vec<usize>) -> bool {
        let mut matched = false;
        if let Some((_, r)) = rule.properties.iter().find(|(name, _)| name == key) {
            out.push(*r);
            matched = true;
        }
        for &(p, r) in &rule.pattern_properties {
            // A pattern outside the subset: whether the member is allowed is not sure.
            let Some(pattern) = self.pattern(p) else {
                return false;
            };
            if pattern.is_match(key) {
                out.push(r);
                matched = true;
            }
        }
        matched || !rule.no_additional
    }

    fn value_ok(&self, r: usize, value: &Value, depth: u32) -> bool {
        let rule = &self.rules[r];
        if !rule.supported || depth > MAX_RULE_DEPTH {
            return false;
        }
        let ok = match value {
            Value::Null => Self::type_ok(rule.types, T_NULL),
            Value::Bool(_) => Self::type_ok(rule.types, T_BOOL),
            Value::Number(n) => Self::number_ok(rule.types, n.as_str()),
            Value::String(s) => {
                Self::type_ok(rule.types, T_STRING) && self.matches(rule.pattern, s)
            }
            Value::Array(items) => {
                Self::type_ok(rule.types, T_ARRAY)
                    && rule
                        .items
                        .is_none_or(|i| items.iter().all(|v| self.value_ok(i, v, depth + 1)))
            }
            Value::Object(map) => {
                Self::type_ok(rule.types, T_OBJECT)
                    && rule.required.iter().all(|k| map.contains_key(k))
                    && map.iter().all(|(key, child)| {
                        let mut applying = Vec::new();
                        self.member_rules(rule, key, &mut applying)
                            && applying.iter().all(|&a| self.value_ok(a, child, depth + 1))
                    })
            }
        };
        ok && rule
            .refs
            .iter()
            .all(|&x| self.value_ok(x, value, depth + 1))
    }

    fn tree_ok(&self, tree: &Sensors) -> bool {
        let rule = &self.rules[0];
        rule.supported
            && rule.refs.is_empty()
            && Self::type_ok(rule.types, T_OBJECT)
            && rule.required.iter().all(|k| tree.outputs.contains_key(k))
            && tree.outputs.iter().all(|(key, node)| {
                let mut applying = Vec::new();
                self.member_rules(rule, key, &mut applying)
                    && applying.iter().all(|&a| match node {
                        Node::Value(v) => self.value_ok(a, v, 1),
                        Node::List(segments) => self.list_ok(a, segments, 1),
                    })
            })
    }

    fn list_ok(&self, r: usize, segments: &[Segment], depth: u32) -> bool {
        let rule = &self.rules[r];
        rule.supported
            && depth <= MAX_RULE_DEPTH
            && Self::type_ok(rule.types, T_ARRAY)
            && rule.items.is_none_or(|i| {
                segments.iter().all(|segment| match segment {
                    Segment::Table(table) => self.table_ok(i, table, depth + 1),
                })
            })
            && rule
                .refs
                .iter()
                .all(|&x| self.list_ok(x, segments, depth + 1))
    }

    /// Every row of `table` (an object each) against rule `r`: the member rules of each
    /// column are found once, then each row's cells are checked.
    fn table_ok(&self, r: usize, table: &Table, depth: u32) -> bool {
        // `r` and every rule it refers to, as they all apply to each row.
        let mut all = vec![r];
        let mut next = 0;
        while next < all.len() {
            let rule = &self.rules[all[next]];
            if !rule.supported || all.len() > 64 {
                return false;
            }
            for &x in &rule.refs {
                if !all.contains(&x) {
                    all.push(x);
                }
            }
            next += 1;
        }
        let columns = table.columns();
        let mut required = vec![false; columns.len()];
        let mut allowed = vec![true; columns.len()];
        let mut checks: Vec<Vec<usize>> = vec![Vec::new(); columns.len()];
        for &a in &all {
            let rule = &self.rules[a];
            if !Self::type_ok(rule.types, T_OBJECT) {
                return false;
            }
            for key in &rule.required {
                match columns.iter().position(|c| c == key) {
                    Some(c) => required[c] = true,
                    None => return table.is_empty(),
                }
            }
            for (c, key) in columns.iter().enumerate() {
                allowed[c] &= self.member_rules(rule, key, &mut checks[c]);
            }
        }
        if table.is_empty() {
            return true;
        }
        let flat: Vec<Option<Flat>> = checks.iter().map(|c| self.flatten(c, depth + 1)).collect();
        let rows_ok = |rows: std::ops::Range<usize>| {
            // The last string each column passed: a repeated one (a day's date on every
            // point) is not checked again.
            let mut last: Vec<Option<(u32, u32)>> = vec![None; columns.len()];
            rows.into_iter().all(|row| {
                table
                    .row(row)
                    .iter()
                    .enumerate()
                    .all(|(c, cell)| match cell {
                        Cell::Absent => !required[c],
                        Cell::Str(a, b) if last[c] == Some((*a, *b)) => true,
                        _ => {
                            let ok = allowed[c]
                                && flat[c]
                                    .as_ref()
                                    .and_then(|f| f.cell_ok(table, cell))
                                    .unwrap_or_else(|| {
                                        checks[c]
                                            .iter()
                                            .all(|&x| self.cell_ok(x, table, cell, depth + 1))
                                    });
                            if let (true, Cell::Str(a, b)) = (ok, cell) {
                                last[c] = Some((*a, *b));
                            }
                            ok
                        }
                    })
            })
        };
        let rows = table.len();
        if rows < PARALLEL_ROWS {
            return rows_ok(0..rows);
        }
        // A long table: its second half is checked on a second thread.
        let middle = rows / 2;
        let (earlier, later) = crate::halves::both(|| rows_ok(0..middle), || rows_ok(middle..rows));
        earlier && later
    }

    /// The rules `rules` (at `depth`) and every rule they refer to, gathered once for
    /// a column; `None` where [`Rules::cell_ok`] would refuse every cell (a rule not
    /// supported, a pattern outside the subset, or too deep) or the rules refer to each
    /// other too often to gather.
    fn flatten(&self, rules: &[usize], depth: u32) -> Option<Flat<'_>> {
        let mut types = Vec::new();
        let mut patterns = Vec::new();
        let mut pending: Vec<(usize, u32)> = rules.iter().map(|&r| (r, depth)).collect();
        let mut visited = 0;
        while let Some((r, d)) = pending.pop() {
            let rule = &self.rules[r];
            visited += 1;
            if visited > 256 || !rule.supported || d > MAX_RULE_DEPTH {
                return None;
            }
            types.push(rule.types);
            if let Some(p) = rule.pattern {
                patterns.push(self.pattern(p)?);
            }
            pending.extend(rule.refs.iter().map(|&x| (x, d + 1)));
        }
        let all = |kind: u8| types.iter().all(|&t| Self::type_ok(t, kind));
        Some(Flat {
            string: all(T_STRING),
            integer: all(T_NUMBER | T_INTEGER),
            boolean: all(T_BOOL),
            patterns,
            types,
        })
    }

    fn cell_ok(&self, r: usize, table: &Table, cell: &Cell, depth: u32) -> bool {
        let rule = &self.rules[r];
        if !rule.supported || depth > MAX_RULE_DEPTH {
            return false;
        }
        let ok = match cell {
            Cell::Absent => true,
            Cell::Str(a, b) => {
                Self::type_ok(rule.types, T_STRING)
                    && self.matches(rule.pattern, table.text(*a, *b))
            }
            Cell::Num(a, b) => Self::number_ok(rule.types, table.text(*a, *b)),
            Cell::Int(_) | Cell::UInt(_) => Self::type_ok(rule.types, T_NUMBER | T_INTEGER),
            Cell::Bool(_) => Self::type_ok(rule.types, T_BOOL),
            Cell::Other(v) => return self.value_ok(r, v, depth),
        };
        ok && rule
            .refs
            .iter()
            .all(|&x| self.cell_ok(x, table, cell, depth + 1))
    }
}

/// What the cells of one column must meet: the rules that apply to it, `$ref`s
/// followed, as one list of types and patterns.
struct Flat<'r> {
    types: Vec<Option<u8>>,
    patterns: Vec<&'r Pattern>,
    string: bool,
    integer: bool,
    boolean: bool,
}

impl Flat<'_> {
    /// [`Rules::cell_ok`] of every gathered rule at once; `None` for a cell holding
    /// another value, which is checked rule by rule.
    fn cell_ok(&self, table: &Table, cell: &Cell) -> Option<bool> {
        Some(match cell {
            Cell::Absent => true,
            Cell::Str(a, b) => {
                self.string && {
                    let text = table.text(*a, *b);
                    self.patterns.iter().all(|p| p.is_match(text))
                }
            }
            Cell::Num(a, b) => {
                let text = table.text(*a, *b);
                self.types.iter().all(|&t| Rules::number_ok(t, text))
            }
            Cell::Int(_) | Cell::UInt(_) => self.integer,
            Cell::Bool(_) => self.boolean,
            Cell::Other(_) => return None,
        })
    }
}

/// A regular expression of a small subset (ASCII literals and escaped punctuation,
/// classes `[...]` of those and ranges, groups with `|`, the quantifiers `?`, `*`, `+`,
/// `{n}`, `{n,}`, `{n,m}`, and `^`/`$` at the ends), compiled into a DFA over bytes.
/// Within the subset, ECMA-262 and the full validator's engine agree on what matches;
/// anything else does not compile, so the rule using it is "not sure".
struct Pattern {
    transitions: Vec<[u16; 256]>,
    accepting: Vec<bool>,
    dead: Option<u16>,
    anchored_end: bool,
    /// For a pattern anchored at both ends that matches strings of a few fixed shapes
    /// (the date and time patterns): those shapes, a class (which bytes it holds) per
    /// position. A text of such a length is checked byte by byte, each byte on its own
    /// rather than through the automaton's chain of lookups; the answer is the same.
    shapes: Option<Vec<Vec<Class>>>,
}

/// Shapes a pattern may expand into, and their longest length, for [`Pattern::shapes`].
const MAX_SHAPES: usize = 8;
const MAX_SHAPE_LEN: usize = 64;

/// The bytes one position of a shape holds (none beyond ASCII).
type Class = Box<[bool; 256]>;

/// The strings `re` matches as sequences of classes, when they are few and short.
fn shapes(re: &Re) -> Option<Vec<Vec<Class>>> {
    match re {
        Re::Class(set) => {
            let mut class = Box::new([false; 256]);
            class[..128].copy_from_slice(&set[..]);
            Some(vec![vec![class]])
        }
        Re::Concat(items) => items
            .iter()
            .try_fold(vec![Vec::new()], |done, item| then(&done, &shapes(item)?)),
        Re::Alt(options) => {
            let mut all = Vec::new();
            for option in options {
                all.extend(shapes(option)?);
                if all.len() > MAX_SHAPES {
                    return None;
                }
            }
            Some(all)
        }
        Re::Repeat(inner, min, max) => {
            let max = (*max)?;
            let inner = shapes(inner)?;
            let mut all = Vec::new();
            let mut repeated = vec![Vec::new()];
            for times in 0..=max {
                if times >= *min {
                    all.extend(repeated.iter().cloned());
                    if all.len() > MAX_SHAPES {
                        return None;
                    }
                }
                if times < max {
                    repeated = then(&repeated, &inner)?;
                }
            }
            Some(all)
        }
    }
}

/// Every shape of `first` followed by every shape of `second`.
fn then(first: &[Vec<Class>], second: &[Vec<Class>]) -> Option<Vec<Vec<Class>>> {
    if first.len() * second.len() > MAX_SHAPES {
        return None;
    }
    let mut all = Vec::new();
    for a in first {
        for b in second {
            if a.len() + b.len() > MAX_SHAPE_LEN {
                return None;
            }
            all.push(a.iter().chain(b).cloned().collect());
        }
    }
    Some(all)
}

#[derive(Debug, Clone)]
enum Re {
    Class(Box<[bool; 128]>),
    Concat(Vec<Re>),
    Alt(Vec<Re>),
    Repeat(Box<Re>, u32, Option<u32>),
}

/// Positions of the Glushkov automaton (bit 63 marks the start state).
const MAX_POSITIONS: usize = 63;
const MAX_STATES: usize = 512;

impl Pattern {
    fn compile(source: &str) -> Option<Pattern> {
        let mut body = source;
        let anchored_start = body.starts_with('^');
        if anchored_start {
            body = &body[1..];
        }
        let trailing_backslashes = body
            .strip_suffix('$')
            .map(|b| b.bytes().rev().take_while(|&c| c == b'\\').count());
        let anchored_end = trailing_backslashes.is_some_and(|n| n % 2 == 0);
        if anchored_end {
            body = &body[..body.len() - 1];
        }
        let mut parser = ReParser {
            bytes: body.as_bytes(),
            at: 0,
        };
        let re = parser.alternation(0)?;
        if parser.at != parser.bytes.len() {
            return None;
        }
        let shapes = (anchored_start && anchored_end)
            .then(|| shapes(&re))
            .flatten();
        let mut g = Glushkov::default();
        let (nullable, first, last) = g.build(&re)?;
        const START: u64 = 1 << 63;
        let step = |state: u64, byte: u8| -> u64 {
            let mut reach = 0u64;
            if state & START != 0 || !anchored_start {
                reach |= first;
            }
            let mut s = state & !START;
            while s != 0 {
                let p = s.trailing_zeros() as usize;
                reach |= g.follow[p];
                s &= s - 1;
            }
            let mut next = 0u64;
            let mut r = reach;
            while r != 0 {
                let p = r.trailing_zeros() as usize;
                if byte < 128 && g.classes[p][usize::from(byte)] {
                    next |= 1 << p;
                }
                r &= r - 1;
            }
            next
        };
        // Without `^`, an empty match may start anywhere.
        let accepts =
            |state: u64| state & last != 0 || (nullable && (state & START != 0 || !anchored_start));
        let mut ids = std::collections::HashMap::new();
        let mut states = vec![START];
        ids.insert(START, 0u16);
        let mut transitions = Vec::new();
        let mut at = 0;
        while at < states.len() {
            let state = states[at];
            let mut row = [0u16; 256];
            for byte in 0..=255u8 {
                let next = step(state, byte);
                let id = match ids.get(&next) {
                    Some(&id) => id,
                    None => {
                        if states.len() >= MAX_STATES {
                            return None;
                        }
                        let id = states.len() as u16;
                        ids.insert(next, id);
                        states.push(next);
                        id
                    }
                };
                row[usize::from(byte)] = id;
            }
            transitions.push(row);
            at += 1;
        }
        // Without `^`, the search restarts at every byte; a dead end only exists with it.
        let dead = if anchored_start {
            ids.get(&0).copied()
        } else {
            None
        };
        Some(Pattern {
            transitions,
            accepting: states.iter().map(|&s| accepts(s)).collect(),
            dead,
            anchored_end,
            shapes,
        })
    }

    /// Whether the pattern matches somewhere in `text` (JSON Schema's `pattern`).
    fn is_match(&self, text: &str) -> bool {
        if let Some(shapes) = &self.shapes {
            let bytes = text.as_bytes();
            return shapes.iter().any(|shape| {
                shape.len() == bytes.len()
                    && shape
                        .iter()
                        .zip(bytes)
                        .all(|(class, &byte)| class[usize::from(byte)])
            });
        }
        self.automaton_match(text)
    }

    /// [`Pattern::is_match`] by the automaton.
    fn automaton_match(&self, text: &str) -> bool {
        let mut state = 0u16;
        if !self.anchored_end && self.accepting[0] {
            return true;
        }
        for &byte in text.as_bytes() {
            state = self.transitions[usize::from(state)][usize::from(byte)];
            if Some(state) == self.dead {
                return false;
            }
            if !self.anchored_end && self.accepting[usize::from(state)] {
                return true;
            }
        }
        self.accepting[usize::from(state)]
    }
}

struct ReParser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl ReParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn alternation(&mut self, depth: u32) -> Option<Re> {
        if depth > 16 {
            return None;
        }
        let mut options = vec![self.concat(depth)?];
        while self.peek() == Some(b'|') {
            self.at += 1;
            options.push(self.concat(depth)?);
        }
        Some(if options.len() == 1 {
            options.pop()?
        } else {
            Re::Alt(options)
        })
    }

    fn concat(&mut self, depth: u32) -> Option<Re> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == b'|' || c == b')' {
                break;
            }
            let atom = self.atom(depth)?;
            items.push(self.quantified(atom)?);
        }
        Some(Re::Concat(items))
    }

    fn atom(&mut self, depth: u32) -> Option<Re> {
        let c = self.peek()?;
        self.at += 1;
        match c {
            b'(' => {
                if self.bytes[self.at..].starts_with(b"?:") {
                    self.at += 2;
                } else if self.peek() == Some(b'?') {
                    return None;
                }
                let inner = self.alternation(depth + 1)?;
                (self.peek() == Some(b')')).then(|| self.at += 1)?;
                Some(inner)
            }
            b'[' => self.class(),
            b'\\' => {
                let e = self.peek()?;
                self.at += 1;
                e.is_ascii_punctuation().then(|| single(e))
            }
            b')' | b']' | b'{' | b'}' | b'?' | b'*' | b'+' | b'.' | b'^' | b'$' | b'|' => None,
            0x20..=0x7E => Some(single(c)),
            _ => None,
        }
    }

    fn class(&mut self) -> Option<Re> {
        let mut set = Box::new([false; 128]);
        if self.peek() == Some(b'^') {
            return None;
        }
        let mut first = true;
        loop {
            let c = self.peek()?;
            self.at += 1;
            let low = match c {
                b']' if !first => break,
                b']' | b'[' => return None,
                b'\\' => {
                    let e = self.peek()?;
                    self.at += 1;
                    if !e.is_ascii_punctuation() {
                        return None;
                    }
                    e
                }
                0x20..=0x7E => c,
                _ => return None,
            };
            first = false;
            let is_range = self.peek() == Some(b'-')
                && self.bytes.get(self.at + 1).is_some_and(|&n| n != b']');
            if is_range {
                self.at += 1;
                let high = self.peek()?;
                self.at += 1;
                if !(0x20..=0x7E).contains(&high) || high == b'\\' || high == b'[' || high < low {
                    return None;
                }
                for b in low..=high {
                    set[usize::from(b)] = true;
                }
            } else {
                set[usize::from(low)] = true;
            }
        }
        Some(Re::Class(set))
    }

    fn quantified(&mut self, atom: Re) -> Option<Re> {
        let (min, max) = match self.peek() {
            Some(b'?') => (0, Some(1)),
            Some(b'*') => (0, None),
            Some(b'+') => (1, None),
            Some(b'{') => {
                let close = self.bytes[self.at..].iter().position(|&b| b == b'}')?;
                let inner = std::str::from_utf8(&self.bytes[self.at + 1..self.at + close]).ok()?;
                let number = |s: &str| -> Option<u32> {
                    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| s.parse().ok())
                        .flatten()
                };
                let (min, max) = match inner.split_once(',') {
                    None => (number(inner)?, Some(number(inner)?)),
                    Some((lo, "")) => (number(lo)?, None),
                    Some((lo, hi)) => (number(lo)?, Some(number(hi)?)),
                };
                if max.is_some_and(|m| m < min) || min > 64 || max.is_some_and(|m| m > 64) {
                    return None;
                }
                self.at += close;
                (min, max)
            }
            _ => return Some(atom),
        };
        self.at += 1;
        // A lazy quantifier matches the same strings.
        if self.peek() == Some(b'?') {
            self.at += 1;
        }
        if matches!(self.peek(), Some(b'?' | b'*' | b'+' | b'{')) {
            return None;
        }
        Some(Re::Repeat(Box::new(atom), min, max))
    }
}

fn single(byte: u8) -> Re {
    let mut set = Box::new([false; 128]);
    set[usize::from(byte)] = true;
    Re::Class(set)
}

#[derive(Default)]
struct Glushkov {
    classes: Vec<[bool; 128]>,
    follow: Vec<u64>,
}

impl Glushkov {
    /// Nullable, first and last positions of `re`, adding its positions.
    fn build(&mut self, re: &Re) -> Option<(bool, u64, u64)> {
        match re {
            Re::Class(set) => {
                if self.classes.len() >= MAX_POSITIONS {
                    return None;
                }
                let p = self.classes.len();
                self.classes.push(**set);
                self.follow.push(0);
                Some((false, 1 << p, 1 << p))
            }
            Re::Concat(items) => {
                let mut acc = (true, 0u64, 0u64);
                for item in items {
                    let next = self.build(item)?;
                    acc = self.concat(acc, next);
                }
                Some(acc)
            }
            Re::Alt(options) => {
                let mut acc = (false, 0, 0);
                for option in options {
                    let (n, f, l) = self.build(option)?;
                    acc = (acc.0 || n, acc.1 | f, acc.2 | l);
                }
                Some(acc)
            }
            Re::Repeat(inner, min, max) => {
                let mut acc = (true, 0u64, 0u64);
                for _ in 0..*min {
                    let next = self.build(inner)?;
                    acc = self.concat(acc, next);
                }
                match max {
                    None => {
                        let (_, f, l) = self.build(inner)?;
                        self.link(l, f);
                        acc = self.concat(acc, (true, f, l));
                    }
                    Some(max) => {
                        for _ in *min..*max {
                            let (_, f, l) = self.build(inner)?;
                            acc = self.concat(acc, (true, f, l));
                        }
                    }
                }
                Some(acc)
            }
        }
    }

    fn link(&mut self, from: u64, to: u64) {
        let mut s = from;
        while s != 0 {
            let p = s.trailing_zeros() as usize;
            self.follow[p] |= to;
            s &= s - 1;
        }
    }

    fn concat(&mut self, a: (bool, u64, u64), b: (bool, u64, u64)) -> (bool, u64, u64) {
        self.link(a.2, b.1);
        (
            a.0 && b.0,
            a.1 | if a.0 { b.1 } else { 0 },
            b.2 | if b.0 { a.2 } else { 0 },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::{Doc, Layout, map_method};

    #[test]
    fn patterns_match_as_regular_expressions_do() {
        let patterns = [
            "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
            "^[0-9]{2}:[0-9]{2}(:[0-9]{2})?$",
            "^body-[A-Za-z]+$",
            "^(activities|foods-log|sleep)-[A-Za-z-]+$",
            "a*$",
            "b+",
            "^x{2,3}y?$",
            "(?:ab|c)*d",
            "^[-a]\\.z{0,2}$",
            "",
            "^$",
        ];
        let mut inputs: Vec<String> = [
            "",
            "2026-11-23",
            "2026-11-2",
            "02026-11-23",
            "2026-11-23\n",
            "08:00",
            "08:00:00",
            "08:00:0",
            "8:00",
            "body-weight",
            "body-",
            "body-fat2",
            "activities-steps",
            "activities-tracker-minutes",
            "foods-log-water",
            "sleep-",
            "x",
            "xx",
            "xxxy",
            "xxxx",
            "abd",
            "cccd",
            "ab",
            "b",
            "abc",
            "-.zz",
            "a.",
            "a.zzz",
            "é",
            "08:0é",
            "xxé",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for a in ["0", "9", ":", "-", "a", "b", "x", "y", "d", "."] {
            for b in ["0", ":", "-", "z", "y", ""] {
                inputs.push(format!("{a}{b}{a}"));
                inputs.push(format!("xx{b}{a}"));
            }
        }
        let mut shaped = Vec::new();
        for source in patterns {
            let ours = Pattern::compile(source).unwrap_or_else(|| panic!("{source} compiles"));
            let reference = regex_lite::Regex::new(source).unwrap();
            for input in &inputs {
                assert_eq!(
                    ours.is_match(input),
                    reference.is_match(input),
                    "{source} on {input:?}"
                );
                assert_eq!(
                    ours.automaton_match(input),
                    reference.is_match(input),
                    "{source} on {input:?} (automaton)"
                );
            }
            if ours.shapes.is_some() {
                shaped.push(source);
            }
        }
        // The date and time patterns are matched by shape; the unbounded ones cannot be.
        assert_eq!(
            shaped,
            [
                "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
                "^[0-9]{2}:[0-9]{2}(:[0-9]{2})?$",
                "^x{2,3}y?$",
                "^[-a]\\.z{0,2}$",
                "^$",
            ]
        );
        for unsupported in [
            "\\d", "[^a]", "a.b", "(?i)a", "a{,2}", "x^", "a$b", "[a-\\d]",
        ] {
            assert!(Pattern::compile(unsupported).is_none(), "{unsupported}");
        }
    }

    /// Every pattern of the sensor schema is within the subset the compiled check
    /// matches (compiled on first use, so one outside it would only show as trees sent
    /// to the full validator), and a pattern repeated in the schema is compiled once.
    #[test]
    fn the_sensor_schema_patterns_compile() {
        let rules = rules().expect("the sensor schema compiles into rules");
        assert!(rules.patterns.len() >= 2, "{}", rules.patterns.len());
        for (i, lazy) in rules.patterns.iter().enumerate() {
            assert!(rules.pattern(i).is_some(), "{}", lazy.source);
            assert_eq!(
                rules
                    .patterns
                    .iter()
                    .filter(|p| p.source == lazy.source)
                    .count(),
                1,
                "{}",
                lazy.source
            );
        }
    }

    /// The day `text` mapped through the benchmark fixture's method `heart_intraday`.
    fn map_heart(text: String) -> Result<Sensors, crate::transform::TransformError> {
        let provider = crate::provider::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("benches/fixtures/intraday.yaml"),
            &Default::default(),
        )
        .unwrap_or_else(|d| panic!("{d}"));
        let mapped = map_method(
            &provider.methods["heart_intraday"],
            vec![Doc::parse(text).unwrap()],
            Layout::Mapped,
            crate::transform::MapContext::new(
                crate::transform::units::UnitSystem::Metric,
                chrono_tz::Tz::UTC,
            ),
        )?;
        let mut tree = Sensors::default();
        tree.merge(mapped.mapped);
        Ok(tree)
    }

    /// Long tables, checked in two halves on two threads, get the full validator's
    /// verdict wherever the one bad point is.
    #[test]
    fn long_tables_get_the_same_verdicts() {
        let points = 2 * PARALLEL_ROWS + 5;
        for bad in [None, Some(3), Some(points - 2)] {
            let dataset: Vec<String> = (0..points)
                .map(|i| {
                    let time = if Some(i) == bad {
                        "12:3a".to_owned()
                    } else {
                        format!("{:02}:{:02}:{:02}", i / 3600 % 24, i / 60 % 60, i % 60)
                    };
                    format!(r#"{{"time":"{time}","value":{}}}"#, 50 + i % 90)
                })
                .collect();
            let text = format!(
                r#"{{"activities-heart":[{{"dateTime":"2026-11-23"}}],"activities-heart-intraday":{{"dataset":[{}]}}}}"#,
                dataset.join(",")
            );
            let tree = map_heart(text).expect("the day maps");
            let verdict = validate_sensors(&tree);
            assert_eq!(verdict.is_err(), bad.is_some(), "{bad:?}");
            assert_eq!(verdict, full_check(&tree.to_value()), "{bad:?}");
        }
    }

    /// Tables that break the schema get the full validator's problems.
    #[test]
    fn compact_trees_get_the_same_verdicts() {
        let mut refused = 0;
        for (day, points) in [
            (
                "2026-11-23",
                r#"{"time":"00:00:00","value":58},{"time":"00:00:01","value":59}"#,
            ),
            (
                "2026-11-23",
                r#"{"time":"0:00:00","value":58},{"time":"00:00:01","value":" 7 "}"#,
            ),
            (
                "2026-11-23",
                r#"{"time":"00:00","value":58.5},{"time":"00:00:01","value":1e3}"#,
            ),
            (
                "2026-11-23",
                r#"{"time":"00:00:00","value":true},{"time":"00:00:01"}"#,
            ),
            (
                "2026-11-23",
                r#"{"time":"00:00:00","value":[1]},{"time":"00:00:01","value":{}}"#,
            ),
            (
                "2026-11-23",
                r#"{"time":"00:00:00","value":null},{"time":"00:00:01","value":1}"#,
            ),
            (
                "2026-11-23",
                r#"{"time":"00:00:00","value":1},{"time":"12:3a","value":2}"#,
            ),
            ("2026-11-23", ""),
        ] {
            let text = format!(
                r#"{{"activities-heart":[{{"dateTime":"{day}"}}],"activities-heart-intraday":{{"dataset":[{points}]}}}}"#
            );
            let Ok(tree) = map_heart(text.clone()) else {
                continue;
            };
            assert!(tree.has_tables(), "{text}");
            let verdict = validate_sensors(&tree);
            assert_eq!(verdict, full_check(&tree.to_value()), "{text}");
            refused += usize::from(verdict.is_err());
        }
        assert_eq!(refused, 2);
    }
}
