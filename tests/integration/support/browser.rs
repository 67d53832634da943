//! Headless Chromium driven over the W3C WebDriver protocol, for the setup-page tests.
//!
//! [`Browser::start`] runs Debian's `chromedriver` (package `chromium-driver`) on a free
//! loopback port and opens a session with Debian's `chromium` (both installed by
//! `scripts/test-env.sh`; a missing one fails the test). Every command is a plain JSON
//! call with reqwest, so no WebDriver crate is needed. Dropping the [`Browser`] ends the
//! session (which closes Chromium) and kills chromedriver.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// Where Debian installs the browser and its driver.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C name of an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long chromedriver and the session may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one WebDriver command may take (page loads included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A WebDriver element reference.
#[derive(Debug, Clone)]
pub struct Element(String);

/// A headless Chromium session.
pub struct Browser {
    base: String,
    port: u16,
    session: String,
    http: reqwest::Client,
    driver: Child,
    log: PathBuf,
    // Chromium's profile and the driver log; removed after the processes are gone.
    _dir: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. Panics (with the driver log)
    /// when either is missing or does not come up in time.
    pub async fn start() -> Browser {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).exists(),
                "missing prerequisite {path} (Debian package {package}): run scripts/test-env.sh"
            );
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::Builder::new()
            .prefix("healthpull-browser-")
            .tempdir()
            .expect("create a temporary directory for Chromium");
        let profile = dir.path().join("profile");
        std::fs::create_dir_all(&profile).expect("create the Chromium profile directory");
        let log = dir.path().join("chromedriver.log");
        let log_file = std::fs::File::create(&log).expect("create the chromedriver log");
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone the log handle"))
            .stderr(log_file)
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::builder()
            .timeout(COMMAND_TIMEOUT)
            .no_proxy()
            .build()
            .expect("build the WebDriver client");
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            base,
            port,
            session: String::new(),
            http,
            driver,
            log,
            _dir: dir,
        };
        browser.wait_until_ready().await;
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"pageLoad": 30_000, "script": 10_000, "implicit": 0},
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=1100,1400",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let reply = browser
            .call(reqwest::Method::POST, "/session", Some(capabilities))
            .await;
        browser.session = reply["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {reply}"))
            .to_owned();
        browser
    }

    async fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(reply) = self.http.get(format!("{}/status", self.base)).send().await {
                if let Ok(status) = reply.json::<Value>().await {
                    if status["value"]["ready"] == json!(true) {
                        return;
                    }
                }
            }
            if let Ok(Some(status)) = self.driver.try_wait() {
                panic!("chromedriver exited ({status}); log:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready within {START_TIMEOUT:?}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The chromedriver log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// One WebDriver command; returns its `value`, panicking on a WebDriver error.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        match self.try_call(method.clone(), path, body).await {
            Ok(value) => value,
            Err(error) => panic!("WebDriver {method} {path}: {error}"),
        }
    }

    /// One WebDriver command; a WebDriver error comes back as `Err(text)`.
    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = request.send().await.map_err(|e| e.to_string())?;
        let status = reply.status();
        let value: Value = reply.json().await.map_err(|e| e.to_string())?;
        let value = value.get("value").cloned().unwrap_or(Value::Null);
        if !status.is_success() || value.get("error").is_some() {
            return Err(format!(
                "HTTP {status}: {} {}",
                value["error"].as_str().unwrap_or("?"),
                value["message"].as_str().unwrap_or("")
            ));
        }
        Ok(value)
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.call(
            reqwest::Method::POST,
            &self.session_path("/url"),
            Some(json!({"url": url})),
        )
        .await;
    }

    /// The current page's URL.
    pub async fn url(&self) -> String {
        let value = self
            .call(reqwest::Method::GET, &self.session_path("/url"), None)
            .await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// The current page's source (the DOM serialised).
    pub async fn source(&self) -> String {
        let value = self
            .call(reqwest::Method::GET, &self.session_path("/source"), None)
            .await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// The element matching a CSS selector, if there is one now.
    pub async fn try_find(&self, css: &str) -> Option<Element> {
        let value = self
            .try_call(
                reqwest::Method::POST,
                &self.session_path("/element"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .ok()?;
        value[ELEMENT].as_str().map(|id| Element(id.to_owned()))
    }

    /// Waits (bounded) for an element matching a CSS selector.
    pub async fn find(&self, css: &str) -> Element {
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            if let Some(element) = self.try_find(css).await {
                return element;
            }
            if Instant::now() > deadline {
                panic!(
                    "no element {css:?} within {COMMAND_TIMEOUT:?} at {}; page:\n{}",
                    self.url().await,
                    self.source().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks an element (following any navigation it starts).
    pub async fn click(&self, element: &Element) {
        self.call(
            reqwest::Method::POST,
            &self.session_path(&format!("/element/{}/click", element.0)),
            Some(json!({})),
        )
        .await;
    }

    /// Types `text` into an input.
    pub async fn type_text(&self, element: &Element, text: &str) {
        self.call(
            reqwest::Method::POST,
            &self.session_path(&format!("/element/{}/value", element.0)),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// The visible text of an element.
    pub async fn text(&self, element: &Element) -> String {
        let value = self
            .call(
                reqwest::Method::GET,
                &self.session_path(&format!("/element/{}/text", element.0)),
                None,
            )
            .await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// A DOM property of an element (`value` of an input, `href` of a link).
    pub async fn property(&self, element: &Element, name: &str) -> Value {
        self.call(
            reqwest::Method::GET,
            &self.session_path(&format!("/element/{}/property/{name}", element.0)),
            None,
        )
        .await
    }

    /// The computed value of a CSS property of an element (`font-size` as `24px`).
    pub async fn css(&self, element: &Element, name: &str) -> String {
        let value = self
            .call(
                reqwest::Method::GET,
                &self.session_path(&format!("/element/{}/css/{name}", element.0)),
                None,
            )
            .await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// Waits (bounded) until the page source satisfies `check`; returns it.
    pub async fn wait_for_source(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let source = self.source().await;
            if check(&source) {
                return source;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting until {what} at {}; page:\n{source}",
                    self.url().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG screenshot of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let value = self
            .call(
                reqwest::Method::GET,
                &self.session_path("/screenshot"),
                None,
            )
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap_or_default())
            .expect("the screenshot is base64")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes Chromium; then the driver goes.
        if !self.session.is_empty() {
            let _ = raw_delete(self.port, &format!("/session/{}", self.session));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// A blocking `DELETE` (usable in `Drop`, outside the async runtime).
fn raw_delete(port: u16, target: &str) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let request = format!(
        "DELETE {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    Ok(())
}
