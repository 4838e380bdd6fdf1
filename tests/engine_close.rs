//! Closing on purpose: blocked senders are released, nothing accepted is lost, no
//! error is reported, and every thread is joined — or, with a stuck sink, `close`
//! still returns within its bound.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use changefeed::{DdlChange, DispatcherManager, State};
use common::*;
use crossbeam_channel::{bounded, Receiver};

const PUSHERS: usize = 64;

/// Starts `PUSHERS` producers against a sink whose acks are held, waits until the
/// sink channel is full, then runs `stop` (close or drop) while they are blocked; `stop`
/// gets a receiver that hears of each refused send. Returns how many sends succeeded,
/// the sink's control, and the heartbeats.
fn blocked_then(
    id: &str,
    stop: impl FnOnce(DispatcherManager, &FaultControl, Receiver<()>),
) -> (u64, FaultControl, Vec<changefeed::HeartBeat>) {
    let (sink, control) = FaultSink::new();
    control.hold_acks();
    let (maintainer, heartbeats) = bounded(4096);
    let manager = DispatcherManager::builder(id)
        .maintainer(maintainer)
        .channel_capacity(4)
        .dispatcher_capacity(8)
        .start(sink)
        .unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let (refused_tx, refused) = bounded(PUSHERS);
    let dispatchers: Vec<_> = (0..PUSHERS)
        .map(|i| manager.add_dispatcher(table(i)).unwrap())
        .collect();
    let pushers: Vec<_> = dispatchers
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let accepted = Arc::clone(&accepted);
            let refused_tx = refused_tx.clone();
            std::thread::spawn(move || {
                for seq in 1.. {
                    match d.send(row(&table(i), seq, seq, 32)) {
                        Ok(()) => accepted.fetch_add(1, Ordering::SeqCst),
                        Err(e) => {
                            refused_tx.send(()).unwrap();
                            return e.cause.code();
                        }
                    };
                }
                unreachable!()
            })
        })
        .collect();
    let deadline = Instant::now() + HANG_GUARD;
    while manager.status().sink_queue_depth < 4 {
        assert!(Instant::now() < deadline, "sink channel never filled");
        std::thread::yield_now();
    }
    stop(manager, &control, refused);
    for p in pushers {
        assert_eq!(p.join().unwrap(), "CDC:ErrChangefeedClosed");
    }
    let hbs = heartbeats_until_closed(&heartbeats);
    (accepted.load(Ordering::SeqCst), control, hbs)
}

/// Releases the held acks once every producer was refused: blocked sends are handed
/// back as soon as close begins, while the accepted events still wait for the sink.
fn release_after_refusals(
    control: FaultControl,
    refused: Receiver<()>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for _ in 0..PUSHERS {
            refused
                .recv_timeout(HANG_GUARD)
                .expect("a blocked sender was not released");
        }
        control.release_acks();
    })
}

#[test]
fn close_releases_blocked_senders_and_loses_nothing() {
    let (accepted, control, hbs) = blocked_then("cl1", |manager, control, refused| {
        let releaser = release_after_refusals(control.clone(), refused);
        assert!(manager.close().is_ok());
        releaser.join().unwrap();
        assert_eq!(manager.status().state, State::Closed);
        assert_eq!(manager.status().in_flight_bytes, 0, "quota fully returned");
        assert!(manager.close().is_ok(), "close is idempotent");
    });
    assert!(errors(&hbs).is_empty(), "no error on a close on purpose");
    assert!(accepted > 0);
    assert_eq!(
        control.seen().len() as u64,
        accepted,
        "every accepted event acknowledged"
    );
    assert!(wait_no_threads("cf-cl1-", HANG_GUARD).is_empty());
}

#[test]
fn dropping_the_manager_closes_the_same_way() {
    let (accepted, control, hbs) = blocked_then("cl2", |manager, control, refused| {
        let releaser = release_after_refusals(control.clone(), refused);
        drop(manager);
        releaser.join().unwrap();
    });
    assert!(errors(&hbs).is_empty());
    assert_eq!(control.seen().len() as u64, accepted);
    assert!(wait_no_threads("cf-cl2-", HANG_GUARD).is_empty());
}

/// Releases the held acks once the manager is closing.
fn release_when_closing(manager: &DispatcherManager, control: &FaultControl) {
    let deadline = Instant::now() + HANG_GUARD;
    while manager.status().state == State::Running {
        assert!(Instant::now() < deadline);
        std::thread::yield_now();
    }
    control.release_acks();
}

