//! The `canal-json` encoder. [`CanalJson`] documents the format; `docs/ENCODINGS.md` has
//! more examples and the consumer side.

use serde::ser::{Serialize, SerializeMap, SerializeStruct, Serializer};

use super::{message, to_json, ColumnObject, EmitClock};
use crate::error::Result;
use crate::event::{Column, DdlChange, Event, RowChange, RowKind, Value};
use crate::message::{Encoder, Message, PartitionChoice};
use crate::tso;

/// The `canal-json` protocol: Canal's flat message, one message per row or DDL event,
/// as TiCDC writes it with its TiDB extension on.
///
/// A row message:
///
/// ```json
/// {"id":0,"database":"shop","table":"orders","pkNames":["id"],"isDdl":false,
///  "type":"UPDATE","es":1764127762123,"ts":1764127763000,"sql":"",
///  "sqlType":{"id":-5,"note":2005},"mysqlType":{"id":"bigint","note":"text"},
///  "data":[{"id":"1","note":"new"}],"old":[{"note":"old"}],
///  "_tidb":{"commitTs":462455508073971717}}
/// ```
///
/// | field | rows | DDL |
/// |---|---|---|
/// | `id` | `0` | `0` |
/// | `database`, `table` | the table's schema and name | the same |
/// | `pkNames` | names of the key columns, or `null` when the row has none | `null` |
/// | `isDdl` | `false` | `true` |
/// | `type` | `INSERT`, `UPDATE` or `DELETE` | from the statement (DDL types below) |
/// | `es` | commit time: the commit ts's physical part, ms | the same |
/// | `ts` | emit time, ms | the same |
/// | `sql` | `""` | the statement |
/// | `sqlType` | column → JDBC type code (table below) | `null` |
/// | `mysqlType` | column → MySQL type name (table below) | `null` |
/// | `data` | `[row]`: the new image, or the old one for a DELETE | `null` |
/// | `old` | UPDATE: `[changed]`, the previous values of the columns whose value changed (an empty object when none did); otherwise `null` | `null` |
/// | `_tidb` | `{"commitTs": <commit ts>}` | the same |
///
/// Column values in `data` and `old` are JSON strings, or `null` for SQL NULL, in the
/// text form of [`Value::to_text`]: booleans `"1"`/`"0"`, numbers in decimal, bytes as
/// standard base64 (TiCDC writes ISO-8859-1 text instead), NaN and infinities `null`.
///
/// `old` lists only changed columns, as Canal does (TiCDC lists every column unless
/// `content-compatible=true`). Consumers such as Flink rebuild the old row by taking the
/// columns missing from `old` from `data`; they read a `null` in `old` as "unchanged"
/// too, so a column that changed from NULL looks unchanged to them: a limit of the
/// format, not of this encoder.
///
/// Types come from the [`Value`] variant, since events carry no column
/// types. A column that is NULL takes the type of its value in the other image of an
/// UPDATE when that one is not NULL:
///
/// | variant | `mysqlType` | `sqlType` (`java.sql.Types`) |
/// |---|---|---|
/// | `Null` | `"null"` | `0` (NULL) |
/// | `Bool` | `"tinyint(1)"` | `-6` (TINYINT) |
/// | `Int` | `"bigint"` | `-5` (BIGINT) |
/// | `UInt` | `"bigint unsigned"` | `-5` (BIGINT) up to `i64::MAX`, else `3` (DECIMAL), as TiCDC does |
/// | `Float` | `"double"` | `8` (DOUBLE) |
/// | `Decimal` | `"decimal"` | `3` (DECIMAL) |
/// | `Text` | `"text"` | `2005` (CLOB) |
/// | `Bytes` | `"blob"` | `2004` (BLOB) |
/// | `Json` | `"json"` | `12` (VARCHAR) |
///
/// `_tidb.commitTs` is TiCDC's extension (written by TiCDC only with
/// `enable-tidb-extension=true`); we always write it: it is the exact commit ts, which
/// consumers need to drop the duplicates of at-least-once delivery (`es` loses the
/// logical part).
///
/// **DDL types.** Canal's classification, from the statement's leading keywords
/// (case-insensitive; comments and quoted names are skipped):
///
/// | statement | `type` |
/// |---|---|
/// | `CREATE [TEMPORARY] TABLE`, `CREATE [OR REPLACE] … VIEW` | `CREATE` |
/// | `CREATE [UNIQUE\|FULLTEXT\|SPATIAL] INDEX` | `CINDEX` |
/// | `DROP TABLE`, `DROP VIEW` | `ERASE` |
/// | `DROP INDEX` | `DINDEX` |
/// | `ALTER TABLE t ADD {INDEX\|KEY\|UNIQUE\|FULLTEXT\|SPATIAL\|PRIMARY KEY}` | `CINDEX` |
/// | `ALTER TABLE t DROP {INDEX\|KEY\|PRIMARY KEY}` | `DINDEX` |
/// | `ALTER TABLE t RENAME [TO\|AS] …` | `RENAME` |
/// | any other `ALTER TABLE` | `ALTER` |
/// | `TRUNCATE [TABLE]` | `TRUNCATE` |
/// | `RENAME TABLE` | `RENAME` |
/// | anything else (`CREATE DATABASE`, `DROP DATABASE`, …) | `QUERY` |
///
/// Only the first clause of a multi-clause `ALTER TABLE` decides. Row consumers skip
/// DDL messages by `isDdl`; Flink's `canal-json` format skips only `type` `CREATE` and
/// fails on the others unless `canal-json.ignore-parse-errors=true` (Canal's own output
/// has the same types).
///
/// **Key.** Empty, so Kafka stores a null key, as TiCDC does for canal-json. Partitioning
/// is the Kafka sink's business (by table, key columns, commit ts …) and needs no
/// message key, and canal-json messages are not meant for log compaction.
///
/// **DDL route.** DDL messages go to partition 0 ([`PartitionChoice::Fixed`]`(0)`), as
/// Canal and TiCDC send them; rows keep the default route.
///
/// `Default` stamps messages with the wall clock; [`CanalJson::with_fixed_clock`] with a
/// fixed time, for tests.
#[derive(Clone, Debug, Default)]
pub struct CanalJson {
    clock: EmitClock,
}

