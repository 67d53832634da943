//! Tests: the live path end to end, through real HTTP against the fake OAuth2
//! provider (`support::fake_provider`) and on both stores: the embedded SQLite file and a
//! real igor-iot 0.99.1 (`support::igor`) reached as a service identity with capabilities.
//!
//! Most tests run the `healthpull` binary with `--config` pointing at a temporary config
//! file whose plugin overrides send the provider's URLs to the fake; the tests that need
//! concurrency inside one process call [`healthpull::live::fetch`] with a [`Runtime`].
//!
//! What is covered:
//! * `settings`, `user`, `auth` (loopback consent with state and PKCE, the fake consents at
//!   once and redirects) and `fetch`, for fitbit, google-health and withings, landing at the
//!   old plugin's paths; on Igor the bytes Igor serves are Igor's own conversion;
//! * proactive and reactive refresh, rotation (Fitbit, Withings) and non-rotation (Google);
//! * single-flight refresh: 20 concurrent fetches in one process, and two processes;
//! * lost refresh answers: dropped after the provider handled it, and a killed process;
//! * `invalid_grant` and revoked access tokens mark the user as needing consent;
//! * faults (5xx, slow answers, invalid JSON, 429 short and long, rate budgets, 410) leave
//!   stored data and tokens exactly as they were;
//! * no secret in any captured output (every binary run logs with `HEALTHPULL_LOG=debug`);
//! * the embedded store file is readable by its owner only;
//! * safe to expose: a token endpoint that echoes the request leaks no secret in
//!   any encoding (HTTP answer, log, stored status, status JSON, setup page, `export`);
//!   `export` hides pending consents' PKCE verifiers; no replaced token stays in the
//!   embedded store's files; `store.key_env` leaves only ciphertext in the SQLite files and
//!   in Igor; deleting a token revokes it at the provider (CLI and server), failures
//!   reported and the token deleted all the same.
//!
//! Tests that use the real plugin names (`fitbit`, `google-health`, `withings`) on Igor get
//! an Igor of their own; the others share one and use plugin names of their own.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, TimeZone, Timelike, Utc};
use healthpull::config::Config;
use healthpull::engine::FetchPlan;
use healthpull::engine::request::CallContext;
use healthpull::igor::paths;
use healthpull::live::{self, Clock, Runtime};
use healthpull::provider::Provider;
use healthpull::secret::Secret;
use healthpull::store::{IgorStore, IgorStoreConfig, SqliteStore, Store};
use healthpull::transform::Layout;
use indexmap::IndexMap;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::env::{healthpull_bin, root};
use crate::support::fake_provider::{
    Dialect, FakeConfig, FakeProvider, Fault, IssueKind, IssuedTokens, RateLimit, RetryAfter,
    TokenGrant,
};
use crate::support::igor::{Igor, IgorOptions};

/// The longest any one run of the binary may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest any other wait may take.
const WAIT_TIMEOUT: Duration = Duration::from_secs(60);
/// The Igor user everything is fetched for.
const USER: &str = "jack";

/// The test user as the live path takes it.
fn user() -> healthpull::user::UserName {
    healthpull::user::UserName::parse(USER).expect("a valid user name")
}
/// The fake provider's id of that user in the tests that seed tokens directly.
const FAKE_USER: &str = "7JACK7";
/// Environment variables the binary reads the client secret and the Igor password from.
const SECRET_ENV: &str = "HP_LIVE_CLIENT_SECRET";
const IGOR_PASSWORD_ENV: &str = "HP_LIVE_IGOR_PASSWORD";
/// The environment variable `store.key_env` names in the tests that encrypt at rest.
const STORE_KEY_ENV: &str = "HP_LIVE_STORE_KEY";
/// The Fitbit methods and arguments of most tests.
const FITBIT_METHODS: &str = "get_bodyweight,get_bodyfat";
const FITBIT_DAY: &str = "2024-01-15";

/// Every output captured in this module, and every secret the fakes issued.
static CAPTURED: Mutex<Vec<String>> = Mutex::new(Vec::new());
static SECRETS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Embedded,
    Igor,
}

impl Kind {
    /// A suffix that keeps plugin names on the shared Igor distinct.
    fn tag(self) -> &'static str {
        match self {
            Kind::Embedded => "e",
            Kind::Igor => "i",
        }
    }
}

/// Provider files as shipped, or copies with a 1 s timeout and short backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tuning {
    Shipped,
    Fast,
}

fn provider_name(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Fitbit => "fitbit",
        Dialect::Google => "google-health",
        Dialect::Withings => "withings",
    }
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string is JSON")
}

/// Copies of the shipped provider files with test-friendly timeout and retry settings.
fn fast_providers(dir: &Path) -> PathBuf {
    let out = dir.join("providers");
    std::fs::create_dir_all(&out).expect("create the providers directory");
    for name in ["fitbit", "google-health", "withings"] {
        let text = std::fs::read_to_string(root().join(format!("providers/{name}.yaml")))
            .expect("read a shipped provider file");
        let patched = text.replacen(
            "\napi:\n",
            "\napi:\n  timeout_seconds: 1\n  retry: {attempts: 3, backoff_ms: 20, max_wait_ms: 3000}\n",
            1,
        );
        assert_ne!(patched, text, "{name}.yaml has no `api:` section to tune");
        std::fs::write(out.join(format!("{name}.yaml")), patched).expect("write a provider copy");
    }
    out
}

enum IgorHandle {
    Shared(&'static Igor),
    Own(Igor),
}

impl IgorHandle {
    fn get(&self) -> &Igor {
        match self {
            IgorHandle::Shared(igor) => igor,
            IgorHandle::Own(igor) => igor,
        }
    }
}

/// What one run of the binary printed.
#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    /// The `error: ...` line, panicking when there is none.
    fn error_line(&self) -> &str {
        self.stderr
            .lines()
            .find(|line| line.starts_with("error:"))
            .unwrap_or_else(|| panic!("no error line in stderr:\n{}", self.stderr))
    }

