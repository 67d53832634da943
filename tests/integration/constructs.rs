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
  get_distance:
    path: /activities
    output:
      activities-distance:
        each: "$[*]"
        sum_by: dateTime
        fields:
          dateTime: { path: $.start, from: rfc3339, type: date, required: true }
          value: { path: $.meters, type: number, unit: { quantity: distance, from: m }, round: 3, required: true }
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

/// Activities summed into one distance per local day: two runs on the 20th (one of them
/// in the evening west of Greenwich, which is the 21st in UTC) and one on the 22nd.
#[test]
fn entries_of_one_day_are_summed() {
    let activities = r#"[
      {"start": "2026-11-20T07:10:00-08:00", "meters": 5012.5},
      {"start": "2026-11-20T19:30:00-08:00", "meters": 3000},
      {"start": "2026-11-22T08:00:00+01:00", "meters": 10000}
    ]"#;
    let xml = replay_provider(
        "constructs",
        PROVIDER,
        &[("GET__activities.json", activities)],
        &["--methods", "get_distance", "--system", "metric"],
    );
    assert_eq!(
        xml,
        "<jack><activities-distance><dateTime>2026-11-20</dateTime><value>8.013</value></activities-distance><activities-distance><dateTime>2026-11-22</dateTime><value>10.0</value></activities-distance></jack>\n",
        "{xml}"
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

/// A recording's file name as docs/PROVIDER_FORMAT.md spells it (short requests only).
fn recording(key: &str) -> String {
    let slug: String = key
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                b as char
            } else {
                '_'
            }
        })
        .collect();
    assert!(slug.len() <= 150, "{slug}");
    format!("{slug}.json")
}

const PAGING: &str = r#"
name: paging
auth:
  authorize_url: https://paging.invalid/authorize
  token_url: https://paging.invalid/token
  scopes: []
api:
  base_url: https://paging.invalid
methods:
  pages:
    path: /list
    query:
      kind: walk
    pagination: { type: page, param: page, size_param: per_page, size: 2, records: "$[*]" }
    output:
      activities-steps:
        each: "$[*]"
        fields:
          dateTime: { path: $.day, type: date, required: true }
          value: { path: $.steps, type: integer, required: true }
  links:
    path: /items
    pagination: { type: link, param: unused }
    output:
      activities-steps:
        each: "$.items[*]"
        fields:
          dateTime: { path: $.day, type: date, required: true }
          value: { path: $.steps, type: integer, required: true }
  header_token:
    path: /feed
    pagination: { type: cursor, param: X-Page-Token, in: header, next_header: X-Next-Token }
    output:
      activities-steps:
        each: "$.items[*]"
        fields:
          dateTime: { path: $.day, type: date, required: true }
          value: { path: $.steps, type: integer, required: true }
  json_cursor:
    verb: POST
    path: /search
    body:
      json: { query: steps }
    pagination: { type: cursor, param: cursor, in: json, next: $.next }
    output:
      activities-steps:
        each: "$.items[*]"
        fields:
          dateTime: { path: $.day, type: date, required: true }
          value: { path: $.steps, type: integer, required: true }
"#;

fn day(d: u32, steps: u32) -> String {
    format!(r#"{{"day": "2026-11-{d:02}", "steps": {steps}}}"#)
}

#[test]
fn every_kind_of_paging_reaches_the_last_page() {
    // Pages by number, counted by every match of `$[*]`, the query in one order.
    let pages = replay_provider(
        "paging",
        PAGING,
        &[
            (
                &recording("GET /list?kind=walk&page=1&per_page=2"),
                &format!("[{}, {}]", day(1, 10), day(2, 20)),
            ),
            (
                &recording("GET /list?kind=walk&page=2&per_page=2"),
                &format!("[{}, {}]", day(3, 30), day(4, 40)),
            ),
            (
                &recording("GET /list?kind=walk&page=3&per_page=2"),
                &format!("[{}]", day(5, 50)),
            ),
        ],
        &["--methods", "pages"],
    );
    assert_eq!(pages.matches("<activities-steps>").count(), 5, "{pages}");
    // The `rel="next"` URL of the Link header, until an answer has none.
    let link_headers = "Link: <https://paging.invalid/items?after=b2>; rel=\"next\", <https://paging.invalid/items>; rel=\"first\"\n";
    let links = replay_provider(
        "paging",
        PAGING,
        &[
            (
                &recording("GET /items"),
                &format!(r#"{{"items": [{}]}}"#, day(6, 60)),
            ),
            (
                &format!("{}.headers", recording("GET /items")),
                link_headers,
            ),
            (
                &recording("GET /items?after=b2"),
                &format!(r#"{{"items": [{}]}}"#, day(7, 70)),
            ),
        ],
        &["--methods", "links"],
    );
    assert!(
        links.contains("2026-11-06") && links.contains("2026-11-07"),
        "{links}"
    );
    // A token in an answer header, sent back in a request header.
    let tokens = replay_provider(
        "paging",
        PAGING,
        &[
            (
                &recording("GET /feed"),
                &format!(r#"{{"items": [{}]}}"#, day(8, 80)),
            ),
            (
                &format!("{}.headers", recording("GET /feed")),
                "X-Next-Token: t2\n",
            ),
            (
                &recording("GET /feed X-Page-Token: t2"),
                &format!(r#"{{"items": [{}]}}"#, day(9, 90)),
            ),
        ],
        &["--methods", "header_token"],
    );
    assert!(
        tokens.contains("2026-11-08") && tokens.contains("2026-11-09"),
        "{tokens}"
    );
    // A cursor in the answer, sent back as a member of the JSON body.
    let json = replay_provider(
        "paging",
        PAGING,
        &[
            (
                &recording(r#"POST /search#{"query":"steps"}"#),
                &format!(r#"{{"items": [{}], "next": "c2"}}"#, day(10, 100)),
            ),
            (
                &recording(r#"POST /search#{"query":"steps","cursor":"c2"}"#),
                &format!(r#"{{"items": [{}]}}"#, day(11, 110)),
            ),
        ],
        &["--methods", "json_cursor"],
    );
    assert!(
        json.contains("2026-11-10") && json.contains("2026-11-11"),
        "{json}"
    );
}
