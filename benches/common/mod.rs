//! What the benches share (`engine`, `kafka`, `report`): the benchmark row, the timed
//! runs, and Kafka's `ProducerPerformance`. Included with `mod common;`; each bench uses
//! part of it.
#![allow(dead_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use changefeed::codec::CanalJson;
use changefeed::sink::kafka::{
    ClientKind, KafkaSink, KafkaSinkConfig, PartitionRule, RequiredAcks,
};
use changefeed::sink::{Batch, Batching, BlackholeSink, Encoder, Message, PartitionChoice, Sink};
use changefeed::{
    Column, DispatcherManager, Event, RowChange, TableName, Value, DEFAULT_CHANNEL_CAPACITY,
    MAX_BATCH_EVENTS,
};
use crossbeam_channel::{bounded, Receiver, TryRecvError};
use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientConfig;

/// `bench.t<i>`: the table of producer `i`.
pub fn table(i: usize) -> TableName {
    TableName::new("bench", format!("t{i}"))
}

/// A ~200-byte row: key, two numbers, a 150-byte text.
pub fn row(table: &TableName, ts: u64) -> RowChange {
    RowChange::insert(
        table.clone(),
        ts,
        vec![
            Column::key("id", Value::UInt(ts)),
            Column::new("qty", Value::Int(7)),
            Column::new("price", Value::Decimal("12.50".into())),
            Column::new("note", Value::Text("n".repeat(150))),
        ],
    )
}

/// `rows / producers` rows from each of `producers` threads (one table each) through the
/// engine into `sink`, timed from the first send to the end of the flush (manager start
/// and dispatchers added before).
pub fn engine_run<S: Sink + 'static>(sink: S, producers: usize, rows: usize) -> Duration {
    engine_run_counted(sink, producers, rows).elapsed
}

/// What one [`engine_run_counted`] measured.
pub struct EngineRun {
    /// From the first send to the end of the flush.
    pub elapsed: Duration,
    /// Events the sink acknowledged.
    pub events: u64,
    /// Batches the sink acknowledged (the dispatchers' batches: events / batches is the
    /// average batch the engine made).
    pub batches: u64,
    /// Sends that had to wait for the memory quota.
    pub quota_waits: u64,
}

/// [`engine_run`], also returning the engine's acknowledged events and batches.
pub fn engine_run_counted<S: Sink + 'static>(sink: S, producers: usize, rows: usize) -> EngineRun {
    let manager = DispatcherManager::builder("bench").start(sink).unwrap();
    let dispatchers: Vec<_> = (0..producers)
        .map(|i| manager.add_dispatcher(table(i)).unwrap())
        .collect();
    let per = rows / producers;
    let start = Instant::now();
    thread::scope(|s| {
        for (i, d) in dispatchers.iter().enumerate() {
            s.spawn(move || {
                let t = table(i);
                for ts in 1..=per as u64 {
                    d.send(row(&t, ts)).unwrap();
                }
            });
        }
    });
    manager.flush(Duration::from_secs(60)).unwrap();
    let elapsed = start.elapsed();
    let status = manager.status();
    manager.close().unwrap();
    EngineRun {
        elapsed,
        events: status.events_acked,
        batches: status.batches_acked,
        quota_waits: status.quota_waits,
    }
}

/// The same rows as [`engine_run`] through one bounded crossbeam channel (the engine's
/// default sink channel capacity), in `Vec`s of [`MAX_BATCH_EVENTS`] rows, to one
/// consumer thread that counts them.
pub fn raw_channel_run(producers: usize, rows: usize) -> Duration {
    let (tx, rx) = bounded::<Vec<RowChange>>(changefeed::DEFAULT_CHANNEL_CAPACITY);
    let per = rows / producers;
    let start = Instant::now();
    let consumer = thread::spawn(move || {
        let mut n = 0usize;
        for batch in rx {
            n += batch.len();
        }
        n
    });
    thread::scope(|s| {
        for i in 0..producers {
            let tx = tx.clone();
            s.spawn(move || {
                let t = table(i);
                let mut batch = Vec::with_capacity(MAX_BATCH_EVENTS);
                for ts in 1..=per as u64 {
                    batch.push(row(&t, ts));
                    if batch.len() == MAX_BATCH_EVENTS {
                        tx.send(std::mem::replace(
                            &mut batch,
                            Vec::with_capacity(MAX_BATCH_EVENTS),
                        ))
                        .unwrap();
                    }
                }
                if !batch.is_empty() {
                    tx.send(batch).unwrap();
                }
            });
        }
    });
    drop(tx);
    assert_eq!(consumer.join().unwrap(), per * producers);
    start.elapsed()
}

