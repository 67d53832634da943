//! The pure part: provider answers in, sensor tree out. No IO, no clock.
//!
//! Each output of a method selects records with a JSONPath, optionally explodes them
//! into child rows, filters the rows, and builds one entry per row from its fields.
//! Entries of all pages and windows of a method are concatenated, then sorted when
//! the output asks for it.
//!
//! One route. Every answer, replayed or live, page or window, success or error, is a
//! [`Doc`]: the answer's text with a flat index of its nodes, built in one pass without
//! an allocation per object. Every output is mapped straight from its documents into a
//! [`Table`] of the compact sensor tree (`crate::sensors`): one row per entry, one cell
//! per field, strings in one buffer, so a day of one-second heart rate (86,400 entries)
//! costs a few allocations instead of a dozen per point. Plain paths (members, indexes,
//! wildcards) are walked on the document; a path that needs the general JSONPath engine
//! runs on the node's `Value` and is walked back to the document's nodes, so every
//! construct has one implementation.
//!

pub mod local;
pub mod units;

use std::sync::atomic::{AtomicU8, Ordering};

use chrono::{DateTime, NaiveDate, Utc};
use indexmap::IndexMap;
use serde_json::{Map, Number, Value};

use self::local::RecordZone;
use self::units::UnitSystem;
use crate::provider::raw::{FieldType, OffsetUnit, SourceFormat};
use crate::provider::selector::Step;
use crate::provider::{Condition, Field, FieldSource, Method, Output, Selector};
use crate::sensors::{Cell, Node, PARALLEL_ROWS, Segment, Table, clean, integer_magnitude};

/// Which layout a method's result takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// The documented sensor schema (`body-weight` entries ...).
    #[default]
    Mapped,
    /// The provider's answer as the old plugin stored it.
    Raw,
    /// Both, raw keys after mapped ones.
    Both,
}

impl Layout {
    /// Parses `mapped`, `raw` or `both`.
    pub fn parse(s: &str) -> Option<Layout> {
        match s {
            "mapped" => Some(Layout::Mapped),
            "raw" => Some(Layout::Raw),
            "both" => Some(Layout::Both),
            _ => None,
        }
    }
}

/// A mapping failure: which output and field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("output `{output}`, field `{field}`: {message}")]
pub struct TransformError {
    /// Output name.
    pub output: String,
    /// Field name.
    pub field: String,
    /// What went wrong.
    pub message: String,
}

/// The result of one method: mapped outputs (checked against the sensor schema) and
/// raw keys (the provider's answer unchanged, not described by the schema).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MethodResult {
    /// Outputs in the documented schema.
    pub mapped: IndexMap<String, Node>,
    /// Raw keys, for the old layout.
    pub raw: Map<String, Value>,
}

/// What the mapping needs to know of the user: the unit system numbers are shown in,
/// and the time zone that dates instants without an offset of their own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MapContext {
    /// The user's unit system.
    pub system: UnitSystem,
    /// The user's time zone.
    pub zone: chrono_tz::Tz,
}

impl MapContext {
    /// The context for `system` and `zone`.
    pub fn new(system: UnitSystem, zone: chrono_tz::Tz) -> MapContext {
        MapContext { system, zone }
    }
}

/// Maps every answer (pages, windows) of one method into its outputs. The answers are
/// freed when it returns.
pub fn map_method(
    method: &Method,
    answers: Vec<Doc>,
    layout: Layout,
    ctx: MapContext,
) -> Result<MethodResult, TransformError> {
    let mut tree = IndexMap::new();
    let mut raw = Map::new();
    let docs: Vec<&Doc> = answers.iter().collect();
    if layout != Layout::Raw {
        for output in &method.outputs {
            if let Some(node) = map_output_docs(output, &docs, ctx)? {
                tree.insert(output.name.clone(), node);
            }
        }
    }
    if layout != Layout::Mapped {
        for key in &method.raw {
            let mut merged: Option<Value> = None;
            for doc in &answers {
                let Some(part) = doc.member(0, key).map(|i| doc.value_at(i)) else {
                    continue;
                };
                merged = Some(match (merged, part) {
                    (Some(Value::Array(mut acc)), Value::Array(more)) => {
                        acc.extend(more);
                        Value::Array(acc)
                    }
                    (_, part) => part,
                });
            }
            if let Some(v) = merged {
                raw.insert(key.clone(), v);
            }
        }
    }
    Ok(MethodResult { mapped: tree, raw })
}

// ---------------------------------------------------------------------------------------
// Mapping from a document
// ---------------------------------------------------------------------------------------

/// One output of a method, from its documents, into a table.
fn map_output_docs(
    output: &Output,
    docs: &[&Doc],
    ctx: MapContext,
) -> Result<Option<Node>, TransformError> {
    let mut table = Table::new(output.fields.iter().map(|f| f.name.clone()).collect());
    // Tables finished before `table`, in order.
    let mut done: Vec<Table> = Vec::new();
    // Summing, sorting and a single entry work on one table: such outputs take one thread.
    let one_table = !output.sum_by.is_empty() || !output.sort_by.is_empty() || output.single;
    let quick: Vec<Option<Quick<'_>>> = output.fields.iter().map(Quick::of).collect();
    let mut parents: Vec<Option<Result<Cell, String>>> = Vec::new();
    let mut records = Vec::new();
    let mut rows = Vec::new();
    for doc in docs {
        records.clear();
        doc.select_by(0, &output.each, &mut records);
        for &record in &records {
            parents.clear();
            parents.resize(output.fields.len(), None);
            match &output.explode {
                Some(explode) => {
                    rows.clear();
                    // The rows are nodes under the record: as many as its nodes at most.
                    // Reserved, not touched: only the pages the rows fill are used.
                    rows.reserve(doc.end(record) - record);
                    doc.select_by(record, explode, &mut rows);
                    let mapper = Rows {
                        output,
                        quick: &quick,
                        doc,
                        record,
                        ctx,
                    };
                    if rows.len() >= PARALLEL_ROWS && !one_table {
                        // A long series: its second half is mapped on a second thread
                        // into a table of its own, a segment after the first half's.
                        let (first, second) = rows.split_at(rows.len() / 2);
                        let columns = table.columns().to_vec();
                        let (earlier, later) = crate::halves::both(
                            || mapper.map(first, &mut table, &mut parents),
                            || {
                                let mut own = Table::new(columns);
                                let mut parents = vec![None; output.fields.len()];
                                mapper.map(second, &mut own, &mut parents).map(|()| own)
                            },
                        );
                        let later = earlier.and(later)?;
                        let columns = table.columns().to_vec();
                        done.push(std::mem::replace(&mut table, Table::new(columns)));
                        done.push(later);
                    } else {
                        mapper.map(&rows, &mut table, &mut parents)?;
                    }
                }
                None => {
                    if output.filters.iter().all(|c| doc_holds(c, doc, record)) {
                        doc_entry(
                            output,
                            &quick,
                            &mut table,
                            doc,
                            record,
                            None,
                            &mut parents,
                            ctx,
                        )?;
                    }
                }
            }
        }
    }
    if !output.sum_by.is_empty() {
        table.sum_by_columns(&output.sum_by);
    }
    if !output.sort_by.is_empty() {
        table.sort_by_columns(&output.sort_by);
    }
    if output.single {
        return Ok((!table.is_empty()).then(|| Node::Value(table.row_value(0))));
    }
    if done.is_empty() || !table.is_empty() {
        done.push(table);
    }
    Ok(Some(Node::List(
        done.into_iter().map(Segment::Table).collect(),
    )))
}

/// The exploded rows of one record of an output, mapped into a table.
struct Rows<'a> {
    output: &'a Output,
    quick: &'a [Option<Quick<'a>>],
    doc: &'a Doc,
    record: usize,
    ctx: MapContext,
}

impl Rows<'_> {
    /// Maps `rows` (nodes of the record, in order) into `table`: the rows the filters
    /// keep, each an entry or nothing; the first failing row's error.
    fn map(
        &self,
        rows: &[usize],
        table: &mut Table,
        parents: &mut [Option<Result<Cell, String>>],
    ) -> Result<(), TransformError> {
        table.cells.reserve(rows.len() * self.output.fields.len());
        let text_before = table.text_len();
        for (n, &row) in rows.iter().enumerate() {
            if n == 1 {
                reserve_text(table, text_before, rows.len() - 1, self.doc);
            }
            if self
                .output
                .filters
                .iter()
                .all(|c| doc_holds(c, self.doc, row))
            {
                doc_entry(
                    self.output,
                    self.quick,
                    table,
                    self.doc,
                    row,
                    Some(self.record),
                    parents,
                    self.ctx,
                )?;
            }
        }
        Ok(())
    }
}

/// Reserves the text of a table about to get `rows` more rows like its last one (the
/// rows of one record are usually alike; the last one's strings came after
/// `text_before`), at most as much as the document's text: grown once, not by doubling
/// and copying. Reserved memory that the rows do not fill is never touched.
fn reserve_text(table: &mut Table, text_before: usize, rows: usize, doc: &Doc) {
    let row = table.text_len() - text_before;
    let most = doc.text.len() + doc.decoded.len();
    table.reserve_text(row.saturating_mul(rows).min(most));
}

/// [`Condition::holds`] on a document node.
fn doc_holds(c: &Condition, doc: &Doc, node: usize) -> bool {
    let found = doc.first_by(node, &c.path);
    if !c.needs_value() {
        return c.holds_for(found.map(|_| &Value::Null));
    }
    c.holds_for(found.map(|i| doc.value_at(i)).as_ref())
}

