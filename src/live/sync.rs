//! Runs that keep a user's history: sync (from the end of what is covered, minus the
//! settling window), backfill (every uncovered day since a date) and a fetch of asked
//! days. Every run goes the same way: plan request windows per method from the
//! archive's coverage, fetch each window through the engine, archive its entries and
//! coverage in one transaction, then write the user's tree from the archive.
//!
//! A window that fails is not covered, so the next run asks for it again; the others
//! stay archived. An error is never archived or stored as "no data": only answers the
//! engine mapped and checked are. The tree shows the recent part of the archive, so a
//! run that found nothing, or failed, never empties it.

use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use indexmap::IndexMap;
use serde_json::{Map, Value, json};

use crate::engine::{self, FetchPlan};
pub use crate::history::Keep;
use crate::history::{self, Coverage};
use crate::live::{self, FetchError, FetchInputs, LiveCaller, Runtime};
use crate::provider::raw::ErrorKind;
use crate::provider::{Method, Provider};
use crate::secret::redact;
use crate::sensors::{Node, Segment, Sensors};
use crate::store::archive::{Commit, Counts, NewEntry, Select};
use crate::user::UserName;

/// Which days a run asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Sync: every day from the first covered one (or the first unsettled one) through
    /// today that is not settled.
    Recent,
    /// Backfill: every day since this one through today that is not covered.
    Since(NaiveDate),
    /// The days the plan's own arguments ask for (a fetch with a range).
    Asked,
}

/// One request window of one method (`None`: a method without history, fetched whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// The method.
    pub method: String,
    /// First and last day.
    pub window: Option<(NaiveDate, NaiveDate)>,
}

/// How one task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    /// Archived.
    Done(Counts),
    /// Failed; the window stays uncovered.
    Failed(String),
    /// Not tried: the run stopped before it (consent, budget).
    Skipped,
}

/// What a run reports as it goes (the backfill's progress bar).
pub trait Progress: Send + Sync {
    /// The run's tasks, in the order they run.
    fn planned(&self, _tasks: &[Task]) {}
    /// A task ended.
    fn finished(&self, _task: &Task, _outcome: &TaskOutcome) {}
    /// The run waits for a rate budget until `until`.
    fn waiting(&self, _until: DateTime<Utc>) {}
}

/// A [`Progress`] that reports nothing.
pub struct Quiet;

impl Progress for Quiet {}

/// The options of a run.
#[derive(Clone, Copy)]
pub struct RunOptions<'a> {
    /// Which days.
    pub reach: Reach,
    /// What the tree shows.
    pub keep: Keep,
    /// Wait for a spent rate budget (backfill) instead of stopping the run.
    pub wait_for_budget: bool,
    /// Progress reports.
    pub progress: &'a dyn Progress,
}

/// How one method's part of a run ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MethodRun {
    /// The method.
    pub method: String,
    /// `ok`, `partial` or `failed` (`skipped` when nothing was tried).
    pub outcome: &'static str,
    /// What the archive did.
    pub counts: Counts,
    /// Windows that failed, with why.
    pub failed: Vec<FailedWindow>,
    /// Windows archived.
    pub windows: usize,
}

/// A window that failed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FailedWindow {
    /// First day (absent for a method without history).
    pub start: Option<NaiveDate>,
    /// Last day.
    pub end: Option<NaiveDate>,
    /// Why (provider, method and status named, secrets redacted).
    pub reason: String,
}

/// What a run did.
#[derive(Debug)]
pub struct RunReport {
    /// Per method, in plan order.
    pub methods: Vec<MethodRun>,
    /// The tree written for the user (the recent part of the archive).
    pub tree: Sensors,
}

impl RunReport {
    /// Whether every task succeeded.
    pub fn complete(&self) -> bool {
        self.methods.iter().all(|m| m.outcome == "ok")
    }
}

/// Whether the plan's arguments or the user's stored defaults name days (a range
/// parameter of one of its methods): such a fetch asks for those days, as the old
/// plugin did; any other syncs.
pub fn asks_days(provider: &Provider, plan: &FetchPlan) -> bool {
    plan.methods.iter().any(|name| {
        provider
            .methods
            .get(name)
            .and_then(|m| m.range.as_ref())
            .is_some_and(|r| {
                std::iter::once(&r.start)
                    .chain(&r.period)
                    .chain(&r.end)
                    .any(|p| plan.explicit.contains_key(p) || plan.stored.contains_key(p))
            })
    })
}

