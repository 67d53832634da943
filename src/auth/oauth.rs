//! OAuth2 as the provider file describes it: consent URLs with state and PKCE, code
//! exchange, refresh, revocation (RFC 7009), and the stored token.
//!
//! The stored token keeps the old plugin's layout (`access_token`, `refresh_token`,
//! `expires_in`, `expires_at`, `scope`, `token_type`, `user_id`, ...) plus `issued_at`,
//! which orders tokens so that an older one never replaces a newer one.

use std::time::Duration;

use ::http::Method;
use ::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use rand::RngCore;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use url::Url;

use crate::http::{self, Limits, Request, Response, Transport, TransportError};
use crate::provider::Provider;
use crate::provider::raw::{ClientAuth, Pkce, RevokeStyle, Rotation};
use crate::secret::{Secret, redact};

/// The app registration (`plugindata/<plugin>`).
#[derive(Debug, Clone)]
pub struct AppCredentials {
    /// Client id.
    pub client_id: String,
    /// Client secret (may be empty for public clients).
    pub client_secret: Secret,
    /// `base64(client_id:client_secret)` as sent with `client_auth: basic`, registered
    /// for redaction like the secret itself.
    basic: Secret,
}

impl AppCredentials {
    /// The registration of `client_id` with its secret.
    pub fn new(client_id: String, client_secret: Secret) -> AppCredentials {
        let basic = crate::secret::basic_credential(&client_id, &client_secret);
        AppCredentials {
            client_id,
            client_secret,
            basic,
        }
    }
}

/// A token as stored.
#[derive(Debug, Clone)]
pub struct Token {
    /// Access token.
    pub access: Secret,
    /// Refresh token.
    pub refresh: Option<Secret>,
    /// Expiry, epoch seconds.
    pub expires_at: Option<f64>,
    /// When we received it, epoch seconds.
    pub issued_at: f64,
    /// Granted scopes.
    pub scope: Option<String>,
    /// The provider's id of the user.
    pub provider_user_id: Option<String>,
    /// Other fields of the token response, as stored.
    pub extra: Map<String, Value>,
}

fn number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|i| i.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    }
}

impl Token {
    /// Reads a stored token; `None` when it has no access token.
    pub fn from_stored(v: &Value) -> Option<Token> {
        let access = text(v.get("access_token"))?;
        let refresh = text(v.get("refresh_token"));
        let mut extra = Map::new();
        if let Some(obj) = v.as_object() {
            for (k, val) in obj {
                if !matches!(
                    k.as_str(),
                    "access_token" | "refresh_token" | "expires_at" | "issued_at" | "scope"
                ) {
                    extra.insert(k.clone(), val.clone());
                }
            }
        }
        Some(Token {
            access: Secret::new(access),
            refresh: refresh.map(Secret::new),
            expires_at: number(v.get("expires_at")),
            issued_at: number(v.get("issued_at")).unwrap_or(0.0),
            scope: text(v.get("scope")),
            provider_user_id: text(v.get("user_id")).or_else(|| text(v.get("provider_user_id"))),
            extra,
        })
    }

    /// The stored form.
    pub fn to_stored(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "access_token".into(),
            Value::String(self.access.expose().into()),
        );
        if let Some(r) = &self.refresh {
            m.insert("refresh_token".into(), Value::String(r.expose().into()));
        }
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        if let Some(s) = &self.scope {
            m.insert("scope".into(), Value::String(s.clone()));
        }
        if let Some(e) = self.expires_at {
            m.insert("expires_at".into(), json!(e.round() as i64));
        }
        m.insert("issued_at".into(), json!(self.issued_at));
        Value::Object(m)
    }

    /// Whether the access token expires within `skew` seconds of `now`.
    pub fn expires_soon(&self, now: f64, skew: f64) -> bool {
        self.expires_at.is_some_and(|e| e - skew <= now)
    }
}

