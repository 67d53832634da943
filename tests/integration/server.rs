//! Tests: `healthpull serve`, always as a separate process reached over real
//! HTTP, backed by the fake OAuth2 provider (`support::fake_provider`).
//!
//! Each test writes a temporary config (embedded store or a real Igor, the `fitbit`
//! plugin with its URLs pointed at the fake), runs `healthpull serve --listen
//! 127.0.0.1:0`, reads the address from its `healthpull listening on http://ADDR` line
//! and talks to it like Igor, a browser or a script would. The process is killed when
//! its [`Server`] is dropped.
//!
//! What is covered:
//! * the fetch entry point: 200 as XML (default) and JSON (`Accept`), per-user defaults
//!   and query overrides, 400 without `user`, 403 without app registration or token,
//!   409 when consent is needed again, 502 naming provider, method and status, 429 when
//!   our own rate budget is spent; `/plugin/<p>/status` (JSON) and `/metrics`
//!   (Prometheus text), with each method's covered days, last run and backfill progress
//!   after syncs, a backfill and a failed sync, and the schedule's next due time;
//! * `auth1` (303 to the provider with an unguessable state and PKCE) and `auth2`
//!   (wrong, used and expired states refused without touching the stored token);
//! * `settings` and `userSettings` with the old plugin's parameters, `returnTo` limited
//!   to local paths, form tokens and cross-site refusal;
//! * credentials (Bearer and Basic) on every entry point but `auth2`, and no listening
//!   beyond loopback without them (server_hardening checks that it is refused before binding);
//! * graceful shutdown: SIGTERM while a slow fetch runs lets it finish and be stored;
//! * the setup page in headless Chromium (`support::browser`): register, create a user,
//!   consent through the fake's HTML page, see "granted"; after a fetch, the last run
//!   of each method and an SVG plot of each output; a cross-site form is refused;
//! * a real Igor (igor-iot 0.99.1) whose action, installed by `healthpull igor-install`,
//!   calls the server and fills `sensors/fitbit/jack` through the Igor store;
//! * load: 200 concurrent fetches for 50 users with expired tokens, one refresh per user.
//!
//! No server output may contain the client secret or a token the fake issued.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::Utc;
use healthpull::store::{SqliteStore, Store};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::support::browser::Browser;
use crate::support::env::{healthpull_bin, root};
use crate::support::fake_provider::{FakeConfig, FakeProvider, Fault, IssueKind};
use crate::support::igor::{Igor, IgorOptions};

/// The longest the server may take to start or stop, and any other single wait.
pub(crate) const WAIT: Duration = Duration::from_secs(60);
/// The plugin every test serves.
pub(crate) const PLUGIN: &str = "fitbit";
/// The Igor user most tests fetch for.
pub(crate) const USER: &str = "jack";
/// The day the seeded Fitbit data is on.
pub(crate) const DAY: &str = "2024-01-15";
/// Environment variables the server reads secrets from.
const ADMIN_TOKEN_ENV: &str = "HP_SRV_ADMIN_TOKEN";
const BASIC_PASSWORD_ENV: &str = "HP_SRV_BASIC_PASSWORD";
const IGOR_PASSWORD_ENV: &str = "HP_SRV_IGOR_PASSWORD";
const IGOR_ADMIN_ENV: &str = "HP_SRV_IGOR_ADMIN_PASSWORD";
/// The credentials of the access-control tests.
const ADMIN_TOKEN: &str = "srv-admin-token-4f1c9a7e2b";
const BASIC_USER: &str = "keeper";
const BASIC_PASSWORD: &str = "srv-basic-password-93d1";

pub(crate) fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string is JSON")
}

// ---------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------

/// A running `healthpull serve`; killed when dropped.
pub(crate) struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub(crate) url: String,
    log: Arc<Mutex<String>>,
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Runs `healthpull [global...] serve --listen 127.0.0.1:0` and waits (bounded) for
    /// the address it prints.
    pub(crate) async fn start(
        config: &Path,
        cwd: &Path,
        env: &[(String, String)],
        global: &[&str],
    ) -> Server {
        let mut args = global.to_vec();
        args.extend(["serve", "--listen", "127.0.0.1:0"]);
        Server::start_with(config, cwd, env, &args).await
    }

    /// Runs `healthpull --config CONFIG ARGS...` and waits (bounded) for the address the
    /// server prints.
    pub(crate) async fn start_with(
        config: &Path,
        cwd: &Path,
        env: &[(String, String)],
        args: &[&str],
    ) -> Server {
        let mut child = Command::new(healthpull_bin())
            .arg("--config")
            .arg(config)
            .args(args)
            .current_dir(cwd)
            .env("HEALTHPULL_LOG", "debug")
            .env("NO_COLOR", "1")
            .env("TZ", "UTC")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start healthpull serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let crate::support::serve_log::Followed {
            log,
            url: rx,
            reader,
        } = crate::support::serve_log::follow(stderr);
        let mut server = Server {
            child,
            url: String::new(),
            log,
            reader: Some(reader),
        };
        match tokio::time::timeout(WAIT, rx).await {
            Ok(Ok(url)) => {
                assert!(url.starts_with("http://127.0.0.1:"), "{url}");
                server.url = url;
                server
            }
            Ok(Err(_)) => {
                server.finish_log().await;
                panic!(
                    "healthpull serve exited before listening:\n{}",
                    server.log()
                )
            }
            Err(_) => panic!(
                "healthpull serve did not listen within {WAIT:?}:\n{}",
                server.log()
            ),
        }
    }

    /// Everything the server wrote to stderr so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn finish_log(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(WAIT, reader).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("the server is running")
    }

    /// Sends SIGTERM and waits (bounded) for the exit; returns the exit code.
    pub(crate) async fn terminate(&mut self) -> Option<i32> {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the server did not stop within {WAIT:?}:\n{}", self.log()))
            .expect("wait for the server");
        self.finish_log().await;
        status.code()
    }
}

// ---------------------------------------------------------------------------------------
// One test's world: the fake, a config, the server
// ---------------------------------------------------------------------------------------

/// How to set a world up.
#[derive(Default)]
pub(crate) struct Setup {
    /// The fake's configuration (Fitbit defaults when `None`).
    pub(crate) fake: Option<FakeConfig>,
    /// Require credentials (admin token and Basic).
    pub(crate) access: bool,
    /// Use this Igor (URL, service user, password) instead of the embedded store.
    pub(crate) igor: Option<(String, String, String)>,
    /// Serve a copy of `providers/fitbit.yaml` with this text replaced.
    pub(crate) patch: Option<(&'static str, &'static str)>,
    /// More top-level config keys (YAML), appended to the config file.
    pub(crate) extra_config: String,
}

/// An answer, read in full.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) location: Option<String>,
    www_authenticate: Option<String>,
    /// Every header, for the header checks.
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: String,
}

pub(crate) struct World {
    pub(crate) fake: FakeProvider,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config_path: PathBuf,
    db_path: PathBuf,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) server: Server,
    pub(crate) http: reqwest::Client,
}

pub(crate) fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(WAIT)
        .no_proxy()
        .build()
        .expect("build an HTTP client")
}

impl World {
    pub(crate) async fn start(setup: Setup) -> World {
        let fake = FakeProvider::start(setup.fake.clone().unwrap_or_else(FakeConfig::fitbit)).await;
        let dir = tempfile::Builder::new()
            .prefix("healthpull-serve-")
            .tempdir()
            .expect("create a temporary directory");
        let providers = match setup.patch {
            None => root().join("providers"),
            Some((from, to)) => {
                let out = dir.path().join("providers");
                std::fs::create_dir_all(&out).expect("create the providers directory");
                let text = std::fs::read_to_string(root().join("providers/fitbit.yaml"))
                    .expect("read providers/fitbit.yaml");
                let patched = text.replacen(from, to, 1);
                assert_ne!(patched, text, "fitbit.yaml has no {from:?} to patch");
                std::fs::write(out.join("fitbit.yaml"), patched).expect("write the copy");
                out
            }
        };
        let db_path = dir.path().join("store/healthpull.db");
        let mut env = Vec::new();
        let store = match &setup.igor {
            None => format!(
                "store:\n  kind: embedded\n  path: {}\n",
                quoted(db_path.to_str().expect("UTF-8 path"))
            ),
            Some((url, user, password)) => {
                env.push((IGOR_PASSWORD_ENV.to_owned(), password.clone()));
                format!(
                    "store:\n  kind: igor\n  url: {}\n  username: {}\n  password_env: {IGOR_PASSWORD_ENV}\n",
                    quoted(url),
                    quoted(user)
                )
            }
        };
        let access = if setup.access {
            env.push((ADMIN_TOKEN_ENV.to_owned(), ADMIN_TOKEN.to_owned()));
            env.push((BASIC_PASSWORD_ENV.to_owned(), BASIC_PASSWORD.to_owned()));
            format!(
                "access:\n  admin_token_env: {ADMIN_TOKEN_ENV}\n  basic_user: {BASIC_USER}\n  basic_password_env: {BASIC_PASSWORD_ENV}\n"
            )
        } else {
            String::new()
        };
        let config = format!(
            "providers_dir: {providers}\n{store}lock_dir: {locks}\n{access}plugins:\n  {PLUGIN}:\n    provider: fitbit\n    authorize_url: {authorize}\n    token_url: {token}\n    base_url: {base}\n    revoke_url: {revoke}\n",
            providers = quoted(providers.to_str().expect("UTF-8 path")),
            locks = quoted(dir.path().join("locks").to_str().expect("UTF-8 path")),
            authorize = quoted(&fake.authorize_url()),
            token = quoted(&fake.token_url()),
            base = quoted(&fake.base_url()),
            revoke = quoted(&fake.revoke_url()),
        ) + &setup.extra_config;
        let config_path = dir.path().join("healthpull.yaml");
        std::fs::write(&config_path, config).expect("write the config file");
        let server = Server::start(&config_path, dir.path(), &env, &[]).await;
        World {
            fake,
            dir,
            config_path,
            db_path,
            env,
            server,
            http: client(),
        }
    }

