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
mod verify;

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
/// Pause after a metadata request that failed before its round was up.
const METADATA_PAUSE: Duration = Duration::from_millis(20);
/// How long the sink thread sleeps when a non-blocking `poll` served no delivery report
/// (woken early by the interrupt). Not `poll(1 ms)`: rdkafka's `poll(t)` loops until `t`
/// has passed and hands librdkafka the time left in whole milliseconds, so its last
/// millisecond — all of a 1 ms poll — is a busy loop of non-blocking polls, a core taken
/// from the broker and librdkafka's own threads while the reports are awaited.
const IDLE_WAIT: Duration = Duration::from_micros(200);
/// Bits of a delivery opaque that hold the message's place in its request; the bits
/// above hold the request's number.
const PLACE_BITS: u32 = 40;
/// How many times a connect must see the same TLS/PLAINTEXT mismatch before it gives up
/// (librdkafka reconnects after `reconnect.backoff.ms`; it logs a repeated failure twice,
/// then keeps quiet about it for 30 s).
const MISMATCH_REPEATS: usize = 2;
/// Bound of the handshake that tells which certificate check failed.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(2);
/// Client errors a connect keeps to classify (the newest).
const CONNECT_ERRORS: usize = 32;

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
    /// Checks what librdkafka would refuse only when connecting — its property values,
    /// the PEM files — so that a bad config fails when the sink is built.
    pub fn new(config: KafkaSinkConfig) -> Result<LibrdkafkaClient> {
        if let Some(tls) = &config.security.tls {
            verify::check_pem_files(tls)?;
        }
        if let Err(e) = settings::client_config(&config).create_native_config() {
            return Err(settings::config_error(&config, e));
        }
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
            // The broker's own refusal: "SASL authentication error: …", or a mechanism
            // it does not enable. Not "… handshake failed: Local: …" (a connection that
            // broke during the handshake, retried).
            let refused = lower.contains("sasl authentication error")
                || (lower.contains("mechanism handshake failed") && !lower.contains("local:"));
            if let (
                RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed,
                Some(sasl),
                true,
            ) = (code, &self.config.security.sasl, refused)
            {
                return Err(Error::KafkaAuthFailed {
                    mechanism: sasl.mechanism.kafka_name().to_string(),
                    user: sasl.user.clone(),
                    detail: reason.clone(),
                });
            }
            let Some(what) = tls_failure(&lower) else {
                continue;
            };
            // A broker that closes a connection while it shuts down looks like a
            // protocol mismatch once; a mismatch repeats on every attempt.
            if what == TlsFailure::PlaintextToTls && self.config.security.tls.is_some() {
                // Past the TLS handshake: not a protocol mismatch.
                continue;
            }
            if what.is_mismatch()
                && errors
                    .iter()
                    .filter(|(_, r)| tls_failure(&r.to_ascii_lowercase()) == Some(what))
                    .count()
                    < MISMATCH_REPEATS
            {
                continue;
            }
            // A proxy with no live backend, a broker still starting or one over its
            // connection limit also accepts and closes: a mismatch counts only when the
            // listener is seen speaking the other protocol.
            if what.is_mismatch() && !self.confirm_mismatch(what, reason) {
                continue;
            }
            let checked = match (what, &self.config.security.tls) {
                (TlsFailure::Verify, Some(tls)) => verify::broker_in(reason)
                    .and_then(|addr| verify::verify_failure(addr, tls, VERIFY_TIMEOUT)),
                _ => None,
            };
            return Err(Error::KafkaTls {
                detail: tls_detail(
                    what,
                    checked.as_deref(),
                    reason,
                    self.config.security.protocol(),
                ),
            });
        }
        Ok(())
    }

    /// Whether the listener `reason` names speaks the protocol a [`TlsFailure`] mismatch
    /// suspects: Kafka over PLAINTEXT (ApiVersions answered) when our TLS was dropped,
    /// TLS (a handshake answered) when our PLAINTEXT was.
    fn confirm_mismatch(&self, what: TlsFailure, reason: &str) -> bool {
        let Some(addr) = verify::broker_in(reason) else {
            return false;
        };
        match what {
            TlsFailure::TlsToPlaintext => super::probe::probe(addr, VERIFY_TIMEOUT).is_ok(),
            TlsFailure::PlaintextToTls => verify::speaks_tls(addr, VERIFY_TIMEOUT) == Some(true),
            TlsFailure::Verify | TlsFailure::ClientCertificate => true,
        }
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
            // librdkafka fails waiting requests with these codes when a connection's
            // authentication or handshake fails, transient causes included: fatal only
            // when the client errors say the broker refused us (as at connect).
            C::Authentication | C::SaslAuthenticationFailed | C::SSL => {
                let recent = self
                    .producer
                    .as_ref()
                    .map(|p| p.context().recent_errors())
                    .unwrap_or_default();
                match self.classify(&recent) {
                    Err(e) => Fault::Fatal(e),
                    Ok(()) => Fault::Retry(format!("{code:?} ({code})")),
                }
            }
            C::Fatal => {
                let detail = self
                    .producer
                    .as_ref()
                    .and_then(|p| p.client().fatal_error())
                    .map(|(code, why)| match self.config.security.secret() {
                        Some(secret) => format!("{code:?}: {}", secret.redact(&why)),
                        None => format!("{code:?}: {why}"),
                    })
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

/// How long the next metadata request of a wait that ends at `deadline` may take: one
/// [`METADATA_ROUND`] or what is left, at least a millisecond.
fn metadata_round(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .min(METADATA_ROUND)
        .max(Duration::from_millis(1))
}

/// A connection failure librdkafka reported that retrying cannot mend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TlsFailure {
    /// The broker's certificate did not verify (which check: [`verify`]).
    Verify,
    /// The broker sent a TLS alert about our certificate: it requires one, or refused it.
    ClientCertificate,
    /// TLS to a PLAINTEXT listener.
    TlsToPlaintext,
    /// PLAINTEXT (or SASL_PLAINTEXT) to a TLS listener.
    PlaintextToTls,
}

impl TlsFailure {
    /// A protocol mismatch (as opposed to a certificate that failed).
    fn is_mismatch(self) -> bool {
        matches!(
            self,
            TlsFailure::TlsToPlaintext | TlsFailure::PlaintextToTls
        )
    }
}

/// Which [`TlsFailure`] librdkafka's (lowercased) error text describes, if any.
fn tls_failure(lower: &str) -> Option<TlsFailure> {
    if lower.contains("certificate verify failed") {
        Some(TlsFailure::Verify)
    } else if lower.contains("alert bad certificate")
        || lower.contains("alert certificate required")
        || lower.contains("alert unknown ca")
        || lower.contains("alert certificate unknown")
    {
        Some(TlsFailure::ClientCertificate)
    } else if lower.contains("connecting to a plaintext broker listener")
        || lower.contains("wrong version number")
        || lower.contains("packet length too long")
    {
        Some(TlsFailure::TlsToPlaintext)
    } else if lower.contains("connecting to a ssl listener")
        || lower.contains("incorrect security.protocol")
        // What librdkafka 2.12 says when a TLS listener drops a PLAINTEXT ApiVersions.
        || (lower.contains("disconnected") && lower.contains("in state apiversion_query"))
    {
        Some(TlsFailure::PlaintextToTls)
    } else {
        None
    }
}

/// The text of a [`TlsFailure`]: which one, OpenSSL's verify result when known, and
/// librdkafka's own words.
fn tls_detail(what: TlsFailure, checked: Option<&str>, reason: &str, protocol: &str) -> String {
    let checked_lower = checked.map(str::to_ascii_lowercase).unwrap_or_default();
    let said = match what {
        TlsFailure::Verify if checked_lower.contains("expired") => {
            "the broker's certificate has expired".to_string()
        }
        TlsFailure::Verify if checked_lower.contains("not yet valid") => {
            "the broker's certificate is not valid yet".to_string()
        }
        TlsFailure::Verify
            if checked_lower.contains("hostname mismatch")
                || checked_lower.contains("ip address mismatch") =>
        {
            "the broker's certificate is for another host (hostname mismatch; \
             insecure-skip-verify=true skips the check)"
                .to_string()
        }
        TlsFailure::Verify => "the broker's certificate is not signed by a trusted CA \
             (see the ca parameter; insecure-skip-verify=true skips the check)"
            .to_string(),
        TlsFailure::ClientCertificate => "the broker refused the TLS connection over our \
             certificate: its listener requires a client certificate (cert, key) its CA \
             signed"
            .to_string(),
        TlsFailure::TlsToPlaintext => {
            "the broker closed the TLS handshake: is the listener PLAINTEXT while the sink \
             uses TLS (enable-tls)?"
                .to_string()
        }
        TlsFailure::PlaintextToTls => format!(
            "the broker closed the connection before answering: is the listener TLS while \
             the sink is not (security.protocol {protocol}; enable-tls=true)?"
        ),
    };
    match checked {
        Some(c) => format!("{said}; OpenSSL: {c}; librdkafka: {reason}"),
        None => format!("{said}; librdkafka: {reason}"),
    }
}

impl Client for LibrdkafkaClient {
    fn request_share(&self, _max_message_bytes: usize) -> usize {
        // librdkafka batches per partition under `batch.size` / `message.max.bytes`.
        usize::MAX
    }

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
            let round = metadata_round(deadline);
            let answer = Self::fetch_partitions(&producer, &topic, round);
            // Client-level errors arrive as events on the queue `poll` serves.
            producer.poll(Duration::ZERO);
            seen.extend(producer.context().take_errors());
            if seen.len() > CONNECT_ERRORS {
                seen.drain(..seen.len() - CONNECT_ERRORS);
            }
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

    fn partitions(
        &mut self,
        topic: &str,
        interrupt: &Interrupt,
    ) -> Result<std::result::Result<Option<i32>, Retry>> {
        if let Some(known) = self.partitions.get(topic) {
            return Ok(Ok(*known));
        }
        let producer = self.producer.as_ref().expect("connected");
        // In short rounds, so a close's interrupt is seen between them.
        let deadline = Instant::now() + self.config.dial_timeout;
        loop {
            interrupt.check()?;
            let round = metadata_round(deadline);
            match Self::fetch_partitions(producer, topic, round) {
                Ok(count) => {
                    self.partitions.insert(topic.to_string(), count);
                    return Ok(Ok(count));
                }
                Err(why) if Instant::now() >= deadline => return Ok(Err(why)),
                // A quick failure (no broker up) is not retried in a tight loop.
                Err(_) => {
                    let _ = interrupt.sleep(METADATA_PAUSE);
                }
            }
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
                // Once a message of a slice could not be enqueued, the rest of it is not
                // enqueued either (it goes again after it, in order).
                let mut refused: Option<RDKafkaErrorCode> = None;
                for &i in &slice.idxs {
                    if let Some(code) = refused {
                        results[place] = Some(Some(code));
                        place += 1;
                        continue;
                    }
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
                    // librdkafka's queue has room for any one message once it drains;
                    // a queue that does not drain within the message timeout (no
                    // broker takes anything) leaves the message to the retry loop.
                    let queue_deadline = Instant::now() + self.config.message_timeout;
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
                                if Instant::now() >= queue_deadline {
                                    results[place] = Some(Some(RDKafkaErrorCode::QueueFull));
                                    refused = Some(RDKafkaErrorCode::QueueFull);
                                    break;
                                }
                                producer.poll(Duration::ZERO);
                                let _ = interrupt.sleep(IDLE_WAIT);
                            }
                            Err((e, _)) => {
                                let code = e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
                                results[place] = Some(Some(code));
                                refused = Some(code);
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
        let verify = "ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: broker certificate could not be verified";
        for (text, checked, says) in [
            (verify, Some("certificate has expired"), "has expired"),
            (verify, Some("Hostname mismatch"), "hostname mismatch"),
            (verify, Some("IP address mismatch"), "hostname mismatch"),
            (verify, Some("unable to get local issuer certificate"), "trusted CA"),
            (verify, None, "trusted CA"),
            ("ssl://h:1/bootstrap: Receive failed: error:0A000412:SSL routines::sslv3 alert bad certificate: SSL alert number 42", None, "client certificate"),
            ("ssl://h:1/bootstrap: SSL handshake failed: Disconnected: SSL connection closed by peer: connecting to a PLAINTEXT broker listener?", None, "PLAINTEXT"),
            ("127.0.0.1:40091/bootstrap: Disconnected: connection closed by peer: receive 0 after POLLIN (after 28ms in state APIVERSION_QUERY)", None, "listener TLS"),
            ("h:1/bootstrap: Disconnected while requesting ApiVersion: might be caused by incorrect security.protocol configuration (connecting to a SSL listener?)", None, "listener TLS"),
        ] {
            let what = tls_failure(&text.to_ascii_lowercase()).expect(text);
            let d = tls_detail(what, checked, text, "plaintext");
            assert!(d.contains(says), "{text} -> {d}");
            assert!(d.contains(text), "keeps librdkafka's text: {d}");
        }
        assert_eq!(tls_failure("1/1 brokers are down"), None);
    }
}
