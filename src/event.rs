//! The data model: what a producer hands to a [`Dispatcher`](crate::Dispatcher).
//!
//! Nothing here knows about threads or sinks. Every row and DDL event carries the
//! commit timestamp of its transaction; per table, commit timestamps never go down.

use std::fmt;
use std::sync::Arc;

use serde::ser::{Serialize, Serializer};

/// A table, named by schema (database) and table name.
///
/// Cheap to clone (one reference count): every event carries one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName(Arc<Names>);

#[derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Names {
    schema: Box<str>,
    table: Box<str>,
}

impl TableName {
    /// A table `schema.table`.
    pub fn new(schema: impl Into<String>, table: impl Into<String>) -> TableName {
        TableName(Arc::new(Names {
            schema: schema.into().into_boxed_str(),
            table: table.into().into_boxed_str(),
        }))
    }

    /// The schema (database) name.
    pub fn schema(&self) -> &str {
        &self.0.schema
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.0.table
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema(), self.table())
    }
}

impl Serialize for TableName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One column value.
///
/// Its JSON form (used by every encoder unless the protocol says otherwise):
///
/// | variant | JSON |
/// |---|---|
/// | `Null` | `null` |
/// | `Bool(b)` | `true` / `false` |
/// | `Int(i)` | a number |
/// | `UInt(u)` | a number, exact even above `i64::MAX` |
/// | `Float(f)` | a number; NaN and ±infinity become `null` (JSON has no such numbers) |
/// | `Decimal(s)` | the string `s`, unchanged, so no precision is lost |
/// | `Text(s)` | the string `s` |
/// | `Bytes(b)` | standard base64 of `b`, with padding |
/// | `Json(s)` | the string `s` (the document's text, not re-parsed) |
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A floating point number.
    Float(f64),
    /// A decimal number in its text form, e.g. `"12.50"`.
    Decimal(String),
    /// Text.
    Text(String),
    /// Binary data.
    Bytes(Vec<u8>),
    /// A JSON document in its text form.
    Json(String),
}

impl Value {
    /// Bytes this value holds, for memory accounting.
    pub fn size(&self) -> usize {
        match self {
            Value::Null | Value::Bool(_) => 1,
            Value::Int(_) | Value::UInt(_) | Value::Float(_) => 8,
            Value::Decimal(s) | Value::Text(s) | Value::Json(s) => s.len(),
            Value::Bytes(b) => b.len(),
        }
    }

    /// The value as text, the way Canal writes column values (`None` for NULL).
    pub fn to_text(&self) -> Option<String> {
        use base64::Engine as _;
        match self {
            Value::Null => None,
            Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::UInt(u) => Some(u.to_string()),
            Value::Float(f) if f.is_finite() => Some(f.to_string()),
            Value::Float(_) => None,
            Value::Decimal(s) | Value::Text(s) | Value::Json(s) => Some(s.clone()),
            Value::Bytes(b) => Some(base64::engine::general_purpose::STANDARD.encode(b)),
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::UInt(u) => serializer.serialize_u64(*u),
            Value::Float(f) if f.is_finite() => serializer.serialize_f64(*f),
            Value::Float(_) => serializer.serialize_unit(),
            Value::Decimal(s) | Value::Text(s) | Value::Json(s) => serializer.serialize_str(s),
            Value::Bytes(b) => {
                serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
            }
        }
    }
}

/// A named column value; key columns identify the row.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Column value.
    pub value: Value,
    /// Whether the column is part of the row's key (primary or unique key).
    pub is_key: bool,
}

impl Column {
    /// An ordinary column.
    pub fn new(name: impl Into<String>, value: Value) -> Column {
        Column {
            name: name.into(),
            value,
            is_key: false,
        }
    }

    /// A key column.
    pub fn key(name: impl Into<String>, value: Value) -> Column {
        Column {
            name: name.into(),
            value,
            is_key: true,
        }
    }

    fn size(&self) -> usize {
        COLUMN_OVERHEAD + self.name.len() + self.value.size()
    }
}

/// What a row change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RowKind {
    /// A new row; only the new image is set.
    Insert,
    /// A changed row; both images are set.
    Update,
    /// A removed row; only the old image is set.
    Delete,
}

/// One row inserted, updated or deleted by a transaction.
#[derive(Clone, Debug, PartialEq)]
pub struct RowChange {
    /// The table the row belongs to.
    pub table: TableName,
    /// The transaction's commit timestamp (a TSO, see [`crate::tso`]).
    pub commit_ts: u64,
    /// Insert, update or delete.
    pub kind: RowKind,
    /// The row before the change (update, delete); empty for an insert.
    pub old: Vec<Column>,
    /// The row after the change (insert, update); empty for a delete.
    pub new: Vec<Column>,
}

impl RowChange {
    /// A row inserted with `columns`.
    pub fn insert(table: TableName, commit_ts: u64, columns: Vec<Column>) -> RowChange {
        RowChange {
            table,
            commit_ts,
            kind: RowKind::Insert,
            old: Vec::new(),
            new: columns,
        }
    }

