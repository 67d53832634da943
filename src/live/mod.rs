//! The live path: tokens that are never lost, resilient calls, and storing results.
//!
//! [`LiveCaller`] is the engine's [`Caller`] against a real provider. Before a call it
//! makes sure the access token is fresh; on a 401 that means an expired token it
//! refreshes once and retries. Refreshes are single-flight per (plugin, user) within
//! the process and across processes ([`crate::auth::lock`]), re-read the store under the lock
//! (someone else may have refreshed already), retry a lost answer with the same
//! refresh token, and persist the new token before anything uses it.

pub mod consent;
pub mod sync;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use indexmap::IndexMap;
use rand::Rng;
use serde_json::{Map, Value, json};

use crate::auth::lock::Locks;
use crate::auth::oauth::{self, AppCredentials, Token, TokenError};
use crate::engine::request::{HttpRequest, RequestBody};
use crate::engine::{self, CallError, Caller, EngineError, FetchPlan};
use crate::http::{self, Limits, Transport};
use crate::igor::paths;
use crate::provider::Provider;
use crate::provider::raw::{BudgetConfig, BudgetScope, ErrorKind, ResetUnit, Verb};
use crate::secret::{Secret, redact};
use crate::sensors::Sensors;
use crate::settings::{SettingError, UserSettings};
use crate::store::{Archive, Store};
use crate::transform::Doc;
use crate::user::UserName;

/// The clock, pinned or real.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    pinned: Option<DateTime<Utc>>,
}

impl Clock {
    /// A clock pinned at `at`, or the real one.
    pub fn new(pinned: Option<DateTime<Utc>>) -> Clock {
        Clock { pinned }
    }
    /// Now.
    pub fn now(&self) -> DateTime<Utc> {
        self.pinned.unwrap_or_else(Utc::now)
    }
    /// Now in epoch seconds.
    pub fn epoch(&self) -> f64 {
        self.now().timestamp_millis() as f64 / 1000.0
    }
}

/// What every live call shares: store, locks, clock and rate budgets.
#[derive(Clone)]
pub struct Runtime {
    /// Settings, tokens and data.
    pub store: Arc<dyn Store>,
    /// The archive of entries, coverage, run statuses and shared budgets.
    pub archive: Arc<dyn Archive>,
    /// Refresh locks: per machine (lock files), or across every instance sharing a
    /// PostgreSQL store (advisory locks).
    pub locks: Arc<dyn Locks>,
    /// The clock.
    pub clock: Clock,
    /// The HTTP transport of API and token calls (the process's one client).
    pub transport: Arc<dyn Transport>,
}

/// The key a budget is counted under: per user, or for the plugin's whole app.
pub fn budget_key(plugin: &str, user: &UserName, budget: &BudgetConfig) -> String {
    match budget.scope {
        BudgetScope::User => format!("{plugin}/{user}/{}", budget.per_seconds),
        BudgetScope::App => format!("{plugin}/{}", budget.per_seconds),
    }
}

/// Text of a stored leaf (the Igor store returns strings, the embedded one JSON values).
pub fn leaf_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A stored number (the Igor store returns numbers as their text).
pub fn leaf_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn store_err(e: impl std::fmt::Display) -> CallError {
    CallError {
        kind: ErrorKind::Fatal,
        status: None,
        message: redact(&format!("store: {e}")),
    }
}

/// Reads the app registration; `None` when client id or secret is missing.
pub async fn app_credentials(
    store: &dyn Store,
    plugin: &str,
) -> Result<Option<AppCredentials>, crate::store::StoreError> {
    let base = paths::app(plugin);
    let id = leaf_text(store.get(&format!("{base}/client_id")).await?.as_ref());
    let secret = leaf_text(store.get(&format!("{base}/client_secret")).await?.as_ref());
    Ok(match (id, secret) {
        (Some(client_id), Some(secret)) => {
            Some(AppCredentials::new(client_id, Secret::new(secret)))
        }
        _ => None,
    })
}

/// Reads the user's token.
pub async fn stored_token(
    store: &dyn Store,
    plugin: &str,
    user: &UserName,
) -> Result<Option<Token>, crate::store::StoreError> {
    Ok(store
        .get(&paths::token(plugin, user))
        .await?
        .as_ref()
        .and_then(Token::from_stored))
}

/// Writes a token unless the stored one is newer; then makes it durable.
pub async fn persist_token(
    store: &dyn Store,
    plugin: &str,
    user: &UserName,
    token: &Token,
) -> Result<(), crate::store::StoreError> {
    if let Some(current) = stored_token(store, plugin, user).await? {
        if current.issued_at > token.issued_at {
            return Ok(());
        }
    }
    store
        .put(&paths::token(plugin, user), &token.to_stored())
        .await?;
    store.save().await
}

/// Removes a subtree; where the store refuses deletes (an Igor identity with `put` but
/// no `delete` rights), it is emptied instead, which reads as absent for tokens.
pub async fn remove(store: &dyn Store, path: &str) -> Result<(), crate::store::StoreError> {
    match store.delete(path).await {
        Ok(()) => Ok(()),
        Err(e) => {
            if store.get(path).await?.is_none() {
                return Ok(());
            }
            store.put(path, &json!({})).await.map_err(|_| e)
        }
    }
}

/// What deleting a user's token did at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenDeletion {
    /// No token was stored.
    NoToken,
    /// The provider has no `auth.revoke_url`: the token was only deleted here.
    NotRevocable,
    /// The provider revoked the grant, then the token was deleted here.
    Revoked,
    /// The provider did not confirm the revocation (the grant may still be valid there);
    /// the token was deleted here all the same.
    RevocationFailed(String),
}

