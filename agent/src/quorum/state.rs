//! The replicator's SQLite state (`quorum.db`, WAL): each peer's witnessed size and last error,
//! the acknowledgement (cosignature) or error of every peer for every checkpoint, and the
//! commit record (sealing and commit time) of every committed checkpoint.
//!
//! `synchronous=NORMAL`: a power loss may forget the newest acknowledgements, which costs
//! nothing but a resend — witnesses persist their cosignature before answering and return the
//! stored one for a checkpoint they already cosigned — and it keeps fsyncs off the commit path.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension as _};
use serde::{Deserialize, Serialize};

use super::{open_db, sql, to_i64, to_u64, QuorumError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS peers (
    region     TEXT PRIMARY KEY,
    acked_size INTEGER NOT NULL,
    last_error TEXT,
    time_ns    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS acks (
    tree_size   INTEGER NOT NULL,
    region      TEXT NOT NULL,
    cosignature TEXT,
    error       TEXT,
    time_ns     INTEGER NOT NULL,
    PRIMARY KEY (tree_size, region)
);
CREATE TABLE IF NOT EXISTS commits (
    tree_size    INTEGER PRIMARY KEY,
    sealed_ns    INTEGER NOT NULL,
    committed_ns INTEGER NOT NULL
);
";

/// One peer's replication state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerState {
    /// Region.
    pub region: String,
    /// Size of the newest checkpoint the peer has cosigned (as far as this region knows).
    pub acked_size: u64,
    /// The error of the last attempt, if it failed.
    pub last_error: Option<String>,
    /// When the last attempt ended, ns.
    pub time_ns: u64,
}

/// One peer's answer about one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Region.
    pub region: String,
    /// Its cosignature line, when it acknowledged.
    pub cosignature: Option<String>,
    /// Its error, when it did not (yet).
    pub error: Option<String>,
    /// When, ns.
    pub time_ns: u64,
}

/// A committed checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// Tree size.
    pub tree_size: u64,
    /// When it was sealed (its `timestamp_ns`).
    pub sealed_ns: u64,
    /// When the quorum was reached.
    pub committed_ns: u64,
}

/// The replicator's database.
#[derive(Debug)]
pub struct QuorumState {
    conn: Connection,
}

impl QuorumState {
    /// Open or create `path`.
    pub fn open(path: &Path) -> Result<Self, QuorumError> {
        Ok(QuorumState {
            conn: open_db(path, SCHEMA, crate::db::Durability::Normal)?,
        })
    }