impl CanalJson {
    /// An encoder whose emit time (`ts`) is always `ms` milliseconds since the Unix epoch.
    pub fn with_fixed_clock(ms: u64) -> CanalJson {
        CanalJson {
            clock: EmitClock::Fixed(ms),
        }
    }

    fn encode_row(&self, row: &RowChange) -> Result<Message> {
        let flat = FlatRow {
            row,
            emit_ms: self.clock.now_ms(),
        };
        let value = to_json(&flat, &row.table, row.commit_ts)?;
        Ok(message(Vec::new(), value, row.commit_ts))
    }

    fn encode_ddl(&self, ddl: &DdlChange) -> Result<Message> {
        let flat = FlatDdl {
            ddl,
            emit_ms: self.clock.now_ms(),
        };
        let value = to_json(&flat, &ddl.table, ddl.commit_ts)?;
        let mut msg = message(Vec::new(), value, ddl.commit_ts);
        // Canal and TiCDC send DDL to partition 0 only.
        msg.route.partition = PartitionChoice::Fixed(0);
        Ok(msg)
    }
}

impl Encoder for CanalJson {
    fn encode(&self, event: &Event, out: &mut Vec<Message>) -> Result<()> {
        match event {
            Event::Row(row) => out.push(self.encode_row(row)?),
            Event::Ddl(ddl) => out.push(self.encode_ddl(ddl)?),
            Event::Resolved(_) => {}
        }
        Ok(())
    }
}

/// Canal's `type` of a DDL statement: the "DDL types" table of [`CanalJson`].
pub(crate) fn ddl_type(query: &str) -> &'static str {
    let mut words = Words::new(query);
    let Some(first) = words.next_word() else {
        return "QUERY";
    };
    if first.eq_ignore_ascii_case("CREATE") {
        match words.find_object() {
            Some(Object::Table | Object::View) => "CREATE",
            Some(Object::Index) => "CINDEX",
            _ => "QUERY",
        }
    } else if first.eq_ignore_ascii_case("DROP") {
        match words.find_object() {
            Some(Object::Table | Object::View) => "ERASE",
            Some(Object::Index) => "DINDEX",
            _ => "QUERY",
        }
    } else if first.eq_ignore_ascii_case("ALTER") {
        if words.find_object() != Some(Object::Table) {
            return "QUERY";
        }
        words.skip_name();
        let clause = words.next_word().unwrap_or("");
        let next = words.next_word().unwrap_or("");
        let is = |w: &str, set: &[&str]| set.iter().any(|s| w.eq_ignore_ascii_case(s));
        if is(clause, &["ADD"])
            && is(
                next,
                &["INDEX", "KEY", "UNIQUE", "FULLTEXT", "SPATIAL", "PRIMARY"],
            )
        {
            "CINDEX"
        } else if is(clause, &["DROP"]) && is(next, &["INDEX", "KEY", "PRIMARY"]) {
            "DINDEX"
        } else if is(clause, &["RENAME"]) && !is(next, &["COLUMN", "INDEX", "KEY"]) {
            "RENAME"
        } else {
            "ALTER"
        }
    } else if first.eq_ignore_ascii_case("TRUNCATE") {
        "TRUNCATE"
    } else if first.eq_ignore_ascii_case("RENAME") {
        "RENAME"
    } else {
        "QUERY"
    }
}

