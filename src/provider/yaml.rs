//! A YAML reader that knows where every key and value came from.
//!
//! Provider files must report every error at once with line and column, which serde
//! deserializers cannot do (they stop at the first error). So a file is first read
//! into a plain JSON value; structural and semantic checks then run over the value
//! and look up positions for their messages by JSON Pointer. The map from pointer to
//! position is made when the first position is asked for (by reading the text once
//! more), so a file without problems never builds it.
//!
//! This is the one route by which YAML is read (provider files and `healthpull.yaml`),
//! so its limits hold for every file: at most [`MAX_FILE_BYTES`], and aliases may not
//! expand into more nodes than the file could hold itself ([`alias_budget`]), which
//! keeps "billion laughs" files from taking the process's memory.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Loc {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

/// A problem found at a place in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// Where.
    pub loc: Loc,
    /// What, lowercase, no trailing period.
    pub message: String,
}

/// A parsed document, able to tell the positions of its parts.
#[derive(Debug, Default)]
pub struct Document {
    /// The content as JSON (of duplicate keys, the first one is kept).
    pub value: Value,
    /// Problems that did not stop the reading (duplicate keys).
    pub problems: Vec<Located>,
    /// Nodes the aliases expanded into, together (see [`alias_budget`]).
    pub alias_nodes: usize,
    /// The text, read again for [`Positions`] when a position is first asked for.
    source: String,
    positions: OnceLock<Positions>,
}

/// Where the values and the keys of a document are, by JSON Pointer.
#[derive(Debug, Default)]
struct Positions {
    values: HashMap<String, Loc>,
    keys: HashMap<String, Loc>,
}

impl Document {
    fn positions(&self) -> &Positions {
        self.positions.get_or_init(|| {
            // The same text read the same way: it reads as it did the first time.
            let mut reader = Reader::new(&self.source, true);
            match reader.document() {
                Ok(_) => reader.positions,
                Err(_) => Positions::default(),
            }
        })
    }

    /// Position of the value at a JSON Pointer, or of its nearest ancestor.
    pub fn value_loc(&self, pointer: &str) -> Loc {
        let values = &self.positions().values;
        let mut p = pointer;
        loop {
            if let Some(loc) = values.get(p) {
                return *loc;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return Loc { line: 1, col: 1 },
            }
        }
    }

    /// Position of the key that holds the value at a JSON Pointer (falls back to the value).
    pub fn key_loc(&self, pointer: &str) -> Loc {
        self.positions()
            .keys
            .get(pointer)
            .copied()
            .unwrap_or_else(|| self.value_loc(pointer))
    }
}

/// The largest YAML file healthpull reads, in bytes (the shipped providers have a few
/// dozen kilobytes).
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// Nodes aliases may add in every file, however small.
const MIN_ALIAS_BUDGET: usize = 10_000;

/// How deep values may nest, aliases expanded (the shipped providers need 10 levels;
/// `serde_json` reads at most 128).
pub const MAX_DEPTH: usize = 64;

/// How many nodes all aliases of a document of `source_len` bytes may expand into,
/// together: as many as the file has bytes, and at least 10,000. A node an alias
/// repeats counts each time it is repeated, also through aliases inside anchors.
pub fn alias_budget(source_len: usize) -> usize {
    source_len.max(MIN_ALIAS_BUDGET)
}

/// Why a YAML file could not be read (each message reads after the file's name).
pub type ReadError = crate::regular_file::Error;

/// Reads the text of a YAML file: a regular file of at most [`MAX_FILE_BYTES`]
/// (see [`crate::regular_file`]).
pub fn read_file(path: &Path) -> Result<String, ReadError> {
    crate::regular_file::read(path, MAX_FILE_BYTES)?
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound).into())
}

