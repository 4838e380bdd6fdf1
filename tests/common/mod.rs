//! Shared test support: a fault-injecting sink, event builders, and process probes.
//! Each test binary uses a part of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use changefeed::sink::{Batch, Encoder, Interrupter, Message, Sink};
use changefeed::{Column, Event, HeartBeat, RowChange, TableName, Value};
use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;

/// A generous guard against hangs: no test step should come near it.
pub const HANG_GUARD: Duration = Duration::from_secs(30);

/// What the fault sink does when it reaches its fault point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `write` returns an I/O error.
    Error,
    /// `write` panics.
    Panic,
    /// The sink says it has finished (a clean return of the sink thread).
    Return,
    /// `write` blocks until released through [`FaultControl::unstick`] or interrupted.
    Stall,
}

/// One event as the sink saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub table: TableName,
    pub commit_ts: u64,
    pub seq: u64,
}

/// The test's side of a [`FaultSink`].
#[derive(Clone)]
pub struct FaultControl {
    /// Every acknowledged event, in flush order.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Batches written so far.
    pub batches: Arc<AtomicUsize>,
    /// Receives one message when the fault fires.
    pub fired: Receiver<Fault>,
    fired_tx: Sender<Fault>,
    /// While set, `flush` blocks (acks held) until cleared with [`FaultControl::release_acks`].
    hold: Arc<(Mutex<bool>, parking_lot::Condvar)>,
    unstick_tx: Sender<()>,
    unstick_rx: Receiver<()>,
    pub interrupted: Arc<AtomicBool>,
}

impl FaultControl {
    pub fn hold_acks(&self) {
        *self.hold.0.lock() = true;
    }
    pub fn release_acks(&self) {
        *self.hold.0.lock() = false;
        self.hold.1.notify_all();
    }
    /// Lets a stalled `write` return (with an error).
    pub fn unstick(&self) {
        let _ = self.unstick_tx.try_send(());
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }
}

/// A sink for engine tests: records what it acknowledges, and injects one fault after a
/// number of batches. It never stands in for Kafka.
pub struct FaultSink {
    fault: Option<(usize, Fault)>,
    flush_delay: Duration,
    pending: Vec<Seen>,
    finished: bool,
    interruptible: bool,
    control: FaultControl,
}

impl FaultSink {
    /// A sink that never fails.
    pub fn new() -> (FaultSink, FaultControl) {
        let (fired_tx, fired) = bounded(1);
        let (unstick_tx, unstick_rx) = bounded(1);
        let control = FaultControl {
            seen: Arc::default(),
            batches: Arc::default(),
            fired,
            fired_tx,
            hold: Arc::default(),
            unstick_tx,
            unstick_rx,
            interrupted: Arc::default(),
        };
        let sink = FaultSink {
            fault: None,
            flush_delay: Duration::ZERO,
            pending: Vec::new(),
            finished: false,
            interruptible: true,
            control: control.clone(),
        };
        (sink, control)
    }

    /// Injects `fault` in the write of batch number `after` (0-based).
    pub fn failing(after: usize, fault: Fault) -> (FaultSink, FaultControl) {
        let (mut sink, control) = FaultSink::new();
        sink.fault = Some((after, fault));
        (sink, control)
    }

    /// Offers no interrupter: a stalled write stays stuck until `unstick`.
    pub fn uninterruptible(mut self) -> FaultSink {
        self.interruptible = false;
        self
    }

    /// Sleeps this long in every flush (a slow downstream).
    pub fn with_flush_delay(mut self, delay: Duration) -> FaultSink {
        self.flush_delay = delay;
        self
    }
}

/// Encodes a row as its `seq` column's decimal text; a row with a column named
/// `panic` makes the encoder panic, one named `bad` makes it fail.
pub struct TestEncoder;

impl Encoder for TestEncoder {
    fn encode(&self, event: &Event, out: &mut Vec<Message>) -> changefeed::Result<()> {
        let (table, ts, seq) = match event {
            Event::Row(r) => {
                if r.new.iter().any(|c| c.name == "panic") {
                    panic!("encoder exploded on {} at {}", r.table, r.commit_ts);
                }
                if r.new.iter().any(|c| c.name == "bad") {
                    return Err(changefeed::Error::io(
                        "test encoder",
                        std::io::Error::other("unencodable value"),
                    ));
                }
                let seq = r.new.iter().find_map(|c| match (&*c.name, &c.value) {
                    ("seq", Value::UInt(s)) => Some(*s),
                    _ => None,
                });
                (&r.table, r.commit_ts, seq.unwrap_or(0))
            }
            Event::Ddl(d) => (&d.table, d.commit_ts, u64::MAX),
            Event::Resolved(_) => return Ok(()),
        };
        out.push(Message {
            key: table.to_string().into_bytes(),
            value: seq.to_string().into_bytes(),
            commit_ts: ts,
            ..Message::default()
        });
        Ok(())
    }
}

impl Sink for FaultSink {
    fn encoder(&self) -> Arc<dyn Encoder> {
        Arc::new(TestEncoder)
    }

