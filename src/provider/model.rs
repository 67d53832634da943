//! The compiled form of a provider file, as the engine runs it, and the problems a file
//! can have. [`super::compile`] builds it; nothing here reads a file.

use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;

use indexmap::IndexMap;
use serde_json::Value;
use url::Url;

use crate::provider::raw;
use crate::provider::selector::Selector;
use crate::provider::template::{Templates, Tpl};

/// A problem in a provider file, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// All problems of one or more files.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// URL overrides for one plugin (from the config file), applied before compiling.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlOverrides {
    /// Replaces `auth.authorize_url`.
    #[serde(default)]
    pub authorize_url: Option<String>,
    /// Replaces `auth.token_url`.
    #[serde(default)]
    pub token_url: Option<String>,
    /// Replaces `auth.revoke_url`.
    #[serde(default)]
    pub revoke_url: Option<String>,
    /// Replaces `api.base_url`.
    #[serde(default)]
    pub base_url: Option<String>,
}

/// A compiled provider.
#[derive(Debug, Clone)]
pub struct Provider {
    /// Machine name.
    pub name: String,
    /// Title for people.
    pub title: Option<String>,
    /// Where it came from.
    pub source: PathBuf,
    /// Set when the API is switched off.
    pub retired: Option<raw::RetiredConfig>,
    /// Methods called when none are asked for.
    pub default_methods: Vec<String>,
    /// OAuth2 dialect.
    pub auth: Auth,
    /// API dialect.
    pub api: Api,
    /// Methods by name, in file order.
    pub methods: IndexMap<String, Method>,
    /// The compiled templates.
    pub templates: Templates,
    /// The answer headers pagination reads (lower case), kept with each answer.
    pub answer_headers: Vec<String>,
}

/// OAuth2 settings with URLs parsed.
#[derive(Debug, Clone)]
pub struct Auth {
    /// Consent page.
    pub authorize_url: Url,
    /// Token endpoint.
    pub token_url: Url,
    /// Refresh endpoint (the token endpoint unless set).
    pub refresh_url: Url,
    /// Revocation endpoint.
    pub revoke_url: Option<Url>,
    /// The rest, as written.
    pub config: raw::AuthConfig,
    /// Token response locations.
    pub token: TokenFields,
}

/// Compiled token-response locations.
#[derive(Debug, Clone)]
pub struct TokenFields {
    /// Envelope root.
    pub root: Option<Selector>,
    /// Success test.
    pub success: Option<Condition>,
    /// Error message location.
    pub error_message: Option<Selector>,
    /// OAuth error code location.
    pub error_code: Selector,
    /// Access token.
    pub access_token: Selector,
    /// Refresh token.
    pub refresh_token: Selector,
    /// Relative lifetime.
    pub expires_in: Selector,
    /// Absolute expiry.
    pub expires_at: Selector,
    /// Granted scopes.
    pub scope: Selector,
    /// Provider's user id.
    pub provider_user_id: Option<Selector>,
}

/// API settings with URLs and rules compiled.
#[derive(Debug, Clone)]
pub struct Api {
    /// Base URL of every method path (no trailing slash).
    pub base_url: Url,
    /// Common headers.
    pub headers: Vec<(String, Tpl)>,
    /// Unit system when none is configured.
    pub default_system: String,
    /// Timeout, retries, limits and error rules as written.
    pub config: raw::ApiConfig,
    /// Compiled error rules.
    pub errors: Vec<ErrorRule>,
    /// Compiled envelope.
    pub envelope: Option<Envelope>,
    /// Other hosts of a connection, by name (origins only).
    pub hosts: IndexMap<String, Url>,
    /// The method and path of the provider's record of the user's zone.
    pub time_zone: Option<(String, Selector)>,
}

impl Provider {
    /// The provider as a connection on the host named `host` sees it: every URL on
    /// `base_url`'s origin moved to that host's. The provider as it is for no host, a
    /// host it does not declare (settings are checked where they are stored), or the
    /// host it is on already.
    pub fn at_host(&self, host: Option<&str>) -> std::borrow::Cow<'_, Provider> {
        use std::borrow::Cow;
        let Some(target) = host.and_then(|h| self.api.hosts.get(h)) else {
            return Cow::Borrowed(self);
        };
        let home = self.api.base_url.origin();
        if target.origin() == home {
            return Cow::Borrowed(self);
        }
        let mut moved = self.clone();
        let shift = |url: &mut Url| {
            if url.origin() == home {
                let _ = url.set_scheme(target.scheme());
                let _ = url.set_host(target.host_str());
                let _ = url.set_port(target.port());
            }
        };
        shift(&mut moved.auth.authorize_url);
        shift(&mut moved.auth.token_url);
        shift(&mut moved.auth.refresh_url);
        if let Some(revoke) = moved.auth.revoke_url.as_mut() {
            shift(revoke);
        }
        shift(&mut moved.api.base_url);
        Cow::Owned(moved)
    }
}

