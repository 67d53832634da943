//! Who may call the server, for which host names, and protection against cross-site
//! requests.
//!
//! Every request must name, in `Host`, one of the names the server answers for: the
//! host of `public_url`, the loopback names with the listening port, or a name listed
//! in `allowed_hosts`; any other is refused before a handler runs, which defeats DNS
//! rebinding. Credentials (an admin bearer token or HTTP Basic) are required on every
//! entry point but `auth2` (the provider's redirect) whenever any are configured, and
//! the server refuses to listen beyond loopback without them. Requests that fetch, write
//! or start a consent are refused when a browser sends them from another site:
//! `Sec-Fetch-Site` or `Origin` (compared with the configured origins, never with the
//! request's own `Host`) say where a request comes from, and form posts carry a token
//! only our own pages know.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use super::error::AppError;
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

/// The host names the server answers for and the browser origins that count as its own.
#[derive(Debug, Clone, Default)]
pub struct Hosts {
    /// Accepted `Host` values, lowercase `host` or `host:port`.
    authorities: HashSet<String>,
    /// Accepted `Origin` values, serialized (`scheme://host[:port]`, default port omitted).
    origins: HashSet<String>,
}

/// The loopback names, as they appear in `Host`.
const LOOPBACK_NAMES: [&str; 3] = ["127.0.0.1", "localhost", "[::1]"];

impl Hosts {
    /// The host of `public_url`, the loopback names with `port` (the listening port), and
    /// every `allowed` entry (`name` — with the listening port or none — or `name:port`).
    pub fn new(public_url: &str, port: u16, allowed: &[String]) -> Result<Hosts, String> {
        let mut hosts = Hosts::default();
        let public = url::Url::parse(public_url)
            .map_err(|e| format!("public_url {public_url:?} is not a URL: {e}"))?;
        let Some(host) = public.host_str() else {
            return Err(format!("public_url {public_url:?} has no host"));
        };
        let host = host.to_ascii_lowercase();
        match public.port() {
            Some(p) => hosts.add_authority(&format!("{host}:{p}")),
            None => {
                hosts.add_authority(&host);
                if let Some(p) = public.port_or_known_default() {
                    hosts.add_authority(&format!("{host}:{p}"));
                }
            }
        }
        hosts.origins.insert(public.origin().ascii_serialization());
        for name in LOOPBACK_NAMES {
            hosts.add_authority(&format!("{name}:{port}"));
            hosts.add_origin(&format!("http://{name}:{port}"));
        }
        for entry in allowed {
            let parsed: Authority = entry
                .parse()
                .map_err(|_| format!("allowed_hosts: {entry:?} is not a host name or host:port"))?;
            if entry.contains('@') || entry.contains('/') {
                return Err(format!(
                    "allowed_hosts: {entry:?} is not a host name or host:port"
                ));
            }
            let name = parsed.host().to_ascii_lowercase();
            let forms = match parsed.port_u16() {
                Some(p) => vec![format!("{name}:{p}")],
                None => vec![name.clone(), format!("{name}:{port}")],
            };
            for form in forms {
                hosts.add_authority(&form);
                hosts.add_origin(&format!("http://{form}"));
                hosts.add_origin(&format!("https://{form}"));
            }
        }
        Ok(hosts)
    }

    fn add_authority(&mut self, authority: &str) {
        self.authorities.insert(authority.to_ascii_lowercase());
    }

    fn add_origin(&mut self, origin: &str) {
        if let Ok(u) = url::Url::parse(origin) {
            self.origins.insert(u.origin().ascii_serialization());
        }
    }

    /// Whether `host` (a `Host` header or a request target's authority) is ours.
    pub fn allows_host(&self, host: &str) -> bool {
        self.authorities.contains(&host.to_ascii_lowercase())
    }

    /// Whether `origin` (an `Origin` header) is one of our own origins.
    pub fn allows_origin(&self, origin: &str) -> bool {
        if origin == "null" {
            return false;
        }
        url::Url::parse(origin)
            .is_ok_and(|u| self.origins.contains(&u.origin().ascii_serialization()))
    }
}

