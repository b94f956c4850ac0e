//! Cocoon money: pricing, signed payment vouchers, the contract rules (registry, proxy, client and
//! worker contracts), the local ledger service (`cocoon ledger`) and its HTTP client.
//!
//! Layers, from pure to I/O:
//! - [`pricing`]: token usage → client price, worker pay, proxy commission.
//! - [`voucher`], [`transaction`]: what proxies and accounts sign.
//! - [`rules`]: the state machine every settlement backend must follow.
//! - [`store`]: the state and its transaction log in SQLite; [`reader`]: reads of what it committed.
//! - [`statement`]: what a proxy tells its clients and workers they owe and earned.
//! - [`service`] and [`client`]: the HTTP/JSON API and a [`Settlement`] client for it.
//!
//! A proxy prices each request and signs cumulative vouchers; the ledger moves only the difference:
//!
//! ```
//! use cocoon_ledger::{price, AccountId, Prices, VoucherSigner};
//! use cocoon_proto::usage::TokenUsage;
//! use ed25519_dalek::SigningKey;
//!
//! let usage = TokenUsage { prompt_tokens: 100, cached_tokens: 0, completion_tokens: 50, reasoning_tokens: 0 };
//! let cost = price(&usage, 1_000, &Prices::default()).unwrap();
//! assert_eq!(cost.client_price, cost.worker_pay + cost.commission);
//!
//! let key = SigningKey::from_bytes(&[7; 32]);
//! let signer = VoucherSigner::new(key, AccountId([1; 32]));
//! let voucher = signer.client_charge(AccountId([2; 32]), cost.client_price, 1, false);
//! voucher.verify(&signer.voucher_key()).unwrap();
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod client;
pub mod clock;
pub mod config;
pub mod ids;
pub mod pricing;
pub mod reader;
pub mod registry;
pub mod rules;
pub mod service;
pub mod settlement;
pub mod signed_registry;
pub mod statement;
pub mod stats;
pub mod store;
pub mod transaction;
pub mod voucher;

pub use api::{ApiError, LedgerStats};
pub use client::{ClientError, LedgerClient};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{ConfigError, GenesisAllocation, LedgerConfig};
pub use ids::{AccountId, Hash32, IdError, SignatureBytes};
pub use pricing::{price, worst_case_cost, Cost, PricingError};
pub use registry::{
    Amount, EditError, ImageRole, Prices, RegisteredProxy, Registry, RegistryEdit, RegistryError,
};
pub use rules::{
    Account, ClientContract, Context, ContractStatus, LedgerState, Outcome, ProxyContract,
    RollbackError, RuleError, StateCommit, WorkerContract,
};
pub use service::{serve, spawn, Ledger, LedgerHandle, ServiceError};
pub use settlement::{Settlement, SettlementError};
pub use signed_registry::{RegistryAnswer, RegistryRefusal, SeenVersion};
pub use statement::{ClientStatement, WorkerStatement};
pub use store::{LedgerStore, LogEntry, Receipt, StoreError, SubmitError};
pub use transaction::{SignedTransaction, Transaction, TransactionBody, TransactionError};
pub use voucher::{SignedVoucher, Voucher, VoucherError, VoucherKind, VoucherSigner};