/// The kind of object a `CREATE`, `DROP` or `ALTER` works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Object {
    Table,
    View,
    Index,
    Other,
}

/// The tokens of a statement that matter to [`ddl_type`]: bare words, with comments,
/// quoted text and punctuation skipped.
struct Words<'q> {
    rest: &'q str,
}

impl<'q> Words<'q> {
    fn new(query: &'q str) -> Self {
        Words { rest: query }
    }

    /// Skips whitespace, comments, quoted text and punctuation until a bare word starts;
    /// `false` at the end.
    fn skip_to_word(&mut self) -> bool {
        loop {
            let s = self.rest.trim_start();
            self.rest = s;
            if let Some(after) = s.strip_prefix("/*") {
                self.rest = after.find("*/").map_or("", |i| &after[i + 2..]);
            } else if s.starts_with("-- ") || s.starts_with('#') {
                self.rest = s.find('\n').map_or("", |i| &s[i + 1..]);
            } else {
                let Some(c) = s.chars().next() else {
                    return false;
                };
                if is_word_char(c) {
                    return true;
                }
                self.rest = skip_token(s);
            }
        }
    }

    /// The next bare word, skipping quoted text and punctuation.
    fn next_word(&mut self) -> Option<&'q str> {
        if !self.skip_to_word() {
            return None;
        }
        let end = self
            .rest
            .find(|c: char| !is_word_char(c))
            .unwrap_or(self.rest.len());
        let (word, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(word)
    }

    /// The first object keyword among the next words (modifiers such as `OR REPLACE`,
    /// `TEMPORARY`, `UNIQUE` or a view's `ALGORITHM=… DEFINER=…` are passed over).
    fn find_object(&mut self) -> Option<Object> {
        // A view's options are the longest run of words before its keyword.
        for _ in 0..16 {
            let w = self.next_word()?;
            let object = if w.eq_ignore_ascii_case("TABLE") {
                Object::Table
            } else if w.eq_ignore_ascii_case("VIEW") {
                Object::View
            } else if w.eq_ignore_ascii_case("INDEX") || w.eq_ignore_ascii_case("KEY") {
                Object::Index
            } else if [
                "DATABASE",
                "SCHEMA",
                "SEQUENCE",
                "USER",
                "ROLE",
                "PLACEMENT",
            ]
            .iter()
            .any(|k| w.eq_ignore_ascii_case(k))
            {
                Object::Other
            } else {
                continue;
            };
            return Some(object);
        }
        None
    }

    /// Skips `[IF EXISTS] name` or `schema.name`, each part a bare word or quoted.
    fn skip_name(&mut self) {
        let mut expect_part = true;
        loop {
            let s = self.rest.trim_start();
            self.rest = s;
            let Some(c) = s.chars().next() else { return };
            if expect_part {
                if c == '`' || c == '"' {
                    self.rest = skip_token(s);
                } else if is_word_char(c) {
                    let w = self.next_word().unwrap_or("");
                    if w.eq_ignore_ascii_case("IF") || w.eq_ignore_ascii_case("EXISTS") {
                        continue;
                    }
                } else {
                    return;
                }
                expect_part = false;
            } else if c == '.' {
                self.rest = &s[1..];
                expect_part = true;
            } else {
                return;
            }
        }
    }
}