/// Escapes one JSON Pointer reference token.
pub fn pointer_token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Reads a YAML document. Duplicate keys are collected in [`Document::problems`];
/// a syntax error, a text over [`MAX_FILE_BYTES`] or aliases beyond the
/// [`alias_budget`] end the reading and are returned with the problems found before.
pub fn parse(source: &str) -> Result<Document, Vec<Located>> {
    if source.len() > MAX_FILE_BYTES {
        return Err(vec![Located {
            loc: Loc { line: 1, col: 1 },
            message: format!("the file {}", ReadError::TooLarge(MAX_FILE_BYTES)),
        }]);
    }
    let mut reader = Reader::new(source, false);
    let result = reader.document();
    let mut problems = reader.problems;
    match result {
        Ok(value) => Ok(Document {
            value,
            problems,
            alias_nodes: reader.alias_nodes,
            source: source.to_owned(),
            positions: OnceLock::new(),
        }),
        Err(e) => {
            problems.push(e);
            Err(problems)
        }
    }
}

struct Reader<'a> {
    events: Parser<'a, saphyr_parser::StrInput<'a>>,
    /// Whether positions are recorded (into `positions`).
    record: bool,
    positions: Positions,
    /// Anchored values with their sizes.
    anchors: HashMap<usize, (Value, Size)>,
    problems: Vec<Located>,
    /// Nodes all aliases may expand into.
    alias_budget: usize,
    /// Nodes aliases expanded into so far.
    alias_nodes: usize,
    /// Off while the value of a duplicate key is read (and dropped).
    keep_positions: bool,
}

/// How large a node is, aliases expanded.
#[derive(Debug, Clone, Copy)]
struct Size {
    /// The node and everything below it.
    nodes: usize,
    /// Levels: 1 for a scalar or an empty collection.
    height: usize,
}

impl Size {
    const LEAF: Size = Size {
        nodes: 1,
        height: 1,
    };

    /// Adds a child of a collection.
    fn add(&mut self, child: Size) {
        self.nodes = self.nodes.saturating_add(child.nodes);
        self.height = self.height.max(child.height + 1);
    }
}

