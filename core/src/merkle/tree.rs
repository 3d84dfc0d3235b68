//! [`Tree`]: the root of every complete, aligned power-of-two subtree of a growing log, so roots
//! at any size and inclusion and consistency proofs cost O(log² n) hashes instead of re-hashing
//! every leaf (what the slice functions of [`super`] do).
//!
//! RFC 6962's recursion only ever splits a range `[start, end)` into a left part of `k` leaves
//! (the largest power of two below its size) starting at a multiple of `k`, so every left part
//! is one cached node, and the right part recurses: O(log n) cached nodes per range root.
//!
//! A tree may be *pruned*: it then keeps subtrees of `2^low` leaves and above (a *group*), plus
//! the leaves of the last, incomplete group, and reads the leaf hashes of an older group from a
//! [`LeafSource`] (the agent's SQLite store) when a proof needs a node inside it. Memory falls
//! from about 64 bytes per leaf to about `64 / 2^low` (0.25 bytes at `low = 8`), and a proof
//! reads at most two groups.
//!
//! A pruned tree may also be *resumed* from its right edge alone ([`Tree::resume`]: one node per
//! level and the newest group's leaves, O(log n) hashes): it then holds only the nodes completed
//! since, and asks the source for older ones ([`LeafSource::node`]), so a store that persists
//! every node [`Tree::push_with`] reports reopens without reading its leaves.

use std::cell::RefCell;

use super::{node_hash, root, split, Frontier, MerkleError, EMPTY_ROOT};
use crate::merkle::Hash;

/// Where a pruned [`Tree`] reads the leaf hashes and nodes it no longer holds.
pub trait LeafSource {
    /// The leaf hashes `start..end` (one complete group), in order.
    fn leaf_hashes(&self, start: u64, end: u64) -> Result<Vec<Hash>, MerkleError>;

    /// Node `index` of `level` (the root of leaves `index * 2^(low+level)` onward, as
    /// [`Tree::push_with`] reported it), if the source keeps nodes; `None` makes the tree
    /// recompute it from the nodes below, down to the leaves.
    fn node(&self, level: u32, index: u64) -> Result<Option<Hash>, MerkleError> {
        let _ = (level, index);
        Ok(None)
    }
}

/// The nodes of one level of a [`Tree`] that it holds: from `first` to the newest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Level {
    /// Index of `nodes[0]` (0 unless the tree was resumed).
    first: u64,
    nodes: Vec<Hash>,
}

impl Level {
    /// Number of nodes of the level, held or not.
    fn count(&self) -> u64 {
        self.first + to_u64(self.nodes.len())
    }

    fn get(&self, index: u64) -> Option<&Hash> {
        index
            .checked_sub(self.first)
            .and_then(|i| self.nodes.get(to_usize(i)))
    }
}

/// A growing Merkle tree with cached complete subtrees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// log2 of the group size: subtrees of fewer leaves are not kept (0: every leaf is kept).
    low: u32,
    /// Node `i` of `levels[h]`: root of leaves `i * 2^(low+h) .. (i + 1) * 2^(low+h)`.
    levels: Vec<Level>,
    /// Leaves of the last, incomplete group.
    tail: Vec<Hash>,
    /// Number of leaves.
    size: u64,
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// One proof's view of the tree: the tree, its leaf source, and the groups read so far.
struct Resolver<'a> {
    tree: &'a Tree,
    source: &'a dyn LeafSource,
    groups: RefCell<Vec<(u64, Vec<Hash>)>>,
}