/// A compiled error rule.
#[derive(Debug, Clone)]
pub struct ErrorRule {
    /// Statuses it applies to (any when empty).
    pub status: Vec<u16>,
    /// Body condition.
    pub when: Option<Condition>,
    /// Resulting kind.
    pub kind: raw::ErrorKind,
    /// Message location.
    pub message: Option<Selector>,
}

/// A compiled envelope.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Status location.
    pub status: Selector,
    /// Success values.
    pub ok: Vec<Value>,
    /// Known failure kinds by status text.
    pub kinds: IndexMap<String, raw::ErrorKind>,
    /// Message location.
    pub message: Option<Selector>,
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub struct Condition {
    /// Value location.
    pub path: Selector,
    /// Equality test.
    pub equals: Option<Value>,
    /// Membership test.
    pub one_of: Option<Vec<Value>>,
    /// Presence test.
    pub exists: Option<bool>,
    /// Order tests: the value against each bound.
    pub bounds: Vec<(Bound, Value)>,
}

/// How a value must compare with a bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Greater than.
    Gt,
    /// At least.
    Gte,
    /// Less than.
    Lt,
    /// At most.
    Lte,
}

impl Condition {
    /// Whether the condition holds for `value`.
    pub fn holds(&self, value: &Value) -> bool {
        self.holds_for(self.path.first(value))
    }

    /// Whether the condition holds for what its path found (`None`: nothing).
    pub fn holds_for(&self, found: Option<&Value>) -> bool {
        if let Some(exists) = self.exists {
            if found.is_some() != exists {
                return false;
            }
        }
        if let Some(expected) = &self.equals {
            if !found.is_some_and(|v| loosely_equal(v, expected)) {
                return false;
            }
        }
        if let Some(options) = &self.one_of {
            if !found.is_some_and(|v| options.iter().any(|o| loosely_equal(v, o))) {
                return false;
            }
        }
        self.bounds.iter().all(|(bound, limit)| {
            found
                .and_then(|v| compare(v, limit))
                .is_some_and(|order| match bound {
                    Bound::Gt => order.is_gt(),
                    Bound::Gte => order.is_ge(),
                    Bound::Lt => order.is_lt(),
                    Bound::Lte => order.is_le(),
                })
        })
    }

    /// Whether anything beyond presence is tested (the found value is needed).
    pub fn needs_value(&self) -> bool {
        self.equals.is_some() || self.one_of.is_some() || !self.bounds.is_empty()
    }
}

/// Orders two values: numbers (or numeric text) by value, other text as text (ISO
/// dates and times sort in time order); anything else does not compare.
pub fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return x.partial_cmp(&y);
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Equality that treats `1`, `1.0` and `"1"` alike, since providers differ in how they type numbers.
pub fn loosely_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::String(s), Value::Number(n)) | (Value::Number(n), Value::String(s)) => {
            s.parse::<f64>().ok() == n.as_f64()
        }
        _ => a == b,
    }
}

/// A compiled method.
#[derive(Debug, Clone)]
pub struct Method {
    /// Its name.
    pub name: String,
    /// What it returns.
    pub description: Option<String>,
    /// HTTP verb.
    pub verb: raw::Verb,
    /// Path template.
    pub path: Tpl,
    /// Query templates.
    pub query: Vec<(String, Tpl)>,
    /// Header templates.
    pub headers: Vec<(String, Tpl)>,
    /// Body templates.
    pub body: Option<Body>,
    /// Parameters.
    pub params: IndexMap<String, raw::ParamConfig>,
    /// Constants.
    pub vars: IndexMap<String, String>,
    /// Date range.
    pub range: Option<raw::RangeConfig>,
    /// Longest window in days.
    pub window_days: Option<u32>,
    /// How the method's past is synced and archived; `None`: fetched whole each time.
    pub history: Option<History>,
    /// Pagination.
    pub pagination: Option<Pagination>,
    /// Outputs.
    pub outputs: Vec<Output>,
    /// Raw keys offered for the old layout.
    pub raw: Vec<String>,
}

/// A compiled body.
#[derive(Debug, Clone)]
pub enum Body {
    /// Form fields.
    Form(Vec<(String, Tpl)>),
    /// A JSON document with template leaves.
    Json(JsonTpl),
}

