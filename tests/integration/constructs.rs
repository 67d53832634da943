//! Format constructs a provider needs beyond selecting and converting: value maps,
//! defaults for values a provider leaves out, durations, and order comparisons in
//! `where`, each through a provider file, `check` and `fetch --dry-run --replay`.

use std::path::Path;

use crate::support::env::Sandbox;

/// Writes `provider` as `providers/NAME.yaml` and `answers` as recordings, checks the
/// file and replays `method`; returns the dry-run XML.
pub(crate) fn replay_provider(
    name: &str,
    provider: &str,
    answers: &[(&str, &str)],
    args: &[&str],
) -> String {
    let sandbox = Sandbox::new();
    let dir = sandbox.dir.path();
    let providers = dir.join("providers");
    let recordings = dir.join("recordings");
    std::fs::create_dir_all(&providers).unwrap();
    std::fs::create_dir_all(&recordings).unwrap();
    std::fs::write(providers.join(format!("{name}.yaml")), provider).unwrap();
    for (file, body) in answers {
        std::fs::write(recordings.join(file), body).unwrap();
    }
    let config = write_config(dir, &providers);
    let check = sandbox
        .command_without_config()
        .arg("--config")
        .arg(&config)
        .arg("check")
        .arg(providers.join(format!("{name}.yaml")))
        .output()
        .expect("runs");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let out = sandbox
        .command_without_config()
        .arg("--config")
        .arg(&config)
        .args([
            "fetch",
            name,
            "--user",
            "jack",
            "--now",
            "2026-11-24T09:00:00Z",
        ])
        .args(args)
        .args(["--dry-run", "--replay"])
        .arg(&recordings)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write_config(dir: &Path, providers: &Path) -> std::path::PathBuf {
    let config = dir.join("providers.yaml");
    std::fs::write(
        &config,
        format!(
            "providers_dir: {}\nstore: {{kind: embedded, path: healthpull.db}}\n",
            serde_json::to_string(providers).expect("a path")
        ),
    )
    .unwrap();
    config
}

const PROVIDER: &str = r#"
name: constructs
auth:
  authorize_url: https://constructs.invalid/authorize
  token_url: https://constructs.invalid/token
  scopes: []
api:
  base_url: https://constructs.invalid
methods:
  get_sleep:
    path: /sleep
    output:
      sleep:
        each: "$.periods[*]"
        where:
          # Naps under 20 minutes are left out; so is anything before November.
          - { path: $.duration, gte: 1200 }
          - { path: $.day, gte: "2026-11-01" }
        fields:
          dateOfSleep: { path: $.day, type: date, required: true }
          isMainSleep: { path: $.type, map: { long_sleep: true, sleep: false, late_nap: false } }
          minutesAsleep: { path: $.duration, from: duration, scale: 0.016666666666666666, round: 0 }
          timeInBed: { path: $.in_bed, from: duration, scale: 0.016666666666666666, round: 0 }
          score: { path: $.score, type: integer, default: 0 }
  get_steps:
    path: /steps
    output:
      activities-steps:
        each: "$.days[*]"
        fields:
          dateTime: { path: $.date, type: date, required: true }
          # Days without steps come without the value.
          value: { path: $.steps, type: integer, default: 0, required: true }
"#;

const SLEEP: &str = r#"{"periods": [
  {"day": "2026-11-20", "type": "long_sleep", "duration": 26400, "in_bed": "PT7H45M", "score": 81},
  {"day": "2026-11-21", "type": "late_nap", "duration": 1500, "in_bed": "1680s"},
  {"day": "2026-11-21", "type": "sleep", "duration": 600, "in_bed": "PT12M"},
  {"day": "2026-10-31", "type": "long_sleep", "duration": 25000, "in_bed": "PT7H"}
]}"#;

const STEPS: &str = r#"{"days": [
  {"date": "2026-11-20", "steps": 8123},
  {"date": "2026-11-21"},
  {"date": "2026-11-22", "steps": "412"}
]}"#;

#[test]
fn value_maps_defaults_durations_and_comparisons() {
    let sleep = replay_provider(
        "constructs",
        PROVIDER,
        &[("GET__sleep.json", SLEEP)],
        &["--methods", "get_sleep"],
    );
    insta::assert_snapshot!("constructs_sleep", sleep);
    assert!(
        sleep.contains("<dateOfSleep>2026-11-20</dateOfSleep><isMainSleep>true</isMainSleep><minutesAsleep>440.0</minutesAsleep><timeInBed>465.0</timeInBed><score>81</score>"),
        "{sleep}"
    );
    assert!(
        !sleep.contains("2026-10-31") && !sleep.contains("<timeInBed>12"),
        "{sleep}"
    );
    let steps = replay_provider(
        "constructs",
        PROVIDER,
        &[("GET__steps.json", STEPS)],
        &["--methods", "get_steps"],
    );
    insta::assert_snapshot!("constructs_steps", steps);
    assert!(
        steps.contains("<dateTime>2026-11-21</dateTime><value>0</value>"),
        "{steps}"
    );
}

#[test]
fn a_value_the_map_lacks_is_an_error_naming_it() {
    let sandbox = Sandbox::new();
    let dir = sandbox.dir.path();
    let providers = dir.join("providers");
    let recordings = dir.join("recordings");
    std::fs::create_dir_all(&providers).unwrap();
    std::fs::create_dir_all(&recordings).unwrap();
    std::fs::write(providers.join("constructs.yaml"), PROVIDER).unwrap();
    std::fs::write(
        recordings.join("GET__sleep.json"),
        r#"{"periods": [{"day": "2026-11-20", "type": "rest", "duration": 3000, "in_bed": "PT1H"}]}"#,
    )
    .unwrap();
    let config = write_config(dir, &providers);
    let out = sandbox
        .command_without_config()
        .arg("--config")
        .arg(&config)
        .args([
            "fetch",
            "constructs",
            "--user",
            "jack",
            "--methods",
            "get_sleep",
        ])
        .args(["--dry-run", "--replay"])
        .arg(&recordings)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "`\"rest\"` is not one of the values the field maps (long_sleep, sleep, late_nap)"
        ) && err.contains("isMainSleep"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing is printed for a failed fetch"
    );
}