/// Whether `c` can be part of a bare SQL word.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// `s` after its first token: a quoted text (`` ` ``, `'`, `"`, with doubled or
/// backslash-escaped quotes inside) or one character.
fn skip_token(s: &str) -> &str {
    let mut chars = s.char_indices();
    let Some((_, quote)) = chars.next() else {
        return s;
    };
    if !matches!(quote, '`' | '\'' | '"') {
        return &s[quote.len_utf8()..];
    }
    let mut escaped = false;
    while let Some((i, c)) = chars.next() {
        if escaped {
            escaped = false;
        } else if c == '\\' && quote != '`' {
            escaped = true;
        } else if c == quote {
            // A doubled quote is a quote inside the text.
            if s[i + 1..].starts_with(quote) {
                chars.next();
            } else {
                return &s[i + 1..];
            }
        }
    }
    ""
}

/// Canal's `type` of a row change.
fn row_type(kind: RowKind) -> &'static str {
    match kind {
        RowKind::Insert => "INSERT",
        RowKind::Update => "UPDATE",
        RowKind::Delete => "DELETE",
    }
}

/// The `mysqlType` of a value (the module docs' table).
fn mysql_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "tinyint(1)",
        Value::Int(_) => "bigint",
        Value::UInt(_) => "bigint unsigned",
        Value::Float(_) => "double",
        Value::Decimal(_) => "decimal",
        Value::Text(_) => "text",
        Value::Bytes(_) => "blob",
        Value::Json(_) => "json",
    }
}

/// The `sqlType` of a value: its `java.sql.Types` code (the module docs' table).
fn sql_type(value: &Value) -> i32 {
    const NULL: i32 = 0;
    const TINYINT: i32 = -6;
    const BIGINT: i32 = -5;
    const DOUBLE: i32 = 8;
    const DECIMAL: i32 = 3;
    const VARCHAR: i32 = 12;
    const CLOB: i32 = 2005;
    const BLOB: i32 = 2004;
    match value {
        Value::Null => NULL,
        Value::Bool(_) => TINYINT,
        Value::Int(_) => BIGINT,
        // Above i64::MAX a Java long cannot hold it: TiCDC says DECIMAL then.
        Value::UInt(u) if *u > i64::MAX as u64 => DECIMAL,
        Value::UInt(_) => BIGINT,
        Value::Float(_) => DOUBLE,
        Value::Decimal(_) => DECIMAL,
        Value::Text(_) => CLOB,
        Value::Bytes(_) => BLOB,
        Value::Json(_) => VARCHAR,
    }
}

/// A value in Canal's text form: exactly [`Value::to_text`], written straight into the
/// output without an intermediate `String`.
struct CanalText<'a>(&'a Value);

impl Serialize for CanalText<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use base64::display::Base64Display;
        use base64::engine::general_purpose::STANDARD;
        match self.0 {
            Value::Null => s.serialize_none(),
            Value::Bool(b) => s.serialize_str(if *b { "1" } else { "0" }),
            Value::Int(i) => s.collect_str(i),
            Value::UInt(u) => s.collect_str(u),
            Value::Float(f) if f.is_finite() => s.collect_str(f),
            Value::Float(_) => s.serialize_none(),
            Value::Decimal(t) | Value::Text(t) | Value::Json(t) => s.serialize_str(t),
            Value::Bytes(b) => s.collect_str(&Base64Display::new(b, &STANDARD)),
        }
    }
}

/// `[object]`: a JSON array holding one object.
struct One<T>(T);

impl<T: Serialize> Serialize for One<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(1))?;
        seq.serialize_element(&self.0)?;
        seq.end()
    }
}

/// `pkNames`: the key columns' names, or `null` when there are none.
struct PkNames<'a>(&'a [Column]);

impl Serialize for PkNames<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        if !self.0.iter().any(|c| c.is_key) {
            return s.serialize_none();
        }
        let mut seq = s.serialize_seq(None)?;
        for c in self.0.iter().filter(|c| c.is_key) {
            seq.serialize_element(c.name.as_str())?;
        }
        seq.end()
    }
}

/// `sqlType` or `mysqlType` of a row: column → type of its value in `image`, or of its
/// value in `other` (the other image of an UPDATE) when NULL in `image`.
struct TypeMap<'a> {
    image: &'a [Column],
    other: &'a [Column],
    mysql: bool,
}

impl Serialize for TypeMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.image.len()))?;
        for (i, c) in self.image.iter().enumerate() {
            let value = match &c.value {
                Value::Null => {
                    counterpart(self.other, i, &c.name).map_or(&c.value, |other| &other.value)
                }
                v => v,
            };
            if self.mysql {
                map.serialize_entry(c.name.as_str(), mysql_type(value))?;
            } else {
                map.serialize_entry(c.name.as_str(), &sql_type(value))?;
            }
        }
        map.end()
    }
}

