//! The [`DispatcherManager`]: its builder, the state every thread shares, and the close
//! order.
//!
//! # Threads (see ARCHITECTURE.md for the drawing)
//!
//! | thread | spawned by | joined by | stops when |
//! |---|---|---|---|
//! | `cf-<id>-dispatcher-<table>` | `add_dispatcher` | the watcher (or `close` on timeout) | its stop or the abort line drops, or the sink channel disconnects |
//! | `cf-<id>-sink` | `start` | the watcher | the sink channel has no senders left, the abort line drops, or the sink fails |
//! | `cf-<id>-heartbeat` | `start` (with a maintainer) | the watcher | its stop line drops |
//! | `cf-<id>-watcher` | `start` | `close`, `wait` or `Drop` | everything above has stopped |
//!
//! # Close order
//!
//! Whichever comes first decides:
//!
//! * **The sink ends, or a dispatcher fails, while running.** The watcher moves the
//!   changefeed to *reporting*, sends the heartbeat carrying the [`RunningError`] (senders
//!   stay blocked meanwhile — the sink channel is still connected through the spare
//!   receiver the watcher holds), waits until the maintainer has taken it from its
//!   channel (at most [`Builder::report_handoff`]), and only then *releases*: it
//!   refuses new sends, closes the quota, drops the abort line, the spare receiver
//!   (dropping what it held) and the stop lines, so every blocked and every later send
//!   fails at once. It joins the
//!   dispatchers, the sink and the heartbeat thread, and sends the final `closed`
//!   heartbeat.
//! * **The program calls `close`.** New sends are refused, the dispatchers drain their
//!   queues into the sink channel and exit, the sink thread flushes what is left and
//!   returns once no sender remains, and the watcher finishes as above without a
//!   `RunningError`: a failure during this drain is what `close` returns. If the drain
//!   takes longer than the close timeout, `close` interrupts the sink (if it can be),
//!   releases and joins the dispatchers itself, and returns [`Error::CloseTimeout`]; the
//!   sink and watcher threads then exit when the sink's blocked call returns.
//!
//! [`RunningError`]: crate::RunningError

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use parking_lot::{Condvar, Mutex};
use serde::Serialize;

use crate::deadline;
use crate::dispatcher::{self, Dispatcher, DispatcherShared};
use crate::error::{Error, Result};
use crate::event::TableName;
use crate::heartbeat::{self, DispatcherStatus, HeartBeat, RunningError};
use crate::progress::AckSignal;
use crate::quota::Quota;
use crate::sink::{Batch, Encoder, Interrupter, Sink};
use crate::{sink_thread, watcher};

/// Default [`Builder::channel_capacity`]: batches in the shared sink channel.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 64;
/// Default [`Builder::dispatcher_capacity`]: events in each table's queue.
pub const DEFAULT_DISPATCHER_CAPACITY: usize = 1024;
/// Default [`Builder::memory_quota`]: 64 MiB between `send` and acknowledgement.
pub const DEFAULT_MEMORY_QUOTA: usize = 64 << 20;
/// Default [`Builder::heartbeat_interval`], as TiCDC's.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(200);
/// Default [`Builder::close_timeout`].
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`Builder::report_handoff`].
pub const DEFAULT_REPORT_HANDOFF: Duration = Duration::from_millis(10);

/// A changefeed's settings, as the builder collected them.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub changefeed: String,
    pub node: String,
    pub channel_capacity: usize,
    pub dispatcher_capacity: usize,
    pub memory_quota: usize,
    pub heartbeat_interval: Duration,
    pub close_timeout: Duration,
    pub report_handoff: Duration,
    pub start_ts: u64,
}

/// Configures and starts a [`DispatcherManager`]; from [`DispatcherManager::builder`].
#[derive(Debug)]
#[must_use = "a builder does nothing until `start`"]
pub struct Builder {
    config: Config,
    maintainer: Option<Sender<HeartBeat>>,
}

impl Builder {
    /// The node name in heartbeats and errors. Default: the host name, or `localhost`.
    pub fn node(mut self, node: &str) -> Builder {
        self.config.node = node.to_string();
        self
    }

    /// Where heartbeats go. Without one, status is only available from
    /// [`DispatcherManager::status`] and errors from [`DispatcherManager::wait`].
    pub fn maintainer(mut self, maintainer: Sender<HeartBeat>) -> Builder {
        self.maintainer = Some(maintainer);
        self
    }

