//! [`AppError`]: every error answer of the server, in one shape.
//!
//! Scripts (Igor's actions, curl) get Igor's plain text `"<status> <text>\n"`; a browser
//! on a consent step gets a page with the error and a way back to the setup page. The
//! text is redacted either way.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use crate::secret::redact;
use crate::store::StoreError;

use super::html;

/// An error answer: its status, its text (without the status), and how to show it.
#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    message: String,
    shown: Shown,
}

/// How an [`AppError`] is shown beside the plain text.
#[derive(Debug)]
enum Shown {
    /// `"<status> <text>\n"`.
    Text,
    /// The same, with a Basic challenge (`401`).
    Challenge,
    /// The consent failure page, for a browser: back to the plugin's setup page (the
    /// user's section when the user is known).
    ConsentPage {
        plugin: String,
        user: Option<String>,
    },
}

impl AppError {
    /// An answer with `status` and `message` (the status is prefixed when answered).
    pub fn new(status: StatusCode, message: impl Into<String>) -> AppError {
        AppError {
            status,
            message: message.into(),
            shown: Shown::Text,
        }
    }

    /// `400`.
    pub fn bad_request(message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::BAD_REQUEST, message)
    }

    /// `403`.
    pub fn forbidden(message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::FORBIDDEN, message)
    }

    /// `401` with a Basic challenge.
    pub fn unauthorized() -> AppError {
        AppError {
            shown: Shown::Challenge,
            ..AppError::new(StatusCode::UNAUTHORIZED, "credentials required")
        }
    }

    /// A refused consent step: shown to a browser as the consent failure page.
    pub fn consent(self, headers: &HeaderMap, plugin: &str, user: Option<&str>) -> AppError {
        if !browser(headers) {
            return self;
        }
        AppError {
            shown: Shown::ConsentPage {
                plugin: plugin.to_owned(),
                user: user.map(str::to_owned),
            },
            ..self
        }
    }

    /// The answer's status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The answer's text, without the status.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> AppError {
        AppError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self.shown {
            Shown::ConsentPage { plugin, user } => (
                self.status,
                Html(html::error_page(
                    self.status,
                    &redact(&self.message),
                    &plugin,
                    user.as_deref(),
                )),
            )
                .into_response(),
            Shown::Text => text(
                self.status,
                format!("{} {}", self.status.as_u16(), self.message),
            ),
            Shown::Challenge => {
                let mut response = text(
                    self.status,
                    format!("{} {}", self.status.as_u16(), self.message),
                );
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Basic realm=\"healthpull\""),
                );
                response
            }
        }
    }
}

/// Whether the client is a browser (asks for HTML).
pub fn browser(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// A plain-text answer in Igor's style (`"ok\n"`; errors are [`AppError`]s).
pub fn text(status: StatusCode, body: String) -> Response {
    let mut body = redact(&body);
    if !body.ends_with('\n') {
        body.push('\n');
    }
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> (StatusCode, String, Option<String>) {
        let status = r.status();
        let kind = r
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap(), kind)
    }

    #[tokio::test]
    async fn scripts_get_the_status_and_text_on_one_line() {
        let (status, text, kind) =
            body(AppError::bad_request("layout must be mapped").into_response()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(text, "400 layout must be mapped\n");
        assert_eq!(kind.as_deref(), Some("text/plain; charset=utf-8"));
    }

    #[tokio::test]
    async fn a_challenge_names_the_realm() {
        let r = AppError::unauthorized().into_response();
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Basic realm=\"healthpull\""
        );
        assert_eq!(body(r).await.1, "401 credentials required\n");
    }

    #[tokio::test]
    async fn browsers_get_the_consent_page_and_scripts_the_text() {
        let mut html = HeaderMap::new();
        html.insert(header::ACCEPT, "text/html".parse().unwrap());
        let page = AppError::forbidden("cross-site request refused")
            .consent(&html, "fitbit", Some("ann"))
            .into_response();
        let (status, text, kind) = body(page).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(kind.unwrap().starts_with("text/html"));
        assert!(text.contains("403 cross-site request refused"), "{text}");
        assert!(text.contains("setup.html?user=ann"), "{text}");
        let plain = AppError::forbidden("cross-site request refused")
            .consent(&HeaderMap::new(), "fitbit", Some("ann"))
            .into_response();
        assert_eq!(body(plain).await.1, "403 cross-site request refused\n");
    }
}
