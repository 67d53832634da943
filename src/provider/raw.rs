//! The provider file as written: serde types that only describe the YAML.
//!
//! These types are the single source of truth for the provider format. The JSON
//! Schema in `schemas/provider.schema.json` is generated from them (a test keeps the
//! committed copy in sync), the loader validates every file against that schema
//! first (so all structural errors are reported at once, with line and column) and
//! only then deserializes. Semantic checks and parsing of URLs, templates and
//! JSONPaths happen in [`super::compile`].

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

/// One provider: how to authorize, how to call its API, and how to map answers.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderFile {
    /// Machine name of the provider (`fitbit`, `google-health`); also the default plugin name.
    pub name: String,
    /// Human-readable title.
    #[serde(default)]
    pub title: Option<String>,
    /// Where the provider documents its API.
    #[serde(default)]
    pub docs_url: Option<String>,
    /// Set when the provider's API has been switched off.
    #[serde(default)]
    pub retired: Option<RetiredConfig>,
    /// Methods called when none are asked for (the old plugin used `get_bodyweight`).
    #[serde(default)]
    pub default_methods: Vec<String>,
    /// OAuth2 endpoints and dialect.
    pub auth: AuthConfig,
    /// How API calls are made and how their failures are recognised.
    pub api: ApiConfig,
    /// The read methods, by name (`get_bodyweight`, ...).
    pub methods: IndexMap<String, MethodConfig>,
}

/// Marks a provider whose API no longer answers.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetiredConfig {
    /// The day the API was switched off (`YYYY-MM-DD`).
    pub since: String,
    /// The provider file that replaces it.
    #[serde(default)]
    pub replacement: Option<String>,
    /// Extra words for the user.
    #[serde(default)]
    pub note: Option<String>,
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with client id and secret.
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Body,
    /// Public client: only `client_id` in the body.
    None,
}

/// Whether PKCE (S256) is used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Pkce {
    /// The provider requires it.
    Required,
    /// The provider supports it; it is used.
    #[default]
    Optional,
    /// The provider does not know it; it is not sent.
    Off,
}

/// How refresh tokens behave when used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Rotation {
    /// Every refresh returns a new refresh token and the old one dies (Fitbit, Oura, WHOOP).
    SingleUse,
    /// A new refresh token may come back; keep the old one when none does.
    #[default]
    Maybe,
    /// Refresh tokens never change (Google).
    Never,
}

/// Where the scopes the user granted are reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantedScopesFrom {
    /// The `scope` field of the token response.
    #[default]
    TokenResponse,
    /// The `scope` query parameter of the redirect back to us (Strava).
    CallbackQuery,
}

/// OAuth2 authorization-code flow, as the provider speaks it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The consent page.
    pub authorize_url: String,
    /// The token endpoint (code exchange and refresh).
    pub token_url: String,
    /// The revocation endpoint, if any; `{provider_user_id}` in it stands for the
    /// provider's id of the user (Polar's `DELETE /v3/users/{provider_user_id}`).
    #[serde(default)]
    pub revoke_url: Option<String>,
    /// How a token is revoked at `revoke_url`.
    #[serde(default)]
    pub revoke_style: RevokeStyle,
    /// A call made once a consent is granted, with the new token, before any fetch
    /// (Polar's user registration).
    #[serde(default)]
    pub after_consent: Option<AfterConsentConfig>,
    /// Client authentication at the token endpoint.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// PKCE with S256.
    #[serde(default)]
    pub pkce: Pkce,
    /// Scopes asked for.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// How scopes are joined in the authorize URL.
    #[serde(default = "default_scope_separator")]
    pub scope_separator: String,
    /// Extra query parameters of the authorize URL (`access_type: offline`).
    #[serde(default)]
    pub authorize_params: IndexMap<String, String>,
    /// Extra form fields on every token call (`action: requesttoken`).
    #[serde(default)]
    pub token_params: IndexMap<String, String>,
    /// Extra form fields on refresh calls only.
    #[serde(default)]
    pub refresh_params: IndexMap<String, String>,
    /// Where the fields of the token response are.
    #[serde(default)]
    pub token_response: TokenResponseConfig,
    /// Refresh behaviour.
    #[serde(default)]
    pub refresh: RefreshConfig,
    /// Where granted scopes are reported.
    #[serde(default)]
    pub granted_scopes_from: GrantedScopesFrom,
    /// Whether `http://127.0.0.1:PORT/...` redirect URIs are accepted (RFC 8252 loopback).
    #[serde(default = "default_true")]
    pub allow_loopback_redirect: bool,
    /// How long an authorization code lives, in seconds (informational; codes are exchanged at once).
    #[serde(default)]
    pub code_ttl_seconds: Option<u64>,
}

