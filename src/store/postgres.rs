//! The PostgreSQL store: Igor's tree in a PostgreSQL database, so several healthpull
//! instances (a `serve` and cron `fetch`es, or several servers) share one store on
//! another machine, with the embedded store's semantics exactly.
//!
//! Layout: the table `healthpull_nodes` holds one row per element, as the embedded
//! store's `nodes` table does: objects are container rows (`value` NULL) with one row
//! per key below them; every other JSON value is a leaf row holding its JSON text (not
//! `jsonb`, which rewrites number text, `1e20` as `100000000000000000000`, and sorts
//! keys), so numbers come back as written. `ord` keeps sibling order. Paths are compared
//! byte by byte (`COLLATE "C"`), so a subtree is one range of the primary key. Object
//! keys that are not plain element names are stored as `~` and their percent-encoded
//! text (the same encoding as the embedded store); a row's key is decoded from its path,
//! so no stored text other than JSON (where control characters are escaped) holds a
//! key, which PostgreSQL's text type could refuse (NUL). The archive of entries,
//! coverage, run statuses and budgets has tables of its own in the same database
//! (`postgres_archive.rs`).
//!
//! Migrations: `healthpull_migrations` records each applied schema version. Every store
//! applies the missing ones before its first operation, in one transaction holding a
//! transaction-level advisory lock, so instances starting together apply each version
//! once; a database of a newer version than this healthpull knows is refused.
//!
//! Concurrency: a read is one statement (or, for [`Store::get_many`], one repeatable-read
//! transaction), so it sees one consistent state. Writes take a transaction-level
//! advisory lock, so they run one at a time across all instances, as the embedded
//! store's `BEGIN IMMEDIATE` makes them: a new sibling's place is `MAX(ord) + 1` of a
//! state no other writer changes meanwhile, and a put or delete never races a put below
//! it. A [`Store::put_many`] is one transaction: all of its writes or none.
//!
//! Connections come from a deadpool pool of `pool` connections ([`PostgresStore::pool`]),
//! plain TCP or a Unix socket without TLS. Errors name the database as
//! `user@host:port/dbname`, never with the password.

use std::collections::HashMap;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};
use tokio_postgres::config::Host;
use tokio_postgres::{IsolationLevel, NoTls};

use super::sqlite::{component, descendant_bounds, describe, is_empty_element};
use super::{Store, StoreError, StorePath};

/// How long connecting to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The advisory lock held while migrations are applied ("hpmigrat" as a number).
const MIGRATION_LOCK: i64 = 0x6870_6d69_6772_6174;

/// The advisory lock each write transaction holds ("hpwriter" as a number).
const WRITE_LOCK: i64 = 0x6870_7772_6974_6572;

/// A schema version: applied once, in order, recorded in `healthpull_migrations`.
struct Migration {
    version: i32,
    sql: &'static str,
}

