//! The kafka-rust client (`kafka-client=kafka-rust`): the `kafka` crate 0.10, protocol
//! v0, PLAINTEXT, Apache Kafka 0.8 to 3.9.
//!
//! * **Connecting**: `connections` producers (default 2), each opened after reaching a
//!   broker within `dial-timeout-ms` with an ApiVersions probe of our own, which also
//!   refuses Kafka ≥ 4.0 (`CDC:ErrKafkaUnsupportedBroker`): Kafka 4 removed the
//!   request versions the crate speaks. The crate loads metadata once per producer and
//!   never reconnects, so [`Client::reset`] drops them all and the next connect opens
//!   new ones.
//! * **Sending**: one request is split by partition across the connections
//!   ([`spread`]); the parts go out at once, each on a thread of its own for the length
//!   of the call (the crate waits for each answer: one connection, one request in
//!   flight). A topic-partition always goes through the same connection, so its writes
//!   stay in order at the broker even with `required-acks` 0.
//! * **Answers**: the broker accepts or refuses a partition's whole set, so a slice's
//!   [`Outcome`] is all or nothing. An `Ok` from `send_all` means nothing by itself:
//!   each partition's confirmation is read ([`answered`]).

mod connection;

use kafka::error::KafkaCode;
use kafka::producer::Record;

use super::client::{Client, Fault, Interrupt, Outcome, Pending, Retry, Slice};
use super::config::{KafkaSinkConfig, RequiredAcks};
use crate::error::{Error, Result};
use connection::{Confirmations, Connection, OpenError};

/// The kafka-rust client: `connections` producers of the `kafka` crate.
pub(crate) struct KafkaRustClient {
    config: KafkaSinkConfig,
    /// `connections` producers, or none (before the first connect and after a
    /// [`reset`](Client::reset)). The first one's metadata answers
    /// [`partitions`](Client::partitions).
    connections: Vec<Connection>,
}

impl KafkaRustClient {
    pub fn new(config: KafkaSinkConfig) -> KafkaRustClient {
        KafkaRustClient {
            config,
            connections: Vec::new(),
        }
    }
}

impl Client for KafkaRustClient {
    fn request_share(&self, max_message_bytes: usize) -> usize {
        max_message_bytes
    }

    fn connect(&mut self, interrupt: &Interrupt) -> Result<std::result::Result<(), Retry>> {
        if !self.connections.is_empty() {
            return Ok(Ok(()));
        }
        let mut opened = Vec::with_capacity(self.config.connections);
        for _ in 0..self.config.connections {
            // Each open may take up to the dial timeout: a close need not wait for all.
            interrupt.check()?;
            match Connection::open(&self.config) {
                Ok(c) => opened.push(c),
                Err(OpenError::Fatal(e)) => return Err(e),
                Err(OpenError::Retry(reason)) => return Ok(Err(reason)),
            }
        }
        self.connections = opened;
        Ok(Ok(()))
    }

    fn reset(&mut self) {
        self.connections.clear();
    }

    fn partitions(
        &mut self,
        topic: &str,
        _interrupt: &Interrupt,
    ) -> Result<std::result::Result<Option<i32>, Retry>> {
        Ok(Ok(self
            .connections
            .first()
            .and_then(|c| c.partitions(topic))))
    }

    fn send(
        &mut self,
        pending: &Pending,
        slices: &[Slice],
        _interrupt: &Interrupt,
    ) -> Result<Vec<Outcome>> {
        let parts = spread(slices, self.connections.len());
        let requests: Vec<Vec<_>> = parts
            .iter()
            .map(|part| {
                part.iter()
                    .flat_map(|&s| records(pending, &slices[s]))
                    .collect()
            })
            .collect();
        let answers = connection::send_each(&mut self.connections, &requests);
        drop(requests);
        debug_assert_eq!(answers.len(), parts.len(), "one answer per part");
        let acks = self.config.required_acks;
        let mut outcomes: Vec<Option<Outcome>> = slices.iter().map(|_| None).collect();
        for (part, answer) in parts.iter().zip(answers) {
            let confirms = match answer {
                Ok(confirms) => confirms,
                Err(e) => {
                    let fault = match connection::code_of(&e) {
                        Some(code) => fault_of(code, "the broker refused the request"),
                        None => Fault::Retry(connection::describe(&e)),
                    };
                    // Every slice of the part shares the request's fate.
                    for &s in part {
                        outcomes[s] = Some(Outcome::failed(copy_fault(&fault)));
                    }
                    continue;
                }
            };
            for &s in part {
                let Slice {
                    topic, partition, ..
                } = &slices[s];
                outcomes[s] = Some(match answered(&confirms, topic, *partition, acks) {
                    Answered::Written => Outcome::written(slices[s].idxs.len()),
                    Answered::Unconfirmed => Outcome::failed(Fault::Retry(format!(
                        "{topic}/{partition}: no confirmation"
                    ))),
                    Answered::Refused(code) => Outcome::failed(fault_of(
                        code,
                        &format!("topic {topic} partition {partition}: the broker answered"),
                    )),
                });
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.expect("every slice is in exactly one part"))
            .collect())
    }
}