/// Token responses: envelope, success test and field locations (JSONPaths from the root).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenResponseConfig {
    /// The object holding the token fields, when it is wrapped (`$.body` for Withings).
    #[serde(default)]
    pub root: Option<String>,
    /// A body field that decides success regardless of the HTTP status.
    #[serde(default)]
    pub success: Option<ConditionConfig>,
    /// Where an error message is, when the call failed.
    #[serde(default)]
    pub error_message: Option<String>,
    /// Where the OAuth error code is (`invalid_grant` means the grant is gone).
    #[serde(default = "default_error_code_path")]
    pub error_code: String,
    /// Access token location, relative to `root`.
    #[serde(default = "default_access_token_path")]
    pub access_token: String,
    /// Refresh token location.
    #[serde(default = "default_refresh_token_path")]
    pub refresh_token: String,
    /// Lifetime in seconds.
    #[serde(default = "default_expires_in_path")]
    pub expires_in: String,
    /// Absolute expiry in epoch seconds (Strava), used when present.
    #[serde(default = "default_expires_at_path")]
    pub expires_at: String,
    /// Granted scopes.
    #[serde(default = "default_scope_path")]
    pub scope: String,
    /// The provider's id of the user, kept with the token and usable as `connection.provider_user_id`.
    #[serde(default)]
    pub provider_user_id: Option<String>,
}

impl Default for TokenResponseConfig {
    fn default() -> Self {
        TokenResponseConfig {
            root: None,
            success: None,
            error_message: None,
            error_code: default_error_code_path(),
            access_token: default_access_token_path(),
            refresh_token: default_refresh_token_path(),
            expires_in: default_expires_in_path(),
            expires_at: default_expires_at_path(),
            scope: default_scope_path(),
            provider_user_id: None,
        }
    }
}

/// Token refresh.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshConfig {
    /// False for providers whose tokens cannot be refreshed (Polar).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Refresh-token rotation.
    #[serde(default)]
    pub rotation: Rotation,
    /// Refresh this many seconds before the access token expires.
    #[serde(default = "default_skew")]
    pub skew_seconds: u64,
    /// A refresh endpoint other than `token_url`.
    #[serde(default)]
    pub url: Option<String>,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        RefreshConfig {
            enabled: true,
            rotation: Rotation::default(),
            skew_seconds: default_skew(),
            url: None,
        }
    }
}

/// API calls: base URL, common headers, limits and error dialect.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Scheme, host, port and path prefix of every method path.
    pub base_url: String,
    /// Headers on every call (templates: `{{app.system}}`).
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// Where the user's time zone comes from when the user set none: a method of this
    /// file (it takes no parameters) and the JSONPath of the IANA name in its answer
    /// (Google Health's `users/me/settings` `timeZone`).
    #[serde(default)]
    pub time_zone: Option<TimeZoneSourceConfig>,
    /// Other hosts a connection may live on, by name (`eu: https://api.dexcom.eu`): a
    /// user's `host` setting moves every URL on `base_url`'s host (consent, token,
    /// refresh, revocation, API) to the named one.
    #[serde(default)]
    pub hosts: IndexMap<String, String>,
    /// The unit system used when `plugindata/<plugin>/system` is not set.
    #[serde(default = "default_system")]
    pub default_system: String,
    /// Per-request timeout in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Largest response body accepted, in bytes.
    #[serde(default = "default_max_response")]
    pub max_response_bytes: u64,
    /// Retries on connection errors, timeouts and 5xx.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Rate-limit headers and client-side budgets.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// How failed answers are classified, first match wins.
    #[serde(default)]
    pub errors: Vec<ErrorRuleConfig>,
    /// Application status inside HTTP 200 answers (Withings `{status, body}`).
    #[serde(default)]
    pub envelope: Option<EnvelopeConfig>,
}

/// Retry policy.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// First backoff delay in milliseconds; doubles each time, with jitter.
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
    /// Longest single wait in milliseconds (also caps `Retry-After`).
    #[serde(default = "default_max_wait")]
    pub max_wait_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: default_attempts(),
            backoff_ms: default_backoff(),
            max_wait_ms: default_max_wait(),
        }
    }
}