/// Every schema version, oldest first. Later tables are added as further versions.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: r#"
CREATE TABLE healthpull_nodes (
    path   text COLLATE "C" PRIMARY KEY,
    parent text COLLATE "C" NOT NULL,
    ord    bigint NOT NULL,
    value  text
);
CREATE INDEX healthpull_nodes_by_parent ON healthpull_nodes (parent, ord);
"#,
    },
    // The archive of entries, coverage, run statuses and budgets (`postgres_archive.rs`).
    Migration {
        version: 2,
        sql: r#"
CREATE TABLE healthpull_archive_entries (
    plugin    text COLLATE "C" NOT NULL,
    user_name text COLLATE "C" NOT NULL,
    output    text COLLATE "C" NOT NULL,
    method    text COLLATE "C" NOT NULL,
    identity  text COLLATE "C" NOT NULL,
    day       text COLLATE "C",
    at        text COLLATE "C",
    seq       bigint NOT NULL,
    value     text NOT NULL,
    PRIMARY KEY (plugin, user_name, output, method, identity)
);
CREATE INDEX healthpull_archive_entries_by_day
    ON healthpull_archive_entries (plugin, user_name, output, day);
CREATE TABLE healthpull_archive_coverage (
    plugin     text COLLATE "C" NOT NULL,
    user_name  text COLLATE "C" NOT NULL,
    method     text COLLATE "C" NOT NULL,
    start_day  text COLLATE "C" NOT NULL,
    end_day    text COLLATE "C" NOT NULL,
    fetched_at text NOT NULL,
    PRIMARY KEY (plugin, user_name, method, start_day)
);
CREATE TABLE healthpull_archive_status (
    plugin    text COLLATE "C" NOT NULL,
    user_name text COLLATE "C" NOT NULL,
    method    text COLLATE "C" NOT NULL,
    record    text NOT NULL,
    PRIMARY KEY (plugin, user_name, method)
);
CREATE TABLE healthpull_budget_calls (
    key text COLLATE "C" NOT NULL,
    at  double precision NOT NULL
);
CREATE INDEX healthpull_budget_calls_by_key ON healthpull_budget_calls (key, at);
"#,
    },
];

const MIGRATION_TABLE: &str = "
CREATE TABLE IF NOT EXISTS healthpull_migrations (
    version    integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// The [`Store`] backed by a PostgreSQL database.
///
/// Cloning is cheap; clones share the pool and the migration state.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// `user@host:port/dbname`, for messages.
    target: std::sync::Arc<str>,
    /// Set once the schema is at this version's level.
    migrated: std::sync::Arc<tokio::sync::OnceCell<()>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PostgresStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// A store for the database at `url` (`postgresql://user:password@host:port/db`,
    /// `postgresql:///db?host=/run/postgresql`, or `key=value` pairs) with up to
    /// `pool_size` connections. Contacts nothing: connections are made when needed, and
    /// migrations run before the first operation (or at once, see [`Self::connect`]).
    pub fn new(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|error| {
            StoreError::PostgresConfig(format!("invalid postgres url: {}", redact_url(url, error)))
        })?;
        if pool_size == 0 {
            return Err(StoreError::PostgresConfig(
                "the postgres pool needs at least one connection".to_owned(),
            ));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let target = describe_target(&config);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|error| StoreError::PostgresConfig(format!("postgres pool: {error}")))?;
        Ok(Self {
            pool,
            target: target.into(),
            migrated: Default::default(),
        })
    }

    /// [`Self::new`], then connects and applies the migrations now.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        let store = Self::new(url, pool_size)?;
        store.migrate().await?;
        Ok(store)
    }

    /// The connection pool, for tables kept beside the tree.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The database as `user@host:port/dbname`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Brings the schema to this version's level (once per store; a failure is
    /// retried by the next operation).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrated
            .get_or_try_init(|| async {
                let mut client = self.raw_client("migrate the schema").await?;
                apply_migrations(&mut client, &self.target).await
            })
            .await
            .map(|_| ())
    }

    /// A pooled connection, without the migration check.
    async fn raw_client(&self, action: &str) -> Result<Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|error| StoreError::PostgresPool {
                target: self.target.to_string(),
                action: action.to_owned(),
                message: crate::secret::redact(&error.to_string()),
            })
    }

    /// A pooled connection to a migrated database.
    pub(super) async fn client(&self, action: &str) -> Result<Object, StoreError> {
        self.migrate().await?;
        self.raw_client(action).await
    }

    /// A mapper from a driver error to a [`StoreError`] naming the action.
    pub(super) fn error(
        &self,
        action: &str,
    ) -> impl Fn(tokio_postgres::Error) -> StoreError + use<> {
        postgres_error(&self.target, action)
    }

    async fn read_one(&self, path: &StorePath) -> Result<Option<Value>, StoreError> {
        let action = format!("read {}", path.text);
        let client = self.client(&action).await?;
        read_subtree(&client, &self.target, &path.text).await
    }
}