    fn assert_ok(&self, what: &str) {
        assert_eq!(
            self.code,
            Some(0),
            "{what} failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
    }

    fn assert_failed(&self, what: &str) {
        assert_eq!(
            self.code,
            Some(1),
            "{what} should fail\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
    }
}

/// One test's world: a fake provider, a store, a config file pointing at both.
struct Live {
    kind: Kind,
    plugin: String,
    fake: FakeProvider,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    db_path: PathBuf,
    igor: Option<IgorHandle>,
    igor_login: Option<(String, String)>,
    store: OnceLock<Arc<dyn Store>>,
    outputs: Mutex<Vec<String>>,
    /// The config file without and with `store.key_env`.
    config_text: (String, String),
    /// The at-rest key the binary gets in [`STORE_KEY_ENV`], when the config names it.
    store_key: Mutex<Option<String>>,
}

impl Live {
    /// Starts the fake and, for Igor, a server with a service identity for `plugin`; writes
    /// the config. With the provider's own name as `plugin`, Igor is a dedicated server.
    async fn start(kind: Kind, dialect: Dialect, plugin: &str, tuning: Tuning) -> Live {
        Live::start_with(kind, FakeConfig::for_dialect(dialect), plugin, tuning, None).await
    }

    /// As [`Live::start`], with the fake configured by `fake_config` and, with `store_key`,
    /// secrets encrypted at rest.
    async fn start_with(
        kind: Kind,
        fake_config: FakeConfig,
        plugin: &str,
        tuning: Tuning,
        store_key: Option<&str>,
    ) -> Live {
        let dialect = fake_config.dialect;
        let fake = FakeProvider::start(fake_config).await;
        let dir = tempfile::Builder::new()
            .prefix("healthpull-live-")
            .tempdir()
            .expect("create a temporary directory");
        let providers_dir = match tuning {
            Tuning::Shipped => root().join("providers"),
            Tuning::Fast => fast_providers(dir.path()),
        };
        let db_path = dir.path().join("store/healthpull.db");
        let (igor, igor_login, store_yaml) = match kind {
            Kind::Embedded => (
                None,
                None,
                format!(
                    "store:\n  kind: embedded\n  path: {}\n",
                    quoted(db_path.to_str().expect("UTF-8 path"))
                ),
            ),
            Kind::Igor => {
                let options = IgorOptions { capabilities: true };
                let handle = if plugin == provider_name(dialect) {
                    IgorHandle::Own(
                        tokio::task::spawn_blocking(move || Igor::start(options))
                            .await
                            .expect("start Igor"),
                    )
                } else {
                    IgorHandle::Shared(
                        tokio::task::spawn_blocking(move || Igor::shared(options))
                            .await
                            .expect("start the shared Igor"),
                    )
                };
                let (user, password) = handle.get().service_identity(plugin, &[USER, "jill"]).await;
                let yaml = format!(
                    "store:\n  kind: igor\n  url: {}\n  username: {}\n  password_env: {IGOR_PASSWORD_ENV}\n",
                    quoted(&handle.get().url),
                    quoted(&user)
                );
                (Some(handle), Some((user, password)), yaml)
            }
        };
        // Withings has no revocation endpoint; the others revoke at the fake.
        let revoke = match dialect {
            Dialect::Withings => String::new(),
            _ => format!("    revoke_url: {}\n", quoted(&fake.revoke_url())),
        };
        let rest = format!(
            "lock_dir: {locks}\nplugins:\n  {name}:\n    provider: {provider}\n    authorize_url: {authorize}\n    token_url: {token}\n    base_url: {base}\n{revoke}",
            locks = quoted(dir.path().join("locks").to_str().expect("UTF-8 path")),
            name = quoted(plugin),
            provider = quoted(provider_name(dialect)),
            authorize = quoted(&fake.authorize_url()),
            token = quoted(&fake.token_url()),
            base = quoted(&fake.base_url()),
        );
        let providers = format!(
            "providers_dir: {}\n",
            quoted(providers_dir.to_str().expect("UTF-8 path"))
        );
        let config_text = (
            format!("{providers}{store_yaml}{rest}"),
            format!("{providers}{store_yaml}  key_env: {STORE_KEY_ENV}\n{rest}"),
        );
        let config_path = dir.path().join("healthpull.yaml");
        let config = match store_key {
            Some(_) => &config_text.1,
            None => &config_text.0,
        };
        std::fs::write(&config_path, config).expect("write the config file");
        Live {
            kind,
            plugin: plugin.to_owned(),
            fake,
            dir,
            config_path,
            db_path,
            igor,
            igor_login,
            store: OnceLock::new(),
            outputs: Mutex::new(Vec::new()),
            config_text,
            store_key: Mutex::new(store_key.map(str::to_owned)),
        }
    }

    /// Rewrites the config with or without `store.key_env` (and gives the binary the key).
    fn use_store_key(&self, key: Option<&str>) {
        let text = match key {
            Some(_) => &self.config_text.1,
            None => &self.config_text.0,
        };
        std::fs::write(&self.config_path, text).expect("rewrite the config file");
        *self.store_key.lock().unwrap_or_else(|e| e.into_inner()) = key.map(str::to_owned);
    }

    fn igor(&self) -> &Igor {
        self.igor.as_ref().expect("an Igor test").get()
    }

    /// The store as the binary sees it (the service identity for Igor).
    fn store(&self) -> Arc<dyn Store> {
        self.store
            .get_or_init(|| match self.kind {
                Kind::Embedded => {
                    Arc::new(SqliteStore::open(&self.db_path).expect("open the embedded store"))
                }
                Kind::Igor => {
                    let (user, password) = self.igor_login.clone().expect("Igor login");
                    Arc::new(
                        IgorStore::new(
                            IgorStoreConfig {
                                url: self.igor().url.clone(),
                                username: user,
                                password: Secret::from(password),
                                timeout: Duration::from_secs(30),
                            },
                            healthpull::http::HttpTransport::shared(),
                        )
                        .expect("Igor store"),
                    )
                }
            })
            .clone()
    }

    fn token_path(&self) -> String {
        paths::token(&self.plugin, &user())
    }

    fn sensors_path(&self) -> String {
        paths::sensors(&self.plugin, &user())
    }

    fn client_secret(&self) -> String {
        self.fake.config().client_secret
    }

    fn capture(&self, text: String) {
        CAPTURED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(text.clone());
        self.outputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(text);
    }

    /// The binary with the config, debug logs and the secrets it reads from the environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(healthpull_bin());
        command
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .current_dir(self.dir.path())
            .env("HEALTHPULL_LOG", "debug")
            .env(SECRET_ENV, self.client_secret())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some((_, password)) = &self.igor_login {
            command.env(IGOR_PASSWORD_ENV, password);
        }
        if let Some(key) = self
            .store_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            command.env(STORE_KEY_ENV, key);
        }
        command
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).spawn().expect("start healthpull")
    }

    /// Waits (time-bound) for a child started with [`Live::spawn`]; captures its output.
    async fn finish(&self, child: Child, what: &str) -> Out {
        let output = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("healthpull {what} did not finish within {RUN_TIMEOUT:?}"))
            .expect("wait for healthpull");
        let out = Out {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        self.capture(format!(
            "$ healthpull {what}\n{}\n{}",
            out.stdout, out.stderr
        ));
        out
    }

    async fn run(&self, args: &[&str]) -> Out {
        let child = self.spawn(args);
        self.finish(child, &args.join(" ")).await
    }

    fn fetch_args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["fetch", &self.plugin, "--user", USER]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(
            [
                "--methods",
                FITBIT_METHODS,
                "--set",
                &format!("base_date={FITBIT_DAY}"),
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        args
    }

    /// `healthpull fetch` of the Fitbit methods of most tests.
    async fn fetch(&self) -> Out {
        let args = self.fetch_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args).await
    }

    fn spawn_fetch(&self) -> Child {
        let args = self.fetch_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.spawn(&args)
    }

    /// `healthpull export PATH`, which must succeed.
    async fn export(&self, path: &str) -> String {
        let out = self.run(&["export", path]).await;
        out.assert_ok(&format!("export {path}"));
        out.stdout
    }

    /// `healthpull settings` with the fake's client id and secret.
    async fn settings(&self) -> Out {
        let client_id = self.fake.config().client_id;
        let out = self
            .run(&[
                "settings",
                &self.plugin,
                "--client-id",
                &client_id,
                "--client-secret-env",
                SECRET_ENV,
            ])
            .await;
        out.assert_ok("settings");
        out
    }

    /// Registers the app by writing the settings directly.
    async fn register_app(&self) {
        let config = self.fake.config();
        let store = self.store();
        let app = paths::app(&self.plugin);
        store
            .put(&format!("{app}/client_id"), &json!(config.client_id))
            .await
            .expect("store the client id");
        store
            .put(
                &format!("{app}/client_secret"),
                &json!(config.client_secret),
            )
            .await
            .expect("store the client secret");
    }

    /// A valid pair from the fake for [`FAKE_USER`], stored as `jack`'s token; the store
    /// thinks it expired a minute ago when `expired_in_store`.
    async fn seed_token(&self, expired_in_store: bool) -> TokenGrant {
        let grant = self.fake.grant(FAKE_USER);
        let now = Utc::now().timestamp();
        let expires_at = if expired_in_store {
            now - 60
        } else {
            grant.expires_at.timestamp()
        };
        let token = json!({
            "access_token": grant.access_token,
            "refresh_token": grant.refresh_token,
            "expires_in": grant.expires_in,
            "expires_at": expires_at,
            "scope": grant.scope,
            "token_type": "Bearer",
            "user_id": grant.user,
            "issued_at": now - 3600,
        });
        self.put_token(&token).await;
        grant
    }

    async fn put_token(&self, token: &Value) {
        let store = self.store();
        store
            .put(&self.token_path(), token)
            .await
            .expect("store the token");
        store.save().await.expect("save");
    }

    /// The stored token as the store returns it.
    async fn token(&self) -> Value {
        self.store()
            .get(&self.token_path())
            .await
            .expect("read the token")
            .expect("a token is stored")
    }

    /// Makes the store think the token expired a minute ago; returns the token as stored.
    async fn expire_stored_token(&self) -> Value {
        let mut token = self.token().await;
        token["expires_at"] = json!(Utc::now().timestamp() - 60);
        self.put_token(&token).await;
        self.token().await
    }

    async fn status(&self) -> Value {
        self.store()
            .get(&paths::status(&self.plugin, &user()))
            .await
            .expect("read the status")
            .unwrap_or(Value::Null)
    }

    /// Forgets a recorded rate limit (the service identity may not delete, so rewrite).
    async fn clear_rate_limit(&self) {
        let mut status = self.status().await;
        if let Some(map) = status.as_object_mut() {
            map.remove("rate_limited_until");
            self.store()
                .put(&paths::status(&self.plugin, &user()), &status)
                .await
                .expect("rewrite the status");
        }
    }

    /// Sensor data (as exported) and the token (as stored), to compare after a failure.
    async fn snapshot(&self) -> (String, Value) {
        (self.export(&self.sensors_path()).await, self.token().await)
    }

    async fn assert_unchanged(&self, before: &(String, Value), what: &str) {
        let after = self.snapshot().await;
        assert_eq!(after.0, before.0, "{what}: the stored sensor data changed");
        assert_eq!(after.1, before.1, "{what}: the stored token changed");
    }

    // ----------------------------------------------------------------- library path

    fn config(&self) -> Config {
        Config::load(Some(&self.config_path)).expect("load the config")
    }

    fn provider(&self) -> Arc<Provider> {
        Arc::new(
            self.config()
                .load_plugin(&self.plugin)
                .expect("load the plugin's provider"),
        )
    }

    /// A runtime on the same store and lock directory as the binary.
    fn runtime(&self) -> Runtime {
        healthpull::app::runtime(&self.config(), self.store(), Clock::default()).expect("runtime")
    }

    fn plan(&self, provider: &Provider, methods: &str, set: &[(&str, &str)]) -> FetchPlan {
        let now = Utc::now();
        FetchPlan {
            methods: methods.split(',').map(str::to_owned).collect(),
            explicit: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            stored: IndexMap::new(),
            layout: Layout::Mapped,
            today: now.date_naive(),
            zone: chrono_tz::Tz::UTC,
            host: None,
            zone_set: true,
            call: CallContext {
                system: provider.api.default_system.clone(),
                client_id: Some(self.fake.config().client_id),
                provider_user_id: None,
                now: now.to_rfc3339_opts(SecondsFormat::Secs, true),
                zone: "UTC".to_owned(),
                user: "jack".to_owned(),
            },
        }
    }

    /// The sensor XML a fetch with these arguments gives, through the library (dry run).
    async fn expected_xml(&self, methods: &str, set: &[(&str, &str)]) -> String {
        let provider = self.provider();
        let plan = self.plan(&provider, methods, set);
        let rt = self.runtime();
        let tree = bounded(
            "a dry-run fetch",
            live::fetch(provider, &self.plugin, &user(), &rt, &plan, true),
        )
        .await
        .unwrap_or_else(|e| panic!("dry-run fetch: {e}"));
        healthpull::igor::xml::to_igor_xml(USER, &tree.to_value())
    }

    // ----------------------------------------------------------------- secrets

    fn secrets(&self) -> Vec<String> {
        let mut secrets = vec![self.client_secret()];
        for user in self.fake.users() {
            for issued in self.fake.issued_tokens(&user) {
                secrets.push(issued.access_token);
                secrets.extend(issued.refresh_token);
            }
        }
        if let Some((_, password)) = &self.igor_login {
            secrets.push(password.clone());
        }
        secrets
    }

    /// No client secret, issued token or Igor password in anything captured so far, in this
    /// test or in any other test of the module.
    fn assert_no_secrets(&self) {
        let mine = self.secrets();
        let outputs = self
            .outputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        assert!(!outputs.is_empty(), "nothing was captured");
        assert_free_of(&outputs, &mine);
        let all_secrets: Vec<String> = {
            let mut all = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
            all.extend(mine);
            all.iter().cloned().collect()
        };
        let all_outputs = CAPTURED.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_free_of(&all_outputs, &all_secrets);
    }
}

fn assert_free_of(outputs: &[String], secrets: &[String]) {
    for output in outputs {
        for (i, secret) in secrets.iter().enumerate() {
            if !secret.is_empty() && output.contains(secret.as_str()) {
                panic!(
                    "secret #{i} ({} characters) appears in captured output:\n{}",
                    secret.len(),
                    output.replace(secret.as_str(), "<<SECRET>>")
                );
            }
        }
    }
}

fn is_true(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::Bool(true))) || matches!(v, Some(Value::String(s)) if s == "true")
}

fn text_of(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("{key} is not text: {other}"),
    }
}

/// The token pairs the fake issued by refresh.
fn refreshed(fake: &FakeProvider, user: &str) -> Vec<IssuedTokens> {
    fake.issued_tokens(user)
        .into_iter()
        .filter(|t| t.kind == IssueKind::Refresh)
        .collect()
}

/// Bearer tokens of the API requests the fake received (everything but consent and token).
fn api_bearers(fake: &FakeProvider, token_path: &str) -> Vec<String> {
    fake.requests()
        .into_iter()
        .filter(|r| r.path != token_path && !r.path.starts_with("/authorize"))
        .filter_map(|r| {
            r.header("authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned)
        })
        .collect()
}

fn seed_fitbit(fake: &FakeProvider, user: &str) {
    fake.seed_fitbit_weight(
        user,
        vec![json!({
            "bmi": 23.57, "date": FITBIT_DAY, "logId": 1_705_303_950_000i64,
            "source": "Aria", "time": "07:12:30", "weight": 75.3
        })],
    );
    fake.seed_fitbit_fat(
        user,
        vec![json!({
            "date": FITBIT_DAY, "fat": 21.4, "logId": 1_705_303_950_001i64,
            "source": "Aria", "time": "07:12:30"
        })],
    );
}

/// `count` Google weight points on 2024-01-15 (civil time UTC+1), one second apart.
fn google_weight_points(user: &str, count: usize) -> Vec<Value> {
    let start = Utc
        .with_ymd_and_hms(2024, 1, 15, 6, 0, 0)
        .single()
        .expect("a valid time");
    (0..count)
        .map(|i| {
            let at = start + chrono::Duration::seconds(i as i64);
            let local = at + chrono::Duration::hours(1);
            let mut time = Map::new();
            for (name, value) in [
                ("hours", local.hour()),
                ("minutes", local.minute()),
                ("seconds", local.second()),
            ] {
                if value != 0 {
                    time.insert(name.to_owned(), json!(value));
                }
            }
            json!({
                "name": format!("users/{user}/dataTypes/weight/dataPoints/{}", 7_305_000_000u64 + i as u64),
                "dataSource": {"recordingMethod": "ACTIVELY_MEASURED", "platform": "FITBIT"},
                "weight": {
                    "sampleTime": {
                        "physicalTime": at.to_rfc3339_opts(SecondsFormat::Secs, true),
                        "utcOffset": "3600s",
                        "civilTime": {"date": {"year": 2024, "month": 1, "day": 15}, "time": time},
                    },
                    "weightGrams": 75_000.0 + i as f64,
                },
            })
        })
        .collect()
}

/// `count` Withings weight groups, one a day from 2024-01-01.
fn withings_groups(count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| {
            let date = Utc
                .with_ymd_and_hms(2024, 1, 1 + i as u32, 7, 21, 12)
                .single()
                .expect("a valid time")
                .timestamp();
            json!({
                "grpid": 6_100_000_000i64 + i as i64, "attrib": 0, "date": date,
                "created": date + 35, "modified": date + 35, "category": 1,
                "deviceid": "3f9c2e71a0b84d55c6e1f0a9d2b7c4e8a15f6d90",
                "measures": [{"value": 72_350 + 10 * i as i64, "type": 1, "unit": -3, "algo": 0, "fm": 3}],
                "modelid": 5, "model": "Body+", "comment": null,
            })
        })
        .collect()
}

/// Awaits `future`, panicking after [`WAIT_TIMEOUT`].
async fn bounded<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {WAIT_TIMEOUT:?}"))
}

/// Waits until `check` holds, polling, for at most `limit`.
async fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ---------------------------------------------------------------------------------------
// 1. settings + auth + fetch end to end, at the old plugin's paths
// ---------------------------------------------------------------------------------------

