//! The librdkafka configuration a [`KafkaSinkConfig`] stands for: every property the
//! sink sets, and why (see `CONFIGURATION.md` of librdkafka for each).
//!
//! | property | value | why |
//! |---|---|---|
//! | `bootstrap.servers`, `client.id` | the URI's brokers, `kafka-client-id` | |
//! | `acks` | `required-acks` (`all`, `1`, `0`) | |
//! | `enable.idempotence` | on with `required-acks=-1` unless `enable-idempotence=false` | no duplicates from librdkafka's own retries, order kept with 5 requests in flight |
//! | `max.in.flight.requests.per.connection` | 5 with idempotence, else 1 | without idempotence a retried request could land after a later one; one in flight keeps each partition in order |
//! | `compression.type` | `compression` | |
//! | `message.timeout.ms` | `message-timeout-ms` (10 s) | how long librdkafka retries a message before the sink's own retry loop takes over |
//! | `request.timeout.ms` | `ack-timeout-ms` | how long the broker may wait for replicas |
//! | `socket.connection.setup.timeout.ms` | `dial-timeout-ms` | |
//! | `retry.backoff.ms`, `retry.backoff.max.ms`, `reconnect.backoff.ms`, `reconnect.backoff.max.ms` | `retry-backoff-ms`, `retry-backoff-max-ms` | |
//! | `message.max.bytes` | `max-message-bytes` + 1 KiB, at least 1,000,000 | librdkafka refuses a single message above it locally; the sink's encoder already refused anything above `max-message-bytes` |
//! | `batch.size` | `max-message-bytes` | a partition's message set in one request stays under the size the topic accepts |
//! | `queue.buffering.max.kbytes` | 2 × the larger of `batch-bytes` and `max-message-bytes` + 1 KiB | librdkafka copies each message into its queue: at most one flush's worth is there at a time, so the engine's memory quota (which holds the originals until the flush is confirmed) stays the bound |
//! | `queue.buffering.max.messages` | 2 × `batch-records`, at least 100,000 | same |
//! | `linger.ms` | 2 | the sink hands librdkafka a whole flush at once; a short linger lets it batch the flush's tail without waiting long |
//! | `allow.auto.create.topics` | `false` | a missing topic is reported (`CDC:ErrKafkaTopicNotExists`), never waited for or created |
//! | `log_level` | 6 (info) | connection failures are logged at info (facility `FAIL`): the context classifies them (TLS/PLAINTEXT mismatch) and forwards them to `log` (target `librdkafka`), where the program's logger filters them |
//! | `security.protocol`, `ssl.*`, `sasl.*` | the security parameters (`security.rs`) | `ssl.endpoint.identification.algorithm=https` and `enable.ssl.certificate.verification=true` unless `insecure-skip-verify=true` |

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;

use crate::error::Error;

use crate::sink::kafka::config::{KafkaSinkConfig, RequiredAcks};

/// librdkafka's largest `queue.buffering.max.kbytes`.
const MAX_QUEUE_KBYTES: usize = 2_147_483_647;

/// The client configuration for `config`. It holds the SASL password: never log it or
/// print it with `Debug`.
pub(super) fn client_config(config: &KafkaSinkConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    let ms = |d: std::time::Duration| d.as_millis().min(i32::MAX as u128).to_string();
    c.set("bootstrap.servers", config.brokers.join(","))
        .set("client.id", &config.client_id)
        .set(
            "acks",
            match config.required_acks {
                RequiredAcks::All => "all",
                RequiredAcks::One => "1",
                RequiredAcks::None => "0",
            },
        )
        .set("enable.idempotence", config.idempotent().to_string())
        // Without idempotence, a retried request could land after a later one: one
        // request in flight per connection keeps each partition in order.
        .set(
            "max.in.flight.requests.per.connection",
            if config.idempotent() { "5" } else { "1" },
        )
        .set("compression.type", config.compression.name())
        .set("message.timeout.ms", ms(config.message_timeout))
        .set("request.timeout.ms", ms(config.ack_timeout))
        .set(
            "socket.connection.setup.timeout.ms",
            ms(config.dial_timeout.max(std::time::Duration::from_secs(1))),
        )
        .set("retry.backoff.ms", ms(config.retry_backoff))
        .set("retry.backoff.max.ms", ms(config.retry_backoff_max))
        .set("reconnect.backoff.ms", ms(config.retry_backoff))
        .set("reconnect.backoff.max.ms", ms(config.retry_backoff_max))
        .set(
            "message.max.bytes",
            (config.max_message_bytes + 1024)
                .clamp(1_000_000, 1_000_000_000)
                .to_string(),
        )
        // librdkafka refuses a message that would take its queue over this, even when
        // the queue is empty: room for two flushes and for two of the largest messages.
        .set(
            "queue.buffering.max.kbytes",
            (config
                .batch_bytes
                .max(config.max_message_bytes + 1024)
                .saturating_mul(2)
                / 1024)
                .clamp(1024, MAX_QUEUE_KBYTES)
                .to_string(),
        )
        // One message set per partition per request stays under max-message-bytes, as
        // the broker's topic limit expects (kafka-rust's request shape).
        .set(
            "batch.size",
            config
                .max_message_bytes
                .clamp(1, i32::MAX as usize)
                .to_string(),
        )
        .set(
            "queue.buffering.max.messages",
            config
                .batch_records
                .saturating_mul(2)
                .clamp(100_000, 2_147_483_647)
                .to_string(),
        )
        .set("linger.ms", "2")
        .set("allow.auto.create.topics", "false")
        .set("security.protocol", config.security.protocol());
    if let Some(tls) = &config.security.tls {
        if let Some(ca) = &tls.ca {
            c.set("ssl.ca.location", ca.display().to_string());
        }
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            c.set("ssl.certificate.location", cert.display().to_string())
                .set("ssl.key.location", key.display().to_string());
        }
        if tls.insecure_skip_verify {
            c.set("enable.ssl.certificate.verification", "false")
                .set("ssl.endpoint.identification.algorithm", "none");
        } else {
            c.set("enable.ssl.certificate.verification", "true")
                .set("ssl.endpoint.identification.algorithm", "https");
        }
    }
    if let Some(sasl) = &config.security.sasl {
        c.set("sasl.mechanisms", sasl.mechanism.kafka_name())
            .set("sasl.username", &sasl.user)
            .set("sasl.password", sasl.password.expose());
    }
    // librdkafka's own level follows the `log` facade's at creation (off without a
    // logger); its connection failures (facility FAIL, often at info level) must reach
    // the context whatever the program logs, to be classified.
    c.set_log_level(RDKafkaLogLevel::Info);
    c
}

