//! A fake OAuth2 health-data provider speaking real HTTP on 127.0.0.1, for the integration
//! tests and benchmarks.
//!
//! One [`FakeProvider`] serves one [`Dialect`] (Fitbit legacy Web API, Google Health API or
//! Withings); the state behind all three is the same: a registered client, users with data,
//! authorization codes, access and refresh tokens, a per-user rate limit and injectable faults.
//! The wire formats follow `shared/reference/` and `shared/fixtures/`:
//!
//! * consent at `GET /authorize` (302 straight back with `auto_consent`, else an HTML page whose
//!   "Allow" button posts to `/authorize/approve`), PKCE S256 required / optional / ignored;
//! * the token endpoint (`/oauth2/token`, `/token`, `/v2/oauth2` + `action=requesttoken`) with
//!   each dialect's client authentication, response and error shapes, and refresh semantics
//!   (Fitbit and Withings: single-use rotation with replay of the same answer until the new pair
//!   is used; Google: the refresh token never rotates);
//! * data endpoints with deterministic, invented default data per user (or seeded data):
//!   Fitbit weight / fat logs and heart rate, Google `dataPoints` lists with `pageToken`
//!   pagination and AIP-160 filters, Withings `getmeas` with `more`/`offset` paging;
//! * token revocation (RFC 7009) at `POST /revoke` with the dialect's client authentication,
//!   recorded and, on request, failing;
//! * a token endpoint that echoes the request (headers and body) in its error answer, the way
//!   some providers' error pages do, to check that our side redacts secrets as sent;
//! * introspection for assertions: every request as received (secrets included, so tests can
//!   check that our side never leaks them), refresh counts, issued tokens.
//!
//! The file is self-contained (tokio, axum, serde_json, base64, sha2, rand, url, chrono only; no
//! `crate::` paths) so that a benchmark or a bin can include it with `#[path = ...]`.

// This module is shared by many test files, benchmarks and bins that each use a different part
// of it; the parts one of them does not use would otherwise be reported as dead code.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, TimeZone, Timelike, Utc};
use rand::RngCore as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use url::Url;

/// Which provider the fake imitates: paths, client authentication, token and error shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// The legacy Fitbit Web API (`api.fitbit.com`).
    Fitbit,
    /// The Google Health API (`health.googleapis.com` v4 + Google OAuth).
    Google,
    /// The Withings Public Health Data API (`wbsapi.withings.net`).
    Withings,
}

impl Dialect {
    /// The path of the token endpoint (code exchange and refresh).
    pub fn token_path(self) -> &'static str {
        match self {
            Dialect::Fitbit => "/oauth2/token",
            Dialect::Google => "/token",
            Dialect::Withings => "/v2/oauth2",
        }
    }

    /// The provider's own authorize path; `/authorize` is served in every dialect as well.
    pub fn authorize_alias(self) -> &'static str {
        match self {
            Dialect::Fitbit => "/oauth2/authorize",
            Dialect::Google => "/o/oauth2/v2/auth",
            Dialect::Withings => "/oauth2_user/authorize2",
        }
    }

    /// How the dialect separates scopes in the authorize URL and in token responses.
    pub fn scope_separator(self) -> char {
        match self {
            Dialect::Fitbit | Dialect::Google => ' ',
            Dialect::Withings => ',',
        }
    }
}

/// How the authorize endpoint treats PKCE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pkce {
    /// `code_challenge` with `code_challenge_method=S256` must be sent.
    Required,
    /// A challenge may be sent; if it is, it must be S256 and the verifier is checked.
    Optional,
    /// Challenges are dropped and verifiers never checked (Withings).
    Ignored,
}

/// A per-user request budget over a fixed window that starts with the first request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub limit: u32,
    /// Length of the window.
    pub window: Duration,
}

/// Everything configurable at start; see [`FakeConfig::fitbit`], [`FakeConfig::google`] and
/// [`FakeConfig::withings`] for each dialect's realistic defaults.
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// The provider to imitate.
    pub dialect: Dialect,
    /// The registered client's id.
    pub client_id: String,
    /// The registered client's secret.
    pub client_secret: String,
    /// Registered redirect URIs (exact match).
    pub redirect_uris: Vec<String>,
    /// Also accept any `http` loopback redirect URI (127.0.0.1, localhost, [::1], any port).
    pub allow_loopback_redirects: bool,
    /// PKCE handling at the authorize and token endpoints.
    pub pkce: Pkce,
    /// Reject an authorize request without `state`.
    pub require_state: bool,
    /// Scopes a client may request; empty accepts any non-empty scope.
    pub known_scopes: Vec<String>,
    /// The scope granted by [`FakeProvider::grant`] (dialect separator).
    pub default_scope: String,
    /// Answer `/authorize` with a 302 at once instead of an HTML consent page.
    pub auto_consent: bool,
    /// The user who consents when the authorize URL carries no `login_hint`.
    pub default_user: String,
    /// Access-token lifetime in seconds (`expires_in`).
    pub access_token_lifetime: u64,
    /// Authorization-code lifetime.
    pub code_lifetime: Duration,
    /// Per-user API rate limit; `None` disables it.
    pub rate_limit: Option<RateLimit>,
    /// Answer every request with 410 Gone (the retired Fitbit Web API).
    pub retired: bool,
    /// Users without seeded data get deterministic invented data.
    pub default_data: bool,
    /// Measure groups per `getmeas` page (Withings).
    pub withings_page_size: usize,
    /// Google: issue a refresh token on the code exchange only with `access_type=offline`.
    pub google_offline_access_required: bool,
    /// Record every request (turn off for long benchmarks).
    pub record_requests: bool,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig::fitbit()
    }
}

impl FakeConfig {
    /// Fitbit: HTTP Basic client auth, PKCE optional, 8 h tokens, 150 requests per hour per user.
    pub fn fitbit() -> Self {
        FakeConfig {
            dialect: Dialect::Fitbit,
            client_id: "23FAKE".to_owned(),
            client_secret: "fitbit-client-secret-0123456789abcdef".to_owned(),
            redirect_uris: Vec::new(),
            allow_loopback_redirects: true,
            pkce: Pkce::Optional,
            require_state: true,
            known_scopes: to_strings(&[
                "activity",
                "cardio_fitness",
                "electrocardiogram",
                "heartrate",
                "irregular_rhythm_notifications",
                "location",
                "nutrition",
                "oxygen_saturation",
                "profile",
                "respiratory_rate",
                "settings",
                "sleep",
                "social",
                "temperature",
                "weight",
            ]),
            default_scope: "activity heartrate profile settings sleep weight".to_owned(),
            auto_consent: true,
            default_user: "26FWFL".to_owned(),
            access_token_lifetime: 28_800,
            code_lifetime: Duration::from_secs(600),
            rate_limit: Some(RateLimit {
                limit: 150,
                window: Duration::from_secs(3600),
            }),
            retired: false,
            default_data: true,
            withings_page_size: 10,
            google_offline_access_required: true,
            record_requests: true,
        }
    }

    /// Google: form-body client auth, PKCE optional, 1 h tokens, non-rotating refresh tokens.
    pub fn google() -> Self {
        let prefix = "https://www.googleapis.com/auth/googlehealth.";
        let known_scopes = [
            "activity_and_fitness.readonly",
            "activity_and_fitness.writeonly",
            "health_metrics_and_measurements.readonly",
            "health_metrics_and_measurements.writeonly",
            "sleep.readonly",
            "sleep.writeonly",
            "location.readonly",
            "ecg.readonly",
            "irn.readonly",
            "nutrition.writeonly",
            "profile.readonly",
            "profile.writeonly",
            "settings.readonly",
            "settings.writeonly",
        ]
        .iter()
        .map(|scope| format!("{prefix}{scope}"))
        .collect();
        FakeConfig {
            dialect: Dialect::Google,
            client_id: "123456789012-fake.apps.googleusercontent.com".to_owned(),
            client_secret: "GOCSPX-fake-google-client-secret".to_owned(),
            known_scopes,
            default_scope: format!(
                "{prefix}health_metrics_and_measurements.readonly \
                 {prefix}activity_and_fitness.readonly {prefix}sleep.readonly"
            ),
            default_user: "104857600123456789".to_owned(),
            access_token_lifetime: 3599,
            rate_limit: None,
            ..FakeConfig::fitbit()
        }
    }

    /// Withings: form-body client auth, no PKCE, 3 h tokens, rotating refresh tokens, envelopes.
    pub fn withings() -> Self {
        FakeConfig {
            dialect: Dialect::Withings,
            client_id: "withings-fake-client-id-0123456789abcdef".to_owned(),
            client_secret: "withings-fake-client-secret-0123456789".to_owned(),
            pkce: Pkce::Ignored,
            known_scopes: to_strings(&[
                "user.info",
                "user.metrics",
                "user.activity",
                "user.sleepevents",
            ]),
            default_scope: "user.metrics,user.activity".to_owned(),
            default_user: "363".to_owned(),
            access_token_lifetime: 10_800,
            rate_limit: None,
            ..FakeConfig::fitbit()
        }
    }

    /// The defaults of `dialect`.
    pub fn for_dialect(dialect: Dialect) -> Self {
        match dialect {
            Dialect::Fitbit => FakeConfig::fitbit(),
            Dialect::Google => FakeConfig::google(),
            Dialect::Withings => FakeConfig::withings(),
        }
    }
}

/// The value of an injected `Retry-After` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetryAfter {
    /// `Retry-After: <seconds>`.
    Seconds(u64),
    /// `Retry-After: <IMF-fixdate>`, e.g. `Wed, 21 Oct 2026 07:28:00 GMT`.
    HttpDate(DateTime<Utc>),
    /// No header at all.
    Omitted,
}

/// A fault served instead of (or around) the normal answer; see [`FakeProvider::inject_fault`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer this HTTP status with a small body in the dialect's error shape, nothing processed.
    Status(u16),
    /// Answer 429 with the given `Retry-After`, nothing processed.
    TooManyRequests(RetryAfter),
    /// Wait this long, then process and answer normally (a client timeout can lose the answer).
    Delay(Duration),
    /// Answer 200 with `Content-Type: application/json` and a truncated JSON body.
    InvalidJson,
    /// Close the connection without any answer; the request is not processed.
    Drop,
    /// Process the request (tokens are issued, codes consumed), then close without an answer.
    DropAfterHandling,
}

/// One call of the revocation endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationRequest {
    /// The `token` field.
    pub token: String,
    /// The `token_type_hint` field.
    pub token_type_hint: Option<String>,
    /// Whether the client authenticated correctly (the dialect's way).
    pub client_authenticated: bool,
    /// The user whose tokens were revoked, when the token was known and the call succeeded.
    pub revoked_user: Option<String>,
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Arrival order, starting at 0.
    pub seq: u64,
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The raw query string (`""` when absent).
    pub query: String,
    /// The decoded query pairs.
    pub query_pairs: Vec<(String, String)>,
    /// Headers with lower-case names, values as received (secrets included).
    pub headers: Vec<(String, String)>,
    /// The raw body (lossy UTF-8).
    pub body: String,
    /// The decoded form pairs of an `application/x-www-form-urlencoded` body.
    pub form: Vec<(String, String)>,
    /// The user the request was attributed to (by access token, refresh token or code).
    pub user: Option<String>,
    /// The fault served for this request, if any.
    pub fault: Option<Fault>,
}

