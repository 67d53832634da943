//! The one way healthpull builds HTTP clients: rustls, no redirects, timeouts, size limits.

use std::time::Duration;

use crate::secret::redact;

/// A client with the given overall timeout; redirects are never followed.
///
/// Clients are kept per thread and timeout: building one reads the platform's root
/// certificates (most of a fetch's CPU time when every fetch built its own), and a kept
/// client reuses its connections. Per thread, because a client's pooled connections
/// belong to the runtime that opened them, and a runtime's threads are its own.
pub fn client(timeout: Duration) -> reqwest::Client {
    thread_local! {
        static CLIENTS: std::cell::RefCell<Vec<(Duration, reqwest::Client)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    CLIENTS.with_borrow_mut(|clients| {
        if let Some((_, client)) = clients.iter().find(|(t, _)| *t == timeout) {
            return client.clone();
        }
        let client = build_client(timeout);
        clients.push((timeout, client.clone()));
        client
    })
}

fn build_client(timeout: Duration) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .timeout(timeout)
        .user_agent(concat!("healthpull/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|e| panic!("the HTTP client cannot be built: {e}"))
}

/// Reads a response body, refusing more than `limit` bytes.
pub async fn read_limited(mut response: reqwest::Response, limit: u64) -> Result<Vec<u8>, String> {
    if let Some(len) = response.content_length() {
        if len > limit {
            return Err(format!(
                "answer of {len} bytes exceeds the limit of {limit} bytes"
            ));
        }
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() as u64 + chunk.len() as u64 > limit {
                    return Err(format!("answer exceeds the limit of {limit} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(describe(&e)),
        }
    }
}

/// A transport error in words, with any secret (in a URL, say) redacted.
pub fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    let text = if detail.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {detail}")
    };
    redact(&text)
}
