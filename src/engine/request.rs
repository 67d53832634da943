//! Turning a method and its resolved arguments into HTTP requests, and following pages.
//!
//! Rendering enforces the URL rules of the provider format: the result keeps the
//! scheme, host and port of `api.base_url`, has no `.` or `..` segment, and every
//! value is encoded for its place.

use serde_json::{Map, Value, json};
use url::Url;

use crate::engine::params::DateRange;
use crate::provider::raw::{PaginationKind, ParamPlace, Verb};
use crate::provider::{Body, JsonTpl, Method, Provider};
use crate::transform::Doc;

/// A request body.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestBody {
    /// Form fields, in order.
    Form(Vec<(String, String)>),
    /// A JSON document.
    Json(Value),
}

impl RequestBody {
    /// The body as sent on the wire.
    pub fn encoded(&self) -> String {
        match self {
            RequestBody::Form(fields) => url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(fields)
                .finish(),
            RequestBody::Json(v) => v.to_string(),
        }
    }

    /// The Content-Type it is sent with.
    pub fn content_type(&self) -> &'static str {
        match self {
            RequestBody::Form(_) => "application/x-www-form-urlencoded",
            RequestBody::Json(_) => "application/json",
        }
    }
}

/// One API request, without credentials (the transport adds them).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequest {
    /// The provider method it belongs to.
    pub method: String,
    /// HTTP verb.
    pub verb: Verb,
    /// Full URL with query.
    pub url: Url,
    /// Headers other than Authorization.
    pub headers: Vec<(String, String)>,
    /// Body, for POST.
    pub body: Option<RequestBody>,
    /// The header pagination sets on later pages, which tells pages apart in recording
    /// names.
    pub page_header: Option<String>,
}

impl HttpRequest {
    /// `VERB url`, for messages.
    pub fn describe(&self) -> String {
        let verb = match self.verb {
            Verb::Get => "GET",
            Verb::Post => "POST",
        };
        match &self.body {
            Some(b) => format!("{verb} {} (body {})", self.url, b.encoded()),
            None => format!("{verb} {}", self.url),
        }
    }
}

/// What templates see besides the parameters.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// The unit-system setting.
    pub system: String,
    /// The registered client id, if any.
    pub client_id: Option<String>,
    /// The provider's id of the user, if known.
    pub provider_user_id: Option<String>,
    /// The pinned clock, RFC 3339.
    pub now: String,
    /// The user's time zone (IANA name): date helpers turn days into instants at its
    /// midnight.
    pub zone: String,
    /// The user's name here (Igor's user), for providers that keep our id of a user.
    pub user: String,
}

fn context(
    method: &Method,
    values: &Map<String, Value>,
    call: &CallContext,
    window: Option<&DateRange>,
) -> Value {
    let mut ctx = values.clone();
    ctx.insert(
        "app".into(),
        json!({"system": call.system, "client_id": call.client_id}),
    );
    ctx.insert(
        "vars".into(),
        Value::Object(
            method
                .vars
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        ),
    );
    ctx.insert(
        "connection".into(),
        json!({"provider_user_id": call.provider_user_id}),
    );
    ctx.insert("user".into(), json!({"zone": call.zone, "name": call.user}));
    ctx.insert("now".into(), Value::String(call.now.clone()));
    if let Some(w) = window {
        ctx.insert("range".into(), w.context());
    }
    Value::Object(ctx)
}

