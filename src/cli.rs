//! The command line: parsing and the commands that need no live provider.
//!
//! `main.rs` only wires; each command here is a function of its arguments, so tests
//! can run them through the binary with a pinned clock.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use indexmap::IndexMap;
use serde_json::{Value, json};

use crate::config::Config;
use crate::engine::{self, FetchPlan, ReplayCaller};
use crate::provider::{self, Diagnostics, UrlOverrides};
use crate::request::{CallContext, HttpRequest};
use crate::transform::Layout;
use crate::xml;

/// healthpull: collects personal health data from OAuth2 cloud APIs into Igor's database.
#[derive(Debug, Parser)]
#[command(name = "healthpull", version, about)]
pub struct Cli {
    /// Config file (default: healthpull.yaml when present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Pin the clock (RFC 3339), for reproducible runs.
    #[arg(long, global = true, value_name = "RFC3339")]
    pub now: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate provider files; every error is printed as file:line:col: message.
    Check {
        /// Files to check (default: every file in the providers directory).
        files: Vec<PathBuf>,
    },
    /// Read JSON on stdin and print it as Igor would store it, as XML.
    ToXml {
        /// The element name of the top element.
        #[arg(long)]
        tag: String,
    },
    /// Print the HTTP requests a fetch would send, one JSON object per line; send nothing.
    Plan(FetchArgs),
    /// Fetch data for a user and store it (or print it with --dry-run).
    Fetch {
        /// What to fetch.
        #[command(flatten)]
        args: FetchArgs,
        /// Print the sensor XML instead of storing it; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Answer requests from recorded responses in this directory instead of the network.
        #[arg(long, value_name = "DIR", requires = "dry_run")]
        replay: Option<PathBuf>,
    },
}

/// Arguments shared by `plan` and `fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Plugin name (a provider file, or a plugin of the config file).
    pub plugin: String,
    /// The Igor user.
    #[arg(long)]
    pub user: String,
    /// Comma-separated methods (default: the user's stored `methods`, else the provider's defaults).
    #[arg(long)]
    pub methods: Option<String>,
    /// A keyword argument for the methods, repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Unit system, overriding plugindata/<plugin>/system (en_US, en_GB, metric, ...).
    #[arg(long)]
    pub system: Option<String>,
    /// mapped (the documented schema), raw (as the old plugin stored it) or both.
    #[arg(long, default_value = "mapped")]
    pub layout: String,
}

/// Runs a parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> Result<i32> {
    let now = match &cli.now {
        Some(text) => DateTime::parse_from_rfc3339(text)
            .with_context(|| format!("--now `{text}` is not an RFC 3339 time"))?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    match cli.command {
        Command::Check { files } => check(cli.config.as_deref(), files),
        Command::ToXml { tag } => to_xml(&tag),
        Command::Plan(args) => {
            let config = Config::load(cli.config.as_deref())?;
            plan(&config, &args, now)
        }
        Command::Fetch {
            args,
            dry_run,
            replay,
        } => {
            let config = Config::load(cli.config.as_deref())?;
            match (dry_run, replay) {
                (true, Some(dir)) => fetch_replay(&config, &args, now, &dir).await,
                _ => bail!(
                    "live fetching is not available in this build; use --dry-run --replay DIR"
                ),
            }
        }
    }
}

fn check(config_path: Option<&std::path::Path>, files: Vec<PathBuf>) -> Result<i32> {
    let files = if files.is_empty() {
        let config = Config::load(config_path)?;
        let dir = config.providers_dir();
        let found = provider::provider_files(&dir)
            .with_context(|| format!("cannot list {}", dir.display()))?;
        if found.is_empty() {
            bail!("no provider files in {}", dir.display());
        }
        found
    } else {
        files
    };
    let mut all = Diagnostics::default();
    let mut ok = 0;
    for file in &files {
        match provider::load(file, &UrlOverrides::default()) {
            Ok(_) => ok += 1,
            Err(d) => all.0.extend(d.0),
        }
    }
    if all.0.is_empty() {
        println!("{ok} provider file(s) ok");
        Ok(0)
    } else {
        eprintln!("{all}");
        eprintln!(
            "{} error(s) in {} of {} file(s)",
            all.0.len(),
            files.len() - ok,
            files.len()
        );
        Ok(1)
    }
}

