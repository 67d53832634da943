//! What the handlers share: plugins, the runtime, who may call, the per-user run locks
//! and counters, and (with the PostgreSQL store) the schedule's shared queue.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use indexmap::IndexMap;

use super::access::{Access, Csrf, Hosts};
use super::error::AppError;
use crate::config::{Config, ServerConfig, StoreConfig};
use crate::igor::paths;
use crate::live::Runtime;
use crate::live::consent;
use crate::provider::Provider;
use crate::store::{PostgresQueue, StoreError};
use crate::user::UserName;

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A plugin's provider cannot be loaded.
    #[error(transparent)]
    Plugin(#[from] crate::config::ConfigError),
    /// `public_url` or `allowed_hosts` is refused.
    #[error("{0}")]
    Hosts(String),
    /// The PostgreSQL URL's variable is not set (for the schedule's queue).
    #[error("the postgres url is read from ${0}, which is not set")]
    UrlUnset(String),
    /// The schedule's queue cannot be set up.
    #[error("the schedule's queue: {0}")]
    Queue(StoreError),
}

/// Why the stored form keys cannot be read or made.
#[derive(Debug, thiserror::Error)]
pub enum CsrfError {
    /// The store failed.
    #[error("the form key of {plugin}: {source}")]
    Store {
        /// The plugin.
        plugin: String,
        /// Why.
        source: StoreError,
    },
    /// The lock around making the key failed.
    #[error("the form key of {plugin}: {source}")]
    Lock {
        /// The plugin.
        plugin: String,
        /// Why.
        source: crate::auth::lock::LockError,
    },
}

/// Everything the handlers share.
pub struct AppState {
    /// Plugins by name, with their providers.
    pub plugins: IndexMap<String, Arc<Provider>>,
    /// What each plugin's tree shows of the archive.
    pub keep: IndexMap<String, crate::live::sync::Keep>,
    /// Store, archive, locks, clock.
    pub rt: Runtime,
    /// The URL providers redirect back to (no trailing slash).
    pub public_url: String,
    /// Who may call.
    pub access: Arc<Access>,
    /// The host names the server answers for, and its own origins.
    pub hosts: Arc<Hosts>,
    /// Connection limits and timeouts.
    pub limits: ServerConfig,
    /// The tokens of our own forms.
    pub csrf: Csrf,
    /// One fetch at a time per (plugin, user): the lock and how many runs hold or wait
    /// for it.
    user_locks: Mutex<HashMap<String, RunLock>>,
    /// Counters for /metrics.
    pub metrics: Metrics,
    /// When the built-in schedule fetches each (plugin, user) next, in epoch seconds,
    /// keyed `plugin\0user`; empty when the schedule does not run.
    pub next_due: Mutex<HashMap<String, f64>>,
    /// With the PostgreSQL store: the queue of due runs every instance shares.
    pub queue: Option<Arc<PostgresQueue>>,
}

/// Counters exposed at `/metrics`. Fetches are counted per user only for users with
/// stored data (a bounded set); fetches for unknown names count per plugin.
#[derive(Debug, Default)]
pub struct Metrics {
    pub(super) fetch_ok: Mutex<HashMap<String, u64>>,
    pub(super) fetch_failed: Mutex<HashMap<String, u64>>,
    pub(super) unknown_ok: Mutex<HashMap<String, u64>>,
    pub(super) unknown_failed: Mutex<HashMap<String, u64>>,
    pub(super) requests: AtomicU64,
}

impl Metrics {
    pub fn count(&self, ok: bool, plugin: &str, user: Option<&str>) {
        let (map, key) = match (user, ok) {
            (Some(user), true) => (&self.fetch_ok, format!("{plugin}\u{0}{user}")),
            (Some(user), false) => (&self.fetch_failed, format!("{plugin}\u{0}{user}")),
            (None, true) => (&self.unknown_ok, plugin.to_owned()),
            (None, false) => (&self.unknown_failed, plugin.to_owned()),
        };
        let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(key).or_default() += 1;
    }
}

/// A per-user run lock and the number of claims on it.
type RunLock = (Arc<tokio::sync::Mutex<()>>, usize);

/// A fetch's claim on its per-user run lock, waiting or holding; the map entry goes with
/// the last claim (a cancelled wait included), so names that are asked for once leave
/// nothing behind.
pub struct UserRun<'a> {
    state: &'a AppState,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for UserRun<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut m = self
            .state
            .user_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((_, claims)) = m.get_mut(&self.key) {
            *claims -= 1;
            if *claims == 0 {
                m.remove(&self.key);
            }
        }
    }
}

