//! The fake OAuth2 provider of the integration tests as a process of its own, for
//! `benches/server-users.sh`: serves the Fitbit dialect on 127.0.0.1 until killed.
//!
//! With `--users N --store FILE` it first seeds N users (`P0000`, ... at the provider)
//! with valid tokens and writes the app registration and each token into the embedded
//! store at FILE as healthpull's users `u0000`, ... of plugin `--plugin` (default
//! `fitbit`), the way a finished consent would have. It then prints
//! `fake provider listening on http://127.0.0.1:PORT` on stdout and serves until it gets
//! SIGTERM or SIGINT. Request recording and the provider's rate limit are off, so a
//! long run keeps a flat memory profile.
//!
//! `--postgres-url-env VAR` seeds the PostgreSQL store at the URL in the environment
//! variable VAR instead of an embedded file (`benches/cluster-users.sh`): its schema is
//! applied first, and the tokens are written 500 users per transaction. `--width N`
//! gives the users' names N digits (`u00000` with 5; default 4).
//!
//! `--body PATH=FILE` (repeatable) answers every authorized `GET PATH` with the JSON of
//! FILE (`benches/whole-process.sh` serves a one-second heart-rate day this way).
//!
//! Usage: `cargo run --release --example fake_provider -- --users 1000 --store healthpull.db`
//! or `... -- --users 10000 --width 5 --postgres-url-env HEALTHPULL_DATABASE_URL`

#[path = "../tests/integration/support/fake_provider.rs"]
mod fake_provider;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use healthpull::store::{PostgresStore, SqliteStore, Store};
use serde_json::json;

use fake_provider::{FakeConfig, FakeProvider};

struct Args {
    users: usize,
    store: Option<PathBuf>,
    postgres_url_env: Option<String>,
    width: usize,
    plugin: String,
    bodies: Vec<(String, PathBuf)>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        users: 0,
        store: None,
        postgres_url_env: None,
        width: 4,
        plugin: "fitbit".to_owned(),
        bodies: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--users" => args.users = value()?.parse().context("--users takes a number")?,
            "--store" => args.store = Some(PathBuf::from(value()?)),
            "--postgres-url-env" => args.postgres_url_env = Some(value()?),
            "--width" => args.width = value()?.parse().context("--width takes a number")?,
            "--plugin" => args.plugin = value()?,
            "--body" => {
                let spec = value()?;
                let (path, file) = spec
                    .split_once('=')
                    .with_context(|| format!("--body takes PATH=FILE, not {spec}"))?;
                args.bodies.push((path.to_owned(), PathBuf::from(file)));
            }
            other => bail!(
                "unknown argument {other} (--users N (--store FILE | --postgres-url-env VAR) [--width DIGITS] [--plugin NAME] [--body PATH=FILE])"
            ),
        }
    }
    if args.users > 0 && args.store.is_none() && args.postgres_url_env.is_none() {
        bail!("--users needs --store FILE or --postgres-url-env VAR");
    }
    if args.store.is_some() && args.postgres_url_env.is_some() {
        bail!("--store and --postgres-url-env exclude each other");
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let fake = FakeProvider::start(FakeConfig {
        record_requests: false,
        rate_limit: None,
        ..FakeConfig::fitbit()
    })
    .await;
    for (path, file) in &args.bodies {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let body = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", file.display()))?;
        fake.seed_body(path, body);
    }
    if let Some(path) = &args.store {
        let store = SqliteStore::open(path)?;
        seed(&fake, &store, &args, 1).await?;
        store.save().await?;
    }
    if let Some(var) = &args.postgres_url_env {
        let url = std::env::var(var).with_context(|| format!("{var} is not set"))?;
        let store = PostgresStore::new(&url, 2)?;
        store.migrate().await?;
        seed(&fake, &store, &args, 500).await?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "fake provider listening on {}", fake.base_url())?;
    out.flush()?;
    drop(out);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

/// Grants `args.users` users at the fake and stores the app and their tokens in
/// `store`, `batch` users per write.
async fn seed(fake: &FakeProvider, store: &dyn Store, args: &Args, batch: usize) -> Result<()> {
    let plugin = &args.plugin;
    let config = fake.config();
    store
        .put(
            &format!("plugindata/{plugin}/client_id"),
            &json!(config.client_id),
        )
        .await?;
    store
        .put(
            &format!("plugindata/{plugin}/client_secret"),
            &json!(config.client_secret),
        )
        .await?;
    let now = chrono::Utc::now().timestamp();
    let width = args.width;
    let mut writes: Vec<(String, serde_json::Value)> = Vec::with_capacity(batch);
    for i in 0..args.users {
        let grant = fake.grant(&format!("P{i:0width$}"));
        let token = json!({
            "access_token": grant.access_token,
            "refresh_token": grant.refresh_token,
            "expires_in": grant.expires_in,
            "expires_at": grant.expires_at.timestamp(),
            "scope": grant.scope,
            "token_type": "Bearer",
            "user_id": grant.user,
            "issued_at": now,
        });
        writes.push((
            format!("identities/u{i:0width$}/plugindata/{plugin}/token"),
            token,
        ));
        if writes.len() == batch || i + 1 == args.users {
            let refs: Vec<(&str, &serde_json::Value)> =
                writes.iter().map(|(p, v)| (p.as_str(), v)).collect();
            store.put_many(&refs).await?;
            writes.clear();
        }
    }
    Ok(())
}