    /// Capacity of the one channel between the dispatchers and the sink thread, in
    /// batches (each at most [`MAX_BATCH_EVENTS`](crate::MAX_BATCH_EVENTS) events).
    /// Default [`DEFAULT_CHANNEL_CAPACITY`].
    pub fn channel_capacity(mut self, batches: usize) -> Builder {
        self.config.channel_capacity = batches;
        self
    }

    /// Capacity of each table's queue between `send` and its dispatcher thread, in
    /// events. Default [`DEFAULT_DISPATCHER_CAPACITY`].
    pub fn dispatcher_capacity(mut self, events: usize) -> Builder {
        self.config.dispatcher_capacity = events;
        self
    }

    /// Bytes that may be held between `send` and acknowledgement, all tables together.
    /// Default [`DEFAULT_MEMORY_QUOTA`].
    pub fn memory_quota(mut self, bytes: usize) -> Builder {
        self.config.memory_quota = bytes;
        self
    }

    /// How often a heartbeat goes to the maintainer. Default
    /// [`DEFAULT_HEARTBEAT_INTERVAL`].
    pub fn heartbeat_interval(mut self, interval: Duration) -> Builder {
        self.config.heartbeat_interval = interval;
        self
    }

    /// How long `close` lets in-flight events be acknowledged. Default
    /// [`DEFAULT_CLOSE_TIMEOUT`].
    pub fn close_timeout(mut self, timeout: Duration) -> Builder {
        self.config.close_timeout = timeout;
        self
    }

    /// After a failure, how long the senders stay blocked once the error heartbeat is in
    /// the maintainer channel, waiting for the maintainer to take it. Default
    /// [`DEFAULT_REPORT_HANDOFF`]; zero releases them as soon as the report is queued.
    ///
    /// The maintainer should have the cause before any producer sees a send fail. A
    /// report that is queued but not yet taken still races with the consequences: a
    /// thousand released producers compete with the maintainer's thread for the CPU.
    /// So the watcher waits until the channel has drained (the maintainer has taken the
    /// report and anything queued before it), or this long, whichever comes first, and
    /// only then releases. Channels tell a sender nothing when a message is taken: the
    /// watcher looks at the channel's length, napping 5 µs doubling to 100 µs in
    /// between. A maintainer that reads promptly takes the report within microseconds;
    /// one that does not (it is blocked in `send` itself, or other changefeeds keep a
    /// shared channel busy) costs this much extra on the way to the release. A close
    /// timeout ends the wait.
    pub fn report_handoff(mut self, wait: Duration) -> Builder {
        self.config.report_handoff = wait;
        self
    }

    /// The commit ts the changefeed starts from; the checkpoint never goes below it.
    /// Default 0.
    pub fn start_ts(mut self, ts: u64) -> Builder {
        self.config.start_ts = ts;
        self
    }

    /// Checks every setting; the error names the first bad one.
    pub(crate) fn validate(&self) -> Result<()> {
        let c = &self.config;
        if c.changefeed.trim().is_empty() {
            return Err(Error::config("changefeed_id", "must not be empty"));
        }
        if c.node.trim().is_empty() {
            return Err(Error::config("node", "must not be empty"));
        }
        let positive = [
            ("channel_capacity", c.channel_capacity),
            ("dispatcher_capacity", c.dispatcher_capacity),
            ("memory_quota", c.memory_quota),
        ];
        for (param, value) in positive {
            if value == 0 {
                return Err(Error::config(param, "must be greater than 0"));
            }
        }
        if c.heartbeat_interval.is_zero() {
            return Err(Error::config(
                "heartbeat_interval",
                "must be greater than 0",
            ));
        }
        if c.close_timeout.is_zero() {
            return Err(Error::config("close_timeout", "must be greater than 0"));
        }
        Ok(())
    }

    /// Validates the settings and starts the sink, watcher and heartbeat threads. The
    /// sink's own start (connecting, opening files) runs on the sink thread: its failure
    /// reaches the maintainer as a `RunningError`, not as an error here.
    pub fn start<S: Sink + 'static>(self, sink: S) -> Result<DispatcherManager> {
        self.validate()?;
        DispatcherManager::spawn(self.config, self.maintainer, Box::new(sink))
    }
}

/// Where a changefeed is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum State {
    /// Accepting events.
    Running,
    /// No longer accepting events; threads are stopping.
    Closing,
    /// Every thread has stopped (or, after a close timeout, been given up on).
    Closed,
}

