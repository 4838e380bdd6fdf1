//! Round trip on a real Kafka 3.9 broker, on both clients: 8 tables x 10,000 rows, both
//! protocols, several partitions, `required-acks` -1, 1 and 0 (no confirmations to
//! check), and for kafka-rust the default number of producer connections and three;
//! every row read back, equal to what was sent, in order per partition.

#[path = "support/kafka.rs"]
mod kafka_support;

use std::collections::HashMap;
use std::time::Duration;

use changefeed::sink::kafka::{
    ClientKind, KafkaSink, KafkaSinkConfig, PartitionRule, Protocol, RequiredAcks,
};
use changefeed::{Column, DispatcherManager, RowChange, TableName, Value};
use kafka_support::{read_all, Broker, KAFKA_3};

const TABLES: usize = 8;
const ROWS: u64 = 10_000;
const PARTITIONS: u32 = 4;

/// The kafka-rust client's `connections`, or `None` for the client's default (and for
/// librdkafka, which takes none).
fn run(
    broker: &Broker,
    client: ClientKind,
    protocol: Protocol,
    topic: &str,
    connections: Option<usize>,
    acks: RequiredAcks,
) {
    broker.create_topic(topic, PARTITIONS);
    let mut config = KafkaSinkConfig::new([broker.bootstrap()], topic)
        .unwrap()
        .kafka_client(client)
        .protocol(protocol)
        .required_acks(acks)
        .partition_rule("*.*", PartitionRule::IndexValue)
        .unwrap();
    if let Some(n) = connections {
        config = config.connections(n).unwrap();
    }
    let manager = DispatcherManager::builder(format!("rt-{topic}"))
        .start(KafkaSink::new(config).expect("a valid kafka config"))
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..TABLES {
            let table = TableName::new("shop", format!("t{t}"));
            let d = manager.add_dispatcher(table.clone()).unwrap();
            s.spawn(move || {
                for id in 1..=ROWS {
                    let cols = vec![
                        Column::key("id", Value::UInt(id)),
                        Column::new("v", Value::Text(format!("{table}-{id}"))),
                    ];
                    d.send(RowChange::insert(table.clone(), 1000 + id, cols))
                        .unwrap();
                }
            });
        }
    });
    manager.flush(Duration::from_secs(120)).unwrap();
    manager.close().unwrap();
    let messages = read_all(
        &broker.bootstrap(),
        topic,
        TABLES * ROWS as usize,
        Duration::from_secs(120),
    );
    let mut seen: HashMap<(String, u64), usize> = HashMap::new();
    let mut last_per_key_partition: HashMap<(i32, String), u64> = HashMap::new();
    for m in &messages {
        let v: serde_json::Value = serde_json::from_slice(&m.value).unwrap();
        let (table, id, text, ts) = match protocol {
            Protocol::CanalJson => (
                v["table"].as_str().unwrap().to_string(),
                v["data"][0]["id"].as_str().unwrap().parse::<u64>().unwrap(),
                v["data"][0]["v"].as_str().unwrap().to_string(),
                v["_tidb"]["commitTs"].as_u64().unwrap(),
            ),
            Protocol::Debezium => (
                v["source"]["table"].as_str().unwrap().to_string(),
                v["after"]["id"].as_u64().unwrap(),
                v["after"]["v"].as_str().unwrap().to_string(),
                v["source"]["commit_ts"].as_u64().unwrap(),
            ),
        };
        assert_eq!(text, format!("shop.{table}-{id}"));
        assert_eq!(ts, 1000 + id);
        // Per partition, each table's rows come in commit-ts order.
        let last = last_per_key_partition
            .entry((m.partition, table.clone()))
            .or_insert(0);
        assert!(
            ts >= *last,
            "partition {} table {table}: {ts} after {last}",
            m.partition
        );
        *last = ts;
        *seen.entry((table, id)).or_default() += 1;
    }
    assert_eq!(seen.len(), TABLES * ROWS as usize, "every row present");
    let partitions: std::collections::HashSet<i32> = messages.iter().map(|m| m.partition).collect();
    assert_eq!(
        partitions.len(),
        PARTITIONS as usize,
        "rows spread over every partition"
    );
    let duplicates = messages.len() - seen.len();
    println!(
        "{client:?} {protocol:?} acks {acks:?}, connections {connections:?}: {} messages, {duplicates} duplicates",
        messages.len()
    );
}

#[test]
fn round_trip_both_protocols_on_both_clients() {
    let broker = Broker::start(KAFKA_3);
    let (all, one, none) = (RequiredAcks::All, RequiredAcks::One, RequiredAcks::None);
    let rd = ClientKind::Librdkafka;
    run(&broker, rd, Protocol::CanalJson, "rt-rd-canal", None, all);
    run(&broker, rd, Protocol::Debezium, "rt-rd-debezium", None, one);
    // At-most-once: nothing confirmed, everything counted as written once sent (on a
    // healthy broker, everything arrives).
    run(&broker, rd, Protocol::CanalJson, "rt-rd-acks0", None, none);
    let kr = ClientKind::KafkaRust;
    run(&broker, kr, Protocol::CanalJson, "rt-kr-canal", None, all);
    run(
        &broker,
        kr,
        Protocol::Debezium,
        "rt-kr-debezium",
        Some(3),
        all,
    );
    run(&broker, kr, Protocol::CanalJson, "rt-kr-acks0", None, none);
}
