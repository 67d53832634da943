//! Request parity of `providers/fitbit.yaml` with python-fitbit 0.3.1, the library the
//! old Igor plugin called.
//!
//! Every case of the table is run through `healthpull plan` and through python-fitbit
//! itself (`tests/support/fitbit_requests.py`, one Python process for the whole table,
//! against a loopback stub). Both sides must either send the same requests (verb, path,
//! query and `Accept-Language`) or both refuse the arguments. A few cases pin the
//! deliberate differences documented at the top of the provider file, where we refuse
//! what python-fitbit sent on.
//!
//! The clock is pinned with `--now`; python-fitbit used the host's date, so cases that
//! rely on the default date pass that date explicitly on the Python side.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::{Map, Value, json};

use crate::support::env;

/// The pinned clock of every `plan` run.
const NOW: &str = "2024-01-15T12:00:00Z";

/// What both sides must do with a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Both send the same requests.
    Same,
    /// Both refuse the arguments.
    BothRefuse,
    /// python-fitbit sends a request; we refuse on purpose (see the top of fitbit.yaml).
    OnlyWeRefuse,
}

/// One row of the table.
#[derive(Debug)]
struct Case {
    /// `--methods`, comma-separated.
    methods: &'static str,
    /// `--set` arguments, `key=value`.
    set: &'static [&'static str],
    /// python-fitbit's keyword arguments as a JSON object; `None` means the `set`
    /// values as strings. `{"$date": ..}` and `{"$time": ..}` become date/time objects.
    py: Option<&'static str>,
    expect: Expect,
}

