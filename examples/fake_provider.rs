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
//! `--body PATH=FILE` (repeatable) answers every authorized `GET PATH` with the JSON of
//! FILE (`benches/whole-process.sh` serves a one-second heart-rate day this way).
//!
//! Usage: `cargo run --release --example fake_provider -- --users 1000 --store healthpull.db`

#[path = "../tests/integration/support/fake_provider.rs"]
mod fake_provider;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use healthpull::store::{SqliteStore, Store};
use serde_json::json;

use fake_provider::{FakeConfig, FakeProvider};

struct Args {
    users: usize,
    store: Option<PathBuf>,
    plugin: String,
    bodies: Vec<(String, PathBuf)>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        users: 0,
        store: None,
        plugin: "fitbit".to_owned(),
        bodies: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--users" => args.users = value()?.parse().context("--users takes a number")?,
            "--store" => args.store = Some(PathBuf::from(value()?)),
            "--plugin" => args.plugin = value()?,
            "--body" => {
                let spec = value()?;
                let (path, file) = spec
                    .split_once('=')
                    .with_context(|| format!("--body takes PATH=FILE, not {spec}"))?;
                args.bodies.push((path.to_owned(), PathBuf::from(file)));
            }
            other => bail!(
                "unknown argument {other} (--users N --store FILE [--plugin NAME] [--body PATH=FILE])"
            ),
        }
    }
    if args.users > 0 && args.store.is_none() {
        bail!("--users needs --store FILE");
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
        seed(&fake, path, &args.plugin, args.users).await?;
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

/// Grants `users` users at the fake and stores the app and their tokens in `path`.
async fn seed(fake: &FakeProvider, path: &Path, plugin: &str, users: usize) -> Result<()> {
    let store = SqliteStore::open(path)?;
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
    for i in 0..users {
        let grant = fake.grant(&format!("P{i:04}"));
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
        store
            .put(
                &format!("identities/u{i:04}/plugindata/{plugin}/token"),
                &token,
            )
            .await?;
    }
    store.save().await?;
    Ok(())
}
