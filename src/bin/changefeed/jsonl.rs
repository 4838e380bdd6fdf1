//! `file:PATH` and `-` (stdin): a change log in JSON lines, one event per line.
//!
//! ```text
//! {"op":"insert","schema":"shop","table":"orders","commit_ts":463...,"columns":[{"name":"id","value":1,"key":true},{"name":"total","value":"9.90","type":"decimal"}]}
//! {"op":"update","schema":"shop","table":"orders","commit_ts":463...,"old":[...],"columns":[...]}
//! {"op":"delete","schema":"shop","table":"orders","commit_ts":463...,"old":[...]}
//! {"op":"ddl","schema":"shop","table":"orders","commit_ts":463...,"query":"ALTER TABLE orders ADD COLUMN note TEXT"}
//! {"op":"resolved","commit_ts":463...}                               every table seen so far
//! {"op":"resolved","schema":"shop","table":"orders","commit_ts":463...}   one table
//! ```
//!
//! A column is `{"name": …, "value": …, "key": bool (default false), "type": … (optional)}`.
//! Without `type` the JSON value decides: `null` → NULL, `true`/`false` → bool, an integer
//! → int (uint above `i64::MAX`), another number → float, a string → text, an array or
//! object → json (its compact text). `type` reaches every value kind: `null`, `bool`,
//! `int`, `uint`, `float`, `decimal`, `text`, `bytes` (standard base64), `json` (a string
//! is the document's text, anything else is the document); `null` is NULL whatever the
//! type. Unknown fields are errors, so are fields that do not belong to the `op`.
//!
//! The reader (the thread the feed runs on) reads and checks one line at a time and sends
//! it to its table's dispatcher (created the first time the table appears) before reading
//! the next: each table's events keep their order, and a bad line stops the run with
//! everything before it sent (and then flushed) and nothing after it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;
use changefeed::{
    Column, DdlChange, Dispatcher, DispatcherManager, Error, Event, Result, RowChange, TableName,
    Value,
};
use serde::Deserialize;

use crate::source::Source;

/// Longest line read (a longer one is an error, not a memory spike).
pub const MAX_LINE_BYTES: usize = 64 << 20;
/// Read buffer of the input.
const READ_BUFFER: usize = 1 << 20;

/// Where the lines come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    File(PathBuf),
    Stdin,
}

impl Input {
    pub fn name(&self) -> String {
        match self {
            Input::File(p) => p.display().to_string(),
            Input::Stdin => "standard input".to_string(),
        }
    }
}

/// The `file:` / `-` source.
pub struct JsonLinesSource {
    input: Input,
    /// Standard input can be read once.
    stdin_taken: bool,
}

impl JsonLinesSource {
    pub fn new(input: Input) -> JsonLinesSource {
        JsonLinesSource {
            input,
            stdin_taken: false,
        }
    }

    fn open(&mut self) -> Result<Box<dyn BufRead>> {
        match &self.input {
            Input::File(path) => {
                let file = File::open(path)
                    .map_err(|e| Error::io(format!("opening source {}", path.display()), e))?;
                Ok(Box::new(BufReader::with_capacity(READ_BUFFER, file)))
            }
            Input::Stdin => {
                if std::mem::replace(&mut self.stdin_taken, true) {
                    return Err(invalid("standard input cannot be read twice"));
                }
                Ok(Box::new(BufReader::with_capacity(READ_BUFFER, io::stdin())))
            }
        }
    }
}

/// The error a bad line (or a bad source) ends the run with: `CDC:ErrInvalidConfig`,
/// "invalid source: …" — an input to fix, not worth a restart.
pub fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidConfig {
        param: "source",
        reason: reason.into(),
    }
}

