//! Fault stress of the [`Supervisor`], without a broker: every attempt's sink is a
//! [`FaultSink`] that fails (error, panic, unexpected return, stall) at a random batch,
//! or whose factory call fails, with slow acknowledgements (a flush delay); random
//! dispatcher counts and producers in the feed; random capacities, quota, backoff,
//! heartbeat interval and close timeout; and a random ending: left to end by itself,
//! `stop()` at a random time, `stop()` during a backoff wait, `stop()` in the middle of
//! an attempt, or the supervisor dropped.
//!
//! Each run is bounded in time (a hang prints the seed to replay) and then checked:
//!
//! * **no hang**, and **no thread left** (`cf-<id>-`) once `stop`/drop returned;
//! * **one report per failed attempt** (see [`check_attempts`] for the exact
//!   invariant): an attempt that failed while running produced exactly one
//!   `RunningError` (counted from the engine's own log line, written by the watcher
//!   once per report) and exactly one Warning/Failed transition carrying that error;
//!   every Warning/Failed is explained by what that attempt's sink or factory actually
//!   did (its `fired` channel, its interrupter); every restart is preceded by exactly
//!   one Warning; a failure that no report announced happened during a close;
//! * the maintainer heard first: a feed that saw a send refused with the sink's error
//!   saw it after the report was made;
//! * **the quota fully returned**: every feed whose sends were refused waits until its
//!   manager is Closed and checks `in_flight_bytes == 0` there;
//! * **nothing lost** when left to end: every row of every table was acknowledged by
//!   some attempt and the checkpoint is the last row;
//! * the final state is the observer's last, and the one `stop()` returns;
//! * RSS after all runs stays within a slack of RSS after the first few.
//!
//! `CHANGEFEED_SUPERVISOR_STRESS_RUNS` sets the number of runs (default 1000, what CI
//! runs); `CHANGEFEED_SUPERVISOR_STRESS_SEED` replays one seed (printing its plan).
//!
//! This binary installs a logger (to count the engine's reports): keep it its own.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use changefeed::sink::Sink;
use changefeed::supervisor::SinkFactory;
use changefeed::{DispatcherManager, Error, Event, Feed, State, Supervisor, SupervisorState};
use common::*;
use crossbeam_channel::{bounded, unbounded, Receiver};
use parking_lot::Mutex;

/// Longest a run may take before it counts as a hang.
const RUN_LIMIT: Duration = Duration::from_secs(20);
/// Longest a stop waits for the point it aims at (a Warning, an attempt): a stalled
/// sink holds its attempt until the stop comes.
const WAIT_LIMIT: Duration = Duration::from_millis(150);
/// Longest a feed waits, after its sends were refused, for its manager to be closed
/// with the whole quota returned.
const RETURN_LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------
// The journal: what the threads of a run did, in one order.
// ---------------------------------------------------------------------------------

/// One entry of a run's journal. The factory and the supervisor's own log lines run on
/// the supervisor thread, the report's log line on the watcher, refusals on the feed:
/// one lock orders them all, and each is written before the effect it stands for can
/// be seen by the next one (see the checks).
#[derive(Clone, Debug)]
#[allow(dead_code)] // some fields are only printed (the journal is in failure messages)
enum Ev {
    /// The factory was called for attempt `k`, after `states` state changes.
    Attempt { k: usize, states: usize },
    /// The watcher made a report (its log line, written before the heartbeat is sent
    /// and before any sender is released).
    Reported { text: String },
    /// The supervisor received an error heartbeat (its log line).
    Received { code: String },
    /// The watcher could not deliver a heartbeat within `REPORT_TIMEOUT`.
    HeartbeatDropped { text: String },
    /// The feed's first refused send (or `add_dispatcher`), with its cause.
    Refused { code: String },
    /// The test asked for the stop (stop or drop), after `states` state changes.
    StopAsked { states: usize },
}

static JOURNAL: std::sync::Mutex<BTreeMap<String, Vec<Ev>>> =
    std::sync::Mutex::new(BTreeMap::new());

fn journal(id: &str, ev: Ev) {
    JOURNAL
        .lock()
        .unwrap()
        .entry(id.to_string())
        .or_default()
        .push(ev);
}

fn take_journal(id: &str) -> Vec<Ev> {
    JOURNAL.lock().unwrap().remove(id).unwrap_or_default()
}

/// Turns the engine's log lines into journal entries. The lines it reads:
/// `changefeed::watcher` error "changefeed {id} failed: {error}" (one per report),
/// `changefeed::supervisor` warn "changefeed {id}: {code} {message}" (one per error
/// heartbeat received), `changefeed::heartbeat` error "changefeed {id}: maintainer
/// channel stayed full…". If those lines change, the stress test fails on its sanity
/// check (reports counted: 0) rather than passing blind.
struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn && m.target().starts_with("changefeed")
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let text = r.args().to_string();
        let Some(rest) = text.strip_prefix("changefeed ") else {
            return;
        };
        match r.target() {
            "changefeed::watcher" => {
                if let Some((id, error)) = rest.split_once(" failed: ") {
                    journal(
                        id,
                        Ev::Reported {
                            text: error.to_string(),
                        },
                    );
                }
            }
            "changefeed::supervisor" => {
                if let Some((id, what)) = rest.split_once(": ") {
                    let code = what.split_whitespace().next().unwrap_or("").to_string();
                    journal(id, Ev::Received { code });
                }
            }
            "changefeed::heartbeat" => {
                if let Some((id, what)) = rest.split_once(": ") {
                    journal(
                        id,
                        Ev::HeartbeatDropped {
                            text: what.to_string(),
                        },
                    );
                }
            }
            _ => {}
        }
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture;

