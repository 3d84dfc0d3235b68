//! The SQLite receipt store: leaves, checkpoints and public keys in one database file.
//!
//! Durability: WAL journal with `synchronous=FULL`, so a committed transaction survives a
//! crash or power loss once `COMMIT` returns. Each batch is one transaction: either every
//! receipt of a batch gets a leaf index or none does. The in-memory Merkle [`Tree`] is pruned:
//! it keeps complete subtrees of 256 leaves and up (about 0.25 bytes per leaf) and reads older
//! leaf hashes back from the `leaves` table when a proof needs them.
//!
//! Every subtree root of 256 leaves and up is also written to the `nodes` table, in the same
//! transaction as the leaves that complete it. Opening therefore reads O(log n) rows: the
//! newest leaf index, one node per level of the right edge, and the newest group's leaves. It
//! never reads every leaf. Proofs read older nodes from `nodes`. Open checks what it reads
//! against what it does not have to trust: the edge must match the number of leaves (no node
//! missing or beyond it), the newest complete group's leaves must hash to its stored root, the
//! newest group's indexes must be contiguous, and the newest checkpoint's root must match.
//! The full recomputation is `knhk-agent verify` of an export. A store written before the
//! `nodes` table existed gets it at its first open, in one linear pass.

use std::ops::Range;
use std::path::Path;

use knhk_core::checkpoint::{Checkpoint, PublicKeyVersion, SignatureRecord};
use knhk_core::limits::MAX_BATCH_RECORDS;
use knhk_core::merkle::{self, Hash, LeafSource as _, Tree};
use knhk_core::receipt::LogEntry;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension as _};

use super::leaf_source::{SqlLeaves, LEAF_GROUP_LOG2};
use crate::db::Durability;

use super::{ReceiptsError, SignedCheckpoint};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leaves (
    idx   INTEGER PRIMARY KEY,
    entry BLOB NOT NULL,
    hash  BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    seq       INTEGER PRIMARY KEY,
    tree_size INTEGER NOT NULL UNIQUE,
    text      TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS public_keys (
    provider TEXT NOT NULL,
    key_id   TEXT NOT NULL,
    version  INTEGER NOT NULL,
    json     TEXT NOT NULL,
    PRIMARY KEY (provider, key_id, version)
);
";

fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> ReceiptsError {
    move |source| ReceiptsError::Sqlite { op, source }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn leaf_hash_of(idx: i64, hash: &[u8]) -> Result<Hash, ReceiptsError> {
    hash.try_into()
        .map_err(|_| ReceiptsError::Corrupt(format!("leaf {idx} hash is not 32 bytes")))
}

/// Insert `(level, index, hash)` nodes.
fn insert_nodes(conn: &Connection, nodes: &[(u32, u64, Hash)]) -> Result<(), ReceiptsError> {
    let mut stmt = conn
        .prepare_cached("INSERT INTO nodes (level, idx, hash) VALUES (?1, ?2, ?3)")
        .map_err(sql("append nodes"))?;
    for (level, idx, hash) in nodes {
        stmt.execute(params![level, to_i64(*idx), hash.as_slice()])
            .map_err(sql("append nodes"))?;
    }
    Ok(())
}

/// One batch's leaves from index `start`, and the nodes they complete, as one transaction.
fn write_batch(
    conn: &mut Connection,
    start: u64,
    encoded: &[(Vec<u8>, Hash)],
    nodes: &[(u32, u64, Hash)],
) -> Result<(), ReceiptsError> {
    let tx = conn.transaction().map_err(sql("begin batch"))?;
    {
        let mut stmt = tx
            .prepare_cached("INSERT INTO leaves (idx, entry, hash) VALUES (?1, ?2, ?3)")
            .map_err(sql("append"))?;
        for (i, (bytes, hash)) in encoded.iter().enumerate() {
            let idx = start + u64::try_from(i).unwrap_or(u64::MAX);
            stmt.execute(params![to_i64(idx), bytes, hash.as_slice()])
                .map_err(sql("append"))?;
        }
    }
    insert_nodes(&tx, nodes)?;
    tx.commit().map_err(sql("commit batch"))
}

/// Each entry's leaf bytes and RFC 6962 leaf hash, in order.
pub fn encode_leaves(entries: &[LogEntry]) -> Result<Vec<(Vec<u8>, Hash)>, ReceiptsError> {
    entries
        .iter()
        .map(|e| {
            let bytes = e.encode()?;
            let hash = merkle::leaf_hash(&bytes);
            Ok((bytes, hash))
        })
        .collect()
}

/// The receipt log's durable state.
pub struct ReceiptStore {
    conn: Connection,
    origin: String,
    tree: Tree,
}

impl std::fmt::Debug for ReceiptStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptStore")
            .field("origin", &self.origin)
            .field("size", &self.tree.size())
            .finish_non_exhaustive()
    }
}

