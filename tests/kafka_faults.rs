//! Faults of the Kafka sink on real Kafka 3.9 brokers, each on both clients (librdkafka
//! and kafka-rust; the module docs of `src/sink/kafka/mod.rs` list the faults with their
//! codes):
//!
//! * an event over `max-message-bytes`, caught in the dispatcher;
//! * an event the broker rejects (the topic's `max.message.bytes`), found by splitting;
//! * a broker set whose total the broker rejects although every message fits;
//! * a broker killed mid-stream and restarted within the retry budget;
//! * a broker killed for good: the error after the budget, and a checkpoint that never
//!   passed an unconfirmed row;
//! * `sink::open` of kafka URIs with bad parameters (no broker needed).
//!
//! The oversize cases share one broker (distinct topics); the restart case runs both
//! clients on one broker, one after the other; the case that kills a broker for good has
//! one per client.

#[path = "support/kafka.rs"]
mod kafka_support;

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use changefeed::sink::kafka::{KafkaSink, KafkaSinkConfig};
use changefeed::{sink, Column, DispatcherManager, Error, HeartBeat, RowChange, TableName, Value};
use common::{errors, heartbeats_until_closed, wait_no_threads, HANG_GUARD};
use crossbeam_channel::{bounded, Receiver};
use kafka_support::{decode_canal_row, read_all, Broker, KAFKA_3};

/// Bound for reading a topic back.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Both clients, by their `kafka-client` names.
const CLIENTS: [&str; 2] = ["librdkafka", "kafka-rust"];

/// A short name of `client` for changefeed ids and topics.
fn short(client: &str) -> &'static str {
    if client == "librdkafka" {
        "rd"
    } else {
        "kr"
    }
}

/// A row of `table` with key `id` at commit ts `ts`, with `pad` bytes of text.
fn row(table: &TableName, id: u64, ts: u64, pad: usize) -> RowChange {
    RowChange::insert(
        table.clone(),
        ts,
        vec![
            Column::key("id", Value::UInt(id)),
            Column::new("v", Value::Text("x".repeat(pad))),
        ],
    )
}

/// Everything in `topic` now (the writer has stopped), decoded.
fn read_rows(broker: &Broker, topic: &str, at_least: usize) -> Vec<(String, u64, u64)> {
    read_all(&broker.bootstrap(), topic, at_least, READ_TIMEOUT)
        .iter()
        .map(decode_canal_row)
        .collect()
}

