//! The built-in schedule: every granted user of every plugin is fetched every
//! `interval_seconds` (plus random jitter), one run at a time per user, never while the
//! provider's rate limit says to wait. Stops taking new work when the server shuts
//! down and lets running fetches finish.

use std::collections::HashMap;
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
    let mut next_due: HashMap<String, f64> = HashMap::new();
    let mut running: JoinSet<()> = JoinSet::new();
    let mut busy: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
    loop {
        while running.try_join_next().is_some() {}
        busy.retain(|_, h| !h.is_finished());
        let now = state.rt.clock.epoch();
        for plugin in state.plugins.keys().cloned().collect::<Vec<_>>() {
            let Ok(status) = plugin_status(&state, &plugin).await else {
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
                let granted = s["granted"].as_bool().unwrap_or(false);
                let consent = s["consent_needed"].as_bool().unwrap_or(false);
                let limited = s["rate_limited_until"].as_f64().is_some_and(|u| u > now);
                if !granted || consent || limited || busy.contains_key(&key) {
                    continue;
                }
                let due = *next_due.entry(key.clone()).or_insert(now);
                if due > now {
                    continue;
                }
                let jitter = if config.jitter_seconds > 0 {
                    rand::rng().random_range(0..=config.jitter_seconds) as f64
                } else {
                    0.0
                };
                next_due.insert(key.clone(), now + config.interval_seconds as f64 + jitter);
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