/// Runs `healthpull auth`: reads the consent URL it prints, opens it (the fake consents at
/// once and redirects to the loopback callback), waits for the process.
async fn auth(live: &Live) -> Out {
    let what = format!("auth {} --user {USER}", live.plugin);
    let mut child = live.spawn(&["auth", &live.plugin, "--user", USER, "--timeout", "60"]);
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let stderr_task = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = String::new();
    let url = tokio::time::timeout(WAIT_TIMEOUT, async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            printed.push_str(&line);
            printed.push('\n');
            if line.starts_with("http://") || line.starts_with("https://") {
                return Some(line);
            }
        }
        None
    })
    .await
    .unwrap_or_else(|_| panic!("{what} printed no URL within {WAIT_TIMEOUT:?}"));
    let Some(url) = url else {
        let stderr = stderr_task.await.unwrap_or_default();
        panic!("{what} printed no URL:\n{printed}\nstderr:\n{stderr}");
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let browser = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("browser client");
    let answer = browser
        .get(&url)
        .send()
        .await
        .expect("open the consent URL");
    assert_eq!(answer.status(), 200, "the callback page");
    let page = answer.text().await.expect("callback page");
    assert!(page.contains("healthpull received the answer"), "{page}");
    let rest = tokio::time::timeout(WAIT_TIMEOUT, async {
        let mut rest = String::new();
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            rest.push_str(&line);
            rest.push('\n');
        }
        rest
    })
    .await
    .unwrap_or_else(|_| panic!("{what} did not close stdout within {WAIT_TIMEOUT:?}"));
    let status = tokio::time::timeout(WAIT_TIMEOUT, child.wait())
        .await
        .unwrap_or_else(|_| panic!("{what} did not exit within {WAIT_TIMEOUT:?}"))
        .expect("wait for auth");
    let out = Out {
        code: status.code(),
        stdout: printed + &rest,
        stderr: tokio::time::timeout(WAIT_TIMEOUT, stderr_task)
            .await
            .expect("stderr closes")
            .expect("stderr reader"),
    };
    live.capture(format!(
        "$ healthpull {what}\n{}\n{}",
        out.stdout, out.stderr
    ));
    out
}

