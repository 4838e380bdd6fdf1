//! Every way a running changefeed can end by itself is reported once, with its text,
//! and stops everything.

mod common;

use std::time::Duration;

use changefeed::{Column, DispatcherManager, RowChange, TableName, Value};
use common::*;
use crossbeam_channel::bounded;

/// Starts a changefeed on `sink`, pushes rows on `tables` tables until a send fails,
/// and returns the heartbeats, the error `wait` gave, and the causes sends saw.
fn run_until_failure(
    id: &str,
    sink: FaultSink,
    tables: usize,
    poison: Option<&str>,
) -> (Vec<changefeed::HeartBeat>, changefeed::Error, Vec<String>) {
    run_until_failure_on(id, DispatcherManager::builder(id), sink, tables, poison)
}

/// [`run_until_failure`] with the builder given (e.g. with a dispatcher pool).
fn run_until_failure_on(
    id: &str,
    builder: changefeed::Builder,
    sink: FaultSink,
    tables: usize,
    poison: Option<&str>,
) -> (Vec<changefeed::HeartBeat>, changefeed::Error, Vec<String>) {
    let (maintainer, heartbeats) = bounded(1024);
    let manager = builder
        .maintainer(maintainer)
        .heartbeat_interval(Duration::from_millis(20))
        .start(sink)
        .unwrap();
    // Every dispatcher first: a fault may close the changefeed as soon as one pushes.
    let dispatchers: Vec<_> = (0..tables)
        .map(|i| manager.add_dispatcher(table(i)).unwrap())
        .collect();
    let causes = std::thread::scope(|s| {
        let pushers: Vec<_> = dispatchers
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                s.spawn(move || {
                    for seq in 1.. {
                        let event = match poison {
                            Some(col) if i == 0 && seq == 50 => RowChange::insert(
                                table(i),
                                seq,
                                vec![Column::new(col, Value::Null)],
                            )
                            .into(),
                            _ => row(&table(i), seq, seq, 16),
                        };
                        if let Err(e) = d.send(event) {
                            return e.cause.code().to_string();
                        }
                    }
                    unreachable!()
                })
            })
            .collect();
        pushers
            .into_iter()
            .map(|p| p.join().unwrap())
            .collect::<Vec<_>>()
    });
    let error = manager.wait().unwrap_err();
    let all = heartbeats_until_closed(&heartbeats);
    let left = wait_no_threads(&format!("cf-{id}-"), HANG_GUARD);
    assert!(left.is_empty(), "threads left: {left:?}");
    (all, error, causes)
}

fn assert_one_report(heartbeats: &[changefeed::HeartBeat], code: &str, text: &str) {
    let errors = errors(heartbeats);
    assert_eq!(errors.len(), 1, "exactly one error report: {errors:?}");
    assert_eq!(errors[0].code, code);
    assert!(errors[0].message.contains(text), "{:?}", errors[0].message);
    assert!(errors[0].time.ends_with('Z') && errors[0].time.contains('T'));
    let last = heartbeats.last().unwrap();
    assert!(last.closed);
    // The report goes out before any dispatcher's state is read; the final heartbeat
    // has every status and the exact checkpoint.
    let report = heartbeats.iter().find(|h| h.error.is_some()).unwrap();
    assert!(report.dispatchers.is_empty(), "{:?}", report.dispatchers);
    assert!(report.checkpoint_ts <= last.checkpoint_ts);
}

#[test]
fn sink_error_is_reported_once_and_closes() {
    let (sink, _control) = FaultSink::failing(5, Fault::Error);
    let (hbs, error, causes) = run_until_failure("fe1", sink, 4, None);
    assert_one_report(&hbs, "CDC:ErrSinkIO", "injected failure");
    assert_eq!(
        hbs.last().unwrap().dispatchers.len(),
        4,
        "every status, at the end"
    );
    assert_eq!(error.code(), "CDC:ErrSinkIO");
    assert!(causes.iter().all(|c| c == "CDC:ErrSinkIO"), "{causes:?}");
}

