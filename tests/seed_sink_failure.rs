//! The seed (TiCDC #4064): the sink dies while 64 dispatchers push. The maintainer
//! hears of it exactly once, before any producer is released; then every push fails,
//! every engine thread is gone, and producers that keep pushing only get errors while
//! in-flight bytes stay at 0 and the process's memory stays flat.
//!
//! Its own test binary: it measures process-wide threads and memory.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use changefeed::DispatcherManager;
use common::*;
use crossbeam_channel::bounded;

const DISPATCHERS: usize = 64;
/// How long to watch that nobody is released while the report is undelivered.
const REPORT_WINDOW: Duration = Duration::from_millis(500);
/// How long producers keep pushing after the failure.
const PUSH_AFTER: Duration = Duration::from_secs(2);
/// RSS growth tolerated over that window: allocator noise, far below what buffering
/// 2 s of 64 producers' events would take.
const RSS_SLACK: u64 = 4 << 20;

#[test]
fn sink_failure_is_reported_first_then_everything_stops() {
    let (sink, control) = FaultSink::failing(40, Fault::Error);
    // One slot: periodic heartbeats fill it, so the error heartbeat has to wait until
    // the test reads, which lets it watch what happens meanwhile.
    let (maintainer, heartbeats) = bounded(1);
    let manager = DispatcherManager::builder("seed")
        .maintainer(maintainer)
        .heartbeat_interval(Duration::from_millis(10))
        .channel_capacity(16)
        .dispatcher_capacity(64)
        .memory_quota(8 << 20)
        .start(sink)
        .unwrap();

    // Wait for a periodic heartbeat to fill the slot before anything can fail.
    let deadline = Instant::now() + HANG_GUARD;
    while !heartbeats.is_full() {
        assert!(Instant::now() < deadline, "no heartbeat");
        std::thread::sleep(Duration::from_millis(1));
    }
    let refused = Arc::new(AtomicU64::new(0));
    let stop_pushing = Arc::new(AtomicBool::new(false));
    let (first_refusal_tx, first_refusals) = bounded(DISPATCHERS);
    let dispatchers: Vec<_> = (0..DISPATCHERS)
        .map(|i| manager.add_dispatcher(table(i)).unwrap())
        .collect();
    let pushers: Vec<_> = dispatchers
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let refused = Arc::clone(&refused);
            let stop = Arc::clone(&stop_pushing);
            let first_refusal_tx = first_refusal_tx.clone();
            std::thread::spawn(move || {
                let mut first = true;
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    if let Err(e) = d.send(row(&table(i), seq, seq, 200)) {
                        refused.fetch_add(1, Ordering::SeqCst);
                        if first {
                            first = false;
                            first_refusal_tx.send(e.cause.to_string()).unwrap();
                        }
                    }
                }
            })
        })
        .collect();

    control
        .fired
        .recv_timeout(HANG_GUARD)
        .expect("the sink never failed");
    // The sink thread is gone, the channels are full: producers must stay blocked
    // until the maintainer has the report.
    let watch_until = Instant::now() + REPORT_WINDOW;
    while Instant::now() < watch_until {
        assert_eq!(
            refused.load(Ordering::SeqCst),
            0,
            "a producer was released before the report: {:?}",
            first_refusals.try_recv()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(manager.status().in_flight_bytes > 0, "the pipeline is full");

    let mut reports = Vec::new();
    while reports.is_empty() {
        let hb = heartbeats
            .recv_timeout(HANG_GUARD)
            .expect("no error heartbeat");
        reports.extend(hb.error);
    }
    for _ in 0..DISPATCHERS {
        let cause = first_refusals
            .recv_timeout(HANG_GUARD)
            .expect("a producer was never released");
        assert!(cause.contains("injected failure"), "{cause}");
    }
    // Read on while the manager closes: a full maintainer channel would delay it.
    let rest = heartbeats_until_closed(&heartbeats);
    let error = manager.wait().unwrap_err();
    assert_eq!(error.code(), "CDC:ErrSinkIO");
    reports.extend(errors(&rest));
    assert_eq!(reports.len(), 1, "exactly one RunningError: {reports:?}");
    assert_eq!(reports[0].code, "CDC:ErrSinkIO");
    assert!(
        reports[0].message.contains("injected failure"),
        "{}",
        reports[0].message
    );
    let left = wait_no_threads("cf-seed-", HANG_GUARD);
    assert!(left.is_empty(), "engine threads left: {left:?}");

    // Producers keep pushing; nothing is buffered any more.
    let rss_before = rss_bytes();
    let refused_before = refused.load(Ordering::SeqCst);
    let until = Instant::now() + PUSH_AFTER;
    while Instant::now() < until {
        assert_eq!(manager.status().in_flight_bytes, 0);
        std::thread::sleep(Duration::from_millis(50));
    }
    let rss_after = rss_bytes();
    let pushed_after = refused.load(Ordering::SeqCst) - refused_before;
    stop_pushing.store(true, Ordering::Relaxed);
    for p in pushers {
        p.join().unwrap();
    }
    println!(
        "after the failure: {pushed_after} refused pushes in {PUSH_AFTER:?}, rss {} -> {} KiB",
        rss_before >> 10,
        rss_after >> 10
    );
    assert!(pushed_after > 0, "producers kept pushing");
    assert!(
        rss_after <= rss_before + RSS_SLACK,
        "memory grew from {rss_before} to {rss_after} bytes"
    );
}