/// The URL parse error, with the URL's password (if any) removed from its text.
fn redact_url(url: &str, error: tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    if let Ok(parsed) = url::Url::parse(url) {
        if let Some(password) = parsed.password().filter(|password| !password.is_empty()) {
            text = text.replace(password, "[redacted]");
        }
    }
    crate::secret::redact(&text)
}

/// `user@host:port/dbname` of a connection config (never its password).
fn describe_target(config: &tokio_postgres::Config) -> String {
    let user = config.get_user().unwrap_or("");
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        Some(Host::Unix(dir)) => dir.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let dbname = config.get_dbname().unwrap_or(user);
    let at = if user.is_empty() { "" } else { "@" };
    format!("{user}{at}{host}:{port}/{dbname}")
}

fn postgres_error(
    target: &str,
    action: &str,
) -> impl Fn(tokio_postgres::Error) -> StoreError + use<> {
    let target = target.to_owned();
    let action = action.to_owned();
    move |source| StoreError::Postgres {
        target: target.clone(),
        action: action.clone(),
        source,
    }
}

/// `sql` prepared once per connection (the pool's statement cache), so that running it
/// is one round trip.
pub(super) async fn prepared<C: deadpool_postgres::GenericClient + Sync>(
    client: &C,
    sql: &str,
    error: &impl Fn(tokio_postgres::Error) -> StoreError,
) -> Result<tokio_postgres::Statement, StoreError> {
    client.prepare_cached(sql).await.map_err(error)
}

/// Applies the missing migrations in one transaction under [`MIGRATION_LOCK`].
async fn apply_migrations(client: &mut Object, target: &str) -> Result<(), StoreError> {
    let error = postgres_error(target, "migrate the schema");
    let transaction = client.transaction().await.map_err(&error)?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(&error)?;
    transaction
        .batch_execute(MIGRATION_TABLE)
        .await
        .map_err(&error)?;
    let applied: i32 = transaction
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM healthpull_migrations",
            &[],
        )
        .await
        .map_err(&error)?
        .get(0);
    let known = MIGRATIONS.last().map_or(0, |migration| migration.version);
    if applied > known {
        return Err(StoreError::PostgresSchema {
            target: target.to_owned(),
            detail: format!(
                "schema version {applied} is newer than this healthpull understands ({known})"
            ),
        });
    }
    for migration in MIGRATIONS
        .iter()
        .filter(|migration| migration.version > applied)
    {
        let error = postgres_error(
            target,
            &format!("apply schema version {}", migration.version),
        );
        transaction
            .batch_execute(migration.sql)
            .await
            .map_err(&error)?;
        transaction
            .execute(
                "INSERT INTO healthpull_migrations (version) VALUES ($1)",
                &[&migration.version],
            )
            .await
            .map_err(&error)?;
    }
    transaction.commit().await.map_err(&error)
}

/// One stored row below the path being read.
struct Row {
    path: String,
    value: Option<String>,
}

/// The subtree at `path`, read with one statement.
async fn read_subtree<C: deadpool_postgres::GenericClient + Sync>(
    client: &C,
    target: &str,
    path: &str,
) -> Result<Option<Value>, StoreError> {
    let error = postgres_error(target, &format!("read {path}"));
    let (low, high) = descendant_bounds(path);
    let select = prepared(
        client,
        "SELECT path, parent, value FROM healthpull_nodes
         WHERE path = $1 OR (path >= $2 AND path < $3) ORDER BY parent, ord",
        &error,
    )
    .await?;
    let rows = client
        .query(&select, &[&path, &low, &high])
        .await
        .map_err(&error)?;
    let mut top = None;
    let mut children: HashMap<String, Vec<Row>> = HashMap::new();
    for row in rows {
        let row_path: String = row.get(0);
        let value: Option<String> = row.get(2);
        if row_path == path {
            top = Some(value);
        } else {
            children.entry(row.get(1)).or_default().push(Row {
                path: row_path,
                value,
            });
        }
    }
    match top {
        None => Ok(None),
        Some(Some(text)) => parse_leaf(target, path, &text).map(Some),
        Some(None) => assemble(target, path, &mut children).map(Some),
    }
}

