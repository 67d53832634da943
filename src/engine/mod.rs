//! The engine: for each requested method, every window and page, then the mapping.
//!
//! It knows nothing about any provider. Calls go through a [`Caller`], injected: the
//! live one handles tokens, retries and rate limits; [`ReplayCaller`] answers from
//! recorded files. Both hand back every answer as a [`Doc`] indexed from its bytes, and
//! error classification, envelopes and pagination read that document: one route from
//! answer to store. The merged compact tree is validated against the sensor schema
//! before anyone prints or stores it.

pub mod params;
pub mod request;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::NaiveDate;
use indexmap::IndexMap;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use self::params::ParamError;
use self::request::{CallContext, HttpRequest, NextPage};
use crate::provider::raw::{ErrorKind, Verb};
use crate::provider::{Provider, loosely_equal};
use crate::sensors::Sensors;
use crate::sensors::schema;
use crate::transform::units::UnitSystem;
use crate::transform::{self, Doc, Layout, TransformError};

/// A failed call, before the engine adds provider and method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// Classification.
    pub kind: ErrorKind,
    /// HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// What happened (secrets already redacted by the caller).
    pub message: String,
}

/// Sends one API request and returns the answer's document (indexed from its bytes).
#[async_trait]
pub trait Caller: Send + Sync {
    /// Performs the request.
    async fn call(&self, request: &HttpRequest) -> Result<Doc, CallError>;
}

/// Why a fetch failed; always names the provider and, where it applies, the method.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Bad arguments.
    #[error("{provider}: {cause}")]
    Params {
        /// Provider.
        provider: String,
        /// Cause (part of the message, not a separate source).
        cause: ParamError,
    },
    /// A template could not be rendered.
    #[error("{provider} {method}: cannot build the request: {message}")]
    Render {
        /// Provider.
        provider: String,
        /// Method.
        method: String,
        /// Cause.
        message: String,
    },
    /// The provider's API is switched off.
    #[error(
        "{provider} {method}: the {provider} API is retired{since}{status} and answers no more; {hint}"
    )]
    Retired {
        /// Provider.
        provider: String,
        /// Method.
        method: String,
        /// `since DATE`, when known.
        since: String,
        /// ` (HTTP 410)`, when seen.
        status: String,
        /// What to do instead.
        hint: String,
    },
    /// A call failed.
    #[error("{provider} {method}: {status_text}{message}")]
    Call {
        /// Provider.
        provider: String,
        /// Method.
        method: String,
        /// Classification.
        kind: ErrorKind,
        /// HTTP status.
        status: Option<u16>,
        /// `HTTP 503: ` or empty.
        status_text: String,
        /// Cause.
        message: String,
    },
    /// Pagination went in a circle or too far.
    #[error("{provider} {method}: pagination stopped: {message}")]
    Pagination {
        /// Provider.
        provider: String,
        /// Method.
        method: String,
        /// Cause.
        message: String,
    },
    /// The answer could not be mapped.
    #[error("{provider} {method}: {cause}")]
    Transform {
        /// Provider.
        provider: String,
        /// Method.
        method: String,
        /// Cause (part of the message, not a separate source).
        cause: TransformError,
    },
    /// The mapped tree breaks the sensor schema.
    #[error("{provider}: the result breaks schemas/sensors.schema.json:\n  {}", .problems.join("\n  "))]
    Schema {
        /// Provider.
        provider: String,
        /// Each violation with its path and rule.
        problems: Vec<String>,
    },
}

impl EngineError {
    /// The HTTP status of a failed call, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            EngineError::Call { status, .. } => *status,
            EngineError::Retired { .. } => Some(410),
            _ => None,
        }
    }

    /// The error kind of a failed call.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            EngineError::Call { kind, .. } => Some(*kind),
            EngineError::Retired { .. } => Some(ErrorKind::Retired),
            _ => None,
        }
    }
}

/// A notice for people about a retired provider (printed by `plan` and `fetch`).
pub fn retirement_notice(provider: &Provider) -> Option<String> {
    let r = provider.retired.as_ref()?;
    let replacement = r
        .replacement
        .as_ref()
        .map(|p| format!("; use provider `{p}` instead"))
        .unwrap_or_default();
    Some(format!(
        "note: provider `{}` is retired since {}: its API answers 410 Gone{replacement}",
        provider.name, r.since
    ))
}