const fn same(methods: &'static str, set: &'static [&'static str]) -> Case {
    Case {
        methods,
        set,
        py: None,
        expect: Expect::Same,
    }
}

const fn same_py(methods: &'static str, set: &'static [&'static str], py: &'static str) -> Case {
    Case {
        methods,
        set,
        py: Some(py),
        expect: Expect::Same,
    }
}

const fn refused(methods: &'static str, set: &'static [&'static str]) -> Case {
    Case {
        methods,
        set,
        py: None,
        expect: Expect::BothRefuse,
    }
}

const fn only_we_refuse(methods: &'static str, set: &'static [&'static str]) -> Case {
    Case {
        methods,
        set,
        py: None,
        expect: Expect::OnlyWeRefuse,
    }
}

/// Every read method of python-fitbit 0.3.1 (section 3 of the reference notes).
const READ_METHODS: &[&str] = &[
    "get_bodyweight",
    "get_bodyfat",
    "time_series",
    "intraday_time_series",
    "body",
    "activities",
    "foods_log",
    "foods_log_water",
    "sleep",
    "heart",
    "bp",
    "glucose",
    "activity_stats",
    "recent_activities",
    "favorite_activities",
    "frequent_activities",
    "recent_foods",
    "favorite_foods",
    "frequent_foods",
    "user_profile_get",
    "get_devices",
    "get_alarms",
    "get_sleep",
    "get_meals",
    "activities_list",
    "activity_detail",
    "search_foods",
    "food_detail",
    "food_units",
    "get_friends",
    "get_badges",
    "get_friends_leaderboard",
    "list_subscriptions",
    "body_fat_goal",
    "body_weight_goal",
    "activities_daily_goal",
    "activities_weekly_goal",
    "food_goal",
    "water_goal",
];

const CASES: &[Case] = &[
    // Body logs: the default date is the clock's today, as a date.
    same_py(
        "get_bodyweight",
        &[],
        r#"{"base_date": {"$date": "2024-01-15"}}"#,
    ),
    same("get_bodyweight", &["base_date=2024-01-10"]),
    same_py(
        "get_bodyweight",
        &["base_date=2024-01-10", "period=1m"],
        r#"{"base_date": {"$date": "2024-01-10"}, "period": "1m"}"#,
    ),
    same("get_bodyweight", &["base_date=2024-01-10", "period=7d"]),
    same("get_bodyweight", &["base_date=2023-12-01", "period=max"]),
    same(
        "get_bodyweight",
        &["base_date=2024-01-01", "end_date=2024-01-31"],
    ),
    same(
        "get_bodyweight",
        &["base_date=2024-01-10", "user_id=22ABCD"],
    ),
    same("get_bodyweight", &["base_date=2024-01-10", "user_id="]),
    // An explicit `today` is the clock's date here; python-fitbit sent the word itself
    // (a documented difference), so the Python side is given the date.
    same_py(
        "get_bodyweight",
        &["base_date=today"],
        r#"{"base_date": {"$date": "2024-01-15"}}"#,
    ),
    same(
        "get_bodyweight",
        &["base_date=2024-01-01", "period=", "end_date=2024-01-07"],
    ),
    refused(
        "get_bodyweight",
        &["base_date=2024-01-10", "period=7d", "end_date=2024-01-17"],
    ),
    refused("get_bodyweight", &["base_date=2024-01-10", "period=2w"]),
    same_py(
        "get_bodyfat",
        &[],
        r#"{"base_date": {"$date": "2024-01-15"}}"#,
    ),
    same("get_bodyfat", &["base_date=2024-01-10", "period=30d"]),
    same(
        "get_bodyfat",
        &["base_date=2024-01-01", "end_date=2024-01-30"],
    ),
    same(
        "get_bodyfat",
        &["base_date=2024-01-10", "period=1y", "user_id=XYZ789"],
    ),
    refused("get_bodyfat", &["base_date=2024-01-10", "period=5d"]),
    refused(
        "get_bodyfat",
        &["period=1w", "end_date=2024-01-17", "user_id=XYZ789"],
    ),
    same_py(
        "get_bodyweight,get_bodyfat",
        &["period=1m"],
        r#"{"base_date": {"$date": "2024-01-15"}, "period": "1m"}"#,
    ),
    // Time series: the default date is the word `today`; a period or end date is needed.
    same("time_series", &["resource=activities/steps", "period=7d"]),
    same(
        "time_series",
        &["resource=body/weight", "base_date=2024-01-10", "period=1m"],
    ),
    same(
        "time_series",
        &[
            "resource=activities/heart",
            "base_date=2024-01-01",
            "end_date=2024-01-14",
        ],
    ),
    same(
        "time_series",
        &[
            "resource=sleep/minutesAsleep",
            "period=max",
            "user_id=22ABCD",
        ],
    ),
    same("time_series", &["resource=foods/log/water", "period=1w"]),
    same(
        "time_series",
        &["resource=activities/tracker/distance", "period=3m"],
    ),
    same(
        "time_series",
        &["resource=body/fat", "base_date=today", "period=1d"],
    ),
    same(
        "time_series",
        &["resource=foods/log/caloriesIn", "period=6m", "user_id="],
    ),
    same(
        "time_series",
        &[
            "resource=activities/minutesVeryActive",
            "period=",
            "end_date=2024-01-14",
            "base_date=2024-01-08",
        ],
    ),
    refused("time_series", &["resource=activities/steps"]),
    refused(
        "time_series",
        &[
            "resource=activities/steps",
            "period=7d",
            "end_date=2024-01-20",
        ],
    ),
    refused("time_series", &["resource=activities/steps", "period=2d"]),
    refused("time_series", &["period=7d"]),
    // Intraday: always `-`, always `1d`, both times or neither.
    same("intraday_time_series", &["resource=activities/heart"]),
    same(
        "intraday_time_series",
        &[
            "resource=activities/steps",
            "base_date=2024-01-10",
            "detail_level=15min",
        ],
    ),
    same(
        "intraday_time_series",
        &[
            "resource=activities/heart",
            "detail_level=1sec",
            "start_time=08:00",
            "end_time=09:30",
        ],
    ),
    same(
        "intraday_time_series",
        &[
            "resource=activities/calories",
            "start_time=08:00:00",
            "end_time=20:00:00",
        ],
    ),
    same_py(
        "intraday_time_series",
        &[
            "resource=activities/distance",
            "base_date=2024-01-10",
            "start_time=07:15",
            "end_time=07:45",
        ],
        r#"{"resource": "activities/distance", "base_date": {"$date": "2024-01-10"},
            "start_time": {"$time": "07:15"}, "end_time": {"$time": "07:45"}}"#,
    ),
    same(
        "intraday_time_series",
        &["resource=activities/floors", "start_time=", "end_time="],
    ),
    refused(
        "intraday_time_series",
        &["resource=activities/heart", "start_time=08:00"],
    ),
    refused(
        "intraday_time_series",
        &["resource=activities/heart", "end_time=09:00"],
    ),
    refused(
        "intraday_time_series",
        &["resource=activities/heart", "start_time=08:00", "end_time="],
    ),
    refused(
        "intraday_time_series",
        &["resource=activities/heart", "detail_level=5min"],
    ),
    refused("intraday_time_series", &["detail_level=1min"]),
    // Collection readers: one day, the default date is the clock's today.
    same_py("body", &[], r#"{"date": {"$date": "2024-01-15"}}"#),
    same("activities", &["date=2024-01-10"]),
    same("foods_log", &["date=2024-01-10", "user_id=22ABCD"]),
    same_py(
        "foods_log_water",
        &[],
        r#"{"date": {"$date": "2024-01-15"}}"#,
    ),
    same_py(
        "sleep",
        &["date=2023-12-31"],
        r#"{"date": {"$date": "2023-12-31"}}"#,
    ),
    same("heart", &["date=2024-01-10"]),
    same_py(
        "bp",
        &["user_id="],
        r#"{"date": {"$date": "2024-01-15"}, "user_id": ""}"#,
    ),
    same("glucose", &["date=2024-01-10", "user_id=22ABCD"]),
    // Activities.
    same("activity_stats", &[]),
    same("activity_stats", &["qualifier=recent", "user_id=22ABCD"]),
    same("activity_stats", &["qualifier=favorite"]),
    same("activity_stats", &["qualifier=frequent"]),
    refused("activity_stats", &["qualifier=weekly"]),
    same("recent_activities", &["user_id=22ABCD"]),
    same("favorite_activities", &[]),
    same("frequent_activities", &["user_id="]),
    same("activities_list", &[]),
    same("activity_detail", &["activity_id=90009"]),
    refused("activity_detail", &[]),
    // Foods.
    same("recent_foods", &[]),
    same("favorite_foods", &["user_id=22ABCD"]),
    same("frequent_foods", &[]),
    same("get_meals", &[]),
    same("search_foods", &["query=banana"]),
    same("search_foods", &["query=chicken breast"]),
    same("search_foods", &["query=fish & chips"]),
    same("search_foods", &["query=50% cocoa + nuts=yes?"]),
    refused("search_foods", &[]),
    same("food_detail", &["food_id=8213"]),
    same("food_units", &[]),
    // User, devices, sleep.
    same("user_profile_get", &[]),
    same("user_profile_get", &["user_id=22ABCD"]),
    same("get_devices", &[]),
    same("get_alarms", &["device_id=123456789"]),
    refused("get_alarms", &[]),
    same_py(
        "get_sleep",
        &["date=2024-03-05"],
        r#"{"date": {"$date": "2024-03-05"}}"#,
    ),
    same_py(
        "get_sleep",
        &["date=2023-11-25"],
        r#"{"date": {"$date": "2023-11-25"}}"#,
    ),
    same_py(
        "get_sleep",
        &["date=today"],
        r#"{"date": {"$date": "2024-01-15"}}"#,
    ),
    refused("get_sleep", &[]),
    // Social and subscriptions.
    same("get_friends", &[]),
    same("get_friends", &["user_id=22ABCD"]),
    same("get_badges", &["user_id=22ABCD"]),
    same("get_friends_leaderboard", &["period=7d"]),
    same("get_friends_leaderboard", &["period=30d"]),
    refused("get_friends_leaderboard", &["period=1d"]),
    refused("get_friends_leaderboard", &[]),
    same("list_subscriptions", &[]),
    same("list_subscriptions", &["collection=body"]),
    same("list_subscriptions", &["collection=activities"]),
    // Goals, read without arguments.
    same("body_fat_goal", &[]),
    same("body_weight_goal", &[]),
    same("activities_daily_goal", &[]),
    same("activities_weekly_goal", &[]),
    same("food_goal", &[]),
    same("water_goal", &[]),
    same("body_fat_goal,body_weight_goal,food_goal,water_goal", &[]),
    // Deliberate differences: python-fitbit sent these on, we refuse them.
    only_we_refuse("get_bodyweight", &["base_date=2024/01/15"]),
    only_we_refuse(
        "time_series",
        &["resource=body/weight", "base_date=yesterday", "period=7d"],
    ),
    only_we_refuse(
        "intraday_time_series",
        &[
            "resource=activities/heart",
            "start_time=8am",
            "end_time=9am",
        ],
    ),
    only_we_refuse("get_friends", &["user_id=a/b"]),
    // A goal with an argument was a write (POST) in python-fitbit; here only reads exist.
    only_we_refuse("body_fat_goal", &["fat=20"]),
    only_we_refuse("water_goal", &["target=2000"]),
];

/// One request, as compared.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Request {
    verb: String,
    path: String,
    /// Decoded query pairs: both sides form-encode, but not the same bytes (`~`, `*`).
    query: Vec<(String, String)>,
    accept_language: Option<String>,
}

/// What one side did with a case.
#[derive(Debug)]
enum Outcome {
    Sent(Vec<Request>),
    Refused(String),
}

fn split_target(target: &str) -> (String, Vec<(String, String)>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let pairs = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    (path.to_owned(), pairs)
}

fn python_kwargs(case: &Case) -> Value {
    match case.py {
        Some(text) => serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("bad python kwargs of {case:?}: {e}")),
        None => {
            let mut map = Map::new();
            for kv in case.set {
                let (k, v) = kv.split_once('=').expect("`--set` values are key=value");
                map.insert(k.to_owned(), Value::String(v.to_owned()));
            }
            Value::Object(map)
        }
    }
}

/// Runs the whole table through python-fitbit in one process.
fn run_python(cases: &[Case]) -> Vec<Outcome> {
    let script = env::root().join("tests/support/fitbit_requests.py");
    let mut child = Command::new(env::venv_python())
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python-fitbit recorder");
    let mut input = String::new();
    for case in cases {
        let methods: Vec<&str> = case.methods.split(',').collect();
        let line = json!({"methods": methods, "kwargs": python_kwargs(case), "system": "en_US"});
        input.push_str(&line.to_string());
        input.push('\n');
    }
    let mut stdin = child.stdin.take().expect("python stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child
        .wait_with_output()
        .expect("run python-fitbit recorder");
    writer
        .join()
        .expect("stdin writer")
        .expect("write python stdin");
    assert!(
        output.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<Outcome> = String::from_utf8(output.stdout)
        .expect("python output is UTF-8")
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("python output is JSON lines");
            if v["ok"] == Value::Bool(true) {
                let requests = v["requests"]
                    .as_array()
                    .expect("requests")
                    .iter()
                    .map(|r| {
                        let (path, query) = split_target(r["path"].as_str().expect("path"));
                        Request {
                            verb: r["verb"].as_str().expect("verb").to_owned(),
                            path,
                            query,
                            accept_language: r["accept_language"].as_str().map(str::to_owned),
                        }
                    })
                    .collect();
                Outcome::Sent(requests)
            } else {
                Outcome::Refused(format!("{}: {}", v["error"], v["message"]))
            }
        })
        .collect();
    assert_eq!(
        results.len(),
        cases.len(),
        "python-fitbit answered {} of {} cases",
        results.len(),
        cases.len()
    );
    results
}

/// A header value from `plan` output, which may list headers as an object or as pairs.
fn header(headers: &Value, name: &str) -> Option<String> {
    match headers {
        Value::Object(map) => map
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str().map(str::to_owned)),
        Value::Array(items) => items.iter().find_map(|pair| {
            let k = pair.get(0)?.as_str()?;
            k.eq_ignore_ascii_case(name)
                .then(|| pair.get(1)?.as_str().map(str::to_owned))
                .flatten()
        }),
        _ => None,
    }
}

/// Where `plan` finds its settings: a temporary config and store.
struct Setup {
    sandbox: env::Sandbox,
    args: Vec<String>,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            sandbox: env::Sandbox::new(),
            args: Vec::new(),
        }
    }

    fn plan(&self, case: &Case) -> Output {
        let mut cmd = self.sandbox.command();
        cmd.args(&self.args).args([
            "plan",
            "fitbit",
            "--user",
            "jack",
            "--methods",
            case.methods,
        ]);
        for kv in case.set {
            cmd.arg("--set").arg(kv);
        }
        cmd.args(["--now", NOW]);
        cmd.output().expect("run healthpull plan")
    }
}

