//! The embedded store: Igor's tree in one SQLite file, so healthpull works with no
//! other server while staying durable (every write is one transaction in WAL mode),
//! safe when `serve` and a cron `fetch` share the file (busy timeout, `BEGIN
//! IMMEDIATE` for writes) and private (file, `-wal` and `-shm` are mode 0600;
//! `secure_delete` zeroes removed rows; [`Store::save`] checkpoints and truncates the
//! write-ahead log, which callers do after every token write).
//!
//! Layout: one row per element. Objects are stored as container rows (no value) with
//! one row per key below them; every other JSON value (string, number, boolean, null,
//! list) is a leaf row holding its JSON text, so numbers stay numbers. Rows keep the
//! order of their siblings, so reading a parent reassembles the children in the order
//! they were written, as Igor appends new children at the end.
//!
//! Row paths use the store's path steps; object keys that are not plain element names
//! (and can therefore never be addressed by a path) are stored as `~` followed by
//! their percent-encoded text, which cannot collide with a plain name.

use std::collections::HashMap;
use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::{Map, Value};

use super::{Store, StoreError, StorePath, is_element_name};

/// How long a write waits for another connection (or process) to finish its transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The schema version written to `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS nodes (
    path   TEXT PRIMARY KEY NOT NULL,
    parent TEXT NOT NULL,
    name   TEXT NOT NULL,
    ord    INTEGER NOT NULL,
    value  TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nodes_by_parent ON nodes (parent, ord);
";

