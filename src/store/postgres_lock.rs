//! Refresh locks across every instance that shares a PostgreSQL store: a session-level
//! advisory lock (`pg_advisory_lock` on a hash of the key) held on a connection of its
//! own for as long as the guard lives.
//!
//! The lock is never taken inside a transaction, so nothing stays open in the database
//! while the provider is asked for a new token. When an instance dies, its session ends
//! and the server releases its locks. A wait is bounded: the session's `lock_timeout`
//! ends it after the configured time (the instance holding the lock is then stuck, and
//! the caller fails rather than waits forever).
//!
//! The connections come from a pool of their own, not the store's: a held lock keeps
//! its connection while the refresh reads and writes the token through the store, so
//! locks taken from the store's pool could hold every connection the refreshes inside
//! them wait for. Within the process, the tasks asking for one key wait in line on an
//! in-process mutex first, so a key takes at most one connection per instance.

use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool};
use sha2::{Digest, Sha256};
use tokio::sync::OwnedMutexGuard;
use tokio_postgres::error::SqlState;

use super::{PostgresStore, StoreError};
use crate::auth::lock::{Held, LocalLocks, LockError, Locks};

/// Advisory locks in a PostgreSQL database.
pub struct PostgresLocks {
    pool: Pool,
    /// `user@host:port/dbname`, for messages.
    target: String,
    local: LocalLocks,
    /// The longest a lock is waited for.
    wait: Duration,
}

impl std::fmt::Debug for PostgresLocks {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PostgresLocks")
            .field("target", &self.target)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

/// A held advisory lock: unlocked (and its connection given back) when dropped.
struct PostgresHeld {
    key: String,
    id: i64,
    client: Option<Object>,
    local: Option<OwnedMutexGuard<()>>,
}

impl std::fmt::Debug for PostgresHeld {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PostgresHeld")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Held for PostgresHeld {
    fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for PostgresHeld {
    /// Unlocks on the runtime, then lets the next task of this process in; without a
    /// runtime the connection is closed, which ends the session and its locks.
    fn drop(&mut self) {
        let (Some(client), local) = (self.client.take(), self.local.take()) else {
            return;
        };
        let id = self.id;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let unlocked = client
                        .execute("SELECT pg_advisory_unlock($1)", &[&id])
                        .await;
                    if unlocked.is_err() {
                        // A connection in an unknown state is closed, not pooled.
                        drop(Object::take(client));
                    }
                    drop(local);
                });
            }
            Err(_) => {
                drop(Object::take(client));
                drop(local);
            }
        }
    }
}

impl PostgresLocks {
    /// Locks in the database at `url`, on up to `connections` connections of their own
    /// (one per lock held at once), each waited for at most `wait`. Contacts nothing.
    pub fn new(url: &str, connections: usize, wait: Duration) -> Result<Self, StoreError> {
        let side = PostgresStore::new(url, connections)?;
        Ok(Self {
            pool: side.pool().clone(),
            target: side.target().to_owned(),
            local: LocalLocks::default(),
            wait,
        })
    }

    fn database_error(&self, key: &str, message: &str) -> LockError {
        LockError::Database {
            key: key.to_owned(),
            target: self.target.clone(),
            message: crate::secret::redact(message),
        }
    }

    fn timeout(&self, key: &str) -> LockError {
        LockError::Timeout {
            key: key.to_owned(),
            waited: self.wait,
        }
    }
}

/// The advisory lock number of `key`: the first 8 bytes of a SHA-256 of it.
pub fn lock_id(key: &str) -> i64 {
    let digest = Sha256::new()
        .chain_update(b"healthpull lock\0")
        .chain_update(key.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

#[async_trait::async_trait]
impl Locks for PostgresLocks {
    async fn lock(&self, key: &str) -> Result<Box<dyn Held>, LockError> {
        if key.is_empty() {
            return Err(LockError::InvalidKey {
                key: key.to_owned(),
                reason: "the key is empty",
            });
        }
        let deadline = Instant::now() + self.wait;
        let local = tokio::time::timeout_at(deadline.into(), self.local.lock(key))
            .await
            .map_err(|_| self.timeout(key))?;
        let client = tokio::time::timeout_at(deadline.into(), self.pool.get())
            .await
            .map_err(|_| self.timeout(key))?
            .map_err(|error| self.database_error(key, &error.to_string()))?;
        let left = deadline.saturating_duration_since(Instant::now());
        let millis = left.as_millis().max(1);
        client
            .batch_execute(&format!("SET lock_timeout = {millis}"))
            .await
            .map_err(|error| self.database_error(key, &error.to_string()))?;
        let id = lock_id(key);
        match client.execute("SELECT pg_advisory_lock($1)", &[&id]).await {
            Ok(_) => {
                tracing::debug!(key, "Lock taken in the database.");
                Ok(Box::new(PostgresHeld {
                    key: key.to_owned(),
                    id,
                    client: Some(client),
                    local: Some(local),
                }))
            }
            Err(error) if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                Err(self.timeout(key))
            }
            Err(error) => Err(self.database_error(key, &error.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_get_distinct_stable_lock_numbers() {
        assert_eq!(lock_id("fitbit--jack"), lock_id("fitbit--jack"));
        assert_ne!(lock_id("fitbit--jack"), lock_id("fitbit--jill"));
        assert_ne!(lock_id("a"), lock_id("b"));
    }

    #[test]
    fn bad_urls_are_refused_without_contacting_anything() {
        let error = PostgresLocks::new("postgresql://hp:pw@db:notaport/x", 2, Duration::ZERO)
            .expect_err("bad port");
        assert!(!error.to_string().contains("pw@"), "{error}");
    }
}
