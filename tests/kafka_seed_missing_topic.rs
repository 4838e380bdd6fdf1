//! The seed (TiCDC #4064) on a real Kafka 3.9 broker, on each client (librdkafka, then
//! kafka-rust): the sink's topic does not exist (`auto.create.topics.enable=false`) while
//! 16 dispatchers push continuously.
//!
//! The maintainer hears of it exactly once (`CDC:ErrKafkaTopicNotExists`, naming the
//! topic) within 5 s of the start; `wait` returns that error; every pusher's push fails
//! with it; no engine thread is left; and then, for 5 s, the process burns next to no
//! CPU (no thread spins on the dead sink or retries) and its memory stays flat.
//!
//! Its own test binary: it measures process-wide CPU time, threads and memory.

#[path = "support/kafka.rs"]
mod kafka_support;

mod common;

use std::time::{Duration, Instant};

use changefeed::sink::kafka::{KafkaSink, KafkaSinkConfig};
use changefeed::{DispatcherManager, Error};
use common::*;
use crossbeam_channel::bounded;
use kafka_support::{Broker, KAFKA_3};

const TOPIC: &str = "seed-missing-topic";
const DISPATCHERS: usize = 16;
/// The report must reach the maintainer this soon after the manager starts.
const REPORT_WITHIN: Duration = Duration::from_secs(5);
/// How long the process is watched once everything has stopped.
const QUIET: Duration = Duration::from_secs(5);
/// CPU time the whole process may use over [`QUIET`]: a few wakeups, no busy thread
/// (one spinning thread would take ~5 s).
const CPU_SLACK: Duration = Duration::from_millis(100);
/// RSS growth tolerated over [`QUIET`]: allocator noise.
const RSS_SLACK: u64 = 4 << 20;
/// Linux's `USER_HZ`: the unit of `utime`/`stime` in `/proc/self/stat` (100 on every
/// architecture Rust supports; `getconf CLK_TCK`).
const USER_HZ: u64 = 100;

/// CPU time (user + system) of this whole process so far, every thread included (also
/// the ones that have exited), from `/proc/self/stat`.
fn process_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // The command name (field 2) is in parentheses and may hold spaces: count fields
    // from the last ')'. Field 3 (state) is the first after it; utime is field 14,
    // stime field 15.
    let after = &stat[stat.rfind(')').expect("comm in /proc/self/stat") + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |field: usize| -> u64 { fields[field - 3].parse().expect("a tick count") };
    Duration::from_millis((ticks(14) + ticks(15)) * 1000 / USER_HZ)
}

#[test]
fn missing_topic_is_reported_once_then_the_process_is_idle() {
    let broker = Broker::start(KAFKA_3);
    for (client, id) in [("librdkafka", "sm1rd"), ("kafka-rust", "sm1kr")] {
        missing_topic(&broker, client, id);
    }
}

