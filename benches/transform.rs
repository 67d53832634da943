//! Throughput of the sensor pipeline on one day of one-second heart-rate data.
//!
//! The input is a Fitbit-shaped intraday answer for `activities/heart` at `1sec`: a
//! daily summary plus 86,400 points `{"time":"HH:MM:SS","value":N}` (about 2.7 MB of
//! JSON), generated deterministically (the same formula as `benches/whole-process.sh`).
//! The provider is `benches/fixtures/intraday.yaml`, whose one method maps every point
//! to a `heart-rate` entry `{dateTime, time, value}` the way `providers/fitbit.yaml`
//! does.
//!
//! Each stage is measured alone, then the whole pipeline as `engine::fetch` and
//! `fetch --dry-run` run it (minus reading the file and writing stdout):
//!
//! - `parse`: `serde_json::from_slice` of the answer;
//! - `map`: `transform::map_method` (JSONPath selection, explode, field conversion);
//! - `validate`: `schema::validate_tree` against `schemas/sensors.schema.json`;
//! - `xml`: `xml::write_igor_xml` of the tree under the user's tag;
//! - `drop`: freeing the parsed answer and the sensor tree (left out of the stages);
//! - `pipeline`: all of it in a row, from bytes to XML text.
//!
//! Throughput is reported in points (`Throughput::Elements(86_400)`). Run with
//! `cargo bench --bench transform`; figures and the rerun recipe are in
//! `docs/BENCHMARKS.md`.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Map, Value};

use healthpull::provider::{self, Method, Provider, UrlOverrides};
use healthpull::schema;
use healthpull::transform::{self, Layout};
use healthpull::units::UnitSystem;
use healthpull::xml;

/// Points in one day at one-second resolution.
const POINTS: u32 = 86_400;
/// The day of the recording.
const DAY: &str = "2026-11-23";
/// The Igor user the XML is written for.
const USER: &str = "jack";
/// The method of the benchmark provider.
const METHOD: &str = "heart_intraday";

/// The heart rate at second `i` of the day: 58..=147, varying every ten seconds.
/// `benches/whole-process.sh` computes the same numbers with awk.
fn heart_rate(i: u32) -> u32 {
    58 + ((i / 60) * 7 + (i % 60) / 10) % 90
}

/// The intraday answer Fitbit sends for one day of `activities/heart` at `1sec`.
fn generate_day() -> Vec<u8> {
    use std::fmt::Write as _;
    let mut json = String::with_capacity(3 << 20);
    json.push_str("{\"activities-heart\":[{\"dateTime\":\"");
    json.push_str(DAY);
    json.push_str("\",\"value\":{\"restingHeartRate\":58}}],");
    json.push_str("\"activities-heart-intraday\":{\"dataset\":[");
    for i in 0..POINTS {
        if i > 0 {
            json.push(',');
        }
        let (h, m, s) = (i / 3600, i / 60 % 60, i % 60);
        write!(
            json,
            "{{\"time\":\"{h:02}:{m:02}:{s:02}\",\"value\":{}}}",
            heart_rate(i)
        )
        .expect("writing to a String cannot fail");
    }
    json.push_str("],\"datasetInterval\":1,\"datasetType\":\"second\"}}");
    json.into_bytes()
}

fn load_provider() -> Provider {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/fixtures/intraday.yaml");
    provider::load(&path, &UrlOverrides::default())
        .unwrap_or_else(|d| panic!("{} does not load:\n{d}", path.display()))
}

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("the generated day is JSON")
}

/// The merged tree, as `engine::fetch` builds it from the method's mapped outputs.
fn map(method: &Method, answers: &[Value]) -> Value {
    let result = transform::map_method(method, answers, Layout::Mapped, UnitSystem::Metric)
        .expect("the generated day maps");
    let mut tree = Map::new();
    tree.extend(result.mapped);
    Value::Object(tree)
}

fn validate(tree: &Value) {
    if let Err(problems) = schema::validate_tree(tree) {
        panic!("the mapped day breaks the sensor schema: {problems:?}");
    }
}

fn to_xml(tree: &Value) -> String {
    let mut out = String::new();
    xml::write_igor_xml(&mut out, USER, tree);
    out
}

/// Bytes to XML text; the answer is dropped after mapping, as the engine does.
fn pipeline(method: &Method, bytes: &[u8]) -> String {
    let answers = vec![parse(bytes)];
    let tree = map(method, &answers);
    drop(answers);
    validate(&tree);
    to_xml(&tree)
}

fn intraday_day(c: &mut Criterion) {
    let provider = load_provider();
    let method = &provider.methods[METHOD];
    let bytes = generate_day();
    let answers = vec![parse(&bytes)];
    let tree = map(method, &answers);
    // Correctness of the input, checked once outside the measurements.
    let entries = tree["heart-rate"].as_array().map_or(0, Vec::len);
    assert_eq!(entries, POINTS as usize, "every point maps to one entry");
    validate(&tree);

    let mut group = c.benchmark_group("heart_rate_1sec_day");
    group.throughput(Throughput::Elements(u64::from(POINTS)));
    group.sample_size(10);
    // The stages: each result is dropped outside the measured time.
    group.bench_function("parse", |b| {
        b.iter_with_large_drop(|| parse(black_box(&bytes)))
    });
    group.bench_function("map", |b| {
        b.iter_batched_ref(
            || answers.clone(),
            |answers| map(method, black_box(answers)),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("validate", |b| b.iter(|| validate(black_box(&tree))));
    group.bench_function("xml", |b| {
        b.iter_with_large_drop(|| to_xml(black_box(&tree)))
    });
    // Freeing the answer and the sensor tree, which the stages above leave out.
    group.bench_function("drop", |b| {
        b.iter_batched(
            || (answers.clone(), tree.clone()),
            drop,
            BatchSize::PerIteration,
        )
    });
    // Everything, drops included.
    group.bench_function("pipeline", |b| {
        b.iter(|| pipeline(method, black_box(&bytes)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = intraday_day
}
criterion_main!(benches);