/// The archive's tables (`store::archive`) in the same file.
const ARCHIVE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS archive_entries (
    plugin   TEXT NOT NULL,
    user     TEXT NOT NULL,
    output   TEXT NOT NULL,
    method   TEXT NOT NULL,
    identity TEXT NOT NULL,
    day      TEXT,
    at       TEXT,
    seq      INTEGER NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (plugin, user, output, method, identity)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS archive_entries_by_day ON archive_entries (plugin, user, output, day);
CREATE TABLE IF NOT EXISTS archive_coverage (
    plugin     TEXT NOT NULL,
    user       TEXT NOT NULL,
    method     TEXT NOT NULL,
    start      TEXT NOT NULL,
    end        TEXT NOT NULL,
    fetched_at TEXT NOT NULL,
    PRIMARY KEY (plugin, user, method, start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS archive_status (
    plugin TEXT NOT NULL,
    user   TEXT NOT NULL,
    method TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (plugin, user, method)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS budget_calls (
    key TEXT NOT NULL,
    at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS budget_calls_by_key ON budget_calls (key, at);
";

/// The embedded [`Store`]: Igor's tree in a SQLite database file.
///
/// Cloning is cheap and clones share one connection, which one thread of its own uses,
/// one operation at a time; several processes may open the same file.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
    /// The archive's window commits wait for the disk only at the next fully synced
    /// commit to the file ([`SqliteStore::tree_syncs_commits`]).
    pub(crate) lazy_commits: bool,
}

/// An operation for the store's thread.
type Job = Box<dyn FnOnce(&mut Connection, &Path) + Send>;

struct Inner {
    file: PathBuf,
    /// Operations for the store's thread; closed when the store is dropped.
    jobs: Option<mpsc::Sender<Job>>,
    /// The store's thread, which owns the connection.
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Inner {
    /// Closes the queue and waits for the thread to finish what was queued, so the
    /// connection is closed when the last clone goes.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SqliteStore")
            .field("file", &self.inner.file)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    ///
    /// A missing parent directory is created with mode 0700; the file is created with
    /// mode 0600 before SQLite opens it, and the file and its `-wal`/`-shm` companions
    /// are restricted to 0600 if they were readable by others.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let file = path.to_path_buf();
        let io_error = |action: &'static str| {
            let file = file.clone();
            move |source| StoreError::Io {
                file,
                action,
                source,
            }
        };
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io_error("create its directory"))?;
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io_error("create the database file"))?;
        restrict_to_owner(path).map_err(io_error("restrict the database file to its owner"))?;

        let sqlite_error = |action: &str| {
            let file = file.clone();
            let action = action.to_owned();
            move |source| StoreError::Sqlite {
                file,
                action,
                source,
            }
        };
        let mut connection = Connection::open(path).map_err(sqlite_error("open the database"))?;
        connection
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(sqlite_error("set the busy timeout"))?;
        // Switching to WAL needs a moment alone with the file and does not wait on the
        // busy handler, so two processes opening a new store at once retry here.
        let started = std::time::Instant::now();
        let mode: String = loop {
            match connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0)) {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && started.elapsed() < BUSY_TIMEOUT =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other.map_err(sqlite_error("switch to WAL mode"))?,
            }
        };
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt {
                file,
                detail: format!("cannot use WAL mode (journal mode is {mode})"),
            });
        }
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite_error("set synchronous mode"))?;
        // Deleted and overwritten rows (old tokens) are zeroed, not left in free pages.
        connection
            .pragma_update(None, "secure_delete", "ON")
            .map_err(sqlite_error("turn on secure delete"))?;
        initialise_schema(&mut connection, &file)?;

        for suffix in ["-wal", "-shm"] {
            let mut companion = path.as_os_str().to_owned();
            companion.push(suffix);
            let companion = PathBuf::from(companion);
            if companion.exists() {
                restrict_to_owner(&companion).map_err(|source| StoreError::Io {
                    file: companion.clone(),
                    action: "restrict the file to its owner",
                    source,
                })?;
            }
        }

        let (jobs, queue) = mpsc::channel::<Job>();
        let worker_file = file.clone();
        let worker = std::thread::Builder::new()
            .name("healthpull-store".to_owned())
            .spawn(move || serve_jobs(connection, &worker_file, &queue))
            .map_err(|source| StoreError::Io {
                file: file.clone(),
                action: "start the store's thread",
                source,
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                file,
                jobs: Some(jobs),
                worker: Some(worker),
            }),
            lazy_commits: false,
        })
    }

    /// This handle as the archive of a tree kept in the same file: every fetch writes
    /// the user's tree after its archive commits, fully synced, and that sync writes
    /// out the commits' log too, so the archive's commits need not wait for the disk
    /// themselves (one sync per fetch instead of two). A power loss before that sync
    /// loses the commits with their coverage, consistently: those windows are not
    /// covered and are fetched again. A long backfill writes its tree at the end; there
    /// SQLite's checkpoints (every 1,000 pages of log, synced) bound what can be lost.
    pub fn tree_syncs_commits(mut self) -> Self {
        self.lazy_commits = true;
        self
    }

    /// The database file.
    pub fn file(&self) -> &Path {
        &self.inner.file
    }

    /// Runs `work` on the connection, in the store's thread.
    pub(super) async fn run<T, F>(&self, path: &StorePath, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Path) -> Result<T, StoreError> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |connection, file| {
            // The caller may have stopped waiting; the work is done all the same.
            let _ = answer.send(work(connection, file));
        });
        let stopped = || StoreError::Stopped {
            file: self.inner.file.clone(),
            path: path.text.clone(),
        };
        self.inner
            .jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

