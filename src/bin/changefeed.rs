//! The `changefeed` command: runs one changefeed from a built-in generator or a
//! JSON-lines change log into any sink, with live progress on stderr and a clear report
//! when it stops.
//!
//! ```text
//! changefeed run [--source SRC] [--sink-uri URI] [--changefeed-id ID] [--memory-quota BYTES]
//!                [--start-ts TS] [--json] [--supervise [--backoff-initial D] [--backoff-max D]]
//! ```
//!
//! Exit status: 0 when the source ended and everything was acknowledged (or after a
//! graceful Ctrl-C); 1 when the changefeed failed (the `RunningError` is printed; with
//! `--json` the final heartbeat, carrying it, is the one line on stdout); 2 for bad usage, an
//! invalid source, sink URI or setting; 130 after a second Ctrl-C (abort, no flush).
//!
//! Logs go through env_logger (`RUST_LOG`; by default warnings, less the engine's
//! failure reports, which the command prints itself).

// The crate root is this file, so its modules are named by path.
#[path = "changefeed/generator.rs"]
mod generator;
#[path = "changefeed/jsonl.rs"]
mod jsonl;
#[path = "changefeed/progress.rs"]
mod progress;
#[path = "changefeed/source.rs"]
mod source;

use std::fs::File;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use changefeed::sink::{self, Sink};
use changefeed::supervisor::{SinkFactory, SupervisorState};
use changefeed::{
    default_node, DispatcherManager, Error, Feed, HeartBeat, RunningError, Supervisor,
};
use clap::{Args, Parser, Subcommand};
use crossbeam_channel::{bounded, select, tick, Receiver};

use jsonl::Input;
use progress::{Meter, Progress};
use source::{CommandFeed, SourceSpec};

/// After a first Ctrl-C, how long the source may take to stop and the sink to
/// acknowledge what was sent before the changefeed is closed without waiting for them.
const GRACE: Duration = Duration::from_secs(5);
/// Longest `--backoff-initial` / `--backoff-max`.
const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);
/// After that close, how long the source may take to notice before it is left behind.
const SOURCE_GIVE_UP: Duration = Duration::from_secs(2);
/// What the first Ctrl-C prints.
const STOPPING: &str =
    "stop requested: stopping the source and flushing what was sent (interrupt again to abort)";
/// The maintainer channel: heartbeats every 200 ms, drained continuously.
const HEARTBEAT_CAPACITY: usize = 256;

/// Logs without RUST_LOG: warnings, except the engine's own report of the failure and
/// the supervisor's of each failed attempt, which the command prints itself.
const DEFAULT_LOG: &str = "warn,changefeed::watcher=off,changefeed::supervisor=off";

/// Exit status: the changefeed failed.
const EXIT_FAILED: u8 = 1;
/// Exit status: bad usage, an invalid source, sink URI or setting (as clap's own).
const EXIT_USAGE: u8 = 2;
/// Exit status after a second Ctrl-C (128 + SIGINT).
const EXIT_ABORTED: i32 = 130;

