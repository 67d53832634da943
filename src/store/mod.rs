//! Stores: one interface over Igor's database tree, so the engine reads settings and
//! tokens and writes sensor data the same way whether the tree lives in an embedded
//! SQLite file ([`SqliteStore`]), a PostgreSQL database ([`PostgresStore`]) or a running
//! Igor server ([`IgorStore`]). The embedded and PostgreSQL stores have one semantics
//! (same values back, same errors, transactions); Igor keeps leaf text and has no
//! transactions, as the methods below say.
//!
//! Paths are Igor's, relative to its `/data` root and slash-separated
//! (`identities/jack/plugindata/fitbit/token`); every step must be a plain element name
//! (`^[a-zA-Z_][-_.a-zA-Z0-9]*$`), which keeps paths free of XPath syntax.
//!
//! [`SealedStore`] wraps any backend and encrypts secret leaves at rest.

pub mod archive;
mod igor;
mod postgres;
mod postgres_archive;
mod postgres_lock;
mod postgres_queue;
mod sealed;
mod sqlite;

use std::path::PathBuf;

use serde_json::Value;

pub use self::archive::Archive;
pub use self::igor::{IgorStore, IgorStoreConfig};
pub use self::postgres::PostgresStore;
pub use self::postgres_lock::PostgresLocks;
pub use self::postgres_queue::{Claim, DueTime, PostgresQueue};
pub use self::sealed::{KeyError, SEALED, SEALED_PREFIX, SealedStore, StoreKey};
pub use self::sqlite::SqliteStore;

/// A tree of JSON values addressed by Igor paths.
///
/// Implementations are cheap to share (`Arc<dyn Store>`) and safe to call from many
/// tasks at once.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The subtree at `path`, `None` if it does not exist.
    ///
    /// Readers must accept a string where a number was written: the Igor backend keeps
    /// leaf text verbatim (`"75.3"`), the embedded and PostgreSQL ones return what was
    /// written (`75.3`).
    async fn get(&self, path: &str) -> Result<Option<Value>, StoreError>;

    /// Replaces the whole subtree at `path` atomically, creating missing parents; never
    /// touches siblings or the parents' other children. The embedded and PostgreSQL
    /// stores refuse a write below a stored list, number, string or `true`
    /// ([`StoreError::NotAContainer`]); Igor applies its own rules there.
    async fn put(&self, path: &str, value: &Value) -> Result<(), StoreError>;

    /// The subtrees at `paths`, in order, read together: the embedded and PostgreSQL
    /// stores read them in one transaction (one consistent view); the Igor store one
    /// after the other.
    async fn get_many(&self, paths: &[&str]) -> Result<Vec<Option<Value>>, StoreError> {
        let mut values = Vec::with_capacity(paths.len());
        for path in paths {
            values.push(self.get(path).await?);
        }
        Ok(values)
    }

    /// Replaces the subtree at each path, in order, as [`Store::put`] does. The embedded
    /// and PostgreSQL stores write them in one transaction: all of them or none. Igor has no
    /// transactions; there they are written one after the other and a failure stops at
    /// the write that failed.
    async fn put_many(&self, writes: &[(&str, &Value)]) -> Result<(), StoreError> {
        for (path, value) in writes {
            self.put(path, value).await?;
        }
        Ok(())
    }

    /// Removes the subtree at `path`; removing something absent is not an error.
    async fn delete(&self, path: &str) -> Result<(), StoreError>;

    /// The subtree as Igor XML (what Igor prints for the element, without the newline its
    /// HTTP replies add), `None` if absent.
    async fn export_xml(&self, path: &str) -> Result<Option<String>, StoreError>;

    /// Makes earlier writes durable now. Igor saves its database lazily, so callers
    /// invoke this after writing tokens; the embedded store's writes are durable already,
    /// and it checkpoints and empties its write-ahead log here, so that old copies of a
    /// token do not linger in the `-wal` file. PostgreSQL's commits are durable: nothing
    /// to do.
    async fn save(&self) -> Result<(), StoreError>;

    /// A short name for messages (`"embedded"`, `"postgres"`, `"igor"`).
    fn kind(&self) -> &'static str;
}

