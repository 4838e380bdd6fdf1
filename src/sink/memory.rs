//! `memory://?capacity=N`: keeps acknowledged messages in memory, for tests and for
//! programs that embed the engine.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::sink::uri::SinkUri;
use crate::sink::{protocol_encoder, Batch, Encoder, Message, Sink};

/// Default capacity of a `memory://` sink, in messages.
pub const DEFAULT_MEMORY_CAPACITY: usize = 1 << 20;

/// Keeps up to `capacity` messages; one more fails the sink with
/// [`Error::SinkFull`]. Read them through a [`MemoryHandle`].
pub struct MemorySink {
    capacity: usize,
    encoder: Arc<dyn Encoder>,
    pending: Vec<Message>,
    store: Arc<Mutex<Vec<Message>>>,
}

/// Reads what a [`MemorySink`] holds, from any thread.
#[derive(Clone, Debug)]
pub struct MemoryHandle {
    store: Arc<Mutex<Vec<Message>>>,
}

impl MemoryHandle {
    /// A copy of the acknowledged messages, in the order they were flushed.
    pub fn messages(&self) -> Vec<Message> {
        self.store.lock().clone()
    }

    /// How many messages were acknowledged.
    pub fn len(&self) -> usize {
        self.store.lock().len()
    }

    /// Whether no message was acknowledged yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl MemorySink {
    /// A sink keeping up to `capacity` messages encoded by `encoder`.
    pub fn new(capacity: usize, encoder: Arc<dyn Encoder>) -> MemorySink {
        MemorySink {
            capacity,
            encoder,
            pending: Vec::new(),
            store: Arc::default(),
        }
    }

    /// A handle to read the messages.
    pub fn handle(&self) -> MemoryHandle {
        MemoryHandle {
            store: Arc::clone(&self.store),
        }
    }

    pub(crate) fn from_uri(uri: &SinkUri) -> Result<MemorySink> {
        uri.reject_unknown(&["capacity", "protocol"])?;
        uri.reject_path("memory")?;
        let capacity = uri.positive("capacity", DEFAULT_MEMORY_CAPACITY)?;
        Ok(MemorySink::new(capacity, protocol_encoder(uri)?))
    }
}

impl Sink for MemorySink {
    fn encoder(&self) -> Arc<dyn Encoder> {
        Arc::clone(&self.encoder)
    }

    fn write(&mut self, batch: &mut Batch) -> Result<()> {
        let held = self.store.lock().len() + self.pending.len();
        if held + batch.messages().len() > self.capacity {
            return Err(Error::SinkFull {
                capacity: self.capacity,
            });
        }
        self.pending.extend_from_slice(batch.messages());
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.store.lock().append(&mut self.pending);
        Ok(())
    }
}