/// What to fetch.
#[derive(Debug, Clone)]
pub struct FetchPlan {
    /// Methods, in order (later results overwrite earlier keys).
    pub methods: Vec<String>,
    /// Arguments given by the caller.
    pub explicit: IndexMap<String, String>,
    /// The user's stored defaults.
    pub stored: IndexMap<String, String>,
    /// Layout of the result.
    pub layout: Layout,
    /// The user's date today (in [`FetchPlan::zone`]).
    pub today: NaiveDate,
    /// The user's time zone: it dates instants that carry no offset of their own.
    pub zone: chrono_tz::Tz,
    /// The host the user's connection lives on (`api.hosts`), when not the default.
    pub host: Option<String>,
    /// Whether the zone is the user's own setting (else the machine's, which the
    /// provider's record of the user's zone replaces, see `api.time_zone`).
    pub zone_set: bool,
    /// Template context.
    pub call: CallContext,
}

impl FetchPlan {
    /// The plan with `zone` as the user's zone: `today` is the date there at the plan's
    /// clock.
    pub fn in_zone(&self, zone: chrono_tz::Tz) -> FetchPlan {
        let mut p = self.clone();
        if let Ok(now) = chrono::DateTime::parse_from_rfc3339(&p.call.now) {
            p.today = transform::local::today_in(now.with_timezone(&chrono::Utc), zone);
        }
        p.zone = zone;
        p.call.zone = zone.name().to_owned();
        p
    }
}

/// The provider's record of the user's zone (`api.time_zone`), asked for through the
/// same caller as every other call when the user set no zone. A zone that cannot be
/// read leaves the machine's in place, and says so in the log.
async fn provider_zone(
    provider: &Provider,
    p: &FetchPlan,
    caller: &dyn Caller,
) -> Option<chrono_tz::Tz> {
    let (name, path) = provider.api.time_zone.as_ref().filter(|_| !p.zone_set)?;
    let method = provider.methods.get(name)?;
    let request = request::build(provider, method, &Map::new(), &p.call, None).ok()?;
    let found = match caller.call(&request).await {
        Ok(doc) => doc.find(path),
        Err(e) => {
            tracing::warn!(provider = %provider.name, method = %name, error = %e.message, "The user's time zone could not be read; the machine's is used");
            return None;
        }
    };
    let zone = found
        .as_ref()
        .and_then(Value::as_str)
        .and_then(transform::local::parse_zone);
    if zone.is_none() {
        tracing::warn!(provider = %provider.name, method = %name, "The provider named no time zone; the machine's is used");
    }
    zone
}

/// The plan in the zone the provider records for the user (`api.time_zone`), asked for
/// once, when the user set no zone; the plan returned names its zone as set, so that
/// fetches made from it do not ask again.
pub async fn with_provider_zone(
    provider: &Provider,
    p: &FetchPlan,
    caller: &dyn Caller,
) -> FetchPlan {
    let mut plan = match provider_zone(provider, p, caller).await {
        Some(zone) => p.in_zone(zone),
        None => p.clone(),
    };
    plan.zone_set = true;
    plan
}

/// Checks the plan's methods and arguments against the provider file (what a fetch
/// checks first), without rendering a request.
pub fn check_plan(provider: &Provider, p: &FetchPlan) -> Result<(), EngineError> {
    resolve(provider, p).map(|_| ())
}

/// The days `method` asks for with the plan's arguments (`None` without a `range`).
pub fn requested_range(
    provider: &Provider,
    p: &FetchPlan,
    method: &str,
) -> Result<Option<params::DateRange>, EngineError> {
    let Some(range) = provider.methods.get(method).and_then(|m| m.range.as_ref()) else {
        return Ok(None);
    };
    let one = FetchPlan {
        methods: vec![method.to_owned()],
        ..p.clone()
    };
    let resolved = resolve(provider, &one)?;
    let Some(r) = resolved.first() else {
        return Ok(None);
    };
    params::date_range(range, &r.values, p.today)
        .map(Some)
        .map_err(|message| EngineError::Render {
            provider: provider.name.clone(),
            method: method.to_owned(),
            message,
        })
}

fn resolve(provider: &Provider, p: &FetchPlan) -> Result<Vec<params::Resolved>, EngineError> {
    params::resolve(provider, &p.methods, &p.explicit, &p.stored, p.today).map_err(|cause| {
        EngineError::Params {
            provider: provider.name.clone(),
            cause,
        }
    })
}