/// The store's thread: runs each queued operation on the connection until the queue is
/// closed. An operation that panics has its transaction rolled back as it unwinds; the
/// connection stays usable and its caller gets [`StoreError::Stopped`].
fn serve_jobs(mut connection: Connection, file: &Path, queue: &mpsc::Receiver<Job>) {
    for job in queue {
        let run = std::panic::AssertUnwindSafe(|| job(&mut connection, file));
        if std::panic::catch_unwind(run).is_err() {
            tracing::error!(file = %file.display(), "An embedded store operation panicked");
        }
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn get(&self, path: &str) -> Result<Option<Value>, StoreError> {
        let path = StorePath::parse(path)?;
        let row_path = path.text.clone();
        self.run(&path, move |connection, file| {
            let sqlite_error = sqlite_error(file, "read", &row_path);
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Deferred)
                .map_err(&sqlite_error)?;
            let value = read_subtree(&transaction, file, &row_path)?;
            transaction.commit().map_err(&sqlite_error)?;
            Ok(value)
        })
        .await
    }

    /// One read transaction for all of them.
    async fn get_many(&self, paths: &[&str]) -> Result<Vec<Option<Value>>, StoreError> {
        let parsed = paths
            .iter()
            .map(|path| StorePath::parse(path))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(first) = parsed.first().cloned() else {
            return Ok(Vec::new());
        };
        let row_path = first.text.clone();
        self.run(&first, move |connection, file| {
            let sqlite_error = sqlite_error(file, "read", &row_path);
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Deferred)
                .map_err(&sqlite_error)?;
            let values = parsed
                .iter()
                .map(|path| read_subtree(&transaction, file, &path.text))
                .collect::<Result<Vec<_>, _>>()?;
            transaction.commit().map_err(&sqlite_error)?;
            Ok(values)
        })
        .await
    }

    async fn put(&self, path: &str, value: &Value) -> Result<(), StoreError> {
        self.put_many(&[(path, value)]).await
    }

    /// One write transaction for all of them: every subtree is replaced, or none is.
    async fn put_many(&self, writes: &[(&str, &Value)]) -> Result<(), StoreError> {
        let mut owned = Vec::with_capacity(writes.len());
        for (path, value) in writes {
            owned.push((StorePath::writable(path, value)?, (*value).clone()));
        }
        let Some((first, _)) = owned.first() else {
            return Ok(());
        };
        let first = first.clone();
        let row_path = first.text.clone();
        self.run(&first, move |connection, file| {
            let sqlite_error = sqlite_error(file, "write", &row_path);
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(&sqlite_error)?;
            for (target, value) in &owned {
                write_subtree(&transaction, file, target, value)?;
            }
            transaction.commit().map_err(&sqlite_error)
        })
        .await
    }

    async fn delete(&self, path: &str) -> Result<(), StoreError> {
        let path = StorePath::parse(path)?;
        let row_path = path.text.clone();
        self.run(&path, move |connection, file| {
            let sqlite_error = sqlite_error(file, "delete", &row_path);
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(&sqlite_error)?;
            delete_subtree(&transaction, &row_path).map_err(&sqlite_error)?;
            transaction.commit().map_err(&sqlite_error)
        })
        .await
    }

    async fn export_xml(&self, path: &str) -> Result<Option<String>, StoreError> {
        let parsed = StorePath::parse(path)?;
        let value = self.get(path).await?;
        Ok(value.map(|value| crate::igor::xml::to_igor_xml(parsed.last(), &value)))
    }

    /// Writes are durable already; this moves the write-ahead log into the database and
    /// truncates it, so that the `-wal` file keeps no copies of replaced tokens. Another
    /// connection reading at the same moment can keep the log from being emptied; the
    /// next save empties it then.
    async fn save(&self) -> Result<(), StoreError> {
        let path = StorePath {
            text: String::new(),
            steps: Vec::new(),
        };
        self.run(&path, |connection, file| {
            let busy: i64 = connection
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
                .map_err(sqlite_error(file, "checkpoint the write-ahead log", ""))?;
            if busy != 0 {
                tracing::debug!(file = %file.display(), "The write-ahead log is in use; it is emptied on a later save");
            }
            Ok(())
        })
        .await
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }
}

