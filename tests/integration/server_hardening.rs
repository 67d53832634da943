//! Tests: `healthpull serve` is safe to expose, over real
//! HTTP against a separate server process, as in `server.rs` (whose world they reuse).
//!
//! * 7.1 DNS rebinding: a `Host` that is not ours is refused before any handler runs;
//!   loopback names with the port, `public_url`'s host and `allowed_hosts` are served;
//!   `Origin` is compared with the configured origins, never with `Host`.
//! * 7.2 Cross-site GETs: fetch and `auth1` refuse cross-site browser requests and keep
//!   serving non-browser clients; a fetch that finds nothing never replaces stored data
//!   (server and CLI).
//! * 7.4 Exhaustion: half-sent headers, idle kept-alive connections and stalled bodies
//!   are closed after the configured timeouts; connections beyond `max_connections`
//!   wait; unknown user names create no metric series; pending consents are bounded
//!   and expired ones removed.
//! * 7.5 Security headers on every answer, and the setup page's style still applies in
//!   headless Chromium under the Content-Security-Policy.
//! * 7.6 `serve` refuses a non-loopback address without credentials before binding.
//! * 7.17 One callback URL for the CLI and the setup page; consent errors as HTML pages
//!   with a way back for browsers, plain text for scripts.
//!
//! Time bounds are generous multiples of short configured timeouts; nothing measures speed.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::server::{DAY, PLUGIN, Server, Setup, USER, WAIT, World, client, quoted, sample};
use crate::support::browser::Browser;
use crate::support::env::healthpull_bin;
use crate::support::fake_provider::FakeConfig;

/// Short limits for the timeout tests: `server:` keys of the config file.
fn limits(header: u64, idle: u64, connections: usize) -> String {
    format!(
        "server:\n  header_timeout_seconds: {header}\n  idle_timeout_seconds: {idle}\n  max_connections: {connections}\n"
    )
}

/// `127.0.0.1:PORT` of the world's server.
fn address(world: &World) -> String {
    world
        .server
        .url
        .strip_prefix("http://")
        .expect("an http URL")
        .to_owned()
}

fn port(world: &World) -> String {
    address(world)
        .rsplit_once(':')
        .expect("host:port")
        .1
        .to_owned()
}

/// Sends raw request text on a new connection and reads until the server closes it.
async fn raw(world: &World, request: &str) -> String {
    let mut stream = TcpStream::connect(address(world))
        .await
        .expect("connect to the server");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .expect("read the answer");
    String::from_utf8_lossy(&answer).into_owned()
}

/// `GET path` with the given `Host` and extra header lines, `Connection: close`.
async fn raw_get(world: &World, path: &str, host: &str, extra: &str) -> String {
    raw(
        world,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"),
    )
    .await
}

/// The status code of a raw answer.
fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

/// Reads from `stream` until the server closes it; panics when it stays open for `limit`.
async fn assert_closed_within(stream: &mut TcpStream, limit: Duration, what: &str) -> String {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let seen = String::from_utf8_lossy(&seen).into_owned();
    assert!(
        read.is_ok(),
        "{what}: the server kept the connection open for {limit:?}; read so far: {seen:?}"
    );
    seen
}