/// The tasks a run would make, without making any request (backfill `--dry-run`).
pub async fn plan_tasks(
    provider: &Provider,
    plugin: &str,
    user: &UserName,
    rt: &Runtime,
    plan: &FetchPlan,
    reach: Reach,
) -> Result<Vec<Task>, FetchError> {
    let now = rt.clock.now();
    let mut tasks = Vec::new();
    for name in &plan.methods {
        let Some(method) = provider.methods.get(name) else {
            // The engine names unknown methods when the plan is resolved.
            continue;
        };
        let Some(history) = &method.history else {
            tasks.push(Task {
                method: name.clone(),
                window: None,
            });
            continue;
        };
        let days = match reach {
            Reach::Asked => {
                let Some(range) = engine::requested_range(provider, plan, name)? else {
                    continue;
                };
                range
                    .start
                    .iter_days()
                    .take_while(|d| *d <= range.end)
                    .collect()
            }
            Reach::Recent | Reach::Since(_) => {
                let coverage = rt.archive.coverage(plugin, user.as_str(), name).await?;
                match reach {
                    Reach::Since(since) => {
                        history::backfill_days(&coverage, history, since, plan.today)
                    }
                    _ => history::sync_days(&coverage, history, plan.today, now, plan.zone),
                }
            }
        };
        let mut windows = history::windows(&days, history.max_days);
        if matches!(reach, Reach::Since(_)) {
            // The most recent history first: a backfill cut short leaves the oldest out.
            windows.reverse();
        }
        tasks.extend(windows.into_iter().map(|w| Task {
            method: name.clone(),
            window: Some(w),
        }));
    }
    Ok(tasks)
}

/// The plan of one task: its method alone, its window as the method's range arguments.
fn task_plan(plan: &FetchPlan, method: &Method, task: &Task) -> FetchPlan {
    let mut p = plan.clone();
    p.methods = vec![task.method.clone()];
    if let (Some((start, end)), Some(range)) = (task.window, &method.range) {
        let day = |d: NaiveDate| d.format("%Y-%m-%d").to_string();
        if let Some(period) = &range.period {
            p.explicit.shift_remove(period);
            p.stored.shift_remove(period);
        }
        p.explicit.insert(range.start.clone(), day(start));
        if let Some(end_param) = &range.end {
            p.explicit.insert(end_param.clone(), day(end));
        }
    }
    p
}

/// Places every entry of a method's tree for the archive; outputs without time are
/// kept whole.
fn entries_of(method: &Method, tree: &Sensors, zone: chrono_tz::Tz) -> Vec<NewEntry> {
    let mut entries = Vec::new();
    for (name, node) in &tree.outputs {
        let Some(output) = method.outputs.iter().find(|o| &o.name == name) else {
            continue;
        };
        let whole = |value: Value| NewEntry {
            output: name.clone(),
            identity: String::new(),
            at: None,
            day: None,
            value,
        };
        match node {
            Node::List(segments) if !output.time.is_empty() => {
                for Segment::Table(table) in segments {
                    for r in 0..table.len() {
                        let value = table.row_value(r);
                        let placed = value
                            .as_object()
                            .and_then(|row| history::place(output, row, zone));
                        entries.push(match placed {
                            Some(p) => NewEntry {
                                output: name.clone(),
                                identity: p.identity,
                                at: Some(p.at),
                                day: Some(p.day),
                                value,
                            },
                            // An entry without a readable time is kept by its content.
                            None => NewEntry {
                                identity: value.to_string(),
                                ..whole(value)
                            },
                        });
                    }
                }
            }
            Node::Value(Value::Object(row)) if output.single && !output.time.is_empty() => {
                if let Some(p) = history::place(output, row, zone) {
                    entries.push(NewEntry {
                        output: name.clone(),
                        identity: p.identity,
                        at: Some(p.at),
                        day: Some(p.day),
                        value: Value::Object(row.clone()),
                    });
                }
            }
            node => {
                let value = node.to_value();
                if !is_empty(&value) {
                    entries.push(whole(value));
                }
            }
        }
    }
    entries
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

/// Whether a failure ends the whole run (nothing else can succeed before it is fixed).
fn ends_run(e: &FetchError) -> bool {
    match e {
        FetchError::Engine(e) => matches!(
            e.kind(),
            Some(ErrorKind::ConsentNeeded | ErrorKind::Retired | ErrorKind::RateLimited)
        ),
        FetchError::Store(_) => true,
        _ => false,
    }
}

/// When the user's budgets allow a call again, if one is spent now.
async fn budget_free_at(
    provider: &Provider,
    plugin: &str,
    user: &UserName,
    rt: &Runtime,
) -> Result<Option<f64>, FetchError> {
    let now = rt.clock.epoch();
    let mut until: Option<f64> = None;
    for b in &provider.api.config.rate_limit.budgets {
        let key = live::budget_key(plugin, user, b);
        if let Some(at) = rt
            .archive
            .next_call_at(&key, b.limit, b.per_seconds as f64, now)
            .await?
        {
            until = Some(until.map_or(at, |u: f64| u.max(at)));
        }
    }
    let status = rt
        .store
        .get(&crate::igor::paths::status(plugin, user))
        .await?;
    if let Some(limited) = status
        .as_ref()
        .and_then(|s| s.get("rate_limited_until"))
        .and_then(live::leaf_number)
        .filter(|u| *u > now)
    {
        until = Some(until.map_or(limited, |u| u.max(limited)));
    }
    Ok(until)
}

/// Runs one task: fetch, place, archive.
/// Whose run: the provider, plugin, user and runtime.
struct Whose<'a> {
    provider: &'a Provider,
    plugin: &'a str,
    user: &'a UserName,
    rt: &'a Runtime,
}

