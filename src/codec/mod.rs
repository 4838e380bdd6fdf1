//! Pure encoders: turn row and DDL events into Kafka-style messages.
//!
//! Two protocols, each a [`Encoder`](crate::message::Encoder) that is cheap to clone and
//! share between dispatcher threads:
//!
//! | protocol | type | one message per | key | DDL route |
//! |---|---|---|---|---|
//! | `canal-json` | [`CanalJson`] | row or DDL event | empty (Kafka null key) | partition 0 |
//! | `debezium` | [`Debezium`] | row or DDL event | the key columns as a JSON object | every partition |
//!
//! `docs/ENCODINGS.md` describes both formats field by field, with examples and the rule a
//! consumer follows to drop the duplicates that at-least-once delivery brings.
//!
//! The encoders do no I/O and start no threads. Encoding runs on the dispatcher threads
//! at hundreds of thousands of rows a second, so each message is written with
//! `serde_json::to_writer` over borrowed views of the event (no intermediate
//! `serde_json::Value`, no copies of column names or values) into a per-thread scratch
//! buffer, then copied once into a `Vec<u8>` of exactly its length (about a million rows
//! a second per thread for a 16-column update).
//!
//! Every message carries the event's commit ts in [`Message::commit_ts`]. Row messages
//! leave [`Message::route`] at its default: the Kafka sink picks topic and partition.
//! Only DDL messages set a partition, as each protocol's convention asks.
//!
//! Each encoder stamps messages with an *emit time* (canal-json `ts`, debezium `ts_ms`):
//! the wall clock by default, or a fixed value for deterministic tests
//! ([`CanalJson::with_fixed_clock`], [`Debezium::with_fixed_clock`]).

mod canal_json;
mod debezium;

pub use canal_json::CanalJson;
pub use debezium::Debezium;

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::error::{Error, Result};
use crate::event::{Column, TableName, Value};
use crate::message::Message;

/// Where an encoder reads its emit time from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum EmitClock {
    /// `SystemTime::now()`, in milliseconds since the Unix epoch.
    #[default]
    Wall,
    /// Always this many milliseconds since the Unix epoch (tests).
    Fixed(u64),
}

impl EmitClock {
    /// The emit time in milliseconds since the Unix epoch.
    pub(crate) fn now_ms(self) -> u64 {
        match self {
            EmitClock::Wall => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            EmitClock::Fixed(ms) => ms,
        }
    }
}

/// Largest scratch buffer a thread keeps between messages; a larger one (left by a huge
/// event) is freed after use.
const SCRATCH_KEEP_BYTES: usize = 1 << 20;

thread_local! {
    /// Per-thread buffer messages are serialized into before being copied out.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Serializes `value` as JSON into a new buffer of exactly its length.
///
/// Serialization goes into a per-thread scratch buffer that keeps its capacity, then one
/// copy makes the message: the buffer never grows step by step, and a message holds no
/// spare capacity the memory quota (which counts lengths) would not see.
///
/// Serializing our borrowed views cannot fail in practice; should it, the error names the
/// event.
pub(crate) fn to_json<T: Serialize + ?Sized>(
    value: &T,
    table: &TableName,
    commit_ts: u64,
) -> Result<Vec<u8>> {
    let write = |buf: &mut Vec<u8>| {
        buf.clear();
        serde_json::to_writer(&mut *buf, value).map_err(|e| Error::Encode {
            table: table.clone(),
            commit_ts,
            reason: format!("json serialization failed: {e}"),
        })?;
        Ok(buf.to_vec())
    };
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            let out = write(&mut buf);
            if buf.capacity() > SCRATCH_KEEP_BYTES {
                *buf = Vec::new();
            }
            out
        }
        // Only if a `Serialize` impl ever encoded another message from inside.
        Err(_) => write(&mut Vec::new()),
    })
}

/// A message with `key`, `value` and `commit_ts`, and the default route unless the caller
/// changes it.
pub(crate) fn message(key: Vec<u8>, value: Vec<u8>, commit_ts: u64) -> Message {
    Message {
        key,
        value,
        commit_ts,
        route: Default::default(),
    }
}

/// Columns as a JSON object `{name: f(value), ...}`, in column order.
///
/// `F` turns a column into what is written as its value, so each protocol picks its own
/// value form without copying anything.
pub(crate) struct ColumnObject<'a, I, F> {
    columns: I,
    value: F,
    _marker: std::marker::PhantomData<&'a Column>,
}

impl<'a, I, F, V> ColumnObject<'a, I, F>
where
    I: Iterator<Item = &'a Column> + Clone,
    F: Fn(&'a Column) -> V,
    V: Serialize,
{
    /// The object of `columns`, each written as `value(column)`.
    pub(crate) fn new(columns: I, value: F) -> Self {
        ColumnObject {
            columns,
            value,
            _marker: std::marker::PhantomData,
        }
    }
}

impl<'a, I, F, V> Serialize for ColumnObject<'a, I, F>
where
    I: Iterator<Item = &'a Column> + Clone,
    F: Fn(&'a Column) -> V,
    V: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for column in self.columns.clone() {
            map.serialize_entry(column.name.as_str(), &(self.value)(column))?;
        }
        map.end()
    }
}

/// Whether two column values are the same for "did this column change" purposes.
///
/// Unlike `==`, a float equals itself bit for bit, so an unchanged NaN is unchanged.
pub(crate) fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_clock_is_fixed_and_wall_clock_is_recent() {
        assert_eq!(EmitClock::Fixed(42).now_ms(), 42);
        // 2020-01-01 in ms: any sane wall clock is later.
        assert!(EmitClock::Wall.now_ms() > 1_577_836_800_000);
        assert_eq!(EmitClock::default(), EmitClock::Wall);
    }

    #[test]
    fn to_json_returns_exact_buffers_and_frees_huge_scratch() {
        let t = TableName::new("s", "t");
        let small = to_json(&[1, 2, 3], &t, 1).unwrap();
        assert_eq!(small, b"[1,2,3]");
        assert_eq!(small.capacity(), small.len());
        let huge = "x".repeat(SCRATCH_KEEP_BYTES + 1);
        assert_eq!(to_json(&huge, &t, 1).unwrap().len(), huge.len() + 2);
        SCRATCH.with(|cell| assert_eq!(cell.borrow().capacity(), 0));
        to_json(&small, &t, 1).unwrap();
        SCRATCH.with(|cell| assert!(cell.borrow().capacity() > 0));
    }

    #[test]
    fn same_value_treats_nan_as_unchanged() {
        assert!(same_value(&Value::Float(f64::NAN), &Value::Float(f64::NAN)));
        assert!(!same_value(&Value::Float(0.0), &Value::Float(-0.0)));
        assert!(same_value(&Value::Null, &Value::Null));
        assert!(!same_value(&Value::Int(1), &Value::UInt(1)));
        assert!(!same_value(
            &Value::Text("a".into()),
            &Value::Text("b".into())
        ));
    }

    #[test]
    fn column_object_keeps_column_order() {
        let cols = [
            Column::key("b", Value::Int(1)),
            Column::new("a", Value::Text("x".into())),
        ];
        let obj = ColumnObject::new(cols.iter(), |c| &c.value);
        assert_eq!(serde_json::to_string(&obj).unwrap(), r#"{"b":1,"a":"x"}"#);
    }
}
