//! The Kafka sink, with two clients behind it: librdkafka (the default) and kafka-rust.
//!
//! `sink::open("kafka://host:port[,host:port…]/default-topic?…")`, or
//! [`KafkaSink::new`] with a [`KafkaSinkConfig`] that adds routing rules. The URI
//! parameter `kafka-client` picks the client:
//!
//! | | `librdkafka` (default; cargo feature `librdkafka`) | `kafka-rust` (cargo feature `kafka-rust`) |
//! |---|---|---|
//! | Kafka versions | every version librdkafka negotiates (0.10 to 4.x) | 0.8 to 3.9 (protocol v0); 4.x refused with `CDC:ErrKafkaUnsupportedBroker` |
//! | TLS, SASL (PLAIN, SCRAM-SHA-256/512) | yes | no (refused when the sink is built) |
//! | idempotent producer | on with `required-acks=-1` | no |
//! | compression | none, gzip, snappy, lz4, zstd | none, gzip, snappy |
//! | record timestamps | the commit ts's physical milliseconds | none (protocol v0) |
//! | connections | one per broker, requests pipelined by librdkafka | `connections` (default 2), one request in flight each |
//!
//! # What happens where
//!
//! * **Dispatcher threads** encode rows with the protocol's codec, route each message to
//!   a topic and a partition choice ([`router`]), and reject an event whose message is
//!   over `max-message-bytes` with `CDC:ErrMessageTooLarge` before anything is sent
//!   (`encoder.rs`).
//! * **The sink thread** connects when the changefeed starts (so every broker-side
//!   failure is a `RunningError`) and checks the default topic exists
//!   (`CDC:ErrKafkaTopicNotExists`). Batches are gathered between flushes
//!   (`batch-bytes`, `batch-records`, `linger-ms`). A flush resolves each message's
//!   partition, groups messages per topic-partition, keeps each partition's share of one
//!   request under `max-message-bytes`, and hands each request to the client
//!   (`client.rs`: the one seam between the sink and a client). The client answers, per
//!   topic-partition, how many of its messages were confirmed. Only when every message
//!   of the flush was confirmed is the flush done and the engine acknowledges its
//!   batches: at-least-once with `required-acks` -1 or 1, at-most-once with 0.
//!
//! # Faults (both clients)
//!
//! | fault | what the sink does | error when it gives up |
//! |---|---|---|
//! | topic missing from fresh metadata (default topic at start, routed topics at first use) | fails at once | `CDC:ErrKafkaTopicNotExists` |
//! | broker unreachable, restarted, NotLeader, LeaderNotAvailable, RequestTimedOut, a message timed out … | resets the client (fresh connections and metadata), waits (`retry-backoff-ms`, doubling to `retry-backoff-max-ms`), sends again what was not confirmed, from each partition's first unconfirmed message (order kept); up to `max-retry` retries | `CDC:ErrKafkaSendMessage` / `CDC:ErrKafkaNewProducer` |
//! | broker refuses a set as too large (the topic's `max.message.bytes` is smaller than `max-message-bytes`) | sends it again in halves, splitting refused halves further: accepted parts are done; a message refused on its own fails the sink, no retry | `CDC:ErrMessageTooLarge` naming table, commit ts, key, size |
//! | wrong SASL password or mechanism | no retry | `CDC:ErrKafkaAuthFailed` naming mechanism and user |
//! | untrusted, expired or wrong-host certificate; TLS against a PLAINTEXT listener and the reverse | no retry | `CDC:ErrKafkaTLS` saying which |
//! | any other broker error | no retry | `CDC:ErrKafkaSendMessage` |
//! | Kafka ≥ 4.0 with kafka-rust | no retry | `CDC:ErrKafkaUnsupportedBroker` |
//!
//! A resend may write again what the broker had already taken (its confirmation was
//! lost, or a later message of the partition failed): consumers see duplicates, never
//! gaps (docs/ENCODINGS.md says how to drop them). librdkafka's idempotent producer
//! removes the duplicates of its *own* retries within `message-timeout-ms`.
//!
//! # How long a close can take
//!
//! `close` bounds its own wait (`close_timeout`) and then interrupts the sink: a retry
//! loop stops at its next wait, and the librdkafka client stops waiting for delivery
//! reports at once and purges what librdkafka still holds. A call blocked inside the
//! kafka crate cannot be interrupted: see [`kafka_rust`](self#kafka-rust-bounds).
//!
//! # kafka-rust bounds
//!
//! Its sockets have a fixed 120 s read/write timeout, and it connects with the OS's
//! connect timeout (about 2 minutes on Linux) — which the sink avoids by reaching a
//! broker with `dial-timeout-ms` first. Reconnecting opens the `connections` producers
//! one after another, each within that bound, and stops between two when interrupted.
//! So its sink thread exits at worst about 120 s after a stuck request began, plus one
//! backoff. Its TLS path cuts requests over 16 KiB short, so TLS and SASL parameters
//! are refused for it.