/// The records of `slice`, all for one topic-partition.
fn records<'a>(
    pending: &'a Pending,
    slice: &'a Slice,
) -> impl Iterator<Item = Record<'a, &'a [u8], &'a [u8]>> + 'a {
    slice.idxs.iter().map(move |&i| {
        let m = &pending[i].1;
        Record::from_key_value(&slice.topic[..], &m.key[..], &m.value[..])
            .with_partition(slice.partition)
    })
}

/// What a broker's error code means for the messages it refused.
fn fault_of(code: KafkaCode, context: &str) -> Fault {
    match code {
        // Kafka checks a partition's whole set against the topic's limit.
        KafkaCode::MessageSizeTooLarge => Fault::TooLarge,
        code if connection::retryable(code) => Fault::Retry(format!("{context} {code:?}")),
        code => Fault::Fatal(Error::KafkaSendMessage {
            reason: format!("{context} {code:?}"),
        }),
    }
}

/// The same fault again, for the other slices of a failed request.
fn copy_fault(fault: &Fault) -> Fault {
    match fault {
        Fault::TooLarge => Fault::TooLarge,
        Fault::Retry(why) => Fault::Retry(why.clone()),
        Fault::Fatal(e) => Fault::Fatal(e.clone()),
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
fn answered(confirms: &Confirmations, topic: &str, partition: i32, acks: RequiredAcks) -> Answered {
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
    for (s, slice) in slices.iter().enumerate() {
        parts[connection_of(&slice.topic, slice.partition, connections)].push(s);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// One slice per partition `0..partitions` of each of `topics`.
    fn slices_of(topics: &[&str], partitions: i32) -> Vec<Slice> {
        let mut slices = Vec::new();
        for t in topics {
            for p in 0..partitions {
                slices.push(Slice {
                    topic: Arc::from(*t),
                    partition: p,
                    idxs: vec![slices.len()],
                });
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
                let n = part.iter().filter(|&&s| &*slices[s].topic == t).count();
                assert_eq!(n, 2, "balanced: {parts:?}");
            }
        }
        // Another request with only some of the partitions: each on the same connection.
        let some: Vec<Slice> = slices
            .iter()
            .filter(|s| s.partition % 2 == 1)
            .cloned()
            .collect();
        for (c, part) in spread(&some, 3).iter().enumerate() {
            for &s in part {
                let Slice {
                    topic: t,
                    partition: p,
                    ..
                } = &some[s];
                let before = parts.iter().position(|q| {
                    q.iter()
                        .any(|&i| slices[i].topic == *t && slices[i].partition == *p)
                });
                assert_eq!(before, Some(c), "{t}/{p} moved");
            }
        }
    }

    #[test]
    fn a_partition_missing_from_the_confirmations_was_written_only_with_acks_0() {
        let confirms: Confirmations = vec![
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

    #[test]
    fn broker_codes_become_faults() {
        assert!(matches!(
            fault_of(KafkaCode::MessageSizeTooLarge, "x"),
            Fault::TooLarge
        ));
        assert!(matches!(
            fault_of(KafkaCode::NotLeaderForPartition, "x"),
            Fault::Retry(_)
        ));
        assert!(matches!(
            fault_of(KafkaCode::TopicAuthorizationFailed, "x"),
            Fault::Fatal(Error::KafkaSendMessage { .. })
        ));
    }
}
