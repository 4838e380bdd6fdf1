//! What only the librdkafka client does, on real brokers: Kafka 4.4 and 3.9 round trips
//! with record timestamps equal to the commit ts's milliseconds, lz4 and zstd read back,
//! and no librdkafka thread or socket left after `close`; and with the broker killed
//! while messages wait in librdkafka, `close` returns within its `close_timeout` (the
//! client stops waiting and purges) and then no thread or socket is left either.
//!
//! Its own test binary: it counts the process's threads and sockets, so its tests run
//! one after another inside one `#[test]`.

#[path = "support/kafka.rs"]
mod kafka_support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use changefeed::sink::kafka::{
    ClientKind, Compression, KafkaSink, KafkaSinkConfig, PartitionRule, Protocol,
};
use changefeed::{tso, Column, DispatcherManager, Error, RowChange, TableName, Value};
use kafka_support::{decode_canal_row, read_all, Broker, KAFKA_3, KAFKA_4};

const TABLES: usize = 4;
const ROWS: u64 = 5_000;
const PARTITIONS: u32 = 3;

/// The names of this process's threads.
fn thread_names() -> Vec<String> {
    let mut names = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let comm = task.unwrap().path().join("comm");
        if let Ok(name) = std::fs::read_to_string(comm) {
            names.push(name.trim_end().to_string());
        }
    }
    names.sort();
    names
}

/// How many of this process's file descriptors are sockets.
fn sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// Sends `ROWS` rows on each of `TABLES` tables through a librdkafka sink with
/// `compression`, closes, and checks what a consumer reads: every row once, in order per
/// table, each record's timestamp the commit ts's physical milliseconds. Returns the
/// librdkafka threads seen while the changefeed ran.
fn round_trip(broker: &Broker, topic: &str, compression: Compression) -> Vec<String> {
    broker.create_topic(topic, PARTITIONS);
    let config = KafkaSinkConfig::new([broker.bootstrap()], topic)
        .unwrap()
        .kafka_client(ClientKind::Librdkafka)
        .protocol(Protocol::CanalJson)
        .param("compression", compression.name())
        .unwrap()
        .partition_rule("*.*", PartitionRule::IndexValue)
        .unwrap();
    let manager = DispatcherManager::builder(format!("rd-{topic}"))
        .start(KafkaSink::new(config).unwrap())
        .unwrap();
    // Commit ts from the real clock, so their physical part is a plausible time.
    let base = tso::now();
    std::thread::scope(|s| {
        for t in 0..TABLES {
            let table = TableName::new("shop", format!("t{t}"));
            let d = manager.add_dispatcher(table.clone()).unwrap();
            s.spawn(move || {
                for id in 1..=ROWS {
                    let ts = base + (id << 18); // one millisecond per row
                    let cols = vec![
                        Column::key("id", Value::UInt(id)),
                        Column::new("v", Value::Text(format!("{table}-{id}").repeat(8))),
                    ];
                    d.send(RowChange::insert(table.clone(), ts, cols)).unwrap();
                }
            });
        }
    });
    manager.flush(Duration::from_secs(60)).unwrap();
    let running = thread_names()
        .into_iter()
        .filter(|n| n.starts_with("rdk:"))
        .collect();
    manager.close().unwrap();
    let messages = read_all(
        &broker.bootstrap(),
        topic,
        TABLES * ROWS as usize,
        Duration::from_secs(60),
    );
    assert_eq!(
        messages.len(),
        TABLES * ROWS as usize,
        "{topic}: exactly once"
    );
    // Rows go to partitions by their id (index-value): order holds per partition.
    let mut last: HashMap<(i32, String), u64> = HashMap::new();
    for m in &messages {
        let (table, id, ts) = decode_canal_row(m);
        assert_eq!(ts, base + (id << 18), "{topic}: commit ts of {table}/{id}");
        let expected_ms = tso::physical_millis(ts) as i64;
        assert_eq!(
            m.timestamp,
            Some(expected_ms),
            "{topic}: record timestamp of {table}/{id}"
        );
        let prev = last.entry((m.partition, table.clone())).or_insert(0);
        assert!(
            id > *prev,
            "{topic}: {table} {id} after {prev} in partition {}",
            m.partition
        );
        *prev = id;
    }
    let tables: std::collections::HashSet<&String> = last.keys().map(|(_, t)| t).collect();
    assert_eq!(tables.len(), TABLES, "{topic}: every table");
    running
}