/// The raw channel with canal-json encoding on the producers and a consumer that writes
/// the file as `FileSink` does, flushing and syncing per group as the sink thread does
/// with the default [`Batching`]. Timed from the first row to the last sync.
pub fn raw_file_run(producers: usize, rows: usize, path: &Path) -> Duration {
    let (tx, rx) = bounded::<Vec<Message>>(DEFAULT_CHANNEL_CAPACITY);
    let per = rows / producers;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the raw file");
    let start = Instant::now();
    let consumer = thread::spawn(move || -> std::io::Result<usize> {
        let batching = Batching::default();
        let mut out = BufWriter::with_capacity(256 << 10, file);
        let mut written = 0usize;
        let mut write =
            |out: &mut BufWriter<File>, batch: Vec<Message>| -> std::io::Result<(usize, usize)> {
                let mut bytes = 0;
                for m in &batch {
                    out.write_all(&m.value)?;
                    out.write_all(b"\n")?;
                    bytes += m.key.len() + m.value.len();
                }
                written += batch.len();
                Ok((bytes, batch.len()))
            };
        'groups: while let Ok(first) = rx.recv() {
            let (mut bytes, mut messages) = write(&mut out, first)?;
            while bytes < batching.max_bytes && messages < batching.max_messages {
                match rx.try_recv() {
                    Ok(batch) => {
                        let (b, m) = write(&mut out, batch)?;
                        bytes += b;
                        messages += m;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => break 'groups,
                }
            }
            out.flush()?;
            out.get_ref().sync_data()?;
        }
        out.flush()?;
        out.get_ref().sync_data()?;
        Ok(written)
    });
    thread::scope(|s| {
        for i in 0..producers {
            let tx = tx.clone();
            s.spawn(move || {
                let t = table(i);
                let encoder = CanalJson::default();
                let mut batch = Vec::with_capacity(MAX_BATCH_EVENTS);
                let mut events = 0;
                for ts in 1..=per as u64 {
                    encoder
                        .encode(&Event::Row(row(&t, ts)), &mut batch)
                        .expect("encode");
                    events += 1;
                    if events == MAX_BATCH_EVENTS {
                        events = 0;
                        tx.send(std::mem::replace(
                            &mut batch,
                            Vec::with_capacity(MAX_BATCH_EVENTS),
                        ))
                        .unwrap();
                    }
                }
                if !batch.is_empty() {
                    tx.send(batch).unwrap();
                }
            });
        }
    });
    drop(tx);
    let written = consumer.join().unwrap().expect("write the raw file");
    let elapsed = start.elapsed();
    assert_eq!(written, per * producers);
    elapsed
}

/// A sink that accepts nothing until told to fail: every dispatcher ends up blocked on
/// the full channel. Records when it failed.
struct FailOnCue {
    cue: Receiver<()>,
    failed_at: Arc<Mutex<Option<Instant>>>,
}

impl Sink for FailOnCue {
    fn encoder(&self) -> Arc<dyn Encoder> {
        // The blackhole's: one empty message per event, no encoding work.
        BlackholeSink::new().encoder()
    }
    fn write(&mut self, _batch: &mut Batch) -> changefeed::Result<()> {
        let _ = self.cue.recv();
        *self.failed_at.lock() = Some(Instant::now());
        Err(changefeed::Error::io(
            "bench sink",
            std::io::Error::other("failing on cue"),
        ))
    }
    fn flush(&mut self) -> changefeed::Result<()> {
        Ok(())
    }
}

