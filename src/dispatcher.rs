//! One table's path into the sink: the [`Dispatcher`] handle producers send through,
//! and the threads that encode the table's events and hand them, in order, to the one
//! sink channel: the table's own dispatcher thread ([`Worker`], the default), or the
//! pool's workers ([`PoolWorker`], [`Builder::dispatcher_threads`]), which serve every
//! table, one table at a time each. Both drain through [`Drain`].
//!
//! `send` → table queue (bounded, [`Builder::dispatcher_capacity`] events, and bounded in
//! bytes by the memory quota) → dispatcher thread or pool worker (encodes a run of
//! queued events into one batch of at most [`MAX_BATCH_EVENTS`] events /
//! [`MAX_BATCH_BYTES`] bytes, without waiting to fill it) → sink channel.
//!
//! [`Builder::dispatcher_capacity`]: crate::Builder::dispatcher_capacity
//! [`Builder::dispatcher_threads`]: crate::Builder::dispatcher_threads

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{
    select, Receiver, Select, Sender, TryRecvError, TrySendError as ChannelFull,
};

use crate::deadline;
use crate::error::{panic_text, Error, Result, SendError, TrySendError};
use crate::event::{Event, TableName};
use crate::progress::Ack;
use crate::quota::Refused;
use crate::shared::{spawn, Shared};
use crate::sink::{Batch, Message};
use crate::table::{DispatcherShared, Queued};

/// Most events a dispatcher puts in one batch.
pub const MAX_BATCH_EVENTS: usize = 256;
/// Most encoded bytes a dispatcher puts in one batch (a single larger event still goes
/// alone).
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// Starts the dispatcher thread of `table` (a thread per dispatcher).
pub(crate) fn spawn_dispatcher(
    shared: &Arc<Shared>,
    table: TableName,
    sink_tx: Sender<Batch>,
) -> Result<(Arc<DispatcherShared>, JoinHandle<()>)> {
    let (inner, queue_rx, stop_rx, exited_tx) = DispatcherShared::new(
        table.clone(),
        shared.config.dispatcher_capacity,
        shared.config.start_ts,
        false,
    );
    let worker = Worker {
        shared: Arc::clone(shared),
        inner: Arc::clone(&inner),
        queue_rx,
        stop_rx,
        sink_tx,
        _exited: exited_tx,
    };
    let name = format!("cf-{}-dispatcher-{table}", shared.config.changefeed);
    let thread = spawn(name, move || worker.run())?;
    Ok((inner, thread))
}

/// The state of a table served by the pool (no thread of its own).
pub(crate) fn pooled_dispatcher(shared: &Shared, table: TableName) -> Arc<DispatcherShared> {
    let (inner, _, _, _) = DispatcherShared::new(
        table,
        shared.config.dispatcher_capacity,
        shared.config.start_ts,
        true,
    );
    inner
}

/// Starts the pool's `threads` workers, `cf-<id>-dispatch-<i>`.
pub(crate) fn spawn_pool(
    shared: &Arc<Shared>,
    threads: usize,
    ready_rx: &Receiver<Option<Arc<DispatcherShared>>>,
    sink_tx: &Sender<Batch>,
) -> Result<Vec<JoinHandle<()>>> {
    (0..threads)
        .map(|i| {
            let worker = PoolWorker {
                shared: Arc::clone(shared),
                ready_rx: ready_rx.clone(),
                sink_tx: sink_tx.clone(),
            };
            let name = format!("cf-{}-dispatch-{i}", shared.config.changefeed);
            spawn(name, move || worker.run())
        })
        .collect()
}

/// How long a send may wait for room.
#[derive(Clone, Copy)]
enum Wait {
    Forever,
    Until(Instant),
}

impl Wait {
    fn deadline(self) -> Option<Instant> {
        match self {
            Wait::Forever => None,
            Wait::Until(d) => Some(d),
        }
    }
}

/// A producer's handle on one table's dispatcher, from
/// [`DispatcherManager::add_dispatcher`](crate::DispatcherManager::add_dispatcher).
///
/// `Send` and `Sync`; clones share the same dispatcher. Events of one table must be sent
/// in commit-ts order; concurrent senders on one table are serialised.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<DispatcherShared>,
    shared: Arc<Shared>,
}

