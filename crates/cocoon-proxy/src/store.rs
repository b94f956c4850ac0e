//! The proxy's own money database: every charge it made, and per client and per worker the running
//! totals its vouchers state. SQLite in WAL mode with `synchronous = FULL`, so a charge is on disk
//! before [`BillingStore::record_charge`] returns, and a `kill -9` loses nothing that was recorded.
//!
//! It also holds each client's newest payment voucher (`store/payments.rs`), written in the same
//! transactions as charges.
//!
//! Each charge advances a sequence number and a hash chain over every charge so far; the proxy
//! commits `(seqno, hash)` to the ledger, which is how a database restored from an old copy is
//! detected on start.

mod payments;

use std::collections::HashMap;
use std::path::Path;

use cocoon_money::{AccountId, Amount, Hash32, SignedVoucher};
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

pub use payments::StoredPayment;

/// Why the proxy's database failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed (I/O, corruption, locking).
    #[error("proxy database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A total would exceed a 64-bit amount.
    #[error("proxy database: a total overflows")]
    Overflow,
    /// A stored value is not what this code writes.
    #[error("proxy database is corrupted: {0}")]
    Corrupt(String),
    /// The group commit this charge was part of failed (the message names the database).
    #[error("{0}")]
    Batch(String),
    /// The writer thread is gone (the proxy is stopping).
    #[error("proxy database writer has stopped")]
    WriterStopped,
}

/// One finished, charged request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChargeRecord {
    /// The paying client's wallet.
    pub client: AccountId,
    /// The serving worker's wallet.
    pub worker: AccountId,
    /// Tokens as priced (adjusted by coefficient and multipliers).
    pub adjusted_tokens: u64,
    /// What the client pays.
    pub client_price: Amount,
    /// What the worker earns.
    pub worker_pay: Amount,
}

/// Running totals of one counterparty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Money: charged to a client, or earned by a worker.
    pub amount: Amount,
    /// Adjusted tokens behind it.
    pub tokens: u64,
    /// Requests behind it.
    pub requests: u64,
}

impl Totals {
    /// These totals plus one charge of `amount` for `tokens`, or `None` if the amount overflows.
    fn add(self, amount: Amount, tokens: u64) -> Option<Totals> {
        Some(Totals {
            amount: self.amount.checked_add(amount)?,
            tokens: self.tokens.saturating_add(tokens),
            requests: self.requests.saturating_add(1),
        })
    }
}