/// Polls `cond` every few milliseconds until it holds; panics with `what` after `within`.
fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The number following `before` in `text` (e.g. the size in "… is 8437 bytes").
fn number_after(text: &str, before: &str) -> Option<usize> {
    let at = text.find(before)? + before.len();
    let digits: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// A maintainer channel roomy enough that no heartbeat of a test run is dropped.
fn maintainer() -> (crossbeam_channel::Sender<HeartBeat>, Receiver<HeartBeat>) {
    bounded(1 << 16)
}

// ---------------------------------------------------------------------------------------
// Oversize events (one shared broker)
// ---------------------------------------------------------------------------------------

#[test]
fn oversize_events_are_named_and_nothing_after_them_is_acknowledged() {
    let broker = Broker::start(KAFKA_3);
    for client in CLIENTS {
        oversize_in_the_dispatcher(&broker, client);
        oversize_rejected_by_the_broker(&broker, client);
    }
}

/// `max-message-bytes=4096` (through `sink::open`): rows, then one with 8 KiB of text,
/// then more rows → `CDC:ErrMessageTooLarge` from the dispatcher naming table, commit ts,
/// key, size and limit; nothing from it on is acknowledged nor in the topic.
fn oversize_in_the_dispatcher(broker: &Broker, client: &str) {
    const BIG_TS: u64 = 2000;
    let topic = format!("ov-dispatcher-{client}");
    let id = format!("kfov1{}", short(client));
    broker.create_topic(&topic, 1);
    let sink = sink::open(&format!(
        "kafka://{}/{topic}?max-message-bytes=4096&kafka-client={client}",
        broker.bootstrap()
    ))
    .unwrap();
    let (tx, heartbeats) = maintainer();
    let manager = DispatcherManager::builder(id.as_str())
        .maintainer(tx)
        .heartbeat_interval(Duration::from_millis(50))
        .start(sink)
        .unwrap();
    let table = TableName::new("shop", "big");
    let d = manager.add_dispatcher(table.clone()).unwrap();
    for id in 1..=50 {
        d.send(row(&table, id, 1000 + id, 100)).unwrap();
    }
    manager.flush(HANG_GUARD).unwrap();
    assert_eq!(manager.status().events_acked, 50);

    d.send(row(&table, 51, BIG_TS, 8 << 10)).unwrap();
    let mut refused = None;
    for id in 52..=100 {
        if let Err(e) = d.send(row(&table, id, BIG_TS + id, 100)) {
            refused = Some(e.cause);
            break;
        }
    }

    let all = heartbeats_until_closed(&heartbeats);
    let reported = errors(&all);
    assert_eq!(reported.len(), 1, "exactly one RunningError: {reported:?}");
    let report = &reported[0];
    println!("{client}: dispatcher-side oversize: {}", report.message);
    assert_eq!(report.code, "CDC:ErrMessageTooLarge");
    let m = &report.message;
    for part in ["shop.big", &format!("commit ts {BIG_TS}"), "id=51", "4096"] {
        assert!(m.contains(part), "the error names {part:?}: {m}");
    }
    let size = number_after(m, " is ").expect("the size in the message");
    assert!(size > 8 << 10, "size {size} in {m}");
    match manager.wait().unwrap_err() {
        Error::MessageTooLarge {
            table: t,
            commit_ts,
            key,
            size: s,
            limit,
        } => {
            assert_eq!(t, table);
            assert_eq!(commit_ts, BIG_TS);
            assert_eq!(key, "id=51");
            assert_eq!(s, size);
            assert_eq!(limit, Some(4096));
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    if let Some(cause) = refused {
        assert_eq!(cause.code(), "CDC:ErrMessageTooLarge", "{cause}");
    }
    let status = manager.status();
    assert_eq!(
        status.events_acked, 50,
        "nothing after the flushed rows acknowledged"
    );
    assert!(
        manager.checkpoint_ts() < BIG_TS,
        "checkpoint {} passed the oversize event",
        manager.checkpoint_ts()
    );
    assert!(wait_no_threads(&format!("cf-{id}-"), HANG_GUARD).is_empty());

    let rows = read_rows(broker, &topic, 50);
    let after: Vec<_> = rows.iter().filter(|(_, _, ts)| *ts >= BIG_TS).collect();
    assert!(
        after.is_empty(),
        "rows at or after the oversize one in Kafka: {after:?}"
    );
    let mut ids: Vec<u64> = rows.iter().map(|(_, id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids,
        (1..=50).collect::<Vec<_>>(),
        "the flushed rows are all there"
    );
}

/// The topic takes at most 2000 bytes per message (`max.message.bytes`), the sink's
/// limit is the default 1 MiB: the broker rejects a 5 KB row, the sink splits the set,
/// finds it and names it.
fn oversize_rejected_by_the_broker(broker: &Broker, client: &str) {
    const BIG_TS: u64 = 2000;
    let topic = format!("ov-broker-{client}");
    let id = format!("kfov2{}", short(client));
    broker.create_topic_with_config(&topic, 1, &[("max.message.bytes", "2000")]);
    let config = KafkaSinkConfig::new([broker.bootstrap()], &topic)
        .unwrap()
        .param("kafka-client", client)
        .unwrap();
    let (tx, heartbeats) = maintainer();
    let manager = DispatcherManager::builder(id.as_str())
        .maintainer(tx)
        .heartbeat_interval(Duration::from_millis(50))
        .start(KafkaSink::new(config).expect("a valid kafka config"))
        .unwrap();
    let table = TableName::new("shop", "bigb");
    let d = manager.add_dispatcher(table.clone()).unwrap();
    // One small row per flush: a set of several could exceed 2000 bytes as a whole
    // (see `a_broker_set_over_the_topic_limit_of_small_rows_is_not_a_failure`).
    for id in 1..=3 {
        d.send(row(&table, id, 1000 + id, 50)).unwrap();
        manager.flush(HANG_GUARD).unwrap();
    }
    d.send(row(&table, 4, BIG_TS, 5000)).unwrap();
    for id in 5..=10 {
        if d.send(row(&table, id, BIG_TS + id, 50)).is_err() {
            break;
        }
    }

    let all = heartbeats_until_closed(&heartbeats);
    let reported = errors(&all);
    assert_eq!(reported.len(), 1, "exactly one RunningError: {reported:?}");
    let report = &reported[0];
    println!("{client}: broker-side oversize: {}", report.message);
    assert_eq!(report.code, "CDC:ErrMessageTooLarge", "{}", report.message);
    let m = &report.message;
    for part in [
        "shop.bigb",
        &format!("commit ts {BIG_TS}"),
        "max.message.bytes",
    ] {
        assert!(m.contains(part), "the error names {part:?}: {m}");
    }
    let size = number_after(m, " is ").expect("the size in the message");
    assert!(size > 5000, "size {size} in {m}");
    match manager.wait().unwrap_err() {
        Error::MessageTooLarge {
            table: t,
            commit_ts,
            key,
            limit,
            ..
        } => {
            assert_eq!(t, table);
            assert_eq!(commit_ts, BIG_TS);
            // canal-json messages have no key: the sink names the key columns.
            assert!(key.contains("id=") && key.contains('4'), "key {key:?}");
            assert_eq!(limit, None, "the broker's limit, not the sink's");
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    assert_eq!(manager.status().events_acked, 3);
    assert!(manager.checkpoint_ts() < BIG_TS);
    assert!(wait_no_threads(&format!("cf-{id}-"), HANG_GUARD).is_empty());

    let rows = read_rows(broker, &topic, 3);
    assert!(
        rows.iter().all(|(_, id, _)| *id != 4),
        "the broker took the oversize row: {rows:?}"
    );
    for id in 1..=3 {
        assert!(rows.iter().any(|r| r.1 == id), "row {id} missing: {rows:?}");
    }
}

/// Each row fits the topic's `max.message.bytes` (2000), but one flush sends a set of
/// them that is larger as a whole: Kafka 3.x converts a v0 message set into one v2
/// batch and checks *that* against the limit, so it rejects the set. The sink splits
/// it, every part is accepted, and the rows must simply be delivered.
#[test]
fn a_broker_set_over_the_topic_limit_of_small_rows_is_not_a_failure() {
    let broker = Broker::start(KAFKA_3);
    for client in CLIENTS {
        set_over_the_topic_limit(&broker, client);
    }
}

fn set_over_the_topic_limit(broker: &Broker, client: &str) {
    const ROWS: u64 = 40;
    let topic = format!("ov-set-{client}");
    broker.create_topic_with_config(&topic, 1, &[("max.message.bytes", "2000")]);
    // A linger makes the sink gather every row into one flush.
    let sink = sink::open(&format!(
        "kafka://{}/{topic}?linger-ms=500&kafka-client={client}",
        broker.bootstrap()
    ))
    .unwrap();
    let (tx, heartbeats) = maintainer();
    let manager = DispatcherManager::builder(format!("kfov3{}", short(client)))
        .maintainer(tx)
        .start(sink)
        .unwrap();
    let table = TableName::new("shop", "small");
    let d = manager.add_dispatcher(table.clone()).unwrap();
    for id in 1..=ROWS {
        d.send(row(&table, id, 1000 + id, 200)).unwrap();
    }
    let flushed = manager.flush(HANG_GUARD);
    let closed = manager.close();
    let reported = errors(&heartbeats_until_closed(&heartbeats));
    let rows = read_rows(broker, &topic, 0);
    println!(
        "{client}: set over the topic limit: flush {flushed:?}, close {closed:?}, reported {reported:?}, {} rows in Kafka",
        rows.len()
    );
    assert!(reported.is_empty(), "no RunningError: {reported:?}");
    flushed.unwrap();
    closed.unwrap();
    let mut ids: Vec<u64> = rows.iter().map(|r| r.1).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids, (1..=ROWS).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------
// A broker killed and restarted within the retry budget
// ---------------------------------------------------------------------------------------

/// Both clients on one broker, one after the other. librdkafka's idempotent producer
/// (the default with `required-acks=-1`) rides out the restart on its own retries
/// (`message-timeout-ms` of 60 s, far over a restart): no duplicate at all. kafka-rust
/// resends what was not confirmed: duplicates are counted, never gaps.
#[test]
fn broker_restarted_within_the_retry_budget_loses_nothing() {
    let mut broker = Broker::start(KAFKA_3);
    for client in CLIENTS {
        restart_loses_nothing(&mut broker, client);
    }
}

fn restart_loses_nothing(broker: &mut Broker, client: &str) {
    const TABLES: usize = 4;
    const ROWS: u64 = 5_000;
    /// Rows each pusher sends before the kill; the rest go while the broker is down.
    const BEFORE_KILL: u64 = 2_500;
    let topic = format!("restart-{client}");
    broker.create_topic(&topic, 2);
    // Budget: 0.1 + 0.2 + 0.4 + 0.8 + 26 × 1 s ≈ 27 s of waiting, far over a restart.
    let mut config = KafkaSinkConfig::new([broker.bootstrap()], &topic)
        .unwrap()
        .param("kafka-client", client)
        .unwrap()
        .retry(30, Duration::from_millis(100), Duration::from_secs(1))
        .unwrap();
    if client == "librdkafka" {
        config = config.param("message-timeout-ms", "60000").unwrap();
    }
    let (tx, heartbeats) = maintainer();
    let manager = DispatcherManager::builder(format!("kfrs{}", short(client)))
        .maintainer(tx)
        .heartbeat_interval(Duration::from_millis(100))
        .start(KafkaSink::new(config).expect("a valid kafka config"))
        .unwrap();

    // Pushers send their first rows, wait for the kill, then send the rest.
    let (killed_tx, killed_rx) = bounded::<()>(0);
    let (done_tx, done) = bounded::<Result<(), String>>(TABLES);
    let pushers: Vec<_> = (0..TABLES)
        .map(|t| {
            let table = TableName::new("shop", format!("t{t}"));
            let d = manager.add_dispatcher(table.clone()).unwrap();
            let killed = killed_rx.clone();
            let done_tx = done_tx.clone();
            std::thread::spawn(move || {
                for id in 1..=ROWS {
                    if id == BEFORE_KILL + 1 {
                        // Disconnected when the test has killed the broker.
                        let _ = killed.recv_timeout(HANG_GUARD * 4);
                    }
                    if let Err(e) = d.send(row(&table, id, 1000 + id, 100)) {
                        let _ = done_tx.send(Err(format!("{table} row {id}: {}", e.cause)));
                        return;
                    }
                }
                let _ = done_tx.send(Ok(()));
            })
        })
        .collect();
    drop(killed_rx);
    drop(done_tx);

    wait_until("1,000 rows acknowledged", HANG_GUARD * 4, || {
        manager.status().events_acked >= 1_000
    });
    let before = manager.status();
    let t0 = Instant::now();
    broker.kill();
    drop(killed_tx);
    let in_flight: u64 = before.dispatchers.iter().map(|d| d.in_flight_events).sum();
    println!(
        "killed the broker with {} rows acknowledged, {in_flight} in flight",
        before.events_acked
    );
    broker.restart();
    println!("broker back after {:?}", t0.elapsed());
    for _ in 0..TABLES {
        let outcome = done
            .recv_timeout(Duration::from_secs(120))
            .expect("a pusher is stuck");
        outcome.expect("a push failed");
    }
    for p in pushers {
        p.join().unwrap();
    }
    manager.flush(Duration::from_secs(120)).unwrap();
    println!("everything acknowledged {:?} after the kill", t0.elapsed());
    manager.close().unwrap();
    let reported = errors(&heartbeats_until_closed(&heartbeats));
    assert!(reported.is_empty(), "no RunningError: {reported:?}");

    let total = TABLES * ROWS as usize;
    let rows = read_rows(broker, &topic, total);
    let mut seen: HashMap<(String, u64), usize> = HashMap::new();
    for (table, id, ts) in &rows {
        assert_eq!(*ts, 1000 + id, "{table} {id}");
        *seen.entry((table.clone(), *id)).or_default() += 1;
    }
    let missing: Vec<_> = (0..TABLES)
        .flat_map(|t| (1..=ROWS).map(move |id| (format!("shop.t{t}"), id)))
        .filter(|k| !seen.contains_key(k))
        .collect();
    assert!(
        missing.is_empty(),
        "{} rows missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(seen.len(), total);
    let duplicates = rows.len() - total;
    println!(
        "{client}: broker restart: {} messages for {total} rows, {duplicates} duplicates",
        rows.len(),
    );
    if client == "librdkafka" {
        assert_eq!(
            duplicates, 0,
            "the idempotent producer's own retries write nothing twice"
        );
    }
}

// ---------------------------------------------------------------------------------------
// A broker killed for good
// ---------------------------------------------------------------------------------------

#[test]
fn broker_gone_for_good_fails_after_the_budget_and_the_checkpoint_lost_nothing() {
    for client in CLIENTS {
        gone_for_good(client);
    }
}

/// One broker per client: it is killed for good.
fn gone_for_good(client: &str) {
    const TOPIC: &str = "gone";
    const TABLES: usize = 4;
    const ROWS: u64 = 20_000;
    let mut broker = Broker::start(KAFKA_3);
    broker.create_topic(TOPIC, 2);
    // librdkafka tries each message for message-timeout-ms before the sink's own retry
    // loop takes over, and reaches brokers within dial-timeout-ms: both short here.
    let config = KafkaSinkConfig::new([broker.bootstrap()], TOPIC)
        .unwrap()
        .param("kafka-client", client)
        .unwrap()
        .param("dial-timeout-ms", "500")
        .unwrap()
        .retry(3, Duration::from_millis(50), Duration::from_millis(200))
        .unwrap();
    let config = if client == "librdkafka" {
        config.param("message-timeout-ms", "1000").unwrap()
    } else {
        config
    };
    let id = format!("kfgone{}", short(client));
    let (tx, heartbeats) = maintainer();
    let manager = DispatcherManager::builder(id.as_str())
        .maintainer(tx)
        .heartbeat_interval(Duration::from_millis(20))
        .start(KafkaSink::new(config).expect("a valid kafka config"))
        .unwrap();
    let (report_tx, reports) = bounded(TABLES);
    let pushers: Vec<_> = (0..TABLES)
        .map(|t| {
            let table = TableName::new("shop", format!("t{t}"));
            let d = manager.add_dispatcher(table.clone()).unwrap();
            let report_tx = report_tx.clone();
            std::thread::spawn(move || {
                for id in 1..=ROWS {
                    if let Err(e) = d.send(row(&table, id, 1000 + id, 100)) {
                        report_tx.send(Some(e.cause)).unwrap();
                        return;
                    }
                }
                report_tx.send(None).unwrap();
            })
        })
        .collect();
    drop(report_tx);

    // Kill once every table has rows acknowledged (the checkpoint moved).
    wait_until("every table has rows acknowledged", HANG_GUARD * 4, || {
        manager.checkpoint_ts() >= 1000 + 200
    });
    let before = manager.status();
    let killed_at = Instant::now();
    broker.kill();
    println!(
        "killed the broker for good: {} rows acknowledged, checkpoint {}",
        before.events_acked, before.checkpoint_ts
    );

    let mut all = Vec::new();
    let mut error_after = None;
    loop {
        let hb = heartbeats
            .recv_timeout(HANG_GUARD)
            .expect("no closed heartbeat within the hang guard");
        if hb.error.is_some() {
            error_after.get_or_insert(killed_at.elapsed());
        }
        let closed = hb.closed;
        all.push(hb);
        if closed {
            break;
        }
    }
    let reported = errors(&all);
    println!(
        "{client}: error {:?} after the kill: {reported:?}",
        error_after.unwrap_or_default()
    );
    assert_eq!(reported.len(), 1, "exactly one RunningError: {reported:?}");
    let report = &reported[0];
    assert!(
        ["CDC:ErrKafkaSendMessage", "CDC:ErrKafkaNewProducer"].contains(&report.code.as_str()),
        "{report:?}"
    );
    assert!(
        report.message.contains("gave up after 3 retries"),
        "the error says what failed and that the budget is spent: {}",
        report.message
    );
    // Budget: 3 retries of ≤ 200 ms waits, each after a send bounded by the
    // message timeout (librdkafka, 1 s) or a refused connect (kafka-rust), and each
    // followed by a metadata check that may retry on its own within dial timeouts
    // (0.5 s): seconds, far under the bound.
    assert!(
        error_after.unwrap() < Duration::from_secs(20),
        "error {:?} after the kill",
        error_after
    );
    let error = manager.wait().unwrap_err();
    assert_eq!(error.code(), report.code);
    for _ in 0..TABLES {
        if let Some(cause) = reports.recv_timeout(HANG_GUARD).expect("a pusher hangs") {
            assert_eq!(cause.code(), report.code, "{cause}");
        }
    }
    for p in pushers {
        p.join().unwrap();
    }
    assert!(wait_no_threads(&format!("cf-{id}-"), HANG_GUARD).is_empty());

    // The last checkpoint the maintainer heard of, overall and per table.
    let checkpoints: Vec<u64> = all.iter().map(|h| h.checkpoint_ts).collect();
    assert!(
        checkpoints.windows(2).all(|w| w[0] <= w[1]),
        "checkpoints went backwards: {checkpoints:?}"
    );
    let last = all.last().unwrap();
    let checkpoint = last.checkpoint_ts;
    assert_eq!(manager.checkpoint_ts(), checkpoint);
    assert!(checkpoint >= before.checkpoint_ts);
    let per_table: BTreeMap<String, u64> = last
        .dispatchers
        .iter()
        .map(|d| (d.table.to_string(), d.checkpoint_ts))
        .collect();
    assert_eq!(per_table.len(), TABLES);
    for cp in per_table.values() {
        assert!(*cp >= checkpoint);
    }
    println!("last checkpoint {checkpoint}; per table {per_table:?}");

    // Bring the data back and check that nothing the checkpoints claimed was lost.
    broker.restart();
    let claimed: usize = per_table
        .values()
        .map(|cp| cp.saturating_sub(1000) as usize)
        .sum();
    let rows = read_rows(&broker, TOPIC, claimed);
    let mut present: HashMap<String, std::collections::HashSet<u64>> = HashMap::new();
    for (table, id, _) in &rows {
        present.entry(table.clone()).or_default().insert(*id);
    }
    for (table, cp) in &per_table {
        let ids = present.get(table).cloned().unwrap_or_default();
        let lost: Vec<u64> = (1..=cp.saturating_sub(1000))
            .filter(|id| !ids.contains(id))
            .collect();
        assert!(
            lost.is_empty(),
            "{table}: checkpoint {cp} claims rows that are not in Kafka: {} of them, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        );
        // Every row Kafka lacks is above the checkpoint (the same claim, read the other way).
        let first_gap = (1..=ROWS).find(|id| !ids.contains(id));
        println!(
            "{table}: checkpoint {cp}, {} rows in Kafka, first missing commit ts {:?}",
            ids.len(),
            first_gap.map(|id| 1000 + id)
        );
        assert!(first_gap.is_none_or(|id| 1000 + id > *cp));
    }
    assert!(
        rows.iter().filter(|(_, _, ts)| *ts <= checkpoint).count()
            >= (checkpoint.saturating_sub(1000) as usize) * TABLES
    );
}

// ---------------------------------------------------------------------------------------
// sink::open with bad parameters, end to end (no broker)
// ---------------------------------------------------------------------------------------

#[test]
fn sink_open_rejects_bad_kafka_parameters_naming_them() {
    let cases: &[(&str, &str, &str)] = &[
        // (query or uri tail, parameter named, words the reason must contain)
        ("?max-message-bytes=abc", "max-message-bytes", ""),
        ("?max-message-bytes=10", "max-message-bytes", ""),
        ("?required-acks=2", "required-acks", "-1, 1 or 0"),
        ("?protocol=avro", "protocol", "canal-json"),
        ("?compression=brotli", "compression", ""),
        (
            "?compression=zstd&kafka-client=kafka-rust",
            "compression",
            "librdkafka",
        ),
        ("?max-retry=-1", "max-retry", ""),
        ("?linger-ms=soon", "linger-ms", ""),
        (
            "?auto-create-topic=true",
            "auto-create-topic",
            "not supported",
        ),
        (
            "?auto-create-topic=maybe",
            "auto-create-topic",
            "true or false",
        ),
        (
            "?enable-tls=true&kafka-client=kafka-rust",
            "enable-tls",
            "TLS is not supported",
        ),
        ("?sasl-user=alice", "sasl-mechanism", "missing"),
        ("?kafka-version=2.8.0", "kafka-version", ""),
        ("?partition-num=3", "partition-num", ""),
        ("?no-such-param=1", "no-such-param", "unknown parameter"),
    ];
    for (tail, param, words) in cases {
        let uri = format!("kafka://127.0.0.1:9092/topic{tail}");
        let e = match sink::open(&uri) {
            Ok(_) => panic!("{uri}: accepted"),
            Err(e) => e,
        };
        assert_eq!(e.code(), "CDC:ErrKafkaInvalidConfig", "{uri}: {e}");
        match &e {
            Error::KafkaInvalidConfig { param: p, reason } => {
                assert_eq!(p, param, "{uri}: {e}");
                assert!(reason.contains(words), "{uri}: {e}");
            }
            other => panic!("{uri}: {other:?}"),
        }
        assert!(e.to_string().contains(param), "{uri}: {e}");
    }
    // Brokers and topic.
    for (uri, param) in [
        ("kafka:///topic", "brokers"),
        ("kafka://localhost/topic", "brokers"),
        ("kafka://127.0.0.1:9092,:9093/topic", "brokers"),
        ("kafka://127.0.0.1:9092", "topic"),
        ("kafka://127.0.0.1:9092/", "topic"),
        ("kafka://127.0.0.1:9092/bad%20topic", "topic"),
        (
            &format!("kafka://127.0.0.1:9092/{}", "t".repeat(250)),
            "topic",
        ),
    ] {
        let e = match sink::open(uri) {
            Ok(_) => panic!("{uri}: accepted"),
            Err(e) => e,
        };
        assert!(
            matches!(
                e.code(),
                "CDC:ErrKafkaInvalidConfig" | "CDC:ErrSinkURIInvalid"
            ),
            "{uri}: {e}"
        );
        assert!(
            e.to_string().contains(param),
            "{uri}: the error names {param}: {e}"
        );
    }
    // A good URI opens without touching the network (nothing listens on port 1).
    let good = "kafka://127.0.0.1:1,127.0.0.1:2/topic?protocol=debezium&max-message-bytes=4096\
                &required-acks=1&compression=gzip&max-retry=0&retry-backoff-ms=10\
                &retry-backoff-max-ms=20&dial-timeout-ms=200&linger-ms=5&auto-create-topic=false";
    let sink = sink::open(good).unwrap_or_else(|e| panic!("{good}: {e}"));

    // Started, it cannot reach a broker: a RunningError after its (empty) budget.
    let (tx, heartbeats) = maintainer();
    let started = Instant::now();
    let manager = DispatcherManager::builder("kfuri")
        .maintainer(tx)
        .start(sink)
        .unwrap();
    let reported = errors(&heartbeats_until_closed(&heartbeats));
    println!(
        "unreachable brokers after {:?}: {reported:?}",
        started.elapsed()
    );
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0].code, "CDC:ErrKafkaNewProducer");
    assert!(
        reported[0].message.contains("127.0.0.1:1") && reported[0].message.contains("127.0.0.1:2"),
        "names the brokers tried: {}",
        reported[0].message
    );
    assert_eq!(
        manager.wait().unwrap_err().code(),
        "CDC:ErrKafkaNewProducer"
    );
}
