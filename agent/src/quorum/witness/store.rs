//! The witness's SQLite state (`witness.db`, WAL, `synchronous=FULL`): per witnessed log, the
//! leaves received, every cosigned checkpoint with its cosignature, and the key versions
//! learned from logged rotations. One accepted checkpoint is one transaction.

use std::path::Path;

use knhk_core::checkpoint::PublicKeyVersion;
use knhk_core::merkle::Hash;
use rusqlite::{params, Connection, OptionalExtension as _};

use super::super::{open_db, sql, to_i64, to_u64, QuorumError};
use crate::receipts::SignedCheckpoint;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    origin TEXT NOT NULL,
    idx    INTEGER NOT NULL,
    entry  BLOB NOT NULL,
    hash   BLOB NOT NULL,
    PRIMARY KEY (origin, idx)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    origin      TEXT NOT NULL,
    tree_size   INTEGER NOT NULL,
    text        TEXT NOT NULL,
    signature   TEXT NOT NULL,
    cosignature TEXT NOT NULL,
    time_ns     INTEGER NOT NULL,
    PRIMARY KEY (origin, tree_size)
);
CREATE TABLE IF NOT EXISTS learned_keys (
    origin   TEXT NOT NULL,
    provider TEXT NOT NULL,
    key_id   TEXT NOT NULL,
    version  INTEGER NOT NULL,
    json     TEXT NOT NULL,
    PRIMARY KEY (origin, provider, key_id, version)
);
";

/// A cosigned checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witnessed {
    /// The log's signed checkpoint.
    pub checkpoint: SignedCheckpoint,
    /// Our cosignature line.
    pub cosignature: String,
}

/// Everything one accepted checkpoint changes, written in one transaction.
#[derive(Debug)]
pub struct Accepted {
    /// The log origin.
    pub origin: String,
    /// Index of the first new leaf.
    pub first_index: u64,
    /// New leaves with their hashes (a pruned leaf has empty bytes).
    pub entries: Vec<(Vec<u8>, Hash)>,
    /// Tree size cosigned.
    pub tree_size: u64,
    /// The checkpoint.
    pub checkpoint: SignedCheckpoint,
    /// The cosignature line.
    pub cosignature: String,
    /// Key versions learned from rotation entries.
    pub learned: Vec<PublicKeyVersion>,
    /// Witness clock, ns.
    pub time_ns: u64,
}

/// The witness database.
#[derive(Debug)]
pub struct WitnessStore {
    conn: Connection,
}

impl WitnessStore {
    /// Open or create `path`.
    pub fn open(path: &Path) -> Result<Self, QuorumError> {
        Ok(WitnessStore {
            conn: open_db(path, SCHEMA, crate::db::Durability::Full)?,
        })
    }