fn install_capture() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&CAPTURE).expect("no other logger in this binary");
        log::set_max_level(log::LevelFilter::Warn);
    });
}

// ---------------------------------------------------------------------------------
// The plan of one run.
// ---------------------------------------------------------------------------------

/// What the factory does for one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AttemptPlan {
    /// A sink that never fails (its acknowledgements may be slow).
    Healthy,
    /// A sink that fires `fault` in its write of batch `after` (0-based).
    Fault { after: usize, fault: Fault },
    /// The factory fails with a retryable error: no manager this attempt.
    FactoryError,
    /// The factory fails with an unretryable error: Failed, no restart.
    Unretryable,
}

/// How the run ends.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// Nobody stops it: it must end by itself (the feed's input ends and everything
    /// is acknowledged: Stopped; or an unretryable error: Failed). Stalls are let go
    /// (as an error) `stall` after their attempt started.
    RunToEnd { stall: Duration },
    /// `stop()` this long after the start.
    StopAfter(Duration),
    /// The supervisor is dropped this long after the start.
    DropAfter(Duration),
    /// `stop()` this long after a Warning is seen: inside the backoff wait (or after
    /// [`WAIT_LIMIT`] without one).
    StopInBackoff(Duration),
    /// `stop()` this long after attempt `k` started (or once it ended, if it has
    /// fewer attempts, or after [`WAIT_LIMIT`], if an attempt stalls).
    StopInAttempt { k: usize, after: Duration },
}

#[derive(Debug)]
struct Plan {
    #[allow(dead_code)] // printed with the plan
    seed: u64,
    tables: usize,
    rows: u64,
    pad: usize,
    /// One producer thread per table, or the feed thread sends round-robin.
    pushers: bool,
    /// The first attempts; later ones are healthy.
    attempts: Vec<AttemptPlan>,
    /// Each attempt's flush delay (cycled).
    flush_delays: Vec<Duration>,
    backoff: (Duration, f64, Duration, f64),
    close_timeout: Duration,
    heartbeat: Duration,
    channel_capacity: usize,
    dispatcher_capacity: usize,
    memory_quota: usize,
    ending: Ending,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

fn plan(seed: u64) -> Plan {
    let mut rng = fastrand::Rng::with_seed(seed);
    let faults = [Fault::Error, Fault::Panic, Fault::Return, Fault::Stall];
    let attempts = (0..rng.usize(0..=4))
        .map(|_| match rng.u8(..40) {
            0..=2 => AttemptPlan::FactoryError,
            3 => AttemptPlan::Unretryable,
            _ => AttemptPlan::Fault {
                after: rng.usize(0..24),
                fault: faults[rng.usize(..4)],
            },
        })
        .collect::<Vec<_>>();
    let flush_delays = (0..3)
        .map(|_| {
            if rng.bool() {
                Duration::ZERO
            } else {
                us(rng.u64(10..=800))
            }
        })
        .collect();
    let backoff_initial = ms(rng.u64(1..=4));
    let mut ending = match rng.u8(..20) {
        0..=5 => Ending::RunToEnd {
            stall: ms(rng.u64(1..=8)),
        },
        6..=9 => Ending::StopAfter(us(rng.u64(0..12_000))),
        10..=12 => Ending::DropAfter(us(rng.u64(0..12_000))),
        13..=16 => Ending::StopInBackoff(Duration::ZERO),
        _ => Ending::StopInAttempt {
            k: rng.usize(0..=attempts.len()),
            after: us(rng.u64(0..3000)),
        },
    };
    let mut backoff = (
        backoff_initial,
        1.0 + rng.f64() * 2.0,
        ms(rng.u64(4..=20)),
        rng.f64() * 0.5,
    );
    if let Ending::StopInBackoff(_) = ending {
        // A wait long enough to land in: stop somewhere in its first half.
        backoff.0 = ms(rng.u64(8..=20));
        backoff.2 = backoff.0 * 2;
        ending = Ending::StopInBackoff(us(rng.u64(0..(backoff.0.as_micros() as u64) / 2)));
    }
    Plan {
        seed,
        tables: rng.usize(1..=8),
        rows: rng.u64(10..=150),
        pad: rng.usize(0..=64),
        pushers: rng.bool(),
        attempts,
        flush_delays,
        backoff,
        close_timeout: ms(rng.u64(10..=40)),
        heartbeat: ms(rng.u64(1..=4)),
        channel_capacity: rng.usize(1..=8),
        dispatcher_capacity: rng.usize(1..=64),
        memory_quota: rng.usize(16 << 10..=256 << 10),
        ending,
    }
}

// ---------------------------------------------------------------------------------
// The sinks and the feed of one run.
// ---------------------------------------------------------------------------------

/// What the test knows of one attempt.
struct AttemptRec {
    plan: AttemptPlan,
    started: Instant,
    /// The sink's control (none when the factory failed).
    control: Option<FaultControl>,
    /// What the fault sink fired, read once the run is over.
    fired: Option<Fault>,
    /// The feed's account of the attempt.
    feed: Option<FeedRec>,
}

#[derive(Debug)]
struct FeedRec {
    #[allow(dead_code)] // printed on failure
    from_ts: u64,
    /// The feed sent all its input (and returned `Ok`).
    input_ended: bool,
    /// Why its sends were refused.
    refused: Option<String>,
    /// After a refusal: whether the manager reached Closed with the quota fully
    /// returned (`Err` says what it saw instead).
    returned: Option<Result<(), String>>,
}

type Recs = Arc<Mutex<Vec<AttemptRec>>>;

fn factory(id: &str, plan: &Plan, recs: &Recs, states: &Receiver<SupervisorState>) -> SinkFactory {
    let id = id.to_string();
    let attempts = plan.attempts.clone();
    let delays = plan.flush_delays.clone();
    let recs = Arc::clone(recs);
    let states = states.clone();
    // Runs on the supervisor thread: it must not spawn threads (they would carry its
    // name, `cf-<id>-supervisor`, until they name themselves).
    Box::new(move || {
        let mut recs = recs.lock();
        let k = recs.len();
        journal(
            &id,
            Ev::Attempt {
                k,
                states: states.len(),
            },
        );
        let plan = attempts.get(k).copied().unwrap_or(AttemptPlan::Healthy);
        let mut rec = AttemptRec {
            plan,
            started: Instant::now(),
            control: None,
            fired: None,
            feed: None,
        };
        let (sink, control) = match plan {
            AttemptPlan::Healthy => FaultSink::new(),
            AttemptPlan::Fault { after, fault } => FaultSink::failing(after, fault),
            AttemptPlan::FactoryError => {
                recs.push(rec);
                return Err(Error::io(
                    "building the sink",
                    std::io::Error::other("factory refused"),
                ));
            }
            AttemptPlan::Unretryable => {
                recs.push(rec);
                return changefeed::sink::open("memory://?capacity=0");
            }
        };
        rec.control = Some(control);
        recs.push(rec);
        let sink = sink.with_flush_delay(delays[k % delays.len()]);
        Ok(Box::new(sink) as Box<dyn Sink>)
    })
}

/// Rows 1..=rows of each table, commit ts = row number; sends those above `from_ts`,
/// then a watermark at `rows`.
struct StressFeed {
    id: String,
    tables: usize,
    rows: u64,
    pad: usize,
    pushers: bool,
    recs: Recs,
}

impl StressFeed {
    fn push(&self, manager: &DispatcherManager, from_ts: u64) -> changefeed::Result<()> {
        let dispatchers = (0..self.tables)
            .map(|i| manager.add_dispatcher(table(i)))
            .collect::<changefeed::Result<Vec<_>>>()?;
        let one_table = |i: usize, d: &changefeed::Dispatcher| -> changefeed::Result<()> {
            for ts in from_ts + 1..=self.rows {
                d.send(row(&table(i), ts, ts, self.pad))
                    .map_err(|e| e.cause)?;
            }
            d.send(Event::Resolved(self.rows)).map_err(|e| e.cause)
        };
        if !self.pushers {
            for ts in from_ts + 1..=self.rows {
                for (i, d) in dispatchers.iter().enumerate() {
                    d.send(row(&table(i), ts, ts, self.pad))
                        .map_err(|e| e.cause)?;
                }
            }
            for d in &dispatchers {
                d.send(Event::Resolved(self.rows)).map_err(|e| e.cause)?;
            }
            return Ok(());
        }
        // Named producer threads, joined before the feed returns.
        std::thread::scope(|s| {
            let pushers: Vec<_> = dispatchers
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    std::thread::Builder::new()
                        .name(format!("svs-push-{i}"))
                        .spawn_scoped(s, move || one_table(i, d))
                        .expect("spawn a producer")
                })
                .collect();
            // Every producer joined, then the first failure.
            let results: Vec<_> = pushers
                .into_iter()
                .map(|p| p.join().expect("producers do not panic"))
                .collect();
            results.into_iter().collect::<changefeed::Result<()>>()
        })
    }
}