/// Renders the first request of a method (for one window of its range).
pub fn build(
    provider: &Provider,
    method: &Method,
    values: &Map<String, Value>,
    call: &CallContext,
    window: Option<&DateRange>,
) -> Result<HttpRequest, String> {
    let t = &provider.templates;
    let ctx = context(method, values, call, window);
    let path = t
        .render(&method.path, &ctx)
        .map_err(|e| format!("path: {e}"))?;
    let base = &provider.api.base_url;
    let mut url = join(base, &path)?;
    {
        let mut pairs = Vec::new();
        for (k, tpl) in &method.query {
            let v = t
                .render(tpl, &ctx)
                .map_err(|e| format!("query `{k}`: {e}"))?;
            if !v.is_empty() {
                pairs.push((k.clone(), v));
            }
        }
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs);
        }
    }
    let mut headers = Vec::new();
    for (k, tpl) in provider.api.headers.iter().chain(method.headers.iter()) {
        let v = t
            .render(tpl, &ctx)
            .map_err(|e| format!("header `{k}`: {e}"))?;
        if v.contains(['\r', '\n']) {
            return Err(format!("header `{k}` may not contain line breaks"));
        }
        if !v.is_empty() {
            headers.retain(|(name, _): &(String, String)| !name.eq_ignore_ascii_case(k));
            headers.push((k.clone(), v));
        }
    }
    let body = match &method.body {
        None => None,
        Some(Body::Form(fields)) => {
            let mut out = Vec::new();
            for (k, tpl) in fields {
                let v = t
                    .render(tpl, &ctx)
                    .map_err(|e| format!("form `{k}`: {e}"))?;
                if !v.is_empty() {
                    out.push((k.clone(), v));
                }
            }
            Some(RequestBody::Form(out))
        }
        Some(Body::Json(j)) => Some(RequestBody::Json(render_json(provider, j, &ctx)?)),
    };
    let mut request = HttpRequest {
        method: method.name.clone(),
        verb: method.verb,
        url,
        headers,
        body,
        page_header: None,
    };
    if let Some(p) = &method.pagination {
        if p.kind == PaginationKind::Page {
            set_param(&mut request, p.place, &p.param, &p.first.to_string());
            if let (Some(name), Some(size)) = (&p.size_param, p.size) {
                set_param(&mut request, p.place, name, &size.to_string());
            }
        }
    }
    Ok(request)
}

fn render_json(provider: &Provider, j: &JsonTpl, ctx: &Value) -> Result<Value, String> {
    Ok(match j {
        JsonTpl::Literal(v) => v.clone(),
        JsonTpl::Text(t) => Value::String(provider.templates.render(t, ctx)?),
        JsonTpl::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| render_json(provider, i, ctx))
                .collect::<Result<_, _>>()?,
        ),
        JsonTpl::Object(fields) => {
            let mut m = Map::new();
            for (k, v) in fields {
                m.insert(k.clone(), render_json(provider, v, ctx)?);
            }
            Value::Object(m)
        }
    })
}

/// Appends a rendered path to the base URL and enforces the URL rules.
fn join(base: &Url, path: &str) -> Result<Url, String> {
    if !path.starts_with('/') || path.starts_with("//") {
        return Err(format!(
            "rendered path `{path}` must start with a single `/`"
        ));
    }
    for segment in path.split('/').skip(1) {
        let lowered = segment.to_ascii_lowercase();
        let decoded = lowered.replace("%2e", ".");
        if decoded == "." || decoded == ".." {
            return Err(format!(
                "rendered path `{path}` may not contain `.` or `..` segments"
            ));
        }
    }
    let text = format!("{}{}", base.as_str().trim_end_matches('/'), path);
    let url = Url::parse(&text).map_err(|e| format!("rendered URL `{text}` is invalid: {e}"))?;
    if url.scheme() != base.scheme()
        || url.host_str() != base.host_str()
        || url.port_or_known_default() != base.port_or_known_default()
        || !url.path().starts_with(base.path().trim_end_matches('/'))
    {
        return Err(format!("rendered URL `{url}` leaves the API base `{base}`"));
    }
    Ok(url)
}

/// Sets (or replaces) a pagination parameter.
/// Sets a pagination parameter where its place says, replacing an earlier value where
/// it stood, so every page asks in the same order (`page=1&per_page=30`, then
/// `page=2&per_page=30`).
fn set_param(request: &mut HttpRequest, place: ParamPlace, name: &str, value: &str) {
    match place {
        ParamPlace::Query => {
            let mut pairs: Vec<(String, String)> = request
                .url
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            replace_or_push(&mut pairs, name, value);
            request.url.set_query(None);
            request.url.query_pairs_mut().extend_pairs(pairs);
        }
        ParamPlace::Body => {
            if let Some(RequestBody::Form(fields)) = &mut request.body {
                replace_or_push(fields, name, value);
            }
        }
        ParamPlace::Header => {
            replace_or_push(&mut request.headers, name, value);
            request.page_header = Some(name.to_owned());
        }
        ParamPlace::Json => {
            if let Some(RequestBody::Json(Value::Object(members))) = &mut request.body {
                members.insert(name.to_owned(), Value::String(value.to_owned()));
            }
        }
    }
    if request.url.query() == Some("") {
        request.url.set_query(None);
    }
}

