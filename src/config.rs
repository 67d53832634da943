//! The config file (`healthpull.yaml`): store, server, providers and plugins.
//!
//! Every setting has a default, so no file is needed to start: the embedded store in
//! `healthpull.db`, providers from `providers/`, one plugin per provider file with
//! the provider's own name, listening on 127.0.0.1:8099.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;

use crate::provider::{self, Diagnostics, Provider, UrlOverrides};

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory of provider files, relative to the config file.
    #[serde(default = "default_providers_dir")]
    pub providers_dir: PathBuf,
    /// Where settings, tokens and sensor data live.
    #[serde(default)]
    pub store: StoreConfig,
    /// Address `serve` listens on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The URL people and providers reach this server at (OAuth callbacks).
    #[serde(default)]
    pub public_url: Option<String>,
    /// Further `Host` names `serve` answers for (`name` or `name:port`), beside the host
    /// of `public_url` and the loopback names with the listening port.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Connection limits and timeouts of `serve`.
    #[serde(default)]
    pub server: ServerConfig,
    /// Directory for lock files (default: beside the embedded store, or `.healthpull-locks`).
    #[serde(default)]
    pub lock_dir: Option<PathBuf>,
    /// Plugins by name; when empty, every provider file is a plugin of its own name.
    #[serde(default)]
    pub plugins: IndexMap<String, PluginConfig>,
    /// Access control for `serve`.
    #[serde(default)]
    pub access: AccessConfig,
    /// Built-in schedule of `serve`.
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// Directory the config file was read from (paths are relative to it).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// Store selection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum StoreConfig {
    /// SQLite file.
    Embedded {
        /// Path of the database file.
        #[serde(default = "default_db")]
        path: PathBuf,
        /// Environment variable holding the key (32 bytes, base64 or hex) that encrypts
        /// tokens, PKCE verifiers and client secrets at rest; unset: stored in plain text.
        #[serde(default)]
        key_env: Option<String>,
    },
    /// A running Igor.
    Igor {
        /// Igor's base URL (`http://127.0.0.1:9333`).
        url: String,
        /// Identity to authenticate as.
        username: String,
        /// Environment variable holding the password.
        #[serde(default = "default_password_env")]
        password_env: String,
        /// The embedded file that holds the archive of entries, coverage and budgets
        /// beside Igor's tree.
        #[serde(default = "default_archive")]
        archive: PathBuf,
        /// Environment variable holding the key (32 bytes, base64 or hex) that encrypts
        /// tokens, PKCE verifiers and client secrets at rest; unset: stored in plain text.
        #[serde(default)]
        key_env: Option<String>,
    },
    /// A PostgreSQL database.
    Postgres {
        /// Environment variable holding the connection URL
        /// (`postgresql://user:password@host:port/dbname`), which carries the password.
        #[serde(default = "default_postgres_url_env")]
        url_env: String,
        /// Connections kept open at most.
        #[serde(default = "default_postgres_pool")]
        pool: usize,
        /// Environment variable holding the key (32 bytes, base64 or hex) that encrypts
        /// tokens, PKCE verifiers and client secrets at rest; unset: stored in plain text.
        #[serde(default)]
        key_env: Option<String>,
    },
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Embedded {
            path: default_db(),
            key_env: None,
        }
    }
}

impl StoreConfig {
    /// The environment variable holding the at-rest key, when one is configured.
    pub fn key_env(&self) -> Option<&str> {
        match self {
            StoreConfig::Embedded { key_env, .. }
            | StoreConfig::Igor { key_env, .. }
            | StoreConfig::Postgres { key_env, .. } => key_env.as_deref(),
        }
    }
}

/// One plugin: a name in Igor's tree bound to a provider file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Provider file name without `.yaml` (default: the plugin name).
    #[serde(default)]
    pub provider: Option<String>,
    /// Replaces the provider's `auth.authorize_url`.
    #[serde(default)]
    pub authorize_url: Option<String>,
    /// Replaces the provider's `auth.token_url`.
    #[serde(default)]
    pub token_url: Option<String>,
    /// Replaces the provider's `auth.revoke_url`.
    #[serde(default)]
    pub revoke_url: Option<String>,
    /// Replaces the provider's `api.base_url`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// How much of the archive the user's tree in Igor shows: `{days: N}`, `{entries: N}`
    /// (per output); by default the days each method asks for.
    #[serde(default)]
    pub keep: crate::history::Keep,
}

impl PluginConfig {
    /// The URL overrides to compile the provider with.
    pub fn overrides(&self) -> UrlOverrides {
        UrlOverrides {
            authorize_url: self.authorize_url.clone(),
            token_url: self.token_url.clone(),
            revoke_url: self.revoke_url.clone(),
            base_url: self.base_url.clone(),
        }
    }
}