/// A snapshot of a changefeed, from [`DispatcherManager::status`].
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Running, closing or closed.
    pub state: State,
    /// The changefeed's checkpoint.
    pub checkpoint_ts: u64,
    /// Each dispatcher's status, by table.
    pub dispatchers: Vec<DispatcherStatus>,
    /// Bytes held between `send` and acknowledgement.
    pub in_flight_bytes: usize,
    /// The memory quota.
    pub memory_quota: usize,
    /// Batches waiting in the sink channel.
    pub sink_queue_depth: usize,
    /// Sends that had to wait for memory quota.
    pub quota_waits: u64,
    /// Events the sink acknowledged.
    pub events_acked: u64,
    /// Batches the sink acknowledged.
    pub batches_acked: u64,
    /// Message bytes the sink acknowledged.
    pub bytes_acked: u64,
    /// Heartbeats delivered to the maintainer.
    pub heartbeats_sent: u64,
    /// Heartbeats dropped because the maintainer channel was full.
    pub heartbeats_dropped: u64,
    /// Whether `close` gave up waiting for the sink (see [`Error::CloseTimeout`]).
    pub close_timed_out: bool,
    /// The error that closed the changefeed, as its code and text.
    pub error: Option<(String, String)>,
}

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub heartbeats_sent: Counter,
    pub heartbeats_dropped: Counter,
    pub events_acked: Counter,
    pub batches_acked: Counter,
    pub bytes_acked: Counter,
}

/// The changefeed's life, guarded by [`Shared::phase`].
#[derive(Debug)]
enum Phase {
    Running,
    /// The watcher is reporting this failure; senders keep blocking until it is sent.
    Reporting(Error),
    /// Stopping; `outcome` is what `close` and `wait` will return.
    Closing {
        outcome: Result<()>,
    },
    Closed {
        outcome: Result<()>,
    },
}

/// The lines whose dropping stops threads; each is taken exactly once.
#[derive(Default)]
struct Lines {
    /// The manager's own sender, cloned into new dispatchers.
    sink_tx: Option<Sender<Batch>>,
    /// The spare receiver: keeps the sink channel connected after the sink thread ends,
    /// so that senders stay blocked until the watcher has reported.
    spare_rx: Option<Receiver<Batch>>,
    /// Dropped to make every dispatcher, the sink thread and every blocked `send` quit.
    abort_tx: Option<Sender<()>>,
    heartbeat_stop: Option<Sender<()>>,
}

#[derive(Default)]
pub(crate) struct Registry {
    pub active: BTreeMap<TableName, Arc<DispatcherShared>>,
    /// Removed dispatchers whose events may still be in flight.
    pub retired: Vec<Arc<DispatcherShared>>,
    pub threads: Vec<JoinHandle<()>>,
}

/// What every thread of one changefeed shares.
pub(crate) struct Shared {
    pub config: Config,
    pub maintainer: Option<Sender<HeartBeat>>,
    pub quota: Arc<Quota>,
    pub signal: Arc<AckSignal>,
    pub counters: Counters,
    pub encoder: Arc<dyn Encoder>,
    /// The sink's way out of a blocked call, if it has one: used on release (a failure
    /// or a close timeout), so the sink thread does not go on retrying for nobody.
    interrupter: Option<Interrupter>,
    pub abort_rx: Receiver<()>,
    pub fault_tx: Sender<Error>,
    /// False once sends are refused; the fast path of `send`.
    accepting: AtomicBool,
    /// Set when a failure closed the changefeed: what refused sends carry. Read
    /// without a lock by every refused send.
    cause: OnceLock<Error>,
    phase: Mutex<Phase>,
    phase_changed: Condvar,
    lines: Mutex<Lines>,
    pub registry: Mutex<Registry>,
    last_checkpoint: AtomicU64,
    /// The changefeed's watermark as last computed, for the error heartbeat.
    last_resolved: AtomicU64,
    close_timed_out: AtomicBool,
    final_sent: AtomicBool,
}