impl Feed for StressFeed {
    fn run(&mut self, manager: &DispatcherManager, from_ts: u64) -> changefeed::Result<()> {
        let outcome = self.push(manager, from_ts);
        let mut rec = FeedRec {
            from_ts,
            input_ended: outcome.is_ok(),
            refused: None,
            returned: None,
        };
        if let Err(e) = &outcome {
            journal(
                &self.id,
                Ev::Refused {
                    code: e.code().to_string(),
                },
            );
            rec.refused = Some(e.code().to_string());
            // The manager closes (a report released us, or the supervisor closes it):
            // once Closed, every byte must be back.
            let deadline = Instant::now() + RETURN_LIMIT;
            rec.returned = Some(loop {
                let s = manager.status();
                if s.state == State::Closed && s.in_flight_bytes == 0 {
                    break Ok(());
                }
                if Instant::now() > deadline {
                    break Err(format!(
                        "state {:?}, {} bytes in flight",
                        s.state, s.in_flight_bytes
                    ));
                }
                std::thread::sleep(ms(1));
            });
        }
        let mut recs = self.recs.lock();
        let k = recs.len() - 1;
        recs[k].feed = Some(rec);
        outcome
    }
}

// ---------------------------------------------------------------------------------
// One run.
// ---------------------------------------------------------------------------------

/// What a run tells the summary.
#[derive(Default, Debug)]
struct RunStats {
    attempts: usize,
    warnings: usize,
    reports: usize,
    fired: BTreeMap<String, usize>,
    close_timeouts: usize,
    /// Where the stop landed: "backoff", "attempt", "ended" (after the final state),
    /// or "none".
    stop_landed: &'static str,
    /// Rows acknowledged more than once (RunToEnd runs).
    duplicates: usize,
    rows: usize,
    heartbeats_dropped: usize,
}

