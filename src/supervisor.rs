//! The [`Supervisor`]: keeps one changefeed running across failures, the way TiCDC's
//! maintainer does.
//!
//! The program provides, once per changefeed, a way to build a fresh sink for each
//! attempt and a [`Feed`] that adds the dispatchers and pushes every event above a commit
//! ts. The supervisor's thread (`cf-<id>-supervisor`) runs attempts one after another:
//!
//! 1. build a sink (a failure counts like a sink error) and start a
//!    [`DispatcherManager`] from the last checkpoint;
//! 2. run the feed on its own thread (`cf-<id>-feed`) with that checkpoint as `from_ts`;
//! 3. follow the manager's heartbeats: the checkpoint, and the error if one comes;
//! 4. when the attempt fails: close the manager and join the feed — nothing of the
//!    attempt is left — then, for a retryable error, wait (exponential backoff with
//!    jitter, woken at once by [`Supervisor::stop`]) and go to 1; for an unretryable one,
//!    or after too long in Warning, stop in Failed.
//!
//! | state | meaning |
//! |---|---|
//! | `Normal` | running; since the last failure the checkpoint has moved past where the attempt started |
//! | `Warning { error, next_retry }` | the last attempt failed with a retryable error; retrying at `next_retry` (or already retrying, until the checkpoint moves) |
//! | `Failed { error }` | stopped for good: an unretryable error, or Warning for longer than `max_warning` |
//! | `Stopped` | stopped by [`Supervisor::stop`], or the feed's input ended and everything was acknowledged |
//!
//! Retryable or not is [`Error::is_retryable`] (the table in [`crate::error`]).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{bounded, select, Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use crate::deadline;
use crate::error::{Error, Result};
use crate::manager::{Builder, DispatcherManager};
use crate::shared::spawn;
use crate::sink::Sink;
use crate::status::HeartBeat;

/// Default first wait before a restart, as TiCDC's.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_secs(10);
/// Default growth of the wait after each failed attempt.
pub const DEFAULT_BACKOFF_MULTIPLIER: f64 = 2.0;
/// Default longest wait.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(600);
/// Default jitter: each wait is randomised by ± this fraction.
pub const DEFAULT_BACKOFF_JITTER: f64 = 0.1;
/// Default longest time in Warning before giving up (Failed).
pub const DEFAULT_MAX_WARNING: Duration = Duration::from_secs(24 * 3600);
/// Longest backoff accepted: waits are computed in `Duration` and must not overflow.
const MAX_BACKOFF: Duration = Duration::from_secs(30 * 24 * 3600);
/// Largest backoff multiplier accepted.
const MAX_BACKOFF_MULTIPLIER: f64 = 1000.0;
/// Capacity of the channel the supervisor reads its manager's heartbeats from.
const HEARTBEAT_CAPACITY: usize = 64;

/// What feeds a changefeed: adds its dispatchers and sends its events.
pub trait Feed: Send + 'static {
    /// Adds the dispatchers and sends every event with a commit ts above `from_ts`.
    /// Returns when the input ends (`Ok`), or when the manager closes (its sends fail:
    /// return then, with the error or `Ok`). Called once per attempt, on a thread the
    /// supervisor owns.
    fn run(&mut self, manager: &DispatcherManager, from_ts: u64) -> Result<()>;
}

/// Builds a fresh sink for each attempt.
pub type SinkFactory = Box<dyn FnMut() -> Result<Box<dyn Sink>> + Send>;

/// Where a supervised changefeed is.
#[derive(Clone, Debug)]
pub enum SupervisorState {
    /// Running normally.
    Normal,
    /// The last attempt failed with a retryable error; the next one starts at
    /// `next_retry`.
    Warning {
        /// The error that ended the last attempt.
        error: Error,
        /// When the next attempt starts.
        next_retry: SystemTime,
    },
    /// Stopped for good.
    Failed {
        /// Why.
        error: Error,
    },
    /// Stopped on request, or the feed's input ended and everything was acknowledged.
    Stopped,
}

impl SupervisorState {
    /// Whether the supervisor has ended (Failed or Stopped).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            SupervisorState::Failed { .. } | SupervisorState::Stopped
        )
    }
}