/// Pending consents of the plugin, by key.
async fn pending(world: &World) -> serde_json::Map<String, Value> {
    match world.stored(&format!("plugindata/{PLUGIN}/pending")).await {
        Some(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

/// Registers the app, grants `jack` and stores his weight of [`DAY`].
async fn world_with_stored_weight(setup: Setup) -> World {
    let world = World::start(setup).await;
    world.register_app().await;
    world.grant(USER).await;
    world.seed_data();
    let reply = world
        .get(&format!(
            "/plugin/{PLUGIN}?user={USER}&methods=get_bodyweight&base_date={DAY}"
        ))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(stored_weight(&world).await, "the weight is stored");
    world
}

async fn stored_weight(world: &World) -> bool {
    world
        .stored(&format!("sensors/{PLUGIN}/{USER}"))
        .await
        .is_some_and(|v| v.to_string().contains("75.3"))
}

// ---------------------------------------------------------------------------------------
// 7.1 DNS rebinding
// ---------------------------------------------------------------------------------------

/// A page on a rebound name (`evil.example` resolving to 127.0.0.1) sends
/// `Host: evil.example:PORT` and a matching `Origin`; nothing it asks for is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_host_is_refused_before_any_handler() {
    let world = world_with_stored_weight(Setup {
        extra_config: "allowed_hosts: [\"igor.home.example\", \"proxy.example:8443\"]\n".into(),
        ..Setup::default()
    })
    .await;
    let port = port(&world);
    let evil = format!("evil.example:{port}");
    let evil_origin = format!("Origin: http://{evil}\r\nSec-Fetch-Site: same-origin\r\n");

    // Reading the setup page (and its form token) is refused.
    let answer = raw_get(
        &world,
        &format!("/plugin/{PLUGIN}/page/setup.html"),
        &evil,
        &evil_origin,
    )
    .await;
    assert_eq!(status_of(&answer), 421, "{answer}");
    assert!(answer.contains("allowed_hosts"), "a clear text: {answer}");
    assert!(!answer.contains("_csrf"), "no form token leaks: {answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(
        lower.contains("\r\nx-frame-options: deny\r\n")
            && lower.contains("\r\nx-content-type-options: nosniff\r\n"),
        "refusals carry the security headers too: {answer}"
    );

    // Reading a user's data is refused, and so is every other entry point.
    for path in [
        format!("/plugin/{PLUGIN}?user={USER}&methods=get_bodyweight&base_date={DAY}"),
        format!("/plugin/{PLUGIN}/status"),
        "/metrics".to_owned(),
        "/".to_owned(),
        format!("/plugin/{PLUGIN}/auth1?user={USER}"),
    ] {
        let answer = raw_get(&world, &path, &evil, &evil_origin).await;
        assert_eq!(status_of(&answer), 421, "{path}: {answer}");
        assert!(!answer.contains("75.3"), "{path}: {answer}");
    }

    // Changing settings with a valid form token is refused too.
    let token = world.csrf(&[]).await;
    let body = format!("client_id=EVIL&_csrf={token}");
    let answer = raw(
        &world,
        &format!(
            "POST /plugin/{PLUGIN}/settings HTTP/1.1\r\nHost: {evil}\r\n{evil_origin}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert_eq!(status_of(&answer), 421, "{answer}");
    assert_eq!(
        world
            .stored(&format!("plugindata/{PLUGIN}/client_id"))
            .await,
        Some(json!(world.fake.config().client_id)),
        "the settings are unchanged"
    );
    // No handler ran: the request log shows the refusals only.
    assert!(
        !world.server.log().contains("client_id=EVIL"),
        "{}",
        world.server.log()
    );

    // Ours: the loopback names with the port, public_url's host, allowed_hosts.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LOCALHOST:{port}"),
        format!("[::1]:{port}"),
        "igor.home.example".to_owned(),
        format!("igor.home.example:{port}"),
        "proxy.example:8443".to_owned(),
    ] {
        let answer = raw_get(&world, "/metrics", &host, "").await;
        assert_eq!(status_of(&answer), 200, "{host}: {answer}");
    }
    // Not ours: other names, other ports, a listed name on another port.
    for host in [
        "evil.example".to_owned(),
        "127.0.0.1:1".to_owned(),
        format!("localhost.evil.example:{port}"),
        "proxy.example".to_owned(),
        "proxy.example:9999".to_owned(),
        "igor.home.example:1".to_owned(),
    ] {
        let answer = raw_get(&world, "/metrics", &host, "").await;
        assert_eq!(status_of(&answer), 421, "{host}: {answer}");
    }
    // No Host at all (HTTP/1.0 without one).
    let answer = raw(&world, "GET /metrics HTTP/1.0\r\n\r\n").await;
    assert_eq!(status_of(&answer), 400, "{answer}");
}

/// The same-origin check compares `Origin` with the configured origins, not
/// with the request's `Host`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_is_compared_with_configured_origins() {
    let world = World::start(Setup {
        extra_config: "allowed_hosts: [\"igor.home.example\"]\n".into(),
        ..Setup::default()
    })
    .await;
    world.register_app().await;
    let token = world.csrf(&[]).await;
    let settings = format!("/plugin/{PLUGIN}/settings");
    // A browser without Sec-Fetch-Site on an allowed name: its origin is ours.
    let reply = world
        .post_form(
            &settings,
            &[("system", "en_GB"), ("_csrf", &token)],
            &[("Origin", "http://igor.home.example")],
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let reply = world
        .post_form(
            &settings,
            &[("system", "metric"), ("_csrf", &token)],
            &[("Origin", &world.server.url)],
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // Foreign origins are refused whatever the Host says.
    for origin in [
        "http://evil.example",
        "http://igor.home.example.evil.example",
        "null",
    ] {
        let reply = world
            .post_form(
                &settings,
                &[("system", "en_US"), ("_csrf", &token)],
                &[("Origin", origin)],
            )
            .await;
        assert_eq!(reply.status, 403, "{origin}: {reply:?}");
    }
    assert_eq!(
        world.stored(&format!("plugindata/{PLUGIN}/system")).await,
        Some(json!("metric"))
    );
}

// ---------------------------------------------------------------------------------------
// 7.2 State changes by cross-site GET
// ---------------------------------------------------------------------------------------

/// An `<img src=".../plugin/P?user=U&methods=get_meals">` on another site
/// replaced the user's sensors with `<U/>`; `auth1` from another site wrote a pending
/// consent each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_gets_change_nothing_and_scripts_keep_working() {
    let world = world_with_stored_weight(Setup::default()).await;
    let meals = format!("/plugin/{PLUGIN}?user={USER}&methods=get_meals");
    let before = pending(&world).await.len();
    for headers in [
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![("Sec-Fetch-Site", "same-site")],
        vec![("Origin", "http://evil.example")],
        vec![("Sec-Fetch-Site", "cross-site"), ("Accept", "text/html")],
    ] {
        let reply = world.get_with(&meals, &headers).await;
        assert_eq!(reply.status, 403, "{headers:?}: {reply:?}");
        let reply = world
            .get_with(&format!("/plugin/{PLUGIN}/auth1?user={USER}"), &headers)
            .await;
        assert_eq!(reply.status, 403, "{headers:?}: {reply:?}");
        assert_eq!(reply.location, None, "{reply:?}");
    }
    assert!(stored_weight(&world).await, "the sensors are unchanged");
    assert_eq!(
        pending(&world).await.len(),
        before,
        "no consent was started"
    );
    assert!(
        world.fake.requests_to("/1/user/-/meals").is_empty(),
        "nothing was fetched"
    );

    // Our own pages and non-browser clients (Igor's actions, curl) keep working.
    let reply = world
        .get_with(
            &format!("/plugin/{PLUGIN}/auth1?user={USER}"),
            &[("Sec-Fetch-Site", "same-origin")],
        )
        .await;
    assert_eq!(reply.status, 303, "{reply:?}");
    let reply = world
        .get(&format!("/plugin/{PLUGIN}/auth1?user={USER}"))
        .await;
    assert_eq!(reply.status, 303, "{reply:?}");
    let reply = world
        .get_with(
            &format!("/plugin/{PLUGIN}?user={USER}&methods=get_bodyweight&base_date={DAY}"),
            &[("Sec-Fetch-Site", "none")],
        )
        .await;
    assert_eq!(reply.status, 200, "a typed address: {reply:?}");

    // A plain GET of a method that maps nothing is answered, and keeps the stored data.
    let reply = world.get(&meals).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        !world.fake.requests_to("/1/user/-/meals").is_empty(),
        "the meals were fetched"
    );
    assert!(
        stored_weight(&world).await,
        "an empty result does not replace stored data"
    );
    world.assert_no_secrets();
}

/// The CLI stores through the same place: an empty fetch keeps stored data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_fetch_that_finds_nothing_keeps_stored_data() {
    let world = world_with_stored_weight(Setup::default()).await;
    let run = Command::new(healthpull_bin())
        .arg("--config")
        .arg(&world.config_path)
        .args(["fetch", PLUGIN, "--user", USER, "--methods", "get_meals"])
        .current_dir(world.dir.path())
        .envs(world.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT, run)
        .await
        .expect("the fetch ends")
        .expect("run healthpull fetch");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !world.fake.requests_to("/1/user/-/meals").is_empty(),
        "the meals were fetched"
    );
    assert!(stored_weight(&world).await, "the stored weight is kept");
}

