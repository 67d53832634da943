//! Igor's JSON <-> XML conversion, reproduced byte for byte.
//!
//! Why this module exists: everything healthpull stores lands in the XML database of an
//! Igor server (igor-iot 0.99.1), and everything it reads back comes out of it. Igor
//! converts with two functions in `igor/xmlDatabase.py`: `_elementFromTagAndData` (a
//! Python object to a DOM element, serialised by minidom's `toxml()`) and
//! `_tagAndDictFromElement` (an element to a Python object, i.e. a JSON reply). To write
//! XML that is identical to what the old Python plugin produced, and to read Igor's
//! replies with the same (lossy) typing, both directions are re-implemented here with
//! all their quirks. `tests/integration/xml.rs` checks the recorded vectors and
//! `tests/integration/igor_converter.rs` compares against Igor's own code.
//!
//! # Writing (`to_igor_xml`, `write_igor_xml`, `try_to_igor_xml`, `check_doc`)
//!
//! One writer and one check, for two kinds of tree: a `serde_json::Value` and an indexed
//! JSON text (`transform::Doc`, what `to-xml` reads from stdin), walked through the same
//! generic code, so a rule exists once and both give the same bytes and the same errors.
//! A `Doc` holds no duplicate keys: a text with them is indexed from `serde_json`'s
//! `Value`, which keeps the last value at the first key's place, as Python's dict does.
//!
//! * An element name is the key if it matches `^[a-zA-Z_][-_.a-zA-Z0-9]*$` and is not
//!   `_e`; otherwise the element is `<_e _e="key">`. Python's `$` also matches before
//!   one trailing `\n`, so `"abc\n"` counts as a valid name (as in Igor).
//! * A non-object value becomes one text node: `null` and `false` -> empty, `true` ->
//!   `true`, numbers as Python's `str()` prints them, a list as Python's `repr()`
//!   (`[1, 'a', None, {'k': True}]`). Characters Igor considers illegal in XML 1.0
//!   (C0 controls except tab and newline, so carriage return too; `U+007F`-`U+0084`,
//!   `U+0086`-`U+009F`, `U+FDD0`-`U+FDDF`, `U+FFFE`, `U+FFFF`) are deleted from these
//!   texts.
//! * An object: each key in order; a list value gives one repeated child per item (an
//!   empty list gives nothing); `#text` gives text node(s) written as they are;
//!   `@name` is an error in Igor (HTTP 500), as is a `#text` that is not a string or a
//!   list of strings.
//! * The one deviation: Igor deletes illegal characters from plain values only and
//!   writes them unchanged into `#text` nodes and `_e` attribute values
//!   (`{"a\u0007b": 1}` -> `<_e _e="a\x07b">`), which no XML parser, Igor's own
//!   included, reads back. healthpull deletes them there too, so everything it writes is
//!   well-formed XML 1.0; such a key reads back without the deleted characters.
//! * Serialisation is minidom's: `&`, `<`, `>` and `"` are escaped in text and in the
//!   `_e` attribute, `'` is not; an element with no child nodes prints as `<v/>`, one
//!   with an (even empty) text node as `<v></v>`. Hence `{}` -> `<v/>` but `null` ->
//!   `<v></v>`.
//!
//! [`write_sensors_xml`] writes a compact sensor tree (`sensors::Sensors`) exactly as
//! [`write_igor_xml`] writes its `Value` form, and [`WritableDoc::write_xml`] a checked
//! document, both streaming to an `io::Write`: elements go out as they are formatted,
//! through a small buffer.
//!
//! # Reading (`igor_xml_to_value`, `igor_xml_to_value_verbatim`)
//!
//! The XML is parsed the way minidom (expat) does: line ends and attribute whitespace
//! are normalised, comments and processing instructions split text nodes, the content
//! of a non-empty CDATA section is ignored (Igor only looks at text nodes) but splits
//! them as well. Then Igor's rules: attributes first as `"@name"` (namespace
//! declarations before the others, as minidom orders them), then one key per child
//! element (repeated tags -> a list, one child is never a list), escaped `_e` elements
//! under their original name with `"@_e"` kept in their value; text nodes that are
//! empty after Python's `str.strip()` are ignored; a lone text becomes the value
//! (typed: `int()`, then `float()`, then `null`/`true`/`false`, else the string), a
//! text beside attributes or children goes under `"#text"` as a string (several ->
//! a list); nothing at all -> `{}`. Nothing is stripped: namespaced (hidden) data comes
//! back as in Igor's `.VARIANT=raw`.

use std::fmt::{self, Write as _};
use std::io;

use quick_xml::events::{BytesStart, Event};
use serde_json::{Map, Number, Value};

use crate::sensors::{Cell, Node, PARALLEL_ROWS, Segment, Sensors, Table, integer_magnitude};
use crate::transform::{Doc, Item};

/// Why a conversion failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XmlError {
    /// A `#text` key holds something else than a string or a list of strings. Igor fails
    /// with `TypeError: node contents must be a string` (HTTP 500).
    #[error(
        "`#text` at {pointer} must be a string or a list of strings, found {found} \
         (Igor fails with TypeError)"
    )]
    TextNotString {
        /// JSON pointer (RFC 6901) of the offending value inside the converted value.
        pointer: String,
        /// The JSON type found instead.
        found: &'static str,
    },
    /// A key starting with `@`, meant as an attribute. Igor cannot write attributes from
    /// JSON or Python data: it fails with `HierarchyRequestErr` (HTTP 500).
    #[error(
        "key {key:?} at {pointer} would be an attribute, which Igor cannot write from JSON \
         (it fails with HierarchyRequestErr)"
    )]
    AttributeKey {
        /// JSON pointer (RFC 6901) of the key inside the converted value.
        pointer: String,
        /// The key, `@` included.
        key: String,
    },
    /// The XML text is not a well-formed document (or uses something Igor's parser
    /// rejects, e.g. an undeclared entity or a character not allowed in XML 1.0).
    #[error("malformed XML at byte {position}: {message}")]
    Malformed {
        /// Byte offset in the input where the problem was noticed.
        position: u64,
        /// What is wrong.
        message: String,
    },
}

/// Converts `value` to the XML element Igor stores for it under `tag`, without checking.
///
/// Convenience wrapper around [`write_igor_xml`], with the same precondition.
///
/// The result has no trailing newline. Igor's REST API answers a `GET` with
/// `Accept: application/xml` with the element followed by one `\n`
/// (`<jack>...</jack>\n`), so a `to-xml --tag TAG` command, which reads a JSON value
/// from stdin (outside input: use the checked [`try_to_igor_xml`]), prints the result
/// plus `"\n"` to be byte-identical with what a later `GET` of that element returns.
/// This is the conversion of a JSON *value*: a REST `PUT` with a JSON body moreover
/// requires an object and unwraps a one-key object `{"TAG": inner}` to `inner`, which
/// is the caller's business.
#[must_use]
pub fn to_igor_xml(tag: &str, value: &Value) -> String {
    let mut out = String::new();
    write_igor_xml(&mut out, tag, value);
    out
}

/// Appends the XML element Igor stores for `value` under `tag` to `out`.
///
/// This is the fast path: one pass over the tree, text escaped in place, no allocation
/// per node (except for lists nested in lists, which Igor writes as Python `repr()`
/// text).
///
/// Precondition: no key in `value` starts with `@`, and every `#text` holds a string
/// or a list of strings. Igor fails on other trees (HTTP 500). Use this function for
/// trees whose keys healthpull controls, such as the sensor trees the engine builds;
/// anything that may carry foreign keys (raw provider JSON — some APIs use keys like
/// `@odata.context` — user input, stdin) goes through [`try_to_igor_xml`]. On a tree
/// that breaks the precondition this function still writes well-formed, deterministic
/// output, but not what Igor would do: an `@name` key becomes an ordinary escaped child
/// `<_e _e="@name">`, a non-string `#text` item is written like a plain value.
pub fn write_igor_xml(out: &mut String, tag: &str, value: &Value) {
    let mut xml = Out::memory(std::mem::take(out));
    write_element(&mut xml, ElementName::new(tag), value, value.shape());
    *out = xml.text;
}

/// The element Igor stores for a sensor tree under `tag`, as text
/// ([`write_sensors_xml`] into memory).
pub fn sensors_to_xml(tag: &str, tree: &Sensors) -> String {
    let mut out = Vec::new();
    // Writing to memory cannot fail, and the writer writes UTF-8 only.
    let _ = write_sensors_xml(&mut out, tag, tree);
    String::from_utf8(out).unwrap_or_default()
}

/// Writes the element Igor stores for a sensor tree under `tag` to `out`: the same
/// bytes as [`write_igor_xml`] of `tree.to_value()` (same precondition), without
/// building that `Value` or the whole text. Nothing follows the element (no newline).
///
/// # Errors
///
/// Those of `out`.
pub fn write_sensors_xml(out: &mut impl io::Write, tag: &str, tree: &Sensors) -> io::Result<()> {
    let mut xml = Out::streaming(out);
    let name = ElementName::new(tag);
    name.push_open(&mut xml.text);
    let mut has_child_nodes = false;
    for (key, node) in &tree.outputs {
        match node {
            Node::Value(value) => write_member(&mut xml, key, value, &mut has_child_nodes),
            // `#text` lists are text nodes, not elements: as `Value`s, like the rest.
            Node::List(_) if key == "#text" => {
                write_member(&mut xml, key, &node.to_value(), &mut has_child_nodes);
            }
            Node::List(segments) => {
                let child_name = ElementName::new(key);
                for segment in segments {
                    match segment {
                        Segment::Table(table) => {
                            write_table(&mut xml, child_name, table, &mut has_child_nodes);
                        }
                    }
                }
            }
        }
        xml.boundary();
    }
    if has_child_nodes {
        name.push_close(&mut xml.text);
    } else {
        xml.text.push_str("/>");
    }
    xml.finish()
}

/// The rows of `table`, each an element `child_name`, after what `xml` holds.
fn write_table(
    xml: &mut Out<'_>,
    child_name: ElementName<'_>,
    table: &Table,
    has_child_nodes: &mut bool,
) {
    let rows = table.len();
    if rows < PARALLEL_ROWS {
        write_rows(xml, child_name, table, 0..rows, has_child_nodes);
        return;
    }
    let middle = rows / 2;
    // The first row opens the parent's content (`>`): the second half, rendered apart,
    // then only ever follows rows.
    write_rows(xml, child_name, table, 0..1, has_child_nodes);
    let ((), pieces) = crate::halves::both(
        || write_rows(xml, child_name, table, 1..middle, has_child_nodes),
        || {
            let mut out = Out::collecting();
            let mut open = true;
            write_rows(&mut out, child_name, table, middle..rows, &mut open);
            out.into_pieces()
        },
    );
    xml.append_pieces(pieces);
}

/// Rows `range` of `table` as elements `child_name`.
fn write_rows(
    xml: &mut Out<'_>,
    child_name: ElementName<'_>,
    table: &Table,
    range: std::ops::Range<usize>,
    has_child_nodes: &mut bool,
) {
    let mut columns: Vec<ColumnTags<'_>> =
        table.columns().iter().map(|c| ColumnTags::new(c)).collect();
    let row_tags = RowTags::new(child_name, &columns);
    for row in range {
        open_content(&mut xml.text, has_child_nodes);
        write_row(xml, &row_tags, table, &mut columns, row);
        xml.boundary();
    }
}

