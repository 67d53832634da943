//! The Igor store: the tree lives in a running Igor server (igor-iot 0.99.1), reached
//! through its REST API under `/data`, so Igor stays the single source of truth for
//! settings, tokens and sensor data.
//!
//! Igor's REST API has sharp edges this module works around (see
//! `reference/igor.md`, sections 1 and 7): it authenticates with HTTP Basic as a
//! dedicated identity; it reads with exactly `Accept: application/xml` and keeps leaf
//! text verbatim (JSON replies coerce `"007"` to `7`); it writes `application/xml`
//! bodies built with Igor's own conversion rules (byte for byte what the old plugin
//! stored, and no one-key unwrapping), with an exact `Content-Type` and never a query
//! string (Igor ignores the body of a write that has one). Igor 0.99.1 does not create
//! missing parents, so a write that fails with `Parent not found` creates the missing
//! ancestors one level at a time with empty `text/plain` PUTs. An existing element is
//! never PUT as a side effect: plugin containers carry hidden `own:`/`au:` data that a
//! PUT would destroy. (Igor has no create-if-absent operation: an ancestor created by
//! someone else between Igor's `Parent not found` and our PUT would be replaced.)
//! Only HTTP 200 counts as success.

use std::sync::Arc;
use std::time::Duration;

use crate::secret::Secret;
use ::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use ::http::{Method, StatusCode};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value;
use url::Url;

use super::{Store, StoreError, StorePath};
use crate::http::{Limits, Transport};

/// The largest reply accepted (a whole exported tree).
const MAX_REPLY_BYTES: u64 = 512 * 1024 * 1024;

/// The longest error text kept from an Igor reply.
const MAX_MESSAGE_CHARS: usize = 400;

/// How to reach an Igor server.
#[derive(Debug, Clone)]
pub struct IgorStoreConfig {
    /// The server's base URL, e.g. `http://127.0.0.1:9333` (without `/data`).
    pub url: String,
    /// The identity healthpull authenticates as (HTTP Basic).
    pub username: String,
    /// Its password.
    pub password: Secret,
    /// The limit for each whole request.
    pub timeout: Duration,
}

/// The [`Store`] backed by a running Igor server.
#[derive(Clone)]
pub struct IgorStore {
    transport: Arc<dyn Transport>,
    base: String,
    /// `Basic base64(username:password)`.
    authorization: Secret,
    password: Secret,
    timeout: Duration,
}

impl std::fmt::Debug for IgorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IgorStore")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// What a PUT came to, when it did not fail outright.
enum PutOutcome {
    Stored,
    /// Igor said the parent of the element does not exist.
    ParentMissing,
}

/// A reply read in full.
struct Reply {
    status: StatusCode,
    content_type: String,
    body: String,
}

