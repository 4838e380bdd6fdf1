//! A real Kafka 4.x broker and the kafka-rust client: the sink must refuse it at once
//! with `CDC:ErrKafkaUnsupportedBroker` (Kafka 4.0 removed the protocol v0 requests the
//! `kafka` crate sends), never retry: with a retry budget of 50 × 1 s the error still
//! comes within seconds, and the sink logs no retry.
//!
//! Its own test binary: it installs a process-wide logger to count the sink's retries.

#[path = "support/kafka.rs"]
mod kafka_support;

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use changefeed::sink::kafka::{ClientKind, KafkaSink, KafkaSinkConfig};
use changefeed::{DispatcherManager, Error};
use common::{errors, heartbeats_until_closed, row, table, wait_no_threads, HANG_GUARD};
use crossbeam_channel::bounded;
use kafka_support::{fetch_min_version, Broker, KAFKA_4};

/// The refusal must come this soon after the start: far below one retry round of the
/// budget below (1 s per retry), and below what the brief allows (10 s).
const REPORT_WITHIN: Duration = Duration::from_secs(5);

/// Keeps every warning and error the crate logs.
struct Recorder(Mutex<Vec<String>>);

impl log::Log for Recorder {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) && record.target().starts_with("changefeed") {
            self.0
                .lock()
                .unwrap()
                .push(format!("{} {}", record.level(), record.args()));
        }
    }
    fn flush(&self) {}
}

static LOG: Recorder = Recorder(Mutex::new(Vec::new()));

#[test]
fn kafka_4_is_refused_at_once_without_retrying() {
    log::set_logger(&LOG).expect("no other logger in this binary");
    log::set_max_level(log::LevelFilter::Warn);

    let broker = Broker::start(KAFKA_4);
    broker.create_topic("k4", 1);
    // The harness's own check: this really is a broker that dropped Fetch v0-v3.
    let fetch_min = fetch_min_version(&broker.bootstrap(), Duration::from_secs(10)).unwrap();
    assert!(fetch_min.is_some_and(|v| v >= 4), "Fetch min {fetch_min:?}");

    let config = KafkaSinkConfig::new([broker.bootstrap()], "k4")
        .unwrap()
        .kafka_client(ClientKind::KafkaRust)
        .retry(50, Duration::from_secs(1), Duration::from_secs(1))
        .unwrap();
    let (tx, heartbeats) = bounded(1024);
    let started = Instant::now();
    let manager = DispatcherManager::builder("k4u")
        .maintainer(tx)
        .heartbeat_interval(Duration::from_millis(50))
        .start(KafkaSink::new(config).expect("a valid kafka config"))
        .unwrap();
    // The sink may already have failed (it probes as it starts): then this is refused too.
    let added = manager.add_dispatcher(table(0));

    // The error heartbeat, timed.
    let report = loop {
        let hb = heartbeats
            .recv_timeout(HANG_GUARD)
            .expect("no RunningError within the hang guard");
        if let Some(e) = hb.error {
            break e;
        }
    };
    let after = started.elapsed();
    println!("Kafka {}: {:?} after {after:?}", broker.version(), report);
    assert_eq!(report.code, "CDC:ErrKafkaUnsupportedBroker");
    assert!(
        report.message.contains("4.0 or newer") && report.message.contains("not support"),
        "says Kafka >= 4.0 is not supported: {}",
        report.message
    );
    assert!(
        report.message.contains(&broker.bootstrap()),
        "names the broker: {}",
        report.message
    );
    assert!(
        after < REPORT_WITHIN,
        "refused after {after:?}: did the sink retry?"
    );

    let rest = heartbeats_until_closed(&heartbeats);
    assert!(errors(&rest).is_empty(), "exactly one RunningError");
    let error = manager.wait().unwrap_err();
    assert!(
        matches!(&error, Error::KafkaUnsupportedBroker { broker: b, .. } if *b == broker.bootstrap()),
        "{error:?}"
    );
    assert!(!error.is_retryable(), "restarting cannot help: {error}");
    let refused = match added {
        Ok(d) => d.send(row(&table(0), 1, 1, 10)).unwrap_err().cause,
        Err(e) => e,
    };
    assert_eq!(refused.code(), "CDC:ErrKafkaUnsupportedBroker");
    assert!(wait_no_threads("cf-k4u-", HANG_GUARD).is_empty());

    let logged = LOG.0.lock().unwrap().clone();
    println!("sink warnings: {logged:?}");
    let retries: Vec<_> = logged.iter().filter(|l| l.contains("retry")).collect();
    assert!(retries.is_empty(), "the sink retried: {retries:?}");
}