    /// The stored leaf hashes of `origin`'s log, for its pruned in-memory tree.
    pub(crate) fn leaf_source<'a>(
        &'a self,
        origin: &'a str,
    ) -> crate::receipts::leaf_source::SqlLeaves<'a> {
        crate::receipts::leaf_source::SqlLeaves::witnessed(&self.conn, origin)
    }

    /// Feed the leaf hashes of `origin` to `each`, in index order (checking contiguity),
    /// without holding them all: a witnessed log can be far larger than memory should be.
    pub fn for_each_leaf_hash(
        &self,
        origin: &str,
        mut each: impl FnMut(Hash),
    ) -> Result<u64, QuorumError> {
        let mut stmt = self
            .conn
            .prepare("SELECT idx, hash FROM entries WHERE origin = ?1 ORDER BY idx")
            .map_err(sql("load leaves"))?;
        let rows = stmt
            .query_map(params![origin], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(sql("load leaves"))?;
        let mut count = 0u64;
        for row in rows {
            let (idx, hash) = row.map_err(sql("load leaves"))?;
            if u64::try_from(idx).ok() != Some(count) {
                return Err(QuorumError::Corrupt(format!(
                    "{origin}: leaf {idx} where {count} was expected"
                )));
            }
            each(hash.try_into().map_err(|_| {
                QuorumError::Corrupt(format!("{origin}: leaf {idx} hash is not 32 bytes"))
            })?);
            count += 1;
        }
        Ok(count)
    }

    /// Key versions learned for `origin`.
    pub fn learned_keys(&self, origin: &str) -> Result<Vec<PublicKeyVersion>, QuorumError> {
        let mut stmt = self
            .conn
            .prepare("SELECT json FROM learned_keys WHERE origin = ?1 ORDER BY version")
            .map_err(sql("load keys"))?;
        let rows = stmt
            .query_map(params![origin], |r| r.get::<_, String>(0))
            .map_err(sql("load keys"))?;
        let mut out = Vec::new();
        for row in rows {
            let json = row.map_err(sql("load keys"))?;
            out.push(
                serde_json::from_str(&json)
                    .map_err(|e| QuorumError::Corrupt(format!("stored key: {e}")))?,
            );
        }
        Ok(out)
    }

    /// The cosigned checkpoint of `origin` at `tree_size`.
    pub fn witnessed(
        &self,
        origin: &str,
        tree_size: u64,
    ) -> Result<Option<Witnessed>, QuorumError> {
        self.one(
            "SELECT text, signature, cosignature FROM checkpoints WHERE origin = ?1 AND tree_size = ?2",
            origin,
            tree_size,
        )
    }

    /// The newest cosigned checkpoint of `origin`.
    pub fn latest(&self, origin: &str) -> Result<Option<Witnessed>, QuorumError> {
        self.one(
            "SELECT text, signature, cosignature FROM checkpoints WHERE origin = ?1 AND tree_size >= ?2 ORDER BY tree_size DESC LIMIT 1",
            origin,
            0,
        )
    }

    fn one(&self, query: &str, origin: &str, size: u64) -> Result<Option<Witnessed>, QuorumError> {
        let row = self
            .conn
            .query_row(query, params![origin, to_i64(size)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .optional()
            .map_err(sql("read checkpoint"))?;
        row.map(|(text, sig, cosignature)| {
            let signature = serde_json::from_str(&sig)
                .map_err(|e| QuorumError::Corrupt(format!("stored signature: {e}")))?;
            Ok(Witnessed {
                checkpoint: SignedCheckpoint { text, signature },
                cosignature,
            })
        })
        .transpose()
    }

    /// Number of stored leaves of `origin`.
    pub fn entry_count(&self, origin: &str) -> Result<u64, QuorumError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM entries WHERE origin = ?1",
                params![origin],
                |r| r.get::<_, i64>(0),
            )
            .map(to_u64)
            .map_err(sql("count entries"))
    }

    /// Up to `limit` stored leaves of `origin` from `from`, as `(index, bytes)`; pruned leaves
    /// are empty.
    pub fn entries(
        &self,
        origin: &str,
        from: u64,
        limit: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, QuorumError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT idx, entry FROM entries WHERE origin = ?1 AND idx >= ?2 ORDER BY idx LIMIT ?3",
            )
            .map_err(sql("read entries"))?;
        let rows = stmt
            .query_map(params![origin, to_i64(from), to_i64(limit)], |r| {
                Ok((to_u64(r.get::<_, i64>(0)?), r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(sql("read entries"))?;
        rows.collect::<Result<_, _>>().map_err(sql("read entries"))
    }

    /// Legal hold entries (kinds 3 and 4) of `origin`, in index order.
    pub fn hold_entries(&self, origin: &str) -> Result<Vec<(u64, Vec<u8>)>, QuorumError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT idx, entry FROM entries WHERE origin = ?1 AND hex(substr(entry, 1, 1)) IN ('03', '04') ORDER BY idx",
            )
            .map_err(sql("read holds"))?;
        let rows = stmt
            .query_map(params![origin], |r| {
                Ok((to_u64(r.get::<_, i64>(0)?), r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(sql("read holds"))?;
        rows.collect::<Result<_, _>>().map_err(sql("read holds"))
    }

    /// Remove the payloads of leaves `indexes` of `origin`, keeping their hashes.
    pub fn prune(&mut self, origin: &str, indexes: &[u64]) -> Result<u64, QuorumError> {
        let tx = self.conn.transaction().map_err(sql("begin prune"))?;
        let mut n = 0;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE entries SET entry = x'' WHERE origin = ?1 AND idx = ?2 AND length(entry) > 0",
                )
                .map_err(sql("prune"))?;
            for idx in indexes {
                n += stmt
                    .execute(params![origin, to_i64(*idx)])
                    .map_err(sql("prune"))?;
            }
        }
        tx.commit().map_err(sql("commit prune"))?;
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }

    /// Persist one accepted checkpoint atomically.
    pub fn accept(&mut self, a: &Accepted) -> Result<(), QuorumError> {
        let sig = serde_json::to_string(&a.checkpoint.signature)
            .map_err(|e| QuorumError::Corrupt(format!("signature encoding: {e}")))?;
        let tx = self.conn.transaction().map_err(sql("begin accept"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO entries (origin, idx, entry, hash) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(sql("store entries"))?;
            for (i, (bytes, hash)) in a.entries.iter().enumerate() {
                let idx = a.first_index + u64::try_from(i).unwrap_or(u64::MAX);
                stmt.execute(params![a.origin, to_i64(idx), bytes, hash.as_slice()])
                    .map_err(sql("store entries"))?;
            }
            for k in &a.learned {
                let json = serde_json::to_string(k)
                    .map_err(|e| QuorumError::Corrupt(format!("key encoding: {e}")))?;
                tx.execute(
                    "INSERT OR REPLACE INTO learned_keys (origin, provider, key_id, version, json) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![a.origin, k.provider, k.key_id, k.version, json],
                )
                .map_err(sql("store key"))?;
            }
            tx.execute(
                "INSERT OR REPLACE INTO checkpoints (origin, tree_size, text, signature, cosignature, time_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    a.origin,
                    to_i64(a.tree_size),
                    a.checkpoint.text,
                    sig,
                    a.cosignature,
                    to_i64(a.time_ns)
                ],
            )
            .map_err(sql("store checkpoint"))?;
        }
        tx.commit().map_err(sql("commit accept"))
    }
}
