//! The [`DispatcherManager`]: the public handle and its builder, which start the thread
//! roles (dispatcher, sink thread, heartbeat, watcher) over the state they share
//! (`shared.rs`).
//!
//! # Threads (see ARCHITECTURE.md for the drawing)
//!
//! | thread | spawned by | joined by | stops when |
//! |---|---|---|---|
//! | `cf-<id>-dispatch-<i>` (the pool, [`Builder::dispatcher_threads`]) | `start` | the watcher (or `close` on timeout) | every table is done after a close, or the abort line drops |
//! | `cf-<id>-dispatcher-<table>` ([`Builder::thread_per_dispatcher`]) | `add_dispatcher` | the watcher (or `close` on timeout) | its stop or the abort line drops, or the sink channel disconnects |
//! | `cf-<id>-sink` | `start` | the watcher | the sink channel has no senders left, the abort line drops, or the sink fails |
//! | `cf-<id>-heartbeat` | `start` (with a maintainer) | the watcher | its stop line drops |
//! | `cf-<id>-watcher` | `start` | `close`, `wait` or `Drop` | everything above has stopped |
//!
//! # Close order
//!
//! Written out once, in `shared.rs` (the module that holds the protocol): a failure
//! while running is reported first, then every sender is released; `close` drains
//! within its timeout, then interrupts and releases. ARCHITECTURE.md draws it.
//!
//! [`RunningError`]: crate::RunningError

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Sender};
use parking_lot::Mutex;

use crate::deadline;
use crate::dispatcher::{self, Dispatcher};
use crate::error::{Error, Result};
use crate::event::TableName;
use crate::shared::{spawn, Config, Pool, Shared};
use crate::sink::{Batch, Sink};
use crate::status::{HeartBeat, State, Status};
use crate::{heartbeat, sink_thread, watcher};

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
/// Most threads [`default_dispatcher_threads`] suggests.
pub const MAX_DEFAULT_DISPATCHER_THREADS: usize = 16;

/// A pool size for [`Builder::dispatcher_threads`]: the machine's cores (as
/// `std::thread::available_parallelism` says), at least 2 and at most
/// [`MAX_DEFAULT_DISPATCHER_THREADS`].
pub fn default_dispatcher_threads() -> usize {
    thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, MAX_DEFAULT_DISPATCHER_THREADS)
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

    /// A pool of `threads` dispatcher threads encodes and delivers every table's events
    /// (each table drained by one thread at a time, so its order holds; an idle table
    /// costs no thread and no CPU): the engine's thread count no longer grows with the
    /// tables. At least 1; [`default_dispatcher_threads`] is a good start. Not yet the
    /// default: with many busy producers per core the pool's threads get less of the
    /// CPU than a thread per table would (the report's throughput section, 64 tables),
    /// which the next step of issue 11 addresses.
    pub fn dispatcher_threads(mut self, threads: usize) -> Builder {
        self.config.dispatcher_threads = Some(threads);
        self
    }

    /// One dispatcher thread per table, `cf-<id>-dispatcher-<table>` (the default): the
    /// thread count grows with the tables.
    pub fn thread_per_dispatcher(mut self) -> Builder {
        self.config.dispatcher_threads = None;
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
        if c.dispatcher_threads == Some(0) {
            return Err(Error::config(
                "dispatcher_threads",
                "must be greater than 0",
            ));
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
                dispatcher_threads: None,
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
        // The pool's ready queue: each table at most once, so bounded by the tables.
        let (ready_tx, ready_rx) = unbounded();
        let pool = config.dispatcher_threads.map(|n| Pool::new(ready_tx, n));
        let shared = Shared::new(
            config,
            maintainer,
            sink.interrupter(),
            sink.encoder(),
            (sink_tx, sink_rx.clone()),
            (abort_tx, abort_rx),
            fault_tx,
            heartbeat_stop,
            pool,
        );
        // Until disarmed, a failed spawn below stops what was started.
        let terminator = Terminator(&shared);
        let id = &shared.config.changefeed;
        if let (Some(pool), Some(sink_tx)) = (&shared.pool, shared.sink_sender()) {
            let threads = dispatcher::spawn_pool(&shared, pool.threads, &ready_rx, &sink_tx);
            drop(ready_rx);
            shared.registry.lock().threads.extend(threads?);
        }

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
        let Some(sink_tx) = shared.sink_sender() else {
            return Err(shared.refusal());
        };
        let inner = match &shared.pool {
            Some(pool) => {
                drop(sink_tx);
                let inner = dispatcher::pooled_dispatcher(shared, table.clone());
                pool.live.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                reg.active.insert(table, Arc::clone(&inner));
                return Ok(Dispatcher::new(inner, Arc::clone(shared)));
            }
            None => {
                let (inner, thread) = dispatcher::spawn_dispatcher(shared, table.clone(), sink_tx)?;
                reg.threads.push(thread);
                inner
            }
        };
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
        // On the pool a worker drains what it queued, seals it and marks it done.
        if let Some(pool) = &self.shared.pool {
            pool.schedule(&d);
        }
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
        let sink_queue_depth = shared.sink_queue_depth();
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
            close_timed_out: shared.close_timed_out(),
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
        if self.shared.close_timed_out() {
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
