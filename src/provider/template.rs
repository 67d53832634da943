//! Request templates: Handlebars in strict mode, compiled once when a provider loads.
//!
//! Two registries differ only in how `{{value}}` output is escaped: path templates
//! percent-encode every byte outside the unreserved set and `/`, everything else is
//! rendered as plain text and encoded by its consumer (query and form values are
//! form-encoded as a whole, headers are checked for line breaks). Triple braces are
//! refused at load time so no value can bypass the encoding.

use std::collections::BTreeSet;

use chrono::{Duration, NaiveDate, NaiveTime};
use chrono_tz::Tz;
use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, Path, PathSeg, RenderContext, RenderError,
    RenderErrorReason, Template, template::Parameter, template::TemplateElement,
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// Bytes percent-encoded in path templates: all but unreserved characters, `/`, and
/// `:` and `@`, which RFC 3986 allows in path segments (Fitbit times: `08:00`).
const PATH_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b':')
    .remove(b'@')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Where a rendered template ends up, which decides its escaping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// URL path: values percent-encoded.
    Path,
    /// Query, header, form or JSON text: plain.
    Text,
}

/// Names of the helpers every template may call.
pub const HELPERS: &[&str] = &[
    "iso_date",
    "date_fmt",
    "epoch",
    "epoch_ms",
    "rfc3339",
    "naive_utc",
    "add_days",
    "if",
    "unless",
    "eq",
    "ne",
    "and",
    "or",
    "not",
    "lt",
    "gt",
    "lte",
    "gte",
    "len",
];

/// The compiled templates of one provider.
#[derive(Clone)]
pub struct Templates {
    path: Handlebars<'static>,
    text: Handlebars<'static>,
    count: usize,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("count", &self.count)
            .finish()
    }
}

/// A handle to a compiled template.
#[derive(Debug, Clone)]
pub struct Tpl {
    id: String,
    place: Place,
    /// The literal text when the template has no expressions (rendered without Handlebars).
    literal: Option<String>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    /// Empty registries with the helpers installed.
    pub fn new() -> Self {
        let mut path = Handlebars::new();
        path.set_strict_mode(true);
        path.register_escape_fn(|s| utf8_percent_encode(s, PATH_ENCODE).to_string());
        register_helpers(&mut path);
        let mut text = Handlebars::new();
        text.set_strict_mode(true);
        text.register_escape_fn(handlebars::no_escape);
        register_helpers(&mut text);
        Templates {
            path,
            text,
            count: 0,
        }
    }

    /// Compiles `source`, returning the handle and the root names it reads
    /// (`period`, `app`, `vars`, ...) with their full dotted paths.
    pub fn add(&mut self, source: &str, place: Place) -> Result<(Tpl, Vec<String>), String> {
        if source.contains("{{{") {
            return Err("triple braces are not allowed: values must be encoded".to_owned());
        }
        let id = format!("t{}", self.count);
        self.count += 1;
        if !source.contains("{{") {
            // Text without an expression is one raw string to Handlebars: itself.
            let literal = Some(source.to_owned());
            return Ok((Tpl { id, place, literal }, Vec::new()));
        }
        let template = Template::compile(source).map_err(|e| {
            let reason = e.reason().to_string();
            format!("bad template: {reason}")
        })?;
        check_helpers(&template.elements)?;
        let mut names = BTreeSet::new();
        collect_names(&template.elements, &mut names);
        let literal = if template
            .elements
            .iter()
            .all(|e| matches!(e, TemplateElement::RawString(_)))
        {
            Some(
                template
                    .elements
                    .iter()
                    .map(|e| match e {
                        TemplateElement::RawString(s) => s.as_str(),
                        _ => "",
                    })
                    .collect(),
            )
        } else {
            None
        };
        match place {
            Place::Path => self.path.register_template(&id, template),
            Place::Text => self.text.register_template(&id, template),
        }
        Ok((Tpl { id, place, literal }, names.into_iter().collect()))
    }

    /// Renders a template over a JSON context.
    pub fn render(&self, tpl: &Tpl, context: &Value) -> Result<String, String> {
        if let Some(literal) = &tpl.literal {
            return Ok(literal.clone());
        }
        let registry = match tpl.place {
            Place::Path => &self.path,
            Place::Text => &self.text,
        };
        registry
            .render(&tpl.id, context)
            .map_err(|e| describe_render_error(&e))
    }
}

fn describe_render_error(e: &RenderError) -> String {
    match e.reason() {
        RenderErrorReason::Other(msg) => msg.clone(),
        other => other.to_string(),
    }
}

/// How many arguments each helper takes: exactly `min` when `max` equals it.
fn arity(helper: &str) -> Option<(usize, usize, &'static str)> {
    Some(match helper {
        "iso_date" | "epoch" | "epoch_ms" | "rfc3339" | "naive_utc" => (1, 1, "a date"),
        "date_fmt" => (2, 2, "a date and a chrono format"),
        "add_days" => (2, 2, "a date and a number of days"),
        "if" | "unless" | "not" | "len" => (1, 1, "a value"),
        "eq" | "ne" | "lt" | "gt" | "lte" | "gte" => (2, 2, "two values"),
        "and" | "or" => (2, usize::MAX, "two or more values"),
        _ => return None,
    })
}

