//! The librdkafka client (`kafka-client=librdkafka`, the default): librdkafka through
//! the `rdkafka` crate's synchronous [`BaseProducer`], driven from the sink thread. No
//! async runtime, no `FutureProducer`, no polling thread of ours.
//!
//! * **Connecting** creates the producer (librdkafka starts its own threads, see
//!   ARCHITECTURE.md) and asks for the default topic's metadata, in short rounds until
//!   `dial-timeout-ms`, looking at the client-level errors librdkafka reported in
//!   between: a wrong password or an untrusted certificate ends it at once with an
//!   error that says so, instead of a timeout.
//! * **Sending** enqueues every message of the request (`produce`, each with its
//!   partition, key, value and the commit ts's physical milliseconds as its
//!   timestamp, and an opaque naming its place in the request), then polls until each
//!   has its delivery report. When librdkafka's queue is full, it polls and tries the
//!   message again. A slice's [`Outcome`] counts its messages delivered before the first
//!   one that was not; the sink sends again from there (at-least-once, order kept).
//! * **Interrupted** (a close that timed out, a release after a failure), it stops
//!   waiting at once and purges what librdkafka holds; dropping the client destroys the
//!   producer, which joins librdkafka's threads.

mod context;
mod settings;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, PurgeConfig};

use super::client::{Client, Fault, Interrupt, Outcome, Pending, Retry, Slice};
use super::config::KafkaSinkConfig;
use crate::error::{Error, Result};
use crate::tso;
use context::{Report, SinkContext};

/// How long one metadata round of a connect waits before the client errors are looked
/// at again.
const METADATA_ROUND: Duration = Duration::from_millis(250);
/// How long the sink thread sleeps when a non-blocking `poll` served no delivery report
/// (woken early by the interrupt). Not `poll(1 ms)`: rdkafka's `poll(t)` loops until `t`
/// has passed and hands librdkafka the time left in whole milliseconds, so its last
/// millisecond — all of a 1 ms poll — is a busy loop of non-blocking polls, a core taken
/// from the broker and librdkafka's own threads while the reports are awaited.
const IDLE_WAIT: Duration = Duration::from_micros(200);
/// Bits of a delivery opaque that hold the message's place in its request; the bits
/// above hold the request's number.
const PLACE_BITS: u32 = 40;

/// The librdkafka client.
pub(crate) struct LibrdkafkaClient {
    config: KafkaSinkConfig,
    producer: Option<BaseProducer<SinkContext>>,
    /// Partition counts from metadata, until a reset.
    partitions: HashMap<String, Option<i32>>,
    /// Number of the current request, in the opaques of its messages.
    request: usize,
    /// Delivery reports taken from the context, reused between requests.
    reports: Vec<Report>,
}

impl LibrdkafkaClient {
    pub fn new(config: KafkaSinkConfig) -> Result<LibrdkafkaClient> {
        Ok(LibrdkafkaClient {
            config,
            producer: None,
            partitions: HashMap::new(),
            request: 0,
            reports: Vec::new(),
        })
    }

    /// What the client errors say about a connect that got no metadata: `Err` when
    /// retrying cannot help (credentials, certificates, a TLS/PLAINTEXT mismatch).
    fn classify(&self, errors: &[(RDKafkaErrorCode, String)]) -> Result<()> {
        for (code, reason) in errors {
            let lower = reason.to_ascii_lowercase();
            if let (
                RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed,
                Some(sasl),
                false,
            ) = (code, &self.config.security.sasl, lower.contains("ssl"))
            {
                return Err(Error::KafkaAuthFailed {
                    mechanism: sasl.mechanism.kafka_name().to_string(),
                    user: sasl.user.clone(),
                    detail: reason.clone(),
                });
            }
            if *code == RDKafkaErrorCode::SSL || lower.contains("ssl handshake") {
                return Err(Error::KafkaTls {
                    detail: tls_detail(reason),
                });
            }
            if lower.contains("incorrect security.protocol")
                || lower.contains("connecting to a ssl listener")
            {
                return Err(Error::KafkaTls {
                    detail: format!(
                        "the broker closed the connection before answering: is the listener TLS while the sink is not (security.protocol {})? librdkafka: {reason}",
                        self.config.security.protocol()
                    ),
                });
            }
        }
        Ok(())
    }