#[derive(Parser)]
#[command(
    name = "changefeed",
    version,
    about = "Move change events from a generator or a JSON-lines change log into a sink \
             (file, Kafka, memory, blackhole), with live progress and clear failures.",
    after_help = "Exit status: 0 done (or stopped by Ctrl-C after flushing); 1 the changefeed \
                  failed; 2 bad usage or an invalid source, sink URI or setting; 130 a second \
                  Ctrl-C aborted without flushing.\nLogs: RUST_LOG (env_logger; default: warnings)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one changefeed until its source ends, it fails, or Ctrl-C.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Where the events come from: gen:[tables=8,rows=100000,row-size=200,seed=1,spread=N,rate=N,producers=N]
    /// (every key optional; rows per table, rate in rows/s over all tables, producers: threads
    /// sending, default one per table up to 64), file:PATH (a
    /// JSON-lines change log), or - (JSON lines on standard input).
    #[arg(long, value_name = "SRC", default_value = "gen:", value_parser = SourceSpec::parse)]
    source: SourceSpec,

    /// Where they go: file:PATH or file:///abs/path (?protocol=canal-json|debezium),
    /// kafka://host:port[,host:port]/topic?…, memory://?capacity=N, blackhole://.
    #[arg(long, value_name = "URI", default_value = "file:changefeed-out.jsonl")]
    sink_uri: String,

    /// The changefeed's id, in heartbeats, errors and thread names.
    #[arg(long, value_name = "ID", default_value = "changefeed")]
    changefeed_id: String,

    /// Bytes held between send and acknowledgement, all tables together: a number of
    /// bytes, or with a binary unit K, M, G (also KiB, MiB, GiB).
    #[arg(long, value_name = "BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    memory_quota: usize,

    /// Start from this checkpoint: events of a change log at or below it are skipped (the
    /// checkpoint a failed run printed resumes it).
    #[arg(long, value_name = "TS", default_value_t = 0)]
    start_ts: u64,

    /// Print the final heartbeat as one JSON line on stdout: on failure, the heartbeat
    /// carrying the RunningError.
    #[arg(long)]
    json: bool,

    /// Restart a failed changefeed from its checkpoint, with exponential backoff (not with
    /// -: standard input cannot be read again).
    #[arg(long)]
    supervise: bool,

    /// With --supervise: the first wait before a restart (doubling after each failed
    /// attempt, with ±10% jitter).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_backoff, requires = "supervise")]
    backoff_initial: Duration,

    /// With --supervise: the longest wait before a restart.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_backoff, requires = "supervise")]
    backoff_max: Duration,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(DEFAULT_LOG)).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
    }
}

/// A byte count: digits, then an optional unit (B, K/KB/KiB, M/MB/MiB, G/GB/GiB: binary).
fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count such as 67108864 or 64MiB"))?;
    let unit_bytes: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit {other:?}; expected K, M or G (binary)"
            ))
        }
    };
    let bytes = n
        .checked_mul(unit_bytes)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if bytes == 0 {
        return Err("must be greater than 0".to_string());
    }
    Ok(bytes)
}

/// A backoff duration (`500ms`, `10s`, `10m`): from 1 ms to 24 h, the supervisor's
/// longest time in Warning (larger values would overflow its arithmetic).
fn parse_backoff(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
    if d < Duration::from_millis(1) || d > MAX_BACKOFF {
        return Err(format!("{s:?} must be between 1ms and 24h"));
    }
    Ok(d)
}

/// Ctrl-C (and SIGTERM, SIGHUP): the first one is delivered on the returned channel, the
/// second one exits at once with status 130.
fn handle_interrupts() -> Receiver<()> {
    static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);
    let (tx, rx) = bounded(1);
    let handler = move || {
        if INTERRUPTS.fetch_add(1, Ordering::SeqCst) == 0 {
            let _ = tx.try_send(());
        } else {
            eprintln!("\ninterrupted again: aborting without flushing");
            std::process::exit(EXIT_ABORTED);
        }
    };
    if let Err(e) = ctrlc::set_handler(handler) {
        log::warn!("cannot handle Ctrl-C: {e}");
    }
    rx
}

fn usage_error(reason: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {reason}");
    ExitCode::from(EXIT_USAGE)
}

