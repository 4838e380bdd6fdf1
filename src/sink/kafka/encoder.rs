//! What the dispatchers run for the Kafka sink: the protocol's codec, then routing, then
//! the size check against `max-message-bytes` — before anything reaches the sink thread.

use std::sync::Arc;

use super::router::Router;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::message::{Encoder, Message};

/// Bytes a message alone in a batch takes on the wire besides its key and value, on
/// either client: a v2 record batch (librdkafka) has a 61-byte header and at most 32
/// bytes of record framing (varint lengths, attributes, deltas, header count); a protocol
/// v0 message set (kafka-rust) 26 (offset, size, CRC, magic, attributes, key and value
/// lengths). What the broker checks against the topic's `max.message.bytes`.
pub const RECORD_OVERHEAD: usize = 61 + 32;

/// The bytes `m` takes on the wire: what `max-message-bytes` bounds.
pub(crate) fn record_size(m: &Message) -> usize {
    m.key.len() + m.value.len() + RECORD_OVERHEAD
}

/// The encoder the dispatchers use: the protocol's codec, then routing, then the size
/// check.
pub(crate) struct KafkaEncoder {
    pub(crate) codec: Arc<dyn Encoder>,
    pub(crate) router: Router,
    pub(crate) max_message_bytes: usize,
}

impl Encoder for KafkaEncoder {
    fn encode(&self, event: &Event, out: &mut Vec<Message>) -> Result<()> {
        let start = out.len();
        self.codec.encode(event, out)?;
        let Some(table) = event.table() else {
            return Ok(());
        };
        let topic = self.router.topic(table)?;
        for m in &mut out[start..] {
            m.route.topic = Some(Arc::clone(&topic));
            if let Event::Row(row) = event {
                m.route.partition = self.router.partition(row);
            }
            let size = record_size(m);
            if size > self.max_message_bytes {
                let key = match event {
                    Event::Row(row) => row
                        .key_columns()
                        .map(|c| {
                            format!(
                                "{}={}",
                                c.name,
                                c.value.to_text().unwrap_or_else(|| "NULL".into())
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                    _ => String::new(),
                };
                return Err(Error::MessageTooLarge {
                    table: table.clone(),
                    commit_ts: event.commit_ts(),
                    key,
                    size,
                    limit: Some(self.max_message_bytes),
                });
            }
        }
        Ok(())
    }
}

/// A readable key for errors: the message key, or for key-less protocols the key
/// columns found in the message (canal-json's `pkNames` and `data`).
pub(crate) fn key_text(m: &Message) -> String {
    if !m.key.is_empty() {
        return String::from_utf8_lossy(&m.key).into_owned();
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.value) else {
        return String::new();
    };
    let (Some(names), Some(row)) = (v["pkNames"].as_array(), v["data"][0].as_object()) else {
        return String::new();
    };
    names
        .iter()
        .filter_map(|n| n.as_str())
        .map(|n| {
            format!(
                "{n}={}",
                row.get(n).map(|v| v.to_string()).unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}
