//! Our JSON <-> XML converter against Igor's own code, on generated trees.
//!
//! Why: the recorded vectors (`xml.rs`) cover the documented cases; this test covers
//! the combinations. A few hundred deterministic pseudo-random trees (odd names,
//! control characters, Unicode, quotes, nested lists, numbers of every shape, `#text`
//! and `@` keys) go through igor-iot 0.99.1 (`tests/support/igor_convert.py`, one Python
//! process for all of them) and through `healthpull::igor::xml`; the XML must be byte-equal,
//! the errors must agree, and reading the XML back must give what Igor's JSON interface
//! gives. The venv from `scripts/test-env.sh` is a prerequisite: without it the test
//! fails.
//!
//! The one deviation (docs/ARCHITECTURE.md): where Igor writes characters that are
//! illegal in XML into `#text` or an `_e` attribute, our XML is Igor's without them,
//! and Igor's own parser must read it (Igor's XML it cannot read).

use std::io::Write as _;
use std::process::{Command, Stdio};

use healthpull::igor::xml::{
    XmlError, igor_xml_to_value, to_igor_xml, try_doc_to_igor_xml, try_to_igor_xml,
    write_sensors_xml,
};
use healthpull::sensors::Sensors;
use healthpull::transform::units::UnitSystem;
use healthpull::transform::{Doc, Layout, map_method};
use serde_json::{Map, Number, Value, json};

use crate::support::env;

/// How many trees are generated.
const TREES: usize = 400;

