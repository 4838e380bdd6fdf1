//! `kafka://` URIs and [`KafkaSinkConfig`]: every parameter, its default, and its
//! validation. Nothing here touches the network.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::sink::kafka::router::{self, PartitionRule, Router, TableMatcher, TopicExpr};
use crate::sink::kafka::security::{Security, SecurityParams};
use crate::sink::uri::SinkUri;

/// Which Kafka client the sink uses (`kafka-client`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// `librdkafka` (the default; cargo feature `librdkafka`): librdkafka through the
    /// `rdkafka` crate's synchronous producer. Every Kafka version, TLS, SASL,
    /// idempotence, every compression, record timestamps.
    Librdkafka,
    /// `kafka-rust` (cargo feature `kafka-rust`): the pure-Rust `kafka` crate, protocol
    /// v0: Kafka 0.8 to 3.9, PLAINTEXT only, no lz4/zstd.
    KafkaRust,
}

impl ClientKind {
    /// The name `kafka-client` takes.
    pub fn name(self) -> &'static str {
        match self {
            ClientKind::Librdkafka => "librdkafka",
            ClientKind::KafkaRust => "kafka-rust",
        }
    }
}

impl Default for ClientKind {
    /// librdkafka when this build has it, else kafka-rust.
    fn default() -> Self {
        if cfg!(feature = "librdkafka") || !cfg!(feature = "kafka-rust") {
            ClientKind::Librdkafka
        } else {
            ClientKind::KafkaRust
        }
    }
}

/// The message format written to Kafka.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Canal's flat JSON message ([`crate::codec::CanalJson`]); the default.
    CanalJson,
    /// Debezium's JSON envelope ([`crate::codec::Debezium`]).
    Debezium,
}

/// How many brokers must confirm a write (`required-acks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequiredAcks {
    /// `-1`: every in-sync replica (the default). At-least-once.
    All,
    /// `1`: the partition leader. At-least-once while the leader survives.
    One,
    /// `0`: none. **At-most-once**: the broker sends no confirmation, so a batch counts
    /// as acknowledged once written to the socket, and a broker failure loses it.
    None,
}

/// Compression of message sets (`compression`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// No compression (the default).
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4 (librdkafka only).
    Lz4,
    /// Zstandard (librdkafka only; Kafka 2.1 and later).
    Zstd,
}