// The errors hand the event back by value, as crossbeam's `SendError(T)` does; boxing
// them would cost an allocation on every refused send, the hot path after a failure.
#[allow(clippy::result_large_err)]
impl Dispatcher {
    pub(crate) fn new(inner: Arc<DispatcherShared>, shared: Arc<Shared>) -> Dispatcher {
        Dispatcher { inner, shared }
    }

    /// The dispatcher's table.
    pub fn table(&self) -> &TableName {
        &self.inner.table
    }

    /// Sends one event of this table.
    ///
    /// **This call may block**: while the table's queue is full, or while the memory
    /// quota is used up, until the sink acknowledges earlier events. It is woken at once
    /// when the changefeed closes or fails, and then returns the event in the error.
    ///
    /// Fails at once, without closing anything, for an event of another table
    /// ([`Error::WrongTable`]), a commit ts below the table's last one or at or below
    /// its last watermark ([`Error::EventOutOfOrder`]), or an event larger than the
    /// whole memory quota ([`Error::EventTooLarge`]).
    pub fn send(&self, event: impl Into<Event>) -> Result<(), SendError> {
        match self.send_inner(event.into(), Wait::Forever) {
            Ok(()) => Ok(()),
            Err(TrySendError::Failed(e)) => Err(e),
            Err(TrySendError::Full(event)) => Err(SendError {
                event,
                cause: Error::ChangefeedClosed,
            }),
        }
    }

    /// Like [`send`](Dispatcher::send), but returns [`TrySendError::Full`] instead of
    /// waiting for room.
    pub fn try_send(&self, event: impl Into<Event>) -> Result<(), TrySendError> {
        self.send_inner(event.into(), Wait::Until(Instant::now()))
    }

    /// Like [`send`](Dispatcher::send), but waits at most `timeout` for room.
    pub fn send_timeout(
        &self,
        event: impl Into<Event>,
        timeout: Duration,
    ) -> Result<(), TrySendError> {
        let wait = deadline::after(timeout).map_or(Wait::Forever, Wait::Until);
        self.send_inner(event.into(), wait)
    }

    /// This table's checkpoint: every event of it at or below this commit ts has been
    /// acknowledged by the sink, so the producer may forget it.
    pub fn checkpoint_ts(&self) -> u64 {
        self.inner.progress.checkpoint_ts()
    }

    fn send_inner(&self, event: Event, wait: Wait) -> Result<(), TrySendError> {
        let fail = |event, cause| Err(TrySendError::Failed(SendError { event, cause }));
        if let Some(table) = event.table() {
            if *table != self.inner.table {
                let cause = Error::WrongTable {
                    dispatcher: self.inner.table.clone(),
                    event: table.clone(),
                };
                return fail(event, cause);
            }
        }
        // Checked before taking the order lock too, so that refused producers that keep
        // pushing never contend with the watcher's release for it.
        if !self.shared.is_accepting() {
            return fail(event, self.shared.refusal());
        }
        // Declared before the order lock, so it runs after the lock is released.
        let _leaving = Leaving(self);
        let mut order = match wait {
            Wait::Forever => self.inner.order.lock(),
            Wait::Until(deadline) => match self.inner.order.try_lock_until(deadline) {
                Some(order) => order,
                None => return Err(TrySendError::Full(event)),
            },
        };
        if self.inner.removed.load(Ordering::Acquire) {
            let cause = Error::DispatcherRemoved {
                table: self.inner.table.clone(),
            };
            return fail(event, cause);
        }
        if !self.shared.is_accepting() {
            return fail(event, self.shared.refusal());
        }
        let ts = event.commit_ts();
        if let Event::Resolved(_) = event {
            let min_allowed = order.last_commit_ts.max(order.resolved);
            if ts < min_allowed {
                return fail(event, self.out_of_order(ts, min_allowed));
            }
            order.resolved = ts;
            self.inner.progress.resolved(ts);
            return Ok(());
        }
        // Rows of one transaction share a commit ts; a watermark promises nothing at or
        // below it comes later.
        let min_allowed = order
            .last_commit_ts
            .max(order.resolved.saturating_add((order.resolved > 0) as u64));
        if ts < min_allowed {
            return fail(event, self.out_of_order(ts, min_allowed));
        }
        let size = event.estimated_size();
        let limit = self.shared.quota.capacity();
        if size > limit {
            let cause = Error::EventTooLarge {
                table: self.inner.table.clone(),
                commit_ts: ts,
                size,
                limit,
            };
            return fail(event, cause);
        }
        let permit = match self.shared.quota.acquire(size, wait.deadline()) {
            Ok(permit) => permit,
            Err(Refused::Full) => return Err(TrySendError::Full(event)),
            Err(Refused::Closed) => return fail(event, self.shared.refusal()),
        };
        // Counted before it can be acknowledged; taken back if it never enters the queue.
        self.inner.progress.sent(ts);
        let item = Queued { event, permit };
        match send_unless_aborted(
            &self.inner.queue_tx,
            item,
            &self.inner.closing_rx,
            wait.deadline(),
        ) {
            Ok(()) => {
                order.last_commit_ts = ts;
                if let Some(pool) = &self.shared.pool {
                    pool.schedule(&self.inner);
                }
                Ok(())
            }
            Err((item, why)) => {
                self.inner.progress.unsent();
                match why {
                    Blocked::TimedOut => Err(TrySendError::Full(item.event)),
                    Blocked::Aborted | Blocked::Disconnected => {
                        fail(item.event, self.shared.refusal())
                    }
                }
            }
        }
    }