impl Shared {
    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
    }

    /// Why sends are refused: the error that closed the changefeed, or
    /// [`Error::ChangefeedClosed`].
    pub fn refusal(&self) -> Error {
        self.cause.get().cloned().unwrap_or(Error::ChangefeedClosed)
    }

    fn all_dispatchers(&self) -> Vec<Arc<DispatcherShared>> {
        let mut reg = self.registry.lock();
        reg.retired.retain(|d| d.progress.in_flight() > 0);
        reg.active.values().chain(&reg.retired).cloned().collect()
    }

    pub fn checkpoint_ts(&self) -> u64 {
        let dispatchers = self.all_dispatchers();
        self.changefeed_checkpoint(dispatchers.iter().map(|d| d.progress.checkpoint_ts()))
    }

    /// The minimum of the dispatchers' checkpoints, remembered for when there are no
    /// dispatchers (then the last one computed, or `start_ts`).
    fn changefeed_checkpoint(&self, per_dispatcher: impl Iterator<Item = u64>) -> u64 {
        match per_dispatcher.min() {
            Some(ts) => {
                self.last_checkpoint.store(ts, Ordering::Relaxed);
                ts
            }
            None => self.last_checkpoint.load(Ordering::Relaxed),
        }
    }

    fn dispatcher_statuses(&self) -> Vec<DispatcherStatus> {
        self.all_dispatchers().iter().map(|d| d.status()).collect()
    }

    /// Queues a periodic heartbeat without waiting, unless a failure is being or has
    /// been reported (`None`): after the error heartbeat the maintainer hears only the
    /// final one. Checked and sent under the phase lock, so none slips in after the
    /// report.
    pub fn send_periodic(
        &self,
        maintainer: &Sender<HeartBeat>,
        heartbeat: HeartBeat,
    ) -> Option<std::result::Result<(), TrySendError<HeartBeat>>> {
        let phase = self.phase.lock();
        if matches!(*phase, Phase::Reporting(_))
            || self.cause.get().is_some()
            || self.final_sent.load(Ordering::Acquire)
        {
            return None;
        }
        Some(maintainer.try_send(heartbeat))
    }

    pub fn heartbeat(&self, error: Option<RunningError>, closed: bool) -> HeartBeat {
        let dispatchers = self.dispatcher_statuses();
        let checkpoint_ts = self.changefeed_checkpoint(dispatchers.iter().map(|d| d.checkpoint_ts));
        let resolved_ts = dispatchers
            .iter()
            .map(|d| d.resolved_ts)
            .min()
            .unwrap_or(checkpoint_ts);
        self.last_resolved.store(resolved_ts, Ordering::Relaxed);
        HeartBeat {
            changefeed: self.config.changefeed.clone(),
            node: self.config.node.clone(),
            checkpoint_ts,
            resolved_ts,
            dispatchers,
            error,
            closed,
        }
    }

    /// The heartbeat that reports `error`: sent at once, so it carries the checkpoint and
    /// watermark last computed (by a heartbeat or `status()`; never ahead of the truth)
    /// and no per-dispatcher statuses. Collecting those touches every dispatcher's state,
    /// about half a millisecond at 1,000 dispatchers, and the report waits for nothing;
    /// the final `closed` heartbeat carries them.
    pub fn error_heartbeat(&self, error: RunningError) -> HeartBeat {
        HeartBeat {
            changefeed: self.config.changefeed.clone(),
            node: self.config.node.clone(),
            checkpoint_ts: self.last_checkpoint.load(Ordering::Relaxed),
            resolved_ts: self.last_resolved.load(Ordering::Relaxed),
            dispatchers: Vec::new(),
            error: Some(error),
            closed: false,
        }
    }

    /// The program's close: refuse new sends and let the dispatchers drain. Does nothing
    /// unless running (a failure being reported decides instead).
    fn begin_close(&self) {
        let mut phase = self.phase.lock();
        if !matches!(*phase, Phase::Running) {
            return;
        }
        *phase = Phase::Closing { outcome: Ok(()) };
        self.accepting.store(false, Ordering::Release);
        // Senders waiting for quota have not been accepted: hand their events back.
        self.quota.close();
        for d in self.registry.lock().active.values() {
            d.stop();
        }
        for d in self.all_dispatchers_unpruned() {
            d.wake_senders();
        }
        let mut lines = self.lines.lock();
        // With every dispatcher gone, the sink thread sees the channel disconnect.
        lines.sink_tx = None;
        drop(lines);
        drop(phase);
        self.phase_changed.notify_all();
        self.signal.notify();
    }

    /// Called by the watcher when the sink ended or a dispatcher failed. Returns the
    /// error to report when this ends a running changefeed (the phase is then
    /// `Reporting`); otherwise records a failure during close as its outcome.
    pub fn end(&self, failure: Option<Error>) -> Option<Error> {
        let mut phase = self.phase.lock();
        match &mut *phase {
            Phase::Running => {
                let error = failure.unwrap_or(Error::SinkExited);
                *phase = Phase::Reporting(error.clone());
                Some(error)
            }
            Phase::Closing { outcome } => {
                if let (Ok(()), Some(e)) = (&outcome, failure) {
                    *outcome = Err(e);
                }
                None
            }
            Phase::Reporting(_) | Phase::Closed { .. } => None,
        }
    }

    /// After the report: the failure is what closed the changefeed.
    pub fn reported(&self, error: Error) {
        let _ = self.cause.set(error.clone());
        let mut phase = self.phase.lock();
        if matches!(*phase, Phase::Reporting(_)) {
            *phase = Phase::Closing {
                outcome: Err(error),
            };
        }
        drop(phase);
        self.phase_changed.notify_all();
    }

    /// `close` gave up on the drain: that is its outcome, unless a failure came first.
    fn time_out(&self, error: Error) {
        self.close_timed_out.store(true, Ordering::Relaxed);
        if let Phase::Closing { outcome } = &mut *self.phase.lock() {
            if outcome.is_ok() {
                *outcome = Err(error);
            }
        }
    }

    /// Stops every sender at once and frees what the channels hold: refuse sends,
    /// interrupt the sink (if it can be), close the quota, drop the abort line, the spare receiver, the manager's sender, the
    /// heartbeat's and every dispatcher's stop line. Idempotent.
    pub fn release(&self) {
        // A close that timed out while a failure was being reported releases before
        // the watcher marks it reported: refused sends still carry the failure.
        if let Phase::Reporting(error) = &*self.phase.lock() {
            let _ = self.cause.set(error.clone());
        }
        self.accepting.store(false, Ordering::Release);
        if let Some(interrupt) = &self.interrupter {
            interrupt();
        }
        self.quota.close();
        // Producers first: wake every blocked `send`, and wait until each has left
        // (`DispatcherShared::release` takes the table's order lock, which a send holds
        // until it returns). Dispatcher threads stay parked on the full sink channel
        // meanwhile, so they do not compete with the producers for the CPU.
        let dispatchers = self.all_dispatchers_unpruned();
        for d in &dispatchers {
            d.wake_senders();
        }
        for d in &dispatchers {
            d.release();
        }
        // Then the engine's own threads.
        let mut lines = self.lines.lock();
        lines.abort_tx = None;
        if let Some(spare) = lines.spare_rx.take() {
            // Drop what the channel holds now; its permits return their bytes.
            while spare.try_recv().is_ok() {}
        }
        lines.sink_tx = None;
        lines.heartbeat_stop = None;
        drop(lines);
        for d in &dispatchers {
            d.stop();
        }
        self.signal.notify();
    }

    /// Every dispatcher, removed ones included, in flight or not.
    fn all_dispatchers_unpruned(&self) -> Vec<Arc<DispatcherShared>> {
        let reg = self.registry.lock();
        reg.active.values().chain(&reg.retired).cloned().collect()
    }

    /// Joins every dispatcher thread started so far.
    pub fn join_dispatchers(&self) {
        let threads = std::mem::take(&mut self.registry.lock().threads);
        for t in threads {
            // Dispatcher bodies catch their own panics; a join error cannot carry news.
            let _ = t.join();
        }
    }

    /// Sends the final `closed` heartbeat and moves to `Closed`. Only the first caller
    /// (the watcher, or `close` after a timeout) does anything.
    pub fn finish(&self, outcome: Option<Result<()>>) {
        if self.final_sent.swap(true, Ordering::AcqRel) {
            return;
        }
        heartbeat::send_reliably(self, self.heartbeat(None, true));
        let mut phase = self.phase.lock();
        let outcome = match (outcome, &*phase) {
            (Some(o), _) => o,
            (None, Phase::Closing { outcome } | Phase::Closed { outcome }) => outcome.clone(),
            // A close that timed out while the report was still being delivered: the
            // failure is still what closed the changefeed.
            (None, Phase::Reporting(error)) => Err(error.clone()),
            (None, Phase::Running) => Ok(()),
        };
        *phase = Phase::Closed { outcome };
        drop(phase);
        self.phase_changed.notify_all();
        self.signal.notify();
    }

    /// Waits until closed, or until `deadline`; the outcome if closed.
    fn wait_closed(&self, deadline: Option<Instant>) -> Option<Result<()>> {
        let mut phase = self.phase.lock();
        loop {
            if let Phase::Closed { outcome } = &*phase {
                return Some(outcome.clone());
            }
            match deadline {
                None => self.phase_changed.wait(&mut phase),
                Some(d) => {
                    if self.phase_changed.wait_until(&mut phase, d).timed_out() {
                        return match &*phase {
                            Phase::Closed { outcome } => Some(outcome.clone()),
                            _ => None,
                        };
                    }
                }
            }
        }
    }

    fn state(&self) -> (State, Option<Error>) {
        match &*self.phase.lock() {
            Phase::Running | Phase::Reporting(_) => (State::Running, None),
            Phase::Closing { outcome } => (State::Closing, outcome.clone().err()),
            Phase::Closed { outcome } => (State::Closed, outcome.clone().err()),
        }
    }
}

