//! Leaf hashes read back from SQLite for pruned Merkle trees (the agent's own log and the logs
//! it witnesses keep only subtrees of [`LEAF_GROUP_LOG2`]-sized groups and up in memory).

use knhk_core::merkle::{Hash, LeafSource, MerkleError};
use rusqlite::{params, Connection, OptionalExtension as _};

/// log2 of the leaf group below which in-memory Merkle trees keep nothing: groups of 256
/// leaves, so a tree holds about 0.25 bytes per leaf instead of 64, and a proof reads at most
/// two groups (16 KiB of hashes) from SQLite.
pub(crate) const LEAF_GROUP_LOG2: u32 = 8;

/// The `hash` column of a leaf table, by index range (and origin, for witnessed logs).
pub(crate) struct SqlLeaves<'a> {
    conn: &'a Connection,
    /// `SELECT hash … WHERE idx >= ? AND idx < ? ORDER BY idx`, with `origin = ?` first when set.
    query: &'static str,
    origin: Option<&'a str>,
    /// Whether the store keeps a `nodes` table (the agent's own log does).
    nodes: bool,
}

impl<'a> SqlLeaves<'a> {
    /// The agent's own log: table `leaves`.
    pub(crate) fn own(conn: &'a Connection) -> Self {
        SqlLeaves {
            conn,
            query: "SELECT hash FROM leaves WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
            origin: None,
            nodes: true,
        }
    }

    /// A witnessed log: table `entries` of the witness store, rows of `origin`.
    pub(crate) fn witnessed(conn: &'a Connection, origin: &'a str) -> Self {
        SqlLeaves {
            conn,
            query:
                "SELECT hash FROM entries WHERE origin = ?3 AND idx >= ?1 AND idx < ?2 ORDER BY idx",
            origin: Some(origin),
            nodes: false,
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> MerkleError {
    MerkleError::LeavesUnavailable(e.to_string())
}

impl LeafSource for SqlLeaves<'_> {
    fn leaf_hashes(&self, start: u64, end: u64) -> Result<Vec<Hash>, MerkleError> {
        let (start, end) = (
            i64::try_from(start).map_err(unavailable)?,
            i64::try_from(end).map_err(unavailable)?,
        );
        let mut stmt = self.conn.prepare_cached(self.query).map_err(unavailable)?;
        let read = |r: &rusqlite::Row<'_>| r.get::<_, Vec<u8>>(0);
        let rows = match self.origin {
            Some(origin) => stmt.query_map(params![start, end, origin], read),
            None => stmt.query_map(params![start, end], read),
        }
        .map_err(unavailable)?;
        let mut out = Vec::new();
        for row in rows {
            let hash = row.map_err(unavailable)?;
            out.push(Hash::try_from(hash.as_slice()).map_err(|_| {
                unavailable(format!(
                    "a stored leaf hash of {start}..{end} is not 32 bytes"
                ))
            })?);
        }
        Ok(out)
    }

    fn node(&self, level: u32, index: u64) -> Result<Option<Hash>, MerkleError> {
        if !self.nodes {
            return Ok(None);
        }
        let index = i64::try_from(index).map_err(unavailable)?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT hash FROM nodes WHERE level = ?1 AND idx = ?2")
            .map_err(unavailable)?;
        let hash: Option<Vec<u8>> = stmt
            .query_row(params![level, index], |r| r.get(0))
            .optional()
            .map_err(unavailable)?;
        hash.map(|h| {
            Hash::try_from(h.as_slice())
                .map_err(|_| unavailable(format!("stored node {level}/{index} is not 32 bytes")))
        })
        .transpose()
    }
}