    /// Another server on the same config and store, with extra global arguments.
    pub(crate) async fn second_server(&self, global: &[&str]) -> Server {
        Server::start(&self.config_path, self.dir.path(), &self.env, global).await
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url)
    }

    pub(crate) async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("send a request to the server");
        let header = |name: reqwest::header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE).unwrap_or_default();
        let location = header(reqwest::header::LOCATION);
        let www_authenticate = header(reqwest::header::WWW_AUTHENTICATE);
        let headers = response.headers().clone();
        let status = response.status().as_u16();
        let body = response.text().await.expect("read the answer");
        Reply {
            status,
            content_type,
            location,
            www_authenticate,
            headers,
            body,
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.get_with(path, &[]).await
    }

    pub(crate) async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = self.http.get(self.url(path));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        self.send(request).await
    }

    pub(crate) async fn post_form(
        &self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Reply {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut request = self
            .http
            .post(self.url(path))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        self.send(request).await
    }

    /// The embedded store, opened beside the server (SQLite in WAL mode allows that).
    pub(crate) fn store(&self) -> SqliteStore {
        SqliteStore::open(&self.db_path).expect("open the embedded store")
    }

    pub(crate) async fn stored(&self, path: &str) -> Option<Value> {
        self.store().get(path).await.expect("read the store")
    }

    pub(crate) async fn token(&self, user: &str) -> Option<Value> {
        self.stored(&format!("identities/{user}/plugindata/{PLUGIN}/token"))
            .await
    }

    /// The app registration through the old `settings` entry point (GET, like Igor's page).
    pub(crate) async fn register_app(&self) {
        let config = self.fake.config();
        let path = format!(
            "/plugin/{PLUGIN}/settings?client_id={}&client_secret={}",
            config.client_id, config.client_secret
        );
        let reply = self.get(&path).await;
        assert_eq!(reply.status, 200, "settings: {reply:?}");
    }

    /// A consent for `user` through `auth1`, the fake (which consents at once) and
    /// `auth2`; returns the `auth2` target the provider redirected to.
    pub(crate) async fn grant(&self, user: &str) -> String {
        let reply = self
            .get(&format!("/plugin/{PLUGIN}/auth1?user={user}"))
            .await;
        assert_eq!(reply.status, 303, "auth1: {reply:?}");
        let consent = reply.location.expect("auth1 redirects");
        let back = self.send(self.http.get(&consent)).await;
        assert_eq!(back.status, 302, "the fake's consent: {back:?}");
        let callback = back.location.expect("the fake redirects back");
        let target = callback
            .strip_prefix(&self.server.url)
            .unwrap_or_else(|| panic!("the callback {callback} is not on {}", self.server.url))
            .to_owned();
        let reply = self.get(&target).await;
        assert_eq!(reply.status, 200, "auth2: {reply:?}");
        assert_eq!(reply.body, "ok\n", "auth2 answers scripts with ok");
        target
    }

    /// The form token of the setup page.
    pub(crate) async fn csrf(&self, headers: &[(&str, &str)]) -> String {
        let page = self
            .get_with(&format!("/plugin/{PLUGIN}/page/setup.html"), headers)
            .await;
        assert_eq!(page.status, 200, "{page:?}");
        form_token(&page.body)
    }

    /// Seeds the Fitbit weight and fat logs of the fake's default user on [`DAY`].
    pub(crate) fn seed_data(&self) {
        let user = self.fake.config().default_user;
        self.fake.seed_fitbit_weight(
            &user,
            vec![json!({
                "bmi": 23.57, "date": DAY, "logId": 1_705_303_950_000i64,
                "source": "Aria", "time": "07:12:30", "weight": 75.3
            })],
        );
        self.fake.seed_fitbit_fat(
            &user,
            vec![json!({
                "date": DAY, "fat": 21.4, "logId": 1_705_303_950_001i64,
                "source": "Aria", "time": "07:12:30"
            })],
        );
    }

    /// Every secret the test world knows: the client secret and every issued token.
    fn secrets(&self) -> Vec<String> {
        let mut secrets = vec![self.fake.config().client_secret];
        for user in self.fake.users() {
            for issued in self.fake.issued_tokens(&user) {
                secrets.push(issued.access_token);
                secrets.extend(issued.refresh_token);
            }
        }
        secrets
    }

    /// No secret in the server's output.
    fn assert_no_secrets_in(&self, what: &str, text: &str) {
        for (i, secret) in self.secrets().iter().enumerate() {
            assert!(
                secret.is_empty() || !text.contains(secret.as_str()),
                "secret #{i} appears in {what}:\n{}",
                text.replace(secret.as_str(), "<<SECRET>>")
            );
        }
    }

    pub(crate) fn assert_no_secrets(&self) {
        let log = self.server.log();
        assert!(log.contains("Answered"), "the request log is on:\n{log}");
        self.assert_no_secrets_in("the server log", &log);
    }
}

/// The value of the first `_csrf` hidden input of a page.
pub(crate) fn form_token(page: &str) -> String {
    let marker = "name=\"_csrf\" value=\"";
    let start = page.find(marker).expect("the page has a form token") + marker.len();
    let end = page[start..].find('"').expect("a closed attribute") + start;
    page[start..end].to_owned()
}

