//! One case of the performance report, run in a loop so a profiler can watch it.
//!
//! `cargo bench --bench profile -- CASE N [SECONDS]` runs CASE with N dispatchers (or
//! producers) over and over for SECONDS (default 10) and prints the rate. `scripts/profile.sh`
//! wraps it in `perf record`; the README's profiles come from there.
//!
//! Cases (the pipelines of `cargo bench --bench report`, same rows, same sizes):
//! * `raw`: the raw crossbeam channel moving `RowChange` values;
//! * `blackhole`: the engine into `BlackholeSink`;
//! * `raw-file`: the raw channel, canal-json on the producers, a consumer writing a file;
//! * `file`: the engine into `FileSink` (canal-json);
//! * `close`: N dispatchers blocked on a full channel, the sink fails (one trial per
//!   loop; prints the median report and release times).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use changefeed::codec::CanalJson;
use changefeed::sink::{BlackholeSink, FileSink};
use common::{
    close_latency_run, engine_run_counted, median, raw_channel_run, raw_file_run, EngineRun,
};

/// Rows per run, over all producers (the report's).
const ROWS: usize = 512_000;

fn usage() -> ! {
    eprintln!(
        "usage: cargo bench --bench profile -- raw|blackhole|raw-file|file|close N [SECONDS]"
    );
    std::process::exit(2)
}

fn main() {
    // Cargo passes `--bench` to every bench target; skip flags.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let (Some(case), Some(n)) = (args.first(), args.get(1).and_then(|n| n.parse().ok())) else {
        usage()
    };
    let n: usize = n;
    if n == 0 {
        usage()
    }
    let seconds = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10u64);
    let until = Instant::now() + Duration::from_secs(seconds);
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("profile.jsonl");
    let mut rates = Vec::new();
    let mut reports = Vec::new();
    let mut per_batch = Vec::new();
    let mut engine = |run: EngineRun| {
        per_batch.push(run.events as f64 / run.batches.max(1) as f64);
        run.elapsed
    };
    while Instant::now() < until {
        let elapsed = match case.as_str() {
            "raw" => raw_channel_run(n, ROWS),
            "blackhole" => engine(engine_run_counted(BlackholeSink::new(), n, ROWS)),
            "raw-file" => raw_file_run(n, ROWS, &path),
            "file" => engine(engine_run_counted(
                FileSink::new(&path, Arc::new(CanalJson::default())),
                n,
                ROWS,
            )),
            "close" => {
                let trial = close_latency_run(n);
                reports.push(trial.report.as_secs_f64() * 1e3);
                trial.released
            }
            _ => usage(),
        };
        let _ = std::fs::remove_file(&path);
        rates.push(if case == "close" {
            elapsed.as_secs_f64() * 1e3
        } else {
            (ROWS / n * n) as f64 / elapsed.as_secs_f64()
        });
    }
    let runs = rates.len();
    if case == "close" {
        let mut sorted = reports.clone();
        sorted.sort_by(f64::total_cmp);
        let p99 = sorted[(sorted.len() * 99).div_ceil(100).saturating_sub(1)];
        let top: Vec<String> = sorted
            .iter()
            .rev()
            .take(8)
            .map(|x| format!("{x:.2}"))
            .collect();
        println!("slowest reports (ms): {}", top.join(" "));
        println!(
            "close {n}: {runs} trials, error report median {:.3} ms (p99 {p99:.3}, max {:.3}), all released median {:.2} ms",
            median(reports),
            sorted.last().unwrap(),
            median(rates)
        );
    } else {
        print!(
            "{case} {n}: {runs} runs, median {:.0} rows/s",
            median(rates)
        );
        if !per_batch.is_empty() {
            print!(", {:.0} events per batch", median(per_batch));
        }
        println!();
    }
}