/// Sets mode 0600 on `path` unless group and others already have no access.
fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Creates the table (first use) or checks the schema version (later uses).
fn initialise_schema(connection: &mut Connection, file: &Path) -> Result<(), StoreError> {
    let sqlite_error = sqlite_error(file, "create the schema", "");
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(&sqlite_error)?;
    let version: i64 = transaction
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(&sqlite_error)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Corrupt {
            file: file.to_path_buf(),
            detail: format!(
                "schema version {version} is newer than this healthpull understands ({SCHEMA_VERSION})"
            ),
        });
    }
    // A store of this version has its table: opening it writes nothing (and syncs nothing).
    if version < SCHEMA_VERSION {
        transaction.execute_batch(SCHEMA).map_err(&sqlite_error)?;
        transaction
            .execute_batch(ARCHIVE_SCHEMA)
            .map_err(&sqlite_error)?;
        transaction
            .pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(&sqlite_error)?;
    }
    transaction.commit().map_err(&sqlite_error)
}

/// A mapper from a SQLite error to a [`StoreError`] naming the action and path.
pub(super) fn sqlite_error(
    file: &Path,
    verb: &str,
    path: &str,
) -> impl Fn(rusqlite::Error) -> StoreError {
    let file = file.to_path_buf();
    let action = if path.is_empty() {
        verb.to_owned()
    } else {
        format!("{verb} {path}")
    };
    move |source| StoreError::Sqlite {
        file: file.clone(),
        action: action.clone(),
        source,
    }
}

/// The row path component for an object key.
pub(super) fn component(key: &str) -> String {
    if is_element_name(key) {
        key.to_owned()
    } else {
        format!("~{}", utf8_percent_encode(key, NON_ALPHANUMERIC))
    }
}

/// The bounds of the row paths strictly below `path`: `[path/, path0)`, since `0`
/// follows `/` in byte order.
pub(super) fn descendant_bounds(path: &str) -> (String, String) {
    (format!("{path}/"), format!("{path}0"))
}

/// One stored row below the path being read.
struct Row {
    path: String,
    name: String,
    value: Option<String>,
}

fn read_subtree(
    transaction: &Transaction<'_>,
    file: &Path,
    path: &str,
) -> Result<Option<Value>, StoreError> {
    let sqlite_error = sqlite_error(file, "read", path);
    let top = value_at(transaction, path).map_err(&sqlite_error)?;
    let Some(top) = top else {
        return Ok(None);
    };
    if let Some(text) = top {
        return parse_leaf(file, path, &text).map(Some);
    }
    let (low, high) = descendant_bounds(path);
    let mut statement = transaction
        .prepare_cached(
            "SELECT path, parent, name, value FROM nodes
             WHERE path >= ?1 AND path < ?2 ORDER BY parent, ord",
        )
        .map_err(&sqlite_error)?;
    let rows = statement
        .query_map(params![low, high], |row| {
            Ok((
                row.get::<_, String>(1)?,
                Row {
                    path: row.get(0)?,
                    name: row.get(2)?,
                    value: row.get(3)?,
                },
            ))
        })
        .map_err(&sqlite_error)?;
    let mut children: HashMap<String, Vec<Row>> = HashMap::new();
    for row in rows {
        let (parent, row) = row.map_err(&sqlite_error)?;
        children.entry(parent).or_default().push(row);
    }
    assemble(file, path, &mut children).map(Some)
}

/// Builds the object stored at container row `path` from the rows below it.
fn assemble(
    file: &Path,
    path: &str,
    children: &mut HashMap<String, Vec<Row>>,
) -> Result<Value, StoreError> {
    let mut object = Map::new();
    for row in children.remove(path).unwrap_or_default() {
        let value = match &row.value {
            Some(text) => parse_leaf(file, &row.path, text)?,
            None => assemble(file, &row.path, children)?,
        };
        object.insert(row.name, value);
    }
    Ok(Value::Object(object))
}

fn parse_leaf(file: &Path, path: &str, text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|error| StoreError::Corrupt {
        file: file.to_path_buf(),
        detail: format!("the value stored at {path} is not JSON: {error}"),
    })
}