fn query_pairs(url: &str) -> Vec<(String, String)> {
    url::Url::parse(url)
        .expect("a URL")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Waits until `check` holds, polling every 100 ms, for at most `limit`.
pub(crate) async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of a Prometheus sample line `name{labels} value`.
pub(crate) fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

// ---------------------------------------------------------------------------------------
// 1. The fetch entry point, status and metrics
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_answers_and_every_error_status() {
    let world = World::start(Setup::default()).await;
    let fetch = format!("/plugin/{PLUGIN}?user={USER}&methods=get_bodyweight&base_date={DAY}");

    // 400 without a user; 404 for an unknown plugin.
    let reply = world.get(&format!("/plugin/{PLUGIN}")).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.body.starts_with("400 "), "{reply:?}");
    assert!(
        reply.body.contains("user argument is required"),
        "{reply:?}"
    );
    let reply = world.get(&format!("/plugin/{PLUGIN}?user=")).await;
    assert_eq!(reply.status, 400, "an empty user: {reply:?}");
    let reply = world.get("/plugin/nosuch?user=jack").await;
    assert_eq!(reply.status, 404, "{reply:?}");

    // 403 without the app registration, for the fetch and for auth1.
    let reply = world.get(&fetch).await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert!(reply.body.starts_with("403 "), "{reply:?}");
    assert!(reply.body.contains("no app registration"), "{reply:?}");
    let reply = world
        .get(&format!("/plugin/{PLUGIN}/auth1?user={USER}"))
        .await;
    assert_eq!(reply.status, 403, "auth1 without the app: {reply:?}");
    assert!(reply.body.contains("not registered"), "{reply:?}");

    // 403 without the user's token.
    world.register_app().await;
    let reply = world.get(&fetch).await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert!(
        reply.body.contains("has not granted") && reply.body.contains(USER),
        "{reply:?}"
    );
    assert!(
        world.fake.requests_to("/1/").is_empty(),
        "nothing was asked"
    );

    // 200 as XML by default.
    world.grant(USER).await;
    world.seed_data();
    let reply = world.get(&fetch).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply.content_type.starts_with("application/xml"),
        "{reply:?}"
    );
    assert!(
        reply.body.starts_with(&format!("<{USER}>")),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("<body-weight>"), "{}", reply.body);
    assert!(reply.body.contains("75.3"), "{}", reply.body);
    let xml = reply.body.clone();

    // 200 as JSON when asked, the same data as stored.
    let reply = world
        .get_with(&fetch, &[("Accept", "application/json")])
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.content_type, "application/json", "{reply:?}");
    let tree: Value = serde_json::from_str(&reply.body).expect("a JSON answer");
    let weight = &tree["body-weight"];
    assert!(weight.is_array(), "{tree}");
    assert!(reply.body.contains("75.3"), "{}", reply.body);
    let stored = world
        .stored(&format!("sensors/{PLUGIN}/{USER}"))
        .await
        .expect("the fetch was stored");
    assert!(stored.get("body-weight").is_some(), "{stored}");
    let exported = world
        .store()
        .export_xml(&format!("sensors/{PLUGIN}/{USER}"))
        .await
        .expect("export")
        .expect("stored");
    assert_eq!(
        exported.trim_end(),
        xml.trim_end(),
        "the answer is what was stored"
    );

    // Methods from the query, defaults from userSettings, query arguments override them.
    let reply = world
        .get(&format!(
            "/plugin/{PLUGIN}?user={USER}&methods=get_bodyweight,get_bodyfat&base_date={DAY}"
        ))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply.body.contains("<body-weight>") && reply.body.contains("21.4"),
        "{}",
        reply.body
    );
    let reply = world
        .get(&format!(
            "/plugin/{PLUGIN}/userSettings?user={USER}&methods=get_bodyfat&base_date=2024-01-01"
        ))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let reply = world.get(&format!("/plugin/{PLUGIN}?user={USER}")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        !reply.body.contains("21.4"),
        "stored base_date is used: {}",
        reply.body
    );
    assert!(
        !reply.body.contains("75.3"),
        "stored methods are used: {}",
        reply.body
    );
    let reply = world
        .get(&format!("/plugin/{PLUGIN}?user={USER}&base_date={DAY}"))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply.body.contains("21.4") && !reply.body.contains("75.3"),
        "the query overrides base_date, methods stay stored: {}",
        reply.body
    );
    let requests = world
        .fake
        .requests_to("/1/user/-/body/log/fat/date/2024-01-01");
    assert!(!requests.is_empty(), "the stored base_date was asked for");
    let reply = world
        .get(&format!(
            "/plugin/{PLUGIN}/userSettings?user={USER}&methods=&base_date="
        ))
        .await;
    assert_eq!(reply.status, 200, "empty values remove defaults: {reply:?}");

    // 502 naming provider, method and status; nothing stored changes.
    let before = world.stored(&format!("sensors/{PLUGIN}/{USER}")).await;
    let token_before = world.token(USER).await;
    world.fake.inject_fault("/1/", Fault::Status(503), 3);
    let reply = world.get(&fetch).await;
    assert_eq!(reply.status, 502, "{reply:?}");
    assert!(reply.body.starts_with("502 "), "{reply:?}");
    for part in ["fitbit get_bodyweight", "HTTP 503"] {
        assert!(reply.body.contains(part), "{part}: {reply:?}");
    }
    assert_eq!(
        world.stored(&format!("sensors/{PLUGIN}/{USER}")).await,
        before
    );
    assert_eq!(world.token(USER).await, token_before);

    // Status as JSON.
    let reply = world.get(&format!("/plugin/{PLUGIN}/status")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.content_type, "application/json", "{reply:?}");
    let status: Value = serde_json::from_str(&reply.body).expect("JSON status");
    assert_eq!(status["plugin"], json!(PLUGIN), "{status}");
    assert_eq!(status["provider"], json!("fitbit"), "{status}");
    let jack = &status["users"][USER];
    assert_eq!(jack["granted"], json!(true), "{status}");
    assert_eq!(jack["consent_needed"], json!(false), "{status}");
    assert!(jack["last_success"].is_string(), "{status}");
    assert!(
        jack["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{status}"
    );
    assert!(jack["token_expires_at"].is_number(), "{status}");
    let left = jack["budget_left"]["per_3600s"].as_u64().expect("a budget");
    assert!(left < 150, "the fetches used the hourly budget: {status}");

    // 409 when the grant is revoked: the token fails, the refresh is refused.
    world.fake.revoke(&world.fake.config().default_user);
    let reply = world.get(&fetch).await;
    assert_eq!(reply.status, 409, "{reply:?}");
    assert!(reply.body.starts_with("409 consent needed"), "{reply:?}");
    assert!(
        reply.body.contains(&format!(
            "{}/plugin/{PLUGIN}/auth1?user={USER}",
            world.server.url
        )),
        "the answer says where to grant again: {reply:?}"
    );
    assert_eq!(
        world.stored(&format!("sensors/{PLUGIN}/{USER}")).await,
        before
    );
    let status: Value =
        serde_json::from_str(&world.get(&format!("/plugin/{PLUGIN}/status")).await.body)
            .expect("JSON status");
    assert_eq!(
        status["users"][USER]["consent_needed"],
        json!(true),
        "{status}"
    );

    // Prometheus text.
    let reply = world.get("/metrics").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.content_type.starts_with("text/plain"), "{reply:?}");
    let metrics = reply.body;
    for line in metrics.lines() {
        let valid = line.starts_with("# HELP ")
            || line.starts_with("# TYPE ")
            || line.rsplit_once(' ').is_some_and(|(series, value)| {
                value.parse::<f64>().is_ok()
                    && series
                        .split('{')
                        .next()
                        .is_some_and(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            });
        assert!(valid, "not Prometheus text: {line:?}\n{metrics}");
    }
    assert!(
        metrics.contains("# TYPE healthpull_http_requests_total counter"),
        "{metrics}"
    );
    assert!(sample(&metrics, "healthpull_http_requests_total").is_some_and(|n| n >= 10.0));
    let labels = format!("plugin=\"{PLUGIN}\",user=\"{USER}\"");
    assert_eq!(
        sample(
            &metrics,
            &format!("healthpull_fetches_total{{{labels},result=\"ok\"}}")
        ),
        Some(5.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            &format!("healthpull_fetches_total{{{labels},result=\"error\"}}")
        ),
        Some(2.0),
        "{metrics}"
    );
    // The two fetches before `jack` had any stored data count without a user label
    // (names nobody stored must not become series).
    assert_eq!(
        sample(
            &metrics,
            &format!(
                "healthpull_unknown_user_fetches_total{{plugin=\"{PLUGIN}\",result=\"error\"}}"
            )
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, &format!("healthpull_user_granted{{{labels}}}")),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            &format!("healthpull_user_consent_needed{{{labels}}}")
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            &format!("healthpull_last_success_seconds{{{labels}}}")
        )
        .is_some_and(|t| (t - Utc::now().timestamp() as f64).abs() < 600.0),
        "{metrics}"
    );
    world.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_own_rate_budget_answers_429_without_asking() {
    let world = World::start(Setup {
        patch: Some((
            "{ limit: 150, per_seconds: 3600, scope: user }",
            "{ limit: 2, per_seconds: 3600, scope: user }",
        )),
        ..Setup::default()
    })
    .await;
    world.register_app().await;
    world.grant(USER).await;
    world.seed_data();
    let fetch = format!("/plugin/{PLUGIN}?user={USER}&methods=get_bodyweight&base_date={DAY}");
    for _ in 0..2 {
        let reply = world.get(&fetch).await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let asked = world.fake.requests_to("/1/").len();
    let reply = world.get(&fetch).await;
    assert_eq!(reply.status, 429, "{reply:?}");
    assert!(reply.body.starts_with("429 "), "{reply:?}");
    assert_eq!(
        world.fake.requests_to("/1/").len(),
        asked,
        "the provider was not asked"
    );
    world.assert_no_secrets();
}

/// `/plugin/<p>/status` as JSON.
async fn status_of(world: &World, server: &str) -> Value {
    let reply = world
        .send(world.http.get(format!("{server}/plugin/{PLUGIN}/status")))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    serde_json::from_str(&reply.body).expect("JSON status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_report_each_methods_history() {
    let world = World::start(Setup::default()).await;
    world.register_app().await;
    world.grant(USER).await;
    // No stored methods: the provider's defaults (get_bodyweight) are planned; the fake
    // answers its generated weight log for any recent day.
    let day = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
    let before = Utc::now().date_naive();
    let reply = world.get(&format!("/plugin/{PLUGIN}?user={USER}")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let after = Utc::now().date_naive();
    let tree: Value = serde_json::from_str(
        &world
            .get_with(
                &format!("/plugin/{PLUGIN}/status"),
                &[("Accept", "application/json")],
            )
            .await
            .body,
    )
    .expect("JSON status");
    let method = &tree["users"][USER]["methods"]["get_bodyweight"];
    let run = &method["last_run"];
    assert_eq!(run["kind"], json!("sync"), "{tree}");
    assert_eq!(run["outcome"], json!("ok"), "{tree}");
    assert_eq!(run["failed"], json!([]), "{tree}");
    let added = run["added"].as_u64().expect("added");
    assert!(added >= 1, "the first sync archived the weight log: {tree}");
    assert_eq!(
        (run["changed"].clone(), run["unchanged"].clone()),
        (json!(0), json!(0))
    );
    // A first sync asks for the days not settled yet: the two before today and today.
    let last = method["covered"]["last"].as_str().expect("covered");
    assert!(last == day(before) || last == day(after), "{tree}");
    let last = chrono::NaiveDate::parse_from_str(last, "%Y-%m-%d").expect("a day");
    assert_eq!(
        method["covered"],
        json!({"first": day(last - chrono::Duration::days(2)), "last": day(last), "gaps": 0}),
        "{tree}"
    );
    assert_eq!(
        tree["users"][USER]["next_due"],
        Value::Null,
        "no schedule, no due time: {tree}"
    );

    // Again: everything is archived already.
    let reply = world.get(&format!("/plugin/{PLUGIN}?user={USER}")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let status = status_of(&world, &world.server.url).await;
    let run = &status["users"][USER]["methods"]["get_bodyweight"]["last_run"];
    assert_eq!(
        (run["added"].clone(), run["unchanged"].clone()),
        (json!(0), json!(added)),
        "{status}"
    );

    // A backfill through the command line, on the same store: two windows of at most
    // 31 days reach 40 days back.
    let since = last - chrono::Duration::days(40);
    let backfill = Command::new(healthpull_bin())
        .arg("--config")
        .arg(&world.config_path)
        .args(["backfill", PLUGIN, "--user", USER, "--since", &day(since)])
        .envs(world.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("TZ", "UTC")
        .current_dir(world.dir.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let backfill = tokio::time::timeout(WAIT, backfill)
        .await
        .expect("the backfill ends")
        .expect("run healthpull backfill");
    assert!(
        backfill.status.success(),
        "{}",
        String::from_utf8_lossy(&backfill.stderr)
    );
    let status = status_of(&world, &world.server.url).await;
    let method = &status["users"][USER]["methods"]["get_bodyweight"];
    assert_eq!(method["backfill"]["windows_done"], json!(2), "{status}");
    assert_eq!(method["backfill"]["since"], json!(day(since)), "{status}");
    assert_eq!(method["last_run"]["kind"], json!("backfill"), "{status}");
    assert_eq!(method["covered"]["first"], json!(day(since)), "{status}");

    // A failed sync: the provider answers 503.
    world.fake.inject_fault("/1/", Fault::Status(503), 3);
    let reply = world.get(&format!("/plugin/{PLUGIN}?user={USER}")).await;
    assert_eq!(reply.status, 502, "{reply:?}");
    let status = status_of(&world, &world.server.url).await;
    let run = &status["users"][USER]["methods"]["get_bodyweight"]["last_run"];
    assert_eq!(run["outcome"], json!("failed"), "{status}");
    assert!(
        run["failed"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("503")),
        "{status}"
    );

    // The gauges, for the known user only (a name without stored data gets none).
    let reply = world.get(&format!("/plugin/{PLUGIN}?user=nobody")).await;
    assert_eq!(reply.status, 403, "{reply:?}");
    let metrics = world.get("/metrics").await.body;
    let l = format!("plugin=\"{PLUGIN}\",user=\"{USER}\",method=\"get_bodyweight\"");
    for name in [
        "healthpull_covered_days",
        "healthpull_last_run_ok",
        "healthpull_last_run_entries",
        "healthpull_backfill_windows_done",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {name} gauge\n")),
            "{name}: {metrics}"
        );
    }
    assert_eq!(
        sample(&metrics, &format!("healthpull_covered_days{{{l}}}")),
        Some(41.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, &format!("healthpull_last_run_ok{{{l}}}")),
        Some(0.0),
        "the last run failed: {metrics}"
    );
    for kind in ["added", "changed", "unchanged"] {
        assert_eq!(
            sample(
                &metrics,
                &format!("healthpull_last_run_entries{{{l},kind=\"{kind}\"}}")
            ),
            Some(0.0),
            "{kind}: {metrics}"
        );
    }
    assert_eq!(
        sample(
            &metrics,
            &format!("healthpull_backfill_windows_done{{{l}}}")
        ),
        Some(2.0),
        "{metrics}"
    );
    assert!(!metrics.contains("user=\"nobody\""), "{metrics}");

    // A sync that works again: ok, and what it found unchanged.
    let reply = world.get(&format!("/plugin/{PLUGIN}?user={USER}")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let metrics = world.get("/metrics").await.body;
    assert_eq!(
        sample(&metrics, &format!("healthpull_last_run_ok{{{l}}}")),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            &format!("healthpull_last_run_entries{{{l},kind=\"unchanged\"}}")
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );

    // With the built-in schedule (a second server on the same store), the user's next
    // fetch is due one interval after the schedule's first fetch.
    let scheduled = world.dir.path().join("scheduled.yaml");
    let config = std::fs::read_to_string(&world.config_path).expect("read the config");
    std::fs::write(
        &scheduled,
        config + "schedule: {enabled: true, interval_seconds: 3600, jitter_seconds: 0}\n",
    )
    .expect("write the scheduled config");
    let started = Utc::now().timestamp();
    let server = Server::start(&scheduled, world.dir.path(), &world.env, &[]).await;
    let deadline = Instant::now() + WAIT;
    let due = loop {
        let status = status_of(&world, &server.url).await;
        if let Some(due) = status["users"][USER]["next_due"].as_str() {
            break due.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the schedule set no due time: {status}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let due = chrono::DateTime::parse_from_rfc3339(&due)
        .expect("RFC 3339")
        .timestamp();
    let now = Utc::now().timestamp();
    assert!(
        due >= started + 3600 && due <= now + 3601,
        "due {due}, started {started}, now {now}"
    );
    world.assert_no_secrets();
}

// ---------------------------------------------------------------------------------------
// 2. auth1 and auth2
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth1_redirects_with_state_and_pkce_and_auth2_refuses_bad_states() {
    let world = World::start(Setup::default()).await;
    world.register_app().await;
    let token_path = world.fake.dialect().token_path();

    let reply = world.get(&format!("/plugin/{PLUGIN}/auth1")).await;
    assert_eq!(reply.status, 400, "auth1 without user: {reply:?}");
    let reply = world
        .get(&format!("/plugin/{PLUGIN}/auth1?user=..%2Fadmin"))
        .await;
    assert_eq!(reply.status, 400, "auth1 with a bad user name: {reply:?}");

    // auth1: 303 to the provider with state and PKCE.
    let reply = world
        .get(&format!("/plugin/{PLUGIN}/auth1?user={USER}"))
        .await;
    assert_eq!(reply.status, 303, "{reply:?}");
    let location = reply.location.clone().expect("a Location");
    assert!(
        location.starts_with(&format!("{}?", world.fake.authorize_url())),
        "{location}"
    );
    let pairs = query_pairs(&location);
    let config = world.fake.config();
    assert_eq!(param(&pairs, "response_type"), Some("code"), "{location}");
    assert_eq!(param(&pairs, "client_id"), Some(config.client_id.as_str()));
    assert_eq!(
        param(&pairs, "redirect_uri"),
        Some(format!("{}/plugin/{PLUGIN}/auth2", world.server.url).as_str())
    );
    let state = param(&pairs, "state").expect("a state").to_owned();
    assert!(state.len() >= 43, "at least 256 bits of state: {state}");
    assert_ne!(state, USER, "the old plugin's state=<user> is not copied");
    assert_eq!(param(&pairs, "code_challenge_method"), Some("S256"));
    assert_eq!(param(&pairs, "code_challenge").map(str::len), Some(43));
    assert!(param(&pairs, "scope").is_some_and(|s| s.contains("weight")));
    let second = world
        .get(&format!("/plugin/{PLUGIN}/auth1?user={USER}"))
        .await;
    let second_state = param(&query_pairs(&second.location.expect("a Location")), "state")
        .expect("a state")
        .to_owned();
    assert_ne!(second_state, state, "every consent has its own state");

    // The first consent completes; the token is stored and the code exchanged with PKCE.
    let back = world.send(world.http.get(&location)).await;
    assert_eq!(back.status, 302, "{back:?}");
    let callback = back.location.expect("redirect back");
    let target = callback
        .strip_prefix(&world.server.url)
        .expect("back to the server")
        .to_owned();
    let reply = world
        .get_with(&target, &[("Accept", "text/html,application/xhtml+xml")])
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply.content_type.starts_with("text/html") && reply.body.contains("Access granted"),
        "a browser sees a page: {reply:?}"
    );
    let exchange = world.fake.requests_to(token_path);
    assert_eq!(exchange.len(), 1);
    assert!(
        exchange[0].form_param("code_verifier").is_some(),
        "PKCE verifier"
    );
    let token = world.token(USER).await.expect("a token is stored");
    let issued = world.fake.issued_tokens(&config.default_user);
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].kind, IssueKind::CodeExchange);
    assert_eq!(token["access_token"], json!(issued[0].access_token));

    // A used state: refused, the token untouched, the provider not asked.
    let reply = world.get(&target).await;
    assert_eq!(reply.status, 403, "a used state: {reply:?}");
    assert!(
        reply.body.contains("unknown or already used state"),
        "{reply:?}"
    );
    // A wrong state.
    let reply = world
        .get(&format!(
            "/plugin/{PLUGIN}/auth2?code=abc&state=not-a-state"
        ))
        .await;
    assert_eq!(reply.status, 403, "a wrong state: {reply:?}");
    // The second pending state with a code that is not the provider's: refused by the
    // provider (502), the state is spent.
    let reply = world
        .get(&format!(
            "/plugin/{PLUGIN}/auth2?code=forged&state={second_state}"
        ))
        .await;
    assert_eq!(reply.status, 502, "a forged code: {reply:?}");
    let reply = world
        .get(&format!(
            "/plugin/{PLUGIN}/auth2?code=forged&state={second_state}"
        ))
        .await;
    assert_eq!(reply.status, 403, "the state is single-use: {reply:?}");
    // Missing arguments and a provider error.
    let reply = world.get(&format!("/plugin/{PLUGIN}/auth2?code=abc")).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    let reply = world
        .get(&format!(
            "/plugin/{PLUGIN}/auth2?error=access_denied&state={state}"
        ))
        .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.body.contains("access_denied"), "{reply:?}");
    assert_eq!(
        world.token(USER).await.as_ref(),
        Some(&token),
        "token untouched"
    );
    assert_eq!(
        world.fake.requests_to(token_path).len(),
        2,
        "only the forged code reached the provider"
    );

    // An expired state: a consent started 20 minutes ago (a server with its clock
    // pinned then), completed now with the provider's real code.
    let past = (Utc::now() - chrono::Duration::minutes(20))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut earlier = world.second_server(&["--now", &past]).await;
    let reply = world
        .send(
            world
                .http
                .get(format!("{}/plugin/{PLUGIN}/auth1?user={USER}", earlier.url)),
        )
        .await;
    assert_eq!(reply.status, 303, "{reply:?}");
    let back = world
        .send(world.http.get(reply.location.expect("a Location")))
        .await;
    assert_eq!(back.status, 302, "{back:?}");
    let callback = back.location.expect("redirect back");
    assert!(callback.starts_with(&earlier.url), "{callback}");
    assert_eq!(earlier.terminate().await, Some(0), "{}", earlier.log());
    let target = callback
        .strip_prefix(&earlier.url)
        .expect("a path")
        .to_owned();
    let reply = world.get(&target).await;
    assert_eq!(reply.status, 403, "an expired state: {reply:?}");
    assert!(reply.body.contains("longer than 10 minutes"), "{reply:?}");
    assert_eq!(
        world.token(USER).await.as_ref(),
        Some(&token),
        "token untouched"
    );
    assert_eq!(
        world.fake.requests_to(token_path).len(),
        2,
        "code not exchanged"
    );
    world.assert_no_secrets();
    world.assert_no_secrets_in("the earlier server's log", &earlier.log());
}

// ---------------------------------------------------------------------------------------
// 3. settings and userSettings
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_user_settings_keep_the_old_parameters() {
    let world = World::start(Setup::default()).await;
    let app = format!("plugindata/{PLUGIN}");
    let settings = format!("/plugin/{PLUGIN}/settings");
    let user_settings = format!("/plugin/{PLUGIN}/userSettings");
    let setup_page = format!("/plugin/{PLUGIN}/page/setup.html");

    // settings: each non-empty value stored; the reply names the last one.
    let reply = world
        .get(&format!(
            "{settings}?client_id=CID1&client_secret=the-secret-value-1&system=en_GB"
        ))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, format!("/data/{app}/system\n"));
    assert_eq!(
        world.stored(&format!("{app}/client_id")).await,
        Some(json!("CID1"))
    );
    assert_eq!(
        world.stored(&format!("{app}/client_secret")).await,
        Some(json!("the-secret-value-1"))
    );
    assert_eq!(
        world.stored(&format!("{app}/system")).await,
        Some(json!("en_GB"))
    );
    let reply = world
        .get(&format!("{settings}?client_id=CID2&client_secret="))
        .await;
    assert_eq!(reply.body, format!("/data/{app}/client_id\n"), "{reply:?}");
    assert_eq!(
        world.stored(&format!("{app}/client_secret")).await,
        Some(json!("the-secret-value-1")),
        "an empty value keeps the stored one"
    );
    let reply = world.get(&settings).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));

    // returnTo: a local path is followed, anything else refused and nothing changed.
    let reply = world
        .get(&format!("{settings}?system=metric&returnTo=%2Fplugin%2F{PLUGIN}%2Fpage%2Fsetup.html%3Fuser%3Djack"))
        .await;
    assert_eq!(reply.status, 303, "{reply:?}");
    assert_eq!(
        reply.location.as_deref(),
        Some(format!("/plugin/{PLUGIN}/page/setup.html?user=jack").as_str())
    );
    assert_eq!(
        world.stored(&format!("{app}/system")).await,
        Some(json!("metric"))
    );
    for evil in [
        "//evil.example",
        "https://evil.example",
        "https://evil.example/plugin/fitbit/page/setup.html",
        "/\\evil.example",
        "evil.example",
        "javascript:alert(1)",
    ] {
        let encoded: String = url::form_urlencoded::byte_serialize(evil.as_bytes()).collect();
        let reply = world
            .get(&format!("{settings}?system=en_US&returnTo={encoded}"))
            .await;
        assert_eq!(reply.status, 400, "returnTo={evil}: {reply:?}");
        assert_eq!(reply.location, None, "returnTo={evil}");
        assert_eq!(
            world.stored(&format!("{app}/system")).await,
            Some(json!("metric")),
            "returnTo={evil} changed nothing"
        );
        let reply = world
            .get(&format!("{user_settings}?user=mallory&returnTo={encoded}"))
            .await;
        assert_eq!(reply.status, 400, "userSettings returnTo={evil}: {reply:?}");
        assert_eq!(
            world
                .stored(&format!("identities/mallory/plugindata/{PLUGIN}"))
                .await,
            None,
            "userSettings returnTo={evil} changed nothing"
        );
    }

    // The setup page never shows the secret back.
    let page = world.get(&setup_page).await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.content_type.starts_with("text/html"), "{page:?}");
    assert!(!page.body.contains("the-secret-value-1"), "{}", page.body);
    assert!(page.body.contains("client secret is set"), "{}", page.body);
    assert!(
        page.body
            .contains(&format!("{}/plugin/{PLUGIN}/auth2", world.server.url)),
        "the callback URL to register: {}",
        page.body
    );

    // Forms: POST needs the page's token; cross-site requests are refused.
    let token = form_token(&page.body);
    let reply = world
        .post_form(&settings, &[("client_id", "CID3")], &[])
        .await;
    assert_eq!(reply.status, 403, "no form token: {reply:?}");
    let reply = world
        .post_form(&settings, &[("client_id", "CID3"), ("_csrf", "wrong")], &[])
        .await;
    assert_eq!(reply.status, 403, "a wrong form token: {reply:?}");
    let reply = world
        .post_form(
            &settings,
            &[("client_id", "CID3"), ("_csrf", &token)],
            &[("Origin", "http://evil.example")],
        )
        .await;
    assert_eq!(reply.status, 403, "another origin: {reply:?}");
    let reply = world
        .get_with(
            &format!("{settings}?client_id=CID3"),
            &[("Sec-Fetch-Site", "cross-site")],
        )
        .await;
    assert_eq!(reply.status, 403, "a cross-site GET: {reply:?}");
    let reply = world
        .get_with(&format!("{settings}?client_id=CID3"), &[("Origin", "null")])
        .await;
    assert_eq!(reply.status, 403, "an opaque origin: {reply:?}");
    assert_eq!(
        world.stored(&format!("{app}/client_id")).await,
        Some(json!("CID2"))
    );
    let origin = world.server.url.clone();
    let reply = world
        .post_form(
            &settings,
            &[
                ("client_id", "CID3"),
                ("_csrf", &token),
                ("returnTo", &setup_page),
            ],
            &[("Origin", &origin), ("Sec-Fetch-Site", "same-origin")],
        )
        .await;
    assert_eq!(reply.status, 303, "our own form: {reply:?}");
    assert_eq!(
        world.stored(&format!("{app}/client_id")).await,
        Some(json!("CID3"))
    );

    // userSettings: create, set, _newName/_newValue, remove, deleteToken, delete.
    let base = format!("identities/{USER}/plugindata/{PLUGIN}");
    let reply = world.get(&user_settings).await;
    assert_eq!(reply.status, 400, "without user: {reply:?}");
    let reply = world.get(&format!("{user_settings}?user=..%2Fx")).await;
    assert_eq!(reply.status, 400, "a bad user name: {reply:?}");
    let reply = world.get(&format!("{user_settings}?user={USER}")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, format!("/data/{base}\n"));
    assert_eq!(world.stored(&base).await, Some(json!({})));
    let reply = world
        .get(&format!(
            "{user_settings}?user={USER}&methods=get_bodyweight&period=1w&token=stolen"
        ))
        .await;
    assert_eq!(reply.status, 400, "`token` cannot be written: {reply:?}");
    assert_eq!(
        world.stored(&base).await,
        Some(json!({})),
        "nothing changed"
    );
    let reply = world
        .get(&format!(
            "{user_settings}?user={USER}&methods=get_bodyweight&period=1w&_newName=base_date&_newValue={DAY}"
        ))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        world.stored(&base).await,
        Some(json!({"methods": "get_bodyweight", "period": "1w", "base_date": DAY})),
    );
    let reply = world
        .get(&format!(
            "{user_settings}?user={USER}&period=&returnTo=%2Fplugin%2F{PLUGIN}%2Fpage%2Fsetup.html%3Fuser%3D{USER}"
        ))
        .await;
    assert_eq!(reply.status, 303, "{reply:?}");
    assert_eq!(
        world.stored(&base).await,
        Some(json!({"methods": "get_bodyweight", "base_date": DAY}))
    );
    let page = world.get(&format!("{setup_page}?user={USER}")).await;
    assert!(page.body.contains("id=\"set-methods\""), "{}", page.body);
    assert!(page.body.contains("not granted"), "{}", page.body);

    world
        .get(&format!(
            "{settings}?client_id={}&client_secret={}",
            world.fake.config().client_id,
            world.fake.config().client_secret
        ))
        .await;
    world.grant(USER).await;
    assert!(world.token(USER).await.is_some());
    let page = world.get(&format!("{setup_page}?user={USER}")).await;
    assert!(
        page.body.contains("id=\"grant-state\">granted<"),
        "{}",
        page.body
    );
    let reply = world
        .get(&format!("{user_settings}?user={USER}&deleteToken=1"))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        world.token(USER).await,
        None,
        "deleteToken removes the token"
    );
    assert!(world.stored(&format!("{base}/methods")).await.is_some());
    let reply = world
        .get(&format!("{user_settings}?user={USER}&delete=1"))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(world.stored(&base).await, None, "delete removes the user");
    let status: Value =
        serde_json::from_str(&world.get(&format!("/plugin/{PLUGIN}/status")).await.body)
            .expect("JSON status");
    assert!(status["users"].get(USER).is_none(), "{status}");
    world.assert_no_secrets();
    assert!(!world.server.log().contains("the-secret-value-1"));
}