impl RecordedRequest {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The first query parameter named `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        first(&self.query_pairs, name)
    }

    /// The first form field named `name`.
    pub fn form_param(&self, name: &str) -> Option<&str> {
        first(&self.form, name)
    }
}

/// How a token pair came to exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueKind {
    /// Authorization-code exchange.
    CodeExchange,
    /// Refresh grant (not counted again when a replay returns the same pair).
    Refresh,
    /// Seeded directly with [`FakeProvider::grant`].
    Grant,
}

/// A token pair the fake issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedTokens {
    /// The user the tokens belong to.
    pub user: String,
    /// The access token.
    pub access_token: String,
    /// The refresh token sent in this response (`None` for a Google refresh, which keeps the old
    /// one, and for a Google code exchange without `access_type=offline`).
    pub refresh_token: Option<String>,
    /// The granted scope, dialect separator.
    pub scope: String,
    /// `expires_in` as sent.
    pub expires_in: u64,
    /// When the access token expires (fake clock).
    pub expires_at: DateTime<Utc>,
    /// How it was issued.
    pub kind: IssueKind,
}

/// A valid token pair seeded with [`FakeProvider::grant`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenGrant {
    /// The user (provider user id).
    pub user: String,
    /// A fresh access token.
    pub access_token: String,
    /// A fresh refresh token.
    pub refresh_token: String,
    /// Access-token lifetime in seconds.
    pub expires_in: u64,
    /// When the access token expires (fake clock).
    pub expires_at: DateTime<Utc>,
    /// The granted scope, dialect separator.
    pub scope: String,
}

/// The running fake; the server stops when it is dropped.
pub struct FakeProvider {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl FakeProvider {
    /// Binds 127.0.0.1 on an OS-chosen port and starts serving.
    pub async fn start(config: FakeConfig) -> FakeProvider {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake provider on 127.0.0.1");
        let addr = listener.local_addr().expect("fake provider address");
        let shared = Arc::new(Shared {
            state: Mutex::new(FakeState::new(config)),
            connections: Arc::new(Mutex::new(Vec::new())),
        });
        let listener = FakeListener {
            inner: listener,
            connections: shared.connections.clone(),
        };
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = tokio::spawn(async move {
            let make_service = app.into_make_service_with_connect_info::<ConnHandle>();
            let _ = axum::serve(listener, make_service).await;
        });
        FakeProvider {
            shared,
            addr,
            server,
        }
    }

    /// `http://127.0.0.1:<port>`, the base of every endpoint (authorize, token and API).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The dialect served.
    pub fn dialect(&self) -> Dialect {
        self.shared.lock().config.dialect
    }

    /// A copy of the configuration (with the runtime switches as currently set).
    pub fn config(&self) -> FakeConfig {
        self.shared.lock().config.clone()
    }

    /// `<base>/authorize`.
    pub fn authorize_url(&self) -> String {
        format!("{}/authorize", self.base_url())
    }

