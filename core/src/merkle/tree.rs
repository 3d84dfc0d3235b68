//! [`Tree`]: every leaf hash plus the root of every complete, aligned power-of-two subtree, so
//! roots at any size and inclusion and consistency proofs cost O(log² n) hashes instead of
//! re-hashing every leaf (what the slice functions of [`super`] do).
//!
//! RFC 6962's recursion only ever splits a range `[start, end)` into a left part of `k` leaves
//! (the largest power of two below its size) starting at a multiple of `k`, so every left part
//! is one cached node, and the right part recurses: O(log n) cached nodes per range root.

use super::{node_hash, split, MerkleError, EMPTY_ROOT};
use crate::merkle::Hash;

/// A growing Merkle tree with cached complete subtrees (about twice the leaf hashes' memory).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    /// `levels[h][i]`: root of leaves `i * 2^h .. (i + 1) * 2^h`; `levels[0]` are the leaves.
    levels: Vec<Vec<Hash>>,
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl Tree {
    /// The empty tree.
    pub fn new() -> Self {
        Tree {
            levels: vec![Vec::new()],
        }
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        to_u64(self.leaves().len())
    }

    /// The leaf hashes.
    pub fn leaves(&self) -> &[Hash] {
        self.levels.first().map_or(&[], Vec::as_slice)
    }

    /// Append a leaf hash, completing the subtrees it closes.
    pub fn push(&mut self, leaf: Hash) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        let mut h = 0;
        let mut node = leaf;
        loop {
            if self.levels.len() == h {
                self.levels.push(Vec::new());
            }
            let level = &mut self.levels[h];
            level.push(node);
            if level.len() % 2 == 1 {
                return;
            }
            let n = level.len();
            node = node_hash(&level[n - 2], &level[n - 1]);
            h += 1;
        }
    }

    /// MTH of leaves `start..end` where the range arises from RFC 6962's recursion from 0
    /// (every power-of-two range is aligned); `end > start`.
    fn range_root(&self, start: usize, end: usize) -> Hash {
        let n = end - start;
        if n.is_power_of_two() {
            let h = n.trailing_zeros() as usize;
            if let Some(node) = self.levels.get(h).and_then(|l| l.get(start >> h)) {
                return *node;
            }
        }
        if n == 1 {
            return self.leaves().get(start).copied().unwrap_or(EMPTY_ROOT);
        }
        let k = split(n);
        node_hash(
            &self.range_root(start, start + k),
            &self.range_root(start + k, end),
        )
    }

    fn checked(&self, size: u64) -> Result<usize, MerkleError> {
        usize::try_from(size)
            .ok()
            .filter(|s| *s <= self.leaves().len())
            .ok_or(MerkleError::SizeOrder {
                first: size,
                second: self.size(),
            })
    }

    /// Root over the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, MerkleError> {
        let n = self.checked(size)?;
        Ok(if n == 0 {
            EMPTY_ROOT
        } else {
            self.range_root(0, n)
        })
    }

    /// Audit path of leaf `index` in the tree of the first `size` leaves (RFC 6962 §2.1.1).
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, MerkleError> {
        let n = self.checked(size)?;
        let m = usize::try_from(index)
            .ok()
            .filter(|m| *m < n)
            .ok_or(MerkleError::IndexOutOfRange { index, size })?;
        let mut out = Vec::new();
        self.path(m, 0, n, &mut out);
        Ok(out)
    }

    fn path(&self, m: usize, start: usize, end: usize, out: &mut Vec<Hash>) {
        let n = end - start;
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, start, start + k, out);
            out.push(self.range_root(start + k, end));
        } else {
            self.path(m - k, start + k, end, out);
            out.push(self.range_root(start, start + k));
        }
    }

    /// Consistency proof from the first `first` leaves to the first `second` (RFC 6962
    /// §2.1.2); empty when `first` is 0 or equals `second`.
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, MerkleError> {
        let n = self.checked(second)?;
        let m = usize::try_from(first)
            .ok()
            .filter(|m| *m <= n)
            .ok_or(MerkleError::SizeOrder { first, second })?;
        let mut out = Vec::new();
        if m > 0 {
            self.subproof(m, 0, n, true, &mut out);
        }
        Ok(out)
    }

    fn subproof(&self, m: usize, start: usize, end: usize, complete: bool, out: &mut Vec<Hash>) {
        let n = end - start;
        if m == n {
            if !complete {
                out.push(self.range_root(start, end));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, start + k, complete, out);
            out.push(self.range_root(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, out);
            out.push(self.range_root(start, start + k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{consistency_proof, inclusion_proof, leaf_hash, root};

    /// Roots and proofs equal the slice functions' for every size, index and pair of sizes
    /// up to 70 leaves.
    #[test]
    fn matches_the_slice_functions() {
        let leaves: Vec<Hash> = (0u32..70).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        let mut tree = Tree::new();
        assert_eq!(tree.root_at(0), Ok(EMPTY_ROOT));
        for leaf in &leaves {
            tree.push(*leaf);
        }
        assert_eq!(tree.size(), 70);
        for n in 0..=70usize {
            let size = n as u64;
            assert_eq!(tree.root_at(size).unwrap(), root(&leaves[..n]), "root {n}");
            for i in 0..n {
                assert_eq!(
                    tree.inclusion_proof(i as u64, size).unwrap(),
                    inclusion_proof(&leaves[..n], i as u64).unwrap(),
                    "inclusion {i} in {n}"
                );
            }
            for m in 0..=n {
                assert_eq!(
                    tree.consistency_proof(m as u64, size).unwrap(),
                    consistency_proof(&leaves[..n], m as u64).unwrap(),
                    "consistency {m} to {n}"
                );
            }
        }
        assert!(tree.root_at(71).is_err());
        assert!(tree.inclusion_proof(5, 5).is_err());
        assert!(tree.consistency_proof(6, 5).is_err());
    }
}
