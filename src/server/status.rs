//! The per-user status of a plugin: grant, token expiry, last success and error, rate
//! limit and budgets left.

use serde_json::{Map, Value, json};

use super::state::AppState;
use crate::auth::oauth::Token;
use crate::igor::paths;
use crate::live;
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
