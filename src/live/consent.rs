//! Granting access: the consent round trip shared by `auth1`/`auth2` and `healthpull auth`.
//!
//! A consent starts with a fresh state (256 random bits) and PKCE verifier, stored
//! under the hash of the state together with the plugin (by its path) and the user.
//! The callback must bring that state back within 10 minutes; the record is deleted
//! before the code is exchanged, so a state works once. A wrong, used or expired
//! state never touches stored tokens. Starting a consent removes the plugin's expired
//! records first, and the number in progress is bounded per user and per plugin, so
//! repeated `auth1` calls cannot fill the store.

use serde_json::{Value, json};
use url::Url;

use crate::auth::oauth::{self, TokenError};
use crate::config::Config;
use crate::igor::paths;
use crate::live::{self, Clock};
use crate::provider::Provider;
use crate::secret::Secret;
use crate::store::Store;
use crate::user::UserName;

/// How long a consent may take.
pub const STATE_TTL_SECONDS: f64 = 600.0;
/// Consents one user of a plugin may have in progress; starting one more drops the oldest.
pub const MAX_PENDING_PER_USER: usize = 3;
/// Consents in progress per plugin; beyond this, new ones are refused until some finish
/// or expire.
pub const MAX_PENDING_PER_PLUGIN: usize = 100;

/// Starting consents one at a time in the process, so that the limits above hold.
static BEGIN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The URL people and providers reach the server at, without a trailing slash:
/// `public_url`, else `http://<listen>`.
pub fn public_url(config: &Config) -> String {
    config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.listen))
        .trim_end_matches('/')
        .to_owned()
}

/// The callback (redirect) URL of `plugin` on a server reached at `public_url`.
pub fn callback_url_at(public_url: &str, plugin: &str) -> String {
    format!("{}/plugin/{plugin}/auth2", public_url.trim_end_matches('/'))
}

/// The callback URL of `plugin` to register with the provider, from the config.
pub fn callback_url(config: &Config, plugin: &str) -> String {
    callback_url_at(&public_url(config), plugin)
}