impl Compression {
    /// The name `compression` takes (and librdkafka's `compression.type`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// Default `max-message-bytes`: 1 MiB, under the broker's default `message.max.bytes`
/// (1,048,588).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Default `max-retry`, as TiCDC's.
pub const DEFAULT_MAX_RETRY: u32 = 5;
/// Default `retry-backoff-ms`: the first retry's wait; it doubles up to
/// [`DEFAULT_RETRY_BACKOFF_MAX`].
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Default `retry-backoff-max-ms`.
pub const DEFAULT_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Default `ack-timeout-ms`: how long the broker may wait for replicas.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `dial-timeout-ms`: the bound on reaching a broker when the producer is
/// (re)created. The kafka crate has no connect timeout of its own.
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `batch-bytes`: message bytes the sink thread gathers before a flush.
pub const DEFAULT_BATCH_BYTES: usize = 4 << 20;
/// Default `batch-records`: messages the sink thread gathers before a flush.
pub const DEFAULT_BATCH_RECORDS: usize = 16_384;
/// Default `linger-ms`: 0, flush as soon as the sink channel is empty.
pub const DEFAULT_LINGER: Duration = Duration::ZERO;
/// Default `connections`: producer connections a flush sends on at once.
pub const DEFAULT_CONNECTIONS: usize = 2;
/// Most `connections`.
pub const MAX_CONNECTIONS: usize = 16;
/// Default `kafka-client-id`.
pub const DEFAULT_CLIENT_ID: &str = "changefeed";
/// Default `message-timeout-ms` (librdkafka): how long librdkafka may try to deliver a
/// message (its own retries, reconnects and leader changes included) before it reports
/// the message failed and the sink's retry loop takes over.
pub const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The parameters a `kafka://` URI takes.
const PARAMS: &[&str] = &[
    "protocol",
    "max-message-bytes",
    "required-acks",
    "compression",
    "kafka-client-id",
    "max-retry",
    "retry-backoff-ms",
    "retry-backoff-max-ms",
    "ack-timeout-ms",
    "dial-timeout-ms",
    "batch-bytes",
    "batch-records",
    "linger-ms",
    "connections",
    "auto-create-topic",
    "kafka-client",
    "message-timeout-ms",
    "enable-idempotence",
];

/// Parameters of TiCDC's that this client cannot honour, with the reason.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("sasl-gssapi-auth-type", SASL_OTHER_REASON),
    ("sasl-gssapi-keytab-path", SASL_OTHER_REASON),
    ("sasl-gssapi-kerberos-config-path", SASL_OTHER_REASON),
    ("sasl-gssapi-service-name", SASL_OTHER_REASON),
    ("sasl-gssapi-user", SASL_OTHER_REASON),
    ("sasl-gssapi-password", SASL_OTHER_REASON),
    ("sasl-gssapi-realm", SASL_OTHER_REASON),
    ("sasl-oauth-client-id", SASL_OTHER_REASON),
    ("sasl-oauth-client-secret", SASL_OTHER_REASON),
    ("sasl-oauth-token-url", SASL_OTHER_REASON),
    (
        "kafka-version",
        "neither client needs it: librdkafka negotiates versions with the broker, kafka-rust always speaks protocol v0 (Kafka 0.8 to 3.9)",
    ),
    (
        "partition-num",
        "partitions are read from the topic's metadata",
    ),
    (
        "replication-factor",
        "topics are never created by this client",
    ),
];

/// Why kafka-rust refuses TLS.
const TLS_REASON: &str = "TLS is not supported by the kafka-rust client: the kafka crate's TLS path cuts requests over 16 KiB short; use kafka-client=librdkafka";
/// Why kafka-rust refuses SASL, and why both refuse GSSAPI and OAUTHBEARER.
const SASL_REASON: &str =
    "SASL is not supported by the kafka-rust client (PLAINTEXT only); use kafka-client=librdkafka";
const SASL_OTHER_REASON: &str = "only the SASL mechanisms plain, scram-sha-256 and scram-sha-512 are supported (no GSSAPI, no OAUTHBEARER)";

/// A Kafka sink's settings: brokers, default topic, protocol, producer parameters, and
/// routing rules. Built from a `kafka://` URI ([`KafkaSinkConfig::from_uri`]), then
/// extended with rules that do not fit in a URI.
///
/// Every setter validates its input and names the parameter in its error.
#[derive(Clone, Debug)]
pub struct KafkaSinkConfig {
    // Read by the clients only (none is built without their cargo features).
    #[cfg_attr(
        not(any(feature = "librdkafka", feature = "kafka-rust")),
        allow(dead_code)
    )]
    pub(crate) brokers: Vec<String>,
    pub(crate) default_topic: String,
    pub(crate) protocol: Protocol,
    pub(crate) max_message_bytes: usize,
    pub(crate) required_acks: RequiredAcks,
    pub(crate) compression: Compression,
    pub(crate) client_id: String,
    pub(crate) max_retry: u32,
    pub(crate) retry_backoff: Duration,
    pub(crate) retry_backoff_max: Duration,
    pub(crate) ack_timeout: Duration,
    pub(crate) dial_timeout: Duration,
    pub(crate) batch_bytes: usize,
    pub(crate) batch_records: usize,
    pub(crate) linger: Duration,
    pub(crate) connections: usize,
    /// Whether `connections` was set (only kafka-rust takes it).
    pub(crate) connections_given: bool,
    pub(crate) client: ClientKind,
    pub(crate) message_timeout: Duration,
    /// `enable-idempotence` as given; `None` means on with `required-acks=-1`.
    pub(crate) idempotence: Option<bool>,
    pub(crate) security_params: SecurityParams,
    pub(crate) security: Security,
    pub(crate) topic_rules: Vec<(TableMatcher, TopicExpr)>,
    pub(crate) partition_rules: Vec<(TableMatcher, PartitionRule)>,
}