/// Middleware, outermost but for the request log: refuses a request whose `Host` (or
/// absolute request target) is not one of ours.
pub async fn host_guard(State(hosts): State<Arc<Hosts>>, request: Request, next: Next) -> Response {
    let named = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
    match named {
        Some(host) if hosts.allows_host(&host) => next.run(request).await,
        Some(host) => {
            tracing::warn!(host = %host, "Refused a request for an unknown host");
            AppError::new(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this server does not answer for host {host:?}: reach it at its public_url, or list the name in allowed_hosts"
                ),
            )
            .into_response()
        }
        None => AppError::bad_request("the Host header is required").into_response(),
    }
}

/// Whether a browser sent the request from another site or another origin.
///
/// `Sec-Fetch-Site` decides when present (`same-origin` and `none`, a typed address or
/// bookmark, pass); browsers without it are judged by `Origin`, which must be one of the
/// configured origins. `Origin` cannot decide for browsers that send both: under our
/// `Referrer-Policy: no-referrer` they send `Origin: null` even for our own forms.
/// Requests with neither header (Igor's actions, curl) are not cross-site.
pub fn cross_site(hosts: &Hosts, headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.to_str(), Ok("same-origin" | "none"));
    }
    match headers.get(header::ORIGIN) {
        Some(origin) => !origin.to_str().is_ok_and(|o| hosts.allows_origin(o)),
        None => false,
    }
}

/// Refuses a cross-site browser request (see [`cross_site`]).
pub fn refuse_cross_site(hosts: &Hosts, headers: &HeaderMap) -> Result<(), AppError> {
    if cross_site(hosts, headers) {
        return Err(AppError::forbidden("cross-site request refused"));
    }
    Ok(())
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: credentials on every entry point but `auth2`, when configured.
pub async fn guard(State(access): State<Arc<Access>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let exempt = path.starts_with("/plugin/") && path.ends_with("/auth2");
    if access.configured() && !exempt && !access.allows(request.headers()) {
        return AppError::unauthorized().into_response();
    }
    next.run(request).await
}

/// Refuses cross-site browser requests that change state, and form posts without our token.
pub fn check_csrf(
    hosts: &Hosts,
    csrf: &Csrf,
    plugin: &str,
    method: &Method,
    headers: &HeaderMap,
    pairs: &[(String, String)],
) -> Result<(), AppError> {
    refuse_cross_site(hosts, headers)?;
    if *method == Method::POST {
        let given = pairs
            .iter()
            .find(|(k, _)| k == "_csrf")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        let expected = csrf.token(plugin);
        if !constant_eq(expected.as_bytes(), given.as_bytes()) {
            return Err(AppError::forbidden(
                "form token missing or wrong: reload the setup page",
            ));
        }
    }
    Ok(())
}

/// The tokens our own forms carry: a keyed hash of the plugin name. The key of a plugin
/// is the one kept in the store once the server has read it ([`Csrf::share`]), so every
/// instance serving the store gives and accepts the same tokens; until then (and for a
/// router built without [`crate::server::run`]) it is random per process.
pub struct Csrf {
    key: [u8; 32],
    shared: std::sync::RwLock<std::collections::HashMap<String, [u8; 32]>>,
}

/// The length of a form key.
pub const CSRF_KEY_LEN: usize = 32;

impl Csrf {
    /// A new random key.
    pub fn new() -> Csrf {
        Csrf {
            key: Csrf::random_key(),
            shared: Default::default(),
        }
    }

    /// A new random key, for [`Csrf::share`].
    pub fn random_key() -> [u8; CSRF_KEY_LEN] {
        let mut key = [0u8; CSRF_KEY_LEN];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
        key
    }

    /// The key's stored text (URL-safe base64).
    pub fn key_text(key: &[u8; CSRF_KEY_LEN]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
    }

    /// A key read back from its stored text; `None` for anything else.
    pub fn parse_key(text: &str) -> Option<[u8; CSRF_KEY_LEN]> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim())
            .ok()?
            .try_into()
            .ok()
    }

    /// From now on the tokens of `plugin` are made with `key` (the stored one).
    pub fn share(&self, plugin: &str, key: [u8; CSRF_KEY_LEN]) {
        let mut shared = self.shared.write().unwrap_or_else(|e| e.into_inner());
        shared.insert(plugin.to_owned(), key);
    }

    /// The token the setup page puts in the forms of `plugin`.
    pub fn token(&self, plugin: &str) -> String {
        use sha2::{Digest, Sha256};
        let key = {
            let shared = self.shared.read().unwrap_or_else(|e| e.into_inner());
            shared.get(plugin).copied().unwrap_or(self.key)
        };
        let mut h = Sha256::new();
        h.update(key);
        h.update(b"csrf\0");
        h.update(plugin.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize())
    }
}