/// Why a store operation failed. Messages name the path and never contain secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The path is not a slash-separated list of plain Igor element names.
    #[error("invalid store path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A write would have to go below a stored value that cannot hold children.
    #[error("cannot write {path}: {ancestor} holds {kind}, not a container of elements")]
    NotAContainer {
        /// The path being written.
        path: String,
        /// The ancestor that is in the way.
        ancestor: String,
        /// What the ancestor holds ("a list", "a number", ...).
        kind: &'static str,
    },

    /// The embedded database failed.
    #[error("embedded store {file}: cannot {action}: {source}")]
    Sqlite {
        /// The database file.
        file: PathBuf,
        /// What was being done, with the path if there is one.
        action: String,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },

    /// A file-system operation around the embedded database failed.
    #[error("embedded store {file}: cannot {action}: {source}")]
    Io {
        /// The file or directory concerned.
        file: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },

    /// The embedded database holds something this version cannot read.
    #[error("embedded store {file}: {detail}")]
    Corrupt {
        /// The database file.
        file: PathBuf,
        /// What is wrong.
        detail: String,
    },

    /// Igor answered with a status other than 200.
    #[error("igor {method} {target}: HTTP {status}: {message}")]
    IgorStatus {
        /// The HTTP method.
        method: &'static str,
        /// The request path (`/data/...`, `/internal/save`).
        target: String,
        /// The HTTP status code.
        status: u16,
        /// Igor's error text (tags stripped from HTML pages, secrets redacted).
        message: String,
    },

    /// Igor answered 200 with something that is not the expected reply.
    #[error("igor {method} {target}: unexpected reply: {message}")]
    IgorReply {
        /// The HTTP method.
        method: &'static str,
        /// The request path.
        target: String,
        /// What was wrong with the reply.
        message: String,
    },

    /// The request to Igor could not be made or its answer not read.
    #[error("igor {method} {target}: {message}")]
    IgorTransport {
        /// The HTTP method.
        method: &'static str,
        /// The request path.
        target: String,
        /// The transport error and its causes.
        message: String,
    },

    /// The missing parents of a path could not be created in Igor.
    #[error("cannot create the parents of {path} in igor: {source}")]
    IgorParents {
        /// The path that was being written.
        path: String,
        /// The request that failed.
        #[source]
        source: Box<StoreError>,
    },

    /// The value cannot be stored in Igor's tree (Igor itself would fail on it), e.g. a
    /// key starting with `@`.
    #[error("cannot store {path}: {source}")]
    Unrepresentable {
        /// The path being written.
        path: String,
        /// What Igor's conversion rejects.
        #[source]
        source: crate::igor::xml::XmlError,
    },

    /// A secret leaf is encrypted and cannot be opened.
    #[error("cannot read {path}: {detail}")]
    Sealed {
        /// The leaf's path.
        path: String,
        /// Why it cannot be opened.
        detail: String,
    },

    /// The Igor store configuration is unusable.
    #[error("igor store configuration: {0}")]
    Config(String),

    /// The PostgreSQL store configuration (URL, pool size) is unusable.
    #[error("postgres store configuration: {0}")]
    PostgresConfig(String),

    /// A PostgreSQL statement or transaction failed.
    #[error("postgres store {target}: cannot {action}: {source}")]
    Postgres {
        /// The database as `user@host:port/dbname` (never the password).
        target: String,
        /// What was being done, with the path if there is one.
        action: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// No connection to PostgreSQL could be had from the pool.
    #[error("postgres store {target}: cannot {action}: no connection: {message}")]
    PostgresPool {
        /// The database as `user@host:port/dbname`.
        target: String,
        /// What was being done.
        action: String,
        /// Why (connection refused, authentication failed, timeout), secrets redacted.
        message: String,
    },

    /// The PostgreSQL database holds something this version cannot read.
    #[error("postgres store {target}: {detail}")]
    PostgresSchema {
        /// The database as `user@host:port/dbname`.
        target: String,
        /// What is wrong.
        detail: String,
    },

    /// The embedded store's thread did not finish the operation (it panicked, or the
    /// store was closed).
    #[error("embedded store {file}: the operation on {path} did not finish")]
    Stopped {
        /// The database file.
        file: PathBuf,
        /// The path of the operation.
        path: String,
    },
}

/// A validated store path: its text and its steps.
#[derive(Debug, Clone)]
struct StorePath {
    text: String,
    steps: Vec<String>,
}

impl StorePath {
    /// Splits and validates `path`.
    fn parse(path: &str) -> Result<Self, StoreError> {
        let invalid = |reason: String| StoreError::InvalidPath {
            path: path.to_owned(),
            reason,
        };
        if path.is_empty() {
            return Err(invalid("the path is empty".to_owned()));
        }
        let mut steps = Vec::new();
        for step in path.split('/') {
            if step.is_empty() {
                return Err(invalid(
                    "empty step (leading, trailing or double slash)".to_owned(),
                ));
            }
            if !is_element_name(step) {
                return Err(invalid(format!(
                    "step {step:?} is not a plain element name ([a-zA-Z_][-_.a-zA-Z0-9]*)"
                )));
            }
            steps.push(step.to_owned());
        }
        Ok(Self {
            text: path.to_owned(),
            steps,
        })
    }

    /// Parses `path` for a write of `value`, refusing what Igor would refuse, so that
    /// every backend accepts the same trees.
    fn writable(path: &str, value: &Value) -> Result<Self, StoreError> {
        let path = StorePath::parse(path)?;
        crate::igor::xml::try_to_igor_xml(path.last(), value).map_err(|source| {
            StoreError::Unrepresentable {
                path: path.text.clone(),
                source,
            }
        })?;
        Ok(path)
    }

    /// The last step, the element's tag.
    fn last(&self) -> &str {
        self.steps.last().map(String::as_str).unwrap_or_default()
    }

    /// The path made of the first `depth` steps.
    fn prefix(&self, depth: usize) -> String {
        self.steps[..depth].join("/")
    }
}

/// Whether `name` matches `^[a-zA-Z_][-_.a-zA-Z0-9]*$`, Igor's plain tag names.
fn is_element_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) if first.is_ascii_alphabetic() || first == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_validated_step_by_step() {
        for good in ["a", "plugindata/fitbit/client_id", "_x/a-b.c/Z9"] {
            let parsed = StorePath::parse(good).expect(good);
            assert_eq!(parsed.text, good);
        }
        for bad in [
            "", "/a", "a/", "a//b", "1abc", "a/b c", "a/-b", "a/b[1]", "a/é", "..",
        ] {
            let error = StorePath::parse(bad).expect_err(bad).to_string();
            assert!(error.starts_with("invalid store path"), "{error}");
        }
    }

    #[test]
    fn prefixes_and_last_step() {
        let path = StorePath::parse("identities/jack/plugindata").expect("valid");
        assert_eq!(path.last(), "plugindata");
        assert_eq!(path.prefix(2), "identities/jack");
    }
}
