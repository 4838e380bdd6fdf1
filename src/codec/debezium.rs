//! The `debezium` encoder. [`Debezium`] documents the format; `docs/ENCODINGS.md` has
//! more examples and the consumer side.

use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::{message, to_json, ColumnObject, EmitClock};
use crate::error::Result;
use crate::event::{Column, DdlChange, Event, RowChange, RowKind, TableName};
use crate::message::{Encoder, Message, PartitionChoice};
use crate::tso;

/// The `debezium` protocol: Debezium's change event envelope in JSON, one message per
/// row or DDL event.
///
/// **No schema part.** A value is the bare envelope (what Debezium writes through Kafka
/// Connect's JSON converter with `schemas.enable=false`), not `{"schema":…,"payload":…}`:
/// events carry no column types to describe, and the bare form is what Flink's
/// `debezium-json` format reads by default (`debezium-json.schema-include=false`). TiCDC
/// writes the schema part; consumers that require it cannot read this protocol.
///
/// A row message value:
///
/// ```json
/// {"before":{"id":1,"note":"old"},"after":{"id":1,"note":"new"},
///  "source":{"version":"0.1.0","connector":"changefeed","name":"changefeed",
///            "ts_ms":1764127762123,"snapshot":"false","db":"shop","table":"orders",
///            "commit_ts":462455508073971717},
///  "op":"u","ts_ms":1764127763000,"transaction":null}
/// ```
///
/// | field | meaning |
/// |---|---|
/// | `before` | the old image (`u`, `d`); `null` for `c` |
/// | `after` | the new image (`c`, `u`); `null` for `d` |
/// | `source.version` | this crate's version |
/// | `source.connector`, `source.name` | `"changefeed"` |
/// | `source.ts_ms` | commit time: the commit ts's physical part, ms |
/// | `source.snapshot` | `"false"`: every event is a change, never a snapshot read (`op` is never `r`) |
/// | `source.db`, `source.table` | the table's schema and name |
/// | `source.commit_ts` | the exact commit ts (our extension; TiCDC's debezium has the same field) |
/// | `op` | `c` (insert), `u` (update), `d` (delete) |
/// | `ts_ms` | emit time, ms |
/// | `transaction` | `null` |
///
/// Images are objects column name → value, in [`Value`](crate::Value)'s JSON form
/// (numbers exact, decimals as strings, bytes as base64, NaN and infinities `null`).
///
/// **Key.** The key columns of the row as an object, `{"id":1}` (bare, like the value),
/// taken from the new image, or the old one for a delete. Empty (a Kafka null key) when
/// the row has no key columns. An update that changes the key is one `u` message keyed
/// by the new key; its `before` holds the old key. No tombstone follows a delete.
///
/// **DDL.** A schema change message in the shape of Debezium's schema change topic:
///
/// ```json
/// {"source":{…as above, "table":"orders"…},"ts_ms":1764127763000,
///  "databaseName":"shop","schemaName":null,"ddl":"ALTER TABLE …","tableChanges":[]}
/// ```
///
/// keyed `{"databaseName":"shop"}`. `tableChanges` is empty: events carry no table
/// structure. It has no `op`, so row consumers can tell it apart (Flink's `debezium-json`
/// needs `debezium-json.ignore-parse-errors=true` to pass over it).
///
/// **DDL route.** Every partition ([`PartitionChoice::All`]), as TiCDC does for its
/// non-Canal protocols: rows of a table may sit in any partition, and each partition's
/// consumer must see the schema change between the rows before it and the rows after it.
///
/// `Default` stamps messages with the wall clock; [`Debezium::with_fixed_clock`] with a
/// fixed time, for tests.
#[derive(Clone, Debug, Default)]
pub struct Debezium {
    clock: EmitClock,
}

/// What `source.connector` and `source.name` say.
const CONNECTOR: &str = "changefeed";

impl Debezium {
    /// An encoder whose emit time (`ts_ms`) is always `ms` milliseconds since the Unix
    /// epoch.
    pub fn with_fixed_clock(ms: u64) -> Debezium {
        Debezium {
            clock: EmitClock::Fixed(ms),
        }
    }