/// Access control.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Environment variable holding an admin token (`Authorization: Bearer`).
    #[serde(default)]
    pub admin_token_env: Option<String>,
    /// HTTP Basic user name.
    #[serde(default)]
    pub basic_user: Option<String>,
    /// Environment variable holding the Basic password.
    #[serde(default)]
    pub basic_password_env: Option<String>,
}

/// Connection limits and timeouts of `serve`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Seconds a client has to send a request's whole header once the server waits for
    /// one (a new connection, or a kept-alive one between requests).
    #[serde(default = "default_header_timeout")]
    pub header_timeout_seconds: u64,
    /// Seconds a connection may make no progress (no request body bytes, no answer bytes
    /// taken) before it is closed; a request being handled is never cut.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_seconds: u64,
    /// Connections served at once; further ones wait in the listen queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            header_timeout_seconds: default_header_timeout(),
            idle_timeout_seconds: default_idle_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

/// The built-in schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Whether `serve` fetches by itself.
    #[serde(default)]
    pub enabled: bool,
    /// Seconds between fetches of one user (the old Igor action used 36000).
    #[serde(default = "default_interval")]
    pub interval_seconds: u64,
    /// Random extra delay, up to this many seconds.
    #[serde(default = "default_jitter")]
    pub jitter_seconds: u64,
    /// With the PostgreSQL store, where instances share one queue of due runs: how long
    /// an instance's claim on a run holds without being renewed (it is renewed while the
    /// run goes on), so a dead instance's runs are taken over after this long.
    #[serde(default = "default_lease")]
    pub lease_seconds: u64,
    /// With the PostgreSQL store: the most runs one instance has going at once.
    #[serde(default = "default_max_running")]
    pub max_running: usize,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            enabled: false,
            interval_seconds: default_interval(),
            jitter_seconds: default_jitter(),
            lease_seconds: default_lease(),
            max_running: default_max_running(),
        }
    }
}

fn default_lease() -> u64 {
    60
}
fn default_max_running() -> usize {
    8
}

fn default_providers_dir() -> PathBuf {
    PathBuf::from("providers")
}
fn default_db() -> PathBuf {
    PathBuf::from("healthpull.db")
}
fn default_listen() -> String {
    "127.0.0.1:8099".to_owned()
}
fn default_archive() -> PathBuf {
    PathBuf::from("healthpull-archive.sqlite")
}

fn default_password_env() -> String {
    "HEALTHPULL_IGOR_PASSWORD".to_owned()
}
fn default_postgres_url_env() -> String {
    "HEALTHPULL_DATABASE_URL".to_owned()
}
fn default_postgres_pool() -> usize {
    8
}

fn default_header_timeout() -> u64 {
    10
}
fn default_idle_timeout() -> u64 {
    60
}
fn default_max_connections() -> usize {
    256
}
fn default_interval() -> u64 {
    36000
}
fn default_jitter() -> u64 {
    600
}

/// Failures reading the config or the providers it names.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable file.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Bad YAML: every problem found, each with its line and column.
    #[error("{}", yaml_problems(.path, .problems))]
    Yaml {
        /// File.
        path: PathBuf,
        /// What is wrong where.
        problems: Vec<provider::yaml::Located>,
    },
    /// Unknown keys or wrong types.
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Cause.
        message: String,
    },
    /// Unknown plugin.
    #[error("unknown plugin `{name}` (configured: {known})")]
    UnknownPlugin {
        /// Asked for.
        name: String,
        /// Available.
        known: String,
    },
    /// The provider file of a plugin is broken.
    #[error(transparent)]
    Provider(#[from] Diagnostics),
}