/// Why a token call failed, classified only by what the provider file declares:
/// `auth.token_response.success` and `error_code`/`error_message` for the answer's
/// body, the HTTP status for the rest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The declared error code (`auth.token_response.error_code`) is `invalid_grant`
    /// (RFC 6749 section 5.2): the grant is gone and the user must consent again.
    #[error("the provider refused the grant ({message}): the user must grant access again")]
    InvalidGrant {
        /// The provider's words (redacted).
        message: String,
    },
    /// There is no refresh token to refresh with.
    #[error("there is no refresh token: the user must grant access again")]
    NoRefreshToken,
    /// HTTP 410 Gone: the token endpoint is switched off.
    #[error("HTTP {status} Gone: the {provider} token endpoint is retired")]
    Retired {
        /// The HTTP status.
        status: u16,
        /// The provider's name.
        provider: String,
    },
    /// HTTP 429: the provider limits calls; try again later.
    #[error("HTTP {status}: the token endpoint limits calls{}", retry_after.map(|s| format!(" (retry after {s} s)")).unwrap_or_default())]
    RateLimited {
        /// The HTTP status.
        status: u16,
        /// Seconds to wait, from `Retry-After`.
        retry_after: Option<u64>,
    },
    /// HTTP 5xx, or a success whose body is not JSON (a lost answer): try again with
    /// the same token.
    #[error("token endpoint unavailable: HTTP {status}{}", if *not_json { ", the answer is not JSON" } else { "" })]
    Transient {
        /// The HTTP status.
        status: u16,
        /// Whether the status said success but the body was not JSON.
        not_json: bool,
    },
    /// The provider refused the request for another reason (its declared code and message).
    #[error("HTTP {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The declared error code, when the answer has one.
        code: Option<String>,
        /// The provider's words (redacted), or what was wrong with the answer.
        message: String,
    },
    /// No complete answer arrived: try again with the same token.
    #[error("token endpoint unavailable: {0}")]
    Transport(#[from] TransportError),
}

impl TokenError {
    /// Whether the same call may succeed when repeated (with the same refresh token).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TokenError::Transient { .. }
                | TokenError::RateLimited { .. }
                | TokenError::Transport(_)
        )
    }
}

/// The RFC 6749 error code meaning the grant (code or refresh token) is no longer valid.
const INVALID_GRANT: &str = "invalid_grant";

/// A consent request in progress.
#[derive(Debug, Clone)]
pub struct Consent {
    /// Where to send the person.
    pub url: Url,
    /// The state value (secret until used).
    pub state: Secret,
    /// The PKCE verifier, when PKCE is used.
    pub verifier: Option<Secret>,
}

/// Random URL-safe text of `bytes` random bytes.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// The S256 challenge of a verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The key a state is stored under (never the state itself).
pub fn state_key(state: &str) -> String {
    let digest = Sha256::digest(state.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("s{hex}")
}

/// Builds the consent URL with a fresh state (256 bits) and, unless the provider has
/// no PKCE, an S256 challenge.
pub fn consent(provider: &Provider, client_id: &str, redirect_uri: &str) -> Consent {
    let a = &provider.auth.config;
    let state = random_token(32);
    let verifier = (a.pkce != Pkce::Off).then(|| random_token(48));
    let mut url = provider.auth.authorize_url.clone();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code");
        q.append_pair("client_id", client_id);
        q.append_pair("redirect_uri", redirect_uri);
        if !a.scopes.is_empty() {
            q.append_pair("scope", &a.scopes.join(&a.scope_separator));
        }
        q.append_pair("state", &state);
        if let Some(v) = &verifier {
            q.append_pair("code_challenge", &pkce_challenge(v));
            q.append_pair("code_challenge_method", "S256");
        }
        for (k, v) in &a.authorize_params {
            q.append_pair(k, v);
        }
    }
    Consent {
        url,
        state: Secret::new(state),
        verifier: verifier.map(Secret::new),
    }
}

