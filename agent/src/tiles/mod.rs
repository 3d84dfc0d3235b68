//! Publication of the receipt log in the C2SP `tlog-tiles` layout (hash tiles, entry bundles,
//! the signed checkpoint note) to a POSIX directory or S3-compatible object storage, and the
//! auditor's side: `knhk-agent verify --tiles URL`, which needs no agent.
//!
//! * [`config`]: the `[tiles]` table and where it points;
//! * [`store`]: opening the destination (`object_store`'s local file system or S3 client);
//! * [`publish`]: the publisher, run after every seal (and every quorum commit);
//! * [`audit`]: fetching what a check needs and judging it.
//!
//! The layout and every computation on it are in `knhk_core::tiles`.

pub mod audit;
pub mod config;
pub mod publish;
pub mod store;

pub use config::TilesConfig;
pub use publish::Publisher;

use knhk_core::tiles::TileError;

use crate::receipts::ReceiptsError;

/// Why publishing or reading tiles failed.
#[derive(Debug, thiserror::Error)]
pub enum TilesError {
    /// The object store refused or failed a read or write.
    #[error("object store {what} {path}: {source}")]
    Store {
        /// `read` or `write`.
        what: &'static str,
        /// The resource.
        path: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// The destination cannot be opened (bad URL, S3 settings).
    #[error("tiles destination: {0}")]
    Destination(String),
    /// The receipt log failed.
    #[error(transparent)]
    Receipts(#[from] ReceiptsError),
    /// The quorum state (which checkpoint is committed, its cosignatures) could not be read.
    #[error(transparent)]
    Quorum(#[from] crate::quorum::QuorumError),
    /// A blocking task that renders tiles from the log did not finish.
    #[error("tile rendering task failed: {0}")]
    Task(String),
    /// The tiles are inconsistent, missing or malformed.
    #[error(transparent)]
    Tile(#[from] TileError),
    /// The destination holds another log, or a longer one, than this agent's.
    #[error("the destination holds {0}")]
    Foreign(String),
}
