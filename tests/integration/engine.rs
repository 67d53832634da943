//! Tests: engine.

use std::path::{Path, PathBuf};
use std::process::Command;

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
    let mut cmd = if args.contains(&"--config") {
        sandbox.command_without_config()
    } else {
        sandbox.command()
    };
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

/// Mistakes that would only fail at fetch time are caught by `check`: field types that
/// contradict the sensor schema, fields the schema requires that are not `required`,
/// unknown helpers, helpers with the wrong number of arguments, and values outside an
/// enum, with the allowed values listed.
#[test]
fn check_refuses_what_the_vocabulary_would_refuse_later() {
    let file = fixture("vocabulary.yaml");
    let (code, stdout, stderr) = run(&["check", file.to_str().unwrap()], None);
    assert_eq!(code, 1, "stdout: {stdout}");
    insta::assert_snapshot!(relative(&stderr));
}

/// Every wrong `history` and `identity` is refused with its position, all at once: a
/// history without `range`, `max_days` of 0, above the window or the range's longest,
/// above 1 without an end parameter (declared or taken from the window), missing
/// without a window, settles that are no span or longer than a year, a date that is
/// none, identities naming an unknown field or none, and an output with no date.
#[test]
fn check_refuses_every_wrong_history_with_positions() {
    let file = fixture("history.yaml");
    let (code, stdout, stderr) = run(&["check", file.to_str().unwrap()], None);
    assert_eq!(code, 1, "stdout: {stdout}");
    let expected = concat!(
        "tests/fixtures/check/history.yaml:15:14: `history` needs the method's `range`: sync and backfill ask for days\n",
        "tests/fixtures/check/history.yaml:15:37: `soon` is not a span of time (`90m`, `6h`, `2d`)\n",
        "tests/fixtures/check/history.yaml:15:53: `yesterday` is not a date (YYYY-MM-DD)\n",
        "tests/fixtures/check/history.yaml:28:26: a request covers at least one day\n",
        "tests/fixtures/check/history.yaml:35:26: 31 days is more than the method's window (30)\n",
        "tests/fixtures/check/history.yaml:41:26: without an end parameter in `range`, a request covers one day: `max_days` must be 1\n",
        "tests/fixtures/check/history.yaml:48:14: without an end parameter in `range`, a request covers one day: `max_days` must be 1 (it is the window's 7)\n",
        "tests/fixtures/check/history.yaml:54:14: `history` needs `max_days` (or a `window`): the longest range one request may cover\n",
        "tests/fixtures/check/history.yaml:60:38: `2 days` is not a span of time (`90m`, `6h`, `2d`)\n",
        "tests/fixtures/check/history.yaml:66:38: `400d` is more than 365 days: a day that may still change a year after it ended is never settled\n",
        "tests/fixtures/check/history.yaml:72:26: 200 days is more than the range's longest (`range.max_days`, 100)\n",
        "tests/fixtures/check/history.yaml:78:38: `99999999999999d` is not a span of time (`90m`, `6h`, `2d`)\n",
        "tests/fixtures/check/history.yaml:84:52: `2009-13-01` is not a date (YYYY-MM-DD)\n",
        "tests/fixtures/check/history.yaml:98:19: `grpid` is not a field of this output\n",
        "tests/fixtures/check/history.yaml:110:19: `identity` names no field: leave it out for the entry's time fields and `source`\n",
        "tests/fixtures/check/history.yaml:117:7: `history` archives entries by their day: output `food-units` has no field of type date, datetime or instant\n",
        "16 error(s) in 1 of 1 file(s)\n",
    );
    assert_eq!(relative(&stderr), expected);
}

