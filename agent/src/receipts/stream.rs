//! The log export ([`super::LogExport`], format `knhk-log-export/v1`) written as it is read:
//! entries are read page by page from a snapshot of the log and handed on in chunks, so one
//! export holds about [`CHUNK_BYTES`] plus a page of rows whatever the log's size, and six
//! concurrent exports hold six times that. The bytes parse as the same `LogExport` the
//! in-memory export produced (`pruned_hashes` is always present, empty when nothing was
//! pruned).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use knhk_core::checkpoint::Checkpoint;

use super::export::{ConsistencyStep, EXPORT_FORMAT};
use super::{ReceiptStore, ReceiptsError};

/// A chunk is handed on once it holds this many bytes.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Rows read from SQLite at a time.
const PAGE_ROWS: u64 = 4096;

/// Why a streamed export stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Reading the log failed.
    #[error(transparent)]
    Log(#[from] ReceiptsError),
    /// The receiver went away (the client disconnected).
    #[error("the export's receiver went away")]
    Gone,
}

struct Chunks<F: FnMut(Vec<u8>) -> bool> {
    buf: Vec<u8>,
    sink: F,
}

impl<F: FnMut(Vec<u8>) -> bool> Chunks<F> {
    fn push(&mut self, bytes: &[u8]) -> Result<(), StreamError> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn json<T: serde::Serialize>(&mut self, value: &T) -> Result<(), StreamError> {
        serde_json::to_writer(&mut self.buf, value)
            .map_err(|e| ReceiptsError::Corrupt(format!("encoding the export: {e}")))?;
        if self.buf.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn b64(&mut self, bytes: &[u8]) -> Result<(), StreamError> {
        self.buf.push(b'"');
        self.buf
            .extend_from_slice(STANDARD.encode(bytes).as_bytes());
        self.push(b"\"")
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES + 4096));
        if (self.sink)(chunk) {
            Ok(())
        } else {
            Err(StreamError::Gone)
        }
    }
}

/// Write the export of `store` (a [`ReceiptStore::reader`] snapshot) to `sink` in chunks;
/// `sink` returns false when its receiver is gone.
pub fn write_export(
    store: &ReceiptStore,
    sink: impl FnMut(Vec<u8>) -> bool,
) -> Result<(), StreamError> {
    let mut out = Chunks {
        buf: Vec::with_capacity(CHUNK_BYTES + 4096),
        sink,
    };
    let size = store.size();
    out.push(b"{\"format\":")?;
    out.json(&EXPORT_FORMAT)?;
    out.push(b",\"origin\":")?;
    out.json(&store.origin())?;
    out.push(b",\"entries\":[")?;
    let mut from = 0;
    while from < size {
        let rows = store.entries(from, PAGE_ROWS.min(size - from))?;
        if rows.is_empty() {
            return Err(ReceiptsError::Corrupt(format!("no rows from leaf {from}")).into());
        }
        for (i, entry) in &rows {
            if *i != from {
                return Err(ReceiptsError::Corrupt(format!("leaf {from} is missing")).into());
            }
            if *i > 0 {
                out.push(b",")?;
            }
            out.b64(entry)?;
            from += 1;
        }
    }
    // A second pass over the snapshot: the pruned leaves' hashes, a page at a time.
    out.push(b"],\"pruned_hashes\":[")?;
    let (mut from, mut n) = (0, 0u64);
    loop {
        let page = store.pruned_indexes(from, size, PAGE_ROWS)?;
        let Some(&last) = page.last() else { break };
        for i in page {
            if n > 0 {
                out.push(b",")?;
            }
            out.b64(&store.leaf_hash_at(i)?)?;
            n += 1;
        }
        from = last + 1;
    }
    out.push(b"],\"checkpoints\":[")?;
    let mut previous: Option<u64> = None;
    let mut steps = Vec::new();
    let mut first = true;
    for cp in store.checkpoints()? {
        let tree_size = Checkpoint::parse(&cp.text)
            .map_err(ReceiptsError::from)?
            .tree_size;
        // Sealed after the snapshot was taken: outside the rows read.
        if tree_size > size {
            continue;
        }
        if !first {
            out.push(b",")?;
        }
        first = false;
        out.json(&cp)?;
        if let Some(from) = previous {
            steps.push((from, tree_size));
        }
        previous = Some(tree_size);
    }
    out.push(b"],\"consistency\":[")?;
    for (n, (from, to)) in steps.into_iter().enumerate() {
        if n > 0 {
            out.push(b",")?;
        }
        out.json(&ConsistencyStep {
            from,
            to,
            proof: store.consistency_proof(from, to)?,
        })?;
    }
    out.push(b"],\"public_keys\":")?;
    out.json(&store.public_keys()?)?;
    out.push(b"}")?;
    out.flush()
}
