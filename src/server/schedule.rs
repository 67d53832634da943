//! The built-in schedule: every granted user of every plugin is fetched every
//! `interval_seconds` (plus random jitter), one run at a time per user, never while the
//! provider's rate limit says to wait. Stops taking new work when the server shuts
//! down and lets running fetches finish. Each user's next due time is kept in the
//! shared state, where the status and the setup page read it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use rand::Rng;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::fetch::fetch_user;
use super::state::AppState;
use super::status::plugin_status;
use crate::config::ScheduleConfig;
use crate::transform::Layout;
use crate::user::UserName;

/// Runs until `stop` turns true, then waits for running fetches.
pub async fn run(state: Arc<AppState>, config: ScheduleConfig, mut stop: watch::Receiver<bool>) {
    let tick = Duration::from_secs(config.interval_seconds.clamp(1, 30));
    let mut running: JoinSet<()> = JoinSet::new();
    let mut busy: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
    loop {
        while running.try_join_next().is_some() {}
        busy.retain(|_, h| !h.is_finished());
        let now = state.rt.clock.epoch();
        // Users seen this round, and plugins whose users could not be read: a user no
        // longer listed loses its due time, a plugin that failed to answer keeps its own.
        let mut seen: HashSet<String> = HashSet::new();
        let mut unread: HashSet<String> = HashSet::new();
        for plugin in state.plugins.keys().cloned().collect::<Vec<_>>() {
            let Ok(status) = plugin_status(&state, &plugin).await else {
                unread.insert(plugin);
                continue;
            };
            let Some(Value::Object(users)) = status.get("users") else {
                continue;
            };
            for (user, s) in users {
                let Ok(user) = UserName::parse(user) else {
                    continue;
                };
                let key = format!("{plugin}\u{0}{user}");
                seen.insert(key.clone());
                let granted = s["granted"].as_bool().unwrap_or(false);
                let consent = s["consent_needed"].as_bool().unwrap_or(false);
                let limited = s["rate_limited_until"].as_f64().is_some_and(|u| u > now);
                if !granted || consent || limited || busy.contains_key(&key) {
                    continue;
                }
                if !claim_due(&state, &key, now, &config) {
                    continue;
                }
                let st = state.clone();
                let (p, u) = (plugin.clone(), user.clone());
                let provider = st.plugins[&p].clone();
                let handle = running.spawn(async move {
                    match fetch_user(&st, &p, provider, &u, None, IndexMap::new(), Layout::Mapped).await {
                        Ok(_) => tracing::info!(plugin = %p, user = %u, "Scheduled fetch stored"),
                        Err(e) => tracing::warn!(plugin = %p, user = %u, error = %e, "Scheduled fetch failed"),
                    }
                });
                busy.insert(key, handle);
            }
        }
        forget_unseen(&state, &seen, &unread);
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
    }
    while running.join_next().await.is_some() {}
}

/// Whether the user keyed `key` is due now; if so, its next due time is set one interval
/// (plus jitter) ahead. A user seen for the first time is due at once.
fn claim_due(state: &AppState, key: &str, now: f64, config: &ScheduleConfig) -> bool {
    let mut next_due = state.next_due.lock().unwrap_or_else(|e| e.into_inner());
    let due = *next_due.entry(key.to_owned()).or_insert(now);
    if due > now {
        return false;
    }
    let jitter = if config.jitter_seconds > 0 {
        rand::rng().random_range(0..=config.jitter_seconds) as f64
    } else {
        0.0
    };
    next_due.insert(
        key.to_owned(),
        now + config.interval_seconds as f64 + jitter,
    );
    true
}

/// Drops the due times of users no longer listed (deleted users leave nothing behind),
/// keeping those of plugins whose users could not be read this round.
fn forget_unseen(state: &AppState, seen: &HashSet<String>, unread: &HashSet<String>) {
    let mut next_due = state.next_due.lock().unwrap_or_else(|e| e.into_inner());
    next_due.retain(|key, _| {
        seen.contains(key)
            || key
                .split_once('\u{0}')
                .is_some_and(|(plugin, _)| unread.contains(plugin))
    });
}
