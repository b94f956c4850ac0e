//! The values the rules keep: accounts, the three contract kinds, a proxy's state commit, and what
//! an applied transaction did.

use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, Hash32};
use crate::registry::Amount;

/// What the environment supplies to a transaction: the time and the faucet switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// Current time, unix seconds (injected so tests can move the clock).
    pub now: u64,
    /// Whether [`TransactionBody::Mint`](crate::TransactionBody::Mint) is allowed (development
    /// networks only).
    pub faucet_enabled: bool,
}

/// An account: free balance and the last nonce it used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// Free funds.
    pub balance: Amount,
    /// Last transaction nonce used (0 = none yet).
    pub nonce: u64,
}

/// Lifecycle of a proxy or client contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum ContractStatus {
    /// In service.
    Open,
    /// Closing; the remaining locked funds are released at `release_at` (unix seconds).
    Closing {
        /// When the locked funds may be collected.
        release_at: u64,
    },
    /// Closed; all locked funds returned.
    Closed,
}

/// A proxy's committed database position: `(seqno, state hash)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateCommit {
    /// The proxy's state sequence number.
    pub seqno: u64,
    /// Hash of the proxy's state at `seqno`.
    pub state_hash: Hash32,
    /// When the ledger recorded it (unix seconds).
    pub committed_at: u64,
}

/// What a proxy learns by comparing its database with its last commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackError {
    /// The ledger holds a commit newer than the local database: it was restored from an old copy.
    #[error("database rolled back: ledger has commit {committed_seqno}, local state is at {local_seqno}")]
    RolledBack {
        /// The ledger's last commit.
        committed_seqno: u64,
        /// The local database's position.
        local_seqno: u64,
    },
    /// Same seqno, different hash: the local database is not the one that was committed.
    #[error("database diverged from the commit at seqno {seqno}")]
    Diverged {
        /// The seqno at which the hashes differ.
        seqno: u64,
    },
}

impl StateCommit {
    /// Checks a proxy's local position against this commit. A local state ahead of the commit is
    /// fine (the next commit is simply pending).
    pub fn check_local(&self, local_seqno: u64, local_hash: &Hash32) -> Result<(), RollbackError> {
        if self.seqno > local_seqno {
            Err(RollbackError::RolledBack {
                committed_seqno: self.seqno,
                local_seqno,
            })
        } else if self.seqno == local_seqno && self.state_hash != *local_hash {
            Err(RollbackError::Diverged { seqno: self.seqno })
        } else {
            Ok(())
        }
    }
}

/// A proxy contract: the proxy's stake and the client funds it has collected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyContract {
    /// The proxy's account (also the contract's id).
    pub owner: AccountId,
    /// The key whose signature vouchers of this proxy must carry (the last one authorized).
    pub voucher_key: AccountId,
    /// Keys authorized before `voucher_key` whose vouchers are still honoured, oldest first
    /// (see `rules/proxy_keys.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_voucher_keys: Vec<AccountId>,
    /// Locked stake; backs worker claims when the pool runs short.
    pub stake: Amount,
    /// Collected client funds not yet paid to workers or withdrawn as commission.
    pub pool: Amount,
    /// Total ever collected from clients (statistics; saturates).
    pub collected: Amount,
    /// Total ever paid to workers (statistics; saturates).
    pub paid_to_workers: Amount,
    /// Total ever withdrawn as commission (statistics; saturates).
    pub withdrawn: Amount,
    /// The last state commit, if any.
    pub commit: Option<StateCommit>,
    /// Lifecycle.
    pub status: ContractStatus,
}

/// A client contract (one per client × proxy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientContract {
    /// The proxy contract.
    pub proxy: AccountId,
    /// The client account.
    pub client: AccountId,
    /// Funds held, stake included.
    pub balance: Amount,
    /// Part of `balance` the client cannot withdraw while the contract is open.
    pub stake: Amount,
    /// Cumulative amount of the last applied voucher (what the client was billed in total).
    pub charged: Amount,
    /// Total actually moved to the proxy (less than `charged` only if the balance ran out).
    pub collected: Amount,
    /// Seqno of the last applied voucher (0 = none).
    pub voucher_seqno: u64,
    /// Lifecycle.
    pub status: ContractStatus,
}

impl ClientContract {
    /// Funds the client may withdraw now: the balance above the stake while open, nothing otherwise.
    pub fn withdrawable(&self) -> Amount {
        match self.status {
            ContractStatus::Open => self.balance.saturating_sub(self.stake),
            _ => 0,
        }
    }
}

/// A worker contract (one per worker × proxy): what was already paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerContract {
    /// The proxy contract.
    pub proxy: AccountId,
    /// The worker account.
    pub worker: AccountId,
    /// Cumulative amount of the last applied voucher (all paid out).
    pub paid: Amount,
    /// Seqno of the last applied voucher (0 = none).
    pub voucher_seqno: u64,
}

/// What an applied transaction did, beyond "it worked".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Applied; nothing more to report.
    Done,
    /// A client charge was applied.
    Charged {
        /// Moved from the client contract to the proxy's pool.
        collected: Amount,
        /// Billed but not covered by the client's balance.
        shortfall: Amount,
    },
    /// A worker was paid.
    Claimed {
        /// Moved from the proxy contract to the worker's account.
        paid: Amount,
    },
    /// A client contract closed.
    ClientClosed {
        /// Moved to the proxy's pool by the final voucher.
        collected: Amount,
        /// Returned to the client's account.
        returned: Amount,
    },
    /// A client contract started closing without the proxy.
    ClientCloseStarted {
        /// Returned to the client now (the part above the stake).
        returned: Amount,
        /// When the stake may be collected.
        release_at: u64,
    },
    /// A proxy contract started closing.
    ProxyCloseStarted {
        /// When stake and pool may be collected.
        release_at: u64,
    },
    /// A proxy contract closed.
    ProxyClosed {
        /// Stake and pool returned to the owner.
        returned: Amount,
    },
}
