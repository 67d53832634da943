//! The built-in schedule as a queue shared by every `serve` instance of a PostgreSQL
//! store: one row per (plugin, user) with when it is due, who claimed it and until when
//! the claim holds.
//!
//! An instance claims due rows whose lease is free or has run out (`FOR UPDATE SKIP
//! LOCKED`, so instances claiming at once take different rows), renews the lease while
//! the run goes on, and when it ends sets the next due time and frees the row. An
//! instance that dies stops renewing; once its lease runs out another instance claims
//! the row again. Every time is the database server's clock, so instances on machines
//! whose clocks differ agree on what is due and which lease ran out.
//!
//! The table lives beside the tree (`healthpull_schedule`), created on first use under
//! an advisory lock so instances starting together create it once.

use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio::sync::OnceCell;

use super::{PostgresStore, StoreError};

/// The advisory lock held while the table is created ("hpschedl" as a number).
const TABLE_LOCK: i64 = 0x6870_7363_6865_646c;

const TABLE: &str = r#"
CREATE TABLE IF NOT EXISTS healthpull_schedule (
    plugin      text COLLATE "C" NOT NULL,
    user_name   text COLLATE "C" NOT NULL,
    due_at      timestamptz NOT NULL,
    claimed_by  text,
    lease_until timestamptz,
    PRIMARY KEY (plugin, user_name)
);
CREATE INDEX IF NOT EXISTS healthpull_schedule_by_due ON healthpull_schedule (due_at);
"#;

/// One claimed (plugin, user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The plugin.
    pub plugin: String,
    /// The user.
    pub user: String,
}

/// A due time: plugin, user and epoch seconds.
pub type DueTime = (String, String, f64);

/// The shared schedule of one instance.
pub struct PostgresQueue {
    pool: Pool,
    target: String,
    /// Who this instance is in `claimed_by`: process id and a random part.
    owner: String,
    ready: OnceCell<()>,
}

impl std::fmt::Debug for PostgresQueue {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PostgresQueue")
            .field("target", &self.target)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

/// Milliseconds of `duration`, as the statements take them.
fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

impl PostgresQueue {
    /// The queue in the database at `url`, on a small pool of its own. Contacts nothing.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let side = PostgresStore::new(url, 2)?;
        Ok(Self {
            pool: side.pool().clone(),
            target: side.target().to_owned(),
            owner: format!("{}-{:08x}", std::process::id(), rand::random::<u32>()),
            ready: OnceCell::new(),
        })
    }

