//! The sink thread: takes batches from the one sink channel, writes them, flushes, and
//! acknowledges what each flush made durable.
//!
//! Batches are grouped between flushes as the sink's [`Batching`] says: after the first
//! batch, more are taken while the channel has them (or until the linger passes) and the
//! group stays under the byte and message limits. A DDL batch is flushed on its own, after
//! everything before it, so a table's earlier rows are durable before its DDL is written.
//!
//! [`Batching`]: crate::sink::Batching

use crossbeam_channel::{select, Receiver, RecvTimeoutError, TryRecvError};

use crate::deadline;
use crate::error::{Error, Result};
use crate::progress::Ack;
use crate::shared::Shared;
use crate::sink::{Batch, Sink};

/// Batches written since the last flush, waiting for it to acknowledge them.
#[derive(Default)]
struct Unflushed {
    acks: Vec<Ack>,
    bytes: usize,
    messages: usize,
}

/// Runs `sink` until the channel has no senders left (a clean stop), the abort line
/// drops, the sink says it has finished, or it fails.
pub(crate) fn run(sink: &mut dyn Sink, shared: &Shared, batches: &Receiver<Batch>) -> Result<()> {
    sink.start()?;
    let batching = sink.batching();
    let abort = &shared.abort_rx;
    let mut unflushed = Unflushed::default();
    loop {
        let first = match batches.try_recv() {
            Ok(batch) => batch,
            Err(_) => select! {
            recv(batches) -> batch => match batch {
                Ok(batch) => batch,
                Err(_) => break,
            },
            recv(abort) -> _ => return Ok(()),
            },
        };
        write(sink, shared, first, &mut unflushed)?;
        let linger_until = deadline::after(batching.linger);
        while unflushed.bytes < batching.max_bytes && unflushed.messages < batching.max_messages {
            let next = if batching.linger.is_zero() {
                batches
                    .try_recv()
                    .map_err(|e| e == TryRecvError::Disconnected)
            } else if let Some(until) = linger_until {
                batches
                    .recv_deadline(until)
                    .map_err(|e| e == RecvTimeoutError::Disconnected)
            } else {
                batches.recv().map_err(|_| true)
            };
            match next {
                Ok(batch) => write(sink, shared, batch, &mut unflushed)?,
                // Empty, or the linger passed: flush what we have.
                Err(false) => break,
                // No sender left: flush and stop.
                Err(true) => {
                    flush(sink, shared, &mut unflushed)?;
                    return Ok(());
                }
            }
        }
        flush(sink, shared, &mut unflushed)?;
        if sink.is_finished() {
            // Never a clean end, even during close: batches may still be waiting.
            return Err(Error::SinkExited);
        }
    }
    flush(sink, shared, &mut unflushed)
}

fn write(
    sink: &mut dyn Sink,
    shared: &Shared,
    mut batch: Batch,
    unflushed: &mut Unflushed,
) -> Result<()> {
    let ddl = batch.is_ddl();
    if ddl {
        flush(sink, shared, unflushed)?;
    }
    // Key and value bytes: what the sink writes, and what `Status::bytes_acked` counts.
    unflushed.bytes += batch
        .messages
        .iter()
        .map(|m| m.key.len() + m.value.len())
        .sum::<usize>();
    unflushed.messages += batch.messages.len();
    sink.write(&mut batch)?;
    // The messages are the sink's now (written or buffered); the quota stays held by
    // the ack until the flush makes them durable.
    unflushed.acks.push(batch.ack);
    if ddl {
        flush(sink, shared, unflushed)?;
    }
    Ok(())
}

fn flush(sink: &mut dyn Sink, shared: &Shared, unflushed: &mut Unflushed) -> Result<()> {
    if unflushed.acks.is_empty() {
        return Ok(());
    }
    sink.flush()?;
    let counters = &shared.counters;
    counters.bytes_acked.add(unflushed.bytes as u64);
    counters.batches_acked.add(unflushed.acks.len() as u64);
    for ack in unflushed.acks.drain(..) {
        counters.events_acked.add(ack.events);
        ack.complete();
    }
    unflushed.bytes = 0;
    unflushed.messages = 0;
    shared.signal.notify();
    Ok(())
}