/// Builds the object stored at container row `path` from the rows below it.
fn assemble(
    target: &str,
    path: &str,
    children: &mut HashMap<String, Vec<Row>>,
) -> Result<Value, StoreError> {
    let mut object = Map::new();
    for row in children.remove(path).unwrap_or_default() {
        let key = key_of(target, &row.path)?;
        let value = match &row.value {
            Some(text) => parse_leaf(target, &row.path, text)?,
            None => assemble(target, &row.path, children)?,
        };
        object.insert(key, value);
    }
    Ok(Value::Object(object))
}

/// The object key a row path ends in (the inverse of [`component`]).
fn key_of(target: &str, path: &str) -> Result<String, StoreError> {
    let last = path.rsplit('/').next().unwrap_or(path);
    let Some(encoded) = last.strip_prefix('~') else {
        return Ok(last.to_owned());
    };
    percent_decode_str(encoded)
        .decode_utf8()
        .map(|key| key.into_owned())
        .map_err(|_| StoreError::PostgresSchema {
            target: target.to_owned(),
            detail: format!("the row path {path} does not encode a key"),
        })
}

fn parse_leaf(target: &str, path: &str, text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|error| StoreError::PostgresSchema {
        target: target.to_owned(),
        detail: format!("the value stored at {path} is not JSON: {error}"),
    })
}

/// Rows to insert, column by column (one `INSERT ... SELECT FROM unnest(...)`).
#[derive(Default)]
struct NewRows {
    paths: Vec<String>,
    parents: Vec<String>,
    ords: Vec<i64>,
    values: Vec<Option<String>>,
}

impl NewRows {
    fn push(&mut self, path: String, parent: &str, ord: i64, value: Option<String>) {
        self.paths.push(path);
        self.parents.push(parent.to_owned());
        self.ords.push(ord);
        self.values.push(value);
    }

    /// Adds the rows of `value` stored at `path`.
    fn push_tree(&mut self, path: &str, parent: &str, ord: i64, value: &Value) {
        match value {
            Value::Object(object) => {
                self.push(path.to_owned(), parent, ord, None);
                for (index, (key, child)) in object.iter().enumerate() {
                    let child_path = format!("{path}/{}", component(key));
                    let child_ord = i64::try_from(index).unwrap_or(i64::MAX);
                    self.push_tree(&child_path, path, child_ord, child);
                }
            }
            leaf => self.push(path.to_owned(), parent, ord, Some(leaf.to_string())),
        }
    }
}