fn write_subtree(
    transaction: &Transaction<'_>,
    file: &Path,
    target: &StorePath,
    value: &Value,
) -> Result<(), StoreError> {
    let sqlite_error = sqlite_error(file, "write", &target.text);
    let mut parent = String::new();
    for depth in 1..target.steps.len() {
        let ancestor = target.prefix(depth);
        let existing = value_at(transaction, &ancestor).map_err(&sqlite_error)?;
        match existing {
            None => {
                let ord = next_ord(transaction, &parent).map_err(&sqlite_error)?;
                transaction
                    .prepare_cached(
                        "INSERT INTO nodes (path, parent, name, ord, value)
                         VALUES (?1, ?2, ?3, ?4, NULL)",
                    )
                    .and_then(|mut insert| {
                        insert.execute(params![ancestor, parent, target.steps[depth - 1], ord])
                    })
                    .map_err(&sqlite_error)?;
            }
            Some(None) => {}
            Some(Some(text)) => {
                let stored = parse_leaf(file, &ancestor, &text)?;
                if !is_empty_element(&stored) {
                    return Err(StoreError::NotAContainer {
                        path: target.text.clone(),
                        ancestor,
                        kind: describe(&stored),
                    });
                }
                // Igor prints null, false and "" as an empty element, which can take
                // children; do the same.
                transaction
                    .prepare_cached("UPDATE nodes SET value = NULL WHERE path = ?1")
                    .and_then(|mut update| update.execute(params![ancestor]))
                    .map_err(&sqlite_error)?;
            }
        }
        parent = ancestor;
    }

    let existing_ord: Option<i64> = transaction
        .prepare_cached("SELECT ord FROM nodes WHERE path = ?1")
        .and_then(|mut select| {
            select
                .query_row(params![target.text], |row| row.get(0))
                .optional()
        })
        .map_err(&sqlite_error)?;
    let ord = match existing_ord {
        Some(ord) => {
            delete_subtree(transaction, &target.text).map_err(&sqlite_error)?;
            ord
        }
        None => next_ord(transaction, &parent).map_err(&sqlite_error)?,
    };
    insert_tree(
        transaction,
        &target.text,
        &parent,
        target.last(),
        ord,
        value,
    )
    .map_err(&sqlite_error)
}

/// Whether Igor would print `value` as an element without text or children.
pub(super) fn is_empty_element(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::String(text) => text.is_empty(),
        _ => false,
    }
}

pub(super) fn describe(value: &Value) -> &'static str {
    match value {
        Value::Array(_) => "a list",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
        Value::Object(_) => "an object",
    }
}

/// The value of the row at `path`: `None` without a row, `Some(None)` for a container.
fn value_at(transaction: &Transaction<'_>, path: &str) -> rusqlite::Result<Option<Option<String>>> {
    transaction
        .prepare_cached("SELECT value FROM nodes WHERE path = ?1")?
        .query_row(params![path], |row| row.get(0))
        .optional()
}

fn next_ord(transaction: &Transaction<'_>, parent: &str) -> rusqlite::Result<i64> {
    transaction
        .prepare_cached("SELECT COALESCE(MAX(ord) + 1, 0) FROM nodes WHERE parent = ?1")?
        .query_row(params![parent], |row| row.get(0))
}

fn delete_subtree(transaction: &Transaction<'_>, path: &str) -> rusqlite::Result<()> {
    let (low, high) = descendant_bounds(path);
    transaction
        .prepare_cached("DELETE FROM nodes WHERE path = ?1 OR (path >= ?2 AND path < ?3)")?
        .execute(params![path, low, high])?;
    Ok(())
}