fn missing_topic(broker: &Broker, client: &str, id: &str) {
    let config = KafkaSinkConfig::new([broker.bootstrap()], TOPIC)
        .unwrap()
        .param("kafka-client", client)
        .unwrap();
    let (maintainer, heartbeats) = bounded(1024);

    let started = Instant::now();
    let manager = DispatcherManager::builder(id)
        .maintainer(maintainer)
        .heartbeat_interval(Duration::from_millis(50))
        .start(KafkaSink::new(config).expect("a valid kafka config"))
        .unwrap();

    // 16 pushers, each pushing until its first failure, which it reports.
    let (report_tx, reports) = bounded(DISPATCHERS);
    // The sink fails as it starts, so a late `add_dispatcher` may already be refused,
    // with the same error: that table's pusher reports it without pushing.
    let pushers: Vec<_> = (0..DISPATCHERS)
        .filter_map(|i| {
            let d = match manager.add_dispatcher(table(i)) {
                Ok(d) => d,
                Err(e) => {
                    report_tx.send((i, 0, e)).unwrap();
                    return None;
                }
            };
            let report_tx = report_tx.clone();
            Some(std::thread::spawn(move || {
                let mut accepted = 0u64;
                loop {
                    let seq = accepted + 1;
                    match d.send(row(&table(i), 1000 + seq, seq, 100)) {
                        Ok(()) => accepted += 1,
                        Err(e) => {
                            report_tx.send((i, accepted, e.cause)).unwrap();
                            return (i, d);
                        }
                    }
                }
            }))
        })
        .collect();
    drop(report_tx);

    // Every heartbeat until the closed one; note when the error arrived.
    let mut all = Vec::new();
    let mut error_after = None;
    loop {
        let hb = heartbeats
            .recv_timeout(HANG_GUARD)
            .expect("no closed heartbeat within the hang guard");
        if hb.error.is_some() && error_after.is_none() {
            error_after = Some(started.elapsed());
        }
        let closed = hb.closed;
        all.push(hb);
        if closed {
            break;
        }
    }
    let reported = errors(&all);
    let error_after = error_after.expect("no RunningError reported");
    println!(
        "{client}: RunningError after {error_after:?}: {:?}; {} heartbeats",
        reported,
        all.len()
    );
    assert_eq!(reported.len(), 1, "exactly one RunningError: {reported:?}");
    assert_eq!(reported[0].code, "CDC:ErrKafkaTopicNotExists");
    assert!(
        reported[0].message.contains(TOPIC),
        "the report names the topic: {}",
        reported[0].message
    );
    assert!(
        error_after <= REPORT_WITHIN,
        "reported {error_after:?} after the start, more than {REPORT_WITHIN:?}"
    );

    let error = manager.wait().unwrap_err();
    assert_eq!(error.code(), "CDC:ErrKafkaTopicNotExists", "{error}");
    assert!(
        matches!(&error, Error::KafkaTopicNotExists { topic } if topic == TOPIC),
        "{error:?}"
    );

    // Every pusher stopped at a failed push carrying that error.
    let mut accepted_total = 0;
    for _ in 0..DISPATCHERS {
        let (i, accepted, cause) = reports
            .recv_timeout(HANG_GUARD)
            .expect("a pusher was never released");
        assert_eq!(
            cause.code(),
            "CDC:ErrKafkaTopicNotExists",
            "pusher {i}: {cause}"
        );
        assert!(cause.to_string().contains(TOPIC), "pusher {i}: {cause}");
        accepted_total += accepted;
    }
    let dispatchers: Vec<_> = pushers.into_iter().map(|p| p.join().unwrap()).collect();
    // And any later push fails at once, with the same error.
    for (i, d) in &dispatchers {
        let e = d.send(row(&table(*i), u64::MAX / 2, 0, 1)).unwrap_err();
        assert_eq!(e.cause.code(), "CDC:ErrKafkaTopicNotExists", "{}", e.cause);
    }
    let status = manager.status();
    assert_eq!(status.events_acked, 0, "nothing was acknowledged");
    assert_eq!(status.in_flight_bytes, 0, "the quota is fully returned");
    println!(
        "{accepted_total} events accepted into the queues before the failure, none acknowledged"
    );

    let prefix = format!("cf-{id}-");
    let left = wait_no_threads(&prefix, HANG_GUARD);
    assert!(left.is_empty(), "engine threads left: {left:?}");

    // Everything has stopped: the process must now be idle and its memory flat.
    let cpu_before = process_cpu_time();
    let rss_before = rss_bytes();
    let mut rss_max = rss_before;
    let until = Instant::now() + QUIET;
    while Instant::now() < until {
        // A measurement window, not a wait for an event: sample memory meanwhile.
        std::thread::sleep(Duration::from_millis(100));
        rss_max = rss_max.max(rss_bytes());
    }
    let cpu_after = process_cpu_time();
    let rss_after = rss_bytes();
    let cpu_used = cpu_after.saturating_sub(cpu_before);
    let threads = threads_named("");
    println!(
        "over {QUIET:?} after the failure: process CPU time {cpu_before:?} -> {cpu_after:?} \
         (+{cpu_used:?}); RSS {} -> {} KiB (max {} KiB); threads alive: {threads:?}",
        rss_before >> 10,
        rss_after >> 10,
        rss_max >> 10
    );
    assert!(
        cpu_used <= CPU_SLACK,
        "the process used {cpu_used:?} of CPU in {QUIET:?} with nothing to do (a busy thread?); threads: {threads:?}"
    );
    assert!(
        rss_max <= rss_before + RSS_SLACK,
        "memory grew from {rss_before} to {rss_max} bytes"
    );
    drop(dispatchers);
    drop(manager);
}