fn run_ours(setup: &Setup, case: &Case) -> Outcome {
    let output = setup.plan(case);
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if !output.status.success() {
        assert!(
            !stderr.is_empty(),
            "`healthpull plan` refused {case:?} without a message on stderr"
        );
        return Outcome::Refused(stderr);
    }
    let requests = String::from_utf8(output.stdout)
        .expect("plan output is UTF-8")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("plan printed a line that is not JSON ({e}): {line}"));
            let url = v["url"].as_str().expect("plan output has `url`");
            let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
            let target = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
            let (path, query) = split_target(target);
            let verb = v
                .get("verb")
                .or_else(|| v.get("method"))
                .and_then(Value::as_str)
                .expect("plan output has the HTTP verb")
                .to_owned();
            Request {
                verb,
                path,
                query,
                accept_language: header(&v["headers"], "Accept-Language"),
            }
        })
        .collect();
    Outcome::Sent(requests)
}

fn label(case: &Case) -> String {
    format!("{} [{}]", case.methods, case.set.join(" "))
}

fn check(case: &Case, ours: &Outcome, python: &Outcome) -> Result<(), String> {
    match (case.expect, ours, python) {
        (Expect::Same, Outcome::Sent(a), Outcome::Sent(b)) if a == b && !a.is_empty() => Ok(()),
        (Expect::BothRefuse, Outcome::Refused(a), Outcome::Refused(b))
            if !a.is_empty() && !b.is_empty() =>
        {
            Ok(())
        }
        (Expect::OnlyWeRefuse, Outcome::Refused(_), Outcome::Sent(b)) if !b.is_empty() => Ok(()),
        (expect, ours, python) => Err(format!(
            "expected {expect:?}\n    ours:   {ours:?}\n    python: {python:?}"
        )),
    }
}