/// What one close-latency trial measured.
pub struct CloseTrial {
    /// From the sink's failure to the maintainer holding the error report.
    pub report: Duration,
    /// From the sink's failure to the last blocked sender released.
    pub released: Duration,
    /// The machine's floor for the report, measured just before in the same state:
    /// the two thread wake-ups the report takes (sink thread → watcher → maintainer)
    /// done with plain crossbeam channels and nothing else.
    pub two_hop_wake: Duration,
}

/// A stamp sent by one thread, forwarded by a second, received by a third: the wake-up
/// chain of an error report, with no engine in it. The three threads are parked on
/// their channels before the first is cued.
fn two_hop_wake() -> Duration {
    let (cue_tx, cue) = bounded::<()>(1);
    let (first_tx, first) = bounded::<Instant>(1);
    let (second_tx, second) = bounded::<Instant>(1);
    let (parked_tx, parked) = bounded::<()>(3);
    let p = parked_tx.clone();
    let source = thread::spawn(move || {
        p.send(()).unwrap();
        cue.recv().unwrap();
        first_tx.send(Instant::now()).unwrap();
    });
    let p = parked_tx.clone();
    let forwarder = thread::spawn(move || {
        p.send(()).unwrap();
        second_tx.send(first.recv().unwrap()).unwrap();
    });
    let sink = thread::spawn(move || {
        parked_tx.send(()).unwrap();
        second.recv().unwrap().elapsed()
    });
    for _ in 0..3 {
        parked.recv().unwrap();
    }
    // Announced just before they block: give them the time to get there.
    thread::sleep(Duration::from_millis(2));
    cue_tx.send(()).unwrap();
    let took = sink.join().unwrap();
    source.join().unwrap();
    forwarder.join().unwrap();
    took
}

/// `dispatchers` dispatchers blocked on a full channel (channel capacity 1, dispatcher
/// capacity 1, one producer thread each); the sink fails. Times from the sink's
/// failure, and the machine's two-hop wake-up in the same state (see [`CloseTrial`]).
pub fn close_latency_run(dispatchers: usize) -> CloseTrial {
    let (cue_tx, cue) = bounded(1);
    let failed_at = Arc::new(Mutex::new(None));
    let (maintainer, heartbeats) = bounded(16);
    let manager = DispatcherManager::builder("lat")
        .maintainer(maintainer)
        .heartbeat_interval(Duration::from_secs(3600))
        .channel_capacity(1)
        .dispatcher_capacity(1)
        .start(FailOnCue {
            cue,
            failed_at: Arc::clone(&failed_at),
        })
        .unwrap();
    let (released_tx, released) = bounded(dispatchers);
    // Released producers wait here until all are, so that the exits of the first (stack
    // unmapping, TLB shootdowns) do not slow the last: the bench's threads, not the
    // engine's cost.
    let (done_tx, done) = bounded::<()>(0);
    let pushers: Vec<_> = (0..dispatchers)
        .map(|i| {
            let d = manager.add_dispatcher(table(i)).unwrap();
            let released_tx = released_tx.clone();
            let done = done.clone();
            thread::spawn(move || {
                let t = table(i);
                for ts in 1.. {
                    if d.send(row(&t, ts)).is_err() {
                        released_tx.send(Instant::now()).unwrap();
                        let _ = done.recv();
                        return;
                    }
                }
            })
        })
        .collect();
    // Every table queue full: each producer's next send blocks.
    while !manager
        .status()
        .dispatchers
        .iter()
        .all(|d| d.queue_depth == 1)
    {
        thread::sleep(Duration::from_millis(1));
    }
    // Give those sends time to enter their wait.
    thread::sleep(Duration::from_millis(20));
    let two_hop_wake = two_hop_wake();
    let reporter = thread::spawn(move || loop {
        let hb = heartbeats.recv().unwrap();
        if hb.error.is_some() {
            return Instant::now();
        }
    });
    cue_tx.send(()).unwrap();
    let reported_at = reporter.join().unwrap();
    let last_released = (0..dispatchers)
        .map(|_| released.recv().unwrap())
        .max()
        .unwrap();
    drop(done_tx);
    for p in pushers {
        p.join().unwrap();
    }
    let _ = manager.wait();
    let failed_at = failed_at.lock().unwrap();
    CloseTrial {
        report: reported_at - failed_at,
        released: last_released - failed_at,
        two_hop_wake,
    }
}

