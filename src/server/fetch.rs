//! One fetch for one user, as every entry point runs it (`GET /plugin/P?user=U` and the
//! schedule): one run at a time per user, the one fetch plan, and the error answer.

use std::sync::Arc;

use axum::http::StatusCode;
use indexmap::IndexMap;

use super::error::AppError;
use super::state::AppState;
use crate::engine::EngineError;
use crate::igor::paths;
use crate::live::{self, FetchError};
use crate::provider::Provider;
use crate::provider::raw::ErrorKind;
use crate::secret::redact;
use crate::transform::Layout;
use crate::user::UserName;

/// Fetches for one user, one run at a time per user.
pub async fn fetch_user(
    state: &AppState,
    plugin: &str,
    provider: Arc<Provider>,
    user: &UserName,
    methods: Option<String>,
    explicit: IndexMap<String, String>,
    layout: Layout,
) -> Result<crate::sensors::Sensors, FetchError> {
    let _running = state.user_run(plugin, user).await;
    let store = state.rt.store.as_ref();
    let settings = live::user_settings(store, plugin, user).await?;
    // The leaf only: `plugindata/<plugin>` also holds every user's status.
    let client_id = store
        .get(&format!("{}/client_id", paths::app(plugin)))
        .await?;
    let asked = crate::settings::Asked {
        methods,
        explicit,
        system: None,
        layout,
    };
    let plan = crate::settings::plan(
        &provider,
        user,
        asked,
        Some(&settings),
        live::leaf_text(client_id.as_ref()),
        state.rt.clock.now(),
    )?;
    let result = live::fetch(provider, plugin, user, &state.rt, &plan, false).await;
    // A fetch that succeeded read the user's token, so the user has stored data.
    let known =
        result.is_ok() || matches!(store.get(&paths::user(plugin, user)).await, Ok(Some(_)));
    state
        .metrics
        .count(result.is_ok(), plugin, known.then_some(user));
    result
}

/// The answer to a failed fetch: 403 without app or token, 400 for refused arguments,
/// 409 when consent is needed, 429 when our own budget is spent, else 502 (500 for the
/// store).
pub fn fetch_error(state: &AppState, plugin: &str, user: &UserName, e: FetchError) -> AppError {
    let message = e.to_string();
    let status = match &e {
        FetchError::NoApp { .. } | FetchError::NoToken { .. } => StatusCode::FORBIDDEN,
        FetchError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        FetchError::Engine(EngineError::Params { .. }) | FetchError::Setting(_) => {
            StatusCode::BAD_REQUEST
        }
        FetchError::Engine(engine) => match engine.kind() {
            Some(ErrorKind::ConsentNeeded) => StatusCode::CONFLICT,
            Some(ErrorKind::RateLimited) if engine.status().is_none() => {
                StatusCode::TOO_MANY_REQUESTS
            }
            _ => StatusCode::BAD_GATEWAY,
        },
    };
    let message = if status == StatusCode::CONFLICT {
        format!(
            "consent needed: {message}; grant access again at {}/plugin/{plugin}/auth1?user={user}",
            state.public_url
        )
    } else {
        message
    };
    tracing::warn!(plugin, user = %user, status = status.as_u16(), error = %redact(&message), "Fetch failed");
    AppError::new(status, message)
}
