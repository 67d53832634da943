//! What a request asks: its query or form pairs, in order, and the raw query string.

use axum::http::{HeaderMap, header};

/// Query or form parameters, in order.
pub type Params = Vec<(String, String)>;

pub fn pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub fn get_param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

pub fn wants_json(headers: &HeaderMap, pairs: &[(String, String)]) -> bool {
    if let Some(f) = get_param(pairs, "format") {
        return f == "json";
    }
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            let a = a.to_ascii_lowercase();
            a.contains("application/json") && !a.contains("application/xml")
        })
}

/// The raw query string.
pub struct RawQuery(pub Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RawQuery {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(RawQuery(parts.uri.query().map(str::to_owned)))
    }
}