impl Default for Csrf {
    fn default() -> Self {
        Csrf::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Hosts {
        Hosts::new(
            "https://health.example.com/",
            8099,
            &["igor.local".to_owned(), "192.168.1.20:9000".to_owned()],
        )
        .expect("valid hosts")
    }

    #[test]
    fn form_tokens_follow_the_shared_key() {
        let (one, two) = (Csrf::new(), Csrf::new());
        assert_ne!(one.token("p"), two.token("p"), "random per process");
        let key = Csrf::random_key();
        let stored = Csrf::key_text(&key);
        let read = Csrf::parse_key(&stored).expect("a key");
        one.share("p", key);
        two.share("p", read);
        assert_eq!(one.token("p"), two.token("p"), "one key, one token");
        assert_ne!(one.token("p"), one.token("q"), "per plugin");
        assert!(Csrf::parse_key("short").is_none());
        assert!(Csrf::parse_key("").is_none());
    }

    #[test]
    fn host_names() {
        let hosts = hosts();
        let check = |host: &str, expected: bool| {
            assert_eq!(hosts.allows_host(host), expected, "{host}");
        };
        check("health.example.com", true);
        check("health.example.com:443", true);
        check("HEALTH.example.com", true);
        check("health.example.com:8099", false);
        check("127.0.0.1:8099", true);
        check("localhost:8099", true);
        check("[::1]:8099", true);
        check("127.0.0.1", false);
        check("localhost:8100", false);
        check("igor.local", true);
        check("igor.local:8099", true);
        check("igor.local:80", false);
        check("192.168.1.20:9000", true);
        check("192.168.1.20", false);
        check("192.168.1.20:8099", false);
        check("evil.example:8099", false);
        check("", false);
    }

    #[test]
    fn origins() {
        let hosts = hosts();
        let check = |origin: &str, expected: bool| {
            assert_eq!(hosts.allows_origin(origin), expected, "{origin}");
        };
        check("https://health.example.com", true);
        check("https://health.example.com:443", true);
        check("http://health.example.com", false);
        check("http://127.0.0.1:8099", true);
        check("http://localhost:8099", true);
        check("http://[::1]:8099", true);
        check("http://localhost:8100", false);
        check("http://igor.local", true);
        check("https://igor.local:8099", true);
        check("http://192.168.1.20:9000", true);
        check("http://evil.example:8099", false);
        check("null", false);
        check("not a url", false);
    }

    #[test]
    fn bad_entries_are_refused() {
        for entry in ["user@igor.local", "igor.local/path", "", "igor local"] {
            assert!(
                Hosts::new("http://127.0.0.1:8099", 8099, &[entry.to_owned()]).is_err(),
                "{entry:?}"
            );
        }
    }

    #[test]
    fn cross_site_requests() {
        let hosts = hosts();
        let check = |pairs: &[(&'static str, &'static str)], expected: bool| {
            let mut headers = HeaderMap::new();
            for (k, v) in pairs {
                headers.insert(*k, v.parse().expect("a header value"));
            }
            assert_eq!(cross_site(&hosts, &headers), expected, "{pairs:?}");
        };
        check(&[], false);
        check(&[("sec-fetch-site", "same-origin")], false);
        check(&[("sec-fetch-site", "none")], false);
        check(
            &[("sec-fetch-site", "same-origin"), ("origin", "null")],
            false,
        );
        check(&[("sec-fetch-site", "same-site")], true);
        check(&[("sec-fetch-site", "cross-site")], true);
        check(&[("sec-fetch-site", "something-new")], true);
        check(&[("origin", "http://localhost:8099")], false);
        check(&[("origin", "http://evil.example")], true);
        check(&[("origin", "null")], true);
    }
}