/// The element of a table's rows, its tags rendered once: `<name` (then `>` or `/>`)
/// and `</name>`, and for a row with every cell present and plain (the usual row) the
/// text between its values: `<name><first>`, `</first><second>`, ..., `</last></name>`.
struct RowTags {
    open: String,
    close: String,
    /// Empty when a column holds text nodes (`#text`): those rows take the long way.
    joints: Vec<String>,
}

impl RowTags {
    fn new(name: ElementName<'_>, columns: &[ColumnTags<'_>]) -> Self {
        let mut open = String::new();
        name.push_open(&mut open);
        let mut close = String::new();
        name.push_close(&mut close);
        let mut joints = Vec::new();
        if !columns.is_empty() && !columns.iter().any(|c| c.text_nodes) {
            let mut joint = format!("{open}>");
            for column in columns {
                joint.push_str(&column.open);
                joints.push(std::mem::take(&mut joint));
                joint.push_str(&column.close);
            }
            joint.push_str(&close);
            joints.push(joint);
        }
        RowTags {
            open,
            close,
            joints,
        }
    }
}

/// A table column's element with its tags rendered once (`<name>` and `</name>`), and
/// the last string cell written in it with the text it gave: a column such as a
/// record's date repeats one cell on every row, escaped once and copied after that.
struct ColumnTags<'a> {
    tag: &'a str,
    /// `#text`: text nodes, not elements.
    text_nodes: bool,
    open: String,
    close: String,
    /// The text range of the last string cell written.
    last: Option<(u32, u32)>,
    /// Its escaped text, once it repeated (empty before).
    escaped: String,
}

impl<'a> ColumnTags<'a> {
    fn new(tag: &'a str) -> Self {
        let name = ElementName::new(tag);
        let mut open = String::new();
        name.push_open(&mut open);
        open.push('>');
        let mut close = String::new();
        name.push_close(&mut close);
        ColumnTags {
            tag,
            text_nodes: tag == "#text",
            open,
            close,
            last: None,
            escaped: String::new(),
        }
    }

    /// The text of a present, plain cell (not [`Cell::Other`]) as its element holds it.
    #[inline]
    fn push_value(&mut self, out: &mut String, table: &Table, cell: &Cell) {
        match cell {
            Cell::Str(a, b) => {
                let range = Some((*a, *b));
                if self.last != range {
                    self.last = range;
                    self.escaped.clear();
                    push_escaped(out, table.text(*a, *b));
                } else if self.escaped.is_empty() {
                    let start = out.len();
                    push_escaped(out, table.text(*a, *b));
                    self.escaped.push_str(&out[start..]);
                } else {
                    out.push_str(&self.escaped);
                }
            }
            Cell::Num(a, b) => push_python_number_text(out, table.text(*a, *b)),
            Cell::Int(integer) => push_signed_decimal(out, *integer),
            Cell::UInt(integer) => push_decimal(out, *integer),
            Cell::Bool(true) => out.push_str("true"),
            Cell::Bool(false) | Cell::Absent | Cell::Other(_) => {}
        }
    }
}

/// Row `row` of a table as [`write_element`] writes its entry object.
fn write_row(
    xml: &mut Out<'_>,
    tags: &RowTags,
    table: &Table,
    columns: &mut [ColumnTags<'_>],
    row: usize,
) {
    let cells = table.row(row);
    if !tags.joints.is_empty()
        && cells
            .iter()
            .all(|c| !matches!(c, Cell::Absent | Cell::Other(_)))
    {
        let out = &mut xml.text;
        for ((column, cell), joint) in columns.iter_mut().zip(cells).zip(&tags.joints) {
            out.push_str(joint);
            column.push_value(out, table, cell);
        }
        if let Some(last) = tags.joints.last() {
            out.push_str(last);
        }
        return;
    }
    xml.text.push_str(&tags.open);
    let mut has_child_nodes = false;
    for (column, cell) in columns.iter_mut().zip(cells) {
        match cell {
            Cell::Absent => {}
            _ if column.text_nodes || matches!(cell, Cell::Other(_)) => {
                if let Some(value) = table.cell_value(cell) {
                    write_member(xml, column.tag, &value, &mut has_child_nodes);
                }
            }
            _ => {
                let out = &mut xml.text;
                open_content(out, &mut has_child_nodes);
                out.push_str(&column.open);
                column.push_value(out, table, cell);
                out.push_str(&column.close);
            }
        }
    }
    if has_child_nodes {
        xml.text.push_str(&tags.close);
    } else {
        xml.text.push_str("/>");
    }
}

/// Like [`to_igor_xml`], but fails where Igor fails.
///
/// # Errors
///
/// [`XmlError::AttributeKey`] for a key starting with `@`, and
/// [`XmlError::TextNotString`] for a `#text` that is not a string or a list of strings;
/// the first problem in document order is reported, like Igor's exception.
pub fn try_to_igor_xml(tag: &str, value: &Value) -> Result<String, XmlError> {
    check_writable(value)?;
    Ok(to_igor_xml(tag, value))
}

/// [`try_to_igor_xml`] of an indexed JSON text (`transform::Doc`), read straight from
/// its index without building a `Value`: the same bytes, the same errors, with the same
/// rules (one implementation walks both). A text with duplicate keys is indexed from
/// `serde_json`'s `Value` (`Doc::decode`), which keeps the last value at the first key's
/// place, as Python's `json.loads` does.
///
/// # Errors
///
/// As [`try_to_igor_xml`]; nothing is written before the whole document is checked.
pub fn try_doc_to_igor_xml(tag: &str, doc: &Doc) -> Result<String, XmlError> {
    let mut xml = Out::memory(String::new());
    check_doc(doc)?.write(&mut xml, tag);
    Ok(xml.text)
}

/// Checks that Igor can write `doc` (see [`try_to_igor_xml`]); the result writes it.
///
/// # Errors
///
/// As [`try_to_igor_xml`].
pub fn check_doc(doc: &Doc) -> Result<WritableDoc<'_>, XmlError> {
    let root = DocNode { doc, at: 0 };
    check_writable(root)?;
    Ok(WritableDoc { root })
}

/// An indexed JSON text that Igor can write ([`check_doc`]).
#[derive(Clone, Copy)]
pub struct WritableDoc<'a> {
    root: DocNode<'a>,
}

impl WritableDoc<'_> {
    /// Writes the element Igor stores for the document under `tag` to `out` (the bytes
    /// of [`try_doc_to_igor_xml`]), streaming: the text goes out in pieces as it is
    /// written. Nothing follows the element (no newline).
    ///
    /// # Errors
    ///
    /// Those of `out`.
    pub fn write_xml(&self, out: &mut impl io::Write, tag: &str) -> io::Result<()> {
        let mut xml = Out::streaming(out);
        self.write(&mut xml, tag);
        xml.finish()
    }

    fn write(&self, xml: &mut Out<'_>, tag: &str) {
        write_element(xml, ElementName::new(tag), self.root, self.root.shape());
    }
}

/// Parses one XML element (a document; an XML declaration and surrounding whitespace,
/// comments or processing instructions are allowed) into its name and the value Igor's
/// JSON interface returns for it (`GET` with `Accept: application/json` is
/// `{name: value}`), with Igor's typing of leaf texts.
///
/// Integers keep all their digits at any size, as Python's `int()` does. One deviation,
/// where Igor's answer is not representable in `serde_json::Value`: a text that
/// Python's `float()` turns into NaN or an infinity (`"NaN"`, `"-inf"`, `"1e999"`)
/// stays a string (Igor emits the bare tokens `NaN`/`Infinity`, invalid JSON).
///
/// # Errors
///
/// [`XmlError::Malformed`] when `xml` is not one well-formed element or uses what
/// Igor's parser (expat) rejects: undefined entities, characters outside XML 1.0.
pub fn igor_xml_to_value(xml: &str) -> Result<(String, Value), XmlError> {
    parse_document(xml, Leaves::Typed)
}

/// Like [`igor_xml_to_value`], but every text is kept as a JSON string exactly as
/// stored: no `int()`/`float()`/`null`/`true`/`false` typing and no whitespace trimming
/// (`<v> 007 </v>` -> `" 007 "`). The structure rules are the same: a text that is empty
/// after trimming still counts as absent (`<v>  </v>` -> `{}`), so indentation between
/// elements never shows up.
///
/// # Errors
///
/// As [`igor_xml_to_value`].
pub fn igor_xml_to_value_verbatim(xml: &str) -> Result<(String, Value), XmlError> {
    parse_document(xml, Leaves::Verbatim)
}

// ---------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------

/// A JSON tree the writer walks: a `serde_json::Value` or a node of an indexed JSON
/// document (`transform::Doc`). Both show the same nodes, so each conversion rule
/// (and each check) is written once, for both.
trait Tree<'a>: Copy {
    /// What this node is.
    fn shape(self) -> Shape<'a>;
    /// The items of a list, in order (nothing for another node).
    fn items(self) -> impl Iterator<Item = Self>;
    /// The members of an object, in order, without duplicate keys (nothing for another
    /// node).
    fn members(self) -> impl Iterator<Item = (&'a str, Self)>;
}

/// One node of a [`Tree`], as a document's node shows itself ([`Item`]): integers in
/// their simplest form may come as machine integers, any number as its token.
type Shape<'a> = Item<'a>;

impl<'a> Tree<'a> for &'a Value {
    fn shape(self) -> Shape<'a> {
        match self {
            Value::Null => Shape::Null,
            Value::Bool(b) => Shape::Bool(*b),
            Value::Number(number) => Shape::Number(number.as_str()),
            Value::String(text) => Shape::Str(text),
            Value::Array(_) => Shape::Array,
            Value::Object(_) => Shape::Object,
        }
    }

    fn items(self) -> impl Iterator<Item = Self> {
        match self {
            Value::Array(items) => items.iter(),
            _ => [].iter(),
        }
    }

    fn members(self) -> impl Iterator<Item = (&'a str, Self)> {
        let map = match self {
            Value::Object(map) => Some(map),
            _ => None,
        };
        map.into_iter()
            .flatten()
            .map(|(key, value)| (key.as_str(), value))
    }
}

/// A node of an indexed document: the document and the node's tape index.
#[derive(Clone, Copy)]
struct DocNode<'a> {
    doc: &'a Doc,
    at: usize,
}

impl<'a> Tree<'a> for DocNode<'a> {
    #[inline]
    fn shape(self) -> Shape<'a> {
        self.doc.item(self.at)
    }

    #[inline]
    fn items(self) -> impl Iterator<Item = Self> {
        let doc = self.doc;
        doc.items(self.at).map(move |at| DocNode { doc, at })
    }

    #[inline]
    fn members(self) -> impl Iterator<Item = (&'a str, Self)> {
        let doc = self.doc;
        doc.members(self.at)
            .map(move |(key, at)| (key, DocNode { doc, at }))
    }
}