/// The median (mean of the middle two for an even count). `NaN` when empty.
pub fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Bound on the flush at the end of one Kafka run.
pub const KAFKA_FLUSH_TIMEOUT: Duration = Duration::from_secs(120);

/// The Kafka sink config every Kafka run uses: canal-json, `IndexValue` partitioning,
/// `acks`, `client`; everything else the sink's defaults (kafka-rust with its default
/// `connections`), unless `CHANGEFEED_BENCH_KAFKA_PARAMS` (`name=value&name=value`, URI
/// parameters, e.g. `batch-bytes=16777216`) overrides some: for trying settings, the
/// report's figures are with the defaults.
pub fn kafka_config(
    bootstrap: &str,
    topic: &str,
    acks: RequiredAcks,
    client: ClientKind,
) -> KafkaSinkConfig {
    let mut config = KafkaSinkConfig::new([bootstrap], topic)
        .unwrap()
        .kafka_client(client)
        .required_acks(acks)
        .partition_rule("*.*", PartitionRule::IndexValue)
        .unwrap();
    let params = std::env::var("CHANGEFEED_BENCH_KAFKA_PARAMS").unwrap_or_default();
    for pair in params.split('&').filter(|p| !p.trim().is_empty()) {
        let (name, value) = pair.split_once('=').expect("name=value");
        config = config
            .param(name.trim(), value.trim())
            .expect("a valid parameter");
    }
    config
}

/// One Kafka run: `rows / producers` rows from each of `producers` threads (one table
/// each) through the engine and our sink on `client` ([`kafka_config`]) into `topic`,
/// timed from the first send to the end of the flush (the sink connected and read the
/// topic's metadata before). Returns the elapsed time and the events the sink
/// acknowledged (all of them, checked).
pub fn kafka_run(
    bootstrap: &str,
    topic: &str,
    acks: RequiredAcks,
    producers: usize,
    rows: usize,
    client: ClientKind,
) -> (Duration, u64) {
    let config = kafka_config(bootstrap, topic, acks, client);
    let manager = DispatcherManager::builder(format!("bench-{topic}"))
        .start(KafkaSink::new(config).expect("a valid kafka config"))
        .unwrap();
    let tables: Vec<TableName> = (0..producers).map(table).collect();
    let dispatchers: Vec<_> = tables
        .iter()
        .map(|t| manager.add_dispatcher(t.clone()).unwrap())
        .collect();
    let per = rows / producers;
    let start = Instant::now();
    thread::scope(|s| {
        for (d, t) in dispatchers.iter().zip(&tables) {
            s.spawn(move || {
                for ts in 1..=per as u64 {
                    d.send(row(t, ts)).unwrap();
                }
            });
        }
    });
    manager.flush(KAFKA_FLUSH_TIMEOUT).unwrap();
    let elapsed = start.elapsed();
    let status = manager.status();
    manager.close().unwrap();
    assert_eq!(
        status.events_acked,
        (per * producers) as u64,
        "every row acked"
    );
    (elapsed, status.events_acked)
}