fn is_terminal(s: &SupervisorState) -> bool {
    matches!(
        s,
        SupervisorState::Warning { .. } | SupervisorState::Failed { .. }
    )
}

fn terminal_error(s: &SupervisorState) -> Option<&Error> {
    match s {
        SupervisorState::Warning { error, .. } | SupervisorState::Failed { error } => Some(error),
        _ => None,
    }
}

/// Whether `error` (code and text) is what attempt `rec` did.
fn explained(code: &str, text: &str, rec: &AttemptRec, interrupted: bool) -> bool {
    match (code, rec.plan, rec.fired) {
        ("CDC:ErrSinkIO", AttemptPlan::FactoryError, _) => text.contains("factory refused"),
        ("CDC:ErrSinkURIInvalid", AttemptPlan::Unretryable, _) => true,
        ("CDC:ErrSinkIO", _, Some(Fault::Error)) => text.contains("injected failure"),
        ("CDC:ErrSinkIO", _, Some(Fault::Stall)) => text.contains("stalled write gave up"),
        ("CDC:ErrSinkPanicked", _, Some(Fault::Panic)) => text.contains("injected sink panic"),
        ("CDC:ErrSinkExited", _, Some(Fault::Return)) => true,
        ("CDC:ErrCloseTimeout", _, _) => interrupted,
        _ => false,
    }
}

/// The code of an error by its display text, for the watcher's log line (which has
/// the text only).
fn code_of_report(text: &str) -> &'static str {
    if text.contains("injected failure") || text.contains("stalled write gave up") {
        "CDC:ErrSinkIO"
    } else if text.starts_with("sink panicked") {
        "CDC:ErrSinkPanicked"
    } else if text.starts_with("sink exited") {
        "CDC:ErrSinkExited"
    } else {
        "?"
    }
}

fn run(p: &Plan, id: &str) -> RunStats {
    let t0 = Instant::now();
    let recs: Recs = Arc::default();
    let (observer, states_rx) = unbounded();
    let (close_timeout, heartbeat) = (p.close_timeout, p.heartbeat);
    let (channel_capacity, dispatcher_capacity, memory_quota) =
        (p.channel_capacity, p.dispatcher_capacity, p.memory_quota);
    let supervisor = Supervisor::builder(id)
        .backoff(p.backoff.0, p.backoff.1, p.backoff.2, p.backoff.3)
        .observer(observer)
        .manager(move |b| {
            b.close_timeout(close_timeout)
                .heartbeat_interval(heartbeat)
                .channel_capacity(channel_capacity)
                .dispatcher_capacity(dispatcher_capacity)
                .memory_quota(memory_quota)
        })
        .start(
            factory(id, p, &recs, &states_rx),
            StressFeed {
                id: id.to_string(),
                tables: p.tables,
                rows: p.rows,
                pad: p.pad,
                pushers: p.pushers,
                recs: Arc::clone(&recs),
            },
        )
        .unwrap_or_else(|e| panic!("start: {e} {p:?}"));
    let stop_asked = || {
        journal(
            id,
            Ev::StopAsked {
                states: states_rx.len(),
            },
        )
    };
    let mut stopped_state = None;
    let mut supervisor = Some(supervisor);
    match p.ending {
        Ending::RunToEnd { stall } => {
            let sv = supervisor.as_ref().unwrap();
            loop {
                if sv.wait_for(ms(2), SupervisorState::is_final).is_final() {
                    break;
                }
                assert!(t0.elapsed() < RUN_LIMIT, "did not end by itself: {p:?}");
                for rec in recs.lock().iter() {
                    if let (Some(c), AttemptPlan::Fault { .. }) = (&rec.control, rec.plan) {
                        if rec.started.elapsed() > stall {
                            // A stalled write gives up with an error (like a socket
                            // timeout); a token left for a sink not (yet) stalled
                            // makes its stall return at once.
                            c.unstick();
                        }
                    }
                }
            }
            stopped_state = Some(sv.wait());
        }
        Ending::StopAfter(d) => {
            std::thread::sleep(d);
            stop_asked();
            let sv = supervisor.as_ref().unwrap();
            let s = sv.stop();
            assert_eq!(
                format!("{:?}", sv.stop()),
                format!("{s:?}"),
                "stop is idempotent"
            );
            stopped_state = Some(s);
        }
        Ending::DropAfter(d) => {
            std::thread::sleep(d);
            stop_asked();
            drop(supervisor.take());
        }
        Ending::StopInBackoff(d) => {
            let sv = supervisor.as_ref().unwrap();
            sv.wait_for(WAIT_LIMIT, |s| {
                matches!(s, SupervisorState::Warning { .. }) || s.is_final()
            });
            std::thread::sleep(d);
            stop_asked();
            stopped_state = Some(sv.stop());
        }
        Ending::StopInAttempt { k, after } => {
            let sv = supervisor.as_ref().unwrap();
            // A stalled attempt waits for the stop: do not wait for ever.
            while recs.lock().len() <= k && !sv.state().is_final() && t0.elapsed() < WAIT_LIMIT {
                std::thread::sleep(us(200));
            }
            std::thread::sleep(after);
            stop_asked();
            stopped_state = Some(sv.stop());
        }
    }

    // 0 threads left: stop/drop joined the supervisor thread, which joined every
    // attempt's manager and feed. After a close timeout the engine leaves the sink and
    // watcher threads to end when the sink's call returns (our sinks are interrupted at
    // once), hence a short wait.
    let prefix = format!("cf-{id}-");
    let left = wait_no_threads(&prefix, Duration::from_secs(5));
    assert!(left.is_empty(), "threads left {left:?} {p:?}");
    let pushers_left = threads_named("svs-push");
    assert!(pushers_left.is_empty(), "producers left {pushers_left:?}");

    let states: Vec<SupervisorState> = states_rx.try_iter().collect();
    let journal = take_journal(id);
    let mut recs = recs.lock();
    for rec in recs.iter_mut() {
        if let Some(c) = &rec.control {
            rec.fired = c.fired.try_recv().ok();
        }
    }
    let ctx = || format!("{p:?}\nstates {states:?}\njournal {journal:?}");

    // The final state: the observer's last, the only final one, and stop's answer.
    let last = states
        .last()
        .unwrap_or_else(|| panic!("no state change at all: {}", ctx()));
    assert!(last.is_final(), "last state not final: {}", ctx());
    assert_eq!(
        states.iter().filter(|s| s.is_final()).count(),
        1,
        "one final state: {}",
        ctx()
    );
    if let Some(s) = &stopped_state {
        assert_eq!(format!("{s:?}"), format!("{last:?}"), "{}", ctx());
    }
    let failed = matches!(last, SupervisorState::Failed { .. });
    let unretryable_last = recs.last().map(|r| r.plan) == Some(AttemptPlan::Unretryable);
    assert_eq!(
        failed,
        unretryable_last,
        "Failed exactly when the last attempt's error was unretryable: {}",
        ctx()
    );

    let mut stats = check_attempts(p, &recs, &states, &journal, &ctx);

    // Nothing lost when it ended by itself.
    if let (Ending::RunToEnd { .. }, false) = (p.ending, failed) {
        let mut acked = HashSet::new();
        let mut total = 0;
        for c in recs.iter().filter_map(|r| r.control.as_ref()) {
            for s in c.seen() {
                total += 1;
                acked.insert((s.table, s.seq));
            }
        }
        // Watermarks encode nothing; every row of every table must be there.
        // KNOWN BUG (fails about 1 run in 150): a sink that ends on its own
        // (`is_finished`, our `Fault::Return`) while the supervisor closes the attempt
        // after the feed's input ended makes `close` return Ok with events accepted
        // and never acknowledged; the supervisor then ends Stopped and they are lost.
        // Pinned down by `a_sink_that_finishes_during_the_final_drain_is_not_a_clean_end`
        // below; the report names the fix (src/sink_thread.rs).
        let want = p.tables * p.rows as usize;
        assert_eq!(acked.len(), want, "rows lost: {}", ctx());
        assert_eq!(
            supervisor.as_ref().unwrap().checkpoint_ts(),
            p.rows,
            "checkpoint: {}",
            ctx()
        );
        stats.duplicates = total - acked.len();
        stats.rows = want;
    }
    stats.stop_landed = stop_landed(&journal, &states);
    stats
}