/// One changefeed on one node: owns the sink and the dispatchers that feed it.
///
/// Every method takes `&self`; share it behind an `Arc` to add dispatchers from several
/// threads. Dropping it closes the changefeed like [`close`](DispatcherManager::close)
/// (ignoring the result) and never panics.
pub struct DispatcherManager {
    shared: Arc<Shared>,
    watcher: Mutex<Option<JoinHandle<()>>>,
}

impl DispatcherManager {
    /// A builder for changefeed `changefeed_id`, with every default documented on its
    /// methods.
    pub fn builder(changefeed_id: impl Into<String>) -> Builder {
        Builder {
            config: Config {
                changefeed: changefeed_id.into(),
                node: default_node(),
                channel_capacity: DEFAULT_CHANNEL_CAPACITY,
                dispatcher_capacity: DEFAULT_DISPATCHER_CAPACITY,
                memory_quota: DEFAULT_MEMORY_QUOTA,
                heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
                close_timeout: DEFAULT_CLOSE_TIMEOUT,
                report_handoff: DEFAULT_REPORT_HANDOFF,
                start_ts: 0,
            },
            maintainer: None,
        }
    }

    fn spawn(
        config: Config,
        maintainer: Option<Sender<HeartBeat>>,
        mut sink: Box<dyn Sink>,
    ) -> Result<DispatcherManager> {
        let (sink_tx, sink_rx) = bounded::<Batch>(config.channel_capacity);
        let (abort_tx, abort_rx) = bounded::<()>(0);
        // Only the first fault matters; later ones are its consequences.
        let (fault_tx, fault_rx) = bounded::<Error>(1);
        let (sink_exit_tx, sink_exit_rx) = bounded::<Option<Error>>(1);
        let (heartbeat_stop, heartbeat_stop_rx) = bounded::<()>(0);
        let shared = Arc::new(Shared {
            interrupter: sink.interrupter(),
            quota: Quota::new(config.memory_quota),
            signal: Arc::default(),
            counters: Counters::default(),
            encoder: sink.encoder(),
            abort_rx: abort_rx.clone(),
            fault_tx,
            accepting: AtomicBool::new(true),
            cause: OnceLock::new(),
            phase: Mutex::new(Phase::Running),
            phase_changed: Condvar::new(),
            lines: Mutex::new(Lines {
                sink_tx: Some(sink_tx),
                spare_rx: Some(sink_rx.clone()),
                abort_tx: Some(abort_tx),
                heartbeat_stop: Some(heartbeat_stop),
            }),
            registry: Mutex::default(),
            last_checkpoint: AtomicU64::new(config.start_ts),
            last_resolved: AtomicU64::new(config.start_ts),
            close_timed_out: AtomicBool::new(false),
            final_sent: AtomicBool::new(false),
            maintainer,
            config,
        });
        // Until disarmed, a failed spawn below stops what was started.
        let terminator = Terminator(&shared);
        let id = &shared.config.changefeed;

        let sink_thread = {
            let shared = Arc::clone(&shared);
            spawn(format!("cf-{id}-sink"), move || {
                // How the sink ended goes to the watcher as it ends, so the report does
                // not wait for the thread to exit. (Unwinding past this, the sender
                // drops unsent and the watcher learns from the join instead.)
                let ended = catch_unwind(AssertUnwindSafe(|| {
                    sink_thread::run(&mut sink, &shared, &sink_rx)
                }));
                let _ = sink_exit_tx.send(watcher::sink_outcome(ended));
            })?
        };
        let heartbeat_thread = match shared.maintainer.clone() {
            Some(maintainer) => {
                let shared = Arc::clone(&shared);
                Some(spawn(format!("cf-{id}-heartbeat"), move || {
                    heartbeat::run(shared, maintainer, heartbeat_stop_rx)
                })?)
            }
            None => None,
        };
        let watcher = {
            let shared = Arc::clone(&shared);
            spawn(format!("cf-{id}-watcher"), move || {
                watcher::run(
                    shared,
                    sink_thread,
                    sink_exit_rx,
                    fault_rx,
                    heartbeat_thread,
                )
            })?
        };
        std::mem::forget(terminator);
        Ok(DispatcherManager {
            shared,
            watcher: Mutex::new(Some(watcher)),
        })
    }

