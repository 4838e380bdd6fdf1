//! The seam between the Kafka sink and a Kafka client: what differs between the
//! librdkafka client and the kafka-rust client is only "send these messages and tell me
//! which were confirmed", plus connecting and reading partition counts.
//!
//! Everything else — routing, the split of a flush into requests under
//! `max-message-bytes`, the acknowledgement rule (a flush is done only when every one of
//! its messages was confirmed), the retry budget with its backoff, isolating a message
//! the broker refuses as too large, and the interrupt — lives in the sink
//! ([`super::KafkaSink`]) and is the same for both.
// Built without either client (no cargo feature), nothing implements the seam.
#![cfg_attr(
    not(any(feature = "librdkafka", feature = "kafka-rust")),
    allow(dead_code)
)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::error::{Error, Result};
use crate::event::TableName;
use crate::message::Message;

/// A failure worth a retry after a backoff, described for the log and the final error.
pub(crate) type Retry = String;

/// The messages a flush sends, each with its table (for errors that name it).
pub(crate) type Pending = [(TableName, Message)];

/// One topic-partition's share of a request: indices into the flush's [`Pending`]
/// messages, in send order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Slice {
    pub topic: Arc<str>,
    pub partition: i32,
    pub idxs: Vec<usize>,
}

/// How a client answered for one [`Slice`] of a request.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// How many of the slice's messages, from its start, were confirmed.
    pub written: usize,
    /// Why the rest (`idxs[written..]`) was not; `None` when `written` is all of them.
    pub fault: Option<Fault>,
}

impl Outcome {
    /// Every message of a slice of `len` messages confirmed.
    pub fn written(len: usize) -> Outcome {
        Outcome {
            written: len,
            fault: None,
        }
    }

    /// Nothing confirmed, because of `fault`.
    pub fn failed(fault: Fault) -> Outcome {
        Outcome {
            written: 0,
            fault: Some(fault),
        }
    }
}

/// Why messages were not confirmed.
#[derive(Debug)]
pub(crate) enum Fault {
    /// The broker (or the client) refused them as too large. The sink sends them again
    /// in halves; a message refused on its own is `CDC:ErrMessageTooLarge`.
    TooLarge,
    /// Worth a retry: the sink resets the client, backs off, and sends them again.
    Retry(Retry),
    /// Not worth a retry: the sink fails with this error.
    Fatal(Error),
}

/// A Kafka client, driven by the sink thread alone.
pub(crate) trait Client: Send {
    /// Makes the client ready to send, if it is not. `Ok(Err(why))` is a retryable
    /// failure that leaves nothing open; `Err` is not worth a retry (e.g. a broker this
    /// client cannot speak to, a wrong password).
    fn connect(&mut self, interrupt: &Interrupt) -> Result<std::result::Result<(), Retry>>;

    /// Forgets what a failure may have made stale (connections, metadata); the next
    /// [`connect`](Client::connect) starts afresh.
    fn reset(&mut self);

    /// The partition count of `topic`, or `None` when the client's metadata does not
    /// know it. Called after [`connect`](Client::connect) succeeded; returns early, with
    /// `Err`, when `interrupt` is set and the client can notice it.
    fn partitions(
        &mut self,
        topic: &str,
        interrupt: &Interrupt,
    ) -> Result<std::result::Result<Option<i32>, Retry>>;

    /// How many bytes of one partition's messages the sink puts into one
    /// [`send`](Client::send), given `max-message-bytes`. The kafka crate sends each call
    /// as one produce request, in which the broker checks each partition's whole set
    /// against the topic's limit: `max_message_bytes`. librdkafka forms its own batches,
    /// so one call may hand it a whole flush.
    fn request_share(&self, max_message_bytes: usize) -> usize;

    /// Sends `slices` (messages of `pending`) as one request and answers with exactly
    /// one [`Outcome`] per slice, in order. Returns early, with `Err`, when `interrupt`
    /// is set and the client can notice it.
    fn send(
        &mut self,
        pending: &Pending,
        slices: &[Slice],
        interrupt: &Interrupt,
    ) -> Result<Vec<Outcome>>;
}

/// The flag the sink's interrupter sets, and a wake-up for a thread waiting on it.
pub(crate) struct Interrupt {
    flag: AtomicBool,
    wake_tx: Sender<()>,
    wake_rx: Receiver<()>,
}

impl Interrupt {
    pub fn new() -> Arc<Interrupt> {
        // One pending wake-up is enough: it means "the flag is set".
        let (wake_tx, wake_rx) = bounded(1);
        Arc::new(Interrupt {
            flag: AtomicBool::new(false),
            wake_tx,
            wake_rx,
        })
    }

    /// Sets the flag and wakes a [`sleep`](Interrupt::sleep).
    pub fn set(&self) {
        self.flag.store(true, Ordering::Release);
        let _ = self.wake_tx.try_send(());
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// `Err` once the flag is set.
    pub fn check(&self) -> Result<()> {
        if self.is_set() {
            return Err(Error::KafkaSendMessage {
                reason: "interrupted: the changefeed is closing".to_string(),
            });
        }
        Ok(())
    }

    /// Waits `wait`, or less when the flag is set; then [`check`](Interrupt::check)s.
    pub fn sleep(&self, wait: Duration) -> Result<()> {
        if !self.is_set() {
            let _ = self.wake_rx.recv_timeout(wait);
        }
        self.check()
    }
}