/// One message of the raw librdkafka loop, encoded beforehand by our sink's encoder.
pub struct RawMessage {
    pub partition: i32,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Milliseconds, as our librdkafka client stamps it (the commit ts's physical part).
    pub timestamp: i64,
}

/// The messages of one [`kafka_run`] (`rows / producers` rows of each of `producers`
/// tables, the tables interleaved row by row), encoded by the encoder of the sink
/// [`kafka_config`] builds, each with the partition our sink would pick among
/// `partitions`.
pub fn encode_for_raw(
    bootstrap: &str,
    topic: &str,
    producers: usize,
    rows: usize,
    partitions: u32,
) -> Vec<RawMessage> {
    let sink = KafkaSink::new(kafka_config(
        bootstrap,
        topic,
        RequiredAcks::All,
        ClientKind::Librdkafka,
    ))
    .expect("a valid kafka config");
    let encoder = sink.encoder();
    let tables: Vec<TableName> = (0..producers).map(table).collect();
    let per = rows / producers;
    let mut out = Vec::with_capacity(per * producers);
    let mut messages = Vec::new();
    for ts in 1..=per as u64 {
        for t in &tables {
            messages.clear();
            encoder
                .encode(&Event::Row(row(t, ts)), &mut messages)
                .expect("encode");
            for m in messages.drain(..) {
                let partition = match m.route.partition {
                    PartitionChoice::Hash(h) => (h % u64::from(partitions)) as i32,
                    PartitionChoice::Fixed(p) => p.clamp(0, partitions as i32 - 1),
                    PartitionChoice::All => panic!("a row goes to one partition"),
                };
                out.push(RawMessage {
                    partition,
                    timestamp: changefeed::tso::physical_millis(m.commit_ts).min(i64::MAX as u64)
                        as i64,
                    key: m.key,
                    value: m.value,
                });
            }
        }
    }
    out
}

/// Counts the raw loop's delivery reports.
#[derive(Default)]
struct Counting {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error.lock().get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// How long the raw loop sleeps when librdkafka's queue is full, or at the end when a
/// non-blocking `poll` served no report. Not `poll(1 ms)`: rdkafka's `poll(t)` hands
/// librdkafka the time left in whole milliseconds, so a 1 ms poll is a busy loop.
const RAW_IDLE: Duration = Duration::from_micros(200);

/// The raw librdkafka anchor: a `BaseProducer` with exactly the properties our
/// librdkafka client sets for this topic and `acks` (`librdkafka_properties` of the
/// same [`kafka_config`]: idempotence with acks -1, linger, queue bounds …) sends
/// `messages` to `topic` in one loop — no engine, no flushes, no waiting between
/// requests: `send`, `poll(0)` after each (librdkafka's own producer example), and on
/// `QueueFull` `poll(0)`, a 200 µs sleep and again. Timed from the first send until every
/// message has its delivery report (non-blocking polls, a 200 µs sleep when one served
/// nothing; not `flush`, whose 100 ms polls would add up to 100 ms). The producer is created and has the topic's metadata before.
/// Returns the elapsed time and the messages delivered (all of them, checked).
pub fn raw_rdkafka_run(
    bootstrap: &str,
    topic: &str,
    acks: RequiredAcks,
    messages: &[RawMessage],
) -> (Duration, u64) {
    let config = kafka_config(bootstrap, topic, acks, ClientKind::Librdkafka);
    let mut client_config = ClientConfig::new();
    for (k, v) in config.librdkafka_properties() {
        client_config.set(k, v);
    }
    let producer: BaseProducer<Counting> = client_config
        .create_with_context(Counting::default())
        .expect("create the raw producer");
    producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("the raw producer's metadata");
    let n = messages.len() as u64;
    let start = Instant::now();
    for m in messages {
        let mut record = BaseRecord::to(topic)
            .partition(m.partition)
            .payload(&m.value[..])
            .timestamp(m.timestamp);
        if !m.key.is_empty() {
            record = record.key(&m.key[..]);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::ZERO);
                    thread::sleep(RAW_IDLE);
                }
                Err((e, _)) => panic!("raw producer send: {e}"),
            }
        }
        producer.poll(Duration::ZERO);
    }
    let deadline = Instant::now() + KAFKA_FLUSH_TIMEOUT;
    let ctx = producer.context();
    let reported = || ctx.delivered.load(Ordering::Relaxed) + ctx.failed.load(Ordering::Relaxed);
    while reported() < n {
        assert!(Instant::now() < deadline, "raw producer: reports missing");
        let before = reported();
        producer.poll(Duration::ZERO);
        if reported() == before {
            thread::sleep(RAW_IDLE);
        }
    }
    let elapsed = start.elapsed();
    let delivered = ctx.delivered.load(Ordering::Relaxed);
    assert_eq!(
        delivered,
        n,
        "raw producer: every message delivered (first error: {:?})",
        ctx.first_error.lock()
    );
    (elapsed, delivered)
}

