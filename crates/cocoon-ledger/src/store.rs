//! Durable ledger: the [`LedgerState`] and its transaction log in SQLite.
//!
//! Every accepted transaction is written in one SQLite transaction together with the entities it
//! touched (WAL journal, `synchronous=FULL`), so once [`LedgerStore::submit`] returns `Ok` the change
//! survives a crash or power loss. On open, the entity rows are loaded back into memory; the log
//! is kept for audit, not replayed.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use cocoon_money::ids::AccountId;
use cocoon_money::rules::{Context, EntityKey, LedgerState, Outcome, RuleError};
use cocoon_money::transaction::{SignedTransaction, TransactionError};
use cocoon_money::Receipt;

mod registry_update;

/// Bumped when the table layout changes; an unknown version is refused rather than misread.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS entities (
    kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS transactions (
    seq INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL, signer TEXT NOT NULL,
    tx TEXT NOT NULL, outcome TEXT NOT NULL
);
";

/// One accepted transaction as kept in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogEntry {
    /// Position in the log.
    pub seq: u64,
    /// Ledger time it was applied at (unix seconds).
    pub applied_at: u64,
    /// The transaction exactly as signed.
    pub transaction: SignedTransaction,
    /// What it did.
    pub outcome: Outcome,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored row could not be decoded.
    #[error("corrupt ledger database: {0}")]
    Corrupt(String),
    /// The database was written by an incompatible version.
    #[error("unsupported ledger schema version {0}")]
    UnsupportedSchema(i64),
    /// The genesis state of a new ledger could not be built.
    #[error("cannot create the ledger: {0}")]
    Genesis(Box<dyn std::error::Error + Send + Sync>),
    /// Encoding a row failed.
    #[error("encoding: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Why a submitted transaction was not applied.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The envelope is malformed or its signature is wrong.
    #[error(transparent)]
    Transaction(#[from] TransactionError),
    /// The rules refused it; nothing changed.
    #[error(transparent)]
    Rejected(#[from] RuleError),
    /// It could not be made durable; nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The ledger state backed by a SQLite database.
pub struct LedgerStore {
    conn: Connection,
    state: LedgerState,
    last_seq: u64,
}

impl std::fmt::Debug for LedgerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerStore")
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}

pub(crate) fn entity_location(key: &EntityKey) -> (&'static str, String) {
    match key {
        EntityKey::Supply => ("supply", String::new()),
        EntityKey::Registry => ("registry", String::new()),
        EntityKey::Account(a) => ("account", a.to_string()),
        EntityKey::Proxy(p) => ("proxy", p.to_string()),
        EntityKey::Client(p, c) => ("client", format!("{p}:{c}")),
        EntityKey::Worker(p, w) => ("worker", format!("{p}:{w}")),
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn parse_pair(key: &str) -> Result<(AccountId, AccountId), StoreError> {
    let (a, b) = key
        .split_once(':')
        .ok_or_else(|| corrupt(format!("bad pair key {key:?}")))?;
    Ok((a.parse().map_err(corrupt)?, b.parse().map_err(corrupt)?))
}

impl LedgerStore {
    /// Opens the database at `path`, creating it from `genesis()` when it does not exist yet
    /// (an existing ledger ignores `genesis`).
    pub fn open<E>(
        path: &Path,
        genesis: impl FnOnce() -> Result<LedgerState, E>,
    ) -> Result<Self, StoreError>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let mut conn = Connection::open(path)?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(corrupt(format!("could not enable WAL (got {mode})")));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;

        let version: Option<i64> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        match version {
            Some(SCHEMA_VERSION) => {}
            Some(other) => return Err(StoreError::UnsupportedSchema(other)),
            None => {
                let mut state = genesis().map_err(|e| StoreError::Genesis(Box::new(e)))?;
                let tx = conn.transaction()?;
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                    [SCHEMA_VERSION],
                )?;
                let mut all: Vec<EntityKey> = vec![EntityKey::Supply, EntityKey::Registry];
                all.extend(state.account_ids().map(|a| EntityKey::Account(*a)));
                write_entities(&tx, &state, all.iter())?;
                tx.commit()?;
                state.take_touched();
            }
        }
        let state = load_state(&conn)?;
        let last_seq: i64 =
            conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM transactions", [], |r| {
                r.get(0)
            })?;
        Ok(Self {
            conn,
            state,
            last_seq: u64::try_from(last_seq).map_err(corrupt)?,
        })
    }

    /// The current state.
    pub fn state(&self) -> &LedgerState {
        &self.state
    }

    /// Sequence number of the last accepted transaction (0 = none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Verifies, applies and durably records one transaction.
    pub fn submit(
        &mut self,
        signed: &SignedTransaction,
        ctx: &Context,
    ) -> Result<Receipt, SubmitError> {
        let tx = signed.verify()?;
        self.state.take_touched();
        let outcome = self.state.apply(&tx, ctx)?;
        let seq = self.last_seq + 1;
        match self.persist(seq, signed, &outcome, ctx.now) {
            Ok(()) => {
                self.last_seq = seq;
                Ok(Receipt { seq, outcome })
            }
            Err(e) => {
                // Memory ran ahead of disk: reload so the two agree again.
                tracing::error!(error = %e, "ledger write failed; reloading state from disk");
                self.state = load_state(&self.conn)?;
                Err(e.into())
            }
        }
    }

    fn persist(
        &mut self,
        seq: u64,
        signed: &SignedTransaction,
        outcome: &Outcome,
        now: u64,
    ) -> Result<(), StoreError> {
        let touched = self.state.take_touched();
        let db = self.conn.transaction()?;
        db.execute(
            "INSERT INTO transactions (seq, applied_at, signer, tx, outcome) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                i64::try_from(seq).map_err(corrupt)?,
                i64::try_from(now).map_err(corrupt)?,
                signed.signer.to_string(),
                serde_json::to_string(signed)?,
                serde_json::to_string(outcome)?,
            ],
        )?;
        write_entities(&db, &self.state, touched.iter())?;
        db.commit()?;
        Ok(())
    }

    /// Up to `limit` log entries after `after_seq`, oldest first, and no more than `max_bytes`
    /// of them after the first (see [`crate::reader::log_since`]).
    pub fn log_since(
        &self,
        after_seq: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        crate::reader::log_since(&self.conn, after_seq, limit, max_bytes)
    }
}

