//! Checkpoints, per-table order, the memory quota, and the checks `send` makes.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use changefeed::{DdlChange, DispatcherManager, Event, TableName};
use common::*;

#[test]
fn checkpoint_advances_only_after_acknowledgement() {
    let (sink, control) = FaultSink::new();
    let manager = DispatcherManager::builder("cp1")
        .start_ts(100)
        .start(sink)
        .unwrap();
    let d = manager.add_dispatcher(table(0)).unwrap();
    assert_eq!(manager.checkpoint_ts(), 100, "starts at start_ts");

    control.hold_acks();
    d.send(row(&table(0), 200, 1, 0)).unwrap();
    d.send(row(&table(0), 300, 2, 0)).unwrap();
    assert!(
        manager.flush(Duration::from_millis(100)).is_err(),
        "acks are held"
    );
    assert_eq!(
        manager.checkpoint_ts(),
        199,
        "held back by the unacknowledged row at 200"
    );
    assert_eq!(d.checkpoint_ts(), 199);

    control.release_acks();
    manager.flush(HANG_GUARD).unwrap();
    assert_eq!(
        manager.checkpoint_ts(),
        299,
        "rows of ts 300 may still come"
    );

    d.send(Event::Resolved(400)).unwrap();
    assert_eq!(
        manager.checkpoint_ts(),
        400,
        "a watermark moves it when nothing is in flight"
    );

    control.hold_acks();
    d.send(row(&table(0), 500, 3, 0)).unwrap();
    d.send(Event::Resolved(600)).unwrap();
    assert_eq!(
        manager.checkpoint_ts(),
        499,
        "a watermark does not pass unacknowledged rows"
    );
    control.release_acks();
    manager.flush(HANG_GUARD).unwrap();
    assert_eq!(manager.checkpoint_ts(), 600);
    manager.close().unwrap();
}

#[test]
fn checkpoint_is_the_minimum_over_tables_and_never_below_start_ts() {
    let (sink, _control) = FaultSink::new();
    let manager = DispatcherManager::builder("cp2")
        .start_ts(1000)
        .start(sink)
        .unwrap();
    let a = manager.add_dispatcher(table(0)).unwrap();
    let b = manager.add_dispatcher(table(1)).unwrap();
    a.send(Event::Resolved(5000)).unwrap();
    assert_eq!(
        manager.checkpoint_ts(),
        1000,
        "table 1 holds it at start_ts"
    );
    b.send(Event::Resolved(3000)).unwrap();
    assert_eq!(manager.checkpoint_ts(), 3000);
    // Old events (below start_ts) do not drag it below start_ts.
    let c = manager.add_dispatcher(table(2)).unwrap();
    c.send(row(&table(2), 10, 1, 0)).unwrap();
    manager.flush(HANG_GUARD).unwrap();
    assert_eq!(manager.checkpoint_ts(), 1000);
    let status = manager.status();
    assert_eq!(status.dispatchers.len(), 3);
    assert_eq!(status.events_acked, 1);
    manager.close().unwrap();
}

#[test]
fn per_table_order_at_the_sink_equals_send_order() {
    // A thread per table, and the pool (3 threads for 16 tables).
    for pool in [None, Some(3)] {
        order_at_the_sink(pool);
    }
}

/// The builder of changefeed `id`: a pool of `pool` dispatcher threads, or a thread per
/// table.
fn builder(id: &str, pool: Option<usize>) -> changefeed::Builder {
    match pool {
        Some(n) => DispatcherManager::builder(format!("{id}p")).dispatcher_threads(n),
        None => DispatcherManager::builder(id).thread_per_dispatcher(),
    }
}

fn order_at_the_sink(pool: Option<usize>) {
    const TABLES: usize = 16;
    const ROWS: u64 = 3000;
    let (sink, control) = FaultSink::new();
    let manager = builder("ord", pool)
        .channel_capacity(8)
        .dispatcher_capacity(16)
        .start(sink)
        .unwrap();
    std::thread::scope(|s| {
        for i in 0..TABLES {
            let d = manager.add_dispatcher(table(i)).unwrap();
            s.spawn(move || {
                for seq in 1..=ROWS {
                    // Several rows share a commit ts, as rows of one transaction do.
                    d.send(row(&table(i), seq / 3 + 1, seq, 8)).unwrap();
                    if seq % 500 == 0 {
                        d.send(DdlChange::new(table(i), seq / 3 + 1, "ALTER TABLE x"))
                            .unwrap();
                    }
                }
            });
        }
    });
    manager.close().unwrap();
    let mut per_table: HashMap<TableName, Vec<u64>> = HashMap::new();
    for seen in control.seen() {
        per_table.entry(seen.table).or_default().push(seen.seq);
    }
    assert_eq!(per_table.len(), TABLES);
    for (t, seqs) in per_table {
        let rows: Vec<u64> = seqs.iter().copied().filter(|s| *s != u64::MAX).collect();
        assert_eq!(rows, (1..=ROWS).collect::<Vec<_>>(), "order of {t}");
        assert_eq!(seqs.len() as u64, ROWS + ROWS / 500, "rows and DDLs of {t}");
        // Each DDL comes right after the row sent before it.
        for (i, s) in seqs.iter().enumerate() {
            if *s == u64::MAX {
                assert_eq!(seqs[i - 1] % 500, 0, "DDL of {t} out of place");
            }
        }
    }
}

