//! Cross-region quorum: every region's agent is the single writer of its own receipt log and a
//! witness of the other regions' logs; a checkpoint is *committed* once `threshold`
//! signatures are held — the region's own checkpoint signature plus C2SP `cosignature/v1`
//! cosignatures from peer witnesses.
//!
//! - [`config`]: the `[quorum]` table and legacy `KGC_SIDECAR_*` overrides.
//! - [`protocol`]: the JSON witness protocol (modelled on C2SP `tlog-witness`
//!   `add-checkpoint`, plus the entries the witness stores).
//! - [`witness`]: the witness side — verification, its SQLite state, its axum routes
//!   ([`witness_router`]).
//! - [`replicator`]: the log side — sends each new checkpoint with the missing entries to every
//!   peer, records acknowledgements and errors per checkpoint, decides commits ([`state`]).
//! - [`api`]: `GET /v1/quorum/…` status, per-checkpoint acknowledgements, proof bundles
//!   carrying cosignatures.
//!
//! Transport is injected: the witness is a plain [`axum::Router`] and the replicator posts with
//! the [`reqwest::Client`] it is given, so mutual TLS is a matter of serving the router on an
//! mTLS listener and handing in an mTLS client.

pub mod api;
pub mod config;
pub mod protocol;
pub mod replicator;
pub mod state;
pub mod witness;

use std::sync::Arc;

pub use config::{PeerConfig, QuorumConfig};
pub use replicator::Replicator;
pub use witness::{witness_router, Witness};

use crate::kms::KmsError;
use crate::receipts::{ReceiptLog, ReceiptsError};

/// Errors of the quorum subsystem: configuration, the witness's refusals (each distinct), and
/// storage or transport failures.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// A `[quorum]` setting (or its legacy variable) is invalid.
    #[error("invalid setting {setting}: {reason}")]
    InvalidConfig {
        /// The setting.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The witness does not know the checkpoint's origin.
    #[error("unknown log origin {0:?}")]
    UnknownOrigin(String),
    /// No trusted key of the log verifies the checkpoint signature.
    #[error("checkpoint signature rejected: {0}")]
    BadSignature(String),
    /// The checkpoint is smaller than the one already witnessed, and agrees with it: the log
    /// was rolled back.
    #[error("tree size rollback: witnessed size {witnessed}, offered {offered}")]
    Rollback {
        /// Size the witness has cosigned.
        witnessed: u64,
        /// Size offered.
        offered: u64,
    },
    /// The checkpoint contradicts what the witness holds (same size different root, or a root
    /// that the witnessed entries do not produce): a forked log.
    #[error("fork detected at tree size {size}: {detail}")]
    Fork {
        /// Size where the views diverge.
        size: u64,
        /// What differs.
        detail: String,
    },
    /// The request's old size is not the size the witness holds (C2SP 409).
    #[error("old size {offered} does not match the witnessed size {witnessed}")]
    OldSizeMismatch {
        /// Size the witness has cosigned.
        witnessed: u64,
        /// Old size in the request.
        offered: u64,
    },
    /// The consistency proof does not verify from the witnessed checkpoint.
    #[error("consistency proof from {from} to {to} does not verify: {detail}")]
    BadProof {
        /// Witnessed size.
        from: u64,
        /// Offered size.
        to: u64,
        /// Merkle error.
        detail: String,
    },
    /// The request is malformed or breaks a limit.
    #[error("malformed witness request: {0}")]
    Malformed(String),
    /// A peer answered the replicator with something unusable, or could not be reached.
    #[error("peer {region}: {reason}")]
    Peer {
        /// The peer's region.
        region: String,
        /// What happened.
        reason: String,
    },
    /// A SQLite operation failed.
    #[error("quorum store {op}: {source}")]
    Sqlite {
        /// What was being done.
        op: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The stored state contradicts itself.
    #[error("quorum store is corrupt: {0}")]
    Corrupt(String),
    /// The own receipt log failed.
    #[error(transparent)]
    Receipts(#[from] ReceiptsError),
    /// The witness key could not be opened or used.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// A lock was poisoned by a panic elsewhere.
    #[error("quorum state lock poisoned")]
    Poisoned,
}

impl QuorumError {
    /// A short, stable code for the error (`fork`, `rollback`, …), sent in witness answers.
    pub fn code(&self) -> &'static str {
        match self {
            QuorumError::InvalidConfig { .. } => "invalid_config",
            QuorumError::UnknownOrigin(_) => "unknown_origin",
            QuorumError::BadSignature(_) => "bad_signature",
            QuorumError::Rollback { .. } => "rollback",
            QuorumError::Fork { .. } => "fork",
            QuorumError::OldSizeMismatch { .. } => "old_size_mismatch",
            QuorumError::BadProof { .. } => "bad_proof",
            QuorumError::Malformed(_) => "malformed",
            QuorumError::Peer { .. } => "peer",
            QuorumError::Sqlite { .. }
            | QuorumError::Corrupt(_)
            | QuorumError::Receipts(_)
            | QuorumError::Kms(_)
            | QuorumError::Poisoned => "internal",
        }
    }
}

pub(crate) fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> QuorumError {
    move |source| QuorumError::Sqlite { op, source }
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Open a quorum store: [`crate::db::open`], its refusals as [`QuorumError`].
pub(crate) fn open_db(
    path: &std::path::Path,
    schema: &str,
    durability: crate::db::Durability,
) -> Result<rusqlite::Connection, QuorumError> {
    crate::db::open(path, schema, durability).map_err(|e| {
        e.into_store_error(
            |op, source| QuorumError::Sqlite { op, source },
            QuorumError::Corrupt,
        )
    })
}

/// The quorum subsystem of one agent: its witness and its replicator.
#[derive(Debug, Clone)]
pub struct Quorum {
    /// Witness of the peers' logs.
    pub witness: Arc<Witness>,
    /// Replicator of this region's log.
    pub replicator: Arc<Replicator>,
}

impl Quorum {
    /// Open the witness (key and `witness.db` in `data_dir`) and the replicator (`quorum.db`)
    /// for `log`, posting to peers with `client`.
    pub async fn open(
        config: &QuorumConfig,
        data_dir: &std::path::Path,
        log: Arc<ReceiptLog>,
        client: reqwest::Client,
    ) -> Result<Self, QuorumError> {
        let witness = Arc::new(Witness::open(config, data_dir).await?);
        let replicator = Arc::new(Replicator::open(config, data_dir, log, client)?);
        Ok(Quorum {
            witness,
            replicator,
        })
    }

    /// Every quorum route: `/v1/witness/…` and `/v1/quorum/…`.
    pub fn router(&self) -> axum::Router {
        witness_router(self.witness.clone()).merge(api::routes(self.replicator.clone()))
    }
}