/// Rate limits.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Headers that say when a limit resets, tried in order on 429.
    #[serde(default)]
    pub reset_headers: Vec<ResetHeaderConfig>,
    /// Header telling how many calls are left in the current window.
    #[serde(default)]
    pub remaining_header: Option<String>,
    /// Headers listing the limit and the usage of several windows at once (Strava's
    /// `X-RateLimit-Limit: 200,2000` and `X-RateLimit-Usage: 15,540`).
    #[serde(default)]
    pub usage: Option<UsageHeadersConfig>,
    /// Client-side budgets, checked before each call.
    #[serde(default)]
    pub budgets: Vec<BudgetConfig>,
}

/// Limit and usage headers with one comma-separated value per window.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageHeadersConfig {
    /// The header with each window's limit.
    pub limit_header: String,
    /// The header with each window's usage so far.
    pub usage_header: String,
    /// Each window's length in seconds, in the headers' order; a window resets at the
    /// next multiple of its length since the epoch (900: every quarter hour; 86400:
    /// midnight UTC).
    pub windows: Vec<u64>,
}

/// How a reset header is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResetUnit {
    /// Seconds from now, or an HTTP date (the `Retry-After` rules).
    RetryAfter,
    /// Seconds from now.
    Seconds,
    /// An absolute time in epoch seconds.
    Epoch,
}

/// A header that tells when to try again.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetHeaderConfig {
    /// Header name.
    pub header: String,
    /// How its value is read.
    pub unit: ResetUnit,
}

/// Who a budget is counted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BudgetScope {
    /// Per user of the provider.
    User,
    /// For the whole app registration.
    App,
}

/// At most `limit` calls per `per_seconds`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Calls allowed in a window.
    pub limit: u32,
    /// Window length in seconds.
    pub per_seconds: u64,
    /// Counted per user or per app.
    pub scope: BudgetScope,
}

/// What kind of failure an answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The access token expired: refresh once and retry.
    AuthExpired,
    /// The grant is gone: the user must consent again.
    ConsentNeeded,
    /// Too many calls: wait until the reset time.
    RateLimited,
    /// The API was switched off.
    Retired,
    /// Temporary: retried with backoff.
    Transient,
    /// Anything else: reported, not retried.
    Fatal,
}

/// One classification rule.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorRuleConfig {
    /// HTTP statuses this rule applies to (any when empty).
    #[serde(default)]
    pub status: Vec<u16>,
    /// A body condition that must also hold.
    #[serde(default)]
    pub when: Option<ConditionConfig>,
    /// The resulting kind.
    pub kind: ErrorKind,
    /// Where the provider's message is in the body.
    #[serde(default)]
    pub message: Option<String>,
}

/// Application status carried inside successful HTTP answers.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeConfig {
    /// Where the status is.
    pub status: String,
    /// Values meaning success.
    pub ok: Vec<Value>,
    /// Known failure values and their kinds (others are `fatal`).
    #[serde(default)]
    pub kinds: IndexMap<String, ErrorKind>,
    /// Where the provider's message is.
    #[serde(default)]
    pub message: Option<String>,
}

/// A test on a JSON value.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConditionConfig {
    /// JSONPath of the value (first match).
    pub path: String,
    /// The value must equal this.
    #[serde(default)]
    pub equals: Option<Value>,
    /// The value must be one of these.
    #[serde(default, rename = "in")]
    pub one_of: Option<Vec<Value>>,
    /// The value must exist (true) or be absent (false).
    #[serde(default)]
    pub exists: Option<bool>,
    /// The value must be greater than this (numbers by value, text such as dates in
    /// order).
    #[serde(default)]
    pub gt: Option<Value>,
    /// The value must be at least this.
    #[serde(default)]
    pub gte: Option<Value>,
    /// The value must be less than this.
    #[serde(default)]
    pub lt: Option<Value>,
    /// The value must be at most this.
    #[serde(default)]
    pub lte: Option<Value>,
}

/// HTTP verb of a method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum Verb {
    /// GET.
    #[default]
    #[serde(rename = "GET")]
    Get,
    /// POST (reads with a body: Withings getmeas, Google rollUp).
    #[serde(rename = "POST")]
    Post,
}

