//! The Kafka sink's throughput into a real Apache Kafka 3.9 broker, next to Kafka's own
//! producer benchmark (issue 3, "Benchmark"), on the librdkafka client (the default).
//!
//! A quick criterion view with short runs: ProducerPerformance's figures include its
//! JVM's start and warm-up, which weigh heavily at this size. The steady-state
//! comparison — 1,000,000 records per run, both clients, a raw rdkafka loop and
//! ProducerPerformance defaults and tuned, interleaved — is the performance report's
//! Kafka section (`CHANGEFEED_REPORT_ONLY=kafka cargo bench --bench report`).
//!
//! One single-node broker (the test harness, `tests/support/kafka.rs`) serves the whole
//! run, on loopback:
//!
//! * `kafka_sink/acks_all` and `kafka_sink/acks_one` (criterion, `iter_custom`, 10 flat
//!   samples): [`ROWS`] rows of ~200 bytes (the `engine` bench's row) from
//!   [`PRODUCERS`] producer threads, one table each, through the engine and our sink
//!   (canal-json, `IndexValue` partitioning) into a [`PARTITIONS`]-partition topic,
//!   timed from the first `send` to the end of `flush`; `required-acks` -1 and 1.
//! * Then Kafka's `org.apache.kafka.tools.ProducerPerformance` writes the same number of
//!   records, each of **our average encoded message size** (measured: key + value bytes
//!   of a sample our sink wrote, read back from the broker), with `acks=-1` and `acks=1`,
//!   `--throughput -1`, into a topic of the same partition count on the same broker.
//!   It runs with the JVM options of Kafka's `kafka-producer-perf-test.sh` (C2 JIT, G1,
//!   512 MB heap), not the harness's start-up-tuned tool options (client JIT only).
//!   Two producer configurations: Kafka's defaults (`batch.size` 16 KiB, `linger.ms` 0
//!   in 3.9), and `batch.size=1048576 linger.ms=5`, batching closer to our sink's
//!   (4 MiB / 16,384-record flushes). [`JAVA_RUNS`] runs per configuration and acks,
//!   all alternating. Each run is a fresh JVM and ProducerPerformance's figure is its
//!   own (from its first send to its last acknowledgement, JIT warm-up included):
//!   Kafka's tool as shipped.
//!
//! The final table prints, per acks, ours rows/s (median and best over every run
//! criterion made, warm-up included), Java's records/s per configuration (median and
//! best) and the ratios of medians (no target here: the report's Kafka section holds
//! the targets). On a small shared machine the
//! figures swing between runs (broker, producers and the JVM share the cores), hence
//! medians. The broker is killed
//! at the end of `main` (and by the harness's watchdog if the process dies).
//!
//! Run: `cargo bench --bench kafka` (about 1 to 3 minutes). `CHANGEFEED_BENCH_ROWS`
//! overrides [`ROWS`].

mod common;
#[path = "../tests/support/kafka.rs"]
mod kafka_support;

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use changefeed::sink::kafka::{ClientKind, RequiredAcks};
use common::{kafka_run, median, ProducerPerformance};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use kafka_support::{read_all, Broker, KAFKA_3};

/// Rows per measured run, over all producers.
const ROWS: usize = 200_000;
/// Producer threads, one table each.
const PRODUCERS: usize = 4;
/// Partitions of every benchmark topic.
const PARTITIONS: u32 = 4;
/// Rows of the sample that measures our average encoded message size.
const SAMPLE_ROWS: usize = 4_000;
/// ProducerPerformance runs per acks setting.
const JAVA_RUNS: usize = 3;
/// The ProducerPerformance configurations: Kafka's producer defaults (3.9: `batch.size`
/// 16 KiB, `linger.ms` 0), and batching like our sink's (large requests).
const JAVA_CONFIGS: [(&str, &[&str]); 2] = [
    ("defaults", &[]),
    (
        "batch.size=1MiB linger.ms=5",
        &["batch.size=1048576", "linger.ms=5"],
    ),
];

