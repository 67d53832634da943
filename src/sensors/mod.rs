//! The compact sensor tree: what a fetch produces and everything downstream consumes.
//!
//! `transform` builds a [`Sensors`] tree from answer documents; `schema` checks it,
//! `xml` writes it, and the stores write its one `Value` form ([`Sensors::to_value`]).
//! Long lists of entries are kept as [`Table`]s (a cell per field and row, strings in
//! one buffer), so a day of one-second heart rate costs a few allocations, not a dozen
//! per point. The module depends on nothing but `serde_json` and `indexmap`.

pub mod schema;

use std::cmp::Ordering;

use indexmap::IndexMap;
use serde_json::{Map, Number, Value};
/// The merged result of a fetch: output name -> value, in order, long lists compact.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sensors {
    /// The outputs (and raw keys), in order.
    pub outputs: IndexMap<String, Node>,
}

/// One output of a [`Sensors`] tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A single entry, a raw key, anything that is not a list of entries.
    Value(Value),
    /// A list of entries, in order, possibly from several methods.
    List(Vec<Segment>),
}

/// A run of entries of a list (the entries one output of one method mapped).
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    /// Entries as table rows.
    Table(Table),
}

impl Sensors {
    /// Adds one method's outputs like the old plugin's `dict.update`: a later output
    /// replaces an earlier one of the same name (keeping its place), except that two
    /// lists are joined (two `time_series` resources, or several methods adding entries
    /// of one kind).
    pub fn merge(&mut self, mapped: IndexMap<String, Node>) {
        for (key, node) in mapped {
            match (self.outputs.get_mut(&key), node) {
                (Some(Node::List(existing)), Node::List(more)) => existing.extend(more),
                (_, node) => {
                    self.outputs.insert(key, node);
                }
            }
        }
    }

    /// Adds raw keys after the outputs; an output wins over a raw key of the same name.
    pub fn add_raw(&mut self, raw: Map<String, Value>) {
        for (key, value) in raw {
            self.outputs.entry(key).or_insert(Node::Value(value));
        }
    }

    /// Whether any list is held as a table.
    pub fn has_tables(&self) -> bool {
        self.outputs.values().any(|n| {
            matches!(n, Node::List(segments) if segments.iter().any(|s| matches!(s, Segment::Table(_))))
        })
    }

    /// The tree as `Value`s, consuming it.
    pub fn into_map(self) -> Map<String, Value> {
        self.outputs
            .into_iter()
            .map(|(key, node)| (key, node.into_value()))
            .collect()
    }

    /// The tree as a `Value` object (a copy).
    pub fn to_value(&self) -> Value {
        Value::Object(
            self.outputs
                .iter()
                .map(|(key, node)| (key.clone(), node.to_value()))
                .collect(),
        )
    }
}

impl Node {
    /// The node as a `Value`, consuming it.
    pub fn into_value(self) -> Value {
        match self {
            Node::Value(v) => v,
            Node::List(segments) => {
                let mut entries = Vec::with_capacity(segments.iter().map(Segment::len).sum());
                for segment in segments {
                    match segment {
                        Segment::Table(table) => {
                            entries.extend((0..table.len()).map(|r| table.row_value(r)));
                        }
                    }
                }
                Value::Array(entries)
            }
        }
    }

    /// The node as a `Value` (a copy).
    pub fn to_value(&self) -> Value {
        self.clone().into_value()
    }
}

impl Segment {
    /// Entries in the segment.
    pub fn len(&self) -> usize {
        match self {
            Segment::Table(t) => t.len(),
        }
    }

    /// Whether the segment holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Entries of one output as rows: a cell per field (in field order) and row, the text
/// of every string cell in one buffer. Row `r` is the object of its present cells.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    columns: Vec<String>,
    pub(crate) cells: Vec<Cell>,
    pub(crate) rows: usize,
    text: String,
}

/// One field of one entry, 16 bytes: strings and numbers are held as byte ranges of
/// the table's text (a table whose text outgrows 4 GiB holds further ones as
/// [`Cell::Other`] values, written and checked alike).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// The field is absent from the entry.
    Absent,
    /// A string: the byte range in the table's text.
    Str(u32, u32),
    /// A number, as the text of its `Number` (which keeps its text, see
    /// `arbitrary_precision` in docs/ARCHITECTURE.md): the byte range in the table's
    /// text.
    Num(u32, u32),
    /// A negative integer token of a document that fits 64 bits, held without a
    /// `Number`.
    Int(i64),
    /// A non-negative integer token of a document that fits 64 bits.
    UInt(u64),
    /// A boolean.
    Bool(bool),
    /// Anything else (objects, lists).
    Other(Box<Value>),
}

