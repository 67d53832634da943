//! The command line: parsing and the commands that need no live provider.
//!
//! `main.rs` only wires; each command here is a function of its arguments, so tests
//! can run them through the binary with a pinned clock.

use std::io::{Read, Write};
use std::os::fd::AsFd as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use indexmap::IndexMap;
use serde_json::{Value, json};

use std::sync::Arc;

mod history;
mod igor_install;
mod terminal_auth;

use healthpull::app;
use healthpull::auth::oauth;
use healthpull::config::Config;
use healthpull::engine::request::HttpRequest;
use healthpull::engine::{self, FetchPlan, ReplayCaller};
use healthpull::igor::xml;
use healthpull::live::sync::Reach;
use healthpull::live::{self, Clock, TokenDeletion};
use healthpull::provider::{self, Diagnostics, UrlOverrides};
use healthpull::settings::UserSettings;
use healthpull::store::Store;
use healthpull::transform::{Doc, Layout};
use healthpull::user::UserName;

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
    /// Grant access for a user from a terminal: prints the consent URL and waits for the
    /// provider's redirect on a loopback port (RFC 8252).
    Auth {
        /// Plugin name.
        plugin: String,
        /// The Igor user.
        #[arg(long)]
        user: UserName,
        /// Loopback port to listen on (0: any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Seconds to wait for the redirect.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Show or change the app registration (plugindata/<plugin>), like the old `settings` URL.
    Settings {
        /// Plugin name.
        plugin: String,
        /// The client id the provider gave the app.
        #[arg(long)]
        client_id: Option<String>,
        /// Read the client secret from this environment variable.
        #[arg(long, value_name = "VAR", conflicts_with = "client_secret_stdin")]
        client_secret_env: Option<String>,
        /// Read the client secret from the first line of stdin.
        #[arg(long)]
        client_secret_stdin: bool,
        /// Unit system (en_US, en_GB, metric, ...).
        #[arg(long)]
        system: Option<String>,
    },
    /// Show or change a user's settings (identities/<user>/plugindata/<plugin>), like the old `userSettings` URL.
    User {
        /// Plugin name.
        plugin: String,
        /// The Igor user.
        #[arg(long)]
        user: UserName,
        /// Store a default keyword argument (`methods=get_bodyweight,get_bodyfat`, `period=1m`), repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Remove a stored default, repeatable.
        #[arg(long = "unset", value_name = "KEY")]
        unset: Vec<String>,
        /// Delete the user's token (the user must grant access again).
        #[arg(long)]
        delete_token: bool,
        /// Remove everything archived for the user (entries, coverage, run statuses);
        /// the next sync fetches the recent days again.
        #[arg(long)]
        forget_history: bool,
    },
    /// Serve the Igor plugin entry points, the setup page, status and metrics.
    Serve {
        /// Listen address, overriding the config (`127.0.0.1:0` picks a free port).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Merge into a running Igor what the old plugin's database fragment did, with the
    /// action pointing at this server, so Igor's scheduler drives the fetches.
    IgorInstall {
        /// Igor's base URL.
        #[arg(long, default_value = "http://127.0.0.1:9333")]
        igor_url: String,
        /// An Igor identity allowed to write /data/actions, sensors and plugindata.
        #[arg(long, default_value = "admin")]
        igor_user: String,
        /// Environment variable holding that identity's password.
        #[arg(long, value_name = "VAR", default_value = "IGOR_ADMIN_PASSWORD")]
        igor_password_env: String,
        /// Plugin name.
        plugin: String,
        /// Users to fetch for (one action each).
        #[arg(long = "user", required = true)]
        users: Vec<UserName>,
        /// This server's URL as Igor reaches it (default: public_url, else the listen address).
        #[arg(long)]
        server_url: Option<String>,
        /// Seconds between fetches (the old action's 36000).
        #[arg(long, default_value_t = 36000)]
        interval: u64,
    },
    /// Fetch what is new for a user: per method, from the end of what the archive covers
    /// minus the provider's settling window, and days that failed before.
    Sync {
        /// Plugin name.
        plugin: String,
        /// The Igor user.
        #[arg(long)]
        user: UserName,
        /// Comma-separated methods (default: the user's stored `methods`, else the provider's defaults).
        #[arg(long)]
        methods: Option<String>,
    },
    /// Fetch a user's history since a date, within the provider's ranges and budgets;
    /// killed, it goes on where it stopped next time.
    Backfill {
        /// Plugin name.
        plugin: String,
        /// The Igor user.
        #[arg(long)]
        user: UserName,
        /// The first day to fetch (YYYY-MM-DD).
        #[arg(long)]
        since: chrono::NaiveDate,
        /// Comma-separated methods (default: the user's stored `methods`, else the provider's defaults).
        #[arg(long)]
        methods: Option<String>,
        /// Print the plan only.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print a user's archived entries of one output.
    History {
        /// Plugin name.
        plugin: String,
        /// The Igor user.
        #[arg(long)]
        user: UserName,
        /// The output (`body-weight`, `heart-rate`, ...).
        #[arg(long)]
        output: String,
        /// The first day to print (YYYY-MM-DD).
        #[arg(long)]
        since: Option<chrono::NaiveDate>,
        /// csv, jsonl or xml.
        #[arg(long, default_value = "csv")]
        format: String,
    },
    /// Print a subtree of the store as Igor XML (default: everything healthpull wrote).
    Export {
        /// Path in the tree, like `sensors/fitbit/jack`.
        path: Option<String>,
    },
}

/// Arguments shared by `plan` and `fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Plugin name (a provider file, or a plugin of the config file).
    pub plugin: String,
    /// The Igor user.
    #[arg(long)]
    pub user: UserName,
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
    let pinned = match &cli.now {
        Some(text) => Some(
            DateTime::parse_from_rfc3339(text)
                .with_context(|| format!("--now `{text}` is not an RFC 3339 time"))?
                .with_timezone(&Utc),
        ),
        None => None,
    };
    let clock = Clock::new(pinned);
    let now = clock.now();
    match cli.command {
        Command::Check { files } => check(cli.config.as_deref(), files),
        Command::ToXml { tag } => to_xml(&tag),
        Command::Plan(args) => {
            let config = Config::load(cli.config.as_deref())?;
            plan(&config, &args, now).await
        }
        Command::Fetch {
            args,
            dry_run,
            replay,
        } => {
            let config = Config::load(cli.config.as_deref())?;
            match replay {
                Some(dir) => fetch_replay(&config, &args, now, &dir).await,
                None => fetch_live(&config, &args, clock, dry_run).await,
            }
        }
        Command::Auth {
            plugin,
            user,
            port,
            timeout,
        } => {
            let config = Config::load(cli.config.as_deref())?;
            terminal_auth::terminal_auth(&config, &plugin, &user, port, timeout, clock).await
        }
        Command::Settings {
            plugin,
            client_id,
            client_secret_env,
            client_secret_stdin,
            system,
        } => {
            let config = Config::load(cli.config.as_deref())?;
            let secret = match (client_secret_env, client_secret_stdin) {
                (Some(var), _) => {
                    Some(std::env::var(&var).with_context(|| format!("${var} is not set"))?)
                }
                (None, true) => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    Some(line.trim().to_owned())
                }
                (None, false) => None,
            };
            settings(&config, &plugin, client_id, secret, system).await
        }
        Command::User {
            plugin,
            user,
            set,
            unset,
            delete_token,
            forget_history,
        } => {
            let config = Config::load(cli.config.as_deref())?;
            let changes = UserChanges {
                set: &set,
                unset: &unset,
                delete_token,
                forget_history,
            };
            user_command(&config, &plugin, &user, changes).await
        }
        Command::Serve { listen } => {
            let config = Config::load(cli.config.as_deref())?;
            serve(config, listen, clock).await
        }
        Command::IgorInstall {
            igor_url,
            igor_user,
            igor_password_env,
            plugin,
            users,
            server_url,
            interval,
        } => {
            let config = Config::load(cli.config.as_deref())?;
            config.load_plugin(&plugin)?;
            let password = std::env::var(&igor_password_env)
                .with_context(|| format!("${igor_password_env} is not set"))?;
            healthpull::secret::register(&password);
            let server = server_url
                .or_else(|| config.public_url.clone())
                .unwrap_or_else(|| format!("http://{}", config.listen));
            igor_install::install(
                &igor_install::Install {
                    igor_url,
                    user: igor_user,
                    password: healthpull::secret::Secret::new(password),
                    plugin,
                    users,
                    server_url: server,
                    interval,
                },
                healthpull::http::HttpTransport::shared().as_ref(),
            )
            .await?;
            Ok(0)
        }
        Command::Sync {
            plugin,
            user,
            methods,
        } => {
            let config = Config::load(cli.config.as_deref())?;
            let setup = history::setup(&config, &plugin, &user, methods, clock).await?;
            history::sync_command(&plugin, &user, setup).await
        }
        Command::Backfill {
            plugin,
            user,
            since,
            methods,
            dry_run,
        } => {
            let config = Config::load(cli.config.as_deref())?;
            let setup = history::setup(&config, &plugin, &user, methods, clock).await?;
            history::backfill_command(&plugin, &user, since, dry_run, setup).await
        }
        Command::History {
            plugin,
            user,
            output,
            since,
            format,
        } => {
            let config = Config::load(cli.config.as_deref())?;
            history::history_command(&config, &plugin, &user, &output, since, &format).await
        }
        Command::Export { path } => {
            let config = Config::load(cli.config.as_deref())?;
            export(&config, path.as_deref()).await
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
    let doc =
        json_document(read_stdin().context("cannot read stdin")?).context("stdin is not JSON")?;
    // Written from the document's index, without a `Value`, and streamed; checked whole
    // before anything is printed (docs/BENCHMARKS.md, "to-xml against Igor's converter").
    let writable = xml::check_doc(&doc).map_err(|e| anyhow::anyhow!("{e}"))?;
    // The writer hands on large pieces: straight to the file, not through the line
    // buffer of `Stdout` (nothing else is printed).
    let mut stdout = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    writable.write_xml(&mut stdout, tag)?;
    stdout.write_all(b"\n")?;
    Ok(0)
}

/// All of stdin; a regular file is read into a buffer of its size at once.
fn read_stdin() -> std::io::Result<Vec<u8>> {
    let mut stdin = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let mut input = Vec::new();
    stdin.read_to_end(&mut input)?;
    Ok(input)
}

/// Indexes JSON bytes, with `serde_json`'s error for what is not JSON.
fn json_document(bytes: Vec<u8>) -> Result<Doc, serde_json::Error> {
    match String::from_utf8(bytes) {
        Ok(text) => Doc::decode(text),
        // Bytes that are not UTF-8 are never JSON: `serde_json` says where.
        Err(not_utf8) => Err(serde_json::from_slice::<Value>(not_utf8.as_bytes())
            .err()
            .unwrap_or_else(|| serde::de::Error::custom(not_utf8.utf8_error()))),
    }
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

/// Settings read from the store for a fetch, when there is a store.
#[derive(Default)]
struct Stored {
    settings: Option<UserSettings>,
    client_id: Option<String>,
}

/// The plugin's provider and what `meanwhile` gives: the provider compiles on a
/// blocking thread while `meanwhile` (opening the store, reading the user's settings)
/// runs here, as neither needs the other (docs/BENCHMARKS.md, "Run 7"). A plugin that
/// is not configured, or whose file is missing, is refused before anything is opened;
/// other errors come as if the two ran in turn: the provider's first, after its
/// retirement notice.
async fn with_provider<T>(
    config: &Config,
    plugin: &str,
    meanwhile: impl Future<Output = Result<T>>,
) -> Result<(provider::Provider, T)> {
    config.plugin_file(plugin)?;
    let loading = {
        let (config, plugin) = (config.clone(), plugin.to_owned());
        tokio::task::spawn_blocking(move || config.load_plugin(&plugin))
    };
    let other = meanwhile.await;
    let provider = match loading.await {
        Ok(loaded) => loaded?,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => return Err(e).context("cannot compile the provider"),
    };
    if let Some(notice) = engine::retirement_notice(&provider) {
        eprintln!("{notice}");
    }
    Ok((provider, other?))
}

/// The store when one exists, and what it holds for the user.
async fn existing_store(
    config: &Config,
    plugin: &str,
    user: &UserName,
) -> Result<(Option<Arc<dyn Store>>, Stored)> {
    let store = app::open_existing_store(config)?;
    let stored = stored(store.as_deref(), plugin, user).await?;
    Ok((store, stored))
}

async fn stored(store: Option<&dyn Store>, plugin: &str, user: &UserName) -> Result<Stored> {
    let Some(store) = store else {
        return Ok(Stored::default());
    };
    let settings = live::user_settings(store, plugin, user).await?;
    let app_data = store
        .get(&healthpull::igor::paths::app(plugin))
        .await?
        .unwrap_or(Value::Null);
    Ok(Stored {
        settings: Some(settings),
        client_id: live::leaf_text(app_data.get("client_id")),
    })
}

fn fetch_plan(
    provider: &provider::Provider,
    args: &FetchArgs,
    now: DateTime<Utc>,
    stored: &Stored,
) -> Result<FetchPlan> {
    let layout = Layout::parse(&args.layout)
        .with_context(|| format!("--layout `{}`: use mapped, raw or both", args.layout))?;
    let asked = healthpull::settings::Asked {
        methods: args.methods.clone(),
        explicit: explicit_args(&args.set)?,
        system: args.system.clone(),
        layout,
    };
    Ok(healthpull::settings::plan(
        provider,
        &args.user,
        asked,
        stored.settings.as_ref(),
        stored.client_id.clone(),
        now,
    )?)
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

async fn plan(config: &Config, args: &FetchArgs, now: DateTime<Utc>) -> Result<i32> {
    let (provider, (_store, stored)) = with_provider(
        config,
        &args.plugin,
        existing_store(config, &args.plugin, &args.user),
    )
    .await?;
    let p = fetch_plan(&provider, args, now, &stored)?;
    let requests = engine::plan(&provider, &p)?;
    let mut out = std::io::stdout().lock();
    for r in &requests {
        writeln!(out, "{}", plan_line(r))?;
    }
    Ok(0)
}

/// Standard output for a long text written in large pieces: straight to the file
/// descriptor, without the line buffering of `std::io::stdout()`, which would search
/// every piece for a newline (a day of XML has none). Where standard output cannot be
/// duplicated (it is closed), `std::io::stdout()` itself, which then writes nothing.
fn long_stdout() -> Box<dyn Write> {
    use std::os::fd::AsFd;
    match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(std::fs::File::from(fd)),
        Err(_) => Box::new(std::io::stdout().lock()),
    }
}

async fn fetch_replay(
    config: &Config,
    args: &FetchArgs,
    now: DateTime<Utc>,
    dir: &std::path::Path,
) -> Result<i32> {
    let (provider, (_store, stored)) = with_provider(
        config,
        &args.plugin,
        existing_store(config, &args.plugin, &args.user),
    )
    .await?;
    let p = fetch_plan(&provider, args, now, &stored)?;
    let caller = ReplayCaller::new(dir, &provider);
    // Compact lists, written straight to stdout: a long day never exists as one text.
    let tree = engine::fetch(&provider, &p, &caller).await?;
    let mut out = long_stdout();
    xml::write_sensors_xml(&mut out, &args.user, &tree)?;
    // The element always ends with `>`: one newline, as `GET` answers it.
    out.write_all(b"\n")?;
    out.flush()?;
    // The process ends after this command: freeing a day of rows one by one would only
    // cost time (docs/BENCHMARKS.md, "Replay and live, side by side").
    std::mem::forget(tree);
    Ok(0)
}

async fn fetch_live(config: &Config, args: &FetchArgs, clock: Clock, dry_run: bool) -> Result<i32> {
    let transport = app::prepare_transport();
    let (provider, (store, stored)) = with_provider(config, &args.plugin, async {
        let store = app::open_store(config)?;
        let stored = stored(Some(store.as_ref()), &args.plugin, &args.user).await?;
        Ok((store, stored))
    })
    .await?;
    let provider = Arc::new(provider);
    let p = fetch_plan(&provider, args, clock.now(), &stored)?;
    let transport = match transport.await {
        Ok(transport) => transport,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => return Err(e).context("cannot start the HTTP client"),
    };
    let rt = app::runtime_with(config, store, clock, transport)?;
    if !dry_run {
        // Stored through the archive: the asked days are archived, and the tree shows
        // them from there.
        let setup = history::Setup {
            inputs: live::fetch_inputs(rt.store.as_ref(), &args.plugin, &args.user).await?,
            keep: config.plugin_keep(&args.plugin),
            provider,
            plan: p,
            rt,
        };
        return history::run_and_report(&args.plugin, &args.user, setup, Reach::Asked).await;
    }
    let tree = live::fetch(provider, &args.plugin, &args.user, &rt, &p, dry_run).await?;
    {
        // Streamed like the replay's output: the same bytes, one newline after.
        let mut out = long_stdout();
        xml::write_sensors_xml(&mut out, &args.user, &tree)?;
        out.write_all(b"\n")?;
        out.flush()?;
        // As after a replay: the process ends, the tree is not freed row by row.
        std::mem::forget(tree);
    }
    Ok(0)
}

async fn settings(
    config: &Config,
    plugin: &str,
    client_id: Option<String>,
    secret: Option<String>,
    system: Option<String>,
) -> Result<i32> {
    config.load_plugin(plugin)?;
    if let Some(s) = system.as_deref().filter(|s| !s.is_empty()) {
        healthpull::settings::check_system(s)?;
    }
    let store = app::open_store(config)?;
    let base = healthpull::igor::paths::app(plugin);
    for (key, value) in [
        ("client_id", client_id),
        ("client_secret", secret),
        ("system", system),
    ] {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            if key == "client_secret" {
                healthpull::secret::register(&v);
            }
            store
                .put(&format!("{base}/{key}"), &Value::String(v))
                .await?;
        }
    }
    store.save().await?;
    let app_data = store.get(&base).await?.unwrap_or(Value::Null);
    let shown = json!({
        "client_id": live::leaf_text(app_data.get("client_id")),
        "client_secret": if live::leaf_text(app_data.get("client_secret")).is_some() { "set" } else { "not set" },
        "system": live::leaf_text(app_data.get("system")),
        "callback_url": healthpull::live::consent::callback_url(config, plugin),
    });
    println!("{}", serde_json::to_string_pretty(&shown)?);
    Ok(0)
}

/// What `healthpull user` changes.
struct UserChanges<'a> {
    set: &'a [String],
    unset: &'a [String],
    delete_token: bool,
    forget_history: bool,
}

async fn user_command(
    config: &Config,
    plugin: &str,
    user: &UserName,
    changes: UserChanges<'_>,
) -> Result<i32> {
    let UserChanges {
        set,
        unset,
        delete_token,
        forget_history,
    } = changes;
    let provider = config.load_plugin(plugin)?;
    let set = explicit_args(set)?;
    for (k, v) in &set {
        healthpull::settings::check_user_default(&provider, k, v)?;
    }
    let store = app::open_store(config)?;
    let base = healthpull::igor::paths::user(plugin, user);
    for (k, v) in set {
        store.put(&format!("{base}/{k}"), &Value::String(v)).await?;
    }
    for k in unset {
        live::remove(store.as_ref(), &format!("{base}/{k}")).await?;
    }
    let mut revocation_failed = None;
    if delete_token {
        let rt = app::runtime(config, store.clone(), Clock::default())?;
        match live::delete_token(&rt, &provider, plugin, user).await? {
            TokenDeletion::NoToken => eprintln!("no token was stored for `{user}`"),
            TokenDeletion::NotRevocable => eprintln!(
                "deleted the token of `{user}` (provider `{}` has no revocation endpoint: the grant ends when the user removes it at the provider)",
                provider.name
            ),
            TokenDeletion::Revoked => eprintln!(
                "revoked the grant of `{user}` at provider `{}` and deleted the token",
                provider.name
            ),
            TokenDeletion::RevocationFailed(why) => revocation_failed = Some(why),
        }
    }
    if forget_history {
        app::open_archive(config)?
            .forget(plugin, user.as_str())
            .await?;
        eprintln!("removed the archived history of `{user}` for plugin `{plugin}`");
    }
    store.save().await?;
    let data = store.get(&base).await?.unwrap_or(Value::Null);
    let token = data.get("token").and_then(oauth::Token::from_stored);
    let mut shown = serde_json::Map::new();
    if let Value::Object(m) = &data {
        for (k, v) in m {
            if k != "token" {
                shown.insert(k.clone(), v.clone());
            }
        }
    }
    shown.insert(
        "token".into(),
        match token {
            Some(t) => json!({"granted": true, "expires_at": t.expires_at, "scope": t.scope}),
            None => json!({"granted": false}),
        },
    );
    println!("{}", serde_json::to_string_pretty(&Value::Object(shown))?);
    if let Some(why) = revocation_failed {
        // The token is gone here, but the grant may live on at the provider: say so with
        // a failing exit code, so that scripts notice.
        eprintln!(
            "error: the token of `{user}` is deleted here, but provider `{}` did not confirm the revocation ({why}); the grant may still be valid there: remove the app's access in the provider's account settings",
            provider.name
        );
        return Ok(1);
    }
    Ok(0)
}

async fn export(config: &Config, path: Option<&str>) -> Result<i32> {
    let store = app::open_store(config)?;
    let paths: Vec<String> = match path {
        Some(p) => vec![p.trim_matches('/').to_owned()],
        None => vec!["plugindata".into(), "sensors".into(), "identities".into()],
    };
    let mut out = std::io::stdout().lock();
    let mut found = false;
    for p in &paths {
        if let Some(xml_text) = store.export_xml(p).await? {
            found = true;
            let xml_text = redact_export(&xml_text)?;
            out.write_all(xml_text.as_bytes())?;
            if !xml_text.ends_with('\n') {
                out.write_all(b"\n")?;
            }
        }
    }
    if !found && path.is_some() {
        bail!("nothing is stored at {}", paths[0]);
    }
    Ok(0)
}

/// Fields whose values are secret wherever they sit in the tree: tokens, the client
/// secret, a pending consent's PKCE verifier.
const SECRET_FIELDS: &[&str] = &[
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    "csrf_key",
    "verifier",
    "code_verifier",
];

/// Exports never show secrets. The exported element is read back as a tree; every
/// secret field is replaced by `[redacted]` (structurally, sealed or not), the exported
/// element itself included (`export plugindata/P/client_secret`), its value is
/// registered, and then every other text is redacted by value, which catches a secret
/// quoted in a stored message.
fn redact_export(xml_text: &str) -> Result<String> {
    let (tag, value) = xml::igor_xml_to_value_verbatim(xml_text)
        .map_err(|e| anyhow::anyhow!("cannot read the stored XML back: {e}"))?;
    let mut held = Vec::new();
    let mut element = serde_json::Map::new();
    element.insert(tag, value);
    let mut element = Value::Object(element);
    redact_secret_fields(&mut element, &mut held);
    healthpull::secret::redact_json(&mut element);
    drop(held);
    let Value::Object(element) = element else {
        bail!("the exported element is not a tree");
    };
    let (tag, value) = element
        .into_iter()
        .next()
        .context("the exported element is empty")?;
    Ok(xml::to_igor_xml(&tag, &value))
}

fn redact_secret_fields(value: &mut Value, held: &mut Vec<healthpull::secret::Secret>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if SECRET_FIELDS.contains(&key.as_str()) {
                    if let Value::String(text) = child {
                        if !text.starts_with(healthpull::store::SEALED_PREFIX) {
                            held.push(healthpull::secret::Secret::new(text.trim()));
                        }
                    }
                    *child = Value::String(healthpull::secret::REDACTED.to_owned());
                } else {
                    redact_secret_fields(child, held);
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| redact_secret_fields(item, held)),
        _ => {}
    }
}

