//! The archive: every mapped entry a user's fetches produced, each once, with the days
//! each method has covered, the last run of each method, and the rate budgets that
//! every process of an installation shares.
//!
//! An entry is keyed by plugin, user, output, method and identity (the JSON text of
//! the identity fields the provider file declares, see [`crate::history::place`]);
//! writing the same entry again replaces it, so fetching days again never doubles
//! anything. A window's entries, deletions and coverage are written in one
//! transaction: after a crash the window is either archived and covered, or neither.
//!
//! The embedded store keeps the archive in tables of its own in its SQLite file (the
//! implementation below), the PostgreSQL store in tables of its database
//! (`postgres_archive.rs`, the same semantics); with the Igor store it lives in an
//! embedded file beside it (`store.archive`), while Igor keeps receiving the user's tree.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde_json::{Map, Value};

use super::sqlite::{SqliteStore, sqlite_error};
use super::{StoreError, StorePath};
use crate::history::{Coverage, Span};

/// An entry as a fetch mapped it, placed for the archive.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    /// The output it belongs to (`body-weight`).
    pub output: String,
    /// Its identity among the output's entries; empty for an output kept whole.
    pub identity: String,
    /// Its sortable local time; `None` for an output kept whole.
    pub at: Option<String>,
    /// The user's day it belongs to; `None` for an output kept whole.
    pub day: Option<NaiveDate>,
    /// The entry itself (or the whole output).
    pub value: Value,
}

/// An entry read back from the archive.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedEntry {
    /// The method that fetched it.
    pub method: String,
    /// Its sortable local time.
    pub at: Option<String>,
    /// The user's day.
    pub day: Option<NaiveDate>,
    /// The entry.
    pub value: Value,
}

/// What one successful window (or one fetch of a method without history) archives.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The plugin.
    pub plugin: String,
    /// The user.
    pub user: String,
    /// The method.
    pub method: String,
    /// The days the answer covered; `None` for a method without history.
    pub window: Option<(NaiveDate, NaiveDate)>,
    /// When the fetch ended.
    pub fetched_at: DateTime<Utc>,
    /// The user's zone and the method's settling window (coverage is compacted with them).
    pub zone: chrono_tz::Tz,
    /// How long after a day ends its data may change.
    pub settle: Duration,
    /// Whether entries of the window missing from a non-empty answer are removed.
    pub deletions: bool,
    /// The mapped entries.
    pub entries: Vec<NewEntry>,
}

/// What a commit did to the archive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Entries that were not archived before.
    pub added: u64,
    /// Entries whose value changed.
    pub changed: u64,
    /// Entries archived already with the same value.
    pub unchanged: u64,
    /// Entries the provider no longer lists (deleted there).
    pub removed: u64,
}

impl Counts {
    /// Adds another commit's counts.
    pub fn add(&mut self, other: Counts) {
        self.added += other.added;
        self.changed += other.changed;
        self.unchanged += other.unchanged;
        self.removed += other.removed;
    }
}

/// Which archived entries of an output to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// Entries of these days (inclusive), and whole outputs.
    Days(NaiveDate, NaiveDate),
    /// The last `n` entries, and whole outputs.
    Last(u32),
    /// Every entry from this day on (all of them with `None`).
    Since(Option<NaiveDate>),
}