/// One read method.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MethodConfig {
    /// What it returns.
    #[serde(default)]
    pub description: Option<String>,
    /// HTTP verb.
    #[serde(default)]
    pub verb: Verb,
    /// Path template, appended to `api.base_url`.
    pub path: String,
    /// Query parameters (templates), in order; a parameter rendering to an empty string is left out.
    #[serde(default)]
    pub query: IndexMap<String, String>,
    /// Extra headers (templates).
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// Request body.
    #[serde(default)]
    pub body: Option<BodyConfig>,
    /// Keyword arguments the method accepts.
    #[serde(default)]
    pub params: IndexMap<String, ParamConfig>,
    /// Constants usable in templates as `vars.NAME`.
    #[serde(default)]
    pub vars: IndexMap<String, String>,
    /// A date range computed from date parameters, usable as `range.start`, `range.end`.
    #[serde(default)]
    pub range: Option<RangeConfig>,
    /// Longest range one request may cover; longer ranges are split.
    #[serde(default)]
    pub window: Option<WindowConfig>,
    /// How the method's past is kept: incremental sync, backfill and the archive.
    #[serde(default)]
    pub history: Option<HistoryConfig>,
    /// How further pages are asked for.
    #[serde(default)]
    pub pagination: Option<PaginationConfig>,
    /// Sensor outputs, by name.
    #[serde(default)]
    pub output: IndexMap<String, OutputConfig>,
    /// Top-level keys of the raw answer offered unchanged (`layout=raw`), as the old plugin stored them.
    #[serde(default)]
    pub raw: Vec<String>,
}

/// Body encoding.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BodyConfig {
    /// Form fields (templates), sent as `application/x-www-form-urlencoded`.
    #[serde(default)]
    pub form: Option<IndexMap<String, String>>,
    /// A JSON document whose string leaves are templates.
    #[serde(default)]
    pub json: Option<Value>,
}

/// Type of a keyword argument.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    /// Free text (no `/` when used in a path).
    #[default]
    String,
    /// One path segment: no `/`, no `.` or `..`.
    PathSegment,
    /// Several path segments (`activities/steps`): no empty, `.` or `..` segment.
    Path,
    /// `YYYY-MM-DD` or `today`.
    Date,
    /// `HH:MM` or `HH:MM:SS`.
    Time,
    /// One of `values`.
    Enum,
    /// A whole number.
    Integer,
    /// `true` or `false`.
    Boolean,
}

/// A keyword argument.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParamConfig {
    /// Its type.
    #[serde(default, rename = "type")]
    pub kind: ParamType,
    /// What it means.
    #[serde(default)]
    pub description: Option<String>,
    /// Allowed values of an enum.
    #[serde(default)]
    pub values: Vec<String>,
    /// Value when not given; `today` for a date means the (pinned) clock's date.
    #[serde(default)]
    pub default: Option<String>,
    /// For dates: send the word `today` as it is instead of the clock's date.
    #[serde(default)]
    pub literal_today: bool,
    /// Must be given (or defaulted).
    #[serde(default)]
    pub required: bool,
    /// Must be given unless one of these is.
    #[serde(default)]
    pub required_unless: Vec<String>,
    /// May not be given together with these.
    #[serde(default)]
    pub conflicts: Vec<String>,
    /// Needs these as well.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Smallest integer.
    #[serde(default)]
    pub min: Option<i64>,
    /// Largest integer.
    #[serde(default)]
    pub max: Option<i64>,
}

/// Derives a date range from date parameters, Fitbit style: with `end` the range is
/// `[start, end]`; with `period` it ends at `start` and reaches back `period`;
/// otherwise it is the single day `start`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeConfig {
    /// The date parameter the range is anchored on.
    pub start: String,
    /// A period parameter (`1d`, `7d`, `30d`, `1w`, `1m`, `3m`, `6m`, `1y`, `max`).
    #[serde(default)]
    pub period: Option<String>,
    /// An end-date parameter.
    #[serde(default)]
    pub end: Option<String>,
    /// How many days `max` means.
    #[serde(default = "default_max_days")]
    pub max_days: u32,
}