/// One planned request per method and window (first pages only).
pub fn plan(provider: &Provider, p: &FetchPlan) -> Result<Vec<HttpRequest>, EngineError> {
    let hosted = provider.at_host(p.host.as_deref());
    let provider = hosted.as_ref();
    let resolved = resolve(provider, p)?;
    let mut out = Vec::new();
    for r in &resolved {
        let method = &provider.methods[&r.method];
        for window in windows(provider, &r.method, &r.values, p.today)? {
            let req = request::build(provider, method, &r.values, &p.call, window.as_ref())
                .map_err(|message| EngineError::Render {
                    provider: provider.name.clone(),
                    method: r.method.clone(),
                    message,
                })?;
            out.push(req);
        }
    }
    Ok(out)
}

fn windows(
    provider: &Provider,
    method_name: &str,
    values: &Map<String, Value>,
    today: NaiveDate,
) -> Result<Vec<Option<params::DateRange>>, EngineError> {
    let method = &provider.methods[method_name];
    let Some(range) = &method.range else {
        return Ok(vec![None]);
    };
    let full = params::date_range(range, values, today).map_err(|message| EngineError::Render {
        provider: provider.name.clone(),
        method: method_name.to_owned(),
        message,
    })?;
    Ok(match method.window_days {
        Some(days) => full.windows(days).into_iter().map(Some).collect(),
        None => vec![Some(full)],
    })
}

/// Runs every method of the plan and returns the merged, schema-checked sensor tree
/// (raw keys after the outputs; with layout `both`, an output wins over a raw key of
/// the same name).
pub async fn fetch(
    provider: &Provider,
    p: &FetchPlan,
    caller: &dyn Caller,
) -> Result<Sensors, EngineError> {
    let hosted = provider.at_host(p.host.as_deref());
    let provider = hosted.as_ref();
    let (mut tree, raw) = gather(provider, p, caller).await?;
    schema::validate_sensors(&tree).map_err(|problems| EngineError::Schema {
        provider: provider.name.clone(),
        problems,
    })?;
    tree.add_raw(raw);
    Ok(tree)
}

/// Calls and maps every method; the mapped outputs merged, and the raw keys apart.
/// Each method's answers are freed once it is mapped.
async fn gather(
    provider: &Provider,
    p: &FetchPlan,
    caller: &dyn Caller,
) -> Result<(Sensors, Map<String, Value>), EngineError> {
    let learned;
    let p = match provider_zone(provider, p, caller).await {
        Some(zone) => {
            learned = p.in_zone(zone);
            &learned
        }
        None => p,
    };
    let resolved = resolve(provider, p)?;
    let ctx = transform::MapContext::new(UnitSystem::from_setting(&p.call.system), p.zone);
    let mut tree = Sensors::default();
    let mut raw = Map::new();
    for r in &resolved {
        let method = &provider.methods[&r.method];
        let mut answers = Vec::new();
        for window in windows(provider, &r.method, &r.values, p.today)? {
            let first = request::build(provider, method, &r.values, &p.call, window.as_ref())
                .map_err(|message| EngineError::Render {
                    provider: provider.name.clone(),
                    method: r.method.clone(),
                    message,
                })?;
            collect_pages(provider, &r.method, first, caller, &mut answers).await?;
        }
        let mapped = transform::map_method(method, answers, p.layout, ctx).map_err(|cause| {
            EngineError::Transform {
                provider: provider.name.clone(),
                method: r.method.clone(),
                cause,
            }
        })?;
        tree.merge(mapped.mapped);
        raw.extend(mapped.raw);
    }
    Ok((tree, raw))
}

async fn collect_pages(
    provider: &Provider,
    method_name: &str,
    first: HttpRequest,
    caller: &dyn Caller,
    answers: &mut Vec<Doc>,
) -> Result<(), EngineError> {
    let method = &provider.methods[method_name];
    let max_pages = method.pagination.as_ref().map_or(1, |p| p.max_pages);
    let mut seen = HashSet::new();
    let mut current = first;
    for _ in 0..max_pages {
        let answer = caller
            .call(&current)
            .await
            .map_err(|e| call_error(provider, method_name, e))?;
        let next = request::next_page(method, &current, &answer);
        answers.push(answer);
        match next {
            NextPage::Done => return Ok(()),
            NextPage::Next { request, marker } => {
                if !seen.insert(marker.clone()) {
                    return Err(EngineError::Pagination {
                        provider: provider.name.clone(),
                        method: method_name.to_owned(),
                        message: format!("the provider sent page marker `{marker}` twice"),
                    });
                }
                current = *request;
            }
        }
    }
    Err(EngineError::Pagination {
        provider: provider.name.clone(),
        method: method_name.to_owned(),
        message: format!("more than {max_pages} pages"),
    })
}

