//! Reads of the committed ledger: read-only SQLite connections beside the writer's.
//!
//! In WAL mode a reader sees the last committed snapshot and neither waits for the writer (its
//! fsync included) nor holds it up, so a large log page or a registry long poll never stalls a
//! transaction, and one slow read never stalls another. Every read sees committed state only.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::de::DeserializeOwned;

use crate::store::{entity_location, LogEntry, StoreError};
use cocoon_money::registry::{Amount, Registry};
use cocoon_money::rules::{Account, ClientContract, EntityKey, ProxyContract};

/// Idle read connections kept open for reuse.
const IDLE_CONNECTIONS: usize = 8;

/// Ledger-wide figures of one committed snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figures {
    /// Sequence number of the last committed transaction.
    pub last_seq: u64,
    /// Total money in existence.
    pub supply: Amount,
    /// Sum of all holdings.
    pub holdings_total: u128,
    /// Numbers of accounts, proxy, client and worker contracts.
    pub counts: (usize, usize, usize, usize),
    /// The registry version.
    pub registry_version: u64,
}

/// Opens read-only connections to a ledger database on demand and keeps a few for reuse.
#[derive(Debug)]
pub struct LedgerReader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

impl LedgerReader {
    /// Reads the database at `path`, which [`crate::LedgerStore::open`] has created.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `read` on a read-only connection inside one read transaction (one snapshot).
    /// Blocking: call it off the async workers.
    pub fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // The lock guards only taking and returning a connection, never a query.
        let reused = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match reused {
            Some(conn) => conn,
            None => {
                let conn = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.busy_timeout(Duration::from_secs(5))?;
                conn
            }
        };
        let result = (|| -> Result<T, StoreError> {
            let snapshot = conn.unchecked_transaction()?;
            let value = read(&snapshot)?;
            snapshot.commit()?;
            Ok(value)
        })();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_CONNECTIONS {
            idle.push(conn);
        }
        result
    }
}

/// One stored entity, if it exists.
pub fn entity<T: DeserializeOwned>(
    conn: &Connection,
    key: &EntityKey,
) -> Result<Option<T>, StoreError> {
    let (kind, k) = entity_location(key);
    let text: Option<String> = conn
        .query_row(
            "SELECT value FROM entities WHERE kind = ?1 AND key = ?2",
            params![kind, k],
            |r| r.get(0),
        )
        .optional()?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| corrupt(format!("{kind} {k}: {e}"))))
        .transpose()
}

/// The registry document.
pub fn registry(conn: &Connection) -> Result<Registry, StoreError> {
    entity(conn, &EntityKey::Registry)?.ok_or_else(|| corrupt("missing registry"))
}

/// Sequence number of the last committed transaction (0 = none).
pub fn last_seq(conn: &Connection) -> Result<u64, StoreError> {
    let seq: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM transactions", [], |r| {
        r.get(0)
    })?;
    u64::try_from(seq).map_err(corrupt)
}

/// Log entries after `after_seq`, oldest first: at most `limit` of them and, past the first,
/// no more than `max_bytes` of stored text, so a page stays small whatever its entries hold.
pub fn log_since(
    conn: &Connection,
    after_seq: u64,
    limit: u32,
    max_bytes: usize,
) -> Result<Vec<LogEntry>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT seq, applied_at, tx, outcome FROM transactions WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![i64::try_from(after_seq).unwrap_or(i64::MAX), limit])?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = rows.next()? {
        let (tx, outcome): (String, String) = (row.get(2)?, row.get(3)?);
        bytes = bytes.saturating_add(tx.len() + outcome.len());
        if bytes > max_bytes && !out.is_empty() {
            break;
        }
        out.push(LogEntry {
            seq: u64::try_from(row.get::<_, i64>(0)?).map_err(corrupt)?,
            applied_at: u64::try_from(row.get::<_, i64>(1)?).map_err(corrupt)?,
            transaction: serde_json::from_str(&tx).map_err(corrupt)?,
            outcome: serde_json::from_str(&outcome).map_err(corrupt)?,
        });
    }
    Ok(out)
}

/// Ledger-wide figures, all from one snapshot (run it through [`LedgerReader::read`]).
pub fn figures(conn: &Connection) -> Result<Figures, StoreError> {
    let supply: Amount = entity(conn, &EntityKey::Supply)?.ok_or_else(|| corrupt("no supply"))?;
    let mut counts = (0, 0, 0, 0);
    let mut holdings_total: u128 = 0;
    let mut stmt = conn.prepare("SELECT kind, value FROM entities")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let (kind, value): (String, String) = (row.get(0)?, row.get(1)?);
        let bad = |e: serde_json::Error| corrupt(format!("{kind}: {e}"));
        let held = match kind.as_str() {
            "account" => {
                counts.0 += 1;
                u128::from(
                    serde_json::from_str::<Account>(&value)
                        .map_err(bad)?
                        .balance,
                )
            }
            "proxy" => {
                counts.1 += 1;
                let p: ProxyContract = serde_json::from_str(&value).map_err(bad)?;
                u128::from(p.stake) + u128::from(p.pool)
            }
            "client" => {
                counts.2 += 1;
                u128::from(
                    serde_json::from_str::<ClientContract>(&value)
                        .map_err(bad)?
                        .balance,
                )
            }
            "worker" => {
                counts.3 += 1;
                0
            }
            _ => 0,
        };
        holdings_total += held;
    }
    Ok(Figures {
        last_seq: last_seq(conn)?,
        supply,
        holdings_total,
        counts,
        registry_version: registry(conn)?.version,
    })
}