    fn encode_row(&self, row: &RowChange) -> Result<Message> {
        let key = if row.key_columns().next().is_some() {
            // `key_columns()` as a cloneable iterator, which `ColumnObject` needs.
            let columns = row.current().iter().filter(|c| c.is_key);
            let key = ColumnObject::new(columns, |c| &c.value);
            to_json(&key, &row.table, row.commit_ts)?
        } else {
            Vec::new()
        };
        let envelope = RowEnvelope {
            row,
            emit_ms: self.clock.now_ms(),
        };
        let value = to_json(&envelope, &row.table, row.commit_ts)?;
        Ok(message(key, value, row.commit_ts))
    }

    fn encode_ddl(&self, ddl: &DdlChange) -> Result<Message> {
        let key = to_json(&DdlKey(ddl.table.schema()), &ddl.table, ddl.commit_ts)?;
        let envelope = DdlEnvelope {
            ddl,
            emit_ms: self.clock.now_ms(),
        };
        let value = to_json(&envelope, &ddl.table, ddl.commit_ts)?;
        let mut msg = message(key, value, ddl.commit_ts);
        // Every partition: each partition's consumer must see the schema change in order.
        msg.route.partition = PartitionChoice::All;
        Ok(msg)
    }
}

impl Encoder for Debezium {
    fn encode(&self, event: &Event, out: &mut Vec<Message>) -> Result<()> {
        match event {
            Event::Row(row) => out.push(self.encode_row(row)?),
            Event::Ddl(ddl) => out.push(self.encode_ddl(ddl)?),
            Event::Resolved(_) => {}
        }
        Ok(())
    }
}

/// Debezium's `op` of a row change.
fn op(kind: RowKind) -> &'static str {
    match kind {
        RowKind::Insert => "c",
        RowKind::Update => "u",
        RowKind::Delete => "d",
    }
}

/// An image as an object, or `null` when the row kind has no such image.
struct Image<'a>(Option<&'a [Column]>);

impl Serialize for Image<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0 {
            Some(columns) => ColumnObject::new(columns.iter(), |c| &c.value).serialize(s),
            None => s.serialize_none(),
        }
    }
}

/// `source`: where and when the change happened.
struct Source<'a> {
    table: &'a TableName,
    commit_ts: u64,
}

impl Serialize for Source<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Source", 8)?;
        st.serialize_field("version", env!("CARGO_PKG_VERSION"))?;
        st.serialize_field("connector", CONNECTOR)?;
        st.serialize_field("name", CONNECTOR)?;
        st.serialize_field("ts_ms", &tso::physical_millis(self.commit_ts))?;
        st.serialize_field("snapshot", "false")?;
        st.serialize_field("db", self.table.schema())?;
        st.serialize_field("table", self.table.table())?;
        st.serialize_field("commit_ts", &self.commit_ts)?;
        st.end()
    }
}

/// A row event's envelope.
struct RowEnvelope<'a> {
    row: &'a RowChange,
    emit_ms: u64,
}

impl Serialize for RowEnvelope<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let row = self.row;
        let (before, after) = match row.kind {
            RowKind::Insert => (None, Some(&row.new[..])),
            RowKind::Update => (Some(&row.old[..]), Some(&row.new[..])),
            RowKind::Delete => (Some(&row.old[..]), None),
        };
        let mut st = s.serialize_struct("Envelope", 6)?;
        st.serialize_field("before", &Image(before))?;
        st.serialize_field("after", &Image(after))?;
        st.serialize_field(
            "source",
            &Source {
                table: &row.table,
                commit_ts: row.commit_ts,
            },
        )?;
        st.serialize_field("op", op(row.kind))?;
        st.serialize_field("ts_ms", &self.emit_ms)?;
        st.serialize_field("transaction", &())?;
        st.end()
    }
}

/// A DDL event as a schema change message.
struct DdlEnvelope<'a> {
    ddl: &'a DdlChange,
    emit_ms: u64,
}

impl Serialize for DdlEnvelope<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let ddl = self.ddl;
        let mut st = s.serialize_struct("SchemaChange", 6)?;
        st.serialize_field(
            "source",
            &Source {
                table: &ddl.table,
                commit_ts: ddl.commit_ts,
            },
        )?;
        st.serialize_field("ts_ms", &self.emit_ms)?;
        st.serialize_field("databaseName", ddl.table.schema())?;
        st.serialize_field("schemaName", &())?;
        st.serialize_field("ddl", ddl.query.as_str())?;
        st.serialize_field("tableChanges", &[(); 0])?;
        st.end()
    }
}

