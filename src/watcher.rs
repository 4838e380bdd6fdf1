//! The watcher thread: notices the end of the sink thread (or a dispatcher's failure),
//! reports it to the maintainer FIRST, and only THEN releases every sender.
//!
//! The order is the point. While the watcher reports, the sink channel is still
//! connected through the spare receiver (see `Lines` in `shared.rs`, where the whole close order is written out), so dispatchers
//! blocked on a full channel stay blocked — bounded, not buffering — and no producer
//! learns of the failure before the maintainer does: the watcher waits until the
//! maintainer has taken the report from its channel (at most
//! [`Builder::report_handoff`](crate::Builder::report_handoff)) before it releases.
//! Then `Shared::release` drops the abort line and the spare receiver: every blocked and
//! every later send fails at once, idle dispatchers wake, quota waiters wake, and the
//! memory the channels held is freed.

use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{select, Receiver};

use crate::error::{panic_text, Error, Result};
use crate::shared::{await_handoff, send_reliably, Shared};
use crate::status::RunningError;

/// How the sink thread's body ended, as the error to report (`None`: a clean return).
pub(crate) fn sink_outcome(ended: thread::Result<Result<()>>) -> Option<Error> {
    match ended {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error),
        Err(payload) => Some(Error::SinkPanicked {
            message: panic_text(&*payload),
        }),
    }
}

/// The watcher thread body. `sink_ended` carries how the sink thread's body ended, sent
/// as it ends; it disconnects without a message only if the thread unwound past that.
pub(crate) fn run(
    shared: Arc<Shared>,
    sink: JoinHandle<()>,
    sink_ended: Receiver<Option<Error>>,
    faults: Receiver<Error>,
    heartbeat: Option<JoinHandle<()>>,
) {
    let mut sink = Some(sink);
    let mut sink_running = true;
    let failure = select! {
        recv(sink_ended) -> ended => {
            sink_running = false;
            match ended {
                Ok(outcome) => outcome,
                Err(_) => joined(sink.take()),
            }
        }
        recv(faults) -> fault => fault.ok(),
    };
    if let Some(error) = shared.end(failure) {
        // 1. Report, while every sender is still held.
        log::error!("changefeed {} failed: {error}", shared.config.changefeed);
        let report = RunningError::new(&shared.config.node, &error);
        if send_reliably(&shared, shared.error_heartbeat(report)) && !await_handoff(&shared) {
            log::debug!(
                "changefeed {}: the maintainer had not taken the error report within the hand-off ({:?}), or a close released the senders first",
                shared.config.changefeed,
                shared.config.report_handoff
            );
        }
        shared.reported(error);
    }
    // 2. Release every sender, then join what was released.
    shared.release();
    shared.join_dispatchers();
    if sink_running {
        // Comes once the sink's current call returns (it quits on the abort line).
        let outcome = match sink_ended.recv() {
            Ok(outcome) => outcome,
            Err(_) => joined(sink.take()),
        };
        shared.end(outcome);
    }
    // A panic after the body (dropping the sink) still counts, during a close.
    if let Some(panic) = joined(sink.take()) {
        shared.end(Some(panic));
    }
    if let Some(heartbeat) = heartbeat {
        let _ = heartbeat.join();
    }
    // 3. The last heartbeat, then Closed.
    shared.finish(None);
}

/// Joins the sink thread (if not yet joined): a panic is its outcome.
fn joined(sink: Option<JoinHandle<()>>) -> Option<Error> {
    let payload = sink?.join().err()?;
    Some(Error::SinkPanicked {
        message: panic_text(&*payload),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_thread_that_unwinds_past_its_report_is_joined_for_the_panic() {
        let t = thread::spawn(|| panic!("dropping the sink"));
        let e = joined(Some(t)).unwrap();
        assert_eq!(e.to_string(), "sink panicked: dropping the sink");
        assert!(joined(Some(thread::spawn(|| ()))).is_none());
        assert!(joined(None).is_none());
    }

    #[test]
    fn sink_outcome_tells_clean_return_error_and_panic_apart() {
        assert!(sink_outcome(Ok(Ok(()))).is_none());
        let e = sink_outcome(Ok(Err(Error::SinkExited))).unwrap();
        assert_eq!(e.code(), "CDC:ErrSinkExited");
        let panicked = thread::spawn(|| -> Result<()> { panic!("disk on fire") }).join();
        let e = sink_outcome(panicked).unwrap();
        assert_eq!(e.code(), "CDC:ErrSinkPanicked");
        assert_eq!(e.to_string(), "sink panicked: disk on fire");
        let formatted = thread::spawn(|| -> Result<()> { panic!("batch {} of {}", 3, 4) }).join();
        assert!(sink_outcome(formatted)
            .unwrap()
            .to_string()
            .ends_with("batch 3 of 4"));
    }
}