/// One `file:line:col: message` line per problem.
fn yaml_problems(path: &Path, problems: &[provider::yaml::Located]) -> String {
    problems
        .iter()
        .map(|p| {
            format!(
                "{}:{}:{}: {}",
                path.display(),
                p.loc.line,
                p.loc.col,
                p.message
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads `path`, or the defaults when `path` is None and `healthpull.yaml` does not exist.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_owned(), true),
            None => (PathBuf::from("healthpull.yaml"), false),
        };
        // The same route and limits as provider files (`provider::yaml`).
        let text = match provider::yaml::read_file(&path) {
            Ok(t) => t,
            Err(provider::yaml::ReadError::Io(e))
                if !required && e.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(Config::defaults(PathBuf::from(".")));
            }
            Err(provider::yaml::ReadError::Io(source)) => {
                return Err(ConfigError::Read { path, source });
            }
            Err(refused) => {
                return Err(ConfigError::Yaml {
                    path,
                    problems: vec![provider::yaml::Located {
                        loc: provider::yaml::Loc { line: 1, col: 1 },
                        message: format!("the file {refused}"),
                    }],
                });
            }
        };
        let doc = match provider::yaml::parse(&text) {
            Ok(doc) if doc.problems.is_empty() => doc,
            Ok(doc) => {
                return Err(ConfigError::Yaml {
                    path,
                    problems: doc.problems,
                });
            }
            Err(problems) => return Err(ConfigError::Yaml { path, problems }),
        };
        let mut config: Config =
            serde_json::from_value(doc.value).map_err(|e| ConfigError::Parse {
                path: path.clone(),
                message: e.to_string(),
            })?;
        config.base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        Ok(config)
    }

    /// The settings used when there is no config file.
    pub fn defaults(base_dir: PathBuf) -> Config {
        Config {
            providers_dir: default_providers_dir(),
            store: StoreConfig::default(),
            listen: default_listen(),
            public_url: None,
            allowed_hosts: Vec::new(),
            server: ServerConfig::default(),
            lock_dir: None,
            plugins: IndexMap::new(),
            access: AccessConfig::default(),
            schedule: ScheduleConfig::default(),
            base_dir,
        }
    }

    /// A path from the config, made relative to the config file's directory.
    pub fn resolve_path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The providers directory.
    pub fn providers_dir(&self) -> PathBuf {
        self.resolve_path(&self.providers_dir)
    }

    /// The plugin names: configured ones, or one per provider file.
    pub fn plugin_names(&self) -> Vec<String> {
        if !self.plugins.is_empty() {
            return self.plugins.keys().cloned().collect();
        }
        provider::provider_files(&self.providers_dir())
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect()
    }

    /// What the user's tree of `plugin` shows of the archive.
    pub fn plugin_keep(&self, plugin: &str) -> crate::history::Keep {
        self.plugins.get(plugin).map(|p| p.keep).unwrap_or_default()
    }

    /// Loads the provider a plugin uses, with its URL overrides applied.
    pub fn load_plugin(&self, plugin: &str) -> Result<Provider, ConfigError> {
        let (path, overrides) = self.plugin_file(plugin)?;
        Ok(provider::load(&path, &overrides)?)
    }

    /// The provider file a plugin uses and its URL overrides: an unknown plugin, or one
    /// whose file is not there, is refused.
    pub fn plugin_file(&self, plugin: &str) -> Result<(PathBuf, UrlOverrides), ConfigError> {
        let (file, overrides) = if self.plugins.is_empty() {
            (plugin.to_owned(), UrlOverrides::default())
        } else {
            let p = self
                .plugins
                .get(plugin)
                .ok_or_else(|| ConfigError::UnknownPlugin {
                    name: plugin.to_owned(),
                    known: self.plugin_names().join(", "),
                })?;
            (
                p.provider.clone().unwrap_or_else(|| plugin.to_owned()),
                p.overrides(),
            )
        };
        let dir = self.providers_dir();
        let path = ["yaml", "yml"]
            .iter()
            .map(|ext| dir.join(format!("{file}.{ext}")))
            .find(|p| p.exists())
            .ok_or_else(|| ConfigError::UnknownPlugin {
                name: plugin.to_owned(),
                known: self.plugin_names().join(", "),
            })?;
        Ok((path, overrides))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("healthpull.yaml");
        std::fs::write(&path, text).expect("write the config");
        Config::load(Some(&path))
    }

    /// A number inside the internally tagged `store` (read through serde's buffered
    /// content, with serde_json's `arbitrary_precision` on).
    #[test]
    fn a_postgres_store_reads_its_url_variable_and_pool_size() {
        let config = load("store: {kind: postgres, url_env: HP_DB, pool: 4}\n").expect("config");
        let StoreConfig::Postgres {
            url_env,
            pool,
            key_env,
            ..
        } = config.store
        else {
            panic!("not postgres: {:?}", config.store);
        };
        assert_eq!((url_env.as_str(), pool, key_env), ("HP_DB", 4, None));

        let config = load("store:\n  kind: postgres\n  key_env: HP_KEY\n").expect("config");
        let StoreConfig::Postgres { url_env, pool, .. } = &config.store else {
            panic!("not postgres: {:?}", config.store);
        };
        assert_eq!((url_env.as_str(), *pool), ("HEALTHPULL_DATABASE_URL", 8));
        assert_eq!(config.store.key_env(), Some("HP_KEY"));
    }

    #[test]
    fn a_pool_size_must_be_a_whole_number() {
        for bad in ["pool: 2.5", "pool: -1", "pool: four", "url: postgresql://x"] {
            let error = load(&format!("store: {{kind: postgres, {bad}}}\n"))
                .expect_err(bad)
                .to_string();
            assert!(error.contains("healthpull.yaml: "), "{bad}: {error}");
        }
    }
}