#[test]
fn sink_panic_is_reported_with_its_text() {
    let (sink, _control) = FaultSink::failing(3, Fault::Panic);
    let (hbs, error, _) = run_until_failure("fe2", sink, 3, None);
    assert_one_report(
        &hbs,
        "CDC:ErrSinkPanicked",
        "injected sink panic at batch 3",
    );
    assert_eq!(error.code(), "CDC:ErrSinkPanicked");
}

#[test]
fn unexpected_clean_return_of_the_sink_is_reported() {
    let (sink, _control) = FaultSink::failing(2, Fault::Return);
    let (hbs, error, _) = run_until_failure("fe3", sink, 2, None);
    assert_one_report(&hbs, "CDC:ErrSinkExited", "sink exited");
    assert_eq!(error.code(), "CDC:ErrSinkExited");
}

#[test]
fn dispatcher_panic_is_reported_with_its_text() {
    let (sink, _control) = FaultSink::new();
    let (hbs, error, causes) = run_until_failure("fe4", sink, 3, Some("panic"));
    assert_one_report(
        &hbs,
        "CDC:ErrDispatcherPanicked",
        "encoder exploded on db.t0 at 50",
    );
    assert!(
        error
            .to_string()
            .contains("dispatcher of table db.t0 panicked"),
        "{error}"
    );
    assert!(
        causes.iter().all(|c| c == "CDC:ErrDispatcherPanicked"),
        "{causes:?}"
    );
}

/// The same on the dispatcher pool: a worker's panic is caught, reported once, and
/// every sender stops.
#[test]
fn dispatcher_panic_on_the_pool_is_reported_with_its_text() {
    let (sink, _control) = FaultSink::new();
    let builder = DispatcherManager::builder("fe4p").dispatcher_threads(2);
    let (hbs, error, causes) = run_until_failure_on("fe4p", builder, sink, 3, Some("panic"));
    assert_one_report(
        &hbs,
        "CDC:ErrDispatcherPanicked",
        "encoder exploded on db.t0 at 50",
    );
    assert!(error.to_string().contains("db.t0"), "{error}");
    assert!(
        causes.iter().all(|c| c == "CDC:ErrDispatcherPanicked"),
        "{causes:?}"
    );
}

#[test]
fn encoding_failure_on_the_pool_closes_through_the_same_path() {
    let (sink, _control) = FaultSink::new();
    let builder = DispatcherManager::builder("fe5p").dispatcher_threads(2);
    let (hbs, error, _) = run_until_failure_on("fe5p", builder, sink, 2, Some("bad"));
    assert_one_report(&hbs, "CDC:ErrSinkIO", "unencodable value");
    assert_eq!(error.code(), "CDC:ErrSinkIO");
}

#[test]
fn encoding_failure_closes_through_the_same_path() {
    let (sink, _control) = FaultSink::new();
    let (hbs, error, _) = run_until_failure("fe5", sink, 2, Some("bad"));
    assert_one_report(&hbs, "CDC:ErrSinkIO", "unencodable value");
    assert_eq!(error.code(), "CDC:ErrSinkIO");
}

#[test]
fn sink_start_failure_is_a_running_error_not_a_start_error() {
    // A directory cannot be opened for appending: `open` accepts the URI, the sink
    // thread fails at start, and the maintainer hears of it.
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("file://{}", dir.path().display());
    let sink = changefeed::sink::open(&uri).unwrap();
    let (maintainer, heartbeats) = bounded(64);
    let manager = DispatcherManager::builder("fe6")
        .maintainer(maintainer)
        .start(sink)
        .unwrap();
    let error = manager.wait().unwrap_err();
    assert_eq!(error.code(), "CDC:ErrSinkIO");
    assert!(error.to_string().contains("opening"), "{error}");
    let hbs = heartbeats_until_closed(&heartbeats);
    assert_one_report(&hbs, "CDC:ErrSinkIO", &dir.path().display().to_string());
    let d = manager.add_dispatcher(TableName::new("db", "late"));
    assert_eq!(d.unwrap_err().code(), "CDC:ErrSinkIO");
}

// ---- The report hand-off: senders stay blocked until the maintainer has the report ----

