//! The heartbeat thread: a periodic [`HeartBeat`] to the maintainer. (The heartbeat
//! carrying the [`RunningError`] and the final `closed` one are sent by the close
//! protocol in `shared.rs`; the types are in `status.rs`.)
//!
//! [`RunningError`]: crate::RunningError

use std::sync::Arc;

use crossbeam_channel::{select, Receiver, Sender, TrySendError};

use crate::shared::Shared;
use crate::status::HeartBeat;

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
