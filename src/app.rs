//! Wiring from the config file to live parts: the store, the lock directory, the runtime.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::lock::{LockDir, Locks};
use crate::config::{Config, StoreConfig};
use crate::http::{HttpTransport, Transport};
use crate::live::{Clock, Runtime};
use crate::store::{
    Archive, IgorStore, IgorStoreConfig, KeyError, PostgresLocks, PostgresStore, SealedStore,
    SqliteStore, Store, StoreError, StoreKey,
};

/// The longest a refresh waits for another instance's refresh of the same token.
const LOCK_WAIT: Duration = Duration::from_secs(120);

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
    /// The PostgreSQL URL's variable is not set.
    #[error("the postgres url is read from ${0}, which is not set")]
    UrlUnset(String),
    /// The PostgreSQL store's settings are refused.
    #[error("${var}: {source}")]
    Postgres {
        /// The variable holding the URL.
        var: String,
        /// What is wrong with it.
        source: StoreError,
    },
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
        StoreConfig::Postgres { url_env, pool, .. } => {
            let store = open_postgres(url_env, *pool)?;
            start_migrations(&store);
            Arc::new(store)
        }
    })
}

/// The PostgreSQL store at the URL `url_env` holds, with up to `pool` connections.
fn open_postgres(url_env: &str, pool: usize) -> Result<PostgresStore> {
    let url = std::env::var(url_env).map_err(|_| OpenError::UrlUnset(url_env.to_owned()))?;
    register_url_password(&url);
    PostgresStore::new(&url, pool).map_err(|source| OpenError::Postgres {
        var: url_env.to_owned(),
        source,
    })
}

/// Registers the password of a PostgreSQL URL (URL or `key=value` form) for redaction.
fn register_url_password(url: &str) {
    if let Ok(config) = url.parse::<tokio_postgres::Config>() {
        if let Some(password) = config.get_password() {
            if let Ok(password) = std::str::from_utf8(password) {
                crate::secret::register(password);
            }
        }
    }
}

/// Applies the store's migrations in the background as the process starts, when a
/// runtime is running; the first operation waits for them (or applies them itself).
fn start_migrations(store: &PostgresStore) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let store = store.clone();
        runtime.spawn(async move {
            if let Err(error) = store.migrate().await {
                tracing::warn!(%error, "The postgres store's schema is not ready yet");
            }
        });
    }
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
        StoreConfig::Igor { .. } | StoreConfig::Postgres { .. } => {
            config.resolve_path(std::path::Path::new(".healthpull-locks"))
        }
    }
}

/// The refresh locks: with the PostgreSQL store, advisory locks in its database (held
/// across every instance sharing it, on connections of their own: `store.pool` more);
/// otherwise lock files in the lock directory (held across the processes of a machine).
pub fn open_locks(config: &Config) -> Result<Arc<dyn Locks>> {
    match &config.store {
        StoreConfig::Postgres { url_env, pool, .. } => {
            let url = std::env::var(url_env).map_err(|_| OpenError::UrlUnset(url_env.clone()))?;
            let locks = PostgresLocks::new(&url, *pool, LOCK_WAIT).map_err(|source| {
                OpenError::Postgres {
                    var: url_env.clone(),
                    source,
                }
            })?;
            Ok(Arc::new(locks))
        }
        StoreConfig::Embedded { .. } | StoreConfig::Igor { .. } => {
            Ok(Arc::new(LockDir::new(lock_dir(config))))
        }
    }
}

/// The archive of entries, coverage, run statuses and budgets: the embedded store's own
/// file; with the PostgreSQL store, tables in its database (a store of its own on the
/// same database, so the archive's connections come from a pool of their own); with the
/// Igor store, an embedded file beside the config (`store.archive`).
pub fn open_archive(config: &Config) -> Result<Arc<dyn Archive>> {
    let (path, beside_tree) = match &config.store {
        StoreConfig::Embedded { path, .. } => (config.resolve_path(path), true),
        StoreConfig::Igor { archive, .. } => (config.resolve_path(archive), false),
        StoreConfig::Postgres { url_env, pool, .. } => {
            return Ok(Arc::new(open_postgres(url_env, *pool)?));
        }
    };
    let archive = SqliteStore::open(&path).map_err(|source| OpenError::Embedded {
        path: path.display().to_string(),
        source,
    })?;
    Ok(Arc::new(if beside_tree {
        archive.tree_syncs_commits()
    } else {
        archive
    }))
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
        locks: open_locks(config)?,
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