mod client;
mod config;
mod encoder;
#[cfg(feature = "kafka-rust")]
mod kafka_rust;
#[cfg(feature = "librdkafka")]
mod librdkafka;
// An ApiVersions v0 probe of our own: kafka-rust's connect bound and version check,
// librdkafka's check that a listener that dropped TLS really is PLAINTEXT.
#[cfg(any(feature = "kafka-rust", feature = "librdkafka"))]
mod probe;
pub mod router;
mod security;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

pub use config::{
    ClientKind, Compression, KafkaSinkConfig, Protocol, RequiredAcks, DEFAULT_ACK_TIMEOUT,
    DEFAULT_BATCH_BYTES, DEFAULT_BATCH_RECORDS, DEFAULT_CLIENT_ID, DEFAULT_CONNECTIONS,
    DEFAULT_DIAL_TIMEOUT, DEFAULT_LINGER, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_RETRY,
    DEFAULT_MESSAGE_TIMEOUT, DEFAULT_RETRY_BACKOFF, DEFAULT_RETRY_BACKOFF_MAX, MAX_CONNECTIONS,
};
pub use encoder::RECORD_OVERHEAD;
pub use router::{PartitionRule, MAX_TOPIC_LEN};
pub use security::{SaslMechanism, Secret};

use crate::codec::{CanalJson, Debezium};
use crate::error::{Error, Result};
use crate::event::TableName;
use crate::message::{Encoder, Message, PartitionChoice};
use crate::sink::{Batch, Batching, Interrupter, Sink};
use client::{Client, Fault, Interrupt, Outcome, Pending, Slice};
use encoder::{key_text, record_size, KafkaEncoder};

/// A topic and one of its partitions.
type TopicPartition = (Arc<str>, i32);

/// Produces to Kafka through the client its config names. See the module docs.
pub struct KafkaSink {
    config: KafkaSinkConfig,
    encoder: Arc<KafkaEncoder>,
    client: Box<dyn Client>,
    /// Messages written since the last flush, with their tables.
    pending: Vec<(TableName, Message)>,
    /// Set by the interrupter; wakes and ends a retry wait or a wait for deliveries.
    interrupt: Arc<Interrupt>,
}

impl KafkaSink {
    /// A sink for `config`. Connects only when started, on the sink thread.
    ///
    /// Checks the settings again (a config built in code may combine settings the
    /// chosen client cannot honour): such a mix is a `CDC:ErrKafkaInvalidConfig` naming
    /// the parameter.
    pub fn new(config: KafkaSinkConfig) -> Result<KafkaSink> {
        config.validate()?;
        let codec: Arc<dyn Encoder> = match config.protocol {
            Protocol::CanalJson => Arc::new(CanalJson::default()),
            Protocol::Debezium => Arc::new(Debezium::default()),
        };
        let encoder = Arc::new(KafkaEncoder {
            codec,
            router: config.router(),
            max_message_bytes: config.max_message_bytes,
        });
        let client = new_client(&config)?;
        Ok(KafkaSink {
            config,
            encoder,
            client,
            pending: Vec::new(),
            interrupt: Interrupt::new(),
        })
    }

    /// `kafka://…` (see [`KafkaSinkConfig::from_uri`]).
    pub(crate) fn from_uri(uri: &crate::sink::uri::SinkUri) -> Result<KafkaSink> {
        KafkaSink::new(KafkaSinkConfig::from_parsed(uri)?)
    }