/// The column named `name` in `image`, looked for first at `index` (images of one row
/// usually list columns in the same order).
fn counterpart<'a>(image: &'a [Column], index: usize, name: &str) -> Option<&'a Column> {
    match image.get(index) {
        Some(c) if c.name == name => Some(c),
        _ => image.iter().find(|c| c.name == name),
    }
}

/// Whether the column `old[index]` differs in `new` (or is missing from it).
fn changed(old: &[Column], new: &[Column], index: usize) -> bool {
    let c = &old[index];
    match counterpart(new, index, &c.name) {
        Some(n) => !super::same_value(&c.value, &n.value),
        None => true,
    }
}

/// A row event as Canal's flat message.
struct FlatRow<'a> {
    row: &'a RowChange,
    emit_ms: u64,
}

impl Serialize for FlatRow<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let row = self.row;
        let (image, other) = match row.kind {
            RowKind::Delete => (&row.old[..], &row.new[..]),
            RowKind::Insert | RowKind::Update => (&row.new[..], &row.old[..]),
        };
        let mut st = s.serialize_struct("FlatMessage", 14)?;
        st.serialize_field("id", &0)?;
        st.serialize_field("database", row.table.schema())?;
        st.serialize_field("table", row.table.table())?;
        st.serialize_field("pkNames", &PkNames(image))?;
        st.serialize_field("isDdl", &false)?;
        st.serialize_field("type", row_type(row.kind))?;
        st.serialize_field("es", &tso::physical_millis(row.commit_ts))?;
        st.serialize_field("ts", &self.emit_ms)?;
        st.serialize_field("sql", "")?;
        st.serialize_field(
            "sqlType",
            &TypeMap {
                image,
                other,
                mysql: false,
            },
        )?;
        st.serialize_field(
            "mysqlType",
            &TypeMap {
                image,
                other,
                mysql: true,
            },
        )?;
        st.serialize_field(
            "data",
            &One(ColumnObject::new(image.iter(), |c| CanalText(&c.value))),
        )?;
        if row.kind == RowKind::Update {
            let changed = (0..row.old.len())
                .filter(|&i| changed(&row.old, &row.new, i))
                .map(|i| &row.old[i]);
            st.serialize_field(
                "old",
                &One(ColumnObject::new(changed, |c| CanalText(&c.value))),
            )?;
        } else {
            st.serialize_field("old", &())?;
        }
        st.serialize_field("_tidb", &TidbExtension(row.commit_ts))?;
        st.end()
    }
}

/// A DDL event as Canal's flat message.
struct FlatDdl<'a> {
    ddl: &'a DdlChange,
    emit_ms: u64,
}

impl Serialize for FlatDdl<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let ddl = self.ddl;
        let mut st = s.serialize_struct("FlatMessage", 14)?;
        st.serialize_field("id", &0)?;
        st.serialize_field("database", ddl.table.schema())?;
        st.serialize_field("table", ddl.table.table())?;
        st.serialize_field("pkNames", &())?;
        st.serialize_field("isDdl", &true)?;
        st.serialize_field("type", ddl_type(&ddl.query))?;
        st.serialize_field("es", &tso::physical_millis(ddl.commit_ts))?;
        st.serialize_field("ts", &self.emit_ms)?;
        st.serialize_field("sql", ddl.query.as_str())?;
        st.serialize_field("sqlType", &())?;
        st.serialize_field("mysqlType", &())?;
        st.serialize_field("data", &())?;
        st.serialize_field("old", &())?;
        st.serialize_field("_tidb", &TidbExtension(ddl.commit_ts))?;
        st.end()
    }
}

/// `{"commitTs": ts}`.
struct TidbExtension(u64);

impl Serialize for TidbExtension {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("TidbExtension", 1)?;
        st.serialize_field("commitTs", &self.0)?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::TableName;
    use serde_json::{json, Value as Json};

    const COMMIT_MS: u64 = 1_764_127_762_123;
    const EMIT_MS: u64 = 1_764_127_763_000;

    fn table() -> TableName {
        TableName::new("shop", "orders")
    }

    fn encode(event: impl Into<Event>) -> Message {
        let mut out = Vec::new();
        CanalJson::with_fixed_clock(EMIT_MS)
            .encode(&event.into(), &mut out)
            .unwrap();
        assert_eq!(out.len(), 1);
        out.pop().unwrap()
    }

