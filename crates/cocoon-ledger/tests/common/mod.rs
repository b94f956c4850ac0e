//! What the ledger's HTTP tests share: test keys and a ledger configuration on a free port.

#![allow(dead_code)]

use cocoon_ledger::LedgerConfig;
use cocoon_money::AccountId;
use ed25519_dalek::SigningKey;

pub const OWNER: u8 = 1;
pub const PROXY: u8 = 2;
pub const CLIENT: u8 = 3;
pub const WORKER: u8 = 4;
/// The ledger clock's start (unix seconds).
pub const START: u64 = 1_700_000_000;

/// Test key number `n`.
pub fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

/// The account of test key `n`.
pub fn id(n: u8) -> AccountId {
    AccountId::from(&key(n))
}

/// A ledger (faucet on, registry owned by [`OWNER`]) with its database in `dir`.
pub fn config(dir: &tempfile::TempDir) -> LedgerConfig {
    LedgerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: dir.path().join("ledger.sqlite3"),
        faucet: true,
        owner: Some(id(OWNER)),
        ..LedgerConfig::default()
    }
}