/// 100 idle tables: on the pool (3 threads here) the engine's dispatcher threads stay 3
/// whatever the tables; with a thread per table there are 100. Either way close stops
/// them all and later sends are refused.
#[test]
fn idle_dispatchers_stop_on_close() {
    for (id, per_table) in [("cl3p", false), ("cl3t", true)] {
        let (sink, _control) = FaultSink::new();
        let builder = DispatcherManager::builder(id);
        let builder = if per_table {
            builder.thread_per_dispatcher()
        } else {
            builder.dispatcher_threads(3)
        };
        let manager = builder.start(sink).unwrap();
        let handles: Vec<_> = (0..100)
            .map(|i| manager.add_dispatcher(table(i)).unwrap())
            .collect();
        let expected = if per_table { 100 } else { 3 };
        // (The OS keeps 15 bytes of a thread name.)
        let prefix = format!("cf-{id}-disp");
        assert_eq!(wait_threads(&prefix, expected).len(), expected, "{id}");
        assert_eq!(
            threads_named(&prefix).len(),
            expected,
            "{id}: no more than that"
        );
        manager.close().unwrap();
        assert!(wait_no_threads(&format!("cf-{id}-"), HANG_GUARD).is_empty());
        let e = handles[0].send(row(&table(0), 1, 1, 0)).unwrap_err();
        assert_eq!(e.cause.code(), "CDC:ErrChangefeedClosed");
        assert!(
            format!("{e:?}").contains("event: .."),
            "Debug hides the event: {e:?}"
        );
    }
}

#[test]
fn failure_during_close_is_returned_not_reported() {
    let (sink, control) = FaultSink::failing(3, Fault::Error);
    control.hold_acks();
    let (maintainer, heartbeats) = bounded(4096);
    let manager = DispatcherManager::builder("cl4")
        .maintainer(maintainer)
        .channel_capacity(2)
        .start(sink)
        .unwrap();
    let d = manager.add_dispatcher(table(0)).unwrap();
    // A DDL is a batch of its own: at least 20 batches, so the fault at batch 3 fires.
    for seq in 1..=10 {
        d.send(row(&table(0), seq, seq, 8)).unwrap();
        d.send(DdlChange::new(
            table(0),
            seq,
            "ALTER TABLE t0 ADD COLUMN c INT",
        ))
        .unwrap();
    }
    std::thread::scope(|s| {
        let closer = s.spawn(|| manager.close());
        release_when_closing(&manager, &control);
        let e = closer.join().unwrap().unwrap_err();
        assert_eq!(e.code(), "CDC:ErrSinkIO");
    });
    assert_eq!(
        manager.close().unwrap_err().code(),
        "CDC:ErrSinkIO",
        "same result again"
    );
    let hbs = heartbeats_until_closed(&heartbeats);
    assert!(
        errors(&hbs).is_empty(),
        "a failure during close is not a RunningError"
    );
    assert!(wait_no_threads("cf-cl4-", HANG_GUARD).is_empty());
}

#[test]
fn stuck_sink_does_not_hang_close() {
    let (sink, control) = FaultSink::failing(0, Fault::Stall);
    let manager = DispatcherManager::builder("cl5")
        .close_timeout(Duration::from_millis(300))
        .channel_capacity(2)
        .dispatcher_capacity(4)
        .start(sink.uninterruptible())
        .unwrap();
    let d = manager.add_dispatcher(table(0)).unwrap();
    std::thread::scope(|s| {
        let pusher = s.spawn(|| {
            for seq in 1.. {
                if let Err(e) = d.send(row(&table(0), seq, seq, 8)) {
                    return e.cause.code();
                }
            }
            unreachable!()
        });
        control
            .fired
            .recv_timeout(HANG_GUARD)
            .expect("sink stalled");
        let e = manager.close().unwrap_err();
        assert_eq!(e.code(), "CDC:ErrCloseTimeout");
        assert!(
            e.to_string()
                .contains("exits when its current call returns"),
            "{e}"
        );
        assert_eq!(pusher.join().unwrap(), "CDC:ErrChangefeedClosed");
    });
    let status = manager.status();
    assert!(status.close_timed_out);
    assert_eq!(status.state, State::Closed);
    assert!(!control.interrupted.load(Ordering::SeqCst));
    assert!(wait_no_threads("cf-cl5-dispatch", HANG_GUARD).is_empty());
    assert_eq!(
        threads_named("cf-cl5-sink").len(),
        1,
        "still inside the stuck call"
    );
    control.unstick();
    assert!(
        wait_no_threads("cf-cl5-", HANG_GUARD).is_empty(),
        "exits once the call returns"
    );
    assert_eq!(manager.status().in_flight_bytes, 0);
    drop(manager);
}

#[test]
fn interruptible_sink_is_interrupted_on_close_timeout() {
    let (sink, control) = FaultSink::failing(0, Fault::Stall);
    let manager = DispatcherManager::builder("cl6")
        .close_timeout(Duration::from_millis(200))
        .start(sink)
        .unwrap();
    let d = manager.add_dispatcher(table(0)).unwrap();
    d.send(row(&table(0), 1, 1, 8)).unwrap();
    control
        .fired
        .recv_timeout(HANG_GUARD)
        .expect("sink stalled");
    assert_eq!(manager.close().unwrap_err().code(), "CDC:ErrCloseTimeout");
    assert!(control.interrupted.load(Ordering::SeqCst));
    assert!(wait_no_threads("cf-cl6-", HANG_GUARD).is_empty());
}