/// Refuses calls of helpers that do not exist and calls with the wrong number of
/// arguments, naming the helpers there are.
fn check_helpers(elements: &[TemplateElement]) -> Result<(), String> {
    for element in elements {
        if let TemplateElement::Expression(h)
        | TemplateElement::HtmlExpression(h)
        | TemplateElement::HelperBlock(h) = element
        {
            let called = !h.params.is_empty() || !h.hash.is_empty() || h.template.is_some();
            if let Parameter::Name(name) = &h.name
                && called
            {
                let Some((min, max, what)) = arity(name) else {
                    return Err(format!(
                        "unknown helper `{name}` (helpers: {})",
                        HELPERS.join(", ")
                    ));
                };
                let given = h.params.len();
                if given < min || given > max {
                    let count = if min == max {
                        format!("{min}")
                    } else {
                        format!("at least {min}")
                    };
                    return Err(format!(
                        "helper `{name}` takes {count} argument{} ({what}), got {given}",
                        if min == 1 && max == 1 { "" } else { "s" }
                    ));
                }
            }
            for p in &h.params {
                if let Parameter::Subexpression(sub) = p {
                    check_helpers(std::slice::from_ref(sub.element.as_ref()))?;
                }
            }
            for t in [&h.template, &h.inverse].into_iter().flatten() {
                check_helpers(&t.elements)?;
            }
        }
    }
    Ok(())
}

fn collect_names(elements: &[TemplateElement], names: &mut BTreeSet<String>) {
    for element in elements {
        match element {
            TemplateElement::Expression(h)
            | TemplateElement::HtmlExpression(h)
            | TemplateElement::HelperBlock(h) => {
                match &h.name {
                    Parameter::Name(n) if !HELPERS.contains(&n.as_str()) => {
                        names.insert(n.clone());
                    }
                    other => collect_param(other, names),
                }
                for p in &h.params {
                    collect_param(p, names);
                }
                for p in h.hash.values() {
                    collect_param(p, names);
                }
                if let Some(t) = &h.template {
                    collect_names(&t.elements, names);
                }
                if let Some(t) = &h.inverse {
                    collect_names(&t.elements, names);
                }
            }
            TemplateElement::DecoratorExpression(d)
            | TemplateElement::DecoratorBlock(d)
            | TemplateElement::PartialExpression(d)
            | TemplateElement::PartialBlock(d) => {
                names.insert(format!("{{{{> or * not allowed: {:?}}}}}", d.name));
            }
            TemplateElement::RawString(_) | TemplateElement::Comment(_) => {}
            _ => {
                names.insert("{{unsupported template element}}".to_owned());
            }
        }
    }
}

fn collect_param(param: &Parameter, names: &mut BTreeSet<String>) {
    match param {
        Parameter::Path(Path::Relative((segs, raw))) => {
            if segs.iter().all(|s| matches!(s, PathSeg::Named(_))) && !raw.starts_with("this") {
                names.insert(raw.replace('/', "."));
            }
        }
        Parameter::Subexpression(sub) => {
            collect_names(std::slice::from_ref(sub.element.as_ref()), names);
        }
        _ => {}
    }
}

fn register_helpers(hb: &mut Handlebars<'static>) {
    hb.register_helper(
        "iso_date",
        Box::new(DateHelper(|d, _| d.format("%Y-%m-%d").to_string())),
    );
    hb.register_helper("date_fmt", Box::new(date_fmt_helper));
    hb.register_helper(
        "epoch",
        Box::new(DateHelper(|d, zone| {
            midnight(d, zone).timestamp().to_string()
        })),
    );
    hb.register_helper(
        "epoch_ms",
        Box::new(DateHelper(|d, zone| {
            (midnight(d, zone).timestamp() * 1000).to_string()
        })),
    );
    hb.register_helper(
        "rfc3339",
        Box::new(DateHelper(|d, zone| {
            midnight(d, zone).format("%Y-%m-%dT%H:%M:%SZ").to_string()
        })),
    );
    hb.register_helper(
        "naive_utc",
        Box::new(DateHelper(|d, zone| {
            midnight(d, zone).format("%Y-%m-%dT%H:%M:%S").to_string()
        })),
    );
    hb.register_helper("add_days", Box::new(add_days_helper));
}

/// A helper that formats its one date argument, a day of the user's zone (the
/// context's `user.zone`; UTC when there is none).
struct DateHelper(fn(NaiveDate, Tz) -> String);

