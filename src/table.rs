//! One table's state that its [`Dispatcher`](crate::Dispatcher) handle, its dispatcher
//! thread and the close protocol share: the bounded queue, the order lock, progress and
//! the lines that stop it. Below every thread role, so the close protocol
//! (`shared.rs`) can hold it without importing the dispatcher thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
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
    /// Keeps the queue connected if the thread dies, so that its senders stay blocked
    /// until the watcher has reported and drops the abort line.
    pub spare_rx: Mutex<Option<Receiver<Queued>>>,
    pub stop_tx: Mutex<Option<Sender<()>>>,
    /// Dropped when sends stop being accepted (close or failure): wakes a `send` blocked
    /// on the full queue, which hands its event back. One line per table, not one for
    /// the changefeed: a thousand senders woken from one channel would all queue on its
    /// lock to unregister.
    pub closing_tx: Mutex<Option<Sender<()>>>,
    pub closing_rx: Receiver<()>,
    pub removed: AtomicBool,
    /// Disconnects when the thread has exited (its sender lives in the thread).
    pub exited: Receiver<()>,
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
    /// Tells the thread to drain its queue and exit.
    pub fn stop(&self) {
        self.stop_tx.lock().take();
    }

    /// Drops the spare receiver and what the queue still holds (after a failure or a
    /// close timeout; sends are refused by then). Waits for a send in progress first —
    /// it is being woken — so that nothing it queues is left behind.
    pub fn release(&self) {
        let _order = self.order.lock();
        if let Some(spare) = self.spare_rx.lock().take() {
            while spare.try_recv().is_ok() {}
        }
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