/// Replaces the subtree at `path` with `value`, creating missing parents, inside
/// `transaction` (which holds [`WRITE_LOCK`]).
async fn write_subtree(
    transaction: &deadpool_postgres::Transaction<'_>,
    target_db: &str,
    path: &StorePath,
    value: &Value,
) -> Result<(), StoreError> {
    let error = postgres_error(target_db, &format!("write {}", path.text));
    let prefixes: Vec<String> = (1..=path.steps.len())
        .map(|depth| path.prefix(depth))
        .collect();
    let select = prepared(
        transaction,
        "SELECT path, ord, value FROM healthpull_nodes WHERE path = ANY($1)",
        &error,
    )
    .await?;
    let existing: HashMap<String, (i64, Option<String>)> = transaction
        .query(&select, &[&prefixes])
        .await
        .map_err(&error)?
        .into_iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2))))
        .collect();

    let mut rows = NewRows::default();
    let mut parent = String::new();
    // Whether `parent` is created by this write (and so has no children yet).
    let mut parent_is_new = false;
    for ancestor in &prefixes[..prefixes.len() - 1] {
        match existing.get(ancestor) {
            None => {
                let ord = if parent_is_new {
                    0
                } else {
                    next_ord(transaction, &parent, &error).await?
                };
                rows.push(ancestor.clone(), &parent, ord, None);
                parent_is_new = true;
            }
            Some((_, None)) => {}
            Some((_, Some(text))) => {
                let stored = parse_leaf(target_db, ancestor, text)?;
                if !is_empty_element(&stored) {
                    return Err(StoreError::NotAContainer {
                        path: path.text.clone(),
                        ancestor: ancestor.clone(),
                        kind: describe(&stored),
                    });
                }
                // Igor prints null, false and "" as an empty element, which can take
                // children; do the same.
                transaction
                    .execute(
                        "UPDATE healthpull_nodes SET value = NULL WHERE path = $1",
                        &[ancestor],
                    )
                    .await
                    .map_err(&error)?;
            }
        }
        parent.clone_from(ancestor);
    }

    let ord = match existing.get(&path.text) {
        Some((ord, _)) => {
            delete_subtree(transaction, &path.text, &error).await?;
            *ord
        }
        None if parent_is_new => 0,
        None => next_ord(transaction, &parent, &error).await?,
    };
    rows.push_tree(&path.text, &parent, ord, value);
    let insert = prepared(
        transaction,
        "INSERT INTO healthpull_nodes (path, parent, ord, value)
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[])",
        &error,
    )
    .await?;
    transaction
        .execute(
            &insert,
            &[&rows.paths, &rows.parents, &rows.ords, &rows.values],
        )
        .await
        .map_err(&error)?;
    Ok(())
}

async fn next_ord(
    transaction: &deadpool_postgres::Transaction<'_>,
    parent: &str,
    error: &impl Fn(tokio_postgres::Error) -> StoreError,
) -> Result<i64, StoreError> {
    let select = prepared(
        transaction,
        "SELECT COALESCE(MAX(ord) + 1, 0) FROM healthpull_nodes WHERE parent = $1",
        error,
    )
    .await?;
    Ok(transaction
        .query_one(&select, &[&parent])
        .await
        .map_err(error)?
        .get(0))
}

async fn delete_subtree<C: deadpool_postgres::GenericClient + Sync>(
    client: &C,
    path: &str,
    error: &impl Fn(tokio_postgres::Error) -> StoreError,
) -> Result<(), StoreError> {
    let (low, high) = descendant_bounds(path);
    let delete = prepared(
        client,
        "DELETE FROM healthpull_nodes WHERE path = $1 OR (path >= $2 AND path < $3)",
        error,
    )
    .await?;
    client
        .execute(&delete, &[&path, &low, &high])
        .await
        .map_err(error)?;
    Ok(())
}