impl handlebars::HelperDef for DateHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let d = date_param(h, 0)?;
        let zone = ctx
            .data()
            .pointer("/user/zone")
            .and_then(|z| z.as_str())
            .and_then(|z| z.parse::<Tz>().ok())
            .unwrap_or(Tz::UTC);
        out.write(&(self.0)(d, zone))?;
        Ok(())
    }
}

fn helper_error(name: &str, msg: impl std::fmt::Display) -> RenderError {
    RenderErrorReason::Other(format!("helper `{name}`: {msg}")).into()
}

fn date_param(h: &Helper, index: usize) -> Result<NaiveDate, RenderError> {
    let name = h.name();
    let value = h
        .param(index)
        .ok_or_else(|| helper_error(name, "expects a date argument"))?
        .value();
    let text = value
        .as_str()
        .ok_or_else(|| helper_error(name, format!("expects a date, got {value}")))?;
    parse_date(text).ok_or_else(|| helper_error(name, format!("`{text}` is not a YYYY-MM-DD date")))
}

/// Parses `YYYY-MM-DD`, or the date part of an RFC 3339 timestamp.
pub fn parse_date(text: &str) -> Option<NaiveDate> {
    let day = text.get(..10)?;
    NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()
}

/// The instant the day `d` begins in `zone` (the first moment that exists, should
/// clocks change at midnight).
pub fn midnight(d: NaiveDate, zone: Tz) -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone as _;
    let start = d.and_time(NaiveTime::MIN);
    zone.from_local_datetime(&start)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(start + chrono::Duration::hours(1)))
                .earliest()
        })
        .map_or_else(|| start.and_utc(), |at| at.with_timezone(&chrono::Utc))
}

fn date_fmt_helper(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    use std::fmt::Write as _;
    let d = date_param(h, 0)?;
    let fmt = h
        .param(1)
        .and_then(|p| p.value().as_str())
        .ok_or_else(|| helper_error("date_fmt", "expects a format string"))?;
    let mut s = String::new();
    write!(s, "{}", d.format(fmt)).map_err(|_| helper_error("date_fmt", "bad format"))?;
    out.write(&s)?;
    Ok(())
}

fn add_days_helper(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let d = date_param(h, 0)?;
    let n = h
        .param(1)
        .and_then(|p| p.value().as_i64())
        .ok_or_else(|| helper_error("add_days", "expects a whole number of days"))?;
    let shifted = d
        .checked_add_signed(Duration::days(n))
        .ok_or_else(|| helper_error("add_days", "date out of range"))?;
    out.write(&shifted.format("%Y-%m-%d").to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn path_values_are_encoded_and_names_collected() {
        let mut t = Templates::new();
        let (tpl, names) = t
            .add(
                "/1/user/{{user_id}}/x/{{base_date}}{{#if period}}/{{period}}{{/if}}.json",
                Place::Path,
            )
            .unwrap();
        assert_eq!(names, vec!["base_date", "period", "user_id"]);
        let out = t
            .render(
                &tpl,
                &json!({"user_id": "a b?", "base_date": "2024-01-15", "period": null}),
            )
            .unwrap();
        assert_eq!(out, "/1/user/a%20b%3F/x/2024-01-15.json");
    }

    #[test]
    fn helpers_and_nested_names() {
        let mut t = Templates::new();
        let (tpl, names) = t
            .add(
                "{{vars.dt}} >= \"{{rfc3339 range.start}}\" {{epoch range.start}} {{date_fmt d \"%Y-%-m-%-d\"}}",
                Place::Text,
            )
            .unwrap();
        assert_eq!(names, vec!["d", "range.start", "vars.dt"]);
        let out = t
            .render(
                &tpl,
                &json!({"vars": {"dt": "weight"}, "range": {"start": "2024-03-05"}, "d": "2024-03-05"}),
            )
            .unwrap();
        assert_eq!(
            out,
            "weight >= \"2024-03-05T00:00:00Z\" 1709596800 2024-3-5"
        );
    }

    #[test]
    fn text_without_expressions_renders_as_handlebars_reads_it() {
        for source in [
            "",
            "json",
            "a b",
            "/1/user/-/profile.json",
            "{",
            "}",
            "}}",
            "{ {",
            "a\\b",
            "\\{",
            "{x}",
            "é ü",
            "50",
            " spaced ",
            "line\nbreak",
        ] {
            let mut t = Templates::new();
            let (tpl, names) = t.add(source, Place::Path).unwrap();
            assert!(names.is_empty(), "{source:?}");
            let ours = t.render(&tpl, &json!({})).unwrap();
            let mut reference = Handlebars::new();
            reference.set_strict_mode(true);
            reference.register_escape_fn(handlebars::no_escape);
            let theirs = reference.render_template(source, &json!({})).unwrap();
            assert_eq!(ours, theirs, "{source:?}");
        }
    }

    #[test]
    fn triple_braces_and_bad_syntax_are_refused() {
        let mut t = Templates::new();
        assert!(t.add("{{{x}}}", Place::Path).is_err());
        assert!(t.add("{{#if x}}", Place::Text).is_err());
    }
}
