//! RFC 6962 / RFC 9162 Merkle tree hashing: roots, inclusion proofs and consistency proofs.
//!
//! Leaves are hashed as `SHA-256(0x00 || data)` and interior nodes as
//! `SHA-256(0x01 || left || right)`; the tree over `n` leaves splits at the largest power of two
//! strictly below `n` (RFC 6962 §2.1). Generation works over a slice of *leaf hashes* (what the
//! agent stores); verification follows the iterative algorithms of RFC 9162 §2.1.3.2 and
//! §2.1.4.2, so it needs only the proof, never the tree.
//!
//! [`Frontier`] keeps the O(log n) right edge of a growing tree so the agent can seal a
//! checkpoint without re-reading every leaf; [`Tree`] also caches complete subtrees so proofs
//! against any size cost O(log² n) hashes, and can keep only the larger subtrees in memory,
//! reading older leaf hashes from a [`LeafSource`].

use sha2::{Digest, Sha256};

mod tree;

pub use tree::{LeafSource, Tree};

/// A SHA-256 digest: a leaf hash, node hash or root.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of the empty string (RFC 6962 §2.1).
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Why a Merkle operation was refused or a proof did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// A proof was asked for a leaf at or past the tree size.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The leaf index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A tree size larger than the leaves available (generation) or a first size larger than the
    /// second (consistency).
    #[error("tree size {first} cannot precede tree size {second}")]
    SizeOrder {
        /// The size that should be smaller or equal.
        first: u64,
        /// The size that should be larger or equal.
        second: u64,
    },
    /// The proof has more or fewer hashes than the sizes require.
    #[error("proof has the wrong number of hashes for these tree sizes")]
    ProofLength,
    /// The proof recomputes a different root than the one claimed.
    #[error("proof does not lead to the claimed root hash")]
    RootMismatch,
    /// A consistency proof's recomputed old root differs from the claimed old root.
    #[error("proof does not lead to the claimed earlier root hash")]
    FirstRootMismatch,
    /// A pruned tree could not read the leaf hashes a proof needed.
    #[error("leaf hashes unavailable: {0}")]
    LeavesUnavailable(String),
}

/// `SHA-256(0x00 || data)`: the hash of one log entry.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two strictly below `n` (`n >= 2`): RFC 6962's split point.
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    let mut k = 1usize;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// Merkle Tree Hash (RFC 6962 §2.1) of a list of leaf hashes; [`EMPTY_ROOT`] for none.
pub fn root(leaves: &[Hash]) -> Hash {
    let mut frontier = Frontier::new();
    for leaf in leaves {
        frontier.push(*leaf);
    }
    frontier.root()
}

/// MTH of a non-empty range, by recursion (depth is at most 64).
fn subtree_root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => EMPTY_ROOT,
        [only] => *only,
        _ => {
            let k = split(leaves.len());
            node_hash(&subtree_root(&leaves[..k]), &subtree_root(&leaves[k..]))
        }
    }
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The audit path (RFC 6962 §2.1.1) for leaf `index` in the tree made of `leaves`.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>, MerkleError> {
    let size = to_u64(leaves.len());
    let idx = usize::try_from(index)
        .ok()
        .filter(|i| *i < leaves.len())
        .ok_or(MerkleError::IndexOutOfRange { index, size })?;
    let mut path = Vec::new();
    path_rec(idx, leaves, &mut path);
    Ok(path)
}

fn path_rec(m: usize, leaves: &[Hash], out: &mut Vec<Hash>) {
    if leaves.len() <= 1 {
        return;
    }
    let k = split(leaves.len());
    if m < k {
        path_rec(m, &leaves[..k], out);
        out.push(subtree_root(&leaves[k..]));
    } else {
        path_rec(m - k, &leaves[k..], out);
        out.push(subtree_root(&leaves[..k]));
    }
}

/// The consistency proof (RFC 6962 §2.1.2) that the tree of the first `first` leaves is a prefix
/// of the tree made of all of `leaves`. Empty when `first` is 0 or equals the full size.
pub fn consistency_proof(leaves: &[Hash], first: u64) -> Result<Vec<Hash>, MerkleError> {
    let second = to_u64(leaves.len());
    let m = usize::try_from(first)
        .ok()
        .filter(|m| *m <= leaves.len())
        .ok_or(MerkleError::SizeOrder { first, second })?;
    let mut proof = Vec::new();
    if m > 0 {
        subproof_rec(m, leaves, true, &mut proof);
    }
    Ok(proof)
}

fn subproof_rec(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            out.push(subtree_root(leaves));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof_rec(m, &leaves[..k], complete, out);
        out.push(subtree_root(&leaves[k..]));
    } else {
        subproof_rec(m - k, &leaves[k..], false, out);
        out.push(subtree_root(&leaves[..k]));
    }
}

/// Verify that `leaf` sits at `index` in the tree of `size` leaves whose root is `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let mut f_n = index;
    let mut s_n = size - 1;
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(MerkleError::ProofLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(MerkleError::ProofLength);
    }
    if r != *root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// Verify that the tree of `first` leaves with root `first_root` is a prefix of the tree of
/// `second` leaves with root `second_root` (RFC 9162 §2.1.4.2).
///
/// Degenerate cases: equal sizes need an empty proof and equal roots; a first size of 0 needs
/// an empty proof and the empty root.
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    if first > second {
        return Err(MerkleError::SizeOrder { first, second });
    }
    if first == second {
        if !proof.is_empty() {
            return Err(MerkleError::ProofLength);
        }
        return if first_root == second_root {
            Ok(())
        } else {
            Err(MerkleError::RootMismatch)
        };
    }
    if first == 0 {
        if !proof.is_empty() {
            return Err(MerkleError::ProofLength);
        }
        return if *first_root == EMPTY_ROOT {
            Ok(())
        } else {
            Err(MerkleError::FirstRootMismatch)
        };
    }
    let (start, rest): (Hash, &[Hash]) = if first.is_power_of_two() {
        (*first_root, proof)
    } else {
        match proof.split_first() {
            Some((head, tail)) => (*head, tail),
            None => return Err(MerkleError::ProofLength),
        }
    };
    let mut f_n = first - 1;
    let mut s_n = second - 1;
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let mut f_r = start;
    let mut s_r = start;
    for c in rest {
        if s_n == 0 {
            return Err(MerkleError::ProofLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(MerkleError::ProofLength);
    }
    if f_r != *first_root {
        return Err(MerkleError::FirstRootMismatch);
    }
    if s_r != *second_root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// The right edge of an append-only tree: the roots of its maximal perfect subtrees, largest
/// first. Appending is amortised O(1) hashes and [`Frontier::root`] is O(log n).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// `(height, hash)` of each perfect subtree, left to right (heights strictly decreasing).
    nodes: Vec<(u32, Hash)>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = (0u32, leaf);
        while let Some(&(height, left)) = self.nodes.last() {
            if height != node.0 {
                break;
            }
            self.nodes.pop();
            node = (height + 1, node_hash(&left, &node.1));
        }
        self.nodes.push(node);
        self.size += 1;
    }

    /// The Merkle Tree Hash of everything appended so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.nodes.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return EMPTY_ROOT;
        };
        for (_, left) in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

#[cfg(test)]
mod tests;