fn rows() -> usize {
    std::env::var("CHANGEFEED_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n >= PRODUCERS)
        .unwrap_or(ROWS)
}

/// The two acks settings: (label, ours, ProducerPerformance's `acks=`).
const ACKS: [(&str, RequiredAcks, &str); 2] = [
    ("acks_all", RequiredAcks::All, "-1"),
    ("acks_one", RequiredAcks::One, "1"),
];

fn our_topic(label: &str) -> String {
    format!("bench-ours-{label}")
}

fn java_topic(label: &str) -> String {
    format!("bench-java-{label}")
}

const SAMPLE_TOPIC: &str = "bench-sample";

/// The broker, started on first use; taken and dropped (killed) at the end of `main`.
static BROKER: OnceLock<Mutex<Option<Broker>>> = OnceLock::new();
/// Our average encoded message size (key + value bytes), measured once the broker is up.
static AVG_SIZE: OnceLock<usize> = OnceLock::new();
/// Every run of ours: (acks label, rows, elapsed).
static OUR_RUNS: Mutex<Vec<(&str, usize, Duration)>> = Mutex::new(Vec::new());

/// The broker's bootstrap address, starting the broker (and creating the topics, and
/// measuring our message size) on first call.
fn bootstrap() -> String {
    let cell = BROKER.get_or_init(|| {
        let t = Instant::now();
        let broker = Broker::start(KAFKA_3);
        let mut topics: Vec<(String, u32)> = vec![(SAMPLE_TOPIC.to_string(), PARTITIONS)];
        for (label, _, _) in ACKS {
            topics.push((our_topic(label), PARTITIONS));
            topics.push((java_topic(label), PARTITIONS));
        }
        let refs: Vec<(&str, u32)> = topics.iter().map(|(t, p)| (t.as_str(), *p)).collect();
        broker.create_topics(&refs);
        eprintln!(
            "kafka bench: Kafka {} broker at {} with {} topics of {PARTITIONS} partitions, ready in {:?}",
            broker.version(),
            broker.bootstrap(),
            refs.len(),
            t.elapsed()
        );
        Mutex::new(Some(broker))
    });
    let guard = cell.lock().unwrap_or_else(|e| e.into_inner());
    guard
        .as_ref()
        .expect("the broker was already stopped")
        .bootstrap()
}

/// Our average encoded message size: key + value bytes of a sample written by our sink,
/// read back from the broker.
fn average_size(bootstrap: &str) -> usize {
    *AVG_SIZE.get_or_init(|| {
        kafka_run(
            bootstrap,
            SAMPLE_TOPIC,
            RequiredAcks::All,
            PRODUCERS,
            SAMPLE_ROWS,
            ClientKind::Librdkafka,
        );
        let messages = read_all(
            bootstrap,
            SAMPLE_TOPIC,
            SAMPLE_ROWS,
            Duration::from_secs(60),
        );
        assert_eq!(messages.len(), SAMPLE_ROWS, "sample read back");
        let bytes: usize = messages.iter().map(|m| m.key.len() + m.value.len()).sum();
        let avg = (bytes as f64 / messages.len() as f64).round() as usize;
        eprintln!(
            "kafka bench: our average encoded message: {avg} bytes ({bytes} bytes / {} messages read back)",
            messages.len()
        );
        avg
    })
}

fn kafka_sink(c: &mut Criterion) {
    let rows = rows();
    let mut group = c.benchmark_group("kafka_sink");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(1));
    // Flat sampling: about 10 to 15 runs per acks setting at ~200k rows/s.
    group.measurement_time(Duration::from_secs(12));
    group.throughput(Throughput::Elements((rows / PRODUCERS * PRODUCERS) as u64));
    for (label, acks, _) in ACKS {
        group.bench_function(BenchmarkId::new(label, rows), |b| {
            let bootstrap = bootstrap();
            average_size(&bootstrap);
            let topic = our_topic(label);
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let (elapsed, acked) = kafka_run(
                            &bootstrap,
                            &topic,
                            acks,
                            PRODUCERS,
                            rows,
                            ClientKind::Librdkafka,
                        );
                        OUR_RUNS
                            .lock()
                            .unwrap()
                            .push((label, acked as usize, elapsed));
                        elapsed
                    })
                    .sum()
            })
        });
    }
    group.finish();
}

/// Our runs of one acks setting: (rows, elapsed) each.
type Runs = Vec<(usize, Duration)>;