/// How a method's history is fetched and archived.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Longest range, in days, that one request may cover when syncing or backfilling
    /// (the provider's documented maximum); defaults to `window.max_days`.
    #[serde(default)]
    pub max_days: Option<u32>,
    /// How long after a day ends its data may still arrive or change (late uploads,
    /// sleep scored in the morning): `6h`, `2d`, `90m`. A day is fetched again by
    /// every sync until it has been fetched once this long after its end.
    pub settle: String,
    /// The answer for a window lists every entry of that window, so an archived entry
    /// of the window missing from a complete, non-empty answer was deleted at the
    /// provider and is removed from the archive too.
    #[serde(default)]
    pub deletions: bool,
    /// The earliest day the provider keeps data for (`2009-01-01`); backfill starts no
    /// earlier.
    #[serde(default)]
    pub earliest: Option<String>,
}

/// Range splitting.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Days one request may cover.
    pub max_days: u32,
}

/// Pagination styles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaginationKind {
    /// A token from the answer is sent back (Google `nextPageToken` -> `pageToken`).
    Cursor,
    /// Page numbers until a short page (Strava).
    Page,
    /// A `more` flag and next offset in the answer (Withings).
    OffsetFlag,
    /// The `rel="next"` URL of the answer's `Link` header (RFC 8288), requested as it is.
    Link,
}

/// Where a pagination value is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParamPlace {
    /// In the query string.
    #[default]
    Query,
    /// In the form body.
    Body,
    /// In a request header.
    Header,
    /// A member of the JSON body.
    Json,
}

/// Pagination.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PaginationConfig {
    /// The style.
    #[serde(rename = "type")]
    pub kind: PaginationKind,
    /// The request parameter carrying the token, page number or offset.
    pub param: String,
    /// Where that parameter goes.
    #[serde(default, rename = "in")]
    pub place: ParamPlace,
    /// Cursor: where the next token is. Offset: where the `more` flag is.
    #[serde(default)]
    pub next: Option<String>,
    /// Cursor: the answer header holding the next token (instead of `next`).
    #[serde(default)]
    pub next_header: Option<String>,
    /// Offset: where the next offset is.
    #[serde(default)]
    pub offset: Option<String>,
    /// Page: the records whose count decides a short page.
    #[serde(default)]
    pub records: Option<String>,
    /// Page: the page-size parameter and its value.
    #[serde(default)]
    pub size_param: Option<String>,
    /// Page size.
    #[serde(default)]
    pub size: Option<u32>,
    /// First page number.
    #[serde(default = "default_first_page")]
    pub first: u32,
    /// Stop after this many pages (loop guard).
    #[serde(default = "default_max_pages")]
    pub max_pages: u32,
}

/// One sensor output: which records, which fields.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// JSONPath (RFC 9535) selecting the records.
    pub each: String,
    /// JSONPath inside each record selecting child rows; fields then read the child,
    /// and `parent` paths read the record.
    #[serde(default)]
    pub explode: Option<String>,
    /// Row filters; all must hold.
    #[serde(default, rename = "where")]
    pub filters: Vec<ConditionConfig>,
    /// The fields of each entry, in order.
    pub fields: IndexMap<String, FieldConfig>,
    /// Sort entries by this field, or these fields in order (later ones break ties),
    /// ascending.
    #[serde(default)]
    pub sort_by: Option<SortBy>,
    /// Merge entries that agree on this field (or these fields) into one: numeric
    /// fields are summed, the others kept from the first entry (Strava's activities
    /// into daily distance).
    #[serde(default)]
    pub sum_by: Option<SortBy>,
    /// Emit one object (the first entry) instead of a list.
    #[serde(default)]
    pub single: bool,
    /// The fields that identify an entry in the archive (the provider's record id where
    /// there is one); by default the entry's time fields and its `source`.
    #[serde(default)]
    pub identity: Option<SortBy>,
}

/// One field to sort by, or several.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SortBy {
    /// One field.
    One(String),
    /// Fields in order.
    Many(Vec<String>),
}

impl SortBy {
    /// The field names, in order.
    pub fn names(&self) -> Vec<&str> {
        match self {
            SortBy::One(name) => vec![name.as_str()],
            SortBy::Many(names) => names.iter().map(String::as_str).collect(),
        }
    }
}

/// How a token is revoked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RevokeStyle {
    /// RFC 7009: a form POST of the refresh token (else the access token) with its
    /// `token_type_hint`, authenticated like the token endpoint.
    #[default]
    Rfc7009,
    /// `DELETE` with the access token as bearer (WHOOP, Polar).
    BearerDelete,
    /// `POST` with the access token as bearer (Strava's deauthorize).
    BearerPost,
    /// `POST` with the access token in the query, `?access_token=` (Oura).
    AccessTokenQuery,
}