    /// Every peer's recorded state.
    pub fn peers(&self) -> Result<Vec<PeerState>, QuorumError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT region, acked_size, last_error, time_ns FROM peers ORDER BY region",
            )
            .map_err(sql("read peers"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(PeerState {
                    region: r.get(0)?,
                    acked_size: to_u64(r.get(1)?),
                    last_error: r.get(2)?,
                    time_ns: to_u64(r.get(3)?),
                })
            })
            .map_err(sql("read peers"))?;
        rows.collect::<Result<_, _>>().map_err(sql("read peers"))
    }

    /// Record a peer's size and the outcome of its last attempt.
    pub fn set_peer(
        &self,
        region: &str,
        acked_size: u64,
        error: Option<&str>,
        time_ns: u64,
    ) -> Result<(), QuorumError> {
        self.conn
            .execute(
                "INSERT INTO peers (region, acked_size, last_error, time_ns) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (region) DO UPDATE SET acked_size = excluded.acked_size,
                   last_error = excluded.last_error, time_ns = excluded.time_ns",
                params![region, to_i64(acked_size), error, to_i64(time_ns)],
            )
            .map_err(sql("write peer"))?;
        Ok(())
    }

    /// Record a peer's cosignature of the checkpoint at `tree_size`.
    pub fn record_ack(
        &self,
        tree_size: u64,
        region: &str,
        cosignature: &str,
        time_ns: u64,
    ) -> Result<(), QuorumError> {
        self.conn
            .execute(
                "INSERT INTO acks (tree_size, region, cosignature, error, time_ns) VALUES (?1, ?2, ?3, NULL, ?4)
                 ON CONFLICT (tree_size, region) DO UPDATE SET cosignature = excluded.cosignature,
                   error = NULL, time_ns = excluded.time_ns",
                params![to_i64(tree_size), region, cosignature, to_i64(time_ns)],
            )
            .map_err(sql("write ack"))?;
        Ok(())
    }

    /// Record why a peer did not acknowledge the checkpoint at `tree_size` (kept only while
    /// it has no cosignature).
    pub fn record_error(
        &self,
        tree_size: u64,
        region: &str,
        error: &str,
        time_ns: u64,
    ) -> Result<(), QuorumError> {
        self.conn
            .execute(
                "INSERT INTO acks (tree_size, region, cosignature, error, time_ns) VALUES (?1, ?2, NULL, ?3, ?4)
                 ON CONFLICT (tree_size, region) DO UPDATE SET error = excluded.error,
                   time_ns = excluded.time_ns WHERE acks.cosignature IS NULL",
                params![to_i64(tree_size), region, error, to_i64(time_ns)],
            )
            .map_err(sql("write ack error"))?;
        Ok(())
    }

    /// Every peer's answer about the checkpoint at `tree_size`.
    pub fn acks(&self, tree_size: u64) -> Result<Vec<Ack>, QuorumError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT region, cosignature, error, time_ns FROM acks WHERE tree_size = ?1 ORDER BY region",
            )
            .map_err(sql("read acks"))?;
        let rows = stmt
            .query_map(params![to_i64(tree_size)], |r| {
                Ok(Ack {
                    region: r.get(0)?,
                    cosignature: r.get(1)?,
                    error: r.get(2)?,
                    time_ns: to_u64(r.get(3)?),
                })
            })
            .map_err(sql("read acks"))?;
        rows.collect::<Result<_, _>>().map_err(sql("read acks"))
    }

    /// Record that the checkpoint at `tree_size` reached its quorum (first time only).
    pub fn record_commit(&self, commit: Commit) -> Result<(), QuorumError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO commits (tree_size, sealed_ns, committed_ns) VALUES (?1, ?2, ?3)",
                params![
                    to_i64(commit.tree_size),
                    to_i64(commit.sealed_ns),
                    to_i64(commit.committed_ns)
                ],
            )
            .map_err(sql("write commit"))?;
        Ok(())
    }

    /// The commit record at `tree_size`.
    pub fn commit(&self, tree_size: u64) -> Result<Option<Commit>, QuorumError> {
        self.commits_query(
            "SELECT tree_size, sealed_ns, committed_ns FROM commits WHERE tree_size = ?1",
            tree_size,
        )
        .map(|mut v| v.pop())
    }

    /// The newest commits, newest first, at most `limit`.
    pub fn recent_commits(&self, limit: u64) -> Result<Vec<Commit>, QuorumError> {
        self.commits_query(
            "SELECT tree_size, sealed_ns, committed_ns FROM commits ORDER BY tree_size DESC LIMIT ?1",
            limit,
        )
    }

    /// The oldest commit whose tree covers leaf `index`.
    pub fn commit_covering(&self, index: u64) -> Result<Option<Commit>, QuorumError> {
        self.commits_query(
            "SELECT tree_size, sealed_ns, committed_ns FROM commits WHERE tree_size > ?1 ORDER BY tree_size LIMIT 1",
            index,
        )
        .map(|mut v| v.pop())
    }

    fn commits_query(&self, query: &str, arg: u64) -> Result<Vec<Commit>, QuorumError> {
        let mut stmt = self
            .conn
            .prepare_cached(query)
            .map_err(sql("read commits"))?;
        let rows = stmt
            .query_map(params![to_i64(arg)], |r| {
                Ok(Commit {
                    tree_size: to_u64(r.get(0)?),
                    sealed_ns: to_u64(r.get(1)?),
                    committed_ns: to_u64(r.get(2)?),
                })
            })
            .map_err(sql("read commits"))?;
        rows.collect::<Result<_, _>>().map_err(sql("read commits"))
    }

    /// Whether `region` cosigned the checkpoint at `tree_size`.
    pub fn has_ack(&self, tree_size: u64, region: &str) -> Result<bool, QuorumError> {
        self.conn
            .query_row(
                "SELECT 1 FROM acks WHERE tree_size = ?1 AND region = ?2 AND cosignature IS NOT NULL",
                params![to_i64(tree_size), region],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(sql("read acks"))
    }
}
