//! A Kafka broker down for longer than the sink's own retry budget, under the
//! [`Supervisor`], on a real Kafka 3.9 broker.
//!
//! A feed pushes rows of several tables continuously (released at a fixed rate, as an
//! upstream would produce them; a restarted attempt first catches up from the
//! checkpoint). The broker is killed mid-stream: the sink (librdkafka) gives up after its
//! budget (2 retries, 50–100 ms, each send bounded by a 1 s message timeout, each connect
//! by a 500 ms dial timeout), the supervisor goes to Warning (`CDC:ErrKafkaNewProducer` or
//! `CDC:ErrKafkaSendMessage`) and keeps restarting with a short backoff while the broker
//! is down. The broker is restarted on the same data: the supervisor goes back to Normal,
//! and to Stopped once the input ended and everything was acknowledged. Every row is in
//! Kafka; duplicates are counted.

#[path = "support/kafka.rs"]
mod kafka_support;

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use changefeed::sink::kafka::{KafkaSink, KafkaSinkConfig};
use changefeed::sink::Sink;
use changefeed::supervisor::SinkFactory;
use changefeed::{DispatcherManager, Event, Feed, Supervisor, SupervisorState};
use common::*;
use crossbeam_channel::bounded;
use kafka_support::{decode_canal_row, read_all, Broker, KAFKA_3};

/// The changefeed id: its threads are `cf-svout-…`.
const ID: &str = "svout";
const TOPIC: &str = "sv-outage";
const PARTITIONS: u32 = 2;
const TABLES: usize = 4;
const ROWS: u64 = 4_500;
/// Commit ts released per second: the input lasts ROWS / RATE = 15 s.
const RATE: u64 = 300;
/// The broker is killed once the checkpoint reaches this (about 2 s into the input).
const KILL_AT: u64 = 600;
/// Warnings to see while the broker is down before restarting it: the supervisor keeps
/// retrying.
const WARNINGS_WHILE_DOWN: usize = 3;
/// The sink's own budget: 2 retries waiting 50 ms, then 100 ms.
const SINK_RETRIES: u32 = 2;
/// The supervisor's backoff: 100 ms, ×2, at most 400 ms.
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_millis(400);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Rows 1..=ROWS of `tables` tables, commit ts = row number, ts `t` released at
/// `origin + t / RATE`; sends every released row above `from_ts`, waits for the next
/// ones, and ends with a watermark.
struct PacedRows {
    tables: usize,
    rows: u64,
    origin: Instant,
    runs: Arc<AtomicUsize>,
}

impl Feed for PacedRows {
    fn run(&mut self, manager: &DispatcherManager, from_ts: u64) -> changefeed::Result<()> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let dispatchers: Vec<_> = (0..self.tables)
            .map(|i| manager.add_dispatcher(table(i)))
            .collect::<changefeed::Result<_>>()?;
        for ts in from_ts + 1..=self.rows {
            let due = self.origin + Duration::from_micros(ts * 1_000_000 / RATE);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            for (i, d) in dispatchers.iter().enumerate() {
                d.send(row(&table(i), ts, ts, 64)).map_err(|e| e.cause)?;
            }
        }
        for d in &dispatchers {
            d.send(Event::Resolved(self.rows)).map_err(|e| e.cause)?;
        }
        Ok(())
    }
}

fn name(s: &SupervisorState) -> String {
    match s {
        SupervisorState::Normal => "Normal".into(),
        SupervisorState::Warning { error, .. } => format!("Warning({})", error.code()),
        SupervisorState::Failed { error } => format!("Failed({})", error.code()),
        SupervisorState::Stopped => "Stopped".into(),
    }
}