/// Deletes the user's token, revoking it at the provider first where the provider file
/// says how (`auth.revoke_url`). The local token is deleted whatever the provider says;
/// only a store failure is an error. Holds the refresh lock, so a refresh running at the
/// same time cannot write the token back.
pub async fn delete_token(
    rt: &Runtime,
    provider: &Provider,
    plugin: &str,
    user: &UserName,
) -> Result<TokenDeletion, crate::store::StoreError> {
    let store = rt.store.as_ref();
    // The refresh lock keeps a refresh from storing a new token after this deletion.
    // Without it (the lock cannot be taken), the token is deleted anyway, as asked.
    let _guard = match rt.locks.lock(&format!("{plugin}--{user}")).await {
        Ok(guard) => Some(guard),
        Err(e) => {
            tracing::warn!(plugin, user = %user, error = %redact(&e.to_string()), "Deleting the token without the refresh lock: a refresh running now may store a new one");
            None
        }
    };
    let host = user_settings(store, plugin, user).await?.host;
    let hosted = provider.at_host(host.as_deref());
    let provider = hosted.as_ref();
    let outcome = match stored_token(store, plugin, user).await {
        Ok(None) => TokenDeletion::NoToken,
        Ok(Some(_)) if provider.auth.revoke_url.is_none() => TokenDeletion::NotRevocable,
        Ok(Some(token)) => match app_credentials(store, plugin).await {
            Ok(Some(app)) => {
                match oauth::revoke(rt.transport.as_ref(), provider, &app, &token).await {
                    Ok(oauth::Revocation::Revoked) => TokenDeletion::Revoked,
                    Ok(oauth::Revocation::NotSupported) => TokenDeletion::NotRevocable,
                    Err(e) => TokenDeletion::RevocationFailed(redact(&e.to_string())),
                }
            }
            Ok(None) => TokenDeletion::RevocationFailed(
                "the app registration (client id and secret) is missing".to_owned(),
            ),
            Err(e) => TokenDeletion::RevocationFailed(redact(&format!(
                "the app registration cannot be read: {e}"
            ))),
        },
        Err(e) if provider.auth.revoke_url.is_none() => {
            tracing::warn!(plugin, user = %user, error = %redact(&e.to_string()), "Deleting a token that cannot be read");
            TokenDeletion::NotRevocable
        }
        Err(e) => TokenDeletion::RevocationFailed(redact(&format!(
            "the stored token cannot be read: {e}"
        ))),
    };
    if let TokenDeletion::RevocationFailed(why) = &outcome {
        tracing::warn!(plugin, user = %user, error = %why, "The provider did not revoke the token; deleting it here anyway");
    }
    remove(store, &paths::token(plugin, user)).await?;
    store.save().await?;
    Ok(outcome)
}

/// Merges fields into the user's status record. String values are redacted before they
/// are stored: provider text in `last_error` never reaches the store with a secret in it.
pub async fn update_status(store: &dyn Store, plugin: &str, user: &UserName, mut fields: Value) {
    crate::secret::redact_json(&mut fields);
    let path = paths::status(plugin, user);
    let mut current = match store.get(&path).await {
        Ok(Some(Value::Object(m))) => m,
        _ => Map::new(),
    };
    if let Value::Object(f) = fields {
        for (k, v) in f {
            current.insert(k, v);
        }
    }
    if let Err(e) = store.put(&path, &Value::Object(current)).await {
        tracing::warn!(plugin, user = %user, error = %e, "Cannot record the user's status");
    }
}

/// The engine's caller against the real provider, for one user.
pub struct LiveCaller {
    provider: Arc<Provider>,
    plugin: String,
    user: UserName,
    rt: Runtime,
    app: AppCredentials,
    token: tokio::sync::Mutex<Option<Token>>,
    /// The user's status as read when the fetch started: the first call's rate-limit
    /// check reads it here instead of from the store again.
    status: Mutex<Option<Value>>,
    /// Set when a refresh failed.
    token_failed: std::sync::atomic::AtomicBool,
}

