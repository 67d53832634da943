//! The one HTTP transport of the process: API calls, token calls, the Igor store and
//! igor-install all send through a [`Transport`], built once (rustls, no redirects,
//! a connect timeout, a user agent) and passed down. Each request carries its own
//! [`Limits`]: the time it may take as a whole and the size of its answer.
//!
//! Requests and answers are plain [`::http`] values with [`Bytes`] bodies, so a test
//! can answer them from memory without a socket.

use std::sync::{Arc, Mutex};
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
    /// Server certificates are checked against the system's roots, read at the first
    /// TLS connection ([`PlatformRoots`]).
    pub fn new() -> HttpTransport {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config())
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("healthpull/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|e| panic!("the HTTP client cannot be built: {e}"));
        HttpTransport { client }
    }

    /// The process's transport, built on first use: the wiring in [`crate::app`] hands
    /// it to the store, the runtime and the commands, so the process has one client.
    ///
    /// A pooled connection is driven by a task of the runtime that opened it and dies
    /// with that runtime, so the client is one per runtime: a process with one runtime
    /// (the binary) has one client, and a process that runs many runtimes one after the
    /// other (a test harness) never reuses a connection whose runtime has ended. The
    /// last few runtimes' clients are kept.
    pub fn shared() -> Arc<dyn Transport> {
        const KEPT: usize = 8;
        static SHARED: Mutex<Vec<(Option<tokio::runtime::Id>, Arc<HttpTransport>)>> =
            Mutex::new(Vec::new());
        let runtime = tokio::runtime::Handle::try_current().ok().map(|h| h.id());
        let mut clients = SHARED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(at) = clients.iter().position(|(id, _)| *id == runtime) {
            let entry = clients.remove(at);
            let transport = entry.1.clone();
            clients.push(entry);
            return transport;
        }
        if clients.len() == KEPT {
            clients.remove(0);
        }
        let transport = Arc::new(HttpTransport::new());
        clients.push((runtime, transport.clone()));
        transport
    }
}

