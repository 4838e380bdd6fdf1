//! One producer connection of the `kafka` crate, wrapped for what it does not do by
//! itself.
//!
//! * It connects without a timeout: [`Connection::open`] first reaches a broker with the
//!   sink's dial timeout (and checks it still speaks protocol v0, see `probe`).
//! * It never reconnects after a broker restart and never refreshes metadata: on any
//!   retryable failure the sink drops the producer and opens a new one.
//! * `Producer::send` asserts on the response shape and can panic: only `send_all` is
//!   used, and every partition confirmation it returns is checked.
//! * It has one request in flight per producer, and waits for each answer:
//!   [`send_each`] sends one request per connection at once, each on a thread of its
//!   own for the length of the call.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread;

use kafka::client::ProduceConfirm;
use kafka::error::KafkaCode;
use kafka::producer::{Compression as KCompression, Producer, Record, RequiredAcks as KAcks};

use crate::error::Error;
use crate::sink::kafka::config::{Compression, KafkaSinkConfig, RequiredAcks};
use crate::sink::kafka::probe;

/// Per (topic, partition) of a request: `Ok`, or the code the broker answered.
pub(crate) type Confirmations = Vec<((String, i32), std::result::Result<(), KafkaCode>)>;

/// One producer and the metadata it loaded when created.
pub(crate) struct Connection {
    producer: Producer,
    /// Partition count per topic, as the metadata had it.
    partitions: HashMap<Arc<str>, i32>,
}

/// Why opening a connection failed.
pub(crate) enum OpenError {
    /// Retry later: no broker reachable, or the producer could not be created.
    Retry(String),
    /// Give up: the broker is Kafka 4 or newer.
    Fatal(Error),
}

impl Connection {
    /// Reaches a broker within the dial timeout, checks its protocol, and creates a
    /// producer (which loads the cluster's metadata once).
    pub fn open(config: &KafkaSinkConfig) -> std::result::Result<Connection, OpenError> {
        let mut reached = None;
        let mut failures = Vec::new();
        for broker in &config.brokers {
            match probe::probe(broker, config.dial_timeout) {
                Ok(versions) => {
                    reached = Some((broker, versions));
                    break;
                }
                Err(e) => failures.push(format!("{broker}: {e}")),
            }
        }
        let Some((broker, versions)) = reached else {
            return Err(OpenError::Retry(format!(
                "no broker reachable (dial timeout {:?}): {}",
                config.dial_timeout,
                failures.join("; ")
            )));
        };
        if versions.rejects_v0() {
            return Err(OpenError::Fatal(Error::KafkaUnsupportedBroker {
                broker: broker.clone(),
                detail: format!(
                    "its lowest Fetch version is {} (Kafka 3.x and older accept 0)",
                    versions.fetch_min.unwrap_or_default()
                ),
            }));
        }
        let producer = Producer::from_hosts(config.brokers.clone())
            .with_client_id(config.client_id.clone())
            .with_ack_timeout(config.ack_timeout)
            .with_required_acks(match config.required_acks {
                RequiredAcks::All => KAcks::All,
                RequiredAcks::One => KAcks::One,
                RequiredAcks::None => KAcks::None,
            })
            .with_compression(match config.compression {
                Compression::None => KCompression::NONE,
                Compression::Gzip => KCompression::GZIP,
                Compression::Snappy => KCompression::SNAPPY,
                // Refused when the sink is built (KafkaSinkConfig::validate).
                Compression::Lz4 | Compression::Zstd => {
                    return Err(OpenError::Fatal(Error::KafkaInvalidConfig {
                        param: "compression".into(),
                        reason: "lz4 and zstd need the librdkafka client".into(),
                    }))
                }
            })
            .create()
            .map_err(|e| OpenError::Retry(format!("creating the producer: {e}")))?;
        let partitions = producer
            .client()
            .topics()
            .iter()
            .map(|t| (Arc::from(t.name()), t.partitions().len() as i32))
            .collect();
        Ok(Connection {
            producer,
            partitions,
        })
    }

    /// The partition count of `topic`, if the metadata knows it.
    pub fn partitions(&self, topic: &str) -> Option<i32> {
        self.partitions.get(topic).copied().filter(|n| *n > 0)
    }