impl LiveCaller {
    /// A caller for `user` of `plugin`.
    pub fn new(
        provider: Arc<Provider>,
        plugin: &str,
        user: &UserName,
        rt: Runtime,
        app: AppCredentials,
    ) -> LiveCaller {
        LiveCaller {
            provider,
            plugin: plugin.to_owned(),
            user: user.clone(),
            rt,
            app,
            token: tokio::sync::Mutex::new(None),
            status: Mutex::new(None),
            token_failed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The same caller, starting from the token and status just read from the store
    /// (refreshes still re-read the token under the lock).
    pub fn with_stored(self, token: Token, status: Option<Value>) -> LiveCaller {
        LiveCaller {
            token: tokio::sync::Mutex::new(Some(token)),
            status: Mutex::new(Some(status.unwrap_or(Value::Null))),
            ..self
        }
    }

    fn lock_key(&self) -> String {
        format!("{}--{}", self.plugin, self.user)
    }

    /// A token fit for use now: the cached or stored one, refreshed if it expires soon.
    async fn fresh_token(&self) -> Result<Token, CallError> {
        let cached = self.token.lock().await.clone();
        let token = match cached {
            Some(t) => t,
            None => stored_token(self.rt.store.as_ref(), &self.plugin, &self.user)
                .await
                .map_err(store_err)?
                .ok_or_else(|| self.consent_error("no token is stored for this user"))?,
        };
        let cfg = &self.provider.auth.config.refresh;
        let token =
            if cfg.enabled && token.expires_soon(self.rt.clock.epoch(), cfg.skew_seconds as f64) {
                self.refresh(&token, false).await?
            } else {
                token
            };
        *self.token.lock().await = Some(token.clone());
        Ok(token)
    }

    fn consent_error(&self, why: &str) -> CallError {
        CallError {
            kind: ErrorKind::ConsentNeeded,
            status: None,
            message: format!(
                "{why}: user `{}` must grant access again (auth1, or `healthpull auth {} --user {}`)",
                self.user, self.plugin, self.user
            ),
        }
    }

    /// Refreshes `seen` unless someone else already did; `after_401` forces a refresh
    /// of a token the provider called expired even when its expiry says otherwise.
    /// Whether a refresh of this caller's token failed: every further call would fail
    /// the same way, so a run stops.
    pub fn token_failed(&self) -> bool {
        self.token_failed.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn refresh(&self, seen: &Token, after_401: bool) -> Result<Token, CallError> {
        let result = self.refresh_token(seen, after_401).await;
        if result.is_err() {
            self.token_failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }

    async fn refresh_token(&self, seen: &Token, after_401: bool) -> Result<Token, CallError> {
        let store = self.rt.store.as_ref();
        let _guard = self
            .rt
            .locks
            .lock(&self.lock_key())
            .await
            .map_err(|e| store_err(format!("lock: {e}")))?;
        let current = stored_token(store, &self.plugin, &self.user)
            .await
            .map_err(store_err)?
            .ok_or_else(|| self.consent_error("the token was deleted"))?;
        let skew = self.provider.auth.config.refresh.skew_seconds as f64;
        let now = self.rt.clock.epoch();
        if current.access != seen.access && !current.expires_soon(now, skew) {
            return Ok(current);
        }
        if !after_401 && !current.expires_soon(now, skew) {
            return Ok(current);
        }
        if !self.provider.auth.config.refresh.enabled {
            return Err(
                self.consent_error("the access token expired and this provider cannot refresh")
            );
        }
        let attempts = self.provider.api.config.retry.attempts.max(1);
        let mut last = None;
        for attempt in 0..attempts {
            let outcome = oauth::refresh(
                self.rt.transport.as_ref(),
                &self.provider,
                &self.app,
                &current,
                self.rt.clock.epoch(),
            )
            .await;
            let error = match outcome {
                Ok(new) => {
                    persist_token(store, &self.plugin, &self.user, &new)
                        .await
                        .map_err(store_err)?;
                    tracing::info!(plugin = %self.plugin, user = %self.user, "Refreshed the access token");
                    update_status(
                        store,
                        &self.plugin,
                        &self.user,
                        json!({"consent_needed": false, "token_expires_at": new.expires_at}),
                    )
                    .await;
                    return Ok(new);
                }
                // A lost answer or a passing failure: the same refresh token again.
                Err(e) if e.is_retryable() => e,
                Err(e @ (TokenError::InvalidGrant { .. } | TokenError::NoRefreshToken)) => {
                    // Another process may have refreshed without us seeing it yet.
                    if let Ok(Some(again)) = stored_token(store, &self.plugin, &self.user).await {
                        if again.access != current.access {
                            return Ok(again);
                        }
                    }
                    let why = redact(&match e {
                        TokenError::InvalidGrant { message } => message,
                        other => other.to_string(),
                    });
                    update_status(
                        store,
                        &self.plugin,
                        &self.user,
                        json!({"consent_needed": true, "last_error": why, "last_error_at": self.rt.clock.now().to_rfc3339()}),
                    )
                    .await;
                    return Err(
                        self.consent_error(&format!("the refresh token was refused ({why})"))
                    );
                }
                Err(e) => {
                    // The message names a refusal's status already.
                    let (kind, status) = match &e {
                        TokenError::Retired { status, .. } => (ErrorKind::Retired, Some(*status)),
                        _ => (ErrorKind::Fatal, None),
                    };
                    return Err(CallError {
                        kind,
                        status,
                        message: format!("token refresh failed: {}", redact(&e.to_string())),
                    });
                }
            };
            let wait = match &error {
                TokenError::RateLimited {
                    retry_after: Some(s),
                    ..
                } => Duration::from_secs(*s).min(Duration::from_millis(
                    self.provider.api.config.retry.max_wait_ms,
                )),
                _ => self.backoff(attempt),
            };
            last = Some(error);
            if attempt + 1 < attempts {
                tokio::time::sleep(wait).await;
            }
        }
        let kind = match last {
            Some(TokenError::RateLimited { .. }) => ErrorKind::RateLimited,
            _ => ErrorKind::Transient,
        };
        Err(CallError {
            kind,
            status: None,
            message: format!(
                "token refresh failed after {attempts} attempts: {}",
                last.map(|e| redact(&e.to_string())).unwrap_or_default()
            ),
        })
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let r = &self.provider.api.config.retry;
        let base = r.backoff_ms.saturating_mul(1u64 << attempt.min(16));
        let jitter = rand::rng().random_range(0..=base / 2 + 1);
        Duration::from_millis((base + jitter).min(r.max_wait_ms))
    }

    /// Checks the client-side budgets; `Err` names when the budget resets.
    async fn take_budget(&self) -> Result<(), CallError> {
        let now = self.rt.clock.epoch();
        let seen = self.status.lock().unwrap_or_else(|e| e.into_inner()).take();
        let status = match seen {
            Some(status) => Some(status),
            None => self
                .rt
                .store
                .get(&paths::status(&self.plugin, &self.user))
                .await
                .ok()
                .flatten(),
        };
        if let Some(status) = status {
            if let Some(until) = status.get("rate_limited_until").and_then(leaf_number) {
                if until > now {
                    return Err(budget_error(until));
                }
            }
        }
        for b in &self.provider.api.config.rate_limit.budgets {
            let key = budget_key(&self.plugin, &self.user, b);
            self.rt
                .archive
                .take_call(&key, b.limit, b.per_seconds as f64, now)
                .await
                .map_err(|e| CallError {
                    kind: ErrorKind::Fatal,
                    status: None,
                    message: format!("cannot count the call against the rate budget: {e}"),
                })?
                .map_err(budget_error)?;
        }
        Ok(())
    }

    /// When the provider's headers say the limit resets, in epoch seconds.
    fn reset_time(&self, headers: &::http::HeaderMap) -> Option<f64> {
        let now = self.rt.clock.epoch();
        let rl = &self.provider.api.config.rate_limit;
        let mut candidates = rl.reset_headers.clone();
        if !candidates
            .iter()
            .any(|h| h.header.eq_ignore_ascii_case("retry-after"))
        {
            candidates.push(crate::provider::raw::ResetHeaderConfig {
                header: "Retry-After".into(),
                unit: ResetUnit::RetryAfter,
            });
        }
        for h in &candidates {
            let Some(v) = headers.get(h.header.as_str()).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            let v = v.trim();
            let at = match h.unit {
                ResetUnit::Seconds => v.parse::<f64>().ok().map(|s| now + s),
                ResetUnit::Epoch => v.parse::<f64>().ok(),
                ResetUnit::RetryAfter => v.parse::<f64>().ok().map(|s| now + s).or_else(|| {
                    httpdate::parse_http_date(v).ok().map(|t| {
                        t.duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_secs_f64())
                            .unwrap_or(now)
                    })
                }),
            };
            if at.is_some() {
                return at;
            }
        }
        rl.usage.as_ref().and_then(|u| usage_reset(u, headers, now))
    }

    async fn send_once(&self, request: &HttpRequest, token: &Token) -> Result<Answer, String> {
        send_with_token(self.rt.transport.as_ref(), &self.provider, request, token).await
    }

    async fn record_rate_limit(&self, until: f64) {
        update_status(
            self.rt.store.as_ref(),
            &self.plugin,
            &self.user,
            json!({"rate_limited_until": until}),
        )
        .await;
    }
}

/// When the latest of the used-up windows of a limit/usage header pair resets (None
/// while every window has calls left): the next multiple of its length since the epoch.
fn usage_reset(
    usage: &crate::provider::raw::UsageHeadersConfig,
    headers: &::http::HeaderMap,
    now: f64,
) -> Option<f64> {
    let numbers = |name: &str| -> Vec<Option<f64>> {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').map(|n| n.trim().parse::<f64>().ok()).collect())
            .unwrap_or_default()
    };
    let (limits, used) = (numbers(&usage.limit_header), numbers(&usage.usage_header));
    usage
        .windows
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            matches!(
                (limits.get(*i).copied().flatten(), used.get(*i).copied().flatten()),
                (Some(limit), Some(used)) if used >= limit
            )
        })
        .map(|(_, &window)| {
            let w = window.max(1) as f64;
            ((now / w).floor() + 1.0) * w
        })
        .reduce(f64::max)
}

/// Sends one request of `provider` with the user's access token (and `Accept: application/json`
/// unless the request names another), and reads the whole answer within the provider's limits.
pub(crate) async fn send_with_token(
    transport: &dyn Transport,
    provider: &Provider,
    request: &HttpRequest,
    token: &Token,
) -> Result<Answer, String> {
    let method = match request.verb {
        Verb::Get => ::http::Method::GET,
        Verb::Post => ::http::Method::POST,
    };
    let mut builder = http::request(method, request.url.as_str()).header(
        ::http::header::AUTHORIZATION,
        format!("Bearer {}", token.access.expose()),
    );
    let mut has_accept = false;
    for (k, v) in &request.headers {
        has_accept |= k.eq_ignore_ascii_case("accept");
        builder = builder.header(k.as_str(), v.as_str());
    }
    if !has_accept {
        builder = builder.header(::http::header::ACCEPT, "application/json");
    }
    let body = match &request.body {
        Some(body) => {
            builder = builder.header(::http::header::CONTENT_TYPE, body.content_type());
            bytes::Bytes::from(match body {
                RequestBody::Form(_) | RequestBody::Json(_) => body.encoded(),
            })
        }
        None => bytes::Bytes::new(),
    };
    let request = builder
        .body(body)
        .map_err(|e| redact(&format!("the request cannot be built: {e}")))?;
    let limits = Limits {
        timeout: Duration::from_secs(provider.api.config.timeout_seconds),
        max_bytes: provider.api.config.max_response_bytes,
    };
    let response = transport
        .send(request, limits)
        .await
        .map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// An answer as received.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: ::http::HeaderMap,
    pub(crate) body: bytes::Bytes,
}

fn budget_error(until: f64) -> CallError {
    let at = Utc
        .timestamp_opt(until as i64, 0)
        .single()
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| until.to_string());
    CallError {
        kind: ErrorKind::RateLimited,
        status: None,
        message: format!("rate budget exhausted until {at}"),
    }
}