/// A failure to start: a setting the builder rejected is a usage error, anything else
/// (a thread the OS refused) a failure.
fn start_error(e: &Error) -> ExitCode {
    match e {
        Error::InvalidConfig { .. } => usage_error(format!("{e} [{}]", e.code())),
        _ => {
            eprintln!("error: cannot start the changefeed: {e} [{}]", e.code());
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    if let SourceSpec::Lines(input) = &args.source {
        match input {
            Input::Stdin if args.supervise => {
                return usage_error(
                    "--supervise cannot be used with - (standard input): a restart reads the \
                     source again from the start, and standard input cannot be read twice; \
                     use --source file:PATH",
                )
            }
            Input::File(path) => {
                if let Err(e) = File::open(path) {
                    return usage_error(format!("cannot open source {}: {e}", path.display()));
                }
            }
            Input::Stdin => {}
        }
    }
    // Parses and checks the URI (unknown scheme or parameter, bad value); connects to
    // nothing.
    let sink = match sink::open(&args.sink_uri) {
        Ok(sink) => sink,
        Err(e) => return usage_error(format!("{e} [{}]", e.code())),
    };
    let interrupts = handle_interrupts();
    let stop = Arc::new(AtomicBool::new(false));
    let meter = Arc::new(Meter::default());
    let feed = CommandFeed::new(args.source.build(), Arc::clone(&stop), Arc::clone(&meter));
    let mut progress = Progress::new(std::io::stderr().is_terminal());
    if args.supervise {
        drop(sink);
        run_supervised(&args, feed, &stop, &meter, &mut progress, &interrupts)
    } else {
        run_once(&args, sink, feed, &stop, &meter, &mut progress, &interrupts)
    }
}

/// How a run ended, for the summary and the exit status.
struct Outcome {
    events: u64,
    bytes: u64,
    checkpoint_ts: u64,
    interrupted: bool,
    attempts: Option<usize>,
    /// The heartbeat to print with `--json`; carries the error on failure.
    report: HeartBeat,
}

/// One changefeed, no restarts.
fn run_once(
    args: &RunArgs,
    sink: Box<dyn Sink>,
    mut feed: CommandFeed,
    stop: &AtomicBool,
    meter: &Meter,
    progress: &mut Progress,
    interrupts: &Receiver<()>,
) -> ExitCode {
    let (maintainer, heartbeats) = bounded::<HeartBeat>(HEARTBEAT_CAPACITY);
    let manager = DispatcherManager::builder(args.changefeed_id.clone())
        .maintainer(maintainer)
        .memory_quota(args.memory_quota)
        .start_ts(args.start_ts)
        .start(sink);
    let manager = match manager {
        Ok(m) => Arc::new(m),
        Err(e) => return start_error(&e),
    };
    let (done_tx, done) = bounded(1);
    let feed_thread = {
        let manager = Arc::clone(&manager);
        let from_ts = args.start_ts;
        thread::Builder::new()
            .name("feed".to_string())
            .spawn(move || {
                let _ = done_tx.send(feed.run(&manager, from_ts));
            })
    };
    let feed_thread = match feed_thread {
        Ok(t) => t,
        Err(e) => {
            let _ = manager.close();
            eprintln!("error: cannot start the feed thread: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };

    let mut error_report: Option<HeartBeat> = None;
    let mut last_report: Option<HeartBeat> = None;
    let mut take = |hb: HeartBeat| {
        if hb.error.is_some() && error_report.is_none() {
            error_report = Some(hb.clone());
        }
        last_report = Some(hb);
    };
    let ticks = tick(progress.interval());
    let mut interrupted: Option<Instant> = None;
    let mut forced: Option<Instant> = None;
    let fed = loop {
        select! {
            recv(heartbeats) -> hb => if let Ok(hb) = hb { take(hb) },
            recv(done) -> r => break r.unwrap_or_else(|_| Err(Error::FeedPanicked {
                message: "the feed thread ended without a result".to_string(),
            })),
            recv(interrupts) -> _ => {
                interrupted = Some(Instant::now());
                stop.store(true, Ordering::Relaxed);
                progress.note(STOPPING);
            },
            recv(ticks) -> _ => {
                progress.update(meter.totals());
                if interrupted.is_some_and(|t| t.elapsed() >= GRACE) && forced.is_none() {
                    progress.note(&format!(
                        "still running {GRACE:?} after the stop (the source has not stopped, or the sink has not acknowledged what was sent): closing"
                    ));
                    // Hands blocked sends back; accepted events still get their chance.
                    let _ = manager.close();
                    forced = Some(Instant::now());
                }
                if forced.is_some_and(|t| t.elapsed() >= SOURCE_GIVE_UP) {
                    // A read that never returns (standard input left open): leave it.
                    progress.note("the source is still blocked reading its input: leaving it");
                    break Err(Error::ChangefeedClosed);
                }
            },
        }
    };
    if feed_thread.is_finished() {
        let _ = feed_thread.join();
    }
    let closed = manager.close();
    for hb in heartbeats.try_iter() {
        take(hb);
    }
    let status = manager.status();
    progress.clear();

    let node = last_report
        .as_ref()
        .map_or_else(default_node, |hb| hb.node.clone());
    let synthesize = |error: Option<&Error>| HeartBeat {
        changefeed: args.changefeed_id.clone(),
        node: node.clone(),
        checkpoint_ts: status.checkpoint_ts,
        resolved_ts: status
            .dispatchers
            .iter()
            .map(|d| d.resolved_ts)
            .min()
            .unwrap_or(status.checkpoint_ts),
        dispatchers: status.dispatchers.clone(),
        error: error.map(|e| RunningError::new(&node, e)),
        closed: status.state == changefeed::State::Closed,
    };
    // Which error, if any, ended the run: the one the engine reported; else the feed's
    // own (a bad line, the input unreadable) — except the refusals that follow our own
    // close after Ctrl-C; else one raised while closing.
    let failure = match (&error_report, &fed, &closed) {
        // The error heartbeat carries no dispatcher statuses (it is sent at once); the
        // final one has them, and the exact checkpoint: report that, with the error.
        (Some(hb), _, _) => Some(match last_report.as_ref().filter(|last| last.closed) {
            Some(last) => HeartBeat {
                error: hb.error.clone(),
                ..last.clone()
            },
            None => hb.clone(),
        }),
        (None, Err(Error::ChangefeedClosed), _) if interrupted.is_some() => {
            closed.as_ref().err().map(|e| synthesize(Some(e)))
        }
        (None, Err(e), _) => Some(synthesize(Some(e))),
        (None, Ok(()), Err(e)) => Some(synthesize(Some(e))),
        (None, Ok(()), Ok(())) => None,
    };
    let failed = failure.is_some();
    let report = failure
        .or_else(|| last_report.filter(|hb| hb.closed))
        .unwrap_or_else(|| synthesize(None));
    finish(
        args,
        progress,
        Outcome {
            events: status.events_acked,
            bytes: status.bytes_acked,
            checkpoint_ts: status.checkpoint_ts,
            interrupted: interrupted.is_some(),
            attempts: None,
            report,
        },
        failed,
    )
}

/// Under the Supervisor: each attempt builds a fresh sink from the URI and restarts the
/// source from the last checkpoint.
fn run_supervised(
    args: &RunArgs,
    feed: impl Feed,
    stop: &AtomicBool,
    meter: &Meter,
    progress: &mut Progress,
    interrupts: &Receiver<()>,
) -> ExitCode {
    let (observer, states) = bounded::<SupervisorState>(64);
    let uri = args.sink_uri.clone();
    let sinks: SinkFactory = Box::new(move || sink::open(&uri));
    let quota = args.memory_quota;
    let supervisor = Supervisor::builder(args.changefeed_id.clone())
        .manager(move |b| b.memory_quota(quota))
        .start_ts(args.start_ts)
        .backoff(args.backoff_initial, 2.0, args.backoff_max, 0.1)
        .observer(observer)
        .start(sinks, feed);
    let supervisor = match supervisor {
        Ok(s) => s,
        Err(e) => return start_error(&e),
    };
    let ticks = tick(progress.interval());
    let mut interrupted: Option<Instant> = None;
    let mut forced = false;
    loop {
        select! {
            recv(states) -> state => match state {
                Ok(SupervisorState::Warning { error, next_retry }) => {
                    let wait = next_retry
                        .duration_since(std::time::SystemTime::now())
                        .unwrap_or_default();
                    progress.note(&format!(
                        "attempt {} failed: {}: {error}; restarting from checkpoint {} in {}",
                        meter.attempts(),
                        error.code(),
                        supervisor.checkpoint_ts(),
                        progress::duration(wait),
                    ));
                    if interrupted.is_some() {
                        forced = true;
                        supervisor.stop();
                    }
                }
                Ok(state) if state.is_final() => break,
                Ok(_) => {}
                Err(_) => break,
            },
            recv(interrupts) -> _ => {
                interrupted = Some(Instant::now());
                stop.store(true, Ordering::Relaxed);
                progress.note(STOPPING);
                if matches!(supervisor.state(), SupervisorState::Warning { .. }) {
                    // Waiting to restart: nothing to flush.
                    forced = true;
                    supervisor.stop();
                }
            },
            recv(ticks) -> _ => {
                progress.update(meter.totals());
                if interrupted.is_some_and(|t| t.elapsed() >= GRACE) && !forced {
                    forced = true;
                    progress.note(&format!(
                        "still running {GRACE:?} after the stop (the source has not stopped, or the sink has not acknowledged what was sent): closing"
                    ));
                    supervisor.stop();
                }
            },
        }
        if supervisor.state().is_final() {
            break;
        }
    }
    let state = supervisor.wait();
    progress.clear();
    let totals = meter.totals();
    let checkpoint_ts = supervisor.checkpoint_ts().max(totals.checkpoint_ts);
    let error = match state {
        SupervisorState::Failed { error } => Some(error),
        _ => None,
    };
    let node = default_node();
    let report = HeartBeat {
        changefeed: args.changefeed_id.clone(),
        node: node.clone(),
        checkpoint_ts,
        resolved_ts: checkpoint_ts,
        dispatchers: Vec::new(),
        error: error.as_ref().map(|e| RunningError::new(&node, e)),
        closed: true,
    };
    finish(
        args,
        progress,
        Outcome {
            events: totals.events,
            bytes: totals.bytes,
            checkpoint_ts,
            interrupted: interrupted.is_some(),
            attempts: Some(meter.attempts()),
            report,
        },
        error.is_some(),
    )
}

/// Prints the summary (stderr), the error (stderr), the JSON report (stdout, with
/// `--json`), and returns the exit status.
fn finish(args: &RunArgs, progress: &mut Progress, outcome: Outcome, failed: bool) -> ExitCode {
    let elapsed = progress.elapsed();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let verb = if failed {
        "failed"
    } else if outcome.interrupted {
        "interrupted"
    } else {
        "done"
    };
    let attempts = match outcome.attempts {
        Some(n) if n != 1 => format!(" over {n} attempts"),
        _ => String::new(),
    };
    eprintln!(
        "{verb}: {} ({}) in {}{attempts}, {} rows/s, {:.1} MB/s; checkpoint {}",
        progress::rows(outcome.events),
        progress::bytes(outcome.bytes),
        progress::duration(elapsed),
        progress::count((outcome.events as f64 / secs) as u64),
        outcome.bytes as f64 / secs / 1e6,
        progress::checkpoint(outcome.checkpoint_ts),
    );
    if let Some(e) = outcome.report.error.as_ref().filter(|_| failed) {
        eprintln!(
            "error: changefeed {:?} failed: {}\n  {}\n  at {} on node {}",
            outcome.report.changefeed, e.code, e.message, e.time, e.node
        );
        if matches!(args.source, SourceSpec::Lines(Input::File(_))) && outcome.checkpoint_ts > 0 {
            eprintln!(
                "  everything at or below the checkpoint was delivered: --start-ts {} resumes after it",
                outcome.checkpoint_ts
            );
        }
    }
    if args.json {
        match serde_json::to_string(&outcome.report) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("error: cannot print the report as JSON: {e}"),
        }
    }
    if failed {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn backoffs() {
        assert_eq!(parse_backoff("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_backoff("10m"), Ok(Duration::from_secs(600)));
        assert!(parse_backoff("0s").unwrap_err().contains("between"));
        assert!(parse_backoff("25h").unwrap_err().contains("between"));
        assert!(parse_backoff("soon").is_err());
    }

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("67108864"), Ok(64 << 20));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("64m"), Ok(64 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("1_000"), Ok(1000));
        assert!(parse_bytes("0").unwrap_err().contains("greater than 0"));
        assert!(parse_bytes("64 parsecs").unwrap_err().contains("unit"));
        assert!(parse_bytes("lots").unwrap_err().contains("byte count"));
    }
}
