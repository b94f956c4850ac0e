//! TON access for Cocoon's settlement: a client of the TON HTTP API v2 ([`api`]), one sender per
//! wallet ([`sender`]) that signs v5r1 external messages with a short validity and watches the
//! chain until each is applied or can no longer be, and the Cocoon contracts seen from Rust: their
//! committed code ([`code`]), initial data and addresses ([`contracts`]), message bodies
//! ([`messages`], [`registry_cells`]) and get-methods ([`getters`], over [`stack`]); and over all
//! of these, [`TonBackend`] and its [`TonSettlement`] handles: settlement on TON ([`backend`], [`settlement`], [`operations`],
//! [`trace`], [`refusals`]).
//!
//! The devnet in `contracts/devnet/` serves the same API for tests.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod backend;
pub mod code;
pub mod contracts;
pub mod deploy;
pub mod devnet;
pub mod getters;
pub mod messages;
pub mod mnemonic;
pub mod operations;
pub mod refusals;
pub mod registry_cells;
pub mod registry_update;
pub mod sender;
pub mod settlement;
pub mod settlement_types;
pub mod stack;
pub mod trace;

pub use api::{AccountState, GetMethodResult, TonApi, TonApiError, Transaction, TxId};
pub use backend::TonBackend;
pub use contracts::{ChannelTerms, Deployment, ProxyTerms, RootTerms};
pub use getters::GetterError;
pub use messages::{ChannelMessage, ProxyMessage, SignedAmount, UpdateRegistry};
pub use mnemonic::key_from_mnemonic;
pub use registry_cells::{ListedProxy, RegistryLists, RegistryParams};
pub use sender::{SendError, WalletSender};
pub use settlement::TonSettlement;
pub use tonlib_core::TonAddress;
