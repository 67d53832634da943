//! `healthpull igor-install`: puts into a running Igor what the old plugin's database
//! fragment did — `sensors/<plugin>`, `plugindata/<plugin>` (both marked as the
//! plugin's own) and one action per user — with the action calling this server, so
//! that Igor's own scheduler drives the fetches and records their status.
//!
//! Existing elements are never replaced (they may carry Igor's hidden data); an action
//! whose URL is already present is left alone, so running it twice changes nothing.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;

use healthpull::consent::html_escape as esc;
use healthpull::http;
use healthpull::secret::{Secret, redact};

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

/// Performs the installation.
pub async fn install(i: &Install) -> Result<()> {
    let client = http::client(Duration::from_secs(30));
    let base = i.igor_url.trim_end_matches('/');
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            i.user,
            i.password.expose()
        ))
    );
    let p = &i.plugin;
    let exists = |path: String| {
        let client = client.clone();
        let auth = auth.clone();
        async move {
            let r = client
                .get(format!("{base}/data/{path}"))
                .header("Authorization", &auth)
                .header("Accept", "application/xml")
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("igor GET /data/{path}: {}", http::describe(&e)))?;
            match r.status().as_u16() {
                200 => Ok(true),
                404 => Ok(false),
                s => bail!(
                    "igor GET /data/{path}: HTTP {s}: {}",
                    redact(&r.text().await.unwrap_or_default())
                ),
            }
        }
    };
    let send = |method: reqwest::Method, path: String, body: String| {
        let client = client.clone();
        let auth = auth.clone();
        async move {
            let r = client
                .request(method.clone(), format!("{base}/data/{path}"))
                .header("Authorization", &auth)
                .header("Content-Type", "application/xml")
                .header("Accept", "text/plain")
                .body(body)
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!("igor {method} /data/{path}: {}", http::describe(&e))
                })?;
            if r.status().as_u16() != 200 {
                bail!(
                    "igor {method} /data/{path}: HTTP {}: {}",
                    r.status().as_u16(),
                    redact(&r.text().await.unwrap_or_default())
                );
            }
            Ok(())
        }
    };
    for top in ["sensors", "plugindata"] {
        let path = format!("{top}/{p}");
        if !exists(path.clone()).await? {
            send(
                reqwest::Method::PUT,
                path,
                format!("<{p} xmlns:own=\"{OWN_NS}\" own:plugin=\"{p}\"/>"),
            )
            .await
            .with_context(|| format!("cannot create {top}/{p}"))?;
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
        send(reqwest::Method::POST, "actions/action".into(), action)
            .await
            .with_context(|| format!("cannot add the action for {user}"))?;
        println!("installed action: every {} s, {url}", i.interval);
    }
    Ok(())
}