async fn serve(config: Config, listen: Option<String>, clock: Clock) -> Result<i32> {
    let access = healthpull::server::Access {
        admin_token: match &config.access.admin_token_env {
            Some(var) => Some(healthpull::secret::Secret::new(
                std::env::var(var).with_context(|| format!("${var} is not set"))?,
            )),
            None => None,
        },
        basic: match (&config.access.basic_user, &config.access.basic_password_env) {
            (Some(user), Some(var)) => Some((
                user.clone(),
                healthpull::secret::Secret::new(
                    std::env::var(var).with_context(|| format!("${var} is not set"))?,
                ),
            )),
            (None, None) => None,
            _ => bail!("access: basic_user and basic_password_env go together"),
        },
    };
    let address = listen.unwrap_or_else(|| config.listen.clone());
    // Decided before binding: a refused address is never listened on, not even briefly.
    let addresses: Vec<std::net::SocketAddr> = match address.parse() {
        Ok(one) => vec![one],
        Err(_) => tokio::net::lookup_host(&address)
            .await
            .with_context(|| format!("cannot resolve {address}"))?
            .collect(),
    };
    if addresses.is_empty() {
        bail!("{address} resolves to no address");
    }
    if !access.configured() {
        if let Some(beyond) = addresses.iter().find(|a| !a.ip().is_loopback()) {
            bail!(
                "refusing to listen on {address} ({}) beyond loopback without credentials: set access.admin_token_env or access.basic_user/basic_password_env",
                beyond.ip()
            );
        }
    }
    let listener = tokio::net::TcpListener::bind(addresses.as_slice())
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let bound = listener.local_addr()?;
    let mut config = config;
    if config.public_url.is_none() {
        config.public_url = Some(format!("http://{bound}"));
    }
    let store = app::open_store(&config)?;
    let rt = app::runtime(&config, store, clock)?;
    let state = Arc::new(healthpull::server::AppState::new(
        &config,
        rt,
        access,
        bound.port(),
    )?);
    eprintln!("healthpull listening on http://{bound}");
    for name in state.plugins.keys() {
        eprintln!("  setup page: http://{bound}/plugin/{name}/page/setup.html");
    }
    let shutdown = async {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM can be handled");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        eprintln!("healthpull: shutting down after running requests finish");
    };
    healthpull::server::run(listener, state, Some(config.schedule.clone()), shutdown).await?;
    Ok(0)
}
