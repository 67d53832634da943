//! `healthpull igor-install`: puts into a running Igor what the old plugin's database
//! fragment did — `sensors/<plugin>`, `plugindata/<plugin>` (both marked as the
//! plugin's own) and one action per user — with the action calling this server, so
//! that Igor's own scheduler drives the fetches and records their status.
//!
//! Existing elements are never replaced (they may carry Igor's hidden data); an action
//! whose URL is already present is left alone, so running it twice changes nothing.

use std::time::Duration;

use ::http::Method;
use ::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use base64::Engine as _;
use bytes::Bytes;

use healthpull::http::{Limits, Transport, TransportError};
use healthpull::live::consent::html_escape as esc;
use healthpull::secret::{Secret, redact};

/// Why the installation stopped.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// No answer from Igor.
    #[error("igor {method} /data/{path}: {source}")]
    Transport {
        /// The request's method.
        method: Method,
        /// The path under `/data`.
        path: String,
        /// What went wrong.
        source: TransportError,
    },
    /// Igor refused a request.
    #[error("{doing}: igor {method} /data/{path}: HTTP {status}: {message}")]
    Refused {
        /// What was being done.
        doing: String,
        /// The request's method.
        method: Method,
        /// The path under `/data`.
        path: String,
        /// The HTTP status.
        status: u16,
        /// Igor's words (redacted).
        message: String,
    },
}

/// What to install.
pub struct Install {
    /// Igor's base URL.
    pub igor_url: String,
    /// Igor identity.
    pub user: String,
    /// Its password.
    pub password: Secret,
    /// Plugin name.
    pub plugin: String,
    /// Users to fetch for.
    pub users: Vec<healthpull::user::UserName>,
    /// This server's URL as Igor reaches it.
    pub server_url: String,
    /// Seconds between fetches.
    pub interval: u64,
}

const OWN_NS: &str = "http://jackjansen.nl/igor/owner";

/// One request to Igor's `/data` tree: its status and its text.
async fn call(
    transport: &dyn Transport,
    i: &Install,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<(u16, String), InstallError> {
    let base = i.igor_url.trim_end_matches('/');
    let credential = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        i.user,
        i.password.expose()
    ));
    let mut request = healthpull::http::request(method.clone(), &format!("{base}/data/{path}"))
        .header(AUTHORIZATION, format!("Basic {credential}"));
    request = match &body {
        Some(_) => request
            .header(CONTENT_TYPE, "application/xml")
            .header(ACCEPT, "text/plain"),
        None => request.header(ACCEPT, "application/xml"),
    };
    let transport_error = |source| InstallError::Transport {
        method: method.clone(),
        path: path.to_owned(),
        source,
    };
    let request = request
        .body(Bytes::from(body.unwrap_or_default()))
        .map_err(|e| transport_error(TransportError::Failed(format!(": {e}"))))?;
    let limits = Limits {
        timeout: Duration::from_secs(30),
        max_bytes: 16 * 1024 * 1024,
    };
    let response = transport
        .send(request, limits)
        .await
        .map_err(transport_error)?;
    Ok((
        response.status().as_u16(),
        String::from_utf8_lossy(response.body()).into_owned(),
    ))
}

/// Performs the installation, sending through `transport`.
pub async fn install(i: &Install, transport: &dyn Transport) -> Result<(), InstallError> {
    let p = &i.plugin;
    let refused =
        |doing: &str, method: Method, path: &str, status: u16, text: &str| InstallError::Refused {
            doing: doing.to_owned(),
            method,
            path: path.to_owned(),
            status,
            message: redact(text),
        };
    let exists = |path: String| async move {
        match call(transport, i, Method::GET, &path, None).await? {
            (200, _) => Ok(true),
            (404, _) => Ok(false),
            (status, text) => Err(refused("cannot read", Method::GET, &path, status, &text)),
        }
    };
    let send = |method: Method, path: String, body: String, doing: String| async move {
        match call(transport, i, method.clone(), &path, Some(body)).await? {
            (200, _) => Ok(()),
            (status, text) => Err(refused(&doing, method, &path, status, &text)),
        }
    };
    for top in ["sensors", "plugindata"] {
        let path = format!("{top}/{p}");
        if !exists(path.clone()).await? {
            send(
                Method::PUT,
                path,
                format!("<{p} xmlns:own=\"{OWN_NS}\" own:plugin=\"{p}\"/>"),
                format!("cannot create {top}/{p}"),
            )
            .await?;
        }
    }
    for user in &i.users {
        let url = format!(
            "{}/plugin/{p}?user={}",
            i.server_url.trim_end_matches('/'),
            url::form_urlencoded::byte_serialize(user.as_bytes()).collect::<String>()
        );
        let selector: String =
            url::form_urlencoded::byte_serialize(format!("actions/action[url='{url}']").as_bytes())
                .collect::<String>()
                .replace("%2F", "/")
                .replace('+', "%20");
        if exists(selector).await? {
            continue;
        }
        let action = format!(
            "<action xmlns:own=\"{OWN_NS}\" own:plugin=\"{p}\"><comment>healthpull: periodically fetch {pe} data for user {ue}</comment><interval>{}</interval><url>{}</url><representing>sensors/{pe}</representing></action>",
            i.interval,
            esc(&url),
            pe = esc(p),
            ue = esc(user),
        );
        send(
            Method::POST,
            "actions/action".into(),
            action,
            format!("cannot add the action for {user}"),
        )
        .await?;
        println!("installed action: every {} s, {url}", i.interval);
    }
    Ok(())
}
