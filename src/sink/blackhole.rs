//! `blackhole://`: acknowledges everything, keeps nothing, counts what it saw.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::Result;
use crate::event::Event;
use crate::sink::{Batch, Encoder, Message, Sink};

/// A sink that drops every message and acknowledges at once. Its encoder does no
/// encoding work: one empty message per event. For benchmarks and dry runs.
#[derive(Debug, Default)]
pub struct BlackholeSink {
    counts: Arc<BlackholeCounts>,
}

/// What a [`BlackholeSink`] has seen, readable from any thread.
#[derive(Debug, Default)]
pub struct BlackholeCounts {
    events: AtomicU64,
    batches: AtomicU64,
    flushes: AtomicU64,
}

impl BlackholeCounts {
    /// Events written.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }
    /// Batches written.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
    /// Flushes done.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }
}

impl BlackholeSink {
    /// A new blackhole sink.
    pub fn new() -> BlackholeSink {
        BlackholeSink::default()
    }

    /// Its counters, shared with the sink.
    pub fn counts(&self) -> Arc<BlackholeCounts> {
        Arc::clone(&self.counts)
    }
}

struct NoEncoding;

impl Encoder for NoEncoding {
    fn encode(&self, event: &Event, out: &mut Vec<Message>) -> Result<()> {
        out.push(Message {
            commit_ts: event.commit_ts(),
            ..Message::default()
        });
        Ok(())
    }
}

impl Sink for BlackholeSink {
    fn encoder(&self) -> Arc<dyn Encoder> {
        Arc::new(NoEncoding)
    }

    fn write(&mut self, batch: &mut Batch) -> Result<()> {
        self.counts
            .events
            .fetch_add(batch.events() as u64, Ordering::Relaxed);
        self.counts.batches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.counts.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