/// Adds provider and method to a call failure (and turns retirement into its own error).
pub fn call_error(provider: &Provider, method: &str, e: CallError) -> EngineError {
    if e.kind == ErrorKind::Retired {
        let (since, hint) = match &provider.retired {
            Some(r) => (
                format!(" since {}", r.since),
                match &r.replacement {
                    Some(rep) => format!("switch this plugin to provider `{rep}`"),
                    None => "no replacement is known".to_owned(),
                },
            ),
            None => (
                String::new(),
                "check the provider's announcements".to_owned(),
            ),
        };
        return EngineError::Retired {
            provider: provider.name.clone(),
            method: method.to_owned(),
            since,
            status: e.status.map(|s| format!(" (HTTP {s})")).unwrap_or_default(),
            hint,
        };
    }
    EngineError::Call {
        provider: provider.name.clone(),
        method: method.to_owned(),
        kind: e.kind,
        status: e.status,
        status_text: e.status.map(|s| format!("HTTP {s}: ")).unwrap_or_default(),
        message: e.message,
    }
}

/// Classifies a failed answer with the provider's rules; `None` when it succeeded.
/// `body` is the answer's document when it was JSON.
pub fn classify(
    provider: &Provider,
    status: u16,
    body: Option<&Doc>,
) -> Option<(ErrorKind, String)> {
    let message_at = |sel: Option<&crate::provider::Selector>| {
        sel.and_then(|s| body.and_then(|b| b.find(s)))
            .map(|v| match v {
                Value::String(s) => s,
                other => other.to_string(),
            })
    };
    if (200..300).contains(&status) {
        let env = provider.api.envelope.as_ref()?;
        let b = body?;
        let st = b.find(&env.status)?;
        let st = &st;
        if env.ok.iter().any(|ok| loosely_equal(ok, st)) {
            return None;
        }
        let key = match st {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let kind = env.kinds.get(&key).copied().unwrap_or(ErrorKind::Fatal);
        let message = message_at(env.message.as_ref()).unwrap_or_default();
        return Some((kind, format!("application status {key}: {message}")));
    }
    for rule in &provider.api.errors {
        if !rule.status.is_empty() && !rule.status.contains(&status) {
            continue;
        }
        if let Some(cond) = &rule.when {
            if !body.is_some_and(|b| b.holds(cond)) {
                continue;
            }
        }
        let message = message_at(rule.message.as_ref()).unwrap_or_else(|| default_message(status));
        return Some((rule.kind, message));
    }
    let kind = match status {
        410 => ErrorKind::Retired,
        429 => ErrorKind::RateLimited,
        401 => ErrorKind::AuthExpired,
        500..=599 => ErrorKind::Transient,
        _ => ErrorKind::Fatal,
    };
    Some((kind, default_message(status)))
}

fn default_message(status: u16) -> String {
    http_reason(status).to_owned()
}

/// The reason phrase of common statuses.
pub fn http_reason(status: u16) -> &'static str {
    match status {
        400 => "bad request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not found",
        410 => "gone",
        429 => "too many requests",
        500 => "internal server error",
        502 => "bad gateway",
        503 => "service unavailable",
        504 => "gateway timeout",
        _ => "request failed",
    }
}

/// The file a recorded answer to `request` lives in (see docs/PROVIDER_FORMAT.md).
pub fn recording_name(request: &HttpRequest) -> String {
    let verb = match request.verb {
        Verb::Get => "GET",
        Verb::Post => "POST",
    };
    let mut key = format!("{verb} {}", request.url.path());
    if let Some(q) = request.url.query() {
        key.push('?');
        key.push_str(q);
    }
    if let Some(b) = &request.body {
        key.push('#');
        key.push_str(&b.encoded());
    }
    if let Some(name) = &request.page_header
        && let Some((_, value)) = request.headers.iter().find(|(k, _)| k == name)
    {
        key.push_str(&format!(" {name}: {value}"));
    }
    let mut slug: String = key
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                b as char
            } else {
                '_'
            }
        })
        .collect();
    if slug.len() > 150 {
        let digest = Sha256::digest(key.as_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        slug.truncate(150);
        slug.push('-');
        slug.push_str(&hex);
    }
    slug.push_str(".json");
    slug
}