fn invalid(param: &str, reason: impl Into<String>) -> Error {
    Error::KafkaInvalidConfig {
        param: param.to_string(),
        reason: reason.into(),
    }
}

impl KafkaSinkConfig {
    /// Settings for `brokers` (`host:port` each) and the topic unmatched tables go to,
    /// with every parameter at its default.
    pub fn new(
        brokers: impl IntoIterator<Item = impl Into<String>>,
        default_topic: &str,
    ) -> Result<KafkaSinkConfig> {
        let brokers: Vec<String> = brokers.into_iter().map(Into::into).collect();
        if brokers.is_empty() {
            return Err(invalid("brokers", "at least one host:port is needed"));
        }
        for b in &brokers {
            validate_broker(b)?;
        }
        router::check_topic(default_topic).map_err(|reason| invalid("topic", reason))?;
        Ok(KafkaSinkConfig {
            brokers,
            default_topic: default_topic.to_string(),
            protocol: Protocol::CanalJson,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            required_acks: RequiredAcks::All,
            compression: Compression::None,
            client_id: DEFAULT_CLIENT_ID.to_string(),
            max_retry: DEFAULT_MAX_RETRY,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
            retry_backoff_max: DEFAULT_RETRY_BACKOFF_MAX,
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            dial_timeout: DEFAULT_DIAL_TIMEOUT,
            batch_bytes: DEFAULT_BATCH_BYTES,
            batch_records: DEFAULT_BATCH_RECORDS,
            linger: DEFAULT_LINGER,
            connections: DEFAULT_CONNECTIONS,
            connections_given: false,
            client: ClientKind::default(),
            message_timeout: DEFAULT_MESSAGE_TIMEOUT,
            idempotence: None,
            security_params: SecurityParams::default(),
            security: Security::default(),
            topic_rules: Vec::new(),
            partition_rules: Vec::new(),
        })
    }

    /// Parses `kafka://host:port[,host:port…]/default-topic?param=value&…`.
    ///
    /// | parameter | values | default |
    /// |---|---|---|
    /// | `kafka-client` | `librdkafka`, `kafka-rust` | `librdkafka` |
    /// | `protocol` | `canal-json`, `debezium` | `canal-json` |
    /// | `max-message-bytes` | bytes, ≥ 1024; one encoded event and one partition's share of a request stay under it | 1048576 |
    /// | `required-acks` | `-1`, `1`, `0` (at-most-once) | `-1` |
    /// | `enable-idempotence` | librdkafka: `true` (needs `-1`) or `false` | on with `-1` |
    /// | `compression` | `none`, `gzip`, `snappy`; `lz4`, `zstd` (librdkafka) | `none` |
    /// | `message-timeout-ms` | librdkafka: how long it may try one message, 10 or more | 10000 |
    /// | `kafka-client-id` | text | `changefeed` |
    /// | `max-retry` | retries of a failed send before the sink fails | 5 |
    /// | `retry-backoff-ms` / `retry-backoff-max-ms` | first wait, doubling up to the max | 100 / 2000 |
    /// | `ack-timeout-ms` | how long the broker may wait for replicas | 10000 |
    /// | `dial-timeout-ms` | bound on reaching a broker when (re)connecting | 10000 |
    /// | `batch-bytes` / `batch-records` | what the sink gathers before one flush | 4194304 / 16384 |
    /// | `linger-ms` | how long to wait for more batches before a flush | 0 |
    /// | `connections` | kafka-rust: producer connections, 1 to 16: a flush's requests go out on all of them at once, each topic-partition always on the same one | 2 |
    /// | `auto-create-topic` | `false` only: topics are created with Kafka's tools | `false` |
    /// | `enable-tls`, `ca`, `cert`, `key`, `insecure-skip-verify`, `sasl-mechanism`, `sasl-user`, `sasl-password`, `sasl-password-file`, `sasl-password-env` | librdkafka: TLS and SASL (`security.rs`) | off |
    ///
    /// Parameters the chosen client cannot honour (TLS, SASL, lz4, zstd and idempotence
    /// on kafka-rust; `connections` on librdkafka) are rejected, as are TiCDC parameters
    /// neither client honours; any other unknown parameter or bad value is a
    /// `CDC:ErrKafkaInvalidConfig` naming it. A password in the URI is percent-decoded:
    /// write `&` as `%26` (or use `sasl-password-file` / `sasl-password-env`).
    pub fn from_uri(uri: &str) -> Result<KafkaSinkConfig> {
        let parsed = SinkUri::parse(uri)?;
        if parsed.scheme != "kafka" {
            return Err(Error::uri(&parsed.raw, "not a kafka:// uri"));
        }
        KafkaSinkConfig::from_parsed(&parsed)
    }

