//! Golden-file tests of the `canal-json` and `debezium` encoders.
//!
//! Each case encodes one event with a fixed emit clock and compares the message, as
//! parsed JSON, with `tests/golden/<protocol>_<case>.json`:
//!
//! ```json
//! {"key": <the key as JSON, or null when empty>, "value": <the value as JSON>,
//!  "commit_ts": <u64>, "route": {"topic": null, "partition": "Hash(0)" | "Fixed(0)" | "All"}}
//! ```
//!
//! Debezium's `source.version` is the crate version; it is checked here and written as
//! `"<CARGO_PKG_VERSION>"` in the golden files, so a version bump does not break them.
//!
//! Regenerate with `UPDATE_GOLDEN=1 cargo test --test codec_golden`, then read the diff:
//! the files must follow docs/ENCODINGS.md, not merely match the code.

use std::path::PathBuf;

use changefeed::codec::{CanalJson, Debezium};
use changefeed::sink::{Encoder, Message};
use changefeed::tso;
use changefeed::{Column, DdlChange, Event, RowChange, TableName, Value};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value as Json;

/// Commit time of every event: 2025-11-26T03:29:22.123Z, logical counter 5.
const COMMIT_MS: u64 = 1_764_127_762_123;
/// Emit time of every message.
const EMIT_MS: u64 = 1_764_127_763_000;

fn commit_ts() -> u64 {
    tso::compose(COMMIT_MS, 5)
}

fn orders() -> TableName {
    TableName::new("shop", "orders")
}

