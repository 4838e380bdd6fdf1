//! What every thread of one changefeed shares, and the close protocol: the phases
//! (running → reporting → closing → closed), the lines whose dropping stops threads,
//! [`Shared::begin_close`], [`Shared::end`], [`Shared::reported`], [`Shared::release`]
//! and [`Shared::finish`], and the delivery of the error and final heartbeats. Below every
//! thread role (dispatcher, sink thread, heartbeat, watcher) and below `manager.rs`,
//! the public handle and builder that wire them together.
//!
//! # Close order
//!
//! Whichever comes first decides:
//!
//! * **The sink ends, or a dispatcher fails, while running.** The watcher moves the
//!   changefeed to *reporting* ([`Shared::end`]), sends the heartbeat carrying the
//!   [`RunningError`] (senders stay blocked meanwhile — the sink channel is still
//!   connected through the spare receiver in [`Lines`]), waits until the maintainer has
//!   taken it from its channel (at most [`Builder::report_handoff`]), and only then
//!   *releases* ([`Shared::release`]): it refuses new sends, interrupts the sink (if it
//!   can be), closes the quota, wakes every blocked send, drops the abort line, the spare
//!   receiver (dropping what it held) and the stop lines, so every blocked and every
//!   later send fails at once. It joins the dispatchers, the sink and the heartbeat
//!   thread, and sends the final `closed` heartbeat ([`Shared::finish`]).
//! * **The program calls `close`** ([`Shared::begin_close`]). New sends are refused, the
//!   dispatchers drain their queues into the sink channel and exit, the sink thread
//!   flushes what is left and returns once no sender remains, and the watcher finishes
//!   as above without a `RunningError`: a failure during this drain is what `close`
//!   returns. If the drain takes longer than the close timeout, `close` interrupts the
//!   sink (if it can be), releases and joins the dispatchers itself, and returns
//!   [`Error::CloseTimeout`]; the sink and watcher threads then exit when the sink's
//!   blocked call returns.
//!
//! [`RunningError`]: crate::RunningError
//! [`Builder::report_handoff`]: crate::Builder::report_handoff

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};
use parking_lot::{Condvar, Mutex};

use crate::deadline;
use crate::error::{Error, Result};
use crate::event::TableName;
use crate::progress::AckSignal;
use crate::quota::Quota;
use crate::sink::{Batch, Encoder, Interrupter};
use crate::status::{DispatcherStatus, HeartBeat, RunningError, State};
use crate::table::DispatcherShared;

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
    /// Dispatcher threads serving every table (`None`: a thread per table).
    pub dispatcher_threads: Option<usize>,
}

/// The dispatcher pool: a fixed number of worker threads serve every table. A table with
/// queued events is in the ready queue once ([`DispatcherShared::claim`]); a worker takes
/// it, drains a run of its queue into batches, and puts it back if more came. The ready
/// queue holds each table at most once, so its length is bounded by the number of
/// tables; `None` entries tell workers to exit once every table is done after a close.
pub(crate) struct Pool {
    pub ready_tx: Sender<Option<Arc<DispatcherShared>>>,
    pub threads: usize,
    /// Tables not yet done (added, and not yet drained and sealed after a stop).
    pub live: AtomicUsize,
    finished: AtomicBool,
}

impl Pool {
    pub fn new(ready_tx: Sender<Option<Arc<DispatcherShared>>>, threads: usize) -> Pool {
        Pool {
            ready_tx,
            threads,
            live: AtomicUsize::new(0),
            finished: AtomicBool::new(false),
        }
    }

    /// Puts `table` in the ready queue unless it is there or being served.
    pub fn schedule(&self, table: &Arc<DispatcherShared>) {
        if table.claim() {
            self.requeue(table);
        }
    }

    /// Puts a claimed `table` (its claimer's) at the back of the ready queue.
    pub fn requeue(&self, table: &Arc<DispatcherShared>) {
        // Fails only once every worker has gone (a release): nothing to serve then.
        let _ = self.ready_tx.send(Some(Arc::clone(table)));
    }
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
    /// The dispatcher pool (`None`: a thread per table).
    pub pool: Option<Pool>,
    last_checkpoint: AtomicU64,
    /// The changefeed's watermark as last computed, for the error heartbeat.
    last_resolved: AtomicU64,
    close_timed_out: AtomicBool,
    final_sent: AtomicBool,
}

