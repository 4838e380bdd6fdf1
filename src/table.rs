//! One table's state that its [`Dispatcher`](crate::Dispatcher) handle, its dispatcher
//! thread and the close protocol share: the bounded queue, the order lock, progress and
//! the lines that stop it. Below every thread role, so the close protocol
//! (`shared.rs`) can hold it without importing the dispatcher thread.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;

use crate::event::{Event, TableName};
use crate::progress::Progress;
use crate::quota::Permit;
use crate::status::DispatcherStatus;

/// An event in a table's queue, with the quota it holds.
pub(crate) struct Queued {
    pub event: Event,
    pub permit: Permit,
}

/// What the handle and the thread of one dispatcher share.
pub(crate) struct DispatcherShared {
    pub table: TableName,
    pub progress: Arc<Progress>,
    pub queue_tx: Sender<Queued>,
    /// Held by a sender for its whole `send`, so one table's events enter the queue in
    /// the order they passed the checks; taken by the thread to seal the queue on close.
    pub order: Mutex<Order>,
    pub stop_tx: Mutex<Option<Sender<()>>>,
    /// Dropped when sends stop being accepted (close or failure): wakes a `send` blocked
    /// on the full queue, which hands its event back. One line per table, not one for
    /// the changefeed: a thousand senders woken from one channel would all queue on its
    /// lock to unregister.
    pub closing_tx: Mutex<Option<Sender<()>>>,
    pub closing_rx: Receiver<()>,
    pub removed: AtomicBool,
    /// Disconnects when the thread has exited (its sender lives in the thread), or, on
    /// the pool, when the table's queue was drained and sealed after a stop.
    pub exited: Receiver<()>,
    /// The pool's hold of `exited` (dropped when the table is done); `None` with a
    /// thread per dispatcher.
    pub exited_tx: Mutex<Option<Sender<()>>>,
    /// The queue's receiving end: the pool's workers drain it (a thread per dispatcher
    /// owns a clone), and it keeps the queue connected if the thread dies, so that its
    /// senders stay blocked until the watcher has reported and drops the abort line.
    pub queue_rx: Receiver<Queued>,
    /// On the pool: true while the table is in the ready queue or a worker serves it,
    /// so at most one worker drains it at a time (its events stay in order).
    pub scheduled: AtomicBool,
    /// Set by `stop`: drain the queue, seal it, be done.
    pub stopping: AtomicBool,
}

/// What `send` checks commit ts against.
#[derive(Default)]
pub(crate) struct Order {
    /// Highest commit ts of a row or DDL sent.
    pub last_commit_ts: u64,
    /// Highest watermark sent.
    pub resolved: u64,
}

impl DispatcherShared {
    /// One table's state with its queue of `capacity` events, starting at `start_ts`.
    /// Returns it, its queue's receiver, its stop line's receiver and the sender whose
    /// drop tells `wait_exited` (for a thread per dispatcher; the pool keeps it inside).
    pub fn new(
        table: TableName,
        capacity: usize,
        start_ts: u64,
        pooled: bool,
    ) -> (
        Arc<DispatcherShared>,
        Receiver<Queued>,
        Receiver<()>,
        Option<Sender<()>>,
    ) {
        let (queue_tx, queue_rx) = bounded(capacity);
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let (exited_tx, exited) = bounded::<()>(0);
        let (closing_tx, closing_rx) = bounded::<()>(0);
        let (held, returned) = if pooled {
            (Some(exited_tx), None)
        } else {
            (None, Some(exited_tx))
        };
        let inner = Arc::new(DispatcherShared {
            closing_tx: Mutex::new(Some(closing_tx)),
            closing_rx,
            exited,
            exited_tx: Mutex::new(held),
            progress: Progress::new(start_ts),
            table,
            queue_tx,
            queue_rx: queue_rx.clone(),
            order: Mutex::new(Order::default()),
            stop_tx: Mutex::new(Some(stop_tx)),
            removed: AtomicBool::new(false),
            scheduled: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        });
        (inner, queue_rx, stop_rx, returned)
    }

    /// Tells the thread (or the pool) to drain its queue and be done.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop_tx.lock().take();
    }

    /// On the pool: done (drained and sealed after a stop, failed, or released). Returns
    /// whether this call ended it.
    pub fn mark_exited(&self) -> bool {
        self.exited_tx.lock().take().is_some()
    }

    /// On the pool: claims the table for the ready queue. True when the caller must
    /// push it there (it was neither queued nor being served).
    pub fn claim(&self) -> bool {
        // Pairs with the fence in `unclaim`: either this sees the table unclaimed, or
        // the worker that unclaims it sees the event just queued (or the stop).
        fence(Ordering::SeqCst);
        !self.scheduled.load(Ordering::Relaxed)
            && self
                .scheduled
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
    }

    /// On the pool, after serving the table with its queue found empty: unclaims it.
    /// True when it has to be served again at once (an event or a stop came meanwhile)
    /// and the caller claimed it back.
    pub fn unclaim(&self) -> bool {
        self.scheduled.store(false, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        (!self.queue_rx.is_empty() || self.stopping.load(Ordering::SeqCst)) && self.claim()
    }

    /// Drops what the queue still holds (after a failure or a close timeout; sends are
    /// refused by then), returning its quota. Waits for a send in progress first —
    /// it is being woken — so that nothing it queues is left behind.
    pub fn release(&self) {
        let _order = self.order.lock();
        while self.queue_rx.try_recv().is_ok() {}
    }

    /// Wakes a send blocked on the full queue; it sees sends refused and hands its
    /// event back.
    pub fn wake_senders(&self) {
        self.closing_tx.lock().take();
    }

    pub fn remove(&self) {
        self.removed.store(true, Ordering::Release);
        self.stop();
    }

    /// Blocks until the thread has exited (after a stop, once its queue is handed over;
    /// at once after an abort).
    pub fn wait_exited(&self) {
        let _ = self.exited.recv();
    }

    pub fn status(&self) -> DispatcherStatus {
        DispatcherStatus {
            table: self.table.clone(),
            checkpoint_ts: self.progress.checkpoint_ts(),
            resolved_ts: self.progress.resolved_ts(),
            in_flight_events: self.progress.in_flight(),
            queue_depth: self.queue_tx.len(),
        }
    }
}
