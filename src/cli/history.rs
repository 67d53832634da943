//! `sync`, `backfill` and `history`: the archive from the command line.

use std::io::{IsTerminal as _, Write};
use std::sync::Arc;

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};

use healthpull::app;
use healthpull::config::Config;
use healthpull::engine::FetchPlan;
use healthpull::igor::xml;
use healthpull::live::sync::{self, Keep, Progress, Quiet, Reach, RunOptions, Task, TaskOutcome};
use healthpull::live::{self, Clock, Runtime};
use healthpull::provider::Provider;
use healthpull::store::archive::Select;
use healthpull::user::UserName;

/// Runs a sync (or a fetch of asked days) and prints what each method did; exit status
/// 1 when a window failed (it is fetched again next time).
pub async fn run_and_report(plugin: &str, user: &UserName, s: Setup, reach: Reach) -> Result<i32> {
    let options = RunOptions {
        reach,
        keep: s.keep,
        wait_for_budget: false,
        progress: &Quiet,
    };
    let report = sync::run(s.provider, plugin, user, &s.rt, &s.plan, s.inputs, options).await?;
    print_report(plugin, user, &report);
    Ok(if report.complete() { 0 } else { 1 })
}

fn print_report(plugin: &str, user: &UserName, report: &sync::RunReport) {
    let outputs: Vec<&str> = report.tree.outputs.keys().map(String::as_str).collect();
    eprintln!(
        "stored {} ({})",
        healthpull::igor::paths::sensors(plugin, user),
        outputs.join(", ")
    );
    for m in &report.methods {
        eprintln!(
            "{}: {}, {} window(s): {} added, {} changed, {} unchanged, {} removed",
            m.method,
            m.outcome,
            m.windows,
            m.counts.added,
            m.counts.changed,
            m.counts.unchanged,
            m.counts.removed
        );
        for f in &m.failed {
            match (f.start, f.end) {
                (Some(start), Some(end)) => eprintln!("  failed {start}..{end}: {}", f.reason),
                _ => eprintln!("  failed: {}", f.reason),
            }
        }
    }
    // Cron and scripts see the first failure as the error of the run.
    if let Some(f) = report.methods.iter().flat_map(|m| &m.failed).next() {
        eprintln!("error: {}", f.reason);
    }
}

/// What a run needs: the provider, the plan, the runtime, what the tree keeps and what
/// the plan was made from.
pub struct Setup {
    pub provider: Arc<Provider>,
    pub plan: FetchPlan,
    pub rt: Runtime,
    pub keep: Keep,
    /// What the plan was made from, read once: the run starts from it.
    pub inputs: live::FetchInputs,
}

/// Loads the plugin, reads the user's settings and plans with the user's defaults.
pub async fn setup(
    config: &Config,
    plugin: &str,
    user: &UserName,
    methods: Option<String>,
    clock: Clock,
) -> Result<Setup> {
    let provider = Arc::new(config.load_plugin(plugin)?);
    if let Some(notice) = healthpull::engine::retirement_notice(&provider) {
        eprintln!("{notice}");
    }
    let store = app::open_store(config)?;
    let inputs = live::fetch_inputs(store.as_ref(), plugin, user).await?;
    let asked = healthpull::settings::Asked {
        methods,
        ..Default::default()
    };
    let plan = inputs.plan(&provider, user, asked, clock.now())?;
    let rt = app::runtime(config, store, clock)?;
    Ok(Setup {
        provider,
        plan,
        inputs,
        rt,
        keep: config.plugin_keep(plugin),
    })
}

/// `healthpull sync`.
pub async fn sync_command(plugin: &str, user: &UserName, s: Setup) -> Result<i32> {
    run_and_report(plugin, user, s, Reach::Recent).await
}

/// The progress of a backfill: a bar with ETA on a terminal, plain lines elsewhere.
struct Bar {
    bar: Option<ProgressBar>,
}

impl Bar {
    fn new() -> Bar {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} windows, {elapsed} elapsed, ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        Bar { bar }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }
}

fn window_text(task: &Task) -> String {
    match task.window {
        Some((start, end)) => format!("{} {start}..{end}", task.method),
        None => task.method.clone(),
    }
}

impl Progress for Bar {
    fn planned(&self, tasks: &[Task]) {
        if let Some(bar) = &self.bar {
            bar.set_length(tasks.len() as u64);
        }
    }

    fn finished(&self, task: &Task, outcome: &TaskOutcome) {
        let text = match outcome {
            TaskOutcome::Done(c) => format!(
                "{}: {} added, {} changed, {} unchanged",
                window_text(task),
                c.added,
                c.changed,
                c.unchanged
            ),
            TaskOutcome::Failed(reason) => format!("{}: failed: {reason}", window_text(task)),
            TaskOutcome::Skipped => format!("{}: not tried", window_text(task)),
        };
        match &self.bar {
            Some(bar) => {
                bar.inc(1);
                if !matches!(outcome, TaskOutcome::Done(_)) {
                    bar.println(text);
                }
            }
            None => eprintln!("{text}"),
        }
    }