impl Shared {
    /// The state of a changefeed about to start: running, with the manager's sender and
    /// the spare receiver of the sink channel, the abort line and the heartbeat's stop
    /// line in its [`Lines`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        maintainer: Option<Sender<HeartBeat>>,
        interrupter: Option<Interrupter>,
        encoder: Arc<dyn Encoder>,
        sink: (Sender<Batch>, Receiver<Batch>),
        abort: (Sender<()>, Receiver<()>),
        fault_tx: Sender<Error>,
        heartbeat_stop: Sender<()>,
        pool: Option<Pool>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            pool,
            interrupter,
            quota: Quota::new(config.memory_quota),
            signal: Arc::default(),
            counters: Counters::default(),
            encoder,
            abort_rx: abort.1,
            fault_tx,
            accepting: AtomicBool::new(true),
            cause: OnceLock::new(),
            phase: Mutex::new(Phase::Running),
            phase_changed: Condvar::new(),
            lines: Mutex::new(Lines {
                sink_tx: Some(sink.0),
                spare_rx: Some(sink.1),
                abort_tx: Some(abort.0),
                heartbeat_stop: Some(heartbeat_stop),
            }),
            registry: Mutex::default(),
            last_checkpoint: AtomicU64::new(config.start_ts),
            last_resolved: AtomicU64::new(config.start_ts),
            close_timed_out: AtomicBool::new(false),
            final_sent: AtomicBool::new(false),
            maintainer,
            config,
        })
    }

    /// Batches waiting in the sink channel (0 once released).
    pub fn sink_queue_depth(&self) -> usize {
        self.lines.lock().spare_rx.as_ref().map_or(0, Receiver::len)
    }

    /// Whether `close` gave up waiting for the sink.
    pub fn close_timed_out(&self) -> bool {
        self.close_timed_out.load(Ordering::Relaxed)
    }

    /// The manager's sender of the sink channel, for a new dispatcher; `None` once
    /// closing.
    pub fn sink_sender(&self) -> Option<Sender<Batch>> {
        self.lines.lock().sink_tx.clone()
    }

    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
    }

    /// Why sends are refused: the error that closed the changefeed, or
    /// [`Error::ChangefeedClosed`].
    pub fn refusal(&self) -> Error {
        self.cause.get().cloned().unwrap_or(Error::ChangefeedClosed)
    }

    pub fn all_dispatchers(&self) -> Vec<Arc<DispatcherShared>> {
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
    pub fn changefeed_checkpoint(&self, per_dispatcher: impl Iterator<Item = u64>) -> u64 {
        match per_dispatcher.min() {
            Some(ts) => {
                self.last_checkpoint.store(ts, Ordering::Relaxed);
                ts
            }
            None => self.last_checkpoint.load(Ordering::Relaxed),
        }
    }

    pub fn dispatcher_statuses(&self) -> Vec<DispatcherStatus> {
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
    pub fn begin_close(&self) {
        let mut phase = self.phase.lock();
        if !matches!(*phase, Phase::Running) {
            return;
        }
        *phase = Phase::Closing { outcome: Ok(()) };
        self.accepting.store(false, Ordering::Release);
        // Senders waiting for quota have not been accepted: hand their events back.
        self.quota.close();
        for d in self.registry.lock().active.values() {
            self.stop_table(d);
        }
        for d in self.all_dispatchers_unpruned() {
            d.wake_senders();
        }
        let mut lines = self.lines.lock();
        // With every dispatcher gone, the sink thread sees the channel disconnect.
        lines.sink_tx = None;
        drop(lines);
        drop(phase);
        self.finish_pool_if_done();
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
    pub fn time_out(&self, error: Error) {
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
            // The pool's workers are leaving on the abort line: nothing more is served,
            // so every table is done (`wait_exited` returns).
            if self.pool.is_some() {
                d.mark_exited();
            }
        }
        self.signal.notify();
    }

    /// Tells a table to drain and be done: its thread sees the stop line; on the pool a
    /// worker is sent to it.
    pub fn stop_table(&self, d: &Arc<DispatcherShared>) {
        d.stop();
        if let Some(pool) = &self.pool {
            pool.schedule(d);
        }
    }

    /// On the pool: `d` is done (drained and sealed, or failed). The last table done
    /// after a close sends the workers home.
    pub fn table_done(&self, d: &DispatcherShared) {
        if let Some(pool) = &self.pool {
            if d.mark_exited() {
                pool.live.fetch_sub(1, Ordering::SeqCst);
                self.finish_pool_if_done();
            }
        }
    }

    /// Once sends are refused and every table is done, each pool worker gets a `None`
    /// and exits (their senders of the sink channel drop with them).
    fn finish_pool_if_done(&self) {
        let Some(pool) = &self.pool else { return };
        if !self.is_accepting()
            && pool.live.load(Ordering::SeqCst) == 0
            && !pool.finished.swap(true, Ordering::SeqCst)
        {
            for _ in 0..pool.threads {
                let _ = pool.ready_tx.send(None);
            }
        }
    }

    /// Every dispatcher, removed ones included, in flight or not.
    pub fn all_dispatchers_unpruned(&self) -> Vec<Arc<DispatcherShared>> {
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
        send_reliably(self, self.heartbeat(None, true));
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
    pub fn wait_closed(&self, deadline: Option<Instant>) -> Option<Result<()>> {
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

    pub fn state(&self) -> (State, Option<Error>) {
        match &*self.phase.lock() {
            Phase::Running | Phase::Reporting(_) => (State::Running, None),
            Phase::Closing { outcome } => (State::Closing, outcome.clone().err()),
            Phase::Closed { outcome } => (State::Closed, outcome.clone().err()),
        }
    }
}

/// How long the error heartbeat and the final `closed` heartbeat may wait for room in a
/// full maintainer channel before they are counted as dropped.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends an important heartbeat (the error, or the final one), waiting at most
/// [`REPORT_TIMEOUT`] for room. Returns whether it was delivered.
pub(crate) fn send_reliably(shared: &Shared, heartbeat: HeartBeat) -> bool {
    let Some(maintainer) = &shared.maintainer else {
        return false;
    };
    match maintainer.send_timeout(heartbeat, REPORT_TIMEOUT) {
        Ok(()) => {
            shared.counters.heartbeats_sent.inc();
            true
        }
        Err(SendTimeoutError::Timeout(hb)) => {
            log::error!(
                "changefeed {}: maintainer channel stayed full for {REPORT_TIMEOUT:?}; dropped heartbeat (error: {:?}, closed: {})",
                shared.config.changefeed, hb.error, hb.closed
            );
            shared.counters.heartbeats_dropped.inc();
            false
        }
        Err(SendTimeoutError::Disconnected(_)) => false,
    }
}

/// First and longest nap of [`await_handoff`] between two looks at the channel.
const HANDOFF_NAP: (Duration, Duration) = (Duration::from_micros(5), Duration::from_micros(100));

/// After the error heartbeat was queued: waits until the maintainer has taken it (the
/// channel has drained), at most [`Builder::report_handoff`], and no longer once the
/// senders were released by someone else (a close that timed out). Returns whether the
/// channel drained.
///
/// [`Builder::report_handoff`]: crate::Builder::report_handoff
pub(crate) fn await_handoff(shared: &Shared) -> bool {
    let Some(maintainer) = &shared.maintainer else {
        return false;
    };
    let deadline = deadline::after(shared.config.report_handoff);
    let (mut nap, longest) = HANDOFF_NAP;
    loop {
        if maintainer.is_empty() {
            return true;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) || !shared.is_accepting() {
            return false;
        }
        let left = deadline.map_or(nap, |d| d - now);
        thread::sleep(nap.min(left));
        nap = (nap * 2).min(longest);
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