/// Configures a [`Supervisor`]; from [`Supervisor::builder`].
#[must_use = "a builder does nothing until `start`"]
pub struct SupervisorBuilder {
    changefeed: String,
    configure: Box<dyn Fn(Builder) -> Builder + Send>,
    start_ts: u64,
    backoff_initial: Duration,
    backoff_multiplier: f64,
    backoff_max: Duration,
    backoff_jitter: f64,
    max_warning: Duration,
    observer: Option<Sender<SupervisorState>>,
}

impl SupervisorBuilder {
    /// Settings applied to each attempt's [`DispatcherManager`] builder (capacities,
    /// quota, node, close timeout…). The supervisor sets the maintainer and `start_ts`.
    /// `start` checks them once, so bad ones are its error, naming the parameter.
    pub fn manager(mut self, configure: impl Fn(Builder) -> Builder + Send + 'static) -> Self {
        self.configure = Box::new(configure);
        self
    }

    /// The commit ts the first attempt starts from. Default 0.
    pub fn start_ts(mut self, ts: u64) -> Self {
        self.start_ts = ts;
        self
    }

    /// Backoff between attempts: the first wait, its growth per failed attempt, the
    /// longest wait, and the jitter fraction (each wait × (1 ± jitter), random).
    /// Defaults: 10 s, ×2, 10 min, 0.1.
    pub fn backoff(
        mut self,
        initial: Duration,
        multiplier: f64,
        max: Duration,
        jitter: f64,
    ) -> Self {
        self.backoff_initial = initial;
        self.backoff_multiplier = multiplier;
        self.backoff_max = max;
        self.backoff_jitter = jitter;
        self
    }

    /// Longest time in Warning before giving up. Default 24 h.
    pub fn max_warning(mut self, d: Duration) -> Self {
        self.max_warning = d;
        self
    }

    /// Receives every state change. Sent with `try_send`: a full channel drops it
    /// (the latest state is always in [`Supervisor::state`]).
    pub fn observer(mut self, tx: Sender<SupervisorState>) -> Self {
        self.observer = Some(tx);
        self
    }

    /// Starts the supervisor thread, which starts the first attempt.
    pub fn start(self, sinks: SinkFactory, feed: impl Feed) -> Result<Supervisor> {
        let invalid = |param, reason: &str| Err(Error::config(param, reason));
        if self.changefeed.trim().is_empty() {
            return invalid("changefeed_id", "must not be empty");
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return invalid("backoff", "initial must be positive and at most max");
        }
        if self.backoff_max > MAX_BACKOFF {
            return invalid("backoff", "max must be at most 30 days");
        }
        if !(1.0..=MAX_BACKOFF_MULTIPLIER).contains(&self.backoff_multiplier) {
            return invalid("backoff", "multiplier must be from 1 to 1000");
        }
        if !(0.0..1.0).contains(&self.backoff_jitter) {
            return invalid("backoff", "jitter must be in [0, 1)");
        }
        // The manager settings every attempt will use: refused here, naming the
        // parameter, rather than as the first attempt's failure.
        (self.configure)(DispatcherManager::builder(self.changefeed.clone())).validate()?;
        let shared = Arc::new(SupervisorShared {
            state: Mutex::new(SupervisorState::Normal),
            changed: Condvar::new(),
            checkpoint: Mutex::new(self.start_ts),
            observer: self.observer.clone(),
        });
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let name = format!("cf-{}-supervisor", self.changefeed);
        let runner = Runner {
            settings: self,
            shared: Arc::clone(&shared),
            stop: stop_rx,
            sinks,
            feed: Some(Box::new(feed)),
        };
        let thread = spawn(name, move || runner.run())?;
        Ok(Supervisor {
            shared,
            stop: Mutex::new(Some(stop_tx)),
            thread: Mutex::new(Some(thread)),
        })
    }
}

struct SupervisorShared {
    state: Mutex<SupervisorState>,
    changed: Condvar,
    checkpoint: Mutex<u64>,
    observer: Option<Sender<SupervisorState>>,
}

