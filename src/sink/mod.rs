//! Sinks: where batches of encoded events go, and [`open`] to build one from a URI.
//!
//! A sink is driven by one thread, the *sink thread*. The engine calls, in order:
//! [`Sink::start`] once, then [`Sink::write`] for each batch and [`Sink::flush`] after a
//! group of writes. Batches written before a successful `flush` are *acknowledged*: their
//! memory quota is released and their dispatchers' checkpoints advance. An `Err` from any
//! call ends the sink thread, and with it the changefeed (a `RunningError`).
//!
//! Encoding does not run on the sink thread: each dispatcher thread encodes its own
//! table's events with the sink's [`Encoder`], so encoding runs in parallel.
//!
//! | URI | sink |
//! |---|---|
//! | `blackhole://` | [`BlackholeSink`]: no encoding work, counts what it acknowledges |
//! | `file:///abs/path`, `file:rel/path` | [`FileSink`]: one JSON line per row or DDL event |
//! | `memory://?capacity=N` | [`MemorySink`]: keeps up to N messages |
//! | `kafka://host:port[,host:port…]/topic?…` | [`kafka::KafkaSink`]: see [`kafka::KafkaSinkConfig::from_uri`] |
//!
//! `file:` and `memory:` take `protocol=canal-json` (default) or `protocol=debezium`.

mod blackhole;
mod file;
pub mod kafka;
mod memory;
pub(crate) mod uri;

use std::sync::Arc;
use std::time::Duration;

pub use blackhole::BlackholeSink;
pub use file::FileSink;
pub use memory::{MemoryHandle, MemorySink};

pub use crate::message::{Encoder, Message, PartitionChoice, Route};

use crate::error::{Error, Result};
use crate::event::TableName;

/// The messages of one dispatcher's run of events, as a sink sees them.
#[derive(Debug)]
pub struct Batch {
    pub(crate) table: TableName,
    pub(crate) messages: Vec<Message>,
    pub(crate) events: usize,
    pub(crate) ddl: bool,
    pub(crate) ack: crate::progress::Ack,
}

impl Batch {
    /// The table every message of this batch belongs to.
    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// The encoded messages, in send order.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// Takes the messages out of the batch, for a sink that keeps them until its flush
    /// (the batch's memory stays accounted until the flush acknowledges it).
    pub fn take_messages(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.messages)
    }

    /// How many events the batch encodes (an event may encode to several messages).
    pub fn events(&self) -> usize {
        self.events
    }

    /// Whether this batch is one DDL event. The engine flushes all earlier batches
    /// before writing it, and flushes it before writing anything later.
    pub fn is_ddl(&self) -> bool {
        self.ddl
    }
}

/// How the sink thread groups batches between flushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batching {
    /// Flush once this many message bytes have been written since the last flush.
    pub max_bytes: usize,
    /// Flush once this many messages have been written since the last flush.
    pub max_messages: usize,
    /// How long to wait for more batches before flushing what was written; zero flushes
    /// as soon as the channel is empty.
    pub linger: Duration,
}

impl Default for Batching {
    /// 1 MiB, 4096 messages, no linger.
    fn default() -> Self {
        Batching {
            max_bytes: 1 << 20,
            max_messages: 4096,
            linger: Duration::ZERO,
        }
    }
}

/// Asks a sink to give up the blocking call it is in. Called from another thread when
/// `close` runs out of time; a sink that offers one should make its current call return
/// an error soon after.
pub type Interrupter = Box<dyn Fn() + Send + Sync>;

/// A blocking sink, run on the sink thread.
///
/// Only [`encoder`](Sink::encoder), [`write`](Sink::write) and [`flush`](Sink::flush)
/// are required. `write` may buffer; data counts as delivered only when `flush` returns
/// `Ok`.
pub trait Sink: Send {
    /// The encoder the dispatchers use for this sink.
    fn encoder(&self) -> Arc<dyn Encoder>;

    /// Connects or opens files; called once on the sink thread before the first write.
    fn start(&mut self) -> Result<()> {
        Ok(())
    }

    /// Takes one batch. May buffer it until [`flush`](Sink::flush), reading its
    /// messages or taking them with [`Batch::take_messages`].
    fn write(&mut self, batch: &mut Batch) -> Result<()>;

    /// Makes everything written so far durable. The batches written before a successful
    /// flush are acknowledged.
    fn flush(&mut self) -> Result<()>;

    /// How the sink thread should group batches between flushes.
    fn batching(&self) -> Batching {
        Batching::default()
    }

    /// A way to interrupt a call blocked inside the sink, if the sink has one. Asked
    /// once, before [`start`](Sink::start).
    fn interrupter(&self) -> Option<Interrupter> {
        None
    }

    /// Whether the sink has ended on its own; asked after every flush. A sink that says
    /// so ends the changefeed with [`Error::SinkExited`]: reported while it runs, returned
    /// by `close` during its drain (batches may still be waiting, so it is never a clean
    /// end).
    fn is_finished(&self) -> bool {
        false
    }
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn encoder(&self) -> Arc<dyn Encoder> {
        (**self).encoder()
    }
    fn start(&mut self) -> Result<()> {
        (**self).start()
    }
    fn write(&mut self, batch: &mut Batch) -> Result<()> {
        (**self).write(batch)
    }
    fn flush(&mut self) -> Result<()> {
        (**self).flush()
    }
    fn batching(&self) -> Batching {
        (**self).batching()
    }
    fn interrupter(&self) -> Option<Interrupter> {
        (**self).interrupter()
    }
    fn is_finished(&self) -> bool {
        (**self).is_finished()
    }
}

/// Builds the sink a URI names (the table in the module docs).
///
/// Only parses and validates: no file is opened and no connection made here, so every
/// failure at run time reaches the maintainer as a `RunningError`. An unknown scheme or
/// parameter, or a bad value, is an [`Error::SinkUriInvalid`] naming it.
pub fn open(uri: &str) -> Result<Box<dyn Sink>> {
    let parsed = uri::SinkUri::parse(uri)?;
    match parsed.scheme.as_str() {
        "blackhole" => {
            parsed.reject_unknown(&[])?;
            parsed.reject_path("blackhole")?;
            Ok(Box::new(BlackholeSink::new()))
        }
        "file" => Ok(Box::new(FileSink::from_uri(&parsed)?)),
        "memory" => Ok(Box::new(MemorySink::from_uri(&parsed)?)),
        "kafka" => Ok(Box::new(kafka::KafkaSink::from_uri(&parsed)?)),
        other => Err(Error::uri(
            &parsed.raw,
            format!("unknown scheme {other:?}; expected blackhole, file, memory or kafka"),
        )),
    }
}

/// The protocols the `file:` and `memory:` sinks encode with.
pub(crate) fn protocol_encoder(uri: &uri::SinkUri) -> Result<Arc<dyn Encoder>> {
    match uri.param("protocol").unwrap_or("canal-json") {
        "canal-json" => Ok(Arc::new(crate::codec::CanalJson::default())),
        "debezium" => Ok(Arc::new(crate::codec::Debezium::default())),
        other => Err(Error::uri(
            &uri.raw,
            format!("protocol={other:?} is not supported; expected canal-json or debezium"),
        )),
    }
}
