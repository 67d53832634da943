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
    replay_provider_in(&[], name, provider, answers, args)
}

/// [`replay_provider`] with environment variables set for the run (`TZ`).
pub(crate) fn replay_provider_in(
    env: &[(&str, &str)],
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
        .envs(env.iter().copied())
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A provider file for a test: `name` on `https://NAME.invalid`, with `methods` (YAML
/// indented under `methods:`).
pub(crate) fn provider_file(name: &str, methods: &str) -> String {
    format!(
        "name: {name}\nauth:\n  authorize_url: https://{name}.invalid/authorize\n  token_url: https://{name}.invalid/token\n  scopes: []\napi:\n  base_url: https://{name}.invalid\nmethods:{methods}"
    )
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

fn provider() -> String {
    provider_file(
        "constructs",
        r#"
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
"#,
    )
}

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
        &provider(),
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
        &provider(),
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
        &provider(),
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
    std::fs::write(providers.join("constructs.yaml"), provider()).unwrap();
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

fn paging() -> String {
    provider_file(
        "paging",
        r#"
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
"#,
    )
}

fn day(d: u32, steps: u32) -> String {
    format!(r#"{{"day": "2026-11-{d:02}", "steps": {steps}}}"#)
}

/// Replays `method` of the paging provider over `pages`: each a request key (as
/// docs/PROVIDER_FORMAT.md spells it), the answer, and the answer's headers if any;
/// returns the days mapped, in order.
fn paged(method: &str, pages: &[(&str, String, Option<&str>)]) -> Vec<String> {
    let mut files: Vec<(String, String)> = Vec::new();
    for (key, body, headers) in pages {
        files.push((recording(key), body.clone()));
        if let Some(h) = headers {
            files.push((format!("{}.headers", recording(key)), (*h).to_owned()));
        }
    }
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(f, b)| (f.as_str(), b.as_str()))
        .collect();
    let xml = replay_provider("paging", &paging(), &files, &["--methods", method]);
    xml.split("<dateTime>")
        .skip(1)
        .filter_map(|rest| rest.split('<').next())
        .map(str::to_owned)
        .collect()
}

fn items(days: &[(u32, u32)], more: &str) -> String {
    let list: Vec<String> = days.iter().map(|(d, s)| day(*d, *s)).collect();
    format!(r#"{{"items": [{}]{more}}}"#, list.join(", "))
}

#[test]
fn every_kind_of_paging_reaches_the_last_page() {
    // Pages by number, counted by every match of `$[*]`, the query in one order.
    let list = |days: &[(u32, u32)]| {
        let list: Vec<String> = days.iter().map(|(d, s)| day(*d, *s)).collect();
        format!("[{}]", list.join(", "))
    };
    let pages = paged(
        "pages",
        &[
            (
                "GET /list?kind=walk&page=1&per_page=2",
                list(&[(1, 10), (2, 20)]),
                None,
            ),
            (
                "GET /list?kind=walk&page=2&per_page=2",
                list(&[(3, 30), (4, 40)]),
                None,
            ),
            (
                "GET /list?kind=walk&page=3&per_page=2",
                list(&[(5, 50)]),
                None,
            ),
        ],
    );
    assert_eq!(pages.len(), 5, "{pages:?}");
    // The `rel="next"` URL of the Link header, until an answer has none.
    let links = paged(
        "links",
        &[
            (
                "GET /items",
                items(&[(6, 60)], ""),
                Some(
                    "Link: <https://paging.invalid/items?after=b2>; rel=\"next\", <https://paging.invalid/items>; rel=\"first\"\n",
                ),
            ),
            ("GET /items?after=b2", items(&[(7, 70)], ""), None),
        ],
    );
    assert_eq!(links, ["2026-11-06", "2026-11-07"]);
    // A token in an answer header, sent back in a request header.
    let tokens = paged(
        "header_token",
        &[
            (
                "GET /feed",
                items(&[(8, 80)], ""),
                Some("X-Next-Token: t2\n"),
            ),
            ("GET /feed X-Page-Token: t2", items(&[(9, 90)], ""), None),
        ],
    );
    assert_eq!(tokens, ["2026-11-08", "2026-11-09"]);
    // A cursor in the answer, sent back as a member of the JSON body.
    let json = paged(
        "json_cursor",
        &[
            (
                r#"POST /search#{"query":"steps"}"#,
                items(&[(10, 100)], r#", "next": "c2""#),
                None,
            ),
            (
                r#"POST /search#{"query":"steps","cursor":"c2"}"#,
                items(&[(11, 110)], ""),
                None,
            ),
        ],
    );
    assert_eq!(json, ["2026-11-10", "2026-11-11"]);
}
