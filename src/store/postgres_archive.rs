//! The archive in PostgreSQL: the [`Archive`] of a [`PostgresStore`], in tables beside
//! the tree (schema version 2 in `postgres.rs`), with the embedded archive's semantics
//! exactly.
//!
//! Layout: `healthpull_archive_entries` (primary key plugin, user, output, method,
//! identity; the user's day, the sortable local time, the answer order `seq` and the
//! entry's JSON text), `healthpull_archive_coverage` (a method's spans of days, each
//! with the RFC 3339 instant its fetch ended), `healthpull_archive_status` (a method's
//! last run) and `healthpull_budget_calls` (one row per call of a budget, by key and
//! epoch second). Text columns that are compared or sorted use byte order
//! (`COLLATE "C"`), as SQLite does; sorting puts the NULL times of whole outputs first,
//! as SQLite does. The user column is `user_name` (`user` is a keyword in PostgreSQL).
//!
//! Concurrency: a commit is one transaction holding a transaction-level advisory lock
//! of its plugin, user and method, so commits of one method run one at a time across
//! every instance (each reads the coverage and entries the previous one committed) and
//! commits of other methods or users run side by side. A call taken from a budget holds
//! the budget key's advisory lock while it counts and records the call, so instances
//! sharing the database never exceed a budget together.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::StoreError;
use super::archive::{
    Archive, ArchivedEntry, Commit, Counts, EntryKey, EntryRow, Plan, Select, covered_after,
    day_text, next_free, parse_day, parse_span, plan,
};
use super::postgres::{PostgresStore, prepared};
use crate::history::{Coverage, Span};

type Transaction<'a> = deadpool_postgres::Transaction<'a>;

/// A mapper from driver errors to a [`StoreError`] naming the action.
type ErrorMap = Box<dyn Fn(tokio_postgres::Error) -> StoreError + Send + Sync>;

impl PostgresStore {
    fn archive_error(&self, action: &str) -> ErrorMap {
        Box::new(self.error(action))
    }

    fn archive_corrupt(&self, detail: String) -> StoreError {
        StoreError::PostgresSchema {
            target: self.target().to_owned(),
            detail,
        }
    }

    /// Holds the transaction-level advisory lock named by `name` (hashed to a lock key)
    /// until `transaction` ends.
    async fn lock_named(
        &self,
        transaction: &Transaction<'_>,
        name: &str,
        error: &ErrorMap,
    ) -> Result<(), StoreError> {
        let lock = prepared(
            transaction,
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            error,
        )
        .await?;
        transaction.execute(&lock, &[&name]).await.map_err(error)?;
        Ok(())
    }

    async fn stored_values(
        &self,
        transaction: &Transaction<'_>,
        commit: &Commit,
        error: &ErrorMap,
    ) -> Result<HashMap<EntryKey, String>, StoreError> {
        let (outputs, identities): (Vec<&str>, Vec<&str>) = commit
            .entries
            .iter()
            .map(|entry| (entry.output.as_str(), entry.identity.as_str()))
            .unzip();
        if outputs.is_empty() {
            return Ok(HashMap::new());
        }
        let select = prepared(
            transaction,
            "SELECT e.output, e.identity, e.value FROM healthpull_archive_entries e
             JOIN unnest($4::text[], $5::text[]) AS k(output, identity)
               ON e.output = k.output AND e.identity = k.identity
             WHERE e.plugin = $1 AND e.user_name = $2 AND e.method = $3",
            error,
        )
        .await?;
        let rows = transaction
            .query(
                &select,
                &[
                    &commit.plugin,
                    &commit.user,
                    &commit.method,
                    &outputs,
                    &identities,
                ],
            )
            .await
            .map_err(error)?;
        Ok(rows
            .into_iter()
            .map(|row| ((row.get(0), row.get(1)), row.get(2)))
            .collect())
    }