/// Exchanges an authorization code for a token.
pub async fn exchange_code(
    transport: &dyn Transport,
    provider: &Provider,
    app: &AppCredentials,
    code: &str,
    redirect_uri: &str,
    verifier: Option<&Secret>,
    now: f64,
) -> Result<Token, TokenError> {
    let mut form = vec![
        ("grant_type".to_owned(), "authorization_code".to_owned()),
        ("code".to_owned(), code.to_owned()),
        ("redirect_uri".to_owned(), redirect_uri.to_owned()),
    ];
    if let Some(v) = verifier {
        form.push(("code_verifier".into(), v.expose().to_owned()));
    }
    for (k, v) in &provider.auth.config.token_params {
        form.push((k.clone(), v.clone()));
    }
    let url = provider.auth.token_url.clone();
    token_call(transport, provider, app, url, form, None, now).await
}

/// Refreshes a token; a provider that does not rotate keeps the old refresh token.
pub async fn refresh(
    transport: &dyn Transport,
    provider: &Provider,
    app: &AppCredentials,
    current: &Token,
    now: f64,
) -> Result<Token, TokenError> {
    let Some(refresh) = &current.refresh else {
        return Err(TokenError::NoRefreshToken);
    };
    let mut form = vec![
        ("grant_type".to_owned(), "refresh_token".to_owned()),
        ("refresh_token".to_owned(), refresh.expose().to_owned()),
    ];
    for (k, v) in provider
        .auth
        .config
        .token_params
        .iter()
        .chain(provider.auth.config.refresh_params.iter())
    {
        form.push((k.clone(), v.clone()));
    }
    let url = provider.auth.refresh_url.clone();
    let mut token = token_call(transport, provider, app, url, form, Some(current), now).await?;
    if token.refresh.is_none() && provider.auth.config.refresh.rotation != Rotation::SingleUse {
        token.refresh = current.refresh.clone();
    }
    Ok(token)
}

/// A form POST to a token or revocation endpoint, with the client authentication
/// `auth.client_auth` asks for: HTTP Basic, or the client id (and secret) in the form.
fn form_post(
    provider: &Provider,
    app: &AppCredentials,
    url: &Url,
    mut form: Vec<(String, String)>,
) -> Result<Request, TokenError> {
    let mut builder = http::request(Method::POST, url.as_str())
        .header(ACCEPT, "application/json")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded");
    match provider.auth.config.client_auth {
        ClientAuth::Basic => {
            builder = builder.header(AUTHORIZATION, format!("Basic {}", app.basic.expose()));
        }
        ClientAuth::Body => {
            form.push(("client_id".into(), app.client_id.clone()));
            form.push((
                "client_secret".into(),
                app.client_secret.expose().to_owned(),
            ));
        }
        ClientAuth::None => {
            form.push(("client_id".into(), app.client_id.clone()));
        }
    }
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&form)
        .finish();
    builder
        .body(Bytes::from(body))
        .map_err(|e| TokenError::Transport(TransportError::Failed(format!(": {e}"))))
}

/// The limits of a token or revocation call: the API's timeout, answers up to 1 MiB.
fn token_limits(provider: &Provider) -> Limits {
    Limits {
        timeout: Duration::from_secs(provider.api.config.timeout_seconds),
        max_bytes: 1024 * 1024,
    }
}

/// What a revocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// The provider confirmed it (HTTP 2xx).
    Revoked,
    /// The provider file has no `auth.revoke_url`.
    NotSupported,
}

/// Why the provider did not confirm a revocation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevokeError {
    /// The request failed or the provider failed temporarily.
    #[error("revocation endpoint unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request.
    #[error("the provider refused the revocation: {0}")]
    Refused(String),
}