impl ReceiptStore {
    /// Open or create the store at `path` for the log named `origin`.
    pub fn open(path: &Path, origin: &str) -> Result<Self, ReceiptsError> {
        Checkpoint::new(origin, 0, merkle::EMPTY_ROOT)?;
        let conn = crate::db::open(path, SCHEMA, Durability::Full).map_err(|e| {
            e.into_store_error(
                |op, source| ReceiptsError::Sqlite { op, source },
                ReceiptsError::Corrupt,
            )
        })?;
        let stored: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'origin'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql("read origin"))?;
        match stored {
            Some(s) if s != origin => {
                return Err(ReceiptsError::OriginMismatch {
                    stored: s,
                    configured: origin.to_owned(),
                })
            }
            Some(_) => {}
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('origin', ?1)",
                    params![origin],
                )
                .map_err(sql("write origin"))?;
            }
        }
        let mut store = ReceiptStore {
            conn,
            origin: origin.to_owned(),
            tree: Tree::pruned(LEAF_GROUP_LOG2),
        };
        store.load()?;
        Ok(store)
    }

    fn load(&mut self) -> Result<(), ReceiptsError> {
        let nodes_kept: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'nodes'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql("read meta"))?;
        if nodes_kept.is_none() {
            self.write_every_node()?;
        }
        self.tree = self.resume_tree()?;
        if let Some(last) = self.latest_checkpoint()? {
            let cp = Checkpoint::parse(&last.text)?;
            if cp.tree_size > self.size() || self.root_at(cp.tree_size)? != cp.root_hash {
                return Err(ReceiptsError::Corrupt(format!(
                    "stored leaves do not match the checkpoint at size {}",
                    cp.tree_size
                )));
            }
        }
        Ok(())
    }

    /// Build the `nodes` table from every leaf, once, for a store written before it existed
    /// (and for a new store, where it is empty): one read of every leaf hash, checking that
    /// indexes are contiguous, and one transaction that also records that nodes are kept.
    fn write_every_node(&mut self) -> Result<(), ReceiptsError> {
        let mut tree = Tree::pruned(LEAF_GROUP_LOG2);
        let mut nodes = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare("SELECT idx, hash FROM leaves ORDER BY idx")
                .map_err(sql("load leaves"))?;
            let mut rows = stmt.query([]).map_err(sql("load leaves"))?;
            while let Some(row) = rows.next().map_err(sql("load leaves"))? {
                let idx: i64 = row.get(0).map_err(sql("load leaves"))?;
                let hash: Vec<u8> = row.get(1).map_err(sql("load leaves"))?;
                if to_u64(idx) != tree.size() {
                    return Err(ReceiptsError::Corrupt(format!(
                        "leaf index {idx} where {} was expected",
                        tree.size()
                    )));
                }
                tree.push_with(leaf_hash_of(idx, &hash)?, |h, i, n| nodes.push((h, i, *n)));
            }
        }
        let tx = self.conn.transaction().map_err(sql("write nodes"))?;
        insert_nodes(&tx, &nodes)?;
        tx.execute("INSERT INTO meta (key, value) VALUES ('nodes', '1')", [])
            .map_err(sql("write nodes"))?;
        tx.commit().map_err(sql("write nodes"))
    }

    /// The pruned tree from the right edge: O(log n) rows, checked as the module says.
    fn resume_tree(&self) -> Result<Tree, ReceiptsError> {
        let size = self
            .conn
            .query_row(
                "SELECT idx FROM leaves ORDER BY idx DESC LIMIT 1",
                [],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map_err(sql("read size"))?
            .map_or(0, |last| to_u64(last) + 1);
        let groups = size >> LEAF_GROUP_LOG2;
        let node = |level: u32, index: u64| -> Result<Option<Hash>, ReceiptsError> {
            let hash: Option<Vec<u8>> = self
                .conn
                .query_row(
                    "SELECT hash FROM nodes WHERE level = ?1 AND idx = ?2",
                    params![level, to_i64(index)],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql("read nodes"))?;
            hash.map(|h| {
                Hash::try_from(h.as_slice()).map_err(|_| {
                    ReceiptsError::Corrupt(format!("node {level}/{index} is not 32 bytes"))
                })
            })
            .transpose()
        };
        let mut edge = Vec::new();
        let mut level = 0u32;
        loop {
            let count = groups >> level;
            if node(level, count)?.is_some() {
                return Err(ReceiptsError::Corrupt(format!(
                    "a stored node {level}/{count} lies beyond the {size} stored leaves"
                )));
            }
            if count == 0 {
                break;
            }
            if count % 2 == 1 {
                edge.push(node(level, count - 1)?.ok_or_else(|| {
                    ReceiptsError::Corrupt(format!(
                        "node {level}/{} of the {size} stored leaves is missing",
                        count - 1
                    ))
                })?);
            }
            level += 1;
        }
        let tail_start = groups << LEAF_GROUP_LOG2;
        let tail = self.leaf_hashes(tail_start, size)?;
        if let Some(newest) = groups.checked_sub(1) {
            let start = newest << LEAF_GROUP_LOG2;
            let leaves = self.leaf_hashes(start, tail_start)?;
            if node(0, newest)? != Some(merkle::root(&leaves)) {
                return Err(ReceiptsError::Corrupt(format!(
                    "the stored leaves {start}..{tail_start} do not match their stored root"
                )));
            }
        }
        Ok(Tree::resume(LEAF_GROUP_LOG2, size, &edge, tail)?)
    }

    /// Leaf hashes `start..end`, which must all be stored, in order.
    fn leaf_hashes(&self, start: u64, end: u64) -> Result<Vec<Hash>, ReceiptsError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT idx, hash FROM leaves WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
            )
            .map_err(sql("load leaves"))?;
        let mut rows = stmt
            .query(params![to_i64(start), to_i64(end)])
            .map_err(sql("load leaves"))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(sql("load leaves"))? {
            let idx: i64 = row.get(0).map_err(sql("load leaves"))?;
            let expected = start + u64::try_from(out.len()).unwrap_or(u64::MAX);
            if to_u64(idx) != expected {
                return Err(ReceiptsError::Corrupt(format!(
                    "leaf index {idx} where {expected} was expected"
                )));
            }
            let hash: Vec<u8> = row.get(1).map_err(sql("load leaves"))?;
            out.push(leaf_hash_of(idx, &hash)?);
        }
        if u64::try_from(out.len()).unwrap_or(u64::MAX) != end - start {
            return Err(ReceiptsError::Corrupt(format!(
                "leaves {start}..{end} are not all stored"
            )));
        }
        Ok(out)
    }

    /// A read-only view of the log as it is now, for long reads (exports) that must not hold
    /// the writer's lock: its own SQLite connection in one read transaction (a WAL reader does
    /// not block the writer) and a copy of the in-memory tree, which is small since it is
    /// pruned. Its [`ReceiptStore::size`] stays what it was here; rows appended later are
    /// outside it.
    pub fn reader(&self) -> Result<ReceiptStore, ReceiptsError> {
        let path =
            self.conn.path().filter(|p| !p.is_empty()).ok_or_else(|| {
                ReceiptsError::Corrupt("the store has no file to read from".into())
            })?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql("open reader"))?;
        // The snapshot starts at the first read: take it now, while the caller holds the writer.
        conn.execute_batch("BEGIN").map_err(sql("begin read"))?;
        conn.query_row("SELECT count(*) FROM meta", [], |r| r.get::<_, i64>(0))
            .map_err(sql("begin read"))?;
        Ok(ReceiptStore {
            conn,
            origin: self.origin.clone(),
            tree: self.tree.clone(),
        })
    }

    /// The log origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// Root over every leaf.
    pub fn root(&self) -> Hash {
        // The tree's right edge and its newest group's leaves (at most 255 node hashes, once
        // per seal), rather than a second copy of the edge hashed at every append.
        self.tree.frontier().root()
    }

    /// Root over the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, ReceiptsError> {
        if size == self.size() {
            return Ok(self.root());
        }
        self.in_range(size)?;
        Ok(self.tree.root_at(size, &SqlLeaves::own(&self.conn))?)
    }

    fn in_range(&self, size: u64) -> Result<(), ReceiptsError> {
        if size <= self.size() {
            Ok(())
        } else {
            Err(ReceiptsError::OutOfRange {
                index: size,
                size: self.size(),
            })
        }
    }

    /// Append entries as one transaction; returns the leaf indexes they received.
    pub fn append(&mut self, entries: &[LogEntry]) -> Result<Range<u64>, ReceiptsError> {
        self.append_encoded(encode_leaves(entries)?)
    }

    /// [`ReceiptStore::append`] of entries already encoded with their leaf hashes
    /// ([`encode_leaves`]), so that work can run before the store is locked.
    pub fn append_encoded(
        &mut self,
        encoded: Vec<(Vec<u8>, Hash)>,
    ) -> Result<Range<u64>, ReceiptsError> {
        let start = self.size();
        // The tree takes the leaves first, so the nodes they complete go into the same
        // transaction; if it fails, the tree is resumed from what is stored (O(log n) rows).
        let mut nodes = Vec::new();
        for (_, hash) in &encoded {
            self.tree.push_with(*hash, |h, i, n| nodes.push((h, i, *n)));
        }
        let written = write_batch(&mut self.conn, start, &encoded, &nodes);
        if let Err(e) = written {
            self.tree = self.resume_tree()?;
            return Err(e);
        }
        Ok(start..self.size())
    }

    /// The leaf bytes at `index`.
    pub fn entry(&self, index: u64) -> Result<Vec<u8>, ReceiptsError> {
        if index >= self.size() {
            return Err(ReceiptsError::OutOfRange {
                index,
                size: self.size(),
            });
        }
        self.conn
            .query_row(
                "SELECT entry FROM leaves WHERE idx = ?1",
                params![to_i64(index)],
                |r| r.get(0),
            )
            .map_err(sql("read entry"))
    }

    /// The batch origin leaf whose span holds the receipt at `index`, as `(index, bytes)`:
    /// the nearest kind-6 leaf at most [`MAX_BATCH_RECORDS`] before it, when its count
    /// reaches `index`. `None` when the receipt's batch named no pod.
    pub fn origin_of(&self, index: u64) -> Result<Option<(u64, Vec<u8>)>, ReceiptsError> {
        let lowest = index.saturating_sub(MAX_BATCH_RECORDS as u64);
        let found: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT idx, entry FROM leaves WHERE idx >= ?1 AND idx < ?2 \
                 AND substr(entry, 1, 1) = X'06' ORDER BY idx DESC LIMIT 1",
                params![to_i64(lowest), to_i64(index)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql("find batch origin"))?;
        let Some((at, bytes)) = found else {
            return Ok(None);
        };
        let at = to_u64(at);
        match LogEntry::decode(&bytes) {
            Ok(LogEntry::BatchOrigin(o)) if at + u64::from(o.count) >= index => {
                Ok(Some((at, bytes)))
            }
            Ok(_) => Ok(None),
            Err(e) => Err(ReceiptsError::Corrupt(format!(
                "batch origin leaf {at} does not decode: {e}"
            ))),
        }
    }

    /// Up to `limit` leaves starting at `from`, as `(index, bytes)`.
    pub fn entries(&self, from: u64, limit: u64) -> Result<Vec<(u64, Vec<u8>)>, ReceiptsError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT idx, entry FROM leaves WHERE idx >= ?1 ORDER BY idx LIMIT ?2")
            .map_err(sql("read entries"))?;
        let rows = stmt
            .query_map(params![to_i64(from), to_i64(limit)], |r| {
                Ok((to_u64(r.get::<_, i64>(0)?), r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(sql("read entries"))?;
        rows.collect::<Result<_, _>>().map_err(sql("read entries"))
    }

    /// Inclusion proof of leaf `index` in the tree of `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ReceiptsError> {
        self.in_range(size)?;
        Ok(self
            .tree
            .inclusion_proof(index, size, &SqlLeaves::own(&self.conn))?)
    }

    /// Consistency proof from `first` to `second` leaves.
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, ReceiptsError> {
        self.in_range(second)?;
        Ok(self
            .tree
            .consistency_proof(first, second, &SqlLeaves::own(&self.conn))?)
    }

    /// Persist a signed checkpoint (its tree size must exceed every earlier one).
    pub fn record_checkpoint(&mut self, cp: &SignedCheckpoint) -> Result<(), ReceiptsError> {
        let parsed = Checkpoint::parse(&cp.text)?;
        let sig = serde_json::to_string(&cp.signature)
            .map_err(|e| ReceiptsError::Corrupt(format!("signature encoding: {e}")))?;
        self.conn
            .execute(
                "INSERT INTO checkpoints (tree_size, text, signature) VALUES (?1, ?2, ?3)",
                params![to_i64(parsed.tree_size), cp.text, sig],
            )
            .map_err(sql("record checkpoint"))?;
        Ok(())
    }

    fn checkpoint_rows(
        &self,
        query: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<SignedCheckpoint>, ReceiptsError> {
        let mut stmt = self
            .conn
            .prepare_cached(query)
            .map_err(sql("read checkpoints"))?;
        let rows = stmt
            .query_map(args, |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(sql("read checkpoints"))?;
        let mut out = Vec::new();
        for row in rows {
            let (text, sig) = row.map_err(sql("read checkpoints"))?;
            let signature = serde_json::from_str(&sig)
                .map_err(|e| ReceiptsError::Corrupt(format!("stored signature: {e}")))?;
            out.push(SignedCheckpoint { text, signature });
        }
        Ok(out)
    }

    /// Every checkpoint, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<SignedCheckpoint>, ReceiptsError> {
        self.checkpoint_rows("SELECT text, signature FROM checkpoints ORDER BY seq", [])
    }

    /// Remove the payloads of leaves `indexes` (retention), keeping their hashes; a pruned
    /// leaf reads back as empty bytes. Returns how many were pruned now.
    pub fn prune(&mut self, indexes: &[u64]) -> Result<u64, ReceiptsError> {
        let tx = self.conn.transaction().map_err(sql("begin prune"))?;
        let mut n = 0;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE leaves SET entry = x'' WHERE idx = ?1 AND length(entry) > 0",
                )
                .map_err(sql("prune"))?;
            for idx in indexes {
                n += stmt.execute(params![to_i64(*idx)]).map_err(sql("prune"))?;
            }
        }
        tx.commit().map_err(sql("commit prune"))?;
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }

    /// Up to `limit` indexes of pruned leaves (empty payloads) from `from`, below `size`.
    pub fn pruned_indexes(
        &self,
        from: u64,
        size: u64,
        limit: u64,
    ) -> Result<Vec<u64>, ReceiptsError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT idx FROM leaves WHERE idx >= ?1 AND idx < ?2 AND length(entry) = 0 ORDER BY idx LIMIT ?3",
            )
            .map_err(sql("read pruned"))?;
        let rows = stmt
            .query_map(params![to_i64(from), to_i64(size), to_i64(limit)], |r| {
                Ok(to_u64(r.get::<_, i64>(0)?))
            })
            .map_err(sql("read pruned"))?;
        rows.collect::<Result<_, _>>().map_err(sql("read pruned"))
    }

    /// Every legal hold entry (kinds 3 and 4), as `(index, bytes)` in index order.
    pub fn hold_entries(&self) -> Result<Vec<(u64, Vec<u8>)>, ReceiptsError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT idx, entry FROM leaves WHERE hex(substr(entry, 1, 1)) IN ('03', '04') ORDER BY idx",
            )
            .map_err(sql("read holds"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((to_u64(r.get::<_, i64>(0)?), r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(sql("read holds"))?;
        rows.collect::<Result<_, _>>().map_err(sql("read holds"))
    }

    /// `count` consecutive hashes of tlog-tiles level `level` from hash `first`: leaf hashes
    /// at level 0, and above it the stored roots of `256^level`-leaf subtrees (node level
    /// `8 * (level - 1)`). Every one must be complete in this tree.
    pub fn tile_hashes(
        &self,
        level: u8,
        first: u64,
        count: u64,
    ) -> Result<Vec<Hash>, ReceiptsError> {
        let source = SqlLeaves::own(&self.conn);
        if level == 0 {
            return Ok(source.leaf_hashes(first, first + count)?);
        }
        let node_level = 8 * (u32::from(level) - 1);
        (first..first + count)
            .map(|j| {
                source.node(node_level, j)?.ok_or_else(|| {
                    ReceiptsError::Corrupt(format!(
                        "subtree {j} of tile level {level} is not in the nodes table"
                    ))
                })
            })
            .collect()
    }

    /// The stored public key version that made `sig`.
    pub fn public_key_for(&self, sig: &SignatureRecord) -> Result<PublicKeyVersion, ReceiptsError> {
        self.public_keys()?
            .into_iter()
            .find(|k| sig.is_by(k))
            .ok_or_else(|| {
                ReceiptsError::Corrupt(format!(
                    "no stored public key for {} {} v{}",
                    sig.provider, sig.key_id, sig.key_version
                ))
            })
    }

    /// Leaf hash at `index`.
    pub fn leaf_hash_at(&self, index: u64) -> Result<Hash, ReceiptsError> {
        if index >= self.size() {
            return Err(ReceiptsError::OutOfRange {
                index,
                size: self.size(),
            });
        }
        let (from, held) = self.tree.held_leaves();
        if let Some(hash) = index
            .checked_sub(from)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| held.get(i))
        {
            return Ok(*hash);
        }
        let found = SqlLeaves::own(&self.conn).leaf_hashes(index, index + 1)?;
        found.first().copied().ok_or(ReceiptsError::OutOfRange {
            index,
            size: self.size(),
        })
    }

    /// The newest `limit` checkpoints, newest first.
    pub fn recent_checkpoints(&self, limit: u64) -> Result<Vec<SignedCheckpoint>, ReceiptsError> {
        self.checkpoint_rows(
            "SELECT text, signature FROM checkpoints ORDER BY seq DESC LIMIT ?1",
            params![to_i64(limit)],
        )
    }

    /// Checkpoints with a tree size above `size`, oldest first.
    pub fn checkpoints_after(&self, size: u64) -> Result<Vec<SignedCheckpoint>, ReceiptsError> {
        self.checkpoint_rows(
            "SELECT text, signature FROM checkpoints WHERE tree_size > ?1 ORDER BY seq",
            params![to_i64(size)],
        )
    }

    /// The newest checkpoint.
    pub fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>, ReceiptsError> {
        Ok(self
            .checkpoint_rows(
                "SELECT text, signature FROM checkpoints ORDER BY seq DESC LIMIT 1",
                [],
            )?
            .pop())
    }

    /// The oldest checkpoint whose tree covers leaf `index`.
    pub fn checkpoint_covering(
        &self,
        index: u64,
    ) -> Result<Option<SignedCheckpoint>, ReceiptsError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT text, signature FROM checkpoints WHERE tree_size > ?1 ORDER BY seq LIMIT 1",
            )
            .map_err(sql("read checkpoints"))?;
        let row = stmt
            .query_row(params![to_i64(index)], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .optional()
            .map_err(sql("read checkpoints"))?;
        row.map(|(text, sig)| {
            let signature = serde_json::from_str(&sig)
                .map_err(|e| ReceiptsError::Corrupt(format!("stored signature: {e}")))?;
            Ok(SignedCheckpoint { text, signature })
        })
        .transpose()
    }

    /// Since when (ns) the newest key version has signed, first recorded as `now_ns`.
    pub fn key_in_use_since(&mut self, now_ns: u64) -> Result<u64, ReceiptsError> {
        let stored: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'key_in_use_since_ns'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql("read key age"))?;
        match stored {
            Some(v) => v
                .parse()
                .map_err(|_| ReceiptsError::Corrupt(format!("key_in_use_since_ns {v:?}"))),
            None => {
                self.set_key_in_use_since(now_ns)?;
                Ok(now_ns)
            }
        }
    }

    /// Record that a new key version signs from `time_ns` on.
    pub fn set_key_in_use_since(&mut self, time_ns: u64) -> Result<(), ReceiptsError> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES ('key_in_use_since_ns', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![time_ns.to_string()],
            )
            .map(|_| ())
            .map_err(sql("write key age"))
    }

    /// Remember public key versions (new versions added, retirement state updated).
    pub fn record_public_keys(&mut self, keys: &[PublicKeyVersion]) -> Result<(), ReceiptsError> {
        let tx = self.conn.transaction().map_err(sql("begin keys"))?;
        for k in keys {
            let json = serde_json::to_string(k)
                .map_err(|e| ReceiptsError::Corrupt(format!("key encoding: {e}")))?;
            tx.execute(
                "INSERT INTO public_keys (provider, key_id, version, json) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (provider, key_id, version) DO UPDATE SET json = excluded.json",
                params![k.provider, k.key_id, k.version, json],
            )
            .map_err(sql("record key"))?;
        }
        tx.commit().map_err(sql("commit keys"))
    }

    /// Every public key version ever used by this log.
    pub fn public_keys(&self) -> Result<Vec<PublicKeyVersion>, ReceiptsError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT json FROM public_keys ORDER BY provider, key_id, version")
            .map_err(sql("read keys"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(sql("read keys"))?;
        let mut out = Vec::new();
        for row in rows {
            let json = row.map_err(sql("read keys"))?;
            out.push(
                serde_json::from_str(&json)
                    .map_err(|e| ReceiptsError::Corrupt(format!("stored key: {e}")))?,
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests;