impl Source for JsonLinesSource {
    fn feed(&mut self, manager: &DispatcherManager, from_ts: u64, stop: &AtomicBool) -> Result<()> {
        let name = self.input.name();
        let mut reader = self.open()?;
        let mut dispatchers: HashMap<TableName, Dispatcher> = HashMap::new();
        let mut line = String::new();
        let mut number = 0u64;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            line.clear();
            number += 1;
            let read = (&mut reader)
                .take(MAX_LINE_BYTES as u64 + 1)
                .read_line(&mut line);
            match read {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    return Err(invalid(format!("line {number}: not valid UTF-8")))
                }
                Err(e) => return Err(Error::io(format!("reading {name} at line {number}"), e)),
            }
            if line.len() > MAX_LINE_BYTES {
                return Err(invalid(format!(
                    "line {number}: longer than {MAX_LINE_BYTES} bytes"
                )));
            }
            let text = line.trim();
            if text.is_empty() {
                continue;
            }
            let parsed = parse_line(text).map_err(|e| invalid(format!("line {number}: {e}")))?;
            if parsed.commit_ts() <= from_ts {
                // Acknowledged by an earlier attempt (or below --start-ts).
                continue;
            }
            match parsed {
                Parsed::Event(event) => {
                    let table = event.table().expect("rows and DDL name a table").clone();
                    let dispatcher = match dispatchers.get(&table) {
                        Some(d) => d,
                        None => {
                            let d = manager.add_dispatcher(table.clone())?;
                            dispatchers.entry(table).or_insert(d)
                        }
                    };
                    send(dispatcher, event, number)?;
                }
                Parsed::Resolved {
                    table: Some(table),
                    ts,
                } => {
                    let dispatcher = match dispatchers.get(&table) {
                        Some(d) => d,
                        None => {
                            let d = manager.add_dispatcher(table.clone())?;
                            dispatchers.entry(table).or_insert(d)
                        }
                    };
                    send(dispatcher, Event::Resolved(ts), number)?;
                }
                Parsed::Resolved { table: None, ts } => {
                    for dispatcher in dispatchers.values() {
                        send(dispatcher, Event::Resolved(ts), number)?;
                    }
                }
            }
        }
    }
}

/// Sends one event; a refusal that is the line's fault (its commit ts goes backwards,
/// it is larger than the memory quota) names the line.
fn send(dispatcher: &Dispatcher, event: Event, line: u64) -> Result<()> {
    dispatcher.send(event).map_err(|e| match e.cause {
        cause @ (Error::EventOutOfOrder { .. } | Error::EventTooLarge { .. }) => {
            invalid(format!("line {line}: {cause}"))
        }
        cause => cause,
    })
}

/// One line, checked.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    /// A row or DDL event.
    Event(Event),
    /// A watermark for one table, or for every table seen so far.
    Resolved { table: Option<TableName>, ts: u64 },
}

impl Parsed {
    pub fn commit_ts(&self) -> u64 {
        match self {
            Parsed::Event(e) => e.commit_ts(),
            Parsed::Resolved { ts, .. } => *ts,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    op: Op,
    schema: Option<String>,
    table: Option<String>,
    commit_ts: u64,
    columns: Option<Vec<ColumnIn>>,
    old: Option<Vec<ColumnIn>>,
    query: Option<String>,
}

#[derive(Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Op {
    Insert,
    Update,
    Delete,
    Ddl,
    Resolved,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnIn {
    name: String,
    #[serde(default)]
    value: serde_json::Value,
    #[serde(default)]
    key: bool,
    #[serde(rename = "type")]
    kind: Option<Kind>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Null,
    Bool,
    Int,
    Uint,
    Float,
    Decimal,
    Text,
    Bytes,
    Json,
}

/// Parses and checks one (non-blank) line. The error says what is wrong, without the
/// line number.
pub fn parse_line(text: &str) -> std::result::Result<Parsed, String> {
    let line: Line = serde_json::from_str(text).map_err(|e| json_error(&e))?;
    if line.commit_ts == 0 {
        return Err("commit_ts must be greater than 0".to_string());
    }
    let op = line.op;
    let forbid = |present: bool, field: &str| {
        if present {
            Err(format!(
                "\"{field}\" does not belong to op {:?}",
                op_name(op)
            ))
        } else {
            Ok(())
        }
    };
    let table = match (&line.schema, &line.table) {
        (Some(s), Some(t)) if !s.is_empty() && !t.is_empty() => Some(TableName::new(s, t)),
        (Some(_), Some(_)) => return Err("\"schema\" and \"table\" must not be empty".into()),
        (None, None) if op == Op::Resolved => None,
        (None, _) => return Err("missing field \"schema\"".into()),
        (_, None) => return Err("missing field \"table\"".into()),
    };
    let ts = line.commit_ts;
    let columns = |field: &str, cols: Option<Vec<ColumnIn>>| {
        let cols = cols
            .ok_or_else(|| format!("op {:?} needs \"{field}\" (a list of columns)", op_name(op)))?;
        cols.into_iter()
            .map(column)
            .collect::<std::result::Result<Vec<_>, _>>()
    };
    let table_of = |t: Option<TableName>| t.expect("checked above");
    Ok(match op {
        Op::Insert => {
            forbid(line.old.is_some(), "old")?;
            forbid(line.query.is_some(), "query")?;
            let new = columns("columns", line.columns)?;
            Parsed::Event(RowChange::insert(table_of(table), ts, new).into())
        }
        Op::Update => {
            forbid(line.query.is_some(), "query")?;
            let old = columns("old", line.old)?;
            let new = columns("columns", line.columns)?;
            Parsed::Event(RowChange::update(table_of(table), ts, old, new).into())
        }
        Op::Delete => {
            forbid(line.columns.is_some(), "columns")?;
            forbid(line.query.is_some(), "query")?;
            let old = columns("old", line.old)?;
            Parsed::Event(RowChange::delete(table_of(table), ts, old).into())
        }
        Op::Ddl => {
            forbid(line.columns.is_some(), "columns")?;
            forbid(line.old.is_some(), "old")?;
            let query = line
                .query
                .filter(|q| !q.trim().is_empty())
                .ok_or("op \"ddl\" needs a non-empty \"query\"")?;
            Parsed::Event(DdlChange::new(table_of(table), ts, query).into())
        }
        Op::Resolved => {
            forbid(line.columns.is_some(), "columns")?;
            forbid(line.old.is_some(), "old")?;
            forbid(line.query.is_some(), "query")?;
            Parsed::Resolved { table, ts }
        }
    })
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Insert => "insert",
        Op::Update => "update",
        Op::Delete => "delete",
        Op::Ddl => "ddl",
        Op::Resolved => "resolved",
    }
}

/// serde_json's message with the position as a column (the line is one line).
fn json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text);
    if e.column() > 0 {
        format!("{message} (column {})", e.column())
    } else {
        message.to_string()
    }
}