/// Tables of at least this many rows are mapped, checked and written as XML in two
/// halves on two threads: a day of one-second data takes about half the time, and a
/// short table is not worth a thread.
pub const PARALLEL_ROWS: usize = 16_384;

// Three cells a point of a day of one-second data: their size is most of a table's.
const _: () = assert!(std::mem::size_of::<Cell>() == 16);

impl Table {
    pub(crate) fn new(columns: Vec<String>) -> Self {
        Table {
            columns,
            ..Table::default()
        }
    }

    /// The field names, in order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether the table has no row.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The cells of row `r`, one per column.
    pub fn row(&self, r: usize) -> &[Cell] {
        let width = self.columns.len();
        &self.cells[r * width..(r + 1) * width]
    }

    /// The text of a string or number cell.
    #[inline]
    pub fn text(&self, start: u32, end: u32) -> &str {
        &self.text[start as usize..end as usize]
    }

    /// The number of a number cell.
    fn number(&self, start: u32, end: u32) -> Number {
        // The text of a `Number`, which reads back as the same `Number`.
        self.text(start, end).parse().unwrap_or_else(|_| 0.into())
    }

    /// A cell as a `Value` (`None` when absent).
    pub fn cell_value(&self, cell: &Cell) -> Option<Value> {
        match cell {
            Cell::Absent => None,
            Cell::Str(a, b) => Some(Value::String(self.text(*a, *b).to_owned())),
            Cell::Num(a, b) => Some(Value::Number(self.number(*a, *b))),
            Cell::Int(i) => Some(Value::Number((*i).into())),
            Cell::UInt(u) => Some(Value::Number((*u).into())),
            Cell::Bool(b) => Some(Value::Bool(*b)),
            Cell::Other(v) => Some((**v).clone()),
        }
    }

    /// Row `r` as the entry object `Value` mapping builds.
    pub fn row_value(&self, r: usize) -> Value {
        Value::Object(
            self.columns
                .iter()
                .zip(self.row(r))
                .filter_map(|(name, cell)| Some((name.clone(), self.cell_value(cell)?)))
                .collect(),
        )
    }

    /// Bytes of text the string cells hold so far.
    pub(crate) fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Room for `more` bytes of text.
    pub(crate) fn reserve_text(&mut self, more: usize) {
        self.text.reserve(more);
    }

    /// A string cell of `text`.
    #[inline]
    pub(crate) fn push_text(&mut self, text: &str) -> Cell {
        match append(&mut self.text, text) {
            Some((a, b)) => Cell::Str(a, b),
            None => Cell::Other(Box::new(Value::String(text.to_owned()))),
        }
    }

    /// A number cell of `number`.
    pub(crate) fn push_number(&mut self, number: &Number) -> Cell {
        number_cell(&mut self.text, number)
    }

    pub(crate) fn cell_of(&mut self, value: Value) -> Cell {
        match value {
            Value::String(s) => self.push_text(&s),
            Value::Number(n) => self.push_number(&n),
            Value::Bool(b) => Cell::Bool(b),
            // A mapped value is never `null`; kept present like any other value.
            other => Cell::Other(Box::new(other)),
        }
    }

    fn compare_cells(&self, a: &Cell, b: &Cell) -> Ordering {
        let number = |cell: &Cell| match cell {
            Cell::Num(x, y) => self.number(*x, *y).as_f64(),
            Cell::Int(i) => Some(*i as f64),
            Cell::UInt(u) => Some(*u as f64),
            _ => None,
        };
        let numeric = |cell: &Cell| matches!(cell, Cell::Num(..) | Cell::Int(_) | Cell::UInt(_));
        match (a, b) {
            _ if numeric(a) && numeric(b) => {
                number(a).partial_cmp(&number(b)).unwrap_or(Ordering::Equal)
            }
            (Cell::Str(a0, a1), Cell::Str(b0, b1)) => self.text(*a0, *a1).cmp(self.text(*b0, *b1)),
            (Cell::Absent, Cell::Absent) => Ordering::Equal,
            (Cell::Absent, _) => Ordering::Less,
            (_, Cell::Absent) => Ordering::Greater,
            _ => Ordering::Equal,
        }
    }