fn replace_or_push(pairs: &mut Vec<(String, String)>, name: &str, value: &str) {
    match pairs.iter().position(|(k, _)| k == name) {
        Some(at) => {
            pairs[at].1 = value.to_owned();
            let mut seen = false;
            pairs.retain(|(k, _)| {
                let keep = k != name || !seen;
                seen |= k == name;
                keep
            });
        }
        None => pairs.push((name.to_owned(), value.to_owned())),
    }
}

/// The `rel="next"` target of a `Link` header (RFC 8288), resolved against `base`.
fn link_next(header: &str, base: &Url) -> Option<Url> {
    for link in header.split(',') {
        let (target, params) = link.trim().split_once('>')?;
        let target = target.trim().strip_prefix('<')?;
        let next = params.split(';').any(|p| {
            let p = p.trim();
            p.strip_prefix("rel=")
                .map(|r| {
                    r.trim_matches('"')
                        .split_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
                })
                .unwrap_or(false)
        });
        if next {
            return base.join(target).ok();
        }
    }
    None
}

/// Where pagination stands after a page.
#[derive(Debug, Clone, PartialEq)]
pub enum NextPage {
    /// No further page.
    Done,
    /// Ask for this request next; `marker` identifies the page for loop detection.
    Next {
        /// The request.
        request: Box<HttpRequest>,
        /// Token, page number or offset.
        marker: String,
    },
}

/// The request for the page after `answer`, per the method's pagination.
pub fn next_page(method: &Method, current: &HttpRequest, answer: &Doc) -> NextPage {
    let Some(p) = &method.pagination else {
        return NextPage::Done;
    };
    let marker = match p.kind {
        PaginationKind::Link => {
            let Some(next) = answer
                .header("link")
                .and_then(|h| link_next(h, &current.url))
            else {
                return NextPage::Done;
            };
            // The next page must stay on the API's own origin.
            if next.origin() != current.url.origin() {
                return NextPage::Done;
            }
            let mut request = current.clone();
            request.url = next;
            let marker = request.url.to_string();
            return NextPage::Next {
                request: Box::new(request),
                marker,
            };
        }
        PaginationKind::Cursor if p.next_header.is_some() => {
            match p.next_header.as_deref().and_then(|h| answer.header(h)) {
                Some(token) if !token.trim().is_empty() => token.trim().to_owned(),
                _ => return NextPage::Done,
            }
        }
        PaginationKind::Cursor => match p.next.as_ref().and_then(|s| answer.find(s)) {
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(Value::Number(n)) => n.to_string(),
            _ => return NextPage::Done,
        },
        PaginationKind::OffsetFlag => {
            let more = p.next.as_ref().and_then(|s| answer.find(s));
            let more = match more {
                Some(Value::Bool(b)) => b,
                Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
                Some(Value::String(s)) => !matches!(s.as_str(), "" | "0" | "false"),
                _ => false,
            };
            if !more {
                return NextPage::Done;
            }
            match p.offset.as_ref().and_then(|s| answer.find(s)) {
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(s)) if !s.is_empty() => s,
                _ => return NextPage::Done,
            }
        }
        PaginationKind::Page => {
            let count = p.records.as_ref().map_or(0, |s| answer.count(s));
            let full = p.size.is_some_and(|size| count >= size as usize)
                || (p.size.is_none() && count > 0);
            if !full {
                return NextPage::Done;
            }
            let current_page = match p.place {
                ParamPlace::Query => current
                    .url
                    .query_pairs()
                    .find(|(k, _)| k == p.param.as_str())
                    .and_then(|(_, v)| v.parse::<u64>().ok()),
                ParamPlace::Body => match &current.body {
                    Some(RequestBody::Form(f)) => f
                        .iter()
                        .find(|(k, _)| k == &p.param)
                        .and_then(|(_, v)| v.parse().ok()),
                    _ => None,
                },
                ParamPlace::Header => current
                    .headers
                    .iter()
                    .find(|(k, _)| k == &p.param)
                    .and_then(|(_, v)| v.parse().ok()),
                ParamPlace::Json => match &current.body {
                    Some(RequestBody::Json(body)) => body.get(&p.param).and_then(|v| match v {
                        Value::String(s) => s.parse().ok(),
                        other => other.as_u64(),
                    }),
                    _ => None,
                },
            }
            .unwrap_or(u64::from(p.first));
            (current_page + 1).to_string()
        }
    };
    let mut request = current.clone();
    set_param(&mut request, p.place, &p.param, &marker);
    NextPage::Next {
        request: Box::new(request),
        marker,
    }
}