// ---------------------------------------------------------------------------------------
// 7.4 Resource exhaustion
// ---------------------------------------------------------------------------------------

/// Half-sent headers stayed open for 106 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_header_is_closed_after_the_header_timeout() {
    let world = World::start(Setup {
        extra_config: limits(1, 60, 64),
        ..Setup::default()
    })
    .await;
    let mut stream = TcpStream::connect(address(&world)).await.expect("connect");
    stream
        .write_all(
            format!(
                "GET /metrics HTTP/1.1\r\nHost: {}\r\nX-Slow: ",
                address(&world)
            )
            .as_bytes(),
        )
        .await
        .expect("send half a header");
    assert_closed_within(&mut stream, Duration::from_secs(20), "half a header").await;
    // A connection that sends nothing at all is closed as well.
    let mut silent = TcpStream::connect(address(&world)).await.expect("connect");
    assert_closed_within(&mut silent, Duration::from_secs(20), "a silent connection").await;
    // Normal requests are unaffected.
    assert_eq!(world.get("/metrics").await.status, 200);
}

/// A kept-alive connection that sends no next request, and a request body
/// that stalls, are closed after the idle timeout (the header timeout being long).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_stalled_bodies_are_closed() {
    let world = World::start(Setup {
        extra_config: limits(120, 1, 64),
        ..Setup::default()
    })
    .await;
    let host = address(&world);

    let mut kept = TcpStream::connect(&host).await.expect("connect");
    kept.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .expect("send a request");
    let seen = assert_closed_within(&mut kept, Duration::from_secs(20), "an idle connection").await;
    assert!(seen.starts_with("HTTP/1.1 200"), "answered first: {seen:?}");

    let mut stalled = TcpStream::connect(&host).await.expect("connect");
    stalled
        .write_all(
            format!(
                "POST /plugin/{PLUGIN}/settings HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nclient_id=SLOW"
            )
            .as_bytes(),
        )
        .await
        .expect("send part of a body");
    assert_closed_within(&mut stalled, Duration::from_secs(20), "a stalled body").await;
    assert_eq!(
        world
            .stored(&format!("plugindata/{PLUGIN}/client_id"))
            .await,
        None,
        "the stalled request changed nothing"
    );
    assert_eq!(world.get("/metrics").await.status, 200);
}

