//! What a changefeed says about itself: the [`HeartBeat`]s the maintainer receives
//! (with the [`RunningError`] and each [`DispatcherStatus`]) and the [`Status`] snapshot
//! of [`DispatcherManager::status`](crate::DispatcherManager::status). Data only, below
//! every thread role.

use std::time::SystemTime;

use serde::Serialize;

use crate::error::Error;
use crate::event::TableName;

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
    /// [`REPORT_TIMEOUT`](crate::REPORT_TIMEOUT)), the close releases the senders itself, and its `closed`
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

/// A snapshot of a changefeed, from
/// [`DispatcherManager::status`](crate::DispatcherManager::status).
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
