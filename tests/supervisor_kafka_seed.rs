//! The seed (TiCDC #4064) under the [`Supervisor`], end to end on a real Kafka 3.9 broker.
//!
//! The sink's topic does not exist (`auto.create.topics.enable=false`): every attempt
//! fails with `CDC:ErrKafkaTopicNotExists`, the supervisor goes to Warning and restarts
//! after a short backoff (20 ms, ×1, no jitter). From cycle 5 to cycle 50 the process
//! holds the same number of threads and file descriptors, the same heap, and about the
//! same RSS. Then the topic is created: the next attempt succeeds, the supervisor goes
//! back to Normal, then to Stopped once the feed's input ended and everything was
//! acknowledged; every row of the feed is in Kafka (duplicates counted).
//!
//! # How it measures
//!
//! * The sink factory pauses the supervisor at the start of attempts 5, 20, 35 and 50
//!   (0-based: after that many failed cycles). The previous attempt was closed and
//!   joined before its Warning, so the figures come from the same quiet point of every
//!   cycle. The topic is created at the last pause: exactly 50 cycles fail.
//! * Threads: `/proc/self/task`, and those named `cf-svseed-…` (threads the crate
//!   spawns are named; an unnamed thread spawned by one would inherit its name).
//!   File descriptors: `/proc/self/fd`.
//! * Heap: a counting global allocator (bytes and blocks the program holds, exact).
//! * RSS: after `malloc_trim(0)`, with glibc limited to one malloc arena (`mallopt`).
//!   With the default per-thread arenas, the top chunks of the arenas of exited threads
//!   keep up to a few MiB resident that `malloc_trim` does not return: RSS then swings
//!   by ±4 MiB between cycles (measured: 7.6–15.7 MiB over 200 cycles, heap flat),
//!   which would hide a leak. With one arena it stays within a few hundred KiB.
//!
//! Its own test binary: it measures process-wide threads, file descriptors and memory,
//! and installs its own global allocator. Linux with glibc only (`/proc`, `mallopt`).
#![cfg(all(target_os = "linux", target_env = "gnu"))]

#[path = "support/kafka.rs"]
mod kafka_support;

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use changefeed::sink::kafka::{KafkaSink, KafkaSinkConfig};
use changefeed::sink::Sink;
use changefeed::supervisor::SinkFactory;
use changefeed::{Supervisor, SupervisorState};
use common::*;
use crossbeam_channel::bounded;
use kafka_support::{decode_canal_row, read_all, Broker, KAFKA_3};

/// The changefeed id: its threads are `cf-svseed-…` (the OS keeps 15 bytes of a name).
const ID: &str = "svseed";
const TOPIC: &str = "sv-seed";
const PARTITIONS: u32 = 2;
const TABLES: usize = 4;
const ROWS: u64 = 2_000;
/// Failed cycles before the topic is created.
const CYCLES: usize = 50;
/// The failed cycles after which the process is measured; the first is the reference
/// (the cycles before it warm up allocator and caches), the last is CYCLES.
const MEASURE_AT: [usize; 4] = [5, 20, 35, CYCLES];
/// Heap growth tolerated from the first to the last measurement. Measured over runs of
/// 200 cycles: flat, but for one-time steps of 96 bytes (one block) and, in some runs,
/// 2,080 bytes (two blocks) at varying cycles — lazily grown state, not per cycle. A
/// leak of 200 bytes per cycle would exceed it.
const HEAP_SLACK: usize = 8 << 10;
/// RSS growth tolerated from the first to the last measurement (measured: within
/// ±1 MiB). A leak outside the Rust heap of 50 KiB per cycle would exceed it.
const RSS_SLACK: u64 = 2 << 20;
/// Bound for reading the topic back.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// glibc's `mallopt` parameter for the number of malloc arenas.
const M_ARENA_MAX: i32 = -8;

extern "C" {
    fn mallopt(param: i32, value: i32) -> i32;
    fn malloc_trim(pad: usize) -> i32;
}

/// What the process holds at one point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Usage {
    threads: usize,
    fds: usize,
    /// Resident set size after `malloc_trim`.
    rss: u64,
    /// Resident set size before it.
    rss_untrimmed: u64,
    /// Bytes allocated and not yet freed.
    heap: usize,
    /// Blocks allocated and not yet freed.
    blocks: usize,
}

