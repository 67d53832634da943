//! The sensor output schema (`schemas/sensors.schema.json`): which outputs a provider
//! may declare, and the check every mapped tree passes before it is printed or stored.

use std::sync::OnceLock;

use serde_json::Value;

/// The schema text, built into the binary so `check` works anywhere.
pub const SENSOR_SCHEMA_TEXT: &str = include_str!("../schemas/sensors.schema.json");

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

fn pattern_properties() -> Vec<(regex_lite::Regex, &'static Value)> {
    static PATTERNS: OnceLock<Vec<(regex_lite::Regex, &'static Value)>> = OnceLock::new();
    PATTERNS
        .get_or_init(|| {
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
        .clone()
}

/// The schema of output `name`: its property, else the first matching pattern.
fn output_schema(name: &str) -> Option<&'static Value> {
    if let Some(p) = properties().and_then(|p| p.get(name)) {
        return Some(p);
    }
    pattern_properties()
        .into_iter()
        .find(|(re, _)| re.is_match(name))
        .map(|(_, v)| v)
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

/// Checks an output's declared fields against the entry schema of that output:
/// required fields must be declared, and undeclared fields must be allowed.
pub fn check_output_fields<'a>(
    name: &str,
    fields: impl Iterator<Item = &'a str>,
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
    let declared: Vec<&str> = fields.collect();
    let mut problems = Vec::new();
    if let Some(required) = entry.get("required").and_then(Value::as_array) {
        for r in required.iter().filter_map(Value::as_str) {
            if !declared.contains(&r) {
                problems.push(format!("the schema requires field `{r}`"));
            }
        }
    }
    if entry.get("additionalProperties") == Some(&Value::Bool(false)) {
        let allowed = entry.get("properties").and_then(Value::as_object);
        for d in &declared {
            if !allowed.is_some_and(|a| a.contains_key(*d)) {
                problems.push(format!("the schema does not allow field `{d}`"));
            }
        }
    }
    (!problems.is_empty()).then(|| format!("output `{name}`: {}", problems.join("; ")))
}

/// Validates a mapped tree; each problem names the path and the rule it breaks.
pub fn validate_tree(tree: &Value) -> Result<(), Vec<String>> {
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