/// Round trips with several compressions on one broker of `version`, and no thread or
/// socket left behind by the client.
fn on_broker(broker: &Broker) {
    let version = broker.version().to_string();
    let slug = version.replace('.', "");
    // A first run warms up what the process keeps for good (test harness threads,
    // the allocator, the harness's own consumer); the baseline is taken after it.
    round_trip(broker, &format!("rd{slug}-warm"), Compression::None);
    let (threads_before, sockets_before) = (thread_names(), sockets());
    for compression in [Compression::Lz4, Compression::Zstd, Compression::Gzip] {
        let topic = format!("rd{slug}-{}", compression.name());
        let running = round_trip(broker, &topic, compression);
        assert!(
            !running.is_empty(),
            "librdkafka's threads (rdk:…) exist while the changefeed runs"
        );
        assert_eq!(
            thread_names(),
            threads_before,
            "{topic}: the threads after close are the threads before start (librdkafka's were {running:?})"
        );
        assert_eq!(
            sockets(),
            sockets_before,
            "{topic}: no socket left after close"
        );
    }
}

/// The close timeout of [`close_with_the_broker_gone`].
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// What `close` may take beyond its timeout (the interrupt reaching the sink thread,
/// the watcher's report).
const CLOSE_SLACK: Duration = Duration::from_secs(3);
/// Bound for the sink thread to finish after a timed-out `close` (purge, destroy).
const EXIT_WITHIN: Duration = Duration::from_secs(30);

/// Rows delivered, the broker killed, more rows sent (librdkafka holds them: the message
/// timeout is a minute): `close` returns `CDC:ErrCloseTimeout` within its timeout, and
/// once the sink thread is gone the process has the threads and sockets it had before.
fn close_with_the_broker_gone(mut broker: Broker) {
    let topic = "rd-close-broker-gone";
    broker.create_topic(topic, 1);
    let (threads_before, sockets_before) = (thread_names(), sockets());
    let config = KafkaSinkConfig::new([broker.bootstrap()], topic)
        .unwrap()
        .kafka_client(ClientKind::Librdkafka)
        .param("message-timeout-ms", "60000")
        .unwrap();
    let manager = DispatcherManager::builder("rd-close")
        .close_timeout(CLOSE_TIMEOUT)
        .start(KafkaSink::new(config).unwrap())
        .unwrap();
    let table = TableName::new("shop", "t0");
    let d = manager.add_dispatcher(table.clone()).unwrap();
    let row = |id: u64| {
        RowChange::insert(
            table.clone(),
            1000 + id,
            vec![Column::key("id", Value::UInt(id))],
        )
    };
    for id in 1..=100 {
        d.send(row(id)).unwrap();
    }
    manager.flush(Duration::from_secs(60)).unwrap();
    broker.kill();
    for id in 101..=200 {
        d.send(row(id)).unwrap();
    }
    let started = Instant::now();
    let result = manager.close();
    let took = started.elapsed();
    assert!(
        matches!(result, Err(Error::CloseTimeout { .. })),
        "close with undeliverable rows: {result:?}"
    );
    assert!(
        took < CLOSE_TIMEOUT + CLOSE_SLACK,
        "close took {took:?} (close_timeout {CLOSE_TIMEOUT:?})"
    );
    drop(d);
    drop(manager);
    // The sink thread ends once the interrupted client returns; nothing can be joined
    // from here after a timed-out close, so watch the process (bounded).
    let deadline = Instant::now() + EXIT_WITHIN;
    while (thread_names() != threads_before || sockets() != sockets_before)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        thread_names(),
        threads_before,
        "the threads after a timed-out close are the threads before start"
    );
    assert_eq!(
        sockets(),
        sockets_before,
        "no socket left after a timed-out close"
    );
}

#[test]
fn kafka_4_and_3_round_trips_timestamps_compression_and_no_leftover_threads() {
    on_broker(&Broker::start(KAFKA_4));
    let broker = Broker::start(KAFKA_3);
    on_broker(&broker);
    close_with_the_broker_gone(broker);
}