/// Bound on one ProducerPerformance run (JVM start included).
pub const JAVA_TIMEOUT: Duration = Duration::from_secs(120);

/// What one ProducerPerformance run reported: records/s, and its final line.
pub struct JavaRun {
    pub records_per_sec: f64,
    pub line: String,
}

/// Parses ProducerPerformance's final line: `N records sent, R records/sec (M MB/sec),
/// …`.
pub fn parse_final_line(stdout: &str) -> Option<JavaRun> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.contains("records sent") && l.contains("records/sec"))?;
    let records_per_sec = line
        .split(", ")
        .find(|part| part.contains("records/sec"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(JavaRun {
        records_per_sec,
        line: line.trim().to_string(),
    })
}

/// `$JAVA_HOME/bin/java` if there is one, else `java` from the path.
pub fn java() -> PathBuf {
    match std::env::var_os("JAVA_HOME") {
        Some(home) if Path::new(&home).join("bin/java").is_file() => {
            Path::new(&home).join("bin/java")
        }
        _ => PathBuf::from("java"),
    }
}

/// Kafka's `org.apache.kafka.tools.ProducerPerformance` against one broker of the test
/// harness (`tests/support/kafka.rs`): its directory (for the tools' log config and
/// scratch output), its jars, its bootstrap address.
pub struct ProducerPerformance<'a> {
    pub dir: &'a Path,
    pub libs: &'a Path,
    pub bootstrap: String,
}

impl ProducerPerformance<'_> {
    /// Runs ProducerPerformance once, as `kafka-producer-perf-test.sh` would (its JVM
    /// options: C2 JIT, G1, 512 MB heap), `--throughput -1`, logging at WARN to stderr
    /// (the harness's tools log config), with `acks` and the extra producer `props`.
    /// Panics with its output when it fails or does not finish within [`JAVA_TIMEOUT`].
    pub fn run(
        &self,
        topic: &str,
        records: usize,
        size: usize,
        acks: &str,
        props: &[&str],
    ) -> JavaRun {
        let out_path = self.dir.join(format!("perf-{topic}.out"));
        let err_path = self.dir.join(format!("perf-{topic}.err"));
        let mut child = Command::new(java())
            .args([
                "-Xmx512M",
                "-server",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:InitiatingHeapOccupancyPercent=35",
                "-XX:+ExplicitGCInvokesConcurrent",
                "-XX:-UsePerfData",
                "-Djava.awt.headless=true",
            ])
            .arg(format!(
                "-Dlog4j.configuration=file:{}",
                self.dir.join("tools-log4j.properties").display()
            ))
            .arg("-cp")
            .arg(format!("{}/*", self.libs.display()))
            .arg("org.apache.kafka.tools.ProducerPerformance")
            .args(["--topic", topic])
            .args(["--num-records", &records.to_string()])
            .args(["--record-size", &size.to_string()])
            .args(["--throughput", "-1"])
            .args([
                "--producer-props".to_string(),
                format!("bootstrap.servers={}", self.bootstrap),
                format!("acks={acks}"),
            ])
            .args(props)
            .stdin(Stdio::null())
            .stdout(File::create(&out_path).expect("create perf stdout"))
            .stderr(File::create(&err_path).expect("create perf stderr"))
            .spawn()
            .expect("spawn java ProducerPerformance");
        let deadline = Instant::now() + JAVA_TIMEOUT;
        let status = loop {
            match child.try_wait().expect("wait for java") {
                Some(status) => break Some(status),
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                None => thread::sleep(Duration::from_millis(50)),
            }
        };
        let stdout = fs::read_to_string(&out_path).unwrap_or_default();
        let stderr = fs::read_to_string(&err_path).unwrap_or_default();
        let _ = fs::remove_file(&out_path);
        let _ = fs::remove_file(&err_path);
        match (status, parse_final_line(&stdout)) {
            (Some(s), Some(run)) if s.success() => run,
            _ => panic!(
                "ProducerPerformance ({topic}, acks={acks}) failed: {status:?}\n\
                 --- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
            ),
        }
    }
}
