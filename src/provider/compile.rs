//! From a provider file's text to a [`Provider`], collecting every problem on the way.
//!
//! Order: YAML syntax (with duplicate keys), then the structure (unknown keys, wrong
//! types, missing fields), then the meaning (URLs, templates and the names they use,
//! JSONPaths, parameter rules, outputs against the sensor schema). The structure is
//! checked by reading the file into the [`raw`] types with the schema's rules
//! ([`super::strict`]); only a file that reading refuses is validated against the
//! provider JSON Schema, whose errors say where and what. Structural errors stop before
//! the meaning of the parts they break is checked, since their typed form cannot be
//! built; all errors of one stage are reported together.

use std::path::Path;
use std::sync::OnceLock;

use indexmap::IndexMap;
use jsonschema::error::ValidationErrorKind;
use serde_json::Value;
use url::Url;

use super::model::{
    Api, Auth, Body, Condition, Diagnostic, Diagnostics, ErrorRule, Field, FieldSource, History,
    JsonTpl, Method, Output, Pagination, Provider, TokenFields, UrlOverrides,
};
use super::raw::{self, ParamType};
use super::selector::Selector;
use super::strict;
use super::yaml::{self, Document, pointer_token};
use crate::provider::template::{Place, Templates, Tpl};
use crate::sensors::schema;

/// Names every template may use besides parameters.
const CONTEXT_ROOTS: &[&str] = &["app", "vars", "range", "connection", "user", "now"];
const APP_FIELDS: &[&str] = &["system", "client_id"];
const RANGE_FIELDS: &[&str] = &["start", "end", "end_exclusive"];
const CONNECTION_FIELDS: &[&str] = &["provider_user_id"];
const USER_FIELDS: &[&str] = &["zone", "name"];
/// The longest `history.settle`, in days.
const MAX_SETTLE_DAYS: i64 = 365;
/// Keyword arguments the engine itself interprets.
pub const RESERVED_PARAMS: &[&str] = &["methods", "user", "layout", "format"];

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        jsonschema::validator_for(super::model::provider_schema())
            .unwrap_or_else(|e| panic!("the generated provider schema is invalid: {e}"))
    })
}

/// Compiles provider text; `path` names the file in diagnostics.
pub fn compile_source(
    path: &Path,
    source: &str,
    overrides: &UrlOverrides,
) -> Result<Provider, Diagnostics> {
    let located = |loc: yaml::Loc, message: String| Diagnostic {
        file: path.to_owned(),
        line: loc.line,
        col: loc.col,
        message,
    };
    let doc = yaml::parse(source).map_err(|problems| {
        Diagnostics(
            problems
                .into_iter()
                .map(|p| located(p.loc, p.message))
                .collect(),
        )
    })?;

    let mut problems: Vec<(yaml::Loc, String)> = doc
        .problems
        .iter()
        .map(|p| (p.loc, p.message.clone()))
        .collect();
    // A file the typed reading accepts is valid against the schema (`strict`); only
    // one it refuses is validated, for messages that say what is wrong.
    let parts = match strict::from_value::<raw::ProviderFile>(&doc.value) {
        Ok(file) => Parts::from(file),
        Err(_) => {
            problems.extend(structural_problems(&doc));
            Parts::read(&doc.value)
        }
    };
    let structural_ok = problems.is_empty();

    let mut c = Compiler {
        doc: &doc,
        problems,
        templates: Templates::new(),
        helper_methods: Vec::new(),
    };
    let provider = c.provider(parts, path, overrides);
    if structural_ok && c.problems.is_empty() {
        if let Some(provider) = provider {
            return Ok(provider);
        }
    }
    let mut problems = c.problems;
    problems.sort_by_key(|(loc, _)| (loc.line, loc.col));
    problems.dedup();
    Err(Diagnostics(
        problems
            .into_iter()
            .map(|(loc, msg)| located(loc, msg))
            .collect(),
    ))
}

/// The typed parts of a file; `None` where a part is malformed (already reported).
struct Parts {
    name: Option<String>,
    title: Option<String>,
    retired: Option<raw::RetiredConfig>,
    default_methods: Vec<String>,
    auth: Option<raw::AuthConfig>,
    api: Option<raw::ApiConfig>,
    methods: IndexMap<String, Option<raw::MethodConfig>>,
}

impl From<raw::ProviderFile> for Parts {
    fn from(file: raw::ProviderFile) -> Self {
        Parts {
            name: Some(file.name),
            title: file.title,
            retired: file.retired,
            default_methods: file.default_methods,
            auth: Some(file.auth),
            api: Some(file.api),
            methods: file
                .methods
                .into_iter()
                .map(|(name, method)| (name, Some(method)))
                .collect(),
        }
    }
}

impl Parts {
    /// Each part typed on its own, so that the meaning of every well-formed part is
    /// checked even when another part is malformed.
    fn read(value: &Value) -> Self {
        let part = |key: &str| value.get(key).cloned().unwrap_or(Value::Null);
        let mut methods = IndexMap::new();
        if let Some(Value::Object(m)) = value.get("methods") {
            for (k, v) in m {
                methods.insert(k.clone(), serde_json::from_value(v.clone()).ok());
            }
        }
        Parts {
            name: serde_json::from_value(part("name")).ok(),
            title: serde_json::from_value(part("title")).ok().flatten(),
            retired: serde_json::from_value(part("retired")).ok().flatten(),
            default_methods: serde_json::from_value(part("default_methods")).unwrap_or_default(),
            auth: serde_json::from_value(part("auth")).ok(),
            api: serde_json::from_value(part("api")).ok(),
            methods,
        }
    }
}

/// The problems the provider JSON Schema finds, each at its place in the file.
fn structural_problems(doc: &Document) -> Vec<(yaml::Loc, String)> {
    let mut problems = Vec::new();
    for error in validator().iter_errors(&doc.value) {
        let pointer = error.instance_path().as_str().to_owned();
        let schema_path = error.schema_path().as_str().to_owned();
        match error.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                for key in unexpected {
                    let child = format!("{pointer}/{}", pointer_token(key));
                    let expected = allowed_keys(&schema_path);
                    let hint = if expected.is_empty() {
                        String::new()
                    } else {
                        format!(" (expected one of: {})", expected.join(", "))
                    };
                    problems.push((doc.key_loc(&child), format!("unknown key `{key}`{hint}")));
                }
            }
            kind => {
                let place = if pointer.is_empty() {
                    "the file".to_owned()
                } else {
                    format!("`{}`", pointer_to_dotted(&pointer))
                };
                let message = match kind {
                    ValidationErrorKind::OneOfNotValid { .. }
                    | ValidationErrorKind::AnyOf { .. } => match allowed_constants(&schema_path) {
                        Some(values) => {
                            format!("{} is not one of: {}", error.instance(), values.join(", "))
                        }
                        None => error.to_string(),
                    },
                    _ => error.to_string(),
                };
                problems.push((doc.value_loc(&pointer), format!("{place}: {message}")));
            }
        }
    }
    problems
}