/// Where the writer puts its text: a `String`, which a streaming writer hands to its
/// `io::Write` (or a collecting writer keeps) in pieces of about [`CHUNK`] bytes,
/// between elements (so a piece never splits a character and the whole text is never
/// one allocation that grows by copying).
struct Out<'w> {
    text: String,
    sink: Sink<'w>,
    /// The first error of the sink; nothing more is handed to it after one.
    error: Option<io::Error>,
}

enum Sink<'w> {
    /// The text stays in `text`.
    Memory,
    /// Pieces are written here.
    Write(&'w mut dyn io::Write),
    /// Pieces are kept, in order.
    Pieces(Vec<String>),
}

/// Streamed text is handed on in pieces of about this size.
const CHUNK: usize = 1 << 16;

impl<'w> Out<'w> {
    /// Text appended to `text`, kept in memory.
    fn memory(text: String) -> Out<'static> {
        Out {
            text,
            sink: Sink::Memory,
            error: None,
        }
    }

    fn streaming(sink: &'w mut dyn io::Write) -> Self {
        Out {
            text: String::with_capacity(CHUNK + 4096),
            sink: Sink::Write(sink),
            error: None,
        }
    }

    /// Text kept in pieces ([`Out::into_pieces`]).
    fn collecting() -> Out<'static> {
        Out {
            text: String::with_capacity(CHUNK + 4096),
            sink: Sink::Pieces(Vec::new()),
            error: None,
        }
    }

    /// Between two elements: hands a full piece on when streaming or collecting.
    fn boundary(&mut self) {
        if self.text.len() >= CHUNK && !matches!(self.sink, Sink::Memory) {
            self.hand_on();
        }
    }

    #[cold]
    fn hand_on(&mut self) {
        match &mut self.sink {
            Sink::Memory => {}
            Sink::Write(sink) => {
                if self.error.is_none()
                    && let Err(error) = sink.write_all(self.text.as_bytes())
                {
                    self.error = Some(error);
                }
                self.text.clear();
            }
            Sink::Pieces(pieces) => {
                let next = String::with_capacity(CHUNK + 4096);
                pieces.push(std::mem::replace(&mut self.text, next));
            }
        }
    }

    /// Appends text rendered elsewhere (whole pieces), after what this holds.
    fn append_pieces(&mut self, pieces: Vec<String>) {
        for piece in pieces {
            if matches!(self.sink, Sink::Memory) {
                self.text.push_str(&piece);
            } else {
                self.hand_on();
                self.text = piece;
                self.hand_on();
            }
        }
    }

    /// The pieces of a collecting writer, the rest included.
    fn into_pieces(mut self) -> Vec<String> {
        self.hand_on();
        match self.sink {
            Sink::Pieces(pieces) => pieces,
            Sink::Memory | Sink::Write(_) => vec![self.text],
        }
    }

    /// Hands the rest on.
    fn finish(mut self) -> io::Result<()> {
        self.hand_on();
        self.error.map_or(Ok(()), Err)
    }
}

/// An element name with its escaping decided once (a list value writes many elements
/// with the same key).
#[derive(Clone, Copy)]
struct ElementName<'a> {
    tag: &'a str,
    escaped: bool,
}

impl<'a> ElementName<'a> {
    fn new(tag: &'a str) -> Self {
        ElementName {
            tag,
            escaped: !is_igor_tag(tag),
        }
    }

    fn push_open(self, out: &mut String) {
        if self.escaped {
            out.push_str("<_e _e=\"");
            push_escaped(out, self.tag);
            out.push('"');
        } else {
            out.push('<');
            out.push_str(self.tag);
        }
    }

    fn push_close(self, out: &mut String) {
        out.push_str("</");
        out.push_str(if self.escaped { "_e" } else { self.tag });
        out.push('>');
    }
}

/// Igor's `TAG_PATTERN` (`^[a-zA-Z_][-_.a-zA-Z0-9]*$`, where `$` also matches before a
/// final `\n`) and not the reserved `_e`.
fn is_igor_tag(tag: &str) -> bool {
    let name = tag.strip_suffix('\n').unwrap_or(tag);
    let bytes = name.as_bytes();
    let Some((&first, rest)) = bytes.split_first() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == b'_')
        && rest
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && tag != "_e"
}

/// The element for `value`, whose shape is `shape` (each node's shape is read once).
fn write_element<'a, T: Tree<'a>>(
    xml: &mut Out<'_>,
    name: ElementName<'_>,
    value: T,
    shape: Shape<'a>,
) {
    let out = &mut xml.text;
    name.push_open(out);
    if !matches!(shape, Shape::Object) {
        out.push('>');
        push_plain_text(out, value, shape);
        name.push_close(out);
        return;
    }
    // minidom prints `<v/>` when the element got no child node at all.
    let mut has_child_nodes = false;
    for (key, child) in value.members() {
        write_member(xml, key, child, &mut has_child_nodes);
    }
    if has_child_nodes {
        name.push_close(&mut xml.text);
    } else {
        xml.text.push_str("/>");
    }
}

/// The child nodes of one member of an object: an element per item of a list (or the
/// one value), or text nodes for `#text`.
fn write_member<'a, T: Tree<'a>>(
    xml: &mut Out<'_>,
    key: &str,
    child: T,
    has_child_nodes: &mut bool,
) {
    if key == "#text" {
        for_each_item(child, |item, shape| {
            let out = &mut xml.text;
            open_content(out, has_child_nodes);
            match shape {
                Shape::Str(text) => push_escaped(out, text),
                // Outside the precondition (Igor: TypeError); see write_igor_xml.
                _ => push_plain_text(out, item, shape),
            }
        });
    } else {
        let child_name = ElementName::new(key);
        for_each_item(child, |item, shape| {
            open_content(&mut xml.text, has_child_nodes);
            write_element(xml, child_name, item, shape);
            xml.boundary();
        });
    }
}

/// Calls `each` with every item of a list, or with the one value that is not a list,
/// and its shape.
fn for_each_item<'a, T: Tree<'a>>(value: T, mut each: impl FnMut(T, Shape<'a>)) {
    match value.shape() {
        Shape::Array => value.items().for_each(|item| each(item, item.shape())),
        shape => each(value, shape),
    }
}

fn open_content(out: &mut String, has_child_nodes: &mut bool) {
    if !*has_child_nodes {
        out.push('>');
        *has_child_nodes = true;
    }
}

/// A non-object value as the text Igor writes for it (`"%s" % data` after mapping
/// `None` and `False` to `''` and `True` to `'true'`), escaped.
fn push_plain_text<'a, T: Tree<'a>>(out: &mut String, value: T, shape: Shape<'a>) {
    match shape {
        Shape::Null | Shape::Bool(false) => {}
        Shape::Bool(true) => out.push_str("true"),
        // Digits, signs, '.', 'e' and '+' need neither escaping nor removal.
        Shape::UInt(integer) => push_decimal(out, integer),
        Shape::Int(integer) => push_signed_decimal(out, integer),
        Shape::Number(text) => push_python_number_text(out, text),
        Shape::Str(text) => push_escaped(out, text),
        Shape::Array | Shape::Object => {
            let mut repr = String::new();
            push_python_repr(&mut repr, value);
            push_escaped(out, &repr);
        }
    }
}

/// Appends `text` escaped like minidom's `_write_data` (`&`, `<`, `"`, `>`), in one pass
/// over the bytes, deleting the characters Igor's `ILLEGAL_XML_CHARACTERS_PATTERN`
/// matches on the way. Igor deletes them from plain values only; healthpull also from
/// `#text` and the `_e` attribute, so that every element it writes is well-formed.
fn push_escaped(out: &mut String, text: &str) {
    let bytes = text.as_bytes();
    let mut copied_up_to = 0;
    let mut index = 0;
    while let Some(offset) = bytes[index..]
        .iter()
        .position(|&byte| ATTENTION[usize::from(byte)])
    {
        index += offset;
        let (replacement, width) = match bytes[index] {
            b'&' => ("&amp;", 1),
            b'<' => ("&lt;", 1),
            b'>' => ("&gt;", 1),
            b'"' => ("&quot;", 1),
            // Other ASCII bytes are flagged only when they are illegal controls.
            0x00..=0x7F => ("", 1),
            // U+0080..U+0084 and U+0086..U+009F are C2 80..84 / C2 86..9F in UTF-8.
            0xC2 if matches!(bytes.get(index + 1), Some(0x80..=0x84 | 0x86..=0x9F)) => ("", 2),
            // U+FDD0..U+FDDF are EF B7 90..9F, U+FFFE/U+FFFF are EF BF BE/BF.
            0xEF if matches!(
                (bytes.get(index + 1), bytes.get(index + 2)),
                (Some(0xB7), Some(0x90..=0x9F)) | (Some(0xBF), Some(0xBE..=0xBF))
            ) =>
            {
                ("", 3)
            }
            _ => {
                index += 1;
                continue;
            }
        };
        // `index` is at an ASCII byte or a UTF-8 lead byte: both are char boundaries.
        out.push_str(&text[copied_up_to..index]);
        out.push_str(replacement);
        index += width;
        copied_up_to = index;
    }
    out.push_str(&text[copied_up_to..]);
}

/// Bytes [`push_escaped`] must look at: markup, the illegal ASCII controls, and the
/// lead bytes of the illegal non-ASCII characters.
static ATTENTION: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = matches!(
            byte as u8,
            b'&' | b'<' | b'>' | b'"' | 0x00..=0x08 | 0x0B..=0x1F | 0x7F | 0xC2 | 0xEF
        );
        byte += 1;
    }
    table
};

/// Python's `str()` of a JSON number: an integer as an `int`, exact at any size,
/// anything else as a `float` (`json.loads` makes `1.0` and `1e5` floats; serde_json
/// keeps every number's text, see `arbitrary_precision` in docs/ARCHITECTURE.md), from
/// the number's text (a token `serde_json` has accepted).
fn push_python_number_text(out: &mut String, text: &str) {
    if let Some(magnitude) = integer_magnitude(text) {
        let significant = magnitude.trim_start_matches('0');
        if significant.is_empty() {
            // `-0` is the int 0 in Python.
            out.push('0');
        } else {
            if text.starts_with('-') {
                out.push('-');
            }
            out.push_str(significant);
        }
    } else if let Ok(float) = text.parse::<f64>() {
        if float.is_finite() {
            push_python_float(out, float);
        } else {
            // A literal beyond the doubles (`1e999`): Python's float is infinite.
            out.push_str(if float < 0.0 { "-inf" } else { "inf" });
        }
    }
}

/// Appends `value` in decimal, with its sign.
fn push_signed_decimal(out: &mut String, value: i64) {
    if value < 0 {
        out.push('-');
    }
    push_decimal(out, value.unsigned_abs());
}

/// Appends the decimal digits of `value` (cheaper than going through `fmt`).
fn push_decimal(out: &mut String, value: u64) {
    out.push_str(itoa::Buffer::new().format(value));
}

