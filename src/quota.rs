//! The memory quota: a byte budget for everything between `send` and acknowledgement.
//!
//! `send` takes a [`Permit`] for the event's estimated size before queueing it; the
//! permit travels with the event into its batch and is released when it is dropped:
//! after the sink acknowledged the batch, or when a closed channel drops what it held.
//! So the quota is fully returned after close whatever path the events took.
//!
//! Waiting for quota blocks like a full channel; [`Quota::close`] wakes every waiter.
//!
//! Waiters are woken one at a time, and only once a [`WAKE_SHARE`]th of the quota (or
//! what the largest waiter asks for, if more) is free again, not on every release: a
//! woken waiter that got its bytes wakes the next one if that much is still free. So a
//! producer, once woken, usually sends a run of events before it waits again; with
//! hundreds of producers waiting, waking them all for each acknowledged batch would let
//! each send one or two events per wake-up and spend the CPU on context switches.
//! Meanwhile a new blocking acquisition queues behind the waiters instead of taking the
//! bytes they wait for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// A byte budget shared by every dispatcher of one changefeed.
#[derive(Debug)]
pub(crate) struct Quota {
    capacity: usize,
    state: Mutex<State>,
    freed: Condvar,
    waits: AtomicU64,
}

/// Waiters are woken once `capacity / WAKE_SHARE` bytes are free.
pub(crate) const WAKE_SHARE: usize = 16;

#[derive(Debug)]
struct State {
    used: usize,
    closed: bool,
    /// Blocking acquisitions waiting now.
    waiting: usize,
    /// The largest of their requests (kept until no one waits).
    largest_wait: usize,
}

impl State {
    /// Whether enough is free to wake the waiters.
    fn wakes_waiters(&self, capacity: usize) -> bool {
        let enough = (capacity / WAKE_SHARE).max(self.largest_wait).min(capacity);
        self.waiting > 0 && capacity.saturating_sub(self.used) >= enough
    }
}

/// Why no permit was granted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The quota was closed.
    Closed,
    /// The deadline passed (or there was none to wait for).
    Full,
}

impl Quota {
    pub fn new(capacity: usize) -> Arc<Quota> {
        Arc::new(Quota {
            capacity,
            state: Mutex::new(State {
                used: 0,
                closed: false,
                waiting: 0,
                largest_wait: 0,
            }),
            freed: Condvar::new(),
            waits: AtomicU64::new(0),
        })
    }

    /// The whole budget in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes held by live permits.
    pub fn used(&self) -> usize {
        self.state.lock().used
    }

    /// How many acquisitions had to wait.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Takes `bytes` (at most the capacity), waiting until `deadline` (`None`: forever)
    /// for others to release. A deadline already passed makes it a try.
    pub fn acquire(
        self: &Arc<Self>,
        bytes: usize,
        deadline: Option<Instant>,
    ) -> Result<Permit, Refused> {
        debug_assert!(bytes <= self.capacity);
        let mut state = self.state.lock();
        if state.closed {
            return Err(Refused::Closed);
        }
        let fits = |state: &State| state.used + bytes <= self.capacity;
        let blocking = deadline.is_none_or(|d| d > Instant::now());
        // A blocking acquisition queues behind those already waiting, unless enough is
        // free that they would be woken anyway; a try takes what is free.
        let queue_behind = blocking && state.waiting > 0 && !state.wakes_waiters(self.capacity);
        if fits(&state) && !queue_behind {
            return Ok(self.grant(&mut state, bytes));
        }
        if !blocking {
            self.waits.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Full);
        }
        self.waits.fetch_add(1, Ordering::Relaxed);
        state.waiting += 1;
        state.largest_wait = state.largest_wait.max(bytes);
        let outcome = loop {
            let timed_out = match deadline {
                None => {
                    self.freed.wait(&mut state);
                    false
                }
                Some(deadline) => self.freed.wait_until(&mut state, deadline).timed_out(),
            };
            if state.closed {
                break Err(Refused::Closed);
            }
            // Woken (or out of time, when a release may have raced the timeout).
            if fits(&state) {
                break Ok(());
            }
            if timed_out {
                break Err(Refused::Full);
            }
        };
        state.waiting -= 1;
        if state.waiting == 0 {
            state.largest_wait = 0;
        }
        let permit = outcome.map(|()| self.grant(&mut state, bytes))?;
        // Pass the wake-up on while enough is free.
        if state.wakes_waiters(self.capacity) {
            drop(state);
            self.freed.notify_one();
        }
        Ok(permit)
    }

    fn grant(self: &Arc<Self>, state: &mut State, bytes: usize) -> Permit {
        state.used += bytes;
        Permit {
            quota: Arc::clone(self),
            bytes,
        }
    }

    /// Refuses every later acquisition and wakes every waiter. Permits still release.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.freed.notify_all();
    }

    fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let mut state = self.state.lock();
        state.used -= bytes;
        let wake = state.wakes_waiters(self.capacity);
        drop(state);
        if wake {
            self.freed.notify_one();
        }
    }

    fn grow(&self, bytes: usize) {
        self.state.lock().used += bytes;
    }
}