/// A changefeed whose sink fails on its first batch while one producer pushes into a
/// one-event queue, so the producer is blocked when the failure comes. No periodic
/// heartbeat within the test: the error heartbeat is the first thing in the channel.
/// Returns the manager, the maintainer's end, the sink's control, and the first error
/// the producer's sends saw (its code).
fn blocked_producer_then_failure(
    id: &str,
    handoff: Duration,
    close_timeout: Duration,
) -> (
    DispatcherManager,
    crossbeam_channel::Receiver<changefeed::HeartBeat>,
    FaultControl,
    crossbeam_channel::Receiver<String>,
) {
    let (sink, control) = FaultSink::failing(0, Fault::Error);
    let (maintainer, heartbeats) = bounded(16);
    let manager = DispatcherManager::builder(id)
        .maintainer(maintainer)
        .heartbeat_interval(Duration::from_secs(3600))
        .channel_capacity(1)
        .dispatcher_capacity(1)
        .report_handoff(handoff)
        .close_timeout(close_timeout)
        .start(sink)
        .unwrap();
    let d = manager.add_dispatcher(table(0)).unwrap();
    let (released_tx, released) = bounded(1);
    std::thread::spawn(move || {
        for seq in 1.. {
            if let Err(e) = d.send(row(&table(0), seq, seq, 16)) {
                let _ = released_tx.send(e.cause.code().to_string());
                return;
            }
        }
    });
    control
        .fired
        .recv_timeout(HANG_GUARD)
        .expect("the sink never failed");
    (manager, heartbeats, control, released)
}

/// Waits (bounded) until the error heartbeat is queued in the maintainer channel.
fn until_queued(heartbeats: &crossbeam_channel::Receiver<changefeed::HeartBeat>) {
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while heartbeats.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no report was queued");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn senders_stay_blocked_until_the_maintainer_takes_the_report() {
    // Duration::MAX: no deadline on the hand-off (and none on close).
    let (manager, heartbeats, _control, released) =
        blocked_producer_then_failure("fe7", Duration::MAX, Duration::MAX);
    until_queued(&heartbeats);
    // The report sits unread: the producer must still be blocked.
    assert!(
        released.recv_timeout(Duration::from_millis(300)).is_err(),
        "a producer was released before the maintainer took the report"
    );
    let report = heartbeats.recv().unwrap();
    assert_eq!(report.error.unwrap().code, "CDC:ErrSinkIO");
    // Taking it releases them.
    let cause = released
        .recv_timeout(HANG_GUARD)
        .expect("the producer was never released");
    assert_eq!(cause, "CDC:ErrSinkIO");
    assert_eq!(manager.wait().unwrap_err().code(), "CDC:ErrSinkIO");
    let rest = heartbeats_until_closed(&heartbeats);
    assert!(errors(&rest).is_empty(), "one report only: {rest:?}");
}

#[test]
fn a_maintainer_that_does_not_read_delays_the_release_only_by_the_handoff() {
    let (manager, heartbeats, _control, released) =
        blocked_producer_then_failure("fe8", Duration::from_millis(20), HANG_GUARD);
    let cause = released
        .recv_timeout(HANG_GUARD)
        .expect("the producer was never released");
    assert_eq!(cause, "CDC:ErrSinkIO");
    // Released while the report was still unread.
    let report = heartbeats.try_recv().expect("the report is still queued");
    assert_eq!(report.error.unwrap().code, "CDC:ErrSinkIO");
    assert_eq!(manager.wait().unwrap_err().code(), "CDC:ErrSinkIO");
    let left = wait_no_threads("cf-fe8-", HANG_GUARD);
    assert!(left.is_empty(), "threads left: {left:?}");
}

#[test]
fn a_close_timeout_cuts_the_handoff_short() {
    // The hand-off would wait out the hang guard; a close with a short timeout ends it.
    let (manager, heartbeats, _control, released) =
        blocked_producer_then_failure("fe9", HANG_GUARD, Duration::from_millis(100));
    until_queued(&heartbeats);
    let error = manager.close().unwrap_err();
    assert_eq!(
        error.code(),
        "CDC:ErrSinkIO",
        "the failure, not the timeout"
    );
    let cause = released
        .recv_timeout(HANG_GUARD)
        .expect("the producer was never released");
    assert_eq!(cause, "CDC:ErrSinkIO");
    let left = wait_no_threads("cf-fe9-", HANG_GUARD);
    assert!(left.is_empty(), "threads left: {left:?}");
}