/// The constants an enum-like `oneOf`/`anyOf` allows, for a readable message.
fn allowed_constants(schema_path: &str) -> Option<Vec<String>> {
    let node = schema_node(schema_path)?;
    let alternatives = node.as_array()?;
    let root = super::model::provider_schema();
    let mut values = Vec::new();
    for alt in alternatives {
        // `Option<enum>` is `anyOf: [{$ref: Enum}, {type: null}]`: the enum's values.
        if alt.get("type").and_then(Value::as_str) == Some("null") {
            continue;
        }
        let alt = match alt
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/$defs/"))
        {
            Some(name) => root.get("$defs").and_then(|d| d.get(name)).unwrap_or(alt),
            None => alt,
        };
        if let Some(c) = alt.get("const") {
            values.push(c.to_string());
        } else if let Some(Value::Array(e)) = alt.get("enum") {
            values.extend(e.iter().map(Value::to_string));
        } else if let Some(Value::Array(inner)) = alt.get("oneOf").or_else(|| alt.get("anyOf")) {
            for c in inner {
                values.push(c.get("const")?.to_string());
            }
        } else {
            return None;
        }
    }
    Some(values)
}

/// The node of the provider schema at a schema path, following `$ref`s.
fn schema_node(schema_path: &str) -> Option<&'static Value> {
    let root = super::model::provider_schema();
    let mut node = root;
    for token in schema_path.trim_start_matches('/').split('/') {
        if token.is_empty() {
            continue;
        }
        if token == "$ref" {
            let target = node.get("$ref")?.as_str()?;
            node = root.get("$defs")?.get(target.strip_prefix("#/$defs/")?)?;
            continue;
        }
        let token = token.replace("~1", "/").replace("~0", "~");
        node = match node {
            Value::Object(m) => m.get(&token)?,
            Value::Array(a) => a.get(token.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}

fn pointer_to_dotted(pointer: &str) -> String {
    pointer
        .trim_start_matches('/')
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect::<Vec<_>>()
        .join(".")
}

/// The property names of the schema object an `additionalProperties` error came from.
fn allowed_keys(schema_path: &str) -> Vec<String> {
    schema_path
        .strip_suffix("/additionalProperties")
        .and_then(schema_node)
        .and_then(|n| n.get("properties"))
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

struct Compiler<'d> {
    doc: &'d Document,
    problems: Vec<(yaml::Loc, String)>,
    templates: Templates,
    /// Methods called for the engine's own use (`auth.after_consent`,
    /// `api.time_zone`), which may map nothing.
    helper_methods: Vec<String>,
}

impl Compiler<'_> {
    fn err(&mut self, pointer: &str, message: impl Into<String>) {
        let loc = self.doc.value_loc(pointer);
        self.problems.push((loc, message.into()));
    }

    fn key_err(&mut self, pointer: &str, message: impl Into<String>) {
        let loc = self.doc.key_loc(pointer);
        self.problems.push((loc, message.into()));
    }

    fn url(&mut self, pointer: &str, text: &str) -> Option<Url> {
        match Url::parse(text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            Ok(_) => {
                self.err(pointer, format!("`{text}` is not an http(s) URL"));
                None
            }
            Err(e) => {
                self.err(pointer, format!("bad URL `{text}`: {e}"));
                None
            }
        }
    }

    fn selector(&mut self, pointer: &str, text: &str) -> Option<Selector> {
        match Selector::parse(text) {
            Ok(s) => Some(s),
            Err(e) => {
                self.err(pointer, e);
                None
            }
        }
    }

    fn condition(&mut self, pointer: &str, c: &raw::ConditionConfig) -> Option<Condition> {
        use super::model::Bound;
        let bounds: Vec<(Bound, Value)> = [
            (Bound::Gt, &c.gt),
            (Bound::Gte, &c.gte),
            (Bound::Lt, &c.lt),
            (Bound::Lte, &c.lte),
        ]
        .into_iter()
        .filter_map(|(b, v)| v.clone().map(|v| (b, v)))
        .collect();
        if c.equals.is_none() && c.one_of.is_none() && c.exists.is_none() && bounds.is_empty() {
            self.err(
                pointer,
                "a condition needs `equals`, `in`, `exists`, `gt`, `gte`, `lt` or `lte`",
            );
        }
        for (bound, value) in &bounds {
            if !matches!(value, Value::Number(_) | Value::String(_)) {
                self.err(
                    pointer,
                    format!("`{bound:?}` compares with a number or text, not {value}")
                        .to_lowercase(),
                );
            }
        }
        let path = self.selector(&format!("{pointer}/path"), &c.path)?;
        Some(Condition {
            path,
            equals: c.equals.clone(),
            one_of: c.one_of.clone(),
            exists: c.exists,
            bounds,
        })
    }

    fn provider(
        &mut self,
        parts: Parts,
        path: &Path,
        overrides: &UrlOverrides,
    ) -> Option<Provider> {
        if let Some(retired) = &parts.retired {
            if crate::provider::template::parse_date(&retired.since).is_none()
                || retired.since.len() != 10
            {
                self.err("/retired/since", "`since` must be a YYYY-MM-DD date");
            }
        }
        self.helper_methods = parts
            .auth
            .as_ref()
            .and_then(|a| a.after_consent.as_ref())
            .map(|s| s.method.clone())
            .into_iter()
            .chain(
                parts
                    .api
                    .as_ref()
                    .and_then(|a| a.time_zone.as_ref())
                    .map(|t| t.method.clone()),
            )
            .collect();
        let auth = parts.auth.as_ref().and_then(|a| self.auth(a, overrides));
        let api = parts.api.as_ref().and_then(|a| self.api(a, overrides));
        let unknown_defaults: Vec<(usize, String)> = parts
            .default_methods
            .iter()
            .enumerate()
            .filter(|(_, m)| !parts.methods.contains_key(*m))
            .map(|(i, m)| (i, m.clone()))
            .collect();
        self.same_units(&parts.methods);
        if let Some(tz) = parts.api.as_ref().and_then(|a| a.time_zone.as_ref()) {
            if !parts.methods.contains_key(&tz.method) {
                self.err(
                    "/api/time_zone/method",
                    format!("`{}` is not a method of this provider", tz.method),
                );
            }
        }
        if let Some(step) = parts.auth.as_ref().and_then(|a| a.after_consent.as_ref()) {
            if !parts.methods.contains_key(&step.method) {
                self.err(
                    "/auth/after_consent/method",
                    format!("`{}` is not a method of this provider", step.method),
                );
            }
            for (i, status) in step.accept.iter().enumerate() {
                if !(100..=599).contains(status) {
                    self.err(
                        &format!("/auth/after_consent/accept/{i}"),
                        format!("{status} is not an HTTP status"),
                    );
                }
            }
        }
        let mut methods = IndexMap::with_capacity(parts.methods.len());
        for (name, method) in parts.methods {
            let pointer = format!("/methods/{}", pointer_token(&name));
            if !is_identifier(&name) {
                self.key_err(
                    &pointer,
                    format!("method name `{name}` must be letters, digits and `_`"),
                );
            }
            if let Some(m) = method.and_then(|m| self.method(&name, m, &pointer)) {
                methods.insert(name, m);
            }
        }
        for (i, m) in unknown_defaults {
            self.err(
                &format!("/default_methods/{i}"),
                format!("`{m}` is not a method of this provider"),
            );
        }
        let (auth, api) = (auth?, api?);
        let mut answer_headers: Vec<String> = Vec::new();
        for m in methods.values() {
            let Some(p) = &m.pagination else { continue };
            let wanted = match p.kind {
                raw::PaginationKind::Link => Some("link".to_owned()),
                _ => p.next_header.clone(),
            };
            if let Some(h) = wanted
                && !answer_headers.contains(&h)
            {
                answer_headers.push(h);
            }
        }
        Some(Provider {
            name: parts.name?,
            title: parts.title,
            source: path.to_owned(),
            retired: parts.retired,
            default_methods: parts.default_methods,
            auth,
            api,
            methods,
            templates: std::mem::take(&mut self.templates),
            answer_headers,
        })
    }

    fn auth(&mut self, a: &raw::AuthConfig, o: &UrlOverrides) -> Option<Auth> {
        let authorize = o.authorize_url.as_deref().unwrap_or(&a.authorize_url);
        let token = o.token_url.as_deref().unwrap_or(&a.token_url);
        let authorize_url = self.url("/auth/authorize_url", authorize);
        let token_url = self.url("/auth/token_url", token);
        let revoke_url = match o.revoke_url.as_deref().or(a.revoke_url.as_deref()) {
            Some(r) => Some(self.url("/auth/revoke_url", r)?),
            None => None,
        };
        let refresh_url = match &a.refresh.url {
            Some(r) => self.url("/auth/refresh/url", r),
            None => token_url.clone(),
        };
        if a.scope_separator.is_empty() {
            self.err(
                "/auth/scope_separator",
                "the scope separator may not be empty",
            );
        }
        let t = &a.token_response;
        let p = "/auth/token_response";
        let root = match &t.root {
            Some(r) => self.selector(&format!("{p}/root"), r),
            None => None,
        };
        let success = match &t.success {
            Some(c) => self.condition(&format!("{p}/success"), c),
            None => None,
        };
        let error_message = match &t.error_message {
            Some(m) => self.selector(&format!("{p}/error_message"), m),
            None => None,
        };
        let provider_user_id = match &t.provider_user_id {
            Some(m) => self.selector(&format!("{p}/provider_user_id"), m),
            None => None,
        };
        let fields = TokenFields {
            error_code: self.selector(&format!("{p}/error_code"), &t.error_code)?,
            access_token: self.selector(&format!("{p}/access_token"), &t.access_token)?,
            refresh_token: self.selector(&format!("{p}/refresh_token"), &t.refresh_token)?,
            expires_in: self.selector(&format!("{p}/expires_in"), &t.expires_in)?,
            expires_at: self.selector(&format!("{p}/expires_at"), &t.expires_at)?,
            scope: self.selector(&format!("{p}/scope"), &t.scope)?,
            root,
            success,
            error_message,
            provider_user_id,
        };
        Some(Auth {
            authorize_url: authorize_url?,
            token_url: token_url?,
            refresh_url: refresh_url?,
            revoke_url,
            config: a.clone(),
            token: fields,
        })
    }

    fn api(&mut self, a: &raw::ApiConfig, o: &UrlOverrides) -> Option<Api> {
        let base = o.base_url.as_deref().unwrap_or(&a.base_url);
        let base_url = self.url("/api/base_url", base.trim_end_matches('/'));
        if base_url
            .as_ref()
            .is_some_and(|u| u.query().is_some() || u.fragment().is_some())
        {
            self.err(
                "/api/base_url",
                "the base URL may not have a query or fragment",
            );
        }
        let mut hosts = IndexMap::new();
        for (name, origin) in &a.hosts {
            let pointer = format!("/api/hosts/{}", pointer_token(name));
            if !is_identifier(name) {
                self.key_err(
                    &pointer,
                    format!("host name `{name}` must be letters, digits and `_`"),
                );
            }
            if let Some(url) = self.url(&pointer, origin) {
                if url.path() != "/" || url.query().is_some() {
                    self.err(&pointer, "a host is an origin only (`https://name[:port]`)");
                }
                hosts.insert(name.clone(), url);
            }
        }
        let no_params = IndexMap::new();
        let mut headers = Vec::new();
        for (name, source) in &a.headers {
            let pointer = format!("/api/headers/{}", pointer_token(name));
            self.check_header_name(&pointer, name);
            if let Some(t) = self.template(&pointer, source, Place::Text, &no_params, None) {
                headers.push((name.clone(), t));
            }
        }
        let mut errors = Vec::new();
        for (i, rule) in a.errors.iter().enumerate() {
            let pointer = format!("/api/errors/{i}");
            let when = match &rule.when {
                Some(c) => self.condition(&format!("{pointer}/when"), c),
                None => None,
            };
            let message = match &rule.message {
                Some(m) => self.selector(&format!("{pointer}/message"), m),
                None => None,
            };
            errors.push(ErrorRule {
                status: rule.status.clone(),
                when,
                kind: rule.kind,
                message,
            });
        }
        let envelope = match &a.envelope {
            Some(e) => {
                let status = self.selector("/api/envelope/status", &e.status);
                let message = match &e.message {
                    Some(m) => self.selector("/api/envelope/message", m),
                    None => None,
                };
                status.map(|status| super::model::Envelope {
                    status,
                    ok: e.ok.clone(),
                    kinds: e.kinds.clone(),
                    message,
                })
            }
            None => None,
        };
        if a.retry.attempts == 0 {
            self.err("/api/retry/attempts", "at least one attempt is needed");
        }
        for (i, b) in a.rate_limit.budgets.iter().enumerate() {
            if b.limit == 0 || b.per_seconds == 0 {
                self.err(
                    &format!("/api/rate_limit/budgets/{i}"),
                    "a budget needs a positive limit and window",
                );
            }
        }
        let time_zone = match &a.time_zone {
            Some(tz) => self
                .selector("/api/time_zone/path", &tz.path)
                .map(|path| (tz.method.clone(), path)),
            None => None,
        };
        Some(Api {
            base_url: base_url?,
            headers,
            default_system: a.default_system.clone(),
            config: a.clone(),
            errors,
            envelope,
            hosts,
            time_zone,
        })
    }

    fn check_header_name(&mut self, pointer: &str, name: &str) {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            self.key_err(pointer, format!("`{name}` is not a valid header name"));
        }
        if name.eq_ignore_ascii_case("authorization") {
            self.key_err(
                pointer,
                "the Authorization header is set by the engine from the stored token",
            );
        }
    }

    /// Compiles a template and checks every name it reads.
    fn template(
        &mut self,
        pointer: &str,
        source: &str,
        place: Place,
        params: &IndexMap<String, raw::ParamConfig>,
        method: Option<&raw::MethodConfig>,
    ) -> Option<Tpl> {
        let (tpl, names) = match self.templates.add(source, place) {
            Ok(t) => t,
            Err(e) => {
                self.err(pointer, e);
                return None;
            }
        };
        let mut ok = true;
        for name in names {
            if let Some(problem) = self.check_name(&name, params, method) {
                self.err(pointer, problem);
                ok = false;
            }
        }
        ok.then_some(tpl)
    }

    fn check_name(
        &self,
        name: &str,
        params: &IndexMap<String, raw::ParamConfig>,
        method: Option<&raw::MethodConfig>,
    ) -> Option<String> {
        let mut parts = name.split('.');
        let root = parts.next().unwrap_or_default();
        let field = parts.next();
        let deeper = parts.next().is_some();
        if params.contains_key(root) {
            return (field.is_some()).then(|| format!("parameter `{root}` has no fields"));
        }
        if !CONTEXT_ROOTS.contains(&root) {
            let declared: Vec<&str> = params.keys().map(String::as_str).collect();
            return Some(if declared.is_empty() {
                format!(
                    "the template uses `{name}`, which is not a declared parameter (this method declares none)"
                )
            } else {
                format!(
                    "the template uses `{name}`, which is not a declared parameter (declared: {})",
                    declared.join(", ")
                )
            });
        }
        let allowed: Vec<String> = match root {
            "app" => APP_FIELDS.iter().map(|s| s.to_string()).collect(),
            "range" => {
                if method.is_some_and(|m| m.range.is_none()) || method.is_none() {
                    return Some(format!(
                        "the template uses `{name}`, but the method declares no `range`"
                    ));
                }
                RANGE_FIELDS.iter().map(|s| s.to_string()).collect()
            }
            "connection" => CONNECTION_FIELDS.iter().map(|s| s.to_string()).collect(),
            "user" => USER_FIELDS.iter().map(|s| s.to_string()).collect(),
            "vars" => method
                .map(|m| m.vars.keys().cloned().collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        match field {
            None if root == "now" => None,
            None => Some(format!("`{root}` is an object: name one of its fields")),
            Some(f) if deeper || !allowed.iter().any(|a| a == f) => Some(format!(
                "the template uses `{name}`, which does not exist (known: {})",
                allowed
                    .iter()
                    .map(|a| format!("{root}.{a}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(_) => None,
        }
    }

    fn method(&mut self, name: &str, method: raw::MethodConfig, pointer: &str) -> Option<Method> {
        let m = &method;
        self.params(&m.params, pointer);
        if !m.path.starts_with('/') {
            self.err(&format!("{pointer}/path"), "a method path starts with `/`");
        }
        if literal_text(&m.path).contains(['?', '#']) {
            self.err(
                &format!("{pointer}/path"),
                "put query parameters under `query`, not in the path",
            );
        }
        let path = self.template(
            &format!("{pointer}/path"),
            &m.path,
            Place::Path,
            &m.params,
            Some(m),
        );
        let mut query = Vec::new();
        for (k, v) in &m.query {
            let p = format!("{pointer}/query/{}", pointer_token(k));
            if let Some(t) = self.template(&p, v, Place::Text, &m.params, Some(m)) {
                query.push((k.clone(), t));
            }
        }
        let mut headers = Vec::new();
        for (k, v) in &m.headers {
            let p = format!("{pointer}/headers/{}", pointer_token(k));
            self.check_header_name(&p, k);
            if let Some(t) = self.template(&p, v, Place::Text, &m.params, Some(m)) {
                headers.push((k.clone(), t));
            }
        }
        let body = match &m.body {
            None => None,
            Some(b) => {
                let bp = format!("{pointer}/body");
                if m.verb == raw::Verb::Get {
                    self.err(&bp, "a GET method cannot have a body: set `verb: POST`");
                }
                match (&b.form, &b.json) {
                    (Some(form), None) => {
                        let mut fields = Vec::new();
                        for (k, v) in form {
                            let p = format!("{bp}/form/{}", pointer_token(k));
                            if let Some(t) = self.template(&p, v, Place::Text, &m.params, Some(m)) {
                                fields.push((k.clone(), t));
                            }
                        }
                        Some(Body::Form(fields))
                    }
                    (None, Some(json)) => Some(Body::Json(self.json_template(
                        &format!("{bp}/json"),
                        json,
                        m,
                    ))),
                    _ => {
                        self.err(&bp, "a body is either `form` or `json`");
                        None
                    }
                }
            }
        };
        if let Some(range) = &m.range {
            let rp = format!("{pointer}/range");
            self.range_param(
                &format!("{rp}/start"),
                &range.start,
                &m.params,
                ParamType::Date,
            );
            if let Some(p) = &range.period {
                self.range_param(&format!("{rp}/period"), p, &m.params, ParamType::Enum);
                if let Some(decl) = m.params.get(p) {
                    for v in &decl.values {
                        if super::values::parse_period(v).is_none() {
                            self.err(
                                &format!("{pointer}/params/{}/values", pointer_token(p)),
                                format!("`{v}` is not a period the range understands (1d, 7d, 30d, 1w, 1m, 3m, 6m, 1y, max, Nd, Nw, Nm, Ny)"),
                            );
                        }
                    }
                }
            }
            if let Some(e) = &range.end {
                self.range_param(&format!("{rp}/end"), e, &m.params, ParamType::Date);
            }
        }
        if let Some(w) = &m.window {
            if w.max_days == 0 {
                self.err(
                    &format!("{pointer}/window/max_days"),
                    "a window covers at least one day",
                );
            }
            if m.range.is_none() {
                self.err(
                    &format!("{pointer}/window"),
                    "a `window` splits the method's `range`, which is missing",
                );
            }
        }
        let pagination = m
            .pagination
            .as_ref()
            .and_then(|pg| self.pagination(&format!("{pointer}/pagination"), pg, m));
        let mut outputs = Vec::new();
        for (oname, o) in &m.output {
            let op = format!("{pointer}/output/{}", pointer_token(oname));
            if !schema::output_allowed(oname) {
                self.key_err(
                    &op,
                    format!(
                        "output `{oname}` is not allowed by schemas/sensors.schema.json (allowed: {})",
                        schema::output_names().join(", ")
                    ),
                );
            }
            if let Some(out) = self.output(oname, o, &op) {
                outputs.push(out);
            }
        }
        if m.output.is_empty() && m.raw.is_empty() && !self.helper_methods.iter().any(|h| h == name)
        {
            self.key_err(
                pointer,
                format!("method `{name}` has neither `output` nor `raw`"),
            );
        }
        let window_days = m.window.as_ref().map(|w| w.max_days);
        let history = m
            .history
            .as_ref()
            .and_then(|h| self.history(&format!("{pointer}/history"), h, m));
        Some(Method {
            name: name.to_owned(),
            description: method.description,
            verb: method.verb,
            path: path?,
            query,
            headers,
            body,
            params: method.params,
            vars: method.vars,
            range: method.range,
            window_days,
            history,
            pagination,
            outputs,
            raw: method.raw,
        })
    }

    /// Checks a method's `history` and compiles it; every mistake is reported, and
    /// `None` is returned when there was one.
    fn history(
        &mut self,
        pointer: &str,
        h: &raw::HistoryConfig,
        m: &raw::MethodConfig,
    ) -> Option<History> {
        let errors = self.problems.len();
        if m.range.is_none() {
            self.err(
                pointer,
                "`history` needs the method's `range`: sync and backfill ask for days",
            );
        }
        let max_days = self.history_max_days(pointer, h, m);
        let settle = self.history_settle(pointer, &h.settle);
        let earliest = match &h.earliest {
            None => None,
            Some(text) => {
                let day = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok();
                if day.is_none() {
                    self.err(
                        &format!("{pointer}/earliest"),
                        format!("`{text}` is not a date (YYYY-MM-DD)"),
                    );
                }
                day
            }
        };
        let method = pointer.strip_suffix("/history").unwrap_or(pointer);
        for (name, o) in &m.output {
            if time_fields(o).is_empty() {
                self.key_err(
                    &format!("{method}/output/{}", pointer_token(name)),
                    format!(
                        "`history` archives entries by their day: output `{name}` has no field of type date, datetime or instant"
                    ),
                );
            }
        }
        if self.problems.len() > errors {
            return None;
        }
        Some(History {
            max_days: max_days?,
            settle: settle?,
            deletions: h.deletions,
            earliest,
        })
    }

    /// The longest range one request of the history covers: declared, else the window's.
    fn history_max_days(
        &mut self,
        pointer: &str,
        h: &raw::HistoryConfig,
        m: &raw::MethodConfig,
    ) -> Option<u32> {
        let at = format!("{pointer}/max_days");
        let days = match (h.max_days, &m.window) {
            (Some(0), _) => {
                self.err(&at, "a request covers at least one day");
                return None;
            }
            (Some(days), Some(w)) if days > w.max_days => {
                self.err(
                    &at,
                    format!(
                        "{days} days is more than the method's window ({})",
                        w.max_days
                    ),
                );
                return None;
            }
            (Some(days), _) => days,
            (None, Some(w)) => w.max_days,
            (None, None) => {
                self.err(
                    pointer,
                    "`history` needs `max_days` (or a `window`): the longest range one request may cover",
                );
                return None;
            }
        };
        let range = m.range.as_ref()?;
        if days > range.max_days {
            self.err(
                &at,
                format!(
                    "{days} days is more than the range's longest (`range.max_days`, {})",
                    range.max_days
                ),
            );
            return None;
        }
        if range.end.is_none() && days > 1 {
            let from = if h.max_days.is_some() {
                String::new()
            } else {
                format!(" (it is the window's {days})")
            };
            self.err(
                &at,
                format!(
                    "without an end parameter in `range`, a request covers one day: `max_days` must be 1{from}"
                ),
            );
            return None;
        }
        Some(days)
    }

    /// How long a day's data may still change, at most a year.
    fn history_settle(&mut self, pointer: &str, text: &str) -> Option<chrono::Duration> {
        let at = format!("{pointer}/settle");
        match super::values::parse_span(text) {
            None => {
                self.err(
                    &at,
                    format!("`{text}` is not a span of time (`90m`, `6h`, `2d`)"),
                );
                None
            }
            Some(span) if span > chrono::Duration::days(MAX_SETTLE_DAYS) => {
                self.err(
                    &at,
                    format!(
                        "`{text}` is more than {MAX_SETTLE_DAYS} days: a day that may still change a year after it ended is never settled"
                    ),
                );
                None
            }
            Some(span) => Some(span),
        }
    }

    fn range_param(
        &mut self,
        pointer: &str,
        name: &str,
        params: &IndexMap<String, raw::ParamConfig>,
        kind: ParamType,
    ) {
        match params.get(name) {
            None => self.err(pointer, format!("`{name}` is not a declared parameter")),
            Some(p) if p.kind != kind => self.err(
                pointer,
                format!("parameter `{name}` must be of type {}", type_name(kind)),
            ),
            Some(_) => {}
        }
    }

    fn json_template(&mut self, pointer: &str, v: &Value, m: &raw::MethodConfig) -> JsonTpl {
        match v {
            Value::String(s) => match self.template(pointer, s, Place::Text, &m.params, Some(m)) {
                Some(t) => JsonTpl::Text(t),
                None => JsonTpl::Literal(Value::Null),
            },
            Value::Array(items) => JsonTpl::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| self.json_template(&format!("{pointer}/{i}"), x, m))
                    .collect(),
            ),
            Value::Object(map) => JsonTpl::Object(
                map.iter()
                    .map(|(k, x)| {
                        let p = format!("{pointer}/{}", pointer_token(k));
                        (k.clone(), self.json_template(&p, x, m))
                    })
                    .collect(),
            ),
            other => JsonTpl::Literal(other.clone()),
        }
    }

    fn params(&mut self, params: &IndexMap<String, raw::ParamConfig>, pointer: &str) {
        for (name, p) in params {
            let pp = format!("{pointer}/params/{}", pointer_token(name));
            if !is_identifier(name) {
                self.key_err(
                    &pp,
                    format!("parameter name `{name}` must be letters, digits and `_`"),
                );
            }
            if RESERVED_PARAMS.contains(&name.as_str()) || CONTEXT_ROOTS.contains(&name.as_str()) {
                self.key_err(
                    &pp,
                    format!("`{name}` is reserved and cannot be a parameter"),
                );
            }
            if p.kind == ParamType::Enum && p.values.is_empty() {
                self.err(&pp, "an enum parameter needs `values`");
            }
            if p.kind != ParamType::Enum && !p.values.is_empty() {
                self.err(
                    &format!("{pp}/values"),
                    "`values` is only for enum parameters",
                );
            }
            if p.literal_today && p.kind != ParamType::Date {
                self.err(
                    &format!("{pp}/literal_today"),
                    "`literal_today` is only for dates",
                );
            }
            if (p.min.is_some() || p.max.is_some()) && p.kind != ParamType::Integer {
                self.err(&pp, "`min` and `max` are only for integers");
            }
            if let Some(default) = &p.default {
                if let Err(e) = super::values::check_value(name, p, default) {
                    self.err(&format!("{pp}/default"), format!("bad default: {e}"));
                }
            }
            for (list, what) in [
                (&p.conflicts, "conflicts"),
                (&p.requires, "requires"),
                (&p.required_unless, "required_unless"),
            ] {
                for (i, other) in list.iter().enumerate() {
                    if !params.contains_key(other) {
                        self.err(
                            &format!("{pp}/{what}/{i}"),
                            format!("`{other}` is not a declared parameter"),
                        );
                    } else if other == name {
                        self.err(
                            &format!("{pp}/{what}/{i}"),
                            "a parameter cannot name itself",
                        );
                    }
                }
            }
        }
    }

    fn pagination(
        &mut self,
        pointer: &str,
        pg: &raw::PaginationConfig,
        m: &raw::MethodConfig,
    ) -> Option<Pagination> {
        use raw::PaginationKind::*;
        let need = |c: &mut Self, field: &str, present: bool| {
            if !present {
                c.err(
                    pointer,
                    format!("{:?} pagination needs `{field}`", pg.kind).to_lowercase(),
                );
            }
        };
        match pg.kind {
            Cursor => need(
                self,
                "next` or `next_header",
                pg.next.is_some() != pg.next_header.is_some(),
            ),
            OffsetFlag => {
                need(self, "next", pg.next.is_some());
                need(self, "offset", pg.offset.is_some());
            }
            Page => need(self, "records", pg.records.is_some()),
            Link => {}
        }
        if pg.place == raw::ParamPlace::Body
            && m.body.as_ref().and_then(|b| b.form.as_ref()).is_none()
        {
            self.err(
                pointer,
                "a pagination parameter `in: body` needs a form body",
            );
        }
        if pg.place == raw::ParamPlace::Json
            && m.body.as_ref().and_then(|b| b.json.as_ref()).is_none()
        {
            self.err(
                pointer,
                "a pagination parameter `in: json` needs a JSON body",
            );
        }
        if pg.place == raw::ParamPlace::Header
            && http::HeaderName::from_bytes(pg.param.as_bytes()).is_err()
        {
            self.err(
                &format!("{pointer}/param"),
                format!("`{}` is not a header name", pg.param),
            );
        }
        if let Some(h) = &pg.next_header
            && http::HeaderName::from_bytes(h.as_bytes()).is_err()
        {
            self.err(
                &format!("{pointer}/next_header"),
                format!("`{h}` is not a header name"),
            );
        }
        if pg.max_pages == 0 {
            self.err(&format!("{pointer}/max_pages"), "at least one page");
        }
        let next = match &pg.next {
            Some(s) => Some(self.selector(&format!("{pointer}/next"), s)?),
            None => None,
        };
        let offset = match &pg.offset {
            Some(s) => Some(self.selector(&format!("{pointer}/offset"), s)?),
            None => None,
        };
        let records = match &pg.records {
            Some(s) => Some(self.selector(&format!("{pointer}/records"), s)?),
            None => None,
        };
        Some(Pagination {
            kind: pg.kind,
            param: pg.param.clone(),
            place: pg.place,
            next,
            offset,
            records,
            next_header: pg.next_header.as_ref().map(|h| h.to_ascii_lowercase()),
            size_param: pg.size_param.clone(),
            size: pg.size,
            first: pg.first,
            max_pages: pg.max_pages,
        })
    }

    /// Methods that write one output must give its numbers in one unit: a field that one
    /// method converts into the user's unit (`unit:`) and another leaves as the provider
    /// sent it would mix units in one list (a fetch of both concatenates them).
    fn same_units(&mut self, methods: &IndexMap<String, Option<raw::MethodConfig>>) {
        let mut seen: IndexMap<(String, String), (String, Option<raw::Quantity>)> = IndexMap::new();
        for (mname, m) in methods {
            let Some(m) = m else { continue };
            for (oname, o) in &m.output {
                for (fname, f) in &o.fields {
                    let numeric =
                        matches!(f.kind, raw::FieldType::Number | raw::FieldType::Integer)
                            || f.unit.is_some();
                    if !numeric {
                        continue;
                    }
                    let quantity = f.unit.as_ref().map(|u| u.quantity);
                    let key = (oname.clone(), fname.clone());
                    match seen.get(&key) {
                        None => {
                            seen.insert(key, (mname.clone(), quantity));
                        }
                        Some((first, q)) if *q != quantity => {
                            let pointer = format!(
                                "/methods/{}/output/{}/fields/{}",
                                pointer_token(mname),
                                pointer_token(oname),
                                pointer_token(fname)
                            );
                            let what = |q: &Option<raw::Quantity>| match q {
                                Some(q) => format!("the user's unit of {q:?}").to_lowercase(),
                                None => "the provider's unit".to_owned(),
                            };
                            let message = format!(
                                "methods `{first}` and `{mname}` both write `{oname}`, but `{first}` gives `{fname}` in {} and `{mname}` in {}: entries would mix units",
                                what(q),
                                what(&quantity)
                            );
                            self.err(&pointer, message);
                        }
                        Some(_) => {}
                    }
                }
            }
        }
    }

    /// The indexes of the named fields of an output (`sort_by`, `sum_by`).
    fn field_list(
        &mut self,
        o: &raw::OutputConfig,
        names: Option<&raw::SortBy>,
        pointer: &str,
    ) -> Vec<usize> {
        let mut indexes = Vec::new();
        for s in names.iter().flat_map(|s| s.names()) {
            match o.fields.get_index_of(s) {
                Some(i) => indexes.push(i),
                None => self.err(pointer, format!("`{s}` is not a field of this output")),
            }
        }
        indexes
    }

    fn output(&mut self, name: &str, o: &raw::OutputConfig, pointer: &str) -> Option<Output> {
        let each = self.selector(&format!("{pointer}/each"), &o.each);
        let explode = match &o.explode {
            Some(e) => Some(self.selector(&format!("{pointer}/explode"), e)?),
            None => None,
        };
        let mut filters = Vec::new();
        for (i, f) in o.filters.iter().enumerate() {
            if let Some(c) = self.condition(&format!("{pointer}/where/{i}"), f) {
                filters.push(c);
            }
        }
        let mut fields = Vec::new();
        for (fname, f) in &o.fields {
            let fp = format!("{pointer}/fields/{}", pointer_token(fname));
            if let Some(field) = self.field(fname, f, &fp, explode.is_some()) {
                fields.push(field);
            }
        }
        let sort_by = self.field_list(o, o.sort_by.as_ref(), &format!("{pointer}/sort_by"));
        let sum_by = self.field_list(o, o.sum_by.as_ref(), &format!("{pointer}/sum_by"));
        let time = time_fields(o);
        let identity = match &o.identity {
            Some(names) if names.names().is_empty() => {
                self.err(
                    &format!("{pointer}/identity"),
                    "`identity` names no field: leave it out for the entry's time fields and `source`",
                );
                Vec::new()
            }
            Some(names) => self.field_list(o, Some(names), &format!("{pointer}/identity")),
            None => {
                let mut fields = time.clone();
                fields.extend(o.fields.get_index_of("source"));
                fields
            }
        };
        let declared: Vec<schema::DeclaredField<'_>> = o
            .fields
            .iter()
            .map(|(fname, f)| schema::DeclaredField {
                name: fname,
                kind: field_kind(f),
                always: f.required || f.constant.is_some() || f.unit_name.is_some(),
            })
            .collect();
        if let Some(problem) = schema::check_output_fields(name, &declared, o.single) {
            self.err(&format!("{pointer}/fields"), problem);
        }
        Some(Output {
            name: name.to_owned(),
            each: each?,
            explode,
            filters,
            fields,
            sort_by,
            sum_by,
            single: o.single,
            identity,
            time,
        })
    }

    fn field(
        &mut self,
        name: &str,
        f: &raw::FieldConfig,
        pointer: &str,
        exploded: bool,
    ) -> Option<Field> {
        use raw::{FieldType as T, SourceFormat as S};
        let sources = [
            f.path.is_some(),
            f.parent.is_some(),
            f.constant.is_some(),
            f.unit_name.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if sources != 1 {
            self.err(
                pointer,
                format!(
                    "field `{name}` needs exactly one of `path`, `parent`, `const`, `unit_name`"
                ),
            );
            return None;
        }
        if f.parent.is_some() && !exploded {
            self.err(
                &format!("{pointer}/parent"),
                "`parent` is only for outputs with `explode`",
            );
        }
        let numeric =
            f.scale.is_some() || f.exponent.is_some() || f.unit.is_some() || f.round.is_some();
        if f.map.as_ref().is_some_and(|m| m.is_empty()) {
            self.err(&format!("{pointer}/map"), "`map` needs at least one value");
        }
        if f.constant.is_some() && (f.map.is_some() || f.default.is_some()) {
            self.err(pointer, "a `const` field takes neither `map` nor `default`");
        }
        if numeric && !matches!(f.kind, T::Number | T::Integer | T::Auto) {
            self.err(
                pointer,
                "`scale`, `exponent`, `unit` and `round` need a numeric field",
            );
        }
        if let Some(from) = f.from {
            let fits = match from {
                S::CivilDate => matches!(f.kind, T::Date),
                S::CivilTime => matches!(f.kind, T::Time),
                S::EpochS | S::EpochMs | S::Rfc3339 | S::LocalDatetime if f.until.is_some() => {
                    matches!(f.kind, T::Number | T::Integer)
                }
                S::EpochS | S::EpochMs | S::Rfc3339 | S::LocalDatetime => matches!(
                    f.kind,
                    T::Date | T::Time | T::Datetime | T::Instant | T::Offset
                ),
                S::Duration => matches!(f.kind, T::Number | T::Integer | T::Auto),
            };
            if !fits {
                self.err(
                    &format!("{pointer}/from"),
                    format!("`from: {from:?}` cannot give type {:?}", f.kind).to_lowercase(),
                );
            }
        }
        let source = if let Some(p) = &f.path {
            FieldSource::Row(self.selector(&format!("{pointer}/path"), p)?)
        } else if let Some(p) = &f.parent {
            FieldSource::Parent(self.selector(&format!("{pointer}/parent"), p)?)
        } else if let Some(q) = f.unit_name {
            FieldSource::UnitName(q)
        } else {
            FieldSource::Const(f.constant.clone().unwrap_or(Value::Null))
        };
        let exponent = match &f.exponent {
            Some(e) => Some(self.selector(&format!("{pointer}/exponent"), e)?),
            None => None,
        };
        let offset = match &f.offset {
            Some(o) => Some(self.selector(&format!("{pointer}/offset"), o)?),
            None => None,
        };
        if f.offset.is_some()
            && !matches!(
                f.from,
                Some(S::EpochS | S::EpochMs | S::Rfc3339 | S::LocalDatetime)
            )
        {
            self.err(
                &format!("{pointer}/offset"),
                "`offset` needs `from: rfc3339`, `local_datetime`, `epoch_s` or `epoch_ms`",
            );
        }
        if matches!(f.kind, T::Instant | T::Offset | T::Datetime) && f.from.is_none() {
            self.err(
                &format!("{pointer}/type"),
                format!(
                    "type {} needs `from` (rfc3339, local_datetime, epoch_s or epoch_ms)",
                    format!("{:?}", f.kind).to_lowercase()
                ),
            );
        }
        let until = match &f.until {
            Some(u) => Some(self.selector(&format!("{pointer}/until"), u)?),
            None => None,
        };
        if f.until.is_some()
            && !(matches!(
                f.from,
                Some(S::EpochS | S::EpochMs | S::Rfc3339 | S::LocalDatetime)
            ) && matches!(f.kind, T::Number | T::Integer))
        {
            self.err(
                &format!("{pointer}/until"),
                "`until` needs `from` an instant or local date-time and type number or integer",
            );
        }
        let mut add = Vec::new();
        for (i, a) in f.add.iter().enumerate() {
            add.push(self.selector(&format!("{pointer}/add/{i}"), a)?);
        }
        if !f.add.is_empty() && !matches!(f.kind, T::Number | T::Integer) {
            self.err(
                &format!("{pointer}/add"),
                "`add` needs type number or integer",
            );
        }
        let unit_path = match f.unit.as_ref().and_then(|u| u.from_path.as_ref()) {
            Some(p) => Some(self.selector(&format!("{pointer}/unit/from_path"), p)?),
            None => None,
        };
        if let Some(u) = &f.unit {
            if u.quantity.base_factor(u.from).is_none() {
                self.err(
                    &format!("{pointer}/unit"),
                    format!("unit {:?} does not measure {:?}", u.from, u.quantity).to_lowercase(),
                );
            }
        }
        Some(Field {
            name: name.to_owned(),
            source,
            from: f.from,
            offset,
            offset_unit: f.offset_unit,
            until,
            add,
            map: f.map.clone(),
            default: f.default.clone(),
            kind: f.kind,
            scale: f.scale,
            exponent,
            unit: f.unit.clone(),
            unit_path,
            round: f.round,
            required: f.required,
        })
    }
}

/// What a field gives, for the check against the sensor schema.
/// The fields that place an output's entries in time: the first field of type `date`,
/// `datetime` or `instant`, then, after a date, the first field of type `time`.
fn time_fields(o: &raw::OutputConfig) -> Vec<usize> {
    use raw::FieldType as T;
    let kinds: Vec<T> = o.fields.values().map(|f| f.kind).collect();
    let Some(first) = kinds
        .iter()
        .position(|k| matches!(k, T::Date | T::Datetime | T::Instant))
    else {
        return Vec::new();
    };
    let mut fields = vec![first];
    if kinds[first] == T::Date {
        fields.extend(kinds.iter().position(|k| *k == T::Time));
    }
    fields
}

fn field_kind(f: &raw::FieldConfig) -> schema::FieldKind {
    use raw::FieldType as T;
    use schema::FieldKind as K;
    if f.unit_name.is_some() {
        return K::Text;
    }
    match f.kind {
        T::Auto => match &f.constant {
            Some(Value::String(_)) => K::Text,
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => K::Integer,
            Some(Value::Number(_)) => K::Number,
            _ => K::Any,
        },
        T::Number => K::Number,
        T::Integer => K::Integer,
        T::String => K::Text,
        T::Date => K::Date,
        T::Time => K::Time,
        T::Datetime => K::DateTime,
        T::Instant => K::Instant,
        T::Offset => K::Offset,
    }
}

/// The template text outside `{{...}}` expressions.
fn literal_text(source: &str) -> String {
    let mut out = String::new();
    let mut rest = source;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        match rest[start..].find("}}") {
            Some(end) => rest = &rest[start + end + 2..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

fn type_name(t: ParamType) -> &'static str {
    match t {
        ParamType::String => "string",
        ParamType::PathSegment => "path_segment",
        ParamType::Path => "path",
        ParamType::Date => "date",
        ParamType::Time => "time",
        ParamType::Enum => "enum",
        ParamType::Integer => "integer",
        ParamType::Boolean => "boolean",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the typed reading accepts `value`, checked against what the schema and
    /// serde's own reading say: it must accept exactly what both accept.
    fn typed_reading_agrees(value: &Value) -> Result<bool, String> {
        let typed = strict::from_value::<raw::ProviderFile>(value);
        let schema = validator().is_valid(value);
        let serde = serde_json::from_value::<raw::ProviderFile>(value.clone());
        // What it reads is what serde reads.
        if let (Ok(typed), Ok(serde)) = (&typed, &serde) {
            let (typed, serde) = (format!("{typed:?}"), format!("{serde:?}"));
            if typed != serde {
                return Err(format!("typed reading {typed}\nserde {serde}"));
            }
        }
        let (typed, serde) = (typed.is_ok(), serde.is_ok());
        if typed == (schema && serde) {
            Ok(typed)
        } else {
            Err(format!(
                "typed reading {typed}, schema {schema}, serde {serde} for {value}"
            ))
        }
    }

    /// The JSON Pointers of every node of `value`.
    fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
        match value {
            Value::Object(m) => {
                for (k, v) in m {
                    pointers(v, format!("{at}/{}", pointer_token(k)), out);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    pointers(v, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
        out.push(at);
    }

    /// Values of other kinds in place of `node`: each kind of scalar, integers beyond
    /// the ranges of the format's types, names of enum variants, empty and wrapped
    /// collections, an object as the list of its values (which serde reads as a
    /// struct) and a name as a one-key object (which serde reads as an enum variant).
    fn replacements(node: &Value) -> Vec<Value> {
        let mut out = vec![
            Value::Null,
            Value::Bool(true),
            serde_json::json!(0),
            serde_json::json!(-1),
            serde_json::json!(1.5),
            serde_json::json!(2.0),
            serde_json::json!(70000),
            serde_json::json!(1u64 << 40),
            serde_json::json!(u64::MAX),
            serde_json::json!("x"),
            serde_json::json!("basic"),
            serde_json::json!("GET"),
            serde_json::json!("date"),
            serde_json::json!([]),
            serde_json::json!({}),
            serde_json::json!([node]),
            serde_json::json!({ "x": node }),
        ];
        match node {
            Value::Object(m) => {
                out.push(Value::Array(m.values().cloned().collect()));
                let mut extra = m.clone();
                extra.insert("unknown_key".into(), Value::Null);
                out.push(Value::Object(extra));
            }
            Value::String(s) => out.push(serde_json::json!({ s.as_str(): null })),
            _ => {}
        }
        out
    }

    /// A pointer with list indexes and names the schema does not define (methods,
    /// parameters, outputs, map keys) left out: the place in the format it is at.
    fn shape(pointer: &str, known: &std::collections::HashSet<String>) -> String {
        pointer
            .split('/')
            .map(|t| if known.contains(t) { t } else { "*" })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The property names the provider schema defines.
    fn schema_names() -> std::collections::HashSet<String> {
        fn names(node: &Value, out: &mut std::collections::HashSet<String>) {
            match node {
                Value::Object(m) => {
                    if let Some(Value::Object(props)) = m.get("properties") {
                        out.extend(props.keys().cloned());
                    }
                    m.values().for_each(|v| names(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| names(v, out)),
                _ => {}
            }
        }
        let mut known = std::collections::HashSet::new();
        names(super::super::model::provider_schema(), &mut known);
        known
    }

    fn with_node(doc: &Value, pointer: &str, node: Option<Value>) -> Value {
        let mut doc = doc.clone();
        match node {
            Some(node) => {
                if let Some(slot) = doc.pointer_mut(pointer) {
                    *slot = node;
                }
            }
            None => {
                let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
                let key = key.replace("~1", "/").replace("~0", "~");
                if let Some(Value::Object(m)) = doc.pointer_mut(parent) {
                    m.shift_remove(&key);
                }
            }
        }
        doc
    }

    fn shipped_providers() -> Vec<(std::path::PathBuf, Value)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("providers");
        let files = super::super::provider_files(&dir).unwrap();
        assert!(files.len() >= 3, "{files:?}");
        files
            .into_iter()
            .map(|f| {
                let doc = yaml::parse(&yaml::read_file(&f).unwrap()).unwrap();
                (f, doc.value)
            })
            .collect()
    }

    #[test]
    fn the_typed_reading_accepts_what_the_schema_accepts() {
        let known = schema_names();
        for (file, doc) in shipped_providers() {
            // The shipped files are read without the schema validator.
            assert_eq!(typed_reading_agrees(&doc), Ok(true), "{}", file.display());
            let mut all = Vec::new();
            pointers(&doc, String::new(), &mut all);
            // One node per place in the format (the shipped methods repeat their shapes).
            let mut shapes = std::collections::HashSet::new();
            all.retain(|p| !p.is_empty() && shapes.insert(shape(p, &known)));
            let (mut accepted, mut refused) = (0, 0);
            for pointer in &all {
                let node = doc.pointer(pointer).unwrap();
                let changed = std::iter::once(None).chain(replacements(node).into_iter().map(Some));
                for replacement in changed {
                    let mutated = with_node(&doc, pointer, replacement);
                    match typed_reading_agrees(&mutated) {
                        Ok(true) => accepted += 1,
                        Ok(false) => refused += 1,
                        Err(e) => panic!("{} at {pointer}: {e}", file.display()),
                    }
                }
            }
            // Both answers occur: the comparison covers both directions.
            assert!(accepted > 100 && refused > 100, "{accepted} {refused}");
        }
    }
}