/// Why a callback was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    /// The plugin has no client id and secret.
    #[error("the app is not registered: set client_id and client_secret first")]
    NoApp,
    /// No such pending consent (wrong or already used state).
    #[error("unknown or already used state: start again from auth1")]
    UnknownState,
    /// Too late.
    #[error("the consent took longer than 10 minutes: start again from auth1")]
    Expired,
    /// Too many consents of the plugin are in progress.
    #[error("too many consents are in progress: finish one or try again in 10 minutes")]
    TooMany,
    /// The provider refused the code.
    #[error("the provider refused the code: {0}")]
    Exchange(TokenError),
    /// The call the provider needs after a consent failed; the token is kept, and the
    /// next consent calls again.
    #[error("{provider} {method} after the consent: {message}")]
    AfterConsent {
        /// Provider.
        provider: String,
        /// The method called.
        method: String,
        /// What went wrong (the status and the provider's text, redacted).
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl From<TokenError> for ConsentError {
    fn from(e: TokenError) -> Self {
        ConsentError::Exchange(e)
    }
}

/// Starts a consent for `user`; returns the provider URL to send the person to.
pub async fn begin(
    store: &dyn Store,
    provider: &Provider,
    plugin: &str,
    user: &UserName,
    redirect_uri: &str,
    clock: Clock,
) -> Result<Url, ConsentError> {
    let app = live::app_credentials(store, plugin)
        .await?
        .ok_or(ConsentError::NoApp)?;
    let _one_at_a_time = BEGIN.lock().await;
    let mut pending = purge_expired(store, plugin, clock).await?;
    let mut mine: Vec<&Pending> = pending.iter().filter(|p| p.user == user.as_str()).collect();
    mine.sort_by(|a, b| a.created.total_cmp(&b.created));
    let dropped: Vec<String> = mine
        .iter()
        .take((mine.len() + 1).saturating_sub(MAX_PENDING_PER_USER))
        .map(|p| p.key.clone())
        .collect();
    for key in &dropped {
        live::remove(store, &paths::pending(plugin, key)).await?;
    }
    pending.retain(|p| !dropped.contains(&p.key));
    if pending.len() >= MAX_PENDING_PER_PLUGIN {
        store.save().await?;
        return Err(ConsentError::TooMany);
    }
    let hosted = connection_provider(store, provider, plugin, user).await?;
    let consent = oauth::consent(&hosted, &app.client_id, redirect_uri);
    let record = json!({
        "user": user.as_str(),
        "verifier": consent.verifier.as_ref().map(|v| v.expose().to_owned()),
        "redirect_uri": redirect_uri,
        "created": clock.epoch(),
    });
    let key = oauth::state_key(consent.state.expose());
    store.put(&paths::pending(plugin, &key), &record).await?;
    store.save().await?;
    Ok(consent.url)
}

/// A consent in progress.
struct Pending {
    key: String,
    user: String,
    created: f64,
}

/// When a pending record was created (0 when unreadable: expired).
fn created(record: &Value) -> f64 {
    match record.get("created").or_else(|| record.get("used")) {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .unwrap_or(0.0)
}

/// Removes the plugin's expired consents and used states; returns the ones in progress.
async fn purge_expired(
    store: &dyn Store,
    plugin: &str,
    clock: Clock,
) -> Result<Vec<Pending>, ConsentError> {
    let all = store
        .get(&format!("{}/pending", paths::app(plugin)))
        .await?;
    let Some(Value::Object(records)) = all else {
        return Ok(Vec::new());
    };
    let now = clock.epoch();
    let mut live_ones = Vec::new();
    for (key, record) in records {
        let user = live::leaf_text(record.get("user"));
        let gone = matches!(&record, Value::Object(m) if m.is_empty())
            || matches!(&record, Value::String(s) if s.is_empty());
        match user {
            Some(user)
                if record.get("used").is_none() && now - created(&record) <= STATE_TTL_SECONDS =>
            {
                live_ones.push(Pending {
                    created: created(&record),
                    key,
                    user,
                });
            }
            // Emptied records are what a store without delete rights leaves behind.
            _ if gone => {}
            _ if now - created(&record) > STATE_TTL_SECONDS => {
                if let Err(e) = live::remove(store, &paths::pending(plugin, &key)).await {
                    tracing::warn!(plugin, error = %e, "Cannot remove an expired consent");
                }
            }
            _ => {}
        }
    }
    Ok(live_ones)
}

/// The user a consent in progress is for, without using it up.
pub async fn pending_user(store: &dyn Store, plugin: &str, state: &str) -> Option<String> {
    let record = store
        .get(&paths::pending(plugin, &oauth::state_key(state)))
        .await
        .ok()
        .flatten()?;
    live::leaf_text(record.get("user"))
}

/// Ends a consent the provider reported as refused: the state is used up. Returns the
/// user it was for.
pub async fn abandon(store: &dyn Store, plugin: &str, state: &str) -> Option<String> {
    let user = pending_user(store, plugin, state).await?;
    let path = paths::pending(plugin, &oauth::state_key(state));
    if let Err(e) = live::remove(store, &path).await {
        tracing::warn!(plugin, error = %e, "Cannot remove a refused consent");
    }
    let _ = store.save().await;
    Some(user)
}

/// Completes a consent: checks the state, exchanges the code, stores the token.
/// Returns the user it was for.
pub async fn complete(
    store: &dyn Store,
    transport: &dyn crate::http::Transport,
    provider: &Provider,
    plugin: &str,
    code: &str,
    state: &str,
    clock: Clock,
) -> Result<UserName, ConsentError> {
    let key = oauth::state_key(state);
    let path = paths::pending(plugin, &key);
    let record = store.get(&path).await?.ok_or(ConsentError::UnknownState)?;
    if record.get("used").is_some() {
        return Err(ConsentError::UnknownState);
    }
    // Single use: the record goes before the code is exchanged. Igor's service identity
    // may not delete below `plugindata/<plugin>` (reference/igor.md section 3), so where
    // the delete is refused the record is overwritten with a tombstone instead.
    if store.delete(&path).await.is_err() {
        store.put(&path, &json!({"used": clock.epoch()})).await?;
    }
    if clock.epoch() - created(&record) > STATE_TTL_SECONDS {
        return Err(ConsentError::Expired);
    }
    let user = live::leaf_text(record.get("user"))
        .and_then(|u| UserName::parse(&u).ok())
        .ok_or(ConsentError::UnknownState)?;
    let redirect_uri = live::leaf_text(record.get("redirect_uri")).unwrap_or_default();
    let verifier = live::leaf_text(record.get("verifier")).map(Secret::new);
    let app = live::app_credentials(store, plugin)
        .await?
        .ok_or(ConsentError::NoApp)?;
    let hosted = connection_provider(store, provider, plugin, &user).await?;
    let provider = hosted.as_ref();
    let token = oauth::exchange_code(
        transport,
        provider,
        &app,
        code,
        &redirect_uri,
        verifier.as_ref(),
        clock.epoch(),
    )
    .await?;
    live::persist_token(store, plugin, &user, &token).await?;
    if let Some(step) = &provider.auth.config.after_consent {
        after_consent(transport, provider, step, &app, &user, &token, clock).await?;
    }
    live::update_status(
        store,
        plugin,
        &user,
        json!({"consent_needed": false, "granted_at": clock.now().to_rfc3339(), "token_expires_at": token.expires_at}),
    )
    .await;
    Ok(user)
}

/// The provider as the user's connection sees it: on the host of the user's `host`
/// setting, if any.
async fn connection_provider<'a>(
    store: &dyn Store,
    provider: &'a Provider,
    plugin: &str,
    user: &UserName,
) -> Result<std::borrow::Cow<'a, Provider>, ConsentError> {
    let settings = live::user_settings(store, plugin, user).await?;
    Ok(provider.at_host(settings.host.as_deref()))
}

