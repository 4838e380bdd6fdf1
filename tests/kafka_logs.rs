//! The kafka crate logs through `tracing`; with tracing's `log` feature its records
//! reach the `log` facade, and so env_logger. Its own binary: it installs a logger.

use std::sync::Mutex;

struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {}", record.target(), record.args()));
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

#[test]
fn kafka_crate_records_reach_the_log_facade() {
    log::set_logger(&CAPTURE).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    // Port 1 on loopback: nothing listens, the client logs its attempt and fails.
    let mut client = kafka::client::KafkaClient::new(vec!["127.0.0.1:1".to_string()]);
    assert!(client.load_metadata_all().is_err());
    let records = CAPTURE.0.lock().unwrap();
    assert!(
        records.iter().any(|r| r.starts_with("kafka")),
        "no record from the kafka crate: {records:?}"
    );
}