    /// A row changed from `old_columns` to `new_columns`.
    pub fn update(
        table: TableName,
        commit_ts: u64,
        old_columns: Vec<Column>,
        new_columns: Vec<Column>,
    ) -> RowChange {
        RowChange {
            table,
            commit_ts,
            kind: RowKind::Update,
            old: old_columns,
            new: new_columns,
        }
    }

    /// A row deleted; `old_columns` is its last image.
    pub fn delete(table: TableName, commit_ts: u64, old_columns: Vec<Column>) -> RowChange {
        RowChange {
            table,
            commit_ts,
            kind: RowKind::Delete,
            old: old_columns,
            new: Vec::new(),
        }
    }

    /// The image that identifies the row: the new one, or the old one for a delete.
    pub fn current(&self) -> &[Column] {
        if self.kind == RowKind::Delete {
            &self.old
        } else {
            &self.new
        }
    }

    /// The key columns of the current image.
    pub fn key_columns(&self) -> impl Iterator<Item = &Column> {
        self.current().iter().filter(|c| c.is_key)
    }
}

/// A schema change (DDL) on one table.
#[derive(Clone, Debug, PartialEq)]
pub struct DdlChange {
    /// The table the statement changes.
    pub table: TableName,
    /// The DDL's commit timestamp.
    pub commit_ts: u64,
    /// The statement, e.g. `ALTER TABLE t ADD COLUMN c INT`.
    pub query: String,
}

impl DdlChange {
    /// A DDL statement on `table`.
    pub fn new(table: TableName, commit_ts: u64, query: impl Into<String>) -> DdlChange {
        DdlChange {
            table,
            commit_ts,
            query: query.into(),
        }
    }
}

/// What a producer sends to a dispatcher.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A row change.
    Row(RowChange),
    /// A schema change.
    Ddl(DdlChange),
    /// A watermark: this table will see no more events with a commit ts at or below it.
    Resolved(u64),
}

impl Event {
    /// The table of a row or DDL event; `None` for a watermark.
    pub fn table(&self) -> Option<&TableName> {
        match self {
            Event::Row(r) => Some(&r.table),
            Event::Ddl(d) => Some(&d.table),
            Event::Resolved(_) => None,
        }
    }

    /// The commit ts of a row or DDL event, or the watermark's ts.
    pub fn commit_ts(&self) -> u64 {
        match self {
            Event::Row(r) => r.commit_ts,
            Event::Ddl(d) => d.commit_ts,
            Event::Resolved(ts) => *ts,
        }
    }

    /// Estimated bytes the event holds in memory; what the memory quota charges in
    /// `send` until the event is encoded.
    pub fn estimated_size(&self) -> usize {
        match self {
            Event::Row(r) => {
                EVENT_OVERHEAD
                    + r.table.schema().len()
                    + r.table.table().len()
                    + r.old.iter().chain(&r.new).map(Column::size).sum::<usize>()
            }
            Event::Ddl(d) => {
                EVENT_OVERHEAD + d.table.schema().len() + d.table.table().len() + d.query.len()
            }
            Event::Resolved(_) => EVENT_OVERHEAD,
        }
    }
}

/// Fixed bytes charged per event besides its strings and values (struct and vectors).
const EVENT_OVERHEAD: usize = 96;
/// Fixed bytes charged per column besides its name and value.
const COLUMN_OVERHEAD: usize = 48;

impl From<RowChange> for Event {
    fn from(row: RowChange) -> Event {
        Event::Row(row)
    }
}

impl From<DdlChange> for Event {
    fn from(ddl: DdlChange) -> Event {
        Event::Ddl(ddl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_json_forms() {
        let json = |v: Value| serde_json::to_string(&v).unwrap();
        assert_eq!(json(Value::Null), "null");
        assert_eq!(json(Value::Bool(true)), "true");
        assert_eq!(json(Value::Int(-3)), "-3");
        assert_eq!(json(Value::UInt(u64::MAX)), "18446744073709551615");
        assert_eq!(json(Value::Float(1.5)), "1.5");
        assert_eq!(json(Value::Float(f64::NAN)), "null");
        assert_eq!(json(Value::Float(f64::NEG_INFINITY)), "null");
        assert_eq!(json(Value::Decimal("12.50".into())), "\"12.50\"");
        assert_eq!(json(Value::Bytes(vec![0, 255, 1])), "\"AP8B\"");
        assert_eq!(json(Value::Json("{\"a\":1}".into())), "\"{\\\"a\\\":1}\"");
    }

    #[test]
    fn estimated_size_grows_with_content() {
        let t = TableName::new("db", "t");
        let small = Event::from(RowChange::insert(
            t.clone(),
            1,
            vec![Column::key("id", Value::Int(1))],
        ));
        let big = Event::from(RowChange::insert(
            t,
            1,
            vec![
                Column::key("id", Value::Int(1)),
                Column::new("s", Value::Text("x".repeat(1000))),
            ],
        ));
        assert!(big.estimated_size() >= small.estimated_size() + 1000);
    }
}
