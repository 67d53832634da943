//! Bad input on the command line: refused with a clear error and exit status 2, before
//! anything is read or written.

use crate::support::env::Sandbox;

fn run(sandbox: &Sandbox, args: &[&str]) -> (i32, String) {
    let out = sandbox
        .command()
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the healthpull binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_command_refuses_user_names_that_are_not_element_names() {
    let sandbox = Sandbox::new();
    for bad in ["jack/body-weight", "../x", "1abc", "a b", "_e"] {
        for args in [
            vec!["plan", "fitbit", "--user", bad],
            vec!["fetch", "fitbit", "--user", bad],
            vec![
                "fetch",
                "fitbit",
                "--user",
                bad,
                "--dry-run",
                "--replay",
                ".",
            ],
            vec!["auth", "google-health", "--user", bad, "--timeout", "1"],
            vec!["user", "fitbit", "--user", bad, "--set", "period=7d"],
            vec!["user", "fitbit", "--user", bad, "--delete-token"],
            vec!["igor-install", "fitbit", "--user", "jack", "--user", bad],
            vec!["sync", "fitbit", "--user", bad],
            vec![
                "backfill",
                "fitbit",
                "--user",
                bad,
                "--since",
                "2026-01-01",
                "--dry-run",
            ],
            vec![
                "history",
                "fitbit",
                "--user",
                bad,
                "--output",
                "body-weight",
            ],
        ] {
            let (code, stderr) = run(&sandbox, &args);
            assert_eq!(code, 2, "{args:?}: {stderr}");
            assert!(stderr.contains("user name"), "{args:?}: {stderr}");
        }
    }
    assert!(
        !sandbox.dir.path().join("healthpull.db").exists(),
        "nothing was written"
    );
}

#[test]
fn settings_refuse_unknown_systems_and_undeclared_defaults() {
    let sandbox = Sandbox::new();
    let (code, stderr) = run(&sandbox, &["settings", "withings", "--system", "imperial"]);
    assert_eq!(code, 2, "{stderr}");
    for accepted in ["en_US", "en_GB", "metric"] {
        assert!(stderr.contains(accepted), "{stderr}");
    }
    let (code, stderr) = run(
        &sandbox,
        &[
            "user",
            "google-health",
            "--user",
            "jack",
            "--set",
            "perod=7d",
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("perod") && stderr.contains("period"),
        "the declared keys are listed: {stderr}"
    );
    let (code, stderr) = run(
        &sandbox,
        &["plan", "withings", "--user", "jack", "--system", "imperial"],
    );
    assert_eq!(code, 2, "{stderr}");
    let (code, stderr) = run(
        &sandbox,
        &[
            "user",
            "google-health",
            "--user",
            "jack",
            "--set",
            "period=7d",
        ],
    );
    assert_eq!(code, 0, "a declared default is stored: {stderr}");
    let (code, stderr) = run(&sandbox, &["settings", "withings", "--system", "metric"]);
    assert_eq!(code, 0, "{stderr}");
}

/// A plugin that does not exist is refused before the store is opened: nothing is
/// created for it, live or replayed.
#[test]
fn unknown_plugins_open_no_store() {
    let sandbox = Sandbox::new();
    for args in [
        vec!["fetch", "nosuch", "--user", "jack"],
        vec!["fetch", "nosuch", "--user", "jack", "--dry-run"],
        vec!["plan", "nosuch", "--user", "jack"],
    ] {
        let (code, stderr) = run(&sandbox, &args);
        assert_ne!(code, 0, "{args:?}: {stderr}");
        assert!(
            stderr.contains("unknown plugin `nosuch`"),
            "{args:?}: {stderr}"
        );
    }
    assert!(
        !sandbox.dir.path().join("healthpull.db").exists(),
        "no store was created"
    );
}