/// `entry` on a document row: appends the row's cells, or nothing when a required
/// field is absent.
#[allow(clippy::too_many_arguments)]
fn doc_entry(
    output: &Output,
    quick: &[Option<Quick<'_>>],
    table: &mut Table,
    doc: &Doc,
    row: usize,
    parent: Option<usize>,
    parents: &mut [Option<Result<Cell, String>>],
    ctx: MapContext,
) -> Result<(), TransformError> {
    let start = table.cells.len();
    for (index, field) in output.fields.iter().enumerate() {
        if let Some(cell) = quick[index].and_then(|q| q.cell(doc, row, table)) {
            if matches!(cell, Cell::Absent) && field.required {
                table.cells.truncate(start);
                return Ok(());
            }
            table.cells.push(cell);
            continue;
        }
        let cell = match &field.source {
            FieldSource::Row(path) => {
                // A member of the row (`$.time`), the common path, looked up directly.
                let found = match path.steps() {
                    Some([Step::Member(name)]) => doc.member(row, name),
                    _ => doc.first_by(row, path),
                };
                match &field.offset {
                    None => doc_field(field, found, doc, row, table, ctx, None),
                    Some(_) => record_zone(field, doc, Some(row), parent)
                        .and_then(|zone| doc_field(field, found, doc, row, table, ctx, zone)),
                }
            }
            FieldSource::Parent(path) if field.exponent.is_none() => parents[index]
                .get_or_insert_with(|| {
                    let found = parent.and_then(|p| doc.first_by(p, path));
                    record_zone(field, doc, None, parent)
                        .and_then(|zone| doc_field(field, found, doc, row, table, ctx, zone))
                })
                .clone(),
            FieldSource::Parent(path) => {
                let found = parent.and_then(|p| doc.first_by(p, path));
                record_zone(field, doc, None, parent)
                    .and_then(|zone| doc_field(field, found, doc, row, table, ctx, zone))
            }
            FieldSource::UnitName(q) => Ok(table.push_text(units::unit_name(*q, ctx.system))),
            FieldSource::Const(v) => {
                let row_value = row_for(field, doc, row);
                field_value(field, Some(v), &row_value, ctx).map(|v| match v {
                    Some(v) => table.cell_of(v),
                    None => Cell::Absent,
                })
            }
        };
        let cell = cell.map_err(|message| {
            table.cells.truncate(start);
            TransformError {
                output: output.name.clone(),
                field: field.name.clone(),
                message,
            }
        })?;
        if matches!(cell, Cell::Absent) && field.required {
            table.cells.truncate(start);
            return Ok(());
        }
        table.cells.push(cell);
    }
    table.rows += 1;
    Ok(())
}

/// A field that copies a member of the row as it is (`time: { path: $.time, type: time }`:
/// no conversion, arithmetic, default or zone), the usual field of a long series: its
/// cell is read straight from the member for the common nodes. What [`doc_field`] gives
/// for them, without its general steps; any other node takes [`doc_field`].
#[derive(Clone, Copy)]
struct Quick<'f> {
    member: &'f str,
    /// A string is copied (`auto`, `string`, `time`).
    text: bool,
    /// An integer token is copied (`auto`, `number`, `integer`).
    integer: bool,
}

impl<'f> Quick<'f> {
    fn of(field: &'f Field) -> Option<Quick<'f>> {
        let FieldSource::Row(path) = &field.source else {
            return None;
        };
        let Some([Step::Member(member)]) = path.steps() else {
            return None;
        };
        let plain = field.offset.is_none()
            && field.from.is_none()
            && field.map.is_none()
            && field.default.is_none()
            && !has_arithmetic(field);
        plain.then_some(Quick {
            member,
            text: matches!(
                field.kind,
                FieldType::Auto | FieldType::String | FieldType::Time
            ),
            integer: matches!(
                field.kind,
                FieldType::Auto | FieldType::Number | FieldType::Integer
            ),
        })
    }

    /// The cell of row `row`, `None` when the node needs [`doc_field`].
    #[inline]
    fn cell(self, doc: &Doc, row: usize, table: &mut Table) -> Option<Cell> {
        let Some(node) = doc.member(row, self.member) else {
            return Some(Cell::Absent);
        };
        match doc.tape.get(node) {
            Tape::Null => Some(Cell::Absent),
            t @ (Tape::Str(..) | Tape::Esc(..)) if self.text => {
                Some(table.push_text(doc.str_of(t)))
            }
            Tape::U(u) if self.integer => Some(Cell::UInt(u)),
            Tape::I(i) if self.integer => Some(Cell::Int(i)),
            _ => None,
        }
    }
}

/// The offset or zone a field's times are shown in, when the field names one: looked up
/// in the row, then the parent record, then the whole answer.
#[inline]
fn record_zone(
    field: &Field,
    doc: &Doc,
    row: Option<usize>,
    parent: Option<usize>,
) -> Result<Option<RecordZone>, String> {
    match &field.offset {
        None => Ok(None),
        Some(path) => zone_at(field, path, doc, row, parent),
    }
}

/// [`record_zone`] of a field that names where its offset or zone is.
fn zone_at(
    field: &Field,
    path: &Selector,
    doc: &Doc,
    row: Option<usize>,
    parent: Option<usize>,
) -> Result<Option<RecordZone>, String> {
    let found = row
        .and_then(|r| doc.first_by(r, path))
        .or_else(|| parent.and_then(|p| doc.first_by(p, path)))
        .or_else(|| doc.first_by(0, path));
    match found.map(|node| doc.value_at(node)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if field.offset_unit == OffsetUnit::Minutes => {
            let minutes = n.as_f64().ok_or("offset out of range")?;
            RecordZone::parse(&Value::from((minutes * 60.0).round() as i64)).map(Some)
        }
        Some(v) => RecordZone::parse(&v).map(Some),
    }
}

/// The row as a `Value` when a field reads its exponent or unit from it, else `null`
/// (`convert` reads the row for nothing else).
fn row_for(field: &Field, doc: &Doc, row: usize) -> Value {
    if field.exponent.is_some()
        || field.unit_path.is_some()
        || field.until.is_some()
        || !field.add.is_empty()
    {
        doc.value_at(row)
    } else {
        Value::Null
    }
}

/// `field_value` + `convert` on a document node, straight into a cell for the common
/// cases and through `Value` for the others.
fn doc_field(
    field: &Field,
    found: Option<usize>,
    doc: &Doc,
    row: usize,
    table: &mut Table,
    ctx: MapContext,
    zone: Option<RecordZone>,
) -> Result<Cell, String> {
    let found = found.filter(|&node| !matches!(doc.tape.get(node), Tape::Null));
    let Some(node) = found else {
        return match &field.default {
            Some(d) => {
                convert(field, d, &row_for(field, doc, row), ctx, zone).map(|v| table.cell_of(v))
            }
            None => Ok(Cell::Absent),
        };
    };
    let tape = doc.tape.get(node);
    if field.map.is_some() {
        let value = mapped(field, doc.value_at(node))?;
        return convert(field, &value, &row_for(field, doc, row), ctx, zone)
            .map(|v| table.cell_of(v));
    }
    if field.from.is_none() {
        match (field.kind, tape) {
            (FieldType::Auto, _) if !has_arithmetic(field) => {
                return Ok(match tape {
                    Tape::Str(..) | Tape::Esc(..) => table.push_text(doc.str_of(tape)),
                    Tape::Bool(b) => Cell::Bool(b),
                    Tape::U(u) => Cell::UInt(u),
                    Tape::I(i) => Cell::Int(i),
                    Tape::Num(..) => table.push_number(&doc.number_of(tape)),
                    _ => Cell::Other(Box::new(doc.value_at(node))),
                });
            }
            (
                FieldType::Auto | FieldType::Number | FieldType::Integer,
                Tape::U(_) | Tape::I(_) | Tape::Num(..),
            ) => {
                if !has_arithmetic(field) {
                    match tape {
                        Tape::U(u) => return Ok(Cell::UInt(u)),
                        Tape::I(i) => return Ok(Cell::Int(i)),
                        _ => {}
                    }
                }
                let n = doc.number_of(tape);
                let n = if has_arithmetic(field) {
                    arithmetic(field, n, &row_for(field, doc, row), ctx)?
                } else {
                    n
                };
                if field.kind == FieldType::Integer {
                    return integer(n).map(|n| table.push_number(&n));
                }
                return Ok(table.push_number(&n));
            }
            (FieldType::String | FieldType::Time, Tape::Str(..) | Tape::Esc(..)) => {
                return Ok(table.push_text(doc.str_of(tape)));
            }
            (FieldType::Date, Tape::Str(..) | Tape::Esc(..)) => {
                let s = doc.str_of(tape);
                if s.len() >= 10 && crate::provider::template::parse_date(s).is_some() {
                    return Ok(table.push_text(&s[..10]));
                }
            }
            _ => {}
        }
    }
    let value = doc.value_at(node);
    convert(field, &value, &row_for(field, doc, row), ctx, zone).map(|v| table.cell_of(v))
}

// ---------------------------------------------------------------------------------------
// Documents
// ---------------------------------------------------------------------------------------

/// A JSON answer as its text plus a flat index of its nodes in document order (a
/// "tape"): a container is followed by its children (an object by key, value, key,
/// value ...) and records where they end. Parsing allocates the index and, for strings
/// with escapes, their decoded text; nothing per object.
///
/// [`Doc::parse`] accepts exactly what `serde_json` accepts and [`Doc::to_value`] gives
/// what `serde_json` decodes; documents it is unsure about (duplicate keys, deep
/// nesting, numbers outside the simple forms that `serde_json` then refuses ...) are
/// handed back for `serde_json` to decide.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    text: String,
    decoded: String,
    tape: Nodes,
    /// The answer headers pagination reads (lower-case names), when any.
    headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tape {
    Null,
    Bool(bool),
    /// An integer token in its simplest form (what `serde_json` prints for a `u64`).
    U(u64),
    /// A negative integer token in its simplest form.
    I(i64),
    /// Any other number token: byte range in the text, decoded as `serde_json` does.
    Num(u32, u32),
    /// A string without escapes: byte range in the text.
    Str(u32, u32),
    /// A string with escapes: byte range in the decoded text.
    Esc(u32, u32),
    /// An array, and the tape index after its last descendant.
    Array(u32),
    /// An object, and the tape index after its last descendant.
    Object(u32),
}

/// The tape, eight bytes a node: the kind in the top four bits, then what the node holds
/// (a number, an index, or a range as its start and length). A node whose content does
/// not fit (integers beyond 60 bits, strings of 256 MiB and more) is kept whole in a
/// side list and the tape holds its place there. Half the memory of a tape of [`Tape`]s,
/// and half the pages to touch for a large answer.
#[derive(Debug, Clone, Default, PartialEq)]
struct Nodes {
    packed: Vec<u64>,
    wide: Vec<Tape>,
}

const KIND_SHIFT: u32 = 60;
const PAYLOAD: u64 = (1 << KIND_SHIFT) - 1;
const LEN_BITS: u32 = 28;
const LEN_MASK: u64 = (1 << LEN_BITS) - 1;
const K_NULL: u64 = 0;
const K_BOOL: u64 = 1;
const K_U: u64 = 2;
const K_I: u64 = 3;
const K_NUM: u64 = 4;
const K_STR: u64 = 5;
const K_ESC: u64 = 6;
const K_ARRAY: u64 = 7;
const K_OBJECT: u64 = 8;
const K_WIDE: u64 = 9;

impl Nodes {
    fn with_capacity(n: usize) -> Nodes {
        Nodes {
            packed: Vec::with_capacity(n),
            wide: Vec::new(),
        }
    }