impl AppState {
    /// Builds the state for `config` served on `port`, loading every plugin's provider.
    pub fn new(
        config: &Config,
        rt: Runtime,
        access: Access,
        port: u16,
    ) -> Result<AppState, StartError> {
        let mut plugins = IndexMap::new();
        let mut keep = IndexMap::new();
        for name in config.plugin_names() {
            let provider = config.load_plugin(&name)?;
            keep.insert(name.clone(), config.plugin_keep(&name));
            plugins.insert(name, Arc::new(provider));
        }
        let public_url = consent::public_url(config);
        let hosts =
            Hosts::new(&public_url, port, &config.allowed_hosts).map_err(StartError::Hosts)?;
        let queue = match &config.store {
            StoreConfig::Postgres { url_env, .. } => {
                let url =
                    std::env::var(url_env).map_err(|_| StartError::UrlUnset(url_env.clone()))?;
                Some(Arc::new(
                    PostgresQueue::new(&url).map_err(StartError::Queue)?,
                ))
            }
            StoreConfig::Embedded { .. } | StoreConfig::Igor { .. } => None,
        };
        Ok(AppState {
            plugins,
            keep,
            rt,
            public_url,
            access: Arc::new(access),
            hosts: Arc::new(hosts),
            limits: config.server.clone(),
            csrf: Csrf::new(),
            user_locks: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
            next_due: Mutex::new(HashMap::new()),
            queue,
        })
    }

    /// Reads each plugin's form key from the store (`plugindata/<plugin>/csrf_key`),
    /// making and storing it under the plugin's lock when there is none yet, so every
    /// instance serving the store uses the same key.
    pub async fn share_csrf_keys(&self) -> Result<(), CsrfError> {
        for plugin in self.plugins.keys() {
            let key = self.stored_csrf_key(plugin).await?;
            // A secret like the client secret: never printed.
            crate::secret::register(&Csrf::key_text(&key));
            self.csrf.share(plugin, key);
        }
        Ok(())
    }

    async fn stored_csrf_key(&self, plugin: &str) -> Result<[u8; 32], CsrfError> {
        let store_error = |source| CsrfError::Store {
            plugin: plugin.to_owned(),
            source,
        };
        let _held = self
            .rt
            .locks
            .lock(&format!("{plugin}--csrf"))
            .await
            .map_err(|source| CsrfError::Lock {
                plugin: plugin.to_owned(),
                source,
            })?;
        let path = format!("{}/csrf_key", paths::app(plugin));
        let stored = self.rt.store.get(&path).await.map_err(store_error)?;
        if let Some(key) = crate::live::leaf_text(stored.as_ref())
            .as_deref()
            .and_then(Csrf::parse_key)
        {
            return Ok(key);
        }
        let key = Csrf::random_key();
        let text = Csrf::key_text(&key);
        self.rt
            .store
            .put(&path, &serde_json::Value::String(text))
            .await
            .map_err(store_error)?;
        Ok(key)
    }

    pub fn provider(&self, plugin: &str) -> Result<Arc<Provider>, AppError> {
        self.plugins.get(plugin).cloned().ok_or_else(|| {
            AppError::new(StatusCode::NOT_FOUND, format!("no plugin named {plugin}"))
        })
    }

    /// Waits for the per-(plugin, user) run lock.
    pub async fn user_run(&self, plugin: &str, user: &UserName) -> UserRun<'_> {
        let key = format!("{plugin}\u{0}{user}");
        let lock = {
            let mut m = self.user_locks.lock().unwrap_or_else(|e| e.into_inner());
            let (lock, claims) = m.entry(key.clone()).or_default();
            *claims += 1;
            lock.clone()
        };
        // The claim exists before the wait, so a cancelled wait gives it back too.
        let mut run = UserRun {
            state: self,
            key,
            guard: None,
        };
        run.guard = Some(lock.lock_owned().await);
        run
    }

    /// When the built-in schedule fetches `user` of `plugin` next (epoch seconds); `None`
    /// when the schedule does not run or has not seen the user yet.
    pub fn next_due(&self, plugin: &str, user: &str) -> Option<f64> {
        let m = self.next_due.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&format!("{plugin}\u{0}{user}")).copied()
    }

    /// The callback URL to register with the provider.
    pub fn callback_url(&self, plugin: &str) -> String {
        consent::callback_url_at(&self.public_url, plugin)
    }
}