    /// Starts the dispatcher thread of `table` and returns the handle producers send
    /// its events through. For a table just removed, first waits until its old
    /// dispatcher has handed its queued events to the sink channel (which may block
    /// while that channel is full), so the table's events stay in order.
    ///
    /// Fails with [`Error::DispatcherExists`] if the table has one, with the closing
    /// error once the changefeed is closed, or with [`Error::ThreadSpawn`].
    pub fn add_dispatcher(&self, table: TableName) -> Result<Dispatcher> {
        let shared = &self.shared;
        // A table removed a moment ago: its old thread hands over what it had queued
        // first, so the table's events reach the sink in order.
        let previous: Vec<_> = shared
            .registry
            .lock()
            .retired
            .iter()
            .filter(|d| d.table == table)
            .cloned()
            .collect();
        for d in previous {
            d.wait_exited();
        }
        let mut reg = shared.registry.lock();
        if !shared.is_accepting() {
            return Err(shared.refusal());
        }
        if reg.active.contains_key(&table) {
            return Err(Error::DispatcherExists { table });
        }
        let Some(sink_tx) = shared.lines.lock().sink_tx.clone() else {
            return Err(shared.refusal());
        };
        let (inner, thread) = dispatcher::spawn_dispatcher(shared, table.clone(), sink_tx)?;
        reg.active.insert(table, Arc::clone(&inner));
        // Join the threads of removed dispatchers that have finished, so the list
        // stays as long as the live ones.
        let (finished, live): (Vec<_>, Vec<_>) = std::mem::take(&mut reg.threads)
            .into_iter()
            .partition(|t| t.is_finished());
        for t in finished {
            let _ = t.join();
        }
        reg.threads = live;
        reg.threads.push(thread);
        Ok(Dispatcher::new(inner, Arc::clone(shared)))
    }

