//! Cocoon money without I/O: the ids, pricing, registry, signed transactions and payment vouchers,
//! the contract rules every settlement backend follows, and the [`Settlement`] trait the roles
//! hold (`Arc<dyn Settlement>`). The local ledger (`cocoon-ledger`) and the TON backend implement
//! that trait; the receipt verifier and the roles depend on this crate alone, so none of them
//! links SQLite, an HTTP server or client, or sockets (`scripts/test.sh` checks that this stays so).
//!
//! Layers:
//! - [`ids`], [`registry`]: accounts, hashes, the registry document and its edits.
//! - [`pricing`]: token usage → client price, worker pay, proxy commission.
//! - [`voucher`], [`transaction`]: what proxies and accounts sign.
//! - [`rules`]: the state machine every settlement backend must follow.
//! - [`signed_registry`]: checking the owner's signed registry updates.
//! - [`statement`]: what a proxy tells its clients and workers they owe and earned.
//! - [`settlement`]: the [`Settlement`] trait and its errors.
//!
//! A proxy prices each request and signs cumulative vouchers; a backend moves only the difference:
//!
//! ```
//! use cocoon_money::{price, AccountId, Prices, VoucherSigner};
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

pub mod ids;
pub mod pricing;
pub mod registry;
pub mod rules;
pub mod settlement;
pub mod signed_registry;
pub mod statement;
pub mod transaction;
pub mod voucher;

pub use ids::{AccountId, Hash32, IdError, SignatureBytes};
pub use pricing::{price, worst_case_cost, Cost, PricingError};
pub use registry::{
    Amount, EditError, ImageRole, Prices, RegisteredProxy, Registry, RegistryEdit, RegistryError,
};
pub use rules::{
    Account, ClientContract, Context, ContractStatus, LedgerState, Outcome, ProxyContract,
    RollbackError, RuleError, StateCommit, WorkerContract,
};
pub use settlement::{Receipt, Settlement, SettlementBackend, SettlementError};
pub use signed_registry::{RegistryAnswer, RegistryAuthority, RegistryRefusal, SeenVersion};
pub use statement::{ClientStatement, WorkerStatement};
pub use transaction::{SignedTransaction, Transaction, TransactionBody, TransactionError};
pub use voucher::{SignedVoucher, Voucher, VoucherError, VoucherIds, VoucherKind, VoucherSigner};