/// A DDL message's key: `{"databaseName": schema}`.
struct DdlKey<'a>(&'a str);

impl Serialize for DdlKey<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("SchemaChangeKey", 1)?;
        st.serialize_field("databaseName", self.0)?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Value;
    use serde_json::{json, Value as Json};

    const COMMIT_MS: u64 = 1_764_127_762_123;
    const EMIT_MS: u64 = 1_764_127_763_000;

    fn table() -> TableName {
        TableName::new("shop", "orders")
    }

    fn encode(event: impl Into<Event>) -> Message {
        let mut out = Vec::new();
        Debezium::with_fixed_clock(EMIT_MS)
            .encode(&event.into(), &mut out)
            .unwrap();
        assert_eq!(out.len(), 1);
        out.pop().unwrap()
    }

    fn json_of(bytes: &[u8]) -> Json {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn update_carries_both_images_and_key_of_new_image() {
        let ts = tso::compose(COMMIT_MS, 9);
        let msg = encode(RowChange::update(
            table(),
            ts,
            vec![
                Column::key("id", Value::Int(1)),
                Column::new("f", Value::Float(f64::NAN)),
            ],
            vec![
                Column::key("id", Value::Int(2)),
                Column::new("f", Value::Float(2.5)),
            ],
        ));
        let v = json_of(&msg.value);
        assert_eq!(v["op"], "u");
        assert_eq!(v["before"], json!({"id": 1, "f": null}));
        assert_eq!(v["after"], json!({"id": 2, "f": 2.5}));
        assert_eq!(json_of(&msg.key), json!({"id": 2}));
        assert_eq!(v["source"]["commit_ts"], ts);
        assert_eq!(v["source"]["ts_ms"], COMMIT_MS);
        assert_eq!(v["ts_ms"], EMIT_MS);
        assert_eq!(v["transaction"], Json::Null);
        assert_eq!(msg.commit_ts, ts);
        assert_eq!(msg.route, Default::default());
    }

    #[test]
    fn insert_has_null_before_and_delete_has_null_after() {
        let ins = json_of(
            &encode(RowChange::insert(
                table(),
                1,
                vec![Column::key("id", Value::Int(1))],
            ))
            .value,
        );
        assert_eq!(ins["op"], "c");
        assert_eq!(ins["before"], Json::Null);
        let del = encode(RowChange::delete(
            table(),
            1,
            vec![Column::key("id", Value::UInt(u64::MAX))],
        ));
        let v = json_of(&del.value);
        assert_eq!(v["op"], "d");
        assert_eq!(v["after"], Json::Null);
        assert_eq!(v["before"], json!({"id": u64::MAX}));
        assert_eq!(json_of(&del.key), json!({"id": u64::MAX}));
    }

    #[test]
    fn no_key_columns_means_empty_key() {
        let msg = encode(RowChange::insert(
            table(),
            1,
            vec![Column::new("a", Value::Int(1))],
        ));
        assert!(msg.key.is_empty());
    }

    #[test]
    fn ddl_goes_to_every_partition() {
        let msg = encode(DdlChange::new(table(), 7, "TRUNCATE TABLE orders"));
        assert_eq!(msg.route.partition, PartitionChoice::All);
        assert_eq!(msg.commit_ts, 7);
        assert_eq!(json_of(&msg.key), json!({"databaseName": "shop"}));
        let v = json_of(&msg.value);
        assert_eq!(v["ddl"], "TRUNCATE TABLE orders");
        assert_eq!(v["databaseName"], "shop");
        assert_eq!(v["source"]["table"], "orders");
        assert_eq!(v["source"]["commit_ts"], 7);
        assert!(v.get("op").is_none());
    }

    #[test]
    fn resolved_encodes_to_nothing() {
        let mut out = Vec::new();
        Debezium::default()
            .encode(&Event::Resolved(5), &mut out)
            .unwrap();
        assert!(out.is_empty());
    }
}