/// Revokes a token at the provider, in the style the file declares (`revoke_style`;
/// RFC 7009 by default: a form POST of the refresh token, else the access token, with
/// its `token_type_hint`, authenticated like the token endpoint). One attempt; the
/// caller decides what a failure means.
pub async fn revoke(
    transport: &dyn Transport,
    provider: &Provider,
    app: &AppCredentials,
    token: &Token,
) -> Result<Revocation, RevokeError> {
    let Some(url) = provider.auth.revoke_url.clone() else {
        return Ok(Revocation::NotSupported);
    };
    let unavailable = |e: &dyn std::fmt::Display| RevokeError::Unavailable(redact(&e.to_string()));
    let url = match revoke_target(&url, token) {
        Some(url) => url,
        None => {
            return Err(RevokeError::Refused(
                "the provider's id of the user is not known".into(),
            ));
        }
    };
    let bearer = |method: Method| {
        http::request(method, url.as_str())
            .header(ACCEPT, "application/json")
            .header(AUTHORIZATION, format!("Bearer {}", token.access.expose()))
            .body(Bytes::new())
    };
    let request = match provider.auth.config.revoke_style {
        RevokeStyle::Rfc7009 => {
            let (value, hint) = match &token.refresh {
                Some(refresh) => (refresh, "refresh_token"),
                None => (&token.access, "access_token"),
            };
            let form = vec![
                ("token".to_owned(), value.expose().to_owned()),
                ("token_type_hint".to_owned(), hint.to_owned()),
            ];
            form_post(provider, app, &url, form).map_err(|e| unavailable(&e))?
        }
        RevokeStyle::BearerDelete => bearer(Method::DELETE).map_err(|e| unavailable(&e))?,
        RevokeStyle::BearerPost => bearer(Method::POST).map_err(|e| unavailable(&e))?,
        RevokeStyle::AccessTokenQuery => {
            let mut url = url.clone();
            url.query_pairs_mut()
                .append_pair("access_token", token.access.expose());
            http::request(Method::POST, url.as_str())
                .header(ACCEPT, "application/json")
                .body(Bytes::new())
                .map_err(|e| unavailable(&e))?
        }
    };
    let limits = Limits {
        max_bytes: 64 * 1024,
        ..token_limits(provider)
    };
    let response = transport
        .send(request, limits)
        .await
        .map_err(|e| RevokeError::Unavailable(redact(&e.to_string())))?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(Revocation::Revoked);
    }
    let detail = serde_json::from_slice::<Value>(response.body())
        .ok()
        .and_then(|j| error_message(provider, &j))
        .map(|m| format!("HTTP {status}: {}", redact(&m)))
        .unwrap_or_else(|| format!("HTTP {status}"));
    if status >= 500 || status == 429 {
        Err(RevokeError::Unavailable(detail))
    } else {
        Err(RevokeError::Refused(detail))
    }
}

/// The revocation URL with the provider's id of the user in place of
/// `{provider_user_id}`; `None` when it names the id and the token does not know it.
fn revoke_target(url: &Url, token: &Token) -> Option<Url> {
    const PLACE: &str = "%7Bprovider_user_id%7D";
    if !url.as_str().contains(PLACE) {
        return Some(url.clone());
    }
    let id = token.provider_user_id.as_deref()?;
    let encoded: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
    Url::parse(&url.as_str().replace(PLACE, &encoded)).ok()
}

/// The provider's words for a failed token call: `auth.token_response.error_message`
/// where declared, else RFC 6749's `error_description`, else the declared error code.
fn error_message(provider: &Provider, body: &Value) -> Option<String> {
    let t = &provider.auth.token;
    t.error_message
        .as_ref()
        .and_then(|s| s.first(body))
        .or_else(|| body.get("error_description"))
        .or_else(|| t.error_code.first(body))
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
}