/// The provider's call after a consent (Polar's user registration): its method with the
/// new token; a 2xx answer or one of the accepted statuses is done.
async fn after_consent(
    transport: &dyn crate::http::Transport,
    provider: &Provider,
    step: &crate::provider::raw::AfterConsentConfig,
    app: &oauth::AppCredentials,
    user: &UserName,
    token: &oauth::Token,
    clock: Clock,
) -> Result<(), ConsentError> {
    let failed = |message: String| ConsentError::AfterConsent {
        provider: provider.name.clone(),
        method: step.method.clone(),
        message: crate::secret::redact(&message),
    };
    let method = provider
        .methods
        .get(&step.method)
        .ok_or_else(|| failed("no such method".to_owned()))?;
    let call = crate::engine::request::CallContext {
        system: provider.api.default_system.clone(),
        client_id: Some(app.client_id.clone()),
        provider_user_id: token.provider_user_id.clone(),
        now: clock
            .now()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        zone: crate::transform::local::machine_zone().name().to_owned(),
        user: user.to_string(),
    };
    let request =
        crate::engine::request::build(provider, method, &serde_json::Map::new(), &call, None)
            .map_err(failed)?;
    let answer = live::send_with_token(transport, provider, &request, token)
        .await
        .map_err(failed)?;
    if (200..300).contains(&answer.status) || step.accept.contains(&answer.status) {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&answer.body);
    let shown: String = text.chars().take(200).collect();
    Err(failed(format!("HTTP {}: {}", answer.status, shown.trim())))
}