    /// `<base><dialect token path>`.
    pub fn token_url(&self) -> String {
        format!("{}{}", self.base_url(), self.dialect().token_path())
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The requests whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<RecordedRequest> {
        let state = self.shared.lock();
        state
            .requests
            .iter()
            .filter(|request| request.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Refresh-grant requests that presented one of `user`'s refresh tokens, whatever the outcome
    /// (replays and rejected stale tokens included).
    pub fn refresh_count(&self, user: &str) -> usize {
        let state = self.shared.lock();
        state
            .users
            .get(user)
            .map_or(0, |data| data.refresh_requests)
    }

    /// Refresh-grant requests that presented exactly `refresh_token`, whatever the outcome.
    pub fn refresh_count_for(&self, refresh_token: &str) -> usize {
        let state = self.shared.lock();
        state
            .refresh_requests_by_token
            .get(refresh_token)
            .copied()
            .unwrap_or(0)
    }

    /// API requests by `user` that passed authentication (rate-limited ones included).
    pub fn api_call_count(&self, user: &str) -> usize {
        let state = self.shared.lock();
        state.users.get(user).map_or(0, |data| data.api_calls)
    }

    /// The token pairs issued to `user`, oldest first (a replayed answer adds nothing).
    pub fn issued_tokens(&self, user: &str) -> Vec<IssuedTokens> {
        let state = self.shared.lock();
        state
            .issued
            .iter()
            .filter(|issued| issued.tokens.user == user)
            .map(|issued| issued.tokens.clone())
            .collect()
    }

    /// The users known to the fake (consented, granted or seeded).
    pub fn users(&self) -> Vec<String> {
        let state = self.shared.lock();
        let mut users: Vec<String> = state.users.keys().cloned().collect();
        users.sort();
        users
    }

    /// Seeds `user` with a valid pair (scope [`FakeConfig::default_scope`]) without consent.
    /// Fitbit keeps one refresh token per user, so earlier refresh tokens become invalid.
    pub fn grant(&self, user: &str) -> TokenGrant {
        let scope = self.shared.lock().config.default_scope.clone();
        self.grant_with_scope(user, &scope)
    }

    /// Like [`FakeProvider::grant`] with an explicit scope string.
    pub fn grant_with_scope(&self, user: &str, scope: &str) -> TokenGrant {
        let mut state = self.shared.lock();
        let index = state.issue_initial(user, scope, IssueKind::Grant, true);
        let tokens = &state.issued[index].tokens;
        TokenGrant {
            user: tokens.user.clone(),
            access_token: tokens.access_token.clone(),
            refresh_token: tokens.refresh_token.clone().unwrap_or_default(),
            expires_in: tokens.expires_in,
            expires_at: tokens.expires_at,
            scope: tokens.scope.clone(),
        }
    }

    /// Makes every access token of `user` expired now; API calls with them get the dialect's 401.
    pub fn expire_access_token(&self, user: &str) {
        let mut state = self.shared.lock();
        let now = state.now();
        for record in state.access.values_mut() {
            if record.user == user {
                record.expires_at = now;
            }
        }
    }

    /// Revokes every token of `user` (access tokens unknown, refresh tokens `invalid_grant`).
    pub fn revoke(&self, user: &str) {
        let mut state = self.shared.lock();
        state.access.retain(|_, record| record.user != user);
        for record in state.refresh.values_mut() {
            if record.user == user {
                record.state = RefreshState::Revoked;
            }
        }
    }

    /// The RFC 7009 revocation endpoint.
    pub fn revoke_url(&self) -> String {
        format!("{}/revoke", self.base_url())
    }

    /// Every call of the revocation endpoint, in order.
    pub fn revocations(&self) -> Vec<RevocationRequest> {
        self.shared.lock().revocations.clone()
    }

    /// Makes the revocation endpoint answer this status (and revoke nothing); `None` heals it.
    pub fn fail_revocations(&self, status: Option<u16>) {
        self.shared.lock().revocation_failure = status;
    }

    /// Makes the token endpoint answer every request with an error (400, the dialect's shape)
    /// whose message echoes the request: its headers, its raw body, the body re-encoded as a
    /// query string (`%20` for a space), and its form fields as PHP-style JSON (`\/` for `/`).
    pub fn set_echo_token_requests(&self, echo: bool) {
        self.shared.lock().echo_token_requests = echo;
    }

    /// Switches the retired mode (410 Gone on every endpoint).
    pub fn set_retired(&self, retired: bool) {
        self.shared.lock().config.retired = retired;
    }

    /// Switches between the 302-at-once consent and the HTML consent page.
    pub fn set_auto_consent(&self, auto_consent: bool) {
        self.shared.lock().config.auto_consent = auto_consent;
    }

    /// Replaces the rate limit; running windows are restarted.
    pub fn set_rate_limit(&self, rate_limit: Option<RateLimit>) {
        let mut state = self.shared.lock();
        state.config.rate_limit = rate_limit;
        for data in state.users.values_mut() {
            data.rate_window = None;
        }
    }

    /// Moves the fake's clock forward (token and code expiry, rate windows, default data dates).
    pub fn advance_clock(&self, by: Duration) {
        self.shared.lock().clock_offset += by;
    }

    /// Serves `fault` for the next `times` requests whose path starts with `path_prefix`.
    /// Rules are tried in insertion order; the first matching one with requests left wins.
    pub fn inject_fault(&self, path_prefix: &str, fault: Fault, times: usize) {
        self.shared.lock().faults.push(FaultRule {
            path_prefix: path_prefix.to_owned(),
            fault,
            remaining: times,
        });
    }

    /// Removes every pending fault.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Answers 200 with `body` for any authenticated API request on exactly `path`, any user.
    /// The JSON is written once, here: a large body (a day of one-second points) is then
    /// served without being copied and serialized again for every request.
    pub fn seed_body(&self, path: &str, body: Value) {
        self.shared
            .lock()
            .global_bodies
            .insert(path.to_owned(), json_bytes(&body));
    }

    /// Like [`FakeProvider::seed_body`] for one user only; takes precedence.
    pub fn seed_user_body(&self, user: &str, path: &str, body: Value) {
        self.shared
            .lock()
            .user_mut(user)
            .bodies
            .insert(path.to_owned(), json_bytes(&body));
    }

    /// Replaces `user`'s Fitbit weight log entries (objects with at least `date`), returned as
    /// they are for the dates asked (no unit conversion).
    pub fn seed_fitbit_weight(&self, user: &str, entries: Vec<Value>) {
        self.shared.lock().user_mut(user).fitbit_weight = Some(entries);
    }

    /// Replaces `user`'s Fitbit body-fat log entries (objects with at least `date`).
    pub fn seed_fitbit_fat(&self, user: &str, entries: Vec<Value>) {
        self.shared.lock().user_mut(user).fitbit_fat = Some(entries);
    }

    /// Replaces `user`'s Google data points of `data_type` (kebab-case URL id), in the order to
    /// serve them (Google serves newest first).
    pub fn seed_google(&self, user: &str, data_type: &str, points: Vec<Value>) {
        self.shared
            .lock()
            .user_mut(user)
            .google
            .insert(data_type.to_owned(), points);
    }

    /// Replaces `user`'s Withings measure groups (objects with `date`, `category`, `modified`,
    /// `measures`), in the order to serve them.
    pub fn seed_withings(&self, user: &str, groups: Vec<Value>) {
        self.shared.lock().user_mut(user).withings = Some(groups);
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.server.abort();
        let connections = self
            .shared
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for connection in connections.iter().filter_map(Weak::upgrade) {
            connection.kill();
        }
    }
}

/// The PKCE S256 challenge of `verifier` (base64url of its SHA-256, no padding).
pub fn pkce_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

// ---------------------------------------------------------------------------------------------
// Server plumbing: a listener whose connections can be closed from a handler.

type ConnectionRegistry = Arc<Mutex<Vec<Weak<ConnControl>>>>;

struct Shared {
    state: Mutex<FakeState>,
    connections: ConnectionRegistry,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Closes one connection: reads see end of file, writes fail.
#[derive(Default)]
struct ConnControl {
    killed: AtomicBool,
    read_waker: Mutex<Option<Waker>>,
}

impl ConnControl {
    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        let waker = self
            .read_waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }
}

struct FakeListener {
    inner: TcpListener,
    connections: ConnectionRegistry,
}

impl Listener for FakeListener {
    type Io = FakeStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    let control = Arc::new(ConnControl::default());
                    let mut connections = self
                        .connections
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    connections.retain(|weak| weak.strong_count() > 0);
                    connections.push(Arc::downgrade(&control));
                    return (
                        FakeStream {
                            inner: stream,
                            control,
                        },
                        remote,
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

struct FakeStream {
    inner: TcpStream,
    control: Arc<ConnControl>,
}

impl AsyncRead for FakeStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.control.is_killed() {
            return Poll::Ready(Ok(()));
        }
        {
            let mut waker = this
                .control
                .read_waker
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
        }
        // Checked again after storing the waker so that a concurrent kill is never missed.
        if this.control.is_killed() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FakeStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.control.is_killed() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.control.is_killed() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Hands the connection's kill switch to the handler.
#[derive(Clone)]
struct ConnHandle(Arc<ConnControl>);

impl Connected<IncomingStream<'_, FakeListener>> for ConnHandle {
    fn connect_info(stream: IncomingStream<'_, FakeListener>) -> Self {
        ConnHandle(stream.io().control.clone())
    }
}

const MAX_BODY_BYTES: usize = 1 << 20;

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(connection): ConnectInfo<ConnHandle>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .unwrap_or_default();
    let incoming = Incoming::new(parts, &body);
    let (seq, fault) = shared.lock().arrive(&incoming);
    match &fault {
        Some(Fault::Delay(delay)) => tokio::time::sleep(*delay).await,
        Some(Fault::Drop) => {
            connection.0.kill();
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Some(Fault::DropAfterHandling) | None => {}
        Some(other) => return shared.lock().fault_response(other),
    }
    let response = {
        let mut state = shared.lock();
        let (response, user) = state.route(&incoming);
        state.attribute(seq, user);
        response
    };
    if fault == Some(Fault::DropAfterHandling) {
        connection.0.kill();
    }
    response
}

/// A request as the router needs it.
struct Incoming {
    method: Method,
    path: String,
    query: String,
    query_pairs: Vec<(String, String)>,
    headers: HeaderMap,
    body: String,
    form: Vec<(String, String)>,
}

impl Incoming {
    fn new(parts: Parts, body: &Bytes) -> Incoming {
        let query = parts.uri.query().unwrap_or("").to_owned();
        let query_pairs = parse_pairs(query.as_bytes());
        let is_form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.contains("application/x-www-form-urlencoded"));
        let form = if is_form {
            parse_pairs(body)
        } else {
            Vec::new()
        };
        Incoming {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query,
            query_pairs,
            headers: parts.headers,
            body: String::from_utf8_lossy(body).into_owned(),
            form,
        }
    }

    fn query_param(&self, name: &str) -> Option<&str> {
        first(&self.query_pairs, name)
    }

    fn form_param(&self, name: &str) -> Option<&str> {
        first(&self.form, name)
    }

    /// A form field, else a query parameter (Withings accepts both).
    fn param(&self, name: &str) -> Option<&str> {
        self.form_param(name).or_else(|| self.query_param(name))
    }
}

// ---------------------------------------------------------------------------------------------
// State.

struct FakeState {
    config: FakeConfig,
    clock_offset: Duration,
    next_seq: u64,
    requests: Vec<RecordedRequest>,
    faults: Vec<FaultRule>,
    users: HashMap<String, UserData>,
    pending_consents: HashMap<String, Consent>,
    codes: HashMap<String, AuthCode>,
    access: HashMap<String, AccessRecord>,
    refresh: HashMap<String, RefreshRecord>,
    issued: Vec<IssuedRecord>,
    refresh_requests_by_token: HashMap<String, usize>,
    global_bodies: HashMap<String, Bytes>,
    page_tokens: HashMap<String, PageCursor>,
    echo_token_requests: bool,
    revocations: Vec<RevocationRequest>,
    revocation_failure: Option<u16>,
}

struct FaultRule {
    path_prefix: String,
    fault: Fault,
    remaining: usize,
}

#[derive(Default)]
struct UserData {
    refresh_requests: usize,
    api_calls: usize,
    /// Start of the running rate window and requests counted in it.
    rate_window: Option<(Instant, u32)>,
    bodies: HashMap<String, Bytes>,
    fitbit_weight: Option<Vec<Value>>,
    fitbit_fat: Option<Vec<Value>>,
    google: HashMap<String, Vec<Value>>,
    withings: Option<Vec<Value>>,
}

/// An authorize request that passed validation, waiting for the user's decision.
#[derive(Clone)]
struct Consent {
    user: String,
    redirect_uri: String,
    redirect_uri_sent: bool,
    scope: String,
    state: Option<String>,
    code_challenge: Option<String>,
    offline: bool,
}

struct AuthCode {
    consent: Consent,
    expires_at: Instant,
}

struct AccessRecord {
    user: String,
    expires_at: Instant,
    used: bool,
}

struct RefreshRecord {
    user: String,
    scope: String,
    state: RefreshState,
    /// Presented at the token endpoint at least once.
    presented: bool,
}

enum RefreshState {
    Active,
    /// Rotated into the pair at this index of `issued`.
    Rotated(usize),
    Revoked,
}

struct IssuedRecord {
    tokens: IssuedTokens,
    /// The exact token response, replayed for a repeated Fitbit/Withings refresh.
    response: Value,
}

struct PageCursor {
    user: String,
    data_type: String,
    filter: Option<String>,
    offset: usize,
}

enum Caller {
    User(String),
    Expired { token: String, user: String },
    Unknown(String),
    Missing,
}

impl FakeState {
    fn new(config: FakeConfig) -> FakeState {
        FakeState {
            config,
            clock_offset: Duration::ZERO,
            next_seq: 0,
            requests: Vec::new(),
            faults: Vec::new(),
            users: HashMap::new(),
            pending_consents: HashMap::new(),
            codes: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            issued: Vec::new(),
            refresh_requests_by_token: HashMap::new(),
            global_bodies: HashMap::new(),
            page_tokens: HashMap::new(),
            echo_token_requests: false,
            revocations: Vec::new(),
            revocation_failure: None,
        }
    }

    fn dialect(&self) -> Dialect {
        self.config.dialect
    }

    fn now(&self) -> Instant {
        Instant::now() + self.clock_offset
    }

    fn wall_now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::from_std(self.clock_offset).unwrap_or_default()
    }

    fn today(&self) -> NaiveDate {
        self.wall_now().date_naive()
    }

    fn user_mut(&mut self, user: &str) -> &mut UserData {
        self.users.entry(user.to_owned()).or_default()
    }

    /// Records the request and picks the fault to serve, if any.
    fn arrive(&mut self, incoming: &Incoming) -> (u64, Option<Fault>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let fault = self.take_fault(&incoming.path);
        if self.config.record_requests {
            let headers = incoming
                .headers
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.as_str().to_owned(), value)
                })
                .collect();
            self.requests.push(RecordedRequest {
                seq,
                method: incoming.method.to_string(),
                path: incoming.path.clone(),
                query: incoming.query.clone(),
                query_pairs: incoming.query_pairs.clone(),
                headers,
                body: incoming.body.clone(),
                form: incoming.form.clone(),
                user: None,
                fault: fault.clone(),
            });
        }
        (seq, fault)
    }

    fn take_fault(&mut self, path: &str) -> Option<Fault> {
        let index = self
            .faults
            .iter()
            .position(|rule| rule.remaining > 0 && path.starts_with(&rule.path_prefix))?;
        let rule = &mut self.faults[index];
        rule.remaining -= 1;
        let fault = rule.fault.clone();
        if rule.remaining == 0 {
            self.faults.remove(index);
        }
        Some(fault)
    }

    fn attribute(&mut self, seq: u64, user: Option<String>) {
        if user.is_none() {
            return;
        }
        if let Some(request) = self.requests.iter_mut().rev().find(|r| r.seq == seq) {
            request.user = user;
        }
    }

    fn fault_response(&self, fault: &Fault) -> Response {
        match fault {
            Fault::Status(code) => {
                let status =
                    StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                self.error_for_status(status, "Injected fault")
            }
            Fault::TooManyRequests(retry_after) => {
                let mut response =
                    self.error_for_status(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
                let value = match retry_after {
                    RetryAfter::Seconds(seconds) => Some(seconds.to_string()),
                    RetryAfter::HttpDate(at) => {
                        Some(at.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
                    }
                    RetryAfter::Omitted => None,
                };
                if let Some(value) = value {
                    set_header(&mut response, header::RETRY_AFTER, &value);
                }
                response
            }
            Fault::InvalidJson => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"weight":[{"bmi":23.57,"date":"2024-01-15","#,
            )
                .into_response(),
            Fault::Delay(_) | Fault::Drop | Fault::DropAfterHandling => {
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }

    /// A plain error answer with this HTTP status in the dialect's shape.
    fn error_for_status(&self, status: StatusCode, message: &str) -> Response {
        match self.dialect() {
            Dialect::Fitbit => {
                let error_type = if status.is_client_error() && status.as_u16() != 429 {
                    "request"
                } else {
                    "system"
                };
                fitbit_error(status, error_type, message)
            }
            Dialect::Google => google_error(status, message, None),
            Dialect::Withings => json_response(
                status,
                json!({"status": status.as_u16(), "body": {}, "error": message}),
            ),
        }
    }

    fn route(&mut self, request: &Incoming) -> (Response, Option<String>) {
        if self.config.retired {
            return (self.gone(), None);
        }
        let path = request.path.as_str();
        let dialect = self.dialect();
        if path == "/authorize" || path == dialect.authorize_alias() {
            if request.method != Method::GET {
                return (StatusCode::METHOD_NOT_ALLOWED.into_response(), None);
            }
            return self.authorize(request);
        }
        if path == "/authorize/approve" {
            if request.method != Method::POST {
                return (StatusCode::METHOD_NOT_ALLOWED.into_response(), None);
            }
            return self.approve(request);
        }
        if path == dialect.token_path() {
            if request.method != Method::POST {
                return (StatusCode::METHOD_NOT_ALLOWED.into_response(), None);
            }
            return self.token(request);
        }
        if path == "/revoke" {
            if request.method != Method::POST {
                return (StatusCode::METHOD_NOT_ALLOWED.into_response(), None);
            }
            return self.revoke_endpoint(request);
        }
        match dialect {
            Dialect::Fitbit => self.fitbit_api(request),
            Dialect::Google => self.google_api(request),
            Dialect::Withings => self.withings_api(request),
        }
    }

    fn gone(&self) -> Response {
        match self.dialect() {
            Dialect::Fitbit => fitbit_error(
                StatusCode::GONE,
                "system",
                "The Fitbit Web API has been retired. Use the Google Health API.",
            ),
            _ => self.error_for_status(StatusCode::GONE, "This API has been retired."),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Consent.

    fn authorize(&mut self, request: &Incoming) -> (Response, Option<String>) {
        let query = |name: &str| request.query_param(name).map(str::to_owned);
        if query("client_id").as_deref() != Some(self.config.client_id.as_str()) {
            return (
                error_page(StatusCode::BAD_REQUEST, "invalid_client: unknown client_id"),
                None,
            );
        }
        let (redirect_uri, redirect_uri_sent) = match query("redirect_uri") {
            Some(uri) => (uri, true),
            None if self.dialect() == Dialect::Fitbit && self.config.redirect_uris.len() == 1 => {
                (self.config.redirect_uris[0].clone(), false)
            }
            None => {
                return (
                    error_page(
                        StatusCode::BAD_REQUEST,
                        "invalid_request: missing redirect_uri",
                    ),
                    None,
                );
            }
        };
        if !self.redirect_allowed(&redirect_uri) {
            return (
                error_page(
                    StatusCode::BAD_REQUEST,
                    &format!("redirect_uri_mismatch: {redirect_uri} is not registered"),
                ),
                None,
            );
        }
        let state = query("state");
        let fail = |error: &str, description: &str| {
            let mut pairs = vec![("error", error), ("error_description", description)];
            if let Some(state) = &state {
                pairs.push(("state", state));
            }
            redirect_to(&redirect_uri, &pairs)
        };
        if query("response_type").as_deref() != Some("code") {
            return (
                fail("unsupported_response_type", "response_type must be code"),
                None,
            );
        }
        if state.is_none() && self.config.require_state {
            return (fail("invalid_request", "state is required"), None);
        }
        let separator = self.dialect().scope_separator();
        let mut scopes: Vec<&str> = Vec::new();
        for scope in request
            .query_param("scope")
            .unwrap_or("")
            .split(separator)
            .filter(|scope| !scope.is_empty())
        {
            if !self.config.known_scopes.is_empty()
                && !self.config.known_scopes.iter().any(|known| known == scope)
            {
                return (
                    fail("invalid_scope", &format!("unknown scope {scope}")),
                    None,
                );
            }
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        if scopes.is_empty() {
            return (fail("invalid_scope", "scope is required"), None);
        }
        let challenge = query("code_challenge");
        let method = query("code_challenge_method");
        let code_challenge = match self.config.pkce {
            Pkce::Ignored => None,
            Pkce::Required | Pkce::Optional => {
                if challenge.is_none() && self.config.pkce == Pkce::Required {
                    return (fail("invalid_request", "code_challenge is required"), None);
                }
                if let Some(challenge) = &challenge {
                    if method.as_deref() != Some("S256") {
                        return (
                            fail("invalid_request", "code_challenge_method must be S256"),
                            None,
                        );
                    }
                    if challenge.len() != 43 || !is_base64url(challenge) {
                        return (fail("invalid_request", "malformed code_challenge"), None);
                    }
                }
                challenge
            }
        };
        let user = query("login_hint").unwrap_or_else(|| self.config.default_user.clone());
        let consent = Consent {
            user: user.clone(),
            redirect_uri,
            redirect_uri_sent,
            scope: scopes.join(&separator.to_string()),
            state,
            code_challenge,
            offline: query("access_type").as_deref() == Some("offline"),
        };
        if self.config.auto_consent {
            return (self.approve_consent(consent), Some(user));
        }
        let id = random_token(16);
        let page = consent_page(&id, &self.config.client_id, &consent);
        self.pending_consents.insert(id, consent);
        (page, Some(user))
    }

    fn approve(&mut self, request: &Incoming) -> (Response, Option<String>) {
        let Some(mut consent) = request
            .form_param("request")
            .and_then(|id| self.pending_consents.remove(id))
        else {
            return (
                error_page(StatusCode::BAD_REQUEST, "unknown or used consent request"),
                None,
            );
        };
        if let Some(user) = request.form_param("user").filter(|user| !user.is_empty()) {
            consent.user = user.to_owned();
        }
        let user = consent.user.clone();
        if request.form_param("decision") == Some("deny") {
            let mut pairs = vec![
                ("error", "access_denied"),
                ("error_description", "The user denied access"),
            ];
            if let Some(state) = &consent.state {
                pairs.push(("state", state));
            }
            return (redirect_to(&consent.redirect_uri, &pairs), Some(user));
        }
        (self.approve_consent(consent), Some(user))
    }

    fn approve_consent(&mut self, consent: Consent) -> Response {
        self.user_mut(&consent.user);
        let code = match self.dialect() {
            Dialect::Fitbit | Dialect::Withings => random_hex(20),
            Dialect::Google => format!("4/0A{}", random_token(40)),
        };
        let mut pairs = vec![("code", code.as_str())];
        if let Some(state) = &consent.state {
            pairs.push(("state", state));
        }
        let response = redirect_to(&consent.redirect_uri, &pairs);
        let expires_at = self.now() + self.config.code_lifetime;
        self.codes.insert(
            code,
            AuthCode {
                consent,
                expires_at,
            },
        );
        response
    }

    fn redirect_allowed(&self, uri: &str) -> bool {
        if self.config.redirect_uris.iter().any(|known| known == uri) {
            return true;
        }
        let Ok(url) = Url::parse(uri) else {
            return false;
        };
        self.config.allow_loopback_redirects
            && url.scheme() == "http"
            && match url.host() {
                Some(url::Host::Domain(domain)) => domain == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            }
    }

    // -----------------------------------------------------------------------------------------
    // Token endpoint.

    fn token(&mut self, request: &Incoming) -> (Response, Option<String>) {
        if self.echo_token_requests {
            return (self.echo(request), None);
        }
        if self.dialect() == Dialect::Withings
            && request.form_param("action") != Some("requesttoken")
        {
            return (
                self.oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "action must be requesttoken",
                ),
                None,
            );
        }
        if let Err(response) = self.authenticate_client(request) {
            return (*response, None);
        }
        match request.form_param("grant_type") {
            Some("authorization_code") => self.exchange_code(request),
            Some("refresh_token") => self.refresh(request),
            _ => (
                self.oauth_error(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    "grant_type must be authorization_code or refresh_token",
                ),
                None,
            ),
        }
    }

    /// A 400 whose message is the request as received.
    fn echo(&self, request: &Incoming) -> Response {
        let headers: Vec<String> = request
            .headers
            .iter()
            .map(|(name, value)| format!("{name}: {}", String::from_utf8_lossy(value.as_bytes())))
            .collect();
        let form: serde_json::Map<String, Value> = request
            .form
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let form_json = Value::Object(form).to_string().replace('/', "\\/");
        let message = format!(
            "Bad request. You sent: {} {} | headers: {} | body: {} | as query: ?{} | fields: {form_json}",
            request.method,
            request.path,
            headers.join("; "),
            request.body,
            request.body.replace('+', "%20"),
        );
        self.oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &message)
    }

    /// `POST /revoke` (RFC 7009): revokes every token of the token's user and answers 200
    /// (also for an unknown token, as the RFC says), unless told to fail.
    fn revoke_endpoint(&mut self, request: &Incoming) -> (Response, Option<String>) {
        let token = request.form_param("token").unwrap_or_default().to_owned();
        let token_type_hint = request.form_param("token_type_hint").map(str::to_owned);
        let authenticated = self.authenticate_client(request);
        let mut record = RevocationRequest {
            token: token.clone(),
            token_type_hint,
            client_authenticated: authenticated.is_ok(),
            revoked_user: None,
        };
        if let Some(code) = self.revocation_failure {
            self.revocations.push(record);
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (
                self.oauth_error(status, "server_error", "Revocation is not available"),
                None,
            );
        }
        if let Err(response) = authenticated {
            self.revocations.push(record);
            return (*response, None);
        }
        let user = self
            .refresh
            .get(&token)
            .map(|r| r.user.clone())
            .or_else(|| self.access.get(&token).map(|r| r.user.clone()));
        if let Some(user) = &user {
            self.access.retain(|_, r| r.user != *user);
            for r in self.refresh.values_mut() {
                if r.user == *user {
                    r.state = RefreshState::Revoked;
                }
            }
        }
        record.revoked_user = user.clone();
        self.revocations.push(record);
        (StatusCode::OK.into_response(), user)
    }

    fn authenticate_client(&self, request: &Incoming) -> Result<(), Box<Response>> {
        let (id, secret) = match self.dialect() {
            Dialect::Fitbit => {
                let basic = request
                    .headers
                    .get(header::AUTHORIZATION)
                    .and_then(|value| value.to_str().ok())
                    .and_then(parse_basic);
                match basic {
                    Some(credentials) => credentials,
                    None => {
                        return Err(Box::new(self.oauth_error(
                            StatusCode::UNAUTHORIZED,
                            "invalid_client",
                            "Invalid authorization header format. The header was not \
                             recognized to be a valid header for any of known implementations \
                             or a client_id was not specified in case of a public client",
                        )));
                    }
                }
            }
            Dialect::Google | Dialect::Withings => {
                match (
                    request.form_param("client_id"),
                    request.form_param("client_secret"),
                ) {
                    (Some(id), Some(secret)) => (id.to_owned(), secret.to_owned()),
                    (_, None) => {
                        return Err(Box::new(self.oauth_error(
                            StatusCode::BAD_REQUEST,
                            "invalid_request",
                            "client_secret is missing.",
                        )));
                    }
                    (None, Some(_)) => {
                        return Err(Box::new(self.oauth_error(
                            StatusCode::BAD_REQUEST,
                            "invalid_request",
                            "client_id is missing.",
                        )));
                    }
                }
            }
        };
        if id != self.config.client_id || secret != self.config.client_secret {
            return Err(Box::new(self.oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Invalid client credentials",
            )));
        }
        Ok(())
    }

    fn exchange_code(&mut self, request: &Incoming) -> (Response, Option<String>) {
        let Some(code) = request.form_param("code") else {
            return (
                self.oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "Missing code"),
                None,
            );
        };
        let invalid = |state: &FakeState| {
            state.oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                &format!("Authorization code invalid: {code}"),
            )
        };
        // Codes are single-use: presented once, gone whatever the outcome.
        let Some(auth_code) = self.codes.remove(code) else {
            return (invalid(self), None);
        };
        let consent = auth_code.consent;
        let user = Some(consent.user.clone());
        if auth_code.expires_at <= self.now() {
            let message = format!("Authorization code expired: {code}");
            return (
                self.oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &message),
                user,
            );
        }
        let sent_redirect = request.form_param("redirect_uri");
        let redirect_ok = if consent.redirect_uri_sent {
            sent_redirect == Some(consent.redirect_uri.as_str())
        } else {
            sent_redirect.is_none_or(|uri| uri == consent.redirect_uri)
        };
        if !redirect_ok {
            let error = match self.dialect() {
                Dialect::Google => "redirect_uri_mismatch",
                _ => "invalid_grant",
            };
            let message = format!(
                "Redirect URI mismatch: {}",
                sent_redirect.unwrap_or("(none)")
            );
            return (
                self.oauth_error(StatusCode::BAD_REQUEST, error, &message),
                user,
            );
        }
        if let Some(challenge) = &consent.code_challenge {
            let verifier_ok = request.form_param("code_verifier").is_some_and(|verifier| {
                (43..=128).contains(&verifier.len())
                    && verifier
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
                    && pkce_s256(verifier) == *challenge
            });
            if !verifier_ok {
                return (
                    self.oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "Invalid code_verifier",
                    ),
                    user,
                );
            }
        }
        let with_refresh = self.dialect() != Dialect::Google
            || consent.offline
            || !self.config.google_offline_access_required;
        let index = self.issue_initial(
            &consent.user,
            &consent.scope,
            IssueKind::CodeExchange,
            with_refresh,
        );
        (
            json_response(StatusCode::OK, self.issued[index].response.clone()),
            user,
        )
    }

    fn refresh(&mut self, request: &Incoming) -> (Response, Option<String>) {
        let Some(token) = request.form_param("refresh_token") else {
            return (
                self.oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Missing refresh_token",
                ),
                None,
            );
        };
        *self
            .refresh_requests_by_token
            .entry(token.to_owned())
            .or_default() += 1;
        let invalid = |state: &FakeState| {
            let message = match state.dialect() {
                Dialect::Google => "Token has been expired or revoked.".to_owned(),
                _ => format!("Refresh token invalid: {token}"),
            };
            state.oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &message)
        };
        let Some(record) = self.refresh.get_mut(token) else {
            return (invalid(self), None);
        };
        record.presented = true;
        let user = record.user.clone();
        let scope = record.scope.clone();
        let successor = match record.state {
            RefreshState::Revoked => None,
            RefreshState::Active => Some(None),
            RefreshState::Rotated(index) => Some(Some(index)),
        };
        self.user_mut(&user).refresh_requests += 1;
        let response = match successor {
            None => invalid(self),
            Some(None) => {
                let rotate = self.dialect() != Dialect::Google;
                let index = self.issue(&user, &scope, IssueKind::Refresh, rotate);
                if rotate && let Some(record) = self.refresh.get_mut(token) {
                    record.state = RefreshState::Rotated(index);
                }
                json_response(StatusCode::OK, self.issued[index].response.clone())
            }
            Some(Some(index)) => {
                // Replay until the successor pair is used, then the old token is dead.
                let tokens = &self.issued[index].tokens;
                let access_used = self
                    .access
                    .get(&tokens.access_token)
                    .is_none_or(|record| record.used);
                let refresh_used = tokens
                    .refresh_token
                    .as_ref()
                    .and_then(|next| self.refresh.get(next))
                    .is_none_or(|record| {
                        record.presented || !matches!(record.state, RefreshState::Active)
                    });
                if access_used || refresh_used {
                    invalid(self)
                } else {
                    json_response(StatusCode::OK, self.issued[index].response.clone())
                }
            }
        };
        (response, Some(user))
    }

    /// Issues a pair after consent or a seeded grant; Fitbit keeps one refresh token per user.
    fn issue_initial(
        &mut self,
        user: &str,
        scope: &str,
        kind: IssueKind,
        with_refresh: bool,
    ) -> usize {
        if self.dialect() == Dialect::Fitbit {
            for record in self.refresh.values_mut() {
                if record.user == user {
                    record.state = RefreshState::Revoked;
                }
            }
        }
        self.issue(user, scope, kind, with_refresh)
    }

    fn issue(&mut self, user: &str, scope: &str, kind: IssueKind, with_refresh: bool) -> usize {
        let dialect = self.dialect();
        let access_token = match dialect {
            Dialect::Fitbit => format!(
                "eyJhbGciOiJIUzI1NiJ9.{}.{}",
                random_token(48),
                random_token(32)
            ),
            Dialect::Google => format!("ya29.{}", random_token(96)),
            Dialect::Withings => random_hex(20),
        };
        let refresh_token = with_refresh.then(|| match dialect {
            Dialect::Fitbit => random_hex(32),
            Dialect::Google => format!("1//0{}", random_token(72)),
            Dialect::Withings => random_hex(20),
        });
        let expires_in = self.config.access_token_lifetime;
        let expires_at = self.wall_now() + chrono::Duration::seconds(expires_in as i64);
        let response = match dialect {
            Dialect::Fitbit => json!({
                "access_token": access_token,
                "expires_in": expires_in,
                "refresh_token": refresh_token,
                "scope": scope,
                "token_type": "Bearer",
                "user_id": user,
            }),
            Dialect::Google => {
                let mut body = json!({
                    "access_token": access_token,
                    "expires_in": expires_in,
                    "scope": scope,
                    "token_type": "Bearer",
                });
                if let Some(refresh_token) = &refresh_token {
                    body["refresh_token"] = json!(refresh_token);
                }
                body
            }
            Dialect::Withings => json!({
                "status": 0,
                "body": {
                    "userid": user,
                    "access_token": access_token,
                    "refresh_token": refresh_token,
                    "expires_in": expires_in,
                    "scope": scope,
                    "csrf_token": random_hex(16),
                    "token_type": "Bearer",
                },
            }),
        };
        let now = self.now();
        self.access.insert(
            access_token.clone(),
            AccessRecord {
                user: user.to_owned(),
                expires_at: now + Duration::from_secs(expires_in),
                used: false,
            },
        );
        if let Some(refresh_token) = &refresh_token {
            self.refresh.insert(
                refresh_token.clone(),
                RefreshRecord {
                    user: user.to_owned(),
                    scope: scope.to_owned(),
                    state: RefreshState::Active,
                    presented: false,
                },
            );
        }
        self.user_mut(user);
        self.issued.push(IssuedRecord {
            tokens: IssuedTokens {
                user: user.to_owned(),
                access_token,
                refresh_token,
                scope: scope.to_owned(),
                expires_in,
                expires_at,
                kind,
            },
            response,
        });
        self.issued.len() - 1
    }

    /// A token-endpoint error in the dialect's shape.
    fn oauth_error(&self, status: StatusCode, error: &str, description: &str) -> Response {
        match self.dialect() {
            Dialect::Fitbit => fitbit_error(status, error, description),
            Dialect::Google => json_response(
                status,
                json!({"error": error, "error_description": description}),
            ),
            Dialect::Withings => withings_status(503, &format!("Invalid Params: {description}")),
        }
    }

    // -----------------------------------------------------------------------------------------
    // API plumbing shared by the dialects.

    fn authenticate(&mut self, headers: &HeaderMap) -> Caller {
        let Some(token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
        else {
            return Caller::Missing;
        };
        let now = self.now();
        match self.access.get_mut(token) {
            None => Caller::Unknown(token.to_owned()),
            Some(record) if record.expires_at <= now => Caller::Expired {
                token: token.to_owned(),
                user: record.user.clone(),
            },
            Some(record) => {
                record.used = true;
                Caller::User(record.user.clone())
            }
        }
    }

    /// Counts the call against the user's budget: the rate-limit headers to add, or `Err` when
    /// the budget is spent (with the seconds until the window resets).
    fn admit(&mut self, user: &str) -> Result<Vec<(&'static str, String)>, u64> {
        let now = self.now();
        let rate_limit = self.config.rate_limit;
        let data = self.user_mut(user);
        data.api_calls += 1;
        let Some(rate_limit) = rate_limit else {
            return Ok(Vec::new());
        };
        let (start, count) = match data.rate_window {
            Some((start, count)) if now < start + rate_limit.window => (start, count),
            _ => (now, 0),
        };
        let left = (start + rate_limit.window).saturating_duration_since(now);
        let reset = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        if count >= rate_limit.limit {
            data.rate_window = Some((start, count));
            return Err(reset);
        }
        data.rate_window = Some((start, count + 1));
        Ok(vec![
            ("fitbit-rate-limit-limit", rate_limit.limit.to_string()),
            (
                "fitbit-rate-limit-remaining",
                (rate_limit.limit - count - 1).to_string(),
            ),
            ("fitbit-rate-limit-reset", reset.to_string()),
        ])
    }

    fn seeded_body(&self, user: &str, path: &str) -> Option<Bytes> {
        self.users
            .get(user)
            .and_then(|data| data.bodies.get(path))
            .or_else(|| self.global_bodies.get(path))
            .cloned()
    }

    // -----------------------------------------------------------------------------------------
    // Fitbit API.

    fn fitbit_api(&mut self, request: &Incoming) -> (Response, Option<String>) {
        let path = request.path.as_str();
        if !(path.starts_with("/1/") || path.starts_with("/1.2/")) {
            return (
                fitbit_error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "The API you are requesting could not be found.",
                ),
                None,
            );
        }
        let user = match self.authenticate(&request.headers) {
            Caller::User(user) => user,
            Caller::Expired { token, user } => {
                let message = format!("Access token expired: {token}");
                return (
                    fitbit_error(StatusCode::UNAUTHORIZED, "expired_token", &message),
                    Some(user),
                );
            }
            Caller::Unknown(token) => {
                let message = format!("Access token invalid: {token}");
                return (
                    fitbit_error(StatusCode::UNAUTHORIZED, "invalid_token", &message),
                    None,
                );
            }
            Caller::Missing => {
                return (
                    fitbit_error(
                        StatusCode::UNAUTHORIZED,
                        "invalid_client",
                        "Authorization header required.",
                    ),
                    None,
                );
            }
        };
        let mut response = match self.admit(&user) {
            Ok(headers) => {
                let mut response = self.fitbit_resource(request, &user);
                for (name, value) in headers {
                    set_header(&mut response, HeaderName::from_static(name), &value);
                }
                response
            }
            Err(reset) => {
                let limit = self.config.rate_limit.map_or(0, |rate| rate.limit);
                let mut response =
                    fitbit_error(StatusCode::TOO_MANY_REQUESTS, "system", "Too Many Requests");
                for (name, value) in [
                    ("fitbit-rate-limit-limit", limit.to_string()),
                    ("fitbit-rate-limit-remaining", "0".to_owned()),
                    ("fitbit-rate-limit-reset", reset.to_string()),
                    ("retry-after", reset.to_string()),
                ] {
                    set_header(&mut response, HeaderName::from_static(name), &value);
                }
                response
            }
        };
        set_header(&mut response, header::CACHE_CONTROL, "no-cache, private");
        (response, Some(user))
    }

    fn fitbit_resource(&self, request: &Incoming, user: &str) -> Response {
        let path = request.path.as_str();
        if let Some(body) = self.seeded_body(user, path) {
            return seeded_response(body);
        }
        let trimmed = path.strip_suffix(".json").unwrap_or(path);
        let segments: Vec<&str> = trimmed.trim_start_matches('/').split('/').collect();
        let ["1", "user", owner, rest @ ..] = segments.as_slice() else {
            return json_response(StatusCode::OK, json!({}));
        };
        if *owner != "-" && *owner != user {
            return fitbit_error(
                StatusCode::FORBIDDEN,
                "insufficient_permissions",
                "API client is not authorized by the user to access the resource requested.",
            );
        }
        if request.method != Method::GET {
            return json_response(StatusCode::OK, json!({}));
        }
        let language = request
            .headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        let result = match rest {
            [
                "body",
                "log",
                kind @ ("weight" | "fat"),
                "date",
                date,
                more @ ..,
            ] if more.len() <= 1 => {
                self.fitbit_body_log(user, kind, date, more.first().copied(), language)
            }
            ["activities", "heart", "date", date, "1d", detail] => {
                fitbit_heart_intraday(date, detail, None, self.today())
            }
            [
                "activities",
                "heart",
                "date",
                date,
                "1d",
                detail,
                "time",
                start,
                end,
            ] => fitbit_heart_intraday(date, detail, Some((*start, *end)), self.today()),
            ["activities", "heart", "date", date, period_or_end] => {
                fitbit_range(date, Some(*period_or_end), &PERIODS, 366, self.today()).map(
                    |(start, end)| {
                        let days = dates(start, end)
                            .map(|day| {
                                json!({
                                    "dateTime": day.to_string(),
                                    "value": heart_day_value(day),
                                })
                            })
                            .collect::<Vec<_>>();
                        json!({"activities-heart": days})
                    },
                )
            }
            _ => Ok(json!({})),
        };
        match result {
            Ok(body) => json_response(StatusCode::OK, body),
            Err(message) => fitbit_error(StatusCode::BAD_REQUEST, "validation", &message),
        }
    }

    fn fitbit_body_log(
        &self,
        user: &str,
        kind: &str,
        date: &str,
        second: Option<&str>,
        language: &str,
    ) -> Result<Value, String> {
        let max_days = if kind == "weight" { 31 } else { 30 };
        let (start, end) = fitbit_range(date, second, &LOG_PERIODS, max_days, self.today())?;
        let data = self.users.get(user);
        let seeded = data.and_then(|data| {
            if kind == "weight" {
                data.fitbit_weight.as_ref()
            } else {
                data.fitbit_fat.as_ref()
            }
        });
        let entries: Vec<Value> = match seeded {
            Some(entries) => {
                let (start, end) = (start.to_string(), end.to_string());
                entries
                    .iter()
                    .filter(|entry| {
                        entry["date"]
                            .as_str()
                            .is_some_and(|day| day >= start.as_str() && day <= end.as_str())
                    })
                    .cloned()
                    .collect()
            }
            None if !self.config.default_data => Vec::new(),
            None => dates(start, end)
                .filter(|day| has_measurement(*day))
                .map(|day| fitbit_log_entry(kind, day, language))
                .collect(),
        };
        Ok(json!({ kind: entries }))
    }

    // -----------------------------------------------------------------------------------------
    // Google Health API.

    fn google_api(&mut self, request: &Incoming) -> (Response, Option<String>) {
        let user = match self.authenticate(&request.headers) {
            Caller::User(user) => user,
            Caller::Expired { user, .. } => {
                return (google_unauthenticated("ACCESS_TOKEN_EXPIRED"), Some(user));
            }
            Caller::Unknown(_) => return (google_unauthenticated("ACCESS_TOKEN_INVALID"), None),
            Caller::Missing => return (google_unauthenticated("CREDENTIALS_MISSING"), None),
        };
        if self.admit(&user).is_err() {
            let mut response = google_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Quota exceeded for quota metric 'Requests per user per minute'.",
                Some("RATE_LIMIT_EXCEEDED"),
            );
            set_header(&mut response, header::RETRY_AFTER, "60");
            return (response, Some(user));
        }
        if let Some(body) = self.seeded_body(&user, &request.path) {
            return (seeded_response(body), Some(user));
        }
        let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
        let response = match segments.as_slice() {
            ["v4", "users", who, ..] if *who != "me" && *who != user => google_error(
                StatusCode::FORBIDDEN,
                "The caller does not have permission",
                Some("PERMISSION_DENIED"),
            ),
            ["v4", "users", _, "dataTypes", data_type, "dataPoints"]
                if request.method == Method::GET =>
            {
                self.google_list(request, &user, data_type)
            }
            ["v4", "users", _, "identity"] if request.method == Method::GET => json_response(
                StatusCode::OK,
                json!({
                    "name": format!("users/{user}/identity"),
                    "legacyUserId": legacy_id(&user),
                    "healthUserId": user,
                }),
            ),
            _ => google_error(
                StatusCode::NOT_FOUND,
                "Requested entity was not found.",
                None,
            ),
        };
        (response, Some(user))
    }

    fn google_list(&mut self, request: &Incoming, user: &str, data_type: &str) -> Response {
        let Some(kind) = google_kind(data_type) else {
            return google_error(
                StatusCode::BAD_REQUEST,
                &format!("data type ID {data_type} is not supported"),
                Some("INVALID_PARENT_DATA_TYPE_COLLECTION"),
            );
        };
        let session = matches!(kind, GoogleKind::Session | GoogleKind::Exercise);
        let (default_size, max_size) = if session { (25, 25) } else { (1440, 10_000) };
        let page_size = match request
            .query_param("pageSize")
            .or_else(|| request.query_param("page_size"))
        {
            None => default_size,
            Some(raw) => match raw.parse::<i64>() {
                Ok(size) if size <= 0 => default_size,
                Ok(size) => (size as usize).min(max_size),
                Err(_) => {
                    return google_error(
                        StatusCode::BAD_REQUEST,
                        &format!("Invalid value at 'page_size' (TYPE_INT32), \"{raw}\""),
                        None,
                    );
                }
            },
        };
        let filter = request.query_param("filter").map(str::to_owned);
        let clauses = match &filter {
            None => Vec::new(),
            Some(filter) => match parse_filter(filter, data_type, kind) {
                Ok(clauses) => clauses,
                Err((reason, message)) => {
                    return google_error(StatusCode::BAD_REQUEST, &message, Some(reason));
                }
            },
        };
        let page_token = request
            .query_param("pageToken")
            .or_else(|| request.query_param("page_token"))
            .filter(|token| !token.is_empty());
        let offset = match page_token {
            None => 0,
            Some(token) => match self.page_tokens.get(token) {
                Some(cursor)
                    if cursor.user == user
                        && cursor.data_type == data_type
                        && cursor.filter == filter =>
                {
                    cursor.offset
                }
                _ => {
                    return google_error(
                        StatusCode::BAD_REQUEST,
                        "The page token is invalid or does not match the request.",
                        Some("INVALID_PAGE_TOKEN"),
                    );
                }
            },
        };
        let key = camel_case(data_type);
        let seeded = self
            .users
            .get(user)
            .and_then(|data| data.google.get(data_type))
            .cloned();
        let points = match seeded {
            Some(points) => points,
            None if self.config.default_data => {
                google_default_points(user, data_type, &key, self.wall_now())
            }
            None => Vec::new(),
        };
        let matching: Vec<Value> = points
            .into_iter()
            .filter(|point| {
                clauses.is_empty()
                    || clauses
                        .iter()
                        .any(|all| all.iter().all(|clause| clause.matches(point, &key)))
            })
            .collect();
        let page: Vec<Value> = matching
            .iter()
            .skip(offset)
            .take(page_size)
            .cloned()
            .collect();
        let mut body = json!({});
        if !page.is_empty() {
            body["dataPoints"] = Value::Array(page);
        }
        let next = offset + page_size;
        if next < matching.len() {
            let token = random_token(30);
            self.page_tokens.insert(
                token.clone(),
                PageCursor {
                    user: user.to_owned(),
                    data_type: data_type.to_owned(),
                    filter,
                    offset: next,
                },
            );
            body["nextPageToken"] = json!(token);
        }
        json_response(StatusCode::OK, body)
    }

    // -----------------------------------------------------------------------------------------
    // Withings API.

    fn withings_api(&mut self, request: &Incoming) -> (Response, Option<String>) {
        let user = match self.authenticate(&request.headers) {
            Caller::User(user) => user,
            Caller::Expired { user, .. } => return (withings_invalid_token(), Some(user)),
            Caller::Unknown(_) | Caller::Missing => return (withings_invalid_token(), None),
        };
        if self.admit(&user).is_err() {
            let body = json!({"status": 601, "body": {}, "error": "Too Many Requests"});
            return (json_response(StatusCode::OK, body), Some(user));
        }
        if let Some(body) = self.seeded_body(&user, &request.path) {
            return (seeded_response(body), Some(user));
        }
        let response = if request.path == "/measure" {
            match request.param("action") {
                Some("getmeas") => self.withings_getmeas(request, &user),
                _ => withings_status(503, "Invalid Params: unknown action"),
            }
        } else {
            json_response(StatusCode::OK, json!({"status": 0, "body": {}}))
        };
        (response, Some(user))
    }

    fn withings_getmeas(&self, request: &Incoming, user: &str) -> Response {
        let GetmeasParams {
            types,
            category,
            start,
            end,
            last_update,
            offset,
        } = match GetmeasParams::parse(request) {
            Ok(params) => params,
            Err(response) => return *response,
        };
        let groups = match self.users.get(user).and_then(|data| data.withings.clone()) {
            Some(groups) => groups,
            None if self.config.default_data => withings_default_groups(self.today()),
            None => Vec::new(),
        };
        let matching: Vec<Value> = groups
            .into_iter()
            .filter(|group| {
                let date = group["date"].as_i64().unwrap_or(0);
                group["category"].as_i64().unwrap_or(1) == category
                    && start.is_none_or(|start| date >= start)
                    && end.is_none_or(|end| date <= end)
                    && last_update
                        .is_none_or(|since| group["modified"].as_i64().unwrap_or(date) >= since)
            })
            .filter_map(|mut group| {
                if let Some(types) = &types {
                    let measures: Vec<Value> = group["measures"]
                        .as_array()
                        .map(|all| {
                            all.iter()
                                .filter(|m| m["type"].as_i64().is_some_and(|t| types.contains(&t)))
                                .cloned()
                                .collect()
                        })
                        .unwrap_or_default();
                    if measures.is_empty() {
                        return None;
                    }
                    group["measures"] = Value::Array(measures);
                }
                Some(group)
            })
            .collect();
        let size = self.config.withings_page_size.max(1);
        let page: Vec<Value> = matching.iter().skip(offset).take(size).cloned().collect();
        let more = offset + size < matching.len();
        json_response(
            StatusCode::OK,
            json!({
                "status": 0,
                "body": {
                    "updatetime": self.wall_now().timestamp(),
                    "timezone": "Europe/Paris",
                    "measuregrps": page,
                    "more": i32::from(more),
                    "offset": if more { offset + size } else { 0 },
                },
            }),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Response helpers.

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// The JSON text of `body`, as `axum::Json` writes it.
fn json_bytes(body: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(body).expect("a JSON value serializes"))
}

/// 200 with a seeded body's JSON text.
fn seeded_response(body: Bytes) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn set_header(response: &mut Response, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

fn fitbit_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    json_response(
        status,
        json!({"errors": [{"errorType": error_type, "message": message}], "success": false}),
    )
}

fn google_status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        410 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

fn google_error(status: StatusCode, message: &str, reason: Option<&str>) -> Response {
    let mut error = json!({
        "code": status.as_u16(),
        "message": message,
        "status": google_status_name(status),
    });
    if let Some(reason) = reason {
        error["details"] = json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": "googleapis.com",
            "metadata": {
                "service": "health.googleapis.com",
                "method": "google.devicesandservices.health.v4.DataPointsService.ListDataPoints",
            },
        }]);
    }
    json_response(status, json!({ "error": error }))
}