/// 1,100 idle connections made a normal request time out. Beyond
/// `max_connections` new connections wait in the listen queue; they are served as soon
/// as a connection ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let world = World::start(Setup {
        extra_config: limits(120, 120, 2),
        ..Setup::default()
    })
    .await;
    let host = address(&world);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(&host).await.expect("connect");
        // A request answered on each shows the server took the connection.
        stream
            .write_all(format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .await
            .expect("send");
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("answered")
            .expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    let waiting = client()
        .get(world.url("/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(
        waiting.is_err(),
        "a third connection is not served while two are open: {waiting:?}"
    );
    drop(held);
    let reply = world.get("/metrics").await;
    assert_eq!(reply.status, 200, "served once a slot is free: {reply:?}");
}

/// Every distinct `user=` string became a metric series (3,000 names of
/// 7 KB: `/metrics` grew to 20 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_names_create_no_series() {
    let world = world_with_stored_weight(Setup::default()).await;
    let long = "z".repeat(40);
    for i in 0..30 {
        let reply = world
            .get(&format!(
                "/plugin/{PLUGIN}?user={long}{i}&methods=get_bodyweight"
            ))
            .await;
        assert_eq!(reply.status, 403, "no token: {reply:?}");
    }
    let metrics = world.get("/metrics").await.body;
    assert!(!metrics.contains("zzzz"), "{metrics}");
    assert!(metrics.len() < 5000, "{} bytes", metrics.len());
    assert_eq!(
        sample(
            &metrics,
            &format!(
                "healthpull_unknown_user_fetches_total{{plugin=\"{PLUGIN}\",result=\"error\"}}"
            )
        ),
        Some(30.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            &format!(
                "healthpull_fetches_total{{plugin=\"{PLUGIN}\",user=\"{USER}\",result=\"ok\"}}"
            )
        ),
        Some(1.0),
        "known users keep their series: {metrics}"
    );
}

