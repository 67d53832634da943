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
