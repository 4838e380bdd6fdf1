//! Per-dispatcher progress: which events are still unacknowledged, and the checkpoint
//! that follows from it.
//!
//! TiCDC's rule: a dispatcher's checkpoint is the commit ts of its earliest
//! unacknowledged event minus one, or, when nothing is in flight, its resolved ts (the
//! last watermark). We add one thing: with nothing in flight and no newer watermark, the
//! last acknowledged commit ts minus one also counts (rows of that transaction may still
//! come, so not the ts itself). The checkpoint never goes below the changefeed's
//! `start_ts`. Events count as in flight from `send` until the sink acknowledges them.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::quota::Permit;

/// Woken whenever some dispatcher's acknowledged count moves or the changefeed closes;
/// what `flush` waits on.
#[derive(Debug, Default)]
pub(crate) struct AckSignal {
    generation: Mutex<u64>,
    changed: Condvar,
}

impl AckSignal {
    pub fn notify(&self) {
        *self.generation.lock() += 1;
        self.changed.notify_all();
    }

    /// Runs `done` under the signal's lock until it returns `Some`, waiting for a
    /// notification between tries, or until `deadline`.
    pub fn wait_until<T>(
        &self,
        deadline: Option<std::time::Instant>,
        mut done: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let mut generation = self.generation.lock();
        loop {
            if let Some(t) = done() {
                return Some(t);
            }
            match deadline {
                None => self.changed.wait(&mut generation),
                Some(deadline) => {
                    if self
                        .changed
                        .wait_until(&mut generation, deadline)
                        .timed_out()
                    {
                        return done();
                    }
                }
            }
        }
    }
}

/// Progress of one dispatcher, shared by its handle (`send`), the sink thread (acks)
/// and the heartbeat.
#[derive(Debug)]
pub(crate) struct Progress {
    start_ts: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Commit ts of unacknowledged events, run-length encoded, in send order.
    unacked: VecDeque<(u64, u64)>,
    sent: u64,
    acked: u64,
    resolved: u64,
    last_acked_ts: u64,
}

impl Progress {
    pub fn new(start_ts: u64) -> Arc<Progress> {
        Arc::new(Progress {
            start_ts,
            state: Mutex::new(State::default()),
        })
    }

    /// Records an event as in flight.
    pub fn sent(&self, commit_ts: u64) {
        let mut s = self.state.lock();
        s.sent += 1;
        match s.unacked.back_mut() {
            Some((ts, n)) if *ts == commit_ts => *n += 1,
            _ => s.unacked.push_back((commit_ts, 1)),
        }
    }

    /// Takes back the last [`sent`](Progress::sent): the event never reached the queue.
    pub fn unsent(&self) {
        let mut s = self.state.lock();
        s.sent -= 1;
        if let Some((_, n)) = s.unacked.back_mut() {
            *n -= 1;
            if *n == 0 {
                s.unacked.pop_back();
            }
        }
    }

    /// Records a watermark.
    pub fn resolved(&self, ts: u64) {
        let mut s = self.state.lock();
        s.resolved = s.resolved.max(ts);
    }

    /// Acknowledges the oldest `events` in-flight events.
    pub fn ack(&self, mut events: u64) {
        let mut s = self.state.lock();
        s.acked += events;
        while events > 0 {
            let Some((ts, n)) = s.unacked.front_mut() else {
                debug_assert!(false, "ack of more events than were sent");
                break;
            };
            let take = events.min(*n);
            *n -= take;
            events -= take;
            let ts = *ts;
            if *n == 0 {
                s.unacked.pop_front();
            }
            s.last_acked_ts = s.last_acked_ts.max(ts);
        }
    }

    /// The checkpoint (see the module docs).
    pub fn checkpoint_ts(&self) -> u64 {
        let s = self.state.lock();
        let ts = match s.unacked.front() {
            Some((ts, _)) => ts.saturating_sub(1),
            None => s.resolved.max(s.last_acked_ts.saturating_sub(1)),
        };
        ts.max(self.start_ts)
    }

    /// The last watermark, at least `start_ts`.
    pub fn resolved_ts(&self) -> u64 {
        self.state.lock().resolved.max(self.start_ts)
    }

    /// Events sent so far.
    pub fn sent_count(&self) -> u64 {
        self.state.lock().sent
    }

    /// Events acknowledged so far.
    pub fn acked_count(&self) -> u64 {
        self.state.lock().acked
    }

    /// Events sent and not yet acknowledged.
    pub fn in_flight(&self) -> u64 {
        let s = self.state.lock();
        s.sent - s.acked
    }
}

/// What the sink thread does once a batch is delivered: advance its dispatcher and
/// release its memory. Dropping an `Ack` without [`complete`](Ack::complete) (a batch
/// lost with a closed channel) releases the memory and leaves the checkpoint behind.
#[derive(Debug)]
pub(crate) struct Ack {
    pub progress: Arc<Progress>,
    pub events: u64,
    pub permit: Permit,
}

impl Ack {
    /// Marks the batch acknowledged and returns its bytes to the quota.
    pub fn complete(self) {
        self.progress.ack(self.events);
        drop(self.permit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(start: u64) -> Arc<Progress> {
        Progress::new(start)
    }

    #[test]
    fn checkpoint_is_earliest_unacked_minus_one() {
        let p = progress(0);
        p.sent(10);
        p.sent(10);
        p.sent(20);
        assert_eq!(p.checkpoint_ts(), 9);
        p.ack(1);
        assert_eq!(
            p.checkpoint_ts(),
            9,
            "one event of ts 10 is still in flight"
        );
        p.ack(1);
        assert_eq!(p.checkpoint_ts(), 19);
        p.ack(1);
        assert_eq!(p.checkpoint_ts(), 19, "more rows of ts 20 may come");
        p.resolved(25);
        assert_eq!(p.checkpoint_ts(), 25);
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn watermark_does_not_pass_unacked_events() {
        let p = progress(0);
        p.sent(30);
        p.resolved(40);
        assert_eq!(p.checkpoint_ts(), 29);
        p.ack(1);
        assert_eq!(p.checkpoint_ts(), 40);
    }

    #[test]
    fn never_below_start_ts() {
        let p = progress(100);
        assert_eq!(p.checkpoint_ts(), 100);
        p.sent(50);
        assert_eq!(p.checkpoint_ts(), 100);
        assert_eq!(p.resolved_ts(), 100);
    }

    #[test]
    fn unsent_takes_back_the_last_event() {
        let p = progress(0);
        p.sent(5);
        p.sent(7);
        p.unsent();
        assert_eq!(p.in_flight(), 1);
        p.ack(1);
        assert_eq!(p.checkpoint_ts(), 4);
    }
}