    async fn upsert(
        &self,
        transaction: &Transaction<'_>,
        commit: &Commit,
        rows: &[EntryRow],
        error: &ErrorMap,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let upsert = prepared(
            transaction,
            "INSERT INTO healthpull_archive_entries
                 (plugin, user_name, output, method, identity, day, at, seq, value)
             SELECT $1, $2, k.output, $3, k.identity, k.day, k.at, k.seq, k.value
             FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[],
                         $9::text[]) AS k(output, identity, day, at, seq, value)
             ON CONFLICT (plugin, user_name, output, method, identity)
             DO UPDATE SET day = excluded.day, at = excluded.at, seq = excluded.seq,
                           value = excluded.value",
            error,
        )
        .await?;
        let outputs: Vec<&str> = rows.iter().map(|row| row.key.0.as_str()).collect();
        let identities: Vec<&str> = rows.iter().map(|row| row.key.1.as_str()).collect();
        let days: Vec<Option<&str>> = rows.iter().map(|row| row.day.as_deref()).collect();
        let ats: Vec<Option<&str>> = rows.iter().map(|row| row.at.as_deref()).collect();
        let seqs: Vec<i64> = rows.iter().map(|row| row.seq).collect();
        let values: Vec<&str> = rows.iter().map(|row| row.value.as_str()).collect();
        transaction
            .execute(
                &upsert,
                &[
                    &commit.plugin,
                    &commit.user,
                    &commit.method,
                    &outputs,
                    &identities,
                    &days,
                    &ats,
                    &seqs,
                    &values,
                ],
            )
            .await
            .map_err(error)?;
        Ok(())
    }

    /// Removes the window's entries of each output the answer listed entries of, but not
    /// these: the provider deleted them.
    async fn delete_missing(
        &self,
        transaction: &Transaction<'_>,
        commit: &Commit,
        window: (chrono::NaiveDate, chrono::NaiveDate),
        seen: &[(String, HashSet<String>)],
        error: &ErrorMap,
    ) -> Result<u64, StoreError> {
        let delete = prepared(
            transaction,
            "DELETE FROM healthpull_archive_entries
             WHERE plugin = $1 AND user_name = $2 AND output = $3 AND method = $4
               AND day >= $5 AND day <= $6 AND NOT (identity = ANY($7))",
            error,
        )
        .await?;
        let (first, last) = (day_text(window.0), day_text(window.1));
        let mut removed = 0;
        for (output, ids) in seen {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            removed += transaction
                .execute(
                    &delete,
                    &[
                        &commit.plugin,
                        &commit.user,
                        output,
                        &commit.method,
                        &first,
                        &last,
                        &ids,
                    ],
                )
                .await
                .map_err(error)?;
        }
        Ok(removed)
    }

    async fn read_spans<C: deadpool_postgres::GenericClient + Sync>(
        &self,
        client: &C,
        key: (&str, &str, &str),
        error: &ErrorMap,
    ) -> Result<Vec<Span>, StoreError> {
        let select = prepared(
            client,
            "SELECT start_day, end_day, fetched_at FROM healthpull_archive_coverage
             WHERE plugin = $1 AND user_name = $2 AND method = $3 ORDER BY start_day",
            error,
        )
        .await?;
        let rows = client
            .query(&select, &[&key.0, &key.1, &key.2])
            .await
            .map_err(error)?;
        rows.into_iter()
            .map(|row| {
                let fetched_at: String = row.get(2);
                parse_span(row.get(0), row.get(1), &fetched_at).ok_or_else(|| {
                    self.archive_corrupt(format!(
                        "unreadable coverage of {}/{}/{}",
                        key.0, key.1, key.2
                    ))
                })
            })
            .collect()
    }

    async fn write_spans(
        &self,
        transaction: &Transaction<'_>,
        key: (&str, &str, &str),
        coverage: &Coverage,
        error: &ErrorMap,
    ) -> Result<(), StoreError> {
        let delete = prepared(
            transaction,
            "DELETE FROM healthpull_archive_coverage
             WHERE plugin = $1 AND user_name = $2 AND method = $3",
            error,
        )
        .await?;
        transaction
            .execute(&delete, &[&key.0, &key.1, &key.2])
            .await
            .map_err(error)?;
        let insert = prepared(
            transaction,
            "INSERT INTO healthpull_archive_coverage
                 (plugin, user_name, method, start_day, end_day, fetched_at)
             SELECT $1, $2, $3, s.start_day, s.end_day, s.fetched_at
             FROM unnest($4::text[], $5::text[], $6::text[]) AS s(start_day, end_day, fetched_at)",
            error,
        )
        .await?;
        let spans = coverage.spans();
        let starts: Vec<String> = spans.iter().map(|span| day_text(span.start)).collect();
        let ends: Vec<String> = spans.iter().map(|span| day_text(span.end)).collect();
        let fetched: Vec<String> = spans
            .iter()
            .map(|span| span.fetched_at.to_rfc3339())
            .collect();
        transaction
            .execute(&insert, &[&key.0, &key.1, &key.2, &starts, &ends, &fetched])
            .await
            .map_err(error)?;
        Ok(())
    }

    async fn commit_window(
        &self,
        transaction: &Transaction<'_>,
        commit: &Commit,
        error: &ErrorMap,
    ) -> Result<Counts, StoreError> {
        let key = (
            commit.plugin.as_str(),
            commit.user.as_str(),
            commit.method.as_str(),
        );
        let lock = format!(
            "healthpull archive\u{1f}{}\u{1f}{}\u{1f}{}",
            key.0, key.1, key.2
        );
        self.lock_named(transaction, &lock, error).await?;
        let stored = self.stored_values(transaction, commit, error).await?;
        let Plan {
            mut counts,
            rows,
            seen,
        } = plan(commit, stored).map_err(|detail| self.archive_corrupt(detail))?;
        self.upsert(transaction, commit, &rows, error).await?;
        if let Some(window) = commit.window {
            if commit.deletions {
                counts.removed = self
                    .delete_missing(transaction, commit, window, &seen, error)
                    .await?;
            }
            let stored = self.read_spans(transaction, key, error).await?;
            let coverage = covered_after(stored, commit, window);
            self.write_spans(transaction, key, &coverage, error).await?;
        }
        Ok(counts)
    }

    /// The calls of budget `key` still in the window at `now`, newest first.
    async fn calls_in_window<C: deadpool_postgres::GenericClient + Sync>(
        &self,
        client: &C,
        key: &str,
        since: f64,
        error: &ErrorMap,
    ) -> Result<Vec<f64>, StoreError> {
        let select = prepared(
            client,
            "SELECT at FROM healthpull_budget_calls WHERE key = $1 AND at > $2 ORDER BY at DESC",
            error,
        )
        .await?;
        Ok(client
            .query(&select, &[&key, &since])
            .await
            .map_err(error)?
            .into_iter()
            .map(|row| row.get(0))
            .collect())
    }
}

