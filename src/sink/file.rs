//! `file:`: one JSON line per row or DDL event, appended to a file.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::sink::uri::SinkUri;
use crate::sink::{protocol_encoder, Batch, Encoder, Sink};

/// Write buffer of the file sink; flushed (and synced) at every acknowledgement.
const BUFFER_BYTES: usize = 256 << 10;

/// Appends each message's value and a newline to a file: one JSON line per row or DDL
/// event, no other lines. The file is opened (created if missing, appended to if not)
/// when the sink starts, on the sink thread.
///
/// Each flush writes the buffer and calls `fsync` (`sync_data`), so an acknowledged
/// event is on disk. `fsync` on files that cannot be synced, such as `/dev/null`
/// (`EINVAL`), is skipped; every other error, a full disk included, fails the sink.
pub struct FileSink {
    path: PathBuf,
    encoder: Arc<dyn Encoder>,
    out: Option<BufWriter<File>>,
}

impl FileSink {
    /// A sink writing to `path` with `encoder` (e.g. [`crate::codec::CanalJson`]).
    pub fn new(path: impl Into<PathBuf>, encoder: Arc<dyn Encoder>) -> FileSink {
        FileSink {
            path: path.into(),
            encoder,
            out: None,
        }
    }

    /// `file:///abs/path` or `file:rel/path`, with optional `protocol=`.
    pub(crate) fn from_uri(uri: &SinkUri) -> Result<FileSink> {
        uri.reject_unknown(&["protocol"])?;
        match uri.authority.as_deref() {
            None | Some("") | Some("localhost") => {}
            Some(host) => {
                return Err(Error::uri(
                    &uri.raw,
                    format!("file uris name no host (got {host:?}); write file:///abs/path or file:rel/path"),
                ))
            }
        }
        let path = url::form_urlencoded::parse(format!("p={}", uri.path).as_bytes())
            .next()
            .map(|(_, p)| p.into_owned())
            .unwrap_or_default();
        if path.is_empty() || path.ends_with('/') {
            return Err(Error::uri(&uri.raw, "missing file path"));
        }
        Ok(FileSink::new(path, protocol_encoder(uri)?))
    }

    fn context(&self, what: &str) -> String {
        format!("{what} {}", self.path.display())
    }

    /// The open file; opened here if `start` was not called (a sink used directly).
    fn out(&mut self) -> Result<&mut BufWriter<File>> {
        if self.out.is_none() {
            self.start()?;
        }
        Ok(self.out.as_mut().expect("opened above"))
    }
}

impl Sink for FileSink {
    fn encoder(&self) -> Arc<dyn Encoder> {
        Arc::clone(&self.encoder)
    }

    fn start(&mut self) -> Result<()> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::io(self.context("opening"), e))?;
        self.out = Some(BufWriter::with_capacity(BUFFER_BYTES, file));
        Ok(())
    }

    fn write(&mut self, batch: &mut Batch) -> Result<()> {
        let context = self.context("writing");
        let out = self.out()?;
        let mut written = || -> io::Result<()> {
            for m in batch.messages() {
                out.write_all(&m.value)?;
                out.write_all(b"\n")?;
            }
            Ok(())
        };
        written().map_err(|e| Error::io(context, e))
    }

    fn flush(&mut self) -> Result<()> {
        let (writing, syncing) = (self.context("writing"), self.context("syncing"));
        let out = self.out()?;
        out.flush().map_err(|e| Error::io(writing, e))?;
        match out.get_ref().sync_data() {
            Err(e) if e.raw_os_error() == Some(libc_einval()) => Ok(()),
            Err(e) => Err(Error::io(syncing, e)),
            Ok(()) => Ok(()),
        }
    }
}

/// `EINVAL` on Linux and the BSDs: fsync on a file that does not support it.
const fn libc_einval() -> i32 {
    22
}
