//! The data a sink writes and the encoders that make it: [`Message`], its [`Route`], and
//! the [`Encoder`] trait.
//!
//! These sit below both the codecs (`codec/`, which make messages) and the sinks
//! (`sink/`, which write them), so neither imports the other for them. They are
//! re-exported from [`crate::sink`].

use std::sync::Arc;

use crate::error::Result;
use crate::event::Event;

/// Where a message should go; sinks without topics or partitions ignore it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// The topic, or `None` for the sink's default topic.
    pub topic: Option<Arc<str>>,
    /// Which partition(s) of the topic.
    pub partition: PartitionChoice,
}

/// How a message picks its partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionChoice {
    /// `hash % partition count`.
    Hash(u64),
    /// One fixed partition (0-based); out-of-range is clamped to the last one.
    Fixed(i32),
    /// Every partition (DDL in some protocols).
    All,
}

impl Default for PartitionChoice {
    fn default() -> Self {
        PartitionChoice::Hash(0)
    }
}

/// One encoded message: what a sink writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// The message key (may be empty).
    pub key: Vec<u8>,
    /// The message value.
    pub value: Vec<u8>,
    /// The commit ts of the event it encodes.
    pub commit_ts: u64,
    /// Where it goes.
    pub route: Route,
}

/// Bytes charged per message besides its key and value (the struct and its route).
pub(crate) const MESSAGE_OVERHEAD: usize = std::mem::size_of::<Message>();

impl Message {
    /// The bytes this message holds in memory, as the memory quota counts them.
    pub fn charged_size(&self) -> usize {
        MESSAGE_OVERHEAD + self.key.len() + self.value.len()
    }
}

/// Encodes events into messages; runs on the dispatcher threads, so it must be cheap to
/// share (`Send + Sync`) and must not block.
pub trait Encoder: Send + Sync {
    /// Appends the messages for `event` (a row or DDL event; never a watermark) to `out`.
    /// An `Err` closes the changefeed: use [`Error::Encode`](crate::Error::Encode) or
    /// [`Error::MessageTooLarge`](crate::Error::MessageTooLarge).
    fn encode(&self, event: &Event, out: &mut Vec<Message>) -> Result<()>;
}