/// The archive's interface, whichever database holds it.
#[async_trait::async_trait]
pub trait Archive: Send + Sync + 'static {
    /// Archives one window's entries, applies deletions and adds the window to the
    /// method's coverage, in one transaction.
    async fn commit(&self, commit: Commit) -> Result<Counts, StoreError>;

    /// The days of `method` the archive covers.
    async fn coverage(
        &self,
        plugin: &str,
        user: &str,
        method: &str,
    ) -> Result<Coverage, StoreError>;

    /// Entries of `output`, sorted by time (whole outputs first).
    async fn entries(
        &self,
        plugin: &str,
        user: &str,
        output: &str,
        select: Select,
    ) -> Result<Vec<ArchivedEntry>, StoreError>;

    /// The outputs the archive holds entries of for the user.
    async fn outputs(&self, plugin: &str, user: &str) -> Result<Vec<String>, StoreError>;

    /// Replaces the status record of a method (its last run, backfill progress).
    async fn put_status(
        &self,
        plugin: &str,
        user: &str,
        method: &str,
        status: &Value,
    ) -> Result<(), StoreError>;

    /// The status records of the user's methods, by method name.
    async fn statuses(&self, plugin: &str, user: &str) -> Result<Vec<(String, Value)>, StoreError>;

    /// Sets fields of the status records of several methods (a run's end): each
    /// method's stored record (an empty one if it has none) gets the given fields,
    /// replacing those of the same name, and the others stay. The embedded store does
    /// it in one transaction; this default reads the records and writes each.
    async fn update_statuses(
        &self,
        plugin: &str,
        user: &str,
        updates: Vec<(String, Map<String, Value>)>,
    ) -> Result<(), StoreError> {
        let old = self.statuses(plugin, user).await?;
        for (method, fields) in updates {
            let stored = old
                .iter()
                .find(|(m, _)| *m == method)
                .map(|(_, v)| v.clone());
            let record = with_fields(stored, fields);
            self.put_status(plugin, user, &method, &record).await?;
        }
        Ok(())
    }

    /// Takes one call from the budget `key` (at most `limit` calls in any `per_seconds`);
    /// `Ok(Err(at))` when it is spent until the epoch second `at`. Every process sharing
    /// the archive shares the budget.
    async fn take_call(
        &self,
        key: &str,
        limit: u32,
        per_seconds: f64,
        now: f64,
    ) -> Result<Result<(), f64>, StoreError>;

    /// Calls left in the budget `key` now.
    async fn calls_left(
        &self,
        key: &str,
        limit: u32,
        per_seconds: f64,
        now: f64,
    ) -> Result<u32, StoreError>;

    /// When the budget `key` allows a call again, `None` if it does now.
    async fn next_call_at(
        &self,
        key: &str,
        limit: u32,
        per_seconds: f64,
        now: f64,
    ) -> Result<Option<f64>, StoreError>;

    /// Removes everything archived for the user.
    async fn forget(&self, plugin: &str, user: &str) -> Result<(), StoreError>;
}

/// A status record with `fields` set: the stored record (an empty one without it, or
/// if it is not an object) with each field replaced or added.
pub(super) fn with_fields(stored: Option<Value>, fields: Map<String, Value>) -> Value {
    let mut record = match stored {
        Some(Value::Object(record)) => record,
        _ => Map::new(),
    };
    for (key, value) in fields {
        record.insert(key, value);
    }
    Value::Object(record)
}

fn label() -> StorePath {
    StorePath {
        text: "archive".to_owned(),
        steps: vec!["archive".to_owned()],
    }
}

/// A day as the archive stores it (`YYYY-MM-DD`, which sorts as text).
pub(super) fn day_text(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// A stored day back (`None` for a whole output's).
pub(super) fn parse_day(text: Option<String>) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text.as_deref()?, "%Y-%m-%d").ok()
}

fn corrupt(file: &std::path::Path, detail: String) -> StoreError {
    StoreError::Corrupt {
        file: file.to_path_buf(),
        detail,
    }
}

/// A stored coverage span back: its first and last day and the RFC 3339 instant its
/// fetch ended.
pub(super) fn parse_span(start: String, end: String, fetched_at: &str) -> Option<Span> {
    Some(Span {
        start: parse_day(Some(start))?,
        end: parse_day(Some(end))?,
        fetched_at: DateTime::parse_from_rfc3339(fetched_at)
            .ok()?
            .with_timezone(&Utc),
    })
}

/// When a budget of `limit` calls per `per_seconds` allows a call again, given the calls
/// still in its window, newest first; `None` if it does now. With `limit` calls in the
/// window, one frees when the oldest that keeps the count at the limit leaves it.
pub(super) fn next_free(calls_newest_first: &[f64], limit: u32, per_seconds: f64) -> Option<f64> {
    calls_newest_first
        .get(
            usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .saturating_sub(1),
        )
        .filter(|_| calls_newest_first.len() >= limit as usize)
        .map(|at| at + per_seconds)
}

/// The coverage of a method after a window: the stored spans with the window added,
/// compacted with the user's zone and the method's settling window.
pub(super) fn covered_after(
    stored: Vec<Span>,
    commit: &Commit,
    window: (NaiveDate, NaiveDate),
) -> Coverage {
    let mut coverage = Coverage::from_spans(stored);
    coverage.add(Span {
        start: window.0,
        end: window.1,
        fetched_at: commit.fetched_at,
    });
    coverage.compact(commit.zone, commit.settle);
    coverage
}