    /// Waits before retry number `attempt` (1-based), unless interrupted.
    fn back_off(&self, attempt: u32) -> Result<()> {
        let wait = self
            .config
            .retry_backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(20))
            .min(self.config.retry_backoff_max);
        self.interrupt.sleep(wait)
    }

    /// Runs `step` until it succeeds, resetting the client and backing off between
    /// tries, up to `max-retry` retries; `give_up` makes the final error.
    fn with_retry<T>(
        &mut self,
        mut step: impl FnMut(&mut dyn Client, &Interrupt) -> Result<std::result::Result<T, String>>,
        give_up: fn(String) -> Error,
    ) -> Result<T> {
        let mut attempt = 0;
        loop {
            self.interrupt.check()?;
            let why = match self.client.connect(&self.interrupt)? {
                Err(why) => why,
                Ok(()) => match step(&mut *self.client, &self.interrupt)? {
                    Ok(value) => return Ok(value),
                    Err(why) => why,
                },
            };
            self.client.reset();
            if attempt >= self.config.max_retry {
                return Err(give_up(format!("{why}; gave up after {attempt} retries")));
            }
            attempt += 1;
            log::warn!(
                "kafka sink: {why}; retry {attempt} of {}",
                self.config.max_retry
            );
            self.back_off(attempt)?;
        }
    }

    /// The partition count of `topic`. A topic the client's metadata does not know is
    /// looked up once more after a reset (fresh metadata) before it counts as missing.
    fn partition_count(&mut self, topic: &Arc<str>) -> Result<i32> {
        let new_producer = |reason| Error::KafkaNewProducer { reason };
        if let Some(n) = self.with_retry(|c, i| c.partitions(topic, i), new_producer)? {
            return Ok(n);
        }
        self.client.reset();
        self.with_retry(|c, i| c.partitions(topic, i), new_producer)?
            .ok_or_else(|| Error::KafkaTopicNotExists {
                topic: topic.to_string(),
            })
    }

    /// Where each pending message goes: (topic, partition, index into `pending`), one
    /// entry per partition for a message sent to all of them.
    fn resolve(&mut self, pending: &Pending) -> Result<Vec<(Arc<str>, i32, usize)>> {
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
    fn send_slices(&mut self, pending: &Pending, mut slices: Vec<Slice>) -> Result<()> {
        let mut attempt = 0;
        loop {
            self.interrupt.check()?;
            let why = match self.client.connect(&self.interrupt)? {
                Err(why) => why,
                Ok(()) => match self.try_send(pending, &slices)? {
                    None => return Ok(()),
                    Some((why, failed)) => {
                        slices = failed;
                        why
                    }
                },
            };
            // Whatever failed, the next attempt starts afresh.
            self.client.reset();
            if attempt >= self.config.max_retry {
                return Err(Error::KafkaSendMessage {
                    reason: format!("{why}; gave up after {attempt} retries"),
                });
            }
            attempt += 1;
            log::warn!(
                "kafka sink: {why}; retry {attempt} of {}",
                self.config.max_retry
            );
            self.back_off(attempt)?;
            // A topic deleted meanwhile is not worth retrying.
            let topics: Vec<Arc<str>> = slices.iter().map(|s| Arc::clone(&s.topic)).collect();
            for topic in topics {
                self.partition_count(&topic)?;
            }
        }
    }

    /// One request. `Ok(None)`: every message confirmed. `Ok(Some((why, failed)))`:
    /// retry `failed` (per partition, from its first unconfirmed message). `Err`: give
    /// up.
    fn try_send(
        &mut self,
        pending: &Pending,
        slices: &[Slice],
    ) -> Result<Option<(String, Vec<Slice>)>> {
        let mut outcomes = self
            .client
            .send(pending, slices, &self.interrupt)?
            .into_iter();
        debug_assert_eq!(outcomes.len(), slices.len(), "one outcome per slice");
        let mut failed = Vec::new();
        let mut why = Vec::new();
        for slice in slices {
            // A slice without an outcome was not confirmed: it goes again.
            let outcome = outcomes.next().unwrap_or_else(|| {
                Outcome::failed(Fault::Retry(format!(
                    "{}/{}: no answer from the client",
                    slice.topic, slice.partition
                )))
            });
            let rest = Slice {
                idxs: slice.idxs[outcome.written.min(slice.idxs.len())..].to_vec(),
                ..slice.clone()
            };
            match outcome.fault {
                None => {}
                Some(Fault::Fatal(e)) => return Err(e),
                Some(Fault::Retry(reason)) => {
                    why.push(reason);
                    failed.push(rest);
                }
                Some(Fault::TooLarge) => {
                    if let Some(rest) = self.isolate_oversize(pending, rest)? {
                        why.push(format!(
                            "{}/{}: a part of a split set failed",
                            rest.topic, rest.partition
                        ));
                        failed.push(rest);
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

    /// The broker refused a partition's set as too large (Kafka checks a whole set
    /// against the topic's `max.message.bytes`): send it again in halves, in order,
    /// splitting a refused half further. `Ok(None)`: every part was confirmed.
    /// `Ok(Some(rest))`: a part failed in a retryable way; `rest` (that part's
    /// unconfirmed messages and every later part, in order) goes back to the retry loop.
    /// `Err`: a single message was refused on its own (named as
    /// [`Error::MessageTooLarge`]), or a part failed for good.
    fn isolate_oversize(&mut self, pending: &Pending, slice: Slice) -> Result<Option<Slice>> {
        let Slice {
            topic, partition, ..
        } = &slice;
        // Last pushed is sent first: keep send order.
        let mut stack = vec![slice.idxs.clone()];
        let rest = |part: &[usize], stack: &[Vec<usize>]| Slice {
            idxs: part
                .iter()
                .copied()
                .chain(stack.iter().rev().flatten().copied())
                .collect(),
            ..slice.clone()
        };
        while let Some(part) = stack.pop() {
            let one = Slice {
                idxs: part.clone(),
                ..slice.clone()
            };
            let outcome = self
                .client
                .send(pending, std::slice::from_ref(&one), &self.interrupt)?
                .pop()
                .unwrap_or_else(|| {
                    Outcome::failed(Fault::Retry(format!("{topic}/{partition}: no answer")))
                });
            let unsent = &part[outcome.written.min(part.len())..];
            match outcome.fault {
                None => {}
                Some(Fault::TooLarge) if unsent.len() == 1 => {
                    let (table, m) = &pending[unsent[0]];
                    return Err(Error::MessageTooLarge {
                        table: table.clone(),
                        commit_ts: m.commit_ts,
                        key: key_text(m),
                        size: record_size(m),
                        limit: None,
                    });
                }
                Some(Fault::TooLarge) => {
                    let (a, b) = unsent.split_at(unsent.len() / 2);
                    stack.push(b.to_vec());
                    stack.push(a.to_vec());
                }
                Some(Fault::Retry(_)) => return Ok(Some(rest(unsent, &stack))),
                Some(Fault::Fatal(e)) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// The client `config` names, if this build has it.
fn new_client(config: &KafkaSinkConfig) -> Result<Box<dyn Client>> {
    match config.client {
        #[cfg(feature = "librdkafka")]
        ClientKind::Librdkafka => Ok(Box::new(librdkafka::LibrdkafkaClient::new(config.clone())?)),
        #[cfg(feature = "kafka-rust")]
        ClientKind::KafkaRust => Ok(Box::new(kafka_rust::KafkaRustClient::new(config.clone()))),
        #[allow(unreachable_patterns)]
        other => Err(Error::KafkaInvalidConfig {
            param: "kafka-client".into(),
            reason: format!(
                "{}: this build of changefeed has no such client (cargo feature {:?})",
                other.name(),
                other.name()
            ),
        }),
    }
}

impl Sink for KafkaSink {
    fn encoder(&self) -> Arc<dyn Encoder> {
        Arc::clone(&self.encoder) as Arc<dyn Encoder>
    }

    fn start(&mut self) -> Result<()> {
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
        let limit = self.client.request_share(self.config.max_message_bytes);
        let mut queues: Vec<(TopicPartition, VecDeque<usize>)> = per_partition
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
        // Each request takes, per partition, what fits in the client's share of a request
        // (kafka-rust: max-message-bytes; librdkafka: all of it).
        while queues.iter().any(|(_, q)| !q.is_empty()) {
            let mut slices = Vec::new();
            for ((topic, partition), queue) in &mut queues {
                let mut share = 0;
                let mut idxs = Vec::new();
                while let Some(&i) = queue.front() {
                    let size = record_size(&pending[i].1);
                    if !idxs.is_empty() && share + size > limit {
                        break;
                    }
                    share += size;
                    idxs.push(i);
                    queue.pop_front();
                }
                if !idxs.is_empty() {
                    slices.push(Slice {
                        topic: Arc::clone(topic),
                        partition: *partition,
                        idxs,
                    });
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
        Some(Box::new(move || interrupt.set()))
    }
}