    fn write(&mut self, batch: &mut Batch) -> changefeed::Result<()> {
        let n = self.control.batches.fetch_add(1, Ordering::SeqCst);
        if let Some((after, fault)) = self.fault {
            if n == after {
                let _ = self.control.fired_tx.try_send(fault);
                match fault {
                    Fault::Error => {
                        return Err(changefeed::Error::io(
                            "writing to the fault sink",
                            std::io::Error::other("injected failure"),
                        ))
                    }
                    Fault::Panic => panic!("injected sink panic at batch {n}"),
                    Fault::Return => self.finished = true,
                    Fault::Stall => {
                        let _ = self.control.unstick_rx.recv();
                        return Err(changefeed::Error::io(
                            "writing to the fault sink",
                            std::io::Error::other("stalled write gave up"),
                        ));
                    }
                }
            }
        }
        for m in batch.messages() {
            self.pending.push(Seen {
                table: batch.table().clone(),
                commit_ts: m.commit_ts,
                seq: String::from_utf8_lossy(&m.value)
                    .parse()
                    .unwrap_or(u64::MAX),
            });
        }
        Ok(())
    }

    fn flush(&mut self) -> changefeed::Result<()> {
        if !self.flush_delay.is_zero() {
            std::thread::sleep(self.flush_delay);
        }
        let (held, cv) = &*self.control.hold;
        let mut h = held.lock();
        while *h {
            cv.wait(&mut h);
        }
        drop(h);
        self.control.seen.lock().append(&mut self.pending);
        Ok(())
    }

    fn interrupter(&self) -> Option<Interrupter> {
        if !self.interruptible {
            return None;
        }
        let unstick = self.control.unstick_tx.clone();
        let interrupted = Arc::clone(&self.control.interrupted);
        Some(Box::new(move || {
            interrupted.store(true, Ordering::SeqCst);
            let _ = unstick.try_send(());
        }))
    }

    fn is_finished(&self) -> bool {
        self.finished
    }
}

/// A row of `table` at `ts` whose `seq` column numbers it, with `pad` bytes of text.
pub fn row(table: &TableName, ts: u64, seq: u64, pad: usize) -> Event {
    RowChange::insert(
        table.clone(),
        ts,
        vec![
            Column::key("id", Value::UInt(seq)),
            Column::new("seq", Value::UInt(seq)),
            Column::new("pad", Value::Text("x".repeat(pad))),
        ],
    )
    .into()
}

pub fn table(i: usize) -> TableName {
    TableName::new("db", format!("t{i}"))
}

/// Names of this process's live threads whose name starts with `prefix` (as the OS
/// sees them: at most 15 bytes).
pub fn threads_named(prefix: &str) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) {
                let comm = comm.trim().to_string();
                if comm.starts_with(prefix) {
                    names.push(comm);
                }
            }
        }
    }
    names
}

/// Waits (bounded) until no thread named with `prefix` is alive; returns the leftovers.
pub fn wait_no_threads(prefix: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let left = threads_named(prefix);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits (bounded) until `n` threads named with `prefix` are alive (a new thread names
/// itself once it runs); returns their names.
pub fn wait_threads(prefix: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let names = threads_named(prefix);
        if names.len() >= n || Instant::now() > deadline {
            return names;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The process's resident set size in bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Every heartbeat until the `closed` one (bounded by [`HANG_GUARD`]).
pub fn heartbeats_until_closed(rx: &Receiver<HeartBeat>) -> Vec<HeartBeat> {
    let mut all = Vec::new();
    loop {
        let hb = rx
            .recv_timeout(HANG_GUARD)
            .expect("no closed heartbeat within the hang guard");
        let closed = hb.closed;
        all.push(hb);
        if closed {
            return all;
        }
    }
}

/// The error heartbeats among `heartbeats`.
pub fn errors(heartbeats: &[HeartBeat]) -> Vec<changefeed::RunningError> {
    heartbeats.iter().filter_map(|h| h.error.clone()).collect()
}

/// A feed: rows 1..=`rows` of `tables` tables, commit ts = row number; sends every row above
/// `from_ts` (all at once), then a watermark.
pub struct Rows {
    pub tables: usize,
    pub rows: u64,
    /// Counts the attempts that ran the feed.
    pub runs: Arc<AtomicUsize>,
}

impl changefeed::Feed for Rows {
    fn run(
        &mut self,
        manager: &changefeed::DispatcherManager,
        from_ts: u64,
    ) -> changefeed::Result<()> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let dispatchers: Vec<_> = (0..self.tables)
            .map(|i| manager.add_dispatcher(table(i)))
            .collect::<changefeed::Result<_>>()?;
        for ts in from_ts + 1..=self.rows {
            for (i, d) in dispatchers.iter().enumerate() {
                d.send(row(&table(i), ts, ts, 16)).map_err(|e| e.cause)?;
            }
        }
        for d in &dispatchers {
            d.send(Event::Resolved(self.rows)).map_err(|e| e.cause)?;
        }
        Ok(())
    }
}
