//! The Kafka sink, on the `kafka` crate (kafka-rust 0.10, protocol v0: Kafka up to 3.9).
//!
//! `sink::open("kafka://host:port[,host:port…]/default-topic?…")`, or
//! [`KafkaSink::new`] with a [`KafkaSinkConfig`] that adds routing rules.
//!
//! # What happens where
//!
//! * **Dispatcher threads** encode rows with the protocol's codec, route each message to
//!   a topic and a partition choice ([`router`]), and reject an event whose message is
//!   over `max-message-bytes` with `CDC:ErrMessageTooLarge` before anything is sent.
//! * **The sink thread** connects when the changefeed starts (so every broker-side
//!   failure is a `RunningError`): it reaches a broker within `dial-timeout-ms`, refuses
//!   Kafka ≥ 4.0 (`CDC:ErrKafkaUnsupportedBroker`), creates a producer, and checks the
//!   default topic exists (`CDC:ErrKafkaTopicNotExists`). Batches are gathered between
//!   flushes (`batch-bytes`, `batch-records`, `linger-ms`). A flush groups messages per
//!   topic-partition, keeps each partition's share of one request under
//!   `max-message-bytes`, splits each request by partition across `connections`
//!   producers and sends the parts at once (the crate's client waits for each answer:
//!   one connection is one request in flight), and checks every partition's
//!   confirmation: an `Ok` from `send_all` alone means nothing. A topic-partition
//!   always goes through the same connection, and the next request waits for every
//!   part, so per-partition order is kept (with `required-acks` 0 too: one socket per
//!   partition). Only when every partition confirmed is the flush done, and the engine
//!   acknowledges its batches (at-least-once with `required-acks` -1 or 1; at-most-once
//!   with 0).
//!
//! # Faults
//!
//! | fault | what the sink does | error when it gives up |
//! |---|---|---|
//! | topic missing from fresh metadata (default topic at start, routed topics at first use) | fails at once | `CDC:ErrKafkaTopicNotExists` |
//! | I/O error, broker restart, NotLeader, LeaderNotAvailable, RequestTimedOut, … (on any of the connections) | drops every producer (the crate never reconnects nor refreshes metadata), waits (`retry-backoff-ms`, doubling to `retry-backoff-max-ms`), reconnects, resends what was not confirmed; up to `max-retry` retries | `CDC:ErrKafkaSendMessage` / `CDC:ErrKafkaNewProducer` |
//! | broker rejects a partition's set as too large (Kafka checks the whole set against the topic's `max.message.bytes`) | resends it in halves, splitting rejected halves further: accepted parts are done; a message rejected on its own fails the sink, no retry. Set `max-message-bytes` to the topic's limit to avoid the splitting | `CDC:ErrMessageTooLarge` naming table, commit ts, key, size |
//! | any other broker error code | no retry | `CDC:ErrKafkaSendMessage` |
//! | Kafka ≥ 4.0 | no retry | `CDC:ErrKafkaUnsupportedBroker` |
//!
//! A resend after an I/O error may write again what the broker had already taken
//! (the crate loses confirmations of earlier brokers when a later one fails): consumers
//! see duplicates, never gaps (docs/ENCODINGS.md says how to drop them).
//!
//! # How long a close can take
//!
//! `close` bounds its own wait (`close_timeout`) and then interrupts the sink: a retry
//! loop stops at its next wait. A call blocked inside the kafka crate cannot be
//! interrupted: its sockets have a fixed 120 s read/write timeout, and it connects with
//! the OS's connect timeout (about 2 minutes on Linux) — which the sink avoids by
//! reaching a broker with `dial-timeout-ms` first. Reconnecting opens the `connections`
//! producers one after another, each within that bound, and stops between two when
//! interrupted. So the sink thread exits at worst about 120 s after a stuck request
//! began (the requests of one flush run at once), plus one backoff.
//!
//! PLAINTEXT only: the crate's TLS path cuts requests over 16 KiB short, so TLS and SASL
//! parameters are rejected.

mod config;
mod probe;
mod producer;
pub mod router;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};
use kafka::error::KafkaCode;
use kafka::producer::Record;

pub use config::{
    Compression, KafkaSinkConfig, Protocol, RequiredAcks, DEFAULT_ACK_TIMEOUT, DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_RECORDS, DEFAULT_CLIENT_ID, DEFAULT_CONNECTIONS, DEFAULT_DIAL_TIMEOUT,
    DEFAULT_LINGER, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_RETRY, DEFAULT_RETRY_BACKOFF,
    DEFAULT_RETRY_BACKOFF_MAX, MAX_CONNECTIONS, MAX_TOPIC_LEN,
};
pub use router::PartitionRule;