/// The proxy's money database.
pub struct BillingStore {
    db: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS position (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    seqno INTEGER NOT NULL,
    hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS clients (
    account BLOB PRIMARY KEY,
    charged INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    requests INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS workers (
    account BLOB PRIMARY KEY,
    earned INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    requests INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS charges (
    seqno INTEGER PRIMARY KEY,
    client BLOB NOT NULL,
    worker BLOB NOT NULL,
    adjusted_tokens INTEGER NOT NULL,
    client_price INTEGER NOT NULL,
    worker_pay INTEGER NOT NULL,
    hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS payments (
    client BLOB PRIMARY KEY,
    voucher TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS released (client BLOB PRIMARY KEY);
CREATE TABLE IF NOT EXISTS write_probe (data BLOB NOT NULL);
INSERT OR IGNORE INTO position (id, seqno, hash) VALUES (0, 0, zeroblob(32));
";

// SQLite integers are signed 64-bit; amounts are stored as their two's-complement bit pattern so
// the full u64 range round-trips.
fn to_sql(value: u64) -> i64 {
    value as i64
}

fn from_sql(value: i64) -> u64 {
    value as u64
}

fn account_of(bytes: Vec<u8>) -> Result<AccountId, StoreError> {
    let array: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("an account is not 32 bytes".into()))?;
    Ok(AccountId(array))
}

impl BillingStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(SCHEMA)?;
        Ok(Self { db })
    }

    /// The database position: the number of charges recorded and the hash chain over them.
    pub fn position(&self) -> Result<(u64, Hash32), StoreError> {
        position_in(&self.db)
    }

    /// Records one charge durably; returns the new position's seqno.
    pub fn record_charge(&mut self, charge: &ChargeRecord) -> Result<u64, StoreError> {
        self.record_charges(std::slice::from_ref(charge))?
            .pop()
            .expect("one result per charge")
    }

    /// Records `charges` durably in one transaction (one fsync for all: a group commit); returns
    /// each charge's seqno, or why that charge alone was refused (a total would overflow). A
    /// database failure fails them all, and nothing is written.
    pub fn record_charges(
        &mut self,
        charges: &[ChargeRecord],
    ) -> Result<Vec<Result<u64, StoreError>>, StoreError> {
        self.record(charges, &[])
    }

    /// [`BillingStore::record_charges`], and in the same transaction keeps each of `payments`
    /// (vouchers already verified, each with the client it pays for) that is newer than that
    /// client's stored one.
    pub fn record(
        &mut self,
        charges: &[ChargeRecord],
        payments: &[(AccountId, SignedVoucher)],
    ) -> Result<Vec<Result<u64, StoreError>>, StoreError> {
        let tx = self.db.transaction()?;
        for (client, voucher) in payments {
            payments::keep_newest(&tx, client, voucher)?;
        }
        let (mut seqno, mut hash) = position_in(&tx)?;
        let mut clients = RunningTotals::new(&CLIENT_ROWS);
        let mut workers = RunningTotals::new(&WORKER_ROWS);
        let mut results = Vec::with_capacity(charges.len());
        for charge in charges {
            let client = clients.get(&tx, &charge.client)?;
            let worker = workers.get(&tx, &charge.worker)?;
            let (Some(client), Some(worker)) = (
                client.add(charge.client_price, charge.adjusted_tokens),
                worker.add(charge.worker_pay, charge.adjusted_tokens),
            ) else {
                results.push(Err(StoreError::Overflow));
                continue;
            };
            let Some(next) = seqno.checked_add(1) else {
                results.push(Err(StoreError::Overflow));
                continue;
            };
            seqno = next;
            hash = chain(&hash, seqno, charge);
            execute_cached(
                &tx,
                "INSERT INTO charges (seqno, client, worker, adjusted_tokens, client_price, worker_pay, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    to_sql(seqno),
                    &charge.client.0[..],
                    &charge.worker.0[..],
                    to_sql(charge.adjusted_tokens),
                    to_sql(charge.client_price),
                    to_sql(charge.worker_pay),
                    &hash.0[..],
                ],
            )?;
            clients.set(charge.client, client);
            workers.set(charge.worker, worker);
            results.push(Ok(seqno));
        }
        clients.write(&tx)?;
        workers.write(&tx)?;
        execute_cached(
            &tx,
            "UPDATE position SET seqno = ?1, hash = ?2 WHERE id = 0",
            params![to_sql(seqno), &hash.0[..]],
        )?;
        tx.commit()?;
        Ok(results)
    }

    /// What `client` has been charged in total and the position it was read at, from one
    /// snapshot: a voucher must never pair a seqno with a total from another moment.
    pub fn client_at_position(&mut self, client: &AccountId) -> Result<(Totals, u64), StoreError> {
        let snapshot = self.db.transaction()?;
        let totals = totals_in(&snapshot, CLIENT_TOTALS, client)?;
        Ok((totals, position_in(&snapshot)?.0))
    }

    /// Every worker with its totals and the position they were read at, from one snapshot.
    pub fn workers_at_position(&mut self) -> Result<(Vec<(AccountId, Totals)>, u64), StoreError> {
        let snapshot = self.db.transaction()?;
        let workers = all_in(&snapshot, WORKERS)?;
        Ok((workers, position_in(&snapshot)?.0))
    }

    /// Writes and commits a throw-away row larger than a charge, to learn whether the disk takes
    /// writes again (after a charge failed) without risking a real charge.
    pub fn probe_write(&mut self) -> Result<(), StoreError> {
        let tx = self.db.transaction()?;
        tx.execute(
            "INSERT INTO write_probe (data) VALUES (zeroblob(16384))",
            [],
        )?;
        tx.execute("DELETE FROM write_probe", [])?;
        tx.commit()?;
        Ok(())
    }

    /// What `client` has been charged in total.
    pub fn client(&self, client: &AccountId) -> Result<Totals, StoreError> {
        totals_in(&self.db, CLIENT_TOTALS, client)
    }

    /// What `worker` has earned in total.
    pub fn worker(&self, worker: &AccountId) -> Result<Totals, StoreError> {
        totals_in(&self.db, WORKER_TOTALS, worker)
    }

    /// Every client with its totals.
    pub fn clients(&self) -> Result<Vec<(AccountId, Totals)>, StoreError> {
        all_in(&self.db, CLIENTS)
    }

    /// Keeps `clients` as released: the proxy gave each its final release and serves it no more.
    pub fn record_releases(&mut self, clients: &[AccountId]) -> Result<(), StoreError> {
        let tx = self.db.transaction()?;
        for client in clients {
            execute_cached(
                &tx,
                "INSERT OR IGNORE INTO released (client) VALUES (?1)",
                params![&client.0[..]],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The clients released so far (a row that is not an account is skipped).
    pub fn released(&self) -> Result<Vec<AccountId>, StoreError> {
        let mut statement = self.db.prepare_cached("SELECT client FROM released")?;
        let rows = statement.query_map([], |row| row.get::<_, Vec<u8>>(0))?;
        let mut clients = Vec::new();
        for row in rows {
            if let Ok(client) = account_of(row?) {
                clients.push(client);
            }
        }
        Ok(clients)
    }

    /// Each client's newest stored payment voucher, as read back: not verified here (the caller
    /// checks every signature again; the file is trusted no more than a peer).
    pub fn payments(&self) -> Result<Vec<StoredPayment>, StoreError> {
        payments::all(&self.db)
    }

    /// What the stored payments pay in total (rows that do not decode count nothing).
    pub fn paid_in_total(&self) -> Result<Amount, StoreError> {
        Ok(self
            .payments()?
            .iter()
            .filter_map(|(_, voucher)| voucher.as_ref().ok())
            .map(|voucher| voucher.voucher.cumulative)
            .fold(0, Amount::saturating_add))
    }

    /// Every worker with its totals.
    pub fn workers(&self) -> Result<Vec<(AccountId, Totals)>, StoreError> {
        all_in(&self.db, WORKERS)
    }
}

const CLIENTS: &str = "SELECT account, charged, tokens, requests FROM clients ORDER BY account";
const WORKERS: &str = "SELECT account, earned, tokens, requests FROM workers ORDER BY account";

/// Every account of a totals table (inside or outside a transaction).
fn all_in(db: &Connection, sql: &str) -> Result<Vec<(AccountId, Totals)>, StoreError> {
    let mut statement = db.prepare_cached(sql)?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, Vec<u8>>(0)?,
            Totals {
                amount: from_sql(row.get(1)?),
                tokens: from_sql(row.get(2)?),
                requests: from_sql(row.get(3)?),
            },
        ))
    })?;
    rows.map(|row| {
        let (account, totals) = row?;
        Ok((account_of(account)?, totals))
    })
    .collect()
}

const CLIENT_TOTALS: &str = "SELECT charged, tokens, requests FROM clients WHERE account = ?1";
const WORKER_TOTALS: &str = "SELECT earned, tokens, requests FROM workers WHERE account = ?1";

/// How one kind of counterparty's totals are read and written.
struct TotalsRows {
    select: &'static str,
    upsert: &'static str,
}

const CLIENT_ROWS: TotalsRows = TotalsRows {
    select: CLIENT_TOTALS,
    upsert: "INSERT INTO clients (account, charged, tokens, requests) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (account) DO UPDATE SET charged = ?2, tokens = ?3, requests = ?4",
};

const WORKER_ROWS: TotalsRows = TotalsRows {
    select: WORKER_TOTALS,
    upsert: "INSERT INTO workers (account, earned, tokens, requests) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (account) DO UPDATE SET earned = ?2, tokens = ?3, requests = ?4",
};

/// The totals one transaction changes: each account's row is read when first needed and written
/// once, at the end, so a group of charges of one client and one worker costs two reads and two
/// writes, not four statements per charge.
struct RunningTotals {
    rows: &'static TotalsRows,
    changed: HashMap<AccountId, Totals>,
}

impl RunningTotals {
    fn new(rows: &'static TotalsRows) -> Self {
        Self {
            rows,
            changed: HashMap::new(),
        }
    }