/// The `ORDER BY` of entries read back: by time, whole outputs (no time) first, ties in
/// answer order; SQLite sorts NULL first, PostgreSQL must be told.
const ENTRY_ORDER: &str = "ORDER BY at ASC NULLS FIRST, seq";

fn entries_sql(select: Select) -> String {
    let base = "SELECT method, at, day, value, seq FROM healthpull_archive_entries
                WHERE plugin = $1 AND user_name = $2 AND output = $3";
    match select {
        Select::Days(..) => {
            format!("{base} AND (day IS NULL OR (day >= $4 AND day <= $5)) {ENTRY_ORDER}")
        }
        Select::Since(Some(_)) => format!("{base} AND (day IS NULL OR day >= $4) {ENTRY_ORDER}"),
        Select::Since(None) => format!("{base} {ENTRY_ORDER}"),
        Select::Last(_) => format!(
            "SELECT * FROM (({base} AND day IS NULL) UNION ALL
               ({base} AND day IS NOT NULL ORDER BY at DESC NULLS LAST, seq DESC LIMIT $4))
               AS chosen {ENTRY_ORDER}"
        ),
    }
}

#[async_trait::async_trait]
impl Archive for PostgresStore {
    async fn commit(&self, commit: Commit) -> Result<Counts, StoreError> {
        let action = format!(
            "archive {}/{}/{}",
            commit.plugin, commit.user, commit.method
        );
        let error = self.archive_error(&action);
        let mut client = self.client(&action).await?;
        let transaction = client.transaction().await.map_err(&error)?;
        let counts = self.commit_window(&transaction, &commit, &error).await?;
        transaction.commit().await.map_err(&error)?;
        Ok(counts)
    }

    async fn coverage(
        &self,
        plugin: &str,
        user: &str,
        method: &str,
    ) -> Result<Coverage, StoreError> {
        let action = "read coverage";
        let error = self.archive_error(action);
        let client = self.client(action).await?;
        let spans = self
            .read_spans(&client, (plugin, user, method), &error)
            .await?;
        Ok(Coverage::from_spans(spans))
    }

