//! Wiring from the config file to live parts: the store, the lock directory, the runtime.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::{Config, StoreConfig};
use crate::http::HttpTransport;
use crate::live::{Budgets, Clock, Runtime};
use crate::lock::LockDir;
use crate::store::{IgorStore, IgorStoreConfig, SealedStore, SqliteStore, Store, StoreKey};

/// Opens the configured store; with `store.key_env`, secrets are encrypted at rest.
pub fn open_store(config: &Config) -> Result<Arc<dyn Store>> {
    let key = match config.store.key_env() {
        Some(var) => {
            let text = std::env::var(var)
                .with_context(|| format!("store.key_env names ${var}, which is not set"))?;
            crate::secret::register(text.trim());
            Some(StoreKey::parse(&text).with_context(|| format!("${var}"))?)
        }
        None => None,
    };
    Ok(Arc::new(SealedStore::new(open_backend(config)?, key)))
}

fn open_backend(config: &Config) -> Result<Arc<dyn Store>> {
    Ok(match &config.store {
        StoreConfig::Embedded { path, .. } => {
            let path = config.resolve_path(path);
            Arc::new(
                SqliteStore::open(&path)
                    .with_context(|| format!("cannot open the store {}", path.display()))?,
            )
        }
        StoreConfig::Igor {
            url,
            username,
            password_env,
            ..
        } => {
            let password = std::env::var(password_env).with_context(|| {
                format!("the Igor password is read from ${password_env}, which is not set")
            })?;
            crate::secret::register(&password);
            Arc::new(IgorStore::new(
                IgorStoreConfig {
                    url: url.clone(),
                    username: username.clone(),
                    password: password.into(),
                    timeout: Duration::from_secs(30),
                },
                HttpTransport::shared(),
            )?)
        }
    })
}

/// Opens the store only if it already exists (commands that must write nothing).
pub fn open_existing_store(config: &Config) -> Result<Option<Arc<dyn Store>>> {
    match &config.store {
        StoreConfig::Embedded { path, .. } if !config.resolve_path(path).exists() => Ok(None),
        _ => open_store(config).map(Some),
    }
}

/// Where lock files live.
pub fn lock_dir(config: &Config) -> PathBuf {
    if let Some(dir) = &config.lock_dir {
        return config.resolve_path(dir);
    }
    match &config.store {
        StoreConfig::Embedded { path, .. } => {
            let db = config.resolve_path(path);
            let mut name = db.file_name().unwrap_or_default().to_os_string();
            name.push(".locks");
            db.with_file_name(name)
        }
        StoreConfig::Igor { .. } => config.resolve_path(std::path::Path::new(".healthpull-locks")),
    }
}

/// The shared parts of live calls, with the process's one HTTP transport.
pub fn runtime(config: &Config, store: Arc<dyn Store>, clock: Clock) -> Runtime {
    Runtime {
        store,
        locks: Arc::new(LockDir::new(lock_dir(config))),
        clock,
        budgets: Arc::new(Budgets::default()),
        transport: HttpTransport::shared(),
    }
}
