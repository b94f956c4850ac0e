//! The local ledger: `cocoon ledger`, a settlement backend of our own with TON-like rules (the
//! default for development and private deployments), and [`LedgerClient`], its HTTP client and
//! [`cocoon_money::Settlement`] implementation. The rules, types and vouchers it applies live in
//! `cocoon-money` (pure); this crate adds the I/O around them.
//!
//! Layers, from pure to I/O:
//! - [`config`]: the ledger's configuration and genesis.
//! - [`store`]: the state and its transaction log in SQLite; [`reader`]: reads of what it committed.
//! - [`api`]: the HTTP/JSON vocabulary; [`stats`]: its figures as text and metrics.
//! - [`service`] and [`client`]: the HTTP/JSON API and a `Settlement` client for it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod client;
pub mod config;
pub mod reader;
pub mod service;
pub mod stats;
pub mod store;

pub use api::{ApiError, LedgerStats};
pub use client::{ClientError, LedgerClient, LocalLedger};
pub use config::{ConfigError, GenesisAllocation, LedgerConfig};
pub use service::{serve, spawn, Ledger, LedgerHandle, ServiceError};
pub use store::{LedgerStore, LogEntry, StoreError, SubmitError};
