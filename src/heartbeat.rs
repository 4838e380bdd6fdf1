//! What the maintainer hears: periodic [`HeartBeat`]s, the one carrying a
//! [`RunningError`], and the final `closed` one. Also the heartbeat thread.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{select, Receiver, SendTimeoutError, Sender, TrySendError};
use serde::Serialize;

use crate::deadline;
use crate::error::Error;
use crate::event::TableName;
use crate::manager::Shared;

/// How long the error heartbeat and the final `closed` heartbeat may wait for room in a
/// full maintainer channel before they are counted as dropped.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// A changefeed's status, sent to the maintainer every heartbeat interval.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeartBeat {
    /// The changefeed id.
    pub changefeed: String,
    /// The node this manager runs on.
    pub node: String,
    /// Everything at or below this commit ts has been acknowledged by the sink: the
    /// minimum over dispatchers, never below the changefeed's `start_ts`.
    pub checkpoint_ts: u64,
    /// The minimum over dispatchers of their last watermark.
    pub resolved_ts: u64,
    /// Each dispatcher's status; empty in the error heartbeat.
    pub dispatchers: Vec<DispatcherStatus>,
    /// The error that stopped the changefeed. Set in exactly one heartbeat, sent before
    /// any sender is released, and as soon as the failure is seen: that heartbeat
    /// carries the checkpoint and watermark last computed (never ahead of the truth) and
    /// no dispatcher statuses. The final `closed` heartbeat has the exact ones, and is the
    /// only heartbeat after it.
    ///
    /// One exception to both orders: when the maintainer channel is full and a `close`
    /// times out while the error heartbeat still waits for room (at most
    /// [`REPORT_TIMEOUT`]), the close releases the senders itself, and its `closed`
    /// heartbeat competes for the same room, so it may come first.
    pub error: Option<RunningError>,
    /// Set in the last heartbeat, once every thread has stopped.
    pub closed: bool,
}

/// The error that stopped a running changefeed, as the maintainer receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunningError {
    /// When it was seen: RFC 3339 UTC with nanoseconds, e.g. `2026-11-26T03:29:22.123456789Z`.
    pub time: String,
    /// The node it happened on.
    pub node: String,
    /// The error's [`code`](Error::code), e.g. `CDC:ErrSinkIO`.
    pub code: String,
    /// The error's text.
    pub message: String,
}

impl RunningError {
    /// The report of `error` on `node`, stamped now.
    pub fn new(node: &str, error: &Error) -> RunningError {
        RunningError {
            time: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
            node: node.to_string(),
            code: error.code().to_string(),
            message: error.to_string(),
        }
    }
}

/// One dispatcher's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DispatcherStatus {
    /// Its table.
    pub table: TableName,
    /// Its checkpoint (see [`HeartBeat::checkpoint_ts`]).
    pub checkpoint_ts: u64,
    /// Its last watermark, at least `start_ts`.
    pub resolved_ts: u64,
    /// Events sent and not yet acknowledged.
    pub in_flight_events: u64,
    /// Events waiting in its queue for the dispatcher thread.
    pub queue_depth: usize,
}

/// The heartbeat thread: one heartbeat per interval until `stop` disconnects.
/// Periodic heartbeats never block: a full maintainer channel drops them (counted).
/// None goes out once a failure is being reported: after the error heartbeat comes only
/// the final one.
pub(crate) fn run(shared: Arc<Shared>, maintainer: Sender<HeartBeat>, stop: Receiver<()>) {
    let interval = shared.config.heartbeat_interval;
    loop {
        select! {
            recv(stop) -> _ => return,
            default(interval) => {
                match shared.send_periodic(&maintainer, shared.heartbeat(None, false)) {
                    Some(Ok(())) => shared.counters.heartbeats_sent.inc(),
                    Some(Err(TrySendError::Full(_))) => shared.counters.heartbeats_dropped.inc(),
                    // Nobody listens any more; keep computing status for `status()` only.
                    Some(Err(TrySendError::Disconnected(_))) => return,
                    // After the error heartbeat only the final one goes out.
                    None => {}
                }
            }
        }
    }
}

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