async fn run_task(
    whose: &Whose<'_>,
    plan: &FetchPlan,
    caller: &LiveCaller,
    task: &Task,
    raw: &mut Map<String, Value>,
) -> Result<Counts, FetchError> {
    let Whose {
        provider,
        plugin,
        user,
        rt,
    } = *whose;
    let method = &provider.methods[&task.method];
    let p = task_plan(plan, method, task);
    let tree = engine::fetch(provider, &p, caller).await?;
    let entries = entries_of(method, &tree, plan.zone);
    for (key, node) in &tree.outputs {
        if !method.outputs.iter().any(|o| &o.name == key) {
            raw.insert(key.clone(), node.to_value());
        }
    }
    let history = method.history.as_ref();
    let commit = Commit {
        plugin: plugin.to_owned(),
        user: user.to_string(),
        method: task.method.clone(),
        window: task.window.filter(|_| history.is_some()),
        fetched_at: rt.clock.now(),
        zone: plan.zone,
        settle: history.map_or(Duration::zero(), |h| h.settle),
        deletions: history.is_some_and(|h| h.deletions),
        entries,
    };
    Ok(rt.archive.commit(commit).await?)
}

/// Runs a sync, a backfill or a fetch of asked days for one user, with what
/// [`live::fetch_inputs`] read; writes the user's tree from the archive and each
/// method's run status. Token rotation is persisted as on every live call.
pub async fn run(
    provider: Arc<Provider>,
    plugin: &str,
    user: &UserName,
    rt: &Runtime,
    plan: &FetchPlan,
    inputs: FetchInputs,
    options: RunOptions<'_>,
) -> Result<RunReport, FetchError> {
    let (provider, caller) = live::user_caller(provider, plugin, user, rt, plan, inputs)?;
    // Methods are checked before anything is asked of the provider.
    engine::check_plan(&provider, plan)?;
    let plan = &engine::with_provider_zone(&provider, plan, &caller).await;
    let tasks = plan_tasks(&provider, plugin, user, rt, plan, options.reach).await?;
    options.progress.planned(&tasks);

    let mut runs: IndexMap<String, MethodRun> = plan
        .methods
        .iter()
        .map(|m| {
            let run = MethodRun {
                method: m.clone(),
                outcome: "ok",
                counts: Counts::default(),
                failed: Vec::new(),
                windows: 0,
            };
            (m.clone(), run)
        })
        .collect();
    let mut raw = Map::new();
    let mut stop: Option<FetchError> = None;
    let mut first_error: Option<FetchError> = None;
    for task in &tasks {
        if stop.is_some() {
            options.progress.finished(task, &TaskOutcome::Skipped);
            continue;
        }
        let outcome = loop {
            let whose = Whose {
                provider: &provider,
                plugin,
                user,
                rt,
            };
            match run_task(&whose, plan, &caller, task, &mut raw).await {
                Ok(counts) => break Ok(counts),
                Err(e) if options.wait_for_budget && is_rate_limited(&e) => {
                    match budget_free_at(&provider, plugin, user, rt).await? {
                        Some(until) => {
                            let at = DateTime::from_timestamp(until.ceil() as i64, 0)
                                .unwrap_or_else(Utc::now);
                            options.progress.waiting(at);
                            let wait = (until - rt.clock.epoch()).max(0.0) + 0.05;
                            tokio::time::sleep(std::time::Duration::from_secs_f64(wait)).await;
                        }
                        None => break Err(e),
                    }
                }
                Err(e) => break Err(e),
            }
        };
        let run = runs
            .get_mut(&task.method)
            .expect("every task's method is planned");
        match outcome {
            Ok(counts) => {
                run.counts.add(counts);
                run.windows += 1;
                options.progress.finished(task, &TaskOutcome::Done(counts));
            }
            Err(e) => {
                let reason = redact(&e.to_string());
                run.failed.push(FailedWindow {
                    start: task.window.map(|w| w.0),
                    end: task.window.map(|w| w.1),
                    reason: reason.clone(),
                });
                options
                    .progress
                    .finished(task, &TaskOutcome::Failed(reason));
                if ends_run(&e) || caller.token_failed() {
                    stop = Some(e);
                } else if first_error.is_none() {
                    first_error = Some(e);
                }
            }
        }
    }
    for run in runs.values_mut() {
        run.outcome = match (run.failed.is_empty(), run.windows) {
            (true, _) => "ok",
            (false, 0) => "failed",
            (false, _) => "partial",
        };
    }
    let now = rt.clock.now();
    let archived_any = runs.values().any(|r| r.windows > 0);
    let error = stop.or(first_error);
    record_runs(rt, plugin, user, &runs, options.reach, tasks.len(), now).await?;
    if let Some(e) = error.filter(|_| !archived_any) {
        // Nothing was archived: the run failed as a whole, as a fetch does.
        let consent =
            matches!(&e, FetchError::Engine(e) if e.kind() == Some(ErrorKind::ConsentNeeded));
        let mut fields =
            json!({"last_error": redact(&e.to_string()), "last_error_at": now.to_rfc3339()});
        if consent {
            fields["consent_needed"] = Value::Bool(true);
        }
        live::update_status(rt.store.as_ref(), plugin, user, fields).await;
        return Err(e);
    }
    let mut tree = recent_tree(&provider, plugin, user, rt, plan, options.keep).await?;
    tree.add_raw(raw);
    let mut status = vec![
        ("last_success", json!(now.to_rfc3339())),
        ("consent_needed", json!(false)),
    ];
    let failed: Vec<&FailedWindow> = runs.values().flat_map(|r| &r.failed).collect();
    if let Some(first) = failed.first() {
        status.push(("last_error", json!(first.reason)));
        status.push(("last_error_at", json!(now.to_rfc3339())));
    }
    live::store_sensors(rt.store.as_ref(), plugin, user, &tree, &status).await?;
    Ok(RunReport {
        methods: runs.into_values().collect(),
        tree,
    })
}