fn usage() -> Usage {
    let count = |dir: &str| {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {dir}: {e}"))
            .count()
    };
    let rss_untrimmed = rss_bytes();
    // SAFETY: returns free memory of the allocator to the OS; no memory is touched.
    unsafe { malloc_trim(0) };
    Usage {
        threads: count("/proc/self/task"),
        fds: count("/proc/self/fd"),
        rss: rss_bytes(),
        rss_untrimmed,
        heap: LIVE_BYTES.load(Ordering::SeqCst),
        blocks: LIVE_BLOCKS.load(Ordering::SeqCst),
    }
}

/// The system allocator, counting the bytes and blocks the program holds.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static LIVE_BLOCKS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call goes to the system allocator unchanged; the counters are only
// statistics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
            LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
            LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn missing_topic_restarts_50_times_without_leaking_then_delivers_everything() {
    let test_start = Instant::now();
    // One malloc arena, set before any thread of the changefeed exists (module docs).
    // SAFETY: sets an allocator parameter; no memory is touched.
    assert_eq!(
        unsafe { mallopt(M_ARENA_MAX, 1) },
        1,
        "mallopt(M_ARENA_MAX, 1)"
    );
    let broker = Broker::start(KAFKA_3);
    println!("broker up in {:?}", test_start.elapsed());
    let bootstrap = broker.bootstrap();

    // The factory pauses at the start of the attempts numbered in MEASURE_AT (0-based:
    // attempt n starts after n failed cycles): it tells the test, and goes on when the
    // test says so (or the test is gone).
    let attempts = Arc::new(AtomicUsize::new(0));
    let (paused_tx, paused) = bounded::<usize>(MEASURE_AT.len());
    let (resume_tx, resume_rx) = bounded::<()>(MEASURE_AT.len());
    let factory: SinkFactory = {
        let attempts = Arc::clone(&attempts);
        let bootstrap = bootstrap.clone();
        Box::new(move || {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            if MEASURE_AT.contains(&n) {
                let _ = paused_tx.send(n);
                let _ = resume_rx.recv_timeout(HANG_GUARD * 4);
            }
            let config = KafkaSinkConfig::new([bootstrap.clone()], TOPIC)?;
            Ok(Box::new(KafkaSink::new(config)?) as Box<dyn Sink>)
        })
    };
    let (observer, states) = bounded::<SupervisorState>(4 * CYCLES);
    let runs = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let supervisor = Supervisor::builder(ID)
        .backoff(
            Duration::from_millis(20),
            1.0,
            Duration::from_millis(20),
            0.0,
        )
        .manager(|m| m.heartbeat_interval(Duration::from_millis(20)))
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
    // Dropped before the supervisor (declared after it), so a failing test does not
    // leave the factory waiting.
    let resume = resume_tx;
    let prefix = format!("cf-{ID}-");

    // The first Warning: the missing topic, named.
    let first = states
        .recv_timeout(HANG_GUARD)
        .expect("no state change within the hang guard");
    println!("first state after {:?}: {first:?}", started.elapsed());
    match &first {
        SupervisorState::Warning { error, .. } => {
            assert_eq!(error.code(), "CDC:ErrKafkaTopicNotExists", "{error}");
            assert!(
                error.to_string().contains(TOPIC),
                "names the topic: {error}"
            );
        }
        other => panic!("expected Warning, got {other:?}"),
    }
    let mut warnings = 1;
    drop(first);

    // At each pause: count the Warnings (and drop them: the test holds no state between
    // measurements), then measure.
    let mut figures = Vec::with_capacity(MEASURE_AT.len());
    let mut paused_at = Vec::with_capacity(MEASURE_AT.len());
    for (k, &cycle) in MEASURE_AT.iter().enumerate() {
        let n = paused
            .recv_timeout(HANG_GUARD * 2)
            .unwrap_or_else(|_| panic!("attempt {cycle} never started"));
        assert_eq!(n, cycle);
        paused_at.push(Instant::now());
        for s in states.try_iter() {
            match s {
                SupervisorState::Warning { error, .. } => {
                    assert_eq!(error.code(), "CDC:ErrKafkaTopicNotExists", "{error}");
                    warnings += 1;
                }
                other => panic!("only Warnings while the topic is missing, got {other:?}"),
            }
        }
        assert_eq!(warnings, cycle, "one Warning per failed cycle");
        assert_eq!(
            runs.load(Ordering::SeqCst),
            cycle,
            "one feed run per attempt"
        );
        let u = usage();
        let named = threads_named(&prefix);
        println!(
            "cycle {cycle:>2}: {} threads (of the changefeed: {named:?}), {} fds, \
             RSS {} KiB ({} KiB before malloc_trim), heap {} B in {} blocks",
            u.threads,
            u.fds,
            u.rss >> 10,
            u.rss_untrimmed >> 10,
            u.heap,
            u.blocks
        );
        // Between attempts only the supervisor thread of the changefeed is alive.
        assert_eq!(named.len(), 1, "{named:?}");
        figures.push(u);
        if k + 1 < MEASURE_AT.len() {
            resume.send(()).unwrap();
        }
    }
    let per_cycle =
        (paused_at[paused_at.len() - 1] - paused_at[0]) / (CYCLES - MEASURE_AT[0]) as u32;
    println!(
        "{CYCLES} failed cycles in {:?} (pauses included); {per_cycle:?} per cycle, \
         20 ms of it backoff",
        started.elapsed()
    );
    assert_eq!(supervisor.checkpoint_ts(), 0, "nothing was acknowledged");
    let (first, last) = (MEASURE_AT[0], CYCLES);
    let (early, late) = (figures[0], figures[figures.len() - 1]);
    println!(
        "cycle {first} → {last}: threads {:+}, fds {:+}, RSS {:+} KiB, heap {:+} B, blocks {:+}",
        late.threads as i64 - early.threads as i64,
        late.fds as i64 - early.fds as i64,
        (late.rss as i64 - early.rss as i64) / 1024,
        late.heap as i64 - early.heap as i64,
        late.blocks as i64 - early.blocks as i64
    );
    assert_eq!(
        late.threads, early.threads,
        "threads, cycle {first} → {last}"
    );
    assert_eq!(
        late.fds, early.fds,
        "file descriptors, cycle {first} → {last}"
    );
    assert!(
        late.heap <= early.heap + HEAP_SLACK,
        "heap grew by {} bytes from cycle {first} to cycle {last}",
        late.heap - early.heap
    );
    assert!(
        late.rss <= early.rss + RSS_SLACK,
        "RSS grew by {} KiB from cycle {first} to cycle {last}",
        (late.rss - early.rss) >> 10
    );

    // Create the topic, then let the next attempt run.
    let t = Instant::now();
    broker.create_topic(TOPIC, PARTITIONS);
    println!("topic created in {:?}", t.elapsed());
    let released = Instant::now();
    resume.send(()).unwrap();
    let mut after = Vec::new();
    loop {
        let s = states
            .recv_timeout(HANG_GUARD)
            .expect("no state change within the hang guard");
        let last = s.is_final();
        if matches!(s, SupervisorState::Normal) {
            println!(
                "Normal {:?} after the topic was created",
                released.elapsed()
            );
        }
        after.push(s);
        if last {
            break;
        }
    }
    println!("then: {after:?} ({:?})", released.elapsed());
    assert!(
        matches!(
            after.as_slice(),
            [SupervisorState::Normal, SupervisorState::Stopped]
        ),
        "Normal, then Stopped: {after:?}"
    );
    assert!(matches!(supervisor.wait(), SupervisorState::Stopped));
    assert_eq!(supervisor.checkpoint_ts(), ROWS);
    assert_eq!(attempts.load(Ordering::SeqCst), CYCLES + 1);
    assert_eq!(runs.load(Ordering::SeqCst), CYCLES + 1);
    let left = wait_no_threads(&prefix, HANG_GUARD);
    assert!(left.is_empty(), "threads left: {left:?}");
    let end = usage();
    println!(
        "stopped: {} threads, {} fds, RSS {} KiB, heap {} B in {} blocks",
        end.threads,
        end.fds,
        end.rss >> 10,
        end.heap,
        end.blocks
    );
    assert_eq!(
        end.threads,
        early.threads - 1,
        "the supervisor thread is gone"
    );
    assert_eq!(end.fds, early.fds, "file descriptors after the stop");

    // Every row of the feed is in Kafka.
    let total = TABLES * ROWS as usize;
    let messages = read_all(&bootstrap, TOPIC, total, READ_TIMEOUT);
    let mut copies: HashMap<(String, u64), usize> = HashMap::new();
    for m in &messages {
        let (table, id, ts) = decode_canal_row(m);
        assert_eq!(ts, id, "{table} row {id}: commit ts {ts}");
        *copies.entry((table, id)).or_default() += 1;
    }
    let missing: Vec<_> = (0..TABLES)
        .flat_map(|i| (1..=ROWS).map(move |id| (table(i).to_string(), id)))
        .filter(|k| !copies.contains_key(k))
        .collect();
    assert!(
        missing.is_empty(),
        "{} rows lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(copies.len(), total, "no row that the feed did not send");
    let duplicates = messages.len() - total;
    println!(
        "Kafka holds {} messages for {total} rows: 0 lost, {duplicates} duplicates; \
         whole test {:?}",
        messages.len(),
        test_start.elapsed()
    );
}
