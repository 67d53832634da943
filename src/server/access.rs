//! Who may call the server, and protection of its forms against cross-site requests.
//!
//! Credentials (an admin bearer token or HTTP Basic) are required on every entry point
//! but `auth2` (the provider's redirect) whenever any are configured, and the server
//! refuses to listen beyond loopback without them. State-changing requests from a
//! browser must come from this site: `Sec-Fetch-Site` or `Origin` say where a request
//! comes from, and form posts carry a token only our own pages know.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use super::{AppState, text};
use crate::secret::Secret;

/// Configured credentials.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// `Authorization: Bearer <token>`.
    pub admin_token: Option<Secret>,
    /// HTTP Basic user and password.
    pub basic: Option<(String, Secret)>,
}

impl Access {
    /// Whether any credentials are configured.
    pub fn configured(&self) -> bool {
        self.admin_token.is_some() || self.basic.is_some()
    }

    fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        if let (Some(token), Some(given)) = (&self.admin_token, value.strip_prefix("Bearer ")) {
            if constant_eq(token.expose().as_bytes(), given.trim().as_bytes()) {
                return true;
            }
        }
        if let (Some((user, password)), Some(b64)) = (&self.basic, value.strip_prefix("Basic ")) {
            if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
                let expected = format!("{user}:{}", password.expose());
                return constant_eq(expected.as_bytes(), &decoded);
            }
        }
        false
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: credentials on every entry point but `auth2`, when configured.
pub async fn guard(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let exempt = path.starts_with("/plugin/") && path.ends_with("/auth2");
    if state.access.configured() && !exempt && !state.access.allows(request.headers()) {
        return (
            StatusCode::UNAUTHORIZED,
            [
                (header::WWW_AUTHENTICATE, "Basic realm=\"healthpull\""),
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            ],
            "401 credentials required\n",
        )
            .into_response();
    }
    next.run(request).await
}

/// Refuses cross-site browser requests that change state, and form posts without our token.
pub fn check_csrf(
    state: &AppState,
    plugin: &str,
    method: &Method,
    headers: &HeaderMap,
    pairs: &[(String, String)],
) -> Result<(), Response> {
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if matches!(site, "cross-site" | "same-site") {
        return Err(text(
            StatusCode::FORBIDDEN,
            "403 cross-site request refused".into(),
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let origin_host = origin
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(origin);
        if origin == "null" || origin_host != host {
            return Err(text(
                StatusCode::FORBIDDEN,
                "403 cross-site request refused".into(),
            ));
        }
    }
    if *method == Method::POST {
        let given = pairs
            .iter()
            .find(|(k, _)| k == "_csrf")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        let expected = state.csrf_token(plugin);
        if !constant_eq(expected.as_bytes(), given.as_bytes()) {
            return Err(text(
                StatusCode::FORBIDDEN,
                "403 form token missing or wrong: reload the setup page".into(),
            ));
        }
    }
    Ok(())
}

/// The token the setup page puts in its forms.
pub fn form_token(state: &AppState, plugin: &str) -> String {
    state.csrf_token(plugin)
}