    pub(crate) fn from_parsed(uri: &SinkUri) -> Result<KafkaSinkConfig> {
        let hosts = uri.authority.as_deref().unwrap_or("");
        if hosts.is_empty() {
            return Err(invalid(
                "brokers",
                "the uri names no broker; write kafka://host:port/topic",
            ));
        }
        let topic = uri.path.strip_prefix('/').unwrap_or(&uri.path);
        if topic.is_empty() {
            return Err(invalid(
                "topic",
                "the uri names no default topic; write kafka://host:port/topic",
            ));
        }
        let mut config = KafkaSinkConfig::new(hosts.split(','), topic)?;
        for (name, value) in &uri.params {
            if let Some((_, reason)) = UNSUPPORTED.iter().find(|(n, _)| n == name) {
                return Err(invalid(name, *reason));
            }
            if !PARAMS.contains(&name.as_str())
                && !crate::sink::kafka::security::PARAMS.contains(&name.as_str())
            {
                return Err(invalid(
                    name,
                    format!(
                        "unknown parameter; expected one of {}, {}",
                        PARAMS.join(", "),
                        crate::sink::kafka::security::PARAMS.join(", ")
                    ),
                ));
            }
            config.set(name, value)?;
        }
        config.security = config.security_params.resolve()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that the settings fit together and that the chosen client can honour
    /// them; the error names the parameter.
    pub(crate) fn validate(&self) -> Result<()> {
        match self.client {
            ClientKind::KafkaRust => {
                if let Some(param) = Security::first_param(&self.security_params) {
                    let reason = if param.starts_with("sasl") {
                        SASL_REASON
                    } else {
                        TLS_REASON
                    };
                    return Err(invalid(param, reason));
                }
                if matches!(self.compression, Compression::Lz4 | Compression::Zstd) {
                    return Err(invalid(
                        "compression",
                        format!(
                            "{} needs kafka-client=librdkafka (protocol v0 carries none, gzip or snappy)",
                            self.compression.name()
                        ),
                    ));
                }
                if self.idempotence == Some(true) {
                    return Err(invalid(
                        "enable-idempotence",
                        "the kafka-rust client has no idempotent producer; use kafka-client=librdkafka",
                    ));
                }
            }
            ClientKind::Librdkafka => {
                if self.connections_given {
                    return Err(invalid(
                        "connections",
                        "only the kafka-rust client takes it: librdkafka keeps one connection per broker and pipelines its requests",
                    ));
                }
                if self.idempotence == Some(true) && self.required_acks != RequiredAcks::All {
                    return Err(invalid(
                        "enable-idempotence",
                        "the idempotent producer needs required-acks=-1",
                    ));
                }
                // librdkafka's own ranges (CONFIGURATION.md), checked here so that a bad
                // value fails when the sink is built, not on every connect.
                let ms = |d: Duration| d.as_millis();
                for (param, value, min, max) in [
                    ("retry-backoff-ms", ms(self.retry_backoff), 1, 300_000),
                    (
                        "retry-backoff-max-ms",
                        ms(self.retry_backoff_max),
                        1,
                        300_000,
                    ),
                    ("ack-timeout-ms", ms(self.ack_timeout), 1, 900_000),
                    // Above librdkafka's linger.ms, which the client sets to 2.
                    (
                        "message-timeout-ms",
                        ms(self.message_timeout),
                        10,
                        2_147_483_647,
                    ),
                ] {
                    if !(min..=max).contains(&value) {
                        return Err(invalid(
                            param,
                            format!("{value}; librdkafka takes {min} to {max}"),
                        ));
                    }
                }
                if self.client_id.contains('\0') {
                    return Err(invalid("kafka-client-id", "contains a NUL character"));
                }
                self.security.check_no_nul()?;
            }
        }
        Ok(())
    }

    /// Whether the librdkafka client runs an idempotent producer: on by default with
    /// `required-acks=-1`, off otherwise (idempotence needs every in-sync replica's ack).
    pub fn idempotent(&self) -> bool {
        self.client == ClientKind::Librdkafka
            && self.required_acks == RequiredAcks::All
            && self.idempotence != Some(false)
    }

    /// The client this config names.
    pub fn client(&self) -> ClientKind {
        self.client
    }

    /// Sets one parameter by its URI name.
    fn set(&mut self, name: &str, value: &str) -> Result<()> {
        if self.security_params.set(name, value)? {
            return Ok(());
        }
        match name {
            "protocol" => {
                self.protocol = match value {
                    "canal-json" => Protocol::CanalJson,
                    "debezium" => Protocol::Debezium,
                    _ => return Err(invalid(name, format!("{value:?}; expected canal-json or debezium"))),
                }
            }
            "max-message-bytes" => {
                self.max_message_bytes = number(name, value, 1024, 1 << 30)?;
            }
            "required-acks" => {
                self.required_acks = match value {
                    "-1" | "all" => RequiredAcks::All,
                    "1" => RequiredAcks::One,
                    "0" => RequiredAcks::None,
                    _ => return Err(invalid(name, format!("{value:?}; expected -1, 1 or 0"))),
                }
            }
            "compression" => {
                self.compression = match value {
                    "none" => Compression::None,
                    "gzip" => Compression::Gzip,
                    "snappy" => Compression::Snappy,
                    "lz4" => Compression::Lz4,
                    "zstd" => Compression::Zstd,
                    _ => {
                        return Err(invalid(
                            name,
                            format!("{value:?}; expected none, gzip, snappy, lz4 or zstd"),
                        ))
                    }
                }
            }
            "kafka-client-id" => {
                if value.is_empty() || value.len() > 255 {
                    return Err(invalid(name, "must be 1 to 255 characters"));
                }
                self.client_id = value.to_string();
            }
            "max-retry" => self.max_retry = number(name, value, 0, 100)? as u32,
            "retry-backoff-ms" => self.retry_backoff = millis(name, value, 1)?,
            "retry-backoff-max-ms" => self.retry_backoff_max = millis(name, value, 1)?,
            "ack-timeout-ms" => self.ack_timeout = millis(name, value, 1)?,
            "dial-timeout-ms" => self.dial_timeout = millis(name, value, 1)?,
            "batch-bytes" => self.batch_bytes = number(name, value, 1, 1 << 30)?,
            "batch-records" => self.batch_records = number(name, value, 1, 1 << 24)?,
            "linger-ms" => self.linger = millis(name, value, 0)?,
            "connections" => {
                self.connections = number(name, value, 1, MAX_CONNECTIONS)?;
                self.connections_given = true;
            }
            "kafka-client" => {
                self.client = match value {
                    "librdkafka" => ClientKind::Librdkafka,
                    "kafka-rust" => ClientKind::KafkaRust,
                    _ => {
                        return Err(invalid(
                            name,
                            format!("{value:?}; expected librdkafka or kafka-rust"),
                        ))
                    }
                }
            }
            "message-timeout-ms" => self.message_timeout = millis(name, value, 1)?,
            "enable-idempotence" => {
                self.idempotence = Some(match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(invalid(name, format!("{value:?}; expected true or false"))),
                })
            }
            "auto-create-topic" => match value {
                "false" => {}
                "true" => {
                    return Err(invalid(
                        name,
                        "creating topics is not supported: a missing topic is reported (CDC:ErrKafkaTopicNotExists), never created; create topics with Kafka's tools",
                    ))
                }
                _ => return Err(invalid(name, format!("{value:?}; expected true or false"))),
            },
            _ => return Err(invalid(name, "unknown parameter")),
        }
        if self.retry_backoff > self.retry_backoff_max {
            self.retry_backoff_max = self.retry_backoff;
        }
        Ok(())
    }

