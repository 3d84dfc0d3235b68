//! What a tlog-tiles client computes from fetched tiles: hashes of any subtree, the root, an
//! inclusion proof, a proof bundle identical to the agent's own, and a full audit.
//!
//! [`Tiles`] holds what was fetched. A computation that reaches a resource it does not hold
//! records its path and goes on with zeros, so one pass names everything it needs: the caller
//! fetches [`Tiles::take_missing`] and runs it again, until nothing is missing (the result of a
//! pass that missed something is meaningless and is discarded).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use super::layout::{hashes_at, tile_for, tiles_between, TILE_HEIGHT, TILE_WIDTH};
use super::note::Opened;
use super::{bundle, TileError, TileId};
use crate::export::{OriginProof, ProofBundle, BUNDLE_FORMAT};
use crate::limits::MAX_BATCH_RECORDS;
use crate::merkle::{self, leaf_hash, node_hash, Hash, EMPTY_ROOT};
use crate::receipt::{LogEntry, ENTRY_KIND_BATCH_ORIGIN, ENTRY_KIND_RECEIPT};

/// The tiles and bundles fetched for a tree of `size` leaves.
#[derive(Debug, Default)]
pub struct Tiles {
    size: u64,
    fetched: BTreeMap<String, Vec<u8>>,
    missing: RefCell<BTreeSet<String>>,
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

impl Tiles {
    /// Nothing fetched yet, for a tree of `size` leaves (the verified checkpoint's size).
    pub fn new(size: u64) -> Self {
        Tiles {
            size,
            ..Tiles::default()
        }
    }

    /// The tree size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Add a fetched resource.
    pub fn insert(&mut self, path: String, bytes: Vec<u8>) {
        self.fetched.insert(path, bytes);
    }

    /// The paths the last computations needed and did not have (and forget them).
    pub fn take_missing(&self) -> BTreeSet<String> {
        std::mem::take(&mut self.missing.borrow_mut())
    }

    fn get(&self, path: String) -> Option<&[u8]> {
        match self.fetched.get(&path) {
            Some(b) => Some(b),
            None => {
                self.missing.borrow_mut().insert(path);
                None
            }
        }
    }

    /// Hash `j` of `level`.
    pub fn hash(&self, level: u8, j: u64) -> Result<Hash, TileError> {
        let tile = tile_for(level, j, self.size).ok_or_else(|| {
            TileError::Mismatch(format!(
                "hash {j} of level {level} is not complete in a tree of {} leaves",
                self.size
            ))
        })?;
        let Some(bytes) = self.get(tile.path()) else {
            return Ok([0; 32]);
        };
        if bytes.len() != tile.byte_len() {
            return Err(TileError::TileLength {
                path: tile.path(),
                len: bytes.len(),
                expected: tile.byte_len(),
            });
        }
        let at = usize::try_from(j - tile.first()).unwrap_or(0) * 32;
        let mut out = [0; 32];
        out.copy_from_slice(&bytes[at..at + 32]);
        Ok(out)
    }

    /// The entries of level-0 tile `tile` (empty when not fetched yet).
    pub fn bundle(&self, tile: TileId) -> Result<Vec<Vec<u8>>, TileError> {
        match self.get(tile.entries_path()) {
            Some(bytes) => bundle::decode(tile, bytes),
            None => Ok(vec![Vec::new(); usize::from(tile.width)]),
        }
    }

    /// Entry `index`: its bytes, empty when pruned.
    pub fn entry(&self, index: u64) -> Result<Vec<u8>, TileError> {
        let tile = tile_for(0, index, self.size).ok_or_else(|| {
            TileError::Mismatch(format!(
                "entry {index} is outside a tree of {} leaves",
                self.size
            ))
        })?;
        let mut entries = self.bundle(tile)?;
        let at = usize::try_from(index - tile.first()).unwrap_or(0);
        Ok(std::mem::take(&mut entries[at]))
    }

    /// Merkle Tree Hash of leaves `lo..hi` (`lo < hi <= size`).
    pub fn range_hash(&self, lo: u64, hi: u64) -> Result<Hash, TileError> {
        let n = hi - lo;
        if n.is_power_of_two() && lo.is_multiple_of(n) {
            let k = n.trailing_zeros();
            let level = u8::try_from(k / TILE_HEIGHT).unwrap_or(u8::MAX);
            let first = lo >> (TILE_HEIGHT * u32::from(level));
            let count = 1u64 << (k % TILE_HEIGHT);
            let hashes = (first..first + count)
                .map(|j| self.hash(level, j))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(merkle::root(&hashes));
        }
        let k = split(n);
        Ok(node_hash(
            &self.range_hash(lo, lo + k)?,
            &self.range_hash(lo + k, hi)?,
        ))
    }

    /// The root of the whole tree.
    pub fn root(&self) -> Result<Hash, TileError> {
        if self.size == 0 {
            return Ok(EMPTY_ROOT);
        }
        self.range_hash(0, self.size)
    }

    /// The RFC 6962 audit path of leaf `index`.
    pub fn inclusion_proof(&self, index: u64) -> Result<Vec<Hash>, TileError> {
        if index >= self.size {
            return Err(TileError::Mismatch(format!(
                "leaf {index} is outside a tree of {} leaves",
                self.size
            )));
        }
        let mut path = Vec::new();
        self.path_rec(index, 0, self.size, &mut path)?;
        Ok(path)
    }

