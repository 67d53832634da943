//! The built-in schedule: every granted user of every plugin is fetched every
//! `interval_seconds` (plus random jitter), one run at a time per user, never while the
//! provider's rate limit says to wait. Stops taking new work when the server shuts
//! down and lets running fetches finish. Each user's next due time is kept in the
//! shared state, where the status and the setup page read it.
//!
//! With the PostgreSQL store the due times live in the database instead
//! ([`PostgresQueue`]), shared by every instance: each claims due users under a lease it
//! renews while the run goes on, at most `max_running` at once, and sets the next due
//! time when the run ends; a dead instance's users are claimed by the others once its
//! leases run out.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use rand::Rng;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::fetch::fetch_user;
use super::state::AppState;
use super::status::plugin_status;
use crate::config::ScheduleConfig;
use crate::store::{Claim, PostgresQueue};
use crate::transform::Layout;
use crate::user::UserName;

/// Runs until `stop` turns true, then waits for running fetches.
pub async fn run(state: Arc<AppState>, config: ScheduleConfig, stop: watch::Receiver<bool>) {
    match state.queue.clone() {
        Some(queue) => run_shared(state, queue, config, stop).await,
        None => run_local(state, config, stop).await,
    }
}

/// The schedule of one process: due times in memory.
async fn run_local(state: Arc<AppState>, config: ScheduleConfig, mut stop: watch::Receiver<bool>) {
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
                let handle = running.spawn(async move { scheduled_fetch(&st, &p, &u).await });
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

/// One scheduled fetch, logged.
async fn scheduled_fetch(state: &AppState, plugin: &str, user: &UserName) {
    let provider = state.plugins[plugin].clone();
    match fetch_user(
        state,
        plugin,
        provider,
        user,
        None,
        IndexMap::new(),
        Layout::Mapped,
    )
    .await
    {
        Ok(_) => tracing::info!(plugin, user = %user, "Scheduled fetch stored"),
        Err(e) => tracing::warn!(plugin, user = %user, error = %e, "Scheduled fetch failed"),
    }
}

/// The interval plus random jitter: when a user is due again.
fn next_interval(config: &ScheduleConfig) -> Duration {
    let jitter = if config.jitter_seconds > 0 {
        rand::rng().random_range(0..=config.jitter_seconds)
    } else {
        0
    };
    Duration::from_secs(config.interval_seconds + jitter)
}

/// The users the schedule fetches, per plugin, with the end of a recorded rate limit
/// (epoch seconds) where there is one.
type Listed = HashMap<String, HashMap<String, Option<f64>>>;

/// The schedule shared by every instance through the database's queue.
async fn run_shared(
    state: Arc<AppState>,
    queue: Arc<PostgresQueue>,
    config: ScheduleConfig,
    mut stop: watch::Receiver<bool>,
) {
    // Users are listed (and the queue brought up to date) once a tick; claims are tried
    // more often, so a run ending or a lease running out is taken up soon.
    let tick = Duration::from_secs(config.interval_seconds.clamp(1, 30));
    let poll = Duration::from_millis(500).min(tick);
    let lease = Duration::from_secs(config.lease_seconds.max(1));
    let mut running: JoinSet<()> = JoinSet::new();
    let mut listed: Listed = HashMap::new();
    let mut listed_at: Option<Instant> = None;
    loop {
        while running.try_join_next().is_some() {}
        if listed_at.is_none_or(|at| at.elapsed() >= tick) {
            list_users(&state, &queue, &mut listed).await;
            listed_at = Some(Instant::now());
        }
        let room = config.max_running.max(1).saturating_sub(running.len());
        match queue.claim(room, lease).await {
            Ok(claims) => {
                for claim in claims {
                    start_claim(&state, &queue, &config, &listed, claim, &mut running).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "Cannot claim scheduled fetches"),
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
    }
    while running.join_next().await.is_some() {}
}

/// Lists every plugin's users into the queue (granted ones that need no consent), and
/// copies the queue's due times into the state for the status.
async fn list_users(state: &AppState, queue: &PostgresQueue, listed: &mut Listed) {
    for plugin in state.plugins.keys() {
        let Ok(status) = plugin_status(state, plugin).await else {
            continue;
        };
        let mut users: HashMap<String, Option<f64>> = HashMap::new();
        if let Some(Value::Object(all)) = status.get("users") {
            for (user, s) in all {
                let granted = s["granted"].as_bool().unwrap_or(false);
                let consent = s["consent_needed"].as_bool().unwrap_or(false);
                if granted && !consent && UserName::parse(user).is_ok() {
                    users.insert(user.clone(), s["rate_limited_until"].as_f64());
                }
            }
        }
        let names: Vec<String> = users.keys().cloned().collect();
        match queue.offer(plugin, &names).await {
            Ok(()) => {
                listed.insert(plugin.clone(), users);
            }
            Err(e) => tracing::warn!(plugin, error = %e, "Cannot list the scheduled users"),
        }
    }
    match queue.due_times().await {
        Ok(times) => {
            let mut next_due = state.next_due.lock().unwrap_or_else(|e| e.into_inner());
            next_due.clear();
            for (plugin, user, at) in times {
                next_due.insert(format!("{plugin}\u{0}{user}"), at);
            }
        }
        Err(e) => tracing::warn!(error = %e, "Cannot read the schedule's due times"),
    }
}

/// Runs a claimed user's fetch, renewing the lease until it ends, then sets the next due
/// time. A user under a rate limit is put back until the limit ends, unfetched.
async fn start_claim(
    state: &Arc<AppState>,
    queue: &Arc<PostgresQueue>,
    config: &ScheduleConfig,
    listed: &Listed,
    claim: Claim,
    running: &mut JoinSet<()>,
) {
    let now = state.rt.clock.epoch();
    let known = listed
        .get(&claim.plugin)
        .and_then(|users| users.get(&claim.user));
    let limited = known.copied().flatten().filter(|until| *until > now);
    let user = UserName::parse(&claim.user).ok();
    let (Some(user), true, None) = (user, state.plugins.contains_key(&claim.plugin), limited)
    else {
        let wait = limited.map_or_else(
            || next_interval(config),
            |until| Duration::from_secs_f64(until - now),
        );
        match queue.finish(&claim, wait).await {
            Ok(due) => note_due(state, &claim, due),
            Err(e) => tracing::warn!(error = %e, "Cannot put back a scheduled fetch"),
        }
        return;
    };
    let (state, queue, config) = (state.clone(), queue.clone(), config.clone());
    running.spawn(async move {
        let lease = Duration::from_secs(config.lease_seconds.max(1));
        tokio::select! {
            () = scheduled_fetch(&state, &claim.plugin, &user) => {}
            () = keep_lease(&queue, &claim, lease) => {}
        }
        match queue.finish(&claim, next_interval(&config)).await {
            Ok(due) => note_due(&state, &claim, due),
            Err(e) => tracing::warn!(plugin = %claim.plugin, user = %user, error = %e, "Cannot set the next due time"),
        }
    });
}

/// Keeps the due time this instance just set for the status (the others' come with the
/// next listing).
fn note_due(state: &AppState, claim: &Claim, due: Option<f64>) {
    if let Some(at) = due {
        let mut next_due = state.next_due.lock().unwrap_or_else(|e| e.into_inner());
        next_due.insert(format!("{}\u{0}{}", claim.plugin, claim.user), at);
    }
}

/// Renews the lease on `claim` a few times per lease, for as long as it is polled.
async fn keep_lease(queue: &PostgresQueue, claim: &Claim, lease: Duration) {
    loop {
        tokio::time::sleep(lease / 3).await;
        match queue.renew(claim, lease).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(plugin = %claim.plugin, user = %claim.user, "A scheduled fetch's lease ran out; another instance may run it too")
            }
            Err(e) => {
                tracing::warn!(plugin = %claim.plugin, user = %claim.user, error = %e, "Cannot renew a scheduled fetch's lease")
            }
        }
    }
}