    #[inline]
    fn len(&self) -> usize {
        self.packed.len()
    }

    #[inline]
    fn push(&mut self, t: Tape) {
        let packed = self.pack(t);
        self.packed.push(packed);
    }

    /// Sets a container's end (its node was pushed with end 0).
    #[inline]
    fn set(&mut self, i: usize, t: Tape) {
        let packed = self.pack(t);
        self.packed[i] = packed;
    }

    #[inline]
    fn pack(&mut self, t: Tape) -> u64 {
        let range = |kind: u64, a: u32, b: u32| {
            let len = u64::from(b.checked_sub(a)?);
            (len <= LEN_MASK).then_some(kind << KIND_SHIFT | u64::from(a) << LEN_BITS | len)
        };
        let packed = match t {
            Tape::Null => Some(K_NULL << KIND_SHIFT),
            Tape::Bool(b) => Some(K_BOOL << KIND_SHIFT | u64::from(b)),
            Tape::U(u) => (u <= PAYLOAD).then_some(K_U << KIND_SHIFT | u),
            Tape::I(i) => ((-(1 << 59))..(1 << 59))
                .contains(&i)
                .then_some(K_I << KIND_SHIFT | (i as u64 & PAYLOAD)),
            Tape::Num(a, b) => range(K_NUM, a, b),
            Tape::Str(a, b) => range(K_STR, a, b),
            Tape::Esc(a, b) => range(K_ESC, a, b),
            Tape::Array(end) => Some(K_ARRAY << KIND_SHIFT | u64::from(end)),
            Tape::Object(end) => Some(K_OBJECT << KIND_SHIFT | u64::from(end)),
        };
        packed.unwrap_or_else(|| {
            self.wide.push(t);
            K_WIDE << KIND_SHIFT | (self.wide.len() - 1) as u64
        })
    }

    /// The index after the node at `i` and its descendants (containers always fit the
    /// tape, never the side list).
    #[inline]
    fn end(&self, i: usize) -> usize {
        let p = self.packed[i];
        match p >> KIND_SHIFT {
            K_ARRAY | K_OBJECT => (p & PAYLOAD) as usize,
            _ => i + 1,
        }
    }

    /// The end of the object at `i`, `None` for another node.
    #[inline]
    fn object_end(&self, i: usize) -> Option<usize> {
        let p = self.packed[i];
        (p >> KIND_SHIFT == K_OBJECT).then_some((p & PAYLOAD) as usize)
    }

    /// The start and length of the string without escapes at `i`, `None` for another node.
    #[inline]
    fn plain_str(&self, i: usize) -> Option<(usize, usize)> {
        let p = self.packed[i];
        (p >> KIND_SHIFT == K_STR).then_some((
            ((p & PAYLOAD) >> LEN_BITS) as usize,
            (p & LEN_MASK) as usize,
        ))
    }

    /// Appends `other`, a tape indexed on its own, as if indexed here: its container
    /// ends moved on by `base` (this tape's length) and its decoded ranges by `decoded`
    /// (the decoded text's length). The caller has checked that the joined tape and
    /// decoded text stay within `u32`, which bounds every moved index.
    fn append(&mut self, other: &Nodes, base: u32, decoded: u32) {
        self.packed.reserve(other.packed.len());
        for (i, &p) in other.packed.iter().enumerate() {
            match p >> KIND_SHIFT {
                K_ARRAY | K_OBJECT => self.packed.push(p + u64::from(base)),
                K_ESC | K_WIDE => {
                    let t = match other.get(i) {
                        Tape::Esc(a, b) => Tape::Esc(a + decoded, b + decoded),
                        t => t,
                    };
                    self.push(t);
                }
                _ => self.packed.push(p),
            }
        }
    }

    #[inline]
    fn get(&self, i: usize) -> Tape {
        let p = self.packed[i];
        let payload = p & PAYLOAD;
        let start = (payload >> LEN_BITS) as u32;
        let end = start.wrapping_add((payload & LEN_MASK) as u32);
        match p >> KIND_SHIFT {
            K_NULL => Tape::Null,
            K_BOOL => Tape::Bool(payload != 0),
            K_U => Tape::U(payload),
            // Sign-extended from 60 bits.
            K_I => Tape::I(((p << 4) as i64) >> 4),
            K_NUM => Tape::Num(start, end),
            K_STR => Tape::Str(start, end),
            K_ESC => Tape::Esc(start, end),
            K_ARRAY => Tape::Array(payload as u32),
            K_OBJECT => Tape::Object(payload as u32),
            _ => self.wide[payload as usize],
        }
    }
}

/// One node of a [`Doc`] as [`Doc::item`] shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Item<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer token in its simplest form that fits a `u64`.
    UInt(u64),
    /// A negative integer token in its simplest form that fits an `i64`.
    Int(i64),
    /// Any other number: its token as written (as `serde_json` keeps it).
    Number(&'a str),
    /// A string, decoded.
    Str(&'a str),
    /// An array ([`Doc::items`]).
    Array,
    /// An object ([`Doc::members`]).
    Object,
}

/// Deeper documents go to `serde_json` (whose limit is 128).
const MAX_DEPTH: u32 = 100;

/// Objects with up to this many members are checked for a repeated key pairwise while
/// they are indexed; larger ones through a set afterwards.
const SMALL_OBJECT: usize = 16;

impl Doc {
    /// Indexes a JSON text; gives the text back when `serde_json` should decide.
    pub fn parse(text: String) -> Result<Doc, String> {
        Doc::parse_from(text, SPLIT_TEXT)
    }

    /// [`Doc::parse`], on two threads when the text is at least `split` bytes long.
    fn parse_from(text: String, split: usize) -> Result<Doc, String> {
        if u32::try_from(text.len()).is_err() {
            return Err(text);
        }
        let bytes = text.as_bytes();
        crate::pages::answer_ahead(bytes.len());
        let indexed = match split_point(bytes, split) {
            Some(at) => {
                let claim = AtomicU8::new(PENDING);
                let (send, piece) = std::sync::mpsc::sync_channel(1);
                let claim = &claim;
                crate::halves::beside(
                    || {
                        let indexed = index(bytes, Some(Ahead { at, piece, claim }));
                        claim.store(DONE, Ordering::Release);
                        indexed
                    },
                    move || {
                        if claim
                            .compare_exchange(PENDING, TAKEN, Ordering::AcqRel, Ordering::Acquire)
                            .is_ok()
                        {
                            // The receiver is gone when the first thread ended without it.
                            let _ = send.send(index_items(bytes, at, claim));
                        }
                    },
                )
            }
            None => index(bytes, None),
        };
        let Some((tape, decoded)) = indexed else {
            return Err(text);
        };
        Ok(Doc {
            text,
            decoded,
            tape,
            headers: Vec::new(),
        })
    }

    /// The document with the answer headers pagination reads (names in lower case).
    pub fn with_headers(mut self, headers: Vec<(String, String)>) -> Doc {
        self.headers = headers;
        self
    }

    /// An answer header kept with the document (`name` in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Indexes a JSON text, any JSON `serde_json` accepts (what [`Doc::parse`] is
    /// unsure about is decoded by `serde_json` and indexed from its `Value`).
    pub fn decode(text: String) -> Result<Doc, serde_json::Error> {
        match Doc::parse(text) {
            Ok(doc) => Ok(doc),
            Err(text) => serde_json::from_str::<Value>(&text).map(|v| Doc::of_value(&v)),
        }
    }

    /// The document of an answer: `null` for `204 No Content` (nothing to map, as
    /// Polar answers when there is no data), else its body indexed.
    pub fn of_answer(status: u16, bytes: Vec<u8>) -> Option<Doc> {
        if status == 204 {
            return Doc::of_answer_text(status, String::new());
        }
        Doc::of_answer_text(status, String::from_utf8(bytes).ok()?)
    }

    /// Indexes JSON bytes (an HTTP body); not UTF-8 is not JSON.
    pub fn decode_bytes(bytes: Vec<u8>) -> Option<Doc> {
        Doc::decode(String::from_utf8(bytes).ok()?).ok()
    }

    /// [`Doc::of_answer`] of a body already read as text (a recording): the same
    /// document, without checking the text's UTF-8 a second time.
    pub fn of_answer_text(status: u16, text: String) -> Option<Doc> {
        if status == 204 {
            return Doc::parse("null".to_owned()).ok();
        }
        Doc::decode(text).ok()
    }

    /// The document of a decoded `Value` (number texts kept as they are).
    fn of_value(value: &Value) -> Doc {
        let mut doc = Doc {
            text: String::new(),
            decoded: String::new(),
            tape: Nodes::default(),
            headers: Vec::new(),
        };
        doc.push_value(value);
        doc
    }

    fn push_str(&mut self, s: &str) {
        let start = self.decoded.len();
        self.decoded.push_str(s);
        // Texts beyond 4 GiB are refused by the answer size limit long before.
        let end = u32::try_from(self.decoded.len()).unwrap_or(u32::MAX);
        self.tape
            .push(Tape::Esc(u32::try_from(start).unwrap_or(u32::MAX), end));
    }

    fn push_value(&mut self, value: &Value) {
        match value {
            Value::Null => self.tape.push(Tape::Null),
            Value::Bool(b) => self.tape.push(Tape::Bool(*b)),
            Value::Number(n) => {
                let start = self.text.len();
                self.text.push_str(n.as_str());
                let end = u32::try_from(self.text.len()).unwrap_or(u32::MAX);
                self.tape
                    .push(Tape::Num(u32::try_from(start).unwrap_or(u32::MAX), end));
            }
            Value::String(s) => self.push_str(s),
            Value::Array(items) => {
                let at = self.tape.len();
                self.tape.push(Tape::Array(0));
                for item in items {
                    self.push_value(item);
                }
                self.tape.set(
                    at,
                    Tape::Array(u32::try_from(self.tape.len()).unwrap_or(u32::MAX)),
                );
            }
            Value::Object(map) => {
                let at = self.tape.len();
                self.tape.push(Tape::Object(0));
                for (key, item) in map {
                    self.push_str(key);
                    self.push_value(item);
                }
                self.tape.set(
                    at,
                    Tape::Object(u32::try_from(self.tape.len()).unwrap_or(u32::MAX)),
                );
            }
        }
    }

    /// The value of the first node `selector` selects in the whole document.
    pub fn find(&self, selector: &Selector) -> Option<Value> {
        self.first_by(0, selector).map(|i| self.value_at(i))
    }

    /// How many records `selector` finds: every match (`$[*]`, `$.data[*]`), or the
    /// items of the one array it selects (`$.data`).
    pub fn count(&self, selector: &Selector) -> usize {
        let mut found = Vec::new();
        self.select_by(0, selector, &mut found);
        match found.as_slice() {
            // A path to the list itself counts its items.
            [one] if matches!(self.tape.get(*one), Tape::Array(_)) => self.children(*one).count(),
            all => all.len(),
        }
    }

    /// Whether `condition` holds for the whole document.
    pub fn holds(&self, condition: &Condition) -> bool {
        doc_holds(condition, self, 0)
    }

    /// The nodes `selector` selects under `i`, in document order, appended to `out`.
    /// A path that needs the general query engine runs on the node's `Value` and is
    /// walked back to the document's nodes ([`Selector::locate`]).
    fn select_by(&self, i: usize, selector: &Selector, out: &mut Vec<usize>) {
        match selector.steps() {
            Some(steps) => self.select(i, steps, out),
            None => {
                for steps in selector.locate(&self.value_at(i)) {
                    out.extend(self.first(i, &steps));
                }
            }
        }
    }

    /// The first node `selector` selects under `i`.
    #[inline]
    fn first_by(&self, i: usize, selector: &Selector) -> Option<usize> {
        match selector.steps() {
            Some(steps) => self.first(i, steps),
            None => {
                let steps = selector.locate(&self.value_at(i)).into_iter().next()?;
                self.first(i, &steps)
            }
        }
    }

    /// The whole document as a `Value`.
    pub fn to_value(&self) -> Value {
        self.value_at(0)
    }

    /// What the node at tape index `i` is (node 0 is the whole document); the nodes of
    /// an object or an array are read with [`Doc::members`] and [`Doc::items`].
    #[inline]
    pub fn item(&self, i: usize) -> Item<'_> {
        match self.tape.get(i) {
            Tape::Null => Item::Null,
            Tape::Bool(b) => Item::Bool(b),
            Tape::U(u) => Item::UInt(u),
            Tape::I(n) => Item::Int(n),
            Tape::Num(a, b) => Item::Number(&self.text[a as usize..b as usize]),
            t @ (Tape::Str(..) | Tape::Esc(..)) => Item::Str(self.str_of(t)),
            Tape::Array(_) => Item::Array,
            Tape::Object(_) => Item::Object,
        }
    }

    /// The items of the array at `i`, in order (nothing for another node).
    #[inline]
    pub fn items(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        let end = match self.tape.get(i) {
            Tape::Array(end) => end as usize,
            _ => i + 1,
        };
        let mut k = i + 1;
        std::iter::from_fn(move || {
            (k < end).then(|| {
                let item = k;
                k = self.end(item);
                item
            })
        })
    }

    /// The keys and values of the object at `i`, in order (nothing for another node).
    /// An indexed document has no duplicate keys.
    #[inline]
    pub fn members(&self, i: usize) -> impl Iterator<Item = (&str, usize)> + '_ {
        let end = match self.tape.get(i) {
            Tape::Object(end) => end as usize,
            _ => i + 1,
        };
        let mut k = i + 1;
        std::iter::from_fn(move || {
            (k < end).then(|| {
                let key = self.str_of(self.tape.get(k));
                let value = k + 1;
                k = self.end(value);
                (key, value)
            })
        })
    }

