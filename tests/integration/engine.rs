//! Tests: engine.

use std::path::PathBuf;

use crate::support::env::{Sandbox, root};

/// `schemas/provider.schema.json` is what the Rust types generate; regenerate it with
/// `HEALTHPULL_WRITE_SCHEMA=1 cargo test --test integration provider_schema`.
#[test]
fn provider_schema_is_in_sync_with_the_rust_types() {
    let path = root().join("schemas/provider.schema.json");
    let generated = healthpull::provider::provider_schema_text();
    if std::env::var_os("HEALTHPULL_WRITE_SCHEMA").is_some() && std::env::var_os("CI").is_none() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "schemas/provider.schema.json is stale: run HEALTHPULL_WRITE_SCHEMA=1 cargo test --test integration provider_schema"
    );
}

/// Runs the binary with arguments and optional stdin; returns (exit code, stdout, stderr).
pub fn run(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    let sandbox = Sandbox::new();
    let mut cmd = sandbox.command();
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("the healthpull binary runs");
    {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes())
                .expect("stdin accepts input");
        }
    }
    let out = child
        .wait_with_output()
        .expect("the healthpull binary finishes");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/check").join(name)
}

/// Error text with the repository's location left out, so it reads the same everywhere.
fn relative(text: &str) -> String {
    text.replace(&format!("{}/", root().display()), "")
}

#[test]
fn check_reports_every_error_of_every_file_with_positions() {
    let broken = fixture("broken.yaml");
    let structure = fixture("structure.yaml");
    let (code, stdout, stderr) = run(
        &[
            "check",
            broken.to_str().unwrap(),
            structure.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 1, "stdout: {stdout}");
    insta::assert_snapshot!(relative(&stderr));
}

#[test]
fn check_accepts_every_shipped_provider() {
    let (code, stdout, stderr) = run(&["check"], None);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("provider file(s) ok"), "{stdout}");
}

#[test]
fn check_never_panics_on_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        ("empty.yaml", ""),
        ("list.yaml", "- 1\n- 2\n"),
        ("scalar.yaml", "just text\n"),
        ("tabs.yaml", "name:\tx\n\t- y\n"),
        ("unclosed.yaml", "name: x\nauth: {authorize_url: [\n"),
        ("two-docs.yaml", "name: a\n---\nname: b\n"),
        ("alias.yaml", "a: &x {b: 1}\nc: *x\nname: 3\n"),
        (
            "deep.yaml",
            &format!("name: {}1{}\n", "[".repeat(200), "]".repeat(200)),
        ),
        ("binary.yaml", "\u{0}\u{1}\u{2}name: \u{7f}\n"),
    ];
    for (name, text) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let (code, _, stderr) = run(&["check", path.to_str().unwrap()], None);
        assert_eq!(code, 1, "{name} must be refused: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("{name}:")),
            "{name}: the error names the file: {stderr}"
        );
    }
}

#[test]
fn to_xml_prints_what_igor_stores() {
    let input = r#"{"weight":[{"bmi":23.1,"date":"2019-03-01","logId":1551400000000,"source":"Aria","time":"07:12:30","weight":75.3}]}"#;
    let (code, stdout, stderr) = run(&["to-xml", "--tag", "jack"], Some(input));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "<jack><weight><bmi>23.1</bmi><date>2019-03-01</date><logId>1551400000000</logId><source>Aria</source><time>07:12:30</time><weight>75.3</weight></weight></jack>\n"
    );
    let (code, _, stderr) = run(&["to-xml", "--tag", "x"], Some("{not json"));
    assert_eq!(code, 1);
    assert!(stderr.contains("not JSON"), "{stderr}");
}
