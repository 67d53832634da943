//! One fetch for one user, as every entry point runs it (`GET /plugin/P?user=U` and the
//! schedule): one run at a time per user, the one fetch plan, and the error answer.

use std::sync::Arc;

use axum::http::StatusCode;
use indexmap::IndexMap;

use super::error::AppError;
use super::state::AppState;
use crate::engine::EngineError;
use crate::live::sync::{self, Reach, RunOptions};
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
    // One read: the app's leaves (`plugindata/<plugin>` also holds every user's status),
    // the user's settings and token, and the user's status.
    let inputs = live::fetch_inputs(state.rt.store.as_ref(), plugin, user).await?;
    let asked = crate::settings::Asked {
        methods,
        explicit,
        system: None,
        layout,
    };
    let plan = inputs.plan(&provider, user, asked, state.rt.clock.now())?;
    // A user with stored data before the fetch, or whose fetch succeeded (it read the
    // user's token), is known.
    let known = inputs.user_known;
    // Asked days are fetched as asked; otherwise the user's history is synced.
    let options = RunOptions {
        reach: if sync::asks_days(&provider, &plan) {
            Reach::Asked
        } else {
            Reach::Recent
        },
        keep: state.keep.get(plugin).copied().unwrap_or_default(),
        wait_for_budget: false,
        progress: &sync::Quiet,
    };
    let result = sync::run(provider, plugin, user, &state.rt, &plan, inputs, options)
        .await
        .map(|report| report.tree);
    let known = known || result.is_ok();
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