fn insert_tree(
    transaction: &Transaction<'_>,
    path: &str,
    parent: &str,
    name: &str,
    ord: i64,
    value: &Value,
) -> rusqlite::Result<()> {
    let mut statement = transaction.prepare_cached(
        "INSERT INTO nodes (path, parent, name, ord, value) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    match value {
        Value::Object(object) => {
            statement.execute(params![path, parent, name, ord, None::<String>])?;
            drop(statement);
            for (index, (key, child)) in object.iter().enumerate() {
                let child_path = format!("{path}/{}", component(key));
                let child_ord = i64::try_from(index).unwrap_or(i64::MAX);
                insert_tree(transaction, &child_path, path, key, child_ord, child)?;
            }
        }
        leaf => {
            statement.execute(params![path, parent, name, ord, leaf.to_string()])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SqliteStore::open(&dir.path().join("store.db")).expect("open");
        (dir, store)
    }

    #[tokio::test]
    async fn several_writes_are_one_transaction_all_or_nothing() {
        let (_dir, store) = open();
        store.put("a/kept", &json!(1)).await.expect("put");
        let tree = json!({"x": {"y": 2}});
        let status = json!("now");
        store
            .put_many(&[("a/tree", &tree), ("b/status/last", &status)])
            .await
            .expect("both");
        assert_eq!(
            store
                .get_many(&["a/tree", "b/status/last", "a/absent", "a/kept"])
                .await
                .expect("read"),
            [Some(tree), Some(status), None, Some(json!(1))]
        );
        // The second write cannot go below a number: the first is not written either.
        let e = store
            .put_many(&[("a/new", &json!(3)), ("a/kept/below", &json!(4))])
            .await
            .expect_err("refused");
        assert!(
            matches!(&e, StoreError::NotAContainer { ancestor, .. } if ancestor == "a/kept"),
            "{e}"
        );
        assert_eq!(store.get("a/new").await.expect("read"), None);
        assert_eq!(store.get("a/kept").await.expect("read"), Some(json!(1)));
    }

    #[tokio::test]
    async fn an_operation_that_panics_fails_alone_and_the_store_goes_on() {
        let (_dir, store) = open();
        store.put("a", &json!("before")).await.expect("put");
        let path = StorePath::parse("a").expect("path");
        let e = store
            .run(&path, |connection, _| -> Result<(), StoreError> {
                let transaction = connection.transaction().expect("begin");
                transaction
                    .execute("DELETE FROM nodes", [])
                    .expect("delete");
                panic!("an operation that fails half-way");
            })
            .await
            .expect_err("no answer");
        assert!(matches!(e, StoreError::Stopped { .. }), "{e}");
        // The half-done transaction was rolled back.
        assert_eq!(store.get("a").await.expect("read"), Some(json!("before")));
    }

    #[tokio::test]
    async fn dropping_the_last_clone_closes_the_connection() {
        let (dir, store) = open();
        store.put("a", &json!(1)).await.expect("put");
        let wal = dir.path().join("store.db-wal");
        assert!(wal.exists(), "WAL mode keeps a log while open");
        let clone = store.clone();
        drop(store);
        assert!(wal.exists(), "a clone keeps the connection open");
        drop(clone);
        // SQLite removes the log when its last connection closes.
        assert!(!wal.exists(), "closed when the last clone is dropped");
    }

    #[test]
    fn components_of_odd_keys_cannot_collide_with_plain_names() {
        assert_eq!(component("body-weight"), "body-weight");
        assert_eq!(component("a/b"), "~a%2Fb");
        assert_eq!(component("1abc"), "~1abc");
        assert_eq!(component("~1abc"), "~%7E1abc");
        assert_eq!(component(""), "~");
    }

    #[test]
    fn descendant_bounds_cover_exactly_the_subtree() {
        let (low, high) = descendant_bounds("a/b");
        let inside = |path: &str| path >= low.as_str() && path < high.as_str();
        assert!(inside("a/b/c"));
        assert!(inside("a/b/~x"));
        assert!(!inside("a/b"));
        assert!(!inside("a/b-c"));
        assert!(!inside("a/b.c/d"));
        assert!(!inside("a/bc"));
        assert!(!inside("a/b0"));
    }
}