/// docs/SENSORS.md describes exactly the outputs of the sensor schema, and every output
/// states its unit and its time basis.
#[test]
fn the_sensor_vocabulary_is_documented_output_by_output() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("schemas/sensors.schema.json")).unwrap(),
    )
    .unwrap();
    let doc = std::fs::read_to_string(root().join("docs/SENSORS.md")).unwrap();
    let outputs = schema["properties"].as_object().expect("outputs");
    assert!(
        schema.get("patternProperties").is_none(),
        "no name patterns"
    );
    let documented: Vec<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    for (name, output) in outputs {
        assert!(
            documented.contains(&name.as_str()),
            "{name} is not in docs/SENSORS.md"
        );
        for key in ["x-unit", "x-time"] {
            assert!(output.get(key).is_some(), "{name} has no {key}");
        }
    }
    for name in &documented {
        assert!(
            outputs.contains_key(*name),
            "docs/SENSORS.md lists {name}, the schema does not"
        );
    }
    for name in [
        "body-weight",
        "body-fat",
        "body-bmi",
        "blood-pressure",
        "glucose",
        "heart-rate",
        "resting-heart-rate",
        "heart-rate-zones",
        "hrv",
        "spo2",
        "respiratory-rate",
        "body-temperature",
        "skin-temperature",
        "activities-steps",
        "activities-distance",
        "activities-floors",
        "activities-calories",
        "active-minutes",
        "steps",
        "sleep",
        "sleep-score",
        "workouts",
        "readiness",
        "recovery",
        "strain",
    ] {
        assert!(outputs.contains_key(name), "the vocabulary lacks {name}");
    }
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
        // Block nesting that overflowed the stack, and the same through aliases.
        (
            "deep-block.yaml",
            &(0..1400)
                .map(|n| format!("{}a:\n", " ".repeat(n)))
                .collect::<String>(),
        ),
        (
            "deep-aliases.yaml",
            &(1..5000).fold(String::from("a0: &a0 [x]\n"), |text, n| {
                format!("{text}a{n}: &a{n} [*a{}]\n", n - 1)
            }),
        ),
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

// ---------------------------------------------------------------------------------------
// Hostile provider, config and recording files.
// ---------------------------------------------------------------------------------------

/// A "billion laughs" file: nine aliases per level, nine levels (9^9 strings, gigabytes
/// once expanded), in 340 bytes.
fn alias_bomb() -> String {
    let mut text = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for (level, below) in ["b", "c", "d", "e", "f", "g", "h", "i"]
        .iter()
        .zip(["a", "b", "c", "d", "e", "f", "g", "h"])
    {
        let aliases = vec![format!("*{below}"); 9].join(",");
        text.push_str(&format!("{level}: &{level} [{aliases}]\n"));
    }
    text
}

/// A provider file whose aliases expand without bound is refused at
/// the alias that crosses the budget, with file, line and column, before it allocates.
#[test]
fn check_refuses_an_alias_bomb_at_the_alias() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = alias_bomb();
    assert!(bomb.len() < 400, "{}", bomb.len());
    let path = dir.path().join("bomb.yaml");
    std::fs::write(&path, &bomb).unwrap();
    let (code, stdout, stderr) = run(&["check", path.to_str().unwrap()], None);
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    // Levels a-d hold 8289 nodes from aliases; the first `*d` of line 5 (column 8) crosses 10,000.
    let expected = format!(
        "{}:5:8: aliases expand into more than 10000 nodes",
        path.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(!stderr.contains("memory allocation"), "{stderr}");
}

/// The config file is read by the same route, with the same limits.
#[test]
fn config_refuses_an_alias_bomb_at_the_alias() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("healthpull.yaml");
    std::fs::write(&path, format!("{}listen: 127.0.0.1:1\n", alias_bomb())).unwrap();
    let (code, stdout, stderr) = run(&["--config", path.to_str().unwrap(), "check"], None);
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    let expected = format!(
        "{}:5:8: aliases expand into more than 10000 nodes",
        path.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

/// Aliases within the budget still work, in both kinds of file (the
/// shipped Fitbit provider uses them for shared parameters).
#[test]
fn aliases_within_the_budget_are_expanded() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("providers")).unwrap();
    std::fs::copy(
        root().join("providers/fitbit.yaml"),
        dir.path().join("providers/fitbit.yaml"),
    )
    .unwrap();
    let path = dir.path().join("healthpull.yaml");
    std::fs::write(
        &path,
        "providers_dir: &dir providers\nschedule: {enabled: false, interval_seconds: 60}\n\
         plugins:\n  fitbit: &plugin {provider: fitbit}\n  fitbit2: *plugin\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(&["--config", path.to_str().unwrap(), "check"], None);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("1 provider file(s) ok"), "{stdout}");
}

