//! `gates.db`: the current rollout (its spec and state) and its history, in SQLite (WAL,
//! `synchronous=FULL`). A state change is committed here before the config it implies is
//! published, so a restarted agent resumes the same gate and weights and never re-publishes a
//! state it had left.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::spec::RolloutSpec;
use super::state::RolloutState;
use super::GatesError;
use crate::db::Durability;

/// Name of the database in the data directory.
pub const DATABASE_FILE: &str = "gates.db";

/// One entry of a rollout's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryItem {
    /// When, ns since the epoch.
    pub time_ns: u64,
    /// `start`, `promote`, `pause`, `resume`, `abort`, `rollback`, `flag_disabled`.
    pub action: String,
    /// Gate before.
    pub from: String,
    /// Gate after.
    pub to: String,
    /// Canary weight after, basis points.
    pub canary_basis_points: u16,
    /// Config epoch published for it (0 when none was needed).
    pub epoch: u64,
    /// Leaf index of its signed rollout event.
    pub leaf_index: Option<u64>,
    /// Why.
    pub cause: String,
}

/// The rollout store.
#[derive(Debug)]
pub struct GatesStore {
    db: Connection,
}

fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> GatesError {
    move |source| GatesError::Sqlite { op, source }
}

fn json<T: Serialize>(value: &T) -> Result<String, GatesError> {
    serde_json::to_string(value).map_err(|e| GatesError::Corrupt(e.to_string()))
}

fn parse<T: for<'de> Deserialize<'de>>(text: &str, what: &str) -> Result<T, GatesError> {
    serde_json::from_str(text).map_err(|e| GatesError::Corrupt(format!("{what}: {e}")))
}

/// The rollout and history tables.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rollouts (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    id       TEXT NOT NULL UNIQUE,
    spec     TEXT NOT NULL,
    state    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    rollout  TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    item     TEXT NOT NULL,
    PRIMARY KEY (rollout, seq)
);
";

impl GatesStore {
    /// Open (creating) the store.
    pub fn open(path: &Path) -> Result<GatesStore, GatesError> {
        let db = crate::db::open(path, SCHEMA, Durability::Full).map_err(|e| {
            e.into_store_error(
                |op, source| GatesError::Sqlite { op, source },
                GatesError::Corrupt,
            )
        })?;
        Ok(GatesStore { db })
    }

    /// The newest rollout, if any.
    pub fn current(&self) -> Result<Option<(RolloutSpec, RolloutState)>, GatesError> {
        let row: Option<(String, String)> = self
            .db
            .query_row(
                "SELECT spec, state FROM rollouts ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql("read current rollout"))?;
        row.map(|(spec, state)| Ok((parse(&spec, "spec")?, parse(&state, "state")?)))
            .transpose()
    }

    /// Whether a rollout with `id` was ever started.
    pub fn exists(&self, id: &str) -> Result<bool, GatesError> {
        self.db
            .query_row("SELECT 1 FROM rollouts WHERE id = ?1", [id], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
            .map_err(sql("look up rollout"))
    }

    /// Record a new rollout and its first history item in one transaction.
    pub fn insert(
        &mut self,
        spec: &RolloutSpec,
        state: &RolloutState,
        item: &HistoryItem,
    ) -> Result<(), GatesError> {
        let tx = self.db.transaction().map_err(sql("begin"))?;
        tx.execute(
            "INSERT INTO rollouts (id, spec, state) VALUES (?1, ?2, ?3)",
            params![spec.id, json(spec)?, json(state)?],
        )
        .map_err(sql("insert rollout"))?;
        tx.execute(
            "INSERT INTO history (rollout, seq, item) VALUES (?1, 0, ?2)",
            params![spec.id, json(item)?],
        )
        .map_err(sql("insert history"))?;
        tx.commit().map_err(sql("commit"))
    }

    /// Update a rollout's state, appending `item` to its history, in one transaction.
    pub fn update(
        &mut self,
        id: &str,
        state: &RolloutState,
        item: Option<&HistoryItem>,
    ) -> Result<(), GatesError> {
        let tx = self.db.transaction().map_err(sql("begin"))?;
        tx.execute(
            "UPDATE rollouts SET state = ?2 WHERE id = ?1",
            params![id, json(state)?],
        )
        .map_err(sql("update rollout"))?;
        if let Some(item) = item {
            tx.execute(
                "INSERT INTO history (rollout, seq, item)
                 VALUES (?1, (SELECT COALESCE(MAX(seq), -1) + 1 FROM history WHERE rollout = ?1), ?2)",
                params![id, json(item)?],
            )
            .map_err(sql("insert history"))?;
        }
        tx.commit().map_err(sql("commit"))
    }

    /// Record the config epoch published for the newest history item of `id` and the leaf
    /// index of its logged event.
    pub fn set_published(
        &mut self,
        id: &str,
        epoch: u64,
        leaf_index: u64,
    ) -> Result<(), GatesError> {
        let row: Option<(i64, String)> = self
            .db
            .query_row(
                "SELECT seq, item FROM history WHERE rollout = ?1 ORDER BY seq DESC LIMIT 1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql("read history"))?;
        let Some((seq, text)) = row else {
            return Ok(());
        };
        let mut item: HistoryItem = parse(&text, "history item")?;
        item.epoch = epoch;
        item.leaf_index = Some(leaf_index);
        self.db
            .execute(
                "UPDATE history SET item = ?3 WHERE rollout = ?1 AND seq = ?2",
                params![id, seq, json(&item)?],
            )
            .map_err(sql("update history"))?;
        Ok(())
    }

    /// The history of `id`, oldest first.
    pub fn history(&self, id: &str) -> Result<Vec<HistoryItem>, GatesError> {
        let mut stmt = self
            .db
            .prepare("SELECT item FROM history WHERE rollout = ?1 ORDER BY seq")
            .map_err(sql("read history"))?;
        let rows = stmt
            .query_map([id], |r| r.get::<_, String>(0))
            .map_err(sql("read history"))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(parse(&row.map_err(sql("read history"))?, "history item")?);
        }
        Ok(out)
    }
}