/// Escapes text for HTML.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    //! The call after a consent (Polar's registration), with the shipped Polar file, the
    //! embedded store in a temporary directory and an in-memory transport.

    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::http::memory::{MemoryTransport, json as answer};
    use crate::provider::UrlOverrides;
    use crate::store::SqliteStore;

    const PLUGIN: &str = "polar";

    /// Registers the app, begins a consent for jack and completes it with `steps` as the
    /// provider's answers (the token exchange first).
    async fn complete_with(
        steps: Vec<crate::http::memory::Step>,
    ) -> (
        tempfile::TempDir,
        SqliteStore,
        MemoryTransport,
        Result<UserName, ConsentError>,
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("providers/polar.yaml");
        let provider = crate::provider::load(&path, &UrlOverrides::default()).expect("polar");
        let store = SqliteStore::open(&dir.path().join("store.db")).expect("store");
        store
            .put(
                &format!("{}/client_id", paths::app(PLUGIN)),
                &json!("polar-client"),
            )
            .await
            .unwrap();
        store
            .put(
                &format!("{}/client_secret", paths::app(PLUGIN)),
                &json!("polar-secret-77"),
            )
            .await
            .unwrap();
        let user = UserName::parse("jack").unwrap();
        let clock = Clock::default();
        let url = begin(
            &store,
            &provider,
            PLUGIN,
            &user,
            "http://127.0.0.1:9/cb",
            clock,
        )
        .await
        .expect("a consent URL");
        let state = url
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .expect("a state");
        let transport = MemoryTransport::new(steps);
        let result = complete(
            &store, &transport, &provider, PLUGIN, "code-1", &state, clock,
        )
        .await;
        (dir, store, transport, result)
    }

    fn token_answer() -> crate::http::memory::Step {
        answer(
            200,
            json!({"access_token": "polar-access-5f2a", "token_type": "bearer", "expires_in": 315360000, "x_user_id": 41908375}),
        )
    }

    #[tokio::test]
    async fn the_user_is_registered_after_the_consent_and_409_is_done() {
        for status in [200, 409] {
            let (_dir, store, transport, result) = complete_with(vec![
                token_answer(),
                answer(
                    status,
                    json!({"polar-user-id": 41908375, "member-id": "jack"}),
                ),
            ])
            .await;
            assert_eq!(result.expect("registered").as_str(), "jack", "{status}");
            let sent = transport.sent();
            assert_eq!(sent.len(), 2);
            assert_eq!(sent[1].method, ::http::Method::POST);
            assert_eq!(sent[1].uri, "https://www.polaraccesslink.com/v3/users");
            assert_eq!(sent[1].body, r#"{"member-id":"jack"}"#);
            assert_eq!(
                sent[1].header("authorization"),
                Some("Bearer polar-access-5f2a")
            );
            assert_eq!(sent[1].header("accept"), Some("application/json"));
            let token = live::stored_token(&store, PLUGIN, &UserName::parse("jack").unwrap())
                .await
                .unwrap();
            assert!(token.is_some());
        }
    }

    #[tokio::test]
    async fn a_refused_registration_is_an_error_naming_the_call_and_the_token_stays() {
        let (_dir, store, transport, result) = complete_with(vec![
            token_answer(),
            answer(
                403,
                json!({"error": "consents missing", "token": "polar-access-5f2a"}),
            ),
        ])
        .await;
        let error = result.expect_err("the registration failed").to_string();
        assert!(
            error.starts_with("polar register_user after the consent: HTTP 403"),
            "{error}"
        );
        assert!(!error.contains("polar-access-5f2a"), "{error}");
        assert!(transport.used_up());
        let token = live::stored_token(&store, PLUGIN, &UserName::parse("jack").unwrap())
            .await
            .unwrap();
        assert!(
            token.is_some(),
            "the consent's token is kept for the next try"
        );
    }

    #[tokio::test]
    async fn a_connection_on_another_host_consents_and_exchanges_there() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("providers/dexcom.yaml");
        let provider = crate::provider::load(&path, &UrlOverrides::default()).expect("dexcom");
        let store = SqliteStore::open(&dir.path().join("store.db")).expect("store");
        for (key, value) in [
            ("client_id", "dex-client"),
            ("client_secret", "dex-secret-31"),
        ] {
            store
                .put(&format!("{}/{key}", paths::app("dexcom")), &json!(value))
                .await
                .unwrap();
        }
        let user = UserName::parse("jack").unwrap();
        store
            .put(
                &format!("{}/host", paths::user("dexcom", &user)),
                &json!("eu"),
            )
            .await
            .unwrap();
        let clock = Clock::default();
        let url = begin(
            &store,
            &provider,
            "dexcom",
            &user,
            "http://127.0.0.1:9/cb",
            clock,
        )
        .await
        .expect("a consent URL");
        assert_eq!(url.origin().ascii_serialization(), "https://api.dexcom.eu");
        assert_eq!(url.path(), "/v2/oauth2/login");
        let state = url
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .unwrap();
        let transport = MemoryTransport::new(vec![answer(
            200,
            json!({"access_token": "dex-access-1", "refresh_token": "dex-refresh-1", "expires_in": 7200, "token_type": "Bearer"}),
        )]);
        complete(
            &store, &transport, &provider, "dexcom", "code-9", &state, clock,
        )
        .await
        .expect("granted");
        assert_eq!(
            transport.sent()[0].uri,
            "https://api.dexcom.eu/v2/oauth2/token"
        );
    }
}
