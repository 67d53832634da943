//! Prerequisites installed by `scripts/test-env.sh`: a missing one fails the test, never skips it.

use std::path::{Path, PathBuf};

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Python of the test venv (igor-iot 0.99.1 and python-fitbit 0.3.1 installed).
pub fn venv_python() -> PathBuf {
    let python = root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "missing prerequisite {}: run scripts/test-env.sh (the README's test command does)",
        python.display()
    );
    python
}

/// The healthpull binary built for this test run.
pub fn healthpull_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_healthpull"))
}

/// A temporary directory to run the binary in, with a config naming the repository's
/// provider files and a store inside the directory. The repository's own
/// `healthpull.yaml` and `healthpull.db` (left by running the server) are never seen, and
/// nothing is written outside the directory.
pub struct Sandbox {
    /// The directory; removed when the sandbox is dropped.
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    /// A new, empty sandbox.
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = format!(
            "providers_dir: {}\nstore: {{kind: embedded, path: healthpull.db}}\n",
            serde_json::to_string(&root().join("providers")).expect("a path as JSON")
        );
        std::fs::write(dir.path().join("healthpull.yaml"), config).expect("write the config");
        Sandbox { dir }
    }

    /// The sandbox's config file.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("healthpull.yaml")
    }

    /// The binary, run in the sandbox with its config.
    pub fn command(&self) -> std::process::Command {
        let mut cmd = self.command_without_config();
        cmd.arg("--config").arg(self.config());
        cmd
    }

    /// The binary, run in the sandbox, for arguments that name a config of their own.
    /// The machine's time zone is pinned to UTC (a test about zones sets its own), so
    /// which day a time lands on does not depend on where the tests run.
    pub fn command_without_config(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(healthpull_bin());
        cmd.current_dir(self.dir.path()).env("TZ", "UTC");
        cmd
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}