fn column(c: ColumnIn) -> std::result::Result<Column, String> {
    let value = value(c.value, c.kind).map_err(|e| format!("column {:?}: {e}", c.name))?;
    if c.name.is_empty() {
        return Err("a column name must not be empty".into());
    }
    Ok(Column {
        name: c.name,
        value,
        is_key: c.key,
    })
}

/// Maps a JSON value, and the optional declared type, to a [`Value`].
fn value(v: serde_json::Value, kind: Option<Kind>) -> std::result::Result<Value, String> {
    use serde_json::Value as J;
    let wrong = |kind: Kind, want: &str, got: &J| {
        let kind = format!("{kind:?}").to_lowercase();
        Err(format!("type {kind} wants {want}, got {got}"))
    };
    if v.is_null() {
        return Ok(Value::Null);
    }
    let Some(kind) = kind else {
        return Ok(match v {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(b),
            J::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Value::UInt(u)
                } else {
                    Value::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            J::String(s) => Value::Text(s),
            other => Value::Json(other.to_string()),
        });
    };
    match (kind, &v) {
        (Kind::Null, _) => wrong(kind, "null", &v),
        (Kind::Bool, J::Bool(b)) => Ok(Value::Bool(*b)),
        (Kind::Bool, _) => wrong(kind, "true or false", &v),
        (Kind::Int, J::Number(n)) if n.as_i64().is_some() => Ok(Value::Int(n.as_i64().unwrap())),
        (Kind::Int, J::String(s)) if s.parse::<i64>().is_ok() => Ok(Value::Int(s.parse().unwrap())),
        (Kind::Int, _) => wrong(kind, "an integer in the i64 range", &v),
        (Kind::Uint, J::Number(n)) if n.as_u64().is_some() => Ok(Value::UInt(n.as_u64().unwrap())),
        (Kind::Uint, J::String(s)) if s.parse::<u64>().is_ok() => {
            Ok(Value::UInt(s.parse().unwrap()))
        }
        (Kind::Uint, _) => wrong(kind, "an integer in the u64 range", &v),
        (Kind::Float, J::Number(n)) => Ok(Value::Float(n.as_f64().unwrap_or(f64::NAN))),
        (Kind::Float, J::String(s)) => match s.as_str() {
            "NaN" => Ok(Value::Float(f64::NAN)),
            "Infinity" | "inf" => Ok(Value::Float(f64::INFINITY)),
            "-Infinity" | "-inf" => Ok(Value::Float(f64::NEG_INFINITY)),
            _ => s
                .parse()
                .map(Value::Float)
                .or_else(|_| wrong(kind, "a number, \"NaN\", \"Infinity\" or \"-Infinity\"", &v)),
        },
        (Kind::Float, _) => wrong(kind, "a number", &v),
        (Kind::Decimal, J::String(s)) if is_decimal(s) => Ok(Value::Decimal(s.clone())),
        (Kind::Decimal, J::Number(n)) => Ok(Value::Decimal(n.to_string())),
        (Kind::Decimal, _) => wrong(kind, "a decimal string such as \"-12.50\"", &v),
        (Kind::Text, J::String(s)) => Ok(Value::Text(s.clone())),
        (Kind::Text, _) => wrong(kind, "a string", &v),
        (Kind::Bytes, J::String(s)) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(Value::Bytes)
            .map_err(|e| format!("type bytes wants standard base64: {e}")),
        (Kind::Bytes, _) => wrong(kind, "a base64 string", &v),
        (Kind::Json, J::String(s)) => match serde_json::from_str::<J>(s) {
            Ok(_) => Ok(Value::Json(s.clone())),
            Err(e) => Err(format!("type json: the string is not a JSON document: {e}")),
        },
        (Kind::Json, other) => Ok(Value::Json(other.to_string())),
    }
}

