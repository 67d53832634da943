//! A real PostgreSQL server for the tests of the PostgreSQL store: the throwaway server
//! `scripts/with-postgres.sh` starts (scripts/test.sh runs the suite beside one), named
//! by `HEALTHPULL_TEST_POSTGRES_URL`.
//!
//! Every test gets a database of its own ([`TestDatabase::create`], a random name,
//! dropped with the value), so tests stay apart and run in parallel. Without the
//! variable a test fails under CI (`CI=true`); elsewhere it is skipped with a message
//! saying how to run it.

use rand::distr::{Alphanumeric, SampleString};

/// The variable naming the test server (its `postgres` database, as a superuser).
pub const URL_VAR: &str = "HEALTHPULL_TEST_POSTGRES_URL";

/// A database of one test on the test server; dropped (with its connections) when the
/// value is dropped.
pub struct TestDatabase {
    /// The URL of the database, for [`healthpull::store::PostgresStore::new`].
    pub url: String,
    /// Its name.
    pub name: String,
    admin_url: String,
}

impl TestDatabase {
    /// A new, empty database; `None` (with a message) outside CI when there is no test
    /// server. Panics under CI without a server, and when the server refuses.
    pub async fn create(test: &str) -> Option<TestDatabase> {
        let admin_url = server_url(test)?;
        let suffix = Alphanumeric
            .sample_string(&mut rand::rng(), 12)
            .to_lowercase();
        let name = format!("hp_{suffix}");
        let admin = connect(&admin_url).await;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|error| panic!("create database {name}: {error}"));
        Some(TestDatabase {
            url: database_url(&admin_url, &name),
            name,
            admin_url,
        })
    }

    /// A direct connection to the database (to look at its tables).
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }
}

impl Drop for TestDatabase {
    /// Drops the database from a thread of its own (a runtime cannot be blocked on from
    /// inside one), ending the connections still open to it.
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                connect(&admin_url)
                    .await
                    .batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
                    .await
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("drop database {}: {error}", self.name),
            Err(_) => eprintln!("drop database {}: the thread panicked", self.name),
        }
    }
}

/// The test server's URL, or `None` after saying why the test is skipped.
fn server_url(test: &str) -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => panic!(
            "missing prerequisite: no PostgreSQL test server ({URL_VAR} is not set); \
             CI runs the suite through scripts/test.sh, which starts one"
        ),
        _ => {
            eprintln!(
                "skipped {test}: no PostgreSQL test server ({URL_VAR} is not set); \
                 run it as scripts/with-postgres.sh cargo test --test integration {test}"
            );
            None
        }
    }
}

/// The URL of database `name` on the server of `admin_url` (its path replaced).
fn database_url(admin_url: &str, name: &str) -> String {
    let mut url = url::Url::parse(admin_url)
        .unwrap_or_else(|error| panic!("{URL_VAR} is not a URL ({error})"));
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A plain connection, its driver task spawned on the current runtime.
async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("connect to the PostgreSQL test server: {error}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}