/// Classifies a token endpoint's answer that is not a success.
fn failure(provider: &Provider, response: &Response, json: Option<&Value>) -> TokenError {
    let status = response.status().as_u16();
    match status {
        410 => {
            return TokenError::Retired {
                status,
                provider: provider.name.clone(),
            };
        }
        429 => {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok());
            return TokenError::RateLimited {
                status,
                retry_after,
            };
        }
        500..=599 => {
            return TokenError::Transient {
                status,
                not_json: false,
            };
        }
        _ => {}
    }
    let Some(j) = json else {
        return TokenError::Refused {
            status,
            code: None,
            message: "the answer is not JSON".to_owned(),
        };
    };
    let code = provider
        .auth
        .token
        .error_code
        .first(j)
        .and_then(Value::as_str)
        .map(str::to_owned);
    let message = redact(&error_message(provider, j).unwrap_or_else(|| format!("HTTP {status}")));
    if code.as_deref() == Some(INVALID_GRANT) {
        return TokenError::InvalidGrant { message };
    }
    TokenError::Refused {
        status,
        code: code.map(|c| redact(&c)),
        message,
    }
}

async fn token_call(
    transport: &dyn Transport,
    provider: &Provider,
    app: &AppCredentials,
    url: Url,
    form: Vec<(String, String)>,
    previous: Option<&Token>,
    now: f64,
) -> Result<Token, TokenError> {
    let request = form_post(provider, app, &url, form)?;
    let response = transport.send(request, token_limits(provider)).await?;
    let status = response.status().as_u16();
    let json: Option<Value> = serde_json::from_slice(response.body()).ok();
    let t = &provider.auth.token;
    let succeeded = (200..300).contains(&status)
        && match (&t.success, &json) {
            (Some(cond), Some(j)) => cond.holds(j),
            _ => true,
        };
    if !succeeded {
        return Err(failure(provider, &response, json.as_ref()));
    }
    let Some(j) = json else {
        return Err(TokenError::Transient {
            status,
            not_json: true,
        });
    };
    parse_token(provider, j, previous, now)
}