fn to_xml(tag: &str) -> Result<i32> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("cannot read stdin")?;
    let value: Value = serde_json::from_str(&input).context("stdin is not JSON")?;
    let text = xml::try_to_igor_xml(tag, &value).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    Ok(0)
}

/// Splits `--set k=v` arguments.
fn explicit_args(set: &[String]) -> Result<IndexMap<String, String>> {
    let mut out = IndexMap::new();
    for s in set {
        let (k, v) = s
            .split_once('=')
            .with_context(|| format!("--set `{s}` is not KEY=VALUE"))?;
        if out.insert(k.to_owned(), v.to_owned()).is_some() {
            bail!("--set `{k}` given twice");
        }
    }
    Ok(out)
}

fn fetch_plan(
    provider: &provider::Provider,
    args: &FetchArgs,
    now: DateTime<Utc>,
) -> Result<FetchPlan> {
    let methods: Vec<String> = match &args.methods {
        Some(m) => m
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        None => provider.default_methods.clone(),
    };
    if methods.is_empty() {
        bail!(
            "no methods given and provider `{}` has no default_methods: use --methods",
            provider.name
        );
    }
    let layout = Layout::parse(&args.layout)
        .with_context(|| format!("--layout `{}`: use mapped, raw or both", args.layout))?;
    Ok(FetchPlan {
        methods,
        explicit: explicit_args(&args.set)?,
        stored: IndexMap::new(),
        layout,
        today: now.date_naive(),
        call: CallContext {
            system: args
                .system
                .clone()
                .unwrap_or_else(|| provider.api.default_system.clone()),
            client_id: None,
            provider_user_id: None,
            now: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        },
    })
}

/// The JSON line `plan` prints for a request; the credentials are shown redacted.
pub fn plan_line(request: &HttpRequest) -> Value {
    let mut headers = serde_json::Map::new();
    headers.insert(
        "Authorization".into(),
        Value::String("Bearer [redacted]".into()),
    );
    for (k, v) in &request.headers {
        headers.insert(k.clone(), Value::String(v.clone()));
    }
    let body = match &request.body {
        Some(b) => {
            headers.insert(
                "Content-Type".into(),
                Value::String(b.content_type().into()),
            );
            Value::String(b.encoded())
        }
        None => Value::Null,
    };
    json!({
        "method": request.method,
        "verb": match request.verb { provider::raw::Verb::Get => "GET", provider::raw::Verb::Post => "POST" },
        "url": request.url.as_str(),
        "headers": headers,
        "body": body,
    })
}

fn plan(config: &Config, args: &FetchArgs, now: DateTime<Utc>) -> Result<i32> {
    let provider = config.load_plugin(&args.plugin)?;
    if let Some(notice) = engine::retirement_notice(&provider) {
        eprintln!("{notice}");
    }
    let p = fetch_plan(&provider, args, now)?;
    let requests = engine::plan(&provider, &p)?;
    let mut out = std::io::stdout().lock();
    for r in &requests {
        writeln!(out, "{}", plan_line(r))?;
    }
    Ok(0)
}

async fn fetch_replay(
    config: &Config,
    args: &FetchArgs,
    now: DateTime<Utc>,
    dir: &std::path::Path,
) -> Result<i32> {
    let provider = config.load_plugin(&args.plugin)?;
    if let Some(notice) = engine::retirement_notice(&provider) {
        eprintln!("{notice}");
    }
    let p = fetch_plan(&provider, args, now)?;
    let caller = ReplayCaller::new(dir, &provider);
    let tree = engine::fetch(&provider, &p, &caller).await?;
    let text = xml::to_igor_xml(&args.user, &Value::Object(tree));
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    Ok(0)
}
