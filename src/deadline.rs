//! Timeouts given by the program, turned into deadlines without overflow.

use std::time::{Duration, Instant};

/// The instant `timeout` from now, or `None` when that is too far to be a point in time
/// (`Duration::MAX` and the like): then there is no deadline, and the wait is for ever.
pub(crate) fn after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_too_far_is_no_deadline() {
        assert!(after(Duration::MAX).is_none());
        let soon = after(Duration::from_secs(1)).unwrap();
        assert!(soon > Instant::now());
    }
}