    /// Sets one parameter by its URI name and value, as in a `kafka://` URI (the table
    /// in [`from_uri`](KafkaSinkConfig::from_uri)): the way to set from code what has no
    /// setter of its own, e.g. `.param("sasl-password-env", "KAFKA_PASSWORD")`.
    pub fn param(mut self, name: &str, value: &str) -> Result<Self> {
        if let Some((_, reason)) = UNSUPPORTED.iter().find(|(n, _)| *n == name) {
            return Err(invalid(name, *reason));
        }
        if !PARAMS.contains(&name) && !crate::sink::kafka::security::PARAMS.contains(&name) {
            return Err(invalid(name, "unknown parameter"));
        }
        self.set(name, value)?;
        self.security = self.security_params.resolve()?;
        Ok(self)
    }

    /// `kafka-client`. Default: [`ClientKind::default`].
    pub fn kafka_client(mut self, client: ClientKind) -> Self {
        self.client = client;
        self
    }

    /// The message format. Default: canal-json.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// `required-acks`. Default: all (-1).
    pub fn required_acks(mut self, acks: RequiredAcks) -> Self {
        self.required_acks = acks;
        self
    }

    /// `max-retry` and the backoff between retries (first wait, doubling up to `max`).
    pub fn retry(mut self, max_retry: u32, first: Duration, max: Duration) -> Result<Self> {
        if first.is_zero() || max < first {
            return Err(invalid(
                "retry-backoff-ms",
                "must be positive and at most retry-backoff-max-ms",
            ));
        }
        self.max_retry = max_retry;
        self.retry_backoff = first;
        self.retry_backoff_max = max;
        Ok(self)
    }

