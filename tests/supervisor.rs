//! The supervisor restarts a failed changefeed from its checkpoint, loses nothing,
//! gives up on unretryable errors, and stops promptly.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use changefeed::sink::Sink;
use changefeed::supervisor::SinkFactory;
use changefeed::{Supervisor, SupervisorState};
use common::*;
use crossbeam_channel::bounded;

fn fast(b: changefeed::supervisor::SupervisorBuilder) -> changefeed::supervisor::SupervisorBuilder {
    b.backoff(
        Duration::from_millis(20),
        2.0,
        Duration::from_millis(100),
        0.1,
    )
    .manager(|m| m.heartbeat_interval(Duration::from_millis(10)))
}

#[test]
fn restarts_from_the_checkpoint_until_it_succeeds_and_loses_nothing() {
    const TABLES: usize = 4;
    const ROWS: u64 = 2000;
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let factory: SinkFactory = {
        let attempts = Arc::clone(&attempts);
        let seen = Arc::clone(&seen);
        Box::new(move || {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            // Attempts 0..3 fail after a few batches; then the sink is healthy.
            let (sink, control) = if n < 3 {
                FaultSink::failing(5 + n * 3, Fault::Error)
            } else {
                FaultSink::new()
            };
            seen.lock().push(control);
            Ok(Box::new(sink) as Box<dyn Sink>)
        })
    };
    let (observer, states) = bounded(1024);
    let runs = Arc::new(AtomicUsize::new(0));
    let supervisor = fast(Supervisor::builder("sv1"))
        .observer(observer)
        .start(
            factory,
            Rows {
                tables: TABLES,
                rows: ROWS,
                runs: Arc::clone(&runs),
            },
        )
        .unwrap();
    let end = supervisor.wait();
    assert!(matches!(end, SupervisorState::Stopped), "{end:?}");
    let states: Vec<_> = states.try_iter().collect();
    let warnings = states
        .iter()
        .filter(|s| matches!(s, SupervisorState::Warning { .. }))
        .count();
    assert_eq!(warnings, 3, "{states:?}");
    for s in &states {
        if let SupervisorState::Warning { error, .. } = s {
            assert_eq!(error.code(), "CDC:ErrSinkIO");
        }
    }
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    assert_eq!(supervisor.checkpoint_ts(), ROWS);
    let left = wait_no_threads("cf-sv1-", Duration::from_secs(5));
    assert!(left.is_empty(), "{left:?}");
    // Every row of every table was acknowledged by some attempt.
    let mut acked = std::collections::HashSet::new();
    let mut total = 0;
    for control in seen.lock().iter() {
        for s in control.seen() {
            total += 1;
            acked.insert((s.table, s.seq));
        }
    }
    assert_eq!(acked.len(), TABLES * ROWS as usize, "nothing lost");
    println!(
        "{} rows acknowledged, {} duplicates across restarts",
        acked.len(),
        total - acked.len()
    );
}

#[test]
fn unretryable_error_fails_once_without_restart() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let factory: SinkFactory = {
        let attempts = Arc::clone(&attempts);
        Box::new(move || {
            attempts.fetch_add(1, Ordering::SeqCst);
            changefeed::sink::open("kafka://127.0.0.1:1/t?auto-create-topic=true")
        })
    };
    let runs = Arc::new(AtomicUsize::new(0));
    let supervisor = fast(Supervisor::builder("sv2"))
        .start(
            factory,
            Rows {
                tables: 1,
                rows: 10,
                runs,
            },
        )
        .unwrap();
    match supervisor.wait() {
        SupervisorState::Failed { error } => assert_eq!(error.code(), "CDC:ErrKafkaInvalidConfig"),
        other => panic!("{other:?}"),
    }
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

#[test]
fn stop_cuts_a_backoff_wait_short() {
    let factory: SinkFactory = Box::new(|| {
        Err(changefeed::Error::io(
            "factory",
            std::io::Error::other("downstream down"),
        ))
    });
    let supervisor = Supervisor::builder("sv3")
        .backoff(
            Duration::from_secs(3600),
            2.0,
            Duration::from_secs(3600),
            0.1,
        )
        .start(
            factory,
            Rows {
                tables: 1,
                rows: 10,
                runs: Arc::default(),
            },
        )
        .unwrap();
    let state = supervisor.wait_for(HANG_GUARD, |s| matches!(s, SupervisorState::Warning { .. }));
    assert!(
        matches!(state, SupervisorState::Warning { .. }),
        "{state:?}"
    );
    assert!(matches!(supervisor.stop(), SupervisorState::Stopped));
    assert!(wait_no_threads("cf-sv3-", HANG_GUARD).is_empty());
}
