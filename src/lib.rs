//! # changefeed
//!
//! Move change events — row inserts, updates and deletes, DDL, watermarks — from many
//! producer threads into a sink (Kafka, a file, memory), in a plain synchronous program,
//! with memory bounded by a byte quota and a clean, reported stop when the sink fails.
//!
//! ```
//! use changefeed::{sink, Column, DispatcherManager, RowChange, TableName, Value};
//!
//! let (maintainer, heartbeats) = crossbeam_channel::bounded(64);
//! let manager = DispatcherManager::builder("orders-feed")
//!     .maintainer(maintainer)
//!     .start(sink::open("memory://?capacity=100")?)?;
//! let orders = manager.add_dispatcher(TableName::new("shop", "orders"))?;
//! let ts = changefeed::tso::now();
//! orders
//!     .send(RowChange::insert(
//!         TableName::new("shop", "orders"),
//!         ts,
//!         vec![Column::key("id", Value::Int(1)), Column::new("total", Value::Decimal("9.90".into()))],
//!     ))
//!     .map_err(|e| e.cause)?;
//! manager.flush(std::time::Duration::from_secs(10))?;
//! assert!(manager.checkpoint_ts() >= ts - 1);
//! manager.close()?;
//! // The last heartbeat says the changefeed is closed, and no error was reported.
//! let last = heartbeats.try_iter().last().unwrap();
//! assert!(last.closed && last.error.is_none());
//! # Ok::<(), changefeed::Error>(())
//! ```
//!
//! See `ARCHITECTURE.md` for the threads and the close order, and the [`error`] module
//! for every error code.

#![warn(missing_docs)]

pub mod codec;
mod deadline;
mod dispatcher;
pub mod error;
mod event;
mod heartbeat;
mod manager;
mod message;
mod progress;
mod quota;
mod shared;
pub mod sink;
mod sink_thread;
mod status;
pub mod supervisor;
mod table;
pub mod tso;
mod watcher;

pub use dispatcher::{Dispatcher, MAX_BATCH_BYTES, MAX_BATCH_EVENTS};
pub use error::{Error, Result, SendError, TrySendError};
pub use event::{Column, DdlChange, Event, RowChange, RowKind, TableName, Value};
pub use manager::{
    default_dispatcher_threads, default_node, Builder, DispatcherManager, DEFAULT_CHANNEL_CAPACITY,
    DEFAULT_CLOSE_TIMEOUT, DEFAULT_DISPATCHER_CAPACITY, DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MEMORY_QUOTA, DEFAULT_REPORT_HANDOFF, MAX_DEFAULT_DISPATCHER_THREADS,
};
pub use shared::REPORT_TIMEOUT;
pub use status::{DispatcherStatus, HeartBeat, RunningError, State, Status};
pub use supervisor::{Feed, SinkFactory, Supervisor, SupervisorState};

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
