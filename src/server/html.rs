//! The chrome every HTML answer shares: the one style sheet, the headers that keep
//! answers out of frames, and the pages of the consent round trip.
//!
//! Pages have no script and one inline style sheet, [`STYLE`], which the
//! Content-Security-Policy allows by its hash; forms post only to this server.

use std::sync::LazyLock;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::live::consent::html_escape as esc;

/// The style sheet of every page.
pub const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#222}\
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}\
label{display:block;margin:.4rem 0}input,select{font:inherit;padding:.2rem .4rem}\
code{background:#f3f3f3;padding:.1rem .3rem}table{border-collapse:collapse}td,th{padding:.2rem .6rem;text-align:left;border-bottom:1px solid #eee}\
.ok{color:#176d1a}.bad{color:#a01010}.note{background:#fff6d6;padding:.5rem 1rem}button{font:inherit}";

/// The Content-Security-Policy of every answer: nothing but [`STYLE`], same-origin
/// images and forms, never inside a frame.
static CONTENT_SECURITY_POLICY: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE));
    HeaderValue::from_str(&format!(
        "default-src 'none'; style-src 'sha256-{hash}'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ))
    .expect("the policy is a valid header value")
});

/// Middleware: on every answer, a Content-Security-Policy, no framing, no type sniffing,
/// and no `Referer` (the callback URL carries the authorization code).
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY.clone(),
    );
    let fixed: [(HeaderName, &str); 3] = [
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Percent-encodes one query value.
pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The page shown when a consent step fails: the error and a link back to the setup
/// page (the user's section when the user is known).
pub fn error_page(status: StatusCode, message: &str, plugin: &str, user: Option<&str>) -> String {
    let back = match user {
        Some(u) => format!(
            "/plugin/{}/page/setup.html?user={}",
            urlencode(plugin),
            urlencode(u)
        ),
        None => format!("/plugin/{}/page/setup.html", urlencode(plugin)),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Access not granted</title><style>{STYLE}</style></head><body>\
<h1 id=\"failed\">Access not granted</h1><p class=\"bad\" id=\"error\">{code} {m}</p>\
<p><a id=\"back\" href=\"{b}\">Back to the setup page</a></p></body></html>",
        code = status.as_u16(),
        m = esc(message),
        b = esc(&back)
    )
}

/// The page shown after a successful consent.
pub fn granted_page(plugin: &str, user: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Access granted</title><style>{STYLE}</style></head><body>\
<h1 id=\"granted\">Access granted</h1><p>healthpull can now fetch <code>{p}</code> data for <b>{u}</b>.</p>\
<p><a id=\"back\" href=\"/plugin/{p}/page/setup.html?user={ue}\">Back to the setup page</a></p></body></html>",
        p = esc(plugin),
        u = esc(user),
        ue = urlencode(user)
    )
}