#[test]
fn broker_down_longer_than_the_sink_budget_then_back_loses_nothing() {
    let test_start = Instant::now();
    let mut broker = Broker::start(KAFKA_3);
    broker.create_topic(TOPIC, PARTITIONS);
    println!("broker and topic up in {:?}", test_start.elapsed());
    let bootstrap = broker.bootstrap();

    let attempts = Arc::new(AtomicUsize::new(0));
    let factory: SinkFactory = {
        let attempts = Arc::clone(&attempts);
        let bootstrap = bootstrap.clone();
        Box::new(move || {
            attempts.fetch_add(1, Ordering::SeqCst);
            let config = KafkaSinkConfig::new([bootstrap.clone()], TOPIC)?
                .param("message-timeout-ms", "1000")?
                .param("dial-timeout-ms", "500")?
                .retry(
                    SINK_RETRIES,
                    Duration::from_millis(50),
                    Duration::from_millis(100),
                )?;
            Ok(Box::new(KafkaSink::new(config)?) as Box<dyn Sink>)
        })
    };
    let (observer, states) = bounded::<SupervisorState>(1024);
    let runs = Arc::new(AtomicUsize::new(0));
    let origin = Instant::now();
    let supervisor = Supervisor::builder(ID)
        .backoff(BACKOFF_INITIAL, 2.0, BACKOFF_MAX, 0.1)
        .manager(|m| m.heartbeat_interval(Duration::from_millis(50)))
        .observer(observer)
        .start(
            factory,
            PacedRows {
                tables: TABLES,
                rows: ROWS,
                origin,
                runs: Arc::clone(&runs),
            },
        )
        .unwrap();
    let prefix = format!("cf-{ID}-");

    // Mid-stream: rows acknowledged, more to come.
    let deadline = Instant::now() + HANG_GUARD;
    while supervisor.checkpoint_ts() < KILL_AT {
        assert!(
            Instant::now() < deadline,
            "checkpoint {} did not reach {KILL_AT}; state {:?}",
            supervisor.checkpoint_ts(),
            supervisor.state()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        states.try_recv().is_err(),
        "no state change before the kill"
    );
    let before = supervisor.checkpoint_ts();
    let killed = Instant::now();
    broker.kill();
    println!(
        "killed the broker {:?} into the input, checkpoint {before}",
        origin.elapsed()
    );

    // Warning: the sink's budget is spent; the supervisor restarts, again and again.
    let mut during = Vec::new();
    while during.len() < WARNINGS_WHILE_DOWN {
        let s = states
            .recv_timeout(HANG_GUARD)
            .expect("no state change within the hang guard");
        let received = SystemTime::now();
        match &s {
            SupervisorState::Warning { error, next_retry } => {
                if during.is_empty() {
                    println!(
                        "first Warning {:?} after the kill: {error}",
                        killed.elapsed()
                    );
                    assert!(
                        ["CDC:ErrKafkaNewProducer", "CDC:ErrKafkaSendMessage"]
                            .contains(&error.code()),
                        "{error}"
                    );
                    assert!(
                        error
                            .to_string()
                            .contains(&format!("gave up after {SINK_RETRIES} retries")),
                        "the sink's own budget was spent first: {error}"
                    );
                }
                assert!(error.is_retryable(), "{error}");
                let wait = next_retry
                    .duration_since(received)
                    .unwrap_or(Duration::ZERO);
                assert!(
                    wait <= BACKOFF_MAX.mul_f64(1.1) + Duration::from_millis(50),
                    "next retry {wait:?} away, over the backoff bound"
                );
            }
            other => panic!("only Warnings while the broker is down, got {other:?}"),
        }
        during.push(s);
    }
    assert!(
        supervisor.checkpoint_ts() >= before,
        "the checkpoint went back"
    );

    // Back on the same data.
    let t = Instant::now();
    broker.restart();
    let down = killed.elapsed();
    println!(
        "broker restarted in {:?}; down {down:?}; input at commit ts {} of {ROWS}",
        t.elapsed(),
        (origin.elapsed().as_micros() as u64 * RATE / 1_000_000).min(ROWS)
    );
    let back = Instant::now();
    let mut after = Vec::new();
    loop {
        let s = states
            .recv_timeout(HANG_GUARD)
            .expect("no state change within the hang guard");
        if matches!(s, SupervisorState::Normal) {
            println!(
                "Normal {:?} after the restart, checkpoint {}",
                back.elapsed(),
                supervisor.checkpoint_ts()
            );
        }
        let last = s.is_final();
        after.push(s);
        if last {
            break;
        }
    }
    let all: Vec<String> = during.iter().chain(&after).map(name).collect();
    println!("states from the kill on: {all:?}");
    // Possibly more Warnings (attempts made while the broker was starting), then Normal,
    // then Stopped. Only retryable Warnings and Normal come before the end.
    assert!(
        matches!(
            after.as_slice(),
            [.., SupervisorState::Normal, SupervisorState::Stopped]
        ),
        "Normal, then Stopped: {all:?}"
    );
    assert!(
        after[..after.len() - 1].iter().all(|s| match s {
            SupervisorState::Warning { error, .. } => error.is_retryable(),
            SupervisorState::Normal => true,
            _ => false,
        }),
        "{all:?}"
    );
    let normals = after
        .iter()
        .filter(|s| matches!(s, SupervisorState::Normal))
        .count();
    if normals > 1 {
        println!("went back to Normal {normals} times (a Warning after a recovery)");
    }
    let warnings = during.len() + after.len() - 1 - normals;
    assert!(matches!(supervisor.wait(), SupervisorState::Stopped));
    assert_eq!(supervisor.checkpoint_ts(), ROWS);
    assert_eq!(attempts.load(Ordering::SeqCst), warnings + 1);
    assert_eq!(runs.load(Ordering::SeqCst), warnings + 1);
    let left = wait_no_threads(&prefix, HANG_GUARD);
    assert!(left.is_empty(), "threads left: {left:?}");
    println!(
        "{warnings} failed attempts; input ended after {:?}",
        origin.elapsed()
    );

    // Every row is in Kafka.
    let total = TABLES * ROWS as usize;
    let messages = read_all(&bootstrap, TOPIC, total, READ_TIMEOUT);
    let mut copies: HashMap<(String, u64), usize> = HashMap::new();
    for m in &messages {
        let (table, id, ts) = decode_canal_row(m);
        assert_eq!(ts, id, "{table} row {id}: commit ts {ts}");
        *copies.entry((table, id)).or_default() += 1;
    }
    let missing: Vec<_> = (0..TABLES)
        .flat_map(|i| (1..=ROWS).map(move |id| (table(i).to_string(), id)))
        .filter(|k| !copies.contains_key(k))
        .collect();
    assert!(
        missing.is_empty(),
        "{} rows lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(copies.len(), total, "no row that the feed did not send");
    let duplicates = messages.len() - total;
    let max_copies = copies.values().max().copied().unwrap_or(0);
    println!(
        "Kafka holds {} messages for {total} rows: 0 lost, {duplicates} duplicates \
         (at most {max_copies} copies of a row); whole test {:?}",
        messages.len(),
        test_start.elapsed()
    );
}
