//! Placeholder encoders until the real codecs land.
use crate::error::Result;
use crate::event::Event;
use crate::sink::{Encoder, Message};

/// Canal's flat JSON message.
#[derive(Clone, Debug, Default)]
pub struct CanalJson;
/// Debezium's JSON envelope.
#[derive(Clone, Debug, Default)]
pub struct Debezium;

fn simple(event: &Event, out: &mut Vec<Message>) -> Result<()> {
    let value = match event {
        Event::Row(r) => {
            serde_json::json!({"table": r.table, "commitTs": r.commit_ts, "data": r.new.iter().map(|c| (c.name.clone(), serde_json::to_value(&c.value).unwrap())).collect::<serde_json::Map<_,_>>()})
        }
        Event::Ddl(d) => {
            serde_json::json!({"table": d.table, "commitTs": d.commit_ts, "sql": d.query})
        }
        Event::Resolved(_) => return Ok(()),
    };
    out.push(Message {
        value: serde_json::to_vec(&value).unwrap(),
        commit_ts: event.commit_ts(),
        ..Message::default()
    });
    Ok(())
}

impl Encoder for CanalJson {
    fn encode(&self, event: &Event, out: &mut Vec<Message>) -> Result<()> {
        simple(event, out)
    }
}
impl Encoder for Debezium {
    fn encode(&self, event: &Event, out: &mut Vec<Message>) -> Result<()> {
        simple(event, out)
    }
}