    async fn entries(
        &self,
        plugin: &str,
        user: &str,
        output: &str,
        select: Select,
    ) -> Result<Vec<ArchivedEntry>, StoreError> {
        let action = "read entries";
        let error = self.archive_error(action);
        let client = self.client(action).await?;
        let statement = prepared(&client, &entries_sql(select), &error).await?;
        let rows = match select {
            Select::Days(first, last) => {
                let (first, last) = (day_text(first), day_text(last));
                client
                    .query(&statement, &[&plugin, &user, &output, &first, &last])
                    .await
            }
            Select::Since(Some(first)) => {
                let first = day_text(first);
                client
                    .query(&statement, &[&plugin, &user, &output, &first])
                    .await
            }
            Select::Since(None) => client.query(&statement, &[&plugin, &user, &output]).await,
            Select::Last(n) => {
                let n = i64::from(n);
                client
                    .query(&statement, &[&plugin, &user, &output, &n])
                    .await
            }
        }
        .map_err(&error)?;
        rows.into_iter()
            .map(|row| {
                let value: String = row.get(3);
                let value = serde_json::from_str(&value).map_err(|e| {
                    self.archive_corrupt(format!("an archived entry is not JSON: {e}"))
                })?;
                Ok(ArchivedEntry {
                    method: row.get(0),
                    at: row.get(1),
                    day: parse_day(row.get(2)),
                    value,
                })
            })
            .collect()
    }

    async fn outputs(&self, plugin: &str, user: &str) -> Result<Vec<String>, StoreError> {
        let action = "read outputs";
        let error = self.archive_error(action);
        let client = self.client(action).await?;
        let select = prepared(
            &client,
            "SELECT DISTINCT output FROM healthpull_archive_entries
             WHERE plugin = $1 AND user_name = $2 ORDER BY output",
            &error,
        )
        .await?;
        Ok(client
            .query(&select, &[&plugin, &user])
            .await
            .map_err(&error)?
            .into_iter()
            .map(|row| row.get(0))
            .collect())
    }

    async fn put_status(
        &self,
        plugin: &str,
        user: &str,
        method: &str,
        status: &Value,
    ) -> Result<(), StoreError> {
        let action = "write a run's status";
        let error = self.archive_error(action);
        let client = self.client(action).await?;
        let upsert = prepared(
            &client,
            "INSERT INTO healthpull_archive_status (plugin, user_name, method, record)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (plugin, user_name, method) DO UPDATE SET record = excluded.record",
            &error,
        )
        .await?;
        let record = status.to_string();
        client
            .execute(&upsert, &[&plugin, &user, &method, &record])
            .await
            .map_err(&error)?;
        Ok(())
    }

    async fn statuses(&self, plugin: &str, user: &str) -> Result<Vec<(String, Value)>, StoreError> {
        let action = "read run statuses";
        let error = self.archive_error(action);
        let client = self.client(action).await?;
        let select = prepared(
            &client,
            "SELECT method, record FROM healthpull_archive_status
             WHERE plugin = $1 AND user_name = $2 ORDER BY method",
            &error,
        )
        .await?;
        let rows = client
            .query(&select, &[&plugin, &user])
            .await
            .map_err(&error)?;
        rows.into_iter()
            .map(|row| {
                let record: String = row.get(1);
                let value = serde_json::from_str(&record)
                    .map_err(|e| self.archive_corrupt(format!("a run status is not JSON: {e}")))?;
                Ok((row.get(0), value))
            })
            .collect()
    }

    async fn take_call(
        &self,
        key: &str,
        limit: u32,
        per_seconds: f64,
        now: f64,
    ) -> Result<Result<(), f64>, StoreError> {
        let action = "count a call";
        let error = self.archive_error(action);
        let mut client = self.client(action).await?;
        let transaction = client.transaction().await.map_err(&error)?;
        self.lock_named(
            &transaction,
            &format!("healthpull budget\u{1f}{key}"),
            &error,
        )
        .await?;
        let since = now - per_seconds;
        let expire = prepared(
            &transaction,
            "DELETE FROM healthpull_budget_calls WHERE key = $1 AND at <= $2",
            &error,
        )
        .await?;
        transaction
            .execute(&expire, &[&key, &since])
            .await
            .map_err(&error)?;
        let count = prepared(
            &transaction,
            "SELECT count(*), min(at) FROM healthpull_budget_calls WHERE key = $1",
            &error,
        )
        .await?;
        let row = transaction
            .query_one(&count, &[&key])
            .await
            .map_err(&error)?;
        let used: i64 = row.get(0);
        let oldest: Option<f64> = row.get(1);
        let answer = if used >= i64::from(limit) {
            Err(oldest.unwrap_or(now) + per_seconds)
        } else {
            let insert = prepared(
                &transaction,
                "INSERT INTO healthpull_budget_calls (key, at) VALUES ($1, $2)",
                &error,
            )
            .await?;
            transaction
                .execute(&insert, &[&key, &now])
                .await
                .map_err(&error)?;
            Ok(())
        };
        transaction.commit().await.map_err(&error)?;
        Ok(answer)
    }