/// The provider's own record of the user's time zone.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeZoneSourceConfig {
    /// The method to call.
    pub method: String,
    /// JSONPath of the IANA zone name in its answer.
    pub path: String,
}

/// The call after a consent: one of the provider's methods, and the statuses besides
/// 2xx that count as done (Polar answers 409 for a user already registered).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AfterConsentConfig {
    /// The method to call (it takes no parameters and maps nothing).
    pub method: String,
    /// Statuses besides 2xx that count as success.
    #[serde(default)]
    pub accept: Vec<u16>,
}

/// The unit of a numeric offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OffsetUnit {
    /// Seconds east of UTC.
    #[default]
    Seconds,
    /// Minutes east of UTC.
    Minutes,
}

/// How a value is read before it is converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    /// `{year, month, day}`.
    CivilDate,
    /// `{hours, minutes, seconds, nanos}` (absent parts are zero).
    CivilTime,
    /// Seconds since the epoch.
    EpochS,
    /// Milliseconds since the epoch.
    EpochMs,
    /// An RFC 3339 timestamp (an instant; its offset, when not `Z`, is where it was
    /// recorded).
    Rfc3339,
    /// A local date-time without an offset (`2026-11-22T07:00:05`), read in the
    /// record's `offset`, else in the user's time zone.
    LocalDatetime,
    /// A duration, in seconds: ISO 8601 (`PT1H2M30S`, `P1DT2H`), seconds with an `s`
    /// (`"1680s"`, `"3.5s"`), or a number of seconds.
    Duration,
}

/// The type a field is converted to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// The value as found.
    #[default]
    Auto,
    /// A number (strings are parsed).
    Number,
    /// A whole number (strings are parsed).
    Integer,
    /// Text.
    String,
    /// `YYYY-MM-DD`.
    Date,
    /// `HH:MM:SS`, the local time of day.
    Time,
    /// The local date-time with its offset, RFC 3339 (`2026-11-22T23:14:00+01:00`).
    Datetime,
    /// The instant in UTC, RFC 3339 (`2026-11-22T22:14:00Z`).
    Instant,
    /// The offset the time was recorded in (`+01:00`).
    Offset,
}

/// Physical quantities that follow the unit system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Quantity {
    /// Body mass: kg (metric), lb (US), stone (UK).
    Mass,
    /// Distance: km (metric), miles (US, UK).
    Distance,
    /// Height and lengths: cm (metric), inches (US, UK).
    Length,
    /// Blood glucose: mmol/L (metric, UK), mg/dL (US).
    Glucose,
}

impl Quantity {
    /// How many base units (kg, km, cm) one `unit` is; None when `unit` does not measure
    /// this quantity. The format's own meaning of units: `check` refuses a field whose
    /// unit does not fit its quantity, and conversions multiply by it.
    pub fn base_factor(self, unit: Unit) -> Option<f64> {
        use Unit::*;
        match (self, unit) {
            (Quantity::Mass, G) => Some(0.001),
            (Quantity::Mass, Kg) => Some(1.0),
            (Quantity::Mass, Lb) => Some(0.453_592_37),
            (Quantity::Distance, Mm) => Some(1e-6),
            (Quantity::Distance, Cm) => Some(1e-5),
            (Quantity::Distance, M) => Some(1e-3),
            (Quantity::Distance, Km) => Some(1.0),
            (Quantity::Length, Mm) => Some(0.1),
            (Quantity::Length, Cm) => Some(1.0),
            (Quantity::Length, M) => Some(100.0),
            (Quantity::Length, Km) => Some(100_000.0),
            (Quantity::Glucose, MmolL) => Some(1.0),
            (Quantity::Glucose, MgDl) => Some(1.0 / MG_DL_PER_MMOL_L),
            _ => None,
        }
    }
}

/// Milligrams per decilitre in one millimole per litre of glucose (molar mass
/// 180.16 g/mol).
pub const MG_DL_PER_MMOL_L: f64 = 18.0182;

/// Units a provider may report in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Grams.
    G,
    /// Kilograms.
    Kg,
    /// Pounds.
    Lb,
    /// Millimetres.
    Mm,
    /// Centimetres.
    Cm,
    /// Metres.
    M,
    /// Kilometres.
    Km,
    /// Milligrams per decilitre (glucose).
    #[serde(rename = "mg/dL")]
    MgDl,
    /// Millimoles per litre (glucose).
    #[serde(rename = "mmol/L")]
    MmolL,
}