fn google_unauthenticated(reason: &str) -> Response {
    let mut response = google_error(
        StatusCode::UNAUTHORIZED,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login \
         cookie or other valid authentication credential. See \
         https://developers.google.com/identity/sign-in/web/devconsole-project.",
        Some(reason),
    );
    set_header(
        &mut response,
        header::WWW_AUTHENTICATE,
        "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"",
    );
    response
}

fn withings_status(status: i64, error: &str) -> Response {
    json_response(
        StatusCode::OK,
        json!({"status": status, "body": {}, "error": error}),
    )
}

fn withings_invalid_token() -> Response {
    withings_status(
        401,
        "XRequestID: Not provided invalid_token: The access token provided is invalid",
    )
}

fn redirect_to(redirect_uri: &str, pairs: &[(&str, &str)]) -> Response {
    let mut url = match Url::parse(redirect_uri) {
        Ok(url) => url,
        Err(_) => return error_page(StatusCode::BAD_REQUEST, "invalid redirect_uri"),
    };
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in pairs {
            query.append_pair(name, value);
        }
    }
    (StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response()
}

fn error_page(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Authorization error</title>\
         </head><body><h1>Authorization error</h1><p id=\"error\">{}</p></body></html>",
        html_escape(message)
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn consent_page(id: &str, client_id: &str, consent: &Consent) -> Response {
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Authorize {client}</title>\
         </head>\n<body>\n<h1>Authorize {client}</h1>\n<p>The application asks for: \
         <span id=\"scope\">{scope}</span></p>\n\
         <form method=\"post\" action=\"/authorize/approve\">\n\
         <input type=\"hidden\" name=\"request\" value=\"{id}\">\n\
         <label>User <input type=\"text\" name=\"user\" id=\"user\" value=\"{user}\"></label>\n\
         <button type=\"submit\" name=\"decision\" value=\"allow\" id=\"allow\">Allow</button>\n\
         <button type=\"submit\" name=\"decision\" value=\"deny\" id=\"deny\">Deny</button>\n\
         </form>\n</body></html>\n",
        client = html_escape(client_id),
        scope = html_escape(&consent.scope),
        id = html_escape(id),
        user = html_escape(&consent.user),
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Small utilities.

fn to_strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

fn first<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn parse_pairs(raw: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw).into_owned().collect()
}

fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

fn random_token(len: usize) -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(len))
}

