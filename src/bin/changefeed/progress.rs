//! The live progress line on stderr, and the numbers behind it.
//!
//! On a terminal the line is redrawn in place (`\r`, clear line) five times a second;
//! otherwise (a pipe, a log file) one `progress:` line is printed every second. Rates are
//! over the last second or so.

use std::collections::VecDeque;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use changefeed::{tso, Status};
use parking_lot::Mutex;

/// Redraw period on a terminal.
const TTY_EVERY: Duration = Duration::from_millis(200);
/// Log period elsewhere.
const LOG_EVERY: Duration = Duration::from_secs(1);
/// Rates are computed over about this long.
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// A checkpoint whose physical time is before this (2000-01-01) is not a wall-clock TSO
/// (a change log with small commit ts): no lag or time is shown for it.
const PLAUSIBLE_TSO_MS: u64 = 946_684_800_000;

/// The changefeed's numbers, as sampled: totals over every attempt, gauges of the
/// current one.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// Events (rows and DDL) acknowledged by the sink.
    pub events: u64,
    /// Message bytes acknowledged by the sink.
    pub bytes: u64,
    /// The checkpoint.
    pub checkpoint_ts: u64,
    /// Bytes between `send` and acknowledgement.
    pub in_flight_bytes: usize,
    /// Batches waiting in the sink channel.
    pub sink_queue_depth: usize,
}

/// Collects samples from each attempt (one without `--supervise`).
#[derive(Default)]
pub struct Meter {
    attempts: Mutex<Vec<Sample>>,
}

impl Meter {
    /// A new attempt; its index is what [`record`](Meter::record) takes.
    pub fn begin_attempt(&self) -> usize {
        let mut attempts = self.attempts.lock();
        let checkpoint_ts = attempts.last().map_or(0, |s| s.checkpoint_ts);
        attempts.push(Sample {
            checkpoint_ts,
            ..Sample::default()
        });
        attempts.len() - 1
    }

    pub fn record(&self, attempt: usize, status: &Status) {
        self.record_sample(
            attempt,
            Sample {
                events: status.events_acked,
                bytes: status.bytes_acked,
                checkpoint_ts: status.checkpoint_ts,
                in_flight_bytes: status.in_flight_bytes,
                sink_queue_depth: status.sink_queue_depth,
            },
        );
    }

    fn record_sample(&self, attempt: usize, sample: Sample) {
        let mut attempts = self.attempts.lock();
        let s = &mut attempts[attempt];
        s.events = s.events.max(sample.events);
        s.bytes = s.bytes.max(sample.bytes);
        s.checkpoint_ts = s.checkpoint_ts.max(sample.checkpoint_ts);
        s.in_flight_bytes = sample.in_flight_bytes;
        s.sink_queue_depth = sample.sink_queue_depth;
    }

    /// Acknowledged events and bytes over every attempt (what a restart sent again is
    /// counted again); the latest checkpoint and gauges.
    pub fn totals(&self) -> Sample {
        let attempts = self.attempts.lock();
        let mut total = attempts.last().copied().unwrap_or_default();
        total.events = attempts.iter().map(|s| s.events).sum();
        total.bytes = attempts.iter().map(|s| s.bytes).sum();
        total.checkpoint_ts = attempts.iter().map(|s| s.checkpoint_ts).max().unwrap_or(0);
        total
    }

    /// Attempts started.
    pub fn attempts(&self) -> usize {
        self.attempts.lock().len()
    }
}

/// Draws the progress line.
pub struct Progress {
    tty: bool,
    started: Instant,
    window: VecDeque<(Instant, u64, u64)>,
    drawn: bool,
}

impl Progress {
    pub fn new(tty: bool) -> Progress {
        let started = Instant::now();
        Progress {
            tty,
            started,
            window: VecDeque::from([(started, 0, 0)]),
            drawn: false,
        }
    }