use crate::codec::{CanalJson, Debezium};
use crate::error::{Error, Result};
use crate::event::{Event, TableName};
use crate::sink::{Batch, Batching, Encoder, Interrupter, Message, PartitionChoice, Sink};
use producer::{Connection, OpenError};
use router::Router;

/// Bytes a message takes in a protocol v0 message set besides its key and value
/// (offset, size, CRC, magic, attributes, key and value lengths).
pub const RECORD_OVERHEAD: usize = 26;

/// The bytes `m` takes in a protocol v0 message set: what `max-message-bytes` bounds.
fn record_size(m: &Message) -> usize {
    m.key.len() + m.value.len() + RECORD_OVERHEAD
}

/// The records of `idxs` (indices into `pending`), all for one topic-partition.
fn records<'a>(
    pending: &'a [(TableName, Message)],
    topic: &'a str,
    partition: i32,
    idxs: &'a [usize],
) -> impl Iterator<Item = Record<'a, &'a [u8], &'a [u8]>> + 'a {
    idxs.iter().map(move |&i| {
        let m = &pending[i].1;
        Record::from_key_value(topic, &m.key[..], &m.value[..]).with_partition(partition)
    })
}

/// A topic and one of its partitions.
type TopicPartition = (Arc<str>, i32);
/// The messages of one partition in one request: indices into the pending messages.
type Slice = (Arc<str>, i32, Vec<usize>);

/// Produces to Kafka. See the module docs.
pub struct KafkaSink {
    config: KafkaSinkConfig,
    encoder: Arc<KafkaEncoder>,
    /// `connections` producers, or none (before the first connect and after a
    /// retryable failure). The first one's metadata routes messages.
    connections: Vec<Connection>,
    /// Messages written since the last flush, with their tables.
    pending: Vec<(TableName, Message)>,
    /// Set by the interrupter; wakes and ends a retry wait.
    interrupt: Arc<Interrupt>,
}

struct Interrupt {
    flag: AtomicBool,
    wake_tx: Sender<()>,
    wake_rx: Receiver<()>,
}

impl KafkaSink {
    /// A sink for `config`. Connects only when started, on the sink thread.
    pub fn new(config: KafkaSinkConfig) -> KafkaSink {
        let codec: Arc<dyn Encoder> = match config.protocol {
            Protocol::CanalJson => Arc::new(CanalJson::default()),
            Protocol::Debezium => Arc::new(Debezium::default()),
        };
        let encoder = Arc::new(KafkaEncoder {
            codec,
            router: config.router(),
            max_message_bytes: config.max_message_bytes,
        });
        let (wake_tx, wake_rx) = bounded(1);
        KafkaSink {
            config,
            encoder,
            connections: Vec::new(),
            pending: Vec::new(),
            interrupt: Arc::new(Interrupt {
                flag: AtomicBool::new(false),
                wake_tx,
                wake_rx,
            }),
        }
    }

    /// `kafka://…` (see [`KafkaSinkConfig::from_uri`]).
    pub(crate) fn from_uri(uri: &crate::sink::uri::SinkUri) -> Result<KafkaSink> {
        Ok(KafkaSink::new(KafkaSinkConfig::from_parsed(uri)?))
    }

    fn interrupted(&self) -> Result<()> {
        if self.interrupt.flag.load(Ordering::Acquire) {
            return Err(Error::KafkaSendMessage {
                reason: "interrupted: the changefeed is closing".to_string(),
            });
        }
        Ok(())
    }