    fn waiting(&self, until: DateTime<Utc>) {
        self.line(&format!(
            "rate budget spent: waiting until {}",
            until.to_rfc3339()
        ));
    }
}

/// `healthpull backfill`: prints the plan, then (unless `dry_run`) runs it.
pub async fn backfill_command(
    plugin: &str,
    user: &UserName,
    since: NaiveDate,
    dry_run: bool,
    s: Setup,
) -> Result<i32> {
    let reach = Reach::Since(since);
    let tasks = sync::plan_tasks(&s.provider, plugin, user, &s.rt, &s.plan, reach).await?;
    print_plan(&s.provider, plugin, user, since, &tasks, s.rt.clock.now());
    if dry_run {
        return Ok(0);
    }
    let inputs = s.inputs;
    let bar = Bar::new();
    let options = RunOptions {
        reach,
        keep: s.keep,
        wait_for_budget: true,
        progress: &bar,
    };
    let report = sync::run(
        s.provider.clone(),
        plugin,
        user,
        &s.rt,
        &s.plan,
        inputs,
        options,
    )
    .await;
    if let Some(b) = &bar.bar {
        b.finish_and_clear();
    }
    let report = report?;
    print_report(plugin, user, &report);
    Ok(if report.complete() { 0 } else { 1 })
}

/// The plan: requests per method, and how long they take at the provider's budgets.
fn print_plan(
    provider: &Provider,
    plugin: &str,
    user: &UserName,
    since: NaiveDate,
    tasks: &[Task],
    now: DateTime<Utc>,
) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "backfill {plugin} for {user} since {since}: {} request(s) at least (first pages)",
        tasks.len()
    );
    let mut methods: Vec<&str> = tasks.iter().map(|t| t.method.as_str()).collect();
    methods.dedup();
    for name in methods {
        let windows: Vec<&Task> = tasks.iter().filter(|t| t.method == name).collect();
        let days: i64 = windows
            .iter()
            .filter_map(|t| t.window)
            .map(|(a, b)| (b - a).num_days() + 1)
            .sum();
        let method = &provider.methods[name];
        let pages = if method.pagination.is_some() {
            ", more pages where a window holds more than a page"
        } else {
            ""
        };
        let max = method.history.as_ref().map_or(0, |h| h.max_days);
        let _ = writeln!(
            out,
            "  {name}: {} request(s) for {days} day(s), at most {max} day(s) each{pages}",
            windows.len()
        );
    }
    let requests = tasks.len() as f64;
    let mut seconds = 0.0_f64;
    for b in &provider.api.config.rate_limit.budgets {
        let rounds = (requests / f64::from(b.limit.max(1))).ceil() - 1.0;
        seconds = seconds.max(rounds.max(0.0) * b.per_seconds as f64);
        let _ = writeln!(
            out,
            "  budget: {} request(s) per {} s ({:?})",
            b.limit, b.per_seconds, b.scope
        );
    }
    let finish = now + chrono::Duration::seconds(seconds as i64);
    let _ = writeln!(
        out,
        "expected duration at the budget: {} s; finishing about {}",
        seconds as i64,
        finish.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
}

/// `healthpull history`: an output's archived entries as CSV, JSON lines or Igor XML.
pub async fn history_command(
    config: &Config,
    plugin: &str,
    user: &UserName,
    output: &str,
    since: Option<NaiveDate>,
    format: &str,
) -> Result<i32> {
    config.load_plugin(plugin)?;
    let archive = app::open_archive(config)?;
    let entries = archive
        .entries(plugin, user.as_str(), output, Select::Since(since))
        .await?;
    let values: Vec<Value> = entries.into_iter().map(|e| e.value).collect();
    let mut out = std::io::stdout().lock();
    match format {
        "jsonl" => {
            for v in &values {
                writeln!(out, "{v}")?;
            }
        }
        "xml" => {
            let mut tree = Map::new();
            tree.insert(output.to_owned(), Value::Array(values));
            writeln!(
                out,
                "{}",
                xml::to_igor_xml(user.as_str(), &Value::Object(tree))
            )?;
        }
        "csv" => write_csv(&mut out, &values)?,
        other => anyhow::bail!("--format `{other}`: use csv, jsonl or xml"),
    }
    Ok(0)
}

/// Entries as CSV: one column per field, in the order fields first appear.
fn write_csv(out: &mut dyn Write, values: &[Value]) -> Result<()> {
    let mut columns: Vec<String> = Vec::new();
    for v in values {
        for key in v.as_object().into_iter().flat_map(|m| m.keys()) {
            if !columns.contains(key) {
                columns.push(key.clone());
            }
        }
    }
    if columns.is_empty() && !values.is_empty() {
        columns.push("value".to_owned());
    }
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(&columns)?;
    for v in values {
        let cells = columns.iter().map(|c| {
            let cell = match v {
                Value::Object(m) => m.get(c),
                other => Some(other),
            };
            match cell {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            }
        });
        writer.write_record(cells)?;
    }
    writer.flush().context("cannot write the CSV")?;
    Ok(())
}
