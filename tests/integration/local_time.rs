//! Every date is the user's own: the user's time zone decides which day `today` is, and
//! mapped times land on the day they were recorded, at the offset they were recorded in.

use std::process::Output;

use serde_json::{Value, json};

use crate::server::{PLUGIN, Setup, USER, World};
use crate::support::env::Sandbox;

fn run(sandbox: &Sandbox, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = sandbox.command();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the healthpull binary runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The civil days a `get_bodyweight` plan of Google Health asks for, at 17:00 in Los
/// Angeles (01:00 UTC the next day).
fn planned_day(sandbox: &Sandbox, env: &[(&str, &str)], user: &str) -> String {
    let out = run(
        sandbox,
        env,
        &[
            "plan",
            "google-health",
            "--user",
            user,
            "--methods",
            "get_bodyweight",
            "--now",
            "2026-11-23T01:00:00Z",
        ],
    );
    let line: Value = serde_json::from_str(stdout(&out).lines().next().expect("one request"))
        .expect("a JSON request");
    let url = line["url"].as_str().expect("a URL").to_owned();
    let query = url::Url::parse(&url).expect("a URL");
    let filter = query
        .query_pairs()
        .find(|(k, _)| k == "filter")
        .map(|(_, v)| v.into_owned())
        .expect("a filter");
    // `... civil_time >= "2026-11-22T00:00:00" AND ... < "2026-11-23T00:00:00"`
    filter
        .split('"')
        .nth(1)
        .and_then(|start| start.get(..10))
        .expect("a start day")
        .to_owned()
}

#[test]
fn an_evening_in_los_angeles_asks_for_that_day() {
    let sandbox = Sandbox::new();
    // No zone set and the machine in UTC: it is already the 23rd.
    assert_eq!(planned_day(&sandbox, &[], "jack"), "2026-11-23");
    // The machine's zone decides when the user set none.
    assert_eq!(
        planned_day(&sandbox, &[("TZ", "America/Los_Angeles")], "jack"),
        "2026-11-22"
    );
    // The user's own zone decides wherever the machine is.
    let set = run(
        &sandbox,
        &[],
        &[
            "user",
            "google-health",
            "--user",
            "jack",
            "--set",
            "timezone=America/Los_Angeles",
        ],
    );
    stdout(&set);
    assert_eq!(planned_day(&sandbox, &[], "jack"), "2026-11-22");
    assert_eq!(
        planned_day(&sandbox, &[("TZ", "Asia/Tokyo")], "jack"),
        "2026-11-22"
    );
    // Another user of the same machine keeps the machine's day.
    assert_eq!(planned_day(&sandbox, &[], "jill"), "2026-11-23");
}

#[test]
fn a_time_zone_that_is_not_one_is_refused_and_nothing_changes() {
    let sandbox = Sandbox::new();
    let args = |zone: &str| {
        vec![
            "user".to_owned(),
            "google-health".to_owned(),
            "--user".to_owned(),
            "jack".to_owned(),
            "--set".to_owned(),
            format!("timezone={zone}"),
        ]
    };
    let ok = sandbox
        .command()
        .args(args("Europe/Amsterdam"))
        .output()
        .expect("runs");
    stdout(&ok);
    for bad in ["PST", "Europe/Atlantis", "+01:00"] {
        let out = sandbox.command().args(args(bad)).output().expect("runs");
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("unknown time zone `{bad}`")) && err.contains("IANA"),
            "{err}"
        );
    }
    let shown = run(&sandbox, &[], &["user", "google-health", "--user", "jack"]);
    let shown: Value = serde_json::from_str(&stdout(&shown)).expect("JSON settings");
    assert_eq!(shown["timezone"], json!("Europe/Amsterdam"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_settings_and_the_setup_page_check_the_time_zone() {
    let world = World::start(Setup::default()).await;
    let path = format!("identities/{USER}/plugindata/{PLUGIN}/timezone");
    let reply = world
        .get(&format!(
            "/plugin/{PLUGIN}/userSettings?user={USER}&timezone=America%2FLos_Angeles"
        ))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        world.stored(&path).await,
        Some(json!("America/Los_Angeles"))
    );
    let reply = world
        .get(&format!(
            "/plugin/{PLUGIN}/userSettings?user={USER}&timezone=Mars%2FOlympus"
        ))
        .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(
        reply.body.contains("unknown time zone `Mars/Olympus`"),
        "{reply:?}"
    );
    assert_eq!(
        world.stored(&path).await,
        Some(json!("America/Los_Angeles")),
        "a refused zone changes nothing"
    );
    // The setup page has a row for the zone, with the stored value and the server's zone.
    let page = world
        .get(&format!("/plugin/{PLUGIN}/page/setup.html?user={USER}"))
        .await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("id=\"set-timezone\" name=\"timezone\" value=\"America/Los_Angeles\""),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("this server&#39;s zone, UTC")
            || page.body.contains("this server's zone, UTC")
    );
}