    /// The node at tape index `i` as a `Value`.
    fn value_at(&self, i: usize) -> Value {
        match self.tape.get(i) {
            Tape::Null => Value::Null,
            Tape::Bool(b) => Value::Bool(b),
            t @ (Tape::U(_) | Tape::I(_) | Tape::Num(..)) => Value::Number(self.number_of(t)),
            t @ (Tape::Str(..) | Tape::Esc(..)) => Value::String(self.str_of(t).to_owned()),
            Tape::Array(_) => Value::Array(self.children(i).map(|c| self.value_at(c)).collect()),
            Tape::Object(_) => {
                let mut map = Map::new();
                let mut k = i + 1;
                let end = self.end(i);
                while k < end {
                    map.insert(
                        self.str_of(self.tape.get(k)).to_owned(),
                        self.value_at(k + 1),
                    );
                    k = self.end(k + 1);
                }
                Value::Object(map)
            }
        }
    }

    #[inline]
    fn str_of(&self, t: Tape) -> &str {
        match t {
            Tape::Str(a, b) => &self.text[a as usize..b as usize],
            Tape::Esc(a, b) => &self.decoded[a as usize..b as usize],
            _ => "",
        }
    }

    fn number_of(&self, t: Tape) -> Number {
        match t {
            Tape::U(u) => u.into(),
            Tape::I(i) => i.into(),
            // Checked by `serde_json` when the document was indexed.
            Tape::Num(a, b) => self.text[a as usize..b as usize]
                .parse()
                .unwrap_or_else(|_| 0.into()),
            _ => 0.into(),
        }
    }

    /// The tape index after the node at `i` and its descendants.
    #[inline]
    fn end(&self, i: usize) -> usize {
        self.tape.end(i)
    }

    /// The items of an array, or the member values of an object, in order.
    fn children(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        let (object, end) = match self.tape.get(i) {
            Tape::Array(end) => (false, end as usize),
            Tape::Object(end) => (true, end as usize),
            _ => (false, i + 1),
        };
        let mut k = i + 1;
        std::iter::from_fn(move || {
            if k >= end {
                return None;
            }
            let value = if object { k + 1 } else { k };
            k = self.end(value);
            Some(value)
        })
    }

    /// The value of member `name` of the object at `i`.
    #[inline]
    fn member(&self, i: usize, name: &str) -> Option<usize> {
        let end = self.tape.object_end(i)?;
        let name = name.as_bytes();
        let mut k = i + 1;
        while k < end {
            let found = match self.tape.plain_str(k) {
                // The common key: text without escapes, its length compared first.
                Some((a, len)) => len == name.len() && &self.text.as_bytes()[a..a + len] == name,
                None => self.key_bytes(self.tape.get(k)) == name,
            };
            if found {
                return Some(k + 1);
            }
            k = self.end(k + 1);
        }
        None
    }

    /// The bytes of a key (compared, never shown).
    #[inline]
    fn key_bytes(&self, t: Tape) -> &[u8] {
        let (text, a, b) = match t {
            Tape::Str(a, b) => (&self.text, a, b),
            Tape::Esc(a, b) => (&self.decoded, a, b),
            _ => return &[],
        };
        text.as_bytes()
            .get(a as usize..b as usize)
            .unwrap_or_default()
    }

    #[inline]
    fn step(&self, i: usize, step: &Step) -> Option<usize> {
        match (step, self.tape.get(i)) {
            (Step::Member(name), Tape::Object(_)) => self.member(i, name),
            (Step::Index(n), Tape::Array(_)) => {
                let index = if *n < 0 {
                    let len = self.children(i).count();
                    len.checked_sub(n.unsigned_abs() as usize)?
                } else {
                    *n as usize
                };
                self.children(i).nth(index)
            }
            _ => None,
        }
    }

    /// Every node `steps` select under `i`, in document order, appended to `out`.
    fn select(&self, i: usize, steps: &[Step], out: &mut Vec<usize>) {
        self.walk(i, steps, &mut |node| {
            out.push(node);
            true
        });
    }

    /// The first node `steps` select under `i`.
    #[inline]
    fn first(&self, mut i: usize, steps: &[Step]) -> Option<usize> {
        if !steps.iter().any(|s| matches!(s, Step::Wildcard)) {
            for step in steps {
                i = self.step(i, step)?;
            }
            return Some(i);
        }
        let mut found = None;
        self.walk(i, steps, &mut |node| {
            found = Some(node);
            false
        });
        found
    }

    /// Calls `found` with every selected node until it returns `false`.
    fn walk(&self, i: usize, steps: &[Step], found: &mut dyn FnMut(usize) -> bool) -> bool {
        let Some((step, rest)) = steps.split_first() else {
            return found(i);
        };
        match step {
            Step::Wildcard => {
                for child in self.children(i) {
                    if !self.walk(child, rest, found) {
                        return false;
                    }
                }
                true
            }
            _ => match self.step(i, step) {
                Some(next) => self.walk(next, rest, found),
                None => true,
            },
        }
    }
}

/// Texts at least this long are indexed on two threads: a second thread indexes the
/// items of an array from about the middle of the text on, while the first indexes
/// the text from its start and takes those items over when it reaches them.
const SPLIT_TEXT: usize = 1 << 20;

/// The one-pass indexer behind [`Doc::parse`]; `None` hands the text to `serde_json`.
struct Parser<'t> {
    bytes: &'t [u8],
    at: usize,
    tape: Nodes,
    decoded: String,
    /// The items a second thread indexes, when one does.
    ahead: Option<Ahead<'t>>,
    /// The deepest nesting of a container opened so far.
    deepest: u32,
}

/// The items of an array that a second thread indexes from byte `at` on, once it has
/// claimed them (`claim`: [`PENDING`], then [`TAKEN`] by that thread, or [`DONE`] by
/// the first one, which then indexes them itself).
struct Ahead<'c> {
    at: usize,
    piece: std::sync::mpsc::Receiver<Option<Piece>>,
    claim: &'c AtomicU8,
}

/// Nobody has started on the items ahead yet.
const PENDING: u8 = 0;
/// The second thread is indexing them.
const TAKEN: u8 = 1;
/// The first thread needs them no more (it reached them first, or it ended).
const DONE: u8 = 2;