fn random_hex(len: usize) -> String {
    random_bytes(len)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn is_base64url(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn html_escape(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn legacy_id(user: &str) -> String {
    let digest = Sha256::digest(user.as_bytes());
    let alphabet = b"0123456789ABCDEFGHJKLMNPQRSTUVWXYZ";
    digest[..6]
        .iter()
        .map(|byte| alphabet[usize::from(*byte) % alphabet.len()] as char)
        .collect()
}

fn camel_case(kebab: &str) -> String {
    let mut out = String::with_capacity(kebab.len());
    let mut upper = false;
    for ch in kebab.chars() {
        if ch == '-' || ch == '_' {
            upper = true;
        } else if upper {
            out.push(ch.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(ch);
        }
    }
    out
}

/// Days since the common era, the seed of every invented value.
fn day_number(day: NaiveDate) -> i64 {
    i64::from(day.num_days_from_ce())
}

/// Users step on the scale two days out of three.
fn has_measurement(day: NaiveDate) -> bool {
    day_number(day) % 3 != 2
}

fn dates(start: NaiveDate, end: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    start.iter_days().take_while(move |day| *day <= end)
}

fn round_to(value: f64, decimals: i32) -> f64 {
    let factor = 10f64.powi(decimals);
    (value * factor).round() / factor
}

fn weight_kg(day: NaiveDate) -> f64 {
    round_to(72.0 + ((day_number(day) % 11) as f64 - 5.0) * 0.1, 1)
}

fn fat_percent(day: NaiveDate) -> f64 {
    round_to(18.0 + (day_number(day) % 7) as f64 * 0.2, 1)
}

fn at_utc(day: NaiveDate, hours: u32, minutes: u32, seconds: u32) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_hms_opt(hours, minutes, seconds).unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// Fitbit data.

const PERIODS: [&str; 9] = ["1d", "7d", "30d", "1w", "1m", "3m", "6m", "1y", "max"];
const LOG_PERIODS: [&str; 5] = ["1d", "7d", "30d", "1w", "1m"];

fn parse_fitbit_date(raw: &str, today: NaiveDate) -> Result<NaiveDate, String> {
    if raw == "today" {
        return Ok(today);
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| format!("Invalid date:{raw}"))
}

fn period_days(period: &str) -> i64 {
    match period {
        "1d" => 1,
        "7d" | "1w" => 7,
        "30d" | "1m" => 30,
        "3m" => 91,
        "6m" => 182,
        "1y" => 365,
        _ => 1095,
    }
}

/// The inclusive date range of `{date}[/{period|end}]`.
fn fitbit_range(
    date: &str,
    second: Option<&str>,
    periods: &[&str],
    max_days: i64,
    today: NaiveDate,
) -> Result<(NaiveDate, NaiveDate), String> {
    let base = parse_fitbit_date(date, today)?;
    match second {
        None => Ok((base, base)),
        Some(period) if PERIODS.contains(&period) => {
            if !periods.contains(&period) {
                return Err(format!(
                    "Invalid period: {period}. Allowed: {}",
                    periods.join(", ")
                ));
            }
            let start = base - chrono::Duration::days(period_days(period) - 1);
            Ok((start, base))
        }
        Some(end) => {
            let end = parse_fitbit_date(end, today)?;
            if end < base {
                return Err("Invalid date range: the end date is before the start date".into());
            }
            if (end - base).num_days() + 1 > max_days {
                return Err(format!(
                    "Invalid date range: the maximum range is {max_days} days"
                ));
            }
            Ok((base, end))
        }
    }
}

fn fitbit_log_entry(kind: &str, day: NaiveDate, language: &str) -> Value {
    let log_id = at_utc(day, 7, 52, 45).timestamp_millis();
    let fat = fat_percent(day);
    if kind == "fat" {
        return json!({
            "date": day.to_string(), "fat": fat, "logId": log_id,
            "source": "Aria", "time": "07:52:45",
        });
    }
    let kg = weight_kg(day);
    let weight = match language {
        "en_US" => round_to(kg * 2.204_622_62, 2),
        "en_GB" => round_to(kg / 6.350_293_18, 2),
        _ => kg,
    };
    json!({
        "bmi": round_to(kg / (1.76 * 1.76), 2), "date": day.to_string(), "fat": fat,
        "logId": log_id, "source": "Aria", "time": "07:52:45", "weight": weight,
    })
}

fn heart_day_value(day: NaiveDate) -> Value {
    json!({
        "customHeartRateZones": [],
        "heartRateZones": [
            {"caloriesOut": 1410.2, "max": 113, "min": 30, "minutes": 1290, "name": "Out of Range"},
            {"caloriesOut": 520.9, "max": 137, "min": 113, "minutes": 118, "name": "Fat Burn"},
            {"caloriesOut": 84.1, "max": 168, "min": 137, "minutes": 12, "name": "Cardio"},
            {"caloriesOut": 0, "max": 220, "min": 168, "minutes": 0, "name": "Peak"},
        ],
        "restingHeartRate": 58 + day_number(day) % 6,
    })
}

fn parse_clock(raw: &str) -> Result<u32, String> {
    let mut parts = raw.split(':').map(str::parse::<u32>);
    let (Some(Ok(hours)), Some(Ok(minutes))) = (parts.next(), parts.next()) else {
        return Err(format!("Invalid time: {raw}"));
    };
    let seconds = match parts.next() {
        Some(Ok(seconds)) => seconds,
        Some(Err(_)) => return Err(format!("Invalid time: {raw}")),
        None => 0,
    };
    if hours > 23 || minutes > 59 || seconds > 59 {
        return Err(format!("Invalid time: {raw}"));
    }
    Ok(hours * 3600 + minutes * 60 + seconds)
}

fn fitbit_heart_intraday(
    date: &str,
    detail: &str,
    window: Option<(&str, &str)>,
    today: NaiveDate,
) -> Result<Value, String> {
    let day = parse_fitbit_date(date, today)?;
    let (step, dataset_type, interval) = match detail {
        "1sec" => (10, "second", 1),
        "1min" => (60, "minute", 1),
        "5min" => (300, "minute", 5),
        "15min" => (900, "minute", 15),
        _ => {
            return Err(format!(
                "Invalid detail level: {detail}. Allowed: 1sec, 1min, 5min, 15min"
            ));
        }
    };
    let (from, to) = match window {
        None => (0, 86_399),
        Some((start, end)) => (parse_clock(start)?, parse_clock(end)? + 59),
    };
    let seed = day_number(day);
    let dataset: Vec<Value> = (0..86_400u32)
        .step_by(step)
        .filter(|second| (from..=to).contains(second))
        .map(|second| {
            let minute = i64::from(second / 60);
            let value = 55 + (minute * 7 + seed) % 40;
            let time = format!(
                "{:02}:{:02}:{:02}",
                second / 3600,
                second / 60 % 60,
                second % 60
            );
            json!({"time": time, "value": value})
        })
        .collect();
    Ok(json!({
        "activities-heart": [{"dateTime": day.to_string(), "value": heart_day_value(day)}],
        "activities-heart-intraday": {
            "dataset": dataset,
            "datasetInterval": interval,
            "datasetType": dataset_type,
        },
    }))
}

// ---------------------------------------------------------------------------------------------
// Google data and filters.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GoogleKind {
    Sample,
    Interval,
    Daily,
    Session,
    Exercise,
}

fn google_kind(data_type: &str) -> Option<GoogleKind> {
    Some(match data_type {
        "weight"
        | "body-fat"
        | "heart-rate"
        | "heart-rate-variability"
        | "oxygen-saturation"
        | "respiratory-rate"
        | "body-temperature"
        | "blood-glucose"
        | "height" => GoogleKind::Sample,
        "steps"
        | "distance"
        | "floors"
        | "altitude"
        | "active-minutes"
        | "total-calories"
        | "active-zone-minutes" => GoogleKind::Interval,
        "daily-resting-heart-rate"
        | "daily-heart-rate-variability"
        | "daily-oxygen-saturation"
        | "daily-respiratory-rate" => GoogleKind::Daily,
        "sleep" => GoogleKind::Session,
        "exercise" => GoogleKind::Exercise,
        _ => return None,
    })
}

fn google_filter_fields(kind: GoogleKind) -> &'static [&'static str] {
    match kind {
        GoogleKind::Sample => &["sample_time.physical_time", "sample_time.civil_time"],
        GoogleKind::Interval => &["interval.start_time", "interval.civil_start_time"],
        GoogleKind::Daily => &["date"],
        GoogleKind::Session => &["interval.end_time", "interval.civil_end_time"],
        GoogleKind::Exercise => &["interval.civil_start_time"],
    }
}

/// One `field op "literal"` comparison of an AIP-160 filter.
struct Clause {
    field: String,
    at_least: bool,
    literal: String,
}

impl Clause {
    fn matches(&self, point: &Value, key: &str) -> bool {
        let mut value = &point[key];
        for segment in self.field.split('.') {
            value = &value[camel_case(segment).as_str()];
        }
        let ordering = if let Some(text) = value.as_str() {
            match (
                DateTime::parse_from_rfc3339(text),
                DateTime::parse_from_rfc3339(&self.literal),
            ) {
                (Ok(actual), Ok(bound)) => actual.cmp(&bound),
                _ => return false,
            }
        } else if value.is_object() {
            let text = civil_string(value);
            text.as_str().cmp(self.literal.as_str())
        } else {
            return false;
        };
        if self.at_least {
            ordering.is_ge()
        } else {
            ordering.is_lt()
        }
    }
}

fn civil_string(value: &Value) -> String {
    let (date, time) = if value.get("date").is_some() {
        (&value["date"], Some(&value["time"]))
    } else {
        (value, None)
    };
    let number = |v: &Value, name: &str| v[name].as_i64().unwrap_or(0);
    let mut text = format!(
        "{:04}-{:02}-{:02}",
        number(date, "year"),
        number(date, "month"),
        number(date, "day")
    );
    if let Some(time) = time {
        text.push_str(&format!(
            "T{:02}:{:02}:{:02}",
            number(time, "hours"),
            number(time, "minutes"),
            number(time, "seconds")
        ));
    }
    text
}

type FilterError = (&'static str, String);

/// Parses `a >= "x" AND a < "y"` (sleep also `OR`): a disjunction of conjunctions.
fn parse_filter(
    filter: &str,
    data_type: &str,
    kind: GoogleKind,
) -> Result<Vec<Vec<Clause>>, FilterError> {
    let snake = data_type.replace('-', "_");
    let invalid = |message: String| ("INVALID_DATA_POINT_FILTER", message);
    if kind != GoogleKind::Session && filter.contains(" OR ") {
        return Err(invalid(format!("OR is not supported for {data_type}")));
    }
    let mut any = Vec::new();
    for alternative in filter.split(" OR ") {
        let mut all = Vec::new();
        for clause in alternative.split(" AND ") {
            let clause = clause.trim();
            let (field, at_least, literal) = if let Some((field, rest)) = clause.split_once(">=") {
                (field, true, rest)
            } else if let Some((field, rest)) = clause.split_once('<') {
                if rest.starts_with('=') {
                    return Err(invalid(format!("unsupported operator in {clause}")));
                }
                (field, false, rest)
            } else {
                return Err(invalid(format!("unsupported operator in {clause}")));
            };
            let field = field.trim();
            let Some(field) = field
                .strip_prefix(snake.as_str())
                .and_then(|rest| rest.strip_prefix('.'))
            else {
                return Err(invalid(format!(
                    "filter field {field} does not belong to data type {snake}"
                )));
            };
            if !google_filter_fields(kind).contains(&field) {
                return Err(invalid(format!(
                    "filter field {field} is not supported for {data_type}"
                )));
            }
            let literal = literal.trim();
            let Some(literal) = literal
                .strip_prefix('"')
                .and_then(|rest| rest.strip_suffix('"'))
            else {
                return Err((
                    "INVALID_DATA_POINT_FILTER_SYNTAX",
                    format!("expected a quoted literal in {clause}"),
                ));
            };
            let physical = !field.contains("civil") && field != "date";
            if physical && DateTime::parse_from_rfc3339(literal).is_err() {
                return Err((
                    "INVALID_DATA_POINT_FILTER_SYNTAX",
                    format!("{literal} is not an RFC 3339 timestamp"),
                ));
            }
            all.push(Clause {
                field: field.to_owned(),
                at_least,
                literal: literal.to_owned(),
            });
        }
        any.push(all);
    }
    Ok(any)
}

const UTC_OFFSET_SECS: i64 = 3600;

fn civil_json(at: DateTime<Utc>) -> Value {
    let local = at + chrono::Duration::seconds(UTC_OFFSET_SECS);
    let mut time = serde_json::Map::new();
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
        "date": {"year": local.year(), "month": local.month(), "day": local.day()},
        "time": time,
    })
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn sample_time(at: DateTime<Utc>) -> Value {
    json!({"physicalTime": rfc3339(at), "utcOffset": "3600s", "civilTime": civil_json(at)})
}

fn interval(start: DateTime<Utc>, end: DateTime<Utc>) -> Value {
    json!({
        "startTime": rfc3339(start), "startUtcOffset": "3600s",
        "endTime": rfc3339(end), "endUtcOffset": "3600s",
        "civilStartTime": civil_json(start), "civilEndTime": civil_json(end),
    })
}

fn date_json(day: NaiveDate) -> Value {
    json!({"year": day.year(), "month": day.month(), "day": day.day()})
}

/// Invented points of the last 14 days up to `now`, newest first, like Google lists them.
fn google_default_points(user: &str, data_type: &str, key: &str, now: DateTime<Utc>) -> Vec<Value> {
    let today = now.date_naive();
    let scale = json!({
        "recordingMethod": "ACTIVELY_MEASURED",
        "device": {"formFactor": "SCALE", "manufacturer": "Fitbit", "displayName": "Aria Air"},
        "platform": "FITBIT",
    });
    let watch = json!({
        "recordingMethod": "PASSIVELY_MEASURED",
        "device": {"formFactor": "WATCH", "manufacturer": "Google", "displayName": "Pixel Watch 3"},
        "platform": "FITBIT",
    });
    // (sort key, point)
    let mut points: Vec<(DateTime<Utc>, Value)> = Vec::new();
    for back in 0..14 {
        let day = today - chrono::Duration::days(back);
        let n = day_number(day);
        let mut push = |at: DateTime<Utc>, source: &Value, data: Value| {
            if at <= now {
                let id = 7_305_000_000_000_000_000u64 + at.timestamp() as u64;
                points.push((
                    at,
                    json!({
                        "name": format!("users/{user}/dataTypes/{data_type}/dataPoints/{id}"),
                        "dataSource": source,
                        key: data,
                    }),
                ));
            }
        };
        match data_type {
            "weight" if has_measurement(day) => {
                let at = at_utc(day, 6, 42, 10);
                let grams = (weight_kg(day) * 1000.0).round();
                push(
                    at,
                    &scale,
                    json!({"sampleTime": sample_time(at), "weightGrams": grams}),
                );
            }
            "body-fat" if has_measurement(day) => {
                let at = at_utc(day, 6, 42, 10);
                push(
                    at,
                    &scale,
                    json!({"sampleTime": sample_time(at), "percentage": fat_percent(day)}),
                );
            }
            "heart-rate" => {
                for slot in 0..48u32 {
                    let at = at_utc(day, slot / 2, (slot % 2) * 30, 0);
                    let bpm = 55 + (i64::from(slot) * 7 + n) % 40;
                    push(
                        at,
                        &watch,
                        json!({"sampleTime": sample_time(at), "beatsPerMinute": bpm.to_string()}),
                    );
                }
            }
            "steps" => {
                for hour in 7..21 {
                    let start = at_utc(day, hour, 0, 0);
                    let end = start + chrono::Duration::hours(1);
                    if end > now {
                        continue;
                    }
                    let count = 200 + (i64::from(hour) * 97 + n * 13) % 900;
                    push(
                        start,
                        &watch,
                        json!({"interval": interval(start, end), "count": count.to_string()}),
                    );
                }
            }
            "daily-resting-heart-rate" => {
                let at = at_utc(day, 0, 0, 0);
                push(
                    at,
                    &json!({"recordingMethod": "DERIVED", "platform": "FITBIT"}),
                    json!({
                        "date": date_json(day),
                        "beatsPerMinute": (58 + n % 6).to_string(),
                        "dailyRestingHeartRateMetadata": {"calculationMethod": "WITH_SLEEP"},
                    }),
                );
            }
            "sleep" => {
                let start = at_utc(day, 0, 0, 0) - chrono::Duration::minutes(106 - n % 30);
                let end = at_utc(day, 5, 51, 30);
                let asleep = (end - start).num_minutes() - 45;
                push(
                    end,
                    &watch,
                    json!({
                        "interval": interval(start, end),
                        "type": "STAGES",
                        "stages": [{
                            "startTime": rfc3339(start), "startUtcOffset": "3600s",
                            "endTime": rfc3339(start + chrono::Duration::minutes(26)),
                            "endUtcOffset": "3600s", "type": "LIGHT",
                        }],
                        "metadata": {
                            "stagesStatus": "SUCCEEDED", "processed": true, "mainSleep": true,
                        },
                        "summary": {
                            "minutesInSleepPeriod": (end - start).num_minutes().to_string(),
                            "minutesAsleep": asleep.to_string(),
                            "minutesAwake": "45",
                        },
                    }),
                );
            }
            _ => {}
        }
    }
    points.sort_by_key(|point| std::cmp::Reverse(point.0));
    points.into_iter().map(|(_, point)| point).collect()
}

// ---------------------------------------------------------------------------------------------
// Withings data.

/// The `getmeas` parameters, from the form body or the query.
struct GetmeasParams {
    types: Option<Vec<i64>>,
    category: i64,
    start: Option<i64>,
    end: Option<i64>,
    last_update: Option<i64>,
    offset: usize,
}

impl GetmeasParams {
    fn parse(request: &Incoming) -> Result<GetmeasParams, Box<Response>> {
        let number = |name: &str| -> Result<Option<i64>, Box<Response>> {
            match request.param(name) {
                None | Some("") => Ok(None),
                Some(raw) => raw.parse::<i64>().map(Some).map_err(|_| {
                    Box::new(withings_status(503, &format!("Invalid Params: {name}")))
                }),
            }
        };
        let types = match request
            .param("meastypes")
            .or_else(|| request.param("meastype"))
        {
            None => None,
            Some(raw) => Some(
                raw.split(',')
                    .map(|item| item.trim().parse::<i64>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| Box::new(withings_status(503, "Invalid Params: meastypes")))?,
            ),
        };
        Ok(GetmeasParams {
            types,
            category: number("category")?.unwrap_or(1),
            start: number("startdate")?,
            end: number("enddate")?,
            last_update: number("lastupdate")?,
            offset: number("offset")?.unwrap_or(0).max(0) as usize,
        })
    }
}

/// Invented measure groups of the last 30 days, newest first.
fn withings_default_groups(today: NaiveDate) -> Vec<Value> {
    (0..30)
        .map(|back| today - chrono::Duration::days(back))
        .filter(|day| has_measurement(*day))
        .map(|day| {
            let date = at_utc(day, 7, 21, 12).timestamp();
            let kg = weight_kg(day);
            let fat_ratio = fat_percent(day);
            let fat_mass = kg * fat_ratio / 100.0;
            let milli = |value: f64| (value * 1000.0).round() as i64;
            let percent = (fat_ratio * 100.0).round() as i64;
            json!({
                "grpid": 6_100_000_000i64 + day_number(day),
                "attrib": 0,
                "date": date,
                "created": date + 35,
                "modified": date + 35,
                "category": 1,
                "deviceid": "3f9c2e71a0b84d55c6e1f0a9d2b7c4e8a15f6d90",
                "hash_deviceid": "3f9c2e71a0b84d55c6e1f0a9d2b7c4e8a15f6d90",
                "measures": [
                    {"value": milli(kg), "type": 1, "unit": -3, "algo": 0, "fm": 3},
                    {"value": percent, "type": 6, "unit": -2, "algo": 0, "fm": 3},
                    {"value": milli(fat_mass), "type": 8, "unit": -3, "algo": 0, "fm": 3},
                    {"value": milli(kg - fat_mass), "type": 5, "unit": -3, "algo": 0, "fm": 3},
                ],
                "modelid": 5,
                "model": "Body+",
                "comment": null,
            })
        })
        .collect()
}