/// Bytes held against a [`Quota`]; released on drop.
#[derive(Debug)]
pub(crate) struct Permit {
    quota: Arc<Quota>,
    bytes: usize,
}

impl Permit {
    /// Folds `other` into this permit (both must be of the same quota).
    pub fn merge(&mut self, mut other: Permit) {
        debug_assert!(Arc::ptr_eq(&self.quota, &other.quota));
        self.bytes += std::mem::take(&mut other.bytes);
    }

    /// Settles the permit to `bytes` without waiting: shrinking releases the difference,
    /// growing takes it even past the capacity. Growing never blocks, because the
    /// dispatcher that settles may itself hold the permits others wait for; the overshoot
    /// is at most one batch's encoding growth.
    pub fn settle(&mut self, bytes: usize) {
        if bytes < self.bytes {
            self.quota.release(self.bytes - bytes);
        } else {
            self.quota.grow(bytes - self.bytes);
        }
        self.bytes = bytes;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.quota.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;
    use std::time::Duration;

    #[test]
    fn permits_return_bytes_on_drop() {
        let q = Quota::new(100);
        let a = q.acquire(60, None).unwrap();
        let mut b = q.acquire(40, None).unwrap();
        assert_eq!(q.used(), 100);
        b.settle(10);
        assert_eq!(q.used(), 70);
        b.settle(50);
        assert_eq!(q.used(), 110, "settling up may overshoot");
        drop(a);
        b.merge(q.acquire(5, None).unwrap());
        assert_eq!(q.used(), 55);
        drop(b);
        assert_eq!(q.used(), 0);
    }

    #[test]
    fn full_quota_is_refused_without_waiting_when_deadline_passed() {
        let q = Quota::new(10);
        let _held = q.acquire(10, None).unwrap();
        assert_eq!(
            q.acquire(1, Some(Instant::now())).unwrap_err(),
            Refused::Full
        );
        assert_eq!(q.waits(), 1);
    }

    #[test]
    fn waiter_wakes_when_bytes_are_released() {
        let q = Quota::new(10);
        let held = q.acquire(10, None).unwrap();
        let q2 = Arc::clone(&q);
        let waiter = thread::spawn(move || q2.acquire(4, None).map(|p| p.bytes));
        while q.waits() == 0 {
            thread::yield_now();
        }
        drop(held);
        assert_eq!(waiter.join().unwrap(), Ok(4));
    }

    #[test]
    fn waiters_wake_once_a_share_or_the_largest_request_is_free() {
        let state = |used, waiting, largest_wait| State {
            used,
            closed: false,
            waiting,
            largest_wait,
        };
        // 1600 bytes: waiters wake once 100 are free.
        assert!(!state(1550, 1, 10).wakes_waiters(1600));
        assert!(state(1500, 1, 10).wakes_waiters(1600));
        // A larger request raises the bar to itself...
        assert!(!state(1400, 2, 300).wakes_waiters(1600));
        assert!(state(1300, 2, 300).wakes_waiters(1600));
        // ...up to the whole quota, which an empty quota always meets.
        assert!(state(0, 1, 5000).wakes_waiters(1600));
        // No one to wake.
        assert!(!state(0, 0, 0).wakes_waiters(1600));
    }

    #[test]
    fn blocked_acquisitions_all_complete_as_permits_drop() {
        // 8 threads each take 200-byte permits 50 times from a 1000-byte quota; the
        // main thread's permit keeps it full at first. Every acquisition completes.
        let q = Quota::new(1000);
        let held = q.acquire(1000, None).unwrap();
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let q = Arc::clone(&q);
                thread::spawn(move || {
                    for _ in 0..50 {
                        let _p = q.acquire(200, None).expect("never closed");
                        thread::yield_now();
                    }
                })
            })
            .collect();
        while q.waits() < 8 {
            thread::yield_now();
        }
        drop(held);
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(q.used(), 0);
    }

    #[test]
    fn a_waiter_for_more_than_a_share_is_woken() {
        let q = Quota::new(1600);
        let held = q.acquire(1600, None).unwrap();
        let q2 = Arc::clone(&q);
        let waiter = thread::spawn(move || q2.acquire(1200, None).map(|p| p.bytes));
        while q.waits() == 0 {
            thread::yield_now();
        }
        drop(held);
        assert_eq!(waiter.join().unwrap(), Ok(1200));
    }

    #[test]
    fn close_wakes_every_waiter() {
        let q = Quota::new(10);
        let _held = q.acquire(10, None).unwrap();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let q = Arc::clone(&q);
                thread::spawn(move || q.acquire(1, None).map(|p| p.bytes))
            })
            .collect();
        while q.waits() < 4 {
            thread::yield_now();
        }
        q.close();
        for w in waiters {
            assert_eq!(w.join().unwrap(), Err(Refused::Closed));
        }
        assert_eq!(
            q.acquire(1, Some(Instant::now() + Duration::from_secs(5)))
                .unwrap_err(),
            Refused::Closed
        );
    }
}