fn loc(span: &Span) -> Loc {
    Loc {
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

impl<'a> Reader<'a> {
    fn new(source: &'a str, record: bool) -> Self {
        Reader {
            events: Parser::new_from_str(source),
            record,
            positions: Positions::default(),
            anchors: HashMap::new(),
            problems: Vec::new(),
            alias_budget: alias_budget(source.len()),
            alias_nodes: 0,
            keep_positions: true,
        }
    }

    /// The pointer of a child of `pointer` (only needed when positions are recorded).
    fn child(&self, pointer: &str, token: impl FnOnce() -> String) -> String {
        if self.record {
            format!("{pointer}/{}", token())
        } else {
            String::new()
        }
    }

    fn next(&mut self) -> Result<(Event<'a>, Span), Located> {
        match self.events.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => Err(Located {
                loc: Loc {
                    line: e.marker().line(),
                    col: e.marker().col() + 1,
                },
                message: format!("invalid YAML: {}", e.info()),
            }),
            None => Err(Located {
                loc: Loc::default(),
                message: "unexpected end of YAML".to_owned(),
            }),
        }
    }

    fn document(&mut self) -> Result<Value, Located> {
        loop {
            let (ev, span) = self.next()?;
            match ev {
                Event::StreamStart | Event::Nothing => continue,
                Event::DocumentStart(_) => break,
                Event::StreamEnd => {
                    return Err(Located {
                        loc: loc(&span),
                        message: "the file is empty".to_owned(),
                    });
                }
                _ => break,
            }
        }
        let (ev, span) = self.next()?;
        let (value, _) = self.node(ev, span, String::new(), 1)?;
        let (ev, span) = self.next()?;
        match ev {
            Event::DocumentEnd | Event::StreamEnd => {}
            _ => {
                return Err(Located {
                    loc: loc(&span),
                    message: "unexpected content after the document".to_owned(),
                });
            }
        }
        if let Some(Ok((Event::DocumentStart(_), span))) = self.events.next_event() {
            return Err(Located {
                loc: loc(&span),
                message: "a provider file holds one YAML document".to_owned(),
            });
        }
        Ok(value)
    }

    /// Reads one node at nesting level `depth` (the document is at 1) and returns it
    /// with its size.
    fn node(
        &mut self,
        ev: Event<'a>,
        span: Span,
        pointer: String,
        depth: usize,
    ) -> Result<(Value, Size), Located> {
        if depth > MAX_DEPTH {
            return Err(Located {
                loc: loc(&span),
                message: format!("values nest deeper than {MAX_DEPTH} levels"),
            });
        }
        if self.record && self.keep_positions {
            self.positions.values.insert(pointer.clone(), loc(&span));
        }
        let (value, size, anchor) = match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let forced_string = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let value = if style == ScalarStyle::Plain && !forced_string {
                    resolve_plain(&text)
                } else {
                    Value::String(text.into_owned())
                };
                (value, Size::LEAF, anchor)
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                let mut size = Size::LEAF;
                loop {
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    let child = self.child(&pointer, || items.len().to_string());
                    let (item, item_size) = self.node(ev, span, child, depth + 1)?;
                    items.push(item);
                    size.add(item_size);
                }
                (Value::Array(items), size, anchor)
            }
            Event::MappingStart(anchor, _) => {
                let mut map = Map::new();
                let mut size = Size::LEAF;
                loop {
                    let (ev, key_span) = self.next()?;
                    if matches!(ev, Event::MappingEnd) {
                        break;
                    }
                    let key = match ev {
                        Event::Scalar(text, ..) => text.into_owned(),
                        _ => {
                            return Err(Located {
                                loc: loc(&key_span),
                                message: "mapping keys must be plain text".to_owned(),
                            });
                        }
                    };
                    let child = self.child(&pointer, || pointer_token(&key));
                    let (ev, span) = self.next()?;
                    if map.contains_key(&key) {
                        self.problems.push(Located {
                            loc: loc(&key_span),
                            message: format!("duplicate key `{key}`"),
                        });
                        // Read and drop the duplicate's value, keeping the first one's positions.
                        let keep = std::mem::replace(&mut self.keep_positions, false);
                        let read = self.node(ev, span, child, depth + 1);
                        self.keep_positions = keep;
                        read?;
                        continue;
                    }
                    if self.record && self.keep_positions {
                        self.positions.keys.insert(child.clone(), loc(&key_span));
                    }
                    let (value, value_size) = self.node(ev, span, child, depth + 1)?;
                    map.insert(key, value);
                    size.add(value_size);
                }
                (Value::Object(map), size, anchor)
            }
            Event::Alias(id) => {
                let Some((value, size)) = self.anchors.get(&id) else {
                    return Err(Located {
                        loc: loc(&span),
                        message: "unknown alias".to_owned(),
                    });
                };
                if depth - 1 + size.height > MAX_DEPTH {
                    return Err(Located {
                        loc: loc(&span),
                        message: format!(
                            "this alias makes values nest deeper than {MAX_DEPTH} levels"
                        ),
                    });
                }
                self.alias_nodes = self.alias_nodes.saturating_add(size.nodes);
                if self.alias_nodes > self.alias_budget {
                    return Err(Located {
                        loc: loc(&span),
                        message: format!(
                            "aliases expand into more than {} nodes, the limit for this \
                             file (an alias repeats its anchor's nodes every time)",
                            self.alias_budget
                        ),
                    });
                }
                (value.clone(), *size, 0)
            }
            _ => {
                return Err(Located {
                    loc: loc(&span),
                    message: "unexpected YAML event".to_owned(),
                });
            }
        };
        if anchor > 0 {
            self.anchors.insert(anchor, (value.clone(), size));
        }
        Ok((value, size))
    }
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let bytes = text.as_bytes();
    let numeric_start = bytes
        .first()
        .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.'));
    if numeric_start {
        if let Some(hex) = text.strip_prefix("0x") {
            if let Ok(n) = i64::from_str_radix(hex, 16) {
                return Value::Number(n.into());
            }
        }
        if let Some(oct) = text.strip_prefix("0o") {
            if let Ok(n) = i64::from_str_radix(oct, 8) {
                return Value::Number(n.into());
            }
        }
        let int_like = text
            .trim_start_matches(['-', '+'])
            .bytes()
            .all(|b| b.is_ascii_digit());
        if int_like {
            if let Ok(n) = text.parse::<i64>() {
                return Value::Number(n.into());
            }
            if let Ok(n) = text.parse::<u64>() {
                return Value::Number(n.into());
            }
            // Beyond 64 bits: every digit kept (a canonical JSON integer).
            if let Ok(n) = text.strip_prefix('+').unwrap_or(text).parse::<Number>() {
                return Value::Number(n);
            }
        }
        let float_like = text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
        if float_like {
            if let Ok(f) = text.parse::<f64>() {
                if let Some(n) = Number::from_f64(f) {
                    return Value::Number(n);
                }
            }
        }
    }
    Value::String(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_types() {
        let doc = parse("a: 1\nb:\n  c: [x, 'y', 2.5]\n  d: ~\ne: 2026-11-02\n").unwrap();
        assert_eq!(
            doc.value,
            serde_json::json!({"a": 1, "b": {"c": ["x", "y", 2.5], "d": null}, "e": "2026-11-02"})
        );
        assert_eq!(doc.key_loc("/b/c"), Loc { line: 3, col: 3 });
        assert_eq!(doc.value_loc("/b/c/1"), Loc { line: 3, col: 10 });
        assert_eq!(doc.value_loc("/b/c/9/z"), Loc { line: 3, col: 6 });
    }

    #[test]
    fn duplicate_keys_are_all_reported() {
        let errs = parse("a: 1\na: 2\nb: {x: 1, x: 2}\n").unwrap().problems;
        let lines: Vec<_> = errs
            .iter()
            .map(|e| (e.loc.line, e.message.clone()))
            .collect();
        assert_eq!(
            lines,
            vec![
                (2, "duplicate key `a`".to_owned()),
                (3, "duplicate key `x`".to_owned())
            ]
        );
    }

    #[test]
    fn aliases_count_every_repeated_node() {
        let doc = parse("a: &a [1, {b: 2}]\nc: *a\nd: &d [*a, *a]\ne: *d\n").unwrap();
        // `*a` is 4 nodes; `d` holds two (8), `*d` repeats 1 + 8 = 9.
        assert_eq!(doc.alias_nodes, 4 + 8 + 9);
        assert_eq!(
            doc.value["e"],
            serde_json::json!([[1, {"b": 2}], [1, {"b": 2}]])
        );
    }

    #[test]
    fn alias_bomb_stops_at_the_alias_over_the_budget() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (name, below) in [("b", "a"), ("c", "b"), ("d", "c"), ("e", "d"), ("f", "e")] {
            text.push_str(&format!(
                "{name}: &{name} [{}]\n",
                vec![format!("*{below}"); 10].join(", ")
            ));
        }
        let errors = parse(&text).unwrap_err();
        // `b` adds 110 nodes, `c` 1,110; each `*c` adds 1,111: the eighth crosses 10,000.
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].loc, Loc { line: 4, col: 36 });
        assert!(
            errors[0].message.contains("more than 10000 nodes"),
            "{errors:?}"
        );
    }

    #[test]
    fn the_shipped_providers_are_far_below_the_alias_budget() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("providers");
        let mut files = 0;
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let text = read_file(&entry.path()).unwrap();
            let doc = parse(&text).unwrap();
            assert!(
                doc.alias_nodes * 10 < alias_budget(text.len()),
                "{}: {} nodes from aliases",
                entry.path().display(),
                doc.alias_nodes
            );
            files += 1;
        }
        assert!(files >= 3);
    }

    #[test]
    fn nesting_is_bounded_with_and_without_aliases() {
        let mut block = String::new();
        for level in 0..MAX_DEPTH {
            block.push_str(&format!("{}a:\n", " ".repeat(level)));
        }
        let errors = parse(&block).unwrap_err();
        assert_eq!(errors[0].loc.line, MAX_DEPTH, "{errors:?}");
        assert!(
            errors[0].message.contains("nest deeper than 64"),
            "{errors:?}"
        );
        let ok = &block[..block.rfind(" a:").unwrap()];
        assert!(parse(ok).is_ok());

        let mut chain = String::from("a0: &a0 [x]\n");
        for level in 1..MAX_DEPTH {
            chain.push_str(&format!("a{level}: &a{level} [*a{}]\n", level - 1));
        }
        let errors = parse(&chain).unwrap_err();
        assert_eq!(errors[0].loc.line, MAX_DEPTH - 1, "{errors:?}");
        assert!(
            errors[0].message.contains("this alias makes values nest"),
            "{errors:?}"
        );
    }

    #[test]
    fn syntax_error_has_position() {
        let errs = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.starts_with("invalid YAML"), "{:?}", errs[0]);
    }
}