    /// `connections`: how many producer connections the sink opens (1 to
    /// [`MAX_CONNECTIONS`]). The `kafka` crate's client is synchronous, one request in
    /// flight per connection; with more than one, each request of a flush is split by
    /// partition across the connections and the parts are sent at once, one thread
    /// each. A topic-partition always goes through the same connection, and the next
    /// request waits for every part, so per-partition order is kept (with
    /// `required-acks` 0 too, where nothing is confirmed: one socket per partition).
    pub fn connections(mut self, connections: usize) -> Result<Self> {
        self.connections = number("connections", &connections.to_string(), 1, MAX_CONNECTIONS)?;
        self.connections_given = true;
        Ok(self)
    }

    /// `max-message-bytes`.
    pub fn max_message_bytes(mut self, bytes: usize) -> Result<Self> {
        self.max_message_bytes = number("max-message-bytes", &bytes.to_string(), 1024, 1 << 30)?;
        Ok(self)
    }

    /// Sends the tables `matcher` matches to the topic `expression` names; rules are
    /// tried in the order they were added, and unmatched tables go to the default topic.
    ///
    /// `matcher` is `schema.table` where each part may use `*` and `?` wildcards
    /// (`db.*`, `*.*`, `db.orders_?`). `expression` is
    /// `[prefix]{schema}[middle][{table}][suffix]`, the fixed parts made of
    /// `[A-Za-z0-9._-]`; characters of schema and table names outside that set become
    /// `_`, and the result must be at most 249 characters.
    pub fn topic_rule(mut self, matcher: &str, expression: &str) -> Result<Self> {
        let m = TableMatcher::parse(matcher).map_err(|r| invalid("topic-rule matcher", r))?;
        let e = TopicExpr::parse(expression).map_err(|r| invalid("topic-rule expression", r))?;
        self.topic_rules.push((m, e));
        Ok(self)
    }