/// An HTTP status as a `.status` recording holds it: 100 to 599, surrounding
/// whitespace allowed.
fn parse_status(text: &str) -> Option<u16> {
    text.trim()
        .parse::<u16>()
        .ok()
        .filter(|status| (100..=599).contains(status))
}

/// Answers requests from recorded files; sends nothing.
pub struct ReplayCaller<'p> {
    dir: PathBuf,
    provider: &'p Provider,
}

impl<'p> ReplayCaller<'p> {
    /// Replays from `dir` for `provider` (whose error rules classify recorded failures).
    pub fn new(dir: &Path, provider: &'p Provider) -> Self {
        ReplayCaller {
            dir: dir.to_owned(),
            provider,
        }
    }
}

impl ReplayCaller<'_> {
    /// The recording's text and HTTP status.
    fn read(&self, request: &HttpRequest) -> Result<(String, u16, PathBuf), CallError> {
        let fatal = |message: String| CallError {
            kind: ErrorKind::Fatal,
            status: None,
            message,
        };
        let name = recording_name(request);
        let path = self.dir.join(&name);
        // Regular files only, no larger than a live answer may be.
        let limit =
            usize::try_from(self.provider.api.config.max_response_bytes).unwrap_or(usize::MAX);
        let read = |path: &Path| {
            crate::regular_file::read(path, limit).map_err(|e| {
                fatal(format!(
                    "cannot replay {}: {} {e}",
                    request.describe(),
                    path.display()
                ))
            })
        };
        let Some(text) = read(&path)? else {
            return Err(fatal(format!(
                "no recording for {} (looked for {}: no such file)",
                request.describe(),
                path.display()
            )));
        };
        let status_path = self.dir.join(format!("{name}.status"));
        let status = match read(&status_path)? {
            Some(text) => parse_status(&text).ok_or_else(|| {
                let shown: String = text.trim().chars().take(40).collect();
                fatal(format!(
                    "{} holds `{}`, not an HTTP status (100 to 599)",
                    status_path.display(),
                    shown.escape_debug()
                ))
            })?,
            None => 200,
        };
        Ok((text, status, path))
    }

    /// The answer headers of a recording that pagination reads, from the sibling
    /// `<file>.headers` (`Name: value` lines), when there is one.
    fn headers(&self, request: &HttpRequest) -> Result<Vec<(String, String)>, CallError> {
        if self.provider.answer_headers.is_empty() {
            return Ok(Vec::new());
        }
        let path = self
            .dir
            .join(format!("{}.headers", recording_name(request)));
        let text = crate::regular_file::read(&path, 64 * 1024).map_err(|e| CallError {
            kind: ErrorKind::Fatal,
            status: None,
            message: format!(
                "cannot replay {}: {} {e}",
                request.describe(),
                path.display()
            ),
        })?;
        Ok(answer_headers(
            self.provider,
            text.iter()
                .flat_map(|t| t.lines())
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim(), v.trim())),
        ))
    }

    /// Indexes and classifies a recording like a live answer.
    fn decode(&self, text: String, status: u16, path: &Path) -> Result<Doc, CallError> {
        let body = Doc::of_answer_text(status, text);
        if let Some((kind, message)) = classify(self.provider, status, body.as_ref()) {
            return Err(CallError {
                kind,
                status: Some(status),
                message,
            });
        }
        body.ok_or_else(|| CallError {
            kind: ErrorKind::Fatal,
            status: Some(status),
            message: format!("the recording {} is not JSON", path.display()),
        })
    }
}

#[async_trait]
impl Caller for ReplayCaller<'_> {
    async fn call(&self, request: &HttpRequest) -> Result<Doc, CallError> {
        let (text, status, path) = self.read(request)?;
        let headers = self.headers(request)?;
        Ok(self.decode(text, status, &path)?.with_headers(headers))
    }
}

/// The headers of an answer that the provider's pagination reads (lower-case names).
pub fn answer_headers<'a>(
    provider: &Provider,
    headers: impl Iterator<Item = (&'a str, &'a str)>,
) -> Vec<(String, String)> {
    headers
        .filter_map(|(k, v)| {
            let k = k.to_ascii_lowercase();
            provider
                .answer_headers
                .contains(&k)
                .then(|| (k, v.to_owned()))
        })
        .collect()
}

/// Splits a comma-separated method list.
pub fn split_methods(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}