/// Items indexed on their own: their tape (container ends counted from the first item)
/// and decoded strings, the position of the `]` after them, and the deepest nesting of
/// a container among them (an item itself at depth 0).
struct Piece {
    tape: Nodes,
    decoded: String,
    end: usize,
    deepest: u32,
}

/// The whole text indexed from its start (taking over the items `ahead` indexes if it
/// reaches them); `None` hands the text to `serde_json`.
fn index<'t>(bytes: &'t [u8], ahead: Option<Ahead<'t>>) -> Option<(Nodes, String)> {
    let mut parser = Parser {
        bytes,
        at: 0,
        tape: Nodes::with_capacity(bytes.len() / 6 + 4),
        decoded: String::new(),
        ahead,
        deepest: 0,
    };
    parser.value(0)?;
    parser.skip_ws();
    (parser.at == bytes.len()).then_some((parser.tape, parser.decoded))
}

/// The items of an array from byte `at` (an item's start) to the `]` that ends it,
/// indexed as [`Parser`] would index them there; `None` when they are not items
/// (`at` was inside a string, say), when the text is not JSON or is refused there, or
/// once `claim` is [`DONE`] (the first thread ended without them).
fn index_items(bytes: &[u8], at: usize, claim: &AtomicU8) -> Option<Piece> {
    let mut parser = Parser {
        bytes,
        at,
        tape: Nodes::with_capacity((bytes.len() - at) / 6 + 4),
        decoded: String::new(),
        ahead: None,
        deepest: 0,
    };
    loop {
        if claim.load(Ordering::Relaxed) == DONE {
            return None;
        }
        parser.value(0)?;
        parser.skip_ws();
        match *bytes.get(parser.at)? {
            b',' => parser.at += 1,
            b']' => break,
            _ => return None,
        }
    }
    Some(Piece {
        tape: parser.tape,
        decoded: parser.decoded,
        end: parser.at,
        deepest: parser.deepest,
    })
}

/// Where a second thread may start indexing a text of at least `split` bytes: the
/// first item after the middle that follows a `}` or `]` and a comma and opens an
/// object or array (`},{` as a series of points has it, white space allowed). A
/// position inside a string may match: the first thread then never reaches it as an
/// item and indexes everything itself.
fn split_point(bytes: &[u8], split: usize) -> Option<usize> {
    if bytes.len() < split {
        return None;
    }
    let ws = |b: &u8| matches!(b, b' ' | b'\n' | b'\r' | b'\t');
    let middle = bytes.len() / 2;
    memchr::memchr_iter(b',', &bytes[middle..])
        .take(4096)
        .map(|i| middle + i)
        .find_map(|comma| {
            let before = bytes[..comma].iter().rposition(|b| !ws(b))?;
            let after = comma + 1 + bytes[comma + 1..].iter().position(|b| !ws(b))?;
            (matches!(bytes[before], b'}' | b']') && matches!(bytes[after], b'{' | b'['))
                .then_some(after)
        })
}