#[async_trait]
impl Caller for LiveCaller {
    async fn call(&self, request: &HttpRequest) -> Result<Doc, CallError> {
        let mut token = self.fresh_token().await?;
        let attempts = self.provider.api.config.retry.attempts.max(1);
        let max_wait = self.provider.api.config.retry.max_wait_ms as f64 / 1000.0;
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            self.take_budget().await?;
            let answer = match self.send_once(request, &token).await {
                Ok(a) => a,
                Err(why) => {
                    attempt += 1;
                    if attempt < attempts {
                        tokio::time::sleep(self.backoff(attempt - 1)).await;
                        continue;
                    }
                    return Err(CallError {
                        kind: ErrorKind::Transient,
                        status: None,
                        message: format!("{why} (after {attempts} attempts)"),
                    });
                }
            };
            let headers = answer.headers;
            let status = answer.status;
            // The answer's document, from its bytes: the same the replay indexes.
            let doc = Doc::of_answer(status, answer.body.into());
            if let Some(usage) = &self.provider.api.config.rate_limit.usage
                && let Some(until) = usage_reset(usage, &headers, self.rt.clock.epoch())
            {
                self.record_rate_limit(until).await;
            }
            if let Some(rl) = &self.provider.api.config.rate_limit.remaining_header {
                let left = headers
                    .get(rl.as_str())
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<i64>().ok());
                if left == Some(0) {
                    if let Some(until) = self.reset_time(&headers) {
                        self.record_rate_limit(until).await;
                    }
                }
            }
            match engine::classify(&self.provider, status, doc.as_ref()) {
                None => {
                    let kept = engine::answer_headers(
                        &self.provider,
                        headers
                            .iter()
                            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
                    );
                    return doc.map(|d| d.with_headers(kept)).ok_or_else(|| CallError {
                        kind: ErrorKind::Fatal,
                        status: Some(status),
                        message: "the answer is not JSON".to_owned(),
                    });
                }
                Some((ErrorKind::AuthExpired, _)) if !refreshed => {
                    refreshed = true;
                    token = self.refresh(&token, true).await?;
                    *self.token.lock().await = Some(token.clone());
                }
                Some((ErrorKind::RateLimited, message)) => {
                    let until = self.reset_time(&headers);
                    attempt += 1;
                    let now = self.rt.clock.epoch();
                    match until {
                        Some(u) if u - now <= max_wait && attempt < attempts => {
                            tokio::time::sleep(Duration::from_secs_f64((u - now).max(0.0))).await;
                        }
                        Some(u) => {
                            self.record_rate_limit(u).await;
                            let mut e = budget_error(u);
                            e.status = Some(status);
                            e.message =
                                format!("rate limited ({}); {}", redact(&message), e.message);
                            return Err(e);
                        }
                        None if attempt < attempts => {
                            tokio::time::sleep(self.backoff(attempt - 1)).await;
                        }
                        None => {
                            return Err(CallError {
                                kind: ErrorKind::RateLimited,
                                status: Some(status),
                                message: redact(&message),
                            });
                        }
                    }
                }
                Some((ErrorKind::Transient, message)) => {
                    attempt += 1;
                    if attempt < attempts {
                        tokio::time::sleep(self.backoff(attempt - 1)).await;
                        continue;
                    }
                    return Err(CallError {
                        kind: ErrorKind::Transient,
                        status: Some(status),
                        message: format!("{} (after {attempts} attempts)", redact(&message)),
                    });
                }
                Some((ErrorKind::ConsentNeeded, message)) => {
                    update_status(
                        self.rt.store.as_ref(),
                        &self.plugin,
                        &self.user,
                        json!({"consent_needed": true}),
                    )
                    .await;
                    let mut e = self.consent_error(&redact(&message));
                    e.status = Some(status);
                    return Err(e);
                }
                Some((kind, message)) => {
                    return Err(CallError {
                        kind,
                        status: Some(status),
                        message: redact(&message),
                    });
                }
            }
        }
    }
}