fn is_rate_limited(e: &FetchError) -> bool {
    matches!(e, FetchError::Engine(e) if e.kind() == Some(ErrorKind::RateLimited))
}

/// Writes each method's run status into the archive: the last run, and for a backfill
/// its progress.
async fn record_runs(
    rt: &Runtime,
    plugin: &str,
    user: &UserName,
    runs: &IndexMap<String, MethodRun>,
    reach: Reach,
    planned: usize,
    now: DateTime<Utc>,
) -> Result<(), FetchError> {
    let mut updates = Vec::with_capacity(runs.len());
    for (method, run) in runs {
        let mut fields = Map::new();
        fields.insert(
            "last_run".to_owned(),
            json!({
                "at": now.to_rfc3339(),
                "kind": match reach { Reach::Recent => "sync", Reach::Since(_) => "backfill", Reach::Asked => "fetch" },
                "outcome": run.outcome,
                "windows": run.windows,
                "failed": run.failed,
                "added": run.counts.added,
                "changed": run.counts.changed,
                "unchanged": run.counts.unchanged,
                "removed": run.counts.removed,
            }),
        );
        if let Reach::Since(since) = reach {
            fields.insert(
                "backfill".to_owned(),
                json!({
                    "since": since.format("%Y-%m-%d").to_string(),
                    "planned": planned,
                    "windows_done": run.windows,
                    "complete": run.failed.is_empty(),
                    "at": now.to_rfc3339(),
                }),
            );
        }
        updates.push((method.clone(), fields));
    }
    rt.archive
        .update_statuses(plugin, user.as_str(), updates)
        .await?;
    Ok(())
}