/// TLS as reqwest sets it up for HTTP/1.1 (the protocol versions rustls deems safe,
/// ALPN `http/1.1`, no client certificate), with the system's roots read on first use.
fn tls_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("the TLS configuration cannot be built: {e}"))
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PlatformRoots::new(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// The platform's certificate check (`rustls-platform-verifier`: the system's root
/// certificates), made at the first server certificate to check. Reading and parsing
/// the system's roots takes a few milliseconds of every process that builds a client;
/// most commands talk plain HTTP to Igor on the home network or send nothing at all,
/// and a command that connects over TLS pays the same cost, once, at its first
/// handshake. Handshake signatures need no roots and are checked at once.
#[derive(Debug)]
pub struct PlatformRoots {
    provider: Arc<rustls::crypto::CryptoProvider>,
    verifier: std::sync::OnceLock<Result<rustls_platform_verifier::Verifier, rustls::Error>>,
}

impl PlatformRoots {
    /// A check with `provider`'s signature algorithms; the roots are read later.
    pub fn new(provider: Arc<rustls::crypto::CryptoProvider>) -> PlatformRoots {
        PlatformRoots {
            provider,
            verifier: std::sync::OnceLock::new(),
        }
    }

    fn verifier(&self) -> Result<&rustls_platform_verifier::Verifier, rustls::Error> {
        self.verifier
            .get_or_init(|| rustls_platform_verifier::Verifier::new(self.provider.clone()))
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl rustls::client::danger::ServerCertVerifier for PlatformRoots {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
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
        // A pooled connection the server closed while idle fails before any answer
        // ("connection closed before message completed"); an idempotent request is sent
        // once more on a new connection. Others (token calls) are never repeated here:
        // their callers decide, since a refresh token may be single-use.
        let idempotent = matches!(
            *request.method(),
            reqwest::Method::GET
                | reqwest::Method::HEAD
                | reqwest::Method::PUT
                | reqwest::Method::DELETE
        );
        let again = if idempotent {
            request.try_clone()
        } else {
            None
        };
        let mut response = match self.client.execute(request).await {
            Ok(response) => response,
            Err(e) if stale_connection(&e) && again.is_some() => {
                let again = again.expect("checked above");
                self.client.execute(again).await.map_err(|e| classify(&e))?
            }
            Err(e) => return Err(classify(&e)),
        };
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
        // Reserved from the announced length (already checked against the limit), so a
        // large answer is received into one allocation rather than grown by doubling.
        let announced = usize::try_from(response.content_length().unwrap_or(0)).unwrap_or(0);
        crate::pages::answer_ahead(announced);
        let mut body = Vec::with_capacity(announced);
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

/// Whether `e` is a reused connection that the server had closed before the request
/// could be answered.
fn stale_connection(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            return h.is_incomplete_message();
        }
        source = err.source();
    }
    false
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

/// An in-memory [`Transport`] for unit tests: answers from a script, records requests.
#[cfg(test)]
pub(crate) mod memory {
    use std::collections::VecDeque;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Mutex;

    use super::*;

    /// Work done before an answer is given (another process writing the store, say).
    pub(crate) type Before = Pin<Box<dyn Future<Output = ()> + Send>>;

    /// One scripted outcome.
    pub(crate) enum Step {
        /// An answer with a status, headers and a body.
        Answer(u16, Vec<(&'static str, String)>, String),
        /// The request reached the provider but the answer was lost.
        Lost,
        /// Runs the future, then gives the step.
        After(Before, Box<Step>),
    }

    /// A request as it was sent.
    #[derive(Debug, Clone)]
    pub(crate) struct Sent {
        pub(crate) method: ::http::Method,
        pub(crate) uri: String,
        pub(crate) headers: ::http::HeaderMap,
        pub(crate) body: String,
        pub(crate) limits: Limits,
    }

    impl Sent {
        /// A field of a form body.
        pub(crate) fn form(&self, name: &str) -> Option<String> {
            url::form_urlencoded::parse(self.body.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        }
        /// A header's text.
        pub(crate) fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).and_then(|v| v.to_str().ok())
        }
    }

    /// The transport.
    #[derive(Default)]
    pub(crate) struct MemoryTransport {
        script: Mutex<VecDeque<Step>>,
        sent: Mutex<Vec<Sent>>,
    }

    impl MemoryTransport {
        /// A transport giving `steps` in order (and failing once they are used up).
        pub(crate) fn new(steps: impl IntoIterator<Item = Step>) -> MemoryTransport {
            MemoryTransport {
                script: Mutex::new(steps.into_iter().collect()),
                sent: Mutex::new(Vec::new()),
            }
        }
        /// The requests sent so far.
        pub(crate) fn sent(&self) -> Vec<Sent> {
            self.sent.lock().unwrap().clone()
        }
        /// Whether every step was used.
        pub(crate) fn used_up(&self) -> bool {
            self.script.lock().unwrap().is_empty()
        }
    }

    /// A JSON answer.
    pub(crate) fn json(status: u16, body: serde_json::Value) -> Step {
        Step::Answer(
            status,
            vec![("content-type", "application/json".to_owned())],
            body.to_string(),
        )
    }

    #[async_trait]
    impl Transport for MemoryTransport {
        async fn send(&self, request: Request, limits: Limits) -> Result<Response, TransportError> {
            let (parts, body) = request.into_parts();
            self.sent.lock().unwrap().push(Sent {
                method: parts.method,
                uri: parts.uri.to_string(),
                headers: parts.headers,
                body: String::from_utf8_lossy(&body).into_owned(),
                limits,
            });
            let mut step = self
                .script
                .lock()
                .unwrap()
                .pop_front()
                .ok_or_else(|| TransportError::Connect(": the script is used up".to_owned()))?;
            loop {
                match step {
                    Step::After(before, next) => {
                        before.await;
                        step = *next;
                    }
                    Step::Lost => {
                        return Err(TransportError::Body(": connection reset".to_owned()));
                    }
                    Step::Answer(status, headers, body) => {
                        let mut answer = ::http::Response::builder().status(status);
                        for (k, v) in headers {
                            answer = answer.header(k, v);
                        }
                        return Ok(answer.body(Bytes::from(body)).expect("a valid answer"));
                    }
                }
            }
        }
    }
}
