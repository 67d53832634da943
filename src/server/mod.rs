//! `healthpull serve`: the old Igor plugin's entry points, the setup page, status,
//! metrics and the built-in schedule.
//!
//! The server is a function of its state ([`app`]); [`run`] serves it on a listener
//! until the shutdown future resolves, then lets running requests and fetches finish.

mod access;
mod conn;
mod error;
mod fetch;
mod html;
mod page;
mod query;
mod schedule;
mod state;
mod status;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use indexmap::IndexMap;
use serde_json::{Value, json};

use crate::igor::paths;
use crate::igor::xml;
use crate::live::consent::{self, ConsentError};
use crate::live::{self};
use crate::provider::Provider;
use crate::transform::Layout;
use crate::user::UserName;

pub use access::{Access, Hosts};
pub use error::AppError;
use error::{browser, text};
use fetch::fetch_error;
pub use fetch::fetch_user;
use query::{Params, RawQuery, get_param, pairs, wants_json};
pub use state::{AppState, StartError};
pub use status::plugin_status;

/// The router.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/plugin/{plugin}", get(fetch_now))
        .route("/plugin/{plugin}/auth1", get(auth1))
        .route("/plugin/{plugin}/auth2", get(auth2))
        .route("/plugin/{plugin}/settings", get(settings).post(settings))
        .route(
            "/plugin/{plugin}/userSettings",
            get(user_settings).post(user_settings),
        )
        .route("/plugin/{plugin}/page/setup.html", get(page::setup))
        .route("/plugin/{plugin}/status", get(status))
        .layer(middleware::from_fn_with_state(
            state.access.clone(),
            access::guard,
        ))
        .layer(middleware::from_fn_with_state(
            state.hosts.clone(),
            access::host_guard,
        ))
        .layer(middleware::from_fn(html::security_headers))
        .layer(middleware::from_fn_with_state(state.clone(), request_log))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` resolves; running requests finish first,
/// and so do running scheduled fetches.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    schedule: Option<crate::config::ScheduleConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // One form key per plugin for every instance serving the store.
    state
        .share_csrf_keys()
        .await
        .map_err(|e| std::io::Error::other(crate::secret::redact(&e.to_string())))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let scheduler = schedule
        .filter(|s| s.enabled)
        .map(|s| tokio::spawn(schedule::run(state.clone(), s, stop_rx)));
    let limits = state.limits.clone();
    let result = conn::serve(listener, app(state), &limits, async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    })
    .await;
    if let Some(task) = scheduler {
        let _ = task.await;
    }
    result
}

async fn request_log(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let id = format!("{:016x}", rand::random::<u64>());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let span = tracing::info_span!("request", id = %id, method = %method, path = %path);
    let _enter = span.enter();
    drop(_enter);
    let mut response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    tracing::info!(
        parent: &span,
        status = response.status().as_u16(),
        millis = started.elapsed().as_millis() as u64,
        "Answered"
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

async fn index(State(state): State<Arc<AppState>>) -> Response {
    let mut body = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>healthpull</title></head><body><h1>healthpull</h1><ul>",
    );
    for (name, p) in &state.plugins {
        body.push_str(&format!(
            "<li><a href=\"/plugin/{n}/page/setup.html\">{n}</a> ({})</li>",
            consent::html_escape(p.title.as_deref().unwrap_or(&p.name)),
            n = consent::html_escape(name)
        ));
    }
    body.push_str("</ul></body></html>");
    Html(body).into_response()
}

/// The plugin's provider (404 when unknown) and the query's parameters.
fn plugin_query(
    state: &AppState,
    plugin: &str,
    query: Option<String>,
) -> Result<(Arc<Provider>, Params), AppError> {
    let provider = state.provider(plugin)?;
    Ok((provider, pairs(query.as_deref().unwrap_or(""))))
}

/// `GET /plugin/<plugin>?user=U[&methods=a,b][&k=v...]`: fetch, store, answer with it.
async fn fetch_now(
    State(state): State<Arc<AppState>>,
    Path(plugin): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    let (provider, pairs) = plugin_query(&state, &plugin, query)?;
    access::refuse_cross_site(&state.hosts, &headers)?;
    let user = user_param(&plugin, &pairs)?;
    let json_wanted = wants_json(&headers, &pairs);
    let mut explicit = IndexMap::new();
    for (k, v) in &pairs {
        if !matches!(k.as_str(), "user" | "methods" | "format" | "layout") {
            explicit.insert(k.clone(), v.clone());
        }
    }
    let layout = match get_param(&pairs, "layout").map(Layout::parse) {
        None => Layout::Mapped,
        Some(Some(l)) => l,
        Some(None) => {
            return Err(AppError::bad_request("layout must be mapped, raw or both"));
        }
    };
    let tree = fetch_user(
        &state,
        &plugin,
        provider,
        &user,
        get_param(&pairs, "methods").map(str::to_owned),
        explicit,
        layout,
    )
    .await
    .map_err(|e| fetch_error(&state, &plugin, &user, e))?;
    Ok(if json_wanted {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            tree.to_value().to_string(),
        )
            .into_response()
    } else {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
            xml::sensors_to_xml(user.as_str(), &tree),
        )
            .into_response()
    })
}

/// `auth1?user=U`: 303 to the provider's consent page.
async fn auth1(
    State(state): State<Arc<AppState>>,
    Path(plugin): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    let (provider, pairs) = plugin_query(&state, &plugin, query)?;
    let parsed = get_param(&pairs, "user").map(UserName::parse);
    let known = match &parsed {
        Some(Ok(u)) => Some(u.as_str()),
        _ => None,
    };
    let fail = |status: StatusCode, message: String| {
        AppError::new(status, message).consent(&headers, &plugin, known)
    };
    if access::cross_site(&state.hosts, &headers) {
        return Err(fail(
            StatusCode::FORBIDDEN,
            "cross-site request refused".into(),
        ));
    }
    let user = match &parsed {
        None => {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                format!("{plugin}: the user argument is required"),
            ));
        }
        Some(Err(e)) => {
            let given = get_param(&pairs, "user").unwrap_or_default();
            return Err(fail(
                StatusCode::BAD_REQUEST,
                format!("{plugin}: invalid user name {given:?}: {e}"),
            ));
        }
        Some(Ok(u)) => u.clone(),
    };
    let callback = state.callback_url(&plugin);
    match consent::begin(
        state.rt.store.as_ref(),
        &provider,
        &plugin,
        &user,
        &callback,
        state.rt.clock,
    )
    .await
    {
        Ok(url) => Ok(Redirect::to(url.as_str()).into_response()),
        Err(ConsentError::NoApp) => Err(fail(
            StatusCode::FORBIDDEN,
            format!(
                "{plugin}: the app is not registered (client_id and client_secret in plugindata/{plugin})"
            ),
        )),
        Err(e @ ConsentError::TooMany) => Err(fail(StatusCode::TOO_MANY_REQUESTS, e.to_string())),
        Err(e) => Err(fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// `auth2?code=..&state=..`: exchange the code, store the token.
async fn auth2(
    State(state): State<Arc<AppState>>,
    Path(plugin): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    let (provider, pairs) = plugin_query(&state, &plugin, query)?;
    let store = state.rt.store.as_ref();
    let st = get_param(&pairs, "state");
    if let Some(err) = get_param(&pairs, "error") {
        let user = match st {
            Some(st) => consent::abandon(store, &plugin, st).await,
            None => None,
        };
        return Err(
            AppError::bad_request(format!("the provider did not grant access: {err}")).consent(
                &headers,
                &plugin,
                user.as_deref(),
            ),
        );
    }
    let (Some(code), Some(st)) = (get_param(&pairs, "code"), st) else {
        return Err(
            AppError::bad_request("auth2 needs the code and state arguments")
                .consent(&headers, &plugin, None),
        );
    };
    let user = consent::pending_user(store, &plugin, st).await;
    let fail = |status: StatusCode, e: ConsentError| {
        AppError::new(status, e.to_string()).consent(&headers, &plugin, user.as_deref())
    };
    match consent::complete(
        store,
        state.rt.transport.as_ref(),
        &provider,
        &plugin,
        code,
        st,
        state.rt.clock,
    )
    .await
    {
        Ok(user) => Ok(if browser(&headers) {
            Html(html::granted_page(&plugin, &user)).into_response()
        } else {
            text(StatusCode::OK, "ok".into())
        }),
        Err(e @ (ConsentError::UnknownState | ConsentError::Expired | ConsentError::NoApp)) => {
            Err(fail(StatusCode::FORBIDDEN, e))
        }
        Err(e) => Err(fail(StatusCode::BAD_GATEWAY, e)),
    }
}

/// Parameters of a GET query or a POST form.
fn params_of(method: &Method, query: Option<String>, body: &Bytes) -> Vec<(String, String)> {
    if *method == Method::POST {
        return pairs(&String::from_utf8_lossy(body));
    }
    pairs(query.as_deref().unwrap_or(""))
}

/// The `user` parameter as a [`UserName`]: 400 when it is missing or not a valid name.
fn user_param(plugin: &str, pairs: &[(String, String)]) -> Result<UserName, AppError> {
    let Some(text) = get_param(pairs, "user") else {
        return Err(AppError::bad_request(format!(
            "{plugin}: the user argument is required"
        )));
    };
    UserName::parse(text).map_err(|e| {
        AppError::bad_request(format!(
            "{plugin}: invalid user name {:?}: {e}",
            text.escape_debug().to_string()
        ))
    })
}

/// The user settings a `userSettings` request writes: every parameter that is not one
/// of the request's own, and `_newName=_newValue`.
fn user_fields(pairs: &[(String, String)]) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "user" | "delete" | "deleteToken" | "returnTo" | "_newName" | "_newValue" | "_csrf"
            )
        })
        .cloned()
        .collect();
    if let (Some(n), Some(v)) = (get_param(pairs, "_newName"), get_param(pairs, "_newValue")) {
        fields.push((n.to_owned(), v.to_owned()));
    }
    fields
}

/// A refused setting: for a form posted from the setup page (it names `returnTo`), the
/// page again with the error beside the field; else a 400 text.
async fn refused(
    state: &AppState,
    plugin: &str,
    pairs: &[(String, String)],
    e: crate::settings::SettingError,
) -> Result<Response, AppError> {
    if get_param(pairs, "returnTo").is_some() {
        let error = page::FieldError {
            field: e.field().to_owned(),
            message: e.to_string(),
        };
        return page::render(state, plugin, get_param(pairs, "user"), Some(&error)).await;
    }
    Err(AppError::bad_request(format!("{plugin}: {e}")))
}

/// Only paths on this server may be returned to (no open redirect).
fn safe_return(to: Option<&str>) -> Option<String> {
    let to = to?;
    let ok = to.starts_with('/')
        && !to.starts_with("//")
        && !to.contains('\\')
        && !to.contains("://")
        && !to.chars().any(|c| c.is_control());
    ok.then(|| to.to_owned())
}

/// The parameters of a settings request, after the plugin, cross-site and form-token checks,
/// and the `returnTo` check (before anything changes, so a refused one changes nothing).
fn form_params(
    state: &AppState,
    plugin: &str,
    method: &Method,
    headers: &HeaderMap,
    query: Option<String>,
    body: &Bytes,
) -> Result<Vec<(String, String)>, AppError> {
    state.provider(plugin)?;
    let pairs = params_of(method, query, body);
    access::check_csrf(&state.hosts, &state.csrf, plugin, method, headers, &pairs)?;
    if let Some(to) = get_param(&pairs, "returnTo") {
        if safe_return(Some(to)).is_none() {
            return Err(AppError::bad_request(
                "returnTo must be a path on this server",
            ));
        }
    }
    Ok(pairs)
}

/// The answer of a settings request: 303 to `returnTo` (local paths only), else `reply`.
fn done(pairs: &[(String, String)], reply: String) -> Result<Response, AppError> {
    match get_param(pairs, "returnTo") {
        Some(to) => match safe_return(Some(to)) {
            Some(to) => Ok(Redirect::to(&to).into_response()),
            None => Err(AppError::bad_request(
                "returnTo must be a path on this server",
            )),
        },
        None => Ok(text(StatusCode::OK, reply)),
    }
}

/// `settings?client_id=&client_secret=&system=[&returnTo=]`.
async fn settings(
    State(state): State<Arc<AppState>>,
    Path(plugin): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, AppError> {
    let pairs = form_params(&state, &plugin, &method, &headers, query, &body)?;
    if let Some(system) = get_param(&pairs, "system") {
        if let Err(e) = crate::settings::check_system(system) {
            return refused(&state, &plugin, &pairs, e).await;
        }
    }
    let store = state.rt.store.as_ref();
    let mut last = None;
    for key in ["client_id", "client_secret", "system"] {
        if let Some(v) = get_param(&pairs, key) {
            if key == "client_secret" {
                crate::secret::register(v);
            }
            let path = format!("{}/{key}", paths::app(&plugin));
            store.put(&path, &Value::String(v.to_owned())).await?;
            last = Some(path);
        }
    }
    store.save().await?;
    done(
        &pairs,
        last.map(|p| format!("/data/{p}"))
            .unwrap_or_else(|| "ok".into()),
    )
}

/// `userSettings?user=U[&delete=1][&deleteToken=1][&k=v][&_newName=n&_newValue=v][&returnTo=]`.
async fn user_settings(
    State(state): State<Arc<AppState>>,
    Path(plugin): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, AppError> {
    let pairs = form_params(&state, &plugin, &method, &headers, query, &body)?;
    let user = user_param(&plugin, &pairs)?;
    let provider = state.provider(&plugin)?;
    let fields = user_fields(&pairs);
    for (k, v) in &fields {
        if let Err(e) = crate::settings::check_user_default(&provider, k, v) {
            return refused(&state, &plugin, &pairs, e).await;
        }
    }
    let store = state.rt.store.as_ref();
    let base = paths::user(&plugin, &user);
    let mut revocation_failed = None;
    let result: Result<(), crate::store::StoreError> = async {
        if get_param(&pairs, "delete") == Some("1") {
            // A deleted user's grant ends at the provider too.
            if let Some(provider) = state.plugins.get(&plugin) {
                if let live::TokenDeletion::RevocationFailed(why) =
                    live::delete_token(&state.rt, provider, &plugin, &user).await?
                {
                    revocation_failed = Some(why);
                }
            }
            live::remove(store, &base).await?;
            live::remove(store, &paths::status(&plugin, &user)).await?;
        } else {
            if store.get(&base).await?.is_none() {
                store.put(&base, &json!({})).await?;
            }
            if get_param(&pairs, "deleteToken") == Some("1") {
                let provider = state.plugins.get(&plugin);
                if let Some(provider) = provider {
                    if let live::TokenDeletion::RevocationFailed(why) =
                        live::delete_token(&state.rt, provider, &plugin, &user).await?
                    {
                        revocation_failed = Some(why);
                    }
                } else {
                    live::remove(store, &paths::token(&plugin, &user)).await?;
                }
            }
            for (k, v) in fields {
                let path = format!("{base}/{k}");
                if v.is_empty() {
                    live::remove(store, &path).await?;
                } else {
                    store.put(&path, &Value::String(v)).await?;
                }
            }
            live::update_status(store, &plugin, &user, json!({"known": true})).await;
        }
        store.save().await
    }
    .await;
    result?;
    if let Some(why) = revocation_failed {
        return Err(AppError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "the token of {user} is deleted here, but the provider did not confirm the revocation ({why}); the grant may still be valid there"
            ),
        ));
    }
    done(&pairs, format!("/data/{base}"))
}

async fn status(
    State(state): State<Arc<AppState>>,
    Path(plugin): Path<String>,
) -> Result<Response, AppError> {
    state.provider(&plugin)?;
    let v = status::plugin_status_with_methods(&state, &plugin)
        .await
        .map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string_pretty(&v).unwrap_or_default(),
    )
        .into_response())
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut out = String::new();
    out.push_str("# HELP healthpull_http_requests_total HTTP requests served.\n# TYPE healthpull_http_requests_total counter\n");
    out.push_str(&format!(
        "healthpull_http_requests_total {}\n",
        state.metrics.requests.load(Ordering::Relaxed)
    ));
    out.push_str("# HELP healthpull_fetches_total Fetches by result.\n# TYPE healthpull_fetches_total counter\n");
    for (result, map) in [
        ("ok", &state.metrics.fetch_ok),
        ("error", &state.metrics.fetch_failed),
    ] {
        let m = map.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut keys: Vec<_> = m.into_iter().collect();
        keys.sort();
        for (k, n) in keys {
            let (plugin, user) = k.split_once('\u{0}').unwrap_or((&k, ""));
            out.push_str(&format!(
                "healthpull_fetches_total{{plugin=\"{}\",user=\"{}\",result=\"{result}\"}} {n}\n",
                label(plugin),
                label(user)
            ));
        }
    }
    out.push_str("# HELP healthpull_unknown_user_fetches_total Fetches for names without stored data, by result.\n# TYPE healthpull_unknown_user_fetches_total counter\n");
    for (result, map) in [
        ("ok", &state.metrics.unknown_ok),
        ("error", &state.metrics.unknown_failed),
    ] {
        let m = map.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut keys: Vec<_> = m.into_iter().collect();
        keys.sort();
        for (plugin, n) in keys {
            out.push_str(&format!(
                "healthpull_unknown_user_fetches_total{{plugin=\"{}\",result=\"{result}\"}} {n}\n",
                label(&plugin)
            ));
        }
    }
    let mut granted = String::new();
    let mut consent = String::new();
    let mut expiry = String::new();
    let mut success = String::new();
    let mut history = HistoryGauges::default();
    for plugin in state.plugins.keys() {
        let Ok(v) = status::plugin_status_with_methods(&state, plugin).await else {
            continue;
        };
        let Some(Value::Object(users)) = v.get("users") else {
            continue;
        };
        for (user, s) in users {
            let l = format!("plugin=\"{}\",user=\"{}\"", label(plugin), label(user));
            let g = s["granted"].as_bool().unwrap_or(false) as u8;
            let c = s["consent_needed"].as_bool().unwrap_or(false) as u8;
            granted.push_str(&format!("healthpull_user_granted{{{l}}} {g}\n"));
            consent.push_str(&format!("healthpull_user_consent_needed{{{l}}} {c}\n"));
            if let Some(e) = s["token_expires_at"].as_f64() {
                expiry.push_str(&format!("healthpull_token_expires_at_seconds{{{l}}} {e}\n"));
            }
            if let Some(t) = s["last_success"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            {
                success.push_str(&format!(
                    "healthpull_last_success_seconds{{{l}}} {}\n",
                    t.timestamp()
                ));
            }
            if let Some(Value::Object(methods)) = s.get("methods") {
                for (method, m) in methods {
                    history.add(&format!("{l},method=\"{}\"", label(method)), m);
                }
            }
        }
    }
    for (name, help, body) in [
        (
            "healthpull_user_granted",
            "Whether the user has a token.",
            granted,
        ),
        (
            "healthpull_user_consent_needed",
            "Whether the user must grant access again.",
            consent,
        ),
        (
            "healthpull_token_expires_at_seconds",
            "When the user's access token expires.",
            expiry,
        ),
        (
            "healthpull_last_success_seconds",
            "When the user's data was last stored.",
            success,
        ),
        (
            "healthpull_covered_days",
            "Days of the method's history the archive covers.",
            history.covered,
        ),
        (
            "healthpull_last_run_ok",
            "Whether the method's last run archived every window.",
            history.ok,
        ),
        (
            "healthpull_last_run_entries",
            "Entries the method's last run added, changed or found unchanged.",
            history.entries,
        ),
        (
            "healthpull_backfill_windows_done",
            "Windows the method's last backfill archived.",
            history.backfill,
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{body}"
        ));
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}

/// The per-method gauges of `/metrics`, read from each method's status
/// ([`live::sync::method_status`]): only methods with a record in the archive get series.
#[derive(Default)]
struct HistoryGauges {
    covered: String,
    ok: String,
    entries: String,
    backfill: String,
}

impl HistoryGauges {
    /// Adds the series of one method, `l` being its labels.
    fn add(&mut self, l: &str, m: &Value) {
        if let Some(days) = covered_days(&m["covered"]) {
            self.covered
                .push_str(&format!("healthpull_covered_days{{{l}}} {days}\n"));
        }
        let run = &m["last_run"];
        if let Some(outcome) = run["outcome"].as_str() {
            let ok = u8::from(outcome == "ok");
            self.ok
                .push_str(&format!("healthpull_last_run_ok{{{l}}} {ok}\n"));
            for kind in ["added", "changed", "unchanged"] {
                let n = run[kind].as_u64().unwrap_or(0);
                self.entries.push_str(&format!(
                    "healthpull_last_run_entries{{{l},kind=\"{kind}\"}} {n}\n"
                ));
            }
        }
        if let Some(done) = m["backfill"]["windows_done"].as_u64() {
            self.backfill
                .push_str(&format!("healthpull_backfill_windows_done{{{l}}} {done}\n"));
        }
    }
}

/// The number of days a `covered` record ({first, last, gaps}) covers.
fn covered_days(covered: &Value) -> Option<i64> {
    let day =
        |k: &str| chrono::NaiveDate::parse_from_str(covered.get(k)?.as_str()?, "%Y-%m-%d").ok();
    let (first, last) = (day("first")?, day("last")?);
    let gaps = covered.get("gaps").and_then(Value::as_i64).unwrap_or(0);
    Some((last - first).num_days() + 1 - gaps)
}