/// Why a live fetch could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No app registration.
    #[error(
        "plugin `{plugin}` has no app registration: set client_id and client_secret (settings)"
    )]
    NoApp {
        /// Plugin.
        plugin: String,
    },
    /// No token for the user.
    #[error(
        "user `{user}` has not granted `{plugin}` access yet: use auth1 or `healthpull auth {plugin} --user {user}`"
    )]
    NoToken {
        /// Plugin.
        plugin: String,
        /// User.
        user: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The engine failed (provider, method and status named).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The fetch asked for or stored something that cannot work.
    #[error(transparent)]
    Setting(#[from] SettingError),
}

/// Reads the settings a fetch needs.
pub async fn user_settings(
    store: &dyn Store,
    plugin: &str,
    user: &UserName,
) -> Result<UserSettings, crate::store::StoreError> {
    let system = format!("{}/system", paths::app(plugin));
    let user_path = paths::user(plugin, user);
    let mut values = store.get_many(&[&system, &user_path]).await?.into_iter();
    let system = values.next().flatten();
    let data = values.next().flatten();
    Ok(settings_from(data.as_ref(), system.as_ref()))
}

/// The settings in the user's subtree `identities/<user>/plugindata/<plugin>` and the
/// app's `system`.
fn settings_from(data: Option<&Value>, system: Option<&Value>) -> UserSettings {
    let mut defaults = IndexMap::new();
    let mut methods = None;
    let mut timezone = None;
    let mut host = None;
    if let Some(Value::Object(m)) = data {
        for (k, v) in m {
            match k.as_str() {
                "token" => {}
                "methods" => methods = leaf_text(Some(v)),
                "timezone" => timezone = leaf_text(Some(v)),
                "host" => host = leaf_text(Some(v)),
                _ => {
                    if let Some(t) = leaf_text(Some(v)) {
                        defaults.insert(k.clone(), t);
                    }
                }
            }
        }
    }
    UserSettings {
        defaults,
        methods,
        system: leaf_text(system),
        timezone,
        host,
    }
}

/// What a fetch reads before it starts, in one read of the store: the app registration,
/// the user's settings and token, and the user's status.
pub struct FetchInputs {
    /// Client id and secret; `None` when either is missing.
    pub app: Option<AppCredentials>,
    /// The stored client id (the plan's `client_id`).
    pub client_id: Option<String>,
    /// The user's stored defaults and the app's `system`.
    pub settings: UserSettings,
    /// The user's token.
    pub token: Option<Token>,
    /// The user's status record as stored.
    pub status: Option<Value>,
    /// Whether anything is stored for the user (`identities/<user>/plugindata/<plugin>`).
    pub user_known: bool,
}

impl FetchInputs {
    /// The one fetch plan ([`crate::settings::plan`]) from what was read: the user's
    /// settings and the app's client id.
    pub fn plan(
        &self,
        provider: &Provider,
        user: &UserName,
        asked: crate::settings::Asked,
        now: DateTime<Utc>,
    ) -> Result<FetchPlan, SettingError> {
        crate::settings::plan(
            provider,
            user,
            asked,
            Some(&self.settings),
            self.client_id.clone(),
            now,
        )
    }
}

/// Reads what a fetch for `user` needs: the leaves of the app registration (never all of
/// `plugindata/<plugin>`, which also holds every user's status), the user's subtree
/// (settings and token) and the user's status, together.
pub async fn fetch_inputs(
    store: &dyn Store,
    plugin: &str,
    user: &UserName,
) -> Result<FetchInputs, crate::store::StoreError> {
    let app = paths::app(plugin);
    let client_id = format!("{app}/client_id");
    let client_secret = format!("{app}/client_secret");
    let system = format!("{app}/system");
    let user_path = paths::user(plugin, user);
    let status = paths::status(plugin, user);
    let mut values = store
        .get_many(&[&client_id, &client_secret, &system, &user_path, &status])
        .await?
        .into_iter();
    let mut next = || values.next().flatten();
    let (client_id, client_secret, system, data, status) = (next(), next(), next(), next(), next());
    let client_id = leaf_text(client_id.as_ref());
    let app = match (&client_id, leaf_text(client_secret.as_ref())) {
        (Some(id), Some(secret)) => Some(AppCredentials::new(id.clone(), Secret::new(secret))),
        _ => None,
    };
    Ok(FetchInputs {
        app,
        client_id,
        settings: settings_from(data.as_ref(), system.as_ref()),
        token: data
            .as_ref()
            .and_then(|d| d.get("token"))
            .and_then(Token::from_stored),
        status,
        user_known: data.is_some(),
    })
}

/// Replaces `sensors/<plugin>/<user>` with `tree`, except that a tree holding no value
/// (a method that maps nothing, a day without data) never replaces stored values, and
/// writes `status` fields into the user's status record in the same write: tree and
/// fields, or neither (the embedded store; Igor has no transactions). The fields are
/// written as leaves of the record, so its other fields stay as they are; they are not
/// redacted, so they must be healthpull's own text, never a provider's.
/// Every store writes the tree's one `Value` form ([`Sensors::to_value`]).
/// Returns whether it wrote the tree.
pub async fn store_sensors(
    store: &dyn Store,
    plugin: &str,
    user: &UserName,
    tree: &Sensors,
    status: &[(&str, Value)],
) -> Result<bool, crate::store::StoreError> {
    let sensors_path = paths::sensors(plugin, user);
    let value = tree.to_value();
    let keep_stored = holds_nothing(&value)
        && matches!(store.get(&sensors_path).await?, Some(stored) if !holds_nothing(&stored));
    if keep_stored {
        tracing::info!(plugin, user = %user, "Fetch found nothing; the stored data is kept");
    }
    let sensors = (!keep_stored).then_some(value);
    let record = paths::status(plugin, user);
    let fields: Vec<(String, &Value)> = status
        .iter()
        .map(|(key, value)| (format!("{record}/{key}"), value))
        .collect();
    let mut writes: Vec<(&str, &Value)> = Vec::with_capacity(fields.len() + 1);
    if let Some(value) = &sensors {
        writes.push((&sensors_path, value));
    }
    writes.extend(fields.iter().map(|(path, value)| (path.as_str(), *value)));
    match store.put_many(&writes).await {
        // A status that is not a record (written by hand) cannot take fields: it is
        // replaced by one, as `update_status` does.
        Err(crate::store::StoreError::NotAContainer { ancestor, .. }) if ancestor == record => {
            if let Some(value) = &sensors {
                store.put(&sensors_path, value).await?;
            }
            let fields: Map<String, Value> = status
                .iter()
                .map(|(key, value)| ((*key).to_owned(), value.clone()))
                .collect();
            update_status(store, plugin, user, Value::Object(fields)).await;
        }
        other => other?,
    }
    Ok(sensors.is_some())
}

/// Whether a stored tree holds no value: only empty objects, empty lists and nulls.
fn holds_nothing(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.values().all(holds_nothing),
        Value::Array(a) => a.iter().all(holds_nothing),
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// The caller for one user's fetch, from what [`fetch_inputs`] read, and the provider at
/// the user's connection's own host (refreshes go there too).
pub fn user_caller(
    provider: Arc<Provider>,
    plugin: &str,
    user: &UserName,
    rt: &Runtime,
    plan: &FetchPlan,
    inputs: FetchInputs,
) -> Result<(Arc<Provider>, LiveCaller), FetchError> {
    let app = inputs.app.ok_or_else(|| FetchError::NoApp {
        plugin: plugin.to_owned(),
    })?;
    let token = inputs.token.ok_or_else(|| FetchError::NoToken {
        plugin: plugin.to_owned(),
        user: user.to_string(),
    })?;
    let provider = match provider.at_host(plan.host.as_deref()) {
        std::borrow::Cow::Owned(moved) => Arc::new(moved),
        std::borrow::Cow::Borrowed(_) => provider,
    };
    let caller = LiveCaller::new(provider.clone(), plugin, user, rt.clone(), app)
        .with_stored(token, inputs.status);
    Ok((provider, caller))
}

/// Fetches live for one user and, unless `dry_run`, replaces `sensors/<plugin>/<user>`
/// only after every method succeeded. Token rotation is persisted even in a dry run:
/// a single-use refresh token that is not kept would lose the user's access.
pub async fn fetch(
    provider: Arc<Provider>,
    plugin: &str,
    user: &UserName,
    rt: &Runtime,
    plan: &FetchPlan,
    dry_run: bool,
) -> Result<Sensors, FetchError> {
    let inputs = fetch_inputs(rt.store.as_ref(), plugin, user).await?;
    fetch_with(provider, plugin, user, rt, plan, dry_run, inputs).await
}

/// [`fetch`] with what [`fetch_inputs`] read (the plan was made from its settings).
pub async fn fetch_with(
    provider: Arc<Provider>,
    plugin: &str,
    user: &UserName,
    rt: &Runtime,
    plan: &FetchPlan,
    dry_run: bool,
    inputs: FetchInputs,
) -> Result<Sensors, FetchError> {
    let store = rt.store.as_ref();
    let (provider, caller) = user_caller(provider, plugin, user, rt, plan, inputs)?;
    let result = engine::fetch(&provider, plan, &caller).await;
    let now = rt.clock.now().to_rfc3339();
    match result {
        Ok(tree) => {
            if !dry_run {
                let status = [
                    ("last_success", json!(now)),
                    ("consent_needed", json!(false)),
                ];
                store_sensors(store, plugin, user, &tree, &status).await?;
            }
            Ok(tree)
        }
        Err(e) => {
            if !dry_run {
                let consent = e.kind() == Some(ErrorKind::ConsentNeeded);
                let mut fields =
                    json!({"last_error": redact(&e.to_string()), "last_error_at": now});
                if consent {
                    fields["consent_needed"] = Value::Bool(true);
                }
                update_status(store, plugin, user, fields).await;
            }
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    //! Refresh, lost-answer replay and `invalid_grant` without sockets: the shipped
    //! Fitbit provider file, the embedded store in a temp dir, an in-memory transport.

    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::http::memory::{MemoryTransport, Step, json as answer};
    use crate::provider::UrlOverrides;
    use crate::store::SqliteStore;

    #[test]
    fn a_used_up_window_waits_for_its_own_reset() {
        let usage = crate::provider::raw::UsageHeadersConfig {
            limit_header: "X-RateLimit-Limit".into(),
            usage_header: "X-RateLimit-Usage".into(),
            windows: vec![900, 86_400],
        };
        let headers = |limit: &str, used: &str| {
            let mut h = ::http::HeaderMap::new();
            h.insert("x-ratelimit-limit", limit.parse().unwrap());
            h.insert("x-ratelimit-usage", used.parse().unwrap());
            h
        };
        // 2026-11-24T09:07:30Z.
        let now = 1_795_511_250.0;
        assert_eq!(
            usage_reset(&usage, &headers("200,2000", "15,540"), now),
            None
        );
        // The quarter hour is used up: 09:15.
        assert_eq!(
            usage_reset(&usage, &headers("200,2000", "200,540"), now),
            Some(1_795_511_700.0)
        );
        // The day is used up: midnight UTC, whatever the quarter hour says.
        assert_eq!(
            usage_reset(&usage, &headers("200,2000", "200,2000"), now),
            Some(1_795_564_800.0)
        );
        assert_eq!(usage_reset(&usage, &headers("200", "x"), now), None);
    }

    const PLUGIN: &str = "fitbit";

    struct Setup {
        _dir: tempfile::TempDir,
        rt: Runtime,
        transport: Arc<MemoryTransport>,
        provider: Arc<Provider>,
        user: UserName,
    }

    fn setup(steps: Vec<Step>) -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("providers/fitbit.yaml");
        let mut provider = crate::provider::load(&path, &UrlOverrides::default()).expect("fitbit");
        provider.api.config.retry.attempts = 3;
        provider.api.config.retry.backoff_ms = 1;
        provider.api.config.retry.max_wait_ms = 5;
        let transport = Arc::new(MemoryTransport::new(steps));
        let store = SqliteStore::open(&dir.path().join("store.db")).expect("store");
        let rt = Runtime {
            store: Arc::new(store),
            locks: Arc::new(crate::auth::lock::LockDir::new(dir.path().join("locks"))),
            clock: Clock::default(),
            archive: Arc::new(SqliteStore::open(&dir.path().join("archive.db")).expect("archive")),
            transport: transport.clone(),
        };
        Setup {
            _dir: dir,
            rt,
            transport,
            provider: Arc::new(provider),
            user: UserName::parse("jack").expect("user"),
        }
    }

    fn token(access: &str, refresh: &str, expires_at: f64, issued_at: f64) -> Token {
        Token::from_stored(&json!({
            "access_token": access,
            "refresh_token": refresh,
            "expires_at": expires_at,
            "issued_at": issued_at,
            "user_id": "ABC123",
        }))
        .expect("token")
    }

    impl Setup {
        async fn seed(&self, token: &Token) {
            persist_token(self.rt.store.as_ref(), PLUGIN, &self.user, token)
                .await
                .expect("seed token");
        }
        /// The stored token `access-1-tok`/`refresh-1-tok`, issued an hour ago and
        /// expired ten seconds ago.
        async fn seed_expired(&self) {
            let now = self.rt.clock.epoch();
            self.seed(&token(
                "access-1-tok",
                "refresh-1-tok",
                now - 10.0,
                now - 3600.0,
            ))
            .await;
        }
        fn caller(&self) -> LiveCaller {
            let app = AppCredentials::new("23TEST".to_owned(), Secret::new("app-secret-x"));
            LiveCaller::new(
                self.provider.clone(),
                PLUGIN,
                &self.user,
                self.rt.clone(),
                app,
            )
        }
        async fn stored(&self) -> Token {
            stored_token(self.rt.store.as_ref(), PLUGIN, &self.user)
                .await
                .expect("read")
                .expect("a token")
        }
        async fn status(&self) -> Value {
            self.rt
                .store
                .get(&paths::status(PLUGIN, &self.user))
                .await
                .expect("read")
                .unwrap_or(Value::Null)
        }
    }

    fn weight_request() -> HttpRequest {
        HttpRequest {
            method: "get_bodyweight".to_owned(),
            verb: Verb::Get,
            url: url::Url::parse(
                "https://api.fitbit.com/1/user/-/body/log/weight/date/2026-11-01.json",
            )
            .expect("url"),
            headers: Vec::new(),
            body: None,
            page_header: None,
        }
    }

    fn issued(access: &str, refresh: &str) -> Step {
        answer(
            200,
            json!({"access_token": access, "refresh_token": refresh, "expires_in": 28800,
                   "token_type": "Bearer", "user_id": "ABC123", "scope": "weight"}),
        )
    }

    fn invalid_grant() -> Step {
        answer(
            400,
            json!({"errors": [{"errorType": "invalid_grant",
                               "message": "Refresh token invalid: refresh-1-tok"}], "success": false}),
        )
    }

    fn weights() -> Step {
        answer(200, json!({"weight": [{"logId": 1, "weight": 80.5}]}))
    }

    fn is_token_call(sent: &crate::http::memory::Sent) -> bool {
        sent.uri == "https://api.fitbit.com/oauth2/token"
    }

    #[tokio::test]
    async fn an_expiring_token_is_refreshed_and_stored_before_it_is_used() {
        let s = setup(vec![issued("access-2-tok", "refresh-2-tok"), weights()]);
        let now = s.rt.clock.epoch();
        s.seed_expired().await;

        let value = s
            .caller()
            .call(&weight_request())
            .await
            .expect("the call")
            .to_value();
        assert_eq!(value["weight"][0]["weight"], json!(80.5));

        let sent = s.transport.sent();
        assert_eq!(sent.len(), 2);
        assert!(is_token_call(&sent[0]), "{:?}", sent[0].uri);
        assert_eq!(sent[0].method, ::http::Method::POST);
        assert_eq!(sent[0].form("grant_type").as_deref(), Some("refresh_token"));
        assert_eq!(
            sent[0].form("refresh_token").as_deref(),
            Some("refresh-1-tok")
        );
        let basic = crate::secret::basic_credential("23TEST", &Secret::new("app-secret-x"));
        assert_eq!(
            sent[0].header("authorization"),
            Some(format!("Basic {}", basic.expose()).as_str())
        );
        assert_eq!(sent[1].header("authorization"), Some("Bearer access-2-tok"));
        let stored = s.stored().await;
        assert_eq!(stored.access.expose(), "access-2-tok");
        assert_eq!(
            stored.refresh.as_ref().map(Secret::expose),
            Some("refresh-2-tok")
        );
        assert!(stored.expires_at.expect("expiry") > now + 28000.0);
        assert_eq!(s.status().await["consent_needed"], json!(false));
    }

    #[tokio::test]
    async fn a_lost_refresh_answer_is_retried_with_the_same_refresh_token() {
        let s = setup(vec![
            Step::Lost,
            answer(
                503,
                json!({"errors": [{"errorType": "system", "message": "busy"}]}),
            ),
            issued("access-2-tok", "refresh-2-tok"),
            weights(),
        ]);
        s.seed_expired().await;

        s.caller().call(&weight_request()).await.expect("the call");

        let sent = s.transport.sent();
        let refreshes: Vec<_> = sent.iter().filter(|r| is_token_call(r)).collect();
        assert_eq!(refreshes.len(), 3, "lost, 503, success");
        for r in &refreshes {
            assert_eq!(r.form("refresh_token").as_deref(), Some("refresh-1-tok"));
        }
        assert_eq!(sent[3].header("authorization"), Some("Bearer access-2-tok"));
        assert_eq!(s.stored().await.access.expose(), "access-2-tok");
        assert!(s.transport.used_up());
    }

    #[tokio::test]
    async fn refresh_answers_lost_every_time_keep_the_stored_token() {
        let s = setup(vec![Step::Lost, Step::Lost, Step::Lost]);
        let now = s.rt.clock.epoch();
        let seeded = token("access-1-tok", "refresh-1-tok", now - 10.0, now - 3600.0);
        s.seed(&seeded).await;

        let e = s
            .caller()
            .call(&weight_request())
            .await
            .expect_err("no answer");
        assert_eq!(e.kind, ErrorKind::Transient);
        assert!(e.message.contains("after 3 attempts"), "{}", e.message);
        let stored = s.stored().await;
        assert_eq!(stored.access.expose(), "access-1-tok");
        assert_eq!(
            stored.refresh.as_ref().map(Secret::expose),
            Some("refresh-1-tok")
        );
    }

    #[tokio::test]
    async fn invalid_grant_rereads_the_store_once_then_needs_consent() {
        let s = setup(vec![invalid_grant()]);
        s.seed_expired().await;

        let e = s
            .caller()
            .call(&weight_request())
            .await
            .expect_err("refused");
        assert_eq!(e.kind, ErrorKind::ConsentNeeded);
        assert!(
            e.message.contains("must grant access again"),
            "{}",
            e.message
        );
        assert!(
            !e.message.contains("refresh-1-tok"),
            "the refresh token is redacted: {}",
            e.message
        );
        assert_eq!(s.transport.sent().len(), 1, "no retry of a refused grant");
        assert_eq!(
            s.stored().await.access.expose(),
            "access-1-tok",
            "the token is kept"
        );
        let status = s.status().await;
        assert_eq!(status["consent_needed"], json!(true));
        assert!(status["last_error"].as_str().is_some(), "{status}");
    }

    #[tokio::test]
    async fn invalid_grant_after_another_process_refreshed_uses_its_token() {
        let dir_setup = setup(Vec::new());
        let now = dir_setup.rt.clock.epoch();
        dir_setup
            .seed(&token(
                "access-1-tok",
                "refresh-1-tok",
                now - 10.0,
                now - 3600.0,
            ))
            .await;
        // Another process refreshes with R1 while this one's request is under way: the
        // provider then refuses R1 to this one.
        let store = dir_setup.rt.store.clone();
        let user = dir_setup.user.clone();
        let theirs = token("access-9-tok", "refresh-9-tok", now + 28800.0, now + 1.0);
        let before: crate::http::memory::Before = Box::pin(async move {
            persist_token(store.as_ref(), PLUGIN, &user, &theirs)
                .await
                .expect("the other process stores its token");
        });
        let transport = Arc::new(MemoryTransport::new(vec![
            Step::After(before, Box::new(invalid_grant())),
            weights(),
        ]));
        let s = Setup {
            rt: Runtime {
                transport: transport.clone(),
                ..dir_setup.rt.clone()
            },
            transport,
            ..dir_setup
        };

        s.caller().call(&weight_request()).await.expect("the call");

        let sent = s.transport.sent();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1].header("authorization"), Some("Bearer access-9-tok"));
        assert_eq!(s.stored().await.access.expose(), "access-9-tok");
        assert_ne!(s.status().await["consent_needed"], json!(true));
    }

    #[tokio::test]
    async fn an_expired_answer_refreshes_once_and_retries() {
        let expired = answer(
            401,
            json!({"errors": [{"errorType": "expired_token", "message": "Access token expired: access-1-tok"}]}),
        );
        let s = setup(vec![
            expired,
            issued("access-2-tok", "refresh-2-tok"),
            weights(),
        ]);
        let now = s.rt.clock.epoch();
        s.seed(&token(
            "access-1-tok",
            "refresh-1-tok",
            now + 3600.0,
            now - 60.0,
        ))
        .await;

        s.caller().call(&weight_request()).await.expect("the call");

        let sent = s.transport.sent();
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[0].header("authorization"), Some("Bearer access-1-tok"));
        assert!(is_token_call(&sent[1]));
        assert_eq!(sent[2].header("authorization"), Some("Bearer access-2-tok"));
        assert_eq!(
            sent[2].limits.max_bytes,
            s.provider.api.config.max_response_bytes
        );
    }

    fn weight_tree() -> Sensors {
        Sensors {
            outputs: [(
                "body-weight".to_owned(),
                crate::sensors::Node::Value(json!({"weight": 80.5})),
            )]
            .into_iter()
            .collect(),
        }
    }

    #[tokio::test]
    async fn a_success_writes_tree_and_status_together_and_keeps_the_other_fields() {
        let s = setup(Vec::new());
        let store = s.rt.store.as_ref();
        let status = paths::status(PLUGIN, &s.user);
        store
            .put(
                &status,
                &json!({"consent_needed": true, "last_error": "busy", "rate_limited_until": 5}),
            )
            .await
            .expect("seed status");
        let now = "2026-11-02T10:00:00+00:00";
        let status = [
            ("last_success", json!(now)),
            ("consent_needed", json!(false)),
        ];
        assert!(
            store_sensors(store, PLUGIN, &s.user, &weight_tree(), &status)
                .await
                .expect("stored")
        );
        assert_eq!(
            store
                .get(&paths::sensors(PLUGIN, &s.user))
                .await
                .expect("read"),
            Some(json!({"body-weight": {"weight": 80.5}}))
        );
        let stored = s.status().await;
        assert_eq!(
            serde_json::to_string(&stored).expect("json"),
            serde_json::to_string(&json!({"consent_needed": false, "last_error": "busy",
                "rate_limited_until": 5, "last_success": now}))
            .expect("json"),
            "fields merged in place, new ones after"
        );
    }

    #[tokio::test]
    async fn a_tree_holding_nothing_keeps_the_stored_one_and_still_records_the_status() {
        let s = setup(Vec::new());
        let store = s.rt.store.as_ref();
        let sensors = paths::sensors(PLUGIN, &s.user);
        store
            .put(&sensors, &json!({"body-weight": {"weight": 79.0}}))
            .await
            .expect("seed data");
        let empty = Sensors {
            outputs: [(
                "body-weight".to_owned(),
                crate::sensors::Node::Value(json!({})),
            )]
            .into_iter()
            .collect(),
        };
        let now = "2026-11-02T10:00:00+00:00";
        let wrote = store_sensors(
            store,
            PLUGIN,
            &s.user,
            &empty,
            &[("last_success", json!(now))],
        )
        .await
        .expect("stored");
        assert!(!wrote, "nothing does not replace something");
        assert_eq!(
            store.get(&sensors).await.expect("read"),
            Some(json!({"body-weight": {"weight": 79.0}}))
        );
        assert_eq!(s.status().await, json!({"last_success": now}));
    }

    #[tokio::test]
    async fn a_status_that_is_not_a_record_is_replaced_by_one() {
        let s = setup(Vec::new());
        let store = s.rt.store.as_ref();
        store
            .put(&paths::status(PLUGIN, &s.user), &json!("written by hand"))
            .await
            .expect("seed status");
        let now = "2026-11-02T10:00:00+00:00";
        let status = [
            ("last_success", json!(now)),
            ("consent_needed", json!(false)),
        ];
        assert!(
            store_sensors(store, PLUGIN, &s.user, &weight_tree(), &status)
                .await
                .expect("stored")
        );
        assert_eq!(
            s.status().await,
            json!({"last_success": now, "consent_needed": false})
        );
        assert!(
            store
                .get(&paths::sensors(PLUGIN, &s.user))
                .await
                .expect("read")
                .is_some()
        );
    }

    #[tokio::test]
    async fn fetch_inputs_are_the_app_leaves_the_users_subtree_and_status() {
        let s = setup(Vec::new());
        let store = s.rt.store.as_ref();
        let stranger = UserName::parse("jill").expect("user");
        let none = fetch_inputs(store, PLUGIN, &stranger).await.expect("read");
        assert!(none.app.is_none() && none.token.is_none() && none.status.is_none());
        assert!(!none.user_known);

        for (leaf, value) in [("client_id", "23TEST"), ("client_secret", "app-secret-x")] {
            store
                .put(&format!("plugindata/{PLUGIN}/{leaf}"), &json!(value))
                .await
                .expect("app");
        }
        store
            .put(&format!("plugindata/{PLUGIN}/system"), &json!("en_GB"))
            .await
            .expect("system");
        store
            .put(
                &format!("{}/period", paths::user(PLUGIN, &s.user)),
                &json!("1w"),
            )
            .await
            .expect("default");
        s.seed_expired().await;
        store
            .put(
                &paths::status(PLUGIN, &s.user),
                &json!({"rate_limited_until": 9}),
            )
            .await
            .expect("status");
        let inputs = fetch_inputs(store, PLUGIN, &s.user).await.expect("read");
        let app = inputs.app.expect("the app registration");
        assert_eq!(app.client_id, "23TEST");
        assert_eq!(app.client_secret.expose(), "app-secret-x");
        assert_eq!(inputs.client_id.as_deref(), Some("23TEST"));
        assert_eq!(inputs.settings.system.as_deref(), Some("en_GB"));
        assert_eq!(
            inputs.settings.defaults.get("period").map(String::as_str),
            Some("1w")
        );
        assert_eq!(inputs.token.expect("token").access.expose(), "access-1-tok");
        assert_eq!(inputs.status, Some(json!({"rate_limited_until": 9})));
        assert!(inputs.user_known);
        // The settings a fetch plans with are the ones `user_settings` reads.
        let settings = user_settings(store, PLUGIN, &s.user).await.expect("read");
        assert_eq!(settings.defaults, inputs.settings.defaults);
        assert_eq!(settings.system, inputs.settings.system);
    }

    #[tokio::test]
    async fn the_first_call_checks_the_rate_limit_read_with_the_inputs() {
        let s = setup(vec![weights()]);
        let now = s.rt.clock.epoch();
        let valid = token("access-1-tok", "refresh-1-tok", now + 3600.0, now - 60.0);
        s.seed(&valid).await;
        // Read before the fetch: rate limited for another minute. (The store itself
        // holds no status, so only the status handed over can refuse the call.)
        let caller = s
            .caller()
            .with_stored(valid, Some(json!({"rate_limited_until": now + 60.0})));
        let e = caller.call(&weight_request()).await.expect_err("limited");
        assert_eq!(e.kind, ErrorKind::RateLimited);
        assert!(s.transport.sent().is_empty(), "no request was sent");
        // Later calls read the store, which has no limit recorded.
        caller.call(&weight_request()).await.expect("the next call");
        assert_eq!(s.transport.sent().len(), 1);
    }

    #[tokio::test]
    async fn a_retired_token_endpoint_is_reported_as_retirement() {
        let s = setup(vec![answer(
            410,
            json!({"errors": [{"errorType": "gone", "message": "This API has been retired."}]}),
        )]);
        s.seed_expired().await;

        let e = s
            .caller()
            .call(&weight_request())
            .await
            .expect_err("retired");
        assert_eq!(e.kind, ErrorKind::Retired);
        assert_eq!(e.status, Some(410));
        assert_eq!(s.transport.sent().len(), 1);
        assert_eq!(s.stored().await.access.expose(), "access-1-tok");
    }
}
