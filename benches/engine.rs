//! Engine benchmarks (criterion).
//!
//! * `throughput/engine/N` vs `throughput/raw_channel/N`: N producer threads move the
//!   same ~200-byte `RowChange` values, through the engine into a blackhole sink, and
//!   through one bounded crossbeam channel in batches of the same size the dispatchers
//!   use, to one consumer thread. Target: engine >= 0.5x the raw channel.
//! * `close_latency/error_report/N` and `close_latency/all_released/N`: N dispatchers
//!   blocked on a full channel; the sink fails; time until the maintainer holds the
//!   error report, and until the last blocked sender is released. Targets: report
//!   < 1 ms; all released <= 10 ms (64) and <= 50 ms (1,000).
//!
//! Run: `cargo bench --bench engine`.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use changefeed::sink::{Batch, BlackholeSink, Encoder, Message, Sink};
use changefeed::{Column, DispatcherManager, Event, RowChange, TableName, Value, MAX_BATCH_EVENTS};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crossbeam_channel::{bounded, Receiver};
use parking_lot::Mutex;

/// Rows moved per measured iteration, over all producers.
const ROWS: usize = 200_000;

fn table(i: usize) -> TableName {
    TableName::new("bench", format!("t{i}"))
}

/// A ~200-byte row: key, two numbers, a 150-byte text.
fn row(table: &TableName, ts: u64) -> RowChange {
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

fn engine_run(producers: usize) -> Duration {
    let manager = DispatcherManager::builder("bench")
        .start(BlackholeSink::new())
        .unwrap();
    let dispatchers: Vec<_> = (0..producers)
        .map(|i| manager.add_dispatcher(table(i)).unwrap())
        .collect();
    let per = ROWS / producers;
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
    manager.close().unwrap();
    elapsed
}

fn raw_channel_run(producers: usize) -> Duration {
    let (tx, rx) = bounded::<Vec<RowChange>>(changefeed::DEFAULT_CHANNEL_CAPACITY);
    let per = ROWS / producers;
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

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("throughput");
    group.sample_size(10);
    for producers in [1usize, 8, 64] {
        group.throughput(Throughput::Elements((ROWS / producers * producers) as u64));
        group.bench_function(BenchmarkId::new("engine", producers), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| engine_run(producers)).sum())
        });
        group.bench_function(BenchmarkId::new("raw_channel", producers), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| raw_channel_run(producers)).sum())
        });
    }
    group.finish();
}

/// A sink that accepts nothing until told to fail: every dispatcher ends up blocked on
/// the full channel. Records when it failed.
struct FailOnCue {
    cue: Receiver<()>,
    failed_at: Arc<Mutex<Option<Instant>>>,
}

struct Empty;

impl Encoder for Empty {
    fn encode(&self, event: &Event, out: &mut Vec<Message>) -> changefeed::Result<()> {
        out.push(Message {
            commit_ts: event.commit_ts(),
            ..Message::default()
        });
        Ok(())
    }
}

impl Sink for FailOnCue {
    fn encoder(&self) -> Arc<dyn Encoder> {
        Arc::new(Empty)
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

/// (time to the error report, time to the last sender released), from the sink's failure.
fn close_latency_run(dispatchers: usize) -> (Duration, Duration) {
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
    let pushers: Vec<_> = (0..dispatchers)
        .map(|i| {
            let d = manager.add_dispatcher(table(i)).unwrap();
            let released_tx = released_tx.clone();
            thread::spawn(move || {
                let t = table(i);
                for ts in 1.. {
                    if d.send(row(&t, ts)).is_err() {
                        released_tx.send(Instant::now()).unwrap();
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
    for p in pushers {
        p.join().unwrap();
    }
    let _ = manager.wait();
    let failed_at = failed_at.lock().unwrap();
    (reported_at - failed_at, last_released - failed_at)
}

fn close_latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("close_latency");
    group.sample_size(10);
    for dispatchers in [64usize, 1000] {
        group.bench_function(BenchmarkId::new("error_report", dispatchers), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| close_latency_run(dispatchers).0).sum())
        });
        group.bench_function(BenchmarkId::new("all_released", dispatchers), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| close_latency_run(dispatchers).1).sum())
        });
    }
    group.finish();
}

criterion_group!(benches, throughput, close_latency);
criterion_main!(benches);
