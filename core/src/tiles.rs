//! The C2SP `tlog-tiles` layout of a receipt log: what the agent publishes to a directory or an
//! object store after each seal, and what an auditor reads back without any agent running.
//!
//! * [`layout`]: tile coordinates, their paths, and which tiles a tree of a given size has;
//! * [`bundle`]: entry bundles (big-endian `u16` length-prefixed entries);
//! * [`note`]: the `checkpoint` resource, a C2SP signed note carrying the log's signature and
//!   the witnesses' cosignatures;
//! * [`read`]: roots, inclusion proofs and a full audit computed from fetched tiles.
//!
//! Pruned payloads: retention removes a receipt's payload but keeps its leaf hash, so a pruned
//! entry is published as a **zero-length entry** in its bundle (never a real entry: every knhk
//! log entry starts with its kind byte) while the level-0 tile keeps its hash. A bundle is
//! rewritten when retention prunes an entry in it; that is the only time a published bundle
//! changes.

pub mod bundle;
pub mod layout;
pub mod note;
pub mod read;

#[cfg(test)]
mod tests;

pub use layout::{TileId, CHECKPOINT_PATH, TILE_WIDTH};

/// Why tiles, bundles or a checkpoint note were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileError {
    /// A tile or bundle the computation needs was not fetched (or does not exist).
    #[error("missing {0}")]
    Missing(String),
    /// A hash tile has the wrong length for its width.
    #[error("{path} is {len} bytes, not {expected} (a tile of that width)")]
    TileLength {
        /// Its path.
        path: String,
        /// Its length.
        len: usize,
        /// The length its width requires.
        expected: usize,
    },
    /// An entry bundle does not decode to the number of entries its width requires.
    #[error("malformed entry bundle {path}: {reason}")]
    Bundle {
        /// Its path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// An entry longer than a bundle can frame (65,535 bytes).
    #[error("log entry {index} is {len} bytes, more than an entry bundle can hold")]
    EntryTooLong {
        /// Leaf index.
        index: u64,
        /// Its length.
        len: usize,
    },
    /// Hashes that must agree do not: the tiles were altered or are inconsistent.
    #[error("{0}")]
    Mismatch(String),
    /// The checkpoint note is malformed, or signed by no trusted key.
    #[error("checkpoint note: {0}")]
    Note(String),
}
