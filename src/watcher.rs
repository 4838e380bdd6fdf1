//! The watcher thread: notices the end of the sink thread (or a dispatcher's failure),
//! reports it to the maintainer FIRST, and only THEN releases every sender.
//!
//! The order is the point. While the watcher reports, the sink channel is still
//! connected through the spare receiver (see `Lines` in the manager), so dispatchers
//! blocked on a full channel stay blocked — bounded, not buffering — and no producer
//! learns of the failure before the maintainer does. Then `Shared::release` drops the
//! abort line and the spare receiver: every blocked and every later send fails at once,
//! idle dispatchers wake, quota waiters wake, and the memory the channels held is freed.

use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{select, Receiver};

use crate::error::{panic_text, Error, Result};
use crate::heartbeat::{self, RunningError};
use crate::manager::Shared;

/// How the sink thread ended, as the error to report (`None`: a clean return).
fn sink_outcome(joined: thread::Result<Result<()>>) -> Option<Error> {
    match joined {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error),
        Err(payload) => Some(Error::SinkPanicked {
            message: panic_text(&*payload),
        }),
    }
}

/// The watcher thread body.
pub(crate) fn run(
    shared: Arc<Shared>,
    sink: JoinHandle<Result<()>>,
    sink_exited: Receiver<()>,
    faults: Receiver<Error>,
    heartbeat: Option<JoinHandle<()>>,
) {
    let mut sink = Some(sink);
    let failure = select! {
        recv(sink_exited) -> _ => sink.take().map(|s| sink_outcome(s.join())).unwrap_or(None),
        recv(faults) -> fault => fault.ok(),
    };
    if let Some(error) = shared.end(failure) {
        // 1. Report, while every sender is still held.
        log::error!("changefeed {} failed: {error}", shared.config.changefeed);
        let report = RunningError::new(&shared.config.node, &error);
        heartbeat::send_reliably(&shared, shared.heartbeat(Some(report), false));
        shared.reported(error);
    }
    // 2. Release every sender, then join what was released.
    shared.release();
    shared.join_dispatchers();
    if let Some(sink) = sink {
        // Returns once the sink's current call does (it quits on the abort line).
        let _ = sink_exited.recv();
        let failure = sink_outcome(sink.join());
        shared.end(failure);
    }
    if let Some(heartbeat) = heartbeat {
        let _ = heartbeat.join();
    }
    // 3. The last heartbeat, then Closed.
    shared.finish(None);
}

#[cfg(test)]
mod tests {
    use super::*;

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