    /// Waits before retry number `attempt` (1-based), unless interrupted.
    fn back_off(&self, attempt: u32) -> Result<()> {
        let wait = self
            .config
            .retry_backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(20))
            .min(self.config.retry_backoff_max);
        let _ = self.interrupt.wake_rx.recv_timeout(wait);
        self.interrupted()
    }

    /// Opens the connections if there are none. `Ok(Err(reason))` is a retryable
    /// failure (and leaves none open).
    fn connect(&mut self) -> Result<std::result::Result<(), String>> {
        if !self.connections.is_empty() {
            return Ok(Ok(()));
        }
        let mut opened = Vec::with_capacity(self.config.connections);
        for _ in 0..self.config.connections {
            // Each open may take up to the dial timeout: a close need not wait for all.
            self.interrupted()?;
            match Connection::open(&self.config) {
                Ok(c) => opened.push(c),
                Err(OpenError::Fatal(e)) => return Err(e),
                Err(OpenError::Retry(reason)) => return Ok(Err(reason)),
            }
        }
        self.connections = opened;
        Ok(Ok(()))
    }

    /// The partition count of `topic` in the routing metadata, if it knows the topic.
    fn known_partitions(&self, topic: &str) -> Option<i32> {
        self.connections.first().and_then(|c| c.partitions(topic))
    }

    /// Connects, retrying up to `max-retry` times.
    fn connect_with_retry(&mut self) -> Result<()> {
        let mut attempt = 0;
        loop {
            self.interrupted()?;
            match self.connect()? {
                Ok(()) => return Ok(()),
                Err(reason) if attempt >= self.config.max_retry => {
                    return Err(Error::KafkaNewProducer {
                        reason: format!("{reason}; gave up after {attempt} retries"),
                    })
                }
                Err(reason) => {
                    attempt += 1;
                    log::warn!(
                        "kafka sink: {reason}; retry {attempt} of {}",
                        self.config.max_retry
                    );
                    self.back_off(attempt)?;
                }
            }
        }
    }

    /// The partition count of `topic`, reconnecting once for fresh metadata if the
    /// current producer does not know it.
    fn partition_count(&mut self, topic: &Arc<str>) -> Result<i32> {
        self.connect_with_retry()?;
        if let Some(n) = self.known_partitions(topic) {
            return Ok(n);
        }
        // The crate loads metadata once per producer: fresh ones see new topics.
        self.connections.clear();
        self.connect_with_retry()?;
        self.known_partitions(topic)
            .ok_or_else(|| Error::KafkaTopicNotExists {
                topic: topic.to_string(),
            })
    }

    /// Where each pending message goes: (topic, partition, index into `pending`), one
    /// entry per partition for a message sent to all of them.
    fn resolve(&mut self, pending: &[(TableName, Message)]) -> Result<Vec<(Arc<str>, i32, usize)>> {
        let default_topic: Arc<str> = Arc::from(self.config.default_topic.as_str());
        let mut counts: BTreeMap<Arc<str>, i32> = BTreeMap::new();
        let mut targets = Vec::with_capacity(pending.len());
        for (i, (_, m)) in pending.iter().enumerate() {
            let topic = m
                .route
                .topic
                .clone()
                .unwrap_or_else(|| Arc::clone(&default_topic));
            let n = match counts.get(&topic) {
                Some(n) => *n,
                None => {
                    let n = self.partition_count(&topic)?;
                    counts.insert(Arc::clone(&topic), n);
                    n
                }
            };
            match m.route.partition {
                PartitionChoice::Hash(h) => targets.push((topic, (h % n as u64) as i32, i)),
                PartitionChoice::Fixed(p) => targets.push((topic, p.clamp(0, n - 1), i)),
                PartitionChoice::All => {
                    for p in 0..n {
                        targets.push((Arc::clone(&topic), p, i));
                    }
                }
            }
        }
        Ok(targets)
    }

    /// Sends one request's worth: `slices` holds, per topic-partition, the indices of
    /// its messages in order. Retries what was not confirmed.
    fn send_slices(
        &mut self,
        pending: &[(TableName, Message)],
        mut slices: Vec<Slice>,
    ) -> Result<()> {
        let mut attempt = 0;
        loop {
            self.interrupted()?;
            let failure = match self.connect()? {
                Err(reason) => reason,
                Ok(()) => match self.try_send(pending, &slices)? {
                    None => return Ok(()),
                    Some((reason, failed)) => {
                        slices = failed;
                        reason
                    }
                },
            };
            // Whatever failed, the next attempt starts with fresh producers.
            self.connections.clear();
            if attempt >= self.config.max_retry {
                return Err(Error::KafkaSendMessage {
                    reason: format!("{failure}; gave up after {attempt} retries"),
                });
            }
            attempt += 1;
            log::warn!(
                "kafka sink: {failure}; retry {attempt} of {}",
                self.config.max_retry
            );
            self.back_off(attempt)?;
            // A topic deleted meanwhile is not worth retrying.
            for (topic, _, _) in &slices {
                self.connect_with_retry()?;
                if self.known_partitions(topic).is_none() {
                    return Err(Error::KafkaTopicNotExists {
                        topic: topic.to_string(),
                    });
                }
            }
        }
    }

    /// One request's worth, split across the connections ([`spread`]) and sent on all
    /// of them at once. `Ok(None)`: every partition confirmed. `Ok(Some((why,
    /// failed)))`: retry `failed`. `Err`: give up.
    fn try_send(
        &mut self,
        pending: &[(TableName, Message)],
        slices: &[Slice],
    ) -> Result<Option<(String, Vec<Slice>)>> {
        let parts = spread(slices, self.connections.len());
        let requests: Vec<Vec<_>> = parts
            .iter()
            .map(|part| {
                part.iter()
                    .flat_map(|&s| {
                        let (topic, partition, idxs) = &slices[s];
                        records(pending, topic, *partition, idxs)
                    })
                    .collect()
            })
            .collect();
        let answers = producer::send_each(&mut self.connections, &requests);
        drop(requests);
        debug_assert_eq!(answers.len(), parts.len(), "one answer per part");
        let acks = self.config.required_acks;
        let mut failed = Vec::new();
        let mut why = Vec::new();
        for (connection, (part, answer)) in parts.iter().zip(answers).enumerate() {
            let confirms = match answer {
                Ok(confirms) => confirms,
                Err(e) => match producer::code_of(&e) {
                    Some(code) if !producer::retryable(code) => {
                        return Err(Error::KafkaSendMessage {
                            reason: format!("the broker refused the request: {code:?}"),
                        })
                    }
                    _ => {
                        why.push(producer::describe(&e));
                        failed.extend(part.iter().map(|&s| slices[s].clone()));
                        continue;
                    }
                },
            };
            for (topic, partition, idxs) in part.iter().map(|&s| &slices[s]) {
                let code = match answered(&confirms, topic, *partition, acks) {
                    Answered::Written => continue,
                    Answered::Unconfirmed => {
                        why.push(format!("{topic}/{partition}: no confirmation"));
                        failed.push((Arc::clone(topic), *partition, idxs.clone()));
                        continue;
                    }
                    Answered::Refused(code) => code,
                };
                match code {
                    KafkaCode::MessageSizeTooLarge => {
                        // Kafka checks a partition's whole set against the topic's
                        // limit: send it in halves; only a message rejected alone is
                        // an error.
                        if let Some(rest) =
                            self.isolate_oversize(pending, topic, *partition, idxs, connection)?
                        {
                            why.push(format!("{topic}/{partition}: a part of a split set failed"));
                            failed.push((Arc::clone(topic), *partition, rest));
                        }
                    }
                    code if producer::retryable(code) => {
                        why.push(format!("{topic}/{partition}: {code:?}"));
                        failed.push((Arc::clone(topic), *partition, idxs.clone()));
                    }
                    code => {
                        return Err(Error::KafkaSendMessage {
                            reason: format!(
                                "topic {topic} partition {partition}: the broker answered {code:?}"
                            ),
                        })
                    }
                }
            }
        }
        if failed.is_empty() {
            Ok(None)
        } else {
            Ok(Some((why.join(", "), failed)))
        }
    }

    /// The broker rejected a partition's set as too large (Kafka checks the whole set
    /// against the topic's `max.message.bytes`): send it again in halves, in order,
    /// splitting a rejected half further. `Ok(None)`: every part was confirmed.
    /// `Ok(Some(rest))`: a part failed in a retryable way; `rest` (that part and every
    /// later one, in order) goes back to the retry loop. `Err`: a single message was
    /// rejected on its own (named as [`Error::MessageTooLarge`]), or a part failed for
    /// good.
    fn isolate_oversize(
        &mut self,
        pending: &[(TableName, Message)],
        topic: &Arc<str>,
        partition: i32,
        idxs: &[usize],
        // The connection that carried the set and answered for it.
        connection: usize,
    ) -> Result<Option<Vec<usize>>> {
        let acks = self.config.required_acks;
        // Last pushed is sent first: keep send order.
        let mut stack = vec![idxs.to_vec()];
        let rest = |part: Vec<usize>, stack: &[Vec<usize>]| -> Vec<usize> {
            part.into_iter()
                .chain(stack.iter().rev().flatten().copied())
                .collect()
        };
        while let Some(part) = stack.pop() {
            let records: Vec<_> = records(pending, topic, partition, &part).collect();
            let Some(producer) = self.connections.get_mut(connection) else {
                return Ok(Some(rest(part, &stack)));
            };
            let code = match producer.send(&records) {
                Ok(confirms) => match answered(&confirms, topic, partition, acks) {
                    Answered::Written => None,
                    Answered::Refused(code) => Some(code),
                    // Not written: back to the retry loop.
                    Answered::Unconfirmed => return Ok(Some(rest(part, &stack))),
                },
                Err(e) => match producer::code_of(&e) {
                    Some(code) => Some(code),
                    None => return Ok(Some(rest(part, &stack))),
                },
            };
            drop(records);
            match code {
                None => {}
                Some(KafkaCode::MessageSizeTooLarge) if part.len() == 1 => {
                    let (table, m) = &pending[part[0]];
                    return Err(Error::MessageTooLarge {
                        table: table.clone(),
                        commit_ts: m.commit_ts,
                        key: key_text(m),
                        size: record_size(m),
                        limit: None,
                    });
                }
                Some(KafkaCode::MessageSizeTooLarge) => {
                    let (a, b) = part.split_at(part.len() / 2);
                    stack.push(b.to_vec());
                    stack.push(a.to_vec());
                }
                Some(code) if producer::retryable(code) => return Ok(Some(rest(part, &stack))),
                Some(code) => {
                    return Err(Error::KafkaSendMessage {
                        reason: format!(
                            "topic {topic} partition {partition}: the broker answered {code:?}"
                        ),
                    })
                }
            }
        }
        Ok(None)
    }
}