/// Upserts the given entities' current values; an entity absent from the state is deleted.
fn write_entities<'a>(
    db: &rusqlite::Transaction<'_>,
    state: &LedgerState,
    keys: impl Iterator<Item = &'a EntityKey>,
) -> Result<(), StoreError> {
    let mut upsert = db.prepare_cached(
        "INSERT INTO entities (kind, key, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value",
    )?;
    let mut delete = db.prepare_cached("DELETE FROM entities WHERE kind = ?1 AND key = ?2")?;
    for key in keys {
        let value = match key {
            EntityKey::Supply => Some(serde_json::to_string(&state.supply())?),
            EntityKey::Registry => Some(serde_json::to_string(state.registry())?),
            EntityKey::Account(a) => state.account(a).map(serde_json::to_string).transpose()?,
            EntityKey::Proxy(p) => state.proxy(p).map(serde_json::to_string).transpose()?,
            EntityKey::Client(p, c) => state
                .client_contract(p, c)
                .map(serde_json::to_string)
                .transpose()?,
            EntityKey::Worker(p, w) => state
                .worker_contract(p, w)
                .map(serde_json::to_string)
                .transpose()?,
        };
        let (kind, k) = entity_location(key);
        match value {
            Some(v) => upsert.execute(params![kind, k, v])?,
            None => delete.execute(params![kind, k])?,
        };
    }
    Ok(())
}