    fn value(msg: &Message) -> Json {
        serde_json::from_slice(&msg.value).unwrap()
    }

    #[test]
    fn update_old_holds_only_changed_columns() {
        let ts = tso::compose(COMMIT_MS, 3);
        let msg = encode(RowChange::update(
            table(),
            ts,
            vec![
                Column::key("id", Value::Int(1)),
                Column::new("a", Value::Text("x".into())),
                Column::new("b", Value::Null),
                Column::new("f", Value::Float(f64::NAN)),
            ],
            vec![
                Column::key("id", Value::Int(1)),
                Column::new("a", Value::Text("y".into())),
                Column::new("b", Value::Int(5)),
                Column::new("f", Value::Float(f64::NAN)),
            ],
        ));
        let v = value(&msg);
        assert_eq!(v["type"], "UPDATE");
        assert_eq!(v["old"], json!([{"a": "x", "b": null}]));
        assert_eq!(
            v["data"],
            json!([{"id": "1", "a": "y", "b": "5", "f": null}])
        );
        assert_eq!(msg.commit_ts, ts);
        assert_eq!(v["_tidb"]["commitTs"], ts);
        assert_eq!(v["es"], COMMIT_MS);
        assert_eq!(v["ts"], EMIT_MS);
        assert!(msg.key.is_empty());
        assert_eq!(msg.route, Default::default());
    }

    #[test]
    fn unchanged_update_has_an_empty_old_object() {
        let cols = vec![Column::key("id", Value::Int(1))];
        let v = value(&encode(RowChange::update(table(), 1, cols.clone(), cols)));
        assert_eq!(v["old"], json!([{}]));
    }

    #[test]
    fn old_matches_columns_by_name_when_orders_differ() {
        let v = value(&encode(RowChange::update(
            table(),
            1,
            vec![
                Column::new("a", Value::Int(1)),
                Column::new("b", Value::Int(2)),
                Column::new("gone", Value::Int(3)),
            ],
            vec![
                Column::new("b", Value::Int(2)),
                Column::new("a", Value::Int(9)),
            ],
        )));
        assert_eq!(v["old"], json!([{"a": "1", "gone": "3"}]));
    }

    #[test]
    fn null_column_takes_its_type_from_the_other_image() {
        let v = value(&encode(RowChange::update(
            table(),
            1,
            vec![
                Column::new("a", Value::Int(1)),
                Column::new("n", Value::Null),
            ],
            vec![Column::new("a", Value::Null), Column::new("n", Value::Null)],
        )));
        assert_eq!(v["mysqlType"], json!({"a": "bigint", "n": "null"}));
        assert_eq!(v["sqlType"], json!({"a": -5, "n": 0}));
    }

    #[test]
    fn insert_and_delete_have_null_old_and_delete_puts_old_image_in_data() {
        let ins = value(&encode(RowChange::insert(
            table(),
            1,
            vec![Column::key("id", Value::Int(1))],
        )));
        assert_eq!(ins["old"], Json::Null);
        assert_eq!(ins["pkNames"], json!(["id"]));
        let del = value(&encode(RowChange::delete(
            table(),
            1,
            vec![Column::key("id", Value::Int(7))],
        )));
        assert_eq!(del["type"], "DELETE");
        assert_eq!(del["data"], json!([{"id": "7"}]));
        assert_eq!(del["old"], Json::Null);
    }

    #[test]
    fn no_key_columns_means_null_pk_names() {
        let v = value(&encode(RowChange::insert(
            table(),
            1,
            vec![Column::new("a", Value::Int(1))],
        )));
        assert_eq!(v["pkNames"], Json::Null);
    }

    #[test]
    fn canal_text_matches_value_to_text() {
        let values = [
            Value::Null,
            Value::Bool(true),
            Value::Bool(false),
            Value::Int(i64::MIN),
            Value::UInt(u64::MAX),
            Value::Float(1.5),
            Value::Float(-0.0),
            Value::Float(1e300),
            Value::Float(f64::NAN),
            Value::Float(f64::INFINITY),
            Value::Decimal("-12.50".into()),
            Value::Text("a\"b\\c\n é 😀".into()),
            Value::Bytes(vec![0, 255, 1, 2]),
            Value::Bytes(vec![]),
            Value::Json("{\"a\":[1]}".into()),
        ];
        for v in values {
            let ours = serde_json::to_string(&CanalText(&v)).unwrap();
            let theirs = serde_json::to_string(&v.to_text()).unwrap();
            assert_eq!(ours, theirs, "{v:?}");
        }
    }

