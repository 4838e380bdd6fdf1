//! Commit timestamps as TiDB-style TSOs.
//!
//! A TSO packs a wall-clock time and a counter into one `u64`:
//! `physical milliseconds since the Unix epoch << 18 | logical`. Encoders read a commit
//! ts this way wherever a protocol wants milliseconds (canal-json's `es`, debezium's
//! `source.ts_ms`). Commit ts values that are not TSOs still work everywhere else; only
//! those millisecond fields would be meaningless.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bits of a TSO that hold the logical counter.
pub const LOGICAL_BITS: u32 = 18;

/// A TSO from physical milliseconds since the Unix epoch and a logical counter
/// (the counter is cut to its 18 bits).
pub fn compose(physical_ms: u64, logical: u64) -> u64 {
    (physical_ms << LOGICAL_BITS) | (logical & ((1 << LOGICAL_BITS) - 1))
}

/// The TSO of a wall-clock time, with logical counter 0 (times before 1970 give 0).
pub fn from_system_time(time: SystemTime) -> u64 {
    let ms = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64;
    compose(ms, 0)
}

/// The TSO of the current wall-clock time.
pub fn now() -> u64 {
    from_system_time(SystemTime::now())
}

/// The physical part of a TSO: milliseconds since the Unix epoch.
pub fn physical_millis(ts: u64) -> u64 {
    ts >> LOGICAL_BITS
}

/// The wall-clock time of a TSO's physical part.
pub fn to_system_time(ts: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(physical_millis(ts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_milliseconds() {
        let t = UNIX_EPOCH + Duration::from_millis(1_764_127_762_123);
        let ts = from_system_time(t);
        assert_eq!(physical_millis(ts), 1_764_127_762_123);
        assert_eq!(to_system_time(ts), t);
        assert_eq!(physical_millis(compose(5, 7)), 5);
        assert_eq!(compose(5, 7) & ((1 << LOGICAL_BITS) - 1), 7);
    }
}
