//! Tests: several `healthpull serve` instances on one PostgreSQL store, through real
//! HTTP against the fake OAuth2 provider (`support::fake_provider`) and a real
//! PostgreSQL (`support::postgres`).
//!
//! What is covered:
//! * three instances with the schedule on and CLI syncs share 300 users whose access
//!   tokens have expired: every user is fetched, each token is refreshed once at the
//!   provider (the refresh lock holds across instances), nobody needs consent again;
//! * an instance killed (SIGKILL) in the middle of the schedule: the others take over its
//!   claimed users once their leases run out, and the archive holds every entry once;
//! * a consent started on one instance completes on another; the setup page's form token
//!   of one instance is accepted by the others; status answers alike on each; `export`
//!   never shows the stored form key.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use healthpull::igor::paths;
use healthpull::store::archive::Select;
use healthpull::store::{Archive as _, PostgresStore, Store};
use healthpull::user::UserName;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::support::env::{healthpull_bin, root};
use crate::support::fake_provider::{FakeConfig, FakeProvider, Fault};
use crate::support::postgres::TestDatabase;

/// The plugin of every test here (the Fitbit provider).
const PLUGIN: &str = "fitbitc";
/// The variables the binary reads the database URL and the client secret from.
const URL_ENV: &str = "HP_CLUSTER_DATABASE_URL";
const SECRET_ENV: &str = "HP_CLUSTER_CLIENT_SECRET";
/// The longest any one wait may take.
const WAIT: Duration = Duration::from_secs(90);
/// The weight logs' path at the fake.
const WEIGHT_PATH: &str = "/1/user/-/body/log/weight/date/";

/// One test's world: the fake, a database, a config file every instance shares.
struct Cluster {
    fake: FakeProvider,
    db: TestDatabase,
    dir: tempfile::TempDir,
    store: PostgresStore,
    /// The next process's config.
    next: std::sync::atomic::AtomicUsize,
}

/// How many processes a test runs at most (each gets a config of its own).
const PROCESSES: usize = 8;

fn config_path(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("healthpull-{n}.yaml"))
}

/// A running `healthpull serve`.
struct Instance {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
    http: reqwest::Client,
}

/// An answer: status, `Location`, body.
#[derive(Debug)]
struct Reply {
    status: u16,
    location: Option<String>,
    body: String,
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string is JSON")
}

fn user_name(user: &str) -> UserName {
    UserName::parse(user).expect("a valid user name")
}

/// The Igor user and the fake's user of number `i`.
fn users(i: usize) -> (String, String) {
    (format!("u{i:03}"), format!("F{i:03}"))
}

impl Cluster {
    /// The fake, a fresh database and the config (schedule lines in `schedule`); `None`
    /// when there is no PostgreSQL test server outside CI.
    async fn start(test: &str, schedule: &str) -> Option<Cluster> {
        let db = TestDatabase::create(test).await?;
        let fake = FakeProvider::start(FakeConfig::fitbit()).await;
        let dir = tempfile::Builder::new()
            .prefix("healthpull-cluster-")
            .tempdir()
            .expect("create a temporary directory");
        // One config per process, each with a lock directory of its own, as on machines
        // of their own: only the database is shared.
        for n in 0..PROCESSES {
            let config = format!(
                "providers_dir: {providers}\nstore: {{kind: postgres, url_env: {URL_ENV}, pool: 4}}\n\
                 lock_dir: {locks}\n{schedule}\
                 plugins:\n  {PLUGIN}:\n    provider: fitbit\n    authorize_url: {authorize}\n    token_url: {token}\n    base_url: {base}\n",
                providers = quoted(root().join("providers").to_str().expect("UTF-8 path")),
                locks = quoted(
                    dir.path()
                        .join(format!("locks-{n}"))
                        .to_str()
                        .expect("UTF-8 path")
                ),
                authorize = quoted(&fake.authorize_url()),
                token = quoted(&fake.token_url()),
                base = quoted(&fake.base_url()),
            );
            std::fs::write(config_path(dir.path(), n), config).expect("write the config");
        }
        let store = PostgresStore::connect(&db.url, 4)
            .await
            .expect("connect to the test database");
        Some(Cluster {
            fake,
            db,
            dir,
            store,
            next: Default::default(),
        })
    }