fn load_state(conn: &Connection) -> Result<LedgerState, StoreError> {
    let mut stmt = conn.prepare("SELECT kind, key, value FROM entities")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut supply = None;
    let mut registry = None;
    let mut state_parts = (
        std::collections::BTreeMap::new(),
        std::collections::BTreeMap::new(),
        std::collections::BTreeMap::new(),
        std::collections::BTreeMap::new(),
    );
    for row in rows {
        let (kind, key, value) = row?;
        let bad = |e: serde_json::Error| corrupt(format!("{kind} {key}: {e}"));
        match kind.as_str() {
            "supply" => supply = Some(serde_json::from_str(&value).map_err(bad)?),
            "registry" => registry = Some(serde_json::from_str(&value).map_err(bad)?),
            "account" => {
                let id: AccountId = key.parse().map_err(corrupt)?;
                state_parts
                    .0
                    .insert(id, serde_json::from_str(&value).map_err(bad)?);
            }
            "proxy" => {
                let id: AccountId = key.parse().map_err(corrupt)?;
                state_parts
                    .1
                    .insert(id, serde_json::from_str(&value).map_err(bad)?);
            }
            "client" => {
                state_parts.2.insert(
                    parse_pair(&key)?,
                    serde_json::from_str(&value).map_err(bad)?,
                );
            }
            "worker" => {
                state_parts.3.insert(
                    parse_pair(&key)?,
                    serde_json::from_str(&value).map_err(bad)?,
                );
            }
            other => return Err(corrupt(format!("unknown entity kind {other:?}"))),
        }
    }
    let supply = supply.ok_or_else(|| corrupt("missing supply"))?;
    let registry = registry.ok_or_else(|| corrupt("missing registry"))?;
    let (accounts, proxies, clients, workers) = state_parts;
    Ok(LedgerState::from_parts(
        supply, registry, accounts, proxies, clients, workers,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_money::registry::Registry;
    use cocoon_money::transaction::TransactionBody;
    use cocoon_money::voucher::{Voucher, VoucherKind};
    use ed25519_dalek::SigningKey;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn genesis() -> Result<LedgerState, RuleError> {
        let mut registry = Registry::new(AccountId::from(&key(1)));
        registry.min_proxy_stake = 100;
        registry.min_client_stake = 10;
        LedgerState::genesis(registry, &[(AccountId::from(&key(2)), 5_000)])
    }

    const CTX: Context = Context {
        now: 100,
        faucet_enabled: true,
    };

    fn submit(
        store: &mut LedgerStore,
        who: u8,
        body: TransactionBody,
    ) -> Result<Receipt, SubmitError> {
        let id = AccountId::from(&key(who));
        let nonce = store.state().account(&id).map_or(0, |a| a.nonce) + 1;
        store.submit(
            &SignedTransaction::sign(&key(who), nonce, body).unwrap(),
            &CTX,
        )
    }

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite3");
        let proxy = AccountId::from(&key(2));
        let client = AccountId::from(&key(3));
        let worker = AccountId::from(&key(4));
        let before = {
            let mut store = LedgerStore::open(&path, genesis).unwrap();
            submit(&mut store, 3, TransactionBody::Mint { amount: 1_000 }).unwrap();
            submit(
                &mut store,
                2,
                TransactionBody::OpenProxy {
                    stake: 500,
                    voucher_key: proxy,
                },
            )
            .unwrap();
            submit(
                &mut store,
                3,
                TransactionBody::OpenClient {
                    proxy,
                    amount: 400,
                    stake: 50,
                },
            )
            .unwrap();
            let charge = Voucher {
                kind: VoucherKind::ClientPay,
                proxy,
                counterparty: client,
                cumulative: 90,
                seqno: 1,
                is_final: false,
            };
            submit(
                &mut store,
                2,
                TransactionBody::Charge {
                    voucher: charge.sign(&key(3)),
                },
            )
            .unwrap();
            let pay = Voucher {
                kind: VoucherKind::WorkerPay,
                counterparty: worker,
                cumulative: 60,
                ..charge
            };
            let receipt = submit(
                &mut store,
                4,
                TransactionBody::Claim {
                    voucher: pay.sign(&key(2)),
                },
            )
            .unwrap();
            assert_eq!(receipt.seq, 5);
            assert_eq!(receipt.outcome, Outcome::Claimed { paid: 60 });
            // A rejected transaction is not logged.
            assert!(submit(
                &mut store,
                3,
                TransactionBody::Transfer {
                    to: proxy,
                    amount: 1 << 40
                }
            )
            .is_err());
            store.state().clone()
        };
        let reopened = LedgerStore::open(&path, || -> Result<LedgerState, RuleError> {
            panic!("genesis must not run on an existing ledger")
        })
        .unwrap();
        assert_eq!(reopened.state(), &before);
        assert_eq!(reopened.last_seq(), 5);
        assert_eq!(reopened.state().supply(), 6_000);
        assert_eq!(reopened.state().holdings_total(), 6_000);
        let log = reopened.log_since(3, 10, usize::MAX).unwrap();
        assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
        assert_eq!(log[1].outcome, Outcome::Claimed { paid: 60 });
        assert_eq!(log[1].applied_at, 100);
        log[1].transaction.verify().unwrap();
    }

    #[test]
    fn replayed_signed_transaction_is_rejected_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite3");
        let tx = SignedTransaction::sign(
            &key(2),
            1,
            TransactionBody::Transfer {
                to: AccountId::from(&key(3)),
                amount: 10,
            },
        )
        .unwrap();
        LedgerStore::open(&path, genesis)
            .unwrap()
            .submit(&tx, &CTX)
            .unwrap();
        let mut store = LedgerStore::open(&path, genesis).unwrap();
        assert!(matches!(
            store.submit(&tx, &CTX),
            Err(SubmitError::Rejected(RuleError::NonceReplayed {
                last: 1,
                got: 1
            }))
        ));
        assert_eq!(
            store
                .state()
                .account(&AccountId::from(&key(3)))
                .unwrap()
                .balance,
            10
        );
    }

    #[test]
    fn forged_signature_is_refused_before_the_rules() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LedgerStore::open(&dir.path().join("l.sqlite3"), genesis).unwrap();
        let mut tx =
            SignedTransaction::sign(&key(3), 1, TransactionBody::Mint { amount: 5 }).unwrap();
        tx.signer = AccountId::from(&key(2));
        assert!(matches!(
            store.submit(&tx, &CTX),
            Err(SubmitError::Transaction(_))
        ));
        assert_eq!(store.last_seq(), 0);
    }

    #[test]
    fn database_uses_wal_and_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = LedgerStore::open(&dir.path().join("l.sqlite3"), genesis).unwrap();
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let sync: i64 = store
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "synchronous=FULL");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(8))]

        /// Whatever sequence was applied, a reopened store holds exactly the same state.
        #[test]
        fn reopen_restores_the_state_after_random_sequences(
            ops in proptest::collection::vec(cocoon_money::rules::properties::op(), 1..60)
        ) {
            use cocoon_money::rules::properties::{build_body, Op, KEYS};
            use cocoon_money::rules::properties::{id, key, test_registry};
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("ledger.sqlite3");
            let genesis = || {
                let allocations: Vec<_> = (1..=KEYS).map(|n| (id(n), 2_000)).collect();
                LedgerState::genesis(test_registry(), &allocations)
            };
            let mut store = LedgerStore::open(&path, genesis).unwrap();
            let mut ctx = Context { now: 0, faucet_enabled: true };
            let mut accepted = 0;
            for op in &ops {
                match op {
                    Op::Advance(dt) => ctx.now += dt,
                    Op::Tx { signer, replay_nonce, body } => {
                        let last = store.state().account(&id(*signer)).map_or(0, |a| a.nonce);
                        let nonce = if *replay_nonce { last } else { last + 1 };
                        let tx = SignedTransaction::sign(&key(*signer), nonce, build_body(*signer, body))
                            .unwrap();
                        if store.submit(&tx, &ctx).is_ok() {
                            accepted += 1;
                        }
                    }
                }
            }
            let expected = store.state().clone();
            drop(store);
            let reopened = LedgerStore::open(&path, genesis).unwrap();
            proptest::prop_assert_eq!(reopened.state(), &expected);
            proptest::prop_assert_eq!(reopened.last_seq(), accepted);
        }
    }
}