/// Python's `repr()` (= `str()`) of a finite float: the shortest digits that round-trip,
/// in positional notation (with `.0` when integral) for decimal exponents -4..=15 and in
/// scientific notation (`1e+20`, `1.5e-05`: sign and at least two exponent digits)
/// otherwise.
fn push_python_float(out: &mut String, float: f64) {
    // Rust's `{:e}` also prints the shortest round-trip digits: `-7.53e1`, `1e-5`, `0e0`.
    let mut buffer = StackBuffer::default();
    if write!(buffer, "{float:e}").is_ok() {
        push_python_float_from_exponential(out, buffer.as_bytes());
    } else {
        push_python_float_from_exponential(out, format!("{float:e}").as_bytes());
    }
}

/// Reformats Rust's `{:e}` output (`[-]d[.ddd]e[-]x`) into Python's `repr()` layout.
fn push_python_float_from_exponential(out: &mut String, exponential: &[u8]) {
    let (negative, unsigned) = match exponential.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, exponential),
    };
    let e_position = unsigned.iter().position(|&b| b == b'e');
    let (mantissa, exponent) = match e_position {
        Some(position) => (&unsigned[..position], &unsigned[position + 1..]),
        None => (unsigned, &b"0"[..]),
    };
    let exponent: i32 = std::str::from_utf8(exponent)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(0);
    // The significant digits without the point (at most 17 for an f64).
    let mut digit_buffer = [b'0'; 32];
    let mut digit_count = 0;
    for &b in mantissa.iter().filter(|b| b.is_ascii_digit()) {
        if let Some(slot) = digit_buffer.get_mut(digit_count) {
            *slot = b;
            digit_count += 1;
        }
    }
    let digits = &digit_buffer[..digit_count.max(1)];
    if negative {
        out.push('-');
    }
    // Python: value = 0.DIGITS * 10^decpt; scientific when decpt <= -4 or decpt > 16.
    let decimal_point = exponent + 1;
    if !(-4 < decimal_point && decimal_point <= 16) {
        let (first, others) = digits.split_at(1);
        push_ascii(out, first);
        if !others.is_empty() {
            out.push('.');
            push_ascii(out, others);
        }
        let sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exponent.unsigned_abs());
    } else if decimal_point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n(
            '0',
            decimal_point.unsigned_abs() as usize,
        ));
        push_ascii(out, digits);
    } else {
        let point = decimal_point.unsigned_abs() as usize;
        if point >= digits.len() {
            push_ascii(out, digits);
            out.extend(std::iter::repeat_n('0', point - digits.len()));
            out.push_str(".0");
        } else {
            let (integral, fractional) = digits.split_at(point);
            push_ascii(out, integral);
            out.push('.');
            push_ascii(out, fractional);
        }
    }
}

/// Appends bytes known to be ASCII digits or signs.
fn push_ascii(out: &mut String, ascii: &[u8]) {
    if let Ok(text) = std::str::from_utf8(ascii) {
        out.push_str(text);
    }
}

/// A fixed-size `fmt::Write` target, so that formatting a float does not allocate.
struct StackBuffer {
    bytes: [u8; 64],
    len: usize,
}

impl Default for StackBuffer {
    fn default() -> Self {
        StackBuffer {
            bytes: [0; 64],
            len: 0,
        }
    }
}

impl StackBuffer {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Write for StackBuffer {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let end = self.len + text.len();
        let target = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        target.copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Python's `repr()` of the Python object `json.loads` makes of `value`.
fn push_python_repr<'a, T: Tree<'a>>(out: &mut String, value: T) {
    match value.shape() {
        Shape::Null => out.push_str("None"),
        Shape::Bool(true) => out.push_str("True"),
        Shape::Bool(false) => out.push_str("False"),
        Shape::UInt(integer) => push_decimal(out, integer),
        Shape::Int(integer) => push_signed_decimal(out, integer),
        Shape::Number(text) => push_python_number_text(out, text),
        Shape::Str(text) => push_python_str_repr(out, text),
        Shape::Array => {
            out.push('[');
            for (position, item) in value.items().enumerate() {
                if position > 0 {
                    out.push_str(", ");
                }
                push_python_repr(out, item);
            }
            out.push(']');
        }
        Shape::Object => {
            out.push('{');
            for (position, (key, item)) in value.members().enumerate() {
                if position > 0 {
                    out.push_str(", ");
                }
                push_python_str_repr(out, key);
                out.push_str(": ");
                push_python_repr(out, item);
            }
            out.push('}');
        }
    }
}

/// Python 3.11's `repr()` of a `str`: single quotes unless the text contains `'` and
/// no `"`; `\\`, the quote, `\t`, `\n`, `\r` escaped; other non-printable characters
/// (per Python's `str.isprintable()`, Unicode 14.0.0) as `\xNN`, `\uNNNN` or
/// `\UNNNNNNNN`.
fn push_python_str_repr(out: &mut String, text: &str) {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for character in text.chars() {
        match character {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ if character == quote => {
                out.push('\\');
                out.push(character);
            }
            ' '..='~' => out.push(character),
            _ if is_python_printable(character) => out.push(character),
            _ => {
                let code = u32::from(character);
                let _ = if code < 0x100 {
                    write!(out, "\\x{code:02x}")
                } else if code < 0x1_0000 {
                    write!(out, "\\u{code:04x}")
                } else {
                    write!(out, "\\U{code:08x}")
                };
            }
        }
    }
    out.push(quote);
}

fn is_python_printable(character: char) -> bool {
    !in_ranges(NON_PRINTABLE, u32::from(character))
}

fn in_ranges(ranges: &[(u32, u32)], code: u32) -> bool {
    range_containing(ranges, code).is_some()
}

fn range_containing(ranges: &[(u32, u32)], code: u32) -> Option<(u32, u32)> {
    let after = ranges.partition_point(|&(first, _)| first <= code);
    let &(first, last) = ranges.get(after.checked_sub(1)?)?;
    (first..=last).contains(&code).then_some((first, last))
}

/// Finds where Igor would fail on `value` (see [`try_to_igor_xml`]), in document order.
fn check_writable<'a, T: Tree<'a>>(value: T) -> Result<(), XmlError> {
    // Plain values, lists included, become text: nothing can fail.
    for (key, child) in value.members() {
        if key == "#text" {
            match child.shape() {
                Shape::Str(_) => {}
                Shape::Array => {
                    for (position, item) in child.items().enumerate() {
                        if !matches!(item.shape(), Shape::Str(_)) {
                            return Err(XmlError::TextNotString {
                                pointer: String::new(),
                                found: json_type(item),
                            }
                            .within(&position.to_string())
                            .within(key));
                        }
                    }
                }
                _ => {
                    return Err(XmlError::TextNotString {
                        pointer: String::new(),
                        found: json_type(child),
                    }
                    .within(key));
                }
            }
        } else if key.starts_with('@') {
            return Err(XmlError::AttributeKey {
                pointer: String::new(),
                key: key.to_owned(),
            }
            .within(key));
        } else {
            match child.shape() {
                Shape::Array => {
                    for (position, item) in child.items().enumerate() {
                        if matches!(item.shape(), Shape::Object) {
                            check_writable(item)
                                .map_err(|error| error.within(&position.to_string()).within(key))?;
                        }
                    }
                }
                Shape::Object => check_writable(child).map_err(|error| error.within(key))?,
                // Nothing else has keys.
                _ => {}
            }
        }
    }
    Ok(())
}

impl XmlError {
    /// Prefixes the JSON pointer of a conversion error with one more reference token.
    fn within(mut self, token: &str) -> Self {
        if let XmlError::TextNotString { pointer, .. } | XmlError::AttributeKey { pointer, .. } =
            &mut self
        {
            let escaped = token.replace('~', "~0").replace('/', "~1");
            *pointer = format!("/{escaped}{pointer}");
        }
        self
    }
}

fn json_type<'a, T: Tree<'a>>(value: T) -> &'static str {
    match value.shape() {
        Shape::Null => "null",
        Shape::Bool(_) => "a boolean",
        Shape::UInt(_) | Shape::Int(_) | Shape::Number(_) => "a number",
        Shape::Str(_) => "a string",
        Shape::Array => "a list",
        Shape::Object => "an object",
    }
}

// ---------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------

/// How leaf texts are turned into JSON.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leaves {
    /// Igor's typing of trimmed texts.
    Typed,
    /// Every text kept as an untrimmed string.
    Verbatim,
}

/// An element being read: what `_tagAndDictFromElement` accumulates for it.
struct OpenElement {
    /// The key it gets in its parent (the original name of an `_e` element).
    key: String,
    /// `@attributes`, then children, as they come.
    fields: Map<String, Value>,
    /// Finished text nodes that are not blank.
    texts: Vec<String>,
    /// The text node being built: consecutive text and references form one node, as
    /// in minidom.
    text: Option<String>,
}

impl OpenElement {
    fn new(start: &BytesStart<'_>, position: u64) -> Result<Self, XmlError> {
        let qualified_name = utf8(start.name().into_inner(), position)?;
        // minidom lists namespace declarations before the other attributes.
        let mut declarations = Vec::new();
        let mut others = Vec::new();
        for attribute in start.attributes() {
            let attribute = attribute.map_err(|error| malformed(position, error))?;
            let name = utf8(attribute.key.into_inner(), position)?;
            let value = attribute_value(utf8(&attribute.value, position)?, position)?;
            if name == "xmlns" || name.starts_with("xmlns:") {
                declarations.push((name, value));
            } else {
                others.push((name, value));
            }
        }
        let mut fields = Map::new();
        let mut original_name = None;
        for (name, value) in declarations.into_iter().chain(others) {
            if qualified_name == "_e" && name == "_e" && !value.is_empty() {
                original_name = Some(value.clone());
            }
            fields.insert(format!("@{name}"), Value::String(value));
        }
        Ok(OpenElement {
            key: original_name.unwrap_or_else(|| qualified_name.to_owned()),
            fields,
            texts: Vec::new(),
            text: None,
        })
    }

    /// Ends the current text node (another kind of node follows).
    fn end_text_node(&mut self) {
        if let Some(text) = self.text.take()
            && text.chars().any(|character| !is_python_space(character))
        {
            self.texts.push(text);
        }
    }

    fn push_text(&mut self, text: &str) {
        self.text.get_or_insert_with(String::new).push_str(text);
    }

    /// Adds a child element's value: the second child with the same key turns the
    /// entry into a list (in place, so the key keeps its position).
    fn add_child(&mut self, key: String, value: Value) {
        match self.fields.get_mut(&key) {
            Some(Value::Array(items)) => items.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
            None => {
                self.fields.insert(key, value);
            }
        }
    }

    fn finish(mut self, leaves: Leaves) -> (String, Value) {
        self.end_text_node();
        let mut fields = self.fields;
        let kept_text = |text: String| match leaves {
            Leaves::Typed => Value::String(python_strip(&text).to_owned()),
            Leaves::Verbatim => Value::String(text),
        };
        let mut texts = self.texts;
        let value = match (texts.pop(), texts.is_empty()) {
            (None, _) => Value::Object(fields),
            (Some(text), true) if fields.is_empty() => match leaves {
                Leaves::Typed => python_typed(python_strip(&text)),
                Leaves::Verbatim => Value::String(text),
            },
            (Some(text), true) => {
                fields.insert("#text".to_owned(), kept_text(text));
                Value::Object(fields)
            }
            (Some(last), false) => {
                texts.push(last);
                let texts = texts.into_iter().map(kept_text).collect();
                fields.insert("#text".to_owned(), Value::Array(texts));
                Value::Object(fields)
            }
        };
        (self.key, value)
    }
}

