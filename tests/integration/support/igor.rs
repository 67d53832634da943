//! A real Igor server (igor-iot 0.99.1 from the test venv) for the tests that talk to
//! Igor, so the Igor store and the plugin entry points are checked against the real
//! thing rather than against our reading of its code.
//!
//! [`Igor::start`] initialises a database in a temporary directory and runs igorServer
//! through `tests/support/igor_launch.py`, which binds 127.0.0.1 (igorServer itself
//! always binds 0.0.0.0). Dropping the [`Igor`] stops it with `GET /internal/stop`
//! (which saves) and then kills what is left. [`Igor::shared`] gives one server per
//! test binary and options, reused by all tests; since statics are never dropped, the
//! launcher watches its parent and exits (removing its database) when the test binary
//! is gone.
//!
//! Admin requests authenticate as `admin`, which has no password in a fresh database
//! (Igor then accepts any password).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::distr::{Alphanumeric, SampleString};

use super::env;

/// How long Igor may take to answer after starting.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The admin credentials of a fresh database (any password works for `admin`).
const ADMIN: (&str, &str) = ("admin", "admin");

/// How to run the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IgorOptions {
    /// Access control on (`--capabilities`) or off (`--noCapabilities`).
    pub capabilities: bool,
}

/// A running igorServer on 127.0.0.1.
pub struct Igor {
    /// The base URL, e.g. `http://127.0.0.1:40123` (no `/data`).
    pub url: String,
    /// The port it listens on.
    pub port: u16,
    /// The igorServer log (stdout and stderr).
    pub log: PathBuf,
    child: Mutex<Option<Child>>,
    // Removed after the server has stopped (fields drop after `Drop::drop`).
    _dir: tempfile::TempDir,
}