/// `-?digits[.digits]` (also `.5`, `5.`), optionally with an exponent.
fn is_decimal(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (s, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    !(int.is_empty() && frac.is_empty()) && digits(int) && digits(frac) && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use changefeed::RowKind;

    fn row(text: &str) -> RowChange {
        match parse_line(text).unwrap() {
            Parsed::Event(Event::Row(r)) => r,
            other => panic!("not a row: {other:?}"),
        }
    }

    fn values(cols: &str) -> Vec<Value> {
        let line =
            format!(r#"{{"op":"insert","schema":"s","table":"t","commit_ts":5,"columns":{cols}}}"#);
        row(&line).new.into_iter().map(|c| c.value).collect()
    }

    #[test]
    fn every_op() {
        let r = row(
            r#"{"op":"insert","schema":"shop","table":"orders","commit_ts":7,"columns":[{"name":"id","value":1,"key":true},{"name":"n","value":"x"}]}"#,
        );
        assert_eq!(r.kind, RowKind::Insert);
        assert_eq!(r.table, TableName::new("shop", "orders"));
        assert_eq!(r.commit_ts, 7);
        assert!(r.new[0].is_key && !r.new[1].is_key);
        let r = row(
            r#"{"op":"update","schema":"s","table":"t","commit_ts":8,"old":[{"name":"id","value":1,"key":true}],"columns":[{"name":"id","value":2,"key":true}]}"#,
        );
        assert_eq!((r.kind, r.old.len(), r.new.len()), (RowKind::Update, 1, 1));
        let r = row(
            r#"{"op":"delete","schema":"s","table":"t","commit_ts":9,"old":[{"name":"id","value":1,"key":true}]}"#,
        );
        assert_eq!((r.kind, r.old.len(), r.new.len()), (RowKind::Delete, 1, 0));
        assert_eq!(
            parse_line(r#"{"op":"ddl","schema":"s","table":"t","commit_ts":10,"query":"ALTER TABLE t ADD c INT"}"#)
                .unwrap(),
            Parsed::Event(DdlChange::new(TableName::new("s", "t"), 10, "ALTER TABLE t ADD c INT").into())
        );
        assert_eq!(
            parse_line(r#"{"op":"resolved","commit_ts":11}"#).unwrap(),
            Parsed::Resolved {
                table: None,
                ts: 11
            }
        );
        assert_eq!(
            parse_line(r#"{"op":"resolved","schema":"s","table":"t","commit_ts":12}"#).unwrap(),
            Parsed::Resolved {
                table: Some(TableName::new("s", "t")),
                ts: 12
            }
        );
    }

    #[test]
    fn untyped_values_follow_the_json() {
        assert_eq!(
            values(
                r#"[{"name":"a","value":null},{"name":"b","value":true},{"name":"c","value":-3},
                    {"name":"d","value":18446744073709551615},{"name":"e","value":1.5},
                    {"name":"f","value":"hi"},{"name":"g","value":{"k":[1]}},{"name":"h"}]"#
            ),
            vec![
                Value::Null,
                Value::Bool(true),
                Value::Int(-3),
                Value::UInt(u64::MAX),
                Value::Float(1.5),
                Value::Text("hi".into()),
                Value::Json(r#"{"k":[1]}"#.into()),
                Value::Null,
            ]
        );
    }

    #[test]
    fn types_reach_every_value() {
        assert_eq!(
            values(
                r#"[{"name":"a","value":null,"type":"decimal"},{"name":"b","value":false,"type":"bool"},
                    {"name":"c","value":"-9","type":"int"},{"name":"d","value":"18446744073709551615","type":"uint"},
                    {"name":"e","value":2,"type":"float"},{"name":"f","value":"NaN","type":"float"},
                    {"name":"g","value":"12.50","type":"decimal"},{"name":"h","value":"7","type":"text"},
                    {"name":"i","value":"AP8B","type":"bytes"},{"name":"j","value":"[1, 2]","type":"json"},
                    {"name":"k","value":{"a":1},"type":"json"},{"name":"l","value":3,"type":"uint"}]"#
            )
            .into_iter()
            .map(|v| format!("{v:?}"))
            .collect::<Vec<_>>(),
            [
                "Null",
                "Bool(false)",
                "Int(-9)",
                "UInt(18446744073709551615)",
                "Float(2.0)",
                "Float(NaN)",
                "Decimal(\"12.50\")",
                "Text(\"7\")",
                "Bytes([0, 255, 1])",
                "Json(\"[1, 2]\")",
                "Json(\"{\\\"a\\\":1}\")",
                "UInt(3)",
            ]
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let err = |s: &str| parse_line(s).unwrap_err();
        let ins = |cols: &str| {
            err(&format!(
                r#"{{"op":"insert","schema":"s","table":"t","commit_ts":5,"columns":{cols}}}"#
            ))
        };
        assert!(
            err("{\"op\":\"insert\"").contains("EOF"),
            "{}",
            err("{\"op\":")
        );
        assert!(
            err("@@").contains("expected value (column 1)"),
            "{}",
            err("@@")
        );
        assert!(
            err(r#"{"op":"upsert","schema":"s","table":"t","commit_ts":1}"#)
                .contains("unknown variant `upsert`")
        );
        assert!(
            err(r#"{"op":"insert","schema":"s","table":"t","columns":[]}"#)
                .contains("missing field `commit_ts`")
        );
        assert!(
            err(r#"{"op":"insert","schema":"s","table":"t","commit_ts":1,"colums":[]}"#)
                .contains("unknown field `colums`")
        );
        assert!(
            err(r#"{"op":"insert","table":"t","commit_ts":1,"columns":[]}"#).contains("\"schema\"")
        );
        assert!(
            err(r#"{"op":"insert","schema":"s","table":"t","commit_ts":0,"columns":[]}"#)
                .contains("greater than 0")
        );
        assert!(
            err(r#"{"op":"update","schema":"s","table":"t","commit_ts":1,"columns":[]}"#)
                .contains("needs \"old\"")
        );
        assert!(err(
            r#"{"op":"delete","schema":"s","table":"t","commit_ts":1,"columns":[],"old":[]}"#
        )
        .contains("\"columns\" does not belong"));
        assert!(err(r#"{"op":"ddl","schema":"s","table":"t","commit_ts":1}"#).contains("query"));
        assert!(
            ins(r#"[{"name":"a","value":"x","type":"int"}]"#).contains("column \"a\": type int")
        );
        assert!(ins(r#"[{"name":"a","value":"1,5","type":"decimal"}]"#).contains("decimal"));
        assert!(ins(r#"[{"name":"a","value":"@@","type":"bytes"}]"#).contains("base64"));
        assert!(ins(r#"[{"name":"a","value":"{","type":"json"}]"#).contains("not a JSON document"));
        assert!(ins(r#"[{"name":"a","value":1,"type":"varchar"}]"#).contains("unknown variant"));
    }

    #[test]
    fn decimals() {
        for ok in ["0", "-12.50", "+3", ".5", "5.", "1e10", "1.5E-3"] {
            assert!(is_decimal(ok), "{ok}");
        }
        for bad in ["", "-", ".", "1,5", "1e", "abc", "1.2.3", "0x10"] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }
}