/// Takes [`WRITE_LOCK`] until `transaction` ends.
async fn lock_writes(
    transaction: &deadpool_postgres::Transaction<'_>,
    error: &impl Fn(tokio_postgres::Error) -> StoreError,
) -> Result<(), StoreError> {
    let lock = prepared(transaction, "SELECT pg_advisory_xact_lock($1)", error).await?;
    transaction
        .execute(&lock, &[&WRITE_LOCK])
        .await
        .map_err(error)?;
    Ok(())
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn get(&self, path: &str) -> Result<Option<Value>, StoreError> {
        let path = StorePath::parse(path)?;
        self.read_one(&path).await
    }

    /// One repeatable-read transaction for all of them: one consistent view.
    async fn get_many(&self, paths: &[&str]) -> Result<Vec<Option<Value>>, StoreError> {
        let parsed = paths
            .iter()
            .map(|path| StorePath::parse(path))
            .collect::<Result<Vec<_>, _>>()?;
        match parsed.as_slice() {
            [] => return Ok(Vec::new()),
            [only] => return Ok(vec![self.read_one(only).await?]),
            _ => {}
        }
        let action = format!("read {}", parsed[0].text);
        let error = self.error(&action);
        let mut client = self.client(&action).await?;
        let transaction = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(&error)?;
        let mut values = Vec::with_capacity(parsed.len());
        for path in &parsed {
            values.push(read_subtree(&transaction, &self.target, &path.text).await?);
        }
        transaction.commit().await.map_err(&error)?;
        Ok(values)
    }

    async fn put(&self, path: &str, value: &Value) -> Result<(), StoreError> {
        self.put_many(&[(path, value)]).await
    }

    /// One write transaction for all of them: every subtree is replaced, or none is.
    async fn put_many(&self, writes: &[(&str, &Value)]) -> Result<(), StoreError> {
        let mut parsed = Vec::with_capacity(writes.len());
        for (path, value) in writes {
            parsed.push((StorePath::writable(path, value)?, *value));
        }
        let Some((first, _)) = parsed.first() else {
            return Ok(());
        };
        let action = format!("write {}", first.text);
        let error = self.error(&action);
        let mut client = self.client(&action).await?;
        let transaction = client.transaction().await.map_err(&error)?;
        lock_writes(&transaction, &error).await?;
        for (path, value) in &parsed {
            write_subtree(&transaction, &self.target, path, value).await?;
        }
        transaction.commit().await.map_err(&error)
    }

    async fn delete(&self, path: &str) -> Result<(), StoreError> {
        let path = StorePath::parse(path)?;
        let action = format!("delete {}", path.text);
        let error = self.error(&action);
        let mut client = self.client(&action).await?;
        let transaction = client.transaction().await.map_err(&error)?;
        lock_writes(&transaction, &error).await?;
        delete_subtree(&transaction, &path.text, &error).await?;
        transaction.commit().await.map_err(&error)
    }

    async fn export_xml(&self, path: &str) -> Result<Option<String>, StoreError> {
        let parsed = StorePath::parse(path)?;
        let value = self.read_one(&parsed).await?;
        Ok(value.map(|value| crate::igor::xml::to_igor_xml(parsed.last(), &value)))
    }

    /// Every commit is durable already (PostgreSQL syncs its log at commit); replaced
    /// rows are removed by the server's autovacuum.
    async fn save(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_user_host_port_and_database_but_never_the_password() {
        let config: tokio_postgres::Config = "postgresql://hp:Pa55word@db.example:6543/health"
            .parse()
            .expect("url");
        assert_eq!(describe_target(&config), "hp@db.example:6543/health");
        let config: tokio_postgres::Config = "postgresql:///health?host=/run/postgresql"
            .parse()
            .expect("url");
        assert_eq!(describe_target(&config), "/run/postgresql:5432/health");
        let config: tokio_postgres::Config = "host=h user=u password=secret".parse().expect("kv");
        assert_eq!(describe_target(&config), "u@h:5432/u");
    }

    #[test]
    fn bad_urls_and_pool_sizes_are_refused_without_echoing_the_password() {
        let error = PostgresStore::new("postgresql://hp:Pa55word@db:notaport/health", 4)
            .expect_err("bad port");
        let shown = format!("{error} {error:?}");
        assert!(
            shown.starts_with("postgres store configuration: invalid postgres url"),
            "{shown}"
        );
        assert!(!shown.contains("Pa55word"), "{shown}");
        let error = PostgresStore::new("postgresql://hp@db/health", 0).expect_err("no pool");
        assert!(
            error.to_string().contains("at least one connection"),
            "{error}"
        );
    }

    #[test]
    fn row_paths_give_back_their_keys() {
        for key in ["body-weight", "a/b", "1abc", "~x", "", "with\u{0}nul", "é"] {
            let path = format!("a/b/{}", component(key));
            assert_eq!(key_of("t", &path).expect("key"), key);
        }
    }

    #[test]
    fn migrations_are_numbered_in_order() {
        let versions: Vec<i32> = MIGRATIONS
            .iter()
            .map(|migration| migration.version)
            .collect();
        let expected: Vec<i32> = (1..=versions.len() as i32).collect();
        assert_eq!(versions, expected);
    }
}