    /// Chooses partitions for the tables `matcher` matches by `rule`; rules are tried in
    /// order, and unmatched tables use [`PartitionRule::Table`].
    pub fn partition_rule(mut self, matcher: &str, rule: PartitionRule) -> Result<Self> {
        let m = TableMatcher::parse(matcher).map_err(|r| invalid("partition-rule matcher", r))?;
        if let PartitionRule::Columns(cols) = &rule {
            if cols.is_empty() {
                return Err(invalid(
                    "partition-rule columns",
                    "name at least one column",
                ));
            }
        }
        self.partition_rules.push((m, rule));
        Ok(self)
    }

    pub(crate) fn router(&self) -> Router {
        Router::new(
            self.default_topic.clone(),
            self.topic_rules.clone(),
            self.partition_rules.clone(),
        )
    }
}

fn number(name: &str, value: &str, min: usize, max: usize) -> Result<usize> {
    match value.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(invalid(
            name,
            format!("{value:?}; expected an integer from {min} to {max}"),
        )),
    }
}

fn millis(name: &str, value: &str, min: u64) -> Result<Duration> {
    match value.parse::<u64>() {
        Ok(n) if n >= min && n <= 24 * 3600 * 1000 => Ok(Duration::from_millis(n)),
        _ => Err(invalid(
            name,
            format!("{value:?}; expected milliseconds from {min} to 86400000"),
        )),
    }
}