#[test]
fn send_rejects_what_needs_no_encoding_and_keeps_running() {
    let (sink, _control) = FaultSink::new();
    let manager = DispatcherManager::builder("chk")
        .memory_quota(64 << 10)
        .start(sink)
        .unwrap();
    let d = manager.add_dispatcher(table(0)).unwrap();
    d.send(row(&table(0), 10, 1, 0)).unwrap();

    let e = d.send(row(&table(1), 11, 2, 0)).unwrap_err();
    assert_eq!(e.cause.code(), "CDC:ErrWrongTable");
    assert!(e.cause.to_string().contains("db.t1") && e.cause.to_string().contains("db.t0"));
    assert!(
        matches!(e.event, Event::Row(ref r) if r.commit_ts == 11),
        "event handed back"
    );

    let e = d.send(row(&table(0), 9, 3, 0)).unwrap_err();
    assert_eq!(e.cause.code(), "CDC:ErrEventOutOfOrder");
    assert!(
        e.cause.to_string().contains("got 9, expected at least 10"),
        "{}",
        e.cause
    );

    d.send(Event::Resolved(20)).unwrap();
    let e = d.send(row(&table(0), 20, 4, 0)).unwrap_err();
    assert_eq!(
        e.cause.code(),
        "CDC:ErrEventOutOfOrder",
        "nothing at or below a watermark"
    );

    let e = d.send(row(&table(0), 30, 5, 100 << 10)).unwrap_err();
    assert_eq!(e.cause.code(), "CDC:ErrEventTooLarge");
    let text = e.cause.to_string();
    assert!(
        text.contains("db.t0") && text.contains("commit ts 30") && text.contains("65536"),
        "{text}"
    );

    d.send(row(&table(0), 30, 6, 0)).unwrap();
    assert_eq!(
        manager.add_dispatcher(table(0)).unwrap_err().code(),
        "CDC:ErrDispatcherExists"
    );
    manager.flush(HANG_GUARD).unwrap();
    assert_eq!(manager.status().state, changefeed::State::Running);
    assert_eq!(manager.status().events_acked, 2);
    manager.close().unwrap();
}

#[test]
fn quota_bounds_in_flight_bytes_and_is_returned_after_close() {
    const QUOTA: usize = 256 << 10;
    let (sink, control) = FaultSink::new();
    control.hold_acks();
    let manager = DispatcherManager::builder("quo")
        .memory_quota(QUOTA)
        .dispatcher_capacity(100_000)
        .channel_capacity(1000)
        .start(sink)
        .unwrap();
    let d = manager.add_dispatcher(table(0)).unwrap();
    let mut accepted = 0;
    for seq in 1.. {
        match d.send_timeout(row(&table(0), seq, seq, 1000), Duration::from_millis(50)) {
            Ok(()) => accepted += 1,
            Err(changefeed::TrySendError::Full(_)) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let status = manager.status();
    assert!(accepted > 10, "accepted {accepted}");
    // Settling to the encoded size never blocks, so one batch may overshoot a little.
    assert!(
        status.in_flight_bytes <= QUOTA + (64 << 10),
        "{}",
        status.in_flight_bytes
    );
    assert!(status.quota_waits >= 1);
    assert!(matches!(
        d.try_send(row(&table(0), 1 << 40, 0, 1000)),
        Err(changefeed::TrySendError::Full(_))
    ));
    control.release_acks();
    manager.close().unwrap();
    assert_eq!(manager.status().in_flight_bytes, 0);
    assert_eq!(control.seen().len(), accepted);
}

#[test]
fn removed_dispatcher_delivers_what_it_accepted() {
    for pool in [None, Some(2)] {
        removed_dispatcher(pool);
    }
}

fn removed_dispatcher(pool: Option<usize>) {
    let (sink, control) = FaultSink::new();
    let manager = builder("rm", pool).start(sink).unwrap();
    let d = manager.add_dispatcher(table(0)).unwrap();
    for seq in 1..=100 {
        d.send(row(&table(0), seq, seq, 0)).unwrap();
    }
    manager.remove_dispatcher(&table(0)).unwrap();
    let e = d.send(row(&table(0), 101, 101, 0)).unwrap_err();
    assert_eq!(e.cause.code(), "CDC:ErrDispatcherRemoved");
    assert_eq!(
        manager.remove_dispatcher(&table(0)).unwrap_err().code(),
        "CDC:ErrDispatcherNotFound"
    );
    manager.flush(HANG_GUARD).unwrap();
    assert_eq!(control.seen().len(), 100);
    let again = manager.add_dispatcher(table(0)).unwrap();
    again.send(row(&table(0), 200, 1, 0)).unwrap();
    manager.close().unwrap();
    assert_eq!(control.seen().len(), 101);
}

#[test]
fn builder_rejects_invalid_values_naming_them() {
    let cases: Vec<(changefeed::Builder, &str)> = vec![
        (DispatcherManager::builder(""), "changefeed_id"),
        (
            DispatcherManager::builder("x").channel_capacity(0),
            "channel_capacity",
        ),
        (
            DispatcherManager::builder("x").dispatcher_capacity(0),
            "dispatcher_capacity",
        ),
        (
            DispatcherManager::builder("x").memory_quota(0),
            "memory_quota",
        ),
        (
            DispatcherManager::builder("x").heartbeat_interval(Duration::ZERO),
            "heartbeat_interval",
        ),
        (
            DispatcherManager::builder("x").close_timeout(Duration::ZERO),
            "close_timeout",
        ),
        (DispatcherManager::builder("x").node(" "), "node"),
        (
            DispatcherManager::builder("x").dispatcher_threads(0),
            "dispatcher_threads",
        ),
    ];
    for (builder, param) in cases {
        let (sink, _) = FaultSink::new();
        let e = builder.start(sink).unwrap_err();
        assert_eq!(e.code(), "CDC:ErrInvalidConfig");
        assert!(e.to_string().contains(param), "{e} should name {param}");
    }
}