    fn path_rec(&self, m: u64, lo: u64, hi: u64, out: &mut Vec<Hash>) -> Result<(), TileError> {
        if hi - lo <= 1 {
            return Ok(());
        }
        let k = split(hi - lo);
        if m < k {
            self.path_rec(m, lo, lo + k, out)?;
            out.push(self.range_hash(lo + k, hi)?);
        } else {
            self.path_rec(m - k, lo + k, hi, out)?;
            out.push(self.range_hash(lo, lo + k)?);
        }
        Ok(())
    }

    /// The batch origin leaf whose span holds receipt `index`, as the agent finds it: the
    /// nearest unpruned kind-6 entry at most [`MAX_BATCH_RECORDS`] before it whose count
    /// reaches `index`.
    fn origin_of(&self, index: u64) -> Result<Option<(u64, Vec<u8>)>, TileError> {
        let lowest = index.saturating_sub(MAX_BATCH_RECORDS as u64);
        for at in (lowest..index).rev() {
            let entry = self.entry(at)?;
            if entry.first() != Some(&ENTRY_KIND_BATCH_ORIGIN) {
                continue;
            }
            return Ok(match LogEntry::decode(&entry) {
                Ok(LogEntry::BatchOrigin(o)) if at + u64::from(o.count) >= index => {
                    Some((at, entry))
                }
                _ => None,
            });
        }
        Ok(None)
    }

    /// The proof bundle of leaf `index` against the checkpoint of `opened` (whose size this
    /// holds tiles for), field for field what the agent's `GET /v1/receipts/{index}/proof`
    /// (or, with cosignatures, `/v1/quorum/receipts/{index}/proof`) returns.
    pub fn proof_bundle(&self, opened: &Opened, index: u64) -> Result<ProofBundle, TileError> {
        let entry = self.entry(index)?;
        if entry.is_empty() && self.missing.borrow().is_empty() {
            return Err(TileError::Mismatch(format!(
                "entry {index} was pruned by retention: only its leaf hash is published"
            )));
        }
        let published = self.hash(0, index)?;
        if leaf_hash(&entry) != published && self.missing.borrow().is_empty() {
            return Err(TileError::Mismatch(format!(
                "entry {index} in its bundle does not hash to its leaf hash in tile level 0"
            )));
        }
        let origin = match entry.first() {
            Some(&ENTRY_KIND_RECEIPT) => match self.origin_of(index)? {
                Some((at, bytes)) => Some(OriginProof {
                    leaf_index: at,
                    entry: bytes,
                    inclusion_proof: self.inclusion_proof(at)?,
                }),
                None => None,
            },
            _ => None,
        };
        Ok(ProofBundle {
            format: BUNDLE_FORMAT.to_owned(),
            leaf_index: index,
            leaf_hash: published,
            entry,
            tree_size: opened.parsed.tree_size,
            root_hash: opened.parsed.root_hash,
            inclusion_proof: self.inclusion_proof(index)?,
            checkpoint: opened.checkpoint.clone(),
            public_key: opened.key.clone(),
            cosignatures: opened.cosignatures.clone(),
            origin,
        })
    }

    /// Check every tile and bundle of the tree against each other and against `root`: each
    /// hash of level `L ≥ 1` is the root of the 256 hashes below it, each entry hashes to its
    /// level-0 hash (a zero-length entry is a pruned payload), each entry decodes, and the
    /// tree's root is `root`.
    pub fn audit(&self, root: &Hash) -> Result<Audit, TileError> {
        let all = tiles_between(0, self.size);
        let mut report = Audit {
            tiles: all.len() as u64,
            ..Audit::default()
        };
        for level in 1..=u8::MAX {
            let count = hashes_at(level, self.size);
            if count == 0 {
                break;
            }
            for j in 0..count {
                let below = (j * TILE_WIDTH..(j + 1) * TILE_WIDTH)
                    .map(|i| self.hash(level - 1, i))
                    .collect::<Result<Vec<_>, _>>()?;
                if merkle::root(&below) != self.hash(level, j)? {
                    self.mismatch(format!(
                        "hash {j} of tile level {level} is not the root of the 256 hashes below it"
                    ))?;
                }
            }
        }
        for tile in all.iter().filter(|t| t.level == 0) {
            for (i, entry) in self.bundle(*tile)?.iter().enumerate() {
                let index = tile.first() + i as u64;
                if entry.is_empty() {
                    report.pruned += 1;
                    continue;
                }
                if leaf_hash(entry) != self.hash(0, index)? {
                    self.mismatch(format!(
                        "entry {index} does not hash to its leaf hash in tile level 0"
                    ))?;
                }
                if let Err(e) = LogEntry::decode(entry) {
                    self.mismatch(format!("entry {index} is not a log entry: {e}"))?;
                }
                report.entries += 1;
            }
        }
        if self.root()? != *root {
            self.mismatch("the tiles do not lead to the checkpoint's root hash".to_owned())?;
        }
        Ok(report)
    }

    /// A mismatch is an error only once everything needed was fetched.
    fn mismatch(&self, what: String) -> Result<(), TileError> {
        if self.missing.borrow().is_empty() {
            return Err(TileError::Mismatch(what));
        }
        Ok(())
    }
}

/// What [`Tiles::audit`] checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Audit {
    /// Hash tiles in the tree.
    pub tiles: u64,
    /// Entries present and checked.
    pub entries: u64,
    /// Entries published pruned (their hashes checked through the tree).
    pub pruned: u64,
}