    fn out_of_order(&self, commit_ts: u64, min_allowed: u64) -> Error {
        Error::EventOutOfOrder {
            table: self.inner.table.clone(),
            commit_ts,
            min_allowed,
        }
    }
}

/// Runs when a `send` has released its table's order lock: on the pool, a stopped table
/// whose worker found the lock taken (it does not wait for it, see
/// [`PoolWorker::visit`]) is put back in the ready queue by the send that held it.
struct Leaving<'a>(&'a Dispatcher);

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        if let Some(pool) = &self.0.shared.pool {
            fence(Ordering::SeqCst);
            if self.0.inner.stopping.load(Ordering::SeqCst) {
                pool.schedule(&self.0.inner);
            }
        }
    }
}

/// Why [`send_unless_aborted`] handed its item back.
pub(crate) enum Blocked {
    /// The receiving side is gone.
    Disconnected,
    /// The abort line dropped first.
    Aborted,
    /// The deadline passed first.
    TimedOut,
}

/// Sends `item` on `tx`, blocking until there is room, unless `abort` disconnects or
/// `deadline` passes first; then the item is handed back with the reason.
pub(crate) fn send_unless_aborted<T>(
    tx: &Sender<T>,
    item: T,
    abort: &Receiver<()>,
    deadline: Option<Instant>,
) -> std::result::Result<(), (T, Blocked)> {
    // Fast path: room now (no select machinery, no allocation).
    let item = match tx.try_send(item) {
        Ok(()) => return Ok(()),
        Err(ChannelFull::Disconnected(item)) => return Err((item, Blocked::Disconnected)),
        Err(ChannelFull::Full(item)) => item,
    };
    if abort.try_recv() != Err(TryRecvError::Empty) {
        return Err((item, Blocked::Aborted));
    }
    let mut select = Select::new();
    let send_op = select.send(tx);
    let abort_op = select.recv(abort);
    let oper = match deadline {
        None => select.select(),
        Some(deadline) => match select.select_deadline(deadline) {
            Ok(oper) => oper,
            Err(_) => return Err((item, Blocked::TimedOut)),
        },
    };
    match oper.index() {
        i if i == send_op => oper
            .send(tx, item)
            .map_err(|e| (e.into_inner(), Blocked::Disconnected)),
        i => {
            debug_assert_eq!(i, abort_op);
            let _ = oper.recv(abort);
            Err((item, Blocked::Aborted))
        }
    }
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("table", &self.inner.table)
            .finish()
    }
}

/// The dispatcher thread's state.
struct Worker {
    shared: Arc<Shared>,
    inner: Arc<DispatcherShared>,
    queue_rx: Receiver<Queued>,
    stop_rx: Receiver<()>,
    sink_tx: Sender<Batch>,
    /// Dropped with the worker: tells `wait_exited` the thread is done.
    _exited: Option<Sender<()>>,
}