/// Unit conversion into the user's system.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnitConfig {
    /// What is measured.
    pub quantity: Quantity,
    /// The unit the provider reports in.
    pub from: Unit,
    /// JSONPath (in the row) of the unit each record names (Dexcom's `unit`: `mg/dL` or
    /// `mmol/L`), when the provider reports in either; `from` is the unit of records
    /// that name none.
    #[serde(default)]
    pub from_path: Option<String>,
}

/// One field of an output entry.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldConfig {
    /// JSONPath in the row (first match).
    #[serde(default)]
    pub path: Option<String>,
    /// JSONPath in the parent record of an exploded row.
    #[serde(default)]
    pub parent: Option<String>,
    /// A constant value.
    #[serde(default, rename = "const")]
    pub constant: Option<Value>,
    /// The name of the user's unit for this quantity (`kg`, `lb`, `mmol/L`, `mg/dL`):
    /// the unit that a `unit:` conversion of the same quantity gives.
    #[serde(default)]
    pub unit_name: Option<Quantity>,
    /// How the source value is read (dates, times, epochs).
    #[serde(default)]
    pub from: Option<SourceFormat>,
    /// Replaces the found value by the one this map gives for it (its text: `"long_sleep"`,
    /// `"1"`, `"true"`); a value the map lacks takes `default`, else it is an error.
    #[serde(default)]
    pub map: Option<IndexMap<String, Value>>,
    /// The value when the path finds nothing (or null), or the map lacks the value.
    #[serde(default)]
    pub default: Option<Value>,
    /// JSONPath of the record's offset or time zone (`+01:00`, `"-18000s"`, seconds,
    /// `Europe/Paris`), looked up in the row, then its parent record, then the whole
    /// answer. Times are shown at this offset instead of the user's zone.
    #[serde(default)]
    pub offset: Option<String>,
    /// The unit of a numeric `offset`: `seconds` (default) or `minutes` (Polar).
    #[serde(default)]
    pub offset_unit: OffsetUnit,
    /// JSONPath (in the row) of a second time, read like the first (`from`): the field
    /// is the seconds from the first to it (a session's duration from its start and end).
    #[serde(default)]
    pub until: Option<String>,
    /// JSONPaths (in the row) of numbers added to the value before `scale` (light + deep
    /// + REM sleep); absent ones add nothing.
    #[serde(default)]
    pub add: Vec<String>,
    /// The resulting type.
    #[serde(default, rename = "type")]
    pub kind: FieldType,
    /// Multiply by this.
    #[serde(default)]
    pub scale: Option<f64>,
    /// JSONPath (in the row) of a power of ten to multiply by (Withings `unit`).
    #[serde(default)]
    pub exponent: Option<String>,
    /// Convert into the unit of the user's system.
    #[serde(default)]
    pub unit: Option<UnitConfig>,
    /// Round to this many decimals.
    #[serde(default)]
    pub round: Option<u32>,
    /// Drop the entry when this field is missing.
    #[serde(default)]
    pub required: bool,
}

fn default_true() -> bool {
    true
}
fn default_scope_separator() -> String {
    " ".to_owned()
}
fn default_error_code_path() -> String {
    "$.error".to_owned()
}
fn default_access_token_path() -> String {
    "$.access_token".to_owned()
}
fn default_refresh_token_path() -> String {
    "$.refresh_token".to_owned()
}
fn default_expires_in_path() -> String {
    "$.expires_in".to_owned()
}
fn default_expires_at_path() -> String {
    "$.expires_at".to_owned()
}
fn default_scope_path() -> String {
    "$.scope".to_owned()
}
fn default_skew() -> u64 {
    300
}
fn default_system() -> String {
    "en_US".to_owned()
}
fn default_timeout() -> u64 {
    30
}
fn default_max_response() -> u64 {
    64 * 1024 * 1024
}
fn default_attempts() -> u32 {
    3
}
fn default_backoff() -> u64 {
    500
}
fn default_max_wait() -> u64 {
    60_000
}
fn default_max_days() -> u32 {
    1095
}
fn default_first_page() -> u32 {
    1
}
fn default_max_pages() -> u32 {
    1000
}