/// 2,000 `auth1` calls left 2,005 pending consents; expired ones were never
/// removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_consents_are_bounded_and_expired_ones_removed() {
    let world = World::start(Setup::default()).await;
    world.register_app().await;
    // A consent started an hour ago (a server whose clock says so).
    let an_hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let mut past = world.second_server(&["--now", &an_hour_ago]).await;
    let reply = world
        .send(
            world
                .http
                .get(format!("{}/plugin/{PLUGIN}/auth1?user=old", past.url)),
        )
        .await;
    assert_eq!(reply.status, 303, "{reply:?}");
    past.terminate().await;
    let expired: Vec<String> = pending(&world).await.keys().cloned().collect();
    assert_eq!(expired.len(), 1);

    // Many consents for one user: the oldest go, a few stay.
    for _ in 0..10 {
        let reply = world
            .get(&format!("/plugin/{PLUGIN}/auth1?user={USER}"))
            .await;
        assert_eq!(reply.status, 303, "{reply:?}");
    }
    let now = pending(&world).await;
    assert!(
        !now.contains_key(&expired[0]),
        "the expired consent is gone"
    );
    let mine = now
        .values()
        .filter(|r| r.get("user") == Some(&json!(USER)))
        .count();
    assert_eq!(mine, 3, "{now:?}");

    // Many users: a bounded number of consents in progress per plugin.
    let mut refused = None;
    for i in 0..120 {
        let reply = world
            .get(&format!("/plugin/{PLUGIN}/auth1?user=u{i}"))
            .await;
        if reply.status != 303 {
            refused = Some((i, reply));
            break;
        }
    }
    let (i, reply) = refused.expect("auth1 is refused at some point");
    assert_eq!(i, 97, "3 of jack and 97 others: {reply:?}");
    assert_eq!(reply.status, 429, "{reply:?}");
    assert!(reply.body.contains("too many consents"), "{reply:?}");
    assert_eq!(pending(&world).await.len(), 100);
}

// ---------------------------------------------------------------------------------------
// 7.5 Security headers
// ---------------------------------------------------------------------------------------

