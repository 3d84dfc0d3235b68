//! The one SQLite opener every store uses: WAL journal (checked to have taken effect), the
//! store's durability, foreign keys on, and its schema. A leaf: it imports nothing from the
//! agent.

use std::path::Path;

use rusqlite::Connection;

/// How much a commit survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: a committed transaction survives power loss (receipts, epochs,
    /// rollout state, witnessed sizes).
    Full,
    /// `synchronous=NORMAL`: a committed transaction survives a process crash; power loss may
    /// forget the newest ones (state that is re-derived, such as peer acknowledgements).
    Normal,
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A SQLite call failed; `op` says which step.
    #[error("{op}: {source}")]
    Sqlite {
        /// The step: `open`, `enable WAL`, `set pragmas` or `create schema`.
        op: &'static str,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// SQLite kept another journal mode (an in-memory or read-only database, a file system
    /// without shared memory): the stores' crash safety depends on WAL, so they refuse.
    #[error("journal mode is {0}, WAL required")]
    NotWal(String),
}

impl OpenError {
    /// This refusal as a store's own error: `sqlite` for a failed call, `corrupt` for a
    /// database that cannot be used as required.
    pub fn into_store_error<E>(
        self,
        sqlite: impl FnOnce(&'static str, rusqlite::Error) -> E,
        corrupt: impl FnOnce(String) -> E,
    ) -> E {
        match self {
            OpenError::Sqlite { op, source } => sqlite(op, source),
            e @ OpenError::NotWal(_) => corrupt(e.to_string()),
        }
    }
}

/// Open (creating) the database at `path` in WAL mode with `durability`, and apply `schema`
/// (idempotent `CREATE … IF NOT EXISTS` statements).
pub fn open(path: &Path, schema: &str, durability: Durability) -> Result<Connection, OpenError> {
    let step = |op: &'static str| move |source| OpenError::Sqlite { op, source };
    let conn = Connection::open(path).map_err(step("open"))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(step("enable WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::NotWal(mode));
    }
    let synchronous = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous={synchronous}; PRAGMA foreign_keys=ON;"
    ))
    .map_err(step("set pragmas"))?;
    conn.execute_batch(schema).map_err(step("create schema"))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pragma(conn: &Connection, name: &str) -> String {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| {
            r.get::<_, rusqlite::types::Value>(0)
        })
        .map(|v| match v {
            rusqlite::types::Value::Text(t) => t,
            rusqlite::types::Value::Integer(i) => i.to_string(),
            other => format!("{other:?}"),
        })
        .unwrap_or_default()
    }

    /// A file opens in WAL mode with the durability asked for and foreign keys on, and the
    /// schema is applied (again, harmlessly, on a second open).
    #[test]
    fn opens_in_wal_with_durability_and_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let schema = "CREATE TABLE IF NOT EXISTS t (x INTEGER);";
        for (durability, want) in [(Durability::Full, "2"), (Durability::Normal, "1")] {
            let conn = open(&path, schema, durability).unwrap();
            assert_eq!(pragma(&conn, "journal_mode"), "wal");
            assert_eq!(pragma(&conn, "synchronous"), want);
            assert_eq!(pragma(&conn, "foreign_keys"), "1");
            conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
        }
    }

    /// A database where WAL does not take effect is refused, as the store's "corrupt".
    #[test]
    fn refuses_without_wal() {
        let err = open(Path::new(":memory:"), "", Durability::Full).unwrap_err();
        assert!(
            matches!(&err, OpenError::NotWal(mode) if mode == "memory"),
            "{err}"
        );
        let as_store: String = err.into_store_error(|op, _| format!("sqlite {op}"), |m| m);
        assert_eq!(as_store, "journal mode is memory, WAL required");
    }

    /// A bad schema is named as the failing step.
    #[test]
    fn names_the_failing_step() {
        let dir = tempfile::tempdir().unwrap();
        let err = open(
            &dir.path().join("b.db"),
            "CREATE nonsense",
            Durability::Full,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                OpenError::Sqlite {
                    op: "create schema",
                    ..
                }
            ),
            "{err}"
        );
    }
}