/// A provider written for this test: one answer with instants east and west of
/// Greenwich, an instant in UTC, a naive local time, and records with offsets of their
/// own, mapped into `heart-rate` (an instant with its offset) and `glucose`.
fn provider() -> String {
    crate::constructs::provider_file(
        "zones",
        r#"
  samples:
    path: /samples
    output:
      heart-rate:
        each: "$.samples[*]"
        fields:
          dateTime: { path: $.at, from: rfc3339, type: date, required: true }
          time: { path: $.at, from: rfc3339, type: time, required: true }
          offset: { path: $.at, from: rfc3339, type: offset }
          value: { path: $.bpm, type: number, required: true }
        sort_by: [dateTime, time]
      glucose:
        each: "$.readings[*]"
        fields:
          value: { path: $.value, type: number, required: true }
          unit: { const: mg/dL, required: true }
          dateTime: { path: $.displayTime, from: local_datetime, offset: $.zone, type: date, required: true }
          time: { path: $.displayTime, from: local_datetime, offset: $.zone, type: time, required: true }
          offset: { path: $.displayTime, from: local_datetime, offset: $.zone, type: offset }
"#,
    )
}

const ANSWER: &str = r#"{
  "samples": [
    {"at": "2026-11-20T19:45:00-08:00", "bpm": 61},
    {"at": "2026-11-21T07:10:00+09:00", "bpm": 72},
    {"at": "2026-11-21T03:45:00Z", "bpm": 58}
  ],
  "readings": [
    {"displayTime": "2026-11-22T07:00:05", "value": 104},
    {"displayTime": "2026-11-22T23:30:00", "value": 131, "zone": "-05:00"},
    {"displayTime": "2026-07-01T08:00:00", "value": 99}
  ]
}"#;

#[test]
fn times_land_on_the_day_and_offset_they_were_recorded_in() {
    let replay = |zone: &str| {
        crate::constructs::replay_provider_in(
            &[("TZ", zone)],
            "zones",
            &provider(),
            &[("GET__samples.json", ANSWER)],
            &["--methods", "samples"],
        )
    };
    let la = replay("America/Los_Angeles");
    insta::assert_snapshot!("local_time_los_angeles", la);
    // West of Greenwich at 19:45 stays on the 20th, whatever the user's zone.
    assert!(
        la.contains("<dateTime>2026-11-20</dateTime><time>19:45:00</time><offset>-08:00</offset><value>61</value>"),
        "{la}"
    );
    let amsterdam = replay("Europe/Amsterdam");
    insta::assert_snapshot!("local_time_amsterdam", amsterdam);
    assert!(
        amsterdam.contains("<dateTime>2026-11-21</dateTime><time>04:45:00</time><offset>+01:00</offset><value>58</value>"),
        "{amsterdam}"
    );
}

/// A connection's host (`api.hosts`, the user's `host` setting) moves the API calls of
/// that user, and only that user's; a host the provider lacks is refused.
#[test]
fn a_connection_on_another_host_asks_that_host() {
    let sandbox = Sandbox::new();
    let plan = |user: &str| {
        let out = run(
            &sandbox,
            &[],
            &[
                "plan",
                "dexcom",
                "--user",
                user,
                "--now",
                "2026-11-24T09:00:00Z",
            ],
        );
        stdout(&out)
    };
    assert!(plan("jack").contains("\"url\":\"https://api.dexcom.com/v3/users/self/egvs?"));
    let set = run(
        &sandbox,
        &[],
        &["user", "dexcom", "--user", "jack", "--set", "host=eu"],
    );
    stdout(&set);
    assert!(plan("jack").contains("\"url\":\"https://api.dexcom.eu/v3/users/self/egvs?"));
    assert!(plan("jill").contains("\"url\":\"https://api.dexcom.com/v3/users/self/egvs?"));
    let bad = run(
        &sandbox,
        &[],
        &["user", "dexcom", "--user", "jack", "--set", "host=mars"],
    );
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("provider `dexcom` has no host `mars`; its hosts: eu, jp, sandbox"),
        "{err}"
    );
    assert!(
        plan("jack").contains("https://api.dexcom.eu/"),
        "a refused host changes nothing"
    );
}
