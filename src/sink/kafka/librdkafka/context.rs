//! What librdkafka calls back into, on the sink thread (inside `poll`): delivery
//! reports, client-level errors and log lines. Every text librdkafka hands us passes
//! through [`Secret::redact`] before it is logged or kept.

use std::collections::VecDeque;

use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, ProducerContext};

use crate::sink::kafka::security::Secret;

/// Client-level errors kept for classifying a failed connect (the newest ones).
const KEPT_ERRORS: usize = 16;

/// A message's delivery report: its opaque and `None` when delivered, or the error.
pub(super) type Report = (usize, Option<RDKafkaErrorCode>);

/// The producer's context: collects delivery reports and client errors for the sink
/// thread, and forwards librdkafka's log lines to the `log` facade, redacted.
pub(super) struct SinkContext {
    /// Delivery reports not yet taken by the sink thread.
    reports: Mutex<Vec<Report>>,
    /// The newest client-level errors (authentication, TLS, all brokers down, …),
    /// redacted, at most [`KEPT_ERRORS`].
    errors: Mutex<VecDeque<(RDKafkaErrorCode, String)>>,
    /// The SASL password, if any: never logged.
    secret: Option<Secret>,
}

impl SinkContext {
    pub fn new(secret: Option<Secret>) -> SinkContext {
        SinkContext {
            reports: Mutex::new(Vec::new()),
            errors: Mutex::new(VecDeque::with_capacity(KEPT_ERRORS)),
            secret,
        }
    }

    /// Moves the reports received so far into `out`.
    pub fn take_reports(&self, out: &mut Vec<Report>) {
        out.append(&mut self.reports.lock());
    }

    /// The newest client-level errors, left in place.
    pub fn recent_errors(&self) -> Vec<(RDKafkaErrorCode, String)> {
        self.errors.lock().iter().cloned().collect()
    }

    /// The client-level errors received since the last call.
    pub fn take_errors(&self) -> Vec<(RDKafkaErrorCode, String)> {
        self.errors.lock().drain(..).collect()
    }

    fn redact(&self, text: &str) -> String {
        match &self.secret {
            Some(s) => s.redact(text),
            None => text.to_string(),
        }
    }

    /// Keeps a client-level error (the newest [`KEPT_ERRORS`]).
    fn keep(&self, code: RDKafkaErrorCode, reason: String) {
        let mut errors = self.errors.lock();
        if errors.len() == KEPT_ERRORS {
            errors.pop_front();
        }
        errors.push_back((code, reason));
    }
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let message = self.redact(message);
        let level = match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => log::Level::Error,
            RDKafkaLogLevel::Warning => log::Level::Warn,
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => log::Level::Info,
            RDKafkaLogLevel::Debug => log::Level::Debug,
        };
        log::log!(target: "librdkafka", level, "librdkafka: {fac} {message}");
        // A failed connection is often only logged (facility FAIL, at error or info
        // level), not raised as an error event: a TLS client on a PLAINTEXT listener,
        // PLAINTEXT on a TLS one, a refused certificate.
        if level <= log::Level::Info && fac == "FAIL" {
            self.keep(RDKafkaErrorCode::BrokerTransportFailure, message);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let reason = self.redact(reason);
        let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
        log::warn!(target: "librdkafka", "librdkafka: {code:?}: {reason}");
        self.keep(code, reason);
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let error = match result {
            Ok(_) => None,
            Err((e, _)) => Some(e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail)),
        };
        self.reports.lock().push((opaque, error));
    }
}
