//! Random dispatcher counts, random sink faults at random points, and random
//! close/drop races, each run bounded in time: no hang, exactly one error report when
//! the sink failed while running, none when closed on purpose, no thread left, quota
//! fully returned.
//!
//! `CHANGEFEED_STRESS_RUNS` sets the number of runs (default 200, what CI runs);
//! `CHANGEFEED_STRESS_SEED` replays one seed.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use changefeed::DispatcherManager;
use common::*;
use crossbeam_channel::bounded;

#[derive(Clone, Copy, Debug)]
enum Ending {
    /// Only the sink's fault ends it.
    FaultOnly,
    /// The program closes after a random number of sends.
    Close,
    /// The program drops the manager after a random number of sends.
    Drop,
}

#[derive(Debug)]
struct Plan {
    #[allow(dead_code)] // printed with the plan
    seed: u64,
    dispatchers: usize,
    fault: Option<(usize, Fault)>,
    ending: Ending,
    stop_after_sends: u64,
    channel_capacity: usize,
    /// The dispatcher pool's size, or `None` for a thread per table.
    pool: Option<usize>,
}

fn plan(seed: u64) -> Plan {
    let mut rng = fastrand::Rng::with_seed(seed);
    let fault_kind = [Fault::Error, Fault::Panic, Fault::Return, Fault::Stall][rng.usize(..4)];
    let fault = if rng.u8(..4) == 0 {
        None
    } else {
        Some((rng.usize(..40), fault_kind))
    };
    let ending = match (fault, rng.u8(..3)) {
        (None, 0) | (_, 1) => Ending::Close,
        (None, _) | (_, 2) => Ending::Drop,
        _ => Ending::FaultOnly,
    };
    // A stall that nothing closes would wait for ever: close it.
    let ending = match (fault, ending) {
        (Some((_, Fault::Stall)), Ending::FaultOnly) => Ending::Close,
        (_, e) => e,
    };
    Plan {
        seed,
        dispatchers: rng.usize(1..=16),
        fault,
        ending,
        stop_after_sends: rng.u64(0..400),
        channel_capacity: rng.usize(1..=8),
        pool: rng.bool().then(|| rng.usize(1..=4)),
    }
}

fn run(p: &Plan, id: &str) {
    let (sink, control) = match p.fault {
        Some((after, fault)) => FaultSink::failing(after, fault),
        None => FaultSink::new(),
    };
    let (maintainer, heartbeats) = bounded(4096);
    let builder = match p.pool {
        Some(threads) => DispatcherManager::builder(id).dispatcher_threads(threads),
        None => DispatcherManager::builder(id).thread_per_dispatcher(),
    };
    let manager = builder
        .maintainer(maintainer)
        .heartbeat_interval(Duration::from_millis(5))
        .close_timeout(Duration::from_millis(200))
        .channel_capacity(p.channel_capacity)
        .dispatcher_capacity(8)
        .memory_quota(256 << 10)
        .start(sink)
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (sent_tx, sent_rx) = bounded::<()>(1024);
    let pushers: Vec<_> = (0..p.dispatchers)
        .filter_map(|i| manager.add_dispatcher(table(i)).ok())
        .enumerate()
        .map(|(i, d)| {
            let stop = Arc::clone(&stop);
            let sent_tx = sent_tx.clone();
            std::thread::spawn(move || {
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    if d.send(row(&table(i), seq, seq, 64)).is_err() {
                        return;
                    }
                    let _ = sent_tx.try_send(());
                }
            })
        })
        .collect();
    drop(sent_tx);
    let mut closed_on_purpose = false;
    let mut manager = Some(manager);
    let outcome = match p.ending {
        Ending::FaultOnly => manager.as_ref().unwrap().wait(),
        Ending::Close | Ending::Drop => {
            // Close after some sends, or once sends stop coming (a stalled sink, or
            // every pusher gone).
            for _ in 0..p.stop_after_sends {
                if sent_rx.recv_timeout(Duration::from_millis(50)).is_err() {
                    break;
                }
            }
            let m = manager.as_ref().unwrap();
            closed_on_purpose = m.status().state == changefeed::State::Running;
            if matches!(p.ending, Ending::Drop) {
                // Drop ignores the outcome; the heartbeats still tell.
                drop(manager.take());
                Ok(())
            } else {
                m.close()
            }
        }
    };
    stop.store(true, Ordering::Relaxed);
    control.unstick();
    for pusher in pushers {
        pusher.join().unwrap();
    }
    let hbs = heartbeats_until_closed(&heartbeats);
    let reports = errors(&hbs);
    assert!(
        reports.len() <= 1,
        "more than one report: {reports:?} {p:?}"
    );
    if !reports.is_empty() && !matches!(p.ending, Ending::Drop) {
        let e = outcome.as_ref().unwrap_err();
        assert_eq!(e.code(), reports[0].code, "{p:?}");
    }
    match (p.fault, p.ending) {
        (None, _) => assert!(
            reports.is_empty(),
            "report without a fault: {reports:?} {p:?}"
        ),
        (Some(_), Ending::FaultOnly) => assert_eq!(reports.len(), 1, "{p:?}"),
        _ => {}
    }
    if closed_on_purpose && p.fault.is_none() {
        outcome.unwrap_or_else(|e| panic!("{e} {p:?}"));
    }
    let left = wait_no_threads(&format!("cf-{id}-"), HANG_GUARD);
    assert!(left.is_empty(), "threads left {left:?} {p:?}");
    // With every thread gone (a stalled sink included), every byte is back.
    if let Some(m) = manager {
        assert_eq!(m.status().in_flight_bytes, 0, "quota returned: {p:?}");
    }
}

#[test]
fn random_faults_and_close_races() {
    let runs: u64 = std::env::var("CHANGEFEED_STRESS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seeds: Vec<u64> = match std::env::var("CHANGEFEED_STRESS_SEED") {
        Ok(seed) => vec![seed.parse().expect("CHANGEFEED_STRESS_SEED is a number")],
        Err(_) => {
            let base = fastrand::u64(..);
            println!("base seed {base}");
            (0..runs).map(|i| base.wrapping_add(i)).collect()
        }
    };
    let mut counts = std::collections::BTreeMap::new();
    for (n, seed) in seeds.into_iter().enumerate() {
        let p = plan(seed);
        if std::env::var("CHANGEFEED_STRESS_SEED").is_ok() {
            println!("{p:?}");
        }
        *counts
            .entry(format!("{:?}/{:?}", p.fault.map(|f| f.1), p.ending))
            .or_insert(0) += 1;
        let id = format!("s{}", n % 1000);
        let (done_tx, done) = bounded(1);
        let worker = std::thread::spawn(move || {
            run(&p, &id);
            let _ = done_tx.send(());
        });
        if done.recv_timeout(HANG_GUARD).is_err() && !worker.is_finished() {
            panic!("run with seed {seed} hung (replay with CHANGEFEED_STRESS_SEED={seed})");
        }
        if let Err(panic) = worker.join() {
            eprintln!("failed run: replay with CHANGEFEED_STRESS_SEED={seed}");
            std::panic::resume_unwind(panic);
        }
    }
    println!("runs by fault/ending: {counts:?}");
}