/// How the broker answered for one topic-partition of a request.
enum Answered {
    Written,
    Refused(KafkaCode),
    /// Not in the confirmations: not written.
    Unconfirmed,
}

/// What `confirms` says of `topic`/`partition`. With `required-acks` 0 the broker
/// confirms nothing, so a partition it does not mention counts as written; otherwise it
/// was not written.
fn answered(
    confirms: &producer::Confirmations,
    topic: &str,
    partition: i32,
    acks: RequiredAcks,
) -> Answered {
    match confirms
        .iter()
        .find(|((t, p), _)| t == topic && *p == partition)
    {
        Some((_, Ok(()))) => Answered::Written,
        Some((_, Err(code))) => Answered::Refused(*code),
        None if acks == RequiredAcks::None => Answered::Written,
        None => Answered::Unconfirmed,
    }
}

/// The connection a topic-partition always goes through, of `connections`: the same one
/// for the sink's whole life, so that one partition's requests share one socket. With
/// acks, the next request waits for this one's confirmations anyway; with `acks=0`
/// nothing is confirmed, and only a single socket keeps the partition's writes in
/// order at the broker.
fn connection_of(topic: &str, partition: i32, connections: usize) -> usize {
    use std::hash::{DefaultHasher, Hash, Hasher};
    // Partitions of one topic round-robin; each topic starts at its own offset.
    let mut h = DefaultHasher::new();
    topic.hash(&mut h);
    let start = h.finish() as usize;
    start.wrapping_add(partition.max(0) as usize) % connections.max(1)
}

