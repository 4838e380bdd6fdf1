//! Smoke test of the real-broker harness (tests/support/kafka.rs): a Kafka 3.9 broker
//! starts, takes a topic, and round-trips records sent with the `kafka` crate; a 4.x broker
//! starts too and is told apart from 3.x by its ApiVersions answer.

#[path = "support/kafka.rs"]
mod kafka_support;

use std::time::{Duration, Instant};

use kafka::producer::{Producer, Record, RequiredAcks};
use kafka_support::{fetch_min_version, read_all, Broker, KAFKA_3, KAFKA_4};

#[test]
fn kafka_3_broker_round_trips_records() {
    let t0 = Instant::now();
    let broker = Broker::start(KAFKA_3);
    let started = t0.elapsed();
    let t1 = Instant::now();
    broker.create_topic("smoke", 3);
    let created = t1.elapsed();
    eprintln!("kafka {KAFKA_3}: broker started in {started:?}, topic created in {created:?}");

    let mut producer = Producer::from_hosts(vec![broker.bootstrap()])
        .with_ack_timeout(Duration::from_secs(5))
        .with_required_acks(RequiredAcks::All)
        .with_client_id("changefeed-smoke".to_owned())
        .create()
        .expect("producer");
    let partitions = producer
        .client()
        .topics()
        .partitions("smoke")
        .map(|ps| ps.len())
        .expect("topic in the producer's metadata");
    assert_eq!(partitions, 3);

    let sent: Vec<(i32, String, String)> = (0..30)
        .map(|i| (i % 3, format!("key-{i}"), format!("value-{i}")))
        .collect();
    let records: Vec<Record<'_, &[u8], &[u8]>> = sent
        .iter()
        .map(|(p, k, v)| {
            Record::from_key_value("smoke", k.as_bytes(), v.as_bytes()).with_partition(*p)
        })
        .collect();
    let confirms = producer.send_all(&records).expect("send_all");
    let mut confirmed = 0;
    for confirm in &confirms {
        assert_eq!(confirm.topic, "smoke");
        for pc in &confirm.partition_confirms {
            assert_eq!(pc.offset, Ok(0), "partition {} not confirmed", pc.partition);
            confirmed += 1;
        }
    }
    assert_eq!(confirmed, 3, "one confirmation per partition: {confirms:?}");

    let got = read_all(
        &broker.bootstrap(),
        "smoke",
        sent.len(),
        Duration::from_secs(30),
    );
    assert_eq!(got.len(), sent.len());
    for p in 0..3 {
        let expected: Vec<(String, String)> = sent
            .iter()
            .filter(|(sp, _, _)| *sp == p)
            .map(|(_, k, v)| (k.clone(), v.clone()))
            .collect();
        let read: Vec<(String, String)> = got
            .iter()
            .filter(|m| m.partition == p)
            .map(|m| {
                (
                    String::from_utf8(m.key.clone()).unwrap(),
                    String::from_utf8(m.value.clone()).unwrap(),
                )
            })
            .collect();
        assert_eq!(read, expected, "partition {p}: content and order");
        let offsets: Vec<i64> = got
            .iter()
            .filter(|m| m.partition == p)
            .map(|m| m.offset)
            .collect();
        assert_eq!(offsets, (0..10).collect::<Vec<i64>>());
    }
    assert_eq!(
        fetch_min_version(&broker.bootstrap(), Duration::from_secs(5)).expect("ApiVersions"),
        Some(0)
    );
}

#[test]
fn kafka_broker_restarts_on_same_port_with_its_data() {
    let mut broker = Broker::start(KAFKA_3);
    broker.create_topics(&[("kept", 1), ("kept.other", 4)]);
    let bootstrap = broker.bootstrap();
    let mut producer = Producer::from_hosts(vec![bootstrap.clone()])
        .with_required_acks(RequiredAcks::All)
        .create()
        .expect("producer");
    let topics = producer.client().topics();
    assert_eq!(topics.partitions("kept").map(|ps| ps.len()), Some(1));
    assert_eq!(topics.partitions("kept.other").map(|ps| ps.len()), Some(4));
    let before = [Record::from_value("kept", "before".as_bytes()).with_partition(0)];
    let confirms = producer.send_all(&before).expect("send_all");
    assert_eq!(confirms[0].partition_confirms[0].offset, Ok(0));

    broker.kill();
    assert!(!broker.is_running());
    assert!(
        std::net::TcpStream::connect(&bootstrap).is_err(),
        "nothing listens on {bootstrap} after kill"
    );
    let t0 = Instant::now();
    broker.restart();
    eprintln!(
        "kafka {KAFKA_3}: restart after SIGKILL took {:?}",
        t0.elapsed()
    );
    assert_eq!(broker.bootstrap(), bootstrap);

    // The crate never reconnects: a new producer is needed after a restart.
    let mut producer = Producer::from_hosts(vec![bootstrap.clone()])
        .with_required_acks(RequiredAcks::All)
        .create()
        .expect("producer after restart");
    let after = [Record::from_value("kept", "after".as_bytes()).with_partition(0)];
    let confirms = producer.send_all(&after).expect("send_all after restart");
    assert_eq!(confirms[0].partition_confirms[0].offset, Ok(1));
    let got = read_all(&bootstrap, "kept", 2, Duration::from_secs(30));
    let values: Vec<&[u8]> = got.iter().map(|m| m.value.as_slice()).collect();
    assert_eq!(values, [b"before".as_slice(), b"after".as_slice()]);
}

#[test]
fn kafka_4_broker_starts_and_reports_fetch_v4_minimum() {
    let t0 = Instant::now();
    let broker = Broker::start(KAFKA_4);
    eprintln!("kafka {KAFKA_4}: broker started in {:?}", t0.elapsed());
    assert_eq!(
        fetch_min_version(&broker.bootstrap(), Duration::from_secs(5)).expect("ApiVersions"),
        Some(4)
    );
}