/// No answer had a Content-Security-Policy, framing or sniffing protection or
/// a referrer policy (the callback URL carries a code).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_has_the_security_headers() {
    let world = World::start(Setup::default()).await;
    world.register_app().await;
    let html = [("Accept", "text/html")];
    let mut replies = vec![
        (
            "setup page",
            world
                .get(&format!("/plugin/{PLUGIN}/page/setup.html?user={USER}"))
                .await,
        ),
        ("index", world.get("/").await),
        (
            "auth2 error page",
            world
                .get_with(&format!("/plugin/{PLUGIN}/auth2?code=c&state=s"), &html)
                .await,
        ),
        ("metrics", world.get("/metrics").await),
        (
            "not found",
            world.get("/plugin/nothing/page/setup.html").await,
        ),
    ];
    let reply = world
        .get_with(&format!("/plugin/{PLUGIN}/auth1?user={USER}"), &[])
        .await;
    let consent = reply.location.clone().expect("a consent URL");
    replies.push(("auth1 redirect", reply));
    let back = world.send(world.http.get(&consent)).await;
    let callback = back.location.expect("the fake redirects back");
    replies.push((
        "granted page",
        world
            .send(world.http.get(&callback).header("Accept", "text/html"))
            .await,
    ));
    for (what, reply) in &replies {
        let header = |name: &str| {
            reply
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("{what}: no {name}: {reply:?}"))
                .to_owned()
        };
        let csp = header("content-security-policy");
        assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
        assert!(csp.contains("default-src 'none'"), "{what}: {csp}");
        assert_eq!(header("x-frame-options"), "DENY", "{what}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{what}");
    }
    let granted = &replies.last().expect("the granted page").1;
    assert!(granted.body.contains("id=\"granted\""), "{granted:?}");
}

/// The policy does not break the setup page: its style applies and its forms
/// post in headless Chromium.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_page_works_under_the_policy_in_chromium() {
    let world = World::start(Setup::default()).await;
    let config = world.fake.config();
    let browser = Browser::start().await;
    let setup_url = world.url(&format!("/plugin/{PLUGIN}/page/setup.html"));
    browser.goto(&setup_url).await;
    let heading = browser.find("h1").await;
    // STYLE sets `h1{font-size:1.5rem}`; the browser default is 2em (32px).
    assert_eq!(browser.css(&heading, "font-size").await, "24px");
    browser
        .type_text(&browser.find("#client_id").await, &config.client_id)
        .await;
    browser.click(&browser.find("#save-app").await).await;
    browser
        .wait_for_source("the client id is stored", |s| {
            s.contains(&format!("value=\"{}\"", config.client_id))
        })
        .await;
    assert_eq!(
        world
            .stored(&format!("plugindata/{PLUGIN}/client_id"))
            .await,
        Some(json!(config.client_id))
    );
}

// ---------------------------------------------------------------------------------------
// 7.6 Refusing before binding
// ---------------------------------------------------------------------------------------

/// `serve --listen 0.0.0.0:0` without credentials bound (and printed the
/// port) before refusing. Decided from the address, the answer is the same whether or
/// not the port is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_is_refused_before_binding() {
    let sandbox = crate::support::env::Sandbox::new();
    let (config, dir) = (sandbox.config(), &sandbox.dir);
    // A port that is taken: binding first would fail with "address in use".
    let taken = std::net::TcpListener::bind("0.0.0.0:0").expect("bind a port");
    let busy = format!("0.0.0.0:{}", taken.local_addr().expect("address").port());
    for address in ["0.0.0.0:0", busy.as_str(), "[::]:0"] {
        let run = Command::new(healthpull_bin())
            .arg("--config")
            .arg(&config)
            .args(["serve", "--listen", address])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(WAIT, run)
            .await
            .unwrap_or_else(|_| panic!("serve --listen {address} kept running"))
            .expect("run healthpull serve");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{address}: {stderr}");
        assert!(
            stderr.contains(&format!("refusing to listen on {address}"))
                && stderr.contains("without credentials"),
            "{address}: {stderr}"
        );
        assert!(!stderr.contains("address in use"), "{address}: {stderr}");
        assert!(!stderr.contains("listening"), "{address}: {stderr}");
    }
    drop(taken);
}

// ---------------------------------------------------------------------------------------
// 7.17 Callback URL and consent error pages
// ---------------------------------------------------------------------------------------

