//! The per-user status of a plugin: grant, token expiry, last success and error, rate
//! limit, budgets left and the schedule's next fetch; with [`plugin_status_with_methods`]
//! also each planned method's covered days, last run and backfill progress, read from
//! the archive.

use serde_json::{Map, Value, json};

use super::state::AppState;
use crate::auth::oauth::Token;
use crate::igor::paths;
use crate::live::{self, FetchError, sync};
use crate::provider::Provider;
use crate::user::UserName;

/// How many users' tokens the status page reads at a time.
const TOKENS_PER_READ: usize = 64;

/// Per-user status of one plugin.
pub async fn plugin_status(
    state: &AppState,
    plugin: &str,
) -> Result<Value, crate::store::StoreError> {
    let provider = &state.plugins[plugin];
    let store = state.rt.store.as_ref();
    let all = store
        .get(&format!("plugindata/{plugin}/status"))
        .await?
        .unwrap_or(Value::Null);
    let now = state.rt.clock.epoch();
    // Names in the store are parsed like any other: a key that is not a user name
    // (written by hand into Igor) is not a user.
    let records: Vec<(UserName, Value)> = match all {
        Value::Object(m) => m
            .into_iter()
            .filter_map(|(key, st)| Some((UserName::parse(&key).ok()?, st)))
            .collect(),
        _ => Vec::new(),
    };
    // The users' tokens, a batch of users per read: few reads, and only a batch of
    // tokens in memory at once.
    let mut tokens = Vec::with_capacity(records.len());
    for batch in records.chunks(TOKENS_PER_READ) {
        let token_paths: Vec<String> = batch
            .iter()
            .map(|(user, _)| paths::token(plugin, user))
            .collect();
        let token_paths: Vec<&str> = token_paths.iter().map(String::as_str).collect();
        tokens.extend(
            store
                .get_many(&token_paths)
                .await?
                .iter()
                // Only what the page shows: the tokens themselves (secrets) go at once.
                .map(|token| {
                    token
                        .as_ref()
                        .and_then(Token::from_stored)
                        .map(|t| t.expires_at)
                }),
        );
    }
    let mut users = Map::new();
    for ((user, st), token) in records.into_iter().zip(tokens) {
        let mut budget = Map::new();
        for b in &provider.api.config.rate_limit.budgets {
            let key = crate::live::budget_key(plugin, &user, b);
            let left = state
                .rt
                .archive
                .calls_left(&key, b.limit, b.per_seconds as f64, now)
                .await
                .unwrap_or(b.limit);
            budget.insert(format!("per_{}s", b.per_seconds), json!(left));
        }
        let num = |k: &str| {
            st.get(k)
                .and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()))
        };
        let flag = |k: &str| {
            matches!(st.get(k), Some(Value::Bool(true)))
                || st.get(k).and_then(|v| v.as_str()) == Some("true")
        };
        users.insert(
            user.to_string(),
            json!({
                "granted": token.is_some(),
                "token_expires_at": token.flatten(),
                "consent_needed": flag("consent_needed"),
                "last_success": live::leaf_text(st.get("last_success")),
                "last_error": live::leaf_text(st.get("last_error")),
                "last_error_at": live::leaf_text(st.get("last_error_at")),
                "rate_limited_until": num("rate_limited_until").filter(|u| *u > now),
                "budget_left": budget,
                "next_due": next_due(state, plugin, &user, token.is_some(), flag("consent_needed"), num("rate_limited_until")),
            }),
        );
    }
    Ok(json!({
        "plugin": plugin,
        "provider": provider.name,
        "retired": provider.retired.as_ref().map(|r| json!({"since": r.since, "replacement": r.replacement})),
        "users": users,
    }))
}

/// When the built-in schedule fetches the user next (RFC 3339): its due time, or the end
/// of a rate limit after it; `None` without the schedule, or for a user it does not fetch
/// (no grant, consent needed).
fn next_due(
    state: &AppState,
    plugin: &str,
    user: &UserName,
    granted: bool,
    consent_needed: bool,
    rate_limited_until: Option<f64>,
) -> Option<String> {
    if !granted || consent_needed {
        return None;
    }
    let due = state.next_due(plugin, user.as_str())?;
    let at = rate_limited_until.map_or(due, |u| u.max(due));
    chrono::DateTime::from_timestamp(at.ceil() as i64, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// The methods a fetch for the user runs (as [`crate::settings::plan`] picks them): the
/// stored `methods`, else the provider's defaults. Names the provider lacks are left
/// out, so what is reported per method stays bounded by the provider file.
pub fn planned_methods(provider: &Provider, stored: Option<&str>) -> Vec<String> {
    let methods = match stored {
        Some(m) => crate::engine::split_methods(m),
        None => provider.default_methods.clone(),
    };
    methods
        .into_iter()
        .filter(|m| provider.methods.contains_key(m))
        .collect()
}

/// The status of the user's planned methods as data ([`sync::method_status`]).
pub async fn user_methods(
    state: &AppState,
    plugin: &str,
    user: &UserName,
    stored_methods: Option<&str>,
) -> Result<Value, FetchError> {
    let provider = &state.plugins[plugin];
    let methods = planned_methods(provider, stored_methods);
    sync::method_status(provider, plugin, user, &state.rt, &methods).await
}

/// [`plugin_status`] with each user's `methods`: per planned method its covered days,
/// last run and backfill progress. The users' stored `methods` are read a batch at a
/// time.
pub async fn plugin_status_with_methods(
    state: &AppState,
    plugin: &str,
) -> Result<Value, FetchError> {
    let mut status = plugin_status(state, plugin).await?;
    let Some(Value::Object(users)) = status.get_mut("users") else {
        return Ok(status);
    };
    let names: Vec<UserName> = users
        .keys()
        .filter_map(|u| UserName::parse(u).ok())
        .collect();
    for batch in names.chunks(TOKENS_PER_READ) {
        let method_paths: Vec<String> = batch
            .iter()
            .map(|user| format!("{}/methods", paths::user(plugin, user)))
            .collect();
        let method_paths: Vec<&str> = method_paths.iter().map(String::as_str).collect();
        let stored = state.rt.store.get_many(&method_paths).await?;
        for (user, stored) in batch.iter().zip(stored) {
            let methods = live::leaf_text(stored.as_ref());
            let value = user_methods(state, plugin, user, methods.as_deref()).await?;
            if let Some(Value::Object(record)) = users.get_mut(user.as_str()) {
                record.insert("methods".to_owned(), value);
            }
        }
    }
    Ok(status)
}
