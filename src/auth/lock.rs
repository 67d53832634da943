//! Named locks that hold both inside this process and across processes, so that a
//! token refresh for one (plugin, user) runs one at a time even when `serve` and a cron
//! `fetch` run side by side: a refresh token is often single-use, and two concurrent
//! refreshes would leave one of them holding a revoked token.
//!
//! [`Locks`] is what the live path takes a lock through. [`LockDir`] (here) holds across
//! the processes of one machine; the PostgreSQL store's locks
//! (`crate::store::PostgresLocks`) hold across every instance that shares the database.
//!
//! Within the process a tokio mutex per key queues tasks without blocking threads;
//! across processes an exclusive `flock` on `<dir>/<sanitised key>.lock` (through
//! `fs4`) is taken in a blocking thread. Both are released when the [`LockGuard`] is
//! dropped (closing the file releases the `flock`). Lock files are never deleted:
//! removing a lock file while another process waits on it would let a third process
//! lock a new file with the same name.

use std::collections::HashMap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::sync::OwnedMutexGuard;

/// A held lock: the key stays locked until the value is dropped.
pub trait Held: Send + Sync + std::fmt::Debug {
    /// The key held.
    fn key(&self) -> &str;
}

/// Named locks, each held by one task at a time among everyone sharing them.
#[async_trait::async_trait]
pub trait Locks: Send + Sync {
    /// Waits until nobody else holds `key`, then holds it until the guard is dropped.
    async fn lock(&self, key: &str) -> Result<Box<dyn Held>, LockError>;
}

/// One tokio mutex per key, so that the tasks of one process wait for a key in line
/// (without blocking threads) before one of them asks the shared lock for it.
#[derive(Debug, Default)]
pub struct LocalLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl LocalLocks {
    /// Waits for the in-process mutex of `key`.
    pub async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let local = {
            let mut map = self.map.lock().unwrap_or_else(|poison| poison.into_inner());
            Arc::clone(map.entry(key.to_owned()).or_default())
        };
        local.lock_owned().await
    }
}

/// Characters kept as they are in lock file names; everything else is percent-encoded,
/// so distinct keys give distinct names and no key can name a path outside the directory.
const KEY_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_');

/// The longest sanitised key (file names are limited to 255 bytes).
const MAX_FILE_STEM: usize = 200;

/// A directory of lock files and the in-process mutexes that go with them.
#[derive(Debug)]
pub struct LockDir {
    dir: PathBuf,
    local: LocalLocks,
}

/// Holds the lock for one key until dropped.
#[derive(Debug)]
pub struct LockGuard {
    key: String,
    _file: File,
    _local: OwnedMutexGuard<()>,
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// The key cannot be turned into a lock file name.
    #[error("invalid lock key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Creating the directory, opening the lock file or locking it failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The directory or lock file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The blocking task that waited for the file lock panicked or was cancelled.
    #[error("waiting for lock {key:?} failed: {source}")]
    Task {
        /// The key.
        key: String,
        /// The task error.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The lock was not free within the bounded wait.
    #[error("lock {key:?} still held by another instance after {waited:?}")]
    Timeout {
        /// The key.
        key: String,
        /// How long it was waited for.
        waited: std::time::Duration,
    },
    /// The database holding the lock could not be asked (secrets redacted).
    #[error("cannot take lock {key:?} in {target}: {message}")]
    Database {
        /// The key.
        key: String,
        /// The database as `user@host:port/dbname`.
        target: String,
        /// Why.
        message: String,
    },
}

impl LockDir {
    /// Lock files will live in `dir`, created (mode 0700) when the first lock is taken.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            local: LocalLocks::default(),
        }
    }

    /// The directory holding the lock files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The lock file used for `key`.
    pub fn lock_file(&self, key: &str) -> Result<PathBuf, LockError> {
        let stem = sanitise(key)?;
        Ok(self.dir.join(format!("{stem}.lock")))
    }

    /// Waits until no other task of this process and no other process holds `key`,
    /// then holds it until the guard is dropped.
    pub async fn lock(&self, key: &str) -> Result<LockGuard, LockError> {
        let path = self.lock_file(key)?;
        let local_guard = self.local.lock(key).await;

        let dir = self.dir.clone();
        let file = tokio::task::spawn_blocking(move || lock_file(&dir, &path))
            .await
            .map_err(|source| LockError::Task {
                key: key.to_owned(),
                source,
            })??;
        tracing::debug!(key, "Lock taken.");
        Ok(LockGuard {
            key: key.to_owned(),
            _file: file,
            _local: local_guard,
        })
    }
}

impl LockGuard {
    /// The key this guard holds.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Held for LockGuard {
    fn key(&self) -> &str {
        &self.key
    }
}

#[async_trait::async_trait]
impl Locks for LockDir {
    async fn lock(&self, key: &str) -> Result<Box<dyn Held>, LockError> {
        let guard = LockDir::lock(self, key).await?;
        Ok(Box::new(guard))
    }
}

/// Turns `key` into a file stem that stays inside the lock directory.
fn sanitise(key: &str) -> Result<String, LockError> {
    let invalid = |reason| LockError::InvalidKey {
        key: key.to_owned(),
        reason,
    };
    if key.is_empty() {
        return Err(invalid("the key is empty"));
    }
    let stem = utf8_percent_encode(key, KEY_ESCAPES).to_string();
    if stem.len() > MAX_FILE_STEM {
        return Err(invalid("the key is too long for a file name"));
    }
    Ok(stem)
}

/// Creates the directory if needed, opens the lock file and blocks until it is locked.
fn lock_file(dir: &Path, path: &Path) -> Result<File, LockError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| LockError::Io {
            action: "create lock directory",
            path: dir.to_path_buf(),
            source,
        })?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|source| LockError::Io {
            action: "open lock file",
            path: path.to_path_buf(),
            source,
        })?;
    fs4::FileExt::lock(&file).map_err(|source| LockError::Io {
        action: "lock",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_distinct_names_inside_the_directory() {
        assert_eq!(sanitise("fitbit/jack").expect("valid"), "fitbit%2Fjack");
        assert_eq!(sanitise("../etc").expect("valid"), "%2E%2E%2Fetc");
        assert_eq!(sanitise("a-b_c").expect("valid"), "a-b_c");
        assert_ne!(
            sanitise("a%2Fb").expect("valid"),
            sanitise("a/b").expect("valid")
        );
        assert!(sanitise("").is_err());
        assert!(sanitise(&"x".repeat(300)).is_err());
    }
}