/// A JSON document whose string leaves are templates.
#[derive(Debug, Clone)]
pub enum JsonTpl {
    /// A value without templates.
    Literal(Value),
    /// A string template.
    Text(Tpl),
    /// An array.
    Array(Vec<JsonTpl>),
    /// An object.
    Object(Vec<(String, JsonTpl)>),
}

/// Compiled pagination.
#[derive(Debug, Clone)]
pub struct Pagination {
    /// Style.
    pub kind: raw::PaginationKind,
    /// Request parameter.
    pub param: String,
    /// Where it goes.
    pub place: raw::ParamPlace,
    /// Next token or `more` flag.
    pub next: Option<Selector>,
    /// The answer header holding the next token (lower case).
    pub next_header: Option<String>,
    /// Next offset.
    pub offset: Option<Selector>,
    /// Records counted for short pages.
    pub records: Option<Selector>,
    /// Page-size parameter.
    pub size_param: Option<String>,
    /// Page size.
    pub size: Option<u32>,
    /// First page number.
    pub first: u32,
    /// Loop guard.
    pub max_pages: u32,
}

/// A compiled output.
#[derive(Debug, Clone)]
pub struct Output {
    /// Sensor key.
    pub name: String,
    /// Records.
    pub each: Selector,
    /// Child rows.
    pub explode: Option<Selector>,
    /// Row filters.
    pub filters: Vec<Condition>,
    /// Fields in order.
    pub fields: Vec<Field>,
    /// Index into `fields` to sort by.
    /// Fields whose equal values merge entries (numbers summed).
    pub sum_by: Vec<usize>,
    pub sort_by: Vec<usize>,
    /// One object instead of a list.
    pub single: bool,
    /// The fields whose values identify an entry in the archive (never empty for an
    /// output with time fields: the declared `identity`, else the time fields and a
    /// `source` field when there is one).
    pub identity: Vec<usize>,
    /// The fields that place an entry in time, in order: the first field of type
    /// `date`, `datetime` or `instant`, then a `time` field when the first is a date.
    /// Empty for account data (profile, devices), which the archive keeps whole.
    pub time: Vec<usize>,
}

/// How a method's history is synced and archived (`history:` in the file).
#[derive(Debug, Clone)]
pub struct History {
    /// Longest range one request covers, in days.
    pub max_days: u32,
    /// How long after a day ends its data may still change.
    pub settle: chrono::Duration,
    /// Whether a complete, non-empty answer for a window lists every entry of it.
    pub deletions: bool,
    /// The earliest day backfill asks for.
    pub earliest: Option<chrono::NaiveDate>,
}

/// Where a field's value comes from.
#[derive(Debug, Clone)]
pub enum FieldSource {
    /// A path in the row.
    Row(Selector),
    /// A path in the parent record.
    Parent(Selector),
    /// A constant.
    Const(Value),
    /// The name of the user's unit for a quantity.
    UnitName(raw::Quantity),
}

/// A compiled field.
#[derive(Debug, Clone)]
pub struct Field {
    /// Key in the entry.
    pub name: String,
    /// Source.
    pub source: FieldSource,
    /// How the source is read.
    pub from: Option<raw::SourceFormat>,
    /// Where the record's offset or zone is (row, then parent, then the answer).
    pub offset: Option<Selector>,
    /// The unit of a numeric offset.
    pub offset_unit: raw::OffsetUnit,
    /// A second time: the field is the seconds from the first to it.
    pub until: Option<Selector>,
    /// Numbers added to the value.
    pub add: Vec<Selector>,
    /// Values replacing found values, by their text.
    pub map: Option<IndexMap<String, Value>>,
    /// The value when nothing is found, or the map lacks the found value.
    pub default: Option<Value>,
    /// Result type.
    pub kind: raw::FieldType,
    /// Factor.
    pub scale: Option<f64>,
    /// Power-of-ten location.
    pub exponent: Option<Selector>,
    /// Unit conversion.
    pub unit: Option<raw::UnitConfig>,
    /// Where a record names its unit, for a conversion from either unit.
    pub unit_path: Option<Selector>,
    /// Decimals.
    pub round: Option<u32>,
    /// Drop the entry when missing.
    pub required: bool,
}

/// The JSON Schema of the provider format, generated from [`raw::ProviderFile`].
pub fn provider_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let schema = schemars::schema_for!(raw::ProviderFile);
        serde_json::to_value(schema).unwrap_or(Value::Null)
    })
}

/// The schema as committed in `schemas/provider.schema.json` (pretty, trailing newline).
pub fn provider_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(provider_schema()).unwrap_or_default();
    text.push('\n');
    text
}