    /// `account`'s totals with this transaction's changes so far.
    fn get(&self, db: &Connection, account: &AccountId) -> Result<Totals, StoreError> {
        match self.changed.get(account) {
            Some(totals) => Ok(*totals),
            None => totals_in(db, self.rows.select, account),
        }
    }

    fn set(&mut self, account: AccountId, totals: Totals) {
        self.changed.insert(account, totals);
    }

    /// Writes every changed account's totals.
    fn write(self, db: &Connection) -> Result<(), StoreError> {
        for (account, totals) in self.changed {
            execute_cached(
                db,
                self.rows.upsert,
                params![
                    &account.0[..],
                    to_sql(totals.amount),
                    to_sql(totals.tokens),
                    to_sql(totals.requests)
                ],
            )?;
        }
        Ok(())
    }
}

/// Runs a statement, parsed once per connection (every group of charges runs the same few).
fn execute_cached(
    db: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    db.prepare_cached(sql)?.execute(params)
}

/// The position as stored (inside or outside a transaction).
fn position_in(db: &Connection) -> Result<(u64, Hash32), StoreError> {
    let (seqno, hash): (i64, Vec<u8>) = db
        .prepare_cached("SELECT seqno, hash FROM position WHERE id = 0")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| StoreError::Corrupt("the position hash is not 32 bytes".into()))?;
    Ok((from_sql(seqno), Hash32(hash)))
}