fn validate_broker(broker: &str) -> Result<()> {
    // Not user:password@host (its text would reach librdkafka's logs and our errors).
    if broker.contains(['@', '/', '\0']) || broker.contains(char::is_whitespace) {
        return Err(invalid(
            "brokers",
            "a broker is host:port (no credentials, paths or spaces; SASL has its own parameters)",
        ));
    }
    let Some((host, port)) = broker.rsplit_once(':') else {
        return Err(invalid("brokers", format!("{broker:?} is not host:port")));
    };
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(invalid("brokers", format!("{broker:?} is not host:port")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_parameter() {
        let c = KafkaSinkConfig::from_uri(
            "kafka://a:9092,b:9093/cdc-events?protocol=debezium&max-message-bytes=2048&required-acks=1&compression=gzip&kafka-client-id=me&max-retry=3&retry-backoff-ms=10&retry-backoff-max-ms=50&ack-timeout-ms=500&dial-timeout-ms=700&batch-bytes=1000&batch-records=10&linger-ms=5&connections=3&auto-create-topic=false&kafka-client=kafka-rust",
        )
        .unwrap();
        assert_eq!(c.brokers, ["a:9092", "b:9093"]);
        assert_eq!(c.default_topic, "cdc-events");
        assert_eq!(c.protocol, Protocol::Debezium);
        assert_eq!(c.max_message_bytes, 2048);
        assert_eq!(c.required_acks, RequiredAcks::One);
        assert_eq!(c.compression, Compression::Gzip);
        assert_eq!(c.client_id, "me");
        assert_eq!(c.max_retry, 3);
        assert_eq!(c.retry_backoff, Duration::from_millis(10));
        assert_eq!(c.retry_backoff_max, Duration::from_millis(50));
        assert_eq!(c.ack_timeout, Duration::from_millis(500));
        assert_eq!(c.dial_timeout, Duration::from_millis(700));
        assert_eq!((c.batch_bytes, c.batch_records), (1000, 10));
        assert_eq!(c.linger, Duration::from_millis(5));
        assert_eq!(c.connections, 3);
        assert_eq!(c.client(), ClientKind::KafkaRust);
        let c = KafkaSinkConfig::from_uri(
            "kafka://a:9092/t?kafka-client=librdkafka&compression=lz4&message-timeout-ms=2500&enable-idempotence=false",
        )
        .unwrap();
        assert_eq!(c.client(), ClientKind::Librdkafka);
        assert_eq!(c.compression, Compression::Lz4);
        assert_eq!(c.message_timeout, Duration::from_millis(2500));
        assert!(!c.idempotent(), "enable-idempotence=false");
        let c = KafkaSinkConfig::from_uri("kafka://a:9092/t").unwrap();
        assert_eq!(c.client(), ClientKind::Librdkafka, "the default client");
        assert!(c.idempotent(), "idempotent by default with acks -1");
        let c = KafkaSinkConfig::from_uri("kafka://a:9092/t?required-acks=1").unwrap();
        assert!(!c.idempotent(), "idempotence needs acks -1");
    }

    #[test]
    fn rejects_bad_input_naming_the_parameter() {
        let cases = [
            ("kafka:///t", "brokers"),
            ("kafka://h:9092", "topic"),
            ("kafka://h:9092/", "topic"),
            ("kafka://h/t", "brokers"),
            ("kafka://h:0/t", "brokers"),
            ("kafka://h:9092/bad topic", "topic"),
            ("kafka://h:9092/t?protocol=avro", "protocol"),
            ("kafka://h:9092/t?required-acks=2", "required-acks"),
            ("kafka://h:9092/t?compression=brotli", "compression"),
            (
                "kafka://h:9092/t?compression=zstd&kafka-client=kafka-rust",
                "zstd needs kafka-client=librdkafka",
            ),
            ("kafka://h:9092/t?kafka-client=java", "kafka-client"),
            ("kafka://h:9092/t?connections=2", "only the kafka-rust client"),
            (
                "kafka://h:9092/t?enable-idempotence=true&required-acks=1",
                "needs required-acks=-1",
            ),
            ("kafka://h:9092/t?message-timeout-ms=0", "message-timeout-ms"),
            ("kafka://h:9092/t?sasl-mechanism=gssapi", "sasl-mechanism"),
            ("kafka://h:9092/t?sasl-gssapi-user=u", "no GSSAPI"),
            ("kafka://h:9092/t?kafka-version=3.9.0", "negotiates"),
            ("kafka://h:9092/t?max-message-bytes=10", "max-message-bytes"),
            ("kafka://h:9092/t?max-retry=-1", "max-retry"),
            ("kafka://h:9092/t?linger-ms=soon", "linger-ms"),
            ("kafka://h:9092/t?kafka-client=kafka-rust&connections=0", "connections"),
            ("kafka://h:9092/t?kafka-client=kafka-rust&connections=17", "connections"),
            ("kafka://h:9092/t?colour=blue", "colour"),
            (
                "kafka://h:9092/t?auto-create-topic=true",
                "not supported",
            ),
            (
                "kafka://h:9092/t?enable-tls=true&kafka-client=kafka-rust",
                "TLS is not supported by the kafka-rust client",
            ),
            (
                "kafka://h:9092/t?kafka-client=kafka-rust&sasl-mechanism=plain&sasl-user=u&sasl-password=p",
                "SASL is not supported by the kafka-rust client",
            ),
        ];
        for (uri, expected) in cases {
            let e = KafkaSinkConfig::from_uri(uri).unwrap_err();
            assert_eq!(e.code(), "CDC:ErrKafkaInvalidConfig", "{uri}: {e}");
            assert!(e.to_string().contains(expected), "{uri}: {e}");
        }
    }
}
