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
    let (maintainer, heartbeats) = bounded(1024);
    let manager = DispatcherManager::builder(id)
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
