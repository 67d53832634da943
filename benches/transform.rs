//! Throughput of the sensor pipeline on one day of one-second heart-rate data.
//!
//! The input is a Fitbit-shaped intraday answer for `activities/heart` at `1sec`: a
//! daily summary plus 86,400 points `{"time":"HH:MM:SS","value":N}` (about 2.7 MB of
//! JSON), generated deterministically (the same formula as `benches/whole-process.sh`).
//! The provider is the shipped `providers/fitbit.yaml`, method `intraday_time_series`
//! (`activities/heart` at `1sec`), which maps every point to a `heart-rate` entry
//! `{dateTime, time, value}`.
//!
//! Each stage is measured alone, then the whole pipeline as `fetch --dry-run --replay`
//! runs it, replayed or live (`engine::fetch`, `xml::write_sensors_xml`; minus reading
//! the answer):
//!
//! - `parse`: the answer's bytes checked as UTF-8 and indexed (`transform::Doc::parse`);
//! - `map`: `transform::map_method` (JSONPath selection, explode, field conversion) into
//!   a compact table, merged into the sensor tree;
//! - `validate`: `schema::validate_sensors` (the check compiled from
//!   `schemas/sensors.schema.json`);
//! - `xml`: `xml::write_sensors_xml` under the user's tag, streamed to a sink;
//! - `drop`: freeing the document and the sensor tree (left out of the stages);
//! - `pipeline`: all of it in a row, from bytes to XML (the one route of every answer).
//!
//! The benchmark allocates through mimalloc, as the binary does. Throughput is reported
//! in points (`Throughput::Elements(86_400)`). Run with `cargo bench --bench transform`;
//! figures and the rerun recipe are in `docs/BENCHMARKS.md`.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use healthpull::igor::xml;
use healthpull::provider::{self, Method, Provider, UrlOverrides};
use healthpull::sensors::Sensors;
use healthpull::sensors::schema;
use healthpull::transform::units::UnitSystem;
use healthpull::transform::{self, Doc, Layout};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Points in one day at one-second resolution.
const POINTS: u32 = 86_400;
/// The day of the recording.
const DAY: &str = "2026-11-23";
/// The Igor user the XML is written for.
const USER: &str = "jack";
/// The method of the shipped Fitbit provider.
const METHOD: &str = "intraday_time_series";

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
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("providers/fitbit.yaml");
    provider::load(&path, &UrlOverrides::default())
        .unwrap_or_else(|d| panic!("{} does not load:\n{d}", path.display()))
}

fn parse(bytes: &[u8]) -> Doc {
    let text = String::from_utf8(bytes.to_vec()).expect("the generated day is UTF-8");
    Doc::parse(text).unwrap_or_else(|_| panic!("the generated day is JSON"))
}

/// The merged tree, as `engine::fetch` builds it from the method's outputs.
fn map(method: &Method, doc: Doc) -> Sensors {
    let result = transform::map_method(
        method,
        vec![doc],
        Layout::Mapped,
        transform::MapContext::new(UnitSystem::Metric, chrono_tz::Tz::UTC),
    )
    .expect("the generated day maps");
    let mut tree = Sensors::default();
    tree.merge(result.mapped);
    tree
}

fn validate(tree: &Sensors) {
    if let Err(problems) = schema::validate_sensors(tree) {
        panic!("the mapped day breaks the sensor schema: {problems:?}");
    }
}

fn to_xml(tree: &Sensors, out: &mut impl std::io::Write) {
    xml::write_sensors_xml(out, USER, tree).expect("writing cannot fail");
}

/// Bytes to XML; the document is freed by mapping, as in the engine.
fn pipeline(method: &Method, bytes: &[u8], out: &mut impl std::io::Write) {
    let tree = map(method, parse(bytes));
    validate(&tree);
    to_xml(&tree, out);
}

fn intraday_day(c: &mut Criterion) {
    let provider = load_provider();
    let method = &provider.methods[METHOD];
    let bytes = generate_day();
    let doc = parse(&bytes);
    let tree = map(method, doc.clone());
    // Correctness of the input and of the compact tree, checked once outside the
    // measurements: every point maps to one entry, and the XML is byte for byte the one
    // Igor's converter gives for the tree's `Value` form (`xml::to_igor_xml`).
    let entries = tree.to_value()["heart-rate"].as_array().map_or(0, Vec::len);
    assert_eq!(entries, POINTS as usize, "every point maps to one entry");
    validate(&tree);
    let mut text = Vec::new();
    pipeline(method, &bytes, &mut text);
    assert!(
        text == xml::to_igor_xml(USER, &tree.to_value()).into_bytes(),
        "the compact writer gives the XML of the tree's `Value` form"
    );

    let mut group = c.benchmark_group("heart_rate_1sec_day");
    group.throughput(Throughput::Elements(u64::from(POINTS)));
    group.sample_size(10);
    // The stages: each result is dropped outside the measured time.
    group.bench_function("parse", |b| {
        b.iter_with_large_drop(|| parse(black_box(&bytes)))
    });
    group.bench_function("map", |b| {
        b.iter_batched(
            || doc.clone(),
            |doc| map(method, black_box(doc)),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("validate", |b| b.iter(|| validate(black_box(&tree))));
    group.bench_function("xml", |b| {
        b.iter(|| to_xml(black_box(&tree), &mut std::io::sink()))
    });
    // Freeing the document and the sensor tree, which the stages above leave out.
    group.bench_function("drop", |b| {
        b.iter_batched(
            || (doc.clone(), tree.clone()),
            drop,
            BatchSize::PerIteration,
        )
    });
    // Everything, drops included.
    group.bench_function("pipeline", |b| {
        b.iter(|| pipeline(method, black_box(&bytes), &mut std::io::sink()))
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