    /// This instance's name in `claimed_by`.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn error(&self, action: &str) -> impl Fn(tokio_postgres::Error) -> StoreError + use<> {
        let (target, action) = (self.target.clone(), action.to_owned());
        move |source| StoreError::Postgres {
            target: target.clone(),
            action: action.clone(),
            source,
        }
    }

    /// A pooled connection, the table created first (once per instance).
    async fn client(&self, action: &str) -> Result<Object, StoreError> {
        self.ready
            .get_or_try_init(|| async {
                let action = "create the schedule table";
                let error = self.error(action);
                let mut client = self.connection(action).await?;
                let transaction = client.transaction().await.map_err(&error)?;
                transaction
                    .execute("SELECT pg_advisory_xact_lock($1)", &[&TABLE_LOCK])
                    .await
                    .map_err(&error)?;
                transaction.batch_execute(TABLE).await.map_err(&error)?;
                transaction.commit().await.map_err(&error)
            })
            .await?;
        self.connection(action).await
    }

    async fn connection(&self, action: &str) -> Result<Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|error| StoreError::PostgresPool {
                target: self.target.clone(),
                action: action.to_owned(),
                message: crate::secret::redact(&error.to_string()),
            })
    }

    /// Makes the users of `plugin` that the schedule fetches exactly `users`: the new
    /// ones are due now, the others leave the queue.
    pub async fn offer(&self, plugin: &str, users: &[String]) -> Result<(), StoreError> {
        let action = format!("list the scheduled users of {plugin}");
        let error = self.error(&action);
        let client = self.client(&action).await?;
        let insert = client
            .prepare_cached(
                "INSERT INTO healthpull_schedule (plugin, user_name, due_at)
                 SELECT $1, u, clock_timestamp() FROM unnest($2::text[]) AS u
                 ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(&error)?;
        client
            .execute(&insert, &[&plugin, &users])
            .await
            .map_err(&error)?;
        let delete = client
            .prepare_cached(
                "DELETE FROM healthpull_schedule
                 WHERE plugin = $1 AND NOT (user_name = ANY($2::text[]))",
            )
            .await
            .map_err(&error)?;
        client
            .execute(&delete, &[&plugin, &users])
            .await
            .map_err(&error)?;
        Ok(())
    }

    /// Claims up to `limit` due rows whose lease is free or ran out, for `lease`.
    pub async fn claim(&self, limit: usize, lease: Duration) -> Result<Vec<Claim>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let error = self.error("claim due users");
        let client = self.client("claim due users").await?;
        let claim = client
            .prepare_cached(
                "UPDATE healthpull_schedule AS s
                 SET claimed_by = $1,
                     lease_until = clock_timestamp() + $2::float8 * interval '1 millisecond'
                 FROM (SELECT plugin, user_name FROM healthpull_schedule
                       WHERE due_at <= clock_timestamp()
                         AND (lease_until IS NULL OR lease_until < clock_timestamp())
                       ORDER BY due_at
                       LIMIT $3
                       FOR UPDATE SKIP LOCKED) AS due
                 WHERE s.plugin = due.plugin AND s.user_name = due.user_name
                 RETURNING s.plugin, s.user_name",
            )
            .await
            .map_err(&error)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(&claim, &[&self.owner, &millis(lease), &limit])
            .await
            .map_err(&error)?;
        Ok(rows
            .into_iter()
            .map(|row| Claim {
                plugin: row.get(0),
                user: row.get(1),
            })
            .collect())
    }

    /// Renews this instance's lease on `claim` for `lease`; `false` when the claim was
    /// lost (the lease ran out and another instance claimed the row, or it left the queue).
    pub async fn renew(&self, claim: &Claim, lease: Duration) -> Result<bool, StoreError> {
        let error = self.error("renew a lease");
        let client = self.client("renew a lease").await?;
        let renew = client
            .prepare_cached(
                "UPDATE healthpull_schedule
                 SET lease_until = clock_timestamp() + $4::float8 * interval '1 millisecond'
                 WHERE plugin = $1 AND user_name = $2 AND claimed_by = $3",
            )
            .await
            .map_err(&error)?;
        let renewed = client
            .execute(
                &renew,
                &[&claim.plugin, &claim.user, &self.owner, &millis(lease)],
            )
            .await
            .map_err(&error)?;
        Ok(renewed == 1)
    }

    /// Frees `claim`, due again `next` from now; gives that due time (epoch seconds),
    /// `None` when the claim was lost meanwhile.
    pub async fn finish(&self, claim: &Claim, next: Duration) -> Result<Option<f64>, StoreError> {
        let error = self.error("finish a scheduled run");
        let client = self.client("finish a scheduled run").await?;
        let finish = client
            .prepare_cached(
                "UPDATE healthpull_schedule
                 SET claimed_by = NULL, lease_until = NULL,
                     due_at = clock_timestamp() + $4::float8 * interval '1 millisecond'
                 WHERE plugin = $1 AND user_name = $2 AND claimed_by = $3
                 RETURNING extract(epoch FROM due_at)::float8",
            )
            .await
            .map_err(&error)?;
        let row = client
            .query_opt(
                &finish,
                &[&claim.plugin, &claim.user, &self.owner, &millis(next)],
            )
            .await
            .map_err(&error)?;
        Ok(row.map(|row| row.get(0)))
    }

    /// Every row's due time, for the status.
    pub async fn due_times(&self) -> Result<Vec<DueTime>, StoreError> {
        let error = self.error("read the schedule");
        let client = self.client("read the schedule").await?;
        let select = client
            .prepare_cached(
                "SELECT plugin, user_name, extract(epoch FROM due_at)::float8
                 FROM healthpull_schedule",
            )
            .await
            .map_err(&error)?;
        let rows = client.query(&select, &[]).await.map_err(&error)?;
        Ok(rows
            .into_iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect())
    }
}
