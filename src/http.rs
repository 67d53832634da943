//! The one HTTP transport of the process: API calls, token calls, the Igor store and
//! igor-install all send through a [`Transport`], built once (rustls, no redirects,
//! a connect timeout, a user agent) and passed down. Each request carries its own
//! [`Limits`]: the time it may take as a whole and the size of its answer.
//!
//! Requests and answers are plain [`::http`] values with [`Bytes`] bodies, so a test
//! can answer them from memory without a socket.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::secret::redact;

/// A request as the transport sends it.
pub type Request = ::http::Request<Bytes>;
/// An answer read in full.
pub type Response = ::http::Response<Bytes>;

/// What one request may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The whole request, from connecting to the last byte of the answer.
    pub timeout: Duration,
    /// The largest answer body accepted.
    pub max_bytes: u64,
}

/// Why a request got no complete answer. Never holds a secret (the text is redacted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The request took longer than its [`Limits::timeout`].
    #[error("timed out{0}")]
    Timeout(String),
    /// No connection could be made.
    #[error("cannot connect{0}")]
    Connect(String),
    /// The answer broke off while it was read.
    #[error("the answer broke off{0}")]
    Body(String),
    /// The answer is larger than [`Limits::max_bytes`].
    #[error("answer exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The request could not be built or sent.
    #[error("request failed{0}")]
    Failed(String),
}

/// Sends requests. Implemented by [`HttpTransport`] and by the tests' in-memory transports.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Sends `request` and reads its whole answer within `limits`. Any HTTP status is an
    /// answer; only a missing or incomplete answer is an error.
    async fn send(&self, request: Request, limits: Limits) -> Result<Response, TransportError>;
}

/// The [`Transport`] over one `reqwest` client (one connection pool).
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
}

impl HttpTransport {
    /// Builds the client: redirects are never followed, connecting takes at most 10 s.
    pub fn new() -> HttpTransport {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("healthpull/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|e| panic!("the HTTP client cannot be built: {e}"));
        HttpTransport { client }
    }

    /// The process's transport, built on first use: the wiring in [`crate::app`] hands
    /// it to the store, the runtime and the commands, so the process has one client.
    pub fn shared() -> Arc<dyn Transport> {
        static SHARED: OnceLock<Arc<HttpTransport>> = OnceLock::new();
        SHARED
            .get_or_init(|| Arc::new(HttpTransport::new()))
            .clone()
    }
}

impl Default for HttpTransport {
    fn default() -> Self {
        HttpTransport::new()
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn send(&self, request: Request, limits: Limits) -> Result<Response, TransportError> {
        let mut request =
            reqwest::Request::try_from(request).map_err(|e| TransportError::Failed(detail(&e)))?;
        *request.timeout_mut() = Some(limits.timeout);
        let mut response = self
            .client
            .execute(request)
            .await
            .map_err(|e| classify(&e))?;
        if let Some(len) = response.content_length() {
            if len > limits.max_bytes {
                return Err(TransportError::TooLarge {
                    limit: limits.max_bytes,
                });
            }
        }
        let mut answer = ::http::Response::builder()
            .status(response.status())
            .version(response.version());
        if let Some(headers) = answer.headers_mut() {
            *headers = std::mem::take(response.headers_mut());
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() as u64 + chunk.len() as u64 > limits.max_bytes {
                        return Err(TransportError::TooLarge {
                            limit: limits.max_bytes,
                        });
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(classify(&e)),
            }
        }
        answer
            .body(Bytes::from(body))
            .map_err(|e| TransportError::Failed(format!(": {e}")))
    }
}

/// The innermost cause of an error, as `: cause`, redacted; empty when there is none.
fn detail(e: &(dyn std::error::Error + 'static)) -> String {
    let mut source = e.source();
    let mut text = String::new();
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    if text.is_empty() {
        String::new()
    } else {
        format!(": {}", redact(&text))
    }
}

fn classify(e: &reqwest::Error) -> TransportError {
    let detail = detail(e);
    if e.is_timeout() {
        TransportError::Timeout(detail)
    } else if e.is_connect() {
        TransportError::Connect(detail)
    } else if e.is_body() || e.is_decode() {
        TransportError::Body(detail)
    } else {
        TransportError::Failed(detail)
    }
}

/// A request builder preset with method and URL (`http::request::Builder` under its
/// own name, because this module shadows the crate's).
pub fn request(method: ::http::Method, url: &str) -> ::http::request::Builder {
    ::http::Request::builder().method(method).uri(url)
}