/// Per attempt (a segment of the journal between two factory calls, and of the states
/// between the counts those calls recorded):
///
/// 1. at most one report (the watcher's log line), and the supervisor received at
///    most that many error heartbeats, with the reported code;
/// 2. at most one Warning/Failed; exactly one Warning if a later attempt exists (a
///    restart only follows a retryable failure);
/// 3. every Warning/Failed and every report is explained by what this attempt's sink
///    or factory did (`fired`, the interrupter) — no report without a fault;
/// 4. a report ⇒ a Warning/Failed carrying the same code, unless the stop was asked
///    before the attempt ended (then Stopped wins, by design);
/// 5. a Warning/Failed without a report ⇒ the failure came while closing: the factory
///    failed, or the feed's input had ended (the supervisor was closing), or close
///    timed out;
/// 6. a fault that fired while the feed was still sending, with no stop asked ⇒
///    exactly one report (the failure was not lost);
/// 7. a refusal carrying the sink's error came after the report (the maintainer heard
///    first); after any refusal the manager closed with every byte returned.
fn check_attempts(
    p: &Plan,
    recs: &[AttemptRec],
    states: &[SupervisorState],
    journal: &[Ev],
    ctx: &dyn Fn() -> String,
) -> RunStats {
    let marks: Vec<(usize, usize)> = journal
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            Ev::Attempt { states, .. } => Some((i, *states)),
            _ => None,
        })
        .collect();
    assert_eq!(
        marks.len(),
        recs.len(),
        "one factory call per attempt: {}",
        ctx()
    );
    for (k, e) in journal
        .iter()
        .filter(|e| matches!(e, Ev::Attempt { .. }))
        .enumerate()
    {
        assert!(
            matches!(e, Ev::Attempt { k: j, .. } if *j == k),
            "{}",
            ctx()
        );
    }
    let stop_at = journal
        .iter()
        .position(|e| matches!(e, Ev::StopAsked { .. }));
    let mut stats = RunStats {
        attempts: recs.len(),
        ..RunStats::default()
    };
    for (k, rec) in recs.iter().enumerate() {
        let (from, state_from) = marks[k];
        let (to, state_to) = marks
            .get(k + 1)
            .copied()
            .unwrap_or((journal.len(), states.len()));
        let events = &journal[from..to];
        let seg = &states[state_from..state_to];
        let last_attempt = k + 1 == recs.len();
        let stop_before_end = stop_at.is_some_and(|s| s < to);
        let interrupted = rec
            .control
            .as_ref()
            .is_some_and(|c| c.interrupted.load(std::sync::atomic::Ordering::SeqCst));
        let at = |what: &str| {
            format!(
                "attempt {k} ({:?}, fired {:?}): {what}\n{}",
                rec.plan,
                rec.fired,
                ctx()
            )
        };

        let reports: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                Ev::Reported { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        let received: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                Ev::Received { code } => Some(code.as_str()),
                _ => None,
            })
            .collect();
        let terminal: Vec<&SupervisorState> = seg.iter().filter(|s| is_terminal(s)).collect();

        // 1.
        assert!(reports.len() <= 1, "{}", at("more than one report"));
        assert!(
            received.len() <= reports.len(),
            "{}",
            at("received more than reported")
        );
        for code in &received {
            assert_eq!(*code, code_of_report(reports[0]), "{}", at("received code"));
        }
        // 2.
        assert!(
            terminal.len() <= 1,
            "{}",
            at("more than one Warning/Failed")
        );
        if !last_attempt {
            assert!(
                matches!(terminal.first(), Some(SupervisorState::Warning { .. })),
                "{}",
                at("a restart without a Warning")
            );
        }
        // 3.
        if let Some(text) = reports.first() {
            assert!(
                explained(code_of_report(text), text, rec, interrupted),
                "{}",
                at(&format!("report not explained: {text}"))
            );
        }
        if let Some(e) = terminal.first().and_then(|s| terminal_error(s)) {
            assert!(
                explained(e.code(), &e.to_string(), rec, interrupted),
                "{}",
                at(&format!("state not explained: {} {e}", e.code()))
            );
        }
        // 4.
        if let Some(text) = reports.first() {
            if !stop_before_end {
                let e = terminal
                    .first()
                    .and_then(|s| terminal_error(s))
                    .unwrap_or_else(|| panic!("{}", at("a report without a Warning/Failed")));
                assert_eq!(e.code(), code_of_report(text), "{}", at("reported code"));
            }
        }
        // 5.
        if !terminal.is_empty() && reports.is_empty() {
            let code = terminal_error(terminal[0]).map(Error::code);
            let input_ended = rec.feed.as_ref().is_some_and(|f| f.input_ended);
            assert!(
                matches!(
                    rec.plan,
                    AttemptPlan::FactoryError | AttemptPlan::Unretryable
                ) || input_ended
                    || code == Some("CDC:ErrCloseTimeout"),
                "{}",
                at("a failure while running that nobody reported")
            );
        }
        // 6.
        let still_sending = rec.feed.as_ref().is_some_and(|f| !f.input_ended);
        let fired_while_running = match rec.fired {
            Some(Fault::Stall) => matches!(p.ending, Ending::RunToEnd { .. }),
            Some(_) => true,
            None => false,
        };
        if fired_while_running && still_sending && !stop_before_end {
            assert_eq!(reports.len(), 1, "{}", at("a failure was not reported"));
        }
        // 7.
        if let Some(feed) = &rec.feed {
            if let Some(code) = &feed.refused {
                if code != "CDC:ErrChangefeedClosed" {
                    let reported = events.iter().position(|e| matches!(e, Ev::Reported { .. }));
                    let refused = events.iter().position(|e| matches!(e, Ev::Refused { .. }));
                    assert!(
                        reported.is_some() && reported < refused,
                        "{}",
                        at("a producer learnt of the failure before the report")
                    );
                    assert_eq!(code, code_of_report(reports[0]), "{}", at("refusal cause"));
                }
                let returned = feed.returned.as_ref().expect("checked after a refusal");
                assert!(
                    returned.is_ok(),
                    "{}",
                    at(&format!("quota not returned after close: {returned:?}"))
                );
            }
        } else {
            assert!(
                rec.control.is_none(),
                "{}",
                at("a manager was started but its feed never ran")
            );
        }

        stats.reports += reports.len();
        stats.warnings += terminal
            .iter()
            .filter(|s| matches!(s, SupervisorState::Warning { .. }))
            .count();
        if let Some(f) = rec.fired {
            *stats.fired.entry(format!("{f:?}")).or_default() += 1;
        }
        if interrupted {
            stats.close_timeouts += 1;
        }
        stats.heartbeats_dropped += events
            .iter()
            .filter(|e| matches!(e, Ev::HeartbeatDropped { .. }))
            .count();
    }
    stats
}

