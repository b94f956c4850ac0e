//! Cocoon money: pricing, signed payment vouchers, the contract rules (registry, proxy, client and
//! worker contracts), the local ledger service (`cocoon ledger`) and its HTTP client.
//!
//! Layers, from pure to I/O:
//! - [`pricing`]: token usage → client price, worker pay, proxy commission.
//! - [`voucher`], [`transaction`]: what proxies and accounts sign.
//! - [`rules`]: the state machine every settlement backend must follow.
//! - [`store`]: the state and its transaction log in SQLite.
//! - [`service`] and [`client`]: the HTTP/JSON API and a [`Settlement`] client for it.

pub mod api;
pub mod client;
pub mod clock;
pub mod config;
pub mod ids;
pub mod pricing;
pub mod registry;
pub mod rules;
pub mod service;
pub mod settlement;
pub mod store;
pub mod transaction;
pub mod voucher;

pub use api::{ApiError, LedgerStats};
pub use client::{ClientError, LedgerClient};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{ConfigError, GenesisAllocation, LedgerConfig};
pub use ids::{AccountId, Hash32, IdError, SignatureBytes};
pub use pricing::{price, worst_case_cost, Cost, PricingError};
pub use registry::{Amount, Prices, RegisteredProxy, Registry, RegistryError};
pub use rules::{
    Account, ClientContract, Context, ContractStatus, LedgerState, Outcome, ProxyContract,
    RollbackError, RuleError, StateCommit, WorkerContract,
};
pub use service::{serve, spawn, Ledger, LedgerHandle, ServiceError};
pub use settlement::{Settlement, SettlementError};
pub use store::{LedgerStore, LogEntry, Receipt, StoreError, SubmitError};
pub use transaction::{SignedTransaction, Transaction, TransactionBody, TransactionError};
pub use voucher::{SignedVoucher, Voucher, VoucherError, VoucherKind};