    /// Merges rows that agree on the `keys` columns into the first of them: numeric
    /// cells are summed (whole numbers stay whole), the others keep the first value
    /// present. Rows keep the order of their first occurrence.
    pub(crate) fn sum_by_columns(&mut self, keys: &[usize]) {
        let width = self.columns.len();
        let mut groups: Vec<usize> = Vec::new();
        let mut cells: Vec<Cell> = Vec::with_capacity(self.cells.len());
        for r in 0..self.rows {
            let row = &self.cells[r * width..(r + 1) * width];
            let same = |g: usize| {
                let first = &cells[g * width..(g + 1) * width];
                keys.iter().all(|&k| {
                    std::mem::discriminant(&first[k]) == std::mem::discriminant(&row[k])
                        && self.compare_cells(&first[k], &row[k]).is_eq()
                })
            };
            match (0..groups.len()).find(|&g| same(g)) {
                None => {
                    groups.push(r);
                    cells.extend_from_slice(row);
                }
                Some(g) => {
                    for (c, cell) in row.iter().enumerate() {
                        if keys.contains(&c) {
                            continue;
                        }
                        let mine = &cells[g * width + c];
                        let sum = match (mine, cell) {
                            (Cell::Absent, other) => other.clone(),
                            (mine, other) => add_cells(&mut self.text, mine, other)
                                .unwrap_or_else(|| mine.clone()),
                        };
                        cells[g * width + c] = sum;
                    }
                }
            }
        }
        self.rows = groups.len();
        self.cells = cells;
    }

    /// Stable sort of the rows by column `col`, as `compare` orders entries.
    pub(crate) fn sort_by_columns(&mut self, cols: &[usize]) {
        let width = self.columns.len();
        let mut order: Vec<usize> = (0..self.rows).collect();
        order.sort_by(|&a, &b| {
            cols.iter()
                .map(|&col| self.compare_cells(&self.row(a)[col], &self.row(b)[col]))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let mut cells = Vec::with_capacity(self.cells.len());
        for r in order {
            cells.extend_from_slice(&self.cells[r * width..(r + 1) * width]);
        }
        self.cells = cells;
    }
}

/// The sum of two numeric cells of a table whose text is `text`; `None` when either
/// is not a number.
fn add_cells(text: &mut String, a: &Cell, b: &Cell) -> Option<Cell> {
    let slice = |x: u32, y: u32| &text[x as usize..y as usize];
    let whole = |c: &Cell| match c {
        Cell::Int(i) => Some(i128::from(*i)),
        Cell::UInt(u) => Some(i128::from(*u)),
        Cell::Num(x, y) if integer_magnitude(slice(*x, *y)).is_some() => slice(*x, *y).parse().ok(),
        _ => None,
    };
    let real = |c: &Cell| match c {
        Cell::Int(i) => Some(*i as f64),
        Cell::UInt(u) => Some(*u as f64),
        Cell::Num(x, y) => slice(*x, *y).parse::<Number>().ok()?.as_f64(),
        _ => None,
    };
    let sum = match (whole(a), whole(b)) {
        (Some(x), Some(y)) => {
            let sum = x.checked_add(y)?;
            match (i64::try_from(sum), u64::try_from(sum)) {
                (_, Ok(u)) => return Some(Cell::UInt(u)),
                (Ok(i), _) => return Some(Cell::Int(i)),
                _ => sum.to_string().parse().ok()?,
            }
        }
        _ => Number::from_f64(clean(real(a)? + real(b)?))?,
    };
    Some(number_cell(text, &sum))
}

/// A number cell of `number`, its text appended to a table's `text`.
fn number_cell(text: &mut String, number: &Number) -> Cell {
    match append(text, number.as_str()) {
        Some((a, b)) => Cell::Num(a, b),
        None => Cell::Other(Box::new(Value::Number(number.clone()))),
    }
}

/// Appends `more` to a table's `text`: its range, `None` past 4 GiB (nothing appended).
#[inline]
fn append(text: &mut String, more: &str) -> Option<(u32, u32)> {
    let start = u32::try_from(text.len()).ok()?;
    let end = u32::try_from(text.len() + more.len()).ok()?;
    text.push_str(more);
    Some((start, end))
}

/// Removes binary noise from arithmetic (`81.35000000000001` -> `81.35`).
pub fn clean(x: f64) -> f64 {
    format!("{x:.12e}").parse().unwrap_or(x)
}

/// The digits of an integer literal (an optional `-`, then decimal digits), without
/// the sign: how a `Number` that is an integer of any size reads.
pub fn integer_magnitude(text: &str) -> Option<&str> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}
