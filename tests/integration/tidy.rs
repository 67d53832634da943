//! Rules about the test suite itself, checked over its source.

use std::path::{Path, PathBuf};

use crate::support::env::root;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("the tests directory lists") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Tests never run the binary in the repository: there it would read a `healthpull.yaml`
/// or `healthpull.db` left by running the server (the setup page's choices would change
/// snapshot results). They run it in a `Sandbox` or a temporary directory of their own.
#[test]
fn no_test_runs_the_binary_in_the_repository() {
    let mut files = Vec::new();
    rust_files(&root().join("tests/integration"), &mut files);
    let forbidden = [
        "current_dir(root())",
        "current_dir(env::root())",
        "current_dir(crate::support::env::root())",
    ];
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a test file reads");
        for (n, line) in text.lines().enumerate() {
            // This file names the patterns it forbids.
            if file.ends_with("tidy.rs") {
                continue;
            }
            if forbidden.iter().any(|f| line.replace(' ', "").contains(f)) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "tests that run the binary in the repository (use support::env::Sandbox):\n{}",
        found.join("\n")
    );
}

/// Library errors are typed (`thiserror`); `anyhow` is the binary's (`src/main.rs`,
/// `src/cli/`), and `secret::Secret` is the one secret type (docs/ARCHITECTURE.md).
#[test]
fn anyhow_only_in_the_binary_and_one_secret_type() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    assert!(files.len() > 20, "the library's sources are found");
    let binary = [root().join("src/main.rs"), root().join("src/cli")];
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        if !binary.iter().any(|b| file.starts_with(b)) {
            assert!(!text.contains("anyhow"), "{} uses anyhow", file.display());
        }
        assert!(!text.contains("secrecy"), "{} uses secrecy", file.display());
    }
}