/// Splits one request's slices across `connections` connections: the indices of the
/// slices each sends ([`connection_of`] their partition), each part in the slices'
/// order. A slice is one partition's whole share of the request.
fn spread(slices: &[Slice], connections: usize) -> Vec<Vec<usize>> {
    let mut parts = vec![Vec::new(); connections.max(1)];
    for (s, (topic, partition, _)) in slices.iter().enumerate() {
        parts[connection_of(topic, *partition, connections)].push(s);
    }
    parts
}

/// A readable key for errors: the message key, or for key-less protocols the key
/// columns found in the message (canal-json's `pkNames` and `data`).
fn key_text(m: &Message) -> String {
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

impl Sink for KafkaSink {
    fn encoder(&self) -> Arc<dyn Encoder> {
        Arc::clone(&self.encoder) as Arc<dyn Encoder>
    }

    fn start(&mut self) -> Result<()> {
        self.connect_with_retry()?;
        let topic: Arc<str> = Arc::from(self.config.default_topic.as_str());
        self.partition_count(&topic)?;
        Ok(())
    }

    fn write(&mut self, batch: &mut Batch) -> Result<()> {
        let table = batch.table().clone();
        self.pending.extend(
            batch
                .take_messages()
                .into_iter()
                .map(|m| (table.clone(), m)),
        );
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let targets = self.resolve(&pending)?;
        // Per topic-partition, in order; BTreeMap keeps requests deterministic.
        let mut per_partition: BTreeMap<TopicPartition, Vec<usize>> = BTreeMap::new();
        for (topic, partition, i) in targets {
            per_partition.entry((topic, partition)).or_default().push(i);
        }
        let limit = self.config.max_message_bytes;
        let mut queues: Vec<(TopicPartition, VecDeque<usize>)> = per_partition
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
        // Each request takes, per partition, what fits under max-message-bytes.
        while queues.iter().any(|(_, q)| !q.is_empty()) {
            let mut slices = Vec::new();
            for ((topic, partition), queue) in &mut queues {
                let mut share = 0;
                let mut idxs = Vec::new();
                while let Some(&i) = queue.front() {
                    let m = &pending[i].1;
                    let size = record_size(m);
                    if !idxs.is_empty() && share + size > limit {
                        break;
                    }
                    share += size;
                    idxs.push(i);
                    queue.pop_front();
                }
                if !idxs.is_empty() {
                    slices.push((Arc::clone(topic), *partition, idxs));
                }
            }
            self.send_slices(&pending, slices)?;
        }
        Ok(())
    }

    fn batching(&self) -> Batching {
        Batching {
            max_bytes: self.config.batch_bytes,
            max_messages: self.config.batch_records,
            linger: self.config.linger,
        }
    }

    fn interrupter(&self) -> Option<Interrupter> {
        let interrupt = Arc::clone(&self.interrupt);
        Some(Box::new(move || {
            interrupt.flag.store(true, Ordering::Release);
            let _ = interrupt.wake_tx.try_send(());
        }))
    }
}

/// The encoder the dispatchers use: the protocol's codec, then routing, then the size
/// check.
struct KafkaEncoder {
    codec: Arc<dyn Encoder>,
    router: Router,
    max_message_bytes: usize,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One slice per partition `0..partitions` of each of `topics`.
    fn slices_of(topics: &[&str], partitions: i32) -> Vec<Slice> {
        let mut slices = Vec::new();
        for t in topics {
            for p in 0..partitions {
                slices.push((Arc::from(*t), p, vec![slices.len()]));
            }
        }
        slices
    }

    #[test]
    fn spread_sends_each_slice_once_in_order_and_a_partition_always_on_one_connection() {
        let slices = slices_of(&["a", "b"], 6);
        let parts = spread(&slices, 3);
        assert_eq!(parts.len(), 3);
        let mut all: Vec<usize> = parts.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..12).collect::<Vec<_>>(), "every slice exactly once");
        for part in &parts {
            assert!(part.windows(2).all(|w| w[0] < w[1]), "in order: {part:?}");
            // A topic's partitions round-robin: 6 partitions over 3 connections, 2 each.
            for t in ["a", "b"] {
                let n = part.iter().filter(|&&s| &*slices[s].0 == t).count();
                assert_eq!(n, 2, "balanced: {parts:?}");
            }
        }
        // Another request with only some of the partitions: each on the same connection.
        let some: Vec<Slice> = slices.iter().filter(|s| s.1 % 2 == 1).cloned().collect();
        for (c, part) in spread(&some, 3).iter().enumerate() {
            for &s in part {
                let (t, p, _) = &some[s];
                let before = parts
                    .iter()
                    .position(|q| q.iter().any(|&i| slices[i].0 == *t && slices[i].1 == *p));
                assert_eq!(before, Some(c), "{t}/{p} moved");
            }
        }
    }

    #[test]
    fn a_partition_missing_from_the_confirmations_was_written_only_with_acks_0() {
        let confirms: producer::Confirmations = vec![
            (("t".to_string(), 0), Ok(())),
            (("t".to_string(), 1), Err(KafkaCode::NotLeaderForPartition)),
        ];
        let all = RequiredAcks::All;
        assert!(matches!(
            answered(&confirms, "t", 0, all),
            Answered::Written
        ));
        assert!(matches!(
            answered(&confirms, "t", 1, all),
            Answered::Refused(KafkaCode::NotLeaderForPartition)
        ));
        assert!(matches!(
            answered(&confirms, "t", 2, all),
            Answered::Unconfirmed
        ));
        assert!(matches!(
            answered(&confirms, "u", 0, RequiredAcks::One),
            Answered::Unconfirmed
        ));
        assert!(matches!(
            answered(&Vec::new(), "t", 2, RequiredAcks::None),
            Answered::Written
        ));
    }

    #[test]
    fn spread_over_one_connection_is_one_request_in_order() {
        let slices = slices_of(&["t"], 4);
        assert_eq!(spread(&slices, 1), vec![vec![0, 1, 2, 3]]);
        let parts = spread(&slices_of(&["t"], 2), 4);
        assert_eq!(parts.iter().filter(|p| p.is_empty()).count(), 2);
    }
}