fn parse_document(xml: &str, leaves: Leaves) -> Result<(String, Value), XmlError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut open: Vec<OpenElement> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    loop {
        let position = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|error| malformed(reader.error_position(), error))?;
        match event {
            Event::Start(_) | Event::Empty(_) if open.is_empty() && root.is_some() => {
                return Err(malformed(position, "more than one root element"));
            }
            Event::Start(start) => {
                let element = OpenElement::new(&start, position)?;
                if let Some(parent) = open.last_mut() {
                    parent.end_text_node();
                }
                open.push(element);
            }
            Event::Empty(start) => {
                let element = OpenElement::new(&start, position)?;
                let (key, value) = element.finish(leaves);
                match open.last_mut() {
                    Some(parent) => {
                        parent.end_text_node();
                        parent.add_child(key, value);
                    }
                    None => root = Some((key, value)),
                }
            }
            Event::End(_) => {
                let element = open
                    .pop()
                    .ok_or_else(|| malformed(position, "end tag without start tag"))?;
                let (key, value) = element.finish(leaves);
                match open.last_mut() {
                    Some(parent) => parent.add_child(key, value),
                    None => root = Some((key, value)),
                }
            }
            Event::Text(text) => {
                let content = text
                    .xml10_content()
                    .map_err(|error| malformed(position, error))?;
                check_xml_chars(&content, position)?;
                match open.last_mut() {
                    Some(element) => element.push_text(&content),
                    None if content.chars().all(|c| matches!(c, ' ' | '\t' | '\n')) => {}
                    None => return Err(malformed(position, "text outside the root element")),
                }
            }
            Event::GeneralRef(reference) => {
                let name = reference
                    .decode()
                    .map_err(|error| malformed(position, error))?;
                let character = resolve_reference(&name, position)?;
                let element = open
                    .last_mut()
                    .ok_or_else(|| malformed(position, "reference outside the root element"))?;
                let mut encoded = [0; 4];
                element.push_text(character.encode_utf8(&mut encoded));
            }
            Event::CData(data) => {
                let element = open
                    .last_mut()
                    .ok_or_else(|| malformed(position, "CDATA outside the root element"))?;
                // minidom makes a CDATA node (which Igor ignores) only when it has content.
                if !data.is_empty() {
                    element.end_text_node();
                }
            }
            Event::Comment(_) | Event::PI(_) => {
                if let Some(element) = open.last_mut() {
                    element.end_text_node();
                }
            }
            Event::Decl(_) | Event::DocType(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(element) = open.last() {
        return Err(malformed(
            reader.buffer_position(),
            format!("element {:?} is not closed", element.key),
        ));
    }
    root.ok_or_else(|| malformed(reader.buffer_position(), "no root element"))
}

fn malformed(position: u64, message: impl fmt::Display) -> XmlError {
    XmlError::Malformed {
        position,
        message: message.to_string(),
    }
}

fn utf8(bytes: &[u8], position: u64) -> Result<&str, XmlError> {
    std::str::from_utf8(bytes).map_err(|error| malformed(position, error))
}

/// An attribute value as expat reports it: references resolved, and each literal tab,
/// newline, carriage return or CR LF pair replaced by one space.
fn attribute_value(raw: &str, position: u64) -> Result<String, XmlError> {
    check_xml_chars(raw, position)?;
    let mut value = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(index) = rest.find(['&', '\t', '\n', '\r']) {
        value.push_str(&rest[..index]);
        let tail = &rest[index..];
        if let Some(reference) = tail.strip_prefix('&') {
            let end = reference
                .find(';')
                .ok_or_else(|| malformed(position, "unterminated reference in attribute"))?;
            value.push(resolve_reference(&reference[..end], position)?);
            rest = &reference[end + 1..];
        } else {
            value.push(' ');
            rest = tail.strip_prefix("\r\n").unwrap_or(&tail[1..]);
        }
    }
    value.push_str(rest);
    Ok(value)
}

/// Resolves `&name;`: the five predefined entities and character references (to
/// characters XML 1.0 allows). There is no DTD support, like in Igor's data.
fn resolve_reference(name: &str, position: u64) -> Result<char, XmlError> {
    let character = match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => {
            let code = if let Some(hex) = name.strip_prefix("#x") {
                hex.bytes()
                    .all(|b| b.is_ascii_hexdigit())
                    .then(|| u32::from_str_radix(hex, 16).ok())
                    .flatten()
            } else if let Some(decimal) = name.strip_prefix('#') {
                decimal
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| decimal.parse::<u32>().ok())
                    .flatten()
            } else {
                return Err(malformed(position, format!("undefined entity &{name};")));
            };
            code.and_then(char::from_u32).filter(|&c| is_xml_char(c))
        }
    };
    character.ok_or_else(|| malformed(position, format!("invalid character reference &{name};")))
}

