//! The durable epoch store: `policy.db` (SQLite, WAL, `synchronous=FULL`) in the data
//! directory, separate from the receipt database.
//!
//! One row per published epoch, written in one transaction with the policy file's content hash
//! when the file was its source; the row is committed before the epoch is served, so a restart
//! resumes above every epoch a filter may have seen. Old rows are pruned, keeping the newest
//! [`KEEP_EPOCHS`] and the newest handover.

use std::path::Path;

use axum::body::Bytes;
use knhk_core::checkpoint::PublicKeyVersion;
use rusqlite::{params, Connection, OptionalExtension as _};

use super::epoch::{Epoch, Source};
use super::PolicyError;
use crate::db::Durability;

/// Published epochs kept in the store (the newest handover is always kept too).
pub const KEEP_EPOCHS: u64 = 1000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS config_epochs (
    epoch        INTEGER PRIMARY KEY,
    issued_at_ns INTEGER NOT NULL,
    source       TEXT NOT NULL,
    policy       TEXT NOT NULL,
    envelope     BLOB NOT NULL,
    signed_by    TEXT NOT NULL,
    handover     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS config_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

const FILE_HASH_KEY: &str = "policy_file_sha256";

fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> PolicyError {
    move |source| PolicyError::Sqlite { op, source }
}

fn to_i64(v: u64) -> Result<i64, PolicyError> {
    i64::try_from(v).map_err(|_| PolicyError::EpochExhausted)
}

/// The epoch table.
pub struct PolicyStore {
    conn: Connection,
}

impl std::fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStore").finish_non_exhaustive()
    }
}

type Row = (i64, i64, String, String, Vec<u8>, String, bool);

fn decode(row: Row) -> Result<Epoch, PolicyError> {
    let (epoch, issued_at_ns, source, policy, envelope, signed_by, handover) = row;
    let corrupt = |what: &str| PolicyError::Corrupt(format!("epoch {epoch}: {what}"));
    let signed_by: PublicKeyVersion =
        serde_json::from_str(&signed_by).map_err(|e| corrupt(&format!("signed_by: {e}")))?;
    Ok(Epoch {
        epoch: u64::try_from(epoch).map_err(|_| corrupt("negative epoch"))?,
        issued_at_ns: u64::try_from(issued_at_ns).unwrap_or(0),
        source: Source::parse(&source).ok_or_else(|| corrupt("unknown source"))?,
        policy: serde_json::from_str(&policy).map_err(|e| corrupt(&format!("policy: {e}")))?,
        envelope: Bytes::from(envelope),
        signed_by,
        handover,
    })
}

const COLUMNS: &str = "epoch, issued_at_ns, source, policy, envelope, signed_by, handover";

impl PolicyStore {
    /// Open or create the store at `path`.
    pub fn open(path: &Path) -> Result<Self, PolicyError> {
        let conn = crate::db::open(path, SCHEMA, Durability::Full).map_err(|e| {
            e.into_store_error(
                |op, source| PolicyError::Sqlite { op, source },
                PolicyError::Corrupt,
            )
        })?;
        Ok(PolicyStore { conn })
    }

    fn one(&self, filter: &str) -> Result<Option<Epoch>, PolicyError> {
        let q = format!("SELECT {COLUMNS} FROM config_epochs {filter} ORDER BY epoch DESC LIMIT 1");
        let row: Option<Row> = self
            .conn
            .query_row(&q, [], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .optional()
            .map_err(sql("read epoch"))?;
        row.map(decode).transpose()
    }

    /// The newest epoch.
    pub fn latest(&self) -> Result<Option<Epoch>, PolicyError> {
        self.one("")
    }

    /// The newest handover epoch (one that announces `next_keys`).
    pub fn latest_handover(&self) -> Result<Option<Epoch>, PolicyError> {
        self.one("WHERE handover = 1")
    }

    /// Content hash (hex SHA-256) of the policy file the last file-sourced epoch came from.
    pub fn file_hash(&self) -> Result<Option<String>, PolicyError> {
        self.conn
            .query_row(
                "SELECT value FROM config_meta WHERE key = ?1",
                params![FILE_HASH_KEY],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql("read file hash"))
    }

    /// Commit `epoch` (which must be above every stored one), with the policy file hash when
    /// the file was its source, and prune old rows.
    pub fn insert(&mut self, epoch: &Epoch, file_hash: Option<&str>) -> Result<(), PolicyError> {
        let signed_by = serde_json::to_string(&epoch.signed_by)
            .map_err(|e| PolicyError::Corrupt(format!("signed_by does not serialize: {e}")))?;
        let policy = serde_json::to_string(&epoch.policy)
            .map_err(|e| PolicyError::Corrupt(format!("policy does not serialize: {e}")))?;
        let n = to_i64(epoch.epoch)?;
        let tx = self.conn.transaction().map_err(sql("begin"))?;
        let max: Option<i64> = tx
            .query_row("SELECT MAX(epoch) FROM config_epochs", [], |r| r.get(0))
            .map_err(sql("read max epoch"))?;
        if max.is_some_and(|m| m >= n) {
            return Err(PolicyError::Corrupt(format!(
                "epoch {n} is not above the stored epoch {}",
                max.unwrap_or(0)
            )));
        }
        tx.execute(
            &format!("INSERT INTO config_epochs ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
            params![
                n,
                i64::try_from(epoch.issued_at_ns).unwrap_or(i64::MAX),
                epoch.source.as_str(),
                policy,
                epoch.envelope.as_ref(),
                signed_by,
                epoch.handover,
            ],
        )
        .map_err(sql("insert epoch"))?;
        if let Some(hash) = file_hash {
            tx.execute(
                "INSERT INTO config_meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![FILE_HASH_KEY, hash],
            )
            .map_err(sql("write file hash"))?;
        }
        let floor = n.saturating_sub(to_i64(KEEP_EPOCHS)?);
        tx.execute(
            "DELETE FROM config_epochs WHERE epoch <= ?1 AND epoch <>
               COALESCE((SELECT MAX(epoch) FROM config_epochs WHERE handover = 1), -1)",
            params![floor],
        )
        .map_err(sql("prune epochs"))?;
        tx.commit().map_err(sql("commit epoch"))
    }
}