/// Our parameter behind a librdkafka property [`client_config`] sets.
fn param_of(property: &str) -> &str {
    match property {
        "bootstrap.servers" => "brokers",
        "client.id" => "kafka-client-id",
        "acks" => "required-acks",
        "enable.idempotence" => "enable-idempotence",
        "compression.type" => "compression",
        "message.timeout.ms" => "message-timeout-ms",
        "request.timeout.ms" => "ack-timeout-ms",
        "socket.connection.setup.timeout.ms" => "dial-timeout-ms",
        "retry.backoff.ms" | "reconnect.backoff.ms" => "retry-backoff-ms",
        "retry.backoff.max.ms" | "reconnect.backoff.max.ms" => "retry-backoff-max-ms",
        "message.max.bytes" | "batch.size" => "max-message-bytes",
        "queue.buffering.max.kbytes" => "batch-bytes",
        "queue.buffering.max.messages" => "batch-records",
        "ssl.ca.location" => "ca",
        "ssl.certificate.location" => "cert",
        "ssl.key.location" => "key",
        "sasl.mechanisms" => "sasl-mechanism",
        "sasl.username" => "sasl-user",
        "sasl.password" => "sasl-password",
        other => other,
    }
}

/// librdkafka's refusal of a property as `CDC:ErrKafkaInvalidConfig` naming our
/// parameter; librdkafka's words, with the password (if any) redacted.
pub(super) fn config_error(config: &KafkaSinkConfig, error: KafkaError) -> Error {
    let redact = |text: String| match config.security.secret() {
        Some(secret) => secret.redact(&text),
        None => text,
    };
    match error {
        KafkaError::ClientConfig(_, description, property, _) => Error::KafkaInvalidConfig {
            param: param_of(&property).to_string(),
            reason: format!("librdkafka refuses it: {}", redact(description)),
        },
        other => Error::KafkaInvalidConfig {
            param: "kafka-client".to_string(),
            reason: format!(
                "librdkafka refuses the configuration: {}",
                redact(other.to_string())
            ),
        },
    }
}

impl KafkaSinkConfig {
    /// Every librdkafka property the librdkafka client sets for this config, as
    /// (name, value) pairs: what [`client_config`] builds. For the performance report's
    /// raw-librdkafka anchor (`benches/report.rs`), which must run with exactly the
    /// client's settings; not part of the supported API. The SASL password (and any
    /// other `*password*` property) is given as `[redacted]`.
    #[doc(hidden)]
    pub fn librdkafka_properties(&self) -> Vec<(String, String)> {
        client_config(self)
            .config_map()
            .into_iter()
            .map(|(k, v)| {
                let v = if k.contains("password") {
                    "[redacted]".to_string()
                } else {
                    v.to_string()
                };
                (k.to_string(), v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let uri = format!(
            "kafka://a:1,b:2/t?required-acks=1&compression=zstd&batch-bytes=8388608&ca={}&sasl-mechanism=scram-sha-512&sasl-user=alice&sasl-password=pw&message-timeout-ms=1234",
            ca.display()
        );
        let c = client_config(&KafkaSinkConfig::from_uri(&uri).unwrap());
        let get = |k: &str| c.get(k).unwrap_or("<unset>").to_string();
        assert_eq!(get("bootstrap.servers"), "a:1,b:2");
        assert_eq!(get("acks"), "1");
        assert_eq!(
            get("enable.idempotence"),
            "false",
            "idempotence needs acks all"
        );
        assert_eq!(get("compression.type"), "zstd");
        assert_eq!(get("queue.buffering.max.kbytes"), "16384");
        assert_eq!(get("message.timeout.ms"), "1234");
        assert_eq!(get("security.protocol"), "sasl_ssl");
        assert_eq!(get("sasl.mechanisms"), "SCRAM-SHA-512");
        assert_eq!(get("ssl.endpoint.identification.algorithm"), "https");
        assert_eq!(get("allow.auto.create.topics"), "false");
        let c = client_config(&KafkaSinkConfig::from_uri("kafka://a:1/t").unwrap());
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("security.protocol"), Some("plaintext"));
    }
}
