//! What `--source` names, and the [`Feed`] that runs a source against a changefeed.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use changefeed::{DispatcherManager, Error, Feed, Result};
use crossbeam_channel::{bounded, RecvTimeoutError};

use crate::generator::{GenSource, GenSpec};
use crate::jsonl::{Input, JsonLinesSource};
use crate::progress::Meter;

/// How often the feed samples the changefeed's status for the progress line.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Each wait of the final flush; between waits the status is sampled again.
const FLUSH_STEP: Duration = Duration::from_millis(250);

/// A parsed `--source`.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceSpec {
    /// `gen:k=v,…`
    Gen(GenSpec),
    /// `file:PATH` or `-`.
    Lines(Input),
}

impl SourceSpec {
    /// `gen:[k=v,…]`, `file:PATH` (also `file:///abs/path`), or `-` for standard input.
    pub fn parse(s: &str) -> std::result::Result<SourceSpec, String> {
        if s == "-" {
            return Ok(SourceSpec::Lines(Input::Stdin));
        }
        if s == "gen" {
            return Ok(SourceSpec::Gen(GenSpec::default()));
        }
        if let Some(params) = s.strip_prefix("gen:") {
            return GenSpec::parse(params).map(SourceSpec::Gen);
        }
        if let Some(path) = s.strip_prefix("file:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err("file: needs a path, e.g. file:changes.jsonl".to_string());
            }
            return Ok(SourceSpec::Lines(Input::File(PathBuf::from(path))));
        }
        Err(format!(
            "unknown source {s:?}; expected gen:[tables=N,rows=N,row-size=N,seed=N,spread=N,rate=N], file:PATH, or - for standard input"
        ))
    }

    /// The source this spec describes.
    pub fn build(&self) -> Box<dyn Source> {
        match self {
            SourceSpec::Gen(spec) => Box::new(GenSource::new(spec.clone())),
            SourceSpec::Lines(input) => Box::new(JsonLinesSource::new(input.clone())),
        }
    }
}

/// Sends a source's events into a changefeed.
pub trait Source: Send {
    /// Adds the dispatchers and sends every event above `from_ts` (a restart's
    /// checkpoint, or `--start-ts`), until the input ends or `stop` is set. Returns the
    /// first failure: a send's cause (the changefeed closed or failed), or a source
    /// error.
    fn feed(&mut self, manager: &DispatcherManager, from_ts: u64, stop: &AtomicBool) -> Result<()>;
}

/// The [`Feed`] the command runs, supervised or not: runs the source, then waits until
/// everything it sent is acknowledged, sampling the changefeed's status for the progress
/// line all along.
pub struct CommandFeed {
    source: Box<dyn Source>,
    stop: Arc<AtomicBool>,
    meter: Arc<Meter>,
}

impl CommandFeed {
    pub fn new(source: Box<dyn Source>, stop: Arc<AtomicBool>, meter: Arc<Meter>) -> CommandFeed {
        CommandFeed {
            source,
            stop,
            meter,
        }
    }
}

impl Feed for CommandFeed {
    fn run(&mut self, manager: &DispatcherManager, from_ts: u64) -> Result<()> {
        let attempt = self.meter.begin_attempt();
        let (done_tx, done) = bounded::<()>(0);
        let meter = &self.meter;
        let outcome = thread::scope(|s| {
            let sampler = thread::Builder::new()
                .name("progress".to_string())
                .spawn_scoped(s, move || {
                    // Until `done_tx` is dropped.
                    while let Err(RecvTimeoutError::Timeout) = done.recv_timeout(SAMPLE_EVERY) {
                        meter.record(attempt, &manager.status());
                    }
                })
                .map_err(|e| Error::ThreadSpawn {
                    thread: "progress".to_string(),
                    source: Arc::new(e),
                })?;
            let outcome = self
                .source
                .feed(manager, from_ts, &self.stop)
                .and_then(|()| flush(manager));
            drop(done_tx);
            let _ = sampler.join();
            outcome
        });
        self.meter.record(attempt, &manager.status());
        outcome
    }
}

/// Waits until every event sent is acknowledged, or the changefeed fails or closes.
fn flush(manager: &DispatcherManager) -> Result<()> {
    loop {
        match manager.flush(FLUSH_STEP) {
            Err(Error::FlushTimeout { .. }) => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            SourceSpec::parse("gen:").unwrap(),
            SourceSpec::Gen(GenSpec::default())
        );
        assert_eq!(
            SourceSpec::parse("gen").unwrap(),
            SourceSpec::Gen(GenSpec::default())
        );
        assert_eq!(
            SourceSpec::parse("-").unwrap(),
            SourceSpec::Lines(Input::Stdin)
        );
        assert_eq!(
            SourceSpec::parse("file:in.jsonl").unwrap(),
            SourceSpec::Lines(Input::File("in.jsonl".into()))
        );
        assert_eq!(
            SourceSpec::parse("file:///tmp/in.jsonl").unwrap(),
            SourceSpec::Lines(Input::File("/tmp/in.jsonl".into()))
        );
        assert!(SourceSpec::parse("kafka://x")
            .unwrap_err()
            .contains("unknown source"));
        assert!(SourceSpec::parse("file:").unwrap_err().contains("path"));
        assert!(SourceSpec::parse("gen:rows=x")
            .unwrap_err()
            .contains("rows"));
    }
}