fn read_spans(
    transaction: &rusqlite::Transaction<'_>,
    file: &std::path::Path,
    key: (&str, &str, &str),
) -> Result<Vec<Span>, StoreError> {
    let error = sqlite_error(file, "read coverage", "");
    let mut statement = transaction
        .prepare_cached(
            "SELECT start, end, fetched_at FROM archive_coverage
             WHERE plugin = ?1 AND user = ?2 AND method = ?3 ORDER BY start",
        )
        .map_err(&error)?;
    let rows = statement
        .query_map(params![key.0, key.1, key.2], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })
        .map_err(&error)?;
    let mut spans = Vec::new();
    for row in rows {
        let (start, end, fetched_at) = row.map_err(&error)?;
        let span = parse_span(start, end, &fetched_at).ok_or_else(|| {
            corrupt(
                file,
                format!("unreadable coverage of {}/{}/{}", key.0, key.1, key.2),
            )
        })?;
        spans.push(span);
    }
    Ok(spans)
}

fn write_spans(
    transaction: &rusqlite::Transaction<'_>,
    file: &std::path::Path,
    key: (&str, &str, &str),
    coverage: &Coverage,
) -> Result<(), StoreError> {
    let error = sqlite_error(file, "write coverage", "");
    transaction
        .execute(
            "DELETE FROM archive_coverage WHERE plugin = ?1 AND user = ?2 AND method = ?3",
            params![key.0, key.1, key.2],
        )
        .map_err(&error)?;
    let mut insert = transaction
        .prepare_cached(
            "INSERT INTO archive_coverage (plugin, user, method, start, end, fetched_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(&error)?;
    for span in coverage.spans() {
        insert
            .execute(params![
                key.0,
                key.1,
                key.2,
                day_text(span.start),
                day_text(span.end),
                span.fetched_at.to_rfc3339(),
            ])
            .map_err(&error)?;
    }
    Ok(())
}

/// An entry as the answer left it: its key within the method and the row it writes.
pub(super) type EntryKey = (String, String);

/// A row to upsert.
pub(super) struct EntryRow {
    pub(super) key: EntryKey,
    pub(super) day: Option<String>,
    pub(super) at: Option<String>,
    pub(super) seq: i64,
    pub(super) value: String,
}

/// What a window's entries do to the archive: the counts, the rows to write (one per
/// key) and the identities the answer listed per output.
pub(super) struct Plan {
    pub(super) counts: Counts,
    pub(super) rows: Vec<EntryRow>,
    pub(super) seen: Vec<(String, HashSet<String>)>,
}

/// Decides the writes of `commit` against the `stored` values of its keys, entry by
/// entry in answer order, as the embedded archive writes them one after the other: an
/// entry whose text equals the current one (stored, or written earlier in the same
/// answer) is unchanged and leaves the row as it is; any other replaces the row.
pub(super) fn plan(commit: &Commit, mut stored: HashMap<EntryKey, String>) -> Result<Plan, String> {
    let mut counts = Counts::default();
    let mut rows: Vec<EntryRow> = Vec::new();
    let mut row_of: HashMap<EntryKey, usize> = HashMap::new();
    let mut seen: Vec<(String, HashSet<String>)> = Vec::new();
    for (seq, entry) in commit.entries.iter().enumerate() {
        let text = serde_json::to_string(&entry.value)
            .map_err(|e| format!("an entry cannot be written: {e}"))?;
        let key = (entry.output.clone(), entry.identity.clone());
        match stored.get(&key) {
            Some(old) if *old == text => counts.unchanged += 1,
            old => {
                if old.is_some() {
                    counts.changed += 1;
                } else {
                    counts.added += 1;
                }
                let row = EntryRow {
                    key: key.clone(),
                    day: entry.day.map(day_text),
                    at: entry.at.clone(),
                    seq: i64::try_from(seq).unwrap_or(i64::MAX),
                    value: text.clone(),
                };
                match row_of.get(&key) {
                    Some(&index) => rows[index] = row,
                    None => {
                        row_of.insert(key.clone(), rows.len());
                        rows.push(row);
                    }
                }
                stored.insert(key, text);
            }
        }
        match seen.iter_mut().find(|(output, _)| *output == entry.output) {
            Some((_, ids)) => {
                ids.insert(entry.identity.clone());
            }
            None => seen.push((
                entry.output.clone(),
                HashSet::from([entry.identity.clone()]),
            )),
        }
    }
    Ok(Plan { counts, rows, seen })
}

/// Upserts the entries and counts what changed ([`plan`] against the stored values);
/// returns the identities seen per output.
fn write_entries(
    transaction: &rusqlite::Transaction<'_>,
    file: &std::path::Path,
    commit: &Commit,
    counts: &mut Counts,
) -> Result<Vec<(String, HashSet<String>)>, StoreError> {
    let error = sqlite_error(file, "write entries", "");
    let mut read = transaction
        .prepare_cached(
            "SELECT value FROM archive_entries
             WHERE plugin = ?1 AND user = ?2 AND output = ?3 AND method = ?4 AND identity = ?5",
        )
        .map_err(&error)?;
    let mut stored: HashMap<EntryKey, String> = HashMap::new();
    for entry in &commit.entries {
        let key = (entry.output.clone(), entry.identity.clone());
        if stored.contains_key(&key) {
            continue;
        }
        let old: Option<String> = read
            .query_row(
                params![
                    commit.plugin,
                    commit.user,
                    entry.output,
                    commit.method,
                    entry.identity
                ],
                |row| row.get(0),
            )
            .optional()
            .map_err(&error)?;
        if let Some(old) = old {
            stored.insert(key, old);
        }
    }
    let planned = plan(commit, stored).map_err(|detail| corrupt(file, detail))?;
    let mut upsert = transaction
        .prepare_cached(
            "INSERT INTO archive_entries (plugin, user, output, method, identity, day, at, seq, value)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (plugin, user, output, method, identity)
             DO UPDATE SET day = excluded.day, at = excluded.at, seq = excluded.seq,
                           value = excluded.value",
        )
        .map_err(&error)?;
    for row in &planned.rows {
        upsert
            .execute(params![
                commit.plugin,
                commit.user,
                row.key.0,
                commit.method,
                row.key.1,
                row.day,
                row.at,
                row.seq,
                row.value,
            ])
            .map_err(&error)?;
    }
    counts.add(planned.counts);
    Ok(planned.seen)
}

/// Removes the window's entries of each output that the answer listed entries of, but
/// not these: the provider deleted them.
fn apply_deletions(
    transaction: &rusqlite::Transaction<'_>,
    file: &std::path::Path,
    commit: &Commit,
    window: (NaiveDate, NaiveDate),
    seen: &[(String, HashSet<String>)],
) -> Result<u64, StoreError> {
    let error = sqlite_error(file, "apply deletions", "");
    let mut list = transaction
        .prepare_cached(
            "SELECT identity FROM archive_entries
             WHERE plugin = ?1 AND user = ?2 AND output = ?3 AND method = ?4
               AND day >= ?5 AND day <= ?6",
        )
        .map_err(&error)?;
    let mut delete = transaction
        .prepare_cached(
            "DELETE FROM archive_entries
             WHERE plugin = ?1 AND user = ?2 AND output = ?3 AND method = ?4 AND identity = ?5",
        )
        .map_err(&error)?;
    let mut removed = 0;
    for (output, ids) in seen {
        let stored: Vec<String> = list
            .query_map(
                params![
                    commit.plugin,
                    commit.user,
                    output,
                    commit.method,
                    day_text(window.0),
                    day_text(window.1)
                ],
                |row| row.get(0),
            )
            .map_err(&error)?
            .collect::<Result<_, _>>()
            .map_err(&error)?;
        for identity in stored.iter().filter(|id| !ids.contains(*id)) {
            delete
                .execute(params![
                    commit.plugin,
                    commit.user,
                    output,
                    commit.method,
                    identity
                ])
                .map_err(&error)?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn commit_in(
    connection: &mut rusqlite::Connection,
    file: &std::path::Path,
    commit: &Commit,
) -> Result<Counts, StoreError> {
    let error = sqlite_error(file, "archive", "");
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(&error)?;
    let mut counts = Counts::default();
    let seen = write_entries(&transaction, file, commit, &mut counts)?;
    if let Some(window) = commit.window {
        if commit.deletions {
            counts.removed = apply_deletions(&transaction, file, commit, window, &seen)?;
        }
        let key = (
            commit.plugin.as_str(),
            commit.user.as_str(),
            commit.method.as_str(),
        );
        let coverage = covered_after(read_spans(&transaction, file, key)?, commit, window);
        write_spans(&transaction, file, key, &coverage)?;
    }
    transaction.commit().map_err(&error)?;
    Ok(counts)
}

fn read_entries(
    connection: &rusqlite::Connection,
    file: &std::path::Path,
    key: (&str, &str, &str),
    select: Select,
) -> Result<Vec<ArchivedEntry>, StoreError> {
    let error = sqlite_error(file, "read entries", "");
    let base = "SELECT method, at, day, value, seq FROM archive_entries
                WHERE plugin = ?1 AND user = ?2 AND output = ?3";
    let (sql, first, second): (String, Option<String>, Option<String>) = match select {
        Select::Days(first, last) => (
            format!("{base} AND (day IS NULL OR (day >= ?4 AND day <= ?5)) ORDER BY at, seq"),
            Some(day_text(first)),
            Some(day_text(last)),
        ),
        Select::Since(Some(first)) => (
            format!("{base} AND (day IS NULL OR day >= ?4) ORDER BY at, seq"),
            Some(day_text(first)),
            None,
        ),
        Select::Since(None) => (format!("{base} ORDER BY at, seq"), None, None),
        Select::Last(n) => (
            format!(
                "SELECT * FROM ({base} AND day IS NULL UNION ALL
                   SELECT * FROM ({base} AND day IS NOT NULL ORDER BY at DESC, seq DESC LIMIT {n}))
                 ORDER BY at, seq"
            ),
            None,
            None,
        ),
    };
    let mut statement = connection.prepare_cached(&sql).map_err(&error)?;
    let map = |row: &rusqlite::Row<'_>| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, Option<String>>(1)?,
            row.get::<_, Option<String>>(2)?,
            row.get::<_, String>(3)?,
        ))
    };
    let rows: Vec<(String, Option<String>, Option<String>, String)> = match (&first, &second) {
        (Some(a), Some(b)) => statement.query_map(params![key.0, key.1, key.2, a, b], map),
        (Some(a), None) => statement.query_map(params![key.0, key.1, key.2, a], map),
        _ => statement.query_map(params![key.0, key.1, key.2], map),
    }
    .map_err(&error)?
    .collect::<Result<_, _>>()
    .map_err(&error)?;
    rows.into_iter()
        .map(|(method, at, day, value)| {
            let value = serde_json::from_str(&value)
                .map_err(|e| corrupt(file, format!("an archived entry is not JSON: {e}")))?;
            Ok(ArchivedEntry {
                method,
                at,
                day: parse_day(day),
                value,
            })
        })
        .collect()
}