    /// Registers the app and gives `count` users a token the store thinks expired a
    /// minute ago, one stored method, and a weight log of today at the fake.
    async fn seed(&self, count: usize) {
        let config = self.fake.config();
        let app = paths::app(PLUGIN);
        let (id, secret) = (json!(config.client_id), json!(config.client_secret));
        let today = Utc::now().date_naive().to_string();
        let now = Utc::now().timestamp();
        let mut writes: Vec<(String, Value)> = vec![
            (format!("{app}/client_id"), id),
            (format!("{app}/client_secret"), secret),
        ];
        for i in 0..count {
            let (user, fake_user) = users(i);
            let name = user_name(&user);
            let grant = self.fake.grant(&fake_user);
            let token = json!({
                "access_token": grant.access_token,
                "refresh_token": grant.refresh_token,
                "expires_in": grant.expires_in,
                "expires_at": now - 60,
                "scope": grant.scope,
                "token_type": "Bearer",
                "user_id": grant.user,
                "issued_at": now - 3600,
            });
            writes.push((paths::token(PLUGIN, &name), token));
            let settings = paths::user(PLUGIN, &name);
            writes.push((format!("{settings}/methods"), json!("get_bodyweight")));
            writes.push((format!("{settings}/timezone"), json!("UTC")));
            writes.push((
                paths::status(PLUGIN, &name),
                json!({"consent_needed": false}),
            ));
            let log_id = 1_000_000 + i as i64;
            self.fake.seed_fitbit_weight(
                &fake_user,
                vec![json!({"bmi": 23.5, "date": today, "logId": log_id, "source": "Aria", "time": "07:00:00", "weight": 80.0})],
            );
        }
        let writes: Vec<(&str, &Value)> = writes.iter().map(|(p, v)| (p.as_str(), v)).collect();
        self.store.put_many(&writes).await.expect("seed the store");
    }