impl Resolver<'_> {
    fn group_size(&self) -> u64 {
        1u64 << self.tree.low
    }

    /// MTH of leaves `start..end` inside one group: the newest group's from memory, an older
    /// one's from the source (read once per proof).
    fn leaves_root(&self, start: u64, end: u64) -> Result<Hash, MerkleError> {
        let g = self.group_size();
        let group = start / g;
        let (from, to) = (to_usize(start - group * g), to_usize(end - group * g));
        let missing =
            || MerkleError::LeavesUnavailable(format!("leaves {start}..{end} are not all stored"));
        if group == to_u64(self.tree.complete_groups()) {
            return self.tree.tail.get(from..to).map(root).ok_or_else(missing);
        }
        let mut groups = self.groups.borrow_mut();
        if !groups.iter().any(|(n, _)| *n == group) {
            let leaves = self.source.leaf_hashes(group * g, group * g + g)?;
            if to_u64(leaves.len()) != g {
                return Err(MerkleError::LeavesUnavailable(format!(
                    "{} leaf hashes for group {group}, {g} expected",
                    leaves.len()
                )));
            }
            groups.push((group, leaves));
        }
        groups
            .iter()
            .find(|(n, _)| *n == group)
            .and_then(|(_, leaves)| leaves.get(from..to))
            .map(root)
            .ok_or_else(missing)
    }

    /// MTH of leaves `start..end` where the range arises from RFC 6962's recursion from 0
    /// (every power-of-two range is aligned); `end > start`.
    fn range_root(&self, start: u64, end: u64) -> Result<Hash, MerkleError> {
        let n = end - start;
        let low = self.tree.low;
        if n.is_power_of_two() && n.trailing_zeros() >= low {
            let h = n.trailing_zeros() - low;
            let index = start >> n.trailing_zeros();
            if let Some(node) = self.tree.levels.get(h as usize).and_then(|l| l.get(index)) {
                return Ok(*node);
            }
            // Complete nodes below the level's count are in the source when it keeps nodes.
            let complete = self
                .tree
                .levels
                .get(h as usize)
                .is_some_and(|l| index < l.count());
            if complete {
                if let Some(node) = self.source.node(h, index)? {
                    return Ok(node);
                }
            }
        }
        let g = self.group_size();
        if start / g == (end - 1) / g {
            return self.leaves_root(start, end);
        }
        let k = to_u64(split(to_usize(n)));
        Ok(node_hash(
            &self.range_root(start, start + k)?,
            &self.range_root(start + k, end)?,
        ))
    }

    fn path(&self, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) -> Result<(), MerkleError> {
        let n = end - start;
        if n <= 1 {
            return Ok(());
        }
        let k = to_u64(split(to_usize(n)));
        if m < k {
            self.path(m, start, start + k, out)?;
            out.push(self.range_root(start + k, end)?);
        } else {
            self.path(m - k, start + k, end, out)?;
            out.push(self.range_root(start, start + k)?);
        }
        Ok(())
    }

    fn subproof(
        &self,
        m: u64,
        start: u64,
        end: u64,
        complete: bool,
        out: &mut Vec<Hash>,
    ) -> Result<(), MerkleError> {
        let n = end - start;
        if m == n {
            if !complete {
                out.push(self.range_root(start, end)?);
            }
            return Ok(());
        }
        let k = to_u64(split(to_usize(n)));
        if m <= k {
            self.subproof(m, start, start + k, complete, out)?;
            out.push(self.range_root(start + k, end)?);
        } else {
            self.subproof(m - k, start + k, end, false, out)?;
            out.push(self.range_root(start, start + k)?);
        }
        Ok(())
    }
}

impl Tree {
    /// The empty tree that keeps every leaf hash.
    pub fn new() -> Self {
        Tree::pruned(0)
    }