/// The user's tree from the archive: for each method of the plan, in order, each of its
/// outputs with the entries `keep` selects, merged across methods and sorted by time.
pub async fn recent_tree(
    provider: &Provider,
    plugin: &str,
    user: &UserName,
    rt: &Runtime,
    plan: &FetchPlan,
    keep: Keep,
) -> Result<Sensors, FetchError> {
    // Per output: whether it is one object, and its entries with their times.
    type Lists = IndexMap<String, (bool, Vec<(Option<String>, Value)>)>;
    let mut lists: Lists = IndexMap::new();
    for name in &plan.methods {
        let Some(method) = provider.methods.get(name) else {
            continue;
        };
        let select = match keep {
            Keep::Days(n) => Select::Days(
                plan.today - Duration::days(i64::from(n.max(1)) - 1),
                plan.today,
            ),
            Keep::Entries(n) => Select::Last(n),
            Keep::Asked => match engine::requested_range(provider, plan, name)? {
                Some(range) => Select::Days(range.start, range.end),
                None => Select::Since(None),
            },
        };
        for output in &method.outputs {
            let entries = rt
                .archive
                .entries(plugin, user.as_str(), &output.name, select)
                .await?;
            let slot = lists
                .entry(output.name.clone())
                .or_insert_with(|| (output.single, Vec::new()));
            for e in entries.into_iter().filter(|e| &e.method == name) {
                if e.at.is_none() && !slot.0 {
                    // An output kept whole: the latest fetch's value replaces the list.
                    slot.1.retain(|(at, _)| at.is_some());
                }
                slot.1.push((e.at, e.value));
            }
        }
    }
    let mut tree = Sensors::default();
    for (name, (single, mut entries)) in lists {
        if entries.is_empty() {
            continue;
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let value = match entries.pop() {
            Some((at, value))
                if single || at.is_none() && entries.iter().all(|e| e.0.is_none()) =>
            {
                value
            }
            Some(last) => {
                entries.push(last);
                Value::Array(entries.into_iter().map(|(_, v)| v).collect())
            }
            None => continue,
        };
        tree.outputs.insert(name, Node::Value(value));
    }
    Ok(tree)
}

/// The status of a user's methods as data: per method its covered range, last run and
/// backfill progress.
pub async fn method_status(
    provider: &Provider,
    plugin: &str,
    user: &UserName,
    rt: &Runtime,
    methods: &[String],
) -> Result<Value, FetchError> {
    let records: IndexMap<String, Value> = rt
        .archive
        .statuses(plugin, user.as_str())
        .await?
        .into_iter()
        .collect();
    let mut out = Map::new();
    for name in methods {
        let mut record = records.get(name).cloned().unwrap_or_else(|| json!({}));
        if provider
            .methods
            .get(name)
            .is_some_and(|m| m.history.is_some())
        {
            let coverage: Coverage = rt.archive.coverage(plugin, user.as_str(), name).await?;
            record["covered"] = match coverage.bounds() {
                Some((first, last)) => json!({
                    "first": first.format("%Y-%m-%d").to_string(),
                    "last": last.format("%Y-%m-%d").to_string(),
                    "gaps": coverage.missing(first, last).len(),
                }),
                None => Value::Null,
            };
        }
        out.insert(name.clone(), record);
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_asks_for_its_window_through_the_range_parameters() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("providers/fitbit.yaml");
        let provider = crate::provider::load(&path, &crate::provider::UrlOverrides::default())
            .expect("fitbit");
        let user = UserName::parse("jack").expect("user");
        let now = DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let asked = crate::settings::Asked {
            explicit: [("period".to_owned(), "7d".to_owned())]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let plan = crate::settings::plan(&provider, &user, asked, None, None, now).expect("plan");
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let task = Task {
            method: "get_bodyweight".into(),
            window: Some((d("2026-10-01"), d("2026-10-31"))),
        };
        let p = task_plan(&plan, &provider.methods["get_bodyweight"], &task);
        let requests = engine::plan(&provider, &p).expect("requests");
        assert_eq!(requests.len(), 1);
        assert!(
            requests[0]
                .url
                .as_str()
                .ends_with("/body/log/weight/date/2026-10-01/2026-10-31.json"),
            "{}",
            requests[0].url
        );
    }
}
