//! The crate's one error type, its stable codes, and the error `send` hands back.
//!
//! | code | raised when | retryable |
//! |---|---|---|
//! | `CDC:ErrSinkURIInvalid` | a sink URI cannot be parsed, or names an unknown scheme or parameter | no |
//! | `CDC:ErrInvalidConfig` | a builder value is invalid (a capacity or quota of 0, an empty id) | no |
//! | `CDC:ErrSinkIO` | a sink's read, write, flush or sync failed (e.g. disk full) | yes |
//! | `CDC:ErrSinkFull` | the `memory://` sink holds its capacity of messages | yes |
//! | `CDC:ErrSinkPanicked` | the sink thread panicked; the message is the panic text | yes |
//! | `CDC:ErrSinkExited` | the sink returned on its own while the changefeed was running | yes |
//! | `CDC:ErrDispatcherPanicked` | a dispatcher thread panicked; the message is the panic text | yes |
//! | `CDC:ErrFeedPanicked` | a supervised changefeed's feed panicked | no |
//! | `CDC:ErrEncodeFailed` | the sink's encoder could not encode an event | no |
//! | `CDC:ErrEventTooLarge` | an event is larger than the whole memory quota | no |
//! | `CDC:ErrMessageTooLarge` | an encoded event is larger than the sink's message size limit | no |
//! | `CDC:ErrEventOutOfOrder` | a commit ts went backwards for a table | no |
//! | `CDC:ErrWrongTable` | an event was sent to the dispatcher of another table | no |
//! | `CDC:ErrDispatcherExists` | `add_dispatcher` for a table that already has one | no |
//! | `CDC:ErrDispatcherRemoved` | a send to a dispatcher after `remove_dispatcher` | no |
//! | `CDC:ErrDispatcherNotFound` | `remove_dispatcher` for a table without one | no |
//! | `CDC:ErrFlushTimeout` | `flush` waited longer than its timeout | yes |
//! | `CDC:ErrChangefeedClosed` | a send after the program closed the changefeed | no |
//! | `CDC:ErrCloseTimeout` | in-flight events were not acknowledged within the close timeout | yes |
//! | `CDC:ErrThreadSpawn` | the OS refused to start a thread | yes |
//! | `CDC:ErrKafkaInvalidConfig` | a `kafka://` URI or [`KafkaSinkConfig`](crate::sink::kafka::KafkaSinkConfig) value is invalid or unsupported | no |
//! | `CDC:ErrKafkaTopicNotExists` | a topic is missing from the brokers' metadata | yes |
//! | `CDC:ErrKafkaNewProducer` | no broker could be reached (or no producer created) after every retry | yes |
//! | `CDC:ErrKafkaSendMessage` | producing failed after every retry, or the broker refused it for good | yes |
//! | `CDC:ErrKafkaUnsupportedBroker` | the kafka-rust client met Kafka 4.0 or newer, which no longer speaks protocol v0 | no |
//! | `CDC:ErrKafkaAuthFailed` | the brokers refused the SASL credentials (names mechanism and user, never the password) | no |
//! | `CDC:ErrKafkaTLS` | a TLS connection failed: untrusted, expired or wrong-host certificate, a missing client certificate, or TLS against a PLAINTEXT listener and the reverse | no |
//!
//! "Retryable" is the advice a supervisor follows: restarting from the checkpoint may
//! succeed once the downstream is fixed. The others need the program or its input fixed.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::event::{Event, TableName};

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, each with a stable [`code`](Error::code).
///
/// `Clone`, so the error that closed a changefeed can be handed to every caller that
/// asks (`close`, `wait`, each failed `send`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Error {
    /// A sink URI is malformed or names an unknown scheme or parameter.
    SinkUriInvalid {
        /// The URI as given.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is invalid.
    InvalidConfig {
        /// The parameter, e.g. `memory_quota`.
        param: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A sink's I/O failed.
    SinkIo {
        /// What the sink was doing, e.g. `writing /tmp/out.jsonl`.
        context: String,
        /// The OS error.
        source: Arc<io::Error>,
    },
    /// The `memory://` sink is full.
    SinkFull {
        /// Its capacity in messages.
        capacity: usize,
    },
    /// The sink thread panicked.
    SinkPanicked {
        /// The panic text.
        message: String,
    },
    /// The sink returned on its own while the changefeed was running.
    SinkExited,
    /// A dispatcher thread panicked.
    DispatcherPanicked {
        /// The dispatcher's table.
        table: TableName,
        /// The panic text.
        message: String,
    },
    /// A supervised changefeed's feed panicked.
    FeedPanicked {
        /// The panic text.
        message: String,
    },
    /// The sink's encoder rejected an event.
    Encode {
        /// The event's table.
        table: TableName,
        /// The event's commit ts.
        commit_ts: u64,
        /// Why.
        reason: String,
    },
    /// An event is larger than the whole memory quota.
    EventTooLarge {
        /// The event's table.
        table: TableName,
        /// The event's commit ts.
        commit_ts: u64,
        /// Its size in bytes (estimated in `send`, encoded in the dispatcher).
        size: usize,
        /// The memory quota in bytes.
        limit: usize,
    },
    /// An encoded event is larger than what the sink accepts in one message.
    MessageTooLarge {
        /// The event's table.
        table: TableName,
        /// The event's commit ts.
        commit_ts: u64,
        /// The message key, as text (lossy UTF-8), or empty.
        key: String,
        /// The encoded size in bytes.
        size: usize,
        /// The limit in bytes (e.g. Kafka's `max-message-bytes`), or `None` when the
        /// broker rejected it against a limit of its own (the topic's
        /// `max.message.bytes`).
        limit: Option<usize>,
    },
    /// A table's commit ts went backwards.
    EventOutOfOrder {
        /// The table.
        table: TableName,
        /// The rejected event's commit ts.
        commit_ts: u64,
        /// The smallest commit ts the table accepts now.
        min_allowed: u64,
    },
    /// An event was sent to another table's dispatcher.
    WrongTable {
        /// The dispatcher's table.
        dispatcher: TableName,
        /// The event's table.
        event: TableName,
    },
    /// The table already has a dispatcher.
    DispatcherExists {
        /// The table.
        table: TableName,
    },
    /// The dispatcher was removed.
    DispatcherRemoved {
        /// The table.
        table: TableName,
    },
    /// The table has no dispatcher.
    DispatcherNotFound {
        /// The table.
        table: TableName,
    },
    /// `flush` waited longer than its timeout.
    FlushTimeout {
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The program closed the changefeed.
    ChangefeedClosed,
    /// `close` gave up waiting for in-flight events to be acknowledged.
    CloseTimeout {
        /// The close timeout that passed.
        timeout: Duration,
    },
    /// A Kafka sink parameter is invalid or unsupported.
    KafkaInvalidConfig {
        /// The parameter, e.g. `required-acks`.
        param: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A topic is missing from the brokers' metadata.
    KafkaTopicNotExists {
        /// The topic.
        topic: String,
    },
    /// No broker could be reached, or no producer created, after every retry.
    KafkaNewProducer {
        /// What failed, with the last error.
        reason: String,
    },
    /// Producing to Kafka failed after every retry.
    KafkaSendMessage {
        /// What failed, with the last error.
        reason: String,
    },
    /// The broker no longer speaks the protocol this client uses (Kafka 4.0 or newer).
    KafkaUnsupportedBroker {
        /// The broker's address.
        broker: String,
        /// What gave it away.
        detail: String,
    },
    /// The brokers refused the SASL credentials.
    KafkaAuthFailed {
        /// The SASL mechanism, e.g. `SCRAM-SHA-512`.
        mechanism: String,
        /// The SASL user.
        user: String,
        /// What the client said (any password in it redacted).
        detail: String,
    },
    /// A TLS connection to a broker failed.
    KafkaTls {
        /// Which failure, with what the client said.
        detail: String,
    },
    /// The OS refused to start a thread.
    ThreadSpawn {
        /// The thread's name.
        thread: String,
        /// The OS error.
        source: Arc<io::Error>,
    },
}

impl Error {
    /// The stable code of this error, e.g. `CDC:ErrSinkIO` (the table in the module docs).
    pub fn code(&self) -> &'static str {
        match self {
            Error::SinkUriInvalid { .. } => "CDC:ErrSinkURIInvalid",
            Error::InvalidConfig { .. } => "CDC:ErrInvalidConfig",
            Error::SinkIo { .. } => "CDC:ErrSinkIO",
            Error::SinkFull { .. } => "CDC:ErrSinkFull",
            Error::SinkPanicked { .. } => "CDC:ErrSinkPanicked",
            Error::SinkExited => "CDC:ErrSinkExited",
            Error::DispatcherPanicked { .. } => "CDC:ErrDispatcherPanicked",
            Error::FeedPanicked { .. } => "CDC:ErrFeedPanicked",
            Error::Encode { .. } => "CDC:ErrEncodeFailed",
            Error::EventTooLarge { .. } => "CDC:ErrEventTooLarge",
            Error::MessageTooLarge { .. } => "CDC:ErrMessageTooLarge",
            Error::EventOutOfOrder { .. } => "CDC:ErrEventOutOfOrder",
            Error::WrongTable { .. } => "CDC:ErrWrongTable",
            Error::DispatcherExists { .. } => "CDC:ErrDispatcherExists",
            Error::DispatcherRemoved { .. } => "CDC:ErrDispatcherRemoved",
            Error::DispatcherNotFound { .. } => "CDC:ErrDispatcherNotFound",
            Error::FlushTimeout { .. } => "CDC:ErrFlushTimeout",
            Error::ChangefeedClosed => "CDC:ErrChangefeedClosed",
            Error::CloseTimeout { .. } => "CDC:ErrCloseTimeout",
            Error::ThreadSpawn { .. } => "CDC:ErrThreadSpawn",
            Error::KafkaInvalidConfig { .. } => "CDC:ErrKafkaInvalidConfig",
            Error::KafkaTopicNotExists { .. } => "CDC:ErrKafkaTopicNotExists",
            Error::KafkaNewProducer { .. } => "CDC:ErrKafkaNewProducer",
            Error::KafkaSendMessage { .. } => "CDC:ErrKafkaSendMessage",
            Error::KafkaUnsupportedBroker { .. } => "CDC:ErrKafkaUnsupportedBroker",
            Error::KafkaAuthFailed { .. } => "CDC:ErrKafkaAuthFailed",
            Error::KafkaTls { .. } => "CDC:ErrKafkaTLS",
        }
    }

    /// Whether restarting the changefeed from its checkpoint may succeed (the table in
    /// the module docs).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::SinkIo { .. }
                | Error::SinkFull { .. }
                | Error::SinkPanicked { .. }
                | Error::SinkExited
                | Error::DispatcherPanicked { .. }
                | Error::CloseTimeout { .. }
                | Error::FlushTimeout { .. }
                | Error::ThreadSpawn { .. }
                | Error::KafkaTopicNotExists { .. }
                | Error::KafkaNewProducer { .. }
                | Error::KafkaSendMessage { .. }
        )
    }

    /// A [`Error::SinkIo`] for `source` while doing `context`.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::SinkIo {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn config(param: &'static str, reason: impl Into<String>) -> Error {
        Error::InvalidConfig {
            param,
            reason: reason.into(),
        }
    }

    pub(crate) fn uri(uri: &str, reason: impl Into<String>) -> Error {
        Error::SinkUriInvalid {
            uri: uri.to_string(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::SinkUriInvalid { uri, reason } => write!(f, "invalid sink uri {uri:?}: {reason}"),
            Error::InvalidConfig { param, reason } => write!(f, "invalid {param}: {reason}"),
            Error::SinkIo { context, source } => write!(f, "{context}: {source}"),
            Error::SinkFull { capacity } => {
                write!(f, "memory sink is full: it holds its capacity of {capacity} messages")
            }
            Error::SinkPanicked { message } => write!(f, "sink panicked: {message}"),
            Error::SinkExited => write!(f, "sink exited while the changefeed was running"),
            Error::DispatcherPanicked { table, message } => {
                write!(f, "dispatcher of table {table} panicked: {message}")
            }
            Error::FeedPanicked { message } => write!(f, "feed panicked: {message}"),
            Error::Encode {
                table,
                commit_ts,
                reason,
            } => write!(f, "cannot encode event of table {table} at commit ts {commit_ts}: {reason}"),
            Error::EventTooLarge {
                table,
                commit_ts,
                size,
                limit,
            } => write!(
                f,
                "event of table {table} at commit ts {commit_ts} is {size} bytes, larger than the memory quota of {limit} bytes"
            ),
            Error::MessageTooLarge {
                table,
                commit_ts,
                key,
                size,
                limit: Some(limit),
            } => write!(
                f,
                "message of table {table} at commit ts {commit_ts} with key {key:?} is {size} bytes, larger than the limit of {limit} bytes"
            ),
            Error::MessageTooLarge {
                table,
                commit_ts,
                key,
                size,
                limit: None,
            } => write!(
                f,
                "message of table {table} at commit ts {commit_ts} with key {key:?} is {size} bytes, larger than the broker accepts (the topic's max.message.bytes)"
            ),
            Error::EventOutOfOrder {
                table,
                commit_ts,
                min_allowed,
            } => write!(
                f,
                "commit ts of table {table} went backwards: got {commit_ts}, expected at least {min_allowed}"
            ),
            Error::WrongTable { dispatcher, event } => {
                write!(f, "event of table {event} sent to the dispatcher of table {dispatcher}")
            }
            Error::DispatcherExists { table } => write!(f, "table {table} already has a dispatcher"),
            Error::DispatcherRemoved { table } => write!(f, "the dispatcher of table {table} was removed"),
            Error::DispatcherNotFound { table } => write!(f, "table {table} has no dispatcher"),
            Error::FlushTimeout { timeout } => {
                write!(f, "flush timed out after {timeout:?} with events still unacknowledged")
            }
            Error::ChangefeedClosed => write!(f, "changefeed is closed"),
            Error::CloseTimeout { timeout } => write!(
                f,
                "close timed out after {timeout:?} with events still unacknowledged; the sink thread exits when its current call returns"
            ),
            Error::ThreadSpawn { thread, source } => {
                write!(f, "cannot start thread {thread}: {source}")
            }
            Error::KafkaInvalidConfig { param, reason } => {
                write!(f, "invalid kafka parameter {param}: {reason}")
            }
            Error::KafkaTopicNotExists { topic } => {
                write!(f, "kafka topic {topic:?} does not exist")
            }
            Error::KafkaNewProducer { reason } => {
                write!(f, "cannot create a kafka producer: {reason}")
            }
            Error::KafkaSendMessage { reason } => write!(f, "kafka send failed: {reason}"),
            Error::KafkaUnsupportedBroker { broker, detail } => write!(
                f,
                "kafka broker {broker} is kafka 4.0 or newer, which the kafka-rust client (protocol v0) does not support (use kafka-client=librdkafka): {detail}"
            ),
            Error::KafkaAuthFailed {
                mechanism,
                user,
                detail,
            } => write!(
                f,
                "kafka SASL authentication failed for user {user:?} with mechanism {mechanism}: {detail}"
            ),
            Error::KafkaTls { detail } => write!(f, "kafka TLS connection failed: {detail}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::SinkIo { source, .. } | Error::ThreadSpawn { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

/// A send that did not happen: the event is handed back, with the reason.
///
/// `Debug` does not print the event (it may be large, or hold data that must not reach
/// logs).
pub struct SendError {
    /// The event that was not sent.
    pub event: Event,
    /// Why: the error that closed the changefeed, [`Error::ChangefeedClosed`] when the
    /// program closed it, or the check the event failed.
    pub cause: Error,
}

impl SendError {
    /// The event that was not sent.
    pub fn into_event(self) -> Event {
        self.event
    }
}

impl fmt::Debug for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendError")
            .field("event", &format_args!(".."))
            .field("cause", &self.cause)
            .finish()
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event not sent: {}", self.cause)
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

/// Why a `try_send` or `send_timeout` did not send. `Debug` does not print the event.
pub enum TrySendError {
    /// The pipeline is full (queue or memory quota); the event is handed back.
    Full(Event),
    /// The send failed for good; see [`SendError`].
    Failed(SendError),
}

impl TrySendError {
    /// The event that was not sent.
    pub fn into_event(self) -> Event {
        match self {
            TrySendError::Full(event) => event,
            TrySendError::Failed(e) => e.event,
        }
    }
}

impl fmt::Debug for TrySendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => write!(f, "Full(..)"),
            TrySendError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

impl fmt::Display for TrySendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => write!(f, "pipeline is full"),
            TrySendError::Failed(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for TrySendError {}

/// The text of a panic payload (`&str` and `String` payloads; others are described).
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}