    async fn calls_left(
        &self,
        key: &str,
        limit: u32,
        per_seconds: f64,
        now: f64,
    ) -> Result<u32, StoreError> {
        let action = "count calls";
        let error = self.archive_error(action);
        let client = self.client(action).await?;
        let count = prepared(
            &client,
            "SELECT count(*) FROM healthpull_budget_calls WHERE key = $1 AND at > $2",
            &error,
        )
        .await?;
        let used: i64 = client
            .query_one(&count, &[&key, &(now - per_seconds)])
            .await
            .map_err(&error)?
            .get(0);
        Ok(u32::try_from(i64::from(limit).saturating_sub(used).max(0)).unwrap_or(0))
    }

    async fn next_call_at(
        &self,
        key: &str,
        limit: u32,
        per_seconds: f64,
        now: f64,
    ) -> Result<Option<f64>, StoreError> {
        let action = "count calls";
        let error = self.archive_error(action);
        let client = self.client(action).await?;
        let calls = self
            .calls_in_window(&client, key, now - per_seconds, &error)
            .await?;
        Ok(next_free(&calls, limit, per_seconds))
    }

    async fn forget(&self, plugin: &str, user: &str) -> Result<(), StoreError> {
        let action = "forget a user's archive";
        let error = self.archive_error(action);
        let mut client = self.client(action).await?;
        let transaction = client.transaction().await.map_err(&error)?;
        for table in [
            "healthpull_archive_entries",
            "healthpull_archive_coverage",
            "healthpull_archive_status",
        ] {
            let delete = prepared(
                &transaction,
                &format!("DELETE FROM {table} WHERE plugin = $1 AND user_name = $2"),
                &error,
            )
            .await?;
            transaction
                .execute(&delete, &[&plugin, &user])
                .await
                .map_err(&error)?;
        }
        transaction.commit().await.map_err(&error)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, NaiveDate, Utc};
    use serde_json::json;

    use super::*;
    use crate::store::archive::NewEntry;

    fn entry(identity: &str, day: &str, value: Value) -> NewEntry {
        NewEntry {
            output: "body-weight".into(),
            identity: identity.into(),
            at: Some(format!("{day}T07:00:00")),
            day: NaiveDate::parse_from_str(day, "%Y-%m-%d").ok(),
            value,
        }
    }

    fn commit(entries: Vec<NewEntry>) -> Commit {
        Commit {
            plugin: "fitbit".into(),
            user: "jack".into(),
            method: "get_bodyweight".into(),
            window: None,
            fetched_at: Utc::now(),
            zone: chrono_tz::UTC,
            settle: Duration::days(2),
            deletions: true,
            entries,
        }
    }

    #[test]
    fn an_entry_listed_twice_is_counted_and_written_as_one_after_the_other() {
        let stored = HashMap::from([(
            ("body-weight".to_owned(), "[1]".to_owned()),
            json!({"kg": 80}).to_string(),
        )]);
        let plan = plan(
            &commit(vec![
                entry("[1]", "2026-11-01", json!({"kg": 80})),
                entry("[2]", "2026-11-02", json!({"kg": 79})),
                entry("[2]", "2026-11-03", json!({"kg": 79})),
                entry("[1]", "2026-11-04", json!({"kg": 81})),
            ]),
            stored,
        )
        .expect("a plan");
        assert_eq!(
            plan.counts,
            Counts {
                added: 1,
                changed: 1,
                unchanged: 2,
                removed: 0
            }
        );
        // The unchanged repeat of [2] keeps the first row; the changed [1] is the last.
        let rows: Vec<(&str, Option<&str>, i64)> = plan
            .rows
            .iter()
            .map(|row| (row.key.1.as_str(), row.day.as_deref(), row.seq))
            .collect();
        assert_eq!(
            rows,
            [
                ("[2]", Some("2026-11-02"), 1),
                ("[1]", Some("2026-11-04"), 3)
            ]
        );
        assert_eq!(plan.seen.len(), 1);
        assert_eq!(plan.seen[0].1.len(), 2);
    }
}