    /// The partition count of `topic` from a metadata request.
    fn fetch_partitions(
        producer: &BaseProducer<SinkContext>,
        topic: &str,
        timeout: Duration,
    ) -> std::result::Result<Option<i32>, Retry> {
        let metadata = producer
            .client()
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| format!("metadata of topic {topic}: {e}"))?;
        let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        match t.error().map(RDKafkaErrorCode::from) {
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
                Ok(None)
            }
            _ if !t.partitions().is_empty() => Ok(Some(t.partitions().len() as i32)),
            Some(code) => Err(format!("metadata of topic {topic}: {code:?}")),
            None => Ok(None),
        }
    }

    /// Waits until every one of `expected` enqueued messages of request `request` has
    /// its report, filling `results` (by place). `Err` when interrupted (after a
    /// purge). Messages that get no report within the message timeout and a margin
    /// stay `None`.
    fn await_reports(
        &mut self,
        request: usize,
        mut expected: usize,
        results: &mut [Option<Option<RDKafkaErrorCode>>],
        interrupt: &Interrupt,
    ) -> Result<()> {
        let producer = self.producer.as_ref().expect("connected");
        let give_up = Instant::now() + self.config.message_timeout + Duration::from_secs(5);
        while expected > 0 {
            if interrupt.is_set() {
                producer.purge(PurgeConfig::default().queue().inflight());
                return interrupt.check();
            }
            if Instant::now() >= give_up {
                log::warn!(
                    "kafka sink: {expected} messages without a delivery report after the message timeout; sending them again"
                );
                return Ok(());
            }
            // One event (a delivery report covers many messages) without blocking.
            producer.poll(Duration::ZERO);
            self.reports.clear();
            producer.context().take_reports(&mut self.reports);
            if self.reports.is_empty() {
                let _ = interrupt.sleep(IDLE_WAIT);
                continue;
            }
            for &(opaque, error) in &self.reports {
                if opaque >> PLACE_BITS != request & ((1 << (64 - PLACE_BITS)) - 1) {
                    continue; // a late report of an earlier request
                }
                let place = opaque & ((1 << PLACE_BITS) - 1);
                if let Some(slot) = results.get_mut(place) {
                    if slot.is_none() {
                        *slot = Some(error);
                        expected -= 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// What a delivery error means for the message it failed.
    fn fault_of(&self, code: RDKafkaErrorCode) -> Fault {
        use RDKafkaErrorCode as C;
        match code {
            C::MessageSizeTooLarge => Fault::TooLarge,
            C::Authentication | C::SaslAuthenticationFailed => match &self.config.security.sasl {
                Some(sasl) => Fault::Fatal(Error::KafkaAuthFailed {
                    mechanism: sasl.mechanism.kafka_name().to_string(),
                    user: sasl.user.clone(),
                    detail: format!("{code}"),
                }),
                None => Fault::Fatal(Error::KafkaTls {
                    detail: format!("{code}"),
                }),
            },
            C::SSL => Fault::Fatal(Error::KafkaTls {
                detail: format!("{code}"),
            }),
            C::Fatal => {
                let detail = self
                    .producer
                    .as_ref()
                    .and_then(|p| p.client().fatal_error())
                    .map(|(code, why)| format!("{code:?}: {why}"))
                    .unwrap_or_else(|| "fatal error".to_string());
                Fault::Fatal(Error::KafkaSendMessage {
                    reason: format!("the producer hit a fatal error: {detail}"),
                })
            }
            C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::InvalidRecord
            | C::InvalidMessage
            | C::InvalidRequiredAcks
            | C::UnsupportedVersion
            | C::UnsupportedForMessageFormat
            | C::UnsupportedCompressionType
            | C::PolicyViolation
            | C::InvalidArgument
            | C::Conflict => Fault::Fatal(Error::KafkaSendMessage {
                reason: format!("the broker refused the message: {code:?} ({code})"),
            }),
            // Purged only when interrupted: the send returns early with that error.
            C::PurgeQueue | C::PurgeInflight => Fault::Retry("purged".to_string()),
            // Timed out, all brokers down, not leader, not enough replicas, unknown
            // partition after a change …: librdkafka retried already; the sink's retry
            // loop resets, backs off and sends again.
            code => Fault::Retry(format!("{code:?} ({code})")),
        }
    }
}

/// A TLS failure in words a user acts on, with librdkafka's text.
fn tls_detail(reason: &str) -> String {
    let lower = reason.to_ascii_lowercase();
    let what = if lower.contains("expired") {
        "the broker's certificate has expired"
    } else if lower.contains("hostname")
        || lower.contains("host name")
        || lower.contains("ip address mismatch")
    {
        "the broker's certificate is not for the host connected to (hostname mismatch)"
    } else if lower.contains("unable to get local issuer")
        || lower.contains("self-signed")
        || lower.contains("self signed")
        || lower.contains("unknown ca")
        || lower.contains("certificate verify failed")
    {
        "the broker's certificate is not signed by a trusted CA (see the ca parameter)"
    } else if lower.contains("wrong version number")
        || lower.contains("packet length too long")
        || lower.contains("record layer failure")
    {
        "the broker did not answer the TLS handshake: is the listener PLAINTEXT while the sink uses TLS?"
    } else if lower.contains("certificate required") || lower.contains("handshake failure") {
        "the broker refused the TLS handshake: does it require a client certificate (cert, key)?"
    } else {
        "TLS handshake failed"
    };
    format!("{what}; librdkafka: {reason}")
}

impl Client for LibrdkafkaClient {
    fn connect(&mut self, interrupt: &Interrupt) -> Result<std::result::Result<(), Retry>> {
        if self.producer.is_some() {
            return Ok(Ok(()));
        }
        let secret = self.config.security.secret().cloned();
        let producer: BaseProducer<SinkContext> = settings::client_config(&self.config)
            .create_with_context(SinkContext::new(secret.clone()))
            .map_err(|e| {
                let text = e.to_string();
                Error::KafkaNewProducer {
                    reason: match &secret {
                        Some(s) => s.redact(&text),
                        None => text,
                    },
                }
            })?;
        let topic = self.config.default_topic.clone();
        let deadline = Instant::now() + self.config.dial_timeout;
        let mut seen = Vec::new();
        loop {
            interrupt.check()?;
            let round = deadline
                .saturating_duration_since(Instant::now())
                .min(METADATA_ROUND)
                .max(Duration::from_millis(1));
            let answer = Self::fetch_partitions(&producer, &topic, round);
            // Client-level errors arrive as events on the queue `poll` serves.
            producer.poll(Duration::ZERO);
            seen.extend(producer.context().take_errors());
            if let Ok(count) = answer {
                self.partitions.insert(topic, count);
                self.producer = Some(producer);
                return Ok(Ok(()));
            }
            self.classify(&seen)?;
            if Instant::now() >= deadline {
                let last: Vec<String> = seen
                    .iter()
                    .rev()
                    .take(3)
                    .map(|(code, why)| format!("{code:?}: {why}"))
                    .collect();
                return Ok(Err(format!(
                    "no broker of {} answered within the dial timeout {:?}{}",
                    self.config.brokers.join(","),
                    self.config.dial_timeout,
                    if last.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", last.join("; "))
                    }
                )));
            }
        }
    }

    fn reset(&mut self) {
        self.partitions.clear();
        // librdkafka reconnects by itself; only a producer in a fatal state is replaced.
        if self
            .producer
            .as_ref()
            .is_some_and(|p| p.client().fatal_error().is_some())
        {
            self.producer = None;
        }
    }

    fn partitions(&mut self, topic: &str) -> Result<std::result::Result<Option<i32>, Retry>> {
        if let Some(known) = self.partitions.get(topic) {
            return Ok(Ok(*known));
        }
        let producer = self.producer.as_ref().expect("connected");
        match Self::fetch_partitions(producer, topic, self.config.dial_timeout) {
            Ok(count) => {
                self.partitions.insert(topic.to_string(), count);
                Ok(Ok(count))
            }
            Err(why) => Ok(Err(why)),
        }
    }

    fn send(
        &mut self,
        pending: &Pending,
        slices: &[Slice],
        interrupt: &Interrupt,
    ) -> Result<Vec<Outcome>> {
        self.request = self.request.wrapping_add(1);
        let request = self.request & ((1 << (64 - PLACE_BITS)) - 1);
        let total: usize = slices.iter().map(|s| s.idxs.len()).sum();
        // Per place in the request: None = no report yet; Some(None) = delivered;
        // Some(Some(code)) = failed.
        let mut results: Vec<Option<Option<RDKafkaErrorCode>>> = vec![None; total];
        let mut enqueued = 0;
        {
            let producer = self.producer.as_ref().expect("connected");
            let mut place = 0;
            for slice in slices {
                for &i in &slice.idxs {
                    let m = &pending[i].1;
                    let mut record =
                        BaseRecord::with_opaque_to(&slice.topic, (request << PLACE_BITS) | place)
                            .partition(slice.partition)
                            .payload(&m.value[..])
                            .timestamp(
                                tso::physical_millis(m.commit_ts).min(i64::MAX as u64) as i64
                            );
                    if !m.key.is_empty() {
                        record = record.key(&m.key[..]);
                    }
                    loop {
                        match producer.send(record) {
                            Ok(()) => {
                                enqueued += 1;
                                break;
                            }
                            Err((
                                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                back,
                            )) => {
                                // librdkafka's queue holds its bound: let deliveries
                                // drain it (their reports are kept in the context).
                                record = back;
                                if interrupt.is_set() {
                                    producer.purge(PurgeConfig::default().queue().inflight());
                                    return interrupt.check().map(|_| Vec::new());
                                }
                                producer.poll(Duration::ZERO);
                                let _ = interrupt.sleep(IDLE_WAIT);
                            }
                            Err((e, _)) => {
                                results[place] = Some(Some(
                                    e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail),
                                ));
                                break;
                            }
                        }
                    }
                    place += 1;
                }
            }
        }
        self.await_reports(request, enqueued, &mut results, interrupt)?;
        let mut outcomes = Vec::with_capacity(slices.len());
        let mut place = 0;
        for slice in slices {
            let mine = &results[place..place + slice.idxs.len()];
            place += slice.idxs.len();
            let written = mine.iter().take_while(|r| matches!(r, Some(None))).count();
            outcomes.push(match mine.get(written) {
                None => Outcome::written(written),
                Some(r) => Outcome {
                    written,
                    fault: Some(match r {
                        Some(Some(code)) => self.fault_of(*code),
                        _ => Fault::Retry(format!(
                            "{}/{}: no delivery report within message-timeout-ms",
                            slice.topic, slice.partition
                        )),
                    }),
                },
            });
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_say_which() {
        for (text, says) in [
            ("SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: certificate has expired", "expired"),
            ("ssl handshake failed: certificate verify failed: Hostname mismatch", "hostname mismatch"),
            ("SSL handshake failed: certificate verify failed: unable to get local issuer certificate", "trusted CA"),
            ("SSL handshake failed: error:0A00010B:SSL routines::wrong version number", "PLAINTEXT"),
        ] {
            let d = tls_detail(text);
            assert!(d.contains(says), "{text} -> {d}");
            assert!(d.contains(text), "keeps librdkafka's text: {d}");
        }
    }
}