impl Worker {
    /// The thread body: any error or panic is handed to the watcher, which reports it
    /// and closes the changefeed.
    fn run(self) {
        let error = match catch_unwind(AssertUnwindSafe(|| self.work())) {
            Ok(Ok(())) => return,
            Ok(Err(error)) => error,
            Err(payload) => Error::DispatcherPanicked {
                table: self.inner.table.clone(),
                message: panic_text(&*payload),
            },
        };
        log::debug!("dispatcher of {} failed: {error}", self.inner.table);
        // Only the first fault matters; the channel holds one.
        let _ = self.shared.fault_tx.try_send(error);
    }

    /// Moves queued events to the sink until stopped. `Ok` is a clean stop.
    fn work(&self) -> Result<()> {
        let mut pending = VecDeque::with_capacity(MAX_BATCH_EVENTS);
        loop {
            if pending.is_empty() {
                let first = match self.queue_rx.try_recv() {
                    Ok(item) => item,
                    Err(_) => select! {
                        recv(self.queue_rx) -> item => match item {
                            Ok(item) => item,
                            Err(_) => return Ok(()),
                        },
                        recv(self.stop_rx) -> _ => return self.drain(pending),
                        recv(self.shared.abort_rx) -> _ => return Ok(()),
                    },
                };
                pending.push_back(first);
            }
            let batch = self.drainer().build(&mut pending)?;
            if !self.drainer().deliver(batch) {
                return Ok(());
            }
        }
    }

    /// On stop: delivers everything taken or queued, then seals the queue.
    fn drain(&self, mut pending: VecDeque<Queued>) -> Result<()> {
        loop {
            self.drainer().take_queued(&mut pending);
            while !pending.is_empty() {
                let batch = self.drainer().build(&mut pending)?;
                if !self.drainer().deliver(batch) {
                    return Ok(());
                }
            }
            // A send that passed its checks before the stop holds the order lock until
            // its event is queued (there is room now): wait for it, then look again.
            // Later sends see the changefeed closed or the dispatcher removed.
            let _order = self.inner.order.lock();
            if self.queue_rx.is_empty() {
                return Ok(());
            }
        }
    }

    fn drainer(&self) -> Drain<'_> {
        Drain {
            shared: &self.shared,
            table: &self.inner,
            queue_rx: &self.queue_rx,
            sink_tx: &self.sink_tx,
        }
    }
}

/// Encodes one table's queued events into batches and hands them to the sink channel:
/// what the dispatcher thread and the pool's workers both do.
struct Drain<'a> {
    shared: &'a Shared,
    table: &'a DispatcherShared,
    queue_rx: &'a Receiver<Queued>,
    sink_tx: &'a Sender<Batch>,
}

impl Drain<'_> {
    /// Moves what is queued right now into `pending`, up to [`MAX_BATCH_EVENTS`],
    /// without waiting.
    ///
    /// Taken all at once, before any is encoded: a producer blocked on the full queue
    /// is then woken once to a queue with room for many events, instead of once per
    /// event (waking for the one slot each encoded event frees, and blocking again).
    fn take_queued(&self, pending: &mut VecDeque<Queued>) {
        while pending.len() < MAX_BATCH_EVENTS {
            match self.queue_rx.try_recv() {
                Ok(item) => pending.push_back(item),
                Err(_) => break,
            }
        }
    }

    /// Encodes the events at the front of `pending` (topped up from the queue first,
    /// without waiting; never empty) into one batch. A DDL goes alone; events past the
    /// batch's limits stay in `pending` for the next one.
    fn build(&self, pending: &mut VecDeque<Queued>) -> Result<Batch> {
        self.take_queued(pending);
        let first = pending
            .pop_front()
            .expect("build is called with pending events");
        let ddl = matches!(first.event, Event::Ddl(_));
        // Most events encode to one message: sized once instead of grown step by step.
        let mut messages = Vec::with_capacity(if ddl { 1 } else { pending.len() + 1 });
        let mut permit = first.permit;
        let mut bytes = self.encode(&first.event, &mut messages)?;
        let mut events = 1;
        while !ddl && events < MAX_BATCH_EVENTS && bytes < MAX_BATCH_BYTES {
            match pending.front() {
                Some(item) if !matches!(item.event, Event::Ddl(_)) => {}
                _ => break,
            }
            let item = pending.pop_front().expect("looked at above");
            bytes += self.encode(&item.event, &mut messages)?;
            permit.merge(item.permit);
            events += 1;
        }
        permit.settle(bytes);
        Ok(Batch {
            table: self.table.table.clone(),
            messages,
            events,
            ddl,
            ack: Ack {
                progress: Arc::clone(&self.table.progress),
                events: events as u64,
                permit,
            },
        })
    }

    /// Encodes one event; returns the bytes its messages hold.
    fn encode(&self, event: &Event, out: &mut Vec<Message>) -> Result<usize> {
        let before = out.len();
        self.shared.encoder.encode(event, out)?;
        let size: usize = out[before..].iter().map(Message::charged_size).sum();
        let limit = self.shared.quota.capacity();
        if size > limit {
            return Err(Error::EventTooLarge {
                table: self.table.table.clone(),
                commit_ts: event.commit_ts(),
                size,
                limit,
            });
        }
        Ok(size)
    }

    /// Hands a batch to the sink channel; false once the changefeed is going down.
    fn deliver(&self, batch: Batch) -> bool {
        send_unless_aborted(self.sink_tx, batch, &self.shared.abort_rx, None).is_ok()
    }
}