/// Runs `work` with the connection's commits not waiting for the disk
/// (`synchronous = NORMAL`), then restores `FULL`. In WAL mode such a commit is still
/// atomic and survives the process ending; only a power loss or an operating system
/// crash before the next `FULL` commit (whose sync writes out every earlier commit's
/// log too) can lose it. The archive writes this way what a fetch may lose without
/// harm and what the fetch's next write makes durable anyway: a rate budget's call
/// (the archive's commit follows it) and the runs' status records (in the embedded
/// store the user's tree follows them; beside Igor, the next run's archive commit).
fn lazily_synced<T>(
    connection: &mut rusqlite::Connection,
    file: &std::path::Path,
    work: impl FnOnce(&mut rusqlite::Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let error = sqlite_error(file, "set synchronous mode", "");
    connection
        .pragma_update(None, "synchronous", "NORMAL")
        .map_err(&error)?;
    let answer = work(connection);
    connection
        .pragma_update(None, "synchronous", "FULL")
        .map_err(&error)?;
    answer
}

fn update_statuses_in(
    connection: &mut rusqlite::Connection,
    file: &std::path::Path,
    key: (&str, &str),
    updates: Vec<(String, Map<String, Value>)>,
) -> Result<(), StoreError> {
    let error = sqlite_error(file, "write a run's status", "");
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(&error)?;
    {
        let mut read = transaction
            .prepare_cached(
                "SELECT record FROM archive_status WHERE plugin = ?1 AND user = ?2 AND method = ?3",
            )
            .map_err(&error)?;
        let mut upsert = transaction
            .prepare_cached(
                "INSERT INTO archive_status (plugin, user, method, record) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (plugin, user, method) DO UPDATE SET record = excluded.record",
            )
            .map_err(&error)?;
        for (method, fields) in updates {
            let stored: Option<String> = read
                .query_row(params![key.0, key.1, method], |row| row.get(0))
                .optional()
                .map_err(&error)?;
            let stored = stored
                .map(|text| {
                    serde_json::from_str(&text)
                        .map_err(|e| corrupt(file, format!("a run status is not JSON: {e}")))
                })
                .transpose()?;
            let record = with_fields(stored, fields).to_string();
            upsert
                .execute(params![key.0, key.1, method, record])
                .map_err(&error)?;
        }
    }
    transaction.commit().map_err(&error)
}

fn take_call_in(
    connection: &mut rusqlite::Connection,
    file: &std::path::Path,
    key: &str,
    limit: u32,
    per_seconds: f64,
    now: f64,
) -> Result<Result<(), f64>, StoreError> {
    let error = sqlite_error(file, "count a call", "");
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(&error)?;
    transaction
        .execute(
            "DELETE FROM budget_calls WHERE key = ?1 AND at <= ?2",
            params![key, now - per_seconds],
        )
        .map_err(&error)?;
    let (used, oldest): (u32, Option<f64>) = transaction
        .query_row(
            "SELECT count(*), min(at) FROM budget_calls WHERE key = ?1",
            params![key],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(&error)?;
    let answer = if used >= limit {
        Err(oldest.unwrap_or(now) + per_seconds)
    } else {
        transaction
            .execute(
                "INSERT INTO budget_calls (key, at) VALUES (?1, ?2)",
                params![key, now],
            )
            .map_err(&error)?;
        Ok(())
    };
    transaction.commit().map_err(&error)?;
    Ok(answer)
}

#[async_trait::async_trait]
impl Archive for SqliteStore {
    async fn commit(&self, commit: Commit) -> Result<Counts, StoreError> {
        let lazy = self.lazy_commits;
        self.run(&label(), move |connection, file| {
            if lazy {
                lazily_synced(connection, file, |connection| {
                    commit_in(connection, file, &commit)
                })
            } else {
                commit_in(connection, file, &commit)
            }
        })
        .await
    }

    async fn coverage(
        &self,
        plugin: &str,
        user: &str,
        method: &str,
    ) -> Result<Coverage, StoreError> {
        let key = (plugin.to_owned(), user.to_owned(), method.to_owned());
        self.run(&label(), move |connection, file| {
            let error = sqlite_error(file, "read coverage", "");
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Deferred)
                .map_err(&error)?;
            let spans = read_spans(&transaction, file, (&key.0, &key.1, &key.2))?;
            transaction.commit().map_err(&error)?;
            Ok(Coverage::from_spans(spans))
        })
        .await
    }

    async fn entries(
        &self,
        plugin: &str,
        user: &str,
        output: &str,
        select: Select,
    ) -> Result<Vec<ArchivedEntry>, StoreError> {
        let key = (plugin.to_owned(), user.to_owned(), output.to_owned());
        self.run(&label(), move |connection, file| {
            read_entries(connection, file, (&key.0, &key.1, &key.2), select)
        })
        .await
    }

    async fn outputs(&self, plugin: &str, user: &str) -> Result<Vec<String>, StoreError> {
        let key = (plugin.to_owned(), user.to_owned());
        self.run(&label(), move |connection, file| {
            let error = sqlite_error(file, "read outputs", "");
            let mut statement = connection
                .prepare_cached(
                    "SELECT DISTINCT output FROM archive_entries
                     WHERE plugin = ?1 AND user = ?2 ORDER BY output",
                )
                .map_err(&error)?;
            let outputs = statement
                .query_map(params![key.0, key.1], |row| row.get(0))
                .map_err(&error)?
                .collect::<Result<_, _>>()
                .map_err(&error)?;
            Ok(outputs)
        })
        .await
    }

    async fn put_status(
        &self,
        plugin: &str,
        user: &str,
        method: &str,
        status: &Value,
    ) -> Result<(), StoreError> {
        let row = (
            plugin.to_owned(),
            user.to_owned(),
            method.to_owned(),
            status.to_string(),
        );
        self.run(&label(), move |connection, file| {
            connection
                .execute(
                    "INSERT INTO archive_status (plugin, user, method, record) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (plugin, user, method) DO UPDATE SET record = excluded.record",
                    params![row.0, row.1, row.2, row.3],
                )
                .map_err(sqlite_error(file, "write a run's status", ""))?;
            Ok(())
        })
        .await
    }

    async fn statuses(&self, plugin: &str, user: &str) -> Result<Vec<(String, Value)>, StoreError> {
        let key = (plugin.to_owned(), user.to_owned());
        self.run(&label(), move |connection, file| {
            let error = sqlite_error(file, "read run statuses", "");
            let mut statement = connection
                .prepare_cached(
                    "SELECT method, record FROM archive_status
                     WHERE plugin = ?1 AND user = ?2 ORDER BY method",
                )
                .map_err(&error)?;
            let rows: Vec<(String, String)> = statement
                .query_map(params![key.0, key.1], |row| Ok((row.get(0)?, row.get(1)?)))
                .map_err(&error)?
                .collect::<Result<_, _>>()
                .map_err(&error)?;
            rows.into_iter()
                .map(|(method, record)| {
                    let value = serde_json::from_str(&record)
                        .map_err(|e| corrupt(file, format!("a run status is not JSON: {e}")))?;
                    Ok((method, value))
                })
                .collect()
        })
        .await
    }

    /// One transaction, not waiting for the disk (see [`lazily_synced`]).
    async fn update_statuses(
        &self,
        plugin: &str,
        user: &str,
        updates: Vec<(String, Map<String, Value>)>,
    ) -> Result<(), StoreError> {
        let key = (plugin.to_owned(), user.to_owned());
        self.run(&label(), move |connection, file| {
            lazily_synced(connection, file, |connection| {
                update_statuses_in(connection, file, (&key.0, &key.1), updates)
            })
        })
        .await
    }

    async fn take_call(
        &self,
        key: &str,
        limit: u32,
        per_seconds: f64,
        now: f64,
    ) -> Result<Result<(), f64>, StoreError> {
        let key = key.to_owned();
        self.run(&label(), move |connection, file| {
            lazily_synced(connection, file, |connection| {
                take_call_in(connection, file, &key, limit, per_seconds, now)
            })
        })
        .await
    }

    async fn calls_left(
        &self,
        key: &str,
        limit: u32,
        per_seconds: f64,
        now: f64,
    ) -> Result<u32, StoreError> {
        let key = key.to_owned();
        self.run(&label(), move |connection, file| {
            let used: u32 = connection
                .query_row(
                    "SELECT count(*) FROM budget_calls WHERE key = ?1 AND at > ?2",
                    params![key, now - per_seconds],
                    |row| row.get(0),
                )
                .map_err(sqlite_error(file, "count calls", ""))?;
            Ok(limit.saturating_sub(used))
        })
        .await
    }

    async fn next_call_at(
        &self,
        key: &str,
        limit: u32,
        per_seconds: f64,
        now: f64,
    ) -> Result<Option<f64>, StoreError> {
        let key = key.to_owned();
        self.run(&label(), move |connection, file| {
            let error = sqlite_error(file, "count calls", "");
            let mut statement = connection
                .prepare_cached(
                    "SELECT at FROM budget_calls WHERE key = ?1 AND at > ?2 ORDER BY at DESC",
                )
                .map_err(&error)?;
            let calls: Vec<f64> = statement
                .query_map(params![key, now - per_seconds], |row| row.get(0))
                .map_err(&error)?
                .collect::<Result<_, _>>()
                .map_err(&error)?;
            Ok(next_free(&calls, limit, per_seconds))
        })
        .await
    }

    async fn forget(&self, plugin: &str, user: &str) -> Result<(), StoreError> {
        let key = (plugin.to_owned(), user.to_owned());
        self.run(&label(), move |connection, file| {
            let error = sqlite_error(file, "forget a user's archive", "");
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(&error)?;
            for table in ["archive_entries", "archive_coverage", "archive_status"] {
                transaction
                    .execute(
                        &format!("DELETE FROM {table} WHERE plugin = ?1 AND user = ?2"),
                        params![key.0, key.1],
                    )
                    .map_err(&error)?;
            }
            transaction.commit().map_err(&error)
        })
        .await
    }
}