#[test]
fn generated_trees_convert_like_igor() {
    let mut random = XorShift::new(0x1d0c_5eed_4a11_2019);
    let trees: Vec<(String, Value)> = (0..TREES)
        .map(|_| (random.name(), random.value(0)))
        .collect();
    let replies = run_igor(&trees);
    assert_eq!(replies.len(), trees.len(), "one reply per tree");

    let mut tally = Tally::default();
    let mut failures = Vec::new();
    let mut cleaned = Vec::new();
    for ((tag, value), reply) in trees.iter().zip(&replies) {
        match compare(tag, value, reply, &mut tally) {
            Ok(Some(ours)) => cleaned.push(ours),
            Ok(None) => {}
            Err(problem) => failures.push(format!(
                "{problem}\n  input: {}",
                json!({"tag": tag, "value": value})
            )),
        }
    }
    // Igor reads every element we wrote where its own was ill-formed, as we do.
    let readings = run_igor_reads(&cleaned);
    assert_eq!(readings.len(), cleaned.len(), "one reading per element");
    for (ours, reading) in cleaned.iter().zip(&readings) {
        if let Err(problem) = compare_reading(ours, reading) {
            failures.push(problem);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {TREES} trees differ from Igor; first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The generator must keep exercising every branch.
    assert!(tally.written > TREES / 2, "{tally:?}");
    assert!(
        tally.text_errors > 0 && tally.attribute_errors > 0,
        "{tally:?}"
    );
    assert!(
        tally.unparsable > 0 && tally.read_back > TREES / 2,
        "{tally:?}"
    );
    assert!(cleaned.len() > 5, "{} cleaned elements", cleaned.len());
    assert!(tally.big_integers > 5, "{tally:?}");
}

/// The same generated trees as JSON texts with duplicate keys, straight to Igor's
/// converter (Python's `json.loads` keeps the last value at the first key's place) and
/// through `to-xml`'s route, which reads the text's index without a `Value`: the XML,
/// or the error, must be Igor's, and the route over `serde_json::Value` must agree to
/// the byte and to the error's pointer.
#[test]
fn texts_with_duplicate_keys_convert_like_igor() {
    let mut random = XorShift::new(0x5eed_d0c5_7e47_2026);
    let texts: Vec<(String, String, usize)> = (0..TREES / 2)
        .map(|_| {
            // Mostly objects, where keys can repeat.
            let value = if random.percent(90) {
                random.object(0)
            } else {
                random.value(0)
            };
            let mut text = String::new();
            let repeated = random.text_with_duplicates(&value, &mut text);
            (random.name(), text, repeated)
        })
        .collect();
    let mut input = String::new();
    for (tag, text, _) in &texts {
        input.push_str(&format!("{{\"tag\":{},\"value\":{text}}}\n", json!(tag)));
    }
    let replies = run_script(input);
    assert_eq!(replies.len(), texts.len(), "one reply per text");
    let (mut written, mut refused, mut with_duplicates) = (0, 0, 0);
    let mut failures = Vec::new();
    for ((tag, text, repeated), reply) in texts.iter().zip(&replies) {
        let value: Value = serde_json::from_str(text).expect("generated JSON");
        let doc = Doc::decode(text.clone()).expect("generated JSON");
        let ours = try_doc_to_igor_xml(tag, &doc);
        if ours != try_to_igor_xml(tag, &value) {
            failures.push(format!("the two routes differ on {text}"));
        }
        if *repeated > 0 {
            with_duplicates += 1;
        }
        match (
            reply.get("xml").and_then(Value::as_str),
            reply.get("error"),
            &ours,
        ) {
            (Some(igor), _, Ok(xml)) if *xml == without_illegal_characters(igor) => written += 1,
            (None, Some(error), Err(_)) => {
                let kind = error.as_str().and_then(|e| e.split(':').next());
                match (kind, &ours) {
                    (Some("TypeError"), Err(XmlError::TextNotString { .. }))
                    | (Some("HierarchyRequestErr"), Err(XmlError::AttributeKey { .. })) => {
                        refused += 1;
                    }
                    _ => failures.push(format!("Igor {error}, ours {ours:?}: {text}")),
                }
            }
            _ => failures.push(format!("Igor {reply}, ours {ours:?}: {text}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} texts differ; first ones:\n{}",
        failures.len(),
        texts.len(),
        failures[..failures.len().min(8)].join("\n")
    );
    assert!(
        with_duplicates > TREES / 4,
        "{with_duplicates} texts with duplicates"
    );
    assert!(
        written > TREES / 4 && refused > 0,
        "{written} written, {refused} refused"
    );
}

/// Outcomes seen, to prove the trees cover what they should.
#[derive(Debug, Default)]
struct Tally {
    written: usize,
    text_errors: usize,
    attribute_errors: usize,
    read_back: usize,
    unparsable: usize,
    /// Trees holding an integer beyond 64 bits.
    big_integers: usize,
}

/// Checks one tree against Igor's reply. Where our XML differs from Igor's by the
/// deviation (illegal characters deleted), returns ours, for Igor to read.
fn compare(
    tag: &str,
    value: &Value,
    reply: &Value,
    tally: &mut Tally,
) -> Result<Option<String>, String> {
    if has_big_integer(value) {
        tally.big_integers += 1;
    }
    // `to-xml`'s route, from the JSON text's index: the same XML or the same error.
    let doc = Doc::decode(value.to_string()).map_err(|error| error.to_string())?;
    if try_doc_to_igor_xml(tag, &doc) != try_to_igor_xml(tag, value) {
        return Err("try_doc_to_igor_xml differs from try_to_igor_xml".to_owned());
    }
    if let Some(error) = reply.get("error").and_then(Value::as_str) {
        let ours = try_to_igor_xml(tag, value);
        match (error.split(':').next(), &ours) {
            (Some("TypeError"), Err(XmlError::TextNotString { .. })) => tally.text_errors += 1,
            (Some("HierarchyRequestErr"), Err(XmlError::AttributeKey { .. })) => {
                tally.attribute_errors += 1;
            }
            _ => return Err(format!("Igor raised {error:?}, we gave {ours:?}")),
        }
        return Ok(None);
    }
    let igor_xml = reply
        .get("xml")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("bad reply {reply}"))?;
    let ours = try_to_igor_xml(tag, value);
    let expected = without_illegal_characters(igor_xml);
    if ours.as_deref() != Ok(expected.as_str()) {
        return Err(format!(
            "XML differs\n  igor: {igor_xml:?}\n  ours: {ours:?}"
        ));
    }
    if to_igor_xml(tag, value) != expected {
        return Err("to_igor_xml differs from try_to_igor_xml".to_owned());
    }
    tally.written += 1;
    let cleaned = (expected != igor_xml).then_some(expected);

    let read = igor_xml_to_value(igor_xml);
    match (reply.get("back"), reply.get("back_error"), read) {
        (Some(back), None, Ok((read_tag, read_value))) => {
            let ours = serde_json::to_string(&json!([read_tag, read_value]));
            let igor = serde_json::to_string(&exact_floats(back)?);
            if ours.as_ref().ok() != igor.as_ref().ok() {
                return Err(format!(
                    "read back differs\n  igor: {igor:?}\n  ours: {ours:?}"
                ));
            }
            tally.read_back += 1;
        }
        (None, Some(_), Err(XmlError::Malformed { .. })) => tally.unparsable += 1,
        (back, back_error, read) => {
            return Err(format!(
                "reading {igor_xml:?}: Igor {back:?} / {back_error:?}, ours {read:?}"
            ));
        }
    }
    Ok(cleaned)
}

/// Igor's reading of XML we wrote must succeed and agree with ours.
fn compare_reading(xml: &str, reading: &Value) -> Result<(), String> {
    let back = reading
        .get("back")
        .ok_or_else(|| format!("Igor cannot read our {xml:?}: {reading}"))?;
    let (tag, value) =
        igor_xml_to_value(xml).map_err(|error| format!("we cannot read our {xml:?}: {error}"))?;
    let ours = serde_json::to_string(&json!([tag, value])).map_err(|e| e.to_string())?;
    let igor = serde_json::to_string(&exact_floats(back)?).map_err(|e| e.to_string())?;
    if ours != igor {
        return Err(format!(
            "reading our {xml:?}\n  igor: {igor}\n  ours: {ours}"
        ));
    }
    Ok(())
}

/// Igor's XML with the characters its `ILLEGAL_XML_CHARACTERS_PATTERN` matches deleted
/// (it deletes them from plain values itself; we also from `#text` and `_e`).
fn without_illegal_characters(xml: &str) -> String {
    xml.chars()
        .filter(|&c| {
            !matches!(c,
                '\u{0}'..='\u{8}' | '\u{b}'..='\u{1f}' | '\u{7f}'..='\u{84}' | '\u{86}'..='\u{9f}'
                | '\u{fdd0}'..='\u{fddf}' | '\u{fffe}' | '\u{ffff}')
        })
        .collect()
}

/// Whether a tree holds an integer beyond the 64-bit range.
fn has_big_integer(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.as_u64().is_none() && n.as_i64().is_none() && !n.is_f64(),
        Value::Array(items) => items.iter().any(has_big_integer),
        Value::Object(map) => map.values().any(has_big_integer),
        _ => false,
    }
}

/// Replaces the script's `{"$float": "repr"}` objects by the double that text denotes
/// (Rust's `str::parse` rounds to nearest, like Python; serde_json's default parser
/// can be one unit off).
fn exact_floats(value: &Value) -> Result<Value, String> {
    Ok(match value {
        Value::Array(items) => {
            Value::Array(items.iter().map(exact_floats).collect::<Result<_, _>>()?)
        }
        Value::Object(map) => match map.get("$float").and_then(Value::as_str) {
            Some(text) if map.len() == 1 => {
                let float = text
                    .parse::<f64>()
                    .map_err(|error| format!("{text:?}: {error}"))?;
                Number::from_f64(float)
                    .map(Value::Number)
                    .ok_or_else(|| format!("{text:?} is not finite"))?
            }
            _ => Value::Object(
                map.iter()
                    .map(|(key, item)| Ok((key.clone(), exact_floats(item)?)))
                    .collect::<Result<_, String>>()?,
            ),
        },
        other => other.clone(),
    })
}

/// Runs all trees through Igor's converter in one Python process.
fn run_igor(trees: &[(String, Value)]) -> Vec<Value> {
    let mut input = String::new();
    for (tag, value) in trees {
        input.push_str(&json!({"tag": tag, "value": value}).to_string());
        input.push('\n');
    }
    run_script(input)
}

/// Igor's reading of each XML text, in one Python process.
fn run_igor_reads(xmls: &[String]) -> Vec<Value> {
    let mut input = String::new();
    for xml in xmls {
        input.push_str(&json!({ "read": xml }).to_string());
        input.push('\n');
    }
    run_script(input)
}

/// Runs `tests/support/igor_convert.py` on JSON lines; one JSON reply per line.
fn run_script(input: String) -> Vec<Value> {
    let script = env::root().join("tests/support/igor_convert.py");
    let mut child = Command::new(env::venv_python())
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("starting {}: {error}", script.display()));
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // Write from another thread: Python answers while we are still writing.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child
        .wait_with_output()
        .expect("waiting for igor_convert.py");
    writer
        .join()
        .expect("writer thread")
        .expect("writing to igor_convert.py");
    assert!(
        output.status.success(),
        "igor_convert.py failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("igor_convert.py prints UTF-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("igor_convert.py prints JSON lines"))
        .collect()
}

/// A xorshift64* generator: deterministic trees without another crate.
struct XorShift(u64);

/// Element names: valid, escaped (`_e`) and borderline ones.
const NAMES: &[&str] = &[
    "v",
    "jack",
    "weight",
    "body-weight",
    "a.b",
    "_x",
    "x_1",
    "Z9",
    "xml",
    "xmlns",
    "_e",
    "1abc",
    "9",
    "a b",
    " a",
    "a:b",
    "own:plugin",
    "café",
    "名前",
    "",
    "-a",
    ".a",
    "abc\n",
    "abc\n\n",
    "\nabc",
    "a\tb\nc",
    "a&b",
    "a\"b",
    "it's",
    "a<b>",
    "a\u{1}b",
    "a\u{85}b",
    "#text2",
    "x@y",
    "a/b",
    "a~b",
];

/// Strings Igor types on the way back, or that stress escaping and character removal.
/// (No NaN/infinity spellings: Igor's reply for those is not JSON.)
const STRINGS: &[&str] = &[
    "",
    " ",
    "  padded  ",
    "hello",
    "007",
    "+5",
    "-0",
    "1_000",
    "1e3",
    "75.0",
    ".5",
    "0x10",
    "true",
    "false",
    "null",
    "True",
    "2019-03-01",
    "07:12:30",
    "12345678901234567890123",
    "a<b & c>d",
    "quote \" and ' apostrophe",
    "it's",
    "\"",
    "'\"",
    "back\\slash",
    "tab\there",
    "line\nbreak",
    "cr\r\nlf\r",
    "\u{0}\u{1}\u{8}\u{b}\u{c}\u{1f}\u{7f}",
    "\u{80}\u{84}\u{85}\u{86}\u{9f}\u{a0}\u{ad}",
    "\u{fdcf}\u{fdd0}\u{fddf}\u{fde0}\u{fffd}\u{fffe}\u{ffff}",
    "é 名前 😀",
    "\u{200b}\u{2028}\u{202f}\u{e0001}\u{10ffff}",
    "\u{661}\u{662}",
    "\u{3000}5\u{3000}",
    "\u{1c}7\u{1f}",
    "&amp;",
    "]]>",
];

/// Characters for random strings. Left out: 'n'/'N' (no NaN or inf spelling) and
/// 'e'/'E' (no exponent that overflows to infinity): Igor's reply for such texts is not
/// JSON, a documented deviation checked in `xml.rs`.
const ALPHABET: &str = "abx0159._-+ \t\n\r&<>\"'\\:#@\u{1}\u{1b}\u{7f}\u{84}\u{85}\u{9f}\
    éß名\u{200b}\u{3000}\u{fdd5}\u{fffe}\u{ffff}😀\u{e0001}\u{661}";

/// Integers beyond what a double holds exactly, most beyond 64 bits: Python keeps every
/// digit, and so must we.
const BIG_INTEGERS: &[&str] = &[
    "18446744073709551616",
    "-9223372036854775809",
    "1000000000000000000000000000000",
    "-1000000000000000000000000000000",
    "9007199254740993",
    "-9007199254740993",
    "18446744073709551615",
    "-9223372036854775808",
    "123456789012345678901234567890123456789012345678901234567890",
];

/// A JSON integer from its text (every digit kept).
fn big_integer(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("{text}: {error}"))
}

/// Floats that sit on Python's formatting boundaries.
const FLOATS: &[f64] = &[
    0.0,
    -0.0,
    1.0,
    75.3,
    23.0,
    23.1,
    0.1,
    0.30000000000000004,
    1e-4,
    1.5e-4,
    1e-5,
    1e15,
    1e16,
    9999999999999998.0,
    1.5514e12,
    1551428800.5,
    1e20,
    1e22,
    1e100,
    -1e-7,
    5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
];

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut state = self.0;
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        self.0 = state;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..bound`.
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn percent(&mut self, chance: usize) -> bool {
        self.below(100) < chance
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn name(&mut self) -> String {
        if self.percent(70) {
            self.pick(NAMES).to_owned()
        } else {
            self.random_text(6)
        }
    }

    fn string(&mut self) -> String {
        match self.below(3) {
            0 => self.random_text(12),
            // A random prefix cannot turn "1e3" into an overflowing exponent.
            1 => format!("{}{}", self.random_text(3), self.pick(STRINGS)),
            _ => self.pick(STRINGS).to_owned(),
        }
    }

    fn random_text(&mut self, max_len: usize) -> String {
        let alphabet: Vec<char> = ALPHABET.chars().collect();
        let len = self.below(max_len + 1);
        (0..len).map(|_| self.pick(&alphabet)).collect()
    }

    fn number(&mut self) -> Value {
        match self.below(9) {
            0 => json!(self.below(100)),
            1 => json!(-(self.below(1000) as i64)),
            2 => json!(1_551_400_000_000u64 + self.next() % 100_000_000),
            3 => json!(self.pick(&[i64::MIN, i64::MAX, 0, -1])),
            4 => json!(u64::MAX - self.next() % 1000),
            5 => json!(self.pick(FLOATS)),
            8 => big_integer(self.pick(BIG_INTEGERS)),
            6 => json!((self.next() % 1_000_000) as f64 / 100.0),
            _ => {
                // Any finite double, sign and exponent included.
                let float = f64::from_bits(self.next());
                Number::from_f64(float).map_or(Value::Null, Value::Number)
            }
        }
    }

    /// `value` as JSON text where some objects repeat a key: a member with another
    /// value placed before the key's own one (which moves the key to that place and
    /// keeps its value) or after it (whose value then wins), keys sometimes written
    /// with `\u` escapes.
    /// Returns how many members repeat a key.
    fn text_with_duplicates(&mut self, value: &Value, out: &mut String) -> usize {
        let mut repeated = 0;
        match value {
            Value::Array(items) => {
                out.push('[');
                for (position, item) in items.iter().enumerate() {
                    if position > 0 {
                        out.push(',');
                    }
                    repeated += self.text_with_duplicates(item, out);
                }
                out.push(']');
            }
            Value::Object(map) => {
                let mut members: Vec<(String, String)> = Vec::new();
                for (key, item) in map {
                    let mut text = String::new();
                    repeated += self.text_with_duplicates(item, &mut text);
                    members.push((key.clone(), text));
                }
                for _ in 0..self.below(3) {
                    if members.is_empty() {
                        break;
                    }
                    let at = self.below(members.len());
                    let key = members[at].0.clone();
                    let other = self.value(3).to_string();
                    let place = if self.percent(50) {
                        at
                    } else {
                        self.below(members.len() + 1).max(at + 1)
                    };
                    members.insert(place, (key, other));
                    repeated += 1;
                }
                out.push('{');
                for (position, (key, text)) in members.iter().enumerate() {
                    if position > 0 {
                        out.push(',');
                    }
                    if self.percent(20) {
                        out.push('"');
                        for unit in key.encode_utf16() {
                            out.push_str(&format!("\\u{unit:04x}"));
                        }
                        out.push('"');
                    } else {
                        out.push_str(&json!(key).to_string());
                    }
                    out.push(':');
                    out.push_str(text);
                }
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
        repeated
    }

    /// A value; `depth` bounds the nesting.
    fn value(&mut self, depth: usize) -> Value {
        let containers = depth < 4;
        match self.below(if containers { 10 } else { 6 }) {
            0 => Value::Null,
            1 => Value::Bool(self.percent(50)),
            2 | 3 => self.number(),
            4 | 5 => Value::String(self.string()),
            6 | 7 => self.object(depth),
            8 => self.list(depth),
            _ => {
                if self.percent(50) {
                    Value::Object(Map::new())
                } else {
                    Value::Array(Vec::new())
                }
            }
        }
    }

    fn list(&mut self, depth: usize) -> Value {
        let len = self.below(4);
        Value::Array((0..len).map(|_| self.value(depth + 1)).collect())
    }

    fn object(&mut self, depth: usize) -> Value {
        let mut object = Map::new();
        for _ in 0..=self.below(5) {
            let roll = self.below(100);
            let (key, value) = if roll < 4 {
                // Text nodes: strings (fine), or something else (Igor: TypeError).
                let text = match self.below(5) {
                    0 => self.value(depth + 1),
                    1 => Value::Array((0..self.below(3)).map(|_| json!(self.string())).collect()),
                    2 => json!([self.string(), self.value(depth + 1)]),
                    _ => Value::String(self.string()),
                };
                ("#text".to_owned(), text)
            } else if roll < 6 {
                // Attributes cannot be written from JSON (Igor: HierarchyRequestErr).
                (format!("@{}", self.name()), Value::String(self.string()))
            } else {
                (self.name(), self.value(depth + 1))
            };
            object.insert(key, value);
        }
        Value::Object(object)
    }
}

/// Integers beyond 2^53 and beyond 64 bits keep every digit, as in
/// Igor's converter: written (`to_igor_xml` and `healthpull to-xml`), read back, and
/// passed through both mapping routes and the embedded store.
#[test]
fn big_integers_stay_exact_like_igor() {
    let answer_text = r#"{"weight":[{"bmi":24.61,"date":"2026-10-24","logId":18446744073709551616,"source":"Aria","time":"07:47:25","weight":79.85},{"bmi":24.52,"date":"2026-10-27","logId":-9223372036854775809,"source":"API","time":"06:35:10","weight":79.55},{"bmi":24.44,"date":"2026-10-30","logId":1000000000000000000000000000000,"source":"AriaAir","time":"07:50:42","weight":79.3}],"big":[9007199254740993,-1000000000000000000000000000000,18446744073709551615,-9223372036854775808,[18446744073709551616]]}"#;
    let answer: Value = big_integer(answer_text);
    let igor = run_igor(&[("jack".to_owned(), answer.clone())]);
    let igor_xml = igor[0]["xml"].as_str().expect("Igor converts the answer");
    for digits in [
        "18446744073709551616",
        "-9223372036854775809",
        "1000000000000000000000000000000",
        "9007199254740993",
    ] {
        assert!(igor_xml.contains(digits), "Igor keeps {digits}: {igor_xml}");
    }

    // Written, by the library and by the binary.
    assert_eq!(to_igor_xml("jack", &answer), igor_xml);
    let (code, stdout, stderr) =
        crate::engine::run(&["to-xml", "--tag", "jack"], Some(answer_text));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, format!("{igor_xml}\n"));

    // Read back: what Igor's JSON interface answers, every digit included.
    let (_, back) = igor_xml_to_value(igor_xml).unwrap();
    let igor_back = exact_floats(&igor[0]["back"][1]).unwrap();
    assert_eq!(
        serde_json::to_string(&back).unwrap(),
        serde_json::to_string(&igor_back).unwrap()
    );
    assert_eq!(
        back["weight"][0]["logId"].to_string(),
        "18446744073709551616"
    );

    // The one mapping route (the answer's document, live or replayed), the raw layout
    // (the answer unchanged) and the mapped one (`logId` has `type: integer`).
    let provider = healthpull::provider::load(
        &env::root().join("providers/fitbit.yaml"),
        &Default::default(),
    )
    .unwrap();
    let method = &provider.methods["get_bodyweight"];
    for layout in [Layout::Raw, Layout::Mapped] {
        let mut trees = Vec::new();
        let doc = Doc::decode(answer_text.to_owned()).expect("JSON");
        let result = map_method(
            method,
            vec![doc],
            layout,
            healthpull::transform::MapContext::new(UnitSystem::Metric, chrono_tz::Tz::UTC),
        )
        .unwrap();
        let mut tree = Sensors::default();
        tree.merge(result.mapped);
        tree.add_raw(result.raw);
        let mut xml = Vec::new();
        write_sensors_xml(&mut xml, "jack", &tree).unwrap();
        let xml = String::from_utf8(xml).unwrap();
        assert_eq!(xml, to_igor_xml("jack", &tree.to_value()), "{layout:?}");
        trees.push(xml);
        match layout {
            Layout::Raw => {
                let expected = to_igor_xml("jack", &json!({"weight": answer["weight"]}));
                assert_eq!(trees[0], expected);
                assert!(igor_xml.starts_with(expected.trim_end_matches("</jack>")));
            }
            _ => {
                for digits in [
                    "<logId>18446744073709551616</logId>",
                    "<logId>-9223372036854775809</logId>",
                    "<logId>1000000000000000000000000000000</logId>",
                ] {
                    assert!(trees[0].contains(digits), "{digits}: {}", trees[0]);
                }
                healthpull::sensors::schema::validate_sensors(&tree).unwrap();
            }
        }
    }

    // The embedded store keeps them too, as a value and as XML.
    let dir = tempfile::tempdir().unwrap();
    let store = healthpull::store::SqliteStore::open(&dir.path().join("h.db")).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        use healthpull::store::Store as _;
        store.put("sensors/fitbit/jack", &answer).await.unwrap();
        let stored = store.get("sensors/fitbit/jack").await.unwrap().unwrap();
        assert_eq!(
            serde_json::to_string(&stored).unwrap(),
            serde_json::to_string(&answer).unwrap()
        );
        let xml = store
            .export_xml("sensors/fitbit/jack")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(xml, igor_xml);
    });
}

/// The Igor store writes big integers with every digit, so a real
/// Igor holds exactly what its own converter would, and reads them back verbatim.
#[tokio::test]
async fn big_integers_reach_a_real_igor_exactly() {
    use healthpull::store::{IgorStore, IgorStoreConfig, Store as _};

    let igor = crate::support::igor::Igor::shared(crate::support::igor::IgorOptions {
        capabilities: true,
    });
    let plugin = "hpbig";
    let (user, password) = igor.service_identity(plugin, &["jack"]).await;
    let store = IgorStore::new(
        IgorStoreConfig {
            url: igor.url.clone(),
            username: user,
            password: healthpull::secret::Secret::from(password),
            timeout: std::time::Duration::from_secs(20),
        },
        healthpull::http::HttpTransport::shared(),
    )
    .unwrap();
    let value = big_integer(
        r#"{"weight":[{"logId":18446744073709551616,"weight":79.85},{"logId":-9223372036854775809}],"ids":[1000000000000000000000000000000,[9007199254740993]]}"#,
    );
    let path = format!("sensors/{plugin}/jack");
    store.put(&path, &value).await.unwrap();
    let expected = &run_igor(&[("jack".to_owned(), value.clone())])[0]["xml"];
    let stored = igor
        .admin_get_ok(&format!("/data/{path}"), "application/xml")
        .await;
    assert_eq!(stored, format!("{}\n", expected.as_str().unwrap()));
    let back = store.get(&path).await.unwrap().unwrap();
    assert_eq!(
        back,
        json!({
            "weight": [{"logId": "18446744073709551616", "weight": "79.85"},
                       {"logId": "-9223372036854775809"}],
            "ids": ["1000000000000000000000000000000", "[9007199254740993]"]
        })
    );
}