// ---------------------------------------------------------------------------------------
// 4. Credentials and loopback
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_guard_every_entry_point_but_auth2() {
    let world = World::start(Setup {
        access: true,
        ..Setup::default()
    })
    .await;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{BASIC_USER}:{BASIC_PASSWORD}"))
    );
    let wrong_basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{BASIC_USER}:nope"))
    );
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let entry_points = [
        "/".to_owned(),
        "/metrics".to_owned(),
        format!("/plugin/{PLUGIN}?user={USER}"),
        format!("/plugin/{PLUGIN}/auth1?user={USER}"),
        format!("/plugin/{PLUGIN}/settings"),
        format!("/plugin/{PLUGIN}/userSettings?user={USER}"),
        format!("/plugin/{PLUGIN}/page/setup.html"),
        format!("/plugin/{PLUGIN}/status"),
    ];
    for path in &entry_points {
        for (what, headers) in [
            ("no credentials", vec![]),
            ("a wrong token", vec![("Authorization", "Bearer wrong")]),
            (
                "a wrong password",
                vec![("Authorization", wrong_basic.as_str())],
            ),
            ("an unknown scheme", vec![("Authorization", "Digest x")]),
        ] {
            let reply = world.get_with(path, &headers).await;
            assert_eq!(reply.status, 401, "{path} with {what}: {reply:?}");
            assert!(
                reply
                    .www_authenticate
                    .as_deref()
                    .is_some_and(|w| w.starts_with("Basic")),
                "{path}: {reply:?}"
            );
        }
        for (what, auth) in [("the admin token", &bearer), ("Basic", &basic)] {
            let reply = world.get_with(path, &[("Authorization", auth)]).await;
            assert_ne!(reply.status, 401, "{path} with {what}: {reply:?}");
            assert!(reply.status < 500, "{path} with {what}: {reply:?}");
        }
    }
    // auth2 is the provider's redirect: no credentials, its state protects it.
    let reply = world
        .get(&format!("/plugin/{PLUGIN}/auth2?code=x&state=y"))
        .await;
    assert_eq!(reply.status, 403, "auth2 needs no credentials: {reply:?}");

    // The whole flow with credentials: register, consent, fetch, the setup page's form.
    let config = world.fake.config();
    let auth = [("Authorization", bearer.as_str())];
    let reply = world
        .get_with(
            &format!(
                "/plugin/{PLUGIN}/settings?client_id={}&client_secret={}",
                config.client_id, config.client_secret
            ),
            &auth,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let reply = world
        .get_with(&format!("/plugin/{PLUGIN}/auth1?user={USER}"), &auth)
        .await;
    assert_eq!(reply.status, 303, "{reply:?}");
    let back = world
        .send(world.http.get(reply.location.expect("a Location")))
        .await;
    let target = back
        .location
        .expect("the fake redirects back")
        .strip_prefix(&world.server.url)
        .expect("to the server")
        .to_owned();
    let reply = world.get(&target).await;
    assert_eq!(reply.status, 200, "auth2 without credentials: {reply:?}");
    world.seed_data();
    let basic_auth = [("Authorization", basic.as_str())];
    let reply = world
        .get_with(
            &format!("/plugin/{PLUGIN}?user={USER}&methods=get_bodyweight&base_date={DAY}"),
            &basic_auth,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.body.contains("75.3"), "{reply:?}");
    let token = world.csrf(&basic_auth).await;
    let reply = world
        .post_form(
            &format!("/plugin/{PLUGIN}/userSettings"),
            &[("user", "jill"), ("_csrf", &token)],
            &basic_auth,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let reply = world
        .post_form(
            &format!("/plugin/{PLUGIN}/userSettings"),
            &[("user", "jim"), ("_csrf", &token)],
            &[],
        )
        .await;
    assert_eq!(
        reply.status, 401,
        "a form post without credentials: {reply:?}"
    );
    assert!(
        world
            .stored("identities/jill/plugindata/fitbit")
            .await
            .is_some()
    );
    assert!(
        world
            .stored("identities/jim/plugindata/fitbit")
            .await
            .is_none()
    );
    world.assert_no_secrets();
    let log = world.server.log();
    for secret in [ADMIN_TOKEN, BASIC_PASSWORD] {
        assert!(!log.contains(secret), "a credential is in the log:\n{log}");
    }
}

// ---------------------------------------------------------------------------------------
// 5. Graceful shutdown
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_fetch_finish_and_be_stored() {
    let mut world = World::start(Setup::default()).await;
    world.register_app().await;
    world.grant(USER).await;
    world.seed_data();
    world
        .fake
        .inject_fault("/1/", Fault::Delay(Duration::from_secs(3)), 1);
    let request = world.http.get(world.url(&format!(
        "/plugin/{PLUGIN}?user={USER}&methods=get_bodyweight&base_date={DAY}"
    )));
    let running = tokio::spawn(async move {
        let response = request
            .send()
            .await
            .expect("the running fetch gets an answer");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    });
    let fake = &world.fake;
    wait_until(WAIT, "the fetch reached the provider", || async move {
        !fake.requests_to("/1/").is_empty()
    })
    .await;
    let stopped = Instant::now();
    let code = world.server.terminate().await;
    let (status, body) = tokio::time::timeout(WAIT, running)
        .await
        .expect("the running fetch finishes")
        .expect("the fetch task");
    assert_eq!(status, 200, "{body}\n{}", world.server.log());
    assert!(body.contains("75.3"), "{body}");
    assert_eq!(code, Some(0), "a clean exit:\n{}", world.server.log());
    assert!(
        stopped.elapsed() >= Duration::from_secs(1),
        "the server waited for the fetch"
    );
    let log = world.server.log();
    assert!(log.contains("shutting down"), "{log}");
    let stored = world
        .stored(&format!("sensors/{PLUGIN}/{USER}"))
        .await
        .expect("the fetch was stored before the exit");
    assert!(stored.to_string().contains("75.3"), "{stored}");
    let status = world
        .stored(&format!("plugindata/{PLUGIN}/status/{USER}"))
        .await
        .expect("a status");
    assert!(status.get("last_success").is_some(), "{status}");
    world.assert_no_secrets();
}

// ---------------------------------------------------------------------------------------
// 6. The setup page in headless Chromium
// ---------------------------------------------------------------------------------------

/// A page on another origin that posts a form to the server as soon as it loads.
async fn evil_site(target: String, csrf: String) -> (String, tokio::task::JoinHandle<()>) {
    let page = format!(
        "<!doctype html><html><body><form id=\"f\" method=\"post\" action=\"{target}\">\
<input type=\"hidden\" name=\"client_id\" value=\"EVIL\">\
<input type=\"hidden\" name=\"client_secret\" value=\"evil-secret\">\
<input type=\"hidden\" name=\"_csrf\" value=\"{csrf}\"></form>\
<script>document.getElementById('f').submit();</script></body></html>"
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the other site");
    let port = listener.local_addr().expect("address").port();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    // `localhost` rather than 127.0.0.1: another host, so another site as well.
    (format!("http://localhost:{port}/"), server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_page_in_headless_chromium() {
    let world = World::start(Setup {
        fake: Some(FakeConfig {
            auto_consent: false,
            ..FakeConfig::fitbit()
        }),
        ..Setup::default()
    })
    .await;
    let config = world.fake.config();
    let browser = Browser::start().await;
    let setup_url = world.url(&format!("/plugin/{PLUGIN}/page/setup.html"));

    // Register the app through the form.
    browser.goto(&setup_url).await;
    let callback = browser.text(&browser.find("#callback").await).await;
    assert_eq!(
        callback,
        format!("{}/plugin/{PLUGIN}/auth2", world.server.url)
    );
    browser
        .type_text(&browser.find("#client_id").await, &config.client_id)
        .await;
    browser
        .type_text(&browser.find("#client_secret").await, &config.client_secret)
        .await;
    browser
        .click(&browser.find("#system option[value='en_GB']").await)
        .await;
    browser.click(&browser.find("#save-app").await).await;
    let source = browser
        .wait_for_source("the secret is stored", |s| {
            s.contains("client secret is set")
        })
        .await;
    assert!(
        !source.contains(&config.client_secret),
        "the secret is never shown back"
    );
    assert_eq!(browser.url().await, setup_url, "back on the setup page");
    assert_eq!(
        browser
            .property(&browser.find("#client_id").await, "value")
            .await,
        json!(config.client_id)
    );
    assert_eq!(
        browser
            .property(&browser.find("#system").await, "value")
            .await,
        json!("en_GB")
    );
    assert_eq!(
        world
            .stored(&format!("plugindata/{PLUGIN}/client_secret"))
            .await,
        Some(json!(config.client_secret))
    );

    // Create a user.
    browser
        .type_text(&browser.find("#pick-user").await, USER)
        .await;
    browser.click(&browser.find("#show-user").await).await;
    browser
        .click(&browser.find("#create-user-button").await)
        .await;
    let grant_state = browser.find("#grant-state").await;
    assert_eq!(browser.text(&grant_state).await, "not granted");
    assert_eq!(
        world
            .stored(&format!("identities/{USER}/plugindata/{PLUGIN}"))
            .await,
        Some(json!({}))
    );
    browser
        .type_text(&browser.find("#new-name").await, "methods")
        .await;
    browser
        .type_text(
            &browser.find("#new-value").await,
            "get_bodyweight,get_bodyfat",
        )
        .await;
    browser.click(&browser.find("#save-user").await).await;
    browser.find("#set-methods").await;
    assert_eq!(
        world
            .stored(&format!("identities/{USER}/plugindata/{PLUGIN}/methods"))
            .await,
        Some(json!("get_bodyweight,get_bodyfat"))
    );

    // The time zone: its own row; a name that is no zone is shown beside it and
    // changes nothing, an IANA name is stored.
    browser
        .type_text(&browser.find("#set-timezone").await, "Mars/Olympus")
        .await;
    browser.click(&browser.find("#save-user").await).await;
    let source = browser
        .wait_for_source("the zone's error", |s| s.contains("unknown time zone"))
        .await;
    assert!(
        source.contains("unknown time zone `Mars/Olympus`"),
        "{source}"
    );
    assert_eq!(
        world
            .stored(&format!("identities/{USER}/plugindata/{PLUGIN}/timezone"))
            .await,
        None
    );
    let zone = browser.find("#set-timezone").await;
    browser.click(&zone).await;
    browser
        .type_text(&zone, "\u{e009}a\u{e000}\u{e003}America/Los_Angeles")
        .await;
    browser.click(&browser.find("#save-user").await).await;
    browser.find("#set-methods").await;
    assert_eq!(
        world
            .stored(&format!("identities/{USER}/plugindata/{PLUGIN}/timezone"))
            .await,
        Some(json!("America/Los_Angeles"))
    );

    // Grant: the link, the provider's consent page, Allow, back to auth2.
    browser.click(&browser.find("#grant-link").await).await;
    let allow = browser.find("#allow").await;
    assert!(
        browser.url().await.starts_with(&world.fake.authorize_url()),
        "on the provider's consent page"
    );
    browser.click(&allow).await;
    browser.find("#granted").await;
    assert!(
        browser
            .url()
            .await
            .starts_with(&format!("{}/plugin/{PLUGIN}/auth2?", world.server.url)),
        "auth2 answered the browser"
    );
    browser.click(&browser.find("#back").await).await;
    let grant_state = browser.find("#grant-state").await;
    assert_eq!(browser.text(&grant_state).await, "granted");
    assert!(world.token(USER).await.is_some(), "a token is stored");
    let source = browser.source().await;
    assert!(
        source.contains("id=\"token-expiry\""),
        "token health is shown"
    );
    assert!(source.contains("id=\"delete-token-button\""));
    world.assert_no_secrets_in("the setup page", &source);
    assert!(!source.contains(&config.client_secret));
    assert!(
        source.contains("<tr id=\"counts-get_bodyweight\"><td>get_bodyweight</td><td>never</td>")
            && !source.contains("<svg"),
        "nothing is archived yet: {source}"
    );

    // A fetch of two weeks archives the fake's weight and fat logs; the page then shows
    // each method's last run and plots each output's values as inline SVG.
    let today = Utc::now().date_naive();
    let (start, end) = (
        today - chrono::Duration::days(14),
        today - chrono::Duration::days(1),
    );
    let reply = world
        .get(&format!(
            "/plugin/{PLUGIN}?user={USER}&base_date={start}&end_date={end}"
        ))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    browser.goto(&format!("{setup_url}?user={USER}")).await;
    let cell = |method: &str, class: &str| format!("#sync-counts #counts-{method} .{class}");
    for method in ["get_bodyweight", "get_bodyfat"] {
        assert_eq!(
            browser
                .text(&browser.find(&cell(method, "outcome")).await)
                .await,
            "ok"
        );
        assert_eq!(
            browser
                .text(&browser.find(&cell(method, "covered")).await)
                .await,
            format!("{start} to {end}")
        );
        assert_eq!(
            browser
                .text(&browser.find(&cell(method, "changed")).await)
                .await,
            "0"
        );
    }
    let added: usize = browser
        .text(&browser.find(&cell("get_bodyweight", "added")).await)
        .await
        .parse()
        .expect("a count");
    assert!(added >= 5, "two weeks of weight logs: {added}");
    let plot = browser.find("svg#plot-body-weight").await;
    assert_eq!(
        browser.property(&plot, "clientWidth").await,
        json!(600),
        "the plot is drawn as SVG"
    );
    browser.find("#plot-body-weight polyline").await;
    let source = browser.source().await;
    let svg = source
        .split("<svg id=\"plot-body-weight\"")
        .nth(1)
        .and_then(|rest| rest.split("</svg>").next())
        .expect("the weight plot");
    let drawn = svg
        .split("points=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a polyline");
    assert_eq!(
        drawn.split(' ').count(),
        added,
        "a point per archived weight: {svg}"
    );
    let label = |class: &str| {
        svg.split(&format!("class=\"{class}\""))
            .nth(1)
            .and_then(|rest| rest.split_once('>'))
            .and_then(|(_, rest)| rest.split('<').next())
            .unwrap_or_else(|| panic!("no {class} label: {svg}"))
            .to_owned()
    };
    let (first, last) = (label("first"), label("last"));
    assert!(
        start.to_string() <= first && first < last && last <= end.to_string(),
        "{first} to {last}"
    );
    let (min, max): (f64, f64) = (
        label("min").parse().expect("a number"),
        label("max").parse().expect("a number"),
    );
    assert!(min < max, "{min} to {max}");
    assert!(
        !source.contains("<script"),
        "the page has no script: {source}"
    );
    world.assert_no_secrets_in("the setup page with plots", &source);

    let screenshot = browser.screenshot().await;
    let shot = world.dir.path().join("setup-page.png");
    std::fs::write(&shot, &screenshot).expect("write the screenshot");
    let written = std::fs::read(&shot).expect("read the screenshot back");
    assert!(
        written.starts_with(b"\x89PNG\r\n\x1a\n") && written.len() > 1000,
        "a PNG screenshot ({} bytes)",
        written.len()
    );

    // Cross-site: a page on another origin posts the form (even with our token); refused.
    let token = form_token(&source);
    let (evil_url, evil_server) =
        evil_site(world.url(&format!("/plugin/{PLUGIN}/settings")), token).await;
    browser.goto(&evil_url).await;
    let refused = browser
        .wait_for_source("the server answered the cross-site post", |s| {
            s.contains("403 ") || s.contains("/data/plugindata")
        })
        .await;
    assert!(
        refused.contains("403 cross-site request refused"),
        "{refused}"
    );
    evil_server.abort();
    assert_eq!(
        world
            .stored(&format!("plugindata/{PLUGIN}/client_id"))
            .await,
        Some(json!(config.client_id)),
        "the cross-site post changed nothing"
    );
    assert_eq!(
        world
            .stored(&format!("plugindata/{PLUGIN}/client_secret"))
            .await,
        Some(json!(config.client_secret))
    );
    let posts: Vec<_> = world
        .server
        .log()
        .lines()
        .filter(|l| l.contains("/settings") && l.contains("status=403"))
        .map(str::to_owned)
        .collect();
    assert!(
        !posts.is_empty(),
        "the server refused it:\n{}",
        world.server.log()
    );

    // Delete the token from the page: revoked at the provider, back to "not granted".
    let refresh_token = world
        .token(USER)
        .await
        .and_then(|t| t["refresh_token"].as_str().map(str::to_owned))
        .expect("a stored refresh token");
    let revoked_before = world.fake.revocations().len();
    browser.goto(&format!("{setup_url}?user={USER}")).await;
    browser
        .click(&browser.find("#delete-token-button").await)
        .await;
    browser
        .wait_for_source("the page says not granted", |s| {
            s.contains("id=\"grant-state\">not granted<")
        })
        .await;
    assert_eq!(world.token(USER).await, None);
    let revocations = world.fake.revocations();
    assert_eq!(revocations.len(), revoked_before + 1, "{revocations:?}");
    let last = revocations.last().expect("a revocation");
    assert_eq!(last.token, refresh_token, "the refresh token is revoked");
    assert_eq!(last.token_type_hint.as_deref(), Some("refresh_token"));
    assert!(last.client_authenticated, "{last:?}");
    world.assert_no_secrets();
}

// ---------------------------------------------------------------------------------------
// 7. A real Igor calls the server through the action igor-install created
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_igor_action_fills_sensors_through_the_server() {
    let igor = tokio::task::spawn_blocking(|| Igor::start(IgorOptions { capabilities: true }))
        .await
        .expect("start Igor");
    let (service_user, service_password) = igor.service_identity(PLUGIN, &[USER]).await;
    let world = World::start(Setup {
        igor: Some((igor.url.clone(), service_user, service_password.clone())),
        ..Setup::default()
    })
    .await;

    // App registration and consent through the server, stored in Igor.
    world.register_app().await;
    world.grant(USER).await;
    let reply = igor
        .admin_get(
            &format!("/data/identities/{USER}/plugindata/{PLUGIN}/token/refresh_token"),
            "text/plain",
        )
        .await;
    assert_eq!(reply.status, 200, "the token is in Igor: {reply:?}");
    // The old plugin's per-user `methods`, read by the fetch Igor's action asks for.
    let reply = world
        .get(&format!(
            "/plugin/{PLUGIN}/userSettings?user={USER}&methods=get_bodyweight"
        ))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");

    // Weight logs for the day Igor's action will ask for (the server's today).
    let today = Utc::now().date_naive();
    let entries: Vec<Value> = [today - chrono::Duration::days(1), today]
        .iter()
        .enumerate()
        .map(|(i, day)| {
            json!({"bmi": 24.1, "date": day.to_string(), "logId": 1_800_000_000_000i64 + i as i64,
                   "source": "Aria", "time": "06:30:00", "weight": 81.25})
        })
        .collect();
    world
        .fake
        .seed_fitbit_weight(&world.fake.config().default_user, entries);

    // igor-install as Igor's admin (a fresh database accepts any password for admin).
    let run = Command::new(healthpull_bin())
        .arg("--config")
        .arg(&world.config_path)
        .args([
            "igor-install",
            "--igor-url",
            &igor.url,
            "--igor-user",
            "admin",
            "--igor-password-env",
            IGOR_ADMIN_ENV,
            PLUGIN,
            "--user",
            USER,
            "--server-url",
            &world.server.url,
        ])
        .env(IGOR_ADMIN_ENV, "admin")
        .envs(world.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(world.dir.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT, run)
        .await
        .expect("igor-install finishes")
        .expect("run igor-install");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "igor-install:\n{stdout}\n{stderr}");
    let action_url = format!("{}/plugin/{PLUGIN}?user={USER}", world.server.url);
    assert!(stdout.contains(&action_url), "{stdout}");
    let actions = igor.admin_get_ok("/data/actions", "application/xml").await;
    assert!(actions.contains(&action_url), "{actions}");
    assert!(
        actions.contains("<representing>sensors/fitbit</representing>"),
        "{actions}"
    );
    assert!(actions.contains("<interval>36000</interval>"), "{actions}");

    // Igor runs the new action at once: it GETs our server, which stores into Igor.
    let sensors = format!("/data/sensors/{PLUGIN}/{USER}");
    let (igor_ref, sensors_ref) = (&igor, sensors.as_str());
    wait_until(
        Duration::from_secs(90),
        "Igor's action filled the sensors",
        || async move {
            let reply = igor_ref.admin_get(sensors_ref, "application/xml").await;
            reply.status == 200 && reply.body.contains("81.25")
        },
    )
    .await;
    let xml = igor.admin_get_ok(&sensors, "application/xml").await;
    assert!(xml.contains("<body-weight>"), "{xml}");
    assert!(
        world.server.log().contains(&format!("/plugin/{PLUGIN}")),
        "the server answered Igor"
    );
    let log = world.server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("path=/plugin/fitbit}") && l.contains("status=200")),
        "the action's request was answered 200:\n{log}"
    );

    // Igor records the action's outcome under status/sensors/fitbit.
    let status_path = format!("/data/status/sensors/{PLUGIN}");
    let status_ref = status_path.as_str();
    wait_until(
        Duration::from_secs(30),
        "Igor recorded the action's success",
        || async move {
            let reply = igor_ref.admin_get(status_ref, "application/json").await;
            reply.status == 200 && reply.body.contains("lastSuccess")
        },
    )
    .await;
    let status: Value =
        serde_json::from_str(&igor.admin_get_ok(&status_path, "application/json").await)
            .expect("JSON status");
    let status = status.get(PLUGIN).unwrap_or(&status);
    assert!(
        matches!(&status["alive"], Value::Bool(true)) || status["alive"].as_str() == Some("true"),
        "{status}"
    );
    assert!(status.get("lastSuccess").is_some(), "{status}");
    assert!(
        status.get("lastFailure").is_none(),
        "no failure recorded: {status}"
    );

    // Running igor-install again changes nothing.
    let again = Command::new(healthpull_bin())
        .arg("--config")
        .arg(&world.config_path)
        .args([
            "igor-install",
            "--igor-url",
            &igor.url,
            "--igor-password-env",
            IGOR_ADMIN_ENV,
            PLUGIN,
            "--user",
            USER,
            "--server-url",
            &world.server.url,
        ])
        .env(IGOR_ADMIN_ENV, "admin")
        .envs(world.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(world.dir.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT, again)
        .await
        .expect("igor-install finishes")
        .expect("run igor-install");
    assert!(output.status.success(), "{output:?}");
    let actions_after = igor.admin_get_ok("/data/actions", "application/xml").await;
    assert_eq!(
        actions_after.matches(&action_url).count(),
        1,
        "one action per user: {actions_after}"
    );
    world.assert_no_secrets();
    world.assert_no_secrets_in("igor-install's output", &format!("{stdout}{stderr}"));
    assert!(!world.server.log().contains(&service_password));
}

// ---------------------------------------------------------------------------------------
// 8. Load
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fetches_for_fifty_users_refresh_once_each() {
    const USERS: usize = 50;
    const REQUESTS: usize = 200;
    let fake = FakeProvider::start(FakeConfig {
        record_requests: false,
        ..FakeConfig::fitbit()
    })
    .await;
    // Seed the store before the server starts: the app, and one token per user that the
    // provider has expired (half of them expired in the store too: proactive refresh;
    // the other half only at the provider: refresh after the 401).
    let dir = tempfile::Builder::new()
        .prefix("healthpull-serve-load-")
        .tempdir()
        .expect("create a temporary directory");
    let db_path = dir.path().join("store/healthpull.db");
    {
        let store = SqliteStore::open(&db_path).expect("open the store");
        let config = fake.config();
        store
            .put(
                &format!("plugindata/{PLUGIN}/client_id"),
                &json!(config.client_id),
            )
            .await
            .expect("put");
        store
            .put(
                &format!("plugindata/{PLUGIN}/client_secret"),
                &json!(config.client_secret),
            )
            .await
            .expect("put");
        let now = Utc::now().timestamp();
        for i in 0..USERS {
            let grant = fake.grant(&format!("P{i:03}"));
            fake.expire_access_token(&grant.user);
            let expires_at = if i % 2 == 0 {
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
            store
                .put(
                    &format!("identities/u{i:03}/plugindata/{PLUGIN}/token"),
                    &token,
                )
                .await
                .expect("put a token");
        }
        store.save().await.expect("save");
    }
    let config_path = dir.path().join("healthpull.yaml");
    std::fs::write(
        &config_path,
        format!(
            "providers_dir: {}\nstore:\n  kind: embedded\n  path: {}\nlock_dir: {}\nplugins:\n  {PLUGIN}:\n    provider: fitbit\n    authorize_url: {}\n    token_url: {}\n    base_url: {}\n",
            quoted(root().join("providers").to_str().expect("UTF-8 path")),
            quoted(db_path.to_str().expect("UTF-8 path")),
            quoted(dir.path().join("locks").to_str().expect("UTF-8 path")),
            quoted(&fake.authorize_url()),
            quoted(&fake.token_url()),
            quoted(&fake.base_url()),
        ),
    )
    .expect("write the config");
    let server = Server::start(&config_path, dir.path(), &[], &[]).await;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(REQUESTS)
        .no_proxy()
        .build()
        .expect("client");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..REQUESTS {
        let url = format!(
            "{}/plugin/{PLUGIN}?user=u{:03}&methods=get_bodyweight&base_date={DAY}",
            server.url,
            n % USERS
        );
        let http = http.clone();
        tasks.spawn(async move {
            let response = http.get(&url).send().await;
            match response {
                Ok(r) => {
                    let status = r.status().as_u16();
                    (url, status, r.text().await.unwrap_or_default())
                }
                Err(e) => (url, 0, e.to_string()),
            }
        });
    }
    let results = tokio::time::timeout(Duration::from_secs(180), tasks.join_all())
        .await
        .unwrap_or_else(|_| panic!("{REQUESTS} fetches did not finish within 180 s"));
    let elapsed = started.elapsed();
    let failed: Vec<_> = results.iter().filter(|(_, s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {REQUESTS} failed, e.g. {:?}\n{}",
        failed.len(),
        failed.first(),
        server.log()
    );
    for i in 0..USERS {
        let user = format!("P{i:03}");
        assert_eq!(
            fake.refresh_count(&user),
            1,
            "{user}: one refresh for four concurrent fetches"
        );
    }
    let store = SqliteStore::open(&db_path).expect("open the store");
    for i in 0..USERS {
        let token = store
            .get(&format!("identities/u{i:03}/plugindata/{PLUGIN}/token"))
            .await
            .expect("read")
            .expect("a token");
        let issued = fake.issued_tokens(&format!("P{i:03}"));
        let last = issued.last().expect("issued tokens");
        assert_eq!(last.kind, IssueKind::Refresh);
        assert_eq!(token["access_token"], json!(last.access_token), "u{i:03}");
        let sensors = store
            .get(&format!("sensors/{PLUGIN}/u{i:03}"))
            .await
            .expect("read");
        assert!(sensors.is_some(), "u{i:03} stored");
    }
    eprintln!("{REQUESTS} concurrent fetches for {USERS} users: {elapsed:?}");
}

// ---------------------------------------------------------------------------------------
// User names and settings checked at every entry point
// ---------------------------------------------------------------------------------------

/// A user name that is not an Igor element name without `/` is refused with 400 at every
/// entry point that takes one, before anything is read or written; `jack/body-weight`
/// can no longer reach into jack's tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_names_that_are_not_element_names_are_refused_everywhere() {
    let world = World::start(Setup::default()).await;
    world.register_app().await;
    world.seed_data();
    world.grant(USER).await;
    let reply = world
        .get(&format!(
            "/plugin/{PLUGIN}?user={USER}&base_date={DAY}&period=1d"
        ))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let before = world.stored(&format!("sensors/{PLUGIN}/{USER}")).await;
    assert!(before.is_some(), "jack's data is stored");
    let status_before = world.stored(&format!("plugindata/{PLUGIN}/status")).await;

    let long = "a".repeat(65);
    for bad in [
        "jack%2Fbody-weight",
        "..%2Fx",
        "1abc",
        "ja%00ck",
        "_e",
        "j%C3%A4ck",
        long.as_str(),
    ] {
        for path in [
            format!("/plugin/{PLUGIN}?user={bad}&methods=get_bodyweight"),
            format!("/plugin/{PLUGIN}/auth1?user={bad}"),
            format!("/plugin/{PLUGIN}/userSettings?user={bad}&period=7d"),
            format!("/plugin/{PLUGIN}/userSettings?user={bad}&deleteToken=1"),
        ] {
            let reply = world.get(&path).await;
            assert_eq!(reply.status, 400, "{path}: {reply:?}");
            assert!(reply.body.contains("user name"), "{path}: {reply:?}");
        }
        let page = world
            .get(&format!("/plugin/{PLUGIN}/page/setup.html?user={bad}"))
            .await;
        assert_eq!(page.status, 400, "setup page for {bad}: {page:?}");
        assert!(page.body.contains("id=\"user-error\""), "{}", page.body);
    }
    assert_eq!(
        world.stored(&format!("sensors/{PLUGIN}/{USER}")).await,
        before,
        "jack's data is untouched"
    );
    assert_eq!(
        world.stored(&format!("plugindata/{PLUGIN}/status")).await,
        status_before,
        "no status was written for a refused name"
    );
    assert!(
        world
            .stored(&format!("plugindata/{PLUGIN}/pending"))
            .await
            .and_then(|p| p.as_object().map(|m| m.len()))
            .unwrap_or(0)
            == 0,
        "no consent was started for a refused name"
    );
}

/// `system` and a user's stored defaults are checked when written, through the entry
/// points and the setup page, and refused with the accepted values listed; on the page
/// the error stands beside the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_refuse_unknown_systems_and_undeclared_defaults() {
    let world = World::start(Setup::default()).await;
    let app = format!("plugindata/{PLUGIN}");
    let reply = world
        .get(&format!("/plugin/{PLUGIN}/settings?system=imperial"))
        .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    for accepted in ["en_US", "en_GB", "metric"] {
        assert!(reply.body.contains(accepted), "{reply:?}");
    }
    assert_eq!(world.stored(&format!("{app}/system")).await, None);
    let reply = world
        .get(&format!("/plugin/{PLUGIN}/settings?system=nl_NL"))
        .await;
    assert_eq!(reply.status, 200, "a locale means metric: {reply:?}");

    let user_settings = format!("/plugin/{PLUGIN}/userSettings?user={USER}");
    let reply = world.get(&format!("{user_settings}&perod=7d")).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(
        reply.body.contains("perod") && reply.body.contains("period"),
        "the declared keys are listed: {reply:?}"
    );
    let reply = world
        .get(&format!("{user_settings}&methods=get_weight"))
        .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.body.contains("get_bodyweight"), "{reply:?}");
    let reply = world.get(&format!("{user_settings}&period=7x")).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(
        world
            .stored(&format!("identities/{USER}/plugindata/{PLUGIN}"))
            .await,
        None,
        "nothing was written"
    );

    // The page's forms: the page again, with the error beside the field.
    let token = world.csrf(&[]).await;
    let page_path = format!("/plugin/{PLUGIN}/page/setup.html?user={USER}");
    let reply = world
        .post_form(
            &format!("/plugin/{PLUGIN}/settings"),
            &[
                ("system", "imperial"),
                ("_csrf", &token),
                ("returnTo", &page_path),
            ],
            &[],
        )
        .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.content_type.starts_with("text/html"), "{reply:?}");
    let beside = reply
        .body
        .split("id=\"system\"")
        .nth(1)
        .expect("the system field is on the page");
    assert!(
        beside
            .split("</label>")
            .next()
            .unwrap_or("")
            .contains("id=\"error-system\""),
        "the error is inside the system field's label: {}",
        reply.body
    );
    assert!(
        reply.body.contains("provider default: US (pounds, miles)"),
        "the page says what the provider default means: {}",
        reply.body
    );
    let reply = world
        .post_form(
            &format!("/plugin/{PLUGIN}/userSettings"),
            &[("user", USER), ("_csrf", &token), ("returnTo", &page_path)],
            &[],
        )
        .await;
    assert_eq!(reply.status, 303, "the user is created: {reply:?}");
    let reply = world
        .post_form(
            &format!("/plugin/{PLUGIN}/userSettings"),
            &[
                ("user", USER),
                ("_newName", "perod"),
                ("_newValue", "7d"),
                ("_csrf", &token),
                ("returnTo", &page_path),
            ],
            &[],
        )
        .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    let row = reply
        .body
        .split("id=\"new-value\"")
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap_or("");
    assert!(
        row.contains("id=\"error-new\"") && row.contains("perod"),
        "the error is beside the new setting: {}",
        reply.body
    );
    assert_eq!(
        world
            .stored(&format!("identities/{USER}/plugindata/{PLUGIN}"))
            .await,
        Some(json!({})),
        "nothing but the user was written"
    );
}