impl Parser<'_> {
    #[inline]
    fn skip_ws(&mut self) {
        // Compact JSON has none: one look, most of the time.
        if self.bytes.get(self.at).is_none_or(|&b| b > b' ') {
            return;
        }
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.skip_ws();
        (self.bytes.get(self.at) == Some(&byte)).then(|| self.at += 1)
    }

    fn value(&mut self, depth: u32) -> Option<()> {
        self.skip_ws();
        match *self.bytes.get(self.at)? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => self.string(),
            b't' => self.literal(b"true", Tape::Bool(true)),
            b'f' => self.literal(b"false", Tape::Bool(false)),
            b'n' => self.literal(b"null", Tape::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8], tape: Tape) -> Option<()> {
        if !self.bytes[self.at..].starts_with(word) {
            return None;
        }
        self.at += word.len();
        self.tape.push(tape);
        Some(())
    }

    fn array(&mut self, depth: u32) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.deepest = self.deepest.max(depth);
        self.at += 1;
        let at = self.tape.len();
        self.tape.push(Tape::Array(0));
        self.skip_ws();
        if self.bytes.get(self.at) == Some(&b']') {
            self.at += 1;
        } else {
            loop {
                self.skip_ws();
                let taken = self.ahead.as_ref().is_some_and(|a| a.at == self.at)
                    && self.take_ahead(depth + 1);
                if !taken {
                    self.value(depth + 1)?;
                }
                self.skip_ws();
                match self.bytes.get(self.at)? {
                    b',' => self.at += 1,
                    b']' => {
                        self.at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.tape
            .set(at, Tape::Array(u32::try_from(self.tape.len()).ok()?));
        Some(())
    }

    fn object(&mut self, depth: u32) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.deepest = self.deepest.max(depth);
        self.at += 1;
        let at = self.tape.len();
        self.tape.push(Tape::Object(0));
        self.skip_ws();
        let mut members = 0usize;
        // The keys of a small object (every point of a series), to find a duplicate
        // without walking the tape again.
        let mut keys = [0usize; SMALL_OBJECT];
        let mut duplicate = false;
        if self.bytes.get(self.at) == Some(&b'}') {
            self.at += 1;
        } else {
            loop {
                self.skip_ws();
                if self.bytes.get(self.at) != Some(&b'"') {
                    return None;
                }
                let key = self.tape.len();
                self.string()?;
                if members < SMALL_OBJECT {
                    duplicate |= keys[..members]
                        .iter()
                        .any(|&k| self.key(k) == self.key(key));
                    keys[members] = key;
                }
                self.expect(b':')?;
                self.value(depth + 1)?;
                members += 1;
                self.skip_ws();
                match self.bytes.get(self.at)? {
                    b',' => self.at += 1,
                    b'}' => {
                        self.at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        let end = self.tape.len();
        self.tape.set(at, Tape::Object(u32::try_from(end).ok()?));
        if duplicate || (members > SMALL_OBJECT && self.has_duplicate_keys(at, members)) {
            // `serde_json` keeps the first place and the last value: let it decide.
            return None;
        }
        Some(())
    }

    /// Takes over the items the second thread indexed from here (items at nesting
    /// `depth`), up to the `]` after them; `false` when there are none to take (it
    /// failed or was refused), and this thread goes on by itself.
    fn take_ahead(&mut self, depth: u32) -> bool {
        let Some(ahead) = self.ahead.take() else {
            return false;
        };
        // Not started yet (the other core is busy): this thread goes on by itself, and
        // the second one will not start.
        if ahead
            .claim
            .compare_exchange(PENDING, DONE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return false;
        }
        let Ok(Some(piece)) = ahead.piece.recv() else {
            return false;
        };
        // Its containers opened `depth` deeper here than where it counted from.
        if depth.saturating_add(piece.deepest) >= MAX_DEPTH {
            return false;
        }
        // Every index of the joined tape and decoded text fits 32 bits (as one
        // thread's would: the text itself does).
        let fits = |a: usize, b: usize| u32::try_from(a + b).is_ok();
        let (base, decoded) = (self.tape.len(), self.decoded.len());
        if !fits(base, piece.tape.len()) || !fits(decoded, piece.decoded.len()) {
            return false;
        }
        self.tape.append(&piece.tape, base as u32, decoded as u32);
        self.decoded.push_str(&piece.decoded);
        self.deepest = self.deepest.max(depth + piece.deepest);
        self.at = piece.end;
        #[cfg(test)]
        tests::TAKEN_OVER.with(|n| n.set(n.get() + 1));
        true
    }

    fn key(&self, k: usize) -> &[u8] {
        match self.tape.get(k) {
            Tape::Str(a, b) => &self.bytes[a as usize..b as usize],
            Tape::Esc(a, b) => &self.decoded.as_bytes()[a as usize..b as usize],
            _ => &[],
        }
    }

    /// Whether a large object (more than [`SMALL_OBJECT`] members) repeats a key.
    fn has_duplicate_keys(&self, at: usize, members: usize) -> bool {
        let end_of = |i: usize| match self.tape.get(i) {
            Tape::Array(end) | Tape::Object(end) => end as usize,
            _ => i + 1,
        };
        let keys = std::iter::successors(Some(at + 1), |&k| Some(end_of(k + 1))).take(members);
        let mut seen = std::collections::HashSet::with_capacity(members);
        !keys.into_iter().all(|k| seen.insert(self.key(k)))
    }

    fn string(&mut self) -> Option<()> {
        let start = self.at + 1;
        let i = string_stop(self.bytes, start)?;
        match self.bytes[i] {
            b'"' => {}
            b'\\' => return self.escaped_string(start),
            _ => return None,
        }
        self.tape.push(Tape::Str(
            u32::try_from(start).ok()?,
            u32::try_from(i).ok()?,
        ));
        self.at = i + 1;
        Some(())
    }

    /// A string with escapes, decoded by `serde_json` itself.
    fn escaped_string(&mut self, start: usize) -> Option<()> {
        let mut i = start;
        loop {
            match *self.bytes.get(i)? {
                b'"' => break,
                b'\\' => i += 2,
                0x00..=0x1F => return None,
                _ => i += 1,
            }
        }
        let quoted = std::str::from_utf8(self.bytes.get(start - 1..=i)?).ok()?;
        let text: String = serde_json::from_str(quoted).ok()?;
        let a = u32::try_from(self.decoded.len()).ok()?;
        self.decoded.push_str(&text);
        let b = u32::try_from(self.decoded.len()).ok()?;
        self.tape.push(Tape::Esc(a, b));
        self.at = i + 1;
        Some(())
    }

    fn number(&mut self) -> Option<()> {
        let start = self.at;
        // The common token first: an integer in its simplest form, read in one pass.
        let negative = self.bytes[start] == b'-';
        let first = start + usize::from(negative);
        let mut i = first;
        let mut magnitude = 0u64;
        while let Some(&d @ b'0'..=b'9') = self.bytes.get(i) {
            magnitude = magnitude.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            i += 1;
        }
        let digits = i - first;
        let ends = !matches!(self.bytes.get(i), Some(b'-' | b'+' | b'.' | b'e' | b'E'));
        if ends && (1..=19).contains(&digits) && (digits == 1 || self.bytes[first] != b'0') {
            if !negative {
                self.at = i;
                self.tape.push(Tape::U(magnitude));
                return Some(());
            }
            // `-0` is a float in `serde_json`; larger magnitudes than i64's are too.
            if magnitude != 0 && magnitude <= i64::MAX as u64 + 1 {
                self.at = i;
                self.tape.push(Tape::I(0i64.wrapping_sub(magnitude as i64)));
                return Some(());
            }
        }
        let mut i = start;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.bytes.get(i) {
            i += 1;
        }
        self.at = i;
        let token = &self.bytes[start..i];
        // Floats, `-0`, integers beyond 64 bits: `serde_json` judges and decodes them
        // (keeping their text), here and in `Doc::number_of`.
        let text = std::str::from_utf8(token).ok()?;
        text.parse::<Number>().ok()?;
        self.tape.push(Tape::Num(
            u32::try_from(start).ok()?,
            u32::try_from(i).ok()?,
        ));
        Some(())
    }
}

/// The index of the first byte at or after `i` that ends a run of plain string
/// bytes: `"`, `\\` or a control character; `None` at the end of the text. Eight bytes
/// are looked at a time (a point's keys and values are short, and most texts are ASCII).
#[inline]
fn string_stop(bytes: &[u8], mut i: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        // The lowest flagged byte of each test is exact (a borrow only flags bytes above
        // a true match), so the lowest of them all is the first stop.
        let stops = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (w.wrapping_sub(ONES * 0x20) & !w);
        let stops = stops & HIGH;
        if stops != 0 {
            return Some(i + (stops.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    bytes[i..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|offset| i + offset)
}

/// A field's value from what its path found: absent for nothing or `null`.
fn field_value(
    field: &Field,
    raw: Option<&Value>,
    row: &Value,
    ctx: MapContext,
) -> Result<Option<Value>, String> {
    match raw {
        None | Some(Value::Null) => Ok(None),
        Some(v) => convert(field, v, row, ctx, None).map(Some),
    }
}

/// The value a field's `map` gives for `value` (by its text), else its `default`.
fn mapped(field: &Field, value: Value) -> Result<Value, String> {
    let Some(map) = &field.map else {
        return Ok(value);
    };
    let key = match &value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match map.get(&key).or(field.default.as_ref()) {
        Some(v) => Ok(v.clone()),
        None => Err(format!(
            "`{}` is not one of the values the field maps ({})",
            short(&value),
            map.keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Seconds in a duration: ISO 8601 (`PT1H2M30S`, `P1DT2H`, `PT0.5S`), seconds with a
/// unit `s` (`"1680s"`, Google's form), or a number of seconds.
fn duration_seconds(v: &Value) -> Result<f64, String> {
    if let Value::Number(n) = v {
        return n.as_f64().ok_or_else(|| "number out of range".to_owned());
    }
    let text = v
        .as_str()
        .ok_or_else(|| format!("`{}` is not a duration", short(v)))?
        .trim();
    let bad = || format!("`{text}` is not a duration (PT1H2M30S or 1680s)");
    if let Some(seconds) = text.strip_suffix('s').and_then(|n| n.parse::<f64>().ok()) {
        return Ok(seconds);
    }
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let body = body.strip_prefix('P').ok_or_else(bad)?;
    let (days, time) = match body.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (body, None),
    };
    let mut total = 0.0;
    let mut any = false;
    let mut read = |part: &str, units: &[(char, f64)]| -> Result<(), String> {
        let mut number = String::new();
        let mut next = 0;
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' || c == ',' {
                number.push(if c == ',' { '.' } else { c });
                continue;
            }
            let at = units[next..]
                .iter()
                .position(|(u, _)| *u == c)
                .ok_or_else(bad)?;
            let factor = units[next + at].1;
            next += at + 1;
            total += number.parse::<f64>().map_err(|_| bad())? * factor;
            number.clear();
            any = true;
        }
        if number.is_empty() {
            Ok(())
        } else {
            Err(bad())
        }
    };
    read(
        days,
        &[
            ('Y', 365.0 * 86_400.0),
            ('M', 30.0 * 86_400.0),
            ('W', 7.0 * 86_400.0),
            ('D', 86_400.0),
        ],
    )?;
    if let Some(t) = time {
        if t.is_empty() {
            return Err(bad());
        }
        read(t, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
    }
    if !any {
        return Err(bad());
    }
    Ok(if negative { -total } else { total })
}

fn number_of(v: &Value) -> Option<Number> {
    match v {
        Value::Number(n) => Some(n.clone()),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(i) = s.parse::<i64>() {
                Some(i.into())
            } else if integer_magnitude(s).is_some() {
                // Beyond 64 bits: all the digits.
                s.parse::<Number>().ok()
            } else {
                s.parse::<f64>().ok().and_then(Number::from_f64)
            }
        }
        _ => None,
    }
}

/// A number as an integer: integers unchanged (exact at any size), others rounded
/// (to the exact integer of the rounded double beyond 64 bits).
fn integer(n: Number) -> Result<Number, String> {
    if integer_magnitude(n.as_str()).is_some() {
        return Ok(n);
    }
    let rounded = n.as_f64().ok_or("number out of range")?.round();
    format!("{rounded:.0}")
        .parse()
        .map_err(|_| "number out of range".to_owned())
}

fn convert(
    field: &Field,
    v: &Value,
    row: &Value,
    ctx: MapContext,
    zone: Option<RecordZone>,
) -> Result<Value, String> {
    if field.from == Some(SourceFormat::Duration) {
        let seconds = duration_seconds(v)?;
        // Whole seconds stay whole (`1680`, not `1680.0`).
        let n = if seconds.fract() == 0.0 && seconds.abs() < 9.0e15 {
            Number::from(seconds as i64)
        } else {
            Number::from_f64(seconds).ok_or("not a finite number")?
        };
        let n = arithmetic(field, n, row, ctx)?;
        return if field.kind == FieldType::Integer {
            integer(n).map(Value::Number)
        } else {
            Ok(Value::Number(n))
        };
    }
    if let (Some(from), Some(until)) = (field.from, &field.until) {
        let Some(end) = until.first(row).filter(|e| !e.is_null()) else {
            return Err(format!("no end time at `{}`", until.as_str()));
        };
        let seconds = instant_of(from, end, zone, ctx.zone)? - instant_of(from, v, zone, ctx.zone)?;
        let n = Number::from(seconds);
        let n = arithmetic(field, n, row, ctx)?;
        return if field.kind == FieldType::Integer {
            integer(n).map(Value::Number)
        } else {
            Ok(Value::Number(n))
        };
    }
    if let Some(from) = field.from {
        return convert_time(from, field.kind, v, zone, ctx.zone);
    }
    match field.kind {
        FieldType::Auto if !has_arithmetic(field) => Ok(v.clone()),
        FieldType::Auto | FieldType::Number | FieldType::Integer => {
            let n = number_of(v).ok_or_else(|| format!("`{}` is not a number", short(v)))?;
            let n = arithmetic(field, n, row, ctx)?;
            if field.kind == FieldType::Integer {
                return integer(n).map(Value::Number);
            }
            Ok(Value::Number(n))
        }
        FieldType::String => Ok(match v {
            Value::String(s) => Value::String(s.clone()),
            other => Value::String(other.to_string()),
        }),
        FieldType::Date => match v.as_str() {
            Some(s) if s.len() >= 10 && crate::provider::template::parse_date(s).is_some() => {
                Ok(Value::String(s[..10].to_owned()))
            }
            _ => Err(format!("`{}` is not a date", short(v))),
        },
        FieldType::Time | FieldType::Datetime | FieldType::Instant | FieldType::Offset => match v {
            Value::String(s) => Ok(Value::String(s.clone())),
            _ => Err(format!("`{}` is not text", short(v))),
        },
    }
}

fn has_arithmetic(f: &Field) -> bool {
    f.scale.is_some()
        || f.exponent.is_some()
        || f.unit.is_some()
        || f.round.is_some()
        || !f.add.is_empty()
}

fn arithmetic(field: &Field, n: Number, row: &Value, ctx: MapContext) -> Result<Number, String> {
    if !has_arithmetic(field) {
        return Ok(n);
    }
    let mut x = n.as_f64().ok_or("number out of range")?;
    for path in &field.add {
        if let Some(more) = path.first(row).filter(|m| !m.is_null()) {
            x += number_of(more).and_then(|m| m.as_f64()).ok_or_else(|| {
                format!("`{}` at `{}` is not a number", short(more), path.as_str())
            })?;
        }
    }
    if let Some(path) = &field.exponent {
        let e = path
            .first(row)
            .and_then(number_of)
            .and_then(|e| e.as_i64())
            .ok_or_else(|| format!("no whole exponent at `{}`", path.as_str()))?;
        let e = i32::try_from(e).map_err(|_| "exponent out of range")?;
        x = if e < 0 {
            x / 10f64.powi(-e)
        } else {
            x * 10f64.powi(e)
        };
    }
    if let Some(s) = field.scale {
        x *= s;
    }
    if let Some(u) = &field.unit {
        let from = match field.unit_path.as_ref().and_then(|p| p.first(row)) {
            Some(named) => serde_json::from_value::<crate::provider::raw::Unit>(named.clone())
                .ok()
                .filter(|unit| u.quantity.base_factor(*unit).is_some())
                .ok_or_else(|| format!("`{}` is not a unit the field converts", short(named)))?,
            None => u.from,
        };
        x = units::convert(x, u.quantity, from, ctx.system).ok_or("unit mismatch")?;
    }
    if let Some(d) = field.round {
        let f = 10f64.powi(d as i32);
        x = (x * f).round() / f;
    }
    Number::from_f64(clean(x)).ok_or_else(|| "not a finite number".to_owned())
}

/// The epoch seconds of a time read as `from` reads it.
fn instant_of(
    from: SourceFormat,
    v: &Value,
    record: Option<RecordZone>,
    user: chrono_tz::Tz,
) -> Result<i64, String> {
    read_local(from, v, record, user)?
        .map(|at| at.utc().timestamp())
        .ok_or_else(|| format!("`{}` is not an instant", short(v)))
}

/// An instant or local date-time read as `from` reads it, at the offset it was
/// recorded in; `None` for the civil formats, which have no instant.
fn read_local(
    from: SourceFormat,
    v: &Value,
    record: Option<RecordZone>,
    user: chrono_tz::Tz,
) -> Result<Option<local::Local>, String> {
    let text = || {
        v.as_str()
            .ok_or_else(|| format!("`{}` is not text", short(v)))
    };
    Ok(Some(match from {
        SourceFormat::EpochS | SourceFormat::EpochMs => {
            let n = number_of(v)
                .and_then(|n| n.as_f64())
                .ok_or_else(|| format!("`{}` is not an epoch number", short(v)))?;
            let ms = if from == SourceFormat::EpochS {
                n * 1000.0
            } else {
                n
            };
            let at = DateTime::<Utc>::from_timestamp_millis(ms as i64)
                .ok_or_else(|| format!("`{}` is out of range", short(v)))?;
            local::at_instant(at, None, record, user)
        }
        SourceFormat::Rfc3339 => {
            let (at, own) = local::parse_rfc3339(text()?)?;
            local::at_instant(at, own, record, user)
        }
        SourceFormat::LocalDatetime => local::at_local(local::parse_naive(text()?)?, record, user)?,
        SourceFormat::CivilDate | SourceFormat::CivilTime | SourceFormat::Duration => {
            return Ok(None);
        }
    }))
}

fn convert_time(
    from: SourceFormat,
    kind: FieldType,
    v: &Value,
    record: Option<RecordZone>,
    user: chrono_tz::Tz,
) -> Result<Value, String> {
    let text = |s: String| Ok(Value::String(s));
    match from {
        SourceFormat::CivilDate => {
            let part = |k: &str| v.get(k).and_then(number_of).and_then(|n| n.as_i64());
            let (y, m, d) = (part("year"), part("month"), part("day"));
            match (y, m, d) {
                (Some(y), Some(m), Some(d)) => {
                    let date = NaiveDate::from_ymd_opt(y as i32, m as u32, d as u32)
                        .ok_or_else(|| format!("`{}` is not a valid date", short(v)))?;
                    text(date.format("%Y-%m-%d").to_string())
                }
                _ => Err(format!("`{}` is not a {{year, month, day}} date", short(v))),
            }
        }
        SourceFormat::CivilTime => {
            if !v.is_object() {
                return Err(format!(
                    "`{}` is not a {{hours, minutes, seconds}} time",
                    short(v)
                ));
            }
            let part = |k: &str| {
                v.get(k)
                    .and_then(number_of)
                    .and_then(|n| n.as_i64())
                    .unwrap_or(0)
            };
            text(format!(
                "{:02}:{:02}:{:02}",
                part("hours"),
                part("minutes"),
                part("seconds")
            ))
        }
        SourceFormat::EpochS
        | SourceFormat::Rfc3339
        | SourceFormat::EpochMs
        | SourceFormat::LocalDatetime => match read_local(from, v, record, user)? {
            Some(at) => format_local(at, kind),
            None => Err(format!("`{}` is not a time", short(v))),
        },
        SourceFormat::Duration => Err("a duration is not a time".to_owned()),
    }
}

/// A local time as the field's type asks: its date, time of day, date-time with the
/// offset, the instant in UTC, or the offset alone.
fn format_local(at: local::Local, kind: FieldType) -> Result<Value, String> {
    let s = match kind {
        FieldType::Date => at.at.format("%Y-%m-%d").to_string(),
        FieldType::Time => at.at.format("%H:%M:%S").to_string(),
        FieldType::Offset => local::format_offset(at.offset),
        FieldType::Instant => at.utc().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        _ => format!(
            "{}{}",
            at.at.format("%Y-%m-%dT%H:%M:%S"),
            local::format_offset(at.offset)
        ),
    };
    Ok(Value::String(s))
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!("{}…", &s[..s.floor_char_boundary(60)])
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    /// A day of `points` heart-rate points as Fitbit answers it, with `bad` points'
    /// values replaced by strings naming their index.
    fn heart_day(points: usize, bad: &[usize]) -> String {
        let mut text = String::from(
            r#"{"activities-heart":[{"dateTime":"2026-10-30","value":{}}],"activities-heart-intraday":{"dataset":["#,
        );
        for i in 0..points {
            if i > 0 {
                text.push(',');
            }
            let value = if bad.contains(&i) {
                format!("\"bad{i}\"")
            } else {
                (40 + i % 150).to_string()
            };
            let (h, m, s) = (i / 3600 % 24, i / 60 % 60, i % 60);
            text.push_str(&format!(
                r#"{{"time":"{h:02}:{m:02}:{s:02}","value":{value}}}"#
            ));
        }
        text.push_str(r#"],"datasetInterval":1,"datasetType":"second"}}"#);
        text
    }

    fn map_heart_day(text: String) -> Result<crate::sensors::Sensors, super::TransformError> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let provider =
            crate::provider::load(&root.join("providers/fitbit.yaml"), &Default::default())
                .unwrap_or_else(|d| panic!("{d}"));
        let method = &provider.methods["intraday_time_series"];
        let ctx = super::MapContext::new(
            crate::transform::units::UnitSystem::Metric,
            chrono_tz::Tz::UTC,
        );
        let doc = super::Doc::parse(text).expect("a plain document");
        let mapped = super::map_method(method, vec![doc], super::Layout::Mapped, ctx)?;
        let mut tree = crate::sensors::Sensors::default();
        tree.merge(mapped.mapped);
        Ok(tree)
    }

    /// A series long enough to be mapped in two halves gives the entries, in order,
    /// that one mapped in one piece gives; the first failing point is the one reported.
    #[test]
    fn long_series_map_as_one_piece() {
        let points = 2 * crate::sensors::PARALLEL_ROWS + 3;
        let tree = map_heart_day(heart_day(points, &[])).expect("a day maps");
        let entries = tree.to_value()["heart-rate"]
            .as_array()
            .cloned()
            .expect("a list");
        assert_eq!(entries.len(), points);
        for (i, entry) in entries.iter().enumerate() {
            let (h, m, s) = (i / 3600 % 24, i / 60 % 60, i % 60);
            let expected = serde_json::json!({
                "dateTime": "2026-10-30",
                "time": format!("{h:02}:{m:02}:{s:02}"),
                "value": 40 + i % 150,
            });
            assert_eq!(entry, &expected, "point {i}");
        }
        // The same points in a short series (mapped in one piece) read alike.
        let short = map_heart_day(heart_day(crate::sensors::PARALLEL_ROWS - 1, &[])).expect("maps");
        let short = short.to_value()["heart-rate"]
            .as_array()
            .cloned()
            .expect("a list");
        assert_eq!(short[..], entries[..short.len()]);

        let late = points - 5;
        for (bad, named) in [
            (vec![7, late], "bad7"),
            (vec![late], &*format!("bad{late}")),
        ] {
            let error = map_heart_day(heart_day(points, &bad)).expect_err("a string value");
            assert_eq!(error.output, "heart-rate");
            assert!(error.message.contains(named), "{bad:?}: {}", error.message);
        }
    }

    #[test]
    fn durations_in_every_spelling_are_seconds() {
        use serde_json::json;
        for (given, seconds) in [
            (json!("PT1H2M30S"), 3750.0),
            (json!("P1DT2H"), 93_600.0),
            (json!("PT0.5S"), 0.5),
            (json!("PT45M"), 2700.0),
            (json!("1680s"), 1680.0),
            (json!("3.5s"), 3.5),
            (json!(90), 90.0),
            (json!("-PT1M"), -60.0),
        ] {
            assert_eq!(super::duration_seconds(&given).unwrap(), seconds, "{given}");
        }
        for bad in [
            json!("P"),
            json!("PT"),
            json!("1h"),
            json!("PT1S2M"),
            json!(true),
            json!("P1H"),
        ] {
            assert!(super::duration_seconds(&bad).is_err(), "{bad}");
        }
    }

    use super::*;
    use crate::sensors::Sensors;
    use std::path::{Path, PathBuf};

    fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                json_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
    }

    fn parse_both(text: &str) -> (Option<Value>, Option<Value>) {
        let serde = serde_json::from_str::<Value>(text).ok();
        let doc = match Doc::parse(text.to_owned()) {
            Ok(doc) => Some(doc.to_value()),
            // Handed back: `serde_json` decides, so the verdicts agree by construction.
            Err(back) => {
                assert_eq!(back, text);
                serde.clone()
            }
        };
        (serde, doc)
    }

    #[test]
    fn string_stops_are_found_as_byte_by_byte() {
        let naive = |bytes: &[u8], i: usize| {
            bytes[i..]
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .map(|o| i + o)
        };
        let mut texts: Vec<Vec<u8>> = vec![Vec::new(), b"\"".to_vec(), "é\u{1f}x".into()];
        for stop in [b'"', b'\\', 0x00, 0x1F, b'\n'] {
            for len in 0..20 {
                for at in 0..=len {
                    let mut text = vec![b'a'; len];
                    text.extend_from_slice("é€".as_bytes());
                    if at < len {
                        text[at] = stop;
                    }
                    texts.push(text);
                }
            }
        }
        // Bytes next to the stops that borrows could confuse.
        texts.push(vec![0x21, 0x20, 0x1F, b'"', 0x23, 0x5B, 0x5D, 0xFF, b'\\']);
        for text in &texts {
            for start in 0..=text.len() {
                assert_eq!(
                    string_stop(text, start),
                    naive(text, start),
                    "{text:?} from {start}"
                );
            }
        }
    }

    #[test]
    fn tape_nodes_read_back_as_written() {
        let nodes = [
            Tape::Null,
            Tape::Bool(true),
            Tape::Bool(false),
            Tape::U(0),
            Tape::U(PAYLOAD),
            Tape::U(PAYLOAD + 1),
            Tape::U(u64::MAX),
            Tape::I(-1),
            Tape::I(-(1 << 59)),
            Tape::I(-(1 << 59) - 1),
            Tape::I(i64::MIN),
            Tape::I(1 << 59),
            Tape::Num(3, 9),
            Tape::Str(0, 0),
            Tape::Str(u32::MAX - 1, u32::MAX),
            Tape::Str(7, 7 + (1 << LEN_BITS) - 1),
            Tape::Str(7, 7 + (1 << LEN_BITS)),
            Tape::Esc(u32::MAX, u32::MAX),
            Tape::Esc(5, 4),
            Tape::Array(u32::MAX),
            Tape::Object(12),
        ];
        let mut tape = Nodes::default();
        for node in nodes {
            tape.push(node);
        }
        tape.set(0, Tape::Object(3));
        for (i, node) in nodes.iter().enumerate().skip(1) {
            assert_eq!(tape.get(i), *node, "node {i}");
        }
        assert_eq!(tape.get(0), Tape::Object(3));
        assert_eq!(tape.end(0), 3);
        assert_eq!(tape.object_end(0), Some(3));
        // What does not fit went to the side list, and only that.
        assert_eq!(tape.wide.len(), 7);
    }

    #[test]
    fn documents_decode_as_serde_json_does() {
        for text in [
            "0",
            "-0",
            "-1",
            "1.5",
            "1e3",
            "1E-3",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "18446744073709551616",
            "123456789012345678901234567890",
            "01",
            "1.",
            ".5",
            "-",
            "+1",
            "1e999",
            "0.1e-400",
            " [1, 2 ,3 ] ",
            "[]",
            "{}",
            r#"{"a":1,"a":2}"#,
            r#"{"a":{"b":[true,false,null]},"c":"x"}"#,
            r#""\u00e9\n\"""#,
            r#""\ud800""#,
            r#""\ud83d\ude00""#,
            "\"tab\there\"",
            r#"{"k\u0041":1,"kA":2}"#,
            "[1,]",
            "[1 2]",
            r#"{"a" 1}"#,
            "nul",
            "truex",
            "[1] x",
            "\u{feff}[]",
            "",
            r#"{"é":"ü","t":"08:00:00"}"#,
            "[1.0, 2.50, -0.0, 1e-7, 123456.789e3]",
        ] {
            let (serde, doc) = parse_both(text);
            assert_eq!(serde, doc, "{text:?}");
            if let (Some(a), Some(b)) = (&serde, &doc) {
                assert_eq!(a.to_string(), b.to_string(), "{text:?}");
            }
        }
        let wide: Vec<String> = (0..20).map(|k| format!(r#""k{k}":{k}"#)).collect();
        for text in [
            format!("{{{}}}", wide.join(",")),
            format!(r#"{{{},"k3":0}}"#, wide.join(",")),
            format!(r#"[{{"a":1,"b":2,"a":3}},{{{}}}]"#, wide[..16].join(",")),
        ] {
            let (serde, doc) = parse_both(&text);
            assert_eq!(serde, doc, "{text:?}");
            // Duplicate keys are left to `serde_json` (first place, last value).
            assert_eq!(
                Doc::parse(text.clone()).is_ok(),
                !text.contains(r#""k3":0"#) && !text.contains(r#""a":3"#),
                "{text}"
            );
        }
        let deep = format!("{}{}", "[".repeat(127), "]".repeat(127));
        let (serde, doc) = parse_both(&deep);
        assert_eq!(serde, doc);
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        json_files(&root.join("tests"), &mut files);
        assert!(files.len() > 20, "{files:?}");
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            let (serde, doc) = parse_both(&text);
            assert_eq!(serde, doc, "{}", file.display());
        }
    }

    thread_local! {
        /// How often this thread's indexer took over items a second thread indexed.
        pub(super) static TAKEN_OVER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// Indexes `text` on one thread, and on two wherever a split point is found (as
    /// it comes, and with the second thread's items ready when the first reaches them):
    /// the same document, or all hand the text back. The number of take-overs of
    /// ready items is returned.
    fn index_both(text: &str) -> usize {
        let shown = &text[..text.len().min(200)];
        let one = Doc::parse_from(text.to_owned(), usize::MAX);
        assert_eq!(Doc::parse_from(text.to_owned(), 0), one, "{shown}");
        let bytes = text.as_bytes();
        let Some(at) = split_point(bytes, 0) else {
            return 0;
        };
        let claim = AtomicU8::new(TAKEN);
        let (send, piece) = std::sync::mpsc::sync_channel(1);
        send.send(index_items(bytes, at, &claim)).unwrap();
        let before = TAKEN_OVER.with(|n| n.get());
        let ready = index(
            bytes,
            Some(Ahead {
                at,
                piece,
                claim: &claim,
            }),
        );
        let taken = TAKEN_OVER.with(|n| n.get()) - before;
        let one = one.ok().map(|doc| (doc.tape, doc.decoded));
        assert_eq!(ready, one, "{shown}");
        taken
    }

    /// Items indexed by a second thread from about the middle of a text, then taken
    /// over, give the document one thread gives: escapes, numbers kept whole, nested
    /// items, white space; and where the second thread starts inside a string, before
    /// an error, too deep, or at a repeated key, the outcome is still one thread's.
    #[test]
    fn documents_index_alike_on_two_threads() {
        assert_eq!(index_both(&heart_day(1000, &[])), 1);
        assert_eq!(index_both(&heart_day(1000, &[3, 990])), 1);
        // Escapes and numbers beyond 60 bits on both sides; arrays as items; spaces.
        let item = |i: usize| {
            format!(
                r#"{{"k\u0041{i}":"v\n{i}","big":{},"f":1.5e3,"n":[[{i}],[-{i}]],"t":true}}"#,
                u64::MAX - i as u64
            )
        };
        let items: Vec<String> = (0..300).map(item).collect();
        for joint in [",", " ,\n ", "\t,"] {
            let text = format!(r#"{{"a":[{}],"b":"x\"y"}}"#, items.join(joint));
            assert_eq!(index_both(&text), 1, "{joint:?}");
        }
        let rows: Vec<String> = (0..400).map(|i| format!("[{i},\"r{i}\"]")).collect();
        assert_eq!(index_both(&format!("[{}]", rows.join(","))), 1);
        // The middle inside a long string that looks like items: never taken over.
        let looks = "},{\\\"a\\\":1".repeat(200);
        assert_eq!(index_both(&format!(r#"[{{"s":"{looks}"}},{{"b":2}}]"#)), 0);
        // Not JSON after the middle, or before it: both hand the text back.
        let day = heart_day(1000, &[]);
        let broken_late = day.replacen(r#"{"time":"00:15:00""#, r#"{"time":"00:15:00"x"#, 1);
        let broken_early = day.replacen(r#"{"time":"00:00:05""#, r#"{"time" "00:00:05""#, 1);
        for broken in [&broken_late, &broken_early] {
            index_both(broken);
            assert!(Doc::parse_from(broken.clone(), 0).is_err());
        }
        // A repeated key among the items ahead: left to `serde_json`, as one thread does.
        let repeated = day.replacen(
            r#"{"time":"00:15:00","#,
            r#"{"time":"00:15:00","time":"x","#,
            1,
        );
        assert_eq!(index_both(&repeated), 0);
        // Items nested deep enough to pass the limit only where they stand.
        let deep_item = format!("{}1{}", "[".repeat(60), "]".repeat(60));
        let deep_items = vec![deep_item; 64].join(",");
        for outer in [30, 45] {
            let text = format!("{}[{deep_items}]{}", "[".repeat(outer), "]".repeat(outer));
            let taken = index_both(&text);
            assert_eq!(Doc::parse(text).is_ok(), outer < 40, "{outer}");
            assert_eq!(taken, usize::from(outer < 40), "{outer}");
        }
    }

    /// Every provider method against every recording, indexed by the one-pass indexer
    /// and from `serde_json`'s `Value` (how documents the indexer hands back are
    /// indexed): the same entries, errors and raw keys; the compact XML writer agrees
    /// with the `Value` one.
    #[test]
    fn documents_map_alike_however_indexed() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut recordings = Vec::new();
        json_files(&root.join("tests/recordings"), &mut recordings);
        json_files(&root.join("tests/fixtures"), &mut recordings);
        let mut providers = Vec::new();
        for entry in std::fs::read_dir(root.join("providers")).unwrap().flatten() {
            let provider = crate::provider::load(&entry.path(), &Default::default())
                .unwrap_or_else(|d| panic!("{d}"));
            providers.push(provider);
        }
        let texts: Vec<String> = recordings
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .filter(|t| Doc::parse(t.clone()).is_ok())
            .collect();
        let mut compared_entries = 0;
        for provider in &providers {
            for method in provider.methods.values() {
                for i in 0..texts.len() {
                    // One answer, and two answers (pages) in a row.
                    for pages in [vec![i], vec![i, (i + 1) % texts.len()]] {
                        for (layout, ctx) in [
                            (
                                Layout::Mapped,
                                MapContext::new(UnitSystem::Metric, chrono_tz::Tz::UTC),
                            ),
                            (
                                Layout::Both,
                                MapContext::new(UnitSystem::Us, chrono_tz::Tz::Asia__Tokyo),
                            ),
                        ] {
                            let values = pages
                                .iter()
                                .map(|&p| Doc::of_value(&serde_json::from_str(&texts[p]).unwrap()))
                                .collect();
                            let docs = pages
                                .iter()
                                .map(|&p| Doc::parse(texts[p].clone()).unwrap())
                                .collect();
                            let by_value = map_method(method, values, layout, ctx);
                            let by_doc = map_method(method, docs, layout, ctx);
                            let label = format!("{} {} {i} {layout:?}", provider.name, method.name);
                            match (by_value, by_doc) {
                                (Ok(a), Ok(b)) => {
                                    let mut ta = Sensors::default();
                                    ta.merge(a.mapped);
                                    let mut tb = Sensors::default();
                                    tb.merge(b.mapped);
                                    assert_eq!(ta.to_value(), tb.to_value(), "{label}");
                                    assert_eq!(a.raw, b.raw, "{label}");
                                    compared_entries += ta
                                        .outputs
                                        .values()
                                        .map(|n| match n {
                                            Node::List(s) => s.iter().map(Segment::len).sum(),
                                            Node::Value(_) => 1,
                                        })
                                        .sum::<usize>();
                                    tb.add_raw(b.raw);
                                    let value = tb.to_value();
                                    let mut xml = Vec::new();
                                    crate::igor::xml::write_sensors_xml(&mut xml, "jack", &tb)
                                        .unwrap();
                                    assert_eq!(
                                        String::from_utf8(xml).unwrap(),
                                        crate::igor::xml::to_igor_xml("jack", &value),
                                        "{label}"
                                    );
                                }
                                (a, b) => assert_eq!(a.err(), b.err(), "{label}"),
                            }
                        }
                    }
                }
            }
        }
        assert!(compared_entries > 100, "{compared_entries}");
    }
}