impl SupervisorShared {
    fn set(&self, state: SupervisorState) {
        log::info!("changefeed state: {state:?}");
        // Stored before it is announced: an observer that hears of a state and then
        // asks `state()` sees it.
        *self.state.lock() = state.clone();
        if let Some(o) = &self.observer {
            let _ = o.try_send(state);
        }
        self.changed.notify_all();
    }

    fn advance(&self, ts: u64) {
        let mut c = self.checkpoint.lock();
        *c = (*c).max(ts);
    }
}

/// Keeps one changefeed running across failures. See the module docs.
///
/// Dropping it stops it like [`stop`](Supervisor::stop).
pub struct Supervisor {
    shared: Arc<SupervisorShared>,
    stop: Mutex<Option<Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Supervisor {
    /// A builder for changefeed `changefeed_id`.
    pub fn builder(changefeed_id: impl Into<String>) -> SupervisorBuilder {
        SupervisorBuilder {
            changefeed: changefeed_id.into(),
            configure: Box::new(|b| b),
            start_ts: 0,
            backoff_initial: DEFAULT_BACKOFF_INITIAL,
            backoff_multiplier: DEFAULT_BACKOFF_MULTIPLIER,
            backoff_max: DEFAULT_BACKOFF_MAX,
            backoff_jitter: DEFAULT_BACKOFF_JITTER,
            max_warning: DEFAULT_MAX_WARNING,
            observer: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> SupervisorState {
        self.shared.state.lock().clone()
    }

    /// The last checkpoint reported by any attempt: where the next one starts.
    pub fn checkpoint_ts(&self) -> u64 {
        *self.shared.checkpoint.lock()
    }

    /// Blocks until the supervisor ends (Failed or Stopped) and returns that state.
    pub fn wait(&self) -> SupervisorState {
        let mut state = self.shared.state.lock();
        while !state.is_final() {
            self.shared.changed.wait(&mut state);
        }
        let s = state.clone();
        drop(state);
        self.join();
        s
    }

    /// Blocks until `pred` holds for the state, or `timeout` passes; the state then.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&SupervisorState) -> bool,
    ) -> SupervisorState {
        let deadline = deadline::after(timeout);
        let mut state = self.shared.state.lock();
        while !pred(&state) {
            let Some(deadline) = deadline else {
                self.shared.changed.wait(&mut state);
                continue;
            };
            if self
                .shared
                .changed
                .wait_until(&mut state, deadline)
                .timed_out()
            {
                break;
            }
        }
        state.clone()
    }

    /// Stops the changefeed: closes the current attempt (or cuts a backoff wait short),
    /// joins every thread, and returns the final state (Stopped, or Failed if it had
    /// already failed).
    pub fn stop(&self) -> SupervisorState {
        self.stop.lock().take();
        self.join();
        self.state()
    }

    fn join(&self) {
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How one attempt ended.
enum Ended {
    /// The feed's input ended and everything was flushed and closed.
    Done,
    /// Stop was asked for.
    Stopped,
    /// It failed.
    Failed(Error),
}

/// The supervisor thread's state.
struct Runner {
    settings: SupervisorBuilder,
    shared: Arc<SupervisorShared>,
    stop: Receiver<()>,
    sinks: SinkFactory,
    feed: Option<Box<dyn Feed>>,
}

impl Runner {
    fn run(mut self) {
        let mut wait = self.settings.backoff_initial;
        let mut warning_since: Option<Instant> = None;
        let mut rng = fastrand::Rng::new();
        loop {
            let from_ts = *self.shared.checkpoint.lock();
            let error = match self.attempt(from_ts, warning_since.is_some()) {
                Ended::Done | Ended::Stopped => {
                    self.shared.set(SupervisorState::Stopped);
                    return;
                }
                Ended::Failed(error) => error,
            };
            if *self.shared.checkpoint.lock() > from_ts {
                // The attempt made progress: the streak of failures starts again.
                warning_since = None;
                wait = self.settings.backoff_initial;
            }
            let since = *warning_since.get_or_insert_with(Instant::now);
            if !error.is_retryable() || since.elapsed() >= self.settings.max_warning {
                self.shared.set(SupervisorState::Failed { error });
                return;
            }
            // Bounded in `start` (max ≤ 30 days, multiplier ≤ 1000, jitter < 1): no
            // overflow here.
            let jitter = 1.0 + self.settings.backoff_jitter * (rng.f64() * 2.0 - 1.0);
            let this_wait = wait.mul_f64(jitter);
            self.shared.set(SupervisorState::Warning {
                error,
                next_retry: SystemTime::now() + this_wait,
            });
            wait = wait
                .mul_f64(self.settings.backoff_multiplier)
                .min(self.settings.backoff_max);
            // The wait ends early on stop.
            if self.stop.recv_timeout(this_wait).is_ok() || self.stopped() {
                self.shared.set(SupervisorState::Stopped);
                return;
            }
        }
    }

    fn stopped(&self) -> bool {
        matches!(
            self.stop.try_recv(),
            Err(crossbeam_channel::TryRecvError::Disconnected)
        )
    }

    /// One attempt from `from_ts`. Everything it starts is closed and joined before it
    /// returns.
    fn attempt(&mut self, from_ts: u64, warning: bool) -> Ended {
        let sink = match (self.sinks)() {
            Ok(sink) => sink,
            Err(e) => return Ended::Failed(e),
        };
        let (maintainer, heartbeats) = bounded::<HeartBeat>(HEARTBEAT_CAPACITY);
        let builder = DispatcherManager::builder(self.settings.changefeed.clone());
        let manager = match (self.settings.configure)(builder)
            .start_ts(from_ts)
            .maintainer(maintainer)
            .start(sink)
        {
            Ok(m) => Arc::new(m),
            Err(e) => return Ended::Failed(e),
        };
        let mut feed = self
            .feed
            .take()
            .expect("the feed is back after every attempt");
        let (feed_done_tx, feed_done) = bounded::<Result<()>>(1);
        let feed_thread = {
            let manager = Arc::clone(&manager);
            let name = format!("cf-{}-feed", self.settings.changefeed);
            spawn(name, move || {
                let r = feed.run(&manager, from_ts);
                let _ = feed_done_tx.send(r);
                feed
            })
        };
        let feed_thread = match feed_thread {
            Ok(t) => t,
            Err(e) => {
                let _ = manager.close();
                return Ended::Failed(e);
            }
        };
        let mut recovered = !warning;
        let ended = loop {
            select! {
                recv(heartbeats) -> hb => match hb {
                    Ok(hb) => {
                        self.shared.advance(hb.checkpoint_ts);
                        if let Some(e) = hb.error {
                            log::warn!("changefeed {}: {} {}", hb.changefeed, e.code, e.message);
                        }
                        if !recovered && hb.checkpoint_ts > from_ts {
                            recovered = true;
                            self.shared.set(SupervisorState::Normal);
                        }
                        if hb.closed {
                            break manager.wait().err().map_or(Ended::Done, Ended::Failed);
                        }
                    }
                    Err(_) => break manager.wait().err().map_or(Ended::Done, Ended::Failed),
                },
                recv(feed_done) -> r => match r {
                    Ok(Ok(())) => {
                        // Input ended: deliver what was sent, then close.
                        break match manager.close() {
                            Ok(()) => Ended::Done,
                            Err(e) => Ended::Failed(e),
                        };
                    }
                    Ok(Err(e)) => {
                        // The feed failed; if the manager failed first, that error is
                        // the one that counts.
                        let _ = manager.close();
                        break Ended::Failed(manager.wait().err().unwrap_or(e));
                    }
                    Err(_) => break Ended::Failed(Error::ChangefeedClosed),
                },
                recv(self.stop) -> _ => {
                    let _ = manager.close();
                    break Ended::Stopped;
                }
            }
        };
        // Nothing of the attempt stays behind: the manager closed, its threads joined,
        // the feed thread joined (its sends fail once the manager is closed).
        let _ = manager.close();
        match feed_thread.join() {
            Ok(feed) => self.feed = Some(feed),
            Err(payload) => {
                return Ended::Failed(Error::FeedPanicked {
                    message: crate::error::panic_text(&*payload),
                })
            }
        }
        self.shared.advance(manager.checkpoint_ts());
        if !recovered && manager.checkpoint_ts() > from_ts {
            self.shared.set(SupervisorState::Normal);
        }
        ended
    }
}
