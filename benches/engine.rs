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

mod common;

use changefeed::sink::BlackholeSink;
use common::{close_latency_run, engine_run, raw_channel_run};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Rows moved per measured iteration, over all producers.
const ROWS: usize = 200_000;

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("throughput");
    group.sample_size(10);
    for producers in [1usize, 8, 64] {
        group.throughput(Throughput::Elements((ROWS / producers * producers) as u64));
        group.bench_function(BenchmarkId::new("engine", producers), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| engine_run(BlackholeSink::new(), producers, ROWS))
                    .sum()
            })
        });
        group.bench_function(BenchmarkId::new("raw_channel", producers), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| raw_channel_run(producers, ROWS)).sum())
        });
    }
    group.finish();
}

fn close_latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("close_latency");
    group.sample_size(10);
    for dispatchers in [64usize, 1000] {
        group.bench_function(BenchmarkId::new("error_report", dispatchers), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| close_latency_run(dispatchers).report)
                    .sum()
            })
        });
        group.bench_function(BenchmarkId::new("all_released", dispatchers), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| close_latency_run(dispatchers).released)
                    .sum()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, throughput, close_latency);
criterion_main!(benches);
