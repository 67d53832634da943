//! Wiring from the config file to live parts: the store, the lock directory, the runtime.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::lock::LockDir;
use crate::config::{Config, StoreConfig};
use crate::http::{HttpTransport, Transport};
use crate::live::{Clock, Runtime};
use crate::store::{
    Archive, IgorStore, IgorStoreConfig, KeyError, SealedStore, SqliteStore, Store, StoreError,
    StoreKey,
};

/// Why the configured store cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// `store.key_env` names a variable that is not set.
    #[error("store.key_env names ${0}, which is not set")]
    KeyUnset(String),
    /// The Igor password's variable is not set.
    #[error("the Igor password is read from ${0}, which is not set")]
    PasswordUnset(String),
    /// The store key is not a key.
    #[error("${var}: {source}")]
    Key {
        /// The variable holding it.
        var: String,
        /// What is wrong with it.
        source: KeyError,
    },
    /// The embedded store cannot be opened.
    #[error("cannot open the store {path}: {source}")]
    Embedded {
        /// The store file.
        path: String,
        /// Why.
        source: StoreError,
    },
    /// The Igor store's settings are refused.
    #[error(transparent)]
    Igor(StoreError),
}

type Result<T> = std::result::Result<T, OpenError>;

/// Opens the configured store; with `store.key_env`, secrets are encrypted at rest.
pub fn open_store(config: &Config) -> Result<Arc<dyn Store>> {
    let key = match config.store.key_env() {
        Some(var) => {
            let text = std::env::var(var).map_err(|_| OpenError::KeyUnset(var.to_owned()))?;
            crate::secret::register(text.trim());
            Some(StoreKey::parse(&text).map_err(|source| OpenError::Key {
                var: var.to_owned(),
                source,
            })?)
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
                SqliteStore::open(&path).map_err(|source| OpenError::Embedded {
                    path: path.display().to_string(),
                    source,
                })?,
            )
        }
        StoreConfig::Igor {
            url,
            username,
            password_env,
            ..
        } => {
            let password = std::env::var(password_env)
                .map_err(|_| OpenError::PasswordUnset(password_env.clone()))?;
            crate::secret::register(&password);
            Arc::new(
                IgorStore::new(
                    IgorStoreConfig {
                        url: url.clone(),
                        username: username.clone(),
                        password: password.into(),
                        timeout: Duration::from_secs(30),
                    },
                    HttpTransport::shared(),
                )
                .map_err(OpenError::Igor)?,
            )
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

/// The archive of entries, coverage, run statuses and budgets: the embedded store's own
/// file, or with the Igor store an embedded file beside it (`store.archive`).
pub fn open_archive(config: &Config) -> Result<Arc<dyn Archive>> {
    let path = match &config.store {
        StoreConfig::Embedded { path, .. } => config.resolve_path(path),
        StoreConfig::Igor { archive, .. } => config.resolve_path(archive),
    };
    Ok(Arc::new(SqliteStore::open(&path).map_err(|source| {
        OpenError::Embedded {
            path: path.display().to_string(),
            source,
        }
    })?))
}

/// The shared parts of live calls, with the process's one HTTP transport.
pub fn runtime(config: &Config, store: Arc<dyn Store>, clock: Clock) -> Result<Runtime> {
    runtime_with(config, store, clock, HttpTransport::shared())
}

/// The shared parts of live calls, with `transport` (the process's one, as
/// [`prepare_transport`] gives it).
pub fn runtime_with(
    config: &Config,
    store: Arc<dyn Store>,
    clock: Clock,
    transport: Arc<dyn Transport>,
) -> Result<Runtime> {
    Ok(Runtime {
        store,
        archive: open_archive(config)?,
        locks: Arc::new(LockDir::new(lock_dir(config))),
        clock,
        transport,
    })
}

/// Starts getting the process's one HTTP transport ([`HttpTransport::shared`]) on a
/// blocking thread: a new client reads the platform's root certificates (a few
/// milliseconds), which then happens while the caller goes on (compiling the provider
/// file, opening the store). Called within the runtime the transport serves.
pub fn prepare_transport() -> tokio::task::JoinHandle<Arc<dyn Transport>> {
    tokio::task::spawn_blocking(HttpTransport::shared)
}