    /// The binary with the config of a process of its own.
    fn command(&self, args: &[&str]) -> Command {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(n < PROCESSES, "more processes than configs");
        let mut command = Command::new(healthpull_bin());
        command
            .arg("--config")
            .arg(config_path(self.dir.path(), n))
            .args(args)
            .current_dir(self.dir.path())
            .env(URL_ENV, &self.db.url)
            .env(SECRET_ENV, self.fake.config().client_secret)
            .env("NO_COLOR", "1")
            .env("HEALTHPULL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Starts `serve` on a free loopback port and waits until it listens.
    async fn serve(&self) -> Instance {
        let mut child = self
            .command(&["serve", "--listen", "127.0.0.1:0"])
            .spawn()
            .expect("start healthpull serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let followed = crate::support::serve_log::follow(stderr);
        let url = tokio::time::timeout(WAIT, followed.url)
            .await
            .expect("serve listens in time")
            .unwrap_or_else(|_| panic!("serve exited: {}", followed.log.lock().expect("log")));
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client");
        Instance {
            child,
            url,
            log: followed.log,
            http,
        }
    }

    /// Runs the binary to the end: exit code, stdout, stderr.
    async fn run(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let output = tokio::time::timeout(WAIT, self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("healthpull {args:?} did not finish in time"))
            .expect("run healthpull");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// The stored statuses of the first `count` users.
    async fn statuses(&self, count: usize) -> Vec<Value> {
        let paths: Vec<String> = (0..count)
            .map(|i| paths::status(PLUGIN, &user_name(&users(i).0)))
            .collect();
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        self.store
            .get_many(&paths)
            .await
            .expect("read the statuses")
            .into_iter()
            .map(|status| status.unwrap_or(Value::Null))
            .collect()
    }

    /// How many of the first `count` users have a stored success.
    async fn fetched(&self, count: usize) -> usize {
        self.statuses(count)
            .await
            .iter()
            .filter(|status| status.get("last_success").is_some_and(|v| !v.is_null()))
            .count()
    }

    /// Waits until the first `count` users were all fetched.
    async fn wait_fetched(&self, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let done = self.fetched(count).await;
            if done == count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{done} of {count} users fetched within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The archive every instance shares: in the database.
    fn archive(&self) -> &PostgresStore {
        &self.store
    }

    /// Every user's weight entries appear once in the archive, and the user's one log
    /// is there.
    async fn assert_archived_once(&self, count: usize) {
        let archive = self.archive();
        for i in 0..count {
            let (user, _) = users(i);
            let entries = archive
                .entries(PLUGIN, &user, "body-weight", Select::Since(None))
                .await
                .expect("read the archive");
            let ids: BTreeSet<String> = entries
                .iter()
                .map(|entry| entry.value["logId"].to_string())
                .collect();
            assert_eq!(ids.len(), entries.len(), "{user}: an entry archived twice");
            assert_eq!(
                ids,
                BTreeSet::from([(1_000_000 + i as i64).to_string()]),
                "{user}: the archive"
            );
        }
    }

    /// No user needs consent again.
    async fn assert_no_consent_needed(&self, count: usize) {
        for (i, status) in self.statuses(count).await.iter().enumerate() {
            assert_ne!(
                status.get("consent_needed"),
                Some(&json!(true)),
                "{}: consent needed: {status}",
                users(i).0
            );
        }
    }
}

impl Instance {
    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let answer = request.send().await.expect("an answer");
        let status = answer.status().as_u16();
        let location = answer
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = answer.text().await.expect("an answer body");
        Reply {
            status,
            location,
            body,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(format!("{}{path}", self.url)))
            .await
    }

    async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Reply {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.send(
            self.http
                .post(format!("{}{path}", self.url))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body),
        )
        .await
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// SIGKILL: nothing of the instance runs on.
    async fn kill(&mut self) {
        self.child.start_kill().expect("kill serve");
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
    }

    /// SIGTERM, then waits for running requests and scheduled fetches to end.
    async fn stop(mut self) -> String {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
        self.log()
    }
}

/// The one number a counting query gives.
async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .expect("read the queue")
        .get(0)
}

fn schedule(lease_seconds: u64) -> String {
    format!(
        "schedule: {{enabled: true, interval_seconds: 3600, jitter_seconds: 0, lease_seconds: {lease_seconds}, max_running: 8}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_and_a_cli_sync_refresh_each_token_once() {
    const USERS: usize = 300;
    let Some(cluster) = Cluster::start("cluster::three_instances", &schedule(30)).await else {
        return;
    };
    cluster.seed(USERS).await;
    // Slow refreshes at first, so that the CLI syncs of one user, each a process with a
    // lock directory of its own, ask for the same token at the same time.
    let token_path = cluster.fake.dialect().token_path();
    cluster
        .fake
        .inject_fault(token_path, Fault::Delay(Duration::from_millis(300)), 10);
    let synced = [
        users(0).0,
        users(0).0,
        users(0).0,
        users(150).0,
        users(150).0,
    ];
    let syncs: Vec<_> = synced
        .iter()
        .map(|user| {
            let args = ["sync", PLUGIN, "--user", user];
            tokio::spawn(cluster.command(&args).output())
        })
        .collect();
    let instances = [
        cluster.serve().await,
        cluster.serve().await,
        cluster.serve().await,
    ];
    for sync in syncs {
        let output = tokio::time::timeout(WAIT, sync)
            .await
            .expect("the sync finishes in time")
            .expect("the sync task")
            .expect("run the sync");
        assert!(
            output.status.success(),
            "sync: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    cluster.wait_fetched(USERS, WAIT).await;
    // Status and metrics answer alike whichever instance is asked.
    for instance in &instances {
        let status = instance.get(&format!("/plugin/{PLUGIN}/status")).await;
        assert_eq!(status.status, 200, "{status:?}");
        let status: Value = serde_json::from_str(&status.body).expect("status JSON");
        let listed = status["users"].as_object().expect("users");
        assert_eq!(listed.len(), USERS, "users listed");
        for (user, s) in listed {
            assert!(s["last_success"].is_string(), "{user}: {s}");
            assert!(s["next_due"].is_string(), "{user}: no due time: {s}");
        }
        let metrics = instance.get("/metrics").await;
        assert_eq!(metrics.status, 200, "{metrics:?}");
        let ok = format!(
            "healthpull_last_run_ok{{plugin=\"{PLUGIN}\",user=\"{}\",method=\"get_bodyweight\"}} 1",
            users(USERS - 1).0
        );
        assert!(metrics.body.contains(&ok), "{ok} in {}", metrics.body);
    }
    let mut logs = String::new();
    for instance in instances {
        let log = instance.stop().await;
        // Every instance ran some of the schedule's fetches.
        assert!(log.contains("Scheduled fetch stored"), "{log}");
        logs.push_str(&log);
    }
    for i in 0..USERS {
        let (user, fake_user) = users(i);
        assert_eq!(
            cluster.fake.refresh_count(&fake_user),
            1,
            "{user}: refreshes at the provider"
        );
        // One run by the schedule of one instance; the users of the CLI syncs may be
        // fetched by both.
        let calls = cluster.fake.api_call_count(&fake_user);
        let most = 1 + synced.iter().filter(|u| **u == user).count();
        assert!((1..=most).contains(&calls), "{user}: {calls} API calls");
    }
    assert!(!logs.contains("invalid_grant"), "{logs}");
    cluster.assert_no_consent_needed(USERS).await;
    cluster.assert_archived_once(USERS).await;
    let queued = count(
        &cluster.db.client().await,
        "SELECT count(*) FROM healthpull_schedule WHERE claimed_by IS NULL AND due_at > now()",
    )
    .await;
    assert_eq!(queued, USERS as i64, "every user is due again, unclaimed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instances_users_are_taken_over_when_its_leases_run_out() {
    const USERS: usize = 60;
    const LEASE: u64 = 2;
    let Some(cluster) = Cluster::start("cluster::killed_instance", &schedule(LEASE)).await else {
        return;
    };
    cluster.seed(USERS).await;
    // Slow answers, so every instance has fetches going when one is killed.
    cluster.fake.inject_fault(
        WEIGHT_PATH,
        Fault::Delay(Duration::from_millis(400)),
        USERS * 2,
    );
    let mut doomed = cluster.serve().await;
    let others = [cluster.serve().await, cluster.serve().await];
    // Kill the first instance while it holds claims.
    let deadline = Instant::now() + WAIT;
    let client = cluster.db.client().await;
    let owners =
        "SELECT count(DISTINCT claimed_by) FROM healthpull_schedule WHERE claimed_by IS NOT NULL";
    let claims = "SELECT count(*) FROM healthpull_schedule WHERE claimed_by IS NOT NULL";
    // The first instance to claim creates the queue's table.
    while client
        .query_one(owners, &[])
        .await
        .map_or(0, |row| row.get::<_, i64>(0))
        < 3
    {
        assert!(
            Instant::now() < deadline,
            "three instances never ran at once"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = doomed.child.id().expect("a running instance");
    let held: Vec<String> = client
        .query(
            "SELECT user_name FROM healthpull_schedule WHERE claimed_by LIKE $1",
            &[&format!("{pid}-%")],
        )
        .await
        .expect("read the queue")
        .iter()
        .map(|row| row.get(0))
        .collect();
    doomed.kill().await;
    let killed_at = Instant::now();
    assert!(!held.is_empty(), "claims were held when the instance died");
    cluster.wait_fetched(USERS, WAIT).await;
    let took = killed_at.elapsed();
    let mut logs = doomed.log();
    for instance in others {
        logs.push_str(&instance.stop().await);
    }
    // The others end the run once the dead instance's leases run out: a few runs of
    // 0.4 s each, after the lease.
    assert!(
        took < Duration::from_secs(LEASE + 10),
        "the users of the killed instance took {took:?}"
    );
    assert_eq!(count(&client, claims).await, 0, "claims left after the run");
    // The dead instance's users were run to the end by the others: due again later.
    let again = client
        .query(
            "SELECT user_name FROM healthpull_schedule WHERE user_name = ANY($1) AND due_at > now()",
            &[&held],
        )
        .await
        .expect("read the queue")
        .len();
    assert_eq!(again, held.len(), "taken over: {held:?}");
    assert!(!logs.contains("invalid_grant"), "{logs}");
    cluster.assert_no_consent_needed(USERS).await;
    cluster.assert_archived_once(USERS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_begun_on_one_instance_completes_on_another() {
    let Some(cluster) = Cluster::start("cluster::consent", "").await else {
        return;
    };
    cluster.seed(0).await;
    let (one, two) = (cluster.serve().await, cluster.serve().await);
    let fake_user = cluster.fake.config().default_user;

    // auth1 on the first instance, the provider's redirect answered by the second.
    let reply = one.get(&format!("/plugin/{PLUGIN}/auth1?user=jill")).await;
    assert_eq!(reply.status, 303, "auth1: {reply:?}");
    let consent = reply.location.expect("auth1 redirects");
    let back = one.send(one.http.get(&consent)).await;
    assert_eq!(back.status, 302, "the fake's consent: {back:?}");
    let callback = back.location.expect("the fake redirects back");
    let target = callback
        .strip_prefix(&one.url)
        .unwrap_or_else(|| panic!("the callback {callback} is not on {}", one.url));
    let reply = two.get(target).await;
    assert_eq!(reply.status, 200, "auth2 on the other instance: {reply:?}");
    let token = cluster
        .store
        .get(&paths::token(PLUGIN, &user_name("jill")))
        .await
        .expect("read the token")
        .expect("the consent stored a token");
    assert_eq!(token["user_id"], json!(fake_user), "{token}");
    for instance in [&one, &two] {
        let status = instance.get(&format!("/plugin/{PLUGIN}/status")).await;
        assert_eq!(status.status, 200, "{status:?}");
        let status: Value = serde_json::from_str(&status.body).expect("status JSON");
        assert_eq!(status["users"]["jill"]["granted"], json!(true), "{status}");
    }

    // The setup page's form token of one instance is good on the other.
    let page = one.get(&format!("/plugin/{PLUGIN}/page/setup.html")).await;
    assert_eq!(page.status, 200, "{page:?}");
    let token = crate::server::form_token(&page.body);
    let reply = two
        .post_form(
            &format!("/plugin/{PLUGIN}/userSettings"),
            &[("user", "jim"), ("_csrf", &token)],
        )
        .await;
    assert_eq!(
        reply.status, 200,
        "a form of one instance posted to another: {reply:?}"
    );
    let reply = two
        .post_form(
            &format!("/plugin/{PLUGIN}/userSettings"),
            &[("user", "joe"), ("_csrf", "wrong")],
        )
        .await;
    assert_eq!(reply.status, 403, "a wrong form token: {reply:?}");
    let metrics = two.get("/metrics").await;
    assert_eq!(metrics.status, 200, "{metrics:?}");

    // The stored form key is a secret: export never shows it.
    let stored = cluster
        .store
        .get(&format!("{}/csrf_key", paths::app(PLUGIN)))
        .await
        .expect("read the form key");
    let Some(Value::String(key)) = stored else {
        panic!("no stored form key: {stored:?}");
    };
    let (code, out, err) = cluster.run(&["export", &paths::app(PLUGIN)]).await;
    assert_eq!(code, Some(0), "export: {err}");
    assert!(out.contains("csrf_key"), "{out}");
    assert!(!out.contains(&key), "export shows the form key: {out}");
    let logs = format!("{}{}", one.stop().await, two.stop().await);
    assert!(!logs.contains(&key), "a log shows the form key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_locks_exclude_each_other_time_out_and_end_with_their_session() {
    use healthpull::auth::lock::{LockError, Locks};
    use healthpull::store::PostgresLocks;
    let Some(db) = TestDatabase::create("cluster::advisory_locks").await else {
        return;
    };
    // Two instances' locks on one database.
    let first = PostgresLocks::new(&db.url, 2, Duration::from_secs(10)).expect("locks");
    let second = PostgresLocks::new(&db.url, 2, Duration::from_millis(300)).expect("locks");
    let held = first.lock("fitbit--jack").await.expect("a free lock");
    assert_eq!(held.key(), "fitbit--jack");
    let error = second
        .lock("fitbit--jack")
        .await
        .expect_err("held by the other instance");
    assert!(
        matches!(error, LockError::Timeout { .. }),
        "a bounded wait: {error}"
    );
    // Other keys are free meanwhile.
    drop(second.lock("fitbit--jill").await.expect("another key"));
    // Released on drop: the waiting instance gets it.
    let waiting = tokio::spawn(async move {
        let third = PostgresLocks::new(&db.url, 1, Duration::from_secs(10)).expect("locks");
        let held = third.lock("fitbit--jack").await.expect("released");
        // The holder's session ends (as when its process dies): the lock is free.
        let admin = db.client().await;
        let killed: i64 = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_locks
                 WHERE locktype = 'advisory' AND granted
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[],
            )
            .await
            .expect("end the holder's session")
            .get(0);
        assert_eq!(killed, 1, "one session holds the lock");
        drop(held);
        let after = PostgresLocks::new(&db.url, 1, Duration::from_secs(10)).expect("locks");
        drop(
            after
                .lock("fitbit--jack")
                .await
                .expect("free once the session ended"),
        );
        db
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(held);
    let db = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("the waiting instance got the lock")
        .expect("the waiting task");
    drop(db);
}