/// Files over the size limit are refused before they are parsed.
#[test]
fn yaml_files_over_the_size_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let limit = healthpull::provider::yaml::MAX_FILE_BYTES;
    let big = format!("name: big\n#{}\n", "x".repeat(limit));
    let provider = dir.path().join("big.yaml");
    std::fs::write(&provider, &big).unwrap();
    let (code, _, stderr) = run(&["check", provider.to_str().unwrap()], None);
    assert_eq!(code, 1, "{stderr}");
    let expected = format!(
        "{}:1:1: the file is larger than {limit} bytes",
        provider.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");

    let config = dir.path().join("healthpull.yaml");
    std::fs::write(&config, &big).unwrap();
    let (code, _, stderr) = run(&["--config", config.to_str().unwrap(), "check"], None);
    assert_eq!(code, 1, "{stderr}");
    let expected = format!(
        "{}:1:1: the file is larger than {limit} bytes",
        config.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

/// The recording `fetch fitbit --methods body --set date=2026-10-30` reads.
const BODY_RECORDING: &str = "GET__1_user_-_body_date_2026-10-30.json.json";

/// `fetch --dry-run --replay DIR` of the Fitbit `body` method, stopped (and failed)
/// should it hang.
fn replay_body(dir: &Path) -> (i32, String, String) {
    let dir = dir.to_str().unwrap();
    run_or_fail_on_hang(&[
        "fetch",
        "fitbit",
        "--user",
        "jack",
        "--methods",
        "body",
        "--set",
        "date=2026-10-30",
        "--layout",
        "raw",
        "--now",
        "2026-11-24T09:00:00Z",
        "--dry-run",
        "--replay",
        dir,
    ])
}

/// Runs the binary without stdin; a run that does not end within a minute is stopped
/// and fails the test (what a blocking read of a FIFO would do).
fn run_or_fail_on_hang(args: &[&str]) -> (i32, String, String) {
    let sandbox = Sandbox::new();
    let mut child = if args.contains(&"--config") {
        sandbox.command_without_config()
    } else {
        sandbox.command()
    }
    .args(args)
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("the healthpull binary runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().expect("waiting for healthpull").is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().expect("stopping healthpull");
            child.wait().expect("reaping healthpull");
            panic!("healthpull {args:?} hangs");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("healthpull's output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo (coreutils) runs");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// A FIFO in place of a recording (or of its status) is refused,
/// naming the file, instead of blocking the process forever.
#[test]
fn replay_refuses_a_fifo_recording() {
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join(BODY_RECORDING);
    mkfifo(&recording);
    let (code, stdout, stderr) = replay_body(dir.path());
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    let expected = format!("{} is a FIFO, not a regular file", recording.display());
    assert!(stderr.contains(&expected), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let source = root()
        .join("tests/recordings/fitbit/body")
        .join(BODY_RECORDING);
    std::fs::copy(source, dir.path().join(BODY_RECORDING)).unwrap();
    let status = dir.path().join(format!("{BODY_RECORDING}.status"));
    mkfifo(&status);
    let (code, _, stderr) = replay_body(dir.path());
    assert_eq!(code, 1, "{stderr}");
    let expected = format!("{} is a FIFO, not a regular file", status.display());
    assert!(stderr.contains(&expected), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(BODY_RECORDING)).unwrap();
    let (code, _, stderr) = replay_body(dir.path());
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("is a directory, not a regular file"),
        "{stderr}"
    );
}

/// Provider and config files are read by the same rule, so a
/// FIFO in their place is refused too.
#[test]
fn yaml_files_must_be_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.yaml");
    mkfifo(&fifo);
    let fifo = fifo.to_str().unwrap();
    let (code, _, stderr) = run_or_fail_on_hang(&["check", fifo]);
    assert_eq!(code, 1, "{stderr}");
    let expected = format!("{fifo}:1:1: the file is a FIFO, not a regular file");
    assert!(stderr.contains(&expected), "{stderr}");
    let (code, _, stderr) = run_or_fail_on_hang(&["--config", fifo, "check"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&expected), "{stderr}");
}

/// A `.status` recording holds an HTTP status, 100 to 599.
#[test]
fn replay_accepts_only_http_statuses() {
    let source = root()
        .join("tests/recordings/fitbit/body")
        .join(BODY_RECORDING);
    for (text, accepted) in [
        ("0", false),
        ("99", false),
        ("600", false),
        ("65535", false),
        ("-200", false),
        ("2OO", false),
        ("", false),
        ("100\n", true),
        ("200", true),
        (" 404 \n", true),
        ("599", true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(&source, dir.path().join(BODY_RECORDING)).unwrap();
        let status = dir.path().join(format!("{BODY_RECORDING}.status"));
        std::fs::write(&status, text).unwrap();
        let (code, stdout, stderr) = replay_body(dir.path());
        let refused = format!(
            "{} holds `{}`, not an HTTP status (100 to 599)",
            status.display(),
            text.trim()
        );
        assert_eq!(
            stderr.contains(&refused),
            !accepted,
            "{text:?}: code {code}\nstdout: {stdout}\nstderr: {stderr}"
        );
        let succeeded = text.trim() == "200";
        assert_eq!(code == 0, succeeded, "{text:?}: {stderr}");
    }
}