/// XML 1.0's `Char` production.
fn is_xml_char(character: char) -> bool {
    matches!(character, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn check_xml_chars(text: &str, position: u64) -> Result<(), XmlError> {
    match text.chars().find(|&character| !is_xml_char(character)) {
        None => Ok(()),
        Some(character) => Err(malformed(
            position,
            format!("character {character:?} is not allowed in XML 1.0"),
        )),
    }
}

/// Python's `str.isspace()`: Unicode `White_Space` plus the separators U+001C..U+001F.
fn is_python_space(character: char) -> bool {
    character.is_whitespace() || ('\u{1C}'..='\u{1F}').contains(&character)
}

/// Python's `str.strip()` without arguments.
fn python_strip(text: &str) -> &str {
    text.trim_matches(is_python_space)
}

/// Igor's typing of a lone, trimmed text: `int()`, else `float()`, else `null`, `true`,
/// `false`, else the text.
fn python_typed(text: &str) -> Value {
    if let Some(integer) = python_int(text) {
        return Value::Number(integer);
    }
    if let Some(float) = python_float(text) {
        // NaN and infinities have no JSON form (Igor writes invalid JSON): keep the text.
        return Number::from_f64(float)
            .map_or_else(|| Value::String(text.to_owned()), Value::Number);
    }
    match text {
        "null" => Value::Null,
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(text.to_owned()),
    }
}

/// Python's `int(text)` (base 10): a sign, then decimal digits of any script with
/// single underscores between them. Exact at any size, as Python's `int`.
fn python_int(text: &str) -> Option<Number> {
    let (negative, body) = split_sign(text);
    let mut rest = body;
    let mut digits = String::new();
    if !python_digit_part(&mut rest, &mut digits) || !rest.is_empty() {
        return None;
    }
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() {
        return Some(Number::from(0u8));
    }
    let sign = if negative { "-" } else { "" };
    // Canonical JSON integer text: `Number` keeps it as it is.
    format!("{sign}{significant}").parse().ok()
}

/// Python's `float(text)`: `[sign] (digitpart ["."] | [digitpart] "." digitpart)
/// [("e"|"E") [sign] digitpart]`, or `inf`/`infinity`/`nan` in any case.
fn python_float(text: &str) -> Option<f64> {
    let (negative, body) = split_sign(text);
    let sign = if negative { -1.0 } else { 1.0 };
    if body.eq_ignore_ascii_case("inf") || body.eq_ignore_ascii_case("infinity") {
        return Some(sign * f64::INFINITY);
    }
    if body.eq_ignore_ascii_case("nan") {
        return Some(f64::NAN);
    }
    let mut number = String::new();
    if negative {
        number.push('-');
    }
    let mut rest = body;
    let integer_digits = python_digit_part(&mut rest, &mut number);
    let mut fraction_digits = false;
    if let Some(after_point) = rest.strip_prefix('.') {
        rest = after_point;
        number.push('.');
        fraction_digits = python_digit_part(&mut rest, &mut number);
    }
    if !integer_digits && !fraction_digits {
        return None;
    }
    if let Some(after_e) = rest.strip_prefix(['e', 'E']) {
        rest = after_e;
        number.push('e');
        let (exponent_negative, after_sign) = split_sign(rest);
        rest = after_sign;
        if exponent_negative {
            number.push('-');
        }
        if !python_digit_part(&mut rest, &mut number) {
            return None;
        }
    }
    if !rest.is_empty() {
        return None;
    }
    number.parse::<f64>().ok()
}

/// Strips one leading `+` or `-`; tells whether it was `-`.
fn split_sign(text: &str) -> (bool, &str) {
    if let Some(rest) = text.strip_prefix('-') {
        (true, rest)
    } else {
        (false, text.strip_prefix('+').unwrap_or(text))
    }
}

/// Consumes Python's `digit (["_"] digit)*` from the front of `rest`, appending the
/// digits as ASCII to `into`. Returns whether there was at least one digit.
fn python_digit_part(rest: &mut &str, into: &mut String) -> bool {
    let Some(first) = take_decimal_digit(rest) else {
        return false;
    };
    into.push(first);
    loop {
        let mut ahead = *rest;
        if let Some(after_underscore) = ahead.strip_prefix('_') {
            ahead = after_underscore;
        }
        match take_decimal_digit(&mut ahead) {
            Some(digit) => {
                into.push(digit);
                *rest = ahead;
            }
            None => return true,
        }
    }
}

/// Takes one decimal digit (Unicode category Nd, as Python's `int()` accepts) from the
/// front of `rest` and returns it as an ASCII digit.
fn take_decimal_digit(rest: &mut &str) -> Option<char> {
    let character = rest.chars().next()?;
    let digit = if character.is_ascii_digit() {
        character
    } else {
        let code = u32::from(character);
        let (zero, _) = range_containing(DECIMAL_DIGITS, code)?;
        // Every range starts at a digit zero and holds whole runs of ten.
        char::from_digit((code - zero) % 10, 10)?
    };
    *rest = &rest[character.len_utf8()..];
    Some(digit)
}

// ---------------------------------------------------------------------------------------
// Unicode tables (Python 3.11)
// ---------------------------------------------------------------------------------------

/// Code point ranges for which Python 3.11's `str.isprintable()` is false (Unicode
/// 14.0.0: categories Cc, Cf, Cs, Co, Cn, Zl, Zp and Zs except the space), as listed by
/// `unicodedata` in the test venv's Python. Python's `repr()` escapes these.
#[rustfmt::skip]
const NON_PRINTABLE: &[(u32, u32)] = &[
    (0x0, 0x1F), (0x7F, 0xA0), (0xAD, 0xAD), (0x378, 0x379), (0x380, 0x383),
    (0x38B, 0x38B), (0x38D, 0x38D), (0x3A2, 0x3A2), (0x530, 0x530), (0x557, 0x558),
    (0x58B, 0x58C), (0x590, 0x590), (0x5C8, 0x5CF), (0x5EB, 0x5EE), (0x5F5, 0x605),
    (0x61C, 0x61C), (0x6DD, 0x6DD), (0x70E, 0x70F), (0x74B, 0x74C), (0x7B2, 0x7BF),
    (0x7FB, 0x7FC), (0x82E, 0x82F), (0x83F, 0x83F), (0x85C, 0x85D), (0x85F, 0x85F),
    (0x86B, 0x86F), (0x88F, 0x897), (0x8E2, 0x8E2), (0x984, 0x984), (0x98D, 0x98E),
    (0x991, 0x992), (0x9A9, 0x9A9), (0x9B1, 0x9B1), (0x9B3, 0x9B5), (0x9BA, 0x9BB),
    (0x9C5, 0x9C6), (0x9C9, 0x9CA), (0x9CF, 0x9D6), (0x9D8, 0x9DB), (0x9DE, 0x9DE),
    (0x9E4, 0x9E5), (0x9FF, 0xA00), (0xA04, 0xA04), (0xA0B, 0xA0E), (0xA11, 0xA12),
    (0xA29, 0xA29), (0xA31, 0xA31), (0xA34, 0xA34), (0xA37, 0xA37), (0xA3A, 0xA3B),
    (0xA3D, 0xA3D), (0xA43, 0xA46), (0xA49, 0xA4A), (0xA4E, 0xA50), (0xA52, 0xA58),
    (0xA5D, 0xA5D), (0xA5F, 0xA65), (0xA77, 0xA80), (0xA84, 0xA84), (0xA8E, 0xA8E),
    (0xA92, 0xA92), (0xAA9, 0xAA9), (0xAB1, 0xAB1), (0xAB4, 0xAB4), (0xABA, 0xABB),
    (0xAC6, 0xAC6), (0xACA, 0xACA), (0xACE, 0xACF), (0xAD1, 0xADF), (0xAE4, 0xAE5),
    (0xAF2, 0xAF8), (0xB00, 0xB00), (0xB04, 0xB04), (0xB0D, 0xB0E), (0xB11, 0xB12),
    (0xB29, 0xB29), (0xB31, 0xB31), (0xB34, 0xB34), (0xB3A, 0xB3B), (0xB45, 0xB46),
    (0xB49, 0xB4A), (0xB4E, 0xB54), (0xB58, 0xB5B), (0xB5E, 0xB5E), (0xB64, 0xB65),
    (0xB78, 0xB81), (0xB84, 0xB84), (0xB8B, 0xB8D), (0xB91, 0xB91), (0xB96, 0xB98),
    (0xB9B, 0xB9B), (0xB9D, 0xB9D), (0xBA0, 0xBA2), (0xBA5, 0xBA7), (0xBAB, 0xBAD),
    (0xBBA, 0xBBD), (0xBC3, 0xBC5), (0xBC9, 0xBC9), (0xBCE, 0xBCF), (0xBD1, 0xBD6),
    (0xBD8, 0xBE5), (0xBFB, 0xBFF), (0xC0D, 0xC0D), (0xC11, 0xC11), (0xC29, 0xC29),
    (0xC3A, 0xC3B), (0xC45, 0xC45), (0xC49, 0xC49), (0xC4E, 0xC54), (0xC57, 0xC57),
    (0xC5B, 0xC5C), (0xC5E, 0xC5F), (0xC64, 0xC65), (0xC70, 0xC76), (0xC8D, 0xC8D),
    (0xC91, 0xC91), (0xCA9, 0xCA9), (0xCB4, 0xCB4), (0xCBA, 0xCBB), (0xCC5, 0xCC5),
    (0xCC9, 0xCC9), (0xCCE, 0xCD4), (0xCD7, 0xCDC), (0xCDF, 0xCDF), (0xCE4, 0xCE5),
    (0xCF0, 0xCF0), (0xCF3, 0xCFF), (0xD0D, 0xD0D), (0xD11, 0xD11), (0xD45, 0xD45),
    (0xD49, 0xD49), (0xD50, 0xD53), (0xD64, 0xD65), (0xD80, 0xD80), (0xD84, 0xD84),
    (0xD97, 0xD99), (0xDB2, 0xDB2), (0xDBC, 0xDBC), (0xDBE, 0xDBF), (0xDC7, 0xDC9),
    (0xDCB, 0xDCE), (0xDD5, 0xDD5), (0xDD7, 0xDD7), (0xDE0, 0xDE5), (0xDF0, 0xDF1),
    (0xDF5, 0xE00), (0xE3B, 0xE3E), (0xE5C, 0xE80), (0xE83, 0xE83), (0xE85, 0xE85),
    (0xE8B, 0xE8B), (0xEA4, 0xEA4), (0xEA6, 0xEA6), (0xEBE, 0xEBF), (0xEC5, 0xEC5),
    (0xEC7, 0xEC7), (0xECE, 0xECF), (0xEDA, 0xEDB), (0xEE0, 0xEFF), (0xF48, 0xF48),
    (0xF6D, 0xF70), (0xF98, 0xF98), (0xFBD, 0xFBD), (0xFCD, 0xFCD), (0xFDB, 0xFFF),
    (0x10C6, 0x10C6), (0x10C8, 0x10CC), (0x10CE, 0x10CF), (0x1249, 0x1249), (0x124E, 0x124F),
    (0x1257, 0x1257), (0x1259, 0x1259), (0x125E, 0x125F), (0x1289, 0x1289), (0x128E, 0x128F),
    (0x12B1, 0x12B1), (0x12B6, 0x12B7), (0x12BF, 0x12BF), (0x12C1, 0x12C1), (0x12C6, 0x12C7),
    (0x12D7, 0x12D7), (0x1311, 0x1311), (0x1316, 0x1317), (0x135B, 0x135C), (0x137D, 0x137F),
    (0x139A, 0x139F), (0x13F6, 0x13F7), (0x13FE, 0x13FF), (0x1680, 0x1680), (0x169D, 0x169F),
    (0x16F9, 0x16FF), (0x1716, 0x171E), (0x1737, 0x173F), (0x1754, 0x175F), (0x176D, 0x176D),
    (0x1771, 0x1771), (0x1774, 0x177F), (0x17DE, 0x17DF), (0x17EA, 0x17EF), (0x17FA, 0x17FF),
    (0x180E, 0x180E), (0x181A, 0x181F), (0x1879, 0x187F), (0x18AB, 0x18AF), (0x18F6, 0x18FF),
    (0x191F, 0x191F), (0x192C, 0x192F), (0x193C, 0x193F), (0x1941, 0x1943), (0x196E, 0x196F),
    (0x1975, 0x197F), (0x19AC, 0x19AF), (0x19CA, 0x19CF), (0x19DB, 0x19DD), (0x1A1C, 0x1A1D),
    (0x1A5F, 0x1A5F), (0x1A7D, 0x1A7E), (0x1A8A, 0x1A8F), (0x1A9A, 0x1A9F), (0x1AAE, 0x1AAF),
    (0x1ACF, 0x1AFF), (0x1B4D, 0x1B4F), (0x1B7F, 0x1B7F), (0x1BF4, 0x1BFB), (0x1C38, 0x1C3A),
    (0x1C4A, 0x1C4C), (0x1C89, 0x1C8F), (0x1CBB, 0x1CBC), (0x1CC8, 0x1CCF), (0x1CFB, 0x1CFF),
    (0x1F16, 0x1F17), (0x1F1E, 0x1F1F), (0x1F46, 0x1F47), (0x1F4E, 0x1F4F), (0x1F58, 0x1F58),
    (0x1F5A, 0x1F5A), (0x1F5C, 0x1F5C), (0x1F5E, 0x1F5E), (0x1F7E, 0x1F7F), (0x1FB5, 0x1FB5),
    (0x1FC5, 0x1FC5), (0x1FD4, 0x1FD5), (0x1FDC, 0x1FDC), (0x1FF0, 0x1FF1), (0x1FF5, 0x1FF5),
    (0x1FFF, 0x200F), (0x2028, 0x202F), (0x205F, 0x206F), (0x2072, 0x2073), (0x208F, 0x208F),
    (0x209D, 0x209F), (0x20C1, 0x20CF), (0x20F1, 0x20FF), (0x218C, 0x218F), (0x2427, 0x243F),
    (0x244B, 0x245F), (0x2B74, 0x2B75), (0x2B96, 0x2B96), (0x2CF4, 0x2CF8), (0x2D26, 0x2D26),
    (0x2D28, 0x2D2C), (0x2D2E, 0x2D2F), (0x2D68, 0x2D6E), (0x2D71, 0x2D7E), (0x2D97, 0x2D9F),
    (0x2DA7, 0x2DA7), (0x2DAF, 0x2DAF), (0x2DB7, 0x2DB7), (0x2DBF, 0x2DBF), (0x2DC7, 0x2DC7),
    (0x2DCF, 0x2DCF), (0x2DD7, 0x2DD7), (0x2DDF, 0x2DDF), (0x2E5E, 0x2E7F), (0x2E9A, 0x2E9A),
    (0x2EF4, 0x2EFF), (0x2FD6, 0x2FEF), (0x2FFC, 0x3000), (0x3040, 0x3040), (0x3097, 0x3098),
    (0x3100, 0x3104), (0x3130, 0x3130), (0x318F, 0x318F), (0x31E4, 0x31EF), (0x321F, 0x321F),
    (0xA48D, 0xA48F), (0xA4C7, 0xA4CF), (0xA62C, 0xA63F), (0xA6F8, 0xA6FF), (0xA7CB, 0xA7CF),
    (0xA7D2, 0xA7D2), (0xA7D4, 0xA7D4), (0xA7DA, 0xA7F1), (0xA82D, 0xA82F), (0xA83A, 0xA83F),
    (0xA878, 0xA87F), (0xA8C6, 0xA8CD), (0xA8DA, 0xA8DF), (0xA954, 0xA95E), (0xA97D, 0xA97F),
    (0xA9CE, 0xA9CE), (0xA9DA, 0xA9DD), (0xA9FF, 0xA9FF), (0xAA37, 0xAA3F), (0xAA4E, 0xAA4F),
    (0xAA5A, 0xAA5B), (0xAAC3, 0xAADA), (0xAAF7, 0xAB00), (0xAB07, 0xAB08), (0xAB0F, 0xAB10),
    (0xAB17, 0xAB1F), (0xAB27, 0xAB27), (0xAB2F, 0xAB2F), (0xAB6C, 0xAB6F), (0xABEE, 0xABEF),
    (0xABFA, 0xABFF), (0xD7A4, 0xD7AF), (0xD7C7, 0xD7CA), (0xD7FC, 0xF8FF), (0xFA6E, 0xFA6F),
    (0xFADA, 0xFAFF), (0xFB07, 0xFB12), (0xFB18, 0xFB1C), (0xFB37, 0xFB37), (0xFB3D, 0xFB3D),
    (0xFB3F, 0xFB3F), (0xFB42, 0xFB42), (0xFB45, 0xFB45), (0xFBC3, 0xFBD2), (0xFD90, 0xFD91),
    (0xFDC8, 0xFDCE), (0xFDD0, 0xFDEF), (0xFE1A, 0xFE1F), (0xFE53, 0xFE53), (0xFE67, 0xFE67),
    (0xFE6C, 0xFE6F), (0xFE75, 0xFE75), (0xFEFD, 0xFF00), (0xFFBF, 0xFFC1), (0xFFC8, 0xFFC9),
    (0xFFD0, 0xFFD1), (0xFFD8, 0xFFD9), (0xFFDD, 0xFFDF), (0xFFE7, 0xFFE7), (0xFFEF, 0xFFFB),
    (0xFFFE, 0xFFFF), (0x1000C, 0x1000C), (0x10027, 0x10027), (0x1003B, 0x1003B), (0x1003E, 0x1003E),
    (0x1004E, 0x1004F), (0x1005E, 0x1007F), (0x100FB, 0x100FF), (0x10103, 0x10106), (0x10134, 0x10136),
    (0x1018F, 0x1018F), (0x1019D, 0x1019F), (0x101A1, 0x101CF), (0x101FE, 0x1027F), (0x1029D, 0x1029F),
    (0x102D1, 0x102DF), (0x102FC, 0x102FF), (0x10324, 0x1032C), (0x1034B, 0x1034F), (0x1037B, 0x1037F),
    (0x1039E, 0x1039E), (0x103C4, 0x103C7), (0x103D6, 0x103FF), (0x1049E, 0x1049F), (0x104AA, 0x104AF),
    (0x104D4, 0x104D7), (0x104FC, 0x104FF), (0x10528, 0x1052F), (0x10564, 0x1056E), (0x1057B, 0x1057B),
    (0x1058B, 0x1058B), (0x10593, 0x10593), (0x10596, 0x10596), (0x105A2, 0x105A2), (0x105B2, 0x105B2),
    (0x105BA, 0x105BA), (0x105BD, 0x105FF), (0x10737, 0x1073F), (0x10756, 0x1075F), (0x10768, 0x1077F),
    (0x10786, 0x10786), (0x107B1, 0x107B1), (0x107BB, 0x107FF), (0x10806, 0x10807), (0x10809, 0x10809),
    (0x10836, 0x10836), (0x10839, 0x1083B), (0x1083D, 0x1083E), (0x10856, 0x10856), (0x1089F, 0x108A6),
    (0x108B0, 0x108DF), (0x108F3, 0x108F3), (0x108F6, 0x108FA), (0x1091C, 0x1091E), (0x1093A, 0x1093E),
    (0x10940, 0x1097F), (0x109B8, 0x109BB), (0x109D0, 0x109D1), (0x10A04, 0x10A04), (0x10A07, 0x10A0B),
    (0x10A14, 0x10A14), (0x10A18, 0x10A18), (0x10A36, 0x10A37), (0x10A3B, 0x10A3E), (0x10A49, 0x10A4F),
    (0x10A59, 0x10A5F), (0x10AA0, 0x10ABF), (0x10AE7, 0x10AEA), (0x10AF7, 0x10AFF), (0x10B36, 0x10B38),
    (0x10B56, 0x10B57), (0x10B73, 0x10B77), (0x10B92, 0x10B98), (0x10B9D, 0x10BA8), (0x10BB0, 0x10BFF),
    (0x10C49, 0x10C7F), (0x10CB3, 0x10CBF), (0x10CF3, 0x10CF9), (0x10D28, 0x10D2F), (0x10D3A, 0x10E5F),
    (0x10E7F, 0x10E7F), (0x10EAA, 0x10EAA), (0x10EAE, 0x10EAF), (0x10EB2, 0x10EFF), (0x10F28, 0x10F2F),
    (0x10F5A, 0x10F6F), (0x10F8A, 0x10FAF), (0x10FCC, 0x10FDF), (0x10FF7, 0x10FFF), (0x1104E, 0x11051),
    (0x11076, 0x1107E), (0x110BD, 0x110BD), (0x110C3, 0x110CF), (0x110E9, 0x110EF), (0x110FA, 0x110FF),
    (0x11135, 0x11135), (0x11148, 0x1114F), (0x11177, 0x1117F), (0x111E0, 0x111E0), (0x111F5, 0x111FF),
    (0x11212, 0x11212), (0x1123F, 0x1127F), (0x11287, 0x11287), (0x11289, 0x11289), (0x1128E, 0x1128E),
    (0x1129E, 0x1129E), (0x112AA, 0x112AF), (0x112EB, 0x112EF), (0x112FA, 0x112FF), (0x11304, 0x11304),
    (0x1130D, 0x1130E), (0x11311, 0x11312), (0x11329, 0x11329), (0x11331, 0x11331), (0x11334, 0x11334),
    (0x1133A, 0x1133A), (0x11345, 0x11346), (0x11349, 0x1134A), (0x1134E, 0x1134F), (0x11351, 0x11356),
    (0x11358, 0x1135C), (0x11364, 0x11365), (0x1136D, 0x1136F), (0x11375, 0x113FF), (0x1145C, 0x1145C),
    (0x11462, 0x1147F), (0x114C8, 0x114CF), (0x114DA, 0x1157F), (0x115B6, 0x115B7), (0x115DE, 0x115FF),
    (0x11645, 0x1164F), (0x1165A, 0x1165F), (0x1166D, 0x1167F), (0x116BA, 0x116BF), (0x116CA, 0x116FF),
    (0x1171B, 0x1171C), (0x1172C, 0x1172F), (0x11747, 0x117FF), (0x1183C, 0x1189F), (0x118F3, 0x118FE),
    (0x11907, 0x11908), (0x1190A, 0x1190B), (0x11914, 0x11914), (0x11917, 0x11917), (0x11936, 0x11936),
    (0x11939, 0x1193A), (0x11947, 0x1194F), (0x1195A, 0x1199F), (0x119A8, 0x119A9), (0x119D8, 0x119D9),
    (0x119E5, 0x119FF), (0x11A48, 0x11A4F), (0x11AA3, 0x11AAF), (0x11AF9, 0x11BFF), (0x11C09, 0x11C09),
    (0x11C37, 0x11C37), (0x11C46, 0x11C4F), (0x11C6D, 0x11C6F), (0x11C90, 0x11C91), (0x11CA8, 0x11CA8),
    (0x11CB7, 0x11CFF), (0x11D07, 0x11D07), (0x11D0A, 0x11D0A), (0x11D37, 0x11D39), (0x11D3B, 0x11D3B),
    (0x11D3E, 0x11D3E), (0x11D48, 0x11D4F), (0x11D5A, 0x11D5F), (0x11D66, 0x11D66), (0x11D69, 0x11D69),
    (0x11D8F, 0x11D8F), (0x11D92, 0x11D92), (0x11D99, 0x11D9F), (0x11DAA, 0x11EDF), (0x11EF9, 0x11FAF),
    (0x11FB1, 0x11FBF), (0x11FF2, 0x11FFE), (0x1239A, 0x123FF), (0x1246F, 0x1246F), (0x12475, 0x1247F),
    (0x12544, 0x12F8F), (0x12FF3, 0x12FFF), (0x1342F, 0x143FF), (0x14647, 0x167FF), (0x16A39, 0x16A3F),
    (0x16A5F, 0x16A5F), (0x16A6A, 0x16A6D), (0x16ABF, 0x16ABF), (0x16ACA, 0x16ACF), (0x16AEE, 0x16AEF),
    (0x16AF6, 0x16AFF), (0x16B46, 0x16B4F), (0x16B5A, 0x16B5A), (0x16B62, 0x16B62), (0x16B78, 0x16B7C),
    (0x16B90, 0x16E3F), (0x16E9B, 0x16EFF), (0x16F4B, 0x16F4E), (0x16F88, 0x16F8E), (0x16FA0, 0x16FDF),
    (0x16FE5, 0x16FEF), (0x16FF2, 0x16FFF), (0x187F8, 0x187FF), (0x18CD6, 0x18CFF), (0x18D09, 0x1AFEF),
    (0x1AFF4, 0x1AFF4), (0x1AFFC, 0x1AFFC), (0x1AFFF, 0x1AFFF), (0x1B123, 0x1B14F), (0x1B153, 0x1B163),
    (0x1B168, 0x1B16F), (0x1B2FC, 0x1BBFF), (0x1BC6B, 0x1BC6F), (0x1BC7D, 0x1BC7F), (0x1BC89, 0x1BC8F),
    (0x1BC9A, 0x1BC9B), (0x1BCA0, 0x1CEFF), (0x1CF2E, 0x1CF2F), (0x1CF47, 0x1CF4F), (0x1CFC4, 0x1CFFF),
    (0x1D0F6, 0x1D0FF), (0x1D127, 0x1D128), (0x1D173, 0x1D17A), (0x1D1EB, 0x1D1FF), (0x1D246, 0x1D2DF),
    (0x1D2F4, 0x1D2FF), (0x1D357, 0x1D35F), (0x1D379, 0x1D3FF), (0x1D455, 0x1D455), (0x1D49D, 0x1D49D),
    (0x1D4A0, 0x1D4A1), (0x1D4A3, 0x1D4A4), (0x1D4A7, 0x1D4A8), (0x1D4AD, 0x1D4AD), (0x1D4BA, 0x1D4BA),
    (0x1D4BC, 0x1D4BC), (0x1D4C4, 0x1D4C4), (0x1D506, 0x1D506), (0x1D50B, 0x1D50C), (0x1D515, 0x1D515),
    (0x1D51D, 0x1D51D), (0x1D53A, 0x1D53A), (0x1D53F, 0x1D53F), (0x1D545, 0x1D545), (0x1D547, 0x1D549),
    (0x1D551, 0x1D551), (0x1D6A6, 0x1D6A7), (0x1D7CC, 0x1D7CD), (0x1DA8C, 0x1DA9A), (0x1DAA0, 0x1DAA0),
    (0x1DAB0, 0x1DEFF), (0x1DF1F, 0x1DFFF), (0x1E007, 0x1E007), (0x1E019, 0x1E01A), (0x1E022, 0x1E022),
    (0x1E025, 0x1E025), (0x1E02B, 0x1E0FF), (0x1E12D, 0x1E12F), (0x1E13E, 0x1E13F), (0x1E14A, 0x1E14D),
    (0x1E150, 0x1E28F), (0x1E2AF, 0x1E2BF), (0x1E2FA, 0x1E2FE), (0x1E300, 0x1E7DF), (0x1E7E7, 0x1E7E7),
    (0x1E7EC, 0x1E7EC), (0x1E7EF, 0x1E7EF), (0x1E7FF, 0x1E7FF), (0x1E8C5, 0x1E8C6), (0x1E8D7, 0x1E8FF),
    (0x1E94C, 0x1E94F), (0x1E95A, 0x1E95D), (0x1E960, 0x1EC70), (0x1ECB5, 0x1ED00), (0x1ED3E, 0x1EDFF),
    (0x1EE04, 0x1EE04), (0x1EE20, 0x1EE20), (0x1EE23, 0x1EE23), (0x1EE25, 0x1EE26), (0x1EE28, 0x1EE28),
    (0x1EE33, 0x1EE33), (0x1EE38, 0x1EE38), (0x1EE3A, 0x1EE3A), (0x1EE3C, 0x1EE41), (0x1EE43, 0x1EE46),
    (0x1EE48, 0x1EE48), (0x1EE4A, 0x1EE4A), (0x1EE4C, 0x1EE4C), (0x1EE50, 0x1EE50), (0x1EE53, 0x1EE53),
    (0x1EE55, 0x1EE56), (0x1EE58, 0x1EE58), (0x1EE5A, 0x1EE5A), (0x1EE5C, 0x1EE5C), (0x1EE5E, 0x1EE5E),
    (0x1EE60, 0x1EE60), (0x1EE63, 0x1EE63), (0x1EE65, 0x1EE66), (0x1EE6B, 0x1EE6B), (0x1EE73, 0x1EE73),
    (0x1EE78, 0x1EE78), (0x1EE7D, 0x1EE7D), (0x1EE7F, 0x1EE7F), (0x1EE8A, 0x1EE8A), (0x1EE9C, 0x1EEA0),
    (0x1EEA4, 0x1EEA4), (0x1EEAA, 0x1EEAA), (0x1EEBC, 0x1EEEF), (0x1EEF2, 0x1EFFF), (0x1F02C, 0x1F02F),
    (0x1F094, 0x1F09F), (0x1F0AF, 0x1F0B0), (0x1F0C0, 0x1F0C0), (0x1F0D0, 0x1F0D0), (0x1F0F6, 0x1F0FF),
    (0x1F1AE, 0x1F1E5), (0x1F203, 0x1F20F), (0x1F23C, 0x1F23F), (0x1F249, 0x1F24F), (0x1F252, 0x1F25F),
    (0x1F266, 0x1F2FF), (0x1F6D8, 0x1F6DC), (0x1F6ED, 0x1F6EF), (0x1F6FD, 0x1F6FF), (0x1F774, 0x1F77F),
    (0x1F7D9, 0x1F7DF), (0x1F7EC, 0x1F7EF), (0x1F7F1, 0x1F7FF), (0x1F80C, 0x1F80F), (0x1F848, 0x1F84F),
    (0x1F85A, 0x1F85F), (0x1F888, 0x1F88F), (0x1F8AE, 0x1F8AF), (0x1F8B2, 0x1F8FF), (0x1FA54, 0x1FA5F),
    (0x1FA6E, 0x1FA6F), (0x1FA75, 0x1FA77), (0x1FA7D, 0x1FA7F), (0x1FA87, 0x1FA8F), (0x1FAAD, 0x1FAAF),
    (0x1FABB, 0x1FABF), (0x1FAC6, 0x1FACF), (0x1FADA, 0x1FADF), (0x1FAE8, 0x1FAEF), (0x1FAF7, 0x1FAFF),
    (0x1FB93, 0x1FB93), (0x1FBCB, 0x1FBEF), (0x1FBFA, 0x1FFFF), (0x2A6E0, 0x2A6FF), (0x2B739, 0x2B73F),
    (0x2B81E, 0x2B81F), (0x2CEA2, 0x2CEAF), (0x2EBE1, 0x2F7FF), (0x2FA1E, 0x2FFFF), (0x3134B, 0xE00FF),
    (0xE01F0, 0x10FFFF),
];
/// Code point ranges of Unicode decimal digits (category Nd, Unicode 14.0.0), which
/// Python's `int()` and `float()` accept; each range starts with a digit zero.
#[rustfmt::skip]
const DECIMAL_DIGITS: &[(u32, u32)] = &[
    (0x30, 0x39), (0x660, 0x669), (0x6F0, 0x6F9), (0x7C0, 0x7C9), (0x966, 0x96F),
    (0x9E6, 0x9EF), (0xA66, 0xA6F), (0xAE6, 0xAEF), (0xB66, 0xB6F), (0xBE6, 0xBEF),
    (0xC66, 0xC6F), (0xCE6, 0xCEF), (0xD66, 0xD6F), (0xDE6, 0xDEF), (0xE50, 0xE59),
    (0xED0, 0xED9), (0xF20, 0xF29), (0x1040, 0x1049), (0x1090, 0x1099), (0x17E0, 0x17E9),
    (0x1810, 0x1819), (0x1946, 0x194F), (0x19D0, 0x19D9), (0x1A80, 0x1A89), (0x1A90, 0x1A99),
    (0x1B50, 0x1B59), (0x1BB0, 0x1BB9), (0x1C40, 0x1C49), (0x1C50, 0x1C59), (0xA620, 0xA629),
    (0xA8D0, 0xA8D9), (0xA900, 0xA909), (0xA9D0, 0xA9D9), (0xA9F0, 0xA9F9), (0xAA50, 0xAA59),
    (0xABF0, 0xABF9), (0xFF10, 0xFF19), (0x104A0, 0x104A9), (0x10D30, 0x10D39), (0x11066, 0x1106F),
    (0x110F0, 0x110F9), (0x11136, 0x1113F), (0x111D0, 0x111D9), (0x112F0, 0x112F9), (0x11450, 0x11459),
    (0x114D0, 0x114D9), (0x11650, 0x11659), (0x116C0, 0x116C9), (0x11730, 0x11739), (0x118E0, 0x118E9),
    (0x11950, 0x11959), (0x11C50, 0x11C59), (0x11D50, 0x11D59), (0x11DA0, 0x11DA9), (0x16A60, 0x16A69),
    (0x16AC0, 0x16AC9), (0x16B50, 0x16B59), (0x1D7CE, 0x1D7FF), (0x1E140, 0x1E149), (0x1E2F0, 0x1E2F9),
    (0x1E950, 0x1E959), (0x1FBF0, 0x1FBF9),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// A table long enough to be written in two halves gives the bytes of the entries
    /// written one by one, between other outputs.
    #[test]
    fn long_tables_write_as_their_values() {
        let mut table = Table::new(vec!["time".into(), "value".into(), "note".into()]);
        let rows = 2 * PARALLEL_ROWS + 1;
        for i in 0..rows {
            let time = table.push_text(&format!("{:02}:{:02}", i / 60 % 24, i % 60));
            table.cells.push(time);
            table.cells.push(Cell::UInt(i as u64));
            // Some rows lack a cell or hold a value that needs escaping.
            let note = match i % 7 {
                0 => Cell::Absent,
                1 => table.push_text("a < b & c"),
                _ => Cell::Bool(i % 2 == 0),
            };
            table.cells.push(note);
            table.rows += 1;
        }
        let mut tree = Sensors::default();
        tree.outputs
            .insert("before".into(), Node::Value(serde_json::json!(1)));
        tree.outputs
            .insert("points".into(), Node::List(vec![Segment::Table(table)]));
        tree.outputs
            .insert("after".into(), Node::Value(serde_json::json!("x")));
        let streamed = sensors_to_xml("u", &tree);
        assert_eq!(streamed, to_igor_xml("u", &tree.to_value()));
        assert_eq!(streamed.matches("<points>").count(), rows);
    }

    fn python_float_text(float: f64) -> String {
        let mut out = String::new();
        push_python_float(&mut out, float);
        out
    }

    #[test]
    fn python_float_repr() {
        // Expected values printed by Python 3.11's repr().
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (75.3, "75.3"),
            (23.0, "23.0"),
            (-7.25, "-7.25"),
            (0.1, "0.1"),
            (1e-4, "0.0001"),
            (1.5e-4, "0.00015"),
            (1e-5, "1e-05"),
            (1.5e-5, "1.5e-05"),
            (1e20, "1e+20"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (9999999999999998.0, "9999999999999998.0"),
            (1.5514e12, "1551400000000.0"),
            (1_551_428_800.5, "1551428800.5"),
            (123456789.123, "123456789.123"),
            (1e100, "1e+100"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (2.2250738585072014e-308, "2.2250738585072014e-308"),
            (0.30000000000000004, "0.30000000000000004"),
            (-1e-7, "-1e-07"),
        ];
        for &(float, expected) in cases {
            assert_eq!(python_float_text(float), expected, "repr of {float:e}");
        }
    }

    #[test]
    fn python_str_repr() {
        let cases = [
            ("a", "'a'"),
            ("it's", "\"it's\""),
            ("'\"", "'\\'\"'"),
            ("a\\b", "'a\\\\b'"),
            ("\t\n\r\u{1}\u{7f}", "'\\t\\n\\r\\x01\\x7f'"),
            ("é\u{a0}\u{ad}", "'é\\xa0\\xad'"),
            ("\u{200b}\u{2028}€", "'\\u200b\\u2028€'"),
            (
                "\u{1F600}\u{E0001}\u{10FFFF}",
                "'\u{1F600}\\U000e0001\\U0010ffff'",
            ),
        ];
        for (text, expected) in cases {
            let mut out = String::new();
            push_python_str_repr(&mut out, text);
            assert_eq!(out, expected, "repr of {text:?}");
        }
    }

    #[test]
    fn python_number_parsing() {
        let ints = [
            ("0", Some("0")),
            ("-0", Some("0")),
            ("007", Some("7")),
            ("+5", Some("5")),
            ("1_000", Some("1000")),
            ("\u{661}\u{662}", Some("12")),
            ("18446744073709551615", Some("18446744073709551615")),
            ("-9223372036854775808", Some("-9223372036854775808")),
            (
                "123456789012345678901234567890",
                Some("123456789012345678901234567890"),
            ),
            (
                "-000123456789012345678901234567890",
                Some("-123456789012345678901234567890"),
            ),
            ("-0000", Some("0")),
            ("1__0", None),
            ("_1", None),
            ("1_", None),
            ("0x10", None),
            ("- 5", None),
            ("", None),
        ];
        for (text, expected) in ints {
            let parsed = python_int(text).map(|number| number.to_string());
            assert_eq!(parsed.as_deref(), expected, "int({text:?})");
        }
        let floats = [
            ("1e3", Some(1000.0)),
            ("75.0", Some(75.0)),
            ("5.", Some(5.0)),
            (".5", Some(0.5)),
            ("-1_0.2_5e1_0", Some(-10.25e10)),
            ("1E-2", Some(0.01)),
            ("\u{661}.\u{665}", Some(1.5)),
            ("-Infinity", Some(f64::NEG_INFINITY)),
            ("1e999", Some(f64::INFINITY)),
            (".", None),
            ("1._5", None),
            ("1_.5", None),
            ("1e", None),
            ("1e_5", None),
            ("e5", None),
            ("infin", None),
        ];
        for (text, expected) in floats {
            assert_eq!(python_float(text), expected, "float({text:?})");
        }
        assert!(python_float("nan").is_some_and(f64::is_nan));
    }

    #[test]
    fn python_whitespace() {
        // Python 3.11's str.isspace() set.
        let spaces: Vec<char> = (0..=0x10FFFF)
            .filter_map(char::from_u32)
            .filter(|&c| is_python_space(c))
            .collect();
        let expected: Vec<char> = "\t\n\u{b}\u{c}\r\u{1c}\u{1d}\u{1e}\u{1f} \u{85}\u{a0}\u{1680}\
             \u{2000}\u{2001}\u{2002}\u{2003}\u{2004}\u{2005}\u{2006}\u{2007}\u{2008}\u{2009}\
             \u{200a}\u{2028}\u{2029}\u{202f}\u{205f}\u{3000}"
            .chars()
            .collect();
        assert_eq!(spaces, expected);
    }
}