    /// Sends `records` in one request and returns, per (topic, partition) it was given,
    /// `Ok` or the code the broker answered. With `acks=0` there are no confirmations and
    /// every partition counts as written. A request that failed as a whole is `Err`.
    pub fn send(
        &mut self,
        records: &[Record<'_, &[u8], &[u8]>],
    ) -> std::result::Result<Confirmations, kafka::Error> {
        let confirms: Vec<ProduceConfirm> = self.producer.send_all(records)?;
        Ok(confirms
            .into_iter()
            .flat_map(|c| {
                let topic = c.topic;
                c.partition_confirms
                    .into_iter()
                    .map(move |p| ((topic.clone(), p.partition), p.offset.map(|_| ())))
            })
            .collect())
    }
}

/// What one connection's request came back with.
pub(crate) type Answer = std::result::Result<Confirmations, kafka::Error>;

/// Sends `requests[i]` on `connections[i]`, all at once, and returns exactly one answer
/// per request, in the same order. An empty request is not sent (its answer: no
/// confirmations), and a request without a connection answers `NotConnected`. The first
/// request that needs a thread goes out on the calling thread, the others on scoped
/// threads named `kafka-send-<i>`, all joined before this returns. A thread that cannot
/// be spawned answers with the I/O error, which the sink retries like any failed
/// request.
pub(crate) fn send_each(
    connections: &mut [Connection],
    requests: &[Vec<Record<'_, &[u8], &[u8]>>],
) -> Vec<Answer> {
    /// How one request is answered.
    enum Pending<'c, 'r, 'a> {
        Answered(Answer),
        Inline(&'c mut Connection, &'r [Record<'a, &'a [u8], &'a [u8]>]),
        Spawned(thread::ScopedJoinHandle<'c, Answer>),
    }
    thread::scope(|scope| {
        let mut connections = connections.iter_mut();
        let mut inline_taken = false;
        let pending: Vec<Pending<'_, '_, '_>> = requests
            .iter()
            .enumerate()
            .map(|(i, request)| {
                let Some(connection) = connections.next() else {
                    let missing = std::io::Error::from(std::io::ErrorKind::NotConnected);
                    return Pending::Answered(Err(kafka::Error::Io(missing)));
                };
                if request.is_empty() {
                    return Pending::Answered(Ok(Vec::new()));
                }
                if !inline_taken {
                    inline_taken = true;
                    return Pending::Inline(connection, request);
                }
                match thread::Builder::new()
                    .name(format!("kafka-send-{i}"))
                    .spawn_scoped(scope, move || connection.send(request))
                {
                    Ok(handle) => Pending::Spawned(handle),
                    Err(e) => Pending::Answered(Err(kafka::Error::Io(e))),
                }
            })
            .collect();
        // The inline request first, while the spawned ones are on their way.
        let mut answers: Vec<Option<Answer>> = Vec::with_capacity(pending.len());
        let mut spawned = Vec::new();
        for (i, p) in pending.into_iter().enumerate() {
            match p {
                Pending::Answered(answer) => answers.push(Some(answer)),
                Pending::Inline(connection, request) => {
                    answers.push(Some(connection.send(request)))
                }
                Pending::Spawned(handle) => {
                    answers.push(None);
                    spawned.push((i, handle));
                }
            }
        }
        for (i, handle) in spawned {
            let answer = handle
                .join()
                .unwrap_or_else(|payload| std::panic::resume_unwind(payload));
            answers[i] = Some(answer);
        }
        answers
            .into_iter()
            .map(|a| a.expect("every request answered"))
            .collect()
    })
}

/// Whether a partition-level code is worth a retry with a fresh producer.
pub(crate) fn retryable(code: KafkaCode) -> bool {
    matches!(
        code,
        KafkaCode::NotLeaderForPartition
            | KafkaCode::LeaderNotAvailable
            | KafkaCode::RequestTimedOut
            | KafkaCode::NetworkException
            | KafkaCode::NotEnoughReplicas
            | KafkaCode::NotEnoughReplicasAfterAppend
            | KafkaCode::UnknownTopicOrPartition
            | KafkaCode::BrokerNotAvailable
            | KafkaCode::ReplicaNotAvailable
            | KafkaCode::CorruptMessage
            | KafkaCode::Unknown
    )
}

/// Maps a whole-request failure to the crate's error when no retry is left.
pub(crate) fn describe(e: &kafka::Error) -> String {
    match e {
        kafka::Error::Io(io) => format!("i/o error: {io}"),
        other => other.to_string(),
    }
}

/// The broker-side error of a request, if it is a known Kafka code.
pub(crate) fn code_of(e: &kafka::Error) -> Option<KafkaCode> {
    match e {
        kafka::Error::Kafka(code) => Some(*code),
        kafka::Error::TopicPartitionError { error_code, .. } => Some(*error_code),
        _ => None,
    }
}