fn cases() -> Vec<(&'static str, Event)> {
    let ts = commit_ts();
    vec![
        (
            "insert",
            RowChange::insert(
                orders(),
                ts,
                vec![
                    Column::key("id", Value::Int(1)),
                    Column::new("item", Value::Text("tea".into())),
                    Column::new("qty", Value::Int(2)),
                    Column::new("price", Value::Decimal("3.50".into())),
                ],
            )
            .into(),
        ),
        (
            "update",
            RowChange::update(
                orders(),
                ts,
                vec![
                    Column::key("id", Value::Int(1)),
                    Column::new("item", Value::Text("tea".into())),
                    Column::new("qty", Value::Int(2)),
                    Column::new("note", Value::Null),
                ],
                vec![
                    Column::key("id", Value::Int(1)),
                    Column::new("item", Value::Text("tea".into())),
                    Column::new("qty", Value::Int(3)),
                    Column::new("note", Value::Text("gift".into())),
                ],
            )
            .into(),
        ),
        (
            "delete",
            RowChange::delete(
                orders(),
                ts,
                vec![
                    Column::key("id", Value::Int(1)),
                    Column::new("item", Value::Text("tea".into())),
                    Column::new("qty", Value::Int(3)),
                    Column::new("note", Value::Text("gift".into())),
                ],
            )
            .into(),
        ),
        (
            "ddl",
            DdlChange::new(orders(), ts, "ALTER TABLE `orders` ADD COLUMN `note` TEXT").into(),
        ),
        (
            "all_values",
            RowChange::insert(
                TableName::new("lab", "every_type"),
                ts,
                vec![
                    Column::key("k", Value::UInt(7)),
                    Column::new("v_null", Value::Null),
                    Column::new("v_bool", Value::Bool(true)),
                    Column::new("v_int", Value::Int(-42)),
                    Column::new("v_uint", Value::UInt(18_446_744_073_709_551_615)),
                    Column::new("v_float", Value::Float(2.5)),
                    Column::new("v_nan", Value::Float(f64::NAN)),
                    Column::new(
                        "v_decimal",
                        Value::Decimal("-12345678901234567890.0100".into()),
                    ),
                    Column::new("v_text", Value::Text("héllo \"wörld\" \\ 😀\n".into())),
                    Column::new("v_bytes", Value::Bytes(vec![0x00, 0xff, 0x10, 0x80])),
                    Column::new("v_json", Value::Json(r#"{"a":[1,2],"b":"x"}"#.into())),
                ],
            )
            .into(),
        ),
        (
            "no_key",
            RowChange::update(
                TableName::new("shop", "audit_log"),
                ts,
                vec![
                    Column::new("at", Value::Int(100)),
                    Column::new("what", Value::Text("login".into())),
                ],
                vec![
                    Column::new("at", Value::Int(100)),
                    Column::new("what", Value::Text("logout".into())),
                ],
            )
            .into(),
        ),
    ]
}

/// A message as the golden files hold it, objects in the order the encoder wrote them.
fn golden_form(msg: &Message) -> Ordered {
    let key = if msg.key.is_empty() {
        Ordered::Null
    } else {
        serde_json::from_slice(&msg.key).expect("key is JSON")
    };
    let mut value: Ordered = serde_json::from_slice(&msg.value).expect("value is JSON");
    if let Some(version) = value.get_mut("source").and_then(|s| s.get_mut("version")) {
        assert_eq!(*version, Ordered::Str(env!("CARGO_PKG_VERSION").into()));
        *version = Ordered::Str("<CARGO_PKG_VERSION>".into());
    }
    let route = Ordered::Obj(vec![
        (
            "topic".into(),
            msg.route
                .topic
                .as_deref()
                .map_or(Ordered::Null, |t| Ordered::Str(t.into())),
        ),
        (
            "partition".into(),
            Ordered::Str(format!("{:?}", msg.route.partition)),
        ),
    ]);
    Ordered::Obj(vec![
        ("key".into(), key),
        ("value".into(), value),
        ("commit_ts".into(), Ordered::Num(msg.commit_ts.into())),
        ("route".into(), route),
    ])
}

/// A JSON document that keeps its objects' member order (`serde_json::Value` sorts them
/// without the `preserve_order` feature), so golden files read in the order encoders
/// write. Comparisons go through `serde_json::Value`, where order does not matter.
#[derive(Debug, PartialEq)]
enum Ordered {
    Null,
    Bool(bool),
    Num(serde_json::Number),
    Str(String),
    Arr(Vec<Ordered>),
    Obj(Vec<(String, Ordered)>),
}

impl Ordered {
    fn get_mut(&mut self, name: &str) -> Option<&mut Ordered> {
        match self {
            Ordered::Obj(members) => members.iter_mut().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl Serialize for Ordered {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Ordered::Null => s.serialize_unit(),
            Ordered::Bool(b) => s.serialize_bool(*b),
            Ordered::Num(n) => n.serialize(s),
            Ordered::Str(t) => s.serialize_str(t),
            Ordered::Arr(items) => items.serialize(s),
            Ordered::Obj(members) => {
                let mut map = s.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ordered, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Ordered, E> {
                Ok(Ordered::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Ordered, E> {
                Ok(Ordered::Num(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Ordered, E> {
                Ok(Ordered::Num(n.into()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Ordered, E> {
                serde_json::Number::from_f64(n)
                    .map(Ordered::Num)
                    .ok_or_else(|| E::custom("not a JSON number"))
            }
            fn visit_str<E>(self, t: &str) -> Result<Ordered, E> {
                Ok(Ordered::Str(t.into()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ordered, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Ordered::Arr(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Ordered::Obj(members))
            }
        }
        d.deserialize_any(V)
    }
}

fn check(protocol: &str, encoder: &dyn Encoder) {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut failures = Vec::new();
    for (case, event) in cases() {
        let mut out = Vec::new();
        encoder.encode(&event, &mut out).expect("encodes");
        assert_eq!(out.len(), 1, "{protocol} {case}: one message per event");
        let ordered = golden_form(&out[0]);
        let path = dir.join(format!("{protocol}_{case}.json"));
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            let text = serde_json::to_string_pretty(&ordered).unwrap() + "\n";
            std::fs::write(&path, text).unwrap();
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
                path.display()
            )
        });
        let expected: Json = serde_json::from_str(&text).expect("golden file is JSON");
        let actual = serde_json::to_value(&ordered).unwrap();
        if actual != expected {
            failures.push(format!(
                "{}:\nexpected {}\nactual   {}",
                path.display(),
                serde_json::to_string_pretty(&expected).unwrap(),
                serde_json::to_string_pretty(&actual).unwrap()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden mismatch(es) (UPDATE_GOLDEN=1 regenerates):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn canal_json_matches_golden_files() {
    check("canal_json", &CanalJson::with_fixed_clock(EMIT_MS));
}

#[test]
fn debezium_matches_golden_files() {
    check("debezium", &Debezium::with_fixed_clock(EMIT_MS));
}

#[test]
fn every_message_carries_the_commit_ts() {
    let encoders: [&dyn Encoder; 2] = [&CanalJson::default(), &Debezium::default()];
    for encoder in encoders {
        for (case, event) in cases() {
            let mut out = Vec::new();
            encoder.encode(&event, &mut out).unwrap();
            assert!(
                out.iter().all(|m| m.commit_ts == commit_ts()),
                "{case}: commit ts"
            );
        }
    }
}

#[test]
fn resolved_events_encode_to_nothing() {
    let encoders: [&dyn Encoder; 2] = [&CanalJson::default(), &Debezium::default()];
    for encoder in encoders {
        let mut out = Vec::new();
        encoder
            .encode(&Event::Resolved(commit_ts()), &mut out)
            .unwrap();
        assert!(out.is_empty());
    }
}