/// A worker of the dispatcher pool: serves whichever table the ready queue hands it.
struct PoolWorker {
    shared: Arc<Shared>,
    ready_rx: Receiver<Option<Arc<DispatcherShared>>>,
    sink_tx: Sender<Batch>,
}

impl PoolWorker {
    /// Serves tables until told to exit (`None`, once every table is done after a
    /// close) or the abort line drops.
    fn run(self) {
        loop {
            let next = select! {
                recv(self.ready_rx) -> next => next,
                recv(self.shared.abort_rx) -> _ => return,
            };
            let Ok(Some(table)) = next else { return };
            if !self.visit(&table) {
                return;
            }
        }
    }

    /// Drains what `table` has queued (a run of up to [`MAX_BATCH_EVENTS`] events, all
    /// of it delivered), then puts it back in the ready queue, seals it after a stop, or
    /// lets it go idle. False once the changefeed is going down.
    fn visit(&self, table: &Arc<DispatcherShared>) -> bool {
        let drain = Drain {
            shared: &self.shared,
            table,
            queue_rx: &table.queue_rx,
            sink_tx: &self.sink_tx,
        };
        let served = catch_unwind(AssertUnwindSafe(|| -> Result<bool> {
            let mut pending = VecDeque::with_capacity(MAX_BATCH_EVENTS);
            drain.take_queued(&mut pending);
            while !pending.is_empty() {
                let batch = drain.build(&mut pending)?;
                if !drain.deliver(batch) {
                    return Ok(false);
                }
            }
            Ok(true)
        }));
        let error = match served {
            Ok(Ok(true)) => None,
            Ok(Ok(false)) => return false,
            Ok(Err(error)) => Some(error),
            Err(payload) => Some(Error::DispatcherPanicked {
                table: table.table.clone(),
                message: panic_text(&*payload),
            }),
        };
        if let Some(error) = error {
            log::debug!("dispatcher of {} failed: {error}", table.table);
            // Only the first fault matters; the channel holds one. The table stays
            // claimed (never served again); its senders stay blocked until released.
            let _ = self.shared.fault_tx.try_send(error);
            self.shared.table_done(table);
            return true;
        }
        let pool = self.shared.pool.as_ref().expect("a pool worker has a pool");
        if !table.queue_rx.is_empty() {
            // More came: behind the tables already waiting.
            pool.requeue(table);
        } else if table.stopping.load(Ordering::SeqCst) {
            // A send that passed its checks before the stop holds the order lock until
            // its event is queued. Not waited for here: it may be waiting for quota that
            // only other tables' deliveries free, and this worker may be the one to make
            // them. The send puts the table back as it leaves ([`Leaving`]).
            match table.order.try_lock() {
                Some(order) => {
                    let empty = table.queue_rx.is_empty();
                    drop(order);
                    if empty {
                        self.shared.table_done(table);
                    } else {
                        pool.requeue(table);
                    }
                }
                None => {
                    table.scheduled.store(false, Ordering::SeqCst);
                    fence(Ordering::SeqCst);
                    // Either the send that held the lock sees the table unclaimed and
                    // claims it, or this sees the lock free and claims it back.
                    if !table.order.is_locked() && table.claim() {
                        pool.requeue(table);
                    }
                }
            }
        } else if table.unclaim() {
            pool.requeue(table);
        }
        true
    }
}