/// One account's totals as stored (inside or outside a transaction).
fn totals_in(db: &Connection, sql: &str, account: &AccountId) -> Result<Totals, StoreError> {
    let row = db
        .prepare_cached(sql)?
        .query_row(params![&account.0[..]], |row| {
            Ok(Totals {
                amount: from_sql(row.get(0)?),
                tokens: from_sql(row.get(1)?),
                requests: from_sql(row.get(2)?),
            })
        })
        .optional()?;
    Ok(row.unwrap_or_default())
}

/// The hash chain: `SHA-256(previous ‖ seqno ‖ client ‖ worker ‖ tokens ‖ price ‖ pay)`.
fn chain(previous: &Hash32, seqno: u64, charge: &ChargeRecord) -> Hash32 {
    let mut hasher = Sha256::new();
    hasher.update(previous.0);
    hasher.update(seqno.to_be_bytes());
    hasher.update(charge.client.0);
    hasher.update(charge.worker.0);
    hasher.update(charge.adjusted_tokens.to_be_bytes());
    hasher.update(charge.client_price.to_be_bytes());
    hasher.update(charge.worker_pay.to_be_bytes());
    Hash32(hasher.finalize().into())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A charge of `price` from client `client` to worker `worker` (80 % to the worker).
    pub(crate) fn charge(client: u8, worker: u8, price: Amount) -> ChargeRecord {
        ChargeRecord {
            client: AccountId([client; 32]),
            worker: AccountId([worker; 32]),
            adjusted_tokens: price / 10,
            client_price: price,
            worker_pay: price * 8 / 10,
        }
    }

    #[test]
    fn an_overflowing_charge_is_refused_alone_in_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = BillingStore::open(&dir.path().join("proxy.sqlite3")).unwrap();
        let huge = ChargeRecord {
            client_price: Amount::MAX,
            ..charge(3, 9, 0)
        };
        let results = store
            .record_charges(&[charge(1, 9, 100), huge, huge, charge(2, 9, 50)])
            .unwrap();
        assert_eq!(results[0].as_ref().ok(), Some(&1));
        assert!(results[1].is_ok(), "the first huge charge still fits");
        assert!(matches!(results[2], Err(StoreError::Overflow)));
        assert_eq!(results[3].as_ref().ok(), Some(&3));
        assert_eq!(store.position().unwrap().0, 3);
    }

    #[test]
    fn a_group_ends_with_the_totals_of_its_charges_recorded_one_by_one() {
        // The group reads and writes each account's row once; the outcome must not tell.
        let near_max = ChargeRecord {
            client_price: Amount::MAX - 100,
            ..charge(1, 8, 0)
        };
        let charges = [
            charge(1, 9, 100),
            charge(1, 9, 50),
            charge(2, 9, 7),
            near_max,
            charge(1, 8, 3),
            charge(2, 8, 1),
        ];
        let dir = tempfile::tempdir().unwrap();
        let mut grouped = BillingStore::open(&dir.path().join("grouped.sqlite3")).unwrap();
        let mut single = BillingStore::open(&dir.path().join("single.sqlite3")).unwrap();
        let grouped_results: Vec<_> = grouped
            .record_charges(&charges)
            .unwrap()
            .into_iter()
            .map(|result| result.ok())
            .collect();
        let single_results: Vec<_> = charges
            .iter()
            .map(|charge| single.record_charge(charge).ok())
            .collect();
        assert_eq!(grouped_results, single_results);
        assert_eq!(
            grouped_results,
            [Some(1), Some(2), Some(3), None, Some(4), Some(5)],
            "client 1 is 150 short of overflowing when the near-maximal charge comes"
        );
        assert_eq!(grouped.clients().unwrap(), single.clients().unwrap());
        assert_eq!(grouped.workers().unwrap(), single.workers().unwrap());
        assert_eq!(grouped.position().unwrap(), single.position().unwrap());
        let client = grouped.client(&AccountId([1; 32])).unwrap();
        assert_eq!((client.amount, client.requests), (153, 3));
    }

    #[test]
    fn charges_accumulate_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.sqlite3");
        let mut store = BillingStore::open(&path).unwrap();
        assert_eq!(store.position().unwrap(), (0, Hash32([0; 32])));
        store.record_charge(&charge(1, 9, 100)).unwrap();
        store.record_charge(&charge(2, 9, 50)).unwrap();
        assert_eq!(store.record_charge(&charge(1, 8, 10)).unwrap(), 3);
        let position = store.position().unwrap();
        drop(store);

        let store = BillingStore::open(&path).unwrap();
        assert_eq!(store.position().unwrap(), position);
        let client = store.client(&AccountId([1; 32])).unwrap();
        assert_eq!((client.amount, client.requests), (110, 2));
        assert_eq!(store.worker(&AccountId([9; 32])).unwrap().amount, 120);
        assert_eq!(
            store.worker(&AccountId([7; 32])).unwrap(),
            Totals::default()
        );
        assert_eq!(store.clients().unwrap().len(), 2);
        let earned: Amount = store.workers().unwrap().iter().map(|(_, t)| t.amount).sum();
        assert_eq!(earned, 128);
    }

    #[test]
    fn the_hash_chain_depends_on_every_charge_and_its_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = BillingStore::open(&dir.path().join("a")).unwrap();
        let mut b = BillingStore::open(&dir.path().join("b")).unwrap();
        a.record_charge(&charge(1, 9, 100)).unwrap();
        a.record_charge(&charge(2, 9, 50)).unwrap();
        b.record_charge(&charge(2, 9, 50)).unwrap();
        b.record_charge(&charge(1, 9, 100)).unwrap();
        let (seq_a, hash_a) = a.position().unwrap();
        let (seq_b, hash_b) = b.position().unwrap();
        assert_eq!(seq_a, seq_b);
        assert_ne!(hash_a, hash_b);
    }

    #[test]
    fn amounts_above_i64_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = BillingStore::open(&dir.path().join("big")).unwrap();
        let big = ChargeRecord {
            client_price: u64::MAX - 1,
            worker_pay: 0,
            ..charge(1, 2, 0)
        };
        store.record_charge(&big).unwrap();
        assert_eq!(
            store.client(&AccountId([1; 32])).unwrap().amount,
            u64::MAX - 1
        );
        assert!(matches!(
            store.record_charge(&big),
            Err(StoreError::Overflow)
        ));
    }
}