/// An HTTP reply from Igor, read in full.
#[derive(Debug, Clone)]
pub struct IgorReply {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` header, empty if none.
    pub content_type: String,
    /// The body.
    pub body: String,
}

/// Serialises the creation of elements shared between tests (`identities/jack`, ...),
/// which are checked and then created: two tests doing that at once could replace each
/// other's freshly created element.
static ADMIN_CREATE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Igor {
    /// Starts a dedicated server; it stops when dropped. Panics (with the server log)
    /// if it does not come up.
    pub fn start(options: IgorOptions) -> Igor {
        Self::launch(options, false)
    }

    /// The server shared by all tests of this binary with these options, started on
    /// first use. Tests sharing it must use their own plugin names.
    pub fn shared(options: IgorOptions) -> &'static Igor {
        static WITH_CAPABILITIES: OnceLock<Igor> = OnceLock::new();
        static WITHOUT_CAPABILITIES: OnceLock<Igor> = OnceLock::new();
        let cell = if options.capabilities {
            &WITH_CAPABILITIES
        } else {
            &WITHOUT_CAPABILITIES
        };
        cell.get_or_init(|| Self::launch(options, true))
    }

    fn launch(options: IgorOptions, remove_on_orphan: bool) -> Igor {
        let python = env::venv_python();
        let setup = python.with_file_name("igorSetup");
        assert!(
            setup.exists(),
            "missing prerequisite {}: run scripts/test-env.sh",
            setup.display()
        );
        let launcher = env::root().join("tests/support/igor_launch.py");
        let dir = tempfile::Builder::new()
            .prefix("healthpull-igor-")
            .tempdir()
            .expect("create a temporary directory for Igor");
        let database = dir.path().join("database");
        let status = Command::new(&setup)
            .arg("-d")
            .arg(&database)
            .arg("initialize")
            .status()
            .expect("run igorSetup");
        assert!(status.success(), "igorSetup initialize failed: {status}");

        let port = free_port();
        let log = dir.path().join("igor.log");
        let log_file = std::fs::File::create(&log).expect("create the Igor log file");
        let mut command = Command::new(&python);
        command.arg(&launcher);
        if remove_on_orphan {
            command.arg("--remove-on-orphan").arg(dir.path());
        }
        command
            .arg("--")
            .arg("-d")
            .arg(&database)
            .arg("-p")
            .arg(port.to_string())
            .arg("-s")
            .arg("--nologfile")
            .arg(if options.capabilities {
                "--capabilities"
            } else {
                "--noCapabilities"
            })
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone the log file handle"))
            .stderr(log_file);
        let child = command.spawn().expect("start igorServer");
        let igor = Igor {
            url: format!("http://127.0.0.1:{port}"),
            port,
            log,
            child: Mutex::new(Some(child)),
            _dir: dir,
        };
        igor.wait_until_ready();
        igor
    }

    /// Polls `GET /data/services/igor/url` until it answers 200.
    fn wait_until_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(reply) = raw_get(self.port, "/data/services/igor/url", None)
                && reply.status == 200
            {
                return;
            }
            let exited = self
                .child
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "igorServer exited ({status}) before answering; log:\n{}",
                    self.log_text()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "igorServer did not answer within {START_TIMEOUT:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|error| format!("(no log: {error})"))
    }

    /// A request as `admin`. `target` is the path with any query, e.g. `/data/sensors`.
    pub async fn admin_request(
        &self,
        method: reqwest::Method,
        target: &str,
        accept: &str,
        body: Option<(&str, &str)>,
    ) -> IgorReply {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("build an HTTP client");
        let mut request = client
            .request(method.clone(), format!("{}{target}", self.url))
            .basic_auth(ADMIN.0, Some(ADMIN.1))
            .header(reqwest::header::ACCEPT, accept);
        if let Some((content_type, body)) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body.to_owned());
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|error| panic!("admin {method} {target}: {error}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response
            .text()
            .await
            .unwrap_or_else(|error| panic!("admin {method} {target}: reading the body: {error}"));
        IgorReply {
            status,
            content_type,
            body,
        }
    }

    /// `GET target` as admin with one `Accept` type.
    pub async fn admin_get(&self, target: &str, accept: &str) -> IgorReply {
        self.admin_request(reqwest::Method::GET, target, accept, None)
            .await
    }

    /// `PUT target` as admin with an exact `Content-Type`.
    pub async fn admin_put(&self, target: &str, content_type: &str, body: &str) -> IgorReply {
        self.admin_request(
            reqwest::Method::PUT,
            target,
            "application/xml",
            Some((content_type, body)),
        )
        .await
    }

    /// Like [`Igor::admin_get`], panicking unless the answer is 200; returns the body.
    pub async fn admin_get_ok(&self, target: &str, accept: &str) -> String {
        let reply = self.admin_get(target, accept).await;
        assert_eq!(reply.status, 200, "admin GET {target}: {reply:?}");
        reply.body
    }

    /// Like [`Igor::admin_put`], panicking unless the answer is 200.
    pub async fn admin_put_ok(&self, target: &str, content_type: &str, body: &str) {
        let reply = self.admin_put(target, content_type, body).await;
        assert_eq!(reply.status, 200, "admin PUT {target}: {reply:?}");
    }

    /// Creates each missing level of `path` (below `/data`) as an empty element; never
    /// replaces an existing one.
    pub async fn ensure_element(&self, path: &str) {
        let mut prefix = String::new();
        for step in path.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(step);
            let target = format!("/data/{prefix}");
            let reply = self.admin_get(&target, "text/plain").await;
            match reply.status {
                200 => {}
                404 => self.admin_put_ok(&target, "text/plain", "").await,
                _ => panic!("admin GET {target}: {reply:?}"),
            }
        }
    }

    /// What installing a plugin and its users would create: `sensors/<plugin>` and
    /// `plugindata/<plugin>` (owned by the plugin, i.e. with the hidden
    /// `own:plugin` attribute the fragment gives them) and
    /// `identities/<user>/plugindata/<plugin>` for each user. Existing elements are
    /// left alone.
    pub async fn plugin_containers(&self, plugin: &str, users: &[&str]) {
        let _serialised = ADMIN_CREATE.lock().await;
        for parent in ["sensors", "plugindata"] {
            self.ensure_element(parent).await;
            let target = format!("/data/{parent}/{plugin}");
            if self.admin_get(&target, "text/plain").await.status == 404 {
                let owned = format!(
                    "<{plugin} xmlns:own=\"http://jackjansen.nl/igor/owner\" own:plugin=\"{plugin}\"/>"
                );
                self.admin_put_ok(&target, "application/xml", &owned).await;
            }
        }
        for user in users {
            self.ensure_element(&format!("identities/{user}/plugindata/{plugin}"))
                .await;
        }
    }

    /// Creates the plugin's containers ([`Igor::plugin_containers`]) and a service
    /// identity `<plugin>svc` with a random password and the capabilities of
    /// `reference/igor.md` section 3: `/data/sensors/<plugin>` (get
    /// descendant-or-self, put/post/delete descendant), `/data/plugindata/<plugin>` and
    /// `/data/identities/<user>/plugindata/<plugin>` for each user (get
    /// descendant-or-self, put descendant), `/internal/save` (get self). Returns
    /// `(user, password)`.
    pub async fn service_identity(&self, plugin: &str, users: &[&str]) -> (String, String) {
        self.plugin_containers(plugin, users).await;
        let name = format!("{plugin}svc");
        let password = Alphanumeric.sample_string(&mut rand::rng(), 24);
        {
            let _serialised = ADMIN_CREATE.lock().await;
            self.ensure_element("identities").await;
            let target = format!("/data/identities/{name}");
            assert_eq!(
                self.admin_get(&target, "text/plain").await.status,
                404,
                "service identity {name} exists already: use a fresh plugin name per test"
            );
            self.admin_put_ok(&target, "text/plain", "").await;
        }
        let set_password =
            format!("/internal/accessControl/setUserPassword?username={name}&password={password}");
        let reply = self.admin_get(&set_password, "text/plain").await;
        assert_eq!(reply.status, 200, "setUserPassword: {reply:?}");

        let mut capabilities = vec![
            (
                "admin-data",
                format!("/data/sensors/{plugin}"),
                [
                    "descendant-or-self",
                    "descendant",
                    "descendant",
                    "descendant",
                ],
            ),
            (
                "admin-data",
                format!("/data/plugindata/{plugin}"),
                ["descendant-or-self", "descendant", "", ""],
            ),
        ];
        for user in users {
            capabilities.push((
                "admin-data",
                format!("/data/identities/{user}/plugindata/{plugin}"),
                ["descendant-or-self", "descendant", "", ""],
            ));
        }
        capabilities.push((
            "admin-internal",
            "/internal/save".to_owned(),
            ["self", "", "", ""],
        ));
        for (parent, object, [get, put, post, delete]) in capabilities {
            let target = format!(
                "/internal/accessControl/newToken?tokenId={parent}&newOwner=/data/identities/{name}\
                 &newPath={object}&get={get}&put={put}&post={post}&delete={delete}"
            );
            let reply = self.admin_get(&target, "text/plain").await;
            assert_eq!(reply.status, 200, "newToken for {object}: {reply:?}");
        }
        (name, password)
    }

    /// Stops the server: `GET /internal/stop` (which saves), then waits a little and
    /// kills whatever is left. Idempotent.
    pub fn stop(&self) {
        let mut child = self
            .child
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let Some(mut process) = child.take() else {
            return;
        };
        let _ = raw_get(self.port, "/internal/stop", Some(ADMIN));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = process.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = process.kill();
        let _ = process.wait();
    }
}

impl Igor {
    /// The Igor database directory (`database.xml` and friends).
    pub fn database_dir(&self) -> PathBuf {
        self._dir.path().join("database")
    }
}

impl Drop for Igor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// A blocking `GET` over HTTP/1.0, for use outside async code (start-up, drop).
fn raw_get(
    port: u16,
    target: &str,
    credentials: Option<(&str, &str)>,
) -> std::io::Result<IgorReply> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut request =
        format!("GET {target} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: text/plain\r\n");
    if let Some((user, password)) = credentials {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {head:?}")))?;
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    Ok(IgorReply {
        status,
        content_type,
        body: body.to_owned(),
    })
}