    #[test]
    fn uint_above_i64_max_is_decimal() {
        assert_eq!(sql_type(&Value::UInt(i64::MAX as u64)), -5);
        assert_eq!(sql_type(&Value::UInt(i64::MAX as u64 + 1)), 3);
    }

    #[test]
    fn ddl_message_goes_to_partition_zero() {
        let ts = tso::compose(COMMIT_MS, 0);
        let msg = encode(DdlChange::new(
            table(),
            ts,
            "ALTER TABLE orders ADD COLUMN c INT",
        ));
        let v = value(&msg);
        assert_eq!(msg.route.partition, PartitionChoice::Fixed(0));
        assert_eq!(msg.route.topic, None);
        assert_eq!(msg.commit_ts, ts);
        assert_eq!(v["isDdl"], true);
        assert_eq!(v["type"], "ALTER");
        assert_eq!(v["sql"], "ALTER TABLE orders ADD COLUMN c INT");
        assert_eq!(v["data"], Json::Null);
        assert_eq!(v["_tidb"]["commitTs"], ts);
    }

    #[test]
    fn resolved_encodes_to_nothing() {
        let mut out = Vec::new();
        CanalJson::default()
            .encode(&Event::Resolved(5), &mut out)
            .unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn ddl_types() {
        let cases = [
            ("CREATE TABLE t (id INT PRIMARY KEY, KEY k (id))", "CREATE"),
            ("  create temporary table if not exists `t` (a int)", "CREATE"),
            ("/* hint */ CREATE TABLE t (a INT)", "CREATE"),
            (
                "CREATE OR REPLACE ALGORITHM=MERGE DEFINER=`u`@`%` SQL SECURITY DEFINER VIEW v AS SELECT 1",
                "CREATE",
            ),
            ("CREATE UNIQUE INDEX i ON t (a)", "CINDEX"),
            ("create index i on t(a)", "CINDEX"),
            ("DROP TABLE IF EXISTS t", "ERASE"),
            ("DROP VIEW v", "ERASE"),
            ("DROP INDEX i ON t", "DINDEX"),
            ("ALTER TABLE t ADD COLUMN c INT", "ALTER"),
            ("ALTER TABLE `s`.`t` ADD INDEX i (a)", "CINDEX"),
            ("ALTER TABLE s.t ADD UNIQUE KEY u (a)", "CINDEX"),
            ("ALTER TABLE t ADD PRIMARY KEY (a)", "CINDEX"),
            ("ALTER TABLE `we``ird` DROP INDEX i", "DINDEX"),
            ("ALTER TABLE t DROP PRIMARY KEY", "DINDEX"),
            ("ALTER TABLE t DROP COLUMN c", "ALTER"),
            ("ALTER TABLE t RENAME TO u", "RENAME"),
            ("ALTER TABLE t RENAME COLUMN a TO b", "ALTER"),
            ("ALTER TABLE t RENAME INDEX a TO b", "ALTER"),
            ("ALTER TABLE t MODIFY c BIGINT, ADD INDEX i (c)", "ALTER"),
            ("TRUNCATE TABLE t", "TRUNCATE"),
            ("truncate t", "TRUNCATE"),
            ("RENAME TABLE a TO b", "RENAME"),
            ("CREATE DATABASE d", "QUERY"),
            ("DROP DATABASE IF EXISTS d", "QUERY"),
            ("ALTER DATABASE d CHARSET utf8mb4", "QUERY"),
            ("CREATE SCHEMA s", "QUERY"),
            ("", "QUERY"),
            ("-- only a comment\n", "QUERY"),
            ("SET @x = 1", "QUERY"),
        ];
        for (query, expected) in cases {
            assert_eq!(ddl_type(query), expected, "{query}");
        }
    }

    #[test]
    fn skip_token_handles_quotes() {
        assert_eq!(skip_token("`a``b` x"), " x");
        assert_eq!(skip_token("'it\\'s' x"), " x");
        assert_eq!(skip_token("'it''s' x"), " x");
        assert_eq!(skip_token("'open"), "");
        assert_eq!(skip_token("é x"), " x");
    }
}