    /// Stops accepting events for `table`. Events already accepted are still delivered,
    /// and hold the checkpoint back until acknowledged; its thread exits once its queue
    /// is drained and is joined at close. Sends through its handle then fail with
    /// [`Error::DispatcherRemoved`]. The table may be added again.
    pub fn remove_dispatcher(&self, table: &TableName) -> Result<()> {
        let mut reg = self.shared.registry.lock();
        let Some(d) = reg.active.remove(table) else {
            return Err(Error::DispatcherNotFound {
                table: table.clone(),
            });
        };
        d.remove();
        reg.retired.push(d);
        Ok(())
    }

    /// The changefeed's checkpoint: every event at or below it was acknowledged by the
    /// sink. The minimum over dispatchers (see [`HeartBeat::checkpoint_ts`]).
    pub fn checkpoint_ts(&self) -> u64 {
        self.shared.checkpoint_ts()
    }

    /// Waits until every event sent so far (by any dispatcher) has been acknowledged.
    /// Fails with the closing error if the changefeed closes first, or
    /// [`Error::FlushTimeout`] after `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        let targets: Vec<_> = self
            .shared
            .all_dispatchers()
            .into_iter()
            .map(|d| (Arc::clone(&d.progress), d.progress.sent_count()))
            .collect();
        let deadline = deadline::after(timeout);
        let shared = &self.shared;
        shared
            .signal
            .wait_until(deadline, || {
                if targets.iter().all(|(p, sent)| p.acked_count() >= *sent) {
                    return Some(Ok(()));
                }
                match shared.state() {
                    (State::Running, _) => None,
                    (_, error) => Some(Err(error.unwrap_or(Error::ChangefeedClosed))),
                }
            })
            .unwrap_or(Err(Error::FlushTimeout { timeout }))
    }

    /// A snapshot of the changefeed's state and counters.
    pub fn status(&self) -> Status {
        let shared = &self.shared;
        let (state, error) = shared.state();
        let heartbeat = shared.heartbeat(None, false);
        let lines = shared.lines.lock();
        let sink_queue_depth = lines.spare_rx.as_ref().map_or(0, Receiver::len);
        drop(lines);
        Status {
            state,
            checkpoint_ts: heartbeat.checkpoint_ts,
            dispatchers: heartbeat.dispatchers,
            in_flight_bytes: shared.quota.used(),
            memory_quota: shared.quota.capacity(),
            sink_queue_depth,
            quota_waits: shared.quota.waits(),
            events_acked: shared.counters.events_acked.get(),
            batches_acked: shared.counters.batches_acked.get(),
            bytes_acked: shared.counters.bytes_acked.get(),
            heartbeats_sent: shared.counters.heartbeats_sent.get(),
            heartbeats_dropped: shared.counters.heartbeats_dropped.get(),
            close_timed_out: shared.close_timed_out.load(Ordering::Relaxed),
            error: error.map(|e| (e.code().to_string(), e.to_string())),
        }
    }

    /// Closes the changefeed: refuses new events, lets those accepted be acknowledged
    /// within the close timeout, then joins every thread. Idempotent: later calls
    /// return the same result.
    ///
    /// Returns the error that closed the changefeed if a failure came first (it was
    /// also reported to the maintainer), the error a sink raised while draining, or
    /// [`Error::CloseTimeout`]. After a timeout the sink thread, if stuck inside a call
    /// it cannot be interrupted from, exits when that call returns.
    pub fn close(&self) -> Result<()> {
        let shared = &self.shared;
        shared.begin_close();
        let timeout = shared.config.close_timeout;
        if let Some(outcome) = shared.wait_closed(deadline::after(timeout)) {
            self.join_watcher();
            return outcome;
        }
        log::warn!(
            "changefeed {}: close timed out after {timeout:?}; giving up on the sink",
            shared.config.changefeed
        );
        shared.time_out(Error::CloseTimeout { timeout });
        // Interrupts the sink, releases every sender.
        shared.release();
        shared.join_dispatchers();
        shared.finish(None);
        shared.wait_closed(None).unwrap_or(Ok(()))
    }

    /// Blocks until the changefeed is closed, by [`close`](DispatcherManager::close) or
    /// by a failure, and every thread has stopped. `Err` carries the error that closed it.
    pub fn wait(&self) -> Result<()> {
        let outcome = self.shared.wait_closed(None).unwrap_or(Ok(()));
        self.join_watcher();
        outcome
    }

    fn join_watcher(&self) {
        if self.shared.close_timed_out.load(Ordering::Relaxed) {
            // It waits on a stuck sink; it exits when the sink's call returns.
            return;
        }
        if let Some(w) = self.watcher.lock().take() {
            let _ = w.join();
        }
    }
}