impl IgorStore {
    /// Checks `config`; requests go through `transport` (the process's one client).
    /// Does not contact the server; see [`IgorStore::check_connection`].
    pub fn new(config: IgorStoreConfig, transport: Arc<dyn Transport>) -> Result<Self, StoreError> {
        let url = Url::parse(&config.url).map_err(|error| {
            StoreError::Config(format!("invalid igor url {:?}: {error}", config.url))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(StoreError::Config(format!(
                "igor url must be http or https, not {}",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(StoreError::Config(
                "igor url must not contain credentials; give the username and password separately"
                    .to_owned(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(StoreError::Config(format!(
                "igor url must not have a query or fragment: {}",
                config.url
            )));
        }
        if config.username.is_empty() || config.username.contains(':') {
            return Err(StoreError::Config(format!(
                "igor username {:?} must be non-empty and without ':'",
                config.username
            )));
        }
        if config.password.expose().contains(':') {
            // Igor 0.99.1 answers 500 to any Basic password containing a colon.
            return Err(StoreError::Config(
                "the igor password contains ':', which igor 0.99.1 cannot handle".to_owned(),
            ));
        }
        if config.timeout.is_zero() {
            return Err(StoreError::Config(
                "igor timeout must be positive".to_owned(),
            ));
        }

        let authorization = Secret::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                config.username,
                config.password.expose()
            ))
        ));
        Ok(Self {
            transport,
            base: url.as_str().trim_end_matches('/').to_owned(),
            authorization,
            password: config.password,
            timeout: config.timeout,
        })
    }

    /// Asks Igor for `/data/services/igor/url`, which every identity may read, to check
    /// the URL and credentials before real work (a wrong base URL would otherwise look
    /// like an empty tree: Igor answers 404 for absent elements).
    pub async fn check_connection(&self) -> Result<(), StoreError> {
        let target = "/data/services/igor/url";
        let reply = self
            .send(Method::GET, target, "application/xml", None)
            .await?;
        expect_xml_ok("GET", target, &reply, self.password.expose())
    }

    /// Sends one request and reads the whole reply.
    async fn send(
        &self,
        method: Method,
        target: &str,
        accept: &'static str,
        body: Option<(&'static str, String)>,
    ) -> Result<Reply, StoreError> {
        let method_name = method_name(&method);
        let transport_error = |message: String| StoreError::IgorTransport {
            method: method_name,
            target: target.to_owned(),
            message,
        };
        let mut authorization = HeaderValue::from_str(self.authorization.expose())
            .map_err(|_| transport_error("the credentials are not valid header text".to_owned()))?;
        authorization.set_sensitive(true);
        let mut request = crate::http::request(method, &format!("{}{target}", self.base))
            .header(AUTHORIZATION, authorization)
            .header(ACCEPT, HeaderValue::from_static(accept));
        let body = match body {
            Some((content_type, body)) => {
                request = request.header(CONTENT_TYPE, HeaderValue::from_static(content_type));
                Bytes::from(body)
            }
            None => Bytes::new(),
        };
        let request = request
            .body(body)
            .map_err(|e| transport_error(format!("the request cannot be built: {e}")))?;
        let limits = Limits {
            timeout: self.timeout,
            max_bytes: MAX_REPLY_BYTES,
        };
        let response = self
            .transport
            .send(request, limits)
            .await
            .map_err(|e| transport_error(e.to_string()))?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = String::from_utf8_lossy(response.body()).into_owned();
        tracing::debug!(
            method = method_name,
            target,
            status = status.as_u16(),
            "Igor replied."
        );
        Ok(Reply {
            status,
            content_type,
            body,
        })
    }

    /// `GET /data/<path>` as XML; `None` on 404.
    async fn get_xml(&self, path: &StorePath) -> Result<Option<String>, StoreError> {
        let target = data_target(path);
        let reply = self
            .send(Method::GET, &target, "application/xml", None)
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        expect_xml_ok("GET", &target, &reply, self.password.expose())?;
        Ok(Some(reply.body))
    }

    /// One PUT of `body` at `path`.
    async fn put_once(
        &self,
        path: &str,
        content_type: &'static str,
        body: String,
    ) -> Result<PutOutcome, StoreError> {
        let target = format!("/data/{path}");
        let reply = self
            .send(
                Method::PUT,
                &target,
                "application/xml",
                Some((content_type, body)),
            )
            .await?;
        if reply.status == StatusCode::BAD_REQUEST && is_parent_missing(path, &reply.body) {
            return Ok(PutOutcome::ParentMissing);
        }
        expect_xml_ok("PUT", &target, &reply, self.password.expose())?;
        Ok(PutOutcome::Stored)
    }

    /// Creates the missing ancestors of `path`, whose parent Igor reported missing:
    /// walks up with empty PUTs until one succeeds (its parent existed), then creates
    /// the deeper ones top-down. Only elements Igor reported missing are PUT.
    async fn create_missing_ancestors(&self, path: &StorePath) -> Result<(), StoreError> {
        let mut missing = Vec::new();
        let mut depth = path.steps.len() - 1;
        loop {
            if depth == 0 {
                return Err(StoreError::IgorReply {
                    method: "PUT",
                    target: data_target(path),
                    message: "igor reports a top-level element's parent missing".to_owned(),
                });
            }
            let ancestor = path.prefix(depth);
            match self
                .put_once(&ancestor, "text/plain", String::new())
                .await?
            {
                PutOutcome::Stored => break,
                PutOutcome::ParentMissing => {
                    missing.push(ancestor);
                    depth -= 1;
                }
            }
        }
        for ancestor in missing.into_iter().rev() {
            if let PutOutcome::ParentMissing = self
                .put_once(&ancestor, "text/plain", String::new())
                .await?
            {
                return Err(StoreError::IgorReply {
                    method: "PUT",
                    target: format!("/data/{ancestor}"),
                    message: "igor reports the parent missing right after creating it".to_owned(),
                });
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for IgorStore {
    async fn get(&self, path: &str) -> Result<Option<Value>, StoreError> {
        let path = StorePath::parse(path)?;
        let Some(xml) = self.get_xml(&path).await? else {
            return Ok(None);
        };
        let target = data_target(&path);
        let (tag, value) = crate::igor::xml::igor_xml_to_value_verbatim(&xml).map_err(|error| {
            StoreError::IgorReply {
                method: "GET",
                target: target.clone(),
                message: format!("cannot read the XML: {error}"),
            }
        })?;
        if tag != path.last() {
            return Err(StoreError::IgorReply {
                method: "GET",
                target,
                message: format!("expected element <{}>, got <{tag}>", path.last()),
            });
        }
        Ok(Some(value))
    }

    async fn put(&self, path: &str, value: &Value) -> Result<(), StoreError> {
        let path = StorePath::parse(path)?;
        let body = crate::igor::xml::try_to_igor_xml(path.last(), value).map_err(|source| {
            StoreError::Unrepresentable {
                path: path.text.clone(),
                source,
            }
        })?;
        if let PutOutcome::Stored = self
            .put_once(&path.text, "application/xml", body.clone())
            .await?
        {
            return Ok(());
        }
        self.create_missing_ancestors(&path)
            .await
            .map_err(|source| StoreError::IgorParents {
                path: path.text.clone(),
                source: Box::new(source),
            })?;
        match self.put_once(&path.text, "application/xml", body).await? {
            PutOutcome::Stored => Ok(()),
            PutOutcome::ParentMissing => Err(StoreError::IgorReply {
                method: "PUT",
                target: data_target(&path),
                message: "igor still reports the parent missing after creating it".to_owned(),
            }),
        }
    }

    async fn delete(&self, path: &str) -> Result<(), StoreError> {
        let path = StorePath::parse(path)?;
        let target = data_target(&path);
        let reply = self
            .send(Method::DELETE, &target, "application/xml", None)
            .await?;
        expect_ok("DELETE", &target, &reply, self.password.expose())?;
        if !reply.body.trim().is_empty() {
            return Err(StoreError::IgorReply {
                method: "DELETE",
                target,
                message: igor_message(&reply.body, self.password.expose()),
            });
        }
        Ok(())
    }

    async fn export_xml(&self, path: &str) -> Result<Option<String>, StoreError> {
        let path = StorePath::parse(path)?;
        Ok(self.get_xml(&path).await?.map(|mut xml| {
            if xml.ends_with('\n') {
                xml.pop();
            }
            xml
        }))
    }

    async fn save(&self) -> Result<(), StoreError> {
        let target = "/internal/save";
        let reply = self.send(Method::GET, target, "text/plain", None).await?;
        expect_ok("GET", target, &reply, self.password.expose())?;
        if looks_like_html(&reply.body) {
            return Err(StoreError::IgorReply {
                method: "GET",
                target: target.to_owned(),
                message: igor_message(&reply.body, self.password.expose()),
            });
        }
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "igor"
    }
}

fn data_target(path: &StorePath) -> String {
    format!("/data/{}", path.text)
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::POST => "POST",
        _ => "request",
    }
}

/// Whether a 400 body is Igor's `Parent not found` for the parent of `path`.
fn is_parent_missing(path: &str, body: &str) -> bool {
    let Some((parent, _)) = path.rsplit_once('/') else {
        return false;
    };
    body.trim()
        .strip_prefix("400 Database Parameter Error: Parent not found: ")
        .is_some_and(|missing| missing == format!("/data/{parent}"))
}

/// Fails unless the status is exactly 200.
fn expect_ok(
    method: &'static str,
    target: &str,
    reply: &Reply,
    password: &str,
) -> Result<(), StoreError> {
    if reply.status == StatusCode::OK {
        return Ok(());
    }
    let mut message = igor_message(&reply.body, password);
    if reply.status == StatusCode::INTERNAL_SERVER_ERROR && looks_like_html(&reply.body) {
        message.push_str(" (igor 0.99.1 also answers this to a wrong password)");
    }
    Err(StoreError::IgorStatus {
        method,
        target: target.to_owned(),
        status: reply.status.as_u16(),
        message,
    })
}

/// Fails unless the status is 200 and the body is XML.
fn expect_xml_ok(
    method: &'static str,
    target: &str,
    reply: &Reply,
    password: &str,
) -> Result<(), StoreError> {
    expect_ok(method, target, reply, password)?;
    let media_type = reply
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    if media_type != "application/xml" || looks_like_html(&reply.body) {
        return Err(StoreError::IgorReply {
            method,
            target: target.to_owned(),
            message: format!(
                "expected application/xml, got {}: {}",
                if media_type.is_empty() {
                    "no content type"
                } else {
                    media_type
                },
                igor_message(&reply.body, password)
            ),
        });
    }
    Ok(())
}

fn looks_like_html(body: &str) -> bool {
    let start = body.trim_start();
    let prefix: String = start
        .chars()
        .take(15)
        .collect::<String>()
        .to_ascii_lowercase();
    prefix.starts_with("<!doctype html") || prefix.starts_with("<html")
}

/// Igor's error text: plain text as is, HTML pages reduced to their text; shortened,
/// and with the password removed should Igor ever echo it.
fn igor_message(body: &str, password: &str) -> String {
    let text = if looks_like_html(body) {
        html_text(body)
    } else {
        body.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let mut text = if password.is_empty() {
        text
    } else {
        text.replace(password, "[redacted]")
    };
    if text.is_empty() {
        return "no error text".to_owned();
    }
    if text.chars().count() > MAX_MESSAGE_CHARS {
        text = text.chars().take(MAX_MESSAGE_CHARS).collect();
        text.push('…');
    }
    text
}

/// The text of an HTML page: tags removed, whitespace collapsed, the `<title>` dropped
/// when the first heading repeats it.
fn html_text(html: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for character in html.chars() {
        match character {
            '<' => {
                in_tag = true;
                text.push(' ');
            }
            '>' => in_tag = false,
            _ if !in_tag => text.push(character),
            _ => {}
        }
    }
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    let words: Vec<&str> = text.split_whitespace().collect();
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, username: &str, password: &str) -> IgorStoreConfig {
        IgorStoreConfig {
            url: url.to_owned(),
            username: username.to_owned(),
            password: Secret::from(password.to_owned()),
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn configuration_is_checked_without_echoing_the_password() {
        let transport = crate::http::HttpTransport::shared();
        let good = IgorStore::new(
            config("http://127.0.0.1:9333/", "svc", "pw"),
            transport.clone(),
        )
        .expect("valid");
        assert_eq!(good.base, "http://127.0.0.1:9333");
        for (url, user, password) in [
            ("ftp://h", "svc", "pw"),
            ("http://u:hunter2@h", "svc", "pw"),
            ("http://h/?x=1", "svc", "pw"),
            ("http://h", "", "pw"),
            ("http://h", "a:b", "pw"),
            ("http://h", "svc", "hun:ter2"),
            ("not a url", "svc", "pw"),
        ] {
            let error = IgorStore::new(config(url, user, password), transport.clone())
                .expect_err(url)
                .to_string();
            assert!(error.starts_with("igor store configuration"), "{error}");
            assert!(
                !error.contains("hunter2") && !error.contains("ter2"),
                "{error}"
            );
        }
    }

    #[test]
    fn parent_missing_is_recognised_only_for_the_right_parent() {
        let body = "400 Database Parameter Error: Parent not found: /data/sensors/p/jack";
        assert!(is_parent_missing("sensors/p/jack/y", body));
        assert!(!is_parent_missing("sensors/p/other/y", body));
        assert!(!is_parent_missing("sensors", body));
        assert!(!is_parent_missing("sensors/p/jack/y", "400 Bad request"));
    }

    #[test]
    fn html_pages_become_short_text_and_passwords_are_redacted() {
        let page = "<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n<p>The requested URL was not found.</p>\n";
        assert_eq!(
            igor_message(page, "pw"),
            "404 Not Found Not Found The requested URL was not found."
        );
        assert_eq!(
            igor_message("401 bad password s3cret", "s3cret"),
            "401 bad password [redacted]"
        );
        assert_eq!(igor_message("", "pw"), "no error text");
        assert!(igor_message(&"x".repeat(1000), "pw").chars().count() <= MAX_MESSAGE_CHARS + 1);
    }
}