/// Maps a successful token answer with `auth.token_response`.
fn parse_token(
    provider: &Provider,
    j: Value,
    previous: Option<&Token>,
    now: f64,
) -> Result<Token, TokenError> {
    let t = &provider.auth.token;
    let root = match &t.root {
        Some(r) => r.first(&j).cloned().unwrap_or(Value::Null),
        None => j,
    };
    let access = text(t.access_token.first(&root)).ok_or_else(|| TokenError::Refused {
        status: 200,
        code: None,
        message: "the token answer has no access token".to_owned(),
    })?;
    let refresh = text(t.refresh_token.first(&root));
    let expires_at = number(t.expires_at.first(&root))
        .or_else(|| number(t.expires_in.first(&root)).map(|s| now + s));
    let scope = text(t.scope.first(&root)).or_else(|| previous.and_then(|p| p.scope.clone()));
    let provider_user_id = t
        .provider_user_id
        .as_ref()
        .and_then(|s| text(s.first(&root)))
        .or_else(|| previous.and_then(|p| p.provider_user_id.clone()));
    let mut extra = Map::new();
    if let Some(obj) = root.as_object() {
        for (k, v) in obj {
            if !matches!(
                k.as_str(),
                "access_token" | "refresh_token" | "expires_at" | "scope" | "id_token"
            ) {
                extra.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(id) = &provider_user_id {
        if !extra.contains_key("user_id") {
            extra.insert("user_id".into(), Value::String(id.clone()));
        }
    }
    Ok(Token {
        access: Secret::new(access),
        refresh: refresh.map(Secret::new),
        expires_at,
        issued_at: now,
        scope,
        provider_user_id,
        extra,
    })
}

#[cfg(test)]
mod tests {
    //! Token answers classified by the shipped provider files' declarations, through
    //! an in-memory transport.

    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::http::memory::{MemoryTransport, Step, json as answer};
    use crate::provider::UrlOverrides;

    fn provider(name: &str) -> Provider {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("providers/{name}.yaml"));
        crate::provider::load(&path, &UrlOverrides::default()).expect("provider")
    }

    fn app() -> AppCredentials {
        AppCredentials::new("client-7".to_owned(), Secret::new("client-secret-7"))
    }

    fn current() -> Token {
        Token::from_stored(
            &json!({"access_token": "old-access-7", "refresh_token": "old-refresh-7",
                                   "issued_at": 1.0, "scope": "weight"}),
        )
        .expect("token")
    }

    async fn refresh_with(
        provider: &Provider,
        step: Step,
    ) -> (Result<Token, TokenError>, MemoryTransport) {
        let transport = MemoryTransport::new([step]);
        let result = refresh(&transport, provider, &app(), &current(), 1000.0).await;
        (result, transport)
    }

    #[tokio::test]
    async fn each_provider_revokes_in_its_own_style() {
        let token =
            Token::from_stored(&json!({"access_token": "acc-41", "refresh_token": "ref-41",
            "issued_at": 1.0, "user_id": "41908375"}))
            .expect("token");
        for (name, method, uri, bearer) in [
            (
                "oura",
                "POST",
                "https://api.ouraring.com/oauth/revoke?access_token=acc-41",
                false,
            ),
            (
                "whoop",
                "DELETE",
                "https://api.prod.whoop.com/developer/v2/user/access",
                true,
            ),
            (
                "strava",
                "POST",
                "https://www.strava.com/oauth/deauthorize",
                true,
            ),
            (
                "polar",
                "DELETE",
                "https://www.polaraccesslink.com/v3/users/41908375",
                true,
            ),
            (
                "google-health",
                "POST",
                "https://oauth2.googleapis.com/revoke",
                false,
            ),
        ] {
            let transport = MemoryTransport::new([answer(200, json!({}))]);
            let done = revoke(&transport, &provider(name), &app(), &token).await;
            assert_eq!(done.expect(name), Revocation::Revoked, "{name}");
            let sent = &transport.sent()[0];
            assert_eq!(
                (sent.method.as_str(), sent.uri.as_str()),
                (method, uri),
                "{name}"
            );
            assert_eq!(
                sent.header("authorization") == Some("Bearer acc-41"),
                bearer,
                "{name}"
            );
        }
        // RFC 7009 sends the refresh token with its hint.
        let transport = MemoryTransport::new([answer(200, json!({}))]);
        revoke(&transport, &provider("google-health"), &app(), &token)
            .await
            .unwrap();
        assert_eq!(transport.sent()[0].form("token").as_deref(), Some("ref-41"));
        // A URL naming the user's id needs it.
        let anonymous =
            Token::from_stored(&json!({"access_token": "acc-42", "issued_at": 1.0})).unwrap();
        let transport = MemoryTransport::new([]);
        let refused = revoke(&transport, &provider("polar"), &app(), &anonymous).await;
        assert!(
            matches!(refused, Err(RevokeError::Refused(_))),
            "{refused:?}"
        );
        assert!(transport.sent().is_empty());
    }

    #[tokio::test]
    async fn withings_answers_are_unwrapped_and_judged_by_their_status_field() {
        let withings = provider("withings");
        let ok = answer(
            200,
            json!({"status": 0, "body": {"userid": 4711, "access_token": "new-access-7",
                   "refresh_token": "new-refresh-7", "expires_in": 10800, "scope": "user.metrics"}}),
        );
        let (token, transport) = refresh_with(&withings, ok).await;
        let token = token.expect("a token");
        assert_eq!(token.access.expose(), "new-access-7");
        assert_eq!(
            token.refresh.as_ref().map(Secret::expose),
            Some("new-refresh-7")
        );
        assert_eq!(token.expires_at, Some(1000.0 + 10800.0));
        assert_eq!(token.provider_user_id.as_deref(), Some("4711"));
        let sent = &transport.sent()[0];
        assert_eq!(sent.form("action").as_deref(), Some("requesttoken"));
        assert_eq!(
            sent.form("client_id").as_deref(),
            Some("client-7"),
            "body auth"
        );
        assert_eq!(
            sent.form("client_secret").as_deref(),
            Some("client-secret-7")
        );
        assert_eq!(sent.header("authorization"), None);

        // HTTP 200 with a failing status: refused, not mistaken for a token.
        let refused = answer(
            200,
            json!({"status": 503, "error": "Invalid Params: invalid_grant"}),
        );
        let (result, _) = refresh_with(&withings, refused).await;
        match result {
            Err(TokenError::Refused {
                status: 200,
                message,
                ..
            }) => {
                assert!(message.contains("Invalid Params"), "{message}")
            }
            other => panic!("expected a refusal: {other:?}"),
        }
    }

    #[tokio::test]
    async fn invalid_grant_is_read_from_the_declared_error_code_only() {
        let fitbit = provider("fitbit");
        let fitbit_grant = answer(
            400,
            json!({"errors": [{"errorType": "invalid_grant", "message": "Refresh token invalid"}]}),
        );
        let (result, _) = refresh_with(&fitbit, fitbit_grant).await;
        assert_eq!(
            result.expect_err("refused"),
            TokenError::InvalidGrant {
                message: "Refresh token invalid".to_owned()
            }
        );
        // The words "invalid_grant" in a message do not make an invalid grant.
        let other = answer(
            400,
            json!({"errors": [{"errorType": "invalid_client", "message": "not an invalid_grant"}]}),
        );
        let (result, _) = refresh_with(&fitbit, other).await;
        assert_eq!(
            result.expect_err("refused"),
            TokenError::Refused {
                status: 400,
                code: Some("invalid_client".to_owned()),
                message: "not an invalid_grant".to_owned()
            }
        );
        // Google declares nothing: RFC 6749's `error` and `error_description`.
        let google = provider("google-health");
        let google_grant = answer(
            400,
            json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."}),
        );
        let (result, transport) = refresh_with(&google, google_grant).await;
        assert!(
            matches!(result, Err(TokenError::InvalidGrant { .. })),
            "{result:?}"
        );
        let sent = &transport.sent()[0];
        assert_eq!(sent.form("refresh_token").as_deref(), Some("old-refresh-7"));
    }

    #[tokio::test]
    async fn statuses_decide_retirement_rate_limits_and_passing_failures() {
        let fitbit = provider("fitbit");
        let (result, _) = refresh_with(&fitbit, answer(410, json!({"errors": []}))).await;
        assert_eq!(
            result.expect_err("gone"),
            TokenError::Retired {
                status: 410,
                provider: "fitbit".to_owned()
            }
        );
        let limited = Step::Answer(429, vec![("retry-after", "17".to_owned())], String::new());
        let (result, _) = refresh_with(&fitbit, limited).await;
        let e = result.expect_err("limited");
        assert_eq!(
            e,
            TokenError::RateLimited {
                status: 429,
                retry_after: Some(17)
            }
        );
        assert!(e.is_retryable());
        let (result, _) = refresh_with(&fitbit, answer(502, json!({}))).await;
        assert!(result.expect_err("down").is_retryable());
        let lost = Step::Answer(200, Vec::new(), "<html>proxy</html>".to_owned());
        let (result, _) = refresh_with(&fitbit, lost).await;
        assert_eq!(
            result.expect_err("not json"),
            TokenError::Transient {
                status: 200,
                not_json: true
            }
        );
        let (result, _) = refresh_with(&fitbit, Step::Lost).await;
        let e = result.expect_err("lost");
        assert!(
            matches!(e, TokenError::Transport(_)) && e.is_retryable(),
            "{e:?}"
        );
        let (result, _) = refresh_with(&fitbit, answer(400, json!({"errors": []}))).await;
        assert!(!result.expect_err("refused").is_retryable());
    }

    #[tokio::test]
    async fn a_provider_that_does_not_rotate_keeps_the_refresh_token() {
        let google = provider("google-health");
        let (token, _) = refresh_with(
            &google,
            answer(
                200,
                json!({"access_token": "new-access-8", "expires_in": 3599}),
            ),
        )
        .await;
        let token = token.expect("a token");
        assert_eq!(
            token.refresh.as_ref().map(Secret::expose),
            Some("old-refresh-7")
        );
        assert_eq!(token.scope.as_deref(), Some("weight"), "the previous scope");
    }
}