/// Where the stop landed: in a backoff wait (a Warning was the last state and no
/// attempt started since), in an attempt, after the end, or no stop.
fn stop_landed(journal: &[Ev], states: &[SupervisorState]) -> &'static str {
    let Some(stop) = journal
        .iter()
        .position(|e| matches!(e, Ev::StopAsked { .. }))
    else {
        return "none";
    };
    let Ev::StopAsked { states: seen } = journal[stop] else {
        unreachable!()
    };
    if states[..seen].iter().any(SupervisorState::is_final) {
        return "ended";
    }
    let last_attempt = journal[..stop]
        .iter()
        .rposition(|e| matches!(e, Ev::Attempt { .. }));
    let attempt_states = match last_attempt.map(|i| &journal[i]) {
        Some(Ev::Attempt { states, .. }) => *states,
        _ => 0,
    };
    // A Warning after the last attempt started: that attempt is over, its restart not
    // begun.
    if states[attempt_states..seen]
        .iter()
        .any(|s| matches!(s, SupervisorState::Warning { .. }))
    {
        "backoff"
    } else {
        "attempt"
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}"))
    })
}

#[test]
fn random_faults_stops_and_drops() {
    install_capture();
    let runs = env_u64("CHANGEFEED_SUPERVISOR_STRESS_RUNS").unwrap_or(1000);
    let replay = env_u64("CHANGEFEED_SUPERVISOR_STRESS_SEED");
    let seeds: Vec<u64> = match replay {
        Some(seed) => vec![seed],
        None => {
            let base = fastrand::u64(..);
            println!("base seed {base}");
            (0..runs).map(|i| base.wrapping_add(i)).collect()
        }
    };
    let started = Instant::now();
    let mut rss_early = None;
    let mut totals = RunStats::default();
    let mut by_ending: BTreeMap<String, usize> = BTreeMap::new();
    let mut landed: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut slowest = (Duration::ZERO, 0);
    let n_seeds = seeds.len();
    for (n, seed) in seeds.into_iter().enumerate() {
        let p = plan(seed);
        if replay.is_some() {
            println!("{p:?}");
        }
        let ending = format!("{:?}", p.ending);
        *by_ending
            .entry(ending[..ending.find(['(', ' ']).unwrap_or(ending.len())].to_string())
            .or_default() += 1;
        let id = format!("v{n}");
        let (done_tx, done) = bounded(1);
        let t = Instant::now();
        let worker = std::thread::Builder::new()
            .name(format!("svs-run-{n}"))
            .spawn(move || {
                let stats = run(&p, &id);
                let _ = done_tx.send(stats);
            })
            .unwrap();
        let stats = match done.recv_timeout(RUN_LIMIT) {
            Ok(stats) => stats,
            Err(_) if !worker.is_finished() => {
                panic!("run with seed {seed} hung (replay with CHANGEFEED_SUPERVISOR_STRESS_SEED={seed})")
            }
            Err(_) => {
                let panic = worker.join().unwrap_err();
                eprintln!("failed run: replay with CHANGEFEED_SUPERVISOR_STRESS_SEED={seed}");
                std::panic::resume_unwind(panic);
            }
        };
        worker.join().unwrap();
        if t.elapsed() > slowest.0 {
            slowest = (t.elapsed(), seed);
        }
        totals.attempts += stats.attempts;
        totals.warnings += stats.warnings;
        totals.reports += stats.reports;
        totals.close_timeouts += stats.close_timeouts;
        totals.duplicates += stats.duplicates;
        totals.rows += stats.rows;
        totals.heartbeats_dropped += stats.heartbeats_dropped;
        for (k, v) in stats.fired {
            *totals.fired.entry(k).or_default() += v;
        }
        *landed.entry(stats.stop_landed).or_default() += 1;
        // Measured half way: the allocator's arenas (one per thread that allocates, up
        // to 8 per core) grow to their working size at whichever run first has enough
        // threads at once — after 20 runs in some base seeds, later in others — so the
        // second half is what a leak of attempts' threads, batches or quota shows in.
        if n + 1 == (n_seeds / 2).max(1) {
            rss_early = Some(rss_bytes());
        }
    }
    let rss_end = rss_bytes();
    println!(
        "{n_seeds} runs in {:.1?} (slowest {:.1?}, seed {}): endings {by_ending:?}; stops landed {landed:?}",
        started.elapsed(),
        slowest.0,
        slowest.1
    );
    println!(
        "{} attempts, faults fired {:?}, {} reports, {} warnings, {} close timeouts, {} heartbeats dropped; \
         runs left to end: {} rows, 0 lost, {} duplicates",
        totals.attempts,
        totals.fired,
        totals.reports,
        totals.warnings,
        totals.close_timeouts,
        totals.heartbeats_dropped,
        totals.rows,
        totals.duplicates
    );
    if let Some(early) = rss_early {
        println!(
            "RSS after {} runs {} MiB, after {n_seeds}: {} MiB",
            (n_seeds / 2).max(1),
            early >> 20,
            rss_end >> 20
        );
        // Generous: allocator arenas and caches settle after the first runs; a leak of
        // what an attempt holds (threads, batches, quota) grows with the runs.
        const SLACK: u64 = 32 << 20;
        assert!(
            rss_end <= early + SLACK,
            "RSS grew from {} MiB to {} MiB over the second half of {n_seeds} runs",
            early >> 20,
            rss_end >> 20
        );
    }
    if replay.is_none() && n_seeds >= 200 {
        // Sanity: the log lines the checks count are still what the engine writes,
        // and the endings the test is about were reached.
        assert!(
            totals.reports > 0,
            "no report counted: did the engine's log lines change?"
        );
        for place in ["backoff", "attempt", "ended", "none"] {
            assert!(
                landed.contains_key(place),
                "no stop landed {place}: {landed:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// Deterministic reproductions of what the stress found.
// ---------------------------------------------------------------------------------

const DRAIN_ROWS: u64 = 20;

/// Sends row 1 of table 0; once `control`'s sink has written it (its first batch) and
/// is waiting in its flush (acks held), sends rows 2..=DRAIN_ROWS (one more batch in the
/// sink channel) and a watermark.
fn send_behind_a_held_flush(
    d: &changefeed::Dispatcher,
    control: &FaultControl,
) -> changefeed::Result<()> {
    d.send(row(&table(0), 1, 1, 8)).map_err(|e| e.cause)?;
    let deadline = Instant::now() + HANG_GUARD;
    while control.batches.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the sink never wrote row 1");
        std::thread::sleep(ms(1));
    }
    // From its write to its flush the sink thread only looks at the channel, once.
    std::thread::sleep(ms(20));
    for ts in 2..=DRAIN_ROWS {
        d.send(row(&table(0), ts, ts, 8)).map_err(|e| e.cause)?;
    }
    d.send(Event::Resolved(DRAIN_ROWS)).map_err(|e| e.cause)
}

/// Rows the sinks acknowledged.
fn acked_rows(controls: &[FaultControl]) -> HashSet<u64> {
    controls
        .iter()
        .flat_map(|c| c.seen())
        .map(|s| s.seq)
        .collect()
}

/// FAILS — a bug in the engine, found by the stress test (its RunToEnd runs whose last
/// fault is `Return` lose rows, about 1 run in 150).
///
/// A sink says it has finished (`Sink::is_finished`) at a flush that comes while `close`
/// drains the queues, with batches still behind it in the sink channel: the sink thread
/// returns `Ok` (src/sink_thread.rs, `if sink.is_finished() { return Ok(()) }` after the
/// flush); the watcher takes a clean return during Closing for no error
/// (`Shared::end(None)` keeps the outcome `Ok`), releases, and the batches the channel
/// held are dropped. `close` returns `Ok(())` though accepted events were never
/// acknowledged — and the supervisor, which closed because the feed's input ended, ends
/// Stopped ("everything was acknowledged"): the rows after the checkpoint are lost for
/// good, nothing restarts. (While running, the same return is reported as
/// `CDC:ErrSinkExited`, as it should be.)
///
/// Suggested fix: the sink thread returns `Err(Error::SinkExited)` when the sink says it
/// has finished (or at least when the channel is not disconnected-and-empty then);
/// while running that is today's report, while closing it becomes `close`'s outcome and
/// the supervisor retries.
#[test]
fn a_sink_that_finishes_during_the_final_drain_is_not_a_clean_end() {
    // The engine alone: `close` must not say Ok while rows are unacknowledged.
    let (sink, control) = FaultSink::failing(0, Fault::Return);
    control.hold_acks();
    let manager = DispatcherManager::builder("svs-drain").start(sink).unwrap();
    let d = manager.add_dispatcher(table(0)).unwrap();
    send_behind_a_held_flush(&d, &control).unwrap();
    std::thread::scope(|s| {
        let closer = s.spawn(|| manager.close());
        let deadline = Instant::now() + HANG_GUARD;
        while manager.status().state == State::Running {
            assert!(Instant::now() < deadline, "close never began");
            std::thread::sleep(ms(1));
        }
        control.release_acks();
        match closer.join().unwrap() {
            Ok(()) => assert_eq!(
                acked_rows(std::slice::from_ref(&control)).len() as u64,
                DRAIN_ROWS,
                "close returned Ok, yet not every accepted row was acknowledged"
            ),
            Err(e) => assert_eq!(e.code(), "CDC:ErrSinkExited", "{e}"),
        }
    });
    assert!(wait_no_threads("cf-svs-drain-", HANG_GUARD).is_empty());

    // The supervisor: the same sink in its first attempt, healthy ones after. The feed
    // sends rows 1..=DRAIN_ROWS above `from_ts` and ends.
    struct Behind {
        controls: Arc<Mutex<Vec<FaultControl>>>,
        ended: crossbeam_channel::Sender<()>,
    }
    impl Feed for Behind {
        fn run(&mut self, manager: &DispatcherManager, from_ts: u64) -> changefeed::Result<()> {
            let d = manager.add_dispatcher(table(0))?;
            let controls = self.controls.lock().clone();
            if controls.len() == 1 {
                send_behind_a_held_flush(&d, &controls[0])?;
            } else {
                for ts in from_ts + 1..=DRAIN_ROWS {
                    d.send(row(&table(0), ts, ts, 8)).map_err(|e| e.cause)?;
                }
                d.send(Event::Resolved(DRAIN_ROWS)).map_err(|e| e.cause)?;
            }
            let _ = self.ended.try_send(());
            Ok(())
        }
    }
    let controls: Arc<Mutex<Vec<FaultControl>>> = Arc::default();
    let factory: SinkFactory = {
        let controls = Arc::clone(&controls);
        Box::new(move || {
            let mut controls = controls.lock();
            let (sink, control) = if controls.is_empty() {
                let (sink, control) = FaultSink::failing(0, Fault::Return);
                control.hold_acks();
                (sink, control)
            } else {
                FaultSink::new()
            };
            controls.push(control);
            Ok(Box::new(sink) as Box<dyn Sink>)
        })
    };
    let (ended, input_ended) = bounded(16);
    let supervisor = Supervisor::builder("svs-drain2")
        .backoff(ms(5), 2.0, ms(50), 0.1)
        .manager(|b| b.heartbeat_interval(ms(5)))
        .start(
            factory,
            Behind {
                controls: Arc::clone(&controls),
                ended,
            },
        )
        .unwrap();
    // The first feed's input ended: the supervisor closes that attempt at once. Let it
    // begin, then let the sink go on (it finishes at its first flush).
    input_ended.recv_timeout(HANG_GUARD).unwrap();
    std::thread::sleep(ms(50));
    controls.lock()[0].release_acks();
    let end = supervisor.wait();
    assert!(matches!(end, SupervisorState::Stopped), "{end:?}");
    let acked = acked_rows(&controls.lock());
    assert_eq!(
        acked.len() as u64,
        DRAIN_ROWS,
        "Stopped after {} attempt(s), yet rows {:?} were never acknowledged (checkpoint {})",
        controls.lock().len(),
        (1..=DRAIN_ROWS)
            .filter(|r| !acked.contains(r))
            .collect::<Vec<_>>(),
        supervisor.checkpoint_ts()
    );
    assert_eq!(supervisor.checkpoint_ts(), DRAIN_ROWS);
    assert!(wait_no_threads("cf-svs-drain2-", HANG_GUARD).is_empty());
}