    /// How often [`update`](Progress::update) should be called.
    pub fn interval(&self) -> Duration {
        if self.tty {
            TTY_EVERY
        } else {
            LOG_EVERY
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Draws (or logs) the line for `sample`.
    pub fn update(&mut self, sample: Sample) {
        let now = Instant::now();
        self.window.push_back((now, sample.events, sample.bytes));
        while self.window.len() > 2 && now - self.window[1].0 >= RATE_WINDOW {
            self.window.pop_front();
        }
        let (t0, e0, b0) = self.window[0];
        let span = (now - t0).as_secs_f64();
        let (rows_per_s, bytes_per_s) = if span > 0.0 {
            (
                sample.events.saturating_sub(e0) as f64 / span,
                sample.bytes.saturating_sub(b0) as f64 / span,
            )
        } else {
            (0.0, 0.0)
        };
        let line = format!(
            "{:>7}  {}  {} rows/s  {:.1} MB/s  checkpoint lag {}  sink queue {}  in flight {}",
            duration(self.elapsed()),
            rows(sample.events),
            count(rows_per_s as u64),
            bytes_per_s / 1e6,
            lag(sample.checkpoint_ts),
            sample.sink_queue_depth,
            bytes(sample.in_flight_bytes as u64),
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
            self.drawn = true;
        } else {
            let _ = writeln!(err, "progress: {line}");
        }
        let _ = err.flush();
    }

    /// Prints a message on its own line (clearing a drawn progress line first).
    pub fn note(&mut self, message: &str) {
        self.clear();
        eprintln!("{message}");
    }

    /// Clears a drawn progress line.
    pub fn clear(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
        }
    }
}

/// `1234567` → `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1 row`, `1,000 rows`.
pub fn rows(n: u64) -> String {
    if n == 1 {
        "1 row".to_string()
    } else {
        format!("{} rows", count(n))
    }
}

/// Bytes in decimal units: `512 B`, `12.3 kB`, `4.5 MB`, `1.2 GB`.
pub fn bytes(n: u64) -> String {
    let n = n as f64;
    if n < 1e3 {
        format!("{n} B")
    } else if n < 1e6 {
        format!("{:.1} kB", n / 1e3)
    } else if n < 1e9 {
        format!("{:.1} MB", n / 1e6)
    } else {
        format!("{:.2} GB", n / 1e9)
    }
}

/// `0.25s`, `12.3s`, `4m05s`, `1h02m`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.2}s")
    } else if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    } else {
        format!("{}h{:02}m", d.as_secs() / 3600, d.as_secs() / 60 % 60)
    }
}

/// Whether a commit ts reads as a wall-clock TSO.
fn plausible(ts: u64) -> bool {
    tso::physical_millis(ts) >= PLAUSIBLE_TSO_MS
}

/// Now minus the checkpoint's physical time, or `-`.
fn lag(checkpoint_ts: u64) -> String {
    if !plausible(checkpoint_ts) {
        return "-".to_string();
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let lag = now_ms.saturating_sub(tso::physical_millis(checkpoint_ts));
    duration(Duration::from_millis(lag))
}

/// `463…` with its wall-clock time when it is a TSO: `463… (2026-11-26T03:29:22.123Z)`.
pub fn checkpoint(ts: u64) -> String {
    if ts == 0 {
        "0 (nothing acknowledged)".to_string()
    } else if plausible(ts) {
        format!(
            "{ts} ({})",
            humantime::format_rfc3339_millis(tso::to_system_time(ts))
        )
    } else {
        ts.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(800_000), "800,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(4_500_000), "4.5 MB");
        assert_eq!(duration(Duration::from_millis(250)), "0.25s");
        assert_eq!(duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(checkpoint(0), "0 (nothing acknowledged)");
        assert_eq!(checkpoint(42), "42");
        let ts = tso::compose(1_764_127_762_123, 5);
        assert_eq!(checkpoint(ts), format!("{ts} (2025-11-26T03:29:22.123Z)"));
        assert_eq!(lag(42), "-");
    }

    #[test]
    fn meter_sums_attempts() {
        let m = Meter::default();
        let status = |events, bytes, checkpoint_ts| Sample {
            events,
            bytes,
            checkpoint_ts,
            in_flight_bytes: 7,
            sink_queue_depth: 3,
        };
        let a = m.begin_attempt();
        m.record_sample(a, status(10, 100, 50));
        let b = m.begin_attempt();
        m.record_sample(b, status(5, 40, 60));
        let t = m.totals();
        assert_eq!((t.events, t.bytes, t.checkpoint_ts), (15, 140, 60));
        assert_eq!((t.in_flight_bytes, t.sink_queue_depth), (7, 3));
        assert_eq!(m.attempts(), 2);
    }
}