/// `settings` printed `"callback_url": null` while the setup page showed the
/// right URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_and_setup_page_show_the_same_callback_url() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("find a free port");
    let listen = free.local_addr().expect("address").to_string();
    drop(free);
    let world = World::start(Setup {
        extra_config: format!("listen: {}\n", quoted(&listen)),
        ..Setup::default()
    })
    .await;
    let run = Command::new(healthpull_bin())
        .arg("--config")
        .arg(&world.config_path)
        .args(["settings", PLUGIN])
        .current_dir(world.dir.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT, run)
        .await
        .expect("settings ends")
        .expect("run healthpull settings");
    let shown: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "settings prints JSON ({e}): {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let expected = format!("http://{listen}/plugin/{PLUGIN}/auth2");
    assert_eq!(shown["callback_url"], json!(expected), "{shown}");

    // The server on the configured address shows the same URL.
    let on_config =
        Server::start_with(&world.config_path, world.dir.path(), &world.env, &["serve"]).await;
    let page = world
        .send(
            world
                .http
                .get(format!("{}/plugin/{PLUGIN}/page/setup.html", on_config.url)),
        )
        .await;
    assert!(
        page.body
            .contains(&format!("<code id=\"callback\">{expected}</code>")),
        "{}",
        page.body
    );
}

/// Errors of `auth1`/`auth2` were plain text with no way back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_errors_are_pages_with_a_way_back_for_browsers() {
    let world = World::start(Setup {
        fake: Some(FakeConfig {
            auto_consent: false,
            ..FakeConfig::fitbit()
        }),
        ..Setup::default()
    })
    .await;
    let html = [("Accept", "text/html,application/xhtml+xml")];
    let setup = format!("/plugin/{PLUGIN}/page/setup.html");

    // auth1 before the app is registered.
    let reply = world
        .get_with(&format!("/plugin/{PLUGIN}/auth1?user={USER}"), &html)
        .await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert!(reply.content_type.starts_with("text/html"), "{reply:?}");
    assert!(reply.body.contains("not registered"), "{reply:?}");
    assert!(
        reply
            .body
            .contains(&format!("href=\"{setup}?user={USER}\"")),
        "{reply:?}"
    );
    // Scripts keep the plain text.
    let reply = world
        .get(&format!("/plugin/{PLUGIN}/auth1?user={USER}"))
        .await;
    assert_eq!(reply.status, 403);
    assert!(reply.content_type.starts_with("text/plain"), "{reply:?}");
    assert!(reply.body.starts_with("403 "), "{reply:?}");

    // auth2 with an unknown state: the user is not known, back to the page.
    let reply = world
        .get_with(
            &format!("/plugin/{PLUGIN}/auth2?code=c&state=unknown"),
            &html,
        )
        .await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert!(
        reply.body.contains("unknown or already used state"),
        "{reply:?}"
    );
    assert!(
        reply.body.contains(&format!("href=\"{setup}\"")),
        "{reply:?}"
    );
    let reply = world
        .get(&format!("/plugin/{PLUGIN}/auth2?code=c&state=unknown"))
        .await;
    assert_eq!(
        (reply.status, reply.content_type.starts_with("text/plain")),
        (403, true),
        "{reply:?}"
    );

    // The person refuses at the provider: the page names the error and the user.
    world.register_app().await;
    let reply = world
        .get(&format!("/plugin/{PLUGIN}/auth1?user={USER}"))
        .await;
    let consent = reply.location.expect("a consent URL");
    let pairs: Vec<(String, String)> = url::Url::parse(&consent)
        .expect("a URL")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let state = pairs
        .iter()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.clone())
        .expect("a state");
    let before = pending(&world).await.len();
    let reply = world
        .get_with(
            &format!("/plugin/{PLUGIN}/auth2?error=access_denied&state={state}"),
            &html,
        )
        .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.body.contains("access_denied"), "{reply:?}");
    assert!(
        reply
            .body
            .contains(&format!("href=\"{setup}?user={USER}\"")),
        "{reply:?}"
    );
    assert_eq!(
        pending(&world).await.len(),
        before - 1,
        "the state is used up"
    );
}