impl Drop for DispatcherManager {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl std::fmt::Debug for DispatcherManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatcherManager")
            .field("changefeed", &self.shared.config.changefeed)
            .field("state", &self.shared.state().0)
            .finish()
    }
}

/// Stops the threads already started if `spawn` fails part way (rayon's Terminator).
struct Terminator<'a>(&'a Arc<Shared>);

impl Drop for Terminator<'_> {
    fn drop(&mut self) {
        // The sink thread quits on the abort line; nothing was reported yet, so the
        // watcher (if it started) sees a closing changefeed.
        self.0.begin_close();
        self.0.release();
    }
}

/// Spawns a named thread, turning the OS's refusal into [`Error::ThreadSpawn`].
pub(crate) fn spawn<T: Send + 'static>(
    name: String,
    body: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>> {
    thread::Builder::new()
        .name(name.clone())
        .spawn(body)
        .map_err(|e| Error::ThreadSpawn {
            thread: name,
            source: Arc::new(e),
        })
}

/// The node name a changefeed reports by default ([`Builder::node`]): the host name
/// (`$HOSTNAME`, else the kernel's), or `localhost`.
pub fn default_node() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_names_the_thread() {
        let t = spawn("cf-unit-named".to_string(), || {
            thread::current().name().map(str::to_string)
        })
        .unwrap();
        assert_eq!(t.join().unwrap().as_deref(), Some("cf-unit-named"));
    }
}