    /// The empty tree that keeps only subtrees of `2^low` leaves and more (and the newest,
    /// incomplete group's leaves); proofs into older groups read their leaves from a
    /// [`LeafSource`]. `low` is capped at 20.
    pub fn pruned(low: u32) -> Self {
        Tree {
            low: low.min(20),
            levels: Vec::new(),
            tail: Vec::new(),
            size: 0,
        }
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn complete_groups(&self) -> usize {
        to_usize(self.levels.first().map_or(0, Level::count))
    }

    /// A pruned tree of `size` leaves from its right edge: `edge` holds, from the lowest level
    /// up, the newest node of each level with an odd number of nodes (levels `h` where bit
    /// `low + h` of `size` is set), and `tail` the leaves of the newest, incomplete group
    /// (`size mod 2^low` of them). Older nodes and leaves are read from the [`LeafSource`].
    pub fn resume(
        low: u32,
        size: u64,
        edge: &[Hash],
        tail: Vec<Hash>,
    ) -> Result<Tree, MerkleError> {
        let low = low.min(20);
        let groups = size >> low;
        let wrong = |what: String| {
            MerkleError::LeavesUnavailable(format!("cannot resume a tree of {size} leaves: {what}"))
        };
        if to_u64(tail.len()) != size - (groups << low) {
            return Err(wrong(format!("{} leaves in the newest group", tail.len())));
        }
        let needed = groups.count_ones() as usize;
        if edge.len() != needed {
            return Err(wrong(format!(
                "{} edge nodes where {needed} are needed",
                edge.len()
            )));
        }
        let mut nodes = edge.iter();
        let mut levels = Vec::new();
        let mut count = groups;
        while count > 0 {
            let level = if count % 2 == 1 {
                Level {
                    first: count - 1,
                    nodes: nodes.next().copied().into_iter().collect(),
                }
            } else {
                Level {
                    first: count,
                    nodes: Vec::new(),
                }
            };
            levels.push(level);
            count /= 2;
        }
        Ok(Tree {
            low,
            levels,
            tail,
            size,
        })
    }

    /// The right edge as [`Tree::resume`] takes it: the newest node of each level with an odd
    /// number of nodes, lowest level first, as `(level, index, hash)`.
    pub fn edge(&self) -> Vec<(u32, u64, Hash)> {
        let mut out = Vec::new();
        for (h, level) in (0u32..).zip(&self.levels) {
            let count = level.count();
            if count % 2 == 1 {
                if let Some(node) = level.get(count - 1) {
                    out.push((h, count - 1, *node));
                }
            }
        }
        out
    }

    /// The [`Frontier`] of the same leaves: the edge nodes, largest first, then the newest
    /// group's leaves folded in.
    pub fn frontier(&self) -> Frontier {
        let mut nodes: Vec<(u32, Hash)> = self
            .edge()
            .into_iter()
            .rev()
            .map(|(h, _, node)| (h + self.low, node))
            .collect();
        let mut tail = Frontier::new();
        for leaf in &self.tail {
            tail.push(*leaf);
        }
        nodes.extend(tail.nodes);
        Frontier {
            size: self.size,
            nodes,
        }
    }

    /// Leaf hashes held in memory: all of them when the tree is not pruned, else the newest
    /// incomplete group's.
    pub fn held_leaves(&self) -> (u64, &[Hash]) {
        if self.low == 0 {
            self.levels
                .first()
                .map_or((0, &[][..]), |l| (l.first, l.nodes.as_slice()))
        } else {
            (self.size - to_u64(self.tail.len()), &self.tail)
        }
    }

    /// Append a leaf hash, completing the subtrees it closes.
    pub fn push(&mut self, leaf: Hash) {
        self.push_with(leaf, |_, _, _| {});
    }

    /// [`Tree::push`], calling `completed(level, index, node)` for each subtree of `2^low`
    /// leaves and more that the leaf completes, lowest first: what a store persists to
    /// [`Tree::resume`] later and to answer [`LeafSource::node`].
    pub fn push_with(&mut self, leaf: Hash, mut completed: impl FnMut(u32, u64, &Hash)) {
        self.size += 1;
        self.tail.push(leaf);
        if self.tail.len() < 1usize << self.low {
            return;
        }
        let mut node = root(&self.tail);
        self.tail.clear();
        let mut h = 0;
        loop {
            if self.levels.len() == h {
                self.levels.push(Level::default());
            }
            let level = &mut self.levels[h];
            completed(u32::try_from(h).unwrap_or(u32::MAX), level.count(), &node);
            level.nodes.push(node);
            let n = level.nodes.len();
            if level.count() % 2 == 1 || n < 2 {
                return;
            }
            node = node_hash(&level.nodes[n - 2], &level.nodes[n - 1]);
            h += 1;
        }
    }

    fn checked(&self, size: u64) -> Result<u64, MerkleError> {
        if size <= self.size {
            Ok(size)
        } else {
            Err(MerkleError::SizeOrder {
                first: size,
                second: self.size,
            })
        }
    }

    fn resolver<'a>(&'a self, source: &'a dyn LeafSource) -> Resolver<'a> {
        Resolver {
            tree: self,
            source,
            groups: RefCell::new(Vec::new()),
        }
    }

    /// Root over the first `size` leaves, reading pruned leaves from `source` (never asked when
    /// the tree keeps every leaf).
    pub fn root_at(&self, size: u64, source: &dyn LeafSource) -> Result<Hash, MerkleError> {
        let n = self.checked(size)?;
        if n == 0 {
            return Ok(EMPTY_ROOT);
        }
        self.resolver(source).range_root(0, n)
    }

    /// Audit path of leaf `index` in the tree of the first `size` leaves (RFC 6962 §2.1.1),
    /// reading pruned leaves from `source`.
    pub fn inclusion_proof(
        &self,
        index: u64,
        size: u64,
        source: &dyn LeafSource,
    ) -> Result<Vec<Hash>, MerkleError> {
        let n = self.checked(size)?;
        if index >= n {
            return Err(MerkleError::IndexOutOfRange { index, size });
        }
        let mut out = Vec::new();
        self.resolver(source).path(index, 0, n, &mut out)?;
        Ok(out)
    }

    /// Consistency proof from the first `first` leaves to the first `second` (RFC 6962
    /// §2.1.2), reading pruned leaves from `source`; empty when `first` is 0 or equals `second`.
    pub fn consistency_proof(
        &self,
        first: u64,
        second: u64,
        source: &dyn LeafSource,
    ) -> Result<Vec<Hash>, MerkleError> {
        let n = self.checked(second)?;
        if first > n {
            return Err(MerkleError::SizeOrder { first, second });
        }
        let mut out = Vec::new();
        if first > 0 {
            self.resolver(source)
                .subproof(first, 0, n, true, &mut out)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{consistency_proof, inclusion_proof, leaf_hash, root};
    use std::cell::Cell;

    /// The source of a tree that keeps every leaf: must never be asked.
    struct Unpruned;

    impl LeafSource for Unpruned {
        fn leaf_hashes(&self, start: u64, end: u64) -> Result<Vec<Hash>, MerkleError> {
            Err(MerkleError::LeavesUnavailable(format!(
                "leaves {start}..{end} asked of a tree that keeps every leaf"
            )))
        }
    }

    /// A leaf source over a slice that counts what it was asked.
    struct Slice<'a>(&'a [Hash], Cell<usize>);

    impl LeafSource for Slice<'_> {
        fn leaf_hashes(&self, start: u64, end: u64) -> Result<Vec<Hash>, MerkleError> {
            self.1.set(self.1.get() + 1);
            let (start, end) = (start as usize, end as usize);
            Ok(self
                .0
                .iter()
                .skip(start)
                .take(end - start)
                .copied()
                .collect())
        }
    }

    fn check_against_slices(tree: &Tree, leaves: &[Hash], source: &dyn LeafSource) {
        let total = leaves.len();
        assert_eq!(tree.size(), total as u64);
        for n in 0..=total {
            let size = n as u64;
            assert_eq!(
                tree.root_at(size, source).unwrap(),
                root(&leaves[..n]),
                "root {n}"
            );
            for i in 0..n {
                assert_eq!(
                    tree.inclusion_proof(i as u64, size, source).unwrap(),
                    inclusion_proof(&leaves[..n], i as u64).unwrap(),
                    "inclusion {i} in {n}"
                );
            }
            for m in 0..=n {
                assert_eq!(
                    tree.consistency_proof(m as u64, size, source).unwrap(),
                    consistency_proof(&leaves[..n], m as u64).unwrap(),
                    "consistency {m} to {n}"
                );
            }
        }
        assert!(tree.root_at(total as u64 + 1, source).is_err());
        assert!(tree.inclusion_proof(5, 5, source).is_err());
        assert!(tree.consistency_proof(6, 5, source).is_err());
    }

    /// Roots and proofs equal the slice functions' for every size, index and pair of sizes
    /// up to 70 leaves.
    #[test]
    fn matches_the_slice_functions() {
        let leaves: Vec<Hash> = (0u32..70).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        let mut tree = Tree::new();
        assert_eq!(tree.root_at(0, &Unpruned), Ok(EMPTY_ROOT));
        for leaf in &leaves {
            tree.push(*leaf);
        }
        check_against_slices(&tree, &leaves, &Unpruned);
        assert_eq!(tree.held_leaves(), (0, leaves.as_slice()));
    }

    /// Pruned trees (groups of 2, 8 and 16 leaves) give the same roots and proofs at every size,
    /// hold only the newest group's leaves, and read at most two groups per proof.
    #[test]
    fn pruned_trees_match_and_read_little() {
        let leaves: Vec<Hash> = (0u32..70).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        for low in [1u32, 3, 4] {
            let mut tree = Tree::pruned(low);
            for leaf in &leaves {
                tree.push(*leaf);
            }
            let source = Slice(&leaves, Cell::new(0));
            check_against_slices(&tree, &leaves, &source);
            let (from, held) = tree.held_leaves();
            let g = 1usize << low;
            assert_eq!(from as usize, 70 / g * g, "low {low}");
            assert_eq!(held, &leaves[70 / g * g..], "low {low}");
            source.1.set(0);
            tree.inclusion_proof(3, 61, &source).unwrap();
            assert!(source.1.get() <= 2, "low {low}: {} reads", source.1.get());
        }
    }

    /// A source that keeps every node `push_with` reported, and the leaves; counts leaf reads.
    struct Stored {
        leaves: Vec<Hash>,
        nodes: std::collections::BTreeMap<(u32, u64), Hash>,
        leaf_reads: Cell<usize>,
    }

    impl LeafSource for Stored {
        fn leaf_hashes(&self, start: u64, end: u64) -> Result<Vec<Hash>, MerkleError> {
            self.leaf_reads.set(self.leaf_reads.get() + 1);
            Ok(self.leaves[start as usize..end as usize].to_vec())
        }

        fn node(&self, level: u32, index: u64) -> Result<Option<Hash>, MerkleError> {
            Ok(self.nodes.get(&(level, index)).copied())
        }
    }

    /// A tree resumed from its edge alone (at every size up to 70, groups of 4) gives the same
    /// roots and proofs as the slice functions, before and after more leaves are pushed, and
    /// its frontier equals one built leaf by leaf; the nodes `push_with` reports are exactly
    /// the complete aligned subtrees.
    #[test]
    fn resumed_trees_match_and_report_every_node() {
        let leaves: Vec<Hash> = (0u32..70).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        let low = 2;
        let mut full = Tree::pruned(low);
        let mut nodes = std::collections::BTreeMap::new();
        for leaf in &leaves {
            full.push_with(*leaf, |h, i, node| {
                assert!(nodes.insert((h, i), *node).is_none(), "node {h}/{i} twice");
            });
        }
        for ((h, i), node) in &nodes {
            let span = 1usize << (low + h);
            let start = *i as usize * span;
            assert_eq!(*node, root(&leaves[start..start + span]), "node {h}/{i}");
        }
        let source = Stored {
            leaves: leaves.clone(),
            nodes,
            leaf_reads: Cell::new(0),
        };
        for size in 0..=leaves.len() {
            let mut prefix = Tree::pruned(low);
            for leaf in &leaves[..size] {
                prefix.push(*leaf);
            }
            let edge: Vec<Hash> = prefix.edge().into_iter().map(|(_, _, n)| n).collect();
            let g = 1usize << low;
            let tail = leaves[size / g * g..size].to_vec();
            let mut resumed = Tree::resume(low, size as u64, &edge, tail).unwrap();
            let mut frontier = Frontier::new();
            for leaf in &leaves[..size] {
                frontier.push(*leaf);
            }
            assert_eq!(resumed.frontier(), frontier, "frontier at {size}");
            assert_eq!(resumed.frontier().root(), root(&leaves[..size]));
            for leaf in &leaves[size..] {
                resumed.push(*leaf);
            }
            if size % 9 == 0 {
                check_against_slices(&resumed, &leaves, &source);
            }
            source.leaf_reads.set(0);
            resumed.inclusion_proof(5, 64, &source).unwrap();
            resumed.consistency_proof(9, 64, &source).unwrap();
            assert!(
                source.leaf_reads.get() <= 2,
                "resumed at {size}: {} group reads",
                source.leaf_reads.get()
            );
        }
        assert!(Tree::resume(low, 9, &[], leaves[8..9].to_vec()).is_err());
        assert!(Tree::resume(low, 9, &[leaves[0]], Vec::new()).is_err());
    }

    /// A pruned tree without a source, or with a source that returns too few hashes, fails
    /// with a clear error instead of a wrong proof.
    #[test]
    fn missing_leaves_are_an_error() {
        let leaves: Vec<Hash> = (0u32..20).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        let mut tree = Tree::pruned(3);
        for leaf in &leaves {
            tree.push(*leaf);
        }
        assert!(matches!(
            tree.inclusion_proof(1, 20, &Unpruned),
            Err(MerkleError::LeavesUnavailable(_))
        ));
        let short = Slice(&leaves[..4], Cell::new(0));
        assert!(tree.inclusion_proof(1, 20, &short).is_err());
        // The root at the full size needs no old group.
        assert_eq!(tree.root_at(16, &Unpruned).unwrap(), root(&leaves[..16]));
    }
}
