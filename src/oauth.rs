//! OAuth2 as the provider file describes it: consent URLs with state and PKCE, code
//! exchange, refresh, revocation (RFC 7009), and the stored token.
//!
//! The stored token keeps the old plugin's layout (`access_token`, `refresh_token`,
//! `expires_in`, `expires_at`, `scope`, `token_type`, `user_id`, ...) plus `issued_at`,
//! which orders tokens so that an older one never replaces a newer one.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use url::Url;

use crate::http;
use crate::provider::Provider;
use crate::provider::raw::{ClientAuth, Pkce, Rotation};
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

/// Why a token call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The grant is gone (`invalid_grant`): the user must consent again.
    #[error("the provider refused the grant ({0}): the user must grant access again")]
    InvalidGrant(String),
    /// The answer was lost or the provider failed temporarily: try again with the same token.
    #[error("token endpoint unavailable: {0}")]
    Transient(String),
    /// Anything else.
    #[error("token endpoint error: {0}")]
    Failed(String),
}

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
    token_call(provider, app, url, form, None, now).await
}

/// Refreshes a token; a provider that does not rotate keeps the old refresh token.
pub async fn refresh(
    provider: &Provider,
    app: &AppCredentials,
    current: &Token,
    now: f64,
) -> Result<Token, TokenError> {
    let Some(refresh) = &current.refresh else {
        return Err(TokenError::InvalidGrant(
            "there is no refresh token".to_owned(),
        ));
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
    let mut token = token_call(provider, app, url, form, Some(current), now).await?;
    if token.refresh.is_none() && provider.auth.config.refresh.rotation != Rotation::SingleUse {
        token.refresh = current.refresh.clone();
    }
    Ok(token)
}

/// Whether an error body holds `code` as a value anywhere: not every provider puts the
/// OAuth error code in `error` (Fitbit answers `{"errors": [{"errorType": "invalid_grant"}]}`).
fn carries(body: &Value, code: &str) -> bool {
    match body {
        Value::String(s) => s == code,
        Value::Array(items) => items.iter().any(|i| carries(i, code)),
        Value::Object(m) => m.values().any(|v| carries(v, code)),
        _ => false,
    }
}

/// Adds the client authentication `auth.client_auth` asks for: HTTP Basic, or the
/// client id (and secret) in the form.
fn authenticate_client(
    provider: &Provider,
    app: &AppCredentials,
    request: reqwest::RequestBuilder,
    form: &mut Vec<(String, String)>,
) -> reqwest::RequestBuilder {
    match provider.auth.config.client_auth {
        ClientAuth::Basic => {
            request.header("Authorization", format!("Basic {}", app.basic.expose()))
        }
        ClientAuth::Body => {
            form.push(("client_id".into(), app.client_id.clone()));
            form.push((
                "client_secret".into(),
                app.client_secret.expose().to_owned(),
            ));
            request
        }
        ClientAuth::None => {
            form.push(("client_id".into(), app.client_id.clone()));
            request
        }
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

/// Revokes a token at the provider (RFC 7009): a form POST of the refresh token (the
/// access token when there is none) with its `token_type_hint`, authenticated like the
/// token endpoint. One attempt; the caller decides what a failure means.
pub async fn revoke(
    provider: &Provider,
    app: &AppCredentials,
    token: &Token,
) -> Result<Revocation, RevokeError> {
    let Some(url) = provider.auth.revoke_url.clone() else {
        return Ok(Revocation::NotSupported);
    };
    let (value, hint) = match &token.refresh {
        Some(refresh) => (refresh, "refresh_token"),
        None => (&token.access, "access_token"),
    };
    let mut form = vec![
        ("token".to_owned(), value.expose().to_owned()),
        ("token_type_hint".to_owned(), hint.to_owned()),
    ];
    let client = http::client(Duration::from_secs(provider.api.config.timeout_seconds));
    let request = client.post(url).header("Accept", "application/json");
    let request = authenticate_client(provider, app, request, &mut form);
    let response = request
        .form(&form)
        .send()
        .await
        .map_err(|e| RevokeError::Unavailable(redact(&http::describe(&e))))?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(Revocation::Revoked);
    }
    let body = http::read_limited(response, 64 * 1024)
        .await
        .unwrap_or_default();
    let detail = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|j| {
            j.get("error_description")
                .or_else(|| j.pointer("/errors/0/message"))
                .or_else(|| j.get("error"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .map(|m| format!("HTTP {status}: {}", redact(&m)))
        .unwrap_or_else(|| format!("HTTP {status}"));
    if status >= 500 || status == 429 {
        Err(RevokeError::Unavailable(detail))
    } else {
        Err(RevokeError::Refused(detail))
    }
}

async fn token_call(
    provider: &Provider,
    app: &AppCredentials,
    url: Url,
    mut form: Vec<(String, String)>,
    previous: Option<&Token>,
    now: f64,
) -> Result<Token, TokenError> {
    let client = http::client(Duration::from_secs(provider.api.config.timeout_seconds));
    let request = client.post(url).header("Accept", "application/json");
    let request = authenticate_client(provider, app, request, &mut form);
    let response = request
        .form(&form)
        .send()
        .await
        .map_err(|e| TokenError::Transient(http::describe(&e)))?;
    let status = response.status().as_u16();
    let body = http::read_limited(response, 1024 * 1024)
        .await
        .map_err(TokenError::Transient)?;
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    let t = &provider.auth.token;
    let message = |json: &Value| {
        t.error_message
            .as_ref()
            .and_then(|s| s.first(json))
            .or_else(|| json.get("error_description"))
            .or_else(|| json.pointer("/errors/0/message"))
            .or_else(|| t.error_code.first(json))
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_else(|| format!("HTTP {status}"))
    };
    let succeeded = match (&t.success, &json) {
        (Some(cond), Some(j)) => cond.holds(j) && (200..300).contains(&status),
        _ => (200..300).contains(&status),
    };
    if !succeeded {
        if status == 410 {
            return Err(TokenError::Failed(format!(
                "HTTP 410 Gone: the {} token endpoint is retired",
                provider.name
            )));
        }
        if status >= 500 || status == 429 {
            return Err(TokenError::Transient(format!("HTTP {status}")));
        }
        let Some(j) = json else {
            return Err(TokenError::Failed(format!(
                "HTTP {status}, answer is not JSON"
            )));
        };
        let code = t
            .error_code
            .first(&j)
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let msg = redact(&message(&j));
        if code == "invalid_grant" || msg.contains("invalid_grant") || carries(&j, "invalid_grant")
        {
            return Err(TokenError::InvalidGrant(msg));
        }
        return Err(TokenError::Failed(format!("HTTP {status}: {msg}")));
    }
    let Some(j) = json else {
        return Err(TokenError::Transient(
            "the token answer is not JSON".to_owned(),
        ));
    };
    let root = match &t.root {
        Some(r) => r.first(&j).cloned().unwrap_or(Value::Null),
        None => j,
    };
    let access = text(t.access_token.first(&root))
        .ok_or_else(|| TokenError::Failed("the token answer has no access token".to_owned()))?;
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