async fn auth_and_fetch(kind: Kind, dialect: Dialect) {
    let plugin = provider_name(dialect);
    let live = Live::start(kind, dialect, plugin, Tuning::Shipped).await;
    let config = live.fake.config();
    let provider_user = config.default_user.clone();
    let store = live.store();

    // Settings, the old plugin's `settings`: the secret is stored but never printed back.
    let out = live.settings().await;
    assert!(
        out.stdout.contains("\"client_secret\": \"set\""),
        "{}",
        out.stdout
    );
    assert_eq!(
        store
            .get(&format!("plugindata/{plugin}/client_id"))
            .await
            .expect("get"),
        Some(json!(config.client_id))
    );
    assert_eq!(
        store
            .get(&format!("plugindata/{plugin}/client_secret"))
            .await
            .expect("get"),
        Some(json!(config.client_secret))
    );
    if kind == Kind::Embedded {
        let mode = std::fs::metadata(&live.db_path)
            .expect("the store file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the embedded store file's mode");
    }

    // Per-user defaults, the old plugin's `userSettings`.
    let (methods, set): (&str, Vec<(&str, &str)>) = match dialect {
        Dialect::Fitbit => (FITBIT_METHODS, vec![("base_date", FITBIT_DAY)]),
        Dialect::Google => ("get_bodyweight", vec![("base_date", "2024-01-15")]),
        Dialect::Withings => (
            "get_bodyweight",
            vec![("base_date", "2024-01-01"), ("end_date", "2024-01-31")],
        ),
    };
    let mut user_args = vec![
        "user".to_owned(),
        plugin.to_owned(),
        "--user".to_owned(),
        USER.to_owned(),
        "--set".to_owned(),
        format!("methods={methods}"),
    ];
    for (k, v) in &set {
        user_args.push("--set".to_owned());
        user_args.push(format!("{k}={v}"));
    }
    let user_args: Vec<&str> = user_args.iter().map(String::as_str).collect();
    let out = live.run(&user_args).await;
    out.assert_ok("user --set");
    assert!(out.stdout.contains("\"granted\": false"), "{}", out.stdout);
    assert_eq!(
        store
            .get(&format!("identities/{USER}/plugindata/{plugin}/methods"))
            .await
            .expect("get"),
        Some(json!(methods))
    );

    // Data at the fake.
    match dialect {
        Dialect::Fitbit => seed_fitbit(&live.fake, &provider_user),
        // More than one page of 1000 points.
        Dialect::Google => live.fake.seed_google(
            &provider_user,
            "weight",
            google_weight_points(&provider_user, 1003),
        ),
        // More than one `getmeas` page of 10 groups.
        Dialect::Withings => live.fake.seed_withings(&provider_user, withings_groups(12)),
    }

    // Consent from a terminal through the loopback redirect.
    let out = auth(&live).await;
    out.assert_ok("auth");
    assert!(
        out.stdout.contains("Access granted for `jack`"),
        "{}",
        out.stdout
    );
    let authorize = live.fake.requests_to("/authorize");
    assert_eq!(authorize.len(), 1, "one consent request");
    let state = authorize[0]
        .query_param("state")
        .expect("a state")
        .to_owned();
    assert!(state.len() >= 43, "state of at least 256 bits: {state}");
    assert_ne!(state, USER, "the old plugin's state=<user> is not copied");
    let token_path = live.fake.dialect().token_path();
    let exchange = live.fake.requests_to(token_path);
    assert_eq!(exchange.len(), 1, "one code exchange");
    let exchange = &exchange[0];
    assert_eq!(
        exchange.form_param("grant_type"),
        Some("authorization_code")
    );
    match dialect {
        Dialect::Fitbit | Dialect::Google => {
            assert_eq!(
                authorize[0].query_param("code_challenge_method"),
                Some("S256")
            );
            assert!(
                exchange.form_param("code_verifier").is_some(),
                "PKCE verifier sent"
            );
        }
        Dialect::Withings => {
            assert_eq!(authorize[0].query_param("code_challenge"), None, "no PKCE");
            assert_eq!(exchange.form_param("action"), Some("requesttoken"));
        }
    }
    match dialect {
        Dialect::Fitbit => {
            assert!(
                exchange
                    .header("authorization")
                    .is_some_and(|h| h.starts_with("Basic ")),
                "Fitbit: HTTP Basic client authentication"
            );
            assert_eq!(exchange.form_param("client_secret"), None);
        }
        Dialect::Google | Dialect::Withings => {
            assert_eq!(exchange.header("authorization"), None);
            assert_eq!(
                exchange.form_param("client_id"),
                Some(config.client_id.as_str())
            );
            assert_eq!(
                exchange.form_param("client_secret"),
                Some(config.client_secret.as_str())
            );
        }
    }
    if dialect == Dialect::Google {
        assert_eq!(authorize[0].query_param("access_type"), Some("offline"));
    }
    let issued = live.fake.issued_tokens(&provider_user);
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].kind, IssueKind::CodeExchange);
    let token = live.token().await;
    assert_eq!(text_of(&token, "access_token"), issued[0].access_token);
    assert_eq!(
        Some(text_of(&token, "refresh_token")),
        issued[0].refresh_token,
        "the refresh token is stored"
    );
    for key in ["expires_in", "expires_at", "token_type"] {
        assert!(
            token.get(key).is_some(),
            "the stored token has {key}: {token}"
        );
    }
    assert!(
        token.get("scope").is_some(),
        "the granted scopes are recorded: {token}"
    );
    if dialect != Dialect::Google {
        assert_eq!(text_of(&token, "user_id"), provider_user);
    }
    // The used state is gone (or, where the store may not delete, a tombstone).
    let pending = store
        .get(&format!("plugindata/{plugin}/pending"))
        .await
        .expect("get");
    match &pending {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => assert!(s.is_empty(), "{pending:?}"),
        Some(Value::Object(records)) => assert!(
            records.values().all(|r| r.get("used").is_some()),
            "the used state is gone: {pending:?}"
        ),
        Some(other) => panic!("unexpected pending states: {other}"),
    }
    // The state works once.
    let reused = healthpull::live::consent::complete(
        store.as_ref(),
        healthpull::http::HttpTransport::shared().as_ref(),
        &live.provider(),
        plugin,
        "a-code",
        &state,
        Clock::default(),
    )
    .await;
    assert!(
        matches!(
            reused,
            Err(healthpull::live::consent::ConsentError::UnknownState)
        ),
        "a used state is refused: {reused:?}"
    );
    let out = live.run(&["user", plugin, "--user", USER]).await;
    out.assert_ok("user");
    assert!(out.stdout.contains("\"granted\": true"), "{}", out.stdout);

    // The first fetch, with the stored methods and defaults.
    let out = live.run(&["fetch", plugin, "--user", USER]).await;
    out.assert_ok("fetch");
    assert!(
        out.stderr
            .contains(&format!("stored sensors/{plugin}/{USER}")),
        "{}",
        out.stderr
    );
    let sensors = format!("sensors/{plugin}/{USER}");
    let expected = live.expected_xml(methods, &set).await;
    match dialect {
        Dialect::Fitbit => assert!(expected.contains("<body-weight>"), "{expected}"),
        Dialect::Google => {
            assert_eq!(expected.matches("<body-weight>").count(), 1003, "all pages");
            let lists: Vec<_> = live
                .fake
                .requests_to("/v4/users/me/dataTypes/weight/dataPoints")
                .into_iter()
                .map(|r| r.query_param("pageToken").map(str::to_owned))
                .collect();
            assert!(lists.len() >= 2, "{lists:?}");
            assert_eq!(lists[0], None, "the first page has no token");
            assert!(lists[1].is_some(), "the second page carries the page token");
        }
        Dialect::Withings => {
            assert_eq!(expected.matches("<body-weight>").count(), 12, "all pages");
            let offsets: Vec<_> = live
                .fake
                .requests_to("/measure")
                .into_iter()
                .map(|r| r.form_param("offset").map(str::to_owned))
                .collect();
            assert!(offsets.contains(&Some("10".to_owned())), "{offsets:?}");
        }
    }
    assert_eq!(live.export(&sensors).await, format!("{expected}\n"));
    if kind == Kind::Igor {
        let reply = live
            .igor()
            .admin_get(&format!("/data/{sensors}"), "application/xml")
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body, format!("{expected}\n"), "the bytes Igor serves");
        let reply = live
            .igor()
            .admin_get(
                &format!("/data/plugindata/{plugin}/client_id"),
                "text/plain",
            )
            .await;
        assert_eq!(reply.body, format!("{}\n", config.client_id));
        let reply = live
            .igor()
            .admin_get(
                &format!("/data/identities/{USER}/plugindata/{plugin}/token/access_token"),
                "text/plain",
            )
            .await;
        assert_eq!(reply.body, format!("{}\n", issued[0].access_token));
    }

    // The access token expires at the provider: a refresh, then the call again.
    live.fake.expire_access_token(&provider_user);
    let out = live.run(&["fetch", plugin, "--user", USER]).await;
    out.assert_ok("fetch after expiry");
    assert_eq!(live.fake.refresh_count(&provider_user), 1);
    let refresh = live
        .fake
        .requests_to(token_path)
        .into_iter()
        .find(|r| r.form_param("grant_type") == Some("refresh_token"))
        .expect("a refresh request");
    let token = live.token().await;
    let renewed = refreshed(&live.fake, &provider_user);
    assert_eq!(renewed.len(), 1);
    assert_eq!(text_of(&token, "access_token"), renewed[0].access_token);
    match dialect {
        Dialect::Google => {
            assert_eq!(renewed[0].refresh_token, None, "Google does not rotate");
            assert_eq!(
                Some(text_of(&token, "refresh_token")),
                issued[0].refresh_token,
                "the stored refresh token is kept"
            );
            assert_eq!(refresh.header("authorization"), None);
            assert_eq!(
                refresh.form_param("client_secret"),
                Some(config.client_secret.as_str()),
                "form client authentication"
            );
        }
        Dialect::Fitbit | Dialect::Withings => {
            assert!(renewed[0].refresh_token.is_some(), "rotated");
            assert_eq!(
                Some(text_of(&token, "refresh_token")),
                renewed[0].refresh_token
            );
        }
    }
    assert_eq!(live.export(&sensors).await, format!("{expected}\n"));
    live.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fitbit_settings_auth_and_fetch_embedded() {
    auth_and_fetch(Kind::Embedded, Dialect::Fitbit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fitbit_settings_auth_and_fetch_igor() {
    auth_and_fetch(Kind::Igor, Dialect::Fitbit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_health_settings_auth_and_fetch_embedded() {
    auth_and_fetch(Kind::Embedded, Dialect::Google).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_health_settings_auth_and_fetch_igor() {
    auth_and_fetch(Kind::Igor, Dialect::Google).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withings_settings_auth_and_fetch_embedded() {
    auth_and_fetch(Kind::Embedded, Dialect::Withings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withings_settings_auth_and_fetch_igor() {
    auth_and_fetch(Kind::Igor, Dialect::Withings).await;
}

// ---------------------------------------------------------------------------------------
// 2. proactive and reactive refresh
// ---------------------------------------------------------------------------------------

async fn proactive_and_reactive_refresh(kind: Kind) {
    let live = Live::start(
        kind,
        Dialect::Fitbit,
        &format!("lvrefresh{}", kind.tag()),
        Tuning::Shipped,
    )
    .await;
    live.register_app().await;
    seed_fitbit(&live.fake, FAKE_USER);
    let token_path = Dialect::Fitbit.token_path();

    // Proactive: the store says the token has expired, so it is refreshed before any call;
    // the provider would have answered 401 to the old one.
    let grant = live.seed_token(true).await;
    live.fake.expire_access_token(FAKE_USER);
    live.fetch().await.assert_ok("fetch with an expired token");
    assert_eq!(live.fake.refresh_count(FAKE_USER), 1);
    let renewed = refreshed(&live.fake, FAKE_USER);
    assert_eq!(renewed.len(), 1);
    let bearers = api_bearers(&live.fake, token_path);
    assert_eq!(bearers.len(), 2, "one call per method, none answered 401");
    assert!(
        bearers.iter().all(|b| *b == renewed[0].access_token),
        "only the new token is used"
    );
    assert!(!bearers.contains(&grant.access_token));
    let token = live.token().await;
    assert_eq!(text_of(&token, "access_token"), renewed[0].access_token);
    assert_eq!(
        Some(text_of(&token, "refresh_token")),
        renewed[0].refresh_token
    );
    assert_eq!(
        text_of(&token, "user_id"),
        FAKE_USER,
        "the stored form keeps user_id"
    );
    let status = live.status().await;
    assert!(!is_true(status.get("consent_needed")), "{status}");
    assert!(status.get("last_success").is_some(), "{status}");

    // Reactive: the store thinks the token is fresh, the provider answers 401 expired_token
    // (echoing the token): refresh once, then the same call again.
    live.fake.clear_requests();
    live.fake.expire_access_token(FAKE_USER);
    live.fetch()
        .await
        .assert_ok("fetch after a 401 expired_token");
    assert_eq!(live.fake.refresh_count(FAKE_USER), 2);
    let renewed = refreshed(&live.fake, FAKE_USER);
    assert_eq!(renewed.len(), 2);
    let bearers = api_bearers(&live.fake, token_path);
    assert_eq!(
        bearers,
        vec![
            renewed[0].access_token.clone(),
            renewed[1].access_token.clone(),
            renewed[1].access_token.clone()
        ],
        "401 with the old token, the same call with the new one, then the next method"
    );
    let token = live.token().await;
    assert_eq!(text_of(&token, "access_token"), renewed[1].access_token);
    assert_eq!(
        Some(text_of(&token, "refresh_token")),
        renewed[1].refresh_token
    );
    live.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proactive_and_reactive_refresh_embedded() {
    proactive_and_reactive_refresh(Kind::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proactive_and_reactive_refresh_igor() {
    proactive_and_reactive_refresh(Kind::Igor).await;
}

// ---------------------------------------------------------------------------------------
// 3. one refresh at a time: 20 tasks in one process, and two processes
// ---------------------------------------------------------------------------------------

async fn twenty_concurrent_fetches_refresh_once(kind: Kind) {
    let live = Live::start(
        kind,
        Dialect::Fitbit,
        &format!("lvconc{}", kind.tag()),
        Tuning::Shipped,
    )
    .await;
    live.register_app().await;
    seed_fitbit(&live.fake, FAKE_USER);
    let grant = live.seed_token(true).await;
    live.fake.expire_access_token(FAKE_USER);
    // A slow refresh, so that the others queue behind it.
    live.fake.inject_fault(
        Dialect::Fitbit.token_path(),
        Fault::Delay(Duration::from_millis(300)),
        1,
    );
    let provider = live.provider();
    let rt = live.runtime();
    let plan = live.plan(&provider, "get_bodyweight", &[("base_date", FITBIT_DAY)]);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (provider, rt, plan, plugin) = (
                provider.clone(),
                rt.clone(),
                plan.clone(),
                live.plugin.clone(),
            );
            tokio::spawn(async move {
                live::fetch(provider, &plugin, &user(), &rt, &plan, false)
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    for task in tasks {
        let result = tokio::time::timeout(WAIT_TIMEOUT, task)
            .await
            .expect("a fetch finishes in time")
            .expect("the task does not panic");
        live.capture(format!("{result:?}"));
        assert!(result.is_ok(), "every fetch succeeds: {result:?}");
    }
    assert_eq!(live.fake.refresh_count(FAKE_USER), 1, "exactly one refresh");
    assert_eq!(
        live.fake.refresh_count_for(&grant.refresh_token),
        1,
        "no invalid_grant"
    );
    let renewed = refreshed(&live.fake, FAKE_USER);
    assert_eq!(renewed.len(), 1);
    let bearers = api_bearers(&live.fake, Dialect::Fitbit.token_path());
    assert_eq!(bearers.len(), 20);
    assert!(bearers.iter().all(|b| *b == renewed[0].access_token));
    assert_eq!(
        text_of(&live.token().await, "access_token"),
        renewed[0].access_token
    );
    live.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_fetches_refresh_once_embedded() {
    twenty_concurrent_fetches_refresh_once(Kind::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_fetches_refresh_once_igor() {
    twenty_concurrent_fetches_refresh_once(Kind::Igor).await;
}

async fn two_processes_refresh_once(kind: Kind) {
    let live = Live::start(
        kind,
        Dialect::Fitbit,
        &format!("lvprocs{}", kind.tag()),
        Tuning::Shipped,
    )
    .await;
    live.register_app().await;
    seed_fitbit(&live.fake, FAKE_USER);
    let grant = live.seed_token(true).await;
    live.fake.expire_access_token(FAKE_USER);
    live.fake.inject_fault(
        Dialect::Fitbit.token_path(),
        Fault::Delay(Duration::from_millis(500)),
        1,
    );
    let first = live.spawn_fetch();
    let second = live.spawn_fetch();
    let (a, b) = tokio::join!(
        live.finish(first, "fetch (1)"),
        live.finish(second, "fetch (2)")
    );
    a.assert_ok("the first process");
    b.assert_ok("the second process");
    assert_eq!(live.fake.refresh_count(FAKE_USER), 1, "exactly one refresh");
    assert_eq!(live.fake.refresh_count_for(&grant.refresh_token), 1);
    let renewed = refreshed(&live.fake, FAKE_USER);
    assert_eq!(renewed.len(), 1);
    let bearers = api_bearers(&live.fake, Dialect::Fitbit.token_path());
    assert_eq!(bearers.len(), 4);
    assert!(bearers.iter().all(|b| *b == renewed[0].access_token));
    assert_eq!(
        text_of(&live.token().await, "access_token"),
        renewed[0].access_token
    );
    live.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_refresh_once_embedded() {
    two_processes_refresh_once(Kind::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_refresh_once_igor() {
    two_processes_refresh_once(Kind::Igor).await;
}

// ---------------------------------------------------------------------------------------
// 4. lost refresh answers: the provider handled the refresh, we never heard back
// ---------------------------------------------------------------------------------------

async fn lost_refresh_answers_lose_no_token(kind: Kind) {
    let live = Live::start(
        kind,
        Dialect::Fitbit,
        &format!("lvcrash{}", kind.tag()),
        Tuning::Shipped,
    )
    .await;
    live.register_app().await;
    seed_fitbit(&live.fake, FAKE_USER);
    let token_path = Dialect::Fitbit.token_path();

    // The answer is lost once: the same process retries with the same refresh token and
    // Fitbit replays the same pair.
    let grant = live.seed_token(true).await;
    live.fake
        .inject_fault(token_path, Fault::DropAfterHandling, 1);
    live.fetch()
        .await
        .assert_ok("fetch with a lost refresh answer");
    assert_eq!(
        live.fake.refresh_count_for(&grant.refresh_token),
        2,
        "retried with the same token"
    );
    let renewed = refreshed(&live.fake, FAKE_USER);
    assert_eq!(renewed.len(), 1, "the retry got the same pair back");
    assert_eq!(
        text_of(&live.token().await, "access_token"),
        renewed[0].access_token
    );
    assert_eq!(
        Some(text_of(&live.token().await, "refresh_token")),
        renewed[0].refresh_token
    );

    // The process is killed right after the provider handled the refresh, before the answer
    // was stored: the old pair is still stored and the next run recovers through the replay.
    let before = live.expire_stored_token().await;
    let old_refresh = text_of(&before, "refresh_token");
    // Every attempt of this process is handled and lost, so that even a kill that comes late
    // cannot let it store the new pair.
    live.fake
        .inject_fault(token_path, Fault::DropAfterHandling, 3);
    let mut child = live.spawn_fetch();
    let fake = &live.fake;
    wait_until(WAIT_TIMEOUT, "the fake handled the refresh", || {
        fake.refresh_count_for(&old_refresh) >= 1
    })
    .await;
    child.start_kill().expect("kill the fetch");
    let out = live.finish(child, "fetch (killed)").await;
    live.fake.clear_faults();
    assert_ne!(out.code, Some(0), "the fetch was killed: {out:?}");
    assert_eq!(
        live.token().await,
        before,
        "the stored token is the old pair"
    );
    assert_eq!(
        refreshed(&live.fake, FAKE_USER).len(),
        2,
        "the provider rotated"
    );
    let presented = live.fake.refresh_count_for(&old_refresh);

    live.fetch().await.assert_ok("the next run");
    assert_eq!(
        live.fake.refresh_count_for(&old_refresh),
        presented + 1,
        "the same refresh token again"
    );
    let renewed = refreshed(&live.fake, FAKE_USER);
    assert_eq!(renewed.len(), 2, "the replay issued nothing new");
    let token = live.token().await;
    assert_eq!(text_of(&token, "access_token"), renewed[1].access_token);
    assert_eq!(
        Some(text_of(&token, "refresh_token")),
        renewed[1].refresh_token
    );
    let status = live.status().await;
    assert!(!is_true(status.get("consent_needed")), "{status}");
    live.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_refresh_answers_lose_no_token_embedded() {
    lost_refresh_answers_lose_no_token(Kind::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_refresh_answers_lose_no_token_igor() {
    lost_refresh_answers_lose_no_token(Kind::Igor).await;
}

/// The provider over HTTPS (token refresh and API call): the server's certificate is
/// checked against the system's roots, here the fixture CA given as `SSL_CERT_FILE`; a
/// certificate no root vouches for stops the fetch with a certificate error and sends
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_over_tls_is_checked_against_the_system_roots() {
    let live = Live::start(Kind::Embedded, Dialect::Fitbit, "lvtls", Tuning::Shipped).await;
    live.register_app().await;
    seed_fitbit(&live.fake, FAKE_USER);
    live.seed_token(true).await;
    let port = crate::support::tls::front(live.fake.addr());
    let https = format!("https://localhost:{port}");
    let text = live
        .config_text
        .0
        .replace(&quoted(&live.fake.base_url()), &quoted(&https))
        .replace(
            &quoted(&live.fake.token_url()),
            &quoted(&format!("{https}{}", Dialect::Fitbit.token_path())),
        );
    assert_ne!(text, live.config_text.0, "the config names the fake's URLs");
    std::fs::write(&live.config_path, &text).expect("write the HTTPS config");
    let args = live.fetch_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // Roots without the fixture CA: refused at the handshake, nothing reaches the fake.
    let empty_roots = live.dir.path().join("no-roots");
    std::fs::create_dir_all(&empty_roots).expect("an empty roots directory");
    let other_ca = live.dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, include_str!("../fixtures/tls/other-ca.pem")).expect("write");
    let child = live
        .command(&args)
        .env("SSL_CERT_FILE", &other_ca)
        .env("SSL_CERT_DIR", &empty_roots)
        .spawn()
        .expect("start healthpull");
    let out = live.finish(child, "fetch over TLS, unknown issuer").await;
    out.assert_failed("a fetch from a server no root vouches for");
    let error = out.error_line().to_ascii_lowercase();
    assert!(error.contains("certificate"), "{error}");
    assert!(live.fake.requests().is_empty(), "nothing reached the fake");

    // The fixture CA as the system's roots: the token is refreshed and the day fetched.
    let child = live
        .command(&args)
        .env("SSL_CERT_FILE", crate::support::tls::ca_file())
        .env("SSL_CERT_DIR", &empty_roots)
        .spawn()
        .expect("start healthpull");
    let out = live.finish(child, "fetch over TLS").await;
    out.assert_ok("a fetch over TLS");
    assert_eq!(live.fake.refresh_count(FAKE_USER), 1, "refreshed over TLS");
    assert!(
        !live.fake.requests_to("/1/").is_empty(),
        "the API was called"
    );
    let (tree, _) = live.snapshot().await;
    assert!(tree.contains("<body-weight>"), "{tree}");
}

// ---------------------------------------------------------------------------------------
// 5. invalid_grant and revoked access: consent needed, nothing else touched
// ---------------------------------------------------------------------------------------

async fn revoked_grant_needs_consent(kind: Kind) {
    let live = Live::start(
        kind,
        Dialect::Fitbit,
        &format!("lvgrant{}", kind.tag()),
        Tuning::Shipped,
    )
    .await;
    live.register_app().await;
    seed_fitbit(&live.fake, FAKE_USER);
    live.seed_token(false).await;
    live.fetch().await.assert_ok("the first fetch");

    // The refresh token was revoked: the refresh gets invalid_grant (Fitbit echoes the token).
    live.fake.revoke(FAKE_USER);
    live.expire_stored_token().await;
    let before = live.snapshot().await;
    let out = live.fetch().await;
    out.assert_failed("fetch with a revoked refresh token");
    let error = out.error_line();
    assert!(error.contains("must grant access again"), "{error}");
    assert!(
        error.contains(&format!("healthpull auth {} --user {USER}", live.plugin)),
        "{error}"
    );
    live.assert_unchanged(&before, "invalid_grant").await;
    let status = live.status().await;
    assert!(is_true(status.get("consent_needed")), "{status}");
    assert!(status.get("last_error").is_some(), "{status}");
    assert_eq!(
        live.fake.refresh_count(FAKE_USER),
        1,
        "no retry of a refused grant"
    );

    // The store thinks the token is fresh, the provider no longer knows it: 401
    // invalid_token (echoing the token) means consent again too.
    let mut token = live.token().await;
    token["expires_at"] = json!(Utc::now().timestamp() + 3600);
    live.put_token(&token).await;
    let before = live.snapshot().await;
    let out = live.fetch().await;
    out.assert_failed("fetch with a revoked access token");
    let error = out.error_line();
    assert!(error.contains("HTTP 401"), "{error}");
    assert!(error.contains("must grant access again"), "{error}");
    live.assert_unchanged(&before, "invalid_token").await;
    assert!(is_true(live.status().await.get("consent_needed")));

    // The status itself holds no secret either.
    live.capture(live.status().await.to_string());
    live.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_grant_needs_consent_embedded() {
    revoked_grant_needs_consent(Kind::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_grant_needs_consent_igor() {
    revoked_grant_needs_consent(Kind::Igor).await;
}

// ---------------------------------------------------------------------------------------
// 6. faults: a clear error, stored data and token as they were
// ---------------------------------------------------------------------------------------

async fn faults_leave_data_and_tokens_as_they_were(kind: Kind) {
    let live = Live::start(
        kind,
        Dialect::Fitbit,
        &format!("lvfaults{}", kind.tag()),
        Tuning::Fast,
    )
    .await;
    live.register_app().await;
    seed_fitbit(&live.fake, FAKE_USER);
    live.seed_token(false).await;
    live.fetch().await.assert_ok("the first fetch");
    let before = live.snapshot().await;
    assert!(before.0.contains("<body-weight>"), "{}", before.0);
    let api = "/1/";
    let token_path = Dialect::Fitbit.token_path();

    // 5xx: retried (3 attempts), then an error naming provider, method and status.
    live.fake.inject_fault(api, Fault::Status(503), 3);
    let sent = live.fake.requests_to(api).len();
    let out = live.fetch().await;
    out.assert_failed("503 three times");
    let error = out.error_line();
    for part in ["fitbit get_bodyweight", "HTTP 503", "after 3 attempts"] {
        assert!(error.contains(part), "{part}: {error}");
    }
    assert_eq!(
        live.fake.requests_to(api).len() - sent,
        4,
        "three attempts, then the next method"
    );
    live.assert_unchanged(&before, "503").await;

    // Two 503s are retried away.
    live.fake.inject_fault(api, Fault::Status(502), 2);
    live.fetch().await.assert_ok("502 twice, then success");
    live.assert_unchanged(&before, "502 retried").await;

    // Slow answers beyond the (1 s) timeout; the fake would answer after the test is over.
    live.fake
        .inject_fault(api, Fault::Delay(Duration::from_secs(30)), 3);
    let out = live.fetch().await;
    out.assert_failed("slow answers");
    let error = out.error_line();
    assert!(error.contains("fitbit get_bodyweight"), "{error}");
    assert!(error.contains("timed out"), "{error}");
    live.assert_unchanged(&before, "timeouts").await;

    // Invalid JSON in a 200 answer.
    live.fake.inject_fault(api, Fault::InvalidJson, 1);
    let out = live.fetch().await;
    out.assert_failed("invalid JSON");
    let error = out.error_line();
    assert!(error.contains("fitbit get_bodyweight"), "{error}");
    assert!(error.contains("HTTP 200"), "{error}");
    assert!(error.contains("not JSON"), "{error}");
    live.assert_unchanged(&before, "invalid JSON").await;

    // The second method fails: the run says so; the first method's answer is archived
    // (the same data as before).
    live.fake
        .inject_fault("/1/user/-/body/log/fat", Fault::Status(500), 3);
    let out = live.fetch().await;
    out.assert_failed("the second method fails");
    assert!(
        out.error_line().contains("fitbit get_bodyfat"),
        "{}",
        out.error_line()
    );
    live.assert_unchanged(&before, "second method").await;

    // 429 with a short Retry-After: wait and succeed.
    live.fake
        .inject_fault(api, Fault::TooManyRequests(RetryAfter::Seconds(1)), 1);
    let started = Instant::now();
    live.fetch().await.assert_ok("429 with Retry-After: 1");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited for Retry-After"
    );
    live.assert_unchanged(&before, "short 429").await;

    // A refresh whose token endpoint fails: retried, then a clear error, the token kept.
    let token_before = live.expire_stored_token().await;
    let before_refresh = (before.0.clone(), token_before);
    live.fake.inject_fault(token_path, Fault::Status(503), 3);
    let out = live.fetch().await;
    out.assert_failed("token endpoint 503");
    let error = out.error_line();
    assert!(
        error.contains("token refresh failed after 3 attempts"),
        "{error}"
    );
    assert!(error.contains("fitbit get_bodyweight"), "{error}");
    live.assert_unchanged(&before_refresh, "token endpoint 503")
        .await;
    live.fetch().await.assert_ok("the refresh works again");
    let before = live.snapshot().await;
    assert_ne!(before.1, before_refresh.1, "refreshed");

    // 410: the API is retired; the error says so and names the replacement.
    live.fake.set_retired(true);
    let out = live.fetch().await;
    live.fake.set_retired(false);
    out.assert_failed("retired API");
    let error = out.error_line();
    assert!(error.contains("retired"), "{error}");
    assert!(error.contains("HTTP 410"), "{error}");
    assert!(error.contains("google-health"), "{error}");
    live.assert_unchanged(&before, "410").await;

    // 429 with a long Retry-After: rate limited until then, and the next run does not even
    // try before that time.
    live.fake
        .inject_fault(api, Fault::TooManyRequests(RetryAfter::Seconds(3600)), 1);
    let out = live.fetch().await;
    out.assert_failed("long 429");
    let error = out.error_line();
    assert!(error.contains("rate limited"), "{error}");
    assert!(error.contains("budget exhausted until"), "{error}");
    live.assert_unchanged(&before, "long 429").await;
    let calls = live.fake.api_call_count(FAKE_USER);
    let out = live.fetch().await;
    out.assert_failed("fetch while rate limited");
    assert!(
        out.error_line().contains("budget exhausted until"),
        "{}",
        out.error_line()
    );
    assert_eq!(
        live.fake.api_call_count(FAKE_USER),
        calls,
        "no call while rate limited"
    );
    live.assert_unchanged(&before, "rate limited").await;
    live.clear_rate_limit().await;

    // Fitbit's headers say the budget is spent (Remaining: 0): stop before the next call
    // instead of running into 429s.
    live.fake.set_rate_limit(Some(RateLimit {
        limit: 1,
        window: Duration::from_secs(3600),
    }));
    let calls = live.fake.api_call_count(FAKE_USER);
    let out = live.fetch().await;
    out.assert_failed("budget spent");
    let error = out.error_line();
    assert!(error.contains("fitbit get_bodyfat"), "{error}");
    assert!(error.contains("budget exhausted until"), "{error}");
    assert_eq!(
        live.fake.api_call_count(FAKE_USER),
        calls + 1,
        "stopped early"
    );
    live.assert_unchanged(&before, "budget spent").await;
    live.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_leave_data_and_tokens_as_they_were_embedded() {
    faults_leave_data_and_tokens_as_they_were(Kind::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_leave_data_and_tokens_as_they_were_igor() {
    faults_leave_data_and_tokens_as_they_were(Kind::Igor).await;
}

/// Fitbit allows 150 calls per hour per user: the 151st is refused on our side, before it
/// reaches the provider (which sends no rate-limit headers here).
async fn fitbit_hourly_budget_stops_early(kind: Kind) {
    let live = Live::start(
        kind,
        Dialect::Fitbit,
        &format!("lvbudget{}", kind.tag()),
        Tuning::Shipped,
    )
    .await;
    live.register_app().await;
    seed_fitbit(&live.fake, FAKE_USER);
    live.seed_token(false).await;
    live.fake.set_rate_limit(None);
    let provider = live.provider();
    let rt = live.runtime();
    let plan = live.plan(&provider, "get_bodyweight", &[("base_date", FITBIT_DAY)]);
    for i in 0..150 {
        bounded(
            "a fetch",
            live::fetch(provider.clone(), &live.plugin, &user(), &rt, &plan, true),
        )
        .await
        .unwrap_or_else(|e| panic!("fetch {i}: {e}"));
    }
    let error = bounded(
        "a fetch",
        live::fetch(provider.clone(), &live.plugin, &user(), &rt, &plan, true),
    )
    .await
    .expect_err("the 151st call in an hour is refused")
    .to_string();
    live.capture(error.clone());
    assert!(error.contains("fitbit get_bodyweight"), "{error}");
    assert!(error.contains("budget exhausted until"), "{error}");
    assert_eq!(live.fake.api_call_count(FAKE_USER), 150);
    live.assert_no_secrets();
}

/// Embedded only: the budget is kept per runtime whatever the store, and 151 fetches through
/// Igor's REST API take half a minute (the Igor side of rate limits, the limit recorded in
/// the user's status, is covered by the fault tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fitbit_hourly_budget_stops_early_embedded() {
    fitbit_hourly_budget_stops_early(Kind::Embedded).await;
}

// ---------------------------------------------------------------------------------------
// 8. the embedded store file
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_file_is_readable_by_its_owner_only() {
    let live = Live::start(Kind::Embedded, Dialect::Fitbit, "lvmode", Tuning::Shipped).await;
    assert!(!live.db_path.exists());
    live.settings().await;
    live.register_app().await;
    seed_fitbit(&live.fake, FAKE_USER);
    live.seed_token(true).await;
    live.fetch().await.assert_ok("fetch");
    let dir = live.db_path.parent().expect("a directory");
    for entry in std::fs::read_dir(dir).expect("list the store directory") {
        let path = entry.expect("an entry").path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("healthpull.db") {
            let mode = std::fs::metadata(&path)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }
    live.assert_no_secrets();
}

// ---------------------------------------------------------------------------------------
// a provider that forbids loopback redirects
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_refuses_loopback_where_the_provider_forbids_it() {
    let live = Live::start(Kind::Embedded, Dialect::Google, "lvnoloop", Tuning::Fast).await;
    let providers = live.dir.path().join("providers");
    let file = providers.join("google-health.yaml");
    let text = std::fs::read_to_string(&file).expect("read the provider copy");
    let patched = text.replacen(
        "\nauth:\n",
        "\nauth:\n  allow_loopback_redirect: false\n",
        1,
    );
    assert_ne!(patched, text, "google-health.yaml has no `auth:` section");
    std::fs::write(&file, patched).expect("write the provider copy");
    live.settings().await;
    let out = live
        .run(&["auth", "lvnoloop", "--user", USER, "--timeout", "5"])
        .await;
    out.assert_failed("auth with loopback forbidden");
    let error = out.error_line();
    assert!(
        error.contains("does not accept loopback redirect"),
        "{error}"
    );
    assert!(error.contains("/plugin/lvnoloop/auth2"), "{error}");
    assert!(
        live.fake.requests().is_empty(),
        "nothing was sent to the provider"
    );
    assert_eq!(
        live.store().get(&live.token_path()).await.expect("get"),
        None,
        "no token"
    );
    live.assert_no_secrets();
}

// ============================================================================ safe to expose
// Safe to expose: secrets in every encoding, the export of pending consents, secrets at
// rest (WAL, encryption with `store.key_env`), revocation when a token is deleted.

/// A client secret, access and refresh token with `/`, `+`, `=` and spaces: their
/// percent, form, JSON and base64 forms all differ from the raw value.
const ODD_CLIENT_SECRET: &str = "cs/Qm+Rt= s3cr3t/Tail+==";
const ODD_ACCESS_TOKEN: &str = "ya29.a0+AT/odd= access token/x";
const ODD_REFRESH_TOKEN: &str = "1//0gRt+Ab= cD/eF+gH== refresh";
/// A 32-byte key as hex, for `store.key_env`.
const STORE_KEY: &str = "8f0e2a7c4b19d35e60f7a1c2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6";

/// A running `healthpull serve` of a [`Live`] world, with its stderr collected.
struct Serve {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
    reader: tokio::task::JoinHandle<()>,
    client: reqwest::Client,
}

impl Serve {
    async fn start(live: &Live) -> Serve {
        let mut command = live.command(&["serve", "--listen", "127.0.0.1:0"]);
        command.env("NO_COLOR", "1");
        let mut child = command.spawn().expect("start healthpull serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let crate::support::serve_log::Followed {
            log,
            url: rx,
            reader,
        } = crate::support::serve_log::follow(stderr);
        let url = tokio::time::timeout(WAIT_TIMEOUT, rx)
            .await
            .expect("serve listens in time")
            .unwrap_or_else(|_| panic!("serve exited: {}", log.lock().expect("log")));
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Serve {
            child,
            url,
            log,
            reader,
            client,
        }
    }

    /// `GET` of a path on the server: status and body.
    async fn get(&self, path: &str) -> (u16, String) {
        let answer = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = answer.status().as_u16();
        (status, answer.text().await.expect("answer body"))
    }

    /// Stops the server; returns everything it logged.
    async fn stop(mut self, live: &Live) -> String {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(WAIT_TIMEOUT, self.child.wait()).await;
        let _ = tokio::time::timeout(WAIT_TIMEOUT, &mut self.reader).await;
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        live.capture(format!("$ healthpull serve\n{log}"));
        log
    }
}

/// The forms in which a value goes over the wire or into JSON: as is, form-encoded (`+`
/// for a space), percent-encoded (`%20`), JSON with `\/`.
fn sent_forms(value: &str) -> Vec<String> {
    let form: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    let percent = form.replace('+', "%20");
    let json = serde_json::to_string(value).expect("JSON");
    let json = json[1..json.len() - 1].replace('/', "\\/");
    let mut forms = vec![value.to_owned(), form, percent, json];
    forms.dedup();
    forms
}

/// Every form of the client secret, the refresh token and the Basic credential.
fn odd_secret_forms(client_id: &str) -> Vec<(String, String)> {
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{client_id}:{ODD_CLIENT_SECRET}"));
    let mut all = Vec::new();
    for (what, value) in [
        ("client secret", ODD_CLIENT_SECRET.to_owned()),
        ("refresh token", ODD_REFRESH_TOKEN.to_owned()),
        ("access token", ODD_ACCESS_TOKEN.to_owned()),
        ("basic credential", basic),
    ] {
        for form in sent_forms(&value) {
            all.push((format!("{what} as {form:?}"), form));
        }
    }
    all
}

fn assert_no_form_in(what: &str, text: &str, forms: &[(String, String)]) {
    for (name, form) in forms {
        assert!(
            !text.contains(form.as_str()),
            "{what} shows the {name}:\n{}",
            text.replace(form.as_str(), "<<SECRET>>")
        );
    }
}

/// A token endpoint that echoes the request leaks nothing, in no encoding,
/// through the HTTP answer, the log, the stored status, the status JSON, the setup page or
/// `export`.
async fn echoed_secrets_are_redacted_in_every_form(dialect: Dialect) {
    let mut fake_config = FakeConfig::for_dialect(dialect);
    fake_config.client_secret = ODD_CLIENT_SECRET.to_owned();
    let plugin = format!("{}-echo", provider_name(dialect));
    let live = Live::start_with(Kind::Embedded, fake_config, &plugin, Tuning::Fast, None).await;
    live.settings().await;
    live.put_token(&json!({
        "access_token": ODD_ACCESS_TOKEN,
        "refresh_token": ODD_REFRESH_TOKEN,
        "expires_at": Utc::now().timestamp() - 60,
        "scope": "weight",
        "token_type": "Bearer",
        "user_id": FAKE_USER,
        "issued_at": Utc::now().timestamp() - 3600,
    }))
    .await;
    live.fake.set_echo_token_requests(true);

    let serve = Serve::start(&live).await;
    let (status, answer) = serve.get(&format!("/plugin/{plugin}?user={USER}")).await;
    let (_, status_json) = serve.get(&format!("/plugin/{plugin}/status")).await;
    let (page_status, page) = serve
        .get(&format!("/plugin/{plugin}/page/setup.html?user={USER}"))
        .await;
    let log = serve.stop(&live).await;
    let stored = live.status().await;
    let last_error = text_of(&stored, "last_error");
    let export = live.run(&["export"]).await;
    export.assert_ok("export");

    // The echo happened and its text reached every place checked below.
    let token_calls = live.fake.requests_to(dialect.token_path());
    assert!(!token_calls.is_empty(), "the token endpoint was called");
    assert!(
        token_calls[0].body.contains("refresh_token="),
        "{:?}",
        token_calls[0].body
    );
    assert_eq!(status, 502, "{answer}");
    for (what, text) in [
        ("the HTTP answer", &answer),
        ("the stored last_error", &last_error),
        ("the status JSON", &status_json),
        ("the log", &log),
        ("export", &export.stdout),
    ] {
        assert!(
            text.contains("You sent"),
            "{what} lacks the provider's text:\n{text}"
        );
    }
    assert_eq!(page_status, 200, "{page}");
    assert!(
        page.contains("You sent"),
        "the setup page lacks the last error:\n{page}"
    );

    let forms = odd_secret_forms(&live.fake.config().client_id);
    assert_no_form_in("the HTTP answer", &answer, &forms);
    assert_no_form_in("the server's log", &log, &forms);
    assert_no_form_in("the stored last_error", &last_error, &forms);
    assert_no_form_in("the status JSON", &status_json, &forms);
    assert_no_form_in("the setup page", &page, &forms);
    assert_no_form_in("export", &export.stdout, &forms);
    assert_no_form_in("export's stderr", &export.stderr, &forms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_secrets_are_redacted_in_every_form_fitbit() {
    echoed_secrets_are_redacted_in_every_form(Dialect::Fitbit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_secrets_are_redacted_in_every_form_google() {
    echoed_secrets_are_redacted_in_every_form(Dialect::Google).await;
}

/// `export` shows no PKCE verifier of a pending consent, and no
/// secret when the exported path is the secret itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_redacts_pending_consent_verifiers() {
    let live = Live::start(
        Kind::Embedded,
        Dialect::Fitbit,
        "fitbit-pending",
        Tuning::Fast,
    )
    .await;
    live.settings().await;
    let store = live.store();
    healthpull::live::consent::begin(
        store.as_ref(),
        &live.provider(),
        &live.plugin,
        &user(),
        "http://127.0.0.1:9/callback",
        Clock::default(),
    )
    .await
    .expect("begin a consent");
    let pending = store
        .get(&format!("plugindata/{}/pending", live.plugin))
        .await
        .expect("read pending")
        .expect("a pending consent");
    let (key, record) = pending
        .as_object()
        .and_then(|m| m.iter().next())
        .expect("one record");
    let verifier = text_of(record, "verifier");
    assert!(verifier.len() >= 43, "{verifier}");
    let grant = live.seed_token(false).await;
    for args in [vec!["export"], vec!["export", "plugindata"]] {
        let out = live.run(&args).await;
        out.assert_ok("export");
        assert!(
            !out.stdout.contains(&verifier),
            "export shows the verifier:\n{}",
            out.stdout
        );
        assert!(
            out.stdout.contains("<verifier>[redacted]</verifier>"),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout
                .contains("<client_secret>[redacted]</client_secret>")
        );
        assert!(out.stdout.contains(&format!("<user>{USER}</user>")));
    }
    // Each secret exported on its own: the exported element is the secret field.
    let app = format!("plugindata/{}", live.plugin);
    let token = live.token_path();
    for (path, tag) in [
        (format!("{app}/pending/{key}/verifier"), "verifier"),
        (format!("{app}/client_secret"), "client_secret"),
        (format!("{token}/access_token"), "access_token"),
        (format!("{token}/refresh_token"), "refresh_token"),
    ] {
        let out = live.run(&["export", &path]).await;
        out.assert_ok(&format!("export {path}"));
        assert_eq!(out.stdout, format!("<{tag}>[redacted]</{tag}>\n"), "{path}");
    }
    let out = live.run(&["export", &format!("{app}/pending/{key}")]).await;
    out.assert_ok("export of one pending consent");
    assert!(
        out.stdout.contains("<verifier>[redacted]</verifier>"),
        "{}",
        out.stdout
    );
    let out = live.run(&["export", &token]).await;
    out.assert_ok("export of the token");
    assert!(
        out.stdout
            .contains("<access_token>[redacted]</access_token>")
    );
    let secrets = [
        verifier,
        live.client_secret(),
        grant.access_token,
        grant.refresh_token,
    ];
    assert_free_of(&[out.stdout], &secrets);
}

/// The bytes of the embedded store's files (database, `-wal`, `-shm`).
fn store_bytes(db: &Path) -> Vec<(String, Vec<u8>)> {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let mut name = db.as_os_str().to_owned();
            name.push(suffix);
            std::fs::read(&name)
                .ok()
                .map(|bytes| (PathBuf::from(name).display().to_string(), bytes))
        })
        .collect()
}

fn files_containing(files: &[(String, Vec<u8>)], needle: &str) -> Vec<String> {
    files
        .iter()
        .filter(|(_, bytes)| {
            bytes
                .windows(needle.len())
                .any(|window| window == needle.as_bytes())
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// After token refreshes, no replaced token is left in the embedded
/// store's files (the write-ahead log is checkpointed and emptied, deleted rows zeroed);
/// without a key the current token is stored in plain text, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_keeps_no_old_tokens() {
    let live = Live::start(Kind::Embedded, Dialect::Fitbit, "fitbit-wal", Tuning::Fast).await;
    seed_fitbit(&live.fake, FAKE_USER);
    live.settings().await;
    live.seed_token(true).await;
    for round in 0..3 {
        live.fetch().await.assert_ok(&format!("fetch {round}"));
        live.expire_stored_token().await;
    }
    live.fetch().await.assert_ok("the last fetch");
    let issued = live.fake.issued_tokens(FAKE_USER);
    assert!(issued.len() >= 4, "{} pairs issued", issued.len());
    let current = live.token().await;
    let files = store_bytes(&live.db_path);
    let (old, newest) = issued.split_at(issued.len() - 1);
    for pair in old {
        for token in std::iter::once(&pair.access_token).chain(pair.refresh_token.as_ref()) {
            let found = files_containing(&files, token);
            assert!(found.is_empty(), "a replaced token is still in {found:?}");
        }
    }
    // Without store.key_env the token is plain text, as it always was.
    assert_eq!(text_of(&current, "access_token"), newest[0].access_token);
    assert!(!files_containing(&files, &newest[0].access_token).is_empty());
    live.assert_no_secrets();
}

/// With `store.key_env`, the embedded store's files hold no token and
/// no client secret; plain tokens from before the key are read and sealed by the next
/// write; without the key an encrypted token is a clear error, not a missing token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_encrypts_secrets_with_key_env() {
    let live = Live::start(
        Kind::Embedded,
        Dialect::Fitbit,
        "fitbit-sealed",
        Tuning::Fast,
    )
    .await;
    seed_fitbit(&live.fake, FAKE_USER);
    // Before the key: plain text.
    live.settings().await;
    auth(&live).await.assert_ok("auth");
    let before = live.token().await;
    let first = live.fake.issued_tokens(&live.fake.config().default_user);
    assert_eq!(text_of(&before, "access_token"), first[0].access_token);

    // With the key: plain tokens still work, and the next writes seal.
    live.use_store_key(Some(STORE_KEY));
    live.settings().await;
    live.fetch()
        .await
        .assert_ok("fetch with the key, plain token");
    live.expire_stored_token().await;
    live.fetch().await.assert_ok("fetch that refreshes");
    let sealed = live.token().await;
    for field in ["access_token", "refresh_token"] {
        let value = text_of(&sealed, field);
        assert!(value.starts_with("enc:v1:"), "{field} is {value}");
    }
    let secret = live
        .store()
        .get(&format!("plugindata/{}/client_secret", live.plugin))
        .await
        .expect("read")
        .expect("stored");
    assert!(
        secret.as_str().is_some_and(|s| s.starts_with("enc:v1:")),
        "{secret}"
    );
    let files = store_bytes(&live.db_path);
    assert!(!files.is_empty());
    let mut secrets = vec![live.client_secret()];
    for user in live.fake.users() {
        for pair in live.fake.issued_tokens(&user) {
            secrets.push(pair.access_token);
            secrets.extend(pair.refresh_token);
        }
    }
    assert!(secrets.len() >= 5, "{} secrets", secrets.len());
    for secret in &secrets {
        let found = files_containing(&files, secret);
        assert!(found.is_empty(), "a secret is readable in {found:?}");
    }
    let out = live.run(&["user", &live.plugin, "--user", USER]).await;
    out.assert_ok("user");
    assert!(out.stdout.contains("\"granted\": true"), "{}", out.stdout);

    // Without the key: a clear error, and the token stays as it was.
    live.use_store_key(None);
    let out = live.fetch().await;
    out.assert_failed("fetch without the key");
    let error = out.error_line();
    assert!(
        error.contains("encrypted") && error.contains("store.key_env"),
        "{error}"
    );
    assert_eq!(live.token().await, sealed);
    live.assert_no_secrets();
}

/// With `store.key_env` on the Igor store, Igor's database holds only
/// ciphertext for tokens and the client secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn igor_store_encrypts_secrets_with_key_env() {
    let plugin = format!("fitbit-sealed-{}", Kind::Igor.tag());
    let live = Live::start_with(
        Kind::Igor,
        FakeConfig::for_dialect(Dialect::Fitbit),
        &plugin,
        Tuning::Fast,
        Some(STORE_KEY),
    )
    .await;
    seed_fitbit(&live.fake, FAKE_USER);
    live.settings().await;
    auth(&live).await.assert_ok("auth");
    live.fetch().await.assert_ok("fetch");
    live.expire_stored_token().await;
    live.fetch().await.assert_ok("fetch that refreshes");
    let token = live
        .igor()
        .admin_get_ok(
            &format!("/data/identities/{USER}/plugindata/{plugin}/token"),
            "application/xml",
        )
        .await;
    let app = live
        .igor()
        .admin_get_ok(&format!("/data/plugindata/{plugin}"), "application/xml")
        .await;
    assert!(token.contains("<access_token>enc:v1:"), "{token}");
    assert!(token.contains("<refresh_token>enc:v1:"), "{token}");
    assert!(app.contains("<client_secret>enc:v1:"), "{app}");
    let mut secrets = vec![live.client_secret()];
    for user in live.fake.users() {
        for pair in live.fake.issued_tokens(&user) {
            secrets.push(pair.access_token);
            secrets.extend(pair.refresh_token);
        }
    }
    assert!(secrets.len() >= 3);
    assert_free_of(&[token, app], &secrets);
    live.assert_no_secrets();
}

/// `user --delete-token` revokes at the provider (RFC 7009, the
/// provider's client authentication), deletes the token, and reports a failed revocation
/// with exit code 1 after deleting the token all the same.
async fn delete_token_revokes_at_the_provider(dialect: Dialect) {
    let plugin = format!("{}-revoke", provider_name(dialect));
    let live = Live::start_with(
        Kind::Embedded,
        FakeConfig::for_dialect(dialect),
        &plugin,
        Tuning::Fast,
        None,
    )
    .await;
    live.settings().await;
    let grant = live.seed_token(false).await;
    let out = live
        .run(&["user", &plugin, "--user", USER, "--delete-token"])
        .await;
    out.assert_ok("user --delete-token");
    assert!(out.stderr.contains("revoked the grant"), "{}", out.stderr);
    assert!(out.stdout.contains("\"granted\": false"), "{}", out.stdout);
    let calls = live.fake.revocations();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].token, grant.refresh_token);
    assert_eq!(calls[0].token_type_hint.as_deref(), Some("refresh_token"));
    assert!(calls[0].client_authenticated, "{calls:?}");
    assert_eq!(calls[0].revoked_user.as_deref(), Some(FAKE_USER));
    let stored = live.store().get(&live.token_path()).await.expect("read");
    assert_eq!(stored, None, "the token is deleted");

    // The provider fails: the token is deleted here anyway, and the command says so.
    live.seed_token(false).await;
    live.fake.fail_revocations(Some(503));
    let out = live
        .run(&["user", &plugin, "--user", USER, "--delete-token"])
        .await;
    out.assert_failed("user --delete-token when the provider fails");
    let error = out.error_line();
    assert!(
        error.contains("is deleted here") && error.contains("did not confirm the revocation"),
        "{error}"
    );
    assert_eq!(live.fake.revocations().len(), 2);
    let stored = live.store().get(&live.token_path()).await.expect("read");
    assert_eq!(
        stored, None,
        "the token is deleted although revocation failed"
    );
    live.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_token_revokes_at_the_provider_fitbit() {
    delete_token_revokes_at_the_provider(Dialect::Fitbit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_token_revokes_at_the_provider_google() {
    delete_token_revokes_at_the_provider(Dialect::Google).await;
}

/// A provider without `auth.revoke_url` (Withings): the token is deleted. So it is when
/// the refresh lock cannot be taken (the lock directory is a file), and the log says
/// that it was deleted without the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_token_without_revocation_endpoint_just_deletes() {
    let live = Live::start(
        Kind::Embedded,
        Dialect::Withings,
        "withings-revoke",
        Tuning::Fast,
    )
    .await;
    live.settings().await;
    for (case, said) in [
        ("user --delete-token", "has no revocation endpoint"),
        (
            "user --delete-token without the refresh lock",
            "without the refresh lock",
        ),
    ] {
        live.seed_token(false).await;
        if said == "without the refresh lock" {
            let locks = live.dir.path().join("locks");
            let _ = std::fs::remove_dir_all(&locks);
            std::fs::write(&locks, "not a directory").expect("a file where the locks go");
        }
        let out = live
            .run(&["user", &live.plugin, "--user", USER, "--delete-token"])
            .await;
        out.assert_ok(case);
        assert!(out.stderr.contains(said), "{case}: {}", out.stderr);
        assert!(live.fake.revocations().is_empty(), "{case}");
        let stored = live.store().get(&live.token_path()).await.expect("read");
        assert_eq!(stored, None, "{case}: the token is deleted");
    }
}

/// `userSettings?deleteToken=1` (and `delete=1`) revokes through the same
/// code path; a failed revocation answers 502 and the token is deleted all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_delete_token_revokes_at_the_provider() {
    let live = Live::start(
        Kind::Embedded,
        Dialect::Fitbit,
        "fitbit-srevoke",
        Tuning::Fast,
    )
    .await;
    live.settings().await;
    let grant = live.seed_token(false).await;
    let serve = Serve::start(&live).await;
    let target = format!(
        "/plugin/{}/userSettings?user={USER}&deleteToken=1",
        live.plugin
    );
    let (status, body) = serve.get(&target).await;
    assert_eq!(status, 200, "{body}");
    let calls = live.fake.revocations();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].token, grant.refresh_token);
    assert!(calls[0].client_authenticated);
    assert_eq!(
        live.store().get(&live.token_path()).await.expect("read"),
        None
    );

    live.seed_token(false).await;
    live.fake.fail_revocations(Some(400));
    let (status, body) = serve.get(&target).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("did not confirm the revocation"), "{body}");
    assert_eq!(
        live.store().get(&live.token_path()).await.expect("read"),
        None
    );

    // Deleting the whole user ends the grant at the provider too.
    live.fake.fail_revocations(None);
    let grant = live.seed_token(false).await;
    let (status, body) = serve
        .get(&format!(
            "/plugin/{}/userSettings?user={USER}&delete=1",
            live.plugin
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let calls = live.fake.revocations();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(calls[2].token, grant.refresh_token);
    assert_eq!(calls[2].revoked_user.as_deref(), Some(FAKE_USER));
    assert_eq!(
        live.store().get(&live.token_path()).await.expect("read"),
        None
    );
    serve.stop(&live).await;
    live.assert_no_secrets();
}

// ---------------------------------------------------------------------------------------
// History: archive, sync, backfill
// ---------------------------------------------------------------------------------------

/// The clock of the history tests: noon on the last day of the history.
const HISTORY_NOW: &str = "2026-11-30T12:00:00Z";

/// Raises the copied Fitbit provider's hourly budget, so that a year of one-day windows
/// runs in seconds (the shipped budget, 150 calls an hour, is tested on its own).
fn roomy_budget(live: &Live) {
    let file = live.dir.path().join("providers/fitbit.yaml");
    let text = std::fs::read_to_string(&file).expect("read the provider copy");
    let patched = text.replacen(
        "- { limit: 150, per_seconds: 3600, scope: user }",
        "- { limit: 5000, per_seconds: 3600, scope: user }",
        1,
    );
    assert_ne!(patched, text, "the Fitbit budget line moved");
    std::fs::write(&file, patched).expect("write the provider copy");
}

/// A weight log on `day` with a log id of its own.
fn weight_log(day: &str, kg: f64) -> Value {
    let id: i64 = day.replace('-', "").parse::<i64>().expect("a date") * 100;
    json!({"bmi": 23.5, "date": day, "logId": id, "source": "Aria", "time": "07:00:00", "weight": kg})
}

fn days_from(first: &str, count: i64) -> Vec<String> {
    let first = chrono::NaiveDate::parse_from_str(first, "%Y-%m-%d").expect("a date");
    (0..count)
        .map(|i| (first + chrono::Duration::days(i)).to_string())
        .collect()
}

impl Live {
    /// The archive of the test's embedded store.
    fn archive(&self) -> SqliteStore {
        SqliteStore::open(&self.db_path).expect("open the archive")
    }

    async fn archived(&self, output: &str) -> Vec<Value> {
        use healthpull::store::Archive as _;
        self.archive()
            .entries(
                &self.plugin,
                USER,
                output,
                healthpull::store::archive::Select::Since(None),
            )
            .await
            .expect("read the archive")
            .into_iter()
            .map(|e| e.value)
            .collect()
    }

    /// The dates the fake was asked for weight logs, as `start/end` pairs.
    fn weight_windows(&self) -> Vec<String> {
        self.fake
            .requests_to("/1/user/-/body/log/weight/date/")
            .iter()
            .map(|r| {
                r.path
                    .trim_start_matches("/1/user/-/body/log/weight/date/")
                    .trim_end_matches(".json")
                    .to_owned()
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_killed_again_and_again_ends_with_every_entry_once() {
    let live = Live::start(Kind::Embedded, Dialect::Fitbit, "hkill", Tuning::Fast).await;
    roomy_budget(&live);
    live.register_app().await;
    live.seed_token(false).await;
    live.fake.set_rate_limit(None);
    let plugin = live.plugin.clone();
    live.run(&[
        "user",
        &plugin,
        "--user",
        USER,
        "--set",
        "resource=activities/heart",
        "--set",
        "detail_level=15min",
    ])
    .await
    .assert_ok("the user's defaults");
    let since = "2025-12-01";
    let args = [
        "--now",
        HISTORY_NOW,
        "backfill",
        &plugin,
        "--user",
        USER,
        "--since",
        since,
        "--methods",
        "intraday_time_series",
    ];
    let mut kills = 0;
    let mut rounds = 0;
    while kills < 5 {
        rounds += 1;
        assert!(
            rounds < 40,
            "the backfill ended before it was killed five times"
        );
        let mut child = live.spawn(&args);
        let wait = 200 + rand::random::<u64>() % 500;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if child.try_wait().expect("poll the backfill").is_some() {
            break;
        }
        child.start_kill().expect("SIGKILL the backfill");
        child.wait().await.expect("reap the backfill");
        kills += 1;
    }
    assert!(kills >= 5, "killed {kills} times only");
    live.run(&args)
        .await
        .assert_ok("the backfill after the kills");

    // Every day once at the fake, but for the window each kill cut short.
    let mut asked: std::collections::BTreeMap<String, usize> = Default::default();
    for r in live.fake.requests_to("/1/user/-/activities/heart/date/") {
        let day = r.path["/1/user/-/activities/heart/date/".len()..][..10].to_owned();
        *asked.entry(day).or_default() += 1;
    }
    let days = days_from(since, 365);
    for day in &days {
        assert!(asked.contains_key(day), "{day} was never asked for");
    }
    let twice = asked.values().filter(|n| **n > 1).count();
    assert!(
        twice <= kills && asked.values().all(|n| *n <= 2),
        "windows fetched again after they were archived: {twice} days twice after {kills} kills"
    );
    // The archive holds each point of every day once.
    let points = live.archived("heart-rate").await;
    let mut seen = BTreeSet::new();
    for p in &points {
        let key = format!("{}T{}", text_of(p, "dateTime"), text_of(p, "time"));
        assert!(seen.insert(key.clone()), "{key} archived twice");
    }
    assert_eq!(points.len(), 365 * 96, "every 15-minute point of the year");
    // A further backfill asks for nothing.
    live.fake.clear_requests();
    let out = live.run(&args).await;
    out.assert_ok("a finished backfill again");
    assert!(out.stdout.contains(": 0 request(s)"), "{}", out.stdout);
    assert!(live.fake.requests_to("/1/user/-/activities/").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_fetches_the_settling_window_again_and_nothing_older() {
    let live = Live::start(Kind::Embedded, Dialect::Fitbit, "hsettle", Tuning::Fast).await;
    live.register_app().await;
    live.seed_token(false).await;
    let plugin = live.plugin.clone();
    let mut logs: Vec<Value> = days_from("2026-10-20", 38)
        .iter()
        .map(|d| weight_log(d, 80.0))
        .collect();
    live.fake.seed_fitbit_weight(FAKE_USER, logs.clone());
    let backfill = [
        "--now",
        HISTORY_NOW,
        "backfill",
        &plugin,
        "--user",
        USER,
        "--since",
        "2026-10-20",
        "--methods",
        "get_bodyweight",
    ];
    let out = live.run(&backfill).await;
    out.assert_ok("the backfill");
    assert!(out.stdout.contains("2 request(s)"), "{}", out.stdout);
    assert_eq!(live.archived("body-weight").await.len(), 38);

    // Late uploads: one inside the two settling days, one long settled.
    logs.push(weight_log("2026-11-29", 79.0));
    logs.push(json!({"date": "2026-11-10", "logId": 999, "time": "21:00:00", "weight": 81.0}));
    logs[0]["weight"] = json!(80.5);
    live.fake.seed_fitbit_weight(FAKE_USER, logs);
    live.fake.clear_requests();
    let sync = [
        "--now",
        HISTORY_NOW,
        "sync",
        &plugin,
        "--user",
        USER,
        "--methods",
        "get_bodyweight",
    ];
    let out = live.run(&sync).await;
    out.assert_ok("the sync");
    assert_eq!(live.weight_windows(), ["2026-11-28/2026-11-30"]);
    let archived = live.archived("body-weight").await;
    let days: Vec<String> = archived.iter().map(|e| text_of(e, "dateTime")).collect();
    assert!(
        days.contains(&"2026-11-29".to_owned()),
        "the late upload is archived"
    );
    assert!(
        !archived.iter().any(|e| e["logId"] == json!(999)),
        "a settled day is not asked again"
    );
    assert_eq!(
        archived[0]["value"],
        json!(80.0),
        "a settled day keeps its value"
    );
    assert_eq!(archived.len(), 39, "nothing doubled");
    assert!(
        out.stderr
            .contains("get_bodyweight: ok, 1 window(s): 1 added, 0 changed, 0 unchanged"),
        "{}",
        out.stderr
    );
    // Read back: CSV from a day on, and the whole output as Igor XML.
    let out = live
        .run(&[
            "history",
            &plugin,
            "--user",
            USER,
            "--output",
            "body-weight",
            "--since",
            "2026-11-26",
        ])
        .await;
    out.assert_ok("history as CSV");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0], "value,dateTime,time,bmi,logId,source",
        "{}",
        out.stdout
    );
    assert_eq!(lines.len(), 3, "the 26th and the 29th: {}", out.stdout);
    assert!(lines[1].contains(",2026-11-26,07:00:00,") && lines[2].contains(",2026-11-29,"));
    let out = live
        .run(&[
            "history",
            &plugin,
            "--user",
            USER,
            "--output",
            "body-weight",
            "--format",
            "xml",
        ])
        .await;
    out.assert_ok("history as XML");
    assert!(
        out.stdout.starts_with("<jack><body-weight><value>"),
        "{}",
        out.stdout
    );
    assert_eq!(out.stdout.matches("<body-weight>").count(), 39);
    let out = live
        .run(&[
            "history",
            &plugin,
            "--user",
            USER,
            "--output",
            "body-weight",
            "--format",
            "yaml",
        ])
        .await;
    assert_eq!(
        out.code,
        Some(1),
        "an unknown format is refused: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("use csv, jsonl or xml"),
        "{}",
        out.stderr
    );
    // Forgotten: nothing archived is left for the user, the token stays.
    let out = live
        .run(&["user", &plugin, "--user", USER, "--forget-history"])
        .await;
    out.assert_ok("user --forget-history");
    assert!(
        out.stderr.contains("removed the archived history"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("\"granted\": true"), "{}", out.stdout);
    assert!(
        live.archived("body-weight").await.is_empty(),
        "nothing archived"
    );
    let out = live
        .run(&[
            "history",
            &plugin,
            "--user",
            USER,
            "--output",
            "body-weight",
        ])
        .await;
    out.assert_ok("history after forgetting");
    assert_eq!(
        out.stdout.lines().count(),
        1,
        "the header only: {}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_window_is_fetched_again_and_nothing_maps_to_no_data() {
    let live = Live::start(Kind::Embedded, Dialect::Fitbit, "hfail", Tuning::Fast).await;
    live.register_app().await;
    live.seed_token(false).await;
    let plugin = live.plugin.clone();
    let logs: Vec<Value> = days_from("2026-09-01", 91)
        .iter()
        .map(|d| weight_log(d, 80.0))
        .collect();
    live.fake.seed_fitbit_weight(FAKE_USER, logs);
    // The newest window is asked for first: its three attempts fail.
    live.fake
        .inject_fault("/1/user/-/body/log/weight", Fault::Status(500), 3);
    let backfill = [
        "--now",
        HISTORY_NOW,
        "backfill",
        &plugin,
        "--user",
        USER,
        "--since",
        "2026-09-01",
        "--methods",
        "get_bodyweight",
    ];
    let out = live.run(&backfill).await;
    out.assert_failed("a backfill with a failed window");
    assert!(
        out.stderr.contains("get_bodyweight: partial, 2 window(s)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("failed 2026-11-02..2026-11-30: fitbit get_bodyweight"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("HTTP 500"), "{}", out.stderr);
    let archived = live.archived("body-weight").await;
    assert_eq!(
        archived.len(),
        62,
        "the two windows that succeeded are kept"
    );
    assert!(
        archived
            .iter()
            .all(|e| text_of(e, "dateTime").as_str() < "2026-11-02")
    );
    let tree_before = live.export(&live.sensors_path()).await;

    // The next sync asks for the failed days again, and the settling ones.
    live.fake.clear_requests();
    let sync = [
        "--now",
        HISTORY_NOW,
        "sync",
        &plugin,
        "--user",
        USER,
        "--methods",
        "get_bodyweight",
    ];
    live.run(&sync)
        .await
        .assert_ok("the sync after the failure");
    assert_eq!(live.weight_windows(), ["2026-11-02/2026-11-30"]);
    assert_eq!(live.archived("body-weight").await.len(), 91);

    // A method that maps nothing, and a day without logs, change nothing.
    let tree = live.export(&live.sensors_path()).await;
    assert_ne!(tree, tree_before);
    for (methods, set) in [
        ("get_meals", None),
        ("get_bodyweight", Some("base_date=2024-06-01")),
    ] {
        let mut args = vec![
            "--now",
            HISTORY_NOW,
            "fetch",
            &plugin,
            "--user",
            USER,
            "--methods",
            methods,
        ];
        args.extend(set.iter().flat_map(|s| ["--set", *s]));
        let out = live.run(&args).await;
        out.assert_ok(methods);
        assert_eq!(
            live.export(&live.sensors_path()).await,
            tree,
            "{methods} changed the tree"
        );
        assert_eq!(
            live.archived("body-weight").await.len(),
            91,
            "{methods} changed the archive"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn igor_shows_the_merged_recent_window_after_two_syncs() {
    let live = Live::start(Kind::Igor, Dialect::Fitbit, "hkeep", Tuning::Fast).await;
    // The tree shows the last seven days of the archive.
    let config = std::fs::read_to_string(&live.config_path).expect("read the config");
    let config = config.replacen("    provider: ", "    keep: {days: 7}\n    provider: ", 1);
    std::fs::write(&live.config_path, config).expect("write the config");
    live.register_app().await;
    live.seed_token(false).await;
    let plugin = live.plugin.clone();
    let logs: Vec<Value> = days_from("2026-11-10", 21)
        .iter()
        .enumerate()
        .map(|(i, d)| weight_log(d, 80.0 - i as f64 / 10.0))
        .collect();
    live.fake.seed_fitbit_weight(FAKE_USER, logs);
    for now in ["2026-11-27T12:00:00Z", HISTORY_NOW] {
        live.run(&[
            "--now",
            now,
            "sync",
            &plugin,
            "--user",
            USER,
            "--methods",
            "get_bodyweight",
        ])
        .await
        .assert_ok(now);
    }
    // The first sync archived the 25th to the 27th, the second the 25th to the 30th.
    let tree = live.export(&live.sensors_path()).await;
    let dates: Vec<&str> = tree
        .match_indices("<dateTime>")
        .map(|(i, _)| &tree[i + "<dateTime>".len()..i + "<dateTime>".len() + 10])
        .collect();
    assert_eq!(
        dates,
        [
            "2026-11-25",
            "2026-11-26",
            "2026-11-27",
            "2026-11-28",
            "2026-11-29",
            "2026-11-30"
        ],
        "{tree}"
    );
    let archive = live.dir.path().join("healthpull-archive.sqlite");
    assert!(
        archive.exists(),
        "the archive lives in a file beside the config"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_and_a_cli_fetch_share_the_users_budget_and_double_nothing() {
    let live = Live::start(Kind::Embedded, Dialect::Fitbit, "hshare", Tuning::Fast).await;
    // Four calls an hour for the user, counted across processes.
    let file = live.dir.path().join("providers/fitbit.yaml");
    let text = std::fs::read_to_string(&file).expect("read the provider copy");
    let patched = text.replacen(
        "- { limit: 150, per_seconds: 3600, scope: user }",
        "- { limit: 4, per_seconds: 3600, scope: user }",
        1,
    );
    assert_ne!(patched, text, "the Fitbit budget line moved");
    std::fs::write(&file, patched).expect("write the provider copy");
    let mut config = std::fs::read_to_string(&live.config_path).expect("read the config");
    config.push_str("schedule: {enabled: true, interval_seconds: 3600, jitter_seconds: 0}\n");
    std::fs::write(&live.config_path, config).expect("write the config");
    live.register_app().await;
    live.seed_token(false).await;
    live.fake.set_rate_limit(None);
    let today = Utc::now().date_naive();
    let first = today - chrono::Duration::days(180);
    let logs: Vec<Value> = days_from(&first.to_string(), 181)
        .iter()
        .map(|d| weight_log(d, 80.0))
        .collect();
    live.fake.seed_fitbit_weight(FAKE_USER, logs);

    let serve = Serve::start(&live).await;
    // Six windows of 31 days asked at once with the schedule's sync of the last days.
    let plugin = live.plugin.clone();
    let (start, end) = (format!("base_date={first}"), format!("end_date={today}"));
    let out = live
        .run(&[
            "fetch",
            &plugin,
            "--user",
            USER,
            "--methods",
            "get_bodyweight",
            "--set",
            &start,
            "--set",
            &end,
        ])
        .await;
    wait_until(Duration::from_secs(30), "the scheduled sync", || {
        serve
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains("Scheduled fetch")
    })
    .await;
    serve.stop(&live).await;
    assert!(
        out.stderr.contains("rate budget exhausted"),
        "the fetch ran into the shared budget: {}",
        out.stderr
    );
    let asked = live.weight_windows().len();
    assert!(
        asked <= 4,
        "{asked} calls against a budget of 4 shared by two processes"
    );
    let archived = live.archived("body-weight").await;
    let ids: BTreeSet<String> = archived.iter().map(|e| e["logId"].to_string()).collect();
    assert_eq!(ids.len(), archived.len(), "an entry archived twice");
}
