//! The receipt log: decision receipts from the filters, appended durably to SQLite, sealed into
//! an RFC 6962 Merkle log by signed checkpoints, and exported for offline verification.
//!
//! - [`store`]: the SQLite store (WAL, `synchronous=FULL`): one transaction per batch, leaf
//!   indexes assigned in order, leaf hashes kept for roots and proofs.
//! - [`log`]: [`ReceiptLog`], the service object: append, seal (one KMS call per checkpoint),
//!   rotate the signing key (recorded as a log entry and vouched for by the old version),
//!   proofs and exports.
//! - [`export`]: the JSON proof bundle and whole-log export formats.

pub mod ingest;
pub(crate) mod leaf_source;
pub mod log;
pub mod store;
pub mod stream;

use knhk_core::checkpoint::CheckpointError;
use knhk_core::merkle::MerkleError;
use knhk_core::receipt::ReceiptError;

pub use self::log::ReceiptLog;
pub use knhk_core::export::{ConsistencyStep, LogExport, ProofBundle, SignedCheckpoint};
/// The export formats (moved to [`knhk_core::export`], shared with every verifier).
pub mod export {
    pub use knhk_core::export::*;
}
pub use store::ReceiptStore;

use crate::kms::KmsError;

/// Errors of the receipt log subsystem.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptsError {
    /// A SQLite operation failed.
    #[error("receipt store {op}: {source}")]
    Sqlite {
        /// What was being done.
        op: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// A batch or stored entry did not decode.
    #[error("malformed receipts: {0}")]
    Malformed(#[from] ReceiptError),
    /// Signing or reading keys failed.
    #[error("signing: {0}")]
    Kms(#[from] KmsError),
    /// A checkpoint could not be built or parsed.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// A proof could not be built for the requested range.
    #[error("proof: {0}")]
    Merkle(#[from] MerkleError),
    /// The store was created for another log origin.
    #[error("store belongs to log {stored:?}, but this agent is configured as {configured:?}")]
    OriginMismatch {
        /// Origin recorded in the store.
        stored: String,
        /// Origin configured now.
        configured: String,
    },
    /// The store's contents contradict themselves (gap in indexes, root differs from a
    /// checkpoint, undecodable row).
    #[error("receipt store is corrupt: {0}")]
    Corrupt(String),
    /// A leaf index or tree size beyond the log.
    #[error("index {index} is beyond the log size {size}")]
    OutOfRange {
        /// What was asked for.
        index: u64,
        /// Current size.
        size: u64,
    },
    /// No checkpoint covers the requested leaf yet.
    #[error("leaf {index} is not covered by a checkpoint yet")]
    NotSealed {
        /// The leaf.
        index: u64,
    },
    /// The entry's payload was removed by retention (its leaf hash remains).
    #[error(
        "leaf {index} was pruned by retention: its payload is gone, its hash remains in the log"
    )]
    Pruned {
        /// The leaf.
        index: u64,
    },
    /// A lock was poisoned by a panic elsewhere.
    #[error("receipt store lock poisoned")]
    Poisoned,
    /// A receipt claims a config epoch the agent never issued; nothing of the batch was
    /// appended.
    #[error("receipt {index} of the batch claims config epoch {epoch}, but the newest epoch this agent issued is {issued}; nothing was appended")]
    UnknownEpoch {
        /// Position in the batch.
        index: usize,
        /// The epoch claimed.
        epoch: u64,
        /// The newest epoch issued.
        issued: u64,
    },
    /// The digest key could not be read or created.
    #[error("digest key {0}")]
    DigestKey(String),
}

impl ReceiptsError {
    /// A short, stable name of the failure (the `error.type` of ingest and seal spans).
    pub fn kind(&self) -> &'static str {
        match self {
            ReceiptsError::Sqlite { .. } => "sqlite",
            ReceiptsError::Malformed(_) => "malformed",
            ReceiptsError::Kms(e) => e.kind(),
            ReceiptsError::Checkpoint(_) => "checkpoint",
            ReceiptsError::Merkle(_) => "merkle",
            ReceiptsError::OriginMismatch { .. } => "origin_mismatch",
            ReceiptsError::Corrupt(_) => "corrupt",
            ReceiptsError::OutOfRange { .. } => "out_of_range",
            ReceiptsError::NotSealed { .. } => "not_sealed",
            ReceiptsError::Pruned { .. } => "pruned",
            ReceiptsError::Poisoned => "poisoned",
            ReceiptsError::UnknownEpoch { .. } => "unknown_epoch",
            ReceiptsError::DigestKey(_) => "digest_key",
        }
    }
}