/// Runs ProducerPerformance [`JAVA_RUNS`] times per configuration and acks setting,
/// alternating them so that all see the same conditions, and prints the comparison
/// table (ratios of medians).
fn compare_with_java() {
    let Some(cell) = BROKER.get() else {
        // Criterion ran no benchmark (filtered out, or `--list`): nothing to compare.
        return;
    };
    let guard = cell.lock().unwrap_or_else(|e| e.into_inner());
    let Some(broker) = guard.as_ref() else { return };
    let size = *AVG_SIZE.get().expect("measured with the broker");
    let runs = OUR_RUNS.lock().unwrap().clone();
    // Per acks label: our (rows, elapsed) runs.
    let ours: Vec<(&str, &str, Runs)> = ACKS
        .iter()
        .map(|&(label, _, acks)| {
            let mine = runs
                .iter()
                .filter(|(l, _, _)| *l == label)
                .map(|&(_, n, d)| (n, d))
                .collect();
            (label, acks, mine)
        })
        .filter(|(_, _, mine): &(_, _, Runs)| !mine.is_empty())
        .collect();
    if ours.is_empty() {
        return;
    }
    let records = ours[0].2[0].0;
    let perf = ProducerPerformance {
        dir: broker.dir(),
        libs: broker.libs(),
        bootstrap: broker.bootstrap(),
    };
    // java[config][acks]: records/s of each run.
    let mut java: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); ours.len()]; JAVA_CONFIGS.len()];
    for i in 1..=JAVA_RUNS {
        for (c, (config, props)) in JAVA_CONFIGS.iter().enumerate() {
            for (k, (label, acks, _)) in ours.iter().enumerate() {
                let run = perf.run(&java_topic(label), records, size, acks, props);
                eprintln!(
                    "kafka bench: ProducerPerformance ({config}) acks={acks} run {i}/{JAVA_RUNS}: {}",
                    run.line
                );
                java[c][k].push(run.records_per_sec);
            }
        }
    }
    drop(guard);
    let best = |xs: &[f64]| xs.iter().cloned().fold(0.0, f64::max);
    println!();
    println!(
        "Kafka sink vs Kafka's ProducerPerformance: Kafka {KAFKA_3}, one broker on loopback, \
         {PARTITIONS} partitions, {records} records of {size} bytes (our average canal-json \
         message), ours from {PRODUCERS} producer threads, {} cores. Rows/s and records/s: \
         median (best) of the runs; ours {} runs per acks (criterion's, warm-up included), \
         Java {JAVA_RUNS} per configuration and acks.",
        thread::available_parallelism().map_or(0, |n| n.get()),
        ours.iter()
            .map(|(_, acks, r)| format!("{} (acks {acks})", r.len()))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    println!();
    let mut header = "| acks | ours rows/s |".to_string();
    let mut rule = "|---|---|".to_string();
    for (config, _) in JAVA_CONFIGS {
        header.push_str(&format!(" Java, {config}: records/s | ratio ours / Java |"));
        rule.push_str("---|---|");
    }
    println!("{header}");
    println!("{rule}");
    for (k, (_, acks, mine)) in ours.iter().enumerate() {
        let rates: Vec<f64> = mine
            .iter()
            .map(|(n, d)| *n as f64 / d.as_secs_f64())
            .collect();
        let ours_median = median(rates.clone());
        let mut line = format!("| {acks} | {ours_median:.0} ({:.0}) |", best(&rates));
        for per_config in &java {
            let rates = &per_config[k];
            let java_median = median(rates.clone());
            line.push_str(&format!(
                " {java_median:.0} ({:.0}) | {:.2}x |",
                best(rates),
                ours_median / java_median
            ));
        }
        println!("{line}");
    }
    println!();
}

fn main() {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut criterion = Criterion::default().configure_from_args();
        kafka_sink(&mut criterion);
        criterion.final_summary();
        compare_with_java();
    }));
    // Kill the broker (also after a panic: statics are never dropped).
    if let Some(cell) = BROKER.get() {
        let broker = cell.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(broker);
    }
    if let Err(panic) = outcome {
        resume_unwind(panic);
    }
}
