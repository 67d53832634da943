//! `healthpull auth`: consent through a loopback redirect (RFC 8252).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use healthpull::config::Config;
use healthpull::live::Clock;
use healthpull::live::consent::{begin, callback_url, complete, html_escape};
use healthpull::user::UserName;

/// `healthpull auth`: consent through a loopback redirect (RFC 8252).
pub async fn terminal_auth(
    config: &Config,
    plugin: &str,
    user: &UserName,
    port: u16,
    timeout: u64,
    clock: Clock,
) -> Result<i32> {
    let provider = Arc::new(config.load_plugin(plugin)?);
    if !provider.auth.config.allow_loopback_redirect {
        let callback = callback_url(config, plugin);
        bail!(
            "provider `{}` does not accept loopback redirect URIs: register {callback} with the provider and grant access through `healthpull serve` (/plugin/{plugin}/auth1?user={user})",
            provider.name
        );
    }
    let store = healthpull::app::open_store(config)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    let bound = listener.local_addr()?.port();
    let redirect_uri = format!("http://127.0.0.1:{bound}/callback");
    let url = begin(
        store.as_ref(),
        &provider,
        plugin,
        user,
        &redirect_uri,
        clock,
    )
    .await?;
    println!("Open this URL in a browser to grant access for `{user}`:\n{url}");
    println!("Waiting for the provider to redirect to {redirect_uri} ...");

    let (tx, rx) = tokio::sync::mpsc::channel::<(String, String)>(1);
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::get(
            move |axum::extract::Query(q): axum::extract::Query<
                std::collections::HashMap<String, String>,
            >| {
                let tx = tx.clone();
                async move {
                    if let Some(err) = q.get("error") {
                        let _ = tx.send((String::new(), err.clone())).await;
                        return axum::response::Html(format!(
                            "<p>The provider reported: {}</p>",
                            html_escape(err)
                        ));
                    }
                    let code = q.get("code").cloned().unwrap_or_default();
                    let state = q.get("state").cloned().unwrap_or_default();
                    let _ = tx.send((code, state)).await;
                    axum::response::Html(
                        "<p>healthpull received the answer; you can close this window.</p>"
                            .to_owned(),
                    )
                }
            },
        ),
    );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut rx = rx;
    let received = tokio::time::timeout(Duration::from_secs(timeout), rx.recv()).await;
    server.abort();
    let (code, state) = match received {
        Ok(Some(pair)) => pair,
        _ => bail!("no redirect arrived within {timeout} seconds"),
    };
    if code.is_empty() {
        bail!("the provider refused: {state}");
    }
    let transport = healthpull::http::HttpTransport::shared();
    let user_done = complete(
        store.as_ref(),
        transport.as_ref(),
        &provider,
        plugin,
        &code,
        &state,
        clock,
    )
    .await?;
    println!("Access granted for `{user_done}`; the token is stored.");
    Ok(0)
}