/// The method names `providers/fitbit.yaml` declares (keys two spaces deep under `methods:`).
fn yaml_methods() -> BTreeSet<String> {
    let path: PathBuf = env::root().join("providers/fitbit.yaml");
    let text = std::fs::read_to_string(&path).expect("read providers/fitbit.yaml");
    let mut in_methods = false;
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if !line.starts_with(' ') && !line.starts_with('#') && !line.is_empty() {
            in_methods = line.trim_end() == "methods:";
            continue;
        }
        if let Some(rest) = line.strip_prefix("  ")
            && in_methods
            && !rest.starts_with([' ', '#'])
            && let Some(name) = rest.trim_end().strip_suffix(':')
        {
            names.insert(name.to_owned());
        }
    }
    names
}

#[test]
fn the_table_covers_every_read_method_of_python_fitbit() {
    let declared = yaml_methods();
    let expected: BTreeSet<String> = READ_METHODS.iter().map(|m| (*m).to_owned()).collect();
    assert_eq!(declared, expected, "providers/fitbit.yaml methods");
    let tested: BTreeSet<&str> = CASES
        .iter()
        .filter(|c| c.expect == Expect::Same)
        .flat_map(|c| c.methods.split(','))
        .collect();
    let untested: Vec<&&str> = READ_METHODS
        .iter()
        .filter(|m| !tested.contains(**m))
        .collect();
    assert!(
        untested.is_empty(),
        "methods without a parity case: {untested:?}"
    );
    assert!(CASES.len() >= 60, "the table has {} cases", CASES.len());
}

#[test]
fn requests_match_python_fitbit() {
    let python = run_python(CASES);
    let setup = Setup::new();
    let mut failures = Vec::new();
    for (case, theirs) in CASES.iter().zip(&python) {
        let ours = run_ours(&setup, case);
        if let Err(why) = check(case, &ours, theirs) {
            failures.push(format!("{}: {why}", label(case)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from python-fitbit:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}
